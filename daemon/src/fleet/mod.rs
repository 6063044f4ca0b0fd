//! The operator's tools for many boxes at once (`renkei fleet status|push|confirm`), built on
//! the one-box client of [`crate::control::client`]: the same pinned TLS, the same requests.
//!
//! - [`inventory`]: `fleet.toml`, the boxes and how to reach them.
//! - [`reach`]: one request to one box, retried while it is unreachable for at most the
//!   operator's `--wait` (an on-demand box answers only while its tunnel is up).
//! - [`waves`]: which boxes a rollout pushes to first.
//! - [`status`]: every box's facts in one table.
//! - [`rollout`]: a signed config per box, wave after wave, stopping at the first failure;
//!   and the fleet-wide confirm.
//!
//! Boxes are asked in parallel, at most `concurrency` at once, each bounded by its own
//! timeout: an unreachable box is reported, never waited for beyond its bound.

pub mod inventory;
pub mod reach;
pub mod rollout;
pub mod status;
pub mod waves;

/// Boxes asked at once when the operator does not say.
pub const DEFAULT_CONCURRENCY: usize = 16;
/// Bound on one exchange with one box when the operator does not say.
pub const DEFAULT_TIMEOUT_SECS: u64 = 10;
