//! Replay protection for handshake initiations that outlives sessions (INT-1, NET-7, AUTH-2).
//!
//! WireGuard refuses a replayed initiation by its TAI64N timestamp: an initiation is accepted
//! only if its timestamp is newer than the last one accepted from that peer. boringtun keeps
//! that timestamp inside the peer's `Tunn`, and the data plane drops the `Tunn` whenever a
//! session ends (an on-demand box going idle, a passive peer's session running out, a config
//! change restarting the tunnel) so that its keys go with it. A fresh `Tunn` starts from
//! timestamp zero and would accept an initiation captured on the wire hours ago: the replay
//! moves the peer's endpoint to the sender and counts as a completed handshake, which
//! auto-confirm trusts.
//!
//! A [`ReplayGate`] is the per-peer memory of that timestamp, kept apart from the session. It
//! is a `Tunn` of its own that only ever receives initiations: boringtun decrypts the timestamp
//! and compares it (no cryptography of ours, no fork), and the session the gate's `Tunn` makes
//! for an accepted initiation is cleared at once, so the gate holds no session keys, and as it
//! never initiates, no ephemeral secrets either. The gate lives as long as the peer's public
//! key stays configured, across idle drops and tunnel restarts. It does not survive a restart
//! of the daemon (neither does the kernel's WireGuard's).

use std::net::IpAddr;
use std::sync::Arc;

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};

/// Space for the handshake response the gate's `Tunn` writes (and throws away): 92 bytes.
const RESPONSE_BUFFER_BYTES: usize = 128;
/// The gate's own rate limiter never asks for cookies: the data plane's shared limiter has
/// already checked mac1 and, under load, the cookie before an initiation reaches the gate.
const GATE_HANDSHAKES_PER_SECOND_UNLIMITED: u64 = u64::MAX;

/// Why the gate refused an initiation.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// Its timestamp is not newer than one already accepted from this peer: a replay.
    #[error("replayed handshake initiation (its timestamp is not newer than the last accepted)")]
    Replayed,
    /// It is not a valid initiation from this peer for this box's key.
    #[error("handshake initiation not valid for this peer: {0:?}")]
    Invalid(WireGuardError),
}

/// The newest handshake initiation accepted from one peer (see the module documentation).
pub struct ReplayGate {
    tunn: Tunn,
    own_secret: StaticSecret,
    own_public: PublicKey,
    limiter: Arc<RateLimiter>,
}

impl ReplayGate {
    /// A gate for the peer with `peer_public`, at this box's `own_secret`; it has seen nothing.
    pub fn new(own_secret: &StaticSecret, peer_public: [u8; 32]) -> Self {
        let own_public = PublicKey::from(own_secret);
        let limiter = Arc::new(RateLimiter::new(
            &own_public,
            GATE_HANDSHAKES_PER_SECOND_UNLIMITED,
        ));
        let tunn = Tunn::new(
            own_secret.clone(),
            PublicKey::from(peer_public),
            None,
            None,
            0,
            Some(Arc::clone(&limiter)),
        );
        ReplayGate {
            tunn,
            own_secret: own_secret.clone(),
            own_public,
            limiter,
        }
    }

    /// Follows a change of this box's own key (a config change), keeping the timestamp.
    pub fn set_own_key(&mut self, own_secret: &StaticSecret) {
        let own_public = PublicKey::from(own_secret);
        if own_public == self.own_public {
            return;
        }
        self.limiter = Arc::new(RateLimiter::new(
            &own_public,
            GATE_HANDSHAKES_PER_SECOND_UNLIMITED,
        ));
        self.tunn.set_static_private(
            own_secret.clone(),
            own_public,
            Some(Arc::clone(&self.limiter)),
        );
        self.own_secret = own_secret.clone();
        self.own_public = own_public;
    }

    /// Accepts `datagram`, a handshake initiation from `from`, only if its timestamp is newer
    /// than every one accepted before; then remembers that timestamp.
    pub fn admit(&mut self, from: IpAddr, datagram: &[u8]) -> Result<(), Refused> {
        let mut response = [0u8; RESPONSE_BUFFER_BYTES];
        let outcome = match self.tunn.decapsulate(Some(from), datagram, &mut response) {
            // The handshake response boringtun wrote: the initiation was accepted.
            TunnResult::WriteToNetwork(_) => Ok(()),
            TunnResult::Err(WireGuardError::WrongTai64nTimestamp) => Err(Refused::Replayed),
            TunnResult::Err(e) => Err(Refused::Invalid(e)),
            TunnResult::Done
            | TunnResult::WriteToTunnelV4(..)
            | TunnResult::WriteToTunnelV6(..) => {
                Err(Refused::Invalid(WireGuardError::UnexpectedPacket))
            }
        };
        // Clears the session an accepted initiation made (same key: the timestamp stays).
        self.tunn.set_static_private(
            self.own_secret.clone(),
            self.own_public,
            Some(Arc::clone(&self.limiter)),
        );
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const FROM: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 20));
    const HUB: [u8; 32] = [0x11; 32];
    const CLINIC: [u8; 32] = [0x22; 32];

    fn secret(bytes: [u8; 32]) -> StaticSecret {
        StaticSecret::from(bytes)
    }

    fn public(bytes: [u8; 32]) -> [u8; 32] {
        PublicKey::from(&secret(bytes)).to_bytes()
    }

    /// The clinic's side of the tunnel to the hub, as the data plane makes it.
    fn clinic_to(hub: [u8; 32]) -> Tunn {
        Tunn::new(
            secret(CLINIC),
            PublicKey::from(public(hub)),
            None,
            None,
            0,
            None,
        )
    }

    /// A fresh handshake initiation, as it crosses the wire.
    fn initiation(clinic: &mut Tunn) -> Vec<u8> {
        let mut buf = [0u8; 256];
        let TunnResult::WriteToNetwork(bytes) = clinic.format_handshake_initiation(&mut buf, true)
        else {
            panic!("boringtun wrote no initiation");
        };
        bytes.to_vec()
    }

    /// Whether a new session `Tunn` of the hub (what the data plane makes for an idle peer)
    /// accepts `datagram`.
    fn fresh_session_accepts(datagram: &[u8]) -> bool {
        let mut hub = Tunn::new(
            secret(HUB),
            PublicKey::from(public(CLINIC)),
            None,
            None,
            1,
            None,
        );
        let mut out = [0u8; 256];
        matches!(
            hub.decapsulate(Some(FROM), datagram, &mut out),
            TunnResult::WriteToNetwork(_)
        )
    }

    #[test]
    fn int1_net7_a_captured_initiation_is_refused_after_the_session_was_dropped() {
        let mut gate = ReplayGate::new(&secret(HUB), public(CLINIC));
        let mut clinic = clinic_to(HUB);
        let captured = initiation(&mut clinic);
        gate.admit(FROM, &captured)
            .expect("a fresh initiation is accepted");

        // The session ended and its Tunn is gone: a new one has forgotten the timestamp ...
        assert!(
            fresh_session_accepts(&captured),
            "boringtun alone accepts the replay"
        );
        // ... the gate has not.
        assert!(matches!(
            gate.admit(FROM, &captured),
            Err(Refused::Replayed)
        ));

        // The clinic's next handshake is newer and gets through; the old one still does not.
        let next = initiation(&mut clinic);
        gate.admit(FROM, &next)
            .expect("a newer initiation is accepted");
        assert!(matches!(
            gate.admit(FROM, &captured),
            Err(Refused::Replayed)
        ));
        assert!(matches!(gate.admit(FROM, &next), Err(Refused::Replayed)));
    }

    #[test]
    fn int1_auth2_the_gate_keeps_the_timestamp_through_a_change_of_the_own_key_and_back() {
        let mut gate = ReplayGate::new(&secret(HUB), public(CLINIC));
        let captured = initiation(&mut clinic_to(HUB));
        gate.admit(FROM, &captured).expect("accepted");

        // A pushed config with a new key, then the rollback to the old one.
        let rotated = [0x33; 32];
        gate.set_own_key(&secret(rotated));
        assert!(
            matches!(gate.admit(FROM, &captured), Err(Refused::Invalid(_))),
            "an initiation for the old key is not valid for the new one"
        );
        gate.admit(FROM, &initiation(&mut clinic_to(rotated)))
            .expect("an initiation for the new key is accepted");
        gate.set_own_key(&secret(HUB));
        assert!(matches!(
            gate.admit(FROM, &captured),
            Err(Refused::Replayed)
        ));
    }

    #[test]
    fn int1_the_gate_refuses_initiations_from_other_keys_and_other_messages() {
        let mut gate = ReplayGate::new(&secret(HUB), public([0x44; 32]));
        let from_clinic = initiation(&mut clinic_to(HUB));
        assert!(matches!(
            gate.admit(FROM, &from_clinic),
            Err(Refused::Invalid(_))
        ));
        let mut truncated = from_clinic.clone();
        truncated.truncate(100);
        assert!(matches!(
            gate.admit(FROM, &truncated),
            Err(Refused::Invalid(_))
        ));
        assert!(matches!(gate.admit(FROM, &[]), Err(Refused::Invalid(_))));
    }
}
