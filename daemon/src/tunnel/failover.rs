//! Which hub of a facility's hub group carries the data centre's prefixes (AVL-4), as a pure
//! state machine: it is told when each hub was last heard from and what time it is, and answers
//! with what to do (switch, probe). It never does I/O, so every rule (exactly one active hub,
//! fail over after silence, fail back only after a whole hold time of health, the operator's
//! preference) is tested here with made-up instants.
//!
//! "Heard" means the hub proved itself: a completed handshake or an authenticated packet. A hub
//! is healthy while it was heard within `failover_after`; its healthy spell starts again after
//! any longer silence, so a flapping hub never completes the hold time.

use std::time::{Duration, Instant};

/// The timers of a hub group, from `[tunnel.failover]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailoverTimers {
    /// Silence after which a hub counts as failed (the active one is given up).
    pub failover_after: Duration,
    /// How long a more preferred hub must stay healthy before the box returns to it.
    pub fail_back_after: Duration,
    /// always_on: a hub not heard from for this long is sent a handshake.
    pub probe_interval: Duration,
}

/// How the box uses its tunnel, which decides how a failed hub is noticed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Sessions all the time: silence of the active hub is a failure; every hub is probed.
    AlwaysOn,
    /// Sessions only for connections: a connect attempt without a handshake is a failure;
    /// nothing is sent while idle, so nothing is probed.
    OnDemand,
}

/// Why the active hub changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// always_on: the active hub did not answer for `failover_after`.
    NoAnswer,
    /// on_demand: a connect attempt got no handshake within the connect timeout.
    ConnectFailed,
    /// A more preferred hub has been healthy for the whole hold time (always_on), or the hold
    /// time passed while the box was idle (on_demand: its next connect tries it).
    FailBack,
    /// The operator prefers this hub (maintenance of another).
    OperatorPreferred,
}

impl Why {
    /// The stable word in logs, events and the status document.
    pub fn as_str(self) -> &'static str {
        match self {
            Why::NoAnswer => "no_answer",
            Why::ConnectFailed => "connect_failed",
            Why::FailBack => "fail_back",
            Why::OperatorPreferred => "operator_preferred",
        }
    }

    /// Whether this move counts as a failover (the active hub failed), not a planned return.
    pub fn is_failure(self) -> bool {
        matches!(self, Why::NoAnswer | Why::ConnectFailed)
    }
}

/// A change of the active hub, by member index (order of `hubs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Switch {
    /// The hub that was active.
    pub from: usize,
    /// The hub that is active now.
    pub to: usize,
    /// Why.
    pub why: Why,
}

/// What the tunnel must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Make `to` the only routing member, at once (it initiates a handshake).
    Switch(Switch),
    /// Send this member a handshake initiation: it has been silent for a probe interval.
    Probe(usize),
}

/// The operator named a hub that is not in the group.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no hub of the group is named {0:?}")]
pub struct UnknownHub(pub String);

#[derive(Debug, Clone)]
struct Member {
    name: String,
    last_heard: Option<Instant>,
    healthy_since: Option<Instant>,
    last_probe: Option<Instant>,
}

/// The hub group's state.
#[derive(Debug, Clone)]
pub struct Failover {
    members: Vec<Member>,
    active: usize,
    preferred: Option<usize>,
    style: Style,
    timers: FailoverTimers,
    failovers: u64,
    active_since: Instant,
}

/// One member as the status page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    /// Peer name.
    pub name: String,
    /// The one routing now.
    pub active: bool,
    /// Heard within `failover_after` (always_on; on_demand: not known while idle).
    pub healthy: bool,
    /// The operator's preference.
    pub preferred: bool,
    /// When it was last heard from.
    pub last_heard: Option<Instant>,
}

impl Failover {
    /// A group of `names` (most preferred first); the operator's `preferred` one starts active,
    /// else the first. At least one name is needed (the config has two or more).
    pub fn new(
        names: Vec<String>,
        style: Style,
        timers: FailoverTimers,
        preferred: Option<&str>,
        now: Instant,
    ) -> Self {
        let members: Vec<Member> = names
            .into_iter()
            .map(|name| Member {
                name,
                last_heard: None,
                healthy_since: None,
                last_probe: None,
            })
            .collect();
        let preferred = preferred.and_then(|p| members.iter().position(|m| m.name == p));
        Failover {
            active: preferred.unwrap_or(0),
            members,
            preferred,
            style,
            timers,
            failovers: 0,
            active_since: now,
        }
    }

    /// The member routing now.
    pub fn active(&self) -> usize {
        self.active
    }

    /// Its name.
    pub fn active_name(&self) -> &str {
        self.name(self.active)
    }

    /// The name of member `index`.
    pub fn name(&self, index: usize) -> &str {
        self.members.get(index).map_or("", |m| m.name.as_str())
    }

    /// Member index of `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.members.iter().position(|m| m.name == name)
    }

    /// Failovers since start (planned returns not counted).
    pub fn failovers(&self) -> u64 {
        self.failovers
    }

    /// The operator's preferred hub, if any.
    pub fn preferred(&self) -> Option<&str> {
        self.preferred.map(|i| self.name(i))
    }

    /// Member `index` proved itself at `at` (an instant from the peer; older news is ignored).
    pub fn heard(&mut self, index: usize, at: Instant) {
        let failover_after = self.timers.failover_after;
        let Some(member) = self.members.get_mut(index) else {
            return;
        };
        if member.last_heard.is_some_and(|last| at <= last) {
            return;
        }
        let after_silence = member
            .last_heard
            .is_none_or(|last| at.saturating_duration_since(last) > failover_after);
        if after_silence || member.healthy_since.is_none() {
            member.healthy_since = Some(at);
        }
        member.last_heard = Some(at);
    }

    fn healthy(&self, index: usize, now: Instant) -> bool {
        self.members.get(index).is_some_and(|m| {
            m.healthy_since.is_some()
                && m.last_heard
                    .is_some_and(|h| now.saturating_duration_since(h) <= self.timers.failover_after)
        })
    }

    /// Time passed; `idle` says the active hub's session is idle (on_demand).
    pub fn tick(&mut self, now: Instant, idle: bool) -> Vec<Step> {
        for i in 0..self.members.len() {
            if !self.healthy(i, now) {
                self.members[i].healthy_since = None;
            }
        }
        let mut steps = Vec::new();
        match self.style {
            Style::AlwaysOn => {
                if let Some(switch) = self.always_on_switch(now) {
                    steps.push(Step::Switch(self.apply(switch, now)));
                }
                for i in 0..self.members.len() {
                    let member = &mut self.members[i];
                    let due = |t: Option<Instant>| {
                        t.is_none_or(|t| {
                            now.saturating_duration_since(t) >= self.timers.probe_interval
                        })
                    };
                    if due(member.last_heard) && due(member.last_probe) {
                        member.last_probe = Some(now);
                        steps.push(Step::Probe(i));
                    }
                }
            }
            Style::OnDemand => {
                let home = self.preferred.unwrap_or(0);
                if idle
                    && self.active != home
                    && now.saturating_duration_since(self.active_since)
                        >= self.timers.fail_back_after
                {
                    let switch = Switch {
                        from: self.active,
                        to: home,
                        why: Why::FailBack,
                    };
                    steps.push(Step::Switch(self.apply(switch, now)));
                }
            }
        }
        steps
    }

    fn always_on_switch(&self, now: Instant) -> Option<Switch> {
        let active = self.active;
        let heard = self.members[active]
            .last_heard
            .map_or(self.active_since, |h| h.max(self.active_since));
        if now.saturating_duration_since(heard) > self.timers.failover_after {
            // The most preferred healthy hub, else simply the next one in the list.
            let n = self.members.len();
            let to = (0..n)
                .find(|&i| i != active && self.healthy(i, now))
                .unwrap_or((active + 1) % n);
            return (to != active).then_some(Switch {
                from: active,
                to,
                why: Why::NoAnswer,
            });
        }
        if let Some(preferred) = self.preferred {
            return (preferred != active && self.healthy(preferred, now)).then_some(Switch {
                from: active,
                to: preferred,
                why: Why::OperatorPreferred,
            });
        }
        // Returning needs a whole hold time of health and a fresh answer: a hub that has
        // already missed its probes may be dying again.
        let fresh = |i: usize| {
            self.members[i]
                .last_heard
                .is_some_and(|h| now.saturating_duration_since(h) <= self.timers.probe_interval * 2)
        };
        (0..active)
            .find(|&i| {
                self.members[i].healthy_since.is_some_and(|since| {
                    self.healthy(i, now)
                        && fresh(i)
                        && now.saturating_duration_since(since) >= self.timers.fail_back_after
                })
            })
            .map(|to| Switch {
                from: active,
                to,
                why: Why::FailBack,
            })
    }

    fn apply(&mut self, switch: Switch, now: Instant) -> Switch {
        self.active = switch.to;
        self.active_since = now;
        if switch.why.is_failure() {
            self.failovers += 1;
        }
        switch
    }

    /// on_demand: a connect attempt on the active hub got no handshake in time: the next hub
    /// takes over (the next connect goes there).
    pub fn connect_failed(&mut self, now: Instant) -> Option<Switch> {
        let n = self.members.len();
        let to = (self.active + 1) % n;
        (to != self.active).then(|| {
            self.apply(
                Switch {
                    from: self.active,
                    to,
                    why: Why::ConnectFailed,
                },
                now,
            )
        })
    }

    /// The operator prefers `name` until cleared (`None`): the box moves there at once when it
    /// is healthy (on_demand: at once; its next connect proves it), and stays while it is.
    pub fn prefer(
        &mut self,
        name: Option<&str>,
        now: Instant,
    ) -> Result<Option<Switch>, UnknownHub> {
        let Some(name) = name else {
            self.preferred = None;
            return Ok(None);
        };
        let index = self
            .index_of(name)
            .ok_or_else(|| UnknownHub(name.to_string()))?;
        self.preferred = Some(index);
        let ready = match self.style {
            Style::AlwaysOn => self.healthy(index, now),
            Style::OnDemand => true,
        };
        Ok((index != self.active && ready).then(|| {
            self.apply(
                Switch {
                    from: self.active,
                    to: index,
                    why: Why::OperatorPreferred,
                },
                now,
            )
        }))
    }

    /// Every member, in the order of the group.
    pub fn members(&self, now: Instant) -> Vec<MemberView> {
        (0..self.members.len())
            .map(|i| MemberView {
                name: self.members[i].name.clone(),
                active: i == self.active,
                healthy: self.healthy(i, now),
                preferred: self.preferred == Some(i),
                last_heard: self.members[i].last_heard,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMERS: FailoverTimers = FailoverTimers {
        failover_after: Duration::from_secs(30),
        fail_back_after: Duration::from_secs(120),
        probe_interval: Duration::from_secs(10),
    };

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn group(style: Style, t0: Instant) -> Failover {
        Failover::new(
            vec!["dc-tokyo".into(), "dc-osaka".into()],
            style,
            TIMERS,
            None,
            t0,
        )
    }

    fn switches(steps: &[Step]) -> Vec<Switch> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::Switch(sw) => Some(*sw),
                Step::Probe(_) => None,
            })
            .collect()
    }

    /// Both hubs answer every `every` seconds from `from` to `to` (inclusive), the group ticking
    /// each second; returns every switch.
    fn run(
        f: &mut Failover,
        t0: Instant,
        range: std::ops::RangeInclusive<u64>,
        answering: &dyn Fn(usize, u64) -> bool,
    ) -> Vec<(u64, Switch)> {
        let mut seen = Vec::new();
        for s in range {
            let now = t0 + secs(s);
            for i in 0..2 {
                if answering(i, s) && s % 5 == 0 {
                    f.heard(i, now);
                }
            }
            for sw in switches(&f.tick(now, false)) {
                seen.push((s, sw));
            }
        }
        seen
    }

    #[test]
    fn avl4_always_on_fails_over_after_silence_and_fails_back_after_the_hold_time() {
        let t0 = Instant::now();
        let mut f = group(Style::AlwaysOn, t0);
        assert_eq!(f.active_name(), "dc-tokyo", "the first hub starts active");
        // Both answer; nothing moves.
        assert!(run(&mut f, t0, 0..=100, &|_, _| true).is_empty());
        // Tokyo goes silent at 101: the box moves after failover_after (30 s), not before.
        let moves = run(&mut f, t0, 101..=200, &|i, _| i == 1);
        assert_eq!(
            moves,
            vec![(
                131,
                Switch {
                    from: 0,
                    to: 1,
                    why: Why::NoAnswer
                }
            )]
        );
        assert_eq!((f.active_name(), f.failovers()), ("dc-osaka", 1));
        // Tokyo answers again from 201: the box returns only after 120 s of health.
        let moves = run(&mut f, t0, 201..=400, &|_, _| true);
        assert_eq!(
            moves,
            vec![(
                325,
                Switch {
                    from: 1,
                    to: 0,
                    why: Why::FailBack
                }
            )]
        );
        assert_eq!(f.failovers(), 1, "a planned return is not a failover");
    }

    #[test]
    fn avl4_a_flapping_primary_never_takes_the_box_back() {
        let t0 = Instant::now();
        let mut f = group(Style::AlwaysOn, t0);
        run(&mut f, t0, 0..=10, &|_, _| true);
        let moves = run(&mut f, t0, 11..=60, &|i, _| i == 1);
        assert_eq!(moves.len(), 1, "one failover");
        // Tokyo answers for 100 s, is silent for 40 s, again and again: never 120 s of health.
        let moves = run(&mut f, t0, 61..=1000, &|i, s| i == 1 || (s % 140) < 100);
        assert!(
            moves.is_empty(),
            "no fail back to a flapping hub: {moves:?}"
        );
        assert_eq!(f.active_name(), "dc-osaka");
    }

    #[test]
    fn avl4_silent_hubs_are_probed_and_answering_ones_are_not() {
        let t0 = Instant::now();
        let mut f = group(Style::AlwaysOn, t0);
        let probes = |steps: Vec<Step>| -> Vec<usize> {
            steps
                .into_iter()
                .filter_map(|s| match s {
                    Step::Probe(i) => Some(i),
                    Step::Switch(_) => None,
                })
                .collect()
        };
        assert_eq!(probes(f.tick(t0, false)), vec![0, 1], "never heard: probe");
        assert_eq!(
            probes(f.tick(t0 + secs(5), false)),
            Vec::<usize>::new(),
            "not again within the interval"
        );
        f.heard(0, t0 + secs(8));
        assert_eq!(
            probes(f.tick(t0 + secs(10), false)),
            vec![1],
            "the one heard from lately is left alone"
        );
    }

    #[test]
    fn avl4_both_hubs_dead_tries_each_in_turn() {
        let t0 = Instant::now();
        let mut f = group(Style::AlwaysOn, t0);
        let moves = run(&mut f, t0, 0..=100, &|_, _| false);
        let targets: Vec<usize> = moves.iter().map(|(_, s)| s.to).collect();
        assert_eq!(targets, vec![1, 0, 1], "one move per failover_after");
        assert!(moves.iter().all(|(_, s)| s.why == Why::NoAnswer));
    }

    #[test]
    fn avl4_operator_preference_moves_at_once_when_healthy_and_holds_until_cleared() {
        let t0 = Instant::now();
        let mut f = group(Style::AlwaysOn, t0);
        run(&mut f, t0, 0..=50, &|_, _| true);
        assert_eq!(
            f.prefer(Some("dc-kyoto"), t0 + secs(50)),
            Err(UnknownHub("dc-kyoto".into()))
        );
        let moved = f.prefer(Some("dc-osaka"), t0 + secs(50));
        assert_eq!(
            moved,
            Ok(Some(Switch {
                from: 0,
                to: 1,
                why: Why::OperatorPreferred
            }))
        );
        // Tokyo healthy for long: no fail back while the preference holds.
        assert!(run(&mut f, t0, 51..=500, &|_, _| true).is_empty());
        // Cleared: the primary, healthy all along, takes the box back at the next tick.
        assert_eq!(f.prefer(None, t0 + secs(500)), Ok(None));
        let moves = run(&mut f, t0, 501..=502, &|_, _| true);
        assert_eq!(
            moves.first().map(|(_, s)| (s.to, s.why)),
            Some((0, Why::FailBack))
        );
        assert_eq!(f.failovers(), 0);
    }

    #[test]
    fn avl4_a_preferred_hub_that_dies_is_still_failed_over_from() {
        let t0 = Instant::now();
        let mut f = group(Style::AlwaysOn, t0);
        run(&mut f, t0, 0..=20, &|_, _| true);
        assert!(f.prefer(Some("dc-osaka"), t0 + secs(20)).is_ok());
        let moves = run(&mut f, t0, 21..=100, &|i, _| i == 0);
        assert_eq!(
            moves.first().map(|(_, s)| (s.to, s.why)),
            Some((0, Why::NoAnswer))
        );
        assert_eq!(moves.len(), 1, "and it stays on the answering hub");
    }

    #[test]
    fn avl4_on_demand_moves_on_a_failed_connect_and_returns_only_when_idle_after_the_hold() {
        let t0 = Instant::now();
        let mut f = group(Style::OnDemand, t0);
        assert!(
            f.tick(t0 + secs(1000), true).is_empty(),
            "nothing, no probes"
        );
        let moved = f.connect_failed(t0 + secs(1000));
        assert_eq!(moved.map(|s| (s.to, s.why)), Some((1, Why::ConnectFailed)));
        assert_eq!(f.failovers(), 1);
        assert!(
            f.tick(t0 + secs(1100), true).is_empty(),
            "idle but within the hold time: stays"
        );
        assert!(
            f.tick(t0 + secs(1200), false).is_empty(),
            "busy on the backup: stays"
        );
        let back = switches(&f.tick(t0 + secs(1220), true));
        assert_eq!(
            back.first().map(|s| (s.to, s.why)),
            Some((0, Why::FailBack))
        );
    }
}
