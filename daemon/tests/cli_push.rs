//! `renkei push` of a config that has no signature next to it: the error names the missing file
//! and says how to make it (`renkei sign`), before any connection is tried.

use std::process::Command;

#[test]
fn auth2_push_without_a_signature_says_to_run_renkei_sign() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("hospital.toml");
    std::fs::write(&config, "[meta]\nversion = 2\n").expect("write");
    // Nothing listens on this loopback port: reaching the box is never tried.
    let out = Command::new(env!("CARGO_BIN_EXE_renkei"))
        .current_dir(dir.path())
        .args([
            "push",
            "--to",
            "127.0.0.1:9",
            "--server-name",
            "hospital.renkei.example",
            "--cert",
            "operator.crt",
            "--key",
            "operator.key",
            "--ca",
            "operator-ca.crt",
            "hospital.toml",
        ])
        .output()
        .expect("run renkei push");
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("hospital.toml.sig"), "{stderr}");
    assert!(
        stderr.contains("renkei sign --key <operator signing key> hospital.toml"),
        "{stderr}"
    );
    assert!(!stderr.contains("retrying"), "{stderr}");
}
