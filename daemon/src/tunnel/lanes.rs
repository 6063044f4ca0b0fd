//! Lanes: a box with several peers (a hub) runs one lane per runtime worker, a lane being a
//! TUN queue and a socket receiving on the WireGuard port, each read by its own task, so that
//! different peers are handled on different cores at once. Here: how many lanes, and the
//! port's sockets.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::net::UdpSocket;

use crate::config::{Config, Role};

/// UDP socket buffer size asked for; bulk transfers overflow the default 208 KiB.
const SOCKET_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// At most this many lanes (TUN queues, and sockets sharing the WireGuard port).
const MAX_LANES: usize = 8;

/// How many lanes the data plane runs, a lane being a TUN queue and a socket receiving on the
/// port, each read by its own task: one per runtime worker, but no more than there are peers
/// (the kernel keeps each peer's datagrams on one socket, so a box with one peer would only
/// ever use one). A hub thus handles different facilities on different cores at once.
pub(super) fn lane_count(peers: usize, workers: usize) -> usize {
    peers.min(workers).clamp(1, MAX_LANES)
}

/// How many of the tunnel's peers can carry traffic at the same time, which is what lanes
/// are for: every peer of a hub; on a facility's box a hub group (its primary and backup data
/// centres) counts once, since only its active member carries traffic.
pub(super) fn peers_at_once(config: &Config) -> usize {
    let Some(tunnel) = &config.tunnel else {
        return 0;
    };
    let grouped = match (&tunnel.failover, config.facility.role) {
        (Some(failover), role) if role != Role::Hub => tunnel
            .peers
            .iter()
            .filter(|peer| failover.hubs.contains(&peer.name))
            .count(),
        _ => 0,
    };
    tunnel.peers.len() - grouped.saturating_sub(1)
}

/// Binds the WireGuard UDP port, `count` sockets of it sharing it with SO_REUSEPORT when more
/// than one (only sockets of the same user can join such a group, and one that did not ask for
/// sharing still makes the bind fail): dual-stack when the kernel has IPv6, IPv4 otherwise.
/// The first socket is required; a further one that cannot be bound is left out, with a
/// warning. `port` 0 picks a free port for the first, and the others join it. Returns the first
/// and the others. A restart binds only after the old plane's sockets closed (`stop_tasks`);
/// should a straggling holder keep them open past its wait, the new group joins theirs and
/// loses the datagrams hashed to them until the holder lets go, where one socket would have
/// failed the restart.
pub(super) fn bind_udp(port: u16, count: usize) -> std::io::Result<(UdpSocket, Vec<UdpSocket>)> {
    let shared = count > 1;
    let (first, v6) = match bind_udp_socket(true, port, shared) {
        Ok(s) => (s, true),
        Err(_) => (bind_udp_socket(false, port, shared)?, false),
    };
    let port = first.local_addr()?.as_socket().map_or(port, |a| a.port());
    let first = UdpSocket::from_std(first.into())?;
    let mut sockets = Vec::new();
    for _ in 1..count {
        match bind_udp_socket(v6, port, shared).and_then(|s| UdpSocket::from_std(s.into())) {
            Ok(socket) => sockets.push(socket),
            Err(error) => {
                tracing::warn!(%error, port, sockets = 1 + sockets.len(), "cannot open another socket on the WireGuard port; receiving on fewer");
                break;
            }
        }
    }
    Ok((first, sockets))
}

/// One non-blocking UDP socket bound to `port` on every address (dual-stack for `v6`).
fn bind_udp_socket(v6: bool, port: u16, shared: bool) -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let (domain, any) = if v6 {
        (Domain::IPV6, IpAddr::V6(Ipv6Addr::UNSPECIFIED))
    } else {
        (Domain::IPV4, IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    };
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if v6 {
        socket.set_only_v6(false)?;
    }
    if shared {
        nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::ReusePort, &true)
            .map_err(std::io::Error::from)?;
    }
    socket.bind(&SocketAddr::new(any, port).into())?;
    size_buffers(&socket);
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// Large buffers keep bursts from overflowing the receive queue; as root the system maximum is
/// bypassed, otherwise the kernel caps the request.
fn size_buffers(socket: &socket2::Socket) {
    use nix::sys::socket::{setsockopt, sockopt};
    if setsockopt(socket, sockopt::RcvBufForce, &SOCKET_BUFFER_BYTES).is_err() {
        let _ = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    }
    if setsockopt(socket, sockopt::SndBufForce, &SOCKET_BUFFER_BYTES).is_err() {
        let _ = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net1_one_lane_per_core_but_no_more_than_peers() {
        assert_eq!(lane_count(1, 2), 1);
        assert_eq!(lane_count(0, 2), 1);
        assert_eq!(lane_count(1000, 2), 2);
        assert_eq!(lane_count(3, 16), 3);
        assert_eq!(lane_count(1000, 64), 8);
        assert_eq!(lane_count(1000, 1), 1);
    }

    /// A hub's facilities are all at once; a facility's primary and backup data centres are one
    /// at a time (one lane), whatever else it has.
    #[test]
    fn net1_lanes_count_the_peers_that_carry_traffic_at_once() {
        let example: Config =
            toml::from_str(include_str!("../../../config/hub.toml")).expect("the example");
        let count = |role: Role, peers: &[&str], group: &[&str]| {
            let mut config = example.clone();
            config.facility.role = role;
            let tunnel = config.tunnel.as_mut().expect("[tunnel]");
            let model = tunnel.peers[0].clone();
            tunnel.peers = peers
                .iter()
                .map(|name| crate::config::PeerConfig {
                    name: name.to_string(),
                    ..model.clone()
                })
                .collect();
            tunnel.failover = (!group.is_empty()).then(|| crate::config::FailoverConfig {
                hubs: group.iter().map(|h| h.to_string()).collect(),
                failover_after_secs: 30,
                fail_back_after_secs: 120,
                probe_interval_secs: 10,
            });
            peers_at_once(&config)
        };
        assert_eq!(count(Role::Hub, &["a", "b", "c"], &[]), 3);
        assert_eq!(count(Role::Hub, &["a", "b", "c"], &["a", "b"]), 3);
        assert_eq!(count(Role::Disclosing, &["dc"], &[]), 1);
        assert_eq!(count(Role::Viewing, &["dc", "dc2"], &["dc", "dc2"]), 1);
        assert_eq!(count(Role::Viewing, &["dc", "dc2", "x"], &["dc", "dc2"]), 2);
        assert_eq!(count(Role::Disclosing, &["dc", "x"], &[]), 2);
    }

    #[tokio::test]
    async fn net1_the_port_is_shared_by_the_group_and_by_nobody_else() {
        let (first, more) = bind_udp(0, 3).expect("three sockets");
        let group: Vec<_> = std::iter::once(first).chain(more).collect();
        let ports: Vec<u16> = group
            .iter()
            .map(|s| s.local_addr().expect("bound").port())
            .collect();
        assert_eq!(ports.len(), 3);
        assert!(ports.iter().all(|p| *p == ports[0] && *p != 0), "{ports:?}");
        // A socket that does not ask to share (another program) is refused the port...
        let stranger = std::net::UdpSocket::bind(("0.0.0.0", ports[0]));
        assert!(stranger.is_err(), "a plain bind joined the group");
        drop(group);
        // ...and one holding it makes the group's bind fail, loudly, as before.
        let holder = std::net::UdpSocket::bind(("::", 0))
            .or_else(|_| std::net::UdpSocket::bind(("0.0.0.0", 0)))
            .expect("a port");
        let taken = holder.local_addr().expect("bound").port();
        assert!(bind_udp(taken, 2).is_err());
        assert!(bind_udp(taken, 1).is_err());
    }
}
