//! A chaos WAN for the lab: a userspace UDP relay between the facility boxes and the hub that
//! loses, duplicates, reorders, delays and corrupts WireGuard datagrams (the lab's kernel has
//! no netem, so the impairment cannot live in the kernel).
//!
//! ```text
//!   hospital 198.18.0.10 --+                                   +--> hub 198.18.0.1:51820
//!                          +--> relay 198.18.0.250:51820 (wan ns, on br0)
//!   clinic   198.18.0.20 --+    one upstream socket per box ---+
//! ```
//! A box is routed through it by pointing its `dc` peer's endpoint at the relay
//! ([`route_through`]). The relay keeps one upstream socket per box (a NAT-like mapping), so
//! the hub sees one endpoint per facility and its answers go back the same way. Each direction
//! has its own [`Impairment`], changeable while the relay runs ([`ChaosRelay::set`]), so a test
//! brings the chain up on a clean link and impairs only the step under test. Every decision
//! comes from a seeded PRNG: the seed is printed when the relay starts (a failing test's output
//! shows it) and `RENKEI_CHAOS_SEED` sets it ([`seed_from_env`]). The relay counts what it did
//! ([`ChaosCounts`]) so a test checks that the impairment really happened. Dropping it stops its
//! thread and closes its sockets, also when a test panics.

pub mod impairment;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};

use renkei::config::Config;

pub use impairment::{Burst, DirectionCounts, Impairer, Impairment, XorShift};

use crate::lab::{Lab, HUB_PORT, PRIMARY_HUB_PEER};
use crate::netns::Namespace;
use crate::Node;

/// The relay's address on the lab's WAN bridge (in the WAN namespace).
pub const RELAY_ADDRESS: &str = "198.18.0.250";
/// The relay's port (the hub's, so an endpoint reads the same apart from the address).
pub const RELAY_PORT: u16 = HUB_PORT;
/// Most boxes one relay maps; datagrams from further sources are ignored.
const MAX_CLIENTS: usize = 64;
/// Largest datagram the relay carries (UDP's maximum).
const MAX_DATAGRAM: usize = 65_535;
/// How long the relay's thread may take to bind its socket, or to take up a new impairment.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// The environment variable that fixes the relay's seed, to repeat a run's decisions.
pub const SEED_VARIABLE: &str = "RENKEI_CHAOS_SEED";

/// The impairments of one box's link, per direction.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LinkImpairment {
    /// Datagrams from the boxes to the hub.
    pub to_hub: Impairment,
    /// Datagrams from the hub to the boxes.
    pub to_box: Impairment,
}

impl LinkImpairment {
    /// The same impairment both ways.
    pub fn both(impairment: Impairment) -> LinkImpairment {
        LinkImpairment {
            to_hub: impairment,
            to_box: impairment,
        }
    }
}

/// What the relay did so far, per direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChaosCounts {
    /// Boxes the relay maps (one upstream socket each).
    pub clients: usize,
    /// Datagrams from the boxes to the hub.
    pub to_hub: DirectionCounts,
    /// Datagrams from the hub to the boxes.
    pub to_box: DirectionCounts,
}

impl ChaosCounts {
    /// Both directions together.
    pub fn total(&self) -> DirectionCounts {
        self.to_hub.plus(&self.to_box)
    }

    /// Counts since `earlier` (clients as now).
    pub fn since(&self, earlier: &ChaosCounts) -> ChaosCounts {
        ChaosCounts {
            clients: self.clients,
            to_hub: self.to_hub.since(&earlier.to_hub),
            to_box: self.to_box.since(&earlier.to_box),
        }
    }
}

/// The relay's seed: `RENKEI_CHAOS_SEED` when set (to repeat a run), else from the clock.
pub fn seed_from_env() -> anyhow::Result<u64> {
    let text = std::env::var(SEED_VARIABLE).unwrap_or_default();
    let text = text.trim();
    if !text.is_empty() {
        return text
            .parse()
            .with_context(|| format!("{SEED_VARIABLE}={text:?} is not a number"));
    }
    Ok(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1))
}

/// The environment variable that sets the boxes' TCP congestion control for a run (`reno`,
/// `cubic`, `bbr`: any the kernel has built in, see `tcp_available_congestion_control`); unset or
/// empty, the kernel's default stays.
/// Transfer times under loss depend on it far more than on anything renkei does, so a run on
/// a host whose default is `bbr` can repeat the figures of a loss-sensitive one.
pub const TCP_CC_VARIABLE: &str = "RENKEI_CHAOS_TCP_CC";

/// Applies [`TCP_CC_VARIABLE`] to every box's namespace (where the proxies' TCP legs across
/// the tunnels start and end) and returns the congestion control the boxes use.
pub fn tcp_congestion_control(lab: &Lab) -> anyhow::Result<String> {
    const KEY: &str = "net.ipv4.tcp_congestion_control";
    let wanted = std::env::var(TCP_CC_VARIABLE).unwrap_or_default();
    let wanted = wanted.trim();
    if !wanted.is_empty() {
        let boxes: Vec<&Namespace> = Node::ALL.iter().map(|&node| lab.ns(node)).collect();
        crate::lab::set_tcp_congestion_control_in(&boxes, wanted)
            .with_context(|| format!("{TCP_CC_VARIABLE}={wanted}"))?;
    }
    let used = lab.ns(Node::Hub).exec("sysctl", &["-n", KEY])?;
    Ok(used.trim().to_string())
}

/// Points a facility's `dc` peer at the relay instead of the hub.
pub fn route_through(config: &mut Config, relay: SocketAddr) -> anyhow::Result<()> {
    let peer = config
        .tunnel
        .as_mut()
        .and_then(|tunnel| tunnel.peers.iter_mut().find(|p| p.name == PRIMARY_HUB_PEER))
        .context("a facility config with a [tunnel] peer \"dc\"")?;
    peer.endpoint = Some(relay.to_string());
    Ok(())
}

/// Puts [`RELAY_ADDRESS`] on the lab's WAN bridge (once), so relays can listen there.
pub fn put_relay_address(lab: &Lab) -> anyhow::Result<()> {
    let wan = lab.wan();
    let present = wan.ip(&["-4", "addr", "show", "dev", "br0"])?;
    if !present.contains(&format!("inet {RELAY_ADDRESS}/")) {
        wan.ip(&["addr", "add", &format!("{RELAY_ADDRESS}/24"), "dev", "br0"])?;
    }
    Ok(())
}

/// The impairment a relay is told to take up, numbered so [`ChaosRelay::set`] knows when the
/// relay's thread has.
type Numbered = (u64, LinkImpairment);

/// What the relay's thread shares with the test: its counts and the number of the last
/// impairment it took up.
#[derive(Debug, Default)]
struct Shared {
    counts: ChaosCounts,
    applied: u64,
}

/// A running chaos relay. Dropping it stops it.
pub struct ChaosRelay {
    address: SocketAddr,
    seed: u64,
    impairment: watch::Sender<Numbered>,
    generation: AtomicU64,
    shared: Arc<Mutex<Shared>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ChaosRelay {
    /// Starts a relay in the lab's WAN namespace at [`RELAY_ADDRESS`]:[`RELAY_PORT`] (the
    /// address is put on the WAN bridge) towards the hub's WireGuard port.
    pub fn in_wan(lab: &Lab, link: LinkImpairment, seed: u64) -> anyhow::Result<ChaosRelay> {
        put_relay_address(lab)?;
        let listen: SocketAddr = format!("{RELAY_ADDRESS}:{RELAY_PORT}").parse()?;
        let hub: SocketAddr = format!("{}:{HUB_PORT}", Node::Hub.wan_address()).parse()?;
        ChaosRelay::start(lab.wan(), listen, hub, link, seed)
    }

    /// Starts a relay inside `ns` listening on `listen` and forwarding to `upstream`, with
    /// `link`'s impairments and its randomness from `seed`.
    pub fn start(
        ns: &Namespace,
        listen: SocketAddr,
        upstream: SocketAddr,
        link: LinkImpairment,
        seed: u64,
    ) -> anyhow::Result<ChaosRelay> {
        eprintln!("chaos relay {listen} -> {upstream}: seed {seed} ({SEED_VARIABLE}={seed} repeats its decisions)");
        let (impairment, impairment_rx) = watch::channel((0, link));
        let (stop, stop_rx) = oneshot::channel();
        let (ready, ready_rx) = std::sync::mpsc::channel();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let path = format!("/run/netns/{}", ns.name());
        let relay_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("chaos relay {listen}"))
            .spawn(move || {
                let relay = Relay {
                    upstream,
                    impairment: impairment_rx,
                    stop: stop_rx,
                    seed,
                    shared: relay_shared,
                };
                relay.run_in(&path, listen, ready)
            })?;
        let mut relay = ChaosRelay {
            address: listen,
            seed,
            impairment,
            generation: AtomicU64::new(0),
            shared,
            stop: Some(stop),
            thread: Some(thread),
        };
        match ready_rx.recv_timeout(START_TIMEOUT) {
            Ok(Ok(())) => Ok(relay),
            Ok(Err(e)) => Err(e),
            Err(_) => {
                relay.shut_down();
                anyhow::bail!("the chaos relay at {listen} did not start")
            }
        }
    }

    /// Where boxes send their datagrams.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The seed of the relay's decisions.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Changes the impairment, returning once the relay has taken it up: every datagram that
    /// arrives after this returns meets the new impairment.
    pub fn set(&self, link: LinkImpairment) -> anyhow::Result<()> {
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        self.impairment.send_replace((generation, link));
        let applied = || (self.lock().applied >= generation).then_some(());
        crate::wait::wait_until(START_TIMEOUT, "the relay to take up an impairment", applied)
            .with_context(|| format!("chaos relay {}", self.address))
    }

    /// What the relay did so far.
    pub fn counts(&self) -> ChaosCounts {
        self.lock().counts
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for ChaosRelay {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// The relay's thread: its sockets, impairments and counts.
struct Relay {
    upstream: SocketAddr,
    impairment: watch::Receiver<Numbered>,
    stop: oneshot::Receiver<()>,
    seed: u64,
    shared: Arc<Mutex<Shared>>,
}

/// Takes up the newest impairment in both directions and returns its number.
fn take_up(
    impairment: &mut watch::Receiver<Numbered>,
    to_hub: &mut Impairer<usize>,
    to_box: &mut Impairer<usize>,
) -> u64 {
    let (generation, link) = *impairment.borrow_and_update();
    to_hub.set(link.to_hub);
    to_box.set(link.to_box);
    generation
}

/// One box the relay maps: its address and the upstream socket the hub sees for it.
struct Client {
    address: SocketAddr,
    upstream: Arc<UdpSocket>,
}

impl Relay {
    /// Enters the namespace at `ns_path`, binds `listen`, says so on `ready`, then relays until
    /// stopped.
    fn run_in(
        self,
        ns_path: &str,
        listen: SocketAddr,
        ready: std::sync::mpsc::Sender<anyhow::Result<()>>,
    ) {
        let setup = || -> anyhow::Result<(tokio::runtime::Runtime, UdpSocket)> {
            let file =
                std::fs::File::open(ns_path).with_context(|| format!("opening {ns_path}"))?;
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .with_context(|| format!("entering {ns_path}"))?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let front = runtime
                .block_on(UdpSocket::bind(listen))
                .with_context(|| format!("binding the chaos relay to {listen}"))?;
            Ok((runtime, front))
        };
        let (runtime, front) = match setup() {
            Ok(started) => started,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        let _ = ready.send(Ok(()));
        runtime.block_on(self.relay(front));
    }

    async fn relay(mut self, front: UdpSocket) {
        let (mut applied, link) = *self.impairment.borrow_and_update();
        let mut to_hub: Impairer<usize> = Impairer::new(link.to_hub, self.seed);
        let mut to_box: Impairer<usize> =
            Impairer::new(link.to_box, self.seed ^ 0x5DEE_CE66_D1CE_4E5B);
        let mut clients: Vec<Client> = Vec::new();
        let (answers, mut answers_rx) = mpsc::unbounded_channel::<(usize, Vec<u8>)>();
        let local = front.local_addr().map(|a| a.ip()).ok();
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let wakeup = match (to_hub.next_wakeup(), to_box.next_wakeup()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let wakeup = wakeup
                .map(tokio::time::Instant::from_std)
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            // A new impairment is taken up before the next datagram is admitted; the select
            // stays fair, so neither direction starves the other under load.
            if self.impairment.has_changed().unwrap_or(false) {
                applied = take_up(&mut self.impairment, &mut to_hub, &mut to_box);
            }
            // Published before waiting: what the last round did, and the impairment taken up.
            *self.shared.lock().unwrap_or_else(PoisonError::into_inner) = Shared {
                counts: ChaosCounts {
                    clients: clients.len(),
                    to_hub: to_hub.counts(),
                    to_box: to_box.counts(),
                },
                applied,
            };
            tokio::select! {
                _ = &mut self.stop => break,
                changed = self.impairment.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    applied = take_up(&mut self.impairment, &mut to_hub, &mut to_box);
                }
                received = front.recv_from(&mut buf) => {
                    if let Ok((n, from)) = received {
                        let known = clients.iter().position(|c| c.address == from);
                        let client = match known {
                            Some(i) => Some(i),
                            None => self.map_client(&mut clients, from, local, &answers).await,
                        };
                        if let Some(client) = client {
                            to_hub.admit(Instant::now(), client, buf[..n].to_vec());
                        }
                    }
                }
                Some((client, datagram)) = answers_rx.recv() => {
                    to_box.admit(Instant::now(), client, datagram);
                }
                _ = tokio::time::sleep_until(wakeup) => {}
            }
            let now = Instant::now();
            for (client, datagram) in to_hub.due(now) {
                let _ = clients[client].upstream.send(&datagram).await;
            }
            for (client, datagram) in to_box.due(now) {
                let _ = front.send_to(&datagram, clients[client].address).await;
            }
        }
    }

    /// Opens the upstream socket for a new box at `from` and starts reading the hub's answers
    /// on it; `None` (the datagram is ignored) when the table is full or the socket fails.
    async fn map_client(
        &self,
        clients: &mut Vec<Client>,
        from: SocketAddr,
        local: Option<std::net::IpAddr>,
        answers: &mpsc::UnboundedSender<(usize, Vec<u8>)>,
    ) -> Option<usize> {
        if clients.len() >= MAX_CLIENTS {
            return None;
        }
        let bind = SocketAddr::new(local?, 0);
        let socket = match UdpSocket::bind(bind).await {
            Ok(socket) => socket,
            Err(e) => {
                eprintln!("chaos relay: no upstream socket for {from}: {e}");
                return None;
            }
        };
        if let Err(e) = socket.connect(self.upstream).await {
            eprintln!("chaos relay: cannot aim at {}: {e}", self.upstream);
            return None;
        }
        let upstream = Arc::new(socket);
        let index = clients.len();
        let reader = Arc::clone(&upstream);
        let answers = answers.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            loop {
                // An error (an ICMP answer to an earlier datagram) does not end the mapping.
                if let Ok(n) = reader.recv(&mut buf).await {
                    if answers.send((index, buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }
        });
        clients.push(Client {
            address: from,
            upstream,
        });
        Some(index)
    }
}
