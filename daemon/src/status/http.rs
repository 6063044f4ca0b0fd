//! The HTTPS server of the facility administrator's status page (OPS-3, OPS-4, AUTH-1, LOG-3):
//! the page, its JSON API and `/metrics` on the LAN listener; `/metrics` alone on the optional
//! tunnel-side listener; and, for a box with no config yet, the login-free enrolment page.
//!
//! Every request is untrusted: sizes, counts and times are bounded by the constants below, no
//! input is ever unwrapped, and only embedded assets are served (exact paths, no file system).
//! No response ever carries key material.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::assets;
use super::auth::{self, Admission, LoginLimiter, SessionStore};
use super::cert::{self, CertError, PageCertificate};
use super::events::{EventLog, Level};
use super::metrics;
use super::StatusSource;
use crate::config::{MinTls, StatusConfig};
use crate::enrolment::Enrolment;
use crate::ratelimit::LogGate;
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
/// A request body must arrive within this time.
pub const BODY_READ_TIMEOUT_SECS: u64 = 10;
/// A connection is closed after this long, whatever it does (keep-alive included).
pub const CONNECTION_MAX_SECS: u64 = 300;
/// The request line and headers together may not be larger (431 beyond).
pub const MAX_HEADER_BYTES: usize = 8 * 1024;
/// At most this many request headers (431 beyond).
pub const MAX_HEADERS: usize = 64;
/// A request body may not be larger (413 beyond): a login form is tiny.
pub const MAX_BODY_BYTES: usize = 4 * 1024;
/// A too large body up to this size is read and dropped before the 413 goes out, so that the
/// client is done sending and reads the answer; a larger one is cut off.
const DRAIN_BODY_BYTES: usize = 1024 * 1024;
/// Password checks (argon2id, ~19 MiB each) running at once; further logins wait.
pub const MAX_CONCURRENT_PASSWORD_CHECKS: usize = 2;
/// How long a listener keeps retrying an address that does not exist yet (the tunnel address
/// appears only once the tunnel interface is configured).
pub const BIND_RETRY_SECS: u64 = 10;
/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "renkei_session";
/// Header carrying the session's CSRF token on state-changing requests.
pub const CSRF_HEADER: &str = "x-csrf-token";

const BIND_RETRY_INTERVAL: Duration = Duration::from_millis(200);
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
static ACCEPT_ERROR_LOG: LogGate = LogGate::new(Duration::from_secs(10));
static FAILED_LOGIN_EVENT: LogGate = LogGate::new(Duration::from_secs(10));
static METRICS_REFUSAL_LOG: LogGate = LogGate::new(Duration::from_secs(10));

/// Every header the server adds: no framing, no sniffing, no referrer to other sites, nothing
/// from elsewhere.
const SECURITY_HEADERS: &[(&str, &str)] = &[
    (
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
         connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    // Not `no-referrer`: with it Chromium sends `Origin: null` on same-origin form posts.
    ("referrer-policy", "same-origin"),
    ("cache-control", "no-store"),
];

type Body = Full<Bytes>;

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

/// How a listener's connections are secured.
#[derive(Clone)]
enum Transport {
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
    fn describe(&self) -> &'static str {
        match self {
            Transport::Plain => "http",
            Transport::Tls(_) => "https",
            Transport::OperatorMtls(_) => "https+client-certificate",
        }
    }
}

/// What a site answers; one per listener kind.
trait Site: Send + Sync + 'static {
    fn respond(
        self: Arc<Self>,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> impl Future<Output = Response<Body>> + Send;
}

/// What the status document says about the page itself (shown in `renkei status`).
#[derive(Debug, Clone, Serialize)]
pub struct StatusPageInfo {
    /// Where the page listens.
    pub listen: SocketAddr,
    /// `http` (loopback only) or `https`.
    pub scheme: &'static str,
    /// SHA-256 of the page's certificate, to compare with what the browser shows.
    pub certificate_sha256: Option<String>,
    /// True when the box generated the certificate itself.
    pub certificate_self_signed: bool,
    /// The `/metrics`-only listener, if any.
    pub metrics_listen: Option<SocketAddr>,
    /// `https+client-certificate` (operator CA) or `https` (page certificate).
    pub metrics_transport: Option<&'static str>,
    /// Successful logins since start.
    pub logins: u64,
    /// Failed logins (wrong password or refused while delayed) since start.
    pub login_failures: u64,
}

/// Live numbers of the page shared with the status document.
#[derive(Debug)]
pub struct PageStats {
    info: StatusPageInfo,
    logins: AtomicU64,
    login_failures: AtomicU64,
}

impl PageStats {
    /// A copy for the status document.
    pub fn snapshot(&self) -> StatusPageInfo {
        let mut info = self.info.clone();
        info.logins = self.logins.load(Ordering::Relaxed);
        info.login_failures = self.login_failures.load(Ordering::Relaxed);
        info
    }
}

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
        });
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

/// A bound enrolment page, not yet serving (tests learn the port first).
pub struct EnrolmentServer {
    listener: TcpListener,
    transport: Transport,
    site: Arc<EnrolmentSite>,
    certificate_sha256: Option<String>,
}

impl EnrolmentServer {
    /// Binds `listen` for the login-free enrolment page of a box that has no config yet,
    /// with the generated self-signed certificate under `state_dir` (plain HTTP on loopback).
    pub async fn bind(
        listen: SocketAddr,
        state_dir: &Path,
        enrolment: Enrolment,
    ) -> Result<EnrolmentServer, HttpError> {
        let (transport, certificate_sha256) = if listen.ip().is_loopback() {
            (Transport::Plain, None)
        } else {
            let c = cert::load_or_generate(state_dir, listen.ip())?;
            (Transport::Tls(c.config), Some(c.sha256))
        };
        let listener = bind(listen).await?;
        Ok(EnrolmentServer {
            listener,
            transport,
            site: Arc::new(EnrolmentSite::new(enrolment)),
            certificate_sha256,
        })
    }

    /// True when the page is served over HTTPS (every address but loopback).
    pub fn is_https(&self) -> bool {
        matches!(self.transport, Transport::Tls(_))
    }

    /// The bound address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// SHA-256 of the certificate served (`None` for plain HTTP on loopback).
    pub fn certificate_sha256(&self) -> Option<&str> {
        self.certificate_sha256.as_deref()
    }

    /// Serves until `shutdown` completes; then every connection is closed.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send) {
        let address = self
            .local_addr()
            .map_or_else(|| "?".to_string(), |a| a.to_string());
        tracing::info!(
            listen = %address,
            wireguard_public_key = %self.site.enrolment.wireguard_public_key,
            csr_sha256 = self.site.enrolment.csr_sha256.as_deref().unwrap_or("-"),
            certificate_sha256 = self.certificate_sha256.as_deref().unwrap_or("-"),
            "enrolment page listening"
        );
        tokio::select! {
            () = serve(self.listener, self.transport, MAX_PAGE_CONNECTIONS, self.site) => {}
            () = shutdown => {}
        }
    }
}

/// The login-free page of an unenrolled box (OPS-1): the public enrolment data, nothing else.
/// Binds `listen` (HTTPS with a self-signed certificate kept under `state_dir`; plain HTTP on
/// loopback) and serves until `shutdown` completes.
pub async fn serve_enrolment(
    listen: SocketAddr,
    state_dir: &Path,
    enrolment: Enrolment,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), HttpError> {
    EnrolmentServer::bind(listen, state_dir, enrolment)
        .await?
        .serve(shutdown)
        .await;
    Ok(())
}

async fn bind(address: SocketAddr) -> Result<TcpListener, HttpError> {
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
async fn serve<S: Site>(
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

/// Adds the security headers to every response.
fn finish(mut response: Response<Body>) -> Response<Body> {
    let headers = response.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        headers.insert(*name, HeaderValue::from_static(value));
    }
    response
}

fn response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn text(status: StatusCode, message: &str) -> Response<Body> {
    response(status, "text/plain; charset=utf-8", format!("{message}\n"))
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(body) => response(status, "application/json", body),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot encode: {e}"),
        ),
    }
}

fn json_error(status: StatusCode, message: &str) -> Response<Body> {
    json(status, &serde_json::json!({ "error": message }))
}

fn redirect(location: &'static str) -> Response<Body> {
    let mut r = text(StatusCode::SEE_OTHER, "see other");
    r.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(location));
    r
}

fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

fn asset(path: &str) -> Option<Response<Body>> {
    assets::get(path).map(|a| response(StatusCode::OK, a.content_type, Bytes::from_static(a.bytes)))
}

fn is_read(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

/// Reads a small request body, bounded in size and time.
///
/// A body over `MAX_BODY_BYTES` is refused with 413, but up to `DRAIN_BODY_BYTES` of it is read
/// and dropped first: closing on a client that is still sending resets the connection, and the
/// client sees "broken pipe" instead of the 413 (a lingering close, as web servers do).
async fn read_body(request: Request<Incoming>) -> Result<Bytes, Response<Body>> {
    let too_large = || text(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > DRAIN_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(BODY_READ_TIMEOUT_SECS);
    let mut body = request.into_body();
    let mut kept = Vec::new();
    let mut total = 0usize;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(text(StatusCode::REQUEST_TIMEOUT, "request body too slow")),
            Ok(None) => break,
            Ok(Some(Err(_))) => {
                return Err(text(StatusCode::BAD_REQUEST, "unreadable request body"))
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total = total.saturating_add(data.len());
        if total > DRAIN_BODY_BYTES {
            return Err(too_large());
        }
        if total <= MAX_BODY_BYTES {
            kept.extend_from_slice(&data);
        }
    }
    if total > MAX_BODY_BYTES {
        return Err(too_large());
    }
    Ok(Bytes::from(kept))
}

/// The value of one `application/x-www-form-urlencoded` field; `None` if absent or malformed.
pub fn form_field(body: &[u8], name: &str) -> Option<String> {
    for pair in body.split(|b| *b == b'&') {
        let mut parts = pair.splitn(2, |b| *b == b'=');
        let key = percent_decode(parts.next()?)?;
        if key == name {
            return percent_decode(parts.next().unwrap_or_default());
        }
    }
    None
}

fn percent_decode(input: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = input.get(i + 1..i + 3)?;
                let text = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(text, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The session token from the `Cookie` headers, if present.
pub fn session_cookie(headers: &hyper::HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim().to_string())
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

/// A POST from another site's page is refused: when the browser says where the request comes
/// from, it must be this server. `Sec-Fetch-Site` (sent by every current browser, and not
/// settable by a page) must be `same-origin` or `none` (typed or bookmarked); `Origin`, when
/// present, must name this server. A client that sends neither (curl, scripts) is not a browser
/// that another site could drive, and passes.
fn same_origin(request: &Request<Incoming>, https: bool) -> bool {
    if let Some(site) = request.headers().get("sec-fetch-site") {
        if !matches!(site.to_str(), Ok("same-origin" | "none")) {
            return false;
        }
    }
    let Some(origin) = request.headers().get(header::ORIGIN) else {
        return true;
    };
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    match (origin.to_str().ok(), host) {
        (Some(origin), Some(host)) => {
            let scheme = if https { "https" } else { "http" };
            origin == format!("{scheme}://{host}")
        }
        _ => false,
    }
}

/// The admin page, its API and `/metrics` (login required for all but the login page).
struct PageSite {
    source: StatusSource,
    password_hash: String,
    session_ttl: Duration,
    sessions: Mutex<SessionStore>,
    limiter: Mutex<LoginLimiter>,
    checks: Semaphore,
    stats: Arc<PageStats>,
    https: bool,
}

impl PageSite {
    fn session(&self, request: &Request<Incoming>) -> Option<(String, auth::Session)> {
        let token = session_cookie(request.headers())?;
        let session = self
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&token, Instant::now())?;
        Some((token, session))
    }

    fn csrf_ok(request: &Request<Incoming>, session: &auth::Session) -> bool {
        request
            .headers()
            .get(CSRF_HEADER)
            .is_some_and(|v| auth::constant_time_eq(v.as_bytes(), session.csrf_token.as_bytes()))
    }

    fn events(&self) -> Option<&EventLog> {
        self.source.events()
    }

    async fn login(&self, request: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        if !same_origin(&request, self.https) {
            return text(StatusCode::FORBIDDEN, "cross-origin login refused");
        }
        let address = peer.ip();
        let admission = self
            .limiter
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .admit(address, Instant::now());
        if let Admission::Wait(wait) = admission {
            self.stats.login_failures.fetch_add(1, Ordering::Relaxed);
            return login_page_wait(wait);
        }
        let body = match read_body(request).await {
            Ok(body) => body,
            Err(response) => return response,
        };
        let Some(password) = form_field(&body, "password") else {
            return login_page(StatusCode::BAD_REQUEST, assets::LOGIN_ERROR_MISSING);
        };
        let Ok(_permit) = self.checks.acquire().await else {
            return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
        };
        let hash = self.password_hash.clone();
        let ok = tokio::task::spawn_blocking(move || auth::verify_password(&hash, &password))
            .await
            .unwrap_or(false);
        let now = Instant::now();
        if !ok {
            let delay = self
                .limiter
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .failed(address, now);
            self.stats.login_failures.fetch_add(1, Ordering::Relaxed);
            if let (Some(events), Some(suppressed)) = (self.events(), FAILED_LOGIN_EVENT.check(now))
            {
                events.push(
                    Level::Warning,
                    "login",
                    format!(
                        "failed administrator login from {address}; next attempt allowed in {} s{}",
                        delay.as_secs(),
                        if suppressed > 0 {
                            format!(" ({suppressed} more failures not shown)")
                        } else {
                            String::new()
                        }
                    ),
                );
            }
            return login_page(StatusCode::UNAUTHORIZED, assets::LOGIN_ERROR_WRONG);
        }
        self.limiter
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .succeeded(address);
        let created = self
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .create(now);
        let Ok((token, _)) = created else {
            return text(StatusCode::INTERNAL_SERVER_ERROR, "cannot create a session");
        };
        self.stats.logins.fetch_add(1, Ordering::Relaxed);
        if let Some(events) = self.events() {
            events.push(
                Level::Info,
                "login",
                format!("administrator logged in from {address}"),
            );
        }
        let mut r = redirect("/");
        let cookie = format!(
            "{SESSION_COOKIE}={token}; Path=/; Max-Age={}; HttpOnly; Secure; SameSite=Strict",
            self.session_ttl.as_secs()
        );
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            r.headers_mut().insert(header::SET_COOKIE, value);
        }
        r
    }

    async fn tunnel_action(&self, action: &str) -> Response<Body> {
        let tunnel = self.source.tunnel();
        let result = match action {
            "connect" => tunnel.connect_now().await.map_err(|e| e.to_string()),
            _ => {
                tunnel.disconnect().await;
                Ok(())
            }
        };
        if let Some(events) = self.events() {
            let (level, message) = match &result {
                Ok(()) => (Level::Info, format!("administrator: {action} (ok)")),
                Err(e) => (
                    Level::Warning,
                    format!("administrator: {action} failed: {e}"),
                ),
            };
            events.push(level, "tunnel", message);
        }
        match result {
            Ok(()) => json(StatusCode::OK, &serde_json::json!({ "ok": true })),
            Err(e) => json_error(StatusCode::GATEWAY_TIMEOUT, &e),
        }
    }
}

fn login_page(status: StatusCode, error: &str) -> Response<Body> {
    response(status, assets::HTML, assets::login_page(error))
}

fn login_page_wait(wait: Duration) -> Response<Body> {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let mut r = login_page(StatusCode::TOO_MANY_REQUESTS, assets::LOGIN_ERROR_WAIT);
    if let Ok(value) = HeaderValue::from_str(&secs.max(1).to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, value);
    }
    r
}

impl Site for PageSite {
    async fn respond(
        self: Arc<Self>,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<Body> {
        let path = request.uri().path().to_string();
        let method = request.method().clone();
        if let Some(r) = asset(&path) {
            return if is_read(&method) {
                r
            } else {
                method_not_allowed("GET, HEAD")
            };
        }
        let session = self.session(&request);
        match path.as_str() {
            "/" => match (is_read(&method), session) {
                (false, _) => method_not_allowed("GET, HEAD"),
                (true, None) => redirect("/login"),
                (true, Some(_)) => response(StatusCode::OK, assets::HTML, assets::INDEX_HTML),
            },
            "/login" => match method {
                Method::POST => self.login(request, peer).await,
                ref m if is_read(m) => match session {
                    Some(_) => redirect("/"),
                    None => login_page(StatusCode::OK, ""),
                },
                _ => method_not_allowed("GET, HEAD, POST"),
            },
            "/logout" => match (method, session) {
                (Method::POST, Some((token, s))) if Self::csrf_ok(&request, &s) => {
                    self.sessions
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(&token);
                    let mut r = redirect("/login");
                    r.headers_mut().insert(
                        header::SET_COOKIE,
                        HeaderValue::from_static(
                            "renkei_session=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict",
                        ),
                    );
                    r
                }
                (Method::POST, Some(_)) => {
                    json_error(StatusCode::FORBIDDEN, "missing or wrong CSRF token")
                }
                (Method::POST, None) => json_error(StatusCode::UNAUTHORIZED, "login required"),
                _ => method_not_allowed("POST"),
            },
            "/api/v1/status" | "/api/v1/session" | "/api/v1/enrolment" | "/metrics" => {
                if !is_read(&method) {
                    return method_not_allowed("GET, HEAD");
                }
                let Some((_, s)) = session else {
                    return if path == "/metrics" {
                        text(
                            StatusCode::UNAUTHORIZED,
                            "login required (the operator scrapes status.metrics_listen)",
                        )
                    } else {
                        json_error(StatusCode::UNAUTHORIZED, "login required")
                    };
                };
                match path.as_str() {
                    "/api/v1/status" => json(StatusCode::OK, &self.source.document()),
                    "/api/v1/session" => json(
                        StatusCode::OK,
                        &serde_json::json!({
                            "csrf_token": s.csrf_token,
                            "expires_in_secs": s.expires.saturating_duration_since(Instant::now()).as_secs(),
                        }),
                    ),
                    "/api/v1/enrolment" => json(StatusCode::OK, &self.source.document().enrolment),
                    _ => metrics_response(&self.source),
                }
            }
            "/api/v1/tunnel/connect" | "/api/v1/tunnel/disconnect" => {
                if method != Method::POST {
                    return method_not_allowed("POST");
                }
                let Some((_, s)) = session else {
                    return json_error(StatusCode::UNAUTHORIZED, "login required");
                };
                if !Self::csrf_ok(&request, &s) || !same_origin(&request, self.https) {
                    return json_error(StatusCode::FORBIDDEN, "missing or wrong CSRF token");
                }
                if let Err(reason) = self.source.check_tunnel_actions() {
                    return json_error(StatusCode::CONFLICT, &reason);
                }
                let action = if path.ends_with("connect") && !path.ends_with("disconnect") {
                    "connect"
                } else {
                    "disconnect"
                };
                self.tunnel_action(action).await
            }
            _ => text(StatusCode::NOT_FOUND, "not found"),
        }
    }
}

fn metrics_response(source: &StatusSource) -> Response<Body> {
    response(
        StatusCode::OK,
        metrics::CONTENT_TYPE,
        metrics::render(&source.document()),
    )
}

/// The operator's listener: `/metrics` and nothing else.
struct MetricsSite {
    source: StatusSource,
}

impl Site for MetricsSite {
    async fn respond(
        self: Arc<Self>,
        request: Request<Incoming>,
        _peer: SocketAddr,
    ) -> Response<Body> {
        match (request.uri().path(), is_read(request.method())) {
            ("/metrics", true) => metrics_response(&self.source),
            ("/metrics", false) => method_not_allowed("GET, HEAD"),
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: this listener serves only /metrics",
            ),
        }
    }
}

/// The unenrolled box's page: public enrolment data only, no login.
struct EnrolmentSite {
    enrolment: Enrolment,
    /// The page with the data written in, so it shows without JavaScript too.
    html: Bytes,
    /// The CSR file as read at start, for the operator (`None` without one).
    csr_pem: Option<Bytes>,
}

impl EnrolmentSite {
    fn new(enrolment: Enrolment) -> Self {
        let csr_pem = enrolment
            .csr_file
            .as_deref()
            .and_then(|path| match read_small_file(path) {
                Ok(pem) => Some(Bytes::from(pem)),
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "the CSR cannot be offered for download");
                    None
                }
            });
        let mut html = assets::ENROLMENT_HTML.to_string();
        html = fill_element(&html, "wg-public-key", &enrolment.wireguard_public_key);
        if let Some(sha256) = &enrolment.csr_sha256 {
            html = fill_element(&html, "csr-sha256", sha256);
        }
        EnrolmentSite {
            enrolment,
            html: Bytes::from(html),
            csr_pem,
        }
    }
}

/// A regular file of at most [`crate::enrolment::MAX_PEM_FILE_BYTES`].
fn read_small_file(path: &Path) -> std::io::Result<Vec<u8>> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() || meta.len() > crate::enrolment::MAX_PEM_FILE_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not a small regular file",
        ));
    }
    std::fs::read(path)
}

/// `html` with the text of the element `id="<id>"` replaced by `value`, HTML-escaped; `html`
/// unchanged if there is no such element.
fn fill_element(html: &str, id: &str, value: &str) -> String {
    let marker = format!("id=\"{id}\">");
    let Some(start) = html.find(&marker).map(|i| i + marker.len()) else {
        return html.to_string();
    };
    let Some(len) = html.get(start..).and_then(|rest| rest.find('<')) else {
        return html.to_string();
    };
    let escaped: String = value
        .chars()
        .map(|c| match c {
            '&' => "&amp;".to_string(),
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&#39;".to_string(),
            c => c.to_string(),
        })
        .collect();
    format!("{}{escaped}{}", &html[..start], &html[start + len..])
}

/// Path of the CSR download on the enrolment page.
pub const CSR_DOWNLOAD_PATH: &str = "/box.csr";

impl Site for EnrolmentSite {
    async fn respond(
        self: Arc<Self>,
        request: Request<Incoming>,
        _peer: SocketAddr,
    ) -> Response<Body> {
        let path = request.uri().path();
        let read = is_read(request.method());
        if let Some(r) = asset(path) {
            return if read {
                r
            } else {
                method_not_allowed("GET, HEAD")
            };
        }
        match (path, read) {
            ("/", true) => response(StatusCode::OK, assets::HTML, self.html.clone()),
            ("/api/v1/enrolment", true) => json(StatusCode::OK, &self.enrolment),
            (CSR_DOWNLOAD_PATH, true) => match &self.csr_pem {
                Some(pem) => {
                    let mut r = response(StatusCode::OK, "application/pkcs10", pem.clone());
                    r.headers_mut().insert(
                        header::CONTENT_DISPOSITION,
                        HeaderValue::from_static("attachment; filename=\"box.csr\""),
                    );
                    r
                }
                None => text(StatusCode::NOT_FOUND, "this box has no CSR yet"),
            },
            ("/" | "/api/v1/enrolment" | CSR_DOWNLOAD_PATH, false) => {
                method_not_allowed("GET, HEAD")
            }
            _ => text(StatusCode::NOT_FOUND, "not found"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth1_form_fields_decode_and_never_panic() {
        assert_eq!(
            form_field(b"password=p%40ss+word%21&x=1", "password").as_deref(),
            Some("p@ss word!")
        );
        assert_eq!(
            form_field(b"x=1&password=", "password").as_deref(),
            Some("")
        );
        assert_eq!(form_field(b"x=1", "password"), None);
        assert_eq!(form_field(b"password=%zz", "password"), None);
        assert_eq!(form_field(b"password=%4", "password"), None);
        assert_eq!(
            form_field(b"password=%ff%fe", "password"),
            None,
            "not UTF-8"
        );
        assert_eq!(form_field(b"password", "password").as_deref(), Some(""));
        assert_eq!(form_field(b"", "password"), None);
        assert_eq!(
            form_field("password=パスワード".as_bytes(), "password").as_deref(),
            Some("パスワード")
        );
    }

    #[test]
    fn ops1_enrolment_page_has_the_data_written_in_and_escaped() {
        let enrolment = Enrolment {
            wireguard_public_key: "abc+/=".to_string(),
            csr_file: None,
            csr_sha256: Some("AB:CD".to_string()),
        };
        let site = EnrolmentSite::new(enrolment);
        let html = String::from_utf8_lossy(&site.html);
        assert!(html.contains(r#"id="wg-public-key">abc+/=</dd>"#), "{html}");
        assert!(html.contains(r#"id="csr-sha256">AB:CD</dd>"#), "{html}");
        assert!(site.csr_pem.is_none());
        assert_eq!(
            fill_element("<p id=\"x\">-</p>", "x", "<script>&'\""),
            "<p id=\"x\">&lt;script&gt;&amp;&#39;&quot;</p>"
        );
        assert_eq!(fill_element("<p>-</p>", "x", "v"), "<p>-</p>");
        assert_eq!(fill_element("<p id=\"x\">-", "x", "v"), "<p id=\"x\">-");
    }

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

    #[test]
    fn auth1_session_cookie_is_found_among_others() {
        let mut headers = hyper::HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; renkei_session=abc ; b=2"),
        );
        assert_eq!(session_cookie(&headers).as_deref(), Some("abc"));
        let mut headers = hyper::HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("x=1"));
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("renkei_session=def"),
        );
        assert_eq!(session_cookie(&headers).as_deref(), Some("def"));
        let mut headers = hyper::HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("renkei_session="));
        assert_eq!(session_cookie(&headers), None);
        let long = format!("renkei_session={}", "a".repeat(200));
        let mut headers = hyper::HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_str(&long).expect("header"),
        );
        assert_eq!(
            session_cookie(&headers),
            None,
            "oversized tokens are ignored"
        );
    }
}
