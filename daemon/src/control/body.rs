//! Reading a management request body against a deadline that grows with what has arrived
//! (INT-1, AVL-1): a grace period, then at least [`BODY_MIN_BYTES_PER_SEC`] on average. A large
//! upload streaming at a sane rate (firmware bundles will come this way) is never cut; a client
//! that trickles bytes to hold its slot is, within [`BODY_GRACE_SECS`] of slowing down.

use std::time::Duration;

use bytes::Buf as _;
use http_body_util::BodyExt as _;
use hyper::body::Body;
use tokio::time::Instant;

/// Time a body gets before the rate floor applies (a TLS round trip, a slow start).
pub const BODY_GRACE_SECS: u64 = 10;
/// The average rate a body must keep up after the grace period.
pub const BODY_MIN_BYTES_PER_SEC: u64 = 16 * 1024;

/// Why a body was not read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BodyError {
    /// More than the endpoint accepts.
    #[error("the body is larger than {limit_bytes} bytes")]
    TooLarge {
        /// The endpoint's limit.
        limit_bytes: usize,
    },
    /// The client fell below the rate floor.
    #[error(
        "the body arrived too slowly: {received_bytes} bytes in {elapsed_secs} s (after {BODY_GRACE_SECS} s at least {BODY_MIN_BYTES_PER_SEC} bytes/s are needed)"
    )]
    TooSlow {
        /// What had arrived.
        received_bytes: usize,
        /// Since the body started.
        elapsed_secs: u64,
    },
    /// The connection failed or the framing was broken.
    #[error("body: {0}")]
    Broken(String),
    /// Where the body was being written failed (a full disk).
    #[error("writing the body: {0}")]
    Sink(String),
}

/// When the next bytes must have arrived, with `received` bytes in since `start`.
fn deadline(start: Instant, received: usize) -> Instant {
    let earned_millis = (received as u64).saturating_mul(1000) / BODY_MIN_BYTES_PER_SEC;
    start + Duration::from_secs(BODY_GRACE_SECS) + Duration::from_millis(earned_millis)
}

/// Reads `body` whole: at most `limit` bytes (`declared`, the Content-Length, is checked first),
/// each frame before the deadline its predecessors earned.
pub async fn read_paced<B>(
    body: B,
    declared: Option<u64>,
    limit: usize,
) -> Result<Vec<u8>, BodyError>
where
    B: Body + Unpin,
    B::Error: std::fmt::Display,
{
    let mut bytes = Vec::new();
    stream_paced(body, declared, limit as u64, &mut bytes).await?;
    Ok(bytes)
}

/// Writes `body` to `sink` as it arrives, under the rules of [`read_paced`]: a firmware bundle
/// goes to a spool file this way and is never held in memory. Returns the bytes written; on an
/// error the sink holds a partial body, which the caller discards.
pub async fn stream_paced<B, W>(
    body: B,
    declared: Option<u64>,
    limit: u64,
    sink: &mut W,
) -> Result<u64, BodyError>
where
    B: Body + Unpin,
    B::Error: std::fmt::Display,
    W: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt as _;
    let too_large = || BodyError::TooLarge {
        limit_bytes: usize::try_from(limit).unwrap_or(usize::MAX),
    };
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let start = Instant::now();
    let mut body = body;
    let mut received: u64 = 0;
    loop {
        let earned = usize::try_from(received).unwrap_or(usize::MAX);
        let next = tokio::time::timeout_at(deadline(start, earned), body.frame()).await;
        let frame = match next {
            Err(_) => {
                return Err(BodyError::TooSlow {
                    received_bytes: earned,
                    elapsed_secs: start.elapsed().as_secs(),
                })
            }
            Ok(None) => {
                sink.flush()
                    .await
                    .map_err(|e| BodyError::Sink(e.to_string()))?;
                return Ok(received);
            }
            Ok(Some(Err(err))) => return Err(BodyError::Broken(err.to_string())),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(mut data) = frame.into_data() {
            if received.saturating_add(data.remaining() as u64) > limit {
                return Err(too_large());
            }
            while data.has_remaining() {
                let chunk = data.chunk();
                sink.write_all(chunk)
                    .await
                    .map_err(|e| BodyError::Sink(e.to_string()))?;
                let n = chunk.len();
                received += n as u64;
                data.advance(n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http_body_util::StreamBody;
    use hyper::body::Frame;
    use tokio::sync::mpsc;

    use super::*;

    type Chunk = Result<Frame<Bytes>, Infallible>;

    /// A body fed by `send` every `every`, `chunk` bytes at a time, `chunks` times.
    fn trickle(chunk: usize, chunks: usize, every: Duration) -> StreamBody<ChannelStream> {
        let (tx, rx) = mpsc::channel::<Chunk>(1);
        tokio::spawn(async move {
            for _ in 0..chunks {
                tokio::time::sleep(every).await;
                if tx
                    .send(Ok(Frame::data(Bytes::from(vec![b'x'; chunk]))))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        StreamBody::new(ChannelStream(rx))
    }

    struct ChannelStream(mpsc::Receiver<Chunk>);

    impl futures::Stream for ChannelStream {
        type Item = Chunk;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Chunk>> {
            self.0.poll_recv(cx)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn int1_avl1_a_trickling_body_is_cut_after_the_grace_period() {
        let started = Instant::now();
        // One byte every 2 s: a slowloris holding its slot.
        let result = read_paced(trickle(1, 1000, Duration::from_secs(2)), None, 1 << 20).await;
        assert!(
            matches!(result, Err(BodyError::TooSlow { received_bytes, .. }) if received_bytes < 10),
            "{result:?}"
        );
        assert!(started.elapsed() <= Duration::from_secs(BODY_GRACE_SECS + 1));
    }

    #[tokio::test(start_paused = true)]
    async fn int1_avl1_a_large_upload_at_a_sane_rate_is_not_cut() {
        // 8 MiB at 64 KiB/s: 128 s, far longer than any fixed deadline of a few seconds.
        let chunk = 64 * 1024;
        let body = read_paced(trickle(chunk, 128, Duration::from_secs(1)), None, 16 << 20)
            .await
            .expect("paced upload");
        assert_eq!(body.len(), 128 * chunk);
    }

    #[tokio::test(start_paused = true)]
    async fn int1_too_large_bodies_are_refused() {
        let declared = read_paced(trickle(1, 1, Duration::ZERO), Some(5000), 4096).await;
        assert_eq!(declared, Err(BodyError::TooLarge { limit_bytes: 4096 }));
        let streamed = read_paced(trickle(1024, 5, Duration::ZERO), None, 4096).await;
        assert_eq!(streamed, Err(BodyError::TooLarge { limit_bytes: 4096 }));
    }
}
