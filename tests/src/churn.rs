//! Connection churn through the demo chain, and what it leaves in the daemons: viewers on the
//! clinic LAN that open connections as fast as they can (two in four fetch a document checked
//! by its SHA-256, one is dropped right after the connect, one in the middle of its request),
//! and the per-process figures the churn test and the soak compare (open descriptors, resident
//! memory, connections still open, completed handshakes).

use std::io::Write as _;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::lab::{LAN_SERVICE_ADDRESS, SERVICE_PORT};
use crate::tlstools::{fetch_document, pattern_sha256};
use renkei::control_socket::SOCKET_NAME;

use crate::{Daemon, Lab, Node};

/// Each full fetch's document.
pub const DOCUMENT_BYTES: u64 = 16 * 1024;
/// How long a viewer waits for a connection to be accepted.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the viewers did so far.
#[derive(Debug, Default)]
pub struct ChurnCounts {
    /// Documents fetched whole and right.
    pub fetched: AtomicU64,
    /// Connections or fetches that failed.
    pub failed: AtomicU64,
    /// Connections dropped by the viewer right after the connect.
    pub dropped_before_request: AtomicU64,
    /// Connections dropped by the viewer in the middle of the request line.
    pub dropped_mid_request: AtomicU64,
}

impl ChurnCounts {
    /// (fetched, failed, dropped before, dropped mid-request).
    pub fn totals(&self) -> (u64, u64, u64, u64) {
        (
            self.fetched.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            self.dropped_before_request.load(Ordering::Relaxed),
            self.dropped_mid_request.load(Ordering::Relaxed),
        )
    }
}

/// Viewers churning connections until [`Viewers::stop`] (or drop).
pub struct Viewers {
    /// What they did.
    pub counts: Arc<ChurnCounts>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Viewers {
    /// Starts `n` viewers on the clinic LAN of `lab`, against the clinic's documents service.
    pub fn start(lab: &Lab, n: usize) -> Viewers {
        let counts = Arc::new(ChurnCounts::default());
        let stop = Arc::new(AtomicBool::new(false));
        let ns = lab.lan_ns(Node::Clinic).name().to_string();
        let threads = (0..n as u64)
            .map(|seed| {
                let (ns, counts, stop) = (ns.clone(), counts.clone(), stop.clone());
                std::thread::spawn(move || {
                    let _ = crate::netns::run_inside(&ns, move || viewer(&counts, &stop, seed));
                })
            })
            .collect();
        Viewers {
            counts,
            stop,
            threads,
        }
    }

    /// Stops the viewers and waits for their last connection.
    pub fn stop(mut self) -> Arc<ChurnCounts> {
        self.halt();
        self.counts.clone()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for Viewers {
    fn drop(&mut self) {
        self.halt();
    }
}

fn viewer(counts: &ChurnCounts, stop: &AtomicBool, seed: u64) {
    let Ok(target) = format!("{LAN_SERVICE_ADDRESS}:{SERVICE_PORT}").parse::<SocketAddr>() else {
        return;
    };
    let expected = pattern_sha256(DOCUMENT_BYTES, seed);
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let Ok(mut stream) = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT) else {
            counts.failed.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let counter = match n % 4 {
            0 => &counts.dropped_before_request,
            1 => {
                let _ = stream.write_all(b"GET 16");
                &counts.dropped_mid_request
            }
            _ => match fetch_document(stream, DOCUMENT_BYTES, seed, None, |_| {}) {
                Ok(fetched) if fetched.sha256 == expected => &counts.fetched,
                _ => &counts.failed,
            },
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Open file descriptors of a daemon (`None` when it does not run), as [`held_descriptors`]
/// counts them.
pub fn open_fds(daemon: &Daemon) -> Option<usize> {
    held_descriptors(daemon).map(|held| held.len())
}

/// What a daemon's descriptors point at (`socket:[inode]`, `anon_inode:[eventfd]`, paths),
/// sorted; `None` when it does not run. Connections accepted on its control socket are left
/// out: the status query a test just made is answered before the daemon closes its end, so
/// for a moment after every answer the daemon holds one more descriptor that is not a leak.
pub fn held_descriptors(daemon: &Daemon) -> Option<Vec<String>> {
    let pid = daemon.pid()?;
    let control = control_connections(pid, &daemon.runtime_dir.join(SOCKET_NAME));
    let mut held: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .map(|target| target.to_string_lossy().into_owned())
        .filter(|target| !control.contains(target))
        .collect();
    held.sort();
    Some(held)
}

/// The `socket:[inode]` names of the connections accepted on the unix socket at `path`
/// (accepted sockets carry their listener's path in /proc/net/unix; the listener itself has
/// the accepting flag, 00010000).
fn control_connections(pid: u32, path: &std::path::Path) -> Vec<String> {
    let path = path.to_string_lossy();
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/unix")).unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            // Num RefCount Protocol Flags Type St Inode Path
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (flags, inode, socket_path) = (fields.get(3)?, fields.get(6)?, fields.get(7)?);
            (*socket_path == path && *flags != "00010000").then(|| format!("socket:[{inode}]"))
        })
        .collect()
}

/// The `socket:[inode]` names of the TCP sockets a daemon holds that are not listening
/// (connections, in any state), with their state in hex as /proc/net/tcp shows it (01
/// established, 08 close-wait, ...); `None` when it does not run. A daemon between rounds
/// holds none: one still there is a connection on its way out, or a leak.
pub fn tcp_connections(daemon: &Daemon) -> Option<Vec<(String, String)>> {
    let pid = daemon.pid()?;
    let held = held_descriptors(daemon)?;
    let mut connections = Vec::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(state), Some(inode)) = (fields.get(3), fields.get(9)) else {
                continue;
            };
            let name = format!("socket:[{inode}]");
            if *state != "0A" && held.contains(&name) {
                connections.push((name, (*state).to_owned()));
            }
        }
    }
    Some(connections)
}

/// Each of `descriptors` (as [`held_descriptors`] names them) with what it is, for a
/// failure message: a socket's table (tcp, udp6, unix, netlink...) and, for TCP and UDP, its
/// addresses in hex and state as /proc/net shows them.
pub fn describe_descriptors(daemon: &Daemon, descriptors: &[String]) -> Vec<String> {
    let Some(pid) = daemon.pid() else {
        return descriptors.to_vec();
    };
    let tables: Vec<(&str, String)> = [
        "tcp", "tcp6", "udp", "udp6", "unix", "netlink", "raw", "raw6", "packet",
    ]
    .into_iter()
    .map(|t| {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{t}")).unwrap_or_default();
        (t, text)
    })
    .collect();
    descriptors
        .iter()
        .map(|name| {
            let Some(inode) = name
                .strip_prefix("socket:[")
                .and_then(|rest| rest.strip_suffix(']'))
            else {
                return name.clone();
            };
            for (table, text) in &tables {
                for line in text.lines().skip(1) {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    let (inode_at, shown) = match *table {
                        "unix" => (6, vec![fields.get(7).copied().unwrap_or("")]),
                        "netlink" => (9, vec![fields.get(1).copied().unwrap_or("")]),
                        "packet" => (8, vec![]),
                        _ => (
                            9,
                            fields.get(1..4).map(<[&str]>::to_vec).unwrap_or_default(),
                        ),
                    };
                    if fields.get(inode_at) == Some(&inode) {
                        return format!("{name} {table} {}", shown.join(" "));
                    }
                }
            }
            name.clone()
        })
        .collect()
}

/// Resident memory of a daemon in KiB (`None` when it does not run).
pub fn rss_kib(daemon: &Daemon) -> Option<u64> {
    let pid = daemon.pid()?;
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Connections open in all of a daemon's services (`None` when it does not answer).
pub fn open_connections(daemon: &Daemon) -> Option<u64> {
    let status = daemon.status().ok()?;
    status["proxy"]["services"]
        .as_array()?
        .iter()
        .map(|s| s["active"].as_u64())
        .sum()
}

/// WireGuard handshakes completed with all of a daemon's peers (`None` when it does not
/// answer).
pub fn handshakes_completed(daemon: &Daemon) -> Option<u64> {
    let status = daemon.status().ok()?;
    Some(
        status["tunnel"]["peers"]
            .as_array()?
            .iter()
            .filter_map(|p| p["backend"]["wireguard"]["handshakes_completed"].as_u64())
            .sum(),
    )
}
