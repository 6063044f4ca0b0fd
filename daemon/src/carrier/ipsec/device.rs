//! The device the box's own IPsec address lives on: a dummy device renkei creates and removes.
//! The address must exist before any SA (charon routes the data centre with it as source, and
//! inbound services listen on it) and must survive charon's restarts, so it lives on a device
//! of renkei's own rather than on charon's `ipsec0` or on the WAN interface.

use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::{LinkDummy, LinkUnspec};

/// Why the device could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
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

/// Creates the dummy device `name` with `address` on it, up. A device of that name left by an
/// earlier run is replaced.
pub async fn create(name: &str, address: IpNet) -> Result<(), DeviceError> {
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
        if let Some(stale) = index_of(&handle, &name).await {
            handle
                .link()
                .del(stale)
                .execute()
                .await
                .map_err(fail("removing a stale device"))?;
        }
        handle
            .link()
            .add(LinkDummy::new(&name).build())
            .execute()
            .await
            .map_err(fail("creating the device"))?;
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
        Ok(())
    })
    .await
}

/// Removes the device (and its address); a device already gone is fine.
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
