//! The operator's monitoring around the lab (OPS-4, OPS-5): the files of `contrib/prometheus`
//! and `contrib/grafana` read as data, the metric families the daemon exports, and a real
//! Prometheus and Alertmanager (Debian's packages) started inside a lab namespace on its own
//! loopback, stopped when dropped.
//!
//! Prometheus' rule and test files are YAML; they are read with Python's YAML module
//! (`python3-yaml`, scripts/install-deps) into JSON values, and what the tests write for
//! Prometheus is JSON, which is YAML too.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};

use crate::netns::Namespace;
use crate::wait::wait_until;
use crate::web::curl;

/// Where Prometheus listens inside its namespace (its own loopback: no other lab sees it).
pub const PROMETHEUS_ADDRESS: &str = "127.0.0.1:9090";
/// Where Alertmanager listens inside the same namespace.
pub const ALERTMANAGER_ADDRESS: &str = "127.0.0.1:9093";
/// Longest a Prometheus or Alertmanager start may take until it answers ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The repository's `contrib/` folder.
pub fn contrib_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib")
}

/// A YAML file as a JSON value (Python's YAML module; a parse error names the file and line).
pub fn yaml_file(path: &Path) -> anyhow::Result<Value> {
    let output = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)",
        ])
        .arg(path)
        .output()
        .context("python3 (scripts/install-deps installs python3-yaml)")?;
    anyhow::ensure!(
        output.status.success(),
        "{}: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).with_context(|| format!("{}", path.display()))
}

/// Every rule of a Prometheus rule file (the `rules` of every group).
pub fn rules_of(file: &Value) -> Vec<&Value> {
    file["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|group| group["rules"].as_array().into_iter().flatten())
        .collect()
}

/// The names of renkei's metric families in a PromQL expression: every identifier starting
/// with `renkei_` that is not part of a longer name (recording rules' `level:renkei_...:op`
/// names are left out: they are not the daemon's) nor inside a quoted label value.
pub fn renkei_metric_names(expr: &str) -> BTreeSet<String> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    // Quoted strings become blanks, so a label value is never read as a name.
    let mut unquoted = String::with_capacity(expr.len());
    let (mut quoted, mut escaped) = (false, false);
    for c in expr.chars() {
        match (quoted, escaped, c) {
            (true, false, '\\') => escaped = true,
            (true, true, _) => escaped = false,
            (_, false, '"') => quoted = !quoted,
            _ => {}
        }
        unquoted.push(if quoted || c == '"' { ' ' } else { c });
    }
    let mut names = BTreeSet::new();
    let mut rest = unquoted.as_str();
    let mut before: Option<char> = None;
    while let Some(at) = rest.find("renkei_") {
        let preceding = rest[..at].chars().next_back().or(before);
        let tail = &rest[at..];
        let end = tail.find(|c: char| !is_name(c)).unwrap_or(tail.len());
        let name = &tail[..end];
        if !preceding.is_some_and(is_name) && !name.contains(':') {
            names.insert(name.to_string());
        }
        before = name.chars().next_back();
        rest = &tail[end..];
    }
    names
}

/// The metric families `daemon/src/status/metrics.rs` renders: every `"renkei_..."` string
/// literal of its code (its tests below `#[cfg(test)]` left out).
pub fn exported_metric_families() -> anyhow::Result<BTreeSet<String>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../daemon/src/status/metrics.rs");
    let source =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let code = source.split("#[cfg(test)]").next().unwrap_or_default();
    let names: BTreeSet<String> = code
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|literal| {
            literal.starts_with("renkei_")
                && literal
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
        .map(str::to_string)
        .collect();
    anyhow::ensure!(names.len() > 20, "too few families in {}", path.display());
    Ok(names)
}

/// The alert rules with every `for:` set to `hold` and every group evaluated each
/// `interval`, for a lab that cannot wait minutes; everything else as shipped.
pub fn quick_rules(rules: &Value, hold: &str, interval: &str) -> Value {
    let mut rules = rules.clone();
    for group in rules["groups"].as_array_mut().into_iter().flatten() {
        group["interval"] = json!(interval);
        for rule in group["rules"].as_array_mut().into_iter().flatten() {
            if let Some(rule) = rule.as_object_mut() {
                if rule.contains_key("for") {
                    rule.insert("for".to_string(), json!(hold));
                }
            }
        }
    }
    rules
}

/// One box as the operator's monitoring knows it: a scrape job of its own, since Prometheus
/// checks the box's certificate name per job (`tls_config.server_name`), and a file_sd file
/// with its address and the target labels the rules use.
#[derive(Debug, Clone)]
pub struct ScrapeTarget {
    /// The box's certificate name: the `box` label and the TLS server name.
    pub box_name: String,
    /// The `facility` label.
    pub facility: String,
    /// `always_on` or `on_demand`: the `policy` label.
    pub policy: String,
    /// `ip:port` of the box's metrics listener (its tunnel address).
    pub address: String,
}

/// The operator's client certificate and CA, as Prometheus reads them.
#[derive(Debug, Clone)]
pub struct ScrapeIdentity {
    /// The operator CA (verifies the boxes).
    pub ca_file: PathBuf,
    /// The client certificate (its name is in every box's `status.metrics_identities`).
    pub cert_file: PathBuf,
    /// Its key.
    pub key_file: PathBuf,
}

/// Writes one file_sd file per target under `dir/targets` and returns the Prometheus config:
/// one job per box, the rule files, and Alertmanager at [`ALERTMANAGER_ADDRESS`].
pub fn prometheus_config(
    dir: &Path,
    targets: &[ScrapeTarget],
    identity: &ScrapeIdentity,
    rule_files: &[PathBuf],
    interval: &str,
) -> anyhow::Result<Value> {
    let target_dir = dir.join("targets");
    std::fs::create_dir_all(&target_dir)?;
    let mut jobs = Vec::new();
    for target in targets {
        let short = target
            .box_name
            .split('.')
            .next()
            .unwrap_or(&target.box_name);
        let file = target_dir.join(format!("{short}.json"));
        let sd = json!([{
            "targets": [target.address],
            "labels": {
                "box": target.box_name,
                "facility": target.facility,
                "policy": target.policy,
            },
        }]);
        std::fs::write(&file, serde_json::to_vec_pretty(&sd)?)?;
        jobs.push(json!({
            "job_name": format!("renkei-{short}"),
            "scheme": "https",
            "tls_config": {
                "ca_file": identity.ca_file,
                "cert_file": identity.cert_file,
                "key_file": identity.key_file,
                "server_name": target.box_name,
            },
            "file_sd_configs": [{"files": [file], "refresh_interval": "5s"}],
        }));
    }
    Ok(json!({
        "global": {
            "scrape_interval": interval,
            "scrape_timeout": interval,
            "evaluation_interval": interval,
        },
        "rule_files": rule_files,
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [ALERTMANAGER_ADDRESS]}]}]},
        "scrape_configs": jobs,
    }))
}

/// A process of the monitoring stack inside a namespace; killed and reaped when dropped.
struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Process {
    fn start(
        ns: &Namespace,
        name: &'static str,
        args: &[String],
        log: &Path,
    ) -> anyhow::Result<Self> {
        let out = std::fs::File::create(log)?;
        let child = ns
            .command(name)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {name} (scripts/install-deps installs it)"))?;
        Ok(Process {
            name,
            child,
            log: log.to_path_buf(),
        })
    }

    /// Waits until `GET http://<address>/-/ready` answers 200.
    fn wait_ready(&mut self, ns: &Namespace, address: &str) -> anyhow::Result<()> {
        let url = format!("http://{address}/-/ready");
        let ready = wait_until(READY_TIMEOUT, self.name, || {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Some(false);
            }
            let reply = curl(ns, &[&url]).ok()?;
            (reply.status == 200).then_some(true)
        });
        match ready {
            Ok(true) => Ok(()),
            _ => anyhow::bail!(
                "{} did not become ready:\n{}",
                self.name,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            ),
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Prometheus started with a config file and its own TSDB under `dir`.
pub struct Prometheus<'a> {
    ns: &'a Namespace,
    process: Process,
}

impl<'a> Prometheus<'a> {
    /// Writes `config` to `dir/prometheus.json` and starts Prometheus in `ns` on
    /// [`PROMETHEUS_ADDRESS`], resending alerts every second; waits until it is ready.
    pub fn start(ns: &'a Namespace, dir: &Path, config: &Value) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let config_file = dir.join("prometheus.json");
        std::fs::write(&config_file, serde_json::to_vec_pretty(config)?)?;
        let args = [
            format!("--config.file={}", config_file.display()),
            format!("--storage.tsdb.path={}", dir.join("tsdb").display()),
            format!("--web.listen-address={PROMETHEUS_ADDRESS}"),
            "--rules.alert.resend-delay=1s".to_string(),
        ];
        let mut process = Process::start(ns, "prometheus", &args, &dir.join("prometheus.log"))?;
        process.wait_ready(ns, PROMETHEUS_ADDRESS)?;
        Ok(Prometheus { ns, process })
    }

    /// `GET /api/v1/<path>` with form parameters; the answer's JSON, or its error.
    pub fn api(&self, path: &str, params: &[(&str, &str)]) -> anyhow::Result<Value> {
        let url = format!("http://{PROMETHEUS_ADDRESS}/api/v1/{path}");
        let mut args: Vec<String> = vec!["-G".to_string()];
        for (name, value) in params {
            args.push("--data-urlencode".to_string());
            args.push(format!("{name}={value}"));
        }
        args.push(url);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let reply = curl(self.ns, &args)?;
        let body = reply.json()?;
        anyhow::ensure!(
            reply.status == 200 && body["status"] == "success",
            "{path} {params:?}: {} {}",
            reply.status,
            reply.body
        );
        Ok(body["data"].clone())
    }

    /// An instant query's result vector (or scalar): a parse error is an error.
    pub fn query(&self, expr: &str) -> anyhow::Result<Value> {
        Ok(self.api("query", &[("query", expr)])?["result"].clone())
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.process.log).unwrap_or_default()
    }
}

/// An Alertmanager (no cluster, one receiver that sends nothing) with its storage under `dir`.
pub struct Alertmanager<'a> {
    ns: &'a Namespace,
    process: Process,
}

impl<'a> Alertmanager<'a> {
    /// Starts Alertmanager in `ns` on [`ALERTMANAGER_ADDRESS`] and waits until it is ready.
    pub fn start(ns: &'a Namespace, dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let config = json!({
            "route": {
                "receiver": "operator",
                "group_by": ["alertname", "box"],
                "group_wait": "1s",
                "group_interval": "1s",
                "repeat_interval": "1h",
            },
            "receivers": [{"name": "operator"}],
        });
        let config_file = dir.join("alertmanager.json");
        std::fs::write(&config_file, serde_json::to_vec_pretty(&config)?)?;
        let args = [
            format!("--config.file={}", config_file.display()),
            format!("--storage.path={}", dir.join("data").display()),
            format!("--web.listen-address={ALERTMANAGER_ADDRESS}"),
            "--cluster.listen-address=".to_string(),
        ];
        let mut process = Process::start(
            ns,
            "prometheus-alertmanager",
            &args,
            &dir.join("alertmanager.log"),
        )?;
        process.wait_ready(ns, ALERTMANAGER_ADDRESS)?;
        Ok(Alertmanager { ns, process })
    }

    /// The alerts Alertmanager holds as active now (`GET /api/v2/alerts`: resolved ones are
    /// not listed).
    pub fn active_alerts(&self) -> anyhow::Result<Vec<Value>> {
        let url = format!("http://{ALERTMANAGER_ADDRESS}/api/v2/alerts?active=true");
        let reply = curl(self.ns, &[&url])?;
        anyhow::ensure!(reply.status == 200, "{reply:?}");
        Ok(reply.json()?.as_array().cloned().unwrap_or_default())
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.process.log).unwrap_or_default()
    }
}

/// Every PromQL expression of a Grafana dashboard: each panel's targets (rows' nested panels
/// too) and each query variable's `label_values(<selector>, <label>)` selector, with the
/// panel title (or variable name) it belongs to.
pub fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    fn panels<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for panel in list.as_array().into_iter().flatten() {
            out.push(panel);
            panels(&panel["panels"], out);
        }
    }
    let mut all = Vec::new();
    panels(&dashboard["panels"], &mut all);
    let mut queries = Vec::new();
    for panel in all {
        let title = panel["title"].as_str().unwrap_or_default().to_string();
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                queries.push((title.clone(), expr.to_string()));
            }
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let Some(definition) = variable["query"]["query"].as_str() else {
            continue;
        };
        let name = variable["name"].as_str().unwrap_or_default().to_string();
        let selector = definition
            .strip_prefix("label_values(")
            .and_then(|rest| rest.rsplit_once(','))
            .map_or(definition, |(selector, _)| selector);
        queries.push((name, selector.trim().to_string()));
    }
    queries
}

/// `expr` with the dashboard's variables replaced as Grafana would with "All" selected.
pub fn with_variables_for_all(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__interval", "15s")
        .replace("$__range", "1h")
        .replace("$facility", ".*")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops5_metric_names_are_found_in_expressions_but_not_recording_rule_names() {
        let names = renkei_metric_names(
            "up == 0 or max without(state) (renkei_tunnel_state{x=\"renkei_no\"}) \
             + box:renkei_peers_bytes:rate5m + rate(renkei_peers_receive_bytes_total[5m])",
        );
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        assert_eq!(
            names,
            ["renkei_peers_receive_bytes_total", "renkei_tunnel_state"]
        );
    }
}
