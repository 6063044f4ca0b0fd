//! A hub's lanes follow its facilities (NET-1, AVL-6): a hub is commissioned with a few
//! facilities and given more by signed pushes. Each push that changes the number of lanes
//! (one TUN queue and one socket on the WireGuard port per core, no more than facilities)
//! gives the hub that many on the TUN device it keeps (a new device would also restart the
//! management API and lose the push's own answer), and the facility's tunnel carries packets
//! again after each.

use std::time::Duration;

use renkei::config::Config;
use renkei_lab::boxconfig::facility_peers;
use renkei_lab::operator::{Operator, Outcome};
use renkei_lab::{require_root, wait_until, Daemon, Lab, Node};

/// `management.confirm_timeout_secs` (the smallest allowed).
const CONFIRM_TIMEOUT_SECS: u64 = 30;
/// The hub's runtime workers: more than this machine's cores, so that lanes can grow to four.
const WORKERS: usize = 4;

/// The hub's full config at `version` with `peers` facilities: the hospital first, then the
/// clinic, then facilities that never connect.
fn hub_config(lab: &Lab, operator: &Operator, version: u64, peers: usize) -> Config {
    let mut hub = lab.full(Node::Hub);
    hub.meta.version = version;
    hub.management = Some(operator.management(Node::Hub, CONFIRM_TIMEOUT_SECS, false));
    let tunnel = hub.tunnel.as_mut().expect("the hub has [tunnel]");
    let extra = peers.saturating_sub(tunnel.peers.len());
    tunnel
        .peers
        .extend(facility_peers(u32::try_from(extra).expect("a few")));
    tunnel.peers.truncate(peers);
    assert_eq!(tunnel.peers[0].name, Node::Hospital.short());
    hub
}

/// The hub's reads per UDP socket and per TUN queue: one entry per lane each.
fn lanes(hub: &Daemon) -> (usize, usize) {
    let status = hub.status().expect("the hub's status");
    let count = |field: &str| {
        status["tunnel"]["backend"]["wireguard"][field]
            .as_array()
            .unwrap_or_else(|| panic!("{field} in {status}"))
            .len()
    };
    (count("udp_reads_per_socket"), count("tun_reads_per_queue"))
}

/// The hub's TUN device's interface index.
fn tun_index(lab: &Lab) -> u32 {
    lab.interface_index(Node::Hub)
        .expect("the TUN device's index")
}

/// Waits until the hub's ping reaches the hospital's tunnel address and comes back.
fn wait_hospital_answers(lab: &Lab, hub: &Daemon, step: &str) {
    let hospital = Node::Hospital.tunnel_address().to_string();
    wait_until(
        Duration::from_secs(20),
        &format!("{step}: the hospital to answer the hub's ping through the tunnel"),
        || {
            lab.ns(Node::Hub)
                .command("ping")
                .args(["-c", "1", "-W", "1", &hospital])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|_| ())
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", hub.log_text()));
}

fn push_and_confirm(lab: &Lab, operator: &Operator, config: &Config, version: u64) {
    let name = format!("hub-v{version}.toml");
    let path = operator
        .write_signed(&name, &renkei_lab::boxconfig::to_toml(config), None)
        .expect("sign");
    let pushed: Outcome = operator.push(lab, Node::Hub, &path).expect("push");
    assert!(pushed.success, "push failed:\n{}", pushed.output);
    assert_eq!(pushed.answers[0]["version"], version, "{}", pushed.output);
    let confirmed = operator
        .confirm(lab, Node::Hub, Some(version))
        .expect("confirm");
    assert!(confirmed.success, "{}", confirmed.output);
}

#[test]
fn net1_avl6_a_hub_given_more_facilities_by_a_push_gets_more_lanes_on_its_kept_device() {
    require_root!();
    let lab = Lab::new().expect("lab");
    let operator = Operator::new(&lab).expect("operator");
    let launcher = [
        "env".into(),
        format!("TOKIO_WORKER_THREADS={WORKERS}").into(),
    ];
    let mut hub = lab
        .start_launched(Node::Hub, &hub_config(&lab, &operator, 1, 1), &launcher)
        .expect("hub");
    let hospital = lab
        .start(Node::Hospital, &lab.full(Node::Hospital))
        .expect("hospital");
    wait_hospital_answers(&lab, &hub, "one facility");
    assert_eq!(lanes(&hub), (1, 1), "one facility, one lane");
    let device = tun_index(&lab);

    // Two facilities: the hub's device, multi-queue from the start, is kept and takes a
    // second queue.
    push_and_confirm(&lab, &operator, &hub_config(&lab, &operator, 2, 2), 2);
    assert_eq!(lanes(&hub), (2, 2));
    assert_eq!(tun_index(&lab), device, "the device was kept");
    wait_hospital_answers(&lab, &hub, "two facilities");

    // Four facilities: two more queues.
    push_and_confirm(&lab, &operator, &hub_config(&lab, &operator, 3, 4), 3);
    assert_eq!(lanes(&hub), (4, 4));
    assert_eq!(tun_index(&lab), device, "the device was kept");
    wait_hospital_answers(&lab, &hub, "four facilities");

    // Three: it gives one back, still the same device.
    push_and_confirm(&lab, &operator, &hub_config(&lab, &operator, 4, 3), 4);
    assert_eq!(lanes(&hub), (3, 3));
    assert_eq!(tun_index(&lab), device, "the device was kept");
    wait_hospital_answers(&lab, &hub, "three facilities");

    drop(hospital);
    hub.terminate().expect("the hub stops");
}
