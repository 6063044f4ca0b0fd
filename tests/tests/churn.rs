//! Load and churn (AVL-3, INT-2): viewers on the clinic LAN open short connections through the
//! whole chain (clinic -> hub -> hospital -> document server) as fast as they can, round after
//! round, with failures injected in every round: connections the viewer drops before its
//! request, or in the middle of it, and a WAN link flap at the hub while they run. After each
//! round, once every service has no connection open, each daemon must hold exactly the file
//! descriptors it held after the first round (a leaked socket or file shows at once), and its
//! resident memory must not climb from round to round (what the allocator keeps after the
//! first rounds is bounded; a steady climb is the failure).

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use renkei_lab::chain::{start_chain, Chain};
use renkei_lab::lab::{LAN_SERVICE_ADDRESS, SERVICE_PORT};
use renkei_lab::tlstools::{fetch_document, pattern_sha256};
use renkei_lab::{require_root, wait_until, Daemon, Lab, Node};

/// Rounds of churn; the first is the warm-up whose end is the baseline.
const ROUNDS: usize = 4;
/// How long each round opens connections.
const ROUND: Duration = Duration::from_secs(8);
/// Viewers opening connections at once.
const VIEWERS: usize = 8;
/// Each full fetch's document.
const DOCUMENT_BYTES: u64 = 16 * 1024;
/// The WAN link at the hub is down this long in the middle of every round after the first.
const FLAP_DOWN: Duration = Duration::from_secs(1);
/// How long the services may take to close every connection after a round (a connection cut
/// by the flap waits for its TCP retransmissions or the services' idle limits).
const DRAIN: Duration = Duration::from_secs(90);
/// How much a daemon's resident memory may grow from the end of the second round to the end
/// of the last (measured: see docs/reliability.md).
const RSS_GROWTH_BOUND_KIB: u64 = 4 * 1024;
/// The hub's WAN interface (as in the lab).
const WAN_DEV: &str = "wan0";

/// What the viewers did in one round.
#[derive(Debug, Default)]
struct RoundCounts {
    fetched: AtomicU64,
    failed: AtomicU64,
    dropped_before_request: AtomicU64,
    dropped_mid_request: AtomicU64,
}

/// One viewer's connections until `stop`: three in four fetch a document (checked by its
/// SHA-256), the others are dropped before or in the middle of the request.
fn viewer(lab_ns: String, counts: Arc<RoundCounts>, stop: Arc<AtomicBool>, seed: u64) {
    let target = format!("{LAN_SERVICE_ADDRESS}:{SERVICE_PORT}")
        .parse()
        .expect("address");
    let expected = pattern_sha256(DOCUMENT_BYTES, seed);
    let mut n = 0u64;
    renkei_lab::netns::run_inside(&lab_ns, move || {
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let Ok(mut stream) =
                std::net::TcpStream::connect_timeout(&target, Duration::from_secs(5))
            else {
                counts.failed.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            match n % 4 {
                0 => {
                    drop(stream);
                    counts
                        .dropped_before_request
                        .fetch_add(1, Ordering::Relaxed);
                }
                1 => {
                    let _ = stream.write_all(b"GET 16");
                    drop(stream);
                    counts.dropped_mid_request.fetch_add(1, Ordering::Relaxed);
                }
                _ => match fetch_document(stream, DOCUMENT_BYTES, seed, None, |_| {}) {
                    Ok(fetched) if fetched.sha256 == expected => {
                        counts.fetched.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        counts.failed.fetch_add(1, Ordering::Relaxed);
                    }
                },
            }
        }
    })
    .expect("viewer namespace");
}

/// Open file descriptors of a daemon.
fn open_fds(daemon: &Daemon) -> usize {
    let pid = daemon.pid().expect("daemon runs");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fd directory")
        .count()
}

/// Resident memory of a daemon, KiB.
fn rss_kib(daemon: &Daemon) -> u64 {
    let pid = daemon.pid().expect("daemon runs");
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Connections open in all of a daemon's services.
fn open_connections(daemon: &Daemon) -> Option<u64> {
    let status = daemon.status().ok()?;
    status["proxy"]["services"]
        .as_array()?
        .iter()
        .map(|s| s["active"].as_u64())
        .sum()
}

fn daemons(chain: &Chain) -> [(&'static str, &Daemon); 3] {
    [
        ("clinic", &chain.clinic),
        ("hub", &chain.hub),
        ("hospital", &chain.hospital),
    ]
}

/// Runs one round; flaps the hub's WAN link in its middle when `flap`.
fn round(lab: &Lab, flap: bool) -> RoundCounts {
    let counts = Arc::new(RoundCounts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let ns = lab.lan_ns(Node::Clinic).name().to_string();
    let viewers: Vec<_> = (0..VIEWERS as u64)
        .map(|seed| {
            let (ns, counts, stop) = (ns.clone(), counts.clone(), stop.clone());
            std::thread::spawn(move || viewer(ns, counts, stop, seed))
        })
        .collect();
    let started = Instant::now();
    if flap {
        // The flap's place in the round and its length are the fault, not a wait.
        std::thread::sleep(ROUND / 2);
        let hub = lab.ns(Node::Hub);
        hub.ip(&["link", "set", WAN_DEV, "down"])
            .expect("link down");
        std::thread::sleep(FLAP_DOWN);
        hub.ip(&["link", "set", WAN_DEV, "up"]).expect("link up");
    }
    std::thread::sleep(ROUND.saturating_sub(started.elapsed()));
    stop.store(true, Ordering::Relaxed);
    for v in viewers {
        v.join().expect("viewer");
    }
    Arc::try_unwrap(counts).expect("viewers are done")
}

#[test]
fn avl3_int2_churn_with_aborted_connections_and_a_link_flap_leaks_no_descriptor_and_no_memory() {
    require_root!();
    let lab = Lab::new().expect("lab");
    let chain = start_chain(&lab);
    let mut baseline_fds: Vec<usize> = Vec::new();
    let mut rss: Vec<Vec<u64>> = Vec::new();
    for n in 1..=ROUNDS {
        let counts = round(&lab, n > 1);
        eprintln!("churn round {n}: {counts:?}");
        assert!(
            counts.fetched.load(Ordering::Relaxed) > 0,
            "round {n}: no document fetched: {counts:?}\n{}",
            chain.clinic.log_text()
        );
        for (name, daemon) in daemons(&chain) {
            wait_until(DRAIN, "every connection of the round to close", || {
                (open_connections(daemon) == Some(0)).then_some(())
            })
            .unwrap_or_else(|e| panic!("{name}, round {n}: {e}\n{}", daemon.log_text()));
        }
        let fds: Vec<usize> = daemons(&chain).iter().map(|(_, d)| open_fds(d)).collect();
        rss.push(daemons(&chain).iter().map(|(_, d)| rss_kib(d)).collect());
        eprintln!(
            "churn round {n}: open descriptors {fds:?}, RSS KiB {:?}",
            rss[n - 1]
        );
        if n == 1 {
            baseline_fds = fds;
        } else {
            assert_eq!(
                fds, baseline_fds,
                "round {n}: clinic, hub, hospital descriptors back to the baseline"
            );
        }
    }
    for (i, (name, _)) in daemons(&chain).iter().enumerate() {
        let second = rss[1][i];
        let last = rss[ROUNDS - 1][i];
        assert!(
            last <= second + RSS_GROWTH_BOUND_KIB,
            "{name}: resident memory grew from {second} KiB after round 2 to {last} KiB after round {ROUNDS}"
        );
    }
}
