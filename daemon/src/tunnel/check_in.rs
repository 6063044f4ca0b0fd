//! Check-ins of an on-demand box (see [`check_in`]).

use std::sync::Arc;
use std::time::Duration;

use super::dataplane::DataPlane;
use super::peer::Peer;
use super::policy::{Event, Mode};

/// Check-ins of an on-demand box: an idle box behind NAT cannot be reached by the operator, so
/// every `interval` it holds its tunnel up for `window` as if a LAN connection wanted it, then
/// lets it idle out as usual (after `idle_timeout_secs` without traffic). Apart from check-ins
/// an idle box sends nothing.
pub(super) async fn check_in(plane: Arc<DataPlane>, interval: Duration, window: Duration) {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let peers: Vec<Arc<Peer>> = plane
            .peers
            .iter()
            .filter(|p| p.lock().policy.mode() == Mode::OnDemand)
            .cloned()
            .collect();
        tracing::info!(
            window_secs = window.as_secs(),
            "check-in: bringing the tunnel up for the operator"
        );
        for peer in &peers {
            plane.external_event(peer, Event::HoldAcquired).await;
        }
        tokio::time::sleep(window).await;
        for peer in &peers {
            plane.external_event(peer, Event::HoldReleased).await;
        }
    }
}
