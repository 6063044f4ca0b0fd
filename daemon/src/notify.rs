//! systemd integration: READY once the tunnel policy and services run, WATCHDOG from the
//! supervisor's loop only while the data plane's timers still tick, STOPPING on shutdown.
//! Outside systemd (`NOTIFY_SOCKET` unset) every call is a no-op.

use std::time::Duration;

use sd_notify::NotifyState;

/// Tells systemd the daemon is up, with a one-line status for `systemctl status`.
pub fn ready(status: &str) {
    let _ = sd_notify::notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Tells systemd the daemon is stopping.
pub fn stopping() {
    let _ = sd_notify::notify(&[NotifyState::Stopping]);
}

/// One watchdog ping.
pub fn watchdog() {
    let _ = sd_notify::notify(&[NotifyState::Watchdog]);
}

/// How often to ping: half the `WatchdogSec=` systemd asked for, or `None` without a watchdog.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|timeout| timeout / 2)
}
