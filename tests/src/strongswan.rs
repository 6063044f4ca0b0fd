//! strongSwan's charon as a lab process: the IPsec carrier's box side (driven by renkei's own
//! VICI code) and the data centre's concentrator (configured by hand from a `swanctl.conf`,
//! loaded with the real `swanctl --load-all`: the independent peer, not renkei).
//!
//! The program is `charon-systemd`: Debian's classic `/usr/lib/ipsec/charon` always writes
//! `/var/run/charon.pid` and will not start beside another charon, while `charon-systemd` writes
//! no pid file, stays in the foreground, and is the daemon the box image runs. Every charon
//! gets its own folder with its own `STRONGSWAN_CONF` (complete, no `include` of /etc), VICI
//! socket, swanctl folder and log file, so charons of parallel tests never share anything; the
//! plugin list is pinned in that file. Dropping a [`Charon`] stops it and removes its folder,
//! also when the test panics.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;

use crate::netns::{run, Namespace};
use crate::pki::{write_key, Leaf};
use crate::wait::wait_until;

/// The charon program.
pub const CHARON: &str = "/usr/sbin/charon-systemd";
/// How long charon may take to open its VICI socket.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long charon may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Where one charon keeps everything.
#[derive(Debug, Clone)]
pub struct CharonPaths {
    /// The folder holding all of it.
    pub dir: PathBuf,
    /// Its strongswan.conf (`STRONGSWAN_CONF`).
    pub conf: PathBuf,
    /// Its VICI socket.
    pub vici_socket: PathBuf,
    /// Its log file.
    pub log: PathBuf,
    /// Its swanctl folder (`SWANCTL_DIR`: swanctl.conf, x509/, x509ca/, private/).
    pub swanctl_dir: PathBuf,
}

impl CharonPaths {
    /// The paths of a charon kept in `dir`.
    pub fn in_dir(dir: &Path) -> CharonPaths {
        CharonPaths {
            dir: dir.to_path_buf(),
            conf: dir.join("strongswan.conf"),
            vici_socket: dir.join("charon.vici"),
            log: dir.join("charon.log"),
            swanctl_dir: dir.join("swanctl"),
        }
    }
}

/// A hand-written strongswan.conf for a concentrator: the same userspace ESP (kernel-libipsec;
/// the kernel here has no AES-GCM for XFRM) and UDP encapsulation as the box, its own VICI
/// socket and log, and a plugin list that also speaks the weak algorithms a test offers.
pub fn concentrator_conf(paths: &CharonPaths) -> String {
    concentrator_conf_with(
        paths,
        "kernel-libipsec kernel-netlink",
        "  install_routes = yes\n",
    )
}

/// [`concentrator_conf`] with the kernel's XFRM for ESP (`kernel-netlink` alone, no
/// kernel-libipsec): the data centre of a box whose kernel has ESP, for the tunnel benchmark's
/// kernel-XFRM pair. Where the kernel lacks ESP or the negotiated cipher, installing the CHILD
/// SA fails and charon logs why (its kernel messages are logged too).
pub fn concentrator_conf_kernel_xfrm(paths: &CharonPaths) -> String {
    concentrator_conf_with(paths, "kernel-netlink", "")
}

/// A concentrator's strongswan.conf with `kernel_plugins` for ESP and `extra` settings lines.
fn concentrator_conf_with(paths: &CharonPaths, kernel_plugins: &str, extra: &str) -> String {
    format!(
        "charon {{
  load = random nonce openssl pem pkcs1 pkcs8 x509 pubkey constraints kdf {kernel_plugins} socket-default vici
  load_modular = no
{extra}  plugins {{
    vici {{
      socket = unix://{socket}
    }}
  }}
  filelog {{
    lab {{
      path = {log}
      time_format = %F %T
      default = 1
      ike = 2
      cfg = 2
      knl = 2
      flush_line = yes
    }}
  }}
}}
swanctl {{
  load = random nonce openssl pem pkcs1 pkcs8 x509 pubkey
}}
",
        socket = paths.vici_socket.display(),
        log = paths.log.display(),
    )
}

/// A charon running inside a namespace.
pub struct Charon {
    /// Its paths.
    pub paths: CharonPaths,
    namespace: String,
    child: Option<Child>,
}

impl Charon {
    /// Writes `strongswan_conf` to `paths.conf` and starts charon inside `ns` with it,
    /// waiting until its VICI socket is there.
    pub fn start(
        ns: &Namespace,
        paths: CharonPaths,
        strongswan_conf: &str,
    ) -> anyhow::Result<Charon> {
        let _ = fs::remove_dir_all(&paths.dir);
        fs::create_dir_all(&paths.swanctl_dir)
            .with_context(|| format!("creating {}", paths.swanctl_dir.display()))?;
        fs::write(&paths.conf, strongswan_conf)?;
        let output = fs::File::create(paths.dir.join("charon.out"))?;
        let child = ns
            .command(CHARON)
            .env("STRONGSWAN_CONF", &paths.conf)
            .stdin(Stdio::null())
            .stdout(output.try_clone()?)
            .stderr(output)
            .spawn()
            .with_context(|| format!("starting {CHARON} (scripts/install-deps installs it)"))?;
        let mut charon = Charon {
            paths,
            namespace: ns.name().to_string(),
            child: Some(child),
        };
        let socket = charon.paths.vici_socket.clone();
        let mut exited = None;
        wait_until(START_TIMEOUT, "charon's VICI socket", || {
            if let Some(child) = charon.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    exited = Some(status);
                    return Some(());
                }
            }
            socket.exists().then_some(())
        })
        .with_context(|| charon.log())?;
        if let Some(status) = exited {
            anyhow::bail!("charon exited at start ({status}): {}", charon.log());
        }
        Ok(charon)
    }

    /// charon's log and its standard output so far (for failure messages).
    pub fn log(&self) -> String {
        let read = |p: PathBuf| fs::read_to_string(p).unwrap_or_default();
        format!(
            "{}{}",
            read(self.paths.dir.join("charon.out")),
            read(self.paths.log.clone())
        )
    }

    /// Runs `swanctl args` against this charon (its socket, conf and swanctl folder), in its
    /// namespace.
    pub fn swanctl(&self, args: &[&str]) -> anyhow::Result<String> {
        let uri = format!("unix://{}", self.paths.vici_socket.display());
        let output = run(Command::new("ip")
            .args(["netns", "exec", &self.namespace, "swanctl"])
            .args(args)
            .args(["--uri", &uri])
            .env("STRONGSWAN_CONF", &self.paths.conf)
            .env("SWANCTL_DIR", &self.paths.swanctl_dir))?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Writes a hand-written `swanctl.conf`, this charon's certificate and key and the CA it
    /// trusts into its swanctl folder (x509/, private/, x509ca/), and loads them all with
    /// `swanctl --load-all`. `swanctl_conf` names the files as `own.crt` and `ca.crt`.
    pub fn load_all(&self, swanctl_conf: &str, own: &Leaf, ca_pem: &str) -> anyhow::Result<String> {
        let dir = &self.paths.swanctl_dir;
        for sub in ["x509", "x509ca", "private"] {
            fs::create_dir_all(dir.join(sub))?;
        }
        fs::write(dir.join("x509/own.crt"), &own.cert_pem)?;
        write_key(&dir.join("private/own.key"), &own.key_pem)?;
        fs::write(dir.join("x509ca/ca.crt"), ca_pem)?;
        fs::write(dir.join("swanctl.conf"), swanctl_conf)?;
        let out = self.swanctl(&["--load-all", "--noprompt"])?;
        anyhow::ensure!(
            out.contains("successfully loaded"),
            "swanctl --load-all did not load the connections: {out}"
        );
        Ok(out)
    }

    /// `swanctl --list-sas --raw`: charon's own view of its SAs, as one line of text.
    pub fn list_sas(&self) -> anyhow::Result<String> {
        self.swanctl(&["--list-sas", "--raw"])
    }

    /// Kills charon with SIGKILL, as a crash or a power cut would stop it: no DELETE reaches
    /// its peers. Its folder stays (dropping the value removes it).
    pub fn crash(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// charon's process id while it runs (`ip netns exec` execs charon, so the child is charon
    /// itself): for reading its CPU time and for records of what a lab started.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether charon still runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Charon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // `ip netns exec` execs charon: the child is charon itself.
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            let stopped = wait_until(STOP_TIMEOUT, "charon to stop", || {
                matches!(child.try_wait(), Ok(Some(_))).then_some(())
            });
            if stopped.is_err() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = fs::remove_dir_all(&self.paths.dir);
    }
}
