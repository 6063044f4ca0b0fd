//! What every carrier reports about itself, in one shape for the status document, the page and
//! the metrics: generic fields first, then a `backend` part that only the kind of carrier named
//! in `kind` fills. Readers that do not know a backend still read everything above it.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::SystemTime;

use ipnet::IpNet;
use serde::Serialize;

use crate::state::events::IpsecProblem;

pub use crate::state::link::{DropCounts, LinkReason, LinkState};
/// WireGuard's own drops (the backend part): the data plane's type.
pub use crate::tunnel::DatagramDrops as WireGuardDrops;
/// Super-packets through WireGuard's TUN device: the data plane's type.
pub use crate::tunnel::OffloadCounts;

/// Which kind of link to the data centre runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum CarrierKind {
    /// Userspace WireGuard over a TUN device (`[tunnel]`).
    #[serde(rename = "wireguard")]
    WireGuard,
    /// No tunnel: the data centre is routed on a closed network (`[closed]`).
    #[serde(rename = "closed")]
    Closed,
    /// IKEv2/IPsec to the data centre's concentrator, through charon (`[ipsec]`).
    #[serde(rename = "ipsec")]
    Ipsec,
}

impl CarrierKind {
    /// The name in the status document (`tunnel.kind`).
    pub fn as_str(self) -> &'static str {
        match self {
            CarrierKind::WireGuard => "wireguard",
            CarrierKind::Closed => "closed",
            CarrierKind::Ipsec => "ipsec",
        }
    }
}

/// A point-in-time view of the link to the data centre.
#[derive(Debug, Clone, Serialize)]
pub struct CarrierSnapshot {
    /// Which carrier this is; says which key `backend` holds.
    pub kind: CarrierKind,
    /// The device services and the management API bind to.
    pub interface: String,
    /// The box's address on the link.
    pub address: IpNet,
    /// always_on or on_demand.
    pub policy: &'static str,
    /// Overall state: up when any link is.
    pub state: LinkState,
    /// Any always-on link in alarm (not reached for too long).
    pub alarm: bool,
    /// Per-peer (per-link) detail.
    pub peers: Vec<LinkSnapshot>,
    /// Packets dropped by the box's own packet filter (NET-8), by reason.
    pub drops: DropCounts,
    /// What only this kind of carrier knows.
    pub backend: CarrierBackend,
}

/// The carrier-specific part of [`CarrierSnapshot`], keyed by kind
/// (`{"wireguard": {...}}`).
#[derive(Debug, Clone, Serialize)]
pub enum CarrierBackend {
    /// WireGuard's own fields.
    #[serde(rename = "wireguard")]
    WireGuard(WireGuardCarrier),
    /// The closed network's own fields.
    #[serde(rename = "closed")]
    Closed(ClosedCarrier),
    /// The IPsec carrier's own fields.
    #[serde(rename = "ipsec")]
    Ipsec(IpsecCarrier),
}

/// IPsec fields of the whole carrier: renkei's view of charon.
#[derive(Debug, Clone, Serialize)]
pub struct IpsecCarrier {
    /// The VICI socket renkei talks to charon on.
    pub vici_socket: PathBuf,
    /// Whether renkei is connected to charon and has loaded the connection into it.
    pub charon_loaded: bool,
    /// Times the connection was loaded (more than one: charon restarted).
    pub loads: u64,
    /// The last error talking to charon, if the last attempt failed (English, charon's words).
    pub last_error: Option<String>,
    /// The same as a stable word (the page shows it in its language).
    pub last_error_code: Option<IpsecProblem>,
}

/// Closed-network fields of the whole carrier.
#[derive(Debug, Clone, Serialize)]
pub struct ClosedCarrier {
    /// Whether the kernel forwards IPv4 between interfaces (it must not: NET-8); `None` when
    /// it could not be read.
    pub ip_forward: Option<bool>,
}

/// WireGuard fields of the whole carrier.
#[derive(Debug, Clone, Serialize)]
pub struct WireGuardCarrier {
    /// UDP port in use.
    pub listen_port: u16,
    /// Datagrams WireGuard dropped, by reason.
    pub drops: WireGuardDrops,
    /// TUN offloads: `on (csum, tso4, ...)` or `off (why)`, in English.
    pub offloads: String,
    /// Whether TUN offloads are on (what the page shows).
    pub offloads_on: bool,
    /// Super-packets read and written with offloads on.
    pub offload_counts: OffloadCounts,
    /// Datagram reads by each socket receiving on the port (several on a box with several
    /// peers: the kernel spreads the peers over them, one core each).
    pub udp_reads_per_socket: Vec<u64>,
    /// Reads from each queue of the TUN device (as many as receive sockets).
    pub tun_reads_per_queue: Vec<u64>,
}

/// One peer (the data centre, or on a hub one facility) as every carrier reports it.
#[derive(Debug, Clone, Serialize)]
pub struct LinkSnapshot {
    /// Name from the config.
    pub name: String,
    /// Policy state.
    pub state: LinkState,
    /// Why it is in that state, in English (with the carrier's details).
    pub reason: String,
    /// Why it is in that state, as a stable word (the page translates it).
    pub reason_code: LinkReason,
    /// Always-on and not reached for longer than the alarm threshold.
    pub alarm: bool,
    /// When the peer last proved itself on this link (seconds since the Unix epoch): for
    /// WireGuard, the last completed handshake.
    #[serde(serialize_with = "crate::state::link::unix_time::serialize")]
    pub last_reached: Option<SystemTime>,
    /// Seconds since `last_reached`.
    pub last_reached_age_secs: Option<u64>,
    /// Proxied connections holding the link open.
    pub holds: usize,
    /// Bytes sent on the link to the peer.
    pub tx_bytes: u64,
    /// Bytes received on the link from the peer (authenticated only).
    pub rx_bytes: u64,
    /// What only this kind of carrier knows about the peer.
    pub backend: LinkBackend,
}

/// The carrier-specific part of [`LinkSnapshot`], keyed by kind.
#[derive(Debug, Clone, Serialize)]
pub enum LinkBackend {
    /// WireGuard's own fields.
    #[serde(rename = "wireguard")]
    WireGuard(WireGuardPeer),
    /// The closed network's own fields.
    #[serde(rename = "closed")]
    Closed(ClosedLink),
    /// The IPsec SAs with the concentrator (boxed: far larger than the other parts).
    #[serde(rename = "ipsec")]
    Ipsec(Box<IpsecLink>),
}

/// IPsec fields of the data-centre link: its IKE SA and CHILD SA as charon reports them.
#[derive(Debug, Clone, Serialize)]
pub struct IpsecLink {
    /// The concentrator's address.
    pub remote_address: IpAddr,
    /// The identity the concentrator must authenticate as.
    pub remote_id: String,
    /// The data centre's prefixes (remote traffic selectors).
    pub data_centre_prefixes: Vec<IpNet>,
    /// The IKE SA, when there is one.
    pub ike: Option<IpsecIkeSa>,
    /// Its CHILD SA (the ESP pair), when there is one; its counters are that SA's own.
    pub child: Option<IpsecChildSa>,
    /// ESP traffic since renkei started, over every CHILD SA: charon counts per SA, from zero
    /// again at each rekey, so only these totals never go backwards.
    pub total: IpsecTraffic,
    /// Why the last SA was terminated for algorithms outside the CRYPTREC profile, if it was
    /// (English, for the journal and tools).
    pub profile_violation: Option<String>,
    /// The same algorithms by charon's names, which the page shows in any language.
    pub profile_violation_names: Option<String>,
}

/// ESP traffic of the connection summed over its CHILD SAs (rekeys, reconnects, charon
/// restarts and config changes of one run), as charon counts it (inner packets).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct IpsecTraffic {
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Packets received.
    pub packets_in: u64,
    /// Packets sent.
    pub packets_out: u64,
}

/// An IKE SA as the status document shows it.
#[derive(Debug, Clone, Serialize)]
pub struct IpsecIkeSa {
    /// charon's state name (`ESTABLISHED`, `CONNECTING`, ...).
    pub state: String,
    /// The identity the concentrator authenticated as.
    pub remote_id: Option<String>,
    /// Negotiated encryption (charon's name, e.g. `AES_GCM_16`).
    pub encryption: Option<String>,
    /// Its key size in bits.
    pub key_size_bits: Option<u32>,
    /// Negotiated integrity (none with AES-GCM).
    pub integrity: Option<String>,
    /// Negotiated PRF.
    pub prf: Option<String>,
    /// Negotiated Diffie-Hellman group.
    pub dh_group: Option<String>,
    /// When it was established (seconds since the Unix epoch).
    #[serde(serialize_with = "crate::state::link::unix_time::serialize")]
    pub established: Option<SystemTime>,
    /// Seconds until charon rekeys it.
    pub rekey_in_secs: Option<u64>,
}

/// A CHILD SA as the status document shows it.
#[derive(Debug, Clone, Serialize)]
pub struct IpsecChildSa {
    /// charon's state name (`INSTALLED`, ...).
    pub state: String,
    /// Negotiated ESP encryption.
    pub encryption: Option<String>,
    /// Its key size in bits.
    pub key_size_bits: Option<u32>,
    /// The PFS group of its own key exchange, if any.
    pub dh_group: Option<String>,
    /// When it was installed or last rekeyed (seconds since the Unix epoch).
    #[serde(serialize_with = "crate::state::link::unix_time::serialize")]
    pub installed: Option<SystemTime>,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Packets received.
    pub packets_in: u64,
    /// Packets sent.
    pub packets_out: u64,
    /// When it last carried a packet in (charon's `use-in`; seconds since the Unix epoch): how
    /// an administrator sees whether the link is used, and what on-demand idles out on.
    #[serde(serialize_with = "crate::state::link::unix_time::serialize")]
    pub last_in: Option<SystemTime>,
    /// When it last carried a packet out (`use-out`).
    #[serde(serialize_with = "crate::state::link::unix_time::serialize")]
    pub last_out: Option<SystemTime>,
    /// Seconds until charon rekeys it.
    pub rekey_in_secs: Option<u64>,
    /// Seconds until it expires.
    pub expires_in_secs: Option<u64>,
    /// Local traffic selectors (the box's own address).
    pub local_ts: Vec<String>,
    /// Remote traffic selectors.
    pub remote_ts: Vec<String>,
}

impl LinkBackend {
    /// The WireGuard part, when the link is WireGuard.
    pub fn wireguard(&self) -> Option<&WireGuardPeer> {
        match self {
            LinkBackend::WireGuard(peer) => Some(peer),
            LinkBackend::Closed(_) | LinkBackend::Ipsec(_) => None,
        }
    }

    /// The IPsec part, when the link is IPsec.
    pub fn ipsec(&self) -> Option<&IpsecLink> {
        match self {
            LinkBackend::Ipsec(link) => Some(link),
            LinkBackend::WireGuard(_) | LinkBackend::Closed(_) => None,
        }
    }
}

/// Closed-network fields of the data-centre link.
#[derive(Debug, Clone, Serialize)]
pub struct ClosedLink {
    /// Where the reachability probe connects (none on a hub that does not probe).
    pub probe_endpoint: Option<SocketAddr>,
    /// The prefixes the box may dial.
    pub data_centre_prefixes: Vec<IpNet>,
    /// Probes made since the carrier (re)started.
    pub probes_sent: u64,
    /// Probes that did not connect.
    pub probes_failed: u64,
}

/// WireGuard fields of one peer.
#[derive(Debug, Clone, Serialize)]
pub struct WireGuardPeer {
    /// Base64 public key.
    pub public_key: String,
    /// Current endpoint.
    pub endpoint: Option<SocketAddr>,
    /// Allowed IPs.
    pub allowed_ips: Vec<IpNet>,
    /// Keepalive interval.
    pub persistent_keepalive_secs: Option<u16>,
    /// Whether session state (keys) exists right now.
    pub session_keys_present: bool,
    /// Datagrams sent.
    pub tx_packets: u64,
    /// Datagrams received.
    pub rx_packets: u64,
    /// Handshake initiations sent.
    pub handshake_attempts: u64,
    /// Initiations without an answer.
    pub handshake_failures: u64,
    /// Completed handshakes.
    pub handshakes_completed: u64,
}
