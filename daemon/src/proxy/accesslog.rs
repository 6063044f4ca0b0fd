//! The access log of requirement LOG-1: one record per proxied connection, refused ones
//! included, sent to journald as structured fields and kept in a small ring for the status page;
//! plus the per-service counters the status document shows.
//!
//! Records are written once, when a connection ends; byte totals grow live while connections
//! are open (through [`LiveBytes`]). Nothing here touches sockets.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Serialize, Serializer};

pub use super::problem::{Problem, ProxyProblem};
use super::splice::LiveBytes;
use crate::config::{Direction, ServiceConfig};

/// How many recent records the status page keeps (older ones are only in journald).
pub const ACCESS_LOG_RING_RECORDS: usize = 100;

/// A reason in a record is cut to this many bytes, so a peer cannot flood the log with one.
pub const MAX_REASON_BYTES: usize = 512;

/// How a connection ended, as the RESULT field says it, with the problem as a stable word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionResult {
    /// Bytes were spliced and both sides closed (or idled out) normally.
    Ok,
    /// The box turned the connection away on purpose (limit, identity, handshake).
    Refused(Problem, String),
    /// Something failed after the connection was accepted.
    Error(Problem, String),
}

impl ConnectionResult {
    /// A refusal with a reason (cut to [`MAX_REASON_BYTES`]).
    pub fn refused(problem: impl Into<Problem>, reason: impl fmt::Display) -> Self {
        ConnectionResult::Refused(problem.into(), bounded(reason.to_string()))
    }

    /// An error with a reason (cut to [`MAX_REASON_BYTES`]).
    pub fn error(problem: impl Into<Problem>, reason: impl fmt::Display) -> Self {
        ConnectionResult::Error(problem.into(), bounded(reason.to_string()))
    }

    /// Whether the connection was refused.
    pub fn is_refused(&self) -> bool {
        matches!(self, ConnectionResult::Refused(..))
    }

    /// What went wrong, when something did.
    pub fn problem(&self) -> Option<Problem> {
        match self {
            ConnectionResult::Ok => None,
            ConnectionResult::Refused(problem, _) | ConnectionResult::Error(problem, _) => {
                Some(*problem)
            }
        }
    }
}

impl fmt::Display for ConnectionResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectionResult::Ok => f.write_str("ok"),
            ConnectionResult::Refused(_, reason) => write!(f, "refused: {reason}"),
            ConnectionResult::Error(_, reason) => write!(f, "error: {reason}"),
        }
    }
}

/// A record's `result` (the English RESULT) and `problem` (the stable word, absent when ok),
/// flattened into the record.
impl Serialize for ConnectionResult {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("result", &self.to_string())?;
        if let Some(problem) = self.problem() {
            map.serialize_entry("problem", &problem)?;
        }
        map.end()
    }
}

fn bounded(mut text: String) -> String {
    if text.len() > MAX_REASON_BYTES {
        let mut end = MAX_REASON_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// One proxied connection, as logged. `bytes_in` flows from the connecting peer
/// (`peer_addr`) towards the target, `bytes_out` from the target back to the peer.
#[derive(Debug, Clone, Serialize)]
pub struct AccessRecord {
    /// When the connection was accepted, RFC 3339 UTC with milliseconds.
    pub time: String,
    /// Service name.
    pub service: String,
    /// outbound or inbound.
    pub direction: &'static str,
    /// Address of the connecting side (a LAN client, or a tunnel peer).
    pub peer_addr: SocketAddr,
    /// The certificate identity of the TLS peer: the allowed (or refused) client identity for
    /// inbound services, the verified server name for outbound ones.
    pub peer_identity: Option<String>,
    /// Negotiated TLS version (`TLSv1_3`), when a handshake completed.
    pub tls_version: Option<String>,
    /// Negotiated cipher suite (`TLS13_AES_256_GCM_SHA384`), when a handshake completed.
    pub tls_suite: Option<String>,
    /// Bytes from the peer to the target.
    pub bytes_in: u64,
    /// Bytes from the target to the peer.
    pub bytes_out: u64,
    /// From accept to close.
    pub duration_ms: u64,
    /// `result`: `ok`, `refused: <reason>` or `error: <reason>`; `problem`: what went wrong,
    /// as a stable word (and the TLS reason of a failed handshake).
    #[serde(flatten)]
    pub result: ConnectionResult,
}

impl AccessRecord {
    /// A record for a connection accepted now, to be filled in as it proceeds.
    pub fn begin(service: &ServiceConfig, peer_addr: SocketAddr) -> Self {
        AccessRecord {
            time: rfc3339(SystemTime::now()),
            service: service.name.clone(),
            direction: service.direction.as_str(),
            peer_addr,
            peer_identity: None,
            tls_version: None,
            tls_suite: None,
            bytes_in: 0,
            bytes_out: 0,
            duration_ms: 0,
            result: ConnectionResult::Ok,
        }
    }
}

/// The ring of recent records, shared by every service of a [`super::Services`].
#[derive(Debug, Default)]
pub struct AccessLog {
    ring: Mutex<VecDeque<AccessRecord>>,
}

impl AccessLog {
    /// An empty log.
    pub fn new() -> Self {
        AccessLog::default()
    }

    /// Emits the record to the log (journald fields when under systemd) and keeps it in the ring.
    pub fn record(&self, record: AccessRecord) {
        let dash = || "-".to_string();
        tracing::info!(
            target: "renkei::access",
            SERVICE = %record.service,
            DIRECTION = record.direction,
            PEER_ADDR = %record.peer_addr,
            PEER_IDENTITY = %record.peer_identity.clone().unwrap_or_else(dash),
            TLS_VERSION = %record.tls_version.clone().unwrap_or_else(dash),
            TLS_SUITE = %record.tls_suite.clone().unwrap_or_else(dash),
            BYTES_IN = record.bytes_in,
            BYTES_OUT = record.bytes_out,
            DURATION_MS = record.duration_ms,
            RESULT = %record.result,
            "{} {} connection from {}: {}",
            record.direction,
            record.service,
            record.peer_addr,
            record.result
        );
        let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        if ring.len() >= ACCESS_LOG_RING_RECORDS {
            ring.pop_front();
        }
        ring.push_back(record);
    }

    /// The kept records, oldest first.
    pub fn recent(&self) -> Vec<AccessRecord> {
        self.ring
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }
}

/// What a service is doing, as the status page and `renkei status` show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceState {
    /// Its listener is being bound (an instant, normally).
    Starting,
    /// Its listen address does not exist yet (the tunnel address before the tunnel interface is
    /// configured); binding is retried for [`super::BIND_RETRY_SECS`].
    WaitingForAddress,
    /// Accepting connections.
    Listening,
    /// Accepting, but `max_connections` are open: new connections are refused.
    Full,
    /// Removed or changed by a new config, or the daemon is stopping: no longer accepting; its
    /// open connections run to their end (it disappears once they have).
    Stopped,
}

impl ServiceState {
    /// The name used in the status document.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceState::Starting => "starting",
            ServiceState::WaitingForAddress => "waiting_for_address",
            ServiceState::Listening => "listening",
            ServiceState::Full => "full",
            ServiceState::Stopped => "stopped",
        }
    }
}

/// The listener's side of [`ServiceState`] (`Full` is read from the connection limit instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ListenerPhase {
    /// Being bound.
    Starting = 0,
    /// Bind retried: the address does not exist yet.
    WaitingForAddress = 1,
    /// Accepting.
    Listening = 2,
    /// No longer accepting.
    Stopped = 3,
}

/// Live counters of one service, updated as connections open and close (bytes as they flow).
#[derive(Debug, Default)]
pub struct ServiceCounters {
    phase: AtomicU8,
    active: AtomicU64,
    total: AtomicU64,
    refused: AtomicU64,
    errors: AtomicU64,
    bytes: LiveBytes,
    last_error: Mutex<Option<ConnectionResult>>,
    /// Completed TLS handshakes by (version, suite), for the metrics.
    tls_handshakes: Mutex<BTreeMap<(String, String), u64>>,
}

impl ServiceCounters {
    /// Records what the listener is doing.
    pub fn set_phase(&self, phase: ListenerPhase) {
        self.phase.store(phase as u8, Ordering::Relaxed);
    }

    /// What the listener is doing.
    pub fn phase(&self) -> ListenerPhase {
        match self.phase.load(Ordering::Relaxed) {
            0 => ListenerPhase::Starting,
            1 => ListenerPhase::WaitingForAddress,
            2 => ListenerPhase::Listening,
            _ => ListenerPhase::Stopped,
        }
    }

    /// The counters every splice of this service adds to while it copies (`a` is always the
    /// connecting peer: a-to-b is `bytes_in`).
    pub fn live_bytes(&self) -> &LiveBytes {
        &self.bytes
    }

    /// Counts an accepted connection (refused ones too); `closed` must follow.
    pub fn opened(&self) {
        self.total.fetch_add(1, Ordering::Relaxed);
        self.active.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts the end of a connection from its record (its bytes were counted as they flowed,
    /// through [`ServiceCounters::live_bytes`]).
    pub fn closed(&self, record: &AccessRecord) {
        self.active.fetch_sub(1, Ordering::Relaxed);
        match &record.result {
            ConnectionResult::Ok => return,
            ConnectionResult::Refused(..) => self.refused.fetch_add(1, Ordering::Relaxed),
            ConnectionResult::Error(..) => self.errors.fetch_add(1, Ordering::Relaxed),
        };
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(record.result.clone());
    }

    /// Counts a completed TLS handshake with its negotiated version and suite.
    pub fn tls_handshake(&self, version: &str, suite: &str) {
        let mut counts = self
            .tls_handshakes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Versions and suites come from the pinned profile: a handful of keys at most.
        *counts
            .entry((version.to_string(), suite.to_string()))
            .or_insert(0) += 1;
    }

    /// Connections open now.
    pub fn active(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }

    /// A serializable copy for the status document; `full` tells whether every connection slot
    /// is taken.
    pub fn snapshot(
        &self,
        service: &ServiceConfig,
        listen: SocketAddr,
        full: bool,
    ) -> ServiceSnapshot {
        let state = match self.phase() {
            ListenerPhase::Starting => ServiceState::Starting,
            ListenerPhase::WaitingForAddress => ServiceState::WaitingForAddress,
            ListenerPhase::Listening if full => ServiceState::Full,
            ListenerPhase::Listening => ServiceState::Listening,
            ListenerPhase::Stopped => ServiceState::Stopped,
        };
        let last = self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        ServiceSnapshot {
            name: service.name.clone(),
            direction: service.direction,
            state,
            listen,
            target: service.target.clone(),
            max_connections: service.max_connections,
            active: self.active.load(Ordering::Relaxed),
            total: self.total.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            bytes_in: self.bytes.a_to_b(),
            bytes_out: self.bytes.b_to_a(),
            last_error: last.as_ref().map(ToString::to_string),
            last_problem: last.as_ref().and_then(ConnectionResult::problem),
            tls_handshakes: self
                .tls_handshakes
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .map(|((version, suite), count)| TlsHandshakeCount {
                    version: version.clone(),
                    suite: suite.clone(),
                    count: *count,
                })
                .collect(),
        }
    }
}

/// Completed TLS handshakes of one service with one version and suite.
#[derive(Debug, Clone, Serialize)]
pub struct TlsHandshakeCount {
    /// `TLSv1_3` or `TLSv1_2`.
    pub version: String,
    /// `TLS13_AES_256_GCM_SHA384` ...
    pub suite: String,
    /// Handshakes since start.
    pub count: u64,
}

/// One service in the status document.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceSnapshot {
    /// Service name.
    pub name: String,
    /// outbound or inbound.
    pub direction: Direction,
    /// listening, full, starting, waiting_for_address or stopped.
    pub state: ServiceState,
    /// The address actually bound (the configured one until it is bound).
    pub listen: SocketAddr,
    /// Where connections go.
    pub target: String,
    /// The configured concurrency limit.
    pub max_connections: u32,
    /// Connections open now (including ones still in their handshake).
    pub active: u64,
    /// Connections accepted since start, refused ones included.
    pub total: u64,
    /// Connections refused (limit, identity, handshake).
    pub refused: u64,
    /// Connections that failed after being accepted.
    pub errors: u64,
    /// Bytes from peers to the target since start, open connections included (never decreases).
    pub bytes_in: u64,
    /// Bytes from the target to peers since start, open connections included (never decreases).
    pub bytes_out: u64,
    /// The RESULT of the last refused or failed connection.
    pub last_error: Option<String>,
    /// What went wrong with it, as a stable word (the page shows it translated).
    pub last_problem: Option<Problem>,
    /// Completed TLS handshakes by version and suite.
    pub tls_handshakes: Vec<TlsHandshakeCount>,
}

/// Milliseconds in a duration, saturating.
pub fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// `2024-05-01T09:30:00.123Z` for a system time (UTC; before 1970 prints the epoch).
pub fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day), after Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::TlsRefusal;

    fn service() -> ServiceConfig {
        ServiceConfig {
            name: "portal".to_string(),
            direction: Direction::Outbound,
            listen: "127.0.0.1:8443".parse().expect("addr"),
            target: "198.19.0.1:443".to_string(),
            server_name: Some("hub.renkei.example".to_string()),
            allowed_identities: Vec::new(),
            min_tls: Default::default(),
            max_connections: 4,
            handshake_timeout_secs: 10,
            idle_timeout_secs: 600,
            tcp_user_timeout_secs: crate::config::DEFAULT_TCP_USER_TIMEOUT_SECS,
        }
    }

    #[test]
    fn results_read_as_the_log_says() {
        assert_eq!(ConnectionResult::Ok.to_string(), "ok");
        assert_eq!(
            ConnectionResult::refused(ProxyProblem::ConnectionLimit, "max_connections (4) reached")
                .to_string(),
            "refused: max_connections (4) reached"
        );
        let reset = ConnectionResult::error(ProxyProblem::TransferFailed, "reset");
        assert_eq!(reset.to_string(), "error: reset");
        let long =
            ConnectionResult::refused(ProxyProblem::HandlerEnded, "é".repeat(MAX_REASON_BYTES));
        assert!(long.to_string().len() <= MAX_REASON_BYTES + "refused: …".len());
    }

    #[test]
    fn ring_keeps_the_last_records_only() {
        let log = AccessLog::new();
        let peer: SocketAddr = "198.18.20.10:5000".parse().expect("addr");
        for i in 0..(ACCESS_LOG_RING_RECORDS + 5) {
            let mut record = AccessRecord::begin(&service(), peer);
            record.bytes_in = i as u64;
            log.record(record);
        }
        let recent = log.recent();
        assert_eq!(recent.len(), ACCESS_LOG_RING_RECORDS);
        assert_eq!(recent.first().map(|r| r.bytes_in), Some(5));
        assert_eq!(
            recent.last().map(|r| r.bytes_in),
            Some((ACCESS_LOG_RING_RECORDS + 4) as u64)
        );
        let json = serde_json::to_value(&recent[0]).expect("json");
        assert_eq!(json["result"], "ok");
        assert_eq!(json["direction"], "outbound");
    }

    #[test]
    fn counters_follow_records() {
        let counters = ServiceCounters::default();
        let peer: SocketAddr = "198.18.20.10:5000".parse().expect("addr");
        counters.opened();
        counters.opened();
        assert_eq!(counters.active(), 2);
        // Bytes count while the connection is open, not only when it closes.
        counters
            .live_bytes()
            .add(crate::proxy::splice::Side::AToB, 10);
        counters
            .live_bytes()
            .add(crate::proxy::splice::Side::BToA, 20);
        let open = counters.snapshot(&service(), peer, false);
        assert_eq!((open.active, open.bytes_in, open.bytes_out), (2, 10, 20));
        assert_eq!(open.state, ServiceState::Starting);
        counters.set_phase(ListenerPhase::Listening);
        assert_eq!(
            counters.snapshot(&service(), peer, false).state,
            ServiceState::Listening
        );
        assert_eq!(
            counters.snapshot(&service(), peer, true).state,
            ServiceState::Full
        );
        let mut ok = AccessRecord::begin(&service(), peer);
        ok.bytes_in = 10;
        ok.bytes_out = 20;
        counters.closed(&ok);
        let mut refused = AccessRecord::begin(&service(), peer);
        refused.result = ConnectionResult::refused(Problem::tls(TlsRefusal::Revoked), "limit");
        counters.closed(&refused);
        let snap = counters.snapshot(&service(), peer, false);
        assert_eq!(
            (
                snap.active,
                snap.total,
                snap.refused,
                snap.bytes_in,
                snap.bytes_out
            ),
            (0, 2, 1, 10, 20)
        );
        assert_eq!(snap.last_error.as_deref(), Some("refused: limit"));
        let json = serde_json::to_value(&snap).expect("json");
        assert_eq!(
            json["last_problem"],
            serde_json::json!({"code": "tls_handshake", "tls_reason": "revoked"})
        );
        let json = serde_json::to_value(&refused).expect("json");
        assert_eq!(json["result"], "refused: limit");
        assert_eq!(json["problem"]["code"], "tls_handshake");
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_709_210_096_789);
        assert_eq!(rfc3339(t), "2024-02-29T12:34:56.789Z");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00.000Z");
    }
}
