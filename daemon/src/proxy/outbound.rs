//! Outbound: a plain TCP connection from a LAN client becomes a TLS client connection (the box's
//! certificate, the CRYPTREC profile) to a data-centre service inside the tunnel.
//!
//! The LAN client's bytes leave the box only inside that TLS session. While the connection is
//! open it holds the carrier's `LinkGuard`, so an on-demand tunnel never idles out under it;
//! the journal upload's service instead rides on a link that is up anyway (`journal_upload`).

use std::net::SocketAddr;
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::problem::{Problem, ProxyProblem};
use super::readahead::ReadAhead;
use super::TARGET_CONNECT_TIMEOUT_SECS;
use super::{must_reset, reset_on_drop, server_name, splice, Connection, ConnectionResult};
use super::{ProxyError, ServiceContext};
use crate::carrier::{DemandError, LinkState};
use crate::config::ServiceConfig;
use crate::tls::{refusal, TlsRefusal};

/// Where an outbound service connects, checked once at start.
pub(super) struct Target {
    address: SocketAddr,
    server_name: ServerName<'static>,
}

impl Target {
    pub(super) fn from_config(config: &ServiceConfig) -> Result<Target, ProxyError> {
        let address = config
            .target
            .parse()
            .map_err(|_| ProxyError::OutboundTarget {
                service: config.name.clone(),
                target: config.target.clone(),
            })?;
        Ok(Target {
            address,
            server_name: server_name(config)?,
        })
    }
}

/// Serves one accepted LAN connection; every path leaves its result in `connection`.
pub(super) async fn handle(
    client: TcpStream,
    connection: &mut Connection,
    service: &ServiceContext,
    target: &Target,
) {
    // Held until this function returns, i.e. for the connection's whole life.
    let (_demand, mut ride) = match &service.tunnel {
        None => (None, None),
        Some(tunnel) if service.rides => match tunnel.ride(target.address.ip()) {
            Some(state) => (None, Some(state)),
            None => {
                connection.record.result = ConnectionResult::refused(
                    ProxyProblem::LinkIdle,
                    "the link is idle and this service does not bring it up",
                );
                return;
            }
        },
        Some(tunnel) => match tunnel.demand(target.address.ip()).await {
            Ok(guard) => (Some(guard), None),
            Err(DemandError::Timeout(waited)) => {
                connection.record.result = ConnectionResult::refused(
                    ProxyProblem::TunnelNotUp,
                    format_args!("tunnel did not come up within {} s", waited.as_secs()),
                );
                return;
            }
            Err(err @ DemandError::NoRoute(_)) => {
                connection.record.result = ConnectionResult::refused(ProxyProblem::NoRoute, err);
                return;
            }
            Err(err @ DemandError::Restarting) => {
                connection.record.result =
                    ConnectionResult::refused(ProxyProblem::TunnelRestarting, err);
                return;
            }
        },
    };

    let connect_timeout = Duration::from_secs(TARGET_CONNECT_TIMEOUT_SECS);
    let tcp = match tokio::time::timeout(connect_timeout, TcpStream::connect(target.address)).await
    {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(err)) => {
            connection.record.result = ConnectionResult::error(
                ProxyProblem::TargetUnreachable,
                format_args!("connect to {}: {err}", target.address),
            );
            return;
        }
        Err(_) => {
            connection.record.result = ConnectionResult::error(
                ProxyProblem::TargetTimeout,
                format_args!(
                    "connect to {} timed out after {} s",
                    target.address, TARGET_CONNECT_TIMEOUT_SECS
                ),
            );
            return;
        }
    };
    super::tune(&tcp, service.user_timeout());

    // The material in use now; a reload later does not affect this connection.
    let connector = service.store.current().connector(service.config.min_tls);
    let handshake = connector.connect(target.server_name.clone(), ReadAhead::new(tcp));
    let tls = match tokio::time::timeout(service.handshake_timeout(), handshake).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(err)) => {
            connection.record.result = ConnectionResult::error(
                Problem::tls(refusal::from_io(&err)),
                format_args!("TLS handshake with {} failed: {err}", target.address),
            );
            return;
        }
        Err(_) => {
            connection.record.result = ConnectionResult::error(
                Problem::tls(TlsRefusal::HandshakeTimeout),
                format_args!(
                    "TLS handshake with {} timed out after {} s",
                    target.address, service.config.handshake_timeout_secs
                ),
            );
            return;
        }
    };
    connection.tls(tls.get_ref().1);
    // rustls verified the server's certificate for exactly this name.
    connection.record.peer_identity = service.config.server_name.clone();

    let (mut client, mut tls) = (client, tls);
    let limits = service.splice_limits();
    let stopped = service.stopped();
    let link_left = left_up(ride.as_mut());
    let outcome = splice::splice_counted(
        &mut client,
        &mut tls,
        limits,
        async {
            tokio::select! {
                () = stopped => {}
                () = link_left => {}
            }
        },
        service.counters.live_bytes(),
    )
    .await;
    if must_reset(&outcome.end) {
        reset_on_drop(&client);
        reset_on_drop(tls.get_ref().0.get_ref());
    }
    let cut = matches!(outcome.end, splice::SpliceEnd::Stopped);
    connection.spliced(outcome, "client", "target");
    // Cut because the ridden link went down (or was rebuilt, its state channel closed).
    let link_gone = |state: &watch::Receiver<LinkState>| {
        state.has_changed().is_err() || *state.borrow() != LinkState::Up
    };
    if cut && ride.as_ref().is_some_and(link_gone) {
        connection.record.result = ConnectionResult::error(
            ProxyProblem::LinkClosed,
            "the link went down under this connection, which does not hold it up",
        );
    }
}

/// Completes when a ridden link leaves `Up` (or its carrier is rebuilt); never without one.
async fn left_up(ride: Option<&mut watch::Receiver<LinkState>>) {
    match ride {
        Some(state) => {
            let _ = state.wait_for(|s| *s != LinkState::Up).await;
        }
        None => std::future::pending().await,
    }
}
