//! Operator signatures over pushed configs (AUTH-2): ECDSA P-256 with SHA-256 over the exact
//! bytes of the config file, carried as base64 of the DER signature.
//!
//! The box holds only public keys. Signing happens on the operator's machine (`renkei sign`,
//! `renkei push`) with a key made by `renkei keygen --operator`.
//!
//! It sits below both of its users: config checks the operator keys a config names and control
//! checks pushed signatures, with this one parser.

use std::path::Path;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};

/// Largest signature text accepted: a DER P-256 signature is at most 72 bytes.
const MAX_SIGNATURE_TEXT: usize = 256;

/// Why a key or signature was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SigningError {
    /// The public key is not a PEM SubjectPublicKeyInfo of a P-256 key.
    #[error("not a PEM ECDSA P-256 public key: {0}")]
    PublicKey(String),
    /// The private key is not a PEM PKCS#8 P-256 key.
    #[error("not a PEM PKCS#8 ECDSA P-256 private key: {0}")]
    PrivateKey(String),
    /// The signature text is not base64 of a DER ECDSA signature.
    #[error("malformed signature: {0}")]
    Malformed(String),
    /// The signature does not verify with any trusted key.
    #[error("the signature does not verify with the operator key {0}")]
    BadSignature(String),
}

/// A public key the box trusts to sign configs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorKey {
    key: VerifyingKey,
    fingerprint: String,
}

impl OperatorKey {
    /// Parses a PEM `PUBLIC KEY` block.
    pub fn from_pem(text: &str) -> Result<Self, SigningError> {
        if !text.contains("-----BEGIN PUBLIC KEY-----") {
            return Err(SigningError::PublicKey(
                "no -----BEGIN PUBLIC KEY----- block".to_string(),
            ));
        }
        let key = VerifyingKey::from_public_key_pem(text.trim())
            .map_err(|e| SigningError::PublicKey(e.to_string()))?;
        Ok(OperatorKey::from_verifying_key(key))
    }

    /// Reads a PEM public key file.
    pub fn read(path: &Path) -> Result<Self, SigningError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SigningError::PublicKey(format!("{}: {e}", path.display())))?;
        OperatorKey::from_pem(&text)
    }

    fn from_verifying_key(key: VerifyingKey) -> Self {
        let der = key
            .to_public_key_der()
            .map(|d| d.as_bytes().to_vec())
            .unwrap_or_default();
        let digest = ring::digest::digest(&ring::digest::SHA256, &der);
        let fingerprint = crate::hex::lower(&digest.as_ref()[..8]);
        OperatorKey { key, fingerprint }
    }

    /// Short stable name of the key (first 8 bytes of SHA-256 over its DER, hex): what logs,
    /// the status page and the operator's tools call "the signer".
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The key as PEM, for configs that carry it inline.
    pub fn to_pem(&self) -> String {
        self.key
            .to_public_key_pem(LineEnding::LF)
            .unwrap_or_default()
    }

    /// Checks `signature` over `message`.
    pub fn verify(&self, message: &[u8], signature: &Signature) -> Result<(), SigningError> {
        self.key
            .verify(message, signature)
            .map_err(|_| SigningError::BadSignature(self.fingerprint.clone()))
    }
}

/// Parses base64 of a DER signature (surrounding whitespace allowed: `.sig` files end in a
/// newline).
pub fn parse_signature(text: &str) -> Result<Signature, SigningError> {
    let text = text.trim();
    if text.len() > MAX_SIGNATURE_TEXT {
        return Err(SigningError::Malformed(format!(
            "{} characters; a P-256 signature is at most {MAX_SIGNATURE_TEXT}",
            text.len()
        )));
    }
    let der = BASE64
        .decode(text)
        .map_err(|e| SigningError::Malformed(format!("not base64: {e}")))?;
    Signature::from_der(&der).map_err(|e| SigningError::Malformed(format!("not DER: {e}")))
}

/// The operator's private signing key.
pub struct SigningKeyPair {
    key: SigningKey,
}

impl SigningKeyPair {
    /// A fresh key from the OS random source.
    pub fn generate() -> Self {
        SigningKeyPair {
            key: SigningKey::random(&mut rand_core::OsRng),
        }
    }

    /// Parses a PEM PKCS#8 private key.
    pub fn from_pem(text: &str) -> Result<Self, SigningError> {
        SigningKey::from_pkcs8_pem(text.trim())
            .map(|key| SigningKeyPair { key })
            .map_err(|e| SigningError::PrivateKey(e.to_string()))
    }

    /// PEM PKCS#8 of the private key (goes into a 0600 file, never onto a box).
    pub fn private_pem(&self) -> Result<String, SigningError> {
        self.key
            .to_pkcs8_pem(LineEnding::LF)
            .map(|pem| pem.to_string())
            .map_err(|e| SigningError::PrivateKey(e.to_string()))
    }

    /// The public half, as the box sees it.
    pub fn public(&self) -> OperatorKey {
        OperatorKey::from_verifying_key(*self.key.verifying_key())
    }

    /// Signs `message`; returns the base64 DER text written to `.sig` files and sent on push.
    pub fn sign(&self, message: &[u8]) -> String {
        let signature: Signature = self.key.sign(message);
        BASE64.encode(signature.to_der().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth2_signature_roundtrip_and_tamper() {
        let pair = SigningKeyPair::generate();
        let public = OperatorKey::from_pem(&pair.public().to_pem()).expect("public pem");
        let message = b"[meta]\nversion = 2\n";
        let sig = parse_signature(&pair.sign(message)).expect("signature");
        public.verify(message, &sig).expect("verifies");
        assert!(matches!(
            public.verify(b"[meta]\nversion = 3\n", &sig),
            Err(SigningError::BadSignature(_))
        ));
        let other = SigningKeyPair::generate().public();
        assert!(other.verify(message, &sig).is_err());
        assert_ne!(other.fingerprint(), public.fingerprint());
        assert_eq!(public.fingerprint().len(), 16);
    }

    #[test]
    fn int1_malformed_keys_and_signatures_are_errors() {
        assert!(OperatorKey::from_pem("").is_err());
        assert!(OperatorKey::from_pem(
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"
        )
        .is_err());
        assert!(parse_signature("").is_err());
        assert!(parse_signature("!!!").is_err());
        assert!(parse_signature("AAAA").is_err());
        assert!(parse_signature(&"A".repeat(1000)).is_err());
        assert!(SigningKeyPair::from_pem("nope").is_err());
        let pair = SigningKeyPair::generate();
        let pem = pair.private_pem().expect("pem");
        let again = SigningKeyPair::from_pem(&pem).expect("parse");
        assert_eq!(again.public(), pair.public());
    }
}
