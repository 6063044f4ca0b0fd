//! The demo lab as a newcomer uses it: the `lab` binary's `up`, the commands it prints and
//! records in `lab.json`, and `down`, which must leave nothing behind (NET-1, NET-7, LOG-1);
//! the printed config push to the on-demand clinic (AUTH-2, LOG-2).
//!
//! Each test keeps its `lab.json` in a folder of its own, so it never touches a demo lab a
//! person has running, and a guard runs `lab down` when the test ends, also when it fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use renkei_lab::demo::{leftovers, LabRecord};
use renkei_lab::docserver::sha256_hex;
use renkei_lab::{require_root, wait_until};
use serde_json::Value;

/// Longest `lab up` or `lab down` may take.
const LAB_TIMEOUT: Duration = Duration::from_secs(150);
/// Longest one of the printed commands may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs a command to its end, killing it after `timeout`.
fn bounded(command: &mut Command, timeout: Duration) -> Output {
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
struct LabDir {
    dir: PathBuf,
}

impl LabDir {
    fn new(name: &str) -> LabDir {
        let dir =
            std::env::temp_dir().join(format!("renkei-demo-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("state folder");
        LabDir { dir }
    }

    /// Runs `lab <command> --dir <dir> <args>`.
    fn lab(&self, command: &str, args: &[&str]) -> Output {
        bounded(
            Command::new(env!("CARGO_BIN_EXE_lab"))
                .arg(command)
                .arg("--dir")
                .arg(&self.dir)
                .args(args),
            LAB_TIMEOUT,
        )
    }

    /// `lab up`, which must succeed; returns its printed summary and the record.
    fn up(&self, args: &[&str]) -> (String, LabRecord) {
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

    fn down(&self) {
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

/// Runs one of the recorded commands exactly as recorded (its argv), successful or not.
fn run_recorded_output(record: &LabRecord, key: &str) -> Output {
    let command = record
        .command(key)
        .unwrap_or_else(|| panic!("no command {key:?} in lab.json"));
    let (program, args) = command
        .argv
        .split_first()
        .unwrap_or_else(|| panic!("{key}: empty argv: {command:?}"));
    bounded(Command::new(program).args(args), COMMAND_TIMEOUT)
}

/// Runs one of the recorded commands exactly as recorded (its argv), which must succeed, and
/// returns its stdout.
fn run_recorded(record: &LabRecord, key: &str) -> Vec<u8> {
    let output = run_recorded_output(record, key);
    assert!(
        output.status.success(),
        "{}: {}{}",
        record.command(key).map_or("", |c| c.shell.as_str()),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// The JSON documents a command printed, in order (`renkei push` prints the box's answer, then
/// the state it reads back).
fn json_answers(stdout: &[u8]) -> Vec<Value> {
    serde_json::Deserializer::from_slice(stdout)
        .into_iter::<Value>()
        .map(|v| {
            v.unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(stdout)))
        })
        .collect()
}

fn clinic_peer_state(record: &LabRecord) -> String {
    let status: Value =
        serde_json::from_slice(&run_recorded(record, "clinic-tunnel-json")).expect("JSON status");
    status["tunnel"]["peers"]
        .as_array()
        .and_then(|peers| peers.iter().find(|p| p["name"] == "dc"))
        .and_then(|p| p["state"].as_str())
        .unwrap_or("")
        .to_string()
}

fn status_of(record: &LabRecord, node: &str) -> Value {
    let node = record.node(node).expect("node");
    let answer = renkei::status::control::request(&node.runtime_dir, "status").expect("status");
    serde_json::from_str(&answer).expect("status JSON")
}

fn access_log(record: &LabRecord, node: &str, service: &str) -> Vec<Value> {
    status_of(record, node)["proxy"]["recent_connections"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r["service"] == service)
        .collect()
}

fn namespaces_now() -> String {
    String::from_utf8_lossy(
        &bounded(Command::new("ip").args(["netns", "list"]), COMMAND_TIMEOUT).stdout,
    )
    .into_owned()
}

fn in_benchmark_range(addr: &str) -> bool {
    addr.parse::<std::net::Ipv4Addr>()
        .is_ok_and(|ip| ip.octets()[0] == 198 && (ip.octets()[1] & 0xfe) == 18)
}

/// Everything the lab is up with is alive, and every IPv4 address in its namespaces other than
/// loopback is from 198.18.0.0/15.
fn assert_up(record: &LabRecord) {
    for process in record.processes() {
        assert!(process.alive(), "{process:?} is not running");
    }
    let listed = namespaces_now();
    for ns in &record.namespaces {
        assert!(
            listed
                .lines()
                .any(|l| l.split_whitespace().next() == Some(ns)),
            "namespace {ns} missing:\n{listed}"
        );
        let addrs = bounded(
            Command::new("ip").args(["-n", ns, "-4", "-o", "addr", "show"]),
            COMMAND_TIMEOUT,
        );
        for line in String::from_utf8_lossy(&addrs.stdout).lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            let Some(i) = words.iter().position(|w| *w == "inet") else {
                continue;
            };
            let addr = words[i + 1].split('/').next().unwrap_or("");
            assert!(
                addr.starts_with("127.") || in_benchmark_range(addr),
                "{ns}: {line}"
            );
        }
    }
}

/// Nothing of `record` is left: processes, namespaces, sockets, folders, `lab.json`.
fn assert_gone(record: &LabRecord, state_dir: &Path) {
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

#[test]
fn net1_net7_log1_lab_demo_document_fetch_on_demand() {
    require_root!();
    let dir = LabDir::new("fetch");
    let (printed, record) = dir.up(&["--clinic-idle-timeout", "10"]);
    assert_up(&record);

    // What is printed is what is recorded.
    for key in ["fetch-document", "clinic-tunnel", "hub-peers", "down"] {
        let shell = &record.command(key).expect(key).shell;
        assert!(printed.contains(shell.as_str()), "{shell} not printed");
    }
    for node in &record.nodes {
        assert!(printed.contains(&node.status_page.admin_password));
        assert!(printed.contains(&node.status_page.url));
    }
    for addr in record
        .nodes
        .iter()
        .flat_map(|n| {
            [
                Some(&n.wan_address),
                Some(&n.tunnel_address),
                n.lan_address.as_ref(),
            ]
        })
        .flatten()
        .chain(record.clients.iter().map(|c| &c.address))
    {
        assert!(in_benchmark_range(addr), "{addr}");
    }
    let server = record.document_server.as_ref().expect("document server");

    // NET-7: nothing has asked for the clinic's tunnel yet.
    assert_eq!(clinic_peer_state(&record), "idle");

    // A document from the clinic LAN arrives intact from the hospital's server (NET-1).
    let summary = &server.documents[0];
    let fetched = run_recorded(&record, "fetch-document");
    let on_disk = std::fs::read(server.dir.join(&summary.name)).expect("hospital's file");
    assert_eq!(sha256_hex(&fetched), sha256_hex(&on_disk));
    assert_eq!(sha256_hex(&fetched), summary.sha256);
    // The 8 MiB imaging file too, checksummed as the printed pipeline does.
    let imaging = server.documents.last().expect("imaging");
    let piped = String::from_utf8(run_recorded(&record, "fetch-imaging-checksum")).expect("text");
    let hospital = String::from_utf8(run_recorded(&record, "hospital-checksum")).expect("text");
    assert_eq!(
        piped.split_whitespace().next(),
        Some(imaging.sha256.as_str())
    );
    assert_eq!(
        hospital.split_whitespace().next(),
        Some(imaging.sha256.as_str())
    );
    let last_byte = Instant::now();

    // NET-7: the fetch opened the clinic's tunnel.
    assert_eq!(clinic_peer_state(&record), "up");
    // LOG-1: every leg logged both fetches with the TLS peer's identity.
    for (node, service, identity) in [
        ("clinic", "documents", "hub.renkei.example"),
        ("dc", "portal", "clinic.renkei.example"),
        ("dc", "hospital-documents", "hospital.renkei.example"),
        ("hospital", "documents", "hub.renkei.example"),
    ] {
        let records = wait_until(Duration::from_secs(10), "two access-log records", || {
            let all = access_log(&record, node, service);
            (all.len() >= 2).then_some(all)
        })
        .unwrap_or_else(|e| panic!("{node} {service}: {e}"));
        assert_eq!(records.len(), 2, "{node} {service}: {records:#?}");
        for r in &records {
            assert_eq!(r["result"], "ok", "{node} {service}: {r:#}");
            assert_eq!(r["peer_identity"], identity, "{node} {service}: {r:#}");
            assert_eq!(r["tls_version"], "TLSv1_3", "{node} {service}: {r:#}");
        }
    }
    let served = std::fs::read_to_string(&server.log).expect("document server log");
    assert_eq!(served.matches("\" 200").count(), 2, "{served}");

    // All three status pages show it, once the daemon serves them (issue #5): logged in with
    // the printed password over HTTPS verified against the lab CA, each page's status API shows
    // the clinic's tunnel up and the two fetches in its access log.
    for (node, peer, service) in [
        ("clinic", "dc", "documents"),
        ("dc", "clinic", "portal"),
        ("hospital", "dc", "documents"),
    ] {
        if !record.node(node).expect("node").status_page.served {
            eprintln!("{node}: status page not served yet (issue #5)");
            continue;
        }
        let page: Value =
            serde_json::from_slice(&run_recorded(&record, &format!("status-page-{node}")))
                .unwrap_or_else(|e| panic!("{node} status page JSON: {e}"));
        let state = page["tunnel"]["peers"]
            .as_array()
            .and_then(|peers| peers.iter().find(|p| p["name"] == peer))
            .map(|p| p["state"].clone());
        assert_eq!(state, Some(Value::from("up")), "{node}: {page:#}");
        let fetches = page["proxy"]["recent_connections"]
            .as_array()
            .map(|all| all.iter().filter(|r| r["service"] == service).count());
        assert_eq!(fetches, Some(2), "{node}: {page:#}");
    }

    // NET-7: the clinic's tunnel closes by itself after its 10 s idle time, not before.
    wait_until(
        Duration::from_secs(30),
        "the clinic's tunnel to idle out",
        || (clinic_peer_state(&record) == "idle").then_some(()),
    )
    .expect("clinic idle");
    let idle_after = last_byte.elapsed();
    assert!(
        idle_after >= Duration::from_secs(8),
        "idled out {idle_after:?} after the last byte"
    );
    // The always-on hospital stays up.
    let hospital = status_of(&record, "hospital");
    assert_eq!(
        hospital["tunnel"]["peers"][0]["state"], "up",
        "{hospital:#}"
    );

    dir.down();
    assert_gone(&record, &dir.dir);
}

#[test]
fn lab_up_twice_or_after_a_crash_removes_the_old_lab_first() {
    require_root!();
    let dir = LabDir::new("again");
    let (_, first) = dir.up(&[]);
    assert_up(&first);

    // `lab up` while a lab is up: the old one goes, a new one comes.
    let (printed, second) = dir.up(&[]);
    assert!(
        printed.contains(&format!("removed lab {}", first.id)),
        "{printed}"
    );
    assert_ne!(first.id, second.id);
    assert!(leftovers(&first).is_empty(), "{:?}", leftovers(&first));
    assert_up(&second);

    // A crash: the keeper dies without removing anything; the daemons and namespaces stay.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(second.keeper.pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the keeper");
    wait_until(Duration::from_secs(10), "the keeper to die", || {
        (!second.keeper.alive()).then_some(())
    })
    .expect("keeper dead");
    assert!(second.nodes.iter().all(|n| n.process.alive()));
    let (printed, third) = dir.up(&[]);
    assert!(printed.contains(&format!("removed lab {}", second.id)));
    assert!(leftovers(&second).is_empty(), "{:?}", leftovers(&second));
    assert_up(&third);

    dir.down();
    assert_gone(&third, &dir.dir);
    // A second `lab down` has nothing to do and says so.
    let again = dir.lab("down", &[]);
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("nothing to remove"));
}

#[test]
fn auth2_log2_lab_demo_config_push_to_the_on_demand_clinic() {
    require_root!();
    let dir = LabDir::new("push");
    let (printed, record) = dir.up(&[]);
    assert_up(&record);
    let push = record
        .config_push
        .clone()
        .expect("lab.json has the example push");
    let clinic = record.node("clinic").expect("clinic").clone();
    assert!(clinic.management.served, "{clinic:#?}");

    // Printed as recorded, in the order to follow, every one a real command.
    let keys = [
        "clinic-connect",
        "push-config",
        "confirm-config",
        "show-config",
    ];
    let mut at = 0;
    for key in keys {
        let command = record.command(key).unwrap_or_else(|| panic!("no {key}"));
        assert!(!command.argv.is_empty(), "{key}: {command:?}");
        let found = printed[at..]
            .find(&format!("  {}\n", command.shell))
            .unwrap_or_else(|| panic!("{key} not printed after the previous step:\n{printed}"));
        at += found;
    }
    let push_shell = &record.command("push-config").expect("push").shell;
    for part in [
        "ip netns exec ",
        " push --to 198.19.0.20:7443 --server-name clinic.renkei.example --cert ",
        " --wait-secs 60 ",
    ] {
        assert!(push_shell.contains(part), "{part:?} not in {push_shell}");
    }
    assert!(printed.contains(&push.config.display().to_string()));
    assert!(push.signature.exists(), "{}", push.signature.display());
    assert_eq!(push.version, push.running_version + 1);

    // The clinic is on demand and nothing has asked for its tunnel: the operator cannot reach
    // it until the box connects.
    assert_eq!(clinic_peer_state(&record), "idle");
    let before = status_of(&record, "clinic")["config"].clone();
    assert_eq!(before["version"], push.running_version, "{before:#}");

    let connected = String::from_utf8(run_recorded(&record, "clinic-connect")).expect("text");
    assert_eq!(connected.trim(), "ok");
    assert_eq!(clinic_peer_state(&record), "up");

    // AUTH-2: the operator's certificate and signed, newer config are accepted.
    let answers = json_answers(&run_recorded(&record, "push-config"));
    let answer = answers.first().expect("push answer");
    assert_eq!(answer["state"], "pending", "{answers:#?}");
    assert_eq!(answer["version"], push.version, "{answers:#?}");
    let pending = status_of(&record, "clinic")["config"].clone();
    assert_eq!(pending["state"], "pending", "{pending:#}");
    assert_eq!(pending["version"], push.version, "{pending:#}");

    let answers = json_answers(&run_recorded(&record, "confirm-config"));
    let answer = answers.first().expect("confirm answer");
    assert_eq!(answer["state"], "confirmed", "{answers:#?}");
    assert_eq!(answer["version"], push.version, "{answers:#?}");

    let answers = json_answers(&run_recorded(&record, "show-config"));
    let remote = answers.first().expect("remote answer");
    assert_eq!(remote["version"], push.version, "{remote:#}");
    assert_eq!(remote["state"], "confirmed", "{remote:#}");

    // The clinic itself, over its control socket, as the printed status command reads it.
    let status: Value =
        serde_json::from_slice(&run_recorded(&record, "clinic-tunnel-json")).expect("JSON");
    let state = &status["config"];
    assert_eq!(state["version"], push.version, "{state:#}");
    assert_eq!(state["state"], "confirmed", "{state:#}");
    assert_eq!(state["signer"], push.signer.as_str(), "{state:#}");
    assert_eq!(state["description"], push.description.as_str(), "{state:#}");
    assert_eq!(state["pushed_by"], "operator.renkei.example", "{state:#}");
    assert_eq!(status["config_version"], push.version, "{status:#}");
    assert_eq!(remote["sha256"], state["sha256"], "{remote:#}");
    // The box runs exactly the signed file.
    assert_eq!(
        std::fs::read(&clinic.config).expect("clinic config"),
        std::fs::read(&push.config).expect("pushed config")
    );

    // LOG-2: received, applied and confirmed are logged with the version (and the signer).
    let log = std::fs::read_to_string(&clinic.log).expect("clinic log");
    for event in ["received", "applied", "confirmed"] {
        assert!(
            log.lines()
                .any(|l| l.contains(&format!("event=\"{event}\""))
                    && l.contains(&format!("version={}", push.version))
                    && (event == "confirmed" || l.contains(&push.signer))),
            "no {event} line with version and signer in:\n{log}"
        );
    }

    // AUTH-2: the same push again is a replay, refused, and the clinic keeps what it runs.
    let again = run_recorded_output(&record, "push-config");
    assert!(!again.status.success(), "a replayed push was accepted");
    let answers = json_answers(&again.stdout);
    assert_eq!(
        answers.first().map(|a| a["error"].clone()),
        Some(Value::from("not_newer")),
        "{answers:#?}"
    );
    let after = status_of(&record, "clinic")["config"].clone();
    assert_eq!(after["version"], push.version, "{after:#}");
    assert_eq!(after["state"], "confirmed", "{after:#}");
    // LOG-2: the refusal is logged with why and what runs.
    let log = std::fs::read_to_string(&clinic.log).expect("clinic log");
    assert!(
        log.lines().any(|l| l.contains("event=\"refused\"")
            && l.contains("not_newer")
            && l.contains(&format!("running_version={}", push.version))),
        "no refused line with the reason in:\n{log}"
    );

    dir.down();
    assert_gone(&record, &dir.dir);
}
