//! Replayed and forged WireGuard messages from the WAN (INT-1): a handshake initiation
//! captured on the wire and replayed after the clinic idled out (NET-7), and a cookie reply
//! forged from a captured initiation, must neither move the clinic's endpoint nor count as a
//! handshake (which auto-confirm trusts, AUTH-2). Real daemons, real packets captured from the
//! WAN bridge, sent from an address of the WAN that no box has.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use renkei::config::Config;
use renkei_lab::{require_root, wait_until, Daemon, Lab, Node};

/// The attacker's address on the WAN bridge: in the lab's WAN subnet, used by no box.
const ATTACKER: &str = "198.18.0.99";
/// WireGuard message types.
const HANDSHAKE_INIT: u8 = 1;
/// Size of a handshake initiation.
const HANDSHAKE_INIT_BYTES: usize = 148;
/// Ethernet + IPv4 + UDP headers are read from captured frames.
const ETHERTYPE_IPV4: u16 = 0x0800;
const IPPROTO_UDP: u8 = 17;

/// A UDP datagram seen on the WAN bridge.
#[derive(Debug, Clone)]
struct Seen {
    from: SocketAddrV4,
    to: SocketAddrV4,
    payload: Vec<u8>,
}

/// A packet socket in the WAN namespace: sees every frame crossing the bridge. Closed on drop.
struct WanCapture {
    socket: OwnedFd,
}

impl WanCapture {
    fn open(lab: &Lab) -> WanCapture {
        use nix::sys::socket::{socket, AddressFamily, SockFlag, SockProtocol, SockType};
        let socket = lab
            .wan()
            .run_inside(|| {
                socket(
                    AddressFamily::Packet,
                    SockType::Raw,
                    SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
                    SockProtocol::EthAll,
                )
            })
            .expect("thread in the WAN namespace")
            .expect("packet socket");
        WanCapture { socket }
    }

    /// Waits for the first datagram that `wanted` picks among those seen since the capture was
    /// opened (older ones are read and passed over).
    fn wait_for(&self, what: &str, wanted: impl Fn(&Seen) -> bool) -> Seen {
        let mut frame = vec![0u8; 65_536];
        wait_until(Duration::from_secs(15), what, || loop {
            let n = nix::sys::socket::recv(
                self.socket.as_raw_fd(),
                &mut frame,
                nix::sys::socket::MsgFlags::empty(),
            )
            .ok()?;
            if let Some(seen) = udp_in_frame(&frame[..n]).filter(&wanted) {
                return Some(seen);
            }
        })
        .expect(what)
    }
}

/// The UDP datagram in an Ethernet frame carrying IPv4, if it is one.
fn udp_in_frame(frame: &[u8]) -> Option<Seen> {
    let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    let ip = frame.get(14..)?;
    if ethertype != ETHERTYPE_IPV4 || *ip.get(9)? != IPPROTO_UDP {
        return None;
    }
    let header = usize::from(ip.first()? & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]));
    let address = |at: usize| -> Option<Ipv4Addr> {
        let b: [u8; 4] = ip.get(at..at + 4)?.try_into().ok()?;
        Some(Ipv4Addr::from(b))
    };
    let udp = ip.get(header..total)?;
    let port =
        |at: usize| -> Option<u16> { Some(u16::from_be_bytes([*udp.get(at)?, *udp.get(at + 1)?])) };
    Some(Seen {
        from: SocketAddrV4::new(address(12)?, port(0)?),
        to: SocketAddrV4::new(address(16)?, port(2)?),
        payload: udp.get(8..)?.to_vec(),
    })
}

fn is_initiation(seen: &Seen, from: Node, to: Node) -> bool {
    seen.from.ip().to_string() == from.wan_address()
        && seen.to.ip().to_string() == to.wan_address()
        && seen.payload.len() == HANDSHAKE_INIT_BYTES
        && seen.payload.first() == Some(&HANDSHAKE_INIT)
}

/// A socket on the attacker's address in the WAN namespace (the address goes with the lab).
fn attacker(lab: &Lab) -> UdpSocket {
    lab.wan()
        .ip(&["addr", "add", &format!("{ATTACKER}/24"), "dev", "br0"])
        .expect("attacker address");
    lab.wan()
        .udp_socket(&format!("{ATTACKER}:0"))
        .expect("attacker socket")
}

/// What a replayed or forged message must not change, from the status document.
#[derive(Debug, PartialEq)]
struct PeerView {
    endpoint: serde_json::Value,
    last_handshake: serde_json::Value,
    handshakes_completed: serde_json::Value,
    state: serde_json::Value,
    session_keys_present: serde_json::Value,
}

fn view(daemon: &Daemon) -> PeerView {
    let p = daemon.peer("dc").expect("peer dc");
    PeerView {
        endpoint: p["backend"]["wireguard"]["endpoint"].clone(),
        last_handshake: p["last_reached"].clone(),
        handshakes_completed: p["backend"]["wireguard"]["handshakes_completed"].clone(),
        state: p["state"].clone(),
        session_keys_present: p["backend"]["wireguard"]["session_keys_present"].clone(),
    }
}

fn invalid_datagrams(daemon: &Daemon) -> u64 {
    daemon
        .status()
        .ok()
        .and_then(|s| s["tunnel"]["backend"]["wireguard"]["drops"]["invalid_datagrams"].as_u64())
        .unwrap_or(0)
}

/// Sends `message` from the attacker, then a datagram that is no WireGuard message at all from
/// the same socket: the clinic handles its datagrams in order, so once the junk is counted the
/// message before it has been handled too.
fn send_then_wait_until_handled(
    clinic: &Daemon,
    from: &UdpSocket,
    message: &[u8],
    to: SocketAddrV4,
) {
    let before = invalid_datagrams(clinic);
    from.send_to(message, to).expect("send the message");
    from.send_to(b"junk", to).expect("send the junk");
    wait_until(Duration::from_secs(10), "the clinic to handle both", || {
        (invalid_datagrams(clinic) > before).then_some(())
    })
    .expect("handled");
}

fn clinic_config(lab: &Lab) -> Config {
    let mut config = lab.config(Node::Clinic);
    config
        .tunnel
        .as_mut()
        .expect("[tunnel]")
        .policy
        .idle_timeout_secs = 10;
    config
}

#[test]
fn int1_net7_auth2_a_captured_initiation_replayed_after_the_clinic_idled_out_changes_nothing() {
    require_root!();
    let lab = Lab::new().expect("lab");
    let mut hub = lab.start(Node::Hub, &lab.config(Node::Hub)).expect("hub");
    let clinic = lab
        .start(Node::Clinic, &clinic_config(&lab))
        .expect("clinic");

    // The clinic connects; the hub writes down where the clinic is.
    clinic.control("connect").expect("connect");
    let resume = lab
        .node_dir(Node::Hub)
        .join("state")
        .join(renkei::tunnel::resume::FILE_NAME);
    let clinic_key = lab.public_key(Node::Clinic).to_string();
    wait_until(Duration::from_secs(10), "the hub's resume file", || {
        std::fs::read_to_string(&resume)
            .ok()
            .filter(|text| text.contains(&clinic_key))
    })
    .expect("resume file");

    // The hub restarts and greets the clinic with a handshake initiation: captured on the WAN.
    let capture = WanCapture::open(&lab);
    let completed_before = clinic.peer("dc").expect("peer")["backend"]["wireguard"]
        ["handshakes_completed"]
        .as_u64()
        .unwrap_or(0);
    hub.terminate().expect("hub stops");
    let _hub = lab
        .start_with(Node::Hub, &lab.node_dir(Node::Hub).join("renkei.toml"))
        .expect("hub restarted");
    let captured = capture.wait_for("the hub's initiation to the clinic", |seen| {
        is_initiation(seen, Node::Hub, Node::Clinic)
    });
    wait_until(
        Duration::from_secs(10),
        "the clinic to answer the hub",
        || {
            let done =
                clinic.peer("dc").ok()?["backend"]["wireguard"]["handshakes_completed"].as_u64()?;
            (done > completed_before).then_some(())
        },
    )
    .expect("the greeting answered");

    // The clinic idles out: session and keys dropped.
    wait_until(Duration::from_secs(40), "the clinic to go idle", || {
        let p = clinic.peer("dc").ok()?;
        (p["state"] == "idle" && p["backend"]["wireguard"]["session_keys_present"] == false)
            .then_some(())
    })
    .expect("idle");
    let before = view(&clinic);
    assert_eq!(
        before.endpoint,
        format!("{}:{}", Node::Hub.wan_address(), renkei_lab::lab::HUB_PORT).as_str()
    );

    // The replay, from elsewhere on the WAN.
    let attacker = attacker(&lab);
    let invalid_before = invalid_datagrams(&clinic);
    send_then_wait_until_handled(&clinic, &attacker, &captured.payload, captured.to);
    wait_until(Duration::from_secs(10), "the replay to be refused", || {
        (invalid_datagrams(&clinic) >= invalid_before + 2 || view(&clinic) != before).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: {:?} -> {:?}", before, view(&clinic)));
    assert_eq!(
        view(&clinic),
        before,
        "the replayed initiation changed the clinic's peer"
    );
    assert!(
        clinic.log_text().contains("replayed handshake initiation"),
        "{}",
        clinic.log_text()
    );
}

#[test]
fn int1_a_forged_cookie_reply_does_not_move_the_clinic_endpoint() {
    require_root!();
    let lab = Lab::new().expect("lab");
    let _hub = lab.start(Node::Hub, &lab.config(Node::Hub)).expect("hub");
    let clinic = lab
        .start(Node::Clinic, &clinic_config(&lab))
        .expect("clinic");

    // The clinic's initiation, seen on the WAN while it connects.
    let capture = WanCapture::open(&lab);
    clinic.control("connect").expect("connect");
    let captured = capture.wait_for("the clinic's initiation", |seen| {
        is_initiation(seen, Node::Clinic, Node::Hub)
    });
    wait_until(Duration::from_secs(10), "the session", || {
        (clinic.peer("dc").ok()?["state"] == "up").then_some(())
    })
    .expect("up");

    // A cookie reply to it, sealed as the hub would with the hub's public key (no secret),
    // carrying the receiver index of the clinic's live session.
    let hub_key = renkei::keys::decode_key(lab.public_key(Node::Hub)).expect("hub key");
    let forger = boringtun::noise::rate_limiter::RateLimiter::new(
        &boringtun::x25519::PublicKey::from(hub_key),
        0,
    );
    let mut buf = [0u8; 64];
    let clinic_ip = (*captured.from.ip()).into();
    let Err(boringtun::noise::TunnResult::WriteToNetwork(cookie)) =
        forger.verify_packet(Some(clinic_ip), &captured.payload, &mut buf)
    else {
        panic!("no cookie reply forged");
    };
    let cookie = cookie.to_vec();

    let before = view(&clinic);
    let attacker = attacker(&lab);
    send_then_wait_until_handled(&clinic, &attacker, &cookie, captured.from);
    let after = view(&clinic);
    assert_eq!(
        after.endpoint, before.endpoint,
        "the forged cookie reply moved the clinic's endpoint"
    );
    assert_eq!(after.state, "up", "the session is untouched");
}
