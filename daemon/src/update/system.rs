//! The box's side of an update, as root: `rauc status`, `rauc install`, `rauc status
//! mark-good|mark-bad` (the rauc service on the system D-Bus does the work; its `custom`
//! bootloader backend drives systemd-boot), and `systemctl reboot`.
//!
//! [`System`] is the seam between these calls and the decisions of the install and the boot's
//! health check ([`super::apply`], [`super::boot`]): the decisions are tested over real files
//! with a system whose answers the test gives; the calls themselves are the real tools.

use std::future::Future;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};

use super::rauc::{last_words, RAUC_PROGRAM};
use super::records::Progress;
use super::slots::{SlotStatus, StatusParseError};

/// `rauc status` reads the slots and asks the bootloader backend; longer is a hang.
pub const RAUC_STATUS_TIMEOUT_SECS: u64 = 60;
/// `rauc install` writes a root slot (hundreds of MiB) through dm-verity; under QEMU's TCG
/// this takes minutes. Longer than this is a hang.
pub const RAUC_INSTALL_TIMEOUT_SECS: u64 = 3600;
/// `rauc status mark-good|mark-bad` runs the backend (`bootctl`); longer is a hang.
pub const RAUC_MARK_TIMEOUT_SECS: u64 = 60;
/// `systemctl reboot` only queues the reboot; longer is a hang.
pub const REBOOT_TIMEOUT_SECS: u64 = 60;
/// systemd's control tool.
pub const SYSTEMCTL_PROGRAM: &str = "systemctl";
/// The kernel's id of this boot.
pub const BOOT_ID_FILE: &str = "/proc/sys/kernel/random/boot_id";

/// A tool that did not do its job.
#[derive(Debug, thiserror::Error)]
pub enum SystemError {
    /// It could not be started.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: &'static str,
        /// What the OS said.
        source: std::io::Error,
    },
    /// It took too long.
    #[error("{program} {what} took longer than {limit_secs} s")]
    TimedOut {
        /// The program.
        program: &'static str,
        /// Its subcommand.
        what: &'static str,
        /// The limit.
        limit_secs: u64,
    },
    /// It said no.
    #[error("{program} {what} failed: {words}")]
    Failed {
        /// The program.
        program: &'static str,
        /// Its subcommand.
        what: &'static str,
        /// Its last words.
        words: String,
    },
    /// rauc's status was not understood.
    #[error(transparent)]
    Status(#[from] StatusParseError),
}

/// Which way a slot is marked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// `rauc status mark-good`: the booted slot becomes the default.
    Good,
    /// `rauc status mark-bad`: the booted slot is given up.
    Bad,
}

/// What the install and the health check need from the box.
pub trait System {
    /// The kernel's id of this boot.
    fn boot_id(&self) -> String;
    /// The slot this boot came from (`rauc.slot=`), or `unknown`.
    fn booted_slot(&self) -> String;
    /// `rauc status --detailed --output-format=json`.
    fn slot_status(&self) -> impl Future<Output = Result<SlotStatus, SystemError>>;
    /// `rauc install BUNDLE`, every progress line handed to `progress`.
    fn install(
        &self,
        bundle: &Path,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> impl Future<Output = Result<(), SystemError>>;
    /// `rauc status mark-good|mark-bad` of the booted slot.
    fn mark(&self, mark: Mark) -> impl Future<Output = Result<(), SystemError>>;
    /// `systemctl reboot`.
    fn reboot(&self) -> impl Future<Output = Result<(), SystemError>>;
}

/// The real box: the real tools on `PATH`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Host;

impl System for Host {
    fn boot_id(&self) -> String {
        std::fs::read_to_string(BOOT_ID_FILE)
            .map(|id| id.trim().to_string())
            .unwrap_or_default()
    }

    fn booted_slot(&self) -> String {
        super::status::booted_slot_now()
    }

    async fn slot_status(&self) -> Result<SlotStatus, SystemError> {
        let output = run(
            RAUC_PROGRAM,
            "status",
            &["status", "--detailed", "--output-format=json"],
            RAUC_STATUS_TIMEOUT_SECS,
        )
        .await?;
        Ok(SlotStatus::parse(&output)?)
    }

    async fn install(
        &self,
        bundle: &Path,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<(), SystemError> {
        install(bundle, progress).await
    }

    async fn mark(&self, mark: Mark) -> Result<(), SystemError> {
        let word = match mark {
            Mark::Good => "mark-good",
            Mark::Bad => "mark-bad",
        };
        run(
            RAUC_PROGRAM,
            "status",
            &["status", word],
            RAUC_MARK_TIMEOUT_SECS,
        )
        .await
        .map(drop)
    }

    async fn reboot(&self) -> Result<(), SystemError> {
        run(
            SYSTEMCTL_PROGRAM,
            "reboot",
            &["reboot"],
            REBOOT_TIMEOUT_SECS,
        )
        .await
        .map(drop)
    }
}

/// Runs `program args` to its end within `limit_secs`; its standard output, or its last words.
async fn run(
    program: &'static str,
    what: &'static str,
    args: &[&str],
    limit_secs: u64,
) -> Result<Vec<u8>, SystemError> {
    let mut command = tokio::process::Command::new(program);
    command.args(args).stdin(Stdio::null()).kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(limit_secs), command.output())
        .await
        .map_err(|_| SystemError::TimedOut {
            program,
            what,
            limit_secs,
        })?
        .map_err(|source| SystemError::Spawn { program, source })?;
    if !output.status.success() {
        let words = if output.stderr.iter().any(|b| !b.is_ascii_whitespace()) {
            last_words(&output.stderr)
        } else {
            last_words(&output.stdout)
        };
        return Err(SystemError::Failed {
            program,
            what,
            words,
        });
    }
    Ok(output.stdout)
}

/// `rauc install --progress BUNDLE`: rauc prints one line per step (` 40% Copying image to
/// rootfs.1`); each is handed to `progress` as it comes. rauc's own error (`LastError: ...`,
/// or its standard error) is the failure's words.
async fn install(
    bundle: &Path,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<(), SystemError> {
    const WHAT: &str = "install";
    let mut child = tokio::process::Command::new(RAUC_PROGRAM)
        .arg("install")
        .arg("--progress")
        .arg(bundle)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| SystemError::Spawn {
            program: RAUC_PROGRAM,
            source,
        })?;
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let run = async {
        let mut last_error = None;
        if let Some(stdout) = stdout {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(error) = line.split_once("LastError:").map(|(_, e)| e.trim()) {
                    last_error = Some(last_words(error.as_bytes()));
                } else if let Some(step) = parse_progress(&line) {
                    progress(step);
                }
            }
        }
        let mut errors = Vec::new();
        if let Some(mut stderr) = stderr {
            let _ = stderr.read_to_end(&mut errors).await;
        }
        let status = child.wait().await;
        (status, last_error, errors)
    };
    let (status, last_error, errors) =
        tokio::time::timeout(Duration::from_secs(RAUC_INSTALL_TIMEOUT_SECS), run)
            .await
            .map_err(|_| SystemError::TimedOut {
                program: RAUC_PROGRAM,
                what: WHAT,
                limit_secs: RAUC_INSTALL_TIMEOUT_SECS,
            })?;
    let status = status.map_err(|source| SystemError::Spawn {
        program: RAUC_PROGRAM,
        source,
    })?;
    if status.success() {
        return Ok(());
    }
    Err(SystemError::Failed {
        program: RAUC_PROGRAM,
        what: WHAT,
        words: last_error.unwrap_or_else(|| last_words(&errors)),
    })
}

/// A progress line of `rauc install` (` 40% Copying image to rootfs.1`, perhaps behind a
/// terminal's escape codes), or `None` for any other line.
pub fn parse_progress(line: &str) -> Option<Progress> {
    let clean: String = line.chars().filter(|c| !c.is_control()).collect();
    let (before, step) = clean.split_once("% ")?;
    // What a terminal's escape codes leave once their control characters are gone.
    let digits = before.trim_start_matches([' ', '[', 'F', 'J']);
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let percent: u8 = digits.parse().ok().filter(|p| *p <= 100)?;
    let step = step.trim();
    (!step.is_empty()).then(|| Progress {
        percent,
        step: step.chars().take(super::records::MAX_STEP_CHARS).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avl5_rauc_install_progress_lines_are_read_and_other_lines_are_not() {
        assert_eq!(
            parse_progress(" 40% Copying image to rootfs.1"),
            Some(Progress {
                percent: 40,
                step: "Copying image to rootfs.1".into()
            })
        );
        assert_eq!(
            parse_progress("\r\x1b[F\x1b[J100% Installing done."),
            Some(Progress {
                percent: 100,
                step: "Installing done.".into()
            })
        );
        assert_eq!(parse_progress("installing: 5% of nothing"), None);
        assert_eq!(parse_progress("Installing `/x.raucb` succeeded"), None);
        assert_eq!(parse_progress("250% too much"), None);
        assert_eq!(parse_progress("  7% "), None);
    }
}

/// A box whose answers a test gives: the decisions of the install and of the boot's check are
/// tested with it over real files; what rauc and systemctl themselves do is not claimed here.
#[cfg(test)]
pub(crate) mod given {
    use std::cell::RefCell;
    use std::path::{Path, PathBuf};

    use super::{Mark, System, SystemError};
    use crate::update::records::{InstallingRecord, Progress, INSTALLING_RECORD};
    use crate::update::slots::SlotStatus;

    /// `rauc status --output-format=json` of a box with root slots A and B, `booted` running,
    /// the slots in `good` marked good.
    pub fn rauc_status(booted: &str, good: &[&str]) -> String {
        let slot = |n: u8, name: &str| {
            let state = if good.contains(&name) { "good" } else { "bad" };
            let running = if name == booted { "booted" } else { "inactive" };
            format!(
                r#"{{"rootfs.{n}":{{"class":"rootfs","device":"/dev/x{n}","type":"ext4","bootname":"{name}","state":"{running}","boot_status":"{state}"}}}}"#
            )
        };
        format!(
            r#"{{"compatible":"renkei-x86_64","booted":"{booted}","slots":[{},{}]}}"#,
            slot(0, "A"),
            slot(1, "B")
        )
    }

    /// The box's answers, and what was asked of it.
    pub struct GivenSystem {
        pub boot_id: String,
        pub booted: String,
        /// rauc's status JSON, or its failure.
        pub status: Result<String, String>,
        /// The progress lines the install reports, then its result.
        pub install: (Vec<Progress>, Result<(), String>),
        /// Where `installing.json` is read after each progress line.
        pub spool_dir: PathBuf,
        pub installs: RefCell<Vec<PathBuf>>,
        pub installing_seen: RefCell<Vec<Option<InstallingRecord>>>,
        pub marks: RefCell<Vec<Mark>>,
        pub reboots: RefCell<u32>,
    }

    impl GivenSystem {
        pub fn new(spool_dir: &Path, booted: &str, good: &[&str]) -> GivenSystem {
            GivenSystem {
                boot_id: "boot-1".into(),
                booted: booted.into(),
                status: Ok(rauc_status(booted, good)),
                install: (Vec::new(), Ok(())),
                spool_dir: spool_dir.to_path_buf(),
                installs: RefCell::default(),
                installing_seen: RefCell::default(),
                marks: RefCell::default(),
                reboots: RefCell::default(),
            }
        }
    }

    fn failed(what: &'static str, words: &str) -> SystemError {
        SystemError::Failed {
            program: "rauc",
            what,
            words: words.to_string(),
        }
    }

    impl System for GivenSystem {
        fn boot_id(&self) -> String {
            self.boot_id.clone()
        }

        fn booted_slot(&self) -> String {
            self.booted.clone()
        }

        async fn slot_status(&self) -> Result<SlotStatus, SystemError> {
            match &self.status {
                Ok(json) => Ok(SlotStatus::parse(json.as_bytes())?),
                Err(words) => Err(failed("status", words)),
            }
        }

        async fn install(
            &self,
            bundle: &Path,
            progress: &mut (dyn FnMut(Progress) + Send),
        ) -> Result<(), SystemError> {
            self.installs.borrow_mut().push(bundle.to_path_buf());
            for step in &self.install.0 {
                progress(step.clone());
                self.installing_seen
                    .borrow_mut()
                    .push(crate::update::records::read_record(
                        &self.spool_dir.join(INSTALLING_RECORD),
                    ));
            }
            self.install.1.clone().map_err(|w| failed("install", &w))
        }

        async fn mark(&self, mark: Mark) -> Result<(), SystemError> {
            self.marks.borrow_mut().push(mark);
            Ok(())
        }

        async fn reboot(&self) -> Result<(), SystemError> {
            *self.reboots.borrow_mut() += 1;
            Ok(())
        }
    }
}
