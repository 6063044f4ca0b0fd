//! Lowercase hex of bytes, the one spelling of key bytes, digests and fingerprints that the
//! WireGuard UAPI, the config store and the operator's tools agree on; and the one spelling of a
//! certificate's or CSR's SHA-256 that administrators compare with openssl's.

use std::fmt::Write as _;

/// `bytes` as lowercase hex, two digits per byte.
pub fn lower(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// SHA-256 of `bytes` as `openssl x509 -fingerprint -sha256` prints it (`AB:CD:...`): how an
/// administrator compares a certificate or CSR that renkei shows with the file in hand.
pub fn sha256_fingerprint(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    #[test]
    fn two_lowercase_digits_per_byte() {
        assert_eq!(super::lower(&[0x00, 0x0a, 0xff, 0x5c]), "000aff5c");
        assert_eq!(super::lower(&[]), "");
    }

    #[test]
    fn sha256_fingerprints_are_colon_separated_uppercase_pairs() {
        // SHA-256 of "abc" (FIPS 180-2, appendix B.1).
        let print = super::sha256_fingerprint(b"abc");
        assert!(print.starts_with("BA:78:16:BF:8F:01:CF:EA"), "{print}");
        assert!(print.ends_with("F2:00:15:AD"), "{print}");
        assert_eq!(print.len(), 32 * 3 - 1);
    }
}
