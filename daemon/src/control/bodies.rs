//! The operator's request bodies: read under their size limit and rate floor
//! (`super::body`), and what a confirm or a hub preference says. The parsers are public so the
//! fuzz target `management_request` feeds untrusted bytes through the same code.

use hyper::body::Incoming;
use hyper::Request;
use serde::Deserialize;

use super::api::Answer;
use super::body::{self, BodyError};
use crate::update::spool::PendingInstall;
use crate::update::{Intake, Refusal};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfirmBody {
    version: Option<u64>,
}

/// `POST /v1/hubs/prefer`: the hub to prefer, `null` to clear the preference.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PreferBody {
    pub(super) hub: Option<String>,
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

pub(super) fn prefer_body(bytes: &[u8]) -> Result<PreferBody, serde_json::Error> {
    serde_json::from_slice::<PreferBody>(bytes)
}

/// The operator's body, under the size limit and the rate floor of `body::read_paced`.
pub(super) async fn read_body(request: Request<Incoming>, limit: usize) -> Result<Vec<u8>, Answer> {
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
pub(super) fn push_too_large(answer: Answer, limit_bytes: usize) -> Answer {
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
pub(super) async fn receive_bundle(
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
