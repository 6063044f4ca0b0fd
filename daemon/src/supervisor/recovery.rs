//! Start-up recovery (AVL-1): the confirmed config restored when a pushed one was never
//! confirmed, and the LOG-2 record of what became of the push.

use std::path::Path;

use crate::config::{self, Config, Diagnostics};
use crate::control::audit::{ConfigEvent, Kind};
use crate::control::persist::{ConfigFiles, Recovery, RecoveryOutcome};
use crate::state::events::ConfigReason;

/// Loads the config file the daemon runs from, first restoring the confirmed config if a
/// pushed one was never confirmed (a crash or reboot inside the confirm window: AVL-1).
/// Returns the config, its exact bytes, and what recovery did. `fallback_state_dir` (the
/// command line's `--state-dir`) is where the push files are looked for when the file does not
/// even parse far enough to name its own state directory.
pub fn load_recovering(
    path: &Path,
    fallback_state_dir: &Path,
) -> Result<(Config, Vec<u8>, Option<Recovery>), Diagnostics> {
    // The state directory cannot change by push, so the file names the right one whichever
    // version it holds. It is read without the file checks, so a config that fails them (a key
    // file gone) still finds the marker that may restore a working one.
    let state_dir = std::fs::read_to_string(path)
        .ok()
        .and_then(|text| toml::from_str::<Config>(&text).ok())
        .map_or_else(|| fallback_state_dir.to_path_buf(), |c| c.paths.state_dir);
    let recovery = ConfigFiles::new(path, &state_dir)
        .recover()
        .map_err(|e| whole_file(path, format!("cannot restore the confirmed config: {e}")))?;
    // A rollback the disk could not take runs the confirmed config from memory.
    if let Some(unwritten) = recovery.as_ref().and_then(|r| r.unwritten.as_ref()) {
        let text = std::str::from_utf8(&unwritten.bytes)
            .map_err(|e| whole_file(path, format!("the confirmed config's copy: {e}")))?;
        let config = crate::preflight::load_text(text, path)?;
        let bytes = unwritten.bytes.clone();
        return Ok((config, bytes, recovery));
    }
    let config = crate::preflight::load(path)?;
    let bytes = std::fs::read(path).map_err(|e| whole_file(path, e.to_string()))?;
    Ok((config, bytes, recovery))
}

fn whole_file(path: &Path, message: String) -> Diagnostics {
    Diagnostics(vec![config::Diagnostic {
        file: path.to_path_buf(),
        line: 1,
        column: 1,
        field: String::new(),
        message,
    }])
}

/// Why every start-up recovery event is logged: a push was under way when the daemon stopped.
const RECOVERY_REASON: ConfigReason = ConfigReason::StoppedDuringPush;

/// The LOG-2 record of what start-up recovery did: which version runs (`running_version`) and
/// what became of the pushed one (`version`), in words that match the files, not a guess.
pub(super) fn recovery_event(recovery: &Recovery, running: u64) -> ConfigEvent<'_> {
    let pending = recovery.pending.as_ref();
    let pushed = pending.map_or_else(
        || "a pushed config (its marker could not be read)".to_string(),
        |p| format!("version {}", p.version),
    );
    let event = match (recovery.outcome, &recovery.unwritten) {
        (RecoveryOutcome::RolledBack, None) => ConfigEvent::new(
            Kind::RolledBack,
            format!(
                "{pushed} was never confirmed before the daemon stopped; version {running} restored and runs"
            ),
        ),
        (RecoveryOutcome::RolledBack, Some(unwritten)) => ConfigEvent::new(
            Kind::RolledBack,
            format!(
                "{pushed} was never confirmed before the daemon stopped; version {running} runs from memory: the config file could not be written back ({}); the next start with room restores it",
                unwritten.error
            ),
        ),
        (RecoveryOutcome::Confirmed, _) => ConfigEvent::new(
            Kind::Confirmed,
            format!(
                "the confirm of version {running} was written just before the daemon stopped; it runs"
            ),
        ),
        (RecoveryOutcome::NotApplied, _) => ConfigEvent::new(
            Kind::NotApplied,
            format!(
                "{pushed} was never applied: the daemon stopped before the push replaced the config file, or after its rollback; version {running} runs"
            ),
        ),
    };
    // The confirmed config is the running one: name it, and its signer when the marker was
    // about it.
    let about = match recovery.outcome {
        RecoveryOutcome::Confirmed => pending.filter(|p| p.version == running),
        RecoveryOutcome::RolledBack | RecoveryOutcome::NotApplied => pending,
    };
    let version = match recovery.outcome {
        RecoveryOutcome::Confirmed => Some(running),
        RecoveryOutcome::RolledBack | RecoveryOutcome::NotApplied => pending.map(|p| p.version),
    };
    event
        .version(version)
        .signer(about.map(|p| p.signer.as_str()))
        .pushed_by(about.map(|p| p.pushed_by.as_str()))
        .reason(RECOVERY_REASON)
        .running_version(running)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::fixture::Fixture;
    use crate::control::persist::PendingRecord;
    use crate::state::events::EventLog;

    /// Where a kill lands in a push of version 2 over version 1, by the files it leaves.
    #[derive(Debug, Clone, Copy)]
    enum KilledIn {
        /// `begin`: previous.toml and the marker written, the config file not yet replaced.
        BeginBeforeTheConfigFile,
        /// Applied, inside the confirm window.
        ConfirmWindow,
        /// `confirm`: confirmed.json written, the marker not yet removed.
        ConfirmBeforeTheMarkerWent,
        /// `rollback`: the previous config written back, the marker not yet removed.
        RollbackBeforeTheMarkerWent,
    }

    fn confirmed_record(version: u64, text: &str) -> crate::control::persist::ConfirmedRecord {
        crate::control::persist::ConfirmedRecord {
            version,
            sha256: crate::control::persist::sha256_hex(text.as_bytes()),
            signer: "00112233".into(),
            pushed_by: "operator.renkei.test".into(),
            confirmed_at_unix: 1,
            pushed_at_unix: Some(0),
        }
    }

    /// Leaves the files as a kill at `point` does, through the real push files. Version 1 was
    /// installed locally, or (`v1_pushed`) is itself a confirmed push.
    fn kill_at(f: &Fixture, point: KilledIn, v1_pushed: bool) -> (String, String) {
        let (v1, v2) = (f.text(1, ""), f.text(2, ""));
        let state = f.dir.path().join("state");
        let files = ConfigFiles::new(&f.config_path(), &state);
        std::fs::write(f.config_path(), &v1).expect("v1");
        if v1_pushed {
            std::fs::create_dir_all(state.join("config")).expect("mkdir");
            files
                .confirm(&confirmed_record(1, &v1))
                .expect("v1 confirmed");
        }
        let marker = state.join("config/pending.json");
        let record = PendingRecord {
            version: 2,
            previous_version: 1,
            sha256: crate::control::persist::sha256_hex(v2.as_bytes()),
            signer: "00112233".into(),
            pushed_by: "operator.renkei.test".into(),
            applied_at_unix: 0,
            confirm_deadline_unix: 0,
        };
        files
            .begin(v1.as_bytes(), v2.as_bytes(), &record)
            .expect("begin");
        let kept_marker = std::fs::read(&marker).expect("marker");
        match point {
            KilledIn::BeginBeforeTheConfigFile => std::fs::write(f.config_path(), &v1).expect("v1"),
            KilledIn::ConfirmWindow => {}
            KilledIn::ConfirmBeforeTheMarkerWent => {
                files.confirm(&confirmed_record(2, &v2)).expect("confirm");
                std::fs::write(&marker, &kept_marker).expect("marker back");
            }
            KilledIn::RollbackBeforeTheMarkerWent => {
                files.rollback().expect("rollback");
                std::fs::write(&marker, &kept_marker).expect("marker back");
            }
        }
        (v1, v2)
    }

    #[test]
    fn avl1_log2_the_recovery_log_names_the_running_version_and_what_became_of_the_push() {
        // (crash point, version that runs, event, its version)
        let points = [
            (KilledIn::BeginBeforeTheConfigFile, 1, "not_applied", 2),
            (KilledIn::ConfirmWindow, 1, "rolled_back", 2),
            (KilledIn::ConfirmBeforeTheMarkerWent, 2, "confirmed", 2),
            (KilledIn::RollbackBeforeTheMarkerWent, 1, "not_applied", 2),
        ];
        for ((point, runs, word, version), v1_pushed) in
            points.into_iter().flat_map(|p| [(p, false), (p, true)])
        {
            let point = (point, v1_pushed);
            let f = Fixture::new();
            let (v1, v2) = kill_at(&f, point.0, v1_pushed);
            let state = f.dir.path().join("state");
            let (config, bytes, recovery) =
                load_recovering(&f.config_path(), &state).expect("recovered");
            assert_eq!(config.meta.version, runs, "{point:?}");
            let expected_text = if runs == 1 { &v1 } else { &v2 };
            assert_eq!(bytes, expected_text.as_bytes(), "{point:?}");
            let recovery = recovery.expect("a marker was found");
            let event = recovery_event(&recovery, config.meta.version);
            assert_eq!(
                (event.kind.word(), event.version, event.running_version),
                (word, Some(version), Some(runs)),
                "{point:?}: {}",
                event.message()
            );
            // The flake's root: a "confirmed" record must be about the version that runs.
            if event.kind.word() == "confirmed" {
                assert_eq!(event.version, Some(runs), "{point:?}");
            }
            assert!(
                event.message().ends_with(&format!("version {runs} runs"))
                    || event
                        .message()
                        .ends_with(&format!("version {runs} restored and runs"))
                    || event.message().ends_with("; it runs"),
                "{point:?}: {}",
                event.message()
            );
            let events = EventLog::new();
            event.emit(Some(&events));
            let kept = events.snapshot();
            assert_eq!(kept.len(), 1, "{point:?}");
            assert!(
                kept[0].message.contains(&format!("version {runs}")),
                "{point:?}: {}",
                kept[0].message
            );
        }
    }

    #[test]
    fn avl1_recovery_finds_the_push_files_through_state_dir_when_the_config_does_not_parse() {
        let f = Fixture::new();
        let v1 = f.text(1, "");
        let state = f.dir.path().join("state");
        let files = ConfigFiles::new(&f.config_path(), &state);
        std::fs::write(f.config_path(), &v1).expect("write");
        let record = PendingRecord {
            version: 2,
            previous_version: 1,
            sha256: String::new(),
            signer: "k".into(),
            pushed_by: "operator.renkei.test".into(),
            applied_at_unix: 0,
            confirm_deadline_unix: 0,
        };
        files
            .begin(v1.as_bytes(), b"[meta\nbroken", &record)
            .expect("begin");

        // Elsewhere as --state-dir: nothing to recover from, the broken file stays broken.
        let elsewhere = f.dir.path().join("elsewhere");
        assert!(load_recovering(&f.config_path(), &elsewhere).is_err());
        // The right --state-dir: the confirmed config is back.
        let (config, bytes, recovery) =
            load_recovering(&f.config_path(), &state).expect("recovered");
        assert_eq!(config.meta.version, 1);
        assert_eq!(bytes, v1.as_bytes());
        let recovery = recovery.expect("a recovery");
        assert_eq!(recovery.outcome, RecoveryOutcome::RolledBack);
        assert_eq!(recovery.pending.map(|p| p.version), Some(2));
    }
}
