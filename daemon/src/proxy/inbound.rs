//! Inbound: a TLS server on the box's tunnel address (client certificate required, CRYPTREC
//! profile) whose verified peers, if on the service's allowlist, are connected to a LAN server.
//!
//! Not one byte reaches the LAN before the handshake completed and the peer's identity was
//! found on the allowlist (NET-4).

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::problem::{Problem, ProxyProblem};
use super::readahead::ReadAhead;
use super::socket::{self, Leg};
use super::TARGET_CONNECT_TIMEOUT_SECS;
use super::{must_reset, reset_on_drop, splice, Connection, ConnectionResult, ServiceContext};
use crate::tls::{refusal, PeerIdentities, TlsRefusal};

/// Serves one accepted tunnel connection; every path leaves its result in `connection`.
pub(super) async fn handle(peer: TcpStream, connection: &mut Connection, service: &ServiceContext) {
    // The material in use now; a reload later does not affect this connection.
    let acceptor = service.store.current().acceptor(service.config.min_tls);
    let handshake_timeout = service.handshake_timeout();
    let handshake = acceptor.accept(ReadAhead::new(peer));
    let mut tls = match tokio::time::timeout(handshake_timeout, handshake).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(err)) => {
            connection.record.result = ConnectionResult::refused(
                Problem::tls(refusal::from_io(&err)),
                format_args!("TLS handshake failed: {err}"),
            );
            return;
        }
        Err(_) => {
            connection.record.result = ConnectionResult::refused(
                Problem::tls(TlsRefusal::HandshakeTimeout),
                format_args!(
                    "TLS handshake not completed within {} s",
                    service.config.handshake_timeout_secs
                ),
            );
            return;
        }
    };
    connection.tls(tls.get_ref().1);

    let identities = match tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
        Some(cert) => PeerIdentities::from_certificate(cert),
        None => {
            // The server config requires a client certificate; this cannot happen unless that
            // changes, and then it must still refuse.
            connection.record.result = ConnectionResult::refused(
                Problem::tls(TlsRefusal::NoClientCertificate),
                "no client certificate",
            );
            return;
        }
    };
    let identities = match identities {
        Ok(identities) => identities,
        Err(err) => {
            connection.record.result =
                ConnectionResult::refused(ProxyProblem::UnreadableCertificate, err);
            return;
        }
    };
    match identities.allowed_by(&service.config.allowed_identities) {
        Some(allowed) => connection.record.peer_identity = Some(allowed.to_string()),
        None => {
            let shown = identities.display_name().unwrap_or("(no identity)");
            connection.record.peer_identity = Some(shown.to_string());
            connection.record.result = ConnectionResult::refused(
                ProxyProblem::IdentityNotAllowed,
                format_args!("identity {shown:?} is not in allowed_identities"),
            );
            // close_notify, so the peer sees a clean close rather than a truncation.
            let _ = tokio::time::timeout(handshake_timeout, tls.shutdown()).await;
            return;
        }
    }

    let connect_timeout = Duration::from_secs(TARGET_CONNECT_TIMEOUT_SECS);
    let target = &service.config.target;
    let lan = match tokio::time::timeout(connect_timeout, socket::connect(target, Leg::Lan)).await {
        Ok(Ok(lan)) => lan,
        Ok(Err(err)) => {
            connection.record.result = ConnectionResult::error(
                ProxyProblem::TargetUnreachable,
                format_args!("connect to {target}: {err}"),
            );
            let _ = tokio::time::timeout(handshake_timeout, tls.shutdown()).await;
            return;
        }
        Err(_) => {
            connection.record.result = ConnectionResult::error(
                ProxyProblem::TargetTimeout,
                format_args!("connect to {target} timed out after {TARGET_CONNECT_TIMEOUT_SECS} s"),
            );
            let _ = tokio::time::timeout(handshake_timeout, tls.shutdown()).await;
            return;
        }
    };
    super::tune(&lan, service.user_timeout());

    let mut lan = lan;
    let limits = service.splice_limits();
    let outcome = splice::splice_counted(
        &mut tls,
        &mut lan,
        limits,
        service.stopped(),
        service.counters.live_bytes(),
    )
    .await;
    if must_reset(&outcome.end) {
        reset_on_drop(tls.get_ref().0.get_ref());
        reset_on_drop(&lan);
    }
    connection.spliced(outcome, "peer", "target");
}
