//! Property tests: the config loader never panics, whatever it is given, and every diagnostic
//! it returns points at a real place in the text.
//!
//! Each property runs against one fixture directory (so relative key and certificate paths in
//! mutated example configs resolve to real files) with a bounded number of cases, so the whole
//! file stays well under 30 s in a debug build.

mod common;

use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestRunner};

use renkei::config::{Diagnostic, Diagnostics};

use common::{Fixture, EXAMPLES};

/// Runs `test` on `cases` values of `strategy` against one fixture, failing on any panic.
fn run<S: Strategy>(
    cases: u32,
    strategy: S,
    test: impl Fn(&Fixture, S::Value) -> Result<(), TestCaseError>,
) {
    let fixture = Fixture::new();
    let mut runner = TestRunner::new(RunnerConfig {
        cases,
        failure_persistence: None,
        ..RunnerConfig::default()
    });
    if let Err(e) = runner.run(&strategy, |value| test(&fixture, value)) {
        panic!("{e}");
    }
}

/// Loads `text` and checks the diagnostics' positions; the loader must not panic.
fn load_and_check_positions(fixture: &Fixture, text: &str) -> Result<(), TestCaseError> {
    let text = fixture.substitute(text);
    match renkei::config::load_str(&text, Path::new("fuzz.toml"), fixture.path()) {
        Ok(_) => Ok(()),
        Err(diagnostics) => check_positions(&text, &diagnostics),
    }
}

/// Every diagnostic is 1-based, inside `text`, one line long and in file order.
fn check_positions(text: &str, diagnostics: &Diagnostics) -> Result<(), TestCaseError> {
    prop_assert!(!diagnostics.0.is_empty(), "an error with no diagnostics");
    // A text with n newlines has n + 1 lines (the last may be empty).
    let lines: Vec<&str> = text.split('\n').collect();
    for d in &diagnostics.0 {
        prop_assert!(d.line >= 1 && d.column >= 1, "not 1-based: {d}");
        prop_assert!(
            d.line <= lines.len(),
            "line {} past the end ({} lines): {d}",
            d.line,
            lines.len()
        );
        let width = lines[d.line - 1].chars().count();
        prop_assert!(
            d.column <= width + 1,
            "column {} past the end of line {} ({width} characters): {d}",
            d.column,
            d.line
        );
        prop_assert!(!d.message.is_empty(), "empty message: {d}");
        prop_assert!(!d.message.contains('\n'), "multi-line message: {d}");
        prop_assert_eq!(&d.file, Path::new("fuzz.toml"));
    }
    let mut sorted = diagnostics.0.clone();
    sorted.sort_by_key(|d| (d.line, d.column));
    prop_assert_eq!(&sorted, &diagnostics.0, "diagnostics are not in file order");
    Ok(())
}

/// (a) Arbitrary text, and text made of TOML's punctuation.
#[test]
fn int1_arbitrary_strings_never_panic() {
    let strategy = prop_oneof![any::<String>(), "[\\[\\]{}=,.\"'#a-z0-9_ \\n\\t:/-]{0,300}",];
    run(3000, strategy, |fixture, text| {
        load_and_check_positions(fixture, &text)
    });
}

/// A replacement value in TOML syntax: strings, numbers, booleans, arrays, inline tables.
fn toml_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        "[a-zA-Z0-9 ./:_\\[\\]-]{0,24}".prop_map(|s| format!("{s:?}")),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        any::<bool>().prop_map(|b| b.to_string()),
        Just("\"198.19.0.1/24\"".to_string()),
        Just("\"198.19.0.10:8443\"".to_string()),
        Just("\"[fd00::1]:51820\"".to_string()),
        Just("\"0.0.0.0:0\"".to_string()),
        Just("\"open.key\"".to_string()),
        Just("\"$OWN_PUBLIC_KEY\"".to_string()),
        Just("0".to_string()),
        Just("65536".to_string()),
        Just("1979-05-27T07:32:00Z".to_string()),
        "[\\x00-\\x7f]{0,12}",
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
            prop::collection::vec(("[a-z_]{1,10}", inner), 0..4).prop_map(|v| {
                let fields: Vec<String> = v.iter().map(|(k, x)| format!("{k} = {x}")).collect();
                format!("{{ {} }}", fields.join(", "))
            }),
        ]
    })
}

/// One edit of an example config.
#[derive(Debug, Clone)]
enum Mutation {
    DeleteLine(prop::sample::Index),
    DuplicateLine(prop::sample::Index),
    SwapLines(prop::sample::Index, prop::sample::Index),
    ReplaceValue(prop::sample::Index, String),
    InsertLine(prop::sample::Index, String),
    DeleteChar(prop::sample::Index),
    InsertChar(prop::sample::Index, char),
    ReplaceChar(prop::sample::Index, char),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let index = any::<prop::sample::Index>;
    prop_oneof![
        index().prop_map(Mutation::DeleteLine),
        index().prop_map(Mutation::DuplicateLine),
        (index(), index()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        (index(), toml_value()).prop_map(|(i, v)| Mutation::ReplaceValue(i, v)),
        (
            index(),
            "\\[{1,2}[a-z.]{0,16}\\]{0,2}|[a-z_]{1,12} = .{0,10}"
        )
            .prop_map(|(i, l)| Mutation::InsertLine(i, l)),
        index().prop_map(Mutation::DeleteChar),
        (index(), any::<char>()).prop_map(|(i, c)| Mutation::InsertChar(i, c)),
        (index(), any::<char>()).prop_map(|(i, c)| Mutation::ReplaceChar(i, c)),
    ]
}

/// Applies one mutation; lines keep their contents, characters are edited on char boundaries.
fn apply(text: &str, mutation: &Mutation) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let mut chars: Vec<char> = text.chars().collect();
    let n = lines.len().max(1);
    match mutation {
        Mutation::DeleteLine(i) if !lines.is_empty() => {
            lines.remove(i.index(n));
        }
        Mutation::DuplicateLine(i) if !lines.is_empty() => {
            let at = i.index(n);
            let copy = lines[at].clone();
            lines.insert(at, copy);
        }
        Mutation::SwapLines(a, b) if !lines.is_empty() => lines.swap(a.index(n), b.index(n)),
        Mutation::ReplaceValue(i, value) if !lines.is_empty() => {
            let at = i.index(n);
            if let Some((key, _)) = lines[at].split_once(" = ") {
                lines[at] = format!("{key} = {value}");
            }
        }
        Mutation::InsertLine(i, line) => lines.insert(i.index(n + 1), line.clone()),
        Mutation::DeleteChar(i) if !chars.is_empty() => {
            chars.remove(i.index(chars.len()));
            return chars.into_iter().collect();
        }
        Mutation::InsertChar(i, c) => {
            chars.insert(i.index(chars.len() + 1), *c);
            return chars.into_iter().collect();
        }
        Mutation::ReplaceChar(i, c) if !chars.is_empty() => {
            let at = i.index(chars.len());
            chars[at] = *c;
            return chars.into_iter().collect();
        }
        _ => {}
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// (b) Each example config with one to four random edits.
#[test]
fn int1_mutated_examples_never_panic() {
    let strategy = (0..EXAMPLES.len(), prop::collection::vec(mutation(), 1..5));
    run(3000, strategy, |fixture, (example, mutations)| {
        let mut text = EXAMPLES[example].1.to_string();
        for m in &mutations {
            text = apply(&text, m);
        }
        load_and_check_positions(fixture, &text)
    });
}

/// Keys the schema knows, so generated tables reach the deeper parts of the loader.
const KEYS: &[&str] = &[
    "meta",
    "version",
    "description",
    "facility",
    "name",
    "role",
    "paths",
    "state_dir",
    "tunnel",
    "interface",
    "private_key_file",
    "listen_port",
    "address",
    "mtu",
    "handshakes_per_sec",
    "policy",
    "mode",
    "peer",
    "public_key",
    "endpoint",
    "allowed_ips",
    "persistent_keepalive_secs",
    "tls",
    "certificate_file",
    "ca_file",
    "service",
    "direction",
    "listen",
    "target",
    "server_name",
    "allowed_identities",
    "min_tls",
    "status",
    "admin_password_hash",
    "metrics_listen",
    "management",
    "operator_ca_file",
    "operator_identities",
    "operator_signing_key_file",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(KEYS).prop_map(str::to_string),
        1 => "[a-z_]{1,8}",
        1 => any::<String>(),
    ]
}

fn structured_value() -> impl Strategy<Value = toml::Value> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(toml::Value::Integer),
        any::<bool>().prop_map(toml::Value::Boolean),
        (-1e6f64..1e6).prop_map(toml::Value::Float),
        prop::sample::select(
            &[
                "hub",
                "disclosing",
                "viewing",
                "inbound",
                "outbound",
                "always_on",
                "on_demand",
                "1.2",
                "1.3",
                "wg.key",
                "open.key",
                "tls/box.key",
                "/var/lib/renkei",
                "198.19.0.1/24",
                "198.19.0.10/32",
                "198.19.0.10:8443",
                "198.18.20.1:8443",
                "198.18.0.1:51820",
                "[fd00::1]:443",
                "hub.renkei.example",
                "5CGhZHLCWrkRq8Mkxy9848GrsgpWRl16eQGXuILDPRE=",
                "$OWN_PUBLIC_KEY",
                "",
            ][..]
        )
        .prop_map(|s| toml::Value::String(s.to_string())),
        any::<String>().prop_map(toml::Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(toml::Value::Array),
            prop::collection::btree_map(key(), inner, 0..6)
                .prop_map(|m| toml::Value::Table(m.into_iter().collect())),
        ]
    })
}

/// (c) Random tables of (mostly) schema keys, serialized as TOML.
#[test]
fn int1_generated_tables_never_panic() {
    let strategy = prop::collection::btree_map(key(), structured_value(), 0..9);
    run(2000, strategy, |fixture, map| {
        let table: toml::Table = map.into_iter().collect();
        let text = toml::to_string(&table).unwrap_or_default();
        load_and_check_positions(fixture, &text)
    });
}

/// The positions check itself can fail: diagnostics past the end or out of order are caught.
#[test]
fn position_check_rejects_bad_positions() {
    let text = "[meta]\nversion = 0\n";
    let at = |line, column| Diagnostic {
        file: "fuzz.toml".into(),
        line,
        column,
        field: "meta.version".into(),
        message: "must be 1 or greater".into(),
    };
    let check = |list: Vec<Diagnostic>| check_positions(text, &Diagnostics(list)).is_ok();
    assert!(check(vec![at(2, 11)]));
    assert!(
        check(vec![at(3, 1)]),
        "the empty line after the last newline exists"
    );
    assert!(!check(vec![at(0, 1)]));
    assert!(!check(vec![at(2, 0)]));
    assert!(!check(vec![at(4, 1)]));
    assert!(!check(vec![at(2, 13)]));
    assert!(!check(vec![at(2, 11), at(1, 1)]));
    assert!(!check(vec![]));
}
