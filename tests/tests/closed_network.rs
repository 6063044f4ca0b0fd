//! The closed-network carrier in the namespace lab (NET-9, NET-1): a box without a tunnel,
//! routed to the data centre on a closed network, proves the data centre reachable by its
//! probe, carries an application connection inside mutual TLS with the profile, and reports
//! the link down once the probe endpoint stops answering.
//!
//! ```text
//!   hospital LAN ns --lan0-- hospital ns (the box) --cn0 (veth, closed network)-- dc ns
//!   198.18.10.2           198.18.10.1   198.18.40.2                  198.18.40.1
//!                                                           probe :7000, s_server :8443
//! ```
//! A push moves a box between WireGuard and the closed network (AVL-1, NET-9): the operator's
//! client runs in the data centre and reaches the box's management API on its tunnel or its
//! closed-network address. (Push with auto-confirm and rollback on a closed network as such runs
//! in config_push.rs, on both carriers.)
//!
//! The lab's namespaces are reused (their WAN bridge stays unused by the box); the closed
//! network is a veth pair the test adds between the box and the data centre, removed with the
//! namespaces when the lab is dropped.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use renkei::config::{ClosedConfig, Config, Direction, PolicyMode};
use renkei_lab::boxconfig::{peer_mut, service, socket, Peer};
use renkei_lab::chain::wait_for_service;
use renkei_lab::daemon::renkei_bin;
use renkei_lab::lab::tls_config;
use renkei_lab::netns::run;
use renkei_lab::operator::Operator;
use renkei_lab::tlstools::{Background, Pattern};
use renkei_lab::{require_root, wait_until, Daemon, Lab, Node};

/// The veth pair standing for the closed network, the same name on both ends.
const CLOSED_LINK: &str = "cn0";
/// The box's address on the closed network, with its prefix.
const BOX_CLOSED_ADDRESS: &str = "198.18.40.2/24";
/// The data centre's address on the closed network.
const DC_ADDRESS: &str = "198.18.40.1";
/// Where the box's reachability probe connects (a bare TCP listener in the data centre).
const PROBE_PORT: u16 = 7000;
/// The data centre's TLS server (openssl s_server, client certificate required).
const DC_TLS_PORT: u16 = 8443;
/// The outbound service's listener on the box's LAN address.
const LAN_SERVICE: &str = "198.18.10.1:8443";
/// Probe schedule: the shortest interval the config accepts, so the test stays short.
const PROBE_INTERVAL_SECS: u64 = 5;
const PROBE_TIMEOUT_SECS: u64 = 2;
const ALARM_AFTER_SECS: u64 = 60;
/// How long the first probe may take to show the link up after the daemon answers.
const LINK_UP_TIMEOUT: Duration = Duration::from_secs(PROBE_INTERVAL_SECS * 2);
/// The link must be down within about two probe intervals of the endpoint going away.
const LINK_DOWN_TIMEOUT: Duration = Duration::from_secs(PROBE_INTERVAL_SECS * 2);
/// How long the link's byte counters may lag (they are read every two seconds).
const COUNTERS_TIMEOUT: Duration = Duration::from_secs(10);
/// The document the data centre serves: big enough to span many TLS records.
const DOCUMENT_BYTES: usize = 1 << 20;
const DOCUMENT_NAME: &str = "document.bin";
/// Longest one fetch through the service may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long openssl may take to start listening, and to print what it verified.
const OPENSSL_TIMEOUT: Duration = Duration::from_secs(10);
/// The confirm window of pushed configs: the shortest the config accepts.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);
/// How long auto-confirm may take once the operator reached the box after the apply.
const AUTO_CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a pushed config may take to be running.
const APPLY_TIMEOUT: Duration = Duration::from_secs(20);
/// The box's management API on its closed-network address.
const BOX_MANAGEMENT: &str = "198.18.40.2:7443";
/// A management port the operator does not use: a config that moves the API there cuts the
/// operator off although it applies cleanly.
const WRONG_MANAGEMENT_PORT: u16 = 7444;

/// Joins the box and the data centre by a veth pair on one routed /24.
fn add_closed_network(lab: &Lab) {
    let (facility, dc) = (lab.ns(Node::Hospital), lab.ns(Node::Hub));
    run(std::process::Command::new("ip").args([
        "link",
        "add",
        CLOSED_LINK,
        "netns",
        facility.name(),
        "type",
        "veth",
        "peer",
        "name",
        CLOSED_LINK,
        "netns",
        dc.name(),
    ]))
    .expect("veth pair for the closed network");
    facility
        .ip(&["addr", "add", BOX_CLOSED_ADDRESS, "dev", CLOSED_LINK])
        .expect("box address");
    dc.ip(&[
        "addr",
        "add",
        &format!("{DC_ADDRESS}/24"),
        "dev",
        CLOSED_LINK,
    ])
    .expect("dc address");
    for ns in [facility, dc] {
        ns.ip(&["link", "set", CLOSED_LINK, "up"])
            .expect("closed link up");
    }
}

/// The hospital box on the closed network: no tunnel, always on, one outbound service from
/// its LAN to the data centre's TLS server.
fn closed_box_config(lab: &Lab) -> Config {
    let mut config = lab.config(Node::Hospital);
    config.tunnel = None;
    config.closed = Some(ClosedConfig {
        interface: CLOSED_LINK.to_string(),
        address: BOX_CLOSED_ADDRESS.parse().expect("box address"),
        data_centre_prefixes: vec![format!("{DC_ADDRESS}/32").parse().expect("dc prefix")],
        mode: Some(PolicyMode::AlwaysOn),
        probe_endpoint: Some(socket(&format!("{DC_ADDRESS}:{PROBE_PORT}"))),
        probe_interval_secs: PROBE_INTERVAL_SECS,
        probe_timeout_secs: PROBE_TIMEOUT_SECS,
        alarm_after_secs: ALARM_AFTER_SECS,
    });
    config.tls = Some(tls_config());
    config.services = vec![service(
        "documents",
        Direction::Outbound,
        socket(LAN_SERVICE),
        &format!("{DC_ADDRESS}:{DC_TLS_PORT}"),
        Peer::ServerName(Node::Hub.tls_name()),
    )];
    config
}

/// `openssl s_server` in the data centre with the hub's certificate from the lab CA, serving
/// the files of `www` (`-WWW`) and requiring a client certificate from the same CA.
fn dc_tls_server(lab: &Lab, www: &Path) -> Background {
    renkei_lab::tlstools::www_server(
        lab.ns(Node::Hub),
        &format!("{DC_ADDRESS}:{DC_TLS_PORT}"),
        &lab.tls_dir(Node::Hub),
        www,
        OPENSSL_TIMEOUT,
    )
    .expect("s_server listening")
}

/// The state of the box's one closed-network link ("data centre"), empty when unknown.
fn link_state(daemon: &Daemon) -> String {
    daemon
        .peer(renkei::carrier::closed::LINK_NAME)
        .map(|p| p["state"].as_str().unwrap_or("").to_string())
        .unwrap_or_default()
}

/// A client on the hospital LAN fetches `/<name>` through the outbound service; the body
/// after the HTTP header.
fn fetch_through_service(lab: &Lab, name: &str) -> Vec<u8> {
    let mut stream = lab
        .lan_ns(Node::Hospital)
        .tcp_connect(LAN_SERVICE, Duration::from_secs(5))
        .expect("the box accepts the LAN connection");
    stream
        .set_read_timeout(Some(FETCH_TIMEOUT))
        .expect("read timeout");
    stream
        .write_all(format!("GET /{name} HTTP/1.0\r\n\r\n").as_bytes())
        .expect("request");
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).expect("reply");
    let end = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "no HTTP header in the reply: {:?}",
                String::from_utf8_lossy(&reply[..reply.len().min(400)])
            )
        });
    let header = String::from_utf8_lossy(&reply[..end]);
    assert!(
        header.starts_with("HTTP/1.0 200"),
        "reply header {header:?}"
    );
    reply.split_off(end + 4)
}

#[test]
fn net9_net1_a_box_on_a_closed_network_reaches_the_data_centre_through_mutual_tls_without_a_tunnel()
{
    require_root!();
    let lab = Lab::new().expect("lab");
    add_closed_network(&lab);
    let dc = lab.ns(Node::Hub);

    let probe_listener: TcpListener = dc
        .tcp_listener(&format!("{DC_ADDRESS}:{PROBE_PORT}"))
        .expect("probe endpoint");
    let www = lab.dir.join("dc-www");
    std::fs::create_dir_all(&www).expect("www folder");
    let mut document = vec![0u8; DOCUMENT_BYTES];
    Pattern::new(9).fill(&mut document);
    std::fs::write(www.join(DOCUMENT_NAME), &document).expect("document");
    let server = dc_tls_server(&lab, &www);

    let config = closed_box_config(&lab);
    let facility = lab.start(Node::Hospital, &config).expect("box");

    // The carrier is the closed network, and its first probe shows the data centre up.
    let status = facility.status().expect("status");
    assert_eq!(status["tunnel"]["kind"], "closed", "{status}");
    assert_eq!(status["tunnel"]["interface"], CLOSED_LINK, "{status}");
    wait_until(LINK_UP_TIMEOUT, "the data-centre link to be up", || {
        (link_state(&facility) == "up").then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: {}", facility.status().unwrap_or_default()));
    let status = facility.status().expect("status");
    assert_eq!(status["tunnel"]["state"], "up", "{status}");
    let forwarding = lab
        .ns(Node::Hospital)
        .exec("sysctl", &["-n", "net.ipv4.ip_forward"])
        .expect("sysctl");
    assert_eq!(
        status["tunnel"]["backend"]["closed"]["ip_forward"],
        forwarding.trim() != "0",
        "the box shows its namespace's forwarding switch: {status}"
    );

    // The status document names the carrier and its reachability, with only the closed
    // network's own fields in the backend parts (no WireGuard field anywhere).
    let tunnel = &status["tunnel"];
    assert!(
        tunnel["backend"]["closed"]["ip_forward"].is_boolean(),
        "{tunnel:#}"
    );
    let link = &tunnel["peers"][0];
    assert_eq!(
        (&link["state"], &link["alarm"]),
        (&"up".into(), &false.into()),
        "{link:#}"
    );
    assert!(link["last_reached"].is_u64(), "{link:#}");
    assert_eq!(
        link["backend"]["closed"]["probe_endpoint"],
        format!("{DC_ADDRESS}:{PROBE_PORT}"),
        "{link:#}"
    );
    let text = tunnel.to_string();
    for wireguard_only in [
        "wireguard",
        "listen_port",
        "public_key",
        "session_keys_present",
        "last_handshake",
        "invalid_datagrams",
    ] {
        assert!(
            !text.contains(wireguard_only),
            "{wireguard_only} in a closed carrier's document: {tunnel:#}"
        );
    }

    // Application bytes cross the closed network inside mutual TLS, intact.
    wait_for_service(&facility, "documents");
    let bytes = |field: &str| {
        facility
            .peer(renkei::carrier::closed::LINK_NAME)
            .ok()
            .and_then(|p| p[field].as_u64())
            .unwrap_or(0)
    };
    let (rx_before, tx_before) = (bytes("rx_bytes"), bytes("tx_bytes"));
    let body = fetch_through_service(&lab, DOCUMENT_NAME);
    assert_eq!(body.len(), document.len(), "document length");
    assert!(body == document, "the document arrived altered");
    // The link's counters are the closed interface's: the document crossed it inbound.
    wait_until(
        COUNTERS_TIMEOUT,
        "the closed interface's counters to count the document",
        || {
            (bytes("rx_bytes") >= rx_before + DOCUMENT_BYTES as u64
                && bytes("tx_bytes") > tx_before)
                .then_some(())
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}: rx {rx_before} -> {}, tx {tx_before} -> {}",
            bytes("rx_bytes"),
            bytes("tx_bytes")
        )
    });
    // The data centre verified the box's client certificate (s_server prints what it verified).
    server
        .wait_for_output(
            &format!("depth=0 CN = {}", Node::Hospital.tls_name()),
            OPENSSL_TIMEOUT,
        )
        .expect("the data centre saw the box's client certificate");
    // ... and the box verified the data centre's (its access-log record names the server).
    let record = wait_until(Duration::from_secs(5), "the access-log record", || {
        let status = facility.status().ok()?;
        status["proxy"]["recent_connections"]
            .as_array()?
            .iter()
            .find(|r| r["service"] == "documents")
            .cloned()
    })
    .expect("record");
    assert_eq!(
        (&record["result"], &record["peer_identity"]),
        (&"ok".into(), &Node::Hub.tls_name().into()),
        "{record}"
    );

    // The data centre stops answering the probe: the link goes down within two intervals.
    drop(probe_listener);
    wait_until(LINK_DOWN_TIMEOUT, "the data-centre link to go down", || {
        (link_state(&facility) == "down").then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: {}", facility.status().unwrap_or_default()));
    let link = facility
        .peer(renkei::carrier::closed::LINK_NAME)
        .expect("link");
    assert!(
        link["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("probe failed")),
        "{link}"
    );
    drop(facility);
    drop(server);
}

/// The closed box at `version`, with a management API on its closed-network address that
/// trusts `operator` and auto-confirms a pushed config once the operator reaches it again.
fn closed_box_with_management(lab: &Lab, operator: &Operator, version: u64) -> Config {
    let mut config = closed_box_config(lab);
    config.meta.version = version;
    let mut management = operator.management(Node::Hospital, CONFIRM_TIMEOUT.as_secs(), true);
    management.listen = socket(BOX_MANAGEMENT);
    config.management = Some(management);
    config
}

/// The operator's arguments that aim a command at the box's closed-network address.
fn to_closed_box() -> [(&'static str, String); 1] {
    [("--to", BOX_MANAGEMENT.to_string())]
}

/// The `config` part of `renkei status --json`, run as an administrator inside the box's
/// namespace.
fn config_state(lab: &Lab, daemon: &Daemon) -> serde_json::Value {
    let bin = renkei_bin().expect("renkei binary");
    let json = lab
        .ns(Node::Hospital)
        .exec(
            &bin.to_string_lossy(),
            &[
                "status",
                "--json",
                "--config",
                &daemon.config.to_string_lossy(),
            ],
        )
        .expect("renkei status --json");
    let document: serde_json::Value = serde_json::from_str(&json).expect("status JSON");
    document["config"].clone()
}

/// True when the daemon logged a config event `event` for `version` whose line also holds
/// every one of `parts`.
fn logged(daemon: &Daemon, event: &str, version: u64, parts: &[&str]) -> bool {
    daemon.log_text().lines().any(|l| {
        l.contains(&format!("event=\"{event}\""))
            && l.contains(&format!("version={version}"))
            && parts.iter().all(|p| l.contains(p))
    })
}

/// The box's address on the closed network, without its prefix.
fn box_closed_ip() -> std::net::IpAddr {
    BOX_CLOSED_ADDRESS
        .split('/')
        .next()
        .and_then(|ip| ip.parse().ok())
        .expect("box address")
}

/// NET-9: the probe proves the closed network and no other path. A detour route in the box
/// sends the data centre's address out of the WAN (where the data centre also answers); the
/// probe, bound to the closed interface and its address, still arrives from the box's
/// closed-network address.
#[test]
fn net9_the_probe_leaves_by_the_closed_interface_from_the_closed_address() {
    require_root!();
    let lab = Lab::new().expect("lab");
    add_closed_network(&lab);
    let facility_ns = lab.ns(Node::Hospital);
    facility_ns
        .ip(&[
            "route",
            "add",
            &format!("{DC_ADDRESS}/32"),
            "via",
            Node::Hub.wan_address(),
            "dev",
            "wan0",
        ])
        .expect("detour route");
    // The answer to a probe bound to cn0 comes back on cn0 although the route back points at
    // the WAN: reverse-path filtering must not drop it (this namespace's own settings only).
    for key in ["all", "default", CLOSED_LINK] {
        facility_ns
            .exec(
                "sysctl",
                &["-qw", &format!("net.ipv4.conf.{key}.rp_filter=0")],
            )
            .expect("rp_filter");
    }
    let listener: TcpListener = lab
        .ns(Node::Hub)
        .tcp_listener(&format!("{DC_ADDRESS}:{PROBE_PORT}"))
        .expect("probe endpoint");
    listener.set_nonblocking(true).expect("non-blocking");

    let facility = lab
        .start(Node::Hospital, &closed_box_config(&lab))
        .expect("box");
    let peer = wait_until(LINK_UP_TIMEOUT, "the box's probe to arrive", || {
        listener.accept().ok().map(|(_, peer)| peer)
    })
    .unwrap_or_else(|e| panic!("{e}: {}", facility.status().unwrap_or_default()));
    assert_eq!(
        peer.ip(),
        box_closed_ip(),
        "the probe came from {peer}, not from the box's closed-network address"
    );
    wait_until(LINK_UP_TIMEOUT, "the data-centre link to be up", || {
        (link_state(&facility) == "up").then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: {}", facility.status().unwrap_or_default()));
    drop(facility);
}

/// A UDP port the test holds in the box's namespace: a WireGuard config listening there cannot
/// start.
const BUSY_UDP_PORT: u16 = 51900;
/// How long the hospital's WireGuard link may take to come up at start.
const TUNNEL_UP_TIMEOUT: Duration = Duration::from_secs(15);
/// `--timeout-secs` of a push whose answer cannot come back (the link it came over is gone).
const LOST_ANSWER_TIMEOUT_SECS: &str = "5";

/// The hospital on WireGuard to the lab hub at `version`: its management API on its tunnel
/// address, trusting `operator` and auto-confirming.
fn wireguard_box_with_management(lab: &Lab, operator: &Operator, version: u64) -> Config {
    let mut config = lab.config(Node::Hospital);
    config.meta.version = version;
    config.tls = Some(tls_config());
    config.management = Some(operator.management(Node::Hospital, CONFIRM_TIMEOUT.as_secs(), true));
    config
}

/// Whether the hospital's TUN device exists in its namespace.
fn tun_device_exists(lab: &Lab) -> bool {
    lab.ns(Node::Hospital)
        .ip(&["link", "show", "dev", &lab.interface(Node::Hospital)])
        .is_ok()
}

/// The kind of link `renkei status` shows.
fn carrier_kind(daemon: &Daemon) -> String {
    daemon.status().expect("status")["tunnel"]["kind"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// Waits until the box runs `version` in `state` (`renkei status --json`, inside its namespace).
fn wait_config(lab: &Lab, daemon: &Daemon, version: u64, state: &str, within: Duration) {
    wait_until(within, &format!("version {version} {state}"), || {
        let now = config_state(lab, daemon);
        (now["version"] == version && now["state"] == state).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log_text()));
}

/// Pushes `path` in the background and returns when the box runs it pending (the answer may
/// never come back when the push moves the box off the link it came over).
fn push_until_pending(
    lab: &Lab,
    operator: &Operator,
    daemon: &Daemon,
    path: &Path,
    target: &[(&str, String)],
    version: u64,
) -> Instant {
    std::thread::scope(|scope| {
        let pushing = scope.spawn(|| operator.push_with(lab, Node::Hospital, path, target));
        let applied = wait_until(APPLY_TIMEOUT, &format!("version {version} to run"), || {
            let state = config_state(lab, daemon);
            (state["version"] == version && state["state"] == "pending").then(Instant::now)
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log_text()));
        let _ = pushing.join();
        applied
    })
}

/// The operator's `remote` over the closed network, retried until it answers.
fn remote_over_closed_network(
    lab: &Lab,
    operator: &Operator,
    daemon: &Daemon,
) -> serde_json::Value {
    let state = wait_until(
        APPLY_TIMEOUT,
        "the operator to reach the box over the closed network",
        || {
            operator
                .command_with(lab, "remote", Node::Hospital, &to_closed_box(), &[])
                .ok()
                .filter(|o| o.success)
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log_text()));
    state.answers[0].clone()
}

#[test]
fn net9_avl1_a_push_moves_the_hospital_from_wireguard_to_the_closed_network_and_a_cut_off_move_back_rolls_back(
) {
    require_root!();
    let lab = Lab::new().expect("lab");
    add_closed_network(&lab);
    let _probe_listener: TcpListener = lab
        .ns(Node::Hub)
        .tcp_listener(&format!("{DC_ADDRESS}:{PROBE_PORT}"))
        .expect("probe endpoint");
    let operator = Operator::new(&lab).expect("operator");
    let _hub = lab.start(Node::Hub, &lab.config(Node::Hub)).expect("hub");

    // Version 1: the hospital on WireGuard, its management API on its tunnel address.
    let v1 = wireguard_box_with_management(&lab, &operator, 1);
    let mut facility = lab.start(Node::Hospital, &v1).expect("hospital");
    wait_until(TUNNEL_UP_TIMEOUT, "the hospital's tunnel to be up", || {
        (renkei_lab::chain::peer_state(&facility, "dc") == "up").then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", facility.log_text()));
    assert_eq!(carrier_kind(&facility), "wireguard");
    assert!(tun_device_exists(&lab), "the TUN device of version 1");

    // Version 2 moves it to the closed network, pushed over the tunnel. The answer cannot come
    // back (the tunnel is gone once it applied); the operator reads the state over the closed
    // network instead, which proves the operator reaches the box: auto-confirmed.
    let v2 = closed_box_with_management(&lab, &operator, 2);
    let path = operator.write_signed("v2.toml", &v2, None).expect("sign");
    let short = [("--timeout-secs", LOST_ANSWER_TIMEOUT_SECS.to_string())];
    push_until_pending(&lab, &operator, &facility, &path, &short, 2);
    let read_back = remote_over_closed_network(&lab, &operator, &facility);
    assert_eq!(read_back["version"], 2, "{read_back}");
    wait_config(&lab, &facility, 2, "confirmed", AUTO_CONFIRM_TIMEOUT);
    assert!(
        logged(&facility, "confirmed", 2, &["auto_confirm"]),
        "no auto_confirm event for version 2:\n{}",
        facility.log_text()
    );
    let status = facility.status().expect("status");
    assert_eq!(status["tunnel"]["kind"], "closed", "{status}");
    assert_eq!(status["tunnel"]["interface"], CLOSED_LINK, "{status}");
    assert!(
        !tun_device_exists(&lab),
        "the TUN device outlived the move to the closed network"
    );
    wait_until(LINK_UP_TIMEOUT, "the data-centre link to be up", || {
        (link_state(&facility) == "up").then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: {}", facility.status().unwrap_or_default()));
    wait_for_service(&facility, "documents");

    // Version 3 goes back to WireGuard, but its UDP port is taken: the tunnel cannot start.
    // The apply fails, and the closed network runs on as it was.
    let _busy = lab
        .ns(Node::Hospital)
        .udp_socket(&format!("0.0.0.0:{BUSY_UDP_PORT}"))
        .expect("busy UDP port");
    let mut v3 = wireguard_box_with_management(&lab, &operator, 3);
    v3.tunnel.as_mut().expect("[tunnel]").listen_port = BUSY_UDP_PORT;
    let path = operator.write_signed("v3.toml", &v3, None).expect("sign");
    let refused = operator
        .push_with(&lab, Node::Hospital, &path, &to_closed_box())
        .expect("push");
    assert!(!refused.success, "{}", refused.output);
    assert_eq!(
        refused.error_code(),
        Some("apply_failed"),
        "{}",
        refused.output
    );
    let state = config_state(&lab, &facility);
    assert_eq!(
        (&state["version"], &state["state"]),
        (&2.into(), &"confirmed".into()),
        "{state}"
    );
    assert_eq!(carrier_kind(&facility), "closed");
    assert!(
        !tun_device_exists(&lab),
        "a TUN device after the failed start"
    );
    assert_eq!(
        link_state(&facility),
        "up",
        "the closed link after the failed move"
    );
    assert_eq!(
        remote_over_closed_network(&lab, &operator, &facility)["version"],
        2
    );

    // Version 4 goes back to WireGuard with a wrong hub key: it applies (the TUN device is
    // there), but no handshake completes and the operator cannot reach the box. Nobody
    // confirms: at the end of the window the box is back on the closed network by itself.
    let mut v4 = wireguard_box_with_management(&lab, &operator, 4);
    peer_mut(&mut v4, "dc").public_key = lab.public_key(Node::Clinic).to_string();
    let path = operator.write_signed("v4.toml", &v4, None).expect("sign");
    let applied = push_until_pending(&lab, &operator, &facility, &path, &to_closed_box(), 4);
    assert_eq!(carrier_kind(&facility), "wireguard");
    assert!(tun_device_exists(&lab), "the TUN device of version 4");
    assert_rolled_back_at_the_window_end(&lab, &facility, applied, 4, 2, "closed");
    assert!(
        !tun_device_exists(&lab),
        "the TUN device outlived the rollback"
    );
    assert_eq!(
        remote_over_closed_network(&lab, &operator, &facility)["version"],
        2
    );
    wait_until(
        LINK_UP_TIMEOUT,
        "the data-centre link to be up again",
        || (link_state(&facility) == "up").then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e}: {}", facility.status().unwrap_or_default()));

    // Version 5, the same move, and the daemon is killed inside its window: it starts again on
    // the confirmed closed network.
    let mut v5 = v4.clone();
    v5.meta.version = 5;
    let path = operator.write_signed("v5.toml", &v5, None).expect("sign");
    push_until_pending(&lab, &operator, &facility, &path, &to_closed_box(), 5);
    facility.kill();
    let config_file = facility.config.clone();
    drop(facility);
    let facility = lab
        .start_with(Node::Hospital, &config_file)
        .expect("restart");
    let state = config_state(&lab, &facility);
    assert_eq!(
        (&state["version"], &state["state"]),
        (&2.into(), &"confirmed".into()),
        "{state}"
    );
    assert_eq!(carrier_kind(&facility), "closed");
    assert!(
        !tun_device_exists(&lab),
        "a TUN device after the restart on the closed network"
    );
    assert_eq!(
        remote_over_closed_network(&lab, &operator, &facility)["version"],
        2
    );

    // The other way round: version 6 moves the box back to WireGuard with the right key and is
    // confirmed over the tunnel; version 7 moves it to the closed network with its management
    // API where the operator does not look. Rolled back, the WireGuard link comes up again.
    let v6 = wireguard_box_with_management(&lab, &operator, 6);
    let path = operator.write_signed("v6.toml", &v6, None).expect("sign");
    push_until_pending(&lab, &operator, &facility, &path, &to_closed_box(), 6);
    wait_until(
        AUTO_CONFIRM_TIMEOUT,
        "the operator to reach the box over the tunnel",
        || {
            operator
                .remote(&lab, Node::Hospital)
                .ok()
                .filter(|o| o.success)
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", facility.log_text()));
    wait_config(&lab, &facility, 6, "confirmed", AUTO_CONFIRM_TIMEOUT);
    assert_eq!(carrier_kind(&facility), "wireguard");
    assert!(tun_device_exists(&lab), "the TUN device of version 6");

    let mut v7 = closed_box_with_management(&lab, &operator, 7);
    v7.management.as_mut().expect("management").listen =
        socket(&format!("198.18.40.2:{WRONG_MANAGEMENT_PORT}"));
    let path = operator.write_signed("v7.toml", &v7, None).expect("sign");
    let applied = push_until_pending(&lab, &operator, &facility, &path, &short, 7);
    assert_eq!(carrier_kind(&facility), "closed");
    assert!(
        !tun_device_exists(&lab),
        "the TUN device outlived version 7's apply"
    );
    assert_rolled_back_at_the_window_end(&lab, &facility, applied, 7, 6, "wireguard");
    assert!(tun_device_exists(&lab), "the TUN device is back");
    wait_until(
        TUNNEL_UP_TIMEOUT,
        "the hospital's tunnel to be up again",
        || (renkei_lab::chain::peer_state(&facility, "dc") == "up").then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", facility.log_text()));
    let state = operator.remote(&lab, Node::Hospital).expect("remote");
    assert!(state.success, "{}", state.output);
    assert_eq!(state.answers[0]["version"], 6, "{}", state.output);
}

/// Version `pushed`, applied at `applied`, was not confirmed: at the end of the confirm window
/// (not before) the box runs `confirmed` again, on the carrier `kind`, and logged the rollback.
fn assert_rolled_back_at_the_window_end(
    lab: &Lab,
    facility: &Daemon,
    applied: Instant,
    pushed: u64,
    confirmed: u64,
    kind: &str,
) {
    wait_config(lab, facility, confirmed, "confirmed", CONFIRM_TIMEOUT * 2);
    let took = applied.elapsed();
    assert!(
        took + Duration::from_secs(1) >= CONFIRM_TIMEOUT,
        "rolled back {took:?} after the apply: before the confirm window ended"
    );
    assert!(
        logged(facility, "rolled_back", pushed, &[]),
        "no rolled_back event for version {pushed}:\n{}",
        facility.log_text()
    );
    assert_eq!(carrier_kind(facility), kind);
}
