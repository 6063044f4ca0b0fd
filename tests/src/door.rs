//! Doors from the host into the lab: a listener on the host's loopback that carries each
//! connection to an address inside one of the lab's namespaces. The demo lab opens one per
//! status page, so a newcomer's browser on the machine running the lab opens the page that the
//! facility's administrator would open from the facility LAN.
//!
//! A door copies bytes and nothing else: TLS, login and everything the page does go end to end
//! between the browser and the box. It binds only to 127.0.0.1 and holds at most
//! [`MAX_CONNECTIONS`] connections at once.

use std::io;
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use anyhow::Context;

use crate::netns;

/// Connections one door carries at once (a browser opens a handful); more are closed at once.
pub const MAX_CONNECTIONS: usize = 32;
/// How long a door waits for the address inside the namespace to accept.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A door's listener, bound but not yet serving: bind every door first (their addresses go into
/// the lab's record), then [`Door::serve`] them once the process's signal mask is final, since
/// the threads it starts inherit it.
#[derive(Debug)]
pub struct Door {
    listener: TcpListener,
    namespace: String,
    target: SocketAddr,
}

impl Door {
    /// Binds a free port on the host's 127.0.0.1 for `target` inside `namespace`.
    pub fn bind(namespace: &str, target: SocketAddr) -> anyhow::Result<Door> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .with_context(|| format!("binding a door to {target} in {namespace}"))?;
        Ok(Door {
            listener,
            namespace: namespace.to_string(),
            target,
        })
    }

    /// Where the door listens on the host.
    pub fn address(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Serves the door on its own thread until the process exits.
    pub fn serve(self) {
        let open = Arc::new(AtomicUsize::new(0));
        thread::spawn(move || {
            for client in self.listener.incoming() {
                let Ok(client) = client else { continue };
                if open.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                    open.fetch_sub(1, Ordering::SeqCst);
                    continue;
                }
                let open = Arc::clone(&open);
                let namespace = self.namespace.clone();
                let target = self.target;
                thread::spawn(move || {
                    if let Err(e) = carry(client, &namespace, target) {
                        eprintln!("door to {target} in {namespace}: {e:#}");
                    }
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
    }
}

/// Connects to `target` from inside `namespace` and copies both ways until both sides closed.
fn carry(client: TcpStream, namespace: &str, target: SocketAddr) -> anyhow::Result<()> {
    let server = netns::run_inside(namespace, move || {
        TcpStream::connect_timeout(&target, CONNECT_TIMEOUT)
    })?
    .with_context(|| format!("connecting to {target}"))?;
    let upstream = {
        let (client, server) = (client.try_clone()?, server.try_clone()?);
        thread::spawn(move || copy_then_close(client, server))
    };
    let downstream = copy_then_close(server, client);
    let upstream = upstream
        .join()
        .map_err(|_| anyhow::anyhow!("door thread panicked"))?;
    upstream.and(downstream).map_err(Into::into)
}

/// Copies `from` into `to`, then passes the end of the stream on (a write shutdown), as TCP
/// would end to end.
fn copy_then_close(mut from: TcpStream, mut to: TcpStream) -> io::Result<()> {
    let copied = io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
    copied.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A door from the test's namespace to an echo server on the loopback of a namespace of
    /// its own: bytes both ways, and the client's end of stream reaches the server.
    #[test]
    fn a_door_carries_bytes_both_ways_and_passes_the_end_of_stream_on() {
        crate::require_root!();
        let name = format!("door-test-{}", std::process::id());
        let ns = netns::Namespace::create(&name).expect("namespace");
        let server = ns.tcp_listener("127.0.0.1:0").expect("listener");
        let target = server.local_addr().expect("addr");
        let door = Door::bind(&name, target).expect("door");
        let entrance = door.address().expect("door address");
        door.serve();
        let echo = thread::spawn(move || {
            let (mut conn, _) = server.accept().expect("accept");
            let mut got = Vec::new();
            conn.read_to_end(&mut got).expect("read");
            conn.write_all(&got).expect("write back");
        });
        let mut client = TcpStream::connect(entrance).expect("connect to door");
        client.write_all(b"through the door").expect("write");
        client.shutdown(Shutdown::Write).expect("half-close");
        let mut back = Vec::new();
        client.read_to_end(&mut back).expect("read");
        assert_eq!(back, b"through the door");
        echo.join().expect("echo");
    }
}
