//! Pushed configs reaching the page: a service waiting for its address, the facility's name, role
//! and mode, the status section (OPS-3).

use std::time::Duration;

use renkei::config::{Config, Direction, PolicyMode, Role, StatusConfig};
use renkei_lab::boxconfig::{service, socket};
use renkei_lab::lab::Peer;
use renkei_lab::operator::Operator;
use renkei_lab::web::{curl, get, login, status, ADMIN_PASSWORD, METRICS_PORT, STATUS_PORT};
use renkei_lab::{require_root, wait_until, Lab, Node};
use serde_json::Value;

use crate::fixtures::{
    clinic_base, full_clinic_with_page, hospital_base, post_with_session, push_pending,
    renkei_status, wait_for_page,
};

#[test]
fn ops3_a_pushed_service_waits_for_its_address_then_listens() {
    require_root!();
    let lab = Lab::new().expect("lab");
    let operator = Operator::new(&lab).expect("operator");
    let _hub = lab
        .start(Node::Hub, &lab.full_config(Node::Hub))
        .expect("hub");
    let mut v1 = lab.full(Node::Hospital);
    v1.management = Some(operator.management(Node::Hospital, 600, false));
    let hospital = lab.start(Node::Hospital, &v1).expect("hospital");
    wait_until(Duration::from_secs(15), "the hospital's tunnel", || {
        (hospital.peer("dc").ok()?["state"] == "up").then_some(())
    })
    .expect("tunnel up");
    // v2 adds an outbound service on a LAN address the box does not have yet.
    const NEW_ADDRESS: &str = "198.18.10.5";
    let mut v2 = v1.clone();
    v2.meta.version = 2;
    v2.services.push(service(
        "lan-portal",
        Direction::Outbound,
        socket(&format!("{NEW_ADDRESS}:9443")),
        &format!("{}:8443", Node::Hub.tunnel_address()),
        Peer::ServerName(Node::Hub.tls_name()),
    ));
    let signed = operator
        .write_signed("hospital-v2.toml", &v2, None)
        .expect("sign");
    let service = |document: &Value| {
        document["proxy"]["services"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == "lan-portal").cloned())
    };
    std::thread::scope(|scope| {
        let push = scope.spawn(|| operator.push(&lab, Node::Hospital, &signed));
        let waiting = wait_until(
            Duration::from_secs(8),
            "the new service to wait for its address",
            || {
                let entry = service(&hospital.status().ok()?)?;
                (entry["state"] == "waiting_for_address").then_some(entry)
            },
        )
        .expect("waiting_for_address while the address is missing");
        assert_eq!(waiting["listen"], format!("{NEW_ADDRESS}:9443"));
        let summary = renkei_status(&hospital, false);
        assert!(
            summary.contains("service: lan-portal outbound")
                && summary.contains("waiting for address"),
            "{summary}"
        );
        // The address appears (an installer adds it): the bind retry picks it up.
        lab.ns(Node::Hospital)
            .ip(&["addr", "add", &format!("{NEW_ADDRESS}/24"), "dev", "lan0"])
            .expect("address");
        let pushed = push.join().expect("push thread").expect("push");
        assert!(pushed.success, "{}", pushed.output);
        assert_eq!(pushed.answers[0]["state"], "pending", "{}", pushed.output);
    });
    let listening = service(&hospital.status().expect("status")).expect("service");
    assert_eq!(listening["state"], "listening", "{listening:#}");
    lab.lan_ns(Node::Hospital)
        .tcp_connect(&format!("{NEW_ADDRESS}:9443"), Duration::from_secs(5))
        .expect("it accepts connections");
}

/// Signs `text` as the operator, pushes it to `node` from the data centre and confirms it as
/// `version`.
fn push_confirmed(lab: &Lab, operator: &Operator, node: Node, version: u64, config: &Config) {
    push_pending(lab, operator, node, version, config);
    let confirmed = operator.confirm(lab, node, Some(version)).expect("confirm");
    assert!(
        confirmed.success,
        "confirm of version {version}:\n{}",
        confirmed.output
    );
    assert_eq!(
        confirmed.answers[0]["state"], "confirmed",
        "{}",
        confirmed.output
    );
}

/// The `renkei_build_info` line of a metrics text.
fn build_info(metrics: &str) -> &str {
    metrics
        .lines()
        .find(|l| l.starts_with("renkei_build_info{"))
        .unwrap_or_default()
}

#[test]
fn ops3_a_pushed_facility_name_role_and_tunnel_mode_reach_the_page_summary_metrics_and_buttons() {
    require_root!();
    const RENAMED: &str = "lab clinic, second site";
    let lab = Lab::new().expect("lab");
    let operator = Operator::new(&lab).expect("operator");
    let _hub = lab
        .start(Node::Hub, &lab.full_config(Node::Hub))
        .expect("hub");
    let (clinic, v1) = full_clinic_with_page(&lab, &operator);
    let lan = lab.lan_ns(Node::Clinic);
    let base = clinic_base();
    let session = login(lan, &base, ADMIN_PASSWORD).expect("login");
    let api = || {
        get(lan, &base, &session, "/api/v1/status")
            .expect("api")
            .json()
            .expect("json")
    };
    let metrics = || get(lan, &base, &session, "/metrics").expect("metrics").body;
    let post = |path: &str| post_with_session(lan, &base, &session, path);
    let start = api();
    assert_eq!(
        (&start["facility"], &start["tunnel_actions"]),
        (&Value::from("lab clinic"), &Value::Bool(true)),
        "{start:#}"
    );
    // An on-demand box answers the operator while its tunnel is up.
    let connect = post("/api/v1/tunnel/connect");
    assert_eq!(connect.status, 200, "{connect:?}");

    // Version 2: a new name and an always-on tunnel. The page (not restarted: [status] is
    // unchanged, so the session lives on) shows both and refuses the buttons.
    let mut v2 = v1.clone();
    v2.meta.version = 2;
    v2.facility.name = RENAMED.to_string();
    v2.tunnel.as_mut().expect("[tunnel]").policy.mode = Some(PolicyMode::AlwaysOn);
    push_confirmed(&lab, &operator, Node::Clinic, 2, &v2);
    let document = api();
    assert_eq!(document["facility"], RENAMED, "{document:#}");
    assert_eq!(document["role"], "viewing", "{document:#}");
    assert_eq!(document["config_version"], 2, "{document:#}");
    assert_eq!(document["tunnel"]["policy"], "always_on", "{document:#}");
    assert_eq!(document["tunnel_actions"], false, "{document:#}");
    for path in ["/api/v1/tunnel/disconnect", "/api/v1/tunnel/connect"] {
        let reply = post(path);
        assert_eq!(reply.status, 409, "{path}: {reply:?}");
        let error = reply.json().expect("json")["error"].clone();
        assert!(
            error
                .as_str()
                .is_some_and(|e| e.contains("this box is viewing (always_on)")),
            "{path}: {error}"
        );
    }
    let answer = clinic.control("disconnect").expect("control");
    assert!(
        answer.starts_with("error: ") && answer.contains("only for a viewing box"),
        "{answer}"
    );
    assert_eq!(
        clinic.peer("dc").expect("peer")["state"],
        "up",
        "nothing dropped"
    );
    let summary = renkei_status(&clinic, false);
    assert!(
        summary.contains(&format!("facility: {RENAMED} (viewing), config version 2"))
            && summary.contains(" always_on on "),
        "{summary}"
    );

    // Version 3: on demand again; the buttons work again.
    let mut v3 = v2.clone();
    v3.meta.version = 3;
    v3.tunnel.as_mut().expect("[tunnel]").policy.mode = Some(PolicyMode::OnDemand);
    push_confirmed(&lab, &operator, Node::Clinic, 3, &v3);
    assert_eq!(api()["tunnel_actions"], true);
    let connect = post("/api/v1/tunnel/connect");
    assert_eq!(connect.status, 200, "{connect:?}");

    // Version 4: the box becomes a disclosing facility (still on demand): the role label of the
    // metrics, the summary and the refusal all name it.
    let mut v4 = v3.clone();
    v4.meta.version = 4;
    v4.facility.role = Role::Disclosing;
    assert!(
        build_info(&metrics()).contains("role=\"viewing\""),
        "{}",
        metrics()
    );
    push_confirmed(&lab, &operator, Node::Clinic, 4, &v4);
    let document = api();
    assert_eq!(
        (&document["role"], &document["tunnel_actions"]),
        (&Value::from("disclosing"), &Value::Bool(false)),
        "{document:#}"
    );
    let text = metrics();
    assert!(build_info(&text).contains("role=\"disclosing\""), "{text}");
    let reply = post("/api/v1/tunnel/disconnect");
    assert_eq!(reply.status, 409, "{reply:?}");
    assert!(
        reply.body.contains("this box is disclosing (on_demand)"),
        "{reply:?}"
    );
    assert!(
        renkei_status(&clinic, false).contains(&format!(
            "facility: {RENAMED} (disclosing), config version 4"
        )),
        "{}",
        renkei_status(&clinic, false)
    );
}

#[test]
fn ops3_the_status_page_block_follows_a_pushed_status_section_and_goes_with_it() {
    require_root!();
    const MOVED: &str = "198.18.10.1:8443";
    let lab = Lab::new().expect("lab");
    let operator = Operator::new(&lab).expect("operator");
    let _hub = lab
        .start(Node::Hub, &lab.full_config(Node::Hub))
        .expect("hub");
    let mut base_config = lab.full(Node::Hospital);
    base_config.management = Some(operator.management(Node::Hospital, 600, false));
    let first = format!("198.18.10.1:{STATUS_PORT}");
    let status_v1 = status(&first).expect("status");
    let lan = lab.lan_ns(Node::Hospital);
    let mut v1 = base_config.clone();
    v1.status = Some(status_v1.clone());
    let hospital = lab.start(Node::Hospital, &v1).expect("hospital");
    wait_for_page(lan, &hospital_base());
    wait_until(Duration::from_secs(15), "the hospital's tunnel", || {
        (hospital.peer("dc").ok()?["state"] == "up").then_some(())
    })
    .expect("tunnel up");
    login(lan, &hospital_base(), ADMIN_PASSWORD).expect("login");
    let page = hospital.status().expect("status")["status_page"].clone();
    assert_eq!(
        (&page["listen"], &page["metrics_listen"], &page["logins"]),
        (&Value::from(first.as_str()), &Value::Null, &Value::from(1)),
        "{page:#}"
    );

    // Version 2 moves the page and adds the operator's metrics listener: a new server, and
    // the block describes it (its addresses, its own login count).
    let metrics_listen = format!("{}:{METRICS_PORT}", Node::Hospital.tunnel_address());
    let mut v2 = base_config.clone();
    v2.meta.version = 2;
    v2.status = Some(StatusConfig {
        listen: socket(MOVED),
        metrics_listen: Some(socket(&metrics_listen)),
        ..status_v1
    });
    push_confirmed(&lab, &operator, Node::Hospital, 2, &v2);
    let moved_base = format!("https://{MOVED}");
    wait_for_page(lan, &moved_base);
    let page = hospital.status().expect("status")["status_page"].clone();
    assert_eq!(
        (&page["listen"], &page["metrics_listen"], &page["logins"]),
        (
            &Value::from(MOVED),
            &Value::from(metrics_listen.as_str()),
            &Value::from(0)
        ),
        "{page:#}"
    );
    assert_eq!(
        page["metrics_transport"], "https+client-certificate",
        "{page:#}"
    );
    let session = login(lan, &moved_base, ADMIN_PASSWORD).expect("login on the moved page");
    let api = get(lan, &moved_base, &session, "/api/v1/status")
        .expect("api")
        .json()
        .expect("json");
    assert_eq!(api["status_page"]["logins"], 1, "{api:#}");
    let summary = renkei_status(&hospital, false);
    assert!(
        summary.contains(&format!(
            "status page: https://{MOVED}/, metrics on {metrics_listen}"
        )),
        "{summary}"
    );
    let old = curl(lan, &[&format!("{}/login", hospital_base())]).expect("curl");
    assert_eq!(old.status, 0, "the first address is closed: {old:?}");

    // Version 3 removes [status]: no page, and no block describing one.
    let mut v3 = base_config;
    v3.meta.version = 3;
    push_confirmed(&lab, &operator, Node::Hospital, 3, &v3);
    let document = hospital.status().expect("status");
    assert!(document["status_page"].is_null(), "{document:#}");
    assert!(
        !renkei_status(&hospital, false).contains("status page:"),
        "{}",
        renkei_status(&hospital, false)
    );
}
