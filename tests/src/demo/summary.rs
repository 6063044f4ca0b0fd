//! The human summary of a lab that is up.

use std::net::Ipv4Addr;
use std::path::Path;

use crate::lab::LabCarrier;

use super::record::LabRecord;
/// A site's /24 on the lab's closed network, from a box's address there.
fn closed_site_prefix(address: &str) -> String {
    address
        .parse::<Ipv4Addr>()
        .ok()
        .and_then(|ip| ipnet::Ipv4Net::new(ip, 24).ok())
        .map_or_else(|| address.to_string(), |net| net.trunc().to_string())
}

/// The human summary of a lab that is up.
pub fn summary(record: &LabRecord, state_dir: &Path) -> String {
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    let closed = record.carrier == LabCarrier::Closed.name();
    let ipsec = record.carrier == LabCarrier::Ipsec.name();
    line(format!(
        "renkei lab {} is up on {}: every address is from 198.18.0.0/15 (record: {})",
        record.id,
        if closed {
            "a closed network, routed, no tunnel (carrier: closed)"
        } else if ipsec {
            "IKEv2/IPsec, each facility's charon to the data centre's strongSwan concentrator \
             (carrier: ipsec)"
        } else {
            "renkei's WireGuard tunnels (carrier: wireguard)"
        },
        LabRecord::path(state_dir).display()
    ));
    line(String::new());
    line("Network".into());
    if let Some(wan) = record.namespaces.iter().find(|n| n.ends_with("-wan")) {
        let what = if closed {
            let sites: Vec<String> = record
                .nodes
                .iter()
                .map(|n| format!("{} {}", n.name, closed_site_prefix(&n.wan_address)))
                .collect();
            format!(
                "the carrier's router between one /24 per site ({}): a facility is routed to \
                 the data centre only; no tunnel",
                sites.join(", ")
            )
        } else if ipsec {
            "bridge br0 joining every box's wan0 (198.18.0.0/24); IPsec SAs between each \
             facility's own /32 and the data centre's 198.19.1.1 (ESP in UDP 4500)"
                .to_string()
        } else {
            "bridge br0 joining every box's wan0 (198.18.0.0/24); tunnel overlay 198.19.0.0/24"
                .to_string()
        };
        line(format!("  {:<12} ns {wan:<20} {what}", "WAN"));
    }
    for n in &record.nodes {
        if let (Some(ns), Some(lan)) = (&n.lan_namespace, &n.lan_address) {
            line(format!(
                "  {:<12} ns {:<20} the {} LAN (198.18.{}.0/24 behind the box's lan0 {})",
                format!("{}-lan", n.name),
                ns,
                n.name,
                lan.split('.').nth(2).unwrap_or("?"),
                lan
            ));
        }
    }
    line(String::new());
    line("Boxes".into());
    for n in &record.nodes {
        let idle = n
            .idle_timeout_secs
            .map(|s| format!(", idle after {s} s"))
            .unwrap_or_default();
        // WAN and tunnel address, or on a closed network the one address on the WAN
        // interface that the services, metrics and management API use.
        let link = match &n.tunnel_address {
            Some(tunnel) => format!("WAN {:<12} tunnel {tunnel:<12}", n.wan_address),
            // IPsec: the WAN address for IKE and ESP, the link address inside the SA.
            None if n.link_address != n.wan_address => format!(
                "WAN {:<12} link {:<12} on {:<11}",
                n.wan_address, n.link_address, n.interface
            ),
            None => format!("link {:<12} on {:<11}", n.link_address, n.interface),
        };
        line(format!(
            "  {:<9} {:<11} ns {:<20} {link} LAN {:<12} {}{idle}  pid {}",
            n.name,
            n.role,
            n.namespace,
            n.lan_address.as_deref().unwrap_or("-"),
            n.tunnel_policy,
            n.process.pid
        ));
        line(format!(
            "            config {}  log {}",
            n.config.display(),
            n.log.display()
        ));
    }
    if !record.charons.is_empty() {
        line(
            "  strongSwan charons (the concentrator configured by hand; each facility's from \
             `renkei charon-conf`; they carry ESP only, renkei terminates every TLS):"
                .into(),
        );
        for charon in &record.charons {
            line(format!("    {:<40} pid {}", charon.name, charon.pid));
        }
    }
    line(String::new());
    line("LAN hosts".into());
    if let Some(server) = &record.document_server {
        line(format!(
            "  document server  ns {:<20} {}  pid {}  serving {}",
            server.namespace,
            server.url,
            server.process.pid,
            server.dir.display()
        ));
        for doc in &server.documents {
            line(format!(
                "      {:<22} {:>9} bytes  sha256 {}",
                doc.name, doc.bytes, doc.sha256
            ));
        }
    }
    for client in &record.clients {
        line(format!(
            "  {:<16} ns {:<20} {}",
            client.name, client.namespace, client.address
        ));
    }
    line(String::new());
    line(format!(
        "TLS services (mutual TLS, CRYPTREC high-security profile, {})",
        if closed {
            "across the closed network"
        } else if ipsec {
            "inside the IPsec SAs"
        } else {
            "inside the tunnel"
        }
    ));
    for n in &record.nodes {
        for l in &n.listeners {
            line(format!(
                "  {:<9} {:<19} {:<8} {:<18} -> {:<18} {}",
                n.name, l.service, l.direction, l.listen, l.target, l.peer
            ));
        }
    }
    line(String::new());
    line("Status pages (admin passwords of this run)".into());
    for n in &record.nodes {
        let p = &n.status_page;
        line(format!(
            "  {:<9} {:<28} from ns {:<20} password {}",
            n.name, p.url, p.open_from_namespace, p.admin_password,
        ));
        line(format!(
            "            in a browser on this machine: {} ({})",
            p.browser_url,
            match &p.ca_file {
                Some(ca) => format!("certificate from the lab CA {}", ca.display()),
                None => "plain HTTP, on loopback only".into(),
            }
        ));
        line(format!(
            "            metrics {} (operator client certificate, from the data centre)",
            p.metrics_url
        ));
    }
    line("Management API (operator config push)".into());
    for n in &record.nodes {
        line(format!("  {:<9} {}", n.name, n.management.url));
    }
    if let Some(push) = &record.config_push {
        line(format!(
            "  example push for the {}: {} (version {} -> {}, signed: {}, signer {})",
            push.node,
            push.config.display(),
            push.running_version,
            push.version,
            push.signature.display(),
            push.signer
        ));
    }
    if let Some(pki) = &record.pki {
        line(format!(
            "Operator PKI: CA {}  client {}  signing key {}",
            pki.ca_certificate.display(),
            pki.operator_certificate.display(),
            pki.signing_key.display()
        ));
    }
    line(String::new());
    line("Try".into());
    for c in &record.commands {
        line(format!("  # {}", c.what));
        if !c.shell.is_empty() {
            line(format!("  {}", c.shell));
        }
    }
    out
}
