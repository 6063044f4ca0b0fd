//! renkei's side of charon's VICI socket, over the `rsvici` crate: load the box's key and
//! certificates, load one connection (`connection.rs`), initiate and terminate it, read its SAs
//! and follow their up/down and rekey events (`sa.rs`).
//!
//! A command charon refuses is an error carrying its message and the log lines it streamed
//! while it worked (where NO_PROPOSAL_CHOSEN shows). Every request has a timeout.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::{Stream, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use super::connection::ConnectionSettings;
use super::sa::{EventEntry, IkeSa, RawIkeSa, SaEvent, SaEventKind};

/// How long a plain request (load, list) may take before charon is taken as hung.
pub const REQUEST_TIMEOUT_SECS: u64 = 10;
/// Added to a command's own timeout (initiate, terminate) for the answer to arrive.
const ANSWER_MARGIN_SECS: u64 = 5;

/// Why talking to charon failed.
#[derive(Debug, thiserror::Error)]
pub enum ViciError {
    /// The socket could not be opened (charon not running, wrong path).
    #[error("cannot connect to charon's VICI socket {socket}: {source}")]
    Connect {
        /// The socket path.
        socket: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The request could not be sent, or its answer not read.
    #[error("VICI {command}: {source}")]
    Transport {
        /// The VICI command.
        command: &'static str,
        /// What rsvici reported.
        source: rsvici::Error,
    },
    /// charon answered that the command failed.
    #[error("VICI {command} failed: {message}{}", log_tail(.log))]
    Refused {
        /// The VICI command.
        command: &'static str,
        /// charon's error message.
        message: String,
        /// The log lines charon streamed during the command.
        log: Vec<String>,
    },
    /// No answer in time.
    #[error("VICI {command}: no answer from charon within {timeout:?}")]
    Timeout {
        /// The VICI command.
        command: &'static str,
        /// How long it waited.
        timeout: Duration,
    },
}

fn log_tail(log: &[String]) -> String {
    match log.last() {
        Some(last) => format!(" (last log line: {last})"),
        None => String::new(),
    }
}

impl ViciError {
    /// True when the peer answered that it accepts none of the box's proposals.
    pub fn peer_refused_proposals(&self) -> bool {
        match self {
            ViciError::Refused { log, .. } => log.iter().any(|l| l.contains("NO_PROPOSAL_CHOSEN")),
            _ => false,
        }
    }
}

/// The box's private key, as charon's `load-key` takes it.
#[derive(Debug, Clone)]
pub struct PrivateKey {
    /// PEM (PKCS#8, or a PKCS#1/SEC1 key).
    pub pem: String,
}

/// Whether a certificate is the box's own (or an intermediate) or a trusted CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateRole {
    /// An end-entity or intermediate certificate.
    EndEntity,
    /// A trust anchor.
    Authority,
}
/// A connection to charon's VICI socket.
pub struct Vici {
    client: rsvici::Client,
}

/// The answer to a command that succeeds or fails.
#[derive(Deserialize)]
struct Outcome {
    success: Option<String>,
    errmsg: Option<String>,
}

#[derive(Deserialize)]
struct ControlLog {
    msg: Option<String>,
}

/// One line of charon's own log (the `log` event: levels up to 1).
#[derive(Debug, Clone, Deserialize)]
pub struct LogLine {
    /// The connection the line is about, when it is about one.
    #[serde(rename = "ikesa-name")]
    pub ike_sa_name: Option<String>,
    /// The text.
    pub msg: Option<String>,
}

#[derive(Serialize)]
struct LoadKey<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    data: &'a str,
}

#[derive(Serialize)]
struct LoadCert<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    flag: &'static str,
    data: &'a str,
}

#[derive(Serialize)]
struct Initiate<'a> {
    /// Absent: an IKE SA alone (a childless connection).
    #[serde(skip_serializing_if = "Option::is_none")]
    child: Option<&'a str>,
    ike: &'a str,
    timeout: u64,
    #[serde(rename = "init-limits")]
    init_limits: bool,
}

#[derive(Serialize)]
struct Terminate<'a> {
    ike: &'a str,
    timeout: u64,
    /// Delete without waiting for the peer's answer (a dead concentrator never answers).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    force: bool,
}

#[derive(Serialize)]
struct ListSas<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    ike: Option<&'a str>,
}

impl Vici {
    /// Connects to charon's socket.
    pub async fn connect(socket: &Path) -> Result<Vici, ViciError> {
        let client = rsvici::unix::connect(socket)
            .await
            .map_err(|source| ViciError::Connect {
                socket: socket.to_path_buf(),
                source,
            })?;
        Ok(Vici { client })
    }

    async fn command<T: Serialize>(
        &mut self,
        command: &'static str,
        message: T,
    ) -> Result<(), ViciError> {
        let timeout = Duration::from_secs(REQUEST_TIMEOUT_SECS);
        let outcome: Outcome = tokio::time::timeout(timeout, self.client.request(command, message))
            .await
            .map_err(|_| ViciError::Timeout { command, timeout })?
            .map_err(|source| ViciError::Transport { command, source })?;
        if outcome.success.as_deref() == Some("yes") {
            return Ok(());
        }
        Err(ViciError::Refused {
            command,
            message: outcome
                .errmsg
                .unwrap_or_else(|| "no reason given".to_string()),
            log: Vec::new(),
        })
    }

    /// Loads the box's private key (`load-key`).
    pub async fn load_key(&mut self, key: &PrivateKey) -> Result<(), ViciError> {
        let message = LoadKey {
            kind: "any",
            data: &key.pem,
        };
        self.command("load-key", message).await
    }

    /// Loads a certificate (`load-cert`).
    pub async fn load_cert(&mut self, pem: &str, role: CertificateRole) -> Result<(), ViciError> {
        let message = LoadCert {
            kind: "x509",
            flag: match role {
                CertificateRole::EndEntity => "none",
                CertificateRole::Authority => "ca",
            },
            data: pem,
        };
        self.command("load-cert", message).await
    }

    /// Loads (or replaces) the connection (`load-conn`). Always-on starts it at once.
    pub async fn load_conn(&mut self, settings: &ConnectionSettings) -> Result<(), ViciError> {
        self.command("load-conn", settings.to_message()).await
    }

    /// Runs a command that streams `control-log` lines until charon answers.
    async fn logged<T: Serialize>(
        &mut self,
        command: &'static str,
        message: T,
        timeout: Duration,
    ) -> Result<Vec<String>, ViciError> {
        let mut log = Vec::new();
        let stream = self
            .client
            .stream_request::<T, ControlLog>(command, "control-log", message);
        let collect = async {
            futures::pin_mut!(stream);
            while let Some(line) = stream.try_next().await? {
                if let Some(msg) = line.msg {
                    log.push(msg);
                }
            }
            Ok::<(), rsvici::Error>(())
        };
        let wait = timeout + Duration::from_secs(ANSWER_MARGIN_SECS);
        match tokio::time::timeout(wait, collect).await {
            Err(_) => Err(ViciError::Timeout {
                command,
                timeout: wait,
            }),
            Ok(Ok(())) => Ok(log),
            Ok(Err(e)) if e.is_command_failed() => Err(ViciError::Refused {
                command,
                message: e.to_string(),
                log,
            }),
            Ok(Err(source)) => Err(ViciError::Transport { command, source }),
        }
    }

    /// Brings the connection's IKE and CHILD SA up (`initiate`), waiting up to `timeout`;
    /// returns charon's log of the attempt.
    pub async fn initiate(
        &mut self,
        name: &str,
        timeout: Duration,
    ) -> Result<Vec<String>, ViciError> {
        let message = Initiate {
            child: Some(name),
            ike: name,
            timeout: millis(timeout),
            init_limits: false,
        };
        self.logged("initiate", message, timeout).await
    }

    /// Takes the connection's IKE SA (and its CHILD SAs) down (`terminate`).
    pub async fn terminate(
        &mut self,
        name: &str,
        timeout: Duration,
    ) -> Result<Vec<String>, ViciError> {
        let message = Terminate {
            ike: name,
            timeout: millis(timeout),
            force: false,
        };
        self.logged("terminate", message, timeout).await
    }

    /// Brings up the IKE SA of the childless connection `name` alone (`initiate` without a
    /// child), waiting up to `timeout`.
    pub async fn initiate_ike(
        &mut self,
        name: &str,
        timeout: Duration,
    ) -> Result<Vec<String>, ViciError> {
        let message = Initiate {
            child: None,
            ike: name,
            timeout: millis(timeout),
            init_limits: false,
        };
        self.logged("initiate", message, timeout).await
    }

    /// Deletes the connection's IKE SAs at once, without waiting for the peer (`terminate`
    /// with `force`): for a concentrator that may be dead.
    pub async fn terminate_now(
        &mut self,
        name: &str,
        timeout: Duration,
    ) -> Result<Vec<String>, ViciError> {
        let message = Terminate {
            ike: name,
            timeout: millis(timeout),
            force: true,
        };
        self.logged("terminate", message, timeout).await
    }

    /// Loads `settings`' standby probe (an IKE SA alone) as connection `name`.
    pub async fn load_probe(
        &mut self,
        settings: &ConnectionSettings,
        name: &str,
    ) -> Result<(), ViciError> {
        self.command("load-conn", settings.to_probe_message(name))
            .await
    }

    /// Every IKE SA charon has (`list-sas`).
    pub async fn list_sas(&mut self) -> Result<Vec<IkeSa>, ViciError> {
        let command = "list-sas";
        let stream = self.client.stream_request::<_, BTreeMap<String, RawIkeSa>>(
            command,
            "list-sa",
            ListSas { ike: None },
        );
        let timeout = Duration::from_secs(REQUEST_TIMEOUT_SECS);
        let events: Vec<BTreeMap<String, RawIkeSa>> =
            tokio::time::timeout(timeout, stream.try_collect())
                .await
                .map_err(|_| ViciError::Timeout { command, timeout })?
                .map_err(|source| ViciError::Transport { command, source })?;
        Ok(events
            .into_iter()
            .flat_map(|event| {
                event
                    .into_iter()
                    .map(|(name, raw)| IkeSa::from_raw(name, raw))
            })
            .collect())
    }

    /// Up/down and rekey events of every SA, until the connection closes. Each is a
    /// subscription on this connection; they end when the stream is dropped.
    pub fn events(&mut self) -> impl Stream<Item = Result<SaEvent, ViciError>> + Send + 'static {
        let streams = SaEventKind::ALL.map(|kind| {
            self.client
                .subscribe::<BTreeMap<String, EventEntry>>(kind.vici_name())
                .map(move |item| match item {
                    Ok(entries) => Ok(SaEvent::from_entries(kind, entries)),
                    Err(source) => Err(ViciError::Transport {
                        command: kind.vici_name(),
                        source,
                    }),
                })
                .boxed()
        });
        futures::stream::select_all(streams)
    }

    /// charon's log lines (what it negotiates on its own, like an always-on SA's retries),
    /// until the connection closes.
    pub fn log_lines(&mut self) -> impl Stream<Item = Result<LogLine, ViciError>> + Send + 'static {
        self.client.subscribe::<LogLine>("log").map(|item| {
            item.map_err(|source| ViciError::Transport {
                command: "log",
                source,
            })
        })
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
