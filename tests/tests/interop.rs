//! renkei against independent WireGuard implementations, both directions of initiation:
//! `wireguard-go` (a different code base) and `boringtun-cli` (boringtun's own device code).
//! Also NET-8 against a peer that forges packets: only a foreign implementation can send them.

use std::time::Duration;

use renkei_lab::foreign::{ForeignPeerSpec, ForeignWireguard, Implementation};
use renkei_lab::traffic::{echo_round_trip, pattern, spawn_echo};
use renkei_lab::{require_root, wait_until, Lab, Node};

const ECHO_PORT: u16 = 7000;

fn tcp(lab: &Lab, from: Node, to: Node, size: usize) -> anyhow::Result<()> {
    let addr = format!("{}:{ECHO_PORT}", to.tunnel_address());
    let server = spawn_echo(lab.ns(to).tcp_listener(&addr)?, 1);
    let stream = lab.ns(from).tcp_connect(&addr, Duration::from_secs(15))?;
    echo_round_trip(stream, &pattern(size, 3))?;
    server
        .join()
        .map_err(|_| anyhow::anyhow!("echo panicked"))?;
    Ok(())
}

fn foreign_interface(lab: &Lab) -> String {
    format!("rk{}x", lab.id)
}

/// renkei (hospital, always-on) initiates to a foreign hub.
fn renkei_initiates(implementation: Implementation) {
    let lab = Lab::new().expect("lab");
    let _foreign = ForeignWireguard::start_as_hub(implementation, &lab, &foreign_interface(&lab))
        .expect("foreign hub");
    let hospital = lab
        .start(Node::Hospital, &lab.config(Node::Hospital))
        .expect("renkei hospital");
    wait_until(Duration::from_secs(10), "renkei's handshake", || {
        (hospital.peer("dc").ok()?["state"] == "up").then_some(())
    })
    .expect("up");
    tcp(&lab, Node::Hospital, Node::Hub, 1 << 20).expect("renkei -> foreign");
    tcp(&lab, Node::Hub, Node::Hospital, 1 << 20).expect("foreign -> renkei");
    let peer = hospital.peer("dc").expect("peer");
    assert!(
        peer["backend"]["wireguard"]["handshake_attempts"]
            .as_u64()
            .unwrap_or(0)
            >= 1
    );
}

/// A foreign facility initiates to the renkei hub.
fn foreign_initiates(implementation: Implementation) {
    let lab = Lab::new().expect("lab");
    let hub = lab
        .start(Node::Hub, &lab.config(Node::Hub))
        .expect("renkei hub");
    let _foreign =
        ForeignWireguard::start_as_hospital(implementation, &lab, &foreign_interface(&lab))
            .expect("foreign hospital");
    // The foreign side's first packet starts its handshake.
    tcp(&lab, Node::Hospital, Node::Hub, 1 << 20).expect("foreign -> renkei");
    tcp(&lab, Node::Hub, Node::Hospital, 1 << 20).expect("renkei -> foreign");
    let peer = hub.peer("hospital").expect("peer");
    assert_eq!(peer["state"], "up");
    assert_eq!(
        peer["backend"]["wireguard"]["handshake_attempts"], 0,
        "the hub must not have initiated"
    );
    assert!(
        peer["backend"]["wireguard"]["handshakes_completed"]
            .as_u64()
            .unwrap_or(0)
            >= 1
    );
    assert_eq!(
        peer["backend"]["wireguard"]["endpoint"]
            .as_str()
            .map(|e| e.starts_with("198.18.0.10:")),
        Some(true),
        "the hub learnt the facility's endpoint from its packets: {peer}"
    );
    // wg show on the renkei hub reports the real handshake time (boringtun-cli's own shows
    // "56 years ago").
    let iface = lab.interface(Node::Hub);
    let show = lab
        .ns(Node::Hub)
        .exec("wg", &["show", &iface])
        .expect("wg show");
    assert!(
        show.contains("latest handshake:") && !show.contains("years ago"),
        "{show}"
    );
    let dump = lab
        .ns(Node::Hub)
        .exec("wg", &["show", &iface, "latest-handshakes"])
        .expect("wg show latest-handshakes");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let hospital_line = dump
        .lines()
        .find(|l| l.starts_with(lab.public_key(Node::Hospital)))
        .expect("hospital in latest-handshakes");
    let when: u64 = hospital_line
        .split_whitespace()
        .nth(1)
        .and_then(|t| t.parse().ok())
        .expect("a time");
    assert!(now.abs_diff(when) <= 10, "handshake at {when}, now {now}");
}

#[test]
fn interop_renkei_initiates_to_wireguard_go() {
    require_root!();
    renkei_initiates(Implementation::WireguardGo);
}

#[test]
fn interop_wireguard_go_initiates_to_renkei() {
    require_root!();
    foreign_initiates(Implementation::WireguardGo);
}

#[test]
fn interop_renkei_initiates_to_boringtun_cli() {
    require_root!();
    renkei_initiates(Implementation::BoringtunCli);
}

#[test]
fn interop_boringtun_cli_initiates_to_renkei() {
    require_root!();
    foreign_initiates(Implementation::BoringtunCli);
}

#[test]
fn net8_forged_packets_from_the_hub_side_are_dropped_and_counted() {
    require_root!();
    let lab = Lab::new().expect("lab");
    let mut config = lab.config(Node::Clinic);
    config.tunnel.as_mut().expect("[tunnel]").listen_port = 51821;
    let clinic = lab.start(Node::Clinic, &config).expect("renkei clinic");
    lab.ns(Node::Clinic)
        .sysctl("net.ipv4.ip_forward", "1")
        .expect("forwarding on");
    // A hub impersonator that routes the clinic's LAN into the tunnel and forges sources.
    let endpoint = format!("{}:51821", Node::Clinic.wan_address());
    let forger = ForeignWireguard::start(
        Implementation::WireguardGo,
        lab.ns(Node::Hub),
        &foreign_interface(&lab),
        &lab.node_dir(Node::Hub).join("wg.key"),
        Some(51820),
        "198.19.0.1/24",
        &ForeignPeerSpec {
            public_key: lab.public_key(Node::Clinic),
            endpoint: Some(&endpoint),
            allowed_ips: "198.19.0.0/24,198.18.20.0/24",
            keepalive_secs: None,
        },
    )
    .expect("forger");
    lab.ns(Node::Hub)
        .ip(&["addr", "add", "198.19.0.99/32", "dev", &forger.interface])
        .expect("second address");

    let lan_listener = lab
        .lan_ns(Node::Clinic)
        .udp_socket("198.18.20.2:9999")
        .expect("LAN listener");
    lan_listener
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let box_listener = lab
        .ns(Node::Clinic)
        .udp_socket("198.19.0.20:9998")
        .expect("box listener");
    box_listener
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");

    let sender = lab
        .ns(Node::Hub)
        .udp_socket("198.19.0.1:0")
        .expect("sender");
    let spoofer = lab
        .ns(Node::Hub)
        .udp_socket("198.19.0.99:0")
        .expect("spoofer");
    let drops = |field: &str| {
        clinic
            .status()
            .ok()
            .and_then(|s| s["tunnel"]["drops"][field].as_u64())
            .unwrap_or(0)
    };
    // Repeat until the forger's handshake has completed and the drops are counted.
    wait_until(
        Duration::from_secs(20),
        "forged packets to be dropped",
        || {
            let _ = sender.send_to(b"into the clinic LAN", "198.18.20.2:9999");
            let _ = spoofer.send_to(b"spoofed source", "198.19.0.20:9998");
            (drops("foreign_destination") >= 3 && drops("source_not_allowed") >= 3).then_some(())
        },
    )
    .expect("forged packets counted");
    let mut buf = [0u8; 64];
    assert!(
        lan_listener.recv_from(&mut buf).is_err(),
        "a packet from the tunnel reached the clinic LAN"
    );
    assert!(
        box_listener.recv_from(&mut buf).is_err(),
        "a packet with a spoofed source was delivered"
    );
    // A genuine packet from the hub's own address is delivered.
    wait_until(Duration::from_secs(5), "a genuine packet", || {
        let _ = sender.send_to(b"genuine", "198.19.0.20:9998");
        box_listener.recv_from(&mut buf).ok()
    })
    .expect("genuine packet delivered");
}
