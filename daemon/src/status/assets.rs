//! The status page's files from `web-ui/`, embedded in the binary at build time: the page works
//! offline and fetches nothing from anywhere else.
//!
//! Assets are looked up by exact path in a fixed table, so no request can name a file on disk
//! (no path traversal is possible by construction).

/// Content type of HTML pages.
pub const HTML: &str = "text/html; charset=utf-8";

/// The dashboard (login required).
pub const INDEX_HTML: &str = include_str!("../../../web-ui/index.html");
/// The unenrolled box's page (no login).
pub const ENROLMENT_HTML: &str = include_str!("../../../web-ui/enrolment.html");
const LOGIN_HTML: &str = include_str!("../../../web-ui/login.html");
/// Where the login page shows an error; replaced by one of the fixed messages below, never by
/// anything from the request.
const LOGIN_ERROR_MARKER: &str = "<!--LOGIN-ERROR-->";

/// Login error: wrong password or second factor (one message: which one is not told).
pub const LOGIN_ERROR_WRONG: &str = r#"<p class="error" id="login-error" data-i18n="login_wrong">Wrong password or authentication code.</p>"#;

/// The second factor's enrolment page (AUTH-3).
const SECOND_FACTOR_HTML: &str = include_str!("../../../web-ui/second-factor.html");
/// The page after enrolment, with the recovery codes.
const SECOND_FACTOR_DONE_HTML: &str = include_str!("../../../web-ui/second-factor-done.html");
/// Enrolment error: the code did not match the new secret.
pub const SECOND_FACTOR_ERROR_WRONG: &str = r#"<p class="error" id="sf-error" data-i18n="sf_wrong">Wrong code: enter the newest code the app shows.</p>"#;
/// Re-enrolment error: the proof of the enrolled factor was wrong, replayed or missing.
pub const SECOND_FACTOR_ERROR_CURRENT: &str = r#"<p class="error" id="sf-error" data-i18n="sf_current_wrong">Wrong current code or recovery code: the second factor was not replaced.</p>"#;
/// Re-enrolment error: too many failed checks from this address, wait.
pub const SECOND_FACTOR_ERROR_WAIT: &str = r#"<p class="error" id="sf-error" data-i18n="sf_wait">Too many failed attempts from this address: wait a little and try again.</p>"#;
/// The extra field of the enrolment form while a factor is enrolled: replacing it needs proof
/// of it, so a stolen session cannot swap the secret (issue #14 item 10).
const SECOND_FACTOR_CURRENT_FIELD: &str = r#"<p id="sf-replace-hint" data-i18n="sf_replace_hint">A second factor is already set up. To replace it, also enter a code from the app used until now, or one unused recovery code.</p>
    <label for="current" data-i18n="sf_current">Current code or recovery code</label>
    <input id="current" name="current" type="text" autocomplete="off" maxlength="64" required>"#;
/// Login error: too many failures, wait.
pub const LOGIN_ERROR_WAIT: &str = r#"<p class="error" id="login-error" data-i18n="login_wait">Too many failed logins from this address: wait a little and try again.</p>"#;
/// Login error: the form had no password field.
pub const LOGIN_ERROR_MISSING: &str =
    r#"<p class="error" id="login-error" data-i18n="login_missing">Enter the password.</p>"#;

/// One embedded file.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// Its Content-Type.
    pub content_type: &'static str,
    /// Its bytes.
    pub bytes: &'static [u8],
}

const ASSETS: &[(&str, Asset)] = &[
    (
        "/app.js",
        Asset {
            content_type: "text/javascript; charset=utf-8",
            bytes: include_bytes!("../../../web-ui/app.js"),
        },
    ),
    (
        "/i18n.js",
        Asset {
            content_type: "text/javascript; charset=utf-8",
            bytes: include_bytes!("../../../web-ui/i18n.js"),
        },
    ),
    (
        "/enrolment.js",
        Asset {
            content_type: "text/javascript; charset=utf-8",
            bytes: include_bytes!("../../../web-ui/enrolment.js"),
        },
    ),
    (
        "/style.css",
        Asset {
            content_type: "text/css; charset=utf-8",
            bytes: include_bytes!("../../../web-ui/style.css"),
        },
    ),
    (
        "/favicon.svg",
        Asset {
            content_type: "image/svg+xml",
            bytes: include_bytes!("../../../web-ui/favicon.svg"),
        },
    ),
];

/// The embedded file at exactly `path`, if any.
pub fn get(path: &str) -> Option<Asset> {
    ASSETS.iter().find(|(p, _)| *p == path).map(|(_, a)| *a)
}

/// The login page with one of the fixed error messages (or none).
pub fn login_page(error: &str) -> String {
    LOGIN_HTML.replacen(LOGIN_ERROR_MARKER, error, 1)
}

/// `text` with the characters HTML gives a meaning escaped.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The enrolment page for `secret_base32`: `qr_svg` is the SVG made on the box, `csrf` the
/// session's token for the form, `error` one of the fixed messages (or none); `replacing`
/// (a factor is enrolled) adds the field for the current code or a recovery code.
pub fn second_factor_page(
    qr_svg: &str,
    secret_base32: &str,
    csrf: &str,
    error: &str,
    replacing: bool,
) -> String {
    let current_field = if replacing {
        SECOND_FACTOR_CURRENT_FIELD
    } else {
        ""
    };
    SECOND_FACTOR_HTML
        .replacen("<!--SF-ERROR-->", error, 1)
        .replacen("<!--SF-CURRENT-->", current_field, 1)
        .replacen("<!--SF-QR-->", qr_svg, 1)
        .replace("__SECRET__", &escape(secret_base32))
        .replace("__CSRF__", &escape(csrf))
}

/// The page that shows the recovery codes, once.
pub fn second_factor_done_page(recovery_codes: &[String]) -> String {
    let items: String = recovery_codes
        .iter()
        .map(|c| format!("<li>{}</li>", escape(c)))
        .collect();
    SECOND_FACTOR_DONE_HTML.replacen("<!--RECOVERY-CODES-->", &items, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth3_second_factor_pages_fill_their_slots_escaped() {
        let page = second_factor_page(
            "<svg></svg>",
            "ABC<",
            "t\"k",
            SECOND_FACTOR_ERROR_WRONG,
            false,
        );
        assert!(page.contains(r#"<div id="totp-qr" class="qr"><svg></svg></div>"#));
        assert!(page.contains(r#"name="secret" value="ABC&lt;""#), "{page}");
        assert!(page.contains(r#"name="csrf" value="t&quot;k""#), "{page}");
        assert!(page.contains("sf_wrong") && !page.contains("__"), "{page}");
        assert!(
            !page.contains("name=\"current\"") && !page.contains("<!--"),
            "a first enrolment asks for no current code: {page}"
        );
        let replacing = second_factor_page("<svg></svg>", "ABC", "tk", "", true);
        assert!(
            replacing.contains(r#"name="current""#) && replacing.contains("sf_replace_hint"),
            "{replacing}"
        );
        let done = second_factor_done_page(&["AAAA-BBBB".into(), "<x>".into()]);
        assert!(
            done.contains("<li>AAAA-BBBB</li><li>&lt;x&gt;</li>"),
            "{done}"
        );
    }

    /// Every text the second factor's pages name exists in Japanese and in English.
    #[test]
    fn auth3_second_factor_texts_exist_in_japanese_and_english() {
        let i18n = String::from_utf8_lossy(get("/i18n.js").expect("i18n.js").bytes).into_owned();
        let (ja, en) = i18n.split_once("\n    en: {").expect("an English block");
        for html in [
            SECOND_FACTOR_HTML,
            SECOND_FACTOR_DONE_HTML,
            SECOND_FACTOR_ERROR_WRONG,
            SECOND_FACTOR_ERROR_CURRENT,
            SECOND_FACTOR_ERROR_WAIT,
            SECOND_FACTOR_CURRENT_FIELD,
        ] {
            for key in html.split("data-i18n=\"").skip(1) {
                let key = key.split('"').next().unwrap_or_default();
                let entry = format!("\n      {key}: \"");
                assert!(ja.contains(&entry), "{key} has no Japanese text");
                assert!(en.contains(&entry), "{key} has no English text");
            }
        }
    }

    /// The firmware card's labels, every update result word and every refusal reason exist in
    /// Japanese and in English.
    #[test]
    fn avl5_firmware_texts_exist_in_japanese_and_english() {
        use crate::state::events::UpdateRefusal;
        use crate::update::records::Outcome;
        let i18n = String::from_utf8_lossy(get("/i18n.js").expect("i18n.js").bytes).into_owned();
        let (ja, en) = i18n.split_once("\n    en: {").expect("an English block");
        let card = INDEX_HTML
            .split("id=\"firmware-card\"")
            .nth(1)
            .and_then(|rest| rest.split("</section>").next())
            .expect("the firmware card");
        let mut keys: Vec<String> = card
            .split("data-i18n=\"")
            .skip(1)
            .map(|key| key.split('"').next().unwrap_or_default().to_string())
            .collect();
        assert!(keys.len() >= 4, "{keys:?}");
        keys.extend(
            Outcome::ALL
                .iter()
                .map(|o| format!("update_result_{}", o.as_str())),
        );
        keys.extend(
            [UpdateRefusal::NotBlessed, UpdateRefusal::TooLargeForSlot]
                .iter()
                .map(|r| format!("event_update_refused_reason_{}", r.as_str())),
        );
        for key in keys {
            let entry = format!("\n      {key}: \"");
            assert!(ja.contains(&entry), "{key} has no Japanese text");
            assert!(en.contains(&entry), "{key} has no English text");
        }
    }

    /// The hub's facilities card names texts that exist in Japanese and in English, and so does
    /// every word app.js shows in it.
    #[test]
    fn avl6_facilities_texts_exist_in_japanese_and_english() {
        let i18n = String::from_utf8_lossy(get("/i18n.js").expect("i18n.js").bytes).into_owned();
        let (ja, en) = i18n.split_once("\n    en: {").expect("an English block");
        let card = INDEX_HTML
            .split("id=\"facilities-card\"")
            .nth(1)
            .and_then(|rest| rest.split("</section>").next())
            .expect("the facilities card");
        let mut keys: Vec<String> = card
            .split("data-i18n=\"")
            .skip(1)
            .map(|key| key.split('"').next().unwrap_or_default().to_string())
            .collect();
        assert!(keys.len() >= 20, "{keys:?}");
        keys.extend(
            [
                "facility_search_hint",
                "facility_alarm_on",
                "no_facilities",
                "never",
                "seconds_ago",
            ]
            .map(str::to_string),
        );
        for key in keys {
            let entry = format!("\n      {key}: \"");
            assert!(ja.contains(&entry), "{key} has no Japanese text");
            assert!(en.contains(&entry), "{key} has no English text");
        }
    }

    #[test]
    fn int1_assets_are_found_by_exact_path_only() {
        assert!(get("/app.js").is_some());
        for path in [
            "/app.js/",
            "/../app.js",
            "/%2e%2e/app.js",
            "/static/../app.js",
            "app.js",
            "/APP.JS",
            "/etc/passwd",
        ] {
            assert!(get(path).is_none(), "{path}");
        }
    }

    #[test]
    fn ops3_login_page_has_the_error_slot_and_pages_fetch_nothing_external() {
        assert!(LOGIN_HTML.contains(LOGIN_ERROR_MARKER));
        assert!(login_page(LOGIN_ERROR_WRONG).contains("login_wrong"));
        assert!(!login_page("").contains(LOGIN_ERROR_MARKER));
        for page in [
            INDEX_HTML,
            ENROLMENT_HTML,
            LOGIN_HTML,
            SECOND_FACTOR_HTML,
            SECOND_FACTOR_DONE_HTML,
        ] {
            assert!(
                !page.contains("http://") && !page.contains("https://"),
                "{page}"
            );
            assert!(
                !page.contains("<script>"),
                "inline script would break the CSP"
            );
        }
        for (path, asset) in ASSETS {
            let text = String::from_utf8_lossy(asset.bytes);
            assert!(
                !text.contains("http://") && !text.contains("https://") || *path == "/favicon.svg",
                "{path} names an external URL"
            );
        }
    }
}
