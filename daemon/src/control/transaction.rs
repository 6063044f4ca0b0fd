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
use std::time::Duration;

use tokio::time::{Instant, Interval};

use super::audit::{ConfigEvent, Kind};
use super::manager::{Applied, Manager};
use super::persist::{ConfigFiles, PendingRecord};
use super::server::{Answer, Caller, Command};
use crate::config::{Config, Files};
use crate::state::config_snapshot::ConfigSnapshot;
use crate::state::events::{ConfigReason, EventLog};
use crate::state::moment::Moment;

/// How often a pending config with `auto_confirm` checks whether the box is healthy again.
pub const AUTO_CONFIRM_CHECK_MS: u64 = 250;
/// How often auto_confirm asks the link to the operator to prove itself again while it waits.
pub const AUTO_CONFIRM_REFRESH_SECS: u64 = 5;

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
    fn operator_reached_since(&self, operator: IpAddr, since: &Moment) -> bool;

    /// Asks the link that carries the operator at `operator` to prove itself again.
    async fn refresh_link(&mut self, operator: IpAddr);
}

/// Why the transaction cannot go on: the daemon must stop and start again from the files.
#[derive(Debug, thiserror::Error)]
pub enum TransactionError {
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
    last_refresh: Option<Instant>,
}

impl Transaction {
    /// Starts from the confirmed config in `manager`; every event goes to `events`.
    pub fn new(manager: Manager, events: EventLog, files: Files<'static>) -> Self {
        Transaction {
            manager,
            events,
            files,
            auto_confirm_tick: tokio::time::interval(Duration::from_millis(AUTO_CONFIRM_CHECK_MS)),
            last_refresh: None,
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
            // The supervisor answers it with the whole status; the transaction alone knows only
            // the config.
            Command::Status { reply } => {
                let _ = reply.send(Answer {
                    status: 200,
                    body: serde_json::json!({ "config": self.manager.snapshot() }),
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
                self.roll_back(
                    running,
                    ConfigReason::ConfirmWindowExpired,
                    "the confirm window expired",
                )
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
        if running.operator_reached_since(operator, &ready.applied) {
            self.last_refresh = None;
            // A refusal is logged inside; the next tick tries again.
            let _ = self.confirm(None, "auto_confirm: the link to the operator proved itself after the apply and the operator reached the box again");
            true
        } else {
            // No proof since the apply yet (the link was not restarted): ask for one, which
            // proves the operator's side still accepts this box.
            let every = Duration::from_secs(AUTO_CONFIRM_REFRESH_SECS);
            if self.last_refresh.is_none_or(|t| t.elapsed() >= every) {
                self.last_refresh = Some(Instant::now());
                running.refresh_link(operator).await;
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
                .reason(reason.reason())
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
                .reason(ConfigReason::WriteFailed)
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
                event(Kind::ApplyFailed, format!("{err}; rolling back"))
                    .reason(ConfigReason::ApplyFailed)
                    .emit(Some(&self.events));
                return match self
                    .roll_back(running_box, ConfigReason::ApplyFailed, &reason)
                    .await
                {
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
                    .reason(ConfigReason::ConfirmRefused)
                    .emit(Some(&self.events));
                Err((err.http_status(), "confirm_refused", err.to_string()))
            }
        }
    }

    /// Puts the confirmed config back on disk and in the running box.
    async fn roll_back<B: RunningBox>(
        &mut self,
        running: &mut B,
        cause: ConfigReason,
        why: &str,
    ) -> Result<(), TransactionError> {
        // A disk that cannot take the restored file (full, read-only) does not keep the box
        // on the pushed config: the confirmed one runs from memory, and the marker left on
        // disk restores the file at the next start.
        let (record, not_written) = match self.manager.rollback() {
            Ok(Some(record)) => (record, None),
            Ok(None) => return Ok(()),
            Err(err) => {
                tracing::error!(error = %err, "the confirmed config runs from memory");
                (*err.record, Some(err.source))
            }
        };
        let previous = self.manager.running().clone();
        if let Err(err) = running.apply(&previous).await {
            return Err(TransactionError::Rollback {
                version: previous.meta.version,
                reason: err.to_string(),
            });
        }
        let file = not_written.map_or_else(String::new, |e| {
            format!(" (running from memory: the rollback did not finish on disk: {e})")
        });
        ConfigEvent::new(
            Kind::RolledBack,
            format!("version {} restored: {why}{file}", previous.meta.version),
        )
        .version(record.version)
        .signer(Some(&record.signer))
        .pushed_by(Some(&record.pushed_by))
        .reason(cause)
        .running_version(previous.meta.version)
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

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddr};

    use tokio::sync::oneshot;

    use super::super::fixture::Fixture;
    use super::super::persist::RecoveryOutcome;
    use super::*;

    /// The operator's tunnel address (inside the test range).
    const OPERATOR: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 19, 0, 1));
    /// The confirm window the pushed test configs ask for.
    const WINDOW_SECS: u64 = 60;

    /// Why the in-memory box could not apply a config.
    #[derive(Debug, thiserror::Error)]
    enum BoxError {
        #[error("this box cannot run version {0}")]
        CannotRun(u64),
    }

    /// A box held in memory: it runs the last config it applied, except the versions it is
    /// told it cannot run; its link to the operator proves itself when asked, while it is up.
    /// Its wall clock follows tokio's (paused) clock, so no test touches the host's.
    struct MemoryBox {
        runs: u64,
        applies: Vec<u64>,
        cannot_run: Vec<u64>,
        /// An apply of this version never finishes (a kill lands inside it).
        hangs_on: Option<u64>,
        /// How long an apply takes.
        apply_takes: Duration,
        link_up: bool,
        link_proved_at: Option<Moment>,
        refreshes: Vec<Instant>,
        wall_origin: std::time::SystemTime,
        origin: Instant,
    }

    impl MemoryBox {
        fn running(version: u64) -> Self {
            let mut running = MemoryBox {
                runs: version,
                applies: Vec::new(),
                cannot_run: Vec::new(),
                hangs_on: None,
                apply_takes: Duration::ZERO,
                link_up: true,
                link_proved_at: None,
                refreshes: Vec::new(),
                wall_origin: std::time::SystemTime::now(),
                origin: Instant::now(),
            };
            // The link came up when the box started, a while before any push.
            let now = running.now();
            running.link_proved_at = Some(Moment {
                instant: now.instant - Duration::from_secs(10),
                wall: now.wall - Duration::from_secs(10),
            });
            running
        }

        /// Now, on tokio's clock and the wall clock that follows it.
        fn now(&self) -> Moment {
            Moment {
                instant: Instant::now().into_std(),
                wall: self.wall_origin + self.origin.elapsed(),
            }
        }
    }

    impl RunningBox for MemoryBox {
        type Error = BoxError;

        async fn apply(&mut self, config: &Config) -> Result<Applied, BoxError> {
            let version = config.meta.version;
            self.applies.push(version);
            if self.hangs_on == Some(version) {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(self.apply_takes).await;
            if self.cannot_run.contains(&version) {
                return Err(BoxError::CannotRun(version));
            }
            self.runs = version;
            Ok(self.now())
        }

        fn operator_reached_since(&self, operator: IpAddr, since: &Moment) -> bool {
            operator == OPERATOR && self.link_proved_at.is_some_and(|t| t.is_at_or_after(since))
        }

        async fn refresh_link(&mut self, operator: IpAddr) {
            assert_eq!(operator, OPERATOR, "the link asked is the operator's");
            self.refreshes.push(Instant::now());
            if self.link_up {
                self.link_proved_at = Some(self.now());
            }
        }
    }

    /// A box's config files at version 1 and a transaction over them.
    fn start(f: &Fixture) -> (Transaction, EventLog) {
        resume(f, &f.text(1, ""))
    }

    /// A transaction over the config file as it is now (`text`), as the daemon starts.
    fn resume(f: &Fixture, text: &str) -> (Transaction, EventLog) {
        std::fs::write(f.config_path(), text).expect("write config");
        let config = f.config(text);
        let files = ConfigFiles::new(&f.config_path(), &config.paths.state_dir);
        let events = EventLog::new();
        let manager = Manager::new(files, config, text.as_bytes().to_vec());
        (
            Transaction::new(manager, events.clone(), Files::Read),
            events,
        )
    }

    fn caller() -> Caller {
        Caller {
            identity: "operator.renkei.test".into(),
            address: SocketAddr::new(OPERATOR, 40_000),
            arrived: Instant::now().into_std(),
        }
    }

    /// Sends one request through the transaction: what `handle` returned, and the answer.
    async fn ask(
        txn: &mut Transaction,
        running: &mut MemoryBox,
        command: impl FnOnce(oneshot::Sender<Answer>) -> Command,
    ) -> (Result<(), TransactionError>, Answer) {
        let (reply, answer) = oneshot::channel();
        let result = txn.handle(command(reply), running).await;
        let answer = answer.await.expect("every request is answered");
        (result, answer)
    }

    async fn push(
        f: &Fixture,
        txn: &mut Transaction,
        running: &mut MemoryBox,
        text: &str,
    ) -> (Result<(), TransactionError>, Answer) {
        let signature = f.key.sign(text.as_bytes());
        ask(txn, running, |reply| Command::Push {
            bytes: text.as_bytes().to_vec(),
            signature: Some(signature),
            caller: caller(),
            reply,
        })
        .await
    }

    async fn confirm(
        txn: &mut Transaction,
        running: &mut MemoryBox,
        version: Option<u64>,
    ) -> Answer {
        let (result, answer) = ask(txn, running, |reply| Command::Confirm {
            version,
            caller: caller(),
            reply,
        })
        .await;
        result.expect("a confirm never stops the daemon");
        answer
    }

    /// The titles of the event ring's records, oldest first ("config applied", ...).
    fn titles(events: &EventLog) -> Vec<String> {
        events
            .snapshot()
            .iter()
            .map(|e| {
                let end = e.message.find([':', '(']).unwrap_or(e.message.len());
                e.message[..end].trim().to_string()
            })
            .collect()
    }

    /// The newest event starts with `title` and says each of `parts`.
    fn assert_last_event(events: &EventLog, title: &str, parts: &[&str]) {
        let kept = events.snapshot();
        let message = &kept.last().expect("events").message;
        assert!(
            message.starts_with(title) && parts.iter().all(|part| message.contains(part)),
            "{message}"
        );
    }

    fn on_disk(f: &Fixture) -> String {
        std::fs::read_to_string(f.config_path()).expect("read config")
    }

    /// A box running version 1 that took and applied a push of version 2 (pending).
    async fn v2_applied(f: &Fixture) -> (Transaction, EventLog, MemoryBox) {
        let (mut txn, events) = start(f);
        let mut running = MemoryBox::running(1);
        let (result, answer) = push(f, &mut txn, &mut running, &v2(f, "")).await;
        result.expect("applied");
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        (txn, events, running)
    }

    fn v2(f: &Fixture, extra: &str) -> String {
        f.text(2, &format!("confirm_timeout_secs = {WINDOW_SECS}\n{extra}"))
    }

    #[tokio::test(start_paused = true)]
    async fn avl1_log2_a_push_applied_and_confirmed_runs_and_is_kept_past_its_window() {
        let f = Fixture::new();
        let (mut txn, events) = start(&f);
        let mut running = MemoryBox::running(1);
        let v2 = v2(&f, "");

        let (result, answer) = push(&f, &mut txn, &mut running, &v2).await;
        result.expect("no error");
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        assert_eq!(answer.body["state"], "pending");
        assert_eq!(answer.body["version"], 2);
        assert_eq!((running.runs, &running.applies[..]), (2, &[2][..]));
        assert_eq!(on_disk(&f), v2);

        let answer = confirm(&mut txn, &mut running, Some(2)).await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        assert_eq!(answer.body["state"], "confirmed");
        assert_eq!(txn.manager().deadline(), None);

        // Nothing is due any more: well past the window, v2 still runs and is on disk.
        let window = Duration::from_secs(WINDOW_SECS);
        assert!(tokio::time::timeout(window * 3, txn.due()).await.is_err());
        assert_eq!((running.runs, &running.applies[..]), (2, &[2][..]));
        assert_eq!(on_disk(&f), v2);
        assert_eq!(
            titles(&events),
            ["config received", "config applied", "config confirmed"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn avl1_log2_a_push_left_unconfirmed_is_rolled_back_when_its_window_ends() {
        let f = Fixture::new();
        let (mut txn, events) = start(&f);
        let mut running = MemoryBox::running(1);
        // A slow apply does not eat into the operator's time to confirm.
        running.apply_takes = Duration::from_secs(WINDOW_SECS / 2);
        let (result, answer) = push(&f, &mut txn, &mut running, &v2(&f, "")).await;
        result.expect("no error");
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        let applied = Instant::now();

        let due = txn.due().await;
        assert_eq!(due, Due::Deadline);
        let waited = applied.elapsed();
        let window = Duration::from_secs(WINDOW_SECS);
        assert!(
            waited >= window && waited < window + Duration::from_secs(1),
            "the window runs {WINDOW_SECS} s from the apply, not {waited:?}"
        );
        assert!(txn.on_due(due, &mut running).await.expect("rolled back"));
        assert_eq!((running.runs, &running.applies[..]), (1, &[2, 1][..]));
        assert_eq!(on_disk(&f), f.text(1, ""));
        assert_eq!(txn.manager().snapshot().state, "confirmed");
        assert_eq!(txn.manager().running().meta.version, 1);
        assert_last_event(
            &events,
            "config rolled back",
            &["version 2", "the confirm window expired"],
        );

        // A confirm that comes too late confirms nothing.
        let answer = confirm(&mut txn, &mut running, Some(2)).await;
        assert_eq!(answer.status, 409, "{:?}", answer.body);
        assert_eq!(running.runs, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn avl1_log2_a_push_the_box_cannot_apply_is_rolled_back_at_once() {
        let f = Fixture::new();
        let (mut txn, events) = start(&f);
        let mut running = MemoryBox::running(1);
        running.cannot_run = vec![2];
        let (result, answer) = push(&f, &mut txn, &mut running, &v2(&f, "")).await;
        result.expect("the rollback worked: the daemon goes on");
        assert_eq!(answer.status, 422, "{:?}", answer.body);
        assert_eq!(answer.body["error"], "apply_failed");
        let message = answer.body["message"].as_str().expect("message");
        assert!(
            message.contains("this box cannot run version 2")
                && message.contains("rolled back to version 1"),
            "{message}"
        );
        assert_eq!((running.runs, &running.applies[..]), (1, &[2, 1][..]));
        assert_eq!(on_disk(&f), f.text(1, ""));
        assert_eq!(txn.manager().deadline(), None);
        assert_eq!(
            titles(&events),
            [
                "config received",
                "config apply failed",
                "config rolled back"
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn avl1_a_rollback_that_cannot_be_applied_stops_the_daemon_on_the_restored_file() {
        // After a failed apply.
        let f = Fixture::new();
        let (mut txn, _events) = start(&f);
        let mut running = MemoryBox::running(1);
        running.cannot_run = vec![2, 1];
        let (result, answer) = push(&f, &mut txn, &mut running, &v2(&f, "")).await;
        assert!(
            matches!(result, Err(TransactionError::Rollback { version: 1, .. })),
            "{result:?}"
        );
        assert_eq!(answer.status, 500, "{:?}", answer.body);
        assert_eq!(answer.body["error"], "rollback_failed");
        assert_eq!(on_disk(&f), f.text(1, ""), "a restart runs version 1");

        // At the end of the confirm window.
        let f = Fixture::new();
        let (mut txn, _events, mut running) = v2_applied(&f).await;
        running.cannot_run = vec![1];
        let due = txn.due().await;
        assert_eq!(due, Due::Deadline);
        let result = txn.on_due(due, &mut running).await;
        assert!(
            matches!(result, Err(TransactionError::Rollback { version: 1, .. })),
            "{result:?}"
        );
        assert_eq!(on_disk(&f), f.text(1, ""), "a restart runs version 1");
    }

    /// INT-2: the disk cannot take the restored file when the window ends (here the copy of
    /// the confirmed config is gone; in the lab test the disk is read-only): the box runs the
    /// confirmed config all the same, says so, and leaves the marker for the next start.
    #[tokio::test(start_paused = true)]
    async fn int2_avl1_log2_a_rollback_the_disk_cannot_take_runs_the_confirmed_config_from_memory()
    {
        let f = Fixture::new();
        let (mut txn, events, mut running) = v2_applied(&f).await;
        let push_folder = f.dir.path().join("state").join("config");
        std::fs::remove_file(push_folder.join("previous.toml")).expect("remove previous.toml");
        let due = txn.due().await;
        assert_eq!(due, Due::Deadline);
        txn.on_due(due, &mut running)
            .await
            .expect("the daemon goes on");
        assert_eq!(running.runs, 1, "the confirmed config runs");
        assert_eq!(txn.manager().snapshot().state, "confirmed");
        assert_eq!(txn.manager().deadline(), None, "no second rollback");
        assert!(
            push_folder.join("pending.json").exists(),
            "the marker stays"
        );
        assert_last_event(
            &events,
            "config rolled back",
            &["running from memory", "previous.toml"],
        );
    }

    #[tokio::test(start_paused = true)]
    async fn avl1_log2_auto_confirm_confirms_once_the_operator_is_back_and_the_link_proves_itself()
    {
        let f = Fixture::new();
        let (mut txn, events) = start(&f);
        let mut running = MemoryBox::running(1);
        let (result, answer) =
            push(&f, &mut txn, &mut running, &v2(&f, "auto_confirm = true\n")).await;
        result.expect("applied");
        assert_eq!(answer.status, 200, "{:?}", answer.body);

        // Until the operator reaches the box again, only the deadline is due.
        assert!(tokio::time::timeout(Duration::from_secs(1), txn.due())
            .await
            .is_err());
        let (result, answer) = ask(&mut txn, &mut running, |reply| Command::Get {
            caller: caller(),
            reply,
        })
        .await;
        result.expect("a read never stops the daemon");
        assert_eq!(answer.status, 200);

        // The link proved itself before the apply only: ask it again, then confirm.
        let due = txn.due().await;
        assert_eq!(due, Due::AutoConfirmCheck);
        assert!(!txn.on_due(due, &mut running).await.expect("no error"));
        assert_eq!(running.refreshes.len(), 1);
        assert_eq!(txn.manager().snapshot().state, "pending");
        let due = txn.due().await;
        assert_eq!(due, Due::AutoConfirmCheck);
        assert!(txn.on_due(due, &mut running).await.expect("no error"));
        assert_eq!(txn.manager().snapshot().state, "confirmed");
        assert_eq!((running.runs, &running.applies[..]), (2, &[2][..]));
        let kept = events.snapshot();
        let last = kept.last().expect("events");
        assert!(
            last.message.starts_with("config confirmed") && last.message.contains("auto_confirm"),
            "{}",
            last.message
        );
        // Whatever carries the operator: no handshake or tunnel claimed (a closed network
        // has neither).
        assert!(
            !last.message.contains("handshake") && !last.message.contains("tunnel"),
            "{}",
            last.message
        );
    }

    #[tokio::test(start_paused = true)]
    async fn avl1_auto_confirm_waits_for_the_link_asking_it_now_and_then_and_rolls_back_without_it()
    {
        let f = Fixture::new();
        let (mut txn, _events) = start(&f);
        let mut running = MemoryBox::running(1);
        running.link_up = false;
        let (result, _) = push(&f, &mut txn, &mut running, &v2(&f, "auto_confirm = true\n")).await;
        result.expect("applied");
        // The operator's next request comes after the apply.
        tokio::time::advance(Duration::from_millis(10)).await;
        let (result, _) = ask(&mut txn, &mut running, |reply| Command::Get {
            caller: caller(),
            reply,
        })
        .await;
        result.expect("a read never stops the daemon");

        let mut checks = 0;
        loop {
            let due = txn.due().await;
            let changed = txn.on_due(due, &mut running).await.expect("no error");
            if due == Due::Deadline {
                assert!(changed);
                break;
            }
            assert!(!changed, "nothing confirmed without the link's proof");
            checks += 1;
        }
        let every = Duration::from_secs(AUTO_CONFIRM_REFRESH_SECS);
        let asked = running.refreshes.len() as u64;
        assert!(checks as u64 > asked, "checks {checks}, asked {asked}");
        let expected = WINDOW_SECS / AUTO_CONFIRM_REFRESH_SECS;
        assert!(
            (expected..=expected + 1).contains(&asked),
            "asked {asked} times in {WINDOW_SECS} s"
        );
        for pair in running.refreshes.windows(2) {
            assert!(pair[1] - pair[0] >= every, "asked again too soon");
        }
        assert_eq!((running.runs, &running.applies[..]), (1, &[2, 1][..]));
        assert_eq!(on_disk(&f), f.text(1, ""));
    }

    #[tokio::test(start_paused = true)]
    async fn avl1_log2_a_kill_inside_the_apply_or_the_window_restarts_on_the_confirmed_config() {
        let f = Fixture::new();
        let state = f.dir.path().join("state");
        let files = ConfigFiles::new(&f.config_path(), &state);
        let v1 = f.text(1, "");
        let v2 = v2(&f, "");

        // Killed inside the apply: the files were written, the box never finished.
        let (mut txn, _events) = start(&f);
        let mut running = MemoryBox::running(1);
        running.hangs_on = Some(2);
        let signature = f.key.sign(v2.as_bytes());
        let (reply, _answer) = oneshot::channel();
        let command = Command::Push {
            bytes: v2.as_bytes().to_vec(),
            signature: Some(signature),
            caller: caller(),
            reply,
        };
        let killed =
            tokio::time::timeout(Duration::from_secs(1), txn.handle(command, &mut running)).await;
        assert!(killed.is_err(), "the apply never finished");
        assert_eq!(running.applies, [2]);
        assert_eq!(on_disk(&f), v2, "the pushed config was on disk");
        drop(txn);
        let recovery = files
            .recover()
            .expect("recover")
            .expect("a push to recover");
        assert_eq!(recovery.outcome, RecoveryOutcome::RolledBack);
        assert_eq!(recovery.pending.map(|p| p.version), Some(2));
        assert_eq!(on_disk(&f), v1);

        // Restarted on v1: the same push goes through, and a kill in its window rolls it back.
        let (mut txn, _events) = resume(&f, &v1);
        let mut running = MemoryBox::running(1);
        let (result, answer) = push(&f, &mut txn, &mut running, &v2).await;
        result.expect("applied");
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        drop(txn);
        let recovery = files
            .recover()
            .expect("recover")
            .expect("a push to recover");
        assert_eq!(recovery.outcome, RecoveryOutcome::RolledBack);
        assert_eq!(on_disk(&f), v1);

        // Killed after the confirm: v2 stays, with who signed and pushed it.
        let (mut txn, _events) = resume(&f, &v1);
        let mut running = MemoryBox::running(1);
        let (result, _) = push(&f, &mut txn, &mut running, &v2).await;
        result.expect("applied");
        assert_eq!(confirm(&mut txn, &mut running, None).await.status, 200);
        drop(txn);
        assert_eq!(files.recover().expect("recover"), None);
        assert_eq!(on_disk(&f), v2);
        let (txn, _events) = resume(&f, &v2);
        let snapshot = txn.manager().snapshot();
        assert_eq!((snapshot.version, snapshot.state), (2, "confirmed"));
        assert_eq!(
            snapshot.signer.as_deref(),
            Some(f.key.public().fingerprint())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn auth2_log2_a_refused_push_changes_nothing_and_is_logged_with_its_reason() {
        let f = Fixture::new();
        let (mut txn, events) = start(&f);
        let mut running = MemoryBox::running(1);
        let v2 = v2(&f, "");
        let (result, answer) = ask(&mut txn, &mut running, |reply| Command::Push {
            bytes: v2.as_bytes().to_vec(),
            signature: None,
            caller: caller(),
            reply,
        })
        .await;
        result.expect("a refusal never stops the daemon");
        assert_eq!(answer.status, 403, "{:?}", answer.body);
        assert_eq!(answer.body["error"], "missing_signature");
        assert!(running.applies.is_empty());
        assert_eq!(on_disk(&f), f.text(1, ""));
        assert_eq!(txn.manager().deadline(), None);
        assert_eq!(titles(&events), ["config refused"]);
        let kept = events.snapshot();
        assert!(
            kept[0].message.contains("(missing_signature)"),
            "{}",
            kept[0].message
        );

        // While a push is pending, the next one is refused and the pending one keeps running.
        let (result, _) = push(&f, &mut txn, &mut running, &v2).await;
        result.expect("applied");
        let (result, answer) = push(&f, &mut txn, &mut running, &f.text(3, "")).await;
        result.expect("a refusal never stops the daemon");
        assert_eq!(answer.status, 409, "{:?}", answer.body);
        assert_eq!(answer.body["error"], "pending");
        assert_eq!((running.runs, &running.applies[..]), (2, &[2][..]));
    }

    #[tokio::test(start_paused = true)]
    async fn avl1_log2_a_push_whose_files_cannot_be_written_applies_nothing() {
        let f = Fixture::new();
        let (mut txn, events) = start(&f);
        let mut running = MemoryBox::running(1);
        // The push folder cannot be made: a file stands where it goes.
        let state = f.dir.path().join("state");
        std::fs::create_dir_all(&state).expect("state");
        std::fs::write(state.join("config"), b"in the way").expect("blocker");
        let (result, answer) = push(&f, &mut txn, &mut running, &v2(&f, "")).await;
        result.expect("nothing was applied: the daemon goes on");
        assert_eq!(answer.status, 500, "{:?}", answer.body);
        assert_eq!(answer.body["error"], "write_failed");
        assert!(running.applies.is_empty());
        assert_eq!(on_disk(&f), f.text(1, ""));
        assert_eq!(txn.manager().snapshot().state, "confirmed");
        assert_eq!(titles(&events), ["config received", "config refused"]);
    }
}
