//! Independent WireGuard implementations as lab peers: `wireguard-go` (Debian) and
//! `boringtun-cli` (crates.io, boringtun's own `device` code). They prove renkei speaks the
//! protocol, not just to itself, and serve as baselines in benchmarks.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::Context;

use crate::lab::{Lab, Node, HUB_PORT, WIREGUARD_SOCKET_DIR};
use crate::netns::{run, Namespace};
use crate::wait::wait_until;

/// Which implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Implementation {
    /// wireguard-go from Debian.
    WireguardGo,
    /// boringtun-cli from crates.io.
    BoringtunCli,
}

impl Implementation {
    /// The program to run, found on PATH or (boringtun-cli) under `target/tools/bin`.
    pub fn program(self) -> anyhow::Result<PathBuf> {
        let name = match self {
            Implementation::WireguardGo => "wireguard-go",
            Implementation::BoringtunCli => "boringtun-cli",
        };
        let tools = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/tools/bin")
            .join(name);
        if tools.exists() {
            return Ok(tools);
        }
        std::env::var_os("PATH")
            .and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join(name))
                    .find(|p| p.exists())
            })
            .with_context(|| format!("{name} not found (scripts/install-deps installs it)"))
    }
}

/// What the foreign peer's single peer looks like.
pub struct ForeignPeerSpec<'a> {
    /// The remote's public key (base64).
    pub public_key: &'a str,
    /// The remote's endpoint, if known.
    pub endpoint: Option<&'a str>,
    /// Allowed IPs, comma-separated as `wg set` wants them.
    pub allowed_ips: &'a str,
    /// Keepalive seconds, if any.
    pub keepalive_secs: Option<u16>,
}

/// A running foreign WireGuard interface; killed and its socket removed on drop.
pub struct ForeignWireguard {
    /// Interface name.
    pub interface: String,
    /// The namespace it runs in.
    pub namespace: String,
    child: Option<Child>,
}

impl ForeignWireguard {
    /// Starts `implementation` as `interface` in `ns`, configures it with `wg set` and gives it
    /// `address` (with prefix).
    pub fn start(
        implementation: Implementation,
        ns: &Namespace,
        interface: &str,
        private_key_file: &Path,
        listen_port: Option<u16>,
        address: &str,
        peer: &ForeignPeerSpec<'_>,
    ) -> anyhow::Result<ForeignWireguard> {
        let program = implementation.program()?;
        let mut command = ns.command(&program.to_string_lossy());
        command.args(["-f", interface]);
        if implementation == Implementation::BoringtunCli {
            command
                .args(["--disable-drop-privileges", "--threads", "2"])
                .env("WG_SUDO", "1")
                .env("WG_LOG_FILE", "/dev/null");
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {program:?}"))?;
        let mut foreign = ForeignWireguard {
            interface: interface.to_string(),
            namespace: ns.name().to_string(),
            child: Some(child),
        };
        let socket = Path::new(WIREGUARD_SOCKET_DIR).join(format!("{interface}.sock"));
        wait_until(
            Duration::from_secs(10),
            "the foreign WireGuard socket",
            || socket.exists().then_some(()),
        )?;

        let key = private_key_file.to_string_lossy().into_owned();
        let mut args: Vec<String> = vec!["set".into(), interface.into(), "private-key".into(), key];
        if let Some(port) = listen_port {
            args.extend(["listen-port".into(), port.to_string()]);
        }
        args.extend(["peer".into(), peer.public_key.into()]);
        if let Some(endpoint) = peer.endpoint {
            args.extend(["endpoint".into(), endpoint.into()]);
        }
        args.extend(["allowed-ips".into(), peer.allowed_ips.into()]);
        if let Some(keepalive) = peer.keepalive_secs {
            args.extend(["persistent-keepalive".into(), keepalive.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ns.exec("wg", &args)?;
        ns.ip(&["addr", "add", address, "dev", interface])?;
        ns.ip(&["link", "set", interface, "up"])?;
        // Routes for allowed IPs outside the address's prefix.
        for net in peer.allowed_ips.split(',') {
            let net = net.trim();
            let _ = run(std::process::Command::new("ip").args([
                "-n",
                ns.name(),
                "route",
                "replace",
                net,
                "dev",
                interface,
            ]));
        }
        if foreign.has_exited() {
            anyhow::bail!("{program:?} exited during setup");
        }
        Ok(foreign)
    }

    /// `implementation` as the lab's hub (the hub's key, port and tunnel address), with the
    /// hospital as its one passive peer.
    pub fn start_as_hub(
        implementation: Implementation,
        lab: &Lab,
        interface: &str,
    ) -> anyhow::Result<ForeignWireguard> {
        ForeignWireguard::start(
            implementation,
            lab.ns(Node::Hub),
            interface,
            &lab.node_dir(Node::Hub).join("wg.key"),
            Some(HUB_PORT),
            &format!("{}/24", Node::Hub.tunnel_address()),
            &ForeignPeerSpec {
                public_key: lab.public_key(Node::Hospital),
                endpoint: None,
                allowed_ips: &format!("{}/32", Node::Hospital.tunnel_address()),
                keepalive_secs: None,
            },
        )
    }

    /// `implementation` as the lab's hospital (its key and tunnel address), initiating to the
    /// hub's WAN endpoint.
    pub fn start_as_hospital(
        implementation: Implementation,
        lab: &Lab,
        interface: &str,
    ) -> anyhow::Result<ForeignWireguard> {
        ForeignWireguard::start(
            implementation,
            lab.ns(Node::Hospital),
            interface,
            &lab.node_dir(Node::Hospital).join("wg.key"),
            None,
            &format!("{}/24", Node::Hospital.tunnel_address()),
            &ForeignPeerSpec {
                public_key: lab.public_key(Node::Hub),
                endpoint: Some(&format!("{}:{HUB_PORT}", Node::Hub.wan_address())),
                allowed_ips: &format!("{}/32", Node::Hub.tunnel_address()),
                keepalive_secs: None,
            },
        )
    }

    /// True once the process has exited.
    pub fn has_exited(&mut self) -> bool {
        match self.child.as_mut() {
            None => true,
            Some(child) => !matches!(child.try_wait(), Ok(None)),
        }
    }

    /// The process id (for CPU and memory accounting in benchmarks).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for ForeignWireguard {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(
            Path::new(WIREGUARD_SOCKET_DIR).join(format!("{}.sock", self.interface)),
        );
        let _ = std::process::Command::new("ip")
            .args(["-n", &self.namespace, "link", "del", &self.interface])
            .output();
    }
}
