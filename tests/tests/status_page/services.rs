//! The services' byte counts on the page while a transfer is open, and a full service (OPS-3).

use std::time::Duration;

use renkei_lab::boxconfig::service_mut;
use renkei_lab::web::{get, login, status, ADMIN_PASSWORD, STATUS_PORT};
use renkei_lab::{require_root, wait_until, Lab, Node};
use serde_json::Value;

use crate::fixtures::{
    clinic_base, data_centre_with_documents, renkei_status, sample, wait_for_page,
};

/// The `documents` row of a status document's services.
fn documents_service(document: &Value) -> Value {
    document["proxy"]["services"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "documents").cloned())
        .unwrap_or(Value::Null)
}

#[test]
fn ops3_service_bytes_grow_while_a_transfer_is_open_and_a_full_service_says_so() {
    require_root!();
    const LEN: u64 = 8 << 20;
    const HELD_AFTER: u64 = 1 << 20;
    let lab = Lab::new().expect("lab");
    let (documents, _hub, _hospital) = data_centre_with_documents(&lab);
    // One connection slot, so one open transfer fills the service.
    let mut text = lab.full(Node::Clinic);
    service_mut(&mut text, "documents").max_connections = 1;
    text.status = Some(status(&format!("198.18.20.1:{STATUS_PORT}")).expect("status"));
    let clinic = lab.start(Node::Clinic, &text).expect("clinic");
    let lan = lab.lan_ns(Node::Clinic);
    let base = clinic_base();
    wait_for_page(lan, &base);
    let session = login(lan, &base, ADMIN_PASSWORD).expect("login");
    let api = || {
        get(lan, &base, &session, "/api/v1/status")
            .expect("api")
            .json()
            .expect("json")
    };
    let idle = documents_service(&api());
    assert_eq!(idle["state"], "listening", "{idle:#}");
    assert_eq!(
        (idle["bytes_in"].as_u64(), idle["bytes_out"].as_u64()),
        (Some(0), Some(0))
    );

    documents.hold();
    let received = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let address = format!(
        "{}:{}",
        renkei_lab::lab::LAN_SERVICE_ADDRESS,
        renkei_lab::lab::SERVICE_PORT
    );
    let stream = lan
        .tcp_connect(&address, Duration::from_secs(10))
        .expect("viewer connects");
    let transfer = {
        let received = std::sync::Arc::clone(&received);
        std::thread::spawn(move || {
            renkei_lab::tlstools::fetch_document(stream, LEN, 11, Some(HELD_AFTER), |n| {
                received.store(n, std::sync::atomic::Ordering::Relaxed)
            })
        })
    };
    wait_until(Duration::from_secs(30), "the first MiB to arrive", || {
        (received.load(std::sync::atomic::Ordering::Relaxed) >= HELD_AFTER).then_some(())
    })
    .expect("transfer started");

    // Held open: the bytes are on the page before the connection closes.
    let open = wait_until(Duration::from_secs(15), "the open transfer's bytes", || {
        let service = documents_service(&api());
        (service["bytes_out"].as_u64() >= Some(HELD_AFTER)).then_some(service)
    })
    .expect("bytes counted while open");
    assert_eq!(open["active"], 1, "{open:#}");
    assert_eq!(open["state"], "full", "{open:#}");
    assert!(open["bytes_in"].as_u64() > Some(0), "the request: {open:#}");
    let document = api();
    let records = document["proxy"]["recent_connections"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        records.iter().all(|r| r["service"] != "documents"),
        "the connection has not closed yet: {records:#?}"
    );
    let metrics = get(lan, &base, &session, "/metrics").expect("metrics").body;
    assert!(
        sample(
            &metrics,
            "renkei_service_sent_bytes_total{service=\"documents\"}"
        ) >= Some(HELD_AFTER as f64),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "renkei_service_state{service=\"documents\",state=\"full\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    let summary = renkei_status(&clinic, false);
    assert!(
        summary.contains(", full\n") && summary.contains("connections: 1 active (max 1)"),
        "{summary}"
    );
    // A second viewer is refused while the slot is taken.
    let second = lan
        .tcp_connect(&address, Duration::from_secs(10))
        .expect("second viewer");
    let mut byte = [0u8; 1];
    second
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    assert!(matches!(
        renkei_lab::sockio::read_past_signals(&mut &second, &mut byte),
        Ok(0) | Err(_)
    ));
    // The page and `renkei status` say why: the refusal is the service's last problem.
    const REFUSAL: &str = "refused: max_connections (1) reached";
    let refused = wait_until(Duration::from_secs(10), "the refusal on the page", || {
        let service = documents_service(&api());
        (service["refused"] == 1).then_some(service)
    })
    .expect("refusal counted");
    assert_eq!(refused["last_error"], REFUSAL, "{refused:#}");
    let summary = renkei_status(&clinic, false);
    assert!(
        summary.contains(&format!("last problem: {REFUSAL}")) && summary.contains("1 refused"),
        "{summary}"
    );

    documents.release();
    let fetched = transfer
        .join()
        .expect("transfer thread")
        .expect("transfer completes");
    assert_eq!(fetched.len, LEN);
    let closed = wait_until(Duration::from_secs(15), "the connection to close", || {
        let service = documents_service(&api());
        (service["active"] == 0).then_some(service)
    })
    .expect("closed");
    assert_eq!(closed["state"], "listening", "{closed:#}");
    let out = closed["bytes_out"].as_u64().unwrap_or(0);
    assert!(
        out >= LEN && out >= open["bytes_out"].as_u64().unwrap_or(u64::MAX),
        "never decreases and counts the whole document: {closed:#}"
    );
    let record = api()["proxy"]["recent_connections"]
        .as_array()
        .and_then(|r| {
            r.iter()
                .find(|r| r["service"] == "documents" && r["result"] == "ok")
                .cloned()
        })
        .expect("access record");
    // The live total and the access log agree once the connection closed (the refused second
    // viewer moved no byte).
    assert_eq!(record["bytes_out"].as_u64(), Some(out), "{record:#}");
    assert_eq!(record["bytes_in"], closed["bytes_in"], "{record:#}");
}
