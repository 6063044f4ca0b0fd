//! renkei-lab: a regional network in network namespaces, for the demo and the integration tests.
//!
//! A `Lab` creates the namespaces and links of the architecture's test lab (a data centre, a
//! hospital and a clinic joined through a WAN bridge, each facility with a LAN behind it), writes
//! real keys and configs, starts real `renkei` daemons inside the namespaces, and removes every
//! namespace, link, socket and process it created when it is dropped — also when a test panics.
//! Every address is from 198.18.0.0/15; nothing is ever sent anywhere else. IPv6 is off in every
//! namespace the lab makes (no link-local addresses, no router solicitations) unless a test turns
//! it on for one link and uses fd00::/8.

pub mod api_sockets;
pub mod bench;
pub mod bench_hub;
pub mod bench_ipsec;
pub mod bench_proxy;
pub mod boxconfig;
pub mod chain;
pub mod chaos;
pub mod churn;
pub mod compliance;
pub mod concentrator;
pub mod conn_rate;
pub mod daemon;
pub mod demo;
pub mod docserver;
pub mod door;
pub mod faketime;
pub mod foreign;
pub mod hub_throughput;
pub mod image_hub;
pub mod journal_remote;
pub mod journald;
pub mod lab;
pub mod logfields;
pub mod losses;
pub mod machine;
pub mod monitoring;
pub mod netns;
pub mod ntp;
pub mod operator;
pub mod perfcount;
pub mod pki;
pub mod probe;
pub mod rauc;
pub mod scale;
pub mod seccomp;
pub mod soak;
pub mod sockio;
pub mod strongswan;
pub mod swarm;
pub mod tlstools;
pub mod traffic;
pub mod wait;
pub mod web;

pub use daemon::Daemon;
pub use lab::{Lab, Node};
pub use netns::Namespace;
pub use wait::wait_until;

/// True when the process may create namespaces. Namespace tests call `require_root!()`.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Skips the running test, or fails it under CI (`CI` set), where every test must really run.
///
/// Outside CI it writes `SKIP <IDs> <test>: <reason>` on a line of its own straight to
/// standard error (past libtest's capture, so it reaches the log of the run even when the test
/// then passes): `lab compliance` counts a test with such a line as skipped, never as proof.
/// The caller returns right after.
pub fn skip(reason: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("unknown test")
        .to_string();
    if std::env::var_os("CI").is_some() {
        panic!("{test}: {reason}; CI must run every test, none may skip");
    }
    let line = skip_line(&test, reason);
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
}

/// The line [`skip`] writes: starting on a fresh line (libtest may have printed `test name ...`
/// without its end), the IDs the test's name starts with (`-` for none), the name and why.
pub fn skip_line(test: &str, reason: &str) -> String {
    let name = test.rsplit("::").next().unwrap_or(test);
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
    let reason = reason.replace('\n', " ");
    format!("\nSKIP {ids} {name}: {reason}\n")
}

/// Skips a namespace test when not root ([`skip`]: a failure in CI, a `SKIP` line elsewhere).
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::is_root() {
            $crate::skip("needs root (run the README's test command)");
            return;
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_lines_name_the_ids_and_the_test_on_a_line_of_their_own() {
        assert_eq!(
            skip_line("net1_net7_log1_lab_demo", "needs root"),
            "\nSKIP NET-1,NET-7,LOG-1 net1_net7_log1_lab_demo: needs root\n"
        );
        assert_eq!(
            skip_line("module::lab_up_twice", "needs\nroot"),
            "\nSKIP - lab_up_twice: needs root\n"
        );
    }
}
