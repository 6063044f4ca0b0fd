//! An outbound connection on a viewing box waits for its on-demand tunnel at most
//! `connect_timeout_secs`, then is closed with the reason in the access log (NET-7, LOG-1).

use std::time::{Duration, Instant};

use renkei_lab::{require_root, wait_until, Lab, Node};

#[test]
fn net7_log1_a_connection_waiting_for_an_unreachable_hub_is_closed_at_connect_timeout() {
    require_root!();
    let lab = Lab::new().expect("lab");
    // No hub runs: the clinic's handshake can never complete.
    let mut config = lab.full(Node::Clinic);
    config
        .tunnel
        .as_mut()
        .expect("[tunnel]")
        .policy
        .connect_timeout_secs = 3;
    let clinic = lab.start(Node::Clinic, &config).expect("clinic");

    let started = Instant::now();
    let mut viewer = lab
        .lan_ns(Node::Clinic)
        .tcp_connect("198.18.20.1:8443", Duration::from_secs(5))
        .expect("the box accepts the LAN connection");
    viewer
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    let mut buf = [0u8; 16];
    // The box closes the connection (EOF or reset) once the tunnel did not come up.
    let read = renkei_lab::sockio::read_past_signals(&mut viewer, &mut buf);
    let waited = started.elapsed();
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "expected the connection to be closed, got {read:?}"
    );
    assert!(
        waited >= Duration::from_millis(2500) && waited <= Duration::from_secs(8),
        "closed after {waited:?}, connect_timeout is 3 s"
    );

    let record = wait_until(Duration::from_secs(5), "the access-log record", || {
        let status = clinic.status().ok()?;
        status["proxy"]["recent_connections"]
            .as_array()?
            .iter()
            .find(|r| r["service"] == "documents")
            .cloned()
    })
    .expect("record");
    assert_eq!(
        record["result"], "refused: tunnel did not come up within 3 s",
        "{record}"
    );
    assert!(
        record["peer_addr"]
            .as_str()
            .is_some_and(|a| a.starts_with("198.18.20.2:")),
        "{record}"
    );
    // The certificates in use are reported with their days to expiry (NET-5).
    let status = clinic.status().expect("status");
    let certificates = status["certificates"].as_array().expect("certificates");
    assert!(
        certificates.iter().any(|c| c["role"] == "box_chain")
            && certificates.iter().any(|c| c["role"] == "operator_ca"),
        "{status}"
    );
    for cert in certificates {
        assert!(cert["days_left"].as_i64().unwrap_or(0) > 30, "{cert}");
        assert_eq!(cert["warning"], false, "{cert}");
    }
    // The attempt is over: the policy gave up and the box is silent again.
    let peer = clinic.peer("dc").expect("peer");
    assert!(
        peer["backend"]["wireguard"]["handshake_attempts"]
            .as_u64()
            .unwrap_or(0)
            >= 1,
        "{peer}"
    );
}
