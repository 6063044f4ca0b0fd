//! The demo chain for the integration tests: a document server on the hospital LAN and the
//! three daemons with their full configs (clinic outbound "documents" -> hub inbound "portal" ->
//! hub outbound "hospital-documents" -> hospital inbound "documents"), with the helpers the
//! proxy and fault tests share to start it, connect a viewer and read the access-log records.

use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

use renkei::config::Config;

use crate::lab::{DOCUMENT_SERVER_ADDRESS, LAN_SERVICE_ADDRESS, SERVICE_PORT};
use crate::tlstools::DocumentServer;
use crate::wait::wait_until;
use crate::{Daemon, Lab, Node};

/// How long a service may take to appear in its daemon's status after start.
pub const SERVICE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the hospital's always-on tunnel may take to come up after start.
pub const TUNNEL_UP_TIMEOUT: Duration = Duration::from_secs(10);

/// The whole demo chain: three daemons with their full configs (the clinic's tunnel idles out
/// after 10 s), a document server on the hospital LAN, the hospital's tunnel up.
pub struct Chain {
    /// The data centre.
    pub hub: Daemon,
    /// The disclosing facility.
    pub hospital: Daemon,
    /// The viewing facility.
    pub clinic: Daemon,
    /// The document server on the hospital LAN.
    pub documents: DocumentServer,
}

/// The config [`start_chain`] gives `node`: its full config, with the clinic's tunnel (or its
/// on-demand IPsec SA) idling out after 10 s (on a closed network there is nothing to idle out).
pub fn chain_config(lab: &Lab, node: Node) -> Config {
    let mut config = lab.full(node);
    if node == Node::Clinic {
        if let Some(tunnel) = config.tunnel.as_mut() {
            tunnel.policy.idle_timeout_secs = CLINIC_IDLE_TIMEOUT_SECS;
        }
        if let Some(ipsec) = config.ipsec.as_mut() {
            ipsec.idle_timeout_secs = CLINIC_IDLE_TIMEOUT_SECS;
        }
    }
    config
}

/// The clinic's tunnel in the chain idles out after this long without traffic or holds.
pub const CLINIC_IDLE_TIMEOUT_SECS: u64 = 10;

/// Starts the demo chain and waits until every service listens and the hospital's link to the
/// data centre is up (its tunnel, or its probe on a closed network).
pub fn start_chain(lab: &Lab) -> Chain {
    start_chain_with(lab, |_, _| {})
}

/// [`start_chain`] with `edit` applied to each box's [`chain_config`] before it starts.
pub fn start_chain_with(lab: &Lab, edit: impl Fn(Node, &mut Config)) -> Chain {
    let documents = DocumentServer::start(lab.lan_ns(Node::Hospital), DOCUMENT_SERVER_ADDRESS)
        .expect("document server");
    let start = |node: Node| {
        let mut config = chain_config(lab, node);
        edit(node, &mut config);
        lab.start(node, &config)
            .unwrap_or_else(|e| panic!("{node:?}: {e:#}"))
    };
    let hub = start(Node::Hub);
    let hospital = start(Node::Hospital);
    let clinic = start(Node::Clinic);
    wait_for_service(&hub, "portal");
    wait_for_service(&hub, "hospital-documents");
    wait_for_service(&hospital, "documents");
    wait_for_service(&clinic, "documents");
    wait_until(
        TUNNEL_UP_TIMEOUT,
        "the hospital's link to the data centre",
        || (peer_state(&hospital, lab.dc_link_name()) == "up").then_some(()),
    )
    .expect("hospital up");
    Chain {
        hub,
        hospital,
        clinic,
        documents,
    }
}

/// Waits until a daemon's status lists `service` (its listener is bound).
pub fn wait_for_service(daemon: &Daemon, service: &str) {
    wait_until(SERVICE_TIMEOUT, "the service to listen", || {
        let status = daemon.status().ok()?;
        status["proxy"]["services"]
            .as_array()?
            .iter()
            .any(|s| s["name"] == service)
            .then_some(())
    })
    .unwrap_or_else(|e| panic!("{service}: {e}"));
}

/// The link state of one of a daemon's peers (`up`, `idle`, ...), empty when unknown.
pub fn peer_state(daemon: &Daemon, peer: &str) -> String {
    daemon
        .peer(peer)
        .map(|p| p["state"].as_str().unwrap_or("").to_string())
        .unwrap_or_default()
}

/// A viewer PC on the clinic LAN connects to the clinic box's "documents" service.
pub fn viewer_connect(lab: &Lab) -> TcpStream {
    lab.lan_ns(Node::Clinic)
        .tcp_connect(
            &format!("{LAN_SERVICE_ADDRESS}:{SERVICE_PORT}"),
            Duration::from_secs(15),
        )
        .expect("viewer connects")
}

/// The daemon's recent access-log records, oldest first (empty when it does not answer).
pub fn records(daemon: &Daemon) -> Vec<Value> {
    daemon
        .status()
        .ok()
        .and_then(|s| s["proxy"]["recent_connections"].as_array().cloned())
        .unwrap_or_default()
}

/// The `result` of an access-log record (`ok`, `refused: ...`, `error: ...`).
pub fn result(record: &Value) -> &str {
    record["result"].as_str().unwrap_or("")
}
