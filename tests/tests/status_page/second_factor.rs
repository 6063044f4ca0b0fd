//! The second factor: enrolment, login with a code, replayed and wrong codes, recovery codes
//! (AUTH-3).

use std::time::Duration;

use renkei_lab::web::{curl, get, login, status_toml, Reply, Session, ADMIN_PASSWORD, STATUS_PORT};
use renkei_lab::{require_root, wait_until, Daemon, Lab, Namespace, Node};
use serde_json::Value;

use crate::fixtures::{browser_dir, clinic_base, clinic_with_page, wait_for_page};

/// The clinic box alone with its page requiring a second factor (none enrolled yet).
fn clinic_requiring_second_factor(lab: &Lab) -> Daemon {
    let text = lab.tunnel_config(Node::Clinic)
        + &status_toml(
            &format!("198.18.20.1:{STATUS_PORT}"),
            "require_second_factor = true",
        )
        .expect("status");
    let daemon = lab.start(Node::Clinic, &text).expect("clinic");
    wait_for_page(lab.lan_ns(Node::Clinic), &clinic_base());
    daemon
}

#[test]
fn auth3_browser_enrols_totp_then_logs_in_with_password_and_code_and_refuses_wrong_or_replayed_codes(
) {
    use std::os::unix::fs::PermissionsExt;
    require_root!();
    let lab = Lab::new().expect("lab");
    let clinic = clinic_requiring_second_factor(&lab);
    let lan = lab.lan_ns(Node::Clinic);
    let base = clinic_base();
    let browser = browser_dir();
    let profile = lab.dir.join("chromium-profile-2fa");
    std::fs::create_dir_all(&profile).expect("profile dir");
    let result = renkei_lab::web::browser_script(
        lan,
        &browser.join("second_factor.mjs"),
        &[&base, &profile.to_string_lossy()],
        Duration::from_secs(240),
    );
    assert_eq!(result["ok"], true, "{result:#}");
    let at = |path: &str| format!("{base}{path}");

    // The password alone leads to the enrolment, and only there.
    assert_eq!(result["first"]["url"], at("/second-factor"), "{result:#}");
    assert_eq!(result["api_status_while_enrolling"], 403, "{result:#}");
    assert_eq!(result["dashboard_while_enrolling"], at("/second-factor"));
    assert_eq!(result["secret_length"], 32, "160-bit key in base32");
    assert_eq!(result["qr_svg"], true, "QR code drawn on the page");
    assert_eq!(result["enrol_wrong_error"], "sf_wrong", "{result:#}");
    let recovery: Vec<String> = result["recovery_codes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(recovery.len(), 10, "{result:#}");
    assert_eq!(result["warning_after_enrolment"], false);

    // Password + a code the test computed logs in; replayed, wrong or missing codes do not.
    for refused in ["replayed", "wrong", "without_code", "recovery_again"] {
        assert_eq!(
            result[refused]["url"],
            at("/login"),
            "{refused}: {result:#}"
        );
        assert_eq!(
            result[refused]["error"], "login_wrong",
            "{refused}: {result:#}"
        );
    }
    assert_eq!(result["fresh"]["url"], at("/"), "{result:#}");
    assert_eq!(result["recovery_first"]["url"], at("/"), "{result:#}");

    // Offline: every request stayed on the box; no script error under the CSP.
    for url in result["requests"].as_array().cloned().unwrap_or_default() {
        let url = url.as_str().unwrap_or("");
        assert!(url.starts_with(&base), "request outside the box: {url}");
    }
    // The refusals the test provokes are logged by Chromium as failed loads; anything else
    // (a script error, a CSP violation) is a failure.
    let unexpected: Vec<&Value> = result["console_errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .filter(|e| {
                    !e.as_str().is_some_and(|e| {
                        e.starts_with(
                            "Failed to load resource: the server responded with a status of 4",
                        )
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    assert!(unexpected.is_empty(), "{result:#}");

    // The secret stays in the box's state directory, private; recovery codes only as digests.
    let file = lab
        .node_dir(Node::Clinic)
        .join("state/status/second-factor.json");
    let mode = std::fs::metadata(&file)
        .expect("factor file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{}", file.display());
    let stored: Value =
        serde_json::from_str(&std::fs::read_to_string(&file).expect("read")).expect("json");
    let secret = stored["secret_base32"]
        .as_str()
        .expect("secret")
        .to_string();
    assert_eq!(secret.len(), 32);
    assert_eq!(
        stored["recovery_sha256"].as_array().map(Vec::len),
        Some(9),
        "one spent"
    );
    let stored_text = stored.to_string();
    for code in &recovery {
        assert!(
            !stored_text.contains(code.as_str()),
            "recovery code stored in clear"
        );
    }
    let config = std::fs::read_to_string(&clinic.config).expect("config");
    let status = clinic.status().expect("status");
    for (what, text) in [
        ("config", config),
        ("log", clinic.log_text()),
        ("status", status.to_string()),
    ] {
        assert!(!text.contains(&secret), "the secret is in the {what}");
    }
    let events = status["events"].as_array().cloned().unwrap_or_default();
    let said = |needle: &str| {
        events
            .iter()
            .any(|e| e["message"].as_str().is_some_and(|m| m.contains(needle)))
    };
    assert!(said("code already used"), "{events:#?}");
    assert!(said("password and TOTP code"), "{events:#?}");
    assert!(said("recovery codes left"), "{events:#?}");
}

#[test]
fn auth3_without_require_second_factor_the_password_alone_logs_in_with_a_warning() {
    require_root!();
    let lab = Lab::new().expect("lab");
    let _clinic = clinic_with_page(&lab);
    let lan = lab.lan_ns(Node::Clinic);
    let base = clinic_base();
    let session = login(lan, &base, ADMIN_PASSWORD).expect("login");
    let reply = get(lan, &base, &session, "/api/v1/session").expect("session");
    let second_factor = &reply.json().expect("json")["second_factor"];
    assert_eq!(second_factor["enrolled"], false, "{reply:?}");
    assert_eq!(second_factor["required"], false, "{reply:?}");
    let page = get(lan, &base, &session, "/").expect("page");
    assert!(
        page.body.contains("id=\"second-factor-warning\""),
        "the dashboard has the warning banner: {page:?}"
    );
    let form = get(lan, &base, &session, "/second-factor").expect("form");
    assert_eq!(form.status, 200, "{form:?}");
    assert!(form.body.contains("<svg") && form.body.contains("name=\"secret\""));
}

/// The TOTP step of the box's clock (the lab's boxes run on this host's clock).
fn totp_step_now() -> u64 {
    use renkei::status::second_factor::STEP_SECS;
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        / STEP_SECS
}

/// The code an authenticator app with `secret` shows at `step`.
fn totp_code(secret: &str, step: u64) -> String {
    renkei::status::second_factor::code_at(secret, step).expect("a usable secret")
}

/// The secret the enrolment form offers (its hidden `secret` field).
fn offered_secret(form: &Reply) -> String {
    let (_, rest) = form
        .body
        .split_once("name=\"secret\" value=\"")
        .unwrap_or_else(|| panic!("no secret in the form: {form:?}"));
    rest.split('"').next().unwrap_or_default().to_string()
}

/// `POST /second-factor` with `session`: the new `secret` and its `code`, and `current` (the
/// enrolled factor's code or a recovery code) when given.
fn post_second_factor(
    ns: &Namespace,
    base: &str,
    session: &Session,
    secret: &str,
    code: &str,
    current: Option<&str>,
) -> Reply {
    let cookie = format!("Cookie: {}", session.cookie);
    let fields = [
        format!("csrf={}", session.csrf),
        format!("secret={secret}"),
        format!("code={code}"),
    ];
    let current = current.map(|c| format!("current={c}"));
    let url = format!("{base}/second-factor");
    let mut args = vec!["-H", cookie.as_str()];
    for field in fields.iter().chain(current.iter()) {
        args.extend(["--data-urlencode", field.as_str()]);
    }
    args.push(&url);
    curl(ns, &args).expect("curl")
}

/// Retries `post` while the box answers `429` (the limiter's delay after a failed attempt).
fn past_delay(mut post: impl FnMut() -> Reply) -> Reply {
    wait_until(Duration::from_secs(20), "the login delay to pass", || {
        let reply = post();
        (reply.status != 429).then_some(reply)
    })
    .expect("delay passed")
}

/// Issue #14 item 10: a full session alone (a stolen cookie) cannot replace the enrolled
/// second factor; the form asks for a current code or a recovery code of it, a wrong, replayed
/// or missing one is a failed, rate-limited attempt, and the factor file stays as it was.
#[test]
fn auth3_replacing_an_enrolled_factor_needs_its_current_code_or_a_recovery_code() {
    require_root!();
    let lab = Lab::new().expect("lab");
    let clinic = clinic_with_page(&lab);
    let lan = lab.lan_ns(Node::Clinic);
    let base = clinic_base();
    let file = lab
        .node_dir(Node::Clinic)
        .join("state/status/second-factor.json");
    let stored_secret = || -> String {
        let text = std::fs::read_to_string(&file).expect("factor file");
        let stored: Value = serde_json::from_str(&text).expect("json");
        stored["secret_base32"].as_str().unwrap_or_default().into()
    };
    // Without require_second_factor the password alone opens a full session.
    let session = login(lan, &base, ADMIN_PASSWORD).expect("login");

    // The first enrolment asks for no current code.
    let form = get(lan, &base, &session, "/second-factor").expect("form");
    assert!(!form.body.contains("name=\"current\""), "{form:?}");
    let owner = offered_secret(&form);
    let enrolled_step = totp_step_now();
    let enrolment_code = totp_code(&owner, enrolled_step);
    let enrolled = post_second_factor(lan, &base, &session, &owner, &enrolment_code, None);
    assert_eq!(enrolled.status, 200, "{enrolled:?}");
    assert_eq!(stored_secret(), owner);
    let before = std::fs::read(&file).expect("factor file");

    // Now the form asks for the current code or a recovery code.
    let form = get(lan, &base, &session, "/second-factor").expect("form");
    assert!(
        form.body.contains("name=\"current\"") && form.body.contains("sf_replace_hint"),
        "{form:?}"
    );
    let attacker = offered_secret(&form);
    assert_ne!(attacker, owner);
    let wrong = format!(
        "{:06}",
        (enrolment_code.parse::<u32>().unwrap_or(0) + 500_000) % 1_000_000
    );
    for (what, current) in [
        ("no current code", None),
        ("a wrong code", Some(wrong.as_str())),
        ("the replayed enrolment code", Some(enrolment_code.as_str())),
    ] {
        let refused = past_delay(|| {
            let code = totp_code(&attacker, totp_step_now());
            post_second_factor(lan, &base, &session, &attacker, &code, current)
        });
        assert_eq!(refused.status, 401, "{what}: {refused:?}");
        assert!(
            refused.body.contains("sf_current_wrong"),
            "{what}: {refused:?}"
        );
        assert_eq!(
            std::fs::read(&file).expect("factor file"),
            before,
            "{what}: the enrolled factor was changed"
        );
    }
    // Each refusal was a failed attempt: the next one, even with the right code, waits.
    let proof = totp_code(&owner, totp_step_now().max(enrolled_step + 1));
    let code = totp_code(&attacker, totp_step_now());
    let waited = post_second_factor(lan, &base, &session, &attacker, &code, Some(&proof));
    assert_eq!(waited.status, 429, "{waited:?}");
    assert!(waited.header("retry-after").is_some(), "{waited:?}");
    assert_eq!(std::fs::read(&file).expect("factor file"), before);

    // A current code of the enrolled factor replaces it.
    let replaced = past_delay(|| {
        let code = totp_code(&attacker, totp_step_now());
        post_second_factor(lan, &base, &session, &attacker, &code, Some(&proof))
    });
    assert_eq!(replaced.status, 200, "{replaced:?}");
    assert!(
        replaced.body.contains("id=\"recovery-codes\""),
        "{replaced:?}"
    );
    assert_eq!(stored_secret(), attacker);
    let recovery: Vec<String> = replaced
        .body
        .split("<li>")
        .skip(1)
        .filter_map(|item| item.split("</li>").next().map(String::from))
        .collect();
    assert_eq!(recovery.len(), 10, "{replaced:?}");

    // So does an unused recovery code of it.
    let form = get(lan, &base, &session, "/second-factor").expect("form");
    let third = offered_secret(&form);
    let code = totp_code(&third, totp_step_now());
    let replaced = post_second_factor(lan, &base, &session, &third, &code, Some(&recovery[0]));
    assert_eq!(replaced.status, 200, "{replaced:?}");
    assert_eq!(stored_secret(), third);

    let events = clinic.status().expect("status")["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let said = |needle: &str| {
        events
            .iter()
            .any(|e| e["message"].as_str().is_some_and(|m| m.contains(needle)))
    };
    assert!(said("refused to replace the second factor"), "{events:#?}");
    assert!(said("confirmed with a code of the old one"), "{events:#?}");
    assert!(said("confirmed with a recovery code"), "{events:#?}");
}
