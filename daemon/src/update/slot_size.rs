//! How large a root slot is, from rauc's system.conf (`update.system_conf`): a bundle whose
//! image would not fit is refused when it arrives (`too_large_for_slot`), not when rauc fails
//! half-way through writing the slot.
//!
//! The slots are the `device=` of the `[slot.rootfs.N]` sections; a block device's size is
//! `/sys/class/block/<dev>/size` (512-byte sectors), a regular file's is its length. The bound
//! is the smallest root slot: the install writes whichever is inactive.

use std::path::{Path, PathBuf};

use super::slots::ROOT_SLOT_CLASS;

/// The kernel's block devices and their sizes.
pub const SYS_CLASS_BLOCK: &str = "/sys/class/block";
/// The unit of `/sys/class/block/<dev>/size`, whatever the device's own sector size.
const SYS_BLOCK_SECTOR_BYTES: u64 = 512;
/// A system.conf is a few hundred bytes; a larger one is not read.
const MAX_SYSTEM_CONF_BYTES: u64 = 256 * 1024;

/// Why the slots' size is not known.
#[derive(Debug, thiserror::Error)]
pub enum SlotSizeError {
    /// No system.conf: a machine without slots (the check is skipped).
    #[error("{0}: no rauc system.conf")]
    NoSystemConf(PathBuf),
    /// Unreadable, or it names no root slot.
    #[error("{path}: {message}")]
    Unreadable {
        /// The file (system.conf or a device).
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// The root slots' devices in a system.conf text.
pub fn root_slot_devices(text: &str) -> Vec<PathBuf> {
    let mut devices = Vec::new();
    let mut in_root_slot = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let mut parts = section.trim().split('.');
            in_root_slot = parts.next() == Some("slot") && parts.next() == Some(ROOT_SLOT_CLASS);
            continue;
        }
        if !in_root_slot {
            continue;
        }
        if let Some((key, value)) = line.split_once('=') {
            if key.trim() == "device" && !value.trim().is_empty() {
                devices.push(PathBuf::from(value.trim()));
            }
        }
    }
    devices
}

/// The size of the smallest root slot of the system.conf at `system_conf`, in bytes.
pub fn smallest_root_slot_bytes(system_conf: &Path) -> Result<u64, SlotSizeError> {
    let unreadable = |path: &Path, message: String| SlotSizeError::Unreadable {
        path: path.to_path_buf(),
        message,
    };
    let meta = match std::fs::metadata(system_conf) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SlotSizeError::NoSystemConf(system_conf.to_path_buf()))
        }
        Err(e) => return Err(unreadable(system_conf, e.to_string())),
    };
    if !meta.is_file() || meta.len() > MAX_SYSTEM_CONF_BYTES {
        return Err(unreadable(
            system_conf,
            format!("not a regular file of at most {MAX_SYSTEM_CONF_BYTES} bytes"),
        ));
    }
    let text =
        std::fs::read_to_string(system_conf).map_err(|e| unreadable(system_conf, e.to_string()))?;
    let devices = root_slot_devices(&text);
    if devices.is_empty() {
        return Err(unreadable(
            system_conf,
            "names no [slot.rootfs.N] device".into(),
        ));
    }
    devices
        .iter()
        .map(|device| device_bytes(device).map_err(|message| unreadable(device, message)))
        .try_fold(u64::MAX, |smallest, size| Ok(smallest.min(size?)))
}

/// A slot device's size: a block device's from sysfs, a regular file's length.
fn device_bytes(device: &Path) -> Result<u64, String> {
    use std::os::unix::fs::FileTypeExt as _;
    let meta = std::fs::metadata(device).map_err(|e| e.to_string())?;
    if meta.is_file() {
        return Ok(meta.len());
    }
    if !meta.file_type().is_block_device() {
        return Err("neither a block device nor a regular file".into());
    }
    let resolved = std::fs::canonicalize(device).map_err(|e| e.to_string())?;
    let name = resolved
        .file_name()
        .ok_or_else(|| "a block device without a name".to_string())?;
    let size_file = Path::new(SYS_CLASS_BLOCK).join(name).join("size");
    let sectors: u64 = std::fs::read_to_string(&size_file)
        .map_err(|e| format!("{}: {e}", size_file.display()))?
        .trim()
        .parse()
        .map_err(|e| format!("{}: {e}", size_file.display()))?;
    Ok(sectors.saturating_mul(SYS_BLOCK_SECTOR_BYTES))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avl5_the_smallest_root_slot_of_system_conf_bounds_the_image() {
        let dir = tempfile::tempdir().expect("dir");
        let (a, b) = (dir.path().join("a.img"), dir.path().join("b.img"));
        std::fs::File::create(&a)
            .expect("a")
            .set_len(8192)
            .expect("size");
        std::fs::File::create(&b)
            .expect("b")
            .set_len(4096)
            .expect("size");
        let conf = dir.path().join("system.conf");
        std::fs::write(
            &conf,
            format!(
                "[system]\ncompatible=x\n\n[slot.efi.0]\ndevice=/dev/null\n\n# a comment\n[slot.rootfs.0]\ndevice = {}\nbootname=A\n[slot.rootfs.1]\ndevice={}\nbootname=B\n",
                a.display(),
                b.display()
            ),
        )
        .expect("conf");
        assert_eq!(smallest_root_slot_bytes(&conf).expect("size"), 4096);

        assert!(matches!(
            smallest_root_slot_bytes(&dir.path().join("absent.conf")),
            Err(SlotSizeError::NoSystemConf(_))
        ));
        std::fs::write(&conf, "[slot.rootfs.0]\ndevice=/dev/disk/by-partuuid/\n").expect("conf");
        let err = smallest_root_slot_bytes(&conf).expect_err("a folder is no slot");
        assert!(err.to_string().contains("/dev/disk/by-partuuid/"), "{err}");
        std::fs::write(&conf, "[system]\ncompatible=x\n").expect("conf");
        assert!(smallest_root_slot_bytes(&conf).is_err());
    }
}
