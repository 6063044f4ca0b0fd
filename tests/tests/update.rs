//! Signed firmware updates in the namespace lab (AVL-5, OPS-2, AUTH-2): the operator in the data
//! centre pushes real RAUC bundles (made here by `rauc bundle`, signed by a throwaway update CA)
//! with the real `renkei update push` through the hub's tunnel to the hospital's management
//! API, and an installer runs `renkei update install` on the box. The box checks each with the
//! real `rauc info --keyring` and its own rules; a refused bundle leaves nothing armed and no
//! file in the spool.
//!
//! The box takes a bundle only once this boot's health check has run (`renkei update
//! health-check`, run here for real: it leaves `boot.json` of this boot) and while no install
//! or trial boot is under way. Writing the inactive slot and booting it are the QEMU tests'
//! part (image/boot-test); the decisions of the install and the health check are unit-tested
//! in daemon/src/update.

use std::path::{Path, PathBuf};
use std::time::Duration;

use renkei::config::Config;
use renkei::firmware_version::FirmwareVersion;
use renkei::update::health::FreshSince;
use renkei::update::records::{InstallingRecord, Progress, TrialRecord, BOOT_RECORD, TRIAL_RECORD};
use renkei::update::spool::Spool;
use renkei_lab::operator::{Operator, Outcome};
use renkei_lab::pki::LeafFiles;
use renkei_lab::rauc::{
    lab_system_conf, spool_files, write_system_conf, Manifest, RaucService, UpdateSigner,
};
use renkei_lab::{require_root, wait_until, Daemon, Lab, Node};
use serde_json::Value;

/// `management.confirm_timeout_secs` of every config here.
const CONFIRM_TIMEOUT_SECS: u64 = 600;
/// The lab's root slots (sparse files) unless a test says otherwise.
const ROOMY_SLOT_BYTES: u64 = 64 * 1024 * 1024;
/// The smallest `update.max_bundle_bytes` a config may set.
const SMALL_LIMIT_BYTES: u64 = 1024 * 1024;

/// A lab with the hub and the hospital running, the hospital taking bundles of `signer`.
struct UpdateLab {
    lab: Lab,
    operator: Operator,
    signer: UpdateSigner,
    spool: PathBuf,
    config_path: PathBuf,
    hospital: Daemon,
    _hub: Daemon,
}

/// True when `rauc` and `mksquashfs` are installed; skips the test otherwise (a failure in CI).
fn have_tools() -> bool {
    for tool in ["rauc", "mksquashfs"] {
        let found = std::process::Command::new(tool)
            .arg("--version")
            .output()
            .is_ok();
        if !found {
            renkei_lab::skip(&format!("needs {tool} (scripts/install-deps)"));
            return false;
        }
    }
    true
}

impl UpdateLab {
    /// Starts the hub and the hospital; `edit` changes the hospital's `[update]` section.
    fn start(edit: impl FnOnce(&mut renkei::config::UpdateConfig)) -> UpdateLab {
        let lab = Lab::new().expect("lab");
        let operator = Operator::new(&lab).expect("operator");
        let signer = UpdateSigner::new(&lab.dir, "update-ca").expect("update CA");
        let spool = lab.node_dir(Node::Hospital).join("state").join("update");
        let mut config: Config = lab.full(Node::Hospital);
        config.management = Some(operator.management(Node::Hospital, CONFIRM_TIMEOUT_SECS, false));
        let mut update = signer.update_config(&spool);
        edit(&mut update);
        // Root slots far larger than any test bundle; a test that wants small ones rewrites it.
        write_system_conf(&update.system_conf, ROOMY_SLOT_BYTES).expect("system.conf");
        config.update = Some(update);
        let config_path = lab
            .write_config(Node::Hospital, &config)
            .expect("hospital config");
        // The state this boot's health check leaves: boot.json of this boot.
        health_check(&config_path);
        let hub = lab.start(Node::Hub, &lab.full(Node::Hub)).expect("hub");
        let hospital = lab
            .start_with(Node::Hospital, &config_path)
            .expect("hospital");
        wait_until(Duration::from_secs(15), "the hospital's tunnel", || {
            (hospital.peer("dc").ok()?["state"] == "up").then_some(())
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", hospital.log_text()));
        UpdateLab {
            lab,
            operator,
            signer,
            spool,
            config_path,
            hospital,
            _hub: hub,
        }
    }

    /// `renkei update push` of `bundle` from the data centre.
    fn push(&self, bundle: &Path) -> Outcome {
        self.operator
            .update(
                &self.lab,
                "push",
                Node::Hospital,
                &[bundle.display().to_string()],
            )
            .expect("renkei update push")
    }

    /// `renkei update status` from the data centre.
    fn status(&self) -> Value {
        let outcome = self
            .operator
            .update(&self.lab, "status", Node::Hospital, &[])
            .expect("renkei update status");
        assert!(outcome.success, "{}", outcome.output);
        outcome.answers.first().cloned().unwrap_or(Value::Null)
    }

    /// The spool's files but boot.json (which every test's boot has).
    fn files(&self) -> Vec<String> {
        let mut files = spool_files(&self.spool);
        files.retain(|f| f != BOOT_RECORD);
        files
    }

    /// The hospital's `update` events.
    fn events(&self) -> Vec<Value> {
        self.hospital.status().expect("status")["events"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e["kind"] == "update")
            .collect()
    }

    /// Asserts `outcome` is a refusal with `reason` (and HTTP `status`), that the box shows it
    /// as its last result and as an event, and that nothing is armed or left in the spool.
    fn assert_refused(&self, outcome: &Outcome, reason: &str) {
        assert!(!outcome.success, "refused:\n{}", outcome.output);
        assert_eq!(outcome.error_code(), Some(reason), "{}", outcome.output);
        let status = self.status();
        assert_eq!(status["pending"], Value::Null, "nothing armed: {status}");
        assert_eq!(status["last_result"]["result"], "refused", "{status}");
        assert_eq!(status["last_result"]["reason"], reason, "{status}");
        let events = self.events();
        let last = events.last().cloned().unwrap_or(Value::Null);
        assert_eq!(last["code"], "update_refused", "{events:?}");
        assert_eq!(last["params"]["reason"], reason, "{last}");
        assert_eq!(last["params"]["by"], self.operator.identity.as_str());
        assert_eq!(
            self.files(),
            ["last-result.json"],
            "no bundle, no partial file left in the spool"
        );
    }
}

/// The real `renkei update health-check` of a normal boot on this machine (no trial, no
/// install): it writes boot.json of this boot and reboots nothing.
fn health_check(config_path: &Path) {
    let output = std::process::Command::new(renkei_lab::daemon::renkei_bin().expect("bin"))
        .args(["update", "health-check", "--no-reboot", "--config"])
        .arg(config_path)
        .output()
        .expect("renkei update health-check");
    assert!(
        output.status.success(),
        "a normal boot's check passes: {output:?}"
    );
}

/// The running firmware's version as the box computes it (the same code, the same machine).
fn running() -> FirmwareVersion {
    renkei::update::status::running_version()
}

/// A version newer than the running one.
fn newer() -> String {
    format!("{}.1", running())
}

fn sha256(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    renkei::hex::lower(ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref())
}

#[test]
fn avl5_ops2_a_signed_newer_bundle_pushed_by_the_operator_is_verified_and_kept_for_its_install() {
    require_root!();
    if !have_tools() {
        return;
    }
    let lab = UpdateLab::start(|_| {});
    let before = lab.status();
    assert_eq!(before["running_version"], running().to_string());
    assert_eq!(before["firmware_version"], running().to_string());
    assert_eq!(before["pending"], Value::Null);
    assert!(before["booted_slot"].is_string(), "{before}");
    assert_eq!(before["checked_this_boot"], true, "{before}");
    assert_eq!(before["trial"], Value::Null);
    assert_eq!(before["installing"], Value::Null);
    assert!(before["slots"].is_array(), "{before}");

    let version = newer();
    let bundle = lab
        .signer
        .bundle("next", &Manifest::lab(&version))
        .expect("bundle");
    let pushed = lab.push(&bundle);
    assert!(pushed.success, "{}", pushed.output);
    assert_eq!(pushed.answers[0]["result"], "accepted", "{}", pushed.output);

    let status = lab.status();
    assert_eq!(status["pending"]["version"], version.as_str(), "{status}");
    assert_eq!(status["pending"]["by"], lab.operator.identity.as_str());
    assert_eq!(status["last_result"]["result"], "accepted");
    // The armed bundle is exactly what the operator sent, nothing else is left.
    assert_eq!(
        sha256(&lab.spool.join("pending.raucb")),
        sha256(&bundle),
        "the kept bundle is the pushed one"
    );
    assert_eq!(
        lab.files(),
        ["last-result.json", "pending.json", "pending.raucb"]
    );
    let events = lab.events();
    assert_eq!(
        events.last().map(|e| e["code"].clone()),
        Some("update_accepted".into())
    );
    assert_eq!(
        events.last().map(|e| e["params"]["version"].clone()),
        Some(version.into())
    );
}

#[test]
fn avl5_an_unsigned_bundle_is_refused() {
    require_root!();
    if !have_tools() {
        return;
    }
    let lab = UpdateLab::start(|_| {});
    let bundle = lab
        .signer
        .unsigned("unsigned", &Manifest::lab(&newer()))
        .expect("squashfs");
    let outcome = lab.push(&bundle);
    lab.assert_refused(&outcome, "not_verified");
}

#[test]
fn avl5_a_bundle_signed_by_another_ca_is_refused() {
    require_root!();
    if !have_tools() {
        return;
    }
    let lab = UpdateLab::start(|_| {});
    let stranger = UpdateSigner::new(&lab.lab.dir, "stranger-ca").expect("another CA");
    let bundle = stranger
        .bundle("foreign", &Manifest::lab(&newer()))
        .expect("bundle");
    let outcome = lab.push(&bundle);
    lab.assert_refused(&outcome, "not_verified");
    assert!(
        outcome.answers[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("rauc could not verify")),
        "the answer carries rauc's reason:\n{}",
        outcome.output
    );
}

#[test]
fn avl5_a_bundle_for_another_compatible_is_refused() {
    require_root!();
    if !have_tools() {
        return;
    }
    let lab = UpdateLab::start(|_| {});
    let mut manifest = Manifest::lab(&newer());
    manifest.compatible = "some-other-box-arm64".into();
    let bundle = lab.signer.bundle("other", &manifest).expect("bundle");
    let outcome = lab.push(&bundle);
    lab.assert_refused(&outcome, "incompatible");
    assert!(
        outcome.output.contains("some-other-box-arm64"),
        "{}",
        outcome.output
    );
}

#[test]
fn avl5_an_older_or_equal_version_is_refused_unless_a_signed_config_names_it() {
    require_root!();
    if !have_tools() {
        return;
    }
    let allowed = "0.0.5";
    assert!(running() > FirmwareVersion::parse(allowed).expect("version"));
    let lab = UpdateLab::start(|update| update.allow_downgrade_to = Some(allowed.into()));
    for (name, version) in [("same", running().to_string()), ("older", "0.0.4".into())] {
        let bundle = lab
            .signer
            .bundle(name, &Manifest::lab(&version))
            .expect("bundle");
        let outcome = lab.push(&bundle);
        lab.assert_refused(&outcome, "not_newer");
    }
    // The operator's signed instruction names exactly this older version.
    let forced = lab
        .signer
        .bundle("forced", &Manifest::lab(allowed))
        .expect("bundle");
    let outcome = lab.push(&forced);
    assert!(outcome.success, "{}", outcome.output);
    assert_eq!(lab.status()["pending"]["version"], allowed);
}

#[test]
fn avl5_int1_a_bundle_larger_than_the_limit_is_refused_with_413_and_nothing_on_disk() {
    require_root!();
    if !have_tools() {
        return;
    }
    let lab = UpdateLab::start(|update| update.max_bundle_bytes = SMALL_LIMIT_BYTES);
    let mut manifest = Manifest::lab(&newer());
    manifest.payload_bytes = 2 * SMALL_LIMIT_BYTES as usize;
    let bundle = lab.signer.bundle("large", &manifest).expect("bundle");
    // `renkei update push` declares the length: refused before a byte is spooled.
    let declared = lab.push(&bundle);
    assert!(declared.output.contains("413"), "{}", declared.output);
    lab.assert_refused(&declared, "too_large");
    // A chunked upload declares nothing: cut off once past the limit, its file removed.
    let chunked = lab
        .operator
        .raw_request(
            &lab.lab,
            Node::Hospital,
            ("POST", "/v1/update"),
            Some(&bundle),
            &["Transfer-Encoding: chunked".to_string()],
            Some(&lab.operator.client),
        )
        .expect("curl");
    assert_eq!(chunked.status, Some(413), "{}", chunked.output);
    assert_eq!(chunked.error_code(), Some("too_large"));
    assert_eq!(lab.files(), ["last-result.json"]);
}

#[test]
fn avl5_a_second_bundle_while_one_is_pending_is_refused() {
    require_root!();
    if !have_tools() {
        return;
    }
    let lab = UpdateLab::start(|_| {});
    let first_version = newer();
    let first = lab
        .signer
        .bundle("first", &Manifest::lab(&first_version))
        .expect("bundle");
    assert!(lab.push(&first).success);
    let second = lab
        .signer
        .bundle("second", &Manifest::lab(&format!("{first_version}.1")))
        .expect("bundle");
    let outcome = lab.push(&second);
    assert!(!outcome.success, "{}", outcome.output);
    assert_eq!(outcome.error_code(), Some("pending"), "{}", outcome.output);
    let status = lab.status();
    assert_eq!(
        status["pending"]["version"],
        first_version.as_str(),
        "the first stays armed"
    );
    assert_eq!(status["last_result"]["reason"], "pending");
    assert_eq!(sha256(&lab.spool.join("pending.raucb")), sha256(&first));
    assert_eq!(
        lab.files(),
        ["last-result.json", "pending.json", "pending.raucb"]
    );
}

#[test]
fn avl5_auth2_a_client_that_is_not_the_operator_can_neither_push_nor_read_updates() {
    require_root!();
    if !have_tools() {
        return;
    }
    let lab = UpdateLab::start(|_| {});
    // A box's certificate: the operator CA signed it, but it is not the operator.
    let clinic: LeafFiles = lab
        .lab
        .ca
        .issue(Node::Clinic.tls_name())
        .and_then(|leaf| leaf.write(&lab.operator.dir, "clinic"))
        .expect("a box certificate");
    let bundle = lab
        .signer
        .bundle("next", &Manifest::lab(&newer()))
        .expect("bundle");
    for (request, body) in [
        (("POST", "/v1/update"), Some(bundle.as_path())),
        (("GET", "/v1/update"), None),
    ] {
        let answer = lab
            .operator
            .raw_request(&lab.lab, Node::Hospital, request, body, &[], Some(&clinic))
            .expect("curl");
        assert_eq!(answer.status, Some(403), "{request:?}: {}", answer.output);
        assert_eq!(answer.error_code(), Some("not_operator"));
    }
    assert!(lab.files().is_empty(), "nothing reached the spool");
    assert_eq!(lab.status()["last_result"], Value::Null);
}

#[test]
fn avl5_ops2_renkei_update_install_on_the_box_makes_the_same_checks() {
    require_root!();
    if !have_tools() {
        return;
    }
    let lab = UpdateLab::start(|_| {});
    let install = |bundle: &Path| {
        std::process::Command::new(renkei_lab::daemon::renkei_bin().expect("bin"))
            .args(["update", "install", "--config"])
            .arg(&lab.config_path)
            .arg(bundle)
            .output()
            .expect("renkei update install")
    };
    let stranger = UpdateSigner::new(&lab.lab.dir, "stranger-ca").expect("another CA");
    let foreign = stranger
        .bundle("foreign", &Manifest::lab(&newer()))
        .expect("bundle");
    let refused = install(&foreign);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(stderr.contains("not_verified"), "{stderr}");
    assert_eq!(lab.files(), ["last-result.json"]);

    let version = newer();
    let bundle = lab
        .signer
        .bundle("next", &Manifest::lab(&version))
        .expect("bundle");
    let accepted = install(&bundle);
    assert!(accepted.status.success(), "{accepted:?}");
    // The daemon sees what the installer armed: one update at a time, whoever brought it.
    let status = lab.status();
    assert_eq!(status["pending"]["version"], version.as_str(), "{status}");
    assert_eq!(status["pending"]["by"], "local");
    let pushed = lab.push(&bundle);
    assert_eq!(pushed.error_code(), Some("pending"), "{}", pushed.output);
}

/// The bundle a not-blessed box must refuse, and the refusal's checks.
fn assert_not_blessed(lab: &UpdateLab, expected_files: &[&str], because: &str) {
    static MADE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let bundle = lab
        .signer
        .bundle(&format!("not-blessed-{n}"), &Manifest::lab(&newer()))
        .expect("bundle");
    let outcome = lab.push(&bundle);
    assert!(
        outcome.output.contains("409"),
        "{because}: {}",
        outcome.output
    );
    assert!(!outcome.success, "{because}: {}", outcome.output);
    assert_eq!(
        outcome.error_code(),
        Some("not_blessed"),
        "{because}: {}",
        outcome.output
    );
    let status = lab.status();
    assert_eq!(status["pending"], Value::Null, "{because}: nothing armed");
    assert_eq!(status["last_result"]["reason"], "not_blessed", "{status}");
    assert_eq!(lab.files(), expected_files, "{because}");
}

#[test]
fn avl5_a_push_during_a_trial_boot_or_an_install_is_refused_not_blessed_and_nothing_armed() {
    require_root!();
    if !have_tools() {
        return;
    }
    let lab = UpdateLab::start(|_| {});
    let spool = Spool::new(lab.spool.clone());
    let trial = TrialRecord {
        version: newer(),
        slot: "B".into(),
        from_slot: "A".into(),
        from_version: running().to_string(),
        installed_at: 1,
    };
    spool
        .write_record(TRIAL_RECORD, &trial)
        .expect("trial.json");
    assert_eq!(lab.status()["trial"]["slot"], "B");
    assert_not_blessed(
        &lab,
        &["last-result.json", "trial.json"],
        "a trial boot waits",
    );
    spool.remove(TRIAL_RECORD).expect("removed");

    let installing = InstallingRecord {
        version: newer(),
        slot: "B".into(),
        started_at: 1,
        progress: Some(Progress {
            percent: 40,
            step: "Copying image to rootfs.1".into(),
        }),
    };
    spool
        .write_record(renkei::update::records::INSTALLING_RECORD, &installing)
        .expect("installing.json");
    let status = lab.status();
    assert_eq!(
        status["installing"]["progress"]["step"], "Copying image to rootfs.1",
        "{status}"
    );
    assert_not_blessed(
        &lab,
        &["installing.json", "last-result.json"],
        "an install runs",
    );
}

#[test]
fn avl5_a_push_before_this_boot_s_health_check_ran_is_refused_and_taken_after_it() {
    require_root!();
    if !have_tools() {
        return;
    }
    let lab = UpdateLab::start(|_| {});
    let spool = Spool::new(lab.spool.clone());
    let boot = spool.boot().expect("the health check wrote boot.json");
    spool.remove(BOOT_RECORD).expect("removed");
    assert_eq!(lab.status()["checked_this_boot"], false);
    assert_not_blessed(&lab, &["last-result.json"], "no boot.json");

    let mut earlier = boot.clone();
    earlier.boot_id = "00000000-0000-0000-0000-000000000000".into();
    spool
        .write_record(BOOT_RECORD, &earlier)
        .expect("boot.json");
    assert_not_blessed(&lab, &["last-result.json"], "boot.json of an earlier boot");

    health_check(&lab.config_path);
    assert_eq!(spool.boot().map(|b| b.boot_id), Some(boot.boot_id));
    let bundle = lab
        .signer
        .bundle("after-the-check", &Manifest::lab(&newer()))
        .expect("bundle");
    let pushed = lab.push(&bundle);
    assert!(pushed.success, "{}", pushed.output);
    assert_eq!(pushed.answers[0]["result"], "accepted");
}

#[test]
fn avl5_a_bundle_whose_image_is_larger_than_the_root_slot_is_refused_too_large_for_slot() {
    require_root!();
    if !have_tools() {
        return;
    }
    let lab = UpdateLab::start(|_| {});
    let system_conf = lab_system_conf(&lab.spool);
    let image_bytes = renkei_lab::rauc::SMALL_PAYLOAD_BYTES as u64;
    write_system_conf(&system_conf, image_bytes / 2).expect("system.conf");
    let bundle = lab
        .signer
        .bundle("larger-than-slot", &Manifest::lab(&newer()))
        .expect("bundle");
    let outcome = lab.push(&bundle);
    assert!(outcome.output.contains("422"), "{}", outcome.output);
    lab.assert_refused(&outcome, "too_large_for_slot");
    let message = outcome.answers[0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("{image_bytes} bytes"))
            && message.contains(&format!("{} bytes", image_bytes / 2)),
        "the answer gives both sizes: {message}"
    );

    // The same bundle fits a slot of twice its image.
    write_system_conf(&system_conf, image_bytes * 2).expect("system.conf");
    let fits = lab.push(&bundle);
    assert!(fits.success, "{}", fits.output);
    assert_eq!(fits.answers[0]["result"], "accepted");
}

/// The health check's wait, as the trial boot's `renkei update health-check` runs it, against
/// the real daemon's control socket under `runtime_dir`.
fn wait_healthy(
    runtime_dir: &Path,
    fresh_since: FreshSince,
    deadline: Duration,
) -> Result<(), String> {
    use renkei::update::health::HealthCheck;
    let check = HealthCheck {
        fresh_since,
        deadline,
    };
    let runtime_dir = runtime_dir.to_path_buf();
    let ask = move || renkei::control_socket::request(&runtime_dir, "status");
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(check.wait(ask))
}

/// A deadline short enough for a test, long enough for a lab box's first handshake.
const TEST_HEALTH_DEADLINE: Duration = Duration::from_secs(5);
/// Slack over the deadline for the last poll and the answer it waits for.
const DEADLINE_SLACK: Duration = Duration::from_secs(3);

#[test]
fn avl5_the_health_check_passes_on_an_always_on_box_whose_tunnel_is_up() {
    require_root!();
    if !have_tools() {
        return;
    }
    let started = std::time::Instant::now();
    let lab = UpdateLab::start(|_| {});
    let runtime_dir = lab.lab.full(Node::Hospital).paths.runtime_dir;
    // Fresh = younger than this test: the handshake of this run, nothing older.
    wait_healthy(
        &runtime_dir,
        FreshSince::Instant(started),
        TEST_HEALTH_DEADLINE,
    )
    .unwrap_or_else(|missing| panic!("{missing}\n{}", lab.hospital.log_text()));
}

#[test]
fn avl5_the_health_check_fails_within_its_deadline_naming_the_missing_handshake_without_a_hub() {
    require_root!();
    let lab = Lab::new().expect("lab");
    let config: Config = lab.full(Node::Hospital);
    let config_path = lab
        .write_config(Node::Hospital, &config)
        .expect("hospital config");
    // No hub: the always-on box runs, with its config and policy, but never reaches the
    // data centre.
    let hospital = lab
        .start_with(Node::Hospital, &config_path)
        .expect("hospital");
    let began = std::time::Instant::now();
    let missing = wait_healthy(
        &config.paths.runtime_dir,
        FreshSince::BootStart,
        TEST_HEALTH_DEADLINE,
    )
    .expect_err("no handshake, no blessing");
    let took = began.elapsed();
    assert!(
        missing.contains("no fresh WireGuard handshake"),
        "names the missing condition: {missing}\n{}",
        hospital.log_text()
    );
    assert!(
        took >= TEST_HEALTH_DEADLINE && took < TEST_HEALTH_DEADLINE + DEADLINE_SLACK,
        "gave up at the deadline, not before or long after: {took:?}"
    );
}

/// `renkei update <action> --config CONFIG [more]`, as root on the box, with the system bus
/// at `bus_address`.
fn on_box(
    action: &str,
    config_path: &Path,
    bus_address: &str,
    more: &[&Path],
) -> std::process::Output {
    std::process::Command::new(renkei_lab::daemon::renkei_bin().expect("bin"))
        .args(["update", action, "--config"])
        .arg(config_path)
        .args(more)
        .env("DBUS_SYSTEM_BUS_ADDRESS", bus_address)
        .output()
        .unwrap_or_else(|e| panic!("renkei update {action}: {e}"))
}

#[test]
fn avl5_apply_with_real_rauc_refuses_an_unblessed_slot_and_reports_rauc_s_install_error() {
    require_root!();
    if !have_tools() {
        return;
    }
    for tool in ["dbus-daemon"] {
        if std::process::Command::new(tool)
            .arg("--version")
            .output()
            .is_err()
        {
            renkei_lab::skip(&format!("needs {tool}"));
            return;
        }
    }
    let lab = Lab::new().expect("lab");
    let signer = UpdateSigner::new(&lab.dir, "update-ca").expect("update CA");
    let spool = lab.node_dir(Node::Hospital).join("state").join("update");
    let mut config: Config = lab.full(Node::Hospital);
    let update = signer.update_config(&spool);
    // Booted from A, which rauc's backend reports bad: A has not passed its health check.
    let rauc = RaucService::start(
        &update.system_conf,
        &update.ca_file,
        ROOMY_SLOT_BYTES,
        "A",
        &["B"],
    )
    .expect("rauc service on a private bus");
    config.update = Some(update);
    let config_path = lab.write_config(Node::Hospital, &config).expect("config");

    // This boot's health check records what real rauc says.
    let checked = on_box("health-check", &config_path, &rauc.bus_address, &[]);
    assert!(checked.status.success(), "{checked:?}");
    let boot = Spool::new(spool.clone()).boot().expect("boot.json");
    assert_eq!(boot.booted_slot, "A");
    let a = boot
        .slots
        .iter()
        .find(|s| s.bootname == "A")
        .expect("slot A");
    assert!(a.booted && a.state == "bad", "{boot:?}");

    // Hands the bundle to the box and runs the root-side apply without its reboot.
    let install_and_apply = |bundle: &Path| {
        let installed = on_box("install", &config_path, &rauc.bus_address, &[bundle]);
        assert!(installed.status.success(), "{installed:?}");
        on_box(
            "apply",
            &config_path,
            &rauc.bus_address,
            &["--no-reboot".as_ref()],
        )
    };
    let files_but_boot_record = || {
        let mut files = spool_files(&spool);
        files.retain(|f| f != BOOT_RECORD);
        files
    };

    // The intake takes the bundle (this boot was checked); the install refuses it.
    let bundle = signer
        .bundle("next", &Manifest::lab(&newer()))
        .expect("bundle");
    let applied = install_and_apply(&bundle);
    let stderr = String::from_utf8_lossy(&applied.stderr);
    assert_eq!(applied.status.code(), Some(3), "refused: {applied:?}");
    assert!(stderr.contains("not_blessed"), "{stderr}");
    let last = Spool::new(spool.clone())
        .last_result()
        .expect("last result");
    assert_eq!(last.result, "refused");
    assert_eq!(last.reason.as_deref(), Some("not_blessed"));
    assert!(
        last.message.contains("A is not marked good"),
        "{}",
        last.message
    );
    assert_eq!(
        files_but_boot_record(),
        ["last-result.json"],
        "the bundle is dropped, nothing written"
    );
    assert_eq!(rauc.state("B"), "good", "the other slot untouched");
    let slot_b = lab_system_conf(&spool).with_file_name("rootfs-B.img");
    let blocks = |path: &Path| {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(path)
            .map(|m| m.blocks())
            .unwrap_or(u64::MAX)
    };
    assert_eq!(blocks(&slot_b), 0, "not a byte written to slot B");

    // Blessed by real rauc (`mark-good` through the backend): now the install goes to rauc.
    let marked = rauc
        .command(&["status", "mark-good"])
        .expect("rauc status mark-good");
    assert!(marked.status.success(), "{marked:?}");
    assert_eq!(rauc.state("A"), "good");
    let applied = install_and_apply(&bundle);
    if Path::new("/dev/mapper/control").exists() {
        // A host with device-mapper would really write slot B: that is the QEMU test's part.
        return;
    }
    // This host has no device-mapper: rauc verifies the bundle, then cannot mount its
    // verity payload, and says so; the box reports rauc's words and keeps nothing.
    let stderr = String::from_utf8_lossy(&applied.stderr);
    assert_eq!(
        applied.status.code(),
        Some(1),
        "{applied:?}\n{}",
        rauc.log()
    );
    assert!(
        stderr.contains("step=Verifying signature"),
        "rauc's progress lines were read: {stderr}"
    );
    let last = Spool::new(spool.clone())
        .last_result()
        .expect("last result");
    assert_eq!(last.result, "install_failed");
    assert_eq!(last.slot.as_deref(), Some("B"));
    assert!(
        last.message.contains("Failed mounting bundle"),
        "rauc's own words: {}",
        last.message
    );
    assert_eq!(
        files_but_boot_record(),
        ["last-result.json"],
        "no bundle, no installing.json left"
    );
    assert_eq!(blocks(&slot_b), 0, "not a byte written to slot B");
}
