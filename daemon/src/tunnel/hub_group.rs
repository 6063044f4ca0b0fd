//! A facility's hub group at run time (AVL-4): the pure [`super::failover`] machine fed with
//! what the data plane's peers heard, and its answers carried out on them.
//!
//! Exactly one member is active: it owns the group's prefixes and runs the box's policy
//! (always-on or on-demand). The others are standby: [`Peer::is_standby`] makes them own
//! nothing (no route to them, nothing from them delivered), and they run the passive policy,
//! so they never initiate on their own; the group probes them with a handshake now and then
//! (always-on). A switch drops the old member's session (connections through it end) and starts
//! the new member's policy at once (always-on: it initiates now).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio::sync::broadcast;

use super::dataplane::DataPlane;
use super::failover::{Failover, FailoverTimers, Step, Style, Switch, UnknownHub, Why};
use super::peer::Peer;
use super::policy::{Event, LinkState, Mode, Policy, PolicyTimers};
use crate::config::FailoverConfig;
use crate::state::events::{HubMove, Occurrence};
use crate::state::hub_preference::HubPreference;

/// How often the group looks at its members: well under a second of reaction on top of the
/// configured times.
const CHECK_INTERVAL: Duration = Duration::from_millis(500);
/// Hub switches kept for subscribers (the event ring) that are slow to read.
const OCCURRENCE_BACKLOG: usize = 16;

/// The operator's preferred hub: kept by the tunnel handle so that it outlives a restart of the
/// tunnel for a config change, and in the state directory so that it outlives a restart of the
/// daemon, until the operator clears it.
pub(crate) type Preference = Arc<HubPreference>;

/// A running hub group.
pub(crate) struct HubGroup {
    machine: Mutex<Failover>,
    /// The members' indices in the plane's peers, in the group's order.
    members: Vec<usize>,
    /// The policy the active member runs.
    active_mode: Mode,
    /// Each member's timers while active, in the group's order.
    timers: Vec<PolicyTimers>,
    config: FailoverConfig,
    preference: Preference,
    occurrences: broadcast::Sender<Occurrence>,
    /// on_demand: how long a connect attempt may take (`tunnel.policy.connect_timeout_secs`).
    connect_timeout: Duration,
    /// on_demand: since when the active member has been connecting without a session.
    connecting_since: Mutex<Option<Instant>>,
}

/// Why the operator's preference was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PreferError {
    /// The box has no hub group.
    #[error("this box has no hub group ([tunnel.failover])")]
    NoGroup,
    /// The name is not a member.
    #[error(transparent)]
    Unknown(#[from] UnknownHub),
}

/// The group as the status document shows it (`hubs`).
#[derive(Debug, Clone, Serialize)]
pub struct HubsSnapshot {
    /// The hub routing now.
    pub active: String,
    /// The operator's preferred hub, if set.
    pub preferred: Option<String>,
    /// Times the box moved away from a failed hub since the tunnel started.
    pub failovers: u64,
    /// `[tunnel.failover] failover_after_secs`.
    pub failover_after_secs: u64,
    /// `[tunnel.failover] fail_back_after_secs`.
    pub fail_back_after_secs: u64,
    /// Every member, most preferred first.
    pub members: Vec<HubSnapshot>,
}

/// One hub of the group.
#[derive(Debug, Clone, Serialize)]
pub struct HubSnapshot {
    /// Peer name.
    pub name: String,
    /// The one routing now.
    pub active: bool,
    /// Heard from within `failover_after_secs` (on-demand boxes do not probe: false while
    /// idle).
    pub healthy: bool,
    /// The operator prefers it.
    pub preferred: bool,
    /// The peer's state (a standby hub is up while a probe's session lasts).
    pub state: LinkState,
    /// Wall-clock time of its last completed handshake.
    #[serde(serialize_with = "crate::state::link::unix_time::serialize")]
    pub last_handshake: Option<SystemTime>,
    /// Seconds since it was last heard from (handshake or authenticated packet).
    pub last_heard_age_secs: Option<u64>,
}

impl HubGroup {
    /// The group of `config` over `peers` (the plane's, in config order), or `None` when a
    /// member is missing (the config check refuses that). `preferred` is the operator's
    /// preference; the members must already be standby except the one [`initial_active`] named.
    pub(crate) fn new(
        config: &FailoverConfig,
        peers: &[Arc<Peer>],
        active_mode: Mode,
        connect_timeout: Duration,
        preference: Preference,
        now: Instant,
    ) -> Option<Self> {
        let members: Vec<usize> = config
            .hubs
            .iter()
            .map(|name| peers.iter().position(|p| p.name == *name))
            .collect::<Option<_>>()?;
        let timers = members
            .iter()
            .map(|&i| peers[i].lock().policy.timers())
            .collect();
        let style = match active_mode {
            Mode::OnDemand => Style::OnDemand,
            Mode::AlwaysOn | Mode::Passive => Style::AlwaysOn,
        };
        // A name outside the group is dropped by the machine ([`initial_active`] logs it).
        let preferred = preference.get();
        let machine = Failover::new(
            config.hubs.clone(),
            style,
            FailoverTimers {
                failover_after: Duration::from_secs(config.failover_after_secs),
                fail_back_after: Duration::from_secs(config.fail_back_after_secs),
                probe_interval: Duration::from_secs(config.probe_interval_secs),
            },
            preferred.as_deref(),
            now,
        );
        let (occurrences, _) = broadcast::channel(OCCURRENCE_BACKLOG);
        Some(HubGroup {
            machine: Mutex::new(machine),
            members,
            active_mode,
            timers,
            config: config.clone(),
            preference,
            occurrences,
            connect_timeout,
            connecting_since: Mutex::new(None),
        })
    }

    fn machine(&self) -> MutexGuard<'_, Failover> {
        lock(&self.machine)
    }

    /// Hub switches as events, for the event ring.
    pub(crate) fn occurrences(&self) -> broadcast::Receiver<Occurrence> {
        self.occurrences.subscribe()
    }

    /// Watches the members until the task is aborted.
    pub(crate) async fn run(self: Arc<Self>, plane: Arc<DataPlane>) {
        let mut interval = tokio::time::interval(CHECK_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let now = Instant::now();
            let heard: Vec<Option<Instant>> = self
                .members
                .iter()
                .map(|&i| plane.peers[i].lock().policy.last_heard())
                .collect();
            if self.active_mode == Mode::OnDemand {
                self.check_connect(&plane, now).await;
            }
            let steps = {
                let mut machine = self.machine();
                for (member, at) in heard.iter().enumerate() {
                    if let Some(at) = at {
                        machine.heard(member, *at);
                    }
                }
                let active = &plane.peers[self.members[machine.active()]];
                let idle = {
                    let state = active.lock();
                    state.policy.state() == LinkState::Idle && state.policy.holds() == 0
                };
                machine.tick(now, idle)
            };
            for step in steps {
                match step {
                    Step::Switch(switch) => self.switch(&plane, switch).await,
                    Step::Probe(member) => self.probe(&plane, member).await,
                }
            }
        }
    }

    /// on_demand: an attempt of the active member (started by a proxied connection or by any
    /// packet for its prefixes) that has not brought a session within the connect timeout
    /// fails over, as [`HubGroup::connect_failed`].
    async fn check_connect(&self, plane: &DataPlane, now: Instant) {
        let index = self.members[self.machine().active()];
        let connecting = plane.peers[index].lock().policy.state() == LinkState::Connecting;
        let overdue = {
            let mut since = lock(&self.connecting_since);
            match (connecting, *since) {
                (false, _) => {
                    *since = None;
                    false
                }
                (true, None) => {
                    *since = Some(now);
                    false
                }
                (true, Some(at)) => now.saturating_duration_since(at) >= self.connect_timeout,
            }
        };
        if overdue {
            self.connect_failed(plane, index).await;
        }
    }

    /// on_demand: a connect through the active member (plane index `peer_index`) got no
    /// handshake in time: the next member takes over for the next connect.
    pub(crate) async fn connect_failed(&self, plane: &DataPlane, peer_index: usize) {
        let switch = {
            let mut machine = self.machine();
            if self.members.get(machine.active()) != Some(&peer_index) {
                return;
            }
            machine.connect_failed(Instant::now())
        };
        if let Some(switch) = switch {
            *lock(&self.connecting_since) = None;
            self.switch(plane, switch).await;
        }
    }

    /// The operator prefers `name` (or clears the preference with `None`); returns the active
    /// hub afterwards.
    pub(crate) async fn prefer(
        &self,
        plane: &DataPlane,
        name: Option<&str>,
    ) -> Result<String, PreferError> {
        let switch = self.machine().prefer(name, Instant::now())?;
        let preference = Arc::clone(&self.preference);
        let kept = name.map(str::to_string);
        match tokio::task::spawn_blocking(move || preference.set(kept.as_deref())).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(
                error = %e,
                "cannot keep the hub preference in the state directory; it holds until the daemon restarts"
            ),
            Err(e) => tracing::warn!(error = %e, "the hub preference was not written down"),
        }
        tracing::info!(
            preferred = name.unwrap_or("none"),
            "hub group: the operator's preference is set"
        );
        if let Some(switch) = switch {
            self.switch(plane, switch).await;
        }
        Ok(self.machine().active_name().to_string())
    }

    /// Sends member `member` a handshake initiation. A standby member without session state
    /// gets some first, without a change of its policy's state: a dead standby hub is probed
    /// again and again, and must not fill the event ring with connecting/idle changes. The
    /// active member's own policy connects it when it has none.
    async fn probe(&self, plane: &DataPlane, member: usize) {
        let peer = &plane.peers[self.members[member]];
        {
            let mut state = peer.lock();
            if state.tunn.is_none() {
                if !peer.is_standby() {
                    return;
                }
                state.tunn = Some(plane.new_tunn(peer));
            }
        }
        plane.rehandshake(peer).await;
    }

    /// Makes `switch.to` the only routing member and starts its policy; the old one becomes
    /// standby without its session. Logged, and an event in the ring.
    async fn switch(&self, plane: &DataPlane, switch: Switch) {
        let now = Instant::now();
        let old = &plane.peers[self.members[switch.from]];
        let new = &plane.peers[self.members[switch.to]];
        // The new member owns the prefixes before the old one lets go: no packet finds no route.
        new.standby.store(false, Ordering::Release);
        old.standby.store(true, Ordering::Release);
        {
            let mut state = old.lock();
            // Dropping the Tunn drops the session keys: nothing more crosses the old hub.
            state.tunn = None;
            state.awaiting_response = false;
            let timers = state.policy.timers();
            state.policy = Policy::new(Mode::Passive, timers, now);
            state.policy.handle(Event::Start, now);
        }
        old.link_state.send_replace(LinkState::Idle);
        {
            let mut state = new.lock();
            state.policy = Policy::new(self.active_mode, self.timers[switch.to], now);
        }
        let backlog = plane.event_now(new, Event::Start);
        new.link_state.send_replace(new.lock().policy.state());
        plane.send_backlog(backlog).await;

        let failovers = self.machine().failovers();
        let reason = hub_move(switch.why);
        if switch.why.is_failure() {
            tracing::warn!(
                hub_from = %old.name,
                hub_to = %new.name,
                reason = switch.why.as_str(),
                failovers,
                "hub group: failed over to another hub"
            );
        } else {
            tracing::info!(
                hub_from = %old.name,
                hub_to = %new.name,
                reason = switch.why.as_str(),
                failovers,
                "hub group: moved to another hub"
            );
        }
        // No subscriber (no status side) is not an error.
        let _ = self.occurrences.send(Occurrence::HubSwitched {
            from: old.name.clone(),
            to: new.name.clone(),
            reason,
            failovers,
        });
    }

    /// The group for the status document.
    pub(crate) fn snapshot(&self, plane: &DataPlane) -> HubsSnapshot {
        let now = Instant::now();
        let machine = self.machine();
        let members = machine
            .members(now)
            .into_iter()
            .zip(&self.members)
            .map(|(view, &i)| {
                let state = plane.peers[i].lock();
                HubSnapshot {
                    name: view.name,
                    active: view.active,
                    healthy: view.healthy,
                    preferred: view.preferred,
                    state: state.policy.state(),
                    last_handshake: state.last_handshake.map(|t| t.wall),
                    last_heard_age_secs: view
                        .last_heard
                        .map(|t| now.saturating_duration_since(t).as_secs()),
                }
            })
            .collect();
        HubsSnapshot {
            active: machine.active_name().to_string(),
            preferred: machine.preferred().map(str::to_string),
            failovers: machine.failovers(),
            failover_after_secs: self.config.failover_after_secs,
            fail_back_after_secs: self.config.fail_back_after_secs,
            members,
        }
    }
}

/// The member that starts active: the operator's preference when it is a member, else the
/// first (a preference for a hub no longer in the group is logged and ignored).
pub(crate) fn initial_active<'a>(config: &'a FailoverConfig, preference: &Preference) -> &'a str {
    let preferred = preference.for_group(&config.hubs).unwrap_or_else(|e| {
        tracing::warn!(preferred = %e.hub, "{e}");
        None
    });
    config
        .hubs
        .iter()
        .find(|h| preferred.as_deref() == Some(h.as_str()))
        .or(config.hubs.first())
        .map_or("", String::as_str)
}

fn hub_move(why: Why) -> HubMove {
    match why {
        Why::NoAnswer => HubMove::NoAnswer,
        Why::ConnectFailed => HubMove::ConnectFailed,
        Why::FailBack => HubMove::FailBack,
        Why::OperatorPreferred => HubMove::OperatorPreferred,
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
