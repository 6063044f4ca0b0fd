//! The WireGuard data plane in the namespace lab: handshakes, both tunnel policies, recovery,
//! the not-a-router rule (NET-8, on a closed network too) and hostile input. Every daemon here
//! is the real `renkei` binary on a real TUN device; every peer is a real process.

use std::io::{Read, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

use renkei::proxy::journal_upload::READY_FILE as JOURNAL_UPLOAD_READY;
use renkei_lab::boxconfig::{peer_mut, service, socket, Peer};
use renkei_lab::chain::{records, wait_for_service};
use renkei_lab::faketime::FakeClock;
use renkei_lab::journal_remote::{
    access_records, collecting_hub, upload, uploading_to, usec_from_now, write_journal,
    JOURNAL_PORT, JOURNAL_UPLOAD,
};
use renkei_lab::lab::{
    LabCarrier, DC_PROBE_PORT, HUB_PORT, HUB_RELAY_ADDRESS, LAN_SERVICE_ADDRESS, SERVICE_PORT,
};
use renkei_lab::ntp::{self, NtpServer};
use renkei_lab::operator::Operator;
use renkei_lab::traffic::{echo_round_trip, pattern, spawn_echo};
use renkei_lab::web::{scrape_metrics, status, METRICS_PORT};
use renkei_lab::{require_root, wait_until, Lab, Node};

const ECHO_PORT: u16 = 7000;
/// How long the hospital's always-on link may take to come up after start (an IPsec SA takes
/// an IKE exchange more than a WireGuard handshake).
const LINK_UP_TIMEOUT: Duration = Duration::from_secs(15);

fn peer_state(daemon: &renkei_lab::Daemon, peer: &str) -> String {
    daemon
        .peer(peer)
        .map(|p| p["state"].as_str().unwrap_or("").to_string())
        .unwrap_or_default()
}

fn drops(daemon: &renkei_lab::Daemon, field: &str) -> u64 {
    daemon
        .status()
        .ok()
        .and_then(|s| s["tunnel"]["drops"][field].as_u64())
        .unwrap_or(0)
}

/// A count of WireGuard's own drops (its backend part of the status document).
fn wireguard_drops(daemon: &renkei_lab::Daemon, field: &str) -> u64 {
    daemon
        .status()
        .ok()
        .and_then(|s| s["tunnel"]["backend"]["wireguard"]["drops"][field].as_u64())
        .unwrap_or(0)
}

/// Starts the hub, then the always-on hospital, and waits for their link to be up (a
/// session, or on a closed network the first answered probe).
fn hub_and_connected_hospital(lab: &Lab) -> (renkei_lab::Daemon, renkei_lab::Daemon) {
    let hub = lab.start(Node::Hub, &lab.config(Node::Hub)).expect("hub");
    let hospital = lab
        .start(Node::Hospital, &lab.config(Node::Hospital))
        .expect("hospital");
    wait_until(LINK_UP_TIMEOUT, "the link to be up", || {
        (peer_state(&hospital, lab.dc_link_name()) == "up").then_some(())
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}\n{}\n{}",
            hospital.log_text(),
            lab.charon_log(Node::Hospital)
        )
    });
    (hub, hospital)
}

/// The clinic's config with its on-demand tunnel idling out after `secs` without traffic.
fn clinic_idling_after(lab: &Lab, secs: u64) -> renkei::config::Config {
    idling_after(lab.config(Node::Clinic), secs)
}

/// `config` with its link's idle timeout set to `secs` (`[tunnel]`'s policy, or `[ipsec]`'s).
fn idling_after(mut config: renkei::config::Config, secs: u64) -> renkei::config::Config {
    match (config.tunnel.as_mut(), config.ipsec.as_mut()) {
        (Some(tunnel), _) => tunnel.policy.idle_timeout_secs = secs,
        (None, Some(ipsec)) => ipsec.idle_timeout_secs = secs,
        (None, None) => panic!("neither [tunnel] nor [ipsec]"),
    }
    config
}

/// The hub's and the clinic's configs for a test of the clinic's on-demand link with its
/// idle timeout at `idle_secs`. On WireGuard the hub's plain lab config and the clinic's full
/// one: the clinic box's own TCP to the hub's tunnel address is use ([`use_the_link`]). On IPsec, whose SA only renkei's
/// connections bring up and hold, the lab's full configs with the hub's "portal" in front of
/// an echo server on the hub's relay address (its own "hospital-documents" service, which
/// would listen there, is left out).
fn on_demand_pair(lab: &Lab, idle_secs: u64) -> (renkei::config::Config, renkei::config::Config) {
    match lab.carrier {
        LabCarrier::Ipsec => {
            let mut hub = lab.full(Node::Hub);
            hub.services.retain(|s| s.name != "hospital-documents");
            (hub, idling_after(lab.full(Node::Clinic), idle_secs))
        }
        _ => (
            lab.config(Node::Hub),
            idling_after(lab.full(Node::Clinic), idle_secs),
        ),
    }
}

/// One use of the clinic's on-demand link, bringing it up if needed: on WireGuard TCP from
/// the clinic box to the hub's tunnel address; on IPsec a round trip from the clinic's LAN
/// through its "documents" service and the hub's "portal" to an echo server at the hub's
/// relay address (configs of [`on_demand_pair`]).
fn use_the_link(lab: &Lab) -> anyhow::Result<()> {
    match lab.carrier {
        LabCarrier::Ipsec => {
            let listener = lab.ns(Node::Hub).tcp_listener(HUB_RELAY_ADDRESS)?;
            let server = spawn_echo(listener, 1);
            let stream = lab.lan_ns(Node::Clinic).tcp_connect(
                &format!("{LAN_SERVICE_ADDRESS}:{SERVICE_PORT}"),
                Duration::from_secs(15),
            )?;
            echo_round_trip(stream, &pattern(64 * 1024, 7))?;
            server
                .join()
                .map_err(|_| anyhow::anyhow!("echo server panicked"))?;
            Ok(())
        }
        _ => tcp_through_tunnel(lab, Node::Clinic, Node::Hub, 64 * 1024),
    }
}

/// TCP from `from` to an echo server in `to`'s namespace on `to`'s tunnel address.
fn tcp_through_tunnel(lab: &Lab, from: Node, to: Node, size: usize) -> anyhow::Result<()> {
    let addr = format!("{}:{ECHO_PORT}", to.tunnel_address());
    let listener = lab.ns(to).tcp_listener(&addr)?;
    let server = spawn_echo(listener, 1);
    let stream = lab.ns(from).tcp_connect(&addr, Duration::from_secs(15))?;
    echo_round_trip(stream, &pattern(size, size as u64))?;
    server
        .join()
        .map_err(|_| anyhow::anyhow!("echo server panicked"))?;
    Ok(())
}

/// The benchmarks measure the box's TCP: the lab gives its namespaces a congestion control of
/// its choosing, whatever the host's default (bbr on the CI machine, cubic on the box).
#[test]
fn the_lab_sets_its_namespaces_tcp_congestion_control() {
    require_root!();
    let lab = Lab::new().expect("lab");
    for algorithm in ["reno", renkei_lab::lab::BOX_TCP_CONGESTION_CONTROL] {
        lab.set_tcp_congestion_control(algorithm)
            .expect("congestion control");
        for node in Node::ALL {
            let got = lab
                .ns(node)
                .exec("sysctl", &["-n", "net.ipv4.tcp_congestion_control"])
                .expect("sysctl");
            assert_eq!(got.trim(), algorithm, "{}", node.short());
        }
    }
}

#[test]
fn net6_hub_and_disclosing_handshake_within_2s_and_carry_tcp_both_ways() {
    require_root!();
    let lab = Lab::new().expect("lab");
    let hub = lab.start(Node::Hub, &lab.config(Node::Hub)).expect("hub");
    let started = Instant::now();
    let hospital = lab
        .start(Node::Hospital, &lab.config(Node::Hospital))
        .expect("hospital");
    wait_until(Duration::from_secs(2), "the hospital's handshake", || {
        (peer_state(&hospital, "dc") == "up").then_some(())
    })
    .unwrap_or_else(|e| panic!("{e} (after {:?})", started.elapsed()));
    assert!(started.elapsed() <= Duration::from_secs(2));

    tcp_through_tunnel(&lab, Node::Hospital, Node::Hub, 1 << 20).expect("hospital -> hub");
    tcp_through_tunnel(&lab, Node::Hub, Node::Hospital, 1 << 20).expect("hub -> hospital");

    // The operators' own tool reads the daemon's state over the userspace API.
    let iface = lab.interface(Node::Hospital);
    let show = lab
        .ns(Node::Hospital)
        .exec("wg", &["show", &iface])
        .expect("wg show");
    assert!(show.contains(&format!("interface: {iface}")), "{show}");
    assert!(
        show.contains(&format!("peer: {}", lab.public_key(Node::Hub))),
        "{show}"
    );
    assert!(show.contains("endpoint: 198.18.0.1:51820"), "{show}");
    assert!(show.contains("latest handshake:"), "{show}");
    let dump = lab
        .ns(Node::Hospital)
        .exec("wg", &["show", &iface, "dump"])
        .expect("wg show dump");
    let peer_line = dump.lines().nth(1).expect("a peer line");
    let fields: Vec<&str> = peer_line.split('\t').collect();
    let handshake: u64 = fields[4].parse().expect("handshake time");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    assert!(
        now.abs_diff(handshake) <= 10,
        "wg show reports a handshake at {handshake}, now is {now}"
    );
    let rx: u64 = fields[5].parse().expect("rx");
    let tx: u64 = fields[6].parse().expect("tx");
    assert!(rx > 2 << 20 && tx > 2 << 20, "transfer rx {rx} tx {tx}");

    // `renkei status` prints the same state the daemon holds.
    let bin = renkei_lab::daemon::renkei_bin().expect("renkei binary");
    let summary = lab
        .ns(Node::Hospital)
        .exec(
            &bin.to_string_lossy(),
            &["status", "--config", &hospital.config.to_string_lossy()],
        )
        .expect("renkei status");
    assert!(
        summary.contains("facility: lab hospital (disclosing)"),
        "{summary}"
    );
    assert!(summary.contains("tunnel: up always_on"), "{summary}");
    assert!(summary.contains("peer: dc "), "{summary}");
    assert!(summary.contains("endpoint: 198.18.0.1:51820"), "{summary}");
    let json = lab
        .ns(Node::Hospital)
        .exec(
            &bin.to_string_lossy(),
            &[
                "status",
                "--json",
                "--config",
                &hospital.config.to_string_lossy(),
            ],
        )
        .expect("renkei status --json");
    let document: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(document["tunnel"]["peers"][0]["state"], "up");
    assert!(
        document["tunnel"]["peers"][0]["rx_bytes"]
            .as_u64()
            .unwrap_or(0)
            > 2 << 20
    );
    drop(hub);
}

/// Packet counters in the clinic namespace: all UDP leaving the WAN link, and WireGuard
/// handshake initiations (message type 1) among them.
struct WanCounters<'a> {
    ns: &'a renkei_lab::Namespace,
}

impl<'a> WanCounters<'a> {
    fn install(ns: &'a renkei_lab::Namespace) -> Self {
        let rules = "table inet rkcount {\n\
             chain out {\n\
               type filter hook output priority 0; policy accept;\n\
               oifname \"wan0\" udp dport 51820 @th,64,8 1 counter comment \"init\"\n\
               oifname \"wan0\" meta l4proto udp counter comment \"udp\"\n\
             }\n\
           }\n";
        let file = std::env::temp_dir().join(format!("rkcount-{}.nft", ns.name()));
        std::fs::File::create(&file)
            .and_then(|mut f| f.write_all(rules.as_bytes()))
            .expect("nft file");
        ns.exec("nft", &["-f", &file.to_string_lossy()])
            .expect("nft rules");
        let _ = std::fs::remove_file(file);
        WanCounters { ns }
    }

    fn read(&self, comment: &str) -> u64 {
        let listing = self
            .ns
            .exec("nft", &["list", "table", "inet", "rkcount"])
            .expect("nft list");
        listing
            .lines()
            .find(|l| l.contains(&format!("comment \"{comment}\"")))
            .and_then(|l| {
                let words: Vec<&str> = l.split_whitespace().collect();
                words
                    .iter()
                    .position(|w| *w == "packets")
                    .and_then(|i| words.get(i + 1))
                    .and_then(|n| n.parse().ok())
            })
            .expect("counter")
    }
}

#[test]
fn net7_on_demand_is_silent_when_idle_connects_on_first_use_and_drops_keys_when_idle() {
    require_root!();
    let lab = Lab::new().expect("lab");
    let _hub = lab.start(Node::Hub, &lab.config(Node::Hub)).expect("hub");
    let counters = WanCounters::install(lab.ns(Node::Clinic));
    let config = clinic_idling_after(&lab, 10);
    let clinic = lab.start(Node::Clinic, &config).expect("clinic");

    // A 10 s idle window: the measurement itself, not a wait for a condition.
    std::thread::sleep(Duration::from_secs(10));
    assert_eq!(counters.read("udp"), 0, "an idle on-demand box sent UDP");
    assert_eq!(peer_state(&clinic, "dc"), "idle");
    assert_eq!(
        clinic.peer("dc").expect("peer")["backend"]["wireguard"]["session_keys_present"],
        false
    );

    // The first connection brings the tunnel up with exactly one handshake.
    tcp_through_tunnel(&lab, Node::Clinic, Node::Hub, 64 * 1024).expect("first connection");
    assert_eq!(counters.read("init"), 1, "handshake initiations");
    let peer = clinic.peer("dc").expect("peer");
    assert_eq!(peer["state"], "up");
    assert_eq!(peer["backend"]["wireguard"]["handshake_attempts"], 1);

    // After the idle timeout the session and its keys are gone ...
    wait_until(Duration::from_secs(20), "the clinic to go idle", || {
        let p = clinic.peer("dc").ok()?;
        (p["state"] == "idle" && p["backend"]["wireguard"]["session_keys_present"] == false)
            .then_some(())
    })
    .expect("idle again");
    // ... and nothing follows: no keepalives, no handshakes.
    let after_idle = counters.read("udp");
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        counters.read("udp"),
        after_idle,
        "UDP sent after going idle"
    );
    assert!(clinic.log_text().contains("idle timeout: session dropped"));
}

#[test]
fn net6_always_on_survives_a_20s_wan_outage_and_a_hub_restart() {
    require_root!();
    let lab = Lab::new().expect("lab");
    let mut hub = lab.start(Node::Hub, &lab.config(Node::Hub)).expect("hub");
    let mut config = lab.config(Node::Hospital);
    peer_mut(&mut config, "dc").persistent_keepalive_secs = Some(5);
    let hospital = lab.start(Node::Hospital, &config).expect("hospital");
    wait_until(Duration::from_secs(5), "the first handshake", || {
        (peer_state(&hospital, "dc") == "up").then_some(())
    })
    .expect("up");

    // WAN link down for 20 s, then up: the tunnel carries traffic again within 10 s.
    lab.ns(Node::Hospital)
        .ip(&["link", "set", "wan0", "down"])
        .expect("link down");
    std::thread::sleep(Duration::from_secs(20));
    lab.ns(Node::Hospital)
        .ip(&["link", "set", "wan0", "up"])
        .expect("link up");
    let back = Instant::now();
    wait_until(Duration::from_secs(10), "traffic after the outage", || {
        tcp_through_tunnel(&lab, Node::Hospital, Node::Hub, 4096).ok()
    })
    .expect("tunnel back");
    assert!(back.elapsed() <= Duration::from_secs(10));

    // The hub crashes and comes back with no memory of the session: the hospital notices the
    // silence and reconnects by itself.
    let before = hospital.peer("dc").expect("peer")["backend"]["wireguard"]["handshakes_completed"]
        .as_u64()
        .unwrap_or(0);
    hub.kill();
    drop(hub);
    let _hub = lab
        .start_with(Node::Hub, &lab.node_dir(Node::Hub).join("renkei.toml"))
        .expect("hub restarted");
    wait_until(
        Duration::from_secs(45),
        "a new handshake with the restarted hub",
        || {
            let completed = hospital.peer("dc").ok()?["backend"]["wireguard"]
                ["handshakes_completed"]
                .as_u64()?;
            (completed > before).then_some(())
        },
    )
    .expect("reconnected");
    wait_until(
        Duration::from_secs(10),
        "traffic to the restarted hub",
        || tcp_through_tunnel(&lab, Node::Hospital, Node::Hub, 4096).ok(),
    )
    .expect("traffic after hub restart");
}

#[test]
fn net8_lan_packets_never_enter_the_tunnel() {
    require_root!();
    lan_packets_never_reach_the_data_centre(LabCarrier::WireGuard);
}

/// NET-8 on the other data path: TUN offloads off, one plain packet per read.
#[test]
fn net8_lan_packets_never_enter_the_tunnel_with_tun_offloads_off() {
    require_root!();
    let lab = Lab::new().expect("lab").with_tun_offloads(false);
    lan_packets_never_reach_the_data_centre_in(lab);
}

/// What the box's status says of its TUN offloads (`on (...)` or `off (why)`).
fn shown_offloads(daemon: &renkei_lab::Daemon) -> String {
    daemon
        .status()
        .ok()
        .and_then(|s| {
            s["tunnel"]["backend"]["wireguard"]["offloads"]
                .as_str()
                .map(str::to_string)
        })
        .unwrap_or_default()
}

/// One of the status's counts of super-packets through the TUN device.
fn offload_count(daemon: &renkei_lab::Daemon, field: &str) -> u64 {
    daemon
        .status()
        .ok()
        .and_then(|s| s["tunnel"]["backend"]["wireguard"]["offload_counts"][field].as_u64())
        .unwrap_or(0)
}

/// NET-1 on both data paths: a TCP transfer both ways, IPv4, large enough that with offloads
/// on the kernel hands the data plane super-segments and takes coalesced ones back; the status
/// says which path ran. The mixed case has the hub's kernel check every TCP checksum of the
/// packets the hospital split (a plain device takes no checksum on trust).
#[test]
fn net1_tcp_crosses_the_tunnel_both_ways_with_tun_offloads_on_and_off() {
    require_root!();
    for (hospital_on, hub_on) in [(true, true), (false, false), (true, false)] {
        let case = format!("hospital offloads {hospital_on}, hub offloads {hub_on}");
        let lab = Lab::new().expect("lab").with_tun_offloads(hospital_on);
        let mut hub_config = lab.config(Node::Hub);
        if let Some(tunnel) = hub_config.tunnel.as_mut() {
            tunnel.offloads = hub_on;
        }
        let hub = lab.start(Node::Hub, &hub_config).expect("hub");
        let hospital = lab
            .start(Node::Hospital, &lab.config(Node::Hospital))
            .expect("hospital");
        wait_until(LINK_UP_TIMEOUT, "the link to be up", || {
            (peer_state(&hospital, "dc") == "up").then_some(())
        })
        .unwrap_or_else(|e| panic!("{case}: {e}\n{}", hospital.log_text()));
        for (daemon, on) in [(&hub, hub_on), (&hospital, hospital_on)] {
            let shown = shown_offloads(daemon);
            let expected = if on {
                "on ("
            } else {
                "off (switched off in the config"
            };
            assert!(shown.starts_with(expected), "{case}: shown {shown:?}");
        }
        tcp_through_tunnel(&lab, Node::Hospital, Node::Hub, 16 << 20)
            .unwrap_or_else(|e| panic!("hospital -> hub, {case}: {e}"));
        tcp_through_tunnel(&lab, Node::Hub, Node::Hospital, 16 << 20)
            .unwrap_or_else(|e| panic!("hub -> hospital, {case}: {e}"));
        for (daemon, on) in [(&hub, hub_on), (&hospital, hospital_on)] {
            assert_eq!(drops(daemon, "malformed"), 0, "{case}");
            // With offloads on both directions moved super-packets; off, none at all.
            for count in ["super_segments_read", "super_packets_written"] {
                let moved = offload_count(daemon, count);
                assert_eq!(moved > 0, on, "{case}: {count} = {moved}");
            }
        }
    }
}

/// The fallback (NET-1 on the plain path): the hospital's kernel refuses `TUNSETOFFLOAD` (a
/// seccomp filter answers `EINVAL` to the daemon alone, as a kernel without the offloads
/// does). The daemon says so once in its log and in the status, with the kernel's answer, and
/// carries TCP both ways without a single super-packet. A kernel that refuses only UDP
/// segmentation (before 6.2) keeps the TCP offloads.
#[test]
fn net1_a_kernel_refusing_tun_offloads_gets_the_plain_path_said_once_and_tcp_still_crosses() {
    require_root!();
    let with_uso = u64::from(
        libc::TUN_F_CSUM
            | libc::TUN_F_TSO4
            | libc::TUN_F_TSO6
            | libc::TUN_F_USO4
            | libc::TUN_F_USO6,
    );
    let refusals = [
        (
            "every TUNSETOFFLOAD refused",
            None,
            "off (the kernel refused TUNSETOFFLOAD: ",
        ),
        ("USO refused", Some(with_uso), "on (csum, tso4, tso6)"),
    ];
    for (case, argument, expected) in refusals {
        let lab = Lab::new().expect("lab");
        let hub = lab.start(Node::Hub, &lab.config(Node::Hub)).expect("hub");
        let launcher = renkei_lab::seccomp::refusing_ioctl(libc::TUNSETOFFLOAD, argument);
        let hospital = lab
            .start_launched(Node::Hospital, &lab.config(Node::Hospital), &launcher)
            .expect("hospital under the filter");
        wait_until(LINK_UP_TIMEOUT, "the link to be up", || {
            (peer_state(&hospital, "dc") == "up").then_some(())
        })
        .unwrap_or_else(|e| panic!("{case}: {e}\n{}", hospital.log_text()));
        let shown = shown_offloads(&hospital);
        assert!(shown.starts_with(expected), "{case}: shown {shown:?}");
        tcp_through_tunnel(&lab, Node::Hospital, Node::Hub, 4 << 20)
            .unwrap_or_else(|e| panic!("hospital -> hub, {case}: {e}"));
        tcp_through_tunnel(&lab, Node::Hub, Node::Hospital, 4 << 20)
            .unwrap_or_else(|e| panic!("hub -> hospital, {case}: {e}"));
        let plain = argument.is_none();
        let said = hospital.log_text().matches("TUN offloads off").count();
        assert_eq!(said, usize::from(plain), "{case}: said {said} times");
        assert_eq!(drops(&hospital, "malformed"), 0, "{case}");
        let read = offload_count(&hospital, "super_segments_read");
        assert_eq!(read > 0, !plain, "{case}: super_segments_read = {read}");
        assert!(
            shown_offloads(&hub).starts_with("on ("),
            "{case}: the hub keeps its offloads"
        );
    }
}

#[test]
fn net8_net9_lan_packets_never_reach_the_data_centre_on_a_closed_network() {
    require_root!();
    lan_packets_never_reach_the_data_centre(LabCarrier::Closed);
}

#[test]
fn net9_net10_net8_lan_packets_never_reach_the_data_centre_over_ipsec() {
    require_root!();
    lan_packets_never_reach_the_data_centre(LabCarrier::Ipsec);
}

/// Where the data centre listens for what a LAN host sends (UDP and TCP, on its link address).
const DC_LISTENER_PORT: u16 = 9999;
/// How many datagrams a LAN host sends in one step.
const LAN_DATAGRAMS: u64 = 50;
/// How long a LAN host's TCP connection attempt may take to fail.
const LAN_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a datagram may still be on its way once the box has received it.
const IN_FLIGHT: Duration = Duration::from_millis(200);

/// What the data centre listens with: a UDP socket and a TCP listener on its link address.
struct DcListeners {
    udp: std::net::UdpSocket,
    tcp: std::net::TcpListener,
    /// The TCP destinations a LAN host tries: the listener, and on a closed network also the
    /// data centre's health endpoint.
    tcp_targets: Vec<String>,
}

impl DcListeners {
    fn start(lab: &Lab) -> DcListeners {
        let dc = lab.link_address(Node::Hub);
        let target = format!("{dc}:{DC_LISTENER_PORT}");
        let udp = lab.ns(Node::Hub).udp_socket(&target).expect("dc UDP");
        udp.set_read_timeout(Some(IN_FLIGHT)).expect("timeout");
        let tcp = lab.ns(Node::Hub).tcp_listener(&target).expect("dc TCP");
        tcp.set_nonblocking(true).expect("nonblocking");
        let mut tcp_targets = vec![target];
        if lab.carrier == LabCarrier::Closed {
            tcp_targets.push(format!("{dc}:{DC_PROBE_PORT}"));
        }
        DcListeners {
            udp,
            tcp,
            tcp_targets,
        }
    }

    /// Asserts that nothing from `step` reached the data centre: no datagram, no connection,
    /// no probe from the LAN host at the health endpoint.
    fn assert_nothing_arrived(&self, lab: &Lab, step: &str) {
        let mut buf = [0u8; 64];
        if let Ok((_, from)) = self.udp.recv_from(&mut buf) {
            panic!("{step}: a LAN datagram reached the data centre from {from}");
        }
        if let Ok((_, from)) = self.tcp.accept() {
            panic!("{step}: a LAN connection reached the data centre from {from}");
        }
        let lan_host = Node::Hospital
            .lan_host_address()
            .expect("the hospital's LAN host");
        let probes = lab.probe_peers();
        assert!(
            probes.iter().all(|p| p.ip().to_string() != lan_host),
            "{step}: the LAN host reached the data centre's health endpoint: {probes:?}"
        );
    }
}

/// Packets the box's kernel received on its LAN interface.
fn lan_rx_packets(lab: &Lab) -> u64 {
    link_packets(lab.ns(Node::Hospital), "lan0", "rx")
}

/// Packets the kernel of `ns` sent out of `device`.
fn tx_packets(ns: &renkei_lab::Namespace, device: &str) -> u64 {
    link_packets(ns, device, "tx")
}

/// `ip -s link`'s packet count of `device` in `direction` (`rx`, `tx`).
fn link_packets(ns: &renkei_lab::Namespace, device: &str, direction: &str) -> u64 {
    let json = ns
        .ip(&["-s", "-j", "link", "show", "dev", device])
        .expect("ip -s link");
    let links: serde_json::Value = serde_json::from_str(&json).expect("ip JSON");
    links[0]["stats64"][direction]["packets"]
        .as_u64()
        .unwrap_or_else(|| panic!("no {direction} packets in {json}"))
}

/// The host on the hospital LAN (its default route is the box) sends datagrams to the data
/// centre's link address and tries TCP to every target; each attempt must fail. Waits until
/// the box has received the datagrams.
fn lan_host_tries(lab: &Lab, listeners: &DcListeners, step: &str) {
    let before = lan_rx_packets(lab);
    let lan = lab.lan_ns(Node::Hospital);
    let client = lan.udp_socket("0.0.0.0:0").expect("LAN client socket");
    for _ in 0..LAN_DATAGRAMS {
        client
            .send_to(b"from the LAN", &listeners.tcp_targets[0])
            .expect("send from the LAN");
    }
    for target in &listeners.tcp_targets {
        if let Ok(stream) = lan.tcp_connect(target, LAN_CONNECT_TIMEOUT) {
            panic!("{step}: the LAN host connected to {target}: {stream:?}");
        }
    }
    wait_until(Duration::from_secs(5), "the box to receive them", || {
        (lan_rx_packets(lab) >= before + LAN_DATAGRAMS).then_some(())
    })
    .unwrap_or_else(|e| panic!("{step}: {e}"));
}

/// What one LAN datagram of [`lan_host_tries`] would be inside an SA: its 12 payload bytes and
/// the IPv4 and UDP headers.
const LAN_DATAGRAM_WIRE_BYTES: u64 = 12 + 20 + 8;

/// The bytes the concentrator has decrypted from the hospital's CHILD SA so far (its own
/// count, `swanctl --list-sas`).
fn concentrator_bytes_in(concentrator: &renkei_lab::strongswan::Charon) -> u64 {
    let sas = concentrator.list_sas().expect("swanctl --list-sas");
    let counts: Vec<u64> = sas
        .split("bytes-in=")
        .skip(1)
        .filter_map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect();
    assert!(!counts.is_empty(), "no CHILD SA on the concentrator: {sas}");
    counts.iter().sum()
}

/// The forwarding switch the closed carrier shows in the status (`tunnel.backend.closed`).
fn shown_ip_forward(daemon: &renkei_lab::Daemon) -> serde_json::Value {
    daemon.status().expect("status")["tunnel"]["backend"]["closed"]["ip_forward"].clone()
}

/// NET-8: a host on the hospital LAN with a route through the box reaches nothing in the data
/// centre, neither a listener on its link address nor (closed network) its health endpoint.
/// With the box's forwarding off the kernel drops it on every carrier. With forwarding forced
/// on, WireGuard's data plane still drops what enters the tunnel from a foreign source, and on
/// IPsec charon's libipsec does (the CHILD SA covers the box's own /32 only); on a closed
/// network the kernel would route it (renkei has no data plane there to refuse it), so the box
/// must show the operator that forwarding is on.
fn lan_packets_never_reach_the_data_centre(carrier: LabCarrier) {
    lan_packets_never_reach_the_data_centre_in(Lab::with_carrier(carrier).expect("lab"));
}

/// [`lan_packets_never_reach_the_data_centre`] in a lab made by the caller.
fn lan_packets_never_reach_the_data_centre_in(lab: Lab) {
    let carrier = lab.carrier;
    let (_hub, hospital) = hub_and_connected_hospital(&lab);
    let listeners = DcListeners::start(&lab);

    // Forwarding off, as the box must run: whatever the host's default was.
    let ns = lab.ns(Node::Hospital);
    ns.sysctl("net.ipv4.ip_forward", "0")
        .expect("forwarding off");
    if carrier == LabCarrier::Closed {
        assert_eq!(shown_ip_forward(&hospital), false);
    }
    let dropped_before = drops(&hospital, "foreign_source");
    lan_host_tries(&lab, &listeners, "forwarding off");
    listeners.assert_nothing_arrived(&lab, "forwarding off");
    assert_eq!(
        drops(&hospital, "foreign_source"),
        dropped_before,
        "with forwarding off no LAN packet reaches the box's data plane"
    );

    // Forwarding forced on.
    ns.sysctl("net.ipv4.ip_forward", "1")
        .expect("forwarding on");
    match carrier {
        LabCarrier::WireGuard => {
            let dropped_before = drops(&hospital, "foreign_source");
            lan_host_tries(&lab, &listeners, "forwarding on");
            wait_until(Duration::from_secs(5), "the drops to be counted", || {
                (drops(&hospital, "foreign_source") >= dropped_before + LAN_DATAGRAMS).then_some(())
            })
            .expect("LAN packets counted as dropped");
            listeners.assert_nothing_arrived(&lab, "forwarding on");
        }
        // The kernel now routes LAN packets into charon's ipsec0, but the CHILD SA's only
        // local traffic selector is the box's own /32: libipsec finds no policy for a LAN
        // source and drops them. The concentrator, the independent peer, decrypts nothing
        // more than before.
        LabCarrier::Ipsec => {
            let concentrator = lab.concentrator().expect("the IPsec lab's concentrator");
            let decrypted_before = concentrator_bytes_in(concentrator);
            let into_libipsec_before = tx_packets(ns, "ipsec0");
            lan_host_tries(&lab, &listeners, "forwarding on");
            listeners.assert_nothing_arrived(&lab, "forwarding on");
            // The kernel did forward them into charon's TUN: it is libipsec that dropped them.
            let into_libipsec = tx_packets(ns, "ipsec0") - into_libipsec_before;
            assert!(
                into_libipsec >= LAN_DATAGRAMS,
                "only {into_libipsec} packets were forwarded into ipsec0"
            );
            let decrypted = concentrator_bytes_in(concentrator) - decrypted_before;
            assert!(
                decrypted < LAN_DATAGRAMS * LAN_DATAGRAM_WIRE_BYTES,
                "the concentrator decrypted {decrypted} bytes while the LAN host sent: {}",
                concentrator.list_sas().unwrap_or_default()
            );
        }
        // The kernel now routes LAN packets onto the closed network (the lab's data centre
        // has no route back to the LAN, a real network might): renkei cannot refuse them, it
        // shows the misconfiguration so the operator turns forwarding off.
        LabCarrier::Closed => assert_eq!(
            shown_ip_forward(&hospital),
            true,
            "the status must show that the box forwards"
        ),
    }

    // The box's own connections still reach the data centre.
    let _own = ns
        .tcp_connect(&listeners.tcp_targets[0], Duration::from_secs(15))
        .expect("the box connects to the data centre");
    wait_until(Duration::from_secs(5), "the box's own connection", || {
        listeners.tcp.accept().ok()
    })
    .expect("the data centre accepts the box's own connection");
}

#[test]
fn int1_random_and_truncated_datagrams_do_not_disturb_the_hub() {
    require_root!();
    let lab = Lab::new().expect("lab");
    let (hub, _hospital) = hub_and_connected_hospital(&lab);

    // Another box on the WAN sprays the hub's port with junk: random bytes of random length,
    // and truncated or garbled WireGuard messages of every type.
    let attacker = lab
        .ns(Node::Clinic)
        .udp_socket("0.0.0.0:0")
        .expect("socket");
    let hub_port = format!("{}:51820", Node::Hub.wan_address());
    let junk = pattern(1 << 20, 7);
    let mut offset = 0usize;
    let mut sent = 0u64;
    for i in 0..5000usize {
        let len = (junk[i % junk.len()] as usize * 7 + i) % 1500;
        let end = (offset + len).min(junk.len());
        let mut datagram = junk[offset..end].to_vec();
        offset = (offset + 997) % (junk.len() - 1600);
        if let Some(first) = datagram.first_mut() {
            // Every second datagram claims to be a WireGuard message type 1-4.
            if i % 2 == 0 {
                *first = (i % 4) as u8 + 1;
                if datagram.len() > 4 {
                    datagram[1..4].fill(0);
                }
            }
        }
        if i % 5 == 0 {
            datagram.truncate(i % 150);
        }
        if attacker.send_to(&datagram, &hub_port).is_ok() {
            sent += 1;
        }
    }
    assert!(sent > 4000);
    wait_until(Duration::from_secs(10), "the junk to be counted", || {
        (wireguard_drops(&hub, "invalid_datagrams") >= sent / 2).then_some(())
    })
    .expect("junk counted as invalid");
    assert!(hub.status().is_ok(), "the hub stopped answering");
    assert_eq!(peer_state(&hub, "hospital"), "up");
    tcp_through_tunnel(&lab, Node::Hospital, Node::Hub, 1 << 20).expect("real peer still works");
}

#[test]
fn net7_a_check_in_brings_an_idle_on_demand_tunnel_up_and_lets_it_idle_again() {
    require_root!();
    let lab = Lab::new().expect("lab");
    let _hub = lab.start(Node::Hub, &lab.config(Node::Hub)).expect("hub");
    let mut config = lab.config(Node::Clinic);
    config
        .tunnel
        .as_mut()
        .expect("[tunnel]")
        .policy
        .checkin_interval_secs = 60;
    config
        .tunnel
        .as_mut()
        .expect("[tunnel]")
        .policy
        .checkin_window_secs = 10;
    config
        .tunnel
        .as_mut()
        .expect("[tunnel]")
        .policy
        .idle_timeout_secs = 10;
    let started = Instant::now();
    let clinic = lab.start(Node::Clinic, &config).expect("clinic");
    assert_eq!(
        peer_state(&clinic, "dc"),
        "idle",
        "nothing wants the tunnel yet"
    );

    // No LAN demand at all: the check-in alone brings the tunnel up after the interval.
    wait_until(Duration::from_secs(80), "the check-in", || {
        (peer_state(&clinic, "dc") == "up").then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", clinic.log_text()));
    let up_at = started.elapsed();
    assert!(
        up_at >= Duration::from_secs(55),
        "checked in after {up_at:?}, interval is 60 s"
    );
    assert!(
        clinic.log_text().contains("check-in"),
        "{}",
        clinic.log_text()
    );

    // Held for the window, then idle again after the idle timeout; keys dropped.
    wait_until(
        Duration::from_secs(40),
        "the tunnel to idle after the check-in",
        || (peer_state(&clinic, "dc") == "idle").then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", clinic.log_text()));
    let idle_after = started.elapsed() - up_at;
    assert!(
        idle_after >= Duration::from_secs(15),
        "idle {idle_after:?} after the check-in: window 10 s + idle timeout 10 s"
    );
    let peer = clinic.peer("dc").expect("peer");
    assert_eq!(
        peer["backend"]["wireguard"]["session_keys_present"], false,
        "{peer}"
    );
}

/// The clinic's wall clock as its status says, minus the host's, in seconds.
fn clock_offset(daemon: &renkei_lab::Daemon) -> i64 {
    let host = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("host clock after 1970")
        .as_secs() as i64;
    daemon
        .status()
        .ok()
        .and_then(|s| s["time_unix"].as_i64())
        .map_or(i64::MIN, |box_time| box_time - host)
}

/// Waits until the daemon's wall clock is `days` ahead of the host's (within a minute).
fn wait_clock(daemon: &renkei_lab::Daemon, days: i64) {
    wait_until(Duration::from_secs(5), "the daemon's clock to step", || {
        ((clock_offset(daemon) - days * 86_400).abs() < 60).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: offset {} s", clock_offset(daemon)));
}

#[test]
fn net7_int2_an_on_demand_idle_countdown_ignores_wall_clock_steps() {
    require_root!();
    let lab = Lab::new().expect("lab");
    let _hub = lab.start(Node::Hub, &lab.config(Node::Hub)).expect("hub");
    let config = clinic_idling_after(&lab, 10);
    // The clinic's own wall clock, stepped without the host's (libfaketime in that process).
    let clock = FakeClock::new(&lab.dir).expect("libfaketime");
    let clinic = lab
        .start_launched(Node::Clinic, &config, &clock.launcher())
        .expect("clinic");
    wait_clock(&clinic, 0);

    tcp_through_tunnel(&lab, Node::Clinic, Node::Hub, 64 * 1024).expect("first connection");
    let last_traffic = Instant::now();
    assert_eq!(peer_state(&clinic, "dc"), "up");

    // Three days ahead, then two back, inside the 10 s countdown: the tunnel stays up
    // meanwhile (a wall-clock countdown would have closed it at the first step).
    clock.set("+3d").expect("step");
    wait_clock(&clinic, 3);
    assert_eq!(peer_state(&clinic, "dc"), "up", "closed by a step forward");
    clock.set("+1d").expect("step");
    wait_clock(&clinic, 1);
    while last_traffic.elapsed() < Duration::from_secs(7) {
        assert_eq!(
            peer_state(&clinic, "dc"),
            "up",
            "closed {:?} after the last traffic, idle timeout 10 s",
            last_traffic.elapsed()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // ... and it closes when the 10 s have passed on the monotonic clock: a step back holds
    // nothing off.
    wait_until(Duration::from_secs(15), "the clinic to go idle", || {
        let p = clinic.peer("dc").ok()?;
        (p["state"] == "idle" && p["backend"]["wireguard"]["session_keys_present"] == false)
            .then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", clinic.log_text()));
    let idle_after = last_traffic.elapsed();
    assert!(
        idle_after >= Duration::from_secs(9) && idle_after <= Duration::from_secs(20),
        "idle {idle_after:?} after the last traffic, idle timeout 10 s"
    );

    // Demand brings it up again on the stepped clock (a day ahead of the first handshake).
    tcp_through_tunnel(&lab, Node::Clinic, Node::Hub, 64 * 1024).expect("after the steps");
    assert_eq!(peer_state(&clinic, "dc"), "up");
}

#[test]
fn net7_int2_log4_time_sync_rides_an_on_demand_link_that_is_up_and_never_brings_it_up_or_holds_it()
{
    require_root!();
    time_sync_on_demand(Lab::new().expect("lab"));
}

/// The same on the other data path: TUN offloads off, one plain packet per read.
#[test]
fn net7_int2_log4_time_sync_never_brings_an_on_demand_link_up_with_tun_offloads_off() {
    require_root!();
    time_sync_on_demand(Lab::new().expect("lab").with_tun_offloads(false));
}

/// On IPsec: the on-demand SA's idle check is renkei's own use (its connections), not charon's
/// ESP counters, so time sync rides on it as on WireGuard's link.
#[test]
fn net7_net9_int2_log4_time_sync_rides_an_on_demand_ipsec_sa_that_is_up_and_never_brings_it_up_or_holds_it(
) {
    require_root!();
    time_sync_on_demand(Lab::with_carrier(LabCarrier::Ipsec).expect("lab"));
}

/// The idle countdown of the clinic's on-demand link (timeout 10 s) after its last use at
/// `last_use`, with the box's background traffic `ride` (true when it got through) run again
/// and again all along: the link still goes idle within 9-20 s. Returns how often `ride` got
/// through.
fn idles_out_under(
    clinic: &renkei_lab::Daemon,
    link: &str,
    last_use: Instant,
    logs: impl Fn() -> String,
    mut ride: impl FnMut() -> bool,
) -> usize {
    let mut through = 0;
    while peer_state(clinic, link) == "up" {
        assert!(
            last_use.elapsed() < Duration::from_secs(20),
            "still up {:?} after the last connection, idle timeout 10 s, {through} times through\n{}",
            last_use.elapsed(),
            logs()
        );
        if ride() {
            through += 1;
        }
    }
    let idle_after = last_use.elapsed();
    assert!(
        idle_after >= Duration::from_secs(9),
        "idle {idle_after:?} after the last connection, idle timeout 10 s"
    );
    through
}

/// NTP from an on-demand clinic to a real server (chronyd) at the hub's link address: not
/// answered and nothing sent while idle, answered while up, and no help holding the link.
fn time_sync_on_demand(lab: Lab) {
    let (hub_config, mut config) = on_demand_pair(&lab, 10);
    let _hub = lab.start(Node::Hub, &hub_config).expect("hub");
    let server = lab.link_address(Node::Hub);
    let _ntp = NtpServer::start(lab.ns(Node::Hub), server, &lab.dir).expect("NTP server");
    let counters = WanCounters::install(lab.ns(Node::Clinic));
    config.time = Some(renkei::config::TimeConfig {
        servers: vec![server.parse().expect("address")],
        poll_min_secs: 16,
        poll_max_secs: 64,
    });
    let clinic = lab.start(Node::Clinic, &config).expect("clinic");
    let link = lab.dc_link_name();
    let ask = || {
        ntp::query(
            lab.ns(Node::Clinic),
            server,
            &lab.dir,
            Duration::from_secs(3),
        )
    };

    // Idle: the box's time query goes nowhere and brings nothing up.
    let unanswered = ask();
    assert!(unanswered.is_err(), "answered while idle: {unanswered:?}");
    assert_eq!(peer_state(&clinic, link), "idle");
    assert_eq!(
        counters.read("udp"),
        0,
        "the time query sent UDP on the WAN"
    );

    // Up for a connection: the query is answered through the tunnel.
    use_the_link(&lab).unwrap_or_else(|e| panic!("{e:#}\n{}", clinic.log_text()));
    let last_traffic = Instant::now();
    let answered = ask().unwrap_or_else(|e| panic!("{e}\n{}", clinic.log_text()));
    assert!(answered.contains("System clock wrong by"), "{answered}");

    // Queries all along the idle countdown do not hold the link open.
    idles_out_under(
        &clinic,
        link,
        last_traffic,
        || clinic.log_text(),
        || ask().is_ok(),
    );
    let sent = counters.read("udp");
    let late = ask();
    assert!(late.is_err(), "answered after idling: {late:?}");
    assert_eq!(counters.read("udp"), sent, "a query after idling sent UDP");
    assert_eq!(peer_state(&clinic, link), "idle");
}

/// NET-7, NET-9: on IPsec renkei judges the on-demand SA's idleness from its own connections,
/// so a connection that came in through the SA (the hub's to an inbound service of the box)
/// holds it as an outbound one does: silent for twice the idle timeout, the SA stays up and
/// the connection still carries bytes; once it closes, the SA idles out after the timeout.
/// The clinic's box is made a disclosing facility on demand here (a viewing one offers no
/// inbound services; the operator's management API, the other way in, answers one request per
/// connection within its 10 s header timeout and takes the same hold).
#[test]
fn net7_net9_a_connection_into_an_on_demand_ipsec_box_holds_its_sa_while_it_lives() {
    require_root!();
    const IDLE_SECS: u64 = 10;
    const PUSH_PORT: u16 = 9443;
    const HUB_PUSH_LISTEN: &str = "127.0.0.1:18444";
    let lab = Lab::with_carrier(LabCarrier::Ipsec).expect("lab");
    let (mut hub_config, mut config) = on_demand_pair(&lab, IDLE_SECS);
    config.facility.role = renkei::config::Role::Disclosing;
    assert_eq!(config.policy_mode(), renkei::config::PolicyMode::OnDemand);
    let clinic_link = lab.link_address(Node::Clinic);
    let clinic_host = Node::Clinic
        .lan_host_address()
        .expect("the clinic's LAN host");
    hub_config.services.push(service(
        "clinic-push",
        renkei::config::Direction::Outbound,
        socket(HUB_PUSH_LISTEN),
        &format!("{clinic_link}:{PUSH_PORT}"),
        Peer::ServerName(Node::Clinic.tls_name()),
    ));
    config.services.push(service(
        "push",
        renkei::config::Direction::Inbound,
        socket(&format!("{clinic_link}:{PUSH_PORT}")),
        &format!("{clinic_host}:{ECHO_PORT}"),
        Peer::Allowed(Node::Hub.tls_name()),
    ));
    let hub = lab.start(Node::Hub, &hub_config).expect("hub");
    let clinic = lab.start(Node::Clinic, &config).expect("clinic");
    wait_for_service(&clinic, "push");
    let link = lab.dc_link_name();
    let logs = || format!("clinic:\n{}\nhub:\n{}", clinic.log_text(), hub.log_text());
    // An echo server on the clinic's LAN that waits longer than the silence below.
    let listener = lab
        .lan_ns(Node::Clinic)
        .tcp_listener(&format!("{clinic_host}:{ECHO_PORT}"))
        .expect("echo listener");
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut stream, _) = listener.accept()?;
        stream.set_read_timeout(Some(Duration::from_secs(120)))?;
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf)? {
                0 => return stream.shutdown(std::net::Shutdown::Write),
                n => stream.write_all(&buf[..n])?,
            }
        }
    });

    // The clinic's SA up for its own use; the hub's connection comes in through it.
    use_the_link(&lab).unwrap_or_else(|e| panic!("{e:#}\n{}", logs()));
    let mut pushed = lab
        .ns(Node::Hub)
        .tcp_connect(HUB_PUSH_LISTEN, Duration::from_secs(15))
        .expect("the hub's outbound service");
    pushed
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    let round_trip = |stream: &mut std::net::TcpStream, bytes: &[u8]| {
        stream.write_all(bytes)?;
        let mut back = vec![0u8; bytes.len()];
        stream.read_exact(&mut back)?;
        anyhow::ensure!(back == bytes, "the echo differs");
        Ok::<_, anyhow::Error>(())
    };
    round_trip(&mut pushed, b"first").unwrap_or_else(|e| panic!("{e:#}\n{}", logs()));

    // Silent for twice the idle timeout: the SA stays up under the connection.
    let silent_since = Instant::now();
    while silent_since.elapsed() < Duration::from_secs(IDLE_SECS * 2) {
        assert_eq!(
            peer_state(&clinic, link),
            "up",
            "the SA went {:?} into the connection's silence\n{}",
            silent_since.elapsed(),
            logs()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    round_trip(&mut pushed, b"second").unwrap_or_else(|e| panic!("{e:#}\n{}", logs()));

    // Closed: the SA idles out a whole timeout later.
    pushed
        .shutdown(std::net::Shutdown::Write)
        .expect("shutdown");
    let mut rest = Vec::new();
    let _ = pushed.read_to_end(&mut rest);
    drop(pushed);
    let closed = Instant::now();
    wait_until(
        Duration::from_secs(IDLE_SECS * 2 + 5),
        "the SA to idle out",
        || (peer_state(&clinic, link) == "idle").then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", logs()));
    let idle_after = closed.elapsed();
    assert!(
        idle_after + Duration::from_secs(1) >= Duration::from_secs(IDLE_SECS),
        "idle {idle_after:?} after the connection closed, idle timeout {IDLE_SECS} s"
    );
    echo.join()
        .expect("echo thread")
        .expect("the echo server's connection");
}

/// NET-7, OPS-4: the operator's Prometheus scrapes an on-demand box's metrics listener while
/// its link is up for a check-in or a connection; the scrapes ride on the link and never hold
/// it up (else one check-in would keep the link up for good under a 15 s scrape interval).
#[test]
fn net7_ops4_scrapes_of_an_on_demand_boxs_metrics_ride_on_its_link_and_never_hold_it() {
    require_root!();
    metrics_scrapes_on_demand(Lab::new().expect("lab"));
}

/// The same on IPsec: the listener takes no hold of the SA.
#[test]
fn net7_net9_ops4_scrapes_of_an_on_demand_ipsec_boxs_metrics_never_hold_its_sa() {
    require_root!();
    metrics_scrapes_on_demand(Lab::with_carrier(LabCarrier::Ipsec).expect("lab"));
}

/// The clinic on demand with its metrics listener on its link address; the operator scrapes it
/// with curl and its client certificate from the hub's namespace: no answer while idle, answers
/// while up for a connection, and scrapes all along the idle countdown do not hold the link.
fn metrics_scrapes_on_demand(lab: Lab) {
    let operator = Operator::new(&lab).expect("operator");
    let (hub_config, mut config) = on_demand_pair(&lab, 10);
    let clinic_link = lab.link_address(Node::Clinic);
    let lan = Node::Clinic
        .lan_address()
        .expect("the clinic's LAN address");
    let mut page = status(&format!("{lan}:8444")).expect("[status]");
    page.metrics_listen = Some(socket(&format!("{clinic_link}:{METRICS_PORT}")));
    config.status = Some(page);
    config.management = Some(operator.management(Node::Clinic, 60, false));
    let hub = lab.start(Node::Hub, &hub_config).expect("hub");
    let clinic = lab.start(Node::Clinic, &config).expect("clinic");
    let link = lab.dc_link_name();
    let logs = || format!("clinic:\n{}\nhub:\n{}", clinic.log_text(), hub.log_text());
    let scrape = || {
        let reply = scrape_metrics(
            lab.ns(Node::Hub),
            Node::Clinic.tls_name(),
            clinic_link,
            &operator.ca,
            &operator.client,
            Duration::from_secs(3),
        )
        .expect("curl");
        reply.status == 200 && reply.body.contains("renkei_")
    };

    // Idle: a scrape gets no answer and brings nothing up.
    assert!(!scrape(), "a scrape answered while idle");
    assert_eq!(peer_state(&clinic, link), "idle");

    // Up for a connection: scrapes are answered.
    use_the_link(&lab).unwrap_or_else(|e| panic!("{e:#}\n{}", logs()));
    let last_use = Instant::now();
    assert!(scrape(), "no answer to a scrape while up\n{}", logs());

    // Scrapes all along the idle countdown do not hold the link open.
    let answered = 1 + idles_out_under(&clinic, link, last_use, logs, || {
        let answered = scrape();
        // A scrape interval of its own (a real Prometheus scrapes every few seconds), short
        // of the idle timeout.
        std::thread::sleep(Duration::from_millis(250));
        answered
    });
    assert!(
        answered >= 3,
        "only {answered} scrapes answered during the countdown"
    );
    assert!(!scrape(), "a scrape answered after idling");
    assert_eq!(peer_state(&clinic, link), "idle");
}

/// The journal upload of an on-demand clinic (LOG-4, NET-7) with real systemd-journal-upload
/// and systemd-journal-remote: while the link is idle there is no upload window, an upload is
/// refused inside the box and nothing leaves on the WAN; while it is up for a connection the
/// window is open and records reach the collector; uploads all along the idle countdown do not
/// hold the link, and an upload still connected when it idles out is cut.
#[test]
fn net7_log4_an_on_demand_boxs_journal_upload_rides_on_its_link_and_never_brings_it_up_or_holds_it()
{
    require_root!();
    journal_upload_on_demand(Lab::new().expect("lab"));
}

/// The same on the other data path: TUN offloads off, one plain packet per read.
#[test]
fn net7_log4_an_on_demand_boxs_journal_upload_never_holds_its_link_with_tun_offloads_off() {
    require_root!();
    journal_upload_on_demand(Lab::new().expect("lab").with_tun_offloads(false));
}

/// The same on IPsec: the upload's ESP bytes are no use of the on-demand SA.
#[test]
fn net7_net9_log4_an_on_demand_ipsec_boxs_journal_upload_rides_on_its_sa_and_never_brings_it_up_or_holds_it(
) {
    require_root!();
    journal_upload_on_demand(Lab::with_carrier(LabCarrier::Ipsec).expect("lab"));
}

fn journal_upload_on_demand(lab: Lab) {
    let (collector, mut hub_config) = collecting_hub(&lab, Node::Clinic).expect("collector");
    let (_, mut config) = on_demand_pair(&lab, 10);
    if lab.carrier == LabCarrier::Ipsec {
        // The echo server of [`use_the_link`] takes the relay address.
        hub_config
            .services
            .retain(|s| s.name != "hospital-documents");
    }
    let hub = lab.start(Node::Hub, &hub_config).expect("hub");
    wait_for_service(&hub, "journal");
    let counters = WanCounters::install(lab.ns(Node::Clinic));
    uploading_to(&mut config, lab.link_address(Node::Hub));
    let clinic = lab.start(Node::Clinic, &config).expect("clinic");
    wait_for_service(&clinic, "journal");
    let link = lab.dc_link_name();
    let logs = || format!("clinic:\n{}\nhub:\n{}", clinic.log_text(), hub.log_text());
    let window = clinic.runtime_dir.join(JOURNAL_UPLOAD_READY);
    let url = format!("http://127.0.0.1:{JOURNAL_PORT}");
    let journal = lab.dir.join("clinic.journal");
    write_journal(
        &access_records(3, usec_from_now(Duration::ZERO), "clinic-box"),
        &journal,
    )
    .expect("the box's journal");
    // One pass over the whole journal (a fresh cursor file each time).
    let pass = |cursor: &str| {
        upload(
            lab.ns(Node::Clinic),
            &url,
            &journal,
            &lab.dir.join(cursor),
            Duration::from_secs(10),
        )
    };
    let journal_records = |problem: &str| {
        records(&clinic)
            .into_iter()
            .filter(|r| r["service"] == "journal" && r["problem"]["code"] == problem)
            .count()
    };

    // Idle: no window, the upload is refused inside the box, nothing leaves on the WAN.
    assert!(!window.exists(), "an upload window while idle");
    let refused = pass("cursor-idle");
    assert!(refused.is_err(), "uploaded while idle");
    wait_until(
        Duration::from_secs(5),
        "the refused upload's record",
        || (journal_records("link_idle") > 0).then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e}: {:#?}", records(&clinic)));
    assert_eq!(peer_state(&clinic, link), "idle");
    assert_eq!(counters.read("udp"), 0, "the upload sent UDP on the WAN");

    // Up for a connection: the window opens and the records reach the collector.
    use_the_link(&lab).unwrap_or_else(|e| panic!("{e:#}\n{}", logs()));
    let last_use = Instant::now();
    wait_until(Duration::from_secs(5), "the upload window", || {
        window.exists().then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", logs()));
    pass("cursor-up").unwrap_or_else(|e| panic!("{e:#}\n{}", logs()));
    wait_until(
        Duration::from_secs(10),
        "3 records at the collector",
        || {
            let text = collector.export().ok()?;
            (text.matches("\n_HOSTNAME=clinic-box\n").count() >= 3).then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {:?}", collector.export()));

    // A follower that keeps its connection, and passes all along the countdown: the link
    // still idles out after the last connection.
    let mut follower = ChildGuard(
        lab.ns(Node::Clinic)
            .command(JOURNAL_UPLOAD)
            .arg(format!("--url={url}"))
            .arg(format!("--file={}", journal.display()))
            .arg(format!(
                "--save-state={}",
                lab.dir.join("cursor-follow").display()
            ))
            .arg("--follow=yes")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("systemd-journal-upload --follow"),
    );
    let mut tried = 0;
    let passes = idles_out_under(&clinic, link, last_use, logs, || {
        tried += 1;
        pass(&format!("cursor-{tried}")).is_ok()
    });
    assert!(passes >= 3, "only {passes} uploads during the countdown");

    // The window closes; the follower's connection was cut with the link.
    wait_until(Duration::from_secs(5), "the window to close", || {
        (!window.exists()).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", logs()));
    wait_until(
        Duration::from_secs(10),
        "the follower's connection cut",
        || (journal_records("link_closed") > 0).then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e}: {:#?}", records(&clinic)));
    let _ = follower.0.kill();

    // Idle again: an upload is refused and nothing leaves.
    let sent = counters.read("udp");
    assert!(pass("cursor-late").is_err(), "uploaded after idling");
    assert_eq!(
        counters.read("udp"),
        sent,
        "an upload after idling sent UDP"
    );
    assert_eq!(peer_state(&clinic, link), "idle");
}

/// Kills and reaps the process when dropped (also when the test fails).
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `/etc/netns/<namespace>/hosts`, which `ip netns exec` puts over `/etc/hosts` for the programs
/// it starts in that namespace: a name service of the test's own. Removed on drop.
struct NamespaceHosts {
    dir: std::path::PathBuf,
}

impl NamespaceHosts {
    fn new(namespace: &str, text: &str) -> NamespaceHosts {
        let dir = std::path::Path::new("/etc/netns").join(namespace);
        std::fs::create_dir_all(&dir).expect("/etc/netns folder");
        let hosts = NamespaceHosts { dir };
        hosts.set(text);
        hosts
    }

    /// Rewrites the file in place (the same inode, which the bind mount shows).
    fn set(&self, text: &str) {
        std::fs::write(
            self.dir.join("hosts"),
            format!("127.0.0.1 localhost\n{text}\n"),
        )
        .expect("hosts file");
    }
}

impl Drop for NamespaceHosts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A data centre that moves to another address behind the same name: the hospital, whose
/// endpoint is the name, notices the silence, looks the name up again and reconnects to the new
/// address. The old address is gone from the WAN, so only a new lookup can bring it back.
#[test]
fn net6_a_hub_that_moves_behind_its_name_is_found_again() {
    require_root!();
    let lab = Lab::new().expect("lab");
    let hosts = NamespaceHosts::new(
        lab.ns(Node::Hospital).name(),
        &format!("{} dc.renkei.test", Node::Hub.wan_address()),
    );
    let _hub = lab.start(Node::Hub, &lab.config(Node::Hub)).expect("hub");
    let mut config = lab.config(Node::Hospital);
    let dc = peer_mut(&mut config, "dc");
    dc.endpoint = Some(format!("dc.renkei.test:{HUB_PORT}"));
    dc.persistent_keepalive_secs = Some(5);
    let hospital = lab.start(Node::Hospital, &config).expect("hospital");
    wait_until(Duration::from_secs(10), "the first handshake", || {
        (peer_state(&hospital, "dc") == "up").then_some(())
    })
    .expect("up through the name");
    let endpoint = |daemon: &renkei_lab::Daemon| {
        daemon.peer("dc").ok()?["backend"]["wireguard"]["endpoint"]
            .as_str()
            .map(str::to_string)
    };
    let old = endpoint(&hospital).expect("endpoint");
    assert!(
        old.starts_with(&format!("{}:", Node::Hub.wan_address())),
        "{old}"
    );

    // The data centre moves: the old WAN address gone, a new one, the name updated. (In this
    // order: deleting a primary address also deletes the secondaries of its subnet.)
    let moved = "198.18.0.99";
    let hub_ns = lab.ns(Node::Hub);
    hub_ns
        .ip(&[
            "addr",
            "del",
            &format!("{}/24", Node::Hub.wan_address()),
            "dev",
            "wan0",
        ])
        .expect("old address gone");
    hub_ns
        .ip(&["addr", "add", &format!("{moved}/24"), "dev", "wan0"])
        .expect("new address");
    hosts.set(&format!("{moved} dc.renkei.test"));

    // Keepalives go unanswered (about 20 s to notice), then the name is looked up within 10 s
    // and the next attempt (at most 8 s of backoff) goes to the new address.
    wait_until(
        Duration::from_secs(90),
        "a handshake with the hub at its new address",
        || {
            let now = endpoint(&hospital)?;
            (now.starts_with(&format!("{moved}:")) && peer_state(&hospital, "dc") == "up")
                .then_some(now)
        },
    )
    .expect("the hospital follows the name");
    wait_until(Duration::from_secs(10), "traffic to the moved hub", || {
        tcp_through_tunnel(&lab, Node::Hospital, Node::Hub, 4096).ok()
    })
    .expect("traffic after the move");
    let log = hospital.log_text();
    assert!(
        log.contains("peer endpoint moved") && log.contains(moved),
        "the move is not logged:\n{log}"
    );
}
