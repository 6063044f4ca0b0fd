//! The CRYPTREC high-security TLS profile, pinned in code (`docs/crypto-profile.md`).
//!
//! This is the only module that names cipher suites, key exchange groups, signature schemes and
//! protocol versions. Every `ServerConfig` and `ClientConfig` in renkei is built here, from one
//! cut-down `ring` provider; no function or option in this module can widen the profile.

use std::sync::{Arc, OnceLock};

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::ring as ring_provider;
use rustls::crypto::{CryptoProvider, SupportedKxGroup, WebPkiSupportedAlgorithms};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    ClientConfig, RootCertStore, ServerConfig, SignatureScheme, SupportedCipherSuite,
    SupportedProtocolVersion,
};
use webpki::ring as webpki_algs;

use super::credentials::Credentials;
use super::verified_chains::{RememberingClientVerifier, RememberingServerVerifier};
use crate::config::MinTls;

/// Cipher suites in preference order: AES-256 before AES-128, TLS 1.3 before TLS 1.2.
/// TLS 1.2 suites are only usable where the protocol versions allow 1.2.
static CIPHER_SUITES: &[SupportedCipherSuite] = &[
    ring_provider::cipher_suite::TLS13_AES_256_GCM_SHA384,
    ring_provider::cipher_suite::TLS13_AES_128_GCM_SHA256,
    ring_provider::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    ring_provider::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ring_provider::cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ring_provider::cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
];

/// Key exchange groups: NIST curves only. X25519 is not on the CRYPTREC list.
static KX_GROUPS: &[&dyn SupportedKxGroup] = &[
    ring_provider::kx_group::SECP256R1,
    ring_provider::kx_group::SECP384R1,
];

/// Signature verification for handshakes, certificates and CRLs.
///
/// Certificates and CRLs (`all`): ECDSA only with the hash that matches its curve; no SHA-1
/// anywhere. Handshake signatures (`mapping`): rustls checks TLS 1.3 signatures with the first
/// algorithm of a scheme only, so there ECDSA stays curve-bound; in TLS 1.2 the ECDSA scheme
/// names only name the hash (RFC 8422), and a peer with a P-256 key may sign with SHA-384 when
/// we list `ECDSA_NISTP384_SHA384` first (openssl does): the second entries accept that, as
/// rustls's own ring provider does. The RSA PKCS#1
/// `_ABSENT_PARAMS` entries are the same algorithms written without the NULL parameter, as some
/// CAs encode them. rustls itself refuses PKCS#1 signatures in TLS 1.3 handshakes.
static SIGNATURE_ALGORITHMS: WebPkiSupportedAlgorithms = WebPkiSupportedAlgorithms {
    all: &[
        webpki_algs::ECDSA_P256_SHA256,
        webpki_algs::ECDSA_P384_SHA384,
        webpki_algs::ED25519,
        webpki_algs::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
        webpki_algs::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
        webpki_algs::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
        webpki_algs::RSA_PKCS1_2048_8192_SHA256,
        webpki_algs::RSA_PKCS1_2048_8192_SHA384,
        webpki_algs::RSA_PKCS1_2048_8192_SHA512,
        webpki_algs::RSA_PKCS1_2048_8192_SHA256_ABSENT_PARAMS,
        webpki_algs::RSA_PKCS1_2048_8192_SHA384_ABSENT_PARAMS,
        webpki_algs::RSA_PKCS1_2048_8192_SHA512_ABSENT_PARAMS,
    ],
    mapping: &[
        (
            SignatureScheme::ECDSA_NISTP384_SHA384,
            &[
                webpki_algs::ECDSA_P384_SHA384,
                webpki_algs::ECDSA_P256_SHA384,
            ],
        ),
        (
            SignatureScheme::ECDSA_NISTP256_SHA256,
            &[
                webpki_algs::ECDSA_P256_SHA256,
                webpki_algs::ECDSA_P384_SHA256,
            ],
        ),
        (SignatureScheme::ED25519, &[webpki_algs::ED25519]),
        (
            SignatureScheme::RSA_PSS_SHA512,
            &[webpki_algs::RSA_PSS_2048_8192_SHA512_LEGACY_KEY],
        ),
        (
            SignatureScheme::RSA_PSS_SHA384,
            &[webpki_algs::RSA_PSS_2048_8192_SHA384_LEGACY_KEY],
        ),
        (
            SignatureScheme::RSA_PSS_SHA256,
            &[webpki_algs::RSA_PSS_2048_8192_SHA256_LEGACY_KEY],
        ),
        (
            SignatureScheme::RSA_PKCS1_SHA512,
            &[webpki_algs::RSA_PKCS1_2048_8192_SHA512],
        ),
        (
            SignatureScheme::RSA_PKCS1_SHA384,
            &[webpki_algs::RSA_PKCS1_2048_8192_SHA384],
        ),
        (
            SignatureScheme::RSA_PKCS1_SHA256,
            &[webpki_algs::RSA_PKCS1_2048_8192_SHA256],
        ),
    ],
};

/// TLS 1.3 only: the default.
static TLS13_ONLY: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// TLS 1.3 preferred, 1.2 allowed, for peers that cannot do 1.3.
static TLS13_AND_TLS12: &[&SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// Why a TLS configuration could not be built from loaded credentials.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The CA bundle holds a certificate rustls cannot use as a trust anchor.
    #[error("CA certificate #{index} cannot be used as a trust anchor: {source}")]
    BadTrustAnchor {
        /// Position in the CA bundle, from 0.
        index: usize,
        /// What rustls said.
        source: rustls::Error,
    },
    /// The certificate verifier could not be built (no trust anchors, or a CRL it cannot parse).
    #[error("cannot build the certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// rustls refused the versions, the certificate or the key.
    #[error("cannot build the TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The one crypto provider every TLS session in renkei uses: `ring`, cut down to the profile.
///
/// Built once and shared so that all configurations provably use the same pinned provider.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            let ring = ring_provider::default_provider();
            Arc::new(CryptoProvider {
                cipher_suites: CIPHER_SUITES.to_vec(),
                kx_groups: KX_GROUPS.to_vec(),
                signature_verification_algorithms: SIGNATURE_ALGORITHMS,
                secure_random: ring.secure_random,
                key_provider: ring.key_provider,
            })
        })
        .clone()
}

/// The protocol versions a service with this `min_tls` may negotiate; never below TLS 1.2.
pub fn protocol_versions(min_tls: MinTls) -> &'static [&'static SupportedProtocolVersion] {
    match min_tls {
        MinTls::Tls13 => TLS13_ONLY,
        MinTls::Tls12 => TLS13_AND_TLS12,
    }
}

/// The operator CA as a root store for the verifiers.
fn root_store(credentials: &Credentials) -> Result<Arc<RootCertStore>, ProfileError> {
    let mut roots = RootCertStore::empty();
    for (index, ca) in credentials.ca_certs.iter().enumerate() {
        roots
            .add(ca.clone())
            .map_err(|source| ProfileError::BadTrustAnchor { index, source })?;
    }
    Ok(Arc::new(roots))
}

/// A TLS server configuration for an inbound service or the management API.
///
/// A client certificate chaining to the operator CA (and not revoked by the configured CRL) is
/// required on every connection; checking the identity against the service's allowlist is the
/// caller's job (see `tls::identity`). 0-RTT is off.
pub fn server_config(
    credentials: &Credentials,
    min_tls: MinTls,
) -> Result<Arc<ServerConfig>, ProfileError> {
    let provider = provider();
    let verifier =
        WebPkiClientVerifier::builder_with_provider(root_store(credentials)?, provider.clone())
            .with_crls(credentials.crls.iter().cloned())
            .build()?;
    // Accepted client chains are remembered for this generation of CA and CRLs
    // (`verified_chains`); every handshake still proves the client holds the key.
    let verifier = Arc::new(RememberingClientVerifier::new(verifier));
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(protocol_versions(min_tls))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(credentials.chain.clone(), credentials.private_key())?;
    // Our preference order (AES-256 first) decides, not the client's.
    config.ignore_client_order = true;
    config.max_early_data_size = 0;
    config.send_half_rtt_data = false;
    // No resumption: every connection is a full handshake (see `client_config`).
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// A TLS server configuration for the facility administrator's status page.
///
/// Browsers on the LAN carry no client certificate, so none is asked for (the page has its own
/// login); everything else is the profile: TLS 1.3 only, AES-GCM, P-256/P-384 ECDHE, no 0-RTT.
/// ALPN offers HTTP/1.1 only, the one protocol the page speaks.
pub fn web_server_config(
    chain: Vec<rustls_pki_types::CertificateDer<'static>>,
    key: rustls_pki_types::PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, ProfileError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(protocol_versions(MinTls::Tls13))?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.ignore_client_order = true;
    config.max_early_data_size = 0;
    config.send_half_rtt_data = false;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A TLS client configuration for an outbound service.
///
/// The server must present a certificate chaining to the operator CA (and not revoked by the
/// configured CRL) for the name the caller passes at connect time; the box's own certificate is
/// presented as the client certificate. 0-RTT is off.
pub fn client_config(
    credentials: &Credentials,
    min_tls: MinTls,
) -> Result<Arc<ClientConfig>, ProfileError> {
    let provider = provider();
    let verifier =
        WebPkiServerVerifier::builder_with_provider(root_store(credentials)?, provider.clone())
            .with_crls(credentials.crls.iter().cloned())
            .build()?;
    // Accepted server chains are remembered per name for this generation of CA and CRLs
    // (`verified_chains`): webpki's verdict, not a weaker check, hence no "danger" in it.
    let verifier = Arc::new(RememberingServerVerifier::new(verifier));
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(protocol_versions(min_tls))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(credentials.chain.clone(), credentials.private_key())?;
    config.enable_early_data = false;
    // No resumption, on either side: every connection is a full handshake. A resumed one
    // judges no certificate (rustls carries the first handshake's peer certificate into every
    // new ticket, so a chain of resumptions outlives the certificate's expiry for as long as
    // the daemon runs on the same files) and, in TLS 1.2, makes no ECDHE exchange (the
    // abbreviated handshake reuses the old master secret): both against the profile.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use rustls::{CipherSuite, NamedGroup, ProtocolVersion};

    use super::*;

    #[test]
    fn net3_suites_are_exactly_the_table() {
        let suites: Vec<CipherSuite> = provider().cipher_suites.iter().map(|s| s.suite()).collect();
        assert_eq!(
            suites,
            vec![
                CipherSuite::TLS13_AES_256_GCM_SHA384,
                CipherSuite::TLS13_AES_128_GCM_SHA256,
                CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
                CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            ]
        );
    }

    #[test]
    fn net3_groups_are_exactly_the_table() {
        let groups: Vec<NamedGroup> = provider().kx_groups.iter().map(|g| g.name()).collect();
        assert_eq!(groups, vec![NamedGroup::secp256r1, NamedGroup::secp384r1]);
    }

    #[test]
    fn signature_schemes_are_exactly_the_table() {
        let provider = provider();
        let mut schemes = provider
            .signature_verification_algorithms
            .supported_schemes();
        schemes.sort_by_key(|s| u16::from(*s));
        let mut expected = vec![
            SignatureScheme::ECDSA_NISTP256_SHA256,
            SignatureScheme::ECDSA_NISTP384_SHA384,
            SignatureScheme::RSA_PSS_SHA256,
            SignatureScheme::RSA_PSS_SHA384,
            SignatureScheme::RSA_PSS_SHA512,
            SignatureScheme::RSA_PKCS1_SHA256,
            SignatureScheme::RSA_PKCS1_SHA384,
            SignatureScheme::RSA_PKCS1_SHA512,
            SignatureScheme::ED25519,
        ];
        expected.sort_by_key(|s| u16::from(*s));
        assert_eq!(schemes, expected);
        // Every certificate/CRL algorithm is one of the handshake algorithms (or its
        // absent-parameters encoding): nothing extra hides in `all`.
        assert_eq!(provider.signature_verification_algorithms.all.len(), 12);
    }

    #[test]
    fn ecdsa_is_curve_bound_in_tls13_and_for_certificates_only() {
        let algorithms = &provider().signature_verification_algorithms;
        for (scheme, curve_bound) in [
            (
                SignatureScheme::ECDSA_NISTP256_SHA256,
                webpki_algs::ECDSA_P256_SHA256,
            ),
            (
                SignatureScheme::ECDSA_NISTP384_SHA384,
                webpki_algs::ECDSA_P384_SHA384,
            ),
        ] {
            let mapped = algorithms
                .mapping
                .iter()
                .find(|(s, _)| *s == scheme)
                .map(|(_, algs)| *algs)
                .expect("mapped");
            // rustls verifies TLS 1.3 handshake signatures with the first entry only.
            assert_eq!(format!("{:?}", mapped[0]), format!("{curve_bound:?}"));
            assert_eq!(mapped.len(), 2, "TLS 1.2: either curve with this hash");
        }
        // Certificates and CRLs: no mismatched ECDSA pair at all.
        let all: Vec<String> = algorithms.all.iter().map(|a| format!("{a:?}")).collect();
        for mismatched in [
            webpki_algs::ECDSA_P256_SHA384,
            webpki_algs::ECDSA_P384_SHA256,
        ] {
            assert!(!all.contains(&format!("{mismatched:?}")));
        }
    }

    #[test]
    fn net3_every_suite_is_aead_gcm_with_ecdhe() {
        for suite in &provider().cipher_suites {
            let name = format!("{:?}", suite.suite());
            assert!(name.contains("_GCM_"), "{name}");
            assert!(
                name.starts_with("TLS13_") || name.starts_with("TLS_ECDHE_"),
                "{name}"
            );
        }
    }

    #[test]
    fn net2_versions_follow_min_tls() {
        let v13: Vec<ProtocolVersion> = protocol_versions(MinTls::Tls13)
            .iter()
            .map(|v| v.version)
            .collect();
        assert_eq!(v13, vec![ProtocolVersion::TLSv1_3]);
        let v12: Vec<ProtocolVersion> = protocol_versions(MinTls::Tls12)
            .iter()
            .map(|v| v.version)
            .collect();
        assert_eq!(
            v12,
            vec![ProtocolVersion::TLSv1_3, ProtocolVersion::TLSv1_2]
        );
    }
}
