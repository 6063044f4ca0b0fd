//! Disk faults in the namespace lab (INT-2, AVL-1): the hospital's state directory, where a
//! push keeps the confirmed config's copy and its marker, sits on a small tmpfs that the test
//! fills up or makes read-only while the operator pushes, confirms and lets a window run out.
//! The real daemon answers the real `renkei push`/`confirm` over the hub's tunnel; the box must
//! refuse what it cannot write with the reason, keep running the confirmed config, leave no
//! half-written file, and take the next push once the disk is usable again.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use renkei::config::Config;
use renkei_lab::boxconfig::to_toml;
use renkei_lab::operator::{Operator, Outcome};
use renkei_lab::{require_root, wait_until, Daemon, Lab, Node};
use serde_json::Value;

/// Size of the state directory's tmpfs: room for the box's own files and a few pushes.
const STATE_FS_BYTES: u64 = 4 * 1024 * 1024;
/// `management.confirm_timeout_secs` (the smallest allowed).
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);
/// How much later than the window's end the rollback may be seen (twice the supervisor's
/// restore-and-apply time and the poll).
const ROLLBACK_SLACK: Duration = Duration::from_secs(10);

/// A tmpfs mounted over a directory for the test's life, its former content copied in;
/// unmounted on drop (also when the test fails), which uncovers the directory as it was.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn over(path: &Path, bytes: u64) -> Tmpfs {
        std::fs::create_dir_all(path).expect("directory");
        let saved = path.with_extension("before-tmpfs");
        run(
            "cp",
            &[
                "-a",
                &path.display().to_string(),
                &saved.display().to_string(),
            ],
        );
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={bytes},mode=0700"),
                "tmpfs",
                &path.display().to_string(),
            ],
        );
        let mounted = Tmpfs {
            path: path.to_path_buf(),
        };
        run(
            "cp",
            &[
                "-a",
                &format!("{}/.", saved.display()),
                &path.display().to_string(),
            ],
        );
        mounted
    }

    /// Makes the file system read-only, or writable again.
    fn set_read_only(&self, read_only: bool) {
        let how = if read_only {
            "remount,ro"
        } else {
            "remount,rw"
        };
        run("mount", &["-o", how, &self.path.display().to_string()]);
    }

    /// Writes a file of zeros until the file system is full; returns its path.
    fn fill(&self) -> PathBuf {
        use std::io::Write as _;
        let filler = self.path.join("filler");
        let mut file = std::fs::File::create(&filler).expect("filler");
        let chunk = vec![0u8; 64 * 1024];
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc_enospc()) => break,
                Err(e) => panic!("filling {}: {e}", filler.display()),
            }
        }
        // Whatever a partial block left: the last bytes too.
        while file.write(&[0u8]).is_ok_and(|n| n == 1) {}
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// ENOSPC, without a libc dependency for one number.
fn libc_enospc() -> i32 {
    std::io::Error::from(std::io::ErrorKind::StorageFull)
        .raw_os_error()
        .unwrap_or(28)
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The hospital's config at `version`, with a management API trusting `operator`.
fn hospital_config(lab: &Lab, operator: &Operator, version: u64) -> Config {
    let mut config = lab.full(Node::Hospital);
    config.meta.version = version;
    config.management = Some(operator.management(Node::Hospital, CONFIRM_TIMEOUT.as_secs(), false));
    config
}

fn config_state(daemon: &Daemon) -> Value {
    daemon.status().expect("status")["config"].clone()
}

/// Waits until the hospital's link to the hub is up (the operator's way in).
fn wait_link_up(lab: &Lab, daemon: &Daemon) {
    wait_until(
        Duration::from_secs(15),
        "the hospital's tunnel to be up",
        || (daemon.peer(lab.dc_link_name()).ok()?["state"] == "up").then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log_text()));
}

/// Files a push leaves in the push folder that are no whole file: temp files.
fn temp_files(state_dir: &Path) -> Vec<String> {
    temp_files_in(&state_dir.join("config"))
}

/// Temp files in `dir`.
fn temp_files_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.ends_with(".tmp"))
                .collect()
        })
        .unwrap_or_default()
}

fn assert_refused_for(outcome: &Outcome, disk_says: &str) {
    assert!(!outcome.success, "refused: {}", outcome.output);
    assert_eq!(
        outcome.answers[0]["error"], "write_failed",
        "{}",
        outcome.output
    );
    assert!(
        outcome.output.contains(disk_says),
        "the answer names the disk's reason ({disk_says}): {}",
        outcome.output
    );
}

/// Dropped in this order: the daemons stop, the tmpfs goes, then the lab.
struct DiskLab {
    _hub: Daemon,
    hospital: Daemon,
    state_fs: Tmpfs,
    state_dir: PathBuf,
    original: String,
    operator: Operator,
    lab: Lab,
}

impl DiskLab {
    fn start() -> DiskLab {
        let lab = Lab::new().expect("lab");
        let operator = Operator::new(&lab).expect("operator");
        let config = hospital_config(&lab, &operator, 1);
        let state_dir = config.paths.state_dir.clone();
        let original = to_toml(&config);
        let state_fs = Tmpfs::over(&state_dir, STATE_FS_BYTES);
        let hub = lab.start(Node::Hub, &lab.full(Node::Hub)).expect("hub");
        let hospital = lab.start(Node::Hospital, &original).expect("hospital");
        wait_link_up(&lab, &hospital);
        DiskLab {
            _hub: hub,
            hospital,
            state_fs,
            state_dir,
            original,
            operator,
            lab,
        }
    }

    fn push(&self, version: u64) -> Outcome {
        let path = self
            .operator
            .write_signed(
                &format!("v{version}.toml"),
                &hospital_config(&self.lab, &self.operator, version),
                None,
            )
            .expect("sign");
        self.operator
            .push(&self.lab, Node::Hospital, &path)
            .expect("push")
    }

    /// Pushes `version`, which the box takes (pending) and the operator confirms; nothing
    /// half-written stays behind.
    fn push_and_confirm(&self, version: u64) {
        let taken = self.push(version);
        assert!(taken.success, "{}", taken.output);
        assert_eq!(taken.answers[0]["state"], "pending", "{}", taken.output);
        let confirmed = self
            .operator
            .confirm(&self.lab, Node::Hospital, Some(version))
            .expect("confirm");
        assert!(confirmed.success, "{}", confirmed.output);
        self.assert_runs_confirmed(version);
        assert_eq!(temp_files(&self.state_dir), Vec::<String>::new());
    }

    fn config_file(&self) -> String {
        std::fs::read_to_string(&self.hospital.config).expect("config file")
    }

    /// The running config is `version`, confirmed.
    fn assert_runs_confirmed(&self, version: u64) {
        let state = config_state(&self.hospital);
        assert_eq!(state["version"], version, "{state}");
        assert_eq!(state["state"], "confirmed", "{state}");
    }
}

#[test]
fn int2_avl1_a_push_into_a_full_state_directory_is_refused_and_taken_once_there_is_room() {
    require_root!();
    let disk = DiskLab::start();
    let filler = disk.state_fs.fill();

    let refused = disk.push(2);
    assert_refused_for(&refused, "No space left on device");
    disk.assert_runs_confirmed(1);
    assert_eq!(
        disk.config_file(),
        disk.original,
        "the config file is untouched"
    );
    assert_eq!(
        temp_files(&disk.state_dir),
        Vec::<String>::new(),
        "no half-written file"
    );
    assert!(
        disk.hospital.log_text().contains("No space left on device"),
        "{}",
        disk.hospital.log_text()
    );

    std::fs::remove_file(&filler).expect("room again");
    disk.push_and_confirm(2);
}

#[test]
fn int2_avl1_a_read_only_state_directory_refuses_push_and_confirm_and_its_rollback_still_runs_the_confirmed_config(
) {
    require_root!();
    let disk = DiskLab::start();

    // Read-only before a push: refused, nothing changes.
    disk.state_fs.set_read_only(true);
    let refused = disk.push(2);
    assert_refused_for(&refused, "Read-only file system");
    disk.assert_runs_confirmed(1);
    assert_eq!(disk.config_file(), disk.original);

    // Read-only inside a push's confirm window: the confirm is refused with the reason and
    // the window's end still rolls back to the confirmed config, which keeps running.
    disk.state_fs.set_read_only(false);
    let pending = disk.push(2);
    assert!(pending.success, "{}", pending.output);
    assert_eq!(pending.answers[0]["state"], "pending", "{}", pending.output);
    let window_ends = std::time::Instant::now() + CONFIRM_TIMEOUT;
    disk.state_fs.set_read_only(true);
    let confirm = disk
        .operator
        .confirm(&disk.lab, Node::Hospital, Some(2))
        .expect("confirm");
    assert!(!confirm.success, "{}", confirm.output);
    assert!(
        confirm.output.contains("Read-only file system"),
        "{}",
        confirm.output
    );
    assert_eq!(config_state(&disk.hospital)["state"], "pending");
    let rolled_back = wait_until(
        window_ends.saturating_duration_since(std::time::Instant::now()) + ROLLBACK_SLACK,
        "the rollback at the window's end",
        || {
            let state = config_state(&disk.hospital);
            (state["version"] == 1 && state["state"] == "confirmed").then_some(())
        },
    );
    rolled_back.unwrap_or_else(|e| panic!("{e}\n{}", disk.hospital.log_text()));
    assert!(
        disk.hospital.status().is_ok(),
        "the daemon runs on: {}",
        disk.hospital.log_text()
    );
    assert!(
        disk.hospital.log_text().contains("from memory"),
        "{}",
        disk.hospital.log_text()
    );
    wait_link_up(&disk.lab, &disk.hospital);

    // Writable again: the next push is taken and confirmed.
    disk.state_fs.set_read_only(false);
    disk.push_and_confirm(3);
}

/// Size of the config folder's tmpfs: the config file and room for its rewrite.
const CONFIG_FS_BYTES: u64 = 1024 * 1024;

#[test]
fn int2_avl1_a_start_that_cannot_write_the_confirmed_config_back_runs_it_from_memory_until_there_is_room(
) {
    require_root!();
    let mut disk = DiskLab::start();
    // The config file on a small file system of its own (the box's /etc/renkei), the
    // hospital started from it.
    let etc = disk.lab.dir.join("hospital-etc");
    let etc_fs = Tmpfs::over(&etc, CONFIG_FS_BYTES);
    let config_path = etc.join("renkei.toml");
    // With the key files it names relative to its folder.
    let node_dir = disk.hospital.config.parent().expect("node folder");
    for name in ["renkei.toml", "wg.key", "tls"] {
        run(
            "cp",
            &[
                "-a",
                &node_dir.join(name).display().to_string(),
                &etc.display().to_string(),
            ],
        );
    }
    disk.hospital.kill();
    disk.hospital = disk
        .lab
        .start_with(Node::Hospital, &config_path)
        .expect("hospital from its own folder");
    wait_link_up(&disk.lab, &disk.hospital);

    // A push in its window when the box loses power (here: SIGKILL), and at the next start the
    // disk is full: the pushed config is in the file, the confirmed one only in the push folder.
    let pending = disk.push(2);
    assert!(pending.success, "{}", pending.output);
    assert_eq!(pending.answers[0]["state"], "pending", "{}", pending.output);
    let pushed = std::fs::read_to_string(&config_path).expect("pushed file");
    assert_ne!(pushed, disk.original);
    disk.hospital.kill();
    let filler = etc_fs.fill();

    disk.hospital = disk
        .lab
        .start_with(Node::Hospital, &config_path)
        .unwrap_or_else(|e| panic!("the daemon starts on a full disk: {e}"));
    disk.assert_runs_confirmed(1);
    wait_link_up(&disk.lab, &disk.hospital);
    let log = disk.hospital.log_text();
    assert!(
        log.contains("from memory") && log.contains("No space left on device"),
        "the recovery record says why it runs from memory: {log}"
    );
    assert_eq!(
        std::fs::read_to_string(&config_path).expect("file"),
        pushed,
        "the file is as the full disk left it"
    );
    assert_eq!(
        temp_files_in(&etc),
        Vec::<String>::new(),
        "no half-written file"
    );

    // With room again, the next start writes the confirmed config back.
    std::fs::remove_file(&filler).expect("room again");
    disk.hospital.kill();
    disk.hospital = disk
        .lab
        .start_with(Node::Hospital, &config_path)
        .expect("restart with room");
    disk.assert_runs_confirmed(1);
    assert_eq!(
        std::fs::read_to_string(&config_path).expect("file"),
        disk.original,
        "the confirmed config is the file again"
    );
    let log = disk.hospital.log_text();
    assert!(
        !log.contains("from memory") && log.contains("stopped_during_push"),
        "{log}"
    );
}
