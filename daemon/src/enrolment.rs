//! What an installer reads off a box to enrol it (requirement OPS-1): the WireGuard public key
//! and the fingerprint of the box's TLS certificate signing request. Both are public; the private
//! keys they belong to are generated on the box and never leave it.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::keys;

/// Where first boot writes the box's TLS certificate signing request, next to its key.
pub const DEFAULT_CSR_FILE: &str = "/etc/renkei/box.csr";

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
}

impl Enrolment {
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
            let digest = ring_sha256(&der);
            return Ok(digest
                .iter()
                .map(|b| format!("{b:02X}"))
                .collect::<Vec<_>>()
                .join(":"));
        }
    }
    Err(bad("no CERTIFICATE REQUEST block".to_string()))
}

fn ring_sha256(data: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .to_vec()
}
