//! NET-9: the parts above the carrier seam name no WireGuard-only field or type outside a
//! carrier's backend part. This test reads the code (comments, string literals and the
//! `#[cfg(test)]` fixtures at the end of a file do not count) of `daemon/src/control/`,
//! `daemon/src/supervisor/`, `daemon/src/preflight.rs`, `daemon/src/status/` and
//! `web-ui/app.js`, and fails on any identifier in [`WIREGUARD_ONLY`] and on any use of the
//! config's `[tunnel]` section (`<config>.tunnel`), unless the use is listed below with why.
//!
//! Two lists, both kept honest (an entry no longer used fails the test):
//! - [`BACKEND_PART`]: places that render WireGuard's own backend part on purpose, reached
//!   through `backend`; they stay.
//! - [`PENDING`]: uses the seam's work has not removed yet; the list must only shrink.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Identifiers only WireGuard has (whole identifiers). `private_key_file` is not here: the TLS
/// section has one too; the WireGuard key file is caught as a `[tunnel]` use.
/// `wireguard_public_key` (the enrolment data of the box's WireGuard key) is another identifier
/// and belongs to enrolment, which is not scanned.
const WIREGUARD_ONLY: &[&str] = &[
    "TunnelHandle",
    "TunnelSnapshot",
    "listen_port",
    "public_key",
    "last_handshake",
    "last_handshake_age_secs",
    "rehandshake",
    "last_rehandshake",
    "session_keys",
    "session_keys_present",
    "handshake_is_fresh",
    "boringtun",
];

/// Receivers whose `.tunnel` is not the config's `[tunnel]` section but the carrier-neutral
/// link the status document has always called `tunnel`: the document (`doc.tunnel`, a
/// `CarrierSnapshot`) and the status source (`self.tunnel`, a `CarrierHandle`) in status/.
const NEUTRAL_TUNNEL_HOLDERS: &[(&str, &str)] = &[("status/", "doc"), ("status/", "self")];

/// WireGuard's backend part rendered on purpose: (file, identifier, why).
const BACKEND_PART: &[(&str, &str, &str)] = &[(
    "status/metrics.rs",
    "public_key",
    "the per-peer counters of WireGuard peers carry their public key as a label, read from \
     the peer's backend part",
)];

/// Uses not yet moved behind the seam: (file, identifier or `.tunnel`, why). Shrink only.
const PENDING: &[(&str, &str, &str)] = &[];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the daemon sits in the workspace")
        .to_path_buf()
}

/// The scanned files, as (path relative to daemon/src or web-ui, full path).
fn scanned_files() -> Vec<(String, PathBuf)> {
    let src = repo_root().join("daemon/src");
    let mut files = Vec::new();
    for dir in ["control", "status", "supervisor"] {
        let mut pending = vec![src.join(dir)];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir).expect("list source folder") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    pending.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let name = path
                        .strip_prefix(&src)
                        .expect("under src")
                        .to_string_lossy()
                        .into_owned();
                    files.push((name, path));
                }
            }
        }
    }
    files.push(("preflight.rs".to_string(), src.join("preflight.rs")));
    files.push((
        "web-ui/app.js".to_string(),
        repo_root().join("web-ui/app.js"),
    ));
    files.sort();
    files
}

/// `text` with comments and string literals blanked (Rust and JavaScript alike: `//`, `/* */`,
/// "...", and for JavaScript '...' and `...`), and a Rust file cut at its first `#[cfg(test)]`.
fn code_only(text: &str, javascript: bool) -> String {
    let text = if javascript {
        text
    } else {
        text.split("#[cfg(test)]").next().unwrap_or("")
    };
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            i += 2;
            while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                i += 1;
            }
            i += 2;
        } else if c == '"' || (javascript && (c == '\'' || c == '`')) {
            i += 1;
            while i < chars.len() && chars[i] != c {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push(' ');
        } else if !javascript && c == '\'' && next == Some('\\') {
            i += 2;
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            i += 1;
        } else if !javascript && c == '\'' && chars.get(i + 2) == Some(&'\'') {
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// The identifiers of `code` with the character before and after each.
fn identifiers(code: &str) -> Vec<(String, char, char, String)> {
    let chars: Vec<char> = code.chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    let mut previous_ident = String::new();
    while i < chars.len() {
        if chars[i].is_alphanumeric() || chars[i] == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let ident: String = chars[start..i].iter().collect();
            let before = if start > 0 { chars[start - 1] } else { ' ' };
            let after = chars[i..]
                .iter()
                .copied()
                .find(|c| !c.is_whitespace())
                .unwrap_or(' ');
            found.push((ident.clone(), before, after, previous_ident.clone()));
            previous_ident = ident;
        } else {
            i += 1;
        }
    }
    found
}

/// Every WireGuard-only use in `file`: the identifier (or `.tunnel`) named.
fn uses(file: &str, code: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (ident, before, after, receiver) in identifiers(code) {
        if WIREGUARD_ONLY.contains(&ident.as_str()) {
            names.insert(ident);
        } else if ident == "tunnel" && before == '.' && after != '(' && !file.ends_with(".js") {
            let neutral = NEUTRAL_TUNNEL_HOLDERS
                .iter()
                .any(|(dir, holder)| file.starts_with(dir) && receiver == *holder);
            if !neutral {
                names.insert(".tunnel".to_string());
            }
        }
    }
    names
}

#[test]
fn net9_no_part_above_the_carrier_names_a_wireguard_only_field() {
    let mut leaks = Vec::new();
    let mut used = BTreeSet::new();
    for (name, path) in scanned_files() {
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let code = code_only(&text, name.ends_with(".js"));
        for ident in uses(&name, &code) {
            let allowed = BACKEND_PART
                .iter()
                .chain(PENDING)
                .find(|(file, what, _)| *file == name && *what == ident);
            match allowed {
                Some((file, what, _)) => {
                    used.insert((*file, *what));
                }
                None => leaks.push(format!("{name}: {ident}")),
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "WireGuard-only names above the carrier seam (go through the carrier's backend part):\n{}",
        leaks.join("\n")
    );
    for (file, what, why) in BACKEND_PART.iter().chain(PENDING) {
        assert!(
            used.contains(&(*file, *what)),
            "{file}: {what} ({why}) is no longer used: remove it from the list"
        );
    }
}

#[test]
fn net9_the_scanner_sees_code_only_and_whole_identifiers() {
    let rust = r#"
        // public_key in a comment
        let s = "listen_port in a string";
        let k = peer.public_key; let w = enrolment.wireguard_public_key;
        let t = config.tunnel.as_ref(); let d = doc.tunnel.kind; let h = self.tunnel();
        #[cfg(test)] mod tests { fn f() { x.listen_port } }
    "#;
    assert_eq!(
        uses("status/x.rs", &code_only(rust, false)),
        BTreeSet::from(["public_key".to_string(), ".tunnel".to_string()])
    );
    let js = "const a = p.backend; // p.public_key\nconst b = 'last_handshake'; f(x.listen_port);";
    assert_eq!(
        uses("web-ui/app.js", &code_only(js, true)),
        BTreeSet::from(["listen_port".to_string()])
    );
}
