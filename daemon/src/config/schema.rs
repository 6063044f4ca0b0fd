//! The typed shape of a renkei configuration file.
//!
//! Only structure and defaults live here; every rule that relates one field to another (or to
//! files on disk) lives in `validate.rs`, so the schema stays readable as documentation.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::proposal::{default_esp_proposals, default_ike_proposals, EspProposal, IkeProposal};

/// A whole configuration file, as the operator writes it and `renkei check` reads it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Version and provenance; pushed configs must increase `version`.
    pub meta: Meta,
    /// Which facility this box serves and in which role.
    pub facility: Facility,
    /// Where the box keeps state and runtime files.
    #[serde(default)]
    pub paths: Paths,
    /// The WireGuard tunnel to the data centre (or, on the hub, to the facilities). A box has
    /// exactly one of this, `[closed]` and `[ipsec]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<TunnelConfig>,
    /// The closed network (leased line, IP-VPN) the box reaches the data centre on without a
    /// tunnel. A box has exactly one of this, `[tunnel]` and `[ipsec]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed: Option<ClosedConfig>,
    /// An IKEv2/IPsec connection to the data centre's existing concentrator, driven through
    /// strongSwan's charon. A box has exactly one of this, `[tunnel]` and `[closed]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipsec: Option<IpsecConfig>,
    /// The box's TLS identity and the operator CA; required as soon as a service exists.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Proxied application services, written as `[[service]]` tables (none are written when
    /// empty, so `[[service]]` text can still be appended to a serialised config).
    #[serde(default, rename = "service", skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<ServiceConfig>,
    /// The facility administrator's local status page.
    #[serde(default)]
    pub status: Option<StatusConfig>,
    /// The operator's management API, reached over the tunnel.
    #[serde(default)]
    pub management: Option<ManagementConfig>,
    /// Signed firmware updates (RAUC bundles): absent means the box takes none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<UpdateConfig>,
    /// The operator's time servers, which the box's NTP client (the image's
    /// systemd-timesyncd) reaches through the carrier; absent means the image's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<TimeConfig>,
    /// Where the box's journal goes besides its own disk: the operator's collector, reached
    /// through one of the box's outbound services; absent means it stays on the box (sealed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<LogsConfig>,
}

/// Version of the configuration; the control path refuses replays and downgrades with it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    /// Monotonic version, >= 1. A pushed config must carry a greater one than the running config.
    pub version: u64,
    /// Free text shown on the status page (what changed, ticket number).
    #[serde(default)]
    pub description: Option<String>,
    /// The box this config is for, written `box`: an identity its own TLS certificate carries
    /// (SAN DNS name, SAN URI or subject CN, matched as `operator_identities` are). A box refuses
    /// a pushed config that names another box or none (AUTH-4), so one box's signed config
    /// cannot be replayed to another; a local file may leave it out.
    #[serde(default, rename = "box")]
    pub box_identity: Option<String>,
}

/// The facility the box is installed in.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Facility {
    /// Human name, shown on the status page and in logs.
    pub name: String,
    /// Decides the tunnel policy default and which services the box may offer.
    pub role: Role,
}

/// What a box does in the regional network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The data-centre end: one peer per facility.
    Hub,
    /// A facility that discloses data (開示施設): tunnel always on, inbound services allowed.
    Disclosing,
    /// A facility that only views data (閲覧施設): tunnel on demand, outbound services only.
    Viewing,
}

impl Role {
    /// The policy a role gets when the config does not name one.
    pub fn default_policy(self) -> PolicyMode {
        match self {
            Role::Hub | Role::Disclosing => PolicyMode::AlwaysOn,
            Role::Viewing => PolicyMode::OnDemand,
        }
    }

    /// Lower-case name as written in configs and shown to people.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Hub => "hub",
            Role::Disclosing => "disclosing",
            Role::Viewing => "viewing",
        }
    }
}

/// Filesystem locations; separate per box so labs can run several daemons on one machine.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Paths {
    /// Durable state: confirmed and pending configs, generated certificates.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Runtime files: the control socket for `renkei status`.
    #[serde(default = "default_runtime_dir")]
    pub runtime_dir: PathBuf,
    /// Where the WireGuard userspace API socket `<interface>.sock` goes, for `wg show`.
    #[serde(default = "default_wireguard_socket_dir")]
    pub wireguard_socket_dir: PathBuf,
    /// journald's persistent folder, whose files the management API serves to the operator.
    #[serde(default = "default_journal_dir")]
    pub journal_dir: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            state_dir: default_state_dir(),
            runtime_dir: default_runtime_dir(),
            wireguard_socket_dir: default_wireguard_socket_dir(),
            journal_dir: default_journal_dir(),
        }
    }
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/renkei")
}
fn default_runtime_dir() -> PathBuf {
    PathBuf::from("/run/renkei")
}
fn default_journal_dir() -> PathBuf {
    PathBuf::from("/var/log/journal")
}
fn default_wireguard_socket_dir() -> PathBuf {
    PathBuf::from("/var/run/wireguard")
}

/// The WireGuard interface and its peers.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TunnelConfig {
    /// TUN interface name (at most 15 bytes).
    #[serde(default = "default_interface")]
    pub interface: String,
    /// File holding the box's base64 WireGuard private key; must be 0600 (or stricter).
    pub private_key_file: PathBuf,
    /// UDP port to listen on; 0 picks a free port (fine for boxes that only initiate).
    #[serde(default)]
    pub listen_port: u16,
    /// The box's own address inside the tunnel, with the overlay prefix (`198.19.0.10/24`).
    pub address: IpNet,
    /// MTU of the TUN device.
    #[serde(default = "default_mtu")]
    pub mtu: u16,
    /// Handshake messages (initiations and responses) handled per second before the box asks
    /// for cookies, WireGuard's defence against handshake floods; absent: sized from the peer
    /// count ([`TunnelConfig::handshakes_per_sec_in_force`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handshakes_per_sec: Option<u32>,
    /// TUN segmentation offloads (TSO/USO and GRO through a virtio-net header): fewer, larger
    /// reads and writes of the TUN device. On unless set false here or `RENKEI_TUN_OFFLOADS=off`
    /// is in the daemon's environment; a kernel that refuses them turns them off by itself.
    // The default is left out of written configs, so they read as before on older firmware.
    #[serde(default = "default_offloads", skip_serializing_if = "is_true")]
    pub offloads: bool,
    /// When the tunnel is up; defaults follow the role.
    #[serde(default)]
    pub policy: PolicyConfig,
    /// Remote ends, written as `[[tunnel.peer]]` tables.
    #[serde(default, rename = "peer")]
    pub peers: Vec<PeerConfig>,
    /// A facility's primary and backup hubs for the same prefixes (AVL-4); absent means every
    /// peer routes its own prefixes at all times.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<FailoverConfig>,
}

/// `[tunnel.failover]`: peers that stand for the same data centre prefixes, in order of
/// preference. Exactly one of them routes at a time; the box moves to the next when the active
/// one stops answering and returns to a preferred one once it has stayed healthy for the hold
/// time.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FailoverConfig {
    /// Names of `[[tunnel.peer]]` entries, most preferred first (at least two).
    pub hubs: Vec<String>,
    /// always_on: the active hub is given up after this long without an answer (a handshake
    /// or any authenticated packet). Well under the 180 s handshake alarm.
    #[serde(default = "default_failover_after_secs")]
    pub failover_after_secs: u64,
    /// How long a more preferred hub must keep answering before the box returns to it; a hub
    /// that stops answering within it starts again from zero (no flapping).
    #[serde(default = "default_fail_back_after_secs")]
    pub fail_back_after_secs: u64,
    /// always_on: a hub that has not answered for this long is sent a handshake, so that the
    /// active hub's silence and a standby hub's recovery are noticed.
    #[serde(default = "default_hub_probe_interval_secs")]
    pub probe_interval_secs: u64,
}

fn default_failover_after_secs() -> u64 {
    30
}
fn default_fail_back_after_secs() -> u64 {
    120
}
fn default_hub_probe_interval_secs() -> u64 {
    10
}

/// The smallest default of `handshakes_per_sec`, whatever the peer count: what boringtun
/// allowed before the setting existed.
pub const MIN_DEFAULT_HANDSHAKES_PER_SEC: u32 = 100;
/// Handshake messages per second the default allows per configured peer: after a hub restart
/// every facility answers the hub's greeting (a response) and may initiate on its own too.
pub const DEFAULT_HANDSHAKES_PER_SEC_PER_PEER: u32 = 2;

impl TunnelConfig {
    /// The handshake rate limit in force: the configured one, or
    /// max(`MIN_DEFAULT_HANDSHAKES_PER_SEC`, `DEFAULT_HANDSHAKES_PER_SEC_PER_PEER` x peers).
    pub fn handshakes_per_sec_in_force(&self) -> u32 {
        self.handshakes_per_sec.unwrap_or_else(|| {
            let peers = u32::try_from(self.peers.len()).unwrap_or(u32::MAX);
            peers
                .saturating_mul(DEFAULT_HANDSHAKES_PER_SEC_PER_PEER)
                .max(MIN_DEFAULT_HANDSHAKES_PER_SEC)
        })
    }
}

fn default_interface() -> String {
    "renkei0".to_string()
}
/// Leaves room for IPv6 + UDP + WireGuard overhead (80 bytes) under a 1500-byte WAN MTU.
pub const DEFAULT_MTU: u16 = 1420;
fn default_offloads() -> bool {
    true
}
fn default_mtu() -> u16 {
    DEFAULT_MTU
}

/// The box on a closed network (専用線 / IP-VPN): no tunnel, the data centre is routed on the
/// WAN. Every application byte still crosses mutual TLS; this only says where the box is and
/// what it may dial.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClosedConfig {
    /// The WAN interface on the closed network: services and the management API bind to it,
    /// as they bind to the tunnel device on a WireGuard box.
    pub interface: String,
    /// The box's own address on the closed network, with its prefix (`198.18.10.2/24`).
    /// Inbound services, the metrics listener and the management API listen on it.
    pub address: IpNet,
    /// The data centre's prefixes: the only destinations outbound services may dial.
    pub data_centre_prefixes: Vec<IpNet>,
    /// `always_on` (probe the data centre, alarm when unreachable) or `on_demand` (nothing to
    /// bring up, no probing); absent means the role's default.
    #[serde(default)]
    pub mode: Option<PolicyMode>,
    /// A data-centre endpoint (`ip:port`, inside `data_centre_prefixes`) the box opens a TCP
    /// connection to as proof that the data centre is reachable. Required on an always-on
    /// facility; the hub may leave it out (facilities dial the hub, it has nothing to bring up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_endpoint: Option<SocketAddr>,
    /// always_on: seconds between probes.
    #[serde(default = "default_probe_interval_secs")]
    pub probe_interval_secs: u64,
    /// A probe that has not connected within this many seconds failed.
    #[serde(default = "default_probe_timeout_secs")]
    pub probe_timeout_secs: u64,
    /// always_on: alarm when the data centre has not answered a probe for this many seconds.
    #[serde(default = "default_alarm_after_secs")]
    pub alarm_after_secs: u64,
}

fn default_probe_interval_secs() -> u64 {
    30
}
fn default_probe_timeout_secs() -> u64 {
    5
}
fn default_alarm_after_secs() -> u64 {
    180
}

/// The box on an IKEv2/IPsec network: charon (strongSwan) keeps the SAs, renkei loads the
/// connection into it over VICI and watches it. The box authenticates with its TLS certificate
/// and key (`[tls]`, from the operator CA and the enrolment); the concentrator must present a
/// certificate of the same CA (`tls.ca_file`) carrying `remote_id`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IpsecConfig {
    /// The device renkei creates for the box's own address (a TUN device it holds, gone with it
    /// when the carrier stops or the daemon dies): the address exists before any SA and
    /// survives charon's restarts.
    #[serde(default = "default_ipsec_interface")]
    pub interface: String,
    /// The box's own address inside the IPsec network, a host address (`198.19.0.10/32`): the
    /// CHILD SA's only local traffic selector (NET-8), where inbound services, the metrics
    /// listener and the management API listen. Never the WAN address.
    pub address: IpNet,
    /// The box's WAN address IKE and ESP (UDP 500/4500) leave from.
    pub wan_address: IpAddr,
    /// The concentrator's address.
    pub remote_address: IpAddr,
    /// The only IKE identity the concentrator may authenticate as (a name its certificate
    /// carries).
    pub remote_id: String,
    /// The box's IKE identity; absent means `meta.box`. Its TLS certificate must carry it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_id: Option<String>,
    /// The data centre's prefixes behind the concentrator (the remote traffic selectors): the
    /// only destinations outbound services may dial.
    pub data_centre_prefixes: Vec<IpNet>,
    /// IKE proposals in order of preference, from the CRYPTREC set only; absent means the
    /// profile's strongest common ones.
    #[serde(default = "default_ike_proposals")]
    pub ike_proposals: Vec<IkeProposal>,
    /// ESP proposals in order of preference (AES-GCM only); absent means the profile's default.
    #[serde(default = "default_esp_proposals")]
    pub esp_proposals: Vec<EspProposal>,
    /// `always_on` (charon starts and restarts the SA) or `on_demand` (renkei initiates it when
    /// a connection needs it and terminates it when idle); absent means the role's default.
    #[serde(default)]
    pub mode: Option<PolicyMode>,
    /// on_demand: the SAs are terminated after this long without ESP traffic either way.
    #[serde(default = "default_idle_timeout_secs")]
    pub idle_timeout_secs: u64,
    /// on_demand: how long a LAN connection may wait for the CHILD SA.
    #[serde(default = "default_connect_timeout_secs")]
    pub connect_timeout_secs: u64,
    /// on_demand: bring the SA up this often without LAN demand, so the operator's pushes and
    /// monitoring reach the box (the concentrator cannot initiate to a box behind NAT); 0
    /// disables check-ins. As `tunnel.policy.checkin_interval_secs`.
    #[serde(default = "default_checkin_interval_secs")]
    pub checkin_interval_secs: u64,
    /// on_demand: how long a check-in holds the SA up before the idle timeout may close it.
    #[serde(default = "default_checkin_window_secs")]
    pub checkin_window_secs: u64,
    /// always_on: alarm when no IKE SA has been established for this long.
    #[serde(default = "default_handshake_alarm_secs")]
    pub alarm_after_secs: u64,
    /// Where ESP is done: `libipsec` (userspace, in charon, over its `ipsec0` TUN device;
    /// for kernels without AES-GCM for XFRM) or `kernel` (XFRM).
    #[serde(default)]
    pub esp_backend: EspBackend,
    /// The device decrypted packets arrive on, which the management API binds to; absent means
    /// `ipsec0` with libipsec. Required with `esp_backend = "kernel"` (the WAN interface).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub esp_interface: Option<String>,
    /// charon's VICI socket; absent means [`DEFAULT_VICI_SOCKET`], where the image's charon
    /// unit puts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vici_socket: Option<PathBuf>,
    /// A file for charon's own log; absent means the journal only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charon_log_file: Option<PathBuf>,
    /// A backup concentrator in another data centre (AVL-4); absent means none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<IpsecFailoverConfig>,
}

/// `[ipsec.failover]`: a backup concentrator for the same data centre prefixes. The box's
/// SA goes to `remote_address` (the primary) and moves to the backup when the primary gives no
/// established SA for `failover_after_secs`; it returns once the primary has answered for
/// `fail_back_after_secs`. The same names and rules as `[tunnel.failover]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IpsecFailoverConfig {
    /// The backup concentrator's address.
    pub backup_remote_address: IpAddr,
    /// The identity the backup concentrator must authenticate as; absent means `remote_id`
    /// (both concentrators carry the same name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_remote_id: Option<String>,
    /// The active concentrator is given up after this long without an established SA.
    #[serde(default = "default_failover_after_secs")]
    pub failover_after_secs: u64,
    /// How long the primary must keep answering before the box returns to it.
    #[serde(default = "default_fail_back_after_secs")]
    pub fail_back_after_secs: u64,
    /// The standby concentrator is asked for an IKE SA (no CHILD SA) this often while it has
    /// none, so its recovery is noticed.
    #[serde(default = "default_hub_probe_interval_secs")]
    pub probe_interval_secs: u64,
}

/// Names of the two concentrators in the `hubs` status block, events and `/v1/hubs/prefer`.
pub const IPSEC_PRIMARY_HUB: &str = "primary";
/// See [`IPSEC_PRIMARY_HUB`].
pub const IPSEC_BACKUP_HUB: &str = "backup";

impl IpsecFailoverConfig {
    /// The identity the backup must carry.
    pub fn backup_id<'a>(&'a self, ipsec: &'a IpsecConfig) -> &'a str {
        self.backup_remote_id.as_deref().unwrap_or(&ipsec.remote_id)
    }
}

/// charon's VICI socket when `vici_socket` is not given: in the runtime directory of the
/// image's `renkei-charon.service`, not in renkei's own (`/run/renkei`), which systemd removes
/// whenever renkei.service stops, while charon keeps running.
pub const DEFAULT_VICI_SOCKET: &str = "/run/renkei-charon/charon.vici";

fn default_ipsec_interface() -> String {
    "renkei-ipsec".to_string()
}

/// The device libipsec's TUN is created as (charon names it itself).
pub const LIBIPSEC_DEVICE: &str = "ipsec0";

/// Where ESP is done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EspBackend {
    /// In charon (kernel-libipsec), always ESP in UDP 4500.
    #[default]
    Libipsec,
    /// In the kernel (XFRM), where it has AES-GCM.
    Kernel,
}

impl IpsecConfig {
    /// The device decrypted packets arrive on.
    pub fn esp_device(&self) -> &str {
        match (&self.esp_interface, self.esp_backend) {
            (Some(name), _) => name,
            (None, EspBackend::Libipsec) => LIBIPSEC_DEVICE,
            (None, EspBackend::Kernel) => "",
        }
    }
}

/// Always-on or on-demand, with the timers each needs.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// `always_on` or `on_demand`; absent means the role's default.
    #[serde(default)]
    pub mode: Option<PolicyMode>,
    /// on_demand: the session is dropped (keys zeroed) after this long without traffic.
    #[serde(default = "default_idle_timeout_secs")]
    pub idle_timeout_secs: u64,
    /// on_demand: how long a LAN connection may wait for the tunnel to come up.
    #[serde(default = "default_connect_timeout_secs")]
    pub connect_timeout_secs: u64,
    /// always_on: alarm when the last handshake is older than this.
    #[serde(default = "default_handshake_alarm_secs")]
    pub handshake_alarm_secs: u64,
    /// on_demand: bring the tunnel up this often without LAN demand so the operator can reach
    /// the box; 0 disables check-ins.
    #[serde(default = "default_checkin_interval_secs")]
    pub checkin_interval_secs: u64,
    /// on_demand: how long a check-in keeps the tunnel up.
    #[serde(default = "default_checkin_window_secs")]
    pub checkin_window_secs: u64,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            mode: None,
            idle_timeout_secs: default_idle_timeout_secs(),
            connect_timeout_secs: default_connect_timeout_secs(),
            handshake_alarm_secs: default_handshake_alarm_secs(),
            checkin_interval_secs: default_checkin_interval_secs(),
            checkin_window_secs: default_checkin_window_secs(),
        }
    }
}

fn default_idle_timeout_secs() -> u64 {
    300
}
fn default_connect_timeout_secs() -> u64 {
    10
}
fn default_handshake_alarm_secs() -> u64 {
    180
}
fn default_checkin_interval_secs() -> u64 {
    900
}
fn default_checkin_window_secs() -> u64 {
    60
}

/// The two tunnel policies of requirement NET-6 / NET-7.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyMode {
    /// Keep a session up at all times, with keepalives and reconnects.
    AlwaysOn,
    /// Send nothing until a LAN connection needs the tunnel; drop the session when idle.
    OnDemand,
}

impl PolicyMode {
    /// Name as written in configs.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyMode::AlwaysOn => "always_on",
            PolicyMode::OnDemand => "on_demand",
        }
    }
}

/// One WireGuard peer.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// Human name for logs and the status page (`dc`, `hospital-a`).
    pub name: String,
    /// The peer's base64 WireGuard public key.
    pub public_key: String,
    /// `host:port` or `[v6]:port`; required on facility boxes, optional on the hub.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Tunnel addresses this peer may use; also the routes to it.
    pub allowed_ips: Vec<IpNet>,
    /// Seconds between keepalives while a session is up; absent means the policy's default
    /// (25 for always_on facility boxes, none otherwise).
    #[serde(default)]
    pub persistent_keepalive_secs: Option<u16>,
}

/// The box's TLS identity and trust anchors.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain presented in both directions.
    pub certificate_file: PathBuf,
    /// PEM private key of that certificate; must be 0600 (or stricter).
    pub private_key_file: PathBuf,
    /// PEM bundle of the operator CA that signs every peer's certificate.
    pub ca_file: PathBuf,
    /// Optional PEM or DER CRL published by the operator CA.
    #[serde(default)]
    pub crl_file: Option<PathBuf>,
}

/// Direction of a proxied service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// LAN client -> box (plain TCP) -> TLS client through the tunnel.
    Outbound,
    /// Tunnel peer -> box (TLS server on the tunnel address) -> LAN server (plain TCP).
    Inbound,
}

impl Direction {
    /// Name as written in configs.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        }
    }
}

/// Lowest TLS version a service accepts. There is deliberately no value below 1.2.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
pub enum MinTls {
    /// TLS 1.2 (AES-GCM ECDHE suites only) or 1.3, for peers that cannot do 1.3.
    #[serde(rename = "1.2")]
    Tls12,
    /// TLS 1.3 only: the default.
    #[serde(rename = "1.3")]
    #[default]
    Tls13,
}

/// One proxied service.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Unique name for logs and metrics (lower-case letters, digits, `-`).
    pub name: String,
    /// outbound or inbound.
    pub direction: Direction,
    /// Where the box accepts connections: a LAN address (outbound) or the tunnel address
    /// (inbound).
    pub listen: SocketAddr,
    /// Where the box connects: an address inside the tunnel (outbound) or a LAN server
    /// (inbound), as `host:port`.
    pub target: String,
    /// outbound: the name the data-centre server's certificate must carry.
    #[serde(default)]
    pub server_name: Option<String>,
    /// inbound: client identities (SAN DNS/URI or subject CN) allowed to connect.
    #[serde(default)]
    pub allowed_identities: Vec<String>,
    /// Lowest TLS version, "1.3" (default) or "1.2".
    #[serde(default)]
    pub min_tls: MinTls,
    /// Concurrent connections beyond this are refused and logged.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// A TLS handshake that takes longer is abandoned.
    #[serde(default = "default_handshake_timeout_secs")]
    pub handshake_timeout_secs: u64,
    /// A connection with no bytes either way for this long is closed.
    #[serde(default = "default_service_idle_timeout_secs")]
    pub idle_timeout_secs: u64,
    /// Every leg of a connection is ended once data it sent stays unacknowledged (or its peer
    /// keeps its window closed, or stays silent under keepalive) this long: Linux's
    /// `TCP_USER_TIMEOUT`. Shorter finds a vanished peer sooner; too short cuts live transfers
    /// that a WAN flap under loss stalls for a minute or more.
    #[serde(default = "default_tcp_user_timeout_secs")]
    pub tcp_user_timeout_secs: u64,
}

/// `tcp_user_timeout_secs` when the service does not set it.
pub const DEFAULT_TCP_USER_TIMEOUT_SECS: u64 = 300;

fn default_max_connections() -> u32 {
    256
}
fn default_handshake_timeout_secs() -> u64 {
    10
}
fn default_service_idle_timeout_secs() -> u64 {
    600
}
fn default_tcp_user_timeout_secs() -> u64 {
    DEFAULT_TCP_USER_TIMEOUT_SECS
}

/// The local status page.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StatusConfig {
    /// LAN address of the page; plain HTTP only on loopback, HTTPS elsewhere.
    pub listen: SocketAddr,
    /// argon2id PHC string from `renkei passwd`; the password itself is never stored.
    pub admin_password_hash: String,
    /// Optional device certificate for HTTPS; a self-signed one is generated when absent.
    #[serde(default)]
    pub certificate_file: Option<PathBuf>,
    /// Key of `certificate_file`.
    #[serde(default)]
    pub private_key_file: Option<PathBuf>,
    /// Optional second listener serving only `/metrics`, on the tunnel address, for the operator.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// Client identities (as `management.operator_identities`) that may read `metrics_listen`;
    /// empty: the operator identities. Every box has a certificate of the same CA, so the CA
    /// alone would let any box read every box's metrics.
    #[serde(default)]
    pub metrics_identities: Vec<String>,
    /// Lifetime of an administrator's login session.
    #[serde(default = "default_session_ttl_secs")]
    pub session_ttl_secs: u64,
    /// Whether the administrator must log in with a second factor (a TOTP code) as well as the
    /// password (AUTH-3). Absent means off, with a warning on the page, so boxes installed
    /// before it keep working; an administrator without an enrolled factor on a box that
    /// requires one is taken to the enrolment right after the password. The factor itself is
    /// never in the config: it stays in the box's state directory.
    #[serde(default)]
    pub require_second_factor: Option<bool>,
    /// Whether `/metrics` carries series per peer (about 13 per WireGuard peer). A hub with
    /// many hundreds of facilities may switch them off: the aggregate series (peers by state,
    /// in alarm, total bytes) stay, and the facilities table on the page shows each peer.
    #[serde(default = "default_per_peer_metrics", skip_serializing_if = "is_true")]
    pub per_peer_metrics: bool,
}

fn default_per_peer_metrics() -> bool {
    true
}

fn is_true(value: &bool) -> bool {
    *value
}

impl StatusConfig {
    /// True when the second factor is required (absent counts as off).
    pub fn second_factor_required(&self) -> bool {
        self.require_second_factor == Some(true)
    }
}

fn default_session_ttl_secs() -> u64 {
    3600
}

/// The operator's management API.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ManagementConfig {
    /// Must be on the box's tunnel address: never reachable from the LAN.
    pub listen: SocketAddr,
    /// CA whose client certificates identify the operator.
    pub operator_ca_file: PathBuf,
    /// CRL issued by the operator CA: a revoked operator certificate fails the TLS handshake.
    /// Re-read when it changes on disk.
    #[serde(default)]
    pub operator_crl_file: Option<PathBuf>,
    /// Client identities (SAN DNS name, SAN URI or subject CN, matched as a service's
    /// `allowed_identities`) allowed to use this API: the operator CA also signs every box's
    /// certificate, so chaining to it alone does not make a client the operator (AUTH-2).
    pub operator_identities: Vec<String>,
    /// File with the PEM ECDSA P-256 public key that signs pushed configs (or give the key
    /// inline as `operator_signing_key`: exactly one of the two).
    #[serde(default)]
    pub operator_signing_key_file: Option<PathBuf>,
    /// The signing key inline, as PEM: a rotated key arrives this way, in a pushed config.
    #[serde(default)]
    pub operator_signing_key: Option<String>,
    /// Optional next signing key file, trusted once a config naming it is confirmed (rotation).
    #[serde(default)]
    pub next_operator_signing_key_file: Option<PathBuf>,
    /// The next signing key inline, as PEM (at most one of the two `next_` keys).
    #[serde(default)]
    pub next_operator_signing_key: Option<String>,
    /// A pushed config not confirmed within this window is rolled back.
    #[serde(default = "default_confirm_timeout_secs")]
    pub confirm_timeout_secs: u64,
    /// Confirm by itself once the tunnel and this API are healthy again after an apply.
    #[serde(default)]
    pub auto_confirm: bool,
    /// Largest pushed config accepted, in bytes; a larger body is refused with 413 before it
    /// is read. The default holds a hub with about 1900 facility peers.
    #[serde(
        default = "default_max_push_bytes",
        skip_serializing_if = "is_default_max_push_bytes"
    )]
    pub max_push_bytes: usize,
}

/// Default `management.max_push_bytes`: 256 KiB, a hub config for 1000 facilities with room.
pub const DEFAULT_MAX_PUSH_BYTES: usize = 256 * 1024;

fn default_max_push_bytes() -> usize {
    DEFAULT_MAX_PUSH_BYTES
}

fn is_default_max_push_bytes(value: &usize) -> bool {
    *value == DEFAULT_MAX_PUSH_BYTES
}

fn default_confirm_timeout_secs() -> u64 {
    120
}

/// Where the box takes its time from (docs/configuration.md, `[time]`). Certificates, the
/// access log's timestamps and the operator's view of a box all rest on its clock.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TimeConfig {
    /// NTP servers by address, in the data centre, reached through the carrier (names are not
    /// taken: setting the clock must not depend on a resolver). The box uses no public server.
    pub servers: Vec<IpAddr>,
    /// Shortest time between two polls of a server, in seconds (timesyncd's
    /// `PollIntervalMinSec`).
    #[serde(default = "default_time_poll_min_secs")]
    pub poll_min_secs: u64,
    /// Longest time between two polls once the clock is steady, in seconds
    /// (`PollIntervalMaxSec`): a step of the server's clock reaches the box within this.
    #[serde(default = "default_time_poll_max_secs")]
    pub poll_max_secs: u64,
}

/// The box's journal uploaded to the operator's `systemd-journal-remote` (docs/configuration.md,
/// `[logs]`). The image's `systemd-journal-upload` speaks TLS through GnuTLS, which cannot be
/// held to the profile, so it posts plain HTTP to a loopback listener of one of renkei's outbound
/// services, which carries it in profile TLS like any application byte (NET-1).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogsConfig {
    /// The `[[service]]` (outbound, listening on loopback) whose target is the collector.
    pub upload_service: String,
}

fn default_time_poll_min_secs() -> u64 {
    32
}

fn default_time_poll_max_secs() -> u64 {
    2048
}

/// Signed firmware updates: which bundles the box takes (docs/update.md).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateConfig {
    /// PEM file of the update CA: RAUC's keyring. A bundle must carry a signature that chains
    /// to it. Rotation: a blessed slot's own keyring replaces it (`update::keyring`).
    pub ca_file: PathBuf,
    /// RAUC's `compatible` string of this hardware and image line: a bundle naming another is
    /// refused.
    pub compatible: String,
    /// Largest bundle accepted, in bytes; larger uploads are cut off and nothing is kept.
    #[serde(default = "default_max_bundle_bytes")]
    pub max_bundle_bytes: u64,
    /// Where an incoming bundle is written while it arrives and waits for its install; absent
    /// means `update` in `paths.state_dir`. Only renkei writes here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spool_dir: Option<PathBuf>,
    /// The operator's signed instruction to take exactly this version even though it is not
    /// newer than the running firmware (a forced downgrade). It arrives in a signed config, so
    /// only the operator can give it; any other older or equal version is still refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_downgrade_to: Option<String>,
    /// How long the health check of a new slot's trial boot waits for renkei, its config, its
    /// tunnel policy and a fresh link before it gives the slot up, in seconds.
    #[serde(default = "default_health_deadline_secs")]
    pub health_deadline_secs: u64,
    /// RAUC's system configuration, whose root slot devices bound the image a bundle may
    /// carry; without the file the size check is skipped (a machine without slots).
    #[serde(default = "default_rauc_system_conf")]
    pub system_conf: PathBuf,
}

/// Default `update.health_deadline_secs`: a boot under load brings the tunnel up in seconds;
/// three minutes leave room for a slow data centre without keeping a broken slot long.
pub const DEFAULT_HEALTH_DEADLINE_SECS: u64 = 180;
fn default_health_deadline_secs() -> u64 {
    DEFAULT_HEALTH_DEADLINE_SECS
}

/// Default `update.system_conf`: where Debian's rauc reads it.
pub const DEFAULT_RAUC_SYSTEM_CONF: &str = "/etc/rauc/system.conf";
fn default_rauc_system_conf() -> PathBuf {
    PathBuf::from(DEFAULT_RAUC_SYSTEM_CONF)
}

/// Default `update.max_bundle_bytes`: a root slot's image with room to grow (the compressed
/// image is some 52 MiB).
pub const DEFAULT_MAX_BUNDLE_BYTES: u64 = 512 * 1024 * 1024;
fn default_max_bundle_bytes() -> u64 {
    DEFAULT_MAX_BUNDLE_BYTES
}

/// `update.spool_dir`'s name in `paths.state_dir` when it is not given.
pub const UPDATE_SPOOL_DIR_NAME: &str = "update";

impl Config {
    /// Where incoming bundles are spooled, when the box takes updates.
    pub fn update_spool_dir(&self) -> Option<PathBuf> {
        let update = self.update.as_ref()?;
        Some(
            update
                .spool_dir
                .clone()
                .unwrap_or_else(|| self.paths.state_dir.join(UPDATE_SPOOL_DIR_NAME)),
        )
    }

    /// charon's VICI socket: the configured one or [`DEFAULT_VICI_SOCKET`].
    pub fn vici_socket(&self) -> Option<PathBuf> {
        let ipsec = self.ipsec.as_ref()?;
        Some(
            ipsec
                .vici_socket
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_VICI_SOCKET)),
        )
    }

    /// The box's IKE identity: `ipsec.local_id`, else `meta.box`.
    pub fn ipsec_local_id(&self) -> Option<&str> {
        let ipsec = self.ipsec.as_ref()?;
        ipsec
            .local_id
            .as_deref()
            .or(self.meta.box_identity.as_deref())
    }

    /// The policy in force: the configured one or the role's default.
    pub fn policy_mode(&self) -> PolicyMode {
        let configured = match (&self.tunnel, &self.closed, &self.ipsec) {
            (Some(tunnel), _, _) => tunnel.policy.mode,
            (None, Some(closed), _) => closed.mode,
            (None, None, Some(ipsec)) => ipsec.mode,
            (None, None, None) => None,
        };
        configured.unwrap_or_else(|| self.facility.role.default_policy())
    }

    /// The service that carries the journal upload (`[logs] upload_service`), when it names
    /// one.
    pub fn log_upload_service(&self) -> Option<&ServiceConfig> {
        let logs = self.logs.as_ref()?;
        self.services.iter().find(|s| s.name == logs.upload_service)
    }

    /// The metrics listener, on an on-demand box (whose link the operator's scrapes must not
    /// hold up, NET-7).
    pub fn on_demand_metrics_listen(&self) -> Option<std::net::SocketAddr> {
        if self.policy_mode() != PolicyMode::OnDemand {
            return None;
        }
        self.status.as_ref()?.metrics_listen
    }

    /// Where the journal upload goes inside the link: its service's target, on an on-demand box
    /// (the only kind whose link the upload must not hold up, NET-7).
    pub fn on_demand_upload_target(&self) -> Option<std::net::SocketAddr> {
        if self.policy_mode() != PolicyMode::OnDemand {
            return None;
        }
        let service = self.log_upload_service()?;
        (service.direction == Direction::Outbound)
            .then(|| service.target.parse().ok())
            .flatten()
    }
}
