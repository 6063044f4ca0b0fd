//! The data centre's health endpoint on a closed network: a TCP listener that accepts and closes,
//! which the closed carrier's always-on probe connects to (as a real data centre's router or load
//! balancer health port would answer). It notes who connected, so a test can tell where probes
//! came from.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use anyhow::Context;

use crate::netns::Namespace;

/// A running health endpoint; dropping it stops the listener and joins its thread.
pub struct ProbeEndpoint {
    listener: TcpListener,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
    thread: Option<JoinHandle<()>>,
}

impl ProbeEndpoint {
    /// Listens on `addr` inside `ns`.
    pub fn start(ns: &Namespace, addr: &str) -> anyhow::Result<ProbeEndpoint> {
        let listener = ns.tcp_listener(addr)?;
        let accepting = listener.try_clone().context("the probe listener")?;
        let peers = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&peers);
        let thread = std::thread::Builder::new()
            .name(format!("probe endpoint {addr}"))
            .spawn(move || {
                // Ends when the listener is shut down (accept fails).
                while let Ok((stream, peer)) = accepting.accept() {
                    seen.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(peer);
                    drop(stream);
                }
            })
            .context("starting the probe endpoint thread")?;
        Ok(ProbeEndpoint {
            listener,
            peers,
            thread: Some(thread),
        })
    }

    /// Every peer that connected so far, oldest first.
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.peers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for ProbeEndpoint {
    fn drop(&mut self) {
        // shutdown(2) on a listening socket wakes a blocked accept(2) on Linux.
        let _ =
            nix::sys::socket::shutdown(self.listener.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
