//! How a daemon test that cannot run on this machine says so (the same convention as
//! `renkei_lab::skip`, which the lab tests use): under CI (`CI` set) it fails, since CI must
//! run every test; elsewhere it writes `SKIP <IDs> <test>: <reason>` on a line of its own
//! straight to standard error, past libtest's capture, and `lab compliance` counts the test as
//! skipped, never as proof. The caller returns right after.

#![allow(dead_code)]

/// Skips the running test, or fails it under CI.
pub fn skip(reason: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("unknown test")
        .to_string();
    if std::env::var_os("CI").is_some() {
        panic!("{test}: {reason}; CI must run every test, none may skip");
    }
    let name = test.rsplit("::").next().unwrap_or(&test);
    let mut ids = Vec::new();
    for token in name.split('_') {
        let digits = token.trim_start_matches(|c: char| c.is_ascii_lowercase());
        let letters = &token[..token.len() - digits.len()];
        if letters.is_empty() || digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
            break;
        }
        ids.push(format!("{}-{digits}", letters.to_ascii_uppercase()));
    }
    let ids = if ids.is_empty() {
        "-".to_string()
    } else {
        ids.join(",")
    };
    let line = format!("\nSKIP {ids} {name}: {}\n", reason.replace('\n', " "));
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
}
