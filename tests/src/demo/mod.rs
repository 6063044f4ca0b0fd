//! The demo lab that outlives the command that started it: `lab up`, `lab down`, `lab.json`.
//!
//! The lab runs on either carrier the test lab builds ([`LabCarrier`], `lab up --carrier`):
//! renkei's WireGuard tunnels (the default), or a closed network (routed, no tunnel), where the
//! same three facilities, services and commands work on the boxes' link addresses, and the
//! commands that show WireGuard's peers show the closed carrier's own view instead.
//!
//! `lab up` starts a *keeper* (`lab keep`, in its own session so a terminal's Ctrl-C does not
//! reach it) that builds a [`Lab`], runs the document server on the hospital LAN and the three
//! renkei daemons with their full configs (TLS services, status page, management API), records
//! everything in `lab.json`, and then holds the lab until SIGTERM, when dropping the lab removes
//! it. The keeper reports the lab up only once every status page answers, and every metrics
//! listener and management API listens; `lab up` waits for that (bounded), prints the summary
//! and returns, or fails.
//!
//! `lab down` asks the keeper to stop and then removes, from `lab.json`, whatever is still
//! there: processes (checked by start time, so a recycled pid is never killed), then any
//! process still inside the lab's namespaces or running from its folder (a daemon the keeper
//! started but had not recorded when it died), namespaces, WireGuard sockets and the lab's
//! folder. It works the same after a crash, and `lab up` runs
//! it first whenever a `lab.json` is left. `lab.json` is read back as untrusted input: every
//! name and path in it is checked to be one the lab could have made before anything is removed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::lab::LabCarrier;

mod keeper;
mod processes;
mod record;
mod summary;
mod teardown;
mod to_try;

pub use keeper::{demo_config, keep, up};
pub use processes::{parse_start_time, processes_using, start_time};
pub use record::{
    ClientRecord, CommandRecord, ConfigPushRecord, DocumentServerRecord, LabRecord, Listener,
    Management, NodeRecord, PkiRecord, Process, StatusPage,
};
pub use summary::summary;
pub use teardown::{down, leftovers, teardown, Leftovers};

/// Version of the `lab.json` layout; a file with another version is refused, not guessed at.
pub const FORMAT: u32 = 1;
/// The record's file name inside the state folder.
pub const RECORD_FILE: &str = "lab.json";
/// The keeper's log (its stdout and stderr) inside the state folder.
pub const KEEPER_LOG: &str = "keeper.log";
/// How long `lab up` waits for the keeper to report the lab up.
pub const UP_TIMEOUT: Duration = Duration::from_secs(120);
/// How long `lab down` gives the keeper, then each process, to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long `lab up` waits for every status page, metrics listener and management API to
/// answer; one that does not is an error, and the lab does not come up.
pub const LISTENER_TIMEOUT: Duration = Duration::from_secs(30);
/// Port of the status pages (as in `config/*.toml`).
pub const STATUS_PORT: u16 = 9443;
/// Port of the operator's metrics listener on the link address (tunnel or closed network).
pub const METRICS_PORT: u16 = 9100;
/// Port of the management API on the link address (as in `config/*.toml`).
pub const MANAGEMENT_PORT: u16 = 7443;
/// `management.confirm_timeout_secs` of every box in the demo: how long a pushed config runs
/// on probation before it rolls back unless confirmed.
pub const CONFIRM_TIMEOUT_SECS: u64 = 120;
/// The operator's identity in its client certificate (what boxes record as `pushed_by`).
pub const OPERATOR_IDENTITY: &str = "operator.renkei.example";
/// `--wait-secs` of the printed `renkei push`: how long it retries a box that does not answer.
pub const PUSH_WAIT_SECS: u64 = 60;
/// Default idle timeout of the clinic's on-demand tunnel in the demo: long enough to look
/// around after a fetch, short enough to watch it close.
pub const DEFAULT_CLINIC_IDLE_SECS: u32 = 60;

/// Where `lab` keeps `lab.json` by default: `RENKEI_LAB_DIR`, else `target/lab` of the
/// checkout the binary was built from.
pub fn default_state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("RENKEI_LAB_DIR") {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/lab")
}

/// What `lab up` may change about the lab.
#[derive(Debug, Clone)]
pub struct Options {
    /// How the boxes reach the data centre (`--carrier`).
    pub carrier: LabCarrier,
    /// `tunnel.policy.idle_timeout_secs` of the clinic (10 to 86400); a closed network has no
    /// tunnel to idle out, so it does not apply there.
    pub clinic_idle_timeout_secs: u32,
    /// The operator's config signing key (from `renkei keygen --operator`) that every box
    /// trusts; `None`: the lab makes one. Lets the operator's guide be followed from its first
    /// step: the key exists before the boxes are installed.
    pub signing_key: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            carrier: LabCarrier::WireGuard,
            clinic_idle_timeout_secs: DEFAULT_CLINIC_IDLE_SECS,
            signing_key: None,
        }
    }
}
