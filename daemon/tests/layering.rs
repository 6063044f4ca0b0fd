//! The daemon's modules form layers: each imports only modules below it, so a part can be
//! read, tested and replaced without the parts that use it. This test reads every file under
//! `daemon/src`, collects the `crate::<module>` paths its code names (comments, doc comments
//! and string literals do not count; the binary under `src/bin/` names the library as
//! `renkei::`), and fails on any reference to a module above the file's own in [`LAYERS`].
//!
//! The order is also written down, with why, in the module docs of `daemon/src/lib.rs`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The top-level modules, lowest first. A module may use only modules before it in this list.
/// `main` is the binary (`src/bin/renkei/`), above everything in the library.
const LAYERS: &[&str] = &[
    "hex",
    "durable",
    "ratelimit",
    "logging",
    "notify",
    "firmware_version",
    "control_socket",
    "signing",
    "state",
    "keys",
    "config",
    "timesync",
    "journal",
    "tls",
    "tunnel",
    "carrier",
    "proxy",
    "update",
    "control",
    "preflight",
    "enrolment",
    "status",
    "fleet",
    "supervisor",
    "main",
];

/// Upward references that stay for now, each with the exact path used and why. Every entry
/// must still be in use: once the code no longer needs it, the test fails until it is removed.
const EXCEPTIONS: &[(&str, &str, &str)] = &[];

fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|m| *m == module)
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The top-level module a file belongs to (`status` for `status/http/page.rs`); `None` for
/// `lib.rs`, which only declares modules.
fn owning_module(file: &Path) -> Option<String> {
    let relative = file.strip_prefix(source_dir()).expect("file under src");
    let first = relative.components().next()?.as_os_str().to_str()?;
    if first == "bin" {
        // The binary's own modules (src/bin/renkei/) are all `main` to the library.
        return Some("main".to_string());
    }
    match first.strip_suffix(".rs") {
        Some("lib") => None,
        Some(stem) => Some(stem.to_string()),
        None => Some(first.to_string()),
    }
}

/// `text` with comments, string and character literals blanked out (newlines kept), so only
/// code is left to scan.
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && raw_prefix(&chars, i) {
            // A raw string: r"..." or r#"..."# (or br"...").
            let mut hashes = 0;
            let mut j = i + 1;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            while j < chars.len() {
                if chars[j] == '"' && (1..=hashes).all(|k| chars.get(j + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                out.push(blank(chars[j]));
                j += 1;
            }
            i = j;
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                if let Some(&c) = chars.get(i) {
                    out.push(blank(c));
                }
                i += 1;
            }
            i += 1;
        } else if c == '\'' && next == Some('\\') {
            // An escaped character literal: '\n', '\'', '\u{..}'.
            i += 2;
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            i += 1;
        } else if c == '\'' && chars.get(i + 2) == Some(&'\'') {
            // A plain character literal such as '"'; anything else is a lifetime.
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn ident_before(chars: &[char], i: usize) -> bool {
    i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_')
}

/// Whether the `r` at `i` starts a raw string literal (alone or as `br`), not an identifier.
fn raw_prefix(chars: &[char], i: usize) -> bool {
    !ident_before(chars, i) || (chars[i - 1] == 'b' && !ident_before(chars, i - 1))
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    PathSep,
    Open,
    Close,
    Comma,
    Other,
}

fn tokens(code: &str) -> Vec<Token> {
    let chars: Vec<char> = code.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_alphanumeric() || c == '_' || c == '$' {
            let start = i;
            i += 1;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            tokens.push(Token::Ident(chars[start..i].iter().collect()));
            continue;
        }
        match c {
            ':' if chars.get(i + 1) == Some(&':') => {
                tokens.push(Token::PathSep);
                i += 1;
            }
            '{' => tokens.push(Token::Open),
            '}' => tokens.push(Token::Close),
            ',' => tokens.push(Token::Comma),
            c if c.is_whitespace() => {}
            _ => tokens.push(Token::Other),
        }
        i += 1;
    }
    tokens
}

/// Reads the rest of a path or use tree after `prefix::` at `tokens[*at]`, pushing each full
/// path (`crate::a::b`, one per leaf of a `{...}` group) to `paths`.
fn use_tree(tokens: &[Token], at: &mut usize, prefix: String, paths: &mut Vec<String>) {
    match tokens.get(*at) {
        Some(Token::Ident(name)) => {
            *at += 1;
            let path = format!("{prefix}::{name}");
            if tokens.get(*at) == Some(&Token::PathSep) {
                *at += 1;
                use_tree(tokens, at, path, paths);
            } else {
                paths.push(path);
            }
        }
        Some(Token::Open) => {
            *at += 1;
            while let Some(token) = tokens.get(*at) {
                match token {
                    Token::Close => {
                        *at += 1;
                        return;
                    }
                    Token::Comma => *at += 1,
                    _ => {
                        let before = *at;
                        use_tree(tokens, at, prefix.clone(), paths);
                        if *at == before {
                            *at += 1;
                        }
                    }
                }
            }
        }
        // `crate::*` or something unexpected: name the prefix itself, never lose a reference.
        _ => paths.push(prefix),
    }
}

/// Every path starting at `root::` (`crate` in the library, `renkei` in the binary) in `code`,
/// written as `crate::...`.
fn crate_paths(code: &str, root: &str) -> Vec<String> {
    let tokens = tokens(code);
    let mut paths = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let starts_path = i == 0 || tokens[i - 1] != Token::PathSep;
        if starts_path
            && tokens[i] == Token::Ident(root.to_string())
            && tokens.get(i + 1) == Some(&Token::PathSep)
        {
            let mut at = i + 2;
            use_tree(&tokens, &mut at, "crate".to_string(), &mut paths);
            i = at;
        } else {
            i += 1;
        }
    }
    paths
}

/// The top-level module a `crate::...` path names.
fn target_module(path: &str) -> &str {
    path.split("::").nth(1).unwrap_or("")
}

/// The modules `lib.rs` declares.
fn declared_modules() -> BTreeSet<String> {
    let lib = std::fs::read_to_string(source_dir().join("lib.rs")).expect("read lib.rs");
    code_only(&lib)
        .lines()
        .filter_map(|line| line.trim().strip_prefix("pub mod "))
        .map(|rest| rest.trim_end_matches(';').trim().to_string())
        .collect()
}

#[test]
fn every_module_has_a_layer() {
    let mut declared = declared_modules();
    declared.insert("main".to_string());
    let layered: BTreeSet<String> = LAYERS.iter().map(|m| m.to_string()).collect();
    assert_eq!(
        LAYERS.len(),
        layered.len(),
        "a module is listed twice in LAYERS"
    );
    assert_eq!(
        declared, layered,
        "LAYERS (tests/layering.rs) and the docs of lib.rs must list exactly the modules lib.rs \
         declares, plus main"
    );
}

#[test]
fn modules_import_only_modules_below_them() {
    let mut upward = Vec::new();
    let mut used_exceptions = BTreeSet::new();
    for file in rust_files(&source_dir()) {
        let Some(module) = owning_module(&file) else {
            continue;
        };
        let from = rank(&module)
            .unwrap_or_else(|| panic!("{}: module {module} is not in LAYERS", file.display()));
        let text = std::fs::read_to_string(&file).expect("read source");
        let root = if module == "main" { "renkei" } else { "crate" };
        for path in crate_paths(&code_only(&text), root) {
            let target = target_module(&path);
            let Some(to) = rank(target) else {
                upward.push(format!(
                    "{}: {path} names no module in LAYERS",
                    file.display()
                ));
                continue;
            };
            if to <= from {
                continue;
            }
            let exception = EXCEPTIONS
                .iter()
                .find(|(m, allowed, _)| *m == module && path.starts_with(allowed));
            match exception {
                Some(&(_, allowed, _)) => {
                    used_exceptions.insert((module.clone(), allowed));
                }
                None => upward.push(format!(
                    "{}: {module} uses {path}, a module above it",
                    file.display()
                )),
            }
        }
    }
    assert!(
        upward.is_empty(),
        "modules must import only modules below them (order in tests/layering.rs and \
         lib.rs):\n{}",
        upward.join("\n")
    );
    for (module, allowed, why) in EXCEPTIONS {
        assert!(
            used_exceptions.contains(&(module.to_string(), *allowed)),
            "the exception for {module} -> {allowed} ({why}) is no longer needed: remove it"
        );
    }
}

/// Modules that sit behind a seam: only the module directly above may name them, so the parts
/// above the seam never depend on one backend. `tunnel` (WireGuard) is a backend of `carrier`.
const BEHIND_SEAM: &[(&str, &str)] = &[("tunnel", "carrier")];

#[test]
fn only_the_carrier_names_the_tunnel() {
    let mut leaks = Vec::new();
    for file in rust_files(&source_dir()) {
        let Some(module) = owning_module(&file) else {
            continue;
        };
        let text = std::fs::read_to_string(&file).expect("read source");
        let root = if module == "main" { "renkei" } else { "crate" };
        for path in crate_paths(&code_only(&text), root) {
            let target = target_module(&path);
            for (hidden, seam) in BEHIND_SEAM {
                let above_seam = rank(&module) > rank(seam);
                if target == *hidden && above_seam {
                    leaks.push(format!(
                        "{}: {module} uses {path}; go through crate::{seam}",
                        file.display()
                    ));
                }
            }
        }
    }
    assert!(leaks.is_empty(), "{}", leaks.join("\n"));
}

#[test]
fn scanner_sees_code_paths_only() {
    let source = r##"
        use crate::state::events::{self, EventLog, Level};
        use crate::{config::{Config, Files}, tls};
        // use crate::supervisor::Nope;
        /// See [`crate::status::Nope`].
        /* crate::control::Nope /* nested */ crate::control::Nope */
        let text = "crate::proxy::Nope";
        let raw = r#"crate::proxy::Nope "quoted""#;
        let quote = '"'; let lifetime: &'static str = "x";
        fn f<'a>(x: &'a str) -> crate::keys::Key { $crate::hex::lower(x); other::crate::x }
    "##;
    assert_eq!(
        crate_paths(&code_only(source), "crate"),
        [
            "crate::state::events::self",
            "crate::state::events::EventLog",
            "crate::state::events::Level",
            "crate::config::Config",
            "crate::config::Files",
            "crate::tls",
            "crate::keys::Key",
        ]
    );
    assert_eq!(
        crate_paths(
            "let k = renkei::signing::SigningKeyPair::generate();",
            "renkei"
        ),
        ["crate::signing::SigningKeyPair::generate"]
    );
}

/// Backend parts inside a module that only that module may name: the IPsec carrier's charon
/// driver (`carrier::ipsec`) sits behind the carrier seam like the WireGuard tunnel.
const INSIDE_SEAM: &[(&str, &str)] = &[("crate::carrier::ipsec", "carrier")];

#[test]
fn only_the_carrier_names_its_ipsec_parts() {
    let mut leaks = Vec::new();
    for file in rust_files(&source_dir()) {
        let Some(module) = owning_module(&file) else {
            continue;
        };
        let text = std::fs::read_to_string(&file).expect("read source");
        let root = if module == "main" { "renkei" } else { "crate" };
        for path in crate_paths(&code_only(&text), root) {
            for (hidden, owner) in INSIDE_SEAM {
                let named = path == *hidden || path.starts_with(&format!("{hidden}::"));
                if named && module != *owner {
                    leaks.push(format!(
                        "{}: {module} uses {path}; only {owner} may",
                        file.display()
                    ));
                }
            }
        }
    }
    assert!(leaks.is_empty(), "{}", leaks.join("\n"));
}
