//! The operator's check of a box's journal files (`renkei journal-verify`): every file must
//! pass `journalctl --verify` with the box's verification key AND be sealed.
//!
//! journalctl alone is not enough: it passes an unsealed file even when given a key (systemd
//! 252 and later), so whoever can write the box's disk could replace a sealed file with an
//! edited copy re-written by `systemd-journal-remote` (its own hashes all correct, no seal) and
//! `journalctl --verify --verify-key=` would still say PASS. A renkei box seals every
//! persistent file from its first one, so an unsealed file is a failure here.

use std::path::{Path, PathBuf};
use std::process::Command;

/// One file's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileVerdict {
    /// The journal file.
    pub file: PathBuf,
    /// `None` when it passed, else why not.
    pub problem: Option<String>,
    /// journalctl's summary line (`=> Validated from ... final N entries not sealed.`).
    pub summary: String,
}

/// Why nothing could be checked.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A path could not be listed.
    #[error("cannot read {path}")]
    List {
        /// The path.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// No journal file under the given paths.
    #[error("no journal files (*.journal) under {0}")]
    NoFiles(String),
    /// journalctl could not be run.
    #[error("cannot run {journalctl}")]
    Journalctl {
        /// The program.
        journalctl: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// Checks every journal file under `paths` (files, or folders searched recursively) with
/// `key`. A file journald left unclean (`*.journal~`) is checked too: it must pass like any
/// other.
pub fn verify_files(
    journalctl: &Path,
    key: &str,
    paths: &[PathBuf],
) -> Result<Vec<FileVerdict>, VerifyError> {
    let mut files = Vec::new();
    for path in paths {
        collect(path, &mut files)?;
    }
    files.sort();
    if files.is_empty() {
        let named: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        return Err(VerifyError::NoFiles(named.join(", ")));
    }
    files
        .iter()
        .map(|file| verify_file(journalctl, key, file))
        .collect()
}

fn collect(path: &Path, files: &mut Vec<PathBuf>) -> Result<(), VerifyError> {
    let list = |source| VerifyError::List {
        path: path.to_path_buf(),
        source,
    };
    if !path.metadata().map_err(list)?.is_dir() {
        files.push(path.to_path_buf());
        return Ok(());
    }
    for entry in std::fs::read_dir(path).map_err(list)? {
        let entry = entry.map_err(list)?;
        let child = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type().map_err(list)?.is_dir() {
            collect(&child, files)?;
        } else if name.ends_with(".journal") || name.ends_with(".journal~") {
            files.push(child);
        }
    }
    Ok(())
}

fn verify_file(journalctl: &Path, key: &str, file: &Path) -> Result<FileVerdict, VerifyError> {
    let run = |args: &[&str]| {
        Command::new(journalctl)
            .args(args)
            .arg(format!("--file={}", file.display()))
            .output()
            .map_err(|source| VerifyError::Journalctl {
                journalctl: journalctl.to_path_buf(),
                source,
            })
    };
    let verified = run(&["--verify", &format!("--verify-key={key}")])?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&verified.stdout),
        String::from_utf8_lossy(&verified.stderr)
    );
    let summary = said
        .lines()
        .find(|l| l.starts_with("=>"))
        .unwrap_or_default()
        .to_string();
    let problem = if !verified.status.success() {
        let lines: Vec<&str> = said.lines().filter(|l| !l.trim().is_empty()).collect();
        Some(format!("journalctl --verify failed: {}", lines.join("; ")))
    } else {
        let header = run(&["--header"])?;
        let header = String::from_utf8_lossy(&header.stdout);
        if is_sealed(&header) {
            None
        } else {
            Some("not sealed: the box seals every file, so this one was replaced".into())
        }
    };
    Ok(FileVerdict {
        file: file.to_path_buf(),
        problem,
        summary,
    })
}

/// Whether `journalctl --header` names the file sealed.
fn is_sealed(header: &str) -> bool {
    header
        .lines()
        .filter_map(|l| l.strip_prefix("Compatible flags:"))
        .any(|flags| flags.split_whitespace().any(|f| f == "SEALED"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log4_only_a_sealed_header_counts_as_sealed() {
        assert!(is_sealed(
            "State: OFFLINE\nCompatible flags: SEALED\nIncompatible flags: COMPACT\n"
        ));
        assert!(!is_sealed(
            "Compatible flags:\nIncompatible flags: SEALED\n"
        ));
        assert!(!is_sealed("Compatible flags: SEALED_CONTINUOUS\n"));
        assert!(!is_sealed(""));
    }

    #[test]
    fn log4_no_journal_files_is_an_error_naming_the_paths() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("fss"), "").expect("fss");
        let error = verify_files(Path::new("journalctl"), "k", &[dir.path().to_path_buf()])
            .expect_err("empty");
        assert!(
            error
                .to_string()
                .contains(&dir.path().display().to_string()),
            "{error}"
        );
    }
}
