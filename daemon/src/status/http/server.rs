//! The listeners' machinery: binding, accepting with per-listener and per-address caps, TLS
//! handshakes and HTTP/1.1 connections, each bounded in time. What is answered is a [`Site`]'s job.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::respond::{finish, Body};
use crate::config::MinTls;
use crate::ratelimit::LogGate;
use crate::state::events::StatusStartProblem;
use crate::status::cert::CertError;
use crate::tls::CredentialStore;

/// Concurrent connections to the page listener; more are closed at once.
pub const MAX_PAGE_CONNECTIONS: usize = 64;
/// Concurrent connections to the metrics listener.
pub const MAX_METRICS_CONNECTIONS: usize = 8;
/// Concurrent connections from one source address (a browser opens at most 6), so one host
/// cannot take every slot of a listener.
pub const MAX_CONNECTIONS_PER_ADDRESS: usize = 16;
/// A TLS handshake that takes longer is abandoned.
pub const TLS_HANDSHAKE_TIMEOUT_SECS: u64 = 10;
/// A client must send a request's whole header within this time (slow clients are cut).
pub const HEADER_READ_TIMEOUT_SECS: u64 = 10;
/// A connection is closed after this long, whatever it does (keep-alive included).
pub const CONNECTION_MAX_SECS: u64 = 300;
/// The request line and headers together may not be larger (431 beyond).
pub const MAX_HEADER_BYTES: usize = 8 * 1024;
/// At most this many request headers (431 beyond).
pub const MAX_HEADERS: usize = 64;
/// A request body may not be larger (413 beyond): a login form is tiny.
/// How long a listener keeps retrying an address that does not exist yet (the tunnel address
/// appears only once the tunnel interface is configured).
pub const BIND_RETRY_SECS: u64 = 10;

const BIND_RETRY_INTERVAL: Duration = Duration::from_millis(200);
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
static ACCEPT_ERROR_LOG: LogGate = LogGate::new(Duration::from_secs(10));
static METRICS_REFUSAL_LOG: LogGate = LogGate::new(Duration::from_secs(10));

/// Why the status server could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// No certificate to serve HTTPS with.
    #[error("status page certificate: {0}")]
    Certificate(#[from] CertError),
    /// A listen address could not be bound.
    #[error("status page: cannot listen on {address}: {source}")]
    Bind {
        /// The configured address.
        address: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
}

impl HttpError {
    /// Why, as the stable word of the `status_page_failed` event.
    pub fn problem(&self) -> StatusStartProblem {
        match self {
            HttpError::Certificate(CertError::Files(_)) => StatusStartProblem::TlsFiles,
            HttpError::Certificate(_) => StatusStartProblem::Certificate,
            HttpError::Bind { source, .. } => match source.kind() {
                std::io::ErrorKind::AddrInUse => StatusStartProblem::AddressInUse,
                std::io::ErrorKind::AddrNotAvailable => StatusStartProblem::AddressNotAvailable,
                _ => StatusStartProblem::CannotListen,
            },
        }
    }
}

/// How a listener's connections are secured.
#[derive(Clone)]
pub(super) enum Transport {
    /// Plain HTTP: loopback only.
    Plain,
    /// HTTPS with the page certificate.
    Tls(Arc<rustls::ServerConfig>),
    /// HTTPS with the box's `[tls]` identity, demanding an operator-CA client certificate; read
    /// per connection so a reload applies.
    OperatorMtls(Arc<OperatorTls>),
}

/// The metrics listener's mTLS: the box's `[tls]` material (its CA and CRL), and who may read.
pub struct OperatorTls {
    /// The services' credential store.
    pub store: Arc<CredentialStore>,
    /// `status.metrics_identities`, or else `management.operator_identities`: every box has a
    /// certificate of the same CA, so the CA alone does not make a client the operator.
    pub identities: Vec<String>,
}

impl Transport {
    pub(super) fn describe(&self) -> &'static str {
        match self {
            Transport::Plain => "http",
            Transport::Tls(_) => "https",
            Transport::OperatorMtls(_) => "https+client-certificate",
        }
    }
}

/// What a site answers; one per listener kind.
pub(super) trait Site: Send + Sync + 'static {
    fn respond(
        self: Arc<Self>,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> impl Future<Output = Response<Body>> + Send;
}

pub(super) async fn bind(address: SocketAddr) -> Result<TcpListener, HttpError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(BIND_RETRY_SECS);
    loop {
        match TcpListener::bind(address).await {
            Ok(listener) => return Ok(listener),
            Err(e)
                if e.raw_os_error() == Some(libc::EADDRNOTAVAIL)
                    && tokio::time::Instant::now() + BIND_RETRY_INTERVAL < deadline =>
            {
                tokio::time::sleep(BIND_RETRY_INTERVAL).await;
            }
            Err(source) => return Err(HttpError::Bind { address, source }),
        }
    }
}

/// Accepts connections until aborted; dropping this future closes every connection it opened.
pub(super) async fn serve<S: Site>(
    listener: TcpListener,
    transport: Transport,
    max_connections: usize,
    site: Arc<S>,
) {
    let limit = Arc::new(Semaphore::new(max_connections));
    let per_address = Arc::new(Mutex::new(AddressCounts::default()));
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                if let Some(suppressed) = ACCEPT_ERROR_LOG.check(Instant::now()) {
                    tracing::warn!(error = %e, suppressed, "status page: accept failed");
                }
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let Some(slot) = AddressSlot::take(&per_address, peer.ip()) else {
            // Over the per-address limit: closed at once, costing no handshake.
            drop(stream);
            continue;
        };
        let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
            // Over the limit: closed at once, costing no handshake.
            drop(stream);
            continue;
        };
        let transport = transport.clone();
        let site = Arc::clone(&site);
        connections.spawn(async move {
            let _permit = permit;
            let _slot = slot;
            let _ = tokio::time::timeout(
                Duration::from_secs(CONNECTION_MAX_SECS),
                connection(stream, peer, transport, site),
            )
            .await;
        });
    }
}

/// Open connections per source address.
#[derive(Debug, Default)]
struct AddressCounts(std::collections::HashMap<std::net::IpAddr, usize>);

/// One connection's place in [`AddressCounts`], given back on drop.
struct AddressSlot {
    counts: Arc<Mutex<AddressCounts>>,
    address: std::net::IpAddr,
}

impl AddressSlot {
    fn take(counts: &Arc<Mutex<AddressCounts>>, address: std::net::IpAddr) -> Option<AddressSlot> {
        let mut map = counts.lock().unwrap_or_else(PoisonError::into_inner);
        let n = map.0.entry(address).or_insert(0);
        if *n >= MAX_CONNECTIONS_PER_ADDRESS {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            counts: Arc::clone(counts),
            address,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut map = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = map.0.get_mut(&self.address) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.0.remove(&self.address);
            }
        }
    }
}

async fn connection<S: Site>(
    stream: TcpStream,
    peer: SocketAddr,
    transport: Transport,
    site: Arc<S>,
) {
    let config = match transport {
        Transport::Plain => {
            http1(TokioIo::new(stream), peer, site).await;
            return;
        }
        Transport::Tls(ref config) => Arc::clone(config),
        Transport::OperatorMtls(ref operator) => {
            operator.store.current().server_config(MinTls::Tls13)
        }
    };
    let handshake = tokio_rustls::TlsAcceptor::from(config).accept(stream);
    match tokio::time::timeout(Duration::from_secs(TLS_HANDSHAKE_TIMEOUT_SECS), handshake).await {
        Ok(Ok(tls)) => {
            if let Transport::OperatorMtls(operator) = &transport {
                let certificate = tls.get_ref().1.peer_certificates().and_then(|c| c.first());
                if let Err(name) = metrics_reader(certificate, &operator.identities) {
                    if let Some(suppressed) = METRICS_REFUSAL_LOG.check(Instant::now()) {
                        tracing::warn!(
                            peer = %peer,
                            identity = %name,
                            suppressed,
                            "metrics listener: {name} is not one of the identities that may read metrics; closed"
                        );
                    }
                    return;
                }
            }
            http1(TokioIo::new(tls), peer, site).await
        }
        Ok(Err(e)) => {
            tracing::debug!(peer = %peer, error = %e, "status page: TLS handshake failed")
        }
        Err(_) => tracing::debug!(peer = %peer, "status page: TLS handshake timed out"),
    }
}

/// `Ok` when the client certificate names one of `identities`, else the name it shows.
fn metrics_reader(
    certificate: Option<&rustls_pki_types::CertificateDer<'_>>,
    identities: &[String],
) -> Result<(), String> {
    let Some(certificate) = certificate else {
        return Err("a client without a certificate".to_string());
    };
    match crate::tls::identity::PeerIdentities::from_certificate(certificate) {
        Ok(ids) if ids.allowed_by(identities).is_some() => Ok(()),
        Ok(ids) => Err(ids
            .display_name()
            .unwrap_or("a certificate without a name")
            .to_string()),
        Err(err) => Err(format!("an unreadable certificate ({err})")),
    }
}

async fn http1<I, S>(io: TokioIo<I>, peer: SocketAddr, site: Arc<S>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: Site,
{
    let service = hyper::service::service_fn(move |request| {
        let site = Arc::clone(&site);
        async move { Ok::<_, Infallible>(finish(site.respond(request, peer).await)) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(HEADER_READ_TIMEOUT_SECS))
        .max_header_size(MAX_HEADER_BYTES)
        .max_headers(MAX_HEADERS)
        .keep_alive(true);
    if let Err(e) = builder.serve_connection(io, service).await {
        tracing::debug!(peer = %peer, error = %e, "status page: connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int1_connections_per_address_are_capped_and_given_back() {
        let counts = Arc::new(Mutex::new(AddressCounts::default()));
        let a: std::net::IpAddr = "198.18.20.2".parse().expect("ip");
        let b: std::net::IpAddr = "198.18.20.3".parse().expect("ip");
        let slots: Vec<AddressSlot> = (0..MAX_CONNECTIONS_PER_ADDRESS)
            .map(|_| AddressSlot::take(&counts, a).expect("slot"))
            .collect();
        assert!(AddressSlot::take(&counts, a).is_none());
        assert!(AddressSlot::take(&counts, b).is_some(), "per address");
        drop(slots);
        assert!(counts.lock().expect("lock").0.is_empty(), "given back");
        assert!(AddressSlot::take(&counts, a).is_some());
    }
}
