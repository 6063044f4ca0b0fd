//! The WireGuard cross-platform userspace API (read side), so operators' `wg show` works.
//!
//! `wg` connects to `<socket dir>/<interface>.sock` and sends `get=1`; the answer lists the
//! interface and its peers as `key=value` lines. `set` is refused: configuration comes only from
//! the signed config. The socket is created mode 0600: it reveals the private key, as every
//! WireGuard implementation's does to root.

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::dataplane::DataPlane;

/// A request longer than this is not from `wg`.
const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// A client that does not finish its request in this time is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// errno answered to `set`: the operation is not permitted here.
const EPERM: i32 = 1;

/// Why the API socket could not be served.
#[derive(Debug, thiserror::Error)]
pub enum UapiError {
    /// The socket directory or file could not be prepared.
    #[error("cannot create the WireGuard API socket {path}: {source}")]
    Socket {
        /// The socket path.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// The listening socket; the file is removed when this is dropped.
pub struct UapiSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl UapiSocket {
    /// Binds `<dir>/<interface>.sock`, replacing a stale socket left by a crash.
    pub fn bind(dir: &Path, interface: &str) -> Result<UapiSocket, UapiError> {
        let path = dir.join(format!("{interface}.sock"));
        let error = |source| UapiError::Socket {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(error)?;
        if path.exists() {
            if std::os::unix::net::UnixStream::connect(&path).is_ok() {
                return Err(error(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "another daemon is serving this interface",
                )));
            }
            std::fs::remove_file(&path).map_err(error)?;
        }
        let listener = UnixListener::bind(&path).map_err(error)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(error)?;
        Ok(UapiSocket { listener, path })
    }

    /// Answers clients until the task is aborted.
    pub(crate) async fn serve(self, plane: Arc<DataPlane>, listen_port: u16) {
        loop {
            let stream = match self.listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "WireGuard API accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let plane = Arc::clone(&plane);
            tokio::spawn(async move {
                let _ = tokio::time::timeout(REQUEST_TIMEOUT, answer(stream, &plane, listen_port))
                    .await;
            });
        }
    }
}

impl Drop for UapiSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What a UAPI client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UapiRequest {
    /// The client closed without a request.
    Nothing,
    /// `get=1`: the interface and its peers.
    Get,
    /// Anything else (`set=1` included): refused with EPERM.
    Refused,
}

/// Reads a client's request, at most [`MAX_REQUEST_BYTES`] of it: the first line names the
/// operation; after `get=1` the blank line that ends it is consumed. Lines that are not UTF-8
/// are an error. Public (generic over the reader) for the fuzz target `uapi`, which feeds it
/// arbitrary bytes.
pub async fn read_request<R: AsyncRead + Unpin>(read: R) -> std::io::Result<UapiRequest> {
    let mut lines = BufReader::new(read).take(MAX_REQUEST_BYTES as u64).lines();
    let Some(first) = lines.next_line().await? else {
        return Ok(UapiRequest::Nothing);
    };
    match first.as_str() {
        "get=1" => {
            // Consume the blank line that ends the request.
            let _ = lines.next_line().await?;
            Ok(UapiRequest::Get)
        }
        _ => Ok(UapiRequest::Refused),
    }
}

async fn answer(stream: UnixStream, plane: &DataPlane, listen_port: u16) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    match read_request(read).await? {
        UapiRequest::Nothing => Ok(()),
        UapiRequest::Get => {
            write
                .write_all(get_response(plane, listen_port).as_bytes())
                .await
        }
        UapiRequest::Refused => {
            write
                .write_all(format!("errno={EPERM}\n\n").as_bytes())
                .await
        }
    }
}

/// The `get=1` answer, in the order `wg` expects: interface keys, then one block per peer.
pub(crate) fn get_response(plane: &DataPlane, listen_port: u16) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "private_key={}",
        crate::hex::lower(&plane.own_secret.to_bytes())
    );
    let _ = writeln!(out, "listen_port={listen_port}");
    let now = Instant::now();
    for peer in &plane.peers {
        let snapshot = peer.snapshot(now);
        let _ = writeln!(out, "public_key={}", crate::hex::lower(&peer.public_key));
        if let Some(endpoint) = snapshot.endpoint {
            let _ = writeln!(out, "endpoint={endpoint}");
        }
        let (secs, nanos) = snapshot
            .last_handshake
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or((0, 0), |d| (d.as_secs(), d.subsec_nanos()));
        let _ = writeln!(out, "last_handshake_time_sec={secs}");
        let _ = writeln!(out, "last_handshake_time_nsec={nanos}");
        let _ = writeln!(out, "tx_bytes={}", snapshot.tx_bytes);
        let _ = writeln!(out, "rx_bytes={}", snapshot.rx_bytes);
        let _ = writeln!(
            out,
            "persistent_keepalive_interval={}",
            snapshot.persistent_keepalive_secs.unwrap_or(0)
        );
        for net in &snapshot.allowed_ips {
            let _ = writeln!(out, "allowed_ip={net}");
        }
        let _ = writeln!(out, "protocol_version=1");
    }
    out.push_str("errno=0\n\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn int1_uapi_requests_get_or_refused() {
        assert_eq!(
            read_request(&b"get=1\n\n"[..]).await.ok(),
            Some(UapiRequest::Get)
        );
        assert_eq!(
            read_request(&b"get=1"[..]).await.ok(),
            Some(UapiRequest::Get)
        );
        assert_eq!(
            read_request(&b"set=1\nlisten_port=1\n\n"[..]).await.ok(),
            Some(UapiRequest::Refused)
        );
        assert_eq!(
            read_request(&b""[..]).await.ok(),
            Some(UapiRequest::Nothing)
        );
        assert!(read_request(&b"\xff\n"[..]).await.is_err());
    }
}
