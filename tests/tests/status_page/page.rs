//! What the page, `renkei status` and the control socket show and keep to themselves (OPS-3,
//! LOG-3).

use std::time::Duration;

use renkei_lab::tlstools::run_bounded;
use renkei_lab::web::{
    get, login, served_fingerprint, status_toml, Session, ADMIN_PASSWORD, STATUS_PORT,
};
use renkei_lab::{require_root, wait_until, Lab, Node};
use serde_json::Value;

use crate::fixtures::{
    clinic_base, clinic_with_page, hospital_base, hospital_with_metrics, renkei_status,
    wait_for_page,
};

#[test]
fn ops3_page_certificate_fingerprint_is_shown_and_kept_across_restarts() {
    require_root!();
    let lab = Lab::new().expect("lab");
    let mut clinic = clinic_with_page(&lab);
    let lan = lab.lan_ns(Node::Clinic);
    let address = format!("198.18.20.1:{STATUS_PORT}");
    let served = served_fingerprint(lan, &address).expect("fingerprint");
    let status = clinic.status().expect("status");
    assert_eq!(
        status["status_page"]["certificate_sha256"],
        served.as_str(),
        "{status:#}"
    );
    assert_eq!(status["status_page"]["certificate_self_signed"], true);
    assert!(
        clinic
            .log_text()
            .contains(&format!("certificate SHA-256 {served}")),
        "the console shows it:\n{}",
        clinic.log_text()
    );
    let summary = renkei_status(&clinic, false);
    assert!(summary.contains(&served), "{summary}");

    // The CRYPTREC profile: TLS 1.3 only, even for the page.
    let tls12 = run_bounded(
        lan,
        "openssl",
        &["s_client", "-connect", &address, "-tls1_2"],
        b"",
        Duration::from_secs(20),
    )
    .expect("openssl");
    assert!(
        !tls12.success(),
        "TLS 1.2 handshake succeeded: {}",
        tls12.output
    );

    clinic.terminate().expect("stop");
    let _again = clinic_with_page(&lab);
    assert_eq!(
        served_fingerprint(lan, &address).expect("fingerprint"),
        served,
        "kept in the state directory"
    );
}

#[test]
fn ops3_page_reveals_no_key_material_and_shows_enrolment() {
    require_root!();
    let lab = Lab::new().expect("lab");
    let mut text = lab.full_config(Node::Clinic);
    text.push_str(&status_toml(&format!("198.18.20.1:{STATUS_PORT}"), "").expect("status"));
    let _clinic = lab.start(Node::Clinic, &text).expect("clinic");
    let lan = lab.lan_ns(Node::Clinic);
    let base = clinic_base();
    wait_for_page(lan, &base);
    let session = login(lan, &base, ADMIN_PASSWORD).expect("login");

    let dir = lab.node_dir(Node::Clinic);
    let wg_private = std::fs::read_to_string(dir.join("wg.key")).expect("wg key");
    let tls_key = std::fs::read_to_string(dir.join("tls/box.key")).expect("tls key");
    let page_key = std::fs::read_to_string(dir.join("state/status/status.key")).expect("page key");
    let secrets: Vec<String> = [tls_key, page_key]
        .iter()
        .flat_map(|pem| {
            pem.lines()
                .filter(|l| !l.starts_with("-----") && l.len() > 16)
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .chain([wg_private.trim().to_string()])
        .collect();
    let mut seen = String::new();
    for path in [
        "/",
        "/api/v1/status",
        "/api/v1/enrolment",
        "/metrics",
        "/app.js",
    ] {
        let reply = get(lan, &base, &session, path).expect("curl");
        assert_eq!(reply.status, 200, "{path}");
        seen.push_str(&reply.body);
    }
    for secret in &secrets {
        assert!(
            !seen.contains(secret.as_str()),
            "a private key line was served"
        );
    }
    assert!(!seen.contains("PRIVATE KEY"));
    // OPS-1: the public enrolment data is on the page.
    let document = get(lan, &base, &session, "/api/v1/status")
        .expect("api")
        .json()
        .expect("json");
    assert_eq!(
        document["enrolment"]["wireguard_public_key"],
        lab.public_key(Node::Clinic),
        "{document:#}"
    );
    assert!(
        document["enrolment"]["csr_sha256"].is_null(),
        "no CSR in the lab"
    );
}

#[test]
fn ops3_renkei_status_summary_matches_the_daemon() {
    require_root!();
    let lab = Lab::new().expect("lab");
    let clinic = clinic_with_page(&lab);
    let document: Value =
        serde_json::from_str(&renkei_status(&clinic, true)).expect("--json is the API document");
    let session = login(lab.lan_ns(Node::Clinic), &clinic_base(), ADMIN_PASSWORD).expect("login");
    let api = get(
        lab.lan_ns(Node::Clinic),
        &clinic_base(),
        &session,
        "/api/v1/status",
    )
    .expect("api")
    .json()
    .expect("json");
    let keys = |v: &Value| -> Vec<String> {
        v.as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    };
    assert_eq!(keys(&document), keys(&api), "the same document");

    let summary = renkei_status(&clinic, false);
    let page = &document["status_page"];
    for expected in [
        "facility: lab clinic (viewing), config version 1".to_string(),
        "config: version 1 (local file)".to_string(),
        format!("status page: https://198.18.20.1:{STATUS_PORT}/"),
        format!(
            "certificate SHA-256 (self-signed): {}",
            page["certificate_sha256"].as_str().unwrap_or("?")
        ),
        format!(
            "enrolment:\n  WireGuard public key: {}\n",
            lab.public_key(Node::Clinic)
        ),
        "logins: 1 ok, 0 refused".to_string(),
        "info daemon: renkei".to_string(),
        "tunnel: idle on_demand".to_string(),
    ] {
        assert!(
            summary.contains(&expected),
            "{expected:?} missing:\n{summary}"
        );
    }
}

#[test]
fn log3_events_and_access_log_are_on_the_page() {
    require_root!();
    let lab = Lab::new().expect("lab");
    let h = hospital_with_metrics(&lab);
    let lan = lab.lan_ns(Node::Hospital);
    let base = hospital_base();
    let session: Session = login(lan, &base, ADMIN_PASSWORD).expect("login");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(h.hospital.pid().expect("pid") as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .expect("SIGHUP");
    let document = wait_until(Duration::from_secs(10), "the reload event", || {
        let document = get(lan, &base, &session, "/api/v1/status")
            .ok()?
            .json()
            .ok()?;
        let reloaded = document["events"].as_array()?.iter().any(|e| {
            e["kind"] == "tls"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("reloaded"))
        });
        reloaded.then_some(document)
    })
    .expect("reload event on the page");
    let events = document["events"].as_array().cloned().unwrap_or_default();
    let has = |kind: &str, text: &str| {
        events
            .iter()
            .any(|e| e["kind"] == kind && e["message"].as_str().is_some_and(|m| m.contains(text)))
    };
    assert!(has("daemon", "started"), "{events:#?}");
    assert!(has("tunnel", "peer dc: up"), "{events:#?}");
    assert!(
        has("login", "administrator logged in from 198.18.10.2"),
        "{events:#?}"
    );
    assert!(events
        .iter()
        .all(|e| e["time_unix"].as_u64().is_some_and(|t| t > 1_600_000_000)));
    let records = document["proxy"]["recent_connections"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let record = records
        .iter()
        .find(|r| r["result"] == "ok")
        .expect("access record");
    assert_eq!(record["service"], "documents");
    assert_eq!(record["peer_identity"], Node::Hub.tls_name());
    assert!(
        h.hospital.log_text().contains("SIGHUP: TLS files reloaded"),
        "events reach the log"
    );
}

#[test]
fn ops3_control_socket_is_for_root_and_its_group_only() {
    require_root!();
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let lab = Lab::new().expect("lab");
    let clinic = lab
        .start(Node::Clinic, &lab.tunnel_config(Node::Clinic))
        .expect("clinic");
    let socket = clinic.runtime_dir.join(renkei::control_socket::SOCKET_NAME);
    let meta = std::fs::metadata(&socket).expect("socket");
    assert_eq!(meta.mode() & 0o7777, 0o660, "{}", socket.display());
    // Its group is the daemon's (systemd runs it with Group=renkei).
    let proc_status =
        std::fs::read_to_string(format!("/proc/{}/status", clinic.pid().expect("pid")))
            .expect("proc status");
    let daemon_gid: u32 = proc_status
        .lines()
        .find_map(|l| l.strip_prefix("Gid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|g| g.parse().ok())
        .expect("effective gid");
    assert_eq!(meta.gid(), daemon_gid);
    // Everything up to the socket may be traversed, as a runtime directory readable by the
    // group is: the socket's own mode is what must keep others out.
    let mut dir = clinic.runtime_dir.clone();
    loop {
        let mode = std::fs::metadata(&dir).expect("dir").permissions().mode();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode | 0o011))
            .expect("chmod");
        if !dir.pop() || dir.as_os_str() == "/" || dir == std::env::temp_dir() {
            break;
        }
    }
    let gid = daemon_gid.to_string();
    let run_as = |groups: &[&str]| {
        let mut command = std::process::Command::new("setpriv");
        command.args(["--reuid=65534", "--regid=65534"]);
        if groups.is_empty() {
            command.arg("--clear-groups");
        } else {
            command.arg(format!("--groups={}", groups.join(",")));
        }
        command
            .arg(renkei_lab::daemon::renkei_bin().expect("bin"))
            .args(["status", "--config"])
            .arg(&clinic.config)
            .output()
            .expect("setpriv")
    };
    let outsider = run_as(&[]);
    assert!(!outsider.status.success(), "{outsider:?}");
    let message = String::from_utf8_lossy(&outsider.stderr);
    assert!(
        message.contains("Permission denied")
            && message.contains("control socket is for root and the daemon's group"),
        "{message}"
    );
    assert!(outsider.stdout.is_empty(), "{outsider:?}");
    // The same unprivileged user in the socket's group reads the status.
    let member = run_as(&[&gid]);
    assert!(member.status.success(), "{member:?}");
    assert!(
        String::from_utf8_lossy(&member.stdout).contains("facility: lab clinic (viewing)"),
        "{member:?}"
    );
    // And root, as always.
    assert!(renkei_status(&clinic, false).contains("facility: lab clinic (viewing)"));
}
