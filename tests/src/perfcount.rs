//! Per-process event counts during a benchmark run, from `perf stat` (Debian's linux-perf):
//! CPU time, context switches and the system calls a proxy's data path makes. They say what a
//! path costs inside each process per byte, which the machine-wide CPU time cannot split. A
//! system-wide `perf record` of one measurement says where that time goes.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

use anyhow::Context;

/// The events counted: the process's CPU time, its context switches and the calls that move
/// bytes or wait for them.
const EVENTS: &[&str] = &[
    "task-clock",
    "context-switches",
    "syscalls:sys_enter_read",
    "syscalls:sys_enter_write",
    "syscalls:sys_enter_recvfrom",
    "syscalls:sys_enter_sendto",
    "syscalls:sys_enter_recvmsg",
    "syscalls:sys_enter_sendmsg",
    "syscalls:sys_enter_sendmmsg",
    "syscalls:sys_enter_recvmmsg",
    "syscalls:sys_enter_writev",
    "syscalls:sys_enter_epoll_wait",
    "syscalls:sys_enter_epoll_pwait",
    "syscalls:sys_enter_futex",
];

/// A running `perf`. Dropped before it was stopped (a measurement that failed halfway), it is
/// stopped and reaped all the same, so no `perf` outlives its measurement.
struct Perf(Child);

impl Perf {
    /// Starts `perf` with `args`, its stderr going to `stderr`.
    ///
    /// perf is told to stop (SIGINT, so a recording is still written) when the thread that
    /// started it ends: a benchmark that exits on a signal (`remove_own_labs_on_signal`) runs
    /// no drops, and a system-wide `perf record` would otherwise run on for good.
    fn start(args: &[&str], stderr: Stdio) -> anyhow::Result<Perf> {
        use std::os::unix::process::CommandExt;
        let mut command = std::process::Command::new("perf");
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        // SAFETY: prctl is async-signal-safe and touches nothing of the parent's.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        let child = command
            .spawn()
            .context("perf (Debian package linux-perf)")?;
        Ok(Perf(child))
    }

    /// Stops it (SIGINT makes perf write its counts or its file), waits for it and returns
    /// what it wrote to a piped stderr.
    fn stop(&mut self) -> anyhow::Result<String> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.0.id())?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).context("stopping perf")?;
        let mut text = String::new();
        if let Some(mut stderr) = self.0.stderr.take() {
            stderr.read_to_string(&mut text).context("perf's output")?;
        }
        self.0.wait().context("waiting for perf")?;
        Ok(text)
    }
}

impl Drop for Perf {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.stop();
        }
    }
}

/// A `perf stat` attached to one process until [`Counting::finish`].
pub struct Counting(Perf);

impl Counting {
    /// Starts counting [`EVENTS`] in every thread of `pid`.
    pub fn start(pid: u32) -> anyhow::Result<Counting> {
        let events = EVENTS.join(",");
        let pid = pid.to_string();
        let args = ["stat", "-x", ",", "-e", &events, "-p", &pid];
        Ok(Counting(Perf::start(&args, Stdio::piped())?))
    }

    /// Stops counting and returns each event's count (task-clock in milliseconds).
    pub fn finish(mut self) -> anyhow::Result<BTreeMap<String, f64>> {
        let text = self.0.stop()?;
        let mut counts = BTreeMap::new();
        for line in text.lines() {
            let fields: Vec<&str> = line.split(',').collect();
            let (Some(value), Some(event)) = (fields.first(), fields.get(2)) else {
                continue;
            };
            if let Ok(value) = value.parse::<f64>() {
                let name = event.trim_start_matches("syscalls:sys_enter_");
                counts.insert(name.to_string(), value);
            }
        }
        anyhow::ensure!(!counts.is_empty(), "perf stat counted nothing: {text}");
        Ok(counts)
    }
}

/// [`Counting`] on each of several processes, each named for the report; one that cannot be
/// counted is said on stderr and left out.
pub struct CountingEach {
    what: String,
    counting: Vec<(String, Counting)>,
}

impl CountingEach {
    /// Starts counting each `(name, pid)`; `what` (the measurement) begins every line printed.
    pub fn start(what: &str, processes: impl IntoIterator<Item = (String, u32)>) -> CountingEach {
        let counting = processes
            .into_iter()
            .filter_map(|(name, pid)| match Counting::start(pid) {
                Ok(counting) => Some((name, counting)),
                Err(e) => {
                    eprintln!("{what} {name}: {e:#}");
                    None
                }
            })
            .collect();
        CountingEach {
            what: what.to_string(),
            counting,
        }
    }

    /// Stops counting and prints each process's counts per MiB of the `bytes` the measurement
    /// carried.
    pub fn finish_and_print(self, bytes: f64) {
        let what = self.what;
        for (name, counting) in self.counting {
            match counting.finish() {
                Ok(counts) => eprintln!("{what} {name} per MiB: {}", per_mib(&counts, bytes)),
                Err(e) => eprintln!("{what} {name}: {e:#}"),
            }
        }
    }
}

/// A system-wide `perf record` (every process, kernel included, 999 samples a second, with
/// call chains) until [`Recording::stop`], for `perf report --sort pid,sym` on one
/// measurement, and `--children` to see which system call a kernel function ran under.
pub struct Recording(Perf);

impl Recording {
    /// Starts recording into `file`.
    pub fn start(file: &Path) -> anyhow::Result<Recording> {
        let file = file.to_string_lossy();
        let args = ["record", "-a", "-g", "-F", "999", "-o", &file];
        Ok(Recording(Perf::start(&args, Stdio::null())?))
    }

    /// With `RENKEI_BENCH_RECORD=<prefix>` set, a recording of one measurement into
    /// `<prefix>.<label>.<n>`, the first `n` not taken yet; `None` without it, or (said on
    /// stderr) when perf cannot start: a benchmark measures the same either way.
    pub fn from_env(label: &str) -> Option<Recording> {
        let prefix = PathBuf::from(std::env::var_os("RENKEI_BENCH_RECORD")?);
        let file = (1..)
            .map(|n| PathBuf::from(format!("{}.{label}.{n}", prefix.display())))
            .find(|f| !f.exists())?;
        Recording::start(&file)
            .map_err(|e| eprintln!("{label}: {e:#}"))
            .ok()
    }

    /// Stops recording and waits until the file is written.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.0.stop().map(drop)
    }
}

/// Counts per MiB received, one line: `task-clock` as CPU milliseconds, the rest as events.
pub fn per_mib(counts: &BTreeMap<String, f64>, bytes: f64) -> String {
    let mib = bytes / (1024.0 * 1024.0);
    counts
        .iter()
        .filter(|(_, v)| **v > 0.0)
        .map(|(k, v)| format!("{k} {:.1}", v / mib))
        .collect::<Vec<_>>()
        .join(", ")
}
