//! Where the fields of IPv4, IPv6, TCP and UDP headers are, as segmentation and coalescing
//! read and rewrite them.

use super::OffloadError;

pub(super) const IPPROTO_TCP: u8 = 6;
pub(super) const IPPROTO_UDP: u8 = 17;
pub(super) const IPV4_HEADER_MIN: usize = 20;
pub(super) const IPV6_HEADER_BYTES: usize = 40;
pub(super) const TCP_HEADER_MIN: usize = 20;
pub(super) const UDP_HEADER_BYTES: usize = 8;
pub(super) const TCP_CHECKSUM_OFFSET: usize = 16;
pub(super) const UDP_CHECKSUM_OFFSET: usize = 6;
pub(super) const TCP_FLAG_FIN: u8 = 0x01;
pub(super) const TCP_FLAG_SYN: u8 = 0x02;
pub(super) const TCP_FLAG_RST: u8 = 0x04;
pub(super) const TCP_FLAG_PSH: u8 = 0x08;
pub(super) const TCP_FLAG_ACK: u8 = 0x10;
pub(super) const TCP_FLAG_CWR: u8 = 0x80;

/// Where the IP header ends and which transport protocol follows, for a packet with no IPv4
/// options the kernel would not have offloaded and no IPv6 extension headers.
pub(super) fn ip_header(packet: &[u8]) -> Result<(usize, u8), OffloadError> {
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
