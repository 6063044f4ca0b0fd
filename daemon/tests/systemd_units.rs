//! The shipped systemd units are valid and the daemon's sandbox is tight (AVL-2): checked with
//! systemd's own `systemd-analyze`, as an installer's machine would.

mod skip;

use std::path::{Path, PathBuf};
use std::process::Command;

fn units_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd")
}

/// The units the disk image installs.
const UNITS: [&str; 3] = [
    "renkei.service",
    "renkei-firstboot.service",
    "renkei-console.service",
];

/// `systemd-analyze verify` wants the binaries named in Exec lines to exist; point them at the
/// freshly built renkei through copies of the units in a temporary root (all of them, since
/// they name each other).
fn staged_unit(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    for unit in UNITS {
        let text = std::fs::read_to_string(units_dir().join(unit)).expect("unit");
        let text = text.replace("/usr/bin/renkei", env!("CARGO_BIN_EXE_renkei"));
        std::fs::write(dir.path().join(unit), text).expect("write unit");
    }
    let path = dir.path().join(name);
    (dir, path)
}

/// True when `systemd-analyze` runs here; otherwise the test is skipped ([`skip::skip`]),
/// which fails it under CI (scripts/install-deps installs systemd).
fn have_systemd_analyze() -> bool {
    match Command::new("systemd-analyze").arg("--version").output() {
        Ok(out) if out.status.success() => true,
        Ok(out) => {
            skip::skip(&format!("systemd-analyze --version failed: {out:?}"));
            false
        }
        Err(e) => {
            skip::skip(&format!(
                "systemd-analyze not installed ({e}); scripts/install-deps installs systemd"
            ));
            false
        }
    }
}

#[test]
fn avl2_units_pass_systemd_analyze_verify() {
    if !have_systemd_analyze() {
        return;
    }
    for name in UNITS {
        let (_dir, path) = staged_unit(name);
        let output = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&path)
            .output()
            .expect("systemd-analyze verify");
        let stderr = String::from_utf8_lossy(&output.stderr);
        // Lines about the host's own units or missing dependencies of the test root are not
        // ours; anything naming our unit file is.
        let ours: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains(name) && !l.contains("Failed to put bus name"))
            .collect();
        assert!(
            output.status.success() && ours.is_empty(),
            "systemd-analyze verify {name}:\n{stderr}"
        );
    }
}

#[test]
fn avl2_service_exposure_is_at_most_2_0() {
    if !have_systemd_analyze() {
        return;
    }
    let (_dir, path) = staged_unit("renkei.service");
    let output = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&path)
        .output()
        .expect("systemd-analyze security");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let score: f64 = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("→ Overall exposure level for "))
        .and_then(|rest| rest.split(':').nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no exposure score in:\n{stdout}"));
    println!("exposure score of renkei.service: {score}");
    assert!(score <= 2.0, "exposure {score} > 2.0:\n{stdout}");
}
