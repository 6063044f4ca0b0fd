//! TUN segmentation offload (`IFF_VNET_HDR`): the kernel hands the data plane TCP (and, with
//! USO, UDP) super-segments of up to 64 KiB behind a virtio-net header, and takes coalesced
//! ones back. [`receive`] handles one read: it completes a partial checksum, or splits a
//! super-segment into packets that fit the tunnel's MTU ([`segment`]); [`Coalescer`] joins
//! decrypted packets of one TCP flow into one write (GRO). Byte slices only: no system calls,
//! no allocation once its buffers grew.
//!
//! - [`header`]: the virtio-net header and the errors of a read.
//! - [`wire`]: where IP, TCP and UDP header fields are.
//! - [`checksum`]: the Internet checksum.
//! - [`segment`], [`coalesce`]: the two directions.

use std::ops::Range;

pub mod checksum;
pub mod coalesce;
pub mod header;
pub mod segment;
pub mod wire;

pub use checksum::checksum;
pub use coalesce::Coalescer;
pub use header::*;
pub use segment::Segments;

use checksum::complete_checksum;
use segment::split;

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

#[cfg(test)]
mod test_packets;

#[cfg(test)]
mod tests {
    use super::test_packets::*;
    use super::wire::*;
    use super::*;

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
