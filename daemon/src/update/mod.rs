//! Signed firmware updates (AVL-5, OPS-2): RAUC bundles the operator pushes through the
//! management API or an installer hands to `renkei update install`.
//!
//! renkei does not parse or verify a bundle: the `rauc` tool does ([`rauc`]), as charon does
//! IKE. renkei decides whether the box takes it: the signature chains to the update CA, the
//! manifest names this box's `compatible`, its version is newer than the running firmware
//! (or exactly the one a signed config's `update.allow_downgrade_to` names), and no other
//! bundle is waiting, its image fits the root slot, and the running slot is blessed (so the
//! slot written is never the only way back). A bundle that passes is armed in the spool
//! ([`spool`]); `renkei update apply` (root) writes it to the inactive slot, and the next
//! boot's health check keeps the slot or falls back (docs/update.md).
//!
//! - [`rauc`]: `rauc info --keyring`, the verified manifest.
//! - [`slots`]: `rauc status`, the root slots and which is blessed.
//! - [`slot_size`]: the root slots' size from rauc's system.conf.
//! - [`spool`]: incoming and armed bundles, the last result, on disk.
//! - [`records`]: what the install and the boot's check leave beside them.
//! - [`system`]: the rauc and systemctl calls of the install and the boot's check.
//! - [`apply`]: `renkei update apply`, the install.
//! - [`health`]: the health conditions of a trial boot.
//! - [`boot`]: `renkei update health-check`, each boot's verdict.
//! - [`status`]: what `GET /v1/update`, `renkei update status` and the page show.

pub mod apply;
pub mod boot;
pub mod health;
pub mod keyring;
pub mod rauc;
pub mod records;
pub mod slot_size;
pub mod slots;
pub mod spool;
pub mod status;
pub mod system;

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::{Config, UpdateConfig};
use crate::durable::FileError;
use crate::firmware_version::{FirmwareVersion, VersionError};
use crate::state::events::{EventLog, Occurrence, UpdateRefusal};
use rauc::InfoError;
use records::{Outcome, BOOT_RECORD, INSTALLING_RECORD, TRIAL_RECORD};
use slot_size::SlotSizeError;
use spool::{ArmError, IncomingBundle, PendingInstall, Spool, UpdateResult};

/// Who a local install is noted as.
pub const LOCAL_INSTALLER: &str = "local";

/// Why a bundle was refused. Nothing is armed; the text is the answer and the event.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The box has no `[update]` section.
    #[error("this box takes no firmware updates: its config has no [update] section")]
    NotConfigured,
    /// Another bundle waits for its install.
    #[error("bundle {version} is already waiting for its install; one update at a time")]
    Pending {
        /// The waiting bundle's version.
        version: String,
    },
    /// Another bundle is being received or checked.
    #[error("another bundle is being received or checked; one update at a time")]
    Busy,
    /// Larger than `update.max_bundle_bytes`.
    #[error("the bundle is larger than update.max_bundle_bytes ({limit_bytes} bytes)")]
    TooLarge {
        /// The limit.
        limit_bytes: u64,
    },
    /// The upload broke off, or was too slow.
    #[error("the upload failed: {0}")]
    Upload(String),
    /// rauc did not verify it.
    #[error("{0}")]
    NotVerified(String),
    /// For another compatible string.
    #[error("the bundle is for {offered:?}; this box is {expected:?} (update.compatible)")]
    Incompatible {
        /// The manifest's compatible.
        offered: String,
        /// `update.compatible`.
        expected: String,
    },
    /// No version in the manifest.
    #[error("the bundle's manifest has no version")]
    NoVersion,
    /// A version the box cannot order.
    #[error("{0}")]
    BadVersion(VersionError),
    /// Not newer, and not the forced downgrade.
    #[error("version {offered} is not newer than the running firmware {running} (a downgrade needs update.allow_downgrade_to = {offered:?} in a signed config)")]
    NotNewer {
        /// The bundle's version.
        offered: String,
        /// The running firmware's.
        running: String,
    },
    /// The running slot is not blessed, or its boot's check has not run: the slot an install
    /// writes would be the only way back.
    #[error("{0}")]
    NotBlessed(String),
    /// The bundle's image is larger than a root slot.
    #[error("the bundle's image is {image_bytes} bytes; the root slot holds {slot_bytes} bytes")]
    TooLargeForSlot {
        /// The largest image in the bundle.
        image_bytes: u64,
        /// The smallest root slot.
        slot_bytes: u64,
    },
    /// rauc could not be run.
    #[error("{0}")]
    Tool(InfoError),
    /// The spool could not be written.
    #[error("the box cannot keep the bundle: {0}")]
    Spool(FileError),
}

impl Refusal {
    /// The stable word of the event and the answer.
    pub fn reason(&self) -> UpdateRefusal {
        match self {
            Refusal::NotConfigured | Refusal::Tool(_) | Refusal::Spool(_) => {
                UpdateRefusal::BoxFailed
            }
            Refusal::Pending { .. } | Refusal::Busy => UpdateRefusal::Pending,
            Refusal::TooLarge { .. } => UpdateRefusal::TooLarge,
            Refusal::Upload(_) => UpdateRefusal::UploadFailed,
            Refusal::NotVerified(_) => UpdateRefusal::NotVerified,
            Refusal::Incompatible { .. } => UpdateRefusal::Incompatible,
            Refusal::NoVersion | Refusal::BadVersion(_) => UpdateRefusal::BadVersion,
            Refusal::NotNewer { .. } => UpdateRefusal::NotNewer,
            Refusal::NotBlessed(_) => UpdateRefusal::NotBlessed,
            Refusal::TooLargeForSlot { .. } => UpdateRefusal::TooLargeForSlot,
        }
    }

    /// The HTTP status of the management API's answer.
    pub fn http_status(&self) -> u16 {
        match self {
            Refusal::NotConfigured => 404,
            Refusal::Pending { .. } | Refusal::Busy | Refusal::NotBlessed(_) => 409,
            Refusal::TooLarge { .. } => 413,
            Refusal::Upload(_) => 400,
            Refusal::NotVerified(_) => 403,
            Refusal::Incompatible { .. }
            | Refusal::NoVersion
            | Refusal::BadVersion(_)
            | Refusal::NotNewer { .. }
            | Refusal::TooLargeForSlot { .. } => 422,
            Refusal::Tool(_) | Refusal::Spool(_) => 500,
        }
    }
}

/// The box's update intake, from its running config.
#[derive(Debug, Clone)]
pub struct Intake {
    update: UpdateConfig,
    spool: Spool,
    running: FirmwareVersion,
}

impl Intake {
    /// The intake of `config`, or `None` when it has no `[update]` section.
    pub fn new(config: &Config) -> Option<Intake> {
        let update = config.update.clone()?;
        let spool = Spool::new(config.update_spool_dir()?);
        Some(Intake {
            update,
            spool,
            running: status::running_version(),
        })
    }

    /// The largest bundle taken.
    pub fn max_bundle_bytes(&self) -> u64 {
        self.update.max_bundle_bytes
    }

    /// The spool.
    pub fn spool(&self) -> &Spool {
        &self.spool
    }

    /// Refused before a byte is read when a bundle already waits, or the box runs a slot that
    /// is not blessed.
    pub fn refuse_before_receiving(&self) -> Result<(), Refusal> {
        match self.spool.pending() {
            Some(pending) => Err(Refusal::Pending {
                version: pending.version,
            }),
            None => self.refuse_if_not_blessed(),
        }
    }

    /// Refused while an install runs or was cut off, while a trial boot waits for its
    /// verdict, or while this boot's health check has not run (`boot.json` missing or of
    /// another boot): in each the inactive slot is, or may be, the only way back.
    pub fn refuse_if_not_blessed(&self) -> Result<(), Refusal> {
        let refuse = |why: String| Err(Refusal::NotBlessed(why));
        if self.spool.has(INSTALLING_RECORD) {
            return refuse(format!(
                "an install is running or was cut off ({INSTALLING_RECORD}); wait for it, or for the next boot to report it"
            ));
        }
        if self.spool.has(TRIAL_RECORD) {
            let slot = self.spool.trial().map_or_else(
                || "unknown".to_string(),
                |t| format!("{} ({})", t.slot, t.version),
            );
            return refuse(format!(
                "slot {slot} waits for the health check of its trial boot; the running slot is not blessed yet"
            ));
        }
        let this_boot = std::fs::read_to_string(system::BOOT_ID_FILE)
            .map(|id| id.trim().to_string())
            .unwrap_or_default();
        match self.spool.boot() {
            None => refuse(format!(
                "this boot's health check has not run yet (no {BOOT_RECORD}): the running slot is not known to be blessed"
            )),
            Some(boot) if boot.boot_id != this_boot => refuse(format!(
                "this boot's health check has not run yet ({BOOT_RECORD} is of an earlier boot): the running slot is not known to be blessed"
            )),
            Some(_) => Ok(()),
        }
    }

    /// Refused when the bundle's largest image is larger than the smallest root slot of
    /// `update.system_conf`; skipped (with a log line) on a machine without one.
    fn refuse_if_too_large_for_slot(&self, image_bytes: Option<u64>) -> Result<(), Refusal> {
        let Some(image_bytes) = image_bytes else {
            return Ok(());
        };
        match slot_size::smallest_root_slot_bytes(&self.update.system_conf) {
            Ok(slot_bytes) if image_bytes > slot_bytes => Err(Refusal::TooLargeForSlot {
                image_bytes,
                slot_bytes,
            }),
            Ok(_) => Ok(()),
            Err(SlotSizeError::NoSystemConf(path)) => {
                tracing::info!(system_conf = %path.display(), "no rauc system.conf: the image's size is not checked against a slot");
                Ok(())
            }
            Err(err) => {
                tracing::warn!(error = %err, "the root slots' size is unknown: the image's size is not checked against a slot");
                Ok(())
            }
        }
    }

    /// Checks the bundle written to `incoming` and arms it; a refused bundle's file is removed.
    pub async fn check_and_arm(
        &self,
        mut incoming: IncomingBundle,
        by: &str,
    ) -> Result<PendingInstall, Refusal> {
        let bytes = incoming.finish().await.map_err(Refusal::Spool)?;
        if bytes > self.update.max_bundle_bytes {
            return Err(Refusal::TooLarge {
                limit_bytes: self.update.max_bundle_bytes,
            });
        }
        let info = rauc::verified_info(
            incoming.path(),
            &self.update.ca_file,
            &self.update.system_conf,
        )
        .await
        .map_err(|err| match err {
            InfoError::NotVerified(_) | InfoError::Output(_) => {
                Refusal::NotVerified(err.to_string())
            }
            InfoError::Tool(_) | InfoError::TimedOut => Refusal::Tool(err),
        })?;
        if info.compatible != self.update.compatible {
            return Err(Refusal::Incompatible {
                offered: info.compatible,
                expected: self.update.compatible.clone(),
            });
        }
        let text = info.version.ok_or(Refusal::NoVersion)?;
        let offered = FirmwareVersion::parse(&text).map_err(Refusal::BadVersion)?;
        judge_version(
            &offered,
            &self.running,
            self.update.allow_downgrade_to.as_deref(),
        )?;
        self.refuse_if_too_large_for_slot(info.largest_image_bytes)?;
        // Again at arming: a boot's state may have changed while the bundle arrived.
        self.refuse_if_not_blessed()?;
        let record = PendingInstall {
            version: offered.to_string(),
            compatible: info.compatible,
            by: by.to_string(),
            accepted_at: unix_now(),
            bytes,
        };
        match self.spool.arm(incoming, &record) {
            Ok(()) => Ok(record),
            Err(ArmError::Pending) => Err(Refusal::Pending {
                version: self
                    .spool
                    .pending()
                    .map(|p| p.version)
                    .unwrap_or_else(|| "unknown".into()),
            }),
            Err(ArmError::File(err)) => Err(Refusal::Spool(err)),
        }
    }

    /// Notes an outcome: the last result on disk, the log, and `events` when the daemon has
    /// them (a local install has only the log).
    pub fn record(
        &self,
        outcome: &Result<PendingInstall, Refusal>,
        by: &str,
        events: Option<&EventLog>,
    ) {
        let (result, occurrence) = match outcome {
            Ok(pending) => {
                tracing::info!(version = %pending.version, by, "firmware update accepted");
                (
                    UpdateResult {
                        result: Outcome::Accepted.as_str().into(),
                        version: Some(pending.version.clone()),
                        reason: None,
                        message: "verified and kept; it waits for its install".into(),
                        slot: None,
                        by: by.to_string(),
                        at: unix_now(),
                    },
                    Occurrence::UpdateAccepted {
                        version: pending.version.clone(),
                        by: by.to_string(),
                    },
                )
            }
            Err(refusal) => {
                let reason = refusal.reason();
                tracing::warn!(reason = reason.as_str(), by, error = %refusal, "firmware update refused");
                (
                    UpdateResult {
                        result: Outcome::Refused.as_str().into(),
                        version: None,
                        reason: Some(reason.as_str().to_string()),
                        message: refusal.to_string(),
                        slot: None,
                        by: by.to_string(),
                        at: unix_now(),
                    },
                    Occurrence::UpdateRefused {
                        reason,
                        by: by.to_string(),
                        error: refusal.to_string(),
                    },
                )
            }
        };
        if let Err(err) = self.spool.record_result(&result) {
            tracing::warn!(error = %err, "cannot note the update's result");
        }
        if let Some(events) = events {
            events.push(occurrence);
        }
    }

    /// What `GET /v1/update` shows.
    pub fn status(&self) -> status::UpdateStatus {
        let boot = status::boot_of_this_boot(&self.spool);
        status::UpdateStatus {
            firmware_version: self.running.to_string(),
            running_version: self.running.to_string(),
            booted_slot: status::booted_slot_now(),
            checked_this_boot: boot.is_some(),
            slots: boot.map(|b| b.slots).unwrap_or_default(),
            trial: self.spool.trial(),
            installing: self.spool.installing(),
            compatible: self.update.compatible.clone(),
            max_bundle_bytes: self.update.max_bundle_bytes,
            pending: self.spool.pending(),
            last_result: self.spool.last_result(),
        }
    }
}

/// The intake of the running config, shared by the supervisor (which replaces it on every
/// apply) and the management API (which takes bundles with the one current when they arrive).
///
/// One bundle is received and checked at a time: each may be `max_bundle_bytes` large, and
/// several at once could fill the data partition the configuration lives on.
#[derive(Debug, Clone)]
pub struct IntakeHandle {
    intake: Arc<Mutex<Option<Intake>>>,
    receiving: Arc<tokio::sync::Semaphore>,
}

/// Held while a bundle is received and checked.
#[derive(Debug)]
pub struct Receiving {
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl IntakeHandle {
    /// The intake of `config`, at the daemon's start: incoming files a crash left are removed.
    pub fn of(config: &Config) -> IntakeHandle {
        let handle = IntakeHandle {
            intake: Arc::default(),
            receiving: Arc::new(tokio::sync::Semaphore::new(1)),
        };
        handle.set(config);
        if let Some(intake) = handle.current() {
            intake.spool().remove_stale();
        }
        handle
    }

    /// Follows a new running config.
    pub fn set(&self, config: &Config) {
        *self.intake.lock().unwrap_or_else(PoisonError::into_inner) = Intake::new(config);
    }

    /// The current intake, if the box takes updates.
    pub fn current(&self) -> Option<Intake> {
        self.intake
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The right to receive a bundle now, or the refusal while another one is received.
    pub fn begin(&self) -> Result<Receiving, Refusal> {
        Arc::clone(&self.receiving)
            .try_acquire_owned()
            .map(|permit| Receiving { _permit: permit })
            .map_err(|_| Refusal::Busy)
    }
}

/// `renkei update install FILE`: copies the installer's file into the spool (the box checks its
/// own copy, which nobody else can change) under the size limit, then checks and arms it.
pub async fn install_local(intake: &Intake, file: &Path) -> Result<PendingInstall, Refusal> {
    use tokio::io::AsyncReadExt as _;
    intake.refuse_before_receiving()?;
    let limit = intake.max_bundle_bytes();
    let source = tokio::fs::File::open(file)
        .await
        .map_err(|e| Refusal::Upload(format!("{}: {e}", file.display())))?;
    let declared = source
        .metadata()
        .await
        .map_err(|e| Refusal::Upload(format!("{}: {e}", file.display())))?
        .len();
    if declared > limit {
        return Err(Refusal::TooLarge { limit_bytes: limit });
    }
    let mut incoming = intake.spool().incoming().await.map_err(Refusal::Spool)?;
    let copied = tokio::io::copy(&mut source.take(limit + 1), incoming.file())
        .await
        .map_err(|e| Refusal::Upload(format!("copying {}: {e}", file.display())))?;
    if copied > limit {
        return Err(Refusal::TooLarge { limit_bytes: limit });
    }
    intake.check_and_arm(incoming, LOCAL_INSTALLER).await
}

/// The version rule: newer than the running firmware, or exactly the signed downgrade.
pub fn judge_version(
    offered: &FirmwareVersion,
    running: &FirmwareVersion,
    allow_downgrade_to: Option<&str>,
) -> Result<(), Refusal> {
    if offered > running {
        return Ok(());
    }
    let forced = allow_downgrade_to
        .and_then(|v| FirmwareVersion::parse(v).ok())
        .is_some_and(|allowed| allowed == *offered);
    if forced {
        tracing::warn!(offered = %offered, running = %running, "forced downgrade allowed by update.allow_downgrade_to");
        return Ok(());
    }
    Err(Refusal::NotNewer {
        offered: offered.to_string(),
        running: running.to_string(),
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> FirmwareVersion {
        FirmwareVersion::parse(text).expect("version")
    }

    #[tokio::test]
    async fn avl5_one_bundle_is_received_at_a_time() {
        let dir = tempfile::tempdir().expect("dir");
        let text = format!(
            "[meta]\nversion = 1\n[facility]\nname = \"clinic\"\nrole = \"viewing\"\n[paths]\nstate_dir = {:?}\n[update]\nca_file = \"/x\"\ncompatible = \"c\"\n",
            dir.path().display().to_string()
        );
        let config: Config = toml::from_str(&text).expect("config");
        let handle = IntakeHandle::of(&config);
        let first = handle.begin().expect("the first upload");
        assert!(matches!(handle.begin(), Err(Refusal::Busy)));
        drop(first);
        assert!(handle.begin().is_ok(), "free again once the first is done");
    }

    #[test]
    fn avl5_only_newer_versions_or_the_signed_downgrade_are_taken() {
        let running = v("1.4.2");
        assert!(judge_version(&v("1.4.3"), &running, None).is_ok());
        assert!(judge_version(&v("1.10"), &running, None).is_ok());
        for old in ["1.4.2", "1.4.2.0", "1.4.1", "0.9"] {
            let refused = judge_version(&v(old), &running, None);
            assert!(
                matches!(refused, Err(Refusal::NotNewer { .. })),
                "{old}: {refused:?}"
            );
        }
        assert!(judge_version(&v("1.3.0"), &running, Some("1.3")).is_ok());
        assert!(
            judge_version(&v("1.2.0"), &running, Some("1.3")).is_err(),
            "the instruction names exactly one version"
        );
        assert!(judge_version(&v("1.4.2"), &running, Some("1.4.2")).is_ok());
    }
}
