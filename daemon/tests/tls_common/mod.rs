//! Test PKI for the tls_* tests: an operator CA, box certificates and CRLs made with rcgen at
//! test time, written to a temporary directory as the `[tls]` files of a box.

#![allow(dead_code)]

#[path = "../skip/mod.rs"]
mod skip;
pub use skip::skip;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SerialNumber, SignatureAlgorithm,
};
use renkei::config::TlsConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{CipherSuite, ClientConfig, NamedGroup, ProtocolVersion, RootCertStore, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Name the test servers' certificates carry.
pub const SERVER_NAME: &str = "hub.renkei.example";
/// Name the test clients' certificates carry.
pub const CLIENT_NAME: &str = "clinic.renkei.example";

/// An operator CA that can issue box certificates and CRLs.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate in PEM.
    pub pem: String,
}

/// A box certificate and its key, in PEM.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub serial: u64,
}

impl Ca {
    /// A P-256 CA with the given common name.
    pub fn new(cn: &str) -> Ca {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("CA key");
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, cn);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("CA cert");
        Ca {
            issuer: Issuer::new(params, key),
            pem: cert.pem(),
        }
    }

    /// A P-256 box certificate for `name` (SAN DNS and CN), usable as server and client.
    pub fn issue(&self, name: &str, serial: u64) -> Leaf {
        self.issue_with(name, serial, &rcgen::PKCS_ECDSA_P256_SHA256, |_| {})
    }

    /// A box certificate with a chosen key algorithm and any parameter changes.
    pub fn issue_with(
        &self,
        name: &str,
        serial: u64,
        alg: &'static SignatureAlgorithm,
        edit: impl FnOnce(&mut CertificateParams),
    ) -> Leaf {
        let key = KeyPair::generate_for(alg).expect("leaf key");
        let mut params = CertificateParams::new(vec![name.to_string()]).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.serial_number = Some(SerialNumber::from(serial));
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        edit(&mut params);
        let cert = params.signed_by(&key, &self.issuer).expect("leaf cert");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            serial,
        }
    }

    /// This CA alone as a root store, for configurations built outside `renkei::tls`.
    pub fn roots(&self) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.pem.as_bytes()).expect("CA"))
            .expect("root");
        Arc::new(roots)
    }

    /// A CRL revoking the given serials, in PEM.
    pub fn crl(&self, revoked: &[u64]) -> String {
        let params = CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2020, 1, 1),
            next_update: rcgen::date_time_ymd(2090, 1, 1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|serial| RevokedCertParams {
                    serial_number: SerialNumber::from(*serial),
                    revocation_time: rcgen::date_time_ymd(2021, 1, 1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params
            .signed_by(&self.issuer)
            .expect("CRL")
            .pem()
            .expect("CRL PEM")
    }
}

/// Writes a key file with mode 0600, as the daemon requires.
pub fn write_key(path: &Path, pem: &str) {
    fs::write(path, pem).expect("write key");
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).expect("chmod key");
}

/// Writes the `[tls]` files of one box into `dir` and returns its `TlsConfig`.
pub fn write_box(
    dir: &Path,
    prefix: &str,
    leaf: &Leaf,
    ca_pem: &str,
    crl: Option<&str>,
) -> TlsConfig {
    let config = TlsConfig {
        certificate_file: dir.join(format!("{prefix}-cert.pem")),
        private_key_file: dir.join(format!("{prefix}-key.pem")),
        ca_file: dir.join(format!("{prefix}-ca.pem")),
        crl_file: crl.map(|_| dir.join(format!("{prefix}-crl.pem"))),
    };
    fs::write(&config.certificate_file, &leaf.cert_pem).expect("write cert");
    write_key(&config.private_key_file, &leaf.key_pem);
    fs::write(&config.ca_file, ca_pem).expect("write CA");
    if let (Some(path), Some(crl)) = (&config.crl_file, crl) {
        fs::write(path, crl).expect("write CRL");
    }
    config
}

/// Runs `openssl` with `args` in `dir`; `None` if openssl is missing or refuses, after
/// [`skip`]: the test is reported as skipped, and fails instead under CI.
pub fn openssl(dir: &Path, args: &[&str]) -> Option<()> {
    match std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
    {
        Ok(out) if out.status.success() => Some(()),
        Ok(out) => {
            skip(&format!(
                "openssl {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
            None
        }
        Err(err) => {
            skip(&format!("openssl not available ({err})"));
            None
        }
    }
}

/// What a successful handshake negotiated, seen from the server.
#[derive(Debug)]
pub struct Negotiated {
    pub version: ProtocolVersion,
    pub suite: CipherSuite,
    pub group: NamedGroup,
    pub client_chain: Vec<CertificateDer<'static>>,
    /// Full or resumed, as the server saw it.
    pub kind: Option<rustls::HandshakeKind>,
}

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes a client and a server over an in-memory pipe and exchanges one byte each way.
/// Returns what the server negotiated, or the first error either side saw.
pub async fn handshake(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
) -> Result<Negotiated, String> {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let server_side = async move {
        let mut tls = TlsAcceptor::from(server)
            .accept(server_io)
            .await
            .map_err(|e| format!("server: {e}"))?;
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte)
            .await
            .map_err(|e| format!("server read: {e}"))?;
        tls.write_all(b"s")
            .await
            .map_err(|e| format!("server write: {e}"))?;
        tls.flush()
            .await
            .map_err(|e| format!("server flush: {e}"))?;
        let (_, conn) = tls.get_ref();
        Ok::<_, String>(Negotiated {
            version: conn.protocol_version().ok_or("no version")?,
            suite: conn.negotiated_cipher_suite().ok_or("no suite")?.suite(),
            group: conn
                .negotiated_key_exchange_group()
                .ok_or("no group")?
                .name(),
            client_chain: conn
                .peer_certificates()
                .map(|c| c.iter().map(|d| d.clone().into_owned()).collect())
                .unwrap_or_default(),
            kind: conn.handshake_kind(),
        })
    };
    let client_side = async move {
        let name = ServerName::try_from(SERVER_NAME).map_err(|e| e.to_string())?;
        let mut tls = TlsConnector::from(client)
            .connect(name, client_io)
            .await
            .map_err(|e| format!("client: {e}"))?;
        tls.write_all(b"c")
            .await
            .map_err(|e| format!("client write: {e}"))?;
        tls.flush()
            .await
            .map_err(|e| format!("client flush: {e}"))?;
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte)
            .await
            .map_err(|e| format!("client read: {e}"))?;
        Ok::<_, String>(())
    };
    let both = async { tokio::join!(server_side, client_side) };
    let (server_result, client_result) = tokio::time::timeout(HANDSHAKE_TIMEOUT, both)
        .await
        .map_err(|_| "handshake timed out".to_string())?;
    let negotiated = server_result?;
    client_result?;
    Ok(negotiated)
}

/// A temporary directory that lives as long as the test.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// Path helper for files next to a config.
pub fn sibling(config: &TlsConfig, name: &str) -> PathBuf {
    config
        .certificate_file
        .parent()
        .expect("config dir")
        .join(name)
}
