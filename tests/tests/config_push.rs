//! Remote configuration push in the namespace lab (AUTH-2, LOG-2, AVL-1): the operator in the
//! data centre signs configs and pushes them with the real `renkei` binary through the hub's
//! tunnel to the hospital box's management API; the box checks, writes, applies, and confirms
//! or rolls back.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use renkei_lab::lab::{service_toml, Peer, DOCUMENT_SERVER_ADDRESS, HUB_RELAY_ADDRESS};
use renkei_lab::operator::{Operator, Outcome};
use renkei_lab::pki::Ca;
use renkei_lab::tlstools::{fetch_document, pattern_sha256, run_bounded, DocumentServer};
use renkei_lab::{require_root, wait_until, Daemon, Lab, Node};
use serde_json::Value;

/// The hospital's second inbound service, added by a push.
const RECORDS_PORT: u16 = 8444;

fn peer_state(daemon: &Daemon) -> String {
    daemon
        .peer("dc")
        .ok()
        .and_then(|p| p["state"].as_str().map(str::to_string))
        .unwrap_or_default()
}

fn wait_tunnel_up(daemon: &Daemon, within: Duration) {
    wait_until(within, "the hospital's tunnel to be up", || {
        (peer_state(daemon) == "up").then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log_text()));
}

fn config_state(daemon: &Daemon) -> Value {
    daemon.status().expect("status")["config"].clone()
}

/// The hospital's config at `version`, with a management API trusting `operator`.
fn hospital_config(lab: &Lab, operator: &Operator, version: u64, extra: &str) -> String {
    let mut text = lab
        .full_config(Node::Hospital)
        .replace("version = 1\n", &format!("version = {version}\n"));
    text.push_str(extra);
    text.push_str(&operator.management_toml(Node::Hospital, 30, false));
    text
}

struct Setup {
    hub: Daemon,
    hospital: Daemon,
    documents: DocumentServer,
}

fn start(lab: &Lab, hospital_text: &str) -> Setup {
    let documents = DocumentServer::start(lab.lan_ns(Node::Hospital), DOCUMENT_SERVER_ADDRESS)
        .expect("document server");
    let hub = lab
        .start(Node::Hub, &lab.full_config(Node::Hub))
        .expect("hub");
    let hospital = lab.start(Node::Hospital, hospital_text).expect("hospital");
    wait_tunnel_up(&hospital, Duration::from_secs(15));
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

#[test]
fn auth2_avl1_log2_push_and_confirm_add_a_service_while_an_open_transfer_survives() {
    require_root!();
    const LEN: u64 = 8 << 20;
    let lab = Lab::new().expect("lab");
    let operator = Operator::new(&lab).expect("operator");
    let setup = start(&lab, &hospital_config(&lab, &operator, 1, ""));

    // An open transfer on the untouched "documents" service: hub-side client -> hub outbound
    // -> hospital inbound -> document server, held after 1 MiB until the push is done.
    setup.documents.hold();
    let received = Arc::new(AtomicU64::new(0));
    let transfer = {
        let stream = lab
            .ns(Node::Hub)
            .tcp_connect(HUB_RELAY_ADDRESS, Duration::from_secs(10))
            .expect("connect to the hub's relay");
        let received = Arc::clone(&received);
        std::thread::spawn(move || {
            fetch_document(stream, LEN, 9, Some(1 << 20), |n| {
                received.store(n, Ordering::Relaxed)
            })
        })
    };
    wait_until(Duration::from_secs(20), "the transfer to start", || {
        (received.load(Ordering::Relaxed) >= 1 << 20).then_some(())
    })
    .expect("transfer started");

    let records = service_toml(
        "records",
        "inbound",
        &format!("{}:{RECORDS_PORT}", Node::Hospital.tunnel_address()),
        DOCUMENT_SERVER_ADDRESS,
        Peer::Allowed(Node::Hub.tls_name()),
    );
    let v2 = hospital_config(&lab, &operator, 2, &records);
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
        v2
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

    // The transfer that was open during push, apply and confirm arrives whole.
    let fetched = transfer
        .join()
        .expect("thread")
        .expect("transfer survives the push");
    assert_eq!(fetched.len, LEN);
    assert_eq!(fetched.sha256, pattern_sha256(LEN, 9));
    assert!(renkei_check(&setup.hospital.config));

    // LOG-2: every step logged with version and signer.
    let log = setup.hospital.log_text();
    for event in ["received", "applied", "confirmed"] {
        assert!(
            log.lines()
                .any(|l| l.contains(&format!("event=\"{event}\""))
                    && l.contains("version=2")
                    && (event == "confirmed" || l.contains(&signer))),
            "no {event} line with version and signer in:\n{log}"
        );
    }
    drop(setup.hub);
}

#[test]
fn auth2_int1_refused_pushes_change_nothing() {
    require_root!();
    let lab = Lab::new().expect("lab");
    let operator = Operator::new(&lab).expect("operator");
    let original = hospital_config(&lab, &operator, 5, "");
    let setup = start(&lab, &original);
    let unchanged = |what: &str| {
        assert_eq!(
            std::fs::read_to_string(&setup.hospital.config).expect("read"),
            original,
            "{what}: the config file changed"
        );
        let state = config_state(&setup.hospital);
        assert_eq!(state["version"], 5, "{what}: {state}");
        assert_eq!(state["state"], "confirmed", "{what}: {state}");
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
        .write_signed(
            "tampered.toml",
            &hospital_config(&lab, &operator, 6, ""),
            None,
        )
        .expect("sign");
    std::fs::write(&path, hospital_config(&lab, &operator, 6, "\n# changed\n")).expect("tamper");
    refused(
        "tampered",
        operator.push(&lab, Node::Hospital, &path).expect("push"),
        "bad_signature",
    );

    let (unknown, _) = operator.extra_signing_key("unknown").expect("key");
    let path = operator
        .write_signed(
            "unknown.toml",
            &hospital_config(&lab, &operator, 6, ""),
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
            .write_signed(
                "old.toml",
                &hospital_config(&lab, &operator, version, ""),
                None,
            )
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

    let path = operator
        .write_signed("malformed.toml", "[meta\nversion = 6\n", None)
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

    let semantic = hospital_config(&lab, &operator, 6, "").replace(
        &format!("listen = \"{}:7443\"", Node::Hospital.tunnel_address()),
        "listen = \"198.18.10.1:7443\"",
    );
    let path = operator
        .write_signed("semantic.toml", &semantic, None)
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

    let mut huge = hospital_config(&lab, &operator, 6, "");
    huge.push_str(&format!("# {}\n", "x".repeat(300 * 1024)));
    let path = operator
        .write_signed("huge.toml", &huge, None)
        .expect("sign");
    refused(
        "oversized",
        operator.push(&lab, Node::Hospital, &path).expect("push"),
        "too_large",
    );

    let no_management = lab
        .full_config(Node::Hospital)
        .replace("version = 1\n", "version = 6\n");
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
        .write_signed("good.toml", &hospital_config(&lab, &operator, 6, ""), None)
        .expect("sign");
    let outcome = operator
        .push_with(
            &lab,
            Node::Hospital,
            &path,
            &[
                ("--cert", stranger.cert.display().to_string()),
                ("--key", stranger.key.display().to_string()),
            ],
        )
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
        log.matches("event=\"refused\"").count() >= 8,
        "every refusal is logged (LOG-2):\n{log}"
    );
    drop(setup.hub);
}

#[test]
fn auth2_operator_key_rotation_takes_effect_only_after_confirm() {
    require_root!();
    let lab = Lab::new().expect("lab");
    let operator = Operator::new(&lab).expect("operator");
    let setup = start(&lab, &hospital_config(&lab, &operator, 1, ""));
    let (next_key, next_public) = operator.extra_signing_key("next").expect("key");

    // v2, signed by the current key, names the next key.
    let naming = |version: u64| {
        hospital_config(&lab, &operator, version, "").replace(
            "auto_confirm = false\n",
            &format!(
                "auto_confirm = false\nnext_operator_signing_key = \"\"\"\n{next_public}\"\"\"\n"
            ),
        )
    };
    let v2 = operator
        .write_signed("v2.toml", &naming(2), None)
        .expect("sign");
    assert_pushed(
        &operator.push(&lab, Node::Hospital, &v2).expect("push"),
        2,
        "pending",
    );

    // The next key signs v3, which makes it the only key.
    let v3_text = hospital_config(&lab, &operator, 3, "").replace(
        &format!(
            "operator_signing_key_file = \"{}\"\n",
            operator.signing_public.display()
        ),
        &format!("operator_signing_key = \"\"\"\n{next_public}\"\"\"\n"),
    );
    let v3 = operator
        .write_signed("v3.toml", &v3_text, Some(&next_key))
        .expect("sign");
    let early = operator.push(&lab, Node::Hospital, &v3).expect("push");
    assert_eq!(early.error_code(), Some("pending"), "{}", early.output);

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
    assert!(
        operator
            .confirm(&lab, Node::Hospital, Some(3))
            .expect("confirm")
            .success
    );

    // The old key is no longer trusted.
    let v4 = operator
        .write_signed("v4.toml", &hospital_config(&lab, &operator, 4, ""), None)
        .expect("sign");
    let old = operator.push(&lab, Node::Hospital, &v4).expect("push");
    assert_eq!(old.error_code(), Some("bad_signature"), "{}", old.output);
    assert_eq!(config_state(&setup.hospital)["version"], 3);
    drop(setup.hub);
}

#[test]
fn avl1_a_config_that_cuts_the_box_off_is_rolled_back_and_the_tunnel_recovers() {
    require_root!();
    let lab = Lab::new().expect("lab");
    let operator = Operator::new(&lab).expect("operator");
    let original = hospital_config(&lab, &operator, 1, "");
    let setup = start(&lab, &original);

    // A wrong hub endpoint; auto_confirm must not confirm a box that cannot be reached.
    let cut = hospital_config(&lab, &operator, 2, "")
        .replace(":51820\"", ":51999\"")
        .replace("auto_confirm = false", "auto_confirm = true");
    assert_ne!(cut, hospital_config(&lab, &operator, 2, ""));
    let path = operator.write_signed("cut.toml", &cut, None).expect("sign");
    let pushed_at = Instant::now();
    // The answer may or may not make it back before the tunnel goes.
    let _ = operator.push(&lab, Node::Hospital, &path).expect("push");
    wait_until(
        Duration::from_secs(10),
        "the cut-off config to be running",
        || (config_state(&setup.hospital)["version"] == 2).then_some(()),
    )
    .expect("applied");

    wait_until(Duration::from_secs(40), "the rollback", || {
        let state = config_state(&setup.hospital);
        (state["version"] == 1 && state["state"] == "confirmed").then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", setup.hospital.log_text()));
    assert!(
        pushed_at.elapsed() <= Duration::from_secs(30 + 5 + 10),
        "rolled back after {:?}",
        pushed_at.elapsed()
    );
    assert_eq!(
        std::fs::read_to_string(&setup.hospital.config).expect("read"),
        original
    );
    wait_tunnel_up(&setup.hospital, Duration::from_secs(15));
    let log = setup.hospital.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("event=\"rolled_back\"") && l.contains("version=2")),
        "{log}"
    );
    // The operator reaches the box again.
    let state = operator.remote(&lab, Node::Hospital).expect("remote");
    assert!(state.success, "{}", state.output);
    assert_eq!(state.answers[0]["version"], 1);
    drop(setup.hub);
}

#[test]
fn avl1_auto_confirm_confirms_once_the_operator_reaches_the_box_again() {
    require_root!();
    let lab = Lab::new().expect("lab");
    let operator = Operator::new(&lab).expect("operator");
    let setup = start(&lab, &hospital_config(&lab, &operator, 1, ""));
    let v2 = hospital_config(&lab, &operator, 2, "")
        .replace("auto_confirm = false", "auto_confirm = true")
        .replace(
            "name = \"lab hospital\"",
            "name = \"lab hospital (renamed)\"",
        );
    let path = operator.write_signed("auto.toml", &v2, None).expect("sign");
    let pushed = operator.push(&lab, Node::Hospital, &path).expect("push");
    assert!(pushed.success, "{}", pushed.output);
    wait_until(Duration::from_secs(10), "auto-confirm", || {
        let state = config_state(&setup.hospital);
        (state["version"] == 2 && state["state"] == "confirmed").then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", setup.hospital.log_text()));
    drop(setup.hub);
}

#[test]
fn avl1_a_box_restarted_inside_the_confirm_window_restores_the_confirmed_config() {
    require_root!();
    let lab = Lab::new().expect("lab");
    let operator = Operator::new(&lab).expect("operator");
    let original = hospital_config(&lab, &operator, 1, "");
    let mut setup = start(&lab, &original);
    let path = operator
        .write_signed("v2.toml", &hospital_config(&lab, &operator, 2, ""), None)
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
    wait_tunnel_up(&restarted, Duration::from_secs(15));
    assert!(
        restarted.log_text().contains("never confirmed"),
        "{}",
        restarted.log_text()
    );
}

#[test]
fn avl1_kill_9_at_random_moments_of_push_apply_and_confirm_never_breaks_the_box() {
    require_root!();
    let iterations: u64 = std::env::var("RENKEI_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let lab = Lab::new().expect("lab");
    // Short exchanges: a request cut by the kill must not hold the loop.
    let operator = Operator::new(&lab).expect("operator").with_timeout_secs(3);
    let mut setup = start(&lab, &hospital_config(&lab, &operator, 1, ""));
    let mut confirmed_version = 1u64;
    // A cheap deterministic spread of kill delays over push, apply and confirm.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let (mut killed_pending, mut killed_after_confirm) = (0, 0);
    for i in 0..iterations {
        let next = confirmed_version + 1;
        let path = operator
            .write_signed(
                "crash.toml",
                &hospital_config(&lab, &operator, next, ""),
                None,
            )
            .expect("sign");
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_millis(seed % 600);

        // Push and confirm in a thread; kill the daemon after `delay`, start it again, and
        // only then collect the client (whose connection died with the daemon).
        let confirmed_ok = AtomicBool::new(false);
        let (acked_before_kill, daemon) = std::thread::scope(|scope| {
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
            let daemon = lab
                .start_with(Node::Hospital, &setup.hospital.config)
                .unwrap_or_else(|e| panic!("iteration {i}: restart failed: {e}"));
            let _ = client.join();
            (acked, daemon)
        });
        let version = config_state(&daemon)["version"].as_u64().unwrap_or(0);
        assert!(
            version == confirmed_version || version == next,
            "iteration {i}: running version {version}, expected {confirmed_version} or {next}"
        );
        if acked_before_kill {
            assert_eq!(version, next, "iteration {i}: a confirmed push was lost");
        }
        assert!(
            renkei_check(&daemon.config),
            "iteration {i}: the config file fails renkei check"
        );
        assert_eq!(config_state(&daemon)["state"], "confirmed", "iteration {i}");
        wait_tunnel_up(&daemon, Duration::from_secs(15));
        if version == next {
            killed_after_confirm += 1;
        } else {
            killed_pending += 1;
        }
        confirmed_version = version;
        setup.hospital = daemon;
    }
    eprintln!(
        "{iterations} kills: {killed_pending} before the confirm was durable, {killed_after_confirm} after"
    );
    assert!(
        killed_pending > 0 && killed_after_confirm > 0,
        "the kill delays did not spread over the push"
    );
    drop(setup.hub);
}
