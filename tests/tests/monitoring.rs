//! Monitoring a fleet with the operator's own tools (OPS-5): the alert and recording rules of
//! `contrib/prometheus` under `promtool`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use renkei_lab::monitoring::{contrib_dir, rules_of, yaml_file};
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
