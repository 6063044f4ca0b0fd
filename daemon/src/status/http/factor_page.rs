//! Enrolling the administrator's second factor from the page (AUTH-3): right after a password
//! login (the only thing a session may do while the box requires a factor and none is
//! enrolled), or later from the dashboard's warning. The secret is made on the box, shown as a
//! QR code rendered here and as text, and stored only once the administrator has typed a code
//! from it; the recovery codes are shown once, on the answer to that form. Replacing an
//! enrolled factor also needs a current code or an unused recovery code of it, checked in the
//! same rate-limited attempt as a login, so a stolen session cannot swap the secret.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};

use super::page::{unix_now, with_session_cookie, PageSite};
use super::respond::{form_field, json_error, read_body, response, same_origin, text, Body};
use crate::state::events::{CodeRefusal, Occurrence};
use crate::status::assets;
use crate::status::auth::{self, constant_time_eq, Access, Guarded, Session};
use crate::status::second_factor::{self, CodeRefused, Enrolled, FactorStore, Used};

/// Why a new factor was not stored.
enum NotStored {
    /// The proof of the enrolled factor was wrong, replayed or missing.
    Refused(CodeRefused),
    /// The factor file could not be read or written.
    Store(String),
}

/// Stores `new` (replacing the enrolled factor only on proof `current`), off the async
/// threads: a small durable file write.
async fn store(
    factors: &Arc<FactorStore>,
    current: String,
    new: Enrolled,
    now_unix: u64,
) -> Result<Option<Used>, NotStored> {
    let factors = Arc::clone(factors);
    match tokio::task::spawn_blocking(move || factors.replace(&current, &new, now_unix)).await {
        Ok(Ok(Ok(used))) => Ok(used),
        Ok(Ok(Err(refused))) => Err(NotStored::Refused(refused)),
        Ok(Err(e)) => Err(NotStored::Store(e.to_string())),
        Err(_) => Err(NotStored::Store("the write was aborted".into())),
    }
}

impl PageSite {
    /// The enrolment form with a fresh secret.
    pub(super) fn second_factor_form(&self, session: &Session) -> Response<Body> {
        match second_factor::new_secret() {
            Ok(secret) => {
                self.second_factor_page(StatusCode::OK, &secret, session, "", self.enrolled())
            }
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        }
    }

    fn second_factor_page(
        &self,
        status: StatusCode,
        secret: &str,
        session: &Session,
        error: &str,
        replacing: bool,
    ) -> Response<Body> {
        match second_factor::qr_svg(&second_factor::otpauth_uri(secret)) {
            Ok(svg) => response(
                status,
                assets::HTML,
                assets::second_factor_page(&svg, secret, &session.csrf_token, error, replacing),
            ),
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        }
    }

    /// True when a factor is enrolled, or when its file cannot be read (the form then asks for
    /// the current code; storing will fail and say why).
    fn enrolled(&self) -> bool {
        self.factors.load().map_or(true, |f| f.is_some())
    }

    /// The form's answer: the secret is stored if the code is its current one and, when a
    /// factor is enrolled, `current` proves it.
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
        let now_unix = unix_now();
        let replacing = self.enrolled();
        let (factor, recovery_codes) = match Enrolled::enrol(&secret, &code, now_unix) {
            Ok(Ok(enrolled)) => enrolled,
            Ok(Err(_)) => {
                return self.second_factor_page(
                    StatusCode::BAD_REQUEST,
                    &secret,
                    session,
                    assets::SECOND_FACTOR_ERROR_WRONG,
                    replacing,
                )
            }
            Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        };
        let current = form_field(&body, "current").unwrap_or_default();
        let address = peer.ip();
        let stored = if replacing {
            // The proof is a credential: one rate-limited attempt, like a login.
            let attempt = store(&self.factors, current, factor, now_unix);
            match auth::guarded(&self.limiter, address, Instant::now, attempt).await {
                Guarded::Accepted(used) => Ok(used),
                Guarded::Wait(wait) => {
                    self.stats.login_failures.fetch_add(1, Ordering::Relaxed);
                    let mut page = self.second_factor_page(
                        StatusCode::TOO_MANY_REQUESTS,
                        &secret,
                        session,
                        assets::SECOND_FACTOR_ERROR_WAIT,
                        replacing,
                    );
                    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                    if let Ok(value) = HeaderValue::from_str(&secs.max(1).to_string()) {
                        page.headers_mut().insert(header::RETRY_AFTER, value);
                    }
                    return page;
                }
                Guarded::Refused { reason, delay } => {
                    if let NotStored::Refused(refused) = &reason {
                        self.replacement_refused(address, *refused, delay);
                    }
                    Err(reason)
                }
            }
        } else {
            store(&self.factors, current, factor, now_unix).await
        };
        let used = match stored {
            Ok(used) => used,
            Err(NotStored::Refused(_)) => {
                return self.second_factor_page(
                    StatusCode::UNAUTHORIZED,
                    &secret,
                    session,
                    assets::SECOND_FACTOR_ERROR_CURRENT,
                    true,
                )
            }
            Err(NotStored::Store(error)) => {
                tracing::error!(%error, "second factor not stored");
                return text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the second factor cannot be stored on the box (see its journal)",
                );
            }
        };
        if let Some(events) = self.source.events() {
            events.push(match used {
                None => Occurrence::SecondFactorEnrolled { address },
                Some(Used::Code { .. }) => Occurrence::SecondFactorReplacedWithCode { address },
                Some(Used::Recovery { .. }) => {
                    Occurrence::SecondFactorReplacedWithRecoveryCode { address }
                }
            });
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

    /// A failed proof is a failed login attempt: counted, and an event under the ring's one
    /// rate limit for failed logins.
    fn replacement_refused(
        &self,
        address: std::net::IpAddr,
        refused: CodeRefused,
        delay: Duration,
    ) {
        self.stats.login_failures.fetch_add(1, Ordering::Relaxed);
        let Some(events) = self.source.events() else {
            return;
        };
        let reason = match refused {
            CodeRefused::Wrong => CodeRefusal::WrongCode,
            CodeRefused::Replayed => CodeRefusal::CodeReplayed,
        };
        events.push_limited(
            "failed",
            Occurrence::SecondFactorReplaceRefused {
                address,
                reason,
                retry_after_secs: delay.as_secs(),
            },
        );
    }
}
