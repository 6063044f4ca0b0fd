//! `lab`: the regional network in namespaces, for people.
//!
//! `lab up` builds the lab (data centre, hospital and clinic boxes with their LANs, a document
//! server on the hospital LAN, a viewer PC on the clinic LAN) on the chosen carrier (`--carrier
//! wireguard`, the default, `closed` or `ipsec`), starts the three renkei daemons
//! with their TLS services, status pages and management APIs, writes `target/lab/lab.json`,
//! prints what is where and what to try, and returns while the lab keeps running. `lab down`
//! removes everything it created; `lab up` does that first when a lab is left over.
//! `lab show` prints the summary again. `lab compliance` writes `docs/compliance.md` from the
//! output of a test run. `lab bench-tunnel [SECONDS] [ROUNDS]`,
//! `lab bench-proxy [SECONDS] [IDLE] [ROUNDS] [--carrier NAME]` and
//! `lab bench-hub [N,N,...] [ROUNDS]` (and `lab bench-hub throughput [SECONDS] [ROUNDS]`)
//! run the benchmarks (the proxy
//! benchmark on every carrier unless one is named). `lab soak [SECONDS] [INTERVAL] [--out DIR]`
//! runs the chain under churning viewers and writes what each daemon held over time. `lab image-hub` writes the hub and box
//! configs `image/boot-test` uses once it has read the booted box's WireGuard key.

use std::path::PathBuf;

use anyhow::Context;
use renkei_lab::demo::{self, LabRecord, Options};
use renkei_lab::lab::LabCarrier;

const USAGE: &str = "usage:
  lab up [--dir DIR] [--carrier wireguard|closed|ipsec] [--clinic-idle-timeout SECS]
         [--signing-key FILE]                        start the demo lab in the background
  lab down [--dir DIR]                               remove it
  lab show [--dir DIR]                               print what is where again
  lab compliance [--requirements FILE] [--log FILE]... [--out FILE]
                                                     write the compliance report of a test run
  lab bench-tunnel [SECONDS] [ROUNDS]                WireGuard tunnels and IPsec pairs, 3 rounds
  lab bench-proxy [SECONDS] [IDLE] [ROUNDS] [--carrier wireguard|closed|ipsec]
  lab bench-hub [N,N,...] [ROUNDS]                   N facilities (100,500,1000) against one hub,
                                                     cold and after a hub restart, 3 rounds
  lab bench-hub throughput [SECONDS] [ROUNDS]        aggregate TCP throughput through the hub of
                                                     1 and of 8 facility daemons at once, 3 rounds
  lab soak [SECONDS] [INTERVAL] [--out DIR]         the chain under 8 churning viewers for
                                                     SECONDS (3600), sampled every INTERVAL (10):
                                                     DIR/soak.csv and soak.png (target/soak)
  lab image-hub --dir DIR --box-key KEY --interface NAME --hub-endpoint ADDR:PORT [--box-address ADDR]
                                                     image/boot-test's hub: DIR/hub/{wg.key,
                                                     renkei.toml} and the box's DIR/box/renkei.toml;
                                                     with --box-address also the box's IPsec
                                                     config DIR/box-ipsec/renkei.toml
DIR (where lab.json is kept) defaults to $RENKEI_LAB_DIR, else target/lab of the checkout.
--carrier: how the boxes reach the data centre, renkei's WireGuard tunnels (the default for
`up`), a closed network (leased line / IP-VPN: routed, no tunnel) or IKEv2/IPsec (each
facility's charon to a strongSwan concentrator in the data centre); bench-proxy measures
wireguard and closed unless told one. --clinic-idle-timeout is the on-demand clinic's tunnel's
or IPsec SA's (a closed network has nothing to idle out).
FILE is a config signing key from `renkei keygen --operator` for every box to trust (default:
the lab makes one).
compliance reads docs/requirements.md and target/test-output.log and writes docs/compliance.md
of the checkout unless told otherwise.";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = run(&args);
    // A signal's clean-up (`remove_own_labs_on_signal`) ends the process itself: returning now,
    // typically with the error its killing of iperf3 caused, would cut it short.
    while renkei_lab::netns::is_stopping() {
        std::thread::park();
    }
    if let Err(e) = result {
        eprintln!("lab: {e:#}");
        std::process::exit(1);
    }
}

/// `--name value` flags after the subcommand.
struct Flags {
    dir: PathBuf,
    carrier: Option<LabCarrier>,
    idle: Option<u32>,
    signing_key: Option<PathBuf>,
    listen: Option<String>,
    box_key: Option<String>,
    interface: Option<String>,
    hub_endpoint: Option<String>,
    box_address: Option<String>,
    requirements: Option<PathBuf>,
    logs: Vec<PathBuf>,
    out: Option<PathBuf>,
    positional: Vec<String>,
}

fn flags(args: &[String]) -> anyhow::Result<Flags> {
    let mut out = Flags {
        dir: demo::default_state_dir(),
        carrier: None,
        idle: None,
        signing_key: None,
        listen: None,
        box_key: None,
        interface: None,
        hub_endpoint: None,
        box_address: None,
        requirements: None,
        logs: Vec::new(),
        out: None,
        positional: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .with_context(|| format!("{arg} needs a value"))
        };
        match arg.as_str() {
            "--dir" => out.dir = PathBuf::from(value()?),
            "--carrier" => {
                let name = value()?;
                let carrier = LabCarrier::from_name(&name).with_context(|| {
                    format!("--carrier {name:?}: the lab has wireguard, closed and ipsec")
                })?;
                out.carrier = Some(carrier);
            }
            "--clinic-idle-timeout" => {
                let secs: u32 = value()?.parse().context("--clinic-idle-timeout")?;
                anyhow::ensure!(
                    (10..=86_400).contains(&secs),
                    "--clinic-idle-timeout must be 10 to 86400 s"
                );
                out.idle = Some(secs);
            }
            "--signing-key" => out.signing_key = Some(PathBuf::from(value()?)),
            "--listen" => out.listen = Some(value()?),
            "--box-key" => out.box_key = Some(value()?),
            "--interface" => out.interface = Some(value()?),
            "--hub-endpoint" => out.hub_endpoint = Some(value()?),
            "--box-address" => out.box_address = Some(value()?),
            "--requirements" => out.requirements = Some(PathBuf::from(value()?)),
            "--log" => out.logs.push(PathBuf::from(value()?)),
            "--out" => out.out = Some(PathBuf::from(value()?)),
            flag if flag.starts_with("--") => anyhow::bail!("unknown option {flag}\n{USAGE}"),
            _ => out.positional.push(arg.clone()),
        }
    }
    Ok(out)
}

fn run(args: &[String]) -> anyhow::Result<()> {
    let Some(command) = args.first() else {
        anyhow::bail!("{USAGE}");
    };
    let flags = flags(&args[1..])?;
    // The long-running commands clean up after themselves when stopped by a signal.
    if matches!(
        command.as_str(),
        "soak" | "bench-tunnel" | "bench-hub" | "bench-proxy"
    ) {
        renkei_lab::lab::remove_own_labs_on_signal()?;
    }
    // A benchmark's figures compare only with figures from the same machine: its report says
    // which one, first.
    if command.starts_with("bench-") {
        print!("{}", renkei_lab::machine::describe());
    }
    anyhow::ensure!(
        !(flags.carrier == Some(LabCarrier::Closed) && flags.idle.is_some()),
        "--clinic-idle-timeout: a closed network has no tunnel to idle out"
    );
    let options = Options {
        carrier: flags.carrier.unwrap_or(LabCarrier::WireGuard),
        clinic_idle_timeout_secs: flags.idle.unwrap_or(demo::DEFAULT_CLINIC_IDLE_SECS),
        signing_key: flags.signing_key,
    };
    match command.as_str() {
        "up" => {
            let record = demo::up(&flags.dir, &options)?;
            let dir = flags.dir.canonicalize()?;
            print!("{}", demo::summary(&record, &dir));
            if let Some(down) = record.command("down") {
                println!(
                    "\nThe lab keeps running in the background. Remove it with:\n  {}",
                    down.shell
                );
            }
            Ok(())
        }
        "down" => {
            anyhow::ensure!(
                renkei_lab::is_root(),
                "the lab needs root (network namespaces)"
            );
            match demo::down(&flags.dir)? {
                Some(id) => println!("lab {id} removed: processes, namespaces, links, files"),
                None => println!(
                    "no lab recorded in {}: nothing to remove",
                    LabRecord::path(&flags.dir).display()
                ),
            }
            Ok(())
        }
        "show" => {
            let record = LabRecord::read(&flags.dir)?.with_context(|| {
                format!(
                    "no lab recorded in {}",
                    LabRecord::path(&flags.dir).display()
                )
            })?;
            print!("{}", demo::summary(&record, &flags.dir));
            Ok(())
        }
        "compliance" => {
            use renkei_lab::compliance;
            let root = compliance::checkout();
            let requirements = flags
                .requirements
                .unwrap_or_else(|| root.join("docs/requirements.md"));
            let logs = if flags.logs.is_empty() {
                vec![root.join("target/test-output.log")]
            } else {
                flags.logs
            };
            let out = flags.out.unwrap_or_else(|| root.join("docs/compliance.md"));
            println!("{}", compliance::generate(&requirements, &logs, &out)?);
            Ok(())
        }
        "keep" => demo::keep(&flags.dir, &options),
        "serve-documents" => {
            let listen = flags.listen.context("serve-documents needs --listen")?;
            let listener = std::net::TcpListener::bind(&listen)
                .with_context(|| format!("listening on {listen}"))?;
            println!("serving {} on http://{listen}/", flags.dir.display());
            renkei_lab::docserver::serve(listener, flags.dir)
        }
        "image-hub" => {
            let box_key = flags.box_key.context("image-hub needs --box-key")?;
            let interface = flags.interface.context("image-hub needs --interface")?;
            let endpoint: std::net::SocketAddr = flags
                .hub_endpoint
                .context("image-hub needs --hub-endpoint")?
                .parse()
                .context("--hub-endpoint")?;
            let files = renkei_lab::image_hub::write(&flags.dir, &box_key, &interface, endpoint)?;
            println!("hub config: {}", files.hub_config.display());
            println!("box config: {}", files.box_config.display());
            println!("hub public key: {}", files.hub_public_key);
            if let Some(box_address) = flags.box_address {
                let box_wan = box_address.parse().context("--box-address")?;
                let path =
                    renkei_lab::image_hub::write_ipsec_box(&flags.dir, box_wan, endpoint.ip())?;
                println!("ipsec box config: {}", path.display());
            }
            Ok(())
        }
        "soak" => {
            let number = |i: usize, default: u64, what: &str| -> anyhow::Result<u64> {
                flags
                    .positional
                    .get(i)
                    .map_or(Ok(default), |s| s.parse().with_context(|| what.to_string()))
            };
            let options = renkei_lab::soak::SoakOptions {
                duration: std::time::Duration::from_secs(number(0, 3600, "seconds")?),
                interval: std::time::Duration::from_secs(number(1, 10, "interval")?.max(1)),
                viewers: 8,
                out: flags
                    .out
                    .clone()
                    .unwrap_or_else(|| renkei_lab::compliance::checkout().join("target/soak")),
            };
            anyhow::ensure!(renkei_lab::is_root(), "the lab needs root");
            let csv = renkei_lab::soak::run(&options)?;
            println!("{}", csv.display());
            Ok(())
        }
        "bench-tunnel" => {
            let seconds: u32 = match flags.positional.first() {
                Some(s) => s.parse().context("seconds")?,
                None => 10,
            };
            let rounds: usize = match flags.positional.get(1) {
                Some(s) => s.parse().context("rounds")?,
                None => 3,
            };
            anyhow::ensure!(renkei_lab::is_root(), "the lab needs root");
            let rounds = renkei_lab::bench::tunnel_benchmark(seconds, rounds)?;
            print!("{}", renkei_lab::bench::report(&rounds));
            Ok(())
        }
        "bench-hub" if flags.positional.first().map(String::as_str) == Some("throughput") => {
            let seconds: u32 = match flags.positional.get(1) {
                Some(s) => s.parse().context("seconds")?,
                None => 10,
            };
            let rounds: usize = match flags.positional.get(2) {
                Some(s) => s.parse().context("rounds")?,
                None => 3,
            };
            anyhow::ensure!(renkei_lab::is_root(), "the lab needs root");
            let results = renkei_lab::hub_throughput::throughput_benchmark(seconds, rounds)?;
            print!("{}", renkei_lab::hub_throughput::report(&results));
            Ok(())
        }
        "bench-hub" => {
            let sizes: Vec<usize> = match flags.positional.first() {
                Some(list) => list
                    .split(',')
                    .map(|n| n.parse().context("a number of facilities"))
                    .collect::<anyhow::Result<_>>()?,
                None => vec![100, 500, 1000],
            };
            let rounds: usize = match flags.positional.get(1) {
                Some(s) => s.parse().context("rounds")?,
                None => 3,
            };
            anyhow::ensure!(renkei_lab::is_root(), "the lab needs root");
            let results = renkei_lab::bench_hub::hub_benchmark(&sizes, rounds)?;
            print!("{}", renkei_lab::bench_hub::report(&results));
            Ok(())
        }
        "bench-proxy" => {
            let seconds: u32 = match flags.positional.first() {
                Some(s) => s.parse().context("seconds")?,
                None => 10,
            };
            let idle: usize = match flags.positional.get(1) {
                Some(s) => s.parse().context("idle connections")?,
                None => 10_000,
            };
            let rounds: usize = match flags.positional.get(2) {
                Some(s) => s.parse().context("rounds")?,
                None => 1,
            };
            anyhow::ensure!(renkei_lab::is_root(), "the lab needs root");
            // IPsec is measured by `bench-tunnel`'s charon pair; the proxy benchmark has not
            // been run on it, so it is there only when asked for.
            let carriers = match flags.carrier {
                Some(carrier) => vec![carrier],
                None => vec![LabCarrier::WireGuard, LabCarrier::Closed],
            };
            for (i, carrier) in carriers.into_iter().enumerate() {
                if i > 0 {
                    println!();
                }
                let report =
                    renkei_lab::bench_proxy::proxy_benchmark(carrier, seconds, idle, rounds)?;
                print!("{}", renkei_lab::bench_proxy::report(&report));
            }
            Ok(())
        }
        other => anyhow::bail!("unknown command {other:?}\n{USAGE}"),
    }
}
