//! `lab`: the regional network in namespaces, for people. Today it runs the tunnel benchmark;
//! `lab up` / `lab down` (the README's demo) come with the demo issue.

use anyhow::Context;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("bench-tunnel") => {
            let seconds: u32 = match args.get(1) {
                Some(s) => s.parse().context("seconds")?,
                None => 10,
            };
            anyhow::ensure!(renkei_lab::is_root(), "the lab needs root");
            let (veth, results) = renkei_lab::bench::tunnel_benchmark(seconds)?;
            print!("{}", renkei_lab::bench::report(veth, &results));
            Ok(())
        }
        _ => {
            eprintln!("usage: lab bench-tunnel [SECONDS]");
            eprintln!("lab up / lab down (the demo network) are not built yet; see the README");
            std::process::exit(2);
        }
    }
}
