//! What the IPsec carrier is built from, read from the config and the files it names: the
//! connection charon gets (`connection.rs`), the key and certificates it loads first, and the
//! strongswan.conf charon must run with (`charon_conf.rs`, printed by `renkei charon-conf`).
//!
//! The box authenticates with its TLS identity (`[tls]`): the key and certificate the operator
//! CA issued at enrolment; the concentrator's certificate must chain to the same CA
//! (`tls.ca_file`). One identity, one enrolment, one CA to rotate.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{Config, EspBackend, IpsecConfig, PolicyMode};

use super::charon_conf::{CharonSettings, KernelBackend, FAST_RETRANSMIT};
use super::connection::{ConnectionSettings, InnerAddress, StartPolicy};

/// The connection's name in charon (and its CHILD SA's).
pub const CONNECTION_NAME: &str = "renkei-dc";

/// Why the carrier's settings could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The config has no `[ipsec]` (or no `[tls]`, or no identity): validation prevents it.
    #[error("the config has no complete [ipsec] section: {0}")]
    NotConfigured(&'static str),
    /// A PEM file could not be read.
    #[error("cannot read {file}: {source}")]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A PEM file holds no certificate.
    #[error("{0} holds no PEM certificate")]
    NoCertificate(PathBuf),
}

/// Everything the backend loads into charon, and how it keeps the SA.
#[derive(Debug, Clone)]
pub struct IpsecSettings {
    /// The `[ipsec]` section as written.
    pub ipsec: IpsecConfig,
    /// always_on or on_demand.
    pub mode: PolicyMode,
    /// charon's VICI socket.
    pub vici_socket: PathBuf,
    /// The connection loaded with `load-conn`.
    pub connection: ConnectionSettings,
    /// The box's private key (PEM).
    pub key_pem: String,
    /// Intermediate certificates after the box's own (PEM each).
    pub intermediates: Vec<String>,
}

impl PartialEq for IpsecSettings {
    /// Equal when the config and the files read are: nothing charon has would change.
    fn eq(&self, other: &Self) -> bool {
        self.ipsec == other.ipsec
            && self.mode == other.mode
            && self.vici_socket == other.vici_socket
            && self.key_pem == other.key_pem
            && self.intermediates == other.intermediates
            && self.connection.certificate_pem == other.connection.certificate_pem
            && self.connection.remote_ca_pems == other.connection.remote_ca_pems
            && self.connection.local_id == other.connection.local_id
    }
}

fn read(file: &Path) -> Result<String, SettingsError> {
    std::fs::read_to_string(file).map_err(|source| SettingsError::Read {
        file: file.to_path_buf(),
        source,
    })
}

/// The PEM certificate blocks of `text`, in order.
pub fn certificate_blocks(text: &str) -> Vec<String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let Some(end) = rest[start..].find(END) else {
            break;
        };
        let stop = start + end + END.len();
        blocks.push(format!("{}\n", &rest[start..stop]));
        rest = &rest[stop..];
    }
    blocks
}

/// Every certificate of the CA file, in order: the concentrator may chain to any of them (an
/// operator rolling its CA over lists the old and the new one, as TLS already accepts).
fn remote_cas(ca_file: &Path) -> Result<Vec<String>, SettingsError> {
    let cas = certificate_blocks(&read(ca_file)?);
    if cas.is_empty() {
        return Err(SettingsError::NoCertificate(ca_file.to_path_buf()));
    }
    Ok(cas)
}

impl IpsecSettings {
    /// Reads the settings of `config`'s `[ipsec]`, with the TLS files it authenticates with.
    pub fn of(config: &Config) -> Result<Self, SettingsError> {
        let ipsec = config
            .ipsec
            .clone()
            .ok_or(SettingsError::NotConfigured("[ipsec]"))?;
        let tls = config
            .tls
            .as_ref()
            .ok_or(SettingsError::NotConfigured("[tls]"))?;
        let local_id = config
            .ipsec_local_id()
            .ok_or(SettingsError::NotConfigured("local_id"))?
            .to_string();
        let vici_socket = config
            .vici_socket()
            .ok_or(SettingsError::NotConfigured("vici_socket"))?;
        let mut chain = certificate_blocks(&read(&tls.certificate_file)?).into_iter();
        let certificate_pem = chain
            .next()
            .ok_or_else(|| SettingsError::NoCertificate(tls.certificate_file.clone()))?;
        let remote_ca_pems = remote_cas(&tls.ca_file)?;
        let mode = config.policy_mode();
        let connection = ConnectionSettings {
            name: CONNECTION_NAME.to_string(),
            local_address: ipsec.wan_address,
            remote_address: ipsec.remote_address,
            local_id,
            remote_id: ipsec.remote_id.clone(),
            certificate_pem,
            remote_ca_pems,
            ike_proposals: ipsec.ike_proposals.clone(),
            esp_proposals: ipsec.esp_proposals.clone(),
            inner_address: InnerAddress::Configured(ipsec.address.addr()),
            remote_prefixes: ipsec.data_centre_prefixes.clone(),
            policy: match mode {
                PolicyMode::AlwaysOn => StartPolicy::AlwaysOn,
                PolicyMode::OnDemand => StartPolicy::OnDemand,
            },
        };
        Ok(IpsecSettings {
            key_pem: read(&tls.private_key_file)?,
            intermediates: chain.collect(),
            ipsec,
            mode,
            vici_socket,
            connection,
        })
    }

    /// on_demand: how long a connection waits for the CHILD SA.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.ipsec.connect_timeout_secs)
    }

    /// on_demand: how long without ESP traffic before the SAs are terminated.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.ipsec.idle_timeout_secs)
    }

    /// on_demand: how often and for how long the SA comes up without LAN demand, so the
    /// operator reaches the box; `None` when the box does not check in (always-on, or 0).
    pub fn checkins(&self) -> Option<(Duration, Duration)> {
        (self.mode == PolicyMode::OnDemand && self.ipsec.checkin_interval_secs > 0).then(|| {
            (
                Duration::from_secs(self.ipsec.checkin_interval_secs),
                Duration::from_secs(self.ipsec.checkin_window_secs),
            )
        })
    }

    /// always_on: how long without an established SA before the alarm.
    pub fn alarm_after(&self) -> Duration {
        Duration::from_secs(self.ipsec.alarm_after_secs)
    }
}

/// The strongswan.conf charon must run with for `config` (`None` without `[ipsec]`): the
/// same text whoever starts charon (the image's unit, the lab's kit).
pub fn charon_settings(config: &Config) -> Option<CharonSettings> {
    let ipsec = config.ipsec.as_ref()?;
    Some(CharonSettings {
        vici_socket: config.vici_socket()?,
        kernel: match ipsec.esp_backend {
            EspBackend::Libipsec => KernelBackend::Libipsec,
            EspBackend::Kernel => KernelBackend::Netlink,
        },
        log_file: ipsec.charon_log_file.clone(),
        retransmit: FAST_RETRANSMIT,
        // Only renkei decides when an on-demand SA goes: by its idle timeout.
        inactivity_close_ike: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net9_a_chain_file_splits_into_the_box_certificate_and_intermediates() {
        let one = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----";
        let two = "-----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----";
        let text = format!("subject=box\n{one}\n\nissuer\n{two}\n");
        let blocks = certificate_blocks(&text);
        assert_eq!(blocks, [format!("{one}\n"), format!("{two}\n")]);
        assert!(certificate_blocks("no certificate").is_empty());
        assert!(certificate_blocks("-----BEGIN CERTIFICATE-----\ncut").is_empty());
    }

    #[test]
    fn net10_every_ca_of_the_ca_file_is_trusted_for_the_concentrator() {
        let dir = std::env::temp_dir().join(format!("renkei-ipsec-cas-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        struct Remove(PathBuf);
        impl Drop for Remove {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        let _remove = Remove(dir.clone());
        let old = "-----BEGIN CERTIFICATE-----\nOLD\n-----END CERTIFICATE-----";
        let new = "-----BEGIN CERTIFICATE-----\nNEW\n-----END CERTIFICATE-----";
        let bundle = dir.join("ca.crt");
        std::fs::write(&bundle, format!("# rolling over\n{old}\n{new}\n")).expect("write");
        assert_eq!(
            remote_cas(&bundle).expect("two CAs"),
            [format!("{old}\n"), format!("{new}\n")]
        );
        let empty = dir.join("empty.crt");
        std::fs::write(&empty, "no certificate here").expect("write");
        assert!(matches!(
            remote_cas(&empty),
            Err(SettingsError::NoCertificate(file)) if file == empty
        ));
    }
}
