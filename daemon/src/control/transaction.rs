//! The push transaction (AVL-1, AUTH-2, LOG-2): a pushed config is checked, written durably,
//! applied to the running box, and then confirmed (by the operator, or by auto_confirm once
//! the operator reaches the box again) or rolled back when its confirm window ends. A failed
//! apply is rolled back at once; a rollback that cannot be applied either is an error the
//! caller stops on, so that the daemon starts again from the restored config file.
//!
//! The transaction does not know what the box runs: it changes it only through
//! [`RunningBox`], which the supervisor implements over its running parts. That keeps the
//! transaction's rules in one place, testable with any box, whatever link carries the
//! operator to it.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use tokio::time::{Instant, Interval};

use super::audit::{ConfigEvent, Kind};
use super::manager::{Applied, ConfigSnapshot, Manager};
use super::persist::{ConfigFiles, PendingRecord, PersistError};
use super::server::{Answer, Caller, Command};
use crate::config::{Config, Files};
use crate::status::events::EventLog;

/// How often a pending config with `auto_confirm` checks whether the box is healthy again.
pub const AUTO_CONFIRM_CHECK_MS: u64 = 250;
/// How often auto_confirm asks the link to the operator to prove itself again while it waits.
pub const AUTO_CONFIRM_REHANDSHAKE_SECS: u64 = 5;

/// What the transaction needs from the running box. Nothing here names the kind of link to
/// the operator: that is the box's business.
// Used only generically inside the crate, never as `dyn` nor across threads: the `Send`
// bound the lint asks about is not needed.
#[allow(async_fn_in_trait)]
pub trait RunningBox {
    /// Why an apply failed.
    type Error: std::fmt::Display;

    /// Makes the running box match `config`; returns the moment the apply finished (the
    /// confirm window runs from then).
    async fn apply(&mut self, config: &Config) -> Result<Applied, Self::Error>;

    /// True when the link that carries the operator at `operator` proved itself (for example,
    /// a completed handshake) at or after `since`: the operator's side still accepts this box.
    fn operator_reached_since(&self, operator: IpAddr, since: SystemTime) -> bool;

    /// Asks the link that carries the operator at `operator` to prove itself again.
    async fn rehandshake(&mut self, operator: IpAddr);
}

/// Why the transaction cannot go on: the daemon must stop and start again from the files.
#[derive(Debug, thiserror::Error)]
pub enum TransactionError {
    /// The confirmed config could not be written back over the pushed one.
    #[error("config files: {0}")]
    Persist(#[from] PersistError),
    /// Rolling back to the confirmed config failed in the running box; exiting lets systemd
    /// restart the daemon from the restored file.
    #[error("rolling back to version {version} failed: {reason}")]
    Rollback {
        /// The version restored on disk.
        version: u64,
        /// What failed while applying it.
        reason: String,
    },
}

/// Timed work of the transaction, from [`Transaction::due`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// The pending config's confirm window ended.
    Deadline,
    /// Time to look whether auto_confirm may confirm.
    AutoConfirmCheck,
}

/// The confirm window and everything that moves a pushed config through it.
pub struct Transaction {
    manager: Manager,
    events: EventLog,
    /// How far a pushed config's files are checked (the supervisor passes what `run` checks
    /// at start).
    files: Files<'static>,
    auto_confirm_tick: Interval,
    /// When auto_confirm last asked the link for proof.
    last_rehandshake: Option<Instant>,
}

impl Transaction {
    /// Starts from the confirmed config in `manager`; every event goes to `events`.
    pub fn new(manager: Manager, events: EventLog, files: Files<'static>) -> Self {
        Transaction {
            manager,
            events,
            files,
            auto_confirm_tick: tokio::time::interval(Duration::from_millis(AUTO_CONFIRM_CHECK_MS)),
            last_rehandshake: None,
        }
    }

    /// The confirmed and the pending config.
    pub fn manager(&self) -> &Manager {
        &self.manager
    }

    /// One operator request: check, write, apply, answer. Every outcome is logged (LOG-2). An
    /// error is a rollback that failed to apply, after which the daemon must not go on as if
    /// it ran the restored config.
    pub async fn handle<B: RunningBox>(
        &mut self,
        command: Command,
        running: &mut B,
    ) -> Result<(), TransactionError> {
        match command {
            Command::Get { caller, reply } => {
                self.manager
                    .reached_again(caller.address.ip(), caller.arrived);
                tracing::debug!(operator = %caller.identity, "management API: config state read");
                let _ = reply.send(Answer {
                    status: 200,
                    body: serde_json::to_value(self.manager.snapshot()).unwrap_or_default(),
                });
            }
            Command::Confirm {
                version,
                caller,
                reply,
            } => {
                self.manager
                    .reached_again(caller.address.ip(), caller.arrived);
                let answer =
                    match self.confirm(version, &format!("confirmed by {}", caller.identity)) {
                        Ok(snapshot) => Answer {
                            status: 200,
                            body: serde_json::to_value(snapshot).unwrap_or_default(),
                        },
                        Err((status, code, message)) => Answer::error(status, code, message),
                    };
                let _ = reply.send(answer);
            }
            Command::Push {
                bytes,
                signature,
                caller,
                reply,
            } => {
                let (answer, failed_rollback) = self
                    .push(running, &bytes, signature.as_deref(), &caller)
                    .await;
                let _ = reply.send(answer);
                if let Some(err) = failed_rollback {
                    return Err(err);
                }
            }
        }
        Ok(())
    }

    /// Waits for the next timed step: the confirm window's end, or an auto_confirm check while
    /// a config that asked for it was reached again. Never ready while nothing is pending.
    /// Cancel-safe: a step lost to another branch of a `select!` comes again.
    pub async fn due(&mut self) -> Due {
        let deadline = self.manager.deadline();
        let auto_confirm = self.manager.auto_confirm_ready().is_some();
        tokio::select! {
            _ = sleep_until(deadline), if deadline.is_some() => Due::Deadline,
            _ = self.auto_confirm_tick.tick(), if auto_confirm => Due::AutoConfirmCheck,
            else => std::future::pending().await,
        }
    }

    /// Does the step [`Transaction::due`] returned; true when the config state changed (or
    /// may have: a confirm that was refused is logged inside).
    pub async fn on_due<B: RunningBox>(
        &mut self,
        due: Due,
        running: &mut B,
    ) -> Result<bool, TransactionError> {
        match due {
            Due::Deadline => {
                self.roll_back(running, "the confirm window expired")
                    .await?;
                Ok(true)
            }
            Due::AutoConfirmCheck => Ok(self.auto_confirm(running).await),
        }
    }

    /// Confirms a config that asked for auto_confirm once the link to the operator proved
    /// itself after the apply; until then asks it for proof now and then.
    async fn auto_confirm<B: RunningBox>(&mut self, running: &mut B) -> bool {
        let Some(ready) = self.manager.auto_confirm_ready() else {
            return false;
        };
        let operator = ready.reached_from;
        if running.operator_reached_since(operator, ready.applied.wall) {
            self.last_rehandshake = None;
            // A refusal is logged inside; the next tick tries again.
            let _ = self.confirm(None, "auto_confirm: a handshake after the apply and the operator reached the box again over the tunnel");
            true
        } else {
            // No proof since the apply yet (the link was not restarted): ask for one, which
            // proves the operator's side still accepts this box.
            let every = Duration::from_secs(AUTO_CONFIRM_REHANDSHAKE_SECS);
            if self.last_rehandshake.is_none_or(|t| t.elapsed() >= every) {
                self.last_rehandshake = Some(Instant::now());
                running.rehandshake(operator).await;
            }
            false
        }
    }

    /// Checks, writes and applies a pushed config; the answer for the operator, and the error
    /// of a rollback that could not be applied after a failed apply.
    async fn push<B: RunningBox>(
        &mut self,
        running_box: &mut B,
        bytes: &[u8],
        signature: Option<&str>,
        caller: &Caller,
    ) -> (Answer, Option<TransactionError>) {
        let operator = caller.identity.as_str();
        let running = self.manager.running().meta.version;
        let accepted = match self.manager.check(bytes, signature, self.files) {
            Ok(accepted) => accepted,
            Err(refused) => {
                let reason = &refused.reason;
                ConfigEvent::new(
                    Kind::Refused,
                    format!("{reason}; nothing changed (running version {running})"),
                )
                .version(refused.version)
                .signer(refused.signer.as_deref())
                .pushed_by(Some(operator))
                .reason(reason.code())
                .running_version(running)
                .emit(Some(&self.events));
                return (
                    Answer::error(reason.http_status(), reason.code(), reason),
                    None,
                );
            }
        };
        let version = accepted.config.meta.version;
        let signer = accepted.signer.clone();
        let event = |kind: Kind, detail: String| {
            ConfigEvent::new(kind, detail)
                .version(version)
                .signer(Some(&signer))
                .pushed_by(Some(operator))
        };
        event(
            Kind::Received,
            format!("{} bytes; replaces version {running}", bytes.len()),
        )
        .emit(Some(&self.events));
        let record = match self.manager.begin(accepted, operator) {
            Ok(record) => record,
            Err(err) => {
                event(
                    Kind::Refused,
                    format!("cannot write the pushed config; nothing applied: {err}"),
                )
                .reason("write_failed")
                .emit(Some(&self.events));
                // Whatever part of the files was written, put the confirmed config back.
                let _ = ConfigFiles::new(
                    self.manager.config_path(),
                    &self.manager.running().paths.state_dir,
                )
                .recover();
                return (Answer::error(500, "write_failed", err), None);
            }
        };
        let new = self.manager.running().clone();
        let applied = match running_box.apply(&new).await {
            Ok(applied) => applied,
            Err(err) => {
                let reason = format!("applying version {version} failed: {err}");
                event(Kind::ApplyFailed, format!("{err}; rolling back")).emit(Some(&self.events));
                return match self.roll_back(running_box, &reason).await {
                    Ok(()) => (
                        Answer::error(
                            422,
                            "apply_failed",
                            format!("{reason}; rolled back to version {running}"),
                        ),
                        None,
                    ),
                    Err(rollback) => (
                        Answer::error(
                            500,
                            "rollback_failed",
                            format!(
                                "{reason}; {rollback}; the daemon restarts from version {running}"
                            ),
                        ),
                        Some(rollback),
                    ),
                };
            }
        };
        self.manager.mark_applied(applied);
        // The window runs from the end of the apply: name the deadline the manager set then.
        let record = self.manager.pending().cloned().unwrap_or(record);
        event(Kind::Applied, applied_detail(&record)).emit(Some(&self.events));
        (
            Answer {
                status: 200,
                body: serde_json::to_value(self.manager.snapshot()).unwrap_or_default(),
            },
            None,
        )
    }

    fn confirm(
        &mut self,
        version: Option<u64>,
        how: &str,
    ) -> Result<ConfigSnapshot, (u16, &'static str, String)> {
        match self.manager.confirm(version) {
            Ok(confirmed) => {
                ConfigEvent::new(Kind::Confirmed, how)
                    .version(confirmed.config.meta.version)
                    .signer(confirmed.signer.as_deref())
                    .pushed_by(confirmed.pushed_by.as_deref())
                    .emit(Some(&self.events));
                Ok(self.manager.snapshot())
            }
            Err(err) => {
                ConfigEvent::new(Kind::ConfirmRefused, format!("{how}: {err}"))
                    .version(version)
                    .reason("confirm_refused")
                    .emit(Some(&self.events));
                Err((err.http_status(), "confirm_refused", err.to_string()))
            }
        }
    }

    /// Puts the confirmed config back on disk and in the running box.
    async fn roll_back<B: RunningBox>(
        &mut self,
        running: &mut B,
        why: &str,
    ) -> Result<(), TransactionError> {
        let record = match self.manager.rollback() {
            Ok(Some(record)) => record,
            Ok(None) => return Ok(()),
            Err(err) => {
                tracing::error!(error = %err, "cannot restore the confirmed config file");
                return Err(err.into());
            }
        };
        let previous = self.manager.running().clone();
        if let Err(err) = running.apply(&previous).await {
            return Err(TransactionError::Rollback {
                version: previous.meta.version,
                reason: err.to_string(),
            });
        }
        ConfigEvent::new(
            Kind::RolledBack,
            format!("version {} restored: {why}", previous.meta.version),
        )
        .version(record.version)
        .signer(Some(&record.signer))
        .pushed_by(Some(&record.pushed_by))
        .emit(Some(&self.events));
        Ok(())
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

fn applied_detail(record: &PendingRecord) -> String {
    format!(
        "applied at {} (unix); rolled back to version {} unless confirmed by {} (unix)",
        record.applied_at_unix, record.previous_version, record.confirm_deadline_unix
    )
}
