//! Real third-party TLS stacks and servers for the proxy tests: `openssl s_client`,
//! `openssl s_server`, a plain TCP document server on a facility LAN, and the LAN client that
//! fetches from it. Every process started here is killed when its guard is dropped; every
//! thread stops when its guard is dropped.
//!
//! Nothing here talks TLS itself: the TLS is always renkei's on one side and openssl's (or
//! another scanner's) on the other.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;

use crate::netns::Namespace;
use crate::wait::wait_until;

/// The first line of every document the server sends (followed by the byte count).
pub const DOCUMENT_HEADER: &str = "renkei-lab document";
/// How long one blocking read or write in the document server or client may take. Well over
/// the boxes' own dead-peer detection (TCP keepalive gives up after about 60 s, and a connection
/// closing towards a dead peer has a 60 s user timeout from its first retransmission), so a
/// viewer never gives up first: its close would race the keepalive and turn the connection
/// into one whose end the boxes learn only from the retransmission timeout.
pub const DOCUMENT_IO_TIMEOUT: Duration = Duration::from_secs(150);
/// How long a held document may wait for its gate to open.
const GATE_TIMEOUT: Duration = Duration::from_secs(120);
/// How often the accept loop checks whether it should stop.
const ACCEPT_POLL: Duration = Duration::from_millis(20);
/// Bytes per write of the document server.
const CHUNK_BYTES: usize = 64 * 1024;

/// A deterministic byte stream (xorshift), the same on both ends of a transfer.
pub struct Pattern {
    state: u64,
}

impl Pattern {
    /// The stream for `seed`.
    pub fn new(seed: u64) -> Pattern {
        Pattern { state: seed | 1 }
    }

    /// Fills `buf` with the next bytes (eight per step).
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            let bytes = self.state.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

/// SHA-256 of `len` bytes of `Pattern::new(seed)` sent in [`CHUNK_BYTES`] pieces.
pub fn pattern_sha256(len: u64, seed: u64) -> Vec<u8> {
    let mut pattern = Pattern::new(seed);
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; CHUNK_BYTES];
    let mut left = len;
    while left > 0 {
        let n = left.min(CHUNK_BYTES as u64) as usize;
        pattern.fill(&mut buf[..n]);
        digest.update(&buf[..n]);
        left -= n as u64;
    }
    digest.finish().as_ref().to_vec()
}

/// A plain TCP "document server" on a facility LAN.
///
/// Protocol: the client sends `GET <len> <seed> <held_after>\n`; the server answers
/// `renkei-lab document <len>\n` and `len` pattern bytes, then closes. After `held_after`
/// bytes it waits until the gate is open (see [`DocumentServer::hold`]). A connection that
/// sends nothing gets the header line for a zero-length document as soon as it sends a line.
pub struct DocumentServer {
    stop: Arc<AtomicBool>,
    gate: Arc<(Mutex<bool>, Condvar)>,
    accept: Option<JoinHandle<()>>,
    served: Arc<Mutex<u64>>,
}

impl DocumentServer {
    /// Listens on `addr` inside `ns`.
    pub fn start(ns: &Namespace, addr: &str) -> anyhow::Result<DocumentServer> {
        let listener = ns.tcp_listener(addr)?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let gate = Arc::new((Mutex::new(true), Condvar::new()));
        let served = Arc::new(Mutex::new(0));
        let accept = {
            let (stop, gate, served) = (stop.clone(), gate.clone(), served.clone());
            std::thread::spawn(move || accept_loop(listener, stop, gate, served))
        };
        Ok(DocumentServer {
            stop,
            gate,
            accept: Some(accept),
            served,
        })
    }

    /// Closes the gate: documents stop after their `held_after` bytes until [`release`].
    ///
    /// [`release`]: DocumentServer::release
    pub fn hold(&self) {
        *self.gate.0.lock().unwrap_or_else(PoisonError::into_inner) = false;
    }

    /// Opens the gate.
    pub fn release(&self) {
        *self.gate.0.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.gate.1.notify_all();
    }

    /// Requests answered so far.
    pub fn served(&self) -> u64 {
        *self.served.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for DocumentServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.release();
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

fn accept_loop(
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    gate: Arc<(Mutex<bool>, Condvar)>,
    served: Arc<Mutex<u64>>,
) {
    let mut workers = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                let (gate, served) = (gate.clone(), served.clone());
                workers.push(std::thread::spawn(move || {
                    let _ = serve(stream, &gate, &served);
                }));
            }
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(ACCEPT_POLL);
            }
            Err(_) => std::thread::sleep(ACCEPT_POLL),
        }
        workers.retain(|w: &JoinHandle<()>| !w.is_finished());
    }
    for worker in workers {
        let _ = worker.join();
    }
}

fn serve(
    stream: TcpStream,
    gate: &(Mutex<bool>, Condvar),
    served: &Mutex<u64>,
) -> anyhow::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(DOCUMENT_IO_TIMEOUT))?;
    stream.set_write_timeout(Some(DOCUMENT_IO_TIMEOUT))?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let len = fields.first().copied().unwrap_or(0);
    let seed = fields.get(1).copied().unwrap_or(1);
    let held_after = fields.get(2).copied().unwrap_or(u64::MAX);
    *served.lock().unwrap_or_else(PoisonError::into_inner) += 1;
    let mut out = &stream;
    out.write_all(format!("{DOCUMENT_HEADER} {len}\n").as_bytes())?;
    let mut pattern = Pattern::new(seed);
    let mut buf = vec![0u8; CHUNK_BYTES];
    let mut sent = 0u64;
    while sent < len {
        if sent >= held_after {
            let (lock, cvar) = gate;
            let open = lock.lock().unwrap_or_else(PoisonError::into_inner);
            let (open, _) = cvar
                .wait_timeout_while(open, GATE_TIMEOUT, |open| !*open)
                .unwrap_or_else(PoisonError::into_inner);
            anyhow::ensure!(*open, "gate stayed closed");
        }
        let mut n = (len - sent).min(CHUNK_BYTES as u64);
        if sent < held_after {
            n = n.min(held_after - sent);
        }
        let n = n as usize;
        pattern.fill(&mut buf[..n]);
        out.write_all(&buf[..n])?;
        sent += n as u64;
    }
    stream.shutdown(Shutdown::Write)?;
    // Wait for the client's close so the proxy sees an orderly end on both sides.
    let mut rest = Vec::new();
    let _ = (&stream).read_to_end(&mut rest);
    Ok(())
}

/// What a document fetch received.
#[derive(Debug)]
pub struct Fetched {
    /// Pattern bytes received after the header line.
    pub len: u64,
    /// Their SHA-256.
    pub sha256: Vec<u8>,
    /// Length of the request line sent.
    pub request_bytes: u64,
    /// Length of the header line received.
    pub header_bytes: u64,
}

/// Requests `len` bytes of `seed` from a document server over `stream`, reads to the end and
/// hashes what arrived. `progress` is called with the number of pattern bytes received so far.
pub fn fetch_document(
    stream: TcpStream,
    len: u64,
    seed: u64,
    held_after: Option<u64>,
    mut progress: impl FnMut(u64),
) -> anyhow::Result<Fetched> {
    stream.set_read_timeout(Some(DOCUMENT_IO_TIMEOUT))?;
    stream.set_write_timeout(Some(DOCUMENT_IO_TIMEOUT))?;
    let request = match held_after {
        Some(after) => format!("GET {len} {seed} {after}\n"),
        None => format!("GET {len} {seed}\n"),
    };
    (&stream).write_all(request.as_bytes())?;
    let mut reader = BufReader::with_capacity(CHUNK_BYTES, &stream);
    let mut header = String::new();
    reader.read_line(&mut header)?;
    anyhow::ensure!(
        header == format!("{DOCUMENT_HEADER} {len}\n"),
        "unexpected header {header:?}"
    );
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; CHUNK_BYTES];
    let mut received = 0u64;
    loop {
        let n = reader.read(&mut buf).context("reading the document")?;
        if n == 0 {
            break;
        }
        digest.update(&buf[..n]);
        received += n as u64;
        progress(received);
    }
    Ok(Fetched {
        len: received,
        sha256: digest.finish().as_ref().to_vec(),
        request_bytes: request.len() as u64,
        header_bytes: header.len() as u64,
    })
}

/// The result of a finished (or killed) command.
#[derive(Debug)]
pub struct Finished {
    /// Exit status (`None` when it was killed at the timeout).
    pub status: Option<ExitStatus>,
    /// stdout then stderr.
    pub output: String,
}

impl Finished {
    /// Whether it exited with 0.
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }
}

/// Runs `program args` inside `ns` with `stdin` as its input, killing it after `timeout`.
pub fn run_bounded(
    ns: &Namespace,
    program: &str,
    args: &[&str],
    stdin: &[u8],
    timeout: Duration,
) -> anyhow::Result<Finished> {
    let mut child = ns
        .command(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {program}"))?;
    let mut input = child.stdin.take().context("stdin")?;
    let stdin = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let out = read_in_background(child.stdout.take().context("stdout")?);
    let err = read_in_background(child.stderr.take().context("stderr")?);
    let status = wait_until(timeout, program, || match child.try_wait() {
        Ok(Some(status)) => Some(Some(status)),
        Ok(None) => None,
        Err(_) => Some(None),
    })
    .unwrap_or_else(|_| {
        let _ = child.kill();
        let _ = child.wait();
        None
    });
    let _ = writer.join();
    let mut output = out.join().unwrap_or_default();
    output.push_str(&err.join().unwrap_or_default());
    Ok(Finished { status, output })
}

fn read_in_background(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// A long-running process inside a namespace whose output is collected as it comes; killed on
/// drop.
pub struct Background {
    child: Child,
    output: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

impl Background {
    /// Starts `program args` inside `ns`; its stdin is kept open with `keep_stdin`, else null.
    pub fn start(
        ns: &Namespace,
        program: &str,
        args: &[&str],
        keep_stdin: bool,
    ) -> anyhow::Result<Background> {
        let mut child = ns
            .command(program)
            .args(args)
            .stdin(if keep_stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {program}"))?;
        let output = Arc::new(Mutex::new(String::new()));
        let mut readers = Vec::new();
        let stdout = child.stdout.take().context("stdout")?;
        let stderr = child.stderr.take().context("stderr")?;
        readers.push(collect(stdout, output.clone()));
        readers.push(collect(stderr, output.clone()));
        Ok(Background {
            child,
            output,
            readers,
        })
    }

    /// Everything printed so far (stdout and stderr interleaved by line).
    pub fn output(&self) -> String {
        self.output
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits until the output contains `text`.
    pub fn wait_for_output(&self, text: &str, timeout: Duration) -> anyhow::Result<()> {
        wait_until(timeout, text, || self.output().contains(text).then_some(()))
            .with_context(|| format!("output so far:\n{}", self.output()))
    }

    /// Writes to the process's stdin (started with `keep_stdin`).
    pub fn write_stdin(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        let stdin = self
            .child
            .stdin
            .as_mut()
            .context("stdin is not kept open")?;
        stdin.write_all(bytes)?;
        stdin.flush()?;
        Ok(())
    }

    /// Whether the process has exited.
    pub fn has_exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills the process and returns all its output.
    pub fn stop(mut self) -> String {
        self.kill();
        self.output()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.kill();
    }
}

fn collect(pipe: impl Read + Send + 'static, output: Arc<Mutex<String>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            let mut all = output.lock().unwrap_or_else(PoisonError::into_inner);
            all.push_str(&line);
            all.push('\n');
        }
    })
}

/// `openssl s_server -WWW` in `ns` on `accept`, with the certificate and key of the lab box
/// whose TLS folder is `tls` (`box.crt`, `box.key`) and requiring a client certificate from
/// its CA (`operator-ca.crt`), serving the files of `www`; returns once it listens (within
/// `timeout`). An independent TLS server for a renkei outbound service to dial.
pub fn www_server(
    ns: &crate::netns::Namespace,
    accept: &str,
    tls: &std::path::Path,
    www: &std::path::Path,
    timeout: Duration,
) -> anyhow::Result<Background> {
    let text = |p: &std::path::Path| p.display().to_string();
    let args = [
        "-C".to_string(),
        text(www),
        "openssl".to_string(),
        "s_server".to_string(),
        "-accept".to_string(),
        accept.to_string(),
        "-cert".to_string(),
        text(&tls.join("box.crt")),
        "-key".to_string(),
        text(&tls.join("box.key")),
        "-CAfile".to_string(),
        text(&tls.join("operator-ca.crt")),
        "-Verify".to_string(),
        "2".to_string(),
        "-verify_return_error".to_string(),
        "-WWW".to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // `env -C` runs openssl in the folder it serves (-WWW serves relative paths only).
    let server = Background::start(ns, "env", &args, false)?;
    server.wait_for_output("ACCEPT", timeout)?;
    Ok(server)
}
