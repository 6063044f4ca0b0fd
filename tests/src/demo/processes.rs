//! The lab's processes, told apart from recycled pids by their start time.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::wait::wait_until;

use super::record::Process;
/// The start time of a running (not zombie) process, `None` when there is none.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

/// `/proc/<pid>/stat` → start time, `None` for a zombie or a line that does not parse. The
/// command name (field 2) may hold spaces and parentheses, so fields count from its last `)`.
pub fn parse_start_time(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); field 22 (starttime) is fields[19].
    if matches!(fields.first(), Some(&"Z") | Some(&"X") | None) {
        return None;
    }
    fields.get(19)?.parse().ok()
}

impl Process {
    /// Records a running process.
    pub fn of(name: &str, pid: u32) -> anyhow::Result<Process> {
        let start_time = start_time(pid).with_context(|| format!("{name} (pid {pid}) is gone"))?;
        Ok(Process {
            name: name.to_string(),
            pid,
            start_time,
        })
    }

    /// True while this very process runs (same pid and start time, not a zombie).
    pub fn alive(&self) -> bool {
        start_time(self.pid) == Some(self.start_time)
    }

    fn signal(&self, signal: Signal) {
        if self.alive() && self.pid > 1 {
            if let Ok(pid) = i32::try_from(self.pid) {
                let _ = kill(Pid::from_raw(pid), signal);
            }
        }
    }

    /// SIGTERM, then SIGKILL after `timeout`; true once it is gone.
    pub(super) fn stop(&self, timeout: Duration) -> bool {
        if !self.alive() {
            return true;
        }
        self.signal(Signal::SIGTERM);
        if wait_until(timeout, &self.name, || (!self.alive()).then_some(())).is_ok() {
            return true;
        }
        self.signal(Signal::SIGKILL);
        wait_until(Duration::from_secs(5), &self.name, || {
            (!self.alive()).then_some(())
        })
        .is_ok()
    }
}

/// Keepers (`lab keep --dir <state_dir>`) running for `state_dir`, whatever `lab.json` says.
pub(super) fn unrecorded_keepers(state_dir: &Path) -> Vec<Process> {
    processes_using(state_dir)
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
                let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
                args.get(1) == Some(&&b"keep"[..])
            })
        })
        .filter_map(|pid| Process::of("a lab keeper without a record", pid).ok())
        .collect()
}

/// Processes other than this one with `dir` or a path inside it as a command-line argument
/// (every daemon and the document server of a lab name files in its folder).
pub fn processes_using(dir: &Path) -> Vec<u32> {
    let Some(dir) = dir.to_str().filter(|d| d.len() > 1) else {
        return Vec::new();
    };
    let inside = format!("{}/", dir.trim_end_matches('/'));
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id();
    let mut found: Vec<u32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me && start_time(*pid).is_some())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
                cmdline
                    .split(|b| *b == 0)
                    .filter_map(|arg| std::str::from_utf8(arg).ok())
                    .any(|arg| arg == dir || arg.starts_with(&inside))
            })
        })
        .collect();
    found.sort_unstable();
    found
}

pub(super) fn namespace_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_is_field_22_and_zombies_have_none() {
        let stat = "1234 (a (weird) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                    987654 1000 100";
        assert_eq!(parse_start_time(stat), Some(987_654));
        let zombie = stat.replace(") S ", ") Z ");
        assert_eq!(parse_start_time(&zombie), None);
        assert_eq!(parse_start_time("garbage"), None);
        assert_eq!(parse_start_time("1 (x) S 1 2"), None);
        let me = start_time(std::process::id()).expect("this process runs");
        assert!(Process::of("me", std::process::id()).expect("me").alive());
        assert!(!Process {
            name: "recycled".into(),
            pid: std::process::id(),
            start_time: me + 1
        }
        .alive());
    }
}
