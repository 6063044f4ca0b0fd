//! UDP datagrams into the data plane, plain and authenticated, without a TUN device: two
//! boringtun sessions (the box and its peer; the harness holds both ends' keys) complete a real
//! handshake, then the input is, by its first byte:
//!
//! - 0: a raw datagram from the wire, decapsulated by the box's session;
//! - 1: inner packets (each prefixed by its length, u16 big-endian) sealed by the peer and
//!   opened by the box, so every mutated packet reaches the NET-8 filter as a peer's packet;
//! - 2: one read from the TUN device (virtio-net header and packet) through
//!   `offload::receive` (checksum completion, super-segment split) and the outgoing filter.
//!
//! What the box opens goes where `DataPlane::incoming` sends it: `filter::incoming`, then the
//! GRO `Coalescer` and its `drain` into the vectored TUN write (here into a byte count).
#![no_main]

use std::io::IoSlice;
use std::net::{IpAddr, Ipv4Addr};

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use libfuzzer_sys::fuzz_target;
use renkei::tunnel::filter;
use renkei::tunnel::offload::{self, Coalescer, Read, Segments};

/// The box's tunnel address; its peer owns 198.18.0.0/24 and fd00::/8 (test ranges only).
const OWN: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
const FROM: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 1, 2));
const BUF: usize = 65_536 + 256;

fn peer_owns(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.octets()[..3] == [198, 18, 0],
        IpAddr::V6(v6) => v6.octets()[0] == 0xfd,
    }
}

/// The box's and the peer's sessions after a completed handshake.
fn sessions() -> (Tunn, Tunn) {
    let box_secret = StaticSecret::from([0x11; 32]);
    let peer_secret = StaticSecret::from([0x22; 32]);
    let box_public = PublicKey::from(&box_secret);
    let peer_public = PublicKey::from(&peer_secret);
    let mut on_box = Tunn::new(box_secret, peer_public, None, None, 1, None);
    let mut peer = Tunn::new(peer_secret, box_public, None, None, 2, None);
    let mut wire = vec![0u8; BUF];
    let mut out = vec![0u8; BUF];
    let TunnResult::WriteToNetwork(init) = peer.format_handshake_initiation(&mut wire, false)
    else {
        panic!("the peer starts a handshake");
    };
    let TunnResult::WriteToNetwork(response) = on_box.decapsulate(Some(FROM), init, &mut out)
    else {
        panic!("the box answers the handshake");
    };
    let response = response.to_vec();
    // The peer's first packet (a keepalive) confirms the session to the box.
    if let TunnResult::WriteToNetwork(keepalive) = peer.decapsulate(Some(OWN), &response, &mut wire)
    {
        let keepalive = keepalive.to_vec();
        let _ = on_box.decapsulate(Some(FROM), &keepalive, &mut out);
    }
    (on_box, peer)
}

/// What the data plane does with a datagram the box's session opened.
fn deliver(result: TunnResult<'_>, coalescer: &mut Coalescer) {
    if let TunnResult::WriteToTunnelV4(bytes, _) | TunnResult::WriteToTunnelV6(bytes, _) = result {
        if filter::incoming(bytes, OWN, peer_owns).is_ok() {
            coalescer.push(bytes);
        }
    }
}

fn write_to_tun(coalescer: &mut Coalescer) {
    let mut written = 0usize;
    coalescer.drain(|parts: &[IoSlice<'_>]| {
        written += parts.iter().map(|p| p.len()).sum::<usize>();
    });
    std::hint::black_box(written);
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut coalescer = Coalescer::new();
    let mut out = vec![0u8; BUF];
    match mode % 3 {
        0 => {
            let (mut on_box, _peer) = sessions();
            let _ = Tunn::parse_incoming_packet(rest);
            deliver(
                on_box.decapsulate(Some(FROM), rest, &mut out),
                &mut coalescer,
            );
            write_to_tun(&mut coalescer);
        }
        1 => {
            let (mut on_box, mut peer) = sessions();
            let mut sealed = vec![0u8; BUF];
            let mut rest = rest;
            while rest.len() >= 2 {
                let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                let inner = &rest[2..rest.len().min(2 + len)];
                rest = &rest[2 + inner.len()..];
                let TunnResult::WriteToNetwork(datagram) = peer.encapsulate(inner, &mut sealed)
                else {
                    continue;
                };
                deliver(
                    on_box.decapsulate(Some(FROM), datagram, &mut out),
                    &mut coalescer,
                );
            }
            write_to_tun(&mut coalescer);
        }
        _ => {
            let mut read = rest.to_vec();
            let mut segments = Segments::new();
            match offload::receive(&mut read, &mut segments) {
                Ok(Read::Single(range)) => {
                    let _ = filter::outgoing(&read[range], OWN);
                }
                Ok(Read::Split) => {
                    for segment in segments.iter() {
                        let _ = filter::outgoing(segment, OWN);
                    }
                }
                Err(err) => {
                    let _ = err.to_string();
                }
            }
        }
    }
});
