//! `lab.json`: what the demo lab records, read back as untrusted input.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::docserver::Document;
use crate::lab::{LabCarrier, WIREGUARD_SOCKET_DIR};

use super::{FORMAT, RECORD_FILE};
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
