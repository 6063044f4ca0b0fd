//! Primary and backup hubs (AVL-4) in the namespace lab: two real hub daemons on the WAN
//! bridge with the same tunnel address, and a facility box whose `[tunnel.failover]` names
//! both. The primary is cut off (its WAN link down) and killed; the box must move to the
//! backup within the documented bound, new connections must reach the backup, an open
//! connection through the failed hub must end cleanly, and the box must return to the primary
//! only after the hold time.
//!
//! Which hub a connection reached is told by a TCP listener on each hub's tunnel address that
//! notes who connected; the hubs themselves are the real `renkei` binary.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use renkei::config::FailoverConfig;
use renkei_lab::lab::{BACKUP_HUB_PEER, PRIMARY_HUB_PEER};
use renkei_lab::probe::ProbeEndpoint;
use renkei_lab::traffic::spawn_echo;
use renkei_lab::{require_root, wait_until, Daemon, Lab, Node};

/// The port of the listener on each hub's tunnel address that says which hub was reached.
const WHO_PORT: u16 = 7100;
/// The port of the echo service on the primary that the open transfer uses.
const ECHO_PORT: u16 = 7101;
/// Small times for the test (the defaults are 30 s, 120 s and 10 s).
const FAILOVER_AFTER_SECS: u64 = 6;
const FAIL_BACK_AFTER_SECS: u64 = 8;
const PROBE_INTERVAL_SECS: u64 = 2;
/// How often the group looks at its members (tunnel/hub_group.rs), rounded up.
const GROUP_CHECK_SECS: u64 = 1;
/// The documented bound of a failover: silence for failover_after_secs, then the next check.
const FAILOVER_BOUND: Duration = Duration::from_secs(FAILOVER_AFTER_SECS + GROUP_CHECK_SECS);
/// The documented bound of a return: the primary answers a probe (within one probe interval
/// of coming back), then stays healthy for the hold time, then the next check.
const FAIL_BACK_BOUND: Duration =
    Duration::from_secs(PROBE_INTERVAL_SECS + FAIL_BACK_AFTER_SECS + GROUP_CHECK_SECS);
/// How long the always-on box may take to come up at start.
const LINK_UP_TIMEOUT: Duration = Duration::from_secs(15);
/// A new connection through the tunnel.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

fn failover_config() -> FailoverConfig {
    FailoverConfig {
        hubs: Vec::new(),
        failover_after_secs: FAILOVER_AFTER_SECS,
        fail_back_after_secs: FAIL_BACK_AFTER_SECS,
        probe_interval_secs: PROBE_INTERVAL_SECS,
    }
}

/// The active hub in the box's status document, if it has a group.
fn active_hub(daemon: &Daemon) -> Option<String> {
    let status = daemon.status().ok()?;
    status["hubs"]["active"].as_str().map(str::to_string)
}

/// The `hub_switched` events in the box's ring.
fn hub_switches(daemon: &Daemon) -> Vec<serde_json::Value> {
    daemon
        .status()
        .ok()
        .and_then(|s| s["events"].as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e["code"] == "hub_switched")
        .collect()
}

/// Waits until the box uses `hub`; returns how long it took.
fn wait_for_hub(daemon: &Daemon, hub: &str, bound: Duration, what: &str) -> Duration {
    let started = Instant::now();
    // 2x the documented figure: a busy CI machine must not flake.
    wait_until(bound * 2, what, || {
        (active_hub(daemon).as_deref() == Some(hub)).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log_text()));
    started.elapsed()
}

/// The listeners that tell which hub a connection reached.
struct Who {
    primary: ProbeEndpoint,
    backup: ProbeEndpoint,
}

impl Who {
    /// Connects from the facility's namespace to the hubs' shared tunnel address; returns the
    /// peer name of the hub that accepted it, `None` when the connect failed.
    fn connect(&self, lab: &Lab, from: Node) -> Option<&'static str> {
        let before = (self.primary.peers().len(), self.backup.peers().len());
        let address = format!("{}:{WHO_PORT}", Node::Hub.tunnel_address());
        lab.ns(from).tcp_connect(&address, CONNECT_TIMEOUT).ok()?;
        wait_until(
            Duration::from_secs(2),
            "the listener to note the peer",
            || {
                let now = (self.primary.peers().len(), self.backup.peers().len());
                match (now.0 > before.0, now.1 > before.1) {
                    (true, false) => Some(PRIMARY_HUB_PEER),
                    (false, true) => Some(BACKUP_HUB_PEER),
                    _ => None,
                }
            },
        )
        .ok()
    }
}

/// Connects until one attempt reaches `hub` (the first may race the switch); panics after the
/// bound.
fn new_connection_reaches(who: &Who, lab: &Lab, from: Node, hub: &str, box_: &Daemon) {
    wait_until(
        FAILOVER_BOUND * 2,
        &format!("a new connection to reach {hub}"),
        || (who.connect(lab, from) == Some(hub)).then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", box_.log_text()));
}

/// The hospital (always-on) with the primary and backup hubs: cut, return, kill, return.
#[test]
fn avl4_always_on_box_fails_over_on_cut_and_kill_and_returns_after_the_hold_time() {
    require_root!();
    let lab = Lab::with_backup_hub().expect("lab");
    let mut primary = lab
        .start(Node::Hub, &lab.config(Node::Hub))
        .expect("primary hub");
    let _backup = lab
        .start_backup_hub(&lab.backup_hub_config())
        .expect("backup hub");
    let mut config = lab.config(Node::Hospital);
    lab.add_backup_hub(&mut config, failover_config());
    let hospital = lab.start(Node::Hospital, &config).expect("hospital");
    wait_until(LINK_UP_TIMEOUT, "the hospital on the primary, up", || {
        let status = hospital.status().ok()?;
        let primary_up = status["tunnel"]["peers"]
            .as_array()?
            .iter()
            .any(|p| p["name"] == PRIMARY_HUB_PEER && p["state"] == "up");
        (primary_up && status["hubs"]["active"] == PRIMARY_HUB_PEER).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", hospital.log_text()));

    // The hubs' tunnel address exists once their daemons run.
    let who_address = format!("{}:{WHO_PORT}", Node::Hub.tunnel_address());
    let who = Who {
        primary: ProbeEndpoint::start(lab.ns(Node::Hub), &who_address).expect("listener"),
        backup: ProbeEndpoint::start(lab.backup_hub_ns(), &who_address).expect("listener"),
    };
    assert_eq!(
        who.connect(&lab, Node::Hospital),
        Some(PRIMARY_HUB_PEER),
        "the primary carries the prefixes while it answers"
    );
    // The backup is probed, healthy, and not used.
    let status = hospital.status().expect("status");
    let members = status["hubs"]["members"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(members.len(), 2, "{status}");
    assert_eq!(members[0]["active"], true);
    assert_eq!(members[1]["active"], false);

    // An open transfer through the primary.
    let echo = lab
        .ns(Node::Hub)
        .tcp_listener(&format!("{}:{ECHO_PORT}", Node::Hub.tunnel_address()))
        .expect("echo listener");
    let _echo = spawn_echo(echo, 1);
    let mut open = lab
        .ns(Node::Hospital)
        .tcp_connect(
            &format!("{}:{ECHO_PORT}", Node::Hub.tunnel_address()),
            CONNECT_TIMEOUT,
        )
        .expect("an open connection through the primary");
    open.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    let mut buf = [0u8; 5];
    open.write_all(b"hello").expect("write");
    open.read_exact(&mut buf).expect("echo through the primary");

    // Step 1: the primary's WAN link is cut.
    let switches_before = hub_switches(&hospital).len();
    lab.ns(Node::Hub)
        .ip(&["link", "set", "wan0", "down"])
        .expect("cut the primary's WAN");
    let took = wait_for_hub(&hospital, BACKUP_HUB_PEER, FAILOVER_BOUND, "the failover");
    eprintln!("failover after the WAN cut took {took:?}");
    new_connection_reaches(&who, &lab, Node::Hospital, BACKUP_HUB_PEER, &hospital);
    let switches = hub_switches(&hospital);
    let step: Vec<_> = switches[switches_before..].to_vec();
    assert_eq!(step.len(), 1, "one move: {step:?}");
    assert_eq!(step[0]["params"]["from"], PRIMARY_HUB_PEER);
    assert_eq!(step[0]["params"]["to"], BACKUP_HUB_PEER);
    assert_eq!(step[0]["params"]["reason"], "no_answer");
    assert_eq!(step[0]["level"], "warning");
    // The open transfer ends cleanly: its packets now reach the backup, which knows no such
    // connection and resets it; nothing hangs.
    let ended = open
        .write_all(b"again")
        .and_then(|()| open.read_exact(&mut buf));
    let err = ended.expect_err("the open connection through the failed hub ends");
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::UnexpectedEof
                | std::io::ErrorKind::BrokenPipe
        ),
        "it ends with a reset, not a hang: {err:?}"
    );
    drop(open);

    // Step 2: the link is back; the box returns only after the hold time.
    let switches_before = hub_switches(&hospital).len();
    lab.ns(Node::Hub)
        .ip(&["link", "set", "wan0", "up"])
        .expect("restore the primary's WAN");
    let took = wait_for_hub(
        &hospital,
        PRIMARY_HUB_PEER,
        FAIL_BACK_BOUND,
        "the fail back",
    );
    eprintln!("fail back after the WAN came back took {took:?}");
    assert!(
        took >= Duration::from_secs(FAIL_BACK_AFTER_SECS),
        "no return before the primary was healthy for the hold time: {took:?}"
    );
    new_connection_reaches(&who, &lab, Node::Hospital, PRIMARY_HUB_PEER, &hospital);
    let switches = hub_switches(&hospital);
    let step: Vec<_> = switches[switches_before..].to_vec();
    assert_eq!(step.len(), 1, "one move back, no flapping: {step:?}");
    assert_eq!(step[0]["params"]["reason"], "fail_back");
    assert_eq!(step[0]["level"], "info");

    // Step 3: the primary's process dies.
    let switches_before = hub_switches(&hospital).len();
    primary.kill();
    let took = wait_for_hub(&hospital, BACKUP_HUB_PEER, FAILOVER_BOUND, "the failover");
    eprintln!("failover after the kill took {took:?}");
    new_connection_reaches(&who, &lab, Node::Hospital, BACKUP_HUB_PEER, &hospital);
    let status = hospital.status().expect("status");
    assert_eq!(status["hubs"]["failovers"], 2, "{}", status["hubs"]);
    assert_eq!(
        status["hubs"]["members"][0]["healthy"], false,
        "the dead primary is not healthy"
    );

    // Step 4: the primary is started again; the box returns after the hold time.
    let _primary = lab
        .start(Node::Hub, &lab.config(Node::Hub))
        .expect("primary hub again");
    // The listener stays bound to the tunnel address, which the new daemon puts back.
    let took = wait_for_hub(
        &hospital,
        PRIMARY_HUB_PEER,
        FAIL_BACK_BOUND,
        "the fail back",
    );
    eprintln!("fail back after the restart took {took:?}");
    new_connection_reaches(&who, &lab, Node::Hospital, PRIMARY_HUB_PEER, &hospital);
    let switches = hub_switches(&hospital);
    assert_eq!(
        switches.len() - switches_before,
        2,
        "a failover and one return: {switches:?}"
    );
}
