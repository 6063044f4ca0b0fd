//! Tunnel state changes as events in the ring (OPS-3): the ring itself lives in
//! [`crate::state::events`], below the tunnel; watching the tunnel is the status side's job.

use std::net::IpAddr;

use crate::carrier::{CarrierHandle, LinkState};
use crate::state::events::{EventLog, Occurrence};

/// Pushes an event whenever a tunnel peer changes state, until the task is aborted.
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
                    events.push(Occurrence::Tunnel {
                        state,
                        peer: name.clone(),
                        reason,
                    });
                }
            });
        }
        while watchers.join_next().await.is_some() {}
    })
}
