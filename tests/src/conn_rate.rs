//! New-connection rate through one path of the proxy benchmark: workers that open a connection,
//! send one byte, wait for one byte back and close, over and over, against a responder that
//! answers every connection with one byte and closes it. Every connection is a full TLS
//! handshake through a proxy path, or a bare TCP handshake on the path without one, proven end
//! to end by the byte that comes back.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::netns::Namespace;

/// Threads accepting at the responder: enough that a slow connection never holds the others up.
const RESPONDER_THREADS: usize = 4;
/// How long one connection may take, connect to answer, before it counts as failed.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// The namespace settings that let a machine open thousands of short connections a second for
/// minutes: every port above 1024, and ports in TIME_WAIT reused for new outgoing connections
/// (TCP timestamps keep that safe). Applied to each namespace a connection leaves from.
pub fn allow_many_short_connections(ns: &Namespace) -> anyhow::Result<()> {
    for setting in [
        "net.ipv4.ip_local_port_range=1024 65535",
        "net.ipv4.tcp_tw_reuse=1",
    ] {
        ns.exec("sysctl", &["-q", "-w", setting])
            .with_context(|| format!("{setting} in {}", ns.name()))?;
    }
    Ok(())
}

/// Answers every connection on its listener with one byte and closes it. Stops (its threads
/// end at their next connection or within a second) when dropped.
pub struct Responder {
    stop: Arc<AtomicBool>,
}

impl Responder {
    /// Serves `listener` (already bound, in whichever namespace) until dropped.
    pub fn start(listener: TcpListener) -> anyhow::Result<Responder> {
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        for _ in 0..RESPONDER_THREADS {
            let listener = listener.try_clone()?;
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => answer(stream),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            // Nothing waiting: a short nap, then look again (never a busy loop).
                            std::thread::park_timeout(Duration::from_millis(1));
                        }
                        Err(_) => std::thread::park_timeout(Duration::from_millis(10)),
                    }
                }
            });
        }
        Ok(Responder { stop })
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One byte in, one byte out, closed.
fn answer(mut stream: TcpStream) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(CONNECTION_TIMEOUT));
    let mut byte = [0u8; 1];
    if stream.read_exact(&mut byte).is_ok() {
        let _ = stream.write_all(b"!");
    }
}

/// What one measurement counted.
#[derive(Debug, Clone, Copy)]
pub struct Rate {
    /// Connections completed (answered) per second.
    pub per_sec: f64,
    /// Connections that failed (refused, reset, timed out, no answer).
    pub failed: u64,
    /// Connections completed.
    pub completed: u64,
}

/// Opens short connections to `target` from inside `ns` with `workers` in parallel for
/// `duration`, each proven by the responder's byte.
pub fn measure(
    ns: &Namespace,
    target: SocketAddr,
    workers: usize,
    duration: Duration,
) -> anyhow::Result<Rate> {
    let completed = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            let (completed, failed) = (completed.clone(), failed.clone());
            let name = ns.name().to_string();
            std::thread::spawn(move || {
                crate::netns::run_inside(&name, move || {
                    while Instant::now() < deadline {
                        match one_connection(target) {
                            Ok(()) => completed.fetch_add(1, Ordering::Relaxed),
                            Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                        };
                    }
                })
            })
        })
        .collect();
    for handle in handles {
        handle
            .join()
            .map_err(|_| anyhow::anyhow!("a connection worker panicked"))??;
    }
    let secs = started.elapsed().as_secs_f64();
    let completed = completed.load(Ordering::Relaxed);
    Ok(Rate {
        per_sec: completed as f64 / secs,
        failed: failed.load(Ordering::Relaxed),
        completed,
    })
}

fn one_connection(target: SocketAddr) -> std::io::Result<()> {
    let mut stream = TcpStream::connect_timeout(&target, CONNECTION_TIMEOUT)?;
    stream.set_read_timeout(Some(CONNECTION_TIMEOUT))?;
    stream.set_nodelay(true)?;
    stream.write_all(b"?")?;
    let mut byte = [0u8; 1];
    stream.read_exact(&mut byte)?;
    if byte != *b"!" {
        return Err(std::io::Error::other("not the responder's answer"));
    }
    Ok(())
}

/// CPU seconds (user and system) process `pid` has used so far; 0 when it is gone.
pub fn process_cpu_secs(pid: Option<u32>) -> f64 {
    let Some(stat) = pid.and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
    else {
        return 0.0;
    };
    // The command name may hold spaces: fields are counted after its closing parenthesis.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line: the 12th and 13th after the name.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let per_sec = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|t| *t > 0)
        .unwrap_or(100);
    (ticks(11) + ticks(12)) as f64 / per_sec as f64
}
