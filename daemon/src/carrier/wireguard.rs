//! The WireGuard carrier: today's `tunnel::Tunnel` behind the carrier seam. Everything
//! WireGuard-specific the rest of the daemon sees goes through here: the `[tunnel]` config, the
//! handshake as proof that the operator was reached, and the backend part of the snapshot.

use std::net::IpAddr;

use crate::config::Config;
use crate::state::moment::Moment;
use crate::tunnel::{self, Tunnel, TunnelHandle, TunnelSnapshot};

use super::snapshot::{
    CarrierBackend, CarrierKind, CarrierSnapshot, LinkBackend, LinkSnapshot, WireGuardCarrier,
    WireGuardPeer,
};
use super::{DemandError, Reconfigured};

/// A running WireGuard tunnel.
pub struct WireGuard {
    tunnel: Tunnel,
}

impl WireGuard {
    /// Starts the tunnel `[tunnel]` describes.
    pub async fn start(config: &Config) -> Result<Self, tunnel::TunnelError> {
        Ok(WireGuard {
            tunnel: Tunnel::start(config).await?,
        })
    }

    /// See [`Tunnel::reconfigure`].
    pub async fn reconfigure(
        &mut self,
        config: &Config,
    ) -> Result<Reconfigured, tunnel::TunnelError> {
        Ok(match self.tunnel.reconfigure(config).await? {
            tunnel::Reconfigured::Unchanged => Reconfigured::Unchanged,
            tunnel::Reconfigured::Restarted => Reconfigured::Restarted,
            tunnel::Reconfigured::NewDevice => Reconfigured::NewDevice,
        })
    }

    /// The handle the rest of the daemon uses.
    pub fn handle(&self) -> TunnelHandle {
        self.tunnel.handle()
    }

    /// Stops the tunnel and removes its device.
    pub async fn shutdown(self) {
        self.tunnel.shutdown().await;
    }
}

/// True when the peer carrying `operator` completed a handshake at or after `since`.
pub fn operator_reached_since(handle: &TunnelHandle, operator: IpAddr, since: &Moment) -> bool {
    handle
        .last_handshake(operator)
        .is_some_and(|t| t.is_at_or_after(since))
}

/// The proxy's and the page's view of a demand that failed, in the carrier's words (the same
/// words the tunnel used).
pub fn demand_error(err: tunnel::DemandError) -> DemandError {
    match err {
        tunnel::DemandError::NoRoute(ip) => DemandError::NoRoute(ip),
        tunnel::DemandError::Timeout(waited) => DemandError::Timeout(waited),
        tunnel::DemandError::Restarting => DemandError::Restarting,
    }
}

/// The peers whose state changes are events: each named with an address it owns (the first of
/// its allowed IPs), which is how the handle finds it.
pub fn watched_links(config: &Config) -> Vec<(String, IpAddr)> {
    config
        .tunnel
        .iter()
        .flat_map(|tunnel| &tunnel.peers)
        .filter_map(|p| Some((p.name.clone(), p.allowed_ips.first()?.addr())))
        .collect()
}

/// WireGuard's private key file (`[tunnel] private_key_file`): the box is enrolled by its
/// public half.
pub fn enrolment_key_file(config: &Config) -> Option<&std::path::Path> {
    config
        .tunnel
        .as_ref()
        .map(|tunnel| tunnel.private_key_file.as_path())
}

/// The tunnel's snapshot in the carrier's shape: generic fields on top, WireGuard's own in the
/// backend parts.
pub fn snapshot(tunnel: TunnelSnapshot) -> CarrierSnapshot {
    CarrierSnapshot {
        kind: CarrierKind::WireGuard,
        interface: tunnel.interface,
        address: tunnel.address,
        policy: tunnel.policy,
        state: tunnel.state,
        alarm: tunnel.alarm,
        peers: tunnel.peers.into_iter().map(link).collect(),
        drops: tunnel.drops.filter,
        backend: CarrierBackend::WireGuard(WireGuardCarrier {
            listen_port: tunnel.listen_port,
            drops: tunnel.drops.datagrams,
            offloads: tunnel.offloads,
            offloads_on: tunnel.offloads_on,
            offload_counts: tunnel.offload_counts,
            udp_reads_per_socket: tunnel.udp_reads_per_socket,
            tun_reads_per_queue: tunnel.tun_reads_per_queue,
        }),
    }
}

/// One peer: a completed handshake is what "reached" means for WireGuard.
fn link(p: tunnel::PeerSnapshot) -> LinkSnapshot {
    LinkSnapshot {
        name: p.name,
        state: p.state,
        reason: p.reason,
        reason_code: p.reason_code,
        alarm: p.alarm,
        last_reached: p.last_handshake,
        last_reached_age_secs: p.last_handshake_age_secs,
        holds: p.holds,
        tx_bytes: p.tx_bytes,
        rx_bytes: p.rx_bytes,
        backend: LinkBackend::WireGuard(WireGuardPeer {
            public_key: p.public_key,
            endpoint: p.endpoint,
            allowed_ips: p.allowed_ips,
            persistent_keepalive_secs: p.persistent_keepalive_secs,
            session_keys_present: p.session_keys_present,
            tx_packets: p.tx_packets,
            rx_packets: p.rx_packets,
            handshake_attempts: p.handshake_attempts,
            handshake_failures: p.handshake_failures,
            handshakes_completed: p.handshakes_completed,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::carrier::snapshot::{DropCounts, WireGuardDrops};
    use crate::carrier::LinkState;
    use std::time::{Duration, UNIX_EPOCH};

    fn tunnel_snapshot() -> TunnelSnapshot {
        let handshake = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        TunnelSnapshot {
            interface: "renkei0".to_string(),
            address: "198.19.0.20/24".parse().expect("net"),
            listen_port: 51820,
            policy: "on_demand",
            state: LinkState::Up,
            alarm: true,
            peers: vec![tunnel::PeerSnapshot {
                name: "dc".to_string(),
                public_key: "KEY=".to_string(),
                endpoint: Some("198.18.0.1:51820".parse().expect("addr")),
                allowed_ips: vec!["198.19.0.0/24".parse().expect("net")],
                persistent_keepalive_secs: Some(25),
                state: LinkState::Up,
                reason: "session established".to_string(),
                reason_code: crate::state::link::LinkReason::SessionEstablished,
                alarm: true,
                session_keys_present: true,
                standby: false,
                last_handshake: Some(handshake),
                last_handshake_age_secs: Some(7),
                holds: 2,
                tx_bytes: 100,
                rx_bytes: 200,
                tx_packets: 3,
                rx_packets: 4,
                handshake_attempts: 5,
                handshake_failures: 1,
                handshakes_completed: 4,
            }],
            drops: tunnel::DropCounts {
                filter: DropCounts {
                    no_route: 9,
                    ..DropCounts::default()
                },
                datagrams: WireGuardDrops {
                    invalid_datagrams: 2,
                    ..WireGuardDrops::default()
                },
            },
            offloads: "off (test)".to_string(),
            offloads_on: false,
            offload_counts: tunnel::OffloadCounts::default(),
            udp_reads_per_socket: vec![7, 5],
            tun_reads_per_queue: vec![3, 4],
        }
    }

    #[test]
    fn ops3_wireguard_snapshot_maps_generic_fields_and_a_handshake_as_reached() {
        let carrier = snapshot(tunnel_snapshot());
        assert_eq!(carrier.kind, CarrierKind::WireGuard);
        assert_eq!(
            (
                carrier.interface.as_str(),
                carrier.policy,
                carrier.state,
                carrier.alarm
            ),
            ("renkei0", "on_demand", LinkState::Up, true)
        );
        assert_eq!(carrier.drops.no_route, 9);
        let CarrierBackend::WireGuard(wg) = &carrier.backend else {
            panic!("a WireGuard backend: {:?}", carrier.backend);
        };
        assert_eq!(wg.listen_port, 51820);
        assert_eq!(
            wg.drops.invalid_datagrams, 2,
            "WireGuard's own drops are in its backend part"
        );
        assert_eq!(
            (&wg.udp_reads_per_socket, &wg.tun_reads_per_queue),
            (&vec![7, 5], &vec![3, 4])
        );
        let [link] = carrier.peers.as_slice() else {
            panic!("one peer: {:?}", carrier.peers);
        };
        assert_eq!(
            (link.name.as_str(), link.state, link.alarm, link.holds),
            ("dc", LinkState::Up, true, 2)
        );
        assert_eq!(
            (link.last_reached, link.last_reached_age_secs),
            (
                Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
                Some(7)
            ),
            "for WireGuard the peer was reached at its last completed handshake"
        );
        assert_eq!((link.tx_bytes, link.rx_bytes), (100, 200));
        let peer = link.backend.wireguard().expect("a WireGuard peer");
        assert_eq!(
            (
                peer.public_key.as_str(),
                peer.session_keys_present,
                peer.handshake_attempts,
                peer.handshakes_completed,
                peer.persistent_keepalive_secs,
            ),
            ("KEY=", true, 5, 4, Some(25))
        );
    }

    #[test]
    fn ops3_wireguard_fields_appear_only_in_the_backend_part_of_the_json() {
        let json = serde_json::to_value(snapshot(tunnel_snapshot())).expect("json");
        let wireguard_only = [
            "listen_port",
            "public_key",
            "endpoint",
            "allowed_ips",
            "persistent_keepalive_secs",
            "session_keys_present",
            "last_handshake",
            "last_handshake_age_secs",
            "tx_packets",
            "rx_packets",
            "handshake_attempts",
            "handshake_failures",
            "handshakes_completed",
        ];
        let peer = &json["peers"][0];
        for field in wireguard_only {
            assert!(
                json.get(field).is_none(),
                "{field} on the carrier: {json:#}"
            );
            assert!(peer.get(field).is_none(), "{field} on the peer: {peer:#}");
        }
        for field in [
            "invalid_datagrams",
            "no_endpoint",
            "send_errors",
            "tun_write_errors",
        ] {
            assert!(
                json["drops"].get(field).is_none(),
                "{field} with the generic drops: {json:#}"
            );
        }
        assert_eq!(
            json["backend"]["wireguard"]["drops"]["invalid_datagrams"],
            2
        );
        assert_eq!(json["drops"]["no_route"], 9);
        assert_eq!(json["kind"], "wireguard");
        assert_eq!(json["backend"]["wireguard"]["listen_port"], 51820);
        assert_eq!(peer["last_reached"], 1_700_000_000);
        assert_eq!(peer["last_reached_age_secs"], 7);
        let wg = &peer["backend"]["wireguard"];
        assert_eq!(wg["public_key"], "KEY=");
        assert_eq!(wg["endpoint"], "198.18.0.1:51820");
        assert_eq!(wg["session_keys_present"], true);
        assert_eq!(wg["handshakes_completed"], 4);
    }
}
