//! The TUN device: opened from `/dev/net/tun`, read and written without blocking. With
//! offloads (`IFF_VNET_HDR`, `TUNSETOFFLOAD`) every read and write carries a virtio-net header and
//! may be a TCP/UDP super-packet of up to 64 KiB (see `offload`); where the kernel refuses them
//! the device is opened again as before and moves one plain packet per call.
//!
//! A hub's device has several queues (`IFF_MULTI_QUEUE`), one descriptor each: the kernel hands
//! each flow to one queue (the one its packets from renkei last came through), so the data plane
//! reads different peers' traffic in different tasks at once. A hub's device is multi-queue even
//! with one queue, so that a config change bringing more facilities can attach more queues to
//! the kept device.
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

/// An open TUN interface: one queue, or several on a multi-queue device.
pub struct Tun {
    /// Never empty.
    queues: Vec<TunQueue>,
    offloads: Offloads,
    /// Made with `IFF_MULTI_QUEUE`: queues can be attached and detached while it lives.
    multi_queue: bool,
}

/// One queue of a TUN device: its own descriptor, read and written on its own.
pub struct TunQueue {
    fd: AsyncFd<OwnedFd>,
    vnet_hdr: bool,
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
        Self::create_queues(name, switched_off, 1)
    }

    /// As [`Tun::create`], with `queues` queues (a multi-queue device when more than one). A
    /// kernel that refuses a multi-queue device gets a single-queue one, said once in the log.
    pub fn create_queues(
        name: &str,
        switched_off: Option<&str>,
        queues: usize,
    ) -> Result<Tun, TunError> {
        Self::create_layout(name, switched_off, queues, queues > 1)
    }

    /// As [`Tun::create_queues`], but a multi-queue device even with one queue, so that
    /// [`Tun::set_queue_count`] can add queues later (a hub's, whose facilities come by config
    /// changes).
    pub fn create_multi_queue(
        name: &str,
        switched_off: Option<&str>,
        queues: usize,
    ) -> Result<Tun, TunError> {
        Self::create_layout(name, switched_off, queues, true)
    }

    fn create_layout(
        name: &str,
        switched_off: Option<&str>,
        queues: usize,
        multi: bool,
    ) -> Result<Tun, TunError> {
        if multi {
            match Self::create_with(name, switched_off, queues.max(1), true) {
                Err(TunError::Create { source, .. })
                    if source.raw_os_error() == Some(libc::EINVAL) =>
                {
                    tracing::warn!(interface = name, error = %source, "the kernel refused a multi-queue TUN device; one queue");
                }
                other => return other,
            }
        }
        Self::create_with(name, switched_off, 1, false)
    }

    fn create_with(
        name: &str,
        switched_off: Option<&str>,
        queues: usize,
        multi: bool,
    ) -> Result<Tun, TunError> {
        if let Some(why) = switched_off {
            return Self::create_plain(name, Offloads::Off(why.to_string()), queues, multi);
        }
        match Self::open_queues(name, true, queues, multi) {
            Ok(fds) => match fds
                .iter()
                .try_fold(true, |uso, fd| enable_offloads(fd).map(|took| uso & took))
            {
                Ok(uso) => Self::register(fds, Offloads::On { uso }, multi),
                Err(e) => {
                    // Closing the descriptors removes the interface; it is made again plain.
                    drop(fds);
                    let why = format!("the kernel refused TUNSETOFFLOAD: {e}");
                    tracing::warn!(interface = name, reason = %why, "TUN offloads off");
                    Self::create_plain(name, Offloads::Off(why), queues, multi)
                }
            },
            Err(TunError::Create { source, .. })
                if source.raw_os_error() == Some(libc::EINVAL) && !multi =>
            {
                let why = format!("the kernel refused IFF_VNET_HDR: {source}");
                tracing::warn!(interface = name, reason = %why, "TUN offloads off");
                Self::create_plain(name, Offloads::Off(why), queues, multi)
            }
            Err(e) => Err(e),
        }
    }

    fn create_plain(
        name: &str,
        why: Offloads,
        queues: usize,
        multi: bool,
    ) -> Result<Tun, TunError> {
        let fds = Self::open_queues(name, false, queues, multi)?;
        Self::register(fds, why, multi)
    }

    fn register(fds: Vec<OwnedFd>, offloads: Offloads, multi_queue: bool) -> Result<Tun, TunError> {
        let vnet_hdr = offloads.is_on();
        let queues = fds
            .into_iter()
            .map(|fd| TunQueue::register(fd, vnet_hdr))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Tun {
            queues,
            offloads,
            multi_queue,
        })
    }

    /// Whether this device can be given `queues` queues: any count on a multi-queue device,
    /// only one on a device made with a single queue (the kernel cannot add to that).
    pub fn can_have_queues(&self, queues: usize) -> bool {
        self.multi_queue || queues <= 1
    }

    /// Gives a kept device `queues` queues (a config change moved the number of lanes):
    /// detaches the surplus (closing a queue's descriptor detaches it) or attaches more, with
    /// the same header and offloads as the others. A queue the kernel will not attach is left
    /// out, with a warning: the device keeps working with the queues it has. Returns how many
    /// queues it has now.
    pub fn set_queue_count(&mut self, name: &str, queues: usize) -> usize {
        let queues = queues.max(1);
        if queues < self.queues.len() {
            self.queues.truncate(queues);
        } else if !self.can_have_queues(queues) {
            tracing::warn!(
                interface = name,
                queues,
                "a single-queue TUN device cannot take more queues; its lanes share the one it has until the daemon restarts"
            );
        } else {
            let vnet_hdr = self.offloads.is_on();
            while self.queues.len() < queues {
                let attached = Self::open(name, vnet_hdr, true).and_then(|fd| {
                    if vnet_hdr {
                        enable_offloads(&fd).map_err(|source| TunError::Create {
                            name: name.to_string(),
                            source,
                        })?;
                    }
                    TunQueue::register(fd, vnet_hdr)
                });
                match attached {
                    Ok(queue) => self.queues.push(queue),
                    Err(error) => {
                        tracing::warn!(interface = name, %error, queues = self.queues.len(), "the kernel would not attach another TUN queue; keeping those there are");
                        break;
                    }
                }
            }
        }
        self.queues.len()
    }

    /// Whether reads and writes carry a virtio-net header.
    pub fn offloads(&self) -> &Offloads {
        &self.offloads
    }

    /// How many queues the device has (at least one).
    pub fn queue_count(&self) -> usize {
        self.queues.len()
    }

    /// Queue `index` (taken modulo the number of queues, so any index names one).
    pub fn queue(&self, index: usize) -> &TunQueue {
        &self.queues[index % self.queues.len()]
    }

    /// Opens `queues` descriptors of the device `name`: the first creates it, the others attach
    /// to it (`IFF_MULTI_QUEUE` on all of them when `multi`).
    fn open_queues(
        name: &str,
        vnet_hdr: bool,
        queues: usize,
        multi: bool,
    ) -> Result<Vec<OwnedFd>, TunError> {
        (0..queues.max(1))
            .map(|_| Self::open(name, vnet_hdr, multi))
            .collect()
    }

    fn open(name: &str, vnet_hdr: bool, multi_queue: bool) -> Result<OwnedFd, TunError> {
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
        let multi = if multi_queue {
            libc::IFF_MULTI_QUEUE
        } else {
            0
        };
        request.ifr_ifru.ifru_flags =
            (libc::IFF_TUN | libc::IFF_NO_PI | vnet | multi) as libc::c_short;
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

    /// Reads one packet from the first queue, waiting until one is there.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.queue(0).recv(buf).await
    }

    /// [`TunQueue::try_recv`] on the first queue.
    pub fn try_recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.queue(0).try_recv(buf)
    }

    /// [`TunQueue::try_send`] on the first queue.
    pub fn try_send(&self, packet: &[u8]) -> io::Result<usize> {
        self.queue(0).try_send(packet)
    }

    /// [`TunQueue::try_send_vectored`] on the first queue.
    pub fn try_send_vectored(&self, parts: &[IoSlice<'_>]) -> io::Result<usize> {
        self.queue(0).try_send_vectored(parts)
    }
}

impl TunQueue {
    fn register(fd: OwnedFd, vnet_hdr: bool) -> Result<TunQueue, TunError> {
        // SAFETY: `fd` is an open descriptor owned by the AsyncFd for its whole life; nothing
        // else closes or replaces it.
        unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE | Interest::WRITABLE) }
            .map(|fd| TunQueue { fd, vnet_hdr })
            .map_err(|e| TunError::Register(e.into()))
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
        if self.vnet_hdr {
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
