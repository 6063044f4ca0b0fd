//! The box's own background traffic through the tunnel: its time sync (NTP, UDP port 123, to
//! the data centre's servers of `[time]`) and, on an on-demand box, its journal upload (the TCP
//! connection renkei's upload service makes to the collector's inbound service, `[logs]`) and
//! the operator's scrapes of its metrics listener (`status.metrics_listen`: the fleet's
//! Prometheus scrapes every box every few seconds, and an on-demand box answers while its link
//! is up for a check-in). It must neither bring an on-demand link up nor hold it open (NET-7):
//! it goes out only while the link is up anyway, for demand or a check-in, and neither it nor
//! its answers count as traffic for the idle timer (else one scrape per check-in would keep the
//! link up for good). Reads IP, UDP and TCP headers only, without allocating (hot path).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// NTP's port (RFC 5905).
pub const NTP_PORT: u16 = 123;

const TCP: u8 = 6;
const UDP: u8 = 17;
const IPV6_HEADER_LEN: usize = 40;

/// Which of the box's own packets ride on the link without using it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Background {
    /// The journal upload's destination inside the tunnel (the upload service's target), on an
    /// on-demand box with `[logs]`.
    pub upload: Option<SocketAddr>,
    /// The metrics listener on the box's tunnel address, on an on-demand box with one.
    pub metrics: Option<SocketAddr>,
}

impl Background {
    /// A packet from the TUN device that the box sends for itself: a time query, a segment of
    /// the journal upload, or one of the metrics listener's answer to a scrape.
    pub fn is_outgoing(&self, packet: &[u8]) -> bool {
        match Transport::of(packet, self.reads_tcp()) {
            Some(t) if t.protocol == UDP => t.destination.port() == NTP_PORT,
            Some(t) => self.upload == Some(t.destination) || self.metrics == Some(t.source),
            None => false,
        }
    }

    /// A packet from a peer that answers the box's own traffic or asks its metrics listener: a
    /// time server's answer, a segment from the journal collector's service, or one of a scrape.
    pub fn is_incoming(&self, packet: &[u8]) -> bool {
        match Transport::of(packet, self.reads_tcp()) {
            Some(t) if t.protocol == UDP => t.source.port() == NTP_PORT,
            Some(t) => self.upload == Some(t.source) || self.metrics == Some(t.destination),
            None => false,
        }
    }

    /// Whether any TCP is background here (else TCP headers are not read at all).
    fn reads_tcp(&self) -> bool {
        self.upload.is_some() || self.metrics.is_some()
    }
}

/// The transport header of a UDP or TCP packet: its protocol and both ends.
struct Transport {
    /// [`UDP`] or [`TCP`].
    protocol: u8,
    source: SocketAddr,
    destination: SocketAddr,
}

impl Transport {
    /// The UDP or TCP ends of an IPv4/IPv6 packet whose transport header follows the IP header
    /// directly (IPv6 extension headers are not followed: such a packet is simply not
    /// background traffic), or `None` for anything else, fragments of it included. TCP is read
    /// only when `tcp` (a box with an upload or a metrics listener riding): on every other box
    /// each data packet of the tunnel is TCP, and none of them is background.
    fn of(packet: &[u8], tcp: bool) -> Option<Transport> {
        let (protocol, source, destination, transport) = match packet.first()? >> 4 {
            4 => {
                let header_len = usize::from(packet.first()? & 0x0f) * 4;
                let fragment = u16::from_be_bytes([*packet.get(6)?, *packet.get(7)?]);
                // More fragments, or not the first one: no transport header to read.
                if fragment & 0x3fff != 0 || header_len < 20 {
                    return None;
                }
                let source: [u8; 4] = packet.get(12..16)?.try_into().ok()?;
                let destination: [u8; 4] = packet.get(16..20)?.try_into().ok()?;
                (
                    *packet.get(9)?,
                    IpAddr::V4(Ipv4Addr::from(source)),
                    IpAddr::V4(Ipv4Addr::from(destination)),
                    packet.get(header_len..)?,
                )
            }
            6 => {
                let source: [u8; 16] = packet.get(8..24)?.try_into().ok()?;
                let destination: [u8; 16] = packet.get(24..40)?.try_into().ok()?;
                (
                    *packet.get(6)?,
                    IpAddr::V6(Ipv6Addr::from(source)),
                    IpAddr::V6(Ipv6Addr::from(destination)),
                    packet.get(IPV6_HEADER_LEN..)?,
                )
            }
            _ => return None,
        };
        if protocol != UDP && !(tcp && protocol == TCP) {
            return None;
        }
        let source_port = u16::from_be_bytes([*transport.first()?, *transport.get(1)?]);
        let destination_port = u16::from_be_bytes([*transport.get(2)?, *transport.get(3)?]);
        Some(Transport {
            protocol,
            source: SocketAddr::new(source, source_port),
            destination: SocketAddr::new(destination, destination_port),
        })
    }
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

    fn is_time_query(packet: &[u8]) -> bool {
        Background::default().is_outgoing(packet)
    }

    fn is_time_answer(packet: &[u8]) -> bool {
        Background::default().is_incoming(packet)
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
        tcp[9] = TCP;
        assert!(!is_time_query(&tcp));
        assert!(!is_time_query(&ipv4_udp(40000, NTP_PORT, 0x2000)));
        assert!(!is_time_query(&ipv4_udp(40000, NTP_PORT, 0x0010)));
        assert!(!is_time_query(&ipv4_udp(40000, NTP_PORT, 0)[..22]));
        assert!(!is_time_query(&[]));
        assert!(!is_time_answer(&[0x45]));
    }

    #[test]
    fn net7_log4_the_journal_upload_to_its_collector_is_background_and_no_other_tcp_is() {
        let collector: SocketAddr = "198.19.0.1:19532".parse().unwrap();
        let upload = Background {
            upload: Some(collector),
            metrics: None,
        };
        // ipv4_udp goes 198.19.0.20 -> 198.19.0.1; as TCP it is a segment of a connection.
        let tcp = |src: u16, dst: u16| {
            let mut packet = ipv4_udp(src, dst, 0);
            packet[9] = TCP;
            packet
        };
        assert!(upload.is_outgoing(&tcp(40000, 19532)));
        assert!(!upload.is_incoming(&tcp(40000, 19532)));
        let mut answer = tcp(19532, 40000);
        answer.copy_within(12..16, 16);
        answer[12..16].copy_from_slice(&[198, 19, 0, 1]);
        assert!(upload.is_incoming(&answer));
        assert!(!upload.is_outgoing(&answer));
        // The collector's port on another host, another port on the collector's host, the
        // same port over UDP, and everything on a box without [logs]: not background.
        let mut elsewhere = tcp(40000, 19532);
        elsewhere[16..20].copy_from_slice(&[198, 19, 0, 2]);
        assert!(!upload.is_outgoing(&elsewhere));
        assert!(!upload.is_outgoing(&tcp(40000, 8443)));
        assert!(!upload.is_outgoing(&ipv4_udp(40000, 19532, 0)));
        assert!(!Background::default().is_outgoing(&tcp(40000, 19532)));
        assert!(!Background::default().is_incoming(&answer));
        // Still time sync with an upload configured.
        assert!(upload.is_outgoing(&ipv4_udp(40000, NTP_PORT, 0)));
        // A fragment of the upload is not read (no TCP header to judge): it counts as use.
        let mut fragment = tcp(40000, 19532);
        fragment[6..8].copy_from_slice(&0x2000u16.to_be_bytes());
        assert!(!upload.is_outgoing(&fragment));
    }

    #[test]
    fn net7_ops4_scrapes_of_the_metrics_listener_are_background_and_no_other_tcp_to_the_box_is() {
        // The box is 198.19.0.20 (ipv4_udp's source); its metrics listener port 9100.
        let metrics = Background {
            upload: None,
            metrics: Some("198.19.0.20:9100".parse().unwrap()),
        };
        let from_box = |src: u16, dst: u16| {
            let mut packet = ipv4_udp(src, dst, 0);
            packet[9] = TCP;
            packet
        };
        let to_box = |src: u16, dst: u16| {
            let mut packet = from_box(src, dst);
            packet.copy_within(12..16, 16);
            packet[12..16].copy_from_slice(&[198, 19, 0, 1]);
            packet
        };
        // A scrape in, the listener's answer out.
        assert!(metrics.is_incoming(&to_box(50000, 9100)));
        assert!(metrics.is_outgoing(&from_box(9100, 50000)));
        // Not the other way round: the box's own connection from port 9100, an answer to port
        // 9100 of the box's, another port of the box, the port over UDP.
        assert!(!metrics.is_incoming(&from_box(9100, 50000)));
        assert!(!metrics.is_outgoing(&to_box(50000, 9100)));
        assert!(!metrics.is_incoming(&to_box(50000, 7443)));
        assert!(!metrics.is_outgoing(&from_box(7443, 50000)));
        let mut udp = to_box(50000, 9100);
        udp[9] = UDP;
        assert!(!metrics.is_incoming(&udp));
        // Another address of the box's on the same port: not the listener.
        let mut elsewhere = to_box(50000, 9100);
        elsewhere[16..20].copy_from_slice(&[198, 19, 0, 21]);
        assert!(!metrics.is_incoming(&elsewhere));
        // Without a metrics listener, nothing of it is background.
        assert!(!Background::default().is_incoming(&to_box(50000, 9100)));
        assert!(!Background::default().is_outgoing(&from_box(9100, 50000)));
    }
}
