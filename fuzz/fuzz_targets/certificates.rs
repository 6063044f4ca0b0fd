//! PEM/DER certificate, key and CRL loading as the daemon does it at start and on every reload
//! (`tls::credentials::load_at`): the input is split at `\n====\n` into the box's certificate
//! chain, its private key, the operator CA bundle and a CRL (PEM or DER), written to files of
//! a private directory, then loaded and checked against a fixed clock. The first part is also
//! read as a peer's DER certificate (`PeerIdentities::from_certificate`, every mTLS handshake)
//! and as a PEM bundle (`certificate_identities`, which a push's `[meta] box` is checked with).
#![no_main]

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use renkei::config::TlsConfig;
use renkei::tls::credentials::{self, certificate_identities};
use renkei::tls::identity::PeerIdentities;
use rustls_pki_types::CertificateDer;

/// A directory of this process's own (removed with the machine's tmp; one per process so
/// parallel fuzzing jobs do not share files).
fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("renkei-fuzz-certs-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("fuzz scratch directory");
        dir
    })
}

fn write(name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir().join(name);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .expect("fuzz scratch file");
    file.write_all(bytes).expect("fuzz scratch write");
    path
}

fn split(data: &[u8]) -> Vec<&[u8]> {
    const SEPARATOR: &[u8] = b"\n====\n";
    let mut parts = Vec::new();
    let mut rest = data;
    while let Some(at) = rest.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
        parts.push(&rest[..at]);
        rest = &rest[at + SEPARATOR.len()..];
    }
    parts.push(rest);
    parts
}

fuzz_target!(|data: &[u8]| {
    let parts = split(data);
    let part = |i: usize| parts.get(i).copied().unwrap_or_default();

    let _ = PeerIdentities::from_certificate(&CertificateDer::from(part(0)));

    let config = TlsConfig {
        certificate_file: write("box.pem", part(0)),
        private_key_file: write("box.key", part(1)),
        ca_file: write("ca.pem", part(2)),
        crl_file: (parts.len() > 3).then(|| write("ca.crl", part(3))),
    };
    if let Ok(identities) = certificate_identities(&config.certificate_file) {
        let _ = identities.list();
    }
    // 2030-01-01: inside the seed certificates' ten years (fuzz/seeds/make-certificates), and
    // fixed so a run is reproducible.
    let now = UNIX_EPOCH + Duration::from_secs(1_893_456_000);
    let outcome = match credentials::load_at(&config, now) {
        Ok(loaded) => format!("loaded, serial {}", loaded.serial()),
        Err(err) => err.to_string(),
    };
    // How far a seed gets, for whoever maintains the seeds: `RENKEI_FUZZ_DEBUG=1 <binary> <file>`.
    if std::env::var_os("RENKEI_FUZZ_DEBUG").is_some() {
        eprintln!("certificates: {outcome}");
    }
});
