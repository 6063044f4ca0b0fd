//! The management API's journal endpoints (LOG-4): `GET /v1/journal` lists the box's journal
//! files (`crate::journal::files`), `GET /v1/journal/<machine>/<file>` sends one as it is on
//! the disk, sealed, for the operator to check with the box's verification key. The box has no
//! login: this is how its files reach the operator. One file is read at a time (a file is held
//! in memory while it is sent; journald's files on the box are a few MiB).

use std::path::Path;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};
use tokio::sync::Semaphore;

use super::api::{respond, Answer};
use crate::journal::files::{self, FilesError};

/// The path prefix of one file's endpoint.
pub const JOURNAL_FILE_PREFIX: &str = "/v1/journal/";

/// One file in memory at a time.
static SENDING: Semaphore = Semaphore::const_new(1);

/// The answer to `GET /v1/journal`: `{"files": [{name, size, modified_unix, active}]}`.
pub async fn list(root: &Path) -> Answer {
    let root = root.to_path_buf();
    match tokio::task::spawn_blocking(move || files::list(&root)).await {
        Ok(Ok(files)) => Answer {
            status: 200,
            body: serde_json::json!({ "files": files }),
        },
        Ok(Err(err)) => Answer::error(500, "journal_unreadable", err),
        Err(err) => Answer::error(500, "journal_unreadable", err),
    }
}

/// The answer to `GET /v1/journal/<name>`: the file's bytes, or a JSON error.
pub async fn file(root: &Path, name: &str, operator: &str) -> Response<Full<Bytes>> {
    let Ok(_sending) = SENDING.try_acquire() else {
        return respond(Answer::error(
            503,
            "busy",
            "another journal file is being sent; ask again when it is done",
        ));
    };
    let (root, wanted) = (root.to_path_buf(), name.to_string());
    let read = tokio::task::spawn_blocking(move || files::read(&root, &wanted)).await;
    let bytes = match read {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(err @ FilesError::Unknown(_))) => {
            return respond(Answer::error(404, "no_such_file", err))
        }
        Ok(Err(err)) => return respond(Answer::error(500, "journal_unreadable", err)),
        Err(err) => return respond(Answer::error(500, "journal_unreadable", err)),
    };
    tracing::info!(
        operator,
        file = name,
        bytes = bytes.len(),
        "management API: journal file sent"
    );
    let mut response = Response::new(Full::new(Bytes::from(bytes)));
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/octet-stream"),
    );
    response
}
