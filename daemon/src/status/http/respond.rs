//! Building answers and reading requests: the security headers every answer carries, small
//! response helpers, the bounded body read, form and cookie parsing, and the same-origin check.
//! Nothing here trusts the request.

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;

use crate::status::assets;

/// A request body must arrive within this time.
pub const BODY_READ_TIMEOUT_SECS: u64 = 10;
/// A request body may not be larger (413 beyond): a login form is tiny.
pub const MAX_BODY_BYTES: usize = 4 * 1024;
/// A too large body up to this size is read and dropped before the 413 goes out, so that the
/// client is done sending and reads the answer; a larger one is cut off.
const DRAIN_BODY_BYTES: usize = 1024 * 1024;
/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "renkei_session";

/// Every header the server adds: no framing, no sniffing, no referrer to other sites, nothing
/// from elsewhere.
const SECURITY_HEADERS: &[(&str, &str)] = &[
    (
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
         connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    // Not `no-referrer`: with it Chromium sends `Origin: null` on same-origin form posts.
    ("referrer-policy", "same-origin"),
    ("cache-control", "no-store"),
];

pub(super) type Body = Full<Bytes>;

/// Adds the security headers to every response.
pub(super) fn finish(mut response: Response<Body>) -> Response<Body> {
    let headers = response.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        headers.insert(*name, HeaderValue::from_static(value));
    }
    response
}

pub(super) fn response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

pub(super) fn text(status: StatusCode, message: &str) -> Response<Body> {
    response(status, "text/plain; charset=utf-8", format!("{message}\n"))
}

pub(super) fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(body) => response(status, "application/json", body),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot encode: {e}"),
        ),
    }
}

pub(super) fn json_error(status: StatusCode, message: &str) -> Response<Body> {
    json(status, &serde_json::json!({ "error": message }))
}

pub(super) fn redirect(location: &'static str) -> Response<Body> {
    let mut r = text(StatusCode::SEE_OTHER, "see other");
    r.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(location));
    r
}

pub(super) fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

pub(super) fn asset(path: &str) -> Option<Response<Body>> {
    assets::get(path).map(|a| response(StatusCode::OK, a.content_type, Bytes::from_static(a.bytes)))
}

pub(super) fn is_read(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

/// Reads a small request body, bounded in size and time.
///
/// A body over `MAX_BODY_BYTES` is refused with 413, but up to `DRAIN_BODY_BYTES` of it is read
/// and dropped first: closing on a client that is still sending resets the connection, and the
/// client sees "broken pipe" instead of the 413 (a lingering close, as web servers do).
pub(super) async fn read_body(request: Request<Incoming>) -> Result<Bytes, Response<Body>> {
    let too_large = || text(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > DRAIN_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(BODY_READ_TIMEOUT_SECS);
    let mut body = request.into_body();
    let mut kept = Vec::new();
    let mut total = 0usize;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(text(StatusCode::REQUEST_TIMEOUT, "request body too slow")),
            Ok(None) => break,
            Ok(Some(Err(_))) => {
                return Err(text(StatusCode::BAD_REQUEST, "unreadable request body"))
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total = total.saturating_add(data.len());
        if total > DRAIN_BODY_BYTES {
            return Err(too_large());
        }
        if total <= MAX_BODY_BYTES {
            kept.extend_from_slice(&data);
        }
    }
    if total > MAX_BODY_BYTES {
        return Err(too_large());
    }
    Ok(Bytes::from(kept))
}

/// Reads and drops a request body that is answered without being used (refused before it was
/// needed), within the same bounds as [`read_body`]: a client still sending when the connection
/// closes sees "broken pipe" instead of the answer.
pub(super) async fn drain_body(request: Request<Incoming>) {
    let _ = read_body(request).await;
}

/// The value of one `application/x-www-form-urlencoded` field; `None` if absent or malformed.
pub fn form_field(body: &[u8], name: &str) -> Option<String> {
    for pair in body.split(|b| *b == b'&') {
        let mut parts = pair.splitn(2, |b| *b == b'=');
        let key = percent_decode(parts.next()?)?;
        if key == name {
            return percent_decode(parts.next().unwrap_or_default());
        }
    }
    None
}

/// Every `name=value` pair of an `application/x-www-form-urlencoded` text (a query string), in
/// order; `None` if any part is malformed.
pub fn form_pairs(text: &[u8]) -> Option<Vec<(String, String)>> {
    text.split(|b| *b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let mut parts = pair.splitn(2, |b| *b == b'=');
            let name = percent_decode(parts.next()?)?;
            Some((name, percent_decode(parts.next().unwrap_or_default())?))
        })
        .collect()
}

fn percent_decode(input: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = input.get(i + 1..i + 3)?;
                let text = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(text, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The session token from the `Cookie` headers, if present.
pub fn session_cookie(headers: &hyper::HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim().to_string())
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

/// A POST from another site's page is refused: when the browser says where the request comes
/// from, it must be this server. `Sec-Fetch-Site` (sent by every current browser, and not
/// settable by a page) must be `same-origin` or `none` (typed or bookmarked); `Origin`, when
/// present, must name this server. A client that sends neither (curl, scripts) is not a browser
/// that another site could drive, and passes.
pub(super) fn same_origin(request: &Request<Incoming>, https: bool) -> bool {
    same_origin_headers(request.headers(), https)
}

/// [`same_origin`] on a request's headers alone (public for the fuzz target `http_forms`).
pub fn same_origin_headers(headers: &hyper::HeaderMap, https: bool) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        if !matches!(site.to_str(), Ok("same-origin" | "none")) {
            return false;
        }
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    match (origin.to_str().ok(), host) {
        (Some(origin), Some(host)) => {
            let scheme = if https { "https" } else { "http" };
            origin == format!("{scheme}://{host}")
        }
        _ => false,
    }
}

/// `html` with the text of the element `id="<id>"` replaced by `value`, HTML-escaped; `html`
/// unchanged if there is no such element.
pub(super) fn fill_element(html: &str, id: &str, value: &str) -> String {
    let marker = format!("id=\"{id}\">");
    let Some(start) = html.find(&marker).map(|i| i + marker.len()) else {
        return html.to_string();
    };
    let Some(len) = html.get(start..).and_then(|rest| rest.find('<')) else {
        return html.to_string();
    };
    let escaped: String = value
        .chars()
        .map(|c| match c {
            '&' => "&amp;".to_string(),
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '"' => "&quot;".to_string(),
            '\'' => "&#39;".to_string(),
            c => c.to_string(),
        })
        .collect();
    format!("{}{escaped}{}", &html[..start], &html[start + len..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth1_same_origin_from_headers() {
        let headers = |pairs: &[(&str, &[u8])]| {
            let mut map = hyper::HeaderMap::new();
            for (name, value) in pairs {
                let name = hyper::header::HeaderName::from_bytes(name.as_bytes()).expect("name");
                let value = hyper::header::HeaderValue::from_bytes(value).expect("value");
                map.append(name, value);
            }
            map
        };
        assert!(same_origin_headers(&headers(&[]), true));
        let same = headers(&[
            ("origin", b"https://198.18.0.1:9443"),
            ("host", b"198.18.0.1:9443"),
        ]);
        assert!(same_origin_headers(&same, true));
        assert!(!same_origin_headers(&same, false));
        assert!(!same_origin_headers(
            &headers(&[("origin", b"https://x")]),
            true
        ));
        assert!(!same_origin_headers(
            &headers(&[("sec-fetch-site", b"cross-site")]),
            true
        ));
        assert!(same_origin_headers(
            &headers(&[("sec-fetch-site", b"none")]),
            true
        ));
        // Not UTF-8: refused, never a panic.
        let opaque = headers(&[("origin", b"https://\xff"), ("host", b"\xff")]);
        assert!(!same_origin_headers(&opaque, true));
    }

    #[test]
    fn auth1_form_fields_decode_and_never_panic() {
        assert_eq!(
            form_field(b"password=p%40ss+word%21&x=1", "password").as_deref(),
            Some("p@ss word!")
        );
        assert_eq!(
            form_field(b"x=1&password=", "password").as_deref(),
            Some("")
        );
        assert_eq!(form_field(b"x=1", "password"), None);
        assert_eq!(form_field(b"password=%zz", "password"), None);
        assert_eq!(form_field(b"password=%4", "password"), None);
        assert_eq!(
            form_field(b"password=%ff%fe", "password"),
            None,
            "not UTF-8"
        );
        assert_eq!(form_field(b"password", "password").as_deref(), Some(""));
        assert_eq!(form_field(b"", "password"), None);
        assert_eq!(
            form_field("password=パスワード".as_bytes(), "password").as_deref(),
            Some("パスワード")
        );
    }

    #[test]
    fn auth1_session_cookie_is_found_among_others() {
        let mut headers = hyper::HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; renkei_session=abc ; b=2"),
        );
        assert_eq!(session_cookie(&headers).as_deref(), Some("abc"));
        let mut headers = hyper::HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("x=1"));
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("renkei_session=def"),
        );
        assert_eq!(session_cookie(&headers).as_deref(), Some("def"));
        let mut headers = hyper::HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("renkei_session="));
        assert_eq!(session_cookie(&headers), None);
        let long = format!("renkei_session={}", "a".repeat(200));
        let mut headers = hyper::HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_str(&long).expect("header"),
        );
        assert_eq!(
            session_cookie(&headers),
            None,
            "oversized tokens are ignored"
        );
    }

    #[test]
    fn ops1_filled_elements_are_escaped() {
        assert_eq!(
            fill_element("<p id=\"x\">-</p>", "x", "<script>&'\""),
            "<p id=\"x\">&lt;script&gt;&amp;&#39;&quot;</p>"
        );
        assert_eq!(fill_element("<p>-</p>", "x", "v"), "<p>-</p>");
        assert_eq!(fill_element("<p id=\"x\">-", "x", "v"), "<p id=\"x\">-");
    }
}
