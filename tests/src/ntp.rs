//! Real NTP in the lab: chronyd (unpacked by scripts/install-deps into target/tools/ntp, never
//! installed, so the host's own time service is left alone) as the data centre's server on a
//! namespace's address, and as a one-shot client that measures the offset to it without
//! setting any clock (`chronyd -Q`).

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::Context as _;

use crate::netns::Namespace;

fn chronyd() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tools/ntp/usr/sbin/chronyd")
}

/// Settings every chronyd here shares: no command socket, its files in `dir`, no clock control.
fn common_conf(dir: &Path, name: &str) -> String {
    format!(
        "cmdport 0\nbindcmdaddress /\npidfile {}\n",
        dir.join(format!("{name}.pid")).display()
    )
}

/// chronyd serving its own clock (stratum 1) on one address of a namespace; stopped on drop.
pub struct NtpServer {
    child: Child,
}

impl NtpServer {
    /// Starts the server on `address` (port 123) in `ns`, its files in `dir`.
    pub fn start(ns: &Namespace, address: &str, dir: &Path) -> anyhow::Result<NtpServer> {
        let conf = dir.join("ntp-server.conf");
        std::fs::write(
            &conf,
            format!(
                "{}local stratum 1\nallow all\nbindaddress {address}\n",
                common_conf(dir, "ntp-server")
            ),
        )?;
        let log = std::fs::File::create(dir.join("ntp-server.log"))?;
        let child = ns
            .command(&chronyd().to_string_lossy())
            .args(["-x", "-d", "-u", "root", "-f"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| {
                format!("{} (scripts/install-deps unpacks it)", chronyd().display())
            })?;
        Ok(NtpServer { child })
    }
}

impl Drop for NtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asks the NTP server at `server` from `ns` once (a few quick polls), for at most `timeout`:
/// what chronyd printed ("System clock wrong by ... seconds"), or an error with what it said.
pub fn query(
    ns: &Namespace,
    server: &str,
    dir: &Path,
    timeout: Duration,
) -> anyhow::Result<String> {
    let conf = dir.join("ntp-client.conf");
    std::fs::write(
        &conf,
        format!(
            "{}server {server} iburst minpoll -2 maxpoll -2\n",
            common_conf(dir, "ntp-client")
        ),
    )?;
    let out = ns
        .command(&chronyd().to_string_lossy())
        .args(["-Q", "-x", "-u", "root", "-t"])
        .arg(timeout.as_secs().max(1).to_string())
        .arg("-f")
        .arg(&conf)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("{} (scripts/install-deps unpacks it)", chronyd().display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    anyhow::ensure!(
        out.status.success() && text.contains("System clock wrong by"),
        "chronyd -Q: {}: {text}",
        out.status
    );
    Ok(text)
}
