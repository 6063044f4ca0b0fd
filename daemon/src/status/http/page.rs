//! The administrator's site on the LAN listener: the login, the page, its JSON API and
//! `/metrics` (login required for all but the login page and the embedded assets).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio::sync::Semaphore;

use super::metrics_site::metrics_response;
use super::respond::{
    asset, drain_body, form_field, form_pairs, is_read, json, json_error, method_not_allowed,
    read_body, redirect, response, same_origin, session_cookie, text, Body, SESSION_COOKIE,
};
use super::server::Site;
use super::stats::PageStats;
use crate::state::events::{EventLog, LoginRefusal, Occurrence};
use crate::status::assets;
use crate::status::auth::{self, Access, Guarded, LoginLimiter, SessionStore};
use crate::status::facilities::{self, FacilityQuery};
use crate::status::metrics::PeerSeries;
use crate::status::second_factor::{CodeRefused, FactorStore, Used};
use crate::status::StatusSource;

/// Password checks (argon2id, ~19 MiB each) running at once; further logins wait.
pub const MAX_CONCURRENT_PASSWORD_CHECKS: usize = 2;
/// Header carrying the session's CSRF token on state-changing requests.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// The second factor's enrolment page (AUTH-3).
pub const SECOND_FACTOR_PATH: &str = "/second-factor";

/// The admin page, its API and `/metrics` (login required for all but the login page).
pub(super) struct PageSite {
    pub(super) source: StatusSource,
    pub(super) password_hash: String,
    pub(super) session_ttl: Duration,
    pub(super) sessions: Mutex<SessionStore>,
    pub(super) limiter: Mutex<LoginLimiter>,
    pub(super) checks: Semaphore,
    pub(super) stats: Arc<PageStats>,
    pub(super) https: bool,
    /// The administrator's second factor, in the state directory.
    pub(super) factors: Arc<FactorStore>,
    /// `status.require_second_factor`.
    pub(super) require_second_factor: bool,
    /// `status.per_peer_metrics`.
    pub(super) metrics_series: PeerSeries,
}

impl PageSite {
    fn session(&self, request: &Request<Incoming>) -> Option<(String, auth::Session)> {
        let token = session_cookie(request.headers())?;
        let session = self
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&token, Instant::now())?;
        Some((token, session))
    }

    fn csrf_ok(request: &Request<Incoming>, session: &auth::Session) -> bool {
        request
            .headers()
            .get(CSRF_HEADER)
            .is_some_and(|v| auth::constant_time_eq(v.as_bytes(), session.csrf_token.as_bytes()))
    }

    fn events(&self) -> Option<&EventLog> {
        self.source.events()
    }

    async fn login(&self, request: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        if !same_origin(&request, self.https) {
            drain_body(request).await;
            return text(StatusCode::FORBIDDEN, "cross-origin login refused");
        }
        let address = peer.ip();
        // The check takes the request when it runs; a request it never took (the limiter said
        // wait) is still here, and is drained before that answer goes out.
        let mut unread = Some(request);
        let check = async {
            let Some(request) = unread.take() else {
                return Err(Refusal::Request(Box::new(text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "login request lost",
                ))));
            };
            let body = read_body(request)
                .await
                .map_err(|r| Refusal::Request(Box::new(r)))?;
            let Some(password) = form_field(&body, "password") else {
                return Err(Refusal::Request(Box::new(login_page(
                    StatusCode::BAD_REQUEST,
                    assets::LOGIN_ERROR_MISSING,
                ))));
            };
            let code = form_field(&body, "code").unwrap_or_default();
            let Ok(_permit) = self.checks.acquire().await else {
                return Err(Refusal::Request(Box::new(text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "shutting down",
                ))));
            };
            let hash = self.password_hash.clone();
            let factors = Arc::clone(&self.factors);
            let required = self.require_second_factor;
            tokio::task::spawn_blocking(move || {
                check_credentials(&hash, &password, &code, &factors, required)
            })
            .await
            .unwrap_or(Err(Refusal::Wrong(LoginRefusal::CheckAborted)))
        };
        let (delay, granted) =
            match auth::guarded(&self.limiter, address, Instant::now, check).await {
                Guarded::Accepted(granted) => (None, Some(granted)),
                Guarded::Wait(wait) => {
                    self.stats.login_failures.fetch_add(1, Ordering::Relaxed);
                    if let Some(request) = unread.take() {
                        drain_body(request).await;
                    }
                    return login_page_wait(wait);
                }
                Guarded::Refused {
                    reason: Refusal::Request(response),
                    ..
                } => return *response,
                Guarded::Refused {
                    reason: Refusal::Store(error),
                    ..
                } => {
                    tracing::error!(%error, "second factor unreadable: login refused");
                    return text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "the second factor cannot be read on the box (see its journal)",
                    );
                }
                Guarded::Refused {
                    reason: Refusal::Wrong(why),
                    delay,
                } => (Some((delay, why)), None),
            };
        let now = Instant::now();
        if let Some((delay, why)) = delay {
            self.stats.login_failures.fetch_add(1, Ordering::Relaxed);
            // The event ring's one rate limit for refusals: a flood of guesses is summarised
            // and cannot push the config history out of the ring.
            if let Some(events) = self.events() {
                events.push_limited(
                    "failed",
                    Occurrence::LoginFailed {
                        address,
                        reason: why,
                        retry_after_secs: delay.as_secs(),
                    },
                );
            }
            return login_page(StatusCode::UNAUTHORIZED, assets::LOGIN_ERROR_WRONG);
        }
        let Some(granted) = granted else {
            return text(StatusCode::INTERNAL_SERVER_ERROR, "login state lost");
        };
        let Some(token) = self.open_session(now, granted.access) else {
            return text(StatusCode::INTERNAL_SERVER_ERROR, "cannot create a session");
        };
        self.stats.logins.fetch_add(1, Ordering::Relaxed);
        if let Some(events) = self.events() {
            events.push(match granted.used {
                Some(Used::Code { .. }) => Occurrence::LoginSucceeded { address },
                Some(Used::Recovery { left }) => Occurrence::LoginWithRecoveryCode {
                    address,
                    recovery_codes_left: left,
                },
                None if granted.access == Access::EnrolmentOnly => {
                    Occurrence::LoginToEnrol { address }
                }
                None => Occurrence::LoginWithoutSecondFactor { address },
            });
        }
        let target = match granted.access {
            Access::Full => "/",
            Access::EnrolmentOnly => SECOND_FACTOR_PATH,
        };
        with_session_cookie(redirect(target), &token, self.session_ttl)
    }

    /// Opens a session; its token, or `None` when the random source failed.
    pub(super) fn open_session(&self, now: Instant, access: Access) -> Option<String> {
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .create(now, access)
            .ok()
            .map(|(token, _)| token)
    }

    async fn tunnel_action(&self, action: &str) -> Response<Body> {
        let tunnel = self.source.tunnel();
        let result = match action {
            "connect" => tunnel.connect_now().await,
            _ => {
                tunnel.disconnect().await;
                Ok(())
            }
        };
        if let Some(events) = self.events() {
            events.push(match &result {
                Ok(()) if action == "connect" => Occurrence::TunnelConnectRequested {},
                Ok(()) => Occurrence::TunnelDisconnectRequested {},
                Err(e) => Occurrence::TunnelConnectFailed {
                    reason: e.problem(),
                    error: e.to_string(),
                },
            });
        }
        match result {
            Ok(()) => json(StatusCode::OK, &serde_json::json!({ "ok": true })),
            Err(e) => json_error(StatusCode::GATEWAY_TIMEOUT, &e.to_string()),
        }
    }
}

/// Why a login check failed.
enum Refusal {
    /// The request itself was unusable (too large, too slow, no password field): its answer.
    Request(Box<Response<Body>>),
    /// Wrong credentials; why, for the event log only (the page never tells which factor).
    Wrong(LoginRefusal),
    /// The second factor's file cannot be read: nobody logs in until it is fixed.
    Store(String),
}

/// What a passed login check grants.
struct Granted {
    access: Access,
    /// The second factor used, if one is enrolled.
    used: Option<Used>,
}

/// The password, then the second factor if one is enrolled (a spent code is stored before
/// this returns). Blocking: argon2id and a small file write.
fn check_credentials(
    hash: &str,
    password: &str,
    code: &str,
    factors: &FactorStore,
    required: bool,
) -> Result<Granted, Refusal> {
    if !auth::verify_password(hash, password) {
        return Err(Refusal::Wrong(LoginRefusal::WrongPassword));
    }
    let enrolled = factors
        .load()
        .map_err(|e| Refusal::Store(e.to_string()))?
        .is_some();
    if !enrolled {
        let access = if required {
            Access::EnrolmentOnly
        } else {
            Access::Full
        };
        return Ok(Granted { access, used: None });
    }
    match factors.check(code, unix_now()) {
        Ok(Ok(used)) => Ok(Granted {
            access: Access::Full,
            used: Some(used),
        }),
        Ok(Err(CodeRefused::Replayed)) => Err(Refusal::Wrong(LoginRefusal::CodeReplayed)),
        Ok(Err(CodeRefused::Wrong)) => Err(Refusal::Wrong(LoginRefusal::WrongCode)),
        Err(e) => Err(Refusal::Store(e.to_string())),
    }
}

/// Seconds since the Unix epoch on the box's clock (TOTP counts steps from it).
pub(super) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `response` with the session cookie for `token` set.
pub(super) fn with_session_cookie(
    mut response: Response<Body>,
    token: &str,
    ttl: Duration,
) -> Response<Body> {
    let cookie = format!(
        "{SESSION_COOKIE}={token}; Path=/; Max-Age={}; HttpOnly; Secure; SameSite=Strict",
        ttl.as_secs()
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

fn login_page(status: StatusCode, error: &str) -> Response<Body> {
    response(status, assets::HTML, assets::login_page(error))
}

fn login_page_wait(wait: Duration) -> Response<Body> {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let mut r = login_page(StatusCode::TOO_MANY_REQUESTS, assets::LOGIN_ERROR_WAIT);
    if let Ok(value) = HeaderValue::from_str(&secs.max(1).to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, value);
    }
    r
}

impl Site for PageSite {
    async fn respond(
        self: Arc<Self>,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<Body> {
        let path = request.uri().path().to_string();
        let method = request.method().clone();
        if let Some(r) = asset(&path) {
            return if is_read(&method) {
                r
            } else {
                method_not_allowed("GET, HEAD")
            };
        }
        let session = self.session(&request);
        if let Some((_, s)) = &session {
            // A session that still has to enrol a second factor may do that and nothing else.
            if s.access == Access::EnrolmentOnly
                && !matches!(path.as_str(), SECOND_FACTOR_PATH | "/logout")
            {
                return if is_read(&method) && matches!(path.as_str(), "/" | "/login") {
                    redirect(SECOND_FACTOR_PATH)
                } else {
                    json_error(
                        StatusCode::FORBIDDEN,
                        "enrol a second factor first (the box requires one)",
                    )
                };
            }
        }
        match path.as_str() {
            SECOND_FACTOR_PATH => match (method, session) {
                (_, None) => redirect("/login"),
                (ref m, Some((_, s))) if is_read(m) => self.second_factor_form(&s),
                (Method::POST, Some((token, s))) => {
                    self.second_factor_enrol(request, peer, &token, &s).await
                }
                _ => method_not_allowed("GET, HEAD, POST"),
            },
            "/" => match (is_read(&method), session) {
                (false, _) => method_not_allowed("GET, HEAD"),
                (true, None) => redirect("/login"),
                (true, Some(_)) => response(StatusCode::OK, assets::HTML, assets::INDEX_HTML),
            },
            "/login" => match method {
                Method::POST => self.login(request, peer).await,
                ref m if is_read(m) => match session {
                    Some(_) => redirect("/"),
                    None => login_page(StatusCode::OK, ""),
                },
                _ => method_not_allowed("GET, HEAD, POST"),
            },
            "/logout" => match (method, session) {
                (Method::POST, Some((token, s))) if Self::csrf_ok(&request, &s) => {
                    self.sessions
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(&token);
                    let mut r = redirect("/login");
                    r.headers_mut().insert(
                        header::SET_COOKIE,
                        HeaderValue::from_static(
                            "renkei_session=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict",
                        ),
                    );
                    r
                }
                (Method::POST, Some(_)) => {
                    json_error(StatusCode::FORBIDDEN, "missing or wrong CSRF token")
                }
                (Method::POST, None) => json_error(StatusCode::UNAUTHORIZED, "login required"),
                _ => method_not_allowed("POST"),
            },
            "/api/v1/status" | "/api/v1/session" | "/api/v1/enrolment" | "/metrics" => {
                if !is_read(&method) {
                    return method_not_allowed("GET, HEAD");
                }
                let Some((_, s)) = session else {
                    return if path == "/metrics" {
                        text(
                            StatusCode::UNAUTHORIZED,
                            "login required (the operator scrapes status.metrics_listen)",
                        )
                    } else {
                        json_error(StatusCode::UNAUTHORIZED, "login required")
                    };
                };
                match path.as_str() {
                    "/api/v1/status" => status_document(&self.source, request.uri().query()),
                    "/api/v1/session" => json(
                        StatusCode::OK,
                        &serde_json::json!({
                            "csrf_token": s.csrf_token,
                            "expires_in_secs": s.expires.saturating_duration_since(Instant::now()).as_secs(),
                            "second_factor": {
                                "enrolled": self.factors.load().is_ok_and(|f| f.is_some()),
                                "required": self.require_second_factor,
                            },
                        }),
                    ),
                    "/api/v1/enrolment" => json(StatusCode::OK, &self.source.document().enrolment),
                    _ => metrics_response(&self.source, self.metrics_series),
                }
            }
            "/api/v1/facilities" => {
                if !is_read(&method) {
                    return method_not_allowed("GET, HEAD");
                }
                if session.is_none() {
                    return json_error(StatusCode::UNAUTHORIZED, "login required");
                }
                facilities_page(&self.source, request.uri().query())
            }
            "/api/v1/tunnel/connect" | "/api/v1/tunnel/disconnect" => {
                if method != Method::POST {
                    return method_not_allowed("POST");
                }
                let Some((_, s)) = session else {
                    return json_error(StatusCode::UNAUTHORIZED, "login required");
                };
                if !Self::csrf_ok(&request, &s) || !same_origin(&request, self.https) {
                    return json_error(StatusCode::FORBIDDEN, "missing or wrong CSRF token");
                }
                if let Err(reason) = self.source.check_tunnel_actions() {
                    return json_error(StatusCode::CONFLICT, &reason);
                }
                let action = if path.ends_with("connect") && !path.ends_with("disconnect") {
                    "connect"
                } else {
                    "disconnect"
                };
                self.tunnel_action(action).await
            }
            _ => text(StatusCode::NOT_FOUND, "not found"),
        }
    }
}

/// `GET /api/v1/facilities`: one page of the facility peers (AVL-6), or 400 naming the bad
/// parameter.
fn facilities_page(source: &StatusSource, query: Option<&str>) -> Response<Body> {
    let pairs = form_pairs(query.unwrap_or_default().as_bytes());
    match FacilityQuery::from_pairs(pairs) {
        Ok(query) => json(
            StatusCode::OK,
            &facilities::page(&source.tunnel().snapshot().peers, &query),
        ),
        Err(error) => json_error(StatusCode::BAD_REQUEST, &error.to_string()),
    }
}

/// `GET /api/v1/status`: the whole document, or with `?peers=summary` its `tunnel.peers` cut
/// on a box with many (a hub) and `peer_totals` added (AVL-6): what the page polls.
fn status_document(source: &StatusSource, query: Option<&str>) -> Response<Body> {
    #[derive(serde::Serialize)]
    struct Summarised {
        #[serde(flatten)]
        document: crate::status::StatusDocument,
        peer_totals: facilities::PeerTotals,
    }
    let pairs = form_pairs(query.unwrap_or_default().as_bytes());
    let summary = match pairs
        .as_deref()
        .unwrap_or(&[(String::new(), String::new())])
    {
        [] => false,
        [(name, value)] if name == "peers" && value == "summary" => true,
        [(name, value)] if name == "peers" && value == "all" => false,
        _ => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "the only parameter is peers=summary or peers=all",
            )
        }
    };
    let mut doc = source.document();
    if !summary {
        return json(StatusCode::OK, &doc);
    }
    let (kept, peer_totals) = facilities::summarise(std::mem::take(&mut doc.tunnel.peers));
    doc.tunnel.peers = kept;
    json(
        StatusCode::OK,
        &Summarised {
            document: doc,
            peer_totals,
        },
    )
}
