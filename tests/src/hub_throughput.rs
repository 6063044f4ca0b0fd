//! Aggregate throughput through the hub (`lab bench-hub throughput`): real `renkei` facility
//! daemons, each in its own namespace on the lab's WAN bridge with its own always-on tunnel to
//! the real hub daemon, each sending one iperf3 TCP stream to a server on the hub's tunnel
//! address, one facility alone and then [`FACILITIES`] at once; then the same with the hub
//! sending (iperf3 `-R`). The hub decrypts (and then encrypts) every stream in its data plane's
//! lanes, so this shows how its throughput is shared (or not) between facilities, and how much
//! CPU the hub takes for it. Nothing here is asserted: throughput depends on the machine, and
//! the report gives medians over rounds.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use ipnet::IpNet;
use renkei::config::{Config, PeerConfig};

use crate::daemon::Daemon;
use crate::lab::{Lab, Node, BOX_TCP_CONGESTION_CONTROL, WIREGUARD_SOCKET_DIR};
use crate::netns::{run, Namespace};
use crate::scale::cpu_time;
use crate::wait::wait_until;

/// Facilities sending at once in the many-facilities part.
pub const FACILITIES: usize = 8;
/// The first facility's WAN address on the lab's bridge; facility n has this plus n.
const FIRST_WAN: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
/// The first facility's tunnel address (inside the lab hub's /24); facility n has this plus n.
const FIRST_TUNNEL: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 100);
/// The first iperf3 server port on the hub; facility n sends to this plus n.
const FIRST_PORT: u16 = 5300;
/// Longest wait for every facility's tunnel to come up.
const UP_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for the iperf3 servers to listen.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);

/// One measurement: `facilities` streams at once for the same time.
#[derive(Debug, Clone)]
pub struct Transfer {
    /// Facilities sending (or receiving) at once.
    pub facilities: usize,
    /// The hub sent to the facilities (iperf3 `-R`) rather than they to it.
    pub hub_sends: bool,
    /// Sum of every stream's receiver throughput.
    pub aggregate_gbit_per_s: f64,
    /// The slowest and the fastest stream.
    pub slowest_gbit_per_s: f64,
    /// See `slowest_gbit_per_s`.
    pub fastest_gbit_per_s: f64,
    /// The hub's CPU time during the transfer over its wall time (1.0 = one core busy).
    pub hub_cores: f64,
    /// The same for the facilities' daemons together.
    pub facility_cores: f64,
}

/// One round: one facility alone, then every one at once, to the hub and then from it, in the
/// same lab.
#[derive(Debug, Clone)]
pub struct ThroughputRound {
    /// One facility.
    pub one: Transfer,
    /// [`FACILITIES`] at once.
    pub many: Transfer,
    /// One facility, the hub sending.
    pub one_from_hub: Transfer,
    /// [`FACILITIES`] at once, the hub sending.
    pub many_from_hub: Transfer,
}

/// A facility: its namespace (removed on drop) and its daemon (stopped first).
struct BenchFacility {
    daemon: Daemon,
    tunnel_address: Ipv4Addr,
    port: u16,
    ns: Namespace,
    /// The daemon's WireGuard API socket, which a killed daemon cannot remove itself.
    wireguard_socket: PathBuf,
}

impl Drop for BenchFacility {
    fn drop(&mut self) {
        self.daemon.kill();
        let _ = std::fs::remove_file(&self.wireguard_socket);
    }
}

/// The lab with the hub and the facilities (dropped in this order: facilities' daemons and
/// namespaces, the hub, the lab).
struct ThroughputLab {
    facilities: Vec<BenchFacility>,
    hub: Daemon,
    lab: Lab,
}

/// Runs `rounds` rounds of `seconds` per transfer.
pub fn throughput_benchmark(seconds: u32, rounds: usize) -> anyhow::Result<Vec<ThroughputRound>> {
    let mut results = Vec::new();
    for round in 1..=rounds {
        let lab = ThroughputLab::start().with_context(|| format!("round {round}: the lab"))?;
        let one = lab
            .transfer(1, seconds, false)
            .with_context(|| format!("round {round}: one facility"))?;
        let many = lab
            .transfer(FACILITIES, seconds, false)
            .with_context(|| format!("round {round}: {FACILITIES} facilities"))?;
        let one_from_hub = lab
            .transfer(1, seconds, true)
            .with_context(|| format!("round {round}: the hub to one facility"))?;
        let many_from_hub = lab
            .transfer(FACILITIES, seconds, true)
            .with_context(|| format!("round {round}: the hub to {FACILITIES} facilities"))?;
        let result = ThroughputRound {
            one,
            many,
            one_from_hub,
            many_from_hub,
        };
        eprintln!("round {round}: {result:?}");
        results.push(result);
    }
    Ok(results)
}

impl ThroughputLab {
    /// The lab, the hub with a peer per facility, and every facility up.
    fn start() -> anyhow::Result<ThroughputLab> {
        let lab = Lab::new()?;
        lab.set_tcp_congestion_control(BOX_TCP_CONGESTION_CONTROL)?;
        let mut hub_config = lab.tunnel_only(Node::Hub);
        let mut facilities = Vec::new();
        let mut pending = Vec::new();
        for index in 0..FACILITIES {
            let (ns, config_path, dir, public) = facility_setup(&lab, index)?;
            hub_config
                .tunnel
                .as_mut()
                .context("the lab hub has [tunnel]")?
                .peers
                .push(PeerConfig {
                    name: facility_name(index),
                    public_key: renkei::keys::encode_key(&public),
                    endpoint: None,
                    allowed_ips: vec![IpNet::from(std::net::IpAddr::V4(tunnel_address(index)))],
                    persistent_keepalive_secs: None,
                });
            pending.push((index, ns, config_path, dir));
        }
        let facility_namespaces: Vec<&Namespace> = pending.iter().map(|(_, ns, ..)| ns).collect();
        crate::lab::set_tcp_congestion_control_in(
            &facility_namespaces,
            BOX_TCP_CONGESTION_CONTROL,
        )?;
        let hub = lab.start(Node::Hub, &hub_config)?;
        for (index, ns, config_path, dir) in pending {
            let daemon = Daemon::start(
                Node::Hospital,
                &ns,
                &config_path,
                &dir.join("run"),
                &dir.join("renkei.log"),
            )
            .with_context(|| format!("{}'s daemon", facility_name(index)))?;
            facilities.push(BenchFacility {
                daemon,
                tunnel_address: tunnel_address(index),
                port: FIRST_PORT + index as u16,
                ns,
                wireguard_socket: Path::new(WIREGUARD_SOCKET_DIR)
                    .join(format!("{}.sock", facility_interface(&lab, index))),
            });
        }
        for facility in &facilities {
            wait_until(UP_TIMEOUT, "a facility's tunnel up", || {
                let status = facility.daemon.status().ok()?;
                (status["tunnel"]["state"] == "up").then_some(())
            })
            .with_context(|| facility.daemon.log_text())?;
        }
        Ok(ThroughputLab {
            facilities,
            hub,
            lab,
        })
    }

    /// The first `count` facilities send one iperf3 stream each for `seconds`, all at once (or
    /// receive it from the hub when `hub_sends`).
    fn transfer(&self, count: usize, seconds: u32, hub_sends: bool) -> anyhow::Result<Transfer> {
        let hub_ns = self.lab.ns(Node::Hub);
        let hub_address = Node::Hub.tunnel_address();
        let senders = &self.facilities[..count.min(self.facilities.len())];
        let mut servers = Servers(Vec::new());
        for facility in senders {
            let port = facility.port.to_string();
            servers.0.push(
                hub_ns
                    .command("iperf3")
                    .args(["-s", "-1", "-B", hub_address, "-p", &port])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("iperf3 server")?,
            );
        }
        for facility in senders {
            let address = format!("{hub_address}:{}", facility.port);
            wait_until(LISTEN_TIMEOUT, "an iperf3 server listening", || {
                hub_ns
                    .exec("ss", &["-Htln", &format!("src {address}")])
                    .ok()
                    .filter(|out| !out.trim().is_empty())
            })?;
        }
        let hub_pid = self.hub.pid().context("the hub's pid")?;
        let facility_pids: Vec<u32> = senders.iter().filter_map(|f| f.daemon.pid()).collect();
        let cpu = |pids: &[u32]| -> Duration { pids.iter().filter_map(|&p| cpu_time(p)).sum() };
        let (hub_before, facilities_before) = (cpu(&[hub_pid]), cpu(&facility_pids));
        let started = Instant::now();
        let seconds = seconds.to_string();
        let clients: Vec<Child> = senders
            .iter()
            .map(|facility| {
                facility
                    .ns
                    .command("iperf3")
                    .args(["-c", hub_address, "-p", &facility.port.to_string()])
                    .args(["-B", &facility.tunnel_address.to_string()])
                    .args(["-t", &seconds, "-J"])
                    .args(hub_sends.then_some("-R"))
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("iperf3 client")
            })
            .collect::<anyhow::Result<_>>()?;
        let mut rates = Vec::new();
        for client in clients {
            let out = client.wait_with_output().context("iperf3 client")?;
            let json: serde_json::Value =
                serde_json::from_slice(&out.stdout).context("iperf3's JSON")?;
            let bits = json["end"]["sum_received"]["bits_per_second"]
                .as_f64()
                .with_context(|| format!("iperf3 gave no result: {}", json["error"]))?;
            rates.push(bits / 1e9);
        }
        let wall = started.elapsed().as_secs_f64();
        let hub_cpu = cpu(&[hub_pid]).saturating_sub(hub_before).as_secs_f64();
        let facility_cpu = cpu(&facility_pids)
            .saturating_sub(facilities_before)
            .as_secs_f64();
        drop(servers);
        Ok(Transfer {
            facilities: senders.len(),
            hub_sends,
            aggregate_gbit_per_s: rates.iter().sum(),
            slowest_gbit_per_s: rates.iter().copied().fold(f64::INFINITY, f64::min),
            fastest_gbit_per_s: rates.iter().copied().fold(0.0, f64::max),
            hub_cores: hub_cpu / wall,
            facility_cores: facility_cpu / wall,
        })
    }
}

/// The iperf3 servers of a transfer, killed when it ends (also on an error).
struct Servers(Vec<Child>);

impl Drop for Servers {
    fn drop(&mut self) {
        for server in &mut self.0 {
            let _ = server.kill();
            let _ = server.wait();
        }
    }
}

fn facility_name(index: usize) -> String {
    format!("bench-{index}")
}

/// Facility `index`'s WireGuard interface (its namespace's name without the dash).
fn facility_interface(lab: &Lab, index: usize) -> String {
    format!("rk{}t{index}", lab.id)
}

fn tunnel_address(index: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(FIRST_TUNNEL) + index as u32)
}

/// Facility `index`'s namespace on the WAN bridge, its key and config (the lab hospital's
/// always-on tunnel config with its own interface, address, key and folders): the namespace,
/// the config's path, its folder and its public key.
fn facility_setup(
    lab: &Lab,
    index: usize,
) -> anyhow::Result<(Namespace, PathBuf, PathBuf, [u8; 32])> {
    let short = format!("t{index}");
    let ns = Namespace::create(&format!("rk{}-{short}", lab.id))?;
    let bridge_side = format!("{}{short}", lab.id);
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
        &bridge_side,
        "netns",
        lab.wan().name(),
    ]))?;
    lab.wan()
        .ip(&["link", "set", &bridge_side, "master", "br0", "up"])?;
    let wan = Ipv4Addr::from(u32::from(FIRST_WAN) + index as u32);
    ns.ip(&["addr", "add", &format!("{wan}/24"), "dev", "wan0"])?;
    ns.ip(&["link", "set", "wan0", "up"])?;

    let dir = lab.dir.join(format!("bench-{index}"));
    std::fs::create_dir_all(&dir)?;
    let key = dir.join("wg.key");
    let public = renkei::keys::write_keypair(&key)?;
    let mut config: Config = lab.tunnel_only(Node::Hospital);
    config.facility.name = format!("bench facility {index}");
    config.meta.box_identity = None;
    config.paths.state_dir = dir.join("state");
    config.paths.runtime_dir = dir.join("run");
    let tunnel = config.tunnel.as_mut().context("the lab box has [tunnel]")?;
    tunnel.interface = facility_interface(lab, index);
    tunnel.private_key_file = key;
    tunnel.address = format!("{}/24", tunnel_address(index)).parse()?;
    let path = dir.join("renkei.toml");
    std::fs::write(&path, crate::boxconfig::to_toml(&config))?;
    Ok((ns, path, dir, public))
}

/// Median, smallest and largest.
fn spread(values: &[f64], show: impl Fn(f64) -> String) -> String {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    match (sorted.first(), sorted.get(sorted.len() / 2), sorted.last()) {
        (Some(lo), Some(mid), Some(hi)) if sorted.len() > 1 => {
            format!("{} ({}-{})", show(*mid), show(*lo), show(*hi))
        }
        (_, Some(mid), _) => show(*mid),
        _ => "-".to_string(),
    }
}

/// The report: one row for one facility, one for [`FACILITIES`], each way, and the ratios.
pub fn report(rounds: &[ThroughputRound]) -> String {
    let gbit = |v: f64| format!("{v:.2}");
    let cores = |v: f64| format!("{v:.2}");
    let mut out = format!(
        "TCP congestion control in the lab: {BOX_TCP_CONGESTION_CONTROL}, the box's. {} rounds; median (smallest-largest)\n\n| direction | facilities at once | aggregate Gbit/s | slowest stream | fastest stream | hub CPU (cores) | facility daemons' CPU (cores) |\n|---|---|---|---|---|---|---|\n",
        rounds.len()
    );
    let parts: [fn(&ThroughputRound) -> &Transfer; 4] = [
        |r| &r.one,
        |r| &r.many,
        |r| &r.one_from_hub,
        |r| &r.many_from_hub,
    ];
    for pick in parts {
        let transfers: Vec<&Transfer> = rounds.iter().map(pick).collect();
        let n = transfers.first().map_or(0, |t| t.facilities);
        let direction = if transfers.first().is_some_and(|t| t.hub_sends) {
            "hub -> facilities"
        } else {
            "facilities -> hub"
        };
        let col = |f: fn(&Transfer) -> f64, show: &dyn Fn(f64) -> String| {
            spread(&transfers.iter().map(|t| f(t)).collect::<Vec<_>>(), show)
        };
        out.push_str(&format!(
            "| {direction} | {n} | {} | {} | {} | {} | {} |\n",
            col(|t| t.aggregate_gbit_per_s, &gbit),
            col(|t| t.slowest_gbit_per_s, &gbit),
            col(|t| t.fastest_gbit_per_s, &gbit),
            col(|t| t.hub_cores, &cores),
            col(|t| t.facility_cores, &cores),
        ));
    }
    let ratio = |many: &Transfer, one: &Transfer| {
        many.aggregate_gbit_per_s / one.aggregate_gbit_per_s.max(f64::MIN_POSITIVE)
    };
    let to_hub: Vec<f64> = rounds.iter().map(|r| ratio(&r.many, &r.one)).collect();
    let from_hub: Vec<f64> = rounds
        .iter()
        .map(|r| ratio(&r.many_from_hub, &r.one_from_hub))
        .collect();
    out.push_str(&format!(
        "\naggregate with {FACILITIES} facilities / with one: {} to the hub, {} from it\n",
        spread(&to_hub, |v| format!("{v:.2}")),
        spread(&from_hub, |v| format!("{v:.2}"))
    ));
    out
}
