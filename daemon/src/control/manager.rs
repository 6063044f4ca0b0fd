//! The confirm window (AVL-1): which config is confirmed, which one is pending, and the
//! transitions between them, each written durably through [`ConfigFiles`] before it counts.
//!
//! The manager decides; the supervisor applies. Every transition is logged with version,
//! signer and time (LOG-2) by the caller, which also holds the event log.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::time::Instant;

use super::persist::{sha256_hex, ConfigFiles, ConfirmedRecord, PendingRecord, PersistError};
use super::{check_push, Accepted, Refusal};
use crate::config::Config;

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
    deadline: Instant,
    /// A management request arrived after the apply: the operator can still reach the box.
    reached_again: bool,
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

/// The config state for `GET /v1/config`, the status page and `renkei status`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ConfigSnapshot {
    /// The running `meta.version`.
    pub version: u64,
    /// SHA-256 of the running config's bytes.
    pub sha256: String,
    /// `meta.description` of the running config.
    pub description: Option<String>,
    /// Fingerprint of the key that signed it; `None` for a locally installed file.
    pub signer: Option<String>,
    /// The operator identity that pushed it.
    pub pushed_by: Option<String>,
    /// When it was pushed (unix seconds), when known.
    pub pushed_at_unix: Option<u64>,
    /// When it was applied or confirmed (unix seconds).
    pub since_unix: Option<u64>,
    /// `confirmed` or `pending`.
    pub state: &'static str,
    /// For a pending config: the version it rolls back to.
    pub previous_version: Option<u64>,
    /// For a pending config: when it rolls back unless confirmed (unix seconds).
    pub confirm_deadline_unix: Option<u64>,
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
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
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

    /// Every check of a push; nothing changes.
    pub fn check(&self, bytes: &[u8], signature: Option<&str>) -> Result<Accepted, Refusal> {
        if let Some(pending) = &self.pending {
            return Err(Refusal::Pending(pending.record.version));
        }
        check_push(
            &self.confirmed.config,
            self.files.config_path(),
            bytes,
            signature,
        )
    }

    /// Writes the accepted config as pending; the caller applies it next. The confirm window
    /// is the new config's `confirm_timeout_secs`.
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
            reached_again: false,
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
            pushed_at_unix: Some(pending.record.applied_at_unix),
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
    /// applies [`Manager::running`] afterwards.
    pub fn rollback(&mut self) -> Result<Option<PendingRecord>, PersistError> {
        if self.pending.is_none() {
            return Ok(None);
        }
        self.files.rollback()?;
        Ok(self.pending.take().map(|p| p.record))
    }

    /// When the pending config rolls back, if one is pending.
    pub fn deadline(&self) -> Option<Instant> {
        self.pending.as_ref().map(|p| p.deadline)
    }

    /// The pending config's record.
    pub fn pending(&self) -> Option<&PendingRecord> {
        self.pending.as_ref().map(|p| &p.record)
    }

    /// Notes that the operator reached the management API after the apply.
    pub fn reached_again(&mut self) {
        if let Some(pending) = &mut self.pending {
            pending.reached_again = true;
        }
    }

    /// True when the pending config asked for `auto_confirm` and the operator has reached the
    /// box again; the caller also requires a fresh handshake.
    pub fn auto_confirm_ready(&self) -> bool {
        self.pending.as_ref().is_some_and(|p| {
            p.reached_again
                && p.version
                    .config
                    .management
                    .as_ref()
                    .is_some_and(|m| m.auto_confirm)
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
