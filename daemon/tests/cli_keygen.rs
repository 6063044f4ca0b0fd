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

/// First boot's command as `renkei-firstboot.service` runs it, in `dir`, with the size any file
/// may reach limited to `max_file_bytes` (RLIMIT_FSIZE through util-linux `prlimit`): the write
/// that crosses it kills the process with SIGXFSZ, a crash in the middle of writing one file.
fn first_boot(dir: &std::path::Path, max_file_bytes: Option<u64>) -> Output {
    let mut command = match max_file_bytes {
        Some(limit) => {
            let mut c = Command::new("prlimit");
            c.arg(format!("--fsize={limit}"))
                .arg("--")
                .arg(env!("CARGO_BIN_EXE_renkei"));
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_renkei")),
    };
    command
        .current_dir(dir)
        .args([
            "keygen",
            "--private-key",
            "wg.key",
            "--tls-key",
            "tls/box.key",
            "--csr",
            "box.csr",
        ])
        .output()
        .expect("run renkei keygen")
}

/// The console's value for `label` in first boot's output.
fn shown(out: &Output, label: &str) -> Option<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.trim().strip_prefix(label)?.split_whitespace().next())
        .map(str::to_string)
}

#[test]
fn avl1_ops1_a_first_boot_killed_while_writing_a_key_leaves_no_partial_key_and_completes_next_boot()
{
    // 20 bytes: killed inside the WireGuard key (45 bytes); 100: inside the TLS key (about
    // 240 bytes of PEM); 300: inside the CSR.
    for limit in [20u64, 100, 300] {
        let dir = tempfile::tempdir().expect("tempdir");
        let killed = first_boot(dir.path(), Some(limit));
        use std::os::unix::process::ExitStatusExt as _;
        assert_eq!(
            killed.status.signal(),
            Some(libc::SIGXFSZ),
            "limit {limit}: cut short while writing: {killed:?}"
        );
        // What the cut-short boot left: each key file is whole (or absent), never a part.
        let wg = dir.path().join("wg.key");
        let wg_before = std::fs::read(&wg).ok();
        if wg_before.is_some() {
            renkei::keys::read_private_key(&wg)
                .unwrap_or_else(|e| panic!("limit {limit}: a partial WireGuard key: {e}"));
        }
        let tls_before = std::fs::read(dir.path().join("tls/box.key")).ok();
        if let Some(pem) = &tls_before {
            let text = String::from_utf8_lossy(pem);
            assert!(
                text.trim_end().ends_with("-----END PRIVATE KEY-----"),
                "limit {limit}: a partial TLS key:\n{text}"
            );
        }
        // The next boot completes first boot, keeping what was whole.
        let next = first_boot(dir.path(), None);
        assert!(
            next.status.success(),
            "limit {limit}: next boot: {}",
            String::from_utf8_lossy(&next.stderr)
        );
        assert!(shown(&next, "CSR SHA-256:").is_some(), "{next:?}");
        if let Some(before) = wg_before {
            assert_eq!(std::fs::read(&wg).expect("wg"), before, "limit {limit}");
        }
        if let Some(before) = tls_before {
            let after = std::fs::read(dir.path().join("tls/box.key")).expect("tls");
            assert_eq!(after, before, "limit {limit}");
        }
        for (file, mode) in [("wg.key", 0o600), ("tls/box.key", 0o600)] {
            let meta = std::fs::metadata(dir.path().join(file)).expect(file);
            assert_eq!(meta.permissions().mode() & 0o777, mode, "{file}");
        }
    }
}

#[test]
fn avl1_ops1_first_boot_reports_a_truncated_wireguard_key_with_its_path_and_keeps_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wg = dir.path().join("wg.key");
    std::fs::write(&wg, "cut short").expect("write");
    std::fs::set_permissions(&wg, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let out = first_boot(dir.path(), None);
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("wg.key does not hold a WireGuard key"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&wg).expect("read"), "cut short");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("ls")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(
        left,
        ["wg.key"],
        "nothing else made for a box without its key"
    );
}
