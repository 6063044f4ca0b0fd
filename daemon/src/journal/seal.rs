//! Sealing keys of the box's journal, made on the box (`renkei journal-seal`, run by the image's
//! renkei-journal-seal.service before journald opens its persistent files).
//!
//! `journalctl --setup-keys` writes the sealing key (`<journal>/<machine-id>/fss`, which
//! journald evolves every interval and which never leaves the box) and prints the verification
//! key. The verification key lets anyone derive every past sealing key, so it must not stay on
//! the box: it is shown on the console and kept in [`DEFAULT_KEY_FILE`] (root's, for an
//! installer who missed the console) only until the box is enrolled, and removed at the first
//! start after that.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::durable;

/// Where journald keeps persistent journals (on the image a bind mount of the data partition).
pub const DEFAULT_JOURNAL_DIR: &str = "/var/log/journal";
/// The verification key until the box is enrolled: beside journald's machine folders (root's
/// folder; journald and its tools read only `*.journal` files), root's alone.
pub const DEFAULT_KEY_FILE: &str = "/var/log/journal/renkei-verification-key";
/// Mode of the verification key file: root's only (the installer reads it at the box).
const KEY_FILE_MODE: u32 = 0o600;
/// How often journald seals: entries younger than this are not yet protected, so short; each
/// epoch costs a tag of a few dozen bytes.
pub const SEAL_INTERVAL: &str = "5min";
/// The sealing key's name in the machine's journal folder (journald's own).
const SEALING_KEY_NAME: &str = "fss";

/// Where sealing looks and writes.
#[derive(Debug, Clone)]
pub struct SealPaths {
    /// The file naming this machine (`/etc/machine-id`): the journal folder's name.
    pub machine_id_file: PathBuf,
    /// journald's persistent folder.
    pub journal_dir: PathBuf,
    /// Where the verification key waits for enrolment.
    pub key_file: PathBuf,
    /// The operator's configuration: once it exists the box is enrolled.
    pub config_file: PathBuf,
}

/// What `ensure_sealing` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sealing {
    /// New keys: the operator needs this verification key.
    Made {
        /// journalctl's verification key (`seed/start-interval`, hex).
        verification_key: String,
    },
    /// Keys were there; the verification key (if still on the box) waits for enrolment.
    Kept,
    /// Keys were there and the box is enrolled: the verification key was removed from it.
    KeyRemoved,
}

/// Why sealing could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The machine id is missing or not 32 hex digits.
    #[error("{path}: {reason}")]
    MachineId {
        /// The machine-id file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A folder could not be made.
    #[error("cannot make {path}")]
    Folder {
        /// The folder.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// journalctl did not run or did not make the keys.
    #[error("journalctl --setup-keys: {0}")]
    SetupKeys(String),
    /// The key file could not be written or removed.
    #[error(transparent)]
    File(#[from] durable::FileError),
}

/// Makes the sealing keys if this machine's journal folder has none (or has them but the
/// verification key was lost before enrolment: then they are made again, since nobody can
/// verify with keys whose verification key is gone), and removes the verification key from
/// the box once it is enrolled.
pub fn ensure_sealing(paths: &SealPaths, journalctl: &Path) -> Result<Sealing, SealError> {
    let machine_dir = machine_dir(paths)?;
    let sealed = machine_dir.join(SEALING_KEY_NAME).exists();
    let key_kept = paths.key_file.exists();
    let enrolled = paths.config_file.exists();
    if sealed && key_kept && enrolled {
        durable::remove_durably(&paths.key_file)?;
        return Ok(Sealing::KeyRemoved);
    }
    if sealed && (key_kept || enrolled) {
        return Ok(Sealing::Kept);
    }
    // journald makes the folder itself when it flushes; the keys must be there before, so the
    // first persistent file is sealed. It inherits the journal folder's group (setgid).
    std::fs::create_dir_all(&machine_dir).map_err(|source| SealError::Folder {
        path: machine_dir.clone(),
        source,
    })?;
    let verification_key = setup_keys(journalctl)?;
    durable::write_durably(
        &paths.key_file,
        format!("{verification_key}\n").as_bytes(),
        KEY_FILE_MODE,
    )?;
    Ok(Sealing::Made { verification_key })
}

/// This machine's journal folder.
fn machine_dir(paths: &SealPaths) -> Result<PathBuf, SealError> {
    Ok(paths.journal_dir.join(machine_id(&paths.machine_id_file)?))
}

/// The sealing key journald evolves (present once [`ensure_sealing`] made it).
pub fn sealing_key(paths: &SealPaths) -> Result<PathBuf, SealError> {
    Ok(machine_dir(paths)?.join(SEALING_KEY_NAME))
}

/// The machine id in `path` (journald's folder name for this machine).
fn machine_id(path: &Path) -> Result<String, SealError> {
    let error = |reason: String| SealError::MachineId {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
    let id = text.trim();
    if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(id.to_ascii_lowercase())
    } else {
        Err(error(format!("'{id}' is not a machine id (32 hex digits)")))
    }
}

/// Runs `journalctl --setup-keys` (replacing keys whose verification key is lost) and returns
/// the verification key it printed.
fn setup_keys(journalctl: &Path) -> Result<String, SealError> {
    let output = Command::new(journalctl)
        .args(["--setup-keys", "--force", "--interval", SEAL_INTERVAL])
        .output()
        .map_err(|e| SealError::SetupKeys(format!("{}: {e}", journalctl.display())))?;
    let printed = String::from_utf8_lossy(&output.stdout);
    let key = printed.trim();
    if !output.status.success() {
        return Err(SealError::SetupKeys(format!(
            "{}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    if !is_verification_key(key) {
        return Err(SealError::SetupKeys(format!(
            "printed '{key}', not a verification key"
        )));
    }
    Ok(key.to_string())
}

/// journalctl's verification key: hex seed in dash-separated groups, `/`, hex start epoch,
/// `-`, hex interval.
pub fn is_verification_key(text: &str) -> bool {
    let Some((seed, epoch)) = text.split_once('/') else {
        return false;
    };
    let hex_groups = |s: &str, sep: char| {
        s.split(sep)
            .all(|g| !g.is_empty() && g.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    seed.len() >= 12
        && hex_groups(seed, '-')
        && epoch.split('-').count() == 2
        && hex_groups(epoch, '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for journalctl in these unit tests of the file logic: prints a key of the
    /// real format and writes `fss` where journalctl would (the real journalctl runs in the
    /// image's boot test, which verifies the box's journal with the key).
    fn fake_journalctl(dir: &Path, machine_dir: &Path) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let script = dir.join("journalctl");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\n: > '{}/fss'\necho 07533e-1fb5bb-4f2daa-1ea638/2db06a-23c34600\n",
                machine_dir.display()
            ),
        )
        .expect("script");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("mode");
        script
    }

    fn paths(dir: &Path) -> SealPaths {
        std::fs::write(dir.join("machine-id"), "3D1219C7C4C5404AAA1F6D2A48ADFDA4\n").expect("id");
        SealPaths {
            machine_id_file: dir.join("machine-id"),
            journal_dir: dir.join("journal"),
            key_file: dir.join("key"),
            config_file: dir.join("renkei.toml"),
        }
    }

    #[test]
    fn log4_first_boot_makes_keys_and_keeps_the_verification_key_until_enrolment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = paths(dir.path());
        let machine_dir = paths.journal_dir.join("3d1219c7c4c5404aaa1f6d2a48adfda4");
        let journalctl = fake_journalctl(dir.path(), &machine_dir);
        let made = ensure_sealing(&paths, &journalctl).expect("sealing");
        let key = "07533e-1fb5bb-4f2daa-1ea638/2db06a-23c34600";
        assert_eq!(
            made,
            Sealing::Made {
                verification_key: key.into()
            }
        );
        assert_eq!(
            std::fs::read_to_string(&paths.key_file).expect("key"),
            format!("{key}\n")
        );
        // Next boot, still unenrolled: kept, no new keys.
        assert_eq!(
            ensure_sealing(&paths, &journalctl).expect("again"),
            Sealing::Kept
        );
        // Enrolled: the key leaves the box, and stays gone.
        std::fs::write(&paths.config_file, "").expect("config");
        assert_eq!(
            ensure_sealing(&paths, &journalctl).expect("enrolled"),
            Sealing::KeyRemoved
        );
        assert!(!paths.key_file.exists());
        assert_eq!(
            ensure_sealing(&paths, &journalctl).expect("later"),
            Sealing::Kept
        );
    }

    #[test]
    fn log4_keys_whose_verification_key_was_lost_before_enrolment_are_made_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = paths(dir.path());
        let machine_dir = paths.journal_dir.join("3d1219c7c4c5404aaa1f6d2a48adfda4");
        std::fs::create_dir_all(&machine_dir).expect("dir");
        std::fs::write(machine_dir.join("fss"), "old").expect("fss");
        let journalctl = fake_journalctl(dir.path(), &machine_dir);
        assert!(matches!(
            ensure_sealing(&paths, &journalctl).expect("sealing"),
            Sealing::Made { .. }
        ));
        assert_eq!(std::fs::read(machine_dir.join("fss")).expect("fss"), b"");
    }

    #[test]
    fn log4_a_bad_machine_id_or_journalctl_output_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = paths(dir.path());
        std::fs::write(&paths.machine_id_file, "uninitialized\n").expect("id");
        let error = ensure_sealing(&paths, Path::new("/bin/true")).expect_err("bad id");
        assert!(error.to_string().contains("machine-id"), "{error}");
        let paths = self::paths(dir.path());
        let error = ensure_sealing(&paths, Path::new("/bin/true")).expect_err("no key printed");
        assert!(
            error.to_string().contains("not a verification key"),
            "{error}"
        );
        assert!(!paths.key_file.exists());
    }

    #[test]
    fn log4_verification_keys_are_recognised() {
        assert!(is_verification_key(
            "07533e-1fb5bb-4f2daa-1ea638/2db06a-23c34600"
        ));
        assert!(!is_verification_key("07533e-1fb5bb-4f2daa-1ea638"));
        assert!(!is_verification_key("07533e-1fb5bb-4f2daa-1ea638/2db06a"));
        assert!(!is_verification_key(
            "x7533e-1fb5bb-4f2daa-1ea638/2db06a-23c34600"
        ));
        assert!(!is_verification_key(""));
    }
}
