//! A `renkei run` process inside a lab namespace: started, watched, stopped, killed. Dropping a
//! `Daemon` kills the process; when a test is failing, its log is printed first.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::lab::Node;
use crate::netns::Namespace;
use crate::wait::wait_until;

/// How long a daemon may take to answer on its control socket after start.
pub const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long SIGTERM may take before the test fails.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The `renkei` binary next to the test or lab binary (cargo builds both into the same folder),
/// or `RENKEI_BIN`.
pub fn renkei_bin() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("RENKEI_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    let mut dir = exe
        .parent()
        .context("no parent folder of the test binary")?;
    if dir.ends_with("deps") {
        dir = dir.parent().context("no parent of deps")?;
    }
    let bin = dir.join("renkei");
    anyhow::ensure!(
        bin.exists(),
        "{} not found: build it first (cargo build -p renkei)",
        bin.display()
    );
    Ok(bin)
}

/// A running daemon.
pub struct Daemon {
    /// Which box.
    pub node: Node,
    /// Its log file (stdout and stderr).
    pub log: PathBuf,
    /// Its config file.
    pub config: PathBuf,
    /// Its runtime folder (control socket).
    pub runtime_dir: PathBuf,
    child: Option<Child>,
}

impl Daemon {
    /// Starts `renkei run --config <config>` inside `ns` and waits until it answers `status`.
    pub fn start(
        node: Node,
        ns: &Namespace,
        config: &Path,
        runtime_dir: &Path,
        log: &Path,
    ) -> anyhow::Result<Daemon> {
        Daemon::start_with_args(node, ns, config, runtime_dir, log, &[], &[])
    }

    /// [`Daemon::start`] with more arguments after `run --config <config>` and more
    /// environment variables (an unenrolled box's `--runtime-dir`, systemd's `NOTIFY_SOCKET`).
    pub fn start_with_args(
        node: Node,
        ns: &Namespace,
        config: &Path,
        runtime_dir: &Path,
        log: &Path,
        args: &[&std::ffi::OsStr],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> anyhow::Result<Daemon> {
        Daemon::start_launched(node, ns, &[], config, runtime_dir, log, args, env)
    }

    /// [`Daemon::start_with_args`] through `launcher`, words put before the `renkei` binary (a
    /// launcher that changes what the kernel allows the daemon, then executes it in its place,
    /// so the process stays the daemon's).
    #[allow(clippy::too_many_arguments)]
    pub fn start_launched(
        node: Node,
        ns: &Namespace,
        launcher: &[std::ffi::OsString],
        config: &Path,
        runtime_dir: &Path,
        log: &Path,
        args: &[&std::ffi::OsStr],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> anyhow::Result<Daemon> {
        let out = File::create(log)?;
        let err = out.try_clone()?;
        let renkei = renkei_bin()?;
        let mut command = match launcher.split_first() {
            Some((program, rest)) => {
                let mut command = ns.command(&program.to_string_lossy());
                command.args(rest).arg(&renkei);
                command
            }
            None => ns.command(&renkei.to_string_lossy()),
        };
        let child = command
            .args(["run", "--config"])
            .arg(config)
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info,renkei=debug")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .context("starting renkei")?;
        let mut daemon = Daemon {
            node,
            log: log.to_path_buf(),
            config: config.to_path_buf(),
            runtime_dir: runtime_dir.to_path_buf(),
            child: Some(child),
        };
        let ready = wait_until(READY_TIMEOUT, "the daemon to answer", || {
            if daemon.has_exited() {
                return Some(false);
            }
            daemon.status().ok().map(|_| true)
        })?;
        if !ready {
            anyhow::bail!(
                "renkei on {:?} exited during start:\n{}",
                node,
                daemon.log_text()
            );
        }
        Ok(daemon)
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// True once the process has exited.
    pub fn has_exited(&mut self) -> bool {
        match self.child.as_mut() {
            None => true,
            Some(child) => !matches!(child.try_wait(), Ok(None)),
        }
    }

    /// The status document from the control socket.
    pub fn status(&self) -> anyhow::Result<serde_json::Value> {
        let answer = renkei::control_socket::request(&self.runtime_dir, "status")?;
        serde_json::from_str(&answer).with_context(|| format!("status answer {answer:?}"))
    }

    /// One peer's entry of the status document.
    pub fn peer(&self, name: &str) -> anyhow::Result<serde_json::Value> {
        let status = self.status()?;
        status["tunnel"]["peers"]
            .as_array()
            .and_then(|peers| peers.iter().find(|p| p["name"] == name).cloned())
            .with_context(|| format!("no peer {name} in status"))
    }

    /// Sends a control command (`connect`, `disconnect`).
    pub fn control(&self, command: &str) -> anyhow::Result<String> {
        Ok(renkei::control_socket::request(&self.runtime_dir, command)?)
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn terminate(&mut self) -> anyhow::Result<ExitStatus> {
        let mut child = self.child.take().context("daemon already stopped")?;
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM)?;
        let status = wait_until(STOP_TIMEOUT, "the daemon to exit after SIGTERM", || {
            child.try_wait().ok().flatten()
        });
        if status.is_err() {
            let _ = child.kill();
            let _ = child.wait();
        }
        status
    }

    /// SIGKILL: a crash, nothing cleaned up by the daemon itself.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- log of renkei on {:?} ({}) -----\n{}",
                self.node,
                self.log.display(),
                self.log_text()
            );
        }
        self.kill();
    }
}
