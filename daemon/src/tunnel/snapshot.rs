//! What the tunnel shows of itself: the snapshot the status page, the API and the metrics read.

use serde::Serialize;

use super::peer::PeerSnapshot;
use super::policy::LinkState;
use crate::state::link::DropCounts as FilterDrops;

/// The tunnel's state as one word: a facility box has one peer (the data centre); a hub is up
/// when any facility is.
pub(super) fn overall_state(peers: &[PeerSnapshot]) -> LinkState {
    // A standby hub's probe session says nothing about the link the box uses.
    let states = || peers.iter().filter(|p| !p.standby).map(|p| p.state);
    if states().any(|s| s == LinkState::Up) {
        LinkState::Up
    } else if states().any(|s| s == LinkState::Connecting) {
        LinkState::Connecting
    } else if states().any(|s| s == LinkState::Down) {
        LinkState::Down
    } else {
        LinkState::Idle
    }
}

/// A point-in-time view of the tunnel.
#[derive(Debug, Clone, Serialize)]
pub struct TunnelSnapshot {
    /// Interface name.
    pub interface: String,
    /// The box's tunnel address.
    pub address: ipnet::IpNet,
    /// UDP port in use.
    pub listen_port: u16,
    /// always_on or on_demand.
    pub policy: &'static str,
    /// Overall state.
    pub state: LinkState,
    /// Any always-on peer in alarm.
    pub alarm: bool,
    /// Per-peer detail.
    pub peers: Vec<PeerSnapshot>,
    /// Dropped packets by reason.
    pub drops: DropCounts,
    /// TUN offloads: `on (...)` or `off (why)`.
    pub offloads: String,
    /// Whether TUN offloads are on.
    pub offloads_on: bool,
    /// What the offloads did so far.
    pub offload_counts: OffloadCounts,
    /// Datagram reads (a GRO batch counts once) by each socket receiving on the UDP port: one,
    /// or on a box with several peers one per core, among which the kernel spreads the peers.
    pub udp_reads_per_socket: Vec<u64>,
    /// Reads (a super-segment counts once) from each queue of the TUN device: as many queues
    /// as receive sockets, the kernel keeping each flow on one.
    pub tun_reads_per_queue: Vec<u64>,
}

/// Super-packets moved through the TUN device with offloads on: evidence the path runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OffloadCounts {
    /// Reads that were super-segments, split into packets before the filter.
    pub super_segments_read: u64,
    /// Writes that carried several coalesced packets.
    pub super_packets_written: u64,
}

/// Dropped packets and datagrams by reason (NET-8 and bad input).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DropCounts {
    /// What the packet filter dropped: the part every carrier reports.
    pub filter: FilterDrops,
    /// What WireGuard dropped below the filter.
    pub datagrams: DatagramDrops,
}

/// What WireGuard drops on its own, below the packet filter: datagrams, not packets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DatagramDrops {
    /// Not WireGuard, failed authentication, or a replayed handshake initiation.
    pub invalid_datagrams: u64,
    /// Peer endpoint unknown.
    pub no_endpoint: u64,
    /// Sends that failed.
    pub send_errors: u64,
    /// Decrypted packets the TUN device refused.
    pub tun_write_errors: u64,
}
