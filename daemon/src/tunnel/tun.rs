//! The TUN device: opened from `/dev/net/tun`, read and written without blocking. With
//! offloads (`IFF_VNET_HDR`, `TUNSETOFFLOAD`) every read and write carries a virtio-net header and
//! may be a TCP/UDP super-packet of up to 64 KiB (see `offload`); where the kernel refuses them
//! the device is opened again as before and moves one plain packet per call.
//!
//! The device is not persistent: when the daemon exits (or is killed) the kernel removes it with
//! its addresses and routes, so a crash never leaves a route into a dead tunnel behind.

use std::fs::OpenOptions;
use std::io::{self, IoSlice};
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

/// Whether the device moves super-packets behind a virtio-net header, and if not, why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offloads {
    /// On: TCP segmentation both IP versions, and UDP segmentation when `uso`.
    On {
        /// The kernel took USO4/USO6 too.
        uso: bool,
    },
    /// Off, with the reason shown to the operator.
    Off(String),
}

impl Offloads {
    /// `on (tso4, tso6, uso)` or `off (why)`, as the status snapshot shows it.
    pub fn describe(&self) -> String {
        match self {
            Offloads::On { uso: true } => "on (csum, tso4, tso6, uso4, uso6)".to_string(),
            Offloads::On { uso: false } => "on (csum, tso4, tso6)".to_string(),
            Offloads::Off(why) => format!("off ({why})"),
        }
    }

    /// True when reads and writes carry a virtio-net header.
    pub fn is_on(&self) -> bool {
        matches!(self, Offloads::On { .. })
    }
}

/// An open TUN interface.
pub struct Tun {
    fd: AsyncFd<OwnedFd>,
    offloads: Offloads,
}

/// Offloads asked of the kernel first; without USO if it refuses that (kernels before 6.2).
const OFFLOADS_WITH_USO: libc::c_uint =
    libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_USO4 | libc::TUN_F_USO6;
const OFFLOADS_TCP_ONLY: libc::c_uint = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6;

impl Tun {
    /// Creates the interface `name` (layer 3, no packet information header), with offloads
    /// unless `switched_off` gives a reason not to, and the kernel takes them; otherwise
    /// exactly as without, and [`Tun::offloads`] says why. A refusal is logged once here.
    pub fn create(name: &str, switched_off: Option<&str>) -> Result<Tun, TunError> {
        if let Some(why) = switched_off {
            return Self::create_plain(name, Offloads::Off(why.to_string()));
        }
        match Self::open(name, true) {
            Ok(fd) => match enable_offloads(&fd) {
                Ok(uso) => Self::register(fd, Offloads::On { uso }),
                Err(e) => {
                    // Closing the descriptor removes the interface; it is made again plain.
                    drop(fd);
                    let why = format!("the kernel refused TUNSETOFFLOAD: {e}");
                    tracing::warn!(interface = name, reason = %why, "TUN offloads off");
                    Self::create_plain(name, Offloads::Off(why))
                }
            },
            Err(TunError::Create { source, .. }) if source.raw_os_error() == Some(libc::EINVAL) => {
                let why = format!("the kernel refused IFF_VNET_HDR: {source}");
                tracing::warn!(interface = name, reason = %why, "TUN offloads off");
                Self::create_plain(name, Offloads::Off(why))
            }
            Err(e) => Err(e),
        }
    }

    fn create_plain(name: &str, why: Offloads) -> Result<Tun, TunError> {
        let fd = Self::open(name, false)?;
        Self::register(fd, why)
    }

    fn register(fd: OwnedFd, offloads: Offloads) -> Result<Tun, TunError> {
        // SAFETY: `fd` is an open descriptor owned by the AsyncFd for its whole life; nothing
        // else closes or replaces it.
        let fd =
            unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE | Interest::WRITABLE) }
                .map_err(|e| TunError::Register(e.into()))?;
        Ok(Tun { fd, offloads })
    }

    /// Whether reads and writes carry a virtio-net header.
    pub fn offloads(&self) -> &Offloads {
        &self.offloads
    }

    fn open(name: &str, vnet_hdr: bool) -> Result<OwnedFd, TunError> {
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
        let vnet = if vnet_hdr { libc::IFF_VNET_HDR } else { 0 };
        request.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI | vnet) as libc::c_short;
        // SAFETY: TUNSETIFF reads an ifreq from the pointer; `request` lives across the call.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut request) };
        if rc < 0 {
            return Err(TunError::Create {
                name: name.to_string(),
                source: io::Error::last_os_error(),
            });
        }
        Ok(fd)
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

    /// Writes one plain packet without waiting; the kernel queues or drops it, it does not
    /// block. On an offloading device a zero virtio-net header goes in front of it.
    pub fn try_send(&self, packet: &[u8]) -> io::Result<usize> {
        if self.offloads.is_on() {
            let header = [0u8; super::offload::VNET_HDR_BYTES];
            return self.try_send_vectored(&[IoSlice::new(&header), IoSlice::new(packet)]);
        }
        nix::unistd::write(self.fd.get_ref(), packet).map_err(io::Error::from)
    }

    /// Writes one packet gathered from `parts` (on an offloading device the first part is its
    /// virtio-net header) in one system call, without waiting.
    pub fn try_send_vectored(&self, parts: &[IoSlice<'_>]) -> io::Result<usize> {
        nix::sys::uio::writev(self.fd.get_ref(), parts).map_err(io::Error::from)
    }
}

/// Sets the virtio-net header size and asks for checksum and segmentation offloads; returns
/// whether USO was taken as well.
fn enable_offloads(fd: &OwnedFd) -> io::Result<bool> {
    let size = super::offload::VNET_HDR_BYTES as libc::c_int;
    // SAFETY: TUNSETVNETHDRSZ reads an int from the pointer; `size` lives across the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETVNETHDRSZ, &size) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: TUNSETOFFLOAD takes the flags as the integer argument itself.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETOFFLOAD, OFFLOADS_WITH_USO) } == 0 {
        return Ok(true);
    }
    // SAFETY: as above.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETOFFLOAD, OFFLOADS_TCP_ONLY) } == 0 {
        return Ok(false);
    }
    Err(io::Error::last_os_error())
}
