//! A hub's facilities: the API's pages and search, the browser's table, per-peer metrics off
//! (AVL-6).

use std::time::Duration;

use renkei::config::Config;
use renkei_lab::web::{curl, get, login, status, ADMIN_PASSWORD, STATUS_PORT};
use renkei_lab::{require_root, wait_until, Daemon, Lab, Node};
use serde_json::Value;

use crate::fixtures::{promtool, run_browser, sample, wait_for_page};

/// Facility peers the hub gets on top of the lab's two, so that its table has two pages of 50.
const EXTRA_FACILITIES: u32 = 60;

/// The hub with its page on loopback (plain HTTP, as on the data centre's console) and
/// [`EXTRA_FACILITIES`] more facility peers that never connect; the hospital (always-on) up.
fn hub_with_facilities(lab: &Lab) -> (Daemon, Daemon, String) {
    hub_with_facilities_and(lab, |_| {})
}

/// [`hub_with_facilities`] with `change` made to the hub's config first.
fn hub_with_facilities_and(
    lab: &Lab,
    change: impl FnOnce(&mut Config),
) -> (Daemon, Daemon, String) {
    let mut config = lab.full(Node::Hub);
    config
        .tunnel
        .as_mut()
        .expect("the hub has [tunnel]")
        .peers
        .extend(renkei_lab::boxconfig::facility_peers(EXTRA_FACILITIES));
    config.status = Some(status(&format!("127.0.0.1:{STATUS_PORT}")).expect("status"));
    change(&mut config);
    let hub = lab.start(Node::Hub, &config).expect("hub");
    let base = format!("http://127.0.0.1:{STATUS_PORT}");
    wait_for_page(lab.ns(Node::Hub), &base);
    let hospital = lab
        .start(Node::Hospital, &lab.full_config(Node::Hospital))
        .expect("hospital");
    wait_until(
        Duration::from_secs(15),
        "the hospital up at the hub",
        || (hub.peer("hospital").ok()?["state"] == "up").then_some(()),
    )
    .expect("hospital up");
    (hub, hospital, base)
}

#[test]
fn avl6_int1_the_facilities_api_pages_searches_and_refuses_bad_parameters_and_the_page_polls_a_summary(
) {
    require_root!();
    let lab = Lab::new().expect("lab");
    let (_hub, _hospital, base) = hub_with_facilities(&lab);
    let ns = lab.ns(Node::Hub);
    let anonymous = curl(ns, &[&format!("{base}/api/v1/facilities")]).expect("curl");
    assert_eq!(anonymous.status, 401, "{anonymous:?}");
    let session = login(ns, &base, ADMIN_PASSWORD).expect("login");
    let total = 2 + EXTRA_FACILITIES as u64;

    let first = get(ns, &base, &session, "/api/v1/facilities").expect("get");
    assert_eq!(first.status, 200, "{first:?}");
    let first = first.json().expect("json");
    assert_eq!(first["total"], total, "{first:#}");
    assert_eq!(first["rows"].as_array().map(Vec::len), Some(50));
    assert_eq!(first["counts"]["up"], 1, "{first:#}");
    assert_eq!(first["counts"]["idle"], total - 1, "{first:#}");
    // Worst first: the one facility up is last, on the second page.
    let last = get(ns, &base, &session, "/api/v1/facilities?offset=50&limit=50").expect("get");
    let last = last.json().expect("json");
    let rows = last["rows"].as_array().cloned().unwrap_or_default();
    assert_eq!(rows.len(), (total - 50) as usize, "{last:#}");
    assert_eq!(
        rows.last().map(|r| r["name"].clone()),
        Some("hospital".into())
    );

    let hospital = get(ns, &base, &session, "/api/v1/facilities?q=HOSP&sort=name").expect("get");
    let hospital = hospital.json().expect("json");
    assert_eq!(hospital["matched"], 1, "{hospital:#}");
    let row = &hospital["rows"][0];
    assert_eq!(row["state"], "up");
    assert_eq!(row["addresses"][0], "198.19.0.10/32");
    assert!(
        row["endpoint"]
            .as_str()
            .is_some_and(|e| e.starts_with(Node::Hospital.wan_address())),
        "{row:#}"
    );
    assert!(row["last_reached_unix"].as_u64().is_some(), "{row:#}");
    let by_address = get(ns, &base, &session, "/api/v1/facilities?q=198.19.4.6%2F").expect("get");
    let by_address = by_address.json().expect("json");
    assert_eq!(
        by_address["rows"][0]["name"], "facility-0006",
        "{by_address:#}"
    );
    assert_eq!(by_address["matched"], 1, "{by_address:#}");

    for (query, named) in [
        ("limit=0", "limit: "),
        ("limit=100000", "limit: "),
        ("offset=-1", "offset: "),
        ("sort=%3Cscript%3E", "sort: "),
        ("order=sideways", "order: "),
        ("q=a&q=b", "parameter q is given more than once"),
        ("debug=1", "unknown parameter \"debug\""),
        ("q=%ZZ", "not valid percent-encoded"),
        ("q=%FF", "not valid percent-encoded"),
    ] {
        let reply = get(ns, &base, &session, &format!("/api/v1/facilities?{query}")).expect("get");
        assert_eq!(reply.status, 400, "{query}: {reply:?}");
        let message = reply.json().expect("json")["error"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(message.contains(named), "{query}: {message}");
    }
    // The page polls a summary: the hub's 62 peers are cut to one (none in alarm) and
    // counted in peer_totals; the whole document still has every peer.
    let whole = get(ns, &base, &session, "/api/v1/status").expect("get");
    let whole = whole.json().expect("json");
    assert_eq!(
        whole["tunnel"]["peers"].as_array().map(Vec::len),
        Some(total as usize)
    );
    assert!(whole.get("peer_totals").is_none(), "{whole:#}");
    let summary = get(ns, &base, &session, "/api/v1/status?peers=summary").expect("get");
    let summary = summary.json().expect("json");
    assert_eq!(summary["tunnel"]["peers"].as_array().map(Vec::len), Some(1));
    assert_eq!(summary["peer_totals"]["count"], total, "{summary:#}");
    assert_eq!(summary["peer_totals"]["in_alarm"], 0);
    assert_eq!(
        summary["peer_totals"]["rx_bytes"],
        whole["tunnel"]["peers"]
            .as_array()
            .map(|peers| peers
                .iter()
                .filter_map(|p| p["rx_bytes"].as_u64())
                .sum::<u64>())
            .unwrap_or_default()
    );
    assert_eq!(
        summary["facility"], whole["facility"],
        "the rest is the same"
    );
    for query in ["peers=none", "peers=summary&x=1", "q=%ZZ"] {
        let reply = get(ns, &base, &session, &format!("/api/v1/status?{query}")).expect("get");
        assert_eq!(reply.status, 400, "{query}: {reply:?}");
    }
    let post = curl(
        ns,
        &[
            "-X",
            "POST",
            "-H",
            &format!("Cookie: {}", session.cookie),
            &format!("{base}/api/v1/facilities"),
        ],
    )
    .expect("curl");
    assert_eq!(post.status, 405, "{post:?}");
}

#[test]
fn avl6_ops3_browser_shows_the_hubs_facilities_with_counts_search_paging_and_sort() {
    require_root!();
    let lab = Lab::new().expect("lab");
    let (_hub, _hospital, base) = hub_with_facilities(&lab);
    let options = serde_json::json!({
        "facilities": {"search": "hospital", "address": "198.19.4.6"}
    });
    let (result, png) = run_browser(&lab, lab.ns(Node::Hub), &base, &options);
    let f = &result["facilities"];
    let total = (2 + EXTRA_FACILITIES).to_string();
    let first = &f["first"];
    assert_eq!(first["visible"], true, "{first:#}");
    assert_eq!(
        first["peers_table_visible"], false,
        "the paged table replaces it"
    );
    assert_eq!(first["counts"]["total"], total.as_str(), "{first:#}");
    assert_eq!(first["counts"]["up"], "1", "{first:#}");
    assert_eq!(first["counts"]["down"], "0", "{first:#}");
    assert_eq!(first["range"], format!("1–50 / {total}"), "{first:#}");
    assert_eq!(first["prev_disabled"], true);
    assert_eq!(first["next_disabled"], false);
    assert_eq!(first["rows"].as_array().map(Vec::len), Some(50));
    assert_eq!(first["rows"][0]["cells"][1], "待機", "Japanese by default");
    assert_eq!(first["placeholder"], "施設名またはアドレス");
    // The page's next poll updated the rows in place: the marked row is the same element.
    let marked = f["marked"].as_str().unwrap_or_default();
    let kept = f["refreshed"]["rows"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["name"] == marked).cloned())
        .unwrap_or_default();
    assert_eq!(kept["mark"], "kept", "{:#}", f["refreshed"]);
    // Search by name: the hospital, up, with its endpoint and a recent handshake.
    let search = f["search"]["rows"].as_array().cloned().unwrap_or_default();
    assert_eq!(search.len(), 1, "{:#}", f["search"]);
    assert_eq!(search[0]["name"], "hospital");
    assert_eq!(search[0]["state"], "up");
    assert_eq!(search[0]["cells"][1], "接続中");
    assert!(
        search[0]["cells"][2]
            .as_str()
            .is_some_and(|c| c.ends_with("秒前")),
        "{search:#?}"
    );
    assert!(
        search[0]["cells"][3]
            .as_str()
            .is_some_and(|c| c.starts_with(Node::Hospital.wan_address())),
        "{search:#?}"
    );
    assert_eq!(search[0]["cells"][4], "198.19.0.10/32");
    // Search by address: 198.19.4.6 and 198.19.4.60.
    let address: Vec<Value> = f["address"]["rows"]
        .as_array()
        .map(|rows| rows.iter().map(|r| r["name"].clone()).collect())
        .unwrap_or_default();
    assert_eq!(
        address,
        ["facility-0006", "facility-0060"],
        "{:#}",
        f["address"]
    );
    // The second page: the rest, with the facility that is up last (worst first).
    let page2 = &f["page2"];
    assert_eq!(page2["range"], format!("51–{total} / {total}"), "{page2:#}");
    assert_eq!(page2["next_disabled"], true);
    assert_eq!(page2["prev_disabled"], false);
    let rows = page2["rows"].as_array().cloned().unwrap_or_default();
    assert_eq!(rows.len(), 2 + EXTRA_FACILITIES as usize - 50);
    assert_eq!(
        rows.last().map(|r| r["name"].clone()),
        Some("hospital".into())
    );
    assert_eq!(
        f["by_name"]["rows"][0]["name"], "clinic",
        "{:#}",
        f["by_name"]
    );
    let desc: Vec<Value> = f["by_name_desc"]["rows"]
        .as_array()
        .map(|rows| rows.iter().take(2).map(|r| r["name"].clone()).collect())
        .unwrap_or_default();
    assert_eq!(desc, ["hospital", "facility-0060"]);
    // The box searched and sorted: the page asked for one page at a time.
    let requests = result["requests"].to_string();
    for query in [
        "/api/v1/facilities?offset=0&limit=50&sort=state&order=asc",
        "/api/v1/facilities?offset=50&limit=50&sort=state&order=asc",
        "/api/v1/facilities?offset=0&limit=50&sort=state&order=asc&q=hospital",
        "/api/v1/facilities?offset=0&limit=50&sort=name&order=asc",
        "/api/v1/facilities?offset=0&limit=50&sort=name&order=desc",
        "/api/v1/status?peers=summary",
    ] {
        assert!(
            requests.contains(query),
            "{query} not requested: {requests}"
        );
    }
    let english = &f["english"];
    assert_eq!(english["placeholder"], "facility name or address");
    assert_eq!(english["headers"][0], "Facility");
    assert_eq!(english["headers"][2], "Last reached");
    assert_eq!(english["rows"][0]["cells"][1], "up", "{english:#}");
    if let Some(out) = std::env::var_os("RENKEI_FACILITIES_SCREENSHOT_OUT") {
        std::fs::write(&out, &png).expect("copy the screenshot");
    }
}

#[test]
fn avl6_ops4_a_hub_with_per_peer_metrics_off_serves_the_aggregates_only() {
    require_root!();
    let lab = Lab::new().expect("lab");
    let (_hub, _hospital, base) = hub_with_facilities_and(&lab, |config| {
        if let Some(status) = config.status.as_mut() {
            status.per_peer_metrics = false;
        }
    });
    let ns = lab.ns(Node::Hub);
    let session = login(ns, &base, ADMIN_PASSWORD).expect("login");
    let metrics = get(ns, &base, &session, "/metrics").expect("metrics");
    assert_eq!(metrics.status, 200, "{metrics:?}");
    promtool(ns, &metrics.body);
    let total = f64::from(2 + EXTRA_FACILITIES);
    assert_eq!(
        sample(&metrics.body, "renkei_peers{state=\"up\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample(&metrics.body, "renkei_peers{state=\"idle\"}"),
        Some(total - 1.0)
    );
    assert_eq!(sample(&metrics.body, "renkei_peers_in_alarm"), Some(0.0));
    assert!(
        sample(&metrics.body, "renkei_peers_receive_bytes_total").is_some_and(|b| b > 0.0),
        "the hospital's handshake counts"
    );
    assert!(
        !metrics.body.contains("peer=\""),
        "no per-peer series:\n{}",
        metrics.body
    );
    assert!(metrics
        .body
        .contains("renkei_tunnel_state{state=\"up\"} 1\n"));
}
