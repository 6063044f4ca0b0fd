//! The operator's control path (AUTH-2, LOG-2, AVL-1): signed configs pushed over the tunnel,
//! checked, written durably, applied, and confirmed or rolled back.
//!
//! - [`signing`]: ECDSA P-256 signatures over a config's exact bytes.
//! - [`persist`]: the config file and the crash-safe pending/previous files.
//! - [`check_push`]: every rule a pushed config must pass before anything on the box changes.
//! - [`manager`]: the confirm window: pending, confirmed, rolled back.
//! - [`server`]: the management API (HTTPS, operator client certificate) on the tunnel address.
//! - [`client`]: `renkei push` / `renkei confirm`, the operator's side of that API.
//!
//! The running parts are changed by the supervisor, which owns them; the API only talks to it
//! through [`server::Command`]s.

pub mod client;
pub mod manager;
pub mod persist;
pub mod server;
pub mod signing;

use std::path::Path;

use crate::config::{self, Config, Diagnostics, ManagementConfig};
use signing::{OperatorKey, SigningError};

/// Largest pushed config accepted; a real one is a few KiB.
pub const MAX_PUSH_BYTES: usize = 256 * 1024;

/// Why a pushed config was refused. The box answers the operator with this text and changes
/// nothing.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The body is larger than [`MAX_PUSH_BYTES`].
    #[error("the config is {0} bytes; at most {MAX_PUSH_BYTES} are accepted")]
    TooLarge(usize),
    /// No signature came with the config.
    #[error("no signature: send the detached signature in the Renkei-Signature header")]
    MissingSignature,
    /// The signature is malformed.
    #[error("{0}")]
    Signature(SigningError),
    /// No trusted key verifies the signature.
    #[error("the signature does not verify with any trusted operator key ({trusted}); signed by an unknown key or over other bytes")]
    UntrustedSignature {
        /// Fingerprints of the keys tried.
        trusted: String,
    },
    /// The box's own trusted keys cannot be read (its config names a missing file).
    #[error("the box cannot read its trusted operator keys: {0}")]
    TrustedKeys(SigningError),
    /// Not UTF-8, not TOML, or fails a `renkei check` rule.
    #[error("the config is invalid:\n{0}")]
    Invalid(Diagnostics),
    /// Not newer than the running config.
    #[error("version {offered} is not greater than the running version {running} (no replay, no downgrade)")]
    NotNewer {
        /// `meta.version` of the push.
        offered: u64,
        /// `meta.version` running.
        running: u64,
    },
    /// A previous push still waits for its confirmation.
    #[error("version {0} is awaiting confirmation; confirm it or let it roll back first")]
    Pending(u64),
    /// The push removes the management API: the operator could never reach the box again.
    #[error(
        "the config has no [management] section: the box would be unreachable for the operator"
    )]
    NoManagement,
    /// The push changes a setting that only a restart can change.
    #[error("{0} cannot change by push (it is read once at start); it stays {1}")]
    Immutable(&'static str, String),
}

impl Refusal {
    /// The HTTP status the management API answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            Refusal::TooLarge(_) => 413,
            Refusal::MissingSignature
            | Refusal::Signature(_)
            | Refusal::UntrustedSignature { .. } => 403,
            Refusal::Invalid(_) | Refusal::NoManagement | Refusal::Immutable(..) => 422,
            Refusal::NotNewer { .. } | Refusal::Pending(_) => 409,
            Refusal::TrustedKeys(_) => 500,
        }
    }

    /// A short machine word for logs and the operator's tools.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::TooLarge(_) => "too_large",
            Refusal::MissingSignature => "missing_signature",
            Refusal::Signature(_) => "malformed_signature",
            Refusal::UntrustedSignature { .. } => "bad_signature",
            Refusal::TrustedKeys(_) => "trusted_keys_unreadable",
            Refusal::Invalid(_) => "invalid_config",
            Refusal::NotNewer { .. } => "not_newer",
            Refusal::Pending(_) => "pending",
            Refusal::NoManagement => "no_management",
            Refusal::Immutable(..) => "immutable_setting",
        }
    }
}

/// A pushed config that passed every check.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The parsed, validated config.
    pub config: Config,
    /// Its exact bytes, as signed.
    pub bytes: Vec<u8>,
    /// Fingerprint of the key that signed it.
    pub signer: String,
}

/// The keys a box trusts for the next push: the current operator key and, once the config
/// naming it is confirmed, the next one (rotation). The caller refuses pushes while a config
/// is pending, so the running config is always confirmed here.
pub fn trusted_keys(management: &ManagementConfig) -> Result<Vec<OperatorKey>, SigningError> {
    let mut keys = Vec::with_capacity(2);
    let pairs = [
        (
            &management.operator_signing_key_file,
            &management.operator_signing_key,
        ),
        (
            &management.next_operator_signing_key_file,
            &management.next_operator_signing_key,
        ),
    ];
    for (file, inline) in pairs {
        match (file, inline) {
            (_, Some(pem)) => keys.push(OperatorKey::from_pem(pem)?),
            (Some(path), None) => keys.push(OperatorKey::read(path)?),
            (None, None) => {}
        }
    }
    Ok(keys)
}

/// Every rule of a push, cheapest and most decisive first: size, then the signature (before the
/// untrusted text is even parsed), then `renkei check`'s rules, then version and the settings a
/// push may not change.
pub fn check_push(
    running: &Config,
    config_path: &Path,
    bytes: &[u8],
    signature: Option<&str>,
) -> Result<Accepted, Refusal> {
    if bytes.len() > MAX_PUSH_BYTES {
        return Err(Refusal::TooLarge(bytes.len()));
    }
    let signature = signature.ok_or(Refusal::MissingSignature)?;
    let signature = signing::parse_signature(signature).map_err(Refusal::Signature)?;
    let management = running.management.as_ref().ok_or(Refusal::NoManagement)?;
    let keys = trusted_keys(management).map_err(Refusal::TrustedKeys)?;
    let signer = keys
        .iter()
        .find(|k| k.verify(bytes, &signature).is_ok())
        .ok_or_else(|| Refusal::UntrustedSignature {
            trusted: keys
                .iter()
                .map(|k| k.fingerprint())
                .collect::<Vec<_>>()
                .join(", "),
        })?;

    let text = std::str::from_utf8(bytes).map_err(|e| {
        Refusal::Invalid(Diagnostics(vec![config::Diagnostic {
            file: config_path.to_path_buf(),
            line: 1,
            column: 1,
            field: String::new(),
            message: format!("not UTF-8: {e}"),
        }]))
    })?;
    let base_dir = match config_path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let config = config::load_str(text, config_path, base_dir).map_err(Refusal::Invalid)?;

    if config.meta.version <= running.meta.version {
        return Err(Refusal::NotNewer {
            offered: config.meta.version,
            running: running.meta.version,
        });
    }
    if config.management.is_none() {
        return Err(Refusal::NoManagement);
    }
    let immutable = [
        (
            "paths.state_dir",
            &config.paths.state_dir,
            &running.paths.state_dir,
        ),
        (
            "paths.runtime_dir",
            &config.paths.runtime_dir,
            &running.paths.runtime_dir,
        ),
    ];
    for (name, new, old) in immutable {
        if new != old {
            return Err(Refusal::Immutable(name, old.display().to_string()));
        }
    }
    Ok(Accepted {
        config,
        bytes: bytes.to_vec(),
        signer: signer.fingerprint().to_string(),
    })
}
