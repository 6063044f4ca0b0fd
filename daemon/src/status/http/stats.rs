//! The page's own numbers, shared with the status document.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// What the status document says about the page itself (shown in `renkei status`).
#[derive(Debug, Clone, Serialize)]
pub struct StatusPageInfo {
    /// Where the page listens.
    pub listen: SocketAddr,
    /// `http` (loopback only) or `https`.
    pub scheme: &'static str,
    /// SHA-256 of the page's certificate, to compare with what the browser shows.
    pub certificate_sha256: Option<String>,
    /// True when the box generated the certificate itself.
    pub certificate_self_signed: bool,
    /// The `/metrics`-only listener, if any.
    pub metrics_listen: Option<SocketAddr>,
    /// `https+client-certificate` (operator CA) or `https` (page certificate).
    pub metrics_transport: Option<&'static str>,
    /// Successful logins since start.
    pub logins: u64,
    /// Failed logins (wrong password or refused while delayed) since start.
    pub login_failures: u64,
}

/// Live numbers of the page shared with the status document.
#[derive(Debug)]
pub struct PageStats {
    pub(super) info: StatusPageInfo,
    pub(super) logins: AtomicU64,
    pub(super) login_failures: AtomicU64,
}

impl PageStats {
    /// A copy for the status document.
    pub fn snapshot(&self) -> StatusPageInfo {
        let mut info = self.info.clone();
        info.logins = self.logins.load(Ordering::Relaxed);
        info.login_failures = self.login_failures.load(Ordering::Relaxed);
        info
    }
}
