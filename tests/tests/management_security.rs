//! The management API and the metrics listener under hostile clients, in the namespace lab
//! (NET-4, AUTH-2, LOG-2, INT-1, AVL-1): a revoked operator certificate fails the handshake,
//! another box's certificate reads no metrics, and boxes holding connections open do not keep
//! the operator from pushing and confirming.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use renkei::config::Config;
use renkei_lab::operator::{Operator, MANAGEMENT_PORT};
use renkei_lab::pki::LeafFiles;
use renkei_lab::tlstools::Background;
use renkei_lab::web::{scrape_metrics, status, CURL_TIMEOUT_SECS, METRICS_PORT};
use renkei_lab::{require_root, wait_until, Daemon, Lab, Node};
use serde_json::Value;

/// `management.confirm_timeout_secs` of every config here.
const CONFIRM_TIMEOUT_SECS: u64 = 600;
/// How long the CRL watcher (every 5 s) may take to apply a new CRL.
const CRL_RELOAD_WITHIN: Duration = Duration::from_secs(20);
/// Slow clients holding management connections with a box's certificate.
const SLOW_CLIENTS: usize = 32;

/// The hospital's config at `version` with a management API trusting `operator`, its
/// operator CRL `operator_crl_file`.
fn hospital_config(
    lab: &Lab,
    operator: &Operator,
    version: u64,
    operator_crl_file: Option<&Path>,
) -> Config {
    let mut config = lab.full(Node::Hospital);
    config.meta.version = version;
    let mut management = operator.management(Node::Hospital, CONFIRM_TIMEOUT_SECS, false);
    management.operator_crl_file = operator_crl_file.map(Path::to_path_buf);
    config.management = Some(management);
    config
}

fn box_certificate(lab: &Lab, node: Node) -> LeafFiles {
    let tls = lab.tls_dir(node);
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

fn start_hub_and_hospital(lab: &Lab, hospital_config: &Config) -> (Daemon, Daemon) {
    let hub = lab.start(Node::Hub, &lab.full(Node::Hub)).expect("hub");
    let hospital = lab
        .start(Node::Hospital, hospital_config)
        .expect("hospital");
    wait_until(Duration::from_secs(15), "the hospital's tunnel", || {
        (hospital.peer("dc").ok()?["state"] == "up").then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", hospital.log_text()));
    (hub, hospital)
}

fn write(path: &Path, text: &str) -> PathBuf {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    path.to_path_buf()
}

#[test]
fn net4_auth2_log2_a_revoked_operator_certificate_is_refused_at_the_handshake_and_logged() {
    require_root!();
    let lab = Lab::new().expect("lab");
    let operator = Operator::new(&lab).expect("operator");
    // A second certificate for the same operator identity: the one the operator revokes.
    let lost = lab.ca.issue(&operator.identity).expect("leaf");
    let lost_files = lost.write(&operator.dir, "lost").expect("write");
    let crl = write(
        &lab.tls_dir(Node::Hospital).join("operator-crl.pem"),
        &lab.ca.crl(&[]).expect("crl"),
    );
    let (_hub, hospital) =
        start_hub_and_hospital(&lab, &hospital_config(&lab, &operator, 1, Some(&crl)));
    let with_lost = || {
        operator
            .command_with(&lab, "remote", Node::Hospital, &as_client(&lost_files), &[])
            .expect("remote")
    };
    let before = with_lost();
    assert!(before.success, "not revoked yet:\n{}", before.output);

    // The operator revokes it; the box's watcher picks the new CRL up by itself.
    write(&crl, &lab.ca.crl(&[lost.serial]).expect("crl"));
    let refused = wait_until(CRL_RELOAD_WITHIN, "the revoked certificate refused", || {
        let outcome = with_lost();
        (!outcome.success).then_some(outcome)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", hospital.log_text()));
    assert!(
        refused.answers.is_empty(),
        "no HTTP answer at all, the handshake failed:\n{}",
        refused.output
    );
    // The box's alert reaches the operator as the reason, not as hyper's "connection error"
    // (in TLS 1.3 it arrives only with the first answer).
    assert!(
        refused.output.contains("TLS refused, certificate revoked"),
        "{}",
        refused.output
    );
    let log = hospital.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("TLS handshake refused") && l.contains("Revoked")),
        "the refusal is logged with why:\n{log}"
    );
    // The CRL of the operator CA locks out only what it revokes.
    let current = operator.remote(&lab, Node::Hospital).expect("remote");
    assert!(current.success, "{}", current.output);
}

#[test]
fn net4_a_crl_from_another_issuer_is_refused_by_renkei_check_naming_the_file() {
    require_root!();
    let lab = Lab::new().expect("lab");
    let operator = Operator::new(&lab).expect("operator");
    let stranger = renkei_lab::pki::Ca::new("not the operator CA").expect("ca");
    let crl = write(
        &lab.tls_dir(Node::Hospital).join("foreign-crl.pem"),
        &stranger.crl(&[]).expect("crl"),
    );
    let path = lab
        .write_config(
            Node::Hospital,
            &hospital_config(&lab, &operator, 1, Some(&crl)),
        )
        .expect("config");
    let out = std::process::Command::new(renkei_lab::daemon::renkei_bin().expect("bin"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("renkei check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("management.operator_crl_file"), "{stderr}");
    assert!(stderr.contains(&crl.display().to_string()), "{stderr}");
    assert!(stderr.contains("not the operator CA"), "{stderr}");
}

#[test]
fn ops4_auth2_another_box_certificate_gets_nothing_from_the_metrics_listener() {
    require_root!();
    let lab = Lab::new().expect("lab");
    let operator = Operator::new(&lab).expect("operator");
    let lan = Node::Hospital.lan_address().expect("hospital LAN");
    let tunnel = Node::Hospital.tunnel_address();
    let mut status = status(&format!("{lan}:8443")).expect("status");
    status.metrics_listen = Some(
        format!("{tunnel}:{METRICS_PORT}")
            .parse()
            .expect("metrics address"),
    );
    let mut config = lab.full(Node::Hospital);
    config.status = Some(status);
    config.management = Some(operator.management(Node::Hospital, CONFIRM_TIMEOUT_SECS, false));
    let (_hub, hospital) = start_hub_and_hospital(&lab, &config);

    let scrape = |client: &LeafFiles| {
        scrape_metrics(
            lab.ns(Node::Hub),
            Node::Hospital.tls_name(),
            tunnel,
            &operator.ca,
            client,
            Duration::from_secs(CURL_TIMEOUT_SECS),
        )
        .expect("curl")
    };
    let operator_reply = wait_until(Duration::from_secs(15), "the metrics listener", || {
        let reply = scrape(&operator.client);
        (reply.status == 200).then_some(reply)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", hospital.log_text()));
    assert!(operator_reply.body.contains("renkei_tunnel_state"));

    let clinic = scrape(&box_certificate(&lab, Node::Clinic));
    assert_eq!(clinic.status, 0, "the clinic gets no answer: {clinic:?}");
    assert!(!clinic.body.contains("renkei_"), "{clinic:?}");
    let log = hospital.log_text();
    assert!(
        log.lines().any(|l| l.contains("metrics listener")
            && l.contains(Node::Clinic.tls_name())
            && l.contains("not one of the identities")),
        "{log}"
    );
}

/// One `openssl s_client` holding a management connection with a box's certificate, sending
/// nothing: the slow client of a starvation attempt.
fn slow_client(lab: &Lab, client: &LeafFiles, ca: &Path) -> Background {
    let connect = format!("{}:{MANAGEMENT_PORT}", Node::Hospital.tunnel_address());
    let (cert, key, ca) = (
        client.cert.display().to_string(),
        client.key.display().to_string(),
        ca.display().to_string(),
    );
    Background::start(
        lab.ns(Node::Hub),
        "openssl",
        &[
            "s_client",
            "-connect",
            &connect,
            "-servername",
            Node::Hospital.tls_name(),
            "-cert",
            &cert,
            "-key",
            &key,
            "-CAfile",
            &ca,
        ],
        true,
    )
    .expect("openssl s_client")
}

/// Push `version` and confirm it; how long the two took.
fn push_and_confirm(lab: &Lab, operator: &Operator, version: u64) -> Duration {
    let signed = operator
        .write_signed(
            &format!("v{version}.toml"),
            &hospital_config(lab, operator, version, None),
            None,
        )
        .expect("sign");
    let started = Instant::now();
    let pushed = operator.push(lab, Node::Hospital, &signed).expect("push");
    assert!(pushed.success, "push {version}:\n{}", pushed.output);
    let confirmed = operator
        .confirm(lab, Node::Hospital, Some(version))
        .expect("confirm");
    assert!(
        confirmed.success,
        "confirm {version}:\n{}",
        confirmed.output
    );
    started.elapsed()
}

#[test]
fn int1_avl1_log2_slow_box_clients_do_not_keep_the_operator_from_pushing_and_confirming() {
    require_root!();
    let lab = Lab::new().expect("lab");
    let operator = Operator::new(&lab).expect("operator");
    let (_hub, hospital) = start_hub_and_hospital(&lab, &hospital_config(&lab, &operator, 1, None));
    let normal = push_and_confirm(&lab, &operator, 2);

    // 32 connections with the hub box's certificate (it chains to the operator CA), each
    // through its handshake and then silent.
    let hub_box = box_certificate(&lab, Node::Hub);
    let clients: Vec<Background> = (0..SLOW_CLIENTS)
        .map(|_| slow_client(&lab, &hub_box, &operator.ca))
        .collect();
    for client in &clients {
        client
            .wait_for_output("Verify return code", Duration::from_secs(15))
            .expect("handshake");
    }
    let under_attack = push_and_confirm(&lab, &operator, 3);
    assert!(
        under_attack <= normal * 2 + Duration::from_secs(3),
        "push and confirm took {under_attack:?} with {SLOW_CLIENTS} slow clients, {normal:?} without"
    );
    drop(clients);

    let log = hospital.log_text();
    let no_slot = log
        .lines()
        .filter(|l| l.contains("no connection slot left for") && l.contains(Node::Hub.tls_name()))
        .count();
    assert!(
        (1..=renkei::state::events::EVENT_BURST_PER_KEY as usize).contains(&no_slot),
        "the refused connections are logged, rate-limited ({no_slot} lines):\n{log}"
    );
    let events: Vec<Value> = hospital.status().expect("status")["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for version in [2, 3] {
        assert!(
            events.iter().any(|e| {
                let message = e["message"].as_str().unwrap_or_default();
                message.starts_with("config confirmed")
                    && message.contains(&format!("version {version}"))
            }),
            "the confirm of version {version} is still on the page: {events:#?}"
        );
    }
}
