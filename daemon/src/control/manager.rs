//! The confirm window (AVL-1): which config is confirmed, which one is pending, and the
//! transitions between them, each written durably through [`ConfigFiles`] before it counts.
//!
//! The manager decides; the supervisor applies. Every transition is logged with version,
//! signer and time (LOG-2) by the caller, which also holds the event log.

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use super::persist::{sha256_hex, ConfigFiles, ConfirmedRecord, PendingRecord, PersistError};
use super::{check_push, Accepted, Refusal, Refused};
use crate::config::{Config, Files};
use crate::state::config_snapshot::ConfigSnapshot;
use crate::state::moment::Moment;

/// A config with what is known of where it came from.
#[derive(Debug, Clone)]
pub struct Version {
    /// The parsed config.
    pub config: Config,
    /// Its bytes as on disk.
    pub bytes: Vec<u8>,
    /// Fingerprint of the signing key; `None` for a config installed locally.
    pub signer: Option<String>,
    /// The operator identity that pushed it.
    pub pushed_by: Option<String>,
    /// When it was pushed (unix seconds), when known.
    pub pushed_at_unix: Option<u64>,
    /// When it was applied or confirmed (unix seconds), when known.
    pub since_unix: Option<u64>,
}

/// A pushed config inside its confirm window.
#[derive(Debug, Clone)]
struct Pending {
    version: Version,
    record: PendingRecord,
    /// Set again when the apply finishes (see [`Manager::mark_applied`]); the one from
    /// [`Manager::begin`] only stands if the apply never does.
    deadline: Instant,
    /// The confirm window: `confirm_timeout_secs` of the pending config.
    window: Duration,
    /// When the running parts finished applying it; `None` while the apply is under way.
    applied: Option<Applied>,
    /// Where a management request came from that arrived after the apply: the operator can
    /// still reach the box, through the peer responsible for that address.
    reached_from: Option<IpAddr>,
}

/// The moment an apply finished, on both clocks: auto_confirm compares it with requests and
/// handshakes on the monotonic clock; the wall clock is what the record shows.
pub type Applied = Moment;

/// What auto_confirm still needs to see before it confirms: the link that carried the
/// operator's request proved itself after the apply (for WireGuard, a completed handshake).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutoConfirm {
    /// The operator's address; the carrier finds the link responsible for it.
    pub reached_from: IpAddr,
    /// When the apply finished.
    pub applied: Applied,
}

/// A rollback whose files could not be restored; the pending config is dropped all the same.
#[derive(Debug, thiserror::Error)]
#[error("the rollback did not finish on disk ({source}); the next start finishes it")]
pub struct RollbackNotWritten {
    /// The pending config dropped.
    pub record: Box<PendingRecord>,
    /// What the disk said.
    pub source: PersistError,
}

/// Why a confirm was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfirmError {
    /// Nothing is pending.
    #[error("no config awaits confirmation; running version {0} is confirmed")]
    NothingPending(u64),
    /// The operator confirmed another version than the pending one.
    #[error("version {asked} is not the pending one ({pending})")]
    WrongVersion {
        /// The version in the request.
        asked: u64,
        /// The version pending.
        pending: u64,
    },
    /// The confirm could not be written.
    #[error(transparent)]
    Persist(#[from] PersistError),
}

impl ConfirmError {
    /// The HTTP status the management API answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            ConfirmError::NothingPending(_) | ConfirmError::WrongVersion { .. } => 409,
            ConfirmError::Persist(_) => 500,
        }
    }
}

/// The confirmed config and the pending one, if any.
#[derive(Debug)]
pub struct Manager {
    files: ConfigFiles,
    confirmed: Version,
    pending: Option<Pending>,
}

/// Seconds since the epoch now.
pub fn unix_now() -> u64 {
    unix_secs(SystemTime::now())
}

/// Seconds since the epoch at `time`.
fn unix_secs(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Manager {
    /// Starts from the config the daemon loaded (after [`ConfigFiles::recover`]).
    pub fn new(files: ConfigFiles, config: Config, bytes: Vec<u8>) -> Self {
        let record = files.confirmed_record(&bytes);
        Manager {
            confirmed: Version {
                config,
                bytes,
                signer: record.as_ref().map(|r| r.signer.clone()),
                pushed_by: record.as_ref().map(|r| r.pushed_by.clone()),
                pushed_at_unix: record.as_ref().and_then(|r| r.pushed_at_unix),
                since_unix: record.as_ref().map(|r| r.confirmed_at_unix),
            },
            files,
            pending: None,
        }
    }

    /// The config the box runs now (the pending one inside a confirm window).
    pub fn running(&self) -> &Config {
        self.pending
            .as_ref()
            .map_or(&self.confirmed.config, |p| &p.version.config)
    }

    /// The config file.
    pub fn config_path(&self) -> &Path {
        self.files.config_path()
    }

    /// Every check of a push; nothing changes. While a config is pending every push is
    /// refused; the checks still run against the confirmed config, so the refusal names the
    /// push's version and signer when they are known. `files`: how far the box's files are
    /// checked for the pushed config (the supervisor passes what `run` checks at start).
    pub fn check(
        &self,
        bytes: &[u8],
        signature: Option<&str>,
        files: Files<'_>,
    ) -> Result<Accepted, Refused> {
        let checked = check_push(
            &self.confirmed.config,
            self.files.config_path(),
            bytes,
            signature,
            files,
        );
        let Some(pending) = &self.pending else {
            return checked;
        };
        let (version, signer) = match checked {
            Ok(accepted) => (Some(accepted.config.meta.version), Some(accepted.signer)),
            Err(refused) => (refused.version, refused.signer),
        };
        Err(Refused {
            reason: Refusal::Pending(pending.record.version),
            version,
            signer,
        })
    }

    /// Writes the accepted config as pending; the caller applies it next. The confirm window
    /// is the new config's `confirm_timeout_secs`, counted from [`Manager::mark_applied`]; the
    /// record's times (also in `pending.json`) are provisional until then.
    pub fn begin(
        &mut self,
        accepted: Accepted,
        pushed_by: &str,
    ) -> Result<PendingRecord, PersistError> {
        let timeout = accepted
            .config
            .management
            .as_ref()
            .map_or(120, |m| m.confirm_timeout_secs);
        let now = unix_now();
        let record = PendingRecord {
            version: accepted.config.meta.version,
            previous_version: self.confirmed.config.meta.version,
            sha256: sha256_hex(&accepted.bytes),
            signer: accepted.signer.clone(),
            pushed_by: pushed_by.to_string(),
            applied_at_unix: now,
            confirm_deadline_unix: now + timeout,
        };
        self.files
            .begin(&self.confirmed.bytes, &accepted.bytes, &record)?;
        self.pending = Some(Pending {
            version: Version {
                config: accepted.config,
                bytes: accepted.bytes,
                signer: Some(accepted.signer),
                pushed_by: Some(pushed_by.to_string()),
                pushed_at_unix: Some(now),
                since_unix: Some(now),
            },
            record: record.clone(),
            deadline: Instant::now() + Duration::from_secs(timeout),
            window: Duration::from_secs(timeout),
            applied: None,
            reached_from: None,
        });
        Ok(record)
    }

    /// Makes the pending config the confirmed one. `version`, when given, must be the pending
    /// one (so a late confirm never confirms a different push).
    pub fn confirm(&mut self, version: Option<u64>) -> Result<Version, ConfirmError> {
        let Some(pending) = &self.pending else {
            return Err(ConfirmError::NothingPending(
                self.confirmed.config.meta.version,
            ));
        };
        if let Some(asked) = version.filter(|v| *v != pending.record.version) {
            return Err(ConfirmError::WrongVersion {
                asked,
                pending: pending.record.version,
            });
        }
        let now = unix_now();
        self.files.confirm(&ConfirmedRecord {
            version: pending.record.version,
            sha256: pending.record.sha256.clone(),
            signer: pending.record.signer.clone(),
            pushed_by: pending.record.pushed_by.clone(),
            confirmed_at_unix: now,
            pushed_at_unix: pending.version.pushed_at_unix,
        })?;
        let Some(pending) = self.pending.take() else {
            return Err(ConfirmError::NothingPending(
                self.confirmed.config.meta.version,
            ));
        };
        self.confirmed = Version {
            since_unix: Some(now),
            ..pending.version
        };
        Ok(self.confirmed.clone())
    }

    /// Restores the confirmed config on disk; returns the pending record dropped. The caller
    /// applies [`Manager::running`] afterwards. The pending config is dropped even when its
    /// files cannot be restored (a full or read-only disk): the box must run the confirmed
    /// config all the same, and the marker left on disk makes the next start restore the file.
    pub fn rollback(&mut self) -> Result<Option<PendingRecord>, RollbackNotWritten> {
        let Some(pending) = self.pending.take() else {
            return Ok(None);
        };
        match self.files.rollback() {
            Ok(_) => Ok(Some(pending.record)),
            Err(source) => Err(RollbackNotWritten {
                record: Box::new(pending.record),
                source,
            }),
        }
    }

    /// When the pending config rolls back, if one is pending.
    pub fn deadline(&self) -> Option<Instant> {
        self.pending.as_ref().map(|p| p.deadline)
    }

    /// The pending config's record.
    pub fn pending(&self) -> Option<&PendingRecord> {
        self.pending.as_ref().map(|p| &p.record)
    }

    /// Notes that the running parts now run the pending config (auto_confirm counts only what
    /// happens after this), and starts the confirm window from here: a slow apply must not
    /// eat into the operator's time to check the box and confirm.
    pub fn mark_applied(&mut self, applied: Applied) {
        if let Some(pending) = &mut self.pending {
            let at = unix_secs(applied.wall);
            pending.applied = Some(applied);
            pending.deadline = Instant::from_std(applied.instant) + pending.window;
            pending.record.applied_at_unix = at;
            pending.record.confirm_deadline_unix = at + pending.window.as_secs();
            pending.version.since_unix = Some(at);
        }
    }

    /// Notes a management request from `address` whose connection was accepted at `arrived`:
    /// it counts as the operator reaching the box again only if it arrived after the apply (a
    /// request that came in during the apply proves nothing about the new config).
    pub fn reached_again(&mut self, address: IpAddr, arrived: std::time::Instant) {
        if let Some(pending) = &mut self.pending {
            if pending.applied.is_some_and(|a| arrived > a.instant) {
                pending.reached_from = Some(address);
            }
        }
    }

    /// When the pending config asked for `auto_confirm` and the operator has reached the box
    /// again after the apply: what the caller must still check (the link's fresh proof) before it
    /// confirms.
    pub fn auto_confirm_ready(&self) -> Option<AutoConfirm> {
        let pending = self.pending.as_ref()?;
        let wanted = pending
            .version
            .config
            .management
            .as_ref()
            .is_some_and(|m| m.auto_confirm);
        Some(AutoConfirm {
            reached_from: pending.reached_from.filter(|_| wanted)?,
            applied: pending.applied?,
        })
    }

    /// The state for the API and the status page.
    pub fn snapshot(&self) -> ConfigSnapshot {
        let (version, state, pending) = match &self.pending {
            Some(p) => (&p.version, "pending", Some(&p.record)),
            None => (&self.confirmed, "confirmed", None),
        };
        ConfigSnapshot {
            version: version.config.meta.version,
            sha256: sha256_hex(&version.bytes),
            description: version.config.meta.description.clone(),
            signer: version.signer.clone(),
            pushed_by: version.pushed_by.clone(),
            pushed_at_unix: version.pushed_at_unix,
            since_unix: version.since_unix,
            state,
            previous_version: pending.map(|p| p.previous_version),
            confirm_deadline_unix: pending.map(|p| p.confirm_deadline_unix),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::super::fixture::Fixture;
    use super::*;

    const OPERATOR: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 19, 0, 1));

    /// A manager running `v1` from the fixture's config file.
    fn manager(f: &Fixture, v1: &str) -> Manager {
        std::fs::write(f.config_path(), v1).expect("write config");
        let config = f.config(v1);
        let files = ConfigFiles::new(&f.config_path(), &config.paths.state_dir);
        Manager::new(files, config, v1.as_bytes().to_vec())
    }

    fn push(f: &Fixture, m: &Manager, text: &str) -> Result<Accepted, Refused> {
        m.check(
            text.as_bytes(),
            Some(&f.key.sign(text.as_bytes())),
            Files::Read,
        )
    }

    #[test]
    fn avl1_push_confirm_and_rollback_move_between_confirmed_and_pending() {
        let f = Fixture::new();
        let v1 = f.text(1, "");
        let mut m = manager(&f, &v1);
        assert_eq!(m.snapshot().state, "confirmed");
        assert_eq!(
            m.snapshot().signer,
            None,
            "a locally installed config has no signer"
        );
        assert_eq!(m.deadline(), None);
        assert!(matches!(
            m.confirm(None),
            Err(ConfirmError::NothingPending(1))
        ));
        assert_eq!(m.rollback().expect("rollback"), None);

        // v2 pending: the box runs it, with a deadline; a further push is refused as pending
        // but still named by version and signer.
        let v2 = f.text(2, "");
        let accepted = push(&f, &m, &v2).expect("v2");
        m.begin(accepted, "operator.renkei.test").expect("begin");
        assert_eq!(m.running().meta.version, 2);
        assert!(m.deadline().is_some());
        let snapshot = m.snapshot();
        assert_eq!(
            (snapshot.state, snapshot.previous_version),
            ("pending", Some(1))
        );
        assert_eq!(snapshot.pushed_by.as_deref(), Some("operator.renkei.test"));
        assert_eq!(std::fs::read_to_string(f.config_path()).expect("read"), v2);
        let refused = push(&f, &m, &f.text(3, "")).expect_err("pending");
        assert_eq!(refused.reason.code(), "pending");
        assert_eq!(refused.version, Some(3));
        assert_eq!(
            refused.signer.as_deref(),
            Some(f.key.public().fingerprint())
        );

        // Rolled back: v1 runs and is on disk again; a confirm now finds nothing.
        let dropped = m.rollback().expect("rollback").expect("a pending record");
        assert_eq!(dropped.version, 2);
        assert_eq!(m.running().meta.version, 1);
        assert_eq!(m.snapshot().state, "confirmed");
        assert_eq!(std::fs::read_to_string(f.config_path()).expect("read"), v1);
        assert!(matches!(
            m.confirm(Some(2)),
            Err(ConfirmError::NothingPending(1))
        ));

        // v2 again, confirmed: a wrong version is refused, the right one sticks with its
        // signer and pusher, also for a manager started afresh from the files.
        let accepted = push(&f, &m, &v2).expect("v2 again");
        m.begin(accepted, "operator.renkei.test").expect("begin");
        assert!(matches!(
            m.confirm(Some(3)),
            Err(ConfirmError::WrongVersion {
                asked: 3,
                pending: 2
            })
        ));
        let confirmed = m.confirm(Some(2)).expect("confirm");
        assert_eq!(confirmed.config.meta.version, 2);
        assert_eq!(m.snapshot().state, "confirmed");
        assert_eq!(m.deadline(), None);
        let restarted = manager(&f, &v2);
        assert_eq!(
            restarted.snapshot().signer.as_deref(),
            Some(f.key.public().fingerprint())
        );
        assert_eq!(
            restarted.snapshot().pushed_by.as_deref(),
            Some("operator.renkei.test")
        );
        let refused = push(&f, &m, &v2).expect_err("replay");
        assert_eq!(refused.reason.code(), "not_newer");
    }

    #[test]
    fn avl1_auto_confirm_counts_only_requests_that_arrived_after_the_apply() {
        let f = Fixture::new();
        let mut m = manager(&f, &f.text(1, ""));
        let v2 = f.text(2, "auto_confirm = true\n");
        let accepted = push(&f, &m, &v2).expect("v2");
        let before_apply = std::time::Instant::now();
        m.begin(accepted, "operator.renkei.test").expect("begin");
        // A request during the apply (before it finished) proves nothing.
        m.reached_again(OPERATOR, before_apply);
        assert_eq!(m.auto_confirm_ready(), None);
        let applied = Applied::now();
        m.mark_applied(applied);
        m.reached_again(OPERATOR, before_apply);
        assert_eq!(m.auto_confirm_ready(), None, "arrived before the apply");
        m.reached_again(OPERATOR, applied.instant + Duration::from_millis(1));
        let ready = m.auto_confirm_ready().expect("ready");
        assert_eq!(ready.reached_from, OPERATOR);
        assert_eq!(ready.applied, applied);
    }

    #[test]
    fn avl1_the_confirm_window_runs_from_the_end_of_the_apply() {
        let f = Fixture::new();
        let mut m = manager(&f, &f.text(1, ""));
        let accepted = push(&f, &m, &f.text(2, "confirm_timeout_secs = 60\n")).expect("v2");
        let record = m.begin(accepted, "operator.renkei.test").expect("begin");
        let pushed_at = record.applied_at_unix;
        assert_eq!(record.confirm_deadline_unix, pushed_at + 60);
        // The apply takes 45 s: the operator still gets the whole 60 s after it.
        let slow = Duration::from_secs(45);
        let applied = Applied {
            instant: std::time::Instant::now() + slow,
            wall: SystemTime::now() + slow,
        };
        m.mark_applied(applied);
        let applied_unix = unix_secs(applied.wall);
        assert_eq!(
            m.deadline(),
            Some(Instant::from_std(applied.instant) + Duration::from_secs(60))
        );
        let pending = m.pending().expect("pending");
        assert_eq!(pending.applied_at_unix, applied_unix);
        assert_eq!(pending.confirm_deadline_unix, applied_unix + 60);
        // The status page and `GET /v1/config` show the same; the push time stays.
        let snapshot = m.snapshot();
        assert_eq!(snapshot.confirm_deadline_unix, Some(applied_unix + 60));
        assert_eq!(snapshot.since_unix, Some(applied_unix));
        assert_eq!(snapshot.pushed_at_unix, Some(pushed_at));
        m.confirm(Some(2)).expect("confirm");
        assert_eq!(m.snapshot().pushed_at_unix, Some(pushed_at));
        assert_eq!(
            manager(&f, &f.text(2, "confirm_timeout_secs = 60\n"))
                .snapshot()
                .pushed_at_unix,
            Some(pushed_at),
            "confirmed.json keeps the push time"
        );
    }

    #[test]
    fn avl1_without_auto_confirm_reaching_the_box_confirms_nothing() {
        let f = Fixture::new();
        let mut m = manager(&f, &f.text(1, ""));
        let accepted = push(&f, &m, &f.text(2, "")).expect("v2");
        m.begin(accepted, "operator.renkei.test").expect("begin");
        let applied = Applied::now();
        m.mark_applied(applied);
        m.reached_again(OPERATOR, applied.instant + Duration::from_millis(1));
        assert_eq!(m.auto_confirm_ready(), None);
    }
}
