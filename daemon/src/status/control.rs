//! The local control socket behind `renkei status`: `<runtime_dir>/control.sock`, mode 0660 and
//! owned by the daemon's user and group (`renkei` under systemd), so only root and members of
//! that group can use it.
//!
//! Protocol: one request line, one answer. `status` answers the status document as one JSON
//! line; `connect` and `disconnect` answer `ok` or `error: ...` (refused on a box that is not a
//! viewing box with an on-demand tunnel). Anything else
//! answers `error: unknown command`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::StatusSource;
use crate::control_socket::SOCKET_NAME;

/// A request longer than this is not from `renkei status`.
const MAX_REQUEST_BYTES: u64 = 1024;
/// A client that does not send its request in time is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the control socket could not be served.
#[derive(Debug, thiserror::Error)]
#[error("cannot create the control socket {path}: {source}")]
pub struct ControlError {
    path: PathBuf,
    source: std::io::Error,
}

/// The listening socket; its file is removed on drop.
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl ControlSocket {
    /// Binds `<runtime_dir>/control.sock`, replacing a stale one.
    pub fn bind(runtime_dir: &Path) -> Result<ControlSocket, ControlError> {
        let path = runtime_dir.join(SOCKET_NAME);
        let error = |source| ControlError {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(runtime_dir).map_err(error)?;
        if path.exists() {
            if std::os::unix::net::UnixStream::connect(&path).is_ok() {
                return Err(error(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "another renkei daemon is running with this runtime directory",
                )));
            }
            std::fs::remove_file(&path).map_err(error)?;
        }
        let listener = UnixListener::bind(&path).map_err(error)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660)).map_err(error)?;
        Ok(ControlSocket { listener, path })
    }

    /// Answers clients until the task is aborted.
    pub async fn serve(self, source: StatusSource) {
        loop {
            let Ok((stream, _)) = self.listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let source = source.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(REQUEST_TIMEOUT, answer(stream, &source)).await;
            });
        }
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// One request of the control protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// `status`: the status document.
    Status,
    /// `connect`: bring an on-demand tunnel up now.
    Connect,
    /// `disconnect`: take it down.
    Disconnect,
    /// Anything else.
    Unknown,
}

impl Request {
    /// The request a line names (surrounding whitespace ignored).
    pub fn parse(line: &str) -> Request {
        match line.trim() {
            "status" => Request::Status,
            "connect" => Request::Connect,
            "disconnect" => Request::Disconnect,
            _ => Request::Unknown,
        }
    }
}

/// Reads the one request line a client sends, at most [`MAX_REQUEST_BYTES`] of it; a line that
/// is not UTF-8 is an error. Public (generic over the reader) for the fuzz target
/// `control_line`, which feeds it arbitrary bytes.
pub async fn read_request<R: AsyncRead + Unpin>(read: R) -> std::io::Result<Request> {
    let mut line = String::new();
    BufReader::new(read.take(MAX_REQUEST_BYTES))
        .read_line(&mut line)
        .await?;
    Ok(Request::parse(&line))
}

async fn answer(stream: UnixStream, source: &StatusSource) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let request = read_request(read).await?;
    let reply = match request {
        Request::Status => {
            serde_json::to_string(&source.document()).unwrap_or_else(|e| format!("error: {e}"))
        }
        Request::Connect | Request::Disconnect => match source.check_tunnel_actions() {
            Err(reason) => format!("error: {reason}"),
            Ok(()) if request == Request::Connect => match source.tunnel().connect_now().await {
                Ok(()) => "ok".to_string(),
                Err(e) => format!("error: {e}"),
            },
            Ok(()) => {
                source.tunnel().disconnect().await;
                "ok".to_string()
            }
        },
        Request::Unknown => "error: unknown command".to_string(),
    };
    write.write_all(reply.as_bytes()).await?;
    write.write_all(b"\n").await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn int1_control_requests_are_one_bounded_line() {
        assert_eq!(
            read_request(&b"status\n"[..]).await.ok(),
            Some(Request::Status)
        );
        assert_eq!(
            read_request(&b" connect \r\n"[..]).await.ok(),
            Some(Request::Connect)
        );
        assert_eq!(
            read_request(&b"disconnect"[..]).await.ok(),
            Some(Request::Disconnect)
        );
        assert_eq!(
            read_request(&b"status\nmore"[..]).await.ok(),
            Some(Request::Status)
        );
        assert_eq!(read_request(&b""[..]).await.ok(), Some(Request::Unknown));
        // Only the first MAX_REQUEST_BYTES count: a long line is cut, and unknown.
        let mut long = vec![b' '; MAX_REQUEST_BYTES as usize];
        long.extend_from_slice(b"status\n");
        assert_eq!(read_request(&long[..]).await.ok(), Some(Request::Unknown));
        assert!(read_request(&b"\xffstatus\n"[..]).await.is_err());
    }
}
