//! The state of one link to the data centre, in words every carrier shares: the WireGuard
//! policy, the closed network's probe, the status page, the metrics and the event ring all
//! speak of the same four states. It sits here, below every one of them, so none has to import
//! another (or one carrier) to name a state.

use serde::Serialize;

/// What the administrator sees for a link (a WireGuard peer, the closed network's one link).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// Nothing wanted: on-demand and not in use (WireGuard: no session, keys dropped), or a
    /// hub's peer not yet heard from.
    Idle,
    /// Being brought up (WireGuard: a handshake is under way; closed: the first probe).
    Connecting,
    /// Up (WireGuard: a session; closed: the last probe connected).
    Up,
    /// Always-on and the last attempt failed; a retry or the next probe is scheduled.
    Down,
}

impl LinkState {
    /// Name shown on the status page, in the metrics and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Idle => "idle",
            LinkState::Connecting => "connecting",
            LinkState::Up => "up",
            LinkState::Down => "down",
        }
    }
}

/// Packets the box's own packet filter dropped (NET-8: the box forwards nothing between the LAN
/// and the data centre), by reason: the part of a link's drops every carrier reports. A carrier
/// whose packets the kernel routes (the closed network) has no such filter in the daemon and
/// reports zeros; the kernel's forwarding switch (its backend part) is its NET-8 evidence.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DropCounts {
    /// From the box's side with a source other than the box's address.
    pub foreign_source: u64,
    /// To addresses no link owns.
    pub no_route: u64,
    /// From the data centre's side, not addressed to the box.
    pub foreign_destination: u64,
    /// From a peer, with a source it does not own.
    pub source_not_allowed: u64,
    /// Not IP.
    pub malformed: u64,
}

/// Serialises an optional wall-clock time as whole seconds since the Unix epoch (`null` when
/// absent or before the epoch): how the status document writes every moment of a link.
pub mod unix_time {
    use serde::Serializer;
    use std::time::{SystemTime, UNIX_EPOCH};

    /// For `#[serde(serialize_with = "crate::state::link::unix_time::serialize")]`.
    pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t.and_then(|t| t.duration_since(UNIX_EPOCH).ok()) {
            Some(d) => s.serialize_some(&d.as_secs()),
            None => s.serialize_none(),
        }
    }
}
