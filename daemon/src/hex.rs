//! Lowercase hex of bytes, the one spelling of key bytes, digests and fingerprints that the
//! WireGuard UAPI, the config store and the operator's tools agree on.

use std::fmt::Write as _;

/// `bytes` as lowercase hex, two digits per byte.
pub fn lower(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    #[test]
    fn two_lowercase_digits_per_byte() {
        assert_eq!(super::lower(&[0x00, 0x0a, 0xff, 0x5c]), "000aff5c");
        assert_eq!(super::lower(&[]), "");
    }
}
