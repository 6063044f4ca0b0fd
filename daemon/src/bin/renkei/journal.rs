//! The journal's sealing key moved on before journald's flush, and sealed journal files
//! verified with a box's verification key.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::exit::report;

/// Writes (or, without `[time]`, removes) the timesyncd drop-in `output` for the config at
/// `path`; exit 2 on an invalid config (the drop-in in place stays), 1 when the file cannot be
/// written.
/// Prints what sealing did on the console (the unit's output goes to the console only: the
/// verification key must not be written into the journal it verifies).
pub(crate) fn journal_seal(
    paths: &renkei::journal::seal::SealPaths,
    scratch_dir: &std::path::Path,
) -> anyhow::Result<()> {
    use renkei::journal::seal::Sealing;
    use renkei::journal::seal_epoch::{advance_to_now, Advance};
    let journalctl = std::path::Path::new(renkei::journal::JOURNALCTL);
    match renkei::journal::seal::ensure_sealing(paths, journalctl)? {
        Sealing::Made { verification_key } => println!(
            "renkei: the journal is sealed from now on; journal verification key for the operator: {verification_key}"
        ),
        Sealing::Kept => {}
        Sealing::KeyRemoved => println!(
            "renkei: the box is enrolled; the journal verification key was removed from it ({})",
            paths.key_file.display()
        ),
    }
    let key = renkei::journal::seal::sealing_key(paths)?;
    match advance_to_now(
        &key,
        std::path::Path::new(renkei::journal::JOURNAL_REMOTE),
        scratch_dir,
        std::time::SystemTime::now(),
    )? {
        Advance::Current { .. } => {}
        Advance::Moved { from, to } => println!(
            "renkei: the journal's sealing key moved on from interval {from} to {to} (the box was off, or its last move was lost in a power cut)"
        ),
        Advance::ClockBehind { epoch, now } => println!(
            "renkei: the clock is behind the journal's sealing key (interval {epoch}, now {}): entries are dated before the last seal until the clock passes it",
            now.map_or_else(|| "before its start".to_string(), |now| now.to_string())
        ),
    }
    Ok(())
}

/// One line per file, PASS or FAIL with why; exit 1 if any fails or none was found.
pub(crate) fn journal_verify(
    journalctl: &std::path::Path,
    key: &str,
    paths: &[PathBuf],
) -> ExitCode {
    match renkei::journal::verify::verify_files(journalctl, key, paths) {
        Err(e) => report(Err(e.into())),
        Ok(verdicts) => {
            let mut failed = 0;
            for verdict in &verdicts {
                match &verdict.problem {
                    None => println!("PASS {} {}", verdict.file.display(), verdict.summary),
                    Some(problem) => {
                        failed += 1;
                        println!("FAIL {}: {problem}", verdict.file.display());
                    }
                }
            }
            println!("{} files, {failed} failed", verdicts.len());
            if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
