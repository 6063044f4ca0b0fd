//! Box configs as typed values: tests change a field of a `renkei::config::Config` instead of
//! editing TOML text, so an edit that names a field the schema lacks fails to compile rather
//! than silently changing nothing.
//!
//! A `Config` is written as TOML through its `Serialize` derive; the daemon loads it back to
//! the same value (`examples_round_trip_through_serialize` in the daemon's tests). Raw text
//! stays possible through [`ConfigText`] for tests that write a broken config on purpose.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use renkei::config::{Config, Direction, MinTls, PeerConfig, ServiceConfig};
use serde::Serialize;

/// Something that can be written as a box's config file: a typed `Config`, or raw text for
/// tests that need text on purpose (invalid TOML, a tampered file, docs run as written).
pub trait ConfigText {
    /// The file's contents.
    fn config_text(&self) -> String;
}

impl ConfigText for Config {
    fn config_text(&self) -> String {
        to_toml(self)
    }
}

impl ConfigText for str {
    fn config_text(&self) -> String {
        self.to_string()
    }
}

impl ConfigText for String {
    fn config_text(&self) -> String {
        self.clone()
    }
}

/// `config` as TOML. A `Config` built by the lab only holds UTF-8 paths and strings, which
/// always serialise, so a failure is a bug of the test kit and ends the test.
pub fn to_toml(config: &Config) -> String {
    toml::to_string(config).expect("a lab Config serialises as TOML")
}

/// Who the TLS peer of a service must be.
pub enum Peer<'a> {
    /// Outbound: the name the server's certificate must carry.
    ServerName(&'a str),
    /// Inbound: the one client identity allowed.
    Allowed(&'a str),
}

/// One proxied service with every tunable at its default.
pub fn service(
    name: &str,
    direction: Direction,
    listen: SocketAddr,
    target: &str,
    peer: Peer,
) -> ServiceConfig {
    let (server_name, allowed_identities) = match peer {
        Peer::ServerName(server) => (Some(server.to_string()), Vec::new()),
        Peer::Allowed(identity) => (None, vec![identity.to_string()]),
    };
    ServiceConfig {
        name: name.to_string(),
        direction,
        listen,
        target: target.to_string(),
        server_name,
        allowed_identities,
        min_tls: MinTls::Tls13,
        max_connections: 256,
        handshake_timeout_secs: 10,
        idle_timeout_secs: 600,
        tcp_user_timeout_secs: renkei::config::DEFAULT_TCP_USER_TIMEOUT_SECS,
    }
}

/// One `[[service]]` table as text, for tests that append it to a config they keep as text.
pub fn service_text(service: &ServiceConfig) -> String {
    #[derive(Serialize)]
    struct Services<'a> {
        service: [&'a ServiceConfig; 1],
    }
    let text = toml::to_string(&Services { service: [service] })
        .expect("a lab ServiceConfig serialises as TOML");
    format!("\n{text}")
}

/// `value` as a `[name]` table, for tests that append a section to a config kept as text.
pub fn section_text(name: &str, value: &impl Serialize) -> String {
    let mut table = toml::Table::new();
    table.insert(
        name.to_string(),
        toml::Value::try_from(value).expect("a lab config section serialises as TOML"),
    );
    let text = toml::to_string(&table).expect("a lab config section serialises as TOML");
    format!("\n{text}")
}

/// The tunnel peer called `name`; a config without it is a mistake of the test.
pub fn peer_mut<'a>(config: &'a mut Config, name: &str) -> &'a mut PeerConfig {
    config
        .tunnel
        .as_mut()
        .expect("a config with [tunnel]")
        .peers
        .iter_mut()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("the config has no tunnel peer {name:?}"))
}

/// `count` facility peers for a hub (`facility-0001`, ...): each with a key of its own,
/// generated here, and one /32 counted up from 198.19.4.1; no endpoints, so they stay idle
/// unless a test brings a real peer up with that key. Built from typed values.
pub fn facility_peers(count: u32) -> Vec<PeerConfig> {
    let first = u32::from(std::net::Ipv4Addr::new(198, 19, 4, 1));
    (0..count)
        .map(|i| {
            let secret = renkei::keys::generate_private_key();
            let address = std::net::Ipv4Addr::from(first + i);
            PeerConfig {
                name: format!("facility-{:04}", i + 1),
                public_key: renkei::keys::encode_key(&renkei::keys::public_key_of(&secret)),
                endpoint: None,
                allowed_ips: vec![ipnet::IpNet::from(std::net::IpAddr::from(address))],
                persistent_keepalive_secs: None,
            }
        })
        .collect()
}

/// The service called `name`; a config without it is a mistake of the test.
pub fn service_mut<'a>(config: &'a mut Config, name: &str) -> &'a mut ServiceConfig {
    config
        .services
        .iter_mut()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("the config has no service {name:?}"))
}

/// Makes every file `config` names absolute under `dir` (the config's folder, which relative
/// paths are relative to): the same files, but a copy of the config checks out anywhere.
pub fn make_file_paths_absolute(config: &mut Config, dir: &Path) {
    let absolute = |path: &mut PathBuf| {
        if path.is_relative() {
            *path = dir.join(&*path);
        }
    };
    if let Some(tunnel) = &mut config.tunnel {
        absolute(&mut tunnel.private_key_file);
    }
    if let Some(tls) = &mut config.tls {
        absolute(&mut tls.certificate_file);
        absolute(&mut tls.private_key_file);
        absolute(&mut tls.ca_file);
        tls.crl_file.iter_mut().for_each(absolute);
    }
    if let Some(status) = &mut config.status {
        status.certificate_file.iter_mut().for_each(absolute);
        status.private_key_file.iter_mut().for_each(absolute);
    }
    if let Some(management) = &mut config.management {
        absolute(&mut management.operator_ca_file);
        management.operator_crl_file.iter_mut().for_each(absolute);
        management
            .operator_signing_key_file
            .iter_mut()
            .for_each(absolute);
        management
            .next_operator_signing_key_file
            .iter_mut()
            .for_each(absolute);
    }
}

/// A socket address the test kit writes as a constant; not parsing is a bug of the kit.
pub fn socket(addr: &str) -> SocketAddr {
    addr.parse()
        .unwrap_or_else(|e| panic!("{addr:?} is not a socket address: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_settings_are_made_absolute_and_nothing_else_changes() {
        let mut config: Config = toml::from_str(
            "[meta]\nversion = 1\n[facility]\nname = \"x\"\nrole = \"hub\"\n\
             [tunnel]\nprivate_key_file = \"wg.key\"\naddress = \"198.19.0.1/24\"\n\
             [tls]\ncertificate_file = \"tls/box.crt\"\nprivate_key_file = \"tls/box.key\"\n\
             ca_file = \"/etc/ca.crt\"\n",
        )
        .expect("parses");
        let mut expected = config.clone();
        make_file_paths_absolute(&mut config, Path::new("/tmp/renkei-lab-x/dc"));
        expected.tunnel.as_mut().expect("[tunnel]").private_key_file =
            PathBuf::from("/tmp/renkei-lab-x/dc/wg.key");
        if let Some(tls) = &mut expected.tls {
            tls.certificate_file = PathBuf::from("/tmp/renkei-lab-x/dc/tls/box.crt");
            tls.private_key_file = PathBuf::from("/tmp/renkei-lab-x/dc/tls/box.key");
        }
        assert_eq!(config, expected);
    }
}
