//! Firmware update bundles for the lab: a throwaway update CA and signing certificate (rcgen,
//! in the lab's folder, never in the repository), and real RAUC bundles made by `rauc bundle`
//! around a small payload image made here. Unsigned "bundles" are plain squashfs images made by
//! `mksquashfs`, as a careless or hostile sender could hand one over.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;
use renkei::config::UpdateConfig;

use crate::pki::{Ca, LeafFiles};

/// The `compatible` string of every lab box.
pub const LAB_COMPATIBLE: &str = "renkei-lab-x86_64";
/// Payload of an ordinary test bundle: a few pages, enough for a real squashfs and verity tree.
pub const SMALL_PAYLOAD_BYTES: usize = 64 * 1024;

/// An update CA and a signing certificate it issued.
pub struct UpdateSigner {
    /// The CA certificate, as a box's `update.ca_file` names it.
    pub ca_file: PathBuf,
    signer: LeafFiles,
    dir: PathBuf,
}

/// What a bundle's manifest says, and how big its payload is.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// `[update] compatible`.
    pub compatible: String,
    /// `[update] version`.
    pub version: String,
    /// Bytes of the payload image (incompressible).
    pub payload_bytes: usize,
}

impl Manifest {
    /// A small bundle for the lab's boxes at `version`.
    pub fn lab(version: &str) -> Manifest {
        Manifest {
            compatible: LAB_COMPATIBLE.to_string(),
            version: version.to_string(),
            payload_bytes: SMALL_PAYLOAD_BYTES,
        }
    }

    fn text(&self) -> String {
        format!(
            "[update]\ncompatible={}\nversion={}\n\n[bundle]\nformat=verity\n\n[image.rootfs]\nfilename=rootfs.img\n",
            self.compatible, self.version
        )
    }
}

impl UpdateSigner {
    /// A new CA called `name` with one signing certificate, under `<dir>/<name>`.
    pub fn new(dir: &Path, name: &str) -> anyhow::Result<UpdateSigner> {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir)?;
        let ca = Ca::new(name)?;
        let ca_file = dir.join("update-ca.crt");
        std::fs::write(&ca_file, &ca.cert_pem)?;
        // No extended key usage: RAUC checks the signer for CMS signing, which a certificate
        // limited to TLS would fail.
        let leaf = ca.issue_with("bundle signer", ca.next_serial(), |params| {
            params.extended_key_usages.clear();
        })?;
        let signer = leaf.write(&dir, "signer")?;
        Ok(UpdateSigner {
            ca_file,
            signer,
            dir,
        })
    }

    /// A bundle `<name>.raucb` signed by this signer (`rauc bundle`).
    pub fn bundle(&self, name: &str, manifest: &Manifest) -> anyhow::Result<PathBuf> {
        let content = content_dir(&self.dir, name, manifest)?;
        let output = self.dir.join(format!("{name}.raucb"));
        let out = Command::new("rauc")
            .arg("bundle")
            .arg(format!("--cert={}", self.signer.cert.display()))
            .arg(format!("--key={}", self.signer.key.display()))
            .arg(&content)
            .arg(&output)
            .output()
            .context("running rauc bundle (install rauc: scripts/install-deps)")?;
        anyhow::ensure!(out.status.success(), "rauc bundle: {out:?}");
        Ok(output)
    }

    /// A squashfs image with the same content as a bundle but no signature.
    pub fn unsigned(&self, name: &str, manifest: &Manifest) -> anyhow::Result<PathBuf> {
        let content = content_dir(&self.dir, name, manifest)?;
        let output = self.dir.join(format!("{name}.raucb"));
        let out = Command::new("mksquashfs")
            .arg(&content)
            .arg(&output)
            .args(["-quiet", "-noappend", "-all-root"])
            .output()
            .context("running mksquashfs (install squashfs-tools)")?;
        anyhow::ensure!(out.status.success(), "mksquashfs: {out:?}");
        Ok(output)
    }

    /// The `[update]` section of a box trusting this CA, spooling into `spool_dir`.
    pub fn update_config(&self, spool_dir: &Path) -> UpdateConfig {
        UpdateConfig {
            ca_file: self.ca_file.clone(),
            compatible: LAB_COMPATIBLE.to_string(),
            max_bundle_bytes: renkei::config::DEFAULT_MAX_BUNDLE_BYTES,
            spool_dir: Some(spool_dir.to_path_buf()),
            allow_downgrade_to: None,
            health_deadline_secs: renkei::config::DEFAULT_HEALTH_DEADLINE_SECS,
            // Never the host's /etc/rauc: a test that wants slots writes this file.
            system_conf: lab_system_conf(spool_dir),
        }
    }
}

/// The rauc system.conf a lab box with spool `spool_dir` reads (written by
/// [`write_system_conf`]; the lab never uses the host's /etc/rauc).
pub fn lab_system_conf(spool_dir: &Path) -> PathBuf {
    spool_dir.with_file_name("rauc-system.conf")
}

/// Writes the rauc system.conf of a lab box: two root slots A and B whose devices are regular
/// files of `slot_bytes` each, beside it.
pub fn write_system_conf(system_conf: &Path, slot_bytes: u64) -> anyhow::Result<()> {
    // `noop`: the lab has no bootloader; rauc reads this file for `rauc info` too.
    write_system_conf_with(system_conf, slot_bytes, "bootloader=noop\n")
}

/// [`write_system_conf`] with `system_lines` (the bootloader and what goes with it) in
/// `[system]` in place of the lab's `noop` bootloader.
fn write_system_conf_with(
    system_conf: &Path,
    slot_bytes: u64,
    system_lines: &str,
) -> anyhow::Result<()> {
    let dir = system_conf
        .parent()
        .context("a system.conf path has a folder")?;
    std::fs::create_dir_all(dir)?;
    let mut text = format!("[system]\ncompatible={LAB_COMPATIBLE}\n{system_lines}");
    for (n, bootname) in ["A", "B"].iter().enumerate() {
        let device = dir.join(format!("rootfs-{bootname}.img"));
        std::fs::File::create(&device)?.set_len(slot_bytes)?;
        text.push_str(&format!(
            "\n[slot.rootfs.{n}]\ndevice={}\ntype=ext4\nbootname={bootname}\n",
            device.display()
        ));
    }
    std::fs::write(system_conf, text)?;
    Ok(())
}

/// `<dir>/<name>.d` with the manifest and an incompressible payload image.
fn content_dir(dir: &Path, name: &str, manifest: &Manifest) -> anyhow::Result<PathBuf> {
    let content = dir.join(format!("{name}.d"));
    std::fs::create_dir_all(&content)?;
    std::fs::write(content.join("manifest.raucm"), manifest.text())?;
    std::fs::write(
        content.join("rootfs.img"),
        noise(manifest.payload_bytes, name),
    )?;
    Ok(content)
}

/// `len` bytes that do not compress (xorshift, seeded by `seed`).
fn noise(len: usize, seed: &str) -> Vec<u8> {
    let mut state: u64 = seed.bytes().fold(0x9e37_79b9_7f4a_7c15, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    }) | 1;
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

/// The files in a spool directory (none when it does not exist), sorted.
pub fn spool_files(spool_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(spool_dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// How long a private bus or rauc's service may take to come up.
const SERVICE_START_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// A real `rauc service` on a private system-like D-Bus: the box's rauc without the box. Its
/// slots are regular files, its bootloader backend a script keeping each slot's state in a
/// file (`good`/`bad`), its booted slot given (`--override-boot-slot`). Both processes are
/// stopped when this is dropped.
pub struct RaucService {
    /// What a client puts in `DBUS_SYSTEM_BUS_ADDRESS` to reach this rauc.
    pub bus_address: String,
    /// The system.conf the service (and a box's `update.system_conf`) reads.
    pub system_conf: PathBuf,
    dir: PathBuf,
    bus: std::process::Child,
    service: Option<std::process::Child>,
}

impl RaucService {
    /// Starts the bus and rauc with `system_conf` (written here: slots A and B of `slot_bytes`
    /// each, compatible [`LAB_COMPATIBLE`], bundles checked against `keyring`), booted from
    /// `booted`, each slot's boot state as `good` says.
    pub fn start(
        system_conf: &Path,
        keyring: &Path,
        slot_bytes: u64,
        booted: &str,
        good: &[&str],
    ) -> anyhow::Result<RaucService> {
        let dir = system_conf
            .parent()
            .context("a system.conf path has a folder")?
            .join("rauc-service");
        std::fs::create_dir_all(dir.join("data"))?;
        for slot in ["A", "B"] {
            let state = if good.contains(&slot) { "good" } else { "bad" };
            std::fs::write(dir.join(format!("state-{slot}")), format!("{state}\n"))?;
        }
        let backend = dir.join("backend");
        std::fs::write(&backend, BACKEND_SCRIPT)?;
        std::fs::set_permissions(
            &backend,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )?;
        write_system_conf_with(
            system_conf,
            slot_bytes,
            &format!(
                "bootloader=custom\ndata-directory={}\nmountprefix={}\n\n[keyring]\npath={}\n\n[handlers]\nbootloader-custom-backend={}\n",
                dir.join("data").display(),
                dir.join("mnt").display(),
                keyring.display(),
                backend.display()
            ),
        )?;

        let socket = dir.join("bus.sock");
        let bus_conf = dir.join("bus.conf");
        std::fs::write(&bus_conf, bus_config(&socket))?;
        let bus = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", bus_conf.display()))
            .arg("--nofork")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting dbus-daemon")?;
        let mut started = RaucService {
            bus_address: format!("unix:path={}", socket.display()),
            system_conf: system_conf.to_path_buf(),
            dir,
            bus,
            service: None,
        };
        crate::wait_until(SERVICE_START_TIMEOUT, "the private bus", || {
            socket.exists().then_some(())
        })?;
        let log = std::fs::File::create(started.dir.join("rauc.log"))?;
        started.service = Some(
            Command::new("rauc")
                .arg(format!("--conf={}", system_conf.display()))
                .arg("service")
                .arg(format!("--override-boot-slot={booted}"))
                .env("DBUS_SYSTEM_BUS_ADDRESS", &started.bus_address)
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .context("starting rauc service")?,
        );
        crate::wait_until(SERVICE_START_TIMEOUT, "rauc's service on the bus", || {
            started
                .command(&["status"])
                .ok()?
                .status
                .success()
                .then_some(())
        })
        .with_context(|| started.log())?;
        Ok(started)
    }

    /// `rauc ARGS` as a client of this service.
    pub fn command(&self, args: &[&str]) -> std::io::Result<std::process::Output> {
        Command::new("rauc")
            .args(args)
            .env("DBUS_SYSTEM_BUS_ADDRESS", &self.bus_address)
            .output()
    }

    /// The slot's boot state as the backend keeps it.
    pub fn state(&self, slot: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("state-{slot}")))
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// What the service logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("rauc.log")).unwrap_or_default()
    }
}

impl Drop for RaucService {
    fn drop(&mut self) {
        for child in self
            .service
            .iter_mut()
            .chain(std::iter::once(&mut self.bus))
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// rauc's `custom` bootloader backend for [`RaucService`]: each slot's state in a file beside
/// it, the primary slot likewise.
const BACKEND_SCRIPT: &str = r#"#!/bin/sh
dir=$(dirname "$0")
case "$1" in
  get-primary) cat "$dir/primary" 2>/dev/null || echo A ;;
  set-primary) echo "$2" > "$dir/primary" ;;
  get-state) cat "$dir/state-$2" ;;
  set-state) echo "$3" > "$dir/state-$2" ;;
  *) exit 1 ;;
esac
"#;

/// A system bus's policy for one private bus at `socket`: root owns rauc's name and talks.
fn bus_config(socket: &Path) -> String {
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="root"/>
    <allow own="de.pengutronix.rauc"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"#,
        socket.display()
    )
}
