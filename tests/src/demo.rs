//! The demo lab that outlives the command that started it: `lab up`, `lab down`, `lab.json`.
//!
//! The lab runs on either carrier the test lab builds ([`LabCarrier`], `lab up --carrier`):
//! renkei's WireGuard tunnels (the default), or a closed network (routed, no tunnel), where the
//! same three facilities, services and commands work on the boxes' link addresses, and the
//! commands that show WireGuard's peers show the closed carrier's own view instead.
//!
//! `lab up` starts a *keeper* (`lab keep`, in its own session so a terminal's Ctrl-C does not
//! reach it) that builds a [`Lab`], runs the document server on the hospital LAN and the three
//! renkei daemons with their full configs (TLS services, status page, management API), records
//! everything in `lab.json`, and then holds the lab until SIGTERM, when dropping the lab removes
//! it. The keeper reports the lab up only once every status page answers, and every metrics
//! listener and management API listens; `lab up` waits for that (bounded), prints the summary
//! and returns, or fails.
//!
//! `lab down` asks the keeper to stop and then removes, from `lab.json`, whatever is still
//! there: processes (checked by start time, so a recycled pid is never killed), then any
//! process still inside the lab's namespaces or running from its folder (a daemon the keeper
//! started but had not recorded when it died), namespaces, WireGuard sockets and the lab's
//! folder. It works the same after a crash, and `lab up` runs
//! it first whenever a `lab.json` is left. `lab.json` is read back as untrusted input: every
//! name and path in it is checked to be one the lab could have made before anything is removed.

use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::{kill, SigSet, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use renkei::config::{Config, ManagementConfig, StatusConfig};

use crate::boxconfig::{make_file_paths_absolute, socket};
use crate::daemon::{renkei_bin, Daemon};
use crate::docserver::{write_documents, Document};
use crate::door::Door;
use crate::lab::{
    Lab, LabCarrier, Node, DC_PROBE_PORT, DOCUMENT_SERVER_ADDRESS, HUB_RELAY_ADDRESS,
    LAN_SERVICE_ADDRESS, SERVICE_PORT, WIREGUARD_SOCKET_DIR,
};
use crate::operator::Operator;
use crate::wait::wait_until;

/// Version of the `lab.json` layout; a file with another version is refused, not guessed at.
pub const FORMAT: u32 = 1;
/// The record's file name inside the state folder.
pub const RECORD_FILE: &str = "lab.json";
/// The keeper's log (its stdout and stderr) inside the state folder.
pub const KEEPER_LOG: &str = "keeper.log";
/// How long `lab up` waits for the keeper to report the lab up.
pub const UP_TIMEOUT: Duration = Duration::from_secs(120);
/// How long `lab down` gives the keeper, then each process, to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long `lab up` waits for every status page, metrics listener and management API to
/// answer; one that does not is an error, and the lab does not come up.
pub const LISTENER_TIMEOUT: Duration = Duration::from_secs(30);
/// Port of the status pages (as in `config/*.toml`).
pub const STATUS_PORT: u16 = 9443;
/// Port of the operator's metrics listener on the link address (tunnel or closed network).
pub const METRICS_PORT: u16 = 9100;
/// Port of the management API on the link address (as in `config/*.toml`).
pub const MANAGEMENT_PORT: u16 = 7443;
/// `management.confirm_timeout_secs` of every box in the demo: how long a pushed config runs
/// on probation before it rolls back unless confirmed.
pub const CONFIRM_TIMEOUT_SECS: u64 = 120;
/// The operator's identity in its client certificate (what boxes record as `pushed_by`).
pub const OPERATOR_IDENTITY: &str = "operator.renkei.example";
/// `--wait-secs` of the printed `renkei push`: how long it retries a box that does not answer.
pub const PUSH_WAIT_SECS: u64 = 60;
/// Default idle timeout of the clinic's on-demand tunnel in the demo: long enough to look
/// around after a fetch, short enough to watch it close.
pub const DEFAULT_CLINIC_IDLE_SECS: u32 = 60;

/// Where `lab` keeps `lab.json` by default: `RENKEI_LAB_DIR`, else `target/lab` of the
/// checkout the binary was built from.
pub fn default_state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("RENKEI_LAB_DIR") {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/lab")
}

/// What `lab up` may change about the lab.
#[derive(Debug, Clone)]
pub struct Options {
    /// How the boxes reach the data centre (`--carrier`).
    pub carrier: LabCarrier,
    /// `tunnel.policy.idle_timeout_secs` of the clinic (10 to 86400); a closed network has no
    /// tunnel to idle out, so it does not apply there.
    pub clinic_idle_timeout_secs: u32,
    /// The operator's config signing key (from `renkei keygen --operator`) that every box
    /// trusts; `None`: the lab makes one. Lets the operator's guide be followed from its first
    /// step: the key exists before the boxes are installed.
    pub signing_key: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            carrier: LabCarrier::WireGuard,
            clinic_idle_timeout_secs: DEFAULT_CLINIC_IDLE_SECS,
            signing_key: None,
        }
    }
}

/// `lab.json`: everything the lab started and where, for people, tests and `lab down`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabRecord {
    /// [`FORMAT`].
    pub format: u32,
    /// `starting` while the keeper builds the lab, `up` once everything answers.
    pub state: String,
    /// The lab's id, carried by every namespace and interface name.
    pub id: String,
    /// How the boxes reach the data centre: `wireguard` or `closed` ([`LabCarrier::name`];
    /// records written before the closed network was there are WireGuard labs).
    #[serde(default = "wireguard_name")]
    pub carrier: String,
    /// The lab's temporary folder: keys, configs, logs, documents.
    pub lab_dir: PathBuf,
    /// The process holding the lab; stopping it removes the lab.
    pub keeper: Process,
    /// Every network namespace of the lab.
    pub namespaces: Vec<String>,
    /// The strongSwan charons of an IPsec lab (the data centre's concentrator, each facility's
    /// own); none on the other carriers or in records from before IPsec.
    #[serde(default)]
    pub charons: Vec<Process>,
    /// The daemons' WireGuard userspace API sockets.
    pub wireguard_sockets: Vec<PathBuf>,
    /// The three boxes.
    pub nodes: Vec<NodeRecord>,
    /// The document server on the hospital LAN.
    pub document_server: Option<DocumentServerRecord>,
    /// Client hosts on the facility LANs.
    pub clients: Vec<ClientRecord>,
    /// The operator's PKI of this run.
    pub pki: Option<PkiRecord>,
    /// The signed example config waiting to be pushed to the clinic (absent in records
    /// written before the lab prepared one, hence the default).
    #[serde(default)]
    pub config_push: Option<ConfigPushRecord>,
    /// Commands to try, in the order they are printed.
    pub commands: Vec<CommandRecord>,
}

/// A process the lab started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    /// What it is.
    pub name: String,
    /// Its pid.
    pub pid: u32,
    /// Its start time (clock ticks after boot, `/proc/<pid>/stat` field 22): a pid is only the
    /// same process while this matches.
    pub start_time: u64,
}

/// One box.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeRecord {
    /// `dc`, `hospital` or `clinic`.
    pub name: String,
    /// `hub`, `disclosing` or `viewing`.
    pub role: String,
    /// The box's namespace.
    pub namespace: String,
    /// The namespace of the host on its LAN, if it has one.
    pub lan_namespace: Option<String>,
    /// WAN address (on a closed network: its address there).
    pub wan_address: String,
    /// Where its services, metrics listener and management API listen: the tunnel address,
    /// or on a closed network its WAN address (empty in records from before the closed
    /// network, which `lab down` still reads).
    #[serde(default)]
    pub link_address: String,
    /// Tunnel (overlay) address; none on a closed network.
    pub tunnel_address: Option<String>,
    /// LAN address, if it has a LAN.
    pub lan_address: Option<String>,
    /// The carrier's interface: the TUN device, or the WAN interface on a closed network.
    pub interface: String,
    /// WireGuard public key; none on a closed network.
    pub wireguard_public_key: Option<String>,
    /// Name in the box's TLS certificate.
    pub tls_identity: String,
    /// `always_on` or `on_demand`.
    pub tunnel_policy: String,
    /// Idle timeout of an on-demand tunnel (none on a closed network: nothing to idle out).
    pub idle_timeout_secs: Option<u32>,
    /// The config the daemon runs with.
    pub config: PathBuf,
    /// The daemon's log.
    pub log: PathBuf,
    /// Its runtime folder (control socket for `renkei status`).
    pub runtime_dir: PathBuf,
    /// The daemon.
    pub process: Process,
    /// Its TLS services.
    pub listeners: Vec<Listener>,
    /// Its status page.
    pub status_page: StatusPage,
    /// Its management API.
    pub management: Management,
}

/// One TLS service of a box.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Listener {
    /// Service name.
    pub service: String,
    /// `inbound` or `outbound`.
    pub direction: String,
    /// Where it listens.
    pub listen: String,
    /// Where it forwards.
    pub target: String,
    /// Who the TLS peer must be.
    pub peer: String,
}

/// A box's status page.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusPage {
    /// Its URL.
    pub url: String,
    /// The namespace to open it from (the facility admin's LAN, or the hub itself).
    pub open_from_namespace: String,
    /// The same page for a browser on the machine running the lab: a door on the host's
    /// 127.0.0.1 into `open_from_namespace` (the page's certificate names 127.0.0.1 too).
    #[serde(default)]
    pub browser_url: String,
    /// The administrator password of this run (its argon2id hash is in the config).
    pub admin_password: String,
    /// CA file that verifies the page's HTTPS certificate (none for plain HTTP on loopback).
    pub ca_file: Option<PathBuf>,
    /// The operator's metrics listener (on the link address; operator client certificate).
    pub metrics_url: String,
}

/// A box's management API.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Management {
    /// Its URL (link address).
    pub url: String,
}

/// The document server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DocumentServerRecord {
    /// Namespace it runs in (the hospital LAN host).
    pub namespace: String,
    /// Its `IP:port`.
    pub address: String,
    /// Its base URL.
    pub url: String,
    /// The folder it serves.
    pub dir: PathBuf,
    /// The documents, with sizes and checksums.
    pub documents: Vec<Document>,
    /// Its request log.
    pub log: PathBuf,
    /// The process.
    pub process: Process,
}

/// A host on a facility LAN.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientRecord {
    /// What it is.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// Its address.
    pub address: String,
}

/// The operator's PKI of this run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PkiRecord {
    /// Operator CA certificate (trusted by every box).
    pub ca_certificate: PathBuf,
    /// Its key.
    pub ca_key: PathBuf,
    /// The operator's client certificate for the management API.
    pub operator_certificate: PathBuf,
    /// Its key.
    pub operator_key: PathBuf,
    /// The operator's config-signing key (ECDSA P-256, PKCS#8 PEM).
    pub signing_key: PathBuf,
    /// Its public key, as every box's `management.operator_signing_key_file`.
    pub signing_public_key: PathBuf,
}

/// The example config push the lab prepares (issue #8): the clinic's running config with
/// `meta.version` raised and a `meta.description` saying what changed, signed with `renkei sign`
/// and the operator's key, so the printed push, confirm and remote commands have something real
/// to carry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigPushRecord {
    /// The box it is for.
    pub node: String,
    /// `meta.version` the box runs when the lab comes up.
    pub running_version: u64,
    /// `meta.version` of the signed config (what `renkei confirm --version` names).
    pub version: u64,
    /// Its `meta.description`: the visible change, shown in the status document's `config` block once applied.
    pub description: String,
    /// The signed config, in the operator's folder.
    pub config: PathBuf,
    /// Its signature (`<config>.sig`, base64 DER ECDSA P-256).
    pub signature: PathBuf,
    /// Fingerprint of the signing key: the `signer` the box reports.
    pub signer: String,
}

/// A command to try.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommandRecord {
    /// Stable key for scripts and tests (`fetch-document`, `clinic-tunnel`, ...).
    pub key: String,
    /// What it shows.
    pub what: String,
    /// The command as a shell line.
    pub shell: String,
    /// The same as an argument vector (empty when the command is not available yet).
    pub argv: Vec<String>,
}

impl LabRecord {
    /// The record file in `state_dir`.
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(RECORD_FILE)
    }

    /// Reads and checks `lab.json`; `Ok(None)` when there is none.
    pub fn read(state_dir: &Path) -> anyhow::Result<Option<LabRecord>> {
        let path = Self::path(state_dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let record: LabRecord = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a lab record", path.display()))?;
        anyhow::ensure!(
            record.format == FORMAT,
            "{} has format {}, this lab binary writes {FORMAT}; remove the lab with the binary \
             that started it, or delete the file",
            path.display(),
            record.format
        );
        record
            .check()
            .with_context(|| format!("{} names things the lab never makes", path.display()))?;
        Ok(Some(record))
    }

    /// Writes the record atomically (a reader never sees half a file), readable by root only.
    pub fn write(&self, state_dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(state_dir)
            .with_context(|| format!("creating {}", state_dir.display()))?;
        let path = Self::path(state_dir);
        let partial = state_dir.join(format!("{RECORD_FILE}.partial"));
        let mut text = serde_json::to_string_pretty(self)?;
        text.push('\n');
        // 0600: the record holds the admin passwords of the run.
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&partial)
            .with_context(|| format!("creating {}", partial.display()))?;
        file.write_all(text.as_bytes())
            .with_context(|| format!("writing {}", partial.display()))?;
        drop(file);
        std::fs::rename(&partial, &path)
            .with_context(|| format!("renaming {} to {}", partial.display(), path.display()))?;
        Ok(())
    }

    /// Every process of the lab, the keeper first.
    pub fn processes(&self) -> Vec<&Process> {
        let mut all = vec![&self.keeper];
        all.extend(self.document_server.iter().map(|d| &d.process));
        all.extend(self.nodes.iter().map(|n| &n.process));
        all.extend(&self.charons);
        all
    }

    /// A box by name.
    pub fn node(&self, name: &str) -> Option<&NodeRecord> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The lab's carrier; an unknown name is refused by [`LabRecord::read`].
    pub fn lab_carrier(&self) -> anyhow::Result<LabCarrier> {
        LabCarrier::from_name(&self.carrier)
            .with_context(|| format!("unknown carrier {:?}", self.carrier))
    }

    /// A command by key.
    pub fn command(&self, key: &str) -> Option<&CommandRecord> {
        self.commands.iter().find(|c| c.key == key)
    }

    /// Refuses names and paths `lab down` must not touch: only `rk...` namespaces, sockets in
    /// the WireGuard socket folder and a `renkei-lab-*` folder in the temp folder.
    fn check(&self) -> anyhow::Result<()> {
        self.lab_carrier()?;
        for ns in &self.namespaces {
            anyhow::ensure!(is_lab_namespace(ns), "namespace {ns:?}");
        }
        for socket in &self.wireguard_sockets {
            let ok = socket.parent() == Some(Path::new(WIREGUARD_SOCKET_DIR))
                && socket
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| {
                        n.starts_with("rk") && n.ends_with(".sock") && !n.contains("..")
                    });
            anyhow::ensure!(ok, "WireGuard socket {}", socket.display());
        }
        anyhow::ensure!(
            is_lab_dir(&self.lab_dir),
            "lab folder {}",
            self.lab_dir.display()
        );
        Ok(())
    }
}

fn wireguard_name() -> String {
    LabCarrier::WireGuard.name().to_string()
}

fn is_lab_namespace(name: &str) -> bool {
    name.starts_with("rk")
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn is_lab_dir(dir: &Path) -> bool {
    dir.parent() == Some(std::env::temp_dir().as_path())
        && dir
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("renkei-lab-") && n != "renkei-lab-" && n != "..")
}

// ----------------------------------------------------------------------------------------------
// Processes

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
    fn stop(&self, timeout: Duration) -> bool {
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

/// A child process killed when dropped (the document server inside the keeper).
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Keepers (`lab keep --dir <state_dir>`) running for `state_dir`, whatever `lab.json` says.
fn unrecorded_keepers(state_dir: &Path) -> Vec<Process> {
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

fn namespace_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

// ----------------------------------------------------------------------------------------------
// lab down

/// What is left after a teardown (empty when everything is gone).
#[derive(Debug, Default)]
pub struct Leftovers {
    /// Processes still running.
    pub processes: Vec<Process>,
    /// Processes the record does not name that still run with the lab's folder on their
    /// command line (a daemon started by a keeper that crashed before it recorded it).
    pub unrecorded: Vec<u32>,
    /// Namespaces still there.
    pub namespaces: Vec<String>,
    /// Files and folders still there.
    pub paths: Vec<PathBuf>,
}

impl Leftovers {
    /// True when nothing is left.
    pub fn is_empty(&self) -> bool {
        self.processes.is_empty()
            && self.unrecorded.is_empty()
            && self.namespaces.is_empty()
            && self.paths.is_empty()
    }
}

/// What of `record` still exists.
pub fn leftovers(record: &LabRecord) -> Leftovers {
    let mut paths: Vec<PathBuf> = record
        .wireguard_sockets
        .iter()
        .filter(|p| p.exists())
        .cloned()
        .collect();
    if record.lab_dir.exists() {
        paths.push(record.lab_dir.clone());
    }
    Leftovers {
        processes: record
            .processes()
            .into_iter()
            .filter(|p| p.alive())
            .cloned()
            .collect(),
        unrecorded: processes_using(&record.lab_dir),
        namespaces: record
            .namespaces
            .iter()
            .filter(|n| namespace_exists(n))
            .cloned()
            .collect(),
        paths,
    }
}

/// Removes the lab of `record`: stops the keeper (which removes its lab), then whatever is
/// left, daemons before namespaces. Fails naming anything that would not go.
pub fn teardown(record: &LabRecord) -> anyhow::Result<()> {
    record.keeper.stop(STOP_TIMEOUT);
    for process in record.processes() {
        process.stop(STOP_TIMEOUT);
    }
    // What the record does not name: processes still inside the lab's namespaces, and any
    // other process running from the lab's folder.
    for ns in &record.namespaces {
        if namespace_exists(ns) {
            crate::netns::empty_and_delete(ns, STOP_TIMEOUT);
        }
    }
    for pid in processes_using(&record.lab_dir) {
        if let Ok(process) = Process::of("unrecorded lab process", pid) {
            process.stop(STOP_TIMEOUT);
        }
    }
    for socket in &record.wireguard_sockets {
        let _ = std::fs::remove_file(socket);
    }
    if record.lab_dir.exists() {
        let _ = std::fs::remove_dir_all(&record.lab_dir);
    }
    let left = leftovers(record);
    anyhow::ensure!(
        left.is_empty(),
        "could not remove all of lab {}: {left:?}",
        record.id
    );
    Ok(())
}

/// `lab down`: removes the lab recorded in `state_dir`, then its `lab.json`. Returns the id of
/// the lab removed, `None` when none was recorded.
pub fn down(state_dir: &Path) -> anyhow::Result<Option<String>> {
    let Some(record) = LabRecord::read(state_dir)? else {
        return Ok(None);
    };
    teardown(&record)?;
    let path = LabRecord::path(state_dir);
    std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    Ok(Some(record.id))
}

// ----------------------------------------------------------------------------------------------
// lab up

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

fn shell_line(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn command(key: &str, what: &str, argv: Vec<String>) -> CommandRecord {
    CommandRecord {
        key: key.into(),
        what: what.into(),
        shell: shell_line(&argv),
        argv,
    }
}

fn strings(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

/// The commands to try, built from the record so printed text and `lab.json` never disagree.
fn commands(
    record: &LabRecord,
    state_dir: &Path,
    operator: &Operator,
) -> anyhow::Result<Vec<CommandRecord>> {
    let clinic = record.node("clinic").context("no clinic")?;
    let hospital = record.node("hospital").context("no hospital")?;
    let hub = record.node("dc").context("no hub")?;
    let server = record
        .document_server
        .as_ref()
        .context("no document server")?;
    let viewer = record.clients.first().context("no viewer")?;
    let carrier = record.lab_carrier()?;
    let renkei = renkei_bin()?.to_string_lossy().into_owned();
    let lab = std::env::current_exe()?.to_string_lossy().into_owned();
    let service = format!("http://{LAN_SERVICE_ADDRESS}:{SERVICE_PORT}");
    let summary = server
        .documents
        .first()
        .context("no documents")?
        .name
        .clone();
    let imaging = server.documents.last().context("no documents")?;
    let fetch = |name: &str| {
        strings(&[
            "ip",
            "netns",
            "exec",
            &viewer.namespace,
            "curl",
            "-sS",
            "--fail",
            "--max-time",
            "60",
            &format!("{service}/{name}"),
        ])
    };
    let mut all = vec![
        command(
            "fetch-document",
            &format!(
                "fetch a document from the clinic LAN: viewer PC -> clinic box -> hub -> \
                 hospital box -> document server, mutual TLS on every leg, {}",
                match carrier {
                    LabCarrier::WireGuard => "the clinic's tunnel opened on demand",
                    LabCarrier::Closed => "across the closed network (nothing to bring up)",
                    LabCarrier::Ipsec => "the clinic's IPsec SA initiated on demand",
                }
            ),
            fetch(&summary),
        ),
        command(
            "fetch-imaging-checksum",
            "fetch the imaging file the same way and checksum it",
            strings(&[
                "sh",
                "-c",
                &format!("{} | sha256sum", shell_line(&fetch(&imaging.name))),
            ]),
        ),
        command(
            "hospital-checksum",
            &format!(
                "the hospital's copy: the same checksum ({})",
                &imaging.sha256
            ),
            vec![
                "sha256sum".into(),
                server
                    .dir
                    .join(&imaging.name)
                    .to_string_lossy()
                    .into_owned(),
            ],
        ),
        command(
            "clinic-tunnel",
            &match carrier {
                LabCarrier::WireGuard => format!(
                    "the clinic's tunnel: up after a fetch, idle again {} s after the last byte",
                    clinic.idle_timeout_secs.unwrap_or(0)
                ),
                LabCarrier::Closed => "the clinic's link to the data centre: on demand on a \
                                       closed network, so idle, with nothing to bring up"
                    .to_string(),
                LabCarrier::Ipsec => format!(
                    "the clinic's IPsec SA: up after a fetch, deleted again {} s after the \
                     last byte",
                    clinic.idle_timeout_secs.unwrap_or(0)
                ),
            },
            vec![
                renkei.clone(),
                "status".into(),
                "--config".into(),
                clinic.config.to_string_lossy().into_owned(),
            ],
        ),
        command(
            "clinic-tunnel-json",
            "the same as JSON (what the status page and tests read)",
            vec![
                renkei.clone(),
                "status".into(),
                "--json".into(),
                "--config".into(),
                clinic.config.to_string_lossy().into_owned(),
            ],
        ),
        command(
            "hospital-status",
            &format!(
                "the hospital: always on{}, every connection in its access log",
                match carrier {
                    LabCarrier::WireGuard => "",
                    LabCarrier::Closed => ", the data centre's health endpoint probed",
                    LabCarrier::Ipsec => ", its IPsec SA kept up by its charon",
                }
            ),
            vec![
                renkei.clone(),
                "status".into(),
                "--config".into(),
                hospital.config.to_string_lossy().into_owned(),
            ],
        ),
    ];
    all.extend(carrier_view_commands(record, carrier, &renkei)?);
    // The operator's monitoring: Prometheus text from each always-on box's metrics listener on
    // its link address, read from the data centre with the operator's client certificate,
    // the box's certificate checked against the CA for its name (an on-demand clinic answers
    // only while its tunnel is up, so it is not among them on either carrier).
    for node in [hub, hospital] {
        let name = &node.tls_identity;
        all.push(command(
            &format!("metrics-{}", node.name),
            &format!(
                "the {} box's Prometheus metrics, as the operator's monitoring reads them \
                 {} ({})",
                node.name,
                match carrier {
                    LabCarrier::WireGuard => "through the tunnel",
                    LabCarrier::Closed => "across the closed network",
                    LabCarrier::Ipsec => "through the IPsec SA",
                },
                node.status_page.metrics_url
            ),
            strings(&[
                "ip",
                "netns",
                "exec",
                &hub.namespace,
                "curl",
                "-sS",
                "--fail",
                "--max-time",
                "10",
                "--cacert",
                &operator.ca.to_string_lossy(),
                "--cert",
                &operator.client.cert.to_string_lossy(),
                "--key",
                &operator.client.key.to_string_lossy(),
                "--resolve",
                &format!("{name}:{METRICS_PORT}:{}", node.link_address),
                &format!("https://{name}:{METRICS_PORT}/metrics"),
            ]),
        ));
    }
    for node in &record.nodes {
        let page = &node.status_page;
        // Log in with the admin password (the session cookie goes to a jar in the box's
        // folder), then read the page's status API: what the page shows, as JSON.
        let jar = record.lab_dir.join(&node.name).join("status-cookies.txt");
        let curl = |inside: bool, extra: &[&str]| {
            let mut argv = Vec::new();
            if inside {
                argv.extend(strings(&["ip", "netns", "exec", &page.open_from_namespace]));
            }
            argv.extend(strings(&["curl", "-sS", "--fail", "--max-time", "10"]));
            if let Some(ca) = &page.ca_file {
                argv.push("--cacert".into());
                argv.push(ca.to_string_lossy().into_owned());
            }
            argv.extend(extra.iter().map(|s| s.to_string()));
            shell_line(&argv)
        };
        let jar = jar.to_string_lossy();
        let login_and_read = |inside: bool, url: &str| {
            let login = curl(
                inside,
                &[
                    "-o",
                    "/dev/null",
                    "-c",
                    &jar,
                    "--data-urlencode",
                    &format!("password={}", page.admin_password),
                    &format!("{url}login"),
                ],
            );
            let api = curl(inside, &["-b", &jar, &format!("{url}api/v1/status")]);
            vec!["sh".into(), "-c".into(), format!("{login} && {api}")]
        };
        all.push(command(
            &format!("status-page-{}", node.name),
            &format!(
                "log in to the {} status page ({}, admin password {}) and read its status API",
                node.name, page.url, page.admin_password
            ),
            login_and_read(true, &page.url),
        ));
        all.push(command(
            &format!("browser-{}", node.name),
            &format!(
                "the same through the door a browser on this machine uses ({}; the lab CA is {})",
                page.browser_url,
                page.ca_file
                    .as_ref()
                    .map_or("not needed: plain HTTP".into(), |ca| ca
                        .display()
                        .to_string())
            ),
            login_and_read(false, &page.browser_url),
        ));
    }
    all.extend(push_commands(record, carrier, operator, &renkei)?);
    let mut stop = vec![lab, "down".into()];
    if state_dir != default_state_dir().canonicalize().unwrap_or_default() {
        stop.push("--dir".into());
        stop.push(state_dir.to_string_lossy().into_owned());
    }
    all.push(command("down", "remove the lab", stop));
    Ok(all)
}

/// How the operator sees the link to the data centre, for the carrier: WireGuard's peers as
/// `wg` reads them from the hub's userspace API; on a closed network, which has no peers or
/// keys, the hub's own link in `renkei status`, the carrier's routes in the data centre, and
/// the probe the always-on hospital sends to the data centre's health endpoint.
fn carrier_view_commands(
    record: &LabRecord,
    carrier: LabCarrier,
    renkei: &str,
) -> anyhow::Result<Vec<CommandRecord>> {
    let hub = record.node("dc").context("no hub")?;
    let hospital = record.node("hospital").context("no hospital")?;
    Ok(match carrier {
        LabCarrier::WireGuard => vec![command(
            "hub-peers",
            "the hub's WireGuard peers, as the operator sees them",
            strings(&["wg", "show", &hub.interface]),
        )],
        LabCarrier::Ipsec => vec![command(
            "hub-routes",
            "the data centre's routes to the facilities' own addresses, which the \
             concentrator installs while their SAs are up (table 220)",
            strings(&["ip", "-n", &hub.namespace, "route", "show", "table", "220"]),
        )],
        LabCarrier::Closed => {
            let probe = format!("{}:{DC_PROBE_PORT}", hub.link_address);
            vec![
                command(
                    "hub-link",
                    "the hub on the closed network: its link up, no tunnel, no keys; \
                     facilities dial it, so it probes nothing",
                    vec![
                        renkei.into(),
                        "status".into(),
                        "--config".into(),
                        hub.config.to_string_lossy().into_owned(),
                    ],
                ),
                command(
                    "hub-routes",
                    "the data centre's routes: each facility's /24 through the carrier's \
                     router (a facility has a route to the data centre's /24 only)",
                    strings(&["ip", "-n", &hub.namespace, "route", "show"]),
                ),
                command(
                    "hospital-probe",
                    &format!(
                        "what the hospital's reachability probe does: a TCP connection from \
                         the box to the data centre's health endpoint {probe}"
                    ),
                    strings(&[
                        "ip",
                        "netns",
                        "exec",
                        &hospital.namespace,
                        "curl",
                        "-sS",
                        "--max-time",
                        "5",
                        "-w",
                        "the data centre answered on %{remote_ip}:%{remote_port}\n",
                        &format!("telnet://{probe}"),
                    ]),
                ),
            ]
        }
    })
}

/// The example config push as an operator does it: on WireGuard, bring the on-demand clinic's
/// tunnel up on the box first (the hub has no address for it until it connects, so the
/// operator cannot reach a clinic that has never asked for its tunnel; a closed network routes
/// to the clinic at any time, so there that step is left out), then `renkei push`, `confirm`
/// and `remote` from the data centre's namespace to the clinic's management API.
/// Every command is a real argv: `lab_demo` runs them exactly as recorded.
fn push_commands(
    record: &LabRecord,
    carrier: LabCarrier,
    operator: &Operator,
    renkei: &str,
) -> anyhow::Result<Vec<CommandRecord>> {
    let push = record.config_push.as_ref().context("no example push")?;
    let target = record.node(&push.node).context("no box for the push")?;
    let node = Node::ALL
        .into_iter()
        .find(|n| n.short() == push.node)
        .context("no lab node for the push")?;
    let hub = record.node("dc").context("no hub")?;
    let operator_command = |command: &str, extra: &[String]| {
        let mut argv = strings(&["ip", "netns", "exec", &hub.namespace, renkei, command]);
        argv.extend(operator.management_args(node));
        argv.extend(extra.iter().cloned());
        argv
    };
    // (what it shows, its key, its argv), in the order to follow; numbered below.
    let mut steps: Vec<(String, String, Vec<String>)> = Vec::new();
    if carrier != LabCarrier::Closed {
        steps.push((
            format!("{}-connect", push.node),
            format!(
                "bring the {0}'s on-demand tunnel (or IPsec SA) up on the box (until the {0} \
                 connects, the data centre has no path to it, and an idle box never sends on its \
                 own); it idles out again {1} s after the last packet",
                push.node,
                target.idle_timeout_secs.unwrap_or(0)
            ),
            vec![
                "ip".into(),
                "netns".into(),
                "exec".into(),
                target.namespace.clone(),
                renkei.into(),
                "tunnel".into(),
                "connect".into(),
                "--config".into(),
                target.config.to_string_lossy().into_owned(),
            ],
        ));
    }
    steps.push((
        "push-config".into(),
        format!(
            "push the signed example config (version {} -> {}, description {:?}) from the data \
             centre to the {}'s management API {}: answers \"state\": \"pending\"",
            push.running_version, push.version, push.description, push.node, target.management.url
        ),
        operator_command(
            "push",
            &[
                "--wait-secs".into(),
                PUSH_WAIT_SECS.to_string(),
                push.config.to_string_lossy().into_owned(),
            ],
        ),
    ));
    steps.push((
        "confirm-config".into(),
        format!(
            "confirm version {} within {CONFIRM_TIMEOUT_SECS} s of the push, or the {} rolls \
             back to version {}: answers \"state\": \"confirmed\"",
            push.version, push.node, push.running_version
        ),
        operator_command("confirm", &["--version".into(), push.version.to_string()]),
    ));
    steps.push((
        "show-config".into(),
        format!(
            "the {}'s running config as the operator sees it: version, sha256, signer, \
             pushed_by, state (its own `renkei status` shows the same); pushing the same file \
             again is refused as not_newer",
            push.node
        ),
        operator_command("remote", &[]),
    ));
    Ok(steps
        .into_iter()
        .enumerate()
        .map(|(i, (key, what, argv))| {
            let first = if i == 0 { "config push, " } else { "" };
            command(&key, &format!("{first}step {}: {what}", i + 1), argv)
        })
        .collect())
}

// ----------------------------------------------------------------------------------------------
// The summary for people

/// A site's /24 on the lab's closed network, from a box's address there.
fn closed_site_prefix(address: &str) -> String {
    address
        .parse::<Ipv4Addr>()
        .ok()
        .and_then(|ip| ipnet::Ipv4Net::new(ip, 24).ok())
        .map_or_else(|| address.to_string(), |net| net.trunc().to_string())
}

/// The human summary of a lab that is up.
pub fn summary(record: &LabRecord, state_dir: &Path) -> String {
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    let closed = record.carrier == LabCarrier::Closed.name();
    let ipsec = record.carrier == LabCarrier::Ipsec.name();
    line(format!(
        "renkei lab {} is up on {}: every address is from 198.18.0.0/15 (record: {})",
        record.id,
        if closed {
            "a closed network, routed, no tunnel (carrier: closed)"
        } else if ipsec {
            "IKEv2/IPsec, each facility's charon to the data centre's strongSwan concentrator \
             (carrier: ipsec)"
        } else {
            "renkei's WireGuard tunnels (carrier: wireguard)"
        },
        LabRecord::path(state_dir).display()
    ));
    line(String::new());
    line("Network".into());
    if let Some(wan) = record.namespaces.iter().find(|n| n.ends_with("-wan")) {
        let what = if closed {
            let sites: Vec<String> = record
                .nodes
                .iter()
                .map(|n| format!("{} {}", n.name, closed_site_prefix(&n.wan_address)))
                .collect();
            format!(
                "the carrier's router between one /24 per site ({}): a facility is routed to \
                 the data centre only; no tunnel",
                sites.join(", ")
            )
        } else if ipsec {
            "bridge br0 joining every box's wan0 (198.18.0.0/24); IPsec SAs between each \
             facility's own /32 and the data centre's 198.19.1.1 (ESP in UDP 4500)"
                .to_string()
        } else {
            "bridge br0 joining every box's wan0 (198.18.0.0/24); tunnel overlay 198.19.0.0/24"
                .to_string()
        };
        line(format!("  {:<12} ns {wan:<20} {what}", "WAN"));
    }
    for n in &record.nodes {
        if let (Some(ns), Some(lan)) = (&n.lan_namespace, &n.lan_address) {
            line(format!(
                "  {:<12} ns {:<20} the {} LAN (198.18.{}.0/24 behind the box's lan0 {})",
                format!("{}-lan", n.name),
                ns,
                n.name,
                lan.split('.').nth(2).unwrap_or("?"),
                lan
            ));
        }
    }
    line(String::new());
    line("Boxes".into());
    for n in &record.nodes {
        let idle = n
            .idle_timeout_secs
            .map(|s| format!(", idle after {s} s"))
            .unwrap_or_default();
        // WAN and tunnel address, or on a closed network the one address on the WAN
        // interface that the services, metrics and management API use.
        let link = match &n.tunnel_address {
            Some(tunnel) => format!("WAN {:<12} tunnel {tunnel:<12}", n.wan_address),
            // IPsec: the WAN address for IKE and ESP, the link address inside the SA.
            None if n.link_address != n.wan_address => format!(
                "WAN {:<12} link {:<12} on {:<11}",
                n.wan_address, n.link_address, n.interface
            ),
            None => format!("link {:<12} on {:<11}", n.link_address, n.interface),
        };
        line(format!(
            "  {:<9} {:<11} ns {:<20} {link} LAN {:<12} {}{idle}  pid {}",
            n.name,
            n.role,
            n.namespace,
            n.lan_address.as_deref().unwrap_or("-"),
            n.tunnel_policy,
            n.process.pid
        ));
        line(format!(
            "            config {}  log {}",
            n.config.display(),
            n.log.display()
        ));
    }
    if !record.charons.is_empty() {
        line(
            "  strongSwan charons (the concentrator configured by hand; each facility's from \
             `renkei charon-conf`; they carry ESP only, renkei terminates every TLS):"
                .into(),
        );
        for charon in &record.charons {
            line(format!("    {:<40} pid {}", charon.name, charon.pid));
        }
    }
    line(String::new());
    line("LAN hosts".into());
    if let Some(server) = &record.document_server {
        line(format!(
            "  document server  ns {:<20} {}  pid {}  serving {}",
            server.namespace,
            server.url,
            server.process.pid,
            server.dir.display()
        ));
        for doc in &server.documents {
            line(format!(
                "      {:<22} {:>9} bytes  sha256 {}",
                doc.name, doc.bytes, doc.sha256
            ));
        }
    }
    for client in &record.clients {
        line(format!(
            "  {:<16} ns {:<20} {}",
            client.name, client.namespace, client.address
        ));
    }
    line(String::new());
    line(format!(
        "TLS services (mutual TLS, CRYPTREC high-security profile, {})",
        if closed {
            "across the closed network"
        } else if ipsec {
            "inside the IPsec SAs"
        } else {
            "inside the tunnel"
        }
    ));
    for n in &record.nodes {
        for l in &n.listeners {
            line(format!(
                "  {:<9} {:<19} {:<8} {:<18} -> {:<18} {}",
                n.name, l.service, l.direction, l.listen, l.target, l.peer
            ));
        }
    }
    line(String::new());
    line("Status pages (admin passwords of this run)".into());
    for n in &record.nodes {
        let p = &n.status_page;
        line(format!(
            "  {:<9} {:<28} from ns {:<20} password {}",
            n.name, p.url, p.open_from_namespace, p.admin_password,
        ));
        line(format!(
            "            in a browser on this machine: {} ({})",
            p.browser_url,
            match &p.ca_file {
                Some(ca) => format!("certificate from the lab CA {}", ca.display()),
                None => "plain HTTP, on loopback only".into(),
            }
        ));
        line(format!(
            "            metrics {} (operator client certificate, from the data centre)",
            p.metrics_url
        ));
    }
    line("Management API (operator config push)".into());
    for n in &record.nodes {
        line(format!("  {:<9} {}", n.name, n.management.url));
    }
    if let Some(push) = &record.config_push {
        line(format!(
            "  example push for the {}: {} (version {} -> {}, signed: {}, signer {})",
            push.node,
            push.config.display(),
            push.running_version,
            push.version,
            push.signature.display(),
            push.signer
        ));
    }
    if let Some(pki) = &record.pki {
        line(format!(
            "Operator PKI: CA {}  client {}  signing key {}",
            pki.ca_certificate.display(),
            pki.operator_certificate.display(),
            pki.signing_key.display()
        ));
    }
    line(String::new());
    line("Try".into());
    for c in &record.commands {
        line(format!("  # {}", c.what));
        if !c.shell.is_empty() {
            line(format!("  {}", c.shell));
        }
    }
    out
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

    #[test]
    fn records_naming_foreign_things_are_refused() {
        let dir = std::env::temp_dir().join(format!("renkei-demo-record-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        assert!(LabRecord::read(&dir).expect("no record").is_none());
        let good = LabRecord {
            format: FORMAT,
            state: "up".into(),
            id: "abc".into(),
            carrier: "closed".into(),
            lab_dir: std::env::temp_dir().join("renkei-lab-abc"),
            keeper: Process {
                name: "k".into(),
                pid: 1,
                start_time: 1,
            },
            namespaces: vec!["rkabc-dc".into()],
            charons: Vec::new(),
            wireguard_sockets: vec![Path::new(WIREGUARD_SOCKET_DIR).join("rkabcd.sock")],
            nodes: vec![],
            document_server: None,
            clients: vec![],
            pki: None,
            config_push: None,
            commands: vec![],
        };
        good.write(&dir).expect("write");
        assert!(LabRecord::read(&dir).expect("read").is_some());
        let mut cases: Vec<LabRecord> = Vec::new();
        let mut bad = good.clone();
        bad.namespaces.push("default".into());
        cases.push(bad);
        let mut bad = good.clone();
        bad.lab_dir = "/".into();
        cases.push(bad);
        let mut bad = good.clone();
        bad.lab_dir = std::env::temp_dir();
        cases.push(bad);
        let mut bad = good.clone();
        bad.wireguard_sockets = vec!["/etc/passwd".into()];
        cases.push(bad);
        let mut bad = good.clone();
        bad.format = FORMAT + 1;
        cases.push(bad);
        let mut bad = good.clone();
        bad.carrier = "carrier pigeon".into();
        cases.push(bad);
        for bad in cases {
            bad.write(&dir).expect("write");
            assert!(LabRecord::read(&dir).is_err(), "{bad:?}");
        }
        std::fs::write(LabRecord::path(&dir), "{\"format\": 1").expect("write");
        let error = format!("{:#}", LabRecord::read(&dir).expect_err("truncated"));
        assert!(error.contains("is not a lab record"), "{error}");
        let _ = std::fs::remove_dir_all(&dir);
    }

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

    #[test]
    fn shell_lines_quote_what_needs_it() {
        assert_eq!(
            shell_line(&strings(&["sh", "-c", "a | b", "it's"])),
            r"sh -c 'a | b' 'it'\''s'"
        );
    }
}
