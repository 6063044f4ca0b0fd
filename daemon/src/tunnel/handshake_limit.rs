//! WireGuard's defence against handshake floods, applied once per message.
//!
//! Every handshake message (initiation or response) must carry a valid mac1 (keyed with the
//! box's public key) before any Diffie-Hellman work is done; past `handshakes_per_sec` in one
//! second it must also carry mac2, made with a cookie the box hands out in a cookie reply, which
//! proves the sender receives at its source address. The sender stores the cookie and its next
//! handshake message gets through.
//!
//! boringtun's `Tunn::decapsulate` runs the same check with the limiter it was given, and counts
//! the message again. The sessions therefore get a limiter of their own that never asks for a
//! cookie ([`HandshakeLimit::session_limiter`]): mac1 is checked twice (a keyed hash, cheap), the
//! message is counted once, here.

use std::net::IpAddr;
use std::sync::Arc;

use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::TunnResult;
use boringtun::x25519::PublicKey;

/// Room for a cookie reply (64 bytes on the wire).
pub(crate) const COOKIE_REPLY_BYTES: usize = 64;

/// What to do with a handshake message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admission<'a> {
    /// Handle it (Diffie-Hellman work may start).
    Admitted,
    /// Under load and without a valid mac2: send this cookie reply to the message's source.
    Cookie(&'a [u8]),
    /// mac1 is wrong (not made for this box's public key) or the message is malformed.
    Refused,
}

/// The box's one handshake rate limit.
pub(crate) struct HandshakeLimit {
    shared: RateLimiter,
    sessions: Arc<RateLimiter>,
}

impl HandshakeLimit {
    /// A limit of `per_sec` handshake messages per second for the box with key `own_public`.
    pub(crate) fn new(own_public: &PublicKey, per_sec: u32) -> Self {
        HandshakeLimit {
            shared: RateLimiter::new(own_public, u64::from(per_sec)),
            // Counting up to u64::MAX never reaches the limit: no cookies from the sessions.
            sessions: Arc::new(RateLimiter::new(own_public, u64::MAX)),
        }
    }

    /// Checks one handshake message from `from`, counting it against the limit.
    pub(crate) fn admit<'a>(
        &self,
        from: IpAddr,
        datagram: &[u8],
        cookie: &'a mut [u8; COOKIE_REPLY_BYTES],
    ) -> Admission<'a> {
        match self.shared.verify_packet(Some(from), datagram, cookie) {
            Ok(_) => Admission::Admitted,
            Err(TunnResult::WriteToNetwork(reply)) => Admission::Cookie(reply),
            Err(_) => Admission::Refused,
        }
    }

    /// The limiter to give every `Tunn`: messages reach it only after [`HandshakeLimit::admit`].
    pub(crate) fn session_limiter(&self) -> Arc<RateLimiter> {
        Arc::clone(&self.sessions)
    }

    /// Starts a new one-second window (the timer task calls it once a second).
    pub(crate) fn next_second(&self) {
        self.shared.reset_count();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use boringtun::noise::Tunn;
    use boringtun::x25519::StaticSecret;
    use std::net::Ipv4Addr;

    const HUB_WAN: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
    const MESSAGE_HANDSHAKE_RESPONSE: u8 = 2;
    const MESSAGE_COOKIE_REPLY: u8 = 3;

    fn hub_secret() -> StaticSecret {
        StaticSecret::from([0x11; 32])
    }

    fn facility_secret(n: u32) -> StaticSecret {
        let mut bytes = [0x40; 32];
        bytes[..4].copy_from_slice(&n.to_le_bytes());
        StaticSecret::from(bytes)
    }

    fn facility_wan(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 1, 0)) + n))
    }

    /// One facility and the hub's session with it, made as the data plane makes it.
    struct Pair {
        facility: Tunn,
        hub: Tunn,
        from: IpAddr,
    }

    fn pair(n: u32, limit: &HandshakeLimit) -> Pair {
        let hub = hub_secret();
        let facility = facility_secret(n);
        Pair {
            facility: Tunn::new(facility.clone(), PublicKey::from(&hub), None, None, n, None),
            hub: Tunn::new(
                hub,
                PublicKey::from(&facility),
                None,
                None,
                n,
                Some(limit.session_limiter()),
            ),
            from: facility_wan(n),
        }
    }

    fn limit(per_sec: u32) -> HandshakeLimit {
        HandshakeLimit::new(&PublicKey::from(&hub_secret()), per_sec)
    }

    fn initiation(facility: &mut Tunn, resend: bool) -> Vec<u8> {
        let mut out = [0u8; 256];
        match facility.format_handshake_initiation(&mut out, resend) {
            TunnResult::WriteToNetwork(bytes) => bytes.to_vec(),
            _ => panic!("the facility wrote no initiation"),
        }
    }

    /// The hub's path for an initiation: the limit, then the session. Returns what the hub
    /// sends back.
    fn hub_receives(limit: &HandshakeLimit, pair: &mut Pair, message: &[u8]) -> Vec<u8> {
        let mut cookie = [0u8; COOKIE_REPLY_BYTES];
        match limit.admit(pair.from, message, &mut cookie) {
            Admission::Admitted => {}
            Admission::Cookie(reply) => return reply.to_vec(),
            Admission::Refused => panic!("mac1 refused"),
        }
        let mut out = [0u8; 256];
        match pair.hub.decapsulate(Some(pair.from), message, &mut out) {
            TunnResult::WriteToNetwork(bytes) => bytes.to_vec(),
            _ => panic!("the hub's session wrote nothing"),
        }
    }

    #[test]
    fn avl6_a_limit_of_n_lets_n_initiations_complete_each_counted_once() {
        const FACILITIES: u32 = 40;
        let limit = limit(FACILITIES);
        let mut pairs: Vec<Pair> = (0..FACILITIES).map(|n| pair(n, &limit)).collect();
        for (n, pair) in pairs.iter_mut().enumerate() {
            let init = initiation(&mut pair.facility, false);
            let answer = hub_receives(&limit, pair, &init);
            assert_eq!(
                answer.first(),
                Some(&MESSAGE_HANDSHAKE_RESPONSE),
                "initiation {n} of {FACILITIES} under a limit of {FACILITIES} got no response"
            );
        }
        // The window is used up now: the next one is asked for a cookie.
        let mut extra = pair(FACILITIES, &limit);
        let init = initiation(&mut extra.facility, false);
        let answer = hub_receives(&limit, &mut extra, &init);
        assert_eq!(answer.first(), Some(&MESSAGE_COOKIE_REPLY));
    }

    #[test]
    fn avl6_int1_under_load_a_facility_retrying_with_the_cookie_completes_its_handshake() {
        let limit = limit(10);
        // Other facilities use up the window.
        for n in 0..10 {
            let mut other = pair(100 + n, &limit);
            let init = initiation(&mut other.facility, false);
            hub_receives(&limit, &mut other, &init);
        }
        let mut pair = pair(1, &limit);
        let init = initiation(&mut pair.facility, false);
        let cookie = hub_receives(&limit, &mut pair, &init);
        assert_eq!(
            cookie.first(),
            Some(&MESSAGE_COOKIE_REPLY),
            "asked for a cookie"
        );

        let mut out = [0u8; 256];
        let taken = pair.facility.decapsulate(Some(HUB_WAN), &cookie, &mut out);
        assert!(
            matches!(taken, TunnResult::Done),
            "the facility keeps the cookie"
        );

        // Still under load; the retry carries mac2 and gets through, and the handshake completes.
        let retry = initiation(&mut pair.facility, true);
        let response = hub_receives(&limit, &mut pair, &retry);
        assert_eq!(response.first(), Some(&MESSAGE_HANDSHAKE_RESPONSE));
        let keepalive = match pair
            .facility
            .decapsulate(Some(HUB_WAN), &response, &mut out)
        {
            TunnResult::WriteToNetwork(bytes) => bytes.to_vec(),
            _ => panic!("the facility did not complete the handshake"),
        };
        let mut hub_out = [0u8; 256];
        let delivered = pair
            .hub
            .decapsulate(Some(pair.from), &keepalive, &mut hub_out);
        assert!(
            matches!(delivered, TunnResult::Done),
            "the hub takes the keepalive"
        );

        // A cookie made for another source address does not help a spoofer there.
        let mut spoofed = self::pair(2, &limit);
        spoofed.from = facility_wan(999);
        let again = hub_receives(&limit, &mut spoofed, &retry);
        assert_eq!(again.first(), Some(&MESSAGE_COOKIE_REPLY));
    }

    #[test]
    fn int1_a_message_without_a_valid_mac1_is_refused_before_any_work() {
        let limit = limit(100);
        let mut pair = pair(1, &limit);
        let mut init = initiation(&mut pair.facility, false);
        let mac1 = init.len() - 32;
        init[mac1] ^= 1;
        let mut cookie = [0u8; COOKIE_REPLY_BYTES];
        assert_eq!(
            limit.admit(pair.from, &init, &mut cookie),
            Admission::Refused
        );
    }
}
