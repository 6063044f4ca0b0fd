//! The page's connect and disconnect buttons, and where they are refused (OPS-3).

use renkei_lab::web::{get, login, status_toml, ADMIN_PASSWORD, STATUS_PORT};
use renkei_lab::{require_root, Daemon, Lab, Node};

use crate::fixtures::{
    clinic_base, clinic_with_page, hospital_base, post_with_session, wait_for_page,
};

#[test]
fn ops3_connect_now_and_disconnect_from_the_page_drive_the_tunnel() {
    require_root!();
    let lab = Lab::new().expect("lab");
    let _hub = lab
        .start(Node::Hub, &lab.tunnel_config(Node::Hub))
        .expect("hub");
    let clinic = clinic_with_page(&lab);
    let lan = lab.lan_ns(Node::Clinic);
    let base = clinic_base();
    let session = login(lan, &base, ADMIN_PASSWORD).expect("login");
    let post = |path: &str| post_with_session(lan, &base, &session, path);
    assert_eq!(clinic.status().expect("status")["tunnel"]["state"], "idle");
    let connect = post("/api/v1/tunnel/connect");
    assert_eq!(connect.status, 200, "{connect:?}");
    assert_eq!(clinic.peer("dc").expect("peer")["state"], "up");
    let api = get(lan, &base, &session, "/api/v1/status")
        .expect("api")
        .json()
        .expect("json");
    assert_eq!(api["tunnel"]["state"], "up");

    let disconnect = post("/api/v1/tunnel/disconnect");
    assert_eq!(disconnect.status, 200, "{disconnect:?}");
    let peer = clinic.peer("dc").expect("peer");
    assert_eq!(peer["state"], "idle", "{peer:#}");
    assert_eq!(
        peer["backend"]["wireguard"]["session_keys_present"], false,
        "{peer:#}"
    );
    let events = clinic.status().expect("status")["events"].clone();
    let messages: Vec<&str> = events
        .as_array()
        .map(|e| e.iter().filter_map(|e| e["message"].as_str()).collect())
        .unwrap_or_default();
    assert!(
        messages.iter().any(|m| m.contains("peer dc: up")),
        "{messages:#?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains("administrator: disconnect")),
        "{messages:#?}"
    );
}

/// The hospital (a disclosing box, always on) alone with its page on the LAN.
fn hospital_with_page(lab: &Lab) -> Daemon {
    let text = lab.tunnel_config(Node::Hospital)
        + &status_toml(&format!("198.18.10.1:{STATUS_PORT}"), "").expect("status");
    let daemon = lab.start(Node::Hospital, &text).expect("hospital");
    wait_for_page(lab.lan_ns(Node::Hospital), &hospital_base());
    daemon
}

#[test]
fn ops3_connect_and_disconnect_are_refused_on_a_disclosing_box() {
    require_root!();
    let lab = Lab::new().expect("lab");
    let hospital = hospital_with_page(&lab);
    let lan = lab.lan_ns(Node::Hospital);
    let base = hospital_base();
    let session = login(lan, &base, ADMIN_PASSWORD).expect("login");
    let document = get(lan, &base, &session, "/api/v1/status")
        .expect("api")
        .json()
        .expect("json");
    assert_eq!(document["tunnel_actions"], false, "{document:#}");
    let events_before = document["events"].as_array().map_or(0, Vec::len);
    for path in ["/api/v1/tunnel/connect", "/api/v1/tunnel/disconnect"] {
        // A valid session and CSRF token: only the role makes the difference.
        let reply = post_with_session(lan, &base, &session, path);
        assert_eq!(reply.status, 409, "{path}: {reply:?}");
        let error = reply.json().expect("json")["error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            error.contains("only for a viewing box") && error.contains("disclosing (always_on)"),
            "{path}: {error}"
        );
    }
    // The same rule on the control socket (`renkei tunnel connect|disconnect`).
    for command in ["connect", "disconnect"] {
        let answer = hospital.control(command).expect("control");
        assert!(
            answer.starts_with("error: ") && answer.contains("only for a viewing box"),
            "{command}: {answer}"
        );
    }
    // Nothing was done: no administrator event, and the clinic's page still allows them.
    let after = hospital.status().expect("status");
    let administrator_events = after["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .skip(events_before)
        .filter(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.contains("administrator:"))
        })
        .count();
    assert_eq!(administrator_events, 0, "{after:#}");
    let clinic = clinic_with_page(&lab);
    assert_eq!(clinic.status().expect("status")["tunnel_actions"], true);
}
