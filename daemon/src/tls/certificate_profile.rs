//! The certificate half of the CRYPTREC profile (the handshake half is `profile`): which public
//! keys and signature algorithms a certificate in the box's chain, the CA file or a CRL may
//! carry, by the OIDs that name them. The credential loader parses the certificates and asks
//! here; it names no algorithm itself.

/// Smallest RSA modulus the profile accepts.
pub const MIN_RSA_BITS: usize = 2048;

/// Largest RSA modulus the verifiers can check (webpki's 2048..8192 range).
pub const MAX_RSA_BITS: usize = 8192;

/// The key renkei makes for itself (the enrolment's key and CSR, the status page's
/// self-signed certificate): ECDSA P-256 signing with SHA-256, in the profile and accepted by
/// every peer that follows it.
pub static GENERATED_KEY: &rcgen::SignatureAlgorithm = &rcgen::PKCS_ECDSA_P256_SHA256;
/// [`GENERATED_KEY`] as the administrator reads it.
pub const GENERATED_KEY_NAME: &str = "ECDSA P-256";

/// Public key algorithm `rsaEncryption`.
pub const RSA_KEY: &str = "1.2.840.113549.1.1.1";
/// Public key algorithm `id-ecPublicKey`.
pub const EC_KEY: &str = "1.2.840.10045.2.1";
/// Ed25519, as a public key and as a signature algorithm.
pub const ED25519: &str = "1.3.101.112";
/// Named curve secp256r1 (P-256).
pub const P256: &str = "1.2.840.10045.3.1.7";
/// Named curve secp384r1 (P-384).
pub const P384: &str = "1.3.132.0.34";
/// Signature algorithm `ecdsa-with-SHA256`.
pub const ECDSA_SHA256: &str = "1.2.840.10045.4.3.2";
/// Signature algorithm `ecdsa-with-SHA384`.
pub const ECDSA_SHA384: &str = "1.2.840.10045.4.3.3";
/// Signature algorithm `RSASSA-PSS` (its hash is in its parameters).
pub const RSA_PSS: &str = "1.2.840.113549.1.1.10";

/// What the profile says of a certificate's signature algorithm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureVerdict {
    /// In the profile.
    Allowed,
    /// A broken hash (SHA-1, MD5, MD2): refused by its name.
    Weak(&'static str),
    /// Anything else outside the profile, described.
    Unsupported(String),
}

/// Judges a signature algorithm by its OID; for RSASSA-PSS, `pss_hash` is the OID of the hash
/// in its parameters (`None` when they could not be read).
pub fn signature_algorithm(oid: &str, pss_hash: Option<&str>) -> SignatureVerdict {
    use SignatureVerdict::{Allowed, Unsupported, Weak};
    match oid {
        // sha256/384/512WithRSAEncryption, ecdsa-with-SHA256/384, Ed25519.
        "1.2.840.113549.1.1.11" | "1.2.840.113549.1.1.12" | "1.2.840.113549.1.1.13" => Allowed,
        ECDSA_SHA256 | ECDSA_SHA384 | ED25519 => Allowed,
        "1.2.840.113549.1.1.5" | "1.3.14.3.2.29" => Weak("sha1WithRSAEncryption"),
        "1.2.840.10045.4.1" => Weak("ecdsa-with-SHA1"),
        "1.2.840.10040.4.3" => Weak("dsa-with-sha1"),
        "1.2.840.113549.1.1.4" | "1.3.14.3.2.25" => Weak("md5WithRSAEncryption"),
        "1.2.840.113549.1.1.2" => Weak("md2WithRSAEncryption"),
        RSA_PSS => match pss_hash {
            // PSS with SHA-256/384/512.
            Some(
                "2.16.840.1.101.3.4.2.1" | "2.16.840.1.101.3.4.2.2" | "2.16.840.1.101.3.4.2.3",
            ) => Allowed,
            // The PSS default hash is SHA-1.
            Some("1.3.14.3.2.26") => Weak("RSASSA-PSS with SHA-1"),
            Some(other) => Unsupported(format!("RSASSA-PSS with hash {other}")),
            None => Unsupported("RSASSA-PSS with unreadable parameters".to_string()),
        },
        other => Unsupported(format!("signature algorithm {other}")),
    }
}

/// The profile's name of an ECDSA curve (`P-256`, `P-384`), `None` for a curve outside it.
pub fn curve_name(curve: &str) -> Option<&'static str> {
    match curve {
        P256 => Some("P-256"),
        P384 => Some("P-384"),
        _ => None,
    }
}

/// The curve an ECDSA signature algorithm's hash is paired with (P-256 with SHA-256, P-384
/// with SHA-384), and that hash's name; `None` for algorithms that are not ECDSA.
pub fn ecdsa_pairing(signature: &str) -> Option<(&'static str, &'static str)> {
    match signature {
        ECDSA_SHA256 => Some((P256, "SHA-256")),
        ECDSA_SHA384 => Some((P384, "SHA-384")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net5_signature_algorithms_are_judged_as_the_profile_table_says() {
        use SignatureVerdict::{Allowed, Unsupported, Weak};
        for allowed in [
            "1.2.840.113549.1.1.11",
            "1.2.840.113549.1.1.12",
            "1.2.840.113549.1.1.13",
            ECDSA_SHA256,
            ECDSA_SHA384,
            ED25519,
        ] {
            assert_eq!(signature_algorithm(allowed, None), Allowed, "{allowed}");
        }
        assert_eq!(
            signature_algorithm("1.2.840.113549.1.1.5", None),
            Weak("sha1WithRSAEncryption")
        );
        assert_eq!(
            signature_algorithm("1.2.840.10045.4.1", None),
            Weak("ecdsa-with-SHA1")
        );
        assert_eq!(
            signature_algorithm("1.2.840.113549.1.1.4", None),
            Weak("md5WithRSAEncryption")
        );
        assert_eq!(
            signature_algorithm(RSA_PSS, Some("2.16.840.1.101.3.4.2.2")),
            Allowed
        );
        assert_eq!(
            signature_algorithm(RSA_PSS, Some("1.3.14.3.2.26")),
            Weak("RSASSA-PSS with SHA-1")
        );
        assert!(matches!(signature_algorithm(RSA_PSS, None), Unsupported(_)));
        // ecdsa-with-SHA512 is not in the profile's pairs.
        assert_eq!(
            signature_algorithm("1.2.840.10045.4.3.4", None),
            Unsupported("signature algorithm 1.2.840.10045.4.3.4".to_string())
        );
    }

    #[test]
    fn net3_net5_only_p256_and_p384_are_curves_each_paired_with_its_hash() {
        assert_eq!(curve_name(P256), Some("P-256"));
        assert_eq!(curve_name(P384), Some("P-384"));
        // secp521r1 and secp256k1.
        assert_eq!(curve_name("1.3.132.0.35"), None);
        assert_eq!(curve_name("1.3.132.0.10"), None);
        assert_eq!(ecdsa_pairing(ECDSA_SHA256), Some((P256, "SHA-256")));
        assert_eq!(ecdsa_pairing(ECDSA_SHA384), Some((P384, "SHA-384")));
        assert_eq!(ecdsa_pairing(ED25519), None);
    }
}
