//! `lab`: the regional network in namespaces, for people.
//!
//! `lab up` builds the lab (data centre, hospital and clinic boxes with their LANs), starts the
//! three renkei daemons, prints what is where and what to try, and keeps everything up until
//! Ctrl-C, when it removes every namespace, link, file and process it created.
//! `lab bench-tunnel [SECONDS]` and `lab bench-proxy [SECONDS] [IDLE]` run the benchmarks.

use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::{SigSet, Signal};
use renkei_lab::{wait_until, Lab, Node};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("up") => up(),
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
        Some("bench-proxy") => {
            let seconds: u32 = match args.get(1) {
                Some(s) => s.parse().context("seconds")?,
                None => 10,
            };
            let idle: usize = match args.get(2) {
                Some(s) => s.parse().context("idle connections")?,
                None => 10_000,
            };
            anyhow::ensure!(renkei_lab::is_root(), "the lab needs root");
            let report = renkei_lab::bench_proxy::proxy_benchmark(seconds, idle)?;
            print!("{}", renkei_lab::bench_proxy::report(&report));
            Ok(())
        }
        _ => {
            eprintln!(
                "usage: lab up | lab bench-tunnel [SECONDS] | lab bench-proxy [SECONDS] [IDLE]"
            );
            std::process::exit(2);
        }
    }
}

fn up() -> anyhow::Result<()> {
    anyhow::ensure!(
        renkei_lab::is_root(),
        "the lab needs root (network namespaces)"
    );
    // Block the stop signals before any thread starts, then wait for one of them at the end.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals.thread_block()?;

    let lab = Lab::new()?;
    let hub = lab.start(Node::Hub, &lab.tunnel_config(Node::Hub))?;
    let hospital = lab.start(Node::Hospital, &lab.tunnel_config(Node::Hospital))?;
    let clinic = lab.start(Node::Clinic, &lab.tunnel_config(Node::Clinic))?;
    wait_until(Duration::from_secs(10), "the hospital's tunnel", || {
        (hospital.peer("dc").ok()?["state"] == "up").then_some(())
    })?;

    println!(
        "renkei lab {} is up (addresses from 198.18.0.0/15 only)\n",
        lab.id
    );
    for (node, daemon) in [
        (Node::Hub, &hub),
        (Node::Hospital, &hospital),
        (Node::Clinic, &clinic),
    ] {
        let status = daemon.status()?;
        println!(
            "{:<9} namespace {:<18} WAN {:<12} tunnel {:<12} {} {} ({})",
            node.short(),
            lab.ns(node).name(),
            node.wan_address(),
            node.tunnel_address(),
            status["tunnel"]["interface"].as_str().unwrap_or("?"),
            status["tunnel"]["policy"].as_str().unwrap_or("?"),
            status["tunnel"]["state"].as_str().unwrap_or("?"),
        );
    }
    let clinic_config = clinic.config.display();
    println!("\nTry:");
    println!(
        "  ip netns exec {} renkei status --config {clinic_config}   # the clinic: idle, nothing sent",
        lab.ns(Node::Clinic).name()
    );
    println!(
        "  ip netns exec {} ping -c 3 {}                              # first packet opens the clinic's tunnel",
        lab.ns(Node::Clinic).name(),
        Node::Hub.tunnel_address()
    );
    println!(
        "  ip netns exec {} wg show                                   # the hub's peers, as operators see them",
        lab.ns(Node::Hub).name()
    );
    println!(
        "  ip netns exec {} renkei status --config {}",
        lab.ns(Node::Hospital).name(),
        hospital.config.display()
    );
    println!(
        "\nThe status pages, the TLS services and config push join the lab as their issues land."
    );
    println!("Press Ctrl-C to stop and remove everything.");

    let signal = signals.wait()?;
    println!("\n{signal:?}: removing the lab");
    drop(clinic);
    drop(hospital);
    drop(hub);
    drop(lab);
    Ok(())
}
