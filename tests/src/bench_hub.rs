//! The hub at scale (`lab bench-hub`): for each number of facilities, in rounds, a fresh lab
//! with the real hub daemon and a swarm of facilities ([`crate::scale`]), measuring time to
//! every facility's first answered ping from cold and after a hub kill and start, the hub's
//! RSS and CPU time, its status JSON (control socket and page) and its metrics. The report
//! gives medians over the rounds with the smallest and largest value.

use std::time::Duration;

use anyhow::Context;

use crate::lab::Node;
use crate::scale::{cpu_time, vm_rss_kib, ScaleLab, ScaleOptions, STATUS_PAGE};
use crate::web::{login, ADMIN_PASSWORD};

/// Longest wait for every facility, cold or after a restart.
const ALL_UP_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest wait for the hub to write down every endpoint before it is restarted.
const REMEMBER_TIMEOUT: Duration = Duration::from_secs(30);
/// Status requests per round, for the latency's median.
const STATUS_SAMPLES: usize = 5;

/// One round with one number of facilities.
#[derive(Debug, Clone)]
pub struct HubRound {
    /// Facilities.
    pub facilities: usize,
    /// Hub ready to the last facility's first answered ping, cold.
    pub cold: Duration,
    /// Kill to the restarted hub answering its control socket.
    pub restart_ready: Duration,
    /// Kill to the last facility's first answered ping.
    pub restart_all: Duration,
    /// Facilities shown up with their ping unanswered, cold and after the restart (should be
    /// none).
    pub up_without_session: usize,
    /// RSS with every peer configured and no session, KiB.
    pub rss_configured_kib: u64,
    /// RSS with every facility's session, KiB.
    pub rss_up_kib: u64,
    /// CPU time of the hub from start to all up, cold.
    pub cpu_cold: Duration,
    /// CPU time of the restarted hub from start to all up.
    pub cpu_restart: Duration,
    /// Status document from the control socket: bytes and median latency.
    pub status_bytes: usize,
    /// See `status_bytes`.
    pub status_latency: Duration,
    /// `/api/v1/status` from the page: bytes and curl's total time.
    pub page_status_bytes: usize,
    /// See `page_status_bytes`.
    pub page_status_latency: Duration,
    /// `/metrics` from the page: bytes and lines.
    pub metrics_bytes: usize,
    /// See `metrics_bytes`.
    pub metrics_lines: usize,
}

/// Runs `rounds` rounds for each of `sizes` (round by round, every size in each round).
pub fn hub_benchmark(sizes: &[usize], rounds: usize) -> anyhow::Result<Vec<HubRound>> {
    let mut results = Vec::new();
    for round in 1..=rounds {
        for &facilities in sizes {
            let result = one_round(facilities)
                .with_context(|| format!("round {round} with {facilities} facilities"))?;
            eprintln!("round {round}: {result:?}");
            results.push(result);
        }
    }
    Ok(results)
}

fn one_round(facilities: usize) -> anyhow::Result<HubRound> {
    let options = ScaleOptions {
        handshakes_per_sec: None,
        status_page: true,
    };
    let mut scale = ScaleLab::start(facilities, options)?;
    let cold_round = scale.watch_cold_start(ALL_UP_TIMEOUT)?;
    let cold = cold_round.all_answered;
    let pid = scale.hub.pid().context("the hub's pid")?;
    let cpu_cold = cpu_time(pid).unwrap_or_default();
    scale.wait_remembered(REMEMBER_TIMEOUT)?;
    let rss_up_kib = vm_rss_kib(pid).unwrap_or(0);

    let mut latencies = Vec::new();
    let mut status_bytes = 0;
    for _ in 0..STATUS_SAMPLES {
        let (_, took, bytes) = scale.timed_status()?;
        latencies.push(took);
        status_bytes = bytes;
    }
    let (page_status_bytes, page_status_latency) = page_get(&scale, "/api/v1/status")?;
    let (metrics_bytes, _) = page_get(&scale, "/metrics")?;
    let metrics_lines = page_body(&scale, "/metrics")?.lines().count();

    let recovery = scale.restart_hub(ALL_UP_TIMEOUT)?;
    let cpu_restart = scale
        .hub
        .pid()
        .and_then(cpu_time)
        .context("the restarted hub's CPU time")?;
    Ok(HubRound {
        facilities,
        cold,
        restart_ready: recovery.hub_ready,
        restart_all: recovery.all_answered,
        up_without_session: cold_round.up_without_session.len() + recovery.up_without_session.len(),
        rss_configured_kib: scale.rss_configured_kib,
        rss_up_kib,
        cpu_cold,
        cpu_restart,
        status_bytes,
        status_latency: median(&mut latencies),
        page_status_bytes,
        page_status_latency,
        metrics_bytes,
        metrics_lines,
    })
}

/// GET `path` from the hub's page as the administrator: body bytes and curl's total time.
fn page_get(scale: &ScaleLab, path: &str) -> anyhow::Result<(usize, Duration)> {
    let ns = scale.lab.ns(Node::Hub);
    let base = format!("http://{STATUS_PAGE}");
    let session = login(ns, &base, ADMIN_PASSWORD)?;
    let output = ns
        .command("curl")
        .args([
            "-s",
            "-S",
            "-o",
            "/dev/null",
            "-w",
            "%{size_download} %{time_total}",
        ])
        .args(["-H", &format!("Cookie: {}", session.cookie)])
        .arg(format!("{base}{path}"))
        .output()
        .context("running curl")?;
    let text = String::from_utf8_lossy(&output.stdout);
    let (bytes, secs) = text
        .trim()
        .split_once(' ')
        .with_context(|| format!("curl wrote {text:?}"))?;
    Ok((
        bytes.parse()?,
        Duration::from_secs_f64(secs.replace(',', ".").parse()?),
    ))
}

fn page_body(scale: &ScaleLab, path: &str) -> anyhow::Result<String> {
    let ns = scale.lab.ns(Node::Hub);
    let base = format!("http://{STATUS_PAGE}");
    let session = login(ns, &base, ADMIN_PASSWORD)?;
    let reply = crate::web::get(ns, &base, &session, path)?;
    anyhow::ensure!(reply.status == 200, "{path} answered {}", reply.status);
    Ok(reply.body)
}

fn median<T: Ord + Copy + Default>(values: &mut [T]) -> T {
    values.sort();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

/// Median, smallest and largest of `values`, formatted by `show`.
fn spread<T: PartialOrd + Copy>(values: &[T], show: impl Fn(T) -> String) -> String {
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

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn millis(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn mib(kib: f64) -> String {
    format!("{:.1} MiB", kib / 1024.0)
}

/// The report: one table row per number of facilities, then memory per peer.
pub fn report(rounds: &[HubRound]) -> String {
    let mut sizes: Vec<usize> = rounds.iter().map(|r| r.facilities).collect();
    sizes.sort();
    sizes.dedup();
    let of = |n: usize| -> Vec<&HubRound> { rounds.iter().filter(|r| r.facilities == n).collect() };
    let mut out = String::new();
    out.push_str(&format!(
        "{} rounds; median (smallest-largest)\n\n",
        rounds.len() / sizes.len().max(1)
    ));
    out.push_str("| facilities | all up, cold | restart: hub ready | restart: all up | after ready | up without session | RSS configured | RSS all up | CPU cold | CPU restart |\n|---|---|---|---|---|---|---|---|---|---|\n");
    for &n in &sizes {
        let r = of(n);
        let col = |f: &dyn Fn(&HubRound) -> Duration| {
            spread(&r.iter().map(|x| f(x)).collect::<Vec<_>>(), secs)
        };
        let kib = |f: &dyn Fn(&HubRound) -> u64| {
            spread(&r.iter().map(|x| f(x) as f64).collect::<Vec<_>>(), mib)
        };
        out.push_str(&format!(
            "| {n} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            col(&|x| x.cold),
            col(&|x| x.restart_ready),
            col(&|x| x.restart_all),
            col(&|x| x.restart_all.saturating_sub(x.restart_ready)),
            r.iter().map(|x| x.up_without_session).max().unwrap_or(0),
            kib(&|x| x.rss_configured_kib),
            kib(&|x| x.rss_up_kib),
            col(&|x| x.cpu_cold),
            col(&|x| x.cpu_restart),
        ));
    }
    out.push_str("\n| facilities | status JSON (control socket) | latency | /api/v1/status | latency (curl) | /metrics | lines |\n|---|---|---|---|---|---|---|\n");
    for &n in &sizes {
        let r = of(n);
        let bytes = |f: &dyn Fn(&HubRound) -> usize| {
            spread(&r.iter().map(|x| f(x) as f64).collect::<Vec<_>>(), |b| {
                format!("{:.0} KiB", b / 1024.0)
            })
        };
        let lat = |f: &dyn Fn(&HubRound) -> Duration| {
            spread(&r.iter().map(|x| f(x)).collect::<Vec<_>>(), millis)
        };
        out.push_str(&format!(
            "| {n} | {} | {} | {} | {} | {} | {} |\n",
            bytes(&|x| x.status_bytes),
            lat(&|x| x.status_latency),
            bytes(&|x| x.page_status_bytes),
            lat(&|x| x.page_status_latency),
            bytes(&|x| x.metrics_bytes),
            spread(
                &r.iter().map(|x| x.metrics_lines).collect::<Vec<_>>(),
                |l| l.to_string()
            ),
        ));
    }
    if let (Some(&small), Some(&large)) = (sizes.first(), sizes.last()) {
        if large > small {
            let med = |n: usize, f: &dyn Fn(&HubRound) -> u64| {
                let mut v: Vec<u64> = of(n).iter().map(|x| f(x)).collect();
                median(&mut v) as f64
            };
            let configured = (med(large, &|x| x.rss_configured_kib)
                - med(small, &|x| x.rss_configured_kib))
                / (large - small) as f64;
            out.push_str(&format!(
                "\nper configured peer (RSS configured, {small} to {large}): {:.1} KiB\n",
                configured
            ));
            for &n in &sizes {
                let session =
                    (med(n, &|x| x.rss_up_kib) - med(n, &|x| x.rss_configured_kib)) / n as f64;
                out.push_str(&format!(
                    "per peer with a session at {n} (RSS all up - configured): {session:.1} KiB\n"
                ));
            }
        }
    }
    let status_per_peer: Vec<f64> = rounds
        .iter()
        .map(|r| r.status_bytes as f64 / r.facilities as f64)
        .collect();
    out.push_str(&format!(
        "status JSON per peer: {}\n",
        spread(&status_per_peer, |b| format!("{b:.0} bytes"))
    ));
    out
}
