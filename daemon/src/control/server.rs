//! The management API (AUTH-2): HTTPS on the box's tunnel address, only for clients whose
//! certificate chains to the operator CA *and* names one of `management.operator_identities`
//! (the CA signs the boxes' certificates too), with the CRYPTREC profile of `crate::tls`. The
//! listener is bound to the TUN device, so a LAN host that routes the tunnel address to the box
//! cannot reach it (Linux otherwise accepts packets for a local address on any interface).
//!
//! `POST /v1/config` (body: the config's exact bytes; header `Renkei-Signature`: base64 DER
//! ECDSA signature), `POST /v1/confirm` (optional JSON `{"version": N}`), `GET /v1/config`,
//! `GET /v1/status` (the box's facts for `renkei fleet status`);
//! `POST /v1/update` (body: a RAUC bundle, streamed to the spool, never held in memory) and
//! `GET /v1/update`, answered here with `crate::update` rather than by the supervisor: a
//! bundle's check takes long and changes nothing that runs. `GET /v1/hubs` and
//! `POST /v1/hubs/prefer` (`{"hub": "NAME"}`, or `{"hub": null}` to clear) read and steer a
//! facility's hub group (AVL-4) through the carrier, also without the supervisor. `GET
//! /v1/journal` lists the box's sealed journal files and `GET /v1/journal/<machine>/<file>`
//! sends one (LOG-4, `super::journal_files`).
//! Requests become [`Command`]s for the supervisor, which owns the running parts; answers are
//! JSON. Stopping the listener leaves requests in flight to finish: a push that changes the
//! management listener still gets its answer.
//!
//! It cannot be starved (INT-1, AVL-1): a revoked certificate fails the handshake (the
//! operator CRL); after the handshake connections take a slot by certificate identity
//! (`super::admission`), so boxes of the same CA never take the operator's; a non-operator is
//! answered 403 before any body is read; a body must keep a minimum rate (`super::body`); and
//! refusals reach the log and the event ring through the ring's rate limit.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};
use tokio::task::{AbortHandle, JoinHandle};

use super::admission::{Pool, Slot, Slots};
use super::audit::{ConfigEvent, Kind};
use super::body::{self, BodyError};
use super::device_listener::DeviceListener;
use super::journal_files::{self, JOURNAL_FILE_PREFIX};
use crate::carrier::{CarrierHandle, PreferError, UnknownHub};
use crate::config::{ManagementConfig, MinTls, TlsConfig};
use crate::state::events::{Admission, ConfigReason, EventLog, Occurrence, TlsRefusal};
use crate::state::moment::Moment;
use crate::state::operator_contact::OperatorContact;
use crate::tls::identity::PeerIdentities;
use crate::tls::store::DEFAULT_WATCH_INTERVAL_SECS;
use crate::tls::{refusal, CredentialStore, StoreError};
use crate::update::spool::PendingInstall;
use crate::update::{Intake, IntakeHandle, Refusal};

/// Header carrying the detached signature of a pushed config.
pub const SIGNATURE_HEADER: &str = "renkei-signature";
/// TLS handshakes in progress at once; a new connection beyond this ends the oldest one, so
/// stalled handshakes cannot keep the operator out.
pub const MAX_PENDING_HANDSHAKES: usize = 64;
/// A TLS handshake slower than this is cut.
pub const HANDSHAKE_TIMEOUT_SECS: u64 = 10;
/// A request head slower than this is cut (the body has its own rule, `body::read_paced`).
pub const HEADER_READ_TIMEOUT_SECS: u64 = 10;
/// Largest `POST /v1/confirm` body.
const MAX_CONFIRM_BODY: usize = 4096;
/// Largest `POST /v1/hubs/prefer` body.
const MAX_PREFER_BODY: usize = 4096;
/// A preference takes effect this long after its answer: the answer goes back through the hub
/// the operator reached the box by, which may be the one the box is about to leave.
pub const PREFER_AFTER_ANSWER_MS: u64 = 500;
/// Largest request head.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// At most this long is spent reading and dropping what a client still sends after its answer.
const LINGER_MAX_SECS: u64 = 2;
/// At most this much of it is read.
const LINGER_MAX_BYTES: usize = 1024 * 1024;
const LINGER_BUFFER_BYTES: usize = 16 * 1024;

/// Who sent a management request, and when it arrived (auto_confirm counts only requests that
/// arrived after an apply).
#[derive(Debug, Clone)]
pub struct Caller {
    /// The entry of `management.operator_identities` the client certificate matched.
    pub identity: String,
    /// The client's address (a tunnel address).
    pub address: SocketAddr,
    /// When its connection was accepted: the TLS handshake that followed crossed the network
    /// as it was from then on.
    pub arrived: Instant,
}

/// A request for the supervisor, with where to send the answer.
#[derive(Debug)]
pub enum Command {
    /// `POST /v1/config`.
    Push {
        /// The config's bytes.
        bytes: Vec<u8>,
        /// The `Renkei-Signature` header, if any.
        signature: Option<String>,
        /// The operator.
        caller: Caller,
        /// Where the answer goes.
        reply: oneshot::Sender<Answer>,
    },
    /// `POST /v1/confirm`.
    Confirm {
        /// The version the operator confirms, if named.
        version: Option<u64>,
        /// The operator.
        caller: Caller,
        /// Where the answer goes.
        reply: oneshot::Sender<Answer>,
    },
    /// `GET /v1/config`.
    Get {
        /// The operator.
        caller: Caller,
        /// Where the answer goes.
        reply: oneshot::Sender<Answer>,
    },
    /// `GET /v1/status`: the box's facts for the operator's fleet table (facility, role,
    /// carrier, config, certificates, firmware), answered by the supervisor, which owns them.
    Status {
        /// Where the answer goes.
        reply: oneshot::Sender<Answer>,
    },
}

/// An HTTP status and a JSON body.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status code.
    pub status: u16,
    /// The JSON body.
    pub body: serde_json::Value,
}

impl Answer {
    /// An error answer `{"error": code, "message": message}`.
    pub fn error(status: u16, code: &str, message: impl std::fmt::Display) -> Self {
        Answer {
            status,
            body: serde_json::json!({ "error": code, "message": message.to_string() }),
        }
    }
}

/// Why the management API could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The box certificate or the operator CA could not be loaded.
    #[error("management API TLS: {0}")]
    Tls(#[from] StoreError),
    /// The listen address could not be bound.
    #[error("management API: cannot listen on {address}: {source}")]
    Bind {
        /// The configured address.
        address: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// The TLS files the management API loads: the box's certificate and key, with the operator
/// CA as the only trust anchor for clients. `renkei check` loads the same (`crate::preflight`).
pub fn management_tls(management: &ManagementConfig, tls: &TlsConfig) -> TlsConfig {
    TlsConfig {
        certificate_file: tls.certificate_file.clone(),
        private_key_file: tls.private_key_file.clone(),
        ca_file: management.operator_ca_file.clone(),
        crl_file: management.operator_crl_file.clone(),
    }
}

/// The daemon's running parts the management API talks to.
pub struct DaemonParts {
    /// The link to the data centre (the hub group is steered through it).
    pub carrier: CarrierHandle,
    /// Requests for the supervisor.
    pub commands: mpsc::Sender<Command>,
    /// Where refusals are noted besides the log (LOG-2).
    pub events: EventLog,
    /// Where each authenticated operator request is noted.
    pub contact: OperatorContact,
    /// The running config's update intake.
    pub updates: IntakeHandle,
}

/// The running management API.
pub struct ManagementServer {
    listen: SocketAddr,
    settings: (ManagementConfig, TlsConfig, std::path::PathBuf),
    accept: JoinHandle<()>,
    watcher: JoinHandle<()>,
}

impl ManagementServer {
    /// Loads the TLS material (box certificate, operator CA as the only client trust anchor),
    /// binds the listener to `device` (the TUN device; retrying while the tunnel address
    /// appears) and starts serving. Refusals go to `events` as well as the log (LOG-2).
    pub async fn start(
        management: &ManagementConfig,
        tls: &TlsConfig,
        journal_dir: &std::path::Path,
        parts: DaemonParts,
    ) -> Result<Self, ServerError> {
        let DaemonParts {
            carrier,
            commands,
            events,
            contact,
            updates,
        } = parts;
        let store = Arc::new(CredentialStore::open(management_tls(management, tls))?);
        let device = carrier.device();
        let device = device.as_str();
        let watcher = store.spawn_watcher(Duration::from_secs(DEFAULT_WATCH_INTERVAL_SECS));
        let listener = match DeviceListener::bind(management.listen, device).await {
            Ok(listener) => listener,
            Err(source) => {
                watcher.abort();
                return Err(ServerError::Bind {
                    address: management.listen,
                    source,
                });
            }
        };
        let listen = management.listen;
        tracing::info!(listen = %listen, device, "management API listening");
        let context = Arc::new(Context {
            commands,
            events,
            contact,
            operators: management.operator_identities.clone(),
            slots: Slots::new(),
            updates,
            max_push_bytes: management.max_push_bytes,
            carrier,
            journal_dir: journal_dir.to_path_buf(),
        });
        let accept = tokio::spawn(accept_loop(listener, store, context));
        Ok(ManagementServer {
            listen,
            settings: (management.clone(), tls.clone(), journal_dir.to_path_buf()),
            accept,
            watcher,
        })
    }

    /// Where it listens.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    /// True when `management` and `tls` are what this server was started with: an apply
    /// that changes neither keeps it running.
    pub fn serves(
        &self,
        management: &ManagementConfig,
        tls: &TlsConfig,
        journal_dir: &std::path::Path,
    ) -> bool {
        self.settings.0 == *management && self.settings.1 == *tls && self.settings.2 == journal_dir
    }

    /// Stops accepting; connections in flight finish on their own.
    pub async fn stop(self) {
        self.accept.abort();
        self.watcher.abort();
        let _ = self.accept.await;
    }
}

/// What every connection of one server shares.
struct Context {
    commands: mpsc::Sender<Command>,
    events: EventLog,
    /// Where each authenticated operator request is noted.
    contact: OperatorContact,
    /// `management.operator_identities`.
    operators: Vec<String>,
    slots: Slots,
    /// The running config's update intake.
    updates: IntakeHandle,
    /// `management.max_push_bytes`.
    max_push_bytes: usize,
    /// The link to the data centre: its hub group is steered from here.
    carrier: CarrierHandle,
    /// journald's folder, whose files the operator fetches (`paths.journal_dir`).
    journal_dir: std::path::PathBuf,
}

/// Who is on the other end of a connection: an operator, or a client the CA vouches for that
/// is not one (a box, say).
#[derive(Debug, Clone)]
enum Access {
    Operator(String),
    Refused(String),
}

impl Context {
    fn access(&self, certificate: Option<&rustls_pki_types::CertificateDer<'_>>) -> Access {
        let Some(certificate) = certificate else {
            return Access::Refused("a client without a certificate".to_string());
        };
        match PeerIdentities::from_certificate(certificate) {
            Ok(ids) => match ids.allowed_by(&self.operators) {
                Some(allowed) => Access::Operator(allowed.to_string()),
                None => Access::Refused(
                    ids.display_name()
                        .unwrap_or("a certificate without a name")
                        .to_string(),
                ),
            },
            Err(err) => Access::Refused(format!("an unreadable certificate ({err})")),
        }
    }

    /// A refused handshake (a revoked or foreign certificate, none, a timeout): logged and
    /// recorded through the ring's rate limit.
    fn tls_refused(&self, peer: SocketAddr, reason: TlsRefusal, why: &str) {
        const KEY: &str = "tls_refused";
        if self.events.admit("config", KEY) == Admission::Suppress {
            return;
        }
        tracing::warn!(
            peer = %peer,
            reason = reason.as_str(),
            error = why,
            "management API: TLS handshake refused"
        );
        self.events.record_limited(
            KEY,
            Occurrence::ManagementTlsRefused {
                address: peer,
                reason,
                error: why.to_string(),
            },
        );
    }

    /// A slot for `access`, or `None` (logged through the ring's rate limit) when its pool is
    /// full.
    fn slot(&self, access: &Access, peer: SocketAddr) -> Option<Slot> {
        let (pool, name) = match access {
            Access::Operator(name) => (Pool::Operator, name),
            Access::Refused(name) => (Pool::Other(name.clone()), name),
        };
        let slot = self.slots.take(pool);
        if slot.is_none() {
            self.events.push_limited(
                "no_slot",
                Occurrence::ManagementNoSlot {
                    client: name.clone(),
                    address: peer,
                },
            );
        }
        slot
    }
}

/// Handshakes in progress, oldest first; a new connection beyond [`MAX_PENDING_HANDSHAKES`]
/// aborts the oldest.
#[derive(Default)]
struct Pending {
    next_id: u64,
    /// The abort handle is set once the task is spawned.
    tasks: VecDeque<(u64, Option<AbortHandle>)>,
}

/// Takes a connection out of [`Pending`] when its handshake ends, however it ends.
struct PendingEntry {
    pending: Arc<Mutex<Pending>>,
    id: u64,
}

impl PendingEntry {
    fn finish(&mut self) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        pending.tasks.retain(|(id, _)| *id != self.id);
    }
}

impl Drop for PendingEntry {
    fn drop(&mut self) {
        self.finish();
    }
}

async fn accept_loop(
    mut listener: DeviceListener,
    store: Arc<CredentialStore>,
    context: Arc<Context>,
) {
    let pending = Arc::new(Mutex::new(Pending::default()));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                tracing::warn!(error = %err, "management API: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let arrived = Instant::now();
        let acceptor = store.current().acceptor(MinTls::Tls13);
        let context = Arc::clone(&context);
        let id = {
            let mut state = pending.lock().unwrap_or_else(PoisonError::into_inner);
            if state.tasks.len() >= MAX_PENDING_HANDSHAKES {
                if let Some((_, Some(oldest))) = state.tasks.pop_front() {
                    oldest.abort();
                }
            }
            state.next_id += 1;
            let id = state.next_id;
            state.tasks.push_back((id, None));
            id
        };
        let mut entry = PendingEntry {
            pending: Arc::clone(&pending),
            id,
        };
        let task = tokio::spawn(async move {
            let handshake = acceptor.accept(stream);
            let timeout = Duration::from_secs(HANDSHAKE_TIMEOUT_SECS);
            let tls = match tokio::time::timeout(timeout, handshake).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(err)) => {
                    context.tls_refused(peer, refusal::from_io(&err), &err.to_string());
                    return;
                }
                Err(_) => {
                    context.tls_refused(peer, TlsRefusal::HandshakeTimeout, "timed out");
                    return;
                }
            };
            entry.finish();
            let access = context.access(
                tls.get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first()),
            );
            let Some(_slot) = context.slot(&access, peer) else {
                return;
            };
            let service = hyper::service::service_fn(move |request| {
                let context = Arc::clone(&context);
                let access = access.clone();
                async move { Ok::<_, Infallible>(route(request, access, peer, arrived, &context).await) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(HEADER_READ_TIMEOUT_SECS))
                .max_buf_size(MAX_HEAD_BYTES)
                .keep_alive(false)
                .serve_connection(TokioIo::new(tls), service)
                .without_shutdown()
                .await;
            match served {
                Ok(parts) => linger(parts.io.into_inner()).await,
                Err(err) => {
                    tracing::debug!(peer = %peer, error = %err, "management API connection ended")
                }
            }
        });
        // Still pending (its handshake has not ended yet): it can now be aborted.
        let mut state = pending.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = state.tasks.iter_mut().find(|(i, _)| *i == id) {
            entry.1 = Some(task.abort_handle());
        }
    }
}

/// Closes a connection whose answer is written: the write side first, then what the client
/// still sends is read and dropped until it closes too, within [`LINGER_MAX_BYTES`] and
/// [`LINGER_MAX_SECS`]. A refusal answered from the request head (413, 403) leaves the body
/// unread; closing at once with unread bytes makes the kernel send a reset, which can destroy
/// the answer in the client's receive buffer before the client reads it.
async fn linger<S>(mut stream: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let drain = async {
        if stream.shutdown().await.is_err() {
            return;
        }
        let mut buffer = vec![0u8; LINGER_BUFFER_BYTES];
        let mut dropped = 0usize;
        while dropped < LINGER_MAX_BYTES {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => dropped += n,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(LINGER_MAX_SECS), drain).await;
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfirmBody {
    version: Option<u64>,
}

/// `POST /v1/hubs/prefer`: the hub to prefer, `null` to clear the preference.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PreferBody {
    hub: Option<String>,
}

/// The version a `POST /v1/confirm` body names: an empty (or blank) body confirms whatever is
/// pending, `{"version": N}` only version N. Public so the fuzz target `management_request`
/// feeds the operator's untrusted bytes through the same parser.
pub fn confirm_version(bytes: &[u8]) -> Result<Option<u64>, serde_json::Error> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice::<ConfirmBody>(bytes).map(|body| body.version)
}

/// The hub a `POST /v1/hubs/prefer` body names (`None`: clear the preference); public for the
/// fuzz target like [`confirm_version`].
pub fn preferred_hub(bytes: &[u8]) -> Result<Option<String>, serde_json::Error> {
    prefer_body(bytes).map(|body| body.hub)
}

fn prefer_body(bytes: &[u8]) -> Result<PreferBody, serde_json::Error> {
    serde_json::from_slice::<PreferBody>(bytes)
}

/// The hub group's state, or 409 when the box has none.
fn hubs_answer(carrier: &CarrierHandle) -> Answer {
    match carrier.hubs() {
        Some(hubs) => Answer {
            status: 200,
            body: serde_json::to_value(hubs).unwrap_or_default(),
        },
        None => Answer::error(409, "no_hub_group", PreferError::NoGroup),
    }
}

/// The operator's preference for a hub of the group (maintenance): checked and answered now,
/// applied [`PREFER_AFTER_ANSWER_MS`] later (the box moves then when that hub is healthy, and
/// holds until cleared).
fn prefer_hub(bytes: &[u8], caller: &Caller, carrier: &CarrierHandle) -> Answer {
    let body = match prefer_body(bytes) {
        Ok(body) => body,
        Err(err) => return Answer::error(400, "bad_request", format!("prefer body: {err}")),
    };
    let Some(hubs) = carrier.hubs() else {
        return Answer::error(409, "no_hub_group", PreferError::NoGroup);
    };
    if let Some(name) = &body.hub {
        if !hubs.members.iter().any(|m| m.name == *name) {
            let err = PreferError::Unknown(UnknownHub(name.clone()));
            return Answer::error(404, "unknown_hub", err);
        }
    }
    tracing::info!(
        operator = %caller.identity,
        preferred = body.hub.as_deref().unwrap_or("none"),
        "management API: hub preference accepted"
    );
    let carrier = carrier.clone();
    let hub = body.hub.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(PREFER_AFTER_ANSWER_MS)).await;
        if let Err(err) = carrier.prefer_hub(hub.as_deref()).await {
            tracing::warn!(error = %err, "the hub preference could not be applied");
        }
    });
    Answer {
        status: 202,
        body: serde_json::json!({
            "preferred": body.hub,
            "applied_after_ms": PREFER_AFTER_ANSWER_MS,
            "hubs": hubs,
        }),
    }
}

async fn route(
    request: Request<Incoming>,
    access: Access,
    peer: SocketAddr,
    arrived: Instant,
    context: &Context,
) -> Response<Full<Bytes>> {
    let commands = &context.commands;
    let (method, path) = (request.method().clone(), request.uri().path().to_string());
    let identity = match access {
        Access::Operator(identity) => {
            // Proof for a closed-network carrier that the operator still reaches the box.
            context.contact.record(Moment::now());
            identity
        }
        Access::Refused(name) => {
            // Answered from the request head alone: no body of a non-operator is ever read.
            drop(request);
            let answer = Answer::error(
                403,
                "not_operator",
                format!(
                    "{name} is not one of management.operator_identities; only the operator may use this API"
                ),
            );
            ConfigEvent::new(
                Kind::Refused,
                format!("{method} {path} from {peer}: {name} is not an operator identity"),
            )
            .pushed_by(Some(&name))
            .reason(ConfigReason::NotOperator)
            .emit(Some(&context.events));
            return respond(answer);
        }
    };
    let caller = Caller {
        identity,
        address: peer,
        arrived,
    };
    let answer = match (&method, path.as_str()) {
        (&Method::POST, "/v1/config") => {
            let signature = request
                .headers()
                .get(SIGNATURE_HEADER)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.trim().is_empty())
                .map(str::to_string);
            match read_body(request, context.max_push_bytes)
                .await
                .map_err(|answer| push_too_large(answer, context.max_push_bytes))
            {
                Ok(bytes) => {
                    ask(commands, |reply| Command::Push {
                        bytes,
                        signature,
                        caller,
                        reply,
                    })
                    .await
                }
                Err(answer) => {
                    let reason = answer.body["error"]
                        .as_str()
                        .and_then(ConfigReason::from_word)
                        .unwrap_or(ConfigReason::BadRequest);
                    ConfigEvent::new(
                        Kind::Refused,
                        format!(
                            "{}; nothing changed",
                            answer.body["message"].as_str().unwrap_or("")
                        ),
                    )
                    .pushed_by(Some(&caller.identity))
                    .reason(reason)
                    .emit(Some(&context.events));
                    answer
                }
            }
        }
        (&Method::POST, "/v1/confirm") => match read_body(request, MAX_CONFIRM_BODY).await {
            Ok(bytes) => match confirm_version(&bytes) {
                Ok(version) => {
                    ask(commands, |reply| Command::Confirm {
                        version,
                        caller,
                        reply,
                    })
                    .await
                }
                Err(err) => Answer::error(400, "bad_request", format!("confirm body: {err}")),
            },
            Err(answer) => answer,
        },
        (&Method::GET, "/v1/config") => ask(commands, |reply| Command::Get { caller, reply }).await,
        (&Method::GET, "/v1/status") => ask(commands, |reply| Command::Status { reply }).await,
        (&Method::POST, "/v1/update") => match context.updates.current() {
            Some(intake) => {
                let outcome = match context.updates.begin() {
                    Ok(_receiving) => receive_bundle(request, &intake, &caller.identity).await,
                    Err(busy) => Err(busy),
                };
                intake.record(&outcome, &caller.identity, Some(&context.events));
                match outcome {
                    Ok(pending) => Answer {
                        status: 200,
                        body: serde_json::json!({ "result": "accepted", "pending": pending }),
                    },
                    Err(refusal) => {
                        Answer::error(refusal.http_status(), refusal.reason().as_str(), &refusal)
                    }
                }
            }
            None => Answer::error(404, "no_update", Refusal::NotConfigured),
        },
        (&Method::GET, "/v1/update") => match context.updates.current() {
            Some(intake) => Answer {
                status: 200,
                body: serde_json::to_value(intake.status()).unwrap_or_default(),
            },
            None => Answer::error(404, "no_update", Refusal::NotConfigured),
        },
        (&Method::GET, "/v1/journal") => journal_files::list(&context.journal_dir).await,
        (&Method::GET, name) if name.starts_with(JOURNAL_FILE_PREFIX) => {
            let name = &name[JOURNAL_FILE_PREFIX.len()..];
            return journal_files::file(&context.journal_dir, name, &caller.identity).await;
        }
        (&Method::GET, "/v1/hubs") => hubs_answer(&context.carrier),
        (&Method::POST, "/v1/hubs/prefer") => match read_body(request, MAX_PREFER_BODY).await {
            Ok(bytes) => prefer_hub(&bytes, &caller, &context.carrier),
            Err(answer) => answer,
        },
        (
            _,
            "/v1/config" | "/v1/confirm" | "/v1/status" | "/v1/update" | "/v1/hubs"
            | "/v1/hubs/prefer" | "/v1/journal",
        ) => Answer::error(405, "method_not_allowed", "method not allowed"),
        (_, name) if name.starts_with(JOURNAL_FILE_PREFIX) => {
            Answer::error(405, "method_not_allowed", "method not allowed")
        }
        _ => Answer::error(404, "not_found", "no such endpoint"),
    };
    respond(answer)
}

async fn ask(
    commands: &mpsc::Sender<Command>,
    command: impl FnOnce(oneshot::Sender<Answer>) -> Command,
) -> Answer {
    let (reply, answer) = oneshot::channel();
    if commands.send(command(reply)).await.is_err() {
        return Answer::error(503, "stopping", "the daemon is stopping");
    }
    answer
        .await
        .unwrap_or_else(|_| Answer::error(503, "stopping", "the daemon is stopping"))
}

/// The operator's body, under the size limit and the rate floor of `body::read_paced`.
async fn read_body(request: Request<Incoming>, limit: usize) -> Result<Vec<u8>, Answer> {
    let declared = request
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    body::read_paced(request.into_body(), declared, limit)
        .await
        .map_err(|err| match err {
            BodyError::TooLarge { .. } => Answer::error(413, "too_large", &err),
            BodyError::TooSlow { .. } => Answer::error(408, "too_slow", &err),
            BodyError::Broken(_) => Answer::error(400, "bad_request", &err),
            BodyError::Sink(_) => Answer::error(500, "spool", &err),
        })
}

/// A push's 413 names the setting that caps it, so the operator knows what to raise.
fn push_too_large(answer: Answer, limit_bytes: usize) -> Answer {
    if answer.status != 413 {
        return answer;
    }
    Answer::error(
        413,
        "too_large",
        format!("the config is larger than management.max_push_bytes ({limit_bytes} bytes)"),
    )
}

/// Streams a bundle into a spool file of its own, under the size limit and the rate floor
/// (`Content-Length` beyond the limit is refused before a file exists), then checks and arms it.
/// A refused bundle's file is removed.
async fn receive_bundle(
    request: Request<Incoming>,
    intake: &Intake,
    by: &str,
) -> Result<PendingInstall, Refusal> {
    intake.refuse_before_receiving()?;
    let limit = intake.max_bundle_bytes();
    let declared = request
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(Refusal::TooLarge { limit_bytes: limit });
    }
    let mut incoming = intake.spool().incoming().await.map_err(Refusal::Spool)?;
    body::stream_paced(request.into_body(), declared, limit, incoming.file())
        .await
        .map_err(|err| match err {
            BodyError::TooLarge { .. } => Refusal::TooLarge { limit_bytes: limit },
            BodyError::Sink(message) => Refusal::Spool(crate::durable::FileError {
                path: incoming.path().to_path_buf(),
                source: std::io::Error::other(message),
            }),
            BodyError::TooSlow { .. } | BodyError::Broken(_) => Refusal::Upload(err.to_string()),
        })?;
    intake.check_and_arm(incoming, by).await
}

pub(super) fn respond(answer: Answer) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec_pretty(&answer.body).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() =
        StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn int1_confirm_and_prefer_bodies_are_read_or_refused() {
        assert_eq!(confirm_version(b"").ok(), Some(None));
        assert_eq!(confirm_version(b" \r\n").ok(), Some(None));
        assert_eq!(confirm_version(br#"{"version": 7}"#).ok(), Some(Some(7)));
        assert!(confirm_version(br#"{"version": -1}"#).is_err());
        assert!(confirm_version(br#"{"version": 1, "x": 2}"#).is_err());
        assert!(confirm_version(b"\xff{").is_err());
        assert_eq!(
            preferred_hub(br#"{"hub": "hub-a"}"#).ok(),
            Some(Some("hub-a".to_string()))
        );
        assert_eq!(preferred_hub(br#"{"hub": null}"#).ok(), Some(None));
        assert!(preferred_hub(b"").is_err());
    }

    const ANSWER: &[u8] = b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\n\r\n";
    /// More than the server's unread receive buffer holds, so the client is still writing when
    /// the answer arrives (the lab's refused push is 300 KiB), and less than what is drained.
    const UPLOAD_BYTES: usize = 768 * 1024;
    const SMALL_BUFFER_BYTES: u32 = 16 * 1024;

    /// A client still sending the body when the answer comes (the management API's 413 and 403
    /// are answered from the request head) can finish sending and then read the answer: HTTP
    /// clients such as `renkei push` give up on a write error without reading the answer.
    #[tokio::test]
    async fn int1_an_answer_sent_before_the_body_reaches_a_client_still_sending_it() {
        // Small socket buffers: the upload cannot sit in them before the server answers.
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .set_recv_buffer_size(SMALL_BUFFER_BYTES)
            .expect("rcvbuf");
        socket
            .bind("127.0.0.1:0".parse().expect("address"))
            .expect("bind");
        let listener = socket.listen(1).expect("listen");
        let address = listener.local_addr().expect("address");
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let mut head = [0u8; 64];
            stream.read_exact(&mut head).await.expect("head");
            stream.write_all(ANSWER).await.expect("answer");
            linger(stream).await;
        });
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .set_send_buffer_size(SMALL_BUFFER_BYTES)
            .expect("sndbuf");
        let mut client = socket.connect(address).await.expect("connect");
        let chunk = vec![b'x'; 64 * 1024];
        let mut sent = 0;
        while sent < UPLOAD_BYTES {
            match client.write_all(&chunk).await {
                Ok(()) => sent += chunk.len(),
                Err(_) => break,
            }
        }
        assert_eq!(sent, UPLOAD_BYTES, "the upload was cut off by a reset");
        client.shutdown().await.expect("shutdown");
        let mut answer = Vec::new();
        let read = client.read_to_end(&mut answer).await;
        assert!(
            answer.starts_with(ANSWER),
            "the answer was lost ({read:?}, {} bytes read, {sent} sent)",
            answer.len()
        );
        server.await.expect("server");
    }
}
