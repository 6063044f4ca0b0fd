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
//! The lab's namespaces are reused (their WAN bridge stays unused by the box); the closed
//! network is a veth pair the test adds between the box and the data centre, removed with the
//! namespaces when the lab is dropped.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use renkei::config::{ClosedConfig, Config, Direction, PolicyMode};
use renkei_lab::boxconfig::{service, socket, Peer};
use renkei_lab::chain::wait_for_service;
use renkei_lab::lab::tls_config;
use renkei_lab::netns::run;
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
/// The document the data centre serves: big enough to span many TLS records.
const DOCUMENT_BYTES: usize = 1 << 20;
const DOCUMENT_NAME: &str = "document.bin";
/// Longest one fetch through the service may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long openssl may take to start listening, and to print what it verified.
const OPENSSL_TIMEOUT: Duration = Duration::from_secs(10);

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
    let tls = lab.tls_dir(Node::Hub);
    let text = |p: &Path| p.to_string_lossy().into_owned();
    let accept = format!("{DC_ADDRESS}:{DC_TLS_PORT}");
    let args = [
        "-C".to_string(),
        text(www),
        "openssl".to_string(),
        "s_server".to_string(),
        "-accept".to_string(),
        accept,
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
    let server = Background::start(lab.ns(Node::Hub), "env", &args, false).expect("s_server");
    server
        .wait_for_output("ACCEPT", OPENSSL_TIMEOUT)
        .expect("s_server listening");
    server
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

    // Application bytes cross the closed network inside mutual TLS, intact.
    wait_for_service(&facility, "documents");
    let body = fetch_through_service(&lab, DOCUMENT_NAME);
    assert_eq!(body.len(), document.len(), "document length");
    assert!(body == document, "the document arrived altered");
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
