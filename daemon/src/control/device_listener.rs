//! A TCP listener bound to one device by name (`SO_BINDTODEVICE`) that follows the device:
//! the kernel binds by interface index, so a socket bound to a device that is later removed
//! and created again (charon's `ipsec0` on every charon restart, with a new index) would never
//! see a packet again, and a device not there yet cannot be bound at all. This listener waits
//! for the device, and binds again whenever its index changes.
//!
//! Binding to another, stable device holding the address does not work: the kernel matches a
//! bound socket against the device a packet *arrived* on, so a listener bound to the device
//! that holds the address refuses connections arriving on `ipsec0` (measured: connection
//! refused). Binding to no device would accept the address from the LAN too.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// How often the listener checks that its device is still the one it bound to, and how often
/// it looks for a device that is not there.
pub const DEVICE_CHECK_INTERVAL_MILLIS: u64 = 500;
/// How long a first bind retries while the address is not there yet.
const BIND_RETRY: Duration = Duration::from_secs(10);
/// Pause between bind attempts.
const BIND_RETRY_INTERVAL: Duration = Duration::from_millis(100);

/// The interface index of `device` in this network namespace, if it exists.
pub fn device_index(device: &str) -> Option<u32> {
    nix::net::if_::if_nametoindex(device).ok()
}

/// A listener on `address` bound to `device`, bound again when the device comes back.
pub struct DeviceListener {
    address: SocketAddr,
    device: String,
    bound: Option<(TcpListener, u32)>,
}

impl DeviceListener {
    /// Binds now if the device is there (retrying while the address appears); a device that is
    /// not there yet is waited for by [`DeviceListener::accept`].
    pub async fn bind(address: SocketAddr, device: &str) -> io::Result<DeviceListener> {
        let mut listener = DeviceListener {
            address,
            device: device.to_string(),
            bound: None,
        };
        match bind_to_device(address, device).await {
            Ok(bound) => listener.bound = Some(bound),
            Err(err) if err.raw_os_error() == Some(libc::ENODEV) => {
                tracing::info!(device, "device not there yet; listening once it is");
            }
            Err(err) => return Err(err),
        }
        Ok(listener)
    }

    /// Whether a socket is bound now (the device exists and has not changed).
    pub fn is_bound(&self) -> bool {
        self.bound.is_some()
    }

    /// The next connection; while the device is missing, waits for it and binds.
    pub async fn accept(&mut self) -> io::Result<(TcpStream, SocketAddr)> {
        let interval = Duration::from_millis(DEVICE_CHECK_INTERVAL_MILLIS);
        loop {
            let Some((listener, index)) = &self.bound else {
                tokio::time::sleep(interval).await;
                if device_index(&self.device).is_some() {
                    match bind_to_device(self.address, &self.device).await {
                        Ok(bound) => {
                            tracing::info!(device = %self.device, index = bound.1, "listening on the device again");
                            self.bound = Some(bound);
                        }
                        Err(err) => {
                            tracing::debug!(error = %err, device = %self.device, "cannot bind yet")
                        }
                    }
                }
                continue;
            };
            let index = *index;
            tokio::select! {
                accepted = listener.accept() => return accepted,
                _ = tokio::time::sleep(interval) => {
                    if !self.device.is_empty() && device_index(&self.device) != Some(index) {
                        tracing::info!(device = %self.device, "the device went or was replaced; binding again");
                        self.bound = None;
                    }
                }
            }
        }
    }
}

/// Binds `address` on `device` only: packets for the address that arrive on another interface
/// find no listener. Retries while the address is not there yet. Returns the device's index.
async fn bind_to_device(address: SocketAddr, device: &str) -> io::Result<(TcpListener, u32)> {
    let deadline = tokio::time::Instant::now() + BIND_RETRY;
    loop {
        let socket = match address {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        let index = if device.is_empty() {
            0
        } else {
            let index =
                device_index(device).ok_or_else(|| io::Error::from_raw_os_error(libc::ENODEV))?;
            socket.bind_device(Some(device.as_bytes()))?;
            index
        };
        match socket.bind(address).and_then(|()| socket.listen(64)) {
            Ok(listener) => return Ok((listener, index)),
            Err(err)
                if err.raw_os_error() == Some(libc::EADDRNOTAVAIL)
                    && tokio::time::Instant::now() + BIND_RETRY_INTERVAL < deadline =>
            {
                tokio::time::sleep(BIND_RETRY_INTERVAL).await;
            }
            Err(err) => return Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn net9_auth2_a_listener_on_a_missing_device_waits_instead_of_failing() {
        let listener = DeviceListener::bind("127.0.0.1:0".parse().expect("address"), "rk-absent0")
            .await
            .expect("a missing device is waited for, not an error");
        assert!(!listener.is_bound());
    }
}
