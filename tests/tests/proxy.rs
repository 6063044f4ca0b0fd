//! The mutual-TLS proxy in the namespace lab (NET-1..5, NET-7, LOG-1, AVL-3): the demo chain end
//! to end, independent TLS stacks (`openssl s_client`, `openssl s_server`, testssl.sh, sslscan)
//! against renkei's services, certificate hot reload, the connection limits and the bounded LAN
//! queue. Every daemon is the real `renkei` binary; every certificate comes from the lab's real
//! operator CA (or a deliberately wrong one); no TLS here is renkei talking to itself except in
//! the demo chain.

use std::path::{Path, PathBuf};
use std::time::Duration;

use renkei::config::{Config, Direction, MinTls};
use renkei_lab::boxconfig::{service, service_mut, socket};
use renkei_lab::chain::{
    peer_state, records, result, start_chain, viewer_connect, wait_for_service,
};
use renkei_lab::lab::{LabCarrier, Peer, DOCUMENT_SERVER_ADDRESS, SERVICE_PORT};
use renkei_lab::operator::{Operator, MANAGEMENT_PORT};
use renkei_lab::pki::LeafFiles;
use renkei_lab::tlstools::{run_bounded, DocumentServer, Finished, DOCUMENT_HEADER};
use renkei_lab::{require_root, wait_until, Daemon, Lab, Node};
use serde_json::Value;

/// Longest one openssl client run may take.
const OPENSSL_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a record may take to appear in the status document after its connection ended.
const RECORD_TIMEOUT: Duration = Duration::from_secs(15);
/// The second inbound service of the hospital, for the `min_tls = "1.2"` cases.
const TLS12_PORT: u16 = 8444;
/// What s_client sends: a request for a small document.
const SMALL_REQUEST: &str = "GET 16 7\n";

/// Follows one daemon's access-log records in order (the ring holds 100; tests stay below).
struct RecordCursor<'a> {
    daemon: &'a Daemon,
    seen: usize,
}

impl<'a> RecordCursor<'a> {
    fn new(daemon: &'a Daemon) -> Self {
        let seen = records(daemon).len();
        RecordCursor { daemon, seen }
    }

    /// The next record in order, waiting for it.
    fn next(&mut self) -> Value {
        let all = wait_until(RECORD_TIMEOUT, "the next access-log record", || {
            let all = records(self.daemon);
            (all.len() > self.seen).then_some(all)
        })
        .expect("access-log record");
        assert!(
            all.len() < 100,
            "the ring is full; the cursor cannot follow"
        );
        self.seen += 1;
        all[self.seen - 1].clone()
    }
}

fn path(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// `openssl s_client` inside `from`'s namespace against `addr`, verifying the server as
/// `server_name` with the lab CA, with `client` as client certificate (if any) and `extra`
/// options. Sends [`SMALL_REQUEST`] after the handshake and reads until the server closes.
fn s_client(
    lab: &Lab,
    from: Node,
    addr: &str,
    server_name: &str,
    client: Option<&LeafFiles>,
    extra: &[&str],
) -> Finished {
    let ca = path(&lab.pki_dir().join("operator-ca.crt"));
    let mut args = vec![
        "s_client",
        "-connect",
        addr,
        "-CAfile",
        &ca,
        "-verify_return_error",
        "-verify_hostname",
        server_name,
        "-servername",
        server_name,
        "-ign_eof",
    ];
    let (cert, key);
    if let Some(files) = client {
        cert = path(&files.cert);
        key = path(&files.key);
        args.extend(["-cert", &cert, "-key", &key]);
    }
    args.extend(extra);
    run_bounded(
        lab.ns(from),
        "openssl",
        &args,
        SMALL_REQUEST.as_bytes(),
        OPENSSL_TIMEOUT,
    )
    .expect("openssl s_client")
}

/// The lab CA's files for the openssl CLI.
fn openssl_ca(lab: &Lab) -> (PathBuf, PathBuf) {
    let dir = lab.pki_dir();
    (dir.join("operator-ca.crt"), dir.join("operator-ca.key"))
}

/// A client certificate for `name` made by the openssl CLI: a fresh key (`newkey`, e.g.
/// `rsa:1024` or `ec`), signed by the lab CA with digest `digest` (e.g. `-sha1`).
fn openssl_client_cert(
    lab: &Lab,
    stem: &str,
    name: &str,
    newkey: &[&str],
    digest: &str,
) -> LeafFiles {
    let dir = lab.pki_dir().join("clients");
    std::fs::create_dir_all(&dir).expect("clients dir");
    let files = LeafFiles {
        cert: dir.join(format!("{stem}.crt")),
        key: dir.join(format!("{stem}.key")),
    };
    let csr = dir.join(format!("{stem}.csr"));
    let ext = dir.join(format!("{stem}.ext"));
    std::fs::write(
        &ext,
        format!(
            "subjectAltName=DNS:{name}\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=critical,digitalSignature\n"
        ),
    )
    .expect("ext file");
    let subject = format!("/CN={name}");
    let mut req = vec!["req", "-new", "-nodes"];
    req.extend(newkey);
    req.extend(["-keyout", files.key.to_str().unwrap_or_default()]);
    let req_tail = ["-subj".to_string(), subject, "-out".to_string(), path(&csr)];
    let mut command = std::process::Command::new("openssl");
    command.args(&req).args(&req_tail);
    renkei_lab::netns::run(&mut command).expect("openssl req");
    let (ca_cert, ca_key) = openssl_ca(lab);
    let serial = lab.ca.next_serial().to_string();
    renkei_lab::netns::run(std::process::Command::new("openssl").args([
        "x509",
        "-req",
        "-in",
        &path(&csr),
        "-CA",
        &path(&ca_cert),
        "-CAkey",
        &path(&ca_key),
        digest,
        "-set_serial",
        &serial,
        "-days",
        "30",
        "-extfile",
        &path(&ext),
        "-out",
        &path(&files.cert),
    ]))
    .expect("openssl x509 -req");
    files
}

/// The hospital with both inbound services (1.3-only on 8443, `min_tls = "1.2"` on 8444) and
/// `edit` applied to its config; a document server on its LAN.
fn hospital_with_inbound(lab: &Lab, edit: impl FnOnce(&mut Config)) -> (Daemon, DocumentServer) {
    let documents = DocumentServer::start(lab.lan_ns(Node::Hospital), DOCUMENT_SERVER_ADDRESS)
        .expect("document server");
    let mut config = lab.full(Node::Hospital);
    let mut tls12 = service(
        "documents-tls12",
        Direction::Inbound,
        socket(&format!(
            "{}:{TLS12_PORT}",
            lab.link_address(Node::Hospital)
        )),
        DOCUMENT_SERVER_ADDRESS,
        Peer::Allowed(Node::Hub.tls_name()),
    );
    tls12.min_tls = MinTls::Tls12;
    config.services.push(tls12);
    edit(&mut config);
    let hospital = lab.start(Node::Hospital, &config).expect("hospital");
    wait_for_service(&hospital, "documents");
    wait_for_service(&hospital, "documents-tls12");
    (hospital, documents)
}

/// One s_client case against the hospital and what must come of it.
struct Case<'a> {
    what: &'a str,
    port: u16,
    client: Option<&'a LeafFiles>,
    extra: &'a [&'a str],
}

/// Runs a case that must be accepted: the document arrives, the record is `ok`; returns the
/// s_client output and the record.
fn accepted(lab: &Lab, cursor: &mut RecordCursor, case: &Case) -> (String, Value) {
    let addr = format!("{}:{}", lab.link_address(Node::Hospital), case.port);
    let run = s_client(
        lab,
        Node::Hospital,
        &addr,
        Node::Hospital.tls_name(),
        case.client,
        case.extra,
    );
    let record = cursor.next();
    assert!(
        run.output.contains(&format!("{DOCUMENT_HEADER} 16")),
        "{}: the document did not arrive:\n{}\nrecord {record:#}",
        case.what,
        run.output
    );
    assert_eq!(result(&record), "ok", "{}: {record:#}", case.what);
    (run.output, record)
}

/// Runs a case that must be refused by the hospital: no document byte arrives, and the
/// hospital's record says `refused:` with `reason` in it (which also proves the client's
/// hello reached the server, so the refusal is the server's).
fn refused(lab: &Lab, cursor: &mut RecordCursor, case: &Case, reason: &str) -> Value {
    let addr = format!("{}:{}", lab.link_address(Node::Hospital), case.port);
    let run = s_client(
        lab,
        Node::Hospital,
        &addr,
        Node::Hospital.tls_name(),
        case.client,
        case.extra,
    );
    let record = cursor.next();
    assert!(
        !run.output.contains(DOCUMENT_HEADER),
        "{}: a document arrived although the connection must be refused:\n{}",
        case.what,
        run.output
    );
    let text = result(&record);
    assert!(
        text.starts_with("refused:") && text.contains(reason),
        "{}: expected a refusal with {reason:?}, got {record:#}\ns_client said:\n{}",
        case.what,
        run.output
    );
    record
}

#[test]
fn net2_net3_net4_net5_inbound_service_against_openssl_s_client() {
    require_root!();
    inbound_service_against_openssl_s_client(LabCarrier::WireGuard);
}

#[test]
fn net2_net3_net4_net5_net9_inbound_service_against_openssl_s_client_on_a_closed_network() {
    require_root!();
    inbound_service_against_openssl_s_client(LabCarrier::Closed);
}

#[test]
fn net9_net10_net2_net3_net4_net5_inbound_service_against_openssl_s_client_over_ipsec() {
    require_root!();
    inbound_service_against_openssl_s_client(LabCarrier::Ipsec);
}

/// openssl s_client against the hospital's inbound services on its link address: every suite
/// and group of the profile is served, every version, suite, group and client certificate
/// outside it is refused by the box and logged, and nothing refused reaches the LAN.
fn inbound_service_against_openssl_s_client(carrier: LabCarrier) {
    let lab = Lab::with_carrier(carrier).expect("lab");
    let clients = lab.pki_dir().join("clients");
    let hub_files = LeafFiles {
        cert: lab.tls_dir(Node::Hub).join("box.crt"),
        key: lab.tls_dir(Node::Hub).join("box.key"),
    };
    let hub = Node::Hub.tls_name();
    // NET-4: a second CA's certificate for the allowed name; a revoked one; NET-5: expired,
    // not yet valid, SHA-1 signed, RSA 1024; and the clinic's own certificate, valid but not on
    // the hospital's allowlist.
    let other_ca = renkei_lab::pki::Ca::new("some other CA").expect("other CA");
    let foreign = other_ca
        .issue(hub)
        .and_then(|l| l.write(&clients, "foreign"))
        .expect("foreign cert");
    let revoked_leaf = lab.ca.issue(hub).expect("revoked cert");
    let revoked = revoked_leaf.write(&clients, "revoked").expect("write");
    let expired = lab
        .ca
        .issue_with(hub, lab.ca.next_serial(), |p| {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        })
        .and_then(|l| l.write(&clients, "expired"))
        .expect("expired cert");
    let future = lab
        .ca
        .issue_with(hub, lab.ca.next_serial(), |p| {
            p.not_before = rcgen::date_time_ymd(2090, 1, 1);
            p.not_after = rcgen::date_time_ymd(2091, 1, 1);
        })
        .and_then(|l| l.write(&clients, "future"))
        .expect("future cert");
    let sha1 = openssl_client_cert(
        &lab,
        "sha1",
        hub,
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "-sha1",
    );
    let rsa1024 = openssl_client_cert(&lab, "rsa1024", hub, &["-newkey", "rsa:1024"], "-sha256");
    let clinic_files = LeafFiles {
        cert: lab.tls_dir(Node::Clinic).join("box.crt"),
        key: lab.tls_dir(Node::Clinic).join("box.key"),
    };
    std::fs::write(
        lab.tls_dir(Node::Hospital).join("operator-ca.crl"),
        lab.ca.crl(&[revoked_leaf.serial]).expect("CRL"),
    )
    .expect("write CRL");

    let (hospital, documents) = hospital_with_inbound(&lab, |config| {
        if let Some(tls) = &mut config.tls {
            tls.crl_file = Some(PathBuf::from("tls/operator-ca.crl"));
        }
    });
    let mut cursor = RecordCursor::new(&hospital);
    // Weak things must reach the server to be refused there: lower openssl's own floor.
    const WEAK: &str = "DEFAULT:@SECLEVEL=0";

    // Allowed: every TLS 1.3 suite with every group, on the 1.3-only service.
    for suite in ["TLS_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256"] {
        for (group, openssl_name) in [("P-256", "prime256v1"), ("P-384", "secp384r1")] {
            let what = format!("TLS 1.3 {suite} {group}");
            let (output, record) = accepted(
                &lab,
                &mut cursor,
                &Case {
                    what: &what,
                    port: SERVICE_PORT,
                    client: Some(&hub_files),
                    extra: &["-tls1_3", "-ciphersuites", suite, "-groups", group],
                },
            );
            assert!(
                output.contains(&format!("New, TLSv1.3, Cipher is {suite}")),
                "{what}:\n{output}"
            );
            assert!(
                output.contains(&format!("Server Temp Key: ECDH, {openssl_name}")),
                "{what}:\n{output}"
            );
            assert_eq!(record["tls_version"], "TLSv1_3", "{record:#}");
            assert_eq!(
                record["tls_suite"],
                format!("TLS13_{}", suite.trim_start_matches("TLS_")),
                "{record:#}"
            );
            assert_eq!(record["peer_identity"], hub, "{record:#}");
            assert_eq!(record["bytes_in"], SMALL_REQUEST.len() as u64, "{record:#}");
            assert_eq!(
                record["bytes_out"],
                (format!("{DOCUMENT_HEADER} 16\n").len() + 16) as u64,
                "{record:#}"
            );
        }
    }
    // Allowed on the min_tls = "1.2" service: the ECDSA GCM suites (the box key is ECDSA, so
    // the ECDHE-RSA ones cannot be negotiated with it), and TLS 1.3 still. (openssl refuses
    // TLS 1.2 with a P-256 certificate unless P-256 is among its groups: "wrong curve".) With
    // P-384 offered, openssl signs its CertificateVerify with ECDSA+SHA-384 on its P-256 key,
    // which TLS 1.2 allows: this case once failed (profile.rs pinned ECDSA to its curve's hash).
    for (suite, group) in [
        ("ECDHE-ECDSA-AES256-GCM-SHA384", "P-256"),
        ("ECDHE-ECDSA-AES128-GCM-SHA256", "P-384:P-256"),
    ] {
        let what = format!("TLS 1.2 {suite} {group}");
        let (output, record) = accepted(
            &lab,
            &mut cursor,
            &Case {
                what: &what,
                port: TLS12_PORT,
                client: Some(&hub_files),
                extra: &["-tls1_2", "-cipher", suite, "-groups", group],
            },
        );
        assert!(
            output.contains(&format!("New, TLSv1.2, Cipher is {suite}")),
            "{what}:\n{output}"
        );
        assert_eq!(record["tls_version"], "TLSv1_2", "{record:#}");
    }
    accepted(
        &lab,
        &mut cursor,
        &Case {
            what: "TLS 1.3 on the 1.2 service",
            port: TLS12_PORT,
            client: Some(&hub_files),
            extra: &[],
        },
    );

    // NET-2: versions below the service's floor.
    for (version, port) in [
        ("-tls1", SERVICE_PORT),
        ("-tls1_1", SERVICE_PORT),
        ("-tls1_2", SERVICE_PORT),
        ("-tls1", TLS12_PORT),
        ("-tls1_1", TLS12_PORT),
    ] {
        refused(
            &lab,
            &mut cursor,
            &Case {
                what: &format!("{version} on port {port}"),
                port,
                client: Some(&hub_files),
                extra: &[version, "-cipher", WEAK],
            },
            "TLS handshake failed",
        );
    }
    // NET-3: suites outside the profile.
    for suite in [
        "TLS_CHACHA20_POLY1305_SHA256",
        "TLS_AES_128_CCM_SHA256",
        "TLS_AES_128_CCM_8_SHA256",
    ] {
        refused(
            &lab,
            &mut cursor,
            &Case {
                what: suite,
                port: SERVICE_PORT,
                client: Some(&hub_files),
                extra: &["-tls1_3", "-ciphersuites", suite],
            },
            "TLS handshake failed",
        );
    }
    for suite in [
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "ECDHE-ECDSA-AES128-SHA256",
        "ECDHE-ECDSA-AES256-SHA",
        "ECDHE-ECDSA-AES128-CCM",
        "AES128-GCM-SHA256",
        "AES256-GCM-SHA384",
        "AES128-SHA",
        "DHE-RSA-AES128-GCM-SHA256",
    ] {
        refused(
            &lab,
            &mut cursor,
            &Case {
                what: suite,
                port: TLS12_PORT,
                client: Some(&hub_files),
                extra: &["-tls1_2", "-cipher", &format!("{suite}:@SECLEVEL=0")],
            },
            "TLS handshake failed",
        );
    }
    // NET-3: groups outside the profile, in both versions.
    for group in ["X25519", "X448", "ffdhe2048"] {
        refused(
            &lab,
            &mut cursor,
            &Case {
                what: group,
                port: SERVICE_PORT,
                client: Some(&hub_files),
                extra: &["-tls1_3", "-groups", group],
            },
            "TLS handshake failed",
        );
    }
    refused(
        &lab,
        &mut cursor,
        &Case {
            what: "TLS 1.2 with X25519",
            port: TLS12_PORT,
            client: Some(&hub_files),
            extra: &["-tls1_2", "-groups", "X25519"],
        },
        "TLS handshake failed",
    );

    // NET-4 and NET-5: client certificates.
    for (what, client, version) in [
        ("no client certificate", None, "-tls1_3"),
        ("no client certificate (1.2)", None, "-tls1_2"),
        ("another CA", Some(&foreign), "-tls1_3"),
        ("revoked (CRL)", Some(&revoked), "-tls1_3"),
        ("revoked (CRL, 1.2)", Some(&revoked), "-tls1_2"),
        ("expired", Some(&expired), "-tls1_3"),
        ("not yet valid", Some(&future), "-tls1_3"),
        ("SHA-1 signature", Some(&sha1), "-tls1_3"),
        ("RSA 1024", Some(&rsa1024), "-tls1_3"),
    ] {
        let record = refused(
            &lab,
            &mut cursor,
            &Case {
                what,
                port: TLS12_PORT,
                client,
                extra: &[version, "-cipher", WEAK],
            },
            "TLS handshake failed",
        );
        assert!(record["peer_identity"].is_null(), "{what}: {record:#}");
    }
    let record = refused(
        &lab,
        &mut cursor,
        &Case {
            what: "identity not on the allowlist",
            port: SERVICE_PORT,
            client: Some(&clinic_files),
            extra: &[],
        },
        "\"clinic.renkei.example\" is not in allowed_identities",
    );
    assert_eq!(
        record["peer_identity"], "clinic.renkei.example",
        "{record:#}"
    );
    assert_eq!(record["tls_version"], "TLSv1_3", "{record:#}");

    // Nothing refused ever reached the document server.
    assert_eq!(documents.served(), 7, "documents served");
}

fn assert_chain_record(
    record: &Value,
    service: &str,
    peer_ip: &str,
    identity: &str,
    bytes_in: u64,
    bytes_out: u64,
) {
    assert_eq!(record["service"], service, "{record:#}");
    assert_eq!(result(record), "ok", "{record:#}");
    assert_eq!(record["tls_version"], "TLSv1_3", "{record:#}");
    let suite = record["tls_suite"].as_str().unwrap_or("");
    assert!(
        suite.starts_with("TLS13_AES_") && suite.contains("_GCM_"),
        "{record:#}"
    );
    assert_eq!(record["peer_identity"], identity, "{record:#}");
    let addr = record["peer_addr"].as_str().unwrap_or("");
    assert!(addr.starts_with(&format!("{peer_ip}:")), "{record:#}");
    assert_eq!(record["bytes_in"], bytes_in, "{record:#}");
    assert_eq!(record["bytes_out"], bytes_out, "{record:#}");
    assert!(
        record["time"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{record:#}"
    );
    assert!(record["duration_ms"].as_u64().is_some(), "{record:#}");
}

#[test]
fn net1_net7_log1_clinic_fetches_50_mib_from_the_hospital_through_the_chain() {
    require_root!();
    clinic_fetches_50_mib_from_the_hospital_through_the_chain(LabCarrier::WireGuard);
}

/// The 50 MiB chain on the other data path: TUN offloads off on every box.
#[test]
fn net1_net7_log1_clinic_fetches_50_mib_from_the_hospital_through_the_chain_with_tun_offloads_off()
{
    require_root!();
    fetch_50_mib_through_the_chain_in(
        Lab::with_carrier(LabCarrier::WireGuard)
            .expect("lab")
            .with_tun_offloads(false),
    );
}

#[test]
fn net1_net9_log1_clinic_fetches_50_mib_from_the_hospital_through_the_chain_on_a_closed_network() {
    require_root!();
    clinic_fetches_50_mib_from_the_hospital_through_the_chain(LabCarrier::Closed);
}

#[test]
fn net9_net10_net1_net7_log1_clinic_fetches_50_mib_from_the_hospital_through_the_chain_over_ipsec()
{
    require_root!();
    clinic_fetches_50_mib_from_the_hospital_through_the_chain(LabCarrier::Ipsec);
}

/// The demo chain's document fetch, 50 MiB, checked byte for byte and in every box's access log;
/// on WireGuard the clinic's on-demand tunnel comes up for it and idles out after (NET-7), on a
/// closed network there is nothing to bring up.
fn clinic_fetches_50_mib_from_the_hospital_through_the_chain(carrier: LabCarrier) {
    fetch_50_mib_through_the_chain_in(Lab::with_carrier(carrier).expect("lab"));
}

/// [`clinic_fetches_50_mib_from_the_hospital_through_the_chain`] in a lab made by the caller.
fn fetch_50_mib_through_the_chain_in(lab: Lab) {
    const LEN: u64 = 50 << 20;
    let carrier = lab.carrier;
    let chain = start_chain(&lab);
    let dc = lab.dc_link_name();
    // NET-7: nothing asked for the tunnel yet (a closed network has none to ask for).
    assert_eq!(peer_state(&chain.clinic, dc), "idle");
    let mut records: Vec<RecordCursor> = [&chain.clinic, &chain.hub, &chain.hospital]
        .into_iter()
        .map(RecordCursor::new)
        .collect();

    let started = std::time::Instant::now();
    let fetched = renkei_lab::tlstools::fetch_document(viewer_connect(&lab), LEN, 42, None, |_| {})
        .expect("fetch through the chain");
    let took = started.elapsed();
    let closed = std::time::Instant::now();
    assert_eq!(fetched.len, LEN);
    assert_eq!(
        fetched.sha256,
        renkei_lab::tlstools::pattern_sha256(LEN, 42),
        "checksum of the document differs"
    );
    eprintln!(
        "50 MiB through clinic -> hub -> hospital on {} in {took:?} ({:.1} MiB/s)",
        carrier.name(),
        50.0 / took.as_secs_f64()
    );

    // LOG-1: one record per leg, on every box.
    let (up, down) = (fetched.request_bytes, fetched.header_bytes + LEN);
    let clinic_record = records[0].next();
    assert_chain_record(
        &clinic_record,
        "documents",
        "198.18.20.2",
        Node::Hub.tls_name(),
        up,
        down,
    );
    let hub_first = records[1].next();
    let hub_second = records[1].next();
    let (portal, relay) = if hub_first["service"] == "portal" {
        (hub_first, hub_second)
    } else {
        (hub_second, hub_first)
    };
    assert_chain_record(
        &portal,
        "portal",
        lab.link_address(Node::Clinic),
        Node::Clinic.tls_name(),
        up,
        down,
    );
    assert_chain_record(
        &relay,
        "hospital-documents",
        "127.0.0.1",
        Node::Hospital.tls_name(),
        up,
        down,
    );
    let hospital_record = records[2].next();
    assert_chain_record(
        &hospital_record,
        "documents",
        lab.link_address(Node::Hub),
        Node::Hub.tls_name(),
        up,
        down,
    );

    assert_eq!(chain.documents.served(), 1);
    if carrier == LabCarrier::Closed {
        assert_eq!(
            peer_state(&chain.clinic, dc),
            "idle",
            "nothing was brought up"
        );
        return;
    }
    // NET-7: the clinic's tunnel idles out after idle_timeout_secs = 10, not before.
    assert_eq!(peer_state(&chain.clinic, dc), "up");
    wait_until(
        Duration::from_secs(30),
        "the clinic's tunnel to idle out",
        || (peer_state(&chain.clinic, dc) == "idle").then_some(()),
    )
    .expect("clinic idle");
    let idle_after = closed.elapsed();
    assert!(
        idle_after >= Duration::from_secs(8),
        "the tunnel idled out {idle_after:?} after the connection closed"
    );
}

#[test]
fn net4_limits_max_connections_and_handshake_timeout_on_an_inbound_service() {
    require_root!();
    use std::io::Write;
    let lab = Lab::new().expect("lab");
    let (hospital, documents) = hospital_with_inbound(&lab, |config| {
        let documents = service_mut(config, "documents");
        documents.max_connections = 2;
        documents.handshake_timeout_secs = 2;
    });
    let mut cursor = RecordCursor::new(&hospital);
    let addr = format!("{}:{SERVICE_PORT}", Node::Hospital.tunnel_address());
    let hub_files = LeafFiles {
        cert: lab.tls_dir(Node::Hub).join("box.crt"),
        key: lab.tls_dir(Node::Hub).join("box.key"),
    };
    let ca = path(&lab.pki_dir().join("operator-ca.crt"));
    let (cert, key) = (path(&hub_files.cert), path(&hub_files.key));
    let holding_args = [
        "s_client", "-connect", &addr, "-CAfile", &ca, "-cert", &cert, "-key", &key, "-quiet",
    ];

    // Two connections held open at the document server fill the limit.
    documents.hold();
    let mut held = Vec::new();
    for n in 1..=2u64 {
        let mut client = renkei_lab::tlstools::Background::start(
            lab.ns(Node::Hospital),
            "openssl",
            &holding_args,
            true,
        )
        .expect("s_client");
        client.write_stdin(b"GET 1 1 0\n").expect("request");
        wait_until(Duration::from_secs(15), "the held request", || {
            (documents.served() == n).then_some(())
        })
        .unwrap_or_else(|e| panic!("{e}: {}", client.output()));
        held.push(client);
    }
    let third = s_client(
        &lab,
        Node::Hospital,
        &addr,
        Node::Hospital.tls_name(),
        Some(&hub_files),
        &[],
    );
    let record = cursor.next();
    assert_eq!(
        result(&record),
        "refused: max_connections (2) reached",
        "{record:#}"
    );
    assert!(!third.output.contains(DOCUMENT_HEADER), "{}", third.output);
    let status = hospital.status().expect("status");
    let service = &status["proxy"]["services"][0];
    assert_eq!(service["active"], 2, "{service:#}");
    assert_eq!(service["refused"], 1, "{service:#}");

    // Released, both complete; a new connection is served again.
    documents.release();
    for _ in 0..2 {
        assert_eq!(result(&cursor.next()), "ok");
    }
    drop(held);
    accepted(
        &lab,
        &mut cursor,
        &Case {
            what: "after the limit freed",
            port: SERVICE_PORT,
            client: Some(&hub_files),
            extra: &[],
        },
    );

    // A client that never finishes its handshake is dropped after handshake_timeout_secs = 2:
    // one that sends nothing, one that sends half a TLS record.
    for partial in [&b""[..], &b"\x16\x03\x01\x02\x00\x01"[..]] {
        let mut stream = lab
            .ns(Node::Hospital)
            .tcp_connect(&addr, Duration::from_secs(5))
            .expect("connect");
        stream.write_all(partial).expect("write");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let started = std::time::Instant::now();
        let mut buf = [0u8; 1024];
        // The server sends nothing and closes (or resets) when the handshake time is up; a
        // read timeout here would mean it never did.
        let ended = loop {
            match renkei_lab::sockio::read_past_signals(&mut stream, &mut buf) {
                Ok(0) => break "end of stream".to_string(),
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    panic!("still open after {:?}", started.elapsed())
                }
                Err(e) => break e.to_string(),
            }
        };
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(1500) && waited <= Duration::from_secs(5),
            "dropped after {waited:?} ({ended}), handshake_timeout_secs = 2"
        );
        let record = cursor.next();
        assert_eq!(
            result(&record),
            "refused: TLS handshake not completed within 2 s",
            "{record:#}"
        );
    }
}

/// Suites of the profile, in the names openssl (and sslscan) and IANA (testssl) use.
const PROFILE_SUITES: &[&str] = &[
    "TLS_AES_256_GCM_SHA384",
    "TLS_AES_128_GCM_SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
];
/// What a scan of a service must find: the two TLS 1.3 suites, and with TLS 1.2 the two ECDSA
/// ones (the box key is ECDSA).
fn expected_suites(tls12: bool) -> Vec<&'static str> {
    let mut suites = vec!["TLS_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256"];
    if tls12 {
        suites.extend([
            "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        ]);
    }
    suites
}

/// testssl.sh's protocol, cipher-per-protocol and forward-secrecy checks from `from`, from its
/// JSON.
fn testssl(lab: &Lab, from: Node, addr: &str, tls12: bool) {
    let json = lab
        .dir
        .join(format!("testssl-{}.json", addr.replace([':', '.'], "-")));
    let run = run_bounded(
        lab.ns(from),
        "testssl",
        &[
            "--quiet",
            "--color",
            "0",
            "--warnings",
            "off",
            "--openssl",
            "/usr/bin/openssl",
            "-p",
            "-E",
            "-f",
            "--jsonfile",
            &path(&json),
            addr,
        ],
        b"",
        Duration::from_secs(150),
    )
    .expect("testssl");
    let text = std::fs::read_to_string(&json)
        .unwrap_or_else(|e| panic!("testssl wrote no JSON ({e}):\n{}", run.output));
    let findings: Vec<Value> = serde_json::from_str(&text).expect("testssl JSON");
    let finding = |id: &str| -> String {
        findings
            .iter()
            .find(|f| f["id"] == id)
            .and_then(|f| f["finding"].as_str())
            .unwrap_or_else(|| panic!("testssl reported no {id}:\n{}", run.output))
            .to_string()
    };
    for id in ["SSLv2", "SSLv3", "TLS1", "TLS1_1"] {
        assert!(
            finding(id).starts_with("not offered"),
            "{addr} {id}: {}",
            run.output
        );
    }
    assert_eq!(
        finding("TLS1_2").starts_with("offered"),
        tls12,
        "{addr} TLS1_2: {}",
        run.output
    );
    assert!(finding("TLS1_3").starts_with("offered"), "{}", run.output);
    let mut suites: Vec<String> = findings
        .iter()
        .filter(|f| f["id"].as_str().is_some_and(|id| id.starts_with("cipher-")))
        .filter_map(|f| {
            f["finding"]
                .as_str()?
                .split_whitespace()
                .last()
                .map(String::from)
        })
        .collect();
    suites.sort();
    let mut expected = expected_suites(tls12);
    expected.sort();
    assert_eq!(
        suites, expected,
        "{addr}: testssl found these suites:\n{}",
        run.output
    );
    let curves = finding("PFS_ECDHE_curves");
    let curves: Vec<&str> = curves.split_whitespace().collect();
    assert_eq!(
        curves,
        ["prime256v1", "secp384r1"],
        "{addr}: {}",
        run.output
    );
    // Nothing else testssl rates as a problem.
    for f in &findings {
        let severity = f["severity"].as_str().unwrap_or("");
        assert!(
            !matches!(severity, "LOW" | "MEDIUM" | "HIGH" | "CRITICAL"),
            "{addr}: testssl finding {f}"
        );
    }
}

/// sslscan's protocols, accepted suites (with their curves) and key exchange groups, from
/// `from`.
fn sslscan(lab: &Lab, from: Node, addr: &str, tls12: bool) {
    let run = run_bounded(
        lab.ns(from),
        "sslscan",
        &["--no-colour", addr],
        b"",
        Duration::from_secs(120),
    )
    .expect("sslscan");
    assert!(run.success(), "sslscan failed:\n{}", run.output);
    let out = &run.output;
    for version in ["SSLv2", "SSLv3", "TLSv1.0", "TLSv1.1"] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(version) && l.ends_with("disabled")),
            "{addr} {version}:\n{out}"
        );
    }
    let tls12_line = out
        .lines()
        .find(|l| l.starts_with("TLSv1.2 "))
        .unwrap_or_default();
    assert_eq!(tls12_line.ends_with("enabled"), tls12, "{addr}:\n{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("TLSv1.3") && l.ends_with("enabled")),
        "{out}"
    );
    let mut accepted = Vec::new();
    for line in out
        .lines()
        .filter(|l| l.starts_with("Accepted") || l.starts_with("Preferred"))
    {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let suite = fields.get(4).copied().unwrap_or_default();
        assert!(
            PROFILE_SUITES.contains(&suite),
            "{addr}: outside the profile: {line}"
        );
        let curve = fields.get(6).copied().unwrap_or_default();
        assert!(
            fields.get(5) == Some(&"Curve") && ["P-256", "P-384"].contains(&curve),
            "{addr}: key exchange outside the profile: {line}"
        );
        accepted.push(suite);
    }
    for suite in ["TLS_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256"] {
        assert!(
            accepted.contains(&suite),
            "{addr}: sslscan missed {suite}:\n{out}"
        );
    }
    let groups: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.contains("Server Key Exchange Group(s):"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .collect();
    assert!(!groups.is_empty(), "{addr}: no groups:\n{out}");
    for line in groups {
        assert!(
            line.contains("secp256r1") || line.contains("secp384r1"),
            "{addr}: group outside the profile: {line}"
        );
    }
}

#[test]
fn net2_net3_testssl_and_sslscan_find_nothing_outside_the_profile() {
    require_root!();
    testssl_and_sslscan_find_nothing_outside_the_profile(LabCarrier::WireGuard);
}

#[test]
fn net2_net3_net9_testssl_and_sslscan_find_nothing_outside_the_profile_on_a_closed_network() {
    require_root!();
    testssl_and_sslscan_find_nothing_outside_the_profile(LabCarrier::Closed);
}

/// testssl.sh and sslscan against the hospital's two inbound services on its link address.
fn testssl_and_sslscan_find_nothing_outside_the_profile(carrier: LabCarrier) {
    let lab = Lab::with_carrier(carrier).expect("lab");
    let (_hospital, _documents) = hospital_with_inbound(&lab, |_| {});
    let link = lab.link_address(Node::Hospital);
    for (port, tls12) in [(SERVICE_PORT, false), (TLS12_PORT, true)] {
        let addr = format!("{link}:{port}");
        testssl(&lab, Node::Hospital, &addr, tls12);
        sslscan(&lab, Node::Hospital, &addr, tls12);
    }
}

#[test]
fn net2_net3_auth2_the_management_api_offers_nothing_outside_the_profile() {
    require_root!();
    the_management_api_offers_nothing_outside_the_profile(LabCarrier::WireGuard);
}

#[test]
fn net2_net3_auth2_net9_the_management_api_offers_nothing_outside_the_profile_on_a_closed_network()
{
    require_root!();
    the_management_api_offers_nothing_outside_the_profile(LabCarrier::Closed);
}

/// The management API is a TLS server too (the operator's pushes): the same scanners, run from
/// the data centre over the link (the listener is bound to the link's device: the tunnel, or
/// the closed-network interface, so that is the only way in), find TLS 1.3 with the profile's
/// suites and groups and nothing else.
fn the_management_api_offers_nothing_outside_the_profile(carrier: LabCarrier) {
    let lab = Lab::with_carrier(carrier).expect("lab");
    let operator = Operator::new(&lab).expect("operator");
    let mut text = lab.full(Node::Hospital);
    text.management = Some(operator.management(Node::Hospital, 120, false));
    let _hub = lab
        .start(Node::Hub, &lab.full_config(Node::Hub))
        .expect("hub");
    let _hospital = lab.start(Node::Hospital, &text).expect("hospital");
    // Reachable, and answering the operator, before it is scanned.
    wait_until(Duration::from_secs(20), "the management API", || {
        operator
            .remote(&lab, Node::Hospital)
            .ok()
            .filter(|o| o.success)
    })
    .expect("the operator reaches the hospital's management API");
    let addr = format!("{}:{MANAGEMENT_PORT}", lab.link_address(Node::Hospital));
    testssl(&lab, Node::Hub, &addr, false);
    sslscan(&lab, Node::Hub, &addr, false);
}

/// The serial of the certificate the hospital's inbound service presents now, as openssl
/// s_client in the hub's namespace sees it through the tunnel.
fn hospital_serial(lab: &Lab) -> String {
    let hub_files = LeafFiles {
        cert: lab.tls_dir(Node::Hub).join("box.crt"),
        key: lab.tls_dir(Node::Hub).join("box.key"),
    };
    let addr = format!("{}:{SERVICE_PORT}", Node::Hospital.tunnel_address());
    let run = s_client(
        lab,
        Node::Hub,
        &addr,
        Node::Hospital.tls_name(),
        Some(&hub_files),
        &[],
    );
    let start = run.output.find("-----BEGIN CERTIFICATE-----");
    let end = run.output.find("-----END CERTIFICATE-----");
    let (Some(start), Some(end)) = (start, end) else {
        panic!("no server certificate in:\n{}", run.output);
    };
    let pem = format!("{}-----END CERTIFICATE-----\n", &run.output[start..end]);
    let x509 = run_bounded(
        lab.ns(Node::Hub),
        "openssl",
        &["x509", "-noout", "-serial"],
        pem.as_bytes(),
        OPENSSL_TIMEOUT,
    )
    .expect("openssl x509");
    x509.output
        .trim()
        .strip_prefix("serial=")
        .unwrap_or_else(|| panic!("openssl x509 said {}", x509.output))
        .to_string()
}

#[test]
fn net4_net5_hot_reload_new_connections_get_the_new_certificate_open_ones_complete() {
    require_root!();
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    const LEN: u64 = 32 << 20;
    const FIRST_PART: u64 = 1 << 20;
    let lab = Lab::new().expect("lab");
    let chain = start_chain(&lab);
    assert_eq!(hospital_serial(&lab), "02");

    // A long transfer through the whole chain, held by the document server after 1 MiB.
    chain.documents.hold();
    let received = Arc::new(AtomicU64::new(0));
    let stream = viewer_connect(&lab);
    let transfer = {
        let received = received.clone();
        std::thread::spawn(move || {
            renkei_lab::tlstools::fetch_document(stream, LEN, 9, Some(FIRST_PART), |n| {
                received.store(n, Ordering::Relaxed)
            })
        })
    };
    wait_until(
        Duration::from_secs(20),
        "the first part of the document",
        || (received.load(Ordering::Relaxed) >= FIRST_PART).then_some(()),
    )
    .expect("first part");

    // The operator's new certificate for the hospital lands on disk (key first, then the
    // certificate, each replaced by rename as an installer would).
    let serial = 0x4242u64;
    let leaf = lab
        .ca
        .issue_with(Node::Hospital.tls_name(), serial, |_| {})
        .expect("new certificate");
    let tls = lab.tls_dir(Node::Hospital);
    let staged = leaf.write(&lab.dir, "hospital-new").expect("stage");
    std::fs::rename(&staged.key, tls.join("box.key")).expect("replace key");
    std::fs::rename(&staged.cert, tls.join("box.crt")).expect("replace certificate");
    wait_until(
        Duration::from_secs(20),
        "new connections to get serial 4242",
        || (hospital_serial(&lab) == "4242").then_some(()),
    )
    .expect("reloaded");

    // The open transfer was not touched: it completes with the right bytes.
    chain.documents.release();
    let fetched = transfer
        .join()
        .expect("transfer thread")
        .expect("the open transfer completes");
    assert_eq!(fetched.len, LEN);
    assert_eq!(
        fetched.sha256,
        renkei_lab::tlstools::pattern_sha256(LEN, 9),
        "checksum of the document differs"
    );
    assert!(
        chain
            .hospital
            .log_text()
            .contains("TLS certificates reloaded"),
        "{}",
        chain.hospital.log_text()
    );
    let _ = (&chain.hub, &chain.clinic);
}

/// `openssl s_server` on the hub's link address, with the hub's certificate, requiring a
/// client certificate from the lab CA; `-www` answers with what it negotiated and shared.
fn s_server(lab: &Lab, extra: &[&str]) -> renkei_lab::tlstools::Background {
    let tls = lab.tls_dir(Node::Hub);
    let (cert, key, ca) = (
        path(&tls.join("box.crt")),
        path(&tls.join("box.key")),
        path(&tls.join("operator-ca.crt")),
    );
    let accept = format!("{}:{SERVICE_PORT}", lab.link_address(Node::Hub));
    let mut args = vec![
        "s_server",
        "-accept",
        &accept,
        "-cert",
        &cert,
        "-key",
        &key,
        "-CAfile",
        &ca,
        "-Verify",
        "2",
        "-verify_return_error",
        "-www",
    ];
    args.extend(extra);
    let server =
        renkei_lab::tlstools::Background::start(lab.ns(Node::Hub), "openssl", &args, false)
            .expect("s_server");
    server
        .wait_for_output("ACCEPT", Duration::from_secs(10))
        .expect("s_server listening");
    server
}

/// A viewer fetches the s_server status page through the clinic's service on `port`.
fn fetch_page(lab: &Lab, port: u16) -> String {
    use std::io::{Read, Write};
    let mut stream = lab
        .lan_ns(Node::Clinic)
        .tcp_connect(
            &format!("{}:{port}", renkei_lab::lab::LAN_SERVICE_ADDRESS),
            Duration::from_secs(15),
        )
        .expect("viewer connects");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let _ = stream.write_all(b"GET / HTTP/1.0\r\n\r\n");
    let mut page = Vec::new();
    let _ = stream.read_to_end(&mut page);
    String::from_utf8_lossy(&page).into_owned()
}

/// Signature algorithms of the profile, as openssl names them.
const PROFILE_SIGALGS: &[&str] = &[
    "ECDSA+SHA256",
    "ECDSA+SHA384",
    "ed25519",
    "RSA-PSS+SHA256",
    "RSA-PSS+SHA384",
    "RSA-PSS+SHA512",
    "RSA+SHA256",
    "RSA+SHA384",
    "RSA+SHA512",
];

/// The value list after `label` on the s_server page (`a:b:c` or a whitespace table).
fn page_list<'a>(page: &'a str, label: &str) -> Vec<&'a str> {
    let Some(start) = page.find(label) else {
        panic!("no {label:?} on the page:\n{page}");
    };
    let rest = &page[start + label.len()..];
    let lines: Vec<&str> = if label.ends_with('\n') {
        // A table: its lines up to the next `Label: value` line.
        rest.lines().take_while(|l| !l.contains(':')).collect()
    } else {
        rest.lines().take(1).collect()
    };
    lines
        .into_iter()
        .flat_map(|l| l.split(|c: char| c.is_whitespace() || c == ':'))
        .filter(|s| !s.is_empty())
        .collect()
}

#[test]
fn net2_net3_net4_renkei_client_offers_only_the_profile_to_openssl_s_server() {
    require_root!();
    renkei_client_offers_only_the_profile_to_openssl_s_server(LabCarrier::WireGuard);
}

#[test]
fn net2_net3_net4_net9_renkei_client_offers_only_the_profile_to_openssl_s_server_on_a_closed_network(
) {
    require_root!();
    renkei_client_offers_only_the_profile_to_openssl_s_server(LabCarrier::Closed);
}

#[test]
fn net9_net10_net2_net3_net4_renkei_client_offers_only_the_profile_to_openssl_s_server_over_ipsec()
{
    require_root!();
    renkei_client_offers_only_the_profile_to_openssl_s_server(LabCarrier::Ipsec);
}

/// The clinic's outbound services (1.3-only and `min_tls = "1.2"`) against openssl s_server in
/// the data centre: what renkei offers is all in the profile, and a server outside it gets no
/// handshake and no byte.
fn renkei_client_offers_only_the_profile_to_openssl_s_server(carrier: LabCarrier) {
    let lab = Lab::with_carrier(carrier).expect("lab");
    // The hub box runs no service: openssl s_server takes the portal's address. On WireGuard
    // the hub's daemon carries the tunnel; a closed network needs no daemon on the hub for the
    // clinic to reach it, and on IPsec the concentrator carries the clinic's SA, so none runs
    // there.
    let _hub = match carrier {
        LabCarrier::WireGuard => Some(lab.start(Node::Hub, &lab.config(Node::Hub)).expect("hub")),
        LabCarrier::Closed | LabCarrier::Ipsec => None,
    };
    let mut text = lab.full(Node::Clinic);
    let mut tls12 = service(
        "documents-tls12",
        Direction::Outbound,
        socket(&format!(
            "{}:{TLS12_PORT}",
            renkei_lab::lab::LAN_SERVICE_ADDRESS
        )),
        &format!("{}:{SERVICE_PORT}", lab.link_address(Node::Hub)),
        Peer::ServerName(Node::Hub.tls_name()),
    );
    tls12.min_tls = MinTls::Tls12;
    text.services.push(tls12);
    let clinic = lab.start(Node::Clinic, &text).expect("clinic");
    wait_for_service(&clinic, "documents");
    wait_for_service(&clinic, "documents-tls12");
    let mut cursor = RecordCursor::new(&clinic);

    // Handshakes that work: what renkei offered, as openssl saw it, is all in the profile,
    // and it presented its client certificate (s_server requires one).
    for (what, port, server_args, negotiated) in [
        (
            "TLS 1.3",
            SERVICE_PORT,
            &[][..],
            "New, TLSv1.3, Cipher is TLS_AES_256_GCM_SHA384",
        ),
        (
            "TLS 1.2",
            TLS12_PORT,
            &["-tls1_2"][..],
            "New, TLSv1.2, Cipher is ECDHE-ECDSA-AES256-GCM-SHA384",
        ),
    ] {
        let server = s_server(&lab, server_args);
        let page = fetch_page(&lab, port);
        let server_output = server.stop();
        assert!(
            page.contains(negotiated),
            "{what}:\n{page}\n{server_output}"
        );
        let common = page_list(&page, "Ciphers common between both SSL end points:\n");
        assert!(
            common.contains(&"TLS_AES_256_GCM_SHA384"),
            "{what}:\n{page}"
        );
        for suite in common {
            assert!(
                PROFILE_SUITES.contains(&suite),
                "{what}: renkei offered {suite}"
            );
        }
        assert_eq!(
            page_list(&page, "Supported groups:"),
            ["secp256r1", "secp384r1"],
            "{what}:\n{page}"
        );
        for sigalg in page_list(&page, "Signature Algorithms:") {
            assert!(
                PROFILE_SIGALGS.contains(&sigalg),
                "{what}: renkei offered {sigalg}"
            );
        }
        let record = cursor.next();
        assert_eq!(result(&record), "ok", "{what}: {record:#}");
        assert_eq!(record["peer_identity"], Node::Hub.tls_name(), "{record:#}");
    }

    // Servers restricted to something outside the profile: no handshake, no byte through.
    for (what, port, server_args) in [
        (
            "TLS 1.2 server, 1.3-only service",
            SERVICE_PORT,
            &["-tls1_2"][..],
        ),
        (
            "TLS 1.3 ChaCha20 only",
            SERVICE_PORT,
            &["-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256"][..],
        ),
        (
            "TLS 1.2 ECDHE-ECDSA-CHACHA20-POLY1305 only",
            TLS12_PORT,
            &["-tls1_2", "-cipher", "ECDHE-ECDSA-CHACHA20-POLY1305"][..],
        ),
        (
            "TLS 1.2 ECDHE-RSA-CHACHA20-POLY1305 only",
            TLS12_PORT,
            &["-tls1_2", "-cipher", "ECDHE-RSA-CHACHA20-POLY1305"][..],
        ),
        (
            "TLS 1.2 CBC only",
            TLS12_PORT,
            &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA256"][..],
        ),
        (
            "TLS 1.3 X25519 only",
            SERVICE_PORT,
            &["-groups", "X25519"][..],
        ),
        (
            "TLS 1.2 X25519 only",
            TLS12_PORT,
            &["-tls1_2", "-groups", "X25519"][..],
        ),
    ] {
        let server = s_server(&lab, server_args);
        let page = fetch_page(&lab, port);
        let record = cursor.next();
        let server_output = server.stop();
        assert!(page.is_empty(), "{what}: bytes came through:\n{page}");
        assert!(
            result(&record).starts_with(&format!(
                "error: TLS handshake with {}:{SERVICE_PORT} failed",
                lab.link_address(Node::Hub)
            )),
            "{what}: {record:#}\ns_server said:\n{server_output}"
        );
    }
}

/// A target on the hub's loopback that accepts and never reads.
const STALLED_TARGET: &str = "127.0.0.1:9101";

/// `ss -tnm` in `ns` for the connections matching `filter`: (Recv-Q, skmem rb) of each.
fn receive_queues(ns: &renkei_lab::Namespace, filter: &str) -> Vec<(u64, u64)> {
    let out = ns
        .command("ss")
        .args(["-tnmH", "state", "established", filter])
        .output()
        .expect("ss");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut found = Vec::new();
    let mut recv_q = None;
    for token in text.split_whitespace() {
        if recv_q.is_none() {
            recv_q = token.parse::<u64>().ok();
        }
        if let Some(skmem) = token.strip_prefix("skmem:(") {
            let rb = skmem
                .split(',')
                .find_map(|f| f.strip_prefix("rb"))
                .and_then(|v| v.parse().ok())
                .expect("skmem rb");
            found.push((recv_q.take().expect("Recv-Q before skmem"), rb));
        }
    }
    found
}

/// Under load a box's memory goes to connections, not to queues: without the fixed LAN buffer
/// the kernel grew the box's receive buffer for this one upload to over 4 MB.
#[test]
fn avl3_an_upload_into_a_stalled_service_queues_at_most_the_lan_buffer_in_the_box() {
    require_root!();
    use std::io::Write;
    let lab = Lab::new().expect("lab");
    let mut hub_config = lab.config(Node::Hub);
    hub_config.tls = Some(renkei_lab::lab::tls_config());
    hub_config.services.push(service(
        "portal",
        Direction::Inbound,
        socket(&format!("{}:{SERVICE_PORT}", Node::Hub.tunnel_address())),
        STALLED_TARGET,
        Peer::Allowed(Node::Clinic.tls_name()),
    ));
    let stalled = lab
        .ns(Node::Hub)
        .tcp_listener(STALLED_TARGET)
        .expect("stalled target");
    let (done, wait_done) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let held = stalled.accept();
        let _ = wait_done.recv();
        drop(held);
    });
    let _hub = lab.start(Node::Hub, &hub_config).expect("hub");
    let _clinic = lab
        .start(Node::Clinic, &lab.full_config(Node::Clinic))
        .expect("clinic");

    // The PC uploads until nothing moves for three seconds in a row: every queue on the way is
    // full (one blocked second could be a busy machine, not a full path).
    let service: std::net::SocketAddr =
        format!("{}:{SERVICE_PORT}", renkei_lab::lab::LAN_SERVICE_ADDRESS)
            .parse()
            .expect("address");
    let (upload, sent) = lab
        .lan_ns(Node::Clinic)
        .run_inside(move || {
            let mut pc = std::net::TcpStream::connect_timeout(&service, Duration::from_secs(10))
                .expect("connect");
            pc.set_write_timeout(Some(Duration::from_secs(1)))
                .expect("timeout");
            let chunk = vec![0x5au8; 64 * 1024];
            let started = std::time::Instant::now();
            let mut sent = 0u64;
            let mut blocked = 0;
            while blocked < 3 && started.elapsed() < Duration::from_secs(90) {
                match pc.write(&chunk) {
                    Ok(n) => {
                        sent += n as u64;
                        blocked = 0;
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        blocked += 1
                    }
                    Err(e) => panic!("upload after {sent} bytes: {e}"),
                }
            }
            (pc, sent)
        })
        .expect("upload");
    assert!(sent > 0, "nothing was uploaded");

    // The box's socket from the PC and the hub's socket to its target are LAN legs: their
    // receive buffers are the fixed one, and the stalled upload fills no more than that.
    // The kernel caps the request at rmem_max and reports twice that.
    let rmem_max = lab
        .ns(Node::Clinic)
        .command("cat")
        .arg("/proc/sys/net/core/rmem_max")
        .output()
        .expect("rmem_max");
    let rmem_max: u64 = String::from_utf8_lossy(&rmem_max.stdout)
        .trim()
        .parse()
        .expect("rmem_max value");
    let fixed = 2 * rmem_max.min(u64::from(renkei::proxy::LAN_RECEIVE_BUFFER_BYTES));
    let from_pc = receive_queues(
        lab.ns(Node::Clinic),
        &format!("( sport = :{SERVICE_PORT} )"),
    );
    assert_eq!(from_pc.len(), 1, "{from_pc:?}");
    let (queued, buffer) = from_pc[0];
    assert_eq!(buffer, fixed, "the box's receive buffer for the PC");
    assert!(
        queued > 0,
        "the stall never reached the box ({sent} bytes sent)"
    );
    assert!(queued <= fixed, "{queued} bytes queued in the box");
    let to_target = receive_queues(lab.ns(Node::Hub), "( dport = :9101 )");
    assert_eq!(to_target.len(), 1, "{to_target:?}");
    assert_eq!(
        to_target[0].1, fixed,
        "the hub's receive buffer towards its target"
    );

    drop(upload);
    let _ = done.send(());
    let _ = holder.join();
}
