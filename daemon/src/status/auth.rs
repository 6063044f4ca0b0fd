//! The administrator's login to the status page (AUTH-1): password check against the argon2id
//! hash from the config, session tokens with a fixed lifetime, one CSRF token per session, and a
//! per-source-address delay that grows with every failed login.
//!
//! The pure parts take `now` as an argument so they are tested without waiting. Tokens come from
//! the OS random source; the store keeps only their SHA-256, never the tokens themselves, and
//! nothing here logs a token or a password.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordVerifier};
use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};

/// Random bytes in a session or CSRF token (256 bits).
pub const TOKEN_BYTES: usize = 32;
/// At most this many sessions live at once; a new login evicts the oldest.
pub const MAX_SESSIONS: usize = 32;
/// First delay after a failed login from an address.
pub const LOGIN_DELAY_BASE_SECS: u64 = 1;
/// The delay doubles with each further failure, up to this.
pub const LOGIN_DELAY_MAX_SECS: u64 = 300;
/// An address's failure count is forgotten after this long without a failure.
pub const LOGIN_FAILURE_MEMORY_SECS: u64 = 3600;
/// At most this many source addresses are tracked; beyond it the stalest is forgotten.
pub const MAX_TRACKED_ADDRESSES: usize = 4096;

/// Why a session could not be made.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The OS random source failed.
    #[error("the random source failed")]
    Random,
}

/// A fresh URL-safe random token.
pub fn new_token() -> Result<String, AuthError> {
    let mut bytes = [0u8; TOKEN_BYTES];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| AuthError::Random)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

fn digest(token: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Compares two secrets in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks a password against an argon2id PHC string. Slow on purpose: call it off the async
/// threads (`spawn_blocking`).
pub fn verify_password(hash: &str, password: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    argon2::Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

/// What a session may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Everything the page offers.
    Full,
    /// Only enrol a second factor: the password was right, but the box requires a second
    /// factor and the administrator has none yet (AUTH-3).
    EnrolmentOnly,
}

/// One logged-in administrator.
#[derive(Debug, Clone)]
pub struct Session {
    /// Must accompany every state-changing request of this session.
    pub csrf_token: String,
    /// What the session may do.
    pub access: Access,
    /// When the session ends, whatever happens.
    pub expires: Instant,
    created: Instant,
}

/// The live sessions, keyed by the SHA-256 of their token.
#[derive(Debug)]
pub struct SessionStore {
    ttl: Duration,
    sessions: HashMap<[u8; 32], Session>,
}

impl SessionStore {
    /// An empty store whose sessions last `ttl` from login.
    pub fn new(ttl: Duration) -> Self {
        SessionStore {
            ttl,
            sessions: HashMap::new(),
        }
    }

    /// Opens a session; returns its token (for the cookie) and the session.
    pub fn create(&mut self, now: Instant, access: Access) -> Result<(String, Session), AuthError> {
        self.sessions.retain(|_, s| s.expires > now);
        while self.sessions.len() >= MAX_SESSIONS {
            let Some(oldest) = self
                .sessions
                .iter()
                .min_by_key(|(_, s)| s.created)
                .map(|(k, _)| *k)
            else {
                break;
            };
            self.sessions.remove(&oldest);
        }
        let token = new_token()?;
        let session = Session {
            csrf_token: new_token()?,
            access,
            expires: now + self.ttl,
            created: now,
        };
        self.sessions.insert(digest(&token), session.clone());
        Ok((token, session))
    }

    /// The live session of a token, if any; an expired one is removed.
    pub fn get(&mut self, token: &str, now: Instant) -> Option<Session> {
        let key = digest(token);
        match self.sessions.get(&key) {
            Some(s) if s.expires > now => Some(s.clone()),
            Some(_) => {
                self.sessions.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Ends a session (logout).
    pub fn remove(&mut self, token: &str) {
        self.sessions.remove(&digest(token));
    }

    /// Sessions alive now.
    pub fn len(&self, now: Instant) -> usize {
        self.sessions.values().filter(|s| s.expires > now).count()
    }

    /// True when no session is alive.
    pub fn is_empty(&self, now: Instant) -> bool {
        self.len(now) == 0
    }
}

/// Whether a login attempt from an address may be checked now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Check the credentials. The attempt is already counted as a failure, so the address
    /// waits `delay` before its next check, however long this one takes, unless this one passes
    /// ([`LoginLimiter::succeeded`]).
    Reserved {
        /// The address's delay if this attempt fails.
        delay: Duration,
    },
    /// Refuse without checking; retry after this long.
    Wait(Duration),
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
    next_allowed: Instant,
}

/// Failed logins per source address, with a delay that doubles with every failure.
#[derive(Debug, Default)]
pub struct LoginLimiter {
    by_address: HashMap<IpAddr, Failures>,
}

impl LoginLimiter {
    /// No failures yet.
    pub fn new() -> Self {
        LoginLimiter::default()
    }

    /// The delay after `count` failures in a row.
    pub fn delay_after(count: u32) -> Duration {
        let shift = count.saturating_sub(1).min(16);
        let secs = LOGIN_DELAY_BASE_SECS
            .saturating_mul(1u64 << shift)
            .min(LOGIN_DELAY_MAX_SECS);
        Duration::from_secs(secs)
    }

    /// May `address` try its credentials now? If so, the attempt is counted as a failure at
    /// once (released by [`LoginLimiter::succeeded`]): counting it only after the slow argon2id
    /// check let every request that arrived meanwhile through as well (issue #14 item 3).
    pub fn admit(&mut self, address: IpAddr, now: Instant) -> Admission {
        match self.by_address.get(&address) {
            Some(f) if f.next_allowed > now => Admission::Wait(f.next_allowed - now),
            _ => Admission::Reserved {
                delay: self.failed(address, now),
            },
        }
    }

    /// Records a failure from `address`; returns the delay it now has to wait.
    fn failed(&mut self, address: IpAddr, now: Instant) -> Duration {
        let memory = Duration::from_secs(LOGIN_FAILURE_MEMORY_SECS);
        self.by_address
            .retain(|_, f| now.saturating_duration_since(f.last) < memory);
        if !self.by_address.contains_key(&address) && self.by_address.len() >= MAX_TRACKED_ADDRESSES
        {
            if let Some(stalest) = self
                .by_address
                .iter()
                .min_by_key(|(_, f)| f.last)
                .map(|(a, _)| *a)
            {
                self.by_address.remove(&stalest);
            }
        }
        let entry = self.by_address.entry(address).or_insert(Failures {
            count: 0,
            last: now,
            next_allowed: now,
        });
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
        let delay = Self::delay_after(entry.count);
        entry.next_allowed = now + delay;
        delay
    }

    /// A correct password clears the address's failures.
    pub fn succeeded(&mut self, address: IpAddr) {
        self.by_address.remove(&address);
    }

    /// Addresses with failures on record.
    pub fn tracked(&self) -> usize {
        self.by_address.len()
    }
}

/// How a rate-limited login attempt ended.
#[derive(Debug)]
pub enum Guarded<T, E> {
    /// Refused without checking anything; retry after this long.
    Wait(Duration),
    /// The check passed; the address's failures are cleared.
    Accepted(T),
    /// The check failed; the address must now wait `delay`.
    Refused {
        /// What the check said.
        reason: E,
        /// The address's delay now.
        delay: Duration,
    },
}

/// Runs one login `check` (body read, argon2id, second factor) for `address` under `limiter`:
/// the only way the page checks a credential, so every check is rate limited the same way.
pub async fn guarded<T, E>(
    limiter: &Mutex<LoginLimiter>,
    address: IpAddr,
    now: impl Fn() -> Instant,
    check: impl Future<Output = Result<T, E>>,
) -> Guarded<T, E> {
    let lock = || limiter.lock().unwrap_or_else(PoisonError::into_inner);
    let delay = match lock().admit(address, now()) {
        Admission::Wait(wait) => return Guarded::Wait(wait),
        Admission::Reserved { delay } => delay,
    };
    match check.await {
        Ok(value) => {
            lock().succeeded(address);
            Guarded::Accepted(value)
        }
        Err(reason) => Guarded::Refused { reason, delay },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Issue #14 item 3: 16 wrong passwords sent at once from one address, each check taking
    /// a while (argon2id), cost exactly one check per delay window.
    #[tokio::test(start_paused = true)]
    async fn auth1_concurrent_wrong_passwords_get_one_check_per_delay_window() {
        let limiter = Mutex::new(LoginLimiter::new());
        let address = ip("198.18.20.2");
        let checks = AtomicUsize::new(0);
        let clock = || tokio::time::Instant::now().into_std();
        let argon2_time = Duration::from_millis(300);
        for window in 1..=4u32 {
            let before = checks.load(Ordering::SeqCst);
            let window_start = tokio::time::Instant::now();
            let attempts = (0..16).map(|_| {
                guarded(&limiter, address, clock, async {
                    checks.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(argon2_time).await;
                    Err::<(), ()>(())
                })
            });
            let results = futures::future::join_all(attempts).await;
            assert_eq!(
                checks.load(Ordering::SeqCst) - before,
                1,
                "window {window}: one password check"
            );
            let waits: Vec<Duration> = results
                .iter()
                .filter_map(|r| match r {
                    Guarded::Wait(w) => Some(*w),
                    _ => None,
                })
                .collect();
            assert_eq!(
                waits.len(),
                15,
                "window {window}: the rest refused unchecked"
            );
            let delay = LoginLimiter::delay_after(window);
            assert!(waits.iter().all(|w| *w <= delay), "{waits:?}");
            // The next window opens when the delay has passed, not before.
            let window_end = window_start + delay;
            tokio::time::sleep_until(window_end - Duration::from_millis(1)).await;
            assert!(matches!(
                guarded(&limiter, address, clock, async { Err::<(), ()>(()) }).await,
                Guarded::Wait(_)
            ));
            tokio::time::sleep_until(window_end).await;
        }
        let right = guarded(&limiter, address, clock, async { Ok::<u8, ()>(7) }).await;
        assert!(matches!(right, Guarded::Accepted(7)), "{right:?}");
        assert_eq!(
            limiter.lock().expect("lock").tracked(),
            0,
            "cleared on success"
        );
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn auth1_sessions_expire_and_can_be_ended() {
        let t0 = Instant::now();
        let mut store = SessionStore::new(Duration::from_secs(60));
        let (token, session) = store.create(t0, Access::Full).expect("session");
        assert_eq!(token.len(), 43, "32 bytes of URL-safe base64");
        assert_ne!(token, session.csrf_token);
        assert!(store.get(&token, t0 + Duration::from_secs(59)).is_some());
        assert!(store.get("not-a-token", t0).is_none());
        assert!(store.get(&token, t0 + Duration::from_secs(60)).is_none());
        assert!(store.is_empty(t0), "an expired session is removed");

        let (token, _) = store.create(t0, Access::Full).expect("session");
        store.remove(&token);
        assert!(store.get(&token, t0).is_none());
    }

    #[test]
    fn auth1_session_count_is_bounded_oldest_first() {
        let t0 = Instant::now();
        let mut store = SessionStore::new(Duration::from_secs(3600));
        let (first, _) = store.create(t0, Access::Full).expect("session");
        let mut last = String::new();
        for i in 1..=MAX_SESSIONS {
            last = store
                .create(t0 + Duration::from_millis(i as u64), Access::Full)
                .expect("session")
                .0;
        }
        assert_eq!(store.len(t0), MAX_SESSIONS);
        assert!(store.get(&first, t0).is_none(), "the oldest was evicted");
        assert!(store.get(&last, t0).is_some());
    }

    #[test]
    fn auth1_tokens_are_random() {
        let a = new_token().expect("token");
        let b = new_token().expect("token");
        assert_ne!(a, b);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    }

    #[test]
    fn auth1_csrf_comparison_needs_exact_match() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }

    #[test]
    fn auth1_login_delay_grows_per_address_and_resets_on_success() {
        let t0 = Instant::now();
        let mut limiter = LoginLimiter::new();
        let a = ip("198.18.20.2");
        let b = ip("198.18.20.3");
        let reserved = |secs| Admission::Reserved {
            delay: Duration::from_secs(secs),
        };
        assert_eq!(limiter.admit(a, t0), reserved(1));
        assert_eq!(
            limiter.admit(a, t0 + Duration::from_millis(500)),
            Admission::Wait(Duration::from_millis(500))
        );
        assert_eq!(limiter.admit(b, t0), reserved(1), "per address");
        let mut t = t0 + Duration::from_secs(1);
        for secs in [2, 4, 8] {
            assert_eq!(limiter.admit(a, t), reserved(secs));
            t += Duration::from_secs(secs);
        }
        for _ in 0..20 {
            assert!(matches!(limiter.admit(a, t), Admission::Reserved { .. }));
            t += Duration::from_secs(LOGIN_DELAY_MAX_SECS);
        }
        t -= Duration::from_secs(LOGIN_DELAY_MAX_SECS);
        assert_eq!(
            limiter.admit(a, t),
            Admission::Wait(Duration::from_secs(LOGIN_DELAY_MAX_SECS))
        );
        limiter.succeeded(a);
        assert_eq!(limiter.admit(a, t), reserved(1));
    }

    #[test]
    fn auth1_limiter_memory_is_bounded() {
        let t0 = Instant::now();
        let mut limiter = LoginLimiter::new();
        for i in 0..(MAX_TRACKED_ADDRESSES as u32 + 10) {
            limiter.admit(IpAddr::from(i.to_be_bytes()), t0);
        }
        assert_eq!(limiter.tracked(), MAX_TRACKED_ADDRESSES);
        let later = t0 + Duration::from_secs(LOGIN_FAILURE_MEMORY_SECS);
        limiter.admit(ip("198.18.20.9"), later);
        assert_eq!(limiter.tracked(), 1, "old failures are forgotten");
    }

    #[test]
    fn auth1_password_checked_against_argon2id_hash() {
        use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
        // Small parameters: this tests the plumbing, not argon2.
        let params = argon2::Params::new(1024, 1, 1, None).expect("params");
        let hasher =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let salt = SaltString::generate(&mut OsRng);
        let hash = hasher
            .hash_password(b"correct horse battery", &salt)
            .expect("hash")
            .to_string();
        assert!(verify_password(&hash, "correct horse battery"));
        assert!(!verify_password(&hash, "correct horse batterY"));
        assert!(!verify_password("not a hash", "anything"));
    }
}
