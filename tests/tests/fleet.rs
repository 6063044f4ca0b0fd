//! `renkei fleet` in the namespace lab (OPS-5): the operator's fleet commands, run as the real
//! binary in the data centre, against the lab's boxes over their tunnels, plus one inventory
//! entry where nothing answers. `status` tabulates every box's facts in parallel and reports
//! the silent one within its per-box timeout; `push` rolls signed configs out canary first
//! and stops at the canary's rollback; `confirm` confirms what is pending fleet-wide.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use renkei::config::Config;
use renkei_lab::boxconfig::peer_mut;
use renkei_lab::daemon::renkei_bin;
use renkei_lab::operator::{Operator, MANAGEMENT_PORT};
use renkei_lab::pki::LeafFiles;
use renkei_lab::tlstools::{run_bounded, Finished};
use renkei_lab::{require_root, wait_until, Daemon, Lab, Namespace, Node};
use serde::Serialize;
use serde_json::Value;

/// `management.confirm_timeout_secs` of every config here (the smallest allowed).
const CONFIRM_TIMEOUT_SECS: u64 = 30;
/// `--timeout-secs` of the fleet commands: the bound on one exchange with one box.
const PER_BOX_TIMEOUT_SECS: u64 = 3;
/// Time a fleet status may take beyond the per-box timeout (process start, TLS, the lab).
const STATUS_SLACK: Duration = Duration::from_secs(4);
/// An address inside the lab's WAN (198.18.0.0/24) where no host is: the data centre's
/// requests to it get no answer at all.
const SILENT_BOX: &str = "198.18.0.99";
/// Longest any one fleet command may run here.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(150);

/// The inventory file, built from typed values.
#[derive(Serialize)]
struct InventoryFile {
    operator: OperatorFiles,
    #[serde(rename = "box")]
    boxes: Vec<InventoryBox>,
}

#[derive(Serialize)]
struct OperatorFiles {
    certificate_file: PathBuf,
    private_key_file: PathBuf,
    ca_file: PathBuf,
}

#[derive(Serialize)]
struct InventoryBox {
    name: String,
    management: String,
    server_name: String,
    group: String,
}

fn lab_box(node: Node, group: &str) -> InventoryBox {
    InventoryBox {
        name: node.short().to_string(),
        management: format!("{}:{MANAGEMENT_PORT}", node.tunnel_address()),
        server_name: node.tls_name().to_string(),
        group: group.to_string(),
    }
}

fn silent_box() -> InventoryBox {
    InventoryBox {
        name: "silent".to_string(),
        management: format!("{SILENT_BOX}:{MANAGEMENT_PORT}"),
        server_name: "silent.renkei.example".to_string(),
        group: "clinics".to_string(),
    }
}

/// Writes `<operator>/<name>` naming `boxes` and the operator's credentials.
fn write_inventory(operator: &Operator, name: &str, boxes: Vec<InventoryBox>) -> PathBuf {
    let file = InventoryFile {
        operator: OperatorFiles {
            certificate_file: operator.client.cert.clone(),
            private_key_file: operator.client.key.clone(),
            ca_file: operator.ca.clone(),
        },
        boxes,
    };
    let path = operator.dir.join(name);
    std::fs::write(&path, toml::to_string(&file).expect("inventory as TOML")).expect("write");
    path
}

/// `renkei fleet <args>` in `ns`, with the inventory and the per-box timeout.
fn fleet(ns: &Namespace, inventory: &Path, args: &[&str]) -> Finished {
    let bin = renkei_bin().expect("renkei binary");
    let inventory = inventory.display().to_string();
    let timeout = PER_BOX_TIMEOUT_SECS.to_string();
    let mut all: Vec<&str> = vec!["fleet"];
    all.extend_from_slice(&args[..1]);
    all.extend(["--inventory", &inventory, "--timeout-secs", &timeout]);
    all.extend_from_slice(&args[1..]);
    run_bounded(ns, &bin.to_string_lossy(), &all, b"", COMMAND_TIMEOUT).expect("renkei fleet")
}

/// The JSON a fleet command printed with `--json` (stdout comes first in `output`).
fn json_of(finished: &Finished) -> Value {
    let start = finished
        .output
        .find(['[', '{'])
        .unwrap_or_else(|| panic!("no JSON in:\n{}", finished.output));
    serde_json::Deserializer::from_str(&finished.output[start..])
        .into_iter::<Value>()
        .next()
        .and_then(Result::ok)
        .unwrap_or_else(|| panic!("no JSON in:\n{}", finished.output))
}

/// The entry for box `name` in a fleet command's JSON list (or a push report's `boxes`).
fn entry<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .or_else(|| list["boxes"].as_array())
        .and_then(|boxes| boxes.iter().find(|b| b["name"] == name))
        .unwrap_or_else(|| panic!("no {name} in {list:#}"))
}

/// A lab box's config at `version`, managed by `operator`.
fn managed(lab: &Lab, operator: &Operator, node: Node, version: u64) -> Config {
    let mut config = lab.full(node);
    config.meta.version = version;
    config.management = Some(operator.management(node, CONFIRM_TIMEOUT_SECS, false));
    config
}

/// Signs `config` into the push folder `<operator>/<folder>/<box>.toml`.
fn stage(operator: &Operator, folder: &str, node: Node, config: &Config) -> PathBuf {
    std::fs::create_dir_all(operator.dir.join(folder)).expect("push folder");
    operator
        .write_signed(&format!("{folder}/{}.toml", node.short()), config, None)
        .expect("renkei sign");
    operator.dir.join(folder)
}

fn config_of(daemon: &Daemon) -> (Value, Value) {
    let config = daemon.status().expect("status")["config"].clone();
    (config["version"].clone(), config["state"].clone())
}

fn wait_link_up(lab: &Lab, daemon: &Daemon, what: &str) {
    wait_until(Duration::from_secs(20), what, || {
        (daemon.peer(lab.dc_link_name()).ok()?["state"] == "up").then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", daemon.log_text()));
}

#[test]
fn ops5_auth2_fleet_status_push_in_waves_and_confirm_over_the_lab_with_a_silent_box() {
    require_root!();
    let lab = Lab::new().expect("lab");
    let operator = Operator::new(&lab).expect("operator");
    let _hub = lab
        .start(Node::Hub, &managed(&lab, &operator, Node::Hub, 1))
        .expect("hub");
    let hospital = lab
        .start(Node::Hospital, &managed(&lab, &operator, Node::Hospital, 1))
        .expect("hospital");
    let clinic = lab
        .start(Node::Clinic, &managed(&lab, &operator, Node::Clinic, 1))
        .expect("clinic");
    wait_link_up(&lab, &hospital, "the hospital's tunnel");
    let dc = lab.ns(Node::Hub);

    // The clinic is on demand and idle: the operator cannot reach it. With --wait the fleet
    // command keeps trying until its tunnel comes up (a check-in; here the administrator's
    // connect) and reaches it then.
    let clinic_only = write_inventory(
        &operator,
        "clinic.toml",
        vec![lab_box(Node::Clinic, "clinics")],
    );
    let idle = fleet(dc, &clinic_only, &["status", "--json"]);
    assert_eq!(
        entry(&json_of(&idle), "clinic")["reachable"],
        false,
        "{}",
        idle.output
    );
    let waited = std::thread::scope(|scope| {
        let waiting =
            scope.spawn(|| fleet(dc, &clinic_only, &["status", "--json", "--wait", "40"]));
        assert_eq!(clinic.control("connect").expect("connect").trim(), "ok");
        waiting.join().expect("fleet status --wait")
    });
    assert!(waited.success(), "{}", waited.output);
    assert_eq!(entry(&json_of(&waited), "clinic")["reachable"], true);
    wait_link_up(&lab, &clinic, "the clinic's tunnel");

    let inventory = write_inventory(
        &operator,
        "fleet.toml",
        vec![
            lab_box(Node::Hospital, "canary"),
            lab_box(Node::Clinic, "clinics"),
            silent_box(),
        ],
    );

    // Status: every box's facts; the silent one reported, within its own timeout.
    let began = Instant::now();
    let status = fleet(dc, &inventory, &["status", "--json"]);
    let took = began.elapsed();
    assert!(
        !status.success(),
        "a silent box makes the status fail:\n{}",
        status.output
    );
    assert!(
        took <= Duration::from_secs(PER_BOX_TIMEOUT_SECS) + STATUS_SLACK,
        "fleet status took {took:?}"
    );
    let list = json_of(&status);
    for (node, role, policy) in [
        (Node::Hospital, "disclosing", "always_on"),
        (Node::Clinic, "viewing", "on_demand"),
    ] {
        let facts = &entry(&list, node.short())["facts"];
        assert_eq!(
            facts["facility"],
            format!("lab {}", node.short()),
            "{list:#}"
        );
        assert_eq!(facts["role"], role, "{list:#}");
        assert_eq!(facts["carrier"]["state"], "up", "{list:#}");
        assert_eq!(facts["carrier"]["policy"], policy, "{list:#}");
        assert_eq!(facts["config_version"], 1, "{list:#}");
        assert_eq!(facts["config_state"], "confirmed", "{list:#}");
        assert!(
            facts["certificate_days_left"]
                .as_i64()
                .is_some_and(|d| d > 0),
            "{list:#}"
        );
        assert!(
            facts["firmware_version"]
                .as_str()
                .is_some_and(|v| !v.is_empty()),
            "{list:#}"
        );
    }
    let silent = entry(&list, "silent");
    assert_eq!(silent["reachable"], false, "{list:#}");
    assert!(
        silent["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("unreachable")),
        "{list:#}"
    );
    let table = fleet(dc, &inventory, &["status"]);
    let line = |name: &str| {
        table
            .output
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no line for {name}:\n{}", table.output))
            .to_string()
    };
    assert!(
        line("hospital").contains("lab hospital") && line("hospital").contains("v1 confirmed"),
        "{}",
        table.output
    );
    assert!(line("silent").contains("unreachable"), "{}", table.output);

    // The facts are the operator's: another box's certificate from the same CA gets 403.
    let tls = lab.tls_dir(Node::Hub);
    let hub_box = LeafFiles {
        cert: tls.join("box.crt"),
        key: tls.join("box.key"),
    };
    let refused = operator
        .raw_request(
            &lab,
            Node::Hospital,
            ("GET", "/v1/status"),
            None,
            &[],
            Some(&hub_box),
        )
        .expect("curl");
    assert_eq!(refused.status, Some(403), "{}", refused.output);
    assert_eq!(
        refused.error_code(),
        Some("not_operator"),
        "{}",
        refused.output
    );
    assert!(refused.body.get("facility").is_none(), "{}", refused.output);

    // The hub is reached through a facility's tunnel, the only way into its management API.
    let hub_inventory = write_inventory(&operator, "hub.toml", vec![lab_box(Node::Hub, "hubs")]);
    let hub_status = fleet(
        lab.ns(Node::Hospital),
        &hub_inventory,
        &["status", "--json"],
    );
    assert!(hub_status.success(), "{}", hub_status.output);
    let hub_list = json_of(&hub_status);
    let hub_facts = &entry(&hub_list, Node::Hub.short())["facts"];
    assert_eq!(hub_facts["role"], "hub", "{hub_facts:#}");
    assert_eq!(hub_facts["facility"], "lab dc", "{hub_facts:#}");
    assert_eq!(hub_facts["carrier"]["state"], "up", "{hub_facts:#}");
    assert_eq!(hub_facts["config_version"], 1, "{hub_facts:#}");

    // A push that nobody confirms: the canary stays pending, the rollout stops there, and
    // `fleet confirm` confirms it.
    let v2 = stage(
        &operator,
        "v2",
        Node::Hospital,
        &managed(&lab, &operator, Node::Hospital, 2),
    );
    stage(
        &operator,
        "v2",
        Node::Clinic,
        &managed(&lab, &operator, Node::Clinic, 2),
    );
    let v2 = v2.display().to_string();
    let pending = fleet(
        dc,
        &inventory,
        &["push", "--configs", &v2, "--settle-secs", "2", "--json"],
    );
    assert!(!pending.success(), "{}", pending.output);
    let report = json_of(&pending);
    assert_eq!(report["stopped_after"], "canary", "{report:#}");
    assert_eq!(
        entry(&report, "hospital")["outcome"],
        "still_pending",
        "{report:#}"
    );
    assert_eq!(
        entry(&report, "clinic")["outcome"],
        "not_pushed",
        "{report:#}"
    );
    assert_eq!(config_of(&clinic).0, 1);
    let confirmed = fleet(dc, &inventory, &["confirm", "--json"]);
    let answers = json_of(&confirmed);
    assert_eq!(
        entry(&answers, "hospital")["outcome"],
        "confirmed",
        "{answers:#}"
    );
    assert_eq!(entry(&answers, "hospital")["version"], 2, "{answers:#}");
    assert_eq!(
        entry(&answers, "clinic")["outcome"],
        "nothing_pending",
        "{answers:#}"
    );
    assert_eq!(
        entry(&answers, "silent")["outcome"],
        "unreachable",
        "{answers:#}"
    );
    assert!(!confirmed.success(), "the silent box is not confirmed");
    assert_eq!(
        config_of(&hospital),
        (Value::from(2), Value::from("confirmed"))
    );

    // Two waves, confirmed by the operator's tool: the canary, then the clinic.
    let v3 = stage(
        &operator,
        "v3",
        Node::Hospital,
        &managed(&lab, &operator, Node::Hospital, 3),
    );
    stage(
        &operator,
        "v3",
        Node::Clinic,
        &managed(&lab, &operator, Node::Clinic, 3),
    );
    let v3 = v3.display().to_string();
    let rollout = fleet(
        dc,
        &inventory,
        &[
            "push",
            "--configs",
            &v3,
            "--confirm",
            "--settle-secs",
            "60",
            "--json",
        ],
    );
    assert!(rollout.success(), "{}", rollout.output);
    let report = json_of(&rollout);
    for name in ["hospital", "clinic"] {
        assert_eq!(entry(&report, name)["outcome"], "confirmed", "{report:#}");
        assert_eq!(entry(&report, name)["version"], 3, "{report:#}");
    }
    assert_eq!(entry(&report, "hospital")["wave"], "canary", "{report:#}");
    assert_eq!(entry(&report, "clinic")["wave"], "rest", "{report:#}");
    assert_eq!(
        entry(&report, "silent")["outcome"],
        "not_pushed",
        "{report:#}"
    );
    for daemon in [&hospital, &clinic] {
        assert_eq!(
            config_of(daemon),
            (Value::from(3), Value::from("confirmed"))
        );
    }

    // The canary's config names a wrong hub key: it cuts the hospital off, the box rolls it
    // back when the window ends, and the rollout stops there: the clinic is never pushed.
    let mut cut = managed(&lab, &operator, Node::Hospital, 4);
    peer_mut(&mut cut, "dc").public_key = renkei::keys::encode_key(&[42u8; 32]);
    let v4 = stage(&operator, "v4", Node::Hospital, &cut);
    stage(
        &operator,
        "v4",
        Node::Clinic,
        &managed(&lab, &operator, Node::Clinic, 4),
    );
    let clinic_file = std::fs::read_to_string(&clinic.config).expect("clinic config");
    let v4 = v4.display().to_string();
    let stopped = fleet(
        dc,
        &inventory,
        &[
            "push",
            "--configs",
            &v4,
            "--confirm",
            "--settle-secs",
            "90",
            "--json",
        ],
    );
    assert!(!stopped.success(), "{}", stopped.output);
    let report = json_of(&stopped);
    assert_eq!(report["stopped_after"], "canary", "{report:#}");
    let canary = entry(&report, "hospital");
    assert_eq!(canary["outcome"], "rolled_back", "{report:#}");
    assert_eq!(canary["pushed"], 4, "{report:#}");
    assert_eq!(canary["running"], 3, "{report:#}");
    assert_eq!(
        entry(&report, "clinic")["outcome"],
        "not_pushed",
        "{report:#}"
    );
    assert_eq!(
        config_of(&hospital),
        (Value::from(3), Value::from("confirmed"))
    );
    assert_eq!(
        config_of(&clinic),
        (Value::from(3), Value::from("confirmed"))
    );
    assert_eq!(
        std::fs::read_to_string(&clinic.config).expect("clinic config"),
        clinic_file,
        "the clinic was not touched"
    );
}
