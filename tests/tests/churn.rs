//! Load and churn (AVL-3, INT-2): viewers on the clinic LAN open short connections through the
//! whole chain (clinic -> hub -> hospital -> document server) as fast as they can, round after
//! round, with failures injected in every round: connections the viewer drops before its
//! request, or in the middle of it, and a WAN link flap at the hub while they run. After each
//! round, once every service has no connection open, each daemon must hold exactly the file
//! descriptors it held after the first round (a leaked socket or file shows at once), and its
//! resident memory must not climb from round to round (what the allocator keeps after the
//! first rounds is bounded; a steady climb is the failure).

use std::time::{Duration, Instant};

use renkei_lab::chain::{start_chain, Chain};
use renkei_lab::churn::{
    describe_descriptors, held_descriptors, open_connections, rss_kib, tcp_connections,
    ChurnCounts, Viewers,
};
use renkei_lab::{require_root, wait_until, Daemon, Lab, Node};

/// Rounds of churn; the first is the warm-up whose end is the baseline.
const ROUNDS: usize = 4;
/// How long each round opens connections.
const ROUND: Duration = Duration::from_secs(8);
/// Viewers opening connections at once.
const VIEWERS: usize = 8;
/// The WAN link at the hub is down this long in the middle of every round after the first.
const FLAP_DOWN: Duration = Duration::from_secs(1);
/// How long the services may take to close every connection after a round (a connection cut
/// by the flap waits for its TCP retransmissions or the services' idle limits).
const DRAIN: Duration = Duration::from_secs(90);
/// How long a round's last sockets may take to be closed once the services count no
/// connection open.
const FDS_SETTLE: Duration = Duration::from_secs(10);
/// How much a daemon's resident memory may grow from the end of the second round to the end
/// of the last (measured: see docs/reliability.md).
const RSS_GROWTH_BOUND_KIB: u64 = 4 * 1024;
/// The hub's WAN interface (as in the lab).
const WAN_DEV: &str = "wan0";

fn daemons(chain: &Chain) -> [(&'static str, &Daemon); 3] {
    [
        ("clinic", &chain.clinic),
        ("hub", &chain.hub),
        ("hospital", &chain.hospital),
    ]
}

/// Runs one round; flaps the hub's WAN link in its middle when `flap`.
fn round(lab: &Lab, flap: bool) -> std::sync::Arc<ChurnCounts> {
    let viewers = Viewers::start(lab, VIEWERS);
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
    viewers.stop()
}

#[test]
fn avl3_int2_churn_with_aborted_connections_and_a_link_flap_leaks_no_descriptor_and_no_memory() {
    require_root!();
    let lab = Lab::new().expect("lab");
    let chain = start_chain(&lab);
    let mut baseline: Vec<Vec<String>> = Vec::new();
    let mut rss: Vec<Vec<u64>> = Vec::new();
    for n in 1..=ROUNDS {
        let counts = round(&lab, n > 1);
        eprintln!("churn round {n}: {counts:?}");
        assert!(
            counts.totals().0 > 0,
            "round {n}: no document fetched: {counts:?}\n{}",
            chain.clinic.log_text()
        );
        for (name, daemon) in daemons(&chain) {
            wait_until(DRAIN, "every connection of the round to close", || {
                (open_connections(daemon) == Some(0)).then_some(())
            })
            .unwrap_or_else(|e| panic!("{name}, round {n}: {e}\n{}", daemon.log_text()));
        }
        // The services count a connection closed as its handler ends; its socket may take a
        // moment more. Judged (and, after round 1, the baseline taken) once no daemon holds a
        // TCP connection any more: one that stays is a leak.
        for (name, daemon) in daemons(&chain) {
            let mut held = Vec::new();
            let gone = wait_until(FDS_SETTLE, "the round's TCP sockets to close", || {
                held = tcp_connections(daemon)?;
                held.is_empty().then_some(())
            });
            assert!(
                gone.is_ok(),
                "{name}, round {n}: TCP connections still held (socket, state) {held:?}"
            );
        }
        if n == 1 {
            baseline = daemons(&chain)
                .iter()
                .map(|(name, d)| held_descriptors(d).unwrap_or_else(|| panic!("{name} runs")))
                .collect();
            for ((name, daemon), held) in daemons(&chain).iter().zip(&baseline) {
                eprintln!(
                    "churn baseline of {name}: {:?}",
                    describe_descriptors(daemon, held)
                );
            }
        } else {
            // A socket of the round may still be on its way out (the services count a
            // connection closed as its handler ends): a leak is one that never goes. Counted,
            // not compared: a daemon may replace a socket (a new inode) and that is no leak.
            for ((name, daemon), before) in daemons(&chain).iter().zip(&baseline) {
                let mut now = Vec::new();
                let back = wait_until(FDS_SETTLE, "the descriptors back to the baseline", || {
                    now = held_descriptors(daemon)?;
                    (now.len() == before.len()).then_some(())
                });
                assert!(
                    back.is_ok(),
                    "{name}, round {n}: {} descriptors, {} after round 1; new: {:?}, gone: {:?}",
                    now.len(),
                    before.len(),
                    now.iter()
                        .filter(|d| !before.contains(d))
                        .collect::<Vec<_>>(),
                    before
                        .iter()
                        .filter(|d| !now.contains(d))
                        .collect::<Vec<_>>(),
                );
            }
        }
        rss.push(
            daemons(&chain)
                .iter()
                .map(|(name, d)| rss_kib(d).unwrap_or_else(|| panic!("{name} runs")))
                .collect(),
        );
        eprintln!(
            "churn round {n}: open descriptors {:?}, RSS KiB {:?}",
            baseline.iter().map(Vec::len).collect::<Vec<_>>(),
            rss[n - 1]
        );
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
