//! The tunnel to the data centre: a TUN device, WireGuard in userspace on boringtun, and the
//! always-on / on-demand policy.
//!
//! `Tunnel::start` brings everything up as the config says; `TunnelHandle` is what the rest of
//! the daemon uses (the proxy's `demand()`, the status page's snapshots). The tunnel never
//! forwards: only the box's own packets cross it (NET-8).

mod background;
mod check_in;
mod dataplane;
mod endpoints;
pub mod failover;
pub mod filter;
mod handshake_limit;
mod hub_group;
mod lanes;
mod netlink;
pub mod offload;
mod peer;
pub mod policy;
mod replay;
pub mod resume;
mod routes;
mod settle;
mod snapshot;
pub mod tun;
mod uapi;
mod udp;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::{Config, PolicyMode, Role};
use crate::keys;
use crate::state::link::DropCounts as FilterDrops;
use crate::state::moment::Moment;
use background::Background;
use check_in::check_in;
use dataplane::Backlog;
pub use dataplane::{DataPlane, TunnelCounters};
use endpoints::{resolve, resolve_endpoints};
pub use hub_group::{HubSnapshot, HubsSnapshot, PreferError};
use lanes::{bind_udp, lane_count};
pub use netlink::NetlinkError;
pub use peer::PeerSnapshot;
use peer::{Peer, PeerCounters, PeerState};
use policy::{Event, LinkState, Mode, Policy, PolicyTimers};
use snapshot::overall_state;
pub use snapshot::{DatagramDrops, DropCounts, OffloadCounts, TunnelSnapshot};
pub use tun::TunError;
pub use uapi::{read_request as read_uapi_request, UapiError, UapiRequest};

/// Keepalive interval for always-on facility boxes when the config does not set one: under the
/// shortest common NAT UDP timeout.
pub const DEFAULT_ALWAYS_ON_KEEPALIVE_SECS: u16 = 25;
/// Why the tunnel could not start.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// The private key could not be read.
    #[error(transparent)]
    Key(#[from] keys::KeyError),
    /// The TUN device could not be created.
    #[error(transparent)]
    Tun(#[from] TunError),
    /// The interface could not be configured.
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// The UDP port could not be bound.
    #[error("cannot bind UDP port {port}: {source}")]
    Bind {
        /// The configured port.
        port: u16,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The WireGuard API socket could not be served.
    #[error(transparent)]
    Uapi(#[from] UapiError),
    /// The config has no `[tunnel]` section (a closed-network box): there is no tunnel to run.
    #[error("the config has no [tunnel] section")]
    NotConfigured,
}

/// Why `demand()` could not give a session.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DemandError {
    /// No peer's allowed IPs contain the destination.
    #[error("no tunnel peer is responsible for {0}")]
    NoRoute(IpAddr),
    /// The handshake did not complete within the connect timeout.
    #[error("the tunnel did not come up within {0:?}")]
    Timeout(Duration),
    /// The tunnel is being restarted by a config change.
    #[error("the tunnel is restarting for a config change")]
    Restarting,
}

/// A running tunnel. Dropping it (or `shutdown`) removes the interface, its routes and the API
/// socket.
pub struct Tunnel {
    handle: TunnelHandle,
    /// `None` only between stopping an old plane and starting a new one, or after a restart
    /// failed.
    plane: Option<Arc<DataPlane>>,
    tasks: JoinSet<()>,
    /// What it was started from: a config change that leaves these equal keeps it running.
    settings: TunnelSettings,
    /// Every peer's replay gate, by public key: a restart gives the same peer the same gate.
    replay: ReplayGates,
}

/// The replay gates of every peer configured since the daemon started, by public key. Kept
/// when a peer leaves the config, so that a peer put back is still protected.
type ReplayGates = HashMap<[u8; 32], Arc<Mutex<replay::ReplayGate>>>;

/// What [`Tunnel::reconfigure`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconfigured {
    /// Nothing the tunnel is built from changed: it runs on untouched.
    Unchanged,
    /// Peers, sessions, UDP socket and timers were rebuilt on the same TUN device: its index
    /// stays, so sockets bound to it keep working.
    Restarted,
    /// The TUN device itself was made anew (its name changed, or the old one could not be
    /// kept): sockets bound to the old device must be bound again.
    NewDevice,
}

/// The parts of a config the tunnel is built from.
#[derive(Debug, Clone, PartialEq)]
struct TunnelSettings {
    tunnel: crate::config::TunnelConfig,
    role: Role,
    socket_dir: std::path::PathBuf,
    /// The journal upload and the metrics listener riding on an on-demand link: a change
    /// rebuilds the plane.
    background: Background,
}

/// The box's own traffic that rides on the link without using it (NET-7).
fn background_of(config: &Config) -> Background {
    Background {
        upload: config.on_demand_upload_target(),
        metrics: config.on_demand_metrics_listen(),
    }
}

impl TunnelSettings {
    fn of(config: &Config) -> Result<Self, TunnelError> {
        Ok(TunnelSettings {
            tunnel: config.tunnel.clone().ok_or(TunnelError::NotConfigured)?,
            role: config.facility.role,
            socket_dir: config.paths.wireguard_socket_dir.clone(),
            background: background_of(config),
        })
    }
}

/// What the rest of the daemon holds to use the tunnel. It follows restarts: after a config
/// change rebuilt the tunnel, every clone sees the new one.
#[derive(Clone)]
pub struct TunnelHandle {
    slot: Arc<RwLock<Current>>,
    holds: Arc<Mutex<HoldCounts>>,
    /// The operator's preferred hub of the hub group; outlives restarts until cleared.
    preference: hub_group::Preference,
}

/// Open connections holding each peer up, by the peer's public key. Kept here rather than in a
/// plane so that a restart's new peers get them back; its mutex is held while a hold is taken
/// or released and while a restart installs the new plane, so every hold is counted exactly
/// once on the plane that ends up running.
type HoldCounts = HashMap<[u8; 32], usize>;

/// What [`TunnelHandle::hold`] gives `demand`.
type Held = (DemandGuard, Arc<DataPlane>, Arc<Peer>, Backlog);

/// The tunnel in use. The plane is weak so that a restart can close the old TUN device and
/// UDP socket (held only by the `Tunnel` and its tasks) before opening the new ones.
#[derive(Clone)]
struct Current {
    plane: Weak<DataPlane>,
    info: Arc<TunnelInfo>,
}

struct TunnelInfo {
    interface: String,
    address: ipnet::IpNet,
    listen_port: u16,
    mode: PolicyMode,
    connect_timeout: Duration,
    /// The facility's hub group (AVL-4), if it has one.
    group: Option<Arc<hub_group::HubGroup>>,
}

/// Keeps an on-demand tunnel up while a proxied connection is open. It names the peer by key,
/// not by its `Peer`, so that after a restart it is released on the peer running then.
pub struct DemandGuard {
    handle: TunnelHandle,
    key: [u8; 32],
    name: String,
}

impl Drop for DemandGuard {
    fn drop(&mut self) {
        self.handle.release(&self.key);
    }
}

impl DemandGuard {
    /// The peer this connection goes through.
    pub fn peer_name(&self) -> &str {
        &self.name
    }
}

impl Tunnel {
    /// Creates and configures the interface, binds the UDP port, starts the data plane and the
    /// policy (an always-on box initiates a handshake at once).
    pub async fn start(config: &Config) -> Result<Tunnel, TunnelError> {
        let mut replay = ReplayGates::new();
        let (preference, damaged) =
            crate::state::hub_preference::HubPreference::open(&config.paths.state_dir);
        if let Some(e) = damaged {
            tracing::warn!(error = %e, "ignoring the stored hub preference");
        }
        let preference = Arc::new(preference);
        let (plane, info, tasks) = Self::build(config, None, &mut replay, &preference).await?;
        Ok(Tunnel {
            handle: TunnelHandle {
                slot: Arc::new(RwLock::new(Current {
                    plane: Arc::downgrade(&plane),
                    info,
                })),
                holds: Arc::new(Mutex::new(HoldCounts::new())),
                preference,
            },
            plane: Some(plane),
            tasks,
            settings: TunnelSettings::of(config)?,
            replay,
        })
    }

    /// Applies a changed config: when anything the tunnel is built from changed, the tunnel
    /// is restarted: new peers, sessions (a new handshake), UDP socket and timers. The TUN
    /// device stays when its name did not change (stale addresses and routes are removed, the
    /// new ones set), so connections bound to the tunnel address carry on once the new
    /// sessions are up. On error the tunnel is down; the caller applies the previous config,
    /// which then restarts it for sure.
    pub async fn reconfigure(&mut self, config: &Config) -> Result<Reconfigured, TunnelError> {
        let settings = TunnelSettings::of(config)?;
        if settings == self.settings && self.plane.is_some() {
            return Ok(Reconfigured::Unchanged);
        }
        tracing::info!(interface = %self.settings.tunnel.interface, "tunnel config changed; restarting the tunnel");
        let kept = self.stop_tasks().await;
        let kept = match kept {
            Some(tun)
                if settings.tunnel.interface == self.settings.tunnel.interface
                    && settings.tunnel.offloads == self.settings.tunnel.offloads =>
            {
                let wanted: Vec<ipnet::IpNet> = settings
                    .tunnel
                    .peers
                    .iter()
                    .flat_map(|p| p.allowed_ips.iter().copied())
                    .collect();
                let stale: Vec<ipnet::IpNet> = self
                    .settings
                    .tunnel
                    .peers
                    .iter()
                    .flat_map(|p| p.allowed_ips.iter().copied())
                    .filter(|r| !wanted.contains(r))
                    .collect();
                match netlink::prune(&settings.tunnel.interface, settings.tunnel.address, &stale)
                    .await
                {
                    Ok(()) => Some(tun),
                    Err(err) => {
                        tracing::warn!(error = %err, "cannot tidy the TUN device for the new config; making a new one");
                        None
                    }
                }
            }
            _ => None,
        };
        let outcome = if kept.is_some() {
            Reconfigured::Restarted
        } else {
            Reconfigured::NewDevice
        };
        // From here on a failure leaves the tunnel down, and `plane` None makes the next
        // reconfigure (the rollback) rebuild it whatever its settings.
        let (plane, info, tasks) =
            Self::build(config, kept, &mut self.replay, &self.handle.preference).await?;
        // The open connections' holds go onto the new peers in the same step as the plane
        // becomes current: a guard dropped meanwhile is either counted out before or released
        // on the new plane after.
        let backlog = {
            let holds = self.handle.lock_holds();
            *self
                .handle
                .slot
                .write()
                .unwrap_or_else(PoisonError::into_inner) = Current {
                plane: Arc::downgrade(&plane),
                info,
            };
            replay_holds(&plane, &holds)
        };
        plane.send_backlog(backlog).await;
        self.plane = Some(plane);
        self.tasks = tasks;
        self.settings = settings;
        Ok(outcome)
    }

    /// Stops the tasks and waits until nothing else holds the data plane; returns its TUN
    /// device for reuse (dropping it removes the interface), or `None` when the plane could
    /// not be recovered in time (then the device goes once the last holder lets go).
    async fn stop_tasks(&mut self) -> Option<tun::Tun> {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        self.handle
            .slot
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .plane = Weak::new();
        let plane = self.plane.take()?;
        // Callers of the handle hold the plane only for the duration of one call.
        let deadline = Instant::now() + Duration::from_secs(2);
        while Arc::strong_count(&plane) > 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        match Arc::try_unwrap(plane) {
            Ok(plane) => Some(plane.into_tun()),
            Err(plane) => {
                let weak = Arc::downgrade(&plane);
                drop(plane);
                tracing::warn!(
                    "the data plane is still in use; its TUN device goes when it is released"
                );
                let deadline = Instant::now() + Duration::from_secs(2);
                while weak.strong_count() > 0 && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                None
            }
        }
    }

    /// Builds the tunnel on `tun` (the kept device of a restart) or a new TUN device; peers
    /// keep their replay gates from `replay` (new peers get one there).
    async fn build(
        config: &Config,
        tun: Option<tun::Tun>,
        replay: &mut ReplayGates,
        preference: &hub_group::Preference,
    ) -> Result<(Arc<DataPlane>, Arc<TunnelInfo>, JoinSet<()>), TunnelError> {
        let tunnel = config.tunnel.as_ref().ok_or(TunnelError::NotConfigured)?;
        let secret = keys::read_private_key(&tunnel.private_key_file)?;
        // One queue and one receive socket per worker on a box with several peers (a hub), so
        // that different peers are handled on different cores; a kept device is given as many
        // queues as it can take.
        let lanes = lanes_for(config);
        let tun = match tun {
            Some(mut tun) => {
                tun.set_queue_count(&tunnel.interface, lanes);
                tun
            }
            // A hub's facilities come and go by config changes: its device can always take
            // more queues. A facility's keeps the single-queue device it has always had.
            None if config.facility.role == Role::Hub => tun::Tun::create_multi_queue(
                &tunnel.interface,
                offloads_switched_off(tunnel),
                lanes,
            )?,
            None => {
                tun::Tun::create_queues(&tunnel.interface, offloads_switched_off(tunnel), lanes)?
            }
        };
        let routes = tunnel
            .peers
            .iter()
            .flat_map(|p| p.allowed_ips.iter().copied())
            .collect();
        netlink::configure(&netlink::LinkSettings {
            name: &tunnel.interface,
            mtu: tunnel.mtu,
            address: tunnel.address,
            routes,
        })
        .await?;
        let (socket, more_sockets) =
            bind_udp(tunnel.listen_port, lanes).map_err(|source| TunnelError::Bind {
                port: tunnel.listen_port,
                source,
            })?;
        let listen_port = socket
            .local_addr()
            .map(|a| a.port())
            .unwrap_or(tunnel.listen_port);

        let mode = config.policy_mode();
        let idle_timeout = Duration::from_secs(tunnel.policy.idle_timeout_secs);
        let handshake_alarm = Duration::from_secs(tunnel.policy.handshake_alarm_secs);
        let now = Instant::now();
        // A facility's hub group: every member but the one starting active is standby.
        let failover = tunnel
            .failover
            .as_ref()
            .filter(|_| config.facility.role != Role::Hub);
        let first_active = failover.map(|f| hub_group::initial_active(f, preference));
        let mut peers = Vec::with_capacity(tunnel.peers.len());
        for (index, pc) in tunnel.peers.iter().enumerate() {
            let public_key = keys::decode_key(&pc.public_key)?;
            let peer_mode = match (config.facility.role, &pc.endpoint, mode) {
                (Role::Hub, _, _) | (_, None, _) => Mode::Passive,
                (_, Some(_), PolicyMode::AlwaysOn) => Mode::AlwaysOn,
                (_, Some(_), PolicyMode::OnDemand) => Mode::OnDemand,
            };
            let keepalive_secs = pc.persistent_keepalive_secs.or(match peer_mode {
                Mode::AlwaysOn => Some(DEFAULT_ALWAYS_ON_KEEPALIVE_SECS),
                Mode::OnDemand | Mode::Passive => None,
            });
            let timers = PolicyTimers {
                idle_timeout,
                handshake_alarm,
                liveness: keepalive_secs
                    .filter(|k| *k > 0 && peer_mode == Mode::AlwaysOn)
                    .map(PolicyTimers::liveness_for_keepalive),
            };
            let endpoint = match &pc.endpoint {
                Some(text) => resolve(text).await,
                None => None,
            };
            let standby = failover.is_some_and(|f| f.hubs.contains(&pc.name))
                && first_active != Some(pc.name.as_str());
            let policy_mode = if standby { Mode::Passive } else { peer_mode };
            let (link_state, _) = watch::channel(LinkState::Idle);
            let gate = Arc::clone(replay.entry(public_key).or_insert_with(|| {
                Arc::new(Mutex::new(replay::ReplayGate::new(&secret, public_key)))
            }));
            gate.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .set_own_key(&secret);
            peers.push(Arc::new(Peer {
                name: pc.name.clone(),
                public_key,
                allowed_ips: pc.allowed_ips.clone(),
                configured_endpoint: pc.endpoint.clone(),
                keepalive_secs,
                index: index as u32,
                counters: PeerCounters::default(),
                state: Mutex::new(PeerState {
                    tunn: None,
                    endpoint,
                    policy: Policy::new(policy_mode, timers, now),
                    last_handshake: None,
                    awaiting_response: false,
                    alarm: false,
                }),
                link_state,
                replay: gate,
                standby: std::sync::atomic::AtomicBool::new(standby),
            }));
        }

        let uapi = uapi::UapiSocket::bind(&config.paths.wireguard_socket_dir, &tunnel.interface)?;
        let plane = Arc::new(DataPlane::new(
            secret,
            tunnel.address.addr(),
            peers,
            udp::PortSockets {
                first: udp::Udp::new(socket),
                more: more_sockets.into_iter().map(udp::Udp::new).collect(),
            },
            tun,
            tunnel.handshakes_per_sec_in_force(),
            background_of(config),
        ));
        let resume_file = resume::path_in(&config.paths.state_dir);
        let mut remembered = resume::load(&resume_file, std::time::SystemTime::now())
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "ignoring the remembered peer endpoints");
                resume::Remembered::new()
            });
        // A standby hub is probed by its group, not greeted (a file from an older run may
        // still name one).
        remembered.retain(|key, _| {
            !plane
                .peers
                .iter()
                .any(|p| p.public_key == *key && p.is_standby())
        });
        if !remembered.is_empty() {
            tracing::info!(
                peers = remembered.len(),
                "greeting the peers that had sessions before the restart"
            );
        }
        let backlog = plane.start_policies(&remembered);
        plane.send_backlog(backlog).await;
        let group = failover.and_then(|f| {
            let active_mode = match mode {
                PolicyMode::AlwaysOn => Mode::AlwaysOn,
                PolicyMode::OnDemand => Mode::OnDemand,
            };
            hub_group::HubGroup::new(
                f,
                &plane.peers,
                active_mode,
                Duration::from_secs(tunnel.policy.connect_timeout_secs),
                Arc::clone(preference),
                now,
            )
            .map(Arc::new)
        });

        let mut tasks = JoinSet::new();
        if let Some(group) = &group {
            tasks.spawn(Arc::clone(group).run(Arc::clone(&plane)));
        }
        for queue in 0..plane.tun.queue_count() {
            tasks.spawn(Arc::clone(&plane).run_tun(queue));
        }
        for socket in 0..plane.receive_sockets() {
            tasks.spawn(Arc::clone(&plane).run_udp(socket));
        }
        tasks.spawn(Arc::clone(&plane).run_timers());
        tasks.spawn(uapi.serve(Arc::clone(&plane), listen_port));
        tasks.spawn(resolve_endpoints(Arc::clone(&plane)));
        tasks.spawn(resume::remember(
            Arc::clone(&plane),
            resume_file,
            remembered,
        ));
        if mode == PolicyMode::OnDemand && tunnel.policy.checkin_interval_secs > 0 {
            tasks.spawn(check_in(
                Arc::clone(&plane),
                Duration::from_secs(tunnel.policy.checkin_interval_secs),
                Duration::from_secs(tunnel.policy.checkin_window_secs),
            ));
        }

        tracing::info!(
            interface = %tunnel.interface,
            address = %tunnel.address,
            listen_port,
            policy = mode.as_str(),
            peers = tunnel.peers.len(),
            "tunnel started"
        );
        let info = Arc::new(TunnelInfo {
            interface: tunnel.interface.clone(),
            address: tunnel.address,
            listen_port,
            mode,
            connect_timeout: Duration::from_secs(tunnel.policy.connect_timeout_secs),
            group,
        });
        Ok((plane, info, tasks))
    }

    /// A handle for the proxy and the status page.
    pub fn handle(&self) -> TunnelHandle {
        self.handle.clone()
    }

    /// Stops the data plane and removes the interface (with its address and routes) and the
    /// API socket, once the closed connections' last packets have crossed (`settle`).
    pub async fn shutdown(mut self) {
        let address = self.settings.tunnel.address.addr();
        let closing = settle::wait_for_closing_sockets(address).await;
        if closing > 0 {
            tracing::warn!(
                closing,
                "connections still closing through the tunnel; stopping it anyway"
            );
        }
        drop(self.stop_tasks().await);
        tracing::info!(interface = %self.settings.tunnel.interface, "tunnel stopped");
    }
}

impl TunnelHandle {
    /// The plane in use (none while restarting) and its settings.
    fn current(&self) -> (Option<Arc<DataPlane>>, Arc<TunnelInfo>) {
        let slot = self.slot.read().unwrap_or_else(PoisonError::into_inner);
        (slot.plane.upgrade(), Arc::clone(&slot.info))
    }

    fn lock_holds(&self) -> MutexGuard<'_, HoldCounts> {
        self.holds.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a hold on the peer responsible for `destination` and feeds it to that peer of the
    /// running plane, both under the hold lock (see [`HoldCounts`]). The guard exists before
    /// anything awaits, so a cancelled `demand` still releases what it took. Also returns the
    /// plane and peer, and what the plane must still send.
    fn hold(&self, destination: IpAddr) -> Result<Held, DemandError> {
        let mut holds = self.lock_holds();
        let plane = self.current().0.ok_or(DemandError::Restarting)?;
        let peer = plane
            .peer_for(destination)
            .cloned()
            .ok_or(DemandError::NoRoute(destination))?;
        count_in(&mut holds, peer.public_key);
        let backlog = plane.event_now(&peer, Event::HoldAcquired);
        let guard = DemandGuard {
            handle: self.clone(),
            key: peer.public_key,
            name: peer.name.clone(),
        };
        Ok((guard, plane, peer, backlog))
    }

    /// Gives back one hold on the peer with `key`, on the plane running now (if it still has
    /// that peer).
    fn release(&self, key: &[u8; 32]) {
        let mut holds = self.lock_holds();
        count_out(&mut holds, key);
        let Some(plane) = self.current().0 else {
            return;
        };
        if let Some(peer) = plane.peer_by_key(key) {
            peer.lock()
                .policy
                .handle(Event::HoldReleased, Instant::now());
        }
    }

    /// Gets a session to the peer responsible for `destination`, starting a handshake if the
    /// tunnel is idle, and holds the tunnel open until the guard is dropped. Waits at most the
    /// configured `connect_timeout`.
    pub async fn demand(&self, destination: IpAddr) -> Result<DemandGuard, DemandError> {
        let info = self.current().1;
        let (guard, plane, peer, backlog) = self.hold(destination)?;
        let mut states = peer.link_state.subscribe();
        plane.send_backlog(backlog).await;
        drop(plane);
        let timeout = info.connect_timeout;
        let up = tokio::time::timeout(timeout, async {
            states.wait_for(|s| *s == LinkState::Up).await.is_ok()
        })
        .await;
        match up {
            Ok(true) => Ok(guard),
            _ => {
                // A hub group moves on to its next hub: the next connect goes there.
                if let (Some(group), Some(plane)) = (&info.group, self.current().0) {
                    if let Some(index) = plane.peers.iter().position(|p| Arc::ptr_eq(p, &peer)) {
                        group.connect_failed(&plane, index).await;
                    }
                }
                Err(DemandError::Timeout(timeout))
            }
        }
    }

    /// The hub group's state, when the box has one (AVL-4).
    pub fn hubs(&self) -> Option<HubsSnapshot> {
        let (plane, info) = self.current();
        let plane = plane?;
        Some(info.group.as_ref()?.snapshot(&plane))
    }

    /// The operator prefers hub `name` (maintenance of the others) until cleared with `None`;
    /// the box moves at once when that hub is healthy. Returns the hub active afterwards.
    pub async fn prefer_hub(&self, name: Option<&str>) -> Result<String, PreferError> {
        let (plane, info) = self.current();
        let (Some(group), Some(plane)) = (&info.group, plane) else {
            return Err(PreferError::NoGroup);
        };
        group.prefer(&plane, name).await
    }

    /// Hub switches as events for the ring; `None` without a hub group.
    pub fn hub_occurrences(
        &self,
    ) -> Option<tokio::sync::broadcast::Receiver<crate::state::events::Occurrence>> {
        Some(self.current().1.group.as_ref()?.occurrences())
    }

    /// Brings every on-demand peer up now without holding it (the administrator's "connect
    /// now"); it goes idle again after the idle timeout.
    pub async fn connect_now(&self) -> Result<(), DemandError> {
        let (plane, info) = self.current();
        let plane = plane.ok_or(DemandError::Restarting)?;
        let timeout = info.connect_timeout;
        let peers = plane.peers.clone();
        for peer in &peers {
            if peer.lock().policy.mode() == Mode::Passive {
                continue;
            }
            let mut states = peer.link_state.subscribe();
            plane.external_event(peer, Event::Demand).await;
            let up = tokio::time::timeout(timeout, async {
                states.wait_for(|s| *s == LinkState::Up).await.is_ok()
            })
            .await;
            if up != Ok(true) {
                return Err(DemandError::Timeout(timeout));
            }
        }
        Ok(())
    }

    /// Drops the sessions of on-demand peers now (the administrator's "disconnect").
    pub async fn disconnect(&self) {
        let Some(plane) = self.current().0 else {
            return;
        };
        for peer in &plane.peers {
            let mut state = peer.lock();
            if state.policy.mode() == Mode::OnDemand {
                state.tunn = None;
                state.awaiting_response = false;
                state.policy = Policy::new(Mode::OnDemand, state.policy.timers(), Instant::now());
                state.policy.handle(Event::Start, Instant::now());
                peer.link_state.send_replace(LinkState::Idle);
            }
        }
    }

    /// A consistent view of the tunnel for the status page, metrics and tests.
    pub fn snapshot(&self) -> TunnelSnapshot {
        let now = Instant::now();
        let (plane, info) = self.current();
        let Some(plane) = plane else {
            return TunnelSnapshot {
                interface: info.interface.clone(),
                address: info.address,
                listen_port: info.listen_port,
                policy: info.mode.as_str(),
                state: LinkState::Down,
                alarm: false,
                peers: Vec::new(),
                drops: DropCounts::default(),
                offloads: "off (the tunnel is not running)".to_string(),
                offloads_on: false,
                offload_counts: OffloadCounts::default(),
                udp_reads_per_socket: Vec::new(),
                tun_reads_per_queue: Vec::new(),
            };
        };
        let peers: Vec<PeerSnapshot> = plane.peers.iter().map(|p| p.snapshot(now)).collect();
        let c = &plane.counters;
        TunnelSnapshot {
            interface: info.interface.clone(),
            address: info.address,
            listen_port: info.listen_port,
            policy: info.mode.as_str(),
            state: overall_state(&peers),
            alarm: peers.iter().any(|p| p.alarm),
            peers,
            drops: DropCounts {
                filter: FilterDrops {
                    foreign_source: c.dropped_foreign_source.load(Ordering::Relaxed),
                    no_route: c.dropped_no_route.load(Ordering::Relaxed),
                    foreign_destination: c.dropped_foreign_destination.load(Ordering::Relaxed),
                    source_not_allowed: c.dropped_source_not_allowed.load(Ordering::Relaxed),
                    malformed: c.dropped_malformed.load(Ordering::Relaxed),
                },
                datagrams: DatagramDrops {
                    invalid_datagrams: c.invalid_datagrams.load(Ordering::Relaxed),
                    no_endpoint: c.dropped_no_endpoint.load(Ordering::Relaxed),
                    send_errors: c.send_errors.load(Ordering::Relaxed),
                    tun_write_errors: c.tun_write_errors.load(Ordering::Relaxed),
                },
            },
            offloads: plane.tun.offloads().describe(),
            offloads_on: plane.tun.offloads().is_on(),
            offload_counts: OffloadCounts {
                super_segments_read: c.tun_super_segments_read.load(Ordering::Relaxed),
                super_packets_written: c.tun_super_packets_written.load(Ordering::Relaxed),
            },
            udp_reads_per_socket: plane.udp_reads_per_socket(),
            tun_reads_per_queue: plane.tun_reads_per_queue(),
        }
    }

    /// True while the data plane's timer task keeps ticking (for the systemd watchdog).
    pub fn is_alive(&self) -> bool {
        self.current()
            .0
            .is_some_and(|plane| plane.heartbeat_age() < dataplane::TICK * 8)
    }

    /// When the peer responsible for `destination` last completed a handshake (in the tunnel
    /// running now): auto_confirm wants one after the apply.
    pub fn last_handshake(&self, destination: IpAddr) -> Option<Moment> {
        self.current()
            .0?
            .peer_for(destination)
            .and_then(|p| p.lock().last_handshake)
    }

    /// Starts a fresh handshake with the peer responsible for `destination`, if it has a
    /// session and an endpoint; returns whether one was sent.
    pub async fn rehandshake(&self, destination: IpAddr) -> bool {
        let Some(plane) = self.current().0 else {
            return false;
        };
        let Some(peer) = plane.peer_for(destination).cloned() else {
            return false;
        };
        plane.rehandshake(&peer).await
    }

    /// Watches the state of the peer called `name` (in the tunnel running now): the hubs of a
    /// hub group share their addresses, so only the name tells them apart.
    pub fn watch_peer(&self, name: &str) -> Option<watch::Receiver<LinkState>> {
        self.current()
            .0?
            .peers
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.link_state.subscribe())
    }

    /// Watches the state of the peer responsible for `destination` (in the tunnel running now).
    pub fn watch_state(&self, destination: IpAddr) -> Option<watch::Receiver<LinkState>> {
        self.current()
            .0?
            .peer_for(destination)
            .map(|p| p.link_state.subscribe())
    }
}

/// Feeds the counted holds to the matching peers of a new plane (peers no longer configured are
/// skipped; their guards release into the counts only). Called with the hold lock held.
fn replay_holds(plane: &DataPlane, holds: &HoldCounts) -> Backlog {
    let mut backlog = Backlog::new();
    for peer in &plane.peers {
        for _ in 0..holds_on(holds, &peer.public_key) {
            backlog.extend(plane.event_now(peer, Event::HoldAcquired));
        }
    }
    backlog
}

/// One more connection holding the peer with `key`.
fn count_in(holds: &mut HoldCounts, key: [u8; 32]) {
    *holds.entry(key).or_default() += 1;
}

/// One connection fewer holding the peer with `key`; a peer no longer held leaves the map.
fn count_out(holds: &mut HoldCounts, key: &[u8; 32]) {
    if let Some(count) = holds.get_mut(key) {
        *count = count.saturating_sub(1);
        if *count == 0 {
            holds.remove(key);
        }
    }
}

/// Connections holding the peer with `key`.
fn holds_on(holds: &HoldCounts, key: &[u8; 32]) -> usize {
    holds.get(key).copied().unwrap_or(0)
}

/// How many lanes `config`'s tunnel runs on this runtime (see [`lanes`]).
fn lanes_for(config: &Config) -> usize {
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    lane_count(lanes::peers_at_once(config), workers)
}

/// The environment variable that forces TUN offloads off (`off`), whatever the config says.
pub const OFFLOADS_ENV: &str = "RENKEI_TUN_OFFLOADS";

/// Why offloads are not even tried: the config or the environment switched them off.
fn offloads_switched_off(tunnel: &crate::config::TunnelConfig) -> Option<&'static str> {
    switched_off_by(tunnel.offloads, std::env::var(OFFLOADS_ENV).ok().as_deref())
}

/// [`offloads_switched_off`] given the config's `offloads` and the environment's value.
fn switched_off_by(config_on: bool, env: Option<&str>) -> Option<&'static str> {
    if env.is_some_and(|v| v.eq_ignore_ascii_case("off")) {
        Some("switched off by RENKEI_TUN_OFFLOADS=off")
    } else if !config_on {
        Some("switched off in the config: [tunnel] offloads = false")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::policy::Action;

    #[test]
    fn net1_the_environment_or_the_config_switches_tun_offloads_off() {
        assert_eq!(super::switched_off_by(true, None), None);
        assert_eq!(super::switched_off_by(true, Some("on")), None);
        assert_eq!(
            super::switched_off_by(true, Some("OFF")),
            Some("switched off by RENKEI_TUN_OFFLOADS=off")
        );
        assert_eq!(
            super::switched_off_by(false, None),
            Some("switched off in the config: [tunnel] offloads = false")
        );
    }

    use super::*;

    const DC: [u8; 32] = [1; 32];
    const OTHER: [u8; 32] = [2; 32];
    const TIMERS: PolicyTimers = PolicyTimers {
        idle_timeout: Duration::from_secs(10),
        handshake_alarm: Duration::from_secs(180),
        liveness: None,
    };

    /// A new plane's on-demand peer with the counted holds replayed, as `replay_holds` does.
    fn replayed(holds: &HoldCounts, key: &[u8; 32], now: Instant) -> Policy {
        let mut policy = Policy::new(Mode::OnDemand, TIMERS, now);
        policy.handle(Event::Start, now);
        for _ in 0..holds_on(holds, key) {
            policy.handle(Event::HoldAcquired, now);
        }
        policy
    }

    #[test]
    fn hold_counts_follow_guards_and_forget_peers_no_longer_held() {
        let mut holds = HoldCounts::new();
        count_in(&mut holds, DC);
        count_in(&mut holds, DC);
        count_in(&mut holds, OTHER);
        assert_eq!((holds_on(&holds, &DC), holds_on(&holds, &OTHER)), (2, 1));
        count_out(&mut holds, &OTHER);
        assert!(
            !holds.contains_key(&OTHER),
            "a peer without holds leaves the map"
        );
        count_out(&mut holds, &OTHER);
        assert_eq!(
            holds_on(&holds, &OTHER),
            0,
            "a stray release never goes below zero"
        );
        count_out(&mut holds, &DC);
        assert_eq!(holds_on(&holds, &DC), 1);
    }

    #[test]
    fn net7_holds_replayed_on_a_rebuilt_peer_keep_it_up_until_the_last_guard_goes() {
        let t0 = Instant::now();
        let secs = Duration::from_secs;
        let mut holds = HoldCounts::new();
        count_in(&mut holds, DC);
        count_in(&mut holds, DC);
        // The restart: a new peer, the two open connections' holds replayed onto it.
        let mut p = replayed(&holds, &DC, t0);
        assert_eq!(p.holds(), 2);
        assert_eq!(p.state(), LinkState::Connecting, "the replay brings it up");
        p.handle(Event::HandshakeCompleted, t0 + secs(1));
        assert_eq!(
            p.handle(Event::Tick, t0 + secs(100)),
            None,
            "quiet but held"
        );
        assert_eq!(p.state(), LinkState::Up);
        // Both guards go, each released on the new peer.
        for _ in 0..2 {
            count_out(&mut holds, &DC);
            p.handle(Event::HoldReleased, t0 + secs(100));
        }
        assert_eq!((holds_on(&holds, &DC), p.holds()), (0, 0));
        assert_eq!(
            p.handle(Event::Tick, t0 + secs(110)),
            Some(Action::DropSession)
        );
        // A peer nobody holds is rebuilt idle.
        let q = replayed(&holds, &DC, t0);
        assert_eq!((q.holds(), q.state()), (0, LinkState::Idle));
    }
}
