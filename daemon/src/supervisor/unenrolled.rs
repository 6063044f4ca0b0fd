//! A box without a configuration: the control socket and the enrolment page only, until its
//! configuration is there (OPS-1).

use std::path::Path;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};

use super::SupervisorError;

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
