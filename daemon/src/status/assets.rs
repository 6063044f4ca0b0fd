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

/// Login error: wrong password.
pub const LOGIN_ERROR_WRONG: &str =
    r#"<p class="error" id="login-error" data-i18n="login_wrong">Wrong password.</p>"#;
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

#[cfg(test)]
mod tests {
    use super::*;

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
        for page in [INDEX_HTML, ENROLMENT_HTML, LOGIN_HTML] {
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
