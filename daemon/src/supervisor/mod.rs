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

mod parts;
mod recovery;
mod unenrolled;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::carrier::{self, CarrierError};
use crate::config::{self, Config};
use crate::control::manager::Manager;
use crate::control::persist::{ConfigFiles, Recovery};
use crate::control::server::{Answer, Command, ServerError};
use crate::control::transaction::{Transaction, TransactionError};
use crate::proxy::ProxyError;
use crate::state::events::{EventLog, Occurrence};
use crate::status::control::{ControlError, ControlSocket};
use crate::status::events;
use crate::status::http::OperatorTls;
use crate::status::{ConfigState, StatusServer, StatusSource};
use crate::tls::StoreError;

use parts::{reload, Parts, Proxy};
pub use recovery::load_recovering;
use recovery::recovery_event;
pub use unenrolled::{run_unenrolled, Unenrolled, UnenrolledExit};

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
