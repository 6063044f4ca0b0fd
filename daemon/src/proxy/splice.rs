//! Copies bytes both ways between two connections, as TCP would end to end: an EOF on one side
//! becomes a write shutdown on the other while the opposite direction keeps running.
//!
//! It never buffers more than one fixed buffer per direction (a slow reader slows the writer
//! down through TCP backpressure), and it closes a connection that moved no byte either way for
//! the idle timeout. It knows nothing about TLS, services or logs: callers hand it two streams.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf, ReadHalf, WriteHalf};
use tokio::time::Instant;

/// Size of the one buffer each direction uses: enough for full TLS records and fast bulk
/// transfers, small enough that 256 connections hold at most 32 MiB.
pub const SPLICE_BUFFER_BYTES: usize = 64 * 1024;
/// What a direction starts with: a request, a reply or a keepalive fits, so thousands of quiet
/// connections hold a few KiB each. The first read that fills it grows it to the full size.
pub const SPLICE_START_BYTES: usize = 4 * 1024;

/// How a splice is bounded.
#[derive(Debug, Clone, Copy)]
pub struct SpliceLimits {
    /// Bytes read from one side before they must be written to the other.
    pub buffer_bytes: usize,
    /// No byte either way for this long closes both sides.
    pub idle_timeout: Duration,
}

impl SpliceLimits {
    /// The default buffer with a service's idle timeout.
    pub fn with_idle_timeout(idle_timeout: Duration) -> Self {
        SpliceLimits {
            buffer_bytes: SPLICE_BUFFER_BYTES,
            idle_timeout,
        }
    }
}

/// Which way bytes were going when something failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Reading from `a` or writing to `b`.
    AToB,
    /// Reading from `b` or writing to `a`.
    BToA,
}

/// Why a splice ended.
#[derive(Debug)]
pub enum SpliceEnd {
    /// Both sides sent EOF and every byte was delivered.
    Closed,
    /// No byte moved either way for the idle timeout.
    IdleTimeout(Duration),
    /// The caller's stop future completed (the daemon is shutting down).
    Stopped,
    /// A read or write failed; the other direction was abandoned.
    Failed {
        /// The direction that failed.
        side: Side,
        /// What the OS (or TLS layer) said.
        error: io::Error,
    },
}

/// What a splice did: bytes delivered each way and why it ended.
#[derive(Debug)]
pub struct SpliceOutcome {
    /// Bytes read from `a` and written to `b`.
    pub a_to_b: u64,
    /// Bytes read from `b` and written to `a`.
    pub b_to_a: u64,
    /// Why it ended.
    pub end: SpliceEnd,
}

/// Byte counters that splices add to while they copy, so that a service's totals include its
/// open connections (a long transfer shows on the status page before it ends). Only ever
/// incremented: totals built on them are monotonic.
#[derive(Debug, Default)]
pub struct LiveBytes {
    a_to_b: AtomicU64,
    b_to_a: AtomicU64,
}

impl LiveBytes {
    /// Bytes delivered from `a` to `b` so far, over every splice counted here.
    pub fn a_to_b(&self) -> u64 {
        self.a_to_b.load(Ordering::Relaxed)
    }

    /// Bytes delivered from `b` to `a` so far, over every splice counted here.
    pub fn b_to_a(&self) -> u64 {
        self.b_to_a.load(Ordering::Relaxed)
    }

    /// Counts `n` bytes delivered in direction `side`.
    pub fn add(&self, side: Side, n: u64) {
        let counter = match side {
            Side::AToB => &self.a_to_b,
            Side::BToA => &self.b_to_a,
        };
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Last-activity clock shared by both directions and the idle watchdog.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn deadline(&self, idle: Duration) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + idle
    }
}

/// Copies `a -> b` and `b -> a` until both directions reach EOF, the connection idles out, a
/// side fails, or `stop` completes. Each direction's EOF shuts down the other side's write half
/// and lets the opposite direction continue (half-close).
pub async fn splice<A, B, S>(a: A, b: B, limits: SpliceLimits, stop: S) -> SpliceOutcome
where
    A: AsyncRead + AsyncWrite + Send,
    B: AsyncRead + AsyncWrite + Send,
    S: Future<Output = ()>,
{
    splice_counted(a, b, limits, stop, &LiveBytes::default()).await
}

/// [`splice`] that also adds every delivered byte to `live` as it goes (a service's totals),
/// not only to the outcome at the end.
pub async fn splice_counted<A, B, S>(
    a: A,
    b: B,
    limits: SpliceLimits,
    stop: S,
    live: &LiveBytes,
) -> SpliceOutcome
where
    A: AsyncRead + AsyncWrite + Send,
    B: AsyncRead + AsyncWrite + Send,
    S: Future<Output = ()>,
{
    let (a_read, a_write) = tokio::io::split(a);
    let (b_read, b_write) = tokio::io::split(b);
    let a_to_b = AtomicU64::new(0);
    let b_to_a = AtomicU64::new(0);
    let activity = Activity {
        start: Instant::now(),
        last_ms: AtomicU64::new(0),
    };
    let buffer_bytes = limits.buffer_bytes.max(1);

    let forward = copy_one_way(
        a_read,
        b_write,
        buffer_bytes,
        Counters { own: &a_to_b, live },
        &activity,
        Side::AToB,
    );
    let backward = copy_one_way(
        b_read,
        a_write,
        buffer_bytes,
        Counters { own: &b_to_a, live },
        &activity,
        Side::BToA,
    );
    let both = async {
        tokio::pin!(forward, backward);
        let mut forward_done = false;
        let mut backward_done = false;
        while !(forward_done && backward_done) {
            tokio::select! {
                result = &mut forward, if !forward_done => {
                    result?;
                    forward_done = true;
                }
                result = &mut backward, if !backward_done => {
                    result?;
                    backward_done = true;
                }
            }
        }
        Ok::<(), (Side, io::Error)>(())
    };
    let idle = async {
        loop {
            let deadline = activity.deadline(limits.idle_timeout);
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    };

    let end = tokio::select! {
        result = both => match result {
            Ok(()) => SpliceEnd::Closed,
            Err((side, error)) => SpliceEnd::Failed { side, error },
        },
        () = idle => SpliceEnd::IdleTimeout(limits.idle_timeout),
        () = stop => SpliceEnd::Stopped,
    };
    SpliceOutcome {
        a_to_b: a_to_b.load(Ordering::Relaxed),
        b_to_a: b_to_a.load(Ordering::Relaxed),
        end,
    }
}

/// Where one direction counts what it delivered: its own total and the shared live one.
struct Counters<'a> {
    own: &'a AtomicU64,
    live: &'a LiveBytes,
}

/// One direction: fill one buffer with what the reader has, write it all (and flush, so TLS
/// records leave at once), repeat; on EOF shut the writer down. The buffer starts at
/// [`SPLICE_START_BYTES`] and grows to `buffer_bytes` once a read fills it.
async fn copy_one_way<R, W>(
    mut reader: ReadHalf<R>,
    mut writer: WriteHalf<W>,
    buffer_bytes: usize,
    counters: Counters<'_>,
    activity: &Activity,
    side: Side,
) -> Result<(), (Side, io::Error)>
where
    R: AsyncRead,
    W: AsyncWrite,
{
    let mut buffer = vec![0u8; buffer_bytes.min(SPLICE_START_BYTES)];
    loop {
        let (n, after) = gather(&mut reader, &mut buffer)
            .await
            .map_err(|e| (side, e))?;
        let filled = n == buffer.len();
        if n > 0 {
            activity.touch();
            let mut chunk = buffer.get(..n).unwrap_or_default();
            while !chunk.is_empty() {
                let written = writer.write(chunk).await.map_err(|e| (side, e))?;
                if written == 0 {
                    return Err((side, io::ErrorKind::WriteZero.into()));
                }
                chunk = chunk.get(written..).unwrap_or_default();
                counters.own.fetch_add(written as u64, Ordering::Relaxed);
                counters.live.add(side, written as u64);
                activity.touch();
            }
            writer.flush().await.map_err(|e| (side, e))?;
        }
        if filled && buffer.len() < buffer_bytes {
            buffer.resize(buffer_bytes, 0);
        }
        match after {
            AfterGather::More => {}
            AfterGather::Eof => break,
            AfterGather::Failed(error) => return Err((side, error)),
        }
    }
    writer.shutdown().await.map_err(|e| (side, e))?;
    activity.touch();
    Ok(())
}

/// What the reader said after the bytes [`gather`] returned.
#[derive(Debug)]
enum AfterGather {
    /// Nothing yet: read again.
    More,
    /// End of stream.
    Eof,
    /// The read failed; the bytes before the failure are delivered first.
    Failed(io::Error),
}

/// Waits for the first bytes, then takes whatever else the reader already has, up to the
/// buffer's size. A TLS stream hands out one record (16 KiB) per read; gathering them turns
/// four writes on the other side into one.
async fn gather<R: AsyncRead + Unpin>(
    reader: &mut R,
    buffer: &mut [u8],
) -> io::Result<(usize, AfterGather)> {
    let mut filled = 0;
    std::future::poll_fn(|cx| loop {
        let mut window = ReadBuf::new(buffer.get_mut(filled..).unwrap_or_default());
        match Pin::new(&mut *reader).poll_read(cx, &mut window) {
            Poll::Ready(Ok(())) => {
                let got = window.filled().len();
                if got == 0 {
                    return Poll::Ready(Ok((filled, AfterGather::Eof)));
                }
                filled += got;
                if filled >= buffer.len() {
                    return Poll::Ready(Ok((filled, AfterGather::More)));
                }
            }
            Poll::Ready(Err(error)) if filled == 0 => return Poll::Ready(Err(error)),
            Poll::Ready(Err(error)) => {
                return Poll::Ready(Ok((filled, AfterGather::Failed(error))))
            }
            Poll::Pending if filled == 0 => return Poll::Pending,
            Poll::Pending => return Poll::Ready(Ok((filled, AfterGather::More))),
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::future::pending;

    use tokio::io::{duplex, AsyncReadExt};

    use super::*;
    use crate::proxy::test_support::tcp_pair;

    const WAIT: Duration = Duration::from_secs(30);

    fn limits(idle: Duration) -> SpliceLimits {
        SpliceLimits::with_idle_timeout(idle)
    }

    /// Deterministic pseudo-random bytes (xorshift), so a transfer is not all zeros.
    fn pattern(seed: u64, len: usize) -> Vec<u8> {
        let mut state = seed | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect()
    }

    fn sha256(data: &[u8]) -> Vec<u8> {
        ring::digest::digest(&ring::digest::SHA256, data)
            .as_ref()
            .to_vec()
    }

    #[tokio::test]
    async fn large_transfer_both_ways_arrives_intact() {
        const LEN: usize = 64 * 1024 * 1024;
        let (mut left, left_inner) = tcp_pair().await;
        let (right_inner, mut right) = tcp_pair().await;
        let splicer = tokio::spawn(splice(
            left_inner,
            right_inner,
            limits(WAIT),
            pending::<()>(),
        ));

        let up = pattern(1, LEN);
        let down = pattern(2, LEN / 4);
        let (up_hash, down_hash) = (sha256(&up), sha256(&down));
        let (mut left_read, mut left_write) = left.split();
        let (mut right_read, mut right_write) = right.split();
        let left_side = async {
            let send = async {
                left_write.write_all(&up).await.expect("left write");
                left_write.shutdown().await.expect("left shutdown");
            };
            let mut got = Vec::new();
            let recv = left_read.read_to_end(&mut got);
            let ((), read) = tokio::join!(send, recv);
            read.expect("left read");
            got
        };
        let right_side = async {
            let send = async {
                right_write.write_all(&down).await.expect("right write");
                right_write.shutdown().await.expect("right shutdown");
            };
            let mut got = Vec::new();
            let recv = right_read.read_to_end(&mut got);
            let ((), read) = tokio::join!(send, recv);
            read.expect("right read");
            got
        };
        let (at_left, at_right) =
            tokio::time::timeout(WAIT, async { tokio::join!(left_side, right_side) })
                .await
                .expect("transfer in time");
        assert_eq!(sha256(&at_right), up_hash);
        assert_eq!(sha256(&at_left), down_hash);

        let outcome = tokio::time::timeout(WAIT, splicer)
            .await
            .expect("splice ends")
            .expect("task");
        assert!(matches!(outcome.end, SpliceEnd::Closed), "{outcome:?}");
        assert_eq!(outcome.a_to_b, LEN as u64);
        assert_eq!(outcome.b_to_a, (LEN / 4) as u64);
    }

    #[tokio::test]
    async fn half_close_from_a_keeps_b_to_a_running() {
        let (mut a, a_inner) = duplex(1024);
        let (b_inner, mut b) = duplex(1024);
        let splicer = tokio::spawn(splice(a_inner, b_inner, limits(WAIT), pending::<()>()));

        a.write_all(b"request").await.expect("write");
        a.shutdown().await.expect("a shuts down its write side");
        let mut request = Vec::new();
        tokio::time::timeout(WAIT, b.read_to_end(&mut request))
            .await
            .expect("EOF reaches b")
            .expect("read");
        assert_eq!(request, b"request");

        // b can still answer after a's EOF.
        b.write_all(b"answer after EOF").await.expect("write");
        b.shutdown().await.expect("shutdown");
        let mut answer = Vec::new();
        tokio::time::timeout(WAIT, a.read_to_end(&mut answer))
            .await
            .expect("answer in time")
            .expect("read");
        assert_eq!(answer, b"answer after EOF");
        let outcome = splicer.await.expect("task");
        assert!(matches!(outcome.end, SpliceEnd::Closed));
        assert_eq!((outcome.a_to_b, outcome.b_to_a), (7, 16));
    }

    #[tokio::test]
    async fn half_close_from_b_keeps_a_to_b_running() {
        let (mut a, a_inner) = tcp_pair().await;
        let (b_inner, mut b) = tcp_pair().await;
        let splicer = tokio::spawn(splice(a_inner, b_inner, limits(WAIT), pending::<()>()));

        b.write_all(b"banner").await.expect("write");
        b.shutdown().await.expect("b shuts down its write side");
        let mut banner = Vec::new();
        tokio::time::timeout(WAIT, a.read_to_end(&mut banner))
            .await
            .expect("EOF reaches a")
            .expect("read");
        assert_eq!(banner, b"banner");

        a.write_all(b"still talking").await.expect("write");
        a.shutdown().await.expect("shutdown");
        let mut rest = Vec::new();
        tokio::time::timeout(WAIT, b.read_to_end(&mut rest))
            .await
            .expect("data after EOF")
            .expect("read");
        assert_eq!(rest, b"still talking");
        let outcome = splicer.await.expect("task");
        assert!(matches!(outcome.end, SpliceEnd::Closed));
    }

    #[tokio::test(start_paused = true)]
    async fn slow_reader_applies_backpressure_instead_of_buffering() {
        // Pipes of 4 KiB and a 4 KiB splice buffer: at most ~12 KiB can be in flight before the
        // writer must wait for the reader.
        const PIPE: usize = 4096;
        let (mut a, a_inner) = duplex(PIPE);
        let (b_inner, mut b) = duplex(PIPE);
        let small = SpliceLimits {
            buffer_bytes: PIPE,
            idle_timeout: WAIT,
        };
        let splicer = tokio::spawn(splice(a_inner, b_inner, small, pending::<()>()));

        let data = pattern(3, 1024 * 1024);
        let writer = tokio::spawn(async move {
            let mut written = 0usize;
            for chunk in data.chunks(1024) {
                a.write_all(chunk).await.expect("write");
                written += chunk.len();
            }
            a.shutdown().await.expect("shutdown");
            (a, written)
        });
        // Nobody reads b: the writer must get stuck well before 1 MiB. The clock is paused, so
        // this timeout fires as soon as every task is blocked.
        let mut writer = writer;
        let stuck = tokio::time::timeout(Duration::from_secs(5), &mut writer).await;
        assert!(stuck.is_err(), "writer finished without a reader");

        // Reading drains everything.
        let mut got = Vec::new();
        tokio::time::timeout(WAIT, b.read_to_end(&mut got))
            .await
            .expect("drain in time")
            .expect("read");
        assert_eq!(got.len(), 1024 * 1024);
        let (_a, written) = writer.await.expect("writer");
        assert_eq!(written, 1024 * 1024);
        drop(b);
        let outcome = tokio::time::timeout(WAIT, splicer)
            .await
            .expect("ends")
            .expect("task");
        assert_eq!(outcome.a_to_b, 1024 * 1024);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connection_is_closed_after_the_timeout() {
        let (mut a, a_inner) = duplex(1024);
        let (b_inner, mut b) = duplex(1024);
        let idle = Duration::from_secs(60);
        let started = Instant::now();
        let splicer = tokio::spawn(splice(a_inner, b_inner, limits(idle), pending::<()>()));

        // Activity pushes the deadline back.
        tokio::time::sleep(Duration::from_secs(40)).await;
        a.write_all(b"x").await.expect("write");
        let mut byte = [0u8; 1];
        b.read_exact(&mut byte).await.expect("read");

        let outcome = splicer.await.expect("task");
        assert!(matches!(outcome.end, SpliceEnd::IdleTimeout(d) if d == idle));
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_secs(100), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(102), "{elapsed:?}");
        // Both sides see the connection closed.
        let mut rest = Vec::new();
        assert_eq!(b.read_to_end(&mut rest).await.expect("b EOF"), 0);
        assert_eq!(a.read_to_end(&mut rest).await.expect("a EOF"), 0);
    }

    #[tokio::test]
    async fn live_counts_grow_while_the_splice_is_open() {
        let (mut a, a_inner) = duplex(1024);
        let (b_inner, mut b) = duplex(1024);
        let live = std::sync::Arc::new(LiveBytes::default());
        let splicer = tokio::spawn({
            let live = std::sync::Arc::clone(&live);
            async move { splice_counted(a_inner, b_inner, limits(WAIT), pending::<()>(), &live).await }
        });
        a.write_all(b"request").await.expect("write");
        let mut got = [0u8; 7];
        b.read_exact(&mut got).await.expect("read");
        b.write_all(b"ans").await.expect("write");
        let mut answer = [0u8; 3];
        a.read_exact(&mut answer).await.expect("read");
        // Both directions are counted before the connection ends.
        assert_eq!((live.a_to_b(), live.b_to_a()), (7, 3));
        assert!(!splicer.is_finished());
        drop((a, b));
        let outcome = tokio::time::timeout(WAIT, splicer)
            .await
            .expect("ends")
            .expect("task");
        assert_eq!(
            (outcome.a_to_b, outcome.b_to_a),
            (live.a_to_b(), live.b_to_a())
        );
    }

    #[tokio::test]
    async fn stop_ends_the_splice_with_counts() {
        let (mut a, a_inner) = duplex(1024);
        let (b_inner, mut b) = duplex(1024);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let splicer = tokio::spawn(splice(a_inner, b_inner, limits(WAIT), async {
            let _ = rx.await;
        }));
        a.write_all(b"abc").await.expect("write");
        let mut got = [0u8; 3];
        b.read_exact(&mut got).await.expect("read");
        let _ = tx.send(());
        let outcome = tokio::time::timeout(WAIT, splicer)
            .await
            .expect("stops")
            .expect("task");
        assert!(matches!(outcome.end, SpliceEnd::Stopped));
        assert_eq!(outcome.a_to_b, 3);
    }

    /// A reader with some bytes ready at once, then the given end.
    struct Scripted {
        ready: std::collections::VecDeque<Vec<u8>>,
        end: Option<io::ErrorKind>,
        eof: bool,
    }

    impl AsyncRead for Scripted {
        fn poll_read(
            self: Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
            out: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            if let Some(mut chunk) = this.ready.pop_front() {
                let n = chunk.len().min(out.remaining());
                out.put_slice(&chunk[..n]);
                if n < chunk.len() {
                    this.ready.push_front(chunk.split_off(n));
                }
                return Poll::Ready(Ok(()));
            }
            match this.end {
                Some(kind) => Poll::Ready(Err(kind.into())),
                None if this.eof => Poll::Ready(Ok(())),
                None => Poll::Pending,
            }
        }
    }

    fn scripted(chunks: usize, len: usize, end: Option<io::ErrorKind>, eof: bool) -> Scripted {
        Scripted {
            ready: (0..chunks).map(|i| vec![i as u8; len]).collect(),
            end,
            eof,
        }
    }

    #[tokio::test]
    async fn gather_takes_every_ready_record_up_to_the_buffer_then_stops_at_pending() {
        let mut reader = scripted(6, 16 * 1024, None, false);
        let mut buffer = vec![0u8; 64 * 1024];
        let (n, after) = gather(&mut reader, &mut buffer).await.expect("gather");
        assert_eq!(n, 64 * 1024, "four 16 KiB records in one buffer");
        assert!(matches!(after, AfterGather::More));
        assert_eq!(&buffer[48 * 1024..48 * 1024 + 4], &[3, 3, 3, 3]);
        let (n, after) = gather(&mut reader, &mut buffer).await.expect("gather");
        assert_eq!(n, 32 * 1024, "the rest, then the reader would wait");
        assert!(matches!(after, AfterGather::More));
        let waited =
            tokio::time::timeout(Duration::from_millis(20), gather(&mut reader, &mut buffer)).await;
        assert!(waited.is_err(), "nothing ready: gather waits");
    }

    #[tokio::test]
    async fn gather_delivers_the_bytes_before_an_eof_or_an_error_first() {
        let mut buffer = vec![0u8; 64 * 1024];
        let mut reader = scripted(2, 1000, None, true);
        let (n, after) = gather(&mut reader, &mut buffer).await.expect("gather");
        assert_eq!(n, 2000);
        assert!(matches!(after, AfterGather::Eof));

        let mut reader = scripted(1, 1000, Some(io::ErrorKind::ConnectionReset), false);
        let (n, after) = gather(&mut reader, &mut buffer).await.expect("gather");
        assert_eq!(n, 1000);
        assert!(
            matches!(after, AfterGather::Failed(ref e) if e.kind() == io::ErrorKind::ConnectionReset)
        );

        let mut reader = scripted(0, 0, Some(io::ErrorKind::ConnectionReset), false);
        let err = gather(&mut reader, &mut buffer).await.expect_err("error");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    }
}
