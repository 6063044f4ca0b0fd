//! What renkei knows about its connection in charon, from the last `list-sas`: the link's
//! state, when it last came up, when renkei last used it (the on-demand idle timer), and
//! which SAs were already checked against the CRYPTREC profile, and the ESP traffic summed
//! over every CHILD SA (charon's own counters start from zero at each rekey). Pure: the backend feeds it
//! observations with the time they were made, so it is tested without charon or a clock.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::carrier::snapshot::IpsecTraffic;
use crate::config::proposal::Outside;
use crate::config::PolicyMode;
use crate::state::events::IpsecProblem;
use crate::state::link::LinkState;

use super::sa::{ChildSa, IkeSa, IkeState};

/// charon's state name of a CHILD SA that carries traffic.
const CHILD_INSTALLED: &str = "INSTALLED";

/// An SA outside the CRYPTREC profile: what it negotiated, in English for the journal and by
/// charon's names for the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// "ESP encryption CHACHA20_POLY1305, DH group MODP_1024".
    pub english: String,
    /// "CHACHA20_POLY1305, MODP_1024".
    pub names: String,
}

/// The connection as last observed.
#[derive(Debug, Clone)]
pub struct SaRecord {
    /// Since when renkei has been trying (the always-on alarm counts from here until a first SA).
    since: Instant,
    /// Whether the connection is loaded into the running charon.
    pub loaded: bool,
    /// Times it was loaded.
    pub loads: u64,
    /// The last error talking to charon, in English (charon's words where it said them).
    pub last_error: Option<String>,
    /// The same as a stable word, for the page.
    pub last_error_code: Option<IpsecProblem>,
    /// The connection's IKE SA, the established one when there are several.
    pub ike: Option<IkeSa>,
    /// When the SA was last up (monotonic, for the alarm) and when it came up or was last
    /// rekeyed (wall clock, for the page).
    pub last_up: Option<(Instant, SystemTime)>,
    /// When renkei last used the SA: its last connection closed, or the SA came up (or the
    /// record was made). Not charon's ESP counters: they cannot tell the box's own background
    /// traffic (time sync, the journal upload), which must not hold an on-demand SA (NET-7),
    /// from use.
    last_use: Instant,
    /// Traffic of CHILD SAs charon no longer lists (rekeyed, deleted, or gone with charon).
    retired: IpsecTraffic,
    /// The counters last seen of each CHILD SA charon lists, by its unique id.
    live: BTreeMap<Option<u64>, IpsecTraffic>,
    /// SAs already checked against the profile, by charon's unique ids.
    checked: BTreeSet<(Option<u64>, Option<u64>)>,
    /// Why the last SA outside the profile was terminated.
    pub violation: Option<String>,
    /// The algorithms of that SA outside the profile, by charon's names (the page's).
    pub violation_names: Option<String>,
}

impl SaRecord {
    /// A record of nothing yet, made at `now`.
    pub fn new(now: Instant) -> Self {
        SaRecord {
            since: now,
            loaded: false,
            loads: 0,
            last_error: None,
            last_error_code: None,
            ike: None,
            last_up: None,
            last_use: now,
            retired: IpsecTraffic::default(),
            live: BTreeMap::new(),
            checked: BTreeSet::new(),
            violation: None,
            violation_names: None,
        }
    }

    /// A record of nothing yet made at `now` that keeps `previous`'s traffic total (a changed
    /// config within one run: the counters go on).
    pub fn continuing(previous: &SaRecord, now: Instant) -> Self {
        let mut record = SaRecord::new(now);
        record.retired = previous.total();
        record
    }

    /// Charon went away: it keeps nothing, so neither does the record (but the traffic so far
    /// counts: a restarted charon numbers its SAs from 1 again).
    pub fn lost(&mut self, why: String) {
        self.loaded = false;
        self.ike = None;
        self.retire_absent(&BTreeMap::new());
        self.failed(IpsecProblem::CharonUnavailable, why);
    }

    /// Notes the last problem with charon: its stable word and its English words.
    pub fn failed(&mut self, problem: IpsecProblem, why: String) {
        self.last_error_code = Some(problem);
        self.last_error = Some(why);
    }

    /// The connection's ESP traffic over every CHILD SA seen; never decreases.
    pub fn total(&self) -> IpsecTraffic {
        self.live.values().fold(self.retired, |sum, t| add(sum, *t))
    }

    /// Notes the counters an SA event of charon carries (`name`'s only): a CHILD SA's at its
    /// rekey or deletion, which the next listing no longer shows. Raises, never lowers.
    pub fn note_event(&mut self, sas: &[IkeSa], name: &str) {
        for child in sas
            .iter()
            .filter(|sa| sa.name == name)
            .flat_map(|sa| &sa.children)
        {
            let seen = self.live.entry(child.unique_id).or_default();
            *seen = highest(*seen, traffic(child));
        }
    }

    /// Takes the counters of every CHILD SA of `ours` (all states: a rekeyed SA is listed
    /// beside its successor until deleted), keeping the highest seen of each.
    fn count(&mut self, ours: &[IkeSa]) {
        let mut now = BTreeMap::new();
        for child in ours.iter().flat_map(|ike| &ike.children) {
            let seen = traffic(child);
            let previous = self.live.get(&child.unique_id).copied().unwrap_or_default();
            let entry: &mut IpsecTraffic = now.entry(child.unique_id).or_default();
            *entry = highest(highest(*entry, previous), seen);
        }
        self.retire_absent(&now);
        self.live = now;
    }

    /// Adds the last counters of CHILD SAs not in `now` to the retired sum.
    fn retire_absent(&mut self, now: &BTreeMap<Option<u64>, IpsecTraffic>) {
        let gone: Vec<Option<u64>> = self
            .live
            .keys()
            .filter(|id| !now.contains_key(id))
            .copied()
            .collect();
        for id in gone {
            if let Some(last) = self.live.remove(&id) {
                self.retired = add(self.retired, last);
            }
        }
    }

    /// The connection was loaded into charon.
    pub fn loaded(&mut self) {
        self.loaded = true;
        self.loads += 1;
        self.last_error = None;
        self.last_error_code = None;
    }

    /// Notes the SAs charon listed (all of them; only `name`'s count) at `now`/`wall`.
    /// Returns what is outside the profile on an SA not checked before: the caller terminates it.
    pub fn observe(
        &mut self,
        sas: Vec<IkeSa>,
        name: &str,
        now: Instant,
        wall: SystemTime,
    ) -> Option<Violation> {
        let mut ours: Vec<IkeSa> = sas.into_iter().filter(|sa| sa.name == name).collect();
        self.count(&ours);
        ours.sort_by_key(|sa| sa.state != IkeState::Established);
        let had_sa = self.ike.is_some();
        self.ike = ours.into_iter().next();
        let Some(ike) = &self.ike else {
            return None;
        };
        // A new SA (a check-in's, or one charon brought up by itself) gets a whole idle
        // timeout before it may go.
        if !had_sa {
            self.last_use = now;
        }
        let child = installed_child(ike);
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
            outside.extend(ike.algorithms.outside_profile_items());
        }
        for child in ike.children.iter().filter(|c| c.state == CHILD_INSTALLED) {
            if self
                .checked
                .insert((ike.unique_id, child.unique_id.or(Some(0))))
            {
                outside.extend(child.algorithms.outside_profile_items());
            }
        }
        if outside.is_empty() {
            return None;
        }
        let join =
            |part: fn(&Outside) -> &str| outside.iter().map(part).collect::<Vec<_>>().join(", ");
        let why = Violation {
            english: join(|o| o.english.as_str()),
            names: join(|o| o.name.as_str()),
        };
        self.violation = Some(why.english.clone());
        self.violation_names = Some(why.names.clone());
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

    /// on_demand, with no connection holding the SA: an SA exists and renkei has not used
    /// it for `idle_timeout`.
    pub fn is_idle(&self, now: Instant, idle_timeout: Duration) -> bool {
        self.ike.is_some() && now.saturating_duration_since(self.last_use) >= idle_timeout
    }

    /// A connection released by its last user counts as used now: the idle time starts there.
    pub fn used(&mut self, now: Instant) {
        self.last_use = now;
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

fn traffic(child: &ChildSa) -> IpsecTraffic {
    IpsecTraffic {
        bytes_in: child.bytes_in,
        bytes_out: child.bytes_out,
        packets_in: child.packets_in,
        packets_out: child.packets_out,
    }
}

fn add(a: IpsecTraffic, b: IpsecTraffic) -> IpsecTraffic {
    IpsecTraffic {
        bytes_in: a.bytes_in.saturating_add(b.bytes_in),
        bytes_out: a.bytes_out.saturating_add(b.bytes_out),
        packets_in: a.packets_in.saturating_add(b.packets_in),
        packets_out: a.packets_out.saturating_add(b.packets_out),
    }
}

/// Field by field, so a counter charon reports lower (it never should) cannot pull a total down.
fn highest(a: IpsecTraffic, b: IpsecTraffic) -> IpsecTraffic {
    IpsecTraffic {
        bytes_in: a.bytes_in.max(b.bytes_in),
        bytes_out: a.bytes_out.max(b.bytes_out),
        packets_in: a.packets_in.max(b.packets_in),
        packets_out: a.packets_out.max(b.packets_out),
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
        assert!(
            why.english.contains("ESP encryption CHACHA20_POLY1305"),
            "{why:?}"
        );
        assert_eq!(why.names, "CHACHA20_POLY1305");
        assert_eq!(record.violation.as_deref(), Some(why.english.as_str()));
        assert_eq!(record.violation_names.as_deref(), Some("CHACHA20_POLY1305"));
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
        assert!(why.english.contains("DH group CURVE_25519"), "{why:?}");
        assert_eq!(why.names, "CURVE_25519");
    }

    #[test]
    fn net7_idle_counts_from_the_sa_coming_up_and_the_last_use_never_from_esp_bytes() {
        let t0 = Instant::now();
        let idle = Duration::from_secs(30);
        let mut record = SaRecord::new(t0);
        assert!(!record.is_idle(t0 + idle, idle), "no SA is not idle");
        let wall = SystemTime::now();
        // The SA comes up at t0 + 100: it gets a whole idle timeout from there.
        let up = t0 + Duration::from_secs(100);
        record.observe(
            vec![ike(IkeState::Established, vec![child(100, "AES_GCM_16")])],
            NAME,
            up,
            wall,
        );
        assert!(!record.is_idle(up + Duration::from_secs(29), idle));
        // ESP moves bytes at up + 20 (time sync, the journal upload): no use of the SA.
        record.observe(
            vec![ike(IkeState::Established, vec![child(200, "AES_GCM_16")])],
            NAME,
            up + Duration::from_secs(20),
            wall,
        );
        assert!(record.is_idle(up + idle, idle), "ESP bytes held the SA");
        // A connection released at up + 50 is use: idle 30 s after that.
        record.used(up + Duration::from_secs(50));
        assert!(!record.is_idle(up + Duration::from_secs(79), idle));
        assert!(record.is_idle(up + Duration::from_secs(80), idle));
        // Gone, and up again later: the new SA has its own whole timeout.
        record.observe(vec![], NAME, up + Duration::from_secs(90), wall);
        assert!(
            !record.is_idle(up + Duration::from_secs(200), idle),
            "no SA"
        );
        let again = up + Duration::from_secs(300);
        record.observe(
            vec![ike(IkeState::Established, vec![child(0, "AES_GCM_16")])],
            NAME,
            again,
            wall,
        );
        assert!(!record.is_idle(again + Duration::from_secs(29), idle));
        assert!(record.is_idle(again + idle, idle));
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

    /// charon's counters are per CHILD SA and start from zero at each rekey; the totals the
    /// status and the metrics show go on across rekeys, IKE rekeys (the CHILD SA moves to the
    /// new IKE SA with its counters), charon restarts and config changes.
    #[test]
    fn net9_ops4_traffic_totals_never_go_backwards_across_rekeys() {
        let t0 = Instant::now();
        let mut record = SaRecord::new(t0);
        let with = |ike_id: u64, children: Vec<(u64, &str, u64)>| {
            let mut sa = ike(IkeState::Established, vec![]);
            sa.unique_id = Some(ike_id);
            sa.children = children
                .into_iter()
                .map(|(id, state, bytes)| {
                    let mut c = child(bytes, "AES_GCM_16");
                    c.unique_id = Some(id);
                    c.state = state.to_string();
                    c.bytes_out = bytes * 2;
                    c.packets_in = bytes / 100;
                    c
                })
                .collect();
            sa
        };
        let mut last = IpsecTraffic::default();
        fn step(record: &mut SaRecord, last: &mut IpsecTraffic, sas: Vec<IkeSa>, expected_in: u64) {
            record.observe(sas, NAME, Instant::now(), SystemTime::now());
            let total = record.total();
            assert_eq!(total.bytes_in, expected_in, "{total:?}");
            assert_eq!(total.bytes_out, expected_in * 2, "{total:?}");
            for (now, before) in [
                (total.bytes_in, last.bytes_in),
                (total.bytes_out, last.bytes_out),
                (total.packets_in, last.packets_in),
            ] {
                assert!(now >= before, "{total:?} after {last:?}");
            }
            *last = total;
        }
        step(
            &mut record,
            &mut last,
            vec![with(7, vec![(1, "INSTALLED", 1_000)])],
            1_000,
        );
        // CHILD rekey: old and new listed side by side, then the old one deleted.
        step(
            &mut record,
            &mut last,
            vec![with(7, vec![(1, "REKEYED", 1_500), (2, "INSTALLED", 100)])],
            1_600,
        );
        step(
            &mut record,
            &mut last,
            vec![with(7, vec![(2, "INSTALLED", 300)])],
            1_800,
        );
        // IKE rekey: the CHILD SA moves to the new IKE SA, counters and id unchanged.
        step(
            &mut record,
            &mut last,
            vec![with(7, vec![]), with(8, vec![(2, "INSTALLED", 400)])],
            1_900,
        );
        // Down (its last counters stay counted), then a new SA.
        step(&mut record, &mut last, vec![], 1_900);
        step(
            &mut record,
            &mut last,
            vec![with(9, vec![(3, "INSTALLED", 50)])],
            1_950,
        );
        // charon restarts and numbers its SAs from 1 again.
        record.lost("charon went away".to_string());
        assert_eq!(record.total().bytes_in, 1_950);
        step(
            &mut record,
            &mut last,
            vec![with(1, vec![(1, "INSTALLED", 10)])],
            1_960,
        );
        // A changed config keeps the run's total.
        let mut record = SaRecord::continuing(&record, t0);
        assert_eq!(record.total(), last);
        step(
            &mut record,
            &mut last,
            vec![with(2, vec![(5, "INSTALLED", 40)])],
            2_000,
        );
        // The SA's own figure goes down at a rekey; the total does not.
        assert_eq!(
            record
                .ike
                .as_ref()
                .and_then(installed_child)
                .map(|c| c.bytes_in),
            Some(40)
        );
    }

    /// What a CHILD SA carried between the last listing and its rekey is counted from the
    /// rekey event (old SA's counters), not lost when the listing no longer shows it.
    #[test]
    fn net9_ops4_the_rekey_event_counts_what_the_old_sa_carried_last() {
        let t0 = Instant::now();
        let wall = SystemTime::now();
        let mut record = SaRecord::new(t0);
        let with = |children: Vec<(u64, &str, u64)>| {
            let mut sa = ike(IkeState::Established, vec![]);
            sa.children = children
                .into_iter()
                .map(|(id, state, bytes)| {
                    let mut c = child(bytes, "AES_GCM_16");
                    c.unique_id = Some(id);
                    c.state = state.to_string();
                    c
                })
                .collect();
            sa
        };
        record.observe(vec![with(vec![(1, "INSTALLED", 1_000)])], NAME, t0, wall);
        record.note_event(
            &[with(vec![(1, "REKEYED", 1_500), (2, "INSTALLED", 0)])],
            NAME,
        );
        // Another connection's event counts nothing.
        let mut other = with(vec![(9, "INSTALLED", 50_000)]);
        other.name = "other".to_string();
        record.note_event(&[other], NAME);
        record.observe(vec![with(vec![(2, "INSTALLED", 100)])], NAME, t0, wall);
        assert_eq!(record.total().bytes_in, 1_600);
    }
}
