//! Helpers shared by the tests that drive the `lab` binary (`lab_demo`, `guides`): bounded
//! commands, a state folder whose guard runs `lab down`, and the recorded commands run exactly
//! as `lab up` prints them.

#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use renkei_lab::demo::{leftovers, LabRecord};
use renkei_lab::wait_until;

/// Longest `lab up` or `lab down` may take.
pub const LAB_TIMEOUT: Duration = Duration::from_secs(150);
/// Longest one of the printed commands may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs a command to its end, killing it after `timeout`.
pub fn bounded(command: &mut Command, timeout: Duration) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {command:?}: {e}"));
    let pid = child.id();
    // The pipes are read to their end on other threads so a chatty command never blocks.
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stdout, &mut v);
        v
    });
    let err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stderr, &mut v);
        v
    });
    let status = match wait_until(timeout, "the command to finish", || {
        child.try_wait().ok().flatten()
    }) {
        Ok(status) => status,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} (pid {pid}): {e}");
        }
    };
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// A state folder for `lab`; dropping it runs `lab down` and removes the folder.
pub struct LabDir {
    /// The folder holding `lab.json`.
    pub dir: PathBuf,
}

impl LabDir {
    /// A fresh folder named after the test.
    pub fn new(name: &str) -> LabDir {
        let dir =
            std::env::temp_dir().join(format!("renkei-demo-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("state folder");
        LabDir { dir }
    }

    /// `lab <command> --dir <dir> <args>`, not yet run.
    pub fn command(&self, command: &str, args: &[&str]) -> Command {
        let mut lab = Command::new(env!("CARGO_BIN_EXE_lab"));
        lab.arg(command).arg("--dir").arg(&self.dir).args(args);
        lab
    }

    /// Runs `lab <command> --dir <dir> <args>`.
    pub fn lab(&self, command: &str, args: &[&str]) -> Output {
        bounded(&mut self.command(command, args), LAB_TIMEOUT)
    }

    /// `lab up`, which must succeed; returns its printed summary and the record.
    pub fn up(&self, args: &[&str]) -> (String, LabRecord) {
        let output = self.lab("up", args);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "lab up failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let record = LabRecord::read(&self.dir)
            .expect("lab.json readable")
            .expect("lab up wrote lab.json");
        assert_eq!(record.state, "up");
        (stdout, record)
    }

    /// `lab down`, which must succeed.
    pub fn down(&self) {
        let output = self.lab("down", &[]);
        assert!(
            output.status.success(),
            "lab down failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for LabDir {
    fn drop(&mut self) {
        if LabRecord::path(&self.dir).exists() {
            let output = self.lab("down", &[]);
            if !output.status.success() {
                eprintln!(
                    "cleanup: lab down failed: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
        }
        if std::thread::panicking() {
            if let Ok(log) = std::fs::read_to_string(self.dir.join("keeper.log")) {
                eprintln!("----- keeper log -----\n{log}");
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The commands of a lab record, run exactly as `lab up` prints them (the `shell` line through
/// `sh -c`), remembering which ran so a test can show it ran every one it should.
pub struct Commands<'a> {
    record: &'a LabRecord,
    ran: RefCell<BTreeSet<String>>,
}

impl<'a> Commands<'a> {
    /// The commands of `record`.
    pub fn new(record: &'a LabRecord) -> Commands<'a> {
        Commands {
            record,
            ran: RefCell::new(BTreeSet::new()),
        }
    }

    /// The printed line of command `key`.
    pub fn shell(&self, key: &str) -> &'a str {
        &self
            .record
            .command(key)
            .unwrap_or_else(|| panic!("no command {key:?} in lab.json"))
            .shell
    }

    /// Runs command `key` as printed, successful or not.
    pub fn output(&self, key: &str) -> Output {
        let shell = self.shell(key);
        assert!(!shell.is_empty(), "{key}: nothing printed");
        self.ran.borrow_mut().insert(key.to_string());
        bounded(Command::new("sh").args(["-c", shell]), COMMAND_TIMEOUT)
    }

    /// Runs command `key` as printed, which must succeed; returns its stdout.
    pub fn run(&self, key: &str) -> Vec<u8> {
        let output = self.output(key);
        assert!(
            output.status.success(),
            "{}: {}{}",
            self.shell(key),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output.stdout
    }

    /// [`Commands::run`] as text.
    pub fn text(&self, key: &str) -> String {
        String::from_utf8(self.run(key)).unwrap_or_else(|e| panic!("{key}: not text: {e}"))
    }

    /// The keys run so far.
    pub fn ran(&self) -> BTreeSet<String> {
        self.ran.borrow().clone()
    }
}

/// Nothing of `record` is left: processes (recorded or not), namespaces, sockets, folders,
/// `lab.json`.
pub fn assert_gone(record: &LabRecord, state_dir: &Path) {
    let left = leftovers(record);
    assert!(left.is_empty(), "left behind: {left:?}");
    for process in record.processes() {
        assert!(!process.alive(), "{process:?} still runs");
    }
    let listed = namespaces_now();
    for ns in &record.namespaces {
        assert!(
            !listed
                .lines()
                .any(|l| l.split_whitespace().next() == Some(ns)),
            "namespace {ns} still there"
        );
    }
    assert!(!record.lab_dir.exists(), "{}", record.lab_dir.display());
    for socket in &record.wireguard_sockets {
        assert!(!socket.exists(), "{}", socket.display());
    }
    assert!(!LabRecord::path(state_dir).exists(), "lab.json still there");
}

/// `ip netns list`.
pub fn namespaces_now() -> String {
    String::from_utf8_lossy(
        &bounded(Command::new("ip").args(["netns", "list"]), COMMAND_TIMEOUT).stdout,
    )
    .into_owned()
}
