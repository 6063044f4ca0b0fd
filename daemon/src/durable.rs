//! Files that survive a crash or a power cut whole: after either, a file written here holds its
//! old content or all of the new one (or, for a new file, is absent or whole), never a part.
//!
//! The pushed config files, the remembered peer endpoints and the box's first-boot keys all go
//! through here, so this sits below every module that writes them.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

/// A file operation that failed, with the file.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct FileError {
    /// The file or directory.
    pub path: PathBuf,
    /// What the OS (or the parser) said.
    pub source: io::Error,
}

/// Wraps an `io::Error` about `path`.
pub fn at(path: &Path) -> impl FnOnce(io::Error) -> FileError + '_ {
    move |source| FileError {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `path` (mode `mode`), replacing what was there: temp file in the same
/// directory, fsync, rename, fsync of the directory.
pub fn write_durably(path: &Path, bytes: &[u8], mode: u32) -> Result<(), FileError> {
    let tmp = write_temp(path, bytes, mode, None)?;
    rename_into_place(&tmp, path)?;
    sync_dir(parent(path))
}

/// Like [`write_durably`], the file owned by `owner` (uid, gid) before it appears: root writes
/// records a daemon user must read. The owner is set on the open file (`fchown`), so a name
/// swapped in the directory meanwhile is never what changes hands.
pub fn write_durably_owned(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    owner: (u32, u32),
) -> Result<(), FileError> {
    let tmp = write_temp(path, bytes, mode, Some(owner))?;
    rename_into_place(&tmp, path)?;
    sync_dir(parent(path))
}

/// Like [`write_durably`], but never replaces an existing `path` (its error is then
/// `AlreadyExists`): for private keys, which must never be overwritten. The whole file appears
/// at once through a hard link of the synced temp file.
pub fn create_durably(path: &Path, bytes: &[u8], mode: u32) -> Result<(), FileError> {
    let tmp = write_temp(path, bytes, mode, None)?;
    let linked = fs::hard_link(&tmp, path).map_err(at(path));
    let removed = fs::remove_file(&tmp).map_err(at(&tmp));
    linked?;
    removed?;
    sync_dir(parent(path))
}

/// Renames the synced temp file to `path`; the temp file goes if that fails.
fn rename_into_place(tmp: &Path, path: &Path) -> Result<(), FileError> {
    fs::rename(tmp, path).map_err(|e| {
        let _ = fs::remove_file(tmp);
        at(path)(e)
    })
}

/// The synced temp file beside `path`. A temp file left by a crash is removed first, and the
/// new one is created exclusively (no symlink followed) with `mode` set before any byte is
/// written, so a private key is never readable by others, not even while it is written.
fn write_temp(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> Result<PathBuf, FileError> {
    remove_stale_temp(path)?;
    let tmp = temp_path(path);
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(at(&tmp))?;
    // A temp file that could not be written whole (a full disk) goes at once: it would hold
    // space the next attempt needs, and half a file is nothing to leave behind.
    if let Err(error) = fill_temp(file, bytes, mode, owner) {
        let _ = fs::remove_file(&tmp);
        return Err(at(&tmp)(error));
    }
    Ok(tmp)
}

/// Gives the new temp file its mode and owner, writes `bytes` and syncs it.
fn fill_temp(
    mut file: fs::File,
    bytes: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
) -> io::Result<()> {
    // The umask may have taken bits away; the caller's mode is what the file must have.
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    // Only when it changes hands: a process writing for itself never needs the right to.
    let own = (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    );
    if let Some((uid, gid)) = owner.filter(|owner| *owner != own) {
        std::os::unix::fs::fchown(&file, Some(uid), Some(gid))?;
    }
    file.write_all(bytes)?;
    file.sync_all()
}

/// The temp file beside `path` that a write of `path` goes through (`.<name>.tmp`).
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    parent(path).join(format!(".{name}.tmp"))
}

/// Removes the temp file a crash (a power cut) left beside `path` while writing it, if any: a
/// later write of `path` removes it too, but a file that is not written again would keep it
/// for good. Returns whether there was one.
pub fn remove_stale_temp(path: &Path) -> Result<bool, FileError> {
    let tmp = temp_path(path);
    match fs::remove_file(&tmp) {
        Ok(()) => sync_dir(parent(path)).map(|()| true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(at(&tmp)(e)),
    }
}

/// Removes `path` (absent is fine) and makes the removal durable.
pub fn remove_durably(path: &Path) -> Result<(), FileError> {
    match fs::remove_file(path) {
        Ok(()) => sync_dir(parent(path)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(at(path)(e)),
    }
}

/// Makes sure `dir` exists (mode 0700) and that its entry is durable: when it had to be made,
/// its parent is fsynced, so files written into it survive a power cut with it.
pub fn ensure_private_dir(dir: &Path) -> Result<(), FileError> {
    let missing: Vec<&Path> = dir.ancestors().take_while(|d| !d.is_dir()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    create_private_dir(dir).map_err(at(dir))?;
    // Outermost first: each new directory's entry is made durable in its parent.
    for made in missing.iter().rev() {
        sync_dir(parent(made))?;
    }
    Ok(())
}

/// Creates `dir` and its parents, mode 0700: the daemon's state is its own.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// The directory holding `path` (`.` for a bare name).
pub fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// fsync of a directory: makes the entries renamed, linked or removed in it durable.
pub fn sync_dir(dir: &Path) -> Result<(), FileError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(at(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).expect("meta").permissions().mode() & 0o7777
    }

    #[test]
    fn ops1_avl1_a_durable_write_replaces_whole_with_its_mode_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("file");
        // A temp file left by a crash, group-readable: removed, not written through.
        let stale = dir.path().join(".file.tmp");
        fs::write(&stale, b"half").expect("stale");
        fs::set_permissions(&stale, fs::Permissions::from_mode(0o644)).expect("chmod");
        write_durably(&path, b"one", 0o600).expect("write");
        assert_eq!(fs::read(&path).expect("read"), b"one");
        assert_eq!(mode_of(&path), 0o600);
        write_durably(&path, b"two", 0o640).expect("replace");
        assert_eq!(fs::read(&path).expect("read"), b"two");
        assert_eq!(mode_of(&path), 0o640);
        assert!(!stale.exists());
    }

    #[test]
    fn avl1_ops1_a_durable_create_never_replaces_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key");
        create_durably(&path, b"first", 0o600).expect("create");
        assert_eq!(mode_of(&path), 0o600);
        let err = create_durably(&path, b"second", 0o600).expect_err("exists");
        assert_eq!(err.source.kind(), io::ErrorKind::AlreadyExists, "{err}");
        assert_eq!(err.path, path);
        assert_eq!(fs::read(&path).expect("read"), b"first");
        let left: Vec<_> = fs::read_dir(dir.path())
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(left, ["key"], "no temp file left");
    }
}
