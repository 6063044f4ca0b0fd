//! What an installer reads off a box to enrol it (requirement OPS-1): the WireGuard public key
//! and the fingerprint of the box's TLS certificate signing request. Both are public; the private
//! keys they belong to are generated on the box and never leave it.
//!
//! Also the box's life before enrolment: first boot makes the TLS key and the CSR
//! ([`ensure_tls_key_and_csr`]), and until the operator's configuration arrives the daemon runs
//! unenrolled, answering `renkei status` with this data ([`UnenrolledControl`]) and serving it
//! on the login-free enrolment page, whose address ([`EnrolmentPage`]) `renkei status` shows.

use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::durable;
use crate::keys;
use crate::tls::certificate_profile::{GENERATED_KEY, GENERATED_KEY_NAME};

/// Where first boot writes the box's TLS certificate signing request, next to its key.
pub const DEFAULT_CSR_FILE: &str = "/etc/renkei/box.csr";
/// Where first boot writes the box's TLS private key: where the example configs'
/// `tls.private_key_file = "tls/box.key"` points, so the issued certificate goes beside it.
pub const DEFAULT_TLS_KEY_FILE: &str = "/etc/renkei/tls/box.key";
/// Where first boot writes the box's WireGuard private key (`tunnel.private_key_file`).
pub const DEFAULT_WIREGUARD_KEY_FILE: &str = "/etc/renkei/wg.key";
/// A PEM private key or CSR of one P-256 key is well under 1 KiB; anything this large is not one.
pub const MAX_PEM_FILE_BYTES: u64 = 16 * 1024;
/// Port of the enrolment page of a box without a configuration. Unprivileged, so the daemon
/// needs no `CAP_NET_BIND_SERVICE`; the same port the example configs give the enrolled status
/// page, so the installer finds the box's page at one address before and after enrolment.
pub const DEFAULT_PAGE_PORT: u16 = 9443;
/// Where the enrolment page listens by default: every address of the box (IPv4 too, through the
/// dual-stack socket), since a box without a configuration does not know its LAN address.
pub const DEFAULT_PAGE_LISTEN: SocketAddr = SocketAddr::new(
    IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    DEFAULT_PAGE_PORT,
);

/// The enrolment data shown on the console, the status page and `renkei status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Enrolment {
    /// The box's WireGuard public key (base64), for the hub's `[[tunnel.peer]]`.
    pub wireguard_public_key: String,
    /// The CSR file, when one exists.
    pub csr_file: Option<PathBuf>,
    /// SHA-256 of the CSR's DER bytes, colon-separated hex: read out over the phone to the
    /// operator, who compares it with the CSR received before issuing the certificate.
    pub csr_sha256: Option<String>,
}

/// Why the enrolment data could not be read.
#[derive(Debug, thiserror::Error)]
pub enum EnrolmentError {
    /// The WireGuard key is missing or unreadable.
    #[error(transparent)]
    Key(#[from] keys::KeyError),
    /// The CSR file exists but is not a PEM certificate request.
    #[error("{path}: {reason}")]
    Csr {
        /// The CSR file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The TLS private key file is unreadable, too open, or not an ECDSA P-256 key.
    #[error("TLS private key {path}: {reason}")]
    TlsKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A key or CSR could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Key generation or CSR signing failed inside rcgen/ring.
    #[error("cannot make the certificate signing request: {0}")]
    Rcgen(String),
    /// The control socket of the unenrolled daemon could not be created.
    #[error("cannot create the control socket {path}: {source}")]
    Control {
        /// The socket path.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
}

impl Enrolment {
    /// Logs, once at start of an unenrolled box, what the operator needs from it: the key, the
    /// CSR fingerprint and where the enrolment page is (`urls`, `page`).
    pub fn log_waiting(&self, config_file: &Path, urls: &[String], page: &EnrolmentPage) {
        tracing::warn!(
            config_file = %config_file.display(),
            wireguard_public_key = %self.wireguard_public_key,
            csr_sha256 = self.csr_sha256.as_deref().unwrap_or("-"),
            enrolment_page = %urls.join(" "),
            page_certificate_sha256 = page.certificate_sha256.as_deref().unwrap_or("-"),
            "not enrolled: no configuration yet; give the network operator the WireGuard public key and the CSR fingerprint"
        );
    }

    /// Reads the public key of `private_key_file` and, if `csr_file` exists, its fingerprint.
    pub fn read(private_key_file: &Path, csr_file: &Path) -> Result<Self, EnrolmentError> {
        let secret = keys::read_private_key(private_key_file)?;
        let wireguard_public_key = keys::encode_key(&keys::public_key_of(&secret));
        let (csr_file, csr_sha256) = match std::fs::read(csr_file) {
            Ok(pem) => (
                Some(csr_file.to_path_buf()),
                Some(csr_fingerprint(csr_file, &pem)?),
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (None, None),
            Err(e) => {
                return Err(EnrolmentError::Csr {
                    path: csr_file.to_path_buf(),
                    reason: e.to_string(),
                })
            }
        };
        Ok(Enrolment {
            wireguard_public_key,
            csr_file,
            csr_sha256,
        })
    }
}

/// SHA-256 over the DER of the first `CERTIFICATE REQUEST` block, as `AB:CD:...`.
fn csr_fingerprint(path: &Path, pem: &[u8]) -> Result<String, EnrolmentError> {
    use rustls_pki_types::pem::{PemObject, SectionKind};
    let bad = |reason: String| EnrolmentError::Csr {
        path: path.to_path_buf(),
        reason,
    };
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(pem) {
        let (kind, der) = section.map_err(|e| bad(format!("not PEM: {e}")))?;
        if kind == SectionKind::Csr {
            return Ok(crate::hex::sha256_fingerprint(&der));
        }
    }
    Err(bad("no CERTIFICATE REQUEST block".to_string()))
}

/// Whether first boot made a file or found it there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Made {
    /// Written now.
    New,
    /// Already there and left alone (private keys are never overwritten).
    Kept,
}

/// What [`ensure_tls_key_and_csr`] did, for the first-boot output on the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsEnrolment {
    /// The TLS private key.
    pub key: Made,
    /// The certificate signing request.
    pub csr: Made,
    /// SHA-256 of the CSR's DER, as [`Enrolment::csr_sha256`] shows it.
    pub csr_sha256: String,
}

/// The subject common name of a box's CSR, derived from its WireGuard public key so that the
/// operator sees that a CSR and a WireGuard key come from the same box. The operator's CA
/// decides which names the issued certificate carries.
pub fn csr_common_name(wireguard_public: &[u8; keys::KEY_LEN]) -> String {
    format!("renkei-{}", crate::hex::lower(&wireguard_public[..8]))
}

/// First boot's TLS part (OPS-1): makes the box's ECDSA P-256 private key (mode 0600) unless it
/// exists, and a PKCS#10 CSR for it unless a CSR for the existing key is already there.
///
/// Safe to run again after an interrupted first boot: an existing key is kept, never
/// overwritten (the certificate the operator issues for it would be lost); a CSR is written
/// whenever the key is new, so a CSR never belongs to another key.
pub fn ensure_tls_key_and_csr(
    key_path: &Path,
    csr_path: &Path,
    common_name: &str,
) -> Result<TlsEnrolment, EnrolmentError> {
    let (key_pair, key) = match read_tls_key(key_path)? {
        Some(key_pair) => (key_pair, Made::Kept),
        None => (write_tls_key(key_path)?, Made::New),
    };
    let csr = if key == Made::Kept && csr_path.exists() {
        Made::Kept
    } else {
        write_csr(csr_path, &key_pair, common_name)?;
        Made::New
    };
    let pem = read_bounded(csr_path).map_err(|reason| EnrolmentError::Csr {
        path: csr_path.to_path_buf(),
        reason,
    })?;
    Ok(TlsEnrolment {
        key,
        csr,
        csr_sha256: csr_fingerprint(csr_path, &pem)?,
    })
}

/// Reads a small regular file (no FIFOs or devices: they would block or feed anything).
fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    let meta = fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() || meta.len() > MAX_PEM_FILE_BYTES {
        return Err(format!(
            "not a regular file of at most {MAX_PEM_FILE_BYTES} bytes"
        ));
    }
    fs::read(path).map_err(|e| e.to_string())
}

/// The existing TLS key, `None` if there is none; refuses keys readable by group or others
/// and keys other than ECDSA P-256 (the only box key the CRYPTREC profile here uses).
fn read_tls_key(path: &Path) -> Result<Option<rcgen::KeyPair>, EnrolmentError> {
    let bad = |reason: String| EnrolmentError::TlsKey {
        path: path.to_path_buf(),
        reason,
    };
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(bad(e.to_string())),
    };
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(bad(format!(
            "mode {mode:04o}; it must not be accessible by group or others (chmod 600)"
        )));
    }
    // A key that is there but unreadable is never replaced: a certificate may have been issued
    // for it. Say so, with what to do.
    let damaged = |what: String| {
        bad(format!(
            "{what} (empty or cut short?); it is left untouched: restore it, or remove it and the CSR to make a new key, CSR and certificate"
        ))
    };
    let pem = read_bounded(path).map_err(bad)?;
    let text = String::from_utf8(pem).map_err(|_| damaged("not PEM text".to_string()))?;
    let key_pair = rcgen::KeyPair::from_pem(&text)
        .map_err(|e| damaged(format!("not a PEM private key: {e}")))?;
    if !key_pair.is_compatible(GENERATED_KEY) {
        return Err(bad(format!("not an {GENERATED_KEY_NAME} key")));
    }
    Ok(Some(key_pair))
}

/// Generates the profile's own kind of key ([`GENERATED_KEY`]) and writes it as PKCS#8 PEM, mode 0600, durably (whole or not at all),
/// refusing to replace a file.
fn write_tls_key(path: &Path) -> Result<rcgen::KeyPair, EnrolmentError> {
    let key_pair = rcgen::KeyPair::generate_for(GENERATED_KEY)
        .map_err(|e| EnrolmentError::Rcgen(e.to_string()))?;
    durable::ensure_private_dir(durable::parent(path)).map_err(write_error)?;
    durable::create_durably(path, key_pair.serialize_pem().as_bytes(), 0o600)
        .map_err(write_error)?;
    Ok(key_pair)
}

/// Writes the CSR durably, so a power cut leaves either no CSR (or the previous one) or a
/// whole one.
fn write_csr(
    path: &Path,
    key_pair: &rcgen::KeyPair,
    common_name: &str,
) -> Result<(), EnrolmentError> {
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    let pem = params
        .serialize_request(key_pair)
        .and_then(|csr| csr.pem())
        .map_err(|e| EnrolmentError::Rcgen(e.to_string()))?;
    durable::write_durably(path, pem.as_bytes(), 0o644).map_err(write_error)
}

fn write_error(e: durable::FileError) -> EnrolmentError {
    EnrolmentError::Write {
        path: e.path,
        source: e.source,
    }
}

/// Where an installer's browser finds the enrolment page, as `renkei status` shows it on the
/// console, so the certificate warning can be checked against the fingerprint printed there.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EnrolmentPage {
    /// The address the page listens on; `None` when it could not start.
    pub listen: Option<SocketAddr>,
    /// The page's URLs, one per address of the box (loopback and link-local left out); read
    /// from the interfaces when asked, so an address that DHCP gave later is listed too.
    pub urls: Vec<String>,
    /// SHA-256 of the page's self-signed certificate (`AB:CD:...`), the value the browser's
    /// certificate viewer shows; `None` for plain HTTP on loopback.
    pub certificate_sha256: Option<String>,
    /// Why the page is not served, when it is not (the console then is the only place).
    pub error: Option<String>,
}

impl EnrolmentPage {
    /// The page served on `listen`, with `certificate_sha256` (HTTPS) or without (loopback).
    pub fn serving(listen: SocketAddr, certificate_sha256: Option<String>) -> Self {
        EnrolmentPage {
            listen: Some(listen),
            urls: Vec::new(),
            certificate_sha256,
            error: None,
        }
    }

    /// A page that could not start, and why.
    pub fn failed(error: String) -> Self {
        EnrolmentPage {
            error: Some(error),
            ..EnrolmentPage::default()
        }
    }

    /// This page with its URLs for the box's addresses right now.
    pub fn with_current_urls(&self) -> Self {
        let mut page = self.clone();
        page.urls = match self.listen {
            Some(listen) => page_urls(
                listen,
                self.certificate_sha256.is_some(),
                &interface_addresses(),
            ),
            None => Vec::new(),
        };
        page
    }
}

/// The URLs under which a page listening on `listen` is reached, given the box's `addresses`:
/// the listen address itself when it is a specific one, else every address of the matching
/// family (both for `[::]`, which is dual-stack on Linux) that another host can reach.
pub fn page_urls(listen: SocketAddr, https: bool, addresses: &[IpAddr]) -> Vec<String> {
    let reachable = |ip: &IpAddr| match ip {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local() && !v4.is_unspecified(),
        // fe80::/10 needs a zone index in a URL, which browsers do not take.
        IpAddr::V6(v6) => {
            !v6.is_loopback() && !v6.is_unspecified() && (v6.segments()[0] & 0xffc0) != 0xfe80
        }
    };
    let candidates: Vec<IpAddr> = match listen.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => addresses
            .iter()
            .filter(|ip| ip.is_ipv4() && reachable(ip))
            .copied()
            .collect(),
        IpAddr::V6(v6) if v6.is_unspecified() => addresses
            .iter()
            .filter(|ip| reachable(ip))
            .copied()
            .collect(),
        ip => vec![ip.to_canonical()],
    };
    let scheme = if https { "https" } else { "http" };
    let mut urls: Vec<String> = candidates
        .into_iter()
        .map(|ip| {
            let host = match ip.to_canonical() {
                IpAddr::V4(v4) => v4.to_string(),
                IpAddr::V6(v6) => format!("[{v6}]"),
            };
            match (https, listen.port()) {
                (true, 443) | (false, 80) => format!("{scheme}://{host}/"),
                (_, port) => format!("{scheme}://{host}:{port}/"),
            }
        })
        .collect();
    urls.dedup();
    urls
}

/// Every address on the box's interfaces, IPv4 first; empty if they cannot be read.
fn interface_addresses() -> Vec<IpAddr> {
    let Ok(interfaces) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut addresses: Vec<IpAddr> = interfaces
        .filter_map(|interface| {
            let address = interface.address?;
            if let Some(v4) = address.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                address.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .collect();
    addresses.sort_by_key(|ip| ip.is_ipv6());
    addresses
}

/// The status document of a box that has no configuration yet (`renkei status --json`):
/// only public enrolment data, nothing that needs a login to see.
#[derive(Debug, Clone, Serialize)]
pub struct UnenrolledStatus {
    /// Always `false`: tells `renkei status` (and the status page) which document this is.
    pub enrolled: bool,
    /// renkei version.
    pub version: &'static str,
    /// Seconds since the daemon started.
    pub uptime_secs: u64,
    /// The configuration file the daemon is waiting for.
    pub config_file: PathBuf,
    /// What the installer reads off the box.
    pub enrolment: Enrolment,
    /// Where the same data is on the enrolment page.
    pub enrolment_page: EnrolmentPage,
}

/// A request longer than this is not from `renkei status`.
const MAX_REQUEST_BYTES: u64 = 1024;
/// A client that does not send its request in time is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The control socket of an unenrolled daemon: the same path and protocol as
/// [`crate::status::control`], answering `status` with an [`UnenrolledStatus`] and every tunnel
/// command with an error, since there is no tunnel before the operator's configuration.
pub struct UnenrolledControl {
    listener: UnixListener,
    path: PathBuf,
}

impl UnenrolledControl {
    /// Binds `<runtime_dir>/control.sock` (mode 0660), replacing a stale socket but never a
    /// live one.
    pub fn bind(runtime_dir: &Path) -> Result<Self, EnrolmentError> {
        let path = runtime_dir.join(crate::control_socket::SOCKET_NAME);
        let error = |source| EnrolmentError::Control {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(runtime_dir).map_err(error)?;
        if path.exists() {
            if std::os::unix::net::UnixStream::connect(&path).is_ok() {
                return Err(error(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "another renkei daemon is running with this runtime directory",
                )));
            }
            fs::remove_file(&path).map_err(error)?;
        }
        let listener = UnixListener::bind(&path).map_err(error)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o660)).map_err(error)?;
        Ok(UnenrolledControl { listener, path })
    }

    /// Answers clients until the task is aborted.
    pub async fn serve(self, config_file: PathBuf, enrolment: Enrolment, page: EnrolmentPage) {
        let started = Instant::now();
        loop {
            let Ok((stream, _)) = self.listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let document = UnenrolledStatus {
                enrolled: false,
                version: env!("CARGO_PKG_VERSION"),
                uptime_secs: started.elapsed().as_secs(),
                config_file: config_file.clone(),
                enrolment: enrolment.clone(),
                enrolment_page: page.with_current_urls(),
            };
            tokio::spawn(async move {
                let _ = tokio::time::timeout(REQUEST_TIMEOUT, answer(stream, &document)).await;
            });
        }
    }
}

impl Drop for UnenrolledControl {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

async fn answer(stream: UnixStream, document: &UnenrolledStatus) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read.take(MAX_REQUEST_BYTES))
        .read_line(&mut line)
        .await?;
    let reply = match line.trim() {
        "status" => serde_json::to_string(document).unwrap_or_else(|e| format!("error: {e}")),
        "connect" | "disconnect" => format!(
            "error: not enrolled: no configuration at {} yet, so there is no tunnel",
            document.config_file.display()
        ),
        _ => "error: unknown command".to_string(),
    };
    write.write_all(reply.as_bytes()).await?;
    write.write_all(b"\n").await
}

/// The human summary of an unenrolled status document, or `None` for any other document (an
/// enrolled daemon's, which `crate::status::summary` renders).
pub fn summary(document: &serde_json::Value) -> Option<String> {
    if document.get("enrolled")? != &serde_json::Value::Bool(false) {
        return None;
    }
    let text = |v: Option<&serde_json::Value>| match v {
        Some(serde_json::Value::String(s)) => s.clone(),
        _ => "-".to_string(),
    };
    let enrolment = document.get("enrolment");
    let mut out = format!(
        "renkei {}: NOT ENROLLED (no configuration at {})\n  \
         WireGuard public key: {}\n  \
         CSR SHA-256:          {}\n  \
         CSR file:             {}\n",
        text(document.get("version")),
        text(document.get("config_file")),
        text(enrolment.and_then(|e| e.get("wireguard_public_key"))),
        text(enrolment.and_then(|e| e.get("csr_sha256"))),
        text(enrolment.and_then(|e| e.get("csr_file"))),
    );
    let Some(page) = document.get("enrolment_page") else {
        return Some(out);
    };
    let urls: Vec<String> = page
        .get("urls")
        .and_then(|u| u.as_array())
        .map(|urls| urls.iter().map(|u| text(Some(u))).collect())
        .unwrap_or_default();
    match (page.get("error"), page.get("listen")) {
        (Some(serde_json::Value::String(error)), _) => {
            out.push_str(&format!("  Enrolment page:       not served: {error}\n"));
        }
        (_, listen) if urls.is_empty() => out.push_str(&format!(
            "  Enrolment page:       listening on {} (no LAN address yet)\n",
            text(listen)
        )),
        _ => {
            for (i, url) in urls.iter().enumerate() {
                let label = if i == 0 { "Enrolment page:" } else { "" };
                out.push_str(&format!("  {label:<22}{url}\n"));
            }
        }
    }
    if let Some(serde_json::Value::String(sha256)) = page.get("certificate_sha256") {
        out.push_str(&format!("  Page cert SHA-256:    {sha256}\n"));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::FromDer;

    fn csr_der(path: &Path) -> Vec<u8> {
        use rustls_pki_types::pem::PemObject;
        rustls_pki_types::CertificateSigningRequestDer::from_pem_file(path)
            .expect("CSR is PEM")
            .as_ref()
            .to_vec()
    }

    #[test]
    fn ops1_first_boot_makes_a_private_p256_key_and_a_csr_for_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wg = dir.path().join("wg.key");
        let key = dir.path().join("tls/box.key");
        let csr = dir.path().join("box.csr");
        let public = keys::write_keypair(&wg).expect("wg key");
        let made =
            ensure_tls_key_and_csr(&key, &csr, &csr_common_name(&public)).expect("first boot");
        assert_eq!((made.key, made.csr), (Made::New, Made::New));
        let mode = fs::metadata(&key).expect("key").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the TLS private key is private");

        let der = csr_der(&csr);
        let (_, request) =
            x509_parser::certification_request::X509CertificationRequest::from_der(&der)
                .expect("a PKCS#10 request");
        let key_pair = read_tls_key(&key).expect("read").expect("key exists");
        assert_eq!(
            request
                .certification_request_info
                .subject_pki
                .subject_public_key
                .data
                .as_ref(),
            key_pair.public_key_raw(),
            "the CSR carries the box's public key"
        );
        let subject = request.certification_request_info.subject.to_string();
        assert!(subject.contains(&csr_common_name(&public)), "{subject}");

        let shown = Enrolment::read(&wg, &csr).expect("enrolment");
        assert_eq!(shown.csr_sha256.as_deref(), Some(made.csr_sha256.as_str()));
        let expected: Vec<String> = ring::digest::digest(&ring::digest::SHA256, &der)
            .as_ref()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
        assert_eq!(made.csr_sha256, expected.join(":"));
    }

    #[test]
    fn ops1_second_boot_keeps_the_key_and_csr() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("box.key");
        let csr = dir.path().join("box.csr");
        let first = ensure_tls_key_and_csr(&key, &csr, "renkei-test").expect("first");
        let (key_bytes, csr_bytes) = (fs::read(&key).expect("key"), fs::read(&csr).expect("csr"));
        let again = ensure_tls_key_and_csr(&key, &csr, "renkei-test").expect("again");
        assert_eq!((again.key, again.csr), (Made::Kept, Made::Kept));
        assert_eq!(again.csr_sha256, first.csr_sha256);
        assert_eq!(fs::read(&key).expect("key"), key_bytes, "never overwritten");
        assert_eq!(fs::read(&csr).expect("csr"), csr_bytes);
    }

    #[test]
    fn ops1_interrupted_first_boot_completes_the_csr_for_the_existing_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("box.key");
        let csr = dir.path().join("box.csr");
        ensure_tls_key_and_csr(&key, &csr, "renkei-test").expect("first");
        let key_bytes = fs::read(&key).expect("key");
        fs::remove_file(&csr).expect("lose the CSR");
        let again = ensure_tls_key_and_csr(&key, &csr, "renkei-test").expect("again");
        assert_eq!((again.key, again.csr), (Made::Kept, Made::New));
        assert_eq!(fs::read(&key).expect("key"), key_bytes);
        let der = csr_der(&csr);
        let (_, request) =
            x509_parser::certification_request::X509CertificationRequest::from_der(&der)
                .expect("CSR");
        let key_pair = read_tls_key(&key).expect("read").expect("key");
        assert_eq!(
            request
                .certification_request_info
                .subject_pki
                .subject_public_key
                .data
                .as_ref(),
            key_pair.public_key_raw()
        );
    }

    #[test]
    fn ops1_open_or_foreign_tls_keys_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("box.key");
        let csr = dir.path().join("box.csr");
        ensure_tls_key_and_csr(&key, &csr, "renkei-test").expect("first");
        fs::set_permissions(&key, fs::Permissions::from_mode(0o640)).expect("chmod");
        let err = ensure_tls_key_and_csr(&key, &csr, "renkei-test").expect_err("too open");
        assert!(err.to_string().contains("0640"), "{err}");

        let p384 = dir.path().join("p384.key");
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("p384");
        fs::write(&p384, pair.serialize_pem()).expect("write");
        fs::set_permissions(&p384, fs::Permissions::from_mode(0o600)).expect("chmod");
        let err = ensure_tls_key_and_csr(&p384, &csr, "renkei-test").expect_err("not P-256");
        assert!(err.to_string().contains("P-256"), "{err}");
    }

    #[test]
    fn avl1_ops1_a_present_but_bad_tls_key_is_reported_with_its_path_and_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("box.key");
        let csr = dir.path().join("box.csr");
        ensure_tls_key_and_csr(&key, &csr, "renkei-test").expect("first");
        let whole = fs::read_to_string(&key).expect("key");
        fs::remove_file(&csr).expect("no CSR yet: first boot was cut short");
        for content in [
            String::new(),
            whole[..whole.len() / 2].to_string(),
            whole.replace("\n-----END", "-----END").replace("A", ""),
            "\u{0}\u{1}garbage".to_string(),
        ] {
            fs::write(&key, &content).expect("write");
            fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).expect("chmod");
            let err = ensure_tls_key_and_csr(&key, &csr, "renkei-test").expect_err("damaged");
            let text = err.to_string();
            assert!(text.contains(&key.display().to_string()), "{text}");
            assert!(text.contains("left untouched"), "{text}");
            assert_eq!(fs::read_to_string(&key).expect("read"), content, "kept");
            assert!(!csr.exists(), "no CSR for a key that is not there");
        }
    }

    #[tokio::test]
    async fn ops1_unenrolled_daemon_answers_status_with_its_enrolment_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wg = dir.path().join("wg.key");
        let csr = dir.path().join("box.csr");
        let public = keys::write_keypair(&wg).expect("wg key");
        let tls =
            ensure_tls_key_and_csr(&dir.path().join("box.key"), &csr, "renkei-test").expect("tls");
        let enrolment = Enrolment::read(&wg, &csr).expect("enrolment");
        let runtime = dir.path().join("run");
        let control = UnenrolledControl::bind(&runtime).expect("bind");
        assert!(
            UnenrolledControl::bind(&runtime).is_err(),
            "a second daemon on the same runtime directory is refused"
        );
        let config_file = dir.path().join("renkei.toml");
        let page = EnrolmentPage::serving(
            "198.18.20.1:9443".parse().expect("addr"),
            Some("AB:CD".to_string()),
        );
        let server = tokio::spawn(control.serve(config_file.clone(), enrolment, page));

        let ask = |command: &'static str| {
            let runtime = runtime.clone();
            tokio::task::spawn_blocking(move || {
                crate::control_socket::request(&runtime, command).expect("request")
            })
        };
        let answer = ask("status").await.expect("join");
        let document: serde_json::Value = serde_json::from_str(&answer).expect("JSON");
        assert_eq!(document["enrolled"], false);
        assert_eq!(
            document["enrolment"]["wireguard_public_key"],
            keys::encode_key(&public)
        );
        assert_eq!(document["enrolment"]["csr_sha256"], tls.csr_sha256.as_str());
        let text = summary(&document).expect("an unenrolled document");
        assert!(text.contains("NOT ENROLLED"), "{text}");
        assert!(text.contains(&keys::encode_key(&public)), "{text}");
        assert!(text.contains(&tls.csr_sha256), "{text}");
        assert_eq!(
            document["enrolment_page"]["urls"][0],
            "https://198.18.20.1:9443/"
        );
        assert!(
            text.contains("Enrolment page:       https://198.18.20.1:9443/\n"),
            "{text}"
        );
        assert!(text.contains("Page cert SHA-256:    AB:CD\n"), "{text}");

        let answer = ask("connect").await.expect("join");
        assert!(answer.starts_with("error: not enrolled"), "{answer}");
        server.abort();
    }

    #[test]
    fn ops1_enrolment_page_urls_name_every_reachable_address() {
        let addresses: Vec<IpAddr> = [
            "127.0.0.1",
            "198.18.20.1",
            "169.254.7.1",
            "::1",
            "fe80::1",
            "fd00::20:1",
            "198.18.0.3",
        ]
        .iter()
        .map(|a| a.parse().expect("ip"))
        .collect();
        let any6: SocketAddr = "[::]:9443".parse().expect("addr");
        assert_eq!(
            page_urls(any6, true, &addresses),
            [
                "https://198.18.20.1:9443/",
                "https://[fd00::20:1]:9443/",
                "https://198.18.0.3:9443/"
            ]
        );
        let any4: SocketAddr = "0.0.0.0:443".parse().expect("addr");
        assert_eq!(
            page_urls(any4, true, &addresses),
            ["https://198.18.20.1/", "https://198.18.0.3/"],
            "IPv4 only; the default port is not written"
        );
        let one: SocketAddr = "[::ffff:198.18.20.1]:9443".parse().expect("addr");
        assert_eq!(
            page_urls(one, true, &addresses),
            ["https://198.18.20.1:9443/"]
        );
        let loopback: SocketAddr = "127.0.0.1:9443".parse().expect("addr");
        assert_eq!(
            page_urls(loopback, false, &addresses),
            ["http://127.0.0.1:9443/"]
        );
        assert!(page_urls(any6, true, &[]).is_empty());
    }

    #[test]
    fn ops1_summary_says_where_the_page_is_or_why_it_is_not() {
        let base = serde_json::json!({
            "enrolled": false,
            "version": "0.1.0",
            "config_file": "/etc/renkei/renkei.toml",
            "enrolment": { "wireguard_public_key": "k", "csr_sha256": "AA", "csr_file": "f" },
        });
        let with_page = |page: EnrolmentPage| {
            let mut document = base.clone();
            document["enrolment_page"] = serde_json::to_value(page).expect("json");
            summary(&document).expect("unenrolled")
        };
        let mut page = EnrolmentPage::serving(
            "[::]:9443".parse().expect("addr"),
            Some("01:02".to_string()),
        );
        page.urls = vec![
            "https://198.18.20.1:9443/".to_string(),
            "https://[fd00::20:1]:9443/".to_string(),
        ];
        let text = with_page(page.clone());
        assert!(
            text.ends_with(
                "  Enrolment page:       https://198.18.20.1:9443/\n  \
                 \x20                     https://[fd00::20:1]:9443/\n  \
                 Page cert SHA-256:    01:02\n"
            ),
            "{text}"
        );
        page.urls.clear();
        let text = with_page(page);
        assert!(
            text.contains("listening on [::]:9443 (no LAN address yet)"),
            "{text}"
        );
        let text = with_page(EnrolmentPage::failed("address in use".to_string()));
        assert!(
            text.contains("Enrolment page:       not served: address in use"),
            "{text}"
        );
        assert!(!text.contains("Page cert"), "{text}");
        let text = summary(&base).expect("an older daemon's document");
        assert!(!text.contains("Enrolment page"), "{text}");
    }

    #[test]
    fn ops1_enrolled_documents_are_not_summarised_as_unenrolled() {
        let document = serde_json::json!({ "facility": "x", "role": "viewing" });
        assert!(summary(&document).is_none());
        let document = serde_json::json!({ "enrolled": true });
        assert!(summary(&document).is_none());
    }
}
