//! `renkei update health-check`: what each boot makes of the update records.
//!
//! It always first writes `boot.json` (this boot's id, the booted slot, the slots as rauc
//! reports them): the daemon reads it for `GET /v1/update`, and takes no bundle until it names
//! this boot. Then:
//!
//! - `trial.json` names the booted slot: this is the new slot's one trial boot. The health
//!   conditions ([`super::health`]) must hold within `update.health_deadline_secs`: then `rauc
//!   status mark-good` makes the slot the default (`blessed`), and then only the update CA
//!   keyring the slot carries is adopted ([`super::keyring`]); else `failed_health_check`,
//!   `rauc status mark-bad` and a reboot into the old default entry.
//! - `trial.json` names another slot: the trial boot failed or never came (`fell_back`).
//! - `installing.json` is left: the power went while a slot was written (`interrupted`); the
//!   half-written bundle is dropped, the operator pushes it again.
//! - otherwise a normal boot: nothing to do. A normal boot never reboots the box, whatever its
//!   health: a hub that is down must not make a box restart.

use std::future::Future;

use super::keyring::ImageKeyring;
use super::records::{
    BootRecord, Outcome, TrialRecord, BOOT_RECORD, INSTALLING_RECORD, TRIAL_RECORD,
};
use super::spool::{Spool, UpdateResult, PENDING_BUNDLE, PENDING_RECORD};
use super::status::UNKNOWN_SLOT;
use super::system::{Mark, System};
use crate::durable::FileError;
use crate::firmware_version::FirmwareVersion;

/// Who the boot's own results are noted as.
pub const BOX_ITSELF: &str = "box";

/// What the boot's check decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No update concerned this boot.
    NormalBoot,
    /// The trial slot passed and is the default now.
    Blessed(TrialRecord),
    /// The trial slot failed; the caller reboots into the old default.
    FailedHealthCheck(TrialRecord, String),
    /// The box runs the old slot after a trial that did not pass.
    FellBack(TrialRecord, String),
    /// An install was cut off.
    Interrupted(String),
}

impl Verdict {
    /// Whether the box must reboot now (only after a failed trial).
    pub fn reboots(&self) -> bool {
        matches!(self, Verdict::FailedHealthCheck(..))
    }
}

/// Runs the boot's check over `spool` with `system`; `healthy` waits for the health
/// conditions (called only on a trial boot) and says what is missing when they do not hold;
/// `keyring` is adopted once a trial slot is blessed.
pub async fn check_boot<S, H, F>(
    spool: &Spool,
    system: &S,
    running: &FirmwareVersion,
    keyring: &ImageKeyring,
    healthy: H,
) -> Result<Verdict, FileError>
where
    S: System,
    H: FnOnce() -> F,
    F: Future<Output = Result<(), String>>,
{
    let booted = booted_slot(system).await;
    let record = boot_record(system, &booted, running).await;
    spool.write_record(BOOT_RECORD, &record)?;

    if let Some(trial) = spool.trial() {
        // The install finished (the trial record is its last step): what it left is stale.
        spool.remove(INSTALLING_RECORD)?;
        if trial.slot == booted {
            return trial_boot(spool, system, trial, keyring, healthy).await;
        }
        let why = spool
            .last_result()
            .filter(|last| {
                last.result == Outcome::FailedHealthCheck.as_str()
                    && last.slot.as_deref() == Some(trial.slot.as_str())
            })
            .map(|last| last.message)
            .unwrap_or_else(|| format!("slot {} did not boot", trial.slot));
        tracing::warn!(version = %trial.version, slot = %trial.slot, why = %why, "firmware update fell back to the previous slot");
        spool.record_result(&result(
            Outcome::FellBack,
            &trial.version,
            &trial.slot,
            format!(
                "the box runs slot {booted} again: version {} in slot {}: {why}",
                trial.version, trial.slot
            ),
        ))?;
        spool.remove(TRIAL_RECORD)?;
        return Ok(Verdict::FellBack(trial, why));
    }

    if spool.has(INSTALLING_RECORD) {
        let installing = spool.installing();
        let version = installing
            .as_ref()
            .map_or_else(|| "unknown".to_string(), |i| i.version.clone());
        let slot = installing
            .as_ref()
            .map_or_else(|| UNKNOWN_SLOT.to_string(), |i| i.slot.clone());
        let step = installing
            .and_then(|i| i.progress)
            .map(|p| format!(" (at {}%: {})", p.percent, p.step))
            .unwrap_or_default();
        let why = format!(
            "the box lost power or was reset while slot {slot} was written{step}; it runs slot {booted}; push the bundle again"
        );
        tracing::warn!(version = %version, slot = %slot, "firmware install was interrupted");
        spool.remove(PENDING_BUNDLE)?;
        spool.remove(PENDING_RECORD)?;
        spool.record_result(&result(Outcome::Interrupted, &version, &slot, why.clone()))?;
        spool.remove(INSTALLING_RECORD)?;
        return Ok(Verdict::Interrupted(why));
    }
    Ok(Verdict::NormalBoot)
}

/// The new slot's one boot: bless it, or give it up.
async fn trial_boot<S, H, F>(
    spool: &Spool,
    system: &S,
    trial: TrialRecord,
    keyring: &ImageKeyring,
    healthy: H,
) -> Result<Verdict, FileError>
where
    S: System,
    H: FnOnce() -> F,
    F: Future<Output = Result<(), String>>,
{
    tracing::info!(version = %trial.version, slot = %trial.slot, "trial boot of a firmware update: checking its health");
    let verdict = match healthy().await {
        Ok(()) => match system.mark(Mark::Good).await {
            Ok(()) => Ok(()),
            Err(err) => Err(format!(
                "healthy, but rauc could not mark the slot good: {err}"
            )),
        },
        Err(missing) => Err(missing),
    };
    match verdict {
        Ok(()) => {
            tracing::info!(version = %trial.version, slot = %trial.slot, "firmware update blessed");
            // Only now: a slot that never proved itself never changes what RAUC trusts.
            let mut message = format!(
                "slot {} passed its health check and is the default now",
                trial.slot
            );
            if let Some(note) = keyring.adopt().note() {
                message = format!("{message}; {note}");
            }
            spool.record_result(&result(
                Outcome::Blessed,
                &trial.version,
                &trial.slot,
                message,
            ))?;
            spool.remove(TRIAL_RECORD)?;
            Ok(Verdict::Blessed(trial))
        }
        Err(why) => {
            tracing::error!(version = %trial.version, slot = %trial.slot, why = %why, "firmware update failed its health check; back to the previous slot");
            // Noted before anything else: the next boot (the old slot) reports it.
            spool.record_result(&result(
                Outcome::FailedHealthCheck,
                &trial.version,
                &trial.slot,
                why.clone(),
            ))?;
            if let Err(err) = system.mark(Mark::Bad).await {
                // The one-shot entry is spent either way: the reboot lands on the old default.
                tracing::error!(error = %err, "rauc could not mark the slot bad");
            }
            Ok(Verdict::FailedHealthCheck(trial, why))
        }
    }
}

/// The booted slot: the kernel command line's, else rauc's.
async fn booted_slot(system: &impl System) -> String {
    let from_cmdline = system.booted_slot();
    if from_cmdline != UNKNOWN_SLOT {
        return from_cmdline;
    }
    match system.slot_status().await {
        Ok(status) => status.booted.unwrap_or(from_cmdline),
        Err(_) => from_cmdline,
    }
}

/// `boot.json` of this boot; without rauc's answer its slots are empty (and noted in the log).
async fn boot_record(system: &impl System, booted: &str, running: &FirmwareVersion) -> BootRecord {
    let slots = match system.slot_status().await {
        Ok(status) => status.records(),
        Err(err) => {
            tracing::warn!(error = %err, "rauc status failed: boot.json lists no slots");
            Vec::new()
        }
    };
    BootRecord {
        boot_id: system.boot_id(),
        booted_slot: booted.to_string(),
        firmware_version: running.to_string(),
        slots,
        checked_at: super::unix_now(),
    }
}

fn result(outcome: Outcome, version: &str, slot: &str, message: String) -> UpdateResult {
    UpdateResult {
        result: outcome.as_str().to_string(),
        version: Some(version.to_string()),
        reason: None,
        message,
        slot: Some(slot.to_string()),
        by: BOX_ITSELF.to_string(),
        at: super::unix_now(),
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::update::keyring::tests::ca_pem;
    use crate::update::records::{InstallingRecord, Progress};
    use crate::update::spool::LAST_RESULT;
    use crate::update::system::given::GivenSystem;

    fn running() -> FirmwareVersion {
        FirmwareVersion::parse("0.1.0").expect("version")
    }

    fn trial(slot: &str) -> TrialRecord {
        TrialRecord {
            version: "0.1.0.1".into(),
            slot: slot.into(),
            from_slot: if slot == "A" { "B" } else { "A" }.into(),
            from_version: "0.1.0".into(),
            installed_at: 1,
        }
    }

    /// A spool in a fresh folder (kept alive by the returned guard), with a trial of the given
    /// slot waiting when `trial_of` names one.
    fn spool_with(trial_of: Option<&str>) -> (tempfile::TempDir, Spool) {
        let dir = tempfile::tempdir().expect("dir");
        let spool = Spool::new(dir.path().join("update"));
        if let Some(slot) = trial_of {
            spool
                .write_record(TRIAL_RECORD, &trial(slot))
                .expect("trial");
        }
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

    /// A slot without a keyring of its own.
    fn no_keyring() -> ImageKeyring {
        ImageKeyring {
            offered: "/nonexistent/update-keyring.pem".into(),
            installed: None,
        }
    }

    async fn check(
        spool: &Spool,
        system: &GivenSystem,
        health: Result<(), String>,
    ) -> (Verdict, bool) {
        check_with(spool, system, &no_keyring(), health).await
    }

    async fn check_with(
        spool: &Spool,
        system: &GivenSystem,
        keyring: &ImageKeyring,
        health: Result<(), String>,
    ) -> (Verdict, bool) {
        let asked = Cell::new(false);
        let verdict = check_boot(spool, system, &running(), keyring, || {
            asked.set(true);
            async move { health }
        })
        .await
        .expect("spool written");
        (verdict, asked.get())
    }

    #[tokio::test]
    async fn avl5_a_normal_boot_records_itself_and_never_reboots_whatever_its_health() {
        let (_dir, spool) = spool_with(None);
        let system = GivenSystem::new(spool.dir(), "A", &["A"]);
        let (verdict, asked) = check(&spool, &system, Err("the hub is down".into())).await;
        assert_eq!(verdict, Verdict::NormalBoot);
        assert!(!asked, "a normal boot does not judge health");
        assert!(!verdict.reboots());
        assert!(system.marks.borrow().is_empty());
        let boot = spool.boot().expect("boot.json written");
        assert_eq!(boot.boot_id, "boot-1");
        assert_eq!(boot.booted_slot, "A");
        assert_eq!(boot.firmware_version, "0.1.0");
        assert_eq!(boot.slots.len(), 2);
        assert!(boot.slots[0].booted && boot.slots[0].state == "good");
        assert_eq!(names(&spool), [BOOT_RECORD]);
    }

    #[tokio::test]
    async fn avl5_a_trial_boot_that_passes_is_marked_good_and_blessed() {
        let (_dir, spool) = spool_with(Some("B"));
        let system = GivenSystem::new(spool.dir(), "B", &["A"]);
        let (verdict, asked) = check(&spool, &system, Ok(())).await;
        assert!(asked);
        assert_eq!(verdict, Verdict::Blessed(trial("B")));
        assert_eq!(*system.marks.borrow(), [Mark::Good]);
        let last = spool.last_result().expect("last result");
        assert_eq!(last.result, "blessed");
        assert_eq!(last.slot.as_deref(), Some("B"));
        assert_eq!(
            names(&spool),
            [BOOT_RECORD, LAST_RESULT],
            "trial.json removed"
        );
    }

    /// A box whose update CA is `installed` running a slot that carries `offered`.
    fn keyring_files(dir: &std::path::Path, installed: &str, offered: &str) -> ImageKeyring {
        let keyring = ImageKeyring {
            offered: dir.join("update-keyring.pem"),
            installed: Some(dir.join("update-ca.pem")),
        };
        std::fs::write(&keyring.offered, offered).expect("offered");
        std::fs::write(keyring.installed.as_ref().expect("ca_file"), installed).expect("installed");
        keyring
    }

    #[tokio::test]
    async fn avl5_only_a_blessed_trial_slot_replaces_the_update_ca_keyring_and_says_so() {
        let old = ca_pem("update CA 1");
        let transition = format!("{old}{}", ca_pem("update CA 2"));
        for (health, slot_booted) in [(Err("unhealthy".to_string()), "B"), (Ok(()), "A")] {
            let (dir, spool) = spool_with(Some("B"));
            let keyring = keyring_files(dir.path(), &old, &transition);
            let system = GivenSystem::new(spool.dir(), slot_booted, &["A"]);
            let (verdict, _) = check_with(&spool, &system, &keyring, health).await;
            assert!(!matches!(verdict, Verdict::Blessed(_)), "{verdict:?}");
            let installed = std::fs::read_to_string(keyring.installed.as_ref().expect("ca_file"))
                .expect("read");
            assert_eq!(installed, old, "{verdict:?} left the update CA alone");
        }

        let (dir, spool) = spool_with(Some("B"));
        let keyring = keyring_files(dir.path(), &old, &transition);
        let system = GivenSystem::new(spool.dir(), "B", &["A"]);
        let (verdict, _) = check_with(&spool, &system, &keyring, Ok(())).await;
        assert_eq!(verdict, Verdict::Blessed(trial("B")));
        let installed =
            std::fs::read_to_string(keyring.installed.as_ref().expect("ca_file")).expect("read");
        assert_eq!(installed, transition);
        let last = spool.last_result().expect("last result");
        assert_eq!(last.result, "blessed");
        assert!(
            last.message
                .ends_with("is the default now; update CA keyring replaced: 2 certificates"),
            "{}",
            last.message
        );

        // A bad keyring in a blessed slot: refused, the old one stays, the blessing stands.
        let (dir, spool) = spool_with(Some("B"));
        let keyring = keyring_files(dir.path(), &old, "no certificate\n");
        let system = GivenSystem::new(spool.dir(), "B", &["A"]);
        let (verdict, _) = check_with(&spool, &system, &keyring, Ok(())).await;
        assert_eq!(verdict, Verdict::Blessed(trial("B")));
        assert_eq!(*system.marks.borrow(), [Mark::Good]);
        let installed =
            std::fs::read_to_string(keyring.installed.as_ref().expect("ca_file")).expect("read");
        assert_eq!(installed, old);
        let last = spool.last_result().expect("last result");
        assert_eq!(last.result, "blessed");
        assert!(
            last.message.contains("update CA keyring was refused"),
            "{}",
            last.message
        );
    }

    #[tokio::test]
    async fn avl5_a_failed_trial_is_marked_bad_reboots_and_the_old_slot_reports_fell_back() {
        let (_dir, spool) = spool_with(Some("B"));
        let system = GivenSystem::new(spool.dir(), "B", &["A"]);
        let why = "not healthy within 180 s: no fresh WireGuard handshake";
        let (verdict, _) = check(&spool, &system, Err(why.into())).await;
        assert_eq!(verdict, Verdict::FailedHealthCheck(trial("B"), why.into()));
        assert!(verdict.reboots());
        assert_eq!(*system.marks.borrow(), [Mark::Bad]);
        let last = spool.last_result().expect("last result");
        assert_eq!(last.result, "failed_health_check");
        assert_eq!(last.message, why);
        assert!(spool.trial().is_some(), "the next boot reports it");

        // The one-shot entry is spent: the old default, slot A, boots.
        let old = GivenSystem {
            boot_id: "boot-2".into(),
            ..GivenSystem::new(spool.dir(), "A", &["A"])
        };
        let (verdict, asked) = check(&spool, &old, Err("not asked".into())).await;
        assert!(!asked);
        assert_eq!(verdict, Verdict::FellBack(trial("B"), why.into()));
        assert!(!verdict.reboots(), "falling back never reboots again");
        let last = spool.last_result().expect("last result");
        assert_eq!(last.result, "fell_back");
        assert_eq!(last.version.as_deref(), Some("0.1.0.1"));
        assert!(last.message.contains(why), "{}", last.message);
        assert_eq!(spool.boot().expect("boot").boot_id, "boot-2");
        assert_eq!(names(&spool), [BOOT_RECORD, LAST_RESULT]);
    }

    #[tokio::test]
    async fn avl5_a_trial_slot_that_never_booted_is_reported_fell_back() {
        let (_dir, spool) = spool_with(Some("B"));
        let system = GivenSystem::new(spool.dir(), "A", &["A"]);
        let (verdict, _) = check(&spool, &system, Ok(())).await;
        assert_eq!(
            verdict,
            Verdict::FellBack(trial("B"), "slot B did not boot".into())
        );
        assert!(system.marks.borrow().is_empty());
        assert_eq!(names(&spool), [BOOT_RECORD, LAST_RESULT]);
    }

    #[tokio::test]
    async fn avl5_an_install_cut_off_by_a_power_loss_is_reported_interrupted() {
        let (_dir, spool) = spool_with(None);
        spool
            .write_record(
                INSTALLING_RECORD,
                &InstallingRecord {
                    version: "0.1.0.1".into(),
                    slot: "B".into(),
                    started_at: 1,
                    progress: Some(Progress {
                        percent: 40,
                        step: "Copying image to rootfs.1".into(),
                    }),
                },
            )
            .expect("installing");
        std::fs::write(spool.dir().join(PENDING_BUNDLE), b"bundle").expect("bundle");
        std::fs::write(spool.dir().join(PENDING_RECORD), b"{}").expect("record");
        let system = GivenSystem::new(spool.dir(), "A", &["A"]);
        let (verdict, asked) = check(&spool, &system, Ok(())).await;
        assert!(!asked);
        let Verdict::Interrupted(why) = verdict else {
            panic!("{verdict:?}");
        };
        assert!(why.contains("Copying image to rootfs.1"), "{why}");
        let last = spool.last_result().expect("last result");
        assert_eq!(last.result, "interrupted");
        assert_eq!(last.slot.as_deref(), Some("B"));
        assert_eq!(
            names(&spool),
            [BOOT_RECORD, LAST_RESULT],
            "the half-installed bundle is dropped"
        );
    }
}
