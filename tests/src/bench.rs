//! The tunnel benchmark: in one run, on the same two namespaces (dc and hospital), iperf3 TCP
//! throughput over the plain veth, over a boringtun-cli tunnel, over a wireguard-go tunnel,
//! over the renkei tunnel and over an IPsec charon pair (`bench_ipsec.rs`: kernel-libipsec,
//! and the kernel's XFRM where this kernel has ESP); CPU seconds (and CPU per byte) and peak
//! RSS of each tunnel's processes; and handshake to first reply through a fresh tunnel. It
//! runs in rounds, each round every path back to back in a fresh lab, and reports medians
//! over the rounds, ratios as medians of the per-round ratios: absolute numbers on these
//! shared machines move by tens of percent within minutes, a ratio between measurements
//! seconds apart much less.

use std::time::{Duration, Instant};

use anyhow::Context;

use crate::bench_ipsec::{Esp, IpsecPair, BOX_INNER, DC_INNER};
use crate::foreign::{ForeignWireguard, Implementation};
use crate::lab::{Lab, Node, BOX_TCP_CONGESTION_CONTROL};
use crate::losses::{Losses, Side};
use crate::perfcount::{CountingEach, Recording};
use crate::wait::wait_until;

/// The IPsec pairs' names in the report.
pub const IPSEC_LIBIPSEC: &str = "IPsec charon+libipsec";
/// See [`IPSEC_LIBIPSEC`].
pub const IPSEC_KERNEL_XFRM: &str = "IPsec charon+kernel XFRM";
/// renkei with its TUN offloads switched off (`[tunnel] offloads = false`), measured in the
/// same round as renkei with them on (the default, named `renkei`).
pub const RENKEI_OFFLOADS_OFF: &str = "renkei offloads off";
/// Bytes in a GiB, for CPU seconds per GiB.
const BYTES_PER_GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// One measured tunnel.
#[derive(Debug, Clone)]
pub struct Measurement {
    /// What was measured.
    pub name: String,
    /// iperf3 receiver throughput.
    pub gbit_per_s: f64,
    /// Bytes the iperf3 receiver got.
    pub bytes: u64,
    /// CPU seconds of both tunnel processes during the transfer.
    pub cpu_secs: f64,
    /// Peak RSS of the tunnel processes, KiB (largest of the two).
    pub peak_rss_kib: u64,
    /// RSS after the handshake, before the transfer, KiB (largest of the two).
    pub idle_rss_kib: u64,
    /// Handshake to first reply through a fresh tunnel: for WireGuard the first ping's own
    /// handshake; for IPsec from `initiate` to the first ping's reply.
    pub handshake_ms: f64,
}

impl Measurement {
    /// CPU seconds of the tunnel's processes per GiB received.
    pub fn cpu_secs_per_gib(&self) -> f64 {
        if self.bytes == 0 {
            return 0.0;
        }
        self.cpu_secs / (self.bytes as f64 / BYTES_PER_GIB)
    }
}

/// One iperf3 transfer.
#[derive(Debug, Clone, Copy)]
struct Transfer {
    gbit_per_s: f64,
    bytes: u64,
}

/// Where iperf3 runs: the server's address in dc, and the address the client in the
/// hospital sends from (`None`: the kernel's choice).
#[derive(Debug, Clone, Copy)]
struct Path<'a> {
    server: &'a str,
    client_bind: Option<&'a str>,
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

/// iperf3 from the hospital to a server in dc on `path`, for `seconds`.
fn iperf(lab: &Lab, path: Path, seconds: u32) -> anyhow::Result<Transfer> {
    let mut server = lab
        .ns(Node::Hub)
        .command("iperf3")
        .args(["-s", "-1", "-B", path.server])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("iperf3 server")?;
    let mut args = vec!["-c", path.server, "-J"];
    if let Some(bind) = path.client_bind {
        args.extend(["-B", bind]);
    }
    let seconds = seconds.to_string();
    args.extend(["-t", &seconds]);
    let result = wait_until(Duration::from_secs(10), "iperf3 server", || {
        let out = lab
            .ns(Node::Hospital)
            .command("iperf3")
            .args(&args)
            .output()
            .ok()?;
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let received = &json["end"]["sum_received"];
        Some(Transfer {
            gbit_per_s: received["bits_per_second"].as_f64()? / 1e9,
            bytes: received["bytes"].as_u64()?,
        })
    });
    let _ = server.kill();
    let _ = server.wait();
    result.context("iperf3 result")
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

/// The WireGuard tunnels' path: tunnel address to tunnel address.
fn wireguard_path() -> Path<'static> {
    Path {
        server: Node::Hub.tunnel_address(),
        client_bind: None,
    }
}

/// Measures one tunnel whose handshake took `handshake_ms`: RSS now, then an iperf3 transfer
/// on `path` with the CPU time `pids` used during it. `RENKEI_BENCH_COUNT=1` prints each
/// process's CPU time, context switches and system calls per MiB (`perf stat`) and the
/// path's losses (`losses.rs`; renkei's TUN devices only);
/// `RENKEI_BENCH_RECORD=<prefix>` records the transfer system-wide too, to
/// `<prefix>.<name>.<n>` (spaces and `+` as `-`).
fn measure(
    lab: &Lab,
    name: &str,
    pids: &[u32],
    handshake_ms: f64,
    path: Path,
    seconds: u32,
) -> anyhow::Result<Measurement> {
    let idle_rss_kib = pids
        .iter()
        .map(|p| proc_status_kib(*p, "VmRSS:"))
        .max()
        .unwrap_or(0);
    let count = std::env::var_os("RENKEI_BENCH_COUNT").is_some();
    let ends = (
        Side {
            ns: lab.ns(Node::Hospital),
            tun: lab.interface(Node::Hospital),
        },
        Side {
            ns: lab.ns(Node::Hub),
            tun: lab.interface(Node::Hub),
        },
    );
    let losses_before = count.then(|| Losses::read(&ends.0, &ends.1)).flatten();
    let counting =
        count.then(|| CountingEach::start(name, pids.iter().map(|pid| (pid.to_string(), *pid))));
    let recording = Recording::from_env(&name.replace([' ', '+'], "-"));
    let before: u64 = pids.iter().map(|p| proc_cpu_ticks(*p)).sum();
    let transfer = iperf(lab, path, seconds)?;
    let after: u64 = pids.iter().map(|p| proc_cpu_ticks(*p)).sum();
    if let Some(recording) = recording {
        if let Err(e) = recording.stop() {
            eprintln!("{name}: {e:#}");
        }
    }
    if let (Some(earlier), Some(now)) = (losses_before, Losses::read(&ends.0, &ends.1)) {
        eprintln!("{name}: {}", now.since(&earlier));
    }
    if let Some(counting) = counting {
        counting.finish_and_print(transfer.bytes as f64);
    }
    Ok(Measurement {
        name: name.to_string(),
        gbit_per_s: transfer.gbit_per_s,
        bytes: transfer.bytes,
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

/// Measures an IPsec charon pair: `initiate` to first reply, then the transfer between the
/// inner addresses.
fn measure_ipsec(lab: &Lab, name: &str, esp: Esp, seconds: u32) -> anyhow::Result<Measurement> {
    let mut pair = IpsecPair::start(lab, esp)?;
    let handshake_ms = pair.initiate_to_first_reply_ms(lab)?;
    let path = Path {
        server: DC_INNER,
        client_bind: Some(BOX_INNER),
    };
    measure(lab, name, &pair.pids(), handshake_ms, path, seconds)
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

/// One round: every path measured once, back to back, in one fresh lab.
#[derive(Debug, Clone)]
pub struct Round {
    /// `/proc/loadavg` when the round started (other builds share the machine).
    pub load_average: String,
    /// iperf3 over the plain veth (through the lab's WAN router), Gbit/s.
    pub veth_gbit_per_s: f64,
    /// Every tunnel that could be measured.
    pub results: Vec<Measurement>,
    /// Every tunnel that could not be set up, with why (e.g. a kernel without ESP).
    pub not_measured: Vec<(String, String)>,
}

fn one_round(seconds: u32) -> anyhow::Result<Round> {
    let load_average = std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    let lab = Lab::new()?;
    lab.set_tcp_congestion_control(BOX_TCP_CONGESTION_CONTROL)?;
    let veth = iperf(
        &lab,
        Path {
            server: Node::Hub.wan_address(),
            client_bind: None,
        },
        seconds,
    )?;
    let mut results = Vec::new();
    for (name, implementation) in [
        ("boringtun-cli", Implementation::BoringtunCli),
        ("wireguard-go", Implementation::WireguardGo),
    ] {
        let (hub, hospital) = foreign_pair(&lab, implementation)?;
        let pids: Vec<u32> = [hub.pid(), hospital.pid()].into_iter().flatten().collect();
        let handshake_ms = first_reply_ms(&lab)?;
        results.push(measure(
            &lab,
            name,
            &pids,
            handshake_ms,
            wireguard_path(),
            seconds,
        )?);
    }
    // Offloads off first, then on (the default): both pairs in the same round.
    for (name, offloads) in [(RENKEI_OFFLOADS_OFF, false), ("renkei", true)] {
        let mut hub_config = lab.config(Node::Hub);
        hub_config.tunnel.as_mut().expect("[tunnel]").offloads = offloads;
        let hub = lab.start(Node::Hub, &hub_config)?;
        // On demand, so the handshake latency is first packet -> session, as for the others.
        let mut config = lab.config(Node::Hospital);
        let tunnel = config.tunnel.as_mut().expect("[tunnel]");
        tunnel.policy.mode = Some(renkei::config::PolicyMode::OnDemand);
        tunnel.offloads = offloads;
        let hospital = lab.start(Node::Hospital, &config)?;
        let pids: Vec<u32> = [hub.pid(), hospital.pid()].into_iter().flatten().collect();
        let handshake_ms = first_reply_ms(&lab)?;
        results.push(measure(
            &lab,
            name,
            &pids,
            handshake_ms,
            wireguard_path(),
            seconds,
        )?);
    }
    // A pair that cannot be set up (no strongSwan, a kernel without ESP, a renkei without
    // `charon-conf` under RENKEI_BIN) is reported with why; the WireGuard figures still count.
    let mut not_measured = Vec::new();
    for (name, esp) in [
        (IPSEC_LIBIPSEC, Esp::Libipsec),
        (IPSEC_KERNEL_XFRM, Esp::KernelXfrm),
    ] {
        match measure_ipsec(&lab, name, esp, seconds) {
            Ok(m) => results.push(m),
            Err(e) => not_measured.push((name.to_string(), format!("{e:#}"))),
        }
    }
    Ok(Round {
        load_average,
        veth_gbit_per_s: veth.gbit_per_s,
        results,
        not_measured,
    })
}

/// Runs `rounds` rounds of every measurement.
pub fn tunnel_benchmark(seconds: u32, rounds: usize) -> anyhow::Result<Vec<Round>> {
    (0..rounds)
        .map(|round| {
            eprintln!("bench-tunnel: round {} of {rounds}", round + 1);
            one_round(seconds)
        })
        .collect()
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

fn spread(values: &[f64], digits: usize) -> String {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    match median(values.to_vec()) {
        Some(m) => format!("{m:.digits$} ({min:.digits$}-{max:.digits$})"),
        None => "-".into(),
    }
}

/// The tunnels compared against, in the report's ratio columns.
const BASELINES: [&str; 4] = [
    "boringtun-cli",
    "wireguard-go",
    RENKEI_OFFLOADS_OFF,
    "renkei",
];

fn by_name<'a>(round: &'a Round, name: &str) -> Option<&'a Measurement> {
    round.results.iter().find(|m| m.name == name)
}

/// The report printed by `lab bench-tunnel`: each round's table, then medians over the rounds.
pub fn report(rounds: &[Round]) -> String {
    let mut out =
        format!("TCP congestion control in the lab: {BOX_TCP_CONGESTION_CONTROL}, the box's.\n\n");
    let mut explained: Vec<(String, usize)> = Vec::new();
    let header = "| tunnel | Gbit/s | of veth | vs boringtun-cli | vs wireguard-go | vs renkei offloads off | vs renkei | CPU s | CPU s per GiB | peak RSS MiB | idle RSS MiB | handshake to first reply ms |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n";
    for (i, round) in rounds.iter().enumerate() {
        out.push_str(&format!(
            "round {} (load average {}): plain veth {:.2} Gbit/s\n\n{header}",
            i + 1,
            round.load_average,
            round.veth_gbit_per_s
        ));
        for m in &round.results {
            let ratios: Vec<String> = BASELINES
                .iter()
                .map(|b| {
                    by_name(round, b).map_or("-".into(), |b| {
                        format!("{:.2}x", m.gbit_per_s / b.gbit_per_s)
                    })
                })
                .collect();
            out.push_str(&format!(
                "| {} | {:.2} | {:.1} % | {} | {:.1} | {:.2} | {:.1} | {:.1} | {:.0} |\n",
                m.name,
                m.gbit_per_s,
                100.0 * m.gbit_per_s / round.veth_gbit_per_s,
                ratios.join(" | "),
                m.cpu_secs,
                m.cpu_secs_per_gib(),
                m.peak_rss_kib as f64 / 1024.0,
                m.idle_rss_kib as f64 / 1024.0,
                m.handshake_ms,
            ));
        }
        for (name, why) in &round.not_measured {
            // The reason in full once; later rounds point back to it.
            match explained.iter().find(|(n, _)| n == name) {
                Some((_, first)) => {
                    out.push_str(&format!("\n{name}: not measured (as in round {first})\n"))
                }
                None => {
                    out.push_str(&format!("\n{name}: not measured: {why}\n"));
                    explained.push((name.clone(), i + 1));
                }
            }
        }
        out.push('\n');
    }
    let veth: Vec<f64> = rounds.iter().map(|r| r.veth_gbit_per_s).collect();
    out.push_str(&format!(
        "medians over {} rounds (min-max): plain veth {} Gbit/s\n\n",
        rounds.len(),
        spread(&veth, 2)
    ));
    out.push_str("| tunnel | Gbit/s | of veth | vs boringtun-cli | vs wireguard-go | vs renkei offloads off | vs renkei | CPU s per GiB | CPU per byte of renkei offloads off's | CPU per byte of renkei's | handshake to first reply ms |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
    let mut names: Vec<String> = Vec::new();
    for m in rounds.iter().flat_map(|r| &r.results) {
        if !names.contains(&m.name) {
            names.push(m.name.clone());
        }
    }
    for name in names {
        let of = |f: &dyn Fn(&Round, &Measurement) -> Option<f64>| -> Vec<f64> {
            rounds
                .iter()
                .filter_map(|r| by_name(r, &name).and_then(|m| f(r, m)))
                .collect()
        };
        let ratio = |base: &str| {
            let values = of(&|r, m| by_name(r, base).map(|b| m.gbit_per_s / b.gbit_per_s));
            format!("{}x", spread(&values, 2))
        };
        let cost_vs = |base: &str| {
            let values =
                of(&|r, m| by_name(r, base).map(|b| m.cpu_secs_per_gib() / b.cpu_secs_per_gib()));
            format!("{}x", spread(&values, 2))
        };
        let of_veth = of(&|r, m| Some(100.0 * m.gbit_per_s / r.veth_gbit_per_s));
        out.push_str(&format!(
            "| {name} | {} | {} % | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            spread(&of(&|_, m| Some(m.gbit_per_s)), 2),
            spread(&of_veth, 1),
            ratio(BASELINES[0]),
            ratio(BASELINES[1]),
            ratio(BASELINES[2]),
            ratio(BASELINES[3]),
            spread(&of(&|_, m| Some(m.cpu_secs_per_gib())), 2),
            cost_vs(RENKEI_OFFLOADS_OFF),
            cost_vs("renkei"),
            spread(&of(&|_, m| Some(m.handshake_ms)), 0),
        ));
    }
    out
}
