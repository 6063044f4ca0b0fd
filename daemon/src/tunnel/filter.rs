//! The box is not a router (requirement NET-8): the only packets that cross the tunnel are the
//! box's own. These checks read IP headers only and never allocate; they sit on the hot path.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const IPV4_HEADER_MIN: usize = 20;
const IPV6_HEADER_LEN: usize = 40;

/// Source and destination of an IP packet, or `None` when it is not a well-formed IPv4/IPv6
/// header.
pub fn addresses(packet: &[u8]) -> Option<(IpAddr, IpAddr)> {
    match packet.first()? >> 4 {
        4 if packet.len() >= IPV4_HEADER_MIN => {
            let src: [u8; 4] = packet[12..16].try_into().ok()?;
            let dst: [u8; 4] = packet[16..20].try_into().ok()?;
            Some((Ipv4Addr::from(src).into(), Ipv4Addr::from(dst).into()))
        }
        6 if packet.len() >= IPV6_HEADER_LEN => {
            let src: [u8; 16] = packet[8..24].try_into().ok()?;
            let dst: [u8; 16] = packet[24..40].try_into().ok()?;
            Some((Ipv6Addr::from(src).into(), Ipv6Addr::from(dst).into()))
        }
        _ => None,
    }
}

/// Why a packet was not allowed through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    /// Not an IPv4/IPv6 packet.
    Malformed,
    /// From the TUN device, but not from the box's own tunnel address: a forwarded LAN packet.
    ForeignSource,
    /// From the TUN device, to an address no peer is responsible for.
    NoRoute,
    /// From a peer, but not addressed to the box's own tunnel address.
    ForeignDestination,
    /// From a peer, with a source outside the peer's allowed IPs (spoofed).
    SourceNotAllowed,
}

/// Checks a packet read from the TUN device: it must come from the box itself.
pub fn outgoing(packet: &[u8], own: IpAddr) -> Result<IpAddr, Drop> {
    let (src, dst) = addresses(packet).ok_or(Drop::Malformed)?;
    if src != own {
        return Err(Drop::ForeignSource);
    }
    Ok(dst)
}

/// Checks a packet decapsulated from a peer: it must be for the box itself and come from an
/// address the peer owns.
pub fn incoming(
    packet: &[u8],
    own: IpAddr,
    peer_owns: impl Fn(IpAddr) -> bool,
) -> Result<(), Drop> {
    let (src, dst) = addresses(packet).ok_or(Drop::Malformed)?;
    if dst != own {
        return Err(Drop::ForeignDestination);
    }
    if !peer_owns(src) {
        return Err(Drop::SourceNotAllowed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        let mut p = vec![0u8; 28];
        p[0] = 0x45;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        p
    }

    fn v6(src: Ipv6Addr, dst: Ipv6Addr) -> Vec<u8> {
        let mut p = vec![0u8; 48];
        p[0] = 0x60;
        p[8..24].copy_from_slice(&src.octets());
        p[24..40].copy_from_slice(&dst.octets());
        p
    }

    const OWN: [u8; 4] = [198, 19, 0, 20];
    const HUB: [u8; 4] = [198, 19, 0, 1];
    const LAN: [u8; 4] = [198, 18, 20, 2];

    #[test]
    fn net8_own_packets_leave_foreign_ones_do_not() {
        let own = IpAddr::from(OWN);
        assert_eq!(outgoing(&v4(OWN, HUB), own), Ok(IpAddr::from(HUB)));
        assert_eq!(outgoing(&v4(LAN, HUB), own), Err(Drop::ForeignSource));
        assert_eq!(outgoing(&[0x45, 0, 0], own), Err(Drop::Malformed));
        assert_eq!(outgoing(&[], own), Err(Drop::Malformed));
        assert_eq!(outgoing(&[0x10; 40], own), Err(Drop::Malformed));
    }

    #[test]
    fn net8_incoming_must_be_for_us_from_the_peer() {
        let own = IpAddr::from(OWN);
        let hub_owns = |ip: IpAddr| ip == IpAddr::from(HUB);
        assert_eq!(incoming(&v4(HUB, OWN), own, hub_owns), Ok(()));
        assert_eq!(
            incoming(&v4(HUB, LAN), own, hub_owns),
            Err(Drop::ForeignDestination)
        );
        assert_eq!(
            incoming(&v4(LAN, OWN), own, hub_owns),
            Err(Drop::SourceNotAllowed)
        );
    }

    #[test]
    fn ipv6_headers_are_read() {
        let a: Ipv6Addr = "fd00::14".parse().expect("addr");
        let b: Ipv6Addr = "fd00::1".parse().expect("addr");
        assert_eq!(outgoing(&v6(a, b), a.into()), Ok(b.into()));
        assert_eq!(outgoing(&v6(b, a), a.into()), Err(Drop::ForeignSource));
    }
}
