//! What the management API and the supervisor exchange: who asked ([`Caller`]), what for
//! ([`Command`]), and the answer ([`Answer`]), written as JSON by [`respond`].

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use tokio::sync::oneshot;

/// Header carrying the detached signature of a pushed config.
pub const SIGNATURE_HEADER: &str = "renkei-signature";

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

/// The answer as an HTTP response with its JSON body.
pub fn respond(answer: Answer) -> Response<Full<Bytes>> {
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
