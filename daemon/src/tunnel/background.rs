//! The box's own background traffic through the tunnel: its time sync (NTP, UDP port 123, to
//! the data centre's servers of `[time]`). It must neither bring an on-demand link up nor hold
//! it open (NET-7): a query goes out only while the link is up anyway, for demand or a
//! check-in, and neither it nor its answer counts as traffic for the idle timer. Reads IP and
//! UDP headers only, without allocating (hot path).

/// NTP's port (RFC 5905).
pub const NTP_PORT: u16 = 123;

const UDP: u8 = 17;
const IPV6_HEADER_LEN: usize = 40;

/// The UDP source and destination ports of an IPv4/IPv6 packet whose transport header follows
/// the IP header directly (IPv6 extension headers are not followed: such a packet is simply
/// not background traffic), or `None` for anything else, fragments of it included.
fn udp_ports(packet: &[u8]) -> Option<(u16, u16)> {
    let udp = match packet.first()? >> 4 {
        4 => {
            let header_len = usize::from(packet.first()? & 0x0f) * 4;
            let fragment = u16::from_be_bytes([*packet.get(6)?, *packet.get(7)?]);
            // More fragments, or not the first one: no UDP header to read.
            if *packet.get(9)? != UDP || fragment & 0x3fff != 0 || header_len < 20 {
                return None;
            }
            packet.get(header_len..)?
        }
        6 => {
            if *packet.get(6)? != UDP {
                return None;
            }
            packet.get(IPV6_HEADER_LEN..)?
        }
        _ => return None,
    };
    let source = u16::from_be_bytes([*udp.first()?, *udp.get(1)?]);
    let destination = u16::from_be_bytes([*udp.get(2)?, *udp.get(3)?]);
    Some((source, destination))
}

/// A packet from the TUN device that is the box asking a time server.
pub fn is_time_query(packet: &[u8]) -> bool {
    udp_ports(packet).is_some_and(|(_, destination)| destination == NTP_PORT)
}

/// A packet from a peer that is a time server's answer.
pub fn is_time_answer(packet: &[u8]) -> bool {
    udp_ports(packet).is_some_and(|(source, _)| source == NTP_PORT)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4 UDP packet from `src_port` to `dst_port` with 48 bytes of payload (an NTP
    /// packet's size), `fragment` in the flags/offset field.
    fn ipv4_udp(src_port: u16, dst_port: u16, fragment: u16) -> Vec<u8> {
        let mut packet = vec![0u8; 20 + 8 + 48];
        packet[0] = 0x45;
        let total = packet.len() as u16;
        packet[2..4].copy_from_slice(&total.to_be_bytes());
        packet[6..8].copy_from_slice(&fragment.to_be_bytes());
        packet[8] = 64;
        packet[9] = UDP;
        packet[12..16].copy_from_slice(&[198, 19, 0, 20]);
        packet[16..20].copy_from_slice(&[198, 19, 0, 1]);
        packet[20..22].copy_from_slice(&src_port.to_be_bytes());
        packet[22..24].copy_from_slice(&dst_port.to_be_bytes());
        packet
    }

    fn ipv6_udp(src_port: u16, dst_port: u16) -> Vec<u8> {
        let mut packet = vec![0u8; 40 + 8 + 48];
        packet[0] = 0x60;
        packet[6] = UDP;
        packet[7] = 64;
        packet[40..42].copy_from_slice(&src_port.to_be_bytes());
        packet[42..44].copy_from_slice(&dst_port.to_be_bytes());
        packet
    }

    #[test]
    fn net7_ntp_queries_and_answers_are_background_and_nothing_else_is() {
        assert!(is_time_query(&ipv4_udp(40000, NTP_PORT, 0)));
        assert!(!is_time_answer(&ipv4_udp(40000, NTP_PORT, 0)));
        assert!(is_time_answer(&ipv4_udp(NTP_PORT, 40000, 0)));
        assert!(is_time_query(&ipv6_udp(40000, NTP_PORT)));
        assert!(is_time_answer(&ipv6_udp(NTP_PORT, 40000)));
        // Don't fragment set: still a whole datagram.
        assert!(is_time_query(&ipv4_udp(40000, NTP_PORT, 0x4000)));
        // Another port, TCP to 123, fragments, truncated and empty packets: not background.
        assert!(!is_time_query(&ipv4_udp(40000, 8443, 0)));
        let mut tcp = ipv4_udp(40000, NTP_PORT, 0);
        tcp[9] = 6;
        assert!(!is_time_query(&tcp));
        assert!(!is_time_query(&ipv4_udp(40000, NTP_PORT, 0x2000)));
        assert!(!is_time_query(&ipv4_udp(40000, NTP_PORT, 0x0010)));
        assert!(!is_time_query(&ipv4_udp(40000, NTP_PORT, 0)[..22]));
        assert!(!is_time_query(&[]));
        assert!(!is_time_answer(&[0x45]));
    }
}
