//! `renkei keygen --operator`: the operator's signing key goes only where `--private-key` says
//! and never over an existing file (without the flag it used to default to the box's WireGuard
//! key path).

use std::os::unix::fs::PermissionsExt as _;
use std::process::{Command, Output};

fn keygen(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_renkei"))
        .current_dir(dir)
        .arg("keygen")
        .args(args)
        .output()
        .expect("run renkei keygen")
}

#[test]
fn auth2_operator_keygen_needs_an_explicit_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = keygen(dir.path(), &["--operator"]);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--private-key"),
        "{out:?}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("ls").count(),
        0,
        "nothing written"
    );
}

#[test]
fn auth2_operator_keygen_never_overwrites_a_key_or_its_public_half() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("wg.key");
    std::fs::write(&key, "the box's key\n").expect("write");
    let out = keygen(dir.path(), &["--operator", "--private-key", "wg.key"]);
    assert!(!out.status.success(), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(&key).expect("read"),
        "the box's key\n"
    );
    assert!(!dir.path().join("wg.key.pub").exists());

    let public = dir.path().join("signing.key.pub");
    std::fs::write(&public, "someone's public key\n").expect("write");
    let out = keygen(dir.path(), &["--operator", "--private-key", "signing.key"]);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        !dir.path().join("signing.key").exists(),
        "no key without its .pub"
    );
    assert_eq!(
        std::fs::read_to_string(&public).expect("read"),
        "someone's public key\n"
    );
}

#[test]
fn auth2_operator_keygen_writes_a_private_key_and_its_public_half() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = keygen(dir.path(), &["--operator", "--private-key", "signing.key"]);
    assert!(out.status.success(), "{out:?}");
    let key = dir.path().join("signing.key");
    let mode = std::fs::metadata(&key).expect("meta").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let private = std::fs::read_to_string(&key).expect("read");
    assert!(private.contains("PRIVATE KEY"));
    let public = std::fs::read_to_string(dir.path().join("signing.key.pub")).expect("pub");
    assert!(public.contains("-----BEGIN PUBLIC KEY-----"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("fingerprint "));
}
