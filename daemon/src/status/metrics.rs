//! `/metrics` in the Prometheus text exposition format (OPS-4), rendered from a status document
//! so the page, the API and the metrics can never disagree.
//!
//! Every family has HELP and TYPE lines; counters end in `_total`; label values are escaped.
//! Public keys and certificate subjects are labels; nothing secret is ever rendered.

use std::fmt::Write as _;
use std::time::UNIX_EPOCH;

use super::StatusDocument;
use crate::carrier::{CarrierBackend, IpsecLink, IpsecTraffic, LinkSnapshot, LinkState};
use crate::proxy::ServiceState;

/// The content type Prometheus expects for the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

const LINK_STATES: [LinkState; 4] = [
    LinkState::Up,
    LinkState::Idle,
    LinkState::Connecting,
    LinkState::Down,
];

const SERVICE_STATES: [ServiceState; 5] = [
    ServiceState::Starting,
    ServiceState::WaitingForAddress,
    ServiceState::Listening,
    ServiceState::Full,
    ServiceState::Stopped,
];

/// Escapes a label value: backslash, double quote and line feed.
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// One metric family being written.
struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &'static str, kind: &str, help: &str) -> Self {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Family { out, name }
    }

    fn sample(&mut self, labels: &[(&str, &str)], value: impl std::fmt::Display) -> &mut Self {
        self.out.push_str(self.name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (name, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{name}=\"{}\"", escape_label(value));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
        self
    }
}

/// The IPsec SAs of IPsec peers: whether the IKE SA is established, how long ago, and the ESP
/// traffic summed over every CHILD SA of the run (charon's own counters restart from zero at
/// each rekey, which would read as a counter reset). Families are declared on every box; only
/// IPsec peers have samples.
fn ipsec_families(o: &mut String, doc: &StatusDocument) {
    let links: Vec<(&str, &IpsecLink)> = doc
        .tunnel
        .peers
        .iter()
        .filter_map(|p| p.backend.ipsec().map(|link| (p.name.as_str(), link)))
        .collect();
    let mut f = Family::new(
        o,
        "renkei_ipsec_ike_sa_established",
        "gauge",
        "1 while the IKE SA with the concentrator is ESTABLISHED, else 0.",
    );
    for (peer, link) in &links {
        let up = link
            .ike
            .as_ref()
            .is_some_and(|ike| ike.state == "ESTABLISHED");
        f.sample(
            &[("peer", peer), ("remote_id", &link.remote_id)],
            u8::from(up),
        );
    }
    let mut f = Family::new(
        o,
        "renkei_ipsec_ike_sa_established_age_seconds",
        "gauge",
        "Seconds since the IKE SA was established (absent: none).",
    );
    for (peer, link) in &links {
        let established = link.ike.as_ref().and_then(|ike| ike.established);
        if let Some(since) = established.and_then(|t| t.duration_since(UNIX_EPOCH).ok()) {
            f.sample(
                &[("peer", peer), ("remote_id", &link.remote_id)],
                doc.time_unix.saturating_sub(since.as_secs()),
            );
        }
    }
    type TrafficCounter = fn(&IpsecTraffic) -> u64;
    let counters: [(&'static str, &str, TrafficCounter); 4] = [
        (
            "renkei_ipsec_child_sa_receive_bytes_total",
            "Bytes received over the CHILD SAs (ESP) since renkei started, across rekeys.",
            |t| t.bytes_in,
        ),
        (
            "renkei_ipsec_child_sa_transmit_bytes_total",
            "Bytes sent over the CHILD SAs (ESP) since renkei started, across rekeys.",
            |t| t.bytes_out,
        ),
        (
            "renkei_ipsec_child_sa_receive_packets_total",
            "Packets received over the CHILD SAs (ESP) since renkei started, across rekeys.",
            |t| t.packets_in,
        ),
        (
            "renkei_ipsec_child_sa_transmit_packets_total",
            "Packets sent over the CHILD SAs (ESP) since renkei started, across rekeys.",
            |t| t.packets_out,
        ),
    ];
    for (name, help, value) in counters {
        let mut f = Family::new(o, name, "counter", help);
        for (peer, link) in &links {
            f.sample(
                &[("peer", peer), ("remote_id", &link.remote_id)],
                value(&link.total),
            );
        }
    }
}

/// The series with a `peer` label: 13 per WireGuard peer (4 states, 7 counters, 2 ages), 13
/// per IPsec link (4 states, 2 byte counters, its age, 6 SA series), 7 per closed link. Left
/// out with [`PeerSeries::AggregateOnly`].
fn peer_families(o: &mut String, doc: &StatusDocument) {
    let tunnel = &doc.tunnel;
    let mut f = Family::new(
        o,
        "renkei_peer_state",
        "gauge",
        "Per-peer tunnel state: 1 for the current state, 0 for the others.",
    );
    for p in &tunnel.peers {
        for state in LINK_STATES {
            f.sample(
                &[("peer", &p.name), ("state", state.as_str())],
                u8::from(p.state == state),
            );
        }
    }
    // Bytes are every carrier's; packets and handshakes are WireGuard's (its backend part),
    // sampled only for WireGuard peers. The public key label is there for WireGuard peers.
    type PeerCounter = fn(&LinkSnapshot) -> Option<u64>;
    let counters: [(&'static str, &str, PeerCounter); 7] = [
        (
            "renkei_peer_receive_bytes_total",
            "Bytes received on the link from the peer (WireGuard: authenticated datagram bytes; closed: the interface's counter).",
            |p| Some(p.rx_bytes),
        ),
        (
            "renkei_peer_transmit_bytes_total",
            "Bytes sent on the link to the peer (WireGuard: datagram bytes; closed: the interface's counter).",
            |p| Some(p.tx_bytes),
        ),
        (
            "renkei_peer_receive_packets_total",
            "WireGuard datagrams received from the peer (authenticated).",
            |p| p.backend.wireguard().map(|w| w.rx_packets),
        ),
        (
            "renkei_peer_transmit_packets_total",
            "WireGuard datagrams sent to the peer.",
            |p| p.backend.wireguard().map(|w| w.tx_packets),
        ),
        (
            "renkei_peer_handshake_attempts_total",
            "Handshake initiations sent.",
            |p| p.backend.wireguard().map(|w| w.handshake_attempts),
        ),
        (
            "renkei_peer_handshake_failures_total",
            "Handshake initiations that got no answer.",
            |p| p.backend.wireguard().map(|w| w.handshake_failures),
        ),
        (
            "renkei_peer_handshakes_total",
            "Handshakes completed, either side initiating.",
            |p| p.backend.wireguard().map(|w| w.handshakes_completed),
        ),
    ];
    for (name, help, value) in counters {
        let mut f = Family::new(o, name, "counter", help);
        for p in &tunnel.peers {
            let Some(value) = value(p) else {
                continue;
            };
            match p.backend.wireguard() {
                Some(w) => f.sample(&[("peer", &p.name), ("public_key", &w.public_key)], value),
                None => f.sample(&[("peer", &p.name)], value),
            };
        }
    }
    let mut f = Family::new(
        o,
        "renkei_peer_last_reached_age_seconds",
        "gauge",
        "Seconds since the peer was last reached on the link (absent: never).",
    );
    for p in &tunnel.peers {
        if let Some(age) = p.last_reached_age_secs {
            f.sample(&[("peer", &p.name)], age);
        }
    }
    // The same age under WireGuard's older name, for WireGuard peers (existing dashboards).
    let mut f = Family::new(
        o,
        "renkei_peer_last_handshake_age_seconds",
        "gauge",
        "Seconds since the last completed handshake with the WireGuard peer (absent: never).",
    );
    for p in &tunnel.peers {
        if let (Some(age), Some(_)) = (p.last_reached_age_secs, p.backend.wireguard()) {
            f.sample(&[("peer", &p.name)], age);
        }
    }
    ipsec_families(o, doc);
}

/// Series over every peer whatever [`PeerSeries`] says: how many peers are in each state and in
/// alarm, and the bytes of all of them (a hub's dashboard without one series per facility).
fn peer_aggregate_families(o: &mut String, peers: &[LinkSnapshot]) {
    let mut f = Family::new(
        o,
        "renkei_peers",
        "gauge",
        "Peers (a hub's facilities) in each link state.",
    );
    for state in LINK_STATES {
        f.sample(
            &[("state", state.as_str())],
            peers.iter().filter(|p| p.state == state).count(),
        );
    }
    Family::new(
        o,
        "renkei_peers_in_alarm",
        "gauge",
        "Always-on peers last reached longer ago than the alarm threshold.",
    )
    .sample(&[], peers.iter().filter(|p| p.alarm).count());
    Family::new(
        o,
        "renkei_peers_receive_bytes_total",
        "counter",
        "Bytes received on the link from every configured peer together.",
    )
    .sample(
        &[],
        peers.iter().fold(0u64, |a, p| a.saturating_add(p.rx_bytes)),
    );
    Family::new(
        o,
        "renkei_peers_transmit_bytes_total",
        "counter",
        "Bytes sent on the link to every configured peer together.",
    )
    .sample(
        &[],
        peers.iter().fold(0u64, |a, p| a.saturating_add(p.tx_bytes)),
    );
}

/// Whether `/metrics` has series per peer (`status.per_peer_metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerSeries {
    /// Every family, per-peer series included (the default).
    PerPeer,
    /// Only series without a peer label: a hub with very many facilities.
    AggregateOnly,
}

impl PeerSeries {
    /// What `status.per_peer_metrics` says.
    pub fn from_config(config: &crate::config::StatusConfig) -> Self {
        if config.per_peer_metrics {
            PeerSeries::PerPeer
        } else {
            PeerSeries::AggregateOnly
        }
    }
}

/// The hub group of a facility with a primary and backup hubs (AVL-4): which hub is active,
/// which answer, how often the box failed over. Only boxes with a group have these families.
fn hub_families(o: &mut String, doc: &StatusDocument) {
    let Some(hubs) = &doc.hubs else {
        return;
    };
    let mut f = Family::new(
        o,
        "renkei_hub_active",
        "gauge",
        "1 for the hub of the hub group the box uses now, 0 for the others.",
    );
    for m in &hubs.members {
        f.sample(&[("hub", &m.name)], u8::from(m.active));
    }
    let mut f = Family::new(
        o,
        "renkei_hub_healthy",
        "gauge",
        "1 while the hub answered within failover_after_secs, else 0.",
    );
    for m in &hubs.members {
        f.sample(&[("hub", &m.name)], u8::from(m.healthy));
    }
    let mut f = Family::new(
        o,
        "renkei_hub_primary",
        "gauge",
        "1 for the group's most preferred hub (its first), 0 for the backups.",
    );
    for (i, m) in hubs.members.iter().enumerate() {
        f.sample(&[("hub", &m.name)], u8::from(i == 0));
    }
    Family::new(
        o,
        "renkei_hub_failovers_total",
        "counter",
        "Times the box moved away from a hub that stopped answering, since the tunnel started.",
    )
    .sample(&[], hubs.failovers);
}

/// When the last rollback of a pushed configuration happened, from the ring of recent events
/// (config events are never pushed out by refusal floods); absent when the ring has none. A
/// timestamp rather than a counter: the ring lives in memory and starts empty at each start,
/// where a rollback made by the start's own recovery is its first config event, and an alert
/// on "rolled back in the last hour" needs no counter that survives restarts.
fn config_rollback_family(o: &mut String, doc: &StatusDocument) {
    let mut f = Family::new(
        o,
        "renkei_config_last_rollback_timestamp_seconds",
        "gauge",
        "When a pushed configuration was last rolled back (seconds since the Unix epoch; absent: none in the recent events).",
    );
    let last = doc
        .events
        .iter()
        .filter(|e| e.code == crate::state::events::Code::ConfigRolledBack)
        .map(|e| e.time_unix)
        .max();
    if let Some(at) = last {
        f.sample(&[], at);
    }
}

/// The clock (certificates and logs depend on it) and the firmware: what runs, and the last
/// update's outcome, so a failed update can be alerted on from the fleet's monitoring.
fn clock_and_firmware_families(o: &mut String, doc: &StatusDocument) {
    let mut f = Family::new(
        o,
        "renkei_clock_synchronized",
        "gauge",
        "1 while the kernel says the clock is synchronized (NTP), 0 when not; absent when it cannot tell.",
    );
    if let Some(synced) = doc.clock_synchronized {
        f.sample(&[], u8::from(synced));
    }
    let firmware = &doc.firmware;
    Family::new(
        o,
        "renkei_firmware_info",
        "gauge",
        "The running firmware (always 1).",
    )
    .sample(
        &[
            ("version", &firmware.version),
            ("booted_slot", &firmware.booted_slot),
        ],
        1,
    );
    let mut f = Family::new(
        o,
        "renkei_firmware_last_update_timestamp_seconds",
        "gauge",
        "When the last firmware update reached its outcome `result` (seconds since the Unix epoch; absent: none).",
    );
    if let Some(last) = &firmware.last_result {
        f.sample(
            &[
                ("result", &last.result),
                ("version", last.version.as_deref().unwrap_or("")),
            ],
            last.at,
        );
    }
}

/// Renders the metrics of a status document.
pub fn render(doc: &StatusDocument, series: PeerSeries) -> String {
    let mut out = String::new();
    let o = &mut out;

    Family::new(
        o,
        "renkei_build_info",
        "gauge",
        "Build of the running daemon (always 1).",
    )
    .sample(&[("version", doc.version), ("role", doc.role)], 1);
    Family::new(
        o,
        "renkei_uptime_seconds",
        "gauge",
        "Seconds since the daemon started.",
    )
    .sample(&[], doc.uptime_secs);
    Family::new(
        o,
        "renkei_config_version",
        "gauge",
        "Version of the running configuration.",
    )
    .sample(&[], doc.config.version);
    Family::new(
        o,
        "renkei_config_pending",
        "gauge",
        "1 while a pushed configuration awaits confirmation.",
    )
    .sample(&[], u8::from(doc.config.pending.is_some()));

    config_rollback_family(o, doc);
    clock_and_firmware_families(o, doc);

    let tunnel = &doc.tunnel;
    Family::new(
        o,
        "renkei_carrier_info",
        "gauge",
        "The kind of link to the data centre (always 1).",
    )
    .sample(&[("kind", tunnel.kind.as_str())], 1);
    let mut f = Family::new(
        o,
        "renkei_tunnel_state",
        "gauge",
        "Overall tunnel state: 1 for the current state, 0 for the others.",
    );
    for state in LINK_STATES {
        f.sample(
            &[("state", state.as_str())],
            u8::from(tunnel.state == state),
        );
    }
    Family::new(
        o,
        "renkei_tunnel_alarm",
        "gauge",
        "1 when an always-on peer was last reached longer ago than the alarm threshold.",
    )
    .sample(&[], u8::from(tunnel.alarm));

    // Only a carrier that relies on the kernel not forwarding reports the switch (closed).
    if let CarrierBackend::Closed(closed) = &tunnel.backend {
        if let Some(on) = closed.ip_forward {
            Family::new(
                o,
                "renkei_ip_forwarding",
                "gauge",
                "1 while the kernel forwards IPv4 between interfaces (the box must not route: NET-8).",
            )
            .sample(&[], u8::from(on));
        }
    }

    peer_aggregate_families(o, &tunnel.peers);
    hub_families(o, doc);
    if series == PeerSeries::PerPeer {
        peer_families(o, doc);
    }
    let d = &tunnel.drops;
    let mut f = Family::new(
        o,
        "renkei_tunnel_dropped_packets_total",
        "counter",
        "Packets the box dropped, by reason: its packet filter's (every carrier), and for \
         WireGuard its own datagrams.",
    );
    for (reason, n) in [
        ("foreign_source", d.foreign_source),
        ("no_route", d.no_route),
        ("foreign_destination", d.foreign_destination),
        ("source_not_allowed", d.source_not_allowed),
        ("malformed", d.malformed),
    ] {
        f.sample(&[("reason", reason)], n);
    }
    if let CarrierBackend::WireGuard(wg) = &tunnel.backend {
        for (reason, n) in [
            ("invalid_datagram", wg.drops.invalid_datagrams),
            ("no_endpoint", wg.drops.no_endpoint),
            ("send_error", wg.drops.send_errors),
            ("tun_write_error", wg.drops.tun_write_errors),
        ] {
            f.sample(&[("reason", reason)], n);
        }
    }

    let services = doc
        .proxy
        .as_ref()
        .map(|p| p.services.as_slice())
        .unwrap_or_default();
    let mut f = Family::new(
        o,
        "renkei_service_active_connections",
        "gauge",
        "Proxied connections open now.",
    );
    for s in services {
        f.sample(
            &[("service", &s.name), ("direction", s.direction.as_str())],
            s.active,
        );
    }
    let mut f = Family::new(
        o,
        "renkei_service_state",
        "gauge",
        "What a service is doing: 1 for the current state, 0 for the others.",
    );
    for s in services {
        for state in SERVICE_STATES {
            f.sample(
                &[("service", &s.name), ("state", state.as_str())],
                u8::from(s.state == state),
            );
        }
    }
    let mut f = Family::new(
        o,
        "renkei_service_max_connections",
        "gauge",
        "Configured concurrent connection limit.",
    );
    for s in services {
        f.sample(&[("service", &s.name)], s.max_connections);
    }
    type ServiceCounter = fn(&crate::proxy::ServiceSnapshot) -> u64;
    let counters: [(&'static str, &str, ServiceCounter); 5] = [
        (
            "renkei_service_connections_total",
            "Connections accepted, refused ones included.",
            |s| s.total,
        ),
        (
            "renkei_service_refused_connections_total",
            "Connections refused (limit, identity, handshake).",
            |s| s.refused,
        ),
        (
            "renkei_service_failed_connections_total",
            "Connections that failed after being accepted.",
            |s| s.errors,
        ),
        (
            "renkei_service_received_bytes_total",
            "Bytes from connecting peers to the target, of closed connections.",
            |s| s.bytes_in,
        ),
        (
            "renkei_service_sent_bytes_total",
            "Bytes from the target to connecting peers, of closed connections.",
            |s| s.bytes_out,
        ),
    ];
    for (name, help, value) in counters {
        let mut f = Family::new(o, name, "counter", help);
        for s in services {
            f.sample(&[("service", &s.name)], value(s));
        }
    }
    let mut f = Family::new(
        o,
        "renkei_tls_handshakes_total",
        "counter",
        "Completed TLS handshakes of proxied connections, by version and cipher suite.",
    );
    for s in services {
        for h in &s.tls_handshakes {
            f.sample(
                &[
                    ("service", &s.name),
                    ("version", &h.version),
                    ("suite", &h.suite),
                ],
                h.count,
            );
        }
    }

    let mut f = Family::new(
        o,
        "renkei_certificate_expiry_seconds",
        "gauge",
        "Seconds until the certificate's notAfter (negative: expired).",
    );
    for c in &doc.certificates {
        let role = serde_json::to_value(c.role)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        f.sample(
            &[
                ("role", &role),
                ("subject", &c.subject),
                ("serial", &c.serial),
            ],
            c.not_after_unix - doc.time_unix as i64,
        );
    }

    if let Some(page) = &doc.status_page {
        Family::new(
            o,
            "renkei_status_logins_total",
            "counter",
            "Successful administrator logins to the status page.",
        )
        .sample(&[], page.logins);
        Family::new(
            o,
            "renkei_status_login_failures_total",
            "counter",
            "Refused administrator logins (wrong password, or too soon after one).",
        )
        .sample(&[], page.login_failures);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops4_label_values_are_escaped() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("line\nbreak"), "line\\nbreak");
        assert_eq!(escape_label("病院"), "病院");
    }

    #[test]
    fn ops4_families_have_help_and_type_and_samples_follow() {
        let mut out = String::new();
        Family::new(&mut out, "renkei_x_total", "counter", "Things.")
            .sample(&[("peer", "a\"b")], 3)
            .sample(&[], 4);
        assert_eq!(
            out,
            "# HELP renkei_x_total Things.\n# TYPE renkei_x_total counter\n\
             renkei_x_total{peer=\"a\\\"b\"} 3\nrenkei_x_total 4\n"
        );
    }
}

#[cfg(test)]
mod document_tests {
    use super::*;
    use crate::carrier::{
        CarrierKind, CarrierSnapshot, DropCounts, LinkBackend, WireGuardCarrier, WireGuardDrops,
        WireGuardPeer,
    };
    use crate::status::{ConfigState, PendingConfig};

    fn document() -> StatusDocument {
        let peer = LinkSnapshot {
            name: "dc".to_string(),
            state: LinkState::Up,
            reason: "session established".to_string(),
            reason_code: crate::carrier::LinkReason::SessionEstablished,
            alarm: false,
            last_reached: None,
            last_reached_age_secs: Some(12),
            holds: 0,
            tx_bytes: 100,
            rx_bytes: 200,
            backend: LinkBackend::WireGuard(WireGuardPeer {
                public_key: "KEY=".to_string(),
                endpoint: None,
                allowed_ips: Vec::new(),
                persistent_keepalive_secs: None,
                session_keys_present: true,
                tx_packets: 1,
                rx_packets: 2,
                handshake_attempts: 3,
                handshake_failures: 1,
                handshakes_completed: 2,
            }),
        };
        StatusDocument {
            facility: "病院 \"A\"".to_string(),
            role: "disclosing",
            config_version: 7,
            config: ConfigState {
                version: 7,
                description: None,
                signer: None,
                pushed_by: None,
                pushed_at_unix: None,
                sha256: None,
                state: "pending",
                applied_at_unix: None,
                pending: Some(PendingConfig {
                    version: 8,
                    signer: None,
                    previous_version: Some(7),
                    confirm_deadline_unix: 0,
                }),
            },
            version: "0.1.0",
            uptime_secs: 5,
            hubs: None,
            tunnel: CarrierSnapshot {
                kind: CarrierKind::WireGuard,
                interface: "renkei0".to_string(),
                address: "198.19.0.10/24".parse().expect("net"),
                policy: "always_on",
                state: LinkState::Up,
                alarm: false,
                peers: vec![peer],
                drops: DropCounts {
                    foreign_source: 0,
                    no_route: 4,
                    foreign_destination: 0,
                    source_not_allowed: 0,
                    malformed: 0,
                },
                backend: CarrierBackend::WireGuard(WireGuardCarrier {
                    listen_port: 0,
                    drops: WireGuardDrops {
                        invalid_datagrams: 3,
                        ..WireGuardDrops::default()
                    },
                    offloads: "on (csum, tso4, tso6)".to_string(),
                    offloads_on: true,
                    offload_counts: Default::default(),
                    udp_reads_per_socket: vec![1],
                    tun_reads_per_queue: vec![1],
                }),
            },
            tunnel_actions: false,
            proxy: None,
            certificates: Vec::new(),
            events: Vec::new(),
            enrolment: None,
            status_page: None,
            time_unix: 1_000,
            clock_synchronized: None,
            firmware: crate::update::status::FirmwareSummary {
                version: "0.1.0".to_string(),
                booted_slot: "A".to_string(),
                last_result: None,
            },
        }
    }

    #[test]
    fn ops4_rendered_document_is_well_formed_exposition() {
        let text = render(&document(), PeerSeries::PerPeer);
        for expected in [
            "renkei_config_version 7\n",
            "renkei_config_pending 1\n",
            "renkei_tunnel_state{state=\"up\"} 1\n",
            "renkei_tunnel_state{state=\"down\"} 0\n",
            "renkei_peer_receive_bytes_total{peer=\"dc\",public_key=\"KEY=\"} 200\n",
            "renkei_peer_last_handshake_age_seconds{peer=\"dc\"} 12\n",
            "renkei_peer_last_reached_age_seconds{peer=\"dc\"} 12\n",
            "renkei_carrier_info{kind=\"wireguard\"} 1\n",
            "renkei_tunnel_dropped_packets_total{reason=\"no_route\"} 4\n",
            "renkei_tunnel_dropped_packets_total{reason=\"invalid_datagram\"} 3\n",
            "renkei_build_info{version=\"0.1.0\",role=\"disclosing\"} 1\n",
        ] {
            assert!(text.contains(expected), "{expected:?} missing:\n{text}");
        }
        // Every sample belongs to a family declared just before it, and counters end in _total.
        let mut declared: Option<(String, String)> = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE line");
                declared = Some((name.to_string(), kind.to_string()));
                if kind == "counter" {
                    assert!(name.ends_with("_total"), "{name}");
                }
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().expect("name");
                let (family, _) = declared.as_ref().expect("a family before samples");
                assert_eq!(name, family, "{line}");
                let value = line.rsplit(' ').next().expect("value");
                assert!(value.parse::<f64>().is_ok(), "{line}");
            }
        }
    }

    /// A closed carrier's metrics: its kind, the forwarding switch, the generic age and drops,
    /// and none of WireGuard's families' samples.
    #[test]
    fn net9_ops4_a_closed_carrier_has_no_wireguard_samples_and_reports_forwarding() {
        use crate::carrier::{ClosedCarrier, ClosedLink};
        let mut doc = document();
        doc.tunnel.kind = CarrierKind::Closed;
        doc.tunnel.backend = CarrierBackend::Closed(ClosedCarrier {
            ip_forward: Some(true),
        });
        doc.tunnel.peers[0].backend = LinkBackend::Closed(ClosedLink {
            probe_endpoint: None,
            data_centre_prefixes: Vec::new(),
            probes_sent: 3,
            probes_failed: 0,
        });
        let text = render(&doc, PeerSeries::PerPeer);
        for expected in [
            "renkei_carrier_info{kind=\"closed\"} 1\n",
            "renkei_ip_forwarding 1\n",
            "renkei_peer_last_reached_age_seconds{peer=\"dc\"} 12\n",
            "renkei_peer_receive_bytes_total{peer=\"dc\"} 200\n",
            "renkei_tunnel_dropped_packets_total{reason=\"no_route\"} 4\n",
        ] {
            assert!(text.contains(expected), "{expected:?} missing:\n{text}");
        }
        for absent in [
            "public_key",
            "renkei_peer_last_handshake_age_seconds{",
            "renkei_peer_handshakes_total{",
            "reason=\"invalid_datagram\"",
        ] {
            assert!(
                !text.contains(absent),
                "{absent:?} on a closed box:\n{text}"
            );
        }
        let wireguard = render(&document(), PeerSeries::PerPeer);
        assert!(!wireguard.contains("renkei_ip_forwarding"), "{wireguard}");
    }

    /// An IPsec carrier's metrics: its kind, whether the IKE SA is established and since when,
    /// the run's ESP totals (not the current CHILD SA's own counters, which a rekey resets);
    /// none of WireGuard's samples; a box without an IKE SA reports 0 and keeps its totals.
    #[test]
    fn net9_ops4_an_ipsec_carrier_reports_its_sas() {
        use crate::carrier::{IpsecCarrier, IpsecChildSa, IpsecIkeSa};
        use std::time::{Duration, UNIX_EPOCH};
        let mut doc = document();
        doc.tunnel.kind = CarrierKind::Ipsec;
        doc.tunnel.backend = CarrierBackend::Ipsec(IpsecCarrier {
            vici_socket: "/run/charon.vici".into(),
            charon_loaded: true,
            loads: 1,
            last_error: None,
            last_error_code: None,
        });
        let link = IpsecLink {
            remote_address: "198.18.40.1".parse().expect("address"),
            remote_id: "dc \"1\"".to_string(),
            data_centre_prefixes: Vec::new(),
            ike: Some(IpsecIkeSa {
                state: "ESTABLISHED".to_string(),
                remote_id: Some("dc".to_string()),
                encryption: Some("AES_GCM_16".to_string()),
                key_size_bits: Some(256),
                integrity: None,
                prf: Some("PRF_HMAC_SHA2_256".to_string()),
                dh_group: Some("ECP_256".to_string()),
                established: Some(UNIX_EPOCH + Duration::from_secs(900)),
                rekey_in_secs: Some(3000),
            }),
            child: Some(IpsecChildSa {
                state: "INSTALLED".to_string(),
                encryption: Some("AES_GCM_16".to_string()),
                key_size_bits: Some(128),
                dh_group: None,
                installed: Some(UNIX_EPOCH + Duration::from_secs(950)),
                bytes_in: 4321,
                bytes_out: 8765,
                packets_in: 5,
                packets_out: 6,
                last_in: Some(UNIX_EPOCH + Duration::from_secs(990)),
                last_out: None,
                rekey_in_secs: None,
                expires_in_secs: None,
                local_ts: Vec::new(),
                remote_ts: Vec::new(),
            }),
            // More than the CHILD SA's own: earlier SAs of the run carried traffic too.
            total: IpsecTraffic {
                bytes_in: 54_321,
                bytes_out: 98_765,
                packets_in: 50,
                packets_out: 60,
            },
            profile_violation: None,
            profile_violation_names: None,
        };
        doc.tunnel.peers[0].backend = LinkBackend::Ipsec(Box::new(link.clone()));
        let text = render(&doc, PeerSeries::PerPeer);
        let labels = "{peer=\"dc\",remote_id=\"dc \\\"1\\\"\"}";
        for expected in [
            "renkei_carrier_info{kind=\"ipsec\"} 1\n".to_string(),
            format!("renkei_ipsec_ike_sa_established{labels} 1\n"),
            format!("renkei_ipsec_ike_sa_established_age_seconds{labels} 100\n"),
            format!("renkei_ipsec_child_sa_receive_bytes_total{labels} 54321\n"),
            format!("renkei_ipsec_child_sa_transmit_bytes_total{labels} 98765\n"),
            format!("renkei_ipsec_child_sa_receive_packets_total{labels} 50\n"),
            format!("renkei_ipsec_child_sa_transmit_packets_total{labels} 60\n"),
            "# TYPE renkei_ipsec_child_sa_receive_bytes_total counter\n".to_string(),
            "# TYPE renkei_ipsec_ike_sa_established gauge\n".to_string(),
        ] {
            assert!(text.contains(&expected), "{expected:?} missing:\n{text}");
        }
        for absent in [
            "public_key",
            "renkei_peer_handshakes_total{",
            "renkei_ip_forwarding",
        ] {
            assert!(
                !text.contains(absent),
                "{absent:?} on an IPsec box:\n{text}"
            );
        }
        let mut down = link;
        down.ike = None;
        down.child = None;
        doc.tunnel.peers[0].backend = LinkBackend::Ipsec(Box::new(down));
        let text = render(&doc, PeerSeries::PerPeer);
        assert!(
            text.contains(&format!("renkei_ipsec_ike_sa_established{labels} 0\n")),
            "{text}"
        );
        assert!(
            !text.contains("renkei_ipsec_ike_sa_established_age_seconds{"),
            "an age without an IKE SA:\n{text}"
        );
        // A counter does not vanish while the SA is down: the run's total stays.
        assert!(
            text.contains(&format!(
                "renkei_ipsec_child_sa_receive_bytes_total{labels} 54321\n"
            )),
            "{text}"
        );
        let wireguard = render(&document(), PeerSeries::PerPeer);
        assert!(
            !wireguard.contains("renkei_ipsec_ike_sa_established{"),
            "{wireguard}"
        );
    }

    /// `promtool check metrics` on `text`; its output when it fails.
    fn promtool(text: &str) {
        use std::io::Write as _;
        let mut child = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("promtool (scripts/install-deps installs it)");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("write");
        let output = child.wait_with_output().expect("promtool");
        assert!(
            output.status.success(),
            "promtool check metrics failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// A hub with 1000 facility peers, every fourth one down and every tenth in alarm.
    fn hub_document() -> StatusDocument {
        let mut doc = document();
        doc.role = "hub";
        let template = doc.tunnel.peers[0].clone();
        doc.tunnel.peers = (0..1000)
            .map(|i| {
                let mut peer = template.clone();
                peer.name = format!("facility-{i:04}");
                if i % 4 == 0 {
                    peer.state = LinkState::Down;
                }
                peer.alarm = i % 10 == 0;
                peer
            })
            .collect();
        doc
    }

    #[test]
    fn avl6_ops4_per_peer_series_can_be_switched_off_and_the_aggregates_stay() {
        let doc = hub_document();
        let per_peer = render(&doc, PeerSeries::PerPeer);
        let aggregate = render(&doc, PeerSeries::AggregateOnly);
        promtool(&per_peer);
        promtool(&aggregate);
        let aggregates = [
            "renkei_peers{state=\"up\"} 750\n",
            "renkei_peers{state=\"down\"} 250\n",
            "renkei_peers{state=\"idle\"} 0\n",
            "renkei_peers_in_alarm 100\n",
            "renkei_peers_receive_bytes_total 200000\n",
            "renkei_peers_transmit_bytes_total 100000\n",
        ];
        for text in [&per_peer, &aggregate] {
            for expected in aggregates {
                assert!(text.contains(expected), "{expected:?} missing");
            }
        }
        // Documented: 13 series per WireGuard peer.
        let of_one = per_peer
            .lines()
            .filter(|l| l.contains("peer=\"facility-0001\""))
            .count();
        assert_eq!(of_one, 13, "series of one peer");
        let samples = |text: &str| text.lines().filter(|l| !l.starts_with('#')).count();
        assert_eq!(samples(&per_peer) - samples(&aggregate), 13 * 1000);
        assert!(!aggregate.contains("peer=\""), "no per-peer series left");
        assert!(
            aggregate.contains("renkei_tunnel_state{state=\"up\"} 1\n"),
            "the rest stays"
        );
        assert!(samples(&aggregate) < 40, "{aggregate}");
    }

    /// A box with a hub group: which hub is active, which answer, and the failovers; a box
    /// without one has none of these families.
    #[test]
    fn avl4_ops4_a_hub_group_has_active_healthy_and_failover_metrics() {
        use crate::carrier::{HubSnapshot, HubsSnapshot};
        assert!(!render(&document(), PeerSeries::PerPeer).contains("renkei_hub_"));
        let member = |name: &str, active: bool, healthy: bool| HubSnapshot {
            name: name.to_string(),
            active,
            healthy,
            preferred: false,
            state: LinkState::Up,
            last_handshake: None,
            last_heard_age_secs: Some(3),
        };
        let mut doc = document();
        doc.hubs = Some(HubsSnapshot {
            active: "dc-osaka".to_string(),
            preferred: None,
            failovers: 2,
            failover_after_secs: 30,
            fail_back_after_secs: 120,
            members: vec![
                member("dc-tokyo", false, false),
                member("dc-osaka", true, true),
            ],
        });
        let text = render(&doc, PeerSeries::PerPeer);
        for expected in [
            "# TYPE renkei_hub_active gauge\n",
            "renkei_hub_active{hub=\"dc-tokyo\"} 0\n",
            "renkei_hub_active{hub=\"dc-osaka\"} 1\n",
            "renkei_hub_healthy{hub=\"dc-tokyo\"} 0\n",
            "renkei_hub_healthy{hub=\"dc-osaka\"} 1\n",
            "# TYPE renkei_hub_failovers_total counter\n",
            "renkei_hub_failovers_total 2\n",
        ] {
            assert!(text.contains(expected), "{expected:?} missing:\n{text}");
        }
    }

    /// The families the fleet's alert rules need beyond the tunnel's: the clock, the firmware
    /// and its last update, the last rollback, and which hub of a group is the primary. The
    /// families are declared on every box; samples only where there is something to say.
    #[test]
    fn ops5_clock_firmware_rollback_and_primary_hub_are_exported() {
        use crate::carrier::{HubSnapshot, HubsSnapshot};
        use crate::state::events::{ConfigChange, ConfigFacts, EventLog, Occurrence};
        let plain = render(&document(), PeerSeries::PerPeer);
        promtool(&plain);
        for expected in [
            "renkei_firmware_info{version=\"0.1.0\",booted_slot=\"A\"} 1\n",
            "# TYPE renkei_clock_synchronized gauge\n",
            "# TYPE renkei_config_last_rollback_timestamp_seconds gauge\n",
            "# TYPE renkei_firmware_last_update_timestamp_seconds gauge\n",
        ] {
            assert!(plain.contains(expected), "{expected:?} missing:\n{plain}");
        }
        for absent in [
            "\nrenkei_clock_synchronized ",
            "\nrenkei_config_last_rollback_timestamp_seconds ",
            "\nrenkei_firmware_last_update_timestamp_seconds{",
        ] {
            assert!(
                !plain.contains(absent),
                "{absent:?} without a fact:\n{plain}"
            );
        }

        let mut doc = document();
        doc.clock_synchronized = Some(false);
        doc.firmware.last_result = Some(crate::update::spool::UpdateResult {
            result: "fell_back".to_string(),
            version: Some("0.2.0".to_string()),
            reason: None,
            message: "the trial boot did not pass".to_string(),
            slot: Some("B".to_string()),
            by: "operator".to_string(),
            at: 1_700_000_000,
        });
        let log = EventLog::new();
        for change in [ConfigChange::RolledBack, ConfigChange::Confirmed] {
            log.push(Occurrence::Config {
                change,
                facts: ConfigFacts::default(),
            });
        }
        doc.events = log.snapshot();
        let rolled_back_at = doc.events[0].time_unix;
        let member = |name: &str, active: bool| HubSnapshot {
            name: name.to_string(),
            active,
            healthy: true,
            preferred: false,
            state: LinkState::Up,
            last_handshake: None,
            last_heard_age_secs: Some(3),
        };
        doc.hubs = Some(HubsSnapshot {
            active: "dc-osaka".to_string(),
            preferred: None,
            failovers: 1,
            failover_after_secs: 30,
            fail_back_after_secs: 120,
            members: vec![member("dc-tokyo", false), member("dc-osaka", true)],
        });
        let text = render(&doc, PeerSeries::PerPeer);
        promtool(&text);
        for expected in [
            "renkei_clock_synchronized 0\n".to_string(),
            "renkei_firmware_last_update_timestamp_seconds{result=\"fell_back\",version=\"0.2.0\"} 1700000000\n".to_string(),
            format!("renkei_config_last_rollback_timestamp_seconds {rolled_back_at}\n"),
            "renkei_hub_primary{hub=\"dc-tokyo\"} 1\n".to_string(),
            "renkei_hub_primary{hub=\"dc-osaka\"} 0\n".to_string(),
        ] {
            assert!(text.contains(&expected), "{expected:?} missing:\n{text}");
        }
        doc.clock_synchronized = Some(true);
        assert!(render(&doc, PeerSeries::PerPeer).contains("renkei_clock_synchronized 1\n"));
    }
}
