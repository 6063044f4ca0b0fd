//! The operator's log collector in the lab and the box's uploader, both systemd's own tools
//! (Debian's systemd-journal-remote package, installed by scripts/install-deps): the collector
//! `systemd-journal-remote --listen-http` on a namespace's loopback (behind a renkei inbound
//! service, as at the data centre), and `systemd-journal-upload` making one pass over a journal
//! file towards a renkei outbound service's loopback listener (as the image's uploader does
//! continuously). Journal files with chosen records are written by systemd-journal-remote from
//! journald's export format.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use renkei::config::{Config, Direction, LogsConfig};

use crate::boxconfig::{service, socket, Peer};
use crate::lab::{Lab, Node};
use crate::netns::Namespace;

/// The port of the "journal" services, the box's on loopback and the hub's on its tunnel
/// address.
pub const JOURNAL_PORT: u16 = 19532;
/// The collector's port on the hub's loopback, behind the hub's "journal" service.
pub const COLLECTOR_PORT: u16 = 19533;

/// systemd's collector (it listens; the box never runs it).
pub const JOURNAL_REMOTE: &str = "/lib/systemd/systemd-journal-remote";
/// systemd's uploader (the box's).
pub const JOURNAL_UPLOAD: &str = "/lib/systemd/systemd-journal-upload";

/// A collector in the hub's namespace, and the hub's full lab config with an inbound "journal"
/// service in front of it that takes uploads from `from`'s certificate.
pub fn collecting_hub(lab: &Lab, from: Node) -> anyhow::Result<(Collector, Config)> {
    let collector = Collector::start(
        lab.ns(Node::Hub),
        &format!("127.0.0.1:{COLLECTOR_PORT}"),
        &lab.dir,
    )?;
    let mut hub = lab.full(Node::Hub);
    hub.services.push(service(
        "journal",
        Direction::Inbound,
        socket(&format!("{}:{JOURNAL_PORT}", lab.link_address(Node::Hub))),
        &format!("127.0.0.1:{COLLECTOR_PORT}"),
        Peer::Allowed(from.tls_name()),
    ));
    Ok((collector, hub))
}

/// Makes a box `config` upload its journal (`[logs]`) through an outbound "journal" service on
/// its loopback to the hub's (see [`collecting_hub`]) on the WireGuard lab's tunnel address.
pub fn uploading(config: &mut Config) {
    uploading_to(config, Node::Hub.tunnel_address());
}

/// [`uploading`] to the hub's "journal" service on `hub_address` (the lab's link address of the
/// hub on its carrier).
pub fn uploading_to(config: &mut Config, hub_address: &str) {
    config.services.push(service(
        "journal",
        Direction::Outbound,
        socket(&format!("127.0.0.1:{JOURNAL_PORT}")),
        &format!("{hub_address}:{JOURNAL_PORT}"),
        Peer::ServerName(Node::Hub.tls_name()),
    ));
    config.logs = Some(LogsConfig {
        upload_service: "journal".to_string(),
    });
}

/// systemd-journal-remote writing what it receives under `output`; stopped on drop.
pub struct Collector {
    child: Child,
    /// The folder of the journal files it writes.
    pub output: PathBuf,
}

impl Collector {
    /// Listens for plain HTTP on `listen` (address:port) in `ns`; files and log under `dir`.
    pub fn start(ns: &Namespace, listen: &str, dir: &Path) -> anyhow::Result<Collector> {
        let output = dir.join("collected");
        std::fs::create_dir_all(&output)?;
        let log = std::fs::File::create(dir.join("journal-remote.log"))?;
        let child = ns
            .command(JOURNAL_REMOTE)
            .arg(format!("--listen-http={listen}"))
            .arg(format!("--output={}/", output.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("{JOURNAL_REMOTE} (scripts/install-deps installs it)"))?;
        Ok(Collector { child, output })
    }

    /// Everything received so far, in journald's export format.
    pub fn export(&self) -> anyhow::Result<String> {
        let out = Command::new("journalctl")
            .arg(format!("--directory={}", self.output.display()))
            .args(["-o", "export", "--no-pager"])
            .output()
            .context("journalctl")?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `export` (journald's export format: `FIELD=value` lines, entries separated by an
/// empty line) as the journal file `file`.
pub fn write_journal(export: &str, file: &Path) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut child = Command::new(JOURNAL_REMOTE)
        .arg(format!("--output={}", file.display()))
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("{JOURNAL_REMOTE} (scripts/install-deps installs it)"))?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(export.as_bytes())?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "{JOURNAL_REMOTE}: {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// One pass of systemd-journal-upload over `file` to `url` from `ns` (`--follow=no`, its
/// cursor kept in `state`), within `timeout`.
pub fn upload(
    ns: &Namespace,
    url: &str,
    file: &Path,
    state: &Path,
    timeout: Duration,
) -> anyhow::Result<()> {
    let out = ns
        .command("timeout")
        .arg(timeout.as_secs().max(1).to_string())
        .arg(JOURNAL_UPLOAD)
        .arg(format!("--url={url}"))
        .arg(format!("--file={}", file.display()))
        .arg(format!("--save-state={}", state.display()))
        .arg("--follow=no")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("{JOURNAL_UPLOAD} (scripts/install-deps installs it)"))?;
    anyhow::ensure!(
        out.status.success(),
        "{JOURNAL_UPLOAD}: {}: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// `count` access-log records as the box's journald holds them (the fields of a proxied
/// connection), in journald's export format, stamped from `first_usec` (wall clock, µs) on.
pub fn access_records(count: u32, first_usec: u128, hostname: &str) -> String {
    (1..=count)
        .map(|i| {
            format!(
                "__REALTIME_TIMESTAMP={}\n__MONOTONIC_TIMESTAMP={i}\n\
                 _BOOT_ID=00112233445566778899aabbccddeeff\n_MACHINE_ID={MACHINE_ID}\n\
                 _HOSTNAME={hostname}\nSYSLOG_IDENTIFIER=renkei\nMESSAGE=connection closed\n\
                 SERVICE=documents\nPEER_ADDR=198.19.0.1:4000{i}\nPEER_IDENTITY=hub.renkei.example\n\
                 BYTES_IN={i}00\nBYTES_OUT={i}000\nDURATION_MS=12\nRESULT=ok\n\n",
                first_usec + u128::from(i)
            )
        })
        .collect()
}

/// The machine id of [`access_records`] and [`sealed_journal`].
pub const MACHINE_ID: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";

/// The wall clock now plus `ahead`, in µs: records stamped so lie after sealing keys made a
/// moment later (a seal covers only entries after its keys' start).
pub fn usec_from_now(ahead: Duration) -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros()
        + ahead.as_micros()
}

/// Writes `export` as the journal file `file`, sealed with keys that `renkei journal-seal`
/// (the binary `renkei`) makes as on a box's first boot, and returns the verification key it
/// printed. Runs in a private mount namespace (root): journalctl keeps sealing keys under
/// /var/log/journal/<machine id>, so a tmpfs covers /var/log and [`MACHINE_ID`] is bound over
/// /etc/machine-id; the host's journal is never touched. `work` holds the key file.
pub fn sealed_journal(
    renkei: &Path,
    export: &str,
    file: &Path,
    work: &Path,
) -> anyhow::Result<String> {
    std::fs::create_dir_all(work)?;
    std::fs::write(work.join("machine-id"), format!("{MACHINE_ID}\n"))?;
    std::fs::write(work.join("export"), export)?;
    let script = r#"
        t="$1" renkei="$2" remote="$3" file="$4"
        mount -t tmpfs tmpfs /var/log
        mount --bind "$t/machine-id" /etc/machine-id
        mkdir -p /var/log/journal
        "$renkei" journal-seal --config "$t/none.toml" --key-file "$t/key" --journal-dir /var/log/journal > "$t/seal.out"
        "$remote" --seal=yes --output="$file" - < "$t/export"
    "#;
    let out = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-euc",
            script,
            "sh",
        ])
        .arg(work)
        .arg(renkei)
        .arg(JOURNAL_REMOTE)
        .arg(file)
        .output()
        .context("unshare")?;
    anyhow::ensure!(
        out.status.success(),
        "sealing in a private mount namespace: {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // What the console would show, and the key file kept for the installer: the same key.
    let key = std::fs::read_to_string(work.join("key"))?
        .trim()
        .to_string();
    let printed = std::fs::read_to_string(work.join("seal.out"))?;
    anyhow::ensure!(
        printed.contains(&format!("journal verification key for the operator: {key}")),
        "renkei journal-seal printed {printed:?}, its key file holds {key:?}"
    );
    Ok(key)
}
