//! The hub's facilities view (AVL-6): one page of its facility peers, searched and sorted on
//! the box, with counts per state over all of them. A hub holds 1000 facilities; the page asks
//! for 50 at a time (`GET /api/v1/facilities`) instead of drawing every peer on every poll.
//!
//! The query string comes from the browser and is untrusted: every parameter is bounded, an
//! unknown, repeated or malformed one is refused with its name, and nothing here panics.

use std::cmp::Ordering;
use std::time::UNIX_EPOCH;

use ipnet::IpNet;
use serde::Serialize;

use crate::carrier::{LinkSnapshot, LinkState};

/// Rows of one page when the request names no `limit`.
pub const DEFAULT_FACILITIES_PAGE_ROWS: usize = 50;
/// Most rows one page may ask for.
pub const MAX_FACILITIES_PAGE_ROWS: usize = 200;
/// Largest `offset` accepted (far beyond any hub; a bigger one is a mistake or a probe).
pub const MAX_FACILITIES_OFFSET_ROWS: usize = 1_000_000;
/// Longest search text, in characters.
pub const MAX_FACILITY_SEARCH_CHARS: usize = 64;

/// What a facilities page is sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SortKey {
    /// The peer's name.
    Name,
    /// Worst first: down, connecting, idle, up (in alarm before not, within a state).
    State,
    /// Never, then the longest ago first (WireGuard: the last handshake): the stale ones lead.
    LastReached,
    /// Bytes received and sent together, fewest first.
    Bytes,
}

impl SortKey {
    const ALL: [(&'static str, SortKey); 4] = [
        ("name", SortKey::Name),
        ("state", SortKey::State),
        ("last_reached", SortKey::LastReached),
        ("bytes", SortKey::Bytes),
    ];
}

/// Ascending (as each [`SortKey`] describes) or descending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// As the key describes.
    Asc,
    /// Reversed.
    Desc,
}

/// One page request: `offset`, `limit`, `q`, `sort`, `order`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FacilityQuery {
    /// Rows to skip (after search and sort).
    pub offset: usize,
    /// Rows to return.
    pub limit: usize,
    /// Case-insensitive substring of the name, an allowed IP or the endpoint; empty: all.
    pub search: String,
    /// Sort key.
    pub sort: SortKey,
    /// Sort direction.
    pub order: Order,
}

impl Default for FacilityQuery {
    fn default() -> Self {
        FacilityQuery {
            offset: 0,
            limit: DEFAULT_FACILITIES_PAGE_ROWS,
            search: String::new(),
            sort: SortKey::Name,
            order: Order::Asc,
        }
    }
}

/// Why a facilities request was refused (answered 400 with this text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// The query string is not valid `application/x-www-form-urlencoded` UTF-8.
    #[error("the query string is not valid percent-encoded UTF-8")]
    Malformed,
    /// A parameter this endpoint does not know.
    #[error("unknown parameter {0:?} (known: offset, limit, q, sort, order)")]
    Unknown(String),
    /// A parameter given twice.
    #[error("parameter {0} is given more than once")]
    Repeated(&'static str),
    /// A parameter with a value outside its bounds.
    #[error("{name}: {problem}")]
    Value {
        /// The parameter.
        name: &'static str,
        /// What is wrong, with the allowed values.
        problem: String,
    },
}

/// `text` as an answer may quote it: at most [`MAX_FACILITY_SEARCH_CHARS`] characters.
fn quoted(text: &str) -> String {
    let mut shown: String = text.chars().take(MAX_FACILITY_SEARCH_CHARS).collect();
    if shown.len() < text.len() {
        shown.push('…');
    }
    shown
}

fn number(name: &'static str, value: &str, min: usize, max: usize) -> Result<usize, QueryError> {
    let out_of_range = || QueryError::Value {
        name,
        problem: format!(
            "{:?} is not a whole number from {min} to {max}",
            quoted(value)
        ),
    };
    let n: usize = value.parse().map_err(|_| out_of_range())?;
    if (min..=max).contains(&n) {
        Ok(n)
    } else {
        Err(out_of_range())
    }
}

impl FacilityQuery {
    /// The query from decoded `name=value` pairs (`None`: the query string did not decode).
    pub fn from_pairs(pairs: Option<Vec<(String, String)>>) -> Result<Self, QueryError> {
        let pairs = pairs.ok_or(QueryError::Malformed)?;
        let mut query = FacilityQuery::default();
        let mut seen: Vec<&'static str> = Vec::new();
        for (name, value) in &pairs {
            let name: &'static str = match name.as_str() {
                "offset" => "offset",
                "limit" => "limit",
                "q" => "q",
                "sort" => "sort",
                "order" => "order",
                other => return Err(QueryError::Unknown(quoted(other))),
            };
            if seen.contains(&name) {
                return Err(QueryError::Repeated(name));
            }
            seen.push(name);
            match name {
                "offset" => query.offset = number(name, value, 0, MAX_FACILITIES_OFFSET_ROWS)?,
                "limit" => query.limit = number(name, value, 1, MAX_FACILITIES_PAGE_ROWS)?,
                "q" => {
                    if value.chars().count() > MAX_FACILITY_SEARCH_CHARS
                        || value.chars().any(char::is_control)
                    {
                        return Err(QueryError::Value {
                            name,
                            problem: format!(
                                "at most {MAX_FACILITY_SEARCH_CHARS} characters, no control characters"
                            ),
                        });
                    }
                    query.search = value.trim().to_lowercase();
                }
                "sort" => {
                    query.sort = SortKey::ALL
                        .iter()
                        .find(|(word, _)| word == value)
                        .map(|(_, key)| *key)
                        .ok_or_else(|| QueryError::Value {
                            name,
                            problem: "one of name, state, last_reached, bytes".to_string(),
                        })?;
                }
                _ => {
                    query.order = match value.as_str() {
                        "asc" => Order::Asc,
                        "desc" => Order::Desc,
                        _ => {
                            return Err(QueryError::Value {
                                name,
                                problem: "asc or desc".to_string(),
                            })
                        }
                    };
                }
            }
        }
        Ok(query)
    }
}

/// One facility peer as the table shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FacilityRow {
    /// Name from the config.
    pub name: String,
    /// Link state.
    pub state: LinkState,
    /// Why it is in that state.
    pub reason: String,
    /// Always-on and not reached for longer than the alarm threshold.
    pub alarm: bool,
    /// When the peer last proved itself on the link (seconds since the Unix epoch; WireGuard: its
    /// last completed handshake); `None`: never.
    pub last_reached_unix: Option<u64>,
    /// Seconds since then.
    pub last_reached_age_secs: Option<u64>,
    /// Where its datagrams come from now, if known.
    pub endpoint: Option<String>,
    /// Its tunnel addresses (allowed IPs).
    pub addresses: Vec<IpNet>,
    /// Bytes received from it.
    pub rx_bytes: u64,
    /// Bytes sent to it.
    pub tx_bytes: u64,
}

impl FacilityRow {
    fn of(peer: &LinkSnapshot) -> Self {
        let wireguard = peer.backend.wireguard();
        FacilityRow {
            name: peer.name.clone(),
            state: peer.state,
            reason: peer.reason.clone(),
            alarm: peer.alarm,
            last_reached_unix: peer
                .last_reached
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_secs()),
            last_reached_age_secs: peer.last_reached_age_secs,
            endpoint: wireguard.and_then(|w| w.endpoint).map(|e| e.to_string()),
            addresses: wireguard.map(|w| w.allowed_ips.clone()).unwrap_or_default(),
            rx_bytes: peer.rx_bytes,
            tx_bytes: peer.tx_bytes,
        }
    }

    fn matches(&self, search: &str) -> bool {
        search.is_empty()
            || self.name.to_lowercase().contains(search)
            || self
                .addresses
                .iter()
                .any(|a| a.to_string().contains(search))
            || self.endpoint.as_deref().is_some_and(|e| e.contains(search))
    }
}

/// Peers per state (over every facility, whatever the search), and how many are in alarm.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StateCounts {
    /// With a session.
    pub up: usize,
    /// Not wanted or not heard from yet.
    pub idle: usize,
    /// Handshake under way.
    pub connecting: usize,
    /// Last attempt failed.
    pub down: usize,
    /// In alarm (any state).
    pub alarm: usize,
}

/// One page of the facilities table: `GET /api/v1/facilities`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FacilityPage {
    /// Every facility peer.
    pub total: usize,
    /// Those the search matched.
    pub matched: usize,
    /// The request's offset.
    pub offset: usize,
    /// The request's limit.
    pub limit: usize,
    /// The sort key used.
    pub sort: SortKey,
    /// The direction used.
    pub order: Order,
    /// Per state, over all of them.
    pub counts: StateCounts,
    /// At most `limit` rows from `offset` of the matched ones, sorted.
    pub rows: Vec<FacilityRow>,
}

fn state_rank(state: LinkState) -> u8 {
    match state {
        LinkState::Down => 0,
        LinkState::Connecting => 1,
        LinkState::Idle => 2,
        LinkState::Up => 3,
    }
}

fn compare(sort: SortKey, a: &FacilityRow, b: &FacilityRow) -> Ordering {
    let primary = match sort {
        SortKey::Name => Ordering::Equal,
        SortKey::State => state_rank(a.state)
            .cmp(&state_rank(b.state))
            .then(b.alarm.cmp(&a.alarm)),
        SortKey::LastReached => a.last_reached_unix.cmp(&b.last_reached_unix),
        SortKey::Bytes => a
            .rx_bytes
            .saturating_add(a.tx_bytes)
            .cmp(&b.rx_bytes.saturating_add(b.tx_bytes)),
    };
    primary.then_with(|| a.name.cmp(&b.name))
}

/// The page `query` asks for, out of `peers` (the carrier's snapshot).
pub fn page(peers: &[LinkSnapshot], query: &FacilityQuery) -> FacilityPage {
    let mut counts = StateCounts::default();
    for peer in peers {
        match peer.state {
            LinkState::Up => counts.up += 1,
            LinkState::Idle => counts.idle += 1,
            LinkState::Connecting => counts.connecting += 1,
            LinkState::Down => counts.down += 1,
        }
        counts.alarm += usize::from(peer.alarm);
    }
    let mut rows: Vec<FacilityRow> = peers
        .iter()
        .map(FacilityRow::of)
        .filter(|row| row.matches(&query.search))
        .collect();
    let matched = rows.len();
    rows.sort_by(|a, b| match query.order {
        Order::Asc => compare(query.sort, a, b),
        Order::Desc => compare(query.sort, b, a),
    });
    let rows = rows
        .into_iter()
        .skip(query.offset)
        .take(query.limit)
        .collect();
    FacilityPage {
        total: peers.len(),
        matched,
        offset: query.offset,
        limit: query.limit,
        sort: query.sort,
        order: query.order,
        counts,
        rows,
    }
}

/// Peers a summarised status document keeps in `tunnel.peers` (`GET /api/v1/status?peers=summary`):
/// every one up to this many; beyond, those in alarm up to this many, else the first.
pub const MAX_SUMMARY_PEERS: usize = 20;

/// What a summarised status document says about every peer, when its `tunnel.peers` is cut.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PeerTotals {
    /// Every configured peer.
    pub count: usize,
    /// Those in alarm.
    pub in_alarm: usize,
    /// Bytes received from all of them.
    pub rx_bytes: u64,
    /// Bytes sent to all of them.
    pub tx_bytes: u64,
}

/// The peers a summarised document keeps (see [`MAX_SUMMARY_PEERS`]) and the totals over all:
/// the page of a hub with 1000 facilities polls this instead of 1000 peers every 5 s; its
/// facilities table reads [`page`].
pub fn summarise(peers: Vec<LinkSnapshot>) -> (Vec<LinkSnapshot>, PeerTotals) {
    let totals = PeerTotals {
        count: peers.len(),
        in_alarm: peers.iter().filter(|p| p.alarm).count(),
        rx_bytes: peers.iter().fold(0, |a, p| a.saturating_add(p.rx_bytes)),
        tx_bytes: peers.iter().fold(0, |a, p| a.saturating_add(p.tx_bytes)),
    };
    if peers.len() <= MAX_SUMMARY_PEERS {
        return (peers, totals);
    }
    let in_alarm: Vec<LinkSnapshot> = peers
        .iter()
        .filter(|p| p.alarm)
        .take(MAX_SUMMARY_PEERS)
        .cloned()
        .collect();
    let kept = if in_alarm.is_empty() {
        peers.into_iter().take(1).collect()
    } else {
        in_alarm
    };
    (kept, totals)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::carrier::{LinkBackend, WireGuardPeer};
    use std::time::Duration;

    /// 1000 facility peers: every fourth in each state, every 7th in alarm, handshakes and
    /// bytes that differ by peer, some never handshaken.
    fn thousand_peers() -> Vec<LinkSnapshot> {
        (0..1000u64)
            .map(|i| {
                let state = [
                    LinkState::Up,
                    LinkState::Idle,
                    LinkState::Connecting,
                    LinkState::Down,
                ][(i % 4) as usize];
                let handshake = (i % 10 != 0)
                    .then(|| UNIX_EPOCH + Duration::from_secs(10_000 + (i * 37) % 1000));
                LinkSnapshot {
                    name: format!("facility-{i:04}"),
                    state,
                    reason: String::new(),
                    reason_code: crate::carrier::LinkReason::Unknown,
                    alarm: i % 7 == 0,
                    last_reached: handshake,
                    last_reached_age_secs: handshake.map(|_| 1),
                    holds: 0,
                    tx_bytes: (i * 7919) % 100_000,
                    rx_bytes: 1000,
                    backend: LinkBackend::WireGuard(WireGuardPeer {
                        public_key: format!("KEY{i}="),
                        endpoint: (i % 2 == 0).then(|| {
                            std::net::SocketAddr::from((
                                [198, 18, (i / 250) as u8, (i % 250) as u8],
                                51820,
                            ))
                        }),
                        allowed_ips: vec![format!("198.19.{}.{}/32", i / 250 + 4, i % 250 + 1)
                            .parse()
                            .expect("net")],
                        persistent_keepalive_secs: None,
                        session_keys_present: state == LinkState::Up,
                        tx_packets: 0,
                        rx_packets: 0,
                        handshake_attempts: 0,
                        handshake_failures: 0,
                        handshakes_completed: 0,
                    }),
                }
            })
            .collect()
    }

    fn query(text: &str) -> Result<FacilityQuery, QueryError> {
        let pairs = text
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (n, v) = p.split_once('=').unwrap_or((p, ""));
                (n.to_string(), v.to_string())
            })
            .collect();
        FacilityQuery::from_pairs(Some(pairs))
    }

    fn names(page: &FacilityPage) -> Vec<&str> {
        page.rows.iter().map(|r| r.name.as_str()).collect()
    }

    #[test]
    fn avl6_pages_of_a_thousand_peers_cover_each_once_with_counts_over_all() {
        let peers = thousand_peers();
        let mut seen = Vec::new();
        let mut offset = 0;
        loop {
            let q = query(&format!("offset={offset}&limit=50")).expect("query");
            let page = page(&peers, &q);
            assert_eq!((page.total, page.matched), (1000, 1000));
            assert_eq!(
                page.counts,
                StateCounts {
                    up: 250,
                    idle: 250,
                    connecting: 250,
                    down: 250,
                    alarm: 143
                }
            );
            if page.rows.is_empty() {
                break;
            }
            assert!(page.rows.len() <= 50);
            seen.extend(page.rows.iter().map(|r| r.name.clone()));
            offset += 50;
        }
        assert_eq!(offset, 1000, "20 pages of 50");
        let mut sorted = seen.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 1000, "every peer exactly once");
        assert_eq!(seen, sorted, "by name by default");
        assert_eq!(seen[0], "facility-0000");
    }

    #[test]
    fn avl6_search_matches_name_or_address_substring_case_insensitively() {
        let peers = thousand_peers();
        let by_name = page(&peers, &query("q=FACILITY-012").expect("q"));
        assert_eq!(by_name.matched, 10, "facility-0120 .. 0129");
        assert!(names(&by_name)
            .iter()
            .all(|n| n.starts_with("facility-012")));
        assert_eq!(by_name.counts.up, 250, "counts stay over all peers");
        // 198.19.7.1/32 is peer 750; "198.19.7.1" also matches .10-.19 and .100-.199.
        let by_address = page(&peers, &query("q=198.19.7.1/32").expect("q"));
        assert_eq!(names(&by_address), ["facility-0750"]);
        // The endpoint (even peers have one): 198.18.1.4:51820 is peer 254.
        let by_endpoint = page(&peers, &query("q=198.18.1.4:").expect("q"));
        assert_eq!(names(&by_endpoint), ["facility-0254"]);
        let none = page(&peers, &query("q=clinic").expect("q"));
        assert_eq!((none.matched, none.rows.len()), (0, 0));
    }

    #[test]
    fn avl6_sort_by_state_handshake_and_bytes_in_both_directions() {
        let peers = thousand_peers();
        let worst = page(&peers, &query("sort=state&limit=200").expect("q"));
        assert!(worst.rows.iter().all(|r| r.state == LinkState::Down));
        assert!(worst.rows[0].alarm, "in alarm first within a state");
        let mut alarms_done = false;
        for row in &worst.rows {
            alarms_done |= !row.alarm;
            assert!(!(alarms_done && row.alarm), "alarm rows lead");
        }
        let best = page(&peers, &query("sort=state&order=desc&limit=1").expect("q"));
        assert_eq!(best.rows[0].state, LinkState::Up);

        let stale = page(&peers, &query("sort=last_reached&limit=200").expect("q"));
        assert!(
            stale.rows[..100]
                .iter()
                .all(|r| r.last_reached_unix.is_none()),
            "never first"
        );
        let times: Vec<u64> = stale.rows[100..]
            .iter()
            .filter_map(|r| r.last_reached_unix)
            .collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "then oldest first");

        let bytes = |r: &FacilityRow| r.rx_bytes + r.tx_bytes;
        let most = page(
            &peers,
            &query("sort=bytes&order=desc&limit=200").expect("q"),
        );
        assert!(most.rows.windows(2).all(|w| bytes(&w[0]) >= bytes(&w[1])));
        let all = page(
            &peers,
            &query("sort=bytes&limit=200&offset=800").expect("q"),
        );
        assert_eq!(all.rows.len(), 200);
        assert!(bytes(&all.rows[199]) >= bytes(&most.rows[199]));
        assert_eq!(
            bytes(&all.rows[199]),
            bytes(&most.rows[0]),
            "the last of ascending is the first of descending"
        );
    }

    #[test]
    fn avl6_int1_bad_parameters_are_refused_with_their_name() {
        for (text, expected) in [
            (
                "limit=0",
                "limit: \"0\" is not a whole number from 1 to 200",
            ),
            (
                "limit=201",
                "limit: \"201\" is not a whole number from 1 to 200",
            ),
            (
                "limit=-1",
                "limit: \"-1\" is not a whole number from 1 to 200",
            ),
            (
                "offset=99999999999999999999999",
                "offset: \"99999999999999999999999\" is not a whole number from 0 to 1000000",
            ),
            (
                "offset=x",
                "offset: \"x\" is not a whole number from 0 to 1000000",
            ),
            (
                "sort=name;drop",
                "sort: one of name, state, last_reached, bytes",
            ),
            ("order=up", "order: asc or desc"),
            ("limit=5&limit=6", "parameter limit is given more than once"),
            (
                "page=2",
                "unknown parameter \"page\" (known: offset, limit, q, sort, order)",
            ),
        ] {
            let error = query(text).expect_err(text);
            assert_eq!(error.to_string(), expected, "{text}");
        }
        let huge = "9".repeat(4000);
        let quoted_back = query(&format!("offset={huge}"))
            .expect_err("huge")
            .to_string();
        assert!(
            quoted_back.len() < 200,
            "a value is quoted cut: {quoted_back}"
        );
        let long = "x".repeat(MAX_FACILITY_SEARCH_CHARS + 1);
        assert!(query(&format!("q={long}"))
            .expect_err("long")
            .to_string()
            .starts_with("q: at most 64"));
        assert!(query("q=a\u{7}").is_err(), "control characters");
        assert_eq!(FacilityQuery::from_pairs(None), Err(QueryError::Malformed));
        // An offset past the end is an empty page, not an error.
        let past = page(&thousand_peers(), &query("offset=5000").expect("q"));
        assert_eq!((past.matched, past.rows.len()), (1000, 0));
        assert_eq!(query("").expect("empty"), FacilityQuery::default());
    }

    #[test]
    fn avl6_a_summary_keeps_few_peers_whole_and_of_many_those_in_alarm_with_totals() {
        let peers = thousand_peers();
        let (kept, totals) = summarise(peers.clone());
        assert_eq!(
            totals,
            PeerTotals {
                count: 1000,
                in_alarm: 143,
                rx_bytes: 1_000_000,
                tx_bytes: peers.iter().map(|p| p.tx_bytes).sum(),
            }
        );
        assert_eq!(kept.len(), MAX_SUMMARY_PEERS);
        assert!(kept.iter().all(|p| p.alarm));
        let mut calm = peers.clone();
        calm.iter_mut().for_each(|p| p.alarm = false);
        let (kept, totals) = summarise(calm);
        assert_eq!(
            (kept.len(), totals.in_alarm),
            (1, 0),
            "the first, for the card"
        );
        let few: Vec<LinkSnapshot> = peers.into_iter().take(MAX_SUMMARY_PEERS).collect();
        let (kept, totals) = summarise(few.clone());
        assert_eq!(kept.len(), few.len(), "a facility box keeps every peer");
        assert_eq!(totals.count, MAX_SUMMARY_PEERS);
    }
}
