//! When the operator last reached this box with an authenticated management request. The
//! management API (control) writes it; a carrier that has no handshake of its own (a closed
//! network) reads it as proof that the operator still reaches the box, e.g. to auto-confirm a
//! pushed config. It lives here, below both, so neither imports the other.

use std::sync::{Arc, Mutex, PoisonError};

use super::moment::Moment;

/// The moment of the last authenticated operator request; clones share it.
#[derive(Debug, Clone, Default)]
pub struct OperatorContact {
    last: Arc<Mutex<Option<Moment>>>,
}

impl OperatorContact {
    /// A record with no request yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Notes an authenticated operator request that arrived at `at` (an earlier time than the
    /// one recorded is ignored: requests are served concurrently).
    pub fn record(&self, at: Moment) {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if last.is_none_or(|t| !t.is_at_or_after(&at)) {
            *last = Some(at);
        }
    }

    /// The last authenticated operator request, if any.
    pub fn last(&self) -> Option<Moment> {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// True when an authenticated operator request arrived at or after `since` (monotonic:
    /// a step of the wall clock after the apply changes nothing).
    pub fn reached_since(&self, since: &Moment) -> bool {
        self.last().is_some_and(|t| t.is_at_or_after(since))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    /// `applied` shifted by `secs` on the monotonic clock and by `wall_secs` on the wall clock.
    fn at(applied: Moment, secs: i64, wall_secs: i64) -> Moment {
        let shift = |d: i64| Duration::from_secs(d.unsigned_abs());
        Moment {
            instant: if secs < 0 {
                applied.instant - shift(secs)
            } else {
                applied.instant + shift(secs)
            },
            wall: if wall_secs < 0 {
                applied.wall - shift(wall_secs)
            } else {
                applied.wall + shift(wall_secs)
            },
        }
    }

    #[test]
    fn net9_a_request_after_the_moment_is_proof_and_one_before_is_not() {
        let contact = OperatorContact::new();
        let applied = Moment {
            instant: std::time::Instant::now() + Duration::from_secs(100),
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
        };
        assert!(!contact.reached_since(&applied), "no request yet");
        contact.record(at(applied, -1, -1));
        assert!(
            !contact.reached_since(&applied),
            "the push itself came before"
        );
        let shared = contact.clone();
        shared.record(at(applied, 2, 2));
        assert!(contact.reached_since(&applied), "clones share the record");
        contact.record(at(applied, -5, -5));
        assert_eq!(
            contact.last(),
            Some(at(applied, 2, 2)),
            "a late-served older request does not move the record back"
        );
    }

    /// INT-2: the wall clock stepped between the apply and the operator's next request (back
    /// by three days, or forward) decides nothing: the order is the monotonic clock's.
    #[test]
    fn int2_net9_a_wall_clock_step_after_the_apply_neither_hides_nor_fakes_the_operators_request() {
        let applied = Moment {
            instant: std::time::Instant::now() + Duration::from_secs(100),
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
        };
        let stepped_back = OperatorContact::new();
        stepped_back.record(at(applied, 3, -3 * 86_400));
        assert!(
            stepped_back.reached_since(&applied),
            "a request after the apply"
        );
        let stepped_forward = OperatorContact::new();
        stepped_forward.record(at(applied, -3, 3 * 86_400));
        assert!(
            !stepped_forward.reached_since(&applied),
            "the push itself, however late its wall clock says it was"
        );
    }
}
