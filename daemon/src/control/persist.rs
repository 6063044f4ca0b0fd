//! The config file and the files that make a push crash-safe (AVL-1).
//!
//! A push writes, each durably (temp file, fsync, rename, fsync of the directory) and in this
//! order: `previous.toml` (the confirmed config's bytes), `pending.json` (the marker), then the
//! config file itself. A confirm writes `confirmed.json` (version, hash, signer, pusher) and
//! then removes the marker: writing `confirmed.json` is the commit point, so a crash between
//! the two never loses who signed and pushed the running config. A rollback writes
//! `previous.toml` back over the config file and then removes the marker. At start,
//! [`ConfigFiles::recover`] finds a marker left by a crash or a reboot and decides from the
//! files alone, and says which of three things happened: the config file is the previous one
//! (the push never replaced it, or a rollback already put it back: it stays and the pushed one
//! never runs); `confirmed.json` describes the file's exact bytes (the confirm was durable: it
//! stays); or it is the pushed one, unconfirmed (the previous config is restored).
//! So after any crash the config file holds either the last confirmed config or a newly
//! confirmed one, never half of anything, and the start-up log can say which.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A push file that could not be read or written, with the file.
pub use crate::durable::FileError as PersistError;
use crate::durable::{at, ensure_private_dir, remove_durably, remove_stale_temp, write_durably};

/// Mode of a config file written by the daemon when none existed: it holds the admin password
/// hash, so not world-readable.
const CONFIG_FILE_MODE: u32 = 0o640;
/// Largest marker or record file read back.
const MAX_RECORD_BYTES: u64 = 64 * 1024;

/// What `pending.json` says about a config awaiting confirmation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRecord {
    /// The pending config's `meta.version`.
    pub version: u64,
    /// The version it replaced.
    pub previous_version: u64,
    /// SHA-256 (hex) of the pending config's bytes.
    pub sha256: String,
    /// Fingerprint of the key that signed it.
    pub signer: String,
    /// Identity of the operator's client certificate that pushed it.
    pub pushed_by: String,
    /// When it was applied (unix seconds).
    pub applied_at_unix: u64,
    /// When it is rolled back unless confirmed (unix seconds).
    pub confirm_deadline_unix: u64,
}

/// What `confirmed.json` says about the confirmed config (for the status page after restarts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfirmedRecord {
    /// Its `meta.version`.
    pub version: u64,
    /// SHA-256 (hex) of its bytes: the record applies only while the file still matches.
    pub sha256: String,
    /// Fingerprint of the key that signed it.
    pub signer: String,
    /// Identity of the operator's client certificate that pushed it.
    pub pushed_by: String,
    /// When it was confirmed (unix seconds).
    pub confirmed_at_unix: u64,
    /// When it was pushed (unix seconds); absent in records written before it was kept.
    #[serde(default)]
    pub pushed_at_unix: Option<u64>,
}

/// What start-up recovery did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// The marker that was found (absent if it could not be parsed).
    pub pending: Option<PendingRecord>,
    /// Whether the pushed config was confirmed after all or the previous one was restored.
    pub outcome: RecoveryOutcome,
    /// A rollback the disk could not take (full or read-only): the confirmed config to run
    /// from memory. The marker stays, so the next start decides again from the same files.
    pub unwritten: Option<Unwritten>,
}

/// The confirmed config that start-up recovery could not write back over the pushed one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unwritten {
    /// The confirmed config's exact bytes (the rollback copy), to run from memory.
    pub bytes: Vec<u8>,
    /// Why the config file could not be written.
    pub error: String,
}

/// How a marker left by a crash was resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryOutcome {
    /// The pushed config was in place and never confirmed: the previous config file is back.
    RolledBack,
    /// The pushed config was in place and `confirmed.json` describes it: its confirm was
    /// durable before the crash, only the marker was left; it stays and runs.
    Confirmed,
    /// The config file is the previous config: the daemon stopped before the push replaced
    /// the file, or after a rollback had put the previous one back. The pushed config never
    /// runs; the file stays as it is.
    NotApplied,
}

/// The config file and the state directory files around it.
#[derive(Debug, Clone)]
pub struct ConfigFiles {
    config_path: PathBuf,
    dir: PathBuf,
}

impl ConfigFiles {
    /// `config_path` is the file the daemon runs from; the push files live in
    /// `<state_dir>/config/`.
    pub fn new(config_path: &Path, state_dir: &Path) -> Self {
        ConfigFiles {
            config_path: config_path.to_path_buf(),
            dir: state_dir.join("config"),
        }
    }

    /// The config file.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    fn previous_path(&self) -> PathBuf {
        self.dir.join("previous.toml")
    }

    fn pending_path(&self) -> PathBuf {
        self.dir.join("pending.json")
    }

    fn confirmed_path(&self) -> PathBuf {
        self.dir.join("confirmed.json")
    }

    /// At start: if a pushed config was never confirmed, put the previous one back. Every
    /// state a crash can leave is handled (see the module documentation).
    pub fn recover(&self) -> Result<Option<Recovery>, PersistError> {
        // Half-written files of a write a power cut interrupted: none of them is ever read
        // (a write is a temp file renamed over the real one), and most would stay until the
        // same file is written again.
        for path in [
            self.config_path.clone(),
            self.previous_path(),
            self.pending_path(),
            self.confirmed_path(),
        ] {
            match remove_stale_temp(&path) {
                Ok(true) => {
                    tracing::info!(file = %path.display(), "removed the temp file an interrupted write left beside it")
                }
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(%error, "a temp file left by an interrupted write could not be removed")
                }
            }
        }
        let marker = self.pending_path();
        if !marker.exists() {
            return Ok(None);
        }
        let pending = read_json::<PendingRecord>(&marker).ok();
        let current = match fs::read(&self.config_path) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(at(&self.config_path)(e)),
        };
        let previous_path = self.previous_path();
        let previous = match fs::read(&previous_path) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(at(&previous_path)(e)),
        };
        let mut unwritten = None;
        let outcome = match (&current, &previous) {
            // The previous config is in place: the push never replaced it, or a rollback
            // already put it back. Either way the pushed config is not running.
            (Some(bytes), Some(previous)) if bytes == previous => RecoveryOutcome::NotApplied,
            // confirmed.json is written before the marker goes: when it describes the file,
            // the confirm was durable.
            (Some(bytes), _) if self.confirmed_record(bytes).is_some() => {
                RecoveryOutcome::Confirmed
            }
            // A disk that cannot take the write-back still lets the box run its confirmed
            // config: from memory, until a start finds room (the files decide the same way).
            (_, Some(previous)) => {
                if let Err(error) = self.write_config(previous) {
                    unwritten = Some(Unwritten {
                        bytes: previous.clone(),
                        error: error.to_string(),
                    });
                }
                RecoveryOutcome::RolledBack
            }
            // A marker is only written after previous.toml: without it the config file was
            // never replaced.
            (_, None) => RecoveryOutcome::NotApplied,
        };
        // The decision above reads only the files, so a marker that cannot go (a read-only
        // disk) leads the next start to the same one: start on it rather than not at all.
        // Without the write-back the marker must stay: it is what keeps the pushed config in
        // the file from being taken for the confirmed one.
        if unwritten.is_none() {
            if let Err(error) = remove_durably(&marker) {
                tracing::warn!(%error, "the push marker could not be removed; the next start decides again from the same files");
            }
        }
        Ok(Some(Recovery {
            pending,
            outcome,
            unwritten,
        }))
    }

    /// Makes `new` the config file, keeping `current` to roll back to.
    pub fn begin(
        &self,
        current: &[u8],
        new: &[u8],
        record: &PendingRecord,
    ) -> Result<(), PersistError> {
        ensure_private_dir(&self.dir)?;
        write_durably(&self.previous_path(), current, 0o600)?;
        let json = serde_json::to_vec_pretty(record).map_err(|e| at(&self.dir)(e.into()))?;
        write_durably(&self.pending_path(), &json, 0o600)?;
        self.write_config(new)
    }

    /// Commits the pending config: `confirmed.json` first (the commit point), then the marker
    /// goes.
    pub fn confirm(&self, record: &ConfirmedRecord) -> Result<(), PersistError> {
        let json = serde_json::to_vec_pretty(record).map_err(|e| at(&self.dir)(e.into()))?;
        write_durably(&self.confirmed_path(), &json, 0o600)?;
        remove_durably(&self.pending_path())
    }

    /// Puts the previous config back; returns its bytes.
    pub fn rollback(&self) -> Result<Vec<u8>, PersistError> {
        let previous = self.previous_path();
        let bytes = fs::read(&previous).map_err(at(&previous))?;
        self.write_config(&bytes)?;
        remove_durably(&self.pending_path())?;
        Ok(bytes)
    }

    /// The confirmed record, if it describes `config_bytes`.
    pub fn confirmed_record(&self, config_bytes: &[u8]) -> Option<ConfirmedRecord> {
        let record = read_json::<ConfirmedRecord>(&self.confirmed_path()).ok()?;
        (record.sha256 == sha256_hex(config_bytes)).then_some(record)
    }

    fn write_config(&self, bytes: &[u8]) -> Result<(), PersistError> {
        let mode = fs::metadata(&self.config_path)
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(CONFIG_FILE_MODE);
        write_durably(&self.config_path, bytes, mode)
    }
}

/// SHA-256 of `bytes` as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    crate::hex::lower(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, PersistError> {
    let file = File::open(path).map_err(at(path))?;
    let len = file.metadata().map_err(at(path))?.len();
    if len > MAX_RECORD_BYTES {
        return Err(at(path)(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{len} bytes is too large for a record"),
        )));
    }
    serde_json::from_reader(io::BufReader::new(file))
        .map_err(|e| at(path)(io::Error::new(io::ErrorKind::InvalidData, e)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::durable::create_private_dir;

    fn record(version: u64) -> PendingRecord {
        PendingRecord {
            version,
            previous_version: version - 1,
            sha256: String::new(),
            signer: "k".into(),
            pushed_by: "operator".into(),
            applied_at_unix: 0,
            confirm_deadline_unix: 0,
        }
    }

    fn setup() -> (tempfile::TempDir, ConfigFiles) {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("renkei.toml");
        fs::write(&config, b"v1").expect("write");
        fs::set_permissions(&config, fs::Permissions::from_mode(0o640)).expect("chmod");
        let files = ConfigFiles::new(&config, &dir.path().join("state"));
        (dir, files)
    }

    #[test]
    fn int2_avl1_a_start_removes_the_temp_files_power_cuts_left_and_keeps_the_rest() {
        let (dir, files) = setup();
        let state = dir.path().join("state/config");
        create_private_dir(&state).expect("state");
        // A cut while the confirm of a later push was written (seen in the boot test's power
        // cuts): no later write of confirmed.json would have removed it.
        let stale = [
            state.join(".confirmed.json.tmp"),
            state.join(".pending.json.tmp"),
            state.join(".previous.toml.tmp"),
            dir.path().join(".renkei.toml.tmp"),
        ];
        for path in &stale {
            fs::write(path, b"half").expect("stale");
        }
        fs::write(state.join("confirmed.json"), b"{}").expect("confirmed");
        assert!(files.recover().expect("recover").is_none());
        for path in &stale {
            assert!(!path.exists(), "{} left", path.display());
        }
        assert_eq!(fs::read(files.config_path()).expect("config"), b"v1");
        assert_eq!(fs::read(state.join("confirmed.json")).expect("kept"), b"{}");
    }

    #[test]
    fn avl1_confirm_keeps_the_new_config() {
        let (_dir, files) = setup();
        files.begin(b"v1", b"v2", &record(2)).expect("begin");
        assert_eq!(fs::read(files.config_path()).expect("read"), b"v2");
        let mode = fs::metadata(files.config_path())
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640, "the config file keeps its mode");
        files
            .confirm(&ConfirmedRecord {
                version: 2,
                sha256: sha256_hex(b"v2"),
                signer: "k".into(),
                pushed_by: "op".into(),
                confirmed_at_unix: 1,
                pushed_at_unix: Some(0),
            })
            .expect("confirm");
        assert_eq!(files.recover().expect("recover"), None);
        assert_eq!(fs::read(files.config_path()).expect("read"), b"v2");
        assert_eq!(files.confirmed_record(b"v2").map(|r| r.version), Some(2));
        assert_eq!(
            files.confirmed_record(b"v2").and_then(|r| r.pushed_at_unix),
            Some(0),
            "the push time is kept across restarts"
        );
        assert_eq!(files.confirmed_record(b"v3"), None);
    }

    #[test]
    fn avl1_rollback_and_recovery_restore_the_previous_config() {
        let (_dir, files) = setup();
        files.begin(b"v1", b"v2", &record(2)).expect("begin");
        assert_eq!(files.rollback().expect("rollback"), b"v1");
        assert_eq!(fs::read(files.config_path()).expect("read"), b"v1");
        assert_eq!(files.recover().expect("recover"), None);

        files.begin(b"v1", b"v2", &record(2)).expect("begin");
        let recovery = files
            .recover()
            .expect("recover")
            .expect("something recovered");
        assert_eq!(recovery.pending.map(|p| p.version), Some(2));
        assert_eq!(fs::read(files.config_path()).expect("read"), b"v1");
        assert_eq!(files.recover().expect("recover again"), None);
    }

    #[test]
    fn int2_a_write_back_the_disk_refuses_runs_the_confirmed_config_from_memory_and_keeps_the_marker(
    ) {
        let (dir, files) = setup();
        files.begin(b"v1", b"v2", &record(2)).expect("begin");
        // The write-back cannot happen (as on a full or read-only disk, which root's tests
        // cannot make with permissions): a folder stands where its temp file goes.
        let blocker = dir.path().join(".renkei.toml.tmp");
        fs::create_dir_all(blocker.join("in-the-way")).expect("blocker");
        let recovery = files.recover().expect("recover").expect("recovered");
        assert_eq!(recovery.outcome, RecoveryOutcome::RolledBack);
        let unwritten = recovery
            .unwritten
            .expect("the confirmed config runs from memory");
        assert_eq!(unwritten.bytes, b"v1");
        assert!(
            unwritten.error.contains(".renkei.toml.tmp"),
            "{}",
            unwritten.error
        );
        assert_eq!(fs::read(files.config_path()).expect("read"), b"v2");
        // The marker stays: the next start decides the same way, and with room restores v1.
        let again = files
            .recover()
            .expect("again")
            .expect("still a push to recover");
        assert_eq!(again.unwritten.map(|u| u.bytes), Some(b"v1".to_vec()));
        fs::remove_dir_all(&blocker).expect("room again");
        let restored = files.recover().expect("restore").expect("recovered");
        assert_eq!(restored.outcome, RecoveryOutcome::RolledBack);
        assert_eq!(restored.unwritten, None);
        assert_eq!(fs::read(files.config_path()).expect("read"), b"v1");
        assert_eq!(files.recover().expect("done"), None);
    }

    #[test]
    fn avl1_a_crash_before_the_config_is_replaced_recovers_to_the_same_config() {
        let (_dir, files) = setup();
        // previous.toml and the marker written, the config file not yet replaced.
        fs::create_dir_all(&files.dir).expect("mkdir");
        write_durably(&files.previous_path(), b"v1", 0o600).expect("previous");
        fs::write(files.pending_path(), b"{ torn").expect("torn marker");
        let recovery = files.recover().expect("recover").expect("recovered");
        assert_eq!(recovery.pending, None, "a torn marker still rolls back");
        assert_eq!(fs::read(files.config_path()).expect("read"), b"v1");
    }

    fn confirmed(version: u64, bytes: &[u8]) -> ConfirmedRecord {
        ConfirmedRecord {
            version,
            sha256: sha256_hex(bytes),
            signer: "k".into(),
            pushed_by: "op".into(),
            pushed_at_unix: Some(1),
            confirmed_at_unix: 1,
        }
    }

    /// One file state a crash can leave, and what must be running after recovery.
    struct CrashPoint {
        name: &'static str,
        config: &'static [u8],
        previous: Option<&'static [u8]>,
        marker: Option<&'static [u8]>,
        confirmed: Option<ConfirmedRecord>,
        expect_config: &'static [u8],
        expect_outcome: Option<RecoveryOutcome>,
        expect_signer_of: Option<&'static [u8]>,
    }

    #[test]
    fn avl1_every_crash_point_of_push_confirm_and_rollback_recovers_to_a_confirmed_config() {
        let marker = serde_json::to_vec(&PendingRecord {
            sha256: sha256_hex(b"v2"),
            ..record(2)
        })
        .expect("json");
        let marker: &'static [u8] = Box::leak(marker.into_boxed_slice());
        let v1_confirmed = Some(confirmed(1, b"v1"));
        let points = [
            CrashPoint {
                name: "begin: previous.toml written, no marker yet",
                config: b"v1",
                previous: Some(b"v1"),
                marker: None,
                confirmed: v1_confirmed.clone(),
                expect_config: b"v1",
                expect_outcome: None,
                expect_signer_of: Some(b"v1"),
            },
            CrashPoint {
                name: "begin: marker written, config not yet replaced",
                config: b"v1",
                previous: Some(b"v1"),
                marker: Some(marker),
                confirmed: v1_confirmed.clone(),
                expect_config: b"v1",
                expect_outcome: Some(RecoveryOutcome::NotApplied),
                expect_signer_of: Some(b"v1"),
            },
            CrashPoint {
                name: "begin: marker written, config not yet replaced, v1 installed locally",
                config: b"v1",
                previous: Some(b"v1"),
                marker: Some(marker),
                confirmed: None,
                expect_config: b"v1",
                expect_outcome: Some(RecoveryOutcome::NotApplied),
                expect_signer_of: None,
            },
            CrashPoint {
                name: "pending: config replaced, not confirmed",
                config: b"v2",
                previous: Some(b"v1"),
                marker: Some(marker),
                confirmed: v1_confirmed.clone(),
                expect_config: b"v1",
                expect_outcome: Some(RecoveryOutcome::RolledBack),
                expect_signer_of: Some(b"v1"),
            },
            CrashPoint {
                name: "pending with a torn marker",
                config: b"v2",
                previous: Some(b"v1"),
                marker: Some(b"{ torn"),
                confirmed: v1_confirmed.clone(),
                expect_config: b"v1",
                expect_outcome: Some(RecoveryOutcome::RolledBack),
                expect_signer_of: Some(b"v1"),
            },
            CrashPoint {
                name: "begin with a torn marker, config not yet replaced",
                config: b"v1",
                previous: Some(b"v1"),
                marker: Some(b"{ torn"),
                confirmed: v1_confirmed.clone(),
                expect_config: b"v1",
                expect_outcome: Some(RecoveryOutcome::NotApplied),
                expect_signer_of: Some(b"v1"),
            },
            CrashPoint {
                name: "confirm with a torn marker: confirmed.json written",
                config: b"v2",
                previous: Some(b"v1"),
                marker: Some(b"{ torn"),
                confirmed: Some(confirmed(2, b"v2")),
                expect_config: b"v2",
                expect_outcome: Some(RecoveryOutcome::Confirmed),
                expect_signer_of: Some(b"v2"),
            },
            CrashPoint {
                name: "confirm: confirmed.json written, marker not yet removed",
                config: b"v2",
                previous: Some(b"v1"),
                marker: Some(marker),
                confirmed: Some(confirmed(2, b"v2")),
                expect_config: b"v2",
                expect_outcome: Some(RecoveryOutcome::Confirmed),
                expect_signer_of: Some(b"v2"),
            },
            CrashPoint {
                name: "confirm: done",
                config: b"v2",
                previous: Some(b"v1"),
                marker: None,
                confirmed: Some(confirmed(2, b"v2")),
                expect_config: b"v2",
                expect_outcome: None,
                expect_signer_of: Some(b"v2"),
            },
            CrashPoint {
                name: "rollback: config restored, marker not yet removed",
                config: b"v1",
                previous: Some(b"v1"),
                marker: Some(marker),
                confirmed: v1_confirmed.clone(),
                expect_config: b"v1",
                expect_outcome: Some(RecoveryOutcome::NotApplied),
                expect_signer_of: Some(b"v1"),
            },
        ];
        for point in points {
            let (_dir, files) = setup();
            create_private_dir(&files.dir).expect("mkdir");
            fs::write(files.config_path(), point.config).expect("config");
            if let Some(previous) = point.previous {
                fs::write(files.previous_path(), previous).expect("previous");
            }
            if let Some(marker) = point.marker {
                fs::write(files.pending_path(), marker).expect("marker");
            }
            if let Some(record) = &point.confirmed {
                fs::write(
                    files.confirmed_path(),
                    serde_json::to_vec(record).expect("json"),
                )
                .expect("confirmed");
            }
            let recovery = files.recover().expect(point.name);
            assert_eq!(
                recovery.as_ref().map(|r| r.outcome),
                point.expect_outcome,
                "{}",
                point.name
            );
            assert_eq!(
                fs::read(files.config_path()).expect("read"),
                point.expect_config,
                "{}",
                point.name
            );
            assert!(
                !files.pending_path().exists(),
                "{}: marker left",
                point.name
            );
            assert_eq!(
                files.confirmed_record(point.expect_config).is_some(),
                point.expect_signer_of == Some(point.expect_config),
                "{}: who signed and pushed the running config",
                point.name
            );
            assert_eq!(files.recover().expect("again"), None, "{}", point.name);
        }
    }

    #[test]
    fn avl1_the_push_folder_is_private_and_made_durably() {
        let (_dir, files) = setup();
        files.begin(b"v1", b"v2", &record(2)).expect("begin");
        let mode = fs::metadata(&files.dir).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let state = files.dir.parent().expect("state");
        let mode = fs::metadata(state).expect("meta").permissions().mode();
        assert_eq!(
            mode & 0o777,
            0o700,
            "a state folder made here is private too"
        );
        for file in [files.previous_path(), files.pending_path()] {
            let mode = fs::metadata(&file).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", file.display());
        }
    }
}
