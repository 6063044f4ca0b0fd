//! The running configuration as the control path reports it and the status side shows it:
//! a plain value, so that status reads what control's manager decided without importing control.

use serde::Serialize;

/// The config state for `GET /v1/config`, the status page and `renkei status`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ConfigSnapshot {
    /// The running `meta.version`.
    pub version: u64,
    /// SHA-256 of the running config's bytes.
    pub sha256: String,
    /// `meta.description` of the running config.
    pub description: Option<String>,
    /// Fingerprint of the key that signed it; `None` for a locally installed file.
    pub signer: Option<String>,
    /// The operator identity that pushed it.
    pub pushed_by: Option<String>,
    /// When it was pushed (unix seconds), when known.
    pub pushed_at_unix: Option<u64>,
    /// When it was applied or confirmed (unix seconds).
    pub since_unix: Option<u64>,
    /// `confirmed` or `pending`.
    pub state: &'static str,
    /// For a pending config: the version it rolls back to.
    pub previous_version: Option<u64>,
    /// For a pending config: when it rolls back unless confirmed (unix seconds).
    pub confirm_deadline_unix: Option<u64>,
}
