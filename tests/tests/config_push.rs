//! Remote configuration push in the namespace lab (AUTH-2, LOG-2, AVL-1): the operator in the
//! data centre signs configs and pushes them with the real `renkei` binary through the hub's
//! tunnel to the hospital box's management API; the box checks, writes, applies, and confirms
//! or rolls back. Auto-confirm and the rollback of a config that cuts the box off run on a
//! closed network too (NET-9): there the push crosses the routed closed network to the box's
//! closed-network address, and the operator's request after the apply is the only proof.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use renkei::config::{Config, Direction, ManagementConfig, ServiceConfig};
use renkei_lab::boxconfig::{peer_mut, service, socket, to_toml, ConfigText};
use renkei_lab::chain::{chain_config, start_chain_with, viewer_connect};
use renkei_lab::lab::{LabCarrier, Peer, DOCUMENT_SERVER_ADDRESS, HUB_RELAY_ADDRESS};
use renkei_lab::logfields::{log_field, log_fields};
use renkei_lab::operator::{Operator, Outcome, MANAGEMENT_PORT};
use renkei_lab::pki::{Ca, LeafFiles};
use renkei_lab::tlstools::{fetch_document, pattern_sha256, run_bounded, DocumentServer};
use renkei_lab::{require_root, wait_until, Daemon, Lab, Node};
use serde_json::Value;

/// The hospital's second inbound service, added by a push.
const RECORDS_PORT: u16 = 8444;
/// `management.confirm_timeout_secs` of every config here (the smallest allowed).
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);
/// How much later than the confirm deadline a rollback may be observed (the supervisor's
/// restore and apply, the control socket poll).
const ROLLBACK_SLACK: Duration = Duration::from_secs(5);

/// The state of a facility's link to the data centre on the lab's carrier (`up`, `idle`, ...;
/// empty when unknown).
fn peer_state(lab: &Lab, daemon: &Daemon) -> String {
    daemon
        .peer(lab.dc_link_name())
        .ok()
        .and_then(|p| p["state"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Waits until the facility's link to the data centre is up: its tunnel's handshake on
/// WireGuard, its first answered probe on a closed network.
fn wait_tunnel_up(lab: &Lab, daemon: &Daemon, within: Duration) {
    wait_until(
        within,
        "the hospital's link to the data centre to be up",
        || (peer_state(lab, daemon) == "up").then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log_text()));
}

fn config_state(daemon: &Daemon) -> Value {
    daemon.status().expect("status")["config"].clone()
}

/// The `config` events of the status document (the same document as `/api/v1/status`).
fn config_events(daemon: &Daemon) -> Vec<Value> {
    daemon.status().expect("status")["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e["kind"] == "config")
        .collect()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The fingerprint boxes log as the signer of the operator's configs.
fn fingerprint(operator: &Operator) -> String {
    renkei::signing::OperatorKey::read(&operator.signing_public)
        .expect("operator public key")
        .fingerprint()
        .to_string()
}

/// The hospital's config at `version`, with a management API trusting `operator`.
fn hospital_config(lab: &Lab, operator: &Operator, version: u64) -> Config {
    let mut config = lab.full(Node::Hospital);
    config.meta.version = version;
    config.management = Some(operator.management(Node::Hospital, CONFIRM_TIMEOUT.as_secs(), false));
    config
}

/// The `[management]` section of a [`hospital_config`].
fn management(config: &mut Config) -> &mut ManagementConfig {
    config
        .management
        .as_mut()
        .expect("hospital_config has [management]")
}

/// `config` with the hospital's peer "dc" sending keepalives every `secs`: a change of
/// `[tunnel]` that restarts the tunnel.
fn with_keepalive(mut config: Config, secs: u16) -> Config {
    peer_mut(&mut config, "dc").persistent_keepalive_secs = Some(secs);
    config
}

/// `config` with `service` added.
fn with_service(mut config: Config, service: ServiceConfig) -> Config {
    config.services.push(service);
    config
}

/// An inbound service of the hospital on its tunnel address to the document server.
fn inbound_service(name: &str, port: u16) -> ServiceConfig {
    service(
        name,
        Direction::Inbound,
        socket(&format!("{}:{port}", Node::Hospital.tunnel_address())),
        DOCUMENT_SERVER_ADDRESS,
        Peer::Allowed(Node::Hub.tls_name()),
    )
}

/// The inbound "records" service (a push adds it).
fn records_service() -> ServiceConfig {
    inbound_service("records", RECORDS_PORT)
}

struct Setup {
    hub: Daemon,
    hospital: Daemon,
    documents: DocumentServer,
}

fn start(lab: &Lab, hospital: &(impl ConfigText + ?Sized)) -> Setup {
    let documents = DocumentServer::start(lab.lan_ns(Node::Hospital), DOCUMENT_SERVER_ADDRESS)
        .expect("document server");
    let hub = lab.start(Node::Hub, &lab.full(Node::Hub)).expect("hub");
    let hospital = lab.start(Node::Hospital, hospital).expect("hospital");
    wait_tunnel_up(lab, &hospital, Duration::from_secs(15));
    Setup {
        hub,
        hospital,
        documents,
    }
}

fn assert_pushed(outcome: &Outcome, version: u64, state: &str) {
    assert!(outcome.success, "push failed:\n{}", outcome.output);
    let answer = &outcome.answers[0];
    assert_eq!(answer["version"], version, "{}", outcome.output);
    assert_eq!(answer["state"], state, "{}", outcome.output);
}

fn renkei_check(path: &Path) -> bool {
    std::process::Command::new(renkei_lab::daemon::renkei_bin().expect("bin"))
        .arg("check")
        .arg("--config")
        .arg(path)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The hub box's own certificate: from the operator CA, but not the operator.
fn hub_box_certificate(lab: &Lab) -> LeafFiles {
    let tls = lab.tls_dir(Node::Hub);
    LeafFiles {
        cert: tls.join("box.crt"),
        key: tls.join("box.key"),
    }
}

fn as_client(client: &LeafFiles) -> Vec<(&'static str, String)> {
    vec![
        ("--cert", client.cert.display().to_string()),
        ("--key", client.key.display().to_string()),
    ]
}

/// The hospital's TUN device's interface index.
fn tun_index(lab: &Lab) -> u32 {
    lab.interface_index(Node::Hospital)
        .expect("the TUN device's index")
}

/// An open transfer on the untouched "documents" service: hub-side client -> hub outbound ->
/// hospital inbound -> document server, held after 1 MiB until `documents.release()`.
fn open_transfer(
    lab: &Lab,
    documents: &DocumentServer,
    len: u64,
) -> std::thread::JoinHandle<anyhow::Result<renkei_lab::tlstools::Fetched>> {
    documents.hold();
    let received = Arc::new(AtomicU64::new(0));
    let transfer = {
        let stream = lab
            .ns(Node::Hub)
            .tcp_connect(HUB_RELAY_ADDRESS, Duration::from_secs(10))
            .expect("connect to the hub's relay");
        let received = Arc::clone(&received);
        std::thread::spawn(move || {
            fetch_document(stream, len, 9, Some(1 << 20), |n| {
                received.store(n, Ordering::Relaxed)
            })
        })
    };
    wait_until(Duration::from_secs(20), "the transfer to start", || {
        (received.load(Ordering::Relaxed) >= 1 << 20).then_some(())
    })
    .expect("transfer started");
    transfer
}

#[test]
fn auth2_avl1_log2_push_and_confirm_add_a_service_while_an_open_transfer_survives() {
    require_root!();
    const LEN: u64 = 8 << 20;
    let lab = Lab::new().expect("lab");
    let operator = Operator::new(&lab).expect("operator");
    let setup = start(&lab, &hospital_config(&lab, &operator, 1));
    let transfer = open_transfer(&lab, &setup.documents, LEN);

    let v2 = with_service(hospital_config(&lab, &operator, 2), records_service());
    let signed = operator
        .write_signed("hospital-v2.toml", &v2, None)
        .expect("sign");
    let pushed = operator.push(&lab, Node::Hospital, &signed).expect("push");
    assert_pushed(&pushed, 2, "pending");
    let state = config_state(&setup.hospital);
    assert_eq!(state["state"], "pending", "{state}");
    assert!(
        state["pending"]["confirm_deadline_unix"].as_u64().is_some(),
        "{state}"
    );
    assert_eq!(
        std::fs::read_to_string(&setup.hospital.config).expect("read"),
        to_toml(&v2)
    );

    // The new service works, through an independent TLS client with the hub's identity.
    let tls = lab.tls_dir(Node::Hub);
    let (cert, key, ca) = (
        tls.join("box.crt").display().to_string(),
        tls.join("box.key").display().to_string(),
        tls.join("operator-ca.crt").display().to_string(),
    );
    let addr = format!("{}:{RECORDS_PORT}", Node::Hospital.tunnel_address());
    setup.documents.release();
    let fetched = run_bounded(
        lab.ns(Node::Hub),
        "openssl",
        &[
            "s_client",
            "-connect",
            &addr,
            "-CAfile",
            &ca,
            "-cert",
            &cert,
            "-key",
            &key,
            "-verify_return_error",
            "-servername",
            Node::Hospital.tls_name(),
            "-ign_eof",
        ],
        b"GET 16 7\n",
        Duration::from_secs(20),
    )
    .expect("s_client");
    assert!(
        fetched.output.contains("renkei-lab document 16"),
        "the pushed service did not serve:\n{}",
        fetched.output
    );

    let confirmed = operator
        .confirm(&lab, Node::Hospital, Some(2))
        .expect("confirm");
    assert!(confirmed.success, "{}", confirmed.output);
    assert_eq!(confirmed.answers[0]["state"], "confirmed");
    let state = config_state(&setup.hospital);
    assert_eq!(state["state"], "confirmed", "{state}");
    assert_eq!(state["version"], 2, "{state}");
    assert_eq!(state["pushed_by"], "operator.renkei.test", "{state}");
    let signer = state["signer"].as_str().expect("signer").to_string();
    assert_eq!(signer, fingerprint(&operator));

    // The transfer that was open during push, apply and confirm arrives whole.
    let fetched = transfer
        .join()
        .expect("thread")
        .expect("transfer survives the push");
    assert_eq!(fetched.len, LEN);
    assert_eq!(fetched.sha256, pattern_sha256(LEN, 9));
    assert!(renkei_check(&setup.hospital.config));

    // LOG-2: every step logged with version, signer and pusher.
    let log = setup.hospital.log_text();
    for event in ["received", "applied", "confirmed"] {
        assert!(
            log.lines()
                .any(|l| l.contains(&format!("event=\"{event}\""))
                    && l.contains("version=2")
                    && l.contains(&signer)
                    && l.contains("operator.renkei.test")),
            "no {event} line with version, signer and pusher in:\n{log}"
        );
    }
    drop(setup.hub);
}

#[test]
fn avl1_a_push_that_restarts_the_tunnel_keeps_its_device_an_open_transfer_and_its_answer() {
    require_root!();
    const LEN: u64 = 8 << 20;
    let lab = Lab::new().expect("lab");
    let operator = Operator::new(&lab).expect("operator");
    let setup = start(&lab, &hospital_config(&lab, &operator, 1));
    let index = tun_index(&lab);
    let transfer = open_transfer(&lab, &setup.documents, LEN);

    // Only the peer's keepalive changes: the tunnel restarts (new sessions), the TUN device
    // stays, and the push's own answer and read-back come back through it.
    let v2 = with_keepalive(hospital_config(&lab, &operator, 2), 20);
    let path = operator
        .write_signed("keepalive.toml", &v2, None)
        .expect("sign");
    let pushed = operator.push(&lab, Node::Hospital, &path).expect("push");
    assert_pushed(&pushed, 2, "pending");
    assert_eq!(
        pushed.answers.len(),
        2,
        "the read-back came too:\n{}",
        pushed.output
    );
    assert!(
        setup
            .hospital
            .log_text()
            .contains("tunnel restarted for the new config"),
        "{}",
        setup.hospital.log_text()
    );
    assert_eq!(tun_index(&lab), index, "the TUN device was kept");
    wait_tunnel_up(&lab, &setup.hospital, Duration::from_secs(15));
    assert_eq!(
        setup.hospital.peer("dc").expect("peer")["backend"]["wireguard"]
            ["persistent_keepalive_secs"],
        20
    );
    let confirmed = operator
        .confirm(&lab, Node::Hospital, Some(2))
        .expect("confirm");
    assert!(confirmed.success, "{}", confirmed.output);

    setup.documents.release();
    let fetched = transfer
        .join()
        .expect("thread")
        .expect("the transfer survives the tunnel restart");
    assert_eq!(fetched.len, LEN);
    assert_eq!(fetched.sha256, pattern_sha256(LEN, 9));
    drop(setup.hub);
}

#[test]
fn auth2_int1_refused_pushes_change_nothing() {
    require_root!();
    let lab = Lab::new().expect("lab");
    let operator = Operator::new(&lab).expect("operator");
    let original = to_toml(&hospital_config(&lab, &operator, 5));
    let setup = start(&lab, &original);
    let original_sha = config_state(&setup.hospital)["sha256"]
        .as_str()
        .expect("sha256")
        .to_string();
    assert_eq!(
        original_sha,
        renkei::control::persist::sha256_hex(original.as_bytes())
    );
    let unchanged = |what: &str| {
        assert_eq!(
            std::fs::read_to_string(&setup.hospital.config).expect("read"),
            original,
            "{what}: the config file changed"
        );
        let state = config_state(&setup.hospital);
        assert_eq!(state["version"], 5, "{what}: {state}");
        assert_eq!(state["state"], "confirmed", "{what}: {state}");
        assert_eq!(state["sha256"], original_sha, "{what}: {state}");
    };
    let refused = |name: &str, outcome: Outcome, code: &str| {
        assert!(!outcome.success, "{name} was accepted:\n{}", outcome.output);
        assert_eq!(
            outcome.error_code(),
            Some(code),
            "{name}:\n{}",
            outcome.output
        );
        unchanged(name);
        outcome
    };

    // Signed, then changed: the signature is over other bytes.
    let path = operator
        .write_signed("tampered.toml", &hospital_config(&lab, &operator, 6), None)
        .expect("sign");
    let changed = to_toml(&hospital_config(&lab, &operator, 6)) + "\n# changed\n";
    std::fs::write(&path, changed).expect("tamper");
    refused(
        "tampered",
        operator.push(&lab, Node::Hospital, &path).expect("push"),
        "bad_signature",
    );

    // No signature at all (renkei push always sends one: curl, with the operator's
    // certificate).
    let path = operator
        .write_signed("unsigned.toml", &hospital_config(&lab, &operator, 6), None)
        .expect("sign");
    let answer = operator
        .raw_request(
            &lab,
            Node::Hospital,
            ("POST", "/v1/config"),
            Some(&path),
            &[],
            Some(&operator.client),
        )
        .expect("curl");
    assert_eq!(answer.status, Some(403), "{}", answer.output);
    assert_eq!(
        answer.error_code(),
        Some("missing_signature"),
        "{}",
        answer.output
    );
    unchanged("unsigned");

    let (unknown, _) = operator.extra_signing_key("unknown").expect("key");
    let path = operator
        .write_signed(
            "unknown.toml",
            &hospital_config(&lab, &operator, 6),
            Some(&unknown),
        )
        .expect("sign");
    refused(
        "unknown key",
        operator.push(&lab, Node::Hospital, &path).expect("push"),
        "bad_signature",
    );

    for version in [5, 4] {
        let path = operator
            .write_signed("old.toml", &hospital_config(&lab, &operator, version), None)
            .expect("sign");
        let outcome = refused(
            "old version",
            operator.push(&lab, Node::Hospital, &path).expect("push"),
            "not_newer",
        );
        assert!(
            outcome
                .output
                .contains("not greater than the running version 5"),
            "{}",
            outcome.output
        );
    }

    // `renkei sign` refuses these two; a signature made without its checks must not get them
    // past the box either.
    let path = operator
        .write_signed_unchecked("malformed.toml", "[meta\nversion = 6\n")
        .expect("sign");
    let outcome = refused(
        "malformed",
        operator.push(&lab, Node::Hospital, &path).expect("push"),
        "invalid_config",
    );
    assert!(
        outcome.output.contains(":1:"),
        "no line:column in {}",
        outcome.output
    );

    let mut semantic = hospital_config(&lab, &operator, 6);
    management(&mut semantic).listen = socket("198.18.10.1:7443");
    let path = operator
        .write_signed_unchecked("semantic.toml", &semantic)
        .expect("sign");
    let outcome = refused(
        "semantic",
        operator.push(&lab, Node::Hospital, &path).expect("push"),
        "invalid_config",
    );
    assert!(
        outcome.output.contains("management.listen"),
        "{}",
        outcome.output
    );

    let mut huge = to_toml(&hospital_config(&lab, &operator, 6));
    huge.push_str(&format!("# {}\n", "x".repeat(300 * 1024)));
    let path = operator
        .write_signed("huge.toml", &huge, None)
        .expect("sign");
    refused(
        "oversized",
        operator.push(&lab, Node::Hospital, &path).expect("push"),
        "too_large",
    );

    let mut no_management = lab.full(Node::Hospital);
    no_management.meta.version = 6;
    let path = operator
        .write_signed("nomgmt.toml", &no_management, None)
        .expect("sign");
    refused(
        "no management",
        operator.push(&lab, Node::Hospital, &path).expect("push"),
        "no_management",
    );

    // A client certificate from another CA never gets past the TLS handshake.
    let stranger = Ca::new("not the operator")
        .and_then(|ca| ca.issue("operator.renkei.test"))
        .and_then(|leaf| leaf.write(&operator.dir, "stranger"))
        .expect("stranger");
    let path = operator
        .write_signed("good.toml", &hospital_config(&lab, &operator, 6), None)
        .expect("sign");
    let outcome = operator
        .push_with(&lab, Node::Hospital, &path, &as_client(&stranger))
        .expect("push");
    assert!(
        !outcome.success && outcome.answers.is_empty(),
        "{}",
        outcome.output
    );
    unchanged("foreign client certificate");

    // The same config from the operator is accepted: the refusals were about what they say.
    let accepted = operator.push(&lab, Node::Hospital, &path).expect("push");
    assert_pushed(&accepted, 6, "pending");
    let log = setup.hospital.log_text();
    assert!(
        log.matches("event=\"refused\"").count() >= 9,
        "every refusal is logged (LOG-2):\n{log}"
    );
    drop(setup.hub);
}

#[test]
fn auth4_log2_a_config_signed_for_another_box_or_for_none_is_refused_and_changes_nothing() {
    require_root!();
    let lab = Lab::new().expect("lab");
    let operator = Operator::new(&lab).expect("operator");
    let original = to_toml(&hospital_config(&lab, &operator, 5));
    let setup = start(&lab, &original);
    let original_sha = renkei::control::persist::sha256_hex(original.as_bytes());
    let signer = fingerprint(&operator);
    let refused = |what: &str, path: &Path, names: &str| {
        let outcome = operator.push(&lab, Node::Hospital, path).expect("push");
        assert!(!outcome.success, "{what} was accepted:\n{}", outcome.output);
        assert_eq!(
            outcome.error_code(),
            Some("wrong_box"),
            "{what}:\n{}",
            outcome.output
        );
        let message = outcome.answers[0]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(names) && message.contains(Node::Hospital.tls_name()),
            "{what}: {message}"
        );
        assert_eq!(
            std::fs::read_to_string(&setup.hospital.config).expect("read"),
            original,
            "{what}: the config file changed"
        );
        let state = config_state(&setup.hospital);
        assert_eq!(
            (&state["version"], &state["state"], &state["sha256"]),
            (
                &Value::from(5),
                &Value::from("confirmed"),
                &Value::from(original_sha.clone())
            ),
            "{what}: {state}"
        );
        // LOG-2: logged with version, signer, pusher and why.
        let events = config_events(&setup.hospital);
        assert!(
            events.iter().any(|e| {
                let m = e["message"].as_str().unwrap_or_default();
                m.contains("config refused (wrong_box)")
                    && m.contains("version 9")
                    && m.contains(&signer)
                    && m.contains(&operator.identity)
                    && m.contains(names)
            }),
            "{what}: no refusal event in {events:#?}"
        );
    };

    // The clinic's config, properly signed by the operator and newer than what the hospital
    // runs: valid, but for another box.
    let mut clinic = lab.full(Node::Clinic);
    clinic.meta.version = 9;
    clinic.management = Some(operator.management(Node::Clinic, CONFIRM_TIMEOUT.as_secs(), false));
    assert_eq!(
        clinic.meta.box_identity.as_deref(),
        Some(Node::Clinic.tls_name())
    );
    let path = operator
        .write_signed("clinic-v9.toml", &clinic, None)
        .expect("renkei sign");
    refused("the clinic's config", &path, Node::Clinic.tls_name());

    // The hospital's own config without `box` (renkei sign refuses it; a signature made
    // without its checks): an old config could otherwise be replayed to any box.
    let mut no_box = hospital_config(&lab, &operator, 9);
    no_box.meta.box_identity = None;
    let path = operator
        .write_signed_unchecked("no-box-v9.toml", &no_box)
        .expect("sign");
    refused("a config naming no box", &path, "names no box");

    // The same change for this box is accepted: the refusals were about the box.
    let path = operator
        .write_signed(
            "hospital-v9.toml",
            &hospital_config(&lab, &operator, 9),
            None,
        )
        .expect("renkei sign");
    assert_pushed(
        &operator.push(&lab, Node::Hospital, &path).expect("push"),
        9,
        "pending",
    );
    drop(setup.hub);
}

#[test]
fn auth2_only_the_operator_identities_may_push_confirm_or_read() {
    require_root!();
    let lab = Lab::new().expect("lab");
    let operator = Operator::new(&lab).expect("operator");
    let setup = start(&lab, &hospital_config(&lab, &operator, 1));
    let v2 = operator
        .write_signed("v2.toml", &hospital_config(&lab, &operator, 2), None)
        .expect("sign");
    assert_pushed(
        &operator.push(&lab, Node::Hospital, &v2).expect("push"),
        2,
        "pending",
    );

    // The hub box's certificate chains to the same CA, and is refused for all three.
    let hub = hub_box_certificate(&lab);
    let v3 = operator
        .write_signed("v3.toml", &hospital_config(&lab, &operator, 3), None)
        .expect("sign");
    let attempts = [
        ("push", vec![v3.display().to_string()]),
        ("confirm", vec!["--version".to_string(), "2".to_string()]),
        ("remote", vec![]),
    ];
    for (command, extra) in attempts {
        let outcome = operator
            .command_with(&lab, command, Node::Hospital, &as_client(&hub), &extra)
            .expect(command);
        assert!(!outcome.success, "{command} as a box:\n{}", outcome.output);
        assert_eq!(
            outcome.error_code(),
            Some("not_operator"),
            "{command}:\n{}",
            outcome.output
        );
        assert!(
            outcome.output.contains("the box answered 403"),
            "{}",
            outcome.output
        );
        let state = config_state(&setup.hospital);
        assert_eq!(
            (state["version"].as_u64(), state["state"].as_str()),
            (Some(2), Some("pending")),
            "{command}: {state}"
        );
    }
    // Without a client certificate there is no TLS session at all.
    let answer = operator
        .raw_request(&lab, Node::Hospital, ("GET", "/v1/config"), None, &[], None)
        .expect("curl");
    assert_eq!(answer.status, None, "{}", answer.output);
    assert_eq!(answer.body, Value::Null, "{}", answer.output);

    let log = setup.hospital.log_text();
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("reason=\"not_operator\"") && l.contains(Node::Hub.tls_name()))
            .count(),
        3,
        "each refusal logged with the client's name:\n{log}"
    );
    assert!(
        log.contains("management API: TLS handshake refused"),
        "{log}"
    );

    // The operator reads the state (no key material in it) and confirms.
    let remote = operator.remote(&lab, Node::Hospital).expect("remote");
    assert!(remote.success, "{}", remote.output);
    assert_eq!(remote.answers[0]["version"], 2);
    assert_eq!(remote.answers[0]["pushed_by"], "operator.renkei.test");
    let secrets = [
        std::fs::read_to_string(lab.node_dir(Node::Hospital).join("wg.key")).expect("wg key"),
        std::fs::read_to_string(lab.tls_dir(Node::Hospital).join("box.key")).expect("tls key"),
    ];
    let answer = remote.answers[0].to_string();
    for marker in ["PRIVATE", "BEGIN", "private_key", "admin_password_hash"] {
        assert!(!answer.contains(marker), "{marker} in {answer}");
    }
    for secret in &secrets {
        for line in secret
            .lines()
            .filter(|l| l.len() > 20 && !l.starts_with("-----"))
        {
            assert!(!answer.contains(line.trim()), "key material in {answer}");
        }
    }
    let confirmed = operator
        .confirm(&lab, Node::Hospital, Some(2))
        .expect("confirm");
    assert!(confirmed.success, "{}", confirmed.output);
    assert_eq!(config_state(&setup.hospital)["state"], "confirmed");
    drop(setup.hub);
}

#[test]
fn auth2_the_management_api_is_unreachable_from_the_lan_even_with_a_route_to_it() {
    require_root!();
    let lab = Lab::new().expect("lab");
    let operator = Operator::new(&lab).expect("operator");
    let setup = start(&lab, &hospital_config(&lab, &operator, 1));
    let tunnel = Node::Hospital.tunnel_address();
    let lan = lab.lan_ns(Node::Hospital);
    // The LAN host routes the tunnel address to the box (its default route already does; make
    // it explicit).
    lan.ip(&[
        "route",
        "replace",
        &format!("{tunnel}/32"),
        "via",
        Node::Hospital.lan_address().expect("lan address"),
    ])
    .expect("route");
    // A plain listener on the tunnel address is reachable from the LAN (Linux's weak host
    // model): the route works, so what follows is the management listener's own doing.
    let control = lab
        .ns(Node::Hospital)
        .tcp_listener(&format!("{tunnel}:8447"))
        .expect("control listener");
    lan.tcp_connect(&format!("{tunnel}:8447"), Duration::from_secs(5))
        .expect("the LAN reaches a listener on the tunnel address");
    drop(control);

    let refused = lan.tcp_connect(
        &format!("{tunnel}:{MANAGEMENT_PORT}"),
        Duration::from_secs(5),
    );
    assert!(
        refused.is_err(),
        "the LAN reached the management API through the box's LAN interface"
    );
    // Through the tunnel it answers.
    let remote = operator.remote(&lab, Node::Hospital).expect("remote");
    assert!(remote.success, "{}", remote.output);
    drop(setup.hub);
}

#[test]
fn auth2_a_next_key_is_untrusted_until_the_config_naming_it_is_confirmed() {
    require_root!();
    let lab = Lab::new().expect("lab");
    let operator = Operator::new(&lab).expect("operator");
    let original = to_toml(&hospital_config(&lab, &operator, 1));
    let mut setup = start(&lab, &original);
    let (next_key, next_public) = operator.extra_signing_key("next").expect("key");
    let next_fingerprint = renkei::signing::OperatorKey::from_pem(&next_public)
        .expect("next key")
        .fingerprint()
        .to_string();

    // v2, signed by the current key, names the next key.
    let naming = |version: u64| {
        let mut config = hospital_config(&lab, &operator, version);
        management(&mut config).next_operator_signing_key = Some(next_public.clone());
        config
    };
    // v3 is signed by the next key and carries it as the only key.
    let mut v3_text = hospital_config(&lab, &operator, 3);
    let v3_management = management(&mut v3_text);
    v3_management.operator_signing_key_file = None;
    v3_management.operator_signing_key = Some(next_public.clone());
    let v3 = operator
        .write_signed("v3.toml", &v3_text, Some(&next_key))
        .expect("sign");

    // v2 pushed but never confirmed: the box restarts inside the window and v1 is back.
    let v2 = operator
        .write_signed("v2.toml", &naming(2), None)
        .expect("sign");
    assert_pushed(
        &operator.push(&lab, Node::Hospital, &v2).expect("push"),
        2,
        "pending",
    );
    setup.hospital.kill();
    setup.hospital = lab
        .start_with(Node::Hospital, &setup.hospital.config)
        .expect("restart");
    let state = config_state(&setup.hospital);
    assert_eq!(
        (state["version"].as_u64(), state["state"].as_str()),
        (Some(1), Some("confirmed")),
        "{state}"
    );
    wait_tunnel_up(&lab, &setup.hospital, Duration::from_secs(15));
    // Nothing is pending, so the refusal is about the key: v1 trusts only the current one.
    let early = operator.push(&lab, Node::Hospital, &v3).expect("push");
    assert_eq!(
        early.error_code(),
        Some("bad_signature"),
        "{}",
        early.output
    );
    let message = early.answers[0]["message"].as_str().unwrap_or_default();
    assert!(message.contains(&fingerprint(&operator)), "{message}");
    assert!(!message.contains(&next_fingerprint), "{message}");
    assert_eq!(config_state(&setup.hospital)["version"], 1);

    // v2 confirmed: the next key signs v3.
    assert_pushed(
        &operator.push(&lab, Node::Hospital, &v2).expect("push"),
        2,
        "pending",
    );
    assert!(
        operator
            .confirm(&lab, Node::Hospital, Some(2))
            .expect("confirm")
            .success
    );
    assert_pushed(
        &operator.push(&lab, Node::Hospital, &v3).expect("push"),
        3,
        "pending",
    );
    assert_eq!(config_state(&setup.hospital)["signer"], next_fingerprint);
    assert!(
        operator
            .confirm(&lab, Node::Hospital, Some(3))
            .expect("confirm")
            .success
    );

    // The old key is no longer trusted; the new one is.
    let mut v4_text = v3_text.clone();
    v4_text.meta.version = 4;
    let v4 = operator
        .write_signed("v4.toml", &v4_text, None)
        .expect("sign");
    let old = operator.push(&lab, Node::Hospital, &v4).expect("push");
    assert_eq!(old.error_code(), Some("bad_signature"), "{}", old.output);
    assert_eq!(config_state(&setup.hospital)["version"], 3);
    let v4 = operator
        .write_signed("v4.toml", &v4_text, Some(&next_key))
        .expect("sign");
    assert_pushed(
        &operator.push(&lab, Node::Hospital, &v4).expect("push"),
        4,
        "pending",
    );
    drop(setup.hub);
}

/// Pushes `cut` (which cuts the operator off from the hospital) and checks that it runs, that
/// it is rolled back no earlier than the confirm window and at most [`ROLLBACK_SLACK`] after
/// it, measured from the moment the box ran it, and that the link to the data centre and the
/// operator's access come back. `cut` asks for auto_confirm and the push reads the state back
/// after the apply: had that request reached the box, it would have confirmed `cut`.
fn assert_cut_off_config_rolls_back(lab: &Lab, operator: &Operator, setup: &Setup, cut: &Config) {
    let original = std::fs::read_to_string(&setup.hospital.config).expect("read");
    let path = operator.write_signed("cut.toml", cut, None).expect("sign");
    let applied = std::thread::scope(|scope| {
        // The answer cannot come back once the box is cut off: push in the background and time
        // the apply from the box's own state.
        let pushing = scope.spawn(|| operator.push(lab, Node::Hospital, &path));
        let applied = wait_until(
            Duration::from_secs(20),
            "the cut-off config to be running",
            || {
                let state = config_state(&setup.hospital);
                (state["version"] == 2 && state["state"] == "pending").then(Instant::now)
            },
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", setup.hospital.log_text()));
        let _ = pushing.join();
        applied
    });
    wait_until(
        CONFIRM_TIMEOUT + ROLLBACK_SLACK + Duration::from_secs(10),
        "the rollback",
        || {
            let state = config_state(&setup.hospital);
            (state["version"] == 1 && state["state"] == "confirmed").then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", setup.hospital.log_text()));
    let took = applied.elapsed();
    assert!(
        took <= CONFIRM_TIMEOUT + ROLLBACK_SLACK,
        "rolled back {took:?} after the apply"
    );
    assert!(
        took + Duration::from_secs(1) >= CONFIRM_TIMEOUT,
        "rolled back {took:?} after the apply: before the confirm window ended"
    );
    let rolled_back_at = unix_now();
    assert_eq!(
        std::fs::read_to_string(&setup.hospital.config).expect("read"),
        original
    );
    let log = setup.hospital.log_text();
    assert!(
        log.lines().any(|l| l.contains("event=\"rolled_back\"")
            && l.contains("version=2")
            && l.contains(&fingerprint(operator))),
        "{log}"
    );
    assert!(
        !log.lines()
            .any(|l| l.contains("event=\"confirmed\"") && l.contains("version=2")),
        "auto_confirm confirmed a box that was cut off:\n{log}"
    );

    // Healthy again: the link proves itself after the rollback (a handshake on WireGuard, a
    // probe on a closed network), the operator reaches the box, and a document comes through
    // the whole chain.
    wait_until(
        Duration::from_secs(20),
        "the link to prove itself after the rollback",
        || {
            let peer = setup.hospital.peer(lab.dc_link_name()).ok()?;
            (peer["state"] == "up" && peer["last_reached"].as_u64()? + 1 >= rolled_back_at)
                .then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", setup.hospital.log_text()));
    let state = operator.remote(lab, Node::Hospital).expect("remote");
    assert!(state.success, "{}", state.output);
    assert_eq!(state.answers[0]["version"], 1);
    let stream = lab
        .ns(Node::Hub)
        .tcp_connect(HUB_RELAY_ADDRESS, Duration::from_secs(10))
        .expect("connect to the hub's relay");
    let fetched = fetch_document(stream, 1 << 16, 5, None, |_| {}).expect("document");
    assert_eq!(fetched.sha256, pattern_sha256(1 << 16, 5));
}

/// The cut-off configs ask for auto_confirm: it must not confirm a box that cannot be reached.
fn auto_confirming(mut config: Config) -> Config {
    management(&mut config).auto_confirm = true;
    config
}

#[test]
fn avl1_a_wrong_hub_endpoint_is_rolled_back_within_the_confirm_window() {
    require_root!();
    let lab = Lab::new().expect("lab");
    let operator = Operator::new(&lab).expect("operator");
    let setup = start(&lab, &hospital_config(&lab, &operator, 1));
    let good = hospital_config(&lab, &operator, 2);
    let mut cut = auto_confirming(good.clone());
    peer_mut(&mut cut, "dc").endpoint = Some(format!("{}:51999", Node::Hub.wan_address()));
    assert_ne!(cut, auto_confirming(good));
    assert_cut_off_config_rolls_back(&lab, &operator, &setup, &cut);
    drop(setup.hub);
}

#[test]
fn avl1_a_wrong_hub_key_is_rolled_back_within_the_confirm_window() {
    require_root!();
    let lab = Lab::new().expect("lab");
    let operator = Operator::new(&lab).expect("operator");
    let setup = start(&lab, &hospital_config(&lab, &operator, 1));
    let good = hospital_config(&lab, &operator, 2);
    let hub_key = lab.public_key(Node::Hub).to_string();
    let wrong_key = renkei::keys::encode_key(&[42u8; 32]);
    let mut cut = auto_confirming(good.clone());
    assert_eq!(peer_mut(&mut cut, "dc").public_key, hub_key);
    peer_mut(&mut cut, "dc").public_key = wrong_key;
    assert_ne!(cut, auto_confirming(good));
    assert_cut_off_config_rolls_back(&lab, &operator, &setup, &cut);
    drop(setup.hub);
}

/// A closed network has no hub key or endpoint to get wrong; what an operator can get wrong is
/// the management API's own address. Here the port is renumbered in the box's config (a
/// template edit that the operator's tools, `renkei push --to` and the data centre's firewall
/// do not follow): the config is valid and applies, the box's link to the data centre stays up,
/// but the operator cannot reach the box any more, so nothing may confirm it and the box must
/// roll back by itself when the confirm window ends.
#[test]
fn avl1_net9_a_management_api_moved_off_the_operators_port_is_rolled_back_within_the_confirm_window(
) {
    require_root!();
    let lab = Lab::with_carrier(LabCarrier::Closed).expect("lab");
    let operator = Operator::new(&lab).expect("operator");
    let setup = start(&lab, &hospital_config(&lab, &operator, 1));
    let good = hospital_config(&lab, &operator, 2);
    let mut cut = auto_confirming(good.clone());
    management(&mut cut).listen = socket(&format!(
        "{}:{}",
        lab.link_address(Node::Hospital),
        MANAGEMENT_PORT + 1
    ));
    assert_ne!(cut, auto_confirming(good));
    assert_cut_off_config_rolls_back(&lab, &operator, &setup, &cut);
    drop(setup.hub);
}

#[test]
fn avl1_auto_confirm_confirms_once_the_operator_reaches_the_box_again() {
    require_root!();
    auto_confirm_confirms_once_the_operator_reaches_the_box_again(LabCarrier::WireGuard);
}

#[test]
fn avl1_net9_auto_confirm_confirms_once_the_operator_reaches_the_box_again_on_a_closed_network() {
    require_root!();
    auto_confirm_confirms_once_the_operator_reaches_the_box_again(LabCarrier::Closed);
}

/// A harmless push with auto_confirm: `renkei push` reads the state back after the answer, and
/// that authenticated request arrives after the apply, so the box confirms by itself.
fn auto_confirm_confirms_once_the_operator_reaches_the_box_again(carrier: LabCarrier) {
    let lab = Lab::with_carrier(carrier).expect("lab");
    let operator = Operator::new(&lab).expect("operator");
    let setup = start(&lab, &hospital_config(&lab, &operator, 1));
    let mut v2 = auto_confirming(hospital_config(&lab, &operator, 2));
    v2.facility.name = "lab hospital (renamed)".to_string();
    let path = operator.write_signed("auto.toml", &v2, None).expect("sign");
    // On WireGuard the tunnel was not restarted, so the box also asks its peer for a fresh
    // handshake; a closed network has no handshake, the operator's request is the proof.
    let pushed = operator.push(&lab, Node::Hospital, &path).expect("push");
    assert!(pushed.success, "{}", pushed.output);
    assert_eq!(
        (&pushed.answers[0]["version"], &pushed.answers[0]["state"]),
        (&2.into(), &"pending".into()),
        "{}",
        pushed.output
    );
    wait_until(Duration::from_secs(10), "auto-confirm", || {
        let state = config_state(&setup.hospital);
        (state["version"] == 2 && state["state"] == "confirmed").then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", setup.hospital.log_text()));
    let log = setup.hospital.log_text();
    assert!(
        log.lines().any(|l| l.contains("event=\"confirmed\"")
            && l.contains("version=2")
            && l.contains("auto_confirm")),
        "no auto_confirm event for version 2:\n{log}"
    );
    assert_eq!(
        setup.hospital.status().expect("status")["facility"],
        "lab hospital (renamed)"
    );
    drop(setup.hub);
}

#[test]
fn net9_net10_avl1_auto_confirm_confirms_once_the_operator_reaches_the_box_again_over_ipsec() {
    require_root!();
    auto_confirm_confirms_once_the_operator_reaches_the_box_again(LabCarrier::Ipsec);
}

#[test]
fn avl1_auto_confirm_without_the_operator_reaching_the_box_again_rolls_back() {
    require_root!();
    auto_confirm_without_the_operator_reaching_the_box_again_rolls_back(LabCarrier::WireGuard);
}

#[test]
fn avl1_net9_auto_confirm_without_the_operator_reaching_the_box_again_rolls_back_on_a_closed_network(
) {
    require_root!();
    auto_confirm_without_the_operator_reaching_the_box_again_rolls_back(LabCarrier::Closed);
}

#[test]
fn net9_net10_avl1_auto_confirm_without_the_operator_reaching_the_box_again_rolls_back_over_ipsec()
{
    require_root!();
    auto_confirm_without_the_operator_reaching_the_box_again_rolls_back(LabCarrier::Ipsec);
}

/// `config` with a change of the link to the data centre that restarts it, so the link proves
/// itself again right after the apply: on WireGuard the peer's keepalive (the tunnel restarts
/// and handshakes), on a closed network the probe interval (the probe schedule restarts with a
/// probe at once), on IPsec the always-on alarm (the SA is terminated and negotiated again).
fn with_link_restart(lab: &Lab, config: Config) -> Config {
    match lab.carrier {
        LabCarrier::WireGuard => with_keepalive(config, 20),
        LabCarrier::Closed => {
            let mut config = config;
            let closed = config.closed.as_mut().expect("a closed-network config");
            assert_ne!(
                closed.probe_interval_secs,
                CLOSED_RESTART_PROBE_INTERVAL_SECS
            );
            closed.probe_interval_secs = CLOSED_RESTART_PROBE_INTERVAL_SECS;
            config
        }
        LabCarrier::Ipsec => {
            let mut config = config;
            let ipsec = config.ipsec.as_mut().expect("an IPsec config");
            assert_ne!(ipsec.alarm_after_secs, IPSEC_RESTART_ALARM_AFTER_SECS);
            ipsec.alarm_after_secs = IPSEC_RESTART_ALARM_AFTER_SECS;
            config
        }
    }
}

/// The always-on alarm [`with_link_restart`] sets on IPsec: any change of `[ipsec]` makes the
/// box terminate its SA and bring it up again.
const IPSEC_RESTART_ALARM_AFTER_SECS: u64 = 120;

/// The probe interval [`with_link_restart`] sets on a closed network (the lab's is longer).
const CLOSED_RESTART_PROBE_INTERVAL_SECS: u64 = 5;

/// A push with auto_confirm whose link proves itself after the apply, but the operator never
/// comes back (one POST, no read-back): the link alone is no proof, the box rolls back.
fn auto_confirm_without_the_operator_reaching_the_box_again_rolls_back(carrier: LabCarrier) {
    let lab = Lab::with_carrier(carrier).expect("lab");
    let operator = Operator::new(&lab).expect("operator");
    let setup = start(&lab, &hospital_config(&lab, &operator, 1));
    // The link restarts, so it proves itself after the apply for sure (a handshake, or a
    // probe); only the operator's return is missing.
    let v2 = with_link_restart(&lab, auto_confirming(hospital_config(&lab, &operator, 2)));
    let path = operator.write_signed("auto.toml", &v2, None).expect("sign");
    let signature = std::fs::read_to_string(path.with_extension("toml.sig")).expect("sig");
    // One POST and nothing after it (renkei push would read the state back).
    let answer = operator
        .raw_request(
            &lab,
            Node::Hospital,
            ("POST", "/v1/config"),
            Some(&path),
            &[format!("Renkei-Signature: {}", signature.trim())],
            Some(&operator.client),
        )
        .expect("curl");
    assert_eq!(answer.status, Some(200), "{}", answer.output);
    assert_eq!(answer.body["state"], "pending", "{}", answer.output);
    // The restart's handshake or probe may complete before the apply as a whole has finished
    // (when `applied_at_unix` is taken), so it is compared with the push.
    let pushed_at = config_state(&setup.hospital)["pushed_at_unix"]
        .as_u64()
        .expect("pushed_at_unix");
    wait_until(
        Duration::from_secs(15),
        "the link to prove itself after the push",
        || {
            let peer = setup.hospital.peer(lab.dc_link_name()).ok()?;
            (peer["state"] == "up" && peer["last_reached"].as_u64()? >= pushed_at).then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", setup.hospital.log_text()));
    assert_eq!(config_state(&setup.hospital)["state"], "pending");

    wait_until(
        CONFIRM_TIMEOUT + ROLLBACK_SLACK + Duration::from_secs(5),
        "the rollback",
        || {
            let state = config_state(&setup.hospital);
            (state["version"] == 1 && state["state"] == "confirmed").then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", setup.hospital.log_text()));
    let log = setup.hospital.log_text();
    assert!(
        !log.lines()
            .any(|l| l.contains("event=\"confirmed\"") && l.contains("version=2")),
        "{log}"
    );
    assert!(log.contains("the confirm window expired"), "{log}");
    drop(setup.hub);
}

#[test]
fn log2_every_config_event_reaches_the_status_events_with_version_signer_and_pusher() {
    require_root!();
    let lab = Lab::new().expect("lab");
    let operator = Operator::new(&lab).expect("operator");
    let setup = start(&lab, &hospital_config(&lab, &operator, 1));
    let started = unix_now();
    let signer = fingerprint(&operator);
    let pusher = operator.identity.clone();
    let expect_event = |what: &str, parts: &[&str]| {
        let events = config_events(&setup.hospital);
        let found = events.iter().find(|e| {
            let message = e["message"].as_str().unwrap_or_default();
            parts.iter().all(|p| message.contains(p))
        });
        let Some(event) = found else {
            panic!("no {what} event with {parts:?} in {events:#?}");
        };
        let time = event["time_unix"].as_u64().expect("time");
        assert!(
            time + 1 >= started && time <= unix_now() + 1,
            "{what}: time {time}"
        );
    };
    let by = format!("pushed by {pusher}");
    let signed = format!("signed by {signer}");

    let v2 = operator
        .write_signed("v2.toml", &hospital_config(&lab, &operator, 2), None)
        .expect("sign");
    assert_pushed(
        &operator.push(&lab, Node::Hospital, &v2).expect("push"),
        2,
        "pending",
    );
    expect_event("received", &["config received", "version 2", &signed, &by]);
    expect_event("applied", &["config applied", "version 2", &signed, &by]);
    assert!(
        operator
            .confirm(&lab, Node::Hospital, Some(2))
            .expect("confirm")
            .success
    );
    expect_event(
        "confirmed",
        &[
            "config confirmed",
            "version 2",
            &signed,
            &by,
            "confirmed by",
        ],
    );

    // Refusals: before the signature is known, after it, and before the box reads anything.
    let (unknown, _) = operator.extra_signing_key("unknown").expect("key");
    let path = operator
        .write_signed(
            "unknown.toml",
            &hospital_config(&lab, &operator, 3),
            Some(&unknown),
        )
        .expect("sign");
    operator.push(&lab, Node::Hospital, &path).expect("push");
    expect_event(
        "refused (unknown key)",
        &["config refused (bad_signature)", "version unknown", &by],
    );
    operator.push(&lab, Node::Hospital, &v2).expect("push");
    expect_event(
        "refused (replay)",
        &["config refused (not_newer)", "version 2", &signed, &by],
    );
    let mut huge = to_toml(&hospital_config(&lab, &operator, 3));
    huge.push_str(&format!("# {}\n", "x".repeat(300 * 1024)));
    let path = operator
        .write_signed("huge.toml", &huge, None)
        .expect("sign");
    operator.push(&lab, Node::Hospital, &path).expect("push");
    expect_event("refused (too large)", &["config refused (too_large)", &by]);
    let hub = hub_box_certificate(&lab);
    operator
        .command_with(&lab, "remote", Node::Hospital, &as_client(&hub), &[])
        .expect("remote as a box");
    expect_event(
        "refused (not an operator)",
        &[
            "config refused (not_operator)",
            &format!("pushed by {}", Node::Hub.tls_name()),
        ],
    );
    operator
        .raw_request(&lab, Node::Hospital, ("GET", "/v1/config"), None, &[], None)
        .expect("curl");
    expect_event("TLS refusal", &["TLS handshake from", "refused"]);

    // Apply failed, rolled back at once: the service's port is taken on the box.
    let busy = lab
        .ns(Node::Hospital)
        .tcp_listener(&format!("{}:8446", Node::Hospital.tunnel_address()))
        .expect("listener");
    let taken = inbound_service("taken", 8446);
    let path = operator
        .write_signed(
            "taken.toml",
            &with_service(hospital_config(&lab, &operator, 3), taken),
            None,
        )
        .expect("sign");
    let outcome = operator.push(&lab, Node::Hospital, &path).expect("push");
    assert_eq!(
        outcome.error_code(),
        Some("apply_failed"),
        "{}",
        outcome.output
    );
    drop(busy);
    expect_event(
        "apply failed",
        &["config apply failed", "version 3", &signed, &by],
    );
    expect_event(
        "rolled back",
        &[
            "config rolled back",
            "version 3",
            &signed,
            &by,
            "version 2 restored",
        ],
    );
    let state = config_state(&setup.hospital);
    assert_eq!(
        (state["version"].as_u64(), state["state"].as_str()),
        (Some(2), Some("confirmed")),
        "{state}"
    );
    drop(setup.hub);
}

#[test]
fn avl1_a_box_restarted_inside_the_confirm_window_restores_the_confirmed_config() {
    require_root!();
    let lab = Lab::new().expect("lab");
    let operator = Operator::new(&lab).expect("operator");
    let original = to_toml(&hospital_config(&lab, &operator, 1));
    let mut setup = start(&lab, &original);
    let path = operator
        .write_signed("v2.toml", &hospital_config(&lab, &operator, 2), None)
        .expect("sign");
    assert_pushed(
        &operator.push(&lab, Node::Hospital, &path).expect("push"),
        2,
        "pending",
    );
    setup.hospital.kill();
    let restarted = lab
        .start_with(Node::Hospital, &setup.hospital.config)
        .expect("restart");
    assert_eq!(config_state(&restarted)["version"], 1);
    assert_eq!(
        std::fs::read_to_string(&restarted.config).expect("read"),
        original
    );
    wait_tunnel_up(&lab, &restarted, Duration::from_secs(15));
    assert!(
        restarted.log_text().contains("never confirmed"),
        "{}",
        restarted.log_text()
    );
    let events = config_events(&restarted);
    assert!(
        events.iter().any(|e| {
            let m = e["message"].as_str().unwrap_or_default();
            m.contains("config rolled back")
                && m.contains("version 2")
                && m.contains(&fingerprint(&operator))
                && m.contains("pushed by operator.renkei.test")
        }),
        "{events:#?}"
    );
}

/// Where a kill landed, from the killed daemon's log.
#[derive(Debug, Default)]
struct KillCounts {
    before_received: u64,
    received_not_confirmed: u64,
    after_confirmed: u64,
    /// The restarted daemon's recovery records, by event.
    recoveries: std::collections::BTreeMap<String, u64>,
}

#[test]
fn avl1_kill_9_at_random_moments_of_push_apply_and_confirm_never_breaks_the_box() {
    require_root!();
    let iterations: u64 = std::env::var("RENKEI_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        assert!(
            iterations >= 200,
            "CI runs at least 200 kills (RENKEI_CRASH_ITERATIONS={iterations})"
        );
    }
    let lab = Lab::new().expect("lab");
    // Short exchanges: a request cut by the kill must not hold the loop.
    let operator = Operator::new(&lab).expect("operator").with_timeout_secs(3);
    let mut setup = start(&lab, &hospital_config(&lab, &operator, 1));
    let mut confirmed_version = 1u64;
    // A cheap deterministic spread of kill delays over push, apply and confirm.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let (mut killed_pending, mut killed_after_confirm) = (0, 0);
    let mut counts = KillCounts::default();
    for i in 0..iterations {
        let next = confirmed_version + 1;
        // Every push really changes something: the "records" service comes and goes and the
        // hub's keepalive flips (a tunnel restart), so kills land inside real applies.
        let text = if next % 2 == 0 {
            with_keepalive(
                with_service(hospital_config(&lab, &operator, next), records_service()),
                20,
            )
        } else {
            hospital_config(&lab, &operator, next)
        };
        let path = operator
            .write_signed("crash.toml", &text, None)
            .expect("sign");
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_millis(seed % 600);

        // Only this iteration's events of the daemon about to be killed count: its log before
        // the push (its own start, with any recovery of the previous kill) is another story.
        let live_from = setup.hospital.log_text().len();
        // Push and confirm in a thread; kill the daemon after `delay`, start it again, and
        // only then collect the client (whose connection died with the daemon).
        let confirmed_ok = AtomicBool::new(false);
        let (acked_before_kill, killed_log, daemon) = std::thread::scope(|scope| {
            let client = scope.spawn(|| {
                let pushed = operator.push(&lab, Node::Hospital, &path).ok()?;
                if pushed.success {
                    let confirmed = operator.confirm(&lab, Node::Hospital, Some(next)).ok()?;
                    confirmed_ok.store(confirmed.success, Ordering::SeqCst);
                }
                Some(())
            });
            // The kill moment is the point of this test, not a wait for a condition.
            std::thread::sleep(delay);
            let acked = confirmed_ok.load(Ordering::SeqCst);
            setup.hospital.kill();
            let killed_log = setup.hospital.log_text();
            let daemon = lab
                .start_with(Node::Hospital, &setup.hospital.config)
                .unwrap_or_else(|e| panic!("iteration {i}: restart failed: {e}"));
            let _ = client.join();
            (acked, killed_log, daemon)
        });
        let live = killed_log.get(live_from..).unwrap_or_default();
        let next_text = next.to_string();
        let logged = |event: &str| {
            live.lines().map(log_fields).any(|fields| {
                log_field(&fields, "event") == Some(event)
                    && log_field(&fields, "version") == Some(next_text.as_str())
            })
        };
        if !logged("received") {
            counts.before_received += 1;
        } else if !logged("confirmed") {
            counts.received_not_confirmed += 1;
        } else {
            counts.after_confirmed += 1;
        }
        let version = config_state(&daemon)["version"].as_u64().unwrap_or(0);
        assert!(
            version == confirmed_version || version == next,
            "iteration {i}: running version {version}, expected {confirmed_version} or {next}"
        );
        // A config event logged by the restarted daemon before it was ready (before it took
        // any request, such as the client's late confirm) is its start-up recovery record (a
        // push was under way when it was killed): it says which version runs, and a
        // "confirmed" one is about that version.
        let started_log = daemon.log_text();
        let recoveries: Vec<_> = started_log
            .lines()
            .take_while(|l| !l.trim_end().ends_with(" ready"))
            .map(log_fields)
            .filter(|f| log_field(f, "event").is_some())
            .collect();
        assert!(recoveries.len() <= 1, "iteration {i}: {recoveries:?}");
        let version_text = version.to_string();
        for fields in &recoveries {
            let event = log_field(fields, "event").unwrap_or("-").to_string();
            *counts.recoveries.entry(event).or_default() += 1;
            assert_eq!(
                log_field(fields, "reason"),
                Some("stopped_during_push"),
                "iteration {i}: {fields:?}"
            );
            assert_eq!(
                log_field(fields, "running_version"),
                Some(version_text.as_str()),
                "iteration {i}: the recovery record names the running version: {fields:?}"
            );
            if log_field(fields, "event") == Some("confirmed") {
                assert_eq!(
                    log_field(fields, "version"),
                    Some(version_text.as_str()),
                    "iteration {i}: a confirm found at start is the running version's: {fields:?}"
                );
            }
        }
        if acked_before_kill {
            assert_eq!(version, next, "iteration {i}: a confirmed push was lost");
        }
        if logged("confirmed") {
            assert_eq!(version, next, "iteration {i}: a durable confirm was lost");
        }
        assert!(
            renkei_check(&daemon.config),
            "iteration {i}: the config file fails renkei check"
        );
        assert_eq!(config_state(&daemon)["state"], "confirmed", "iteration {i}");
        wait_tunnel_up(&lab, &daemon, Duration::from_secs(15));
        if version == next {
            killed_after_confirm += 1;
        } else {
            killed_pending += 1;
        }
        confirmed_version = version;
        setup.hospital = daemon;
    }
    eprintln!(
        "{iterations} kills: {killed_pending} before the confirm was durable, {killed_after_confirm} after; \
         by the killed daemon's log: {} before the push was received, {} after it was received and \
         before the confirm, {} after the confirm; recoveries at restart: {:?}",
        counts.before_received,
        counts.received_not_confirmed,
        counts.after_confirmed,
        counts.recoveries
    );
    assert!(
        killed_pending > 0 && killed_after_confirm > 0,
        "the kill delays did not spread over the push"
    );
    assert!(
        counts.received_not_confirmed > 0,
        "no kill landed between a received push and its confirm: {counts:?}"
    );
    drop(setup.hub);
}

/// The clinic's tunnel idles out after this without traffic or holds (`chain_config`).
const CLINIC_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// A quiet connection keeps an on-demand box's tunnel up across a push that restarts the
/// tunnel: its hold is carried onto the rebuilt peer (and released there when it closes).
#[test]
fn net7_avl1_a_quiet_open_connection_keeps_the_on_demand_tunnel_up_across_a_restarting_push() {
    require_root!();
    const LEN: u64 = 2 << 20;
    const HELD_AFTER: u64 = 256 << 10;
    let lab = Lab::new().expect("lab");
    let operator = Operator::new(&lab).expect("operator");
    let management = operator.management(Node::Clinic, CONFIRM_TIMEOUT.as_secs(), false);
    let chain = start_chain_with(&lab, |node, config| {
        if node == Node::Clinic {
            config.management = Some(management.clone());
        }
    });
    let mut v1 = chain_config(&lab, Node::Clinic);
    v1.management = Some(management);
    assert_eq!(
        v1.tunnel
            .as_mut()
            .expect("[tunnel]")
            .policy
            .idle_timeout_secs,
        CLINIC_IDLE_TIMEOUT.as_secs()
    );

    // A viewer's fetch, held by the document server after 256 KiB: open, then silent.
    chain.documents.hold();
    let received = Arc::new(AtomicU64::new(0));
    let stream = viewer_connect(&lab);
    let transfer = {
        let received = Arc::clone(&received);
        std::thread::spawn(move || {
            fetch_document(stream, LEN, 5, Some(HELD_AFTER), |n| {
                received.store(n, Ordering::Relaxed)
            })
        })
    };
    wait_until(
        Duration::from_secs(20),
        "the held part of the document",
        || (received.load(Ordering::Relaxed) >= HELD_AFTER).then_some(()),
    )
    .expect("transfer started");
    let quiet_since = Instant::now();
    let clinic_dc = || chain.clinic.peer("dc").expect("clinic peer");
    assert_eq!(clinic_dc()["holds"], 1, "{}", clinic_dc());

    // Only [tunnel.policy] changes: the clinic's tunnel restarts under the open connection.
    let mut v2 = v1.clone();
    v2.meta.version = 2;
    v2.tunnel
        .as_mut()
        .expect("[tunnel]")
        .policy
        .connect_timeout_secs = 12;
    let path = operator
        .write_signed("clinic-connect-timeout.toml", &v2, None)
        .expect("sign");
    let pushed = operator.push(&lab, Node::Clinic, &path).expect("push");
    assert_pushed(&pushed, 2, "pending");
    assert!(
        chain
            .clinic
            .log_text()
            .contains("tunnel restarted for the new config"),
        "{}",
        chain.clinic.log_text()
    );
    let confirmed = operator
        .confirm(&lab, Node::Clinic, Some(2))
        .expect("confirm");
    assert!(confirmed.success, "{}", confirmed.output);
    assert_eq!(config_state(&chain.clinic)["state"], "confirmed");

    // Past the idle timeout after the last push traffic, the rebuilt peer is still held and
    // up, with the session it made after the restart: it never idled out in between.
    let after_push = clinic_dc();
    assert_eq!(
        after_push["holds"], 1,
        "the hold moved to the new peer: {after_push}"
    );
    let handshakes = after_push["backend"]["wireguard"]["handshakes_completed"].as_u64();
    let watch_until = Instant::now() + CLINIC_IDLE_TIMEOUT + Duration::from_secs(3);
    while Instant::now() < watch_until {
        let dc = clinic_dc();
        assert_eq!(dc["state"], "up", "{dc}\n{}", chain.clinic.log_text());
        assert_eq!(dc["holds"], 1, "{dc}");
        assert_eq!(
            dc["backend"]["wireguard"]["handshakes_completed"].as_u64(),
            handshakes,
            "{dc}"
        );
        std::thread::sleep(renkei_lab::wait::POLL);
    }
    // Nothing but the hold kept it up: the proxied legs' TCP keepalives had not started yet.
    assert!(
        quiet_since.elapsed() < renkei::proxy::KEEPALIVE_IDLE,
        "the watch ran past the first keepalive probe ({:?}); it proves nothing",
        quiet_since.elapsed()
    );

    // The connection ends: its guard releases the new peer, which then idles out.
    chain.documents.release();
    let fetched = transfer
        .join()
        .expect("thread")
        .expect("the transfer survives the tunnel restart");
    assert_eq!(fetched.len, LEN);
    assert_eq!(fetched.sha256, pattern_sha256(LEN, 5));
    let closed = Instant::now();
    wait_until(
        CLINIC_IDLE_TIMEOUT + Duration::from_secs(10),
        "the clinic's tunnel to idle out",
        || (peer_state(&lab, &chain.clinic) == "idle").then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", clinic_dc()));
    assert!(
        closed.elapsed() >= CLINIC_IDLE_TIMEOUT - Duration::from_secs(1),
        "idled out {:?} after the close, before the idle timeout",
        closed.elapsed()
    );
    let idle = clinic_dc();
    assert_eq!(idle["holds"], 0, "{idle}");
    assert_eq!(
        idle["backend"]["wireguard"]["session_keys_present"], false,
        "{idle}"
    );
    drop(chain.hub);
}

/// `text` with a comment appended so that it is `bytes` long (a real config does not grow
/// this way, but the cap counts bytes, not peers).
fn padded_to(text: String, bytes: usize) -> String {
    let fill = bytes.saturating_sub(text.len() + 3);
    format!("{text}# {}\n", "x".repeat(fill))
}

#[test]
fn avl6_a_hub_config_for_1000_facilities_passes_renkei_check_and_fits_the_default_push_cap() {
    require_root!();
    let lab = Lab::new().expect("lab");
    let operator = Operator::new(&lab).expect("operator");
    let mut hub = lab.full(Node::Hub);
    hub.meta.version = 2;
    hub.management = Some(operator.management(Node::Hub, CONFIRM_TIMEOUT.as_secs(), false));
    hub.tunnel
        .as_mut()
        .expect("the hub has [tunnel]")
        .peers
        .extend(renkei_lab::boxconfig::facility_peers(1000));
    let text = to_toml(&hub);
    let path = lab.write_config(Node::Hub, &text).expect("write");
    assert!(
        renkei_check(&path),
        "renkei check refused {}",
        path.display()
    );
    assert!(
        text.len() < renkei::control::DEFAULT_MAX_PUSH_BYTES,
        "a hub config for 1000 facilities is {} bytes, over the default cap of {}",
        text.len(),
        renkei::control::DEFAULT_MAX_PUSH_BYTES
    );
    // The operator's own tool signs it as it is.
    operator
        .write_signed("hub-1000.toml", &text, None)
        .expect("renkei sign");
}

#[test]
fn avl6_int1_a_push_above_the_configured_cap_is_refused_with_413_naming_it_and_the_cap_can_be_raised(
) {
    require_root!();
    let lab = Lab::new().expect("lab");
    let operator = Operator::new(&lab).expect("operator");
    const SMALL_CAP: usize = 64 * 1024;
    let mut v5 = hospital_config(&lab, &operator, 5);
    management(&mut v5).max_push_bytes = SMALL_CAP;
    let setup = start(&lab, &v5);
    let original = std::fs::read_to_string(&setup.hospital.config).expect("read");

    // Over the box's cap (and far under the default): refused before it is read, and named.
    let v6 = hospital_config(&lab, &operator, 6);
    let over = padded_to(to_toml(&v6), SMALL_CAP + 1024);
    let path = operator
        .write_signed("over.toml", &over, None)
        .expect("sign");
    let outcome = operator.push(&lab, Node::Hospital, &path).expect("push");
    assert!(!outcome.success, "{}", outcome.output);
    assert_eq!(
        outcome.error_code(),
        Some("too_large"),
        "{}",
        outcome.output
    );
    assert!(
        outcome
            .output
            .contains(&format!("management.max_push_bytes ({SMALL_CAP} bytes)")),
        "the answer names the cap:\n{}",
        outcome.output
    );
    assert_eq!(
        std::fs::read_to_string(&setup.hospital.config).expect("read"),
        original,
        "nothing changed"
    );
    assert_eq!(config_state(&setup.hospital)["version"], 5);

    // The operator raises the cap in a small push; then a config over the default fits.
    let mut raised = hospital_config(&lab, &operator, 6);
    management(&mut raised).max_push_bytes = 512 * 1024;
    let path = operator
        .write_signed("raised.toml", &raised, None)
        .expect("sign");
    assert_pushed(
        &operator.push(&lab, Node::Hospital, &path).expect("push"),
        6,
        "pending",
    );
    let confirmed = operator
        .confirm(&lab, Node::Hospital, Some(6))
        .expect("confirm");
    assert!(confirmed.success, "{}", confirmed.output);
    let mut v7 = raised.clone();
    v7.meta.version = 7;
    let big = padded_to(
        to_toml(&v7),
        renkei::control::DEFAULT_MAX_PUSH_BYTES + 64 * 1024,
    );
    let path = operator.write_signed("big.toml", &big, None).expect("sign");
    assert_pushed(
        &operator.push(&lab, Node::Hospital, &path).expect("push"),
        7,
        "pending",
    );
    drop(setup);
}
