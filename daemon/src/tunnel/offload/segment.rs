//! Splitting a super-segment (TSO/USO) into packets of the tunnel's MTU: IP lengths and ids,
//! TCP sequence numbers and flags, and checksums made right for each.

use super::checksum::{checksum, fold, pseudo_header_sum, sum_bytes};
use super::wire::*;
use super::{OffloadError, VnetHeader, GSO_ECN, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4};

/// Most packets one super-segment is split into: 64 KiB at the smallest IPv4 MSS (536 bytes)
/// is 123; more means a segment size no kernel would use, and the read is dropped.
const MAX_SEGMENTS_PER_READ: usize = 128;

/// Packets split from one super-segment, kept in one buffer that is reused from read to read.
#[derive(Debug, Default)]
pub struct Segments {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Segments {
    /// Empty buffers, grown on first use and kept.
    pub fn new() -> Self {
        Segments::default()
    }

    /// The packets, in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(self.ends.iter().copied())
            .map(|(start, end)| &self.bytes[start..end])
    }

    /// How many packets there are.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }
}

/// Splits a super-segment into packets of `gso_size` payload bytes each.
pub(super) fn split(
    packet: &[u8],
    header: VnetHeader,
    segments: &mut Segments,
) -> Result<(), OffloadError> {
    segments.clear();
    let (ip_len, protocol) = ip_header(packet)?;
    let is_v4 = packet[0] >> 4 == 4;
    let gso = header.gso_type & !GSO_ECN;
    let expected_protocol = if gso == GSO_UDP_L4 {
        IPPROTO_UDP
    } else {
        IPPROTO_TCP
    };
    if protocol != expected_protocol
        || usize::from(header.csum_start) != ip_len
        || (gso == GSO_TCPV4 && !is_v4)
        || (gso == GSO_TCPV6 && is_v4)
    {
        return Err(OffloadError::BadHeaders);
    }
    let l4_len = if protocol == IPPROTO_TCP {
        let offset = *packet.get(ip_len + 12).ok_or(OffloadError::BadHeaders)?;
        usize::from(offset >> 4) * 4
    } else {
        UDP_HEADER_BYTES
    };
    let hdr_len = ip_len + l4_len;
    if (protocol == IPPROTO_TCP && l4_len < TCP_HEADER_MIN) || hdr_len > packet.len() {
        return Err(OffloadError::BadHeaders);
    }
    let gso_size = usize::from(header.gso_size);
    if gso_size == 0 {
        return Err(OffloadError::BadSegmentSize(header.gso_size));
    }
    let headers = &packet[..hdr_len];
    let payload = &packet[hdr_len..];
    let count = payload.len().div_ceil(gso_size).max(1);
    if count > MAX_SEGMENTS_PER_READ {
        return Err(OffloadError::BadSegmentSize(header.gso_size));
    }
    let first_seq = u32::from_be_bytes([
        headers[ip_len + 4],
        headers[ip_len + 5],
        headers[ip_len + 6],
        headers[ip_len + 7],
    ]);
    let first_id = u16::from_be_bytes([headers[4], headers[5]]);
    segments.bytes.reserve(count * hdr_len + payload.len());
    for (i, chunk) in payload
        .chunks(gso_size)
        .chain(payload.is_empty().then_some(&payload[..0]))
        .enumerate()
    {
        let start = segments.bytes.len();
        segments.bytes.extend_from_slice(headers);
        segments.bytes.extend_from_slice(chunk);
        let segment = &mut segments.bytes[start..];
        let total = segment.len();
        let last = i + 1 == count;
        if is_v4 {
            segment[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            // Consecutive ids, as the kernel's own segmentation gives them.
            let id = first_id.wrapping_add(i as u16);
            segment[4..6].copy_from_slice(&id.to_be_bytes());
            segment[10..12].fill(0);
            let sum = checksum(&segment[..ip_len]);
            segment[10..12].copy_from_slice(&sum.to_be_bytes());
        } else {
            segment[4..6].copy_from_slice(&((total - IPV6_HEADER_BYTES) as u16).to_be_bytes());
        }
        let l4 = ip_len;
        let checksum_at = if protocol == IPPROTO_TCP {
            let seq = first_seq.wrapping_add((i * gso_size) as u32);
            segment[l4 + 4..l4 + 8].copy_from_slice(&seq.to_be_bytes());
            if !last {
                segment[l4 + 13] &= !(TCP_FLAG_FIN | TCP_FLAG_PSH);
            }
            if i > 0 {
                segment[l4 + 13] &= !TCP_FLAG_CWR;
            }
            l4 + TCP_CHECKSUM_OFFSET
        } else {
            let udp_len = (total - l4) as u16;
            segment[l4 + 4..l4 + 6].copy_from_slice(&udp_len.to_be_bytes());
            l4 + UDP_CHECKSUM_OFFSET
        };
        segment[checksum_at..checksum_at + 2].fill(0);
        let sum = pseudo_header_sum(segment, protocol, total - l4);
        let mut sum = !fold(sum_bytes(sum, &segment[l4..]));
        if protocol == IPPROTO_UDP && sum == 0 {
            sum = 0xffff;
        }
        segment[checksum_at..checksum_at + 2].copy_from_slice(&sum.to_be_bytes());
        segments.ends.push(segments.bytes.len());
    }
    Ok(())
}
