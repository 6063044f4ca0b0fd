//! The page in a real browser: login, the facility's state, a pending config's countdown, alarms
//! (OPS-3).

use std::time::Duration;

use renkei_lab::operator::Operator;
use renkei_lab::web::{status, STATUS_PORT};
use renkei_lab::{require_root, wait_until, Lab, Node};
use serde_json::Value;

use crate::fixtures::{
    clinic_base, daemon_year, data_centre_with_documents, full_clinic_with_page, hospital_base,
    push_pending, run_browser, viewer_fetches_a_document, wait_for_page, ymd_in_days,
    OPERATOR_IDENTITY,
};

/// A row of the page's services table, as the browser read it.
fn service_row<'a>(read: &'a Value, name: &str) -> &'a Value {
    read["service_rows"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["name"] == name))
        .unwrap_or_else(|| panic!("no service row {name}: {read:#}"))
}

#[test]
fn ops3_browser_logs_in_and_reads_facility_role_and_tunnel_state() {
    require_root!();
    let lab = Lab::new().expect("lab");
    let operator = Operator::with_identity(&lab, OPERATOR_IDENTITY).expect("operator");
    let (documents, _hub, _hospital) = data_centre_with_documents(&lab);
    let (clinic, text) = full_clinic_with_page(&lab, &operator);
    let lan = lab.lan_ns(Node::Clinic);
    let base = clinic_base();
    // A viewer PC fetches a document, so the page has a tunnel, traffic and an access record.
    viewer_fetches_a_document(lan, &documents);
    // The operator pushes version 2 while the tunnel is up, and confirms it: the page names who.
    let mut v2 = text.clone();
    v2.meta.version = 2;
    v2.meta.description = Some("閲覧用ポータルの設定 (第2版)".to_string());
    let signed = operator
        .write_signed("clinic-v2.toml", &v2, None)
        .expect("sign");
    let pushed = operator.push(&lab, Node::Clinic, &signed).expect("push");
    assert!(pushed.success, "{}", pushed.output);
    let confirmed = operator
        .confirm(&lab, Node::Clinic, Some(2))
        .expect("confirm");
    assert!(confirmed.success, "{}", confirmed.output);

    // The last firmware update was refused: the page shows the word and why, translated.
    let refused = renkei::update::spool::UpdateResult {
        result: "refused".into(),
        version: Some("0.1.0.1".into()),
        reason: Some("not_blessed".into()),
        message: "slot B waits for the health check of its trial boot".into(),
        slot: None,
        by: OPERATOR_IDENTITY.into(),
        at: 1,
    };
    renkei::update::spool::Spool::new(
        text.paths
            .state_dir
            .join(renkei::config::UPDATE_SPOOL_DIR_NAME),
    )
    .record_result(&refused)
    .expect("last-result.json");
    let options = serde_json::json!({
        "service": {"name": "documents", "address": renkei_lab::lab::LAN_SERVICE_ADDRESS,
                    "port": renkei_lab::lab::SERVICE_PORT}
    });
    let (result, png) = run_browser(&lab, lan, &base, &options);

    let daemon = clinic.status().expect("status");
    let initial = &result["initial"];
    assert_eq!(initial["lang"], "ja", "Japanese by default");
    assert_eq!(initial["facility"], daemon["facility"]);
    assert_eq!(initial["role"], "viewing");
    assert_eq!(initial["role_text"], "閲覧施設");
    assert_eq!(initial["tunnel_state"], "up", "{initial:#}");
    assert_eq!(initial["tunnel_text"], "接続中");
    assert_eq!(initial["wg_public_key"], lab.public_key(Node::Clinic));
    assert_eq!(
        initial["page_certificate"],
        daemon["status_page"]["certificate_sha256"]
    );
    assert!(initial["access_records"].as_u64() >= Some(1), "{initial:#}");
    assert!(initial["events"].as_u64() >= Some(2), "{initial:#}");
    assert_eq!(initial["actions_visible"], true);
    // Who pushed the running config and when, and the key it was signed with.
    assert_eq!(initial["config_version"], "2", "{initial:#}");
    assert_eq!(
        initial["config_description"],
        "閲覧用ポータルの設定 (第2版)"
    );
    assert_eq!(
        initial["config_pushed_by"], OPERATOR_IDENTITY,
        "{initial:#}"
    );
    assert_eq!(initial["config_signer"], daemon["config"]["signer"]);
    assert_ne!(initial["config_signer"], OPERATOR_IDENTITY);
    let pushed_at = initial["config_pushed_at"].as_str().unwrap_or("-");
    assert!(
        pushed_at.starts_with(&daemon_year(&daemon)),
        "a Japanese date: {pushed_at}"
    );
    assert_eq!(initial["pending_visible"], false, "confirmed");
    // The firmware: its version, the booted slot, the last update with its reason.
    assert_eq!(initial["firmware_version"], daemon["firmware"]["version"]);
    assert_eq!(
        initial["firmware_version"],
        renkei::update::status::running_version().to_string()
    );
    assert!(
        initial["booted_slot"] == daemon["firmware"]["booted_slot"]
            || (initial["booted_slot"] == "不明" && daemon["firmware"]["booted_slot"] == "unknown"),
        "{initial:#}"
    );
    assert_eq!(initial["update_result"], "refused");
    assert_eq!(initial["update_result_text"], "拒否しました (0.1.0.1)");
    // The reason word, translated; the box's English message stays in the JSON API.
    assert_eq!(
        initial["update_reason"],
        "稼働中のファームウェアがまだ確認されていません"
    );
    assert_eq!(
        daemon["firmware"]["last_result"]["message"],
        "slot B waits for the health check of its trial boot"
    );
    assert_eq!(initial["tunnel_reason"], "セッション確立", "{initial:#}");
    // Times, levels, kinds, roles and states in Japanese; nothing raw from the API.
    for time in [&initial["updated"], &result["japanese"]["updated"]] {
        let time = time.as_str().unwrap_or("");
        assert!(
            !time.is_empty() && !time.contains("AM") && !time.contains("PM"),
            "{time}"
        );
    }
    let levels: Vec<&str> = initial["event_levels"]
        .as_array()
        .map(|l| l.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert!(!levels.is_empty());
    assert!(
        levels
            .iter()
            .all(|l| ["情報", "警告", "エラー"].contains(l)),
        "{levels:?}"
    );
    let kinds = initial["event_kinds"].to_string();
    assert!(
        kinds.contains("デーモン") && !kinds.contains("\"daemon\""),
        "{kinds}"
    );
    // Events are rendered from their code and parameters in the page's language.
    let texts = initial["event_texts"].to_string();
    assert!(
        texts.contains("を起動しました") && texts.contains("相手 dc: 接続中"),
        "{texts}"
    );
    assert!(!texts.contains(" started"), "{texts}");
    let roles: Vec<String> = initial["certificate_rows"]
        .as_array()
        .map(|rows| rows.iter().map(|r| r["cells"][1].to_string()).collect())
        .unwrap_or_default();
    assert!(
        roles.iter().any(|r| r.contains("この装置の証明書"))
            && roles.iter().any(|r| r.contains("運用者の認証局")),
        "{roles:?}"
    );
    assert!(!roles.iter().any(|r| r.contains("box_chain")), "{roles:?}");
    let documents_row = service_row(initial, "documents");
    assert_eq!(documents_row["state"], "listening");
    assert_eq!(documents_row["cells"][2], "待受中", "{documents_row:#}");
    assert_eq!(documents_row["cells"][1], "外向き (LAN → トンネル)");
    let peers = initial["peer_rows"].as_array().cloned().unwrap_or_default();
    assert_eq!(peers.len(), 1, "{peers:#?}");
    assert_eq!(peers[0]["name"], "dc");
    assert_eq!(peers[0]["alarm"], "false");
    // The page refreshed itself: a connection opened outside the browser appeared and went.
    let open = service_row(&result["refresh"]["open"], "documents");
    let closed = service_row(&result["refresh"]["closed"], "documents");
    assert_eq!(open["active"], "1", "{open:#}");
    assert_eq!(closed["active"], "0", "{closed:#}");
    assert_ne!(
        result["refresh"]["open"]["updated"], result["refresh"]["closed"]["updated"],
        "the Updated time moves with each poll"
    );
    // The buttons went through the real tunnel handle: idle, then up again.
    assert_eq!(
        result["steps"],
        serde_json::json!(["disconnect->idle", "connect->up"]),
        "{result:#}"
    );
    assert_eq!(clinic.peer("dc").expect("peer")["state"], "up");
    let english = &result["english"];
    assert_eq!(english["role_text"], "viewing facility");
    assert_eq!(english["update_result_text"], "refused (0.1.0.1)");
    assert_eq!(
        english["update_reason"],
        "the running firmware is not confirmed yet"
    );
    assert_eq!(english["tunnel_reason"], "session established");
    assert_eq!(english["tunnel_text"], "up");
    assert_eq!(service_row(english, "documents")["cells"][2], "listening");
    assert!(english["event_levels"].to_string().contains("info"));
    let english_texts = english["event_texts"].to_string();
    assert!(
        english_texts.contains(" started")
            && english_texts.contains("peer dc: up")
            && english_texts.contains("administrator: disconnect (ok)"),
        "{english_texts}"
    );
    assert!(english["certificate_rows"]
        .to_string()
        .contains("this box's certificate"));
    assert_eq!(result["japanese"]["lang"], "ja");

    if let Some(out) = std::env::var_os("RENKEI_SCREENSHOT_OUT") {
        std::fs::write(&out, &png).expect("copy the screenshot");
    }
}

#[test]
fn ops3_browser_shows_pending_countdown_expiring_certificate_and_alarm_without_buttons() {
    require_root!();
    let lab = Lab::new().expect("lab");
    let operator = Operator::with_identity(&lab, OPERATOR_IDENTITY).expect("operator");
    // The hospital's certificate has 10 days left: NET-5's warning (30 days or fewer).
    let short = lab
        .ca
        .issue_with(Node::Hospital.tls_name(), lab.ca.next_serial(), |p| {
            let (y, m, d) = ymd_in_days(-1);
            p.not_before = rcgen::date_time_ymd(y, m, d);
            let (y, m, d) = ymd_in_days(10);
            p.not_after = rcgen::date_time_ymd(y, m, d);
        })
        .expect("short-lived certificate");
    short
        .write(&lab.tls_dir(Node::Hospital), "box")
        .expect("write certificate");
    let _hub = lab
        .start(Node::Hub, &lab.full_config(Node::Hub))
        .expect("hub");
    // A 30 s handshake alarm: with a rekey every 120 s, the alarm is on from 30 s after a
    // handshake until the next one, with the hub up and the tunnel healthy.
    let mut text = lab.full(Node::Hospital);
    text.tunnel
        .as_mut()
        .expect("[tunnel]")
        .policy
        .handshake_alarm_secs = 30;
    text.status = Some(status(&format!("198.18.10.1:{STATUS_PORT}")).expect("status"));
    text.management = Some(operator.management(Node::Hospital, 600, false));
    let hospital = lab.start(Node::Hospital, &text).expect("hospital");
    let lan = lab.lan_ns(Node::Hospital);
    let base = hospital_base();
    wait_for_page(lan, &base);
    wait_until(Duration::from_secs(15), "the hospital's tunnel", || {
        (hospital.peer("dc").ok()?["state"] == "up").then_some(())
    })
    .expect("tunnel up");
    // Version 2 awaits confirmation (the same [status], so the page keeps running).
    push_pending(&lab, &operator, Node::Hospital, 2, &text);
    wait_until(Duration::from_secs(60), "the handshake alarm", || {
        (hospital.status().ok()?["tunnel"]["alarm"] == true).then_some(())
    })
    .expect("alarm raised by the daemon");

    let options = serde_json::json!({"countdown": true, "alarm": true});
    let (result, _png) = run_browser(&lab, lan, &base, &options);
    let daemon = hospital.status().expect("status");
    let initial = &result["initial"];
    assert_eq!(initial["role"], "disclosing");
    assert_eq!(initial["role_text"], "開示施設");
    // No connect/disconnect on an always-on box (the server refuses them too).
    assert_eq!(initial["actions_visible"], false, "{initial:#}");
    assert_eq!(initial["connect_button_visible"], false, "{initial:#}");
    assert_eq!(result["steps"], serde_json::json!([]));
    // The pending config: its version, who pushed it, and a countdown that ticks down.
    assert_eq!(initial["pending_visible"], true, "{initial:#}");
    assert_eq!(initial["pending_version"], "2");
    assert_eq!(initial["pending_by"], OPERATOR_IDENTITY);
    assert_eq!(initial["config_pushed_by"], OPERATOR_IDENTITY);
    let countdown: Vec<u64> = result["countdown"]
        .as_array()
        .map(|c| c.iter().filter_map(|v| v.as_str()?.parse().ok()).collect())
        .unwrap_or_default();
    assert_eq!(countdown.len(), 2, "{result:#}");
    let deadline = daemon["config"]["pending"]["confirm_deadline_unix"]
        .as_u64()
        .expect("deadline");
    assert!(
        countdown[1] < countdown[0] && countdown[0] <= 600,
        "{countdown:?}"
    );
    assert!(
        deadline.saturating_sub(daemon["time_unix"].as_u64().unwrap_or(0)) <= countdown[1] + 5,
        "the countdown is the box's: {countdown:?}"
    );
    // The certificate with 10 days left is a warning row; the CA is not.
    let certificates = initial["certificate_rows"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let own = certificates
        .iter()
        .find(|r| r["cells"][1] == "この装置の証明書")
        .expect("the box's certificate row");
    assert_eq!(own["warning"], "true", "{own:#}");
    assert_eq!(own["cls"], "warning-row");
    assert!(
        own["cells"][3]
            .as_str()
            .is_some_and(|d| d.starts_with('9') && d.contains("まもなく期限切れ")),
        "{own:#}"
    );
    let ca = certificates
        .iter()
        .find(|r| r["cells"][1] == "運用者の認証局 (CA)")
        .expect("the CA row");
    assert_eq!(ca["warning"], "false", "{ca:#}");
    // The stale handshake, from the server's alarm flags: banner, red age, red peer row.
    let alarm = &result["alarm"];
    assert_eq!(alarm["alarm_visible"], true, "{alarm:#}");
    assert!(
        alarm["alarm_text"]
            .as_str()
            .is_some_and(|t| t.contains("警報") && t.contains("dc")),
        "{alarm:#}"
    );
    assert_eq!(alarm["alarm_background"], "rgb(198, 40, 40)", "{alarm:#}");
    assert_eq!(alarm["handshake_age_alarm"], true, "{alarm:#}");
    assert_eq!(
        alarm["handshake_age_color"], "rgb(198, 40, 40)",
        "{alarm:#}"
    );
    let peer = &alarm["peer_rows"][0];
    assert_eq!(
        (peer["name"].as_str(), peer["alarm"].as_str()),
        (Some("dc"), Some("true"))
    );
    assert_eq!(peer["cls"], "alarm-row");
    assert_eq!(alarm["tunnel_state"], "up", "stale, not down");
}
