//! Monitoring a fleet with the operator's own tools (OPS-4, OPS-5): the alert and recording
//! rules of `contrib/prometheus` under `promtool`, the Grafana dashboard of `contrib/grafana`,
//! and the metric names both use against what the daemon exports.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use renkei_lab::monitoring::{
    contrib_dir, dashboard_queries, exported_metric_families, renkei_metric_names, rules_of,
    yaml_file,
};
use serde_json::Value;

fn alert_rules_file() -> PathBuf {
    contrib_dir().join("prometheus/renkei-alerts.yml")
}

fn recording_rules_file() -> PathBuf {
    contrib_dir().join("prometheus/renkei-recording.yml")
}

fn rule_test_files() -> [PathBuf; 2] {
    [
        contrib_dir().join("prometheus/tests/renkei-alerts.test.yml"),
        contrib_dir().join("prometheus/tests/renkei-recording.test.yml"),
    ]
}

fn dashboard_file() -> PathBuf {
    contrib_dir().join("grafana/renkei-fleet.json")
}

fn yaml(path: &Path) -> Value {
    yaml_file(path).unwrap_or_else(|e| panic!("{e:#}"))
}

/// Runs promtool; its output on failure.
fn promtool(args: &[&std::ffi::OsStr]) -> String {
    let output = Command::new("promtool")
        .args(args)
        .output()
        .expect("promtool (scripts/install-deps installs prometheus)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn ops5_alert_and_recording_rules_pass_promtool_and_every_rule_is_unit_tested() {
    let alerts = alert_rules_file();
    let recording = recording_rules_file();
    let checked = promtool(&[
        "check".as_ref(),
        "rules".as_ref(),
        alerts.as_ref(),
        recording.as_ref(),
    ]);
    assert!(!checked.contains("WARNING"), "{checked}");
    let mut args: Vec<&std::ffi::OsStr> = vec!["test".as_ref(), "rules".as_ref()];
    let tests = rule_test_files();
    args.extend(tests.iter().map(|p| p.as_os_str()));
    let tested = promtool(&args);
    assert_eq!(tested.matches("SUCCESS").count(), 2, "{tested}");

    // The unit tests load the shipped files, not copies.
    for test in &tests {
        let dir = test.parent().expect("dir");
        for file in yaml(test)["rule_files"].as_array().expect("rule_files") {
            let path = dir.join(file.as_str().expect("a path"));
            let path = path.canonicalize().expect("a rule file");
            assert!(
                path == alerts.canonicalize().expect("alerts")
                    || path == recording.canonicalize().expect("recording"),
                "{} loads {}",
                test.display(),
                path.display()
            );
        }
    }

    // Every alert has a case where it fires and one where it does not.
    let alert_tests = yaml(&tests[0]);
    let mut cases: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for case in alert_tests["tests"]
        .as_array()
        .expect("tests")
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().into_iter().flatten())
    {
        let name = case["alertname"].as_str().expect("alertname").to_string();
        let expected = case["exp_alerts"].as_array().map_or(0, Vec::len);
        let entry = cases.entry(name).or_default();
        if expected > 0 {
            entry.0 += 1;
        } else {
            entry.1 += 1;
        }
    }
    let alert_file = yaml(&alerts);
    let names: Vec<String> = rules_of(&alert_file)
        .iter()
        .map(|rule| {
            rule["alert"]
                .as_str()
                .expect("an alerting rule")
                .to_string()
        })
        .collect();
    assert!(names.len() >= 10, "{names:?}");
    for name in &names {
        let (firing, quiet) = cases.get(name).copied().unwrap_or_default();
        assert!(firing >= 1, "{name}: no case where it fires");
        assert!(quiet >= 1, "{name}: no case where it stays quiet");
    }
    for tested in cases.keys() {
        assert!(
            names.contains(tested),
            "a test of an unknown alert {tested}"
        );
    }
    // Every alert says how serious it is and what it is about.
    for rule in rules_of(&alert_file) {
        let severity = rule["labels"]["severity"].as_str().unwrap_or_default();
        assert!(
            ["critical", "warning"].contains(&severity),
            "{}: severity {severity:?}",
            rule["alert"]
        );
        for annotation in ["summary", "description"] {
            assert!(
                rule["annotations"][annotation].is_string(),
                "{}: no {annotation}",
                rule["alert"]
            );
        }
    }

    // Every recording rule is evaluated in a unit test with the samples it must give.
    let recording_tests = yaml(&tests[1]);
    let tested: BTreeSet<&str> = recording_tests["tests"]
        .as_array()
        .expect("tests")
        .iter()
        .flat_map(|t| t["promql_expr_test"].as_array().into_iter().flatten())
        .filter(|case| {
            case["exp_samples"]
                .as_array()
                .is_some_and(|s| !s.is_empty())
        })
        .filter_map(|case| case["expr"].as_str())
        .collect();
    let recording_file = yaml(&recording);
    for rule in rules_of(&recording_file) {
        let record = rule["record"].as_str().expect("a recording rule");
        assert!(tested.contains(record), "{record} has no unit test");
    }
}

/// The names of recording rules (`level:metric:operation`) in an expression.
fn recorded_names(expr: &str) -> BTreeSet<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|token| token.contains(":renkei_"))
        .map(str::to_string)
        .collect()
}

#[test]
fn ops5_ops4_rules_and_dashboard_use_only_metrics_the_daemon_exports() {
    let families = exported_metric_families().expect("metrics.rs");
    let alerts = yaml(&alert_rules_file());
    let recording = yaml(&recording_rules_file());
    let records: BTreeSet<String> = rules_of(&recording)
        .iter()
        .filter_map(|rule| rule["record"].as_str().map(str::to_string))
        .collect();
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(dashboard_file()).expect("dashboard"))
            .expect("dashboard JSON");
    let mut expressions: Vec<(String, String)> = dashboard_queries(&dashboard);
    for rule in rules_of(&alerts).into_iter().chain(rules_of(&recording)) {
        let name = rule["alert"]
            .as_str()
            .or(rule["record"].as_str())
            .unwrap_or_default();
        expressions.push((
            name.to_string(),
            rule["expr"].as_str().expect("expr").to_string(),
        ));
    }
    let mut used = BTreeSet::new();
    for (what, expr) in &expressions {
        for name in renkei_metric_names(expr) {
            assert!(
                families.contains(&name),
                "{what}: {name} is not a metric the daemon exports (daemon/src/status/metrics.rs)"
            );
            used.insert(name);
        }
        for record in recorded_names(expr) {
            assert!(
                records.contains(&record),
                "{what}: {record} is not recorded"
            );
        }
    }
    // The rules cover the families they were written for.
    for family in [
        "renkei_tunnel_state",
        "renkei_tunnel_alarm",
        "renkei_certificate_expiry_seconds",
        "renkei_config_pending",
        "renkei_config_last_rollback_timestamp_seconds",
        "renkei_service_state",
        "renkei_service_refused_connections_total",
        "renkei_clock_synchronized",
        "renkei_firmware_last_update_timestamp_seconds",
        "renkei_hub_active",
        "renkei_hub_primary",
    ] {
        assert!(used.contains(family), "{family} is used by no rule");
    }
}

#[test]
fn ops5_fleet_dashboard_is_well_formed() {
    let text = std::fs::read_to_string(dashboard_file()).expect("dashboard");
    let dashboard: Value = serde_json::from_str(&text).expect("valid JSON");
    for field in ["uid", "title"] {
        assert!(
            dashboard[field].as_str().is_some_and(|s| !s.is_empty()),
            "{field}"
        );
    }
    assert!(
        dashboard["schemaVersion"].as_u64().is_some(),
        "schemaVersion"
    );
    let variables: BTreeSet<&str> = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert!(
        variables.contains("datasource") && variables.contains("facility"),
        "{variables:?}"
    );
    let builtins = ["__rate_interval", "__interval", "__range"];

    let mut ids = BTreeSet::new();
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10, "{} panels", panels.len());
    for panel in panels {
        let title = panel["title"].as_str().expect("every panel has a title");
        let id = panel["id"].as_u64().expect("id");
        assert!(ids.insert(id), "{title}: id {id} twice");
        let grid = &panel["gridPos"];
        let (x, w) = (
            grid["x"].as_u64().expect("x"),
            grid["w"].as_u64().expect("w"),
        );
        assert!(
            grid["y"].is_u64() && grid["h"].as_u64().is_some_and(|h| h > 0),
            "{title}"
        );
        assert!(w > 0 && x + w <= 24, "{title}: x {x} w {w}");
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        let mut ref_ids = BTreeSet::new();
        for target in targets {
            let ref_id = target["refId"].as_str().expect("refId");
            assert!(ref_ids.insert(ref_id), "{title}: refId {ref_id} twice");
            let expr = target["expr"].as_str().expect("expr");
            assert!(!expr.trim().is_empty(), "{title}");
            // Every $variable is the dashboard's or Grafana's own.
            for part in expr.split('$').skip(1) {
                let name: String = part
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                assert!(
                    variables.contains(name.as_str()) || builtins.contains(&name.as_str()),
                    "{title}: ${name} is not defined"
                );
            }
        }
    }
}
