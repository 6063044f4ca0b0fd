//! What the tests share: the boxes with their pages, the requests, the browser, the metrics.

use std::time::Duration;

use renkei::config::Config;
use renkei_lab::lab::{DOCUMENT_SERVER_ADDRESS, HUB_RELAY_ADDRESS};
use renkei_lab::operator::Operator;
use renkei_lab::tlstools::{run_bounded, DocumentServer};
use renkei_lab::web::{curl, status, status_toml, Reply, Session, METRICS_PORT, STATUS_PORT};
use renkei_lab::{wait_until, Daemon, Lab, Namespace, Node};
use serde_json::Value;

/// `renkei status [--json]` as an administrator runs it.
pub(crate) fn renkei_status(daemon: &Daemon, json: bool) -> String {
    let mut command = std::process::Command::new(renkei_lab::daemon::renkei_bin().expect("bin"));
    command.args(["status", "--config"]).arg(&daemon.config);
    if json {
        command.arg("--json");
    }
    let output = command.output().expect("renkei status");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The hospital with its page on the LAN and the operator's metrics listener on its tunnel
/// address, the hub, and a document server; one document fetched through the hub's outbound
/// service so the hospital's inbound service has a TLS handshake and an access record.
pub(crate) struct Hospital {
    pub(crate) hub: Daemon,
    pub(crate) hospital: Daemon,
    _documents: DocumentServer,
}

pub(crate) fn hospital_with_metrics(lab: &Lab) -> Hospital {
    let documents = DocumentServer::start(lab.lan_ns(Node::Hospital), DOCUMENT_SERVER_ADDRESS)
        .expect("document server");
    let hub = lab
        .start(Node::Hub, &lab.full_config(Node::Hub))
        .expect("hub");
    let text = lab.full_config(Node::Hospital)
        + &status_toml(
            &format!("198.18.10.1:{STATUS_PORT}"),
            // The data centre's monitoring reads with the hub box's certificate here.
            &format!(
                "metrics_listen = \"198.19.0.10:{METRICS_PORT}\"\nmetrics_identities = [\"{}\"]",
                Node::Hub.tls_name()
            ),
        )
        .expect("status");
    let hospital = lab.start(Node::Hospital, &text).expect("hospital");
    wait_for_page(lab.lan_ns(Node::Hospital), &hospital_base());
    wait_until(Duration::from_secs(15), "the hospital's tunnel", || {
        (hospital.peer("dc").ok()?["state"] == "up").then_some(())
    })
    .expect("tunnel up");
    wait_until(Duration::from_secs(15), "the hub's relay service", || {
        let status = hub.status().ok()?;
        status["proxy"]["services"]
            .as_array()?
            .iter()
            .any(|s| s["name"] == "hospital-documents")
            .then_some(())
    })
    .expect("relay listening");
    let stream = lab
        .ns(Node::Hub)
        .tcp_connect(HUB_RELAY_ADDRESS, Duration::from_secs(5))
        .expect("relay");
    let fetched = renkei_lab::tlstools::fetch_document(stream, 4096, 5, None, |_| {})
        .expect("document through the hospital");
    assert_eq!(fetched.len, 4096);
    wait_until(
        Duration::from_secs(15),
        "the hospital's access record",
        || {
            let status = hospital.status().ok()?;
            let ok = status["proxy"]["recent_connections"]
                .as_array()?
                .iter()
                .any(|r| r["result"] == "ok" && r["bytes_out"].as_u64() > Some(4096));
            ok.then_some(())
        },
    )
    .expect("access record");
    Hospital {
        hub,
        hospital,
        _documents: documents,
    }
}

pub(crate) fn promtool(ns: &Namespace, metrics: &str) {
    let finished = run_bounded(
        ns,
        "promtool",
        &["check", "metrics"],
        metrics.as_bytes(),
        Duration::from_secs(20),
    )
    .expect("promtool");
    assert!(
        finished.success(),
        "promtool check metrics failed:\n{}\n--- metrics ---\n{metrics}",
        finished.output
    );
}

pub(crate) fn sample(metrics: &str, prefix: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// `https://<ip>` with the port only when it is not the default, as browsers write URLs.
pub(crate) fn base_url(ip: &str) -> String {
    if STATUS_PORT == 443 {
        format!("https://{ip}")
    } else {
        format!("https://{ip}:{STATUS_PORT}")
    }
}

/// The clinic's page as seen from its LAN.
pub(crate) fn clinic_base() -> String {
    base_url("198.18.20.1")
}

/// The hospital's page as seen from its LAN.
pub(crate) fn hospital_base() -> String {
    base_url("198.18.10.1")
}

/// The clinic box alone (tunnel idle) with its status page on the LAN address.
pub(crate) fn clinic_with_page(lab: &Lab) -> Daemon {
    let text = lab.tunnel_config(Node::Clinic)
        + &status_toml(&format!("198.18.20.1:{STATUS_PORT}"), "").expect("status");
    let daemon = lab.start(Node::Clinic, &text).expect("clinic");
    wait_for_page(lab.lan_ns(Node::Clinic), &clinic_base());
    daemon
}

/// The clinic's whole config (services, tunnel) with its page on the LAN address and a
/// management API for `operator`; the caller starts the hub (and hospital) it needs first.
pub(crate) fn full_clinic_with_page(lab: &Lab, operator: &Operator) -> (Daemon, Config) {
    full_clinic_with_page_and_window(lab, operator, 600)
}

/// [`full_clinic_with_page`] with a confirm window of `confirm_secs`.
pub(crate) fn full_clinic_with_page_and_window(
    lab: &Lab,
    operator: &Operator,
    confirm_secs: u64,
) -> (Daemon, Config) {
    let mut config = lab.full(Node::Clinic);
    config.status = Some(status(&format!("198.18.20.1:{STATUS_PORT}")).expect("status"));
    config.management = Some(operator.management(Node::Clinic, confirm_secs, false));
    let daemon = lab.start(Node::Clinic, &config).expect("clinic");
    wait_for_page(lab.lan_ns(Node::Clinic), &clinic_base());
    (daemon, config)
}

/// Waits until the page answers its login form.
pub(crate) fn wait_for_page(ns: &Namespace, base: &str) {
    wait_until(Duration::from_secs(15), "the status page to answer", || {
        let reply = curl(ns, &[&format!("{base}/login")]).ok()?;
        (reply.status == 200).then_some(())
    })
    .expect("status page up");
}

pub(crate) fn post_login(ns: &Namespace, base: &str, password: &str, extra: &[&str]) -> Reply {
    let field = format!("password={password}");
    let url = format!("{base}/login");
    let mut args: Vec<&str> = extra.to_vec();
    args.extend(["--data-urlencode", &field, &url]);
    curl(ns, &args).expect("curl")
}

pub(crate) fn assert_security_headers(reply: &Reply) {
    let csp = reply.header("content-security-policy").unwrap_or("");
    assert!(
        csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
        "{reply:?}"
    );
    assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(reply.header("x-frame-options"), Some("DENY"));
}

/// Pushes `config` as `version` to `node`, and leaves it awaiting its confirmation.
pub(crate) fn push_pending(
    lab: &Lab,
    operator: &Operator,
    node: Node,
    version: u64,
    config: &Config,
) {
    let mut config = config.clone();
    config.meta.version = version;
    let signed = operator
        .write_signed(&format!("{}-v{version}.toml", node.short()), &config, None)
        .expect("sign");
    let pushed = operator.push(lab, node, &signed).expect("push");
    assert!(
        pushed.success,
        "push of version {version}:\n{}",
        pushed.output
    );
}

/// The year of the box's clock (`2025`), which starts a date the page writes in Japanese.
pub(crate) fn daemon_year(document: &Value) -> String {
    let now = document["time_unix"].as_u64().unwrap_or(0);
    let time = renkei::proxy::accesslog::rfc3339(std::time::UNIX_EPOCH + Duration::from_secs(now));
    time.get(..4).unwrap_or("").to_string()
}

/// (year, month, day) UTC of the day `days` from now, for short-lived lab certificates.
pub(crate) fn ymd_in_days(days: i64) -> (i32, u8, u8) {
    let now = std::time::SystemTime::now();
    let shift = Duration::from_secs(days.unsigned_abs() * 86_400);
    let then = if days < 0 { now - shift } else { now + shift };
    let text = renkei::proxy::accesslog::rfc3339(then);
    let year = text.get(0..4).and_then(|p| p.parse().ok()).expect("year");
    let month = text.get(5..7).and_then(|p| p.parse().ok()).expect("month");
    let day = text.get(8..10).and_then(|p| p.parse().ok()).expect("day");
    (year, month, day)
}

/// A POST with the session's cookie and CSRF token.
pub(crate) fn post_with_session(
    ns: &Namespace,
    base: &str,
    session: &Session,
    path: &str,
) -> Reply {
    curl(
        ns,
        &[
            "-X",
            "POST",
            "-H",
            &format!("Cookie: {}", session.cookie),
            "-H",
            &format!("X-CSRF-Token: {}", session.csrf),
            &format!("{base}{path}"),
        ],
    )
    .expect("curl")
}

/// `tests/browser/` with its `npm ci` done (scripts/install-deps does it).
pub(crate) fn browser_dir() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "{}: playwright-core missing; run scripts/install-deps (npm ci there)",
        dir.display()
    );
    dir
}

/// Runs `tests/browser/status_page.mjs` in `ns` against `base` with `options`; the JSON it
/// printed, and the screenshot it took.
pub(crate) fn run_browser(
    lab: &Lab,
    ns: &Namespace,
    base: &str,
    options: &Value,
) -> (Value, Vec<u8>) {
    let browser = browser_dir();
    let screenshot = lab.dir.join("status-page.png");
    let profile = lab.dir.join("chromium-profile");
    let _ = std::fs::remove_dir_all(&profile);
    std::fs::create_dir_all(&profile).expect("profile dir");
    let result = renkei_lab::web::browser_script(
        ns,
        &browser.join("status_page.mjs"),
        &[
            base,
            &profile.to_string_lossy(),
            &screenshot.to_string_lossy(),
            &options.to_string(),
        ],
        Duration::from_secs(180),
    );
    assert_eq!(result["ok"], true, "{result:#}");
    assert_eq!(
        result["first_url"],
        format!("{base}/login"),
        "redirected to the login first"
    );
    // Offline by construction: every request stayed on the box, and the CSP held.
    for url in result["requests"].as_array().cloned().unwrap_or_default() {
        let url = url.as_str().unwrap_or("");
        assert!(url.starts_with(base), "request outside the box: {url}");
    }
    assert_eq!(
        result["console_errors"],
        serde_json::json!([]),
        "{result:#}"
    );
    let png = std::fs::read(&screenshot).expect("screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000);
    (result, png)
}

/// The operator identity of the browser tests' pushes.
pub(crate) const OPERATOR_IDENTITY: &str = "operator.renkei.example";

/// The hub and the hospital with its document server: what the clinic's tunnel and service
/// reach.
pub(crate) fn data_centre_with_documents(lab: &Lab) -> (DocumentServer, Daemon, Daemon) {
    let documents = DocumentServer::start(lab.lan_ns(Node::Hospital), DOCUMENT_SERVER_ADDRESS)
        .expect("document server");
    let hub = lab
        .start(Node::Hub, &lab.full_config(Node::Hub))
        .expect("hub");
    let hospital = lab
        .start(Node::Hospital, &lab.full_config(Node::Hospital))
        .expect("hospital");
    (documents, hub, hospital)
}

/// A viewer PC on the clinic's LAN fetches a document through the clinic's service (an
/// on-demand tunnel comes up for it).
pub(crate) fn viewer_fetches_a_document(lan: &Namespace, documents: &DocumentServer) {
    let service_address = format!(
        "{}:{}",
        renkei_lab::lab::LAN_SERVICE_ADDRESS,
        renkei_lab::lab::SERVICE_PORT
    );
    let stream = wait_until(Duration::from_secs(15), "the clinic's service", || {
        lan.tcp_connect(&service_address, Duration::from_secs(5))
            .ok()
    })
    .expect("viewer connects");
    let fetched =
        renkei_lab::tlstools::fetch_document(stream, 64 * 1024, 3, None, |_| {}).expect("fetch");
    assert_eq!(fetched.len, 64 * 1024);
    assert!(documents.served() >= 1);
}
