//! The IPsec pair of the tunnel benchmark (`bench.rs`), in the lab's dc and hospital
//! namespaces: the data centre is a strongSwan concentrator configured by hand from a
//! `swanctl.conf` (the independent peer); the hospital is the charon a box runs, started with
//! the strongswan.conf `renkei charon-conf` prints for a typed `[ipsec]` config and loaded with
//! the key, certificates and connection renkei derives from that config
//! (`IpsecSettings::of`), through renkei's own VICI client. The box's connection is on demand,
//! so the benchmark times `initiate` itself.
//!
//! ```text
//!   hospital ns (the box)                       dc ns (the concentrator)
//!   wan0 198.18.0.10 (IKE, ESP)  -- wan ns --   wan0 198.18.0.1
//!   198.19.1.10 on lo (inner)                   198.19.1.1 on lo (iperf3 server)
//! ```

use std::time::{Duration, Instant};

use anyhow::Context;
use renkei::carrier::ipsec::settings::{IpsecSettings, CONNECTION_NAME};
use renkei::carrier::ipsec::vici::Vici;
use renkei::config::{EspBackend, PolicyMode, TlsConfig};

use crate::concentrator::{renkei_charon_conf, swanctl_conf};
use crate::lab::{facility_connection, Lab, Node};
use crate::strongswan::{concentrator_conf, concentrator_conf_kernel_xfrm, Charon, CharonPaths};
use crate::wait::wait_until;

/// The box's own address inside the SA, and the data centre's address the iperf3 server binds:
/// the lab's IPsec addresses ([`Node::ipsec_address`]).
pub const BOX_INNER: &str = "198.19.1.10";
/// See [`BOX_INNER`].
pub const DC_INNER: &str = "198.19.1.1";
/// The concentrator's proposals: the CRYPTREC profile's strongest, as renkei offers first.
const CONCENTRATOR_IKE: &str = "aes256gcm16-prfsha384-ecp384";
const CONCENTRATOR_ESP: &str = "aes256gcm16-ecp384";
/// How long `initiate` may take (IKE_SA_INIT + IKE_AUTH on the lab's bridge).
const INITIATE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the first ping through a fresh SA may take to come back.
const FIRST_REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Longer than a round: renkei is not running, nothing closes the SA during the benchmark.
const IDLE_TIMEOUT_SECS: u64 = 300;
/// The WAN interface decrypted packets arrive on with the kernel's ESP (the lab's `wan0`).
const WAN_INTERFACE: &str = "wan0";

/// How the pair does ESP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Esp {
    /// charon's userspace ESP over its TUN device `ipsec0` (kernel-libipsec), both sides.
    Libipsec,
    /// The kernel's XFRM (kernel-netlink), both sides.
    KernelXfrm,
}

/// A running charon pair with an on-demand connection loaded on the box's side. Dropped in
/// field order: the VICI connection, the charons, then (the caller's) lab.
pub struct IpsecPair {
    vici: Vici,
    runtime: tokio::runtime::Runtime,
    box_charon: Charon,
    concentrator: Charon,
}

/// The concentrator's connection, written by hand as an operator would (the kit's
/// [`swanctl_conf`]): it answers the box, identity pinned, with the profile's strongest.
fn concentrator_swanctl() -> String {
    swanctl_conf(&[facility_connection(
        Node::Hospital,
        "box",
        DC_INNER,
        BOX_INNER,
        CONCENTRATOR_IKE,
        CONCENTRATOR_ESP,
    )])
}

/// The hospital's `[ipsec]` config of the lab ([`Lab::ipsec_only`]) made on-demand, with
/// `esp`, this pair's charon and absolute TLS paths (this process reads them too).
fn box_config(lab: &Lab, charon: &CharonPaths, esp: Esp) -> anyhow::Result<renkei::config::Config> {
    let mut config = lab.ipsec_only(Node::Hospital);
    let tls = lab.tls_dir(Node::Hospital);
    config.tls = Some(TlsConfig {
        certificate_file: tls.join("box.crt"),
        private_key_file: tls.join("box.key"),
        ca_file: tls.join("operator-ca.crt"),
        crl_file: None,
    });
    let ipsec = config
        .ipsec
        .as_mut()
        .context("the lab's hospital has [ipsec]")?;
    ipsec.mode = Some(PolicyMode::OnDemand);
    ipsec.idle_timeout_secs = IDLE_TIMEOUT_SECS;
    ipsec.esp_backend = match esp {
        Esp::Libipsec => EspBackend::Libipsec,
        Esp::KernelXfrm => EspBackend::Kernel,
    };
    ipsec.esp_interface = (esp == Esp::KernelXfrm).then(|| WAN_INTERFACE.to_string());
    ipsec.vici_socket = Some(charon.vici_socket.clone());
    ipsec.charon_log_file = Some(charon.log.clone());
    Ok(config)
}

impl IpsecPair {
    /// Starts both charons in `lab` (inner addresses on each namespace's `lo`), loads the
    /// concentrator with `swanctl --load-all` and the box with renkei's VICI client. No SA yet.
    pub fn start(lab: &Lab, esp: Esp) -> anyhow::Result<IpsecPair> {
        lab.ns(Node::Hospital)
            .ip(&["addr", "replace", &format!("{BOX_INNER}/32"), "dev", "lo"])?;
        lab.ns(Node::Hub)
            .ip(&["addr", "replace", &format!("{DC_INNER}/32"), "dev", "lo"])?;
        let dc_paths = CharonPaths::in_dir(&lab.dir.join("bench-dc-charon"));
        let dc_conf = match esp {
            Esp::Libipsec => concentrator_conf(&dc_paths),
            Esp::KernelXfrm => concentrator_conf_kernel_xfrm(&dc_paths),
        };
        let concentrator = Charon::start(lab.ns(Node::Hub), dc_paths, &dc_conf)?;
        concentrator.load_all(
            &concentrator_swanctl(),
            lab.certificate(Node::Hub),
            &lab.ca.cert_pem,
        )?;
        let box_paths = CharonPaths::in_dir(&lab.dir.join("bench-hospital-charon"));
        let config = box_config(lab, &box_paths, esp)?;
        let path = lab.write_config(Node::Hospital, &config)?;
        let box_charon = Charon::start(
            lab.ns(Node::Hospital),
            box_paths,
            &renkei_charon_conf(&path)?,
        )?;
        let settings = IpsecSettings::of(&config).context("the box's IPsec settings")?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let vici = runtime.block_on(async {
            let mut vici = Vici::connect(&settings.vici_socket).await?;
            renkei::carrier::ipsec::backend::load(&mut vici, &settings).await?;
            anyhow::Ok(vici)
        })?;
        Ok(IpsecPair {
            vici,
            runtime,
            box_charon,
            concentrator,
        })
    }

    /// The two charons' process ids.
    pub fn pids(&self) -> Vec<u32> {
        [self.box_charon.pid(), self.concentrator.pid()]
            .into_iter()
            .flatten()
            .collect()
    }

    /// Handshake to first byte: from `initiate` on the box until the first ping from the box's
    /// inner address to the data centre's comes back through the new SA, in milliseconds. A
    /// failure carries charon's own words (its log lines of the attempt).
    pub fn initiate_to_first_reply_ms(&mut self, lab: &Lab) -> anyhow::Result<f64> {
        let start = Instant::now();
        let initiated = self
            .runtime
            .block_on(self.vici.initiate(CONNECTION_NAME, INITIATE_TIMEOUT));
        if let Err(e) = initiated {
            anyhow::bail!("initiate failed: {e}; {}", self.failure_lines());
        }
        wait_until(FIRST_REPLY_TIMEOUT, "a reply through the SA", || {
            lab.ns(Node::Hospital)
                .exec("ping", &["-c", "1", "-W", "1", "-I", BOX_INNER, DC_INNER])
                .ok()
        })?;
        Ok(start.elapsed().as_secs_f64() * 1000.0)
    }

    /// Both charons' log lines that say why an SA was not installed (the responder, the
    /// concentrator, installs first and may be the one that fails).
    fn failure_lines(&self) -> String {
        let said = |who: &str, charon: &Charon| -> Vec<String> {
            charon
                .log()
                .lines()
                .filter(|l| {
                    let l = l.to_ascii_lowercase();
                    l.contains("unable") || l.contains("failed") || l.contains("not supported")
                })
                .map(|l| format!("{who}: {l}"))
                .collect()
        };
        let mut lines = said("box charon", &self.box_charon);
        lines.extend(said("concentrator", &self.concentrator));
        lines.join(" | ")
    }
}
