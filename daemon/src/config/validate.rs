//! Semantic rules of a configuration: everything serde cannot express.
//!
//! Each rule reports a problem at the field it concerns and carries on, so one `renkei check`
//! run shows every problem it can. Nothing here changes the system; it only reads key files,
//! and none at all when the check runs offline (the operator's machine has none of them).

use std::collections::HashMap;
use std::fs::File;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;

use super::locate::FieldPath;
use super::schema::{Config, Direction, EspBackend, PolicyMode, Role, ServiceConfig};
use crate::keys;

/// A rule that failed, before it is given a line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where in the document.
    pub path: FieldPath,
    /// What is wrong.
    pub message: String,
}

/// Longest Linux interface name (IFNAMSIZ - 1).
const MAX_INTERFACE_NAME_BYTES: usize = 15;
/// IPv6 needs 1280; jumbo WANs allow up to 9000 minus WireGuard overhead.
const MTU_RANGE: std::ops::RangeInclusive<u16> = 1280..=8920;
/// Bounds of `tunnel.handshakes_per_sec`: below 10 a few facilities' retries already meet
/// cookies; above 50000 the limit is no longer below what one core can do in Diffie-Hellman.
const HANDSHAKES_PER_SEC_RANGE: std::ops::RangeInclusive<u32> = 10..=50_000;
const MAX_FACILITY_NAME_CHARS: usize = 200;
/// Bounds of `closed.probe_interval_secs`: often enough to notice, rarely enough to be no load.
const PROBE_INTERVAL_SECS: (u64, u64) = (5, 3600);
/// Longest `closed.alarm_after_secs` (and WireGuard's `handshake_alarm_secs`): a day.
const MAX_ALARM_AFTER_SECS: u64 = 86_400;
const MAX_SERVICE_NAME_CHARS: usize = 63;
/// Bounds of a service's `tcp_user_timeout_secs`: not below a minute (the kernels' own
/// retransmission waits after a WAN flap reach tens of seconds), at most an hour.
const TCP_USER_TIMEOUT_SECS: (u64, u64) = (60, 3600);
/// Bounds of `ipsec.idle_timeout_secs`: longer than a DPD round, at most a day.
const IPSEC_IDLE_TIMEOUT_SECS: (u64, u64) = (10, 86_400);
/// Bounds of `ipsec.connect_timeout_secs`: an IKE_SA_INIT and IKE_AUTH with a retransmission,
/// and no longer than a LAN client waits.
const IPSEC_CONNECT_TIMEOUT_SECS: (u64, u64) = (2, 120);
/// Bounds of `update.max_bundle_bytes`: a real root image is tens of MiB; beyond 4 GiB the
/// spool would crowd out the data partition.
const MAX_BUNDLE_BYTES_RANGE: (u64, u64) = (1024 * 1024, 4 * 1024 * 1024 * 1024);
/// Bounds of `management.max_push_bytes`: a facility's config is a few KiB; the box reads no
/// config file larger than [`super::MAX_CONFIG_BYTES`], so it accepts no push it could not read
/// back.
const MAX_PUSH_BYTES_RANGE: (usize, usize) = (64 * 1024, super::MAX_CONFIG_BYTES as usize);
/// Bounds of `update.health_deadline_secs`: enough for a handshake after a slow boot, short
/// enough that a broken slot is given up while someone may still be watching.
const HEALTH_DEADLINE_SECS_RANGE: (u64, u64) = (30, 1800);
/// Most servers in `time.servers` (timesyncd tries them in order; more only slows a failover).
const MAX_TIME_SERVERS: usize = 4;
/// Bounds of `time.poll_min_secs` and `time.poll_max_secs`: timesyncd takes no shorter poll
/// than 16 s; beyond 2048 s a drifting clock goes uncorrected too long.
const TIME_POLL_SECS: (u64, u64) = (16, 2048);
/// Longest `update.compatible`.
const MAX_COMPATIBLE_CHARS: usize = 128;
/// Bounds of `tunnel.failover.failover_after_secs`: longer than a handshake retransmission
/// or two, and it must stay under `handshake_alarm_secs` as well.
const FAILOVER_AFTER_SECS: (u64, u64) = (5, 600);
/// Bounds of `tunnel.failover.fail_back_after_secs`: some hysteresis, at most a day.
const FAIL_BACK_AFTER_SECS: (u64, u64) = (5, 86_400);
/// Bounds of `tunnel.failover.probe_interval_secs` (and it must be shorter than
/// `failover_after_secs`, so a live hub is heard before it is given up).
const HUB_PROBE_INTERVAL_SECS: (u64, u64) = (1, 300);
/// A certificate identity is a DNS name (at most 253), a URI or a CN; longer is a mistake.
const MAX_BOX_IDENTITY_CHARS: usize = 1024;

/// The times of a hub group, whichever carrier's.
struct FailoverTimes {
    failover_after_secs: u64,
    fail_back_after_secs: u64,
    probe_interval_secs: u64,
}

struct Checker<'a> {
    config: &'a Config,
    problems: Vec<Problem>,
    own_public_key: Option<[u8; keys::KEY_LEN]>,
    /// False offline: rules that need a file the config names are skipped.
    read_files: bool,
}

/// Checks every rule; an empty result means the config is valid. With `read_files` false no
/// file the config names is opened (`renkei check --offline`, `renkei sign`).
pub fn validate(config: &Config, read_files: bool) -> Vec<Problem> {
    let mut checker = Checker {
        config,
        problems: Vec::new(),
        own_public_key: None,
        read_files,
    };
    checker.meta();
    checker.facility();
    checker.paths();
    checker.link();
    checker.tunnel();
    checker.peers();
    checker.failover();
    checker.ipsec_failover();
    checker.closed();
    checker.ipsec();
    checker.tls();
    checker.services();
    checker.status();
    checker.management();
    checker.update();
    checker.time();
    checker.logs();
    checker.listener_conflicts();
    checker.problems
}

impl Checker<'_> {
    fn report(&mut self, path: FieldPath, message: impl Into<String>) {
        self.problems.push(Problem {
            path,
            message: message.into(),
        });
    }

    fn range<T: PartialOrd + std::fmt::Display + Copy>(
        &mut self,
        path: FieldPath,
        value: T,
        min: T,
        max: T,
    ) {
        if value < min || value > max {
            self.report(path, format!("{value} is out of range {min}..={max}"));
        }
    }

    fn readable(&mut self, path: FieldPath, file: &Path) {
        if !self.read_files {
            return;
        }
        if let Err(message) = open_regular_file(file) {
            self.report(path, message);
        }
    }

    /// A private key file must be readable by the daemon and by nobody else.
    fn private_file(&mut self, path: FieldPath, file: &Path) {
        use std::os::unix::fs::PermissionsExt;
        if !self.read_files {
            return;
        }
        match open_regular_file(file) {
            Err(message) => self.report(path, message),
            Ok(meta) => {
                let mode = meta.permissions().mode() & 0o7777;
                if mode & 0o077 != 0 {
                    self.report(
                        path,
                        format!(
                            "private key file {} has mode {mode:04o}; it must not be accessible by group or others (chmod 600)",
                            file.display()
                        ),
                    );
                }
            }
        }
    }

    /// The box's address on its link to the data centre (the tunnel or the closed network);
    /// `None` when the config has neither section (reported by `link`).
    fn tunnel_address(&self) -> Option<IpAddr> {
        match (&self.config.tunnel, &self.config.closed, &self.config.ipsec) {
            (Some(tunnel), _, _) => Some(tunnel.address.addr()),
            (None, Some(closed), _) => Some(closed.address.addr()),
            (None, None, Some(ipsec)) => Some(ipsec.address.addr()),
            (None, None, None) => None,
        }
    }

    /// What the data-centre side of the box is called in messages.
    fn side(&self) -> &'static str {
        match (&self.config.tunnel, &self.config.closed, &self.config.ipsec) {
            (None, Some(_), _) => "closed network",
            (None, None, Some(_)) => "IPsec",
            _ => "tunnel",
        }
    }

    /// True when `ip` is the box's link address, inside the link's prefix, or routed to the
    /// data centre (a peer's allowed IPs, or a data-centre prefix on a closed network).
    /// An IPv4-mapped IPv6 address (`::ffff:198.19.0.20`) counts as the IPv4 address it maps.
    fn is_tunnel_side(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        match (&self.config.tunnel, &self.config.closed) {
            (Some(tunnel), _) => {
                tunnel.address.trunc().contains(&ip)
                    || tunnel
                        .peers
                        .iter()
                        .any(|p| p.allowed_ips.iter().any(|n| n.contains(&ip)))
            }
            (None, Some(closed)) => {
                closed.address.trunc().contains(&ip)
                    || closed.data_centre_prefixes.iter().any(|n| n.contains(&ip))
            }
            (None, None) => self.config.ipsec.as_ref().is_some_and(|ipsec| {
                ipsec.address.trunc().contains(&ip)
                    || ipsec.data_centre_prefixes.iter().any(|n| n.contains(&ip))
            }),
        }
    }

    fn meta(&mut self) {
        if self.config.meta.version == 0 {
            self.report(
                FieldPath::root("meta").key("version"),
                "must be 1 or greater",
            );
        }
        if let Some(name) = &self.config.meta.box_identity {
            let path = FieldPath::root("meta").key("box");
            if name.trim().is_empty() {
                self.report(
                    path,
                    "must name the box's certificate identity, not be empty",
                );
            } else if name.trim() != name || name.chars().any(char::is_control) {
                self.report(
                    path,
                    "must be a certificate identity without surrounding spaces or control characters",
                );
            } else if name.chars().count() > MAX_BOX_IDENTITY_CHARS {
                self.report(
                    path,
                    format!("is longer than {MAX_BOX_IDENTITY_CHARS} characters"),
                );
            }
        }
    }

    fn facility(&mut self) {
        let name = &self.config.facility.name;
        let path = FieldPath::root("facility").key("name");
        if name.trim().is_empty() {
            self.report(path, "must not be empty");
        } else if name.chars().count() > MAX_FACILITY_NAME_CHARS {
            self.report(
                path,
                format!("is longer than {MAX_FACILITY_NAME_CHARS} characters"),
            );
        } else if name.chars().any(char::is_control) {
            self.report(path, "must not contain control characters");
        }
    }

    fn paths(&mut self) {
        let paths = &self.config.paths;
        for (key, dir) in [
            ("state_dir", &paths.state_dir),
            ("runtime_dir", &paths.runtime_dir),
            ("wireguard_socket_dir", &paths.wireguard_socket_dir),
            ("journal_dir", &paths.journal_dir),
        ] {
            if !dir.is_absolute() {
                self.report(
                    FieldPath::root("paths").key(key),
                    format!("{} must be an absolute path", dir.display()),
                );
            }
        }
    }

    /// Exactly one kind of link to the data centre: `[tunnel]`, `[closed]` or `[ipsec]`.
    fn link(&mut self) {
        let present: Vec<&str> = [
            ("tunnel", self.config.tunnel.is_some()),
            ("closed", self.config.closed.is_some()),
            ("ipsec", self.config.ipsec.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, present)| present.then_some(name))
        .collect();
        match present.as_slice() {
            [] => self.report(
                FieldPath::root("tunnel"),
                "one of [tunnel] (WireGuard), [closed] (a closed network) or [ipsec] (IKEv2/IPsec) is required",
            ),
            [_] => {}
            [_, more @ ..] => {
                for name in more {
                    self.report(
                        FieldPath::root(name),
                        format!(
                            "a box has exactly one of [tunnel] (WireGuard), [closed] (a closed network) and [ipsec] (IKEv2/IPsec); [{}] is already given",
                            present[0]
                        ),
                    );
                }
            }
        }
    }

    fn interface_name(&mut self, path: FieldPath, name: &str) {
        let valid_name = !name.is_empty()
            && name.len() <= MAX_INTERFACE_NAME_BYTES
            && name != "."
            && name != ".."
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid_name {
            self.report(
                path,
                format!("{name:?} is not a valid interface name (1 to {MAX_INTERFACE_NAME_BYTES} letters, digits, '-', '_', '.')"),
            );
        }
    }

    /// The box's own address on its link: a host address, not a special one.
    fn host_address(&mut self, path: FieldPath, address: IpNet, what: &str) {
        let ip = address.addr();
        if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() {
            self.report(path, format!("{ip} cannot be a {what} address"));
        } else if let IpNet::V4(v4) = address {
            if v4.prefix_len() < 31 && (v4.addr() == v4.network() || v4.addr() == v4.broadcast()) {
                self.report(
                    path,
                    format!(
                        "{} is the network or broadcast address of {}; give the box a host address",
                        v4.addr(),
                        v4.trunc()
                    ),
                );
            }
        }
    }

    fn tunnel(&mut self) {
        let Some(tunnel) = &self.config.tunnel else {
            return;
        };
        let base = FieldPath::root("tunnel");
        self.interface_name(base.key("interface"), &tunnel.interface);

        if self.read_files {
            match keys::read_private_key(&tunnel.private_key_file) {
                Ok(secret) => self.own_public_key = Some(keys::public_key_of(&secret)),
                Err(e) => self.report(base.key("private_key_file"), e.to_string()),
            }
        }

        self.host_address(base.key("address"), tunnel.address, "tunnel");

        if !MTU_RANGE.contains(&tunnel.mtu) {
            self.report(
                base.key("mtu"),
                format!(
                    "{} is out of range {}..={}",
                    tunnel.mtu,
                    MTU_RANGE.start(),
                    MTU_RANGE.end()
                ),
            );
        }

        if let Some(rate) = tunnel.handshakes_per_sec {
            if !HANDSHAKES_PER_SEC_RANGE.contains(&rate) {
                self.report(
                    base.key("handshakes_per_sec"),
                    format!(
                        "{rate} is out of range {}..={}",
                        HANDSHAKES_PER_SEC_RANGE.start(),
                        HANDSHAKES_PER_SEC_RANGE.end()
                    ),
                );
            }
        }

        let role = self.config.facility.role;
        if role == Role::Hub && tunnel.listen_port == 0 {
            self.report(
                base.key("listen_port"),
                "the hub needs a fixed listen_port: facilities connect to it",
            );
        }

        let policy = &tunnel.policy;
        let ppath = base.key("policy");
        if role == Role::Hub && self.config.policy_mode() == PolicyMode::OnDemand {
            self.report(
                ppath.key("mode"),
                "the hub must be always_on: facilities connect to it at any time",
            );
        }
        self.range(
            ppath.key("idle_timeout_secs"),
            policy.idle_timeout_secs,
            10,
            86_400,
        );
        self.range(
            ppath.key("connect_timeout_secs"),
            policy.connect_timeout_secs,
            1,
            300,
        );
        self.range(
            ppath.key("handshake_alarm_secs"),
            policy.handshake_alarm_secs,
            30,
            86_400,
        );
        self.checkins(
            &ppath,
            policy.checkin_interval_secs,
            policy.checkin_window_secs,
        );
    }

    /// An on-demand link's check-ins (in `path`): 0 (none), or every 60 s to a day, each
    /// holding the link up for at least 10 s and less than the interval.
    fn checkins(&mut self, path: &FieldPath, interval_secs: u64, window_secs: u64) {
        if interval_secs == 0 {
            return;
        }
        self.range(path.key("checkin_interval_secs"), interval_secs, 60, 86_400);
        if window_secs < 10 || window_secs >= interval_secs {
            self.report(
                path.key("checkin_window_secs"),
                format!(
                    "{window_secs} must be at least 10 and shorter than checkin_interval_secs ({interval_secs})"
                ),
            );
        }
    }

    fn peers(&mut self) {
        let Some(tunnel) = &self.config.tunnel else {
            return;
        };
        let base = FieldPath::root("tunnel").key("peer");
        if tunnel.peers.is_empty() {
            self.report(
                FieldPath::root("tunnel"),
                "needs at least one [[tunnel.peer]]",
            );
        }
        let role = self.config.facility.role;
        let own_ip = tunnel.address.addr();
        let mut names: HashMap<&str, usize> = HashMap::new();
        let mut public_keys: HashMap<[u8; keys::KEY_LEN], usize> = HashMap::new();
        let mut routes: Vec<(IpNet, usize)> = Vec::new();
        // Members of a hub group share their prefixes on purpose; `failover` checks that they
        // agree. Any other overlap is refused as before.
        let group: Vec<&str> = match (&tunnel.failover, role) {
            (Some(failover), Role::Disclosing | Role::Viewing) => {
                failover.hubs.iter().map(String::as_str).collect()
            }
            _ => Vec::new(),
        };
        let grouped = |name: &str| group.contains(&name);

        for (i, peer) in tunnel.peers.iter().enumerate() {
            let path = base.index(i);
            if peer.name.trim().is_empty() {
                self.report(path.key("name"), "must not be empty");
            } else if let Some(first) = names.insert(&peer.name, i) {
                self.report(
                    path.key("name"),
                    format!(
                        "peer name {:?} is already used by tunnel.peer[{first}]",
                        peer.name
                    ),
                );
            }

            match keys::decode_key(&peer.public_key) {
                Err(e) => self.report(path.key("public_key"), e.to_string()),
                Ok(key) => {
                    if Some(key) == self.own_public_key {
                        self.report(
                            path.key("public_key"),
                            "is this box's own public key: a peer must be the other end",
                        );
                    } else if let Some(first) = public_keys.insert(key, i) {
                        self.report(
                            path.key("public_key"),
                            format!("the same public key is already used by tunnel.peer[{first}]"),
                        );
                    }
                }
            }

            match &peer.endpoint {
                None if role != Role::Hub => self.report(
                    path.key("endpoint"),
                    "is required on a facility box: it must know where the data centre is",
                ),
                None => {}
                Some(endpoint) => {
                    if let Err(why) = parse_host_port(endpoint) {
                        self.report(path.key("endpoint"), why);
                    }
                }
            }

            if peer.allowed_ips.is_empty() {
                self.report(
                    path.key("allowed_ips"),
                    "must name at least one prefix routed to this peer",
                );
            }
            for (j, net) in peer.allowed_ips.iter().enumerate() {
                let npath = path.key("allowed_ips").index(j);
                if net.trunc() != *net {
                    self.report(
                        npath,
                        format!("{net} has host bits set; did you mean {}?", net.trunc()),
                    );
                    continue;
                }
                if net.contains(&own_ip) {
                    self.report(
                        npath,
                        format!("{net} contains this box's own tunnel address {own_ip}"),
                    );
                    continue;
                }
                if let Some((other, owner)) = routes.iter().find(|(other, owner)| {
                    (other.contains(net) || net.contains(other))
                        && !(grouped(&peer.name) && grouped(&tunnel.peers[*owner].name))
                }) {
                    let owner_name = &tunnel.peers[*owner].name;
                    self.report(
                        npath,
                        format!("{net} overlaps {other} of peer {owner_name:?}"),
                    );
                    continue;
                }
                routes.push((*net, i));
            }

            if let Some(keepalive) = peer.persistent_keepalive_secs {
                self.range(path.key("persistent_keepalive_secs"), keepalive, 0, 3600);
            }
        }
    }

    /// `[tunnel.failover]`: a facility's hub group names at least two distinct peers that
    /// route exactly the same prefixes, with times that fail over before the alarm.
    fn failover(&mut self) {
        let Some(tunnel) = &self.config.tunnel else {
            return;
        };
        let Some(failover) = &tunnel.failover else {
            return;
        };
        let base = FieldPath::root("tunnel").key("failover");
        if self.config.facility.role == Role::Hub {
            self.report(
                base,
                "a hub group is for facility boxes: the hub answers every facility itself and has no backup hub to move to",
            );
            return;
        }
        let hubs = base.key("hubs");
        if failover.hubs.len() < 2 {
            self.report(
                hubs.clone(),
                format!(
                    "names {} hub(s); a group needs at least two (a primary and a backup)",
                    failover.hubs.len()
                ),
            );
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let mut first_member: Option<(&str, Vec<IpNet>)> = None;
        for (i, name) in failover.hubs.iter().enumerate() {
            let path = hubs.index(i);
            if let Some(first) = seen.insert(name, i) {
                self.report(
                    path,
                    format!("{name:?} is already named at tunnel.failover.hubs[{first}]"),
                );
                continue;
            }
            let Some(peer) = tunnel.peers.iter().find(|p| p.name == *name) else {
                self.report(path, format!("no [[tunnel.peer]] is named {name:?}"));
                continue;
            };
            let mut prefixes = peer.allowed_ips.clone();
            prefixes.sort();
            prefixes.dedup();
            match &first_member {
                None => first_member = Some((name, prefixes)),
                Some((first, theirs)) if *theirs != prefixes => {
                    let show = |nets: &[IpNet]| {
                        nets.iter()
                            .map(IpNet::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    };
                    self.report(
                        path,
                        format!(
                            "peer {name:?} routes [{}] but {first:?} routes [{}]: the hubs of a group must route the same prefixes",
                            show(&prefixes),
                            show(theirs)
                        ),
                    );
                }
                Some(_) => {}
            }
        }
        self.failover_timers(
            &base,
            FailoverTimes {
                failover_after_secs: failover.failover_after_secs,
                fail_back_after_secs: failover.fail_back_after_secs,
                probe_interval_secs: failover.probe_interval_secs,
            },
            (
                "tunnel.policy.handshake_alarm_secs",
                tunnel.policy.handshake_alarm_secs,
            ),
        );
    }

    /// The times of a hub group (WireGuard's or IPsec's): in range, failing over before
    /// `alarm` (its field name and value), and probing more often than a hub is given up.
    fn failover_timers(&mut self, base: &FieldPath, times: FailoverTimes, alarm: (&str, u64)) {
        self.range(
            base.key("failover_after_secs"),
            times.failover_after_secs,
            FAILOVER_AFTER_SECS.0,
            FAILOVER_AFTER_SECS.1,
        );
        let (alarm_field, alarm) = alarm;
        if times.failover_after_secs >= alarm {
            self.report(
                base.key("failover_after_secs"),
                format!(
                    "{} must be shorter than {alarm_field} ({alarm}): the box should move to the backup hub before the alarm",
                    times.failover_after_secs
                ),
            );
        }
        self.range(
            base.key("fail_back_after_secs"),
            times.fail_back_after_secs,
            FAIL_BACK_AFTER_SECS.0,
            FAIL_BACK_AFTER_SECS.1,
        );
        self.range(
            base.key("probe_interval_secs"),
            times.probe_interval_secs,
            HUB_PROBE_INTERVAL_SECS.0,
            HUB_PROBE_INTERVAL_SECS.1,
        );
        if times.probe_interval_secs >= times.failover_after_secs {
            self.report(
                base.key("probe_interval_secs"),
                format!(
                    "{} must be shorter than failover_after_secs ({}): a live hub must be heard before it is given up",
                    times.probe_interval_secs, times.failover_after_secs
                ),
            );
        }
    }

    /// `[ipsec.failover]`: a backup concentrator that is another one than the primary, outside
    /// the SA's prefixes, on an always-on facility box, with a hub group's times.
    fn ipsec_failover(&mut self) {
        let Some(ipsec) = &self.config.ipsec else {
            return;
        };
        let Some(failover) = &ipsec.failover else {
            return;
        };
        let base = FieldPath::root("ipsec").key("failover");
        if self.config.facility.role == Role::Hub {
            self.report(
                base,
                "a backup concentrator is for facility boxes: the hub has no data centre to move to",
            );
            return;
        }
        let address = base.key("backup_remote_address");
        let backup = failover.backup_remote_address;
        if backup == ipsec.remote_address {
            self.report(
                address.clone(),
                format!("{backup} is ipsec.remote_address already: the backup must be another concentrator"),
            );
        }
        if backup == ipsec.wan_address || backup == ipsec.address.addr() {
            self.report(
                address.clone(),
                format!("{backup} is the box's own address, not a concentrator"),
            );
        }
        if backup.is_unspecified() || backup.is_multicast() || backup.is_loopback() {
            self.report(
                address.clone(),
                format!("{backup} cannot be a peer address"),
            );
        }
        if let Some(net) = ipsec
            .data_centre_prefixes
            .iter()
            .find(|n| n.contains(&backup))
        {
            self.report(
                address,
                format!("{net} of ipsec.data_centre_prefixes contains it: IKE's own packets would be routed into the SA"),
            );
        }
        if let Some(id) = &failover.backup_remote_id {
            if id.trim().is_empty() || id.chars().any(char::is_control) {
                self.report(
                    base.key("backup_remote_id"),
                    "must name the backup concentrator's certificate identity",
                );
            }
        }
        if self.config.policy_mode() != PolicyMode::AlwaysOn {
            self.report(
                base.clone(),
                "needs ipsec.mode = \"always_on\": an on-demand IPsec box has no backup concentrator yet",
            );
        }
        self.failover_timers(
            &base,
            FailoverTimes {
                failover_after_secs: failover.failover_after_secs,
                fail_back_after_secs: failover.fail_back_after_secs,
                probe_interval_secs: failover.probe_interval_secs,
            },
            ("ipsec.alarm_after_secs", ipsec.alarm_after_secs),
        );
    }

    /// `[closed]`: where the box is on the closed network, what it may dial and how it probes.
    fn closed(&mut self) {
        let Some(closed) = &self.config.closed else {
            return;
        };
        let base = FieldPath::root("closed");
        self.interface_name(base.key("interface"), &closed.interface);
        self.host_address(base.key("address"), closed.address, "closed-network");
        let own_ip = closed.address.addr();

        self.data_centre_prefixes(
            base.key("data_centre_prefixes"),
            &closed.data_centre_prefixes,
            own_ip,
        );

        match closed.probe_endpoint {
            Some(probe) => {
                let probe_ip = probe.ip().to_canonical();
                if probe.port() == 0 {
                    self.report(base.key("probe_endpoint"), "needs a port other than 0");
                }
                if !closed
                    .data_centre_prefixes
                    .iter()
                    .any(|n| n.contains(&probe_ip))
                {
                    self.report(
                        base.key("probe_endpoint"),
                        format!("{probe_ip} is not inside data_centre_prefixes: the probe must reach the data centre"),
                    );
                }
            }
            None if self.config.facility.role != Role::Hub
                && self.config.policy_mode() == PolicyMode::AlwaysOn =>
            {
                self.report(
                    base.clone(),
                    "an always-on facility needs probe_endpoint: the data-centre endpoint whose answer proves the link",
                );
            }
            None => {}
        }

        if self.config.facility.role == Role::Hub
            && self.config.policy_mode() == PolicyMode::OnDemand
        {
            self.report(
                base.key("mode"),
                "the hub must be always_on: facilities connect to it at any time",
            );
        }
        self.range(
            base.key("probe_interval_secs"),
            closed.probe_interval_secs,
            PROBE_INTERVAL_SECS.0,
            PROBE_INTERVAL_SECS.1,
        );
        if closed.probe_timeout_secs == 0
            || closed.probe_timeout_secs >= closed.probe_interval_secs.max(2)
        {
            self.report(
                base.key("probe_timeout_secs"),
                format!(
                    "{} must be at least 1 and shorter than probe_interval_secs ({})",
                    closed.probe_timeout_secs, closed.probe_interval_secs
                ),
            );
        }
        if closed.alarm_after_secs < closed.probe_interval_secs
            || closed.alarm_after_secs > MAX_ALARM_AFTER_SECS
        {
            self.report(
                base.key("alarm_after_secs"),
                format!(
                    "{} must be at least probe_interval_secs ({}) and at most {MAX_ALARM_AFTER_SECS}",
                    closed.alarm_after_secs, closed.probe_interval_secs
                ),
            );
        }
    }

    /// The data centre's prefixes: at least one, each a network (no host bits), not
    /// everywhere, not containing the box's own address, none overlapping another.
    fn data_centre_prefixes(
        &mut self,
        prefixes_path: FieldPath,
        prefixes: &[IpNet],
        own_ip: IpAddr,
    ) {
        if prefixes.is_empty() {
            self.report(
                prefixes_path.clone(),
                "must name at least one data-centre prefix: outbound services dial only these",
            );
        }
        let mut seen: Vec<IpNet> = Vec::new();
        for (i, net) in prefixes.iter().enumerate() {
            let path = prefixes_path.index(i);
            if net.trunc() != *net {
                self.report(
                    path,
                    format!("{net} has host bits set; did you mean {}?", net.trunc()),
                );
            } else if net.prefix_len() == 0 {
                self.report(
                    path,
                    format!("{net} is everywhere: name the data centre's own prefixes"),
                );
            } else if net.contains(&own_ip) {
                self.report(
                    path,
                    format!("{net} contains this box's own address {own_ip}"),
                );
            } else if let Some(other) = seen
                .iter()
                .find(|other| other.contains(net) || net.contains(*other))
            {
                self.report(path, format!("{net} overlaps {other}"));
            } else {
                seen.push(*net);
            }
        }
    }

    /// `[ipsec]`: the box's own address, the concentrator, the profile's proposals and the
    /// policy timers. Keys of other kinds of link are unknown here (a parse error at their line).
    fn ipsec(&mut self) {
        let Some(ipsec) = &self.config.ipsec else {
            return;
        };
        let base = FieldPath::root("ipsec");
        self.interface_name(base.key("interface"), &ipsec.interface);
        self.host_address(base.key("address"), ipsec.address, "IPsec");
        let own_ip = ipsec.address.addr();
        if ipsec.address.prefix_len() != ipsec.address.max_prefix_len() {
            self.report(
                base.key("address"),
                format!(
                    "{} must be a single host ({}/{}): it is the SA's only local traffic selector",
                    ipsec.address,
                    own_ip,
                    ipsec.address.max_prefix_len()
                ),
            );
        }
        if ipsec.wan_address == own_ip {
            self.report(
                base.key("address"),
                "must not be the WAN address: IKE's own packets would be routed into the SA",
            );
        }
        for (key, ip) in [
            ("wan_address", ipsec.wan_address),
            ("remote_address", ipsec.remote_address),
        ] {
            if ip.is_unspecified() || ip.is_multicast() {
                self.report(base.key(key), format!("{ip} cannot be a peer address"));
            }
        }
        self.data_centre_prefixes(
            base.key("data_centre_prefixes"),
            &ipsec.data_centre_prefixes,
            own_ip,
        );
        if let Some(net) = ipsec
            .data_centre_prefixes
            .iter()
            .find(|n| n.contains(&ipsec.remote_address) || n.contains(&ipsec.wan_address))
        {
            self.report(
                base.key("data_centre_prefixes"),
                format!(
                    "{net} contains a WAN address: IKE's own packets would be routed into the SA"
                ),
            );
        }
        if ipsec.remote_id.trim().is_empty() || ipsec.remote_id.chars().any(char::is_control) {
            self.report(
                base.key("remote_id"),
                "must name the concentrator's certificate identity",
            );
        }
        match self.config.ipsec_local_id() {
            None => self.report(
                base.clone(),
                "needs local_id (or meta.box): the identity the box's certificate carries",
            ),
            Some(id) if id.trim().is_empty() || id.chars().any(char::is_control) => self.report(
                base.key("local_id"),
                "must name the box's certificate identity",
            ),
            Some(_) => {}
        }
        if ipsec.ike_proposals.is_empty() {
            self.report(
                base.key("ike_proposals"),
                "must offer at least one proposal",
            );
        }
        if ipsec.esp_proposals.is_empty() {
            self.report(
                base.key("esp_proposals"),
                "must offer at least one proposal",
            );
        }
        if self.config.facility.role == Role::Hub {
            self.report(
                base.clone(),
                "the hub is not an IPsec box: the data centre's concentrator answers the facilities",
            );
        }
        if self.config.tls.is_none() {
            self.report(
                base.clone(),
                "needs [tls]: the box authenticates to the concentrator with its TLS certificate",
            );
        }
        self.range(
            base.key("idle_timeout_secs"),
            ipsec.idle_timeout_secs,
            IPSEC_IDLE_TIMEOUT_SECS.0,
            IPSEC_IDLE_TIMEOUT_SECS.1,
        );
        self.range(
            base.key("connect_timeout_secs"),
            ipsec.connect_timeout_secs,
            IPSEC_CONNECT_TIMEOUT_SECS.0,
            IPSEC_CONNECT_TIMEOUT_SECS.1,
        );
        self.checkins(
            &base,
            ipsec.checkin_interval_secs,
            ipsec.checkin_window_secs,
        );
        self.range(
            base.key("alarm_after_secs"),
            ipsec.alarm_after_secs,
            IPSEC_CONNECT_TIMEOUT_SECS.0,
            MAX_ALARM_AFTER_SECS,
        );
        match (ipsec.esp_backend, &ipsec.esp_interface) {
            (EspBackend::Kernel, None) => self.report(
                base.key("esp_backend"),
                "with the kernel's ESP, name esp_interface: the WAN interface decrypted packets arrive on",
            ),
            (_, Some(name)) => self.interface_name(base.key("esp_interface"), name),
            (EspBackend::Libipsec, None) => {}
        }
        for (key, file) in [
            ("vici_socket", &ipsec.vici_socket),
            ("charon_log_file", &ipsec.charon_log_file),
        ] {
            if let Some(file) = file {
                if !file.is_absolute() {
                    self.report(
                        base.key(key),
                        format!("{} must be an absolute path", file.display()),
                    );
                }
            }
        }
    }

    fn tls(&mut self) {
        let needs_tls = !self.config.services.is_empty() || self.config.management.is_some();
        let Some(tls) = &self.config.tls else {
            if needs_tls {
                self.report(
                    FieldPath::root("tls"),
                    "a [tls] section is required: services and the management API use the box's certificate",
                );
            }
            return;
        };
        let base = FieldPath::root("tls");
        self.readable(base.key("certificate_file"), &tls.certificate_file);
        self.private_file(base.key("private_key_file"), &tls.private_key_file);
        self.readable(base.key("ca_file"), &tls.ca_file);
        if let Some(crl) = &tls.crl_file {
            // Whether its issuer is the CA is checked where it is loaded (`crate::preflight`).
            self.readable(base.key("crl_file"), crl);
        }
    }

    /// An identity allowlist entry: a DNS name, URI or common name, never empty.
    fn identities(&mut self, path: FieldPath, identities: &[String]) {
        for (j, identity) in identities.iter().enumerate() {
            if identity.trim().is_empty() || identity.chars().any(char::is_control) {
                self.report(
                    path.index(j),
                    "must be a non-empty DNS name, URI or common name",
                );
            }
        }
    }

    fn services(&mut self) {
        let base = FieldPath::root("service");
        let mut names: HashMap<&str, usize> = HashMap::new();
        for (i, service) in self.config.services.iter().enumerate() {
            let path = base.index(i);
            let name = &service.name;
            let valid_name = !name.is_empty()
                && name.len() <= MAX_SERVICE_NAME_CHARS
                && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            if !valid_name {
                self.report(
                    path.key("name"),
                    format!("{name:?} is not a valid service name (lower-case letters, digits and '-', at most {MAX_SERVICE_NAME_CHARS})"),
                );
            } else if let Some(first) = names.insert(name, i) {
                self.report(
                    path.key("name"),
                    format!("service name {name:?} is already used by service[{first}]"),
                );
            }
            if service.listen.port() == 0 {
                self.report(path.key("listen"), "needs a port other than 0");
            }
            match service.direction {
                Direction::Inbound => self.inbound_service(&path, service),
                Direction::Outbound => self.outbound_service(&path, service),
            }
            self.range(
                path.key("max_connections"),
                service.max_connections,
                1,
                100_000,
            );
            self.range(
                path.key("handshake_timeout_secs"),
                service.handshake_timeout_secs,
                1,
                300,
            );
            self.range(
                path.key("idle_timeout_secs"),
                service.idle_timeout_secs,
                1,
                86_400,
            );
            self.range(
                path.key("tcp_user_timeout_secs"),
                service.tcp_user_timeout_secs,
                TCP_USER_TIMEOUT_SECS.0,
                TCP_USER_TIMEOUT_SECS.1,
            );
        }
    }

    fn inbound_service(&mut self, path: &FieldPath, service: &ServiceConfig) {
        let side = self.side();
        let tunnel_ip = self.tunnel_address();
        if self.config.facility.role == Role::Viewing {
            self.report(
                path.key("direction"),
                "a viewing facility offers no inbound services (role = \"viewing\")",
            );
        }
        if let Some(tunnel_ip) = tunnel_ip.filter(|ip| *ip != service.listen.ip()) {
            self.report(
                path.key("listen"),
                format!(
                    "inbound services listen on the box's {side} address {tunnel_ip}, not {}",
                    service.listen.ip()
                ),
            );
        }
        if service.allowed_identities.is_empty() {
            self.report(
                path.key("allowed_identities"),
                "an inbound service must name the client identities it accepts",
            );
        }
        for (j, identity) in service.allowed_identities.iter().enumerate() {
            if identity.trim().is_empty() || identity.chars().any(char::is_control) {
                self.report(
                    path.key("allowed_identities").index(j),
                    "must be a non-empty DNS name, URI or common name",
                );
            }
        }
        if service.server_name.is_some() {
            self.report(
                path.key("server_name"),
                "applies to outbound services; inbound services check allowed_identities",
            );
        }
        match parse_host_port(&service.target) {
            Err(why) => self.report(path.key("target"), why),
            Ok((host, _)) => {
                if let Ok(ip) = host.parse::<IpAddr>() {
                    if self.is_tunnel_side(ip) {
                        self.report(
                            path.key("target"),
                            format!("inbound targets are on the LAN; {ip} is on the {side} side"),
                        );
                    }
                }
            }
        }
    }

    fn outbound_service(&mut self, path: &FieldPath, service: &ServiceConfig) {
        let side = self.side();
        // A socket bound to `::ffff:a.b.c.d` listens on IPv4 a.b.c.d: judge that address.
        let ip = service.listen.ip().to_canonical();
        if ip.is_unspecified() {
            self.report(
                path.key("listen"),
                format!("{ip} would also listen on the {side}; name the box's LAN address"),
            );
        } else if self.is_tunnel_side(ip) {
            self.report(
                path.key("listen"),
                format!("outbound services listen on the LAN; {ip} is on the {side} side"),
            );
        }
        if !service.allowed_identities.is_empty() {
            self.report(
                path.key("allowed_identities"),
                "applies to inbound services; outbound services verify server_name",
            );
        }
        match &service.server_name {
            None => self.report(
                path.key("server_name"),
                "an outbound service must name the server certificate it expects",
            ),
            Some(name) if !is_dns_name(name) => self.report(
                path.key("server_name"),
                format!("{name:?} is not a valid DNS name"),
            ),
            Some(_) => {}
        }
        match service.target.parse::<SocketAddr>() {
            Err(_) => self.report(
                path.key("target"),
                format!(
                    "{:?} must be an IP address and port inside the {side}",
                    service.target
                ),
            ),
            Ok(target) => {
                let ip = target.ip().to_canonical();
                match (&self.config.tunnel, &self.config.closed) {
                    (Some(tunnel), _) => {
                        let routed = tunnel
                            .peers
                            .iter()
                            .any(|p| p.allowed_ips.iter().any(|n| n.contains(&target.ip())));
                        if !routed {
                            self.report(
                                path.key("target"),
                                format!(
                                    "{} is not inside any peer's allowed_ips: it would not go through the tunnel",
                                    target.ip()
                                ),
                            );
                        }
                    }
                    (None, Some(closed)) => {
                        if !closed.data_centre_prefixes.iter().any(|n| n.contains(&ip)) {
                            self.report(
                                path.key("target"),
                                format!(
                                    "{ip} is not inside closed.data_centre_prefixes: the box dials only the data centre"
                                ),
                            );
                        }
                    }
                    (None, None) => {
                        if let Some(ipsec) = &self.config.ipsec {
                            if !ipsec.data_centre_prefixes.iter().any(|n| n.contains(&ip)) {
                                self.report(
                                    path.key("target"),
                                    format!(
                                        "{ip} is not inside ipsec.data_centre_prefixes: the box dials only the data centre, through the SA"
                                    ),
                                );
                            }
                        }
                    }
                }
                if target.port() == 0 {
                    self.report(path.key("target"), "needs a port other than 0");
                }
            }
        }
    }

    fn status(&mut self) {
        let Some(status) = &self.config.status else {
            return;
        };
        let base = FieldPath::root("status");
        let side = self.side();
        let ip = status.listen.ip().to_canonical();
        if ip.is_unspecified() || self.is_tunnel_side(ip) {
            self.report(
                base.key("listen"),
                format!("the status page is for the LAN; {ip} is on the {side} side or everywhere"),
            );
        }
        match argon2::PasswordHash::new(&status.admin_password_hash) {
            Ok(hash) if hash.algorithm.as_str() == "argon2id" => {}
            Ok(hash) => self.report(
                base.key("admin_password_hash"),
                format!(
                    "uses {}; only argon2id hashes are accepted (make one with `renkei passwd`)",
                    hash.algorithm
                ),
            ),
            Err(_) => self.report(
                base.key("admin_password_hash"),
                "is not an argon2id hash string (make one with `renkei passwd`)",
            ),
        }
        match (&status.certificate_file, &status.private_key_file) {
            (Some(cert), Some(key)) => {
                self.readable(base.key("certificate_file"), cert);
                self.private_file(base.key("private_key_file"), key);
            }
            (None, None) => {}
            (Some(_), None) => self.report(
                base.key("certificate_file"),
                "needs private_key_file as well",
            ),
            (None, Some(_)) => self.report(
                base.key("private_key_file"),
                "needs certificate_file as well",
            ),
        }
        self.identities(base.key("metrics_identities"), &status.metrics_identities);
        let scrapers_named = !status.metrics_identities.is_empty()
            || self.config.management.is_some()
            || self.config.tls.is_none();
        if status.metrics_listen.is_some() && !scrapers_named {
            self.report(
                base.key("metrics_identities"),
                "name the client identities that may read metrics_listen (there is no [management] whose operator_identities would be used): every box has a certificate of the same CA",
            );
        }
        if let (Some(metrics), Some(own)) = (status.metrics_listen, self.tunnel_address()) {
            if metrics.ip() != own {
                self.report(
                    base.key("metrics_listen"),
                    format!("the operator's metrics listener goes on the {side} address {own}"),
                );
            }
        }
        self.range(
            base.key("session_ttl_secs"),
            status.session_ttl_secs,
            60,
            86_400,
        );
    }

    fn management(&mut self) {
        let Some(management) = &self.config.management else {
            return;
        };
        let base = FieldPath::root("management");
        let side = self.side();
        if let Some(tunnel_ip) = self
            .tunnel_address()
            .filter(|ip| *ip != management.listen.ip())
        {
            self.report(
                base.key("listen"),
                format!(
                    "the management API listens only on the {side} address {tunnel_ip}, never on the LAN"
                ),
            );
        }
        self.readable(base.key("operator_ca_file"), &management.operator_ca_file);
        if let Some(crl) = &management.operator_crl_file {
            self.readable(base.key("operator_crl_file"), crl);
        }
        if management.operator_identities.is_empty() {
            self.report(
                base.key("operator_identities"),
                "must name at least one operator client identity: boxes have certificates from the same CA",
            );
        }
        self.identities(
            base.key("operator_identities"),
            &management.operator_identities,
        );
        let current = (
            &management.operator_signing_key_file,
            &management.operator_signing_key,
        );
        match current {
            (None, None) => self.report(
                base.clone(),
                "needs the operator's config signing key: operator_signing_key_file or operator_signing_key",
            ),
            _ => self.signing_key(&base, "operator_signing_key", current),
        }
        self.signing_key(
            &base,
            "next_operator_signing_key",
            (
                &management.next_operator_signing_key_file,
                &management.next_operator_signing_key,
            ),
        );
        self.range(
            base.key("confirm_timeout_secs"),
            management.confirm_timeout_secs,
            30,
            3600,
        );
        self.range(
            base.key("max_push_bytes"),
            management.max_push_bytes,
            MAX_PUSH_BYTES_RANGE.0,
            MAX_PUSH_BYTES_RANGE.1,
        );
    }

    fn logs(&mut self) {
        let Some(logs) = &self.config.logs else {
            return;
        };
        let base = FieldPath::root("logs");
        let path = base.key("upload_service");
        let Some(service) = self
            .config
            .services
            .iter()
            .find(|s| s.name == logs.upload_service)
        else {
            let names: Vec<&str> = self
                .config
                .services
                .iter()
                .map(|s| s.name.as_str())
                .collect();
            self.report(
                path,
                format!(
                    "names no [[service]] ('{}'; services here: {})",
                    logs.upload_service,
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                ),
            );
            return;
        };
        if service.direction != Direction::Outbound {
            self.report(
                path,
                format!(
                    "service '{}' is {}: the upload needs an outbound service towards the collector",
                    service.name,
                    service.direction.as_str()
                ),
            );
        } else if !service.listen.ip().is_loopback() {
            self.report(
                path,
                format!(
                    "service '{}' listens on {}: the uploader posts plain HTTP, so its service must listen on loopback (127.0.0.1)",
                    service.name, service.listen
                ),
            );
        }
    }

    fn time(&mut self) {
        let Some(time) = &self.config.time else {
            return;
        };
        let base = FieldPath::root("time");
        if time.servers.is_empty() || time.servers.len() > MAX_TIME_SERVERS {
            self.report(
                base.key("servers"),
                format!(
                    "must name 1 to {MAX_TIME_SERVERS} NTP servers (remove [time] to keep the image's default)"
                ),
            );
        }
        for (i, server) in time.servers.iter().enumerate() {
            let path = base.key("servers").index(i);
            if server.is_unspecified() || server.is_multicast() || server.is_loopback() {
                self.report(
                    path,
                    format!("{server} is not the address of an NTP server"),
                );
            } else if time.servers[..i].contains(server) {
                self.report(path, format!("{server} is listed twice"));
            }
        }
        self.range(
            base.key("poll_min_secs"),
            time.poll_min_secs,
            TIME_POLL_SECS.0,
            TIME_POLL_SECS.1,
        );
        self.range(
            base.key("poll_max_secs"),
            time.poll_max_secs,
            TIME_POLL_SECS.0,
            TIME_POLL_SECS.1,
        );
        if time.poll_max_secs < time.poll_min_secs {
            self.report(
                base.key("poll_max_secs"),
                format!(
                    "{} is shorter than poll_min_secs ({})",
                    time.poll_max_secs, time.poll_min_secs
                ),
            );
        }
    }

    fn update(&mut self) {
        let Some(update) = &self.config.update else {
            return;
        };
        let base = FieldPath::root("update");
        self.readable(base.key("ca_file"), &update.ca_file);
        let compatible = &update.compatible;
        if compatible.trim().is_empty() {
            self.report(
                base.key("compatible"),
                "must name this box's RAUC compatible string, not be empty",
            );
        } else if compatible.trim() != compatible
            || compatible.chars().any(char::is_control)
            || compatible.chars().count() > MAX_COMPATIBLE_CHARS
        {
            self.report(
                base.key("compatible"),
                format!("must be at most {MAX_COMPATIBLE_CHARS} characters without surrounding spaces or control characters"),
            );
        }
        self.range(
            base.key("max_bundle_bytes"),
            update.max_bundle_bytes,
            MAX_BUNDLE_BYTES_RANGE.0,
            MAX_BUNDLE_BYTES_RANGE.1,
        );
        self.range(
            base.key("health_deadline_secs"),
            update.health_deadline_secs,
            HEALTH_DEADLINE_SECS_RANGE.0,
            HEALTH_DEADLINE_SECS_RANGE.1,
        );
        if !update.system_conf.is_absolute() {
            self.report(
                base.key("system_conf"),
                format!("{} must be an absolute path", update.system_conf.display()),
            );
        }
        if let Some(dir) = &update.spool_dir {
            if !dir.is_absolute() {
                self.report(
                    base.key("spool_dir"),
                    format!("{} must be an absolute path", dir.display()),
                );
            }
        }
        if let Some(version) = &update.allow_downgrade_to {
            if let Err(err) = crate::firmware_version::FirmwareVersion::parse(version) {
                self.report(base.key("allow_downgrade_to"), err.to_string());
            }
        }
    }

    /// A signing key given as `<name>_file` or inline as `<name>`: at most one of the two, and
    /// it must be a PEM ECDSA P-256 public key.
    fn signing_key(
        &mut self,
        base: &FieldPath,
        name: &str,
        (file, inline): (&Option<PathBuf>, &Option<String>),
    ) {
        use crate::signing::OperatorKey;
        match (file, inline) {
            (Some(_), Some(_)) => self.report(
                base.key(name),
                format!("give either {name} or {name}_file, not both"),
            ),
            (Some(_), None) if !self.read_files => {}
            (Some(path), None) => {
                let field = base.key(&format!("{name}_file"));
                if let Err(message) = open_regular_file(path) {
                    self.report(field, message);
                } else if let Err(e) = OperatorKey::read(path) {
                    self.report(field, e.to_string());
                }
            }
            (None, Some(pem)) => {
                if let Err(e) = OperatorKey::from_pem(pem) {
                    self.report(base.key(name), e.to_string());
                }
            }
            (None, None) => {}
        }
    }

    /// No two listeners may claim the same address and port.
    fn listener_conflicts(&mut self) {
        let mut listeners: Vec<(SocketAddr, FieldPath, String)> = Vec::new();
        for (i, s) in self.config.services.iter().enumerate() {
            listeners.push((
                s.listen,
                FieldPath::root("service").index(i).key("listen"),
                format!("service {:?}", s.name),
            ));
        }
        if let Some(status) = &self.config.status {
            listeners.push((
                status.listen,
                FieldPath::root("status").key("listen"),
                "the status page".into(),
            ));
            if let Some(m) = status.metrics_listen {
                listeners.push((
                    m,
                    FieldPath::root("status").key("metrics_listen"),
                    "the metrics listener".into(),
                ));
            }
        }
        if let Some(m) = &self.config.management {
            listeners.push((
                m.listen,
                FieldPath::root("management").key("listen"),
                "the management API".into(),
            ));
        }
        for (i, (addr, path, _)) in listeners.iter().enumerate() {
            // v4-mapped IPv6 addresses bind as IPv4: compare canonical forms.
            let (ip, port) = (addr.ip().to_canonical(), addr.port());
            let clash = listeners[..i].iter().find(|(other, _, _)| {
                let other_ip = other.ip().to_canonical();
                other.port() == port
                    && other_ip.is_ipv4() == ip.is_ipv4()
                    && (other_ip == ip || other_ip.is_unspecified() || ip.is_unspecified())
            });
            if let Some((other, _, owner)) = clash {
                let message = format!("{addr} is already used by {owner} ({other})");
                self.problems.push(Problem {
                    path: path.clone(),
                    message,
                });
            }
        }
    }
}

/// Opens a file named in the config, refusing FIFOs and devices (opening a FIFO would block the
/// check forever).
fn open_regular_file(file: &Path) -> Result<std::fs::Metadata, String> {
    let meta =
        std::fs::metadata(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", file.display()));
    }
    File::open(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    Ok(meta)
}

/// Splits `host:port` / `[v6]:port`, checking both halves.
pub fn parse_host_port(text: &str) -> Result<(String, u16), String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        if addr.port() == 0 {
            return Err(format!("{text:?} needs a port other than 0"));
        }
        return Ok((addr.ip().to_string(), addr.port()));
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("{text:?} must be host:port"));
    };
    let port: u16 = match port.parse() {
        Ok(p) if p != 0 => p,
        _ => return Err(format!("{text:?} has no valid port (1-65535)")),
    };
    if !is_dns_name(host) {
        return Err(format!("{host:?} is neither an IP address nor a DNS name"));
    }
    Ok((host.to_string(), port))
}

/// A conservative DNS host name check (RFC 1123 labels).
pub fn is_dns_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        && name.parse::<IpAddr>().is_err()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A viewing config whose outbound service and status page listen on the given addresses.
    fn viewing(service_listen: &str, status_listen: &str) -> Config {
        let text = format!(
            r#"
[meta]
version = 1
[facility]
name = "clinic"
role = "viewing"
[tunnel]
private_key_file = "/nonexistent/wg.key"
address = "198.19.0.20/24"
[[tunnel.peer]]
name = "dc"
public_key = "5CGhZHLCWrkRq8Mkxy9848GrsgpWRl16eQGXuILDPRE="
endpoint = "198.18.0.1:51820"
allowed_ips = ["198.19.0.1/32"]
[[service]]
name = "documents"
direction = "outbound"
listen = "{service_listen}"
target = "198.19.0.1:8443"
server_name = "hub.renkei.example"
[status]
listen = "{status_listen}"
admin_password_hash = "$argon2id$v=19$m=19456,t=2,p=1$7cIcWGM1T1jHcx/5L2g8BA$7IhJ1ODxrNoagIhI2wBtYSsOtk5dnAle2ZdJDNftQgg"
"#
        );
        toml::from_str(&text).expect("schema-valid test config")
    }

    /// Messages of the problems at `field`.
    fn problems_at(config: &Config, field: &str) -> Vec<String> {
        validate(config, true)
            .into_iter()
            .filter(|p| p.path.to_string() == field)
            .map(|p| p.message)
            .collect()
    }

    /// The viewing config with a backup hub for the same prefix, and `failover` as its
    /// `[tunnel.failover]` text (empty: none).
    fn with_backup_hub(failover: &str) -> Config {
        let text = format!(
            r#"
[meta]
version = 1
[facility]
name = "clinic"
role = "viewing"
[tunnel]
private_key_file = "/nonexistent/wg.key"
address = "198.19.0.20/24"
[[tunnel.peer]]
name = "dc-tokyo"
public_key = "5CGhZHLCWrkRq8Mkxy9848GrsgpWRl16eQGXuILDPRE="
endpoint = "198.18.0.1:51820"
allowed_ips = ["198.19.0.1/32"]
[[tunnel.peer]]
name = "dc-osaka"
public_key = "2Fg80pU5iWaG6/c6feWnjxWLME2Z0W/88XuMvbmdRRY="
endpoint = "198.18.0.2:51820"
allowed_ips = ["198.19.0.1/32"]
{failover}
"#
        );
        toml::from_str(&text).expect("schema-valid test config")
    }

    #[test]
    fn avl4_a_hub_group_may_share_prefixes_and_nothing_else_may() {
        let group = with_backup_hub("[tunnel.failover]\nhubs = [\"dc-tokyo\", \"dc-osaka\"]");
        assert!(
            validate(&group, false).is_empty(),
            "{:?}",
            validate(&group, false)
        );
        let failover = group
            .tunnel
            .as_ref()
            .and_then(|t| t.failover.as_ref())
            .expect("[tunnel.failover]");
        assert_eq!(
            (
                failover.failover_after_secs,
                failover.fail_back_after_secs,
                failover.probe_interval_secs
            ),
            (30, 120, 10),
            "defaults fail over well before the 180 s alarm"
        );
        let plain = with_backup_hub("");
        assert_eq!(
            problems_at(&plain, "tunnel.peer[1].allowed_ips[0]"),
            vec!["198.19.0.1/32 overlaps 198.19.0.1/32 of peer \"dc-tokyo\"".to_string()],
            "two peers with the same prefix outside a group are refused as before"
        );
        let backwards = with_backup_hub(
            "[tunnel.failover]\nhubs = [\"dc-osaka\", \"dc-tokyo\"]\nfail_back_after_secs = 5\nfailover_after_secs = 6\nprobe_interval_secs = 6",
        );
        assert_eq!(
            problems_at(&backwards, "tunnel.failover.probe_interval_secs"),
            vec!["6 must be shorter than failover_after_secs (6): a live hub must be heard before it is given up".to_string()]
        );
    }

    #[test]
    fn net8_ipv4_mapped_listeners_cannot_reach_the_tunnel_side() {
        let lan = viewing("[::ffff:198.18.20.1]:8443", "[::ffff:198.18.20.1]:9443");
        assert!(problems_at(&lan, "service[0].listen").is_empty());
        assert!(problems_at(&lan, "status.listen").is_empty());

        let tunnel = viewing("[::ffff:198.19.0.20]:8443", "[::ffff:198.19.0.20]:9443");
        assert_eq!(
            problems_at(&tunnel, "service[0].listen"),
            ["outbound services listen on the LAN; 198.19.0.20 is on the tunnel side"]
        );
        assert_eq!(
            problems_at(&tunnel, "status.listen"),
            ["the status page is for the LAN; 198.19.0.20 is on the tunnel side or everywhere"]
        );

        let everywhere = viewing("[::ffff:0.0.0.0]:8443", "[::ffff:0.0.0.0]:9443");
        assert_eq!(
            problems_at(&everywhere, "service[0].listen"),
            ["0.0.0.0 would also listen on the tunnel; name the box's LAN address"]
        );
        assert_eq!(
            problems_at(&everywhere, "status.listen"),
            ["the status page is for the LAN; 0.0.0.0 is on the tunnel side or everywhere"]
        );
    }

    #[test]
    fn avl6_management_max_push_bytes_is_bounded() {
        let text = |cap: &str| {
            let mut text = toml::to_string(&viewing("198.18.20.1:8443", "198.18.20.1:9443"))
                .expect("serialise");
            text.push_str(&format!(
                "\n[management]\nlisten = \"198.19.0.20:7443\"\noperator_ca_file = \"/x\"\noperator_identities = [\"operator.example\"]\n{cap}"
            ));
            toml::from_str::<Config>(&text).expect("schema-valid test config")
        };
        let default = text("");
        assert_eq!(
            default.management.as_ref().map(|m| m.max_push_bytes),
            Some(256 * 1024)
        );
        assert!(problems_at(&default, "management.max_push_bytes").is_empty());
        assert!(problems_at(
            &text("max_push_bytes = 1048576\n"),
            "management.max_push_bytes"
        )
        .is_empty());
        for (cap, range) in [("65535", "65536..=1048576"), ("1048577", "65536..=1048576")] {
            assert_eq!(
                problems_at(
                    &text(&format!("max_push_bytes = {cap}\n")),
                    "management.max_push_bytes"
                ),
                [format!("{cap} is out of range {range}")]
            );
        }
    }

    /// A viewing config made always-on, with `time` appended as a `[time]` section.
    fn with_time(time: &str) -> Config {
        let mut always_on = viewing("198.18.20.1:8443", "198.18.20.1:9443");
        if let Some(tunnel) = always_on.tunnel.as_mut() {
            tunnel.policy.mode = Some(PolicyMode::AlwaysOn);
        }
        let mut text = toml::to_string(&always_on).expect("serialise");
        text.push_str("\n[time]\n");
        text.push_str(time);
        toml::from_str(&text).expect("schema-valid test config")
    }

    #[test]
    fn int2_time_section_rules() {
        let good = with_time("servers = [\"198.19.0.1\", \"fd00::123\"]\n");
        assert_eq!(
            good.time
                .as_ref()
                .map(|t| (t.poll_min_secs, t.poll_max_secs)),
            Some((32, 2048))
        );
        let time_problems: Vec<Problem> = validate(&good, true)
            .into_iter()
            .filter(|p| p.path.to_string().starts_with("time"))
            .collect();
        assert!(time_problems.is_empty(), "{time_problems:?}");

        let none = with_time("servers = []\n");
        assert_eq!(
            problems_at(&none, "time.servers"),
            ["must name 1 to 4 NTP servers (remove [time] to keep the image's default)"]
        );
        let bad = with_time(
            "servers = [\"198.19.0.1\", \"0.0.0.0\", \"224.0.1.1\", \"198.19.0.1\"]\npoll_min_secs = 8\npoll_max_secs = 4096\n",
        );
        assert_eq!(
            problems_at(&bad, "time.servers[1]"),
            ["0.0.0.0 is not the address of an NTP server"]
        );
        assert_eq!(
            problems_at(&bad, "time.servers[2]"),
            ["224.0.1.1 is not the address of an NTP server"]
        );
        assert_eq!(
            problems_at(&bad, "time.servers[3]"),
            ["198.19.0.1 is listed twice"]
        );
        assert_eq!(
            problems_at(&bad, "time.poll_min_secs"),
            ["8 is out of range 16..=2048"]
        );
        assert_eq!(
            problems_at(&bad, "time.poll_max_secs"),
            ["4096 is out of range 16..=2048"]
        );
        // A viewing box syncs while its on-demand link is up anyway, on WireGuard and on IPsec
        // (whose idle check is renkei's own use, not charon's ESP counters).
        let mut on_demand =
            toml::to_string(&viewing("198.18.20.1:8443", "198.18.20.1:9443")).expect("serialise");
        on_demand.push_str("\n[time]\nservers = [\"198.19.0.1\"]\n");
        let on_demand: Config = toml::from_str(&on_demand).expect("schema-valid");
        assert_eq!(on_demand.policy_mode(), PolicyMode::OnDemand);
        assert!(problems_at(&on_demand, "time").is_empty());
        let mut ipsec = ipsec_with_failover("backup_remote_address = \"198.18.0.2\"")
            .expect("the IPsec example");
        ipsec.ipsec.as_mut().expect("[ipsec]").mode = Some(PolicyMode::OnDemand);
        ipsec.time = on_demand.time.clone();
        assert!(problems_at(&ipsec, "time").is_empty());
        let inverted =
            with_time("servers = [\"198.19.0.1\"]\npoll_min_secs = 64\npoll_max_secs = 32\n");
        assert_eq!(
            problems_at(&inverted, "time.poll_max_secs"),
            ["32 is shorter than poll_min_secs (64)"]
        );
        // A name is not an address: refused by the schema (whose error the loader places at
        // its file, line and field).
        let mut text =
            toml::to_string(&viewing("198.18.20.1:8443", "198.18.20.1:9443")).expect("serialise");
        text.push_str("\n[time]\nservers = [\"ntp.example\"]\n");
        let refused = toml::from_str::<Config>(&text).expect_err("a name is refused");
        assert!(
            refused.message().contains("invalid IP address"),
            "{refused}"
        );
    }

    /// A viewing config with `update` appended as an `[update]` section.
    fn with_update(update: &str) -> Config {
        let mut text =
            toml::to_string(&viewing("198.18.20.1:8443", "198.18.20.1:9443")).expect("serialise");
        text.push_str("\n[update]\n");
        text.push_str(update);
        toml::from_str(&text).expect("schema-valid test config")
    }

    #[test]
    fn avl5_update_section_rules() {
        let ca = tempfile::NamedTempFile::new().expect("ca file");
        let ca_line = format!("ca_file = {:?}\n", ca.path().display().to_string());
        let good = with_update(&format!("{ca_line}compatible = \"renkei-x86_64\"\n"));
        let update_problems: Vec<Problem> = validate(&good, true)
            .into_iter()
            .filter(|p| p.path.to_string().starts_with("update"))
            .collect();
        assert!(update_problems.is_empty(), "{update_problems:?}");
        assert_eq!(
            good.update_spool_dir(),
            Some(PathBuf::from("/var/lib/renkei/update")),
            "the spool is under the state directory by default"
        );

        let bad = with_update(&format!(
            "{ca_line}compatible = \" \"\nmax_bundle_bytes = 1000\nspool_dir = \"spool\"\nallow_downgrade_to = \"1.4-rc1\"\nhealth_deadline_secs = 5\nsystem_conf = \"system.conf\"\n"
        ));
        assert_eq!(
            problems_at(&bad, "update.health_deadline_secs"),
            ["5 is out of range 30..=1800"]
        );
        assert_eq!(
            problems_at(&bad, "update.system_conf"),
            ["system.conf must be an absolute path"]
        );
        assert_eq!(
            problems_at(&bad, "update.compatible"),
            ["must name this box's RAUC compatible string, not be empty"]
        );
        assert_eq!(
            problems_at(&bad, "update.max_bundle_bytes"),
            ["1000 is out of range 1048576..=4294967296"]
        );
        assert_eq!(
            problems_at(&bad, "update.spool_dir"),
            ["spool must be an absolute path"]
        );
        assert_eq!(problems_at(&bad, "update.allow_downgrade_to").len(), 1);

        let missing = with_update("ca_file = \"/nonexistent/update-ca.pem\"\ncompatible = \"x\"\n");
        assert_eq!(problems_at(&missing, "update.ca_file").len(), 1);

        // An untrusted file's errors name its line and field; a wrong type is no panic.
        let text =
            toml::to_string(&viewing("198.18.20.1:8443", "198.18.20.1:9443")).expect("serialise");
        let lines = text.lines().count();
        for (update, field) in [
            (
                "ca_file = \"/x\"\ncompatible = \"x\"\nmax_bundle_bytes = 5\n",
                "update.max_bundle_bytes",
            ),
            (
                "ca_file = \"/x\"\ncompatible = \"x\"\nmax_bundle_bytes = -5\n",
                "update.max_bundle_bytes",
            ),
            (
                "ca_file = \"/x\"\ncompatible = \"x\"\nhealth_deadline_secs = 1\n",
                "update.health_deadline_secs",
            ),
            ("ca_file = \"/x\"\ncompatible = \"x\"\nsize = 5\n", "update"),
        ] {
            let full = format!("{text}\n[update]\n{update}");
            let diagnostics = super::super::load_str_with(
                &full,
                Path::new("box.toml"),
                Path::new("/"),
                super::super::Files::Skip,
            )
            .expect_err("refused");
            let found = diagnostics
                .0
                .iter()
                .find(|d| d.field.starts_with(field))
                .unwrap_or_else(|| panic!("{field}: {diagnostics}"));
            assert_eq!(found.file, Path::new("box.toml"));
            assert!(
                found.line > lines,
                "{field} at line {} ({diagnostics})",
                found.line
            );
        }
    }

    #[test]
    fn host_port_forms() {
        assert_eq!(
            parse_host_port("198.18.0.1:51820"),
            Ok(("198.18.0.1".into(), 51820))
        );
        assert_eq!(
            parse_host_port("[fd00::1]:51820"),
            Ok(("fd00::1".into(), 51820))
        );
        assert_eq!(
            parse_host_port("hub.example.jp:51820"),
            Ok(("hub.example.jp".into(), 51820))
        );
        assert!(parse_host_port("hub.example.jp").is_err());
        assert!(parse_host_port("hub.example.jp:0").is_err());
        assert!(parse_host_port("bad host:1").is_err());
        assert!(parse_host_port("fd00::1:51820").is_err());
    }

    /// `config/ipsec.toml` with `failover` appended as its `[ipsec.failover]` text, loaded as
    /// a pushed config would be (files not read): the diagnostics as `line:col field: message`.
    fn ipsec_with_failover(failover: &str) -> Result<Config, Vec<String>> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/ipsec.toml");
        let text = std::fs::read_to_string(&path).expect("example config");
        let text = format!("{text}\n[ipsec.failover]\n{failover}\n");
        super::super::load_str_with(
            &text,
            std::path::Path::new("ipsec.toml"),
            std::path::Path::new("/etc/renkei"),
            super::super::Files::Skip,
        )
        .map_err(|d| {
            d.0.iter()
                .map(|d| format!("{}:{} {}: {}", d.line, d.column, d.field, d.message))
                .collect()
        })
    }

    #[test]
    fn avl4_an_ipsec_backup_concentrator_takes_the_hub_group_defaults() {
        let config = ipsec_with_failover("backup_remote_address = \"198.18.0.2\"").expect("valid");
        let ipsec = config.ipsec.as_ref().expect("[ipsec]");
        let failover = ipsec.failover.as_ref().expect("[ipsec.failover]");
        assert_eq!(
            (
                failover.failover_after_secs,
                failover.fail_back_after_secs,
                failover.probe_interval_secs
            ),
            (30, 120, 10),
            "the same defaults as [tunnel.failover]"
        );
        assert_eq!(
            failover.backup_id(ipsec),
            "hub.renkei.example",
            "without backup_remote_id the backup carries remote_id"
        );
    }

    #[test]
    fn avl4_an_ipsec_backup_concentrator_is_refused_at_its_line_when_it_is_no_backup() {
        let problems = |text: &str| ipsec_with_failover(text).expect_err("refused");
        let same = problems("backup_remote_address = \"198.18.0.1\"");
        assert!(
            same.iter()
                .any(|p| p.contains("ipsec.failover.backup_remote_address")
                    && p.contains("is ipsec.remote_address already")),
            "{same:?}"
        );
        // The diagnostic names the line and column of the value (the appended section's first
        // line, after `backup_remote_address = `).
        let lines = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/ipsec.toml"),
        )
        .expect("example config")
        .lines()
        .count();
        assert!(
            same.iter()
                .any(|p| p.starts_with(&format!("{}:25 ", lines + 3))),
            "line {} column 25: {same:?}",
            lines + 3
        );
        let inside = problems("backup_remote_address = \"198.19.0.3\"");
        assert!(
            inside.iter().any(|p| p.contains("contains it")),
            "{inside:?}"
        );
        let own = problems("backup_remote_address = \"198.18.0.10\"");
        assert!(
            own.iter().any(|p| p.contains("box's own address")),
            "{own:?}"
        );
        let empty_id = problems("backup_remote_address = \"198.18.0.2\"\nbackup_remote_id = \" \"");
        assert!(
            empty_id
                .iter()
                .any(|p| p.contains("ipsec.failover.backup_remote_id")),
            "{empty_id:?}"
        );
        let times = problems(
            "backup_remote_address = \"198.18.0.2\"\nfailover_after_secs = 200\nfail_back_after_secs = 1\nprobe_interval_secs = 300",
        );
        for expected in [
            "ipsec.failover.failover_after_secs: 200 must be shorter than ipsec.alarm_after_secs (180)",
            "ipsec.failover.fail_back_after_secs: 1 is out of range",
            "ipsec.failover.probe_interval_secs: 300 must be shorter than failover_after_secs",
        ] {
            assert!(
                times.iter().any(|p| p.contains(expected)),
                "{expected}: {times:?}"
            );
        }
        let unknown = problems("backup_remote_address = \"198.18.0.2\"\nbackup_hubs = 1");
        assert!(
            unknown.iter().any(|p| p.contains("backup_hubs")),
            "{unknown:?}"
        );
    }

    #[test]
    fn avl4_an_on_demand_or_hub_ipsec_box_has_no_backup_concentrator_yet() {
        let on_demand = ipsec_with_failover("backup_remote_address = \"198.18.0.2\"")
            .map(|mut c| {
                if let Some(ipsec) = c.ipsec.as_mut() {
                    ipsec.mode = Some(PolicyMode::OnDemand);
                }
                validate(&c, false)
            })
            .expect("valid as written");
        assert!(
            on_demand
                .iter()
                .any(|p| p.path.to_string() == "ipsec.failover" && p.message.contains("always_on")),
            "{on_demand:?}"
        );
        let hub = ipsec_with_failover("backup_remote_address = \"198.18.0.2\"")
            .map(|mut c| {
                c.facility.role = Role::Hub;
                validate(&c, false)
            })
            .expect("valid as written");
        assert!(
            hub.iter()
                .any(|p| p.path.to_string() == "ipsec.failover"
                    && p.message.contains("facility boxes")),
            "{hub:?}"
        );
    }

    /// The viewing config with its service listening on `listen`, made always-on unless
    /// `on_demand`, with `[logs] upload_service = service`.
    fn with_logs(listen: &str, service: &str, on_demand: bool) -> Config {
        let mut config = viewing(listen, "198.18.20.1:9443");
        if !on_demand {
            if let Some(tunnel) = config.tunnel.as_mut() {
                tunnel.policy.mode = Some(PolicyMode::AlwaysOn);
            }
        }
        let mut text = toml::to_string(&config).expect("serialise");
        text.push_str(&format!("\n[logs]\nupload_service = \"{service}\"\n"));
        toml::from_str(&text).expect("schema-valid test config")
    }

    #[test]
    fn log4_net7_logs_upload_through_an_outbound_loopback_service_and_ride_on_demand_links_but_ipsec(
    ) {
        assert!(problems_at(
            &with_logs("127.0.0.1:19532", "documents", false),
            "logs.upload_service"
        )
        .is_empty());
        assert!(problems_at(&with_logs("127.0.0.1:19532", "documents", false), "logs").is_empty());
        assert_eq!(
            problems_at(
                &with_logs("127.0.0.1:19532", "journal", false),
                "logs.upload_service"
            ),
            ["names no [[service]] ('journal'; services here: documents)"]
        );
        assert_eq!(
            problems_at(&with_logs("198.18.20.1:8443", "documents", false), "logs.upload_service"),
            ["service 'documents' listens on 198.18.20.1:8443: the uploader posts plain HTTP, so its service must listen on loopback (127.0.0.1)"]
        );
        // On demand, the upload rides on the link (NET-7), on WireGuard and on IPsec.
        assert!(problems_at(&with_logs("127.0.0.1:19532", "documents", true), "logs").is_empty());
        let mut ipsec = ipsec_with_failover("backup_remote_address = \"198.18.0.2\"")
            .expect("the IPsec example");
        ipsec.ipsec.as_mut().expect("[ipsec]").mode = Some(PolicyMode::OnDemand);
        ipsec.services = with_logs("127.0.0.1:19532", "documents", true).services;
        ipsec.logs = with_logs("127.0.0.1:19532", "documents", true).logs;
        assert!(problems_at(&ipsec, "logs").is_empty());
        let mut inbound = with_logs("127.0.0.1:19532", "documents", false);
        inbound.services[0].direction = Direction::Inbound;
        assert_eq!(
            problems_at(&inbound, "logs.upload_service"),
            ["service 'documents' is inbound: the upload needs an outbound service towards the collector"]
        );
    }
}
