//! renkei: the daemon of a regional medical information network's edge box.
//!
//! The library holds every part of the daemon so that the lab and the integration tests drive
//! the same code the binary runs.

pub mod config;
pub mod control;
pub mod durable;
pub mod enrolment;
pub mod hex;
pub mod keys;
pub mod logging;
pub mod notify;
pub mod preflight;
pub mod proxy;
pub mod ratelimit;
pub mod signing;
pub mod state;
pub mod status;
pub mod supervisor;
pub mod tls;
pub mod tunnel;
