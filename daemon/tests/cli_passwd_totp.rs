//! `renkei passwd --totp`: the administrator's second factor enrolled at the console (AUTH-3).
//! The real binary; the test reads the key it prints and answers with a code computed from it.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::process::{Command, Stdio};

use renkei::status::second_factor::{code_at, FactorStore, STEP_SECS};

/// The daemon's user on a box owns the state directory; root runs the console command.
const DAEMON_UID: u32 = 65534;

#[test]
fn auth3_console_enrolment_stores_a_private_factor_after_a_right_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    // As on a box: the state directory belongs to the daemon's user, not to whoever runs the
    // console command (root, where the test runs as root).
    let as_root = std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false);
    if as_root {
        std::os::unix::fs::chown(dir.path(), Some(DAEMON_UID), Some(DAEMON_UID)).expect("chown");
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_renkei"))
        .args(["passwd", "--totp", "--state-dir"])
        .arg(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run renkei passwd --totp");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let secret = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("key: ").map(str::to_string))
        .expect("the key is printed");
    writeln!(stdin, "not-a-code").expect("write");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let code = code_at(&secret, now / STEP_SECS).expect("code");
    writeln!(stdin, "{code}").expect("write");
    drop(stdin);
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().expect("wait");
    assert!(status.success(), "{rest:?}");
    assert!(rest.iter().any(|l| l.starts_with("wrong code")), "{rest:?}");
    let recovery: Vec<&String> = rest.iter().filter(|l| l.starts_with("  ")).collect();
    assert_eq!(recovery.len(), 10, "{rest:?}");

    let store = FactorStore::new(dir.path());
    let mode = std::fs::metadata(store.path())
        .expect("file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // The daemon, running as the state directory's owner, can read what root stored.
    let owner = std::fs::metadata(dir.path()).expect("state dir");
    for path in [store.path(), store.path().parent().expect("folder")] {
        let meta = std::fs::metadata(path).expect("stored");
        assert_eq!(
            (meta.uid(), meta.gid()),
            (owner.uid(), owner.gid()),
            "{}",
            path.display()
        );
    }
    let factor = store.load().expect("load").expect("enrolled");
    assert_eq!(factor.secret_base32, secret);
    assert_eq!(factor.recovery_sha256.len(), 10);
    let stored = std::fs::read_to_string(store.path()).expect("read");
    assert!(recovery.iter().all(|c| !stored.contains(c.trim())));
}

#[test]
fn auth3_console_enrolment_without_a_right_code_stores_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_renkei"))
        .args(["passwd", "--totp", "--state-dir"])
        .arg(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run renkei passwd --totp");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"1\n2\n3\n4\n")
        .expect("write");
    let output = child.wait_with_output().expect("wait");
    assert!(!output.status.success());
    assert!(!FactorStore::new(dir.path()).path().exists());
}
