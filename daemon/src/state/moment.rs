//! A moment on both clocks. Durations and order are measured on the monotonic clock; the wall
//! clock is only shown. A box without a battery-backed clock boots in the past and is stepped
//! by its first time sync, and an administrator may set the date: neither may make a fresh
//! handshake look days old (or from the future), nor a handshake after a config's apply look
//! like one before it.

use std::time::{Duration, Instant, SystemTime};

/// When something happened, on the monotonic and on the wall clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moment {
    /// Monotonic: for ages and order.
    pub instant: Instant,
    /// Wall clock: for people and logs.
    pub wall: SystemTime,
}

impl Moment {
    /// Now.
    pub fn now() -> Self {
        Moment {
            instant: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    /// How long before `now` (monotonic) this was; zero for a later moment.
    pub fn age_at(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.instant)
    }

    /// Whether this happened at or after `other` (monotonic).
    pub fn is_at_or_after(&self, other: &Moment) -> bool {
        self.instant >= other.instant
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// INT-2: the wall clock stepped between two moments (either way, by days) changes
    /// neither the age of the first nor their order.
    #[test]
    fn int2_a_wall_clock_step_moves_no_age_and_no_order() {
        let day = Duration::from_secs(86_400);
        let before = Moment::now();
        let later = before.instant + Duration::from_secs(5);
        for step_days in [-3i64, 3, -20_000] {
            let days = day * step_days.unsigned_abs() as u32;
            let wall = if step_days < 0 {
                before
                    .wall
                    .checked_sub(days)
                    .unwrap_or(SystemTime::UNIX_EPOCH)
            } else {
                before.wall + days
            };
            let after = Moment {
                instant: later,
                wall,
            };
            assert!(after.is_at_or_after(&before), "step {step_days} d: order");
            assert!(!before.is_at_or_after(&after), "step {step_days} d: order");
            assert_eq!(after.age_at(later), Duration::ZERO);
            assert_eq!(before.age_at(later), Duration::from_secs(5));
        }
        assert_eq!(
            Moment::now().age_at(before.instant),
            Duration::ZERO,
            "a moment after `now` has no age"
        );
    }
}
