//! Starts the parts of the daemon in order, waits for a signal, and stops them in reverse order.
//!
//! Today that is the tunnel; the proxy, status page and management API join here as they land.
//! SIGTERM and SIGINT stop the daemon cleanly: the TUN device, its routes and the API socket are
//! removed before exit.

use tokio::signal::unix::{signal, SignalKind};

use crate::config::Config;
use crate::status::control::{ControlError, ControlSocket};
use crate::status::StatusSource;
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
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(config: Config) -> Result<(), SupervisorError> {
    let mut terminate = signal(SignalKind::terminate()).map_err(SupervisorError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(SupervisorError::Signals)?;

    tracing::info!(summary = %config.summary(), "starting");
    let control = ControlSocket::bind(&config.paths.runtime_dir)?;
    let tunnel = Tunnel::start(&config).await?;
    let status = StatusSource::new(&config, tunnel.handle());
    let control_task = tokio::spawn(control.serve(status));
    tracing::info!("ready");

    let which = tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    };
    tracing::info!(signal = which, "stopping");
    control_task.abort();
    let _ = control_task.await;
    tunnel.shutdown().await;
    Ok(())
}
