//! The proxy benchmark of the TLS issue, in one run on one lab (clinic -> hub):
//! throughput of one large transfer and of 64 parallel ones through (a) the WireGuard tunnel
//! alone, (b) TLS-in-tunnel through renkei's outbound and inbound services, (c) the same TLS leg
//! with stunnel4 in place of renkei's proxy (same certificates, TLS 1.3 AES-GCM, mutual
//! authentication, over the same renkei tunnel); then 10 000 concurrent idle connections through
//! one renkei service, each proven end to end by a byte from the far side, with the daemons' RSS.
//!
//! Every throughput measurement also records the machine's CPU time per byte moved (from
//! `/proc/stat`: user, nice, system, irq and softirq, not idle, iowait or steal). Both boxes and
//! both iperf3 ends share this machine's cores, so a path's throughput is its CPU cost per byte
//! turned upside down, and the cost is what a busy host (steal, other guests) moves least.

use std::io::Read;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::lab::{service_toml, Lab, Node, Peer};
use crate::wait::wait_until;

const IPERF_PORT: u16 = 5201;
const RENKEI_BULK_PORT: u16 = 8443;
const RENKEI_IDLE_PORT: u16 = 8444;
const STUNNEL_CLIENT_PORT: u16 = 8445;
const STUNNEL_SERVER_PORT: u16 = 8446;
const SINK_ADDRESS: &str = "127.0.0.1:9100";

/// Kills a helper process on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One throughput measurement.
#[derive(Debug, Clone)]
pub struct Throughput {
    /// What was measured.
    pub name: &'static str,
    /// One stream, Gbit/s.
    pub single_gbit: f64,
    /// 64 parallel streams, Gbit/s in total.
    pub parallel_gbit: f64,
    /// One stream: the machine's CPU nanoseconds per byte received.
    pub single_cpu_ns_per_byte: f64,
    /// 64 streams: the machine's CPU nanoseconds per byte received.
    pub parallel_cpu_ns_per_byte: f64,
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
struct Measured {
    gbit: f64,
    cpu_ns_per_byte: f64,
}

/// The whole report.
#[derive(Debug, Clone)]
pub struct ProxyReport {
    /// (a), (b), (c).
    pub throughput: Vec<Throughput>,
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
) -> anyhow::Result<Measured> {
    wait_until(Duration::from_secs(20), "an iperf3 result", || {
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
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let received = &json["end"]["sum_received"];
        let bytes = received["bytes"].as_f64().filter(|b| *b > 0.0)?;
        Some(Measured {
            gbit: received["bits_per_second"].as_f64()? / 1e9,
            cpu_ns_per_byte: after.busy_secs_since(before) * 1e9 / bytes,
        })
    })
}

fn tls_section() -> &'static str {
    "\n[tls]\ncertificate_file = \"tls/box.crt\"\nprivate_key_file = \"tls/box.key\"\nca_file = \"tls/operator-ca.crt\"\n"
}

fn with_limits(service: String) -> String {
    service
        .replace("max_connections = 256", "max_connections = 20000")
        .replace("idle_timeout_secs = 600", "idle_timeout_secs = 3600")
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

/// Runs the benchmark: `seconds` per throughput measurement, `idle` idle connections.
pub fn proxy_benchmark(seconds: u32, idle: usize) -> anyhow::Result<ProxyReport> {
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

    let lab = Lab::new()?;
    let hub_tunnel = Node::Hub.tunnel_address();
    let clinic_lan = Node::Clinic.lan_address().context("clinic LAN")?;
    let mut hub_config = lab.tunnel_config(Node::Hub);
    hub_config.push_str(tls_section());
    let clinic_identity = Node::Clinic.tls_name();
    hub_config.push_str(&with_limits(service_toml(
        "bulk",
        "inbound",
        &format!("{hub_tunnel}:{RENKEI_BULK_PORT}"),
        &format!("127.0.0.1:{IPERF_PORT}"),
        Peer::Allowed(clinic_identity),
    )));
    hub_config.push_str(&with_limits(service_toml(
        "idle",
        "inbound",
        &format!("{hub_tunnel}:{RENKEI_IDLE_PORT}"),
        SINK_ADDRESS,
        Peer::Allowed(clinic_identity),
    )));
    let mut clinic_config = lab
        .tunnel_config(Node::Clinic)
        .replace("mode = \"on_demand\"", "mode = \"always_on\"");
    clinic_config.push_str(tls_section());
    let hub_name = Node::Hub.tls_name();
    clinic_config.push_str(&with_limits(service_toml(
        "bulk",
        "outbound",
        &format!("{clinic_lan}:{RENKEI_BULK_PORT}"),
        &format!("{hub_tunnel}:{RENKEI_BULK_PORT}"),
        Peer::ServerName(hub_name),
    )));
    clinic_config.push_str(&with_limits(service_toml(
        "idle",
        "outbound",
        &format!("{clinic_lan}:{RENKEI_IDLE_PORT}"),
        &format!("{hub_tunnel}:{RENKEI_IDLE_PORT}"),
        Peer::ServerName(hub_name),
    )));

    let hub = lab.start(Node::Hub, &hub_config)?;
    let clinic = lab.start(Node::Clinic, &clinic_config)?;
    wait_until(Duration::from_secs(10), "the clinic's tunnel", || {
        (clinic.peer("dc").ok()?["state"] == "up").then_some(())
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

    let box_ns = lab.ns(Node::Clinic);
    let lan_ns = lab.lan_ns(Node::Clinic);
    let mut throughput = Vec::new();
    for (name, ns, addr, port) in [
        ("(a) tunnel alone", box_ns, hub_tunnel, IPERF_PORT),
        (
            "(b) TLS in tunnel, renkei",
            lan_ns,
            clinic_lan,
            RENKEI_BULK_PORT,
        ),
        (
            "(c) TLS in tunnel, stunnel4",
            lan_ns,
            clinic_lan,
            STUNNEL_CLIENT_PORT,
        ),
    ] {
        let single = iperf(ns, addr, port, 1, seconds)?;
        let parallel = iperf(ns, addr, port, 64, seconds)?;
        throughput.push(Throughput {
            name,
            single_gbit: single.gbit,
            parallel_gbit: parallel.gbit,
            single_cpu_ns_per_byte: single.cpu_ns_per_byte,
            parallel_cpu_ns_per_byte: parallel.cpu_ns_per_byte,
        });
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
        throughput,
        idle_connections,
        idle_open_secs,
        idle_rss_kib,
        base_rss_kib,
    })
}

/// The report printed by `lab bench-proxy`.
pub fn report(r: &ProxyReport) -> String {
    let base = r
        .throughput
        .first()
        .map(|t| (t.single_gbit, t.parallel_gbit));
    let stunnel = r
        .throughput
        .get(2)
        .map(|t| (t.single_gbit, t.parallel_gbit));
    let mut out = String::from("| path | 1 stream Gbit/s | of (a) | vs stunnel4 | 64 streams Gbit/s | of (a) | vs stunnel4 |\n|---|---|---|---|---|---|---|\n");
    for t in &r.throughput {
        let of = |v: f64, b: Option<f64>| b.map_or("-".to_string(), |b| format!("{:.2}x", v / b));
        out.push_str(&format!(
            "| {} | {:.2} | {} | {} | {:.2} | {} | {} |\n",
            t.name,
            t.single_gbit,
            of(t.single_gbit, base.map(|b| b.0)),
            of(t.single_gbit, stunnel.map(|s| s.0)),
            t.parallel_gbit,
            of(t.parallel_gbit, base.map(|b| b.1)),
            of(t.parallel_gbit, stunnel.map(|s| s.1)),
        ));
    }
    // The same comparison by CPU cost: (a)'s cost per byte over the path's, so that, as for
    // throughput, above 1x is cheaper than the tunnel alone and below 1x dearer.
    let base_cost = r
        .throughput
        .first()
        .map(|t| (t.single_cpu_ns_per_byte, t.parallel_cpu_ns_per_byte));
    out.push_str("\n| path | 1 stream CPU ns/byte | (a) per byte of it | 64 streams CPU ns/byte | (a) per byte of it |\n|---|---|---|---|---|\n");
    for t in &r.throughput {
        let of = |v: f64, b: Option<f64>| {
            b.filter(|_| v > 0.0)
                .map_or("-".to_string(), |b| format!("{:.2}x", b / v))
        };
        out.push_str(&format!(
            "| {} | {:.2} | {} | {:.2} | {} |\n",
            t.name,
            t.single_cpu_ns_per_byte,
            of(t.single_cpu_ns_per_byte, base_cost.map(|b| b.0)),
            t.parallel_cpu_ns_per_byte,
            of(t.parallel_cpu_ns_per_byte, base_cost.map(|b| b.1)),
        ));
    }
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
