//! The spool directory (`update.spool_dir`, root only): a bundle arrives in an `incoming-*`
//! file of its own, is checked there, and only a bundle that passed every check becomes
//! `pending.raucb`, the one the install takes. The box never checks a file someone else can
//! still change: `renkei update install` copies the installer's file in first.
//!
//! `pending.raucb` appears through a hard link, which fails when it exists: of two bundles
//! checked at once, one is armed and the other refused, without a lock.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::durable::{at, FileError};

/// The armed bundle.
pub const PENDING_BUNDLE: &str = "pending.raucb";
/// What is known about the armed bundle ([`PendingInstall`], JSON).
pub const PENDING_RECORD: &str = "pending.json";
/// The last install or refusal ([`UpdateResult`], JSON).
pub const LAST_RESULT: &str = "last-result.json";
/// Incoming bundles are named `incoming-<pid>-<n>.raucb`.
pub const INCOMING_PREFIX: &str = "incoming-";
/// Records larger than this are not read (they are a few hundred bytes).
const MAX_RECORD_BYTES: u64 = 64 * 1024;

/// A bundle waiting for its install.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingInstall {
    /// The manifest's version.
    pub version: String,
    /// The manifest's compatible string.
    pub compatible: String,
    /// Who sent it: an operator identity, or `local`.
    pub by: String,
    /// When it was accepted, seconds since the Unix epoch.
    pub accepted_at: u64,
    /// Its size in bytes.
    pub bytes: u64,
}

/// The outcome of the last bundle the box was given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateResult {
    /// What became of it: a word of [`super::records::Outcome`].
    pub result: String,
    /// The bundle's version, when known.
    pub version: Option<String>,
    /// The refusal's stable word, when refused.
    pub reason: Option<String>,
    /// Why, in English.
    pub message: String,
    /// The slot it concerns (the slot written, or fallen back from), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<String>,
    /// Who sent it.
    pub by: String,
    /// When, seconds since the Unix epoch.
    pub at: u64,
}

/// The spool directory.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
}

/// A bundle being received or checked: its file is removed when this is dropped, unless it was
/// armed (and then the armed link stays).
#[derive(Debug)]
pub struct IncomingBundle {
    path: PathBuf,
    file: tokio::fs::File,
}

impl IncomingBundle {
    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open file to write the bundle into.
    pub fn file(&mut self) -> &mut tokio::fs::File {
        &mut self.file
    }

    /// Flushes and syncs the file and returns its length: what is checked from here on is
    /// what is on disk.
    pub async fn finish(&mut self) -> Result<u64, FileError> {
        use tokio::io::AsyncWriteExt as _;
        self.file.flush().await.map_err(at(&self.path))?;
        self.file.sync_all().await.map_err(at(&self.path))?;
        let len = self.file.metadata().await.map_err(at(&self.path))?.len();
        Ok(len)
    }
}

impl Drop for IncomingBundle {
    fn drop(&mut self) {
        if let Err(err) = fs::remove_file(&self.path) {
            if err.kind() != io::ErrorKind::NotFound {
                tracing::warn!(file = %self.path.display(), error = %err, "cannot remove an incoming bundle");
            }
        }
    }
}

/// Why a bundle could not be armed.
#[derive(Debug, thiserror::Error)]
pub enum ArmError {
    /// Another bundle is armed.
    #[error("another bundle is already waiting for its install")]
    Pending,
    /// The spool could not be written.
    #[error(transparent)]
    File(#[from] FileError),
}

static NEXT_INCOMING: AtomicU64 = AtomicU64::new(0);

impl Spool {
    /// The spool at `dir` (created when the first bundle arrives).
    pub fn new(dir: PathBuf) -> Spool {
        Spool { dir }
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A new, empty incoming file (mode 0600, never an existing file or a symlink), in the
    /// directory created 0700 if needed.
    pub async fn incoming(&self) -> Result<IncomingBundle, FileError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(at(&self.dir))?;
        let n = NEXT_INCOMING.fetch_add(1, Ordering::Relaxed);
        let path = self
            .dir
            .join(format!("{INCOMING_PREFIX}{}-{n}.raucb", std::process::id()));
        let mut options = fs::OpenOptions::new();
        options
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW);
        let file = options.open(&path).map_err(at(&path))?;
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(at(&path))?;
        Ok(IncomingBundle {
            path,
            file: tokio::fs::File::from_std(file),
        })
    }

    /// Removes incoming files a crashed process left (its pid no longer runs): a power cut or a
    /// kill during an upload must not leave the spool filling up. Files of running processes
    /// (this daemon's uploads, an installer's `renkei update install`) stay. Returns how many
    /// were removed.
    pub fn remove_stale(&self) -> usize {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return 0;
        };
        let own = std::process::id();
        let mut removed = 0;
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = incoming_pid(&name) else {
                continue;
            };
            if pid == own || Path::new("/proc").join(pid.to_string()).exists() {
                continue;
            }
            match fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(err) => {
                    tracing::warn!(file = %entry.path().display(), error = %err, "cannot remove a stale incoming bundle")
                }
            }
        }
        if removed > 0 {
            tracing::info!(removed, dir = %self.dir.display(), "removed incoming bundles a crash left");
        }
        removed
    }

    /// The armed bundle's record, if a bundle is armed.
    pub fn pending(&self) -> Option<PendingInstall> {
        if !self.dir.join(PENDING_BUNDLE).exists() {
            return None;
        }
        read_record(&self.dir.join(PENDING_RECORD)).or_else(|| {
            Some(PendingInstall {
                version: "unknown".into(),
                compatible: String::new(),
                by: String::new(),
                accepted_at: 0,
                bytes: 0,
            })
        })
    }

    /// Makes the checked `bundle` the armed one, with its record; refused when one is armed.
    pub fn arm(&self, bundle: IncomingBundle, record: &PendingInstall) -> Result<(), ArmError> {
        let pending = self.dir.join(PENDING_BUNDLE);
        match fs::hard_link(bundle.path(), &pending) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                return Err(ArmError::Pending)
            }
            Err(err) => return Err(at(&pending)(err).into()),
        }
        drop(bundle);
        let written = self.write_record(PENDING_RECORD, record);
        if let Err(err) = written {
            // An armed bundle without its record would be installed blind: disarm it.
            let _ = fs::remove_file(&pending);
            return Err(err.into());
        }
        Ok(())
    }

    /// The last result, if any.
    pub fn last_result(&self) -> Option<UpdateResult> {
        read_record(&self.dir.join(LAST_RESULT))
    }

    /// Notes `result` as the last one (the directory is created if needed).
    /// The daemon reads it whoever wrote it: root's records are handed to the spool's owner.
    pub fn record_result(&self, result: &UpdateResult) -> Result<(), FileError> {
        self.write_record(LAST_RESULT, result)
    }
}

/// The pid in an incoming file's name `incoming-<pid>-<n>.raucb`.
fn incoming_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(INCOMING_PREFIX)?.strip_suffix(".raucb")?;
    let (pid, n) = rest.split_once('-')?;
    n.parse::<u64>().ok()?;
    pid.parse().ok()
}

/// A JSON record, or `None` when absent, too large or unreadable (it is the box's own file;
/// a damaged one is reported as unknown rather than trusted).
fn read_record<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    let meta = fs::metadata(path).ok()?;
    if meta.len() > MAX_RECORD_BYTES {
        return None;
    }
    serde_json::from_slice(&fs::read(path).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(version: &str) -> PendingInstall {
        PendingInstall {
            version: version.into(),
            compatible: "renkei-test".into(),
            by: "local".into(),
            accepted_at: 1,
            bytes: 4,
        }
    }

    #[tokio::test]
    async fn avl5_incoming_files_of_dead_processes_are_removed_and_live_ones_kept() {
        let dir = tempfile::tempdir().expect("dir");
        let spool = Spool::new(dir.path().to_path_buf());
        let live = spool.incoming().await.expect("incoming");
        // A pid above the kernel's pid_max (4194304 at most) never runs.
        let dead = dir
            .path()
            .join(format!("{INCOMING_PREFIX}99999999-0.raucb"));
        fs::write(&dead, b"partial").expect("write");
        fs::write(dir.path().join("other-file"), b"x").expect("write");
        assert_eq!(spool.remove_stale(), 1);
        assert!(!dead.exists());
        assert!(live.path().exists(), "this process's upload stays");
        assert!(dir.path().join("other-file").exists());
        assert_eq!(incoming_pid("incoming-12-3.raucb"), Some(12));
        assert_eq!(incoming_pid("incoming-12.raucb"), None);
        assert_eq!(incoming_pid("pending.raucb"), None);
    }

    #[tokio::test]
    async fn avl5_one_bundle_is_armed_at_a_time_and_a_refused_one_leaves_nothing() {
        let dir = tempfile::tempdir().expect("dir");
        let spool = Spool::new(dir.path().join("update"));
        let first = spool.incoming().await.expect("incoming");
        let second = spool.incoming().await.expect("incoming");
        assert_ne!(first.path(), second.path());
        spool.arm(first, &record("1.1")).expect("armed");
        assert_eq!(spool.pending(), Some(record("1.1")));
        assert!(matches!(
            spool.arm(second, &record("1.2")),
            Err(ArmError::Pending)
        ));
        assert_eq!(
            spool.pending(),
            Some(record("1.1")),
            "the first stays armed"
        );
        let mut names: Vec<String> = fs::read_dir(spool.dir())
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [PENDING_RECORD, PENDING_BUNDLE],
            "no incoming file left"
        );
    }
}
