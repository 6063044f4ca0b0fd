//! When the operator last reached this box with an authenticated management request. The
//! management API (control) writes it; a carrier that has no handshake of its own (a closed
//! network) reads it as proof that the operator still reaches the box, e.g. to auto-confirm a
//! pushed config. It lives here, below both, so neither imports the other.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

/// The time of the last authenticated operator request; clones share it.
#[derive(Debug, Clone, Default)]
pub struct OperatorContact {
    last: Arc<Mutex<Option<SystemTime>>>,
}

impl OperatorContact {
    /// A record with no request yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Notes an authenticated operator request that arrived at `at` (an earlier time than the
    /// one recorded is ignored: requests are served concurrently).
    pub fn record(&self, at: SystemTime) {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if last.is_none_or(|t| t < at) {
            *last = Some(at);
        }
    }

    /// The last authenticated operator request, if any.
    pub fn last(&self) -> Option<SystemTime> {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// True when an authenticated operator request arrived at or after `since`.
    pub fn reached_since(&self, since: SystemTime) -> bool {
        self.last().is_some_and(|t| t >= since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn net9_a_request_after_the_moment_is_proof_and_one_before_is_not() {
        let contact = OperatorContact::new();
        let applied = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        assert!(!contact.reached_since(applied), "no request yet");
        contact.record(applied - Duration::from_secs(1));
        assert!(
            !contact.reached_since(applied),
            "the push itself came before"
        );
        let shared = contact.clone();
        shared.record(applied + Duration::from_secs(2));
        assert!(contact.reached_since(applied), "clones share the record");
        contact.record(applied - Duration::from_secs(5));
        assert_eq!(
            contact.last(),
            Some(applied + Duration::from_secs(2)),
            "a late-served older request does not move the record back"
        );
    }
}
