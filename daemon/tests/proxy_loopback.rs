//! The proxy end to end on loopback, without a tunnel: a plain TCP client talks to a "clinic"
//! box's outbound service, which opens TLS to a "hub" box's inbound service, which forwards to
//! a plain TCP server. Real listeners, real rustls, real certificates from a test CA.

mod tls_common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use renkei::config::{Direction, MinTls, ServiceConfig, TlsConfig};
use renkei::proxy::{AccessRecord, ProxyError, Services};
use renkei::tls::profile;
use renkei::tls::CredentialStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::ClientConfig;
use tempfile::TempDir;
use tls_common::{tempdir, write_box, write_key, Ca, CLIENT_NAME, SERVER_NAME};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Upper bound for anything the tests wait for.
const WAIT: Duration = Duration::from_secs(60);
/// Poll interval of `wait_until`.
const POLL: Duration = Duration::from_millis(20);
const INBOUND: &str = "records-in";
const OUTBOUND: &str = "records-out";
/// Serial of the hub's first certificate.
const HUB_SERIAL: u64 = 0x11;

/// Polls `condition` until it holds, at most `WAIT`.
async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// Deterministic pseudo-random bytes, so a transfer is not all zeros.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

fn sha256(data: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .to_vec()
}

/// A plain TCP echo server on loopback: echoes until EOF, then shuts its write side down.
/// Counts the connections it accepted.
async fn echo_server() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind echo");
    let addr = listener.local_addr().expect("echo addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                if tokio::io::copy(&mut read, &mut write).await.is_ok() {
                    let _ = write.shutdown().await;
                }
            });
        }
    });
    (addr, accepted)
}

/// A server that speaks first: sends `banner`, shuts its write side down, then reads until EOF
/// and reports what it read.
async fn banner_server(banner: &'static [u8]) -> (SocketAddr, mpsc::Receiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind banner");
    let addr = listener.local_addr().expect("banner addr");
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                if stream.write_all(banner).await.is_err() || stream.shutdown().await.is_err() {
                    return;
                }
                let mut got = Vec::new();
                if stream.read_to_end(&mut got).await.is_ok() {
                    let _ = tx.send(got).await;
                }
            });
        }
    });
    (addr, rx)
}

fn service(name: &str, direction: Direction, target: String) -> ServiceConfig {
    ServiceConfig {
        name: name.to_string(),
        direction,
        listen: "127.0.0.1:0".parse().expect("listen"),
        target,
        server_name: None,
        allowed_identities: Vec::new(),
        min_tls: MinTls::Tls13,
        max_connections: 16,
        handshake_timeout_secs: 10,
        idle_timeout_secs: 60,
        tcp_user_timeout_secs: renkei::config::DEFAULT_TCP_USER_TIMEOUT_SECS,
    }
}

/// Limits a test changes.
struct Options {
    inbound_max_connections: u32,
    outbound_max_connections: u32,
    inbound_handshake_timeout_secs: u64,
    inbound_min_tls: MinTls,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            inbound_max_connections: 16,
            outbound_max_connections: 16,
            inbound_handshake_timeout_secs: 10,
            inbound_min_tls: MinTls::Tls13,
        }
    }
}

/// Two boxes on loopback: `clinic` (outbound) -> `hub` (inbound) -> `target`.
struct Lab {
    dir: TempDir,
    ca: Ca,
    hub_tls: TlsConfig,
    hub_store: Arc<CredentialStore>,
    clinic_store: Arc<CredentialStore>,
    hub: Services,
    clinic: Services,
}

impl Lab {
    async fn start(target: SocketAddr, options: Options) -> Lab {
        let dir = tempdir();
        let ca = Ca::new("renkei proxy test CA");
        let hub_tls = write_box(
            dir.path(),
            "hub",
            &ca.issue(SERVER_NAME, HUB_SERIAL),
            &ca.pem,
            None,
        );
        let clinic_tls = write_box(
            dir.path(),
            "clinic",
            &ca.issue(CLIENT_NAME, 0x22),
            &ca.pem,
            None,
        );
        let hub_store = Arc::new(CredentialStore::open(hub_tls.clone()).expect("hub TLS"));
        let clinic_store = Arc::new(CredentialStore::open(clinic_tls).expect("clinic TLS"));

        let mut inbound = service(INBOUND, Direction::Inbound, target.to_string());
        inbound.allowed_identities = vec![CLIENT_NAME.to_string()];
        inbound.max_connections = options.inbound_max_connections;
        inbound.handshake_timeout_secs = options.inbound_handshake_timeout_secs;
        inbound.min_tls = options.inbound_min_tls;
        let hub = Services::start(&[inbound], None, Arc::clone(&hub_store), None)
            .await
            .expect("hub services");
        let inbound_addr = hub.listen_addr(INBOUND).expect("inbound address");

        let mut outbound = service(OUTBOUND, Direction::Outbound, inbound_addr.to_string());
        outbound.server_name = Some(SERVER_NAME.to_string());
        outbound.max_connections = options.outbound_max_connections;
        let clinic = Services::start(&[outbound], None, Arc::clone(&clinic_store), None)
            .await
            .expect("clinic services");
        Lab {
            dir,
            ca,
            hub_tls,
            hub_store,
            clinic_store,
            hub,
            clinic,
        }
    }

    fn outbound(&self) -> SocketAddr {
        self.clinic.listen_addr(OUTBOUND).expect("outbound address")
    }

    fn inbound(&self) -> SocketAddr {
        self.hub.listen_addr(INBOUND).expect("inbound address")
    }

    /// A TLS client straight to the inbound service with the given client store.
    async fn tls_client(
        &self,
        store: &CredentialStore,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        self.tls_client_with(store.current().client_config(MinTls::Tls13))
            .await
    }

    /// A TLS client straight to the inbound service with any client configuration.
    async fn tls_client_with(
        &self,
        config: Arc<ClientConfig>,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(self.inbound()).await?;
        let connector = TlsConnector::from(config);
        let name = ServerName::try_from(SERVER_NAME).expect("server name");
        connector.connect(name, tcp).await
    }

    /// Waits until `services` logged a record that `matches`, and returns it.
    async fn record(services: &Services, matches: impl Fn(&AccessRecord) -> bool) -> AccessRecord {
        let log = services.access_log();
        let mut found = None;
        wait_until("an access-log record", || {
            found = log.recent().into_iter().find(|r| matches(r));
            found.is_some()
        })
        .await;
        found.expect("record")
    }
}

/// Sends `data` and shuts the write side down while reading everything back.
async fn round_trip<S: AsyncRead + AsyncWrite>(stream: S, data: &[u8]) -> Vec<u8> {
    let (mut read, mut write) = tokio::io::split(stream);
    let send = async {
        write.write_all(data).await.expect("send");
        write.shutdown().await.expect("shutdown");
    };
    let mut got = Vec::new();
    let receive = read.read_to_end(&mut got);
    let ((), received) = tokio::time::timeout(WAIT, async { tokio::join!(send, receive) })
        .await
        .expect("round trip in time");
    received.expect("receive");
    got
}

fn serial_of(stream: &tokio_rustls::client::TlsStream<TcpStream>) -> Vec<u8> {
    let certs = stream.get_ref().1.peer_certificates().expect("peer certs");
    let (_, cert) = X509Certificate::from_der(certs[0].as_ref()).expect("parse cert");
    cert.raw_serial().to_vec()
}

/// True once a read returns EOF or an error: the other side closed the connection.
async fn closed_by_peer<S: AsyncRead + Unpin>(stream: &mut S) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(WAIT, stream.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn net1_log1_fifty_mebibytes_cross_outbound_and_inbound_intact_and_are_logged() {
    const LEN: usize = 50 * 1024 * 1024;
    let (echo, _) = echo_server().await;
    let lab = Lab::start(echo, Options::default()).await;

    let data = pattern(7, LEN);
    let client = TcpStream::connect(lab.outbound()).await.expect("connect");
    let client_port = client.local_addr().expect("client addr");
    let echoed = round_trip(client, &data).await;
    assert_eq!(echoed.len(), LEN);
    assert_eq!(sha256(&echoed), sha256(&data), "SHA-256 of the echo");

    let out = Lab::record(&lab.clinic, |r| r.peer_addr == client_port).await;
    assert_eq!(out.result.to_string(), "ok");
    assert_eq!(out.service, OUTBOUND);
    assert_eq!(out.direction, "outbound");
    assert_eq!(out.peer_identity.as_deref(), Some(SERVER_NAME));
    assert_eq!((out.bytes_in, out.bytes_out), (LEN as u64, LEN as u64));
    assert_eq!(out.tls_version.as_deref(), Some("TLSv1_3"));
    let suite = out.tls_suite.clone().unwrap_or_default();
    assert!(suite.contains("AES") && suite.contains("GCM"), "{suite}");

    let inb = Lab::record(&lab.hub, |r| r.service == INBOUND).await;
    assert_eq!(inb.result.to_string(), "ok");
    assert_eq!(inb.direction, "inbound");
    assert_eq!(inb.peer_identity.as_deref(), Some(CLIENT_NAME));
    assert_eq!((inb.bytes_in, inb.bytes_out), (LEN as u64, LEN as u64));
    assert_eq!(inb.tls_version.as_deref(), Some("TLSv1_3"));
    assert_eq!(inb.tls_suite, out.tls_suite);

    let snapshot = lab.clinic.snapshot();
    let svc = &snapshot.services[0];
    assert_eq!((svc.active, svc.total, svc.refused), (0, 1, 0));
    assert_eq!((svc.bytes_in, svc.bytes_out), (LEN as u64, LEN as u64));
    let json = serde_json::to_value(&snapshot).expect("snapshot serializes");
    assert_eq!(json["recent_connections"][0]["result"], "ok");
}

#[tokio::test]
async fn half_close_travels_in_both_directions() {
    // Client closes first: its EOF reaches the echo server, the echo still comes back.
    let (echo, _) = echo_server().await;
    let lab = Lab::start(echo, Options::default()).await;
    let client = TcpStream::connect(lab.outbound()).await.expect("connect");
    assert_eq!(round_trip(client, b"question").await, b"question");

    // Server closes first: its EOF reaches the client, the client can still send.
    let (banner, mut received) = banner_server(b"220 ready").await;
    let lab = Lab::start(banner, Options::default()).await;
    let mut client = TcpStream::connect(lab.outbound()).await.expect("connect");
    let mut got = Vec::new();
    tokio::time::timeout(WAIT, client.read_to_end(&mut got))
        .await
        .expect("banner and EOF in time")
        .expect("read banner");
    assert_eq!(got, b"220 ready");
    client
        .write_all(b"sent after the server's EOF")
        .await
        .expect("write after EOF");
    client.shutdown().await.expect("shutdown");
    let at_server = tokio::time::timeout(WAIT, received.recv())
        .await
        .expect("server got data in time")
        .expect("server report");
    assert_eq!(at_server, b"sent after the server's EOF");
    let record = Lab::record(&lab.hub, |r| r.service == INBOUND).await;
    assert_eq!(record.result.to_string(), "ok");
    assert_eq!((record.bytes_in, record.bytes_out), (27, 9));
}

#[tokio::test]
async fn int1_log1_connections_beyond_max_connections_are_refused_and_logged() {
    let (echo, _) = echo_server().await;
    let options = Options {
        outbound_max_connections: 2,
        ..Options::default()
    };
    let lab = Lab::start(echo, options).await;

    let mut open = Vec::new();
    for i in 0..2u8 {
        let mut client = TcpStream::connect(lab.outbound()).await.expect("connect");
        client.write_all(&[i]).await.expect("write");
        let mut byte = [0u8; 1];
        tokio::time::timeout(WAIT, client.read_exact(&mut byte))
            .await
            .expect("echo in time")
            .expect("echo");
        assert_eq!(byte, [i]);
        open.push(client);
    }
    let mut third = TcpStream::connect(lab.outbound()).await.expect("connect");
    let third_addr = third.local_addr().expect("addr");
    assert!(closed_by_peer(&mut third).await, "third connection closed");

    let refused = Lab::record(&lab.clinic, |r| r.peer_addr == third_addr).await;
    assert_eq!(
        refused.result.to_string(),
        "refused: max_connections (2) reached"
    );
    let snapshot = lab.clinic.snapshot();
    assert_eq!(snapshot.services[0].refused, 1);
    assert_eq!(snapshot.services[0].active, 2);

    // The open ones still work, and a slot frees up when one closes.
    let first = open.remove(0);
    assert_eq!(round_trip(first, b"more").await, b"more");
    wait_until("a free slot", || {
        lab.clinic.snapshot().services[0].active == 1
    })
    .await;
    let fourth = TcpStream::connect(lab.outbound()).await.expect("connect");
    assert_eq!(round_trip(fourth, b"fits again").await, b"fits again");
}

#[tokio::test]
async fn int1_unfinished_tls_handshake_is_dropped_at_the_handshake_timeout() {
    let (echo, accepted) = echo_server().await;
    let options = Options {
        inbound_handshake_timeout_secs: 1,
        ..Options::default()
    };
    let lab = Lab::start(echo, options).await;

    let started = Instant::now();
    let mut silent = TcpStream::connect(lab.inbound()).await.expect("connect");
    // Half a TLS record header, then nothing.
    silent.write_all(&[0x16, 0x03]).await.expect("write");
    assert!(closed_by_peer(&mut silent).await, "dropped by the server");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "dropped too early: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(10),
        "dropped too late: {waited:?}"
    );

    let record = Lab::record(&lab.hub, |r| r.service == INBOUND).await;
    assert_eq!(
        record.result.to_string(),
        "refused: TLS handshake not completed within 1 s"
    );
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        0,
        "nothing reached the LAN"
    );
}

#[tokio::test]
async fn net4_log1_identity_not_on_the_allowlist_is_refused_and_recorded() {
    let (echo, accepted) = echo_server().await;
    let lab = Lab::start(echo, Options::default()).await;

    let intruder_tls = write_box(
        lab.dir.path(),
        "intruder",
        &lab.ca.issue("intruder.renkei.example", 0x33),
        &lab.ca.pem,
        None,
    );
    let intruder = CredentialStore::open(intruder_tls).expect("intruder TLS");
    // The certificate is genuine, so the handshake may complete; then the box closes.
    if let Ok(mut tls) = lab.tls_client(&intruder).await {
        let _ = tls.write_all(b"let me in").await;
        assert!(closed_by_peer(&mut tls).await, "closed by the box");
    }
    let record = Lab::record(&lab.hub, |r| r.result.is_refused()).await;
    assert_eq!(
        record.peer_identity.as_deref(),
        Some("intruder.renkei.example")
    );
    assert_eq!(
        record.result.to_string(),
        "refused: identity \"intruder.renkei.example\" is not in allowed_identities"
    );
    assert_eq!(record.bytes_in, 0);
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        0,
        "nothing reached the LAN"
    );

    // A certificate from another CA does not even complete the handshake.
    let other_ca = Ca::new("some other CA");
    let stranger = profile_client(
        &lab.ca,
        &other_ca.issue(CLIENT_NAME, 0x44),
        &[&rustls::version::TLS13],
    );
    if let Ok(mut tls) = lab.tls_client_with(stranger).await {
        assert!(closed_by_peer(&mut tls).await, "closed by the box");
    }
    wait_until("two refusals", || {
        lab.hub.snapshot().services[0].refused == 2
    })
    .await;
    let records = lab.hub.access_log().recent();
    let last = records.last().expect("record");
    assert!(
        last.result
            .to_string()
            .starts_with("refused: TLS handshake failed"),
        "{}",
        last.result
    );
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        0,
        "nothing reached the LAN"
    );
}

#[tokio::test]
async fn reload_gives_new_connections_the_new_certificate_while_open_ones_finish() {
    let (echo, _) = echo_server().await;
    let lab = Lab::start(echo, Options::default()).await;

    let first_half = pattern(1, 4 * 1024 * 1024);
    let second_half = pattern(2, 4 * 1024 * 1024);
    let mut open = lab
        .tls_client(&lab.clinic_store)
        .await
        .expect("first connection");
    assert_eq!(serial_of(&open), vec![HUB_SERIAL as u8]);
    // Move the first half across and back before the reload.
    let (mut read, mut write) = tokio::io::split(open);
    let mut echoed = vec![0u8; first_half.len()];
    let (sent, got) = tokio::join!(write.write_all(&first_half), read.read_exact(&mut echoed));
    sent.expect("send first half");
    got.expect("echo of first half");

    let next = lab.ca.issue(SERVER_NAME, 0x4242);
    std::fs::write(&lab.hub_tls.certificate_file, &next.cert_pem).expect("write cert");
    write_key(&lab.hub_tls.private_key_file, &next.key_pem);
    let material = lab.hub_store.reload().await.expect("reload");
    assert_eq!(material.serial, "42:42");

    let fresh = lab
        .tls_client(&lab.clinic_store)
        .await
        .expect("new connection");
    assert_eq!(serial_of(&fresh), vec![0x42, 0x42]);
    drop(fresh);

    // The connection opened before the reload finishes its transfer.
    let mut rest = Vec::new();
    let send = async {
        write
            .write_all(&second_half)
            .await
            .expect("send second half");
        write.shutdown().await.expect("shutdown");
    };
    let ((), received) = tokio::time::timeout(WAIT, async {
        tokio::join!(send, read.read_to_end(&mut rest))
    })
    .await
    .expect("rest in time");
    received.expect("receive rest");
    assert_eq!(sha256(&rest), sha256(&second_half));
    open = read.unsplit(write);
    assert_eq!(serial_of(&open), vec![HUB_SERIAL as u8]);
}

#[tokio::test]
async fn shutdown_closes_listeners_and_cuts_connections_after_the_drain_time() {
    let (echo, _) = echo_server().await;
    let lab = Lab::start(echo, Options::default()).await;
    let outbound = lab.outbound();
    let mut client = TcpStream::connect(outbound).await.expect("connect");
    client.write_all(b"x").await.expect("write");
    let mut byte = [0u8; 1];
    client.read_exact(&mut byte).await.expect("echo");
    let log = lab.clinic.access_log();
    let Lab { clinic, .. } = lab;

    clinic.shutdown_within(Duration::from_millis(200)).await;
    assert!(closed_by_peer(&mut client).await, "cut");
    let record = log.recent().pop().expect("record of the cut connection");
    assert_eq!(record.result.to_string(), "error: cut by daemon shutdown");
    assert_eq!((record.bytes_in, record.bytes_out), (1, 1));
    assert!(
        TcpStream::connect(outbound).await.is_err(),
        "listener closed"
    );
}

#[tokio::test]
async fn bind_failure_names_the_service_and_address() {
    let taken = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = taken.local_addr().expect("addr");
    let dir = tempdir();
    let ca = Ca::new("renkei proxy test CA");
    let tls = write_box(dir.path(), "box", &ca.issue(SERVER_NAME, 1), &ca.pem, None);
    let store = Arc::new(CredentialStore::open(tls).expect("TLS"));
    let mut config = service("busy", Direction::Inbound, "127.0.0.1:9".to_string());
    config.listen = addr;
    let err = match Services::start(&[config], None, store, None).await {
        Ok(_) => panic!("bound an address in use"),
        Err(err) => err,
    };
    assert!(matches!(err, ProxyError::Bind { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("busy") && text.contains(&addr.to_string()),
        "{text}"
    );
}

/// A profile client that offers TLS 1.2 only, as an old peer would.
fn tls12_only_client(ca: &Ca, leaf: &tls_common::Leaf) -> Arc<ClientConfig> {
    profile_client(ca, leaf, &[&rustls::version::TLS12])
}

/// A profile client presenting `leaf` whatever its issuer (renkei's own credential store
/// refuses a certificate that does not chain to its CA), trusting `ca`.
fn profile_client(
    ca: &Ca,
    leaf: &tls_common::Leaf,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let config = ClientConfig::builder_with_provider(profile::provider())
        .with_protocol_versions(versions)
        .expect("versions")
        .with_root_certificates(ca.roots())
        .with_client_auth_cert(
            vec![CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).expect("cert")],
            PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("key"),
        )
        .expect("client cert");
    Arc::new(config)
}

#[tokio::test]
async fn net2_log1_the_service_min_tls_decides_whether_tls12_is_served_and_it_is_logged() {
    let (echo, _) = echo_server().await;
    let lab = Lab::start(echo, Options::default()).await;
    let client = tls12_only_client(&lab.ca, &lab.ca.issue(CLIENT_NAME, 0x55));
    if let Ok(mut tls) = lab.tls_client_with(client).await {
        assert!(closed_by_peer(&mut tls).await, "closed by the box");
    }
    let refused = Lab::record(&lab.hub, |r| r.service == INBOUND).await;
    assert!(
        refused
            .result
            .to_string()
            .starts_with("refused: TLS handshake failed"),
        "{}",
        refused.result
    );

    let options = Options {
        inbound_min_tls: MinTls::Tls12,
        ..Options::default()
    };
    let lab = Lab::start(echo, options).await;
    let client = tls12_only_client(&lab.ca, &lab.ca.issue(CLIENT_NAME, 0x56));
    let tls = lab
        .tls_client_with(client)
        .await
        .expect("TLS 1.2 handshake");
    assert_eq!(round_trip(tls, b"old peer").await, b"old peer");
    let record = Lab::record(&lab.hub, |r| r.service == INBOUND).await;
    assert_eq!(record.result.to_string(), "ok");
    assert_eq!(record.tls_version.as_deref(), Some("TLSv1_2"));
    let suite = record.tls_suite.unwrap_or_default();
    assert!(
        suite.starts_with("TLS_ECDHE_ECDSA_WITH_AES_")
            && (suite.ends_with("_GCM_SHA256") || suite.ends_with("_GCM_SHA384")),
        "{suite}"
    );
}

#[tokio::test]
async fn log1_unreachable_target_is_logged_as_an_error_and_the_client_is_closed() {
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let nowhere = closed.local_addr().expect("addr");
    drop(closed);
    let lab = Lab::start(nowhere, Options::default()).await;

    let mut client = TcpStream::connect(lab.outbound()).await.expect("connect");
    let _ = client.write_all(b"anyone?").await;
    assert!(closed_by_peer(&mut client).await, "closed");
    let record = Lab::record(&lab.hub, |r| r.service == INBOUND).await;
    assert!(
        record
            .result
            .to_string()
            .starts_with(&format!("error: connect to {nowhere}")),
        "{}",
        record.result
    );
    assert_eq!(record.peer_identity.as_deref(), Some(CLIENT_NAME));
    wait_until("an error counted", || {
        lab.hub.snapshot().services[0].errors == 1
    })
    .await;
}

#[tokio::test]
async fn a_reset_at_the_target_reaches_the_client_as_a_reset_not_a_clean_eof() {
    // A LAN server that sends part of an answer and then aborts (RST).
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let target = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut request = [0u8; 5];
            if stream.read_exact(&mut request).await.is_ok() {
                let _ = stream.write_all(b"partial answ").await;
                let _ = stream.set_zero_linger();
            }
            drop(stream);
        }
    });
    let lab = Lab::start(target, Options::default()).await;

    let mut client = TcpStream::connect(lab.outbound()).await.expect("connect");
    client.write_all(b"hello").await.expect("write");
    let mut got = Vec::new();
    let read = tokio::time::timeout(WAIT, client.read_to_end(&mut got))
        .await
        .expect("outcome in time");
    assert!(read.is_err(), "truncated stream ended cleanly: {got:?}");

    let inbound = Lab::record(&lab.hub, |r| r.service == INBOUND).await;
    assert!(
        inbound
            .result
            .to_string()
            .starts_with("error: target -> peer"),
        "{}",
        inbound.result
    );
    let outbound = Lab::record(&lab.clinic, |r| r.service == OUTBOUND).await;
    assert!(
        outbound
            .result
            .to_string()
            .starts_with("error: target -> client"),
        "{}",
        outbound.result
    );
}
