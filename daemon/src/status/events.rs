//! The ring of recent events shown on the status page (OPS-3, LOG-3): daemon start, tunnel state
//! changes, TLS reloads, logins, and (from the control path) configuration changes.
//!
//! Bounded at [`EVENT_RING_LEN`]; older events are only in journald. Pushing also logs the event,
//! so the page never shows something the journal lacks. Nothing here may hold a secret.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::tunnel::policy::LinkState;
use crate::tunnel::TunnelHandle;

/// How many recent events the status page keeps.
pub const EVENT_RING_LEN: usize = 100;
/// An event message is cut to this many bytes, so no caller can flood the page with one.
pub const MAX_EVENT_MESSAGE_BYTES: usize = 512;

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
    /// Short machine word: `daemon`, `tunnel`, `tls`, `config`, `login`.
    pub kind: &'static str,
    /// What happened, for people.
    pub message: String,
}

/// A cheap, cloneable handle on the shared ring.
#[derive(Debug, Clone, Default)]
pub struct EventLog {
    ring: Arc<Mutex<VecDeque<Event>>>,
}

impl EventLog {
    /// An empty log.
    pub fn new() -> Self {
        EventLog::default()
    }

    /// Records an event now (and logs it), dropping the oldest when the ring is full.
    pub fn push(&self, level: Level, kind: &'static str, message: impl Into<String>) {
        let time_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.push_at(time_unix, level, kind, message.into());
    }

    /// Records an event in the ring only: for callers that already logged it with structured
    /// fields of their own (the config push's LOG-2 records).
    pub fn record(&self, level: Level, kind: &'static str, message: impl Into<String>) {
        let time_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.keep(time_unix, level, kind, message.into());
    }

    fn push_at(&self, time_unix: u64, level: Level, kind: &'static str, message: String) {
        match level {
            Level::Info => tracing::info!(target: "renkei::event", KIND = kind, "{message}"),
            Level::Warning => tracing::warn!(target: "renkei::event", KIND = kind, "{message}"),
            Level::Error => tracing::error!(target: "renkei::event", KIND = kind, "{message}"),
        }
        self.keep(time_unix, level, kind, message);
    }

    fn keep(&self, time_unix: u64, level: Level, kind: &'static str, mut message: String) {
        if message.len() > MAX_EVENT_MESSAGE_BYTES {
            let mut end = MAX_EVENT_MESSAGE_BYTES;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push('…');
        }
        let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        if ring.len() >= EVENT_RING_LEN {
            ring.pop_front();
        }
        ring.push_back(Event {
            time_unix,
            level,
            kind,
            message,
        });
    }

    /// The kept events, oldest first.
    pub fn snapshot(&self) -> Vec<Event> {
        self.ring
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }
}

/// Pushes an event whenever a tunnel peer changes state, until the task is aborted.
///
/// `peers` names each peer with an address it owns (the first of its allowed IPs), which is how
/// the tunnel handle finds it.
pub fn watch_tunnel(
    events: EventLog,
    tunnel: TunnelHandle,
    peers: Vec<(String, IpAddr)>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut watchers = tokio::task::JoinSet::new();
        for (name, address) in peers {
            let Some(mut states) = tunnel.watch_state(address) else {
                continue;
            };
            let events = events.clone();
            let tunnel = tunnel.clone();
            watchers.spawn(async move {
                // A state reached before this task started (an always-on tunnel comes up fast)
                // is reported too; idle is where every peer starts, not news.
                let mut last = LinkState::Idle;
                loop {
                    let state = *states.borrow_and_update();
                    if state == last {
                        if states.changed().await.is_err() {
                            break;
                        }
                        continue;
                    }
                    last = state;
                    let reason = tunnel
                        .snapshot()
                        .peers
                        .into_iter()
                        .find(|p| p.name == name)
                        .map(|p| p.reason)
                        .unwrap_or_default();
                    let level = match state {
                        LinkState::Down => Level::Warning,
                        _ => Level::Info,
                    };
                    events.push(
                        level,
                        "tunnel",
                        format!("peer {name}: {} ({reason})", state.as_str()),
                    );
                }
            });
        }
        while watchers.join_next().await.is_some() {}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_the_last_events_in_order() {
        let log = EventLog::new();
        for i in 0..(EVENT_RING_LEN + 7) {
            log.push_at(i as u64, Level::Info, "test", format!("event {i}"));
        }
        let events = log.snapshot();
        assert_eq!(events.len(), EVENT_RING_LEN);
        assert_eq!(events[0].message, "event 7");
        assert_eq!(events[0].time_unix, 7);
        assert_eq!(
            events.last().map(|e| e.message.clone()),
            Some(format!("event {}", EVENT_RING_LEN + 6))
        );
    }

    #[test]
    fn clones_share_the_ring_and_long_messages_are_cut() {
        let log = EventLog::new();
        let other = log.clone();
        other.push(Level::Warning, "login", "é".repeat(MAX_EVENT_MESSAGE_BYTES));
        let events = log.snapshot();
        assert_eq!(events.len(), 1);
        assert!(events[0].message.len() <= MAX_EVENT_MESSAGE_BYTES + '…'.len_utf8());
        let json = serde_json::to_value(&events[0]).expect("json");
        assert_eq!(json["level"], "warning");
        assert_eq!(json["kind"], "login");
    }
}
