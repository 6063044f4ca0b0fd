//! The ring of recent events shown on the status page (OPS-3, LOG-3): daemon start, tunnel state
//! changes, TLS reloads, logins, and (from the control path) configuration changes.
//!
//! Bounded at [`EVENT_RING_LEN`]; older events are only in journald. Pushing also logs the event,
//! so the page never shows something the journal lacks. Nothing here may hold a secret.
//!
//! Events any client can cause (refusals) go through [`EventLog::admit`], the one rate limit of
//! the ring (INT-1, LOG-2): a token bucket per kind and key lets a burst through, then one event
//! per refill interval, and counts the rest into a "N more ... suppressed" summary event. Such a
//! key also keeps at most [`MAX_RING_EVENTS_PER_KEY`] entries in the ring, so a flood of one
//! refusal can never push the configuration history out of it.
//!
//! Every event is an [`Occurrence`]: a [`Code`] with named parameters, from which the English
//! text is rendered (see [`occurrence`]); the ring keeps the code, the parameters and the text.

mod occurrence;
mod reasons;
pub(crate) mod words;

pub use occurrence::{
    Code, CodeRefusal, ConfigChange, ConfigFacts, ForwardingFound, HubMove, IpsecRefusal,
    LoginRefusal, Occurrence, UpdateRefusal, EVENT_KINDS,
};
pub use reasons::{
    ConfigReason, ConnectProblem, IpsecProblem, StatusStartProblem, TlsFileProblem, TlsRefusal,
};

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// How many recent events the status page keeps.
pub const EVENT_RING_LEN: usize = 100;
/// An event message, and each text parameter, is cut to this many bytes, so no caller can
/// flood the page with one.
pub const MAX_EVENT_MESSAGE_BYTES: usize = 512;
/// Rate-limited events of one kind and key that pass at once, before the limit bites.
pub const EVENT_BURST_PER_KEY: u32 = 10;
/// After the burst, one rate-limited event of a key passes per this many seconds.
pub const EVENT_REFILL_INTERVAL_SECS: u64 = 30;
/// Entries one rate-limited key may hold in the ring; its oldest goes first beyond this.
pub const MAX_RING_EVENTS_PER_KEY: usize = 20;
/// Rate-limit keys tracked at once (they are few: kinds of refusal); idle ones are forgotten
/// first, and a key that cannot be tracked is suppressed.
const MAX_TRACKED_KEYS: usize = 256;

/// How serious an event is; the page colours it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Normal operation.
    Info,
    /// Needs a look (a failed login, a tunnel going down).
    Warning,
    /// Something failed.
    Error,
}

/// One event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// Seconds since the Unix epoch.
    pub time_unix: u64,
    /// info, warning or error.
    pub level: Level,
    /// Short machine word: `daemon`, `tunnel`, `tls`, `config`, `login`, `status`.
    pub kind: &'static str,
    /// What happened, as a stable word (`config_applied`, `login_failed` ...).
    pub code: Code,
    /// The code's named parameters (an object), from which `message` is rendered.
    pub params: serde_json::Value,
    /// What happened, for people, in English.
    pub message: String,
    /// The rate-limit key of a refusal (with `kind`), for the per-key share of the ring.
    #[serde(skip)]
    limited_key: Option<String>,
}

/// What [`EventLog::admit`] decided for one rate-limited event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Log and record it.
    Record,
    /// Drop it: it was counted for the next summary.
    Suppress,
}

/// One key's token bucket and what it has suppressed since its last summary.
#[derive(Debug, Clone)]
struct Bucket {
    tokens: u32,
    refilled_at: Instant,
    suppressed: u64,
    suppressed_since: Option<Instant>,
}

impl Bucket {
    fn full(now: Instant) -> Self {
        Bucket {
            tokens: EVENT_BURST_PER_KEY,
            refilled_at: now,
            suppressed: 0,
            suppressed_since: None,
        }
    }

    fn refill(&mut self, now: Instant) {
        let interval = Duration::from_secs(EVENT_REFILL_INTERVAL_SECS);
        let elapsed = now.saturating_duration_since(self.refilled_at);
        let earned = elapsed.as_secs() / EVENT_REFILL_INTERVAL_SECS;
        if earned == 0 {
            return;
        }
        let tokens = u64::from(self.tokens).saturating_add(earned);
        self.tokens = u32::try_from(tokens.min(u64::from(EVENT_BURST_PER_KEY)))
            .unwrap_or(EVENT_BURST_PER_KEY);
        self.refilled_at = if self.tokens == EVENT_BURST_PER_KEY {
            now
        } else {
            let step = u32::try_from(earned).unwrap_or(u32::MAX);
            self.refilled_at + interval.saturating_mul(step)
        };
    }

    /// Idle: full and nothing left to report, so forgetting it loses nothing.
    fn idle(&self) -> bool {
        self.tokens == EVENT_BURST_PER_KEY && self.suppressed == 0
    }
}

#[derive(Debug, Default)]
struct Inner {
    ring: VecDeque<Event>,
    buckets: HashMap<(&'static str, String), Bucket>,
}

/// A cheap, cloneable handle on the shared ring.
#[derive(Debug, Clone, Default)]
pub struct EventLog {
    inner: Arc<Mutex<Inner>>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn log_event(occurrence: &Occurrence) {
    let (kind, code, message) = (
        occurrence.kind(),
        occurrence.code().as_str(),
        occurrence.message(),
    );
    match occurrence.level() {
        Level::Info => {
            tracing::info!(target: "renkei::event", KIND = kind, EVENT_CODE = code, "{message}")
        }
        Level::Warning => {
            tracing::warn!(target: "renkei::event", KIND = kind, EVENT_CODE = code, "{message}")
        }
        Level::Error => {
            tracing::error!(target: "renkei::event", KIND = kind, EVENT_CODE = code, "{message}")
        }
    }
}

/// Cuts `text` to [`MAX_EVENT_MESSAGE_BYTES`] (on a character boundary, marked with `…`).
fn cut(text: &mut String) {
    if text.len() > MAX_EVENT_MESSAGE_BYTES {
        let mut end = MAX_EVENT_MESSAGE_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
}

/// Cuts every text in `params`: a client-chosen name must not grow the page either.
fn cut_params(params: &mut serde_json::Value) {
    match params {
        serde_json::Value::String(text) => cut(text),
        serde_json::Value::Array(items) => items.iter_mut().for_each(cut_params),
        serde_json::Value::Object(fields) => fields.values_mut().for_each(cut_params),
        _ => {}
    }
}

impl EventLog {
    /// An empty log.
    pub fn new() -> Self {
        EventLog::default()
    }

    /// Records an event now (and logs it), dropping the oldest when the ring is full.
    pub fn push(&self, occurrence: Occurrence) {
        self.push_at(unix_now(), occurrence);
    }

    /// Records an event in the ring only: for callers that already logged it with structured
    /// fields of their own (the config push's LOG-2 records).
    pub fn record(&self, occurrence: Occurrence) {
        self.keep(unix_now(), occurrence, None);
    }

    /// Something any client can cause (a refused handshake or request): logged and recorded
    /// only when [`EventLog::admit`] lets it through (its kind and `key`).
    pub fn push_limited(&self, key: &str, occurrence: Occurrence) {
        if self.admit(occurrence.kind(), key) == Admission::Record {
            log_event(&occurrence);
            self.record_limited(key, occurrence);
        }
    }

    /// An event about one of many alike things (a hub's facility peers changing state): always
    /// logged, so the journal keeps every one, but recorded in the ring only when
    /// [`EventLog::admit`] lets it through under `key`. A hub restart that brings 1000 peers up
    /// at once then leaves a burst, a "N more ... suppressed" summary and the configuration
    /// history in the ring, instead of 1000 entries that flush it.
    pub fn push_summarised(&self, key: &str, occurrence: Occurrence) {
        self.push_summarised_at(Instant::now(), unix_now(), key, occurrence);
    }

    fn push_summarised_at(&self, now: Instant, time_unix: u64, key: &str, occurrence: Occurrence) {
        log_event(&occurrence);
        if self.admit_at(now, time_unix, occurrence.kind(), key) == Admission::Record {
            self.keep(time_unix, occurrence, Some(key));
        }
    }

    /// The rate limit for events of `kind` and `key`: [`Admission::Record`] while the key's
    /// bucket has a token (first writing the summary of what it suppressed before, if any),
    /// else [`Admission::Suppress`] (counted). Callers that log with fields of their own ask
    /// this first, then log and [`EventLog::record_limited`].
    pub fn admit(&self, kind: &'static str, key: &str) -> Admission {
        self.admit_at(Instant::now(), unix_now(), kind, key)
    }

    /// Records a rate-limited event that [`EventLog::admit`] let through, in the ring only.
    pub fn record_limited(&self, key: &str, occurrence: Occurrence) {
        self.keep(unix_now(), occurrence, Some(key));
    }

    fn push_at(&self, time_unix: u64, occurrence: Occurrence) {
        log_event(&occurrence);
        self.keep(time_unix, occurrence, None);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn admit_at(&self, now: Instant, time_unix: u64, kind: &'static str, key: &str) -> Admission {
        let summary = {
            let mut inner = self.lock();
            let lookup = (kind, key.to_string());
            if !inner.buckets.contains_key(&lookup) && inner.buckets.len() >= MAX_TRACKED_KEYS {
                inner.buckets.retain(|_, bucket| {
                    bucket.refill(now);
                    !bucket.idle()
                });
                if inner.buckets.len() >= MAX_TRACKED_KEYS {
                    return Admission::Suppress;
                }
            }
            let bucket = inner
                .buckets
                .entry(lookup)
                .or_insert_with(|| Bucket::full(now));
            bucket.refill(now);
            if bucket.tokens == 0 {
                bucket.suppressed = bucket.suppressed.saturating_add(1);
                bucket.suppressed_since.get_or_insert(now);
                return Admission::Suppress;
            }
            bucket.tokens -= 1;
            take_summary(bucket, now)
        };
        if let Some((count, secs)) = summary {
            self.write_summary(time_unix, kind, key, count, secs);
        }
        Admission::Record
    }

    /// Writes the summaries of keys that suppressed events and may record again: a flood that
    /// stopped still shows its count on the page.
    fn flush_summaries(&self, now: Instant, time_unix: u64) {
        let mut due: Vec<(&'static str, String, u64, u64)> = {
            let mut inner = self.lock();
            inner
                .buckets
                .iter_mut()
                .filter_map(|((kind, key), bucket)| {
                    bucket.refill(now);
                    if bucket.suppressed == 0 || bucket.tokens == 0 {
                        return None;
                    }
                    bucket.tokens -= 1;
                    let (count, secs) = take_summary(bucket, now)?;
                    Some((*kind, key.clone(), count, secs))
                })
                .collect()
        };
        // The map's order is random: summaries due together are written in the keys' order,
        // so the ring reads the same on every run.
        due.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        for (kind, key, count, secs) in due {
            self.write_summary(time_unix, kind, &key, count, secs);
        }
    }

    fn write_summary(&self, time_unix: u64, kind: &'static str, key: &str, count: u64, secs: u64) {
        let summary = Occurrence::EventsSuppressed {
            kind,
            key: key.to_string(),
            count,
            seconds: secs,
        };
        let (code, message) = (summary.code().as_str(), summary.message());
        tracing::warn!(
            target: "renkei::event",
            KIND = kind,
            EVENT_CODE = code,
            SUPPRESSED = count,
            LIMITED_KEY = key,
            "{message}"
        );
        self.keep(time_unix, summary, Some(key));
    }

    fn keep(&self, time_unix: u64, occurrence: Occurrence, limited_key: Option<&str>) {
        let (level, kind, code) = (occurrence.level(), occurrence.kind(), occurrence.code());
        let mut message = occurrence.message();
        cut(&mut message);
        let mut params = occurrence.params();
        cut_params(&mut params);
        let mut inner = self.lock();
        let ring = &mut inner.ring;
        if let Some(key) = limited_key {
            let same = |e: &Event| e.kind == kind && e.limited_key.as_deref() == Some(key);
            if ring.iter().filter(|e| same(e)).count() >= MAX_RING_EVENTS_PER_KEY {
                if let Some(oldest) = ring.iter().position(same) {
                    ring.remove(oldest);
                }
            }
        }
        if ring.len() >= EVENT_RING_LEN {
            ring.pop_front();
        }
        ring.push_back(Event {
            time_unix,
            level,
            kind,
            code,
            params,
            message,
            limited_key: limited_key.map(str::to_string),
        });
    }

    /// The kept events, oldest first (after writing any summary that is due).
    pub fn snapshot(&self) -> Vec<Event> {
        self.snapshot_at(Instant::now(), unix_now())
    }

    fn snapshot_at(&self, now: Instant, time_unix: u64) -> Vec<Event> {
        self.flush_summaries(now, time_unix);
        self.lock().ring.iter().cloned().collect()
    }
}

/// Takes what `bucket` suppressed for a summary: `(count, seconds it spans)`.
fn take_summary(bucket: &mut Bucket, now: Instant) -> Option<(u64, u64)> {
    if bucket.suppressed == 0 {
        return None;
    }
    let since = bucket.suppressed_since.take().unwrap_or(now);
    let count = std::mem::take(&mut bucket.suppressed);
    Some((count, now.saturating_duration_since(since).as_secs().max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    /// A config event of `change` about `version`, with `detail`.
    fn config(change: ConfigChange, version: Option<u64>, detail: String) -> Occurrence {
        Occurrence::Config {
            change,
            facts: ConfigFacts {
                version,
                detail,
                ..ConfigFacts::default()
            },
        }
    }

    fn applied_text(v: u64) -> String {
        format!("config applied: version {v}, signed by unknown, pushed by unknown")
    }

    #[test]
    fn ring_keeps_the_last_events_in_order() {
        let log = EventLog::new();
        for i in 0..(EVENT_RING_LEN + 7) {
            log.push_at(
                i as u64,
                config(ConfigChange::Applied, Some(i as u64), String::new()),
            );
        }
        let events = log.snapshot();
        assert_eq!(events.len(), EVENT_RING_LEN);
        assert_eq!(events[0].message, applied_text(7));
        assert_eq!(events[0].time_unix, 7);
        assert_eq!(
            events.last().map(|e| e.message.clone()),
            Some(applied_text(EVENT_RING_LEN as u64 + 6))
        );
    }

    #[test]
    fn clones_share_the_ring_and_long_messages_are_cut() {
        let log = EventLog::new();
        let other = log.clone();
        other.push(Occurrence::ManagementNoSlot {
            client: "é".repeat(MAX_EVENT_MESSAGE_BYTES),
            address: SocketAddr::from(([198, 18, 0, 1], 443)),
        });
        let events = log.snapshot();
        assert_eq!(events.len(), 1);
        assert!(events[0].message.len() <= MAX_EVENT_MESSAGE_BYTES + '…'.len_utf8());
        let json = serde_json::to_value(&events[0]).expect("json");
        assert_eq!(json["level"], "warning");
        assert_eq!(json["kind"], "config");
        assert_eq!(json["code"], "management_no_slot");
        let client = json["params"]["client"].as_str().unwrap_or_default();
        assert!(
            client.len() <= MAX_EVENT_MESSAGE_BYTES + '…'.len_utf8(),
            "parameters are cut too"
        );
        assert!(json.get("limited_key").is_none(), "internal only");
    }

    fn config_messages(log: &EventLog, now: Instant) -> Vec<String> {
        log.snapshot_at(now, 0)
            .into_iter()
            .filter(|e| e.limited_key.is_none())
            .map(|e| e.message)
            .collect()
    }

    #[test]
    fn int1_log2_ten_thousand_refusals_do_not_evict_config_events() {
        let log = EventLog::new();
        let t0 = Instant::now();
        for v in 1..=5 {
            log.push_at(v, config(ConfigChange::Applied, Some(v), String::new()));
        }
        let mut recorded = 0;
        for i in 0..10_000u64 {
            // 10 000 refusals over 100 s, from two different kinds of refusal.
            let now = t0 + Duration::from_millis(i * 10);
            let key = if i % 2 == 0 {
                "not_operator"
            } else {
                "tls_refused"
            };
            if log.admit_at(now, 0, "config", key) == Admission::Record {
                let refusal = config(ConfigChange::Refused, None, format!("refusal {i}"));
                log.record_limited(key, refusal);
                recorded += 1;
            }
        }
        let per_key_limit =
            EVENT_BURST_PER_KEY as usize + 100 / EVENT_REFILL_INTERVAL_SECS as usize;
        assert!(recorded <= 2 * per_key_limit, "{recorded} recorded");
        // Once a token is back, what is still pending is summarised too.
        let end = t0 + Duration::from_secs(100 + EVENT_REFILL_INTERVAL_SECS);
        assert_eq!(
            config_messages(&log, end),
            (1..=5).map(applied_text).collect::<Vec<_>>(),
            "every config event is still there"
        );
        let events = log.snapshot_at(end, 0);
        assert!(
            events.len() <= 5 + 2 * MAX_RING_EVENTS_PER_KEY,
            "{}",
            events.len()
        );
        let suppressed: u64 = events
            .iter()
            .filter_map(|e| e.message.split(' ').next()?.parse::<u64>().ok())
            .sum();
        assert_eq!(
            suppressed + recorded as u64,
            10_000,
            "every refusal is recorded or counted in a summary: {events:#?}"
        );
    }

    #[test]
    fn int1_a_flood_that_stopped_is_summarised_once_a_token_is_back() {
        let log = EventLog::new();
        let t0 = Instant::now();
        for _ in 0..(EVENT_BURST_PER_KEY + 7) {
            if log.admit_at(t0, 0, "config", "not_operator") == Admission::Record {
                log.record_limited(
                    "not_operator",
                    config(ConfigChange::Refused, None, String::new()),
                );
            }
        }
        assert_eq!(log.snapshot_at(t0, 0).len(), EVENT_BURST_PER_KEY as usize);
        let later = t0 + Duration::from_secs(EVENT_REFILL_INTERVAL_SECS);
        let events = log.snapshot_at(later, 0);
        assert_eq!(
            events.last().map(|e| e.message.as_str()),
            Some("7 more config events \"not_operator\" suppressed in the last 30 s")
        );
        assert_eq!(
            log.snapshot_at(later, 0).len(),
            events.len(),
            "written once"
        );
        // Another key has its own bucket; plain events are never limited.
        assert_eq!(
            log.admit_at(t0, 0, "config", "tls_refused"),
            Admission::Record
        );
        for _ in 0..50 {
            let up = Occurrence::Tunnel {
                state: crate::state::link::LinkState::Up,
                peer: "dc".to_string(),
                reason: crate::state::link::LinkReason::SessionEstablished,
                detail: "handshake completed".to_string(),
            };
            log.push_at(0, up);
        }
        assert_eq!(
            log.snapshot_at(later, 0)
                .iter()
                .filter(|e| e.kind == "tunnel")
                .count(),
            50
        );
    }

    #[test]
    fn avl6_a_thousand_peers_coming_up_leave_the_config_events_and_a_summary() {
        let log = EventLog::new();
        let t0 = Instant::now();
        for v in 1..=30 {
            log.push_at(v, config(ConfigChange::Applied, Some(v), String::new()));
        }
        // A hub restart: 1000 facilities connect, then come up, within a few seconds.
        for state in [
            crate::state::link::LinkState::Connecting,
            crate::state::link::LinkState::Up,
        ] {
            for i in 0..1000u64 {
                let now = t0 + Duration::from_millis(i * 5);
                let change = Occurrence::Tunnel {
                    state,
                    peer: format!("facility-{i:04}"),
                    reason: crate::state::link::LinkReason::SessionEstablished,
                    detail: "handshake completed".to_string(),
                };
                let key = change.code().as_str();
                log.push_summarised_at(now, 100, key, change);
            }
        }
        let later = t0 + Duration::from_secs(5 + EVENT_REFILL_INTERVAL_SECS);
        let events = log.snapshot_at(later, 100);
        assert_eq!(
            config_messages(&log, later),
            (1..=30).map(applied_text).collect::<Vec<_>>(),
            "the configuration history is still in the ring"
        );
        let tunnel: Vec<&Event> = events.iter().filter(|e| e.kind == "tunnel").collect();
        assert!(
            tunnel.len() <= 2 * (EVENT_BURST_PER_KEY as usize + 1),
            "{} tunnel events: {tunnel:#?}",
            tunnel.len()
        );
        let summaries: Vec<&str> = tunnel
            .iter()
            .filter(|e| e.code == Code::EventsSuppressed)
            .map(|e| e.message.as_str())
            .collect();
        let suppressed = 1000 - EVENT_BURST_PER_KEY as usize;
        assert_eq!(summaries.len(), 2, "{events:#?}");
        for (summary, key) in summaries.iter().zip(["tunnel_connecting", "tunnel_up"]) {
            let expected =
                format!("{suppressed} more tunnel events \"{key}\" suppressed in the last ");
            assert!(summary.starts_with(&expected), "{summary}");
        }
    }
}
