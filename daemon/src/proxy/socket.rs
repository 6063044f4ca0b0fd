//! The TCP sockets of proxied connections: how they are opened and the options every one of
//! them gets.
//!
//! A LAN leg's receive buffer is fixed. Left to the kernel's autotuning, a fast LAN sender's
//! buffer grows to megabytes (the autotuning sees a near-zero RTT and a reader that keeps up
//! with the tunnel, never with the LAN): 64 uploads through a slower tunnel held over 500 MiB in
//! the clinic box's receive queues in `lab bench-proxy`, memory a small box does not have and
//! that the kernel's global TCP memory limit would take back from every socket, the tunnel's
//! included. A LAN round trip is well under a millisecond, so a small window keeps a LAN client
//! at full speed; the data then waits on the client, not in the box. The tunnel leg keeps the
//! autotuning: its window must cover the WAN.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::config::DEFAULT_TCP_USER_TIMEOUT_SECS;

/// Receive buffer asked for on LAN legs: about 1 Gbit/s at a 2 ms round trip, far more than a
/// facility LAN needs. The kernel caps the request at `net.core.rmem_max` (208 KiB on a stock
/// kernel, still about 1 Gbit/s at 1.5 ms) and doubles it for its bookkeeping.
pub const LAN_RECEIVE_BUFFER_BYTES: u32 = 256 * 1024;
/// Backlog of a service listener (what Tokio's own `bind` uses).
const LISTEN_BACKLOG: u32 = 1024;

/// With a silent peer, keepalive probes start after this much idle time ...
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
/// ... are repeated this often ...
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// ... and the count after which the connection would end; with a user timeout set (as here)
/// Linux ends it instead once the user timeout ([`USER_TIMEOUT`] unless the service sets
/// `tcp_user_timeout_secs`) has passed without an answer.
pub const KEEPALIVE_PROBES: u32 = 3;
/// Sent data unacknowledged (or a peer's window closed) for this long ends the connection,
/// instead of the kernel's ~15 minutes of retransmissions; so does a silent peer under
/// keepalive (Linux lets the user timeout decide that too). Not shorter: after a WAN flap under
/// loss Linux's TCP can wait tens of seconds between two retransmissions of a live connection
/// through the tunnel. The receiver echoes a timestamp from before the flap when the hole is
/// filled, the sender times its retransmitted segment by that echo (Karn's rule leaves it
/// nothing else), and its RTO grows to match: 40 to 65 s in the lab after a 3 s flap under 5 %
/// loss. The relay's other legs wait with it behind a closed window, which counts too. 60 s cut
/// such transfers; five minutes outlast two such waits (the RTO is capped at 120 s). The default
/// of a service's `tcp_user_timeout_secs`.
pub const USER_TIMEOUT: Duration = Duration::from_secs(DEFAULT_TCP_USER_TIMEOUT_SECS);

/// Which network a socket faces, which decides its receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leg {
    /// The facility LAN (or the hub's local network): short round trips, fixed buffer.
    Lan,
    /// Inside the tunnel: WAN round trips, the kernel's autotuning.
    Tunnel,
}

fn new_socket(address: SocketAddr, leg: Leg) -> io::Result<TcpSocket> {
    let socket = match address {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if leg == Leg::Lan {
        // Before listen or connect, so the window scale offered in the handshake fits it.
        socket.set_recv_buffer_size(LAN_RECEIVE_BUFFER_BYTES)?;
    }
    Ok(socket)
}

/// Binds a service listener; accepted connections inherit the `leg`'s receive buffer.
pub fn listen(address: SocketAddr, leg: Leg) -> io::Result<TcpListener> {
    let socket = new_socket(address, leg)?;
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Connects to `target` (`host:port`, a name tried address by address as `TcpStream::connect`
/// does) with the `leg`'s receive buffer.
pub async fn connect(target: &str, leg: Leg) -> io::Result<TcpStream> {
    let mut last = None;
    for address in tokio::net::lookup_host(target).await? {
        match new_socket(address, leg)?.connect(address).await {
            Ok(stream) => return Ok(stream),
            Err(err) => last = Some(err),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(io::ErrorKind::NotFound, format!("{target}: no address"))
    }))
}

/// Socket options of every proxied connection, both legs. A box or PC that vanishes (power
/// cut, WAN gone, the hub's process killed with its sessions) sends no FIN: without keepalive
/// and a user timeout the other end would wait for the service's idle timeout, holding a
/// connection slot and, on a viewing box, the tunnel. With them it is logged as an error after
/// `user_timeout` (the service's `tcp_user_timeout_secs`, five minutes by default).
pub fn tune(stream: &TcpStream, user_timeout: Duration) {
    let _ = stream.set_nodelay(true);
    let socket = socket2::SockRef::from(stream);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_PROBES);
    let _ = socket.set_tcp_keepalive(&keepalive);
    let _ = socket.set_tcp_user_timeout(Some(user_timeout));
}

/// Makes the coming drop of `stream` send RST instead of FIN (linger 0 never blocks).
pub fn reset_on_drop(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn receive_buffer(stream: &TcpStream) -> usize {
        socket2::SockRef::from(stream)
            .recv_buffer_size()
            .expect("SO_RCVBUF")
    }

    #[tokio::test]
    async fn lan_legs_have_the_fixed_receive_buffer_and_tunnel_legs_the_kernels() {
        // Linux caps the request at rmem_max and reports twice that (its bookkeeping share).
        let rmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .expect("rmem_max")
            .trim()
            .parse()
            .expect("rmem_max value");
        let fixed = 2 * rmem_max.min(LAN_RECEIVE_BUFFER_BYTES as usize);

        let lan = listen("127.0.0.1:0".parse().expect("address"), Leg::Lan).expect("listen");
        let address = lan.local_addr().expect("address").to_string();
        let (client, accepted) = tokio::join!(connect(&address, Leg::Lan), lan.accept());
        let (mut client, (mut accepted, _)) = (client.expect("connect"), accepted.expect("accept"));
        assert_eq!(
            receive_buffer(&accepted),
            fixed,
            "accepted on a LAN listener"
        );
        assert_eq!(receive_buffer(&client), fixed, "connected as a LAN leg");

        // Bytes still flow both ways.
        client.write_all(b"ping").await.expect("write");
        let mut got = [0u8; 4];
        accepted.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"ping");

        let tunnel = listen("127.0.0.1:0".parse().expect("address"), Leg::Tunnel).expect("listen");
        let address = tunnel.local_addr().expect("address").to_string();
        let (client, accepted) = tokio::join!(connect(&address, Leg::Tunnel), tunnel.accept());
        let (client, (accepted, _)) = (client.expect("connect"), accepted.expect("accept"));
        // A tunnel leg starts at the kernel's default (tcp_rmem's middle value), from which
        // autotuning grows it.
        let rmem = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_rmem").expect("tcp_rmem");
        let default: usize = rmem
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .expect("tcp_rmem default");
        assert_ne!(
            default, fixed,
            "the test needs a kernel default unlike the LAN buffer"
        );
        assert_eq!(
            receive_buffer(&accepted),
            default,
            "accepted on a tunnel listener"
        );
        assert_eq!(
            receive_buffer(&client),
            default,
            "connected as a tunnel leg"
        );
    }

    #[tokio::test]
    async fn connect_names_a_target_that_refuses() {
        let listener = listen("127.0.0.1:0".parse().expect("address"), Leg::Lan).expect("listen");
        let address = listener.local_addr().expect("address").to_string();
        drop(listener);
        let err = connect(&address, Leg::Lan)
            .await
            .expect_err("nobody listens");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    }
}
