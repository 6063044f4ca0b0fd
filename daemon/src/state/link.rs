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
