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

/// The rauc system.conf a lab box with spool `spool_dir` reads (absent unless a test writes
/// one with [`write_system_conf`]).
pub fn lab_system_conf(spool_dir: &Path) -> PathBuf {
    spool_dir.with_file_name("rauc-system.conf")
}

/// Writes the rauc system.conf of a lab box: two root slots A and B whose devices are regular
/// files of `slot_bytes` each, beside it.
pub fn write_system_conf(system_conf: &Path, slot_bytes: u64) -> anyhow::Result<()> {
    let dir = system_conf
        .parent()
        .context("a system.conf path has a folder")?;
    std::fs::create_dir_all(dir)?;
    let mut text = format!("[system]\ncompatible={LAB_COMPATIBLE}\nbootloader=custom\n");
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
