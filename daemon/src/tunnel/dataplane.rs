//! The WireGuard data plane: TUN -> encapsulate -> UDP, UDP -> decapsulate -> TUN, and timers.
//!
//! Tokio tasks share one `DataPlane`: a TUN reader per queue of the device and a UDP reader per
//! socket on the port (one of each, or on a box with several peers one per core: see
//! `tunnel::lanes`), and the timer tick.
//! Peer state is locked only for non-blocking work (encryption and `try_send`); a datagram that
//! would block is copied out and sent after the lock is released. Every packet is checked by
//! `filter` (NET-8) before it is encrypted or after it is decrypted.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::background::Background;
use super::filter::{self, Drop};
use super::handshake_limit::{Admission, HandshakeLimit, COOKIE_REPLY_BYTES};
use super::offload::{self, Coalescer, Read, Segments, VNET_HDR_BYTES};
use super::peer::{Peer, PeerCounters, PeerState};
use super::policy::{Action, Event, LinkState};
use super::routes::RouteTable;
use super::tun::{Tun, TunQueue};
use super::udp::{GsoBatch, PortSockets, Udp};
use crate::ratelimit::LogGate;
use crate::state::moment::Moment;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};

/// Largest packet read from TUN or UDP.
pub const MAX_PACKET: usize = 65_535;
/// WireGuard adds at most this many bytes to a packet (header + tag, plus padding slack).
const WG_OVERHEAD: usize = 64;
/// Packets handled per wake-up before yielding to other tasks.
const BATCH: usize = 64;
/// Decrypted bytes held for coalescing before they are written to the TUN device mid-batch.
const COALESCE_FLUSH_BYTES: usize = 256 * 1024;
/// How often timers run; boringtun's own timers have one-second granularity or coarser.
pub const TICK: Duration = Duration::from_millis(250);
/// WireGuard message type of a handshake initiation.
const MESSAGE_HANDSHAKE_INIT: u8 = 1;
/// WireGuard message type of a cookie reply.
const MESSAGE_COOKIE_REPLY: u8 = 3;
/// WireGuard message type of transport data.
const MESSAGE_DATA: u8 = 4;

/// Tunnel-wide counters, mostly drops (NET-8) and bad input.
#[derive(Debug, Default)]
pub struct TunnelCounters {
    /// TUN packets whose source was not the box's tunnel address (forwarded LAN traffic).
    pub dropped_foreign_source: AtomicU64,
    /// TUN packets to addresses no peer owns.
    pub dropped_no_route: AtomicU64,
    /// Decapsulated packets not addressed to the box.
    pub dropped_foreign_destination: AtomicU64,
    /// Decapsulated packets whose source the sending peer does not own.
    pub dropped_source_not_allowed: AtomicU64,
    /// Packets that were not IP at all.
    pub dropped_malformed: AtomicU64,
    /// UDP datagrams that were not valid WireGuard messages, failed authentication, or were
    /// replayed handshake initiations (see `replay`).
    pub invalid_datagrams: AtomicU64,
    /// Packets dropped because the peer's endpoint is unknown.
    pub dropped_no_endpoint: AtomicU64,
    /// Datagrams that could not be sent (network unreachable, link down).
    pub send_errors: AtomicU64,
    /// Decrypted packets the TUN device refused: lost on the way in, so they are counted and
    /// logged, not only traced.
    pub tun_write_errors: AtomicU64,
    /// TUN reads that were super-segments (offloads on), split into packets.
    pub tun_super_segments_read: AtomicU64,
    /// TUN writes that carried several coalesced packets (offloads on).
    pub tun_super_packets_written: AtomicU64,
}

impl TunnelCounters {
    fn count_drop(&self, drop: Drop) {
        let counter = match drop {
            Drop::Malformed => &self.dropped_malformed,
            Drop::ForeignSource => &self.dropped_foreign_source,
            Drop::NoRoute => &self.dropped_no_route,
            Drop::ForeignDestination => &self.dropped_foreign_destination,
            Drop::SourceNotAllowed => &self.dropped_source_not_allowed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Everything the data-plane tasks share.
pub struct DataPlane {
    pub(crate) own_secret: StaticSecret,
    pub(crate) own_public: PublicKey,
    pub(crate) own_address: IpAddr,
    pub(crate) peers: Vec<Arc<Peer>>,
    /// Allowed IPs -> peer slot, built once: a hub's lookups do not scan every peer.
    routes: RouteTable,
    /// Public key -> peer slot, for handshake initiations.
    by_key: HashMap<[u8; 32], usize>,
    /// The port's first socket: every send leaves through it, and it receives too.
    pub(crate) udp: Udp,
    /// Further sockets bound to the same port (SO_REUSEPORT) on a box with several peers: the
    /// kernel hands each peer's datagrams (chosen by its address and port) to one socket of the
    /// group, and each socket has its own receive task, so different peers are decrypted on
    /// different cores at once.
    more_udp: Vec<Udp>,
    /// Datagram reads (a GRO batch counts once) by each receive socket, `udp` first.
    received: Vec<AtomicU64>,
    /// Reads (a super-segment counts once) from each queue of the TUN device.
    tun_reads: Vec<AtomicU64>,
    pub(crate) tun: Tun,
    /// mac1 and, under load, cookies: every handshake message is counted here once.
    handshake_limit: HandshakeLimit,
    /// Tunnel-wide counters.
    pub counters: TunnelCounters,
    invalid_log: LogGate,
    send_log: LogGate,
    tun_write_log: LogGate,
    created: Instant,
    /// Milliseconds after `created` of the timer task's last tick: the watchdog's evidence that
    /// the data plane is not hung.
    heartbeat_ms: AtomicU64,
    /// Woken when a peer's endpoint changes, so `resume::remember` writes it down at once.
    pub(crate) endpoint_changed: tokio::sync::Notify,
    /// The box's own traffic that rides on the link without using it (NET-7).
    background: Background,
}

/// Datagrams that could not be sent without blocking while a lock was held.
pub(crate) type Backlog = Vec<(Vec<u8>, SocketAddr)>;

/// Encrypted packets of one super-segment, waiting to join the GSO batch once their peer's
/// lock is released; its buffers are reused from read to read.
#[derive(Default)]
struct Sealed {
    bytes: Vec<u8>,
    packets: Vec<(usize, SocketAddr)>,
}

impl Sealed {
    fn clear(&mut self) {
        self.bytes.clear();
        self.packets.clear();
    }

    fn push(&mut self, packet: &[u8], to: SocketAddr) {
        self.bytes.extend_from_slice(packet);
        self.packets.push((self.bytes.len(), to));
    }

    /// The packets with their endpoints, in order.
    fn iter(&self) -> impl Iterator<Item = (&[u8], SocketAddr)> {
        let starts = std::iter::once(0).chain(self.packets.iter().map(|(end, _)| *end));
        starts
            .zip(self.packets.iter())
            .map(|(start, (end, to))| (&self.bytes[start..*end], *to))
    }
}

impl DataPlane {
    pub(crate) fn new(
        own_secret: StaticSecret,
        own_address: IpAddr,
        peers: Vec<Arc<Peer>>,
        udp: PortSockets,
        tun: Tun,
        handshakes_per_sec: u32,
        background: Background,
    ) -> Self {
        let own_public = PublicKey::from(&own_secret);
        let handshake_limit = HandshakeLimit::new(&own_public, handshakes_per_sec);
        let routes = RouteTable::new(
            peers
                .iter()
                .enumerate()
                .flat_map(|(slot, p)| p.allowed_ips.iter().map(move |net| (slot, net))),
        );
        // Keys are unique (config validation); should one repeat, the first peer keeps it.
        let mut by_key = HashMap::with_capacity(peers.len());
        for (slot, peer) in peers.iter().enumerate() {
            by_key.entry(peer.public_key).or_insert(slot);
        }
        DataPlane {
            own_secret,
            own_public,
            own_address,
            peers,
            routes,
            by_key,
            received: (0..=udp.more.len()).map(|_| AtomicU64::new(0)).collect(),
            udp: udp.first,
            more_udp: udp.more,
            tun_reads: (0..tun.queue_count()).map(|_| AtomicU64::new(0)).collect(),
            tun,
            handshake_limit,
            counters: TunnelCounters::default(),
            invalid_log: LogGate::new(Duration::from_secs(10)),
            send_log: LogGate::new(Duration::from_secs(10)),
            tun_write_log: LogGate::new(Duration::from_secs(10)),
            created: Instant::now(),
            heartbeat_ms: AtomicU64::new(0),
            endpoint_changed: tokio::sync::Notify::new(),
            background,
        }
    }

    /// Gives the TUN device back once nothing else holds the plane, so a config change can keep
    /// the device (and its index) while the peers are rebuilt.
    pub(crate) fn into_tun(self) -> Tun {
        self.tun
    }

    /// How many sockets receive for the port (each with its own task, [`DataPlane::run_udp`]).
    pub(crate) fn receive_sockets(&self) -> usize {
        1 + self.more_udp.len()
    }

    /// Datagram reads so far by each receive socket, the first socket's first.
    pub fn udp_reads_per_socket(&self) -> Vec<u64> {
        self.received
            .iter()
            .map(|count| count.load(Ordering::Relaxed))
            .collect()
    }

    /// Reads so far from each queue of the TUN device, the first queue's first.
    pub fn tun_reads_per_queue(&self) -> Vec<u64> {
        self.tun_reads
            .iter()
            .map(|count| count.load(Ordering::Relaxed))
            .collect()
    }

    /// Time since the timer task last ran.
    pub fn heartbeat_age(&self) -> Duration {
        let last = Duration::from_millis(self.heartbeat_ms.load(Ordering::Relaxed));
        self.created.elapsed().saturating_sub(last)
    }

    /// The peer responsible for `ip`: longest matching allowed-IP prefix; of several peers
    /// listing it, the first (config order) that routes `ip` now (`Peer::best_prefix`).
    pub fn peer_for(&self, ip: IpAddr) -> Option<&Arc<Peer>> {
        let slot = self.routes.lookup(ip, |slot| {
            self.peers
                .get(slot)
                .is_some_and(|p| p.best_prefix(ip).is_some())
        })?;
        self.peers.get(slot)
    }

    /// The peer with static public key `key`.
    pub(crate) fn peer_by_key(&self, key: &[u8; 32]) -> Option<&Arc<Peer>> {
        self.peers.get(*self.by_key.get(key)?)
    }

    /// A fresh session with `peer`, limited by the box's one handshake limit.
    pub(crate) fn new_tunn(&self, peer: &Peer) -> Box<Tunn> {
        Box::new(Tunn::new(
            self.own_secret.clone(),
            PublicKey::from(peer.public_key),
            None,
            peer.keepalive_secs.filter(|k| *k > 0),
            peer.index,
            Some(self.handshake_limit.session_limiter()),
        ))
    }

    /// Sends without blocking; what would block goes to `backlog`.
    fn send_or_queue(&self, peer: &Peer, bytes: &[u8], to: SocketAddr, backlog: &mut Backlog) {
        PeerCounters::add(&peer.counters.tx_bytes, bytes.len() as u64);
        PeerCounters::add(&peer.counters.tx_packets, 1);
        match self
            .udp
            .socket()
            .try_send_to(bytes, self.udp.wire_address(to))
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                backlog.push((bytes.to_vec(), to));
            }
            Err(e) => self.send_failed(to, &e),
        }
    }

    fn send_failed(&self, to: SocketAddr, error: &std::io::Error) {
        self.counters.send_errors.fetch_add(1, Ordering::Relaxed);
        if let Some(suppressed) = self.send_log.check(Instant::now()) {
            tracing::warn!(endpoint = %to, %error, suppressed, "cannot send to peer");
        }
    }

    async fn flush(&self, backlog: &mut Backlog) {
        for (bytes, to) in backlog.drain(..) {
            if let Err(e) = self
                .udp
                .socket()
                .send_to(&bytes, self.udp.wire_address(to))
                .await
            {
                self.send_failed(to, &e);
            }
        }
    }

    /// Sends a datagram produced by boringtun for `peer`, noting handshake initiations.
    fn send_for_peer(
        &self,
        peer: &Peer,
        state: &mut PeerState,
        bytes: &[u8],
        backlog: &mut Backlog,
    ) {
        if bytes.first() == Some(&MESSAGE_HANDSHAKE_INIT) {
            PeerCounters::add(&peer.counters.handshake_attempts, 1);
            if state.awaiting_response {
                PeerCounters::add(&peer.counters.handshake_failures, 1);
            }
            state.awaiting_response = true;
        }
        match state.endpoint {
            Some(to) => self.send_or_queue(peer, bytes, to, backlog),
            None => {
                self.counters
                    .dropped_no_endpoint
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Runs a policy event for a peer and carries out its action.
    pub(crate) fn policy_event(
        &self,
        peer: &Peer,
        state: &mut PeerState,
        event: Event,
        scratch: &mut [u8],
        backlog: &mut Backlog,
    ) {
        let now = Instant::now();
        let before = state.policy.state();
        let action = state.policy.handle(event, now);
        match action {
            Some(Action::Initiate) => {
                let tunn = state.tunn.get_or_insert_with(|| self.new_tunn(peer));
                if let TunnResult::WriteToNetwork(bytes) =
                    tunn.format_handshake_initiation(scratch, false)
                {
                    let bytes = bytes.to_vec();
                    self.send_for_peer(peer, state, &bytes, backlog);
                }
            }
            Some(Action::DropSession) => {
                // Dropping the Tunn drops its session keys and ephemeral secrets.
                state.tunn = None;
                state.awaiting_response = false;
            }
            None => {}
        }
        let after = state.policy.state();
        if before != after {
            tracing::info!(
                peer = %peer.name,
                from = before.as_str(),
                to = after.as_str(),
                reason = state.policy.reason().text(),
                "tunnel state changed"
            );
            peer.link_state.send_replace(after);
        }
        let alarm = state.policy.alarm(now);
        if alarm != state.alarm {
            state.alarm = alarm;
            if alarm {
                tracing::error!(peer = %peer.name, "ALARM: last handshake is older than the alarm threshold");
            } else {
                tracing::info!(peer = %peer.name, "alarm cleared: fresh handshake");
            }
        }
    }

    /// Reads packets from TUN until the task is aborted. Encrypted data packets for one
    /// endpoint are gathered into one GSO send per wake-up. On an offloading device a read may
    /// be a super-segment: it is split into packets first, and each is judged on its own.
    /// Reads queue `queue` of the device (one task per queue).
    pub(crate) async fn run_tun(self: Arc<Self>, queue: usize) {
        let tun = self.tun.queue(queue);
        let offloads = self.tun.offloads().is_on();
        let mut packet = vec![0u8; MAX_PACKET + VNET_HDR_BYTES];
        let mut out = vec![0u8; MAX_PACKET + WG_OVERHEAD];
        let mut segments = Segments::new();
        let mut sealed = Sealed::default();
        let mut backlog = Backlog::new();
        let mut batch = GsoBatch::new();
        loop {
            let n = match tun.recv(&mut packet).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(error = %e, "reading from the TUN device failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let mut next = Some(n);
            let mut handled = 0;
            while let Some(n) = next.take() {
                if !offloads {
                    self.outgoing_to_batch(&packet[..n], &mut out, &mut backlog, &mut batch)
                        .await;
                } else {
                    match offload::receive(&mut packet[..n], &mut segments) {
                        Ok(Read::Single(range)) => {
                            self.outgoing_to_batch(
                                &packet[range],
                                &mut out,
                                &mut backlog,
                                &mut batch,
                            )
                            .await
                        }
                        Ok(Read::Split) => {
                            self.counters
                                .tun_super_segments_read
                                .fetch_add(1, Ordering::Relaxed);
                            self.outgoing_segments(&segments, &mut out, &mut sealed, &mut backlog);
                            for (bytes, to) in sealed.iter() {
                                if !batch.fits(bytes, to) {
                                    self.send_batch(&mut batch).await;
                                }
                                batch.push(bytes, to);
                            }
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "TUN read not understood; dropped");
                            self.counters.count_drop(Drop::Malformed);
                        }
                    }
                }
                handled += 1;
                if handled < BATCH {
                    next = tun.try_recv(&mut packet).ok();
                }
            }
            if let Some(count) = self.tun_reads.get(queue) {
                count.fetch_add(handled as u64, Ordering::Relaxed);
            }
            self.send_batch(&mut batch).await;
            self.flush(&mut backlog).await;
        }
    }

    /// Encrypts one packet from TUN into the batch, sending the batch first when it is full.
    async fn outgoing_to_batch(
        &self,
        packet: &[u8],
        out: &mut [u8],
        backlog: &mut Backlog,
        batch: &mut GsoBatch,
    ) {
        if let Some((len, to)) = self.outgoing(packet, out, backlog) {
            if !batch.fits(&out[..len], to) {
                self.send_batch(batch).await;
            }
            batch.push(&out[..len], to);
        }
    }

    async fn send_batch(&self, batch: &mut GsoBatch) {
        if batch.is_empty() {
            return;
        }
        if let Err(e) = self.udp.send_batch(batch).await {
            self.counters.send_errors.fetch_add(1, Ordering::Relaxed);
            if let Some(suppressed) = self.send_log.check(Instant::now()) {
                tracing::warn!(error = %e, suppressed, "cannot send to peer");
            }
        }
    }

    /// The peer a packet from TUN goes to, once the filter (NET-8) let it through; a drop is
    /// counted here.
    fn outgoing_peer(&self, packet: &[u8]) -> Option<&Arc<Peer>> {
        let destination = match filter::outgoing(packet, self.own_address) {
            Ok(dst) => dst,
            Err(drop) => {
                self.counters.count_drop(drop);
                return None;
            }
        };
        let peer = self.peer_for(destination);
        if peer.is_none() {
            self.counters.count_drop(Drop::NoRoute);
        }
        peer
    }

    /// Encrypts one packet from TUN. A data packet is left in `out` and returned with its
    /// endpoint for batching; anything else (a handshake initiation) is sent or queued here.
    fn outgoing(
        &self,
        packet: &[u8],
        out: &mut [u8],
        backlog: &mut Backlog,
    ) -> Option<(usize, SocketAddr)> {
        let peer = self.outgoing_peer(packet)?;
        let mut state = peer.lock();
        if !self.wants_link(peer, &mut state, packet, &mut false, out, backlog) {
            return None;
        }
        self.seal(peer, &mut state, packet, out, backlog)
    }

    /// Tells the peer's policy that `packet` wants the link (once per lock: `demanded`), unless
    /// it is the box's own background traffic (time sync, the journal upload), which only rides
    /// on a link that is up anyway (NET-7).
    /// False when the packet is to be dropped.
    fn wants_link(
        &self,
        peer: &Peer,
        state: &mut PeerState,
        packet: &[u8],
        demanded: &mut bool,
        scratch: &mut [u8],
        backlog: &mut Backlog,
    ) -> bool {
        if self.background.is_outgoing(packet) {
            return link_up(state);
        }
        if !*demanded {
            self.policy_event(peer, state, Event::Demand, scratch, backlog);
            *demanded = true;
        }
        true
    }

    /// The packets of one super-segment, each judged by the filter on its own, encrypted into
    /// `sealed` under one lock of their peer (they share their addresses, so their peer):
    /// the lock is taken once per read, not once per packet, and no system call is made under
    /// it but a handshake's `try_send`.
    fn outgoing_segments(
        &self,
        segments: &Segments,
        out: &mut [u8],
        sealed: &mut Sealed,
        backlog: &mut Backlog,
    ) {
        sealed.clear();
        // The peer locked, and whether this read's demand was told to its policy.
        let mut locked: Option<(&Arc<Peer>, std::sync::MutexGuard<'_, PeerState>, bool)> = None;
        for packet in segments.iter() {
            let Some(peer) = self.outgoing_peer(packet) else {
                continue;
            };
            if !locked
                .as_ref()
                .is_some_and(|(p, _, _)| Arc::ptr_eq(p, peer))
            {
                drop(locked.take());
                locked = Some((peer, peer.lock(), false));
            }
            let Some((peer, state, demanded)) = locked.as_mut() else {
                continue;
            };
            if !self.wants_link(peer, state, packet, demanded, out, backlog) {
                continue;
            }
            if let Some((len, to)) = self.seal(peer, state, packet, out, backlog) {
                sealed.push(&out[..len], to);
            }
        }
    }

    /// Encrypts `packet` for `peer`, whose state the caller holds locked (see `outgoing`).
    fn seal(
        &self,
        peer: &Peer,
        state: &mut PeerState,
        packet: &[u8],
        out: &mut [u8],
        backlog: &mut Backlog,
    ) -> Option<(usize, SocketAddr)> {
        let tunn = state.tunn.get_or_insert_with(|| self.new_tunn(peer));
        let TunnResult::WriteToNetwork(bytes) = tunn.encapsulate(packet, out) else {
            return None;
        };
        let len = bytes.len();
        if out[0] == MESSAGE_DATA {
            let Some(to) = state.endpoint else {
                self.counters
                    .dropped_no_endpoint
                    .fetch_add(1, Ordering::Relaxed);
                return None;
            };
            PeerCounters::add(&peer.counters.tx_bytes, len as u64);
            PeerCounters::add(&peer.counters.tx_packets, 1);
            return Some((len, to));
        }
        let bytes = out[..len].to_vec();
        self.send_for_peer(peer, state, &bytes, backlog);
        None
    }

    /// Reads datagrams from receive socket `socket` (0 is `udp`, then `more_udp`'s) until the
    /// task is aborted; datagrams the kernel coalesced (GRO) are split back into their segments.
    /// Decrypted packets go to the TUN queue of the same number: the kernel then reads the
    /// flows they belong to out of that queue (its automatic flow steering), so one peer's
    /// traffic both ways stays with one pair of tasks and different peers spread over the cores.
    pub(crate) async fn run_udp(self: Arc<Self>, socket: usize) {
        let tun = self.tun.queue(socket);
        let udp = match socket.checked_sub(1) {
            None => &self.udp,
            Some(further) => match self.more_udp.get(further) {
                Some(udp) => udp,
                None => return,
            },
        };
        let mut datagram = vec![0u8; MAX_PACKET];
        let mut out = vec![0u8; MAX_PACKET + WG_OVERHEAD];
        let mut backlog = Backlog::new();
        // With offloads, decrypted packets of one flow leave as one super-packet (GRO).
        let mut coalescer = self.tun.offloads().is_on().then(Coalescer::new);
        loop {
            let mut next = match udp.recv(&mut datagram).await {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!(error = %e, "receiving from the UDP socket failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let mut handled = 0;
            while let Some((n, from, segment)) = next.take() {
                let from = canonical(from);
                for chunk in datagram[..n].chunks(segment) {
                    let to_tun = (tun, coalescer.as_mut());
                    self.incoming(chunk, from, &mut out, &mut backlog, to_tun);
                }
                if let Some(coalescer) = coalescer.as_mut() {
                    if coalescer.held_bytes() >= COALESCE_FLUSH_BYTES {
                        self.write_coalesced(tun, coalescer);
                    }
                }
                handled += 1;
                if handled < BATCH {
                    next = udp.try_recv(&mut datagram).ok();
                }
            }
            if let Some(count) = self.received.get(socket) {
                count.fetch_add(handled as u64, Ordering::Relaxed);
            }
            if let Some(coalescer) = coalescer.as_mut() {
                self.write_coalesced(tun, coalescer);
            }
            self.flush(&mut backlog).await;
        }
    }

    fn invalid(&self, from: SocketAddr, why: impl std::fmt::Display) {
        self.counters
            .invalid_datagrams
            .fetch_add(1, Ordering::Relaxed);
        if let Some(suppressed) = self.invalid_log.check(Instant::now()) {
            tracing::warn!(source = %from, why = %why, suppressed, "dropped invalid datagram");
        }
    }

    fn tun_write_failed(&self, error: &std::io::Error) {
        self.counters
            .tun_write_errors
            .fetch_add(1, Ordering::Relaxed);
        if let Some(suppressed) = self.tun_write_log.check(Instant::now()) {
            tracing::warn!(%error, suppressed, "cannot write to the TUN device; packet dropped");
        }
    }

    /// Writes what the coalescer holds to the TUN device, one write per (super-)packet.
    fn write_coalesced(&self, tun: &TunQueue, coalescer: &mut Coalescer) {
        coalescer.drain(|parts| {
            // The header, the first packet, then one part per packet appended.
            if parts.len() > 2 {
                self.counters
                    .tun_super_packets_written
                    .fetch_add(1, Ordering::Relaxed);
            }
            if let Err(e) = tun.try_send_vectored(parts) {
                self.tun_write_failed(&e);
            }
        });
    }

    /// Handles one datagram. A decrypted packet the filter lets through goes to the coalescer
    /// when there is one (offloads on), else straight to the TUN queue.
    fn incoming(
        &self,
        datagram: &[u8],
        from: SocketAddr,
        out: &mut [u8],
        backlog: &mut Backlog,
        (tun, coalescer): (&TunQueue, Option<&mut Coalescer>),
    ) {
        let packet = match Tunn::parse_incoming_packet(datagram) {
            Ok(p) => p,
            Err(_) => return self.invalid(from, "not a WireGuard message"),
        };
        let kind = MessageKind::of(&packet);
        if matches!(kind, MessageKind::Initiation | MessageKind::Response) {
            // Check mac1 (and, under load, the cookie) before any Diffie-Hellman work; the
            // session's own check after this never counts the message again.
            let mut cookie = [0u8; COOKIE_REPLY_BYTES];
            match self.handshake_limit.admit(from.ip(), datagram, &mut cookie) {
                Admission::Admitted => {}
                Admission::Cookie(reply) => return self.send_cookie(reply, from),
                Admission::Refused => return self.invalid(from, "handshake failed mac check"),
            }
        }
        let peer = match &packet {
            Packet::HandshakeInit(init) => {
                let Ok(half) = parse_handshake_anon(&self.own_secret, &self.own_public, init)
                else {
                    return self.invalid(from, "handshake from an unknown key");
                };
                let Some(peer) = self.peer_by_key(&half.peer_static_public) else {
                    return self.invalid(from, "no peer for this message");
                };
                // The peer's newest accepted timestamp outlives its sessions: a replay is
                // refused here even when the session (and boringtun's memory of it) is gone.
                if let Err(refused) = peer.replay_gate().admit(from.ip(), datagram) {
                    return self.invalid(from, refused);
                }
                Some(peer)
            }
            Packet::HandshakeResponse(p) => self.peer_by_index(p.receiver_idx),
            Packet::PacketCookieReply(p) => self.peer_by_index(p.receiver_idx),
            Packet::PacketData(p) => self.peer_by_index(p.receiver_idx),
        };
        let Some(peer) = peer else {
            return self.invalid(from, "no peer for this message");
        };

        let mut state = peer.lock();
        if state.tunn.is_none() {
            if kind != MessageKind::Initiation {
                return self.invalid(from, "no session for this message");
            }
            // An idle on-demand box still answers the hub: that is not sending on its own.
            state.tunn = Some(self.new_tunn(peer));
        }
        let Some(tunn) = state.tunn.as_mut() else {
            return;
        };
        let mut reply: Option<Vec<u8>> = None;
        let mut delivered = false;
        let mut background_answer = false;
        let result = tunn.decapsulate(Some(from.ip()), datagram, out);
        if !proves_peer(kind, &result) {
            drop(state);
            return match result {
                // Under load boringtun answers a handshake message with a cookie, to its source.
                TunnResult::WriteToNetwork(cookie) => self.send_cookie(cookie, from),
                TunnResult::Err(_) => self.invalid(from, "failed authentication"),
                // A cookie reply boringtun accepted only sets mac2 for the next handshake: it
                // is sealed with the peer's public key, so it proves nothing about the sender.
                _ => {}
            };
        }
        match result {
            TunnResult::Done | TunnResult::Err(_) => {}
            TunnResult::WriteToNetwork(bytes) => reply = Some(bytes.to_vec()),
            TunnResult::WriteToTunnelV4(bytes, _) | TunnResult::WriteToTunnelV6(bytes, _) => {
                match filter::incoming(bytes, self.own_address, |ip| peer.owns(ip)) {
                    Ok(()) => {
                        match coalescer {
                            Some(coalescer) => coalescer.push(bytes),
                            None => {
                                if let Err(e) = tun.try_send(bytes) {
                                    self.tun_write_failed(&e);
                                }
                            }
                        }
                        delivered = true;
                        background_answer = self.background.is_incoming(bytes);
                    }
                    Err(drop) => self.counters.count_drop(drop),
                }
            }
        }

        // Authenticated: the endpoint follows the last authenticated packet (roaming).
        if state.endpoint != Some(from) {
            state.endpoint = Some(from);
            self.endpoint_changed.notify_one();
        }
        PeerCounters::add(&peer.counters.rx_bytes, datagram.len() as u64);
        PeerCounters::add(&peer.counters.rx_packets, 1);

        let mut scratch = [0u8; 256];
        // An answer to the box's own background traffic proves the peer alive but is no use of
        // the link (NET-7).
        let event = if delivered && !background_answer {
            Event::Traffic
        } else {
            Event::Authenticated
        };
        self.policy_event(peer, &mut state, event, &mut scratch, backlog);
        if matches!(kind, MessageKind::Initiation | MessageKind::Response) {
            self.handshake_completed(peer, &mut state, &mut scratch, backlog);
        }
        if let Some(reply) = reply {
            self.send_for_peer(peer, &mut state, &reply, backlog);
            // Packets queued while the handshake ran go out now.
            while let Some(tunn) = state.tunn.as_mut() {
                let TunnResult::WriteToNetwork(bytes) = tunn.decapsulate(None, &[], out) else {
                    break;
                };
                let bytes = bytes.to_vec();
                self.send_for_peer(peer, &mut state, &bytes, backlog);
            }
        }
    }

    /// Sends a cookie reply to where the handshake message came from (not to the peer's
    /// endpoint: the message is not authenticated yet).
    fn send_cookie(&self, cookie: &[u8], to: SocketAddr) {
        if let Err(e) = self
            .udp
            .socket()
            .try_send_to(cookie, self.udp.wire_address(to))
        {
            self.send_failed(to, &e);
        }
    }

    fn handshake_completed(
        &self,
        peer: &Peer,
        state: &mut PeerState,
        scratch: &mut [u8],
        backlog: &mut Backlog,
    ) {
        state.awaiting_response = false;
        state.last_handshake = Some(Moment::now());
        PeerCounters::add(&peer.counters.handshakes_completed, 1);
        self.policy_event(peer, state, Event::HandshakeCompleted, scratch, backlog);
    }

    fn peer_by_index(&self, receiver_index: u32) -> Option<&Arc<Peer>> {
        self.peers.get((receiver_index >> 8) as usize)
    }

    /// Runs boringtun's timers and the policy clock until the task is aborted.
    pub(crate) async fn run_timers(self: Arc<Self>) {
        let mut interval = tokio::time::interval(TICK);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut out = vec![0u8; MAX_PACKET + WG_OVERHEAD];
        let mut backlog = Backlog::new();
        let mut last_reset = Instant::now();
        loop {
            interval.tick().await;
            self.heartbeat_ms
                .store(self.created.elapsed().as_millis() as u64, Ordering::Relaxed);
            if last_reset.elapsed() >= Duration::from_secs(1) {
                self.handshake_limit.next_second();
                last_reset = Instant::now();
            }
            for peer in &self.peers {
                let mut state = peer.lock();
                let mut expired = false;
                if let Some(tunn) = state.tunn.as_mut() {
                    match tunn.update_timers(&mut out) {
                        TunnResult::WriteToNetwork(bytes) => {
                            let bytes = bytes.to_vec();
                            self.send_for_peer(peer, &mut state, &bytes, &mut backlog);
                        }
                        TunnResult::Err(
                            boringtun::noise::errors::WireGuardError::ConnectionExpired,
                        ) => {
                            expired = true;
                        }
                        _ => {}
                    }
                }
                if expired && matches!(state.policy.state(), LinkState::Connecting | LinkState::Up)
                {
                    if state.awaiting_response {
                        PeerCounters::add(&peer.counters.handshake_failures, 1);
                        state.awaiting_response = false;
                    }
                    self.policy_event(
                        peer,
                        &mut state,
                        Event::SessionExpired,
                        &mut out,
                        &mut backlog,
                    );
                }
                self.policy_event(peer, &mut state, Event::Tick, &mut out, &mut backlog);
            }
            self.flush(&mut backlog).await;
        }
    }

    /// Starts every peer's policy, and greets the remembered passive peers at their last
    /// endpoint (see `resume`).
    pub(crate) fn start_policies(&self, remembered: &super::resume::Remembered) -> Backlog {
        let mut out = vec![0u8; 256];
        let mut backlog = Backlog::new();
        for peer in &self.peers {
            let mut state = peer.lock();
            self.policy_event(peer, &mut state, Event::Start, &mut out, &mut backlog);
            if let Some(remembered) = remembered.get(&peer.public_key) {
                if state.endpoint.is_none() {
                    state.endpoint = Some(remembered.endpoint);
                }
                self.policy_event(peer, &mut state, Event::Resume, &mut out, &mut backlog);
            }
        }
        backlog
    }

    /// Feeds an event from outside the data plane (demand, holds, the admin's buttons).
    pub(crate) async fn external_event(&self, peer: &Peer, event: Event) {
        let backlog = self.event_now(peer, event);
        self.send_backlog(backlog).await;
    }

    /// [`DataPlane::external_event`] without the await, for callers inside a lock (the tunnel
    /// handle's hold counts): what could not be sent at once is returned for `send_backlog`.
    pub(crate) fn event_now(&self, peer: &Peer, event: Event) -> Backlog {
        let mut out = vec![0u8; 256];
        let mut backlog = Backlog::new();
        let mut state = peer.lock();
        self.policy_event(peer, &mut state, event, &mut out, &mut backlog);
        backlog
    }

    /// Starts a new handshake with a peer that has a session and an endpoint (a config apply
    /// that wants proof the peer still accepts this box). Returns whether one was sent.
    pub(crate) async fn rehandshake(&self, peer: &Peer) -> bool {
        let mut out = vec![0u8; 256];
        let mut backlog = Backlog::new();
        let sent = {
            let mut state = peer.lock();
            let state = &mut *state;
            if state.endpoint.is_none() {
                return false;
            }
            let Some(tunn) = state.tunn.as_mut() else {
                return false;
            };
            match tunn.format_handshake_initiation(&mut out, true) {
                TunnResult::WriteToNetwork(bytes) => {
                    let bytes = bytes.to_vec();
                    self.send_for_peer(peer, state, &bytes, &mut backlog);
                    true
                }
                _ => false,
            }
        };
        self.flush(&mut backlog).await;
        sent
    }

    /// Sends what `start_policies` could not send at once.
    pub(crate) async fn send_backlog(&self, mut backlog: Backlog) {
        self.flush(&mut backlog).await;
    }
}

/// IPv4 peers arrive as v4-mapped addresses on a dual-stack socket; show and compare them as v4.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// The four WireGuard message types, as received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MessageKind {
    Initiation,
    Response,
    CookieReply,
    Data,
}

impl MessageKind {
    fn of(packet: &Packet) -> Self {
        match packet {
            Packet::HandshakeInit(_) => MessageKind::Initiation,
            Packet::HandshakeResponse(_) => MessageKind::Response,
            Packet::PacketCookieReply(_) => MessageKind::CookieReply,
            Packet::PacketData(_) => MessageKind::Data,
        }
    }
}

/// Whether the peer's session is up, so that sealing a packet sends it and starts no handshake.
fn link_up(state: &PeerState) -> bool {
    state.policy.state() == LinkState::Up && state.tunn.is_some()
}

/// Whether boringtun's answer to a message of `kind` proves the message came from the peer
/// (its static key, or keys only a completed handshake with it gives): only then may the
/// endpoint move, the handshake count, the policy hear of it. A completed handshake answers
/// with a message of our own (a response to an initiation, a keepalive to a response); a data
/// packet decrypts (to a packet or a keepalive). A cookie reply never proves anything: it is
/// sealed with the peer's public key, so anyone who saw our handshake message can make one;
/// neither does a cookie boringtun writes under load in place of handling the message.
fn proves_peer(kind: MessageKind, result: &TunnResult) -> bool {
    match (kind, result) {
        (_, TunnResult::Err(_)) | (MessageKind::CookieReply, _) => false,
        (_, TunnResult::WriteToNetwork(bytes)) => bytes.first() != Some(&MESSAGE_COOKIE_REPLY),
        (MessageKind::Data, _) => true,
        (MessageKind::Initiation | MessageKind::Response, _) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use boringtun::noise::rate_limiter::RateLimiter;
    use std::net::Ipv4Addr;

    const CLINIC_WAN: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 20));
    const HUB_WAN: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
    const ATTACKER_WAN: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 99));

    struct Keys {
        hub: StaticSecret,
        clinic: StaticSecret,
    }

    impl Keys {
        fn new() -> Self {
            Keys {
                hub: StaticSecret::from([0x11; 32]),
                clinic: StaticSecret::from([0x22; 32]),
            }
        }

        fn hub_public(&self) -> PublicKey {
            PublicKey::from(&self.hub)
        }

        /// The clinic's session with the hub, or the hub's with the clinic, as `new_tunn` makes
        /// them (`limiter` none: boringtun's own per-peer limiter).
        fn clinic_tunn(&self) -> Tunn {
            Tunn::new(self.clinic.clone(), self.hub_public(), None, None, 1, None)
        }

        fn hub_tunn(&self, limiter: Option<Arc<RateLimiter>>) -> Tunn {
            let clinic = PublicKey::from(&self.clinic);
            Tunn::new(self.hub.clone(), clinic, None, None, 2, limiter)
        }
    }

    fn written(result: TunnResult) -> Vec<u8> {
        match result {
            TunnResult::WriteToNetwork(bytes) => bytes.to_vec(),
            _ => panic!("boringtun wrote nothing to the network"),
        }
    }

    #[test]
    fn int1_a_real_handshake_and_data_prove_the_peer() {
        let keys = Keys::new();
        let (mut clinic, mut hub) = (keys.clinic_tunn(), keys.hub_tunn(None));
        let (mut a, mut b) = ([0u8; 2048], [0u8; 2048]);

        let init = written(clinic.format_handshake_initiation(&mut a, false));
        let result = hub.decapsulate(Some(CLINIC_WAN), &init, &mut b);
        assert!(proves_peer(MessageKind::Initiation, &result));
        let response = written(result);
        let result = clinic.decapsulate(Some(HUB_WAN), &response, &mut a);
        assert!(proves_peer(MessageKind::Response, &result));
        let keepalive = written(result);
        let result = hub.decapsulate(Some(CLINIC_WAN), &keepalive, &mut b);
        assert!(matches!(result, TunnResult::Done), "a keepalive");
        assert!(proves_peer(MessageKind::Data, &result));

        // A data packet garbled on the way does not.
        let mut garbled = keepalive.clone();
        if let Some(last) = garbled.last_mut() {
            *last ^= 1;
        }
        let result = hub.decapsulate(Some(ATTACKER_WAN), &garbled, &mut b);
        assert!(!proves_peer(MessageKind::Data, &result));
    }

    /// The attack: someone who saw the clinic's initiation on the wire and knows the hub's
    /// public key (it is no secret) seals a cookie reply for it. boringtun accepts it, as it
    /// must (it only sets mac2 for the next handshake); it must not move the clinic's endpoint.
    #[test]
    fn int1_a_forged_cookie_reply_that_boringtun_accepts_proves_nothing() {
        let keys = Keys::new();
        let mut clinic = keys.clinic_tunn();
        let mut a = [0u8; 2048];
        let init = written(clinic.format_handshake_initiation(&mut a, false));

        let attacker = RateLimiter::new(&keys.hub_public(), 0);
        let mut forged = [0u8; 64];
        let Err(TunnResult::WriteToNetwork(cookie)) =
            attacker.verify_packet(Some(CLINIC_WAN), &init, &mut forged)
        else {
            panic!("a limiter with no allowance answers with a cookie reply");
        };
        let cookie = cookie.to_vec();
        assert_eq!(cookie.first(), Some(&MESSAGE_COOKIE_REPLY));

        let result = clinic.decapsulate(Some(ATTACKER_WAN), &cookie, &mut a);
        assert!(
            matches!(result, TunnResult::Done),
            "boringtun takes the forged cookie"
        );
        assert!(!proves_peer(MessageKind::CookieReply, &result));
    }

    /// Under load boringtun answers a handshake message with a cookie reply of its own instead
    /// of handling it: nothing is proven then either.
    #[test]
    fn int1_a_cookie_boringtun_writes_under_load_proves_nothing() {
        let keys = Keys::new();
        let mut clinic = keys.clinic_tunn();
        let loaded = Arc::new(RateLimiter::new(&keys.hub_public(), 0));
        let mut hub = keys.hub_tunn(Some(loaded));
        let (mut a, mut b) = ([0u8; 2048], [0u8; 2048]);
        let init = written(clinic.format_handshake_initiation(&mut a, false));
        let result = hub.decapsulate(Some(CLINIC_WAN), &init, &mut b);
        assert!(
            matches!(&result, TunnResult::WriteToNetwork(bytes) if bytes.first() == Some(&MESSAGE_COOKIE_REPLY))
        );
        assert!(!proves_peer(MessageKind::Initiation, &result));
    }
}
