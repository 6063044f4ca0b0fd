//! `renkei fleet` before it reaches any box: an invalid inventory is refused with exit 2 and
//! file:line:col diagnostics, and a rollout whose folder lacks a signature stops before any
//! connection is tried (nothing listens on the loopback port the inventory names).

use std::path::Path;
use std::process::{Command, Output};

const OPERATOR: &str = "[operator]\ncertificate_file = \"operator.crt\"\nprivate_key_file = \"operator.key\"\nca_file = \"operator-ca.crt\"\n";

fn fleet(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_renkei"))
        .current_dir(dir)
        .arg("fleet")
        .args(args)
        .output()
        .expect("run renkei fleet")
}

#[test]
fn ops5_an_invalid_inventory_exits_2_naming_file_line_and_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "{OPERATOR}\n[[box]]\nname = \"hospital\"\nmanagement = \"127.0.0.1\"\nserver_name = \"hospital.renkei.example\"\ngroup = \"canary\"\n"
    );
    std::fs::write(dir.path().join("fleet.toml"), text).expect("write");
    for command in ["status", "push", "confirm"] {
        let mut args = vec![command, "--inventory", "fleet.toml"];
        if command == "push" {
            args.extend(["--configs", "."]);
        }
        let out = fleet(dir.path(), &args);
        assert_eq!(out.status.code(), Some(2), "{command}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("fleet.toml:8:14: box[0].management:"),
            "{command}: {stderr}"
        );
        assert!(
            out.stdout.is_empty(),
            "{command}: nothing is printed as a result"
        );
    }
}

#[test]
fn ops5_a_rollout_with_a_missing_signature_stops_before_any_box_is_contacted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = format!(
        "{OPERATOR}\n[[box]]\nname = \"hospital\"\nmanagement = \"127.0.0.1:9\"\nserver_name = \"hospital.renkei.example\"\ngroup = \"canary\"\n"
    );
    std::fs::write(dir.path().join("fleet.toml"), text).expect("write");
    std::fs::create_dir(dir.path().join("v2")).expect("folder");
    std::fs::write(dir.path().join("v2/hospital.toml"), "[meta]\nversion = 2\n").expect("write");
    let out = fleet(
        dir.path(),
        &["push", "--inventory", "fleet.toml", "--configs", "v2"],
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("hospital.toml.sig"), "{stderr}");
    assert!(stderr.contains("renkei sign"), "{stderr}");
    assert!(stderr.contains("nothing was pushed"), "{stderr}");
    assert!(
        !stderr.contains("127.0.0.1:9"),
        "no box was contacted: {stderr}"
    );
}
