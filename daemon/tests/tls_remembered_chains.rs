//! Real handshakes against renkei's verifiers that remember accepted chains
//! (`renkei::tls::verified_chains`, NET-4): what is remembered never stands in for the peer's
//! proof that it holds the certificate's key, and never outlives a reload of the CRL.

mod tls_common;

use std::fs;
use std::sync::Arc;

use renkei::config::MinTls;
use renkei::tls::{profile, TlsMaterial};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ClientConfig, ServerConfig};
use tls_common::{handshake, tempdir, write_box, Ca, Leaf, CLIENT_NAME, SERVER_NAME};

/// `leaf`'s certificate with the key of `other`: what a peer that copied a box's certificate,
/// but not its key, would present.
fn impostor(leaf: &Leaf, other: &Leaf) -> Arc<SingleCertAndKey> {
    let cert = CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).expect("cert");
    let key = PrivateKeyDer::from_pem_slice(other.key_pem.as_bytes()).expect("key");
    let key = profile::provider()
        .key_provider
        .load_private_key(key)
        .expect("signing key");
    Arc::new(SingleCertAndKey::from(CertifiedKey::new(vec![cert], key)))
}

fn impostor_client(ca: &Ca, presents: Arc<SingleCertAndKey>) -> Arc<ClientConfig> {
    let config = ClientConfig::builder_with_provider(profile::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("versions")
        .with_root_certificates(ca.roots())
        .with_client_cert_resolver(presents);
    Arc::new(config)
}

fn impostor_server(ca: &Ca, presents: Arc<SingleCertAndKey>) -> Arc<ServerConfig> {
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        ca.roots(),
        profile::provider(),
    )
    .build()
    .expect("client verifier");
    let config = ServerConfig::builder_with_provider(profile::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(presents);
    Arc::new(config)
}

/// NET-4: after a box's chain was accepted (and is remembered), a peer presenting the same
/// certificate without its key is refused, at both ends: the handshake signature is checked on
/// every connection. The genuine peers connect first and again after, so the refusal is the
/// impostor's own.
#[tokio::test]
async fn net4_a_remembered_certificate_without_its_key_is_refused_at_both_ends() {
    let ca = Ca::new("renkei test CA");
    let dir = tempdir();
    let hub_leaf = ca.issue(SERVER_NAME, 1);
    let clinic_leaf = ca.issue(CLIENT_NAME, 2);
    let stranger = ca.issue("stranger.renkei.example", 3);
    let hub = TlsMaterial::load(&write_box(dir.path(), "hub", &hub_leaf, &ca.pem, None))
        .expect("hub material");
    let clinic = TlsMaterial::load(&write_box(
        dir.path(),
        "clinic",
        &clinic_leaf,
        &ca.pem,
        None,
    ))
    .expect("clinic material");

    for min_tls in [MinTls::Tls13, MinTls::Tls12] {
        let server = hub.server_config(min_tls);
        let client = clinic.client_config(min_tls);
        for _ in 0..2 {
            handshake(server.clone(), client.clone())
                .await
                .expect("the genuine boxes");
        }
        let refused = handshake(
            server.clone(),
            impostor_client(&ca, impostor(&clinic_leaf, &stranger)),
        )
        .await
        .expect_err("a client with the clinic's certificate but not its key");
        assert!(refused.contains("BadSignature"), "{refused}");
        let refused = handshake(
            impostor_server(&ca, impostor(&hub_leaf, &stranger)),
            client.clone(),
        )
        .await
        .expect_err("a server with the hub's certificate but not its key");
        // The client refused the signature and told the server so (decrypt_error).
        assert!(refused.contains("DecryptError"), "{refused}");
        handshake(server, client).await.expect("the genuine boxes");
    }
}

/// NET-4: a box whose chain the hub has accepted and remembers is refused as soon as the hub
/// reloads a CRL that revokes it; the chains remembered belong to one generation of files.
#[tokio::test]
async fn net4_a_remembered_chain_is_refused_after_a_reload_revokes_it() {
    let ca = Ca::new("renkei test CA");
    let dir = tempdir();
    let hub_config = write_box(
        dir.path(),
        "hub",
        &ca.issue(SERVER_NAME, 1),
        &ca.pem,
        Some(&ca.crl(&[])),
    );
    let clinic = TlsMaterial::load(&write_box(
        dir.path(),
        "clinic",
        &ca.issue(CLIENT_NAME, 2),
        &ca.pem,
        None,
    ))
    .expect("clinic material");
    let before = TlsMaterial::load(&hub_config).expect("hub material");
    for _ in 0..2 {
        handshake(
            before.server_config(MinTls::Tls13),
            clinic.client_config(MinTls::Tls13),
        )
        .await
        .expect("not revoked yet");
    }

    let crl_file = hub_config.crl_file.as_ref().expect("CRL path");
    fs::write(crl_file, ca.crl(&[2])).expect("write CRL");
    let after = TlsMaterial::load(&hub_config).expect("reloaded hub material");
    let refused = handshake(
        after.server_config(MinTls::Tls13),
        clinic.client_config(MinTls::Tls13),
    )
    .await
    .expect_err("revoked by the reloaded CRL");
    assert!(refused.to_lowercase().contains("revoked"), "{refused}");
}
