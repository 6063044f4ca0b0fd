//! Firmware versions as the box orders them: dotted decimal numbers (`1.4.2`, `2026.12.1`),
//! compared part by part as numbers, a missing part counting as 0 (`1.4` = `1.4.0`).
//!
//! RAUC itself gives a bundle's `version` no order; the box refuses an update that is not newer
//! than the running firmware, so it needs one. Anything else (letters, `-rc1`, empty parts) is
//! refused rather than guessed at: a version the box cannot order is a version it cannot protect
//! against a downgrade.

use std::cmp::Ordering;
use std::fmt;

/// Most dotted parts a version may have.
pub const MAX_VERSION_PARTS: usize = 8;
/// Longest version text accepted.
pub const MAX_VERSION_CHARS: usize = 64;

/// A parsed firmware version.
#[derive(Debug, Clone, Eq)]
pub struct FirmwareVersion {
    parts: Vec<u64>,
    text: String,
}

/// Why a version text is not a firmware version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    /// Nothing, or longer than [`MAX_VERSION_CHARS`], or too many parts.
    #[error("version {0:?} must be 1 to {MAX_VERSION_PARTS} dotted numbers of at most {MAX_VERSION_CHARS} characters in all, like 1.4.2")]
    Shape(String),
    /// A part that is not a decimal number.
    #[error("version {text:?}: part {part:?} is not a decimal number (versions are dotted numbers like 1.4.2)")]
    Part {
        /// The whole text.
        text: String,
        /// The offending part.
        part: String,
    },
}

impl FirmwareVersion {
    /// Parses `text` (surrounding spaces are not allowed either).
    pub fn parse(text: &str) -> Result<FirmwareVersion, VersionError> {
        let shown: String = text.chars().take(MAX_VERSION_CHARS).collect();
        if text.is_empty()
            || text.chars().count() > MAX_VERSION_CHARS
            || text.split('.').count() > MAX_VERSION_PARTS
        {
            return Err(VersionError::Shape(shown));
        }
        let mut parts = Vec::new();
        for part in text.split('.') {
            let number = (!part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
                .then(|| part.parse::<u64>().ok())
                .flatten();
            match number {
                Some(n) => parts.push(n),
                None => {
                    return Err(VersionError::Part {
                        text: shown,
                        part: part.to_string(),
                    })
                }
            }
        }
        Ok(FirmwareVersion {
            parts,
            text: text.to_string(),
        })
    }

    /// Version 0, older than any other.
    pub fn zero() -> FirmwareVersion {
        FirmwareVersion {
            parts: vec![0],
            text: "0".to_string(),
        }
    }

    /// The text it was parsed from.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl Ord for FirmwareVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        let len = self.parts.len().max(other.parts.len());
        (0..len)
            .map(|i| {
                let a = self.parts.get(i).copied().unwrap_or(0);
                let b = other.parts.get(i).copied().unwrap_or(0);
                a.cmp(&b)
            })
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
    }
}

impl PartialOrd for FirmwareVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for FirmwareVersion {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl fmt::Display for FirmwareVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> FirmwareVersion {
        FirmwareVersion::parse(text).expect("a valid version")
    }

    #[test]
    fn avl5_versions_compare_part_by_part_as_numbers() {
        assert!(v("1.10.0") > v("1.9.9"), "numbers, not text");
        assert!(v("2") > v("1.99.99"));
        assert!(v("0.1.1") > v("0.1"));
        assert_eq!(v("1.4"), v("1.4.0"), "a missing part counts as 0");
        assert!(v("2026.12.1") > v("2026.1.31"));
        assert!(v("1.0.0") < v("1.0.1"));
        assert_eq!(v("007.1").cmp(&v("7.1")), Ordering::Equal);
        assert_eq!(v("1.4.2").to_string(), "1.4.2");
    }

    #[test]
    fn avl5_versions_the_box_cannot_order_are_refused() {
        for bad in [
            "",
            "1.",
            ".1",
            "1..2",
            "1.4-rc1",
            "v1.4",
            " 1.4",
            "1.4 ",
            "1.2.3.4.5.6.7.8.9",
            "99999999999999999999999",
            "１.２",
        ] {
            assert!(FirmwareVersion::parse(bad).is_err(), "{bad:?} was accepted");
        }
        let long = "1".repeat(MAX_VERSION_CHARS + 1);
        assert!(FirmwareVersion::parse(&long).is_err());
    }

    proptest::proptest! {
        /// A bundle's manifest and a config are untrusted: any text is parsed without a panic,
        /// and what parses orders consistently with its own text.
        #[test]
        fn int1_avl5_any_version_text_is_parsed_without_panic(text in "\\PC{0,80}") {
            if let Ok(version) = FirmwareVersion::parse(&text) {
                proptest::prop_assert_eq!(version.as_str(), text.as_str());
                proptest::prop_assert_eq!(version.cmp(&version.clone()), Ordering::Equal);
            }
        }

        #[test]
        fn int1_avl5_dotted_numbers_order_as_their_parts(a in proptest::collection::vec(0u64..1000, 1..5),
                                                         b in proptest::collection::vec(0u64..1000, 1..5)) {
            let text = |parts: &[u64]| parts.iter().map(u64::to_string).collect::<Vec<_>>().join(".");
            let (va, vb) = (v(&text(&a)), v(&text(&b)));
            let pad = |parts: &[u64]| { let mut p = parts.to_vec(); p.resize(5, 0); p };
            proptest::prop_assert_eq!(va.cmp(&vb), pad(&a).cmp(&pad(&b)));
        }
    }
}
