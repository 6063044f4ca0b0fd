//! The status page from a browser's seat: a `[status]` section for lab configs, `curl` run inside
//! a namespace (the administrator's PC on the facility LAN, or the operator in the data centre),
//! and a login helper. Every request is bounded in time.

use std::process::Command;
use std::time::Duration;

use anyhow::Context;

use renkei::config::StatusConfig;

use crate::netns::Namespace;

/// Port of every lab box's status page (on its LAN address).
pub const STATUS_PORT: u16 = 443;
/// Port of the metrics-only listener (on the tunnel address).
pub const METRICS_PORT: u16 = 9100;
/// The administrator password of every lab box.
pub const ADMIN_PASSWORD: &str = "correct horse battery staple";
/// Longest one curl run may take.
pub const CURL_TIMEOUT_SECS: u64 = 20;

/// An argon2id hash of `password`, made by the real `renkei passwd`.
pub fn password_hash(password: &str) -> anyhow::Result<String> {
    use std::io::Write;
    let mut child = Command::new(crate::daemon::renkei_bin()?)
        .arg("passwd")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("renkei passwd")?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(format!("{password}\n").as_bytes())?;
    let output = child.wait_with_output()?;
    anyhow::ensure!(output.status.success(), "renkei passwd failed");
    Ok(String::from_utf8(output.stdout)?.trim().to_string())
}

/// A `[status]` section listening on `listen` (plain HTTP on loopback), with the lab password.
pub fn status(listen: &str) -> anyhow::Result<StatusConfig> {
    Ok(StatusConfig {
        listen: listen
            .parse()
            .with_context(|| format!("status listen {listen:?}"))?,
        admin_password_hash: password_hash(ADMIN_PASSWORD)?,
        certificate_file: None,
        private_key_file: None,
        metrics_listen: None,
        metrics_identities: Vec::new(),
        session_ttl_secs: 3600,
        require_second_factor: None,
        per_peer_metrics: true,
    })
}

/// A `[status]` section listening on `listen`, with the lab password and `extra` lines.
pub fn status_toml(listen: &str, extra: &str) -> anyhow::Result<String> {
    Ok(format!(
        "\n[status]\nlisten = \"{listen}\"\nadmin_password_hash = \"{}\"\nsession_ttl_secs = 3600\n{extra}\n",
        password_hash(ADMIN_PASSWORD)?
    ))
}

/// One HTTP answer as curl saw it.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code (0 when curl got no HTTP answer at all).
    pub status: u16,
    /// Header lines, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body as text (lossy).
    pub body: String,
    /// curl's exit code.
    pub curl_exit: i32,
    /// curl's stderr.
    pub stderr: String,
}

impl Reply {
    /// The first header of that (lower-case) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_str(&self.body).with_context(|| format!("not JSON: {}", self.body))
    }
}

/// The operator's scrape of a box's metrics listener (`https://<server_name>:METRICS_PORT/metrics`
/// at `address`) with curl inside `ns`, trusting `ca`, presenting `client`; within `max_time`.
pub fn scrape_metrics(
    ns: &Namespace,
    server_name: &str,
    address: &str,
    ca: &std::path::Path,
    client: &crate::pki::LeafFiles,
    max_time: Duration,
) -> anyhow::Result<Reply> {
    let resolve = format!("{server_name}:{METRICS_PORT}:{address}");
    let url = format!("https://{server_name}:{METRICS_PORT}/metrics");
    let (ca, cert, key, max_time) = (
        ca.display().to_string(),
        client.cert.display().to_string(),
        client.key.display().to_string(),
        max_time.as_secs().max(1).to_string(),
    );
    curl(
        ns,
        &[
            "--max-time",
            &max_time,
            "--cacert",
            &ca,
            "--resolve",
            &resolve,
            "--cert",
            &cert,
            "--key",
            &key,
            &url,
        ],
    )
}

/// Runs `curl` inside `ns` (`-k`: the lab page's certificate is self-signed; tests check its
/// fingerprint separately) with `args`, and parses the answer.
pub fn curl(ns: &Namespace, args: &[&str]) -> anyhow::Result<Reply> {
    let max_time = CURL_TIMEOUT_SECS.to_string();
    let output = ns
        .command("curl")
        .args([
            "-s",
            "-S",
            "-k",
            "-i",
            "--http1.1",
            "--path-as-is",
            "--max-time",
            &max_time,
        ])
        .args(args)
        .output()
        .context("running curl")?;
    let raw = String::from_utf8_lossy(&output.stdout).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw.as_str(), ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Reply {
        status,
        headers,
        body: body.to_string(),
        curl_exit: output.status.code().unwrap_or(-1),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// A logged-in administrator: the session cookie and its CSRF token.
#[derive(Debug, Clone)]
pub struct Session {
    /// `renkei_session=<token>`.
    pub cookie: String,
    /// For the `X-CSRF-Token` header.
    pub csrf: String,
}

/// Logs in from `ns` to the page at `base` (`https://198.18.20.1:443`) with `password`.
pub fn login(ns: &Namespace, base: &str, password: &str) -> anyhow::Result<Session> {
    let reply = curl(
        ns,
        &[
            "--data-urlencode",
            &format!("password={password}"),
            &format!("{base}/login"),
        ],
    )?;
    anyhow::ensure!(reply.status == 303, "login answered {reply:?}");
    let cookie = reply
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .context("no session cookie")?
        .to_string();
    let session = curl(
        ns,
        &[
            "-H",
            &format!("Cookie: {cookie}"),
            &format!("{base}/api/v1/session"),
        ],
    )?;
    let csrf = session.json()?["csrf_token"]
        .as_str()
        .context("no csrf token")?
        .to_string();
    Ok(Session { cookie, csrf })
}

/// GET `path` with a session.
pub fn get(ns: &Namespace, base: &str, session: &Session, path: &str) -> anyhow::Result<Reply> {
    curl(
        ns,
        &[
            "-H",
            &format!("Cookie: {}", session.cookie),
            &format!("{base}{path}"),
        ],
    )
}

/// The SHA-256 fingerprint (`AB:CD:...`) of the certificate served at `address` (`ip:port`,
/// `[v6]:port`), as `openssl s_client` run inside `ns` sees it: what a browser's certificate
/// viewer shows.
pub fn served_fingerprint(ns: &Namespace, address: &str) -> anyhow::Result<String> {
    let finished = crate::tlstools::run_bounded(
        ns,
        "sh",
        &[
            "-c",
            &format!(
                "openssl s_client -connect {address} </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256"
            ),
        ],
        b"",
        Duration::from_secs(CURL_TIMEOUT_SECS),
    )?;
    finished
        .output
        .lines()
        .find_map(|l| l.split_once('=').map(|(_, f)| f.trim().to_string()))
        .with_context(|| format!("no fingerprint in {:?}", finished.output))
}

/// Runs the browser script `script` (tests/browser/*.mjs) with `args` in `ns`, giving it the
/// admin password on stdin; the JSON line it prints, which must say `"ok": true`.
pub fn browser_script(
    ns: &Namespace,
    script: &std::path::Path,
    args: &[&str],
    timeout: Duration,
) -> serde_json::Value {
    let script = script.to_string_lossy();
    let mut argv = vec![script.as_ref()];
    argv.extend_from_slice(args);
    let finished = crate::tlstools::run_bounded(
        ns,
        "node",
        &argv,
        format!("{ADMIN_PASSWORD}\n").as_bytes(),
        timeout,
    )
    .expect("node");
    let line = finished
        .output
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no result from the browser: {}", finished.output));
    let result: serde_json::Value = serde_json::from_str(line).expect("browser result");
    assert_eq!(result["ok"], true, "{result:#}");
    result
}
