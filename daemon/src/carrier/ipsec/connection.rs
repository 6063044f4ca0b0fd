//! One connection to the concentrator as renkei's config describes it, and the `load-conn`
//! message charon gets for it: pinned peer identity and CA, the profile's proposals, the box's
//! own address as the only local traffic selector (NET-8), and the start policy.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use super::proposal::{EspProposal, IkeProposal};

/// Dead peer detection: an idle IKE SA is checked after this long; with the retransmission of
/// `charon_conf::FAST_RETRANSMIT` a vanished peer is noticed within about 10 s.
pub const DPD_DELAY_SECS: u64 = 3;

/// What the concentrator's certificate chain must be (strongSwan's constraint syntax): RSA keys
/// of at least 2048 bits or ECDSA keys of at least 256 bits, every signature in the chain with
/// SHA-2 (no SHA-1: NET-5).
pub const REMOTE_AUTH: &str = "rsa-2048-sha256-sha384-sha512-ecdsa-256-sha256-sha384-sha512";

/// How the link is kept up; the same policies as the WireGuard carrier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartPolicy {
    /// Up at load and forever: restarted on DPD loss and when the peer closes it.
    AlwaysOn,
    /// Brought up by [`Vici::initiate`] when a connection needs it; nothing restarts it.
    OnDemand,
}

/// Where the box's own address inside the tunnel comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InnerAddress {
    /// A configured address the box already owns: the CHILD SA's local side is this one host.
    Configured(IpAddr),
    /// A virtual IP the concentrator assigns from a pool (IPv4).
    FromConcentrator,
}

/// One connection to the concentrator, as renkei's config describes it.
#[derive(Debug, Clone)]
pub struct ConnectionSettings {
    /// Name of the connection and of its one CHILD SA.
    pub name: String,
    /// The box's WAN address IKE runs from.
    pub local_address: IpAddr,
    /// The concentrator's address.
    pub remote_address: IpAddr,
    /// The box's IKE identity (its certificate's subject alternative name).
    pub local_id: String,
    /// The only identity the concentrator may authenticate as.
    pub remote_id: String,
    /// The box's certificate (PEM), sent to the concentrator.
    pub certificate_pem: String,
    /// The CAs the concentrator's certificate may chain to (PEM each): every certificate of
    /// the CA file, so an operator rolling its CA over can list the old and the new one.
    pub remote_ca_pems: Vec<String>,
    /// IKE proposals, in order of preference.
    pub ike_proposals: Vec<IkeProposal>,
    /// ESP proposals, in order of preference.
    pub esp_proposals: Vec<EspProposal>,
    /// The box's own address in the tunnel: the only local traffic selector (NET-8).
    pub inner_address: InnerAddress,
    /// The data centre's prefixes behind the concentrator.
    pub remote_prefixes: Vec<IpNet>,
    /// Always-on or on-demand.
    pub policy: StartPolicy,
}

#[derive(Serialize)]
struct AuthSection {
    auth: &'static str,
    id: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    certs: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    cacerts: Vec<String>,
}

#[derive(Serialize)]
struct ChildSection {
    local_ts: Vec<String>,
    remote_ts: Vec<String>,
    esp_proposals: Vec<String>,
    mode: &'static str,
    start_action: &'static str,
    dpd_action: &'static str,
    close_action: &'static str,
}

#[derive(Serialize)]
pub(super) struct ConnSection {
    version: &'static str,
    local_addrs: Vec<String>,
    remote_addrs: Vec<String>,
    /// libipsec sends ESP in UDP always; the concentrator must see it so.
    encap: bool,
    mobike: bool,
    unique: &'static str,
    proposals: Vec<String>,
    keyingtries: u32,
    dpd_delay: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    vips: Vec<String>,
    /// RFC 6023: `force` for the standby probe, an IKE SA without CHILD SA.
    #[serde(skip_serializing_if = "Option::is_none")]
    childless: Option<&'static str>,
    local: AuthSection,
    remote: AuthSection,
    children: BTreeMap<String, ChildSection>,
}

impl ConnectionSettings {
    pub(super) fn to_message(&self) -> BTreeMap<String, ConnSection> {
        let (start_action, dpd_action, close_action, keyingtries) = match self.policy {
            StartPolicy::AlwaysOn => ("start", "restart", "start", 0),
            StartPolicy::OnDemand => ("none", "clear", "none", 1),
        };
        let (local_ts, vips) = match self.inner_address {
            InnerAddress::Configured(address) => {
                (vec![IpNet::from(address).to_string()], Vec::new())
            }
            InnerAddress::FromConcentrator => {
                (vec!["dynamic".to_string()], vec!["0.0.0.0".to_string()])
            }
        };
        let child = ChildSection {
            local_ts,
            remote_ts: self.remote_prefixes.iter().map(IpNet::to_string).collect(),
            esp_proposals: self
                .esp_proposals
                .iter()
                .map(EspProposal::to_strongswan)
                .collect(),
            mode: "tunnel",
            start_action,
            dpd_action,
            close_action,
        };
        let conn = ConnSection {
            version: "2",
            local_addrs: vec![self.local_address.to_string()],
            remote_addrs: vec![self.remote_address.to_string()],
            encap: true,
            mobike: false,
            unique: "replace",
            proposals: self
                .ike_proposals
                .iter()
                .map(IkeProposal::to_strongswan)
                .collect(),
            keyingtries,
            dpd_delay: format!("{DPD_DELAY_SECS}s"),
            vips,
            childless: None,
            local: AuthSection {
                auth: "pubkey",
                id: self.local_id.clone(),
                certs: vec![self.certificate_pem.clone()],
                cacerts: Vec::new(),
            },
            remote: AuthSection {
                auth: REMOTE_AUTH,
                id: self.remote_id.clone(),
                certs: Vec::new(),
                cacerts: self.remote_ca_pems.clone(),
            },
            children: BTreeMap::from([(self.name.clone(), child)]),
        };
        BTreeMap::from([(self.name.clone(), conn)])
    }

    /// The standby probe of a backup concentrator group (AVL-4): the same peer, identity and
    /// proposals under `name`, but an IKE SA alone (RFC 6023 childless), no CHILD SA, tried
    /// once per initiation: it proves the concentrator answers and authenticates without
    /// installing a second set of ESP policies for the same prefixes beside the active SA's.
    /// Dead peer detection removes it when the concentrator goes away.
    pub(super) fn to_probe_message(&self, name: &str) -> BTreeMap<String, ConnSection> {
        let mut message = self.to_message();
        let Some(mut conn) = message.remove(&self.name) else {
            return message;
        };
        conn.children.clear();
        conn.vips.clear();
        conn.keyingtries = 1;
        conn.childless = Some("force");
        BTreeMap::from([(name.to_string(), conn)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::carrier::ipsec::proposal::{default_esp_proposals, default_ike_proposals};

    fn settings(policy: StartPolicy) -> ConnectionSettings {
        ConnectionSettings {
            name: "dc".to_string(),
            local_address: "198.18.0.10".parse().expect("address"),
            remote_address: "198.18.0.1".parse().expect("address"),
            local_id: "hospital.renkei.example".to_string(),
            remote_id: "hub.renkei.example".to_string(),
            certificate_pem: "BOX CERT".to_string(),
            remote_ca_pems: vec!["CA CERT".to_string(), "NEXT CA CERT".to_string()],
            ike_proposals: default_ike_proposals(),
            esp_proposals: default_esp_proposals(),
            inner_address: InnerAddress::Configured("198.19.0.10".parse().expect("address")),
            remote_prefixes: vec!["198.19.0.1/32".parse().expect("prefix")],
            policy,
        }
    }

    /// The VICI message decoded back into sections, to look at.
    fn encoded(settings: &ConnectionSettings) -> Vec<u8> {
        serde_vici::to_vec(&settings.to_message()).expect("encodes")
    }

    fn contains(haystack: &[u8], needle: &str) -> bool {
        haystack
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
    }

    /// A key = value pair as VICI encodes it.
    fn pair(key: &str, value: &str) -> String {
        let mut out = String::from('\u{3}');
        out.push(key.len() as u8 as char);
        out.push_str(key);
        out.push('\0');
        out.push(value.len() as u8 as char);
        out.push_str(value);
        out
    }

    /// A list item as VICI encodes it.
    fn item(value: &str) -> String {
        let mut out = String::from("\u{5}\0");
        out.push(value.len() as u8 as char);
        out.push_str(value);
        out
    }

    #[test]
    fn net6_always_on_starts_restarts_and_retries_forever() {
        let message = encoded(&settings(StartPolicy::AlwaysOn));
        for expected in [
            pair("start_action", "start"),
            pair("dpd_action", "restart"),
            pair("close_action", "start"),
            pair("keyingtries", "0"),
            pair("dpd_delay", "3s"),
            pair("encap", "yes"),
            pair("unique", "replace"),
        ] {
            assert!(contains(&message, &expected), "{expected:?}");
        }
    }

    #[test]
    fn net7_on_demand_waits_for_initiate() {
        let message = encoded(&settings(StartPolicy::OnDemand));
        for expected in [
            pair("start_action", "none"),
            pair("close_action", "none"),
            pair("keyingtries", "1"),
        ] {
            assert!(contains(&message, &expected), "{expected:?}");
        }
    }

    #[test]
    fn net8_net10_the_local_selector_is_the_box_alone_and_proposals_are_the_profile() {
        let message = encoded(&settings(StartPolicy::AlwaysOn));
        assert!(contains(&message, "\u{4}\u{8}local_ts"));
        assert!(contains(&message, &item("198.19.0.10/32")));
        assert!(contains(&message, &item("198.19.0.1/32")));
        assert!(contains(&message, &item("aes256gcm16-prfsha384-ecp384")));
        assert!(contains(&message, &item("aes128gcm16-ecp256")));
        assert!(contains(&message, &pair("id", "hub.renkei.example")));
        assert!(contains(&message, &pair("auth", REMOTE_AUTH)));
        // Every CA of the CA file is one the concentrator may chain to.
        assert!(contains(&message, &item("CA CERT")));
        assert!(contains(&message, &item("NEXT CA CERT")));
        let mut pool = settings(StartPolicy::OnDemand);
        pool.inner_address = InnerAddress::FromConcentrator;
        let message = encoded(&pool);
        assert!(contains(&message, &item("dynamic")));
        assert!(contains(&message, &item("0.0.0.0")));
    }

    #[test]
    fn avl4_the_standby_probe_is_an_ike_sa_alone_to_the_same_concentrator() {
        let probe = settings(StartPolicy::AlwaysOn).to_probe_message("dc-probe");
        let message = serde_vici::to_vec(&probe).expect("encodes");
        assert!(contains(&message, &pair("childless", "force")));
        assert!(contains(&message, &pair("keyingtries", "1")));
        assert!(contains(&message, &item("198.18.0.1")));
        assert!(contains(&message, &pair("id", "hub.renkei.example")));
        assert!(
            !contains(&message, "local_ts") && !contains(&message, "esp_proposals"),
            "no CHILD SA: no second set of ESP policies"
        );
        assert!(probe.contains_key("dc-probe"));
    }
}
