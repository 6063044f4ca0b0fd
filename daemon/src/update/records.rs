//! The records the install and the boot's health check leave in the spool, beside the armed
//! bundle: they run as root, the daemon (user `renkei`, owner of the spool) reads them for
//! `GET /v1/update` and the page, and the next boot reads them to tell what happened.
//!
//! - `installing.json`: an install runs (or ran when the power went): version, target slot,
//!   rauc's latest progress line.
//! - `trial.json`: a slot was written and boots once; the health check of that boot blesses it
//!   or not.
//! - `boot.json`: what this boot's health check found (boot id, booted slot, slots): the
//!   daemon cannot ask rauc itself, and a record of this boot shows the check has run.
//!
//! Every record is written whole (temp file, fsync, rename) and owned by the spool directory's
//! owner; reading one never follows a symlink, and a damaged one reads as absent.

use std::fs;
use std::io::{self, Read as _};
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::spool::Spool;
use crate::durable::{self, at, FileError};

/// An install runs, or was cut off ([`InstallingRecord`]).
pub const INSTALLING_RECORD: &str = "installing.json";
/// A written slot on its one trial boot ([`TrialRecord`]).
pub const TRIAL_RECORD: &str = "trial.json";
/// What this boot's health check found ([`BootRecord`]).
pub const BOOT_RECORD: &str = "boot.json";
/// Records larger than this are not read (they are a few hundred bytes).
pub const MAX_RECORD_BYTES: u64 = 64 * 1024;
/// Longest progress step kept (rauc's are a few words).
pub const MAX_STEP_CHARS: usize = 200;
/// Records are private to the daemon's user (and root).
const RECORD_MODE: u32 = 0o600;

/// The last result's words: what became of the last bundle, in the order they happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Verified and armed; it waits for its install.
    Accepted,
    /// Refused at the intake or before the install; nothing was written.
    Refused,
    /// Written to the inactive slot; the box boots it once.
    Installed,
    /// rauc could not write the slot.
    InstallFailed,
    /// The new slot passed its health check and is the default now.
    Blessed,
    /// The new slot failed its health check; the box reboots into the old one.
    FailedHealthCheck,
    /// The trial boot did not pass (or did not boot); the box runs the old slot.
    FellBack,
    /// The power went (or the box was reset) while a slot was written.
    Interrupted,
}

impl Outcome {
    /// The stable word in `last_result.result`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Refused => "refused",
            Outcome::Installed => "installed",
            Outcome::InstallFailed => "install_failed",
            Outcome::Blessed => "blessed",
            Outcome::FailedHealthCheck => "failed_health_check",
            Outcome::FellBack => "fell_back",
            Outcome::Interrupted => "interrupted",
        }
    }

    /// Every word, for the docs and the page's tests.
    pub const ALL: [Outcome; 8] = [
        Outcome::Accepted,
        Outcome::Refused,
        Outcome::Installed,
        Outcome::InstallFailed,
        Outcome::Blessed,
        Outcome::FailedHealthCheck,
        Outcome::FellBack,
        Outcome::Interrupted,
    ];
}

/// rauc's latest progress line of a running install.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Percent done, as rauc counts it.
    pub percent: u8,
    /// rauc's step (`Copying image to rootfs.1`).
    pub step: String,
}

/// `installing.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallingRecord {
    /// The bundle's version.
    pub version: String,
    /// The slot written (its bootname).
    pub slot: String,
    /// When the install started, seconds since the Unix epoch.
    pub started_at: u64,
    /// rauc's latest progress line, once it printed one.
    #[serde(default)]
    pub progress: Option<Progress>,
}

/// `trial.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrialRecord {
    /// The version written.
    pub version: String,
    /// The slot written (bootname), booted once next.
    pub slot: String,
    /// The slot it was installed from, the fallback.
    pub from_slot: String,
    /// The version running when it was installed.
    pub from_version: String,
    /// When it was written, seconds since the Unix epoch.
    pub installed_at: u64,
}

/// One slot of `boot.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotRecord {
    /// Its bootname (`A`, `B`).
    pub bootname: String,
    /// rauc's boot status: `good` or `bad`.
    pub state: String,
    /// Whether this boot runs it.
    pub booted: bool,
    /// The version rauc last wrote into it, when rauc knows.
    #[serde(default)]
    pub version: Option<String>,
}

/// `boot.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootRecord {
    /// The kernel's id of the boot it was written in.
    pub boot_id: String,
    /// The slot booted (bootname), or `unknown`.
    pub booted_slot: String,
    /// `IMAGE_VERSION` of the running image.
    pub firmware_version: String,
    /// The root slots as rauc reported them.
    pub slots: Vec<SlotRecord>,
    /// When the check wrote it, seconds since the Unix epoch.
    pub checked_at: u64,
}

impl Spool {
    /// `installing.json`, if an install runs or was cut off.
    pub fn installing(&self) -> Option<InstallingRecord> {
        read_record(&self.dir().join(INSTALLING_RECORD))
    }

    /// `trial.json`, if a written slot waits for (or had) its trial boot.
    pub fn trial(&self) -> Option<TrialRecord> {
        read_record(&self.dir().join(TRIAL_RECORD))
    }

    /// `boot.json`, the last boot's health check's findings.
    pub fn boot(&self) -> Option<BootRecord> {
        read_record(&self.dir().join(BOOT_RECORD))
    }

    /// Whether `name` exists in the spool (a record that cannot be read still counts).
    pub fn has(&self, name: &str) -> bool {
        fs::symlink_metadata(self.dir().join(name)).is_ok()
    }

    /// Writes `record` as `name`, whole, owned by the spool directory's owner (created, and
    /// handed to its parent's owner, when missing).
    pub fn write_record<T: Serialize>(&self, name: &str, record: &T) -> Result<(), FileError> {
        let owner = self.ensure_dir()?;
        let json = serde_json::to_vec_pretty(record).map_err(|e| FileError {
            path: self.dir().join(name),
            source: io::Error::new(io::ErrorKind::InvalidData, e),
        })?;
        durable::write_durably_owned(&self.dir().join(name), &json, RECORD_MODE, owner)
    }

    /// Removes `name` (absent is fine), durably.
    pub fn remove(&self, name: &str) -> Result<(), FileError> {
        durable::remove_durably(&self.dir().join(name))
    }

    /// Makes sure the directory exists (0700) and returns its owner: a directory root had to
    /// make is handed to the owner of the one above it (the daemon's state directory), since
    /// the daemon writes here too.
    pub fn ensure_dir(&self) -> Result<(u32, u32), FileError> {
        let dir = self.dir();
        if !dir.is_dir() {
            durable::ensure_private_dir(dir)?;
            let above = durable::parent(dir);
            let parent = fs::metadata(above).map_err(at(above))?;
            let made = fs::metadata(dir).map_err(at(dir))?;
            if (made.uid(), made.gid()) != (parent.uid(), parent.gid()) {
                // The directory is new and empty: nobody else can have swapped it yet, and
                // `lchown` never follows a link.
                std::os::unix::fs::lchown(dir, Some(parent.uid()), Some(parent.gid()))
                    .map_err(at(dir))?;
            }
        }
        let meta = fs::metadata(dir).map_err(at(dir))?;
        Ok((meta.uid(), meta.gid()))
    }
}

/// A JSON record, or `None` when absent, a symlink, too large or unreadable: the spool belongs
/// to the daemon's user, and root reading it must never be led elsewhere; a damaged record is
/// reported as absent rather than trusted.
pub fn read_record<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() || meta.len() > MAX_RECORD_BYTES {
        return None;
    }
    let mut bytes = Vec::new();
    file.take(MAX_RECORD_BYTES).read_to_end(&mut bytes).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A user that is not root (Linux's overflow id, `nobody`).
    const NOBODY: u32 = 65534;

    #[test]
    fn avl5_records_are_written_whole_and_symlinks_or_damage_read_as_absent() {
        let dir = tempfile::tempdir().expect("dir");
        let spool = Spool::new(dir.path().join("update"));
        let trial = TrialRecord {
            version: "0.1.0.1".into(),
            slot: "B".into(),
            from_slot: "A".into(),
            from_version: "0.1.0".into(),
            installed_at: 7,
        };
        spool.ensure_dir().expect("spool");
        // The daemon's user owns the spool; root writes into it (as the tests run, when root).
        if nix::unistd::geteuid().is_root() {
            std::os::unix::fs::chown(spool.dir(), Some(NOBODY), Some(NOBODY)).expect("chown");
        }
        spool.write_record(TRIAL_RECORD, &trial).expect("written");
        assert_eq!(spool.trial(), Some(trial.clone()));
        assert!(spool.has(TRIAL_RECORD));
        let owner = fs::metadata(spool.dir()).expect("meta");
        let written = fs::metadata(spool.dir().join(TRIAL_RECORD)).expect("meta");
        assert_eq!(
            (written.uid(), written.gid()),
            (owner.uid(), owner.gid()),
            "owned by the spool's owner"
        );
        assert_eq!(
            written.mode() & 0o7777,
            RECORD_MODE,
            "private to the daemon"
        );

        fs::write(spool.dir().join(INSTALLING_RECORD), b"{\"version\":").expect("write");
        assert_eq!(spool.installing(), None, "a damaged record is absent");
        assert!(spool.has(INSTALLING_RECORD), "but it is there");

        let elsewhere = dir.path().join("elsewhere.json");
        fs::write(&elsewhere, serde_json::to_vec(&trial).expect("json")).expect("write");
        spool.remove(TRIAL_RECORD).expect("removed");
        std::os::unix::fs::symlink(&elsewhere, spool.dir().join(TRIAL_RECORD)).expect("link");
        assert_eq!(spool.trial(), None, "a symlink is never followed");
        spool.remove(TRIAL_RECORD).expect("removed");
        assert!(elsewhere.exists(), "removing the link leaves its target");
        assert!(!spool.has(TRIAL_RECORD));
    }
}
