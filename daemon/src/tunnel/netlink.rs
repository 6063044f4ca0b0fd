//! Interface configuration over rtnetlink: MTU, link state, the tunnel address and the routes to
//! each peer's allowed IPs. Nothing here is undone by hand: the routes and the address go away
//! with the TUN device when the daemon exits.

use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::route::RouteMessage;
use rtnetlink::{LinkUnspec, RouteMessageBuilder};

/// Why the interface could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The netlink socket could not be opened.
    #[error("cannot open a netlink socket: {0}")]
    Connect(std::io::Error),
    /// The interface vanished between creation and configuration.
    #[error("interface {0} not found")]
    NoSuchLink(String),
    /// A route could not be expressed as a netlink message.
    #[error("cannot build the route to {route}: {reason}")]
    BadRoute {
        /// The prefix.
        route: IpNet,
        /// What rtnetlink said.
        reason: String,
    },
    /// A netlink request failed.
    #[error("{what} on {interface}: {source}")]
    Request {
        /// What was being done.
        what: String,
        /// Interface name.
        interface: String,
        /// What the kernel said.
        source: rtnetlink::Error,
    },
}

/// What the interface must look like.
#[derive(Debug, Clone)]
pub struct LinkSettings<'a> {
    /// Interface name.
    pub name: &'a str,
    /// MTU in bytes.
    pub mtu: u16,
    /// The box's tunnel address with the overlay prefix.
    pub address: IpNet,
    /// Prefixes routed into the tunnel (every peer's allowed IPs).
    pub routes: Vec<IpNet>,
}

/// Sets MTU, address, link up and routes. Routes already covered exactly by the address's
/// connected route are skipped by the kernel's EEXIST, which is not an error here.
pub async fn configure(settings: &LinkSettings<'_>) -> Result<(), NetlinkError> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Connect)?;
    let connection_task = tokio::spawn(connection);
    let result = configure_with(&handle, settings).await;
    connection_task.abort();
    result
}

/// A route to `route` through the interface with `index`.
fn route_message(route: IpNet, index: u32) -> Result<RouteMessage, NetlinkError> {
    Ok(RouteMessageBuilder::<std::net::IpAddr>::new()
        .destination_prefix(route.addr(), route.prefix_len())
        .map_err(|e| NetlinkError::BadRoute {
            route,
            reason: e.to_string(),
        })?
        .output_interface(index)
        .build())
}

/// The index of the interface called `name`: every change is made by index.
async fn link_index(handle: &rtnetlink::Handle, name: &str) -> Result<u32, NetlinkError> {
    let link = handle
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await
        .map_err(|source| NetlinkError::Request {
            what: "looking up the interface".to_string(),
            interface: name.to_string(),
            source,
        })?
        .ok_or_else(|| NetlinkError::NoSuchLink(name.to_string()))?;
    Ok(link.header.index)
}

async fn configure_with(
    handle: &rtnetlink::Handle,
    settings: &LinkSettings<'_>,
) -> Result<(), NetlinkError> {
    let request_error = |what: &str| {
        let what = what.to_string();
        let interface = settings.name.to_string();
        move |source| NetlinkError::Request {
            what,
            interface,
            source,
        }
    };
    let index = link_index(handle, settings.name).await?;

    handle
        .link()
        .set(
            LinkUnspec::new_with_index(index)
                .mtu(u32::from(settings.mtu))
                .build(),
        )
        .execute()
        .await
        .map_err(request_error("setting the MTU"))?;
    handle
        .address()
        .add(
            index,
            settings.address.addr(),
            settings.address.prefix_len(),
        )
        .replace()
        .execute()
        .await
        .map_err(request_error("adding the tunnel address"))?;
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(request_error("setting the link up"))?;

    for route in &settings.routes {
        if *route == settings.address.trunc() {
            continue;
        }
        let message = route_message(*route, index)?;
        handle
            .route()
            .add(message)
            .replace()
            .execute()
            .await
            .map_err(request_error(&format!("adding the route to {route}")))?;
    }
    Ok(())
}

/// Before an existing interface is configured for a changed config: removes every address on
/// it other than `keep` and the routes in `stale` (allowed IPs no peer has any more), so the
/// device can stay (same index: sockets bound to it and connections through it live on).
pub async fn prune(name: &str, keep: IpNet, stale: &[IpNet]) -> Result<(), NetlinkError> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Connect)?;
    let connection_task = tokio::spawn(connection);
    let result = prune_with(&handle, name, keep, stale).await;
    connection_task.abort();
    result
}

async fn prune_with(
    handle: &rtnetlink::Handle,
    name: &str,
    keep: IpNet,
    stale: &[IpNet],
) -> Result<(), NetlinkError> {
    use rtnetlink::packet_route::address::AddressAttribute;
    let request_error = |what: String| {
        let interface = name.to_string();
        move |source| NetlinkError::Request {
            what,
            interface,
            source,
        }
    };
    let index = link_index(handle, name).await?;
    let mut addresses = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute();
    let mut remove = Vec::new();
    while let Some(message) = addresses
        .try_next()
        .await
        .map_err(request_error("listing the addresses".into()))?
    {
        let address = message.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(ip) | AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        });
        let same = address == Some(keep.addr()) && message.header.prefix_len == keep.prefix_len();
        // IPv6 link-local addresses come with the device; leave them.
        let link_local =
            matches!(address, Some(std::net::IpAddr::V6(v6)) if v6.is_unicast_link_local());
        if !same && !link_local && message.header.index == index {
            remove.push(message);
        }
    }
    for message in remove {
        handle
            .address()
            .del(message)
            .execute()
            .await
            .map_err(request_error("removing the old tunnel address".into()))?;
    }
    for route in stale {
        let message = route_message(*route, index)?;
        // Already gone (with the old address's connected route, say) is fine.
        let _ = handle.route().del(message).execute().await;
    }
    Ok(())
}
