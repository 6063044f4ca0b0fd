//! A swarm of lightweight facility peers: N real boringtun sessions in one thread inside a
//! namespace, each with its own UDP socket (one address, a port each), each proving its tunnel
//! to the hub with an ICMP echo inside the tunnel.
//!
//! The hub is the real `renkei` daemon; the facilities are not (a thousand daemons do not fit
//! on a test machine), but they speak real WireGuard with boringtun, as a box does, keep the
//! always-on keepalive, and answer the hub's handshakes. The swarm runs in rounds: at the start
//! of each ([`Swarm::begin_round`]) every facility pings the hub's tunnel address until the
//! first answer, and the time of that answer is recorded. Dropping the swarm stops its thread
//! and closes every socket.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use ipnet::IpNet;
use renkei::config::PeerConfig;

/// The first facility's tunnel address; facility n has this plus n.
pub const FIRST_FACILITY: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 10);
/// The facilities' keepalive, as an always-on box's default.
const KEEPALIVE_SECS: u16 = 25;
/// How often each facility runs boringtun's timers and looks at its round.
const TICK: Duration = Duration::from_millis(100);
/// A facility without an answer pings again after this long.
pub const PING_INTERVAL: Duration = Duration::from_millis(250);
/// Largest datagram or packet handled.
const BUFFER_BYTES: usize = 2048;
/// IPv4 header without options, and an ICMP echo with this many payload bytes.
const IPV4_HEADER_BYTES: usize = 20;
const ICMP_PAYLOAD_BYTES: usize = 16;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMP_ECHO_REPLY: u8 = 0;
const PROTOCOL_ICMP: u8 = 1;

/// One facility: its WireGuard key and its tunnel address.
pub struct Facility {
    /// Its static key.
    pub secret: StaticSecret,
    /// Its address inside the tunnel (a /32 on the hub).
    pub tunnel_address: Ipv4Addr,
}

impl Facility {
    /// The facility's name on the hub.
    pub fn name(index: usize) -> String {
        format!("facility-{index:04}")
    }
}

/// `n` facilities with fresh keys and addresses from [`FIRST_FACILITY`] on.
pub fn facilities(n: usize) -> Vec<Facility> {
    let first = u32::from(FIRST_FACILITY);
    (0..n)
        .map(|i| Facility {
            secret: renkei::keys::generate_private_key(),
            tunnel_address: Ipv4Addr::from(first + i as u32),
        })
        .collect()
}

/// The hub's `[[tunnel.peer]]` for each facility: its key, its /32, no endpoint (the hub
/// answers wherever the facility's packets come from).
pub fn hub_peers(facilities: &[Facility]) -> Vec<PeerConfig> {
    facilities
        .iter()
        .enumerate()
        .map(|(i, f)| PeerConfig {
            name: Facility::name(i),
            public_key: renkei::keys::encode_key(&PublicKey::from(&f.secret).to_bytes()),
            endpoint: None,
            allowed_ips: vec![IpNet::from(IpAddr::V4(f.tunnel_address))],
            persistent_keepalive_secs: None,
        })
        .collect()
}

/// Where the facilities find the hub.
#[derive(Clone, Copy)]
pub struct HubAddress {
    /// The hub's WireGuard endpoint.
    pub endpoint: SocketAddr,
    /// The hub's public key.
    pub public_key: [u8; 32],
    /// The hub's tunnel address, which the facilities ping.
    pub tunnel_address: Ipv4Addr,
}

/// What the swarm's thread and the test share.
struct Shared {
    stop: AtomicBool,
    round: AtomicU32,
    started: Mutex<Instant>,
    /// Per facility: when its ping of the current round was first answered.
    answered: Mutex<Vec<Option<Instant>>>,
    /// Facilities whose socket or session could not be set up.
    failed: Mutex<Vec<String>>,
}

impl Shared {
    fn answered(&self) -> MutexGuard<'_, Vec<Option<Instant>>> {
        self.answered.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The running swarm.
pub struct Swarm {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Swarm {
    /// Starts every facility in namespace `ns` on address `bind` (a port each); they ping the
    /// hub at once (round 1).
    pub fn start(
        ns: &crate::netns::Namespace,
        bind: Ipv4Addr,
        hub: HubAddress,
        facilities: Vec<Facility>,
    ) -> anyhow::Result<Swarm> {
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            round: AtomicU32::new(1),
            started: Mutex::new(Instant::now()),
            answered: Mutex::new(vec![None; facilities.len()]),
            failed: Mutex::new(Vec::new()),
        });
        raise_open_files(facilities.len())?;
        let path = format!("/run/netns/{}", ns.name());
        let netns = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
        let in_thread = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("swarm".into())
            .spawn(move || {
                if let Err(e) = nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET) {
                    fail(&in_thread, format!("entering the namespace: {e}"));
                    return;
                }
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => return fail(&in_thread, format!("tokio runtime: {e}")),
                };
                runtime.block_on(run(in_thread, bind, hub, facilities));
            })
            .context("starting the swarm thread")?;
        Ok(Swarm {
            shared,
            thread: Some(thread),
        })
    }

    /// Starts a new round: every facility pings until its first answer. Returns its start.
    pub fn begin_round(&self) -> Instant {
        let now = Instant::now();
        let mut answered = self.shared.answered();
        answered.iter_mut().for_each(|a| *a = None);
        *self
            .shared
            .started
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = now;
        self.shared.round.fetch_add(1, Ordering::SeqCst);
        now
    }

    /// The start of the current round.
    pub fn round_started(&self) -> Instant {
        *self
            .shared
            .started
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// When each facility's ping of the current round was first answered.
    pub fn answered(&self) -> Vec<Option<Instant>> {
        self.shared.answered().clone()
    }

    /// How many facilities have their answer in the current round.
    pub fn answered_count(&self) -> usize {
        self.shared.answered().iter().flatten().count()
    }

    /// Facilities that could not start (their socket), and why.
    pub fn failures(&self) -> Vec<String> {
        self.shared
            .failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Sockets the process needs besides the facilities' own.
const OTHER_OPEN_FILES: u64 = 256;

/// Raises the soft limit of open files to fit one socket per facility (up to the hard limit).
fn raise_open_files(facilities: usize) -> anyhow::Result<()> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let needed = facilities as u64 + OTHER_OPEN_FILES;
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < needed {
        anyhow::ensure!(
            hard >= needed,
            "{facilities} facilities need {needed} open files; the hard limit is {hard}"
        );
        setrlimit(Resource::RLIMIT_NOFILE, needed, hard)?;
    }
    Ok(())
}

fn fail(shared: &Shared, why: String) {
    shared
        .failed
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(why);
}

async fn run(shared: Arc<Shared>, bind: Ipv4Addr, hub: HubAddress, facilities: Vec<Facility>) {
    let mut tasks = tokio::task::JoinSet::new();
    for (index, facility) in facilities.into_iter().enumerate() {
        let shared = Arc::clone(&shared);
        tasks.spawn(async move {
            if let Err(e) = run_facility(&shared, index, facility, bind, hub).await {
                fail(&shared, format!("{}: {e:#}", Facility::name(index)));
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// One facility until the swarm stops.
async fn run_facility(
    shared: &Shared,
    index: usize,
    facility: Facility,
    bind: Ipv4Addr,
    hub: HubAddress,
) -> anyhow::Result<()> {
    let socket = tokio::net::UdpSocket::bind(SocketAddr::new(IpAddr::V4(bind), 0)).await?;
    socket.connect(hub.endpoint).await?;
    let session_index = u32::try_from(index).context("too many facilities")?;
    let mut tunn = Tunn::new(
        facility.secret,
        PublicKey::from(hub.public_key),
        None,
        Some(KEEPALIVE_SECS),
        session_index,
        None,
    );
    let echo_id = (index & 0xffff) as u16;
    let mut datagram = vec![0u8; BUFFER_BYTES];
    let mut out = vec![0u8; BUFFER_BYTES];
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The round of the last ping sent and when.
    let mut last_ping: Option<(u32, Instant)> = None;
    loop {
        tokio::select! {
            received = socket.recv(&mut datagram) => {
                let Ok(n) = received else { continue };
                let round = shared.round.load(Ordering::SeqCst);
                let mut result = tunn.decapsulate(Some(hub.endpoint.ip()), &datagram[..n], &mut out);
                loop {
                    match result {
                        TunnResult::WriteToNetwork(bytes) => {
                            let _ = socket.send(bytes).await;
                            result = tunn.decapsulate(None, &[], &mut out);
                        }
                        TunnResult::WriteToTunnelV4(packet, _) => {
                            if is_echo_reply(packet, hub.tunnel_address, echo_id, round as u16) {
                                let mut answered = shared.answered();
                                // A new round may have begun since `round` was read.
                                if shared.round.load(Ordering::SeqCst) == round {
                                    if let Some(slot) = answered.get_mut(index) {
                                        slot.get_or_insert_with(Instant::now);
                                    }
                                }
                            }
                            break;
                        }
                        _ => break,
                    }
                }
            }
            _ = ticks.tick() => {
                if shared.stop.load(Ordering::SeqCst) {
                    return Ok(());
                }
                if let TunnResult::WriteToNetwork(bytes) = tunn.update_timers(&mut out) {
                    let _ = socket.send(bytes).await;
                }
                let round = shared.round.load(Ordering::SeqCst);
                let answered = shared.answered().get(index).copied().flatten().is_some();
                let due = match last_ping {
                    Some((r, at)) => r != round || at.elapsed() >= PING_INTERVAL,
                    None => true,
                };
                if !answered && due {
                    let ping = echo_request(
                        facility.tunnel_address,
                        hub.tunnel_address,
                        echo_id,
                        round as u16,
                    );
                    if let TunnResult::WriteToNetwork(bytes) = tunn.encapsulate(&ping, &mut out) {
                        let _ = socket.send(bytes).await;
                    }
                    last_ping = Some((round, Instant::now()));
                }
            }
        }
    }
}

/// The Internet checksum (RFC 1071) of `bytes`.
fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 ICMP echo request from `source` to `destination`.
pub fn echo_request(source: Ipv4Addr, destination: Ipv4Addr, id: u16, sequence: u16) -> Vec<u8> {
    let total = IPV4_HEADER_BYTES + 8 + ICMP_PAYLOAD_BYTES;
    let mut packet = vec![0u8; total];
    packet[0] = 0x45; // version 4, header of five 32-bit words
    packet[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    packet[6] = 0x40; // don't fragment
    packet[8] = 64; // TTL
    packet[9] = PROTOCOL_ICMP;
    packet[12..16].copy_from_slice(&source.octets());
    packet[16..20].copy_from_slice(&destination.octets());
    let header_sum = checksum(&packet[..IPV4_HEADER_BYTES]);
    packet[10..12].copy_from_slice(&header_sum.to_be_bytes());
    let icmp = &mut packet[IPV4_HEADER_BYTES..];
    icmp[0] = ICMP_ECHO_REQUEST;
    icmp[4..6].copy_from_slice(&id.to_be_bytes());
    icmp[6..8].copy_from_slice(&sequence.to_be_bytes());
    for (i, byte) in icmp[8..].iter_mut().enumerate() {
        *byte = i as u8;
    }
    let icmp_sum = checksum(icmp);
    icmp[2..4].copy_from_slice(&icmp_sum.to_be_bytes());
    packet
}

/// Whether `packet` is the echo reply from `hub` to the request `id`/`sequence`.
fn is_echo_reply(packet: &[u8], hub: Ipv4Addr, id: u16, sequence: u16) -> bool {
    let header = usize::from(packet.first().map_or(0, |b| b & 0x0f)) * 4;
    let Some(icmp) = packet.get(header..) else {
        return false;
    };
    packet.len() >= IPV4_HEADER_BYTES
        && packet[9] == PROTOCOL_ICMP
        && packet[12..16] == hub.octets()
        && icmp.len() >= 8
        && icmp[0] == ICMP_ECHO_REPLY
        && icmp[4..6] == id.to_be_bytes()
        && icmp[6..8] == sequence.to_be_bytes()
        && checksum(icmp) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_echo_request_carries_valid_checksums_and_its_reply_is_recognised() {
        let hub = Ipv4Addr::new(198, 19, 0, 1);
        let facility = Ipv4Addr::new(198, 19, 0, 10);
        let request = echo_request(facility, hub, 7, 3);
        assert_eq!(checksum(&request[..IPV4_HEADER_BYTES]), 0);
        assert_eq!(checksum(&request[IPV4_HEADER_BYTES..]), 0);

        // The reply as a kernel makes it: addresses swapped, type 0, checksum redone.
        let mut reply = request.clone();
        reply[12..16].copy_from_slice(&hub.octets());
        reply[16..20].copy_from_slice(&facility.octets());
        reply[IPV4_HEADER_BYTES] = ICMP_ECHO_REPLY;
        reply[IPV4_HEADER_BYTES + 2..IPV4_HEADER_BYTES + 4].fill(0);
        let sum = checksum(&reply[IPV4_HEADER_BYTES..]);
        reply[IPV4_HEADER_BYTES + 2..IPV4_HEADER_BYTES + 4].copy_from_slice(&sum.to_be_bytes());
        assert!(is_echo_reply(&reply, hub, 7, 3));
        assert!(!is_echo_reply(&reply, hub, 7, 4), "another round");
        assert!(!is_echo_reply(&reply, hub, 8, 3), "another facility");
        assert!(!is_echo_reply(&request, hub, 7, 3), "the request itself");
    }
}
