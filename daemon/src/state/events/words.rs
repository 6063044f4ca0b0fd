//! Enums whose variants are stable words (event codes, reasons): one list gives the variants,
//! their words, [`ALL`](self) and the JSON form, so nothing that enumerates them (the page's
//! catalogue test, docs/api.md's test) can miss a variant added later.

/// Defines `enum $name` with `ALL` (every variant, in order), `WORDS` (their words),
/// `as_str`, `from_word` and a `Serialize` that writes the word.
macro_rules! stable_words {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $(
                $(#[$variant_meta:meta])*
                $variant:ident => $word:literal,
            )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        $vis enum $name {
            $(
                $(#[$variant_meta])*
                $variant,
            )+
        }

        impl $name {
            /// Every variant, in the order they are defined.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// Every variant's word, in the same order.
            pub const WORDS: &'static [&'static str] = &[$($word),+];

            /// The stable word: never change one, the page and log searches depend on it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $word,)+
                }
            }

            /// The variant of a word, if it is one.
            pub fn from_word(word: &str) -> Option<Self> {
                match word {
                    $($word => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

pub(crate) use stable_words;

/// The `key: "text"` entries of one language's block in web-ui/i18n.js, for the tests that
/// check every stable word has its texts.
#[cfg(test)]
pub(crate) fn catalogue(lang: &str) -> std::collections::BTreeMap<String, String> {
    let i18n = include_str!("../../../../web-ui/i18n.js");
    let start = format!("    {lang}: {{");
    let block = i18n
        .split_once(start.as_str())
        .map(|(_, rest)| rest)
        .and_then(|rest| rest.split_once("\n    },"))
        .map(|(block, _)| block)
        .unwrap_or_else(|| panic!("web-ui/i18n.js has no {lang} block"));
    block
        .lines()
        .filter_map(|line| {
            let (key, text) = line.trim().split_once(": \"")?;
            let text = text.strip_suffix("\",")?;
            Some((key.to_string(), text.to_string()))
        })
        .collect()
}

/// The keys of `keys` that a language of web-ui/i18n.js lacks (or has empty), as `lang key`.
#[cfg(test)]
pub(crate) fn missing_texts(keys: impl IntoIterator<Item = String>) -> Vec<String> {
    let (ja, en) = (catalogue("ja"), catalogue("en"));
    let mut missing = Vec::new();
    for key in keys {
        for (lang, texts) in [("ja", &ja), ("en", &en)] {
            if texts.get(&key).is_none_or(|t| t.trim().is_empty()) {
                missing.push(format!("{lang} {key}"));
            }
        }
    }
    missing
}
