//! The virtio-net header in front of every read and write of an offloading TUN device, and
//! what can be wrong with a read.

/// Bytes of the virtio-net header in front of every packet on an offloading TUN device (the
/// legacy header without `num_buffers`, which is what `TUNSETVNETHDRSZ` is set to).
pub const VNET_HDR_BYTES: usize = 10;
/// The largest IP packet the kernel hands over or takes back in one piece.
pub const MAX_SUPER_PACKET_BYTES: usize = 65_535;

/// `flags`: the checksum at `csum_start + csum_offset` holds only the pseudo-header sum.
pub const VNET_F_NEEDS_CSUM: u8 = 1;
/// `gso_type`: a single packet.
pub const GSO_NONE: u8 = 0;
/// `gso_type`: TCP over IPv4.
pub const GSO_TCPV4: u8 = 1;
/// `gso_type`: TCP over IPv6.
pub const GSO_TCPV6: u8 = 4;
/// `gso_type`: UDP segmentation (USO), either IP version.
pub const GSO_UDP_L4: u8 = 5;
/// `gso_type` bit: ECN was negotiated (CWR travels on the first segment only).
pub(super) const GSO_ECN: u8 = 0x80;

/// Why a packet read from the TUN device could not be split (the packet is dropped and counted
/// as malformed: the kernel wrote it, so this means a header this code does not understand).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OffloadError {
    /// Shorter than the virtio-net header.
    #[error("shorter than the virtio-net header")]
    NoHeader,
    /// The IP or transport header is cut short or inconsistent with the virtio-net header.
    #[error("IP or transport header does not match the virtio-net header")]
    BadHeaders,
    /// A `gso_type` this code does not segment.
    #[error("unknown segmentation type {0}")]
    UnknownGso(u8),
    /// `gso_size` is zero or too small for any payload.
    #[error("segment size {0} is unusable")]
    BadSegmentSize(u16),
}

/// The virtio-net header, host byte order (the TUN device is not switched to big endian).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHeader {
    /// `VNET_F_NEEDS_CSUM` or 0.
    pub flags: u8,
    /// One of the `GSO_*` values, possibly with the ECN bit.
    pub gso_type: u8,
    /// Length of the IP and transport headers.
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Where checksumming starts (the transport header).
    pub csum_start: u16,
    /// Where, after `csum_start`, the checksum goes.
    pub csum_offset: u16,
}

impl VnetHeader {
    /// Reads the header in front of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<VnetHeader, OffloadError> {
        let h = bytes.get(..VNET_HDR_BYTES).ok_or(OffloadError::NoHeader)?;
        let u16_at = |i: usize| u16::from_ne_bytes([h[i], h[i + 1]]);
        Ok(VnetHeader {
            flags: h[0],
            gso_type: h[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        })
    }

    /// The header as it goes in front of a packet written to the device.
    pub fn to_bytes(self) -> [u8; VNET_HDR_BYTES] {
        let mut h = [0u8; VNET_HDR_BYTES];
        h[0] = self.flags;
        h[1] = self.gso_type;
        h[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        h[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        h[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        h[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        h
    }
}
