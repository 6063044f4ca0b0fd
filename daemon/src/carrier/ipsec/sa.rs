//! The SAs charon reports (`list-sa`) and its up/down and rekey events, read into typed values.
//! Every field arrives as an optional string and is converted leniently: a field charon leaves
//! out or formats differently becomes `None` (or 0 for a counter), never a panic.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::proposal::{EspAlgorithms, IkeAlgorithms};

/// An IKE SA section as charon sends it (`list-sa`, the up/down and rekey events).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(super) struct RawIkeSa {
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
    /// In `ike-rekey`: the SA after the rekey.
    new: Option<Box<RawIkeSa>>,
    /// In `ike-rekey`: the SA before the rekey (its CHILD SAs' last counters).
    old: Option<Box<RawIkeSa>>,
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
    /// In `child-rekey`: the SA after the rekey.
    new: Option<Box<RawChildSa>>,
    /// In `child-rekey`: the SA before the rekey, with its counters at the rekey: what it
    /// carried since renkei last listed it would otherwise be lost to renkei's totals.
    old: Option<Box<RawChildSa>>,
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

    /// The state as charon names it (`ESTABLISHED`, ...): what the status document, the
    /// metrics and `renkei status` show (docs/api.md), not Rust's `Debug` spelling.
    pub fn charon_name(&self) -> &str {
        match self {
            IkeState::Established => "ESTABLISHED",
            IkeState::Connecting => "CONNECTING",
            IkeState::Rekeying => "REKEYING",
            IkeState::Deleting => "DELETING",
            IkeState::Other(name) => name,
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
    pub(super) fn from_raw(name: String, raw: RawIkeSa) -> IkeSa {
        let mut children = Vec::new();
        for (key, mut child) in raw.child_sas.unwrap_or_default() {
            // child-rekey nests the SAs as old/new: both, the old one first.
            match (child.old.take(), child.new.take()) {
                (None, None) => children.push(ChildSa::from_raw(key, child)),
                (old, new) => children.extend(
                    old.into_iter()
                        .chain(new)
                        .map(|sa| ChildSa::from_raw(key.clone(), *sa)),
                ),
            }
        }
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
pub(super) enum EventEntry {
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
    /// The IKE SAs it is about (after an IKE rekey: the new one, then the old one; after a
    /// CHILD rekey the IKE SA lists the old CHILD SA before the new one).
    pub sas: Vec<IkeSa>,
}

impl SaEvent {
    pub(super) fn from_entries(
        kind: SaEventKind,
        entries: BTreeMap<String, EventEntry>,
    ) -> SaEvent {
        let mut up = matches!(kind, SaEventKind::IkeRekey | SaEventKind::ChildRekey);
        let mut sas = Vec::new();
        for (name, entry) in entries {
            match entry {
                EventEntry::Flag(value) if name == "up" => up = value == "yes",
                EventEntry::Flag(_) => {}
                EventEntry::Sa(mut raw) => match (raw.new.take(), raw.old.take()) {
                    (None, None) => sas.push(IkeSa::from_raw(name, *raw)),
                    (new, old) => sas.extend(
                        new.into_iter()
                            .chain(old)
                            .map(|sa| IkeSa::from_raw(name.clone(), *sa)),
                    ),
                },
            }
        }
        SaEvent { kind, up, sas }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;

    /// The status document shows the IKE state in charon's words, as documented, whatever it is.
    #[test]
    fn net9_ike_state_is_shown_as_charon_names_it() {
        for name in [
            "ESTABLISHED",
            "CONNECTING",
            "REKEYING",
            "DELETING",
            "PASSIVE",
        ] {
            assert_eq!(IkeState::parse(Some(name.to_string())).charon_name(), name);
        }
        assert_eq!(
            IkeState::parse(Some("REKEYED".to_string())).charon_name(),
            "REKEYING"
        );
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

    /// A CHILD rekey event carries the old SA (with its counters at the rekey) beside the new
    /// one; both are read, so renkei's totals keep what the old SA carried last.
    #[test]
    fn net9_ops4_a_child_rekey_event_keeps_the_old_sa_counters() {
        #[derive(Serialize)]
        #[serde(rename_all = "kebab-case")]
        struct Child {
            uniqueid: &'static str,
            state: &'static str,
            bytes_in: &'static str,
        }
        #[derive(Serialize)]
        #[serde(rename_all = "kebab-case")]
        struct Pair {
            old: Child,
            new: Child,
        }
        #[derive(Serialize)]
        #[serde(rename_all = "kebab-case")]
        struct Ike {
            uniqueid: &'static str,
            state: &'static str,
            child_sas: BTreeMap<&'static str, Pair>,
        }
        let pair = Pair {
            old: Child {
                uniqueid: "1",
                state: "REKEYED",
                bytes_in: "1500",
            },
            new: Child {
                uniqueid: "2",
                state: "INSTALLED",
                bytes_in: "0",
            },
        };
        let ike = Ike {
            uniqueid: "7",
            state: "ESTABLISHED",
            child_sas: BTreeMap::from([("dc-2", pair)]),
        };
        let bytes = serde_vici::to_vec(&BTreeMap::from([("dc", ike)])).expect("encodes");
        let entries: BTreeMap<String, EventEntry> =
            serde_vici::from_slice(&bytes).expect("decodes");
        let event = SaEvent::from_entries(SaEventKind::ChildRekey, entries);
        let children: Vec<(Option<u64>, &str, u64)> = event.sas[0]
            .children
            .iter()
            .map(|c| (c.unique_id, c.state.as_str(), c.bytes_in))
            .collect();
        assert_eq!(
            children,
            [(Some(1), "REKEYED", 1500), (Some(2), "INSTALLED", 0)]
        );
    }
}
