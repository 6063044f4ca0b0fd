//! Network namespaces and commands run inside them. A `Namespace` deletes itself on drop, which
//! also destroys every link inside it.

use std::fs::File;
use std::process::{Command, Output};
use std::sync::{Mutex, PoisonError};

use anyhow::Context;

/// Set once this process is stopping ([`refuse_new_namespaces`]); held around each `ip netns
/// add`, so that no namespace is made after it is set.
static STOPPING: Mutex<bool> = Mutex::new(false);

/// From now on [`Namespace::create`] fails: for a process removing its namespaces on its way
/// out, which must not race one being made.
pub fn refuse_new_namespaces() {
    *STOPPING.lock().unwrap_or_else(PoisonError::into_inner) = true;
}

/// True once [`refuse_new_namespaces`] was called.
pub fn is_stopping() -> bool {
    *STOPPING.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A network namespace created by the lab.
#[derive(Debug)]
pub struct Namespace {
    name: String,
}

impl Namespace {
    /// Creates `name` (deleting a stale one of the same name first) with loopback up and IPv6
    /// off on every interface it will ever have: the lab's addresses are IPv4 from
    /// 198.18.0.0/15, and an interface with IPv6 on would make up link-local addresses and send
    /// router solicitations by itself. A test that needs IPv6 turns it on for one interface
    /// with [`Namespace::enable_ipv6`] and uses fd00::/8.
    pub fn create(name: &str) -> anyhow::Result<Namespace> {
        {
            let stopping = STOPPING.lock().unwrap_or_else(PoisonError::into_inner);
            anyhow::ensure!(
                !*stopping,
                "this process is stopping: no new namespace {name}"
            );
            let _ = Command::new("ip").args(["netns", "del", name]).output();
            run(Command::new("ip").args(["netns", "add", name]))?;
        }
        let ns = Namespace {
            name: name.to_string(),
        };
        ns.exec(
            "sysctl",
            &[
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
                "net.ipv6.conf.lo.disable_ipv6=1",
            ],
        )?;
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Turns IPv6 on for one interface (the namespace starts with it off everywhere); the test
    /// then gives it fd00::/8 addresses only (it also gets a link-local one).
    pub fn enable_ipv6(&self, interface: &str) -> anyhow::Result<()> {
        self.sysctl(&format!("net.ipv6.conf.{interface}.disable_ipv6"), "0")
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }

    /// Runs `program args` inside the namespace; fails on a non-zero exit.
    pub fn exec(&self, program: &str, args: &[&str]) -> anyhow::Result<String> {
        let output = run(self.command(program).args(args))?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Runs `ip args` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = run(Command::new("ip").args(["-n", &self.name]).args(args))?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Sets a sysctl inside the namespace.
    pub fn sysctl(&self, key: &str, value: &str) -> anyhow::Result<()> {
        self.exec("sysctl", &["-qw", &format!("{key}={value}")])?;
        Ok(())
    }

    /// Runs `f` on a thread that has entered the namespace: sockets it opens live there.
    pub fn run_inside<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> anyhow::Result<T> {
        run_inside(&self.name, f)
    }

    /// Opens a std TCP listener inside the namespace.
    pub fn tcp_listener(&self, addr: &str) -> anyhow::Result<std::net::TcpListener> {
        let addr = addr.to_string();
        self.run_inside(move || std::net::TcpListener::bind(&addr))?
            .with_context(|| format!("listening in {}", self.name))
    }

    /// Opens a std UDP socket inside the namespace.
    pub fn udp_socket(&self, addr: &str) -> anyhow::Result<std::net::UdpSocket> {
        let addr = addr.to_string();
        self.run_inside(move || std::net::UdpSocket::bind(&addr))?
            .with_context(|| format!("binding UDP in {}", self.name))
    }

    /// Connects a std TCP stream from inside the namespace, bounded by `timeout`.
    pub fn tcp_connect(
        &self,
        addr: &str,
        timeout: std::time::Duration,
    ) -> anyhow::Result<std::net::TcpStream> {
        let addr: std::net::SocketAddr = addr.parse()?;
        self.run_inside(move || std::net::TcpStream::connect_timeout(&addr, timeout))?
            .with_context(|| format!("connecting to {addr} from {}", self.name))
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Runs `f` on a thread that has entered the namespace `name`: sockets it opens live there
/// (for code that outlives the [`Namespace`] borrow, such as a thread serving connections).
pub fn run_inside<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> anyhow::Result<T> {
    let path = format!("/run/netns/{name}");
    let handle = std::thread::spawn(move || -> anyhow::Result<T> {
        let file = File::open(&path).with_context(|| format!("opening {path}"))?;
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("entering {path}"))?;
        Ok(f())
    });
    handle
        .join()
        .map_err(|_| anyhow::anyhow!("thread inside {name} panicked"))?
}

/// The processes inside namespace `name` (`ip netns pids`); empty when it does not exist.
pub fn pids_in(name: &str) -> Vec<i32> {
    Command::new("ip")
        .args(["netns", "pids", name])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .filter(|p| *p > 1)
                .collect()
        })
        .unwrap_or_default()
}

/// Ends every process still inside namespace `name` (SIGTERM, then SIGKILL after `timeout`)
/// and deletes the namespace. Deleting a namespace alone would leave its processes running,
/// unreachable by name: a lab that crashed before it recorded a daemon leaves exactly that.
/// Returns the processes that would not die (none, normally).
pub fn empty_and_delete(name: &str, timeout: std::time::Duration) -> Vec<i32> {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let signal_all = |signal: Signal| {
        for pid in pids_in(name) {
            let _ = kill(Pid::from_raw(pid), signal);
        }
    };
    let gone = || pids_in(name).is_empty().then_some(());
    signal_all(Signal::SIGTERM);
    if crate::wait::wait_until(timeout, "processes in a namespace to exit", gone).is_err() {
        signal_all(Signal::SIGKILL);
        let _ = crate::wait::wait_until(
            std::time::Duration::from_secs(5),
            "killed processes in a namespace to go",
            gone,
        );
    }
    let left = pids_in(name);
    let _ = Command::new("ip").args(["netns", "del", name]).output();
    left
}

/// The inode of namespace `name` (what `/proc/<pid>/ns/net` of a process inside it names as
/// `net:[<inode>]`); `None` when it does not exist. It identifies the namespace after its name
/// is gone.
pub fn inode_of(name: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/run/netns/{name}"))
        .ok()
        .map(|m| m.ino())
}

/// Kills (SIGKILL) what a removal by name can miss, until a look through /proc finds none of
/// it (at most `timeout`): processes still inside one of the namespaces `inodes` (deleted ones
/// live on while a process is in them), and children of `parent` on their way into one (an
/// `ip netns exec` that had opened a namespace before its name went) or already inside any
/// namespace but `parent`'s own. A process that keeps starting processes while its namespaces
/// are removed (a benchmark whose main thread goes on after a signal) otherwise leaves them
/// running in namespaces that no longer have a name. Returns the processes that would not die.
pub fn kill_stragglers(inodes: &[u64], parent: u32, timeout: std::time::Duration) -> Vec<i32> {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let own_namespace = net_inode_of_process(parent);
    let stragglers = || -> Vec<i32> {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|&pid| {
                let Some(stat) = ProcessStat::read(pid) else {
                    return false;
                };
                if stat.zombie {
                    return false;
                }
                let namespace = net_inode_of_process(pid as u32);
                let in_deleted = namespace.is_some_and(|ino| inodes.contains(&ino));
                let child_outside = stat.parent == parent
                    && (stat.command == "ip"
                        || (namespace.is_some() && namespace != own_namespace));
                in_deleted || child_outside
            })
            .collect()
    };
    let none_left = crate::wait::wait_until(timeout, "stragglers of a lab to die", || {
        let found = stragglers();
        for &pid in &found {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        found.is_empty().then_some(())
    });
    match none_left {
        Ok(()) => Vec::new(),
        Err(_) => stragglers(),
    }
}

/// The live processes (not zombies) inside the network namespaces `inodes`, named or not, with
/// their command names: what a namespace's removal by name can leave behind.
pub fn live_processes_in(inodes: &[u64]) -> Vec<(i32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| net_inode_of_process(pid as u32).is_some_and(|ino| inodes.contains(&ino)))
        .filter_map(|pid| {
            let stat = ProcessStat::read(pid)?;
            (!stat.zombie).then_some((pid, stat.command))
        })
        .collect()
}

/// The network namespace inode of process `pid` (`None` once it is gone or unreadable).
fn net_inode_of_process(pid: u32) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()?;
    link.to_str()?
        .strip_prefix("net:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// What `/proc/<pid>/stat` says of a process that [`kill_stragglers`] needs.
struct ProcessStat {
    command: String,
    parent: u32,
    zombie: bool,
}

impl ProcessStat {
    fn read(pid: i32) -> Option<ProcessStat> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        ProcessStat::parse(&stat)
    }

    /// `pid (comm) state ppid ...`; comm may itself hold spaces and parentheses, so it ends at
    /// the last `)`.
    fn parse(stat: &str) -> Option<ProcessStat> {
        let open = stat.find('(')?;
        let close = stat.rfind(')')?;
        let command = stat.get(open + 1..close)?.to_string();
        let mut rest = stat.get(close + 1..)?.split_whitespace();
        let state = rest.next()?;
        let parent = rest.next()?.parse().ok()?;
        Some(ProcessStat {
            command,
            parent,
            zombie: state == "Z" || state == "X",
        })
    }
}

/// Runs a command; a non-zero exit is an error carrying its stderr.
pub fn run(command: &mut Command) -> anyhow::Result<Output> {
    let output = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !output.status.success() {
        anyhow::bail!(
            "{command:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_gives_command_parent_and_state() {
        let stat =
            ProcessStat::parse("4242 (ip) R 17 4242 17 0 -1 4194560 99 0 0 0").expect("parsed");
        assert_eq!(
            (stat.command.as_str(), stat.parent, stat.zombie),
            ("ip", 17, false)
        );
        let odd = ProcessStat::parse("7 (a (b) c) Z 1 7 7 0").expect("parsed");
        assert_eq!(
            (odd.command.as_str(), odd.parent, odd.zombie),
            ("a (b) c", 1, true)
        );
        assert!(ProcessStat::parse("7 (ip R").is_none());
        assert!(ProcessStat::parse("").is_none());
    }

    #[test]
    fn this_process_namespace_inode_is_read() {
        let own = net_inode_of_process(std::process::id()).expect("own namespace");
        use std::os::unix::fs::MetadataExt;
        let expected = std::fs::metadata("/proc/self/ns/net").expect("stat").ino();
        assert_eq!(own, expected);
        assert_eq!(net_inode_of_process(u32::MAX), None);
    }
}
