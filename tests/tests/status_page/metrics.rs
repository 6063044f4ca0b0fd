//! The Prometheus metrics and the operator's metrics listener (OPS-4).

use renkei_lab::web::{curl, get, login, ADMIN_PASSWORD, METRICS_PORT};
use renkei_lab::{require_root, Lab, Node};

use crate::fixtures::{hospital_base, hospital_with_metrics, promtool, sample};

#[test]
fn ops4_metrics_pass_promtool() {
    require_root!();
    let lab = Lab::new().expect("lab");
    let h = hospital_with_metrics(&lab);
    let lan = lab.lan_ns(Node::Hospital);
    let base = hospital_base();
    let anonymous = curl(lan, &[&format!("{base}/metrics")]).expect("curl");
    assert_eq!(
        anonymous.status, 401,
        "the LAN listener's /metrics needs a login"
    );
    let session = login(lan, &base, ADMIN_PASSWORD).expect("login");
    let reply = get(lan, &base, &session, "/metrics").expect("metrics");
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("content-type"),
        Some(renkei::status::metrics::CONTENT_TYPE)
    );
    promtool(lan, &reply.body);

    // The values are the daemon's.
    let status = h.hospital.status().expect("status");
    let m = &reply.body;
    assert_eq!(
        sample(m, "renkei_tunnel_state{state=\"up\"}"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(sample(m, "renkei_config_version"), Some(1.0));
    assert_eq!(sample(m, "renkei_build_info{"), Some(1.0));
    assert!(
        sample(m, "renkei_peer_receive_bytes_total{peer=\"dc\"").is_some_and(|v| v > 0.0),
        "{m}"
    );
    assert!(
        sample(m, "renkei_peer_last_handshake_age_seconds{peer=\"dc\"}").is_some(),
        "{m}"
    );
    assert_eq!(
        sample(m, "renkei_service_connections_total{service=\"documents\"}"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        sample(
            m,
            "renkei_tls_handshakes_total{service=\"documents\",version=\"TLSv1_3\",suite=\"TLS13_AES_256_GCM_SHA384\"}"
        ),
        Some(1.0),
        "{m}"
    );
    let days = status["certificates"][0]["days_left"]
        .as_f64()
        .expect("days");
    let expiry = sample(m, "renkei_certificate_expiry_seconds{role=\"box_chain\"").expect("expiry");
    assert!(
        (expiry / 86_400.0 - days).abs() < 1.01,
        "{expiry} s vs {days} days"
    );
    drop(h.hub);
}

#[test]
fn ops4_metrics_listener_serves_only_metrics_to_operator_certificates() {
    require_root!();
    let lab = Lab::new().expect("lab");
    let h = hospital_with_metrics(&lab);
    let dc = lab.ns(Node::Hub);
    let hub_files = renkei_lab::pki::LeafFiles {
        cert: lab.tls_dir(Node::Hub).join("box.crt"),
        key: lab.tls_dir(Node::Hub).join("box.key"),
    };
    let ca = lab.pki_dir().join("operator-ca.crt");
    let name = Node::Hospital.tls_name();
    let resolve = format!("{name}:{METRICS_PORT}:198.19.0.10");
    let operator = |path: &str, with_cert: bool| {
        let url = format!("https://{name}:{METRICS_PORT}{path}");
        let cert = hub_files.cert.to_string_lossy().into_owned();
        let key = hub_files.key.to_string_lossy().into_owned();
        let ca = ca.to_string_lossy().into_owned();
        let mut args = vec!["--cacert", &ca, "--resolve", &resolve];
        if with_cert {
            args.extend(["--cert", &cert, "--key", &key]);
        }
        args.push(&url);
        // curl -k is on for the lab page; the operator verifies the box against the CA anyway
        // through --cacert plus the name in --resolve, which -k does not remove from the check
        // of the client certificate the server demands.
        curl(dc, &args).expect("curl")
    };
    let metrics = operator("/metrics", true);
    assert_eq!(metrics.status, 200, "{metrics:?}");
    promtool(dc, &metrics.body);
    assert!(metrics.body.contains("renkei_tunnel_state{state=\"up\"} 1"));
    for path in ["/", "/login", "/api/v1/status", "/app.js"] {
        let reply = operator(path, true);
        assert_eq!(
            reply.status, 404,
            "{path} on the metrics listener: {reply:?}"
        );
        assert!(!reply.body.contains("facility"));
    }
    let without = operator("/metrics", false);
    assert_eq!(
        without.status, 0,
        "no client certificate, no answer: {without:?}"
    );
    assert_ne!(without.curl_exit, 0);
    let status = h.hospital.status().expect("status");
    assert_eq!(
        status["status_page"]["metrics_transport"], "https+client-certificate",
        "{status:#}"
    );
    // Not reachable from the hospital LAN: it listens on the tunnel address only.
    let from_lan = curl(
        lab.lan_ns(Node::Hospital),
        &[&format!("https://198.19.0.10:{METRICS_PORT}/metrics")],
    )
    .expect("curl");
    assert_eq!(from_lan.status, 0, "{from_lan:?}");
}
