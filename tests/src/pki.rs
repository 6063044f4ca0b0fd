//! The lab's operator PKI: a real CA made with rcgen when the lab is built, one certificate per
//! box, and whatever extra certificates and CRLs a test needs (another CA, revoked, expired,
//! wrong identity). The CA key is also written to disk so tests can sign with the openssl CLI
//! (SHA-1, small RSA keys: things rcgen will not make).
//!
//! Never used outside the lab: every key here is throwaway and lives in the lab's folder.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SerialNumber,
};

/// Serial numbers of extra certificates start here (boxes get 1, 2, 3).
const FIRST_EXTRA_SERIAL: u64 = 100;

/// A CA that issues box certificates and CRLs.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate in PEM.
    pub cert_pem: String,
    next_serial: AtomicU64,
}

/// A certificate and its private key, in PEM.
#[derive(Clone)]
pub struct Leaf {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
    /// Its serial number.
    pub serial: u64,
}

impl Ca {
    /// A P-256 CA with the given common name.
    pub fn new(cn: &str) -> anyhow::Result<Ca> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, cn);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        Ok(Ca {
            issuer: Issuer::new(params, key),
            cert_pem: cert.pem(),
            next_serial: AtomicU64::new(FIRST_EXTRA_SERIAL),
        })
    }

    /// The CA's private key in PEM (for signing with the openssl CLI).
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// A fresh serial number for an extra certificate.
    pub fn next_serial(&self) -> u64 {
        self.next_serial.fetch_add(1, Ordering::Relaxed)
    }

    /// A P-256 certificate for `name` (SAN DNS and CN) with both serverAuth and clientAuth.
    pub fn issue(&self, name: &str) -> anyhow::Result<Leaf> {
        self.issue_with(name, self.next_serial(), |_| {})
    }

    /// Like [`Ca::issue`] with a chosen serial and any parameter changes (validity, say).
    pub fn issue_with(
        &self,
        name: &str,
        serial: u64,
        edit: impl FnOnce(&mut CertificateParams),
    ) -> anyhow::Result<Leaf> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(vec![name.to_string()])?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.serial_number = Some(SerialNumber::from(serial));
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        edit(&mut params);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            serial,
        })
    }

    /// A CRL (PEM) revoking `serials`, valid from 2020 to 2090.
    pub fn crl(&self, serials: &[u64]) -> anyhow::Result<String> {
        let params = CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2020, 1, 1),
            next_update: rcgen::date_time_ymd(2090, 1, 1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: serials
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
        Ok(params.signed_by(&self.issuer)?.pem()?)
    }
}

/// Writes a private key file with mode 0600 (the daemon refuses anything more open).
pub fn write_key(path: &Path, pem: &str) -> anyhow::Result<()> {
    fs::write(path, pem).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    Ok(())
}

/// A certificate and key written to disk, for `openssl s_client -cert -key`.
pub struct LeafFiles {
    /// The certificate file.
    pub cert: PathBuf,
    /// The key file (mode 0600).
    pub key: PathBuf,
}

impl Leaf {
    /// Writes `<dir>/<stem>.crt` and `<dir>/<stem>.key`.
    pub fn write(&self, dir: &Path, stem: &str) -> anyhow::Result<LeafFiles> {
        fs::create_dir_all(dir)?;
        let files = LeafFiles {
            cert: dir.join(format!("{stem}.crt")),
            key: dir.join(format!("{stem}.key")),
        };
        fs::write(&files.cert, &self.cert_pem)?;
        write_key(&files.key, &self.key_pem)?;
        Ok(files)
    }
}
