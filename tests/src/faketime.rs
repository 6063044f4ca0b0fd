//! A wall clock of one daemon's own, stepped by days without touching the host's: libfaketime
//! (unpacked by scripts/install-deps into target/tools/ntp, as the image boot test's NTP server
//! uses it) preloaded into that daemon, its offset read from a file at every clock read, the
//! monotonic clock left alone. The host's clock is every test's clock and is never stepped.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// Where scripts/install-deps unpacks libfaketime.
fn tools_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tools/ntp/usr/lib")
}

/// The preload library, wherever the package put it under `dir`.
fn find_library(dir: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(dir).ok()?;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = find_library(&path) {
                return Some(found);
            }
        } else if path.file_name().is_some_and(|n| n == "libfaketime.so.1") {
            return Some(path);
        }
    }
    None
}

/// One daemon's stepped wall clock.
pub struct FakeClock {
    library: PathBuf,
    offset_file: PathBuf,
}

impl FakeClock {
    /// A clock at the host's time, its offset kept in `dir`.
    pub fn new(dir: &Path) -> anyhow::Result<FakeClock> {
        let library = find_library(&tools_dir()).with_context(|| {
            format!(
                "libfaketime.so.1 not found under {} (scripts/install-deps unpacks it)",
                tools_dir().display()
            )
        })?;
        let clock = FakeClock {
            library,
            offset_file: dir.join("faketime-offset"),
        };
        clock.set("+0")?;
        Ok(clock)
    }

    /// Moves the clock to the host's plus `offset` (libfaketime's words: "+3d", "-12h", "+0"),
    /// at once: the file is replaced whole, never read half-written.
    pub fn set(&self, offset: &str) -> anyhow::Result<()> {
        let next = self.offset_file.with_extension("new");
        std::fs::write(&next, format!("{offset}\n"))?;
        std::fs::rename(&next, &self.offset_file)?;
        Ok(())
    }

    /// The launcher words that start a program on this clock (`env` executes the program in
    /// its own place, so the process stays the program's).
    pub fn launcher(&self) -> Vec<OsString> {
        let mut preload = OsString::from("LD_PRELOAD=");
        preload.push(&self.library);
        let mut file = OsString::from("FAKETIME_TIMESTAMP_FILE=");
        file.push(&self.offset_file);
        vec![
            "env".into(),
            preload,
            file,
            // Read the offset at every clock read, not once a few seconds.
            "FAKETIME_NO_CACHE=1".into(),
            // Durations (timers, the idle countdown) keep the real monotonic clock.
            "FAKETIME_DONT_FAKE_MONOTONIC=1".into(),
        ]
    }
}
