//! The operator's preferred hub of the box's hub group (AVL-4), kept in the state directory.
//!
//! The operator drains a data centre's hub before its maintenance with `prefer-hub`; the box
//! must not wander back to it because the box's daemon restarted meanwhile (an update, a power
//! cut). So the preference is written durably the moment it is set, read back at start, and
//! removed when the operator clears it. The file is the daemon's own but is read as untrusted:
//! a damaged one is ignored with a warning, and a name that is no longer a member of the group
//! (a pushed config changed the group) is ignored, not obeyed, until the operator sets another.
//! It sits here, below every carrier, so any carrier's hub group can keep it.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};

use crate::durable::{self, FileError};

/// File name in the state directory.
pub const FILE_NAME: &str = "hub-preference.json";
/// Mode of the file: the daemon's own.
const FILE_MODE: u32 = 0o600;
/// Largest file read back: a hub name is a peer name, far shorter.
const MAX_FILE_BYTES: u64 = 4096;

/// What is written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Saved {
    /// The preferred hub's peer name.
    hub: String,
}

/// Why the file could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum PreferenceFileError {
    /// Reading failed for another reason than its absence.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Larger than any preference this module writes.
    #[error("{path}: {bytes} bytes, more than the {MAX_FILE_BYTES} a preference takes")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        bytes: u64,
    },
    /// Not the JSON this module writes.
    #[error("{path}: line {line}, column {column}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the parser said.
        message: String,
    },
}

/// The stored preference names a hub that is not a member of the running group.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the operator's preferred hub {hub:?} (from {path}) is not in the hub group; ignored until the operator sets another")]
pub struct NotInGroup {
    /// The stored name.
    pub hub: String,
    /// The file it came from.
    pub path: PathBuf,
}

/// The operator's preferred hub: in memory for the running group, on disk for the next start.
#[derive(Debug)]
pub struct HubPreference {
    path: PathBuf,
    current: Mutex<Option<String>>,
}

impl HubPreference {
    /// The preference kept in `state_dir`, read back now. A missing file is no preference; a
    /// damaged one is no preference and the error (the caller logs it).
    pub fn open(state_dir: &Path) -> (Self, Option<PreferenceFileError>) {
        let path = state_dir.join(FILE_NAME);
        let (current, error) = match load(&path) {
            Ok(current) => (current, None),
            Err(error) => (None, Some(error)),
        };
        (
            HubPreference {
                path,
                current: Mutex::new(current),
            },
            error,
        )
    }

    fn lock(&self) -> MutexGuard<'_, Option<String>> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The stored preference, member of the group or not.
    pub fn get(&self) -> Option<String> {
        self.lock().clone()
    }

    /// The preference for a group of `hubs`: `Ok(None)` without one, an error when it names a
    /// hub that is not a member (the caller logs it and starts as without a preference).
    pub fn for_group(&self, hubs: &[String]) -> Result<Option<String>, NotInGroup> {
        match self.get() {
            Some(hub) if !hubs.contains(&hub) => Err(NotInGroup {
                hub,
                path: self.path.clone(),
            }),
            preferred => Ok(preferred),
        }
    }

    /// Sets (`Some`) or clears (`None`) the preference: in memory at once, then durably on
    /// disk (written whole, or removed). A failed write leaves the new preference in force
    /// until the daemon restarts; the error says which file.
    pub fn set(&self, hub: Option<&str>) -> Result<(), FileError> {
        *self.lock() = hub.map(str::to_string);
        match hub {
            Some(hub) => {
                let bytes = serde_json::to_vec(&Saved {
                    hub: hub.to_string(),
                })
                .map_err(|e| durable::at(&self.path)(e.into()))?;
                let dir = durable::parent(&self.path);
                // The state directory is systemd's `StateDirectory=`; a daemon started by
                // hand creates it.
                durable::ensure_private_dir(dir)?;
                durable::write_durably(&self.path, &bytes, FILE_MODE)
            }
            None => durable::remove_durably(&self.path),
        }
    }
}

/// Reads the preference in `path`; a missing file is none.
fn load(path: &Path) -> Result<Option<String>, PreferenceFileError> {
    let read_error = |source| PreferenceFileError::Read {
        path: path.to_path_buf(),
        source,
    };
    let bytes = match std::fs::metadata(path) {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_error(e)),
    };
    if bytes > MAX_FILE_BYTES {
        return Err(PreferenceFileError::TooLarge {
            path: path.to_path_buf(),
            bytes,
        });
    }
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_error(e)),
    };
    let saved: Saved = serde_json::from_str(&text).map_err(|e| PreferenceFileError::Parse {
        path: path.to_path_buf(),
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })?;
    Ok(Some(saved.hub))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group() -> Vec<String> {
        vec!["dc".to_string(), "dc-backup".to_string()]
    }

    #[test]
    fn avl4_the_preference_survives_a_restart_until_cleared() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        let (first, error) = HubPreference::open(&state);
        assert!(error.is_none(), "no file is no error: {error:?}");
        assert_eq!(first.for_group(&group()), Ok(None));
        first.set(Some("dc-backup")).expect("set");
        assert_eq!(first.get().as_deref(), Some("dc-backup"));
        // A new daemon reads it back.
        let (second, error) = HubPreference::open(&state);
        assert!(error.is_none(), "{error:?}");
        assert_eq!(
            second.for_group(&group()),
            Ok(Some("dc-backup".to_string()))
        );
        let path = state.join(FILE_NAME);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).expect("written").permissions(),
        );
        assert_eq!(mode & 0o777, FILE_MODE);
        // Cleared: gone from disk, and the next start has none.
        second.set(None).expect("clear");
        assert!(!path.exists());
        let (third, _) = HubPreference::open(&state);
        assert_eq!(third.get(), None);
        // Clearing twice is fine.
        third.set(None).expect("clear again");
    }

    #[test]
    fn avl4_a_preference_for_a_hub_no_longer_in_the_group_is_ignored_not_forgotten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (preference, _) = HubPreference::open(dir.path());
        preference.set(Some("dc-kyoto")).expect("set");
        let (reread, _) = HubPreference::open(dir.path());
        let err = reread.for_group(&group()).expect_err("not a member");
        assert_eq!(err.hub, "dc-kyoto");
        assert!(
            err.to_string().contains(FILE_NAME) && err.to_string().contains("ignored"),
            "{err}"
        );
        // A later config with that hub again finds it.
        assert_eq!(
            reread.for_group(&["dc-kyoto".to_string()]),
            Ok(Some("dc-kyoto".to_string()))
        );
    }

    #[test]
    fn avl4_a_damaged_preference_file_is_no_preference_and_an_error_naming_the_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(FILE_NAME);
        for (text, expected) in [
            ("{\"hub\":", "line 1"),
            ("{\"hub\":\"dc\",\"more\":1}", "unknown field"),
            ("[]", "line 1"),
        ] {
            std::fs::write(&path, text).expect("write");
            let (preference, error) = HubPreference::open(dir.path());
            assert_eq!(preference.get(), None, "{text}");
            let error = error.map(|e| e.to_string()).unwrap_or_default();
            assert!(
                error.contains(FILE_NAME) && error.contains(expected),
                "{text}: {error}"
            );
        }
        std::fs::write(&path, vec![b' '; MAX_FILE_BYTES as usize + 1]).expect("write");
        let (preference, error) = HubPreference::open(dir.path());
        assert_eq!(preference.get(), None);
        assert!(
            matches!(error, Some(PreferenceFileError::TooLarge { .. })),
            "{error:?}"
        );
    }
}
