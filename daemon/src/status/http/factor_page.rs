//! Enrolling the administrator's second factor from the page (AUTH-3): right after a password
//! login (the only thing a session may do while the box requires a factor and none is
//! enrolled), or later from the dashboard's warning. The secret is made on the box, shown as a
//! QR code rendered here and as text, and stored only once the administrator has typed a code
//! from it; the recovery codes are shown once, on the answer to that form.

use std::net::SocketAddr;
use std::sync::PoisonError;
use std::time::Instant;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use super::page::{unix_now, with_session_cookie, PageSite};
use super::respond::{form_field, json_error, read_body, response, same_origin, text, Body};
use crate::status::assets;
use crate::status::auth::{constant_time_eq, Access, Session};
use crate::status::events::Level;
use crate::status::second_factor::{self, Enrolled};

impl PageSite {
    /// The enrolment form with a fresh secret.
    pub(super) fn second_factor_form(&self, session: &Session) -> Response<Body> {
        match second_factor::new_secret() {
            Ok(secret) => self.second_factor_page(StatusCode::OK, &secret, session, ""),
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        }
    }

    fn second_factor_page(
        &self,
        status: StatusCode,
        secret: &str,
        session: &Session,
        error: &str,
    ) -> Response<Body> {
        match second_factor::qr_svg(&second_factor::otpauth_uri(secret)) {
            Ok(svg) => response(
                status,
                assets::HTML,
                assets::second_factor_page(&svg, secret, &session.csrf_token, error),
            ),
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        }
    }

    /// The form's answer: the secret is stored if the code is its current one.
    pub(super) async fn second_factor_enrol(
        &self,
        request: Request<Incoming>,
        peer: SocketAddr,
        token: &str,
        session: &Session,
    ) -> Response<Body> {
        if !same_origin(&request, self.https) {
            return text(StatusCode::FORBIDDEN, "cross-origin request refused");
        }
        let body = match read_body(request).await {
            Ok(body) => body,
            Err(response) => return response,
        };
        let csrf = form_field(&body, "csrf").unwrap_or_default();
        if !constant_time_eq(csrf.as_bytes(), session.csrf_token.as_bytes()) {
            return json_error(StatusCode::FORBIDDEN, "missing or wrong CSRF token");
        }
        let secret = form_field(&body, "secret").unwrap_or_default();
        if !second_factor::is_valid_secret(&secret) {
            return text(StatusCode::BAD_REQUEST, "the form carries no usable secret");
        }
        let code = form_field(&body, "code").unwrap_or_default();
        let (factor, recovery_codes) = match Enrolled::enrol(&secret, &code, unix_now()) {
            Ok(Ok(enrolled)) => enrolled,
            Ok(Err(_)) => {
                return self.second_factor_page(
                    StatusCode::BAD_REQUEST,
                    &secret,
                    session,
                    assets::SECOND_FACTOR_ERROR_WRONG,
                )
            }
            Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        };
        if let Err(e) = self.factors.save(&factor) {
            tracing::error!(error = %e, "second factor not stored");
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the second factor cannot be stored on the box (see its journal)",
            );
        }
        if let Some(events) = self.source.events() {
            events.push(
                Level::Info,
                "login",
                format!(
                    "administrator enrolled a second factor (TOTP) from {}",
                    peer.ip()
                ),
            );
        }
        let done = response(
            StatusCode::OK,
            assets::HTML,
            assets::second_factor_done_page(&recovery_codes),
        );
        if session.access == Access::Full {
            return done;
        }
        // The session grows from enrolment only to full access: a new token for it.
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(token);
        match self.open_session(Instant::now(), Access::Full) {
            Some(token) => with_session_cookie(done, &token, self.session_ttl),
            None => text(StatusCode::INTERNAL_SERVER_ERROR, "cannot create a session"),
        }
    }
}
