//! The data centre the booted disk image talks to in `image/boot-test`: a hub config and the
//! box's first config, made from typed values once the box's WireGuard public key is known.
//!
//! `image/boot-test` owns the network (a namespace with a TAP device for the QEMU guest) and the
//! processes; this module only writes what an operator would write at enrolment (operator's
//! guide, sections 2 and 3): the hub's own WireGuard key, the hub's config with the box as a
//! peer, and the box's `renkei.toml` naming the hub at its address on that network. The box is
//! a disclosing facility, so its tunnel is always on (NET-6) and comes up at boot without a LAN
//! user: the test can then see the handshake and reach the management API through it.
//!
//! For the IPsec boot, [`write_ipsec_box`] writes the same box's configuration with `[ipsec]`
//! instead of `[tunnel]` (an always-on SA to a concentrator at the hub's address), with the
//! default VICI socket: the one the image's `renkei-charon.service` serves. It is the box's
//! next version with `auto_confirm`, for the operator to push to the running WireGuard box.
//!
//! Both box configurations take firmware updates (`[update]`, AVL-5): bundles signed by the
//! update CA the installer places in RAUC's folder of the data partition (root's: the daemon
//! cannot change what root's RAUC trusts), for the image's RAUC compatible string; `image/boot-test` pushes them through the tunnel or SA.

use std::path::{Path, PathBuf};

use ipnet::IpNet;
use renkei::config::{
    Config, Direction, EspBackend, Facility, IpsecConfig, ManagementConfig, Meta, Paths,
    PeerConfig, PolicyConfig, PolicyMode, Role, TlsConfig, TunnelConfig, UpdateConfig,
    DEFAULT_MAX_BUNDLE_BYTES, DEFAULT_MTU, DEFAULT_RAUC_SYSTEM_CONF,
};

use crate::boxconfig::{service, socket, to_toml, Peer};
use crate::lab::{tls_config, Node, HUB_PORT};

/// The name of the box's and the hub's tunnel peer entries (`renkei status` shows them).
pub const BOX_PEER_NAME: &str = "hospital";
/// The box's peer entry for the hub, as in `config/disclosing.toml`.
pub const HUB_PEER_NAME: &str = "dc";
/// Keepalive on both sides of an always-on facility's tunnel, as `config/*.toml` use.
pub const KEEPALIVE_SECS: u16 = 25;
/// Port of the box's management API on its tunnel address, as `config/*.toml` use.
pub const MANAGEMENT_PORT: u16 = 7443;
/// The operator's client certificate name the box accepts (`management.operator_identities`).
pub const OPERATOR_IDENTITY: &str = "operator.renkei.example";
/// The update CA's file on the box, as the installer's guide (section 4) places it: in RAUC's
/// folder of the data partition, which only root writes (the keyring of the image's
/// /etc/rauc/system.conf), not in the daemon's /etc/renkei.
pub const UPDATE_CA_FILE: &str = "/data/rauc/update-ca.pem";
/// The image's RAUC compatible string (`RAUC_COMPATIBLE` in image/layout.sh).
pub const IMAGE_COMPATIBLE: &str = "renkei-x86_64";
/// The health check's deadline on a trial boot under QEMU's TCG: the box's SA is up some 10 s
/// after renkei is READY there, and the broken bundle's trial boot waits all of it.
pub const HEALTH_DEADLINE_SECS: u64 = 90;

/// The journal upload (LOG-4) of the box's WireGuard configuration: its outbound service on the
/// box's loopback, and the hub's inbound service on its tunnel address, both on this port.
pub use crate::journal_remote::JOURNAL_PORT;
/// Where the hub's inbound journal service delivers: the test's systemd-journal-remote, on the
/// namespace's loopback.
pub const COLLECTOR_ADDRESS: &str = "127.0.0.1:19533";
/// The box's inbound service on its tunnel address (an access-log record for the upload to
/// carry), for the operator's client certificate.
pub const DOCUMENTS_PORT: u16 = 8443;
/// Port of the test's document server, at the hub's address on the namespace's LAN.
pub const DOCUMENT_SERVER_PORT: u16 = 8080;
/// The hub's TLS files under its folder: the boot test issues them from the operator CA.
pub const HUB_TLS_DIR: &str = "tls";

/// Errors writing the hub's and the box's files.
#[derive(Debug, thiserror::Error)]
pub enum ImageHubError {
    /// The box's WireGuard public key from the console is not a key.
    #[error("box public key {key:?}: {source}")]
    BoxKey {
        key: String,
        source: renkei::keys::KeyError,
    },
    /// The hub's key could not be made.
    #[error("hub key {path}: {source}")]
    HubKey {
        path: PathBuf,
        source: renkei::keys::KeyError,
    },
    /// A folder or config file could not be written.
    #[error("{path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What [`write`] made.
pub struct ImageHubFiles {
    /// The hub's config (run it with `renkei run --config`).
    pub hub_config: PathBuf,
    /// The box's `renkei.toml`, for the installer to place on the data partition.
    pub box_config: PathBuf,
    /// The hub's WireGuard public key (base64), as the box's config names it.
    pub hub_public_key: String,
}

/// Writes, under `dir`: `hub/wg.key` (+ `.pub`), `hub/renkei.toml` (the hub on `interface`,
/// listening on [`HUB_PORT`], with the box as its one peer) and `box/renkei.toml` (the box's
/// config: the hub at `hub_endpoint`, management API on its tunnel address, files named as the
/// installer's guide places them).
pub fn write(
    dir: &Path,
    box_public_key: &str,
    interface: &str,
    hub_endpoint: std::net::SocketAddr,
) -> Result<ImageHubFiles, ImageHubError> {
    renkei::keys::decode_key(box_public_key).map_err(|source| ImageHubError::BoxKey {
        key: box_public_key.to_string(),
        source,
    })?;
    let hub_dir = dir.join("hub");
    let box_dir = dir.join("box");
    for folder in [&hub_dir, &box_dir] {
        std::fs::create_dir_all(folder).map_err(|source| ImageHubError::Write {
            path: folder.clone(),
            source,
        })?;
    }
    let hub_key = hub_dir.join("wg.key");
    let public = renkei::keys::write_keypair(&hub_key).map_err(|source| ImageHubError::HubKey {
        path: hub_key.clone(),
        source,
    })?;
    let hub_public_key = renkei::keys::encode_key(&public);
    let files = ImageHubFiles {
        hub_config: hub_dir.join("renkei.toml"),
        box_config: box_dir.join("renkei.toml"),
        hub_public_key: hub_public_key.clone(),
    };
    let writes = [
        (
            &files.hub_config,
            hub_config(&hub_dir, box_public_key, interface),
        ),
        (&files.box_config, box_config(&hub_public_key, hub_endpoint)),
    ];
    for (path, config) in writes {
        std::fs::write(path, to_toml(&config)).map_err(|source| ImageHubError::Write {
            path: path.clone(),
            source,
        })?;
    }
    Ok(files)
}

/// The hub: always on, the box as its one peer (keepalives from the hub too, as for every
/// always-on facility in `config/hub.toml`), its state and control socket under `dir`.
pub fn hub_config(dir: &Path, box_public_key: &str, interface: &str) -> Config {
    Config {
        meta: Meta {
            version: 1,
            description: Some("image boot test hub".to_string()),
            box_identity: Some(Node::Hub.tls_name().to_string()),
        },
        facility: Facility {
            name: "Renkei Boot Test Data Centre".to_string(),
            role: Role::Hub,
        },
        paths: Paths {
            state_dir: dir.join("state"),
            runtime_dir: dir.join("run"),
            ..Paths::default()
        },
        tunnel: Some(TunnelConfig {
            interface: interface.to_string(),
            private_key_file: PathBuf::from("wg.key"),
            listen_port: HUB_PORT,
            address: tunnel_net(Node::Hub),
            mtu: DEFAULT_MTU,
            handshakes_per_sec: None,
            offloads: true,
            policy: PolicyConfig::default(),
            peers: vec![PeerConfig {
                name: BOX_PEER_NAME.to_string(),
                public_key: box_public_key.to_string(),
                endpoint: None,
                allowed_ips: vec![host_net(Node::Hospital)],
                persistent_keepalive_secs: Some(KEEPALIVE_SECS),
            }],
            failover: None,
        }),
        closed: None,
        ipsec: None,
        tls: Some(TlsConfig {
            certificate_file: dir.join(HUB_TLS_DIR).join("hub.crt"),
            private_key_file: dir.join(HUB_TLS_DIR).join("hub.key"),
            ca_file: dir.join(HUB_TLS_DIR).join("operator-ca.crt"),
            crl_file: None,
        }),
        // The operator's collector behind the hub: the box's journal upload arrives here.
        services: vec![service(
            "journal",
            Direction::Inbound,
            socket(&format!("{}:{JOURNAL_PORT}", Node::Hub.tunnel_address())),
            COLLECTOR_ADDRESS,
            Peer::Allowed(Node::Hospital.tls_name()),
        )],
        status: None,
        management: None,
        update: None,
        time: None,
        logs: None,
    }
}

/// Writes `box-ipsec/renkei.toml` under `dir`: [`ipsec_box_config`]. Returns its path.
pub fn write_ipsec_box(
    dir: &Path,
    box_wan: std::net::IpAddr,
    concentrator: std::net::IpAddr,
) -> Result<PathBuf, ImageHubError> {
    let folder = dir.join("box-ipsec");
    std::fs::create_dir_all(&folder).map_err(|source| ImageHubError::Write {
        path: folder.clone(),
        source,
    })?;
    let path = folder.join("renkei.toml");
    let config = ipsec_box_config(box_wan, concentrator);
    std::fs::write(&path, to_toml(&config)).map_err(|source| ImageHubError::Write {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

/// The same box on an IPsec network (NET-9): its tunnel address as its own IPsec address,
/// IKE from its LAN address `box_wan` to the concentrator at `concentrator` (which proves the
/// hub's name), always on, the management API on its IPsec address, the profile's default
/// proposals, and no `vici_socket`: the daemon's default, where the image's charon unit puts it.
/// It is the box's next version, with `auto_confirm`: the boot test pushes it to the running
/// WireGuard box, which confirms it once the operator reaches it through the SA.
pub fn ipsec_box_config(box_wan: std::net::IpAddr, concentrator: std::net::IpAddr) -> Config {
    let mut config = box_base();
    config.meta.version = IPSEC_CONFIG_VERSION;
    config.meta.description = Some("image boot test: IPsec configuration".to_string());
    if let Some(management) = config.management.as_mut() {
        management.auto_confirm = true;
    }
    config.ipsec = Some(IpsecConfig {
        interface: "renkei-ipsec".to_string(),
        address: host_net(Node::Hospital),
        wan_address: box_wan,
        remote_address: concentrator,
        remote_id: Node::Hub.tls_name().to_string(),
        local_id: None,
        data_centre_prefixes: vec![host_net(Node::Hub)],
        ike_proposals: renkei::config::proposal::default_ike_proposals(),
        esp_proposals: renkei::config::proposal::default_esp_proposals(),
        mode: Some(PolicyMode::AlwaysOn),
        idle_timeout_secs: IPSEC_IDLE_TIMEOUT_SECS,
        connect_timeout_secs: IPSEC_CONNECT_TIMEOUT_SECS,
        // Always on: check-ins do not apply (the config file's defaults).
        checkin_interval_secs: 900,
        checkin_window_secs: 60,
        alarm_after_secs: IPSEC_ALARM_AFTER_SECS,
        esp_backend: EspBackend::Libipsec,
        esp_interface: None,
        vici_socket: None,
        charon_log_file: None,
        failover: None,
    });
    config
}

/// The IPsec configuration's `meta.version`: the one after the box's first.
pub const IPSEC_CONFIG_VERSION: u64 = 2;
/// The IPsec box's timers, as `config/ipsec.toml` has them.
const IPSEC_IDLE_TIMEOUT_SECS: u64 = 300;
const IPSEC_CONNECT_TIMEOUT_SECS: u64 = 10;
const IPSEC_ALARM_AFTER_SECS: u64 = 180;

/// The box's first config, as the operator writes it from `config/disclosing.toml` (operator's
/// guide, section 3): a disclosing facility, always on, its one peer the hub at
/// `hub_endpoint`, the management API on its tunnel address, relative file names as the
/// installer's guide (section 4) places the files. Default paths: the image's units use them.
pub fn box_config(hub_public_key: &str, hub_endpoint: std::net::SocketAddr) -> Config {
    let mut config = box_base();
    config.tunnel = Some(TunnelConfig {
        interface: "renkei0".to_string(),
        private_key_file: PathBuf::from("wg.key"),
        listen_port: 0,
        address: tunnel_net(Node::Hospital),
        mtu: DEFAULT_MTU,
        handshakes_per_sec: None,
        offloads: true,
        policy: PolicyConfig {
            mode: Some(PolicyMode::AlwaysOn),
            ..PolicyConfig::default()
        },
        peers: vec![PeerConfig {
            name: HUB_PEER_NAME.to_string(),
            public_key: hub_public_key.to_string(),
            endpoint: Some(hub_endpoint.to_string()),
            allowed_ips: vec![host_net(Node::Hub)],
            persistent_keepalive_secs: Some(KEEPALIVE_SECS),
        }],
        failover: None,
    });
    // A service the operator's client certificate reaches through the tunnel (its records are
    // the access log the upload carries), and the journal upload through the hub (LOG-4). The
    // IPsec configuration has neither: the hub is gone then.
    config.services = vec![service(
        "documents",
        Direction::Inbound,
        socket(&format!(
            "{}:{DOCUMENTS_PORT}",
            Node::Hospital.tunnel_address()
        )),
        &std::net::SocketAddr::new(hub_endpoint.ip(), DOCUMENT_SERVER_PORT).to_string(),
        Peer::Allowed(OPERATOR_IDENTITY),
    )];
    crate::journal_remote::uploading(&mut config);
    config
}

/// What the box's configurations share, without a carrier: its identity, TLS files and the
/// management API on its tunnel address.
fn box_base() -> Config {
    Config {
        meta: Meta {
            version: 1,
            description: Some("image boot test: first configuration".to_string()),
            box_identity: Some(Node::Hospital.tls_name().to_string()),
        },
        facility: Facility {
            name: "Renkei Boot Test Hospital".to_string(),
            role: Role::Disclosing,
        },
        paths: Paths::default(),
        tunnel: None,
        closed: None,
        ipsec: None,
        tls: Some(tls_config()),
        services: Vec::new(),
        status: None,
        management: Some(ManagementConfig {
            listen: std::net::SocketAddr::new(
                Node::Hospital
                    .tunnel_address()
                    .parse()
                    .expect("a lab tunnel address"),
                MANAGEMENT_PORT,
            ),
            operator_ca_file: PathBuf::from("operator/ca.crt"),
            operator_crl_file: None,
            operator_identities: vec![OPERATOR_IDENTITY.to_string()],
            operator_signing_key_file: Some(PathBuf::from("operator/signing.pub.pem")),
            operator_signing_key: None,
            next_operator_signing_key_file: None,
            next_operator_signing_key: None,
            confirm_timeout_secs: 120,
            auto_confirm: false,
            max_push_bytes: renkei::config::DEFAULT_MAX_PUSH_BYTES,
        }),
        update: Some(UpdateConfig {
            ca_file: PathBuf::from(UPDATE_CA_FILE),
            compatible: IMAGE_COMPATIBLE.to_string(),
            max_bundle_bytes: DEFAULT_MAX_BUNDLE_BYTES,
            spool_dir: None,
            allow_downgrade_to: None,
            health_deadline_secs: HEALTH_DEADLINE_SECS,
            system_conf: PathBuf::from(DEFAULT_RAUC_SYSTEM_CONF),
        }),
        time: None,
        logs: None,
    }
}

/// `node`'s tunnel address with the overlay's /24.
fn tunnel_net(node: Node) -> IpNet {
    format!("{}/24", node.tunnel_address())
        .parse()
        .expect("a lab tunnel address with its prefix")
}

/// The route to `node`'s tunnel address alone.
fn host_net(node: Node) -> IpNet {
    format!("{}/32", node.tunnel_address())
        .parse()
        .expect("a lab tunnel address")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Removes the test's folder when the test ends, also on failure.
    struct TempDir(PathBuf);

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn net6_image_hub_and_box_configs_name_each_other_and_pass_the_offline_check() {
        let dir =
            TempDir(std::env::temp_dir().join(format!("renkei-image-hub-{}", std::process::id())));
        let _ = std::fs::remove_dir_all(&dir.0);
        let box_key = renkei::keys::encode_key(&renkei::keys::public_key_of(
            &renkei::keys::generate_private_key(),
        ));
        let endpoint = "198.18.50.1:51820".parse().expect("an address");
        let files = write(&dir.0, &box_key, "rkimgtest", endpoint).expect("written");
        let check = |path: &Path| -> Config {
            renkei::config::load_with(path, renkei::config::Files::Skip)
                .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()))
        };
        let hub = check(&files.hub_config);
        let boxed = check(&files.box_config);
        let hub_peer = &hub.tunnel.as_ref().expect("[tunnel]").peers[0];
        let box_peer = &boxed.tunnel.as_ref().expect("[tunnel]").peers[0];
        assert_eq!(hub_peer.public_key, box_key);
        assert_eq!(box_peer.public_key, files.hub_public_key);
        assert_eq!(box_peer.endpoint.as_deref(), Some("198.18.50.1:51820"));
        assert_eq!(boxed.policy_mode(), PolicyMode::AlwaysOn);
        let update = boxed.update.as_ref().expect("[update]");
        assert_eq!(update.compatible, IMAGE_COMPATIBLE);
        assert_eq!(update.ca_file, Path::new(UPDATE_CA_FILE));
    }

    #[test]
    fn net9_image_hub_ipsec_box_config_passes_the_offline_check_with_the_default_vici_socket() {
        let dir = TempDir(
            std::env::temp_dir().join(format!("renkei-image-hub-ipsec-{}", std::process::id())),
        );
        let _ = std::fs::remove_dir_all(&dir.0);
        let wan = "198.18.50.20".parse().expect("an address");
        let concentrator = "198.18.50.1".parse().expect("an address");
        let path = write_ipsec_box(&dir.0, wan, concentrator).expect("written");
        let config = renkei::config::load_with(&path, renkei::config::Files::Skip)
            .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
        assert!(config.tunnel.is_none());
        let ipsec = config.ipsec.as_ref().expect("[ipsec]");
        assert_eq!(ipsec.wan_address, wan);
        assert_eq!(ipsec.remote_address, concentrator);
        assert_eq!(ipsec.vici_socket, None);
        assert_eq!(config.policy_mode(), PolicyMode::AlwaysOn);
        let management = config.management.as_ref().expect("[management]");
        assert_eq!(management.listen.ip(), ipsec.address.addr());
        assert_eq!(config.meta.version, IPSEC_CONFIG_VERSION);
        assert!(management.auto_confirm, "pushed with auto_confirm");
    }

    #[test]
    fn avl5_image_hub_box_takes_bundles_for_the_images_compatible_string() {
        let layout = concat!(env!("CARGO_MANIFEST_DIR"), "/../image/layout.sh");
        let text = std::fs::read_to_string(layout).expect("image/layout.sh");
        let wanted = format!("RAUC_COMPATIBLE={IMAGE_COMPATIBLE}");
        assert!(
            text.lines().any(|line| line.trim() == wanted),
            "image/layout.sh has no line {wanted}"
        );
    }

    #[test]
    fn net6_image_hub_refuses_a_box_key_that_is_not_a_key() {
        let dir = TempDir(
            std::env::temp_dir().join(format!("renkei-image-hub-bad-{}", std::process::id())),
        );
        let endpoint = "198.18.50.1:51820".parse().expect("an address");
        let result = write(&dir.0, "not a key", "rkimgtest", endpoint);
        assert!(matches!(result, Err(ImageHubError::BoxKey { .. })));
        assert!(!dir.0.exists(), "nothing is written for a bad key");
    }
}
