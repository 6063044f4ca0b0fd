//! The status and enrolment pages' request parsing: form fields and query strings
//! (percent-decoding, `+`, pairs), the session cookie from `Cookie` headers and the
//! cross-site check on `Sec-Fetch-Site`, `Origin` and `Host`.
//!
//! Input: lines. The first is the form body (and query string); every further line that is a
//! valid header value becomes, by its position, a `Cookie`, `Origin`, `Host` or
//! `Sec-Fetch-Site` header (as hyper would hand them over).
#![no_main]

use hyper::header::{HeaderMap, HeaderValue, COOKIE, HOST, ORIGIN};
use libfuzzer_sys::fuzz_target;
use renkei::status::http::{form_field, form_pairs, same_origin_headers, session_cookie};

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|b| *b == b'\n');
    let body = lines.next().unwrap_or_default();
    for name in ["password", "code", "csrf", "secret", "current"] {
        let _ = form_field(body, name);
    }
    let _ = form_pairs(body);

    let mut headers = HeaderMap::new();
    for (index, line) in lines.enumerate() {
        let Ok(value) = HeaderValue::from_bytes(line) else {
            continue;
        };
        match index % 4 {
            0 => headers.append(COOKIE, value),
            1 => headers.append(ORIGIN, value),
            2 => headers.append(HOST, value),
            _ => headers.append("sec-fetch-site", value),
        };
    }
    let _ = session_cookie(&headers);
    let _ = same_origin_headers(&headers, true);
    let _ = same_origin_headers(&headers, false);
});
