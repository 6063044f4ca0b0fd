//! The health conditions a new slot must meet on its trial boot before it is kept, read from
//! the daemon's local status interface (the control socket `renkei status --json` reads; the
//! caller hands in the asking, as the socket's client sits above this module):
//!
//! 1. renkei answers on its socket (it serves the socket only once it has told systemd READY);
//! 2. it runs a configuration (not the unenrolled daemon);
//! 3. its tunnel (carrier) policy runs;
//! 4. for an always-on box, the link to the data centre proved itself in this boot: a WireGuard
//!    handshake newer than the boot's start, an established (installed) IPsec CHILD SA, or, on
//!    a closed network, the carrier up. A hub's peers are the facilities, whose links say
//!    nothing about the hub's own firmware: a hub needs 1 to 3 only.
//!
//! The conditions are polled until they all hold or the deadline passes; the answer on failure
//! names the condition that was still missing.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    /// A handshake must be newer than this to count as fresh.
    pub fresh_since: SystemTime,
    /// How long the conditions may take.
    pub deadline: Duration,
}

/// When this boot started (now minus the kernel's uptime); now when it cannot be read.
pub fn boot_started() -> SystemTime {
    let now = SystemTime::now();
    std::fs::read_to_string(UPTIME_FILE)
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse::<f64>().ok())
        .filter(|secs| secs.is_finite() && *secs >= 0.0)
        .and_then(|secs| now.checked_sub(Duration::from_secs_f64(secs)))
        .unwrap_or(now)
}

impl HealthCheck {
    /// Waits until every condition holds (`Ok`), or says which one still did not when the
    /// deadline passed. `ask` asks the daemon for its status document (one line of JSON, or
    /// `error: ...`), blocking.
    pub async fn wait<A>(&self, ask: A) -> Result<(), String>
    where
        A: Fn() -> std::io::Result<String> + Clone + Send + 'static,
    {
        let give_up = tokio::time::Instant::now() + self.deadline;
        let fresh_since = unix_secs(self.fresh_since);
        loop {
            let missing = match ask_status(ask.clone()).await {
                Ok(document) => match judge(&document, fresh_since) {
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

/// Whether a status document shows a healthy box; else the first condition missing.
pub fn judge(document: &Value, fresh_since_unix: u64) -> Result<(), String> {
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
            let fresh = peers.iter().any(|peer| {
                peer["last_reached"]
                    .as_u64()
                    .is_some_and(|at| at >= fresh_since_unix)
            });
            fresh.then_some(()).ok_or_else(|| {
                format!("no fresh WireGuard handshake with the data centre (none since {fresh_since_unix}, this boot's start)")
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

fn unix_secs(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn wireguard(last_reached: Option<u64>) -> Value {
        json!({
            "role": "disclosing",
            "config": {"version": 3},
            "tunnel": {"kind": "wireguard", "policy": "always_on", "state": "up",
                       "peers": [{"name": "dc", "last_reached": last_reached}]}
        })
    }

    #[test]
    fn avl5_health_needs_a_loaded_config_a_running_policy_and_a_fresh_link() {
        assert_eq!(judge(&wireguard(Some(1000)), 1000), Ok(()));
        let stale = judge(&wireguard(Some(999)), 1000).expect_err("stale");
        assert!(stale.contains("no fresh WireGuard handshake"), "{stale}");
        assert!(judge(&wireguard(None), 1000).is_err());

        let unenrolled = json!({"enrolled": false});
        assert!(judge(&unenrolled, 0)
            .expect_err("unenrolled")
            .contains("unenrolled"));

        let mut on_demand = wireguard(None);
        on_demand["tunnel"]["policy"] = "on_demand".into();
        assert_eq!(
            judge(&on_demand, 1000),
            Ok(()),
            "an on-demand box has no link to wait for"
        );
        let mut hub = wireguard(None);
        hub["role"] = "hub".into();
        assert_eq!(judge(&hub, 1000), Ok(()));
        let mut no_policy = wireguard(Some(1000));
        no_policy["tunnel"]["policy"] = Value::Null;
        assert!(judge(&no_policy, 0).expect_err("policy").contains("policy"));

        let ipsec = |state: &str| {
            json!({"role": "disclosing", "config": {"version": 1},
                   "tunnel": {"kind": "ipsec", "policy": "always_on",
                              "peers": [{"backend": {"ipsec": {"child": {"state": state}}}}]}})
        };
        assert_eq!(judge(&ipsec("INSTALLED"), 0), Ok(()));
        assert!(judge(&ipsec("INSTALLING"), 0)
            .expect_err("no SA")
            .contains("CHILD SA"));

        let closed = |state: &str| {
            json!({"role": "disclosing", "config": {"version": 1},
                   "tunnel": {"kind": "closed", "policy": "always_on", "state": state, "peers": []}})
        };
        assert_eq!(judge(&closed("up"), 0), Ok(()));
        assert!(judge(&closed("down"), 0).is_err());
    }
}
