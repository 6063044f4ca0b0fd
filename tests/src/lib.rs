//! renkei-lab: a regional network in network namespaces, for the demo and the integration tests.
//!
//! A `Lab` creates the namespaces and links of the architecture's test lab (a data centre, a
//! hospital and a clinic joined through a WAN bridge, each facility with a LAN behind it), writes
//! real keys and configs, starts real `renkei` daemons inside the namespaces, and removes every
//! namespace, link, socket and process it created when it is dropped — also when a test panics.
//! Every address is from 198.18.0.0/15; nothing is ever sent anywhere else.

pub mod bench;
pub mod bench_proxy;
pub mod chain;
pub mod compliance;
pub mod daemon;
pub mod demo;
pub mod docserver;
pub mod foreign;
pub mod lab;
pub mod netns;
pub mod operator;
pub mod pki;
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

/// Skips a test outside CI when not root; in CI (`CI` set) a missing root is a failure, so the
/// namespace tests can never silently not run there.
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::is_root() {
            if std::env::var_os("CI").is_some() {
                panic!("namespace tests need root, and CI must run them");
            }
            eprintln!("skipped: needs root (run the README's test command)");
            return;
        }
    };
}
