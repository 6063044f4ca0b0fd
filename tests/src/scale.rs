//! A hub with many facilities: the lab's real hub daemon with N facility peers in its config,
//! and a [`Swarm`] of N lightweight facilities in the lab's hospital namespace (its WAN address,
//! a port each). Used by the scale test (AVL-6) and `lab bench-hub`.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use renkei::config::Config;

use crate::daemon::Daemon;
use crate::lab::{Lab, Node, HUB_PORT};
use crate::swarm::{self, HubAddress, Swarm};
use crate::wait::wait_until;

/// The hub's tunnel prefix: room for a few thousand facilities' /32s.
const HUB_TUNNEL_PREFIX: &str = "198.19.0.1/16";
/// How long after the hub first shows a facility `up` its ping may still go unanswered: the
/// facility's next ping is due within [`swarm::PING_INTERVAL`]; the rest is slack for a
/// loaded machine. A facility shown up on a cookie (no session) stays unanswered for a
/// whole handshake retry (5 s).
pub const UP_TO_ANSWER_SLACK: Duration = Duration::from_secs(2);

/// Where the hub's status page listens when [`ScaleOptions::status_page`] asks for it: plain
/// HTTP on the hub namespace's loopback.
pub const STATUS_PAGE: &str = "127.0.0.1:8080";

/// How the hub is set up.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScaleOptions {
    /// `[tunnel] handshakes_per_sec`; `None`: the default.
    pub handshakes_per_sec: Option<u32>,
    /// Whether the hub serves its status page on [`STATUS_PAGE`] (the lab's admin password).
    pub status_page: bool,
}

/// The hub, its facilities and the lab they run in (dropped in this order).
pub struct ScaleLab {
    /// The facilities.
    pub swarm: Swarm,
    /// The hub's daemon.
    pub hub: Daemon,
    config_path: PathBuf,
    facilities: usize,
    /// The hub's VmRSS (KiB) once it was ready, before any facility had a session.
    pub rss_configured_kib: u64,
    /// The lab: namespaces, keys, folders.
    pub lab: Lab,
}

/// What a round (the cold start, or a hub restart) looked like from the facilities and the
/// hub's status.
#[derive(Debug, Clone)]
pub struct Round {
    /// From the round's start (cold: the hub ready; restart: the kill) to the last facility's
    /// first answered ping.
    pub all_answered: Duration,
    /// From the round's start to the hub answering its control socket (zero cold).
    pub hub_ready: Duration,
    /// Facilities the hub showed `up` while their ping stayed unanswered for longer than
    /// [`UP_TO_ANSWER_SLACK`]: (name, how long).
    pub up_without_session: Vec<(String, Duration)>,
}

impl ScaleLab {
    /// The lab, the hub with `facilities` peers, and the swarm, which starts pinging at once.
    pub fn start(facilities: usize, options: ScaleOptions) -> anyhow::Result<ScaleLab> {
        let lab = Lab::new()?;
        let members = swarm::facilities(facilities);
        let mut config = hub_config(&lab, &members, options.handshakes_per_sec)?;
        if options.status_page {
            config.status = Some(crate::web::status(STATUS_PAGE)?);
        }
        let config_path = lab.write_config(Node::Hub, &config)?;
        let hub = lab.start_with(Node::Hub, &config_path)?;
        let rss_configured_kib = hub.pid().and_then(vm_rss_kib).unwrap_or(0);
        let hub_public = renkei::keys::decode_key(lab.public_key(Node::Hub))?;
        let address = HubAddress {
            endpoint: SocketAddr::new(Node::Hub.wan_address().parse()?, HUB_PORT),
            public_key: hub_public,
            tunnel_address: Node::Hub.tunnel_address().parse()?,
        };
        let bind: Ipv4Addr = Node::Hospital.wan_address().parse()?;
        let swarm = Swarm::start(lab.ns(Node::Hospital), bind, address, members)?;
        Ok(ScaleLab {
            swarm,
            hub,
            config_path,
            facilities,
            rss_configured_kib,
            lab,
        })
    }

    /// Waits until the hub has written down every facility's endpoint (`resume`), which a
    /// restarted hub greets at once.
    pub fn wait_remembered(&self, timeout: Duration) -> anyhow::Result<()> {
        let file = self
            .lab
            .node_dir(Node::Hub)
            .join("state")
            .join(renkei::tunnel::resume::FILE_NAME);
        wait_until(timeout, "the hub to remember every facility", || {
            let text = std::fs::read_to_string(&file).ok()?;
            let saved: serde_json::Value = serde_json::from_str(&text).ok()?;
            let count = saved["peers"].as_array()?.len();
            (count == self.facilities).then_some(())
        })
    }

    /// Watches the first round (the swarm started once the hub was ready) until every
    /// facility's ping is answered.
    pub fn watch_cold_start(&self, timeout: Duration) -> anyhow::Result<Round> {
        self.watch_round(self.swarm.round_started(), Duration::ZERO, timeout)
    }

    /// Kills the hub (as a crash or `systemctl restart` after its stop timeout would), starts
    /// it again, and watches until every facility's ping is answered again.
    pub fn restart_hub(&mut self, timeout: Duration) -> anyhow::Result<Round> {
        self.hub.kill();
        let start = self.swarm.begin_round();
        self.hub = self.lab.start_with(Node::Hub, &self.config_path)?;
        self.watch_round(start, start.elapsed(), timeout)
    }

    /// Polls the hub's status until every facility's ping of the current round is answered,
    /// noting when the hub first showed each facility `up`.
    fn watch_round(
        &self,
        start: Instant,
        hub_ready: Duration,
        timeout: Duration,
    ) -> anyhow::Result<Round> {
        let mut first_up: HashMap<usize, Instant> = HashMap::new();
        let all_answered = wait_until(timeout, "every facility's ping answered", || {
            let observed = Instant::now();
            if let Ok(status) = self.hub.status() {
                for (index, peer) in peers(&status) {
                    if peer["state"] == "up" {
                        first_up.entry(index).or_insert(observed);
                    }
                }
            }
            let failures = self.swarm.failures();
            if !failures.is_empty() {
                return Some(Err(anyhow::anyhow!("facilities failed: {failures:?}")));
            }
            let answered = self.swarm.answered();
            let last = answered.iter().copied().collect::<Option<Vec<Instant>>>()?;
            let latest = last.into_iter().max().unwrap_or(start);
            Some(Ok(latest.saturating_duration_since(start)))
        })
        .with_context(|| {
            format!(
                "{} of {} facilities answered",
                self.swarm.answered_count(),
                self.facilities
            )
        })??;
        let answered = self.swarm.answered();
        let mut up_without_session = Vec::new();
        for (index, up) in first_up {
            let waited = answered
                .get(index)
                .copied()
                .flatten()
                .map_or(Duration::MAX, |a| a.saturating_duration_since(up));
            if waited > UP_TO_ANSWER_SLACK {
                up_without_session.push((swarm::Facility::name(index), waited));
            }
        }
        up_without_session.sort();
        Ok(Round {
            all_answered,
            hub_ready,
            up_without_session,
        })
    }

    /// The hub's status document, and how long the control socket took to give it.
    pub fn timed_status(&self) -> anyhow::Result<(serde_json::Value, Duration, usize)> {
        let start = Instant::now();
        let text = renkei::control_socket::request(&self.hub.runtime_dir, "status")?;
        let took = start.elapsed();
        Ok((serde_json::from_str(&text)?, took, text.len()))
    }
}

/// The lab hub's config with one peer per facility and a tunnel prefix that holds them all.
pub fn hub_config(
    lab: &Lab,
    facilities: &[swarm::Facility],
    handshakes_per_sec: Option<u32>,
) -> anyhow::Result<Config> {
    let mut config = lab.tunnel_only(Node::Hub);
    let tunnel = config.tunnel.as_mut().context("the lab hub has [tunnel]")?;
    tunnel.address = HUB_TUNNEL_PREFIX.parse()?;
    tunnel.peers = swarm::hub_peers(facilities);
    tunnel.handshakes_per_sec = handshakes_per_sec;
    Ok(config)
}

/// The facility peers of a status document, by their index in the swarm.
fn peers(status: &serde_json::Value) -> impl Iterator<Item = (usize, &serde_json::Value)> {
    status["tunnel"]["peers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|peer| {
            let index = peer["name"]
                .as_str()?
                .strip_prefix("facility-")?
                .parse()
                .ok()?;
            Some((index, peer))
        })
}

/// VmRSS of process `pid`, KiB.
pub fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// User plus system CPU time of process `pid` so far.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat: 11 and 12 after "pid (comm)".
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let per_sec = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|t| *t > 0)? as u64;
    Some(Duration::from_millis(ticks * 1000 / per_sec))
}
