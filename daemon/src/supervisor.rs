//! Starts the parts of the daemon in order, waits for signals, and stops them in reverse order.
//!
//! Order: control socket, tunnel, TLS credentials, proxied services (inbound listeners need the
//! tunnel address, so the tunnel comes first). SIGHUP reloads the TLS files (a broken file keeps
//! the old material). SIGTERM and SIGINT stop the daemon cleanly: services stop accepting and
//! drain, then the TUN device, its routes and the API socket are removed before exit.

use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};

use crate::config::Config;
use crate::proxy::{ProxyError, Services};
use crate::status::control::{ControlError, ControlSocket};
use crate::status::StatusSource;
use crate::tls::store::DEFAULT_WATCH_INTERVAL_SECS;
use crate::tls::{CredentialStore, StoreError};
use crate::tunnel::{Tunnel, TunnelError};

/// Why the daemon stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// The tunnel could not start.
    #[error("tunnel: {0}")]
    Tunnel(#[from] TunnelError),
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
}

/// The TLS store and the services running on it.
struct Proxy {
    store: Arc<CredentialStore>,
    watcher: tokio::task::JoinHandle<()>,
    services: Services,
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(config: Config) -> Result<(), SupervisorError> {
    let mut terminate = signal(SignalKind::terminate()).map_err(SupervisorError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(SupervisorError::Signals)?;
    let mut hangup = signal(SignalKind::hangup()).map_err(SupervisorError::Signals)?;

    tracing::info!(summary = %config.summary(), "starting");
    raise_open_file_limit();
    let control = ControlSocket::bind(&config.paths.runtime_dir)?;
    let tunnel = Tunnel::start(&config).await?;
    let proxy = match start_proxy(&config, &tunnel).await {
        Ok(proxy) => proxy,
        Err(err) => {
            tunnel.shutdown().await;
            return Err(err);
        }
    };
    let mut status = StatusSource::new(&config, tunnel.handle());
    if let Some(proxy) = &proxy {
        status = status
            .with_proxy(proxy.services.status())
            .with_tls(Arc::clone(&proxy.store));
    }
    let control_task = tokio::spawn(control.serve(status));
    tracing::info!("ready");
    crate::notify::ready(&config.summary());

    // The watchdog is pinged from this loop, and only while the data plane still ticks: a hung
    // supervisor or a hung data plane both stop the pings, and systemd restarts the daemon.
    let watchdog = crate::notify::watchdog_interval();
    let mut watchdog_tick = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    let tunnel_handle = tunnel.handle();
    let which = loop {
        tokio::select! {
            _ = terminate.recv() => break "SIGTERM",
            _ = interrupt.recv() => break "SIGINT",
            _ = hangup.recv() => reload(proxy.as_ref()).await,
            _ = watchdog_tick.tick(), if watchdog.is_some() => {
                if tunnel_handle.is_alive() {
                    crate::notify::watchdog();
                } else {
                    tracing::error!("the data plane stopped ticking; withholding the watchdog ping");
                }
            }
        }
    };
    tracing::info!(signal = which, "stopping");
    crate::notify::stopping();
    if let Some(proxy) = proxy {
        proxy.services.shutdown().await;
        proxy.watcher.abort();
    }
    control_task.abort();
    let _ = control_task.await;
    tunnel.shutdown().await;
    Ok(())
}

/// Opens the TLS store, starts its file watcher and the services; `None` without `[tls]`.
async fn start_proxy(config: &Config, tunnel: &Tunnel) -> Result<Option<Proxy>, SupervisorError> {
    let Some(tls) = &config.tls else {
        if config.services.is_empty() {
            return Ok(None);
        }
        return Err(SupervisorError::MissingTls {
            services: config.services.len(),
        });
    };
    let store = Arc::new(CredentialStore::open(tls.clone())?);
    let material = store.current();
    tracing::info!(serial = %material.serial, "TLS certificates loaded");
    let watcher = store.spawn_watcher(Duration::from_secs(DEFAULT_WATCH_INTERVAL_SECS));
    match Services::start(&config.services, Arc::clone(&store), Some(tunnel.handle())).await {
        Ok(services) => Ok(Some(Proxy {
            store,
            watcher,
            services,
        })),
        Err(err) => {
            watcher.abort();
            Err(err.into())
        }
    }
}

/// SIGHUP: re-read the TLS files. New connections use the result; open ones are untouched.
async fn reload(proxy: Option<&Proxy>) {
    let Some(proxy) = proxy else {
        tracing::info!("SIGHUP: no [tls] section, nothing to reload");
        return;
    };
    match proxy.store.reload().await {
        Ok(material) => tracing::info!(serial = %material.serial, "SIGHUP: TLS files reloaded"),
        Err(err) => tracing::warn!(
            error = %err,
            "SIGHUP: TLS reload failed; the certificates in use stay in use"
        ),
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

/// Runs a box that has no configuration yet (fresh from the image, OPS-1) until SIGTERM or
/// SIGINT: logs the enrolment data, answers `renkei status` with it on the control socket, and
/// tells systemd READY and pings the watchdog, so `renkei.service` is up and supervised before
/// the operator's configuration arrives. There is no tunnel and no service; once the
/// configuration is at `config_file`, a restart of the daemon runs the box enrolled.
pub async fn run_unenrolled(
    config_file: std::path::PathBuf,
    enrolment: crate::enrolment::Enrolment,
    runtime_dir: std::path::PathBuf,
) -> Result<(), SupervisorError> {
    let mut terminate = signal(SignalKind::terminate()).map_err(SupervisorError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(SupervisorError::Signals)?;
    let control = crate::enrolment::UnenrolledControl::bind(&runtime_dir)?;
    tracing::warn!(
        config_file = %config_file.display(),
        wireguard_public_key = %enrolment.wireguard_public_key,
        csr_sha256 = enrolment.csr_sha256.as_deref().unwrap_or("-"),
        "not enrolled: no configuration yet; give the network operator the WireGuard public key and the CSR fingerprint"
    );
    let control_task = tokio::spawn(control.serve(config_file, enrolment));
    let status = "not enrolled: waiting for the operator's configuration";
    tracing::info!("ready");
    crate::notify::ready(status);

    let watchdog = crate::notify::watchdog_interval();
    let mut watchdog_tick = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    let which = loop {
        tokio::select! {
            _ = terminate.recv() => break "SIGTERM",
            _ = interrupt.recv() => break "SIGINT",
            _ = watchdog_tick.tick(), if watchdog.is_some() => {
                // The only moving part is the control socket's task: ping while it lives.
                if control_task.is_finished() {
                    tracing::error!("the control socket stopped; withholding the watchdog ping");
                } else {
                    crate::notify::watchdog();
                }
            }
        }
    };
    tracing::info!(signal = which, "stopping");
    crate::notify::stopping();
    control_task.abort();
    let _ = control_task.await;
    Ok(())
}
