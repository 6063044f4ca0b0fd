//! The device the box's own IPsec address lives on: a TUN device renkei opens and holds.
//! The address must exist before any SA (charon routes the data centre with it as source, and
//! inbound services listen on it) and must survive charon's restarts, so it lives on a device
//! of renkei's own rather than on charon's `ipsec0` or on the WAN interface.
//!
//! A TUN device rather than a dummy one: kernels built without `CONFIG_DUMMY` (the lab's VM
//! kernel is one: "Unknown device type") refuse dummies, while TUN is there on every box
//! because the WireGuard carrier needs it. It is not persistent: the kernel removes it with its
//! address and routes when renkei exits or is killed, so nothing stale outlives the daemon.
//!
//! The data centre's prefixes are routed into the device, which nobody reads: a guard. charon
//! routes them into the SA (its own table, looked up before the main one) only while a CHILD SA
//! is installed; without the guard, whatever the box sent to the data centre while the SA was
//! down (a retransmission, a DNS or NTP query, an answer of an inbound service) followed the
//! main table's default route out of the WAN in clear, and an answer from the WAN was taken.
//! With it such packets go nowhere until the SA is back.

use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::{LinkUnspec, RouteMessageBuilder};

use crate::tunnel::tun::{Tun, TunError};

/// Why the device could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The TUN device could not be created.
    #[error("the IPsec address device: {0}")]
    Tun(#[from] TunError),
    /// No netlink socket.
    #[error("cannot open a netlink socket: {0}")]
    Connect(std::io::Error),
    /// The kernel refused a request.
    #[error("{what} on {device}: {source}")]
    Request {
        /// What was asked.
        what: &'static str,
        /// The device.
        device: String,
        /// The kernel's answer.
        source: rtnetlink::Error,
    },
}

/// The device holding the box's address; dropping it removes both.
pub struct AddressDevice {
    _tun: Tun,
}

async fn with_handle<T, F, Fut>(f: F) -> Result<T, DeviceError>
where
    F: FnOnce(rtnetlink::Handle) -> Fut,
    Fut: std::future::Future<Output = Result<T, DeviceError>>,
{
    let (connection, handle, _) = rtnetlink::new_connection().map_err(DeviceError::Connect)?;
    let task = tokio::spawn(connection);
    let result = f(handle).await;
    task.abort();
    result
}

async fn index_of(handle: &rtnetlink::Handle, name: &str) -> Option<u32> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(link)) => Some(link.header.index),
        _ => None,
    }
}

/// Creates the device `name` with `address` on it, up, and the `guarded` prefixes routed into
/// it. A device of that name left by an earlier version (a dummy) is replaced.
pub async fn create(
    name: &str,
    address: IpNet,
    guarded: &[IpNet],
) -> Result<AddressDevice, DeviceError> {
    remove(name).await?;
    // It only holds an address: nothing is read or written, offloads would not help.
    let tun = Tun::create(name, Some("an address-only device"))?;
    let name = name.to_string();
    with_handle(|handle| async move {
        let fail = |what: &'static str| {
            let device = name.clone();
            move |source| DeviceError::Request {
                what,
                device,
                source,
            }
        };
        let index = index_of(&handle, &name)
            .await
            .ok_or_else(|| DeviceError::Request {
                what: "finding the new device",
                device: name.clone(),
                source: rtnetlink::Error::RequestFailed,
            })?;
        handle
            .address()
            .add(index, address.addr(), address.prefix_len())
            .replace()
            .execute()
            .await
            .map_err(fail("adding the box's address"))?;
        handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(fail("setting the device up"))?;
        for prefix in guarded {
            let route = RouteMessageBuilder::<std::net::IpAddr>::new()
                .destination_prefix(prefix.addr(), prefix.prefix_len())
                .map_err(|_| DeviceError::Request {
                    what: "routing a data-centre prefix into it",
                    device: name.clone(),
                    source: rtnetlink::Error::RequestFailed,
                })?
                .output_interface(index)
                .build();
            // Replaces a route of the same prefix and metric: nothing else may carry the data
            // centre's prefixes outside the SA.
            handle
                .route()
                .add(route)
                .replace()
                .execute()
                .await
                .map_err(fail("routing a data-centre prefix into it"))?;
        }
        Ok(())
    })
    .await?;
    Ok(AddressDevice { _tun: tun })
}

/// Removes a device of that name (and its address); a device already gone is fine.
pub async fn remove(name: &str) -> Result<(), DeviceError> {
    let name = name.to_string();
    with_handle(|handle| async move {
        if let Some(index) = index_of(&handle, &name).await {
            handle
                .link()
                .del(index)
                .execute()
                .await
                .map_err(|source| DeviceError::Request {
                    what: "removing the device",
                    device: name.clone(),
                    source,
                })?;
        }
        Ok(())
    })
    .await
}
