//! The soak (`lab soak`, `tests/soak`; not in CI): the demo chain under churning viewers (see
//! [`crate::churn`]) for hours, sampled at a fixed interval into a CSV file (time, what the
//! viewers did, each daemon's resident memory, open descriptors and completed handshakes) and
//! drawn with gnuplot into a PNG, so that a slow leak shows as a slope a short test cannot see.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::chain::start_chain;
use crate::churn::{handshakes_completed, open_fds, rss_kib, Viewers};
use crate::{Daemon, Lab};

/// What a soak runs.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    /// How long.
    pub duration: Duration,
    /// Time between samples.
    pub interval: Duration,
    /// Viewers churning at once.
    pub viewers: usize,
    /// Where `soak.csv`, `soak.gp` and `soak.png` go.
    pub out: PathBuf,
}

/// The CSV file's columns.
const HEADER: &str = "elapsed_secs,fetched,failed,dropped_before_request,dropped_mid_request,\
clinic_rss_kib,hub_rss_kib,hospital_rss_kib,clinic_fds,hub_fds,hospital_fds,\
clinic_handshakes,hub_handshakes,hospital_handshakes";

/// Runs the soak; returns the CSV file's path (the PNG beside it when gnuplot is there).
pub fn run(options: &SoakOptions) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(&options.out)
        .with_context(|| format!("creating {}", options.out.display()))?;
    let csv_path = options.out.join("soak.csv");
    let mut csv = std::fs::File::create(&csv_path)
        .with_context(|| format!("creating {}", csv_path.display()))?;
    writeln!(csv, "{HEADER}")?;
    let lab = Lab::new()?;
    let chain = start_chain(&lab);
    let boxes: [&Daemon; 3] = [&chain.clinic, &chain.hub, &chain.hospital];
    let viewers = Viewers::start(&lab, options.viewers);
    let started = Instant::now();
    let mut next = started;
    while started.elapsed() <= options.duration {
        let (fetched, failed, before, mid) = viewers.counts.totals();
        let field = |v: Option<u64>| v.map_or_else(String::new, |v| v.to_string());
        let mut line = format!(
            "{},{fetched},{failed},{before},{mid}",
            started.elapsed().as_secs()
        );
        for sample in [
            boxes.map(rss_kib),
            boxes.map(|d| open_fds(d).map(|n| n as u64)),
            boxes.map(handshakes_completed),
        ] {
            for value in sample {
                line.push(',');
                line.push_str(&field(value));
            }
        }
        writeln!(csv, "{line}")?;
        csv.flush()?;
        eprintln!("soak: {line}");
        // The sampling cadence, not a wait for a condition.
        next += options.interval;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let counts = viewers.stop();
    eprintln!("soak: done after {:?}: {counts:?}", started.elapsed());
    plot(&csv_path, &options.out)?;
    Ok(csv_path)
}

/// Writes `soak.gp` and, when gnuplot is installed, runs it to draw `soak.png`.
fn plot(csv: &Path, out: &Path) -> anyhow::Result<()> {
    let script = out.join("soak.gp");
    let png = out.join("soak.png");
    std::fs::write(&script, gnuplot_script(csv, &png))?;
    match std::process::Command::new("gnuplot").arg(&script).status() {
        Ok(status) if status.success() => eprintln!("soak: plot {}", png.display()),
        Ok(status) => anyhow::bail!("gnuplot {} failed: {status}", script.display()),
        Err(e) => eprintln!(
            "soak: no plot ({e}): install gnuplot-nox and run gnuplot {}",
            script.display()
        ),
    }
    Ok(())
}

/// Three panels over time: resident memory, open descriptors, and connections with handshakes.
fn gnuplot_script(csv: &Path, png: &Path) -> String {
    let data = csv.display();
    format!(
        "set terminal pngcairo size 1200,1200 noenhanced
set output '{png}'
set datafile separator ','
set key autotitle columnhead outside right
set xlabel 'hours'
set multiplot layout 3,1 title 'renkei soak: the demo chain under churning viewers'
set ylabel 'RSS (MiB)'
plot for [c=6:8] '{data}' using ($1/3600):(column(c)/1024) with lines
set ylabel 'open descriptors'
plot for [c=9:11] '{data}' using ($1/3600):c with lines
set ylabel 'count'
set logscale y
plot for [c=2:5] '{data}' using ($1/3600):c with lines, \\
     for [c=12:14] '{data}' using ($1/3600):c with lines dashtype 2
unset multiplot
",
        png = png.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plot_names_every_column_of_the_csv_file() {
        let script = gnuplot_script(Path::new("/x/soak.csv"), Path::new("/x/soak.png"));
        let columns = HEADER.split(',').count();
        assert_eq!(columns, 14);
        for range in ["[c=2:5]", "[c=6:8]", "[c=9:11]", "[c=12:14]"] {
            assert!(script.contains(range), "{range} in {script}");
        }
    }
}
