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

crate::state::events::words::stable_words! {
    /// Why a link is in its state, as a stable word: the page translates it
    /// (`link_reason_<word>` in web-ui/i18n.js), [`LinkReason::text`] is the journal's English.
    pub enum LinkReason {
        /// WireGuard: the policy has not started yet.
        NotStarted => "not_started",
        /// WireGuard: a handshake completed.
        SessionEstablished => "session_established",
        /// WireGuard: the peer did not answer the handshake.
        NoHandshakeResponse => "no_handshake_response",
        /// WireGuard on demand: no session until a connection needs one.
        IdleUntilNeeded => "idle_until_needed",
        /// WireGuard passive (a hub): waiting for the facility to connect.
        WaitingForPeer => "waiting_for_peer",
        /// WireGuard passive: greeting a peer that had a session before the restart.
        GreetingAfterRestart => "greeting_after_restart",
        /// WireGuard always-on: the first handshake after start.
        ConnectingAtStart => "connecting_at_start",
        /// WireGuard on demand: a connection needs the tunnel.
        ConnectingOnDemand => "connecting_on_demand",
        /// WireGuard: the handshake attempt got no answer in time.
        AttemptTimedOut => "attempt_timed_out",
        /// WireGuard always-on: retrying after a failure.
        Reconnecting => "reconnecting",
        /// WireGuard always-on: the rekey handshake got no answer.
        RekeyNoResponse => "rekey_no_response",
        /// WireGuard passive: the peer stopped renewing its session.
        PeerSessionEnded => "peer_session_ended",
        /// WireGuard on demand: unused for the idle timeout, the session was dropped.
        IdleTimeout => "idle_timeout",
        /// Closed network, always-on without a probe endpoint: facilities dial this box.
        NoProbeEndpoint => "no_probe_endpoint",
        /// Closed network on demand: nothing to bring up, not probed.
        NotProbed => "not_probed",
        /// Closed network: the data centre answered the probe.
        ProbeAnswered => "probe_answered",
        /// Closed network: the probe failed (`last_error` says how).
        ProbeFailed => "probe_failed",
        /// Closed network: the first probe is under way.
        Probing => "probing",
        /// IPsec: the IKE SA is established and the CHILD SA installed.
        SaEstablished => "sa_established",
        /// IPsec: the IKE SA is being negotiated, rekeyed or deleted.
        SaInProgress => "sa_in_progress",
        /// IPsec: charon reported an error (`last_error` says what).
        CharonError => "charon_error",
        /// IPsec on demand: no SA until a connection needs one.
        NoSaUntilNeeded => "no_sa_until_needed",
        /// IPsec: waiting for charon to establish the SA.
        WaitingForCharon => "waiting_for_charon",
        /// Not known (a hub's facility not yet reported).
        Unknown => "unknown",
    }
}

impl LinkReason {
    /// The English text (the JSON API's `reason` when the carrier has nothing to add).
    pub fn text(self) -> &'static str {
        match self {
            LinkReason::NotStarted => "not started",
            LinkReason::SessionEstablished => "session established",
            LinkReason::NoHandshakeResponse => "no handshake response from the peer",
            LinkReason::IdleUntilNeeded => "idle until a connection needs the tunnel",
            LinkReason::WaitingForPeer => "waiting for the peer to connect",
            LinkReason::GreetingAfterRestart => {
                "greeting a peer that had a session before the restart"
            }
            LinkReason::ConnectingAtStart => "connecting at start",
            LinkReason::ConnectingOnDemand => "connecting on demand",
            LinkReason::AttemptTimedOut => "handshake attempt timed out",
            LinkReason::Reconnecting => "reconnecting",
            LinkReason::RekeyNoResponse => "rekey handshake got no response",
            LinkReason::PeerSessionEnded => "session ended: no handshake from the peer for 180 s",
            LinkReason::IdleTimeout => "idle timeout: session dropped",
            LinkReason::NoProbeEndpoint => {
                "no probe endpoint: facilities dial this box, nothing to bring up"
            }
            LinkReason::NotProbed => "on demand: nothing to bring up, not probed",
            LinkReason::ProbeAnswered => "the data centre answered the probe",
            LinkReason::ProbeFailed => "probe failed",
            LinkReason::Probing => "probing the data centre",
            LinkReason::SaEstablished => "IKE SA established, CHILD SA installed",
            LinkReason::SaInProgress => "IKE SA being negotiated",
            LinkReason::CharonError => "charon reported an error",
            LinkReason::NoSaUntilNeeded => "on demand: no SA until a connection needs one",
            LinkReason::WaitingForCharon => "waiting for charon to establish the SA",
            LinkReason::Unknown => "unknown",
        }
    }
}
