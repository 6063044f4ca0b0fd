//! A read-ahead buffer under rustls on the proxy's TLS sockets.
//!
//! rustls asks its transport for at most about 4 KiB per read, so a 16 KiB record costs four or
//! five `recvmsg` calls; on a bulk transfer those calls are a large part of what the TLS leg adds
//! over the tunnel alone. `ReadAhead` reads up to `CHUNK_BYTES` from the socket at once and
//! serves rustls from memory. The buffer exists only while a transfer is flowing: it is released
//! as soon as it is drained and the socket has nothing more, so thousands of idle connections
//! hold no read-ahead memory.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// How much one socket read may bring in: four full TLS records.
pub const CHUNK_BYTES: usize = 64 * 1024;

/// A TCP stream whose small reads are served from one large socket read.
#[derive(Debug)]
pub struct ReadAhead {
    inner: TcpStream,
    /// What the last socket read brought in; `start` is how much of it was handed on.
    buffer: Vec<u8>,
    start: usize,
}

impl ReadAhead {
    /// Wraps `inner`; nothing is allocated until the first small read.
    pub fn new(inner: TcpStream) -> ReadAhead {
        ReadAhead {
            inner,
            buffer: Vec::new(),
            start: 0,
        }
    }

    /// The socket, for socket options and addresses.
    pub fn get_ref(&self) -> &TcpStream {
        &self.inner
    }

    /// Bytes read from the socket and not yet handed on.
    fn buffered(&self) -> &[u8] {
        self.buffer.get(self.start..).unwrap_or_default()
    }

    /// Hands on what is buffered, as much as fits.
    fn serve(&mut self, out: &mut ReadBuf<'_>) {
        let n = self.buffered().len().min(out.remaining());
        out.put_slice(self.buffered().get(..n).unwrap_or_default());
        self.start += n;
        if self.start == self.buffer.len() {
            self.buffer.clear();
            self.start = 0;
        }
    }
}

impl AsyncRead for ReadAhead {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.buffered().is_empty() {
            this.serve(out);
            return Poll::Ready(Ok(()));
        }
        // A reader that asks for a chunk or more gains nothing from a copy.
        if out.remaining() >= CHUNK_BYTES {
            return Pin::new(&mut this.inner).poll_read(cx, out);
        }
        loop {
            match this.inner.poll_read_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                Poll::Pending => {
                    // The transfer has paused: an idle connection keeps no buffer.
                    this.buffer = Vec::new();
                    return Poll::Pending;
                }
            }
            // Reads into the buffer's spare capacity: a fresh buffer is never zeroed first
            // (64 KiB of memset each time a transfer resumes).
            this.buffer.reserve_exact(CHUNK_BYTES);
            match this.inner.try_read_buf(&mut this.buffer) {
                // Zero bytes is the end of the stream, which an empty `out` says too.
                Ok(_) => {
                    this.serve(out);
                    return Poll::Ready(Ok(()));
                }
                // The readiness was stale; `poll_read_ready` waits for the next.
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) => return Poll::Ready(Err(err)),
            }
        }
    }
}

impl AsyncWrite for ReadAhead {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::proxy::test_support::tcp_pair;

    #[tokio::test]
    async fn small_reads_return_every_byte_in_order_and_the_idle_buffer_is_released() {
        let (mut writer, reader) = tcp_pair().await;
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let sent = data.clone();
        let sender = tokio::spawn(async move {
            writer.write_all(&sent).await.expect("write");
            writer
        });
        let mut reader = ReadAhead::new(reader);
        let mut received = Vec::new();
        let mut small = [0u8; 4096];
        while received.len() < data.len() {
            let n = reader.read(&mut small).await.expect("read");
            assert!(n > 0, "early EOF after {} bytes", received.len());
            received.extend_from_slice(&small[..n]);
        }
        assert_eq!(received, data);
        let writer = sender.await.expect("sender");

        // Nothing more is on the socket: the next read waits, and waiting drops the buffer.
        let pending = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            reader.read(&mut small),
        )
        .await;
        assert!(pending.is_err(), "a read with nothing sent must wait");
        assert_eq!(reader.buffer.capacity(), 0);

        drop(writer);
        assert_eq!(reader.read(&mut small).await.expect("eof"), 0);
    }

    #[tokio::test]
    async fn a_large_read_goes_straight_to_the_socket_and_writes_pass_through() {
        let (mut near, far) = tcp_pair().await;
        let mut far = ReadAhead::new(far);
        near.write_all(b"hello").await.expect("write");
        let mut large = vec![0u8; CHUNK_BYTES];
        let n = far.read(&mut large).await.expect("read");
        assert_eq!(&large[..n], b"hello");
        assert_eq!(far.buffer.capacity(), 0, "no buffer for a large read");

        far.write_all(b"back").await.expect("write back");
        let mut back = [0u8; 4];
        near.read_exact(&mut back).await.expect("read back");
        assert_eq!(&back, b"back");
    }
}
