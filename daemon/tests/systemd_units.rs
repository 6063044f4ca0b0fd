//! The shipped systemd units are valid and every one's sandbox is tight (AVL-2): checked with
//! systemd's own `systemd-analyze`, as an installer's machine would. Each unit has its own
//! exposure ceiling ([`EXPOSURE_CEILINGS`], the table in systemd/README.md), and every unit in
//! `systemd/` must have one.

mod skip;

use std::path::{Path, PathBuf};
use std::process::Command;

fn units_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd")
}

/// The units the disk image installs.
const UNITS: [&str; 11] = [
    "renkei.service",
    "renkei-firstboot.service",
    "renkei-console.service",
    "renkei-charon.service",
    "renkei-update.service",
    "renkei-health.service",
    "renkei-timesync-conf.service",
    "renkei-timesync.service",
    "renkei-journal-seal.service",
    "renkei-journal-upload-conf.service",
    "renkei-journal-upload.service",
];

/// The path units the disk image installs (no sandbox of their own: systemd itself watches).
const PATH_UNITS: [&str; 5] = [
    "renkei-charon.path",
    "renkei-journal-upload-ready.path",
    "renkei-journal-upload.path",
    "renkei-timesync.path",
    "renkei-update.path",
];

/// The highest `systemd-analyze security` exposure each unit may have (0 safest, 10 worst),
/// a little above its score today so a systemd upgrade's rescoring does not fail the build
/// while a loosened sandbox does. The daemon needs CAP_NET_ADMIN, the TUN device and the
/// network; first boot and the console need none of them; charon needs what the daemon needs
/// and CAP_NET_BIND_SERVICE (UDP 500 and 4500). The firmware update units run as root (D-Bus to
/// RAUC and systemd, the daemon user's spool) without devices; the health check also keeps the
/// host's network namespace to judge the tunnel. The NTP client's two units run as root without
/// any capability: one writes timesyncd's runtime drop-in folder, the other asks systemd for a
/// restart. The journal's sealing keys are made as root without any capability (journald's
/// folder and /etc/renkei are root's); the journal uploader's two units are built like the NTP
/// client's.
const EXPOSURE_CEILINGS: [(&str, f64); 11] = [
    ("renkei.service", 2.0),
    ("renkei-firstboot.service", 1.0),
    ("renkei-console.service", 1.0),
    ("renkei-charon.service", 2.0),
    ("renkei-update.service", 1.7),
    ("renkei-health.service", 2.4),
    ("renkei-timesync-conf.service", 1.4),
    ("renkei-timesync.service", 1.4),
    ("renkei-journal-seal.service", 1.4),
    ("renkei-journal-upload-conf.service", 1.4),
    ("renkei-journal-upload.service", 1.4),
];

/// `systemd-analyze verify` wants the binaries named in Exec lines to exist; point them at the
/// freshly built renkei through copies of the units in a temporary root (all of them, since
/// they name each other).
fn staged_unit(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    for unit in UNITS.iter().chain(&PATH_UNITS) {
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
    for name in UNITS.iter().chain(&PATH_UNITS) {
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

/// The exposure score `systemd-analyze security --offline=true` gives the staged `name`.
fn exposure(name: &str) -> (f64, String) {
    let (_dir, path) = staged_unit(name);
    let output = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&path)
        .output()
        .expect("systemd-analyze security");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let score: f64 = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("→ Overall exposure level for "))
        .and_then(|rest| rest.split(':').nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no exposure score for {name} in:\n{stdout}"));
    (score, stdout)
}

/// A path unit is part of `paths.target`, which `basic.target` pulls in before any ordinary
/// service starts: ordering one after a service (`After=renkei.service`) is an ordering cycle,
/// which systemd breaks at boot by dropping one of the jobs, and once it dropped
/// renkei.service's start (found by the boot test's power cuts; `systemd-analyze verify` does
/// not report it).
#[test]
fn avl2_path_units_are_not_ordered_after_services() {
    for name in PATH_UNITS {
        let text = std::fs::read_to_string(units_dir().join(name)).expect("unit");
        for line in text.lines() {
            let line = line.trim();
            if let Some(units) = line.strip_prefix("After=") {
                assert!(
                    !units.split_whitespace().any(|u| u.ends_with(".service")),
                    "{name}: {line} makes an ordering cycle through paths.target"
                );
            }
        }
    }
}

#[test]
fn avl2_every_unit_in_systemd_is_installed_and_has_an_exposure_ceiling() {
    let mut shipped: Vec<String> = std::fs::read_dir(units_dir())
        .expect("systemd/")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".service"))
        .collect();
    shipped.sort();
    let mut installed: Vec<&str> = UNITS.to_vec();
    installed.sort();
    let mut ceilings: Vec<&str> = EXPOSURE_CEILINGS.iter().map(|(u, _)| *u).collect();
    ceilings.sort();
    assert_eq!(shipped, installed, "UNITS lists every unit in systemd/");
    let mut paths: Vec<String> = std::fs::read_dir(units_dir())
        .expect("systemd/")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".path"))
        .collect();
    paths.sort();
    assert_eq!(
        paths, PATH_UNITS,
        "PATH_UNITS lists every path unit in systemd/"
    );
    assert_eq!(
        shipped, ceilings,
        "EXPOSURE_CEILINGS covers every unit in systemd/"
    );
    let readme = std::fs::read_to_string(units_dir().join("README.md")).expect("README");
    for (unit, ceiling) in EXPOSURE_CEILINGS {
        let row = format!("| `{unit}` | {ceiling:.1} |");
        assert!(
            readme.contains(&row),
            "systemd/README.md documents the ceiling of {unit}: no row starting {row:?}"
        );
    }
}

#[test]
fn avl2_every_unit_stays_within_its_exposure_ceiling() {
    if !have_systemd_analyze() {
        return;
    }
    let mut over = Vec::new();
    for (unit, ceiling) in EXPOSURE_CEILINGS {
        let (score, report) = exposure(unit);
        println!("exposure score of {unit}: {score} (ceiling {ceiling})");
        if score > ceiling {
            over.push(format!("{unit}: exposure {score} > {ceiling}:\n{report}"));
        }
    }
    assert!(over.is_empty(), "{}", over.join("\n"));
}

/// The value of the first `key=` line of a unit file.
fn unit_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
}

/// The charon unit, `renkei charon-conf` and the daemon agree (NET-10): the unit's start
/// condition writes the strongswan.conf charon reads (`STRONGSWAN_CONF`), in the unit's own
/// runtime directory; for a config that names no `vici_socket` (the example's), the daemon
/// connects to the socket the rendered strongswan.conf makes charon serve, and that is where
/// the unit's diagnostic looks, inside the unit's runtime directory.
#[test]
fn net10_the_charon_unit_and_the_daemon_agree_on_strongswan_conf_and_the_vici_socket() {
    let unit = std::fs::read_to_string(units_dir().join("renkei-charon.service")).expect("unit");
    let runtime_dir = format!(
        "/run/{}/",
        unit_value(&unit, "RuntimeDirectory").expect("RuntimeDirectory=")
    );
    let conf = unit_value(&unit, "Environment")
        .and_then(|v| v.strip_prefix("STRONGSWAN_CONF="))
        .expect("Environment=STRONGSWAN_CONF=");
    assert!(conf.starts_with(&runtime_dir), "{conf} in {runtime_dir}");
    let condition = unit_value(&unit, "ExecCondition").expect("ExecCondition=");
    assert_eq!(
        condition,
        format!("/usr/bin/renkei charon-conf --config /etc/renkei/renkei.toml --output {conf}")
    );
    let uri = unit_value(&unit, "ExecStartPost")
        .and_then(|v| v.split("--uri ").nth(1))
        .expect("ExecStartPost= ... --uri");
    let socket = uri.strip_prefix("unix://").expect("a unix:// URI");
    assert!(
        socket.starts_with(&runtime_dir),
        "{socket} in {runtime_dir}"
    );

    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/ipsec.toml");
    let config = renkei::config::load_with(&example, renkei::config::Files::Skip)
        .unwrap_or_else(|e| panic!("{}: {e:?}", example.display()));
    assert!(config
        .ipsec
        .as_ref()
        .expect("[ipsec]")
        .vici_socket
        .is_none());
    assert_eq!(config.vici_socket(), Some(PathBuf::from(socket)));
    let rendered = renkei::carrier::charon_conf(&config).expect("strongswan.conf");
    assert!(
        rendered.contains(&format!("socket = {uri}\n")),
        "{rendered}"
    );
}

/// A push that moves a running box to `[ipsec]` gets its charon (NET-9): the path unit watches
/// exactly the config file the charon unit's start condition reads, and starts that unit.
#[test]
fn net9_the_charon_path_unit_watches_the_config_file_the_charon_unit_reads() {
    let unit = std::fs::read_to_string(units_dir().join("renkei-charon.service")).expect("unit");
    let path_unit =
        std::fs::read_to_string(units_dir().join("renkei-charon.path")).expect("path unit");
    let condition = unit_value(&unit, "ExecCondition").expect("ExecCondition=");
    let watched = unit_value(&path_unit, "PathChanged").expect("PathChanged=");
    assert!(
        condition.contains(&format!("--config {watched} ")),
        "{condition} reads {watched}"
    );
    assert_eq!(
        unit_value(&path_unit, "Unit"),
        Some("renkei-charon.service")
    );
}
