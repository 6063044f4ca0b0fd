//! The regional network of the architecture's "Test lab", in network namespaces.
//!
//! ```text
//!   clinic LAN ns --lan-- clinic ns --wan--+                     +-- dc ns (hub)
//!   198.18.20.2        198.18.20.1  .0.20  |  wan ns: bridge br0 |  198.18.0.1
//!                                          +---------------------+
//!   hospital LAN ns --lan-- hospital ns --wan--+
//!   198.18.10.2         198.18.10.1   .0.10
//! ```
//! Tunnel overlay 198.19.0.0/24: hub .1, hospital .10, clinic .20.
//!
//! On a closed network ([`LabCarrier::Closed`]) there is no tunnel: the WAN namespace stands for
//! the carrier's routed network (専用線 / IP-VPN) and routes between one /24 per site, and the
//! boxes reach each other on those addresses, every service still inside mutual TLS:
//! ```text
//!   dc wan0 198.18.1.1/24        --  wan ns .1.254 | .2.254 | .3.254 (routes, forwards)
//!   hospital wan0 198.18.2.10/24 --  a facility has a route to the data centre's /24 only;
//!   clinic wan0 198.18.3.20/24   --  the data centre has routes to both facilities' /24s
//! ```
//! The data centre answers the facilities' reachability probe on 198.18.1.1:7000
//! ([`DC_PROBE_PORT`]).
//!
//! On IKEv2/IPsec ([`LabCarrier::Ipsec`]) the WAN is bridged as for WireGuard. The dc namespace
//! runs a strongSwan concentrator configured by hand ([`crate::concentrator`]: one connection
//! per facility, its identity pinned, the lab CA, the profile's proposals), the independent
//! peer, started with the lab and owned by it. Each facility runs its own charon (started by
//! [`Lab::start`] with the text of `renkei charon-conf` for the facility's config, as the box
//! image's unit does) and renkei on top of it with `[ipsec]`. The addresses inside the SAs:
//! ```text
//!   dc: dc0 (veth) 198.19.1.1/32      hospital: 198.19.1.10/32   clinic: 198.19.1.20/32
//!   (the hub's renkei on [closed]    (on renkei's own TUN device renkei-ipsec; each
//!    over dc0: its services listen   facility's CHILD SA is its own /32 <-> 198.19.1.1/32)
//!    there)
//! ```
//! Who terminates what: the hub's renkei terminates the hub's TLS services (its `[closed]`
//! link is the device `dc0` holding the data centre's inner address: it has no tunnel of its
//! own, the concentrator carries it); each facility's renkei terminates its own services and
//! management API; the charons carry only ESP (userspace libipsec, ESP in UDP 4500) and never
//! see TLS. The hub's management API binds to `dc0` and so is not reachable over the SAs.
//!
//! [`Lab::with_backup_hub`] adds a second data centre for the hub-group tests (AVL-4): the
//! backup hub in its own namespace on the WAN bridge at 198.18.0.2 ([`BACKUP_HUB_WAN_ADDRESS`]),
//! with its own WireGuard key, the primary's tunnel address and facility peers, and a
//! certificate for the hub's name. A facility joins both with [`Lab::add_backup_hub`].
//!
//! Names carry a per-lab id
//! (the test process's pid and a counter), so labs run in parallel, and a later lab removes the
//! leftovers of a process that died before it could clean up: the processes still inside its
//! namespaces first, then the namespaces and its folder. IPv6 is off in every namespace.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;
use ipnet::IpNet;
use renkei::config::{
    ClosedConfig, Config, Direction, EspBackend, Facility, FailoverConfig, IpsecConfig, Meta,
    Paths, PeerConfig, PolicyConfig, PolicyMode, Role, TlsConfig, TunnelConfig, DEFAULT_MTU,
};

pub use crate::boxconfig::Peer;
use crate::boxconfig::{service, socket, to_toml, ConfigText};
use crate::concentrator::{
    renkei_charon_conf, swanctl_conf, FacilityConnection, PROFILE_ESP_PROPOSALS,
    PROFILE_IKE_PROPOSALS,
};
use crate::daemon::Daemon;
use crate::netns::{run, Namespace};
use crate::pki::{write_key, Ca, Leaf};
use crate::probe::ProbeEndpoint;
use crate::strongswan::{concentrator_conf, Charon, CharonPaths};

/// WireGuard UDP port of the hub.
pub const HUB_PORT: u16 = 51820;
/// Where `wg` looks for userspace API sockets.
pub const WIREGUARD_SOCKET_DIR: &str = "/var/run/wireguard";

static LAB_COUNTER: AtomicU32 = AtomicU32::new(0);

/// How the lab's boxes reach the data centre.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LabCarrier {
    /// renkei's userspace WireGuard tunnels to the hub, across a bridged WAN.
    WireGuard,
    /// A closed network (leased line / carrier IP-VPN): routed, no tunnel.
    Closed,
    /// IKEv2/IPsec: each facility's charon to the data centre's strongSwan concentrator.
    Ipsec,
}

impl LabCarrier {
    /// Every carrier the lab can build, for tests that run on each.
    pub const ALL: [LabCarrier; 3] = [LabCarrier::WireGuard, LabCarrier::Closed, LabCarrier::Ipsec];

    /// The name `lab up --carrier` takes and the status JSON's `carrier.kind` shows.
    pub fn name(self) -> &'static str {
        match self {
            LabCarrier::WireGuard => "wireguard",
            LabCarrier::Closed => "closed",
            LabCarrier::Ipsec => "ipsec",
        }
    }

    /// The carrier called `name` (as [`LabCarrier::name`] spells it).
    pub fn from_name(name: &str) -> Option<LabCarrier> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }
}

/// The port of the data centre's health endpoint on a closed network.
pub const DC_PROBE_PORT: u16 = 7000;
/// Probe schedule of the lab's closed-network facilities: the first probe goes at start, so
/// the link shows up at once; a lost data centre shows within about one interval.
const CLOSED_PROBE_INTERVAL_SECS: u64 = 10;
const CLOSED_PROBE_TIMEOUT_SECS: u64 = 3;
const CLOSED_ALARM_AFTER_SECS: u64 = 60;

/// A box of the lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Node {
    /// The data centre's hub.
    Hub,
    /// The disclosing facility's box.
    Hospital,
    /// The viewing facility's box.
    Clinic,
}

impl Node {
    /// All boxes.
    pub const ALL: [Node; 3] = [Node::Hub, Node::Hospital, Node::Clinic];

    /// Short name used in paths and namespace names.
    pub fn short(self) -> &'static str {
        match self {
            Node::Hub => "dc",
            Node::Hospital => "hospital",
            Node::Clinic => "clinic",
        }
    }

    /// The box's WAN address.
    pub fn wan_address(self) -> &'static str {
        match self {
            Node::Hub => "198.18.0.1",
            Node::Hospital => "198.18.0.10",
            Node::Clinic => "198.18.0.20",
        }
    }

    /// The box's address on a closed network (its WAN interface; one /24 per site).
    pub fn closed_address(self) -> &'static str {
        match self {
            Node::Hub => "198.18.1.1",
            Node::Hospital => "198.18.2.10",
            Node::Clinic => "198.18.3.20",
        }
    }

    /// The carrier's router on the box's closed-network /24.
    pub fn closed_gateway(self) -> &'static str {
        match self {
            Node::Hub => "198.18.1.254",
            Node::Hospital => "198.18.2.254",
            Node::Clinic => "198.18.3.254",
        }
    }

    /// The box's /24 on a closed network.
    pub fn closed_prefix(self) -> IpNet {
        format!("{}/24", self.closed_address())
            .parse::<IpNet>()
            .expect("a lab closed-network address")
            .trunc()
    }

    /// The address the box's services, metrics and management API use on `carrier`: its
    /// tunnel address, or its closed-network address.
    pub fn link_address(self, carrier: LabCarrier) -> &'static str {
        match carrier {
            LabCarrier::WireGuard => self.tunnel_address(),
            LabCarrier::Closed => self.closed_address(),
            LabCarrier::Ipsec => self.ipsec_address(),
        }
    }

    /// The box's own address inside the IPsec network (a /32; on the hub the data centre's
    /// inner address on its `dc0`). Apart from the WireGuard overlay's 198.19.0.0/24.
    pub fn ipsec_address(self) -> &'static str {
        match self {
            Node::Hub => "198.19.1.1",
            Node::Hospital => "198.19.1.10",
            Node::Clinic => "198.19.1.20",
        }
    }

    /// The name of a facility's link to the data centre in its status (`peers[].name`).
    pub fn dc_link_name(carrier: LabCarrier) -> &'static str {
        match carrier {
            LabCarrier::WireGuard => "dc",
            LabCarrier::Closed | LabCarrier::Ipsec => "data centre",
        }
    }

    /// The box's tunnel address.
    pub fn tunnel_address(self) -> &'static str {
        match self {
            Node::Hub => "198.19.0.1",
            Node::Hospital => "198.19.0.10",
            Node::Clinic => "198.19.0.20",
        }
    }

    /// The box's LAN address (the hub has none).
    pub fn lan_address(self) -> Option<&'static str> {
        match self {
            Node::Hub => None,
            Node::Hospital => Some("198.18.10.1"),
            Node::Clinic => Some("198.18.20.1"),
        }
    }

    /// The address of the host on the box's LAN (document server or viewer PC).
    pub fn lan_host_address(self) -> Option<&'static str> {
        match self {
            Node::Hub => None,
            Node::Hospital => Some("198.18.10.2"),
            Node::Clinic => Some("198.18.20.2"),
        }
    }

    /// The DNS name in the box's TLS certificate (SAN and CN).
    pub fn tls_name(self) -> &'static str {
        match self {
            Node::Hub => "hub.renkei.example",
            Node::Hospital => "hospital.renkei.example",
            Node::Clinic => "clinic.renkei.example",
        }
    }

    fn letter(self) -> char {
        match self {
            Node::Hub => 'd',
            Node::Hospital => 'h',
            Node::Clinic => 'c',
        }
    }
}

/// The backup hub's WAN address (see [`Lab::with_backup_hub`]).
pub const BACKUP_HUB_WAN_ADDRESS: &str = "198.18.0.2";
/// The backup hub's peer name in a facility's config.
pub const BACKUP_HUB_PEER: &str = "dc-backup";
/// The primary hub's peer name in a facility's config.
pub const PRIMARY_HUB_PEER: &str = "dc";
/// The backup hub's folder in the lab's folder, and its namespace's suffix.
const BACKUP_HUB_SHORT: &str = "dc2";

/// The second data centre's hub: its namespace and WireGuard public key.
struct BackupHub {
    ns: Namespace,
    public_key: String,
}

/// The TCP congestion control of the box: the image's kernel (Debian's) defaults to cubic, and
/// nothing on the box changes it. A host running the lab may default to another (this CI
/// machine's kernel uses bbr, which behaves differently with 64 streams through the tunnel).
pub const BOX_TCP_CONGESTION_CONTROL: &str = "cubic";

/// The whole lab. Dropping it removes everything it created.
pub struct Lab {
    /// Per-lab id carried by every name.
    pub id: String,
    /// Folder for keys, configs, state and logs.
    pub dir: PathBuf,
    boxes: HashMap<Node, Namespace>,
    lans: HashMap<Node, Namespace>,
    wan: Namespace,
    public_keys: HashMap<Node, String>,
    /// The operator CA that issued every box's certificate; tests issue extra ones with it.
    pub ca: Ca,
    certificates: HashMap<Node, Leaf>,
    /// How the boxes reach the data centre.
    pub carrier: LabCarrier,
    /// The data centre's health endpoint on a closed network.
    probe: Option<ProbeEndpoint>,
    /// The data centre's concentrator on IPsec.
    concentrator: Option<Charon>,
    /// Each IPsec facility's own charon, started by [`Lab::start_with`].
    charons: Mutex<HashMap<Node, Charon>>,
    /// The second data centre, with [`Lab::with_backup_hub`].
    backup: Option<BackupHub>,
    /// `[tunnel] offloads` of every box's WireGuard config ([`Lab::with_tun_offloads`]).
    pub tun_offloads: bool,
}

impl Lab {
    /// Builds the namespaces, links and addresses, and generates every box's WireGuard keys.
    pub fn new() -> anyhow::Result<Lab> {
        Self::with_carrier(LabCarrier::WireGuard)
    }

    /// [`Lab::new`] on `carrier`: on a closed network the WAN namespace routes between the
    /// sites instead of bridging them, and the data centre answers probes.
    pub fn with_carrier(carrier: LabCarrier) -> anyhow::Result<Lab> {
        remove_stale_labs();
        let n = LAB_COUNTER.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}{}", base36(std::process::id()), base36(n % 36));
        let dir = std::env::temp_dir().join(format!("renkei-lab-{id}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;

        let wan = Namespace::create(&format!("rk{id}-wan"))?;
        match carrier {
            LabCarrier::WireGuard | LabCarrier::Ipsec => {
                wan.ip(&["link", "add", "br0", "type", "bridge"])?;
                wan.ip(&["link", "set", "br0", "up"])?;
            }
            LabCarrier::Closed => wan.sysctl("net.ipv4.ip_forward", "1")?,
        }
        let mut boxes = HashMap::new();
        let mut lans = HashMap::new();
        for node in Node::ALL {
            let ns = Namespace::create(&format!("rk{id}-{}", node.short()))?;
            let port = node.short();
            run(std::process::Command::new("ip").args([
                "link",
                "add",
                "wan0",
                "netns",
                ns.name(),
                "type",
                "veth",
                "peer",
                "name",
                port,
                "netns",
                wan.name(),
            ]))?;
            let address = match carrier {
                LabCarrier::WireGuard | LabCarrier::Ipsec => {
                    wan.ip(&["link", "set", port, "master", "br0", "up"])?;
                    node.wan_address()
                }
                LabCarrier::Closed => {
                    let gateway = format!("{}/24", node.closed_gateway());
                    wan.ip(&["addr", "add", &gateway, "dev", port])?;
                    wan.ip(&["link", "set", port, "up"])?;
                    // A box does not route (NET-8), whatever the host's default is.
                    ns.sysctl("net.ipv4.ip_forward", "0")?;
                    node.closed_address()
                }
            };
            ns.ip(&["addr", "add", &format!("{address}/24"), "dev", "wan0"])?;
            ns.ip(&["link", "set", "wan0", "up"])?;
            if carrier == LabCarrier::Ipsec {
                // A box does not route (NET-8), whatever the host's default is.
                ns.sysctl("net.ipv4.ip_forward", "0")?;
                if node == Node::Hub {
                    // The data centre's inner address, which the concentrator's SAs reach, on
                    // a device of its own (a veth pair inside the namespace: the lab's kernels
                    // have no dummy devices).
                    ns.ip(&[
                        "link",
                        "add",
                        IPSEC_DC_DEVICE,
                        "type",
                        "veth",
                        "peer",
                        "name",
                        IPSEC_DC_DEVICE_PEER,
                    ])?;
                    let inner = format!("{}/32", node.ipsec_address());
                    ns.ip(&["addr", "add", &inner, "dev", IPSEC_DC_DEVICE])?;
                    ns.ip(&["link", "set", IPSEC_DC_DEVICE_PEER, "up"])?;
                    ns.ip(&["link", "set", IPSEC_DC_DEVICE, "up"])?;
                }
            }
            if carrier == LabCarrier::Closed {
                // The carrier routes a facility to the data centre only, the data centre to
                // every facility.
                let sites: Vec<Node> = match node {
                    Node::Hub => vec![Node::Hospital, Node::Clinic],
                    Node::Hospital | Node::Clinic => vec![Node::Hub],
                };
                for site in sites {
                    let prefix = site.closed_prefix().to_string();
                    ns.ip(&["route", "add", &prefix, "via", node.closed_gateway()])?;
                }
            }
            if let (Some(lan), Some(host)) = (node.lan_address(), node.lan_host_address()) {
                let lan_ns = Namespace::create(&format!("rk{id}-{}-lan", node.short()))?;
                run(std::process::Command::new("ip").args([
                    "link",
                    "add",
                    "lan0",
                    "netns",
                    ns.name(),
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "lan0",
                    "netns",
                    lan_ns.name(),
                ]))?;
                ns.ip(&["addr", "add", &format!("{lan}/24"), "dev", "lan0"])?;
                ns.ip(&["link", "set", "lan0", "up"])?;
                lan_ns.ip(&["addr", "add", &format!("{host}/24"), "dev", "lan0"])?;
                lan_ns.ip(&["link", "set", "lan0", "up"])?;
                lan_ns.ip(&["route", "add", "default", "via", lan])?;
                lans.insert(node, lan_ns);
            }
            boxes.insert(node, ns);
        }

        let mut public_keys = HashMap::new();
        for node in Node::ALL {
            let node_dir = dir.join(node.short());
            std::fs::create_dir_all(&node_dir)?;
            let public = renkei::keys::write_keypair(&node_dir.join("wg.key"))?;
            public_keys.insert(node, renkei::keys::encode_key(&public));
        }

        let ca = Ca::new(&format!("renkei lab operator CA {id}"))?;
        let pki = dir.join("pki");
        std::fs::create_dir_all(&pki)?;
        std::fs::write(pki.join("operator-ca.crt"), &ca.cert_pem)?;
        write_key(&pki.join("operator-ca.key"), &ca.key_pem())?;
        let mut certificates = HashMap::new();
        for (serial, node) in (1..).zip(Node::ALL) {
            let leaf = ca.issue_with(node.tls_name(), serial, |_| {})?;
            let tls = dir.join(node.short()).join("tls");
            std::fs::create_dir_all(&tls)?;
            std::fs::write(tls.join("box.crt"), &leaf.cert_pem)?;
            write_key(&tls.join("box.key"), &leaf.key_pem)?;
            std::fs::write(tls.join("operator-ca.crt"), &ca.cert_pem)?;
            certificates.insert(node, leaf);
        }
        let probe = match carrier {
            LabCarrier::WireGuard | LabCarrier::Ipsec => None,
            LabCarrier::Closed => Some(ProbeEndpoint::start(
                &boxes[&Node::Hub],
                &format!("{}:{DC_PROBE_PORT}", Node::Hub.closed_address()),
            )?),
        };
        let concentrator = match carrier {
            LabCarrier::WireGuard | LabCarrier::Closed => None,
            LabCarrier::Ipsec => {
                let paths = CharonPaths::in_dir(&dir.join("dc-concentrator"));
                let conf = concentrator_conf(&paths);
                let charon = Charon::start(&boxes[&Node::Hub], paths, &conf)?;
                charon.load_all(
                    &lab_concentrator_swanctl(),
                    &certificates[&Node::Hub],
                    &ca.cert_pem,
                )?;
                Some(charon)
            }
        };
        Ok(Lab {
            id,
            dir,
            boxes,
            lans,
            wan,
            public_keys,
            ca,
            certificates,
            carrier,
            probe,
            concentrator,
            charons: Mutex::new(HashMap::new()),
            backup: None,
            tun_offloads: true,
        })
    }

    /// The lab with every box's TUN offloads on or off (`[tunnel] offloads`), so the tunnel
    /// tests run on both data paths.
    pub fn with_tun_offloads(mut self, on: bool) -> Lab {
        self.tun_offloads = on;
        self
    }

    /// [`Lab::new`] with a second data centre's hub on the WAN bridge (AVL-4): its own
    /// namespace at [`BACKUP_HUB_WAN_ADDRESS`], its own WireGuard key, and a certificate for
    /// the hub's name from the lab CA. It runs only when a test starts it
    /// ([`Lab::start_backup_hub`]).
    pub fn with_backup_hub() -> anyhow::Result<Lab> {
        let mut lab = Lab::new()?;
        let ns = Namespace::create(&format!("rk{}-{BACKUP_HUB_SHORT}", lab.id))?;
        run(std::process::Command::new("ip").args([
            "link",
            "add",
            "wan0",
            "netns",
            ns.name(),
            "type",
            "veth",
            "peer",
            "name",
            BACKUP_HUB_SHORT,
            "netns",
            lab.wan.name(),
        ]))?;
        lab.wan
            .ip(&["link", "set", BACKUP_HUB_SHORT, "master", "br0", "up"])?;
        ns.ip(&[
            "addr",
            "add",
            &format!("{BACKUP_HUB_WAN_ADDRESS}/24"),
            "dev",
            "wan0",
        ])?;
        ns.ip(&["link", "set", "wan0", "up"])?;
        let dir = lab.backup_hub_dir();
        let tls = dir.join("tls");
        std::fs::create_dir_all(&tls)?;
        let public = renkei::keys::write_keypair(&dir.join("wg.key"))?;
        let leaf = lab.ca.issue(Node::Hub.tls_name())?;
        std::fs::write(tls.join("box.crt"), &leaf.cert_pem)?;
        write_key(&tls.join("box.key"), &leaf.key_pem)?;
        std::fs::write(tls.join("operator-ca.crt"), &lab.ca.cert_pem)?;
        lab.backup = Some(BackupHub {
            ns,
            public_key: renkei::keys::encode_key(&public),
        });
        Ok(lab)
    }

    fn backup_hub(&self) -> &BackupHub {
        self.backup
            .as_ref()
            .expect("a lab made with Lab::with_backup_hub")
    }

    /// The backup hub's namespace.
    pub fn backup_hub_ns(&self) -> &Namespace {
        &self.backup_hub().ns
    }

    /// The backup hub's folder (key, config, state, logs).
    pub fn backup_hub_dir(&self) -> PathBuf {
        self.dir.join(BACKUP_HUB_SHORT)
    }

    /// The backup hub's config: the primary's ([`Lab::config`] of the hub: the same tunnel
    /// address and facility peers) on its own interface and folders.
    pub fn backup_hub_config(&self) -> Config {
        let mut config = self.config(Node::Hub);
        let dir = self.backup_hub_dir();
        config.facility.name = "lab dc backup".to_string();
        config.paths.state_dir = dir.join("state");
        config.paths.runtime_dir = dir.join("run");
        if let Some(tunnel) = config.tunnel.as_mut() {
            tunnel.interface = self.backup_hub_interface();
        }
        config
    }

    /// The backup hub's TUN interface name.
    pub fn backup_hub_interface(&self) -> String {
        format!("rk{}b", self.id)
    }

    /// Writes `config` as the backup hub's config and starts its daemon.
    pub fn start_backup_hub(&self, config: &(impl ConfigText + ?Sized)) -> anyhow::Result<Daemon> {
        let dir = self.backup_hub_dir();
        let path = dir.join("renkei.toml");
        std::fs::write(&path, config.config_text())
            .with_context(|| format!("writing {}", path.display()))?;
        let log = (1..)
            .map(|n| dir.join(format!("renkei-{n}.log")))
            .find(|log| !log.exists())
            .unwrap_or_else(|| dir.join("renkei.log"));
        Daemon::start(
            Node::Hub,
            self.backup_hub_ns(),
            &path,
            &dir.join("run"),
            &log,
        )
    }

    /// Gives a facility's `config` the backup hub as a second peer for the primary's prefixes
    /// ([`BACKUP_HUB_PEER`]) and the hub group `failover`, whose `hubs` are set to the primary
    /// then the backup.
    pub fn add_backup_hub(&self, config: &mut Config, mut failover: FailoverConfig) {
        let tunnel = config
            .tunnel
            .as_mut()
            .expect("a facility config with [tunnel]");
        tunnel.peers.push(PeerConfig {
            name: BACKUP_HUB_PEER.to_string(),
            public_key: self.backup_hub().public_key.clone(),
            endpoint: Some(format!("{BACKUP_HUB_WAN_ADDRESS}:{HUB_PORT}")),
            allowed_ips: vec![host_net(Node::Hub.tunnel_address())],
            persistent_keepalive_secs: None,
        });
        failover.hubs = vec![PRIMARY_HUB_PEER.to_string(), BACKUP_HUB_PEER.to_string()];
        tunnel.failover = Some(failover);
    }

    /// The data centre's concentrator (IPsec only).
    pub fn concentrator(&self) -> Option<&Charon> {
        self.concentrator.as_ref()
    }

    /// `swanctl --list-sas --raw` of a facility's own charon (IPsec only), or its error.
    pub fn facility_sas(&self, node: Node) -> anyhow::Result<String> {
        let charons = self.charons.lock().unwrap_or_else(|e| e.into_inner());
        let charon = charons
            .get(&node)
            .with_context(|| format!("no charon runs for {node:?}"))?;
        charon.list_sas()
    }

    /// The log of a facility's own charon so far (IPsec only; empty when none ran).
    pub fn charon_log(&self, node: Node) -> String {
        let charons = self.charons.lock().unwrap_or_else(|e| e.into_inner());
        charons.get(&node).map(Charon::log).unwrap_or_default()
    }

    /// Every charon the lab runs now, as (what it is, pid): the concentrator first.
    pub fn charon_processes(&self) -> Vec<(String, u32)> {
        let mut all: Vec<(String, u32)> = self
            .concentrator
            .iter()
            .filter_map(|c| {
                Some((
                    "charon: the data centre's concentrator".to_string(),
                    c.pid()?,
                ))
            })
            .collect();
        let charons = self.charons.lock().unwrap_or_else(|e| e.into_inner());
        for node in Node::ALL {
            if let Some(pid) = charons.get(&node).and_then(Charon::pid) {
                all.push((format!("charon on {}", node.short()), pid));
            }
        }
        all
    }

    /// Where a facility's own charon keeps its conf, VICI socket and log.
    pub fn charon_paths(&self, node: Node) -> CharonPaths {
        CharonPaths::in_dir(&self.node_dir(node).join("charon"))
    }

    /// The address `node`'s services, metrics and management API use on this lab's carrier.
    pub fn link_address(&self, node: Node) -> &'static str {
        node.link_address(self.carrier)
    }

    /// The name of a facility's link to the data centre in its status (`peers[].name`).
    pub fn dc_link_name(&self) -> &'static str {
        Node::dc_link_name(self.carrier)
    }

    /// The peers that connected to the data centre's health endpoint (closed network only).
    pub fn probe_peers(&self) -> Vec<std::net::SocketAddr> {
        self.probe
            .as_ref()
            .map(ProbeEndpoint::peers)
            .unwrap_or_default()
    }

    /// The namespace a box runs in.
    pub fn ns(&self, node: Node) -> &Namespace {
        &self.boxes[&node]
    }

    /// The namespace of the host on a facility's LAN.
    pub fn lan_ns(&self, node: Node) -> &Namespace {
        &self.lans[&node]
    }

    /// The WAN bridge namespace.
    pub fn wan(&self) -> &Namespace {
        &self.wan
    }

    /// The box's WireGuard public key.
    pub fn public_key(&self, node: Node) -> &str {
        &self.public_keys[&node]
    }

    /// The certificate and key a box was given at lab start (its `tls/box.crt`, `tls/box.key`).
    pub fn certificate(&self, node: Node) -> &Leaf {
        &self.certificates[&node]
    }

    /// Folder with the operator CA's certificate and key (`operator-ca.crt`, `operator-ca.key`)
    /// for signing with the openssl CLI.
    pub fn pki_dir(&self) -> PathBuf {
        self.dir.join("pki")
    }

    /// A box's TLS folder (`box.crt`, `box.key`, `operator-ca.crt`; a test may add a CRL).
    pub fn tls_dir(&self, node: Node) -> PathBuf {
        self.node_dir(node).join("tls")
    }

    /// The box's own folder (keys, config, state, runtime, log).
    pub fn node_dir(&self, node: Node) -> PathBuf {
        self.dir.join(node.short())
    }

    /// Gives every namespace of the lab `algorithm` as its TCP congestion control, for the
    /// sockets made after the call. A new namespace takes the host's default, which need not be
    /// the box's ([`BOX_TCP_CONGESTION_CONTROL`]): the benchmarks call this so that they measure
    /// the TCP a box runs.
    pub fn set_tcp_congestion_control(&self, algorithm: &str) -> anyhow::Result<()> {
        let namespaces: Vec<&Namespace> = self
            .boxes
            .values()
            .chain(self.lans.values())
            .chain(std::iter::once(&self.wan))
            .chain(self.backup.as_ref().map(|b| &b.ns))
            .collect();
        set_tcp_congestion_control_in(&namespaces, algorithm)
    }

    /// The TUN interface name of a box (unique per lab: the API socket folder is shared).
    pub fn interface(&self, node: Node) -> String {
        format!("rk{}{}", self.id, node.letter())
    }

    /// The interface index of a box's TUN device (a kept device keeps it; a new one gets
    /// another).
    pub fn interface_index(&self, node: Node) -> anyhow::Result<u32> {
        let line = self
            .ns(node)
            .ip(&["-o", "link", "show", &self.interface(node)])?;
        line.split(':')
            .next()
            .and_then(|n| n.trim().parse().ok())
            .with_context(|| format!("no interface index in {line:?}"))
    }

    /// A valid config for a box on the lab's carrier with no services, as a typed value tests
    /// change field by field. On WireGuard it is [`Lab::tunnel_only`]; on a closed network
    /// [`Lab::closed_only`].
    pub fn config(&self, node: Node) -> Config {
        match self.carrier {
            LabCarrier::WireGuard => self.tunnel_only(node),
            LabCarrier::Closed => self.closed_only(node),
            LabCarrier::Ipsec => self.ipsec_only(node),
        }
    }

    /// A valid config for a box on the lab's IPsec network. A facility has `[ipsec]` to the
    /// concentrator (its own /32, the data centre's inner address its only destination, the
    /// policy of the WireGuard lab: the hospital always-on, the clinic on-demand, charon's
    /// VICI socket and log in the box's folder). The hub has `[closed]` on its `dc0`
    /// holding the data centre's inner address, the facilities' /32s as its destinations:
    /// the concentrator in front of it carries the SAs.
    pub fn ipsec_only(&self, node: Node) -> Config {
        let mut config = self.tunnel_only(node);
        let policy = config.tunnel.take().map(|tunnel| tunnel.policy);
        let inner = |of: Node| host_net(of.ipsec_address());
        match node {
            Node::Hub => {
                config.closed = Some(ClosedConfig {
                    interface: IPSEC_DC_DEVICE.to_string(),
                    address: inner(Node::Hub),
                    data_centre_prefixes: vec![inner(Node::Hospital), inner(Node::Clinic)],
                    mode: None,
                    probe_endpoint: None,
                    probe_interval_secs: CLOSED_PROBE_INTERVAL_SECS,
                    probe_timeout_secs: CLOSED_PROBE_TIMEOUT_SECS,
                    alarm_after_secs: CLOSED_ALARM_AFTER_SECS,
                });
            }
            Node::Hospital | Node::Clinic => {
                let policy = policy.unwrap_or_default();
                let charon = self.charon_paths(node);
                config.ipsec = Some(IpsecConfig {
                    interface: IPSEC_BOX_DEVICE.to_string(),
                    address: inner(node),
                    wan_address: node.wan_address().parse().expect("a lab WAN address"),
                    remote_address: Node::Hub.wan_address().parse().expect("a lab WAN address"),
                    remote_id: Node::Hub.tls_name().to_string(),
                    local_id: None,
                    data_centre_prefixes: vec![inner(Node::Hub)],
                    ike_proposals: renkei::config::proposal::default_ike_proposals(),
                    esp_proposals: renkei::config::proposal::default_esp_proposals(),
                    mode: policy.mode,
                    idle_timeout_secs: policy.idle_timeout_secs,
                    connect_timeout_secs: policy.connect_timeout_secs,
                    checkin_interval_secs: policy.checkin_interval_secs,
                    checkin_window_secs: policy.checkin_window_secs,
                    alarm_after_secs: IPSEC_ALARM_AFTER_SECS,
                    esp_backend: EspBackend::Libipsec,
                    esp_interface: None,
                    vici_socket: Some(charon.vici_socket),
                    charon_log_file: Some(charon.log),
                    failover: None,
                });
                // The box authenticates IKE with its TLS certificate.
                config.tls = Some(tls_config());
            }
        }
        config
    }

    /// A valid config for a box on the lab's closed network (`[closed]` on its WAN interface,
    /// no tunnel): a facility dials only the data centre's /24 and, always-on, probes its health
    /// endpoint; the hub dials the facilities' /24s and probes nothing.
    pub fn closed_only(&self, node: Node) -> Config {
        let mut config = self.tunnel_only(node);
        let mode = config.tunnel.take().and_then(|tunnel| tunnel.policy.mode);
        let prefixes = match node {
            Node::Hub => vec![Node::Hospital.closed_prefix(), Node::Clinic.closed_prefix()],
            Node::Hospital | Node::Clinic => vec![Node::Hub.closed_prefix()],
        };
        let probe = (node != Node::Hub).then(|| {
            crate::boxconfig::socket(&format!("{}:{DC_PROBE_PORT}", Node::Hub.closed_address()))
        });
        config.closed = Some(ClosedConfig {
            interface: "wan0".to_string(),
            address: format!("{}/24", node.closed_address())
                .parse()
                .expect("a lab closed-network address with its prefix"),
            data_centre_prefixes: prefixes,
            mode,
            probe_endpoint: probe,
            probe_interval_secs: CLOSED_PROBE_INTERVAL_SECS,
            probe_timeout_secs: CLOSED_PROBE_TIMEOUT_SECS,
            alarm_after_secs: CLOSED_ALARM_AFTER_SECS,
        });
        config
    }

    /// A valid tunnel-only config for a box, as a typed value tests change field by field
    /// (`config.tunnel.as_mut().expect("[tunnel]").policy.idle_timeout_secs = 10`) before writing it. `[meta] box` is the
    /// box's certificate name, so the config can be signed and pushed to it (AUTH-4).
    pub fn tunnel_only(&self, node: Node) -> Config {
        let dir = self.node_dir(node);
        let role = match node {
            Node::Hub => Role::Hub,
            Node::Hospital => Role::Disclosing,
            Node::Clinic => Role::Viewing,
        };
        let (listen_port, policy, peers) = match node {
            Node::Hub => {
                let peers = [Node::Hospital, Node::Clinic]
                    .into_iter()
                    .map(|facility| PeerConfig {
                        name: facility.short().to_string(),
                        public_key: self.public_key(facility).to_string(),
                        endpoint: None,
                        allowed_ips: vec![host_net(facility.tunnel_address())],
                        persistent_keepalive_secs: None,
                    })
                    .collect();
                (HUB_PORT, PolicyConfig::default(), peers)
            }
            Node::Hospital | Node::Clinic => {
                let mode = if node == Node::Hospital {
                    PolicyMode::AlwaysOn
                } else {
                    PolicyMode::OnDemand
                };
                let policy = PolicyConfig {
                    mode: Some(mode),
                    idle_timeout_secs: 300,
                    connect_timeout_secs: 10,
                    checkin_interval_secs: 0,
                    ..PolicyConfig::default()
                };
                let dc = PeerConfig {
                    name: "dc".to_string(),
                    public_key: self.public_key(Node::Hub).to_string(),
                    endpoint: Some(format!("{}:{HUB_PORT}", Node::Hub.wan_address())),
                    allowed_ips: vec![host_net(Node::Hub.tunnel_address())],
                    persistent_keepalive_secs: None,
                };
                (0, policy, vec![dc])
            }
        };
        Config {
            meta: Meta {
                version: 1,
                description: None,
                box_identity: Some(node.tls_name().to_string()),
            },
            facility: Facility {
                name: format!("lab {}", node.short()),
                role,
            },
            paths: Paths {
                state_dir: dir.join("state"),
                runtime_dir: dir.join("run"),
                wireguard_socket_dir: PathBuf::from(WIREGUARD_SOCKET_DIR),
                // The lab's boxes keep no journal of their own (they log to files); a test
                // puts journal files here to fetch them through the management API.
                journal_dir: dir.join("journal"),
            },
            tunnel: Some(TunnelConfig {
                interface: self.interface(node),
                private_key_file: PathBuf::from("wg.key"),
                listen_port,
                address: format!("{}/24", node.tunnel_address())
                    .parse()
                    .expect("a lab tunnel address with its prefix"),
                mtu: DEFAULT_MTU,
                handshakes_per_sec: None,
                offloads: self.tun_offloads,
                policy,
                peers,
                failover: None,
            }),
            closed: None,
            ipsec: None,
            tls: None,
            services: Vec::new(),
            status: None,
            management: None,
            update: None,
            time: None,
            logs: None,
        }
    }

    /// [`Lab::config`] plus `[tls]` and the box's services of the demo chain (as in
    /// `config/*.toml`): clinic outbound "documents" -> hub inbound "portal" -> hub outbound
    /// "hospital-documents" -> hospital inbound "documents" -> the document server on the
    /// hospital LAN (198.18.10.2:8080).
    pub fn full(&self, node: Node) -> Config {
        let mut config = self.config(node);
        config.tls = Some(tls_config());
        let tunnel_service =
            |of: Node| socket(&format!("{}:{SERVICE_PORT}", self.link_address(of)));
        config.services = match node {
            Node::Clinic => vec![service(
                "documents",
                Direction::Outbound,
                socket(&format!("{LAN_SERVICE_ADDRESS}:{SERVICE_PORT}")),
                &tunnel_service(Node::Hub).to_string(),
                Peer::ServerName(Node::Hub.tls_name()),
            )],
            Node::Hub => vec![
                service(
                    "portal",
                    Direction::Inbound,
                    tunnel_service(Node::Hub),
                    HUB_RELAY_ADDRESS,
                    Peer::Allowed(Node::Clinic.tls_name()),
                ),
                service(
                    "hospital-documents",
                    Direction::Outbound,
                    socket(HUB_RELAY_ADDRESS),
                    &tunnel_service(Node::Hospital).to_string(),
                    Peer::ServerName(Node::Hospital.tls_name()),
                ),
            ],
            Node::Hospital => vec![service(
                "documents",
                Direction::Inbound,
                tunnel_service(Node::Hospital),
                DOCUMENT_SERVER_ADDRESS,
                Peer::Allowed(Node::Hub.tls_name()),
            )],
        };
        config
    }

    /// [`Lab::config`] as TOML text, for tests that append sections they keep as text.
    pub fn tunnel_config(&self, node: Node) -> String {
        to_toml(&self.config(node))
    }

    /// [`Lab::full`] as TOML text, for tests that append sections they keep as text.
    pub fn full_config(&self, node: Node) -> String {
        to_toml(&self.full(node))
    }

    /// Writes `config` (typed, or text on purpose) as the box's config and returns its path.
    pub fn write_config(
        &self,
        node: Node,
        config: &(impl ConfigText + ?Sized),
    ) -> anyhow::Result<PathBuf> {
        let path = self.node_dir(node).join("renkei.toml");
        std::fs::write(&path, config.config_text())
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// Writes `config` as the box's config and starts its daemon, waiting until it answers.
    pub fn start(&self, node: Node, config: &(impl ConfigText + ?Sized)) -> anyhow::Result<Daemon> {
        let config = self.write_config(node, config)?;
        self.start_with(node, &config)
    }

    /// Starts a box's daemon with an already written config. On IPsec a facility's own charon
    /// starts first (unless one runs) with the strongswan.conf `renkei charon-conf` prints for
    /// that config, as the box image's unit does; a config without `[ipsec]` starts none.
    pub fn start_with(&self, node: Node, config: &Path) -> anyhow::Result<Daemon> {
        if self.carrier == LabCarrier::Ipsec && node != Node::Hub {
            self.start_charon(node, config)?;
        }
        let dir = self.node_dir(node);
        Daemon::start(
            node,
            self.ns(node),
            config,
            &dir.join("run"),
            &dir.join(format!("renkei-{}.log", self.next_log_number(node))),
        )
    }

    /// [`Lab::start`] through `launcher` ([`Daemon::start_launched`]); WireGuard and closed
    /// networks only (no charon is started).
    pub fn start_launched(
        &self,
        node: Node,
        config: &(impl ConfigText + ?Sized),
        launcher: &[std::ffi::OsString],
    ) -> anyhow::Result<Daemon> {
        anyhow::ensure!(
            self.carrier != LabCarrier::Ipsec,
            "a launched daemon on IPsec would need its charon started too"
        );
        let config = self.write_config(node, config)?;
        let dir = self.node_dir(node);
        Daemon::start_launched(
            node,
            self.ns(node),
            launcher,
            &config,
            &dir.join("run"),
            &dir.join(format!("renkei-{}.log", self.next_log_number(node))),
            &[],
            &[],
        )
    }

    /// Starts `node`'s charon for the config at `config` unless one runs.
    fn start_charon(&self, node: Node, config: &Path) -> anyhow::Result<()> {
        let mut charons = self.charons.lock().unwrap_or_else(|e| e.into_inner());
        if charons.get_mut(&node).is_some_and(Charon::is_running) {
            return Ok(());
        }
        // A config without [ipsec] (a test's broken one) has no charon to run.
        let Ok(conf) = renkei_charon_conf(config) else {
            return Ok(());
        };
        // The old one (crashed) goes first: its folder is the new one's.
        drop(charons.remove(&node));
        let charon = Charon::start(self.ns(node), self.charon_paths(node), &conf)?;
        charons.insert(node, charon);
        Ok(())
    }

    fn next_log_number(&self, node: Node) -> usize {
        (1..)
            .find(|n| !self.node_dir(node).join(format!("renkei-{n}.log")).exists())
            .unwrap_or(0)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Its listener lives in the data centre's namespace: stop it before that goes.
        drop(self.probe.take());
        // The charons run in the namespaces too: the facilities' first, then the concentrator.
        let charons = std::mem::take(self.charons.get_mut().unwrap_or_else(|e| e.into_inner()));
        drop(charons);
        drop(self.concentrator.take());
        if self.backup.take().is_some() {
            let socket = Path::new(WIREGUARD_SOCKET_DIR)
                .join(format!("{}.sock", self.backup_hub_interface()));
            let _ = std::fs::remove_file(socket);
        }
        // Namespaces go with their fields; sockets of daemons that were killed stay behind.
        for node in Node::ALL {
            let socket =
                Path::new(WIREGUARD_SOCKET_DIR).join(format!("{}.sock", self.interface(node)));
            let _ = std::fs::remove_file(socket);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The `[tls]` section of every lab box: its certificate, key and the operator CA in the box's
/// `tls/` folder (paths relative to the config); no CRL.
pub fn tls_config() -> TlsConfig {
    TlsConfig {
        certificate_file: PathBuf::from("tls/box.crt"),
        private_key_file: PathBuf::from("tls/box.key"),
        ca_file: PathBuf::from("tls/operator-ca.crt"),
        crl_file: None,
    }
}

/// Port of every TLS service of the demo chain.
pub const SERVICE_PORT: u16 = 8443;
/// The clinic box's LAN address, where viewer PCs reach the "documents" service.
pub const LAN_SERVICE_ADDRESS: &str = "198.18.20.1";
/// The hub's relay leg between its inbound portal and the outbound to the hospital.
pub const HUB_RELAY_ADDRESS: &str = "127.0.0.1:18443";
/// The document server on the hospital LAN.
pub const DOCUMENT_SERVER_ADDRESS: &str = "198.18.10.2:8080";

/// The hub's device holding the data centre's inner address on IPsec.
pub const IPSEC_DC_DEVICE: &str = "dc0";
/// The other end of [`IPSEC_DC_DEVICE`]'s veth pair (no address; only there to carry it).
const IPSEC_DC_DEVICE_PEER: &str = "dc0peer";
/// The device a facility's renkei puts its own IPsec address on.
pub const IPSEC_BOX_DEVICE: &str = "renkei-ipsec";
/// always_on over IPsec: alarm when no IKE SA has been established for this long.
const IPSEC_ALARM_AFTER_SECS: u64 = 180;

/// The concentrator's swanctl.conf in the lab: one connection per facility, its WAN address,
/// its certificate name pinned, the data centre's inner address to the facility's own /32,
/// the profile's proposals.
pub fn lab_concentrator_swanctl() -> String {
    let connections: Vec<FacilityConnection> = [Node::Hospital, Node::Clinic]
        .into_iter()
        .map(|facility| {
            facility_connection(
                facility,
                facility.short(),
                Node::Hub.ipsec_address(),
                facility.ipsec_address(),
                PROFILE_IKE_PROPOSALS,
                PROFILE_ESP_PROPOSALS,
            )
        })
        .collect();
    swanctl_conf(&connections)
}

/// The concentrator's connection `name` answering `facility` from the hub's WAN address (both
/// identities their certificate names): `dc_inner` to `facility_inner`, each one host, with
/// the `ike` and `esp` proposals in strongSwan's syntax.
pub fn facility_connection(
    facility: Node,
    name: &str,
    dc_inner: &str,
    facility_inner: &str,
    ike: &str,
    esp: &str,
) -> FacilityConnection {
    FacilityConnection {
        name: name.to_string(),
        local_addr: Node::Hub.wan_address().to_string(),
        remote_addr: facility.wan_address().to_string(),
        local_id: Node::Hub.tls_name().to_string(),
        remote_id: facility.tls_name().to_string(),
        local_ts: vec![format!("{dc_inner}/32")],
        remote_ts: format!("{facility_inner}/32"),
        ike_proposals: ike.to_string(),
        esp_proposals: esp.to_string(),
    }
}

/// `addr/32`: the route to one tunnel address.
fn host_net(addr: &str) -> IpNet {
    format!("{addr}/32").parse().expect("a lab tunnel address")
}

fn base36(mut n: u32) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// Removes what a lab that crashed left (namespaces named `rk<pid><n>-...` whose process is
/// gone): every process still inside such a namespace is ended before the namespace is
/// deleted (a daemon started but never recorded would run on, orphaned), and the lab's folder
/// `renkei-lab-<pid><n>` in the temp folder goes too.
pub fn remove_stale_labs() {
    remove_labs(|pid| !Path::new(&format!("/proc/{pid}")).exists());
}

/// Removes the labs this process made, with the processes inside their namespaces: what their
/// drops would have done, for a process stopped by a signal (see [`remove_own_labs_on_signal`]).
///
/// This process may still be starting processes into them (a benchmark's main thread goes on
/// after the signal), so whatever got in after a namespace was emptied, or was on its way in, is
/// killed after the names are gone (by namespace inode, and this process's children).
pub fn remove_own_labs() {
    let me = std::process::id();
    let removed = remove_labs(|pid| pid == me);
    let left = crate::netns::kill_stragglers(&removed.inodes, me, Duration::from_secs(5));
    if !left.is_empty() {
        eprintln!("processes {left:?} started into this run's labs would not die");
    }
    // The stragglers' API sockets, too.
    for id in &removed.ids {
        crate::api_sockets::remove_dead(Path::new(WIREGUARD_SOCKET_DIR), id);
    }
}

/// What [`remove_labs`] removed: the labs' ids and their namespaces' inodes.
#[derive(Default)]
struct RemovedLabs {
    ids: std::collections::BTreeSet<String>,
    inodes: Vec<u64>,
}

/// Makes SIGINT, SIGTERM and SIGHUP end this process only after [`remove_own_labs`]: a
/// benchmark stopped by hand or by `timeout` would otherwise leave its namespaces, daemons and
/// iperf3 servers running until the next lab removes them as stale. Exits with 128 + the
/// signal's number. For the `lab` binary's long commands; tests end through their guards.
pub fn remove_own_labs_on_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let (mut terminate, mut interrupt, mut hangup) = {
        let _in_runtime = runtime.enter();
        (
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
            signal(SignalKind::hangup())?,
        )
    };
    std::thread::Builder::new()
        .name("lab-signals".into())
        .spawn(move || {
            let number = runtime.block_on(async {
                tokio::select! {
                    _ = terminate.recv() => libc::SIGTERM,
                    _ = interrupt.recv() => libc::SIGINT,
                    _ = hangup.recv() => libc::SIGHUP,
                }
            });
            eprintln!("lab: signal {number}: removing this run's labs");
            crate::netns::refuse_new_namespaces();
            remove_own_labs();
            std::process::exit(128 + number);
        })?;
    Ok(())
}

/// Removes every lab namespace (emptied of its processes first) and lab folder whose making
/// process `owned_by` picks, and the labs' API sockets that nobody serves any more.
fn remove_labs(owned_by: impl Fn(u32) -> bool) -> RemovedLabs {
    let mut removed = RemovedLabs::default();
    let Ok(output) = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
    else {
        return removed;
    };
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some((id, pid)) = lab_id(name) else {
            continue;
        };
        if !owned_by(pid) {
            continue;
        }
        removed.inodes.extend(crate::netns::inode_of(name));
        removed.ids.insert(id.to_string());
        let left = crate::netns::empty_and_delete(name, Duration::from_secs(5));
        if !left.is_empty() {
            eprintln!("lab namespace {name}: processes {left:?} would not die");
        }
        let _ = std::fs::remove_dir_all(std::env::temp_dir().join(format!("renkei-lab-{id}")));
    }
    // Once every namespace of a lab is emptied: its daemons are gone by now.
    for id in &removed.ids {
        crate::api_sockets::remove_dead(Path::new(WIREGUARD_SOCKET_DIR), id);
    }
    removed
}

/// The lab id of namespace `name` when it is a lab's (`rk<id>-...`, the id being the base-36
/// pid of the process that made it and one more digit), with that pid.
pub fn lab_id(name: &str) -> Option<(&str, u32)> {
    let (id, _) = name.strip_prefix("rk")?.split_once('-')?;
    if id.len() < 2
        || !id
            .chars()
            .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
    {
        return None;
    }
    let pid = u32::from_str_radix(&id[..id.len() - 1], 36).ok()?;
    Some((id, pid))
}

/// The host's list of congestion controls that a network namespace may choose, one kernel-wide
/// list kept by the first namespace.
const ALLOWED_TCP_CONGESTION_CONTROL: &str = "/proc/sys/net/ipv4/tcp_allowed_congestion_control";

/// Gives each of `namespaces` `algorithm` as its TCP congestion control. The kernel lets a
/// namespace other than the first choose only an algorithm on the host's allowed list (EPERM
/// otherwise), and some hosts allow only their own default (one seen here allowed `reno bbr`
/// with cubic built in). So, under a host-wide lock, the algorithm is added to that list for
/// as long as it takes to set the namespaces and the list is then put back: a namespace keeps
/// the default it was given, and the host is left as it was (but for a lab killed in those
/// milliseconds, which leaves the algorithm allowed: a permission, no socket's TCP changes).
pub fn set_tcp_congestion_control_in(
    namespaces: &[&Namespace],
    algorithm: &str,
) -> anyhow::Result<()> {
    // The list's own file is the lock (flock, released when `_lock` drops), so that one lab's
    // putting the list back cannot fall between another's widening and setting.
    let file = std::fs::File::open(ALLOWED_TCP_CONGESTION_CONTROL)
        .with_context(|| format!("opening {ALLOWED_TCP_CONGESTION_CONTROL}"))?;
    let _lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .with_context(|| format!("locking {ALLOWED_TCP_CONGESTION_CONTROL}"))?;
    let allowed = std::fs::read_to_string(ALLOWED_TCP_CONGESTION_CONTROL)
        .with_context(|| format!("reading {ALLOWED_TCP_CONGESTION_CONTROL}"))?;
    let allowed = allowed.trim();
    let widened = !allowed.split_whitespace().any(|name| name == algorithm);
    if widened {
        std::fs::write(ALLOWED_TCP_CONGESTION_CONTROL, format!("{allowed} {algorithm}"))
            .with_context(|| {
                format!("allowing {algorithm} in {ALLOWED_TCP_CONGESTION_CONTROL} (is it built in? see tcp_available_congestion_control)")
            })?;
    }
    let set = namespaces.iter().try_for_each(|ns| {
        ns.sysctl("net.ipv4.tcp_congestion_control", algorithm)
            .with_context(|| format!("{algorithm} in {}", ns.name()))
    });
    if widened {
        std::fs::write(ALLOWED_TCP_CONGESTION_CONTROL, allowed).with_context(|| {
            format!("putting {ALLOWED_TCP_CONGESTION_CONTROL} back to {allowed:?}")
        })?;
    }
    set
}
