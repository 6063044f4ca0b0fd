//! The proxy benchmark of the TLS issue, in one run on one lab (clinic -> hub):
//! throughput of one large transfer and of 64 parallel ones through (a) the WireGuard tunnel
//! alone, (b) TLS-in-tunnel through renkei's outbound and inbound services, (c) the same TLS leg
//! with stunnel4 in place of renkei's proxy (same certificates, TLS 1.3 AES-GCM, mutual
//! authentication, over the same renkei tunnel); then 10 000 concurrent idle connections through
//! one renkei service, each proven end to end by a byte from the far side, with the daemons' RSS.
//! Each round also measures the new-connection rate of every path ([`crate::conn_rate`]: short
//! connections, one byte each way, from 16 workers at once), with the machine's CPU time and
//! the two daemons' per connection.
//!
//! On a closed network ([`LabCarrier::Closed`]: routed, no tunnel) the same three paths run over
//! the lab's routed WAN instead: (a) plain TCP from the clinic box to the hub's address on the
//! closed network, (b) TLS through renkei over that same routed path, (c) stunnel4 over it. A
//! run measures one carrier per lab; `lab bench-proxy` runs each carrier in turn.
//!
//! Every throughput measurement also records the machine's CPU time per byte moved (from
//! `/proc/stat`: user, nice, system, irq and softirq, not idle, iowait or steal). Both boxes and
//! both iperf3 ends share this machine's cores, so a path's throughput is its CPU cost per byte
//! turned upside down, and the cost is what a busy host (steal, other guests) moves least.
//!
//! Two switches for finding where a path's time goes: `RENKEI_BENCH_COUNT=1` prints, for every
//! measurement, each daemon's CPU time, context switches and system calls per MiB (`perf stat`
//! on its process); `RENKEI_BENCH_RECORD=<prefix>` writes a system-wide `perf record` of every
//! measurement to `<prefix>.<port>x<streams>.<n>` (port 5201 is (a), 8443 (b), 8445 (c)).

use std::io::Read;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use renkei::config::{Direction, PolicyMode, ServiceConfig};

use crate::boxconfig::{service, socket};
use crate::conn_rate::{self, process_cpu_secs};
use crate::lab::{tls_config, Lab, LabCarrier, Node, Peer, BOX_TCP_CONGESTION_CONTROL};
use crate::losses::{Losses, Side};
use crate::perfcount::{CountingEach, Recording};
use crate::wait::wait_until;

const IPERF_PORT: u16 = 5201;
const RENKEI_BULK_PORT: u16 = 8443;
const RENKEI_IDLE_PORT: u16 = 8444;
const STUNNEL_CLIENT_PORT: u16 = 8445;
const STUNNEL_SERVER_PORT: u16 = 8446;
const SINK_ADDRESS: &str = "127.0.0.1:9100";
const RENKEI_RATE_PORT: u16 = 8447;
const STUNNEL_RATE_CLIENT_PORT: u16 = 8448;
const STUNNEL_RATE_SERVER_PORT: u16 = 8449;
/// The responder of the connection-rate measurement, on every address of the hub's namespace:
/// path (a) reaches it on the hub's carrier address, the services on loopback.
const RESPONDER_PORT: u16 = 9200;
/// Connections opened at once in the rate measurement.
const RATE_WORKERS: usize = 16;

/// Kills a helper process on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One path's throughput measurements, one per round.
#[derive(Debug, Clone)]
pub struct Throughput {
    /// What was measured.
    pub name: &'static str,
    /// One stream, each round.
    pub single: Vec<Measured>,
    /// 64 parallel streams, each round.
    pub parallel: Vec<Measured>,
}

/// The machine's CPU time so far, in clock ticks, from the first line of `/proc/stat`.
#[derive(Debug, Clone, Copy)]
struct CpuTicks {
    /// user + nice + system + irq + softirq: work done on this machine's cores.
    busy: u64,
}

impl CpuTicks {
    fn now() -> anyhow::Result<CpuTicks> {
        let text = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        let line = text.lines().next().context("/proc/stat is empty")?;
        let fields: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|f| f.parse().context("a /proc/stat field"))
            .collect::<anyhow::Result<_>>()?;
        // user nice system idle iowait irq softirq steal ...
        let field = |i: usize| fields.get(i).copied().unwrap_or(0);
        Ok(CpuTicks {
            busy: field(0) + field(1) + field(2) + field(5) + field(6),
        })
    }

    /// Seconds of busy CPU since `earlier`.
    fn busy_secs_since(self, earlier: CpuTicks) -> f64 {
        let per_sec = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .filter(|t| *t > 0)
            .unwrap_or(100);
        self.busy.saturating_sub(earlier.busy) as f64 / per_sec as f64
    }
}

/// One iperf3 run: throughput and the machine's CPU cost per byte.
#[derive(Debug, Clone, Copy)]
pub struct Measured {
    /// Gbit/s received, all streams together.
    pub gbit: f64,
    /// The machine's CPU nanoseconds per byte received.
    pub cpu_ns_per_byte: f64,
}

/// One connection-rate measurement of one path.
#[derive(Debug, Clone, Copy)]
pub struct RateMeasured {
    /// Connections per second, each answered end to end.
    pub per_sec: f64,
    /// Connections that failed.
    pub failed: u64,
    /// The machine's busy CPU milliseconds per connection.
    pub machine_cpu_ms: f64,
    /// The clinic's and the hub's daemons' CPU milliseconds per connection, together.
    pub daemons_cpu_ms: f64,
}

/// The whole report.
#[derive(Debug, Clone)]
pub struct ProxyReport {
    /// The carrier the lab ran on.
    pub carrier: LabCarrier,
    /// (a), (b), (c).
    pub throughput: Vec<Throughput>,
    /// (a), (b), (c): the new-connection rate, one per round.
    pub rates: Vec<(&'static str, Vec<RateMeasured>)>,
    /// Rounds measured: every path once per round, back to back.
    pub rounds: usize,
    /// Idle connections opened and proven end to end.
    pub idle_connections: usize,
    /// Seconds it took to open them.
    pub idle_open_secs: f64,
    /// RSS of the clinic and hub daemons with all of them open, KiB.
    pub idle_rss_kib: (u64, u64),
    /// RSS of the same daemons before, KiB.
    pub base_rss_kib: (u64, u64),
}

fn rss_kib(pid: Option<u32>) -> u64 {
    pid.and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

fn iperf(
    client_ns: &crate::Namespace,
    addr: &str,
    port: u16,
    streams: u32,
    seconds: u32,
    counted: &[(&str, Option<u32>)],
    ends: &(Side<'_>, Side<'_>),
) -> anyhow::Result<Measured> {
    let count = std::env::var_os("RENKEI_BENCH_COUNT").is_some();
    wait_until(Duration::from_secs(20), "an iperf3 result", || {
        let counting = count.then(|| {
            CountingEach::start(
                &format!("{port} x{streams}"),
                counted
                    .iter()
                    .filter_map(|(name, pid)| Some((name.to_string(), (*pid)?))),
            )
        });
        let recording = Recording::from_env(&format!("{port}x{streams}"));
        let losses_before = count.then(|| Losses::read(&ends.0, &ends.1)).flatten();
        let before = CpuTicks::now().ok()?;
        let out = client_ns
            .command("iperf3")
            .args([
                "-c",
                addr,
                "-p",
                &port.to_string(),
                "-t",
                &seconds.to_string(),
                "-P",
                &streams.to_string(),
                "-J",
            ])
            .output()
            .ok()?;
        let after = CpuTicks::now().ok()?;
        if let Some(recording) = recording {
            if let Err(e) = recording.stop() {
                eprintln!("{port} x{streams}: {e:#}");
            }
        }
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let received = &json["end"]["sum_received"];
        let bytes = received["bytes"].as_f64().filter(|b| *b > 0.0)?;
        if count && streams > 1 {
            eprintln!("{port} x{streams} streams: {}", stream_shares(&json));
        }
        if let (Some(earlier), Some(now)) = (losses_before, Losses::read(&ends.0, &ends.1)) {
            eprintln!("{port} x{streams} losses: {}", now.since(&earlier));
        }
        if let Some(counting) = counting {
            counting.finish_and_print(bytes);
        }
        Some(Measured {
            gbit: received["bits_per_second"].as_f64()? / 1e9,
            cpu_ns_per_byte: after.busy_secs_since(before) * 1e9 / bytes,
        })
    })
}

/// How evenly iperf3's streams shared the path: MiB received per stream (least, median, most)
/// and Jain's fairness index (1 when all are equal, 1/n when one stream took everything).
fn stream_shares(json: &serde_json::Value) -> String {
    let mut mib: Vec<f64> = json["end"]["streams"]
        .as_array()
        .map(|streams| {
            streams
                .iter()
                .filter_map(|s| s["receiver"]["bytes"].as_f64())
                .map(|b| b / (1024.0 * 1024.0))
                .collect()
        })
        .unwrap_or_default();
    if mib.is_empty() {
        return "no per-stream figures".to_string();
    }
    mib.sort_by(f64::total_cmp);
    let sum: f64 = mib.iter().sum();
    let squares: f64 = mib.iter().map(|x| x * x).sum();
    let jain = if squares > 0.0 {
        sum * sum / (mib.len() as f64 * squares)
    } else {
        0.0
    };
    format!(
        "MiB per stream least {:.1}, median {:.1}, most {:.1}; fairness {:.2}",
        mib[0],
        mib[mib.len() / 2],
        mib[mib.len() - 1],
        jain
    )
}

/// One connection-rate measurement of the path to `target` from `ns`, with the CPU the machine
/// and the two daemons (`pids`) spent on it. `RENKEI_BENCH_RECORD=<prefix>` records it too, to
/// `<prefix>.rate<port>.<n>`.
fn connection_rate(
    ns: &crate::Namespace,
    target: std::net::SocketAddr,
    seconds: u32,
    pids: [Option<u32>; 2],
) -> anyhow::Result<RateMeasured> {
    let recording = Recording::from_env(&format!("rate{}", target.port()));
    let daemons = || pids.iter().map(|pid| process_cpu_secs(*pid)).sum::<f64>();
    let (machine_before, daemons_before) = (CpuTicks::now()?, daemons());
    let rate = conn_rate::measure(
        ns,
        target,
        RATE_WORKERS,
        Duration::from_secs(u64::from(seconds)),
    )?;
    let (machine_after, daemons_after) = (CpuTicks::now()?, daemons());
    if let Some(recording) = recording {
        if let Err(e) = recording.stop() {
            eprintln!("rate {}: {e:#}", target.port());
        }
    }
    anyhow::ensure!(
        rate.completed > 0,
        "no connection to {target} completed ({} failed)",
        rate.failed
    );
    let per_connection = |secs: f64| secs * 1000.0 / rate.completed as f64;
    Ok(RateMeasured {
        per_sec: rate.per_sec,
        failed: rate.failed,
        machine_cpu_ms: per_connection(machine_after.busy_secs_since(machine_before)),
        daemons_cpu_ms: per_connection(daemons_after - daemons_before),
    })
}

/// `service` with room for the benchmark's idle connections, which never time out during it.
fn with_limits(mut service: ServiceConfig) -> ServiceConfig {
    service.max_connections = 20000;
    service.idle_timeout_secs = 3600;
    service
}

fn stunnel(
    ns: &crate::Namespace,
    dir: &Path,
    name: &str,
    client: bool,
    accept: &str,
    connect: &str,
) -> anyhow::Result<Killed> {
    let conf = dir.join(format!("stunnel-{name}.conf"));
    let text = format!(
        "foreground = yes\npid =\ndebug = 3\noutput = {log}\n\n[{name}]\nclient = {client}\naccept = {accept}\nconnect = {connect}\ncert = {d}/tls/box.crt\nkey = {d}/tls/box.key\nCAfile = {d}/tls/operator-ca.crt\nverifyChain = yes\nrequireCert = yes\nsslVersionMin = TLSv1.3\nciphersuites = TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256\ncurves = P-256:P-384\n",
        log = dir.join(format!("stunnel-{name}.log")).display(),
        client = if client { "yes" } else { "no" },
        d = dir.display(),
    );
    std::fs::write(&conf, text)?;
    let child = ns
        .command("stunnel4")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("stunnel4")?;
    Ok(Killed(child))
}

/// A listener that writes one byte to every connection and keeps it open.
fn spawn_sink(lab: &Lab) -> anyhow::Result<()> {
    let listener = lab.ns(Node::Hub).tcp_listener(SINK_ADDRESS)?;
    std::thread::spawn(move || {
        let mut held = Vec::new();
        while let Ok((mut stream, _)) = listener.accept() {
            let _ = std::io::Write::write_all(&mut stream, b"k");
            held.push(stream);
        }
    });
    Ok(())
}

/// Runs the benchmark: `rounds` rounds of every path, `seconds` per throughput measurement,
/// then `idle` idle connections. Each round measures (a), (b) and (c) back to back, so a ratio
/// is taken between measurements seconds apart; on a shared machine whose speed drifts by
/// tens of percent within minutes, the median of those per-round ratios is what can be
/// compared across runs.
pub fn proxy_benchmark(
    carrier: LabCarrier,
    seconds: u32,
    idle: usize,
    rounds: usize,
) -> anyhow::Result<ProxyReport> {
    // A proxying box holds two descriptors per connection; the daemons inherit this process's
    // limit. Raise the soft limit to the hard one (raising the hard limit needs
    // CAP_SYS_RESOURCE, which sandboxes may not grant) and say what fits.
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("reading RLIMIT_NOFILE")?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).context("raising RLIMIT_NOFILE")?;
    let fits = usize::try_from(hard.saturating_sub(500) / 2).unwrap_or(usize::MAX);
    anyhow::ensure!(
        idle <= fits,
        "{idle} idle connections need about {} descriptors in the clinic daemon, but the open-file \
         hard limit here is {hard}; run with at most {fits} (systemd gives the daemon 524288)",
        idle * 2 + 500
    );

    let lab = Lab::with_carrier(carrier)?;
    lab.set_tcp_congestion_control(BOX_TCP_CONGESTION_CONTROL)?;
    // The hub's address on the carrier: its tunnel address, or its closed-network address.
    let hub_tunnel = lab.link_address(Node::Hub);
    let clinic_lan = Node::Clinic.lan_address().context("clinic LAN")?;
    let mut hub_config = lab.config(Node::Hub);
    hub_config.tls = Some(tls_config());
    let clinic_identity = Node::Clinic.tls_name();
    hub_config.services = vec![
        with_limits(service(
            "bulk",
            Direction::Inbound,
            socket(&format!("{hub_tunnel}:{RENKEI_BULK_PORT}")),
            &format!("127.0.0.1:{IPERF_PORT}"),
            Peer::Allowed(clinic_identity),
        )),
        with_limits(service(
            "idle",
            Direction::Inbound,
            socket(&format!("{hub_tunnel}:{RENKEI_IDLE_PORT}")),
            SINK_ADDRESS,
            Peer::Allowed(clinic_identity),
        )),
        with_limits(service(
            "rate",
            Direction::Inbound,
            socket(&format!("{hub_tunnel}:{RENKEI_RATE_PORT}")),
            &format!("127.0.0.1:{RESPONDER_PORT}"),
            Peer::Allowed(clinic_identity),
        )),
    ];
    let mut clinic_config = lab.config(Node::Clinic);
    // Always on: a tunnel up before the first measurement, or a probed closed-network link.
    if let Some(tunnel) = clinic_config.tunnel.as_mut() {
        tunnel.policy.mode = Some(PolicyMode::AlwaysOn);
    }
    if let Some(closed) = clinic_config.closed.as_mut() {
        closed.mode = Some(PolicyMode::AlwaysOn);
    }
    clinic_config.tls = Some(tls_config());
    let hub_name = Node::Hub.tls_name();
    clinic_config.services = vec![
        with_limits(service(
            "bulk",
            Direction::Outbound,
            socket(&format!("{clinic_lan}:{RENKEI_BULK_PORT}")),
            &format!("{hub_tunnel}:{RENKEI_BULK_PORT}"),
            Peer::ServerName(hub_name),
        )),
        with_limits(service(
            "idle",
            Direction::Outbound,
            socket(&format!("{clinic_lan}:{RENKEI_IDLE_PORT}")),
            &format!("{hub_tunnel}:{RENKEI_IDLE_PORT}"),
            Peer::ServerName(hub_name),
        )),
        with_limits(service(
            "rate",
            Direction::Outbound,
            socket(&format!("{clinic_lan}:{RENKEI_RATE_PORT}")),
            &format!("{hub_tunnel}:{RENKEI_RATE_PORT}"),
            Peer::ServerName(hub_name),
        )),
    ];

    let hub = lab.start(Node::Hub, &hub_config)?;
    let clinic = lab.start(Node::Clinic, &clinic_config)?;
    wait_until(Duration::from_secs(10), "the clinic's link", || {
        (clinic.peer(lab.dc_link_name()).ok()?["state"] == "up").then_some(())
    })?;

    let _iperf = Killed(
        lab.ns(Node::Hub)
            .command("iperf3")
            .args(["-s", "-p", &IPERF_PORT.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("iperf3 server")?,
    );
    let _stunnel_server = stunnel(
        lab.ns(Node::Hub),
        &lab.node_dir(Node::Hub),
        "server",
        false,
        &format!("{hub_tunnel}:{STUNNEL_SERVER_PORT}"),
        &format!("127.0.0.1:{IPERF_PORT}"),
    )?;
    let _stunnel_client = stunnel(
        lab.ns(Node::Clinic),
        &lab.node_dir(Node::Clinic),
        "client",
        true,
        &format!("{clinic_lan}:{STUNNEL_CLIENT_PORT}"),
        &format!("{hub_tunnel}:{STUNNEL_SERVER_PORT}"),
    )?;

    let _responder = conn_rate::Responder::start(
        lab.ns(Node::Hub)
            .tcp_listener(&format!("0.0.0.0:{RESPONDER_PORT}"))?,
    )?;
    let _stunnel_rate_server = stunnel(
        lab.ns(Node::Hub),
        &lab.node_dir(Node::Hub),
        "rate-server",
        false,
        &format!("{hub_tunnel}:{STUNNEL_RATE_SERVER_PORT}"),
        &format!("127.0.0.1:{RESPONDER_PORT}"),
    )?;
    let _stunnel_rate_client = stunnel(
        lab.ns(Node::Clinic),
        &lab.node_dir(Node::Clinic),
        "rate-client",
        true,
        &format!("{clinic_lan}:{STUNNEL_RATE_CLIENT_PORT}"),
        &format!("{hub_tunnel}:{STUNNEL_RATE_SERVER_PORT}"),
    )?;

    let [a, b, c] = path_names(carrier);
    let box_ns = lab.ns(Node::Clinic);
    let lan_ns = lab.lan_ns(Node::Clinic);
    for ns in [box_ns, lan_ns, lab.ns(Node::Hub)] {
        conn_rate::allow_many_short_connections(ns)?;
    }
    let rate_paths = [
        (
            a,
            box_ns,
            std::net::SocketAddr::new(hub_tunnel.parse()?, RESPONDER_PORT),
        ),
        (
            b,
            lan_ns,
            std::net::SocketAddr::new(clinic_lan.parse()?, RENKEI_RATE_PORT),
        ),
        (
            c,
            lan_ns,
            std::net::SocketAddr::new(clinic_lan.parse()?, STUNNEL_RATE_CLIENT_PORT),
        ),
    ];
    let mut rates: Vec<(&'static str, Vec<RateMeasured>)> = rate_paths
        .iter()
        .map(|(name, ..)| (*name, Vec::new()))
        .collect();
    let paths = [
        (a, box_ns, hub_tunnel, IPERF_PORT),
        (b, lan_ns, clinic_lan, RENKEI_BULK_PORT),
        (c, lan_ns, clinic_lan, STUNNEL_CLIENT_PORT),
    ];
    let mut throughput: Vec<Throughput> = paths
        .iter()
        .map(|(name, ..)| Throughput {
            name,
            single: Vec::new(),
            parallel: Vec::new(),
        })
        .collect();
    let counted = [("clinic", clinic.pid()), ("hub", hub.pid())];
    let ends = (
        Side {
            ns: lab.ns(Node::Clinic),
            tun: lab.interface(Node::Clinic),
        },
        Side {
            ns: lab.ns(Node::Hub),
            tun: lab.interface(Node::Hub),
        },
    );
    let rounds = rounds.max(1);
    for _ in 0..rounds {
        for streams in [1, 64] {
            for ((_, ns, addr, port), path) in paths.iter().zip(throughput.iter_mut()) {
                let measured = iperf(ns, addr, *port, streams, seconds, &counted, &ends)?;
                if streams == 1 {
                    path.single.push(measured);
                } else {
                    path.parallel.push(measured);
                }
            }
        }
        for ((_, ns, target), (_, measured)) in rate_paths.iter().zip(rates.iter_mut()) {
            measured.push(connection_rate(
                ns,
                *target,
                seconds,
                [clinic.pid(), hub.pid()],
            )?);
        }
    }

    spawn_sink(&lab)?;
    let base_rss_kib = (rss_kib(clinic.pid()), rss_kib(hub.pid()));
    let target: std::net::SocketAddr = format!("{clinic_lan}:{RENKEI_IDLE_PORT}").parse()?;
    let started = Instant::now();
    let held = lan_ns.run_inside(move || -> anyhow::Result<Vec<TcpStream>> {
        let mut held = Vec::with_capacity(idle);
        for i in 0..idle {
            let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(10))
                .with_context(|| format!("connection {i}"))?;
            stream.set_read_timeout(Some(Duration::from_secs(20)))?;
            let mut byte = [0u8; 1];
            stream
                .read_exact(&mut byte)
                .with_context(|| format!("connection {i}: no byte from the far side"))?;
            held.push(stream);
        }
        Ok(held)
    })??;
    let idle_open_secs = started.elapsed().as_secs_f64();
    let idle_rss_kib = (rss_kib(clinic.pid()), rss_kib(hub.pid()));
    let idle_connections = held.len();
    drop(held);
    Ok(ProxyReport {
        carrier,
        throughput,
        rates,
        rounds,
        idle_connections,
        idle_open_secs,
        idle_rss_kib,
        base_rss_kib,
    })
}

/// The names of paths (a), (b) and (c) on `carrier`.
fn path_names(carrier: LabCarrier) -> [&'static str; 3] {
    match carrier {
        LabCarrier::WireGuard => [
            "(a) tunnel alone",
            "(b) TLS in tunnel, renkei",
            "(c) TLS in tunnel, stunnel4",
        ],
        LabCarrier::Ipsec => [
            "(a) IPsec SA alone",
            "(b) TLS in the IPsec SA, renkei",
            "(c) TLS in the IPsec SA, stunnel4",
        ],
        LabCarrier::Closed => [
            "(a) routed path, plain TCP",
            "(b) TLS on the routed path, renkei",
            "(c) TLS on the routed path, stunnel4",
        ],
    }
}

/// The median of `values` (the mean of the middle two for an even count); 0 for none.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Median over the rounds of `of(path's measurement, other path's measurement)` in the same
/// round, formatted as a ratio; "-" without another path.
fn median_ratio(
    path: &[Measured],
    other: Option<&[Measured]>,
    of: fn(&Measured, &Measured) -> f64,
) -> String {
    match other {
        Some(other) => format!(
            "{:.2}x",
            median(path.iter().zip(other).map(|(p, o)| of(p, o)).collect())
        ),
        None => "-".to_string(),
    }
}

/// The report printed by `lab bench-proxy`.
pub fn report(r: &ProxyReport) -> String {
    let base = r.throughput.first();
    let stunnel = r.throughput.get(2);
    let faster = |p: &Measured, o: &Measured| p.gbit / o.gbit;
    // (a)'s cost per byte over the path's, so that, as for throughput, above 1x is cheaper
    // than the tunnel alone and below 1x dearer.
    let cheaper = |p: &Measured, o: &Measured| o.cpu_ns_per_byte / p.cpu_ns_per_byte;
    let gbit = |m: &[Measured]| median(m.iter().map(|m| m.gbit).collect());
    let cost = |m: &[Measured]| median(m.iter().map(|m| m.cpu_ns_per_byte).collect());
    let mut out = format!(
        "Carrier: {}. TCP congestion control in the lab: {BOX_TCP_CONGESTION_CONTROL}, the box's. Medians of {} round(s); ratios are medians of per-round ratios.\n\n| path | 1 stream Gbit/s | of (a) | vs stunnel4 | 64 streams Gbit/s | of (a) | vs stunnel4 |\n|---|---|---|---|---|---|---|\n",
        r.carrier.name(),
        r.rounds
    );
    for t in &r.throughput {
        out.push_str(&format!(
            "| {} | {:.2} | {} | {} | {:.2} | {} | {} |\n",
            t.name,
            gbit(&t.single),
            median_ratio(&t.single, base.map(|b| b.single.as_slice()), faster),
            median_ratio(&t.single, stunnel.map(|s| s.single.as_slice()), faster),
            gbit(&t.parallel),
            median_ratio(&t.parallel, base.map(|b| b.parallel.as_slice()), faster),
            median_ratio(&t.parallel, stunnel.map(|s| s.parallel.as_slice()), faster),
        ));
    }
    out.push_str("\n| path | 1 stream CPU ns/byte | (a) per byte of it | 64 streams CPU ns/byte | (a) per byte of it |\n|---|---|---|---|---|\n");
    for t in &r.throughput {
        out.push_str(&format!(
            "| {} | {:.2} | {} | {:.2} | {} |\n",
            t.name,
            cost(&t.single),
            median_ratio(&t.single, base.map(|b| b.single.as_slice()), cheaper),
            cost(&t.parallel),
            median_ratio(&t.parallel, base.map(|b| b.parallel.as_slice()), cheaper),
        ));
    }
    if r.rounds > 1 {
        out.push_str("\nPer round, (b) of (a), throughput 1 / 64 streams:");
        if let (Some(a), Some(b)) = (base, r.throughput.get(1)) {
            for i in 0..r.rounds {
                let ratio = |p: &[Measured], o: &[Measured]| match (p.get(i), o.get(i)) {
                    (Some(p), Some(o)) => format!("{:.2}", faster(p, o)),
                    _ => "-".to_string(),
                };
                out.push_str(&format!(
                    " {}/{}",
                    ratio(&b.single, &a.single),
                    ratio(&b.parallel, &a.parallel)
                ));
            }
        }
        out.push('\n');
    }
    out.push_str(&rate_report(&r.rates));
    out.push_str(&format!(
        "\n{} idle connections through one renkei service (clinic outbound -> hub inbound), each proven by a byte from the far side, opened in {:.1} s.\nRSS clinic daemon: {:.1} MiB -> {:.1} MiB; hub daemon: {:.1} MiB -> {:.1} MiB ({:.1} KiB per connection per box)\n",
        r.idle_connections,
        r.idle_open_secs,
        r.base_rss_kib.0 as f64 / 1024.0,
        r.idle_rss_kib.0 as f64 / 1024.0,
        r.base_rss_kib.1 as f64 / 1024.0,
        r.idle_rss_kib.1 as f64 / 1024.0,
        (r.idle_rss_kib.0.saturating_sub(r.base_rss_kib.0) + r.idle_rss_kib.1.saturating_sub(r.base_rss_kib.1)) as f64
            / 2.0
            / r.idle_connections.max(1) as f64,
    ));
    out
}

/// The connection-rate table: medians over the rounds, ratios of per-round ratios.
fn rate_report(rates: &[(&'static str, Vec<RateMeasured>)]) -> String {
    let base = rates.first().map(|(_, m)| m.as_slice()).unwrap_or_default();
    let stunnel = rates.get(2).map(|(_, m)| m.as_slice()).unwrap_or_default();
    let ratio = |path: &[RateMeasured], other: &[RateMeasured]| {
        median(
            path.iter()
                .zip(other)
                .map(|(p, o)| p.per_sec / o.per_sec)
                .collect(),
        )
    };
    let mut out = format!(
        "\nNew connections through each path ({RATE_WORKERS} at once; connect, one byte each way, close):\n\n| path | connections/s | of (a) | vs stunnel4 | machine CPU ms per connection | renkei daemons' CPU ms per connection | failed |\n|---|---|---|---|---|---|---|\n"
    );
    for (name, measured) in rates {
        out.push_str(&format!(
            "| {name} | {:.0} | {:.2}x | {:.2}x | {:.3} | {:.3} | {} |\n",
            median(measured.iter().map(|m| m.per_sec).collect()),
            ratio(measured, base),
            ratio(measured, stunnel),
            median(measured.iter().map(|m| m.machine_cpu_ms).collect()),
            median(measured.iter().map(|m| m.daemons_cpu_ms).collect()),
            measured.iter().map(|m| m.failed).sum::<u64>(),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::stream_shares;

    #[test]
    fn stream_shares_say_how_evenly_the_streams_shared() {
        let stream = |mib: u64| serde_json::json!({"receiver": {"bytes": mib * 1024 * 1024}});
        let even = serde_json::json!({"end": {"streams": [stream(10), stream(10), stream(10)]}});
        assert_eq!(
            stream_shares(&even),
            "MiB per stream least 10.0, median 10.0, most 10.0; fairness 1.00"
        );
        let one = serde_json::json!({"end": {"streams": [stream(0), stream(0), stream(30)]}});
        assert_eq!(
            stream_shares(&one),
            "MiB per stream least 0.0, median 0.0, most 30.0; fairness 0.33"
        );
        assert_eq!(
            stream_shares(&serde_json::json!({})),
            "no per-stream figures"
        );
    }
}
