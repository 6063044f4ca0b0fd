//! The service that carries the box's journal upload (`[logs]`, LOG-4): the image's
//! `systemd-journal-upload` posts to its loopback listener. Two things set it apart:
//!
//! - On an on-demand box it *rides* on the link (NET-7): its connections never bring the link
//!   up and never hold it up; one made while the link is idle is refused at once, and the open
//!   ones are closed when the link idles out. (The data plane, for its part, does not count the
//!   upload's packets as use of the link.)
//! - It says when the uploader may run: [`READY_FILE`] in the runtime folder exists while the
//!   service runs and, on an on-demand box, while its link is up. The image's uploader has the
//!   file as a start condition and a path unit starts the uploader when it appears, so an idle
//!   box does not retry an upload every few seconds, and a check-in catches up.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::carrier::{CarrierHandle, LinkState};
use crate::config::{Config, Direction, PolicyMode};
use crate::durable::remove_durably;

/// The file that exists while the uploader may run, in `paths.runtime_dir`.
pub const READY_FILE: &str = "journal-upload-ready";

/// How often the window looks for the link again after the carrier was rebuilt (its state
/// channel closed) or while nothing carries the target yet.
const RELOOK: Duration = Duration::from_secs(1);

/// The journal upload's service as the proxy treats it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalUpload {
    /// The `[[service]]` named by `[logs] upload_service`.
    pub service: String,
    /// Where it connects (the collector's inbound service at the data centre).
    pub target: SocketAddr,
    /// On an on-demand box: its connections ride on the link instead of demanding it.
    pub rides: bool,
    /// [`READY_FILE`] in the runtime folder.
    pub ready_file: PathBuf,
}

impl JournalUpload {
    /// The upload `config` asks for; `None` without `[logs]` (or, in a config that did not pass
    /// validation, without a usable outbound service).
    pub fn of(config: &Config) -> Option<JournalUpload> {
        let service = config
            .log_upload_service()
            .filter(|s| s.direction == Direction::Outbound)?;
        Some(JournalUpload {
            service: service.name.clone(),
            target: service.target.parse().ok()?,
            rides: config.policy_mode() == PolicyMode::OnDemand,
            ready_file: config.paths.runtime_dir.join(READY_FILE),
        })
    }

    /// Starts keeping [`READY_FILE`] in step; dropping or aborting the task's handle leaves
    /// no file behind once the task has ended (await it after `abort`).
    pub(super) fn keep_ready_file(&self, carrier: Option<CarrierHandle>) -> JoinHandle<()> {
        let file = ReadyFile::new(self.ready_file.clone());
        let target = self.target;
        let rides = self.rides;
        tokio::spawn(async move {
            let mut file = file;
            match carrier.filter(|_| rides) {
                // Runs whenever the service does.
                None => {
                    file.set(true);
                    std::future::pending::<()>().await;
                }
                Some(carrier) => follow_link(&carrier, target, &mut file).await,
            }
        })
    }
}

/// Sets the file while the link carrying `target` is up; follows the carrier through rebuilds.
async fn follow_link(carrier: &CarrierHandle, target: SocketAddr, file: &mut ReadyFile) {
    loop {
        let Some(mut state) = carrier.watch_state(target.ip()) else {
            file.set(false);
            tokio::time::sleep(RELOOK).await;
            continue;
        };
        loop {
            let up = *state.borrow_and_update() == LinkState::Up;
            file.set(up);
            if state.changed().await.is_err() {
                // The link was rebuilt for a config change: look it up again.
                file.set(false);
                tokio::time::sleep(RELOOK).await;
                break;
            }
        }
    }
}

/// The ready file, removed when dropped (the task ended or was aborted).
struct ReadyFile {
    path: PathBuf,
    present: Option<bool>,
}

impl ReadyFile {
    fn new(path: PathBuf) -> Self {
        ReadyFile {
            path,
            present: None,
        }
    }

    /// Makes the file exist or not; a failure is logged, and tried again on the next change.
    fn set(&mut self, present: bool) {
        if self.present == Some(present) {
            return;
        }
        let result = if present {
            std::fs::write(&self.path, b"").map_err(|e| e.to_string())
        } else {
            remove_durably(&self.path).map_err(|e| e.to_string())
        };
        match result {
            Ok(()) => {
                tracing::debug!(file = %self.path.display(), present, "journal upload window");
                self.present = Some(present);
            }
            Err(err) => {
                tracing::warn!(file = %self.path.display(), error = %err, "cannot mark the journal upload's window");
                self.present = None;
            }
        }
    }
}

impl Drop for ReadyFile {
    fn drop(&mut self) {
        if let Err(err) = remove_durably(&self.path) {
            tracing::warn!(file = %self.path.display(), error = %err, "cannot remove the journal upload's window file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_with(base: &str, extra: &str) -> Config {
        toml::from_str(&format!("{base}\n{extra}")).expect("the example with extra sections")
    }

    const JOURNAL: &str = "[[service]]\nname = \"journal\"\ndirection = \"outbound\"\n\
        listen = \"127.0.0.1:19532\"\ntarget = \"198.19.0.1:19532\"\nserver_name = \"hub.renkei.example\"\n\n[logs]\nupload_service = \"journal\"\n";

    #[test]
    fn log4_net7_the_upload_rides_on_an_on_demand_link_only() {
        let viewing = config_with(include_str!("../../../config/viewing.toml"), JOURNAL);
        let upload = JournalUpload::of(&viewing).expect("an upload");
        assert!(upload.rides);
        assert_eq!(upload.target, "198.19.0.1:19532".parse().unwrap());
        assert_eq!(
            upload.ready_file,
            std::path::Path::new("/run/renkei/journal-upload-ready")
        );
        let disclosing = config_with(include_str!("../../../config/disclosing.toml"), JOURNAL);
        assert!(!JournalUpload::of(&disclosing).expect("an upload").rides);
        let without = config_with(include_str!("../../../config/viewing.toml"), "");
        assert_eq!(JournalUpload::of(&without), None);
    }

    #[tokio::test]
    async fn log4_the_ready_file_is_there_while_a_non_riding_service_runs_and_gone_after() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let upload = JournalUpload {
            service: "journal".into(),
            target: "198.19.0.1:19532".parse().unwrap(),
            rides: false,
            ready_file: dir.path().join(READY_FILE),
        };
        let task = upload.keep_ready_file(None);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !upload.ready_file.exists() {
            assert!(tokio::time::Instant::now() < deadline, "no ready file");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        task.abort();
        let _ = task.await;
        assert!(!upload.ready_file.exists(), "the file outlived its task");
    }
}
