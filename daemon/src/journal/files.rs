//! The box's journal files as the operator fetches them through the management API (LOG-4): the
//! box has no login, so this is how the operator gets the sealed files to check them with the
//! box's verification key (`renkei remote ... journal`, then `renkei journal-verify`).
//!
//! Only journald's own files are served: `*.journal` and `*.journal~` directly inside a
//! machine's folder (`<root>/<32 hex digits>/`). A requested name must be one of the listed
//! names exactly, so no path from outside ever reaches the file system.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

/// journald's persistent folder on the box.
pub const DEFAULT_ROOT: &str = "/var/log/journal";

/// The largest file served (journald's files on the box are at most a quarter of this: its
/// `SystemMaxUse=` of the image's journald.conf.d, split into files of 1/8 each).
pub const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// One journal file, named relative to the journal folder (`<machine id>/<file>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalFile {
    /// `<machine id>/<file name>`.
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// Last change, seconds since the epoch.
    pub modified_unix: u64,
    /// journald is still writing it (`system.journal`, `user-*.journal`): a copy may end in
    /// an entry half written. Archived files (`...@...journal`) and files journald left
    /// unclean (`*.journal~`) no longer change.
    pub active: bool,
}

/// Why the files could not be listed or read.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// The journal folder or a machine's folder could not be read.
    #[error("cannot list {path}: {source}")]
    List {
        /// The folder.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The name is not one of the listed files.
    #[error("no journal file {0:?} (ask for the list first)")]
    Unknown(String),
    /// The file is larger than [`MAX_FILE_BYTES`].
    #[error("{name} has {size} bytes, more than the {MAX_FILE_BYTES} served")]
    TooLarge {
        /// The file.
        name: String,
        /// Its size.
        size: u64,
    },
    /// The file could not be read.
    #[error("cannot read {name}: {source}")]
    Read {
        /// The file.
        name: String,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// The journal files under `root`, by name. A missing `root` is an empty journal (a box
/// whose journal is volatile keeps none).
pub fn list(root: &Path) -> Result<Vec<JournalFile>, FilesError> {
    let listing = |path: &Path| {
        std::fs::read_dir(path).map_err(|source| FilesError::List {
            path: path.to_path_buf(),
            source,
        })
    };
    let machines = match std::fs::read_dir(root) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        _ => listing(root)?,
    };
    let mut files = Vec::new();
    for machine in machines.flatten() {
        let machine_name = machine.file_name().to_string_lossy().into_owned();
        if !is_machine_id(&machine_name) || !machine.path().is_dir() {
            continue;
        }
        for entry in listing(&machine.path())?.flatten() {
            let file_name = entry.file_name().to_string_lossy().into_owned();
            if !is_journal_file(&file_name) {
                continue;
            }
            // A file removed meanwhile (journald vacuuming) is simply not listed.
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            let modified_unix = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs());
            files.push(JournalFile {
                name: format!("{machine_name}/{file_name}"),
                size: meta.len(),
                modified_unix,
                active: file_name.ends_with(".journal") && !file_name.contains('@'),
            });
        }
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(files)
}

/// The bytes of the listed file `name` under `root`.
pub fn read(root: &Path, name: &str) -> Result<Vec<u8>, FilesError> {
    let file = list(root)?
        .into_iter()
        .find(|f| f.name == name)
        .ok_or_else(|| FilesError::Unknown(name.to_string()))?;
    if file.size > MAX_FILE_BYTES {
        return Err(FilesError::TooLarge {
            name: file.name,
            size: file.size,
        });
    }
    // The name was built from the folder's own entries above: no `..` or `/` from outside.
    std::fs::read(root.join(&file.name)).map_err(|source| FilesError::Read {
        name: file.name,
        source,
    })
}

/// Whether `name` has the form of a listed file (`<machine id>/<journal file>`): what the
/// operator's side checks before it writes a file a box named.
pub fn is_file_name(name: &str) -> bool {
    name.split_once('/')
        .is_some_and(|(machine, file)| is_machine_id(machine) && is_journal_file(file))
}

/// A machine id as systemd writes it: 32 lower-case hex digits.
fn is_machine_id(name: &str) -> bool {
    name.len() == 32
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A journald file name: `*.journal` or `*.journal~`, of characters journald uses.
fn is_journal_file(name: &str) -> bool {
    (name.ends_with(".journal") || name.ends_with(".journal~"))
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"@-_.~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MACHINE: &str = "0123456789abcdef0123456789abcdef";

    fn journal_folder() -> tempfile::TempDir {
        let root = tempfile::tempdir().expect("tempdir");
        let machine = root.path().join(MACHINE);
        std::fs::create_dir(&machine).expect("machine folder");
        for (name, bytes) in [
            ("system.journal", &b"active"[..]),
            (
                "system@00061b2c-0000000000000001-0005f0e2a1b2c3d4.journal",
                b"archived",
            ),
            (
                "system@00061b2c-0000000000000002-0005f0e2a1b2c3d5.journal~",
                b"unclean",
            ),
            ("notes.txt", b"not journald's"),
            (".#system.journal", b"a temporary copy"),
        ] {
            std::fs::write(machine.join(name), bytes).expect("file");
        }
        std::fs::create_dir(root.path().join("remote")).expect("another folder");
        std::fs::write(root.path().join("remote/other.journal"), b"x").expect("file");
        std::fs::create_dir(machine.join("folder.journal")).expect("a folder named like one");
        root
    }

    #[test]
    fn log4_only_journalds_files_of_machine_folders_are_listed() {
        let root = journal_folder();
        let files = list(root.path()).expect("listed");
        let names: Vec<(&str, bool)> = files.iter().map(|f| (f.name.as_str(), f.active)).collect();
        assert_eq!(
            names,
            [
                (&*format!("{MACHINE}/system.journal"), true),
                (
                    &*format!(
                        "{MACHINE}/system@00061b2c-0000000000000001-0005f0e2a1b2c3d4.journal"
                    ),
                    false
                ),
                (
                    &*format!(
                        "{MACHINE}/system@00061b2c-0000000000000002-0005f0e2a1b2c3d5.journal~"
                    ),
                    false
                ),
            ]
        );
        assert_eq!(files[0].size, 6);
        assert!(list(&root.path().join("absent")).expect("empty").is_empty());
        assert!(files.iter().all(|f| is_file_name(&f.name)));
        for bad in [
            format!("{MACHINE}/../system.journal"),
            format!("{MACHINE}/x/system.journal"),
            format!("../{MACHINE}/system.journal"),
            "system.journal".to_string(),
            format!("{MACHINE}/.journal"),
        ] {
            assert!(!is_file_name(&bad), "{bad:?}");
        }
    }

    #[test]
    fn log4_a_listed_file_is_read_and_any_other_name_is_unknown() {
        let root = journal_folder();
        let name = format!("{MACHINE}/system@00061b2c-0000000000000001-0005f0e2a1b2c3d4.journal");
        assert_eq!(read(root.path(), &name).expect("read"), b"archived");
        for bad in [
            format!("{MACHINE}/notes.txt"),
            format!("{MACHINE}/../{MACHINE}/system.journal"),
            "remote/other.journal".to_string(),
            format!("/{MACHINE}/system.journal"),
            format!("{MACHINE}/folder.journal"),
            String::new(),
        ] {
            assert!(
                matches!(read(root.path(), &bad), Err(FilesError::Unknown(_))),
                "{bad:?} was served"
            );
        }
    }
}
