//! WireGuard key material: generating, encoding and reading keys from files.
//!
//! Private keys are read only from files the daemon owns with mode 0600 (or stricter) and never
//! printed or logged; only public keys leave this module as text. A new key file appears whole
//! or not at all ([`crate::durable`]), so a power cut during first boot never leaves a
//! truncated key behind; a key file that is there but does not hold a key is an error naming
//! it, never replaced (the box may be enrolled with it).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::durable;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use boringtun::x25519::{PublicKey, StaticSecret};

/// Length of every WireGuard key in bytes.
pub const KEY_LEN: usize = 32;
/// A key file is 44 characters of base64 and a newline; anything much larger is not one.
pub const MAX_KEY_FILE_BYTES: u64 = 256;

/// Why a key or key file was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The text is not 32 bytes of standard base64.
    #[error("not a WireGuard key: expected 44 characters of base64 encoding 32 bytes")]
    Malformed,
    /// The key file is missing or unreadable.
    #[error("cannot read key file {path}: {source}")]
    Unreadable {
        /// The key file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Group or others may read the private key.
    #[error("private key file {path} has mode {mode:04o}; it must not be accessible by group or others (chmod 600)")]
    TooOpen {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file does not hold a key (empty, cut short, damaged): left as it is.
    #[error("key file {path} does not hold a WireGuard key (44 characters of base64; empty or cut short?); it is left untouched: restore it, or remove it to make a new key and enrol the box again")]
    BadContent {
        /// The key file.
        path: PathBuf,
    },
    /// Writing a new key failed (the file may already exist: keys are never overwritten).
    #[error("cannot write key file {path}: {source}")]
    Write {
        /// The key file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// Decodes a base64 WireGuard key (public, private or preshared).
pub fn decode_key(text: &str) -> Result<[u8; KEY_LEN], KeyError> {
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|_| KeyError::Malformed)?;
    bytes.try_into().map_err(|_| KeyError::Malformed)
}

/// Encodes a key the way `wg` prints it.
pub fn encode_key(key: &[u8; KEY_LEN]) -> String {
    STANDARD.encode(key)
}

/// Reads a private key file, refusing files readable by group or others.
pub fn read_private_key(path: &Path) -> Result<StaticSecret, KeyError> {
    let meta = fs::metadata(path).map_err(|source| KeyError::Unreadable {
        path: path.to_path_buf(),
        source,
    })?;
    // A FIFO or device would block or feed us anything; a key file is a small regular file.
    if !meta.is_file() || meta.len() > MAX_KEY_FILE_BYTES {
        return Err(KeyError::BadContent {
            path: path.to_path_buf(),
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyError::TooOpen {
            path: path.to_path_buf(),
            mode,
        });
    }
    let text = fs::read_to_string(path).map_err(|source| KeyError::Unreadable {
        path: path.to_path_buf(),
        source,
    })?;
    let bytes = decode_key(&text).map_err(|_| KeyError::BadContent {
        path: path.to_path_buf(),
    })?;
    Ok(StaticSecret::from(bytes))
}

/// The public key of a private key, as bytes.
pub fn public_key_of(secret: &StaticSecret) -> [u8; KEY_LEN] {
    PublicKey::from(secret).to_bytes()
}

/// A fresh private key from the OS random source.
pub fn generate_private_key() -> StaticSecret {
    StaticSecret::random_from_rng(rand_core::OsRng)
}

/// Writes a new private key file with mode 0600 and its public key beside it (`<path>.pub`),
/// each durably. Refuses to overwrite an existing private key: losing it would cut the box off.
pub fn write_keypair(path: &Path) -> Result<[u8; KEY_LEN], KeyError> {
    let secret = generate_private_key();
    let public = public_key_of(&secret);
    let text = format!("{}\n", encode_key(&secret.to_bytes()));
    durable::create_durably(path, text.as_bytes(), 0o600).map_err(write_error)?;
    write_public_key(path, &public)?;
    Ok(public)
}

/// First boot's WireGuard part (OPS-1): the public key of the key at `path`, made now (`true`)
/// unless one is there. A file that is there but is no key is reported with its path and kept.
/// The `.pub` beside it is written again when it is missing or does not match.
pub fn ensure_keypair(path: &Path) -> Result<([u8; KEY_LEN], bool), KeyError> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((write_keypair(path)?, true)),
        _ => {
            let public = public_key_of(&read_private_key(path)?);
            let shown = fs::read_to_string(public_key_path(path)).ok();
            if shown.as_deref().map(decode_key).and_then(Result::ok) != Some(public) {
                write_public_key(path, &public)?;
            }
            Ok((public, false))
        }
    }
}

fn write_public_key(private_path: &Path, public: &[u8; KEY_LEN]) -> Result<(), KeyError> {
    let text = format!("{}\n", encode_key(public));
    durable::write_durably(&public_key_path(private_path), text.as_bytes(), 0o644)
        .map_err(write_error)
}

fn write_error(e: durable::FileError) -> KeyError {
    KeyError::Write {
        path: e.path,
        source: e.source,
    }
}

/// Where `write_keypair` puts the public key of `private_path`.
pub fn public_key_path(private_path: &Path) -> PathBuf {
    let mut name = private_path.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_keys_read_back_and_are_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("wg.key");
        let public = write_keypair(&path).expect("write");
        let mode = fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let secret = read_private_key(&path).expect("read");
        assert_eq!(public_key_of(&secret), public);
        let pub_text = fs::read_to_string(public_key_path(&path)).expect("pub");
        assert_eq!(decode_key(&pub_text).expect("decode"), public);
        assert!(matches!(write_keypair(&path), Err(KeyError::Write { .. })));
    }

    #[test]
    fn group_readable_key_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("wg.key");
        write_keypair(&path).expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).expect("chmod");
        assert!(matches!(
            read_private_key(&path),
            Err(KeyError::TooOpen { mode: 0o640, .. })
        ));
    }

    #[test]
    fn a_fifo_is_not_a_key_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("wg.key");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("fifo");
        assert!(matches!(
            read_private_key(&path),
            Err(KeyError::BadContent { .. })
        ));
    }

    #[test]
    fn avl1_ops1_a_present_but_bad_key_file_is_reported_with_its_path_and_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("wg.key");
        let whole = encode_key(&[7u8; KEY_LEN]);
        for content in [
            String::new(),
            whole[..20].to_string(),
            format!("{}\n", &whole[..43]),
            "!".repeat(44),
            encode_key(&[7u8; KEY_LEN])[..40].to_string() + "====",
        ] {
            let _ = fs::remove_file(&path);
            fs::write(&path, &content).expect("write");
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
            let err = ensure_keypair(&path).expect_err("not a key");
            assert!(matches!(err, KeyError::BadContent { .. }), "{err}");
            let text = err.to_string();
            assert!(text.contains(&path.display().to_string()), "{text}");
            assert!(text.contains("left untouched"), "{text}");
            assert_eq!(fs::read_to_string(&path).expect("read"), content, "kept");
            assert!(!public_key_path(&path).exists(), "nothing else written");
        }
    }

    #[test]
    fn ops1_ensure_keypair_makes_a_key_once_and_restores_its_public_half() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("wg.key");
        let (public, made) = ensure_keypair(&path).expect("first");
        assert!(made);
        let key = fs::read(&path).expect("key");
        fs::write(public_key_path(&path), "cut").expect("damage the .pub");
        let (again, made) = ensure_keypair(&path).expect("again");
        assert_eq!((again, made), (public, false));
        assert_eq!(fs::read(&path).expect("key"), key, "never overwritten");
        let shown = fs::read_to_string(public_key_path(&path)).expect("pub");
        assert_eq!(decode_key(&shown).expect("decode"), public);
    }

    #[test]
    fn malformed_keys_are_refused() {
        assert!(decode_key("abc").is_err());
        assert!(decode_key(&STANDARD.encode([0u8; 31])).is_err());
        assert!(decode_key(&STANDARD.encode([7u8; 32])).is_ok());
    }
}
