//! Tunnel state changes as events in the ring (OPS-3): the ring itself lives in
//! [`crate::state::events`], below the tunnel; watching the tunnel is the status side's job.

use std::collections::HashMap;
use std::net::IpAddr;

use tokio::sync::mpsc;

use crate::carrier::{CarrierHandle, LinkReason, LinkState};
use crate::state::events::{EventLog, ForwardingFound, Occurrence};

/// The rate-limit key of the forwarding warning: it repeats at most as often as the ring's
/// limit lets one key through, however often the switch flips.
pub const IP_FORWARD_EVENT_KEY: &str = "ip_forward";

/// Pushes an event whenever a tunnel peer changes state, until the task is aborted; many
/// peers changing state at once are summarised by the ring's rate limit (one key per state).
///
/// `peers` names each peer with an address it owns (the first of its allowed IPs), which is how
/// the tunnel handle finds it.
pub fn watch_tunnel(
    events: EventLog,
    tunnel: CarrierHandle,
    peers: Vec<(String, IpAddr)>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut watchers = tokio::task::JoinSet::new();
        let (changes, waiting) = mpsc::channel(MAX_STATE_CHANGES_PER_SNAPSHOT);
        for (name, address) in peers {
            let Some(mut states) = tunnel.watch_link(&name, address) else {
                continue;
            };
            let changes = changes.clone();
            watchers.spawn(async move {
                // A state reached before this task started (an always-on tunnel comes up fast)
                // is reported too; idle is where every peer starts, not news.
                let mut last = LinkState::Idle;
                loop {
                    let state = *states.borrow_and_update();
                    if state != last {
                        last = state;
                        if changes.send((name.clone(), state)).await.is_err() {
                            break;
                        }
                    }
                    if states.changed().await.is_err() {
                        break;
                    }
                }
            });
        }
        drop(changes);
        let reasons = {
            let tunnel = tunnel.clone();
            move || {
                tunnel
                    .snapshot()
                    .peers
                    .into_iter()
                    .map(|p| (p.name, (p.reason_code, p.reason)))
                    .collect()
            }
        };
        watchers.spawn(record_state_changes(events.clone(), waiting, reasons));
        if let Some(forwarding) = tunnel.watch_ip_forward() {
            watchers.spawn(watch_ip_forward(events.clone(), forwarding));
        }
        if let Some(occurrences) = tunnel.occurrences() {
            watchers.spawn(watch_carrier_occurrences(events.clone(), occurrences));
        }
        while watchers.join_next().await.is_some() {}
    })
}

/// State changes recorded per snapshot of the carrier at most; also the depth of the queue
/// the peers' watchers wait on.
pub const MAX_STATE_CHANGES_PER_SNAPSHOT: usize = 256;

/// Records the peers' state changes with their reasons, taking one snapshot of the carrier
/// (`reasons`: peer name to reason) for all the changes waiting, not one per change: a hub
/// restart with 1000 peers would otherwise copy every peer 1000 times over. Summarised per
/// state: many peers coming up at once must not flush the ring (the journal still gets every
/// change).
async fn record_state_changes(
    events: EventLog,
    mut waiting: mpsc::Receiver<(String, LinkState)>,
    reasons: impl Fn() -> HashMap<String, (LinkReason, String)>,
) {
    let mut batch = Vec::with_capacity(MAX_STATE_CHANGES_PER_SNAPSHOT);
    while waiting
        .recv_many(&mut batch, MAX_STATE_CHANGES_PER_SNAPSHOT)
        .await
        > 0
    {
        let reasons = reasons();
        for (peer, state) in batch.drain(..) {
            let (reason, detail) = reasons
                .get(&peer)
                .cloned()
                .unwrap_or((LinkReason::Unknown, String::new()));
            let change = Occurrence::Tunnel {
                state,
                peer,
                reason,
                detail,
            };
            let key = change.code().as_str();
            events.push_summarised(key, change);
        }
    }
}

/// Records what the carrier raises itself, rate-limited per code (an always-on SA that keeps
/// being refused is retried by charon again and again).
async fn watch_carrier_occurrences(
    events: EventLog,
    mut occurrences: tokio::sync::broadcast::Receiver<Occurrence>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match occurrences.recv().await {
            // Hub switches are few by design (hysteresis) and each one matters.
            Ok(occurrence @ Occurrence::HubSwitched { .. }) => events.push(occurrence),
            Ok(occurrence) => {
                let key = occurrence.code().as_str();
                events.push_limited(key, occurrence);
            }
            Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => break,
        }
    }
}

/// Pushes a warning when the kernel forwards on a carrier that needs it off: when it is on as
/// watching starts, and whenever it turns on.
async fn watch_ip_forward(
    events: EventLog,
    mut forwarding: tokio::sync::watch::Receiver<Option<bool>>,
) {
    let mut was_on = false;
    let mut found = ForwardingFound::AtStart;
    loop {
        let on = *forwarding.borrow_and_update() == Some(true);
        if on && !was_on {
            events.push_limited(IP_FORWARD_EVENT_KEY, Occurrence::IpForwardingOn { found });
        }
        was_on = on;
        found = ForwardingFound::TurnedOn;
        if forwarding.changed().await.is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::carrier::closed::tests::{config, ip_forward};
    use crate::carrier::closed::{Closed, HOST_CHECK_INTERVAL_SECS};
    use crate::config::PolicyMode;
    use crate::state::operator_contact::OperatorContact;

    /// The codes and `found` parameters of the forwarding events in the ring.
    fn forwarding_events(events: &EventLog) -> Vec<String> {
        events
            .snapshot()
            .iter()
            .filter_map(|e| serde_json::to_value(e).ok())
            .filter(|e| e["code"] == "ip_forwarding_on")
            .map(|e| e["params"]["found"].as_str().unwrap_or("").to_string())
            .collect()
    }

    /// Waits (paused clock) until the ring holds `n` forwarding events.
    async fn forwarding_events_reach(events: &EventLog, n: usize) -> Vec<String> {
        for _ in 0..1000 {
            let found = forwarding_events(events);
            if found.len() >= n {
                return found;
            }
            tokio::task::yield_now().await;
        }
        panic!("{n} forwarding events expected: {:?}", events.snapshot());
    }

    /// A closed carrier reading its forwarding switch from `file`, and the status side watching
    /// it into a fresh event ring.
    fn watch_closed_carrier(file: &Path) -> (Closed, EventLog, tokio::task::JoinHandle<()>) {
        let endpoint = "127.0.0.1:9".parse().expect("addr");
        let closed = Closed::start_with(
            &config(endpoint, PolicyMode::OnDemand),
            OperatorContact::new(),
            &[file.to_path_buf()],
        )
        .expect("start");
        let events = EventLog::new();
        let watcher = watch_tunnel(
            events.clone(),
            crate::carrier::CarrierHandle::from(closed.handle()),
            Vec::new(),
        );
        (closed, events, watcher)
    }

    #[tokio::test(start_paused = true)]
    async fn net8_net9_forwarding_on_at_start_and_turned_on_while_running_are_events() {
        let (_dir, file) = ip_forward("1\n");
        let (closed, events, watcher) = watch_closed_carrier(&file);
        assert_eq!(forwarding_events_reach(&events, 1).await, ["at_start"]);
        let event = &events.snapshot()[0];
        assert_eq!(
            serde_json::to_value(event).expect("json")["level"],
            "warning"
        );

        // Off: nothing new. On again while running: a second event.
        std::fs::write(&file, "0\n").expect("write");
        tokio::time::advance(Duration::from_secs(HOST_CHECK_INTERVAL_SECS)).await;
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert_eq!(forwarding_events(&events), ["at_start"]);
        std::fs::write(&file, "1\n").expect("write");
        tokio::time::advance(Duration::from_secs(HOST_CHECK_INTERVAL_SECS)).await;
        assert_eq!(
            forwarding_events_reach(&events, 2).await,
            ["at_start", "turned_on"]
        );
        watcher.abort();
        closed.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn net8_forwarding_off_is_no_event() {
        let (_dir, file) = ip_forward("0\n");
        let (closed, events, watcher) = watch_closed_carrier(&file);
        tokio::time::advance(Duration::from_secs(HOST_CHECK_INTERVAL_SECS * 3)).await;
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert!(
            forwarding_events(&events).is_empty(),
            "{:?}",
            events.snapshot()
        );
        watcher.abort();
        closed.shutdown().await;
    }

    /// 1000 peers coming up at once: one snapshot of the carrier per batch of waiting
    /// changes, not one per change; each event carries its peer's reason; the ring keeps a
    /// summary, not 1000 entries.
    #[tokio::test]
    async fn avl6_a_thousand_state_changes_take_a_few_snapshots_and_leave_a_summary() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let events = EventLog::new();
        let (changes, waiting) = mpsc::channel(MAX_STATE_CHANGES_PER_SNAPSHOT);
        let producer = tokio::spawn(async move {
            for i in 0..1000 {
                let sent = changes
                    .send((format!("facility-{i:04}"), LinkState::Up))
                    .await;
                assert!(sent.is_ok());
            }
        });
        let snapshots = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&snapshots);
        let reasons = move || {
            counted.fetch_add(1, Ordering::Relaxed);
            (0..1000)
                .map(|i| {
                    let why = (LinkReason::SessionEstablished, format!("reason {i}"));
                    (format!("facility-{i:04}"), why)
                })
                .collect()
        };
        record_state_changes(events.clone(), waiting, reasons).await;
        producer.await.expect("producer");
        let taken = snapshots.load(Ordering::Relaxed);
        assert!(
            // The channel lets the producer run ahead by about half its depth between two
            // batches; one per change would be 1000.
            (1..=20).contains(&taken),
            "{taken} snapshots for 1000 changes"
        );
        let ring = events.snapshot();
        let tunnel: Vec<serde_json::Value> = ring
            .iter()
            .filter_map(|e| serde_json::to_value(e).ok())
            .filter(|e| e["kind"] == "tunnel")
            .collect();
        assert_eq!(
            tunnel.len(),
            crate::state::events::EVENT_BURST_PER_KEY as usize,
            "the burst, then suppressed: {tunnel:#?}"
        );
        assert!(tunnel.iter().all(|e| e["params"]["detail"]
            == format!(
                "reason {}",
                e["params"]["peer"]
                    .as_str()
                    .and_then(|p| p.strip_prefix("facility-"))
                    .and_then(|n| n.parse::<u32>().ok())
                    .unwrap_or(u32::MAX)
            )));
    }
}
