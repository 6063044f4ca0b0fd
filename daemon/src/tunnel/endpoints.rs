//! Endpoint host names: a facility's config may name its data centre by host name, looked up
//! at start and again later, so that a data centre can move to another address behind the same
//! name.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::dataplane::DataPlane;
use super::policy::LinkState;
use crate::state::moment::Moment;

/// How often endpoint host names are checked for a lookup (see [`resolve_endpoints`]).
const RESOLVE_RETRY: Duration = Duration::from_secs(10);
/// A handshake older than this makes a host-name endpoint be looked up again even while its
/// session still counts as up (wireguard-tools' `reresolve-dns` uses the same 135 s).
const STALE_HANDSHAKE: Duration = Duration::from_secs(135);

pub(super) async fn resolve(text: &str) -> Option<SocketAddr> {
    resolve_quietly(text)
        .await
        .map_err(|e| {
            tracing::warn!(endpoint = text, error = %e, "cannot resolve peer endpoint; will retry");
        })
        .ok()
}

/// Looks `text` up, leaving what to say about a failure to the caller.
async fn resolve_quietly(text: &str) -> std::io::Result<SocketAddr> {
    tokio::net::lookup_host(text)
        .await?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "the name has no address"))
}

/// Looks endpoint host names up again, so that a data centre can move to another address
/// behind the same name: a peer's name is looked up while it has no address (it did not
/// resolve at start), while the peer is trying to connect (connecting or down), and once the
/// last handshake of an up session is older than [`STALE_HANDSHAKE`]; never while idle. A new
/// address replaces the one in use, and the next handshake goes there. Literal addresses are
/// never looked up.
pub(super) async fn resolve_endpoints(plane: Arc<DataPlane>) {
    loop {
        tokio::time::sleep(RESOLVE_RETRY).await;
        for peer in &plane.peers {
            let Some(text) = &peer.configured_endpoint else {
                continue;
            };
            if text.parse::<SocketAddr>().is_ok() {
                continue;
            }
            let (current, wanted) = {
                let state = peer.lock();
                (
                    state.endpoint,
                    needs_lookup(
                        state.endpoint.is_some(),
                        state.policy.state(),
                        state.last_handshake,
                        Instant::now(),
                    ),
                )
            };
            if !wanted {
                continue;
            }
            let found = match current {
                // Without an address the peer is unreachable: say why, every time.
                None => resolve(text).await,
                // With one, a failed lookup changes nothing; the old address stays in use.
                Some(_) => match resolve_quietly(text).await {
                    Ok(addr) => Some(addr),
                    Err(e) => {
                        tracing::debug!(peer = %peer.name, endpoint = text, error = %e, "lookup again failed; keeping the address in use");
                        None
                    }
                },
            };
            let Some(addr) = found else {
                continue;
            };
            let mut state = peer.lock();
            match state.endpoint {
                None => {
                    tracing::info!(peer = %peer.name, endpoint = %addr, "peer endpoint resolved")
                }
                Some(old) if old != addr => tracing::info!(
                    peer = %peer.name,
                    name = text.as_str(),
                    from = %old,
                    to = %addr,
                    "peer endpoint moved: its name resolves to another address"
                ),
                Some(_) => continue,
            }
            state.endpoint = Some(addr);
        }
    }
}

/// Whether a host-name endpoint should be looked up now (see [`resolve_endpoints`]).
fn needs_lookup(
    has_address: bool,
    state: LinkState,
    last_handshake: Option<Moment>,
    now: Instant,
) -> bool {
    let stale = last_handshake.is_some_and(|t| t.age_at(now) > STALE_HANDSHAKE);
    match state {
        _ if !has_address => true,
        LinkState::Connecting | LinkState::Down => true,
        LinkState::Up => stale,
        // An idle box sends nothing, lookups included; its next demand looks up if it fails.
        LinkState::Idle => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_name_is_looked_up_when_missing_failing_or_stale_only() {
        let now = Instant::now() + Duration::from_secs(10_000);
        // The wall clock of each handshake is three days off (stepped since): only the
        // monotonic age counts.
        let wall = std::time::SystemTime::now() - Duration::from_secs(3 * 86_400);
        let ago = |secs| {
            Some(Moment {
                instant: now - Duration::from_secs(secs),
                wall,
            })
        };
        // No address yet: always.
        assert!(needs_lookup(false, LinkState::Idle, None, now));
        // Trying and failing to connect: the name may point elsewhere now.
        assert!(needs_lookup(true, LinkState::Connecting, ago(10), now));
        assert!(needs_lookup(true, LinkState::Down, None, now));
        // Up with a fresh handshake, or idle on demand (an idle box sends nothing): leave it.
        assert!(!needs_lookup(true, LinkState::Up, ago(10), now));
        assert!(!needs_lookup(true, LinkState::Idle, ago(3600), now));
        // Up but no handshake for longer than wireguard-tools waits.
        assert!(needs_lookup(true, LinkState::Up, ago(136), now));
        assert!(!needs_lookup(true, LinkState::Up, ago(134), now));
    }
}
