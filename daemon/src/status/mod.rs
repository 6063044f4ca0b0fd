//! What the daemon reports about itself: the status document shared by `renkei status`, the
//! JSON API, the status page and `/metrics`. Every field is read from the running parts;
//! nothing is a placeholder. No field ever holds key material.

pub mod assets;
pub mod auth;
pub mod cert;
pub mod control;
pub mod events;
pub mod facilities;
pub mod facts;
pub mod http;
pub mod metrics;
pub mod second_factor;

use serde::Serialize;

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::carrier::{CarrierHandle, CarrierSnapshot};
use crate::config::Config;
use crate::enrolment::Enrolment;
use crate::proxy::{ProxySnapshot, ProxyStatus};
use crate::state::config_snapshot::ConfigSnapshot;
use crate::state::events::{Event, EventLog};
use crate::tls::credentials::{CertExpiry, EXPIRY_WARNING_DAYS};
use crate::tls::CredentialStore;
use crate::update::spool::Spool;
use crate::update::status::{firmware_summary, FirmwareSummary};
pub use http::{
    serve_enrolment, EnrolmentServer, HttpError, PageStats, StatusPageInfo, StatusServer,
};

/// The status document (`renkei status --json`).
#[derive(Debug, Clone, Serialize)]
pub struct StatusDocument {
    /// Facility name.
    pub facility: String,
    /// hub, disclosing or viewing.
    pub role: &'static str,
    /// Running configuration version (the same as `config.version`).
    pub config_version: u64,
    /// The running configuration: version, description, who pushed it and when, and a pushed
    /// one awaiting confirmation.
    pub config: ConfigState,
    /// renkei version.
    pub version: &'static str,
    /// Seconds since the daemon started.
    pub uptime_secs: u64,
    /// The link to the data centre (the carrier): generic fields, and its kind's own in
    /// `backend`. Named `tunnel` as the page and the API always called it.
    pub tunnel: CarrierSnapshot,
    /// Whether the administrator may bring the tunnel up and down by hand (connect now,
    /// disconnect): only on a viewing box with an on-demand tunnel. The page shows the buttons
    /// only then, and the server refuses the requests otherwise.
    pub tunnel_actions: bool,
    /// The facility's primary and backup hubs (AVL-4): which one the box uses, each one's
    /// health, failovers; absent on a box without `[tunnel.failover]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hubs: Option<crate::carrier::HubsSnapshot>,
    /// Proxied services and the recent access log; absent when the box runs no services.
    pub proxy: Option<ProxySnapshot>,
    /// Every certificate in use (box chain, operator CA) with days to expiry counted now, not
    /// at load time (NET-5: 30 days or fewer is a warning).
    pub certificates: Vec<CertExpiry>,
    /// The last [`crate::state::events::EVENT_RING_LEN`] events, oldest first.
    pub events: Vec<Event>,
    /// The box's public enrolment data (OPS-1); absent when the key cannot be read.
    pub enrolment: Option<Enrolment>,
    /// The status page itself: where it listens and its certificate fingerprint.
    pub status_page: Option<StatusPageInfo>,
    /// The box's clock when this document was made (seconds since the Unix epoch), so
    /// countdowns and ages can be computed against the box, not the viewer.
    pub time_unix: u64,
    /// Whether the kernel says the clock is synchronized (NTP); `None` when it cannot tell.
    /// Certificates depend on it.
    pub clock_synchronized: Option<bool>,
    /// The firmware: running version, booted slot, the last update's outcome (AVL-5).
    pub firmware: FirmwareSummary,
}

/// The running configuration, for the page's config block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigState {
    /// `meta.version`.
    pub version: u64,
    /// `meta.description`.
    pub description: Option<String>,
    /// Fingerprint of the operator key that signed it; `None` for a local file.
    pub signer: Option<String>,
    /// The operator identity (client certificate) that pushed it: who, where `signer` is only
    /// which key.
    pub pushed_by: Option<String>,
    /// When it was pushed (seconds since the Unix epoch); `None` for a local file.
    pub pushed_at_unix: Option<u64>,
    /// SHA-256 of the config file's bytes, to compare with the operator's copy.
    pub sha256: Option<String>,
    /// `confirmed` or `pending`.
    pub state: &'static str,
    /// When it was applied or confirmed (seconds since the Unix epoch); at start for a local
    /// file.
    pub applied_at_unix: Option<u64>,
    /// A pushed config awaiting confirmation, if any.
    pub pending: Option<PendingConfig>,
}

/// A pushed configuration running on probation: rolled back unless confirmed by the deadline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PendingConfig {
    /// Its `meta.version`.
    pub version: u64,
    /// Who signed it.
    pub signer: Option<String>,
    /// The version restored if it is not confirmed.
    pub previous_version: Option<u64>,
    /// When it is rolled back unless confirmed (seconds since the Unix epoch).
    pub confirm_deadline_unix: u64,
}

impl ConfigState {
    /// The state of a config read from a local file at start: not pushed, nothing pending.
    pub fn local(config: &Config) -> Self {
        ConfigState {
            version: config.meta.version,
            description: config.meta.description.clone(),
            signer: None,
            pushed_by: None,
            pushed_at_unix: None,
            sha256: None,
            state: "confirmed",
            applied_at_unix: Some(unix_now()),
            pending: None,
        }
    }

    /// The block as the control path's manager sees it (after a push, confirm or rollback).
    pub fn from_snapshot(snapshot: &ConfigSnapshot) -> Self {
        ConfigState {
            version: snapshot.version,
            description: snapshot.description.clone(),
            signer: snapshot.signer.clone(),
            pushed_by: snapshot.pushed_by.clone(),
            pushed_at_unix: snapshot.pushed_at_unix,
            sha256: Some(snapshot.sha256.clone()),
            state: snapshot.state,
            applied_at_unix: snapshot.since_unix,
            pending: snapshot
                .confirm_deadline_unix
                .map(|confirm_deadline_unix| PendingConfig {
                    version: snapshot.version,
                    signer: snapshot.signer.clone(),
                    previous_version: snapshot.previous_version,
                    confirm_deadline_unix,
                }),
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Where systemd-timesyncd keeps its runtime state: it makes the folder when it runs and the
/// file `synchronized` in it once it has set the clock from a server.
const TIMESYNCD_STATE_DIR: &str = "/run/systemd/timesync";

/// The kernel's view of clock synchronization (`adjtimex`: not `TIME_ERROR`). Where the
/// sandbox forbids adjtimex(2) (the image's renkei.service: `ProtectClock=yes` denies the whole
/// syscall, reading included), systemd-timesyncd's own word for it.
fn clock_synchronized() -> Option<bool> {
    // SAFETY: adjtimex with `modes = 0` only reads; the struct is plain data, zero is valid.
    let mut timex: libc::timex = unsafe { std::mem::zeroed() };
    let state = unsafe { libc::adjtimex(&mut timex) };
    if state >= 0 {
        return Some(state != libc::TIME_ERROR);
    }
    timesyncd_synchronized(Path::new(TIMESYNCD_STATE_DIR))
}

/// Whether timesyncd (state in `dir`) has synchronized the clock; `None` where it does not run.
fn timesyncd_synchronized(dir: &Path) -> Option<bool> {
    dir.is_dir().then(|| dir.join("synchronized").exists())
}

/// Where the certificate signing request sits: `box.csr` next to the WireGuard key (as
/// [`crate::enrolment::DEFAULT_CSR_FILE`] sits next to the default key).
pub fn csr_file_for(private_key_file: &Path) -> std::path::PathBuf {
    let name = Path::new(crate::enrolment::DEFAULT_CSR_FILE)
        .file_name()
        .unwrap_or_default();
    private_key_file
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join(name)
}

/// What a pushed config may change about who the box is: read for every document and every
/// tunnel button, so the page, the API, `renkei status`, the metrics and the permission to
/// connect or disconnect all follow a push instead of the config the daemon started with.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Identity {
    facility: String,
    role: &'static str,
    tunnel_actions: bool,
    /// The firmware update spool (the configured one, else where it would be): the last
    /// update's result stays meaningful after a config without `[update]` is pushed.
    update_spool: std::path::PathBuf,
}

impl Identity {
    fn of(config: &Config) -> Self {
        Identity {
            facility: config.facility.name.clone(),
            role: config.facility.role.as_str(),
            // A closed network has no link to bring up or take down: its buttons would do
            // nothing.
            tunnel_actions: config.facility.role == crate::config::Role::Viewing
                && config.policy_mode() == crate::config::PolicyMode::OnDemand
                && config.closed.is_none(),
            update_spool: config.update_spool_dir().unwrap_or_else(|| {
                config
                    .paths
                    .state_dir
                    .join(crate::config::UPDATE_SPOOL_DIR_NAME)
            }),
        }
    }
}

/// Builds status documents from the running parts.
#[derive(Clone)]
pub struct StatusSource {
    identity: Arc<RwLock<Identity>>,
    started: std::time::Instant,
    tunnel: CarrierHandle,
    proxy: Option<ProxyStatus>,
    tls: Option<Arc<CredentialStore>>,
    config_state: Arc<Mutex<ConfigState>>,
    events: Option<EventLog>,
    enrolment: Option<Enrolment>,
    /// The running status server's numbers; replaced when a push restarts the page and
    /// cleared when it stops, so the block never describes a server that is gone.
    status_page: Arc<RwLock<Option<Arc<PageStats>>>>,
}

impl StatusSource {
    /// A source for the given config and running carrier.
    pub fn new(config: &Config, tunnel: CarrierHandle) -> Self {
        StatusSource {
            identity: Arc::new(RwLock::new(Identity::of(config))),
            started: std::time::Instant::now(),
            tunnel,
            proxy: None,
            tls: None,
            config_state: Arc::new(Mutex::new(ConfigState::local(config))),
            events: None,
            enrolment: None,
            status_page: Arc::new(RwLock::new(None)),
        }
    }

    /// Takes the facility name, role and tunnel-button permission from `config` (the
    /// supervisor calls this after every push, confirm and rollback, beside
    /// [`StatusSource::set_config_state`]); every clone of this source sees the change.
    pub fn set_identity(&self, config: &Config) {
        *self
            .identity
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Identity::of(config);
    }

    fn identity(&self) -> Identity {
        self.identity
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Adds the event ring the page shows.
    pub fn with_events(mut self, events: EventLog) -> Self {
        self.events = Some(events);
        self
    }

    /// Adds the box's public enrolment data.
    pub fn with_enrolment(mut self, enrolment: Enrolment) -> Self {
        self.enrolment = Some(enrolment);
        self
    }

    /// The event ring, for the parts that push events.
    pub fn events(&self) -> Option<&EventLog> {
        self.events.as_ref()
    }

    /// Replaces the config block (the control path calls this on push, apply, confirm and
    /// rollback); every clone of this source sees the change.
    pub fn set_config_state(&self, state: ConfigState) {
        *self
            .config_state
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = state;
    }

    /// The current config block.
    pub fn config_state(&self) -> ConfigState {
        self.config_state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Called by each status server that starts, so documents describe the page now serving
    /// (a push that changes `[status]` or `[tls]` starts a new one).
    pub fn set_status_page(&self, stats: Arc<PageStats>) {
        *self
            .status_page
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(stats);
    }

    /// Called by a status server that stops: the block goes, unless another server has
    /// already replaced it.
    pub fn clear_status_page(&self, stats: &Arc<PageStats>) {
        let mut page = self
            .status_page
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if page
            .as_ref()
            .is_some_and(|current| Arc::ptr_eq(current, stats))
        {
            *page = None;
        }
    }

    fn status_page(&self) -> Option<StatusPageInfo> {
        self.status_page
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|s| s.snapshot())
    }

    /// Adds the TLS material in use, for the certificates and their expiry.
    pub fn with_tls(mut self, store: Arc<CredentialStore>) -> Self {
        self.tls = Some(store);
        self
    }

    /// Adds the running services to the documents this source builds.
    pub fn with_proxy(mut self, proxy: ProxyStatus) -> Self {
        self.proxy = Some(proxy);
        self
    }

    /// The current document.
    pub fn document(&self) -> StatusDocument {
        let config = self.config_state();
        let identity = self.identity();
        StatusDocument {
            facility: identity.facility,
            role: identity.role,
            config_version: config.version,
            config,
            version: env!("CARGO_PKG_VERSION"),
            uptime_secs: self.started.elapsed().as_secs(),
            tunnel: self.tunnel.snapshot(),
            tunnel_actions: identity.tunnel_actions,
            hubs: self.tunnel.hubs(),
            proxy: self.proxy.as_ref().map(ProxyStatus::snapshot),
            certificates: self.certificates(),
            events: self
                .events
                .as_ref()
                .map(EventLog::snapshot)
                .unwrap_or_default(),
            enrolment: self.enrolment.clone(),
            status_page: self.status_page(),
            time_unix: unix_now(),
            clock_synchronized: clock_synchronized(),
            firmware: firmware_summary(Some(&Spool::new(identity.update_spool))),
        }
    }

    fn certificates(&self) -> Vec<CertExpiry> {
        let Some(store) = &self.tls else {
            return Vec::new();
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        store
            .current()
            .expiries
            .iter()
            .map(|e| {
                let mut e = e.clone();
                e.days_left = (e.not_after_unix - now).div_euclid(86_400);
                e.warning = e.days_left <= EXPIRY_WARNING_DAYS;
                e
            })
            .collect()
    }

    /// The carrier, for the control commands.
    pub fn tunnel(&self) -> &CarrierHandle {
        &self.tunnel
    }

    /// `Err` with the reason when the administrator may not connect or disconnect the tunnel
    /// by hand: a hub or disclosing box keeps its tunnel always on, and a button there would
    /// only tear down sessions the policy brings straight back.
    pub fn check_tunnel_actions(&self) -> Result<(), String> {
        let identity = self.identity();
        if identity.tunnel_actions {
            Ok(())
        } else {
            Err(format!(
                "connect and disconnect are only for a viewing box with an on-demand tunnel or SA (a closed network has none); this box is {} ({})",
                identity.role,
                self.tunnel.snapshot().policy
            ))
        }
    }
}

/// The IPsec link's lines: the IKE SA (state, who authenticated, what was negotiated), the
/// CHILD SA's traffic, and a terminated SA's profile violation, so an operator on the console
/// sees at once whether the concentrator is up and inside the CRYPTREC profile.
fn ipsec_lines(out: &mut String, ipsec: &serde_json::Value) {
    use std::fmt::Write as _;
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".to_string(),
        other => other.to_string(),
    };
    let ike = &ipsec["ike"];
    if ike.is_null() {
        let _ = writeln!(
            out,
            "  ipsec: no IKE SA with {} ({})",
            text(&ipsec["remote_id"]),
            text(&ipsec["remote_address"])
        );
    } else {
        let _ = writeln!(
            out,
            "  ipsec: IKE {} as {}, {}-{} / {} / {} / {}",
            text(&ike["state"]),
            text(&ike["remote_id"]),
            text(&ike["encryption"]),
            text(&ike["key_size_bits"]),
            text(&ike["integrity"]),
            text(&ike["prf"]),
            text(&ike["dh_group"])
        );
    }
    let child = &ipsec["child"];
    if child.is_null() {
        let _ = writeln!(out, "  child: none");
    } else {
        let _ = writeln!(
            out,
            "  child: {} {}-{}, {} B in, {} B out",
            text(&child["state"]),
            text(&child["encryption"]),
            text(&child["key_size_bits"]),
            text(&child["bytes_in"]),
            text(&child["bytes_out"])
        );
    }
    let total = &ipsec["total"];
    if !total.is_null() {
        let _ = writeln!(
            out,
            "  total since start: {} B in, {} B out (every CHILD SA)",
            text(&total["bytes_in"]),
            text(&total["bytes_out"])
        );
    }
    if !ipsec["profile_violation"].is_null() {
        let _ = writeln!(
            out,
            "  OUTSIDE THE CRYPTREC PROFILE, terminated: {}",
            text(&ipsec["profile_violation"])
        );
    }
}

/// The hub group's line of the summary (AVL-4): the active hub, each member's health, the
/// operator's preference and the failovers; nothing without a group.
fn hubs_summary(out: &mut String, hubs: &serde_json::Value) {
    use std::fmt::Write as _;
    let Some(members) = hubs["members"].as_array() else {
        return;
    };
    let list: Vec<String> = members
        .iter()
        .map(|m| {
            format!(
                "{}{} {}{}",
                m["name"].as_str().unwrap_or("?"),
                if m["active"] == true { " (active)" } else { "" },
                if m["healthy"] == true {
                    "healthy"
                } else {
                    "not answering"
                },
                if m["preferred"] == true {
                    ", preferred by the operator"
                } else {
                    ""
                }
            )
        })
        .collect();
    let _ = writeln!(
        out,
        "hubs: {}; {} failovers",
        list.join(", "),
        hubs["failovers"].as_u64().unwrap_or(0)
    );
}

/// Peers `renkei status` prints one by one: every one up to this many (a facility box, a small
/// hub); beyond (a hub with many facilities: thousands of lines), counts per state and those in
/// alarm, at most this many. The same cut as the page's `?peers=summary`.
pub const SUMMARY_PEERS: usize = facilities::MAX_SUMMARY_PEERS;

/// How many peers a summary prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerDetail {
    /// Every peer up to [`SUMMARY_PEERS`]; beyond, counts per state and those in alarm.
    Summarised,
    /// Every peer, however many (`renkei status --all`).
    Every,
}

/// The order states are counted in: the usual first.
const SUMMARY_STATES: [&str; 4] = ["up", "connecting", "idle", "down"];

/// The peers' part of the summary: each peer's lines, or on a box with more than
/// [`SUMMARY_PEERS`] (unless `detail` asks for every one) a count per state and the lines of
/// those in alarm (at most [`SUMMARY_PEERS`]), with where to find the rest.
fn peers_summary(
    out: &mut String,
    peers: &[serde_json::Value],
    detail: PeerDetail,
    text: &dyn Fn(&serde_json::Value) -> String,
) {
    use std::fmt::Write as _;
    if detail == PeerDetail::Every || peers.len() <= SUMMARY_PEERS {
        for peer in peers {
            peer_lines(out, peer, text);
        }
        return;
    }
    let mut counts: Vec<(String, usize)> = SUMMARY_STATES
        .iter()
        .map(|state| (state.to_string(), 0))
        .collect();
    for peer in peers {
        let state = text(&peer["state"]);
        match counts.iter_mut().find(|(name, _)| *name == state) {
            Some((_, count)) => *count += 1,
            None => counts.push((state, 1)),
        }
    }
    let in_alarm: Vec<&serde_json::Value> = peers
        .iter()
        .filter(|p| p["alarm"] == serde_json::Value::Bool(true))
        .collect();
    let by_state: Vec<String> = counts
        .iter()
        .map(|(state, count)| format!("{count} {state}"))
        .collect();
    let _ = writeln!(
        out,
        "
peers: {} ({}), {} in alarm",
        peers.len(),
        by_state.join(", "),
        in_alarm.len()
    );
    let shown = in_alarm.len().min(SUMMARY_PEERS);
    let _ = writeln!(
        out,
        "  {}; every peer: `renkei status --all`, or the status page's facilities (/api/v1/facilities)",
        if in_alarm.is_empty() {
            "none in alarm".to_string()
        } else if shown < in_alarm.len() {
            format!("the first {shown} of those in alarm below")
        } else {
            "those in alarm below".to_string()
        }
    );
    for peer in in_alarm.into_iter().take(SUMMARY_PEERS) {
        peer_lines(out, peer, text);
    }
}

/// One peer's lines of the summary.
fn peer_lines(
    out: &mut String,
    peer: &serde_json::Value,
    text: &dyn Fn(&serde_json::Value) -> String,
) {
    use std::fmt::Write as _;
    let wireguard = &peer["backend"]["wireguard"];
    let _ = writeln!(
        out,
        "\npeer: {}{}",
        text(&peer["name"]),
        if wireguard.is_null() {
            String::new()
        } else {
            format!(" {}", text(&wireguard["public_key"]))
        }
    );
    let _ = writeln!(
        out,
        "  state: {} ({})",
        text(&peer["state"]),
        text(&peer["reason"])
    );
    let age = match peer["last_reached_age_secs"].as_u64() {
        Some(secs) => format!("{secs} seconds ago"),
        None => "never".to_string(),
    };
    let transfer = format!(
        "  transfer: {} B received, {} B sent",
        text(&peer["rx_bytes"]),
        text(&peer["tx_bytes"])
    );
    let closed = &peer["backend"]["closed"];
    if !closed.is_null() {
        let _ = writeln!(
            out,
            "  probe: {}, {} sent, {} failed",
            text(&closed["probe_endpoint"]),
            text(&closed["probes_sent"]),
            text(&closed["probes_failed"])
        );
    }
    let ipsec = &peer["backend"]["ipsec"];
    if !ipsec.is_null() {
        ipsec_lines(out, ipsec);
    }
    if wireguard.is_null() {
        let _ = writeln!(out, "  last reached: {age}");
        let _ = writeln!(out, "{transfer}");
    } else {
        let _ = writeln!(out, "  endpoint: {}", text(&wireguard["endpoint"]));
        let _ = writeln!(out, "  latest handshake: {age}");
        let _ = writeln!(
            out,
            "{transfer}; handshakes {} attempted, {} failed",
            text(&wireguard["handshake_attempts"]),
            text(&wireguard["handshake_failures"])
        );
    }
}

/// A compact human summary of a status document, in the manner of `wg show`; on a box with many
/// peers (a hub), counts and the peers in alarm ([`PeerDetail::Summarised`]).
pub fn summary(document: &serde_json::Value) -> String {
    summary_with(document, PeerDetail::Summarised)
}

/// [`summary`] with the peers as `detail` says.
pub fn summary_with(document: &serde_json::Value, detail: PeerDetail) -> String {
    use std::fmt::Write as _;
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".to_string(),
        other => other.to_string(),
    };
    let mut out = String::new();
    let tunnel = &document["tunnel"];
    // WireGuard's own fields sit in the backend part; null (and left out) for other carriers.
    let wireguard = &tunnel["backend"]["wireguard"];
    let _ = writeln!(
        out,
        "facility: {} ({}), config version {}",
        text(&document["facility"]),
        text(&document["role"]),
        text(&document["config_version"])
    );
    // The carrier's kind, the closed network's own fields (NET-8's forwarding switch) and
    // whether charon holds the IPsec connection.
    let closed = &tunnel["backend"]["closed"];
    let charon = &tunnel["backend"]["ipsec"];
    let _ = writeln!(
        out,
        "carrier: {}{}{}",
        text(&tunnel["kind"]),
        match closed["ip_forward"].as_bool() {
            Some(true) => ", ip_forward ON: the box could route; turn it off",
            Some(false) => ", ip_forward off",
            None => "",
        },
        match charon["charon_loaded"].as_bool() {
            Some(true) => ", charon loaded".to_string(),
            Some(false) => format!(
                ", charon NOT loaded (last error: {})",
                text(&charon["last_error"])
            ),
            None => String::new(),
        }
    );
    let _ = writeln!(
        out,
        "tunnel: {} {} on {} ({}){}{}",
        text(&tunnel["state"]),
        text(&tunnel["policy"]),
        text(&tunnel["interface"]),
        text(&tunnel["address"]),
        if wireguard.is_null() {
            String::new()
        } else {
            format!(", port {}", text(&wireguard["listen_port"]))
        },
        if tunnel["alarm"] == serde_json::Value::Bool(true) {
            "  ALARM: not reached for too long"
        } else {
            ""
        }
    );
    hubs_summary(&mut out, &document["hubs"]);
    if let Some(peers) = tunnel["peers"].as_array() {
        peers_summary(&mut out, peers, detail, &text);
    }
    let drops = &tunnel["drops"];
    let _ = writeln!(
        out,
        "\ndropped: {} foreign source, {} no route, {} foreign destination, {} spoofed source{}",
        text(&drops["foreign_source"]),
        text(&drops["no_route"]),
        text(&drops["foreign_destination"]),
        text(&drops["source_not_allowed"]),
        if wireguard.is_null() {
            String::new()
        } else {
            format!(
                ", {} invalid datagrams",
                text(&wireguard["drops"]["invalid_datagrams"])
            )
        }
    );
    if let Some(certificates) = document["certificates"].as_array() {
        for cert in certificates {
            let _ = writeln!(
                out,
                "certificate: {} ({}), {} days left{}",
                text(&cert["subject"]),
                text(&cert["role"]),
                text(&cert["days_left"]),
                if cert["warning"] == serde_json::Value::Bool(true) {
                    "  WARNING: renew soon"
                } else {
                    ""
                }
            );
        }
    }
    summarize_config(&mut out, document, &text);
    if let Some(services) = document["proxy"]["services"].as_array() {
        for service in services {
            let _ = writeln!(
                out,
                "\nservice: {} {} {} -> {}, {}",
                text(&service["name"]),
                text(&service["direction"]),
                text(&service["listen"]),
                text(&service["target"]),
                text(&service["state"]).replace('_', " ")
            );
            let _ = writeln!(
                out,
                "  connections: {} active (max {}), {} total, {} refused, {} failed",
                text(&service["active"]),
                text(&service["max_connections"]),
                text(&service["total"]),
                text(&service["refused"]),
                text(&service["errors"])
            );
            let _ = writeln!(
                out,
                "  transfer: {} B in, {} B out (open connections included)",
                text(&service["bytes_in"]),
                text(&service["bytes_out"])
            );
            if !service["last_error"].is_null() {
                let _ = writeln!(out, "  last problem: {}", text(&service["last_error"]));
            }
        }
    }
    summarize_page(&mut out, document, &text);
    out
}

/// `2024-05-01T09:30:00Z` for seconds since the Unix epoch.
fn unix_text(secs: u64) -> String {
    let time = crate::proxy::accesslog::rfc3339(UNIX_EPOCH + std::time::Duration::from_secs(secs));
    format!("{}Z", time.get(..19).unwrap_or(&time))
}

/// How many of the most recent events `renkei status` prints.
pub const SUMMARY_EVENTS: usize = 5;

fn summarize_config(
    out: &mut String,
    document: &serde_json::Value,
    text: &dyn Fn(&serde_json::Value) -> String,
) {
    use std::fmt::Write as _;
    let config = &document["config"];
    if config.is_null() {
        return;
    }
    let origin = match config["signer"].as_str() {
        Some(signer) => format!(
            "pushed by {}{}, signing key {signer}",
            text(&config["pushed_by"]),
            config["pushed_at_unix"]
                .as_u64()
                .map(|t| format!(" at {}", unix_text(t)))
                .unwrap_or_default()
        ),
        None => "local file".to_string(),
    };
    let _ = writeln!(
        out,
        "config: version {} ({origin}){}",
        text(&config["version"]),
        config["description"]
            .as_str()
            .map(|d| format!(": {d}"))
            .unwrap_or_default()
    );
    let pending = &config["pending"];
    if !pending.is_null() {
        let left = match (
            pending["confirm_deadline_unix"].as_u64(),
            document["time_unix"].as_u64(),
        ) {
            (Some(deadline), Some(now)) => format!("{} s", deadline.saturating_sub(now)),
            _ => "-".to_string(),
        };
        let _ = writeln!(
            out,
            "  PENDING: version {} awaits confirmation; rolled back in {left} unless confirmed",
            text(&pending["version"])
        );
    }
    if document["clock_synchronized"] == serde_json::Value::Bool(false) {
        let _ = writeln!(
            out,
            "clock: NOT synchronized (certificate checks depend on it)"
        );
    }
}

fn summarize_page(
    out: &mut String,
    document: &serde_json::Value,
    text: &dyn Fn(&serde_json::Value) -> String,
) {
    use std::fmt::Write as _;
    let page = &document["status_page"];
    if !page.is_null() {
        let _ = writeln!(
            out,
            "\nstatus page: {}://{}/{}",
            text(&page["scheme"]),
            text(&page["listen"]),
            if page["metrics_listen"].is_null() {
                String::new()
            } else {
                format!(", metrics on {}", text(&page["metrics_listen"]))
            }
        );
        if !page["certificate_sha256"].is_null() {
            let _ = writeln!(
                out,
                "  certificate SHA-256{}: {}",
                if page["certificate_self_signed"] == serde_json::Value::Bool(true) {
                    " (self-signed)"
                } else {
                    ""
                },
                text(&page["certificate_sha256"])
            );
        }
        let _ = writeln!(
            out,
            "  logins: {} ok, {} refused",
            text(&page["logins"]),
            text(&page["login_failures"])
        );
    }
    // The box's public enrolment data stays visible after enrolment (a new certificate is
    // issued for the same CSR key), labelled as on the unenrolled console, which is how
    // installers and `image/boot-test` read it.
    let enrolment = &document["enrolment"];
    if !enrolment.is_null() {
        let _ = writeln!(out, "\nenrolment:");
        let _ = writeln!(
            out,
            "  WireGuard public key: {}",
            text(&enrolment["wireguard_public_key"])
        );
        let _ = writeln!(
            out,
            "  CSR SHA-256:          {}",
            text(&enrolment["csr_sha256"])
        );
    }
    if let Some(events) = document["events"].as_array() {
        if !events.is_empty() {
            let _ = writeln!(out, "\nrecent events:");
        }
        let skip = events.len().saturating_sub(SUMMARY_EVENTS);
        for event in events.iter().skip(skip) {
            let time = event["time_unix"]
                .as_u64()
                .map(|t| {
                    crate::proxy::accesslog::rfc3339(UNIX_EPOCH + std::time::Duration::from_secs(t))
                })
                .unwrap_or_else(|| "-".to_string());
            let _ = writeln!(
                out,
                "  {} {} {}: {}",
                time.get(..19).unwrap_or(&time),
                text(&event["level"]),
                text(&event["kind"]),
                text(&event["message"])
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int2_timesyncd_says_whether_the_clock_is_synchronized_where_adjtimex_is_forbidden() {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = dir.path().join("timesync");
        assert_eq!(timesyncd_synchronized(&state), None, "no timesyncd");
        std::fs::create_dir(&state).expect("timesyncd's folder");
        assert_eq!(
            timesyncd_synchronized(&state),
            Some(false),
            "not yet synchronized"
        );
        std::fs::write(state.join("synchronized"), b"").expect("marker");
        assert_eq!(timesyncd_synchronized(&state), Some(true));
    }

    #[test]
    fn avl4_summary_names_the_active_hub_and_each_hubs_health() {
        let document = serde_json::json!({
            "facility": "hospital", "role": "disclosing", "config_version": 3,
            "tunnel": {"kind": "wireguard", "state": "up", "policy": "always_on",
                       "interface": "renkei0", "address": "198.19.0.10/24", "alarm": false,
                       "peers": [], "drops": {}, "backend": {"wireguard": {"listen_port": 0}}},
            "hubs": {"active": "dc-osaka", "preferred": "dc-osaka", "failovers": 1,
                     "members": [
                         {"name": "dc-tokyo", "active": false, "healthy": false, "preferred": false},
                         {"name": "dc-osaka", "active": true, "healthy": true, "preferred": true}
                     ]}
        });
        let text = summary(&document);
        assert!(
            text.contains("hubs: dc-tokyo not answering, dc-osaka (active) healthy, preferred by the operator; 1 failovers\n"),
            "{text}"
        );
        let without = serde_json::json!({"tunnel": {"peers": []}});
        assert!(!summary(&without).contains("hubs:"));
    }

    /// A hub's status document with `n` facility peers: states in turn, every 7th in alarm.
    fn hub_document(n: usize) -> serde_json::Value {
        let states = ["up", "idle", "connecting", "down"];
        let peers: Vec<serde_json::Value> = (0..n)
            .map(|i| {
                serde_json::json!({
                    "name": format!("facility-{i:04}"), "state": states[i % 4],
                    "reason": "-", "alarm": i % 7 == 0, "rx_bytes": 1, "tx_bytes": 2,
                    "backend": {"wireguard": {"public_key": "k", "endpoint": "198.18.0.2:1"}}
                })
            })
            .collect();
        serde_json::json!({
            "facility": "dc", "role": "hub", "config_version": 1,
            "tunnel": {"kind": "wireguard", "state": "up", "policy": "always_on",
                       "interface": "renkei0", "address": "198.19.0.1/16", "alarm": false,
                       "peers": peers, "drops": {}, "backend": {"wireguard": {"listen_port": 51820}}}
        })
    }

    #[test]
    fn avl6_summary_of_a_big_hub_counts_peers_per_state_and_lists_only_those_in_alarm() {
        let document = hub_document(1000);
        let text = summary(&document);
        assert!(
            text.contains(
                "\npeers: 1000 (250 up, 250 connecting, 250 idle, 250 down), 143 in alarm\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("the first 20 of those in alarm below; every peer: `renkei status --all`, or the status page's facilities (/api/v1/facilities)"),
            "{text}"
        );
        let shown: Vec<&str> = text.lines().filter(|l| l.starts_with("peer: ")).collect();
        assert_eq!(shown.len(), SUMMARY_PEERS, "{text}");
        assert_eq!(shown[0], "peer: facility-0000 k");
        assert_eq!(shown[1], "peer: facility-0007 k", "only peers in alarm");
        assert!(text.lines().count() < 150, "{} lines", text.lines().count());
        // --all: every peer, as before.
        let every = summary_with(&document, PeerDetail::Every);
        assert_eq!(
            every.lines().filter(|l| l.starts_with("peer: ")).count(),
            1000
        );
        assert!(!every.contains("in alarm"));
        // None in alarm: said so, no peer lines.
        let mut calm = hub_document(30);
        for peer in calm["tunnel"]["peers"].as_array_mut().into_iter().flatten() {
            peer["alarm"] = serde_json::Value::Bool(false);
        }
        let text = summary(&calm);
        assert!(text.contains("\npeers: 30 (8 up, 7 connecting, 8 idle, 7 down), 0 in alarm\n  none in alarm; every peer:"), "{text}");
        assert!(!text.contains("\npeer: "), "{text}");
    }

    #[test]
    fn avl6_summary_of_a_small_box_prints_every_peer_as_before() {
        for n in [1, SUMMARY_PEERS] {
            let document = hub_document(n);
            let text = summary(&document);
            assert_eq!(text, summary_with(&document, PeerDetail::Every));
            assert_eq!(text.lines().filter(|l| l.starts_with("peer: ")).count(), n);
            assert!(!text.contains("\npeers: "), "{text}");
        }
    }

    #[test]
    fn summary_lists_services_with_their_counters() {
        let document = serde_json::json!({
            "facility": "clinic", "role": "viewing", "config_version": 3,
            "tunnel": {"kind": "wireguard", "state": "idle", "policy": "on_demand",
                       "interface": "renkei0", "address": "198.19.0.20/24", "alarm": false,
                       "peers": [], "drops": {}, "backend": {"wireguard": {"listen_port": 0}}},
            "proxy": {"services": [{
                "name": "portal", "direction": "outbound", "listen": "198.18.20.1:8443",
                "target": "198.19.0.1:443", "state": "waiting_for_address",
                "max_connections": 256, "active": 2, "total": 9,
                "refused": 1, "errors": 0, "bytes_in": 100, "bytes_out": 2000,
                "last_error": "refused: max_connections (256) reached"
            }], "recent_connections": []}
        });
        let text = summary(&document);
        assert!(
            text.contains(
                "service: portal outbound 198.18.20.1:8443 -> 198.19.0.1:443, waiting for address"
            ),
            "{text}"
        );
        assert!(
            text.contains("connections: 2 active (max 256), 9 total, 1 refused, 0 failed"),
            "{text}"
        );
        assert!(
            text.contains("last problem: refused: max_connections (256) reached"),
            "{text}"
        );
    }

    #[test]
    fn ops3_summary_reads_wireguard_fields_from_the_backend_part_only_for_wireguard() {
        let peer = serde_json::json!({
            "name": "dc", "state": "up", "reason": "session established",
            "last_reached_age_secs": 7, "rx_bytes": 200, "tx_bytes": 100,
            "backend": {"wireguard": {"public_key": "KEY=", "endpoint": "198.18.0.1:51820",
                                      "handshake_attempts": 5, "handshake_failures": 1}}
        });
        let document = serde_json::json!({
            "facility": "clinic", "role": "viewing", "config_version": 3,
            "tunnel": {"kind": "wireguard", "state": "up", "policy": "always_on",
                       "interface": "renkei0", "address": "198.19.0.20/24", "alarm": false,
                       "peers": [peer], "drops": {},
                       "backend": {"wireguard": {"listen_port": 51820}}}
        });
        let text = summary(&document);
        for expected in [
            "tunnel: up always_on on renkei0 (198.19.0.20/24), port 51820\n",
            "peer: dc KEY=\n",
            "  endpoint: 198.18.0.1:51820\n  latest handshake: 7 seconds ago\n",
            "  transfer: 200 B received, 100 B sent; handshakes 5 attempted, 1 failed\n",
        ] {
            assert!(
                text.contains(expected),
                "{expected:?} missing from:\n{text}"
            );
        }
        // Without a WireGuard part the generic fields stand alone.
        let mut other = document.clone();
        other["tunnel"]["backend"] = serde_json::json!({});
        other["tunnel"]["peers"][0]["backend"] = serde_json::json!({});
        let text = summary(&other);
        for expected in [
            "tunnel: up always_on on renkei0 (198.19.0.20/24)\n",
            "peer: dc\n",
            "  last reached: 7 seconds ago\n  transfer: 200 B received, 100 B sent\n",
        ] {
            assert!(
                text.contains(expected),
                "{expected:?} missing from:\n{text}"
            );
        }
        assert!(
            !text.contains("port") && !text.contains("handshake"),
            "{text}"
        );
    }

    #[test]
    fn net9_summary_names_the_closed_carrier_its_probe_and_forwarding() {
        let document = serde_json::json!({
            "facility": "clinic", "role": "viewing", "config_version": 3,
            "tunnel": {"kind": "closed", "state": "up", "policy": "always_on",
                       "interface": "eth1", "address": "198.18.40.2/24", "alarm": false,
                       "peers": [{"name": "data centre", "state": "up", "reason": "ok",
                                  "last_reached_age_secs": 3, "rx_bytes": 10, "tx_bytes": 20,
                                  "backend": {"closed": {"probe_endpoint": "198.18.40.1:7000",
                                                         "probes_sent": 4, "probes_failed": 1}}}],
                       "drops": {}, "backend": {"closed": {"ip_forward": true}}}
        });
        let text = summary(&document);
        for expected in [
            "carrier: closed, ip_forward ON",
            "  probe: 198.18.40.1:7000, 4 sent, 1 failed\n  last reached: 3 seconds ago\n",
        ] {
            assert!(
                text.contains(expected),
                "{expected:?} missing from:\n{text}"
            );
        }
        assert!(
            !text.contains("handshake") && !text.contains("invalid datagrams"),
            "{text}"
        );
    }

    #[test]
    fn net9_summary_names_the_ipsec_link_its_algorithms_and_child_bytes() {
        let document = serde_json::json!({
            "facility": "clinic", "role": "viewing", "config_version": 3,
            "tunnel": {"kind": "ipsec", "state": "up", "policy": "always_on",
                       "interface": "eth1", "address": "198.18.40.2/24", "alarm": false,
                       "peers": [{"name": "data centre", "state": "up", "reason": "ok",
                                  "last_reached_age_secs": 3, "rx_bytes": 10, "tx_bytes": 20,
                                  "backend": {"ipsec": {
                                      "remote_address": "198.18.40.1",
                                      "remote_id": "dc.example",
                                      "data_centre_prefixes": ["198.19.0.0/24"],
                                      "ike": {"state": "ESTABLISHED", "remote_id": "dc.example",
                                              "encryption": "AES_GCM_16", "key_size_bits": 256,
                                              "integrity": null, "prf": "PRF_HMAC_SHA2_256",
                                              "dh_group": "ECP_256", "established": 100,
                                              "rekey_in_secs": 3000},
                                      "child": {"state": "INSTALLED", "encryption": "AES_GCM_16",
                                                "key_size_bits": 128, "dh_group": null,
                                                "installed": 100, "bytes_in": 1234,
                                                "bytes_out": 5678, "packets_in": 9,
                                                "packets_out": 11, "rekey_in_secs": 100,
                                                "expires_in_secs": 200,
                                                "local_ts": ["198.18.40.2/32"],
                                                "remote_ts": ["198.19.0.0/24"]},
                                      "total": {"bytes_in": 99234, "bytes_out": 105678,
                                                "packets_in": 90, "packets_out": 110},
                                      "profile_violation": "CHILD SA used 3DES"}}}],
                       "drops": {}, "backend": {"ipsec": {"vici_socket": "/run/charon.vici",
                           "charon_loaded": false, "loads": 1, "last_error": "socket gone"}}}
        });
        let text = summary(&document);
        for expected in [
            "carrier: ipsec, charon NOT loaded (last error: socket gone)",
            "  ipsec: IKE ESTABLISHED as dc.example, AES_GCM_16-256 / - / PRF_HMAC_SHA2_256 / ECP_256\n",
            "  child: INSTALLED AES_GCM_16-128, 1234 B in, 5678 B out\n",
            "  total since start: 99234 B in, 105678 B out (every CHILD SA)\n",
            "  OUTSIDE THE CRYPTREC PROFILE, terminated: CHILD SA used 3DES\n",
            "  last reached: 3 seconds ago\n",
        ] {
            assert!(
                text.contains(expected),
                "{expected:?} missing from:\n{text}"
            );
        }
        assert!(
            !text.contains("handshake") && !text.contains("object"),
            "{text}"
        );
        let mut none = document.clone();
        none["tunnel"]["peers"][0]["backend"]["ipsec"]["ike"] = serde_json::Value::Null;
        none["tunnel"]["peers"][0]["backend"]["ipsec"]["child"] = serde_json::Value::Null;
        let text = summary(&none);
        assert!(
            text.contains("  ipsec: no IKE SA with dc.example (198.18.40.1)\n  child: none\n"),
            "{text}"
        );
    }

    #[test]
    fn ops3_summary_shows_config_page_enrolment_and_events() {
        let document = serde_json::json!({
            "facility": "clinic", "role": "viewing", "config_version": 4,
            "config": {"version": 4, "description": "new portal", "signer": "0123456789abcdef",
                       "pushed_by": "operator", "pushed_at_unix": 90, "applied_at_unix": 100,
                       "pending": {"version": 4, "signer": "operator", "confirm_deadline_unix": 1090}},
            "time_unix": 1000,
            "clock_synchronized": false,
            "tunnel": {"state": "up", "peers": [], "drops": {}},
            "status_page": {"scheme": "https", "listen": "198.18.20.1:443",
                            "certificate_sha256": "AB:CD", "certificate_self_signed": true,
                            "metrics_listen": null, "logins": 2, "login_failures": 3},
            "enrolment": {"wireguard_public_key": "KEY=", "csr_sha256": null},
            "events": (0..7).map(|i| serde_json::json!({
                "time_unix": i, "level": "info", "kind": "tunnel", "message": format!("event {i}")
            })).collect::<Vec<_>>()
        });
        let text = summary(&document);
        for expected in [
            "config: version 4 (pushed by operator at 1970-01-01T00:01:30Z, signing key 0123456789abcdef): new portal",
            "PENDING: version 4 awaits confirmation; rolled back in 90 s unless confirmed",
            "clock: NOT synchronized",
            "status page: https://198.18.20.1:443/",
            "certificate SHA-256 (self-signed): AB:CD",
            "logins: 2 ok, 3 refused",
            "enrolment:\n  WireGuard public key: KEY=\n  CSR SHA-256:          -\n",
            "1970-01-01T00:00:06 info tunnel: event 6",
        ] {
            assert!(
                text.contains(expected),
                "{expected:?} missing from:\n{text}"
            );
        }
        assert!(
            !text.contains("event 1\n"),
            "only the last {SUMMARY_EVENTS} events"
        );
    }
}
