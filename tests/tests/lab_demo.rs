//! The demo lab as a newcomer uses it: the `lab` binary's `up`, the commands it prints and
//! records in `lab.json`, and `down`, which must leave nothing behind (NET-1, NET-7, LOG-1);
//! the printed config push to the on-demand clinic (AUTH-2, LOG-2).
//!
//! The fetch and push tests run on both carriers of the lab, one body each (NET-9 for the
//! closed network, `lab up --carrier closed`): the same documents, services, pages, metrics and
//! push, with the carrier's own checks where it differs (WireGuard: peers, the on-demand tunnel
//! and its idle timeout; closed network: the hub's link, the carrier's routes and the probe).
//! Each test keeps its `lab.json` in a folder of its own, so it never touches a demo lab a
//! person has running, and a guard runs `lab down` when the test ends, also when it fails.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{assert_gone, bounded, namespaces_now, Commands, LabDir, COMMAND_TIMEOUT};
use renkei_lab::demo::{leftovers, processes_using, LabRecord};
use renkei_lab::docserver::sha256_hex;
use renkei_lab::lab::LabCarrier;
use renkei_lab::{require_root, wait_until, Node};
use serde_json::Value;

/// Every command `lab up` prints on either carrier, by key, but for [`carrier_view_keys`]: the
/// tests below run each one as printed.
const FETCH_KEYS: [&str; 15] = [
    "fetch-document",
    "fetch-imaging-checksum",
    "hospital-checksum",
    "clinic-tunnel",
    "clinic-tunnel-json",
    "hospital-status",
    "metrics-dc",
    "metrics-hospital",
    "status-page-dc",
    "status-page-hospital",
    "status-page-clinic",
    "browser-dc",
    "browser-hospital",
    "browser-clinic",
    "down",
];
/// The printed config push, in the order printed (and what else that test runs); on WireGuard
/// `clinic-connect` comes first ([`push_keys`]).
const PUSH_KEYS: [&str; 5] = [
    "push-config",
    "confirm-config",
    "show-config",
    "clinic-tunnel-json",
    "down",
];

/// The commands that show the link to the data centre as the carrier has it: WireGuard's
/// peers, or the closed network's hub link, routes and probe.
fn carrier_view_keys(carrier: LabCarrier) -> &'static [&'static str] {
    match carrier {
        LabCarrier::WireGuard => &["hub-peers"],
        LabCarrier::Closed => &["hub-link", "hub-routes", "hospital-probe"],
        LabCarrier::Ipsec => &["hub-routes"],
    }
}

/// [`FETCH_KEYS`] and the carrier's view.
fn fetch_keys(carrier: LabCarrier) -> Vec<&'static str> {
    FETCH_KEYS
        .iter()
        .chain(carrier_view_keys(carrier))
        .copied()
        .collect()
}

/// The printed config push on `carrier`: WireGuard (and IPsec) bring the on-demand clinic's
/// tunnel (SA) up first; a closed network routes to the clinic at any time.
fn push_keys(carrier: LabCarrier) -> Vec<&'static str> {
    let connect: &[&str] = match carrier {
        LabCarrier::WireGuard | LabCarrier::Ipsec => &["clinic-connect"],
        LabCarrier::Closed => &[],
    };
    connect.iter().chain(&PUSH_KEYS).copied().collect()
}

/// The JSON documents a command printed, in order (`renkei push` prints the box's answer, then
/// the state it reads back).
fn json_answers(stdout: &[u8]) -> Vec<Value> {
    serde_json::Deserializer::from_slice(stdout)
        .into_iter::<Value>()
        .map(|v| {
            v.unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(stdout)))
        })
        .collect()
}

fn json(commands: &Commands, key: &str) -> Value {
    let out = commands.run(key);
    serde_json::from_slice(&out)
        .unwrap_or_else(|e| panic!("{key}: not JSON ({e}): {}", String::from_utf8_lossy(&out)))
}

fn clinic_peer_state(commands: &Commands, carrier: LabCarrier) -> String {
    peer(
        &json(commands, "clinic-tunnel-json"),
        Node::dc_link_name(carrier),
    )["state"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// Peer `name` of a status document (`Null` when there is none).
fn peer(status: &Value, name: &str) -> Value {
    status["tunnel"]["peers"]
        .as_array()
        .and_then(|peers| peers.iter().find(|p| p["name"] == name))
        .cloned()
        .unwrap_or(Value::Null)
}

/// Service `name` of a status document (`Null` when there is none).
fn service(status: &Value, name: &str) -> Value {
    status["proxy"]["services"]
        .as_array()
        .and_then(|all| all.iter().find(|s| s["name"] == name))
        .cloned()
        .unwrap_or(Value::Null)
}

/// Access-log records of `service` in a status document.
fn records(status: &Value, service: &str) -> Vec<Value> {
    status["proxy"]["recent_connections"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r["service"] == service)
        .collect()
}

fn status_of(record: &LabRecord, node: &str) -> Value {
    let node = record.node(node).expect("node");
    let answer = renkei::control_socket::request(&node.runtime_dir, "status").expect("status");
    serde_json::from_str(&answer).expect("status JSON")
}

fn in_benchmark_range(addr: &str) -> bool {
    addr.parse::<std::net::Ipv4Addr>()
        .is_ok_and(|ip| ip.octets()[0] == 198 && (ip.octets()[1] & 0xfe) == 18)
}

/// Everything the lab is up with is alive; every IPv4 address in its namespaces other than
/// loopback is from 198.18.0.0/15, and no interface has an IPv6 address (IPv6 is off in lab
/// namespaces, so not even link-local ones).
fn assert_up(record: &LabRecord) {
    for process in record.processes() {
        assert!(process.alive(), "{process:?} is not running");
    }
    let listed = namespaces_now();
    for ns in &record.namespaces {
        assert!(
            listed
                .lines()
                .any(|l| l.split_whitespace().next() == Some(ns)),
            "namespace {ns} missing:\n{listed}"
        );
        let addrs = bounded(
            Command::new("ip").args(["-n", ns, "-o", "addr", "show"]),
            COMMAND_TIMEOUT,
        );
        assert!(addrs.status.success(), "ip -n {ns} addr: {addrs:?}");
        let text = String::from_utf8_lossy(&addrs.stdout);
        assert!(text.contains(" inet "), "{ns} has no IPv4 address:\n{text}");
        for line in text.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            let Some(i) = words.iter().position(|w| *w == "inet" || *w == "inet6") else {
                continue;
            };
            assert_eq!(words[i], "inet", "{ns}: an IPv6 address: {line}");
            let addr = words[i + 1].split('/').next().unwrap_or("");
            assert!(
                addr.starts_with("127.") || in_benchmark_range(addr),
                "{ns}: {line}"
            );
        }
    }
}

/// `token` occurs in `text` as a whole word: not inside a longer address or name.
fn has_token(text: &str, token: &str) -> bool {
    let part = |c: char| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_';
    text.match_indices(token).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + token.len()..].chars().next();
        !before.is_some_and(part) && !after.is_some_and(part)
    })
}

/// The printed summary names every namespace, address, listener, page, password and file of
/// `lab.json`, and prints every command exactly as recorded.
fn assert_summary_lists_everything(printed: &str, record: &LabRecord) {
    let mut wanted: Vec<String> = record.namespaces.clone();
    for n in &record.nodes {
        wanted.extend([
            n.namespace.clone(),
            n.wan_address.clone(),
            n.link_address.clone(),
            n.config.display().to_string(),
            n.log.display().to_string(),
            n.status_page.url.clone(),
            n.status_page.open_from_namespace.clone(),
            n.status_page.browser_url.clone(),
            n.status_page.admin_password.clone(),
            n.status_page.metrics_url.clone(),
            n.management.url.clone(),
        ]);
        wanted.extend(n.lan_namespace.clone());
        wanted.extend(n.lan_address.clone());
        wanted.extend(n.tunnel_address.clone());
        for l in &n.listeners {
            wanted.extend([l.listen.clone(), l.target.clone()]);
            let listed = |p: &str| {
                let (Some(from), Some(arrow)) = (p.find(&l.listen), p.find(" -> ")) else {
                    return false;
                };
                from < arrow
                    && p[arrow..].contains(&l.target)
                    && has_token(p, &l.service)
                    && has_token(p, &l.direction)
                    && has_token(p, &n.name)
            };
            assert!(
                printed.lines().any(listed),
                "listener {l:?} of {} not printed:\n{printed}",
                n.name
            );
        }
    }
    for c in &record.clients {
        wanted.extend([c.namespace.clone(), c.address.clone()]);
    }
    let server = record.document_server.as_ref().expect("document server");
    wanted.extend([
        server.namespace.clone(),
        server.url.clone(),
        server.dir.display().to_string(),
    ]);
    for doc in &server.documents {
        wanted.extend([doc.name.clone(), doc.sha256.clone()]);
    }
    let pki = record.pki.as_ref().expect("pki");
    wanted.extend(
        [
            &pki.ca_certificate,
            &pki.operator_certificate,
            &pki.signing_key,
        ]
        .map(|p| p.display().to_string()),
    );
    for token in wanted {
        assert!(
            has_token(printed, &token),
            "{token} not printed:\n{printed}"
        );
    }
    // The WAN namespace has a line of its own, as have the boxes' LAN namespaces.
    let wan = record
        .namespaces
        .iter()
        .find(|n| n.ends_with("-wan"))
        .expect("a WAN namespace");
    assert!(
        printed
            .lines()
            .any(|l| l.trim_start().starts_with("WAN") && has_token(l, wan)),
        "{printed}"
    );
    for n in &record.nodes {
        if let Some(lan_ns) = &n.lan_namespace {
            assert!(
                printed
                    .lines()
                    .any(|l| l.trim_start().starts_with(&format!("{}-lan ", n.name))
                        && has_token(l, lan_ns)),
                "{lan_ns}: {printed}"
            );
        }
    }
    for c in &record.commands {
        assert!(
            printed.contains(&format!("  {}\n", c.shell)),
            "{}: {} not printed",
            c.key,
            c.shell
        );
    }
}

/// The recorded keys are exactly the ones these tests run on the lab's carrier.
fn assert_known_keys(record: &LabRecord, carrier: LabCarrier) {
    let recorded: std::collections::BTreeSet<&str> =
        record.commands.iter().map(|c| c.key.as_str()).collect();
    let known: std::collections::BTreeSet<&str> = fetch_keys(carrier)
        .into_iter()
        .chain(push_keys(carrier))
        .collect();
    assert_eq!(
        recorded, known,
        "a printed command no test runs, or the reverse"
    );
}

/// A metrics document of a box, as the printed command reads it: Prometheus text with the
/// box's build, its tunnel state and its certificate.
fn assert_metrics(commands: &Commands, key: &str, role: &str, serial_subject: &str) {
    let text = commands.text(key);
    assert!(
        text.lines().any(|l| l.starts_with("renkei_build_info{")
            && l.contains(&format!("role=\"{role}\""))
            && l.ends_with(" 1")),
        "{key}:\n{text}"
    );
    assert!(
        text.contains("renkei_tunnel_state{state=\"up\"} 1"),
        "{key}:\n{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("renkei_certificate_expiry_seconds{")
                && l.contains("role=\"box_chain\"")
                && l.contains(serial_subject)),
        "{key}:\n{text}"
    );
}

/// A fetch from the viewer PC that the test holds open: the transfer stops once the pipe to
/// the test is full, so every leg of the chain stays open until [`HeldFetch::finish`] reads it.
struct HeldFetch {
    child: std::process::Child,
}

impl HeldFetch {
    fn start(shell: &str) -> HeldFetch {
        let child = Command::new("sh")
            .args(["-c", shell])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the held fetch");
        HeldFetch { child }
    }

    /// Reads the whole document; returns it with the time its last byte arrived.
    fn finish(mut self) -> (Vec<u8>, Instant) {
        let mut body = Vec::new();
        self.child
            .stdout
            .take()
            .expect("stdout")
            .read_to_end(&mut body)
            .expect("read the fetch");
        let arrived = Instant::now();
        let status = wait_until(COMMAND_TIMEOUT, "the held fetch to end", || {
            self.child.try_wait().ok().flatten()
        })
        .expect("the held fetch ends");
        let mut err = String::new();
        if let Some(mut stderr) = self.child.stderr.take() {
            let _ = stderr.read_to_string(&mut err);
        }
        assert!(status.success(), "held fetch: {status}: {err}");
        (body, arrived)
    }
}

impl Drop for HeldFetch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status pages, read with the printed commands (logged in with the printed password,
/// over HTTPS verified against the lab CA): `(clinic, dc, hospital)`.
fn pages(commands: &Commands) -> (Value, Value, Value) {
    (
        json(commands, "status-page-clinic"),
        json(commands, "status-page-dc"),
        json(commands, "status-page-hospital"),
    )
}

#[test]
fn net1_net7_log1_ops3_ops4_lab_demo_fetch_on_demand_and_every_printed_command() {
    require_root!();
    lab_demo_fetch_and_every_printed_command(LabCarrier::WireGuard);
}

#[test]
fn net9_net1_log1_ops3_ops4_lab_demo_on_a_closed_network_fetch_and_every_printed_command() {
    require_root!();
    lab_demo_fetch_and_every_printed_command(LabCarrier::Closed);
}

#[test]
fn net9_net10_net1_net7_log1_ops3_ops4_lab_demo_over_ipsec_fetch_and_every_printed_command() {
    require_root!();
    lab_demo_fetch_and_every_printed_command(LabCarrier::Ipsec);
}

/// The IPsec lab before any fetch, as its printed commands show it: the on-demand clinic has
/// no SA (NET-7), so the concentrator has installed a route to the always-on hospital's own
/// address only.
fn assert_ipsec_view_before_a_fetch(commands: &Commands) {
    assert_eq!(clinic_peer_state(commands, LabCarrier::Ipsec), "idle");
    let routes = commands.text("hub-routes");
    assert!(
        has_token(&routes, Node::Hospital.ipsec_address()),
        "no route to the hospital's SA:\n{routes}"
    );
    assert!(
        !has_token(&routes, Node::Clinic.ipsec_address()),
        "a route to the clinic before it asked for its SA:\n{routes}"
    );
}

/// NET-7: the IPsec clinic's SA is deleted by its box after the 10 s idle time, not before,
/// and the concentrator's route to the clinic goes with it.
fn assert_clinic_sa_idles_out(commands: &Commands, record: &LabRecord, last_byte: Instant) {
    wait_until(
        Duration::from_secs(30),
        "the clinic's SA to idle out",
        || (clinic_peer_state(commands, LabCarrier::Ipsec) == "idle").then_some(()),
    )
    .expect("clinic idle");
    let idle_after = last_byte.elapsed();
    assert!(
        idle_after >= Duration::from_secs(8),
        "idled out {idle_after:?} after the last byte"
    );
    let clinic = record.node("clinic").expect("clinic");
    wait_until(
        Duration::from_secs(10),
        "the concentrator's route to the clinic to go",
        || {
            let routes = commands.text("hub-routes");
            (!has_token(&routes, &clinic.link_address)).then_some(())
        },
    )
    .expect("no route to the idle clinic");
}

/// The WireGuard lab before any fetch, as its printed commands show it: the clinic's tunnel
/// idle (NET-7), the hospital's up, and the hub's peers as `wg` reads them.
fn assert_wireguard_view_before_a_fetch(commands: &Commands, record: &LabRecord) {
    let hub = record.node("dc").expect("hub");
    let hospital = record.node("hospital").expect("hospital");
    let clinic = record.node("clinic").expect("clinic");
    assert_eq!(clinic_peer_state(commands, LabCarrier::WireGuard), "idle");
    let text = commands.text("clinic-tunnel");
    assert!(
        text.contains("peer: dc ") && text.contains("  state: idle"),
        "{text}"
    );
    let text = commands.text("hospital-status");
    assert!(text.contains("  state: up (session established)"), "{text}");
    // The hub's WireGuard peers, read by `wg` over the daemon's userspace API: the hospital
    // has shaken hands, the clinic never has.
    let key = |n: &renkei_lab::demo::NodeRecord| {
        n.wireguard_public_key
            .clone()
            .unwrap_or_else(|| panic!("{}: no WireGuard key in lab.json", n.name))
    };
    let wg = commands.text("hub-peers");
    assert!(
        wg.contains(&format!("interface: {}", hub.interface)),
        "{wg}"
    );
    assert!(wg.contains(&format!("public key: {}", key(hub))), "{wg}");
    let section = |key: &str| {
        wg.split("\n\n")
            .find(|s| s.contains(&format!("peer: {key}")))
            .unwrap_or_else(|| panic!("no peer {key} in:\n{wg}"))
            .to_string()
    };
    let hospital_peer = section(&key(hospital));
    assert!(
        hospital_peer.contains("allowed ips: 198.19.0.10/32"),
        "{wg}"
    );
    assert!(hospital_peer.contains("endpoint: 198.18.0.10:"), "{wg}");
    assert!(hospital_peer.contains("latest handshake: "), "{wg}");
    let clinic_peer = section(&key(clinic));
    assert!(clinic_peer.contains("allowed ips: 198.19.0.20/32"), "{wg}");
    assert!(!clinic_peer.contains("latest handshake"), "{wg}");
}

/// The closed-network lab as its printed commands show it (NET-9): no tunnel, keys or
/// WireGuard sockets anywhere; each box's link on its WAN interface; the on-demand clinic has
/// nothing to bring up; the hub's link is up without probing; the data centre routes each
/// facility's /24 through the carrier's router; the hospital's probe reaches the data
/// centre's health endpoint.
fn assert_closed_view(commands: &Commands, record: &LabRecord, printed: &str) {
    let hub = record.node("dc").expect("hub");
    let hospital = record.node("hospital").expect("hospital");
    let clinic = record.node("clinic").expect("clinic");
    assert!(record.wireguard_sockets.is_empty(), "{record:#?}");
    for n in &record.nodes {
        assert_eq!(n.tunnel_address, None, "{n:#?}");
        assert_eq!(n.wireguard_public_key, None, "{n:#?}");
        assert_eq!(n.interface, "wan0", "{n:#?}");
        assert_eq!(n.link_address, n.wan_address, "{n:#?}");
    }
    assert_eq!(clinic.idle_timeout_secs, None, "{clinic:#?}");
    for absent in ["198.19.", "wg show", "tunnel connect", "WireGuard"] {
        assert!(!printed.contains(absent), "{absent:?} printed:\n{printed}");
    }
    let link = Node::dc_link_name(LabCarrier::Closed);

    let clinic_json = json(commands, "clinic-tunnel-json");
    assert_eq!(clinic_json["tunnel"]["kind"], "closed", "{clinic_json:#}");
    assert_eq!(peer(&clinic_json, link)["state"], "idle", "{clinic_json:#}");
    let text = commands.text("clinic-tunnel");
    assert!(
        text.contains(&format!(
            "tunnel: idle on_demand on wan0 ({}/24)\n",
            clinic.link_address
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "peer: {link}\n  state: idle (on demand: nothing to bring up, not probed)"
        )),
        "{text}"
    );
    let text = commands.text("hospital-status");
    assert!(
        text.contains(&format!(
            "peer: {link}\n  state: up (the data centre answered the probe)"
        )),
        "{text}"
    );
    let text = commands.text("hub-link");
    assert!(text.contains("facility: lab dc (hub)"), "{text}");
    assert!(
        text.contains(&format!(
            "tunnel: up always_on on wan0 ({}/24)\n",
            hub.link_address
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "peer: {link}\n  state: up (no probe endpoint: facilities dial this box"
        )),
        "{text}"
    );
    let routes = commands.text("hub-routes");
    for site in [Node::Hospital, Node::Clinic] {
        let route = format!(
            "{} via {} dev wan0",
            site.closed_prefix(),
            Node::Hub.closed_gateway()
        );
        assert!(routes.contains(&route), "{route:?} not in:\n{routes}");
    }
    assert!(!routes.contains("default"), "{routes}");
    let probe = commands.text("hospital-probe");
    assert_eq!(
        probe.trim(),
        format!(
            "the data centre answered on {}:{}",
            hub.link_address,
            renkei_lab::lab::DC_PROBE_PORT
        )
    );
    assert_eq!(hospital.link_address, Node::Hospital.closed_address());
}

/// `lab up` on `carrier` and every command it prints, run as printed: the document fetch
/// through the chain, the boxes' states, metrics, pages and doors, and `lab down`.
fn lab_demo_fetch_and_every_printed_command(carrier: LabCarrier) {
    let wireguard = carrier == LabCarrier::WireGuard;
    let on_demand = carrier != LabCarrier::Closed;
    let dir = LabDir::new(&format!("fetch-{}", carrier.name()));
    let mut args = vec!["--carrier", carrier.name()];
    if on_demand {
        args.extend(["--clinic-idle-timeout", "10"]);
    }
    let (printed, record) = dir.up(&args);
    assert_eq!(record.carrier, carrier.name());
    let first = printed
        .lines()
        .find(|l| l.starts_with("renkei lab "))
        .unwrap_or_default();
    assert!(
        first.contains(&format!("(carrier: {})", carrier.name())),
        "{printed}"
    );
    assert_up(&record);
    assert_known_keys(&record, carrier);
    assert_summary_lists_everything(&printed, &record);
    for addr in record
        .nodes
        .iter()
        .flat_map(|n| {
            [
                Some(&n.wan_address),
                Some(&n.link_address),
                n.tunnel_address.as_ref(),
                n.lan_address.as_ref(),
            ]
        })
        .flatten()
        .chain(record.clients.iter().map(|c| &c.address))
    {
        assert!(in_benchmark_range(addr), "{addr}");
    }
    let commands = Commands::new(&record);
    let server = record.document_server.as_ref().expect("document server");
    let hub = record.node("dc").expect("hub");
    let hospital = record.node("hospital").expect("hospital");
    let link = Node::dc_link_name(carrier);

    let text = commands.text("clinic-tunnel");
    assert!(text.contains("facility: lab clinic (viewing)"), "{text}");
    match carrier {
        LabCarrier::WireGuard => assert_wireguard_view_before_a_fetch(&commands, &record),
        LabCarrier::Closed => assert_closed_view(&commands, &record, &printed),
        LabCarrier::Ipsec => assert_ipsec_view_before_a_fetch(&commands),
    }
    // The always-on hospital, with its inbound service on its link address and nothing
    // proxied yet.
    let text = commands.text("hospital-status");
    assert!(
        text.contains("facility: lab hospital (disclosing)"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "service: documents inbound {}:8443 -> 198.18.10.2:8080",
            hospital.link_address
        )),
        "{text}"
    );
    assert!(text.contains("0 active (max 256), 0 total"), "{text}");
    // OPS-4: the operator reads each always-on box's metrics across the carrier.
    assert_metrics(&commands, "metrics-dc", "hub", &hub.tls_identity);
    assert_metrics(
        &commands,
        "metrics-hospital",
        "disclosing",
        &hospital.tls_identity,
    );

    // A document from the clinic LAN arrives intact from the hospital's server (NET-1).
    let summary = &server.documents[0];
    let fetched = commands.run("fetch-document");
    let on_disk = std::fs::read(server.dir.join(&summary.name)).expect("hospital's file");
    assert_eq!(sha256_hex(&fetched), sha256_hex(&on_disk));
    assert_eq!(sha256_hex(&fetched), summary.sha256);
    // The 8 MiB imaging file too, checksummed as the printed pipeline does.
    let imaging = server.documents.last().expect("imaging");
    let piped = commands.text("fetch-imaging-checksum");
    let copy = commands.text("hospital-checksum");
    assert_eq!(
        piped.split_whitespace().next(),
        Some(imaging.sha256.as_str())
    );
    assert_eq!(
        copy.split_whitespace().next(),
        Some(imaging.sha256.as_str())
    );

    // NET-7: the fetch opened the clinic's tunnel (or IPsec SA); a closed network had nothing
    // to open.
    assert_eq!(
        clinic_peer_state(&commands, carrier),
        if on_demand { "up" } else { "idle" }
    );
    // LOG-1: every leg logged both fetches with the TLS peer's identity.
    for (node, service, identity) in [
        ("clinic", "documents", "hub.renkei.example"),
        ("dc", "portal", "clinic.renkei.example"),
        ("dc", "hospital-documents", "hospital.renkei.example"),
        ("hospital", "documents", "hub.renkei.example"),
    ] {
        let logged = wait_until(Duration::from_secs(10), "two access-log records", || {
            let all = records(&status_of(&record, node), service);
            (all.len() >= 2).then_some(all)
        })
        .unwrap_or_else(|e| panic!("{node} {service}: {e}"));
        assert_eq!(logged.len(), 2, "{node} {service}: {logged:#?}");
        for r in &logged {
            assert_eq!(r["result"], "ok", "{node} {service}: {r:#}");
            assert_eq!(r["peer_identity"], identity, "{node} {service}: {r:#}");
            assert_eq!(r["tls_version"], "TLSv1_3", "{node} {service}: {r:#}");
        }
    }
    let served = std::fs::read_to_string(&server.log).expect("document server log");
    assert_eq!(served.matches("\" 200").count(), 2, "{served}");

    // All three status pages show a fetch while it runs: a third one, from the viewer PC as
    // printed but for the imaging file, held open by the test (it reads nothing until the
    // pages are read, so every leg of the chain stays open). Each page shows the link it
    // carries up (on a closed network the on-demand clinic's stays idle: nothing to bring up),
    // the connection active, and the two finished fetches in its access log.
    let held_shell = commands
        .shell("fetch-document")
        .replace(&summary.name, &imaging.name);
    assert_ne!(held_shell, commands.shell("fetch-document"));
    let held = HeldFetch::start(&held_shell);
    let (clinic_page, dc_page, hospital_page) = wait_until(
        Duration::from_secs(30),
        "the pages to show the held fetch",
        || {
            let (c, d, h) = pages(&commands);
            let active = |page: &Value, name: &str| service(page, name)["active"].as_u64();
            (active(&c, "documents") == Some(1)
                && active(&d, "portal") == Some(1)
                && active(&d, "hospital-documents") == Some(1)
                && active(&h, "documents") == Some(1))
            .then_some((c, d, h))
        },
    )
    .expect("status pages during the fetch");
    let links: Vec<(&Value, &str, &str)> = match carrier {
        LabCarrier::WireGuard => vec![
            (&clinic_page, "dc", "up"),
            (&dc_page, "clinic", "up"),
            (&dc_page, "hospital", "up"),
            (&hospital_page, "dc", "up"),
        ],
        LabCarrier::Closed => vec![
            (&clinic_page, link, "idle"),
            (&dc_page, link, "up"),
            (&hospital_page, link, "up"),
        ],
        // The clinic's on-demand SA is up for the fetch.
        LabCarrier::Ipsec => vec![
            (&clinic_page, link, "up"),
            (&dc_page, link, "up"),
            (&hospital_page, link, "up"),
        ],
    };
    for (page, peer_name, state) in links {
        assert_eq!(peer(page, peer_name)["state"], state, "{page:#}");
    }
    for (page, service_name) in [
        (&clinic_page, "documents"),
        (&dc_page, "portal"),
        (&dc_page, "hospital-documents"),
        (&hospital_page, "documents"),
    ] {
        assert_eq!(records(page, service_name).len(), 2, "{page:#}");
    }
    for page in [&clinic_page, &hospital_page] {
        assert_eq!(page["tunnel"]["kind"], carrier.name(), "{page:#}");
    }
    // On IPsec the concentrator in front of the hub carries the SAs; the hub's own renkei has a
    // closed-network link on the data centre's inner address.
    let hub_kind = match carrier {
        LabCarrier::Ipsec => LabCarrier::Closed,
        other => other,
    };
    assert_eq!(dc_page["tunnel"]["kind"], hub_kind.name(), "{dc_page:#}");
    if on_demand {
        // The clinic's page: its on-demand tunnel (SA) is held open by the connection.
        assert_eq!(peer(&clinic_page, link)["holds"], 1, "{clinic_page:#}");
    }
    assert_eq!(clinic_page["role"], "viewing", "{clinic_page:#}");
    assert_eq!(dc_page["role"], "hub", "{dc_page:#}");
    assert_eq!(hospital_page["role"], "disclosing", "{hospital_page:#}");
    let (body, last_byte) = held.finish();
    assert_eq!(sha256_hex(&body), imaging.sha256);

    match carrier {
        LabCarrier::WireGuard => assert_clinic_tunnel_idles_out(&commands, last_byte),
        LabCarrier::Ipsec => assert_clinic_sa_idles_out(&commands, &record, last_byte),
        LabCarrier::Closed => {}
    }
    // The pages after the fetches: no page shows a connection any more, each has the three
    // fetches in its access log, and the always-on hospital stays up.
    let (clinic_page, dc_page, hospital_page) = pages(&commands);
    for (page, service_name) in [
        (&clinic_page, "documents"),
        (&dc_page, "portal"),
        (&dc_page, "hospital-documents"),
        (&hospital_page, "documents"),
    ] {
        assert_eq!(service(page, service_name)["active"], 0, "{page:#}");
        assert_eq!(records(page, service_name).len(), 3, "{page:#}");
    }
    assert_eq!(
        peer(&hospital_page, link)["state"],
        "up",
        "{hospital_page:#}"
    );
    // With IPv6 off in the lab, no box's TUN device makes up packets of its own (an IPv6 one
    // sends router solicitations), so none was dropped as coming from a foreign source.
    for page in [&clinic_page, &dc_page, &hospital_page] {
        assert_eq!(page["tunnel"]["drops"]["foreign_source"], 0, "{page:#}");
    }
    if wireguard {
        // The hub answers its peers and never initiates to them, so its page cannot know at
        // once that the clinic dropped its keys: it shows no handshake since the fetch, and
        // idle once that session is 180 s old (the policy's unit test
        // `passive_session_ends_at_its_lifetime_unless_the_peer_handshakes_again`).
        let clinic_dc = peer(&clinic_page, "dc");
        assert_eq!(clinic_dc["state"], "idle", "{clinic_page:#}");
        assert_eq!(
            clinic_dc["backend"]["wireguard"]["session_keys_present"], false,
            "{clinic_page:#}"
        );
        assert_eq!(clinic_dc["holds"], 0, "{clinic_page:#}");
        let dc_clinic = peer(&dc_page, "clinic");
        assert_eq!(dc_clinic["holds"], 0, "{dc_page:#}");
        assert!(
            dc_clinic["last_reached_age_secs"]
                .as_u64()
                .is_some_and(|age| age >= 8),
            "{dc_page:#}"
        );
    }
    // The doors a browser on the host uses reach the same boxes, logged in with the same
    // passwords (the HTTPS pages verified against the lab CA for 127.0.0.1).
    for (page, key) in [
        (&clinic_page, "browser-clinic"),
        (&dc_page, "browser-dc"),
        (&hospital_page, "browser-hospital"),
    ] {
        let through_door = json(&commands, key);
        for field in ["facility", "role"] {
            assert_eq!(through_door[field], page[field], "{key}: {through_door:#}");
        }
    }
    for node in &record.nodes {
        let url = &node.status_page.browser_url;
        assert!(url.contains("://127.0.0.1:"), "{url}");
    }

    // The printed `lab down` removes everything.
    let down = commands.text("down");
    assert!(
        down.contains(&format!("lab {} removed", record.id)),
        "{down}"
    );
    assert_gone(&record, &dir.dir);
    let ran = commands.ran();
    let wanted: std::collections::BTreeSet<String> =
        fetch_keys(carrier).into_iter().map(String::from).collect();
    assert_eq!(ran, wanted, "commands run");
}

/// NET-7: the WireGuard clinic's tunnel closes by itself after its 10 s idle time, not before,
/// and its printed status says why.
fn assert_clinic_tunnel_idles_out(commands: &Commands, last_byte: Instant) {
    wait_until(
        Duration::from_secs(30),
        "the clinic's tunnel to idle out",
        || (clinic_peer_state(commands, LabCarrier::WireGuard) == "idle").then_some(()),
    )
    .expect("clinic idle");
    let idle_after = last_byte.elapsed();
    assert!(
        idle_after >= Duration::from_secs(8),
        "idled out {idle_after:?} after the last byte"
    );
    let text = commands.text("clinic-tunnel");
    assert!(
        text.contains("  state: idle (idle timeout: session dropped)"),
        "{text}"
    );
}

#[test]
fn lab_up_twice_or_after_a_crash_removes_the_old_lab_first() {
    require_root!();
    let dir = LabDir::new("again");
    let (_, first) = dir.up(&[]);
    assert_up(&first);

    // `lab up` while a lab is up: the old one goes, a new one comes.
    let (printed, second) = dir.up(&[]);
    assert!(
        printed.contains(&format!("removed lab {}", first.id)),
        "{printed}"
    );
    assert_ne!(first.id, second.id);
    assert!(leftovers(&first).is_empty(), "{:?}", leftovers(&first));
    assert_up(&second);

    // A crash: the keeper dies without removing anything; the daemons and namespaces stay.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(second.keeper.pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the keeper");
    wait_until(Duration::from_secs(10), "the keeper to die", || {
        (!second.keeper.alive()).then_some(())
    })
    .expect("keeper dead");
    assert!(second.nodes.iter().all(|n| n.process.alive()));
    let (printed, third) = dir.up(&[]);
    assert!(printed.contains(&format!("removed lab {}", second.id)));
    assert!(leftovers(&second).is_empty(), "{:?}", leftovers(&second));
    assert_up(&third);

    // A lab that still runs but whose lab.json is gone (deleted by hand, `cargo clean`): the
    // next `lab up` finds its keeper by its command line and has it remove its lab.
    std::fs::remove_file(LabRecord::path(&dir.dir)).expect("remove lab.json");
    let (printed, fourth) = dir.up(&[]);
    assert!(
        printed.contains(&format!(
            "removed the lab of keeper {}, still running without a record",
            third.keeper.pid
        )),
        "{printed}"
    );
    assert!(!third.keeper.alive());
    assert!(leftovers(&third).is_empty(), "{:?}", leftovers(&third));
    assert_up(&fourth);

    dir.down();
    assert_gone(&fourth, &dir.dir);
    // A second `lab down` has nothing to do and says so.
    let again = dir.lab("down", &[]);
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to remove"));
}

#[test]
fn auth2_log2_lab_demo_config_push_to_the_on_demand_clinic() {
    require_root!();
    lab_demo_config_push_to_the_clinic(LabCarrier::WireGuard);
}

#[test]
fn net9_auth2_log2_lab_demo_config_push_to_the_clinic_on_a_closed_network() {
    require_root!();
    lab_demo_config_push_to_the_clinic(LabCarrier::Closed);
}

#[test]
fn net9_net10_auth2_log2_lab_demo_config_push_to_the_on_demand_clinic_over_ipsec() {
    require_root!();
    lab_demo_config_push_to_the_clinic(LabCarrier::Ipsec);
}

/// The printed config push to the on-demand clinic on `carrier`, step by step as printed.
fn lab_demo_config_push_to_the_clinic(carrier: LabCarrier) {
    let dir = LabDir::new(&format!("push-{}", carrier.name()));
    let (printed, record) = dir.up(&["--carrier", carrier.name()]);
    assert_up(&record);
    let push = record
        .config_push
        .clone()
        .expect("lab.json has the example push");
    let clinic = record.node("clinic").expect("clinic").clone();
    let commands = Commands::new(&record);

    // Printed as recorded, in the order to follow, every one a real command, numbered from 1.
    let keys: Vec<&str> = push_keys(carrier)
        .into_iter()
        .filter(|k| !["clinic-tunnel-json", "down"].contains(k))
        .collect();
    let mut at = 0;
    for (step, key) in (1..).zip(&keys) {
        let command = record.command(key).unwrap_or_else(|| panic!("no {key}"));
        assert!(!command.argv.is_empty(), "{key}: {command:?}");
        assert!(
            command.what.contains(&format!("step {step}: ")),
            "{key}: {command:?}"
        );
        let found = printed[at..]
            .find(&format!("  {}\n", command.shell))
            .unwrap_or_else(|| panic!("{key} not printed after the previous step:\n{printed}"));
        at += found;
    }
    let push_shell = &record.command("push-config").expect("push").shell;
    for part in [
        "ip netns exec ".to_string(),
        format!(
            " push --to {}:7443 --server-name clinic.renkei.example --cert ",
            clinic.link_address
        ),
        " --wait-secs 60 ".to_string(),
    ] {
        assert!(
            push_shell.contains(part.as_str()),
            "{part:?} not in {push_shell}"
        );
    }
    assert!(printed.contains(&push.config.display().to_string()));
    assert!(push.signature.exists(), "{}", push.signature.display());
    assert_eq!(push.version, push.running_version + 1);

    // The clinic is on demand and nothing has asked for its link. On WireGuard (and IPsec) the
    // operator cannot reach it until the box connects; a closed network routes to it all the
    // same.
    assert_eq!(clinic_peer_state(&commands, carrier), "idle");
    let before = status_of(&record, "clinic")["config"].clone();
    assert_eq!(before["version"], push.running_version, "{before:#}");

    if carrier != LabCarrier::Closed {
        let connected = commands.text("clinic-connect");
        assert_eq!(connected.trim(), "ok");
        assert_eq!(clinic_peer_state(&commands, carrier), "up");
    }

    // AUTH-2: the operator's certificate and signed, newer config are accepted.
    let answers = json_answers(&commands.run("push-config"));
    let answer = answers.first().expect("push answer");
    assert_eq!(answer["state"], "pending", "{answers:#?}");
    assert_eq!(answer["version"], push.version, "{answers:#?}");
    let pending = status_of(&record, "clinic")["config"].clone();
    assert_eq!(pending["state"], "pending", "{pending:#}");
    assert_eq!(pending["version"], push.version, "{pending:#}");

    let answers = json_answers(&commands.run("confirm-config"));
    let answer = answers.first().expect("confirm answer");
    assert_eq!(answer["state"], "confirmed", "{answers:#?}");
    assert_eq!(answer["version"], push.version, "{answers:#?}");

    let answers = json_answers(&commands.run("show-config"));
    let remote = answers.first().expect("remote answer");
    assert_eq!(remote["version"], push.version, "{remote:#}");
    assert_eq!(remote["state"], "confirmed", "{remote:#}");

    // The clinic itself, over its control socket, as the printed status command reads it.
    let status = json(&commands, "clinic-tunnel-json");
    let state = &status["config"];
    assert_eq!(state["version"], push.version, "{state:#}");
    assert_eq!(state["state"], "confirmed", "{state:#}");
    assert_eq!(state["signer"], push.signer.as_str(), "{state:#}");
    assert_eq!(state["description"], push.description.as_str(), "{state:#}");
    assert_eq!(state["pushed_by"], "operator.renkei.example", "{state:#}");
    assert_eq!(status["config_version"], push.version, "{status:#}");
    assert_eq!(remote["sha256"], state["sha256"], "{remote:#}");
    // The box runs exactly the signed file.
    assert_eq!(
        std::fs::read(&clinic.config).expect("clinic config"),
        std::fs::read(&push.config).expect("pushed config")
    );

    // LOG-2: received, applied and confirmed are logged with the version (and the signer).
    let log = std::fs::read_to_string(&clinic.log).expect("clinic log");
    for event in ["received", "applied", "confirmed"] {
        assert!(
            log.lines()
                .any(|l| l.contains(&format!("event=\"{event}\""))
                    && l.contains(&format!("version={}", push.version))
                    && (event == "confirmed" || l.contains(&push.signer))),
            "no {event} line with version and signer in:\n{log}"
        );
    }

    // AUTH-2: the same push again is a replay, refused, and the clinic keeps what it runs.
    let again = commands.output("push-config");
    assert!(!again.status.success(), "a replayed push was accepted");
    let answers = json_answers(&again.stdout);
    assert_eq!(
        answers.first().map(|a| a["error"].clone()),
        Some(Value::from("not_newer")),
        "{answers:#?}"
    );
    let after = status_of(&record, "clinic")["config"].clone();
    assert_eq!(after["version"], push.version, "{after:#}");
    assert_eq!(after["state"], "confirmed", "{after:#}");
    // LOG-2: the refusal is logged with why and what runs.
    let log = std::fs::read_to_string(&clinic.log).expect("clinic log");
    assert!(
        log.lines().any(|l| l.contains("event=\"refused\"")
            && l.contains("not_newer")
            && l.contains(&format!("running_version={}", push.version))),
        "no refused line with the reason in:\n{log}"
    );

    let down = commands.text("down");
    assert!(
        down.contains(&format!("lab {} removed", record.id)),
        "{down}"
    );
    assert_gone(&record, &dir.dir);
    let ran = commands.ran();
    let wanted: std::collections::BTreeSet<String> =
        push_keys(carrier).into_iter().map(String::from).collect();
    assert_eq!(ran, wanted, "commands run");
}

/// `renkei` for the keeper, through a script that holds the clinic's daemon at its start
/// until the test says go (bounded: it goes on by itself after 60 s).
fn holding_wrapper(dir: &std::path::Path) -> std::path::PathBuf {
    let real = renkei_lab::daemon::renkei_bin().expect("renkei built");
    let wrapper = dir.join("renkei-holding-clinic");
    let script = format!(
        r#"#!/bin/sh
case "$*" in
  *"run --config "*/clinic/renkei.toml*)
    : > '{hook}/clinic-starting'
    i=0
    while [ ! -e '{hook}/go' ] && [ "$i" -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
    ;;
esac
exec '{real}' "$@"
"#,
        hook = dir.display(),
        real = real.display()
    );
    std::fs::write(&wrapper, script).expect("wrapper");
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod wrapper");
    wrapper
}

#[test]
fn lab_up_after_a_crash_while_starting_ends_the_daemon_it_never_recorded() {
    require_root!();
    let dir = LabDir::new("crash-start");
    let hook = dir.dir.join("hook");
    std::fs::create_dir_all(&hook).expect("hook folder");
    let wrapper = holding_wrapper(&hook);

    // `lab up` whose keeper is about to start the clinic's daemon...
    let mut up = dir.command("up", &[]);
    up.env("RENKEI_BIN", &wrapper)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut up = up.spawn().expect("lab up");
    wait_until(
        Duration::from_secs(120),
        "the clinic's daemon to start",
        || hook.join("clinic-starting").exists().then_some(()),
    )
    .expect("the keeper starts the clinic");
    // ... and a crash: `lab up` and its keeper die; the daemon they were starting runs on,
    // recorded nowhere.
    let starting = LabRecord::read(&dir.dir)
        .expect("lab.json")
        .expect("the keeper recorded the lab as starting");
    assert_eq!(starting.state, "starting");
    let _ = up.kill();
    let _ = up.wait();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(starting.keeper.pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the keeper");
    wait_until(Duration::from_secs(10), "the keeper to die", || {
        (!starting.keeper.alive()).then_some(())
    })
    .expect("keeper dead");
    std::fs::write(hook.join("go"), b"").expect("go");
    let clinic_run = starting.lab_dir.join("clinic").join("run");
    wait_until(
        Duration::from_secs(30),
        "the orphaned clinic daemon",
        || renkei::control_socket::request(&clinic_run, "status").ok(),
    )
    .expect("the unrecorded clinic daemon answers");
    let crashed = LabRecord::read(&dir.dir)
        .expect("lab.json")
        .expect("record");
    assert_eq!(crashed.state, "starting");
    assert!(
        crashed.nodes.iter().all(|n| n.name != "clinic"),
        "{crashed:#?}"
    );
    let recorded: Vec<u32> = crashed.processes().iter().map(|p| p.pid).collect();
    let orphans: Vec<u32> = processes_using(&crashed.lab_dir)
        .into_iter()
        .filter(|p| !recorded.contains(p))
        .collect();
    assert!(
        !orphans.is_empty(),
        "no unrecorded process of the crashed lab"
    );

    // The next `lab up` removes the crashed lab, the daemon it never recorded included.
    let (printed, next) = dir.up(&[]);
    assert!(
        printed.contains(&format!("removed lab {}", crashed.id)),
        "{printed}"
    );
    assert!(leftovers(&crashed).is_empty(), "{:?}", leftovers(&crashed));
    assert_eq!(processes_using(&crashed.lab_dir), Vec::<u32>::new());
    for pid in orphans {
        assert!(
            renkei_lab::demo::start_time(pid).is_none(),
            "process {pid} of the crashed lab still runs"
        );
    }
    let listed = namespaces_now();
    for ns in &crashed.namespaces {
        assert!(!listed.contains(ns.as_str()), "{ns} still there:\n{listed}");
    }
    assert_up(&next);
    dir.down();
    assert_gone(&next, &dir.dir);
}

/// Kills its process and deletes its namespace when dropped.
struct StaleLab {
    namespace: String,
    /// Stands for the process that made the lab, alive while the lab is staged.
    creator: std::process::Child,
    sleeper: std::process::Child,
}

impl Drop for StaleLab {
    fn drop(&mut self) {
        let _ = self.creator.kill();
        let _ = self.creator.wait();
        let _ = self.sleeper.kill();
        let _ = self.sleeper.wait();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.namespace])
            .output();
    }
}

fn base36(mut n: u32) -> String {
    let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(digits[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("ascii")
}

#[test]
fn a_new_lab_ends_the_processes_of_a_crashed_one_before_deleting_its_namespaces() {
    require_root!();
    // A lab made by a process that is gone, with a process still inside its namespace. Its
    // creator lives until the lab is staged: the tests running beside this one make labs too,
    // and would remove a stale lab before this test has seen its process inside.
    let creator = Command::new("sleep").arg("600").spawn().expect("sleep");
    let id = format!("{}0", base36(creator.id()));
    let namespace = format!("rk{id}-dc");
    let folder = std::env::temp_dir().join(format!("renkei-lab-{id}"));
    let added = Command::new("ip")
        .args(["netns", "add", &namespace])
        .output()
        .expect("ip netns add");
    assert!(added.status.success(), "{added:?}");
    std::fs::create_dir_all(&folder).expect("stale lab folder");
    let mut stale = StaleLab {
        creator,
        sleeper: Command::new("ip")
            .args(["netns", "exec", &namespace, "sleep", "600"])
            .stdin(Stdio::null())
            .spawn()
            .expect("a process in the stale namespace"),
        namespace: namespace.clone(),
    };
    wait_until(Duration::from_secs(10), "the sleeper inside", || {
        (!renkei_lab::netns::pids_in(&namespace).is_empty()).then_some(())
    })
    .expect("a process inside the stale namespace");
    // Now the creator is gone and the lab stale (a lab made beside this test may be the one to
    // remove it; the checks below hold either way).
    stale.creator.kill().expect("end the creator");
    stale.creator.wait().expect("reap the creator");

    let lab = renkei_lab::Lab::new().expect("lab");
    let exited = wait_until(Duration::from_secs(10), "the stale process to end", || {
        stale.sleeper.try_wait().ok().flatten()
    })
    .expect("the stale lab's process was ended");
    assert!(!exited.success(), "ended by a signal: {exited:?}");
    assert!(
        !namespaces_now()
            .lines()
            .any(|l| l.split_whitespace().next() == Some(namespace.as_str())),
        "{namespace} still there"
    );
    assert!(!folder.exists(), "{}", folder.display());
    drop(lab);
}

/// The namespaces of the labs that process `pid` made (`rk<pid in base 36><n>-...`).
fn labs_of(pid: u32) -> Vec<String> {
    namespaces_now()
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| renkei_lab::lab::lab_id(name).is_some_and(|(_, owner)| owner == pid))
        .map(str::to_string)
        .collect()
}

/// A benchmark stopped by a signal (by hand, or by `timeout`) removes its labs on the way out,
/// the processes inside them first: nothing is left for the next lab to find.
#[test]
fn a_benchmark_stopped_by_sigterm_leaves_no_lab_behind() {
    require_root!();
    /// Kills the benchmark and removes what it left if the test ends early.
    struct Benchmark(std::process::Child);
    impl Drop for Benchmark {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
            renkei_lab::lab::remove_stale_labs();
        }
    }
    let mut benchmark = Benchmark(
        Command::new(env!("CARGO_BIN_EXE_lab"))
            .args(["bench-tunnel", "60", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("lab bench-tunnel"),
    );
    let pid = benchmark.0.id();
    // Stopped once it runs something inside its lab; its namespaces are all made by then and
    // are told apart afterwards by inode (a process left in one that lost its name is no
    // longer listed by `ip netns pids`).
    let inodes = wait_until(
        Duration::from_secs(60),
        "a process in the benchmark's lab",
        || {
            let labs = labs_of(pid);
            labs.iter()
                .any(|name| !renkei_lab::netns::pids_in(name).is_empty())
                .then(|| {
                    labs.iter()
                        .filter_map(|name| renkei_lab::netns::inode_of(name))
                        .collect::<Vec<_>>()
                })
        },
    )
    .expect("a process in a lab namespace");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid")),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let status = wait_until(Duration::from_secs(60), "the benchmark to exit", || {
        benchmark.0.try_wait().ok().flatten()
    })
    .expect("exited");
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{status}");
    assert_eq!(labs_of(pid), Vec::<String>::new(), "namespaces left behind");
    let left: Vec<String> = renkei_lab::netns::live_processes_in(&inodes)
        .into_iter()
        .map(|(pid, command)| format!("{pid} {command}"))
        .collect();
    assert_eq!(
        left,
        Vec::<String>::new(),
        "processes left in the lab's namespaces"
    );
}

/// Kills the processes it holds if a test ends early: a namespace without a name cannot be
/// removed any other way than by ending the processes in it.
struct Processes(Vec<i32>);

impl Drop for Processes {
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// A process left in a namespace whose name was deleted (a lab removed by name while its
/// maker still started processes) is found by the namespace's inode and killed; so is a child
/// of the lab's process inside any namespace but its own (one on its way in when the name
/// went). Both are what a benchmark stopped by a signal sweeps up after removing its labs.
#[test]
fn processes_in_a_namespace_that_lost_its_name_are_killed_by_inode_or_as_children() {
    require_root!();
    let name = format!("renkei-test-stragglers-{}", std::process::id());
    let ns = renkei_lab::netns::Namespace::create(&name).expect("namespace");
    let inode = renkei_lab::netns::inode_of(&name).expect("its inode");

    // Not a child of anyone here: started by a shell that exits at once.
    let orphan: i32 = ns
        .exec(
            "sh",
            &["-c", "sleep 600 </dev/null >/dev/null 2>&1 & echo $!"],
        )
        .expect("a process in the namespace")
        .trim()
        .parse()
        .expect("its pid");
    // A child of a stand-in for the lab's process (`sh`), inside the namespace.
    let mut parent = Command::new("sh")
        .args(["-c", &format!("ip netns exec {name} sleep 600 & wait")])
        .stdout(Stdio::null())
        .spawn()
        .expect("sh");
    let parent_pid = parent.id();
    let mut guard = Processes(vec![orphan, i32::try_from(parent_pid).expect("pid")]);
    let child = wait_until(
        Duration::from_secs(10),
        "sh's child in the namespace",
        || {
            renkei_lab::netns::live_processes_in(&[inode])
                .into_iter()
                .map(|(pid, _)| pid)
                .find(|&pid| pid != orphan)
        },
    )
    .expect("the child");
    guard.0.push(child);

    drop(ns);
    assert!(
        !namespaces_now()
            .lines()
            .any(|line| line.split_whitespace().next() == Some(&name)),
        "the name is gone"
    );
    let mut both = vec![orphan, child];
    both.sort_unstable();
    let mut found: Vec<i32> = renkei_lab::netns::live_processes_in(&[inode])
        .into_iter()
        .map(|(pid, _)| pid)
        .collect();
    found.sort_unstable();
    assert_eq!(found, both, "both live on in the nameless namespace");

    // By children alone (no inode given): the child goes, the orphan stays.
    let left = renkei_lab::netns::kill_stragglers(&[], parent_pid, Duration::from_secs(10));
    assert_eq!(left, Vec::<i32>::new());
    let status = wait_until(
        Duration::from_secs(10),
        "sh to exit once its child is gone",
        || parent.try_wait().ok().flatten(),
    )
    .expect("sh exited");
    assert!(status.success(), "{status}");
    let found: Vec<i32> = renkei_lab::netns::live_processes_in(&[inode])
        .into_iter()
        .map(|(pid, _)| pid)
        .collect();
    assert_eq!(found, vec![orphan], "only the orphan is left");

    // By inode alone (a parent no process has; sh's pid may be reused by now): the orphan goes.
    let left = renkei_lab::netns::kill_stragglers(&[inode], u32::MAX, Duration::from_secs(10));
    assert_eq!(left, Vec::<i32>::new());
    assert_eq!(
        renkei_lab::netns::live_processes_in(&[inode]),
        Vec::new(),
        "none left"
    );
    guard.0.clear();
}
