//! The byte counters of a network interface, read over rtnetlink (`RTM_GETLINK`,
//! `IFLA_STATS64`).
//!
//! Netlink rather than `/sys/class/net/<if>/statistics`: a netlink socket answers for the
//! network namespace of the process that opened it, while sysfs shows the namespace of whoever
//! mounted it, so a daemon entered into a namespace without a fresh sysfs mount (`nsenter`)
//! would silently read another interface of the same name. The counters are the kernel's
//! 64-bit ones.

use futures::TryStreamExt;
use rtnetlink::packet_route::link::LinkAttribute;

/// Bytes an interface sent and received since it was created: every byte, renkei's or not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InterfaceCounters {
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Bytes received.
    pub rx_bytes: u64,
}

/// Why the counters could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CountersError {
    /// The netlink socket could not be opened.
    #[error("cannot open a netlink socket: {0}")]
    Connect(std::io::Error),
    /// The kernel refused the request (no such interface, among others).
    #[error("reading the counters of {interface}: {source}")]
    Request {
        /// Interface name.
        interface: String,
        /// What the kernel said.
        source: rtnetlink::Error,
    },
    /// The answer held no 64-bit statistics.
    #[error("the kernel sent no statistics for {0}")]
    NoStatistics(String),
}

/// An open netlink connection to read counters with, closed when dropped.
pub struct CounterReader {
    handle: rtnetlink::Handle,
    connection: tokio::task::JoinHandle<()>,
}

impl CounterReader {
    /// Opens the netlink socket (in the caller's network namespace).
    pub fn open() -> Result<Self, CountersError> {
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(CountersError::Connect)?;
        Ok(CounterReader {
            handle,
            connection: tokio::spawn(connection),
        })
    }

    /// The counters of `interface` now.
    pub async fn read(&self, interface: &str) -> Result<InterfaceCounters, CountersError> {
        let request = |source| CountersError::Request {
            interface: interface.to_string(),
            source,
        };
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(interface.to_string())
            .execute();
        while let Some(link) = links.try_next().await.map_err(request)? {
            for attribute in link.attributes {
                if let LinkAttribute::Stats64(stats) = attribute {
                    return Ok(InterfaceCounters {
                        tx_bytes: stats.tx_bytes,
                        rx_bytes: stats.rx_bytes,
                    });
                }
            }
        }
        Err(CountersError::NoStatistics(interface.to_string()))
    }
}

impl Drop for CounterReader {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Bytes sent over loopback show in its counters (both ways: lo receives what it sends).
    #[tokio::test]
    async fn net9_loopback_counters_grow_by_what_crosses_it() {
        const PAYLOAD_BYTES: usize = 256 * 1024;
        let reader = CounterReader::open().expect("netlink");
        let before = reader.read("lo").await.expect("lo counters");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("addr");
        let receiver = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let mut got = Vec::new();
            stream.read_to_end(&mut got).await.expect("read");
            got.len()
        });
        let mut sender = tokio::net::TcpStream::connect(address)
            .await
            .expect("connect");
        sender
            .write_all(&vec![7u8; PAYLOAD_BYTES])
            .await
            .expect("write");
        drop(sender);
        assert_eq!(receiver.await.expect("receiver"), PAYLOAD_BYTES);
        let after = reader.read("lo").await.expect("lo counters");
        assert!(
            after.tx_bytes >= before.tx_bytes + PAYLOAD_BYTES as u64
                && after.rx_bytes >= before.rx_bytes + PAYLOAD_BYTES as u64,
            "{before:?} -> {after:?}"
        );
        assert!(reader.read("renkei-none").await.is_err());
    }
}
