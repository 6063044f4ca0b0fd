//! The administrator's second factor (AUTH-3): a TOTP secret (RFC 6238: HMAC-SHA-1, 6 digits,
//! 30 s steps, as authenticator apps use it) and single-use recovery codes.
//!
//! Everything lives in one file under the box's state directory (mode 0600, replaced
//! atomically), never in the configuration, so it is never pushed, signed or logged. The file
//! keeps the last accepted step, so a code is accepted once: a replay in the same step (or an
//! older one) is refused, also across restarts. Recovery codes are random 80-bit strings kept
//! only as SHA-256 digests (a fast hash is enough for random secrets of that size; argon2id is
//! for passwords people choose). The HMAC and base32 come from `totp-rs`; nothing here is
//! hand-written crypto.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use totp_rs::{Algorithm, Secret, TOTP};

use super::auth::constant_time_eq;
use crate::durable::write_durably;

/// Bytes of a TOTP secret (160 bits, the HMAC-SHA-1 block size RFC 4226 recommends).
pub const SECRET_BYTES: usize = 20;
/// Digits of a code.
pub const CODE_DIGITS: usize = 6;
/// Length of one TOTP step.
pub const STEP_SECS: u64 = 30;
/// Steps before and after the box's clock still accepted (clock drift of the phone).
pub const SKEW_STEPS: u64 = 1;
/// Recovery codes made at enrolment.
pub const RECOVERY_CODES: usize = 10;
/// Random bytes in one recovery code (80 bits; 16 base32 characters).
pub const RECOVERY_CODE_BYTES: usize = 10;
/// The file under `<state_dir>/status/`.
pub const FACTOR_FILE: &str = "second-factor.json";
/// A larger file is refused unread (it holds a few hundred bytes).
pub const MAX_FACTOR_FILE_BYTES: u64 = 16 * 1024;
/// Issuer shown by authenticator apps.
pub const ISSUER: &str = "renkei";

/// Why the second factor could not be read, checked or stored.
#[derive(Debug, thiserror::Error)]
pub enum FactorError {
    /// The OS random source failed.
    #[error("the random source failed")]
    Random,
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The factor file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not what this module writes.
    #[error("{path}: {reason}")]
    Invalid {
        /// The factor file.
        path: PathBuf,
        /// What is wrong, with line and column where the parser knows them.
        reason: String,
    },
    /// The file could not be written.
    #[error("{0}")]
    Write(String),
    /// The QR code could not be made.
    #[error("QR code: {0}")]
    Qr(String),
}

/// The stored factor.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Enrolled {
    /// The TOTP secret, base32 (RFC 4648, no padding) as authenticator apps take it.
    pub secret_base32: String,
    /// The last step whose code was accepted; a code of this step or an earlier one is refused.
    pub last_step: u64,
    /// SHA-256 (lowercase hex) of each recovery code not used yet.
    pub recovery_sha256: Vec<String>,
    /// When the factor was enrolled (seconds since the Unix epoch).
    pub enrolled_unix: u64,
}

/// What a code unlocked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Used {
    /// A TOTP code of this step.
    Code {
        /// The step accepted.
        step: u64,
    },
    /// A recovery code; this many are left.
    Recovery {
        /// Recovery codes still unused.
        left: usize,
    },
}

/// Why a code was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CodeRefused {
    /// No current code and no unused recovery code matches.
    #[error("wrong code")]
    Wrong,
    /// The code was right but its step was already used.
    #[error("code already used")]
    Replayed,
}

/// A fresh random secret, base32.
pub fn new_secret() -> Result<String, FactorError> {
    let mut bytes = [0u8; SECRET_BYTES];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| FactorError::Random)?;
    Ok(Secret::Raw(bytes.to_vec()).to_encoded().to_string())
}

fn totp(secret_base32: &str) -> Option<TOTP> {
    let bytes = Secret::Encoded(secret_base32.to_string()).to_bytes().ok()?;
    TOTP::new(Algorithm::SHA1, CODE_DIGITS, 0, STEP_SECS, bytes).ok()
}

/// True when `secret_base32` is a secret this module can use.
pub fn is_valid_secret(secret_base32: &str) -> bool {
    totp(secret_base32).is_some()
}

/// The code of `secret_base32` for `step` (what the phone shows then).
pub fn code_at(secret_base32: &str, step: u64) -> Option<String> {
    totp(secret_base32).map(|t| t.generate(step.saturating_mul(STEP_SECS)))
}

/// The step within [`SKEW_STEPS`] of `now_unix` whose code is `code`, if any.
pub fn matching_step(secret_base32: &str, code: &str, now_unix: u64) -> Option<u64> {
    let totp = totp(secret_base32)?;
    let code = code.trim();
    if code.len() != CODE_DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let now_step = now_unix / STEP_SECS;
    let mut found = None;
    // Every candidate is computed and compared, so the time does not tell which one matched.
    for step in now_step.saturating_sub(SKEW_STEPS)..=now_step.saturating_add(SKEW_STEPS) {
        let expected = totp.generate(step.saturating_mul(STEP_SECS));
        if constant_time_eq(expected.as_bytes(), code.as_bytes()) {
            found = Some(step);
        }
    }
    found
}

/// The `otpauth://` URI an authenticator app reads from the QR code. Only fixed ASCII and the
/// base32 secret go in, so nothing needs escaping.
pub fn otpauth_uri(secret_base32: &str) -> String {
    format!(
        "otpauth://totp/{ISSUER}:administrator?secret={secret_base32}&issuer={ISSUER}&algorithm=SHA1&digits={CODE_DIGITS}&period={STEP_SECS}"
    )
}

/// The QR code of `uri` as an SVG element, made on the box (the page fetches nothing).
pub fn qr_svg(uri: &str) -> Result<String, FactorError> {
    let code = qrcode::QrCode::new(uri.as_bytes()).map_err(|e| FactorError::Qr(e.to_string()))?;
    Ok(code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(240, 240)
        .dark_color(qrcode::render::svg::Color("#000000"))
        .light_color(qrcode::render::svg::Color("#ffffff"))
        .build())
}

/// The QR code of `uri` as text for a terminal (two rows per character).
pub fn qr_text(uri: &str) -> Result<String, FactorError> {
    let code = qrcode::QrCode::new(uri.as_bytes()).map_err(|e| FactorError::Qr(e.to_string()))?;
    Ok(code
        .render::<qrcode::render::unicode::Dense1x2>()
        .dark_color(qrcode::render::unicode::Dense1x2::Light)
        .light_color(qrcode::render::unicode::Dense1x2::Dark)
        .build())
}

fn recovery_digest(code: &str) -> String {
    let normalized: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    crate::hex::lower(ring::digest::digest(&ring::digest::SHA256, normalized.as_bytes()).as_ref())
}

fn new_recovery_code() -> Result<String, FactorError> {
    let mut bytes = [0u8; RECOVERY_CODE_BYTES];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| FactorError::Random)?;
    let text = Secret::Raw(bytes.to_vec()).to_encoded().to_string();
    let groups: Vec<&str> = (0..text.len())
        .step_by(4)
        .filter_map(|i| text.get(i..(i + 4).min(text.len())))
        .collect();
    Ok(groups.join("-"))
}

impl Enrolled {
    /// Enrols `secret_base32` if `code` is its current code: the new factor (with that step
    /// already used) and the recovery codes in clear, to be shown once and never again.
    pub fn enrol(
        secret_base32: &str,
        code: &str,
        now_unix: u64,
    ) -> Result<Result<(Enrolled, Vec<String>), CodeRefused>, FactorError> {
        let Some(step) = matching_step(secret_base32, code, now_unix) else {
            return Ok(Err(CodeRefused::Wrong));
        };
        let codes = (0..RECOVERY_CODES)
            .map(|_| new_recovery_code())
            .collect::<Result<Vec<_>, _>>()?;
        let factor = Enrolled {
            secret_base32: secret_base32.to_string(),
            last_step: step,
            recovery_sha256: codes.iter().map(|c| recovery_digest(c)).collect(),
            enrolled_unix: now_unix,
        };
        Ok(Ok((factor, codes)))
    }

    /// Checks a TOTP code or a recovery code; on success the factor is changed (step
    /// remembered, recovery code spent) and must be stored before the login goes on.
    pub fn verify(&mut self, code: &str, now_unix: u64) -> Result<Used, CodeRefused> {
        if let Some(step) = matching_step(&self.secret_base32, code, now_unix) {
            if step <= self.last_step {
                return Err(CodeRefused::Replayed);
            }
            self.last_step = step;
            return Ok(Used::Code { step });
        }
        let digest = recovery_digest(code);
        let position = self
            .recovery_sha256
            .iter()
            .position(|d| constant_time_eq(d.as_bytes(), digest.as_bytes()));
        match position {
            Some(i) if code.trim().len() > CODE_DIGITS => {
                self.recovery_sha256.remove(i);
                Ok(Used::Recovery {
                    left: self.recovery_sha256.len(),
                })
            }
            _ => Err(CodeRefused::Wrong),
        }
    }
}

/// The factor file of one box; checks are serialized so a code cannot be used twice by two
/// requests at once.
#[derive(Debug)]
pub struct FactorStore {
    path: PathBuf,
    lock: Mutex<()>,
}

impl FactorStore {
    /// The store of the box whose state directory is `state_dir`.
    pub fn new(state_dir: &Path) -> FactorStore {
        FactorStore {
            path: state_dir.join(super::cert::STATE_SUBDIR).join(FACTOR_FILE),
            lock: Mutex::new(()),
        }
    }

    /// Where the factor is kept.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Gives the factor file and its folder to the owner of `state_dir`. `renkei passwd
    /// --totp` runs as root at the console, but the daemon reads the file as its own user
    /// (`User=renkei`, which owns the state directory): a file only root could read would
    /// refuse every login. Nothing changes when the owners are already the same.
    pub fn hand_to_owner_of(&self, state_dir: &Path) -> Result<(), FactorError> {
        use std::os::unix::fs::MetadataExt as _;
        let write =
            |path: &Path, e: std::io::Error| FactorError::Write(format!("{}: {e}", path.display()));
        let owner = std::fs::metadata(state_dir).map_err(|e| write(state_dir, e))?;
        let (uid, gid) = (owner.uid(), owner.gid());
        let folder = self.path.parent().unwrap_or(state_dir);
        for path in [folder, self.path.as_path()] {
            let meta = std::fs::metadata(path).map_err(|e| write(path, e))?;
            if (meta.uid(), meta.gid()) != (uid, gid) {
                std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|e| write(path, e))?;
            }
        }
        Ok(())
    }

    /// The enrolled factor, `None` when there is none.
    pub fn load(&self) -> Result<Option<Enrolled>, FactorError> {
        let read = |source| FactorError::Read {
            path: self.path.clone(),
            source,
        };
        let meta = match std::fs::metadata(&self.path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(read(e)),
        };
        if !meta.is_file() || meta.len() > MAX_FACTOR_FILE_BYTES {
            return Err(FactorError::Invalid {
                path: self.path.clone(),
                reason: format!("not a regular file of at most {MAX_FACTOR_FILE_BYTES} bytes"),
            });
        }
        let text = std::fs::read_to_string(&self.path).map_err(read)?;
        let factor: Enrolled = serde_json::from_str(&text).map_err(|e| FactorError::Invalid {
            path: self.path.clone(),
            reason: format!("line {} column {}: {e}", e.line(), e.column()),
        })?;
        if !is_valid_secret(&factor.secret_base32) {
            return Err(FactorError::Invalid {
                path: self.path.clone(),
                reason: "field secret_base32: not a base32 secret of at least 128 bits".into(),
            });
        }
        Ok(Some(factor))
    }

    /// Stores `factor` (mode 0600, atomically: a power cut leaves the old file or the new one).
    pub fn save(&self, factor: &Enrolled) -> Result<(), FactorError> {
        let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        self.save_locked(factor)
    }

    fn save_locked(&self, factor: &Enrolled) -> Result<(), FactorError> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| FactorError::Write(format!("{}: {e}", dir.display())))?;
        }
        let json =
            serde_json::to_vec_pretty(factor).map_err(|e| FactorError::Write(e.to_string()))?;
        write_durably(&self.path, &json, 0o600).map_err(|e| FactorError::Write(e.to_string()))
    }

    /// Checks `code` against the stored factor and stores the change before answering, so an
    /// accepted code is spent even if the box restarts right after.
    pub fn check(
        &self,
        code: &str,
        now_unix: u64,
    ) -> Result<Result<Used, CodeRefused>, FactorError> {
        let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(mut factor) = self.load()? else {
            return Ok(Err(CodeRefused::Wrong));
        };
        match factor.verify(code, now_unix) {
            Ok(used) => {
                self.save_locked(&factor)?;
                Ok(Ok(used))
            }
            Err(refused) => Ok(Err(refused)),
        }
    }

    /// Stores `new` in place of the enrolled factor, but only if `current` is a current code
    /// (not replayed) or an unused recovery code of that factor: a stolen session alone must
    /// not swap the administrator's secret for an attacker's (issue #14 item 10). With no
    /// factor enrolled (the first enrolment) `current` is not looked at and `Ok(Ok(None))` is
    /// returned. The check and both writes happen under the store's lock; the spent proof is
    /// stored before the new factor, so it stays spent even if the second write fails.
    pub fn replace(
        &self,
        current: &str,
        new: &Enrolled,
        now_unix: u64,
    ) -> Result<Result<Option<Used>, CodeRefused>, FactorError> {
        let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(mut enrolled) = self.load()? else {
            self.save_locked(new)?;
            return Ok(Ok(None));
        };
        let used = match enrolled.verify(current, now_unix) {
            Ok(used) => used,
            Err(refused) => return Ok(Err(refused)),
        };
        self.save_locked(&enrolled)?;
        self.save_locked(new)?;
        Ok(Ok(Some(used)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B, SHA-1 rows (8 digits there; the last 6 of them here, as the
    /// truncation takes the value modulo 10^digits).
    #[test]
    fn auth3_codes_match_the_rfc_6238_test_vectors() {
        let secret = Secret::Raw(b"12345678901234567890".to_vec())
            .to_encoded()
            .to_string();
        for (time, code) in [
            (59u64, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
        ] {
            assert_eq!(
                code_at(&secret, time / STEP_SECS).as_deref(),
                code.get(2..),
                "T = {time}"
            );
            assert_eq!(
                matching_step(&secret, &code[2..], time),
                Some(time / STEP_SECS)
            );
        }
    }

    #[test]
    fn auth3_a_code_is_accepted_once_and_only_near_its_time() {
        let secret = new_secret().expect("secret");
        assert_eq!(secret.len(), 32, "160 bits of base32");
        let now = 1_700_000_000u64;
        let step = now / STEP_SECS;
        let code = code_at(&secret, step).expect("code");
        let (mut factor, recovery) = Enrolled::enrol(&secret, &code, now)
            .expect("enrol")
            .expect("right code");
        assert_eq!(recovery.len(), RECOVERY_CODES);
        assert_eq!(factor.verify(&code, now), Err(CodeRefused::Replayed));
        let next = code_at(&secret, step + 1).expect("code");
        assert_eq!(factor.verify(&next, now), Ok(Used::Code { step: step + 1 }));
        assert_eq!(
            factor.verify(&next, now + STEP_SECS),
            Err(CodeRefused::Replayed)
        );
        let far = code_at(&secret, step + 3).expect("code");
        assert_eq!(
            factor.verify(&far, now),
            Err(CodeRefused::Wrong),
            "too far ahead"
        );
        for bad in ["", "12345", "1234567", "abcdef", "１２３４５６"] {
            assert_eq!(factor.verify(bad, now), Err(CodeRefused::Wrong), "{bad:?}");
        }
        assert_eq!(
            Enrolled::enrol(&secret, &far, now).expect("enrol").err(),
            Some(CodeRefused::Wrong),
            "enrolment needs the current code"
        );
    }

    #[test]
    fn auth3_recovery_codes_work_once_each_and_are_stored_as_digests() {
        let secret = new_secret().expect("secret");
        let now = 1_700_000_000u64;
        let code = code_at(&secret, now / STEP_SECS).expect("code");
        let (mut factor, recovery) = Enrolled::enrol(&secret, &code, now)
            .expect("enrol")
            .expect("right code");
        let first = recovery[0].clone();
        assert_eq!(first.len(), 19, "four groups of four: {first}");
        let json = serde_json::to_string(&factor).expect("json");
        for c in &recovery {
            assert!(!json.contains(c.as_str()), "stored in clear: {json}");
        }
        let typed = first.to_lowercase().replace('-', " ");
        assert_eq!(
            factor.verify(&typed, now),
            Ok(Used::Recovery {
                left: RECOVERY_CODES - 1
            })
        );
        assert_eq!(factor.verify(&first, now), Err(CodeRefused::Wrong), "spent");
        assert!(factor.verify(&recovery[1], now).is_ok());
    }

    #[test]
    fn auth3_factor_file_is_private_kept_and_refused_when_damaged() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("dir");
        let store = FactorStore::new(dir.path());
        assert_eq!(store.load().expect("load"), None);
        let secret = new_secret().expect("secret");
        let now = 1_700_000_000u64;
        let step = now / STEP_SECS;
        let code = code_at(&secret, step).expect("code");
        let (factor, _) = Enrolled::enrol(&secret, &code, now)
            .expect("enrol")
            .expect("right code");
        store.save(&factor).expect("save");
        let mode = std::fs::metadata(store.path())
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(store.load().expect("load").as_ref(), Some(&factor));

        // The accepted step survives a restart (a new store on the same file).
        let next = code_at(&secret, step + 1).expect("code");
        assert_eq!(
            store.check(&next, now).expect("check"),
            Ok(Used::Code { step: step + 1 })
        );
        let restarted = FactorStore::new(dir.path());
        assert_eq!(
            restarted.check(&next, now).expect("check"),
            Err(CodeRefused::Replayed)
        );

        std::fs::write(store.path(), "{\n  \"secret_base32\": 5\n}").expect("write");
        let error = store.load().expect_err("damaged").to_string();
        assert!(
            error.contains("second-factor.json") && error.contains("line 2"),
            "{error}"
        );
        std::fs::write(
            store.path(),
            r#"{"secret_base32":"AAAA","last_step":0,"recovery_sha256":[],"enrolled_unix":0}"#,
        )
        .expect("write");
        let error = store.load().expect_err("short secret").to_string();
        assert!(error.contains("secret_base32"), "{error}");
    }

    #[test]
    fn auth3_qr_code_is_a_local_svg_of_the_otpauth_uri() {
        let secret = new_secret().expect("secret");
        let uri = otpauth_uri(&secret);
        assert!(uri.starts_with("otpauth://totp/renkei:administrator?secret="));
        assert!(uri.contains("algorithm=SHA1&digits=6&period=30"));
        let svg = qr_svg(&uri).expect("svg");
        assert!(svg.contains("<svg") && svg.contains("</svg>"));
        assert!(!svg.contains("<script") && !svg.contains("href"), "{svg}");
        assert!(qr_text(&uri).expect("text").lines().count() > 10);
    }

    #[test]
    fn auth3_replacing_an_enrolled_factor_needs_a_current_code_or_recovery_code() {
        let dir = tempfile::tempdir().expect("dir");
        let store = FactorStore::new(dir.path());
        let now = 1_700_000_000u64;
        let step = now / STEP_SECS;
        let enrol = |now: u64| {
            let secret = new_secret().expect("secret");
            let code = code_at(&secret, now / STEP_SECS).expect("code");
            Enrolled::enrol(&secret, &code, now)
                .expect("enrol")
                .expect("right code")
        };
        let (first, recovery) = enrol(now);
        assert_eq!(
            store.replace("", &first, now).expect("first"),
            Ok(None),
            "the first enrolment needs no proof"
        );
        let first_code = code_at(&first.secret_base32, step).expect("code");
        let before = std::fs::read(store.path()).expect("read");
        let (second, second_recovery) = enrol(now);
        for (current, refused) in [
            ("", CodeRefused::Wrong),
            ("000000 ", CodeRefused::Wrong),
            (first_code.as_str(), CodeRefused::Replayed),
        ] {
            assert_eq!(
                store.replace(current, &second, now).expect("replace"),
                Err(refused),
                "{current:?}"
            );
            assert_eq!(
                std::fs::read(store.path()).expect("read"),
                before,
                "{current:?}: the enrolled factor is kept as it was"
            );
        }
        let next = code_at(&first.secret_base32, step + 1).expect("code");
        assert_eq!(
            store.replace(&next, &second, now).expect("replace"),
            Ok(Some(Used::Code { step: step + 1 }))
        );
        assert_eq!(store.load().expect("load").as_ref(), Some(&second));
        assert_eq!(
            store.replace(&recovery[0], &first, now).expect("replace"),
            Err(CodeRefused::Wrong),
            "the old factor's recovery codes went with it"
        );
        // An unused recovery code of the enrolled factor works too.
        let (third, _) = enrol(now);
        assert_eq!(
            store
                .replace(&second_recovery[3], &third, now)
                .expect("replace"),
            Ok(Some(Used::Recovery {
                left: RECOVERY_CODES - 1
            }))
        );
        assert_eq!(store.load().expect("load").as_ref(), Some(&third));
    }
}
