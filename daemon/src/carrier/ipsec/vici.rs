//! renkei's side of charon's VICI socket, over the `rsvici` crate: load the box's key and
//! certificates, load one connection built from typed settings, initiate and terminate it,
//! read its SAs and follow their up/down and rekey events.
//!
//! Everything charon sends is read into optional strings first and turned into typed values
//! here, leniently: a field charon leaves out or formats differently becomes `None` (or 0 for a
//! counter), never a panic. A command charon refuses is an error carrying its message and the
//! log lines it streamed while it worked (where NO_PROPOSAL_CHOSEN shows).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::{Stream, StreamExt, TryStreamExt};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::proposal::{EspAlgorithms, EspProposal, IkeAlgorithms, IkeProposal};

/// How long a plain request (load, list) may take before charon is taken as hung.
pub const REQUEST_TIMEOUT_SECS: u64 = 10;
/// Added to a command's own timeout (initiate, terminate) for the answer to arrive.
const ANSWER_MARGIN_SECS: u64 = 5;
/// Dead peer detection: an idle IKE SA is checked after this long; with the retransmission of
/// `charon_conf::FAST_RETRANSMIT` a vanished peer is noticed within about 10 s.
pub const DPD_DELAY_SECS: u64 = 3;

/// Why talking to charon failed.
#[derive(Debug, thiserror::Error)]
pub enum ViciError {
    /// The socket could not be opened (charon not running, wrong path).
    #[error("cannot connect to charon's VICI socket {socket}: {source}")]
    Connect {
        /// The socket path.
        socket: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The request could not be sent, or its answer not read.
    #[error("VICI {command}: {source}")]
    Transport {
        /// The VICI command.
        command: &'static str,
        /// What rsvici reported.
        source: rsvici::Error,
    },
    /// charon answered that the command failed.
    #[error("VICI {command} failed: {message}{}", log_tail(.log))]
    Refused {
        /// The VICI command.
        command: &'static str,
        /// charon's error message.
        message: String,
        /// The log lines charon streamed during the command.
        log: Vec<String>,
    },
    /// No answer in time.
    #[error("VICI {command}: no answer from charon within {timeout:?}")]
    Timeout {
        /// The VICI command.
        command: &'static str,
        /// How long it waited.
        timeout: Duration,
    },
}

fn log_tail(log: &[String]) -> String {
    match log.last() {
        Some(last) => format!(" (last log line: {last})"),
        None => String::new(),
    }
}

impl ViciError {
    /// True when the peer answered that it accepts none of the box's proposals.
    pub fn peer_refused_proposals(&self) -> bool {
        match self {
            ViciError::Refused { log, .. } => log.iter().any(|l| l.contains("NO_PROPOSAL_CHOSEN")),
            _ => false,
        }
    }
}

/// The box's private key, as charon's `load-key` takes it.
#[derive(Debug, Clone)]
pub struct PrivateKey {
    /// PEM (PKCS#8, or a PKCS#1/SEC1 key).
    pub pem: String,
}

/// Whether a certificate is the box's own (or an intermediate) or a trusted CA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateRole {
    /// An end-entity or intermediate certificate.
    EndEntity,
    /// A trust anchor.
    Authority,
}

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
    /// The CA the concentrator's certificate must chain to (PEM).
    pub remote_ca_pem: String,
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
struct ConnSection {
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
    local: AuthSection,
    remote: AuthSection,
    children: BTreeMap<String, ChildSection>,
}

impl ConnectionSettings {
    fn to_message(&self) -> BTreeMap<String, ConnSection> {
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
            local: AuthSection {
                auth: "pubkey",
                id: self.local_id.clone(),
                certs: vec![self.certificate_pem.clone()],
                cacerts: Vec::new(),
            },
            remote: AuthSection {
                auth: "pubkey",
                id: self.remote_id.clone(),
                certs: Vec::new(),
                cacerts: vec![self.remote_ca_pem.clone()],
            },
            children: BTreeMap::from([(self.name.clone(), child)]),
        };
        BTreeMap::from([(self.name.clone(), conn)])
    }
}

/// A connection to charon's VICI socket.
pub struct Vici {
    client: rsvici::Client,
}

/// The answer to a command that succeeds or fails.
#[derive(Deserialize)]
struct Outcome {
    success: Option<String>,
    errmsg: Option<String>,
}

#[derive(Deserialize)]
struct ControlLog {
    msg: Option<String>,
}

#[derive(Serialize)]
struct LoadKey<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    data: &'a str,
}

#[derive(Serialize)]
struct LoadCert<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    flag: &'static str,
    data: &'a str,
}

#[derive(Serialize)]
struct Initiate<'a> {
    child: &'a str,
    ike: &'a str,
    timeout: u64,
    #[serde(rename = "init-limits")]
    init_limits: bool,
}

#[derive(Serialize)]
struct Terminate<'a> {
    ike: &'a str,
    timeout: u64,
}

#[derive(Serialize)]
struct ListSas<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    ike: Option<&'a str>,
}

impl Vici {
    /// Connects to charon's socket.
    pub async fn connect(socket: &Path) -> Result<Vici, ViciError> {
        let client = rsvici::unix::connect(socket)
            .await
            .map_err(|source| ViciError::Connect {
                socket: socket.to_path_buf(),
                source,
            })?;
        Ok(Vici { client })
    }

    async fn command<T: Serialize>(
        &mut self,
        command: &'static str,
        message: T,
    ) -> Result<(), ViciError> {
        let timeout = Duration::from_secs(REQUEST_TIMEOUT_SECS);
        let outcome: Outcome = tokio::time::timeout(timeout, self.client.request(command, message))
            .await
            .map_err(|_| ViciError::Timeout { command, timeout })?
            .map_err(|source| ViciError::Transport { command, source })?;
        if outcome.success.as_deref() == Some("yes") {
            return Ok(());
        }
        Err(ViciError::Refused {
            command,
            message: outcome
                .errmsg
                .unwrap_or_else(|| "no reason given".to_string()),
            log: Vec::new(),
        })
    }

    /// Loads the box's private key (`load-key`).
    pub async fn load_key(&mut self, key: &PrivateKey) -> Result<(), ViciError> {
        let message = LoadKey {
            kind: "any",
            data: &key.pem,
        };
        self.command("load-key", message).await
    }

    /// Loads a certificate (`load-cert`).
    pub async fn load_cert(&mut self, pem: &str, role: CertificateRole) -> Result<(), ViciError> {
        let message = LoadCert {
            kind: "x509",
            flag: match role {
                CertificateRole::EndEntity => "none",
                CertificateRole::Authority => "ca",
            },
            data: pem,
        };
        self.command("load-cert", message).await
    }

    /// Loads (or replaces) the connection (`load-conn`). Always-on starts it at once.
    pub async fn load_conn(&mut self, settings: &ConnectionSettings) -> Result<(), ViciError> {
        self.command("load-conn", settings.to_message()).await
    }

    /// Runs a command that streams `control-log` lines until charon answers.
    async fn logged<T: Serialize>(
        &mut self,
        command: &'static str,
        message: T,
        timeout: Duration,
    ) -> Result<Vec<String>, ViciError> {
        let mut log = Vec::new();
        let stream = self
            .client
            .stream_request::<T, ControlLog>(command, "control-log", message);
        let collect = async {
            futures::pin_mut!(stream);
            while let Some(line) = stream.try_next().await? {
                if let Some(msg) = line.msg {
                    log.push(msg);
                }
            }
            Ok::<(), rsvici::Error>(())
        };
        let wait = timeout + Duration::from_secs(ANSWER_MARGIN_SECS);
        match tokio::time::timeout(wait, collect).await {
            Err(_) => Err(ViciError::Timeout {
                command,
                timeout: wait,
            }),
            Ok(Ok(())) => Ok(log),
            Ok(Err(e)) if e.is_command_failed() => Err(ViciError::Refused {
                command,
                message: e.to_string(),
                log,
            }),
            Ok(Err(source)) => Err(ViciError::Transport { command, source }),
        }
    }

    /// Brings the connection's IKE and CHILD SA up (`initiate`), waiting up to `timeout`;
    /// returns charon's log of the attempt.
    pub async fn initiate(
        &mut self,
        name: &str,
        timeout: Duration,
    ) -> Result<Vec<String>, ViciError> {
        let message = Initiate {
            child: name,
            ike: name,
            timeout: millis(timeout),
            init_limits: false,
        };
        self.logged("initiate", message, timeout).await
    }

    /// Takes the connection's IKE SA (and its CHILD SAs) down (`terminate`).
    pub async fn terminate(
        &mut self,
        name: &str,
        timeout: Duration,
    ) -> Result<Vec<String>, ViciError> {
        let message = Terminate {
            ike: name,
            timeout: millis(timeout),
        };
        self.logged("terminate", message, timeout).await
    }

    /// Every IKE SA charon has (`list-sas`).
    pub async fn list_sas(&mut self) -> Result<Vec<IkeSa>, ViciError> {
        let command = "list-sas";
        let stream = self.client.stream_request::<_, BTreeMap<String, RawIkeSa>>(
            command,
            "list-sa",
            ListSas { ike: None },
        );
        let timeout = Duration::from_secs(REQUEST_TIMEOUT_SECS);
        let events: Vec<BTreeMap<String, RawIkeSa>> =
            tokio::time::timeout(timeout, stream.try_collect())
                .await
                .map_err(|_| ViciError::Timeout { command, timeout })?
                .map_err(|source| ViciError::Transport { command, source })?;
        Ok(events
            .into_iter()
            .flat_map(|event| {
                event
                    .into_iter()
                    .map(|(name, raw)| IkeSa::from_raw(name, raw))
            })
            .collect())
    }

    /// Up/down and rekey events of every SA, until the connection closes. Each is a
    /// subscription on this connection; they end when the stream is dropped.
    pub fn events(&mut self) -> impl Stream<Item = Result<SaEvent, ViciError>> + Send + 'static {
        let streams = SaEventKind::ALL.map(|kind| {
            self.client
                .subscribe::<BTreeMap<String, EventEntry>>(kind.vici_name())
                .map(move |item| match item {
                    Ok(entries) => Ok(SaEvent::from_entries(kind, entries)),
                    Err(source) => Err(ViciError::Transport {
                        command: kind.vici_name(),
                        source,
                    }),
                })
                .boxed()
        });
        futures::stream::select_all(streams)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// An IKE SA section as charon sends it (`list-sa`, the up/down and rekey events).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawIkeSa {
    uniqueid: Option<String>,
    state: Option<String>,
    local_host: Option<String>,
    remote_host: Option<String>,
    local_id: Option<String>,
    remote_id: Option<String>,
    encr_alg: Option<String>,
    encr_keysize: Option<String>,
    integ_alg: Option<String>,
    prf_alg: Option<String>,
    dh_group: Option<String>,
    established: Option<String>,
    rekey_time: Option<String>,
    reauth_time: Option<String>,
    child_sas: Option<BTreeMap<String, RawChildSa>>,
    /// In `ike-rekey`: the SA after the rekey (the one before, `old`, is not kept).
    new: Option<Box<RawIkeSa>>,
}

/// A CHILD SA section as charon sends it.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawChildSa {
    name: Option<String>,
    uniqueid: Option<String>,
    state: Option<String>,
    encr_alg: Option<String>,
    encr_keysize: Option<String>,
    integ_alg: Option<String>,
    dh_group: Option<String>,
    bytes_in: Option<String>,
    packets_in: Option<String>,
    use_in: Option<String>,
    bytes_out: Option<String>,
    packets_out: Option<String>,
    use_out: Option<String>,
    rekey_time: Option<String>,
    life_time: Option<String>,
    install_time: Option<String>,
    local_ts: Option<Vec<String>>,
    remote_ts: Option<Vec<String>>,
    /// In `child-rekey`: the SA after the rekey (the one before, `old`, is not kept).
    new: Option<Box<RawChildSa>>,
}

fn number(value: &Option<String>) -> Option<u64> {
    value.as_deref()?.trim().parse().ok()
}

fn seconds(value: &Option<String>) -> Option<Duration> {
    number(value).map(Duration::from_secs)
}

/// The state of an IKE SA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IkeState {
    /// Authenticated and usable.
    Established,
    /// Being set up.
    Connecting,
    /// Being rekeyed.
    Rekeying,
    /// Being deleted.
    Deleting,
    /// Any other state charon names (or none).
    Other(String),
}

impl IkeState {
    fn parse(state: Option<String>) -> IkeState {
        match state.as_deref() {
            Some("ESTABLISHED") => IkeState::Established,
            Some("CONNECTING") => IkeState::Connecting,
            Some("REKEYING") | Some("REKEYED") => IkeState::Rekeying,
            Some("DELETING") | Some("DESTROYING") => IkeState::Deleting,
            _ => IkeState::Other(state.unwrap_or_default()),
        }
    }
}

/// An IKE SA.
#[derive(Debug, Clone)]
pub struct IkeSa {
    /// The connection's name.
    pub name: String,
    /// charon's unique id of this SA.
    pub unique_id: Option<u64>,
    /// Its state.
    pub state: IkeState,
    /// The box's address and port as charon sees them.
    pub local_host: Option<String>,
    /// The concentrator's address.
    pub remote_host: Option<String>,
    /// The box's identity.
    pub local_id: Option<String>,
    /// The concentrator's authenticated identity.
    pub remote_id: Option<String>,
    /// What was negotiated.
    pub algorithms: IkeAlgorithms,
    /// Time since it was established.
    pub established_ago: Option<Duration>,
    /// Time until it is rekeyed.
    pub rekey_in: Option<Duration>,
    /// Time until it is reauthenticated.
    pub reauth_in: Option<Duration>,
    /// Its CHILD SAs.
    pub children: Vec<ChildSa>,
}

/// A CHILD SA (one ESP SA pair).
#[derive(Debug, Clone)]
pub struct ChildSa {
    /// The CHILD SA's config name.
    pub name: String,
    /// charon's unique id of this SA.
    pub unique_id: Option<u64>,
    /// charon's state name (`INSTALLED`, `REKEYED`, ...).
    pub state: String,
    /// What was negotiated.
    pub algorithms: EspAlgorithms,
    /// Bytes received.
    pub bytes_in: u64,
    /// Packets received.
    pub packets_in: u64,
    /// Time since the last packet in.
    pub last_in: Option<Duration>,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Packets sent.
    pub packets_out: u64,
    /// Time since the last packet out.
    pub last_out: Option<Duration>,
    /// Time until it is rekeyed.
    pub rekey_in: Option<Duration>,
    /// Time until it expires.
    pub expires_in: Option<Duration>,
    /// Time since it was installed.
    pub installed_ago: Option<Duration>,
    /// Local traffic selectors.
    pub local_ts: Vec<String>,
    /// Remote traffic selectors.
    pub remote_ts: Vec<String>,
}

impl IkeSa {
    fn from_raw(name: String, raw: RawIkeSa) -> IkeSa {
        let children = raw
            .child_sas
            .unwrap_or_default()
            .into_iter()
            .map(|(key, child)| {
                // child-rekey nests the SA as old/new: report the new one.
                let child = match child.new {
                    Some(new) => *new,
                    None => child,
                };
                ChildSa::from_raw(key, child)
            })
            .collect();
        IkeSa {
            name,
            unique_id: number(&raw.uniqueid),
            state: IkeState::parse(raw.state),
            local_host: raw.local_host,
            remote_host: raw.remote_host,
            local_id: raw.local_id,
            remote_id: raw.remote_id,
            algorithms: IkeAlgorithms {
                encryption: raw.encr_alg,
                key_size_bits: number(&raw.encr_keysize).and_then(|b| u32::try_from(b).ok()),
                integrity: raw.integ_alg,
                prf: raw.prf_alg,
                dh_group: raw.dh_group,
            },
            established_ago: seconds(&raw.established),
            rekey_in: seconds(&raw.rekey_time),
            reauth_in: seconds(&raw.reauth_time),
            children,
        }
    }
}

impl ChildSa {
    fn from_raw(key: String, raw: RawChildSa) -> ChildSa {
        ChildSa {
            name: raw.name.unwrap_or(key),
            unique_id: number(&raw.uniqueid),
            state: raw.state.unwrap_or_default(),
            algorithms: EspAlgorithms {
                encryption: raw.encr_alg,
                key_size_bits: number(&raw.encr_keysize).and_then(|b| u32::try_from(b).ok()),
                integrity: raw.integ_alg,
                dh_group: raw.dh_group,
            },
            bytes_in: number(&raw.bytes_in).unwrap_or(0),
            packets_in: number(&raw.packets_in).unwrap_or(0),
            last_in: seconds(&raw.use_in),
            bytes_out: number(&raw.bytes_out).unwrap_or(0),
            packets_out: number(&raw.packets_out).unwrap_or(0),
            last_out: seconds(&raw.use_out),
            rekey_in: seconds(&raw.rekey_time),
            expires_in: seconds(&raw.life_time),
            installed_ago: seconds(&raw.install_time),
            local_ts: raw.local_ts.unwrap_or_default(),
            remote_ts: raw.remote_ts.unwrap_or_default(),
        }
    }
}

/// Which event charon sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaEventKind {
    /// An IKE SA came up or went down.
    IkeUpdown,
    /// A CHILD SA came up or went down.
    ChildUpdown,
    /// An IKE SA was rekeyed.
    IkeRekey,
    /// A CHILD SA was rekeyed.
    ChildRekey,
}

impl SaEventKind {
    /// Every kind renkei follows.
    pub const ALL: [SaEventKind; 4] = [
        SaEventKind::IkeUpdown,
        SaEventKind::ChildUpdown,
        SaEventKind::IkeRekey,
        SaEventKind::ChildRekey,
    ];

    /// The VICI event name.
    pub fn vici_name(self) -> &'static str {
        match self {
            SaEventKind::IkeUpdown => "ike-updown",
            SaEventKind::ChildUpdown => "child-updown",
            SaEventKind::IkeRekey => "ike-rekey",
            SaEventKind::ChildRekey => "child-rekey",
        }
    }
}

/// One entry of an event message: the `up = yes` flag, or an IKE SA section.
#[derive(Deserialize)]
#[serde(untagged)]
enum EventEntry {
    Flag(String),
    Sa(Box<RawIkeSa>),
}

/// An event about the SAs.
#[derive(Debug, Clone)]
pub struct SaEvent {
    /// Which event.
    pub kind: SaEventKind,
    /// Up (true) or down (false) for the up/down events; true for rekeys.
    pub up: bool,
    /// The IKE SAs it is about (after a rekey: the new one).
    pub sas: Vec<IkeSa>,
}

impl SaEvent {
    fn from_entries(kind: SaEventKind, entries: BTreeMap<String, EventEntry>) -> SaEvent {
        let mut up = matches!(kind, SaEventKind::IkeRekey | SaEventKind::ChildRekey);
        let mut sas = Vec::new();
        for (name, entry) in entries {
            match entry {
                EventEntry::Flag(value) if name == "up" => up = value == "yes",
                EventEntry::Flag(_) => {}
                EventEntry::Sa(raw) => {
                    let raw = match raw.new {
                        Some(new) => new,
                        None => raw,
                    };
                    sas.push(IkeSa::from_raw(name, *raw));
                }
            }
        }
        SaEvent { kind, up, sas }
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
            remote_ca_pem: "CA CERT".to_string(),
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
        assert!(contains(&message, &item("CA CERT")));
        let mut pool = settings(StartPolicy::OnDemand);
        pool.inner_address = InnerAddress::FromConcentrator;
        let message = encoded(&pool);
        assert!(contains(&message, &item("dynamic")));
        assert!(contains(&message, &item("0.0.0.0")));
    }

    fn sample_list_sa() -> Vec<u8> {
        #[derive(Serialize)]
        #[serde(rename_all = "kebab-case")]
        struct Child {
            name: &'static str,
            state: &'static str,
            encr_alg: &'static str,
            encr_keysize: &'static str,
            bytes_in: &'static str,
            packets_in: &'static str,
            use_in: &'static str,
            bytes_out: &'static str,
            packets_out: &'static str,
            life_time: &'static str,
            local_ts: Vec<&'static str>,
            remote_ts: Vec<&'static str>,
        }
        #[derive(Serialize)]
        #[serde(rename_all = "kebab-case")]
        struct Ike {
            uniqueid: &'static str,
            state: &'static str,
            remote_id: &'static str,
            encr_alg: &'static str,
            encr_keysize: &'static str,
            prf_alg: &'static str,
            dh_group: &'static str,
            established: &'static str,
            rekey_time: &'static str,
            child_sas: BTreeMap<&'static str, Child>,
        }
        let child = Child {
            name: "dc",
            state: "INSTALLED",
            encr_alg: "AES_GCM_16",
            encr_keysize: "128",
            bytes_in: "164",
            packets_in: "3",
            use_in: "0",
            bytes_out: "280",
            packets_out: "5",
            life_time: "3957",
            local_ts: vec!["198.19.0.10/32"],
            remote_ts: vec!["198.19.0.1/32"],
        };
        let ike = Ike {
            uniqueid: "1",
            state: "ESTABLISHED",
            remote_id: "hub.renkei.example",
            encr_alg: "AES_GCM_16",
            encr_keysize: "not a number",
            prf_alg: "PRF_HMAC_SHA2_256",
            dh_group: "ECP_256",
            established: "3",
            rekey_time: "13875",
            child_sas: BTreeMap::from([("dc-1", child)]),
        };
        serde_vici::to_vec(&BTreeMap::from([("dc", ike)])).expect("encodes")
    }

    #[test]
    fn net9_list_sa_reads_into_typed_sas_leniently() {
        let raw: BTreeMap<String, RawIkeSa> =
            serde_vici::from_slice(&sample_list_sa()).expect("decodes");
        let sas: Vec<IkeSa> = raw
            .into_iter()
            .map(|(name, raw)| IkeSa::from_raw(name, raw))
            .collect();
        assert_eq!(sas.len(), 1);
        let sa = &sas[0];
        assert_eq!(sa.state, IkeState::Established);
        assert_eq!(sa.remote_id.as_deref(), Some("hub.renkei.example"));
        // A malformed number is no number, not a panic.
        assert_eq!(sa.algorithms.key_size_bits, None);
        assert_eq!(sa.established_ago, Some(Duration::from_secs(3)));
        let child = &sa.children[0];
        assert_eq!((child.bytes_in, child.bytes_out), (164, 280));
        assert_eq!((child.packets_in, child.packets_out), (3, 5));
        assert_eq!(child.last_out, None);
        assert_eq!(child.expires_in, Some(Duration::from_secs(3957)));
        assert_eq!(child.local_ts, ["198.19.0.10/32"]);
        assert_eq!(child.algorithms.outside_profile(), Vec::<String>::new());
    }

    #[test]
    fn net9_events_read_the_up_flag_beside_the_sa() {
        #[derive(Serialize)]
        struct Sa {
            state: &'static str,
        }
        #[derive(Serialize)]
        struct Up {
            up: &'static str,
            dc: Sa,
        }
        let bytes = serde_vici::to_vec(&Up {
            up: "yes",
            dc: Sa {
                state: "ESTABLISHED",
            },
        })
        .expect("encodes");
        let entries: BTreeMap<String, EventEntry> =
            serde_vici::from_slice(&bytes).expect("decodes");
        let event = SaEvent::from_entries(SaEventKind::IkeUpdown, entries);
        assert!(event.up);
        assert_eq!(event.sas.len(), 1);
        assert_eq!(event.sas[0].name, "dc");
        assert_eq!(event.sas[0].state, IkeState::Established);
        // Garbage is an error, never a panic.
        assert!(serde_vici::from_slice::<BTreeMap<String, EventEntry>>(&[7, 200, 1]).is_err());
    }
}
