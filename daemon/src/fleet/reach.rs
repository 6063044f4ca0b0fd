//! One request to one box of the inventory, with the fleet's bounds.

use std::future::Future;
use std::time::Duration;

use super::inventory::{BoxEntry, Credentials};
use crate::control::client::{ClientError, Reply, Target};

/// Pause between tries at a box that did not answer (waiting for an on-demand box's check-in).
pub const RETRY_INTERVAL_SECS: u64 = 2;

/// How the fleet reaches its boxes.
#[derive(Debug, Clone)]
pub struct Reach {
    /// The operator's credentials.
    pub credentials: Credentials,
    /// Bound on one exchange with one box.
    pub timeout: Duration,
    /// How long to keep trying a box that does not answer (0: one try).
    pub wait: Duration,
}

impl Reach {
    /// The one-box client's target for `entry`.
    pub fn target(&self, entry: &BoxEntry) -> Target {
        Target {
            address: entry.management,
            server_name: entry.server_name.clone(),
            certificate_file: self.credentials.certificate_file.clone(),
            private_key_file: self.credentials.private_key_file.clone(),
            ca_file: self.credentials.ca_file.clone(),
            timeout: self.timeout,
        }
    }

    /// Runs `request` against `entry`, trying again while the box is unreachable (transport
    /// error or timeout) until `wait` has passed.
    pub async fn ask<F, Fut>(&self, entry: &BoxEntry, request: F) -> Result<Reply, ClientError>
    where
        F: Fn(Target) -> Fut,
        Fut: Future<Output = Result<Reply, ClientError>>,
    {
        retry_unreachable(self.wait, || request(self.target(entry)), |_| {}).await
    }
}

/// True for the errors that mean "the box did not answer" (as opposed to a local problem).
pub fn unreachable(err: &ClientError) -> bool {
    matches!(
        err,
        ClientError::Transport { .. } | ClientError::Timeout(..)
    )
}

/// Tries `attempt` until it succeeds, fails for another reason than an unreachable box, or
/// `wait` has passed; `on_retry` hears each failure that is tried again. `renkei push
/// --wait-secs` and the fleet commands' `--wait` share it.
pub async fn retry_unreachable<F, Fut>(
    wait: Duration,
    attempt: F,
    on_retry: impl Fn(&ClientError),
) -> Result<Reply, ClientError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Reply, ClientError>>,
{
    let give_up = tokio::time::Instant::now() + wait;
    loop {
        match attempt().await {
            Err(err) if unreachable(&err) && tokio::time::Instant::now() < give_up => {
                on_retry(&err);
                tokio::time::sleep(Duration::from_secs(RETRY_INTERVAL_SECS)).await;
            }
            outcome => return outcome,
        }
    }
}
