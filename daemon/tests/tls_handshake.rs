//! Real handshakes between configurations built by `renkei::tls` (NET-2, NET-3, NET-4).

mod tls_common;

use std::sync::Arc;

use renkei::config::MinTls;
use renkei::tls::{credentials, profile, PeerIdentities, TlsMaterial};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{CipherSuite, ClientConfig, NamedGroup, ProtocolVersion};
use tls_common::{handshake, tempdir, write_box, Ca, CLIENT_NAME, SERVER_NAME};

const ALLOWED_SUITES: &[CipherSuite] = &[
    CipherSuite::TLS13_AES_256_GCM_SHA384,
    CipherSuite::TLS13_AES_128_GCM_SHA256,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
];
const ALLOWED_GROUPS: &[NamedGroup] = &[NamedGroup::secp256r1, NamedGroup::secp384r1];

/// A server box and a client box under one CA; the server's CRL revokes `revoked`.
struct Pair {
    _dir: tempfile::TempDir,
    server: TlsMaterial,
    client: TlsMaterial,
}

fn pair(ca: &Ca, client_ca: &Ca, revoked: &[u64]) -> Pair {
    let dir = tempdir();
    let crl = (!revoked.is_empty()).then(|| ca.crl(revoked));
    let server_cfg = write_box(
        dir.path(),
        "server",
        &ca.issue(SERVER_NAME, 1),
        &ca.pem,
        crl.as_deref(),
    );
    let client_cfg = write_box(
        dir.path(),
        "client",
        &client_ca.issue(CLIENT_NAME, 2),
        &ca.pem,
        None,
    );
    let server = TlsMaterial::build(&credentials::load(&server_cfg).expect("server creds"))
        .expect("server material");
    let client = TlsMaterial::build(&credentials::load(&client_cfg).expect("client creds"))
        .expect("client material");
    Pair {
        _dir: dir,
        server,
        client,
    }
}

/// A client config outside the module, for peers that do not follow the profile.
fn foreign_client(
    provider: rustls::crypto::CryptoProvider,
    versions: &[&'static rustls::SupportedProtocolVersion],
    ca: &Ca,
    leaf: Option<&tls_common::Leaf>,
) -> Arc<ClientConfig> {
    let builder = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(ca.roots());
    let config = match leaf {
        Some(leaf) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).expect("cert")],
                PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("key"),
            )
            .expect("client cert"),
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

#[tokio::test]
async fn net2_net3_net4_mutual_tls13_handshake_negotiates_allowed_suite_and_group() {
    let ca = Ca::new("renkei test CA");
    let p = pair(&ca, &ca, &[]);
    let got = handshake(
        p.server.server_config(MinTls::Tls13),
        p.client.client_config(MinTls::Tls13),
    )
    .await
    .expect("handshake");
    assert_eq!(got.version, ProtocolVersion::TLSv1_3);
    assert!(ALLOWED_SUITES.contains(&got.suite), "{:?}", got.suite);
    assert!(ALLOWED_GROUPS.contains(&got.group), "{:?}", got.group);
    // The server's order decides: AES-256 first.
    assert_eq!(got.suite, CipherSuite::TLS13_AES_256_GCM_SHA384);

    let peer = got.client_chain.first().expect("client certificate");
    let ids = PeerIdentities::from_certificate(peer).expect("identities");
    assert_eq!(
        ids.allowed_by(&["CLINIC.renkei.example".to_string()]),
        Some("CLINIC.renkei.example")
    );
    assert_eq!(ids.allowed_by(&["other.renkei.example".to_string()]), None);
}

#[tokio::test]
async fn net4_client_without_certificate_is_refused() {
    let ca = Ca::new("renkei test CA");
    let p = pair(&ca, &ca, &[]);
    let client = foreign_client(
        (*profile::provider()).clone(),
        &[&rustls::version::TLS13],
        &ca,
        None,
    );
    let err = handshake(p.server.server_config(MinTls::Tls13), client)
        .await
        .expect_err("must be refused");
    assert!(err.starts_with("server:"), "{err}");
}

#[tokio::test]
async fn net4_client_certificate_from_another_ca_is_refused() {
    let ca = Ca::new("renkei test CA");
    let other = Ca::new("some other CA");
    let p = pair(&ca, &ca, &[]);
    // renkei would not even load such a certificate (credentials::load checks the chain), so
    // the stranger is a profile client built with rustls alone.
    let stranger = foreign_client(
        profile::provider().as_ref().clone(),
        &[&rustls::version::TLS13],
        &ca,
        Some(&other.issue(CLIENT_NAME, 2)),
    );
    let err = handshake(p.server.server_config(MinTls::Tls13), stranger)
        .await
        .expect_err("must be refused");
    assert!(err.starts_with("server:"), "{err}");
}

#[tokio::test]
async fn net4_revoked_client_certificate_is_refused() {
    let ca = Ca::new("renkei test CA");
    // The client's serial is 2.
    let p = pair(&ca, &ca, &[2]);
    let err = handshake(
        p.server.server_config(MinTls::Tls13),
        p.client.client_config(MinTls::Tls13),
    )
    .await
    .expect_err("must be refused");
    assert!(err.to_lowercase().contains("revoked"), "{err}");

    // The same CRL revoking someone else lets the client in.
    let p = pair(&ca, &ca, &[99]);
    handshake(
        p.server.server_config(MinTls::Tls13),
        p.client.client_config(MinTls::Tls13),
    )
    .await
    .expect("unrevoked client");
}

#[tokio::test]
async fn net4_server_from_another_ca_is_refused_by_the_client() {
    let ca = Ca::new("renkei test CA");
    let other = Ca::new("some other CA");
    // A server whose certificate is from `other`: renkei would not load it (credentials::load
    // checks the chain), so it is built with rustls alone, on the profile's provider.
    let leaf = other.issue(SERVER_NAME, 1);
    let server = rustls::ServerConfig::builder_with_provider(profile::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).expect("cert")],
            PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("key"),
        )
        .expect("server config");
    let p = pair(&ca, &ca, &[]);
    let err = handshake(Arc::new(server), p.client.client_config(MinTls::Tls13))
        .await
        .expect_err("must be refused");
    // The client refused the chain and told the server so.
    assert!(err.contains("UnknownCA"), "{err}");
}

#[tokio::test]
async fn net2_tls12_only_client_is_refused_by_a_tls13_server() {
    let ca = Ca::new("renkei test CA");
    let p = pair(&ca, &ca, &[]);
    let leaf = ca.issue(CLIENT_NAME, 3);
    let client = foreign_client(
        (*profile::provider()).clone(),
        &[&rustls::version::TLS12],
        &ca,
        Some(&leaf),
    );
    handshake(p.server.server_config(MinTls::Tls13), client)
        .await
        .expect_err("TLS 1.2 must be refused by a 1.3-only service");
}

#[tokio::test]
async fn net2_net3_tls12_only_client_gets_ecdhe_gcm_from_a_min_tls12_server() {
    let ca = Ca::new("renkei test CA");
    let p = pair(&ca, &ca, &[]);
    let leaf = ca.issue(CLIENT_NAME, 3);
    let client = foreign_client(
        (*profile::provider()).clone(),
        &[&rustls::version::TLS12],
        &ca,
        Some(&leaf),
    );
    let got = handshake(p.server.server_config(MinTls::Tls12), client)
        .await
        .expect("TLS 1.2 handshake");
    assert_eq!(got.version, ProtocolVersion::TLSv1_2);
    assert_eq!(
        got.suite,
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
    );
    assert!(ALLOWED_GROUPS.contains(&got.group), "{:?}", got.group);
    assert!(!got.client_chain.is_empty());

    // Our own 1.2-capable client still prefers 1.3.
    let got = handshake(
        p.server.server_config(MinTls::Tls12),
        p.client.client_config(MinTls::Tls12),
    )
    .await
    .expect("handshake");
    assert_eq!(got.version, ProtocolVersion::TLSv1_3);
}

/// A server config outside the module with rustls' defaults for resumption (a session cache,
/// TLS 1.3 tickets), requiring a client certificate of `ca`.
fn foreign_server(ca: &Ca) -> Arc<rustls::ServerConfig> {
    let leaf = ca.issue(SERVER_NAME, 9);
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        ca.roots(),
        profile::provider(),
    )
    .build()
    .expect("client verifier");
    let config = rustls::ServerConfig::builder_with_provider(profile::provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).expect("cert")],
            PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("key"),
        )
        .expect("server cert");
    Arc::new(config)
}

/// NET-2, NET-4: no connection is ever resumed, on either side, so every one judges the
/// peer's certificate (expiry, the CRL) and, in TLS 1.2 too, makes its own ECDHE exchange. The
/// same peers with rustls' defaults do resume (checked first, so the test can fail).
#[tokio::test]
async fn net2_net4_every_connection_is_a_full_handshake_never_a_resumption() {
    use rustls::HandshakeKind;
    let ca = Ca::new("renkei test CA");
    let p = pair(&ca, &ca, &[]);
    let leaf = ca.issue(CLIENT_NAME, 3);
    let provider = || (*profile::provider()).clone();
    let kinds = |server: Arc<rustls::ServerConfig>, client: Arc<ClientConfig>| async move {
        let mut kinds = Vec::new();
        for _ in 0..3 {
            let got = handshake(server.clone(), client.clone())
                .await
                .expect("handshake");
            assert!(ALLOWED_GROUPS.contains(&got.group), "{:?}", got.group);
            kinds.push(got.kind);
        }
        kinds
    };
    let full = vec![Some(HandshakeKind::Full); 3];

    // rustls' defaults on both sides: the second and third connections are resumed.
    let defaults = kinds(
        foreign_server(&ca),
        foreign_client(provider(), &[&rustls::version::TLS13], &ca, Some(&leaf)),
    )
    .await;
    assert_eq!(
        defaults,
        [
            Some(HandshakeKind::Full),
            Some(HandshakeKind::Resumed),
            Some(HandshakeKind::Resumed)
        ]
    );

    // renkei's server, against a client that would resume (TLS 1.3, and TLS 1.2 by session id).
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let client = foreign_client(provider(), &[version], &ca, Some(&leaf));
        assert_eq!(
            kinds(p.server.server_config(MinTls::Tls12), client).await,
            full,
            "{version:?}"
        );
    }
    // renkei's client, against a server that would resume.
    for min_tls in [MinTls::Tls13, MinTls::Tls12] {
        assert_eq!(
            kinds(foreign_server(&ca), p.client.client_config(min_tls)).await,
            full,
            "{min_tls:?}"
        );
    }
    // And between renkei's own two ends.
    for min_tls in [MinTls::Tls13, MinTls::Tls12] {
        assert_eq!(
            kinds(
                p.server.server_config(min_tls),
                p.client.client_config(min_tls)
            )
            .await,
            full,
            "{min_tls:?}"
        );
    }
}

#[tokio::test]
async fn net3_client_offering_only_forbidden_groups_or_suites_is_refused() {
    let ca = Ca::new("renkei test CA");
    let p = pair(&ca, &ca, &[]);
    let leaf = ca.issue(CLIENT_NAME, 3);
    let ring = rustls::crypto::ring::default_provider();

    let x25519_only = rustls::crypto::CryptoProvider {
        kx_groups: vec![rustls::crypto::ring::kx_group::X25519],
        ..ring.clone()
    };
    let client = foreign_client(x25519_only, &[&rustls::version::TLS13], &ca, Some(&leaf));
    handshake(p.server.server_config(MinTls::Tls12), client)
        .await
        .expect_err("X25519 is not in the profile");

    for suite in [
        rustls::crypto::ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        rustls::crypto::ring::cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ] {
        let chacha_only = rustls::crypto::CryptoProvider {
            cipher_suites: vec![suite],
            ..ring.clone()
        };
        let client = foreign_client(
            chacha_only,
            &[&rustls::version::TLS13, &rustls::version::TLS12],
            &ca,
            Some(&leaf),
        );
        handshake(p.server.server_config(MinTls::Tls12), client)
            .await
            .expect_err("ChaCha20-Poly1305 is not in the profile");
    }
}
