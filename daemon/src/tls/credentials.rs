//! Loading and checking the box's certificate chain, private key, operator CA bundle and CRL.
//!
//! Every file is checked against the profile at load time, so a weak, expired, not-yet-valid or
//! mismatched certificate is reported by name here instead of as a generic handshake failure.
//! Files are untrusted input: nothing here panics on their content, and their size is bounded.

use std::fmt;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls::InconsistentKeys;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey;
use x509_parser::revocation_list::CertificateRevocationList;
use x509_parser::signature_algorithm::SignatureAlgorithm;
use x509_parser::time::ASN1Time;
use x509_parser::x509::AlgorithmIdentifier;

use super::certificate_profile::{self as cp, SignatureVerdict};
use super::identity::PeerIdentities;
use super::profile;
use crate::config::TlsConfig;
use crate::state::events::TlsFileProblem;

/// Certificate, key, CA and CRL files larger than this are refused (they are a few KiB).
pub const MAX_PEM_FILE_BYTES: u64 = 1024 * 1024;

/// A certificate expiring within this many days raises a warning (NET-5).
pub const EXPIRY_WARNING_DAYS: i64 = 30;

const SECONDS_PER_DAY: i64 = 86_400;

/// Why the TLS credentials were refused. Each variant names the file and the thing that failed.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// A file is missing or unreadable.
    #[error("cannot read {path}: {source}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A file is larger than any certificate, key or CRL file should be.
    #[error("{path} is larger than {limit_bytes} bytes; it is not a certificate, key or CRL file")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit.
        limit_bytes: u64,
    },
    /// Group or others may read the private key.
    #[error("private key file {path} has mode {mode:04o}; it must not be accessible by group or others (chmod 600)")]
    KeyFileTooOpen {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The PEM text is malformed.
    #[error("{path} is not valid PEM: {reason}")]
    BadPem {
        /// The file.
        path: PathBuf,
        /// What the PEM parser said.
        reason: String,
    },
    /// A certificate file holds no `CERTIFICATE` block.
    #[error("{path} holds no PEM certificate")]
    NoCertificates {
        /// The file.
        path: PathBuf,
    },
    /// The key file holds no private key.
    #[error("{path} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    NoPrivateKey {
        /// The key file.
        path: PathBuf,
    },
    /// A certificate could not be parsed.
    #[error("certificate #{index} in {path} cannot be parsed: {reason}")]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// Position in the file, from 0.
        index: usize,
        /// What the parser said.
        reason: String,
    },
    /// A certificate's notAfter has passed.
    #[error("certificate {subject} in {path} expired at {not_after}")]
    CertExpired {
        /// The file.
        path: PathBuf,
        /// The certificate's subject.
        subject: String,
        /// Its notAfter.
        not_after: String,
    },
    /// A certificate's notBefore is in the future: usually the box's clock is wrong.
    #[error(
        "certificate {subject} in {path} is not valid before {not_before}: check the box's clock"
    )]
    CertNotYetValid {
        /// The file.
        path: PathBuf,
        /// The certificate's subject.
        subject: String,
        /// Its notBefore.
        not_before: String,
    },
    /// An RSA key shorter than the profile's minimum.
    #[error(
        "certificate {subject} in {path} has an RSA key of {bits} bits; at least 2048 are required"
    )]
    WeakRsaKey {
        /// The file.
        path: PathBuf,
        /// The certificate's subject.
        subject: String,
        /// The modulus length.
        bits: usize,
    },
    /// A key type or curve outside the profile (RSA, ECDSA P-256/P-384, Ed25519).
    #[error("certificate {subject} in {path} has a {key} key; only RSA 2048-8192, ECDSA P-256/P-384 and Ed25519 are allowed")]
    UnsupportedKey {
        /// The file.
        path: PathBuf,
        /// The certificate's subject.
        subject: String,
        /// What the key is.
        key: String,
    },
    /// A certificate or CRL signed with SHA-1 or MD5.
    #[error(
        "{subject} in {path} is signed with {algorithm}; SHA-1 and MD5 signatures are refused"
    )]
    Sha1Signature {
        /// The file.
        path: PathBuf,
        /// The certificate's subject (or the CRL's issuer).
        subject: String,
        /// The signature algorithm.
        algorithm: String,
    },
    /// A certificate or CRL signed with an algorithm outside the profile.
    #[error("{subject} in {path} is signed with {algorithm}, which the profile does not allow")]
    UnsupportedSignature {
        /// The file.
        path: PathBuf,
        /// The certificate's subject (or the CRL's issuer).
        subject: String,
        /// The signature algorithm.
        algorithm: String,
    },
    /// The private key does not belong to the first certificate of the chain.
    #[error("private key {key} does not match certificate {cert}")]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The private key cannot be used for signing by the profile's provider.
    #[error("private key {path} cannot be used: {reason}")]
    UnusableKey {
        /// The key file.
        path: PathBuf,
        /// What rustls said.
        reason: String,
    },
    /// The box's certificate does not chain to the operator CA for any TLS use: every peer would
    /// refuse it, so the box refuses it at load instead of failing every handshake.
    #[error(
        "certificate {subject} in {path} is not usable with the operator CA in {ca_path}: {reason}"
    )]
    NotIssuedByCa {
        /// The certificate file.
        path: PathBuf,
        /// The box certificate's subject.
        subject: String,
        /// The CA file.
        ca_path: PathBuf,
        /// What the path validation said.
        reason: String,
    },
    /// The box's certificate may not sign, so no TLS handshake with it can succeed.
    #[error("certificate {subject} in {path} has key usage {key_usage} without digitalSignature; TLS with ECDHE needs it")]
    NoSigningUsage {
        /// The certificate file.
        path: PathBuf,
        /// The certificate's subject.
        subject: String,
        /// The key usages it has.
        key_usage: String,
    },
    /// The box's own certificate is revoked by the configured CRL.
    #[error("certificate {subject} in {path} is revoked by the CRL in {crl_path}")]
    Revoked {
        /// The certificate file.
        path: PathBuf,
        /// The box certificate's subject.
        subject: String,
        /// The CRL file.
        crl_path: PathBuf,
    },
    /// A CRL was not issued by any certificate of the CA bundle: with it every client of that
    /// CA would be refused (its revocation status unknown), so it is refused instead.
    #[error("CRL #{index} in {path} was issued by {issuer}, which is not a CA of {ca_path}: give the CRL that CA issues")]
    CrlNotFromCa {
        /// The CRL file.
        path: PathBuf,
        /// Position in the file, from 0.
        index: usize,
        /// The CRL's issuer.
        issuer: String,
        /// The CA bundle it should come from.
        ca_path: PathBuf,
    },
    /// The CRL could not be parsed.
    #[error("CRL #{index} in {path} cannot be parsed: {reason}")]
    BadCrl {
        /// The CRL file.
        path: PathBuf,
        /// Position in the file, from 0.
        index: usize,
        /// What the parser said.
        reason: String,
    },
}

impl CredentialError {
    /// The file the error is about (for a key that does not match its certificate: the key).
    pub fn path(&self) -> &Path {
        match self {
            CredentialError::Unreadable { path, .. }
            | CredentialError::TooLarge { path, .. }
            | CredentialError::KeyFileTooOpen { path, .. }
            | CredentialError::BadPem { path, .. }
            | CredentialError::NoCertificates { path }
            | CredentialError::NoPrivateKey { path }
            | CredentialError::BadCertificate { path, .. }
            | CredentialError::CertExpired { path, .. }
            | CredentialError::CertNotYetValid { path, .. }
            | CredentialError::WeakRsaKey { path, .. }
            | CredentialError::UnsupportedKey { path, .. }
            | CredentialError::Sha1Signature { path, .. }
            | CredentialError::UnsupportedSignature { path, .. }
            | CredentialError::UnusableKey { path, .. }
            | CredentialError::NotIssuedByCa { path, .. }
            | CredentialError::NoSigningUsage { path, .. }
            | CredentialError::Revoked { path, .. }
            | CredentialError::BadCrl { path, .. }
            | CredentialError::CrlNotFromCa { path, .. } => path,
            CredentialError::KeyMismatch { key, .. } => key,
        }
    }

    /// What is wrong, as the stable word events carry (the page says it in its language).
    pub fn problem(&self) -> TlsFileProblem {
        match self {
            CredentialError::Unreadable { .. } | CredentialError::TooLarge { .. } => {
                TlsFileProblem::Unreadable
            }
            CredentialError::KeyFileTooOpen { .. } => TlsFileProblem::KeyFileTooOpen,
            CredentialError::BadPem { .. }
            | CredentialError::NoCertificates { .. }
            | CredentialError::NoPrivateKey { .. }
            | CredentialError::BadCertificate { .. }
            | CredentialError::UnusableKey { .. }
            | CredentialError::BadCrl { .. } => TlsFileProblem::Malformed,
            CredentialError::CertExpired { .. } => TlsFileProblem::CertificateExpired,
            CredentialError::CertNotYetValid { .. } => TlsFileProblem::CertificateNotYetValid,
            CredentialError::WeakRsaKey { .. }
            | CredentialError::UnsupportedKey { .. }
            | CredentialError::Sha1Signature { .. }
            | CredentialError::UnsupportedSignature { .. }
            | CredentialError::NoSigningUsage { .. } => TlsFileProblem::OutsideProfile,
            CredentialError::KeyMismatch { .. } => TlsFileProblem::KeyMismatch,
            CredentialError::NotIssuedByCa { .. } => TlsFileProblem::NotIssuedByCa,
            CredentialError::Revoked { .. } => TlsFileProblem::Revoked,
            CredentialError::CrlNotFromCa { .. } => TlsFileProblem::CrlNotFromCa,
        }
    }
}

/// The identities (SAN DNS names, SAN URIs, subject CNs) of the first certificate in
/// `certificate_file`: who this box is, for `[meta] box` (AUTH-4).
pub fn certificate_identities(certificate_file: &Path) -> Result<PeerIdentities, CredentialError> {
    let chain = read_certificates(certificate_file)?;
    let first = chain
        .first()
        .ok_or_else(|| CredentialError::NoCertificates {
            path: certificate_file.to_path_buf(),
        })?;
    PeerIdentities::from_certificate(first).map_err(|e| CredentialError::BadCertificate {
        path: certificate_file.to_path_buf(),
        index: 0,
        reason: e.to_string(),
    })
}

/// Which file a certificate came from, for the status page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CertRole {
    /// The box's own certificate chain (`certificate_file`).
    BoxChain,
    /// The operator CA bundle (`ca_file`).
    OperatorCa,
}

/// Expiry of one loaded certificate, for the status page and metrics (NET-5).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CertExpiry {
    /// The certificate's subject.
    pub subject: String,
    /// Serial number, colon-separated hex.
    pub serial: String,
    /// The file it came from.
    pub path: PathBuf,
    /// Which file that is.
    pub role: CertRole,
    /// notAfter, human-readable (RFC 2822).
    pub not_after: String,
    /// notAfter as seconds since the Unix epoch.
    pub not_after_unix: i64,
    /// Whole days left until notAfter at load time.
    pub days_left: i64,
    /// True when `days_left` is at most [`EXPIRY_WARNING_DAYS`].
    pub warning: bool,
}

/// The checked TLS material of the box, ready for `profile::server_config`/`client_config`.
pub struct Credentials {
    /// The box's certificate chain, end-entity first.
    pub chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    /// The operator CA certificates (trust anchors).
    pub ca_certs: Vec<CertificateDer<'static>>,
    /// Revocation lists from `crl_file`, empty if none is configured.
    pub crls: Vec<CertificateRevocationListDer<'static>>,
    /// Expiry of every certificate in `chain` and `ca_certs`, in that order.
    pub expiries: Vec<CertExpiry>,
}

impl Credentials {
    /// A copy of the private key for building a rustls configuration.
    pub(crate) fn private_key(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }

    /// Serial number of the box's own certificate (colon-separated hex), for logs and status.
    pub fn serial(&self) -> &str {
        self.expiries
            .first()
            .map(|e| e.serial.as_str())
            .unwrap_or("")
    }
}

/// Never prints the private key.
impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("chain_len", &self.chain.len())
            .field("ca_certs_len", &self.ca_certs.len())
            .field("crls_len", &self.crls.len())
            .field("expiries", &self.expiries)
            .finish_non_exhaustive()
    }
}

/// Loads and checks every file named in `[tls]`, against the current time.
pub fn load(config: &TlsConfig) -> Result<Credentials, CredentialError> {
    load_at(config, SystemTime::now())
}

/// Loads and checks every file named in `[tls]` as of `now` (tests pass a fixed time).
pub fn load_at(config: &TlsConfig, now: SystemTime) -> Result<Credentials, CredentialError> {
    let now_unix = unix_seconds(now);
    let provider = profile::provider();

    let cert_path = &config.certificate_file;
    let chain = read_certificates(cert_path)?;
    let mut expiries = Vec::new();
    for (index, der) in chain.iter().enumerate() {
        expiries.push(check_certificate(
            cert_path,
            index,
            der,
            CertRole::BoxChain,
            now_unix,
        )?);
    }

    let key = read_private_key(&config.private_key_file)?;
    check_key_matches(&provider, &chain, &key, config)?;

    let ca_path = &config.ca_file;
    let ca_certs = read_certificates(ca_path)?;
    for (index, der) in ca_certs.iter().enumerate() {
        expiries.push(check_certificate(
            ca_path,
            index,
            der,
            CertRole::OperatorCa,
            now_unix,
        )?);
    }

    let labelled: Vec<(&Path, &CertificateDer<'static>)> = chain
        .iter()
        .map(|der| (cert_path.as_path(), der))
        .chain(ca_certs.iter().map(|der| (ca_path.as_path(), der)))
        .collect();
    check_ecdsa_hash_matches_issuer_curve(&labelled)?;

    let crls = match &config.crl_file {
        Some(path) => {
            let crls = read_crls(path, now_unix)?;
            check_crl_issuers(path, &crls, ca_path, &ca_certs)?;
            crls
        }
        None => Vec::new(),
    };
    check_chains_to_ca(config, &provider, &chain, &ca_certs, &crls, now)?;

    Ok(Credentials {
        chain,
        key,
        ca_certs,
        crls,
        expiries,
    })
}

/// The box's chain must lead to the operator CA (through the intermediates in
/// `certificate_file`), unrevoked, for TLS client or server use; peers check the same with the
/// same CA, so a box whose certificate fails here could not talk to anyone. A certificate valid
/// for only one of the two uses is accepted with a warning: a box with only inbound (or only
/// outbound) services needs just one.
fn check_chains_to_ca(
    config: &TlsConfig,
    provider: &CryptoProvider,
    chain: &[CertificateDer<'static>],
    ca_certs: &[CertificateDer<'static>],
    crls: &[CertificateRevocationListDer<'static>],
    now: SystemTime,
) -> Result<(), CredentialError> {
    let cert_path = &config.certificate_file;
    let Some((end_entity, intermediates)) = chain.split_first() else {
        return Err(CredentialError::NoCertificates {
            path: cert_path.clone(),
        });
    };
    let subject = X509Certificate::from_der(end_entity.as_ref())
        .map(|(_, cert)| name_or_placeholder(cert.subject().to_string()))
        .unwrap_or_else(|_| "(unparsable)".to_string());
    let not_usable = |reason: String| CredentialError::NotIssuedByCa {
        path: cert_path.clone(),
        subject: subject.clone(),
        ca_path: config.ca_file.clone(),
        reason,
    };
    let anchors = ca_certs
        .iter()
        .map(|ca| webpki::anchor_from_trusted_cert(ca).map_err(|e| not_usable(format!("{e:?}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let end_entity =
        webpki::EndEntityCert::try_from(end_entity).map_err(|e| not_usable(format!("{e:?}")))?;
    let crl_path = config.crl_file.clone().unwrap_or_default();
    let crls = crls
        .iter()
        .map(|der| {
            webpki::OwnedCertRevocationList::from_der(der.as_ref())
                .map(webpki::CertRevocationList::from)
                .map_err(|e| CredentialError::BadCrl {
                    path: crl_path.clone(),
                    index: 0,
                    reason: format!("{e:?}"),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let crl_refs: Vec<&webpki::CertRevocationList<'_>> = crls.iter().collect();
    let time = rustls_pki_types::UnixTime::since_unix_epoch(
        now.duration_since(UNIX_EPOCH).unwrap_or_default(),
    );
    let verify = |usage: webpki::KeyUsage| {
        // The same defaults rustls' verifiers use: the whole chain, unknown status refused.
        let revocation = webpki::RevocationOptionsBuilder::new(&crl_refs)
            .ok()
            .map(|builder| builder.build());
        end_entity
            .verify_for_usage(
                provider.signature_verification_algorithms.all,
                &anchors,
                intermediates,
                time,
                usage,
                revocation,
                None,
            )
            .map(|_| ())
    };
    let warn_one_use = |missing: &str, err: webpki::Error| {
        tracing::warn!(
            path = %cert_path.display(),
            subject = %subject,
            error = ?err,
            "the box certificate is not valid as a TLS {missing} certificate; services that need it will fail their handshakes"
        );
    };
    match (
        verify(webpki::KeyUsage::client_auth()),
        verify(webpki::KeyUsage::server_auth()),
    ) {
        (Ok(()), Ok(())) => Ok(()),
        (Ok(()), Err(err)) => {
            warn_one_use("server", err);
            Ok(())
        }
        (Err(err), Ok(())) => {
            warn_one_use("client", err);
            Ok(())
        }
        (Err(webpki::Error::CertRevoked), _) | (_, Err(webpki::Error::CertRevoked)) => {
            Err(CredentialError::Revoked {
                path: cert_path.clone(),
                subject,
                crl_path,
            })
        }
        (Err(err), Err(_)) => Err(not_usable(format!("{err:?}"))),
    }
}

fn unix_seconds(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

/// Reads a whole file, refusing anything larger than [`MAX_PEM_FILE_BYTES`].
/// The file's bytes, refused above [`MAX_PEM_FILE_BYTES`].
pub(crate) fn read_limited(path: &Path) -> Result<Vec<u8>, CredentialError> {
    let unreadable = |source| CredentialError::Unreadable {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(unreadable)?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() as u64 > MAX_PEM_FILE_BYTES {
        return Err(CredentialError::TooLarge {
            path: path.to_path_buf(),
            limit_bytes: MAX_PEM_FILE_BYTES,
        });
    }
    Ok(bytes)
}

fn bad_pem(path: &Path, err: pem::Error) -> CredentialError {
    CredentialError::BadPem {
        path: path.to_path_buf(),
        reason: err.to_string(),
    }
}

pub(crate) fn read_certificates(
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, CredentialError> {
    let bytes = read_limited(path)?;
    certificates_in(path, &bytes)
}

/// The `CERTIFICATE` blocks of PEM text `bytes` read from `path` (named in the errors); at
/// least one.
pub(crate) fn certificates_in(
    path: &Path,
    bytes: &[u8],
) -> Result<Vec<CertificateDer<'static>>, CredentialError> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| bad_pem(path, err))?;
    if certs.is_empty() {
        return Err(CredentialError::NoCertificates {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

pub(crate) fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, CredentialError> {
    let meta = fs::metadata(path).map_err(|source| CredentialError::Unreadable {
        path: path.to_path_buf(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(CredentialError::KeyFileTooOpen {
            path: path.to_path_buf(),
            mode,
        });
    }
    let bytes = read_limited(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|err| match err {
        pem::Error::NoItemsFound => CredentialError::NoPrivateKey {
            path: path.to_path_buf(),
        },
        other => bad_pem(path, other),
    })
}

/// Reads a CRL file in PEM (one or more `X509 CRL` blocks) or DER form and checks signatures.
fn read_crls(
    path: &Path,
    now_unix: i64,
) -> Result<Vec<CertificateRevocationListDer<'static>>, CredentialError> {
    let bytes = read_limited(path)?;
    let crls = if bytes.windows(10).any(|w| w == b"-----BEGIN") {
        let crls = CertificateRevocationListDer::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| bad_pem(path, err))?;
        if crls.is_empty() {
            return Err(CredentialError::BadCrl {
                path: path.to_path_buf(),
                index: 0,
                reason: "no X509 CRL block".to_string(),
            });
        }
        crls
    } else {
        vec![CertificateRevocationListDer::from(bytes)]
    };
    for (index, der) in crls.iter().enumerate() {
        let (_, crl) = CertificateRevocationList::from_der(der.as_ref()).map_err(|err| {
            CredentialError::BadCrl {
                path: path.to_path_buf(),
                index,
                reason: err.to_string(),
            }
        })?;
        let issuer = name_or_placeholder(crl.issuer().to_string());
        check_signature_algorithm(path, &issuer, &crl.signature_algorithm)?;
        if let Some(next_update) = crl.next_update() {
            if next_update.timestamp() < now_unix {
                tracing::warn!(
                    path = %path.display(),
                    issuer = %issuer,
                    next_update = %format_time(next_update),
                    "CRL is past its nextUpdate; ask the operator for a fresh one"
                );
            }
        }
    }
    Ok(crls)
}

/// Every CRL's issuer must be the subject of one of `ca_certs` (the signature itself is checked
/// by webpki against that CA whenever a chain is verified).
fn check_crl_issuers(
    crl_path: &Path,
    crls: &[CertificateRevocationListDer<'static>],
    ca_path: &Path,
    ca_certs: &[CertificateDer<'static>],
) -> Result<(), CredentialError> {
    let subjects: Vec<Vec<u8>> = ca_certs
        .iter()
        .filter_map(|der| X509Certificate::from_der(der.as_ref()).ok())
        .map(|(_, cert)| cert.subject().as_raw().to_vec())
        .collect();
    for (index, der) in crls.iter().enumerate() {
        let (_, crl) = CertificateRevocationList::from_der(der.as_ref()).map_err(|err| {
            CredentialError::BadCrl {
                path: crl_path.to_path_buf(),
                index,
                reason: err.to_string(),
            }
        })?;
        if !subjects
            .iter()
            .any(|s| s.as_slice() == crl.issuer().as_raw())
        {
            return Err(CredentialError::CrlNotFromCa {
                path: crl_path.to_path_buf(),
                index,
                issuer: name_or_placeholder(crl.issuer().to_string()),
                ca_path: ca_path.to_path_buf(),
            });
        }
    }
    Ok(())
}

fn name_or_placeholder(name: String) -> String {
    if name.is_empty() {
        "(empty subject)".to_string()
    } else {
        name
    }
}

fn format_time(time: ASN1Time) -> String {
    time.to_rfc2822().unwrap_or_else(|_| time.to_string())
}

/// Checks one certificate against the profile and the clock; returns its expiry record.
fn check_certificate(
    path: &Path,
    index: usize,
    der: &CertificateDer<'_>,
    role: CertRole,
    now_unix: i64,
) -> Result<CertExpiry, CredentialError> {
    let (_, cert) =
        X509Certificate::from_der(der.as_ref()).map_err(|err| CredentialError::BadCertificate {
            path: path.to_path_buf(),
            index,
            reason: err.to_string(),
        })?;
    let subject = name_or_placeholder(cert.subject().to_string());

    check_signature_algorithm(path, &subject, &cert.signature_algorithm)?;
    check_public_key(path, index, &subject, &cert)?;
    if role == CertRole::BoxChain && index == 0 {
        check_signing_usage(path, &subject, &cert)?;
    }

    let validity = cert.validity();
    if validity.not_before.timestamp() > now_unix {
        return Err(CredentialError::CertNotYetValid {
            path: path.to_path_buf(),
            subject,
            not_before: format_time(validity.not_before),
        });
    }
    let not_after_unix = validity.not_after.timestamp();
    if not_after_unix < now_unix {
        return Err(CredentialError::CertExpired {
            path: path.to_path_buf(),
            subject,
            not_after: format_time(validity.not_after),
        });
    }
    let days_left = (not_after_unix - now_unix) / SECONDS_PER_DAY;
    Ok(CertExpiry {
        subject,
        serial: cert.raw_serial_as_string(),
        path: path.to_path_buf(),
        role,
        not_after: format_time(validity.not_after),
        not_after_unix,
        days_left,
        warning: days_left <= EXPIRY_WARNING_DAYS,
    })
}

/// The box signs every TLS handshake (ECDHE only, TLS 1.2 and 1.3) with its key, so a key
/// usage extension on its certificate must allow digitalSignature; strict peers (curl, openssl)
/// refuse a certificate without it even where rustls does not look.
fn check_signing_usage(
    path: &Path,
    subject: &str,
    cert: &X509Certificate<'_>,
) -> Result<(), CredentialError> {
    match cert.key_usage() {
        Ok(None) => Ok(()),
        Ok(Some(usage)) if usage.value.digital_signature() => Ok(()),
        Ok(Some(usage)) => Err(CredentialError::NoSigningUsage {
            path: path.to_path_buf(),
            subject: subject.to_string(),
            key_usage: usage.value.to_string(),
        }),
        Err(err) => Err(CredentialError::BadCertificate {
            path: path.to_path_buf(),
            index: 0,
            reason: format!("key usage extension: {err}"),
        }),
    }
}

/// Refuses SHA-1/MD5 outright and anything else outside the profile's signature algorithms.
fn check_signature_algorithm(
    path: &Path,
    subject: &str,
    algorithm: &AlgorithmIdentifier<'_>,
) -> Result<(), CredentialError> {
    let oid = algorithm.algorithm.to_id_string();
    let weak = |name: &str| CredentialError::Sha1Signature {
        path: path.to_path_buf(),
        subject: subject.to_string(),
        algorithm: name.to_string(),
    };
    let unsupported = |name: &str| CredentialError::UnsupportedSignature {
        path: path.to_path_buf(),
        subject: subject.to_string(),
        algorithm: name.to_string(),
    };
    // Only RSASSA-PSS names its hash in its parameters; nothing else is parsed further.
    let pss_hash = if oid == cp::RSA_PSS {
        match SignatureAlgorithm::try_from(algorithm) {
            Ok(SignatureAlgorithm::RSASSA_PSS(params)) => {
                Some(params.hash_algorithm_oid().to_id_string())
            }
            _ => None,
        }
    } else {
        None
    };
    match cp::signature_algorithm(&oid, pss_hash.as_deref()) {
        SignatureVerdict::Allowed => Ok(()),
        SignatureVerdict::Weak(name) => Err(weak(name)),
        SignatureVerdict::Unsupported(what) => Err(unsupported(&what)),
    }
}

/// Named curve of an ECDSA public key as a dotted OID, `None` for other key types.
fn ecdsa_curve(cert: &X509Certificate<'_>) -> Option<String> {
    let algorithm = &cert.public_key().algorithm;
    if algorithm.algorithm.to_id_string() != cp::EC_KEY {
        return None;
    }
    algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|oid| oid.to_id_string())
}

/// The profile pairs ECDSA hashes with curves (P-256/SHA-256, P-384/SHA-384). A certificate
/// signed by a loaded issuer with the other hash (OpenSSL signs with SHA-256 by default even
/// for P-384 keys) would fail every handshake, so it is refused here with its name.
fn check_ecdsa_hash_matches_issuer_curve(
    certs: &[(&Path, &CertificateDer<'static>)],
) -> Result<(), CredentialError> {
    let parsed: Vec<(&Path, X509Certificate<'_>)> = certs
        .iter()
        .filter_map(|(path, der)| {
            X509Certificate::from_der(der.as_ref())
                .ok()
                .map(|(_, cert)| (*path, cert))
        })
        .collect();
    for (path, cert) in &parsed {
        let Some((expected_curve, hash)) =
            cp::ecdsa_pairing(&cert.signature_algorithm.algorithm.to_id_string())
        else {
            continue;
        };
        let issuer_curve = parsed
            .iter()
            .find(|(_, issuer)| issuer.subject().as_raw() == cert.issuer().as_raw())
            .and_then(|(_, issuer)| ecdsa_curve(issuer));
        if let Some(curve) = issuer_curve {
            if curve != expected_curve {
                let key = cp::curve_name(&curve).unwrap_or(curve.as_str());
                return Err(CredentialError::UnsupportedSignature {
                    path: path.to_path_buf(),
                    subject: name_or_placeholder(cert.subject().to_string()),
                    algorithm: format!(
                        "ECDSA {key} with {hash} (the profile pairs P-256 with SHA-256 and P-384 with SHA-384)"
                    ),
                });
            }
        }
    }
    Ok(())
}

/// Accepts RSA 2048..=8192, ECDSA on P-256/P-384 and Ed25519 public keys.
fn check_public_key(
    path: &Path,
    index: usize,
    subject: &str,
    cert: &X509Certificate<'_>,
) -> Result<(), CredentialError> {
    let spki = cert.public_key();
    let unsupported = |key: String| CredentialError::UnsupportedKey {
        path: path.to_path_buf(),
        subject: subject.to_string(),
        key,
    };
    let key_oid = spki.algorithm.algorithm.to_id_string();
    if key_oid == cp::ED25519 {
        return Ok(());
    }
    let parsed = spki
        .parsed()
        .map_err(|err| CredentialError::BadCertificate {
            path: path.to_path_buf(),
            index,
            reason: format!("public key: {err}"),
        })?;
    match parsed {
        PublicKey::RSA(rsa) if key_oid == cp::RSA_KEY => {
            let bits = rsa.key_size();
            if bits < cp::MIN_RSA_BITS {
                Err(CredentialError::WeakRsaKey {
                    path: path.to_path_buf(),
                    subject: subject.to_string(),
                    bits,
                })
            } else if bits > cp::MAX_RSA_BITS {
                Err(unsupported(format!("RSA {bits}-bit")))
            } else {
                Ok(())
            }
        }
        PublicKey::EC(_) => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|oid| oid.to_id_string());
            match curve.as_deref() {
                Some(curve) if cp::curve_name(curve).is_some() => Ok(()),
                Some(other) => Err(unsupported(format!("ECDSA on curve {other}"))),
                None => Err(unsupported("ECDSA without a named curve".to_string())),
            }
        }
        _ => Err(unsupported(format!("public key algorithm {key_oid}"))),
    }
}

/// Checks that the key can sign with the profile's provider and belongs to the end-entity
/// certificate (comparing SubjectPublicKeyInfo).
fn check_key_matches(
    provider: &CryptoProvider,
    chain: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
    config: &TlsConfig,
) -> Result<(), CredentialError> {
    let signing_key = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|err| CredentialError::UnusableKey {
            path: config.private_key_file.clone(),
            reason: err.to_string(),
        })?;
    let certified = CertifiedKey::new(chain.to_vec(), signing_key);
    match certified.keys_match() {
        Ok(()) => Ok(()),
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            Err(CredentialError::KeyMismatch {
                cert: config.certificate_file.clone(),
                key: config.private_key_file.clone(),
            })
        }
        Err(other) => Err(CredentialError::UnusableKey {
            path: config.private_key_file.clone(),
            reason: format!("cannot compare with the certificate: {other}"),
        }),
    }
}
