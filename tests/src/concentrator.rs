//! The data centre's strongSwan concentrator as an operator would configure it: a hand-written
//! `swanctl.conf` (one connection per facility), the independent peer of renkei's IPsec carrier,
//! never written by renkei's own code; and the box side's `renkei charon-conf`, which is what
//! the box image's charon unit runs with.

use std::fmt::Write as _;
use std::path::Path;

use crate::daemon::renkei_bin;

/// One facility's connection on the concentrator.
#[derive(Debug, Clone)]
pub struct FacilityConnection {
    /// The connection's (and its CHILD SA's) name in swanctl.conf.
    pub name: String,
    /// The concentrator's own WAN address (IKE and ESP in UDP 4500).
    pub local_addr: String,
    /// The facility box's WAN address.
    pub remote_addr: String,
    /// The concentrator's identity (a name its certificate carries).
    pub local_id: String,
    /// The facility box's identity, pinned: the name in its certificate.
    pub remote_id: String,
    /// The data centre's inner addresses the facility may reach (`a.b.c.d/32`).
    pub local_ts: Vec<String>,
    /// The facility box's own inner address (`a.b.c.d/32`) and nothing else (NET-8).
    pub remote_ts: String,
    /// IKE proposals in strongSwan's syntax (`aes256gcm16-prfsha384-ecp384, ...`).
    pub ike_proposals: String,
    /// ESP proposals in strongSwan's syntax.
    pub esp_proposals: String,
}

/// The profile's proposals as the lab's concentrator offers them, written out by hand:
/// AES-GCM with PRF-HMAC-SHA-384/256 on ECP-384/256 for IKE, AES-GCM with PFS for ESP.
pub const PROFILE_IKE_PROPOSALS: &str =
    "aes256gcm16-prfsha384-ecp384, aes128gcm16-prfsha256-ecp256";
/// See [`PROFILE_IKE_PROPOSALS`].
pub const PROFILE_ESP_PROPOSALS: &str = "aes256gcm16-ecp384, aes128gcm16-ecp256";

/// A `swanctl.conf` answering each of `connections` (the concentrator never initiates): the
/// certificate `own.crt` and the CA `ca.crt` of [`crate::strongswan::Charon::load_all`], ESP in
/// UDP (libipsec always encapsulates), no MOBIKE.
pub fn swanctl_conf(connections: &[FacilityConnection]) -> String {
    let mut text = String::from("connections {\n");
    for c in connections {
        let _ = write!(
            text,
            "  {name} {{
    version = 2
    local_addrs = {local_addr}
    remote_addrs = {remote_addr}
    encap = yes
    mobike = no
    proposals = {ike}
    local {{
      auth = pubkey
      certs = own.crt
      id = {local_id}
    }}
    remote {{
      auth = pubkey
      id = {remote_id}
      cacerts = ca.crt
    }}
    children {{
      {name} {{
        local_ts = {local_ts}
        remote_ts = {remote_ts}
        esp_proposals = {esp}
      }}
    }}
  }}
",
            name = c.name,
            local_addr = c.local_addr,
            remote_addr = c.remote_addr,
            ike = c.ike_proposals,
            local_id = c.local_id,
            remote_id = c.remote_id,
            local_ts = c.local_ts.join(", "),
            remote_ts = c.remote_ts,
            esp = c.esp_proposals,
        );
    }
    text.push_str("}\n");
    text
}

/// `renkei charon-conf --config <path>`: the strongswan.conf the box's charon must run with.
pub fn renkei_charon_conf(config: &Path) -> anyhow::Result<String> {
    let out = std::process::Command::new(renkei_bin()?)
        .arg("charon-conf")
        .arg("--config")
        .arg(config)
        .output()?;
    anyhow::ensure!(out.status.success(), "renkei charon-conf: {out:?}");
    Ok(String::from_utf8(out.stdout)?)
}
