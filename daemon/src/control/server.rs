//! The management API (AUTH-2): HTTPS on the box's tunnel address, only for clients whose
//! certificate chains to the operator CA, with the CRYPTREC profile of `crate::tls`.
//!
//! `POST /v1/config` (body: the config's exact bytes; header `Renkei-Signature`: base64 DER
//! ECDSA signature), `POST /v1/confirm` (optional JSON `{"version": N}`), `GET /v1/config`.
//! Requests become [`Command`]s for the supervisor, which owns the running parts; answers are
//! JSON. Stopping the listener leaves requests in flight to finish: a push that changes the
//! management listener still gets its answer.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinHandle;

use super::MAX_PUSH_BYTES;
use crate::config::{ManagementConfig, MinTls, TlsConfig};
use crate::tls::identity::PeerIdentities;
use crate::tls::store::DEFAULT_WATCH_INTERVAL_SECS;
use crate::tls::{CredentialStore, StoreError};

/// Header carrying the detached signature of a pushed config.
pub const SIGNATURE_HEADER: &str = "renkei-signature";
/// Concurrent management connections; the operator needs one or two.
const MAX_CONNECTIONS: usize = 16;
/// A TLS handshake or a request head slower than this is cut.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest `POST /v1/confirm` body.
const MAX_CONFIRM_BODY: usize = 4096;
/// Largest request head.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// A request for the supervisor, with where to send the answer.
#[derive(Debug)]
pub enum Command {
    /// `POST /v1/config`.
    Push {
        /// The config's bytes.
        bytes: Vec<u8>,
        /// The `Renkei-Signature` header, if any.
        signature: Option<String>,
        /// Identity of the operator's client certificate.
        operator: String,
        /// Where the answer goes.
        reply: oneshot::Sender<Answer>,
    },
    /// `POST /v1/confirm`.
    Confirm {
        /// The version the operator confirms, if named.
        version: Option<u64>,
        /// Identity of the operator's client certificate.
        operator: String,
        /// Where the answer goes.
        reply: oneshot::Sender<Answer>,
    },
    /// `GET /v1/config`.
    Get {
        /// Identity of the operator's client certificate.
        operator: String,
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

/// The running management API.
pub struct ManagementServer {
    listen: SocketAddr,
    settings: (ManagementConfig, TlsConfig),
    accept: JoinHandle<()>,
    watcher: JoinHandle<()>,
}

impl ManagementServer {
    /// Loads the TLS material (box certificate, operator CA as the only client trust anchor),
    /// binds the listener (retrying while the tunnel address appears) and starts serving.
    pub async fn start(
        management: &ManagementConfig,
        tls: &TlsConfig,
        commands: mpsc::Sender<Command>,
    ) -> Result<Self, ServerError> {
        let store = Arc::new(CredentialStore::open(TlsConfig {
            certificate_file: tls.certificate_file.clone(),
            private_key_file: tls.private_key_file.clone(),
            ca_file: management.operator_ca_file.clone(),
            crl_file: None,
        })?);
        let watcher = store.spawn_watcher(Duration::from_secs(DEFAULT_WATCH_INTERVAL_SECS));
        let listener = match crate::proxy::bind_retrying(management.listen).await {
            Ok(listener) => listener,
            Err(source) => {
                watcher.abort();
                return Err(ServerError::Bind {
                    address: management.listen,
                    source,
                });
            }
        };
        let listen = listener.local_addr().unwrap_or(management.listen);
        tracing::info!(listen = %listen, "management API listening");
        let accept = tokio::spawn(accept_loop(listener, store, commands));
        Ok(ManagementServer {
            listen,
            settings: (management.clone(), tls.clone()),
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
    pub fn serves(&self, management: &ManagementConfig, tls: &TlsConfig) -> bool {
        self.settings.0 == *management && self.settings.1 == *tls
    }

    /// Stops accepting; connections in flight finish on their own.
    pub async fn stop(self) {
        self.accept.abort();
        self.watcher.abort();
        let _ = self.accept.await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    store: Arc<CredentialStore>,
    commands: mpsc::Sender<Command>,
) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                tracing::warn!(error = %err, "management API: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
            tracing::warn!(peer = %peer, "management API: too many connections; refused");
            continue;
        };
        let acceptor = store.current().acceptor(MinTls::Tls13);
        let commands = commands.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(err)) => {
                    tracing::warn!(peer = %peer, error = %err, "management API: TLS handshake refused");
                    return;
                }
                Err(_) => {
                    tracing::warn!(peer = %peer, "management API: TLS handshake timed out");
                    return;
                }
            };
            let operator = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|cert| PeerIdentities::from_certificate(cert).ok())
                .and_then(|ids| ids.display_name().map(str::to_string))
                .unwrap_or_else(|| "operator".to_string());
            let service = hyper::service::service_fn(move |request| {
                let commands = commands.clone();
                let operator = operator.clone();
                async move { Ok::<_, Infallible>(route(request, &operator, &commands).await) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HANDSHAKE_TIMEOUT)
                .max_buf_size(MAX_HEAD_BYTES)
                .keep_alive(false)
                .serve_connection(TokioIo::new(tls), service)
                .await;
            if let Err(err) = served {
                tracing::debug!(peer = %peer, error = %err, "management API connection ended");
            }
        });
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfirmBody {
    version: Option<u64>,
}

async fn route(
    request: Request<Incoming>,
    operator: &str,
    commands: &mpsc::Sender<Command>,
) -> Response<Full<Bytes>> {
    let operator = operator.to_string();
    let answer = match (request.method(), request.uri().path()) {
        (&Method::POST, "/v1/config") => {
            let signature = request
                .headers()
                .get(SIGNATURE_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            match read_body(request, MAX_PUSH_BYTES).await {
                Ok(bytes) => {
                    ask(commands, |reply| Command::Push {
                        bytes,
                        signature,
                        operator,
                        reply,
                    })
                    .await
                }
                Err(answer) => {
                    tracing::warn!(
                        event = "refused",
                        pushed_by = %operator,
                        reason = answer.body["error"].as_str().unwrap_or("bad_request"),
                        error = answer.body["message"].as_str().unwrap_or(""),
                        "pushed config refused; nothing changed"
                    );
                    answer
                }
            }
        }
        (&Method::POST, "/v1/confirm") => match read_body(request, MAX_CONFIRM_BODY).await {
            Ok(bytes) => {
                let body = if bytes.iter().all(u8::is_ascii_whitespace) {
                    Ok(ConfirmBody { version: None })
                } else {
                    serde_json::from_slice::<ConfirmBody>(&bytes)
                };
                match body {
                    Ok(body) => {
                        ask(commands, |reply| Command::Confirm {
                            version: body.version,
                            operator,
                            reply,
                        })
                        .await
                    }
                    Err(err) => Answer::error(400, "bad_request", format!("confirm body: {err}")),
                }
            }
            Err(answer) => answer,
        },
        (&Method::GET, "/v1/config") => {
            ask(commands, |reply| Command::Get { operator, reply }).await
        }
        (_, "/v1/config" | "/v1/confirm") => {
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

async fn read_body(request: Request<Incoming>, limit: usize) -> Result<Vec<u8>, Answer> {
    let too_large = || {
        Answer::error(
            413,
            "too_large",
            format!("the body is larger than {limit} bytes"),
        )
    };
    let declared = request
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(request.into_body(), limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes().to_vec()),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(err) => Err(Answer::error(400, "bad_request", format!("body: {err}"))),
    }
}

fn respond(answer: Answer) -> Response<Full<Bytes>> {
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
