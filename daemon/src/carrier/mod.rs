//! The link to the data centre, whatever carries it: the one seam between the kinds of link
//! (WireGuard, in `tunnel/`, a closed network without a tunnel, in `closed.rs`, and IKEv2/IPsec
//! through strongSwan's charon, in `ipsec/`) and the parts that use a link (proxy, control, status,
//! supervisor). Those parts name only what is here: demand a path to a destination, connect
//! now and disconnect, whether the operator was reached since a moment, refresh that proof,
//! the device services bind to, a snapshot with generic fields and a backend part, and start,
//! reconfigure and stop.
//!
//! The backends are an enum rather than a trait object: the set is closed and compiled in, the
//! config chooses one, and the handles are cloned into many tasks (an enum stays `Clone` and
//! its async methods need no boxing).

pub mod closed;
pub mod counters;
pub mod ipsec;
pub mod snapshot;
pub mod wireguard;

use std::net::IpAddr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use tokio::sync::watch;

use crate::config::Config;
use crate::state::events::ConnectProblem;
use crate::state::moment::Moment;
use crate::state::operator_contact::OperatorContact;
/// A facility's hub group (AVL-4), WireGuard's or IPsec's; the status side sees it through here.
pub use crate::tunnel::failover::UnknownHub;
use crate::tunnel::{DemandGuard, TunnelError, TunnelHandle};
pub use crate::tunnel::{HubSnapshot, HubsSnapshot, PreferError};
pub use snapshot::{
    CarrierBackend, CarrierKind, CarrierSnapshot, ClosedCarrier, ClosedLink, DropCounts,
    IpsecCarrier, IpsecChildSa, IpsecIkeSa, IpsecLink, IpsecTraffic, LinkBackend, LinkReason,
    LinkSnapshot, LinkState, WireGuardCarrier, WireGuardDrops, WireGuardPeer,
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
    /// The IPsec carrier could not start.
    #[error(transparent)]
    Ipsec(#[from] ipsec::IpsecError),
}

/// Why a path to a destination could not be given.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DemandError {
    /// No peer of the link is responsible for the destination.
    #[error("no link to the data centre is responsible for {0}")]
    NoRoute(IpAddr),
    /// The link did not come up within the connect timeout.
    #[error("the link to the data centre did not come up within {0:?}")]
    Timeout(Duration),
    /// The link is being restarted by a config change.
    #[error("the link to the data centre is restarting for a config change")]
    Restarting,
}

impl DemandError {
    /// Why, as the stable word of the `tunnel_connect_failed` event.
    pub fn problem(&self) -> ConnectProblem {
        match self {
            DemandError::NoRoute(_) => ConnectProblem::NoRoute,
            DemandError::Timeout(_) => ConnectProblem::Timeout,
            DemandError::Restarting => ConnectProblem::Restarting,
        }
    }
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

/// The running link to the data centre, owned by the supervisor. A pushed config may change
/// its kind (WireGuard to a closed network, or back): the new backend starts first, and only
/// once it runs does the old one stop, so a backend that cannot start leaves the link as it was.
pub struct Carrier {
    backend: Backend,
    /// The running backend's handle, shared with every [`CarrierHandle`]: a change of kind
    /// replaces it here, and every holder (proxy, status page, watchdog) follows.
    current: Arc<RwLock<BackendHandle>>,
    /// Where the management API notes operator requests; kept for a backend started later.
    contact: OperatorContact,
}

// There is one per daemon, never moved in a hot path: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Backend {
    /// Userspace WireGuard (`[tunnel]`).
    WireGuard(wireguard::WireGuard),
    /// A closed network, no tunnel (`[closed]`).
    Closed(closed::Closed),
    /// IKEv2/IPsec through charon (`[ipsec]`).
    Ipsec(ipsec::Ipsec),
}

impl Backend {
    async fn start(config: &Config, contact: OperatorContact) -> Result<Backend, CarrierError> {
        Ok(match kind_of(config) {
            CarrierKind::Closed => Backend::Closed(closed::Closed::start(config, contact)?),
            CarrierKind::Ipsec => Backend::Ipsec(ipsec::Ipsec::start(config, contact).await?),
            CarrierKind::WireGuard => {
                Backend::WireGuard(wireguard::WireGuard::start(config).await?)
            }
        })
    }

    fn kind(&self) -> CarrierKind {
        match self {
            Backend::WireGuard(_) => CarrierKind::WireGuard,
            Backend::Closed(_) => CarrierKind::Closed,
            Backend::Ipsec(_) => CarrierKind::Ipsec,
        }
    }

    fn handle(&self) -> BackendHandle {
        match self {
            Backend::WireGuard(wg) => BackendHandle::WireGuard(wg.handle()),
            Backend::Closed(c) => BackendHandle::Closed(c.handle()),
            Backend::Ipsec(i) => BackendHandle::Ipsec(i.handle()),
        }
    }

    async fn shutdown(self) {
        match self {
            Backend::WireGuard(wg) => wg.shutdown().await,
            Backend::Closed(c) => c.shutdown().await,
            Backend::Ipsec(i) => i.shutdown().await,
        }
    }
}

/// The kind of link `config` asks for: the closed network when it has `[closed]`, IPsec
/// when it has `[ipsec]`, each without `[tunnel]` (validation allows exactly one), WireGuard
/// otherwise.
pub fn kind_of(config: &Config) -> CarrierKind {
    match (&config.tunnel, &config.closed, &config.ipsec) {
        (None, Some(_), _) => CarrierKind::Closed,
        (None, None, Some(_)) => CarrierKind::Ipsec,
        _ => CarrierKind::WireGuard,
    }
}

impl Carrier {
    /// Starts the carrier the config describes: WireGuard from `[tunnel]`, the closed network
    /// from `[closed]`, or IPsec from `[ipsec]`. `contact` is where the management API notes
    /// authenticated operator requests (on a closed network and over IPsec, the proof that the
    /// operator still reaches the box).
    pub async fn start(config: &Config, contact: OperatorContact) -> Result<Carrier, CarrierError> {
        let backend = Backend::start(config, contact.clone()).await?;
        Ok(Carrier {
            current: Arc::new(RwLock::new(backend.handle())),
            backend,
            contact,
        })
    }

    /// Applies a changed config. Within one kind, on error the link is down; the caller
    /// applies the previous config, which brings it back. A change of kind starts the new
    /// backend before it stops the old one: on error the old one runs on untouched; on
    /// success the old one is gone (the TUN device and its keys, or the probe task) and the
    /// device is new.
    pub async fn reconfigure(&mut self, config: &Config) -> Result<Reconfigured, CarrierError> {
        match (&mut self.backend, kind_of(config)) {
            (Backend::WireGuard(wg), CarrierKind::WireGuard) => Ok(wg.reconfigure(config).await?),
            (Backend::Closed(c), CarrierKind::Closed) => Ok(c.reconfigure(config)?),
            (Backend::Ipsec(i), CarrierKind::Ipsec) => Ok(i.reconfigure(config).await?),
            (_, wanted) => self.change_kind(config, wanted).await,
        }
    }

    async fn change_kind(
        &mut self,
        config: &Config,
        wanted: CarrierKind,
    ) -> Result<Reconfigured, CarrierError> {
        let from = self.backend.kind();
        tracing::info!(
            from = from.as_str(),
            to = wanted.as_str(),
            "the kind of link to the data centre changes: starting the new one"
        );
        let started = match Backend::start(config, self.contact.clone()).await {
            Ok(started) => started,
            Err(err) => {
                tracing::warn!(error = %err, from = from.as_str(), to = wanted.as_str(), "the new link cannot start; the running one stays");
                return Err(err);
            }
        };
        let old = std::mem::replace(&mut self.backend, started);
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = self.backend.handle();
        old.shutdown().await;
        tracing::info!(
            from = from.as_str(),
            to = wanted.as_str(),
            "the kind of link to the data centre changed; the old one is stopped"
        );
        Ok(Reconfigured::NewDevice)
    }

    /// Which kind of link runs.
    pub fn kind(&self) -> CarrierKind {
        self.backend.kind()
    }

    /// What the proxy, the status page and the control path hold; it follows restarts and
    /// changes of kind.
    pub fn handle(&self) -> CarrierHandle {
        CarrierHandle {
            current: Arc::clone(&self.current),
        }
    }

    /// Stops the link and removes what it set up on the box.
    pub async fn shutdown(self) {
        self.backend.shutdown().await;
    }
}

/// Whether the carrier part of two configs differs (the peers to watch changed).
pub fn changed(a: &Config, b: &Config) -> bool {
    a.tunnel != b.tunnel || a.closed != b.closed || a.ipsec != b.ipsec
}

/// Whether two configs ask for different kinds of link.
pub fn kind_changed(a: &Config, b: &Config) -> bool {
    kind_of(a) != kind_of(b)
}

/// The private key whose public half the operator enrols the box with (WireGuard's key, the
/// CSR beside it); a closed network has none, and an IPsec box authenticates with its TLS
/// identity, enrolled by its CSR.
pub fn enrolment_key_file(config: &Config) -> Option<&std::path::Path> {
    match kind_of(config) {
        CarrierKind::WireGuard => wireguard::enrolment_key_file(config),
        CarrierKind::Closed | CarrierKind::Ipsec => None,
    }
}

/// The strongswan.conf charon must run with for the config's `[ipsec]` (pinned plugins, VICI
/// socket, timers), rendered; `None` without `[ipsec]`. The image's charon unit and the lab's
/// kit write it before charon starts, so charon runs exactly renkei's configuration.
pub fn charon_conf(config: &Config) -> Option<String> {
    ipsec::settings::charon_settings(config).map(|settings| settings.render())
}

/// The links whose state changes are reported as events, each named with an address one of
/// its peers owns (see [`CarrierHandle::watch_state`]).
pub fn watched_links(config: &Config) -> Vec<(String, IpAddr)> {
    match (&config.tunnel, &config.closed, &config.ipsec) {
        (None, Some(closed), _) => closed
            .data_centre_prefixes
            .first()
            .map(|net| vec![(closed::LINK_NAME.to_string(), net.network())])
            .unwrap_or_default(),
        (None, None, Some(ipsec)) => ipsec
            .data_centre_prefixes
            .first()
            .map(|net| vec![(ipsec::backend::LINK_NAME.to_string(), net.network())])
            .unwrap_or_default(),
        _ => wireguard::watched_links(config),
    }
}

/// A clonable handle on the running carrier; it follows restarts and changes of kind.
#[derive(Clone)]
pub struct CarrierHandle {
    current: Arc<RwLock<BackendHandle>>,
}

/// The running backend's own handle.
#[derive(Clone)]
enum BackendHandle {
    /// Userspace WireGuard.
    WireGuard(TunnelHandle),
    /// A closed network.
    Closed(closed::ClosedHandle),
    /// IPsec through charon.
    Ipsec(ipsec::IpsecHandle),
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
    /// Holds an on-demand SA up.
    Ipsec(#[allow(dead_code)] ipsec::IpsecGuard),
}

impl LinkGuard {
    /// The peer this connection goes through.
    pub fn peer_name(&self) -> &str {
        &self.peer
    }
}

/// A handle on one closed-network backend that no [`Carrier`] owns (tests of the parts that
/// watch a carrier).
impl From<closed::ClosedHandle> for CarrierHandle {
    fn from(handle: closed::ClosedHandle) -> Self {
        CarrierHandle {
            current: Arc::new(RwLock::new(BackendHandle::Closed(handle))),
        }
    }
}

impl CarrierHandle {
    /// The backend running now (a clone: no lock is held across an await).
    fn backend(&self) -> BackendHandle {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Gets a path to `destination`, bringing the link up if it is idle, and holds it up until
    /// the guard is dropped.
    pub async fn demand(&self, destination: IpAddr) -> Result<LinkGuard, DemandError> {
        match self.backend() {
            BackendHandle::WireGuard(t) => {
                let guard = t
                    .demand(destination)
                    .await
                    .map_err(wireguard::demand_error)?;
                Ok(LinkGuard {
                    peer: guard.peer_name().to_string(),
                    _inner: GuardInner::WireGuard(guard),
                })
            }
            BackendHandle::Closed(c) => {
                c.demand(destination)?;
                Ok(LinkGuard {
                    peer: closed::LINK_NAME.to_string(),
                    _inner: GuardInner::Closed,
                })
            }
            BackendHandle::Ipsec(i) => Ok(LinkGuard {
                _inner: GuardInner::Ipsec(i.demand(destination).await?),
                peer: ipsec::backend::LINK_NAME.to_string(),
            }),
        }
    }

    /// Holds the link, without bringing it up, while a connection that arrived through it from
    /// `peer` lives (an inbound service's, the management API's), so an on-demand link does not
    /// idle out under it. Only IPsec needs it: the WireGuard data plane sees every packet of
    /// such a connection as use, and a closed network has nothing to hold; charon's ESP
    /// counters are not renkei's idle check (they count the box's background traffic too).
    pub fn hold_for_peer(&self, peer: IpAddr) -> Option<LinkGuard> {
        match self.backend() {
            BackendHandle::WireGuard(_) | BackendHandle::Closed(_) => None,
            BackendHandle::Ipsec(i) => i.hold_for_peer(peer).map(|guard| LinkGuard {
                _inner: GuardInner::Ipsec(guard),
                peer: ipsec::backend::LINK_NAME.to_string(),
            }),
        }
    }

    /// The state of the link carrying `destination` if that link is up now, without bringing it
    /// up or holding it: for the box's own background traffic (an on-demand box's journal
    /// upload), which rides on a link that is up anyway for demand or a check-in and must not
    /// keep it from idling out (NET-7). The receiver tells when the link leaves `Up`; `None`
    /// while it is not up (or nothing carries `destination`).
    pub fn ride(&self, destination: IpAddr) -> Option<watch::Receiver<LinkState>> {
        let state = self.watch_state(destination)?;
        let up = *state.borrow() == LinkState::Up;
        up.then_some(state)
    }

    /// Brings every on-demand link up now without holding it (the administrator's "connect
    /// now").
    pub async fn connect_now(&self) -> Result<(), DemandError> {
        match self.backend() {
            BackendHandle::WireGuard(t) => t.connect_now().await.map_err(wireguard::demand_error),
            // Nothing to bring up.
            BackendHandle::Closed(_) => Ok(()),
            BackendHandle::Ipsec(i) => i.connect_now().await,
        }
    }

    /// Takes on-demand links down now (the administrator's "disconnect").
    pub async fn disconnect(&self) {
        match self.backend() {
            BackendHandle::WireGuard(t) => t.disconnect().await,
            // Nothing to take down.
            BackendHandle::Closed(_) => {}
            BackendHandle::Ipsec(i) => i.disconnect().await,
        }
    }

    /// A consistent view for the status page, the metrics and tests.
    pub fn snapshot(&self) -> CarrierSnapshot {
        match self.backend() {
            BackendHandle::WireGuard(t) => wireguard::snapshot(t.snapshot()),
            BackendHandle::Closed(c) => c.snapshot(),
            BackendHandle::Ipsec(i) => i.snapshot(),
        }
    }

    /// True while the carrier's own tasks keep running (for the systemd watchdog).
    pub fn is_alive(&self) -> bool {
        match self.backend() {
            BackendHandle::WireGuard(t) => t.is_alive(),
            BackendHandle::Closed(c) => c.is_alive(),
            BackendHandle::Ipsec(i) => i.is_alive(),
        }
    }

    /// True when the link carrying `operator` proved, at or after `since`, that the other side
    /// still accepts this box (WireGuard: a completed handshake; a closed network: an
    /// authenticated management request from the operator).
    pub fn operator_reached_since(&self, operator: IpAddr, since: &Moment) -> bool {
        match self.backend() {
            BackendHandle::WireGuard(t) => wireguard::operator_reached_since(&t, operator, since),
            BackendHandle::Closed(c) => c.operator_reached_since(since),
            BackendHandle::Ipsec(i) => i.operator_reached_since(since),
        }
    }

    /// Asks the link carrying `operator` to prove itself again (WireGuard: a new handshake);
    /// returns whether it was asked.
    pub async fn refresh(&self, operator: IpAddr) -> bool {
        match self.backend() {
            BackendHandle::WireGuard(t) => t.rehandshake(operator).await,
            // Only the operator's next request proves a closed network: nothing to ask.
            BackendHandle::Closed(_) => false,
            // The same proof as a closed network: the operator's next request. A rekey would
            // prove charon and the concentrator, not that the operator accepts the box.
            BackendHandle::Ipsec(_) => false,
        }
    }

    /// Watches the state of the link responsible for `destination`.
    pub fn watch_state(&self, destination: IpAddr) -> Option<watch::Receiver<LinkState>> {
        match self.backend() {
            BackendHandle::WireGuard(t) => t.watch_state(destination),
            BackendHandle::Closed(c) => c.watch_state(destination),
            BackendHandle::Ipsec(i) => i.watch_state(destination),
        }
    }

    /// Watches the link called `name` that carries `destination`: on WireGuard the peer of
    /// that name (the hubs of a hub group share their addresses), elsewhere as `watch_state`.
    pub fn watch_link(
        &self,
        name: &str,
        destination: IpAddr,
    ) -> Option<watch::Receiver<LinkState>> {
        match self.backend() {
            BackendHandle::WireGuard(t) => t.watch_peer(name),
            BackendHandle::Closed(_) | BackendHandle::Ipsec(_) => self.watch_state(destination),
        }
    }

    /// The facility's hub group (AVL-4): WireGuard's `[tunnel.failover]` or IPsec's primary
    /// and backup concentrators (`[ipsec.failover]`); `None` without one.
    pub fn hubs(&self) -> Option<HubsSnapshot> {
        match self.backend() {
            BackendHandle::WireGuard(t) => t.hubs(),
            BackendHandle::Ipsec(i) => i.hubs(),
            BackendHandle::Closed(_) => None,
        }
    }

    /// The operator prefers hub `name` of the hub group until cleared with `None`; returns the
    /// hub active afterwards.
    pub async fn prefer_hub(&self, name: Option<&str>) -> Result<String, PreferError> {
        match self.backend() {
            BackendHandle::WireGuard(t) => t.prefer_hub(name).await,
            BackendHandle::Ipsec(i) => i.prefer(name).await,
            BackendHandle::Closed(_) => Err(PreferError::NoGroup),
        }
    }

    /// Watches whether the kernel forwards IPv4 between interfaces, for a carrier that relies
    /// on it being off (a closed network: NET-8); `None` for one that does not.
    pub fn watch_ip_forward(&self) -> Option<watch::Receiver<Option<bool>>> {
        match self.backend() {
            BackendHandle::WireGuard(_) | BackendHandle::Ipsec(_) => None,
            BackendHandle::Closed(c) => Some(c.watch_ip_forward()),
        }
    }

    /// Events the carrier itself raises (IPsec: refused negotiations, SAs outside the
    /// profile; WireGuard: hub switches of a hub group); `None` for a carrier that raises none.
    pub fn occurrences(
        &self,
    ) -> Option<tokio::sync::broadcast::Receiver<crate::state::events::Occurrence>> {
        match self.backend() {
            BackendHandle::WireGuard(t) => t.hub_occurrences(),
            BackendHandle::Closed(_) => None,
            BackendHandle::Ipsec(i) => Some(i.occurrences()),
        }
    }

    /// The device services and the management API bind to.
    pub fn device(&self) -> String {
        self.snapshot().interface
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The closed network's and IPsec's one link has a name renkei gives it, not the config:
    /// the page knows it (web-ui/app.js, CARRIER_LINK_NAME) and says it in its language.
    #[test]
    fn log3_ops6_the_carriers_own_link_name_is_translated_on_the_page() {
        assert_eq!(closed::LINK_NAME, ipsec::backend::LINK_NAME);
        let app = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../web-ui/app.js"),
        )
        .expect("web-ui/app.js");
        let constant = format!("const CARRIER_LINK_NAME = {:?};", closed::LINK_NAME);
        assert!(app.contains(&constant), "app.js lacks {constant}");
        let missing =
            crate::state::events::words::missing_texts(["link_name_data_centre".to_string()]);
        assert!(missing.is_empty(), "web-ui/i18n.js lacks {missing:?}");
    }

    /// One of the commented examples in `config/`, parsed as it stands.
    fn example(name: &str) -> Config {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../config")
            .join(name);
        let text = std::fs::read_to_string(&path).expect("example config");
        toml::from_str(&text).expect("example parses")
    }

    #[test]
    fn net9_the_kind_of_link_and_the_enrolment_key_come_from_the_carrier_not_from_tunnel_fields() {
        let wireguard = example("disclosing.toml");
        let closed = example("closed.toml");
        assert_eq!(kind_of(&wireguard), CarrierKind::WireGuard);
        assert_eq!(kind_of(&closed), CarrierKind::Closed);
        assert!(kind_changed(&wireguard, &closed));
        assert!(!kind_changed(&closed, &closed.clone()));
        assert_eq!(
            enrolment_key_file(&wireguard),
            Some(std::path::Path::new("wg.key")),
            "a WireGuard box is enrolled by its WireGuard key"
        );
        assert_eq!(
            enrolment_key_file(&closed),
            None,
            "a box on a closed network has no key to enrol"
        );
    }
}
