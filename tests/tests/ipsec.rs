//! The IKEv2/IPsec carrier's foundations in the namespace lab (NET-9, NET-10): the box's charon,
//! driven only through renkei's own VICI code (`renkei::carrier::ipsec::vici`), joins a data
//! centre's strongSwan concentrator configured by hand from a `swanctl.conf` and loaded with the
//! real `swanctl --load-all` (the independent peer).
//!
//! ```text
//!   hospital ns (the box)  --wan0-- WAN bridge --wan0--  dc ns (the concentrator)
//!   198.18.0.10 (IKE, ESP in UDP 4500)                   198.18.0.1
//!   198.19.0.10 on lo (the box's own address)            198.19.0.1 on lo (a plain TCP
//!                                                         listener stands for the services)
//! ```
//! The SA's traffic selectors are the box's own address and the data centre's service address
//! (NET-8): never the WAN addresses, whose IKE packets would otherwise be routed into the
//! tunnel. The first tests drive renkei's VICI code directly (no TLS). The `renkei run` tests
//! start the box's charon with the text of `renkei charon-conf` for the box's own config and
//! then renkei itself: the box's renkei terminates its inbound service's and management API's
//! TLS; in the data centre `openssl s_client` (holding the hub's lab-CA certificate), the
//! operator's `renkei` and `openssl s_server -WWW` (for the box's outbound service) are the
//! other ends. renkei puts the box's own address on a TUN device of its own (`renkei-ipsec`);
//! its management API listens on charon's `ipsec0`.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use futures::StreamExt;
use renkei::carrier::ipsec::charon_conf::{CharonSettings, KernelBackend, FAST_RETRANSMIT};
use renkei::carrier::ipsec::connection::{ConnectionSettings, InnerAddress, StartPolicy};
use renkei::carrier::ipsec::proposal::{
    default_esp_proposals, default_ike_proposals, IkeAlgorithms,
};
use renkei::carrier::ipsec::refusal;
use renkei::carrier::ipsec::sa::{IkeState, SaEvent, SaEventKind};
use renkei::carrier::ipsec::vici::{CertificateRole, PrivateKey, Vici, ViciError};
use renkei::state::events::IpsecRefusal;
use renkei_lab::boxconfig::{service, socket, Peer};
use renkei_lab::concentrator::{renkei_charon_conf, swanctl_conf};
use renkei_lab::daemon::renkei_bin;
use renkei_lab::lab::{facility_connection, tls_config, DOCUMENT_SERVER_ADDRESS};
use renkei_lab::netns::run;
use renkei_lab::operator::{Operator, MANAGEMENT_PORT};
use renkei_lab::pki::Leaf;
use renkei_lab::strongswan::{concentrator_conf, Charon, CharonPaths};
use renkei_lab::tlstools::{run_bounded, Background, DocumentServer};
use renkei_lab::{require_root, wait_until, Lab, Node};

/// The box's own address inside the tunnel, and the data centre's service address.
const BOX_INNER: &str = "198.19.0.10";
const DC_INNER: &str = "198.19.0.1";
/// The listener behind the concentrator.
const SERVICE_PORT: u16 = 9443;
/// Bytes sent each way across the SA.
const PAYLOAD_BYTES: usize = 64 * 1024;
/// The connection's name on both sides.
const CONN: &str = "dc";
/// How long an IKE exchange on the lab's bridge may take.
const IKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the concentrator may take to drop its SAs after the box deleted them.
const PEER_DELETE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an event may take to arrive after the command that caused it returned.
const EVENT_TIMEOUT: Duration = Duration::from_secs(5);

/// The concentrator's connection, written by hand as an operator would: it answers the box
/// (identity pinned, certificate from the lab CA) with only `ike`/`esp` proposals.
fn concentrator_swanctl(ike: &str, esp: &str) -> String {
    swanctl_conf(&[facility_connection(
        Node::Hospital,
        CONN,
        DC_INNER,
        BOX_INNER,
        ike,
        esp,
    )])
}

/// The two charons of a test, in the lab's hospital (box) and dc (concentrator) namespaces.
struct Pair {
    // Dropped first: the charons stop before the namespaces go.
    concentrator: Charon,
    box_charon: Charon,
    lab: Lab,
}

fn start_pair(ike: &str, esp: &str) -> anyhow::Result<Pair> {
    let lab = Lab::new()?;
    lab.ns(Node::Hospital)
        .ip(&["addr", "add", &format!("{BOX_INNER}/32"), "dev", "lo"])?;
    lab.ns(Node::Hub)
        .ip(&["addr", "add", &format!("{DC_INNER}/32"), "dev", "lo"])?;
    // The box's charon runs with the strongswan.conf renkei renders.
    let box_paths = CharonPaths::in_dir(&lab.dir.join("hospital-charon"));
    let box_conf = CharonSettings {
        vici_socket: box_paths.vici_socket.clone(),
        kernel: KernelBackend::Libipsec,
        log_file: Some(box_paths.log.clone()),
        retransmit: FAST_RETRANSMIT,
        inactivity_close_ike: true,
    }
    .render();
    let box_charon = Charon::start(lab.ns(Node::Hospital), box_paths, &box_conf)?;
    let dc_paths = CharonPaths::in_dir(&lab.dir.join("dc-charon"));
    let dc_conf = concentrator_conf(&dc_paths);
    let concentrator = Charon::start(lab.ns(Node::Hub), dc_paths, &dc_conf)?;
    concentrator.load_all(
        &concentrator_swanctl(ike, esp),
        lab.certificate(Node::Hub),
        &lab.ca.cert_pem,
    )?;
    Ok(Pair {
        concentrator,
        box_charon,
        lab,
    })
}

/// The box's connection, from typed settings: on-demand, so nothing starts before `initiate`.
fn box_connection(lab: &Lab) -> anyhow::Result<ConnectionSettings> {
    Ok(ConnectionSettings {
        name: CONN.to_string(),
        local_address: Node::Hospital.wan_address().parse()?,
        remote_address: Node::Hub.wan_address().parse()?,
        local_id: Node::Hospital.tls_name().to_string(),
        remote_id: Node::Hub.tls_name().to_string(),
        certificate_pem: lab.certificate(Node::Hospital).cert_pem.clone(),
        remote_ca_pems: vec![lab.ca.cert_pem.clone()],
        ike_proposals: default_ike_proposals(),
        esp_proposals: default_esp_proposals(),
        inner_address: InnerAddress::Configured(BOX_INNER.parse()?),
        remote_prefixes: vec![format!("{DC_INNER}/32").parse()?],
        policy: StartPolicy::OnDemand,
    })
}

/// Connects to the box's charon and loads key, certificates and connection through renkei's
/// VICI client.
async fn load_box(pair: &Pair) -> anyhow::Result<Vici> {
    let mut vici = Vici::connect(&pair.box_charon.paths.vici_socket).await?;
    let own = pair.lab.certificate(Node::Hospital);
    vici.load_key(&PrivateKey {
        pem: own.key_pem.clone(),
    })
    .await?;
    vici.load_cert(&own.cert_pem, CertificateRole::EndEntity)
        .await?;
    vici.load_cert(&pair.lab.ca.cert_pem, CertificateRole::Authority)
        .await?;
    vici.load_conn(&box_connection(&pair.lab)?).await?;
    Ok(vici)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Sends `PAYLOAD_BYTES` from the box's own address to the listener behind the concentrator
/// and reads as many back (the listener echoes).
fn exchange_across(lab: &Lab) -> anyhow::Result<()> {
    let listener = lab
        .ns(Node::Hub)
        .tcp_listener(&format!("{DC_INNER}:{SERVICE_PORT}"))?;
    let echo = std::thread::spawn(move || -> std::io::Result<usize> {
        let (mut stream, _) = listener.accept()?;
        stream.set_read_timeout(Some(IKE_TIMEOUT))?;
        let mut buf = vec![0u8; PAYLOAD_BYTES];
        stream.read_exact(&mut buf)?;
        stream.write_all(&buf)?;
        Ok(buf.len())
    });
    let mut stream = lab
        .ns(Node::Hospital)
        .tcp_connect(&format!("{DC_INNER}:{SERVICE_PORT}"), IKE_TIMEOUT)?;
    let local = stream.local_addr()?;
    anyhow::ensure!(
        local.ip().to_string() == BOX_INNER,
        "the connection left from {local}, not the box's own address"
    );
    stream.set_read_timeout(Some(IKE_TIMEOUT))?;
    let sent: Vec<u8> = (0..PAYLOAD_BYTES).map(|i| (i % 251) as u8).collect();
    stream.write_all(&sent)?;
    let mut back = vec![0u8; PAYLOAD_BYTES];
    stream.read_exact(&mut back)?;
    anyhow::ensure!(back == sent, "the echo differs from what was sent");
    let echoed = echo
        .join()
        .map_err(|_| anyhow::anyhow!("echo thread panicked"))??;
    anyhow::ensure!(echoed == PAYLOAD_BYTES);
    Ok(())
}

/// Waits for an event of `kind` with `up` from `events`.
async fn next_event(
    events: &mut (impl futures::Stream<Item = Result<SaEvent, ViciError>> + Unpin),
    kind: SaEventKind,
    up: bool,
) -> anyhow::Result<SaEvent> {
    let wait = async {
        while let Some(event) = events.next().await {
            let event = event?;
            if event.kind == kind && event.up == up {
                return Ok(event);
            }
        }
        anyhow::bail!("the event stream ended before {kind:?} up={up}")
    };
    tokio::time::timeout(EVENT_TIMEOUT, wait)
        .await
        .map_err(|_| anyhow::anyhow!("no {kind:?} up={up} event within {EVENT_TIMEOUT:?}"))?
}

/// Waits until the concentrator holds no SA any more (it deleted them on the box's word, or
/// never kept one).
fn concentrator_without_sas(concentrator: &Charon) -> anyhow::Result<()> {
    wait_until(
        PEER_DELETE_TIMEOUT,
        "no SA left on the concentrator",
        || {
            let sas = concentrator.list_sas().ok()?;
            (!sas.contains("state=")).then_some(())
        },
    )
}

#[test]
fn net9_net10_ipsec_sa_to_a_strongswan_concentrator_carries_tcp_and_terminates() {
    require_root!();
    let pair = start_pair("aes128gcm16-prfsha256-ecp256", "aes128gcm16-ecp256")
        .expect("box and concentrator charons");
    let rt = runtime();
    let (mut vici, mut events) = rt.block_on(async {
        let mut vici = load_box(&pair).await.expect("load the box's charon");
        // Nothing before initiate: the connection is on-demand.
        assert!(vici.list_sas().await.expect("list-sas").is_empty());
        // A task drains the subscriptions while the test runs commands on the same
        // connection: rsvici hands each subscription's packets over a channel of one and its
        // reader waits while that is full, so an event (or a subscription's confirmation)
        // nobody polls while `initiate` waits stops the reader before charon's answer. Seen
        // once in CI: `initiate` timed out with the SA up. (The daemon's backend listens on a
        // connection of its own and polls it all the time.)
        let mut subscribed = Box::pin(vici.events());
        let (forward, events) = futures::channel::mpsc::unbounded();
        tokio::spawn(async move {
            while let Some(event) = subscribed.next().await {
                if forward.unbounded_send(event).is_err() {
                    break;
                }
            }
        });
        (vici, events)
    });

    let sas = rt.block_on(async {
        // The subscriptions are registered on the forwarding task's first poll: give it one
        // before initiating.
        let _ = tokio::time::timeout(Duration::from_millis(1), events.next()).await;
        vici.initiate(CONN, IKE_TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("initiate: {e}\n{}", pair.box_charon.log()));
        let up = next_event(&mut events, SaEventKind::IkeUpdown, true)
            .await
            .expect("ike-updown up");
        assert_eq!(up.sas[0].name, CONN);
        next_event(&mut events, SaEventKind::ChildUpdown, true)
            .await
            .expect("child-updown up");
        vici.list_sas().await.expect("list-sas")
    });
    assert_eq!(sas.len(), 1, "{sas:?}");
    let ike = &sas[0];
    assert_eq!(ike.state, IkeState::Established);
    assert_eq!(ike.remote_id.as_deref(), Some(Node::Hub.tls_name()));
    // The concentrator chose its only proposal; the box's check finds it within the profile.
    assert_eq!(
        ike.algorithms,
        IkeAlgorithms {
            encryption: Some("AES_GCM_16".into()),
            key_size_bits: Some(128),
            integrity: None,
            prf: Some("PRF_HMAC_SHA2_256".into()),
            dh_group: Some("ECP_256".into()),
        }
    );
    assert_eq!(ike.algorithms.outside_profile(), Vec::<String>::new());
    assert_eq!(ike.children.len(), 1, "{ike:?}");
    let child = &ike.children[0];
    assert_eq!(child.state, "INSTALLED");
    assert_eq!(child.local_ts, [format!("{BOX_INNER}/32")]);
    assert_eq!(child.remote_ts, [format!("{DC_INNER}/32")]);
    assert_eq!(child.algorithms.outside_profile(), Vec::<String>::new());
    assert_eq!(
        child.algorithms.dh_group, None,
        "no PFS on the first CHILD SA"
    );

    exchange_across(&pair.lab).expect("a TCP exchange across the SA");
    let after = rt.block_on(vici.list_sas()).expect("list-sas");
    let crossed = &after[0].children[0];
    for (what, before, now) in [
        ("bytes out", child.bytes_out, crossed.bytes_out),
        ("bytes in", child.bytes_in, crossed.bytes_in),
    ] {
        assert!(
            now >= before + PAYLOAD_BYTES as u64,
            "{what}: {before} before, {now} after {PAYLOAD_BYTES} bytes each way"
        );
    }
    assert!(crossed.packets_out > child.packets_out && crossed.packets_in > child.packets_in);

    // The concentrator sees the same SA by its own tool.
    let dc_sas = pair.concentrator.list_sas().expect("swanctl --list-sas");
    assert!(
        dc_sas.contains("state=ESTABLISHED") && dc_sas.contains(Node::Hospital.tls_name()),
        "{dc_sas}"
    );

    rt.block_on(async {
        vici.terminate(CONN, IKE_TIMEOUT).await.expect("terminate");
        next_event(&mut events, SaEventKind::IkeUpdown, false)
            .await
            .expect("ike-updown down");
        assert!(vici.list_sas().await.expect("list-sas").is_empty());
    });
    concentrator_without_sas(&pair.concentrator)
        .unwrap_or_else(|e| panic!("{e}: {:?}", pair.concentrator.list_sas()));
}

#[test]
fn net10_ipsec_concentrator_with_only_weak_proposals_is_refused() {
    require_root!();
    // What a concentrator might still offer: none of it is in the profile the box proposes.
    let weak = [
        ("3des-sha1-modp1024", "3des-sha1-modp1024"),
        ("aes128-sha1-prfsha1-modp2048", "aes128-sha1"),
        ("aes256gcm16-prfsha256-modp2048", "aes256gcm16"),
        // Modern but not in the CRYPTREC list: ChaCha20-Poly1305 with Curve25519.
        ("chacha20poly1305-prfsha256-curve25519", "chacha20poly1305"),
    ];
    let (ike, esp) = weak[0];
    let mut pair = start_pair(ike, esp).expect("box and concentrator charons");
    concentrator_speaks_chacha20_and_curve25519(&pair.concentrator);
    let rt = runtime();
    let mut vici = rt.block_on(load_box(&pair)).expect("load the box's charon");
    for (ike, esp) in weak {
        pair.concentrator
            .load_all(
                &concentrator_swanctl(ike, esp),
                pair.lab.certificate(Node::Hub),
                &pair.lab.ca.cert_pem,
            )
            .expect("reload the concentrator");
        let err = rt
            .block_on(vici.initiate(CONN, IKE_TIMEOUT))
            .expect_err(&format!("an SA with a concentrator offering only {ike}"));
        assert!(
            err.peer_refused_proposals(),
            "{ike}: {err}\n{}",
            pair.box_charon.log()
        );
        assert_eq!(
            refusal::of_error(&err).map(|(why, _)| why),
            Some(IpsecRefusal::NoProposalChosen),
            "{ike}: {err}"
        );
        assert!(rt.block_on(vici.list_sas()).expect("list-sas").is_empty());
        let dc_sas = pair.concentrator.list_sas().expect("swanctl --list-sas");
        assert!(!dc_sas.contains("state="), "{ike}: {dc_sas}");
        assert!(pair.box_charon.is_running());
    }
    // The concentrator logged the refusal too: it found no proposal of the box acceptable.
    let dc_log = pair.concentrator.log();
    assert!(
        dc_log.contains("received proposals unacceptable"),
        "{dc_log}"
    );
}

/// The concentrator's charon really has ChaCha20-Poly1305 and Curve25519 (its `openssl`
/// plugin provides them; there is no separate `chapoly` or `curve25519` plugin here), so a
/// concentrator offering only them is refused for the profile, not for a missing algorithm.
fn concentrator_speaks_chacha20_and_curve25519(concentrator: &Charon) {
    let algorithms = concentrator
        .swanctl(&["--list-algs"])
        .expect("swanctl --list-algs");
    for name in ["CHACHA20_POLY1305", "CURVE_25519"] {
        assert!(
            algorithms.contains(name),
            "the concentrator's charon lacks {name}:\n{algorithms}"
        );
    }
}

/// An RSA certificate of `bits` for the hub's name from the lab CA, made with the openssl CLI
/// (rcgen makes no small RSA keys), SHA-256 signed.
fn rsa_hub_certificate(lab: &Lab, bits: u32) -> anyhow::Result<Leaf> {
    let dir = lab.dir.join(format!("rsa-{bits}"));
    std::fs::create_dir_all(&dir)?;
    let key = dir.join("hub.key");
    let csr = dir.join("hub.csr");
    let cert = dir.join("hub.crt");
    let ext = dir.join("san.ext");
    std::fs::write(
        &ext,
        format!("subjectAltName=DNS:{}\n", Node::Hub.tls_name()),
    )?;
    let pki = lab.pki_dir();
    let serial = lab.ca.next_serial().to_string();
    let path = |p: &std::path::Path| p.display().to_string();
    run(std::process::Command::new("openssl").args([
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        &format!("rsa_keygen_bits:{bits}"),
        "-out",
        &path(&key),
    ]))?;
    run(std::process::Command::new("openssl").args([
        "req",
        "-new",
        "-key",
        &path(&key),
        "-subj",
        &format!("/CN={}", Node::Hub.tls_name()),
        "-out",
        &path(&csr),
    ]))?;
    run(std::process::Command::new("openssl").args([
        "x509",
        "-req",
        "-sha256",
        "-days",
        "30",
        "-in",
        &path(&csr),
        "-CA",
        &path(&pki.join("operator-ca.crt")),
        "-CAkey",
        &path(&pki.join("operator-ca.key")),
        "-set_serial",
        &serial,
        "-extfile",
        &path(&ext),
        "-out",
        &path(&cert),
    ]))?;
    Ok(Leaf {
        cert_pem: std::fs::read_to_string(&cert)?,
        key_pem: std::fs::read_to_string(&key)?,
        serial: serial.parse()?,
    })
}

#[test]
fn net10_net5_ipsec_concentrator_certificate_must_be_rsa_2048_or_ecdsa() {
    require_root!();
    let (ike, esp) = ("aes128gcm16-prfsha256-ecp256", "aes128gcm16-ecp256");
    let mut pair = start_pair(ike, esp).expect("box and concentrator charons");
    let rt = runtime();
    let mut vici = rt.block_on(load_box(&pair)).expect("load the box's charon");
    for (bits, accepted) in [(2048, true), (1024, false)] {
        let leaf = rsa_hub_certificate(&pair.lab, bits).expect("an RSA hub certificate");
        // A fresh credential set: only this certificate and key on the concentrator.
        for old in ["x509/own.crt", "private/own.key"] {
            let _ = std::fs::remove_file(pair.concentrator.paths.swanctl_dir.join(old));
        }
        pair.concentrator
            .load_all(
                &concentrator_swanctl(ike, esp),
                &leaf,
                &pair.lab.ca.cert_pem,
            )
            .expect("reload the concentrator");
        let outcome = rt.block_on(vici.initiate(CONN, IKE_TIMEOUT));
        let sas = rt.block_on(vici.list_sas()).expect("list-sas");
        if accepted {
            outcome.unwrap_or_else(|e| panic!("RSA-{bits}: {e}\n{}", pair.box_charon.log()));
            assert_eq!(sas.len(), 1, "RSA-{bits}: {sas:?}");
            assert_eq!(sas[0].state, IkeState::Established);
            rt.block_on(vici.terminate(CONN, IKE_TIMEOUT))
                .expect("terminate");
        } else {
            let err = outcome.expect_err("an SA with an RSA-1024 concentrator certificate");
            assert!(
                matches!(err, ViciError::Refused { .. }),
                "RSA-{bits}: {err}"
            );
            assert_eq!(
                refusal::of_error(&err).map(|(why, _)| why),
                Some(IpsecRefusal::AuthenticationFailed),
                "RSA-{bits}: {err}"
            );
            assert!(sas.is_empty(), "RSA-{bits}: {sas:?}");
            let log = pair.box_charon.log();
            assert!(log.contains("RSA-1024 signatures not acceptable"), "{log}");
        }
        concentrator_without_sas(&pair.concentrator)
            .unwrap_or_else(|e| panic!("RSA-{bits}: {e}: {:?}", pair.concentrator.list_sas()));
        assert!(pair.box_charon.is_running());
    }
}

/// The TLS service the box offers the data centre through the SA.
const BOX_SERVICE_PORT: u16 = 8443;
/// The document the data centre fetches through it.
const DOCUMENT_BYTES: u64 = 256 * 1024;
/// How long the box's always-on SA may take to come up after `renkei run`.
const ALWAYS_ON_UP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one fetch through the SA may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// The concentrator's proposals for the daemon test: the profile's strongest.
const STRONG_IKE: &str = "aes256gcm16-prfsha384-ecp384";
const STRONG_ESP: &str = "aes256gcm16-ecp384";

/// The box's always-on `[ipsec]` config as typed values, on the lab's hospital with its TLS
/// identity, an inbound TLS service on its own IPsec address (the hospital's document server
/// behind it) and the management API on that address too.
fn box_config(
    lab: &Lab,
    charon: &CharonPaths,
    operator: &Operator,
) -> anyhow::Result<renkei::config::Config> {
    use renkei::config::{Direction, EspBackend, IpsecConfig, PolicyMode};
    let mut config = lab.config(Node::Hospital);
    config.tunnel = None;
    config.ipsec = Some(IpsecConfig {
        interface: "renkei-ipsec".to_string(),
        address: format!("{BOX_INNER}/32").parse()?,
        wan_address: Node::Hospital.wan_address().parse()?,
        remote_address: Node::Hub.wan_address().parse()?,
        remote_id: Node::Hub.tls_name().to_string(),
        local_id: None,
        data_centre_prefixes: vec![format!("{DC_INNER}/32").parse()?],
        ike_proposals: renkei::config::proposal::default_ike_proposals(),
        esp_proposals: renkei::config::proposal::default_esp_proposals(),
        mode: Some(PolicyMode::AlwaysOn),
        idle_timeout_secs: 300,
        connect_timeout_secs: 10,
        checkin_interval_secs: 0,
        checkin_window_secs: 60,
        alarm_after_secs: 180,
        esp_backend: EspBackend::Libipsec,
        esp_interface: None,
        vici_socket: Some(charon.vici_socket.clone()),
        charon_log_file: Some(charon.log.clone()),
        failover: None,
    });
    config.tls = Some(tls_config());
    config.services = vec![service(
        "documents",
        Direction::Inbound,
        socket(&format!("{BOX_INNER}:{BOX_SERVICE_PORT}")),
        DOCUMENT_SERVER_ADDRESS,
        Peer::Allowed(Node::Hub.tls_name()),
    )];
    let mut management = operator.management(Node::Hospital, 120, true);
    management.listen = socket(&format!("{BOX_INNER}:{MANAGEMENT_PORT}"));
    config.management = Some(management);
    Ok(config)
}

/// The data centre's `openssl s_client` with the hub's lab-CA certificate fetches a document
/// from the box's service on its IPsec address: openssl is the TLS client, the box's renkei
/// terminates TLS and relays to the hospital's document server.
fn fetch_through_service(lab: &Lab) -> anyhow::Result<String> {
    let tls = lab.tls_dir(Node::Hub);
    let path = |name: &str| tls.join(name).display().to_string();
    let finished = run_bounded(
        lab.ns(Node::Hub),
        "openssl",
        &[
            "s_client",
            "-connect",
            &format!("{BOX_INNER}:{BOX_SERVICE_PORT}"),
            "-servername",
            Node::Hospital.tls_name(),
            "-cert",
            &path("box.crt"),
            "-key",
            &path("box.key"),
            "-CAfile",
            &path("operator-ca.crt"),
            "-verify_return_error",
            "-quiet",
        ],
        format!("GET {DOCUMENT_BYTES} 7\n").as_bytes(),
        FETCH_TIMEOUT,
    )?;
    Ok(finished.output)
}

/// The IPsec link of the status document (`renkei status --json`'s `tunnel` part).
fn ipsec_link(status: &serde_json::Value) -> Option<serde_json::Value> {
    status["tunnel"]["peers"].as_array()?.first().cloned()
}

fn child_bytes(link: &serde_json::Value) -> Option<(u64, u64)> {
    let child = &link["backend"]["ipsec"]["child"];
    Some((child["bytes_in"].as_u64()?, child["bytes_out"].as_u64()?))
}

/// A box running `renkei run` over IPsec and its concentrator. Dropped in field order: the
/// daemon, then the charons, then the lab's namespaces.
struct RenkeiBox {
    daemon: renkei_lab::Daemon,
    box_charon: Charon,
    concentrator: Charon,
    operator: Operator,
    /// The strongswan.conf `renkei charon-conf` printed for the box.
    charon_conf: String,
    lab: Lab,
}

/// The concentrator with `ike`/`esp` (hand-written swanctl.conf, the independent peer), the
/// box's charon with the conf `renkei charon-conf` prints for the box's config, then
/// `renkei run`.
fn start_renkei_box(ike: &str, esp: &str) -> anyhow::Result<RenkeiBox> {
    start_renkei_box_with(ike, esp, |_| {})
}

/// [`start_renkei_box`] with the box's config changed by `edit` first.
fn start_renkei_box_with(
    ike: &str,
    esp: &str,
    edit: impl FnOnce(&mut renkei::config::Config),
) -> anyhow::Result<RenkeiBox> {
    start_renkei_box_from(
        ike,
        esp,
        |lab| Ok(lab.certificate(Node::Hub).clone()),
        |_, config| {
            edit(config);
            Ok(())
        },
    )
}

/// The concentrator offering `ike`/`esp` with the certificate `concentrator_certificate` gives
/// (it trusts the lab CA for the box), the box's charon, then `renkei run` with the box's
/// config changed by `edit` (given the lab, to write the files the config names).
fn start_renkei_box_from(
    ike: &str,
    esp: &str,
    concentrator_certificate: impl FnOnce(&Lab) -> anyhow::Result<Leaf>,
    edit: impl FnOnce(&Lab, &mut renkei::config::Config) -> anyhow::Result<()>,
) -> anyhow::Result<RenkeiBox> {
    let lab = Lab::new()?;
    lab.ns(Node::Hub)
        .ip(&["addr", "add", &format!("{DC_INNER}/32"), "dev", "lo"])?;
    let dc_paths = CharonPaths::in_dir(&lab.dir.join("dc-charon"));
    let dc_conf = concentrator_conf(&dc_paths);
    let concentrator = Charon::start(lab.ns(Node::Hub), dc_paths, &dc_conf)?;
    concentrator.load_all(
        &concentrator_swanctl(ike, esp),
        &concentrator_certificate(&lab)?,
        &lab.ca.cert_pem,
    )?;
    let operator = Operator::new(&lab)?;
    let box_paths = CharonPaths::in_dir(&lab.dir.join("hospital-charon"));
    let mut config = box_config(&lab, &box_paths, &operator)?;
    edit(&lab, &mut config)?;
    let path = lab.write_config(Node::Hospital, &config)?;
    let charon_conf = renkei_charon_conf(&path)?;
    let box_charon = Charon::start(lab.ns(Node::Hospital), box_paths, &charon_conf)?;
    let daemon = lab.start_with(Node::Hospital, &path)?;
    Ok(RenkeiBox {
        daemon,
        box_charon,
        concentrator,
        operator,
        charon_conf,
        lab,
    })
}

#[test]
fn net9_net10_auth2_renkei_runs_over_ipsec_to_a_hand_configured_concentrator() {
    require_root!();
    // Bound in this order so that they drop in reverse: renkei, the charons, then the lab.
    let RenkeiBox {
        lab,
        concentrator,
        box_charon,
        daemon,
        operator,
        charon_conf,
    } = start_renkei_box(STRONG_IKE, STRONG_ESP).expect("concentrator, box charon and renkei");
    let _documents = DocumentServer::start(lab.lan_ns(Node::Hospital), DOCUMENT_SERVER_ADDRESS)
        .expect("document server");
    let up = wait_until(ALWAYS_ON_UP_TIMEOUT, "the SA up in renkei's status", || {
        let status = daemon.status().ok()?;
        let link = ipsec_link(&status)?;
        (link["state"] == "up" && child_bytes(&link).is_some()).then_some((status, link))
    });
    let (status, link) = up.unwrap_or_else(|e| {
        panic!(
            "{e}\nstatus: {:?}\nrenkei: {}\ncharon: {}",
            daemon.status(),
            daemon.log_text(),
            box_charon.log()
        )
    });
    assert_eq!(status["tunnel"]["kind"], "ipsec", "{status:#}");
    let ike = &link["backend"]["ipsec"]["ike"];
    assert_eq!(ike["state"], "ESTABLISHED", "{link:#}");
    assert_eq!(ike["remote_id"], Node::Hub.tls_name(), "{link:#}");
    assert_eq!(ike["encryption"], "AES_GCM_16", "{link:#}");
    assert_eq!(ike["key_size_bits"], 256, "{link:#}");
    assert_eq!(ike["prf"], "PRF_HMAC_SHA2_384", "{link:#}");
    assert_eq!(ike["dh_group"], "ECP_384", "{link:#}");
    let child = &link["backend"]["ipsec"]["child"];
    assert_eq!(child["encryption"], "AES_GCM_16", "{link:#}");
    assert_eq!(child["local_ts"][0], format!("{BOX_INNER}/32"), "{link:#}");
    assert_eq!(child["remote_ts"][0], format!("{DC_INNER}/32"), "{link:#}");
    assert!(
        link["backend"]["ipsec"]["profile_violation"].is_null(),
        "{link:#}"
    );
    let before = child_bytes(&link).expect("byte counters");

    // The data centre fetches through the box's TLS service, over the SA.
    let fetched = fetch_through_service(&lab).expect("openssl s_client");
    assert!(
        fetched.contains(&format!("renkei-lab document {DOCUMENT_BYTES}")),
        "{fetched}\nrenkei: {}",
        daemon.log_text()
    );
    let after = wait_until(EVENT_TIMEOUT * 2, "the CHILD SA's counters to grow", || {
        let now = child_bytes(&ipsec_link(&daemon.status().ok()?)?)?;
        (now.1 >= before.1 + DOCUMENT_BYTES && now.0 > before.0).then_some(now)
    });
    after.unwrap_or_else(|e| panic!("{e}: {before:?} -> {:?}", daemon.status()));
    // The CHILD SA's last use in both directions is a time of this fetch (charon's use-in and
    // use-out are seconds ago, rounded down).
    let fetched_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_secs();
    let link = ipsec_link(&daemon.status().expect("status")).expect("the IPsec link");
    for direction in ["last_in", "last_out"] {
        let at = link["backend"]["ipsec"]["child"][direction].as_u64();
        assert!(
            at.is_some_and(|at| at + 30 >= fetched_at && at <= fetched_at + 1),
            "{direction} {at:?}, fetched at {fetched_at}: {link:#}"
        );
    }

    // The concentrator sees the SA with its own tool.
    let dc_sas = concentrator.list_sas().expect("swanctl --list-sas");
    assert!(
        dc_sas.contains("state=ESTABLISHED") && dc_sas.contains(Node::Hospital.tls_name()),
        "{dc_sas}"
    );

    // The operator reaches the box's management API over the SA.
    let remote = operator
        .command_with(
            &lab,
            "remote",
            Node::Hospital,
            &[("--to", format!("{BOX_INNER}:{MANAGEMENT_PORT}"))],
            &[],
        )
        .expect("renkei remote");
    assert!(remote.success, "{remote:?}\nrenkei: {}", daemon.log_text());

    // From the hospital LAN, with a route to the box's IPsec address, a plain listener there
    // is reachable (Linux's weak host model) but the management API is not: it hears ipsec0.
    let lan = lab.lan_ns(Node::Hospital);
    lan.ip(&[
        "route",
        "replace",
        &format!("{BOX_INNER}/32"),
        "via",
        Node::Hospital.lan_address().expect("lan address"),
    ])
    .expect("route");
    let control = lab
        .ns(Node::Hospital)
        .tcp_listener(&format!("{BOX_INNER}:8447"))
        .expect("control listener");
    lan.tcp_connect(&format!("{BOX_INNER}:8447"), EVENT_TIMEOUT)
        .expect("the LAN reaches a plain listener on the box's IPsec address");
    drop(control);
    assert!(
        lan.tcp_connect(&format!("{BOX_INNER}:{MANAGEMENT_PORT}"), EVENT_TIMEOUT)
            .is_err(),
        "the LAN reached the management API through the box's LAN interface"
    );

    // charon restarts (its `ipsec0` goes and comes back with a new index): renkei loads the
    // connection again, the SA comes back, and the management API is reachable again.
    let paths = box_charon.paths.clone();
    let index_before = lab
        .ns(Node::Hospital)
        .ip(&["-o", "link", "show", "ipsec0"])
        .expect("ipsec0");
    drop(box_charon);
    let box_charon =
        Charon::start(lab.ns(Node::Hospital), paths, &charon_conf).expect("the box's charon again");
    wait_until(
        ALWAYS_ON_UP_TIMEOUT,
        "the SA back after charon's restart",
        || {
            let link = ipsec_link(&daemon.status().ok()?)?;
            (link["state"] == "up" && child_bytes(&link).is_some()).then_some(())
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}\nrenkei: {}\ncharon: {}",
            daemon.log_text(),
            box_charon.log()
        )
    });
    let index_after = lab
        .ns(Node::Hospital)
        .ip(&["-o", "link", "show", "ipsec0"])
        .expect("ipsec0");
    assert_ne!(
        index_before.split(':').next(),
        index_after.split(':').next(),
        "charon's restart gave ipsec0 a new index"
    );
    let remote = wait_until(
        ALWAYS_ON_UP_TIMEOUT,
        "the management API over the new SA",
        || {
            let remote = operator
                .command_with(
                    &lab,
                    "remote",
                    Node::Hospital,
                    &[("--to", format!("{BOX_INNER}:{MANAGEMENT_PORT}"))],
                    &[],
                )
                .ok()?;
            remote.success.then_some(remote)
        },
    );
    remote.unwrap_or_else(|e| panic!("{e}\nrenkei: {}", daemon.log_text()));
    let fetched = fetch_through_service(&lab).expect("openssl s_client after the restart");
    assert!(
        fetched.contains(&format!("renkei-lab document {DOCUMENT_BYTES}")),
        "{fetched}"
    );
    drop(daemon);
    drop(box_charon);
    drop(concentrator);
}

#[test]
fn net10_log2_renkei_records_a_concentrator_refusing_the_profile_as_an_event() {
    require_root!();
    // A concentrator offering only MODP-2048 key exchange: outside the profile the box proposes.
    let renkei_box = start_renkei_box("aes256gcm16-prfsha256-modp2048", "aes256gcm16")
        .expect("concentrator, box charon and renkei");
    let daemon = &renkei_box.daemon;
    let code = "EVENT_CODE=\"ipsec_negotiation_refused\"";
    // charon's own first attempt may be refused before renkei follows its log; renkei asks it to
    // try again after 5 s without an SA (`ALWAYS_ON_RETRY_SECS`): twice that plus a negotiation.
    let refusal_timeout = Duration::from_secs(10) + IKE_TIMEOUT;
    wait_until(refusal_timeout, "renkei's refusal event", || {
        daemon.log_text().contains(code).then_some(())
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}\nrenkei: {}\ncharon: {}",
            daemon.log_text(),
            renkei_box.box_charon.log()
        )
    });
    let log = daemon.log_text();
    let line = log
        .lines()
        .find(|l| l.contains(code))
        .expect("the event's line");
    assert!(
        line.contains("no proposal acceptable to both sides")
            && line.contains("NO_PROPOSAL_CHOSEN"),
        "{line}"
    );
    let status = daemon.status().expect("status");
    let link = ipsec_link(&status).expect("the IPsec link");
    assert_ne!(link["state"], "up", "{link:#}");
    let dc_sas = renkei_box
        .concentrator
        .list_sas()
        .expect("swanctl --list-sas");
    assert!(!dc_sas.contains("state=ESTABLISHED"), "{dc_sas}");
}

/// How soon an always-on box has its SA back after the concentrator's charon restarted: the
/// documented figure is about 10 s (DPD after 3 s of silence, 7.1 s of retransmissions, then
/// charon restarts the SA: NET-6; 10.05 s measured after a crash); the bound is about twice that,
/// for a loaded CI machine.
const ALWAYS_ON_BACK_TIMEOUT: Duration = Duration::from_secs(20);

/// The IKE SA's `established` time in renkei's status, when up.
fn established_at(daemon: &renkei_lab::Daemon) -> Option<serde_json::Value> {
    let link = ipsec_link(&daemon.status().ok()?)?;
    (link["state"] == "up").then(|| link["backend"]["ipsec"]["ike"]["established"].clone())
}

#[test]
fn net6_net9_always_on_ipsec_is_back_soon_after_the_concentrator_restarts() {
    require_root!();
    // Bound in this order so that they drop in reverse: renkei, the charons, then the lab.
    let RenkeiBox {
        lab,
        mut concentrator,
        box_charon,
        daemon,
        ..
    } = start_renkei_box(STRONG_IKE, STRONG_ESP).expect("concentrator, box charon and renkei");
    // A clean stop first (charon deletes its SAs, the box hears it), then a crash (nothing is
    // deleted: the box's DPD must find out).
    for crash in [false, true] {
        let first = wait_until(ALWAYS_ON_UP_TIMEOUT, "the SA up", || {
            established_at(&daemon)
        })
        .unwrap_or_else(|e| panic!("{e}\nrenkei: {}", daemon.log_text()));
        // The concentrator's charon stops (keeping nothing) and starts again with its
        // hand-written config.
        let paths = concentrator.paths.clone();
        if crash {
            concentrator.crash();
        }
        drop(concentrator);
        let conf = concentrator_conf(&paths);
        concentrator =
            Charon::start(lab.ns(Node::Hub), paths, &conf).expect("the concentrator again");
        concentrator
            .load_all(
                &concentrator_swanctl(STRONG_IKE, STRONG_ESP),
                lab.certificate(Node::Hub),
                &lab.ca.cert_pem,
            )
            .expect("load the concentrator again");
        let back_since = std::time::Instant::now();
        wait_until(ALWAYS_ON_BACK_TIMEOUT, "a new SA after the restart", || {
            let dc_sas = concentrator.list_sas().ok()?;
            let now = established_at(&daemon)?;
            (now != first && dc_sas.contains("state=ESTABLISHED")).then_some(())
        })
        .unwrap_or_else(|e| {
            panic!(
                "crash {crash}: {e}\nrenkei: {}\nbox charon: {}",
                daemon.log_text(),
                box_charon.log()
            )
        });
        eprintln!(
            "always-on SA back {:?} after the concentrator restarted (crash: {crash})",
            back_since.elapsed()
        );
    }
    drop(daemon);
    drop(box_charon);
    drop(concentrator);
}

/// Packets to the data centre the box's namespace sent out of its WAN device, counted by an
/// nftables rule (table `renkei_leak`) in the box's namespace.
fn clear_packets_to_the_data_centre(lab: &Lab) -> u64 {
    let listing = lab
        .ns(Node::Hospital)
        .exec("nft", &["list", "table", "ip", "renkei_leak"])
        .expect("nft list");
    listing
        .split("counter packets ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no counter in:\n{listing}"))
}

/// NET-8 over IPsec: while the SA is down nothing the box sends to the data centre leaves by
/// the WAN in clear. The box has a default route out of its WAN (as behind any carrier
/// router); charon routes the data centre into the SA only while a CHILD SA is installed, so
/// renkei routes the data centre's prefixes into its own address device, which nobody reads.
/// With the concentrator gone, an NTP query and a TCP connection to the data centre from the
/// box leave nothing on the WAN (the tests above show the SA carrying them while up).
#[test]
fn net8_net9_with_the_sa_down_nothing_for_the_data_centre_leaves_by_the_wan_in_clear() {
    require_root!();
    // Bound in this order so that they drop in reverse: renkei, the charons, then the lab.
    let RenkeiBox {
        lab,
        concentrator,
        box_charon,
        daemon,
        ..
    } = start_renkei_box(STRONG_IKE, STRONG_ESP).expect("concentrator, box charon and renkei");
    let ns = lab.ns(Node::Hospital);
    ns.ip(&["route", "add", "default", "via", Node::Hub.wan_address()])
        .expect("a default route out of the WAN");
    let rules = lab.dir.join("leak.nft");
    std::fs::write(
        &rules,
        format!(
            "table ip renkei_leak {{\n  chain out {{\n    type filter hook postrouting priority 0; policy accept;\n    oifname \"wan0\" ip daddr {DC_INNER} counter\n  }}\n}}\n"
        ),
    )
    .expect("write nft rules");
    ns.exec("nft", &["-f", &rules.to_string_lossy()])
        .expect("nft rule");
    wait_until(ALWAYS_ON_UP_TIMEOUT, "the SA up", || {
        established_at(&daemon)
    })
    .unwrap_or_else(|e| panic!("{e}\nrenkei: {}", daemon.log_text()));
    let guards = ns
        .ip(&["route", "show", &format!("{DC_INNER}/32")])
        .expect("ip route");
    assert!(
        guards.contains("renkei-ipsec"),
        "the data centre routed into the address device: {guards}"
    );

    // The concentrator stops (deleting its SAs): the box's CHILD SA and charon's routes go.
    drop(concentrator);
    wait_until(IKE_TIMEOUT, "the SA down", || {
        let link = ipsec_link(&daemon.status().ok()?)?;
        (link["state"] != "up").then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\nrenkei: {}", daemon.log_text()));
    let sent = ns
        .command("bash")
        .args([
            "-c",
            &format!(
                "echo query > /dev/udp/{DC_INNER}/123; timeout 3 bash -c '< /dev/tcp/{DC_INNER}/{SERVICE_PORT}'; true"
            ),
        ])
        .output()
        .expect("bash");
    assert!(sent.status.success(), "{sent:?}");
    assert_eq!(
        clear_packets_to_the_data_centre(&lab),
        0,
        "packets for the data centre left by the WAN while the SA was down"
    );
    drop(daemon);
    drop(box_charon);
}

/// on_demand: the shortest idle timeout `renkei check` allows.
const ON_DEMAND_IDLE_SECS: u64 = 10;
/// on_demand: how long a LAN connection may wait for the SA.
const ON_DEMAND_CONNECT_SECS: u64 = 10;
/// The outbound service on the hospital LAN, to the data centre's TLS server.
const LAN_OUTBOUND: &str = "198.18.10.1:8444";
/// The data centre's TLS server behind the concentrator (`openssl s_server -WWW`).
const DC_TLS_PORT: u16 = 9443;

/// `openssl s_server -WWW` on the data centre's service address with the hub's lab-CA
/// certificate, requiring a client certificate, serving `dir`: it terminates the outbound
/// service's TLS.
fn dc_tls_server(lab: &Lab, dir: &std::path::Path) -> anyhow::Result<Background> {
    renkei_lab::tlstools::www_server(
        lab.ns(Node::Hub),
        &format!("{DC_INNER}:{DC_TLS_PORT}"),
        &lab.tls_dir(Node::Hub),
        dir,
        IKE_TIMEOUT,
    )
}

/// Waits until an on-demand box's connection is loaded into charon, then asserts that no SA
/// exists on either side (its link idle, no IKE SA; nothing on the concentrator).
fn loaded_and_silent(daemon: &renkei_lab::Daemon, concentrator: &Charon) {
    wait_until(IKE_TIMEOUT, "the connection loaded", || {
        let status = daemon.status().ok()?;
        (status["tunnel"]["backend"]["ipsec"]["charon_loaded"] == true).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{:?}", daemon.status()));
    let link = ipsec_link(&daemon.status().expect("status")).expect("link");
    assert_eq!(link["state"], "idle", "{link:#}");
    assert!(link["backend"]["ipsec"]["ike"].is_null(), "{link:#}");
    let dc_sas = concentrator.list_sas().expect("list-sas");
    assert!(
        !dc_sas.contains("state="),
        "an SA before any demand: {dc_sas}"
    );
}

#[test]
fn net7_net9_on_demand_ipsec_is_silent_until_a_connection_and_deleted_on_both_sides_when_idle() {
    require_root!();
    let RenkeiBox {
        lab,
        concentrator,
        box_charon,
        daemon,
        ..
    } = start_renkei_box_with(STRONG_IKE, STRONG_ESP, |config| {
        let ipsec = config.ipsec.as_mut().expect("[ipsec]");
        ipsec.mode = Some(renkei::config::PolicyMode::OnDemand);
        ipsec.idle_timeout_secs = ON_DEMAND_IDLE_SECS;
        ipsec.connect_timeout_secs = ON_DEMAND_CONNECT_SECS;
        config.services.push(service(
            "dc-files",
            renkei::config::Direction::Outbound,
            socket(LAN_OUTBOUND),
            &format!("{DC_INNER}:{DC_TLS_PORT}"),
            Peer::ServerName(Node::Hub.tls_name()),
        ));
    })
    .expect("concentrator, box charon and renkei");
    let www = lab.dir.join("dc-www");
    std::fs::create_dir_all(&www).expect("www");
    let body = "a file in the data centre\n";
    std::fs::write(www.join("file.txt"), body).expect("file");
    let _server = dc_tls_server(&lab, &www).expect("s_server");

    // Loaded into charon, and silent: no SA on either side.
    loaded_and_silent(&daemon, &concentrator);

    // A LAN connection brings it up within the connect timeout and gets the file.
    let asked = std::time::Instant::now();
    let mut stream = lab
        .lan_ns(Node::Hospital)
        .tcp_connect(LAN_OUTBOUND, IKE_TIMEOUT)
        .expect("the box accepts the LAN connection");
    stream
        .set_read_timeout(Some(FETCH_TIMEOUT))
        .expect("timeout");
    stream
        .write_all(b"GET /file.txt HTTP/1.0\r\n\r\n")
        .expect("request");
    let mut reply = String::new();
    stream.read_to_string(&mut reply).expect("reply");
    let took = asked.elapsed();
    assert!(
        reply.ends_with(body),
        "{reply}\nrenkei: {}\ncharon: {}",
        daemon.log_text(),
        box_charon.log()
    );
    assert!(
        took < Duration::from_secs(ON_DEMAND_CONNECT_SECS),
        "{took:?}"
    );
    drop(stream);
    let dc_sas = concentrator.list_sas().expect("list-sas");
    assert!(dc_sas.contains("state=ESTABLISHED"), "{dc_sas}");

    // Idle: renkei terminates the SA, and the concentrator deletes its side too.
    let idle_since = std::time::Instant::now();
    let idle_bound = Duration::from_secs(ON_DEMAND_IDLE_SECS * 2);
    wait_until(idle_bound, "the SAs deleted on both sides", || {
        let link = ipsec_link(&daemon.status().ok()?)?;
        let dc_sas = concentrator.list_sas().ok()?;
        (link["state"] == "idle"
            && link["backend"]["ipsec"]["ike"].is_null()
            && !dc_sas.contains("state="))
        .then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{:?}\nrenkei: {}", daemon.status(), daemon.log_text()));
    let idle_for = idle_since.elapsed();
    eprintln!("on-demand SA up in {took:?}, deleted {idle_for:?} after the last use");
    assert!(
        idle_for + Duration::from_secs(1) >= Duration::from_secs(ON_DEMAND_IDLE_SECS),
        "deleted after {idle_for:?}, before the idle timeout"
    );
    drop(daemon);
    drop(box_charon);
    drop(concentrator);
}

/// The shortest check-in interval `renkei check` allows, and the shortest window.
const CHECKIN_INTERVAL_SECS: u64 = 60;
const CHECKIN_WINDOW_SECS: u64 = 10;

/// NET-7, NET-9, AUTH-2: an on-demand IPsec box without any LAN demand brings its SA up by
/// itself every `checkin_interval_secs` and holds it for `checkin_window_secs`, so the
/// operator reaches its management API (the concentrator cannot call a box behind NAT); the
/// operator's requests keep it up past the window; then the idle timeout after the last one
/// deletes the SAs on both sides again.
#[test]
fn net7_net9_auth2_an_on_demand_ipsec_box_checks_in_so_the_operator_reaches_it() {
    require_root!();
    let RenkeiBox {
        lab,
        concentrator,
        box_charon,
        daemon,
        operator,
        ..
    } = start_renkei_box_with(STRONG_IKE, STRONG_ESP, |config| {
        let ipsec = config.ipsec.as_mut().expect("[ipsec]");
        ipsec.mode = Some(renkei::config::PolicyMode::OnDemand);
        ipsec.idle_timeout_secs = ON_DEMAND_IDLE_SECS;
        ipsec.checkin_interval_secs = CHECKIN_INTERVAL_SECS;
        ipsec.checkin_window_secs = CHECKIN_WINDOW_SECS;
    })
    .expect("concentrator, box charon and renkei");
    let started = std::time::Instant::now();

    // Loaded, and silent until the first check-in.
    loaded_and_silent(&daemon, &concentrator);

    // The check-in brings the SA up by itself; the operator reaches the box through it.
    let checkin_bound = Duration::from_secs(CHECKIN_INTERVAL_SECS) + IKE_TIMEOUT * 2;
    wait_until(
        checkin_bound,
        "the check-in's SA on the concentrator",
        || {
            concentrator
                .list_sas()
                .ok()
                .filter(|sas| sas.contains("state=ESTABLISHED"))
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}\nrenkei: {}\ncharon: {}",
            daemon.log_text(),
            box_charon.log()
        )
    });
    let up_after = started.elapsed();
    assert!(
        up_after + Duration::from_secs(2) >= Duration::from_secs(CHECKIN_INTERVAL_SECS),
        "the SA came up after {up_after:?}, before the first check-in was due"
    );
    assert!(
        daemon
            .log_text()
            .contains("check-in: bringing the IPsec SA up"),
        "{}",
        daemon.log_text()
    );
    let to_box = [("--to", format!("{BOX_INNER}:{MANAGEMENT_PORT}"))];
    let remote = operator
        .command_with(&lab, "remote", Node::Hospital, &to_box, &[])
        .expect("renkei remote");
    assert!(
        remote.success,
        "the operator did not reach the box during its check-in: {remote:?}\n{}",
        daemon.log_text()
    );

    // The operator keeps working past the window and the idle timeout: each request through
    // the SA is use of it (renkei's own idle check; the requests take a hold), so the SA stays.
    let working_until =
        started + up_after + Duration::from_secs(CHECKIN_WINDOW_SECS + ON_DEMAND_IDLE_SECS) * 2;
    let mut requests = 1;
    let mut last_request = std::time::Instant::now();
    while last_request < working_until {
        let remote = operator
            .command_with(&lab, "remote", Node::Hospital, &to_box, &[])
            .expect("renkei remote");
        assert!(
            remote.success,
            "request {requests} of the operator's session failed {:?} after the SA came up: {remote:?}\n{}",
            started.elapsed() - up_after,
            daemon.log_text()
        );
        requests += 1;
        last_request = std::time::Instant::now();
        std::thread::sleep(Duration::from_secs(2));
    }
    eprintln!(
        "{requests} operator requests kept the SA up {:?}",
        started.elapsed() - up_after
    );

    // The idle timeout after the last request, the SAs go on both sides.
    let gone_bound = Duration::from_secs(ON_DEMAND_IDLE_SECS) * 2 + IKE_TIMEOUT;
    wait_until(
        gone_bound,
        "the check-in's SAs deleted on both sides",
        || {
            let link = ipsec_link(&daemon.status().ok()?)?;
            let dc_sas = concentrator.list_sas().ok()?;
            (link["state"] == "idle" && !dc_sas.contains("state=")).then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{:?}\nrenkei: {}", daemon.status(), daemon.log_text()));
    let idle_after = last_request.elapsed();
    assert!(
        idle_after + Duration::from_secs(1) >= Duration::from_secs(ON_DEMAND_IDLE_SECS),
        "the SA went {idle_after:?} after the operator's last request, idle timeout {ON_DEMAND_IDLE_SECS} s"
    );
    drop(daemon);
    drop(box_charon);
    drop(concentrator);
}

/// The shortest confirm window `renkei check` allows.
const CONFIRM_WINDOW: Duration = Duration::from_secs(30);
/// How long a pushed config may take to run.
const APPLY_TIMEOUT: Duration = Duration::from_secs(20);

/// The `config` part of `renkei status --json`, run inside the box's namespace.
fn config_state(lab: &Lab, daemon: &renkei_lab::Daemon) -> Option<serde_json::Value> {
    let bin = renkei_bin().ok()?;
    let json = lab
        .ns(Node::Hospital)
        .exec(
            &bin.to_string_lossy(),
            &[
                "status",
                "--json",
                "--config",
                &daemon.config.to_string_lossy(),
            ],
        )
        .ok()?;
    let document: serde_json::Value = serde_json::from_str(&json).ok()?;
    Some(document["config"].clone())
}

fn wait_config(
    lab: &Lab,
    daemon: &renkei_lab::Daemon,
    version: u64,
    state: &str,
    within: Duration,
) {
    wait_until(within, &format!("version {version} {state}"), || {
        let now = config_state(lab, daemon)?;
        (now["version"] == version && now["state"] == state).then_some(())
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}\n{:?}\n{}",
            config_state(lab, daemon),
            daemon.log_text()
        )
    });
}

/// Pushes the signed config at `path` (version `pushed`) over the SA and expects charon to
/// refuse the concentrator under it (`what`): the push's answer may never come back (the apply
/// cuts the SA it came over), the operator cannot come back, and the box rolls back to
/// `restored` by itself, not before the confirm window's end, with the refusal as an event.
fn push_refused_by_the_concentrator_and_rolled_back(
    lab: &Lab,
    daemon: &renkei_lab::Daemon,
    operator: &Operator,
    path: &std::path::Path,
    (pushed, restored): (u64, u64),
    what: &str,
) {
    let to_box = [("--to", format!("{BOX_INNER}:{MANAGEMENT_PORT}"))];
    let applied = std::thread::scope(|scope| {
        let pushing = scope.spawn(|| operator.push_with(lab, Node::Hospital, path, &to_box));
        wait_config(lab, daemon, pushed, "pending", APPLY_TIMEOUT);
        let applied = std::time::Instant::now();
        let _ = pushing.join();
        applied
    });
    wait_config(lab, daemon, restored, "confirmed", CONFIRM_WINDOW * 2);
    let took = applied.elapsed();
    let log = daemon.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("EVENT_CODE=\"ipsec_negotiation_refused\"")
                && l.contains("authentication failed")),
        "no refusal event for {what}:\n{log}"
    );
    assert!(
        took + Duration::from_secs(2) >= CONFIRM_WINDOW,
        "rolled back {took:?} after the apply: before the window ended"
    );
}

#[test]
fn net9_auth2_avl1_a_push_over_ipsec_is_confirmed_and_a_wrong_remote_id_is_rolled_back() {
    require_root!();
    let mut pushed_config = None;
    let RenkeiBox {
        lab,
        concentrator,
        box_charon,
        daemon,
        operator,
        ..
    } = start_renkei_box_with(STRONG_IKE, STRONG_ESP, |config| {
        config
            .management
            .as_mut()
            .expect("[management]")
            .confirm_timeout_secs = CONFIRM_WINDOW.as_secs();
        pushed_config = Some(config.clone());
    })
    .expect("concentrator, box charon and renkei");
    let base = pushed_config.expect("the box's config");
    let to_box = [("--to", format!("{BOX_INNER}:{MANAGEMENT_PORT}"))];
    let remote = || {
        operator
            .command_with(&lab, "remote", Node::Hospital, &to_box, &[])
            .ok()
            .filter(|o| o.success)
    };
    wait_until(
        APPLY_TIMEOUT,
        "the operator to reach the box over the SA",
        remote,
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log_text()));

    // Version 2 (only its description differs) over the SA: auto-confirmed by the operator's
    // next request.
    let mut second = base.clone();
    second.meta.version = 2;
    second.meta.description = Some("pushed over IPsec".into());
    let path = operator
        .write_signed("v2.toml", &second, None)
        .expect("sign v2");
    let outcome = operator
        .push_with(&lab, Node::Hospital, &path, &to_box)
        .expect("push v2");
    assert!(outcome.success, "{outcome:?}\n{}", daemon.log_text());
    wait_until(APPLY_TIMEOUT, "a request after the apply", remote).expect("remote");
    wait_config(&lab, &daemon, 2, "confirmed", APPLY_TIMEOUT);

    // Version 3 pins another remote id: the box's charon refuses the concentrator, the
    // operator cannot come back, and the box rolls back to version 2 at the window's end.
    let mut third = second.clone();
    third.meta.version = 3;
    third.ipsec.as_mut().expect("[ipsec]").remote_id = "wrong.renkei.example".into();
    let path = operator
        .write_signed("v3.toml", &third, None)
        .expect("sign v3");
    push_refused_by_the_concentrator_and_rolled_back(
        &lab,
        &daemon,
        &operator,
        &path,
        (3, 2),
        "the wrong remote id",
    );
    wait_until(ALWAYS_ON_UP_TIMEOUT, "the SA back on version 2", || {
        established_at(&daemon)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}", daemon.log_text(), box_charon.log()));
    wait_until(APPLY_TIMEOUT, "the operator back over the SA", remote)
        .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log_text()));
    drop(daemon);
    drop(box_charon);
    drop(concentrator);
}

/// The hospital box's status page, on its LAN address, for the browser test.
const PAGE_ADDRESS: &str = "198.18.10.1";
/// How long the headless browser may take for its whole script.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(180);

/// One row of the page's carrier part (`#backend`), by its field, as the browser read it.
fn backend_row<'a>(read: &'a serde_json::Value, field: &str) -> &'a serde_json::Value {
    read["backend"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["field"] == field))
        .unwrap_or_else(|| panic!("no {field} row on the page: {read:#}"))
}

/// Runs tests/browser/status_page.mjs from the hospital's LAN against `base` and returns what
/// the headless browser read, after checking it finished without console errors.
fn browse(lab: &Lab, base: &str) -> serde_json::Value {
    let lan = lab.lan_ns(Node::Hospital);
    let browser = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    assert!(
        browser.join("node_modules/playwright-core").exists(),
        "playwright-core missing; run scripts/install-deps (npm ci in tests/browser)"
    );
    let profile = lab.dir.join("chromium-profile");
    let _ = std::fs::remove_dir_all(&profile);
    std::fs::create_dir_all(&profile).expect("profile dir");
    let screenshot = lab.dir.join("status-page.png");
    let script = browser.join("status_page.mjs");
    let result = renkei_lab::web::browser_script(
        lan,
        &script,
        &[
            base,
            &profile.to_string_lossy(),
            &screenshot.to_string_lossy(),
            "{}",
        ],
        BROWSER_TIMEOUT,
    );
    assert_eq!(
        result["console_errors"],
        serde_json::json!([]),
        "{result:#}"
    );
    result
}

/// NET-9, OPS-3: the status page of a box running over IPsec shows its SAs as readable rows
/// in Japanese and English (states, negotiated algorithms, dates, byte counts, selectors),
/// read by a headless browser from the running daemon: no "[object Object]", no bare field
/// name, no raw unix time.
#[test]
fn net9_ops3_status_page_shows_the_ipsec_sas_in_japanese_and_english() {
    use renkei_lab::web::{curl, get, login, ADMIN_PASSWORD, STATUS_PORT};
    require_root!();
    let listen = format!("{PAGE_ADDRESS}:{STATUS_PORT}");
    let base = if STATUS_PORT == 443 {
        format!("https://{PAGE_ADDRESS}")
    } else {
        format!("https://{listen}")
    };
    let status_section = renkei_lab::web::status(&listen).expect("[status] with the lab password");
    let RenkeiBox {
        lab,
        concentrator: _concentrator,
        box_charon,
        daemon,
        ..
    } = start_renkei_box_with(STRONG_IKE, STRONG_ESP, |config| {
        config.status = Some(status_section);
    })
    .expect("concentrator, box charon and renkei");
    wait_until(ALWAYS_ON_UP_TIMEOUT, "the SA up in renkei's status", || {
        let link = ipsec_link(&daemon.status().ok()?)?;
        (link["state"] == "up" && child_bytes(&link).is_some()).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{:?}\ncharon: {}", daemon.status(), box_charon.log()));
    let lan = lab.lan_ns(Node::Hospital);
    wait_until(Duration::from_secs(20), "the status page", || {
        let reply = curl(lan, &["-k", &format!("{base}/login")]).ok()?;
        (reply.status == 200).then_some(())
    })
    .expect("page up");

    let result = browse(&lab, &base);

    let english = &result["english"];
    assert_eq!(
        english["carrier_text"], "IPsec tunnel (IKEv2)",
        "{english:#}"
    );
    for (field, label, text) in [
        ("ike.state", "IKE SA state", "ESTABLISHED"),
        (
            "ike.remote_id",
            "IKE SA: authenticated remote identity",
            Node::Hub.tls_name(),
        ),
        ("ike.encryption", "IKE SA: encryption", "AES_GCM_16"),
        ("ike.key_size_bits", "IKE SA: key size (bits)", "256"),
        ("ike.prf", "IKE SA: PRF", "PRF_HMAC_SHA2_384"),
        ("ike.dh_group", "IKE SA: DH group", "ECP_384"),
        ("child.state", "CHILD SA state", "INSTALLED"),
        ("child.encryption", "CHILD SA: encryption", "AES_GCM_16"),
        (
            "child.local_ts",
            "CHILD SA: local traffic selectors",
            &format!("{BOX_INNER}/32"),
        ),
        (
            "child.remote_ts",
            "CHILD SA: remote traffic selectors",
            &format!("{DC_INNER}/32"),
        ),
        ("charon_loaded", "Connection loaded into charon", "yes"),
    ] {
        let row = backend_row(english, field);
        assert_eq!(row["label"], label, "{row:#}");
        assert_eq!(row["text"], text, "{row:#}");
    }
    // Dates as dates and byte counters in units, not raw numbers.
    for field in ["ike.established", "child.installed"] {
        let text = backend_row(english, field)["text"].as_str().unwrap_or("");
        assert!(
            text.contains(':') && text.contains('/'),
            "{field}: {text:?}"
        );
    }
    for field in ["child.bytes_in", "child.bytes_out"] {
        let text = backend_row(english, field)["text"].as_str().unwrap_or("");
        assert!(text.ends_with('B'), "{field}: {text:?}");
    }
    for field in ["profile_violation_names", "last_error_code"] {
        let row = backend_row(english, field);
        assert_eq!(row["warning"], false, "nothing to warn about: {row:#}");
    }
    let japanese = &result["japanese"];
    for (field, label) in [
        ("ike.state", "IKE SA の状態"),
        ("ike.established", "IKE SA: 確立日時"),
        ("child.bytes_in", "CHILD SA: 受信バイト"),
        ("child.local_ts", "CHILD SA: 自側トラフィックセレクタ"),
        ("child.last_in", "CHILD SA: 最後の受信"),
        ("profile_violation_names", "CRYPTREC 外のアルゴリズムで切断"),
    ] {
        assert_eq!(backend_row(japanese, field)["label"], label, "{japanese:#}");
    }
    for read in [english, japanese] {
        for row in read["backend"].as_array().expect("rows") {
            assert_ne!(row["label"], row["field"], "an unlabelled row: {row:#}");
            let text = row["text"].as_str().unwrap_or("");
            assert!(!text.contains("[object"), "{row:#}");
        }
    }

    // OPS-4: the same box's metrics have the IPsec samples and pass promtool.
    let session = login(lan, &base, ADMIN_PASSWORD).expect("login");
    let metrics = get(lan, &base, &session, "/metrics").expect("metrics");
    assert_eq!(metrics.status, 200, "{}", metrics.body);
    let link = ipsec_link(&daemon.status().expect("status")).expect("the IPsec link");
    let labels = format!(
        "{{peer=\"{}\",remote_id=\"{}\"}}",
        link["name"].as_str().expect("peer name"),
        Node::Hub.tls_name()
    );
    for expected in [
        "renkei_carrier_info{kind=\"ipsec\"} 1\n".to_string(),
        format!("renkei_ipsec_ike_sa_established{labels} 1\n"),
        format!("renkei_ipsec_ike_sa_established_age_seconds{labels} "),
        format!("renkei_ipsec_child_sa_receive_bytes_total{labels} "),
        format!("renkei_ipsec_child_sa_transmit_bytes_total{labels} "),
    ] {
        assert!(
            metrics.body.contains(&expected),
            "{expected:?} missing:\n{}",
            metrics.body
        );
    }
    let promtool = run_bounded(
        lan,
        "promtool",
        &["check", "metrics"],
        metrics.body.as_bytes(),
        Duration::from_secs(20),
    )
    .expect("promtool");
    assert!(promtool.success(), "{}\n{}", promtool.output, metrics.body);

    // charon gone: the page shows renkei's last error talking to it as a warning.
    let mut box_charon = box_charon;
    box_charon.crash();
    wait_until(Duration::from_secs(20), "renkei to see charon gone", || {
        let status = daemon.status().ok()?;
        let charon = &status["tunnel"]["backend"]["ipsec"];
        (charon["last_error"].is_string() && charon["last_error_code"] == "charon_unavailable")
            .then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{:?}", daemon.status()));
    // In the page's language from its stable word; the English error is for the journal.
    let result = browse(&lab, &base);
    for (read, text) in [
        (
            &result["english"],
            "charon is not reachable or refused renkei's connection or configuration",
        ),
        (
            &result["japanese"],
            "charon に接続できないか、設定を受け付けません",
        ),
    ] {
        let row = backend_row(read, "last_error_code");
        assert_eq!(row["warning"], true, "{row:#}");
        assert_eq!(row["text"], text, "{row:#}");
        let rows = read["backend"].as_array().expect("rows");
        assert!(
            rows.iter().all(|r| r["field"] != "last_error"),
            "the English error is not a row: {rows:#?}"
        );
    }
}

/// The document fetched through the box's TLS service while the SAs are rekeyed: long enough
/// at libipsec's speed (about 40 MB/s here) that the second CHILD rekey and the IKE rekey
/// start while it flows.
const REKEY_DOCUMENT_BYTES: u64 = 96 * 1024 * 1024;
/// Where the document server pauses (the connection open, mid-document) for the first rekey.
const REKEY_HELD_AFTER: u64 = 8 * 1024 * 1024;
/// The document's pattern seed.
const REKEY_SEED: u64 = 16;
/// How long a rekey may take to show on both sides.
const REKEY_TIMEOUT: Duration = Duration::from_secs(15);
/// At most what an idle CHILD SA carries (keepalives, DPD) before renkei's status shows it.
const IDLE_CHILD_BYTES: u64 = 1024 * 1024;
/// How long the whole transfer may take.
const REKEY_TRANSFER_TIMEOUT: Duration = Duration::from_secs(120);

/// The values of `key=` in `swanctl --list-sas --raw` output (SPIs: `initiator-spi` of the
/// IKE SAs, `spi-in` of the CHILD SAs).
fn raw_values(raw: &str, key: &str) -> BTreeSet<String> {
    raw.split(|c: char| c.is_whitespace() || c == '{' || c == '}')
        .filter_map(|token| token.strip_prefix(key)?.strip_prefix('='))
        .map(str::to_string)
        .collect()
}

/// The SPIs a charon has now, by its own `swanctl --list-sas`: (IKE initiator SPIs, CHILD
/// inbound SPIs).
type Spis = (BTreeSet<String>, BTreeSet<String>);

fn spis(charon: &Charon) -> Option<Spis> {
    let raw = charon.list_sas().ok()?;
    Some((
        raw_values(&raw, "initiator-spi"),
        raw_values(&raw, "spi-in"),
    ))
}

/// The run's ESP totals of the status (`peers[0].backend.ipsec.total`): (bytes in, bytes out).
fn total_bytes(link: &serde_json::Value) -> Option<(u64, u64)> {
    let total = &link["backend"]["ipsec"]["total"];
    Some((total["bytes_in"].as_u64()?, total["bytes_out"].as_u64()?))
}

/// The SPIs of kind `which` (`--ike`: IKE initiator SPIs, `--child`: CHILD inbound SPIs) on
/// the concentrator and on the box's charon (the one renkei follows), in that order.
fn spis_of_both(renkei_box: &RenkeiBox, which: &str) -> Option<Vec<BTreeSet<String>>> {
    [&renkei_box.concentrator, &renkei_box.box_charon]
        .iter()
        .map(|charon| {
            let (ike, child) = spis(charon)?;
            Some(if which == "--ike" { ike } else { child })
        })
        .collect()
}

/// Starts a rekey of `which` (`--ike` or `--child`) from the concentrator with
/// `swanctl --rekey` (charon runs it in the background); returns the SPIs of that kind before.
fn start_rekey(renkei_box: &RenkeiBox, which: &str) -> anyhow::Result<Vec<BTreeSet<String>>> {
    let before = spis_of_both(renkei_box, which).ok_or_else(|| anyhow::anyhow!("no SA list"))?;
    let out = renkei_box.concentrator.swanctl(&["--rekey", which, CONN])?;
    anyhow::ensure!(!out.contains("failed"), "swanctl --rekey {which}: {out}");
    Ok(before)
}

/// Waits until both charons list one SA of kind `which` with only SPIs not in `before`, the
/// IKE SA established and the CHILD SA installed; every state renkei's status showed meanwhile
/// is added to `states`.
fn wait_rekeyed(
    renkei_box: &RenkeiBox,
    which: &str,
    before: &[BTreeSet<String>],
    states: &mut Vec<String>,
) -> anyhow::Result<()> {
    let charons = [&renkei_box.concentrator, &renkei_box.box_charon];
    wait_until(
        REKEY_TIMEOUT,
        &format!("{which} rekeyed on both sides"),
        || {
            if let Some(link) = renkei_box
                .daemon
                .status()
                .ok()
                .as_ref()
                .and_then(ipsec_link)
            {
                states.push(link["state"].as_str().unwrap_or("?").to_string());
            }
            let now = spis_of_both(renkei_box, which)?;
            let settled = charons.iter().all(|charon| {
                let raw = charon.list_sas().unwrap_or_default();
                raw.contains("state=ESTABLISHED") && raw.contains("state=INSTALLED")
            });
            (settled
                && now
                    .iter()
                    .zip(before)
                    .all(|(now, before)| now.len() == 1 && now.is_disjoint(before)))
            .then_some(())
        },
    )
    .map_err(|e| {
        anyhow::anyhow!(
            "{e}: before {before:?}\nconcentrator: {:?}\nbox: {:?}",
            renkei_box.concentrator.list_sas(),
            renkei_box.box_charon.list_sas()
        )
    })
}

/// NET-9, NET-10: the concentrator rekeys the CHILD SA (with PFS) and the IKE SA while the
/// data centre fetches a document through the box's TLS service over the SA; not one byte is
/// lost or changed, the link stays up, and the box's traffic totals only grow although
/// charon's per-SA counters start again at each rekey. `openssl s_client` in the data centre
/// is the TLS client, the box's renkei terminates TLS and relays to the hospital's document
/// server; the concentrator's `swanctl --rekey` (real charon) starts the rekeys.
///
/// Seen in the concentrator's log: the first CHILD rekey completes with the connection open
/// mid-document, the IKE rekey completes while the document flows; the CHILD rekey requested
/// right after it was answered about 4 s later, once the transfer had ended (IKE shares UDP
/// 4500 and libipsec's threads with the saturating ESP traffic): harmless, and why only the
/// start of that rekey, not its end, is required while the document flows.
#[test]
fn net9_net10_ops4_a_rekey_under_a_running_transfer_loses_no_byte() {
    require_root!();
    let renkei_box =
        start_renkei_box(STRONG_IKE, STRONG_ESP).expect("concentrator, box charon and renkei");
    let (lab, daemon) = (&renkei_box.lab, &renkei_box.daemon);
    let documents = DocumentServer::start(lab.lan_ns(Node::Hospital), DOCUMENT_SERVER_ADDRESS)
        .expect("document server");
    let link = wait_until(ALWAYS_ON_UP_TIMEOUT, "the SA up in renkei's status", || {
        let link = ipsec_link(&daemon.status().ok()?)?;
        (link["state"] == "up" && total_bytes(&link).is_some()).then_some(link)
    })
    .unwrap_or_else(|e| panic!("{e}\n{:?}\n{}", daemon.status(), daemon.log_text()));
    let total_before = total_bytes(&link).expect("totals");
    let received = lab.dir.join("rekey-document");
    let tls = lab.tls_dir(Node::Hub);
    let client = format!(
        "openssl s_client -connect {BOX_INNER}:{BOX_SERVICE_PORT} -servername {name} \
         -cert {dir}/box.crt -key {dir}/box.key -CAfile {dir}/operator-ca.crt \
         -verify_return_error -quiet > {out}",
        name = Node::Hospital.tls_name(),
        dir = tls.display(),
        out = received.display(),
    );
    let request = format!("GET {REKEY_DOCUMENT_BYTES} {REKEY_SEED} {REKEY_HELD_AFTER}\n");
    documents.hold();
    let mut states = Vec::new();
    let transfer = std::thread::scope(|scope| {
        let fetching = scope.spawn(|| {
            run_bounded(
                lab.ns(Node::Hub),
                "sh",
                &["-c", &client],
                request.as_bytes(),
                REKEY_TRANSFER_TIMEOUT,
            )
        });
        // The connection is open with the first part through: the CHILD SA is rekeyed under it.
        wait_until(FETCH_TIMEOUT, "the first part of the document", || {
            let len = std::fs::metadata(&received).ok()?.len();
            (len >= REKEY_HELD_AFTER).then_some(())
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log_text()));
        let before = start_rekey(&renkei_box, "--child").expect("swanctl --rekey --child");
        wait_rekeyed(&renkei_box, "--child", &before, &mut states)
            .expect("the CHILD SA rekeyed while the transfer is open");
        // Then, as the rest flows, the IKE SA and the CHILD SA again (charon queues the second).
        documents.release();
        let ike = start_rekey(&renkei_box, "--ike").expect("swanctl --rekey --ike");
        let child = start_rekey(&renkei_box, "--child").expect("swanctl --rekey --child");
        let started = (
            std::fs::metadata(&received).map_or(0, |m| m.len()),
            fetching.is_finished(),
        );
        assert!(!started.1, "the transfer ended before the rekeys started");
        wait_rekeyed(&renkei_box, "--ike", &ike, &mut states).expect("the IKE SA rekeyed");
        wait_rekeyed(&renkei_box, "--child", &child, &mut states).expect("the CHILD SA rekeyed");
        eprintln!(
            "rekeys started with {} of {REKEY_DOCUMENT_BYTES} bytes received; done with {}",
            started.0,
            std::fs::metadata(&received).map_or(0, |m| m.len())
        );
        fetching.join().expect("the transfer thread")
    })
    .expect("openssl s_client");
    assert!(transfer.success(), "{}", transfer.output);

    // Exactly the bytes sent, in order.
    let bytes = std::fs::read(&received).expect("the received document");
    let header = format!(
        "{} {REKEY_DOCUMENT_BYTES}\n",
        renkei_lab::tlstools::DOCUMENT_HEADER
    );
    assert!(
        bytes.starts_with(header.as_bytes()),
        "{:?}",
        &bytes[..bytes.len().min(64)]
    );
    let body = &bytes[header.len()..];
    assert_eq!(body.len() as u64, REKEY_DOCUMENT_BYTES);
    assert_eq!(
        ring::digest::digest(&ring::digest::SHA256, body).as_ref(),
        renkei_lab::tlstools::pattern_sha256(REKEY_DOCUMENT_BYTES, REKEY_SEED).as_slice(),
        "the document changed on its way"
    );

    // One more CHILD rekey, idle: renkei's status then shows a CHILD SA that carried next to
    // nothing (charon's counters are per SA), while the run's totals kept the document.
    let before = start_rekey(&renkei_box, "--child").expect("swanctl --rekey --child");
    wait_rekeyed(&renkei_box, "--child", &before, &mut states).expect("the idle CHILD rekey");
    let link = wait_until(EVENT_TIMEOUT, "renkei's status on the new CHILD SA", || {
        let link = ipsec_link(&daemon.status().ok()?)?;
        let (_, child_out) = child_bytes(&link)?;
        (child_out < IDLE_CHILD_BYTES).then_some(link)
    })
    .unwrap_or_else(|e| panic!("{e}\n{:?}", daemon.status()));
    assert!(
        states.iter().all(|s| s == "up"),
        "the link left up during the rekeys: {states:?}"
    );
    assert_eq!(link["state"], "up", "{link:#}");
    let total_after = total_bytes(&link).expect("totals");
    assert!(
        total_after.1 >= total_before.1 + REKEY_DOCUMENT_BYTES && total_after.0 > total_before.0,
        "totals {total_before:?} -> {total_after:?} after {REKEY_DOCUMENT_BYTES} bytes out:\n{link:#}"
    );
    // The concentrator logged the rekeys too.
    let dc_log = renkei_box.concentrator.log();
    assert!(
        dc_log.to_lowercase().contains("rekey"),
        "no rekey in the concentrator's log:\n{dc_log}"
    );
}

/// [`start_renkei_box_from`] with the profile's strongest proposals, the concentrator
/// presenting a certificate for the hub's name from `concentrator_ca` (not the lab CA that
/// issued the box's).
fn start_renkei_box_with_concentrator_ca(
    concentrator_ca: &renkei_lab::pki::Ca,
    edit: impl FnOnce(&Lab, &mut renkei::config::Config) -> anyhow::Result<()>,
) -> anyhow::Result<RenkeiBox> {
    start_renkei_box_from(
        STRONG_IKE,
        STRONG_ESP,
        |_| concentrator_ca.issue(Node::Hub.tls_name()),
        edit,
    )
}

/// The box's CA bundle during an operator's CA rollover: the lab CA (the box's own issuer)
/// first, the concentrator's new CA second (relative to the box's config).
const ROLLOVER_CA_FILE: &str = "tls/rollover-ca.crt";

/// NET-9, NET-10, AUTH-2, AVL-1: the concentrator's certificate is from a second CA. A CA file
/// holding the box's CA first and the concentrator's second brings the SA up (every CA of the
/// file is trusted, not only the first). A pushed config whose CA file is only the box's own
/// CA (it passes the box's checks: the box's certificate chains to it) makes charon refuse the
/// concentrator's certificate; the operator cannot come back, and the box rolls back to the
/// previous config by itself at the window's end, with the SA back.
#[test]
fn net9_net10_auth2_avl1_a_ca_bundle_brings_the_sa_up_and_a_pushed_wrong_ca_is_rolled_back() {
    require_root!();
    let concentrator_ca = renkei_lab::pki::Ca::new("renkei lab concentrator CA").expect("CA");
    let mut pushed_config = None;
    let RenkeiBox {
        lab,
        concentrator,
        box_charon,
        daemon,
        operator,
        ..
    } = start_renkei_box_with_concentrator_ca(&concentrator_ca, |lab, config| {
        let bundle = format!("{}{}", lab.ca.cert_pem, concentrator_ca.cert_pem);
        std::fs::write(lab.node_dir(Node::Hospital).join(ROLLOVER_CA_FILE), bundle)?;
        config.tls.as_mut().expect("[tls]").ca_file = ROLLOVER_CA_FILE.into();
        config
            .management
            .as_mut()
            .expect("[management]")
            .confirm_timeout_secs = CONFIRM_WINDOW.as_secs();
        pushed_config = Some(config.clone());
        Ok(())
    })
    .expect("concentrator, box charon and renkei");
    let base = pushed_config.expect("the box's config");
    let to_box = [("--to", format!("{BOX_INNER}:{MANAGEMENT_PORT}"))];
    let remote = || {
        operator
            .command_with(&lab, "remote", Node::Hospital, &to_box, &[])
            .ok()
            .filter(|o| o.success)
    };
    // The concentrator's CA is the bundle's second certificate: the SA comes up.
    let first = wait_until(ALWAYS_ON_UP_TIMEOUT, "the SA up with the CA bundle", || {
        established_at(&daemon)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}\ncharon: {}", daemon.log_text(), box_charon.log()));
    wait_until(
        APPLY_TIMEOUT,
        "the operator to reach the box over the SA",
        remote,
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log_text()));

    // Version 2 trusts only the box's own CA (the lab's tls/operator-ca.crt).
    let mut second = base.clone();
    second.meta.version = base.meta.version + 1;
    second.tls.as_mut().expect("[tls]").ca_file = tls_config().ca_file;
    let path = operator
        .write_signed("wrong-ca.toml", &second, None)
        .expect("sign the wrong-CA version");
    push_refused_by_the_concentrator_and_rolled_back(
        &lab,
        &daemon,
        &operator,
        &path,
        (second.meta.version, base.meta.version),
        "the concentrator's CA",
    );
    wait_until(
        ALWAYS_ON_UP_TIMEOUT,
        "a new SA on the rolled-back config",
        || established_at(&daemon).filter(|now| *now != first),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}", daemon.log_text(), box_charon.log()));
    wait_until(APPLY_TIMEOUT, "the operator back over the SA", remote)
        .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log_text()));
    let dc_sas = concentrator.list_sas().expect("swanctl --list-sas");
    assert!(dc_sas.contains("state=ESTABLISHED"), "{dc_sas}");
    drop(daemon);
    drop(box_charon);
    drop(concentrator);
}

/// NET-10, LOG-2: a concentrator offering only ChaCha20-Poly1305 with Curve25519 (modern, but
/// not in the CRYPTREC list the box proposes) gets no SA from `renkei run`; renkei records the
/// refusal as an event naming NO_PROPOSAL_CHOSEN, and the concentrator holds no SA.
#[test]
fn net10_log2_renkei_records_a_chacha20_curve25519_concentrator_refusal_as_an_event() {
    require_root!();
    let renkei_box = start_renkei_box("chacha20poly1305-prfsha256-curve25519", "chacha20poly1305")
        .expect("concentrator, box charon and renkei");
    concentrator_speaks_chacha20_and_curve25519(&renkei_box.concentrator);
    let daemon = &renkei_box.daemon;
    let code = "EVENT_CODE=\"ipsec_negotiation_refused\"";
    // As in the MODP-2048 test: charon's first attempt may come before renkei follows its log.
    let refusal_timeout = Duration::from_secs(10) + IKE_TIMEOUT;
    let line = wait_until(refusal_timeout, "renkei's refusal event", || {
        daemon
            .log_text()
            .lines()
            .find(|l| l.contains(code))
            .map(str::to_string)
    })
    .unwrap_or_else(|e| {
        panic!(
            "{e}\nrenkei: {}\ncharon: {}",
            daemon.log_text(),
            renkei_box.box_charon.log()
        )
    });
    assert!(
        line.contains("no proposal acceptable to both sides")
            && line.contains("NO_PROPOSAL_CHOSEN"),
        "{line}"
    );
    let link = ipsec_link(&daemon.status().expect("status")).expect("the IPsec link");
    assert_ne!(link["state"], "up", "{link:#}");
    let dc_sas = renkei_box
        .concentrator
        .list_sas()
        .expect("swanctl --list-sas");
    assert!(!dc_sas.contains("state="), "{dc_sas}");
    let dc_log = renkei_box.concentrator.log();
    assert!(
        dc_log.contains("received proposals unacceptable"),
        "{dc_log}"
    );
}

/// `--timeout-secs` of a push whose answer cannot come back (the link it came over is gone).
const LOST_ANSWER_TIMEOUT_SECS: &str = "5";
/// How long the hospital's WireGuard link may take to come up at start.
const TUNNEL_UP_TIMEOUT: Duration = Duration::from_secs(15);

/// A box on WireGuard is moved to IPsec by a push, and its charon starts only after the daemon
/// already runs the pushed config (on the image, `renkei-charon.path` starts it when the push
/// replaces the config file). The IPsec backend must not fail its start for a missing VICI
/// socket: it keeps trying, finds charon once it is up, loads the connection, the SA comes up
/// with the hand-configured concentrator and the operator's request over the SA confirms the
/// push (auto_confirm) within the window. charon is started from the config file the push
/// wrote, as the image's unit does.
#[test]
fn net9_avl1_auth4_a_push_to_ipsec_joins_once_the_boxs_charon_starts_after_the_apply() {
    require_root!();
    let lab = Lab::new().expect("lab");
    lab.ns(Node::Hub)
        .ip(&["addr", "add", &format!("{DC_INNER}/32"), "dev", "lo"])
        .expect("the data centre's service address");
    let dc_paths = CharonPaths::in_dir(&lab.dir.join("dc-charon"));
    let dc_conf = concentrator_conf(&dc_paths);
    let concentrator = Charon::start(lab.ns(Node::Hub), dc_paths, &dc_conf).expect("concentrator");
    concentrator
        .load_all(
            &concentrator_swanctl(STRONG_IKE, STRONG_ESP),
            lab.certificate(Node::Hub),
            &lab.ca.cert_pem,
        )
        .expect("concentrator's connection");
    let operator = Operator::new(&lab).expect("operator");
    let hub = lab.start(Node::Hub, &lab.config(Node::Hub)).expect("hub");

    // Version 1: WireGuard to the lab hub, the management API on the tunnel address.
    let mut v1 = lab.config(Node::Hospital);
    v1.meta.version = 1;
    v1.tls = Some(tls_config());
    v1.management = Some(operator.management(Node::Hospital, CONFIRM_WINDOW.as_secs(), true));
    let daemon = lab.start(Node::Hospital, &v1).expect("hospital");
    wait_until(TUNNEL_UP_TIMEOUT, "the hospital's tunnel to be up", || {
        (renkei_lab::chain::peer_state(&daemon, "dc") == "up").then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log_text()));

    // Version 2: IPsec, pushed over the tunnel. No charon runs in the box's namespace yet.
    let box_paths = CharonPaths::in_dir(&lab.dir.join("hospital-charon"));
    let mut v2 = box_config(&lab, &box_paths, &operator).expect("IPsec config");
    v2.meta.version = 2;
    let management = v2.management.as_mut().expect("[management]");
    management.confirm_timeout_secs = CONFIRM_WINDOW.as_secs();
    management.auto_confirm = true;
    let path = operator
        .write_signed("v2.toml", &v2, None)
        .expect("sign v2");
    let short = [("--timeout-secs", LOST_ANSWER_TIMEOUT_SECS.to_string())];
    let applied = std::thread::scope(|scope| {
        let pushing = scope.spawn(|| operator.push_with(&lab, Node::Hospital, &path, &short));
        wait_config(&lab, &daemon, 2, "pending", APPLY_TIMEOUT);
        let applied = std::time::Instant::now();
        let _ = pushing.join();
        applied
    });
    // The backend runs and waits for charon: not loaded, the socket's absence its last error.
    let waiting = wait_until(
        APPLY_TIMEOUT,
        "the IPsec backend waiting for charon",
        || {
            let status = daemon.status().ok()?;
            let charon = &status["tunnel"]["backend"]["ipsec"];
            (status["tunnel"]["kind"] == "ipsec"
                && charon["charon_loaded"] == false
                && charon["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("cannot connect to charon's VICI socket")))
            .then_some(status)
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log_text()));
    assert_eq!(waiting["config"]["state"], "pending", "{waiting}");

    // charon starts now, with the strongswan.conf of the config file the push wrote.
    let charon_conf = renkei_charon_conf(&daemon.config).expect("renkei charon-conf");
    let box_charon =
        Charon::start(lab.ns(Node::Hospital), box_paths, &charon_conf).expect("box charon");
    let to_box = [("--to", format!("{BOX_INNER}:{MANAGEMENT_PORT}"))];
    let read_back = wait_until(
        CONFIRM_WINDOW,
        "the operator to reach the box over the SA",
        || {
            operator
                .command_with(&lab, "remote", Node::Hospital, &to_box, &[])
                .ok()
                .filter(|o| o.success)
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}", daemon.log_text(), box_charon.log()));
    assert_eq!(read_back.answers[0]["version"], 2, "{}", read_back.output);
    wait_config(&lab, &daemon, 2, "confirmed", CONFIRM_WINDOW);
    assert!(
        applied.elapsed() < CONFIRM_WINDOW,
        "confirmed only after the window: {:?}",
        applied.elapsed()
    );
    let sas = concentrator.list_sas().expect("concentrator's SAs");
    assert!(
        sas.contains("state=ESTABLISHED") && sas.contains(Node::Hospital.tls_name()),
        "the concentrator has no SA with the box:\n{sas}"
    );
    drop(daemon);
    drop(box_charon);
    drop(hub);
    drop(concentrator);
}

/// `[ipsec.failover]` in the backup concentrator test: the shortest times `renkei check`
/// allows, so the test runs in seconds.
const FAILOVER_AFTER_SECS: u64 = 5;
/// See [`FAILOVER_AFTER_SECS`].
const FAIL_BACK_AFTER_SECS: u64 = 10;
/// See [`FAILOVER_AFTER_SECS`].
const STANDBY_PROBE_SECS: u64 = 2;
/// docs/configuration.md's bound for the CHILD SA up with the backup after the primary died:
/// dead peer detection (about 10 s), then `failover_after_secs`, then a listing and a
/// negotiation (a few seconds).
const FAILOVER_BOUND: Duration = Duration::from_secs(FAILOVER_AFTER_SECS + 15);
/// docs/configuration.md's bound for the return after the primary is back: a probe, the
/// hold time, then a listing and a negotiation.
const FAIL_BACK_BOUND: Duration =
    Duration::from_secs(STANDBY_PROBE_SECS + FAIL_BACK_AFTER_SECS + 5);

/// The hand-written concentrator of [`Lab::with_backup_hub`]'s second data centre: the same
/// connection as the primary's, on the backup's WAN address.
fn backup_concentrator_swanctl(identity: &str) -> String {
    let mut connection = facility_connection(
        Node::Hospital,
        CONN,
        DC_INNER,
        BOX_INNER,
        STRONG_IKE,
        STRONG_ESP,
    );
    connection.local_addr = renkei_lab::lab::BACKUP_HUB_WAN_ADDRESS.to_string();
    connection.local_id = identity.to_string();
    swanctl_conf(&[connection])
}

/// Starts the primary concentrator's charon in its namespace with its hand-written config.
fn start_primary_concentrator(lab: &Lab) -> anyhow::Result<Charon> {
    let paths = CharonPaths::in_dir(&lab.dir.join("dc-charon"));
    let conf = concentrator_conf(&paths);
    let charon = Charon::start(lab.ns(Node::Hub), paths, &conf)?;
    charon.load_all(
        &concentrator_swanctl(STRONG_IKE, STRONG_ESP),
        lab.certificate(Node::Hub),
        &lab.ca.cert_pem,
    )?;
    Ok(charon)
}

/// The data centre in `ns` fetches a document through the box's TLS service over the SA:
/// a new connection from whichever data centre the SA runs to.
fn fetch_from(lab: &Lab, ns: &renkei_lab::netns::Namespace) -> anyhow::Result<String> {
    let tls = lab.tls_dir(Node::Hub);
    let path = |name: &str| tls.join(name).display().to_string();
    let finished = run_bounded(
        ns,
        "openssl",
        &[
            "s_client",
            "-connect",
            &format!("{BOX_INNER}:{BOX_SERVICE_PORT}"),
            "-servername",
            Node::Hospital.tls_name(),
            "-cert",
            &path("box.crt"),
            "-key",
            &path("box.key"),
            "-CAfile",
            &path("operator-ca.crt"),
            "-verify_return_error",
            "-quiet",
        ],
        format!("GET {DOCUMENT_BYTES} 7\n").as_bytes(),
        FETCH_TIMEOUT,
    )?;
    Ok(finished.output)
}

/// The `hubs` block and the IPsec link of the status when `active` carries an installed
/// CHILD SA whose IKE SA runs to `remote`.
fn carried_by(
    daemon: &renkei_lab::Daemon,
    active: &str,
    remote: &str,
) -> Option<serde_json::Value> {
    let status = daemon.status().ok()?;
    let link = ipsec_link(&status)?;
    let hubs = status["hubs"].clone();
    (hubs["active"] == active
        && link["state"] == "up"
        && link["backend"]["ipsec"]["remote_address"] == remote
        && link["backend"]["ipsec"]["child"]["state"] == "INSTALLED")
        .then_some(status)
}

/// `renkei remote ... ACTION` from the data centre in `from`, to the box's management API on
/// its IPsec address (over whichever SA runs to that data centre).
fn prefer_hub(
    operator: &Operator,
    from: &renkei_lab::netns::Namespace,
    action: &[&str],
) -> renkei_lab::tlstools::Finished {
    let mut args = vec!["remote".to_string()];
    let mut target = operator.management_args(Node::Hospital);
    if let Some(to) = target.iter().position(|a| a == "--to") {
        target[to + 1] = format!("{BOX_INNER}:{MANAGEMENT_PORT}");
    }
    args.extend(target);
    args.extend(action.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let bin = renkei_bin().expect("renkei binary");
    run_bounded(from, &bin.to_string_lossy(), &args, b"", FETCH_TIMEOUT).expect("renkei remote")
}

/// The backup concentrator's own identity in the cut-link test.
const BACKUP_CONCENTRATOR_ID: &str = "dc2.renkei.test";

/// How the primary data centre is lost in a failover test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PrimaryLoss {
    /// Its charon is killed (SIGKILL: no DELETE reaches the box), later started again.
    Killed,
    /// Its WAN link goes down (charon and its SAs stay), later up again.
    LinkCut,
}

#[test]
fn avl4_net6_an_always_on_ipsec_box_fails_over_to_the_backup_concentrator_and_back_and_follows_the_operator(
) {
    require_root!();
    fail_over_and_back(PrimaryLoss::Killed);
}

#[test]
fn avl4_net6_an_always_on_ipsec_box_fails_over_when_the_primary_wan_link_is_cut_and_back_when_it_returns(
) {
    require_root!();
    fail_over_and_back(PrimaryLoss::LinkCut);
}

/// The always-on box with a primary and a backup concentrator: it fails over when the primary
/// is lost as `loss` says, serves new connections through the backup, returns after the hold
/// time once the primary is back, and (killed primary) follows the operator's preference.
/// How long after the box's return the data centre's route to it may still be missing.
const ROUTE_AFTER_RETURN: Duration = Duration::from_secs(10);

fn fail_over_and_back(loss: PrimaryLoss) {
    use renkei::config::IpsecFailoverConfig;
    let lab = Lab::with_backup_hub().expect("lab with a backup data centre");
    let backup_address = renkei_lab::lab::BACKUP_HUB_WAN_ADDRESS;
    for ns in [lab.ns(Node::Hub), lab.backup_hub_ns()] {
        ns.ip(&["addr", "add", &format!("{DC_INNER}/32"), "dev", "lo"])
            .expect("the data centre's service address");
    }
    let mut primary = start_primary_concentrator(&lab).expect("primary concentrator");
    let backup_paths = CharonPaths::in_dir(&lab.dir.join("dc2-charon"));
    let backup_conf = concentrator_conf(&backup_paths);
    let backup = Charon::start(lab.backup_hub_ns(), backup_paths, &backup_conf)
        .expect("backup concentrator");
    // The killed primary keeps the default (both concentrators carry the hub's name); the cut
    // link gives the backup a name of its own: charon sends INITIAL_CONTACT only to an
    // identity it has no other IKE SA with, and only that notify makes the primary, which
    // kept the box's SAs through the cut, drop them when the box returns.
    let backup_id = match loss {
        PrimaryLoss::Killed => Node::Hub.tls_name().to_string(),
        PrimaryLoss::LinkCut => BACKUP_CONCENTRATOR_ID.to_string(),
    };
    let backup_leaf = lab.ca.issue(&backup_id).expect("the backup's certificate");
    backup
        .load_all(
            &backup_concentrator_swanctl(&backup_id),
            &backup_leaf,
            &lab.ca.cert_pem,
        )
        .expect("backup concentrator's config");
    let operator = Operator::new(&lab).expect("operator");
    let box_paths = CharonPaths::in_dir(&lab.dir.join("hospital-charon"));
    let mut config = box_config(&lab, &box_paths, &operator).expect("box config");
    if let Some(ipsec) = config.ipsec.as_mut() {
        ipsec.failover = Some(IpsecFailoverConfig {
            backup_remote_address: backup_address.parse().expect("address"),
            backup_remote_id: (backup_id != Node::Hub.tls_name()).then(|| backup_id.clone()),
            failover_after_secs: FAILOVER_AFTER_SECS,
            fail_back_after_secs: FAIL_BACK_AFTER_SECS,
            probe_interval_secs: STANDBY_PROBE_SECS,
        });
    }
    let path = lab.write_config(Node::Hospital, &config).expect("config");
    let charon_conf = renkei_charon_conf(&path).expect("renkei charon-conf");
    let box_charon =
        Charon::start(lab.ns(Node::Hospital), box_paths, &charon_conf).expect("box charon");
    let daemon = lab.start_with(Node::Hospital, &path).expect("renkei");
    let _documents = DocumentServer::start(lab.lan_ns(Node::Hospital), DOCUMENT_SERVER_ADDRESS)
        .expect("document server");
    let logs = || {
        format!(
            "renkei: {}\nbox charon: {}\nbackup: {}",
            daemon.log_text(),
            box_charon.log(),
            backup.log()
        )
    };
    let document = format!("renkei-lab document {DOCUMENT_BYTES}");

    // Both data centres up: the SA to the primary, the backup probed (an IKE SA alone).
    let status = wait_until(
        ALWAYS_ON_UP_TIMEOUT,
        "the SA to the primary, the backup healthy",
        || {
            let status = carried_by(&daemon, "primary", Node::Hub.wan_address())?;
            (status["hubs"]["members"][1]["healthy"] == true).then_some(status)
        },
    )
    .unwrap_or_else(|e| panic!("{e}\nstatus: {:?}\n{}", daemon.status(), logs()));
    assert_eq!(status["hubs"]["members"][1]["name"], "backup", "{status:#}");
    let backup_sas = backup.list_sas().expect("backup's SAs");
    assert!(
        backup_sas.contains("state=ESTABLISHED") && !backup_sas.contains("INSTALLED"),
        "the backup has the box's IKE SA but no CHILD SA: {backup_sas}"
    );
    assert!(fetch_from(&lab, lab.ns(Node::Hub))
        .expect("openssl s_client")
        .contains(&document));

    // The primary data centre is lost (no DELETE reaches the box).
    match loss {
        PrimaryLoss::Killed => primary.crash(),
        PrimaryLoss::LinkCut => {
            lab.ns(Node::Hub)
                .ip(&["link", "set", "wan0", "down"])
                .expect("cut the primary's WAN link");
        }
    }
    let died = std::time::Instant::now();
    let status = wait_until(
        FAILOVER_BOUND * 2,
        "the CHILD SA up with the backup",
        || carried_by(&daemon, "backup", backup_address),
    )
    .unwrap_or_else(|e| panic!("{e}\nstatus: {:?}\n{}", daemon.status(), logs()));
    let took = died.elapsed();
    eprintln!("IPsec failover ({loss:?}): the CHILD SA with the backup up {took:?} after the primary was lost");
    assert!(
        took >= Duration::from_secs(FAILOVER_AFTER_SECS),
        "not before failover_after_secs: {took:?}"
    );
    assert!(
        took <= FAILOVER_BOUND * 2,
        "within about the documented bound {FAILOVER_BOUND:?}: {took:?}"
    );
    assert_eq!(status["hubs"]["failovers"], 1, "{}", status["hubs"]);
    // The event ring may record the move just after the status read above: wait for it.
    let switched = wait_until(EVENT_TIMEOUT, "the hub_switched event", || {
        let events: Vec<serde_json::Value> = daemon.status().ok()?["events"]
            .as_array()?
            .iter()
            .filter(|e| e["code"] == "hub_switched")
            .cloned()
            .collect();
        (!events.is_empty()).then_some(events)
    })
    .unwrap_or_else(|e| panic!("{e}\nstatus: {:?}", daemon.status()));
    assert_eq!(switched.len(), 1, "{switched:?}");
    assert_eq!(
        (
            &switched[0]["params"]["from"],
            &switched[0]["params"]["to"],
            &switched[0]["params"]["reason"]
        ),
        (
            &serde_json::json!("primary"),
            &serde_json::json!("backup"),
            &serde_json::json!("no_answer")
        ),
        "{switched:?}"
    );
    let fetched = fetch_from(&lab, lab.backup_hub_ns()).expect("openssl s_client via the backup");
    assert!(fetched.contains(&document), "{fetched}\n{}", logs());

    // The primary comes back: the box returns only after the hold time.
    match loss {
        PrimaryLoss::Killed => {
            drop(primary);
            primary = start_primary_concentrator(&lab).expect("the primary again");
        }
        PrimaryLoss::LinkCut => {
            lab.ns(Node::Hub)
                .ip(&["link", "set", "wan0", "up"])
                .expect("the primary's WAN link back");
        }
    }
    let back = std::time::Instant::now();
    let status = wait_until(
        FAIL_BACK_BOUND * 2,
        "the CHILD SA back on the primary",
        || carried_by(&daemon, "primary", Node::Hub.wan_address()),
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}\nstatus: {:?}\n{}\nprimary: {}",
            daemon.status(),
            logs(),
            primary.log()
        )
    });
    let took = back.elapsed();
    eprintln!("IPsec fail back ({loss:?}): on the primary {took:?} after it came back");
    assert!(
        took >= Duration::from_secs(FAIL_BACK_AFTER_SECS),
        "not before the hold time: {took:?}"
    );
    assert!(
        took <= FAIL_BACK_BOUND * 2,
        "within about the documented bound {FAIL_BACK_BOUND:?}: {took:?}"
    );
    assert_eq!(status["hubs"]["failovers"], 1, "a return is no failover");
    // The box counts the primary active once its own CHILD SA is installed; the concentrator's
    // route to the box (libipsec, table 220) came a moment later in one CI-like run of four
    // ("Network is unreachable" from the data centre). Bounded: a route that never comes fails.
    let returned = Instant::now();
    let mut tries = 0;
    let fetched = loop {
        tries += 1;
        let fetched =
            fetch_from(&lab, lab.ns(Node::Hub)).expect("openssl s_client via the primary");
        if fetched.contains(&document) || returned.elapsed() > ROUTE_AFTER_RETURN {
            break fetched;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    if tries > 1 {
        eprintln!(
            "the data centre reached the box through the primary after {tries} tries, {:?}",
            returned.elapsed()
        );
    }
    assert!(fetched.contains(&document), "{fetched}\n{}", logs());
    if loss == PrimaryLoss::LinkCut {
        drop(daemon);
        drop(box_charon);
        drop(backup);
        drop(primary);
        return;
    }

    // The operator drains the primary: `renkei remote ... prefer-hub backup` over the SA.
    let asked = prefer_hub(&operator, lab.ns(Node::Hub), &["prefer-hub", "backup"]);
    assert!(asked.success(), "{}\n{}", asked.output, logs());
    let status = wait_until(IKE_TIMEOUT, "the CHILD SA on the preferred backup", || {
        carried_by(&daemon, "backup", backup_address)
    })
    .unwrap_or_else(|e| panic!("{e}\nstatus: {:?}\n{}", daemon.status(), logs()));
    assert_eq!(status["hubs"]["preferred"], "backup", "{}", status["hubs"]);
    assert_eq!(
        status["hubs"]["failovers"], 1,
        "a planned move is no failover"
    );
    // The event ring records the move as it happens, not necessarily before the status read
    // above: wait for it, then every move so far has exactly its reason.
    let reasons = wait_until(
        EVENT_TIMEOUT,
        "the operator_preferred hub_switched event",
        || {
            let status = daemon.status().ok()?;
            let mut reasons: Vec<String> = status["events"]
                .as_array()?
                .iter()
                .filter(|e| e["code"] == "hub_switched")
                .filter_map(|e| e["params"]["reason"].as_str().map(str::to_string))
                .collect();
            reasons.sort();
            reasons
                .iter()
                .any(|r| r == "operator_preferred")
                .then_some(reasons)
        },
    )
    .unwrap_or_else(|e| panic!("{e}\nstatus: {:?}", daemon.status()));
    assert_eq!(
        reasons,
        ["fail_back", "no_answer", "operator_preferred"],
        "one event per move"
    );
    let fetched = fetch_from(&lab, lab.backup_hub_ns()).expect("openssl s_client via the backup");
    assert!(fetched.contains(&document), "{fetched}\n{}", logs());
    // Cleared from the backup's side: the healthy primary takes the box back.
    let cleared = prefer_hub(&operator, lab.backup_hub_ns(), &["prefer-hub", "--clear"]);
    assert!(cleared.success(), "{}\n{}", cleared.output, logs());
    wait_until(IKE_TIMEOUT, "the CHILD SA back on the primary", || {
        carried_by(&daemon, "primary", Node::Hub.wan_address())
    })
    .unwrap_or_else(|e| panic!("{e}\nstatus: {:?}\n{}", daemon.status(), logs()));
    drop(daemon);
    drop(box_charon);
    drop(backup);
    drop(primary);
}
