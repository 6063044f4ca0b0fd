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
