//! Primary and backup hubs (AVL-4) in the namespace lab: two real hub daemons on the WAN
//! bridge with the same tunnel address, and a facility box whose `[tunnel.failover]` names
//! both. The primary is cut off (its WAN link down) and killed; the box must move to the
//! backup within the documented bound, new connections must reach the backup, an open
//! connection through the failed hub must end cleanly, and the box must return to the primary
//! only after the hold time.
//!
//! Which hub a connection reached is told by a TCP listener on each hub's tunnel address that
//! notes who connected; the hubs themselves are the real `renkei` binary.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use renkei::config::FailoverConfig;
use renkei_lab::lab::{BACKUP_HUB_PEER, PRIMARY_HUB_PEER};
use renkei_lab::probe::ProbeEndpoint;
use renkei_lab::traffic::spawn_echo;
use renkei_lab::{require_root, wait_until, Daemon, Lab, Node};

/// The port of the listener on each hub's tunnel address that says which hub was reached.
const WHO_PORT: u16 = 7100;
/// The port of the echo service on the primary that the open transfer uses.
const ECHO_PORT: u16 = 7101;
/// Small times for the test (the defaults are 30 s, 120 s and 10 s).
const FAILOVER_AFTER_SECS: u64 = 6;
const FAIL_BACK_AFTER_SECS: u64 = 8;
const PROBE_INTERVAL_SECS: u64 = 2;
/// How often the group looks at its members (tunnel/hub_group.rs), rounded up.
const GROUP_CHECK_SECS: u64 = 1;
/// The documented bound of a failover: silence for failover_after_secs, then the next check.
const FAILOVER_BOUND: Duration = Duration::from_secs(FAILOVER_AFTER_SECS + GROUP_CHECK_SECS);
/// The documented bound of a return: the primary answers a probe (within one probe interval
/// of coming back), then stays healthy for the hold time, then the next check.
const FAIL_BACK_BOUND: Duration =
    Duration::from_secs(PROBE_INTERVAL_SECS + FAIL_BACK_AFTER_SECS + GROUP_CHECK_SECS);
/// How long the always-on box may take to come up at start.
const LINK_UP_TIMEOUT: Duration = Duration::from_secs(15);
/// The hospital's status page in the prefer test: plain HTTP on the box's loopback.
const STATUS_LISTEN: &str = "127.0.0.1:8080";
/// A new connection through the tunnel.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

fn failover_config() -> FailoverConfig {
    FailoverConfig {
        hubs: Vec::new(),
        failover_after_secs: FAILOVER_AFTER_SECS,
        fail_back_after_secs: FAIL_BACK_AFTER_SECS,
        probe_interval_secs: PROBE_INTERVAL_SECS,
    }
}

/// The active hub in the box's status document, if it has a group.
fn active_hub(daemon: &Daemon) -> Option<String> {
    let status = daemon.status().ok()?;
    status["hubs"]["active"].as_str().map(str::to_string)
}

/// The `hub_switched` events in the box's ring.
fn hub_switches(daemon: &Daemon) -> Vec<serde_json::Value> {
    daemon
        .status()
        .ok()
        .and_then(|s| s["events"].as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e["code"] == "hub_switched")
        .collect()
}

/// Handshake initiations the box sent to peer `name`.
fn handshake_attempts(daemon: &Daemon, name: &str) -> u64 {
    daemon
        .peer(name)
        .ok()
        .and_then(|p| p["backend"]["wireguard"]["handshake_attempts"].as_u64())
        .unwrap_or(0)
}

/// The box's events with `code` about peer `name`.
fn tunnel_events(daemon: &Daemon, name: &str, code: &str) -> Vec<serde_json::Value> {
    daemon
        .status()
        .ok()
        .and_then(|s| s["events"].as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e["code"] == code && e["params"]["peer"] == name)
        .collect()
}

/// Waits until the box uses `hub`; returns how long it took.
fn wait_for_hub(daemon: &Daemon, hub: &str, bound: Duration, what: &str) -> Duration {
    let started = Instant::now();
    // 2x the documented figure: a busy CI machine must not flake.
    wait_until(bound * 2, what, || {
        (active_hub(daemon).as_deref() == Some(hub)).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log_text()));
    started.elapsed()
}

/// The listeners that tell which hub a connection reached.
struct Who {
    primary: ProbeEndpoint,
    backup: ProbeEndpoint,
}

impl Who {
    /// Connects from the facility's namespace to the hubs' shared tunnel address; returns the
    /// peer name of the hub that accepted it, `None` when the connect failed.
    fn connect(&self, lab: &Lab, from: Node) -> Option<&'static str> {
        let before = (self.primary.peers().len(), self.backup.peers().len());
        let address = format!("{}:{WHO_PORT}", Node::Hub.tunnel_address());
        lab.ns(from).tcp_connect(&address, CONNECT_TIMEOUT).ok()?;
        wait_until(
            Duration::from_secs(2),
            "the listener to note the peer",
            || {
                let now = (self.primary.peers().len(), self.backup.peers().len());
                match (now.0 > before.0, now.1 > before.1) {
                    (true, false) => Some(PRIMARY_HUB_PEER),
                    (false, true) => Some(BACKUP_HUB_PEER),
                    _ => None,
                }
            },
        )
        .ok()
    }
}

/// Connects until one attempt reaches `hub` (the first may race the switch); panics after the
/// bound.
fn new_connection_reaches(who: &Who, lab: &Lab, from: Node, hub: &str, box_: &Daemon) {
    wait_until(
        FAILOVER_BOUND * 2,
        &format!("a new connection to reach {hub}"),
        || (who.connect(lab, from) == Some(hub)).then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", box_.log_text()));
}

/// The hospital (always-on) with the primary and backup hubs: cut, return, kill, return.
#[test]
fn avl4_always_on_box_fails_over_on_cut_and_kill_and_returns_after_the_hold_time() {
    require_root!();
    let lab = Lab::with_backup_hub().expect("lab");
    let mut primary = lab
        .start(Node::Hub, &lab.config(Node::Hub))
        .expect("primary hub");
    let _backup = lab
        .start_backup_hub(&lab.backup_hub_config())
        .expect("backup hub");
    let mut config = lab.config(Node::Hospital);
    lab.add_backup_hub(&mut config, failover_config());
    let hospital = lab.start(Node::Hospital, &config).expect("hospital");
    wait_until(LINK_UP_TIMEOUT, "the hospital on the primary, up", || {
        let status = hospital.status().ok()?;
        let primary_up = status["tunnel"]["peers"]
            .as_array()?
            .iter()
            .any(|p| p["name"] == PRIMARY_HUB_PEER && p["state"] == "up");
        (primary_up && status["hubs"]["active"] == PRIMARY_HUB_PEER).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", hospital.log_text()));

    // The hubs' tunnel address exists once their daemons run.
    let who_address = format!("{}:{WHO_PORT}", Node::Hub.tunnel_address());
    let who = Who {
        primary: ProbeEndpoint::start(lab.ns(Node::Hub), &who_address).expect("listener"),
        backup: ProbeEndpoint::start(lab.backup_hub_ns(), &who_address).expect("listener"),
    };
    assert_eq!(
        who.connect(&lab, Node::Hospital),
        Some(PRIMARY_HUB_PEER),
        "the primary carries the prefixes while it answers"
    );
    // The backup is probed, healthy, and not used.
    let status = hospital.status().expect("status");
    let members = status["hubs"]["members"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(members.len(), 2, "{status}");
    assert_eq!(members[0]["active"], true);
    assert_eq!(members[1]["active"], false);

    // An open transfer through the primary.
    let echo = lab
        .ns(Node::Hub)
        .tcp_listener(&format!("{}:{ECHO_PORT}", Node::Hub.tunnel_address()))
        .expect("echo listener");
    let _echo = spawn_echo(echo, 1);
    let mut open = lab
        .ns(Node::Hospital)
        .tcp_connect(
            &format!("{}:{ECHO_PORT}", Node::Hub.tunnel_address()),
            CONNECT_TIMEOUT,
        )
        .expect("an open connection through the primary");
    open.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    let mut buf = [0u8; 5];
    open.write_all(b"hello").expect("write");
    open.read_exact(&mut buf).expect("echo through the primary");

    // Step 1: the primary's WAN link is cut.
    let switches_before = hub_switches(&hospital).len();
    lab.ns(Node::Hub)
        .ip(&["link", "set", "wan0", "down"])
        .expect("cut the primary's WAN");
    let took = wait_for_hub(&hospital, BACKUP_HUB_PEER, FAILOVER_BOUND, "the failover");
    eprintln!("failover after the WAN cut took {took:?}");
    new_connection_reaches(&who, &lab, Node::Hospital, BACKUP_HUB_PEER, &hospital);
    let switches = hub_switches(&hospital);
    let step: Vec<_> = switches[switches_before..].to_vec();
    assert_eq!(step.len(), 1, "one move: {step:?}");
    assert_eq!(step[0]["params"]["from"], PRIMARY_HUB_PEER);
    assert_eq!(step[0]["params"]["to"], BACKUP_HUB_PEER);
    assert_eq!(step[0]["params"]["reason"], "no_answer");
    assert_eq!(step[0]["level"], "warning");
    // The open transfer ends cleanly: its packets now reach the backup, which knows no such
    // connection and resets it; nothing hangs.
    let ended = open
        .write_all(b"again")
        .and_then(|()| open.read_exact(&mut buf));
    let err = ended.expect_err("the open connection through the failed hub ends");
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::UnexpectedEof
                | std::io::ErrorKind::BrokenPipe
        ),
        "it ends with a reset, not a hang: {err:?}"
    );
    drop(open);

    // Step 2: the link is back; the box returns only after the hold time.
    let switches_before = hub_switches(&hospital).len();
    lab.ns(Node::Hub)
        .ip(&["link", "set", "wan0", "up"])
        .expect("restore the primary's WAN");
    let took = wait_for_hub(
        &hospital,
        PRIMARY_HUB_PEER,
        FAIL_BACK_BOUND,
        "the fail back",
    );
    eprintln!("fail back after the WAN came back took {took:?}");
    assert!(
        took >= Duration::from_secs(FAIL_BACK_AFTER_SECS),
        "no return before the primary was healthy for the hold time: {took:?}"
    );
    new_connection_reaches(&who, &lab, Node::Hospital, PRIMARY_HUB_PEER, &hospital);
    let switches = hub_switches(&hospital);
    let step: Vec<_> = switches[switches_before..].to_vec();
    assert_eq!(step.len(), 1, "one move back, no flapping: {step:?}");
    assert_eq!(step[0]["params"]["reason"], "fail_back");
    assert_eq!(step[0]["level"], "info");

    // Step 3: the primary's process dies.
    let switches_before = hub_switches(&hospital).len();
    let connecting_before_kill =
        tunnel_events(&hospital, PRIMARY_HUB_PEER, "tunnel_connecting").len();
    primary.kill();
    let took = wait_for_hub(&hospital, BACKUP_HUB_PEER, FAILOVER_BOUND, "the failover");
    eprintln!("failover after the kill took {took:?}");
    new_connection_reaches(&who, &lab, Node::Hospital, BACKUP_HUB_PEER, &hospital);
    // The dead primary, now standby, is probed without its state going to connecting and back:
    // no event churn in the ring while a hub stays dead.
    let attempts = || handshake_attempts(&hospital, PRIMARY_HUB_PEER);
    let before = attempts();
    wait_until(
        Duration::from_secs(4 * PROBE_INTERVAL_SECS),
        "two probes of the dead primary",
        || (attempts() >= before + 2).then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", hospital.log_text()));
    let connecting = tunnel_events(&hospital, PRIMARY_HUB_PEER, "tunnel_connecting");
    assert_eq!(
        connecting.len(),
        connecting_before_kill,
        "no connecting event for the dead standby: {connecting:?}"
    );
    let status = hospital.status().expect("status");
    assert_eq!(status["hubs"]["failovers"], 2, "{}", status["hubs"]);
    assert_eq!(
        status["hubs"]["members"][0]["healthy"], false,
        "the dead primary is not healthy"
    );

    // Step 4: the primary is started again; the box returns after the hold time.
    let _primary = lab
        .start(Node::Hub, &lab.config(Node::Hub))
        .expect("primary hub again");
    // The listener stays bound to the tunnel address, which the new daemon puts back.
    let took = wait_for_hub(
        &hospital,
        PRIMARY_HUB_PEER,
        FAIL_BACK_BOUND,
        "the fail back",
    );
    eprintln!("fail back after the restart took {took:?}");
    new_connection_reaches(&who, &lab, Node::Hospital, PRIMARY_HUB_PEER, &hospital);
    let switches = hub_switches(&hospital);
    assert_eq!(
        switches.len() - switches_before,
        2,
        "a failover and one return: {switches:?}"
    );
}

/// Makes new connections from `from` to the hubs' shared tunnel address every
/// [`PROBE_EVERY`] until stopped; counts the ones that failed.
struct Prober {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<(usize, Vec<String>)>>,
}

/// How often the prober connects.
const PROBE_EVERY: Duration = Duration::from_millis(100);

impl Prober {
    fn start(lab: &Lab, from: Node) -> Prober {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let stopped = std::sync::Arc::clone(&stop);
        let ns_name = lab.ns(from).name().to_string();
        let address: std::net::SocketAddr = format!("{}:{WHO_PORT}", Node::Hub.tunnel_address())
            .parse()
            .expect("address");
        let thread = std::thread::spawn(move || {
            let run = renkei_lab::netns::run_inside(&ns_name, move || {
                let (mut made, mut failed) = (0, Vec::new());
                while !stopped.load(Ordering::Relaxed) {
                    // A SYN lost to the switch is sent again after 1 s: within the timeout.
                    match std::net::TcpStream::connect_timeout(&address, CONNECT_TIMEOUT) {
                        Ok(_) => made += 1,
                        Err(e) => failed.push(e.to_string()),
                    }
                    std::thread::sleep(PROBE_EVERY);
                }
                (made, failed)
            });
            run.unwrap_or_else(|e| (0, vec![e.to_string()]))
        });
        Prober {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops; returns how many connections were made and the failures.
    fn finish(mut self) -> (usize, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread
            .take()
            .map(|t| t.join().unwrap_or((0, vec!["the prober panicked".into()])))
            .unwrap_or_default()
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What headless Chromium reads on the status page at `base` from `ns`
/// (tests/browser/status_page.mjs), logged in with the lab password.
fn browser_read(lab: &Lab, ns: &renkei_lab::Namespace, base: &str) -> serde_json::Value {
    let browser = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    let profile = lab.dir.join("chromium-profile");
    std::fs::create_dir_all(&profile).expect("profile dir");
    let screenshot = lab.dir.join("status-page.png");
    let result = renkei_lab::web::browser_script(
        ns,
        &browser.join("status_page.mjs"),
        &[
            base,
            &profile.to_string_lossy(),
            &screenshot.to_string_lossy(),
            "{}",
        ],
        Duration::from_secs(180),
    );
    assert_eq!(result["ok"], true, "{result:#}");
    assert_eq!(
        result["console_errors"],
        serde_json::json!([]),
        "{result:#}"
    );
    result
}

/// The operator drains the primary for maintenance: `renkei remote ... prefer-hub dc-backup`
/// moves the box to the backup at once (both healthy) with no new connection lost, the
/// preference holds while the primary stays healthy past the hold time, an unknown hub is a
/// 404 naming it, a non-operator is refused, the preference survives a restart of the box's
/// daemon (kept in its state directory), and `prefer-hub --clear` returns the box and removes
/// the kept preference.
#[test]
fn avl4_operator_prefers_a_hub_for_maintenance_without_losing_a_new_connection() {
    require_root!();
    let lab = Lab::with_backup_hub().expect("lab");
    let operator = renkei_lab::operator::Operator::new(&lab).expect("operator");
    let _primary = lab
        .start(Node::Hub, &lab.config(Node::Hub))
        .expect("primary hub");
    let _backup = lab
        .start_backup_hub(&lab.backup_hub_config())
        .expect("backup hub");
    let mut config = lab.config(Node::Hospital);
    config.tls = Some(renkei_lab::lab::tls_config());
    config.management = Some(operator.management(Node::Hospital, 120, false));
    config.status = Some(renkei_lab::web::status(STATUS_LISTEN).expect("[status]"));
    lab.add_backup_hub(&mut config, failover_config());
    let mut hospital = lab.start(Node::Hospital, &config).expect("hospital");
    wait_until(
        LINK_UP_TIMEOUT,
        "the hospital on the primary, the backup healthy",
        || {
            let status = hospital.status().ok()?;
            let hubs = &status["hubs"];
            (hubs["active"] == PRIMARY_HUB_PEER
                && hubs["members"][0]["healthy"] == true
                && hubs["members"][1]["healthy"] == true)
                .then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", hospital.log_text()));
    let who_address = format!("{}:{WHO_PORT}", Node::Hub.tunnel_address());
    let who = Who {
        primary: ProbeEndpoint::start(lab.ns(Node::Hub), &who_address).expect("listener"),
        backup: ProbeEndpoint::start(lab.backup_hub_ns(), &who_address).expect("listener"),
    };
    assert_eq!(who.connect(&lab, Node::Hospital), Some(PRIMARY_HUB_PEER));

    // A client the CA vouches for that is not the operator is refused (the identity rule of
    // every /v1 route).
    let stranger = lab
        .ca
        .issue("stranger.renkei.test")
        .and_then(|leaf| leaf.write(&lab.dir.join("stranger"), "client"))
        .expect("a stranger's certificate");
    let body = lab.dir.join("prefer.json");
    std::fs::write(&body, br#"{"hub": "dc-backup"}"#).expect("body");
    let refused = operator
        .raw_request(
            &lab,
            Node::Hospital,
            ("POST", "/v1/hubs/prefer"),
            Some(&body),
            &["Content-Type: application/json".to_string()],
            Some(&stranger),
        )
        .expect("curl");
    assert_eq!(refused.status, Some(403), "{}", refused.output);
    assert_eq!(refused.error_code(), Some("not_operator"));
    assert_eq!(active_hub(&hospital).as_deref(), Some(PRIMARY_HUB_PEER));

    // The drain: new connections run all along.
    let prober = Prober::start(&lab, Node::Hospital);
    let switches_before = hub_switches(&hospital).len();
    let asked = operator
        .remote_from(
            lab.ns(Node::Hub),
            Node::Hospital,
            &["prefer-hub", BACKUP_HUB_PEER],
        )
        .expect("renkei remote prefer-hub");
    assert!(asked.success, "{}", asked.output);
    let took = wait_for_hub(
        &hospital,
        BACKUP_HUB_PEER,
        Duration::from_millis(500) + Duration::from_secs(GROUP_CHECK_SECS),
        "the move to the preferred hub",
    );
    eprintln!("the preferred hub took over after {took:?}");
    new_connection_reaches(&who, &lab, Node::Hospital, BACKUP_HUB_PEER, &hospital);
    let step: Vec<_> = hub_switches(&hospital)[switches_before..].to_vec();
    assert_eq!(step.len(), 1, "{step:?}");
    assert_eq!(step[0]["params"]["reason"], "operator_preferred");
    let status = hospital.status().expect("status");
    assert_eq!(status["hubs"]["preferred"], BACKUP_HUB_PEER);
    assert_eq!(
        status["hubs"]["failovers"], 0,
        "a planned move is no failover"
    );

    // OPS-4: the metrics say which hub is active and which answer, and pass promtool.
    let base = format!("http://{STATUS_LISTEN}");
    let page = lab.ns(Node::Hospital);
    let session =
        renkei_lab::web::login(page, &base, renkei_lab::web::ADMIN_PASSWORD).expect("login");
    let metrics = renkei_lab::web::get(page, &base, &session, "/metrics").expect("metrics");
    assert_eq!(metrics.status, 200, "{}", metrics.body);
    for expected in [
        "renkei_hub_active{hub=\"dc\"} 0\n",
        "renkei_hub_active{hub=\"dc-backup\"} 1\n",
        "renkei_hub_healthy{hub=\"dc\"} 1\n",
        "renkei_hub_healthy{hub=\"dc-backup\"} 1\n",
        "renkei_hub_failovers_total 0\n",
    ] {
        assert!(
            metrics.body.contains(expected),
            "{expected:?} missing:\n{}",
            metrics.body
        );
    }
    let promtool = renkei_lab::tlstools::run_bounded(
        page,
        "promtool",
        &["check", "metrics"],
        metrics.body.as_bytes(),
        Duration::from_secs(20),
    )
    .expect("promtool");
    assert!(promtool.success(), "{}\n{}", promtool.output, metrics.body);
    // The status page's hubs card, in English and Japanese.
    let page_read = browser_read(&lab, page, &base);
    let english = &page_read["english"];
    assert_eq!(english["hubs_visible"], true, "{english:#}");
    assert_eq!(english["hubs_active"], BACKUP_HUB_PEER);
    let rows = english["hub_rows"].as_array().cloned().unwrap_or_default();
    assert_eq!(rows.len(), 2, "{english:#}");
    assert_eq!(rows[1]["active"], "true");
    assert_eq!(rows[1]["cells"][1], "active");
    assert_eq!(rows[0]["cells"][1], "standby");
    assert_eq!(rows[0]["cells"][2], "answering");
    assert!(
        rows[1]["cells"][0].as_str().unwrap_or("").contains('★'),
        "preferred: {rows:?}"
    );
    let japanese = &page_read["japanese"]["hub_rows"];
    assert_eq!(japanese[1]["cells"][1], "使用中", "{japanese:#}");
    assert_eq!(japanese[0]["cells"][1], "待機");
    assert_eq!(japanese[0]["cells"][2], "応答あり");
    // renkei status names the active hub and the preference.
    let summary = renkei::status::summary(&hospital.status().expect("status"));
    assert!(
        summary.contains(
            "hubs: dc healthy, dc-backup (active) healthy, preferred by the operator; 0 failovers"
        ),
        "{summary}"
    );

    // The preference holds: the primary stays healthy for longer than the hold time and the
    // box stays where the operator put it.
    let watched = Instant::now();
    while watched.elapsed() < FAIL_BACK_BOUND * 2 {
        let status = hospital.status().expect("status");
        assert_eq!(
            status["hubs"]["active"], BACKUP_HUB_PEER,
            "{}",
            status["hubs"]
        );
        std::thread::sleep(renkei_lab::wait::POLL);
    }
    assert_eq!(
        hospital.status().expect("status")["hubs"]["members"][0]["healthy"],
        true,
        "the primary answered all along"
    );
    let (made, failed) = prober.finish();
    assert!(made > 10, "the prober made {made} connections");
    assert!(
        failed.is_empty(),
        "no new connection is lost to a planned move: {failed:?}"
    );

    // The box's daemon dies and starts again (a crash, an update): the preference was kept in
    // its state directory, so it starts on the preferred hub and stays there.
    hospital.kill();
    let hospital = lab.start(Node::Hospital, &config).expect("hospital again");
    let status = hospital.status().expect("status");
    assert_eq!(
        status["hubs"]["preferred"], BACKUP_HUB_PEER,
        "the preference survives the restart: {}",
        status["hubs"]
    );
    assert_eq!(
        status["hubs"]["active"], BACKUP_HUB_PEER,
        "the restarted box starts on the preferred hub"
    );
    wait_until(
        LINK_UP_TIMEOUT,
        "the restarted hospital up on the preferred hub, the primary healthy",
        || {
            let status = hospital.status().ok()?;
            let hubs = &status["hubs"];
            (hubs["members"][0]["healthy"] == true && hubs["members"][1]["healthy"] == true)
                .then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", hospital.log_text()));
    new_connection_reaches(&who, &lab, Node::Hospital, BACKUP_HUB_PEER, &hospital);
    assert!(
        hub_switches(&hospital).is_empty(),
        "no move after the restart: {:?}",
        hub_switches(&hospital)
    );
    // The standby primary is probed by the group, not greeted as a peer that had a session
    // before the restart (the event ring keeps only the latest state of a batch, so the log
    // tells).
    let log = hospital.log_text();
    assert!(
        !log.contains("reason=\"greeting a peer that had a session before the restart\""),
        "the standby hub is not greeted:\n{log}"
    );
    let prober = Prober::start(&lab, Node::Hospital);

    // An unknown hub is refused with its name (the box is reached through the backup now).
    let unknown = operator
        .remote_from(
            lab.backup_hub_ns(),
            Node::Hospital,
            &["prefer-hub", "dc-kyoto"],
        )
        .expect("renkei remote prefer-hub");
    assert!(!unknown.success, "{}", unknown.output);
    assert_eq!(
        unknown.error_code(),
        Some("unknown_hub"),
        "{}",
        unknown.output
    );
    assert!(unknown.output.contains("dc-kyoto"), "{}", unknown.output);

    // Cleared: the healthy primary takes the box back.
    let cleared = operator
        .remote_from(
            lab.backup_hub_ns(),
            Node::Hospital,
            &["prefer-hub", "--clear"],
        )
        .expect("renkei remote prefer-hub --clear");
    assert!(cleared.success, "{}", cleared.output);
    // The restarted box knows the primary's health only since its start: the return waits
    // for a whole hold time of it, as any fail back does.
    wait_for_hub(
        &hospital,
        PRIMARY_HUB_PEER,
        FAIL_BACK_BOUND,
        "the return after the preference was cleared",
    );
    new_connection_reaches(&who, &lab, Node::Hospital, PRIMARY_HUB_PEER, &hospital);
    let (made, failed) = prober.finish();
    assert!(made > 10, "the prober made {made} connections");
    assert!(
        failed.is_empty(),
        "no new connection is lost to a planned move: {failed:?}"
    );
    assert_eq!(
        hospital.status().expect("status")["hubs"]["preferred"],
        serde_json::Value::Null
    );
    let kept = lab
        .node_dir(Node::Hospital)
        .join("state")
        .join(renkei::state::hub_preference::FILE_NAME);
    assert!(!kept.exists(), "{} removed", kept.display());
}

/// The clinic (on-demand) with the primary dead: a connection's tunnel attempt on the primary
/// gets no handshake within `connect_timeout_secs`, the box moves to the backup, and the
/// connection (its SYN sent again by TCP) goes through the backup. Idle for the hold time, the
/// box returns to the primary, and once the primary runs again the next connection reaches it.
#[test]
fn avl4_on_demand_box_fails_over_within_connect_timeout_and_returns_when_idle() {
    require_root!();
    const CLINIC_CONNECT_TIMEOUT_SECS: u64 = 3;
    const CLINIC_IDLE_TIMEOUT_SECS: u64 = 10;
    let lab = Lab::with_backup_hub().expect("lab");
    let mut primary = lab
        .start(Node::Hub, &lab.config(Node::Hub))
        .expect("primary hub");
    let _backup = lab
        .start_backup_hub(&lab.backup_hub_config())
        .expect("backup hub");
    let mut config = lab.config(Node::Clinic);
    if let Some(tunnel) = config.tunnel.as_mut() {
        tunnel.policy.connect_timeout_secs = CLINIC_CONNECT_TIMEOUT_SECS;
        tunnel.policy.idle_timeout_secs = CLINIC_IDLE_TIMEOUT_SECS;
    }
    lab.add_backup_hub(&mut config, failover_config());
    let clinic = lab.start(Node::Clinic, &config).expect("clinic");
    let who_address = format!("{}:{WHO_PORT}", Node::Hub.tunnel_address());
    let who = Who {
        primary: ProbeEndpoint::start(lab.ns(Node::Hub), &who_address).expect("listener"),
        backup: ProbeEndpoint::start(lab.backup_hub_ns(), &who_address).expect("listener"),
    };
    assert_eq!(active_hub(&clinic).as_deref(), Some(PRIMARY_HUB_PEER));
    let status = clinic.status().expect("status");
    assert_eq!(
        status["tunnel"]["state"], "idle",
        "an idle on-demand box sends nothing, no probes: {status}"
    );

    // The primary dies while the clinic is idle; a viewer connects.
    primary.kill();
    let started = Instant::now();
    let address = who_address.parse().expect("address");
    let connected = lab
        .ns(Node::Clinic)
        .run_inside(move || std::net::TcpStream::connect_timeout(&address, Duration::from_secs(20)))
        .expect("inside the clinic");
    let took = started.elapsed();
    eprintln!("the first connection after the primary died took {took:?}");
    assert!(
        connected.is_ok(),
        "the connection goes through the backup once the box moved: {connected:?}\n{}",
        clinic.log_text()
    );
    wait_until(
        Duration::from_secs(2),
        "the backup's listener to note it",
        || (who.backup.peers().len() == 1).then_some(()),
    )
    .expect("it reached the backup");
    let switches = hub_switches(&clinic);
    assert_eq!(switches.len(), 1, "{switches:?}");
    assert_eq!(switches[0]["params"]["reason"], "connect_failed");
    assert_eq!(active_hub(&clinic).as_deref(), Some(BACKUP_HUB_PEER));
    // The move itself came within the connect timeout (and the group's check), the connection
    // with TCP's next SYN retransmission after it (at 7 s).
    assert!(
        took < Duration::from_secs(2 * (CLINIC_CONNECT_TIMEOUT_SECS + GROUP_CHECK_SECS) + 7),
        "{took:?}"
    );
    drop(connected);

    // Idle for the idle timeout, and the hold time passed: the box returns to the primary
    // (no probe: the next connection tries it).
    let _primary = lab
        .start(Node::Hub, &lab.config(Node::Hub))
        .expect("primary hub again");
    wait_for_hub(
        &clinic,
        PRIMARY_HUB_PEER,
        Duration::from_secs(CLINIC_IDLE_TIMEOUT_SECS + FAIL_BACK_AFTER_SECS + GROUP_CHECK_SECS),
        "the on-demand box's return while idle",
    );
    let switches = hub_switches(&clinic);
    assert_eq!(switches.len(), 2, "{switches:?}");
    assert_eq!(switches[1]["params"]["reason"], "fail_back");
    new_connection_reaches(&who, &lab, Node::Clinic, PRIMARY_HUB_PEER, &clinic);
}

/// The clinic (on-demand) with the primary's WAN link cut (the hub's daemon runs on, out of
/// reach): the clinic's next connection gets no handshake on the primary within
/// `connect_timeout_secs`, the box moves to the backup and the connection goes through it.
/// With the link back, the box returns to the primary once idle for the hold time, not
/// before, and the next connection reaches the primary.
#[test]
fn avl4_on_demand_box_fails_over_within_connect_timeout_when_the_primary_wan_is_cut() {
    require_root!();
    const CLINIC_CONNECT_TIMEOUT_SECS: u64 = 3;
    const CLINIC_IDLE_TIMEOUT_SECS: u64 = 10;
    let lab = Lab::with_backup_hub().expect("lab");
    let _primary = lab
        .start(Node::Hub, &lab.config(Node::Hub))
        .expect("primary hub");
    let _backup = lab
        .start_backup_hub(&lab.backup_hub_config())
        .expect("backup hub");
    let mut config = lab.config(Node::Clinic);
    if let Some(tunnel) = config.tunnel.as_mut() {
        tunnel.policy.connect_timeout_secs = CLINIC_CONNECT_TIMEOUT_SECS;
        tunnel.policy.idle_timeout_secs = CLINIC_IDLE_TIMEOUT_SECS;
    }
    lab.add_backup_hub(&mut config, failover_config());
    let clinic = lab.start(Node::Clinic, &config).expect("clinic");
    let who_address = format!("{}:{WHO_PORT}", Node::Hub.tunnel_address());
    let who = Who {
        primary: ProbeEndpoint::start(lab.ns(Node::Hub), &who_address).expect("listener"),
        backup: ProbeEndpoint::start(lab.backup_hub_ns(), &who_address).expect("listener"),
    };
    // The primary serves the clinic while its link is up; then the clinic goes idle.
    new_connection_reaches(&who, &lab, Node::Clinic, PRIMARY_HUB_PEER, &clinic);
    let tunnel_idle = || {
        let status = clinic.status().ok()?;
        (status["tunnel"]["state"] == "idle").then_some(())
    };
    wait_until(
        Duration::from_secs(2 * (CLINIC_IDLE_TIMEOUT_SECS + GROUP_CHECK_SECS)),
        "the clinic idle after its idle timeout",
        tunnel_idle,
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", clinic.log_text()));
    assert!(hub_switches(&clinic).is_empty(), "no move while it answers");

    // The primary's WAN link is cut; a viewer connects.
    lab.ns(Node::Hub)
        .ip(&["link", "set", "wan0", "down"])
        .expect("cut the primary's WAN");
    let backup_before = who.backup.peers().len();
    let started = Instant::now();
    let address = who_address.parse().expect("address");
    let connected = lab
        .ns(Node::Clinic)
        .run_inside(move || std::net::TcpStream::connect_timeout(&address, Duration::from_secs(20)))
        .expect("inside the clinic");
    let took = started.elapsed();
    eprintln!("the first connection after the WAN cut took {took:?}");
    assert!(
        connected.is_ok(),
        "the connection goes through the backup once the box moved: {connected:?}\n{}",
        clinic.log_text()
    );
    wait_until(
        Duration::from_secs(2),
        "the backup's listener to note it",
        || (who.backup.peers().len() == backup_before + 1).then_some(()),
    )
    .expect("it reached the backup");
    let switches = hub_switches(&clinic);
    assert_eq!(switches.len(), 1, "{switches:?}");
    assert_eq!(switches[0]["params"]["from"], PRIMARY_HUB_PEER);
    assert_eq!(switches[0]["params"]["to"], BACKUP_HUB_PEER);
    assert_eq!(switches[0]["params"]["reason"], "connect_failed");
    assert_eq!(switches[0]["level"], "warning");
    assert_eq!(active_hub(&clinic).as_deref(), Some(BACKUP_HUB_PEER));
    assert_eq!(
        clinic.status().expect("status")["hubs"]["failovers"],
        1,
        "a failed connect is a failover"
    );
    // The move came within the connect timeout (and the group's check), the connection with
    // TCP's next SYN retransmission after it (at 7 s); 2x for a busy machine.
    assert!(
        took < Duration::from_secs(2 * (CLINIC_CONNECT_TIMEOUT_SECS + GROUP_CHECK_SECS) + 7),
        "{took:?}"
    );
    drop(connected);

    // The link is back: idle for the idle timeout and the hold time passed, the box returns.
    lab.ns(Node::Hub)
        .ip(&["link", "set", "wan0", "up"])
        .expect("restore the primary's WAN");
    let back = wait_for_hub(
        &clinic,
        PRIMARY_HUB_PEER,
        Duration::from_secs(CLINIC_IDLE_TIMEOUT_SECS + FAIL_BACK_AFTER_SECS + GROUP_CHECK_SECS),
        "the on-demand box's return while idle",
    );
    eprintln!("the return to the primary came {back:?} after the link was back");
    let switches = hub_switches(&clinic);
    assert_eq!(switches.len(), 2, "one return, no flapping: {switches:?}");
    assert_eq!(switches[1]["params"]["reason"], "fail_back");
    assert_eq!(switches[1]["level"], "info");
    // The events' times are whole seconds: one second of slack.
    let at = |i: usize| switches[i]["time_unix"].as_u64().unwrap_or(0);
    let held = at(1).saturating_sub(at(0));
    assert!(
        held + 1 >= FAIL_BACK_AFTER_SECS,
        "no return before the hold time: {held} s on the backup: {switches:?}"
    );
    new_connection_reaches(&who, &lab, Node::Clinic, PRIMARY_HUB_PEER, &clinic);
    assert_eq!(
        clinic.status().expect("status")["hubs"]["failovers"],
        1,
        "the return is no failover"
    );
}
