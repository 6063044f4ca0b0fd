//! What the box says about its firmware: the running version, the slot it booted, the slots,
//! the armed bundle, an install or trial boot under way, and the last result.

use serde::Serialize;

use super::records::{BootRecord, InstallingRecord, SlotRecord, TrialRecord};
use super::spool::{PendingInstall, Spool, UpdateResult};
use super::system::BOOT_ID_FILE;
use crate::firmware_version::FirmwareVersion;

/// The running image's release file; the image build writes `IMAGE_VERSION` into it.
pub const OS_RELEASE: &str = "/etc/os-release";
/// The kernel command line, where RAUC's boot entries put `rauc.slot=`.
pub const KERNEL_CMDLINE: &str = "/proc/cmdline";
/// Shown when the boot entry names no slot (a development machine, an image before slots).
pub const UNKNOWN_SLOT: &str = "unknown";

/// The answer of `GET /v1/update`.
#[derive(Debug, Clone, Serialize)]
pub struct UpdateStatus {
    /// The running firmware's version (`IMAGE_VERSION`).
    pub firmware_version: String,
    /// The same, under its first name (kept for the operator's tools of the first round).
    pub running_version: String,
    /// The slot booted (`rauc.slot=` on the kernel command line), or `unknown`.
    pub booted_slot: String,
    /// The root slots as this boot's health check found them (`boot.json`); empty until it
    /// has run in this boot.
    pub slots: Vec<SlotRecord>,
    /// Whether this boot's health check has run (`boot.json` of this boot): until then the box
    /// takes no bundle.
    pub checked_this_boot: bool,
    /// A written slot waiting for (or on) its one trial boot.
    pub trial: Option<TrialRecord>,
    /// An install running, with rauc's latest step, or one cut off by a power loss.
    pub installing: Option<InstallingRecord>,
    /// `update.compatible`.
    pub compatible: String,
    /// `update.max_bundle_bytes`.
    pub max_bundle_bytes: u64,
    /// The bundle waiting for its install.
    pub pending: Option<PendingInstall>,
    /// The last bundle's outcome.
    pub last_result: Option<UpdateResult>,
}

/// What the status page shows about the firmware.
#[derive(Debug, Clone, Serialize)]
pub struct FirmwareSummary {
    /// The running firmware's version.
    pub version: String,
    /// The slot booted, or `unknown`.
    pub booted_slot: String,
    /// The last update's outcome, when the box takes updates and had one.
    pub last_result: Option<UpdateResult>,
}

/// The firmware block of the status document; `spool` is the update spool when the box takes
/// updates.
pub fn firmware_summary(spool: Option<&Spool>) -> FirmwareSummary {
    FirmwareSummary {
        version: running_version().to_string(),
        booted_slot: booted_slot_now(),
        last_result: spool.and_then(Spool::last_result),
    }
}

/// `boot.json` when it was written in this boot.
pub fn boot_of_this_boot(spool: &Spool) -> Option<BootRecord> {
    let this_boot = std::fs::read_to_string(BOOT_ID_FILE).ok()?;
    spool
        .boot()
        .filter(|boot| !boot.boot_id.is_empty() && boot.boot_id == this_boot.trim())
}

/// The running firmware's version: `IMAGE_VERSION` of the image's os-release when it is a
/// version the box can order, else the daemon's own version (the image and the daemon are
/// built together).
pub fn running_version() -> FirmwareVersion {
    let from_image = std::fs::read_to_string(OS_RELEASE)
        .ok()
        .and_then(|text| image_version(&text));
    let own = env!("CARGO_PKG_VERSION");
    from_image
        .or_else(|| FirmwareVersion::parse(own).ok())
        .unwrap_or_else(FirmwareVersion::zero)
}

/// `IMAGE_VERSION=` of an os-release text (quotes removed), if it parses.
pub fn image_version(os_release: &str) -> Option<FirmwareVersion> {
    os_release.lines().find_map(|line| {
        let value = line.strip_prefix("IMAGE_VERSION=")?;
        FirmwareVersion::parse(value.trim().trim_matches('"').trim_matches('\'')).ok()
    })
}

/// The slot `rauc.slot=` names on a kernel command line.
pub fn booted_slot(cmdline: &str) -> Option<String> {
    cmdline
        .split_ascii_whitespace()
        .find_map(|word| word.strip_prefix("rauc.slot="))
        .filter(|slot| !slot.is_empty())
        .map(str::to_string)
}

/// The slot this boot came from, or [`UNKNOWN_SLOT`].
pub fn booted_slot_now() -> String {
    std::fs::read_to_string(KERNEL_CMDLINE)
        .ok()
        .and_then(|c| booted_slot(&c))
        .unwrap_or_else(|| UNKNOWN_SLOT.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avl5_booted_slot_and_image_version_are_read_from_their_files() {
        assert_eq!(
            booted_slot("BOOT_IMAGE=/vmlinuz root=PARTLABEL=root-b rauc.slot=B quiet"),
            Some("B".to_string())
        );
        assert_eq!(booted_slot("root=/dev/sda2 quiet"), None);
        assert_eq!(booted_slot("rauc.slot= quiet"), None);
        let release = "ID=debian\nIMAGE_ID=renkei\nIMAGE_VERSION=\"2026.12.1\"\n";
        assert_eq!(
            image_version(release).map(|v| v.to_string()),
            Some("2026.12.1".into())
        );
        assert_eq!(image_version("IMAGE_VERSION=nightly\n"), None);
        assert_eq!(image_version("ID=debian\n"), None);
    }
}
