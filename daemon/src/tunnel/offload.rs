//! TUN segmentation offload (`IFF_VNET_HDR`): the kernel hands the data plane TCP (and, with
//! USO, UDP) super-segments of up to 64 KiB behind a virtio-net header, and takes coalesced
//! ones back. This module reads and writes that header, splits a super-segment into packets
//! that fit the tunnel's MTU (IP lengths and ids, TCP sequence numbers and flags, checksums all
//! made right), completes partial checksums, and coalesces decrypted packets of one TCP flow
//! (GRO). It works on byte slices only: no system calls, no allocation once its buffers grew.

use std::io::IoSlice;
use std::ops::Range;

/// Bytes of the virtio-net header in front of every packet on an offloading TUN device (the
/// legacy header without `num_buffers`, which is what `TUNSETVNETHDRSZ` is set to).
pub const VNET_HDR_BYTES: usize = 10;
/// The largest IP packet the kernel hands over or takes back in one piece.
pub const MAX_SUPER_PACKET_BYTES: usize = 65_535;
/// Most packets one super-segment is split into: 64 KiB at the smallest IPv4 MSS (536 bytes)
/// is 123; more means a segment size no kernel would use, and the read is dropped.
const MAX_SEGMENTS_PER_READ: usize = 128;
/// Most packets coalesced into one super-packet (the kernel's own GRO stops at 64 too).
const MAX_COALESCED_PACKETS: usize = 64;

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
const GSO_ECN: u8 = 0x80;

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPV4_HEADER_MIN: usize = 20;
const IPV6_HEADER_BYTES: usize = 40;
const TCP_HEADER_MIN: usize = 20;
const UDP_HEADER_BYTES: usize = 8;
const TCP_CHECKSUM_OFFSET: usize = 16;
const UDP_CHECKSUM_OFFSET: usize = 6;
const TCP_FLAG_FIN: u8 = 0x01;
const TCP_FLAG_SYN: u8 = 0x02;
const TCP_FLAG_RST: u8 = 0x04;
const TCP_FLAG_PSH: u8 = 0x08;
const TCP_FLAG_ACK: u8 = 0x10;
const TCP_FLAG_CWR: u8 = 0x80;

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

/// What one read from the device holds once its header is handled.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    /// One packet, checksums complete, at this range of the buffer that was read.
    Single(Range<usize>),
    /// Several packets, now in the `Segments` buffer.
    Split,
}

/// Handles one read (`buf`: virtio-net header and packet): completes a partial checksum in
/// place, or splits a super-segment into `segments`.
pub fn receive(buf: &mut [u8], segments: &mut Segments) -> Result<Read, OffloadError> {
    let header = VnetHeader::parse(buf)?;
    let packet = &mut buf[VNET_HDR_BYTES..];
    match header.gso_type & !GSO_ECN {
        GSO_NONE => {
            if header.flags & VNET_F_NEEDS_CSUM != 0 {
                complete_checksum(
                    packet,
                    usize::from(header.csum_start),
                    usize::from(header.csum_offset),
                )?;
            }
            Ok(Read::Single(VNET_HDR_BYTES..buf.len()))
        }
        GSO_TCPV4 | GSO_TCPV6 | GSO_UDP_L4 => {
            split(packet, header, segments)?;
            Ok(Read::Split)
        }
        other => Err(OffloadError::UnknownGso(other)),
    }
}

/// Folds the one's-complement sum of `bytes` into `sum` (not yet folded to 16 bits).
fn sum_bytes(mut sum: u64, bytes: &[u8]) -> u64 {
    let mut chunks = bytes.chunks_exact(4);
    for c in &mut chunks {
        sum += u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    }
    let rest = chunks.remainder();
    let mut pairs = rest.chunks_exact(2);
    for p in &mut pairs {
        sum += u64::from(u16::from_be_bytes([p[0], p[1]]));
    }
    if let [last] = pairs.remainder() {
        sum += u64::from(*last) << 8;
    }
    sum
}

fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The Internet checksum of `bytes` (complemented, ready to store).
pub fn checksum(bytes: &[u8]) -> u16 {
    !fold(sum_bytes(0, bytes))
}

/// The pseudo-header sum of an IPv4/IPv6 `packet`'s addresses, `protocol` and transport
/// `length` (not complemented).
fn pseudo_header_sum(packet: &[u8], protocol: u8, length: usize) -> u64 {
    let addresses = if packet[0] >> 4 == 4 {
        &packet[12..20]
    } else {
        &packet[8..40]
    };
    sum_bytes(0, addresses) + u64::from(protocol) + length as u64
}

/// Completes a partial checksum: the field at `start + offset` holds the pseudo-header sum, the
/// sum of everything from `start` on goes into it.
fn complete_checksum(packet: &mut [u8], start: usize, offset: usize) -> Result<(), OffloadError> {
    let field = start + offset;
    if start >= packet.len() || field + 2 > packet.len() {
        return Err(OffloadError::BadHeaders);
    }
    let sum = !fold(sum_bytes(0, &packet[start..]));
    packet[field..field + 2].copy_from_slice(&sum.to_be_bytes());
    Ok(())
}

/// Where the IP header ends and which transport protocol follows, for a packet with no IPv4
/// options the kernel would not have offloaded and no IPv6 extension headers.
fn ip_header(packet: &[u8]) -> Result<(usize, u8), OffloadError> {
    match packet.first().map(|b| b >> 4) {
        Some(4) if packet.len() >= IPV4_HEADER_MIN => {
            let len = usize::from(packet[0] & 0x0f) * 4;
            if len < IPV4_HEADER_MIN || len > packet.len() {
                return Err(OffloadError::BadHeaders);
            }
            Ok((len, packet[9]))
        }
        Some(6) if packet.len() >= IPV6_HEADER_BYTES => Ok((IPV6_HEADER_BYTES, packet[6])),
        _ => Err(OffloadError::BadHeaders),
    }
}

/// Splits a super-segment into packets of `gso_size` payload bytes each.
fn split(packet: &[u8], header: VnetHeader, segments: &mut Segments) -> Result<(), OffloadError> {
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

/// The TCP flow a packet belongs to and the fields that must match for two packets to be one
/// stream of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FlowKey {
    /// Source and destination addresses (IPv4 uses the first 8 bytes) and ports.
    addresses: [u8; 32],
    ports: [u8; 4],
    is_v4: bool,
}

/// One super-packet being built: its first packet's position in the arena, and how much
/// payload the packets appended to it carry.
#[derive(Debug, Clone)]
struct Pending {
    /// The flow, or `None` for a packet that is written as it is.
    flow: Option<FlowKey>,
    /// The first packet (headers and payload) in the arena.
    first: Range<usize>,
    ip_len: usize,
    hdr_len: usize,
    /// Payload bytes of the first packet: every later one must have as many, but the last.
    gso_size: usize,
    /// Payload bytes appended after the first packet.
    more_bytes: usize,
    count: usize,
    next_seq: u32,
    /// No more may join (a shorter or a PSH packet was the last).
    closed: bool,
}

/// Decrypted packets of one receive batch, coalesced per TCP flow (GRO) before they are
/// written to the device. Its buffers are reused from batch to batch.
#[derive(Debug, Default)]
pub struct Coalescer {
    arena: Vec<u8>,
    pending: Vec<Pending>,
    /// Payloads appended to pending packets: (the pending packet's index, bytes in the arena).
    payloads: Vec<(usize, Range<usize>)>,
}

impl Coalescer {
    /// Empty buffers, grown on first use and kept.
    pub fn new() -> Self {
        Coalescer::default()
    }

    /// Bytes held; the data plane writes them out before this grows large.
    pub fn held_bytes(&self) -> usize {
        self.arena.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Takes a decrypted packet (already judged by the filter): it joins the newest pending
    /// packet of its flow when it continues it, or waits on its own.
    pub fn push(&mut self, packet: &[u8]) {
        let start = self.arena.len();
        let Some((flow, ip_len, hdr_len, seq)) = tcp_parts(packet) else {
            self.arena.extend_from_slice(packet);
            self.pending.push(Pending {
                flow: None,
                first: start..self.arena.len(),
                ip_len: 0,
                hdr_len: 0,
                gso_size: 0,
                more_bytes: 0,
                count: 1,
                next_seq: 0,
                closed: true,
            });
            return;
        };
        let payload_len = packet.len() - hdr_len;
        let psh = packet[ip_len + 13] & TCP_FLAG_PSH != 0;
        if let Some(index) = self.pending.iter().rposition(|p| p.flow == Some(flow)) {
            let p = &self.pending[index];
            if !p.closed
                && p.count < MAX_COALESCED_PACKETS
                && seq == p.next_seq
                && payload_len > 0
                && payload_len <= p.gso_size
                && p.first.len() + p.more_bytes + payload_len <= MAX_SUPER_PACKET_BYTES
                && headers_match(&self.arena[p.first.clone()], packet, p.ip_len, hdr_len)
            {
                self.arena.extend_from_slice(&packet[hdr_len..]);
                self.payloads.push((index, start..self.arena.len()));
                let p = &mut self.pending[index];
                p.more_bytes += payload_len;
                p.count += 1;
                p.next_seq = seq.wrapping_add(payload_len as u32);
                p.closed = psh || payload_len < p.gso_size;
                if psh {
                    // The super-packet carries PSH: the receiver hands it up at once.
                    let at = p.first.start + ip_len + 13;
                    self.arena[at] |= TCP_FLAG_PSH;
                }
                return;
            }
        }
        self.arena.extend_from_slice(packet);
        self.pending.push(Pending {
            flow: Some(flow),
            first: start..self.arena.len(),
            ip_len,
            hdr_len,
            gso_size: payload_len,
            more_bytes: 0,
            count: 1,
            next_seq: seq.wrapping_add(payload_len as u32),
            closed: psh || payload_len == 0,
        });
    }

    /// Hands every pending (super-)packet to `write` as the slices of one write (virtio-net
    /// header, first packet, appended payloads), in the order they began, and empties the
    /// coalescer. One vector of slices per call, none per packet.
    pub fn drain(&mut self, mut write: impl FnMut(&[IoSlice<'_>])) {
        // Payloads grouped by their packet, in arena order within each (no allocation).
        self.payloads
            .sort_unstable_by_key(|(owner, range)| (*owner, range.start));
        let mut headers = Vec::with_capacity(self.pending.len());
        for p in &self.pending {
            let header = if p.count > 1 {
                finish_super_packet(&mut self.arena, p)
            } else {
                VnetHeader::default()
            };
            headers.push(header.to_bytes());
        }
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(MAX_COALESCED_PACKETS + 1);
        let mut next_payload = 0;
        for (index, p) in self.pending.iter().enumerate() {
            slices.clear();
            slices.push(IoSlice::new(&headers[index]));
            slices.push(IoSlice::new(&self.arena[p.first.clone()]));
            while let Some((owner, range)) = self.payloads.get(next_payload) {
                if *owner != index {
                    break;
                }
                slices.push(IoSlice::new(&self.arena[range.clone()]));
                next_payload += 1;
            }
            write(&slices);
        }
        self.arena.clear();
        self.pending.clear();
        self.payloads.clear();
    }
}

/// A TCP packet GRO may coalesce: its flow, IP and header lengths and sequence number. Only
/// plain data segments (ACK, maybe PSH) without IPv4 options or fragments qualify.
fn tcp_parts(packet: &[u8]) -> Option<(FlowKey, usize, usize, u32)> {
    let (ip_len, protocol) = ip_header(packet).ok()?;
    if protocol != IPPROTO_TCP {
        return None;
    }
    let is_v4 = packet[0] >> 4 == 4;
    if is_v4 {
        let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
        let fragment = u16::from_be_bytes([packet[6], packet[7]]) & 0x3fff;
        if ip_len != IPV4_HEADER_MIN || total != packet.len() || fragment != 0 {
            return None;
        }
    } else {
        let payload = usize::from(u16::from_be_bytes([packet[4], packet[5]]));
        if payload + IPV6_HEADER_BYTES != packet.len() {
            return None;
        }
    }
    let tcp = packet.get(ip_len..)?;
    if tcp.len() < TCP_HEADER_MIN {
        return None;
    }
    let hdr_len = ip_len + usize::from(tcp[12] >> 4) * 4;
    if hdr_len < ip_len + TCP_HEADER_MIN || hdr_len > packet.len() {
        return None;
    }
    let flags = tcp[13];
    if flags & !(TCP_FLAG_ACK | TCP_FLAG_PSH) != 0 || flags & TCP_FLAG_ACK == 0 {
        return None;
    }
    let mut addresses = [0u8; 32];
    if is_v4 {
        addresses[..8].copy_from_slice(&packet[12..20]);
    } else {
        addresses.copy_from_slice(&packet[8..40]);
    }
    let flow = FlowKey {
        addresses,
        ports: [tcp[0], tcp[1], tcp[2], tcp[3]],
        is_v4,
    };
    let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
    Some((flow, ip_len, hdr_len, seq))
}

/// Whether `packet` may continue a super-packet whose first packet is `first`: the same IP
/// header fields but lengths, ids and checksums; the same TCP acknowledgement, window, header
/// length and options; flags equal but PSH.
fn headers_match(first: &[u8], packet: &[u8], ip_len: usize, hdr_len: usize) -> bool {
    if packet.len() < hdr_len || first.len() < hdr_len || packet[ip_len + 12] != first[ip_len + 12]
    {
        return false;
    }
    let ip_same = if ip_len == IPV4_HEADER_MIN {
        // Version/IHL, TOS; flags (DF); TTL, protocol.
        first[0..2] == packet[0..2] && first[6..10] == packet[6..10]
    } else {
        // Version, traffic class, flow label; next header, hop limit.
        first[0..4] == packet[0..4] && first[6..8] == packet[6..8]
    };
    let tcp_first = &first[ip_len..hdr_len];
    let tcp = &packet[ip_len..hdr_len];
    ip_same
        && tcp_first[8..13] == tcp[8..13]
        && (tcp_first[13] | TCP_FLAG_PSH) == (tcp[13] | TCP_FLAG_PSH)
        && tcp_first[14..16] == tcp[14..16]
        && tcp_first[18..] == tcp[18..]
        && tcp[13] & (TCP_FLAG_SYN | TCP_FLAG_RST | TCP_FLAG_FIN) == 0
}

/// Makes the first packet's headers those of the whole super-packet (IP length, IP checksum,
/// the TCP checksum field holding the pseudo-header sum) and returns its virtio-net header.
fn finish_super_packet(arena: &mut [u8], p: &Pending) -> VnetHeader {
    let total = p.first.len() + p.more_bytes;
    let head = &mut arena[p.first.clone()];
    let is_v4 = p.ip_len == IPV4_HEADER_MIN && head[0] >> 4 == 4;
    if is_v4 {
        head[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        head[10..12].fill(0);
        let sum = checksum(&head[..p.ip_len]);
        head[10..12].copy_from_slice(&sum.to_be_bytes());
    } else {
        head[4..6].copy_from_slice(&((total - IPV6_HEADER_BYTES) as u16).to_be_bytes());
    }
    let pseudo = fold(pseudo_header_sum(head, IPPROTO_TCP, total - p.ip_len));
    let at = p.ip_len + TCP_CHECKSUM_OFFSET;
    head[at..at + 2].copy_from_slice(&pseudo.to_be_bytes());
    VnetHeader {
        flags: VNET_F_NEEDS_CSUM,
        gso_type: if is_v4 { GSO_TCPV4 } else { GSO_TCPV6 },
        hdr_len: p.hdr_len as u16,
        gso_size: p.gso_size as u16,
        csum_start: p.ip_len as u16,
        csum_offset: TCP_CHECKSUM_OFFSET as u16,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC4: [u8; 4] = [198, 19, 0, 20];
    const DST4: [u8; 4] = [198, 19, 0, 1];
    const MSS: usize = 1380;

    /// A TCP packet as the kernel hands it over: IPv4 or IPv6 (fd00::/8), with a timestamp
    /// option, `payload` bytes, the checksum field holding the pseudo-header sum.
    fn tcp_packet(v6: bool, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        let ip_len = if v6 {
            IPV6_HEADER_BYTES
        } else {
            IPV4_HEADER_MIN
        };
        let tcp_len = 32;
        let total = ip_len + tcp_len + payload.len();
        let mut p = vec![0u8; total];
        if v6 {
            p[0] = 0x60;
            p[4..6].copy_from_slice(&((total - ip_len) as u16).to_be_bytes());
            p[6] = IPPROTO_TCP;
            p[7] = 64;
            p[8] = 0xfd;
            p[23] = 0x14;
            p[24] = 0xfd;
            p[39] = 0x01;
        } else {
            p[0] = 0x45;
            p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            p[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
            p[6] = 0x40;
            p[8] = 64;
            p[9] = IPPROTO_TCP;
            p[12..16].copy_from_slice(&SRC4);
            p[16..20].copy_from_slice(&DST4);
            let sum = checksum(&p[..ip_len]);
            p[10..12].copy_from_slice(&sum.to_be_bytes());
        }
        let t = &mut p[ip_len..];
        t[0..2].copy_from_slice(&40000u16.to_be_bytes());
        t[2..4].copy_from_slice(&443u16.to_be_bytes());
        t[4..8].copy_from_slice(&seq.to_be_bytes());
        t[8..12].copy_from_slice(&7u32.to_be_bytes());
        t[12] = ((tcp_len / 4) as u8) << 4;
        t[13] = flags;
        t[14..16].copy_from_slice(&512u16.to_be_bytes());
        // NOP, NOP, timestamps.
        t[20..32].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 5]);
        t[32..].copy_from_slice(payload);
        let pseudo = fold(pseudo_header_sum(&p, IPPROTO_TCP, total - ip_len));
        let at = ip_len + TCP_CHECKSUM_OFFSET;
        p[at..at + 2].copy_from_slice(&pseudo.to_be_bytes());
        p
    }

    fn with_header(header: VnetHeader, packet: &[u8]) -> Vec<u8> {
        let mut buf = header.to_bytes().to_vec();
        buf.extend_from_slice(packet);
        buf
    }

    fn gso_header(v6: bool, ip_len: usize, gso_size: usize) -> VnetHeader {
        VnetHeader {
            flags: VNET_F_NEEDS_CSUM,
            gso_type: if v6 { GSO_TCPV6 } else { GSO_TCPV4 },
            hdr_len: (ip_len + 32) as u16,
            gso_size: gso_size as u16,
            csum_start: ip_len as u16,
            csum_offset: TCP_CHECKSUM_OFFSET as u16,
        }
    }

    /// True when the packet's transport checksum (TCP or UDP) verifies.
    fn l4_checksum_ok(packet: &[u8]) -> bool {
        let (ip_len, protocol) = ip_header(packet).expect("IP header");
        let sum = pseudo_header_sum(packet, protocol, packet.len() - ip_len);
        fold(sum_bytes(sum, &packet[ip_len..])) == 0xffff
    }

    fn joined(parts: &[IoSlice<'_>]) -> Vec<u8> {
        parts.iter().flat_map(|p| p.iter().copied()).collect()
    }

    fn payload_pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    fn split_ok(v6: bool) {
        let payload = payload_pattern(3 * MSS + 100);
        let ip_len = if v6 {
            IPV6_HEADER_BYTES
        } else {
            IPV4_HEADER_MIN
        };
        let flags = TCP_FLAG_ACK | TCP_FLAG_PSH | TCP_FLAG_FIN | TCP_FLAG_CWR;
        let packet = tcp_packet(v6, 0xffff_f000, flags, &payload);
        let mut buf = with_header(gso_header(v6, ip_len, MSS), &packet);
        let mut segments = Segments::new();
        assert_eq!(receive(&mut buf, &mut segments), Ok(Read::Split));
        assert_eq!(segments.len(), 4);
        let mut joined = Vec::new();
        for (i, s) in segments.iter().enumerate() {
            let last = i == 3;
            let body = &s[ip_len + 32..];
            assert_eq!(body.len(), if last { 100 } else { MSS });
            joined.extend_from_slice(body);
            if v6 {
                assert_eq!(usize::from(u16::from_be_bytes([s[4], s[5]])), s.len() - 40);
            } else {
                assert_eq!(usize::from(u16::from_be_bytes([s[2], s[3]])), s.len());
                assert_eq!(u16::from_be_bytes([s[4], s[5]]), 0x1234 + i as u16);
                assert_eq!(checksum(&s[..ip_len]), 0, "IPv4 header checksum");
            }
            let seq =
                u32::from_be_bytes([s[ip_len + 4], s[ip_len + 5], s[ip_len + 6], s[ip_len + 7]]);
            assert_eq!(seq, 0xffff_f000u32.wrapping_add((i * MSS) as u32));
            let f = s[ip_len + 13];
            assert_eq!(
                f & (TCP_FLAG_FIN | TCP_FLAG_PSH) != 0,
                last,
                "FIN/PSH on the last only"
            );
            assert_eq!(f & TCP_FLAG_CWR != 0, i == 0, "CWR on the first only");
            assert!(l4_checksum_ok(s), "TCP checksum of segment {i}");
        }
        assert_eq!(joined, payload);
    }

    #[test]
    fn net1_a_tcp_super_segment_splits_into_mss_packets_ipv4() {
        split_ok(false);
    }

    #[test]
    fn net1_a_tcp_super_segment_splits_into_mss_packets_ipv6() {
        split_ok(true);
    }

    #[test]
    fn net1_a_udp_super_segment_splits_with_udp_lengths_and_checksums() {
        let payload = payload_pattern(2500);
        let mut p = tcp_packet(false, 0, 0, &[]);
        p.truncate(IPV4_HEADER_MIN);
        p[9] = IPPROTO_UDP;
        let mut udp = vec![0u8; UDP_HEADER_BYTES];
        udp[0..2].copy_from_slice(&5000u16.to_be_bytes());
        udp[2..4].copy_from_slice(&5001u16.to_be_bytes());
        p.extend_from_slice(&udp);
        p.extend_from_slice(&payload);
        let header = VnetHeader {
            flags: VNET_F_NEEDS_CSUM,
            gso_type: GSO_UDP_L4,
            hdr_len: 28,
            gso_size: 1000,
            csum_start: 20,
            csum_offset: UDP_CHECKSUM_OFFSET as u16,
        };
        let mut buf = with_header(header, &p);
        let mut segments = Segments::new();
        assert_eq!(receive(&mut buf, &mut segments), Ok(Read::Split));
        let lengths: Vec<usize> = segments.iter().map(|s| s.len() - 28).collect();
        assert_eq!(lengths, vec![1000, 1000, 500]);
        for s in segments.iter() {
            assert_eq!(
                usize::from(u16::from_be_bytes([s[24], s[25]])),
                s.len() - 20
            );
            assert!(l4_checksum_ok(s));
            assert_eq!(checksum(&s[..20]), 0);
        }
    }

    #[test]
    fn net1_a_partial_checksum_is_completed_in_place() {
        let packet = tcp_packet(false, 1, TCP_FLAG_ACK | TCP_FLAG_PSH, b"hello, hub");
        assert!(
            !l4_checksum_ok(&packet),
            "only the pseudo-header sum so far"
        );
        let header = VnetHeader {
            flags: VNET_F_NEEDS_CSUM,
            csum_start: 20,
            csum_offset: TCP_CHECKSUM_OFFSET as u16,
            ..VnetHeader::default()
        };
        let mut buf = with_header(header, &packet);
        let mut segments = Segments::new();
        let Ok(Read::Single(range)) = receive(&mut buf, &mut segments) else {
            panic!("a single packet");
        };
        assert!(l4_checksum_ok(&buf[range]));
    }

    #[test]
    fn int1_headers_the_kernel_would_not_write_are_refused_without_panic() {
        let mut segments = Segments::new();
        let packet = tcp_packet(false, 1, TCP_FLAG_ACK, &payload_pattern(3000));
        for cut in [0, 5, 10, 15, 30, 45, 51] {
            let mut buf = with_header(gso_header(false, 20, MSS), &packet);
            buf.truncate(cut);
            assert!(receive(&mut buf, &mut segments).is_err(), "cut at {cut}");
        }
        let mut zero = with_header(gso_header(false, 20, 0), &packet);
        assert!(receive(&mut zero, &mut segments).is_err());
        let mut tiny = with_header(gso_header(false, 20, 8), &packet);
        assert_eq!(
            receive(&mut tiny, &mut segments),
            Err(OffloadError::BadSegmentSize(8))
        );
        let mut v6_as_v4 = with_header(gso_header(true, 20, MSS), &packet);
        assert!(receive(&mut v6_as_v4, &mut segments).is_err());
        let mut odd_start = gso_header(false, 20, MSS);
        odd_start.csum_start = 9000;
        let mut odd = with_header(odd_start, &packet);
        assert!(receive(&mut odd, &mut segments).is_err());
        let mut unknown = gso_header(false, 20, MSS);
        unknown.gso_type = 3;
        let mut buf = with_header(unknown, &packet);
        assert_eq!(
            receive(&mut buf, &mut segments),
            Err(OffloadError::UnknownGso(3))
        );
    }

    /// The segments of one flow, pushed in order, leave as one write whose split gives them
    /// back byte for byte.
    fn coalesce_round_trip(v6: bool) {
        let ip_len = if v6 {
            IPV6_HEADER_BYTES
        } else {
            IPV4_HEADER_MIN
        };
        let payload = payload_pattern(5 * MSS + 7);
        let packet = tcp_packet(v6, 1000, TCP_FLAG_ACK | TCP_FLAG_PSH, &payload);
        let mut buf = with_header(gso_header(v6, ip_len, MSS), &packet);
        let mut segments = Segments::new();
        receive(&mut buf, &mut segments).expect("split");
        let originals: Vec<Vec<u8>> = segments.iter().map(<[u8]>::to_vec).collect();

        let mut gro = Coalescer::new();
        for s in &originals {
            gro.push(s);
        }
        let mut writes = Vec::new();
        gro.drain(|parts| writes.push(joined(parts)));
        assert!(gro.is_empty());
        assert_eq!(writes.len(), 1, "one super-packet");
        let header = VnetHeader::parse(&writes[0]).expect("header");
        assert_eq!(header.gso_size as usize, MSS);
        assert_eq!(header.gso_type, if v6 { GSO_TCPV6 } else { GSO_TCPV4 });
        assert_eq!(header.hdr_len as usize, ip_len + 32);

        let mut again = Segments::new();
        receive(&mut writes[0], &mut again).expect("split again");
        let back: Vec<Vec<u8>> = again.iter().map(<[u8]>::to_vec).collect();
        assert_eq!(back, originals);
    }

    #[test]
    fn net1_segments_of_one_flow_coalesce_and_split_back_ipv4() {
        coalesce_round_trip(false);
    }

    #[test]
    fn net1_segments_of_one_flow_coalesce_and_split_back_ipv6() {
        coalesce_round_trip(true);
    }

    #[test]
    fn net1_gaps_other_flows_and_control_packets_are_written_apart() {
        let a1 = tcp_packet(false, 0, TCP_FLAG_ACK, &[1; MSS]);
        let a2 = tcp_packet(false, MSS as u32, TCP_FLAG_ACK, &[2; MSS]);
        // A gap: not the next byte.
        let a4 = tcp_packet(false, 3 * MSS as u32, TCP_FLAG_ACK, &[4; MSS]);
        let mut b1 = tcp_packet(false, 0, TCP_FLAG_ACK, &[5; MSS]);
        b1[20..22].copy_from_slice(&40001u16.to_be_bytes());
        let mut b1 = b1.clone();
        // Recompute the (pseudo) checksum field is irrelevant here: only grouping is judged.
        b1[36] = 0;
        let syn = tcp_packet(false, 9, TCP_FLAG_SYN, &[]);
        let mut b2 = tcp_packet(false, MSS as u32, TCP_FLAG_ACK, &[6; MSS]);
        b2[20..22].copy_from_slice(&40001u16.to_be_bytes());
        let mut gro = Coalescer::new();
        for p in [&a1, &b1, &a2, &syn, &b2, &a4] {
            gro.push(p);
        }
        let mut writes: Vec<(VnetHeader, usize)> = Vec::new();
        gro.drain(|parts| {
            let bytes = joined(parts);
            let header = VnetHeader::parse(&bytes).expect("header");
            writes.push((header, bytes.len() - VNET_HDR_BYTES));
        });
        let kinds: Vec<(u8, usize)> = writes.iter().map(|(h, len)| (h.gso_type, *len)).collect();
        let one = 52 + MSS;
        assert_eq!(
            kinds,
            vec![
                (GSO_TCPV4, 52 + 2 * MSS),
                (GSO_TCPV4, 52 + 2 * MSS),
                (GSO_NONE, 52),
                (GSO_NONE, one),
            ]
        );
    }

    proptest::proptest! {
        /// Whatever a read holds, splitting it and coalescing its pieces neither panics nor
        /// writes a packet longer than the kernel takes.
        #[test]
        fn int1_any_read_is_split_and_coalesced_without_panic(
            header in proptest::collection::vec(proptest::prelude::any::<u8>(), VNET_HDR_BYTES),
            prefix in 0usize..4,
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..3000),
        ) {
            // Often a well-formed TCP packet under a random header, sometimes random bytes.
            let mut packet = match prefix {
                0 => body.clone(),
                1 => tcp_packet(false, 1, TCP_FLAG_ACK, &body),
                2 => tcp_packet(true, 1, TCP_FLAG_ACK, &body),
                _ => {
                    let mut p = tcp_packet(false, 1, TCP_FLAG_ACK, &[]);
                    p.extend_from_slice(&body);
                    p
                }
            };
            let mut buf = header.clone();
            buf.append(&mut packet);
            let mut segments = Segments::new();
            let mut gro = Coalescer::new();
            match receive(&mut buf, &mut segments) {
                Ok(Read::Single(range)) => gro.push(&buf[range]),
                Ok(Read::Split) => segments.iter().for_each(|s| gro.push(s)),
                Err(_) => {}
            }
            gro.push(&body);
            gro.drain(|parts| {
                let len: usize = parts.iter().map(|p| p.len()).sum();
                assert!(len <= VNET_HDR_BYTES + MAX_SUPER_PACKET_BYTES);
            });
        }
    }
}
