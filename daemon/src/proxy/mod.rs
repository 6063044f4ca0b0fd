//! The proxied services: outbound (LAN client -> TLS client through the tunnel) and inbound
//! (TLS server on the tunnel address -> LAN server), with connection limits, timeouts and the
//! access log (NET-1..5, LOG-1).
//!
//! [`Services::start`] binds every listener; each accepted connection reads the TLS material in
//! use at that moment, so a certificate reload never touches open connections. No application
//! byte is ever forwarded between the LAN and the tunnel except inside a TLS session built by
//! `crate::tls`. `inbound` and `outbound` share `splice` and `accesslog`.

pub mod accesslog;
mod inbound;
pub mod journal_upload;
mod outbound;
pub mod problem;
mod readahead;
mod socket;
pub mod splice;
#[cfg(test)]
mod test_support;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use rustls_pki_types::ServerName;
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use crate::carrier::CarrierHandle;
use crate::config::{Direction, ServiceConfig};
use crate::ratelimit::LogGate;
use crate::tls::CredentialStore;
pub use accesslog::{
    AccessLog, AccessRecord, ConnectionResult, ListenerPhase, ServiceCounters, ServiceSnapshot,
    ServiceState, TlsHandshakeCount, ACCESS_LOG_RING_RECORDS,
};
pub use journal_upload::JournalUpload;
use problem::ProxyProblem;
use socket::{reset_on_drop, tune, Leg};
pub use socket::{
    KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_PROBES, LAN_RECEIVE_BUFFER_BYTES, USER_TIMEOUT,
};
use splice::{Side, SpliceEnd, SpliceLimits, SpliceOutcome};

/// How long `shutdown` lets open connections finish before cutting them.
pub const SHUTDOWN_DRAIN_SECS: u64 = 10;
/// After cutting, how long `shutdown` waits for the cut connections to write their records.
const SHUTDOWN_CUT_GRACE: Duration = Duration::from_secs(2);
/// How long a listener keeps retrying when its address does not exist yet (the tunnel address
/// appears only once the tunnel interface is configured).
pub const BIND_RETRY_SECS: u64 = 10;
/// Pause between those retries.
const BIND_RETRY_INTERVAL: Duration = Duration::from_millis(200);
/// A TCP connect to a service's target (inside the tunnel or on the LAN) that takes longer is
/// abandoned.
pub const TARGET_CONNECT_TIMEOUT_SECS: u64 = 10;
/// After a failed accept (out of file descriptors, say) the listener pauses this long.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// Accept errors are logged at most once per this interval.
static ACCEPT_ERROR_LOG: LogGate = LogGate::new(Duration::from_secs(10));

/// Why the services could not start. Each variant names the service.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The listen address could not be bound.
    #[error("service {service}: cannot listen on {address}: {source}")]
    Bind {
        /// The service.
        service: String,
        /// The configured listen address.
        address: SocketAddr,
        /// What the OS said.
        source: io::Error,
    },
    /// An outbound service's target is not an IP address and port.
    #[error("service {service}: outbound target {target:?} must be an IP address and port")]
    OutboundTarget {
        /// The service.
        service: String,
        /// The configured target.
        target: String,
    },
    /// An outbound service has no usable `server_name`.
    #[error("service {service}: outbound services need a valid server_name ({reason})")]
    ServerName {
        /// The service.
        service: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Everything a running service's connections share.
struct ServiceContext {
    config: ServiceConfig,
    kind: Kind,
    store: Arc<CredentialStore>,
    tunnel: Option<CarrierHandle>,
    log: Arc<AccessLog>,
    counters: Arc<ServiceCounters>,
    limit: Arc<Semaphore>,
    stop: watch::Receiver<bool>,
    tracker: Arc<watch::Sender<usize>>,
    /// Its connections ride on a link that is up anyway instead of demanding it (the journal
    /// upload of an on-demand box, NET-7).
    rides: bool,
}

enum Kind {
    Outbound(outbound::Target),
    Inbound,
}

impl ServiceContext {
    fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.config.handshake_timeout_secs)
    }

    /// The service's `tcp_user_timeout_secs`, for [`tune`] on each of its legs.
    fn user_timeout(&self) -> Duration {
        Duration::from_secs(self.config.tcp_user_timeout_secs)
    }

    fn splice_limits(&self) -> SpliceLimits {
        SpliceLimits::with_idle_timeout(Duration::from_secs(self.config.idle_timeout_secs))
    }

    /// Completes when the services are told to cut open connections (or are dropped).
    fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut stop = self.stop.clone();
        async move {
            // A closed channel means the services are gone: stop as well.
            let _ = stop.wait_for(|s| *s).await;
        }
    }
}

/// One open (or just refused) connection: counts it while it lives and writes its access-log
/// record when dropped, whatever path the handler took.
struct Connection {
    record: AccessRecord,
    started: Instant,
    counters: Arc<ServiceCounters>,
    log: Arc<AccessLog>,
    tracker: Arc<watch::Sender<usize>>,
}

impl Connection {
    fn open(service: &ServiceContext, peer: SocketAddr) -> Connection {
        service.counters.opened();
        service.tracker.send_modify(|n| *n += 1);
        let mut record = AccessRecord::begin(&service.config, peer);
        // Overwritten by every handler path; seen only if a handler is cut short.
        record.result = ConnectionResult::error(
            ProxyProblem::HandlerEnded,
            "connection handler ended unexpectedly",
        );
        Connection {
            record,
            started: Instant::now(),
            counters: Arc::clone(&service.counters),
            log: Arc::clone(&service.log),
            tracker: Arc::clone(&service.tracker),
        }
    }

    /// Takes the numbers and result of a finished splice. `a` is always the connecting peer.
    fn spliced(&mut self, outcome: SpliceOutcome, peer_side: &str, target_side: &str) {
        self.record.bytes_in = outcome.a_to_b;
        self.record.bytes_out = outcome.b_to_a;
        self.record.result = match outcome.end {
            SpliceEnd::Closed => ConnectionResult::Ok,
            SpliceEnd::IdleTimeout(idle) => ConnectionResult::error(
                ProxyProblem::IdleTimeout,
                format_args!("closed after {} s without data", idle.as_secs()),
            ),
            SpliceEnd::Stopped => {
                ConnectionResult::error(ProxyProblem::Shutdown, "cut by daemon shutdown")
            }
            SpliceEnd::Failed { side, error } => {
                let (from, to) = match side {
                    Side::AToB => (peer_side, target_side),
                    Side::BToA => (target_side, peer_side),
                };
                ConnectionResult::error(
                    ProxyProblem::TransferFailed,
                    format_args!("{from} -> {to}: {error}"),
                )
            }
        };
    }

    /// Records the negotiated TLS parameters.
    fn tls(&mut self, conn: &rustls::CommonState) {
        self.record.tls_version = conn.protocol_version().map(|v| format!("{v:?}"));
        self.record.tls_suite = conn
            .negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite()));
        if let (Some(version), Some(suite)) = (&self.record.tls_version, &self.record.tls_suite) {
            self.counters.tls_handshake(version, suite);
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.record.duration_ms = accesslog::millis(self.started.elapsed());
        self.counters.closed(&self.record);
        self.log.record(self.record.clone());
        self.tracker.send_modify(|n| *n = n.saturating_sub(1));
    }
}

struct RunningService {
    context: Arc<ServiceContext>,
    listen: SocketAddr,
    accept: JoinHandle<()>,
}

/// The running services of one box.
pub struct Services {
    running: Vec<RunningService>,
    /// Services being bound (shown as starting or waiting for their address).
    starting: Vec<(Arc<ServiceContext>, SocketAddr)>,
    /// Services a config removed or changed whose connections are still open (shown as stopped).
    draining: Vec<(Arc<ServiceContext>, SocketAddr)>,
    status: ProxyStatus,
    stop: watch::Sender<bool>,
    stop_rx: watch::Receiver<bool>,
    tracker: Arc<watch::Sender<usize>>,
    /// The journal upload's service and the task keeping its ready file.
    upload: Option<(JournalUpload, JoinHandle<()>)>,
}

/// The services as the status document lists them, replaced whole when a config changes them.
type ServiceList = Arc<Vec<(Arc<ServiceContext>, SocketAddr)>>;

/// A cheap, cloneable view of the running services for the status document: it outlives
/// nothing and stops nothing.
#[derive(Clone)]
pub struct ProxyStatus {
    services: Arc<RwLock<ServiceList>>,
    log: Arc<AccessLog>,
}

impl ProxyStatus {
    /// Counters of every service and the recent access-log records.
    pub fn snapshot(&self) -> ProxySnapshot {
        let services = self
            .services
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        ProxySnapshot {
            services: services
                .iter()
                .filter(|(context, _)| {
                    // A stopped service is shown only while it still has open connections.
                    context.counters.phase() != ListenerPhase::Stopped
                        || context.counters.active() > 0
                })
                .map(|(context, listen)| {
                    let full = context.limit.available_permits() == 0;
                    context.counters.snapshot(&context.config, *listen, full)
                })
                .collect(),
            recent_connections: self.log.recent(),
        }
    }
}

/// The proxy's part of the status document.
#[derive(Debug, Clone, Serialize)]
pub struct ProxySnapshot {
    /// One entry per configured service, in config order.
    pub services: Vec<ServiceSnapshot>,
    /// The last [`ACCESS_LOG_RING_RECORDS`] access-log records, oldest first.
    pub recent_connections: Vec<AccessRecord>,
}

impl Services {
    /// Binds every service's listener and starts accepting. `tls` is read once per connection;
    /// `tunnel`, when present, is asked for a session (`demand`) by outbound connections.
    /// Inbound listeners on a tunnel address that does not exist yet are retried for
    /// [`BIND_RETRY_SECS`]. Nothing is left listening when an error is returned.
    pub async fn start(
        services: &[ServiceConfig],
        upload: Option<&JournalUpload>,
        tls: Arc<CredentialStore>,
        tunnel: Option<CarrierHandle>,
    ) -> Result<Services, ProxyError> {
        let (stop, stop_rx) = watch::channel(false);
        let mut started = Services {
            running: Vec::new(),
            starting: Vec::new(),
            draining: Vec::new(),
            status: ProxyStatus {
                services: Arc::new(RwLock::new(Arc::new(Vec::new()))),
                log: Arc::new(AccessLog::new()),
            },
            stop,
            stop_rx,
            tracker: Arc::new(watch::channel(0usize).0),
            upload: None,
        };
        started.reconfigure(services, upload, tls, tunnel).await?;
        Ok(started)
    }

    /// Makes the running services match `services`: a service whose config is unchanged keeps
    /// its listener, counters and connections; a removed or changed one stops accepting (its
    /// open connections run to their end); a new or changed one is bound and started. On error
    /// the services started so far keep running and the caller applies the previous config.
    pub async fn reconfigure(
        &mut self,
        services: &[ServiceConfig],
        upload: Option<&JournalUpload>,
        tls: Arc<CredentialStore>,
        tunnel: Option<CarrierHandle>,
    ) -> Result<(), ProxyError> {
        let rides = |name: &str| upload.is_some_and(|u| u.rides && u.service == name);
        let mut kept = Vec::new();
        for service in std::mem::take(&mut self.running) {
            let config = &service.context.config;
            if services.contains(config) && rides(&config.name) == service.context.rides {
                kept.push(service);
            } else {
                tracing::info!(service = %service.context.config.name, "service removed or changed; it stops accepting");
                service.accept.abort();
                let _ = service.accept.await;
                service.context.counters.set_phase(ListenerPhase::Stopped);
                self.draining.push((service.context, service.listen));
            }
        }
        self.running = kept;
        self.publish();

        let mut starting = Vec::new();
        for config in services {
            if self.running.iter().any(|s| s.context.config == *config) {
                continue;
            }
            let rides = rides(&config.name);
            let kind = match config.direction {
                Direction::Outbound => Kind::Outbound(outbound::Target::from_config(config)?),
                Direction::Inbound => Kind::Inbound,
            };
            let context = Arc::new(ServiceContext {
                config: config.clone(),
                kind,
                store: Arc::clone(&tls),
                tunnel: tunnel.clone(),
                log: Arc::clone(&self.status.log),
                counters: Arc::new(ServiceCounters::default()),
                limit: Arc::new(Semaphore::new(config.max_connections as usize)),
                stop: self.stop_rx.clone(),
                tracker: Arc::clone(&self.tracker),
                rides,
            });
            starting.push((context, config.listen));
        }
        self.starting = starting;
        // The status document shows them while they are bound (a tunnel address may take a
        // moment to appear).
        self.publish();
        let mut listeners = Vec::with_capacity(self.starting.len());
        for (context, _) in &self.starting {
            let counters = Arc::clone(&context.counters);
            // An outbound service listens on the LAN, an inbound one on the tunnel address.
            let leg = match context.config.direction {
                Direction::Outbound => Leg::Lan,
                Direction::Inbound => Leg::Tunnel,
            };
            let bound = bind_retrying_with(context.config.listen, leg, || {
                counters.set_phase(ListenerPhase::WaitingForAddress)
            })
            .await
            .map_err(|source| ProxyError::Bind {
                service: context.config.name.clone(),
                address: context.config.listen,
                source,
            });
            match bound {
                Ok(listener) => listeners.push(listener),
                Err(err) => {
                    self.starting.clear();
                    self.publish();
                    return Err(err);
                }
            }
        }
        for ((context, configured), listener) in std::mem::take(&mut self.starting)
            .into_iter()
            .zip(listeners)
        {
            let config = &context.config;
            let listen = listener.local_addr().unwrap_or(configured);
            context.counters.set_phase(ListenerPhase::Listening);
            tracing::info!(
                service = %config.name,
                direction = config.direction.as_str(),
                listen = %listen,
                target = %config.target,
                "service listening"
            );
            let accept = tokio::spawn(accept_loop(listener, Arc::clone(&context)));
            self.running.push(RunningService {
                context,
                listen,
                accept,
            });
        }
        // Config order, for the status page.
        self.running.sort_by_key(|s| {
            services
                .iter()
                .position(|c| *c == s.context.config)
                .unwrap_or(usize::MAX)
        });
        self.publish();
        self.follow_upload(upload, tunnel).await;
        Ok(())
    }

    /// Keeps the journal upload's ready file for `upload` (now that its service listens), or
    /// none without one.
    async fn follow_upload(
        &mut self,
        upload: Option<&JournalUpload>,
        tunnel: Option<CarrierHandle>,
    ) {
        if self.upload.as_ref().map(|(u, _)| u) == upload {
            return;
        }
        self.stop_upload().await;
        self.upload = upload.map(|u| (u.clone(), u.keep_ready_file(tunnel)));
    }

    /// Ends the ready file's task; the file is gone once this returns.
    async fn stop_upload(&mut self) {
        if let Some((_, task)) = self.upload.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Replaces the list the status document reads: running services in config order, then
    /// the ones being bound, then stopped ones whose connections are still open.
    fn publish(&mut self) {
        self.draining
            .retain(|(context, _)| context.counters.active() > 0);
        let list: ServiceList = Arc::new(
            self.running
                .iter()
                .map(|s| (Arc::clone(&s.context), s.listen))
                .chain(self.starting.iter().cloned())
                .chain(self.draining.iter().cloned())
                .collect(),
        );
        *self
            .status
            .services
            .write()
            .unwrap_or_else(PoisonError::into_inner) = list;
    }

    /// The address a service actually listens on (differs from the config for port 0).
    pub fn listen_addr(&self, service: &str) -> Option<SocketAddr> {
        self.running
            .iter()
            .find(|s| s.context.config.name == service)
            .map(|s| s.listen)
    }

    /// The shared access log, for the status page and tests.
    pub fn access_log(&self) -> Arc<AccessLog> {
        Arc::clone(&self.status.log)
    }

    /// Counters of every service and the recent access-log records, for the status document.
    pub fn snapshot(&self) -> ProxySnapshot {
        self.status.snapshot()
    }

    /// A view for the status source, which lives apart from the supervisor's `Services`.
    pub fn status(&self) -> ProxyStatus {
        self.status.clone()
    }

    /// Connections open now, over all services.
    pub fn open_connections(&self) -> usize {
        *self.tracker.borrow()
    }

    /// Stops accepting, lets open connections finish for [`SHUTDOWN_DRAIN_SECS`], then cuts
    /// the rest (each still gets its access-log record).
    pub async fn shutdown(self) {
        self.shutdown_within(Duration::from_secs(SHUTDOWN_DRAIN_SECS))
            .await;
    }

    /// `shutdown` with a chosen drain bound.
    pub async fn shutdown_within(mut self, drain: Duration) {
        self.stop_upload().await;
        for service in &self.running {
            service.accept.abort();
            service.context.counters.set_phase(ListenerPhase::Stopped);
        }
        for service in &mut self.running {
            // Cancelled on purpose; awaiting makes sure the listener is closed.
            let _ = (&mut service.accept).await;
        }
        let mut open = self.tracker.subscribe();
        let drained = tokio::time::timeout(drain, open.wait_for(|n| *n == 0))
            .await
            .is_ok();
        if !drained {
            tracing::warn!(
                open = *open.borrow(),
                drain_secs = drain.as_secs(),
                "connections still open after the drain time; cutting them"
            );
            self.stop.send_replace(true);
            let _ = tokio::time::timeout(SHUTDOWN_CUT_GRACE, open.wait_for(|n| *n == 0)).await;
        }
        tracing::info!("services stopped");
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        for service in &self.running {
            service.accept.abort();
        }
        self.stop.send_replace(true);
    }
}

/// Binds `address`, retrying for [`BIND_RETRY_SECS`] while it does not exist yet (a tunnel
/// address appears only once the tunnel interface is configured, or again after a restart),
/// and calls `waiting` before each retry, so the status can say why the service is not
/// listening yet.
async fn bind_retrying_with(
    address: SocketAddr,
    leg: Leg,
    waiting: impl Fn(),
) -> io::Result<TcpListener> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(BIND_RETRY_SECS);
    loop {
        match socket::listen(address, leg) {
            Ok(listener) => return Ok(listener),
            Err(err)
                if err.raw_os_error() == Some(libc::EADDRNOTAVAIL)
                    && tokio::time::Instant::now() + BIND_RETRY_INTERVAL < deadline =>
            {
                waiting();
                tokio::time::sleep(BIND_RETRY_INTERVAL).await;
            }
            Err(err) => return Err(err),
        }
    }
}

async fn accept_loop(listener: TcpListener, service: Arc<ServiceContext>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                if let Some(suppressed) = ACCEPT_ERROR_LOG.check(Instant::now()) {
                    tracing::warn!(
                        service = %service.config.name,
                        error = %err,
                        suppressed,
                        "accept failed"
                    );
                }
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let mut connection = Connection::open(&service, peer);
        let Ok(permit) = Arc::clone(&service.limit).try_acquire_owned() else {
            connection.record.result = ConnectionResult::refused(
                ProxyProblem::ConnectionLimit,
                format_args!(
                    "max_connections ({}) reached",
                    service.config.max_connections
                ),
            );
            drop(stream);
            continue;
        };
        tune(&stream, service.user_timeout());
        // A connection that came through the link is use of it (on IPsec, where renkei
        // judges an on-demand SA's idleness itself).
        let hold = match (&service.kind, &service.tunnel) {
            (Kind::Inbound, Some(carrier)) => carrier.hold_for_peer(peer.ip()),
            _ => None,
        };
        let service = Arc::clone(&service);
        tokio::spawn(async move {
            let _permit = permit;
            let _hold = hold;
            let stopped = service.stopped();
            // The handler goes first: when a stop reaches a splice, the splice returns its
            // byte counts in the same poll, before this select gives up on it.
            let cut = tokio::select! {
                biased;
                () = handle(stream, &mut connection, &service) => false,
                () = stopped => true,
            };
            if cut {
                connection.record.result =
                    ConnectionResult::error(ProxyProblem::Shutdown, "cut by daemon shutdown");
            }
            // Writes the record (explicitly, so the last result is visibly used).
            drop(connection);
        });
    }
}

async fn handle(stream: TcpStream, connection: &mut Connection, service: &ServiceContext) {
    match &service.kind {
        Kind::Outbound(target) => outbound::handle(stream, connection, service, target).await,
        Kind::Inbound => inbound::handle(stream, connection, service).await,
    }
}

/// Whether the two TCP connections should be reset rather than closed: after a failure, an idle
/// timeout or a shutdown cut, an orderly FIN would let the far end take a truncated stream for
/// a complete one.
fn must_reset(end: &SpliceEnd) -> bool {
    !matches!(end, SpliceEnd::Closed)
}

/// Parses an outbound service's server name once, at start.
fn server_name(config: &ServiceConfig) -> Result<ServerName<'static>, ProxyError> {
    let name = config
        .server_name
        .as_deref()
        .ok_or_else(|| ProxyError::ServerName {
            service: config.name.clone(),
            reason: "missing".to_string(),
        })?;
    ServerName::try_from(name.to_string()).map_err(|err| ProxyError::ServerName {
        service: config.name.clone(),
        reason: format!("{name:?}: {err}"),
    })
}
