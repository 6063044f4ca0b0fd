//! What the daemon reports about itself: the status document shared by `renkei status`, the
//! JSON API and (later) the status page and metrics. Every field is read from the running parts;
//! nothing is a placeholder.

pub mod control;

use serde::Serialize;

use std::sync::Arc;

use tokio::sync::watch;

use crate::config::Config;
use crate::control::manager::ConfigSnapshot;
use crate::proxy::{ProxySnapshot, ProxyStatus};
use crate::tls::credentials::{CertExpiry, EXPIRY_WARNING_DAYS};
use crate::tls::CredentialStore;
use crate::tunnel::{TunnelHandle, TunnelSnapshot};

/// The status document (`renkei status --json`).
#[derive(Debug, Clone, Serialize)]
pub struct StatusDocument {
    /// Facility name.
    pub facility: String,
    /// hub, disclosing or viewing.
    pub role: &'static str,
    /// Running configuration version.
    pub config_version: u64,
    /// renkei version.
    pub version: &'static str,
    /// Seconds since the daemon started.
    pub uptime_secs: u64,
    /// The tunnel.
    pub tunnel: TunnelSnapshot,
    /// Proxied services and the recent access log; absent when the box runs no services.
    pub proxy: Option<ProxySnapshot>,
    /// Every certificate in use (box chain, operator CA) with days to expiry counted now, not
    /// at load time (NET-5: 30 days or fewer is a warning).
    pub certificates: Vec<CertExpiry>,
    /// The running config: version, signer, who pushed it, and the confirm deadline while a
    /// pushed config awaits confirmation.
    pub config_state: Option<ConfigSnapshot>,
}

/// Builds status documents from the running parts.
#[derive(Clone)]
pub struct StatusSource {
    facility: String,
    role: &'static str,
    config_version: u64,
    started: std::time::Instant,
    tunnel: TunnelHandle,
    proxy: Option<ProxyStatus>,
    tls: Option<Arc<CredentialStore>>,
    config_state: Option<watch::Receiver<ConfigSnapshot>>,
}

impl StatusSource {
    /// A source for the given config and running tunnel.
    pub fn new(config: &Config, tunnel: TunnelHandle) -> Self {
        StatusSource {
            facility: config.facility.name.clone(),
            role: config.facility.role.as_str(),
            config_version: config.meta.version,
            started: std::time::Instant::now(),
            tunnel,
            proxy: None,
            tls: None,
            config_state: None,
        }
    }

    /// Adds the config state kept by the supervisor (pushes, confirms, rollbacks).
    pub fn with_config_state(mut self, state: watch::Receiver<ConfigSnapshot>) -> Self {
        self.config_state = Some(state);
        self
    }

    /// Adds the TLS material in use, for the certificates and their expiry.
    pub fn with_tls(mut self, store: Arc<CredentialStore>) -> Self {
        self.tls = Some(store);
        self
    }

    /// Adds the running services to the documents this source builds.
    pub fn with_proxy(mut self, proxy: ProxyStatus) -> Self {
        self.proxy = Some(proxy);
        self
    }

    /// The current document.
    pub fn document(&self) -> StatusDocument {
        let config_state = self.config_state.as_ref().map(|rx| rx.borrow().clone());
        StatusDocument {
            facility: self.facility.clone(),
            role: self.role,
            config_version: config_state
                .as_ref()
                .map_or(self.config_version, |c| c.version),
            version: env!("CARGO_PKG_VERSION"),
            uptime_secs: self.started.elapsed().as_secs(),
            tunnel: self.tunnel.snapshot(),
            proxy: self.proxy.as_ref().map(ProxyStatus::snapshot),
            certificates: self.certificates(),
            config_state,
        }
    }

    fn certificates(&self) -> Vec<CertExpiry> {
        let Some(store) = &self.tls else {
            return Vec::new();
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        store
            .current()
            .expiries
            .iter()
            .map(|e| {
                let mut e = e.clone();
                e.days_left = (e.not_after_unix - now).div_euclid(86_400);
                e.warning = e.days_left <= EXPIRY_WARNING_DAYS;
                e
            })
            .collect()
    }

    /// The tunnel, for the control commands.
    pub fn tunnel(&self) -> &TunnelHandle {
        &self.tunnel
    }
}

/// A compact human summary of a status document, in the manner of `wg show`.
pub fn summary(document: &serde_json::Value) -> String {
    use std::fmt::Write as _;
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".to_string(),
        other => other.to_string(),
    };
    let mut out = String::new();
    let tunnel = &document["tunnel"];
    let _ = writeln!(
        out,
        "facility: {} ({}), config version {}",
        text(&document["facility"]),
        text(&document["role"]),
        text(&document["config_version"])
    );
    let config = &document["config_state"];
    if config.is_object() {
        let origin = match config["signer"].as_str() {
            Some(signer) => format!(
                "signed by {signer}, pushed by {}",
                text(&config["pushed_by"])
            ),
            None => "installed locally".to_string(),
        };
        let state = match config["confirm_deadline_unix"].as_u64() {
            Some(deadline) => format!(
                "PENDING: rolls back to version {} at {deadline} (unix) unless confirmed",
                text(&config["previous_version"])
            ),
            None => "confirmed".to_string(),
        };
        let _ = writeln!(out, "config: {state}; {origin}");
    }
    let _ = writeln!(
        out,
        "tunnel: {} {} on {} ({}), port {}{}",
        text(&tunnel["state"]),
        text(&tunnel["policy"]),
        text(&tunnel["interface"]),
        text(&tunnel["address"]),
        text(&tunnel["listen_port"]),
        if tunnel["alarm"] == serde_json::Value::Bool(true) {
            "  ALARM: last handshake too old"
        } else {
            ""
        }
    );
    if let Some(peers) = tunnel["peers"].as_array() {
        for peer in peers {
            let _ = writeln!(
                out,
                "\npeer: {} {}",
                text(&peer["name"]),
                text(&peer["public_key"])
            );
            let _ = writeln!(
                out,
                "  state: {} ({})",
                text(&peer["state"]),
                text(&peer["reason"])
            );
            let _ = writeln!(out, "  endpoint: {}", text(&peer["endpoint"]));
            let age = match peer["last_handshake_age_secs"].as_u64() {
                Some(secs) => format!("{secs} seconds ago"),
                None => "never".to_string(),
            };
            let _ = writeln!(out, "  latest handshake: {age}");
            let _ = writeln!(
                out,
                "  transfer: {} B received, {} B sent; handshakes {} attempted, {} failed",
                text(&peer["rx_bytes"]),
                text(&peer["tx_bytes"]),
                text(&peer["handshake_attempts"]),
                text(&peer["handshake_failures"])
            );
        }
    }
    let drops = &tunnel["drops"];
    let _ = writeln!(
        out,
        "\ndropped: {} foreign source, {} no route, {} foreign destination, {} spoofed source, {} invalid datagrams",
        text(&drops["foreign_source"]),
        text(&drops["no_route"]),
        text(&drops["foreign_destination"]),
        text(&drops["source_not_allowed"]),
        text(&drops["invalid_datagrams"])
    );
    if let Some(certificates) = document["certificates"].as_array() {
        for cert in certificates {
            let _ = writeln!(
                out,
                "certificate: {} ({}), {} days left{}",
                text(&cert["subject"]),
                text(&cert["role"]),
                text(&cert["days_left"]),
                if cert["warning"] == serde_json::Value::Bool(true) {
                    "  WARNING: renew soon"
                } else {
                    ""
                }
            );
        }
    }
    if let Some(services) = document["proxy"]["services"].as_array() {
        for service in services {
            let _ = writeln!(
                out,
                "\nservice: {} {} {} -> {}",
                text(&service["name"]),
                text(&service["direction"]),
                text(&service["listen"]),
                text(&service["target"])
            );
            let _ = writeln!(
                out,
                "  connections: {} active (max {}), {} total, {} refused, {} failed",
                text(&service["active"]),
                text(&service["max_connections"]),
                text(&service["total"]),
                text(&service["refused"]),
                text(&service["errors"])
            );
            let _ = writeln!(
                out,
                "  transfer: {} B in, {} B out",
                text(&service["bytes_in"]),
                text(&service["bytes_out"])
            );
            if !service["last_error"].is_null() {
                let _ = writeln!(out, "  last problem: {}", text(&service["last_error"]));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_lists_services_with_their_counters() {
        let document = serde_json::json!({
            "facility": "clinic", "role": "viewing", "config_version": 3,
            "tunnel": {"state": "idle", "policy": "on_demand", "interface": "renkei0",
                       "address": "198.19.0.20/24", "listen_port": 0, "alarm": false,
                       "peers": [], "drops": {}},
            "proxy": {"services": [{
                "name": "portal", "direction": "outbound", "listen": "198.18.20.1:8443",
                "target": "198.19.0.1:443", "max_connections": 256, "active": 2, "total": 9,
                "refused": 1, "errors": 0, "bytes_in": 100, "bytes_out": 2000,
                "last_error": "refused: max_connections (256) reached"
            }], "recent_connections": []}
        });
        let text = summary(&document);
        assert!(
            text.contains("service: portal outbound 198.18.20.1:8443 -> 198.19.0.1:443"),
            "{text}"
        );
        assert!(
            text.contains("connections: 2 active (max 256), 9 total, 1 refused, 0 failed"),
            "{text}"
        );
        assert!(
            text.contains("last problem: refused: max_connections (256) reached"),
            "{text}"
        );
    }
}
