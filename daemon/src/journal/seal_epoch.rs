//! Brings journald's sealing key up to the present before journald flushes the boot's first
//! entries into the sealed journal (`renkei journal-seal`, every boot).
//!
//! journald copies the entries it kept in /run since boot into the persistent journal without
//! moving its sealing key on (systemd 252, upstream issue #17833): the key is where the last
//! boot left it. When a sealing interval ended while the box was off (a night, a power cut
//! whose evolved key never reached the disk), the next seal journald writes is for that old
//! interval and follows entries dated after it, and `journalctl --verify` fails the file from
//! there on ("tag/entry realtime timestamp out of synchronization"). Moving the key on first
//! makes the copied entries fall in the key's own interval.
//!
//! The key is moved by systemd's own code: systemd-journal-remote, asked to seal, loads the
//! same key file (`<journal>/<machine-id>/fss`, shared and written back in place) and, writing
//! one entry dated now into a scratch file, evolves it to now's interval as journald would;
//! the scratch file is removed. Only the key's header and epoch counter are read here, to know
//! whether that is needed and that it happened; no sealing arithmetic is done.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::durable;

/// The first bytes of journald's sealing key file.
const SIGNATURE: &[u8; 8] = b"KSHHRHLP";
/// Offsets in the key file's header (systemd's FSSHeader, little-endian).
const HEADER_SIZE_AT: usize = 48;
const START_USEC_AT: usize = 56;
const INTERVAL_USEC_AT: usize = 64;
const STATE_SIZE_AT: usize = 80;
/// The header as far as renkei reads it.
const HEADER_READ: usize = 88;
/// The epoch counter: the key state's last 8 bytes, big-endian.
const EPOCH_LEN: usize = 8;
/// The scratch journal systemd-journal-remote writes (its name must end in `.journal`).
const SCRATCH_FILE: &str = "sealing-key-advance.journal";

/// Where the sealing key stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyEpoch {
    /// When the key's first interval began (µs since the epoch).
    pub start_usec: u64,
    /// How long each interval lasts (µs).
    pub interval_usec: u64,
    /// The interval the key is in (counted from `start_usec`).
    pub epoch: u64,
}

impl KeyEpoch {
    /// The interval `now` falls in; None before the key's start.
    pub fn epoch_at(&self, now_usec: u64) -> Option<u64> {
        now_usec
            .checked_sub(self.start_usec)
            .map(|since| since / self.interval_usec)
    }
}

/// What [`advance_to_now`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Advance {
    /// The key was already in now's interval.
    Current {
        /// Its interval.
        epoch: u64,
    },
    /// The key was moved on.
    Moved {
        /// Where it stood.
        from: u64,
        /// Where it stands now.
        to: u64,
    },
    /// The clock is behind the key (it went back after running ahead): nothing can be done,
    /// entries are dated before the seals until the clock passes them again.
    ClockBehind {
        /// The key's interval.
        epoch: u64,
        /// Now's interval (None: before the key's start).
        now: Option<u64>,
    },
}

/// Why the key could not be read or moved on.
#[derive(Debug, thiserror::Error)]
pub enum EpochError {
    /// The key file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The key file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The key file is not journald's sealing key.
    #[error("{path}: not journald's sealing key: {reason}")]
    Format {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// systemd-journal-remote did not run or failed.
    #[error("{tool}: {reason}")]
    Tool {
        /// Its path.
        tool: PathBuf,
        /// What happened.
        reason: String,
    },
    /// It ran but the key did not move to now's interval.
    #[error("{path}: the sealing key is still at interval {epoch} after {tool} sealed an entry of interval {goal}")]
    NotMoved {
        /// The key file.
        path: PathBuf,
        /// The tool that should have moved it.
        tool: PathBuf,
        /// Where the key stands.
        epoch: u64,
        /// Where it should stand.
        goal: u64,
    },
}

/// Reads where the sealing key in `path` stands.
pub fn read_key_epoch(path: &Path) -> Result<KeyEpoch, EpochError> {
    let bytes = std::fs::read(path).map_err(|source| EpochError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_key_epoch(&bytes).map_err(|reason| EpochError::Format {
        path: path.to_path_buf(),
        reason,
    })
}

fn parse_key_epoch(bytes: &[u8]) -> Result<KeyEpoch, String> {
    if bytes.len() < HEADER_READ {
        return Err(format!("{} bytes, shorter than its header", bytes.len()));
    }
    if &bytes[..SIGNATURE.len()] != SIGNATURE {
        return Err("wrong signature".into());
    }
    let le = |at: usize| {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(word)
    };
    let header_size = le(HEADER_SIZE_AT);
    let start_usec = le(START_USEC_AT);
    let interval_usec = le(INTERVAL_USEC_AT);
    let state_size = le(STATE_SIZE_AT);
    if start_usec == 0 || interval_usec == 0 {
        return Err("no start or interval".into());
    }
    let end = header_size
        .checked_add(state_size)
        .and_then(|end| usize::try_from(end).ok())
        .filter(|&end| end <= bytes.len() && state_size >= EPOCH_LEN as u64)
        .ok_or_else(|| {
            format!(
                "header {header_size} + state {state_size} bytes do not fit its {} bytes",
                bytes.len()
            )
        })?;
    let mut word = [0u8; EPOCH_LEN];
    word.copy_from_slice(&bytes[end - EPOCH_LEN..end]);
    Ok(KeyEpoch {
        start_usec,
        interval_usec,
        epoch: u64::from_be_bytes(word),
    })
}

/// Moves the sealing key `key_file` on to `now`'s interval with `journal_remote`, writing its
/// scratch journal in `scratch_dir` (removed after), and syncs the key to disk so an old
/// interval's key does not come back after a power cut.
pub fn advance_to_now(
    key_file: &Path,
    journal_remote: &Path,
    scratch_dir: &Path,
    now: SystemTime,
) -> Result<Advance, EpochError> {
    let key = read_key_epoch(key_file)?;
    let now_usec = now
        .duration_since(UNIX_EPOCH)
        .map(|since| u64::try_from(since.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    let goal = match key.epoch_at(now_usec) {
        Some(goal) if goal > key.epoch => goal,
        Some(goal) if goal == key.epoch => return Ok(Advance::Current { epoch: goal }),
        now => {
            return Ok(Advance::ClockBehind {
                epoch: key.epoch,
                now,
            })
        }
    };
    seal_one_entry(journal_remote, scratch_dir, now_usec)?;
    let moved = read_key_epoch(key_file)?;
    if moved.epoch < goal {
        return Err(EpochError::NotMoved {
            path: key_file.to_path_buf(),
            tool: journal_remote.to_path_buf(),
            epoch: moved.epoch,
            goal,
        });
    }
    std::fs::File::open(key_file)
        .and_then(|file| file.sync_all())
        .map_err(|source| EpochError::Read {
            path: key_file.to_path_buf(),
            source,
        })?;
    Ok(Advance::Moved {
        from: key.epoch,
        to: moved.epoch,
    })
}

/// systemd-journal-remote seals one entry dated `now_usec` into a scratch journal, which
/// evolves the machine's sealing key as journald would; the scratch journal is removed.
fn seal_one_entry(
    journal_remote: &Path,
    scratch_dir: &Path,
    now_usec: u64,
) -> Result<(), EpochError> {
    use std::io::Write;
    let tool_error = |reason: String| EpochError::Tool {
        tool: journal_remote.to_path_buf(),
        reason,
    };
    let scratch = scratch_dir.join(SCRATCH_FILE);
    // A scratch file left by an interrupted run would be appended to: start afresh.
    durable::remove_durably(&scratch).map_err(|e| tool_error(e.to_string()))?;
    let mut child = Command::new(journal_remote)
        .arg("--seal=yes")
        .arg(format!("--output={}", scratch.display()))
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| tool_error(e.to_string()))?;
    let entry = format!(
        "__REALTIME_TIMESTAMP={now_usec}\nMESSAGE=renkei: the sealing key moved on to now\n\n"
    );
    let written = child
        .stdin
        .take()
        .map(|mut stdin| stdin.write_all(entry.as_bytes()))
        .unwrap_or(Ok(()));
    let output = child
        .wait_with_output()
        .map_err(|e| tool_error(e.to_string()))?;
    let removed = durable::remove_durably(&scratch);
    if !output.status.success() {
        return Err(tool_error(format!(
            "{}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    written.map_err(|e| tool_error(format!("writing the entry: {e}")))?;
    removed.map_err(|e| tool_error(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key file laid out as journald's (header, then a 394-byte state ending in the epoch);
    /// the real one is made and moved on by journalctl and systemd-journal-remote in the lab
    /// test `log4_a_box_off_across_a_seal_interval_...` (tests/tests/monitoring.rs).
    fn key_file(start_usec: u64, interval: u64, epoch: u64) -> Vec<u8> {
        let state = 394usize;
        let mut bytes = vec![0u8; HEADER_READ + state];
        bytes[..8].copy_from_slice(SIGNATURE);
        bytes[HEADER_SIZE_AT..HEADER_SIZE_AT + 8]
            .copy_from_slice(&(HEADER_READ as u64).to_le_bytes());
        bytes[START_USEC_AT..START_USEC_AT + 8].copy_from_slice(&start_usec.to_le_bytes());
        bytes[INTERVAL_USEC_AT..INTERVAL_USEC_AT + 8].copy_from_slice(&interval.to_le_bytes());
        bytes[STATE_SIZE_AT..STATE_SIZE_AT + 8].copy_from_slice(&(state as u64).to_le_bytes());
        let end = bytes.len();
        bytes[end - 8..].copy_from_slice(&epoch.to_be_bytes());
        bytes
    }

    #[test]
    fn log4_the_keys_interval_and_now_s_are_read_from_journald_s_layout() {
        let start = 6_000_000 * 300_000_000;
        let key = parse_key_epoch(&key_file(start, 300_000_000, 7)).expect("key");
        assert_eq!(key.start_usec, start);
        assert_eq!(key.interval_usec, 300_000_000);
        assert_eq!(key.epoch, 7);
        assert_eq!(key.epoch_at(key.start_usec - 1), None);
        assert_eq!(key.epoch_at(key.start_usec), Some(0));
        assert_eq!(key.epoch_at(key.start_usec + 7 * 300_000_000 + 1), Some(7));
    }

    #[test]
    fn log4_a_damaged_key_file_is_an_error_naming_what_is_wrong() {
        let good = key_file(6_000_000 * 300_000_000, 300_000_000, 7);
        assert!(parse_key_epoch(&good[..40])
            .expect_err("short")
            .contains("shorter"));
        let mut bad = good.clone();
        bad[0] = b'X';
        assert!(parse_key_epoch(&bad)
            .expect_err("signature")
            .contains("signature"));
        let mut bad = good.clone();
        bad[STATE_SIZE_AT..STATE_SIZE_AT + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(parse_key_epoch(&bad)
            .expect_err("state")
            .contains("do not fit"));
        assert!(parse_key_epoch(&good[..good.len() - 1]).is_err());
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fss");
        let error = read_key_epoch(&path).expect_err("missing");
        assert!(error.to_string().contains("fss"), "{error}");
    }

    #[test]
    fn log4_a_key_in_now_s_interval_or_ahead_of_the_clock_is_left_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fss");
        let interval = 300_000_000u64;
        let start = 6_000_000 * interval;
        std::fs::write(&path, key_file(start, interval, 7)).expect("key");
        let at = |epoch: u64| {
            UNIX_EPOCH + std::time::Duration::from_micros(start + epoch * interval + 5)
        };
        // No tool runs in either case (a missing one would be an error).
        let tool = dir.path().join("no-such-tool");
        assert_eq!(
            advance_to_now(&path, &tool, dir.path(), at(7)).expect("current"),
            Advance::Current { epoch: 7 }
        );
        assert_eq!(
            advance_to_now(&path, &tool, dir.path(), at(6)).expect("behind"),
            Advance::ClockBehind {
                epoch: 7,
                now: Some(6)
            }
        );
        // A key behind now needs the tool: its failure is an error naming it.
        let error = advance_to_now(&path, &tool, dir.path(), at(9)).expect_err("no tool");
        assert!(error.to_string().contains("no-such-tool"), "{error}");
    }
}
