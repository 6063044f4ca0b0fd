//! `renkei check`, `renkei check --offline`, `renkei sign` and `renkei run` on the same files,
//! with the real binary: `check` refuses everything `run` refuses at start (INT-1, "nginx -t"),
//! naming the file; a config names the box it is for (AUTH-4); `sign` signs only a config that
//! passes the offline check and names its box.

mod common;
mod skip;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{Fixture, EXAMPLES};
use renkei::config::Config;

/// The disclosing example, typed, with its state and runtime folders inside the fixture (so a
/// `renkei run` that got past its checks would not touch the host's).
fn disclosing(fixture: &Fixture) -> Config {
    let (_, text) = EXAMPLES
        .iter()
        .find(|(name, _)| *name == "disclosing.toml")
        .expect("the disclosing example");
    let mut config: Config = toml::from_str(text).expect("the example parses");
    config.paths.state_dir = fixture.path().join("state");
    config.paths.runtime_dir = fixture.path().join("run");
    config
}

fn write(fixture: &Fixture, name: &str, config: &Config) -> PathBuf {
    let text = toml::to_string(config).expect("serialize config");
    fixture.write_config(name, &text)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The `file:line:col: field: message` lines of a refusal (without the closing count).
fn diagnostics(output: &Output, config: &Path) -> Vec<String> {
    let prefix = format!("{}:", config.display());
    stderr(output)
        .lines()
        .filter(|l| l.starts_with(&prefix) && !l.contains("configuration is invalid"))
        .map(str::to_string)
        .collect()
}

/// `check` exits 2 with one diagnostic at `field` whose message contains every part.
fn assert_refused_at(output: &Output, config: &Path, field: &str, parts: &[&str]) {
    let text = stderr(output);
    assert_eq!(output.status.code(), Some(2), "{text}");
    let lines = diagnostics(output, config);
    assert_eq!(lines.len(), 1, "{text}");
    let line = &lines[0];
    // file:line:col: field: message, at the line of the field in the file.
    let rest = line
        .strip_prefix(&format!("{}:", config.display()))
        .expect("prefix");
    let mut position = rest.splitn(3, ':');
    let (row, column) = (position.next(), position.next());
    assert!(
        row.and_then(|r| r.parse::<usize>().ok())
            .is_some_and(|r| r >= 1)
            && column.and_then(|c| c.parse::<usize>().ok()).is_some(),
        "no line:column in {line}"
    );
    assert!(line.contains(&format!(" {field}: ")), "{line}");
    for part in parts {
        assert!(line.contains(part), "{part:?} not in {line}");
    }
}

/// A certificate and key on a curve outside the profile (P-521), made with openssl; `None`
/// (the test is skipped) when openssl cannot make one.
fn p521_certificate(fixture: &Fixture) -> Option<(PathBuf, PathBuf)> {
    let cert = fixture.path().join("tls/p521.crt");
    let key = fixture.path().join("tls/p521.key");
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:secp521r1",
            "-nodes",
            "-subj",
            "/CN=hospital.renkei.example",
            "-days",
            "30",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output();
    match made {
        Ok(out) if out.status.success() => {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).ok()?;
            Some((cert, key))
        }
        Ok(out) => {
            skip::skip(&format!(
                "openssl cannot make a P-521 certificate: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
            None
        }
        Err(e) => {
            skip::skip(&format!("openssl not available ({e})"));
            None
        }
    }
}

#[test]
fn int1_check_refuses_a_key_that_does_not_match_its_certificate_naming_the_file() {
    let fixture = Fixture::new();
    let mut config = disclosing(&fixture);
    let tls = config.tls.as_mut().expect("[tls]");
    tls.private_key_file = PathBuf::from("tls/hub.key");
    let path = write(&fixture, "mismatch.toml", &config);
    let output = fixture.check(&path);
    assert_refused_at(
        &output,
        &path,
        "tls.private_key_file",
        &["tls/hub.key", "does not match certificate", "tls/box.crt"],
    );
}

#[test]
fn int1_check_refuses_a_certificate_outside_the_profile_naming_the_file() {
    let fixture = Fixture::new();
    let Some((cert, key)) = p521_certificate(&fixture) else {
        return;
    };
    let mut config = disclosing(&fixture);
    let tls = config.tls.as_mut().expect("[tls]");
    tls.certificate_file = cert.clone();
    tls.private_key_file = key;
    let path = write(&fixture, "p521.toml", &config);
    let output = fixture.check(&path);
    assert_refused_at(
        &output,
        &path,
        "tls.certificate_file",
        &[&cert.display().to_string(), "ECDSA on curve 1.3.132.0.35"],
    );
}

#[test]
fn int1_auth4_run_refuses_at_start_exactly_what_check_refuses() {
    let fixture = Fixture::new();
    let mut cases: Vec<(&str, Config)> = Vec::new();

    let mut mismatch = disclosing(&fixture);
    mismatch.tls.as_mut().expect("[tls]").private_key_file = PathBuf::from("tls/hub.key");
    cases.push(("a key of another certificate", mismatch));

    // The management API loads the box's certificate against the operator CA it names: a CA
    // that did not issue it made `run` exit while `check` said ok.
    let other_ca = fixture.path().join("operator/other-ca.crt");
    std::fs::copy(fixture.path().join("tls/hub.crt"), &other_ca).expect("copy");
    let mut foreign_ca = disclosing(&fixture);
    foreign_ca
        .management
        .as_mut()
        .expect("[management]")
        .operator_ca_file = other_ca;
    cases.push(("an operator CA that did not issue the box", foreign_ca));

    let mut hub = disclosing(&fixture);
    hub.meta.box_identity = Some("hub.renkei.example".into());
    cases.push(("a config for another box", hub));

    if let Some((cert, key)) = p521_certificate(&fixture) {
        let mut p521 = disclosing(&fixture);
        let tls = p521.tls.as_mut().expect("[tls]");
        tls.certificate_file = cert;
        tls.private_key_file = key;
        cases.push(("a certificate outside the profile", p521));
    }

    for (i, (what, config)) in cases.iter().enumerate() {
        let path = write(&fixture, &format!("case-{i}.toml"), config);
        let checked = fixture.check(&path);
        assert_eq!(
            checked.status.code(),
            Some(2),
            "check, {what}: {}",
            stderr(&checked)
        );
        // Refused before anything starts: no TUN device, no socket, nothing written.
        let ran = fixture.renkei(&["run", "--config"], &path);
        assert_eq!(ran.status.code(), Some(2), "run, {what}: {}", stderr(&ran));
        let expected = diagnostics(&checked, &path);
        assert!(!expected.is_empty(), "{what}: {}", stderr(&checked));
        assert_eq!(diagnostics(&ran, &path), expected, "{what}");
        assert!(
            !fixture.path().join("run").exists(),
            "{what}: run went past its checks"
        );
    }
}

#[test]
fn auth4_check_refuses_a_config_for_another_box_and_accepts_none_locally() {
    let fixture = Fixture::new();
    let mut config = disclosing(&fixture);
    config.meta.box_identity = Some("hub.renkei.example".into());
    let path = write(&fixture, "for-hub.toml", &config);
    assert_refused_at(
        &fixture.check(&path),
        &path,
        "meta.box",
        &[
            "\"hub.renkei.example\" is not this box",
            "hospital.renkei.example",
            "for another box",
        ],
    );

    // DNS names match case-insensitively; a local file without `box` is allowed.
    config.meta.box_identity = Some("Hospital.Renkei.Example".into());
    let path = write(&fixture, "upper.toml", &config);
    let output = fixture.check(&path);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    config.meta.box_identity = None;
    let path = write(&fixture, "local.toml", &config);
    let output = fixture.check(&path);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
}

#[test]
fn auth4_check_offline_reads_no_file_the_config_names() {
    let fixture = Fixture::new();
    let mut config = disclosing(&fixture);
    let tls = config.tls.as_mut().expect("[tls]");
    tls.certificate_file = PathBuf::from("absent/box.crt");
    tls.private_key_file = PathBuf::from("absent/box.key");
    config.tunnel.as_mut().expect("[tunnel]").private_key_file = PathBuf::from("absent/wg.key");
    let path = write(&fixture, "elsewhere.toml", &config);

    let online = fixture.check(&path);
    assert_eq!(online.status.code(), Some(2), "{}", stderr(&online));
    let offline = fixture.renkei(&["check", "--offline", "--config"], &path);
    assert_eq!(offline.status.code(), Some(0), "{}", stderr(&offline));
    assert!(String::from_utf8_lossy(&offline.stdout).contains("ok (offline"));

    // Offline still checks everything that needs no file.
    config.tunnel.as_mut().expect("[tunnel]").mtu = 100;
    let path = write(&fixture, "bad-mtu.toml", &config);
    let offline = fixture.renkei(&["check", "--offline", "--config"], &path);
    assert_refused_at(&offline, &path, "tunnel.mtu", &["out of range"]);
}

#[test]
fn auth4_sign_refuses_a_config_without_box_or_failing_the_offline_check() {
    let fixture = Fixture::new();
    let key = fixture.path().join("operator/signing.key");
    let made = fixture.renkei(&["keygen", "--operator", "--private-key"], &key);
    assert!(made.status.success(), "{}", stderr(&made));
    let key_arg = key.display().to_string();
    let sign = |path: &Path| fixture.renkei(&["sign", "--key", &key_arg], path);
    let signature = |path: &Path| PathBuf::from(format!("{}.sig", path.display()));

    // The operator's machine has none of the box's files: signing does not look for them.
    let mut config = disclosing(&fixture);
    config.tunnel.as_mut().expect("[tunnel]").private_key_file = PathBuf::from("absent/wg.key");
    let path = write(&fixture, "good.toml", &config);
    let output = sign(&path);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(signature(&path).exists());

    config.meta.box_identity = None;
    let path = write(&fixture, "no-box.toml", &config);
    let output = sign(&path);
    assert_refused_at(&output, &path, "meta", &["names no box"]);
    assert!(!signature(&path).exists(), "signed anyway");

    config.meta.box_identity = Some("hospital.renkei.example".into());
    config.tunnel.as_mut().expect("[tunnel]").mtu = 100;
    let path = write(&fixture, "bad-mtu.toml", &config);
    let output = sign(&path);
    assert_refused_at(&output, &path, "tunnel.mtu", &["out of range"]);
    assert!(!signature(&path).exists(), "signed anyway");

    let path = fixture.write_config("broken.toml", "[meta\nversion = 2\n");
    let output = sign(&path);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(!signature(&path).exists(), "signed anyway");
}
