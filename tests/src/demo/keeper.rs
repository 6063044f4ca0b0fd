//! `lab up` and the keeper that builds the lab and holds it.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::{SigSet, Signal};
use renkei::config::{Config, ManagementConfig, StatusConfig};

use crate::boxconfig::{make_file_paths_absolute, socket};
use crate::daemon::{renkei_bin, Daemon};
use crate::docserver::write_documents;
use crate::door::Door;
use crate::lab::{
    Lab, LabCarrier, Node, DOCUMENT_SERVER_ADDRESS, HUB_RELAY_ADDRESS, LAN_SERVICE_ADDRESS,
    SERVICE_PORT, WIREGUARD_SOCKET_DIR,
};
use crate::operator::Operator;
use crate::wait::wait_until;

use super::processes::unrecorded_keepers;
use super::record::{
    ClientRecord, ConfigPushRecord, DocumentServerRecord, LabRecord, Listener, Management,
    NodeRecord, PkiRecord, Process, StatusPage,
};
use super::teardown::down;
use super::to_try::commands;
use super::{
    Options, CONFIRM_TIMEOUT_SECS, FORMAT, KEEPER_LOG, LISTENER_TIMEOUT, MANAGEMENT_PORT,
    METRICS_PORT, OPERATOR_IDENTITY, STATUS_PORT, STOP_TIMEOUT, UP_TIMEOUT,
};
/// A child process killed when dropped (the document server inside the keeper).
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `lab up`: removes a lab left in `state_dir` (up, or crashed), starts the keeper, waits until
/// it reports the lab up, and returns the record. The keeper keeps running.
pub fn up(state_dir: &Path, options: &Options) -> anyhow::Result<LabRecord> {
    anyhow::ensure!(crate::is_root(), "the lab needs root (network namespaces)");
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("creating {}", state_dir.display()))?;
    let state_dir = state_dir
        .canonicalize()
        .with_context(|| format!("resolving {}", state_dir.display()))?;
    if let Some(id) = down(&state_dir).context("removing the lab left from an earlier run")? {
        println!("removed lab {id}, left from an earlier `lab up`");
    }
    for keeper in unrecorded_keepers(&state_dir) {
        // A lab still running whose lab.json is gone (deleted by hand, or `cargo clean`): its
        // keeper removes it on SIGTERM, as for `lab down`.
        if keeper.stop(STOP_TIMEOUT) {
            println!(
                "removed the lab of keeper {}, still running without a record",
                keeper.pid
            );
        }
    }
    let log_path = state_dir.join(KEEPER_LOG);
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let mut keeper = Command::new(std::env::current_exe()?);
    keeper
        .arg("keep")
        .arg("--dir")
        .arg(&state_dir)
        .arg("--carrier")
        .arg(options.carrier.name());
    if options.carrier != LabCarrier::Closed {
        keeper
            .arg("--clinic-idle-timeout")
            .arg(options.clinic_idle_timeout_secs.to_string());
    }
    if let Some(key) = &options.signing_key {
        let key = key
            .canonicalize()
            .with_context(|| format!("the signing key {}", key.display()))?;
        keeper.arg("--signing-key").arg(key);
    }
    keeper
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe; the closure touches nothing else.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut keeper, || {
            nix::unistd::setsid()
                .map(|_| ())
                .map_err(std::io::Error::from)
        });
    }
    let mut keeper = keeper.spawn().context("starting the lab keeper")?;
    let keeper_pid = keeper.id();
    let waited = wait_until(UP_TIMEOUT, "the lab to come up", || {
        if let Ok(Some(status)) = keeper.try_wait() {
            return Some(Err(anyhow::anyhow!("the lab keeper exited ({status})")));
        }
        match LabRecord::read(&state_dir) {
            Ok(Some(record)) if record.keeper.pid == keeper_pid && record.state == "up" => {
                Some(Ok(record))
            }
            _ => None,
        }
    });
    match waited {
        Ok(Ok(record)) => Ok(record),
        Ok(Err(e)) | Err(e) => {
            let _ = down(&state_dir);
            let _ = keeper.kill();
            let _ = keeper.wait();
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            Err(e.context(format!(
                "the lab did not come up; keeper log {}:\n{log}",
                log_path.display()
            )))
        }
    }
}

/// The keeper (`lab keep`): builds and runs the lab, writes `lab.json`, and holds the lab until
/// SIGTERM or SIGINT; returning drops the lab, which removes it.
pub fn keep(state_dir: &Path, options: &Options) -> anyhow::Result<()> {
    let lab = Lab::with_carrier(options.carrier)?;
    let me = Process::of("lab keeper", std::process::id())?;
    // A closed network has no tunnel, so no daemon opens WireGuard's userspace API.
    let wireguard_sockets = match options.carrier {
        LabCarrier::WireGuard => Node::ALL
            .iter()
            .map(|n| Path::new(WIREGUARD_SOCKET_DIR).join(format!("{}.sock", lab.interface(*n))))
            .collect(),
        LabCarrier::Closed | LabCarrier::Ipsec => Vec::new(),
    };
    let mut record = LabRecord {
        format: FORMAT,
        state: "starting".into(),
        id: lab.id.clone(),
        carrier: options.carrier.name().into(),
        lab_dir: lab.dir.clone(),
        keeper: me,
        namespaces: namespaces(&lab),
        charons: Vec::new(),
        wireguard_sockets,
        nodes: Vec::new(),
        document_server: None,
        clients: vec![ClientRecord {
            name: "viewer PC on the clinic LAN".into(),
            namespace: lab.lan_ns(Node::Clinic).name().into(),
            address: Node::Clinic.lan_host_address().unwrap_or_default().into(),
        }],
        pki: None,
        config_push: None,
        commands: Vec::new(),
    };
    record.charons = charon_processes(&lab)?;
    record.write(state_dir)?;

    // The document server: its own process on the hospital LAN host.
    let documents_dir = lab.dir.join("documents");
    let documents = write_documents(&documents_dir)?;
    let server_log_path = lab.dir.join("document-server.log");
    let server_log = std::fs::File::create(&server_log_path)?;
    let server = ChildGuard(
        lab.lan_ns(Node::Hospital)
            .command(&std::env::current_exe()?.to_string_lossy())
            .args([
                "serve-documents",
                "--listen",
                DOCUMENT_SERVER_ADDRESS,
                "--dir",
            ])
            .arg(&documents_dir)
            .stdin(Stdio::null())
            .stdout(server_log.try_clone()?)
            .stderr(server_log)
            .spawn()
            .context("starting the document server")?,
    );
    record.document_server = Some(DocumentServerRecord {
        namespace: lab.lan_ns(Node::Hospital).name().into(),
        address: DOCUMENT_SERVER_ADDRESS.into(),
        url: format!("http://{DOCUMENT_SERVER_ADDRESS}/"),
        dir: documents_dir.clone(),
        documents,
        log: server_log_path,
        process: Process::of("document server", server.0.id())?,
    });
    record.write(state_dir)?;
    wait_until(
        Duration::from_secs(15),
        "the document server to listen",
        || {
            lab.ns(Node::Hospital)
                .tcp_connect(DOCUMENT_SERVER_ADDRESS, Duration::from_secs(1))
                .ok()
        },
    )?;

    let operator = match &options.signing_key {
        Some(key) => Operator::with_signing_key(&lab, OPERATOR_IDENTITY, key)?,
        None => Operator::with_identity(&lab, OPERATOR_IDENTITY)?,
    };
    record.pki = Some(operator_pki(&lab, &operator)?);
    let passwords = admin_passwords()?;

    let mut daemons: Vec<Daemon> = Vec::new();
    for (node, (password, hash)) in Node::ALL.into_iter().zip(passwords) {
        let text = demo_config(&lab, node, &hash, options)?;
        let daemon = lab.start(node, &text)?;
        let pid = daemon.pid().context("daemon without a pid")?;
        record.nodes.push(node_record(
            &lab,
            node,
            &daemon,
            Process::of(&format!("renkei on {}", node.short()), pid)?,
            password,
            options,
        ));
        // A facility's charon on IPsec starts with its daemon.
        record.charons = charon_processes(&lab)?;
        record.write(state_dir)?;
        daemons.push(daemon);
    }
    for (daemon, services) in daemons.iter().zip([
        &["portal", "hospital-documents"][..],
        &["documents"][..],
        &["documents"][..],
    ]) {
        for service in services {
            wait_until(Duration::from_secs(15), service, || {
                let status = daemon.status().ok()?;
                status["proxy"]["services"]
                    .as_array()?
                    .iter()
                    .any(|s| s["name"] == *service)
                    .then_some(())
            })
            .with_context(|| format!("{:?} service {service}", daemon.node))?;
        }
    }
    wait_until(Duration::from_secs(20), "the hospital's link", || {
        let status = daemons[1].status().ok()?;
        status["tunnel"]["peers"]
            .as_array()?
            .iter()
            .any(|p| p["name"] == lab.dc_link_name() && p["state"] == "up")
            .then_some(())
    })?;
    wait_for_listeners(&lab, &record)?;
    let mut doors = Vec::new();
    // `record.nodes` was filled in `Node::ALL` order.
    for (node, record) in Node::ALL.into_iter().zip(&mut record.nodes) {
        let page = &mut record.status_page;
        let door = Door::bind(&page.open_from_namespace, status_listen(node).parse()?)?;
        let scheme = page.url.split("://").next().unwrap_or("https");
        page.browser_url = format!("{scheme}://{}/", door.address()?);
        doors.push(door);
    }
    let clinic = daemons
        .iter()
        .find(|d| d.node == Node::Clinic)
        .context("no clinic daemon")?;
    record.config_push = Some(prepare_push(&operator, Node::Clinic, &clinic.config)?);
    record.commands = commands(&record, state_dir, &operator)?;
    record.state = "up".into();

    // The setup is done and single-threaded again: from here stop signals are waited for,
    // never delivered (an earlier one kills the keeper and `lab down` cleans up from the record).
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals.thread_block()?;
    // The doors' threads start with these signals blocked too.
    for door in doors {
        door.serve();
    }
    record.write(state_dir)?;
    println!("lab {} is up", record.id);
    let signal = signals.wait()?;
    println!("{signal:?}: removing lab {}", record.id);
    while let Some(daemon) = daemons.pop() {
        drop(daemon);
    }
    drop(server);
    drop(lab);
    println!("lab {} removed", record.id);
    Ok(())
}

/// The lab's charons as processes for `lab.json` (`lab down` ends them like the daemons).
fn charon_processes(lab: &Lab) -> anyhow::Result<Vec<Process>> {
    lab.charon_processes()
        .into_iter()
        .map(|(name, pid)| Process::of(&name, pid))
        .collect()
}

fn namespaces(lab: &Lab) -> Vec<String> {
    let mut all = vec![lab.wan().name().to_string()];
    for node in Node::ALL {
        all.push(lab.ns(node).name().to_string());
        if node != Node::Hub {
            all.push(lab.lan_ns(node).name().to_string());
        }
    }
    all
}

/// The operator's PKI of this run from `operator` (its client certificate from the lab CA and
/// the config-signing key made by `renkei keygen --operator`, as in the config push tests);
/// every box gets a copy of the signing public key (`operator/signing.pub.pem`, as an installer
/// puts it there) and a status-page certificate for its LAN address and 127.0.0.1 (the host's
/// door to the page), so `curl --cacert` verifies the page either way.
fn operator_pki(lab: &Lab, operator: &Operator) -> anyhow::Result<PkiRecord> {
    let public_pem = std::fs::read_to_string(&operator.signing_public)
        .with_context(|| format!("reading {}", operator.signing_public.display()))?;
    for node in Node::ALL {
        let dir = lab.node_dir(node).join("operator");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("signing.pub.pem"), &public_pem)?;
        if let Some(lan) = node.lan_address() {
            lab.ca
                .issue_with(lan, lab.ca.next_serial(), |params| {
                    // The host's door to the page (`StatusPage::browser_url`).
                    params
                        .subject_alt_names
                        .push(rcgen::SanType::IpAddress(Ipv4Addr::LOCALHOST.into()));
                })?
                .write(&lab.tls_dir(node), "status")
                .with_context(|| format!("status certificate of {}", node.short()))?;
        }
    }
    Ok(PkiRecord {
        ca_certificate: operator.ca.clone(),
        ca_key: lab.pki_dir().join("operator-ca.key"),
        operator_certificate: operator.client.cert.clone(),
        operator_key: operator.client.key.clone(),
        signing_key: operator.signing_key.clone(),
        signing_public_key: operator.signing_public.clone(),
    })
}

/// `meta.version` of a config's text: the `version = N` line of its `[meta]` table (the lab
/// writes every config that way; anything else is an error, never a guess).
fn meta_version(text: &str) -> anyhow::Result<u64> {
    let mut table = "";
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            table = line;
        } else if table == "[meta]" {
            if let Some(value) = line.strip_prefix("version = ") {
                return value
                    .parse()
                    .with_context(|| format!("meta.version {value:?} is not a number"));
            }
        }
    }
    anyhow::bail!("no `version = N` line in [meta]")
}

/// The example push: `running` with `meta.version` one higher and a `meta.description`,
/// nothing else changed (a tunnel or service change would be applied too, but the point here
/// is the push itself, and an unchanged tunnel keeps the operator's connection).
fn example_push_text(running: &str, description: &str) -> anyhow::Result<(String, u64)> {
    let version = meta_version(running)?;
    let from = format!("[meta]\nversion = {version}\n");
    anyhow::ensure!(
        running.contains(&from) && !running.contains("\ndescription = "),
        "the running config's [meta] table is not {from:?} alone"
    );
    let next = version + 1;
    let to = format!("[meta]\nversion = {next}\ndescription = {description:?}\n");
    Ok((running.replacen(&from, &to, 1), next))
}

/// Writes the example config for `node` next to the operator's keys and signs it with
/// `renkei sign` ([`Operator::write_signed`]).
fn prepare_push(
    operator: &Operator,
    node: Node,
    running_config: &Path,
) -> anyhow::Result<ConfigPushRecord> {
    let running = std::fs::read_to_string(running_config)
        .with_context(|| format!("reading {}", running_config.display()))?;
    let running_version = meta_version(&running)?;
    let description = format!(
        "lab example push to the {}: version {} -> {}",
        node.short(),
        running_version,
        running_version + 1
    );
    let (text, version) = example_push_text(&running, &description)?;
    let config =
        operator.write_signed(&format!("{}-v{version}.toml", node.short()), &text, None)?;
    let signer = renkei::signing::OperatorKey::read(&operator.signing_public)
        .with_context(|| format!("reading {}", operator.signing_public.display()))?
        .fingerprint()
        .to_string();
    let mut signature = config.clone().into_os_string();
    signature.push(".sig");
    Ok(ConfigPushRecord {
        node: node.short().into(),
        running_version,
        version,
        description,
        config,
        signature: signature.into(),
        signer,
    })
}

/// One random administrator password per box and its hash from `renkei passwd`.
fn admin_passwords() -> anyhow::Result<Vec<(String, String)>> {
    use ring::rand::SecureRandom;
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzACDEFGHJKLMNPQRSTUVWXYZ23456789";
    let rng = ring::rand::SystemRandom::new();
    let mut out = Vec::new();
    for _ in Node::ALL {
        let mut bytes = [0u8; 16];
        rng.fill(&mut bytes)
            .map_err(|_| anyhow::anyhow!("no randomness"))?;
        let password: String = bytes
            .iter()
            .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
            .collect();
        let mut child = Command::new(renkei_bin()?)
            .arg("passwd")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running renkei passwd")?;
        child
            .stdin
            .take()
            .context("stdin of renkei passwd")?
            .write_all(format!("{password}\n").as_bytes())?;
        let output = child.wait_with_output()?;
        anyhow::ensure!(
            output.status.success(),
            "renkei passwd failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let hash = String::from_utf8(output.stdout)?.trim().to_string();
        anyhow::ensure!(
            hash.starts_with("$argon2id$"),
            "renkei passwd printed {hash:?}"
        );
        out.push((password, hash));
    }
    Ok(out)
}

fn status_listen(node: Node) -> String {
    match node.lan_address() {
        Some(lan) => format!("{lan}:{STATUS_PORT}"),
        None => format!("127.0.0.1:{STATUS_PORT}"),
    }
}

fn management_listen(lab: &Lab, node: Node) -> String {
    format!("{}:{MANAGEMENT_PORT}", lab.link_address(node))
}

fn metrics_listen(lab: &Lab, node: Node) -> String {
    format!("{}:{METRICS_PORT}", lab.link_address(node))
}

/// The full config of a box on the lab's carrier plus its `[status]` and `[management]`
/// sections, with the clinic's idle timeout of `options` (WireGuard: a closed network has no
/// tunnel to idle out), and every file it names absolute under the box's folder:
/// the same files, but a copy of the config checks out (`renkei check`) wherever it is, as the
/// operator's guide has the operator do.
pub fn demo_config(
    lab: &Lab,
    node: Node,
    password_hash: &str,
    options: &Options,
) -> anyhow::Result<Config> {
    let mut config = lab.full(node);
    if node == Node::Clinic {
        let idle = u64::from(options.clinic_idle_timeout_secs);
        if let Some(tunnel) = config.tunnel.as_mut() {
            tunnel.policy.idle_timeout_secs = idle;
        }
        if let Some(ipsec) = config.ipsec.as_mut() {
            ipsec.idle_timeout_secs = idle;
        }
    }
    // Plain HTTP on the hub's loopback; HTTPS with the status certificate on a LAN.
    let (certificate_file, private_key_file) = if node.lan_address().is_some() {
        (
            Some(PathBuf::from("tls/status.crt")),
            Some(PathBuf::from("tls/status.key")),
        )
    } else {
        (None, None)
    };
    config.status = Some(StatusConfig {
        listen: socket(&status_listen(node)),
        admin_password_hash: password_hash.to_string(),
        certificate_file,
        private_key_file,
        metrics_listen: Some(socket(&metrics_listen(lab, node))),
        metrics_identities: Vec::new(),
        session_ttl_secs: 3600,
        require_second_factor: None,
        per_peer_metrics: true,
    });
    config.management = Some(ManagementConfig {
        listen: socket(&management_listen(lab, node)),
        operator_ca_file: PathBuf::from("tls/operator-ca.crt"),
        operator_crl_file: None,
        operator_identities: vec![OPERATOR_IDENTITY.to_string()],
        operator_signing_key_file: Some(PathBuf::from("operator/signing.pub.pem")),
        operator_signing_key: None,
        next_operator_signing_key_file: None,
        next_operator_signing_key: None,
        confirm_timeout_secs: CONFIRM_TIMEOUT_SECS,
        auto_confirm: false,
        max_push_bytes: renkei::config::DEFAULT_MAX_PUSH_BYTES,
    });
    make_file_paths_absolute(&mut config, &lab.node_dir(node));
    Ok(config)
}

fn node_record(
    lab: &Lab,
    node: Node,
    daemon: &Daemon,
    process: Process,
    admin_password: String,
    options: &Options,
) -> NodeRecord {
    let (role, policy) = match node {
        Node::Hub => ("hub", "always_on"),
        Node::Hospital => ("disclosing", "always_on"),
        Node::Clinic => ("viewing", "on_demand"),
    };
    let service =
        |name: &str, direction: &str, listen: String, target: String, peer: String| Listener {
            service: name.into(),
            direction: direction.into(),
            listen,
            target,
            peer,
        };
    let port = |node: Node| format!("{}:{SERVICE_PORT}", lab.link_address(node));
    let listeners = match node {
        Node::Clinic => vec![service(
            "documents",
            "outbound",
            format!("{LAN_SERVICE_ADDRESS}:{SERVICE_PORT}"),
            port(Node::Hub),
            format!("server {}", Node::Hub.tls_name()),
        )],
        Node::Hub => vec![
            service(
                "portal",
                "inbound",
                port(Node::Hub),
                HUB_RELAY_ADDRESS.into(),
                format!("client {}", Node::Clinic.tls_name()),
            ),
            service(
                "hospital-documents",
                "outbound",
                HUB_RELAY_ADDRESS.into(),
                port(Node::Hospital),
                format!("server {}", Node::Hospital.tls_name()),
            ),
        ],
        Node::Hospital => vec![service(
            "documents",
            "inbound",
            port(Node::Hospital),
            DOCUMENT_SERVER_ADDRESS.into(),
            format!("client {}", Node::Hub.tls_name()),
        )],
    };
    let https = node.lan_address().is_some();
    let wireguard = lab.carrier == LabCarrier::WireGuard;
    NodeRecord {
        name: node.short().into(),
        role: role.into(),
        namespace: lab.ns(node).name().into(),
        lan_namespace: (node != Node::Hub).then(|| lab.lan_ns(node).name().into()),
        wan_address: match lab.carrier {
            LabCarrier::WireGuard | LabCarrier::Ipsec => node.wan_address(),
            LabCarrier::Closed => node.closed_address(),
        }
        .into(),
        link_address: lab.link_address(node).into(),
        tunnel_address: wireguard.then(|| node.tunnel_address().into()),
        lan_address: node.lan_address().map(Into::into),
        interface: match (lab.config(node).closed, lab.config(node).ipsec) {
            (Some(closed), _) => closed.interface,
            (None, Some(ipsec)) => ipsec.interface,
            (None, None) => lab.interface(node),
        },
        wireguard_public_key: wireguard.then(|| lab.public_key(node).into()),
        tls_identity: node.tls_name().into(),
        tunnel_policy: policy.into(),
        idle_timeout_secs: (node == Node::Clinic && lab.carrier != LabCarrier::Closed)
            .then_some(options.clinic_idle_timeout_secs),
        config: daemon.config.clone(),
        log: daemon.log.clone(),
        runtime_dir: daemon.runtime_dir.clone(),
        process,
        listeners,
        status_page: StatusPage {
            url: format!(
                "{}://{}/",
                if https { "https" } else { "http" },
                status_listen(node)
            ),
            open_from_namespace: if https {
                lab.lan_ns(node).name().into()
            } else {
                lab.ns(node).name().into()
            },
            browser_url: String::new(),
            admin_password,
            ca_file: https.then(|| lab.tls_dir(node).join("operator-ca.crt")),
            metrics_url: format!("https://{}/metrics", metrics_listen(lab, node)),
        },
        management: Management {
            url: format!("https://{}/", management_listen(lab, node)),
        },
    }
}

/// Waits until every box's status page answers HTTP(S) (its login page, from where the
/// record says to open it, the HTTPS certificate verified against the lab CA) and its metrics
/// listener and management API accept connections on the link address; fails naming the
/// first one that does not within [`LISTENER_TIMEOUT`]. The daemons answer their control
/// socket a moment before they bind these, so a bounded wait, then an error.
fn wait_for_listeners(lab: &Lab, record: &LabRecord) -> anyhow::Result<()> {
    for (node, entry) in Node::ALL.into_iter().zip(&record.nodes) {
        let page = &entry.status_page;
        let mut curl = vec![
            "netns".to_string(),
            "exec".into(),
            page.open_from_namespace.clone(),
            "curl".into(),
            "-sS".into(),
            "-o".into(),
            "/dev/null".into(),
            "-w".into(),
            "%{http_code}".into(),
            "--max-time".into(),
            "2".into(),
        ];
        if let Some(ca) = &page.ca_file {
            curl.push("--cacert".into());
            curl.push(ca.to_string_lossy().into_owned());
        }
        curl.push(format!("{}login", page.url));
        let mut last = String::new();
        wait_until(LISTENER_TIMEOUT, &page.url, || {
            let output = Command::new("ip").args(&curl).output().ok()?;
            last = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            (output.status.success() && last.trim() == "200").then_some(())
        })
        .with_context(|| {
            format!(
                "the {} status page {} did not answer (last: {})",
                entry.name,
                page.url,
                last.trim()
            )
        })?;
        for (what, address) in [
            ("metrics listener", metrics_listen(lab, node)),
            ("management API", management_listen(lab, node)),
        ] {
            // Listening is checked with `ss`, not by connecting: a connection without the
            // operator's certificate would be logged by the box as a refused handshake.
            wait_until(LISTENER_TIMEOUT, what, || {
                // The filter matches the address; a listener bound to the tunnel device (the
                // management API) shows as `address%device:port`, so any line is the answer.
                let listening = lab.ns(node).exec("ss", &["-Hltn", "src", &address]).ok()?;
                listening
                    .lines()
                    .any(|line| line.starts_with("LISTEN"))
                    .then_some(())
            })
            .with_context(|| format!("the {} {what} on {address} did not answer", entry.name))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_push_raises_meta_version_and_changes_nothing_else() {
        let running = "[meta]\nversion = 1\n\n[tunnel]\nversion = 7\n";
        let (text, version) = example_push_text(running, "v 1 -> 2: \"why\"").expect("push");
        assert_eq!(version, 2);
        assert_eq!(meta_version(&text).expect("version"), 2);
        assert_eq!(
            text,
            "[meta]\nversion = 2\ndescription = \"v 1 -> 2: \\\"why\\\"\"\n\n[tunnel]\nversion = 7\n"
        );
        assert!(meta_version("[tunnel]\nversion = 3\n").is_err());
        assert!(meta_version("[meta]\nversion = x\n").is_err());
        assert!(example_push_text("[meta]\nversion = 1\ndescription = \"a\"\n", "b").is_err());
    }
}
