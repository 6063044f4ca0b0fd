//! What renkei knows about its connection in charon, from the last `list-sas`: the link's
//! state, when it last came up, when ESP last moved bytes (the on-demand idle timer), and
//! which SAs were already checked against the CRYPTREC profile. Pure: the backend feeds it
//! observations with the time they were made, so it is tested without charon or a clock.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::config::PolicyMode;
use crate::state::link::LinkState;

use super::sa::{ChildSa, IkeSa, IkeState};

/// charon's state name of a CHILD SA that carries traffic.
const CHILD_INSTALLED: &str = "INSTALLED";

/// The connection as last observed.
#[derive(Debug, Clone)]
pub struct SaRecord {
    /// Since when renkei has been trying (the always-on alarm counts from here until a first SA).
    since: Instant,
    /// Whether the connection is loaded into the running charon.
    pub loaded: bool,
    /// Times it was loaded.
    pub loads: u64,
    /// The last error talking to charon.
    pub last_error: Option<String>,
    /// The connection's IKE SA, the established one when there are several.
    pub ike: Option<IkeSa>,
    /// When the SA was last up (monotonic, for the alarm) and when it came up or was last
    /// rekeyed (wall clock, for the page).
    pub last_up: Option<(Instant, SystemTime)>,
    /// When ESP last moved a byte either way (or the record was made).
    last_traffic: Instant,
    /// The CHILD SA's byte count at the last observation.
    bytes_seen: u64,
    /// SAs already checked against the profile, by charon's unique ids.
    checked: BTreeSet<(Option<u64>, Option<u64>)>,
    /// Why the last SA outside the profile was terminated.
    pub violation: Option<String>,
}

impl SaRecord {
    /// A record of nothing yet, made at `now`.
    pub fn new(now: Instant) -> Self {
        SaRecord {
            since: now,
            loaded: false,
            loads: 0,
            last_error: None,
            ike: None,
            last_up: None,
            last_traffic: now,
            bytes_seen: 0,
            checked: BTreeSet::new(),
            violation: None,
        }
    }

    /// Charon went away: it keeps nothing, so neither does the record.
    pub fn lost(&mut self, why: String) {
        self.loaded = false;
        self.ike = None;
        self.last_error = Some(why);
    }

    /// The connection was loaded into charon.
    pub fn loaded(&mut self) {
        self.loaded = true;
        self.loads += 1;
        self.last_error = None;
    }

    /// Notes the SAs charon listed (all of them; only `name`'s count) at `now`/`wall`.
    /// Returns what is outside the profile on an SA not checked before: the caller terminates it.
    pub fn observe(
        &mut self,
        sas: Vec<IkeSa>,
        name: &str,
        now: Instant,
        wall: SystemTime,
    ) -> Option<String> {
        let mut ours: Vec<IkeSa> = sas.into_iter().filter(|sa| sa.name == name).collect();
        ours.sort_by_key(|sa| sa.state != IkeState::Established);
        self.ike = ours.into_iter().next();
        let Some(ike) = &self.ike else {
            return None;
        };
        let child = installed_child(ike);
        let bytes = child.map_or(0, |c| c.bytes_in + c.bytes_out);
        if bytes != self.bytes_seen {
            self.bytes_seen = bytes;
            self.last_traffic = now;
        }
        if ike.state != IkeState::Established {
            return None;
        }
        if let Some(child) = child {
            // Up since the later of the IKE SA's establishment and the CHILD SA's (re)keying.
            let ago = match (ike.established_ago, child.installed_ago) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => a.or(b).unwrap_or_default(),
            };
            self.last_up = Some((now, wall.checked_sub(ago).unwrap_or(wall)));
        }
        let mut outside = Vec::new();
        if self.checked.insert((ike.unique_id, None)) {
            outside.extend(ike.algorithms.outside_profile());
        }
        for child in ike.children.iter().filter(|c| c.state == CHILD_INSTALLED) {
            if self
                .checked
                .insert((ike.unique_id, child.unique_id.or(Some(0))))
            {
                outside.extend(child.algorithms.outside_profile());
            }
        }
        if outside.is_empty() {
            return None;
        }
        let why = outside.join(", ");
        self.violation = Some(why.clone());
        Some(why)
    }

    /// The link's state under `mode`.
    pub fn state(&self, mode: PolicyMode) -> LinkState {
        match (&self.ike, mode) {
            (Some(ike), _) if self.is_up(ike) => LinkState::Up,
            (Some(_), _) => LinkState::Connecting,
            (None, PolicyMode::OnDemand) => LinkState::Idle,
            (None, PolicyMode::AlwaysOn) if self.loaded => LinkState::Connecting,
            (None, PolicyMode::AlwaysOn) => LinkState::Down,
        }
    }

    fn is_up(&self, ike: &IkeSa) -> bool {
        matches!(ike.state, IkeState::Established | IkeState::Rekeying)
            && installed_child(ike).is_some()
    }

    /// on_demand: no ESP byte either way for `idle_timeout`.
    pub fn is_idle(&self, now: Instant, idle_timeout: Duration) -> bool {
        self.ike.is_some() && now.saturating_duration_since(self.last_traffic) >= idle_timeout
    }

    /// A connection released by its last user counts as used now: the idle time starts there.
    pub fn used(&mut self, now: Instant) {
        self.last_traffic = now;
    }

    /// always_on and not up for `alarm_after` (counting from the start until a first SA).
    pub fn alarm(&self, now: Instant, alarm_after: Duration, mode: PolicyMode) -> bool {
        if mode != PolicyMode::AlwaysOn || self.state(mode) == LinkState::Up {
            return false;
        }
        let reference = self.last_up.map_or(self.since, |(at, _)| at);
        now.saturating_duration_since(reference) >= alarm_after
    }
}

/// The CHILD SA carrying traffic.
pub fn installed_child(ike: &IkeSa) -> Option<&ChildSa> {
    ike.children.iter().find(|c| c.state == CHILD_INSTALLED)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::proposal::{EspAlgorithms, IkeAlgorithms};

    const NAME: &str = "renkei-dc";

    fn child(bytes_in: u64, encryption: &str) -> ChildSa {
        ChildSa {
            name: NAME.to_string(),
            unique_id: Some(1),
            state: CHILD_INSTALLED.to_string(),
            algorithms: EspAlgorithms {
                encryption: Some(encryption.to_string()),
                key_size_bits: Some(128),
                integrity: None,
                dh_group: Some("ECP_256".to_string()),
            },
            bytes_in,
            packets_in: 1,
            last_in: None,
            bytes_out: 0,
            packets_out: 0,
            last_out: None,
            rekey_in: None,
            expires_in: None,
            installed_ago: Some(Duration::from_secs(2)),
            local_ts: vec!["198.19.0.10/32".to_string()],
            remote_ts: vec!["198.19.0.1/32".to_string()],
        }
    }

    fn ike(state: IkeState, children: Vec<ChildSa>) -> IkeSa {
        IkeSa {
            name: NAME.to_string(),
            unique_id: Some(7),
            state,
            local_host: None,
            remote_host: None,
            local_id: None,
            remote_id: Some("hub.renkei.example".to_string()),
            algorithms: IkeAlgorithms {
                encryption: Some("AES_GCM_16".to_string()),
                key_size_bits: Some(256),
                integrity: None,
                prf: Some("PRF_HMAC_SHA2_384".to_string()),
                dh_group: Some("ECP_384".to_string()),
            },
            established_ago: Some(Duration::from_secs(5)),
            rekey_in: None,
            reauth_in: None,
            children,
        }
    }

    #[test]
    fn net9_state_follows_the_ike_and_child_sa() {
        let t0 = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let mut record = SaRecord::new(t0);
        assert_eq!(record.state(PolicyMode::AlwaysOn), LinkState::Down);
        assert_eq!(record.state(PolicyMode::OnDemand), LinkState::Idle);
        record.loaded();
        assert_eq!(record.state(PolicyMode::AlwaysOn), LinkState::Connecting);
        record.observe(vec![ike(IkeState::Connecting, vec![])], NAME, t0, wall);
        assert_eq!(record.state(PolicyMode::OnDemand), LinkState::Connecting);
        // Another connection's SA is not ours.
        let mut other = ike(IkeState::Established, vec![child(0, "AES_GCM_16")]);
        other.name = "other".to_string();
        record.observe(vec![other], NAME, t0, wall);
        assert!(record.ike.is_none());
        let up = ike(IkeState::Established, vec![child(0, "AES_GCM_16")]);
        assert_eq!(record.observe(vec![up], NAME, t0, wall), None);
        assert_eq!(record.state(PolicyMode::AlwaysOn), LinkState::Up);
        // Up since the CHILD SA was installed, 2 s before the observation.
        assert_eq!(
            record.last_up.map(|(_, w)| w),
            Some(wall - Duration::from_secs(2))
        );
        record.lost("charon went away".to_string());
        assert_eq!(record.state(PolicyMode::AlwaysOn), LinkState::Down);
    }

    #[test]
    fn net10_an_sa_outside_the_profile_is_reported_once() {
        let t0 = Instant::now();
        let mut record = SaRecord::new(t0);
        let weak = ike(IkeState::Established, vec![child(0, "CHACHA20_POLY1305")]);
        let why = record
            .observe(vec![weak.clone()], NAME, t0, SystemTime::now())
            .expect("a violation");
        assert!(why.contains("ESP encryption CHACHA20_POLY1305"), "{why}");
        assert_eq!(record.violation.as_deref(), Some(why.as_str()));
        assert_eq!(
            record.observe(vec![weak], NAME, t0, SystemTime::now()),
            None,
            "the same SA is judged once"
        );
        let mut weak_ike = ike(IkeState::Established, vec![]);
        weak_ike.unique_id = Some(8);
        weak_ike.algorithms.dh_group = Some("CURVE_25519".to_string());
        let why = record
            .observe(vec![weak_ike], NAME, t0, SystemTime::now())
            .expect("a violation");
        assert!(why.contains("DH group CURVE_25519"), "{why}");
    }

    #[test]
    fn net7_idle_counts_from_the_last_byte_either_way() {
        let t0 = Instant::now();
        let idle = Duration::from_secs(30);
        let mut record = SaRecord::new(t0);
        assert!(!record.is_idle(t0 + idle, idle), "no SA is not idle");
        let wall = SystemTime::now();
        record.observe(
            vec![ike(IkeState::Established, vec![child(100, "AES_GCM_16")])],
            NAME,
            t0,
            wall,
        );
        assert!(!record.is_idle(t0 + Duration::from_secs(29), idle));
        // Bytes moved at t0 + 20: idle only 30 s after that.
        record.observe(
            vec![ike(IkeState::Established, vec![child(200, "AES_GCM_16")])],
            NAME,
            t0 + Duration::from_secs(20),
            wall,
        );
        assert!(!record.is_idle(t0 + Duration::from_secs(40), idle));
        assert!(record.is_idle(t0 + Duration::from_secs(50), idle));
        record.used(t0 + Duration::from_secs(50));
        assert!(!record.is_idle(t0 + Duration::from_secs(60), idle));
    }

    #[test]
    fn net6_the_alarm_counts_from_the_start_then_from_the_last_sa() {
        let t0 = Instant::now();
        let after = Duration::from_secs(60);
        let mut record = SaRecord::new(t0);
        record.loaded();
        assert!(!record.alarm(t0 + Duration::from_secs(59), after, PolicyMode::AlwaysOn));
        assert!(record.alarm(t0 + after, after, PolicyMode::AlwaysOn));
        assert!(!record.alarm(t0 + after, after, PolicyMode::OnDemand));
        let up = ike(IkeState::Established, vec![child(0, "AES_GCM_16")]);
        record.observe(vec![up], NAME, t0 + after, SystemTime::now());
        assert!(!record.alarm(t0 + after * 3, after, PolicyMode::AlwaysOn));
        record.observe(vec![], NAME, t0 + after * 2, SystemTime::now());
        assert!(!record.alarm(
            t0 + after + Duration::from_secs(59),
            after,
            PolicyMode::AlwaysOn
        ));
        assert!(record.alarm(t0 + after * 2, after, PolicyMode::AlwaysOn));
    }
}
