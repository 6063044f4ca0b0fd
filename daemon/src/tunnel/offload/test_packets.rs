//! Packets as the kernel hands them over, for the unit tests of segmentation and coalescing.

use std::io::IoSlice;

use super::checksum::{checksum, fold, pseudo_header_sum, sum_bytes};
use super::wire::*;
use super::{VnetHeader, GSO_TCPV4, GSO_TCPV6, VNET_F_NEEDS_CSUM};

pub(super) const SRC4: [u8; 4] = [198, 19, 0, 20];
pub(super) const DST4: [u8; 4] = [198, 19, 0, 1];
pub(super) const MSS: usize = 1380;

/// A TCP packet as the kernel hands it over: IPv4 or IPv6 (fd00::/8), with a timestamp
/// option, `payload` bytes, the checksum field holding the pseudo-header sum.
pub(super) fn tcp_packet(v6: bool, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
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

pub(super) fn with_header(header: VnetHeader, packet: &[u8]) -> Vec<u8> {
    let mut buf = header.to_bytes().to_vec();
    buf.extend_from_slice(packet);
    buf
}

pub(super) fn gso_header(v6: bool, ip_len: usize, gso_size: usize) -> VnetHeader {
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
pub(super) fn l4_checksum_ok(packet: &[u8]) -> bool {
    let (ip_len, protocol) = ip_header(packet).expect("IP header");
    let sum = pseudo_header_sum(packet, protocol, packet.len() - ip_len);
    fold(sum_bytes(sum, &packet[ip_len..])) == 0xffff
}

pub(super) fn joined(parts: &[IoSlice<'_>]) -> Vec<u8> {
    parts.iter().flat_map(|p| p.iter().copied()).collect()
}

pub(super) fn payload_pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}
