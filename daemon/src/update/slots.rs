//! The box's root slots as `rauc status --detailed --output-format=json` reports them: which
//! one booted, which are marked good, what version each holds. The install judges from this
//! whether the booted slot is blessed, and which slot it writes; the boot's health check
//! records it in `boot.json` for the daemon.

use serde::Deserialize;

use super::records::SlotRecord;

/// The class of the root slots in rauc's system.conf (`[slot.rootfs.N]`).
pub const ROOT_SLOT_CLASS: &str = "rootfs";
/// rauc's boot status of a slot that may boot.
pub const GOOD: &str = "good";

/// One root slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// rauc's name (`rootfs.1`).
    pub name: String,
    /// The bootname (`B`).
    pub bootname: String,
    /// The device (or file) rauc writes.
    pub device: String,
    /// rauc's boot status, `good` or `bad` (as the bootloader backend answers).
    pub boot_status: Option<String>,
    /// The version rauc last installed into it.
    pub version: Option<String>,
}

/// What rauc says about the slots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotStatus {
    /// The booted slot's bootname, as rauc found it (`rauc.slot=`).
    pub booted: Option<String>,
    /// The root slots, in rauc's order.
    pub slots: Vec<Slot>,
}

/// Why rauc's status could not be read.
#[derive(Debug, thiserror::Error)]
#[error("rauc status printed no status renkei understands: {0}")]
pub struct StatusParseError(String);

#[derive(Deserialize)]
struct StatusJson {
    #[serde(default)]
    booted: Option<String>,
    #[serde(default)]
    slots: Vec<std::collections::BTreeMap<String, SlotJson>>,
}

#[derive(Deserialize)]
struct SlotJson {
    #[serde(default)]
    class: Option<String>,
    #[serde(default)]
    device: Option<String>,
    #[serde(default)]
    bootname: Option<String>,
    #[serde(default)]
    boot_status: Option<String>,
    #[serde(default)]
    slot_status: Option<SlotStatusJson>,
}

#[derive(Deserialize)]
struct SlotStatusJson {
    #[serde(default)]
    bundle: Option<BundleJson>,
}

#[derive(Deserialize)]
struct BundleJson {
    #[serde(default)]
    version: Option<String>,
}

impl SlotStatus {
    /// Parses rauc's JSON (`slots` is a list of one-key objects, `{"rootfs.0": {...}}`); only
    /// root slots with a bootname count.
    pub fn parse(json: &[u8]) -> Result<SlotStatus, StatusParseError> {
        let parsed: StatusJson =
            serde_json::from_slice(json).map_err(|e| StatusParseError(e.to_string()))?;
        let mut slots: Vec<Slot> = parsed
            .slots
            .into_iter()
            .flatten()
            .filter(|(_, slot)| slot.class.as_deref() == Some(ROOT_SLOT_CLASS))
            .filter_map(|(name, slot)| {
                Some(Slot {
                    name,
                    bootname: slot.bootname.filter(|b| !b.is_empty())?,
                    device: slot.device.unwrap_or_default(),
                    boot_status: slot.boot_status,
                    version: slot
                        .slot_status
                        .and_then(|s| s.bundle)
                        .and_then(|b| b.version),
                })
            })
            .collect();
        slots.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(SlotStatus {
            booted: parsed.booted.filter(|b| !b.is_empty()),
            slots,
        })
    }

    /// The booted root slot, when rauc knows it.
    pub fn booted_slot(&self) -> Option<&Slot> {
        let booted = self.booted.as_deref()?;
        self.slots.iter().find(|s| s.bootname == booted)
    }

    /// The slot an install writes: the root slot that did not boot (with two slots, the other).
    pub fn inactive_slot(&self) -> Option<&Slot> {
        let booted = self.booted_slot()?;
        let mut others = self.slots.iter().filter(|s| s.name != booted.name);
        let target = others.next()?;
        others.next().is_none().then_some(target)
    }

    /// Why the booted slot may not be the fallback of an install, if it may not: it must be
    /// known and marked good.
    pub fn unblessed(&self) -> Option<String> {
        match self.booted_slot() {
            None => Some(format!(
                "rauc does not know the booted slot ({:?} among {:?})",
                self.booted,
                self.slots.iter().map(|s| &s.bootname).collect::<Vec<_>>()
            )),
            Some(slot) if slot.boot_status.as_deref() != Some(GOOD) => Some(format!(
                "the booted slot {} is not marked good (boot status {}): it has not passed its health check",
                slot.bootname,
                slot.boot_status.as_deref().unwrap_or("unknown")
            )),
            Some(_) => None,
        }
    }

    /// The slots as `boot.json` records them.
    pub fn records(&self) -> Vec<SlotRecord> {
        self.slots
            .iter()
            .map(|slot| SlotRecord {
                bootname: slot.bootname.clone(),
                state: match slot.boot_status.as_deref() {
                    Some(GOOD) => GOOD.to_string(),
                    _ => "bad".to_string(),
                },
                booted: self.booted.as_deref() == Some(slot.bootname.as_str()),
                version: slot.version.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What rauc 1.8 prints (`rauc status --detailed --output-format=json`) on the image.
    const RAUC_STATUS: &str = r#"{"compatible":"renkei-x86_64","variant":"","booted":"A","boot_primary":"rootfs.0","slots":[{"rootfs.1":{"class":"rootfs","device":"/dev/disk/by-partuuid/b","type":"ext4","bootname":"B","state":"inactive","parent":null,"mountpoint":null,"boot_status":"bad","slot_status":{"bundle":{"compatible":"renkei-x86_64","version":"0.1.0.1"},"status":"ok"}}},{"efi.0":{"class":"efi","device":"/dev/sda1","type":"vfat","bootname":null,"state":"inactive","parent":null,"mountpoint":null,"boot_status":null}},{"rootfs.0":{"class":"rootfs","device":"/dev/disk/by-partuuid/a","type":"ext4","bootname":"A","state":"booted","parent":null,"mountpoint":"/","boot_status":"good"}}]}"#;

    #[test]
    fn avl5_rauc_status_gives_the_booted_slot_its_blessing_and_the_install_target() {
        let status = SlotStatus::parse(RAUC_STATUS.as_bytes()).expect("parsed");
        assert_eq!(status.slots.len(), 2, "only root slots: {status:?}");
        assert_eq!(
            status.booted_slot().map(|s| s.name.as_str()),
            Some("rootfs.0")
        );
        assert_eq!(
            status.inactive_slot().map(|s| s.bootname.as_str()),
            Some("B")
        );
        assert_eq!(status.unblessed(), None);
        let records = status.records();
        assert_eq!(records[0].bootname, "A");
        assert!(records[0].booted);
        assert_eq!(records[0].state, "good");
        assert_eq!(records[1].version.as_deref(), Some("0.1.0.1"));
        assert_eq!(records[1].state, "bad");

        let trial = RAUC_STATUS
            .replace("\"booted\":\"A\"", "\"booted\":\"B\"")
            .replace(
                "\"bootname\":\"B\",\"state\":\"inactive\"",
                "\"bootname\":\"B\",\"state\":\"booted\"",
            );
        let trial = SlotStatus::parse(trial.as_bytes()).expect("parsed");
        let why = trial.unblessed().expect("B is not blessed");
        assert!(why.contains("B is not marked good"), "{why}");

        let unknown = SlotStatus::parse(br#"{"booted":null,"slots":[]}"#).expect("parsed");
        assert!(unknown.unblessed().is_some());
        assert!(unknown.inactive_slot().is_none());
        assert!(
            SlotStatus::parse(b"rauc: error").is_err(),
            "no panic on rubbish"
        );
    }
}
