//! One WireGuard peer: its configuration, its boringtun session state, its policy and counters.
//!
//! The session state (`Tunn`) lives behind a mutex that is only held for non-blocking work;
//! dropping it (on-demand idle) drops the session keys with it.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use boringtun::noise::Tunn;
use ipnet::IpNet;
use serde::Serialize;
use tokio::sync::watch;

use super::policy::{LinkState, Policy};
use super::replay::ReplayGate;
use crate::state::moment::Moment;

/// Counters of one peer; read without locking by the status page and `wg show`.
#[derive(Debug, Default)]
pub struct PeerCounters {
    /// WireGuard datagram bytes sent to the peer.
    pub tx_bytes: AtomicU64,
    /// WireGuard datagram bytes received from the peer (authenticated only).
    pub rx_bytes: AtomicU64,
    /// Datagrams sent.
    pub tx_packets: AtomicU64,
    /// Authenticated datagrams received.
    pub rx_packets: AtomicU64,
    /// Handshake initiations sent.
    pub handshake_attempts: AtomicU64,
    /// Initiations that got no answer before the next one (or before giving up).
    pub handshake_failures: AtomicU64,
    /// Handshakes completed, either side initiating.
    pub handshakes_completed: AtomicU64,
}

impl PeerCounters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Mutable state of a peer.
pub(crate) struct PeerState {
    /// `None` while no session exists: on-demand idle, or never connected.
    pub tunn: Option<Box<Tunn>>,
    /// Where to send: configured, then following the last authenticated packet (roaming): a
    /// completed handshake or a decrypted data packet, never a cookie reply.
    pub endpoint: Option<SocketAddr>,
    pub policy: Policy,
    /// The last completed handshake; its age is the monotonic clock's.
    pub last_handshake: Option<Moment>,
    pub awaiting_response: bool,
    pub alarm: bool,
}

/// A configured peer.
pub struct Peer {
    /// Name from the config.
    pub name: String,
    /// The peer's static public key.
    pub public_key: [u8; 32],
    /// Prefixes the peer owns: routes to it, and the only sources accepted from it.
    pub allowed_ips: Vec<IpNet>,
    /// The endpoint as written in the config (may be a host name).
    pub configured_endpoint: Option<String>,
    /// Keepalive interval given to boringtun, if any.
    pub keepalive_secs: Option<u16>,
    /// Slot number; boringtun session indices carry it in their upper 24 bits.
    pub(crate) index: u32,
    /// Counters.
    pub counters: PeerCounters,
    pub(crate) state: Mutex<PeerState>,
    pub(crate) link_state: watch::Sender<LinkState>,
    /// The newest handshake initiation accepted from the peer. Outside `state` and shared with
    /// the same peer of a restarted tunnel: it must outlive every session (see `replay`).
    pub(crate) replay: Arc<Mutex<ReplayGate>>,
    /// A hub of a hub group that is not the active one (AVL-4): it owns no address, so nothing
    /// is routed to it and nothing it sends is delivered, until the group makes it active.
    pub(crate) standby: AtomicBool,
}

impl Peer {
    /// True when `ip` is inside one of the peer's allowed IPs (never for a standby hub).
    pub fn owns(&self, ip: IpAddr) -> bool {
        !self.is_standby() && self.allowed_ips.iter().any(|net| net.contains(&ip))
    }

    /// Longest allowed-IP prefix of this peer that contains `ip` (none for a standby hub).
    pub(crate) fn best_prefix(&self, ip: IpAddr) -> Option<u8> {
        if self.is_standby() {
            return None;
        }
        self.allowed_ips
            .iter()
            .filter(|net| net.contains(&ip))
            .map(IpNet::prefix_len)
            .max()
    }

    /// True while the peer is a hub of a group that is not the active one.
    pub fn is_standby(&self) -> bool {
        self.standby.load(Ordering::Acquire)
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, PeerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The replay gate; never locked while `state` is.
    pub(crate) fn replay_gate(&self) -> MutexGuard<'_, ReplayGate> {
        self.replay.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A consistent copy of what the status page, metrics and `wg show` print.
    pub fn snapshot(&self, now: std::time::Instant) -> PeerSnapshot {
        let state = self.lock();
        let c = &self.counters;
        PeerSnapshot {
            name: self.name.clone(),
            public_key: crate::keys::encode_key(&self.public_key),
            endpoint: state.endpoint,
            allowed_ips: self.allowed_ips.clone(),
            persistent_keepalive_secs: self.keepalive_secs,
            state: state.policy.state(),
            reason: state.policy.reason().text().to_string(),
            reason_code: state.policy.reason(),
            alarm: state.policy.alarm(now),
            session_keys_present: state.tunn.is_some(),
            standby: self.is_standby(),
            last_handshake: state.last_handshake.map(|t| t.wall),
            last_handshake_age_secs: state.last_handshake.map(|t| t.age_at(now).as_secs()),
            holds: state.policy.holds(),
            tx_bytes: c.tx_bytes.load(Ordering::Relaxed),
            rx_bytes: c.rx_bytes.load(Ordering::Relaxed),
            tx_packets: c.tx_packets.load(Ordering::Relaxed),
            rx_packets: c.rx_packets.load(Ordering::Relaxed),
            handshake_attempts: c.handshake_attempts.load(Ordering::Relaxed),
            handshake_failures: c.handshake_failures.load(Ordering::Relaxed),
            handshakes_completed: c.handshakes_completed.load(Ordering::Relaxed),
        }
    }
}

/// A point-in-time view of one peer.
#[derive(Debug, Clone, Serialize)]
pub struct PeerSnapshot {
    /// Name from the config.
    pub name: String,
    /// Base64 public key.
    pub public_key: String,
    /// Current endpoint.
    pub endpoint: Option<SocketAddr>,
    /// Allowed IPs.
    pub allowed_ips: Vec<IpNet>,
    /// Keepalive interval.
    pub persistent_keepalive_secs: Option<u16>,
    /// Policy state.
    pub state: LinkState,
    /// Why it is in that state, in English.
    pub reason: String,
    /// Why it is in that state, as a stable word (the page translates it).
    pub reason_code: crate::state::link::LinkReason,
    /// Always-on and the last handshake is too old.
    pub alarm: bool,
    /// Whether session state (keys) exists right now.
    pub session_keys_present: bool,
    /// A hub of a hub group that is not the active one: it routes nothing.
    pub standby: bool,
    /// Wall-clock time of the last completed handshake.
    #[serde(serialize_with = "crate::state::link::unix_time::serialize")]
    pub last_handshake: Option<SystemTime>,
    /// Seconds since the last completed handshake (monotonic: a step of the wall clock does
    /// not change it).
    pub last_handshake_age_secs: Option<u64>,
    /// Proxied connections holding the tunnel open.
    pub holds: usize,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Datagrams sent.
    pub tx_packets: u64,
    /// Datagrams received.
    pub rx_packets: u64,
    /// Handshake initiations sent.
    pub handshake_attempts: u64,
    /// Initiations without an answer.
    pub handshake_failures: u64,
    /// Completed handshakes.
    pub handshakes_completed: u64,
}
