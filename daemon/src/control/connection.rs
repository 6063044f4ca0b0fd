//! One management connection's life: the TLS handshake (at most
//! [`MAX_PENDING_HANDSHAKES`] at once, the oldest cut beyond), the client's identity and a slot
//! of its pool (`super::admission`), HTTP/1.1 with bounded heads and no keep-alive, and a
//! lingering close so an answer sent before the body survives.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::task::AbortHandle;

use super::admission::{Pool, Slot};
use super::device_listener::DeviceListener;
use super::routes::{route, Access, Context};
use crate::config::MinTls;
use crate::state::events::{Admission, Occurrence, TlsRefusal};
use crate::tls::identity::PeerIdentities;
use crate::tls::{refusal, CredentialStore};

/// TLS handshakes in progress at once; a new connection beyond this ends the oldest one, so
/// stalled handshakes cannot keep the operator out.
pub const MAX_PENDING_HANDSHAKES: usize = 64;
/// A TLS handshake slower than this is cut.
pub const HANDSHAKE_TIMEOUT_SECS: u64 = 10;
/// A request head slower than this is cut (the body has its own rule, `body::read_paced`).
pub const HEADER_READ_TIMEOUT_SECS: u64 = 10;
/// Largest request head.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// At most this long is spent reading and dropping what a client still sends after its answer.
const LINGER_MAX_SECS: u64 = 2;
/// At most this much of it is read.
const LINGER_MAX_BYTES: usize = 1024 * 1024;
const LINGER_BUFFER_BYTES: usize = 16 * 1024;

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

pub(super) async fn accept_loop(
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
            // An authenticated session through an on-demand IPsec SA is use of it.
            let _hold = context.carrier.hold_for_peer(peer.ip());
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
