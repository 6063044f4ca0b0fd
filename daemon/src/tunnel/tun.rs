//! The TUN device: opened from `/dev/net/tun`, read and written packet by packet without blocking.
//!
//! The device is not persistent: when the daemon exits (or is killed) the kernel removes it with
//! its addresses and routes, so a crash never leaves a route into a dead tunnel behind.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Why the TUN device could not be created.
#[derive(Debug, thiserror::Error)]
pub enum TunError {
    /// `/dev/net/tun` could not be opened (no CAP_NET_ADMIN, or no tun module).
    #[error("cannot open /dev/net/tun: {0}")]
    Open(io::Error),
    /// The kernel refused to create the interface (name taken, or not permitted).
    #[error("cannot create TUN interface {name}: {source}")]
    Create {
        /// Interface name.
        name: String,
        /// What the kernel said.
        source: io::Error,
    },
    /// Registering with the tokio reactor failed.
    #[error("cannot register the TUN device with the event loop: {0}")]
    Register(io::Error),
}

/// An open TUN interface.
pub struct Tun {
    fd: AsyncFd<OwnedFd>,
}

impl Tun {
    /// Creates the interface `name` (layer 3, no packet information header).
    pub fn create(name: &str) -> Result<Tun, TunError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(TunError::Open)?;
        let fd = OwnedFd::from(file);

        // SAFETY: ifreq is plain old data; all-zero is a valid value.
        let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
        let bytes = name.as_bytes();
        if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
            return Err(TunError::Create {
                name: name.to_string(),
                source: io::Error::new(io::ErrorKind::InvalidInput, "invalid interface name"),
            });
        }
        for (slot, byte) in request.ifr_name.iter_mut().zip(bytes) {
            *slot = *byte as libc::c_char;
        }
        request.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: TUNSETIFF reads an ifreq from the pointer; `request` lives across the call.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut request) };
        if rc < 0 {
            return Err(TunError::Create {
                name: name.to_string(),
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: `fd` is an open descriptor owned by the AsyncFd for its whole life; nothing
        // else closes or replaces it.
        let fd =
            unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE | Interest::WRITABLE) }
                .map_err(|e| TunError::Register(e.into()))?;
        Ok(Tun { fd })
    }

    /// Reads one packet, waiting until one is there.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.fd
            .async_io(Interest::READABLE, |fd| {
                nix::unistd::read(fd, buf).map_err(io::Error::from)
            })
            .await
    }

    /// Reads one packet if one is queued, without waiting. The descriptor is non-blocking, so
    /// this is a plain read that may fail with `WouldBlock`.
    pub fn try_recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        nix::unistd::read(self.fd.get_ref(), buf).map_err(io::Error::from)
    }

    /// Writes one packet without waiting; the kernel queues or drops it, it does not block.
    pub fn try_send(&self, packet: &[u8]) -> io::Result<usize> {
        nix::unistd::write(self.fd.get_ref(), packet).map_err(io::Error::from)
    }
}
