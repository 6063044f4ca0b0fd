//! The HTTPS server of the facility administrator's status page (OPS-3, OPS-4, AUTH-1, LOG-3):
//! the page, its JSON API and `/metrics` on the LAN listener; `/metrics` alone on the optional
//! tunnel-side listener; and, for a box with no config yet, the login-free enrolment page.
//!
//! Every request is untrusted: sizes, counts and times are bounded by named constants, no
//! input is ever unwrapped, and only embedded assets are served (exact paths, no file system).
//! No response ever carries key material. The submodules: `server` (listeners and connections),
//! `respond` (answers and request parsing), one module per site (`page`, `metrics_site`,
//! `enrolment_site`) and `stats` (the numbers shared with the status document).

mod enrolment_site;
mod factor_page;
mod metrics_site;
mod page;
mod respond;
mod server;
mod stats;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::auth::{LoginLimiter, SessionStore};
use super::cert::{self, CertError, PageCertificate};
use super::metrics::PeerSeries;
use super::second_factor::FactorStore;
use super::StatusSource;
use crate::config::StatusConfig;
pub use enrolment_site::{serve_enrolment, EnrolmentServer, CSR_DOWNLOAD_PATH};
use metrics_site::MetricsSite;
use page::PageSite;
pub use page::{CSRF_HEADER, MAX_CONCURRENT_PASSWORD_CHECKS, SECOND_FACTOR_PATH};
pub use respond::{
    form_field, form_pairs, same_origin_headers, session_cookie, BODY_READ_TIMEOUT_SECS,
    MAX_BODY_BYTES, SESSION_COOKIE,
};
pub use server::OperatorTls;
use server::{bind, serve, Transport};
pub use server::{
    HttpError, BIND_RETRY_SECS, CONNECTION_MAX_SECS, HEADER_READ_TIMEOUT_SECS,
    MAX_CONNECTIONS_PER_ADDRESS, MAX_HEADERS, MAX_HEADER_BYTES, MAX_METRICS_CONNECTIONS,
    MAX_PAGE_CONNECTIONS, TLS_HANDSHAKE_TIMEOUT_SECS,
};
pub use stats::{PageStats, StatusPageInfo};

/// The running status server; dropping it (or `shutdown`) closes every listener and connection,
/// and takes its block out of the status documents.
pub struct StatusServer {
    tasks: JoinSet<()>,
    local_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    stats: Arc<PageStats>,
    /// Where this server's block is shown, to take it out again when the server stops.
    source: StatusSource,
}

impl StatusServer {
    /// Loads (or generates) the certificate, binds the listeners and starts serving.
    ///
    /// `operator_tls`, when the box has `[tls]`, secures the metrics listener with the box's
    /// identity and requires an operator-CA client certificate there.
    pub async fn start(
        config: &StatusConfig,
        state_dir: &Path,
        source: StatusSource,
        operator_tls: Option<OperatorTls>,
    ) -> Result<StatusServer, HttpError> {
        let operator_tls = operator_tls.map(Arc::new);
        let certificate = page_certificate(config, state_dir)?;
        let transport = match &certificate {
            Some(c) => Transport::Tls(Arc::clone(&c.config)),
            None => Transport::Plain,
        };
        let listener = bind(config.listen).await?;
        let local_addr = listener.local_addr().unwrap_or(config.listen);

        let mut tasks = JoinSet::new();
        let mut metrics_addr = None;
        let mut metrics_transport = None;
        if let Some(address) = config.metrics_listen {
            let transport = match (&operator_tls, &certificate) {
                (Some(operator), _) => Transport::OperatorMtls(Arc::clone(operator)),
                (None, Some(c)) => {
                    tracing::warn!(
                        "status.metrics_listen without [tls]: /metrics is served with the page \
                         certificate and no client certificate"
                    );
                    Transport::Tls(Arc::clone(&c.config))
                }
                (None, None) => match cert::load_or_generate(state_dir, address.ip()) {
                    Ok(c) => Transport::Tls(c.config),
                    Err(e) => return Err(e.into()),
                },
            };
            let listener = bind(address).await?;
            metrics_addr = Some(listener.local_addr().unwrap_or(address));
            metrics_transport = Some(transport.describe());
            tracing::info!(listen = %address, transport = transport.describe(), "metrics listening");
            tasks.spawn(serve(
                listener,
                transport,
                MAX_METRICS_CONNECTIONS,
                Arc::new(MetricsSite {
                    source: source.clone(),
                    series: PeerSeries::from_config(config),
                }),
            ));
        }

        let stats = Arc::new(PageStats {
            info: StatusPageInfo {
                listen: local_addr,
                scheme: if certificate.is_some() {
                    "https"
                } else {
                    "http"
                },
                certificate_sha256: certificate.as_ref().map(|c| c.sha256.clone()),
                certificate_self_signed: certificate.as_ref().is_some_and(|c| c.self_signed),
                metrics_listen: metrics_addr,
                metrics_transport,
                logins: 0,
                login_failures: 0,
            },
            logins: AtomicU64::new(0),
            login_failures: AtomicU64::new(0),
        });
        source.set_status_page(Arc::clone(&stats));
        match &certificate {
            Some(c) => tracing::info!(
                listen = %local_addr,
                certificate = %c.path.display(),
                self_signed = c.self_signed,
                "status page listening on https://{local_addr}/ certificate SHA-256 {}",
                c.sha256
            ),
            None => {
                tracing::info!(listen = %local_addr, "status page listening on http://{local_addr}/ (loopback only)")
            }
        }
        let site = Arc::new(PageSite {
            source: source.clone(),
            password_hash: config.admin_password_hash.clone(),
            session_ttl: Duration::from_secs(config.session_ttl_secs),
            sessions: Mutex::new(SessionStore::new(Duration::from_secs(
                config.session_ttl_secs,
            ))),
            limiter: Mutex::new(LoginLimiter::new()),
            checks: Semaphore::new(MAX_CONCURRENT_PASSWORD_CHECKS),
            stats: Arc::clone(&stats),
            https: certificate.is_some(),
            factors: Arc::new(FactorStore::new(state_dir)),
            require_second_factor: config.second_factor_required(),
            metrics_series: PeerSeries::from_config(config),
        });
        if config.require_second_factor.is_none() {
            tracing::warn!(
                "status.require_second_factor is not set: the administrator may log in with the \
                 password alone until a second factor is enrolled (set it to true)"
            );
        }
        tasks.spawn(serve(listener, transport, MAX_PAGE_CONNECTIONS, site));
        Ok(StatusServer {
            tasks,
            local_addr,
            metrics_addr,
            stats,
            source,
        })
    }

    /// The address the page listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address of the metrics listener, if any.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// What the status document shows about the page.
    pub fn info(&self) -> StatusPageInfo {
        self.stats.snapshot()
    }

    /// Closes the listeners and every open connection.
    pub async fn shutdown(mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }
}

impl Drop for StatusServer {
    fn drop(&mut self) {
        // The JoinSet aborts the tasks by itself; the document must not keep describing them.
        self.source.clear_status_page(&self.stats);
    }
}

/// The page's certificate: none on loopback without a configured one (plain HTTP), else the
/// configured one, else the generated one.
fn page_certificate(
    config: &StatusConfig,
    state_dir: &Path,
) -> Result<Option<PageCertificate>, CertError> {
    match (&config.certificate_file, &config.private_key_file) {
        (Some(cert_file), Some(key_file)) => Ok(Some(cert::load_configured(cert_file, key_file)?)),
        _ if config.listen.ip().is_loopback() => Ok(None),
        _ => Ok(Some(cert::load_or_generate(state_dir, config.listen.ip())?)),
    }
}
