//! The daemon's systemd protocol, spoken to a notify socket the test owns (as systemd's would
//! be): READY=1 only after the tunnel is up, WATCHDOG=1 pings at half the watchdog interval, and
//! STOPPING=1 on SIGTERM. A daemon that is frozen (SIGSTOP, as a hung process) sends no pings.

use std::os::unix::net::UnixDatagram;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use renkei_lab::{require_root, wait_until, Lab, Node};

/// Reads one notify message, waiting at most `timeout`.
fn next_message(socket: &UnixDatagram, timeout: Duration) -> Option<String> {
    socket.set_read_timeout(Some(timeout)).ok()?;
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[test]
fn avl2_ready_watchdog_and_stopping_are_sent_to_systemd() {
    require_root!();
    let lab = Lab::new().expect("lab");
    let config = lab
        .write_config(Node::Hub, &lab.config(Node::Hub))
        .expect("config");
    let socket_path = lab.node_dir(Node::Hub).join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).expect("notify socket");
    let bin = renkei_lab::daemon::renkei_bin().expect("renkei");
    let started = Instant::now();
    let mut child = lab
        .ns(Node::Hub)
        .command(&bin.to_string_lossy())
        .args(["run", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "1000000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("renkei");
    let pid = Pid::from_raw(child.id() as i32);
    struct Reap<'a>(&'a mut std::process::Child);
    impl Drop for Reap<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let reap = Reap(&mut child);

    let ready = next_message(&socket, Duration::from_secs(15)).expect("a READY message");
    assert!(ready.contains("READY=1"), "{ready}");
    assert!(ready.contains("STATUS=facility"), "{ready}");
    // READY comes after the tunnel exists.
    lab.ns(Node::Hub)
        .ip(&["link", "show", &lab.interface(Node::Hub)])
        .expect("tunnel interface present at READY");

    // Pings at half the 1 s watchdog interval.
    let mut pings = 0;
    let window = Instant::now();
    while window.elapsed() < Duration::from_secs(3) {
        if let Some(m) = next_message(&socket, Duration::from_secs(2)) {
            if m.contains("WATCHDOG=1") {
                pings += 1;
            }
        }
    }
    assert!(pings >= 4, "{pings} watchdog pings in 3 s");

    // A frozen daemon sends nothing: systemd would kill it after WatchdogSec.
    kill(pid, Signal::SIGSTOP).expect("SIGSTOP");
    while next_message(&socket, Duration::from_millis(100)).is_some() {}
    assert_eq!(next_message(&socket, Duration::from_secs(2)), None);
    kill(pid, Signal::SIGCONT).expect("SIGCONT");
    wait_until(Duration::from_secs(5), "pings after SIGCONT", || {
        next_message(&socket, Duration::from_secs(1)).filter(|m| m.contains("WATCHDOG=1"))
    })
    .expect("pings resume");

    kill(pid, Signal::SIGTERM).expect("SIGTERM");
    wait_until(Duration::from_secs(10), "STOPPING=1", || {
        next_message(&socket, Duration::from_secs(1)).filter(|m| m.contains("STOPPING=1"))
    })
    .expect("STOPPING sent");
    let status = wait_until(Duration::from_secs(10), "exit", || {
        reap.0.try_wait().ok().flatten()
    })
    .expect("exited");
    assert!(status.success(), "{status}");
    assert!(started.elapsed() < Duration::from_secs(60));
}
