//! The example configs in `config/` must pass `renkei check` once the files they name exist.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{Fixture, EXAMPLES};

/// Runs the real binary on one example copied into a fresh fixture directory and checks the
/// summary line.
fn check_example(file: &str, facility: &str, role: &str, policy: &str, peers: usize) {
    let text = EXAMPLES
        .iter()
        .find(|(name, _)| *name == file)
        .expect("example exists")
        .1;
    let fixture = Fixture::new();
    let config = fixture.write_config(file, text);
    let output = fixture.check(&config);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{file} should be valid; stderr:\n{stderr}"
    );
    assert!(stderr.is_empty(), "{file}: unexpected stderr:\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "{file}: expected one summary line:\n{stdout}"
    );
    let expected_prefix = format!(
        "{}: ok: facility {facility:?} role {role} version 1: tunnel ",
        config.display()
    );
    assert!(
        lines[0].starts_with(&expected_prefix),
        "{file}: summary {:?} does not start with {expected_prefix:?}",
        lines[0]
    );
    assert!(
        lines[0].contains(&format!(" {policy} with {peers} peer(s)")),
        "{file}: summary {:?} should name policy {policy} and {peers} peer(s)",
        lines[0]
    );
}

#[test]
fn hub_example_is_valid() {
    check_example("hub.toml", "Renkei Demo Data Centre", "hub", "always_on", 2);
}

#[test]
fn disclosing_example_is_valid() {
    check_example(
        "disclosing.toml",
        "Renkei Demo Hospital",
        "disclosing",
        "always_on",
        1,
    );
}

#[test]
fn viewing_example_is_valid() {
    check_example(
        "viewing.toml",
        "Renkei Demo Clinic",
        "viewing",
        "on_demand",
        1,
    );
}

/// The summary counts services by direction.
#[test]
fn summary_counts_services() {
    let fixture = Fixture::new();
    let (_, hub) = EXAMPLES[0];
    let config = fixture.write_config("hub.toml", hub);
    let output = fixture.check(&config);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.trim_end().ends_with(
            "tunnel 198.19.0.1/24 always_on with 2 peer(s), 1 outbound and 1 inbound service(s)"
        ),
        "unexpected summary: {stdout}"
    );
}

/// Relative paths are resolved against the config's folder, not the working directory.
#[test]
fn relative_paths_follow_the_config_not_the_cwd() {
    let fixture = Fixture::new();
    let (_, text) = EXAMPLES[2];
    let config = fixture.write_config("viewing.toml", text);
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_renkei"))
        .args(["check", "--config"])
        .arg(&config)
        .current_dir(elsewhere.path())
        .output()
        .expect("run renkei check");
    assert_eq!(
        output.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A missing config file is a diagnostic with exit code 2, not a crash.
#[test]
fn missing_config_file_is_reported() {
    let fixture = Fixture::new();
    let config = fixture.path().join("nothing.toml");
    let output = fixture.check(&config);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    let first = stderr.lines().next().unwrap_or_default();
    assert!(
        first.starts_with(&format!("{}:1:1: cannot read config: ", config.display())),
        "unexpected diagnostic: {stderr}"
    );
}

/// The fixture holds what its documentation promises.
#[test]
fn fixture_files_are_what_they_claim() {
    let fixture = Fixture::new();
    let root = fixture.path();
    let mode = |name: &str| {
        std::fs::metadata(root.join(name))
            .expect("fixture file exists")
            .permissions()
            .mode()
            & 0o777
    };
    for key in ["wg.key", "tls/box.key", "tls/hub.key", "garbage.key"] {
        assert_eq!(mode(key), 0o600, "{key}");
    }
    assert_eq!(mode("open.key"), 0o644);
    renkei::keys::read_private_key(&root.join("wg.key")).expect("wg.key is a usable key");
    let own = renkei::keys::decode_key(fixture.own_public_key()).expect("own public key");
    let secret = renkei::keys::read_private_key(&root.join("wg.key")).expect("read wg.key");
    assert_eq!(renkei::keys::public_key_of(&secret), own);
    for cert in [
        "tls/box.crt",
        "tls/hub.crt",
        "tls/operator-ca.crt",
        "operator/ca.crt",
    ] {
        let text = std::fs::read_to_string(root.join(cert)).expect("read certificate");
        assert!(
            text.starts_with("-----BEGIN CERTIFICATE-----"),
            "{cert}: {text}"
        );
    }
    for key in ["tls/box.key", "tls/hub.key"] {
        let text = std::fs::read_to_string(root.join(key)).expect("read key");
        rcgen::KeyPair::from_pem(&text).expect("leaf key is a PEM private key");
    }
    let pem = std::fs::read_to_string(root.join("operator/signing.pub.pem")).expect("read");
    <p256::PublicKey as p256::pkcs8::DecodePublicKey>::from_public_key_pem(&pem)
        .expect("signing key is a PEM P-256 public key");
}

/// Every example, loaded, written back with `Serialize` and loaded again, is the same `Config`:
/// tests build lab configs as typed values and write them this way, so a field that does not
/// survive the trip (a rename, a default, a path) would silently change what they test.
#[test]
fn examples_round_trip_through_serialize() {
    let fixture = Fixture::new();
    for (file, text) in EXAMPLES.iter().copied() {
        let path = fixture.write_config(file, text);
        let loaded =
            renkei::config::load(&path).unwrap_or_else(|e| panic!("{file} should load: {e}"));
        let written =
            toml::to_string(&loaded).unwrap_or_else(|e| panic!("{file} should serialise: {e}"));
        let again_path = fixture.write_config(&format!("again-{file}"), &written);
        let again = renkei::config::load(&again_path)
            .unwrap_or_else(|e| panic!("{file} written back should load: {e}\n{written}"));
        assert_eq!(again, loaded, "{file} changed on the way:\n{written}");
    }
}

/// `renkei check` (with the files, and `--offline` without them) accepts `example`, written
/// as `name`, and its summary holds `summary`.
fn assert_example_is_valid(name: &str, example: &str, summary: &str) {
    let fixture = Fixture::new();
    let config = fixture.write_config(name, example);
    for offline in [false, true] {
        let output = if offline {
            fixture.renkei(&["check", "--offline", "--config"], &config)
        } else {
            fixture.check(&config)
        };
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "offline {offline}: {stderr}");
        assert!(stdout.contains(summary), "offline {offline}: {stdout}");
    }
}

/// Runs `renkei check --offline` on `example` edited by `edit` (an edit that changes nothing is
/// a mistake of the test), written as `name`; its stderr, the file named `name`.
fn example_check_errors(name: &str, example: &str, edit: impl Fn(&str) -> String) -> String {
    let fixture = Fixture::new();
    let edited = edit(example);
    assert_ne!(edited, example, "the edit changed nothing");
    let config = fixture.write_config(name, &edited);
    let output = fixture.renkei(&["check", "--offline", "--config"], &config);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    stderr.replace(&format!("{}:", config.display()), &format!("{name}:"))
}

/// The closed-network example (`config/closed.toml`).
const CLOSED_EXAMPLE: &str = include_str!("../../config/closed.toml");

/// `renkei check` (with the files, and `--offline` without them) accepts the closed-network
/// example, and its summary names the closed network instead of a tunnel.
#[test]
fn net9_closed_example_is_valid() {
    assert_example_is_valid(
        "closed.toml",
        CLOSED_EXAMPLE,
        "role disclosing version 1: closed network 198.18.30.10/24 on eth1 always_on to 1 data-centre prefix(es), 0 outbound and 1 inbound service(s)",
    );
}

/// Runs `renkei check --offline` on the closed example edited by `edit`; its stderr.
fn closed_check_errors(edit: impl Fn(&str) -> String) -> String {
    example_check_errors("closed.toml", CLOSED_EXAMPLE, edit)
}

/// A WireGuard key in `[closed]` is an error at its line and column, not ignored; a config
/// with both `[tunnel]` and `[closed]`, or neither, is refused at the section.
#[test]
fn net9_closed_config_keeps_to_its_own_keys_and_one_kind_of_link() {
    let wireguard_key = closed_check_errors(|text| {
        text.replace(
            "interface = \"eth1\"",
            "interface = \"eth1\"\nprivate_key_file = \"wg.key\"",
        )
    });
    assert!(
        wireguard_key.starts_with(
            "closed.toml:27:1: closed.private_key_file: unknown field `private_key_file`"
        ),
        "{wireguard_key}"
    );

    let both = closed_check_errors(|text| {
        text.replace(
            "[tls]",
            "[tunnel]\nprivate_key_file = \"wg.key\"\naddress = \"198.19.0.10/24\"\n\n[tls]",
        )
    });
    assert!(
        both.contains("closed.toml:25:2: closed: a box has exactly one of [tunnel] (WireGuard), [closed] (a closed network) and [ipsec] (IKEv2/IPsec); [tunnel] is already given"),
        "{both}"
    );

    let neither = closed_check_errors(|text| {
        let start = text.find("\n[closed]\n").expect("[closed]");
        let end = text.find("\n[tls]\n").expect("[tls]");
        format!("{}{}", &text[..start], &text[end..])
    });
    assert!(
        neither.contains(
            "tunnel: one of [tunnel] (WireGuard), [closed] (a closed network) or [ipsec] (IKEv2/IPsec) is required"
        ),
        "{neither}"
    );
}

/// An always-on facility on a closed network needs the endpoint that proves its link; the
/// data centre's hub may leave it out (facilities dial the hub, it has nothing to probe).
#[test]
fn net9_only_the_hub_may_leave_out_the_probe_endpoint() {
    let without_probe = |text: &str| {
        let kept: Vec<&str> = text
            .lines()
            .filter(|line| !line.starts_with("probe_endpoint"))
            .collect();
        assert_ne!(
            kept.len(),
            text.lines().count(),
            "the example has a probe_endpoint"
        );
        kept.join("\n") + "\n"
    };
    let facility = closed_check_errors(without_probe);
    assert!(
        facility.contains("closed: an always-on facility needs probe_endpoint"),
        "{facility}"
    );

    let fixture = Fixture::new();
    let hub = without_probe(CLOSED_EXAMPLE).replacen("role = \"disclosing\"", "role = \"hub\"", 1);
    assert!(hub.contains("role = \"hub\""), "the example names its role");
    let config = fixture.write_config("closed.toml", &hub);
    let output = fixture.renkei(&["check", "--offline", "--config"], &config);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The IPsec example (`config/ipsec.toml`).
const IPSEC_EXAMPLE: &str = include_str!("../../config/ipsec.toml");

/// `renkei check` (with the files, and `--offline` without them) accepts the IPsec example and
/// its summary names the SA's address, the concentrator and its identity.
#[test]
fn net9_net10_ipsec_example_is_valid() {
    assert_example_is_valid(
        "ipsec.toml",
        IPSEC_EXAMPLE,
        "role disclosing version 1: ipsec 198.19.0.10/32 to 198.18.0.1 (hub.renkei.example) always_on to 1 data-centre prefix(es), 0 outbound and 1 inbound service(s)",
    );
}

/// Runs `renkei check --offline` on the IPsec example edited by `edit`; its stderr.
fn ipsec_check_errors(edit: impl Fn(&str) -> String) -> String {
    example_check_errors("ipsec.toml", IPSEC_EXAMPLE, edit)
}

/// A WireGuard or closed-network key in `[ipsec]` is an error at its line and column; so is a
/// proposal outside the CRYPTREC set, a LAN-wide local selector, the WAN address as the box's
/// own, and a second kind of link.
#[test]
fn net9_net10_ipsec_config_keeps_to_its_own_keys_and_the_profile() {
    let line_of = |needle: &str| {
        IPSEC_EXAMPLE
            .lines()
            .position(|l| l.starts_with(needle))
            .expect("line in the example")
            + 1
    };
    let address_line = line_of("address = ");
    let wireguard_key = ipsec_check_errors(|text| {
        text.replacen(
            "address = \"198.19.0.10/32\"",
            "private_key_file = \"wg.key\"\naddress = \"198.19.0.10/32\"",
            1,
        )
    });
    assert!(
        wireguard_key.starts_with(&format!(
            "ipsec.toml:{address_line}:1: ipsec.private_key_file: unknown field `private_key_file`"
        )),
        "{wireguard_key}"
    );
    let closed_key = ipsec_check_errors(|text| {
        text.replacen(
            "address = \"198.19.0.10/32\"",
            "probe_endpoint = \"198.19.0.1:7443\"\naddress = \"198.19.0.10/32\"",
            1,
        )
    });
    assert!(
        closed_key.starts_with(&format!(
            "ipsec.toml:{address_line}:1: ipsec.probe_endpoint: unknown field `probe_endpoint`"
        )),
        "{closed_key}"
    );
    let backend_line = line_of("esp_backend");
    let weak = ipsec_check_errors(|text| {
        text.replacen(
            "esp_backend = ",
            "esp_proposals = [{ encryption = \"chacha20poly1305\" }]\nesp_backend = ",
            1,
        )
    });
    assert!(
        weak.starts_with(&format!("ipsec.toml:{backend_line}:"))
            && weak.contains("chacha20poly1305"),
        "{weak}"
    );
    let subnet = ipsec_check_errors(|text| {
        text.replacen(
            "address = \"198.19.0.10/32\"",
            "address = \"198.19.0.10/24\"",
            1,
        )
    });
    assert!(
        subnet.contains(&format!(
            "ipsec.toml:{address_line}:11: ipsec.address: 198.19.0.10/24 must be a single host"
        )),
        "{subnet}"
    );
    let wan = ipsec_check_errors(|text| {
        text.replacen(
            "wan_address = \"198.18.0.10\"",
            "wan_address = \"198.19.0.10\"",
            1,
        )
    });
    assert!(wan.contains("must not be the WAN address"), "{wan}");
    let both = ipsec_check_errors(|text| {
        text.replacen(
            "[tls]",
            "[closed]\ninterface = \"eth1\"\naddress = \"198.18.30.10/24\"\ndata_centre_prefixes = [\"198.19.0.0/24\"]\nprobe_endpoint = \"198.19.0.1:7443\"\n\n[tls]",
            1,
        )
    });
    assert!(
        both.contains("ipsec: a box has exactly one of [tunnel] (WireGuard), [closed] (a closed network) and [ipsec] (IKEv2/IPsec); [closed] is already given"),
        "{both}"
    );
    // Check-ins follow the tunnel's rules: a window as long as the (default) interval is an
    // error at its line.
    let window_line = line_of("checkin_window_secs = ");
    let window = ipsec_check_errors(|text| {
        text.replacen("checkin_window_secs = 60 ", "checkin_window_secs = 900", 1)
    });
    assert!(
        window.contains(&format!(
            "ipsec.toml:{window_line}:23: ipsec.checkin_window_secs: 900 must be at least 10 and shorter than checkin_interval_secs (900)"
        )),
        "{window}"
    );
}

/// `renkei charon-conf` prints the strongswan.conf renkei's carrier expects: the VICI socket
/// it connects to (by default where the image's charon unit has it) and the pinned plugin list.
#[test]
fn net10_charon_conf_prints_the_pinned_strongswan_conf_for_the_config() {
    let fixture = Fixture::new();
    let config = fixture.write_config("ipsec.toml", IPSEC_EXAMPLE);
    let output = fixture.renkei(&["charon-conf", "--config"], &config);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(
        stdout.contains("socket = unix:///run/renkei-charon/charon.vici"),
        "{stdout}"
    );
    assert!(stdout.contains("load_modular = no"), "{stdout}");
    assert!(stdout.contains(" kernel-libipsec "), "{stdout}");
    let closed = fixture.write_config("closed.toml", CLOSED_EXAMPLE);
    let output = fixture.renkei(&["charon-conf", "--config"], &closed);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
}

/// The image's charon unit runs `renkei charon-conf --output FILE` as its start condition: the
/// file gets exactly the printed text and nothing is printed; a config without `[ipsec]` exits
/// 1 (the unit is skipped) and leaves the file as it was.
#[test]
fn net10_charon_conf_output_writes_the_file_the_charon_unit_reads() {
    let fixture = Fixture::new();
    let config = fixture.write_config("ipsec.toml", IPSEC_EXAMPLE);
    let printed = fixture.renkei(&["charon-conf", "--config"], &config);
    assert_eq!(printed.status.code(), Some(0), "{printed:?}");
    let target = fixture.path().join("strongswan.conf");
    std::fs::write(&target, "old").expect("old file");
    let target_arg = target.to_str().expect("utf-8 path");
    let output = fixture.renkei(
        &["charon-conf", "--output", target_arg, "--config"],
        &config,
    );
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(output.stdout.is_empty(), "{output:?}");
    assert_eq!(std::fs::read(&target).expect("written"), printed.stdout);
    let leftovers: Vec<_> = std::fs::read_dir(fixture.path())
        .expect("fixture")
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".strongswan.conf")
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let closed = fixture.write_config("closed.toml", CLOSED_EXAMPLE);
    std::fs::write(&target, "old").expect("old file");
    let output = fixture.renkei(
        &["charon-conf", "--output", target_arg, "--config"],
        &closed,
    );
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert_eq!(std::fs::read_to_string(&target).expect("kept"), "old");
}
