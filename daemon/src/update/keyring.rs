//! Rotation of the update CA through signed firmware (issue #17).
//!
//! The update CA keyring (`update.ca_file`, RAUC's keyring) is root's file: a signed config
//! cannot change it, as the daemon, a network service, must not choose what root's RAUC trusts.
//! A new keyring comes instead inside a slot image, at [`IMAGE_KEYRING_FILE`]: the image was
//! signed by the current update CA, so the change is announced by the current key. The health
//! check (root) adopts it only once that slot is blessed (`rauc status mark-good` succeeded): a
//! slot that never proves itself never changes what the box trusts. A keyring that does not
//! check out is refused and the old one stays; the blessing stands either way.

use std::io;
use std::path::{Path, PathBuf};

use x509_parser::prelude::{FromDer, X509Certificate};

use crate::durable::{self, FileError};
use crate::tls::credentials::{certificates_in, read_limited};
use crate::tls::CredentialError;

/// Where a slot's image carries the update CA keyring it wants the box to trust.
pub const IMAGE_KEYRING_FILE: &str = "/usr/share/renkei/update-keyring.pem";
/// Mode of the installed keyring: RAUC (root) reads it, anyone may read a CA certificate.
pub const KEYRING_MODE: u32 = 0o644;
/// The installed keyring's owner (uid, gid): root, whatever owned the old file.
pub const KEYRING_OWNER: (u32, u32) = (0, 0);

/// Why an offered keyring was not installed.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    /// The file cannot be read, is too large, is not PEM or holds no certificate.
    #[error(transparent)]
    Unreadable(#[from] CredentialError),
    /// A certificate does not parse as X.509.
    #[error("certificate #{index} in {path} cannot be parsed: {reason}")]
    BadCertificate {
        /// The offered keyring.
        path: PathBuf,
        /// Position in the file, from 0.
        index: usize,
        /// What the parser said.
        reason: String,
    },
    /// No certificate of the keyring is a CA (basicConstraints CA:TRUE): RAUC could verify
    /// no bundle against it.
    #[error("{path} holds no CA certificate (basicConstraints CA:TRUE)")]
    NoCa {
        /// The offered keyring.
        path: PathBuf,
    },
    /// The keyring could not be written.
    #[error("cannot install the update CA keyring: {0}")]
    Install(#[from] FileError),
}

/// What became of the keyring a blessed slot carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Adoption {
    /// The slot carries none, or the box has no `[update]` section to say where it goes.
    Absent,
    /// The slot's keyring is the installed one already.
    Unchanged,
    /// The slot's keyring replaced `update.ca_file`.
    Replaced {
        /// Certificates in the new keyring.
        certificates: usize,
    },
    /// The slot's keyring was refused; the old one stays.
    Refused(String),
}

impl Adoption {
    /// What the blessed result's message adds, if anything.
    pub fn note(&self) -> Option<String> {
        match self {
            Adoption::Absent | Adoption::Unchanged => None,
            Adoption::Replaced { certificates } => Some(format!(
                "update CA keyring replaced: {certificates} certificates"
            )),
            Adoption::Refused(why) => Some(format!(
                "its update CA keyring was refused, the old one stays: {why}"
            )),
        }
    }
}

/// The keyring a running slot offers and where the box's keyring lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageKeyring {
    /// The running root's keyring file ([`IMAGE_KEYRING_FILE`] on a box).
    pub offered: PathBuf,
    /// `update.ca_file`; `None` when the config has no `[update]`.
    pub installed: Option<PathBuf>,
}

impl ImageKeyring {
    /// The box's: the running root's [`IMAGE_KEYRING_FILE`] into `update.ca_file`.
    pub fn of_box(ca_file: Option<PathBuf>) -> Self {
        ImageKeyring {
            offered: PathBuf::from(IMAGE_KEYRING_FILE),
            installed: ca_file,
        }
    }

    /// Installs the offered keyring when it differs from the installed one and checks out;
    /// never fails (a refusal is logged and reported as [`Adoption::Refused`]).
    pub fn adopt(&self) -> Adoption {
        let adoption = match self.try_adopt() {
            Ok(adoption) => adoption,
            Err(err) => Adoption::Refused(err.to_string()),
        };
        match &adoption {
            Adoption::Absent | Adoption::Unchanged => {
                tracing::debug!(offered = %self.offered.display(), ?adoption, "update CA keyring not replaced")
            }
            Adoption::Replaced { certificates } => {
                tracing::warn!(offered = %self.offered.display(), installed = ?self.installed, certificates, "update CA keyring replaced by the blessed slot's")
            }
            Adoption::Refused(why) => {
                tracing::error!(offered = %self.offered.display(), installed = ?self.installed, why = %why, "the blessed slot's update CA keyring was refused; the old one stays")
            }
        }
        adoption
    }

    fn try_adopt(&self) -> Result<Adoption, KeyringError> {
        let Some(installed) = &self.installed else {
            return Ok(Adoption::Absent);
        };
        match std::fs::symlink_metadata(&self.offered) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Adoption::Absent),
            _ => {}
        }
        let offered = read_limited(&self.offered)?;
        match std::fs::read(installed) {
            Ok(current) if current == offered => return Ok(Adoption::Unchanged),
            // A missing or unreadable keyring is replaced: RAUC could verify nothing with it.
            _ => {}
        }
        let certificates = check_keyring(&self.offered, &offered)?;
        durable::write_durably_owned(installed, &offered, KEYRING_MODE, KEYRING_OWNER)?;
        Ok(Adoption::Replaced { certificates })
    }
}

/// Checks PEM text `bytes` of `path` as an update CA keyring: every certificate parses as X.509
/// and at least one is a CA. Returns the number of certificates.
pub fn check_keyring(path: &Path, bytes: &[u8]) -> Result<usize, KeyringError> {
    let certificates = certificates_in(path, bytes)?;
    let mut cas = 0;
    for (index, der) in certificates.iter().enumerate() {
        let bad = |reason: String| KeyringError::BadCertificate {
            path: path.to_path_buf(),
            index,
            reason,
        };
        let (rest, certificate) =
            X509Certificate::from_der(der).map_err(|err| bad(err.to_string()))?;
        if !rest.is_empty() {
            return Err(bad(format!("{} bytes after the certificate", rest.len())));
        }
        if certificate.is_ca() {
            cas += 1;
        }
    }
    if cas == 0 {
        return Err(KeyringError::NoCa {
            path: path.to_path_buf(),
        });
    }
    Ok(certificates.len())
}

#[cfg(test)]
pub(crate) mod tests {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};

    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

    use super::*;

    /// A self-signed update CA certificate named `name`, in PEM.
    pub fn ca_pem(name: &str) -> String {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.self_signed(&key).expect("CA").pem()
    }

    /// A bundle signer's certificate (no CA) issued by a fresh CA, in PEM.
    fn signer_pem() -> String {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca = CertificateParams::default();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().expect("signer key");
        let mut leaf = CertificateParams::default();
        leaf.is_ca = IsCa::ExplicitNoCa;
        leaf.distinguished_name
            .push(DnType::CommonName, "bundle signer");
        leaf.signed_by(&key, &issuer).expect("signer").pem()
    }

    struct Box_ {
        _dir: tempfile::TempDir,
        keyring: ImageKeyring,
    }

    /// A tempdir with the installed keyring `installed` and, if given, the slot's `offered`.
    fn given(installed: &str, offered: Option<&str>) -> Box_ {
        let dir = tempfile::tempdir().expect("dir");
        let rauc = dir.path().join("data/rauc");
        std::fs::create_dir_all(&rauc).expect("rauc dir");
        let ca_file = rauc.join("update-ca.pem");
        std::fs::write(&ca_file, installed).expect("installed");
        let slot = dir.path().join("usr/share/renkei");
        std::fs::create_dir_all(&slot).expect("slot dir");
        let offered_file = slot.join("update-keyring.pem");
        if let Some(offered) = offered {
            std::fs::write(&offered_file, offered).expect("offered");
        }
        Box_ {
            keyring: ImageKeyring {
                offered: offered_file,
                installed: Some(ca_file),
            },
            _dir: dir,
        }
    }

    fn installed(b: &Box_) -> String {
        std::fs::read_to_string(b.keyring.installed.as_ref().expect("ca_file")).expect("read")
    }

    #[test]
    fn avl5_a_blessed_slot_keyring_that_differs_replaces_the_update_ca_as_root_0644() {
        let old = ca_pem("update CA 1");
        let transition = format!("{old}{}", ca_pem("update CA 2"));
        let b = given(&old, Some(&transition));
        std::fs::set_permissions(
            b.keyring.installed.as_ref().expect("ca_file"),
            std::fs::Permissions::from_mode(0o600),
        )
        .expect("chmod");
        let adoption = b.keyring.adopt();
        assert_eq!(adoption, Adoption::Replaced { certificates: 2 });
        assert_eq!(
            adoption.note().as_deref(),
            Some("update CA keyring replaced: 2 certificates")
        );
        assert_eq!(installed(&b), transition);
        let meta = std::fs::metadata(b.keyring.installed.as_ref().expect("ca_file")).expect("meta");
        assert_eq!(meta.permissions().mode() & 0o7777, KEYRING_MODE);
        assert_eq!((meta.uid(), meta.gid()), KEYRING_OWNER);
        assert_eq!(b.keyring.adopt(), Adoption::Unchanged, "the next bless");
    }

    #[test]
    fn avl5_the_update_ca_is_untouched_when_the_slot_keyring_is_equal_or_absent() {
        let old = ca_pem("update CA 1");
        let equal = given(&old, Some(&old));
        assert_eq!(equal.keyring.adopt(), Adoption::Unchanged);
        assert_eq!(equal.keyring.adopt().note(), None);
        assert_eq!(installed(&equal), old);

        let absent = given(&old, None);
        assert_eq!(absent.keyring.adopt(), Adoption::Absent);
        assert_eq!(installed(&absent), old);

        let mut no_update_section = given(&old, Some(&ca_pem("update CA 2")));
        let ca_file = no_update_section.keyring.installed.take();
        assert_eq!(no_update_section.keyring.adopt(), Adoption::Absent);
        assert_eq!(
            std::fs::read_to_string(ca_file.expect("ca_file")).expect("read"),
            old
        );
    }

    #[test]
    fn avl5_a_bad_slot_keyring_is_refused_and_the_old_update_ca_stays() {
        let old = ca_pem("update CA 1");
        let mangled = {
            // A CERTIFICATE block whose DER is not X.509.
            "-----BEGIN CERTIFICATE-----\nTm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"
                .to_string()
        };
        let cases = [
            ("not PEM at all\n".to_string(), "holds no PEM certificate"),
            (String::new(), "holds no PEM certificate"),
            (
                "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n".to_string(),
                "is not valid PEM",
            ),
            (format!("{old}{mangled}"), "certificate #1"),
            (signer_pem(), "holds no CA certificate"),
        ];
        for (offered, expected) in cases {
            let b = given(&old, Some(&offered));
            let adoption = b.keyring.adopt();
            let Adoption::Refused(why) = &adoption else {
                panic!("{offered:?} was not refused: {adoption:?}");
            };
            assert!(why.contains(expected), "{offered:?}: {why}");
            assert!(
                why.contains("update-keyring.pem"),
                "the error names the file: {why}"
            );
            assert!(adoption
                .note()
                .expect("noted")
                .starts_with("its update CA keyring was refused"));
            assert_eq!(installed(&b), old, "{offered:?}: the old keyring stays");
        }
    }
}
