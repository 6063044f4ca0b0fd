//! A primary and a backup concentrator (`[ipsec.failover]`, AVL-4): the hub group's state
//! machine ([`crate::tunnel::failover`], the WireGuard group's) fed with what charon lists, so
//! both carriers move, hold and return by the same rules and show the same `hubs` block.
//!
//! The active concentrator gets the one data connection ([`super::settings::CONNECTION_NAME`],
//! its CHILD SA carrying the prefixes); the standby one gets a probe connection
//! ([`PROBE_CONNECTION_NAME`]): an IKE SA alone (RFC 6023 childless), so it is authenticated
//! and watched by dead peer detection without a second set of ESP policies for the same
//! prefixes. "Heard" is: the data connection's CHILD SA is installed (active), the probe's IKE
//! SA is established (standby). Pure: the backend carries the steps out over VICI.

use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

use crate::config::{IpsecConfig, IpsecFailoverConfig, IPSEC_BACKUP_HUB, IPSEC_PRIMARY_HUB};
use crate::state::events::HubMove;
use crate::state::link::LinkState;
use crate::tunnel::failover::{Failover, FailoverTimers, Step, Style, Switch, UnknownHub, Why};
use crate::tunnel::{HubSnapshot, HubsSnapshot};

use super::connection::ConnectionSettings;

/// The standby concentrator's probe connection (an IKE SA alone) in charon.
pub const PROBE_CONNECTION_NAME: &str = "renkei-dc-standby";

/// One concentrator of the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Concentrator {
    /// `primary` or `backup`: its name in the status, events and the operator's preference.
    pub name: &'static str,
    /// Its WAN address.
    pub address: IpAddr,
    /// The identity it must authenticate as.
    pub id: String,
}

impl Concentrator {
    /// `connection` aimed at this concentrator.
    pub fn aim(&self, connection: &mut ConnectionSettings) {
        connection.remote_address = self.address;
        connection.remote_id.clone_from(&self.id);
    }
}

/// The two concentrators and which one carries the SA.
#[derive(Debug, Clone)]
pub struct ConcentratorGroup {
    machine: Failover,
    members: [Concentrator; 2],
    config: IpsecFailoverConfig,
    /// Wall-clock time each member was last seen come up (the page's "last handshake").
    came_up: [Option<SystemTime>; 2],
    /// Whether each member was up at the last listing.
    up: [bool; 2],
}

impl ConcentratorGroup {
    /// The group of `ipsec`'s `[ipsec.failover]` (`None` without one). `active` (the member
    /// active under the previous config) starts active, else the operator's `preferred` one,
    /// else the primary: a new config does not send a box that failed over back to a
    /// concentrator that may still be dead.
    pub fn of(
        ipsec: &IpsecConfig,
        preferred: Option<&str>,
        active: Option<&str>,
        now: Instant,
    ) -> Option<Self> {
        let config = ipsec.failover.clone()?;
        let members = [
            Concentrator {
                name: IPSEC_PRIMARY_HUB,
                address: ipsec.remote_address,
                id: ipsec.remote_id.clone(),
            },
            Concentrator {
                name: IPSEC_BACKUP_HUB,
                address: config.backup_remote_address,
                id: config.backup_id(ipsec).to_string(),
            },
        ];
        let start = active.or(preferred);
        let mut machine = Failover::new(
            members.iter().map(|m| m.name.to_string()).collect(),
            Style::AlwaysOn,
            FailoverTimers {
                failover_after: Duration::from_secs(config.failover_after_secs),
                fail_back_after: Duration::from_secs(config.fail_back_after_secs),
                probe_interval: Duration::from_secs(config.probe_interval_secs),
            },
            start,
            now,
        );
        if start != preferred {
            // Nobody is healthy yet, so this only sets (or clears) the preference. An unknown
            // name cannot come from the operator (refused when asked): ignored.
            let _ = machine.prefer(preferred, now);
        }
        Some(ConcentratorGroup {
            machine,
            members,
            config,
            came_up: [None; 2],
            up: [false; 2],
        })
    }

    /// The index of the member carrying the SA.
    pub fn active_index(&self) -> usize {
        self.machine.active()
    }

    /// The member carrying the SA.
    pub fn active(&self) -> &Concentrator {
        &self.members[self.machine.active() % 2]
    }

    /// The member that gets the probe.
    pub fn standby(&self) -> &Concentrator {
        &self.members[(self.machine.active() + 1) % 2]
    }

    /// A member by index.
    pub fn member(&self, index: usize) -> &Concentrator {
        &self.members[index % 2]
    }

    /// Failovers since the carrier started (planned returns not counted).
    pub fn failovers(&self) -> u64 {
        self.machine.failovers()
    }

    /// One listing of charon's SAs: whether the active member's CHILD SA is installed and the
    /// standby's probe IKE SA established. Answers what to do.
    pub fn observe(
        &mut self,
        active_up: bool,
        standby_up: bool,
        now: Instant,
        wall: SystemTime,
    ) -> Vec<Step> {
        let active = self.machine.active() % 2;
        for (index, up) in [(active, active_up), ((active + 1) % 2, standby_up)] {
            if up {
                self.machine.heard(index, now);
                if !self.up[index] {
                    self.came_up[index] = Some(wall);
                }
            }
            self.up[index] = up;
        }
        self.machine.tick(now, false)
    }

    /// The operator prefers `name` (or clears it with `None`): a switch when it is healthy.
    pub fn prefer(
        &mut self,
        name: Option<&str>,
        now: Instant,
    ) -> Result<Option<Switch>, UnknownHub> {
        let switch = self.machine.prefer(name, now)?;
        if switch.is_some() {
            // Neither side is up on its new connection until charon says so.
            self.up = [false; 2];
        }
        Ok(switch)
    }

    /// A switch was carried out: neither connection is up until the next listing says so.
    pub fn switched(&mut self) {
        self.up = [false; 2];
    }

    /// The group for the status document; `active_state` is the data connection's.
    pub fn snapshot(&self, active_state: LinkState, now: Instant) -> HubsSnapshot {
        let members = self
            .machine
            .members(now)
            .into_iter()
            .enumerate()
            .map(|(index, view)| HubSnapshot {
                state: match (view.active, self.up[index % 2]) {
                    (true, _) => active_state,
                    (false, true) => LinkState::Up,
                    (false, false) => LinkState::Idle,
                },
                last_handshake: self.came_up[index % 2],
                last_heard_age_secs: view
                    .last_heard
                    .map(|t| now.saturating_duration_since(t).as_secs()),
                name: view.name,
                active: view.active,
                healthy: view.healthy,
                preferred: view.preferred,
            })
            .collect();
        HubsSnapshot {
            active: self.machine.active_name().to_string(),
            preferred: self.machine.preferred().map(str::to_string),
            failovers: self.machine.failovers(),
            failover_after_secs: self.config.failover_after_secs,
            fail_back_after_secs: self.config.fail_back_after_secs,
            members,
        }
    }
}

/// The event's word for why the SA moved.
pub fn hub_move(why: Why) -> HubMove {
    match why {
        Why::NoAnswer => HubMove::NoAnswer,
        Why::ConnectFailed => HubMove::ConnectFailed,
        Why::FailBack => HubMove::FailBack,
        Why::OperatorPreferred => HubMove::OperatorPreferred,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipsec() -> IpsecConfig {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/ipsec.toml");
        let text = std::fs::read_to_string(path).expect("example config");
        let text = format!(
            "{text}\n[ipsec.failover]\nbackup_remote_address = \"198.18.0.2\"\nfailover_after_secs = 10\nfail_back_after_secs = 30\nprobe_interval_secs = 3\n"
        );
        let config: crate::config::Config = toml::from_str(&text).expect("parses");
        config.ipsec.expect("[ipsec]")
    }

    #[test]
    fn avl4_ipsec_the_sa_moves_to_the_backup_concentrator_and_back_after_the_hold() {
        let t0 = Instant::now();
        let wall = SystemTime::now();
        let mut group = ConcentratorGroup::of(&ipsec(), None, None, t0).expect("a group");
        assert_eq!(group.active().name, "primary");
        assert_eq!(
            group.standby().address,
            "198.18.0.2".parse::<IpAddr>().expect("ip")
        );
        let at = |s: u64| t0 + Duration::from_secs(s);
        let switches = |steps: Vec<Step>| -> Vec<Switch> {
            steps
                .into_iter()
                .filter_map(|s| match s {
                    Step::Switch(sw) => Some(sw),
                    Step::Probe(_) => None,
                })
                .collect()
        };
        for s in 0..=20 {
            assert!(switches(group.observe(true, true, at(s), wall)).is_empty());
        }
        // The primary's SA is gone from 21 s: the box moves once 10 s have passed.
        let mut moved = None;
        for s in 21..=40 {
            if let Some(sw) = switches(group.observe(false, true, at(s), wall)).first() {
                moved = Some((s, *sw));
                break;
            }
        }
        let (when, switch) = moved.expect("failed over");
        assert_eq!((switch.to, switch.why), (1, Why::NoAnswer));
        assert!(
            (30..=31).contains(&when),
            "after failover_after_secs: {when}"
        );
        group.switched();
        assert_eq!(group.active().name, "backup");
        assert_eq!(
            group.standby().name,
            "primary",
            "the primary gets the probe now"
        );
        let snapshot = group.snapshot(LinkState::Connecting, at(when));
        assert_eq!(
            (snapshot.active.as_str(), snapshot.failovers),
            ("backup", 1)
        );
        // The primary's probe answers again from 50 s: back after the 30 s hold, not before.
        let mut back = None;
        for s in 41..=120 {
            let standby_up = s >= 50;
            if let Some(sw) = switches(group.observe(true, standby_up, at(s), wall)).first() {
                back = Some((s, *sw));
                break;
            }
        }
        let (when, switch) = back.expect("failed back");
        assert_eq!((switch.to, switch.why), (0, Why::FailBack));
        assert!((80..=81).contains(&when), "after the hold time: {when}");
    }

    #[test]
    fn avl4_ipsec_the_operator_prefers_a_healthy_concentrator_by_name() {
        let t0 = Instant::now();
        let wall = SystemTime::now();
        let mut group = ConcentratorGroup::of(&ipsec(), None, None, t0).expect("a group");
        group.observe(true, true, t0, wall);
        assert_eq!(
            group.prefer(Some("dc-kyoto"), t0),
            Err(UnknownHub("dc-kyoto".into()))
        );
        let switch = group.prefer(Some("backup"), t0).expect("a member");
        assert_eq!(
            switch.map(|s| (s.to, s.why)),
            Some((1, Why::OperatorPreferred))
        );
        assert_eq!(group.active().name, "backup");
        let restarted = ConcentratorGroup::of(&ipsec(), Some("backup"), None, t0).expect("a group");
        assert_eq!(
            restarted.active().name,
            "backup",
            "a kept preference starts on the preferred concentrator"
        );
    }

    #[test]
    fn avl4_ipsec_a_new_config_keeps_the_box_on_the_concentrator_it_failed_over_to() {
        let t0 = Instant::now();
        let kept = ConcentratorGroup::of(&ipsec(), None, Some("backup"), t0).expect("a group");
        let snapshot = kept.snapshot(LinkState::Connecting, t0);
        assert_eq!(
            (kept.active().name, snapshot.preferred),
            ("backup", None),
            "on the backup, with no preference made up"
        );
        let preferred =
            ConcentratorGroup::of(&ipsec(), Some("primary"), Some("backup"), t0).expect("a group");
        let snapshot = preferred.snapshot(LinkState::Connecting, t0);
        assert_eq!(
            (preferred.active().name, snapshot.preferred.as_deref()),
            ("backup", Some("primary")),
            "the preference is kept and moves the box once the primary is healthy"
        );
    }
}
