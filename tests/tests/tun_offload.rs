//! TUN offloads against the kernel itself: a real TUN device opened by renkei with offloads on,
//! in a namespace of the test's own. The kernel's TCP and UDP stacks write super-segments into
//! it; the test captures them, splits them with renkei's code and checks every packet with a
//! checksum written here (not renkei's); then it coalesces packets of its own into one
//! super-packet and the kernel's TCP takes it as the bytes it carries.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

use renkei::tunnel::offload::{self, Coalescer, Segments, VnetHeader};
use renkei::tunnel::tun::Tun;
use renkei_lab::netns::Namespace;
use renkei_lab::{require_root, wait_until};

const DEVICE: &str = "rkoff0";
const OWN: [u8; 4] = [198, 18, 7, 1];
const PEER: [u8; 4] = [198, 18, 7, 2];
const OWN6: &str = "fd00:7::1";
const PEER6: &str = "fd00:7::2";
const PEER_PORT: u16 = 4430;
const MTU: usize = 1420;

/// The box's and the peer's addresses and the IP header length of one IP version.
#[derive(Clone, Copy)]
struct Family {
    v6: bool,
}

impl Family {
    fn own(self) -> std::net::IpAddr {
        if self.v6 {
            OWN6.parse().expect("address")
        } else {
            OWN.into()
        }
    }

    fn peer(self) -> std::net::IpAddr {
        if self.v6 {
            PEER6.parse().expect("address")
        } else {
            PEER.into()
        }
    }

    fn ip_len(self) -> usize {
        if self.v6 {
            40
        } else {
            20
        }
    }

    /// The MSS the test's SYN-ACK announces: the tunnel MTU less IP and TCP headers.
    fn mss(self) -> usize {
        MTU - self.ip_len() - 20
    }
}

fn octets(ip: std::net::IpAddr) -> Vec<u8> {
    match ip {
        std::net::IpAddr::V4(v4) => v4.octets().to_vec(),
        std::net::IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}
const CAPTURE_TIMEOUT: Duration = Duration::from_secs(10);

/// The Internet checksum, written plainly and apart from renkei's.
fn internet_sum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        let mut i = 0;
        while i + 1 < part.len() {
            sum += u32::from(part[i]) << 8 | u32::from(part[i + 1]);
            i += 2;
        }
        if i < part.len() {
            sum += u32::from(part[i]) << 8;
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// True when an IPv4 packet's header checksum (IPv6 has none) and its TCP/UDP checksum verify.
fn checksums_ok(packet: &[u8]) -> bool {
    if packet[0] >> 4 == 6 {
        let l4 = &packet[40..];
        let mut pseudo = Vec::with_capacity(40);
        pseudo.extend_from_slice(&packet[8..40]);
        pseudo.extend_from_slice(&(l4.len() as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, packet[6]]);
        return internet_sum(&[&pseudo, l4]) == 0;
    }
    let ihl = usize::from(packet[0] & 0x0f) * 4;
    let l4 = &packet[ihl..];
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&packet[12..20]);
    pseudo.extend_from_slice(&[0, packet[9]]);
    pseudo.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    internet_sum(&[&packet[..ihl]]) == 0 && internet_sum(&[&pseudo, l4]) == 0
}

/// A TCP packet from the peer to the box's socket, checksums complete.
fn tcp_from_peer(
    family: Family,
    dst_port: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    options: &[u8],
    data: &[u8],
) -> Vec<u8> {
    let tcp_len = 20 + options.len();
    let ip_len = family.ip_len();
    let total = ip_len + tcp_len + data.len();
    let mut p = vec![0u8; total];
    if family.v6 {
        p[0] = 0x60;
        p[4..6].copy_from_slice(&((tcp_len + data.len()) as u16).to_be_bytes());
        p[6] = 6;
        p[7] = 64;
        p[8..24].copy_from_slice(&octets(family.peer()));
        p[24..40].copy_from_slice(&octets(family.own()));
    } else {
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[6] = 0x40;
        p[8] = 64;
        p[9] = 6;
        p[12..16].copy_from_slice(&PEER);
        p[16..20].copy_from_slice(&OWN);
        let sum = internet_sum(&[&p[..20]]);
        p[10..12].copy_from_slice(&sum.to_be_bytes());
    }
    let t = &mut p[ip_len..];
    t[0..2].copy_from_slice(&PEER_PORT.to_be_bytes());
    t[2..4].copy_from_slice(&dst_port.to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[8..12].copy_from_slice(&ack.to_be_bytes());
    t[12] = ((tcp_len / 4) as u8) << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&65535u16.to_be_bytes());
    t[20..tcp_len].copy_from_slice(options);
    t[tcp_len..].copy_from_slice(data);
    let mut pseudo = octets(family.peer());
    pseudo.extend_from_slice(&octets(family.own()));
    pseudo.extend_from_slice(&((tcp_len + data.len()) as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 6]);
    let sum = internet_sum(&[&pseudo, &p[ip_len..]]);
    p[ip_len + 16..ip_len + 18].copy_from_slice(&sum.to_be_bytes());
    p
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Reads from the device until `keep` accepts a read (header and packet), bounded.
fn capture(tun: &Tun, what: &str, mut keep: impl FnMut(&[u8]) -> bool) -> Vec<u8> {
    let mut buf = vec![0u8; offload::VNET_HDR_BYTES + offload::MAX_SUPER_PACKET_BYTES];
    wait_until(CAPTURE_TIMEOUT, what, || {
        while let Ok(n) = tun.try_recv(&mut buf) {
            if keep(&buf[..n]) {
                return Some(buf[..n].to_vec());
            }
        }
        None
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

fn ip(args: &[&str]) {
    let status = std::process::Command::new("ip")
        .args(args)
        .status()
        .expect("ip runs");
    assert!(status.success(), "ip {args:?}");
}

/// Everything runs on one thread inside a namespace of the test's own (`tag` tells the tests of
/// one process apart); threads it starts are inside too.
fn in_namespace(tag: &str, test: impl FnOnce() + Send + 'static) {
    let ns = Namespace::create(&format!("rktun{}{tag}", std::process::id())).expect("namespace");
    let outcome =
        ns.run_inside(move || std::panic::catch_unwind(std::panic::AssertUnwindSafe(test)));
    drop(ns);
    if let Err(panic) = outcome.expect("thread in the namespace") {
        std::panic::resume_unwind(panic);
    }
}

/// renkei's TUN device `DEVICE` with `queues` queues and offloads asked for, registered with a
/// runtime of its own (returned with it: the device lives as long as both).
fn tun_with_queues(queues: usize) -> (tokio::runtime::Runtime, Tun) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("runtime");
    let tun = {
        let _reactor = runtime.enter();
        Tun::create_queues(DEVICE, None, queues).expect("TUN device")
    };
    (runtime, tun)
}

/// A renkei TUN device with offloads, up, with the box's address and the peer behind it.
fn offloading_tun(family: Family) -> (tokio::runtime::Runtime, Tun) {
    let (runtime, tun) = tun_with_queues(1);
    assert!(
        tun.offloads().is_on(),
        "this kernel refused offloads: {}",
        tun.offloads().describe()
    );
    if family.v6 {
        let status = std::process::Command::new("sysctl")
            .args(["-qw", &format!("net.ipv6.conf.{DEVICE}.disable_ipv6=0")])
            .status()
            .expect("sysctl runs");
        assert!(status.success(), "IPv6 on for {DEVICE}");
        ip(&[
            "-6",
            "addr",
            "add",
            &format!("{OWN6}/64"),
            "dev",
            DEVICE,
            "nodad",
        ]);
    } else {
        ip(&["addr", "add", "198.18.7.1/24", "dev", DEVICE]);
    }
    ip(&["link", "set", DEVICE, "mtu", &MTU.to_string(), "up"]);
    (runtime, tun)
}

#[test]
fn net1_tcp_super_segments_captured_from_a_real_tun_split_into_valid_mss_packets_and_coalesce_back()
{
    require_root!();
    in_namespace("t4", || tcp_capture(Family { v6: false }));
}

#[test]
fn net1_ipv6_tcp_super_segments_captured_from_a_real_tun_split_into_valid_mss_packets_and_coalesce_back(
) {
    require_root!();
    in_namespace("t6", || tcp_capture(Family { v6: true }));
}

/// The kernel's TCP over a renkei TUN device with offloads: its super-segments split right, and
/// a coalesced write of the test's is taken.
fn tcp_capture(family: Family) {
    {
        let (_runtime, tun) = offloading_tun(family);
        let ip_len = family.ip_len();
        let mss = family.mss();
        let gso_type = if family.v6 {
            offload::GSO_TCPV6
        } else {
            offload::GSO_TCPV4
        };
        let peer = SocketAddr::new(family.peer(), PEER_PORT);
        let connecting =
            std::thread::spawn(move || TcpStream::connect_timeout(&peer, CAPTURE_TIMEOUT));

        // The kernel's SYN; the test answers as the peer, announcing its mss.
        let syn = capture(&tun, "the SYN", |read| {
            let p = &read[offload::VNET_HDR_BYTES..];
            let protocol = if family.v6 { p.get(6) } else { p.get(9) };
            p.len() >= ip_len + 20
                && p[0] >> 4 == if family.v6 { 6 } else { 4 }
                && protocol == Some(&6)
                && p[ip_len + 13] & 0x02 != 0
        });
        let syn = &syn[offload::VNET_HDR_BYTES..];
        let box_port = u16::from_be_bytes([syn[ip_len], syn[ip_len + 1]]);
        let box_isn = u32_at(syn, ip_len + 4);
        let peer_isn: u32 = 0x1000_0000;
        let mss_option = [2, 4, (mss >> 8) as u8, mss as u8];
        let syn_ack = tcp_from_peer(
            family,
            box_port,
            peer_isn,
            box_isn.wrapping_add(1),
            0x12,
            &mss_option,
            &[],
        );
        tun.try_send(&syn_ack).expect("SYN-ACK written");
        let mut stream = connecting
            .join()
            .expect("connect thread")
            .expect("the kernel completes the handshake");

        // 48 KiB in one write: the kernel sends its first flight as a TSO super-segment.
        let data: Vec<u8> = (0..48 * 1024)
            .map(|i: usize| (i * 31 + i / 977) as u8)
            .collect();
        let mut writer = stream.try_clone().expect("clone");
        let sent = data.clone();
        let writing = std::thread::spawn(move || writer.write_all(&sent));
        let mut read = capture(&tun, "a TCP super-segment", |read| {
            VnetHeader::parse(read).is_ok_and(|h| h.gso_type == gso_type)
        });
        let header = VnetHeader::parse(&read).expect("header");
        assert_eq!(usize::from(header.gso_size), mss, "{header:?}");
        assert_eq!(header.flags, offload::VNET_F_NEEDS_CSUM, "{header:?}");
        let mut segments = Segments::new();
        assert_eq!(
            offload::receive(&mut read, &mut segments),
            Ok(offload::Read::Split)
        );
        assert!(segments.len() >= 2, "{} segments", segments.len());
        let mut expected_seq = box_isn.wrapping_add(1);
        let mut payload = Vec::new();
        for (i, s) in segments.iter().enumerate() {
            assert!(s.len() <= MTU, "segment {i}: {} bytes", s.len());
            let length = if family.v6 {
                usize::from(u16::from_be_bytes([s[4], s[5]])) + 40
            } else {
                usize::from(u16::from_be_bytes([s[2], s[3]]))
            };
            assert_eq!(length, s.len());
            assert!(checksums_ok(s), "segment {i}: a checksum does not verify");
            assert_eq!(u32_at(s, ip_len + 4), expected_seq, "segment {i}");
            let body = &s[ip_len + usize::from(s[ip_len + 12] >> 4) * 4..];
            expected_seq = expected_seq.wrapping_add(body.len() as u32);
            payload.extend_from_slice(body);
        }
        assert_eq!(
            payload,
            data[..payload.len()],
            "the bytes written, in order"
        );

        // The other way: eight segments of the peer's, coalesced into one write the kernel's
        // TCP takes as 8 * mss bytes in order.
        let reply: Vec<u8> = (0..8 * mss).map(|i| (i % 251) as u8).collect();
        let mut gro = Coalescer::new();
        for (i, chunk) in reply.chunks(mss).enumerate() {
            let seq = peer_isn.wrapping_add(1 + (i * mss) as u32);
            gro.push(&tcp_from_peer(
                family,
                box_port,
                seq,
                box_isn.wrapping_add(1),
                0x10,
                &[],
                chunk,
            ));
        }
        let mut writes = 0;
        gro.drain(|parts| {
            let header = VnetHeader::parse(&parts[0]).expect("header");
            assert_eq!(header.gso_type, gso_type);
            assert_eq!(usize::from(header.gso_size), mss);
            tun.try_send_vectored(parts).expect("super-packet written");
            writes += 1;
        });
        assert_eq!(writes, 1, "one write for the whole run of the flow");
        stream
            .set_read_timeout(Some(CAPTURE_TIMEOUT))
            .expect("timeout");
        let mut got = vec![0u8; reply.len()];
        stream
            .read_exact(&mut got)
            .expect("the kernel delivers the coalesced bytes");
        assert_eq!(got, reply);
        let _ = nix::sys::socket::shutdown(stream.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        drop(stream);
        let _ = writing.join();
    }
}

#[test]
fn net1_udp_super_segments_captured_from_a_real_tun_split_into_valid_datagrams() {
    require_root!();
    in_namespace("u4", || {
        let (_runtime, tun) = offloading_tun(Family { v6: false });
        if tun.offloads() != &(renkei::tunnel::tun::Offloads::On { uso: true }) {
            eprintln!("this kernel has no USO: {}", tun.offloads().describe());
            return;
        }
        let socket = std::net::UdpSocket::bind("198.18.7.1:0").expect("UDP socket");
        let segment: u16 = 1000;
        nix::sys::socket::setsockopt(
            &socket,
            nix::sys::socket::sockopt::UdpGsoSegment,
            &i32::from(segment),
        )
        .expect("UDP_SEGMENT");
        let data: Vec<u8> = (0..3500).map(|i: usize| (i * 13) as u8).collect();
        socket
            .send_to(&data, SocketAddr::from((PEER, 9)))
            .expect("one send of four datagrams");
        let mut read = capture(&tun, "a UDP super-segment", |read| {
            VnetHeader::parse(read).is_ok_and(|h| h.gso_type == offload::GSO_UDP_L4)
        });
        let mut segments = Segments::new();
        assert_eq!(
            offload::receive(&mut read, &mut segments),
            Ok(offload::Read::Split)
        );
        let sizes: Vec<usize> = segments.iter().map(|s| s.len() - 28).collect();
        assert_eq!(sizes, vec![1000, 1000, 1000, 500]);
        let mut payload = Vec::new();
        for s in segments.iter() {
            assert!(checksums_ok(s), "a checksum does not verify");
            assert_eq!(
                usize::from(u16::from_be_bytes([s[24], s[25]])),
                s.len() - 20
            );
            payload.extend_from_slice(&s[28..]);
        }
        assert_eq!(payload, data);
    });
}

/// Sends two datagrams of each of `flows` new flows (source ports) from the box's address to the
/// peer behind the device and returns, for each flow, the queues its datagrams came out of.
fn queues_of_new_flows(tun: &Tun, flows: usize) -> std::collections::HashMap<u16, Vec<usize>> {
    let peer = SocketAddr::new(PEER.into(), PEER_PORT);
    let sockets: Vec<std::net::UdpSocket> = (0..flows)
        .map(|_| std::net::UdpSocket::bind("198.18.7.1:0").expect("UDP socket"))
        .collect();
    for round in 0..2u8 {
        for socket in &sockets {
            socket
                .send_to(&[round; 8], peer)
                .expect("sent into the device");
        }
    }
    let ports: Vec<u16> = sockets
        .iter()
        .map(|s| s.local_addr().expect("bound").port())
        .collect();
    let mut queues_of: std::collections::HashMap<u16, Vec<usize>> = Default::default();
    let mut buf = vec![0u8; 65_536];
    wait_until(Duration::from_secs(10), "every datagram read", || {
        for queue in 0..tun.queue_count() {
            while let Ok(n) = tun.queue(queue).try_recv(&mut buf) {
                let packet = &buf[offload::VNET_HDR_BYTES..n];
                let header = usize::from(packet[0] & 0x0f) * 4;
                let is_ours = packet[0] >> 4 == 4
                    && packet[9] == 17
                    && packet.get(header + 2..header + 4) == Some(&PEER_PORT.to_be_bytes());
                if is_ours {
                    let port = u16::from_be_bytes([packet[header], packet[header + 1]]);
                    if ports.contains(&port) {
                        queues_of.entry(port).or_default().push(queue);
                    }
                }
            }
        }
        (queues_of.len() == flows && queues_of.values().all(|q| q.len() == 2)).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: {queues_of:?}"));
    for (port, queues) in &queues_of {
        assert_eq!(queues[0], queues[1], "flow from port {port} on two queues");
    }
    queues_of
}

/// How many of `queues_of`'s flows came out of each of `queues` queues.
fn flows_per_queue(
    queues_of: &std::collections::HashMap<u16, Vec<usize>>,
    queues: usize,
) -> Vec<usize> {
    (0..queues)
        .map(|queue| queues_of.values().filter(|q| q[0] == queue).count())
        .collect()
}

/// The device `DEVICE` up with the box's address, the peer behind it.
fn address_and_up() {
    ip(&["addr", "add", "198.18.7.1/24", "dev", DEVICE]);
    ip(&["link", "set", DEVICE, "mtu", &MTU.to_string(), "up"]);
}

/// A multi-queue device (a hub's, one queue per core): the kernel spreads flows over the
/// queues, every packet of one flow through the same queue, each read on its own descriptor.
#[test]
fn net1_a_multi_queue_tun_device_spreads_flows_over_its_queues() {
    require_root!();
    in_namespace("mq", || {
        const QUEUES: usize = 3;
        const FLOWS: usize = 64;
        let (_runtime, tun) = tun_with_queues(QUEUES);
        assert_eq!(tun.queue_count(), QUEUES);
        assert!(tun.offloads().is_on(), "{}", tun.offloads().describe());
        address_and_up();
        let per_queue = flows_per_queue(&queues_of_new_flows(&tun, FLOWS), QUEUES);
        // All on one queue by chance: QUEUES * (2/3)^64, about 2e-11.
        assert!(
            per_queue.iter().all(|n| *n > 0),
            "flows per queue {per_queue:?}"
        );
        eprintln!("flows per queue: {per_queue:?}");
    });
}

/// A hub's config change moves its number of lanes while its device is kept: a multi-queue
/// device (made with one queue, as a hub with one facility has) takes more queues (new flows reach them, with the offloads of the others) and gives
/// some back (then every flow comes out of the queues left, and the device stays); a device
/// made with one queue cannot take more, and says so.
#[test]
fn net1_a_kept_multi_queue_tun_device_takes_more_queues_and_gives_some_back() {
    require_root!();
    in_namespace("mqset", || {
        const FLOWS: usize = 64;
        // A hub's device: multi-queue from the start, with one queue while it has one peer.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .expect("runtime");
        let _reactor = runtime.enter();
        let mut tun = Tun::create_multi_queue(DEVICE, None, 1).expect("TUN device");
        assert_eq!(tun.queue_count(), 1);
        address_and_up();
        assert!(tun.can_have_queues(4));
        assert_eq!(tun.set_queue_count(DEVICE, 4), 4);
        assert_eq!(tun.queue_count(), 4);
        assert!(tun.offloads().is_on(), "{}", tun.offloads().describe());
        let per_queue = flows_per_queue(&queues_of_new_flows(&tun, FLOWS), 4);
        // A queue without a flow by chance: 4 * (3/4)^64, about 4e-8.
        assert!(
            per_queue.iter().all(|n| *n > 0),
            "flows per queue after growing to 4: {per_queue:?}"
        );

        assert_eq!(tun.set_queue_count(DEVICE, 1), 1);
        assert_eq!(tun.queue_count(), 1);
        let per_queue = flows_per_queue(&queues_of_new_flows(&tun, 16), 1);
        assert_eq!(per_queue, vec![16], "every flow on the one queue left");
        assert_eq!(tun.set_queue_count(DEVICE, 3), 3, "and it grows again");
    });
    in_namespace("sqset", || {
        let (runtime, mut tun) = tun_with_queues(1);
        let _reactor = runtime.enter();
        assert!(tun.can_have_queues(1));
        assert!(!tun.can_have_queues(2), "a single-queue device took more");
        assert_eq!(tun.set_queue_count(DEVICE, 2), 1);
    });
}
