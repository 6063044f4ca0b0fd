//! Starts the parts of the daemon in order, waits for signals and operator commands, and stops
//! them in reverse order.
//!
//! Order: control socket, tunnel, TLS credentials, proxied services (inbound listeners need the
//! tunnel address, so the tunnel comes first), then the management API. SIGHUP reloads the TLS
//! files (a broken file keeps the old material). A pushed config goes through
//! `crate::control::transaction`, driven from here, the one task that owns the running parts:
//! they are the transaction's `RunningBox`. A push may change the kind of link (WireGuard to a
//! closed network, or back): the carrier starts the new one before it stops the old one, and
//! everything bound to the old device (services, management API, status page and metrics) is
//! bound again; a rollback does the same in reverse. SIGTERM and SIGINT stop the daemon cleanly:
//! services stop accepting and drain, then the TUN device, its routes and the API socket are
//! removed before exit.
//!
//! A box without a configuration runs [`run_unenrolled`] instead: the control socket and the
//! enrolment page only, until its configuration is there (OPS-1).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::carrier::{self, Carrier, CarrierError, Reconfigured};
use crate::config::{self, Config, Diagnostics};
use crate::control::audit::{ConfigEvent, Kind};
use crate::control::manager::{Applied, Manager};
use crate::control::persist::{ConfigFiles, Recovery, RecoveryOutcome};
use crate::control::server::{Answer, Command, DaemonParts, ManagementServer, ServerError};
use crate::control::transaction::{RunningBox, Transaction, TransactionError};
use crate::proxy::{JournalUpload, ProxyError, Services};
use crate::state::events::{ConfigReason, EventLog, Occurrence};
use crate::state::moment::Moment;
use crate::state::operator_contact::OperatorContact;
use crate::status::control::{ControlError, ControlSocket};
use crate::status::events;
use crate::status::http::OperatorTls;
use crate::status::{ConfigState, StatusServer, StatusSource};
use crate::tls::store::DEFAULT_WATCH_INTERVAL_SECS;
use crate::tls::{CredentialStore, StoreError};
use crate::update::IntakeHandle;

/// Operator commands queued for the supervisor at most.
const COMMAND_QUEUE: usize = 8;

/// Why the daemon stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// The link to the data centre could not start.
    #[error("tunnel: {0}")]
    Carrier(#[from] CarrierError),
    /// The control socket could not be created.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    /// The TLS files could not be loaded at start (there is nothing to fall back on).
    #[error("TLS: {0}")]
    Tls(#[from] StoreError),
    /// Services are configured but `[tls]` is missing (validation normally catches this).
    #[error("{services} service(s) configured but no [tls] section: services need the box's certificate")]
    MissingTls {
        /// How many services are configured.
        services: usize,
    },
    /// A service could not start.
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    /// Unenrolled: the enrolment data could not be read or served.
    #[error("enrolment: {0}")]
    Enrolment(#[from] crate::enrolment::EnrolmentError),
    /// The management API could not start.
    #[error(transparent)]
    Management(#[from] ServerError),
    /// A push could not go on: its files could not be written back, or its rollback could
    /// not be applied; exiting lets systemd restart the daemon from the restored file.
    #[error(transparent)]
    Transaction(#[from] TransactionError),
}

/// Loads the config file the daemon runs from, first restoring the confirmed config if a
/// pushed one was never confirmed (a crash or reboot inside the confirm window: AVL-1).
/// Returns the config, its exact bytes, and what recovery did. `fallback_state_dir` (the
/// command line's `--state-dir`) is where the push files are looked for when the file does not
/// even parse far enough to name its own state directory.
pub fn load_recovering(
    path: &Path,
    fallback_state_dir: &Path,
) -> Result<(Config, Vec<u8>, Option<Recovery>), Diagnostics> {
    // The state directory cannot change by push, so the file names the right one whichever
    // version it holds. It is read without the file checks, so a config that fails them (a key
    // file gone) still finds the marker that may restore a working one.
    let state_dir = std::fs::read_to_string(path)
        .ok()
        .and_then(|text| toml::from_str::<Config>(&text).ok())
        .map_or_else(|| fallback_state_dir.to_path_buf(), |c| c.paths.state_dir);
    let recovery = ConfigFiles::new(path, &state_dir)
        .recover()
        .map_err(|e| whole_file(path, format!("cannot restore the confirmed config: {e}")))?;
    // A rollback the disk could not take runs the confirmed config from memory.
    if let Some(unwritten) = recovery.as_ref().and_then(|r| r.unwritten.as_ref()) {
        let text = std::str::from_utf8(&unwritten.bytes)
            .map_err(|e| whole_file(path, format!("the confirmed config's copy: {e}")))?;
        let config = crate::preflight::load_text(text, path)?;
        let bytes = unwritten.bytes.clone();
        return Ok((config, bytes, recovery));
    }
    let config = crate::preflight::load(path)?;
    let bytes = std::fs::read(path).map_err(|e| whole_file(path, e.to_string()))?;
    Ok((config, bytes, recovery))
}

fn whole_file(path: &Path, message: String) -> Diagnostics {
    Diagnostics(vec![config::Diagnostic {
        file: path.to_path_buf(),
        line: 1,
        column: 1,
        field: String::new(),
        message,
    }])
}

/// The TLS store and the services running on it.
struct Proxy {
    store: Arc<CredentialStore>,
    watcher: tokio::task::JoinHandle<()>,
    services: Services,
}

/// Everything that runs from a config, and can be changed to run from another one.
struct Parts {
    carrier: Carrier,
    proxy: Option<Proxy>,
    management: Option<ManagementServer>,
    commands: mpsc::Sender<Command>,
    events: EventLog,
    /// When the operator last made an authenticated management request: the management API
    /// notes it, a carrier without handshakes (a closed network) takes it as its proof.
    contact: OperatorContact,
    /// The running config's update intake, which the management API takes bundles with.
    updates: IntakeHandle,
}

impl Parts {
    async fn start(
        config: &Config,
        commands: mpsc::Sender<Command>,
        events: EventLog,
    ) -> Result<Parts, SupervisorError> {
        let contact = OperatorContact::new();
        let carrier = Carrier::start(config, contact.clone()).await?;
        let mut parts = Parts {
            carrier,
            proxy: None,
            management: None,
            commands,
            events,
            contact,
            updates: IntakeHandle::of(config),
        };
        if let Err(err) = parts.apply_services(config).await {
            parts.shutdown().await;
            return Err(err);
        }
        Ok(parts)
    }

    /// Makes the running parts match `config`, touching only what changed.
    async fn reconfigure(&mut self, config: &Config) -> Result<(), SupervisorError> {
        let reconfigured = self.carrier.reconfigure(config).await;
        if matches!(reconfigured, Ok(Reconfigured::NewDevice) | Err(_)) {
            // The management listener is bound to the carrier's device; a new device needs a
            // new listener (started by apply_services).
            if let Some(server) = self.management.take() {
                server.stop().await;
            }
        }
        match reconfigured? {
            Reconfigured::Unchanged => {}
            // The words predate other kinds of link; tests and operators' log searches know
            // them. `kind` says which link it was.
            Reconfigured::Restarted => {
                tracing::info!(
                    kind = self.carrier.kind().as_str(),
                    "tunnel restarted for the new config (same device)"
                )
            }
            Reconfigured::NewDevice => tracing::info!(
                kind = self.carrier.kind().as_str(),
                device = %self.carrier.handle().device(),
                "tunnel rebuilt for the new config (new device)"
            ),
        }
        self.apply_services(config).await
    }

    /// TLS material, services and the management API.
    async fn apply_services(&mut self, config: &Config) -> Result<(), SupervisorError> {
        self.updates.set(config);
        match (&mut self.proxy, &config.tls) {
            (Some(proxy), Some(tls)) => {
                if proxy.store.config() != *tls {
                    proxy.store.replace(tls.clone()).await?;
                }
                proxy
                    .services
                    .reconfigure(
                        &config.services,
                        JournalUpload::of(config).as_ref(),
                        Arc::clone(&proxy.store),
                        Some(self.carrier.handle()),
                    )
                    .await?;
            }
            (None, Some(tls)) => {
                let store = Arc::new(CredentialStore::open(tls.clone())?);
                tracing::info!(serial = %store.current().serial, "TLS certificates loaded");
                let watcher = store.spawn_watcher(Duration::from_secs(DEFAULT_WATCH_INTERVAL_SECS));
                match Services::start(
                    &config.services,
                    JournalUpload::of(config).as_ref(),
                    Arc::clone(&store),
                    Some(self.carrier.handle()),
                )
                .await
                {
                    Ok(services) => {
                        self.proxy = Some(Proxy {
                            store,
                            watcher,
                            services,
                        })
                    }
                    Err(err) => {
                        watcher.abort();
                        return Err(err.into());
                    }
                }
            }
            (Some(_), None) => {
                if let Some(proxy) = self.proxy.take() {
                    proxy.services.shutdown().await;
                    proxy.watcher.abort();
                }
            }
            (None, None) if !config.services.is_empty() => {
                return Err(SupervisorError::MissingTls {
                    services: config.services.len(),
                })
            }
            (None, None) => {}
        }

        let wanted = config.management.as_ref().zip(config.tls.as_ref());
        let unchanged = match (&self.management, wanted) {
            (Some(server), Some((m, tls))) => server.serves(m, tls, &config.paths.journal_dir),
            (None, None) => true,
            _ => false,
        };
        if !unchanged {
            if let Some(server) = self.management.take() {
                server.stop().await;
            }
            if let Some((management, tls)) = wanted {
                self.management = Some(
                    ManagementServer::start(
                        management,
                        tls,
                        &config.paths.journal_dir,
                        DaemonParts {
                            carrier: self.carrier.handle(),
                            commands: self.commands.clone(),
                            events: self.events.clone(),
                            contact: self.contact.clone(),
                            updates: self.updates.clone(),
                        },
                    )
                    .await?,
                );
            }
        }
        Ok(())
    }

    async fn shutdown(self) {
        if let Some(server) = self.management {
            server.stop().await;
        }
        if let Some(proxy) = self.proxy {
            proxy.services.shutdown().await;
            proxy.watcher.abort();
        }
        self.carrier.shutdown().await;
    }
}

/// The running parts as the push transaction sees them: the operator is reached over the
/// carrier, which says itself what proves the link (for WireGuard, a handshake).
impl RunningBox for Parts {
    type Error = SupervisorError;

    async fn apply(&mut self, config: &Config) -> Result<Applied, SupervisorError> {
        self.reconfigure(config).await?;
        Ok(Applied::now())
    }

    fn operator_reached_since(&self, operator: std::net::IpAddr, since: &Moment) -> bool {
        self.carrier
            .handle()
            .operator_reached_since(operator, since)
    }

    async fn refresh_link(&mut self, operator: std::net::IpAddr) {
        self.carrier.handle().refresh(operator).await;
    }
}

/// Runs the daemon until SIGTERM or SIGINT, from the config file at `config_path` as
/// [`load_recovering`] read it.
pub async fn run_loaded(
    config_path: &Path,
    config: Config,
    bytes: Vec<u8>,
    recovery: Option<Recovery>,
) -> Result<(), SupervisorError> {
    let mut terminate = signal(SignalKind::terminate()).map_err(SupervisorError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(SupervisorError::Signals)?;
    let mut hangup = signal(SignalKind::hangup()).map_err(SupervisorError::Signals)?;

    tracing::info!(summary = %config.summary(), "starting");
    if config.meta.box_identity.is_none() {
        tracing::warn!("the config names no [meta] box: it runs from this file, but a pushed config must name this box (AUTH-4)");
    }
    let events = EventLog::new();
    events.push(Occurrence::DaemonStarted {
        version: env!("CARGO_PKG_VERSION").to_string(),
        summary: config.summary(),
    });
    if let Some(recovery) = &recovery {
        recovery_event(recovery, config.meta.version).emit(Some(&events));
    }
    raise_open_file_limit();
    let control = ControlSocket::bind(&config.paths.runtime_dir)?;
    let (commands_tx, mut commands) = mpsc::channel(COMMAND_QUEUE);
    let mut parts = Parts::start(&config, commands_tx, events.clone()).await?;
    let files = ConfigFiles::new(config_path, &config.paths.state_dir);
    let mut transaction = Transaction::new(
        Manager::new(files, config.clone(), bytes),
        events.clone(),
        config::Files::ReadThen(&crate::preflight::problems),
    );

    let mut status = StatusSource::new(&config, parts.carrier.handle()).with_events(events.clone());
    status.set_config_state(ConfigState::from_snapshot(
        &transaction.manager().snapshot(),
    ));
    if let Some(proxy) = &parts.proxy {
        status = status
            .with_proxy(proxy.services.status())
            .with_tls(Arc::clone(&proxy.store));
    }
    // Enrolment data sits beside the key the carrier is enrolled by; a closed-network box has
    // none.
    if let Some(key_file) = carrier::enrolment_key_file(&config) {
        match crate::enrolment::Enrolment::read(key_file, &crate::status::csr_file_for(key_file)) {
            Ok(enrolment) => status = status.with_enrolment(enrolment),
            Err(e) => tracing::warn!(error = %e, "enrolment data unavailable"),
        }
    }
    let mut tunnel_events = watch_tunnel_events(&events, &parts, &config);
    let mut status_server =
        start_status_page(&config, &status, parts.proxy.as_ref(), &events).await;
    let mut applied = config.clone();
    let control_task = tokio::spawn(control.serve(status.clone()));
    tracing::info!("ready");
    crate::notify::ready(&config.summary());

    // The watchdog is pinged from this loop, and only while the data plane still ticks: a hung
    // supervisor or a hung data plane both stop the pings, and systemd restarts the daemon.
    let watchdog = crate::notify::watchdog_interval();
    let mut watchdog_tick = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    let carrier_handle = parts.carrier.handle();
    let outcome = loop {
        let changed = tokio::select! {
            _ = terminate.recv() => break Ok("SIGTERM"),
            _ = interrupt.recv() => break Ok("SIGINT"),
            _ = hangup.recv() => {
                reload(parts.proxy.as_ref(), &events).await;
                false
            }
            _ = watchdog_tick.tick(), if watchdog.is_some() => {
                if carrier_handle.is_alive() {
                    crate::notify::watchdog();
                } else {
                    tracing::error!("the data plane stopped ticking; withholding the watchdog ping");
                }
                false
            }
            Some(command) = commands.recv() => match command {
                Command::Status { reply } => {
                    let _ = reply.send(Answer {
                        status: 200,
                        body: status.document().fleet_facts(),
                    });
                    false
                }
                command => {
                    // A push whose rollback could not be applied either leaves parts of the
                    // box down: stop, so that systemd starts it again from the restored config
                    // file, as when the confirm window's rollback fails.
                    if let Err(err) = transaction.handle(command, &mut parts).await {
                        break Err(err.into());
                    }
                    true
                }
            },
            due = transaction.due() => {
                match transaction.on_due(due, &mut parts).await {
                    Ok(changed) => changed,
                    Err(err) => break Err(err.into()),
                }
            }
        };
        if changed {
            let manager = transaction.manager();
            status.set_config_state(ConfigState::from_snapshot(&manager.snapshot()));
            let running = manager.running();
            status.set_identity(running);
            if carrier::changed(running, &applied) {
                tunnel_events.abort();
                tunnel_events = watch_tunnel_events(&events, &parts, running);
            }
            // A new kind of link is a new device and address: the metrics listener binds
            // again with the page.
            if running.status != applied.status
                || running.tls != applied.tls
                || running.management != applied.management
                || carrier::kind_changed(running, &applied)
            {
                if let Some(server) = status_server.take() {
                    server.shutdown().await;
                }
                status_server =
                    start_status_page(running, &status, parts.proxy.as_ref(), &events).await;
            }
            applied = running.clone();
        }
    };
    if let Ok(which) = outcome {
        tracing::info!(signal = which, "stopping");
    }
    crate::notify::stopping();
    if let Some(server) = status_server {
        server.shutdown().await;
    }
    tunnel_events.abort();
    parts.shutdown().await;
    control_task.abort();
    let _ = control_task.await;
    outcome.map(|_| ())
}

/// Reports the state changes of every configured peer as events.
fn watch_tunnel_events(
    events: &EventLog,
    parts: &Parts,
    config: &Config,
) -> tokio::task::JoinHandle<()> {
    events::watch_tunnel(
        events.clone(),
        parts.carrier.handle(),
        carrier::watched_links(config),
    )
}

/// Starts the status page when `[status]` is configured. A page that cannot start is reported
/// (log and event) but does not stop the daemon: the tunnel and services matter more.
async fn start_status_page(
    config: &Config,
    status: &StatusSource,
    proxy: Option<&Proxy>,
    events: &EventLog,
) -> Option<StatusServer> {
    let page = config.status.as_ref()?;
    match StatusServer::start(
        page,
        &config.paths.state_dir,
        status.clone(),
        proxy.map(|p| OperatorTls {
            store: Arc::clone(&p.store),
            identities: metrics_identities(config),
        }),
    )
    .await
    {
        Ok(server) => Some(server),
        Err(err) => {
            tracing::error!(error = %err, "the status page cannot start");
            events.push(Occurrence::StatusPageFailed {
                reason: err.problem(),
                error: err.to_string(),
            });
            None
        }
    }
}

/// Who may read the metrics listener: `status.metrics_identities`, else the operator's.
fn metrics_identities(config: &Config) -> Vec<String> {
    match (&config.status, &config.management) {
        (Some(status), _) if !status.metrics_identities.is_empty() => {
            status.metrics_identities.clone()
        }
        (_, Some(management)) => management.operator_identities.clone(),
        _ => Vec::new(),
    }
}

/// Why every start-up recovery event is logged: a push was under way when the daemon stopped.
const RECOVERY_REASON: ConfigReason = ConfigReason::StoppedDuringPush;

/// The LOG-2 record of what start-up recovery did: which version runs (`running_version`) and
/// what became of the pushed one (`version`), in words that match the files, not a guess.
fn recovery_event(recovery: &Recovery, running: u64) -> ConfigEvent<'_> {
    let pending = recovery.pending.as_ref();
    let pushed = pending.map_or_else(
        || "a pushed config (its marker could not be read)".to_string(),
        |p| format!("version {}", p.version),
    );
    let event = match (recovery.outcome, &recovery.unwritten) {
        (RecoveryOutcome::RolledBack, None) => ConfigEvent::new(
            Kind::RolledBack,
            format!(
                "{pushed} was never confirmed before the daemon stopped; version {running} restored and runs"
            ),
        ),
        (RecoveryOutcome::RolledBack, Some(unwritten)) => ConfigEvent::new(
            Kind::RolledBack,
            format!(
                "{pushed} was never confirmed before the daemon stopped; version {running} runs from memory: the config file could not be written back ({}); the next start with room restores it",
                unwritten.error
            ),
        ),
        (RecoveryOutcome::Confirmed, _) => ConfigEvent::new(
            Kind::Confirmed,
            format!(
                "the confirm of version {running} was written just before the daemon stopped; it runs"
            ),
        ),
        (RecoveryOutcome::NotApplied, _) => ConfigEvent::new(
            Kind::NotApplied,
            format!(
                "{pushed} was never applied: the daemon stopped before the push replaced the config file, or after its rollback; version {running} runs"
            ),
        ),
    };
    // The confirmed config is the running one: name it, and its signer when the marker was
    // about it.
    let about = match recovery.outcome {
        RecoveryOutcome::Confirmed => pending.filter(|p| p.version == running),
        RecoveryOutcome::RolledBack | RecoveryOutcome::NotApplied => pending,
    };
    let version = match recovery.outcome {
        RecoveryOutcome::Confirmed => Some(running),
        RecoveryOutcome::RolledBack | RecoveryOutcome::NotApplied => pending.map(|p| p.version),
    };
    event
        .version(version)
        .signer(about.map(|p| p.signer.as_str()))
        .pushed_by(about.map(|p| p.pushed_by.as_str()))
        .reason(RECOVERY_REASON)
        .running_version(running)
}

/// SIGHUP: re-read the TLS files. New connections use the result; open ones are untouched.
async fn reload(proxy: Option<&Proxy>, events: &EventLog) {
    let Some(proxy) = proxy else {
        tracing::info!("SIGHUP: no [tls] section, nothing to reload");
        return;
    };
    match proxy.store.reload().await {
        Ok(material) => events.push(Occurrence::TlsReloaded {
            serial: material.serial.clone(),
        }),
        Err(err) => events.push(Occurrence::TlsReloadFailed {
            reason: err.problem(),
            error: err.to_string(),
        }),
    }
}

/// Every proxied connection takes two descriptors; the default soft limit of 1024 would cap a
/// box at a few hundred connections. Raise the soft limit to the hard one (systemd's default
/// hard limit is 524288).
fn raise_open_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(error = %e, soft, hard, "cannot raise the open-file limit");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read the open-file limit"),
    }
}

/// How often an unenrolled daemon looks for its configuration file.
const CONFIG_POLL: Duration = Duration::from_secs(2);
/// How long the enrolment page may take to close its connections at shutdown.
const PAGE_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// What an unenrolled daemon needs: no configuration names these, so they come from the
/// command line (defaults: where the disk image puts them).
#[derive(Debug, Clone)]
pub struct Unenrolled {
    /// The configuration file the daemon waits for.
    pub config_file: std::path::PathBuf,
    /// The enrolment data first boot made.
    pub enrolment: crate::enrolment::Enrolment,
    /// Where the control socket goes (`renkei status`).
    pub runtime_dir: std::path::PathBuf,
    /// Where the page's self-signed certificate is kept, so its fingerprint survives restarts
    /// and enrolment (the enrolled status page finds it there too).
    pub state_dir: std::path::PathBuf,
    /// Where the enrolment page listens.
    pub page_listen: std::net::SocketAddr,
}

/// Why [`run_unenrolled`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnenrolledExit {
    /// SIGTERM or SIGINT: the daemon stops.
    Stopped,
    /// A valid configuration is at the config file now, and everything the unenrolled daemon
    /// held (control socket, page port) is released: the caller runs the box enrolled.
    Configured,
}

/// Runs a box that has no configuration yet (fresh from the image, OPS-1) until SIGTERM or
/// SIGINT, or until a valid configuration appears at `config_file`: logs the enrolment data,
/// answers `renkei status` with it on the control socket, serves it on the login-free
/// enrolment page, and tells systemd READY and pings the watchdog, so `renkei.service` is up
/// and supervised before the operator's configuration arrives. There is no tunnel and no
/// service. A page that cannot start is reported (log, `renkei status`) but does not stop the
/// daemon: the console still shows the data.
pub async fn run_unenrolled(unenrolled: Unenrolled) -> Result<UnenrolledExit, SupervisorError> {
    let Unenrolled {
        config_file,
        enrolment,
        runtime_dir,
        state_dir,
        page_listen,
    } = unenrolled;
    let mut terminate = signal(SignalKind::terminate()).map_err(SupervisorError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(SupervisorError::Signals)?;
    let control = crate::enrolment::UnenrolledControl::bind(&runtime_dir)?;
    let (page, page_info) = start_enrolment_page(page_listen, &state_dir, &enrolment).await;
    let urls = page_info.with_current_urls().urls;
    enrolment.log_waiting(&config_file, &urls, &page_info);
    let mut control_task =
        tokio::spawn(control.serve(config_file.clone(), enrolment, page_info.clone()));
    let status = match urls.first() {
        Some(url) => {
            format!("not enrolled: waiting for the operator's configuration; enrolment page {url}")
        }
        None => "not enrolled: waiting for the operator's configuration".to_string(),
    };
    tracing::info!("ready");
    crate::notify::ready(&status);

    let watchdog = crate::notify::watchdog_interval();
    let mut watchdog_tick = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    let mut config_tick = tokio::time::interval(CONFIG_POLL);
    let mut watcher = ConfigWatch::default();
    let exit = loop {
        tokio::select! {
            _ = terminate.recv() => break UnenrolledExit::Stopped,
            _ = interrupt.recv() => break UnenrolledExit::Stopped,
            _ = watchdog_tick.tick(), if watchdog.is_some() => {
                // The moving parts are the control socket's task and the page's: ping while
                // both live (a page that never started has no task to watch).
                if control_task.is_finished() {
                    tracing::error!("the control socket stopped; withholding the watchdog ping");
                } else if page.as_ref().is_some_and(|p| p.task.is_finished()) {
                    tracing::error!("the enrolment page stopped; withholding the watchdog ping");
                } else {
                    crate::notify::watchdog();
                }
            }
            _ = config_tick.tick() => {
                if watcher.valid_config_at(&config_file) {
                    break UnenrolledExit::Configured;
                }
            }
        }
    };
    match exit {
        UnenrolledExit::Stopped => {
            tracing::info!("stopping");
            crate::notify::stopping();
        }
        UnenrolledExit::Configured => tracing::warn!(
            config_file = %config_file.display(),
            "a valid configuration is there now: leaving unenrolled mode and starting enrolled"
        ),
    }
    if let Some(page) = page {
        page.stop().await;
    }
    control_task.abort();
    let _ = (&mut control_task).await;
    Ok(exit)
}

/// The enrolment page's task and the switch that stops it.
struct PageTask {
    task: tokio::task::JoinHandle<()>,
    stop: tokio::sync::oneshot::Sender<()>,
}

impl PageTask {
    /// Closes the listener and every connection; bounded, then the task is aborted.
    async fn stop(self) {
        let PageTask { mut task, stop } = self;
        let _ = stop.send(());
        if tokio::time::timeout(PAGE_STOP_TIMEOUT, &mut task)
            .await
            .is_err()
        {
            task.abort();
            let _ = task.await;
        }
    }
}

/// Binds and starts the enrolment page. The default `[::]` falls back to `0.0.0.0` on a kernel
/// without IPv6; any other failure leaves the daemon running without a page, saying why.
async fn start_enrolment_page(
    listen: std::net::SocketAddr,
    state_dir: &Path,
    enrolment: &crate::enrolment::Enrolment,
) -> (Option<PageTask>, crate::enrolment::EnrolmentPage) {
    use crate::enrolment::EnrolmentPage;
    use crate::status::EnrolmentServer;
    let mut bound = EnrolmentServer::bind(listen, state_dir, enrolment.clone()).await;
    if let (Err(crate::status::HttpError::Bind { source, .. }), std::net::IpAddr::V6(ip)) =
        (&bound, listen.ip())
    {
        if ip.is_unspecified() && source.raw_os_error() == Some(libc::EAFNOSUPPORT) {
            let v4 = std::net::SocketAddr::new(
                std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
                listen.port(),
            );
            tracing::info!(listen = %v4, "no IPv6 on this kernel: the enrolment page listens on IPv4 only");
            bound = EnrolmentServer::bind(v4, state_dir, enrolment.clone()).await;
        }
    }
    let server = match bound {
        Ok(server) => server,
        Err(err) => {
            tracing::error!(error = %err, "the enrolment page cannot start; the console still shows the enrolment data");
            return (None, EnrolmentPage::failed(err.to_string()));
        }
    };
    let info = EnrolmentPage::serving(
        server.local_addr().unwrap_or(listen),
        server.certificate_sha256().map(str::to_string),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(async {
        let _ = stopped.await;
    }));
    (Some(PageTask { task, stop }), info)
}

/// Notices a configuration file that appeared and holds still: acted on only once it is
/// unchanged across two looks (a file being copied in is not read half-written) and valid.
#[derive(Debug, Default)]
struct ConfigWatch {
    /// Size and modification time at the last look.
    last: Option<(u64, std::time::SystemTime)>,
    /// The file version whose problems were logged, so they are logged once.
    reported: Option<(u64, std::time::SystemTime)>,
}

impl ConfigWatch {
    fn valid_config_at(&mut self, path: &Path) -> bool {
        let seen = std::fs::metadata(path)
            .ok()
            .map(|m| (m.len(), m.modified().unwrap_or(std::time::UNIX_EPOCH)));
        let steady = seen.is_some() && seen == self.last;
        self.last = seen;
        if !steady {
            return false;
        }
        match crate::preflight::load(path) {
            Ok(_) => true,
            Err(diagnostics) => {
                if self.reported != seen {
                    self.reported = seen;
                    for d in &diagnostics.0 {
                        tracing::warn!(problem = %d, "the configuration that appeared is invalid; staying unenrolled");
                    }
                }
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::fixture::Fixture;
    use crate::control::persist::PendingRecord;

    /// Where a kill lands in a push of version 2 over version 1, by the files it leaves.
    #[derive(Debug, Clone, Copy)]
    enum KilledIn {
        /// `begin`: previous.toml and the marker written, the config file not yet replaced.
        BeginBeforeTheConfigFile,
        /// Applied, inside the confirm window.
        ConfirmWindow,
        /// `confirm`: confirmed.json written, the marker not yet removed.
        ConfirmBeforeTheMarkerWent,
        /// `rollback`: the previous config written back, the marker not yet removed.
        RollbackBeforeTheMarkerWent,
    }

    fn confirmed_record(version: u64, text: &str) -> crate::control::persist::ConfirmedRecord {
        crate::control::persist::ConfirmedRecord {
            version,
            sha256: crate::control::persist::sha256_hex(text.as_bytes()),
            signer: "00112233".into(),
            pushed_by: "operator.renkei.test".into(),
            confirmed_at_unix: 1,
            pushed_at_unix: Some(0),
        }
    }

    /// Leaves the files as a kill at `point` does, through the real push files. Version 1 was
    /// installed locally, or (`v1_pushed`) is itself a confirmed push.
    fn kill_at(f: &Fixture, point: KilledIn, v1_pushed: bool) -> (String, String) {
        let (v1, v2) = (f.text(1, ""), f.text(2, ""));
        let state = f.dir.path().join("state");
        let files = ConfigFiles::new(&f.config_path(), &state);
        std::fs::write(f.config_path(), &v1).expect("v1");
        if v1_pushed {
            std::fs::create_dir_all(state.join("config")).expect("mkdir");
            files
                .confirm(&confirmed_record(1, &v1))
                .expect("v1 confirmed");
        }
        let marker = state.join("config/pending.json");
        let record = PendingRecord {
            version: 2,
            previous_version: 1,
            sha256: crate::control::persist::sha256_hex(v2.as_bytes()),
            signer: "00112233".into(),
            pushed_by: "operator.renkei.test".into(),
            applied_at_unix: 0,
            confirm_deadline_unix: 0,
        };
        files
            .begin(v1.as_bytes(), v2.as_bytes(), &record)
            .expect("begin");
        let kept_marker = std::fs::read(&marker).expect("marker");
        match point {
            KilledIn::BeginBeforeTheConfigFile => std::fs::write(f.config_path(), &v1).expect("v1"),
            KilledIn::ConfirmWindow => {}
            KilledIn::ConfirmBeforeTheMarkerWent => {
                files.confirm(&confirmed_record(2, &v2)).expect("confirm");
                std::fs::write(&marker, &kept_marker).expect("marker back");
            }
            KilledIn::RollbackBeforeTheMarkerWent => {
                files.rollback().expect("rollback");
                std::fs::write(&marker, &kept_marker).expect("marker back");
            }
        }
        (v1, v2)
    }

    #[test]
    fn avl1_log2_the_recovery_log_names_the_running_version_and_what_became_of_the_push() {
        // (crash point, version that runs, event, its version)
        let points = [
            (KilledIn::BeginBeforeTheConfigFile, 1, "not_applied", 2),
            (KilledIn::ConfirmWindow, 1, "rolled_back", 2),
            (KilledIn::ConfirmBeforeTheMarkerWent, 2, "confirmed", 2),
            (KilledIn::RollbackBeforeTheMarkerWent, 1, "not_applied", 2),
        ];
        for ((point, runs, word, version), v1_pushed) in
            points.into_iter().flat_map(|p| [(p, false), (p, true)])
        {
            let point = (point, v1_pushed);
            let f = Fixture::new();
            let (v1, v2) = kill_at(&f, point.0, v1_pushed);
            let state = f.dir.path().join("state");
            let (config, bytes, recovery) =
                load_recovering(&f.config_path(), &state).expect("recovered");
            assert_eq!(config.meta.version, runs, "{point:?}");
            let expected_text = if runs == 1 { &v1 } else { &v2 };
            assert_eq!(bytes, expected_text.as_bytes(), "{point:?}");
            let recovery = recovery.expect("a marker was found");
            let event = recovery_event(&recovery, config.meta.version);
            assert_eq!(
                (event.kind.word(), event.version, event.running_version),
                (word, Some(version), Some(runs)),
                "{point:?}: {}",
                event.message()
            );
            // The flake's root: a "confirmed" record must be about the version that runs.
            if event.kind.word() == "confirmed" {
                assert_eq!(event.version, Some(runs), "{point:?}");
            }
            assert!(
                event.message().ends_with(&format!("version {runs} runs"))
                    || event
                        .message()
                        .ends_with(&format!("version {runs} restored and runs"))
                    || event.message().ends_with("; it runs"),
                "{point:?}: {}",
                event.message()
            );
            let events = EventLog::new();
            event.emit(Some(&events));
            let kept = events.snapshot();
            assert_eq!(kept.len(), 1, "{point:?}");
            assert!(
                kept[0].message.contains(&format!("version {runs}")),
                "{point:?}: {}",
                kept[0].message
            );
        }
    }

    #[test]
    fn avl1_recovery_finds_the_push_files_through_state_dir_when_the_config_does_not_parse() {
        let f = Fixture::new();
        let v1 = f.text(1, "");
        let state = f.dir.path().join("state");
        let files = ConfigFiles::new(&f.config_path(), &state);
        std::fs::write(f.config_path(), &v1).expect("write");
        let record = PendingRecord {
            version: 2,
            previous_version: 1,
            sha256: String::new(),
            signer: "k".into(),
            pushed_by: "operator.renkei.test".into(),
            applied_at_unix: 0,
            confirm_deadline_unix: 0,
        };
        files
            .begin(v1.as_bytes(), b"[meta\nbroken", &record)
            .expect("begin");

        // Elsewhere as --state-dir: nothing to recover from, the broken file stays broken.
        let elsewhere = f.dir.path().join("elsewhere");
        assert!(load_recovering(&f.config_path(), &elsewhere).is_err());
        // The right --state-dir: the confirmed config is back.
        let (config, bytes, recovery) =
            load_recovering(&f.config_path(), &state).expect("recovered");
        assert_eq!(config.meta.version, 1);
        assert_eq!(bytes, v1.as_bytes());
        let recovery = recovery.expect("a recovery");
        assert_eq!(recovery.outcome, RecoveryOutcome::RolledBack);
        assert_eq!(recovery.pending.map(|p| p.version), Some(2));
    }
}
