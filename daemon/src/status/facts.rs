//! The facts of one box that `renkei fleet status` tabulates (`GET /v1/status` of the
//! management API): a small part of the status document, so a fleet-wide poll stays cheap and
//! never carries the access log. Both sides use this type: the box to answer, the operator's
//! tool to read the answer (which it treats as untrusted).

use serde::{Deserialize, Serialize};

use super::StatusDocument;
use crate::tls::credentials::CertRole;

/// One box's facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetFacts {
    /// `facility` of the running config.
    pub facility: String,
    /// hub, disclosing or viewing.
    pub role: String,
    /// The link to the data centre.
    pub carrier: CarrierFacts,
    /// The running config's version.
    pub config_version: u64,
    /// `confirmed` or `pending`.
    pub config_state: String,
    /// The box's own certificate that expires first: seconds since the Unix epoch; `None`
    /// when the box reports no certificate (no services, so no TLS material loaded).
    pub certificate_not_after_unix: Option<i64>,
    /// Whole days until then.
    pub certificate_days_left: Option<i64>,
    /// The running firmware's version.
    pub firmware_version: String,
    /// Whether the kernel says the clock is synchronized.
    pub clock_synchronized: Option<bool>,
    /// The box's clock when it answered (seconds since the Unix epoch).
    pub time_unix: u64,
}

/// The carrier part of [`FleetFacts`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CarrierFacts {
    /// wireguard, closed or ipsec.
    pub kind: String,
    /// always_on or on_demand.
    pub policy: String,
    /// idle, connecting, up or down.
    pub state: String,
    /// An always-on link not reached for too long.
    pub alarm: bool,
}

impl FleetFacts {
    /// The facts of `doc`.
    pub fn of(doc: &StatusDocument) -> Self {
        let text = |value: serde_json::Value| value.as_str().unwrap_or_default().to_string();
        let first_expiry = doc
            .certificates
            .iter()
            .filter(|c| c.role == CertRole::BoxChain)
            .min_by_key(|c| c.not_after_unix);
        FleetFacts {
            facility: doc.facility.clone(),
            role: doc.role.to_string(),
            carrier: CarrierFacts {
                kind: text(serde_json::to_value(doc.tunnel.kind).unwrap_or_default()),
                policy: doc.tunnel.policy.to_string(),
                state: text(serde_json::to_value(doc.tunnel.state).unwrap_or_default()),
                alarm: doc.tunnel.alarm,
            },
            config_version: doc.config.version,
            config_state: doc.config.state.to_string(),
            certificate_not_after_unix: first_expiry.map(|c| c.not_after_unix),
            certificate_days_left: first_expiry.map(|c| c.days_left),
            firmware_version: doc.firmware.version.clone(),
            clock_synchronized: doc.clock_synchronized,
            time_unix: doc.time_unix,
        }
    }
}

impl StatusDocument {
    /// The answer of `GET /v1/status`.
    pub fn fleet_facts(&self) -> serde_json::Value {
        serde_json::to_value(FleetFacts::of(self)).unwrap_or_default()
    }
}
