//! The operator's control path (AUTH-2, AUTH-4, LOG-2, AVL-1): signed configs pushed over the
//! tunnel, checked (signed by the operator, for this box, newer), written durably, applied, and
//! confirmed or rolled back.
//!
//! - [`audit`]: the LOG-2 record of every event, in the log and on the status page.
//! - [`crate::signing`]: ECDSA P-256 signatures over a config's exact bytes (below config,
//!   which checks the operator keys a config names with the same parser).
//! - [`persist`]: the config file and the crash-safe pending/previous files.
//! - [`check_push`]: every rule a pushed config must pass before anything on the box changes.
//! - [`manager`]: the confirm window: pending, confirmed, rolled back.
//! - [`transaction`]: a push from check to confirm or rollback, over any [`transaction::RunningBox`].
//! - [`server`]: the management API (HTTPS, operator client certificate) on the tunnel address.
//! - [`client`]: `renkei push` / `renkei confirm`, the operator's side of that API.
//!
//! The running parts are owned by the supervisor, which implements
//! [`transaction::RunningBox`] over them and drives the [`transaction::Transaction`]; the API
//! only talks to it through [`server::Command`]s.

pub mod admission;
pub mod api;
pub mod audit;
mod bodies;
pub mod body;
pub mod client;
mod connection;
pub mod device_listener;
mod journal_files;
pub mod manager;
pub mod persist;
mod routes;
pub mod server;
pub mod transaction;

use std::path::Path;

use crate::config::{self, Config, Diagnostics, Files, ManagementConfig};
use crate::signing::{self, OperatorKey, SigningError};
use crate::state::events::ConfigReason;
use crate::tls::credentials::certificate_identities;
use crate::tls::CredentialError;

/// Largest pushed config accepted when `management.max_push_bytes` is not set.
pub use crate::config::DEFAULT_MAX_PUSH_BYTES;

/// Why a pushed config was refused. The box answers the operator with this text and changes
/// nothing.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The body is larger than `management.max_push_bytes`.
    #[error(
        "the config is {bytes} bytes; management.max_push_bytes accepts at most {limit_bytes}"
    )]
    TooLarge {
        /// The body's size.
        bytes: usize,
        /// The running config's cap.
        limit_bytes: usize,
    },
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
    /// The box cannot read its own certificate, so it cannot tell whether a config is for it.
    #[error("the box cannot read its own certificate to compare [meta] box with: {0}")]
    OwnCertificate(Box<CredentialError>),
    /// The config names another box, or none (AUTH-4): one box's signed config must never run
    /// on another.
    #[error("{}", wrong_box_message(.named, .this_box))]
    WrongBox {
        /// `meta.box` of the push, if any.
        named: Option<String>,
        /// The identities this box's certificate carries.
        this_box: String,
    },
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
            Refusal::TooLarge { .. } => 413,
            Refusal::MissingSignature
            | Refusal::Signature(_)
            | Refusal::UntrustedSignature { .. }
            | Refusal::WrongBox { .. } => 403,
            Refusal::Invalid(_) | Refusal::NoManagement | Refusal::Immutable(..) => 422,
            Refusal::NotNewer { .. } | Refusal::Pending(_) => 409,
            Refusal::TrustedKeys(_) | Refusal::OwnCertificate(_) => 500,
        }
    }

    /// A short machine word for logs and the operator's tools.
    pub fn code(&self) -> &'static str {
        self.reason().as_str()
    }

    /// Why, as the config events' reason (the same word as [`Refusal::code`]).
    pub fn reason(&self) -> ConfigReason {
        match self {
            Refusal::TooLarge { .. } => ConfigReason::TooLarge,
            Refusal::MissingSignature => ConfigReason::MissingSignature,
            Refusal::Signature(_) => ConfigReason::MalformedSignature,
            Refusal::UntrustedSignature { .. } => ConfigReason::BadSignature,
            Refusal::TrustedKeys(_) => ConfigReason::TrustedKeysUnreadable,
            Refusal::OwnCertificate(_) => ConfigReason::OwnCertificateUnreadable,
            Refusal::WrongBox { .. } => ConfigReason::WrongBox,
            Refusal::Invalid(_) => ConfigReason::InvalidConfig,
            Refusal::NotNewer { .. } => ConfigReason::NotNewer,
            Refusal::Pending(_) => ConfigReason::Pending,
            Refusal::NoManagement => ConfigReason::NoManagement,
            Refusal::Immutable(..) => ConfigReason::ImmutableSetting,
        }
    }
}

fn wrong_box_message(named: &Option<String>, this_box: &str) -> String {
    match named {
        Some(name) => format!(
            "the config is for box {name:?}, not this one ({this_box}); [meta] box must name this box"
        ),
        None => format!(
            "the config names no box: a pushed config must name the box it is for in [meta] box (this box: {this_box})"
        ),
    }
}

/// A refusal with what was learnt about the push before it was refused (LOG-2): the signer
/// once a trusted key verified the signature, the version once signed text was read.
#[derive(Debug, thiserror::Error)]
#[error("{reason}")]
pub struct Refused {
    /// Why.
    pub reason: Refusal,
    /// `meta.version` of the push, when known.
    pub version: Option<u64>,
    /// Fingerprint of the key that signed it, when a trusted one did.
    pub signer: Option<String>,
}

impl From<Refusal> for Refused {
    fn from(reason: Refusal) -> Self {
        Refused {
            reason,
            version: None,
            signer: None,
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
/// untrusted text is even parsed), then `renkei check`'s rules without files, then that it is
/// for this box (`[meta] box` against the running certificate), then the rules with the box's
/// files as far as `files` says, then version and the settings a push may not change.
pub fn check_push(
    running: &Config,
    config_path: &Path,
    bytes: &[u8],
    signature: Option<&str>,
    files: Files<'_>,
) -> Result<Accepted, Refused> {
    let limit_bytes = running
        .management
        .as_ref()
        .map_or(DEFAULT_MAX_PUSH_BYTES, |m| m.max_push_bytes);
    if bytes.len() > limit_bytes {
        return Err(Refusal::TooLarge {
            bytes: bytes.len(),
            limit_bytes,
        }
        .into());
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
        })?
        .fingerprint()
        .to_string();
    let refused = |reason: Refusal, version: Option<u64>| Refused {
        reason,
        version,
        signer: Some(signer.clone()),
    };

    let text = std::str::from_utf8(bytes).map_err(|e| {
        refused(
            Refusal::Invalid(Diagnostics(vec![config::Diagnostic {
                file: config_path.to_path_buf(),
                line: 1,
                column: 1,
                field: String::new(),
                message: format!("not UTF-8: {e}"),
            }])),
            None,
        )
    })?;
    let base_dir = match config_path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let invalid = |d| refused(Refusal::Invalid(d), declared_version(text));
    let config =
        config::load_str_with(text, config_path, base_dir, Files::Skip).map_err(invalid)?;
    let version = Some(config.meta.version);
    // Before the box's files are read for it: another box's config names files that may not
    // fit this one, and "for another box" is the refusal that explains it.
    let this_box = running
        .tls
        .as_ref()
        .map(|tls| certificate_identities(&tls.certificate_file))
        .transpose()
        .map_err(|e| refused(Refusal::OwnCertificate(Box::new(e)), version))?;
    let for_this_box = match (&config.meta.box_identity, &this_box) {
        (Some(name), Some(identities)) => identities.carries(name),
        _ => false,
    };
    if !for_this_box {
        return Err(refused(
            Refusal::WrongBox {
                named: config.meta.box_identity.clone(),
                this_box: this_box.map_or_else(|| "no certificate".to_string(), |i| i.list()),
            },
            version,
        ));
    }
    let config = config::load_str_with(text, config_path, base_dir, files).map_err(invalid)?;

    if config.meta.version <= running.meta.version {
        return Err(refused(
            Refusal::NotNewer {
                offered: config.meta.version,
                running: running.meta.version,
            },
            version,
        ));
    }
    if config.management.is_none() {
        return Err(refused(Refusal::NoManagement, version));
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
            return Err(refused(
                Refusal::Immutable(name, old.display().to_string()),
                version,
            ));
        }
    }
    Ok(Accepted {
        config,
        bytes: bytes.to_vec(),
        signer,
    })
}

/// `meta.version` of signed text that fails a rule, for the log: read leniently, if at all.
fn declared_version(text: &str) -> Option<u64> {
    let value: toml::Table = toml::from_str(text).ok()?;
    value
        .get("meta")?
        .get("version")?
        .as_integer()?
        .try_into()
        .ok()
}

/// A box's files in a temporary folder and configs for them, for the pure-logic tests of the
/// control path (no daemon, no network).
#[cfg(test)]
pub(crate) mod fixture {
    use std::os::unix::fs::PermissionsExt as _;
    use std::path::PathBuf;

    use crate::config::Config;
    use crate::signing::SigningKeyPair;

    /// The identity the fixture box's certificate carries (its `[meta] box`).
    pub const BOX: &str = "hospital.renkei.test";

    /// An operator CA certificate and a certificate for `name` from it, in PEM:
    /// `(ca, box certificate, box key)`.
    pub fn pki(name: &str) -> (String, String, String) {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca = CertificateParams::default();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "fixture operator CA");
        let ca_cert = ca.self_signed(&ca_key).expect("CA");
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().expect("box key");
        let mut leaf = CertificateParams::new(vec![name.to_string()]).expect("params");
        leaf.distinguished_name.push(DnType::CommonName, name);
        let cert = leaf.signed_by(&key, &issuer).expect("box certificate");
        (ca_cert.pem(), cert.pem(), key.serialize_pem())
    }

    /// The files and the operator's keys.
    pub struct Fixture {
        pub dir: tempfile::TempDir,
        /// The operator's current signing key.
        pub key: SigningKeyPair,
        /// The next one (rotation).
        pub next: SigningKeyPair,
    }

    impl Fixture {
        pub fn new() -> Self {
            let dir = tempfile::tempdir().expect("tempdir");
            let root = dir.path();
            std::fs::create_dir_all(root.join("tls")).expect("mkdir");
            let (ca, cert, key) = pki(BOX);
            for (name, mode, text) in [
                ("tls/box.crt", 0o644, cert),
                ("tls/box.key", 0o600, key),
                ("tls/ca.crt", 0o644, ca),
            ] {
                let path = root.join(name);
                std::fs::write(&path, text).expect("write");
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                    .expect("chmod");
            }
            let key = SigningKeyPair::generate();
            std::fs::write(root.join("signing.pub.pem"), key.public().to_pem()).expect("pub");
            Fixture {
                dir,
                key,
                next: SigningKeyPair::generate(),
            }
        }

        /// Where the box's config file is.
        pub fn config_path(&self) -> PathBuf {
            self.dir.path().join("renkei.toml")
        }

        /// A valid config at `version`; `management` is appended to the `[management]` table
        /// (which names the current key by file unless `management` names one inline).
        pub fn text(&self, version: u64, management: &str) -> String {
            let key_line = if management
                .lines()
                .any(|l| l.starts_with("operator_signing_key ="))
            {
                String::new()
            } else {
                "operator_signing_key_file = \"signing.pub.pem\"\n".to_string()
            };
            format!(
                r#"[meta]
version = {version}
box = "{BOX}"

[facility]
name = "fixture hospital"
role = "disclosing"

[paths]
state_dir = "{state}"
runtime_dir = "{run}"

[closed]
interface = "lo"
address = "198.19.0.10/24"
data_centre_prefixes = ["198.19.0.1/32"]
mode = "on_demand"

[tls]
certificate_file = "tls/box.crt"
private_key_file = "tls/box.key"
ca_file = "tls/ca.crt"

[management]
listen = "198.19.0.10:7443"
operator_ca_file = "tls/ca.crt"
operator_identities = ["operator.renkei.test"]
{key_line}{management}"#,
                state = self.dir.path().join("state").display(),
                run = self.dir.path().join("run").display(),
            )
        }

        /// `[management]` lines naming `key` inline as the next key.
        pub fn next_inline(key: &SigningKeyPair) -> String {
            format!(
                "next_operator_signing_key = \"\"\"\n{}\"\"\"\n",
                key.public().to_pem()
            )
        }

        /// `[management]` lines naming `key` inline as the current key.
        pub fn current_inline(key: &SigningKeyPair) -> String {
            format!(
                "operator_signing_key = \"\"\"\n{}\"\"\"\n",
                key.public().to_pem()
            )
        }

        /// Parses and validates `text` as the box would.
        pub fn config(&self, text: &str) -> Config {
            crate::config::load_str(text, &self.config_path(), self.dir.path())
                .unwrap_or_else(|d| panic!("fixture config invalid: {d}\n{text}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixture::Fixture;
    use super::*;
    use crate::signing::SigningKeyPair;

    fn check(
        f: &Fixture,
        running: &str,
        pushed: &str,
        key: Option<&SigningKeyPair>,
    ) -> Result<Accepted, Refused> {
        let signature = key.map(|k| k.sign(pushed.as_bytes()));
        check_push(
            &f.config(running),
            &f.config_path(),
            pushed.as_bytes(),
            signature.as_deref(),
            Files::Read,
        )
    }

    #[test]
    fn auth2_a_push_signed_by_the_current_key_is_accepted_and_names_its_signer() {
        let f = Fixture::new();
        let accepted = check(&f, &f.text(1, ""), &f.text(2, ""), Some(&f.key)).expect("accepted");
        assert_eq!(accepted.config.meta.version, 2);
        assert_eq!(accepted.signer, f.key.public().fingerprint());
        assert_eq!(accepted.bytes, f.text(2, "").as_bytes());
    }

    #[test]
    fn auth2_unsigned_malformed_tampered_and_unknown_signatures_are_refused_before_parsing() {
        let f = Fixture::new();
        let running = f.text(1, "");
        let pushed = f.text(2, "");
        let refused = check(&f, &running, &pushed, None).expect_err("unsigned");
        assert_eq!(refused.reason.code(), "missing_signature");
        assert_eq!((refused.version, refused.signer), (None, None));

        let refused = check_push(
            &f.config(&running),
            &f.config_path(),
            pushed.as_bytes(),
            Some("not base64!"),
            Files::Read,
        )
        .expect_err("malformed");
        assert_eq!(refused.reason.code(), "malformed_signature");

        let stranger = SigningKeyPair::generate();
        let refused = check(&f, &running, &pushed, Some(&stranger)).expect_err("unknown key");
        assert_eq!(refused.reason.code(), "bad_signature");
        assert_eq!(refused.reason.http_status(), 403);
        assert_eq!(
            (refused.version, refused.signer),
            (None, None),
            "unsigned text is not read"
        );

        let signature = f.key.sign(pushed.as_bytes());
        let tampered = pushed.replace("fixture hospital", "fixture hospital!");
        let refused = check_push(
            &f.config(&running),
            &f.config_path(),
            tampered.as_bytes(),
            Some(&signature),
            Files::Read,
        )
        .expect_err("tampered");
        assert_eq!(refused.reason.code(), "bad_signature");

        let mut huge = pushed.clone();
        huge.push_str(&format!("# {}\n", "x".repeat(DEFAULT_MAX_PUSH_BYTES)));
        let refused = check(&f, &running, &huge, Some(&f.key)).expect_err("huge");
        assert_eq!(refused.reason.code(), "too_large");
    }

    #[test]
    fn auth2_int1_signed_pushes_that_break_a_rule_are_refused_with_version_and_signer() {
        let f = Fixture::new();
        let running = f.text(5, "");
        let signer = Some(f.key.public().fingerprint().to_string());
        for version in [5, 4] {
            let refused = check(&f, &running, &f.text(version, ""), Some(&f.key)).expect_err("old");
            assert_eq!(refused.reason.code(), "not_newer");
            assert_eq!(refused.version, Some(version));
            assert_eq!(refused.signer, signer);
        }
        let invalid = f
            .text(6, "")
            .replace("198.19.0.10:7443", "198.18.10.1:7443");
        let refused = check(&f, &running, &invalid, Some(&f.key)).expect_err("invalid");
        assert_eq!(refused.reason.code(), "invalid_config");
        assert!(
            refused.reason.to_string().contains("management.listen"),
            "{}",
            refused.reason
        );
        assert_eq!(
            refused.version,
            Some(6),
            "the declared version of signed text is named"
        );
        assert_eq!(refused.signer, signer);

        let start = f.text(6, "").find("[management]").expect("management");
        let refused =
            check(&f, &running, &f.text(6, "")[..start], Some(&f.key)).expect_err("no management");
        assert_eq!(refused.reason.code(), "no_management");

        let moved = f.text(6, "").replace("/state\"", "/elsewhere\"");
        let refused = check(&f, &running, &moved, Some(&f.key)).expect_err("state dir");
        assert_eq!(refused.reason.code(), "immutable_setting");
    }

    #[test]
    fn auth4_a_signed_config_for_another_box_or_for_no_box_is_refused_with_wrong_box() {
        let f = Fixture::new();
        let running = f.text(1, "");
        let signer = Some(f.key.public().fingerprint().to_string());
        let for_b = f.text(2, "").replace(
            &format!("box = \"{}\"", super::fixture::BOX),
            "box = \"clinic.renkei.test\"",
        );
        assert_ne!(for_b, f.text(2, ""));
        let no_box = f
            .text(2, "")
            .replace(&format!("box = \"{}\"\n", super::fixture::BOX), "");
        assert_ne!(no_box, f.text(2, ""));
        for (what, text, named) in [
            ("another box", &for_b, Some("clinic.renkei.test")),
            ("no box", &no_box, None),
        ] {
            let refused = check(&f, &running, text, Some(&f.key)).expect_err(what);
            assert_eq!(refused.reason.code(), "wrong_box", "{what}");
            assert_eq!(refused.reason.http_status(), 403, "{what}");
            assert_eq!(refused.version, Some(2), "{what}");
            assert_eq!(refused.signer, signer, "{what}");
            let message = refused.reason.to_string();
            assert!(message.contains(super::fixture::BOX), "{what}: {message}");
            if let Some(named) = named {
                assert!(message.contains(named), "{what}: {message}");
            }
        }
        // DNS names compare case-insensitively, as every identity match does.
        let upper = f.text(2, "").replace(
            &format!("box = \"{}\"", super::fixture::BOX),
            &format!("box = \"{}\"", super::fixture::BOX.to_uppercase()),
        );
        check(&f, &running, &upper, Some(&f.key)).expect("the same box");
        // Checked before the version: an old config of another box says what is wrong with it.
        let refused = check(&f, &f.text(5, ""), &for_b, Some(&f.key)).expect_err("old");
        assert_eq!(refused.reason.code(), "wrong_box");
    }

    #[test]
    fn auth2_trusted_keys_are_the_current_key_and_the_named_next_key() {
        let f = Fixture::new();
        let only = f.config(&f.text(1, ""));
        let keys = trusted_keys(only.management.as_ref().expect("management")).expect("keys");
        assert_eq!(keys, vec![f.key.public()]);

        let named = f.config(&f.text(2, &Fixture::next_inline(&f.next)));
        let keys = trusted_keys(named.management.as_ref().expect("management")).expect("keys");
        assert_eq!(keys, vec![f.key.public(), f.next.public()]);

        let rotated = f.config(&f.text(3, &Fixture::current_inline(&f.next)));
        let keys = trusted_keys(rotated.management.as_ref().expect("management")).expect("keys");
        assert_eq!(keys, vec![f.next.public()]);
    }

    #[test]
    fn auth2_the_next_key_signs_only_once_a_running_config_names_it_and_then_the_old_key_goes() {
        let f = Fixture::new();
        let v3 = f.text(3, &Fixture::current_inline(&f.next));
        // Running v1 does not name the next key: untrusted signer.
        let refused = check(&f, &f.text(1, ""), &v3, Some(&f.next)).expect_err("early");
        assert_eq!(refused.reason.code(), "bad_signature");
        assert!(refused
            .reason
            .to_string()
            .contains(f.key.public().fingerprint()));
        // Running v2 names it: accepted, signed by the next key.
        let v2 = f.text(2, &Fixture::next_inline(&f.next));
        let accepted = check(&f, &v2, &v3, Some(&f.next)).expect("named");
        assert_eq!(accepted.signer, f.next.public().fingerprint());
        // Running v3 carries only the new key: the old one is refused.
        let v4 = f.text(4, &Fixture::current_inline(&f.next));
        let refused = check(&f, &v3, &v4, Some(&f.key)).expect_err("old key");
        assert_eq!(refused.reason.code(), "bad_signature");
        check(&f, &v3, &v4, Some(&f.next)).expect("new key");
    }
}
