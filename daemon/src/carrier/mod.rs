//! The link to the data centre, whatever carries it: the one seam between the kinds of link
//! (WireGuard, in `tunnel/`, and a closed network without a tunnel, in `closed.rs`) and the parts that use a link (proxy, control, status,
//! supervisor). Those parts name only what is here: demand a path to a destination, connect
//! now and disconnect, whether the operator was reached since a moment, refresh that proof,
//! the device services bind to, a snapshot with generic fields and a backend part, and start,
//! reconfigure and stop.
//!
//! The backends are an enum rather than a trait object: the set is closed and compiled in, the
//! config chooses one, and the handles are cloned into many tasks (an enum stays `Clone` and
//! its async methods need no boxing).

pub mod closed;
pub mod ipsec;
pub mod snapshot;
pub mod wireguard;

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::config::Config;
use crate::state::operator_contact::OperatorContact;
use crate::tunnel::{DemandGuard, TunnelError, TunnelHandle};
pub use snapshot::{
    CarrierBackend, CarrierKind, CarrierSnapshot, ClosedCarrier, ClosedLink, DropCounts,
    LinkBackend, LinkSnapshot, LinkState, WireGuardCarrier, WireGuardPeer,
};

/// Why the carrier could not start or apply a config.
#[derive(Debug, thiserror::Error)]
pub enum CarrierError {
    /// The WireGuard tunnel could not start.
    #[error(transparent)]
    WireGuard(#[from] TunnelError),
    /// The closed-network carrier could not start.
    #[error(transparent)]
    Closed(#[from] closed::ClosedError),
    /// A config change asked for another kind of carrier; that takes a restart of the daemon.
    #[error("the kind of link to the data centre changed ({from} to {to}); restart the daemon to change it")]
    KindChanged {
        /// The running kind.
        from: &'static str,
        /// The kind the config asks for.
        to: &'static str,
    },
}

/// Why a path to a destination could not be given.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DemandError {
    /// No peer of the link is responsible for the destination.
    #[error("no tunnel peer is responsible for {0}")]
    NoRoute(IpAddr),
    /// The link did not come up within the connect timeout.
    #[error("the tunnel did not come up within {0:?}")]
    Timeout(Duration),
    /// The link is being restarted by a config change.
    #[error("the tunnel is restarting for a config change")]
    Restarting,
}

/// What [`Carrier::reconfigure`] did, as far as the parts bound to the carrier care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconfigured {
    /// Nothing the carrier is built from changed: it runs on untouched.
    Unchanged,
    /// The carrier restarted on the same device: sockets bound to it keep working.
    Restarted,
    /// The device is new: sockets bound to the old one must be bound again.
    NewDevice,
}

/// The running link to the data centre, owned by the supervisor.
// There is one per daemon, never moved in a hot path: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub enum Carrier {
    /// Userspace WireGuard (`[tunnel]`).
    WireGuard(wireguard::WireGuard),
    /// A closed network, no tunnel (`[closed]`).
    Closed(closed::Closed),
}

impl Carrier {
    /// Starts the carrier the config describes: WireGuard from `[tunnel]`, or the closed
    /// network from `[closed]`. `contact` is where the management API notes authenticated
    /// operator requests (the closed network's proof that the operator still reaches the box).
    pub async fn start(config: &Config, contact: OperatorContact) -> Result<Carrier, CarrierError> {
        if config.tunnel.is_none() && config.closed.is_some() {
            return Ok(Carrier::Closed(closed::Closed::start(config, contact)?));
        }
        Ok(Carrier::WireGuard(
            wireguard::WireGuard::start(config).await?,
        ))
    }

    /// Applies a changed config. On error the link is down; the caller applies the previous
    /// config, which brings it back.
    pub async fn reconfigure(&mut self, config: &Config) -> Result<Reconfigured, CarrierError> {
        let wanted = if config.tunnel.is_none() && config.closed.is_some() {
            CarrierKind::Closed
        } else {
            CarrierKind::WireGuard
        };
        match self {
            Carrier::WireGuard(wg) if wanted == CarrierKind::WireGuard => {
                Ok(wg.reconfigure(config).await?)
            }
            Carrier::Closed(c) if wanted == CarrierKind::Closed => Ok(c.reconfigure(config)?),
            _ => Err(CarrierError::KindChanged {
                from: self.kind().as_str(),
                to: wanted.as_str(),
            }),
        }
    }

    fn kind(&self) -> CarrierKind {
        match self {
            Carrier::WireGuard(_) => CarrierKind::WireGuard,
            Carrier::Closed(_) => CarrierKind::Closed,
        }
    }

    /// What the proxy, the status page and the control path hold.
    pub fn handle(&self) -> CarrierHandle {
        match self {
            Carrier::WireGuard(wg) => CarrierHandle::WireGuard(wg.handle()),
            Carrier::Closed(c) => CarrierHandle::Closed(c.handle()),
        }
    }

    /// Stops the link and removes what it set up on the box.
    pub async fn shutdown(self) {
        match self {
            Carrier::WireGuard(wg) => wg.shutdown().await,
            Carrier::Closed(c) => c.shutdown().await,
        }
    }
}

/// Whether the carrier part of two configs differs (the peers to watch changed).
pub fn changed(a: &Config, b: &Config) -> bool {
    a.tunnel != b.tunnel || a.closed != b.closed
}

/// The links whose state changes are reported as events, each named with an address one of
/// its peers owns (see [`CarrierHandle::watch_state`]).
pub fn watched_links(config: &Config) -> Vec<(String, IpAddr)> {
    match (&config.tunnel, &config.closed) {
        (None, Some(closed)) => closed
            .data_centre_prefixes
            .first()
            .map(|net| vec![(closed::LINK_NAME.to_string(), net.network())])
            .unwrap_or_default(),
        _ => wireguard::watched_links(config),
    }
}

/// A clonable handle on the running carrier; it follows restarts.
#[derive(Clone)]
pub enum CarrierHandle {
    /// Userspace WireGuard.
    WireGuard(TunnelHandle),
    /// A closed network.
    Closed(closed::ClosedHandle),
}

/// Keeps an on-demand link up while a proxied connection is open.
pub struct LinkGuard {
    _inner: GuardInner,
    peer: String,
}

enum GuardInner {
    WireGuard(#[allow(dead_code)] DemandGuard),
    /// Nothing to hold up on a closed network.
    Closed,
}

impl LinkGuard {
    /// The peer this connection goes through.
    pub fn peer_name(&self) -> &str {
        &self.peer
    }
}

impl CarrierHandle {
    /// Gets a path to `destination`, bringing the link up if it is idle, and holds it up until
    /// the guard is dropped.
    pub async fn demand(&self, destination: IpAddr) -> Result<LinkGuard, DemandError> {
        match self {
            CarrierHandle::WireGuard(t) => {
                let guard = t
                    .demand(destination)
                    .await
                    .map_err(wireguard::demand_error)?;
                Ok(LinkGuard {
                    peer: guard.peer_name().to_string(),
                    _inner: GuardInner::WireGuard(guard),
                })
            }
            CarrierHandle::Closed(c) => {
                c.demand(destination)?;
                Ok(LinkGuard {
                    peer: closed::LINK_NAME.to_string(),
                    _inner: GuardInner::Closed,
                })
            }
        }
    }

    /// Brings every on-demand link up now without holding it (the administrator's "connect
    /// now").
    pub async fn connect_now(&self) -> Result<(), DemandError> {
        match self {
            CarrierHandle::WireGuard(t) => t.connect_now().await.map_err(wireguard::demand_error),
            // Nothing to bring up.
            CarrierHandle::Closed(_) => Ok(()),
        }
    }

    /// Takes on-demand links down now (the administrator's "disconnect").
    pub async fn disconnect(&self) {
        match self {
            CarrierHandle::WireGuard(t) => t.disconnect().await,
            // Nothing to take down.
            CarrierHandle::Closed(_) => {}
        }
    }

    /// A consistent view for the status page, the metrics and tests.
    pub fn snapshot(&self) -> CarrierSnapshot {
        match self {
            CarrierHandle::WireGuard(t) => wireguard::snapshot(t.snapshot()),
            CarrierHandle::Closed(c) => c.snapshot(),
        }
    }

    /// True while the carrier's own tasks keep running (for the systemd watchdog).
    pub fn is_alive(&self) -> bool {
        match self {
            CarrierHandle::WireGuard(t) => t.is_alive(),
            CarrierHandle::Closed(c) => c.is_alive(),
        }
    }

    /// True when the link carrying `operator` proved, at or after `since`, that the other side
    /// still accepts this box (WireGuard: a completed handshake; a closed network: an
    /// authenticated management request from the operator).
    pub fn operator_reached_since(&self, operator: IpAddr, since: SystemTime) -> bool {
        match self {
            CarrierHandle::WireGuard(t) => wireguard::operator_reached_since(t, operator, since),
            CarrierHandle::Closed(c) => c.operator_reached_since(since),
        }
    }

    /// Asks the link carrying `operator` to prove itself again (WireGuard: a new handshake);
    /// returns whether it was asked.
    pub async fn refresh(&self, operator: IpAddr) -> bool {
        match self {
            CarrierHandle::WireGuard(t) => t.rehandshake(operator).await,
            // Only the operator's next request proves a closed network: nothing to ask.
            CarrierHandle::Closed(_) => false,
        }
    }

    /// Watches the state of the link responsible for `destination`.
    pub fn watch_state(&self, destination: IpAddr) -> Option<watch::Receiver<LinkState>> {
        match self {
            CarrierHandle::WireGuard(t) => t.watch_state(destination),
            CarrierHandle::Closed(c) => c.watch_state(destination),
        }
    }

    /// The device services and the management API bind to.
    pub fn device(&self) -> String {
        self.snapshot().interface
    }
}
