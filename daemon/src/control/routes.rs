//! One management request: its route, and the answer from the supervisor ([`Command`]), the
//! update intake, the carrier's hub group or the journal files. A client that is not an
//! operator is answered 403 from the request head alone.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use tokio::sync::{mpsc, oneshot};

use super::admission::Slots;
use super::api::{respond, Answer, Caller, Command, SIGNATURE_HEADER};
use super::audit::{ConfigEvent, Kind};
use super::bodies::{confirm_version, prefer_body, push_too_large, read_body, receive_bundle};
use super::journal_files::{self, JOURNAL_FILE_PREFIX};
use crate::carrier::{CarrierHandle, PreferError, UnknownHub};
use crate::state::events::{ConfigReason, EventLog};
use crate::state::moment::Moment;
use crate::state::operator_contact::OperatorContact;
use crate::update::{IntakeHandle, Refusal};

/// Largest `POST /v1/confirm` body.
const MAX_CONFIRM_BODY: usize = 4096;
/// Largest `POST /v1/hubs/prefer` body.
const MAX_PREFER_BODY: usize = 4096;
/// A preference takes effect this long after its answer: the answer goes back through the hub
/// the operator reached the box by, which may be the one the box is about to leave.
pub const PREFER_AFTER_ANSWER_MS: u64 = 500;

/// What every connection of one server shares.
pub(super) struct Context {
    pub(super) commands: mpsc::Sender<Command>,
    pub(super) events: EventLog,
    /// Where each authenticated operator request is noted.
    pub(super) contact: OperatorContact,
    /// `management.operator_identities`.
    pub(super) operators: Vec<String>,
    pub(super) slots: Slots,
    /// The running config's update intake.
    pub(super) updates: IntakeHandle,
    /// `management.max_push_bytes`.
    pub(super) max_push_bytes: usize,
    /// The link to the data centre: its hub group is steered from here.
    pub(super) carrier: CarrierHandle,
    /// journald's folder, whose files the operator fetches (`paths.journal_dir`).
    pub(super) journal_dir: std::path::PathBuf,
}

/// Who is on the other end of a connection: an operator, or a client the CA vouches for that
/// is not one (a box, say).
#[derive(Debug, Clone)]
pub(super) enum Access {
    Operator(String),
    Refused(String),
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

pub(super) async fn route(
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
