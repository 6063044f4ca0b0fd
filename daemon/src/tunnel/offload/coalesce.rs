//! Coalescing decrypted packets of one TCP flow into one super-packet (GRO) before they are
//! written to the device.

use std::io::IoSlice;
use std::ops::Range;

use super::checksum::{checksum, fold, pseudo_header_sum};
use super::wire::*;
use super::{VnetHeader, GSO_TCPV4, GSO_TCPV6, MAX_SUPER_PACKET_BYTES, VNET_F_NEEDS_CSUM};

/// Most packets coalesced into one super-packet (the kernel's own GRO stops at 64 too).
const MAX_COALESCED_PACKETS: usize = 64;

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
    use super::super::test_packets::*;
    use super::super::{receive, Segments, GSO_NONE, VNET_HDR_BYTES};
    use super::*;

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
}
