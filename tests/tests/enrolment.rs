//! A box fresh from the disk image (OPS-1): the real `renkei run` without a configuration, in
//! the clinic box's namespace, with the keys first boot makes (the real `renkei keygen`, as
//! `renkei-firstboot.service` runs it). The installer's laptop on the clinic LAN reads the
//! enrolment page over HTTPS with `curl` and `openssl`, and compares it with what the console
//! shows (the real `renkei status`, as `renkei-console.service` runs it). Untrusted requests
//! get clean errors (INT-1); the daemon speaks systemd's protocol while unenrolled (AVL-2) and
//! starts enrolled, on the same port, once its configuration is there.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use renkei::enrolment::DEFAULT_PAGE_PORT;
use renkei_lab::web::{curl, served_fingerprint, status_toml};
use renkei_lab::{require_root, wait_until, Daemon, Lab, Namespace, Node};

/// The clinic box's LAN addresses, where the installer's laptop reaches it.
const BOX_V4: &str = "198.18.20.1";
const BOX_V6: &str = "fd00:20::1";
const LAPTOP_V6: &str = "fd00:20::2";

/// What first boot printed (`renkei keygen`) and where it put the files.
struct FirstBoot {
    /// The folder that plays `/etc/renkei`.
    etc: PathBuf,
    console: String,
    wireguard_public_key: String,
    csr_sha256: String,
}

/// Runs first boot's command with `etc` as `/etc/renkei`.
fn first_boot(etc: &Path) -> FirstBoot {
    std::fs::create_dir_all(etc).expect("etc");
    let output = Command::new(renkei_lab::daemon::renkei_bin().expect("renkei"))
        .arg("keygen")
        .arg("--private-key")
        .arg(etc.join("wg.key"))
        .arg("--tls-key")
        .arg(etc.join("tls/box.key"))
        .arg("--csr")
        .arg(etc.join("box.csr"))
        .output()
        .expect("renkei keygen");
    let console = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{console}");
    FirstBoot {
        etc: etc.to_path_buf(),
        wireguard_public_key: console_value(&console, "WireGuard public key").expect("key"),
        csr_sha256: console_value(&console, "CSR SHA-256").expect("CSR fingerprint"),
        console,
    }
}

/// The word after `label:` on the last console line that has it, as `image/boot-test` reads
/// the serial console.
fn console_value(console: &str, label: &str) -> Option<String> {
    let prefix = format!("{label}:");
    console
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix(&prefix))
        .next_back()
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_string)
}

/// The real `renkei status`, as the console shows it.
fn renkei_status(config: &Path, runtime_dir: &Path) -> anyhow::Result<String> {
    let output = Command::new(renkei_lab::daemon::renkei_bin()?)
        .arg("status")
        .arg("--config")
        .arg(config)
        .arg("--runtime-dir")
        .arg(runtime_dir)
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "renkei status: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Gives the box and the laptop IPv6 addresses on the clinic LAN (no DAD: usable at once).
/// Lab namespaces start with IPv6 off; it is turned on for the clinic LAN link only.
fn add_lan_ipv6(lab: &Lab) {
    for ns in [lab.ns(Node::Clinic), lab.lan_ns(Node::Clinic)] {
        ns.enable_ipv6("lan0").expect("IPv6 on the clinic LAN");
    }
    lab.ns(Node::Clinic)
        .ip(&[
            "addr",
            "add",
            &format!("{BOX_V6}/64"),
            "dev",
            "lan0",
            "nodad",
        ])
        .expect("box IPv6");
    lab.lan_ns(Node::Clinic)
        .ip(&[
            "addr",
            "add",
            &format!("{LAPTOP_V6}/64"),
            "dev",
            "lan0",
            "nodad",
        ])
        .expect("laptop IPv6");
}

/// Waits until `url` answers 200 from `ns`.
fn wait_for_page(ns: &Namespace, url: &str) {
    wait_until(Duration::from_secs(15), url, || {
        (curl(ns, &["-g", url]).ok()?.status == 200).then_some(())
    })
    .expect("the page answers");
}

/// systemd's side of the notify socket: read all the time, as systemd does (a datagram queue
/// that nobody reads fills up and blocks the daemon's next notification).
struct Notify {
    messages: std::sync::mpsc::Receiver<String>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Notify {
    fn bind(path: &Path) -> Notify {
        let socket = UnixDatagram::bind(path).expect("notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let (tx, messages) = std::sync::mpsc::channel();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = std::sync::Arc::clone(&stop);
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(n) = socket.recv(&mut buf) {
                    let _ = tx.send(String::from_utf8_lossy(&buf[..n]).into_owned());
                }
            }
        });
        Notify {
            messages,
            stop,
            reader: Some(reader),
        }
    }

    /// The next message that contains `wanted`, skipping others; fails after `timeout`.
    fn expect(&self, wanted: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Ok(message) = self.messages.recv_timeout(left) else {
                break;
            };
            if message.contains(wanted) {
                return message;
            }
            seen.push(message);
        }
        panic!("no notify message with {wanted:?} within {timeout:?}; got {seen:#?}");
    }
}

impl Drop for Notify {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

fn assert_refused(ns: &Namespace, address: &str) {
    let refused = ns
        .tcp_connect(address, Duration::from_secs(5))
        .err()
        .map(|e| format!("{e:#}"));
    assert!(
        refused.as_deref().is_some_and(|e| e.contains("refused")),
        "{address} still accepts connections: {refused:?}"
    );
}

#[test]
fn ops1_int1_unenrolled_box_serves_its_enrolment_data_over_https_without_login() {
    require_root!();
    let lab = Lab::new().expect("lab");
    add_lan_ipv6(&lab);
    let node_dir = lab.node_dir(Node::Clinic);
    let boot = first_boot(&node_dir.join("etc"));
    assert!(
        boot.console.contains(&format!(":{DEFAULT_PAGE_PORT}/")),
        "first boot says where the page will be: {}",
        boot.console
    );
    let config = boot.etc.join("renkei.toml");
    let runtime_dir = node_dir.join("run-unenrolled");
    let state_dir = node_dir.join("state-unenrolled");
    // The default listen address and port: what the image's renkei.service uses.
    let mut daemon = Daemon::start_with_args(
        Node::Clinic,
        lab.ns(Node::Clinic),
        &config,
        &runtime_dir,
        &node_dir.join("renkei-unenrolled.log"),
        &[
            OsStr::new("--state-dir"),
            state_dir.as_os_str(),
            OsStr::new("--runtime-dir"),
            runtime_dir.as_os_str(),
        ],
        &[],
    )
    .expect("unenrolled daemon");

    // The console: the same data as first boot, the page's URLs and its certificate.
    let console = renkei_status(&config, &runtime_dir).expect("renkei status");
    assert!(console.contains("NOT ENROLLED"), "{console}");
    assert_eq!(
        console_value(&console, "WireGuard public key").as_deref(),
        Some(boot.wireguard_public_key.as_str()),
        "{console}"
    );
    assert_eq!(
        console_value(&console, "CSR SHA-256").as_deref(),
        Some(boot.csr_sha256.as_str()),
        "{console}"
    );
    let v4_url = format!("https://{BOX_V4}:{DEFAULT_PAGE_PORT}/");
    let v6_url = format!("https://[{BOX_V6}]:{DEFAULT_PAGE_PORT}/");
    assert!(
        console.contains("Enrolment page:       https://"),
        "{console}"
    );
    assert!(console.contains(&format!(" {v4_url}\n")), "{console}");
    assert!(console.contains(&v6_url), "{console}");
    let console_certificate = console_value(&console, "Page cert SHA-256").expect("fingerprint");

    let laptop = lab.lan_ns(Node::Clinic);
    wait_for_page(laptop, &v4_url);
    // The certificate the browser warns about is the one the console names.
    for address in [
        format!("{BOX_V4}:{DEFAULT_PAGE_PORT}"),
        format!("[{BOX_V6}]:{DEFAULT_PAGE_PORT}"),
    ] {
        assert_eq!(
            served_fingerprint(laptop, &address).expect("openssl"),
            console_certificate,
            "{address}"
        );
    }

    // No login: the page itself shows the data (written in, so without JavaScript too).
    for url in [&v4_url, &v6_url] {
        let page = curl(laptop, &["-g", url]).expect("curl");
        assert_eq!(page.status, 200, "{page:?}");
        assert!(page.header("set-cookie").is_none(), "{page:?}");
        assert!(page.body.contains(&boot.wireguard_public_key), "{page:?}");
        assert!(page.body.contains(&boot.csr_sha256), "{page:?}");
        assert_eq!(page.header("x-frame-options"), Some("DENY"));
    }
    let data = curl(laptop, &[&format!("{v4_url}api/v1/enrolment")])
        .expect("curl")
        .json()
        .expect("json");
    assert_eq!(data["wireguard_public_key"], boot.wireguard_public_key);
    assert_eq!(data["csr_sha256"], boot.csr_sha256);
    let csr = curl(laptop, &[&format!("{v4_url}box.csr")]).expect("curl");
    assert_eq!(csr.status, 200, "{csr:?}");
    assert_eq!(
        csr.body,
        std::fs::read_to_string(boot.etc.join("box.csr")).expect("csr"),
        "the operator downloads the CSR itself"
    );
    // Nothing private anywhere.
    let wg_private = std::fs::read_to_string(boot.etc.join("wg.key")).expect("key");
    let tls_private = std::fs::read_to_string(boot.etc.join("tls/box.key")).expect("key");
    for path in ["", "api/v1/enrolment", "box.csr"] {
        let body = curl(laptop, &[&format!("{v4_url}{path}")])
            .expect("curl")
            .body;
        assert!(!body.contains(wg_private.trim()), "{path}");
        assert!(!body.contains("PRIVATE KEY"), "{path}");
        for line in tls_private.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!body.contains(line), "{path}");
        }
    }

    // Bad requests get clean errors, and the daemon keeps serving.
    for (path, status) in [
        ("api/v1/status", 404),
        ("metrics", 404),
        ("login", 404),
        ("../../etc/renkei/wg.key", 404),
        ("nothing-here", 404),
    ] {
        let reply = curl(laptop, &[&format!("{v4_url}{path}")]).expect("curl");
        assert_eq!(reply.status, status, "{path}: {reply:?}");
    }
    let post = curl(laptop, &["--data", "x=1", &v4_url]).expect("curl");
    assert_eq!(post.status, 405, "{post:?}");
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    let big = format!("X-Filler: {}", "a".repeat(10 * 1024));
    let reply = curl(laptop, &["-H", &big, &v4_url]).expect("curl");
    assert_eq!(reply.status, 431, "big header: {reply:?}");
    // A header far over the limit: answered 431 or cut off while curl is still sending it.
    let huge = node_dir.join("huge-header.txt");
    std::fs::write(&huge, format!("X-Filler: {}\n", "a".repeat(96 * 1024))).expect("write");
    let reply = curl(laptop, &["-H", &format!("@{}", huge.display()), &v4_url]).expect("curl");
    assert!(
        reply.status == 431 || (reply.status == 0 && [55, 56].contains(&reply.curl_exit)),
        "huge header: {reply:?}"
    );
    let long_path = format!("{v4_url}{}", "a".repeat(16 * 1024));
    let reply = curl(laptop, &[&long_path]).expect("curl");
    assert!(
        [414, 431].contains(&reply.status),
        "huge request line: {reply:?}"
    );
    // Plain HTTP to the HTTPS port: the connection is closed, promptly.
    let mut stream = laptop
        .tcp_connect(
            &format!("{BOX_V4}:{DEFAULT_PAGE_PORT}"),
            Duration::from_secs(5),
        )
        .expect("connect");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: box\r\n\r\n")
        .expect("write");
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    let started = Instant::now();
    let mut sink = Vec::new();
    let closed = stream.read_to_end(&mut sink);
    assert!(
        !matches!(&closed, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
        "plain HTTP to the TLS port was held open: {closed:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(!daemon.has_exited(), "{}", daemon.log_text());
    wait_for_page(laptop, &v4_url);

    // SIGTERM: a clean exit that releases the port and the control socket.
    let status = daemon.terminate().expect("stop");
    assert!(status.success(), "{status:?}");
    assert_refused(laptop, &format!("{BOX_V4}:{DEFAULT_PAGE_PORT}"));
    assert!(!runtime_dir
        .join(renkei::control_socket::SOCKET_NAME)
        .exists());
    assert!(!daemon.log_text().contains("panicked"));
}

#[test]
fn ops1_avl2_unenrolled_box_starts_enrolled_on_the_same_port_when_its_configuration_arrives() {
    require_root!();
    let lab = Lab::new().expect("lab");
    let node_dir = lab.node_dir(Node::Clinic);
    // /etc/renkei is the box's folder: the lab's WireGuard key is kept, the TLS key and CSR are
    // made; the config the operator sends names the same state and runtime folders the daemon
    // was started with.
    let boot = first_boot(&node_dir);
    assert_eq!(boot.wireguard_public_key, lab.public_key(Node::Clinic));
    let config = node_dir.join("renkei.toml");
    let runtime_dir = node_dir.join("run");
    let state_dir = node_dir.join("state");
    let notify_path = node_dir.join("notify.sock");
    let notify = Notify::bind(&notify_path);
    let listen = format!("{BOX_V4}:{DEFAULT_PAGE_PORT}");
    let mut daemon = Daemon::start_with_args(
        Node::Clinic,
        lab.ns(Node::Clinic),
        &config,
        &runtime_dir,
        &node_dir.join("renkei-1.log"),
        &[
            OsStr::new("--state-dir"),
            state_dir.as_os_str(),
            OsStr::new("--runtime-dir"),
            runtime_dir.as_os_str(),
            OsStr::new("--enrolment-listen"),
            OsStr::new(&listen),
        ],
        &[
            ("NOTIFY_SOCKET", notify_path.as_os_str()),
            ("WATCHDOG_USEC", OsStr::new("1000000")),
        ],
    )
    .expect("unenrolled daemon");
    let pid = daemon.pid();

    let ready = notify.expect("READY=1", Duration::from_secs(15));
    let url = format!("https://{listen}/");
    assert!(
        ready.contains(&format!(
            "STATUS=not enrolled: waiting for the operator's configuration; enrolment page {url}"
        )),
        "{ready}"
    );
    notify.expect("WATCHDOG=1", Duration::from_secs(5));
    let laptop = lab.lan_ns(Node::Clinic);
    wait_for_page(laptop, &url);
    let certificate = served_fingerprint(laptop, &listen).expect("openssl");

    // A file that is not a valid configuration is not run; the box stays unenrolled.
    std::fs::write(&config, "[meta]\nversion = \"one\"\n").expect("write");
    wait_until(
        Duration::from_secs(15),
        "the invalid config to be noticed",
        || {
            daemon
                .log_text()
                .contains("is invalid; staying unenrolled")
                .then_some(())
        },
    )
    .expect("noticed");
    assert_eq!(daemon.status().expect("status")["enrolled"], false);
    assert_eq!(curl(laptop, &[&url]).expect("curl").status, 200);

    // The operator's configuration, with the status page on the enrolment page's port.
    let text = lab.tunnel_config(Node::Clinic) + &status_toml(&listen, "").expect("status section");
    let tmp = node_dir.join("renkei.toml.tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, &config).expect("rename");
    let enrolled = wait_until(Duration::from_secs(30), "the box to run enrolled", || {
        let status = daemon.status().ok()?;
        status.get("facility").is_some().then_some(status)
    })
    .expect("enrolled");
    assert_eq!(enrolled["role"], "viewing");
    assert_eq!(daemon.pid(), pid, "the same process, no restart needed");
    assert!(!daemon.has_exited());
    let ready = notify.expect("READY=1", Duration::from_secs(15));
    assert!(ready.contains("STATUS=facility"), "{ready}");
    notify.expect("WATCHDOG=1", Duration::from_secs(5));

    // The port was given back: the administrator's page (login) answers on it now, with the
    // certificate the installer already checked.
    let login_url = format!("{url}login");
    wait_for_page(laptop, &login_url);
    let root = curl(laptop, &[&url]).expect("curl");
    assert_eq!(
        root.status, 303,
        "the admin page wants a login now: {root:?}"
    );
    assert_eq!(
        curl(laptop, &[&format!("{url}api/v1/enrolment")])
            .expect("curl")
            .status,
        401
    );
    assert_eq!(
        served_fingerprint(laptop, &listen).expect("openssl"),
        certificate,
        "the same certificate before and after enrolment"
    );
    let console = renkei_status(&config, &runtime_dir).expect("renkei status");
    assert!(
        console.contains("facility: lab clinic (viewing)"),
        "{console}"
    );
    assert!(!console.contains("NOT ENROLLED"), "{console}");
    // The enrolment data stays on the console, once and labelled as before enrolment (as
    // image/boot-test reads it on its second boot).
    assert_eq!(
        (
            console_value(&console, "WireGuard public key"),
            console_value(&console, "CSR SHA-256")
        ),
        (
            Some(boot.wireguard_public_key.clone()),
            Some(boot.csr_sha256.clone())
        ),
        "{console}"
    );
    assert_eq!(
        console.matches("WireGuard public key").count(),
        1,
        "{console}"
    );

    let status = daemon.terminate().expect("stop");
    assert!(status.success(), "{status:?}");
    notify.expect("STOPPING=1", Duration::from_secs(5));
    assert_refused(laptop, &listen);
}
