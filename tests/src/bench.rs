//! The tunnel benchmark of the data-plane issue: in one run, on the same two namespaces (dc and
//! hospital), iperf3 TCP throughput over the plain veth, over a boringtun-cli tunnel, over a
//! wireguard-go tunnel and over the renkei tunnel; CPU seconds and peak RSS of each tunnel
//! process; and handshake latency (first packet to first reply). Ratios are against the
//! baselines of the same run: absolute numbers on these shared machines vary between runs.

use std::time::{Duration, Instant};

use anyhow::Context;

use crate::foreign::{ForeignWireguard, Implementation};
use crate::lab::{Lab, Node};
use crate::wait::wait_until;

/// One measured tunnel.
#[derive(Debug, Clone)]
pub struct Measurement {
    /// What was measured.
    pub name: String,
    /// iperf3 receiver throughput.
    pub gbit_per_s: f64,
    /// CPU seconds of both tunnel processes during the transfer.
    pub cpu_secs: f64,
    /// Peak RSS of the tunnel processes, KiB (largest of the two).
    pub peak_rss_kib: u64,
    /// RSS after the handshake, before the transfer, KiB (largest of the two).
    pub idle_rss_kib: u64,
    /// First packet to first reply through a fresh tunnel.
    pub handshake_ms: f64,
}

fn proc_cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1.to_string();
            let fields: Vec<&str> = after.split_whitespace().collect();
            // utime and stime are fields 14 and 15 of stat; here 11 and 12 after "pid (comm)".
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

fn proc_status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// iperf3 from `client` to a server on `server_addr` in `server`, for `seconds`.
fn iperf(lab: &Lab, server_addr: &str, seconds: u32) -> anyhow::Result<f64> {
    let mut server = lab
        .ns(Node::Hub)
        .command("iperf3")
        .args(["-s", "-1", "-B", server_addr])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("iperf3 server")?;
    let result = wait_until(Duration::from_secs(10), "iperf3 server", || {
        let out = lab
            .ns(Node::Hospital)
            .command("iperf3")
            .args(["-c", server_addr, "-t", &seconds.to_string(), "-J"])
            .output()
            .ok()?;
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        json["end"]["sum_received"]["bits_per_second"].as_f64()
    });
    let _ = server.kill();
    let _ = server.wait();
    Ok(result.context("iperf3 result")? / 1e9)
}

/// Time from the first ping to its reply through a tunnel that has no session yet.
fn first_reply_ms(lab: &Lab) -> anyhow::Result<f64> {
    let start = Instant::now();
    wait_until(
        Duration::from_secs(15),
        "a reply through the tunnel",
        || {
            lab.ns(Node::Hospital)
                .exec("ping", &["-c", "1", "-W", "1", Node::Hub.tunnel_address()])
                .ok()
        },
    )?;
    Ok(start.elapsed().as_secs_f64() * 1000.0)
}

fn measure(lab: &Lab, name: &str, pids: &[u32], seconds: u32) -> anyhow::Result<Measurement> {
    let handshake_ms = first_reply_ms(lab)?;
    let idle_rss_kib = pids
        .iter()
        .map(|p| proc_status_kib(*p, "VmRSS:"))
        .max()
        .unwrap_or(0);
    let before: u64 = pids.iter().map(|p| proc_cpu_ticks(*p)).sum();
    let gbit_per_s = iperf(lab, Node::Hub.tunnel_address(), seconds)?;
    let after: u64 = pids.iter().map(|p| proc_cpu_ticks(*p)).sum();
    Ok(Measurement {
        name: name.to_string(),
        gbit_per_s,
        cpu_secs: (after.saturating_sub(before)) as f64 / ticks_per_second(),
        peak_rss_kib: pids
            .iter()
            .map(|p| proc_status_kib(*p, "VmHWM:"))
            .max()
            .unwrap_or(0),
        idle_rss_kib,
        handshake_ms,
    })
}

fn foreign_pair(
    lab: &Lab,
    implementation: Implementation,
) -> anyhow::Result<(ForeignWireguard, ForeignWireguard)> {
    let hub = ForeignWireguard::start_as_hub(implementation, lab, &format!("rk{}y", lab.id))?;
    let hospital =
        ForeignWireguard::start_as_hospital(implementation, lab, &format!("rk{}z", lab.id))?;
    Ok((hub, hospital))
}

/// Runs every measurement once, in one lab.
pub fn tunnel_benchmark(seconds: u32) -> anyhow::Result<(f64, Vec<Measurement>)> {
    let lab = Lab::new()?;
    let veth = iperf(&lab, Node::Hub.wan_address(), seconds)?;
    let mut results = Vec::new();
    for (name, implementation) in [
        ("boringtun-cli", Implementation::BoringtunCli),
        ("wireguard-go", Implementation::WireguardGo),
    ] {
        let (hub, hospital) = foreign_pair(&lab, implementation)?;
        let pids: Vec<u32> = [hub.pid(), hospital.pid()].into_iter().flatten().collect();
        results.push(measure(&lab, name, &pids, seconds)?);
    }
    {
        let hub = lab.start(Node::Hub, &lab.config(Node::Hub))?;
        // On demand, so the handshake latency is first packet -> session, as for the others.
        let mut config = lab.config(Node::Hospital);
        config.tunnel.as_mut().expect("[tunnel]").policy.mode =
            Some(renkei::config::PolicyMode::OnDemand);
        let hospital = lab.start(Node::Hospital, &config)?;
        let pids: Vec<u32> = [hub.pid(), hospital.pid()].into_iter().flatten().collect();
        results.push(measure(&lab, "renkei", &pids, seconds)?);
    }
    Ok((veth, results))
}

/// The report printed by `lab bench-tunnel`.
pub fn report(veth: f64, results: &[Measurement]) -> String {
    let by = |name: &str| {
        results
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.gbit_per_s)
    };
    let mut out = format!("plain veth: {veth:.2} Gbit/s\n\n");
    out.push_str("| tunnel | Gbit/s | of veth | vs boringtun-cli | vs wireguard-go | CPU s | peak RSS MiB | idle RSS MiB | first packet to reply ms |\n");
    out.push_str("|---|---|---|---|---|---|---|---|---|\n");
    for m in results {
        let ratio =
            |base: Option<f64>| base.map_or("-".into(), |b| format!("{:.2}x", m.gbit_per_s / b));
        out.push_str(&format!(
            "| {} | {:.2} | {:.1} % | {} | {} | {:.1} | {:.1} | {:.1} | {:.0} |\n",
            m.name,
            m.gbit_per_s,
            100.0 * m.gbit_per_s / veth,
            ratio(by("boringtun-cli")),
            ratio(by("wireguard-go")),
            m.cpu_secs,
            m.peak_rss_kib as f64 / 1024.0,
            m.idle_rss_kib as f64 / 1024.0,
            m.handshake_ms,
        ));
    }
    out
}
