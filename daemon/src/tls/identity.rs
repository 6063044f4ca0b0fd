//! Peer identities from a verified certificate, matched against a service's allowlist (NET-4).
//!
//! Only call this on a certificate rustls has already verified against the operator CA; this
//! module decides who the peer is, never whether the certificate is genuine. Matching is exact:
//! no wildcards, no suffixes; DNS names compare case-insensitively.

use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Why a peer certificate's identities could not be read.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The certificate cannot be parsed.
    #[error("peer certificate cannot be parsed: {0}")]
    BadCertificate(String),
    /// The subjectAltName extension is malformed or repeated.
    #[error("peer certificate has an unreadable subjectAltName: {0}")]
    BadSubjectAltName(String),
}

/// The names a peer certificate carries, in the order they appear.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerIdentities {
    /// SAN dNSName entries.
    pub dns_names: Vec<String>,
    /// SAN uniformResourceIdentifier entries.
    pub uris: Vec<String>,
    /// Subject commonName values.
    pub common_names: Vec<String>,
}

impl PeerIdentities {
    /// Reads the SAN DNS names, SAN URIs and subject CNs of a (verified) peer certificate.
    pub fn from_certificate(cert: &CertificateDer<'_>) -> Result<Self, IdentityError> {
        let (_, cert) = X509Certificate::from_der(cert.as_ref())
            .map_err(|err| IdentityError::BadCertificate(err.to_string()))?;
        let mut identities = PeerIdentities::default();
        let san = cert
            .subject_alternative_name()
            .map_err(|err| IdentityError::BadSubjectAltName(err.to_string()))?;
        if let Some(san) = san {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(dns) => identities.dns_names.push(dns.to_string()),
                    GeneralName::URI(uri) => identities.uris.push(uri.to_string()),
                    _ => {}
                }
            }
        }
        for cn in cert.subject().iter_common_name() {
            // A CN that is not a string type (or not valid UTF-8) is not an identity.
            if let Ok(text) = cn.as_str() {
                identities.common_names.push(text.to_string());
            }
        }
        Ok(identities)
    }

    /// The first identity of the allowlist the peer carries, or `None` if it carries none.
    ///
    /// DNS names match case-insensitively (ASCII), URIs and CNs exactly. An empty allowlist
    /// allows nobody. The returned name is what the access log records as PEER_IDENTITY.
    pub fn allowed_by<'a>(&self, allowlist: &'a [String]) -> Option<&'a str> {
        allowlist
            .iter()
            .find(|allowed| self.carries(allowed))
            .map(String::as_str)
    }

    /// True when the certificate carries `identity`, matched as [`PeerIdentities::allowed_by`]
    /// matches (a config's `[meta] box` against the box's own certificate, AUTH-4).
    pub fn carries(&self, identity: &str) -> bool {
        self.dns_names
            .iter()
            .any(|dns| dns.eq_ignore_ascii_case(identity))
            || self.uris.iter().any(|uri| uri == identity)
            || self.common_names.iter().any(|cn| cn == identity)
    }

    /// Every identity, for messages: DNS names, URIs, then CNs, comma-separated.
    pub fn list(&self) -> String {
        let names: Vec<&str> = self
            .dns_names
            .iter()
            .chain(&self.uris)
            .chain(&self.common_names)
            .map(String::as_str)
            .collect();
        if names.is_empty() {
            "no identity".to_string()
        } else {
            names.join(", ")
        }
    }

    /// One name for logs when the peer is refused: the first DNS name, URI or CN.
    pub fn display_name(&self) -> Option<&str> {
        self.dns_names
            .first()
            .or_else(|| self.uris.first())
            .or_else(|| self.common_names.first())
            .map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

    use super::*;

    fn cert(sans: &[SanType], cn: Option<&str>) -> CertificateDer<'static> {
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans.to_vec();
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        let key = KeyPair::generate().expect("key");
        params.self_signed(&key).expect("cert").der().clone()
    }

    fn list(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn reads_dns_uri_and_cn() {
        let der = cert(
            &[
                SanType::DnsName("Hospital-A.renkei.example".try_into().expect("dns")),
                SanType::URI("urn:renkei:facility:0001".try_into().expect("uri")),
            ],
            Some("hospital-a"),
        );
        let ids = PeerIdentities::from_certificate(&der).expect("identities");
        assert_eq!(ids.dns_names, list(&["Hospital-A.renkei.example"]));
        assert_eq!(ids.uris, list(&["urn:renkei:facility:0001"]));
        assert_eq!(ids.common_names, list(&["hospital-a"]));
        assert_eq!(ids.display_name(), Some("Hospital-A.renkei.example"));
    }

    #[test]
    fn net4_dns_matches_case_insensitively_others_exactly() {
        let der = cert(
            &[
                SanType::DnsName("hospital-a.renkei.example".try_into().expect("dns")),
                SanType::URI("urn:renkei:facility:0001".try_into().expect("uri")),
            ],
            Some("Hospital A"),
        );
        let ids = PeerIdentities::from_certificate(&der).expect("identities");
        let allow = list(&["HOSPITAL-A.renkei.example"]);
        assert_eq!(ids.allowed_by(&allow), Some("HOSPITAL-A.renkei.example"));
        assert_eq!(ids.allowed_by(&list(&["URN:renkei:facility:0001"])), None);
        assert!(ids
            .allowed_by(&list(&["urn:renkei:facility:0001"]))
            .is_some());
        assert_eq!(ids.allowed_by(&list(&["hospital a"])), None);
        assert!(ids.allowed_by(&list(&["Hospital A"])).is_some());
    }

    #[test]
    fn net4_no_suffix_wildcard_or_empty_list_matches() {
        let der = cert(
            &[SanType::DnsName(
                "a.renkei.example".try_into().expect("dns"),
            )],
            None,
        );
        let ids = PeerIdentities::from_certificate(&der).expect("identities");
        assert_eq!(ids.allowed_by(&list(&["renkei.example"])), None);
        assert_eq!(ids.allowed_by(&list(&["*.renkei.example"])), None);
        assert_eq!(ids.allowed_by(&list(&["a.renkei.example."])), None);
        assert_eq!(ids.allowed_by(&[]), None);
    }

    #[test]
    fn int1_garbage_is_an_error_not_a_panic() {
        let der = CertificateDer::from(vec![0x30, 0x03, 0x01, 0x02]);
        assert!(PeerIdentities::from_certificate(&der).is_err());
    }
}
