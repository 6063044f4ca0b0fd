//! The strongswan.conf renkei gives charon: a pinned plugin list (no plugin directory scan, so
//! no algorithm or socket comes in with a package update), the VICI socket renkei connects to,
//! how ESP reaches the wire, and the retransmission timing that lets an always-on link recover
//! within about ten seconds (IKEv2's defaults give up only after minutes).
//!
//! The text is complete on its own (no `include`): charon is started with `STRONGSWAN_CONF`
//! pointing at it. Settings are written under `charon`; `charon-systemd` reads that section too.

use std::path::PathBuf;
use std::time::Duration;

/// Plugins every box loads: randomness, the openssl backend (AES-GCM/CBC, SHA-2, ECDH and
/// ECDSA/RSA), certificate and key parsing, `kdf` (charon 5.9 needs it for PRF-HMAC-SHA-384
/// with openssl 3), the socket and VICI. Nothing that speaks 3DES, ChaCha20 or Curve25519 by
/// itself, and none of the default plugins that open sockets under /var/run.
pub const BASE_PLUGINS: &[&str] = &[
    "random",
    "nonce",
    "openssl",
    "pem",
    "pkcs1",
    "pkcs8",
    "x509",
    "pubkey",
    "constraints",
    "revocation",
    "kdf",
    "socket-default",
    "vici",
];

/// Where ESP is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelBackend {
    /// Userspace ESP in charon over a TUN device (`ipsec0`), always in UDP 4500. For kernels
    /// without AES-GCM for XFRM (the test machines, small boxes). `kernel-netlink` is still
    /// loaded, after it, for addresses and routes; the first loaded IPsec backend wins.
    Libipsec,
    /// The kernel's XFRM, where it has AES-GCM: faster, no TUN device.
    Netlink,
}

impl KernelBackend {
    fn plugins(self) -> &'static [&'static str] {
        match self {
            KernelBackend::Libipsec => &["kernel-libipsec", "kernel-netlink"],
            KernelBackend::Netlink => &["kernel-netlink"],
        }
    }
}

/// IKE retransmission: a request is sent again after `timeout * base^n` for n = 0..=tries,
/// and the SA is given up after the last wait.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retransmit {
    /// First wait, in seconds.
    pub timeout_secs: f64,
    /// Growth factor of each further wait.
    pub base: f64,
    /// Retransmissions before giving up.
    pub tries: u32,
}

/// Gives a dead peer up after about 7.1 s (1 + 1.4 + 1.96 + 2.74 s); with a DPD delay of 3 s a
/// vanished concentrator is noticed, and an always-on SA restarted, within about 10 s.
pub const FAST_RETRANSMIT: Retransmit = Retransmit {
    timeout_secs: 1.0,
    base: 1.4,
    tries: 3,
};

impl Retransmit {
    /// How long charon waits for an answer before it gives an exchange up.
    pub fn give_up_after(&self) -> Duration {
        let secs: f64 = (0..=self.tries)
            .map(|n| self.timeout_secs * self.base.powi(n as i32))
            .sum();
        Duration::from_secs_f64(secs)
    }
}

/// What the rendered strongswan.conf is built from.
#[derive(Debug, Clone, PartialEq)]
pub struct CharonSettings {
    /// The VICI socket renkei connects to.
    pub vici_socket: PathBuf,
    /// Where ESP is done.
    pub kernel: KernelBackend,
    /// A log file for charon's own log (`None`: the journal only).
    pub log_file: Option<PathBuf>,
    /// IKE retransmission timing.
    pub retransmit: Retransmit,
    /// Close the IKE SA when its last CHILD SA closed for inactivity (on-demand).
    pub inactivity_close_ike: bool,
}

impl CharonSettings {
    /// The plugin list, in load order.
    pub fn plugins(&self) -> Vec<&'static str> {
        let mut plugins = BASE_PLUGINS.to_vec();
        // The kernel backend before the socket, as strongSwan's own default order has it.
        let at = plugins
            .iter()
            .position(|p| *p == "socket-default")
            .unwrap_or(plugins.len());
        for (i, plugin) in self.kernel.plugins().iter().enumerate() {
            plugins.insert(at + i, plugin);
        }
        plugins
    }

    /// The whole strongswan.conf.
    pub fn render(&self) -> String {
        let yes_no = |b: bool| if b { "yes" } else { "no" };
        let mut text = String::from("# Written by renkei; replaced on every start.\n");
        text.push_str("charon {\n");
        text.push_str(&format!("  load = {}\n", self.plugins().join(" ")));
        text.push_str("  load_modular = no\n");
        text.push_str(&format!(
            "  retransmit_timeout = {}\n",
            self.retransmit.timeout_secs
        ));
        text.push_str(&format!("  retransmit_base = {}\n", self.retransmit.base));
        text.push_str(&format!("  retransmit_tries = {}\n", self.retransmit.tries));
        text.push_str(&format!(
            "  inactivity_close_ike = {}\n",
            yes_no(self.inactivity_close_ike)
        ));
        // libipsec sends packets to the TUN device by route; XFRM needs none.
        text.push_str(&format!(
            "  install_routes = {}\n",
            yes_no(self.kernel == KernelBackend::Libipsec)
        ));
        text.push_str("  install_virtual_ip = yes\n");
        text.push_str("  plugins {\n");
        text.push_str("    vici {\n");
        text.push_str(&format!(
            "      socket = unix://{}\n",
            self.vici_socket.display()
        ));
        text.push_str("    }\n");
        text.push_str("  }\n");
        if let Some(log) = &self.log_file {
            text.push_str("  filelog {\n");
            text.push_str("    renkei {\n");
            text.push_str(&format!("      path = {}\n", log.display()));
            text.push_str("      time_format = %F %T\n");
            text.push_str("      default = 1\n");
            text.push_str("      ike = 2\n");
            text.push_str("      cfg = 2\n");
            text.push_str("      flush_line = yes\n");
            text.push_str("    }\n");
            text.push_str("  }\n");
        }
        text.push_str("}\n");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(kernel: KernelBackend) -> CharonSettings {
        CharonSettings {
            vici_socket: PathBuf::from("/run/renkei/charon.vici"),
            kernel,
            log_file: Some(PathBuf::from("/var/log/renkei/charon.log")),
            retransmit: FAST_RETRANSMIT,
            inactivity_close_ike: true,
        }
    }

    fn line<'a>(text: &'a str, key: &str) -> Option<&'a str> {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(key)?.trim_start().strip_prefix('='))
            .map(str::trim)
    }

    #[test]
    fn net10_the_plugin_list_is_pinned_and_modular_loading_off() {
        let text = settings(KernelBackend::Libipsec).render();
        assert_eq!(
            line(&text, "load"),
            Some(
                "random nonce openssl pem pkcs1 pkcs8 x509 pubkey constraints revocation kdf \
                 kernel-libipsec kernel-netlink socket-default vici"
            )
        );
        assert_eq!(line(&text, "load_modular"), Some("no"));
        assert!(!text.contains("include"), "{text}");
        for absent in ["curve25519", "chapoly", "des", "md5", "sha1", "stroke"] {
            assert!(
                !settings(KernelBackend::Netlink).plugins().contains(&absent),
                "{absent}"
            );
        }
    }

    #[test]
    fn net9_the_kernel_backend_chooses_plugins_and_routes() {
        let libipsec = settings(KernelBackend::Libipsec).render();
        assert_eq!(line(&libipsec, "install_routes"), Some("yes"));
        let netlink = settings(KernelBackend::Netlink).render();
        assert!(!netlink.contains("kernel-libipsec"), "{netlink}");
        assert!(
            netlink.contains(" kernel-netlink socket-default"),
            "{netlink}"
        );
        assert_eq!(line(&netlink, "install_routes"), Some("no"));
    }

    #[test]
    fn net9_the_vici_socket_log_and_inactivity_are_rendered() {
        let text = settings(KernelBackend::Libipsec).render();
        assert_eq!(
            line(&text, "socket"),
            Some("unix:///run/renkei/charon.vici")
        );
        assert_eq!(line(&text, "path"), Some("/var/log/renkei/charon.log"));
        assert_eq!(line(&text, "inactivity_close_ike"), Some("yes"));
        let mut quiet = settings(KernelBackend::Libipsec);
        quiet.log_file = None;
        quiet.inactivity_close_ike = false;
        let text = quiet.render();
        assert!(!text.contains("filelog"), "{text}");
        assert_eq!(line(&text, "inactivity_close_ike"), Some("no"));
        // Every opened section is closed.
        assert_eq!(text.matches('{').count(), text.matches('}').count());
    }

    #[test]
    fn net6_retransmission_gives_a_dead_peer_up_within_ten_seconds() {
        let text = settings(KernelBackend::Libipsec).render();
        assert_eq!(line(&text, "retransmit_timeout"), Some("1"));
        assert_eq!(line(&text, "retransmit_base"), Some("1.4"));
        assert_eq!(line(&text, "retransmit_tries"), Some("3"));
        let give_up = FAST_RETRANSMIT.give_up_after();
        assert!(
            give_up > Duration::from_secs(7) && give_up < Duration::from_millis(7200),
            "{give_up:?}"
        );
        // strongSwan's defaults (4 s, 1.8, 5 tries) wait 165 s.
        let defaults = Retransmit {
            timeout_secs: 4.0,
            base: 1.8,
            tries: 5,
        };
        assert_eq!(defaults.give_up_after().as_secs(), 165);
    }
}
