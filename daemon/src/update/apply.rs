//! `renkei update apply`: writes the armed bundle to the inactive root slot (as root, through
//! `rauc install`), so that the box boots it once next.
//!
//! It runs only from a blessed slot: the slot the box runs must be marked good and no trial
//! boot may be waiting for its verdict, or the inactive slot would be the only way back and
//! writing it would leave nothing to fall back to. While rauc writes, `installing.json` holds
//! rauc's latest step; a power loss leaves it for the next boot to report (`interrupted`).
//! Once written, `trial.json` names the slot for the next boot's health check.

use std::path::PathBuf;

use super::records::{
    InstallingRecord, Outcome, Progress, TrialRecord, INSTALLING_RECORD, TRIAL_RECORD,
};
use super::spool::{Spool, UpdateResult, PENDING_BUNDLE, PENDING_RECORD};
use super::system::{System, SystemError};
use crate::durable::FileError;
use crate::firmware_version::FirmwareVersion;

/// The refusal word of an install from a slot that is not blessed.
pub const NOT_BLESSED: &str = "not_blessed";

/// What `apply` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// No bundle is armed.
    NothingPending,
    /// The slot was written; the box boots it once next.
    Installed(TrialRecord),
    /// Refused before anything was written (`not_blessed`): the bundle is removed, the
    /// operator pushes it again once the box runs a blessed slot.
    Refused(String),
    /// rauc could not write the slot (`install_failed`); the bundle is removed.
    Failed(String),
}

/// Why `apply` could not finish its own bookkeeping (the spool could not be written).
#[derive(Debug, thiserror::Error)]
#[error("the update spool cannot be written: {0}")]
pub struct ApplyError(#[from] FileError);

/// Installs the armed bundle of `spool` with `system`. `running` is the firmware version now
/// running (the fallback's). Nothing is rebooted here (the caller does, after `Installed`).
pub async fn apply(
    spool: &Spool,
    system: &impl System,
    running: &FirmwareVersion,
) -> Result<Applied, ApplyError> {
    let Some(pending) = spool.pending() else {
        return Ok(Applied::NothingPending);
    };
    let result = |outcome: Outcome, reason: Option<&str>, slot: Option<&str>, message: String| {
        UpdateResult {
            result: outcome.as_str().to_string(),
            version: Some(pending.version.clone()),
            reason: reason.map(str::to_string),
            message,
            slot: slot.map(str::to_string),
            by: pending.by.clone(),
            at: super::unix_now(),
        }
    };
    let drop_bundle = || -> Result<(), FileError> {
        spool.remove(PENDING_BUNDLE)?;
        spool.remove(PENDING_RECORD)
    };

    if let Some(trial) = spool.trial() {
        let why = format!(
            "slot {} runs {} on its trial boot and is not blessed yet: installing now would overwrite slot {}, the only way back",
            trial.slot, trial.version, trial.from_slot
        );
        return refuse(spool, why, result, drop_bundle);
    }
    let status = match system.slot_status().await {
        Ok(status) => status,
        Err(err) => {
            let why = format!("cannot tell whether the booted slot is blessed: {err}");
            return refuse(spool, why, result, drop_bundle);
        }
    };
    if let Some(why) = status.unblessed() {
        return refuse(spool, why, result, drop_bundle);
    }
    let (Some(booted), Some(target)) = (status.booted_slot(), status.inactive_slot()) else {
        let why = "rauc names no single inactive root slot to write".to_string();
        return fail(spool, why, None, result, drop_bundle);
    };
    let (from_slot, slot) = (booted.bootname.clone(), target.bootname.clone());

    let mut installing = InstallingRecord {
        version: pending.version.clone(),
        slot: slot.clone(),
        started_at: super::unix_now(),
        progress: None,
    };
    spool.write_record(INSTALLING_RECORD, &installing)?;
    tracing::info!(version = %pending.version, slot = %slot, "installing the firmware update");
    let bundle: PathBuf = spool.dir().join(PENDING_BUNDLE);
    let mut on_progress = |progress: Progress| {
        tracing::info!(percent = progress.percent, step = %progress.step, "rauc install");
        installing.progress = Some(progress);
        if let Err(err) = spool.write_record(INSTALLING_RECORD, &installing) {
            tracing::warn!(error = %err, "cannot note the install's progress");
        }
    };
    match system.install(&bundle, &mut on_progress).await {
        Ok(()) => {
            let trial = TrialRecord {
                version: pending.version.clone(),
                slot: slot.clone(),
                from_slot,
                from_version: running.to_string(),
                installed_at: super::unix_now(),
            };
            // The trial record first: from here the next boot knows what it is for.
            spool.write_record(TRIAL_RECORD, &trial)?;
            drop_bundle()?;
            spool.remove(INSTALLING_RECORD)?;
            spool.record_result(&result(
                Outcome::Installed,
                None,
                Some(&slot),
                format!(
                    "written to slot {slot}; the box boots it once and keeps it only if its health check passes"
                ),
            ))?;
            tracing::info!(version = %trial.version, slot = %trial.slot, "firmware update installed; slot boots once next");
            Ok(Applied::Installed(trial))
        }
        Err(err) => {
            let why = match &err {
                SystemError::Failed { words, .. } => format!("rauc install: {words}"),
                other => other.to_string(),
            };
            fail(spool, why, Some(&slot), result, drop_bundle)
        }
    }
}

fn refuse(
    spool: &Spool,
    why: String,
    result: impl Fn(Outcome, Option<&str>, Option<&str>, String) -> UpdateResult,
    drop_bundle: impl Fn() -> Result<(), FileError>,
) -> Result<Applied, ApplyError> {
    tracing::warn!(reason = NOT_BLESSED, error = %why, "firmware update refused");
    drop_bundle()?;
    spool.record_result(&result(
        Outcome::Refused,
        Some(NOT_BLESSED),
        None,
        why.clone(),
    ))?;
    Ok(Applied::Refused(why))
}

fn fail(
    spool: &Spool,
    why: String,
    slot: Option<&str>,
    result: impl Fn(Outcome, Option<&str>, Option<&str>, String) -> UpdateResult,
    drop_bundle: impl Fn() -> Result<(), FileError>,
) -> Result<Applied, ApplyError> {
    tracing::error!(error = %why, "firmware update install failed");
    drop_bundle()?;
    spool.remove(INSTALLING_RECORD)?;
    spool.record_result(&result(Outcome::InstallFailed, None, slot, why.clone()))?;
    Ok(Applied::Failed(why))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::update::spool::{PendingInstall, LAST_RESULT};
    use crate::update::system::given::GivenSystem;

    fn running() -> FirmwareVersion {
        FirmwareVersion::parse("0.1.0").expect("version")
    }

    /// A spool with an armed bundle of 0.1.0.1 from the operator.
    fn armed() -> (tempfile::TempDir, Spool) {
        let dir = tempfile::tempdir().expect("dir");
        let spool = Spool::new(dir.path().join("update"));
        spool.ensure_dir().expect("dir");
        std::fs::write(spool.dir().join(PENDING_BUNDLE), b"bundle").expect("bundle");
        spool
            .write_record(
                PENDING_RECORD,
                &PendingInstall {
                    version: "0.1.0.1".into(),
                    compatible: "renkei-x86_64".into(),
                    by: "operator".into(),
                    accepted_at: 1,
                    bytes: 6,
                },
            )
            .expect("record");
        (dir, spool)
    }

    fn names(spool: &Spool) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(spool.dir())
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn avl5_apply_installs_with_progress_then_leaves_the_trial_record() {
        let (_dir, spool) = armed();
        let mut system = GivenSystem::new(spool.dir(), "A", &["A"]);
        let copying = Progress {
            percent: 40,
            step: "Copying image to rootfs.1".into(),
        };
        system.install = (vec![copying.clone()], Ok(()));
        let applied = apply(&spool, &system, &running()).await.expect("applied");
        let Applied::Installed(trial) = applied else {
            panic!("{applied:?}");
        };
        assert_eq!((trial.slot.as_str(), trial.from_slot.as_str()), ("B", "A"));
        assert_eq!(trial.from_version, "0.1.0");
        assert_eq!(
            *system.installs.borrow(),
            [spool.dir().join(PENDING_BUNDLE)]
        );
        let seen = system.installing_seen.borrow();
        let during = seen[0].as_ref().expect("installing.json while rauc runs");
        assert_eq!(during.slot, "B");
        assert_eq!(during.progress.as_ref(), Some(&copying));
        assert_eq!(spool.trial(), Some(trial));
        let last = spool.last_result().expect("last");
        assert_eq!(last.result, "installed");
        assert_eq!(last.by, "operator");
        assert_eq!(names(&spool), [LAST_RESULT, TRIAL_RECORD]);
    }

    #[tokio::test]
    async fn avl5_apply_refuses_not_blessed_while_a_trial_waits_or_the_booted_slot_is_not_good() {
        let (_dir, spool) = armed();
        let trial = TrialRecord {
            version: "0.1.0.1".into(),
            slot: "B".into(),
            from_slot: "A".into(),
            from_version: "0.1.0".into(),
            installed_at: 1,
        };
        spool.write_record(TRIAL_RECORD, &trial).expect("trial");
        let system = GivenSystem::new(spool.dir(), "A", &["A"]);
        let applied = apply(&spool, &system, &running()).await.expect("applied");
        assert!(
            matches!(applied, Applied::Refused(ref why) if why.contains("trial boot")),
            "{applied:?}"
        );
        assert!(system.installs.borrow().is_empty(), "nothing written");
        assert_eq!(
            spool.last_result().and_then(|r| r.reason).as_deref(),
            Some(NOT_BLESSED)
        );
        assert_eq!(
            names(&spool),
            [LAST_RESULT, TRIAL_RECORD],
            "the bundle is dropped"
        );

        // Booted from B, which is not marked good: B's own trial has not passed.
        let (_dir, spool) = armed();
        let system = GivenSystem::new(spool.dir(), "B", &["A"]);
        let applied = apply(&spool, &system, &running()).await.expect("applied");
        assert!(
            matches!(applied, Applied::Refused(ref why) if why.contains("not marked good")),
            "{applied:?}"
        );
        assert!(system.installs.borrow().is_empty());
        assert_eq!(names(&spool), [LAST_RESULT]);
        assert_eq!(
            apply(&spool, &system, &running()).await.expect("again"),
            Applied::NothingPending
        );
    }

    #[tokio::test]
    async fn avl5_apply_reports_install_failed_with_rauc_s_words_and_drops_the_bundle() {
        let (_dir, spool) = armed();
        let mut system = GivenSystem::new(spool.dir(), "A", &["A", "B"]);
        system.install = (Vec::new(), Err("Failed mounting bundle: dm-verity".into()));
        let applied = apply(&spool, &system, &running()).await.expect("applied");
        assert!(
            matches!(applied, Applied::Failed(ref why) if why.contains("dm-verity")),
            "{applied:?}"
        );
        let last = spool.last_result().expect("last");
        assert_eq!(last.result, "install_failed");
        assert_eq!(last.slot.as_deref(), Some("B"));
        assert_eq!(names(&spool), [LAST_RESULT]);
    }
}
