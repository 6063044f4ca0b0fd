//! The WireGuard UDP socket with segmentation offload: many encrypted packets to one endpoint
//! leave in one `sendmsg` (UDP GSO), and datagrams the kernel coalesced arrive in one `recvmsg`
//! (UDP GRO). Fewer system calls per packet is most of what a userspace tunnel can win.
//! Where the kernel lacks either offload, plain one-datagram calls are used instead.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::socket::{
    recvmsg, sendmsg, setsockopt, sockopt, ControlMessage, ControlMessageOwned, MsgFlags,
    SockaddrStorage,
};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// The kernel accepts at most this many segments in one GSO send.
const MAX_SEGMENTS: usize = 64;
/// One GSO send may carry at most a maximal UDP datagram.
const MAX_BATCH_BYTES: usize = 65_000;

/// Encrypted packets for one endpoint, waiting to leave in one send.
pub(crate) struct GsoBatch {
    buf: Vec<u8>,
    segment: usize,
    count: usize,
    to: Option<SocketAddr>,
    closed: bool,
}

impl GsoBatch {
    pub(crate) fn new() -> Self {
        GsoBatch {
            buf: Vec::with_capacity(MAX_BATCH_BYTES + 2048),
            segment: 0,
            count: 0,
            to: None,
            closed: false,
        }
    }

    /// True when `bytes` for `to` can join this batch: same endpoint, same segment size (only
    /// the last segment may be shorter), within the kernel's limits.
    pub(crate) fn fits(&self, bytes: &[u8], to: SocketAddr) -> bool {
        self.count == 0
            || (self.to == Some(to)
                && !self.closed
                && bytes.len() <= self.segment
                && self.count < MAX_SEGMENTS
                && self.buf.len() + bytes.len() <= MAX_BATCH_BYTES)
    }

    /// Adds a packet; the caller checked `fits`.
    pub(crate) fn push(&mut self, bytes: &[u8], to: SocketAddr) {
        if self.count == 0 {
            self.segment = bytes.len();
            self.to = Some(to);
        } else if bytes.len() < self.segment {
            self.closed = true;
        }
        self.buf.extend_from_slice(bytes);
        self.count += 1;
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.count = 0;
        self.segment = 0;
        self.to = None;
        self.closed = false;
    }
}

/// The sockets bound to the WireGuard port: `first` sends and receives; `more` (sharing the
/// port with SO_REUSEPORT on a box with several peers) only receive, each in its own task.
pub(crate) struct PortSockets {
    pub(crate) first: Udp,
    pub(crate) more: Vec<Udp>,
}

/// The socket and what it supports.
pub(crate) struct Udp {
    socket: UdpSocket,
    is_v6: bool,
    gso: AtomicBool,
}

impl Udp {
    /// Wraps a bound socket and asks for GRO (silently absent on old kernels).
    pub(crate) fn new(socket: UdpSocket) -> Self {
        let is_v6 = socket.local_addr().map(|a| a.is_ipv6()).unwrap_or(false);
        let _ = setsockopt(&socket, sockopt::UdpGroSegment, &true);
        Udp {
            socket,
            is_v6,
            gso: AtomicBool::new(true),
        }
    }

    /// The socket, for single sends and the local address.
    pub(crate) fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    /// IPv4 endpoints on a dual-stack socket are written as v4-mapped addresses.
    pub(crate) fn wire_address(&self, addr: SocketAddr) -> SocketAddr {
        match (self.is_v6, addr) {
            (true, SocketAddr::V4(v4)) => {
                SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
            }
            _ => addr,
        }
    }

    /// Sends a batch (one GSO send, or one send per packet) and empties it. Returns the first
    /// error, after trying every packet.
    pub(crate) async fn send_batch(&self, batch: &mut GsoBatch) -> io::Result<()> {
        let Some(to) = batch.to else {
            return Ok(());
        };
        let to = self.wire_address(to);
        let result = if batch.count > 1 && self.gso.load(Ordering::Relaxed) {
            match self.send_gso(&batch.buf, batch.segment, to).await {
                Err(e) if gso_unsupported(&e) => {
                    tracing::info!(error = %e, "UDP segmentation offload unavailable; sending packet by packet");
                    self.gso.store(false, Ordering::Relaxed);
                    self.send_each(&batch.buf, batch.segment, to).await
                }
                other => other,
            }
        } else {
            self.send_each(&batch.buf, batch.segment.max(1), to).await
        };
        batch.clear();
        result
    }

    async fn send_gso(&self, buf: &[u8], segment: usize, to: SocketAddr) -> io::Result<()> {
        let segment = u16::try_from(segment)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "segment too large"))?;
        let address = SockaddrStorage::from(to);
        let fd = self.socket.as_raw_fd();
        self.socket
            .async_io(Interest::WRITABLE, || {
                let iov = [IoSlice::new(buf)];
                let cmsg = [ControlMessage::UdpGsoSegments(&segment)];
                sendmsg(fd, &iov, &cmsg, MsgFlags::empty(), Some(&address)).map_err(io::Error::from)
            })
            .await
            .map(|_| ())
    }

    async fn send_each(&self, buf: &[u8], segment: usize, to: SocketAddr) -> io::Result<()> {
        let mut first_error = None;
        for chunk in buf.chunks(segment) {
            if let Err(e) = self.socket.send_to(chunk, to).await {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Receives one datagram, or several coalesced by GRO: returns the length, the sender and
    /// the segment size when coalesced.
    pub(crate) async fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, usize)> {
        let fd = self.socket.as_raw_fd();
        self.socket
            .async_io(Interest::READABLE, || recv_gro(fd, buf))
            .await
    }

    /// `recv` without waiting: `WouldBlock` when nothing is queued.
    pub(crate) fn try_recv(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, usize)> {
        let fd = self.socket.as_raw_fd();
        self.socket.try_io(Interest::READABLE, || recv_gro(fd, buf))
    }
}

fn recv_gro(fd: i32, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, usize)> {
    let mut cmsg = nix::cmsg_space!(i32);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<SockaddrStorage>(fd, &mut iov, Some(&mut cmsg), MsgFlags::empty())
        .map_err(io::Error::from)?;
    let len = msg.bytes;
    let mut segment = len;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::UdpGroSegments(size) = c {
                if size > 0 {
                    segment = size as usize;
                }
            }
        }
    }
    let from = msg
        .address
        .and_then(|a| {
            a.as_sockaddr_in()
                .map(|v4| SocketAddr::from(*v4))
                .or_else(|| a.as_sockaddr_in6().map(|v6| SocketAddr::from(*v6)))
        })
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "datagram without a source"))?;
    Ok((len, from, segment.max(1)))
}

fn gso_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EIO) | Some(libc::EINVAL) | Some(libc::ENOPROTOOPT) | Some(libc::EOPNOTSUPP)
    )
}
