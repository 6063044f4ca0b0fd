//! The tunnel policy of one peer as a pure state machine: always-on or on-demand.
//!
//! It is fed events and the current time and answers with at most one action; it never does I/O,
//! so every rule (never send while idle, never stay down without retrying, drop keys when idle)
//! is tested here exhaustively and instantly. The data plane around it does the sending.

use std::time::{Duration, Instant};

use serde::Serialize;

/// How long a facility box keeps one session before it forces a fresh handshake. boringtun
/// only rekeys when data flows; the kernel also rekeys on keepalives. Rekeying on schedule keeps
/// "last handshake" meaningful for the alarm and notices a restarted hub.
pub const REKEY_AFTER: Duration = Duration::from_secs(120);
/// WireGuard's Reject-After-Time: no packet may use a session older than this. A passive peer
/// (the hub's side of a facility) whose last handshake is this old has no session any more:
/// the facility dropped it (an on-demand box that idled out) or went away, and only a new
/// handshake from it brings it back.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(180);
/// How long one connection attempt (boringtun retransmits every 5 s) may take before it counts
/// as failed.
pub const CONNECT_ATTEMPT: Duration = Duration::from_secs(20);
/// First retry delay after a failed attempt; doubles per failure up to `BACKOFF_MAX`.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest retry delay: a link that comes back is used again within this plus one attempt.
pub const BACKOFF_MAX: Duration = Duration::from_secs(8);

/// Which policy the peer follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Keep a session at all times (disclosing facility, NET-6).
    AlwaysOn,
    /// Only while needed; drop the session and its keys when idle (viewing facility, NET-7).
    OnDemand,
    /// Never initiate: a hub's peer whose endpoint is learnt from its packets.
    Passive,
}

/// The peer's state: the carrier-neutral type, defined below every carrier.
pub use crate::state::link::{LinkReason, LinkState};

/// Something that happened to the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The daemon started.
    Start,
    /// A packet wants into the tunnel, or the proxy called `demand()`.
    Demand,
    /// An authenticated data packet arrived from the peer.
    Traffic,
    /// Any authenticated message arrived (keepalives included): the peer is alive.
    Authenticated,
    /// A handshake completed (either side initiated).
    HandshakeCompleted,
    /// boringtun gave up on the session (handshake attempts exhausted or keys expired).
    SessionExpired,
    /// A proxied connection started holding the tunnel open.
    HoldAcquired,
    /// A proxied connection that held the tunnel open closed.
    HoldReleased,
    /// Time passed.
    Tick,
    /// The daemon restarted while this passive peer had a session (see `tunnel::resume`): greet
    /// it once, so that it need not notice the lost session by itself.
    Resume,
}

/// What the data plane must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send a handshake initiation now.
    Initiate,
    /// Forget the session: drop the `Tunn` so its keys are gone.
    DropSession,
}

/// The timers a policy runs on, from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyTimers {
    /// on_demand: idle time after which the session is dropped.
    pub idle_timeout: Duration,
    /// always_on: age of the last handshake that raises the alarm.
    pub handshake_alarm: Duration,
    /// always_on with keepalives: silence from the peer for this long means the session is dead
    /// (say, the hub restarted and forgot it), so a fresh handshake is started.
    pub liveness: Option<Duration>,
}

impl PolicyTimers {
    /// The liveness timeout for a keepalive interval: two missed keepalives plus a handshake
    /// retransmission time, never below 20 s.
    pub fn liveness_for_keepalive(keepalive_secs: u16) -> Duration {
        Duration::from_secs(u64::from(keepalive_secs).saturating_mul(2).max(15) + 5)
    }
}

/// The policy state of one peer.
#[derive(Debug, Clone)]
pub struct Policy {
    mode: Mode,
    timers: PolicyTimers,
    state: LinkState,
    started_at: Instant,
    last_handshake: Option<Instant>,
    last_traffic: Instant,
    last_received: Instant,
    /// The last time the peer proved itself (handshake or authenticated packet); unlike
    /// `last_received` it is not set at creation, so "never" stays visible (hub failover).
    last_heard: Option<Instant>,
    attempt_started: Option<Instant>,
    retry_at: Option<Instant>,
    consecutive_failures: u32,
    holds: usize,
    reason: LinkReason,
}

impl Policy {
    /// A policy that has not started yet.
    pub fn new(mode: Mode, timers: PolicyTimers, now: Instant) -> Self {
        Policy {
            mode,
            timers,
            state: LinkState::Idle,
            started_at: now,
            last_handshake: None,
            last_traffic: now,
            last_received: now,
            last_heard: None,
            attempt_started: None,
            retry_at: None,
            consecutive_failures: 0,
            holds: 0,
            reason: LinkReason::NotStarted,
        }
    }

    /// Current state.
    pub fn state(&self) -> LinkState {
        self.state
    }

    /// Why the peer is in its state, for people.
    pub fn reason(&self) -> LinkReason {
        self.reason
    }

    /// The timers the policy runs on.
    pub fn timers(&self) -> PolicyTimers {
        self.timers
    }

    /// The mode the policy runs in.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// When the peer last proved itself: a completed handshake or an authenticated packet.
    pub fn last_heard(&self) -> Option<Instant> {
        self.last_heard
    }

    /// Connections currently holding the tunnel open.
    pub fn holds(&self) -> usize {
        self.holds
    }

    /// Failed attempts in a row since the last success.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// True when an always-on peer's last handshake is older than the alarm threshold (NET-6).
    pub fn alarm(&self, now: Instant) -> bool {
        if self.mode != Mode::AlwaysOn {
            return false;
        }
        let since = self.last_handshake.unwrap_or(self.started_at);
        now.saturating_duration_since(since) > self.timers.handshake_alarm
    }

    /// Feeds one event; returns what to do.
    pub fn handle(&mut self, event: Event, now: Instant) -> Option<Action> {
        match event {
            Event::Start => self.start(now),
            Event::Demand => self.demand(now),
            Event::Traffic => {
                self.last_traffic = now;
                self.last_received = now;
                self.last_heard = Some(now);
                None
            }
            Event::Authenticated => {
                self.last_received = now;
                self.last_heard = Some(now);
                None
            }
            Event::HandshakeCompleted => {
                self.last_heard = Some(now);
                self.state = LinkState::Up;
                self.reason = LinkReason::SessionEstablished;
                self.last_handshake = Some(now);
                self.last_received = now;
                self.last_traffic = self.last_traffic.max(now);
                self.attempt_started = None;
                self.retry_at = None;
                self.consecutive_failures = 0;
                None
            }
            Event::SessionExpired => self.fail(now, LinkReason::NoHandshakeResponse),
            Event::HoldAcquired => {
                self.holds += 1;
                self.demand(now)
            }
            Event::HoldReleased => {
                self.holds = self.holds.saturating_sub(1);
                self.last_traffic = now;
                None
            }
            Event::Tick => self.tick(now),
            Event::Resume => self.resume(now),
        }
    }

    fn start(&mut self, now: Instant) -> Option<Action> {
        self.started_at = now;
        match self.mode {
            Mode::AlwaysOn => self.connect(now, LinkReason::ConnectingAtStart),
            Mode::OnDemand => {
                self.reason = LinkReason::IdleUntilNeeded;
                None
            }
            Mode::Passive => {
                self.reason = LinkReason::WaitingForPeer;
                None
            }
        }
    }

    fn resume(&mut self, now: Instant) -> Option<Action> {
        match (self.mode, self.state) {
            (Mode::Passive, LinkState::Idle) => self.connect(now, LinkReason::GreetingAfterRestart),
            _ => None,
        }
    }

    fn demand(&mut self, now: Instant) -> Option<Action> {
        self.last_traffic = now;
        match (self.mode, self.state) {
            (Mode::Passive, _) | (_, LinkState::Up) | (_, LinkState::Connecting) => None,
            (_, LinkState::Idle) | (_, LinkState::Down) => {
                self.connect(now, LinkReason::ConnectingOnDemand)
            }
        }
    }

    fn connect(&mut self, now: Instant, reason: LinkReason) -> Option<Action> {
        self.state = LinkState::Connecting;
        self.reason = reason;
        self.attempt_started = Some(now);
        self.retry_at = None;
        Some(Action::Initiate)
    }

    fn fail(&mut self, now: Instant, reason: LinkReason) -> Option<Action> {
        self.attempt_started = None;
        match self.mode {
            Mode::AlwaysOn => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                self.state = LinkState::Down;
                self.reason = reason;
                self.retry_at = Some(now + backoff(self.consecutive_failures));
                None
            }
            Mode::OnDemand | Mode::Passive => {
                if self.state == LinkState::Connecting {
                    self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                }
                self.state = LinkState::Idle;
                self.reason = reason;
                Some(Action::DropSession)
            }
        }
    }

    fn tick(&mut self, now: Instant) -> Option<Action> {
        match (self.mode, self.state) {
            (_, LinkState::Connecting) => {
                let started = self.attempt_started.unwrap_or(now);
                if now.saturating_duration_since(started) >= CONNECT_ATTEMPT {
                    return self.fail(now, LinkReason::AttemptTimedOut);
                }
                None
            }
            (Mode::AlwaysOn, LinkState::Down) => match self.retry_at {
                Some(at) if now >= at => self.connect(now, LinkReason::Reconnecting),
                _ => None,
            },
            (Mode::AlwaysOn, LinkState::Up) => {
                let since = self.last_handshake.unwrap_or(now);
                let silent = self
                    .timers
                    .liveness
                    .is_some_and(|l| now.saturating_duration_since(self.last_received) >= l);
                if now.saturating_duration_since(since) >= REKEY_AFTER || silent {
                    // Stay up while the fresh handshake runs; its completion resets the clock,
                    // its failure arrives as SessionExpired or the attempt timeout.
                    self.attempt_started.get_or_insert(now);
                    if now.saturating_duration_since(self.attempt_started.unwrap_or(now))
                        >= CONNECT_ATTEMPT
                    {
                        return self.fail(now, LinkReason::RekeyNoResponse);
                    }
                    return Some(Action::Initiate);
                }
                None
            }
            (Mode::Passive, LinkState::Up) => {
                let since = self.last_handshake.unwrap_or(now);
                if now.saturating_duration_since(since) >= SESSION_LIFETIME {
                    self.state = LinkState::Idle;
                    self.reason = LinkReason::PeerSessionEnded;
                    return Some(Action::DropSession);
                }
                None
            }
            (Mode::OnDemand, LinkState::Up) => {
                if self.holds == 0
                    && now.saturating_duration_since(self.last_traffic) >= self.timers.idle_timeout
                {
                    self.state = LinkState::Idle;
                    self.reason = LinkReason::IdleTimeout;
                    return Some(Action::DropSession);
                }
                None
            }
            _ => None,
        }
    }
}

/// Delay before retry number `failures` (1-based): 1 s, 2 s, 4 s, 8 s, 8 s ...
fn backoff(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    BACKOFF_MIN
        .saturating_mul(1u32 << exponent)
        .min(BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TIMERS: PolicyTimers = PolicyTimers {
        idle_timeout: Duration::from_secs(30),
        handshake_alarm: Duration::from_secs(180),
        liveness: Some(Duration::from_secs(55)),
    };

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn net6_always_on_initiates_at_start_and_retries_with_backoff() {
        let t0 = Instant::now();
        let mut p = Policy::new(Mode::AlwaysOn, TIMERS, t0);
        assert_eq!(p.handle(Event::Start, t0), Some(Action::Initiate));
        assert_eq!(p.state(), LinkState::Connecting);
        assert_eq!(p.handle(Event::Tick, t0 + secs(19)), None);
        assert_eq!(p.handle(Event::Tick, t0 + secs(20)), None);
        assert_eq!(p.state(), LinkState::Down);
        // First retry after 1 s.
        assert_eq!(p.handle(Event::Tick, t0 + secs(20)), None);
        assert_eq!(p.handle(Event::Tick, t0 + secs(21)), Some(Action::Initiate));
        assert_eq!(p.handle(Event::SessionExpired, t0 + secs(22)), None);
        // Second retry after 2 s.
        assert_eq!(p.handle(Event::Tick, t0 + secs(23)), None);
        assert_eq!(p.handle(Event::Tick, t0 + secs(24)), Some(Action::Initiate));
        assert_eq!(p.handle(Event::HandshakeCompleted, t0 + secs(25)), None);
        assert_eq!(p.state(), LinkState::Up);
        assert_eq!(p.consecutive_failures(), 0);
    }

    #[test]
    fn net6_always_on_rekeys_and_alarms_on_stale_handshake() {
        let t0 = Instant::now();
        let quiet_ok = PolicyTimers {
            liveness: None,
            ..TIMERS
        };
        let mut p = Policy::new(Mode::AlwaysOn, quiet_ok, t0);
        p.handle(Event::Start, t0);
        p.handle(Event::HandshakeCompleted, t0 + secs(1));
        assert_eq!(p.handle(Event::Tick, t0 + secs(100)), None);
        assert_eq!(
            p.handle(Event::Tick, t0 + secs(121)),
            Some(Action::Initiate)
        );
        assert!(!p.alarm(t0 + secs(181)));
        assert!(p.alarm(t0 + secs(182)));
        p.handle(Event::HandshakeCompleted, t0 + secs(183));
        assert!(!p.alarm(t0 + secs(183)));
    }

    #[test]
    fn net6_always_on_notices_a_silent_peer() {
        let t0 = Instant::now();
        let mut p = Policy::new(Mode::AlwaysOn, TIMERS, t0);
        p.handle(Event::Start, t0);
        p.handle(Event::HandshakeCompleted, t0);
        p.handle(Event::Authenticated, t0 + secs(30));
        assert_eq!(p.handle(Event::Tick, t0 + secs(84)), None);
        assert_eq!(p.handle(Event::Tick, t0 + secs(85)), Some(Action::Initiate));
        assert_eq!(PolicyTimers::liveness_for_keepalive(25), secs(55));
        assert_eq!(PolicyTimers::liveness_for_keepalive(2), secs(20));
    }

    #[test]
    fn net7_on_demand_is_silent_until_demanded_and_drops_when_idle() {
        let t0 = Instant::now();
        let mut p = Policy::new(Mode::OnDemand, TIMERS, t0);
        assert_eq!(p.handle(Event::Start, t0), None);
        for s in 0..1000 {
            assert_eq!(p.handle(Event::Tick, t0 + secs(s)), None);
        }
        assert_eq!(
            p.handle(Event::Demand, t0 + secs(1000)),
            Some(Action::Initiate)
        );
        assert_eq!(p.handle(Event::Demand, t0 + secs(1000)), None);
        p.handle(Event::HandshakeCompleted, t0 + secs(1001));
        assert_eq!(p.handle(Event::Tick, t0 + secs(1030)), None);
        assert_eq!(
            p.handle(Event::Tick, t0 + secs(1031)),
            Some(Action::DropSession)
        );
        assert_eq!(p.state(), LinkState::Idle);
    }

    #[test]
    fn on_demand_hold_keeps_the_session() {
        let t0 = Instant::now();
        let mut p = Policy::new(Mode::OnDemand, TIMERS, t0);
        p.handle(Event::Start, t0);
        assert_eq!(p.handle(Event::HoldAcquired, t0), Some(Action::Initiate));
        p.handle(Event::HandshakeCompleted, t0 + secs(1));
        assert_eq!(p.handle(Event::Tick, t0 + secs(500)), None);
        assert_eq!(p.state(), LinkState::Up);
        p.handle(Event::HoldReleased, t0 + secs(500));
        assert_eq!(p.handle(Event::Tick, t0 + secs(529)), None);
        assert_eq!(
            p.handle(Event::Tick, t0 + secs(530)),
            Some(Action::DropSession)
        );
    }

    #[test]
    fn passive_greets_once_on_resume_and_goes_idle_if_unanswered() {
        let t0 = Instant::now();
        let mut p = Policy::new(Mode::Passive, TIMERS, t0);
        assert_eq!(p.handle(Event::Start, t0), None);
        assert_eq!(p.handle(Event::Resume, t0), Some(Action::Initiate));
        assert_eq!(p.state(), LinkState::Connecting);
        assert_eq!(p.handle(Event::Resume, t0), None, "one greeting at a time");
        assert_eq!(
            p.handle(Event::Tick, t0 + CONNECT_ATTEMPT),
            Some(Action::DropSession)
        );
        assert_eq!(p.state(), LinkState::Idle);
        assert_eq!(p.handle(Event::Tick, t0 + secs(1000)), None);
        // Answered, it is an ordinary passive session.
        let mut p = Policy::new(Mode::Passive, TIMERS, t0);
        p.handle(Event::Start, t0);
        p.handle(Event::Resume, t0);
        p.handle(Event::HandshakeCompleted, t0 + secs(1));
        assert_eq!(p.state(), LinkState::Up);
        assert_eq!(p.handle(Event::Resume, t0 + secs(2)), None);
        assert_eq!(p.handle(Event::Tick, t0 + secs(100)), None);
    }

    #[test]
    fn resume_means_nothing_to_facility_policies() {
        let t0 = Instant::now();
        for mode in [Mode::AlwaysOn, Mode::OnDemand] {
            let mut p = Policy::new(mode, TIMERS, t0);
            p.handle(Event::Start, t0);
            let before = p.state();
            assert_eq!(p.handle(Event::Resume, t0), None, "{mode:?}");
            assert_eq!(p.state(), before);
        }
    }

    #[test]
    fn passive_session_ends_at_its_lifetime_unless_the_peer_handshakes_again() {
        let t0 = Instant::now();
        let mut p = Policy::new(Mode::Passive, TIMERS, t0);
        p.handle(Event::Start, t0);
        p.handle(Event::HandshakeCompleted, t0);
        assert_eq!(p.state, LinkState::Up);
        // The peer rekeys (as an initiator does every 120 s while it talks): still up.
        assert_eq!(p.handle(Event::Tick, t0 + secs(170)), None);
        p.handle(Event::HandshakeCompleted, t0 + secs(170));
        assert_eq!(p.handle(Event::Tick, t0 + secs(300)), None);
        assert_eq!(p.state, LinkState::Up);
        // Then it goes quiet (an on-demand box idled out and dropped its keys).
        assert_eq!(
            p.handle(Event::Tick, t0 + secs(350)),
            Some(Action::DropSession)
        );
        assert_eq!(p.state, LinkState::Idle);
        // Its next handshake brings it back.
        p.handle(Event::HandshakeCompleted, t0 + secs(400));
        assert_eq!(p.state, LinkState::Up);
    }

    #[test]
    fn passive_never_initiates() {
        let t0 = Instant::now();
        let mut p = Policy::new(Mode::Passive, TIMERS, t0);
        assert_eq!(p.handle(Event::Start, t0), None);
        assert_eq!(p.handle(Event::Demand, t0), None);
        p.handle(Event::HandshakeCompleted, t0 + secs(1));
        assert_eq!(p.state(), LinkState::Up);
        assert_eq!(p.handle(Event::Tick, t0 + secs(100)), None);
        // A session past its lifetime is dropped, never renewed from this side.
        assert_eq!(
            p.handle(Event::Tick, t0 + secs(1000)),
            Some(Action::DropSession)
        );
        assert_eq!(p.handle(Event::Demand, t0 + secs(1001)), None);
    }

    fn any_event() -> impl Strategy<Value = Event> {
        prop_oneof![
            Just(Event::Demand),
            Just(Event::Traffic),
            Just(Event::Authenticated),
            Just(Event::HandshakeCompleted),
            Just(Event::SessionExpired),
            Just(Event::HoldAcquired),
            Just(Event::HoldReleased),
            Just(Event::Tick),
            Just(Event::Resume),
        ]
    }

    fn any_mode() -> impl Strategy<Value = Mode> {
        prop_oneof![
            Just(Mode::AlwaysOn),
            Just(Mode::OnDemand),
            Just(Mode::Passive)
        ]
    }

    proptest! {
        /// Invariants over random histories (after firezone connlib's state-machine tests).
        #[test]
        fn invariants_hold(mode in any_mode(),
                           steps in proptest::collection::vec((any_event(), 0u64..40_000), 1..200)) {
            let t0 = Instant::now();
            let mut p = Policy::new(mode, TIMERS, t0);
            let mut now = t0;
            let mut initiated = p.handle(Event::Start, now) == Some(Action::Initiate);
            prop_assert_eq!(initiated, mode == Mode::AlwaysOn);
            // The data plane only reports a handshake after it initiated one or answered one;
            // an idle on-demand peer never initiates without demand.
            for (event, advance_ms) in steps {
                now += Duration::from_millis(advance_ms);
                let before = p.state();
                let action = p.handle(event, now);
                match action {
                    Some(Action::Initiate) => {
                        prop_assert!(
                            mode != Mode::Passive || event == Event::Resume,
                            "passive peers initiate only to greet after a restart: {:?}", event
                        );
                        if mode == Mode::OnDemand && before == LinkState::Idle {
                            prop_assert!(
                                matches!(event, Event::Demand | Event::HoldAcquired),
                                "on-demand initiated from idle without demand: {:?}", event
                            );
                        }
                        initiated = true;
                    }
                    Some(Action::DropSession) => {
                        prop_assert!(mode != Mode::AlwaysOn, "always-on never drops its session");
                        prop_assert_eq!(p.state(), LinkState::Idle);
                    }
                    None => {}
                }
                if p.state() == LinkState::Idle && mode == Mode::OnDemand {
                    // Idle means silent: ticks alone never wake it.
                    let mut probe = p.clone();
                    prop_assert_eq!(probe.handle(Event::Tick, now + Duration::from_secs(86_400)), None);
                }
                if mode == Mode::AlwaysOn && p.state() == LinkState::Down {
                    // Always-on never stays down: a retry comes within the longest backoff.
                    let mut probe = p.clone();
                    prop_assert_eq!(
                        probe.handle(Event::Tick, now + BACKOFF_MAX),
                        Some(Action::Initiate)
                    );
                }
                if mode == Mode::OnDemand && p.state() == LinkState::Up && p.holds() == 0 {
                    // An unused on-demand session is dropped after the idle timeout.
                    let mut probe = p.clone();
                    prop_assert_eq!(
                        probe.handle(Event::Tick, now + TIMERS.idle_timeout),
                        Some(Action::DropSession)
                    );
                }
            }
            let _ = initiated;
        }
    }
}
