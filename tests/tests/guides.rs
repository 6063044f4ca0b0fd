//! The guides, followed against the lab (issue #8): every `sh` block of
//! `docs/operator-guide.md` runs in order, exactly as written, in the data centre's namespace of
//! a demo lab (`lab up`), from an operator's folder holding the files the guide names, with the
//! few variables the guide says to set (`BOX_IP`, `BOX_NAME`, `CSR_SHA256`, and `BOX_LOG` for
//! the lab's log-reading step) taken from `lab.json`. What the guide leaves to the operator
//! (writing a config) and to the installer (first boot's CSR, placing a certificate on the box)
//! the test does, as the guide describes it, between the blocks.
//!
//! The installer's guide is followed by `image/boot-test` under QEMU, which runs the guide's
//! blocks itself; the last test here checks that the two stay the same.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::{assert_gone, bounded, Commands, LabDir, COMMAND_TIMEOUT};
use renkei::config::{Config, ManagementConfig};
use renkei_lab::boxconfig::to_toml;
use renkei_lab::demo::{LabRecord, NodeRecord};
use renkei_lab::journal_remote::{access_records, sealed_journal, usec_from_now};
use renkei_lab::{require_root, wait_until};
use serde_json::Value;

/// A ```sh block of a guide.
#[derive(Debug, Clone)]
struct Block {
    /// Line of the opening fence (1-based), for messages.
    line: usize,
    /// The commands, as written.
    text: String,
}

impl Block {
    /// The first line that is not a comment.
    fn first_command(&self) -> &str {
        self.text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .unwrap_or("")
    }
}

/// The ```sh blocks of a Markdown file, in order (also those indented in a list item).
fn sh_blocks(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in markdown.lines().enumerate() {
        match open.as_mut() {
            None if line.trim() == "```sh" => {
                open = Some(Block {
                    line: i + 1,
                    text: String::new(),
                })
            }
            None => {}
            Some(_) if line.trim() == "```" => blocks.extend(open.take()),
            Some(block) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
        }
    }
    assert!(open.is_none(), "an unclosed ```sh block");
    blocks
}

fn guide(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The first line of the block the lab cannot run (it needs a shell on a real box).
const NOT_IN_THE_LAB: &str = "# on a box with a shell (not in the lab)";

/// The operator following the guide: its blocks in order, run with `sh -eu` in the operator's
/// folder, `renkei` under test first on `PATH`, the guide's variables in the environment.
struct Operator {
    blocks: Vec<Block>,
    next: usize,
    dir: PathBuf,
    namespace: Option<String>,
    vars: BTreeMap<&'static str, String>,
}

impl Operator {
    /// Runs the next block, which must start with `first` and succeed; returns what it printed
    /// (standard output, then standard error).
    fn run(&mut self, first: &str) -> String {
        let block = self.take(first);
        let output = self.sh(&block.text);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            output.status.success(),
            "operator-guide.md:{} failed ({}):\n{}\n--- printed ---\n{text}",
            block.line,
            output.status,
            block.text
        );
        text
    }

    /// The next block, checked to start with `first`.
    fn take(&mut self, first: &str) -> Block {
        let block = self
            .blocks
            .get(self.next)
            .unwrap_or_else(|| panic!("the guide has no block {} (wanted {first:?})", self.next))
            .clone();
        self.next += 1;
        assert!(
            block.first_command().starts_with(first),
            "operator-guide.md:{}: expected a block starting with {first:?}, found:\n{}",
            block.line,
            block.text
        );
        block
    }

    /// `sh -eu -c text` where the operator works.
    fn sh(&self, text: &str) -> Output {
        let renkei = renkei_lab::daemon::renkei_bin().expect("renkei built");
        let bin = renkei.parent().expect("bin folder");
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut command = match &self.namespace {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "sh", "-euc", text]);
                c
            }
            None => {
                let mut c = Command::new("sh");
                c.args(["-euc", text]);
                c
            }
        };
        command.current_dir(&self.dir).env("PATH", path);
        for (name, value) in &self.vars {
            command.env(name, value);
        }
        bounded(&mut command, COMMAND_TIMEOUT)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// A folder removed when dropped.
struct Folder(PathBuf);

impl Drop for Folder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The `fingerprint <hex>` line `renkei keygen --operator` prints.
fn fingerprint(printed: &str) -> String {
    printed
        .lines()
        .find_map(|l| l.strip_prefix("fingerprint "))
        .unwrap_or_else(|| panic!("no fingerprint in:\n{printed}"))
        .trim()
        .to_string()
}

/// The JSON documents in a command's output, in order.
fn answers(printed: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut rest = printed;
    while let Some(at) = rest.find('{') {
        let mut stream = serde_json::Deserializer::from_str(&rest[at..]).into_iter::<Value>();
        match stream.next() {
            Some(Ok(value)) => {
                out.push(value);
                rest = &rest[at + stream.byte_offset()..];
            }
            _ => rest = &rest[at + 1..],
        }
    }
    out
}

/// The guide's example inventory (the ```toml block of its section 10) with the lab's boxes in
/// place of the example's: each `[[box]]` named after a lab box gets that box's address (the
/// guide's port kept) and certificate name. Both boxes must be in the guide.
fn fleet_inventory(guide: &str, hospital: &NodeRecord, clinic: &NodeRecord) -> String {
    let section = guide
        .split_once("## 10. Running a fleet")
        .map(|(_, rest)| rest)
        .expect("section 10 of the guide");
    let block = section
        .split_once("```toml\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(block, _)| block)
        .expect("the inventory block of section 10");
    let mut inventory: toml::Table = toml::from_str(block).expect("the guide's inventory parses");
    let boxes = inventory
        .get_mut("box")
        .and_then(toml::Value::as_array_mut)
        .expect("[[box]] entries in the guide's inventory");
    for node in [hospital, clinic] {
        let entry = boxes
            .iter_mut()
            .filter_map(toml::Value::as_table_mut)
            .find(|b| b.get("name").and_then(toml::Value::as_str) == Some(node.name.as_str()))
            .unwrap_or_else(|| panic!("no box named {} in:\n{block}", node.name));
        let port = entry
            .get("management")
            .and_then(toml::Value::as_str)
            .and_then(|m| m.rsplit_once(':'))
            .map(|(_, port)| port.to_string())
            .unwrap_or_else(|| panic!("no management address with a port for {}", node.name));
        entry.insert(
            "management".into(),
            format!("{}:{port}", node.link_address).into(),
        );
        entry.insert("server_name".into(), node.tls_identity.clone().into());
    }
    toml::to_string(&inventory).expect("the inventory as TOML")
}

/// A serial number as lowercase hex without leading zeros (openssl prints `serial=0A1B...`).
fn serial(text: &str) -> String {
    let hex: String = text
        .trim()
        .trim_start_matches("serial=")
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .collect::<String>()
        .to_ascii_lowercase();
    hex.trim_start_matches('0').to_string()
}

fn status_of(record: &LabRecord, node: &str) -> Value {
    let node = record.node(node).expect("node");
    let answer = renkei::control_socket::request(&node.runtime_dir, "status").expect("status");
    serde_json::from_str(&answer).expect("status JSON")
}

/// `config` (at `from`) with `[meta]` at `version` and a description, nothing else changed.
fn with_meta(config: &Config, from: u64, version: u64, description: &str) -> Config {
    assert_eq!(config.meta.version, from, "{config:#?}");
    let mut next = config.clone();
    next.meta.version = version;
    next.meta.description = Some(description.to_string());
    next
}

/// The `[management]` section the demo gives every box.
fn management(config: &mut Config) -> &mut ManagementConfig {
    config
        .management
        .as_mut()
        .expect("the demo config has [management]")
}

/// The serial of the certificate the hospital's "documents" service presents now, as a TLS
/// client in the data centre sees it.
fn served_serial(op: &Operator, hospital_ip: &str, name: &str) -> String {
    let output = op.sh(&format!(
        "openssl s_client -connect {hospital_ip}:8443 -servername {name} -CAfile operator-ca.crt \
         -cert operator.crt -key operator.key </dev/null 2>/dev/null | \
         openssl x509 -noout -serial"
    ));
    serial(&String::from_utf8_lossy(&output.stdout))
}

#[test]
fn auth2_log2_ops4_operator_guide_followed_in_the_lab() {
    require_root!();
    let text = guide("operator-guide.md");
    let blocks = sh_blocks(&text);
    let work =
        Folder(std::env::temp_dir().join(format!("renkei-operator-guide-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&work.0);
    std::fs::create_dir_all(&work.0).expect("operator folder");
    let mut op = Operator {
        blocks,
        next: 0,
        dir: work.0.clone(),
        namespace: None,
        vars: BTreeMap::new(),
    };

    // 1. The signing key, made before any box is installed.
    let printed = op.run("renkei keygen --operator --private-key operator-signing.key");
    let signer = fingerprint(&printed);
    let key = op.file("operator-signing.key");
    let mode = std::fs::metadata(&key).expect("signing key").permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
    assert!(op.file("operator-signing.key.pub").exists());

    // The boxes are installed trusting it (`lab up --signing-key`, as the guide says), and the
    // operator's CA and client certificate are the lab's, under the guide's names.
    let lab = LabDir::new("guide");
    let (_, record) = lab.up(&["--signing-key", &key.to_string_lossy()]);
    let pki = record.pki.clone().expect("pki");
    for (from, to) in [
        (&pki.ca_certificate, "operator-ca.crt"),
        (&pki.ca_key, "operator-ca.key"),
        (&pki.operator_certificate, "operator.crt"),
        (&pki.operator_key, "operator.key"),
    ] {
        std::fs::copy(from, op.file(to)).unwrap_or_else(|e| panic!("{to}: {e}"));
    }
    let hub = record.node("dc").expect("hub").clone();
    let hospital = record.node("hospital").expect("hospital").clone();
    op.namespace = Some(hub.namespace.clone());
    op.vars.insert("BOX_IP", hospital.link_address.clone());
    op.vars.insert("BOX_NAME", hospital.tls_identity.clone());
    assert_eq!(
        status_of(&record, "hospital")["config"]["version"],
        1,
        "the hospital starts at version 1"
    );

    // 2. The box's first boot makes a TLS key and a CSR (keeping its WireGuard key) and shows
    // the CSR's fingerprint; the installer reads it out and sends box.csr.
    let box_dir = hospital.config.parent().expect("box folder").to_path_buf();
    let first_boot = bounded(
        Command::new(renkei_lab::daemon::renkei_bin().expect("renkei"))
            .arg("keygen")
            .arg("--private-key")
            .arg(box_dir.join("wg.key"))
            .arg("--tls-key")
            .arg(box_dir.join("tls/box-2.key"))
            .arg("--csr")
            .arg(box_dir.join("box.csr")),
        COMMAND_TIMEOUT,
    );
    let console = String::from_utf8_lossy(&first_boot.stdout).into_owned();
    assert!(first_boot.status.success(), "{first_boot:?}");
    assert!(
        hospital
            .wireguard_public_key
            .as_deref()
            .is_some_and(|key| console.contains(key)),
        "first boot kept the box's WireGuard key:\n{console}"
    );
    let csr_sha256 = console
        .lines()
        .find_map(|l| l.trim().strip_prefix("CSR SHA-256:"))
        .expect("CSR SHA-256 on the console")
        .trim()
        .to_string();
    std::fs::copy(box_dir.join("box.csr"), op.file("box.csr")).expect("box.csr to the operator");

    // The fingerprint check fails for a CSR that is not the one read off the box...
    let check = op.blocks[op.next].clone();
    assert!(check.first_command().starts_with("openssl req -in box.csr"));
    let mut wrong = csr_sha256.clone();
    wrong.replace_range(0..2, if wrong.starts_with("00") { "11" } else { "00" });
    op.vars.insert("CSR_SHA256", wrong);
    let refused = op.sh(&check.text);
    assert!(!refused.status.success(), "a wrong fingerprint passed");
    assert!(!String::from_utf8_lossy(&refused.stdout).contains("is the box's CSR"));
    // ... and passes for the right one.
    op.vars.insert("CSR_SHA256", csr_sha256.clone());
    let printed = op.run("openssl req -in box.csr -noout -verify");
    assert!(printed.contains("box.csr is the box's CSR"), "{printed}");

    // The certificate, issued from the CSR by the operator CA.
    let printed = op.run("printf '%s\\n' \"subjectAltName=DNS:$BOX_NAME\"");
    assert!(printed.contains("box.crt: OK"), "{printed}");
    assert!(
        printed.contains(&format!("DNS:{}", hospital.tls_identity)),
        "{printed}"
    );
    let issued = serial(
        printed
            .lines()
            .find(|l| l.starts_with("serial="))
            .unwrap_or_else(|| panic!("no serial in:\n{printed}")),
    );
    assert!(issued.len() >= 24, "a random serial: {issued}");
    // The installer places it on the box, beside the key first boot made.
    std::fs::copy(op.file("box.crt"), box_dir.join("tls/box-2.crt")).expect("box.crt on the box");

    // 3. The operator writes hospital-a.toml: the running config at version 7, its [tls] naming
    // the new certificate and key. Then checks it.
    let running: Config =
        toml::from_str(&std::fs::read_to_string(&hospital.config).expect("running config"))
            .expect("the running config parses");
    let mut config_a = with_meta(&running, 1, 7, "certificate issued from the box's CSR");
    let tls = config_a.tls.as_mut().expect("the running config has [tls]");
    assert_eq!(
        (&tls.certificate_file, &tls.private_key_file),
        (&box_dir.join("tls/box.crt"), &box_dir.join("tls/box.key"))
    );
    tls.certificate_file = box_dir.join("tls/box-2.crt");
    tls.private_key_file = box_dir.join("tls/box-2.key");
    std::fs::write(op.file("hospital-a.toml"), to_toml(&config_a)).expect("hospital-a.toml");
    let printed = op.run("renkei check --offline --config hospital-a.toml");
    assert!(
        printed.contains("hospital-a.toml: ok (offline"),
        "{printed}"
    );

    // 4. Signed and pushed: pending, running on probation with the new certificate.
    let printed = op.run("renkei sign --key operator-signing.key hospital-a.toml");
    let pushed = answers(&printed);
    assert_eq!(
        pushed.first().map(|a| a["state"].clone()),
        Some("pending".into()),
        "{printed}"
    );
    assert_eq!(pushed[0]["version"], 7, "{printed}");
    assert!(op.file("hospital-a.toml.sig").exists());
    wait_until(
        Duration::from_secs(20),
        "the new certificate served",
        || {
            (served_serial(&op, &hospital.link_address, &hospital.tls_identity) == issued)
                .then_some(())
        },
    )
    .expect("the hospital's service presents the certificate issued from its CSR");

    // 5. Confirmed, and read back.
    let printed = op.run("renkei confirm --to \"$BOX_IP:7443\"");
    let confirmed = answers(&printed);
    assert_eq!(
        confirmed.first().map(|a| a["state"].clone()),
        Some("confirmed".into()),
        "{printed}"
    );
    let remote = answers(&printed);
    let remote = remote.last().expect("renkei remote's answer");
    assert_eq!(remote["version"], 7, "{printed}");
    assert_eq!(remote["state"], "confirmed", "{printed}");
    assert_eq!(remote["signer"], signer.as_str(), "{printed}");
    assert_eq!(remote["pushed_by"], "operator.renkei.example", "{printed}");
    // The box works with it: a document crosses the chain, the hub verifying the hospital's
    // new certificate, and the box lists it among its certificates.
    let commands = Commands::new(&record);
    let server = record.document_server.as_ref().expect("document server");
    let fetched = commands.run("fetch-document");
    assert_eq!(
        renkei_lab::docserver::sha256_hex(&fetched),
        server.documents[0].sha256
    );
    let status = status_of(&record, "hospital");
    assert!(
        status["certificates"]
            .as_array()
            .expect("certificates")
            .iter()
            .any(|c| c["role"] == "box_chain"
                && serial(c["serial"].as_str().unwrap_or("")) == issued),
        "{status:#}"
    );

    // 6. Key rotation: the new key, named as the next one in version 8 (signed with the
    // current key), then carried as the key in version 9 (signed with the new one).
    let printed = op.run("renkei keygen --operator --private-key operator-signing-2027.key");
    let signer_2027 = fingerprint(&printed);
    assert_ne!(signer_2027, signer);
    let pem = std::fs::read_to_string(op.file("operator-signing-2027.key.pub")).expect("pub");
    assert!(
        config_a
            .management
            .as_ref()
            .is_some_and(|m| m.operator_signing_key_file.is_some()),
        "the box's signing key file"
    );
    let mut config_b = with_meta(&config_a, 7, 8, "next signing key");
    management(&mut config_b).next_operator_signing_key = Some(pem.trim_end().to_string());
    std::fs::write(op.file("hospital-b.toml"), to_toml(&config_b)).expect("hospital-b.toml");
    let printed = op.run("renkei sign --key operator-signing.key hospital-b.toml");
    assert_pushed_then_confirmed(&printed);
    let mut config_c = with_meta(&config_a, 7, 9, "rotated signing key");
    let rotated = management(&mut config_c);
    rotated.operator_signing_key_file = None;
    rotated.operator_signing_key = Some(pem.trim_end().to_string());
    std::fs::write(op.file("hospital-c.toml"), to_toml(&config_c)).expect("hospital-c.toml");
    let printed = op.run("renkei sign --key operator-signing-2027.key hospital-c.toml");
    assert_pushed_then_confirmed(&printed);
    let config = status_of(&record, "hospital")["config"].clone();
    assert_eq!(config["version"], 9, "{config:#}");
    assert_eq!(config["signer"], signer_2027.as_str(), "{config:#}");
    // From now on the old key is refused.
    let config_d = with_meta(&config_c, 9, 10, "signed with the retired key");
    std::fs::write(op.file("hospital-d.toml"), to_toml(&config_d)).expect("hospital-d.toml");
    let refused = op.sh("renkei sign --key operator-signing.key hospital-d.toml && \
         renkei push --to \"$BOX_IP:7443\" --server-name \"$BOX_NAME\" --cert operator.crt \
         --key operator.key --ca operator-ca.crt hospital-d.toml");
    let printed = String::from_utf8_lossy(&refused.stdout);
    assert!(!refused.status.success(), "{printed}");
    assert_eq!(
        answers(&printed).first().map(|a| a["error"].clone()),
        Some("bad_signature".into()),
        "{printed}"
    );
    assert_eq!(status_of(&record, "hospital")["config"]["version"], 9);

    // 7. Metrics, as the operator's monitoring reads them: the config version and the
    // certificate issued in section 2.
    let metrics = op.run("curl -sS --fail --cacert operator-ca.crt");
    assert!(metrics.contains("\nrenkei_config_version 9\n"), "{metrics}");
    assert!(
        metrics.contains("renkei_tunnel_state{state=\"up\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("renkei_certificate_expiry_seconds{")
                && l.contains("role=\"box_chain\"")
                && l.contains("serial=\"")
                && serial(
                    l.split("serial=\"")
                        .nth(1)
                        .and_then(|s| s.split('"').next())
                        .unwrap_or("")
                ) == issued),
        "{metrics}"
    );

    // Logs: the journald commands need a shell on a real box, and say so; the lab's
    // equivalent reads the box's log file, where the same fields are.
    let journal = op.take("journalctl -u renkei EVENT=refused");
    assert_eq!(
        journal.text.lines().next(),
        Some(NOT_IN_THE_LAB),
        "operator-guide.md:{}",
        journal.line
    );
    op.vars
        .insert("BOX_LOG", hospital.log.to_string_lossy().into_owned());
    let events = op.run("grep -E 'event=\"(received|refused|applied|confirmed|rolled_back)\"'");
    for version in [7, 8, 9] {
        for event in ["received", "applied", "confirmed"] {
            assert!(
                events
                    .lines()
                    .any(|l| l.contains(&format!("event=\"{event}\""))
                        && l.contains(&format!("version={version}"))),
                "no {event} of version {version} in:\n{events}"
            );
        }
    }
    assert!(
        events
            .lines()
            .any(|l| l.contains("event=\"refused\"") && l.contains("bad_signature")),
        "{events}"
    );
    // Its second command lists the connections; the journald field names the guide lists are
    // the log's field names (journald upper-cases them).
    assert!(
        events.lines().any(|l| l.contains("SERVICE=documents")
            && l.contains("PEER_IDENTITY=hub.renkei.example")
            && l.contains("RESULT=ok")),
        "{events}"
    );
    for field in ["EVENT", "VERSION", "SIGNER", "PUSHED_BY", "REASON"] {
        assert!(
            text.contains(&format!("`{field}`")),
            "{field} not in the guide"
        );
        assert!(
            events.contains(&format!(" {}=", field.to_ascii_lowercase())),
            "no {field} field in:\n{events}"
        );
    }
    for field in [
        "SERVICE",
        "PEER_ADDR",
        "PEER_IDENTITY",
        "BYTES_IN",
        "BYTES_OUT",
        "DURATION_MS",
        "RESULT",
    ] {
        assert!(
            text.contains(&format!("`{field}`")),
            "{field} not in the guide"
        );
        assert!(
            events.contains(&format!(" {field}=")),
            "no {field} in:\n{events}"
        );
    }

    // The box's sealed journal: a copy of a box's journal folder, sealed by keys that `renkei
    // journal-seal` made as on first boot (in a private mount namespace), checked with the
    // guide's command and the verification key.
    let box_journal = op.file("box-journal");
    std::fs::create_dir_all(&box_journal).expect("box-journal");
    let key = sealed_journal(
        &renkei_lab::daemon::renkei_bin().expect("renkei"),
        &access_records(3, usec_from_now(Duration::from_secs(10)), "hospital-box"),
        &box_journal.join("system.journal"),
        &op.file("sealing"),
    )
    .expect("a sealed journal");
    op.vars.insert("JOURNAL_KEY", key);
    let verified = op.run("renkei journal-verify");
    assert!(
        verified.contains("PASS ") && verified.contains("1 files, 0 failed"),
        "{verified}"
    );

    // 10. Running a fleet. The operator writes the inventory of the guide, with the lab's
    // boxes: the hospital in the canary group, the clinic in its own.
    let clinic = record.node("clinic").expect("clinic").clone();
    let inventory = fleet_inventory(&text, &hospital, &clinic);
    std::fs::write(op.file("fleet.toml"), inventory).expect("fleet.toml");
    // The clinic is on demand: its administrator's connect opens its tunnel, the data centre's
    // only path to it, which then stays up for its idle time (60 s), longer than what follows.
    let connect = bounded(
        Command::new("ip")
            .args(["netns", "exec", &clinic.namespace])
            .arg(renkei_lab::daemon::renkei_bin().expect("renkei"))
            .args(["tunnel", "connect", "--config"])
            .arg(&clinic.config),
        COMMAND_TIMEOUT,
    );
    assert!(connect.status.success(), "clinic connect: {connect:?}");
    let clinic_version = status_of(&record, "clinic")["config"]["version"].clone();

    // The fleet's table and its JSON: both boxes, with the versions they run.
    let printed = op.run("renkei fleet status --inventory fleet.toml");
    for (name, version) in [
        ("hospital", Value::from(9)),
        ("clinic", clinic_version.clone()),
    ] {
        let line = printed
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no line for {name}:\n{printed}"));
        assert!(line.contains(&format!("v{version} confirmed")), "{printed}");
        let entry = answers(&printed)
            .into_iter()
            .find(|a| a["name"] == name)
            .unwrap_or_else(|| panic!("no JSON entry for {name}:\n{printed}"));
        assert_eq!(entry["reachable"], true, "{printed}");
        assert_eq!(entry["facts"]["config_version"], version, "{printed}");
    }

    // A rollout: version 10 for the hospital alone (the clinic has no file in next/), signed
    // with the rotated key, pushed to the canary wave and confirmed by the tool.
    std::fs::create_dir_all(op.file("next")).expect("next/");
    let config_e = with_meta(&config_c, 9, 10, "rolled out with renkei fleet");
    std::fs::write(op.file("next/hospital.toml"), to_toml(&config_e)).expect("next/hospital");
    let printed = op.run("for config in next/*.toml; do renkei sign");
    assert!(op.file("next/hospital.toml.sig").exists(), "{printed}");
    assert!(
        printed
            .lines()
            .any(|l| l.starts_with("hospital") && l.contains("confirmed: runs v10")),
        "{printed}"
    );
    assert!(
        printed
            .lines()
            .any(|l| l.starts_with("clinic") && l.contains("not pushed")),
        "{printed}"
    );
    let config = status_of(&record, "hospital")["config"].clone();
    assert_eq!(
        (&config["version"], &config["state"]),
        (&Value::from(10), &Value::from("confirmed")),
        "{config:#}"
    );

    // The fleet-wide confirm finds nothing left to confirm.
    let printed = op.run("renkei fleet confirm --inventory fleet.toml");
    for (name, version) in [("hospital", Value::from(10)), ("clinic", clinic_version)] {
        assert!(
            printed.lines().any(|l| l.starts_with(name)
                && l.contains(&format!("nothing pending (runs v{version}, confirmed)"))),
            "{printed}"
        );
    }
    assert_eq!(op.next, op.blocks.len(), "blocks of the guide not followed");

    lab.down();
    assert_gone(&record, &lab.dir);
}

#[test]
fn the_installer_guide_blocks_are_the_ones_image_boot_test_runs() {
    let text = guide("installer-guide.md");
    let blocks = sh_blocks(&text);
    let firsts: Vec<&str> = blocks.iter().map(Block::first_command).collect();
    assert_eq!(
        firsts,
        [
            "sha256sum -c --ignore-missing SHA256SUMS",
            "xzcat renkei-<version>-amd64.img.xz | sudo dd of=/dev/sdX bs=4M conv=fsync status=progress",
            "sudo mount /dev/sdX4 /mnt",
        ],
        "{blocks:#?}"
    );
    let boot_test =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../image/boot-test"))
            .expect("image/boot-test");
    // boot-test runs the guide's blocks 1, 2 and 3 through its guide_block helper, from the
    // guide itself (no copy that could drift).
    assert!(
        boot_test.contains("docs/installer-guide.md"),
        "boot-test reads the guide"
    );
    for n in 1..=blocks.len() {
        assert!(
            boot_test.contains(&format!("guide_block {n}")),
            "boot-test does not run the guide's block {n}"
        );
    }
    // And the operator's guide's section 2 (check the CSR, issue the certificate), found there
    // by the start of their first command.
    let operator = sh_blocks(&guide("operator-guide.md"));
    for (in_script, prefix) in [
        (
            r#"operator_block "openssl req -in box.csr""#,
            "openssl req -in box.csr",
        ),
        (
            r#"operator_block "printf '%s\\n' \"subjectAltName=DNS:""#,
            r#"printf '%s\n' "subjectAltName=DNS:"#,
        ),
    ] {
        assert!(
            boot_test.contains(in_script),
            "{in_script} not in boot-test"
        );
        assert!(
            operator
                .iter()
                .any(|b| b.first_command().starts_with(prefix)),
            "no operator guide block starting with {prefix}"
        );
    }
}

/// A sign, push and confirm block printed the push's answer (pending) first and the confirm's
/// (confirmed) last.
fn assert_pushed_then_confirmed(printed: &str) {
    let all = answers(printed);
    assert_eq!(
        all.first().map(|a| a["state"].clone()),
        Some("pending".into()),
        "{printed}"
    );
    assert_eq!(
        all.last().map(|a| a["state"].clone()),
        Some("confirmed".into()),
        "{printed}"
    );
}
