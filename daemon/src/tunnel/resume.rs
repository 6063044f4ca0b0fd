//! Where the passive peers were, remembered across a restart of the daemon.
//!
//! A hub never initiates: it learns each facility's endpoint from the facility's packets. After
//! the hub's daemon restarts it knows no endpoint, and the facilities keep their old sessions
//! as "up" until their own liveness check or boringtun's rekey on unanswered data notices
//! (15 s to a minute). Meanwhile every proxied connection through the hub fails. So the data
//! plane writes down, every few seconds, the endpoint of each passive peer it heard from
//! recently; a restarted daemon greets those peers with one handshake at once (`Event::Resume`)
//! and the chain is back within a round trip. Peers silent for longer than `RESUME_WINDOW`
//! (an idle on-demand clinic) are not woken.
//!
//! The file is the daemon's own, in its state directory, but it is still read as untrusted: a
//! damaged one is ignored with a warning, never fatal.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::dataplane::DataPlane;
use super::policy::Mode;
use crate::durable;
use crate::keys;

/// File name in the state directory.
pub const FILE_NAME: &str = "peer-endpoints.json";
/// A peer heard from within this long before the file was written is greeted after a restart.
/// Longer than the always-on keepalive (25 s) and the check-in rhythm's active part, shorter
/// than an on-demand idle timeout is usually set.
pub const RESUME_WINDOW: Duration = Duration::from_secs(120);
/// How often the data plane looks for changes to write down.
const SAVE_INTERVAL: Duration = Duration::from_secs(5);
/// "Last heard from" is kept at this precision, so steady traffic rewrites the file at most
/// this often.
const SEEN_PRECISION_SECS: u64 = 30;

/// What is written: one entry per passive peer that has an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Saved {
    peers: Vec<SavedPeer>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SavedPeer {
    /// Base64 public key: the identity, so that a renamed peer is still found.
    public_key: String,
    endpoint: SocketAddr,
    /// Unix seconds, rounded down to `SEEN_PRECISION_SECS`.
    last_heard_unix: u64,
}

/// A peer to greet after a start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RememberedPeer {
    /// Where it was.
    pub endpoint: SocketAddr,
    /// When it was last heard from (Unix seconds, coarse): carried on into the next file, so
    /// that a restart soon after a restart still knows the peers not heard from in between.
    pub last_heard_unix: u64,
}

/// The peers to greet after a start, by public key.
pub type Remembered = HashMap<[u8; 32], RememberedPeer>;

/// Why the file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    /// Reading failed for another reason than its absence.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
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
    /// An entry whose key is not a WireGuard public key.
    #[error("{path}: peers[{index}].public_key: {source}")]
    Key {
        /// The file.
        path: PathBuf,
        /// Index of the entry.
        index: usize,
        /// Why the key is not one.
        source: keys::KeyError,
    },
}

/// The file for a state directory.
pub fn path_in(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE_NAME)
}

/// Reads the peers heard from within `RESUME_WINDOW` before `now`. A missing file is an
/// empty answer (first start); a damaged one is an error the caller logs and ignores.
pub fn load(path: &Path, now: SystemTime) -> Result<Remembered, ResumeError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Remembered::new()),
        Err(source) => {
            return Err(ResumeError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let saved: Saved = serde_json::from_str(&text).map_err(|e| ResumeError::Parse {
        path: path.to_path_buf(),
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })?;
    let now_unix = unix_secs(now);
    let mut remembered = Remembered::new();
    for (index, peer) in saved.peers.into_iter().enumerate() {
        let key = keys::decode_key(&peer.public_key).map_err(|source| ResumeError::Key {
            path: path.to_path_buf(),
            index,
            source,
        })?;
        // Precision is lost when rounding down: count the entry as heard at the end of its slot.
        let heard = peer.last_heard_unix.saturating_add(SEEN_PRECISION_SECS);
        if now_unix.saturating_sub(heard) <= RESUME_WINDOW.as_secs() {
            remembered.insert(
                key,
                RememberedPeer {
                    endpoint: peer.endpoint,
                    last_heard_unix: peer.last_heard_unix,
                },
            );
        }
    }
    Ok(remembered)
}

/// Writes down the passive peers' endpoints while the data plane runs: at once when one
/// changes (a peer connected or roamed), and every `SAVE_INTERVAL` when what was heard changed.
/// `remembered` is what the start read: those peers stay in the file until heard from again
/// or out of the window, even if this run never hears from them.
pub(crate) async fn remember(plane: Arc<DataPlane>, path: PathBuf, remembered: Remembered) {
    let mut written: Option<Saved> = None;
    let mut rx_seen: Vec<u64> = vec![0; plane.peers.len()];
    let mut heard: Vec<Option<u64>> = plane
        .peers
        .iter()
        .map(|p| remembered.get(&p.public_key).map(|r| r.last_heard_unix))
        .collect();
    let mut interval = tokio::time::interval(SAVE_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warned = false;
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = plane.endpoint_changed.notified() => {}
        }
        let now = unix_secs(SystemTime::now());
        let mut saved = Saved { peers: Vec::new() };
        for (i, peer) in plane.peers.iter().enumerate() {
            let (mode, endpoint) = {
                let state = peer.lock();
                (state.policy.mode(), state.endpoint)
            };
            let rx = peer.counters.rx_packets.load(Ordering::Relaxed);
            if rx != rx_seen[i] {
                rx_seen[i] = rx;
                heard[i] = Some(now - now % SEEN_PRECISION_SECS);
            }
            // A standby hub of a facility's group is passive too, but it is no peer that
            // greets the box: the group probes it, and a greeting would only add events.
            if peer.is_standby() {
                continue;
            }
            if let (Mode::Passive, Some(endpoint), Some(last_heard_unix)) =
                (mode, endpoint, heard[i])
            {
                saved.peers.push(SavedPeer {
                    public_key: keys::encode_key(&peer.public_key),
                    endpoint,
                    last_heard_unix,
                });
            }
        }
        if written.as_ref() == Some(&saved) || (written.is_none() && saved.peers.is_empty()) {
            continue;
        }
        let bytes = match serde_json::to_vec_pretty(&saved) {
            Ok(bytes) => bytes,
            Err(_) => continue,
        };
        let target = path.clone();
        let result = tokio::task::spawn_blocking(move || {
            // The state directory is systemd's `StateDirectory=`; a daemon started by hand
            // creates it.
            if let Some(dir) = target.parent() {
                durable::create_private_dir(dir).map_err(durable::at(dir))?;
            }
            durable::write_durably(&target, &bytes, 0o600)
        })
        .await;
        match result {
            Ok(Ok(())) => {
                written = Some(saved);
                warned = false;
            }
            Ok(Err(e)) if !warned => {
                warned = true;
                tracing::warn!(error = %e, "cannot remember peer endpoints; a restart will wait for the peers to reconnect");
            }
            _ => {}
        }
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=";

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = path_in(dir);
        std::fs::write(&path, text).expect("write test file");
        path
    }

    fn entry(last_heard_unix: u64) -> String {
        format!(
            r#"{{"peers":[{{"public_key":"{KEY}","endpoint":"198.18.1.2:51820","last_heard_unix":{last_heard_unix}}}]}}"#
        )
    }

    #[test]
    fn a_missing_file_remembers_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let got = load(&path_in(dir.path()), SystemTime::now()).expect("no file is fine");
        assert!(got.is_empty());
    }

    #[test]
    fn only_peers_heard_from_recently_are_greeted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let key = keys::decode_key(KEY).expect("test key");
        let recent = write(dir.path(), &entry(1_000_000 - 60));
        let got = load(&recent, now).expect("valid file");
        assert_eq!(
            got.get(&key),
            Some(&RememberedPeer {
                endpoint: "198.18.1.2:51820".parse().expect("addr"),
                last_heard_unix: 1_000_000 - 60
            })
        );
        let old = write(dir.path(), &entry(1_000_000 - 600));
        assert!(load(&old, now).expect("valid file").is_empty());
    }

    #[test]
    fn a_damaged_file_is_an_error_naming_the_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = SystemTime::now();
        let truncated = write(dir.path(), "{\"peers\":[{\"public_key\":");
        let e = load(&truncated, now).expect_err("truncated").to_string();
        assert!(e.contains(FILE_NAME) && e.contains("line 1"), "{e}");
        let bad_key = write(
            dir.path(),
            r#"{"peers":[{"public_key":"nope","endpoint":"198.18.1.2:1","last_heard_unix":1}]}"#,
        );
        let e = load(&bad_key, now).expect_err("bad key").to_string();
        assert!(e.contains("peers[0].public_key"), "{e}");
        let extra = write(dir.path(), r#"{"peers":[],"more":1}"#);
        assert!(load(&extra, now).is_err());
    }
}
