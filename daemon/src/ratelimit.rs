//! Log lines about repeated trouble (a flood of bad packets, a failing peer) at most once per
//! interval, with a count of what was suppressed, so they cannot flood journald.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A gate for one kind of log line.
#[derive(Debug)]
pub struct LogGate {
    interval: Duration,
    inner: Mutex<GateState>,
}

#[derive(Debug)]
struct GateState {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogGate {
    /// A gate that opens at most once per `interval`.
    pub const fn new(interval: Duration) -> Self {
        LogGate {
            interval,
            inner: Mutex::new(GateState {
                last: None,
                suppressed: 0,
            }),
        }
    }

    /// `Some(n)` when a line may be logged now, with `n` lines suppressed since the last one.
    pub fn check(&self, now: Instant) -> Option<u64> {
        let mut state = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match state.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => {
                state.suppressed += 1;
                None
            }
            _ => {
                state.last = Some(now);
                Some(std::mem::take(&mut state.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_once_per_interval_and_counts_the_rest() {
        let gate = LogGate::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(gate.check(t0), Some(0));
        for i in 1..=5 {
            assert_eq!(gate.check(t0 + Duration::from_secs(i)), None);
        }
        assert_eq!(gate.check(t0 + Duration::from_secs(10)), Some(5));
    }
}
