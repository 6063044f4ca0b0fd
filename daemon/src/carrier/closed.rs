//! The closed-network carrier (専用線 / IP-VPN): no tunnel. The box reaches the data centre
//! over its routed WAN interface on a network only the regional network's members are on.
//! Nothing is brought up, so the policies mean something else here:
//!
//! - always_on: probe the data centre (a TCP connect to `closed.probe_endpoint`, bound to
//!   `closed.interface` and from `closed.address`, so it proves this path and no other) every
//!   `probe_interval_secs`; the one link "data centre" is up while the last probe connected,
//!   down after a failed one, and in alarm once no probe connected for `alarm_after_secs`.
//! - on_demand: nothing to bring up and nothing probed (a connection's own TLS handshake is
//!   the proof); the link stays idle and `demand` succeeds for any data-centre destination.
//!
//! There is no handshake to prove that the operator still accepts the box: an authenticated
//! management request that arrived after a moment ([`OperatorContact`]) is that proof.
//!
//! The box must not route between the LAN and the closed network (NET-8): the kernel's
//! `ip_forward` is read with every snapshot and every [`HOST_CHECK_INTERVAL_SECS`]; its changes
//! are watched ([`ClosedHandle::watch_ip_forward`]) so the status side reports it on as an event.
//!
//! The link's byte counters are the closed interface's own ([`super::counters`]), read on the
//! same schedule: they count every byte on the interface, renkei's or not.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::net::TcpSocket;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::{ClosedConfig, Config, PolicyMode};
use crate::state::moment::Moment;
use crate::state::operator_contact::OperatorContact;

use super::counters::{CounterReader, InterfaceCounters};
use super::snapshot::{
    CarrierBackend, CarrierKind, CarrierSnapshot, ClosedCarrier, ClosedLink, DropCounts,
    LinkBackend, LinkReason, LinkSnapshot, LinkState,
};
use super::{DemandError, Reconfigured};

/// Where Linux says whether it forwards IPv4 packets between interfaces.
pub const FORWARDING_SWITCHES: [&str; 2] = [
    "/proc/sys/net/ipv4/ip_forward",
    "/proc/sys/net/ipv6/conf/all/forwarding",
];

/// How often the interface's byte counters and the kernel's forwarding switch are read, in
/// seconds, whatever the mode (an on-demand box probes nothing but still reports both).
pub const HOST_CHECK_INTERVAL_SECS: u64 = 2;

/// The name of the one link a closed-network box has.
pub const LINK_NAME: &str = "data centre";

/// Why the closed-network carrier could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClosedError {
    /// The config has no `[closed]` section.
    #[error("the config has no [closed] section")]
    NotConfigured,
}

/// What the carrier is built from: a config change that leaves it equal changes nothing.
#[derive(Debug, Clone, PartialEq)]
struct Settings {
    closed: ClosedConfig,
    mode: PolicyMode,
}

impl Settings {
    fn of(config: &Config) -> Result<Self, ClosedError> {
        Ok(Settings {
            closed: config.closed.clone().ok_or(ClosedError::NotConfigured)?,
            mode: config.policy_mode(),
        })
    }
}

/// The running closed-network carrier: the probe task, when always-on.
pub struct Closed {
    handle: ClosedHandle,
    probe: Option<JoinHandle<()>>,
    /// Reads the interface counters and the forwarding switch.
    host_check: JoinHandle<()>,
}

impl Closed {
    /// Starts from `[closed]`; `contact` is where the management API notes operator requests.
    pub fn start(config: &Config, contact: OperatorContact) -> Result<Self, ClosedError> {
        let switches: Vec<PathBuf> = FORWARDING_SWITCHES.iter().map(PathBuf::from).collect();
        Self::start_with(config, contact, &switches)
    }

    /// [`Closed::start`] reading the forwarding switches from `forwarding_switches` (tests).
    pub fn start_with(
        config: &Config,
        contact: OperatorContact,
        forwarding_switches: &[PathBuf],
    ) -> Result<Self, ClosedError> {
        let settings = Settings::of(config)?;
        let (state, _) = watch::channel(initial_state(settings.mode));
        let (ip_forward, _) = watch::channel(read_forwarding(forwarding_switches));
        let handle = ClosedHandle {
            shared: Arc::new(Shared {
                record: Mutex::new(ProbeRecord::new(Instant::now())),
                settings: Mutex::new(settings),
                state,
                contact,
                forwarding_switches: forwarding_switches.to_vec(),
                ip_forward,
                counters: Mutex::new(InterfaceCounters::default()),
                alive: AtomicBool::new(true),
            }),
        };
        let host_check = tokio::spawn(host_check_loop(Arc::clone(&handle.shared)));
        let mut closed = Closed {
            handle,
            probe: None,
            host_check,
        };
        closed.start_probe();
        Ok(closed)
    }

    /// Applies a changed config: a new interface is a new device (listeners bind again),
    /// anything else restarts the probe schedule on the same device.
    pub fn reconfigure(&mut self, config: &Config) -> Result<Reconfigured, ClosedError> {
        let settings = Settings::of(config)?;
        let shared = &self.handle.shared;
        let old = shared.settings().clone();
        if old == settings {
            return Ok(Reconfigured::Unchanged);
        }
        let outcome = if old.closed.interface == settings.closed.interface {
            Reconfigured::Restarted
        } else {
            Reconfigured::NewDevice
        };
        if let Some(task) = self.probe.take() {
            task.abort();
        }
        *shared.record() = ProbeRecord::new(Instant::now());
        shared.state.send_replace(initial_state(settings.mode));
        *shared
            .settings
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = settings;
        self.start_probe();
        Ok(outcome)
    }

    fn start_probe(&mut self) {
        let settings = self.handle.shared.settings().clone();
        match (settings.mode, settings.closed.probe_endpoint) {
            (PolicyMode::AlwaysOn, Some(endpoint)) => {
                self.probe = Some(tokio::spawn(probe_loop(
                    Arc::clone(&self.handle.shared),
                    endpoint,
                    settings.closed,
                )));
            }
            // The hub without a probe: facilities dial it, the link is as up as its interface.
            (PolicyMode::AlwaysOn, None) => {
                self.handle.shared.state.send_replace(LinkState::Up);
            }
            (PolicyMode::OnDemand, _) => {}
        }
    }

    /// The handle the rest of the daemon uses.
    pub fn handle(&self) -> ClosedHandle {
        self.handle.clone()
    }

    /// Stops probing and reading. Nothing else was set up on the box.
    pub async fn shutdown(mut self) {
        if let Some(task) = self.probe.take() {
            task.abort();
            let _ = task.await;
        }
        self.host_check.abort();
    }
}

impl Drop for Closed {
    fn drop(&mut self) {
        if let Some(task) = self.probe.take() {
            task.abort();
        }
        self.host_check.abort();
    }
}

fn initial_state(mode: PolicyMode) -> LinkState {
    match mode {
        PolicyMode::AlwaysOn => LinkState::Connecting,
        PolicyMode::OnDemand => LinkState::Idle,
    }
}

/// A clonable handle on the running closed-network carrier.
#[derive(Clone)]
pub struct ClosedHandle {
    shared: Arc<Shared>,
}

struct Shared {
    settings: Mutex<Settings>,
    record: Mutex<ProbeRecord>,
    state: watch::Sender<LinkState>,
    contact: OperatorContact,
    /// The kernel's IPv4 and IPv6 forwarding switches.
    forwarding_switches: Vec<PathBuf>,
    /// The forwarding switch as last read (`None`: unreadable).
    ip_forward: watch::Sender<Option<bool>>,
    /// The closed interface's counters as last read.
    counters: Mutex<InterfaceCounters>,
    /// False once the probe task ended by a panic (for the systemd watchdog).
    alive: AtomicBool,
}

impl Shared {
    fn settings(&self) -> std::sync::MutexGuard<'_, Settings> {
        self.settings.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn counters(&self) -> std::sync::MutexGuard<'_, InterfaceCounters> {
        self.counters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn record(&self) -> std::sync::MutexGuard<'_, ProbeRecord> {
        self.record.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn note(&self, outcome: Result<(), String>) {
        let state = self
            .record()
            .note(Instant::now(), SystemTime::now(), outcome);
        self.state.send_if_modified(|current| {
            let changed = *current != state;
            *current = state;
            changed
        });
    }
}

/// What the probes found so far.
#[derive(Debug, Clone)]
struct ProbeRecord {
    /// When probing started: the alarm counts from here until a first probe connects.
    since: Instant,
    /// The last probe that connected, on the monotonic and the wall clock.
    last_success: Option<(Instant, SystemTime)>,
    /// Why the last probe failed, when it did.
    last_error: Option<String>,
    probes_sent: u64,
    probes_failed: u64,
    state: LinkState,
}

impl ProbeRecord {
    fn new(since: Instant) -> Self {
        ProbeRecord {
            since,
            last_success: None,
            last_error: None,
            probes_sent: 0,
            probes_failed: 0,
            state: LinkState::Connecting,
        }
    }

    /// Notes one probe's outcome; returns the link state it leaves.
    fn note(&mut self, now: Instant, wall: SystemTime, outcome: Result<(), String>) -> LinkState {
        self.probes_sent += 1;
        match outcome {
            Ok(()) => {
                self.last_success = Some((now, wall));
                self.last_error = None;
                self.state = LinkState::Up;
            }
            Err(why) => {
                self.probes_failed += 1;
                self.last_error = Some(why);
                self.state = LinkState::Down;
            }
        }
        self.state
    }

    /// Always-on and no probe connected for `alarm_after` (counting from the start).
    fn alarm(&self, now: Instant, alarm_after: Duration) -> bool {
        let reference = self.last_success.map_or(self.since, |(at, _)| at);
        now.saturating_duration_since(reference) >= alarm_after
    }
}

/// Sets the carrier dead when the probe task unwinds.
struct AliveGuard(Arc<Shared>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.alive.store(false, Ordering::Relaxed);
        }
    }
}

/// Probes at once, then every `probe_interval_secs` (a slow probe delays the next one rather
/// than stacking them).
async fn probe_loop(shared: Arc<Shared>, endpoint: SocketAddr, closed: ClosedConfig) {
    let _alive = AliveGuard(Arc::clone(&shared));
    let every = Duration::from_secs(closed.probe_interval_secs);
    let timeout = Duration::from_secs(closed.probe_timeout_secs);
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let from = ProbeSource {
        interface: closed.interface.clone(),
        address: closed.address.addr(),
    };
    loop {
        ticks.tick().await;
        let outcome = probe(endpoint, &from, timeout).await;
        if let Err(why) = &outcome {
            tracing::debug!(endpoint = %endpoint, error = %why, "data-centre probe failed");
        }
        shared.note(outcome);
    }
}

/// Where a probe leaves from: the closed network's interface and the box's address on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSource {
    /// The device the probe is bound to (`SO_BINDTODEVICE`): no other route may carry it.
    pub interface: String,
    /// The source address: the data centre sees the box's closed-network address.
    pub address: IpAddr,
}

/// One reachability probe: a TCP connection to `endpoint` from `from`, opened within `timeout`
/// (and closed at once). Says why it failed.
pub async fn probe(
    endpoint: SocketAddr,
    from: &ProbeSource,
    timeout: Duration,
) -> Result<(), String> {
    let socket = bound_socket(endpoint, from).map_err(|e| {
        format!(
            "{endpoint}: cannot bind the probe to {} ({}): {e}",
            from.interface, from.address
        )
    })?;
    match tokio::time::timeout(timeout, socket.connect(endpoint)).await {
        Ok(Ok(_stream)) => Ok(()),
        Ok(Err(e)) => Err(format!("{endpoint}: {e}")),
        Err(_) => Err(format!("{endpoint}: no answer within {timeout:?}")),
    }
}

/// A TCP socket bound to `from`'s device and address. The device binding makes the kernel
/// route the probe only through that interface: were the data centre also reachable another
/// way (a default route, a misconfigured detour), the probe still proves the closed network.
fn bound_socket(endpoint: SocketAddr, from: &ProbeSource) -> std::io::Result<TcpSocket> {
    use nix::sys::socket::{setsockopt, sockopt};
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(endpoint),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    setsockopt(
        &socket,
        sockopt::BindToDevice,
        &std::ffi::OsString::from(&from.interface),
    )
    .map_err(std::io::Error::from)?;
    socket.bind(&SocketAddr::new(from.address, 0).into())?;
    socket.set_nonblocking(true)?;
    Ok(TcpSocket::from_std_stream(socket.into()))
}

/// Whether the kernel forwards by any of `switches` (IPv4 or IPv6): on when one reads on, off
/// when every one that can be read is off, `None` when none can be read.
pub fn read_forwarding(switches: &[PathBuf]) -> Option<bool> {
    let read: Vec<bool> = switches.iter().filter_map(|f| read_ip_forward(f)).collect();
    if read.is_empty() {
        None
    } else {
        Some(read.contains(&true))
    }
}

/// Reads one of the kernel's forwarding switches; `None` when it cannot be read.
pub fn read_ip_forward(file: &Path) -> Option<bool> {
    match std::fs::read_to_string(file).ok()?.trim() {
        "0" => Some(false),
        "" => None,
        _ => Some(true),
    }
}

/// Reads the forwarding switch and the interface counters now and every
/// [`HOST_CHECK_INTERVAL_SECS`]. Counters that cannot be read keep their last value (an
/// interface that went away comes back with its name).
async fn host_check_loop(shared: Arc<Shared>) {
    let mut ticks = tokio::time::interval(Duration::from_secs(HOST_CHECK_INTERVAL_SECS));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let reader = CounterReader::open()
        .inspect_err(|e| tracing::warn!(error = %e, "closed interface counters unavailable"))
        .ok();
    loop {
        ticks.tick().await;
        let forwarding = read_forwarding(&shared.forwarding_switches);
        shared.ip_forward.send_if_modified(|current| {
            let changed = *current != forwarding;
            *current = forwarding;
            changed
        });
        let Some(reader) = &reader else {
            continue;
        };
        let interface = shared.settings().closed.interface.clone();
        match reader.read(&interface).await {
            Ok(counters) => *shared.counters() = counters,
            Err(e) => tracing::debug!(error = %e, "closed interface counters not read"),
        }
    }
}

impl ClosedHandle {
    fn routes(&self, destination: IpAddr) -> bool {
        let destination = destination.to_canonical();
        self.shared
            .settings()
            .closed
            .data_centre_prefixes
            .iter()
            .any(|n| n.contains(&destination))
    }

    /// A path to `destination`: nothing to bring up, so it is there for any data-centre
    /// destination and refused for anything else (the box dials only the data centre).
    pub fn demand(&self, destination: IpAddr) -> Result<(), DemandError> {
        if self.routes(destination) {
            Ok(())
        } else {
            Err(DemandError::NoRoute(destination))
        }
    }

    /// True when an authenticated operator request arrived at or after `since`.
    pub fn operator_reached_since(&self, since: &Moment) -> bool {
        self.shared.contact.reached_since(since)
    }

    /// Watches the state of the data-centre link when `destination` is in the data centre.
    pub fn watch_state(&self, destination: IpAddr) -> Option<watch::Receiver<LinkState>> {
        self.routes(destination)
            .then(|| self.shared.state.subscribe())
    }

    /// Watches the kernel's forwarding switch (`None`: unreadable), as read every
    /// [`HOST_CHECK_INTERVAL_SECS`].
    pub fn watch_ip_forward(&self) -> watch::Receiver<Option<bool>> {
        self.shared.ip_forward.subscribe()
    }

    /// True while the probe task runs (or there is none to run).
    pub fn is_alive(&self) -> bool {
        self.shared.alive.load(Ordering::Relaxed)
    }

    /// The carrier's view for the page, the metrics and tests.
    pub fn snapshot(&self) -> CarrierSnapshot {
        let settings = self.shared.settings().clone();
        let record = self.shared.record().clone();
        let counters = *self.shared.counters();
        let now = Instant::now();
        let probing =
            settings.mode == PolicyMode::AlwaysOn && settings.closed.probe_endpoint.is_some();
        let state = *self.shared.state.borrow();
        let alarm =
            probing && record.alarm(now, Duration::from_secs(settings.closed.alarm_after_secs));
        let (reason_code, why) = match (probing, state, &record.last_error) {
            (false, _, _) if settings.mode == PolicyMode::AlwaysOn => {
                (LinkReason::NoProbeEndpoint, None)
            }
            (false, _, _) => (LinkReason::NotProbed, None),
            (true, LinkState::Up, _) => (LinkReason::ProbeAnswered, None),
            (true, _, Some(why)) => (LinkReason::ProbeFailed, Some(why)),
            (true, _, None) => (LinkReason::Probing, None),
        };
        let reason = match why {
            Some(why) => format!("{}: {why}", reason_code.text()),
            None => reason_code.text().to_string(),
        };
        let link = LinkSnapshot {
            name: LINK_NAME.to_string(),
            state,
            reason,
            reason_code,
            alarm,
            last_reached: record.last_success.map(|(_, wall)| wall),
            last_reached_age_secs: record
                .last_success
                .map(|(at, _)| now.saturating_duration_since(at).as_secs()),
            holds: 0,
            tx_bytes: counters.tx_bytes,
            rx_bytes: counters.rx_bytes,
            backend: LinkBackend::Closed(ClosedLink {
                probe_endpoint: settings.closed.probe_endpoint,
                data_centre_prefixes: settings.closed.data_centre_prefixes.clone(),
                probes_sent: record.probes_sent,
                probes_failed: record.probes_failed,
            }),
        };
        CarrierSnapshot {
            kind: CarrierKind::Closed,
            interface: settings.closed.interface.clone(),
            address: settings.closed.address,
            policy: settings.mode.as_str(),
            state,
            alarm,
            peers: vec![link],
            drops: DropCounts::default(),
            backend: CarrierBackend::Closed(ClosedCarrier {
                ip_forward: read_forwarding(&self.shared.forwarding_switches),
            }),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::{Facility, Meta, Paths, Role};
    use tokio::net::TcpListener;

    pub(crate) fn config(endpoint: SocketAddr, mode: PolicyMode) -> Config {
        Config {
            meta: Meta {
                version: 1,
                description: None,
                box_identity: None,
            },
            facility: Facility {
                name: "clinic".to_string(),
                role: Role::Viewing,
            },
            paths: Paths::default(),
            tunnel: None,
            closed: Some(ClosedConfig {
                interface: "lo".to_string(),
                address: "127.0.0.2/8".parse().expect("net"),
                data_centre_prefixes: vec!["127.0.0.0/8".parse().expect("net")],
                mode: Some(mode),
                probe_endpoint: Some(endpoint),
                probe_interval_secs: 30,
                probe_timeout_secs: 5,
                alarm_after_secs: 90,
            }),
            ipsec: None,
            tls: None,
            services: Vec::new(),
            status: None,
            management: None,
            update: None,
            time: None,
            logs: None,
        }
    }

    /// A forwarding switch file with `value`, removed with the returned directory.
    pub(crate) fn ip_forward(value: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("ip_forward");
        std::fs::write(&file, value).expect("write");
        (dir, file)
    }

    /// Waits (on the paused clock: no real time passes) until the probe count reaches `n`.
    async fn probes_reach(handle: &ClosedHandle, n: u64) -> LinkSnapshot {
        for _ in 0..1000 {
            let snapshot = handle.snapshot();
            let link = snapshot.peers[0].clone();
            if let LinkBackend::Closed(c) = &link.backend {
                if c.probes_sent >= n {
                    return link;
                }
            }
            tokio::task::yield_now().await;
        }
        panic!("probe {n} did not happen: {:?}", handle.snapshot());
    }

    fn probes_sent(link: &LinkSnapshot) -> u64 {
        match &link.backend {
            LinkBackend::Closed(c) => c.probes_sent,
            LinkBackend::WireGuard(_) | LinkBackend::Ipsec(_) => panic!("not a closed link"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn net9_always_on_probes_every_interval_and_alarms_after_the_threshold() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let endpoint = listener.local_addr().expect("addr");
        let (_dir, forward) = ip_forward("0\n");
        let closed = Closed::start_with(
            &config(endpoint, PolicyMode::AlwaysOn),
            OperatorContact::new(),
            std::slice::from_ref(&forward),
        )
        .expect("start");
        let handle = closed.handle();

        let first = probes_reach(&handle, 1).await;
        assert_eq!(first.state, LinkState::Up, "{first:?}");
        assert!(!first.alarm);
        assert!(first.last_reached.is_some());
        let snapshot = handle.snapshot();
        assert_eq!(
            (snapshot.kind, snapshot.state, snapshot.policy),
            (CarrierKind::Closed, LinkState::Up, "always_on")
        );
        let CarrierBackend::Closed(backend) = &snapshot.backend else {
            panic!("a closed backend: {snapshot:?}");
        };
        assert_eq!(backend.ip_forward, Some(false));

        // No second probe before the interval is over.
        tokio::time::advance(Duration::from_secs(29)).await;
        tokio::task::yield_now().await;
        assert_eq!(probes_sent(&handle.snapshot().peers[0]), 1);

        // The data centre goes away: the next probe fails, the link is down at once, the
        // alarm waits for alarm_after_secs since the last probe that connected.
        drop(listener);
        tokio::time::advance(Duration::from_secs(1)).await;
        let second = probes_reach(&handle, 2).await;
        assert_eq!(second.state, LinkState::Down, "{second:?}");
        assert!(
            !second.alarm,
            "30 s without an answer is not 90: {second:?}"
        );
        assert!(second.reason.starts_with("probe failed"), "{second:?}");

        tokio::time::advance(Duration::from_secs(30)).await;
        let third = probes_reach(&handle, 3).await;
        assert!(!third.alarm, "60 s: {third:?}");
        tokio::time::advance(Duration::from_secs(30)).await;
        let fourth = probes_reach(&handle, 4).await;
        assert_eq!(fourth.state, LinkState::Down);
        assert!(fourth.alarm, "90 s without an answer: {fourth:?}");
        assert!(handle.snapshot().alarm);
        closed.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn net9_on_demand_has_nothing_to_bring_up_and_probes_nothing() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let endpoint = listener.local_addr().expect("addr");
        let (_dir, forward) = ip_forward("1\n");
        let closed = Closed::start_with(
            &config(endpoint, PolicyMode::OnDemand),
            OperatorContact::new(),
            std::slice::from_ref(&forward),
        )
        .expect("start");
        let handle = closed.handle();
        tokio::time::advance(Duration::from_secs(3600)).await;
        let snapshot = handle.snapshot();
        let link = &snapshot.peers[0];
        assert_eq!(
            (link.state, link.alarm, probes_sent(link)),
            (LinkState::Idle, false, 0)
        );
        assert_eq!(snapshot.policy, "on_demand");
        let CarrierBackend::Closed(backend) = &snapshot.backend else {
            panic!("a closed backend");
        };
        assert_eq!(backend.ip_forward, Some(true), "forwarding on is shown");
        assert_eq!(handle.demand("127.0.0.1".parse().expect("ip")), Ok(()));
        let outside: IpAddr = "198.18.99.1".parse().expect("ip");
        assert_eq!(handle.demand(outside), Err(DemandError::NoRoute(outside)));
        assert!(handle.watch_state(outside).is_none());
        closed.shutdown().await;
    }

    /// IPv6 forwarding on is forwarding on, though IPv4's switch is off; a switch that cannot be
    /// read does not hide the other.
    #[test]
    fn net8_forwarding_is_on_when_either_switch_is_on() {
        let (_v4_dir, v4_off) = ip_forward("0\n");
        let (_v6_dir, v6_on) = ip_forward("1\n");
        let missing = PathBuf::from("/nonexistent/forwarding");
        assert_eq!(read_forwarding(&[v4_off.clone(), v6_on]), Some(true));
        assert_eq!(read_forwarding(&[v4_off, missing.clone()]), Some(false));
        assert_eq!(read_forwarding(&[missing]), None);
    }

    /// The hub has nothing to probe (facilities dial it): its link is up, never alarmed.
    #[tokio::test(start_paused = true)]
    async fn net9_a_hub_without_a_probe_endpoint_is_up_and_probes_nothing() {
        let (_dir, forward) = ip_forward("0\n");
        let mut hub = config("127.0.0.1:9".parse().expect("addr"), PolicyMode::AlwaysOn);
        hub.facility.role = Role::Hub;
        if let Some(closed) = hub.closed.as_mut() {
            closed.probe_endpoint = None;
        }
        let closed =
            Closed::start_with(&hub, OperatorContact::new(), std::slice::from_ref(&forward))
                .expect("start");
        let handle = closed.handle();
        tokio::time::advance(Duration::from_secs(3600)).await;
        let snapshot = handle.snapshot();
        let link = &snapshot.peers[0];
        assert_eq!(
            (link.state, link.alarm, probes_sent(link)),
            (LinkState::Up, false, 0),
            "{}",
            link.reason
        );
        closed.shutdown().await;
    }

    fn from_lo() -> ProbeSource {
        ProbeSource {
            interface: "lo".to_string(),
            address: "127.0.0.2".parse().expect("ip"),
        }
    }

    #[tokio::test]
    async fn net9_the_probe_connects_to_a_listener_and_fails_on_a_closed_port() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let endpoint = listener.local_addr().expect("addr");
        let from = from_lo();
        assert_eq!(probe(endpoint, &from, Duration::from_secs(5)).await, Ok(()));
        drop(listener);
        let refused = probe(endpoint, &from, Duration::from_secs(5)).await;
        assert!(refused.is_err(), "nobody listens any more: {refused:?}");
    }

    /// The probe leaves from the closed network's address, bound to its interface: the
    /// listener sees that address, and a probe bound to a device that cannot reach the
    /// endpoint fails instead of finding another route.
    #[tokio::test]
    async fn net9_the_probe_leaves_from_the_configured_address_and_interface_only() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let endpoint = listener.local_addr().expect("addr");
        let from = from_lo();
        assert_eq!(probe(endpoint, &from, Duration::from_secs(5)).await, Ok(()));
        let (_, peer) = listener.accept().await.expect("the probe's connection");
        assert_eq!(peer.ip(), from.address, "the probe's source address");

        let elsewhere = ProbeSource {
            interface: "renkei-none".to_string(),
            address: from.address,
        };
        let unbound = probe(endpoint, &elsewhere, Duration::from_secs(5)).await;
        assert!(
            unbound.as_ref().is_err_and(|e| e.contains("cannot bind")),
            "a probe bound to a missing device must fail: {unbound:?}"
        );
    }

    #[tokio::test]
    async fn net9_the_operator_is_reached_when_a_request_arrived_after_the_moment() {
        let contact = OperatorContact::new();
        let (_dir, forward) = ip_forward("0");
        let closed = Closed::start_with(
            &config("127.0.0.1:9".parse().expect("addr"), PolicyMode::OnDemand),
            contact.clone(),
            std::slice::from_ref(&forward),
        )
        .expect("start");
        let applied = Moment::now();
        assert!(!closed.handle().operator_reached_since(&applied));
        contact.record(Moment {
            instant: applied.instant + Duration::from_millis(1),
            wall: applied.wall,
        });
        assert!(closed.handle().operator_reached_since(&applied));
        closed.shutdown().await;
    }

    #[tokio::test]
    async fn net9_reconfigure_says_what_changed() {
        let (_dir, forward) = ip_forward("0");
        let endpoint: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        let base = config(endpoint, PolicyMode::OnDemand);
        let mut closed = Closed::start_with(
            &base,
            OperatorContact::new(),
            std::slice::from_ref(&forward),
        )
        .expect("start");
        assert_eq!(
            closed.reconfigure(&base).ok(),
            Some(Reconfigured::Unchanged)
        );
        let mut slower = base.clone();
        if let Some(c) = &mut slower.closed {
            c.alarm_after_secs = 300;
        }
        assert_eq!(
            closed.reconfigure(&slower).ok(),
            Some(Reconfigured::Restarted)
        );
        let mut moved = slower.clone();
        if let Some(c) = &mut moved.closed {
            c.interface = "eth1".to_string();
        }
        assert_eq!(
            closed.reconfigure(&moved).ok(),
            Some(Reconfigured::NewDevice)
        );
        assert_eq!(closed.handle().snapshot().interface, "eth1");
        closed.shutdown().await;
    }
}
