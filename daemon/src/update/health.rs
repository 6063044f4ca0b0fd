//! The health conditions a new slot must meet on its trial boot before it is kept, read from
//! the daemon's local status interface (the control socket `renkei status --json` reads; the
//! caller hands in the asking, as the socket's client sits above this module):
//!
//! 1. renkei answers on its socket (it serves the socket only once it has told systemd READY);
//! 2. it runs a configuration (not the unenrolled daemon);
//! 3. its tunnel (carrier) policy runs;
//! 4. for an always-on box, the link to the data centre proved itself in this boot: a WireGuard
//!    handshake younger than the boot (its age, on the monotonic clock, within the kernel's
//!    uptime: the wall clock is stepped at boot by the first time sync), an established
//!    (installed) IPsec CHILD SA, or, on a closed network, the carrier up. A hub's peers are the facilities, whose links say
//!    nothing about the hub's own firmware: a hub needs 1 to 3 only.
//!
//! The conditions are polled until they all hold or the deadline passes; the answer on failure
//! names the condition that was still missing.

use std::time::{Duration, Instant};

use serde_json::Value;

/// How often the conditions are looked at again.
pub const HEALTH_POLL_INTERVAL_MILLIS: u64 = 500;
/// Longest wait for one answer of the daemon's socket.
pub const STATUS_ANSWER_TIMEOUT_SECS: u64 = 10;
/// The kernel's uptime, to find when this boot started.
pub const UPTIME_FILE: &str = "/proc/uptime";

/// What the health check waits for.
#[derive(Debug, Clone)]
pub struct HealthCheck {
    /// Since when a handshake counts as fresh.
    pub fresh_since: FreshSince,
    /// How long the conditions may take.
    pub deadline: Duration,
}

/// Since when a handshake counts as fresh, on the monotonic clock: a handshake's age is the
/// daemon's monotonic one, so a step of the wall clock (the first time sync of a box that
/// booted with a wrong date, either way) can neither hide this boot's handshake nor pass an
/// older one off as fresh.
#[derive(Debug, Clone, Copy)]
pub enum FreshSince {
    /// This boot's start: the kernel's uptime, read at each look.
    BootStart,
    /// A moment of this process (a test's start).
    Instant(Instant),
}

impl FreshSince {
    /// How old a handshake may be now and still count; `started` is when the check began,
    /// the fallback when the uptime cannot be read.
    fn window(&self, started: Instant) -> Duration {
        match self {
            FreshSince::BootStart => uptime().unwrap_or_else(|| started.elapsed()),
            FreshSince::Instant(since) => since.elapsed(),
        }
    }
}

/// The kernel's uptime (CLOCK_BOOTTIME, which a step of the wall clock does not move).
fn uptime() -> Option<Duration> {
    std::fs::read_to_string(UPTIME_FILE)
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse::<f64>().ok())
        .filter(|secs| secs.is_finite() && *secs >= 0.0)
        .map(Duration::from_secs_f64)
}

impl HealthCheck {
    /// Waits until every condition holds (`Ok`), or says which one still did not when the
    /// deadline passed. `ask` asks the daemon for its status document (one line of JSON, or
    /// `error: ...`), blocking.
    pub async fn wait<A>(&self, ask: A) -> Result<(), String>
    where
        A: Fn() -> std::io::Result<String> + Clone + Send + 'static,
    {
        let started = Instant::now();
        let give_up = tokio::time::Instant::now() + self.deadline;
        loop {
            let missing = match ask_status(ask.clone()).await {
                Ok(document) => match judge(&document, self.fresh_since.window(started)) {
                    Ok(()) => return Ok(()),
                    Err(missing) => missing,
                },
                Err(unreachable) => unreachable,
            };
            if tokio::time::Instant::now() >= give_up {
                return Err(format!(
                    "not healthy within {} s: {missing}",
                    self.deadline.as_secs()
                ));
            }
            tracing::debug!(missing = %missing, "waiting for the health conditions");
            tokio::time::sleep(Duration::from_millis(HEALTH_POLL_INTERVAL_MILLIS)).await;
        }
    }
}

/// The daemon's status document, or why it gave none.
async fn ask_status<A>(ask: A) -> Result<Value, String>
where
    A: Fn() -> std::io::Result<String> + Send + 'static,
{
    let asking = tokio::task::spawn_blocking(ask);
    let answer = tokio::time::timeout(Duration::from_secs(STATUS_ANSWER_TIMEOUT_SECS), asking)
        .await
        .map_err(|_| "renkei does not answer on its control socket".to_string())?
        .map_err(|e| format!("asking renkei failed: {e}"))?
        .map_err(|e| format!("renkei is not running or not ready: {e}"))?;
    if let Some(error) = answer.strip_prefix("error: ") {
        return Err(format!("renkei answered an error: {error}"));
    }
    serde_json::from_str(&answer).map_err(|e| format!("renkei answered no status document: {e}"))
}

/// Whether a status document shows a healthy box; else the first condition missing. A
/// WireGuard handshake is fresh when its age is at most `fresh_within`.
pub fn judge(document: &Value, fresh_within: Duration) -> Result<(), String> {
    if document.get("enrolled") == Some(&Value::Bool(false)) {
        return Err("renkei runs no configuration (unenrolled)".into());
    }
    if !document["config"]["version"].is_u64() {
        return Err("renkei shows no loaded configuration".into());
    }
    let tunnel = &document["tunnel"];
    let policy = tunnel["policy"].as_str().unwrap_or_default();
    if !matches!(policy, "always_on" | "on_demand") {
        return Err("the tunnel policy is not running".into());
    }
    if policy != "always_on" || document["role"] == "hub" {
        return Ok(());
    }
    let peers = tunnel["peers"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    match tunnel["kind"].as_str().unwrap_or_default() {
        "wireguard" => {
            // Whole seconds both: the age is rounded down by the daemon, the window up.
            let within = fresh_within.as_secs() + u64::from(fresh_within.subsec_nanos() > 0);
            let fresh = peers.iter().any(|peer| {
                peer["last_reached_age_secs"]
                    .as_u64()
                    .is_some_and(|age| age <= within)
            });
            fresh.then_some(()).ok_or_else(|| {
                format!("no fresh WireGuard handshake with the data centre (none in the last {within} s)")
            })
        }
        "ipsec" => {
            let established = peers
                .iter()
                .any(|peer| peer["backend"]["ipsec"]["child"]["state"] == "INSTALLED");
            established
                .then_some(())
                .ok_or_else(|| "no IPsec CHILD SA established with the data centre".to_string())
        }
        "closed" => (tunnel["state"] == "up")
            .then_some(())
            .ok_or_else(|| "the closed-network carrier is not up".to_string()),
        other => Err(format!("unknown carrier kind {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// An always-on WireGuard box whose peer's last handshake was `age` seconds ago (monotonic)
    /// and, by the wall clock, at `wall` (unix seconds).
    fn wireguard(age: Option<u64>, wall: Option<u64>) -> Value {
        json!({
            "role": "disclosing",
            "config": {"version": 3},
            "tunnel": {"kind": "wireguard", "policy": "always_on", "state": "up",
                       "peers": [{"name": "dc", "last_reached": wall,
                                  "last_reached_age_secs": age}]}
        })
    }

    const BOOT: Duration = Duration::from_secs(1000);

    #[test]
    fn avl5_health_needs_a_loaded_config_a_running_policy_and_a_fresh_link() {
        assert_eq!(
            judge(&wireguard(Some(1000), Some(1_800_000_000)), BOOT),
            Ok(())
        );
        let stale = judge(&wireguard(Some(1001), Some(1_800_000_000)), BOOT).expect_err("stale");
        assert!(stale.contains("no fresh WireGuard handshake"), "{stale}");
        assert!(judge(&wireguard(None, None), BOOT).is_err());
        assert_eq!(
            judge(
                &wireguard(Some(3), Some(1_800_000_000)),
                Duration::from_millis(2_500)
            ),
            Ok(()),
            "whole seconds: a window of 2.5 s takes an age of 3 (rounded down from up to 3.99)"
        );

        let unenrolled = json!({"enrolled": false});
        assert!(judge(&unenrolled, BOOT)
            .expect_err("unenrolled")
            .contains("unenrolled"));

        let mut on_demand = wireguard(None, None);
        on_demand["tunnel"]["policy"] = "on_demand".into();
        assert_eq!(
            judge(&on_demand, BOOT),
            Ok(()),
            "an on-demand box has no link to wait for"
        );
        let mut hub = wireguard(None, None);
        hub["role"] = "hub".into();
        assert_eq!(judge(&hub, BOOT), Ok(()));
        let mut no_policy = wireguard(Some(1), Some(1_800_000_000));
        no_policy["tunnel"]["policy"] = Value::Null;
        assert!(judge(&no_policy, BOOT)
            .expect_err("policy")
            .contains("policy"));

        let ipsec = |state: &str| {
            json!({"role": "disclosing", "config": {"version": 1},
                   "tunnel": {"kind": "ipsec", "policy": "always_on",
                              "peers": [{"backend": {"ipsec": {"child": {"state": state}}}}]}})
        };
        assert_eq!(judge(&ipsec("INSTALLED"), BOOT), Ok(()));
        assert!(judge(&ipsec("INSTALLING"), BOOT)
            .expect_err("no SA")
            .contains("CHILD SA"));

        let closed = |state: &str| {
            json!({"role": "disclosing", "config": {"version": 1},
                   "tunnel": {"kind": "closed", "policy": "always_on", "state": state, "peers": []}})
        };
        assert_eq!(judge(&closed("up"), BOOT), Ok(()));
        assert!(judge(&closed("down"), BOOT).is_err());
    }

    /// INT-2: a box without a battery-backed clock boots in 1970 (or at its image's build
    /// date) and its first time sync steps the wall clock by years; an administrator may set
    /// it back. Neither decides the trial boot: a handshake of this boot is fresh whatever
    /// its wall-clock time says, and one older than the boot is not, however recent its wall
    /// clock claims it is.
    #[test]
    fn int2_avl5_a_wall_clock_step_neither_fails_nor_passes_the_health_check() {
        let epoch_boot = wireguard(Some(5), Some(20));
        assert_eq!(judge(&epoch_boot, BOOT), Ok(()), "handshake at 1970 + 20 s");
        let stepped_back = wireguard(Some(5), Some(1_700_000_000 - 3 * 86_400));
        assert_eq!(judge(&stepped_back, BOOT), Ok(()), "wall clock 3 days back");
        let older_than_the_boot = wireguard(Some(5_000), Some(4_102_444_800));
        assert!(
            judge(&older_than_the_boot, BOOT).is_err(),
            "a handshake before this boot, its wall clock in 2100"
        );
    }

    #[test]
    fn avl5_the_uptime_window_grows_with_the_boot_and_a_test_counts_from_its_start() {
        let started = Instant::now();
        let boot = FreshSince::BootStart.window(started);
        assert!(boot > Duration::ZERO, "this machine has been up a while");
        let since = FreshSince::Instant(started).window(started);
        assert!(since < Duration::from_secs(60), "{since:?}");
    }
}
