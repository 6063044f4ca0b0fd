//! systemd-journald itself, booted twice in a private mount namespace as the box boots it: at
//! each boot journald writes to /run first, `journalctl --flush` copies that into the sealed
//! journal under /var/log/journal, and journald goes on there; between the two boots one
//! sealing interval ends while journald is stopped (a box off over night, in short). The
//! namespace gets its own tmpfs /run, /var/log and /etc/systemd and its own machine id, so
//! nothing of the host's journal is touched, and all of it goes with the namespace's last
//! process. Keys are made with a 10 s sealing interval (the box's is 5 min) to keep the wait short.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;

/// systemd's journal daemon.
pub const JOURNALD: &str = "/lib/systemd/systemd-journald";

/// The machine id inside the namespace.
const MACHINE_ID: &str = "7e57ab1e0ddba11c0ffee0000000b007";

/// What happens between journald's start and the flush at each boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeforeFlush {
    /// `renkei journal-seal`, as the image's renkei-journal-seal.service (Before= the flush).
    RenkeiJournalSeal,
    /// Nothing: journald alone.
    Nothing,
}

/// The persistent journal after two boots, and its verification key.
pub struct TwoBoots {
    /// The machine's journal folder (copied out of the namespace).
    pub journal: PathBuf,
    /// journalctl's verification key of the keys made before the first boot.
    pub key: String,
    /// What `renkei journal-seal` printed at each boot (empty with [`BeforeFlush::Nothing`]).
    pub seal_output: String,
}

/// Makes sealing keys, boots journald twice with a sealing interval ending between the boots
/// (each boot well inside one interval, so its entries in /run do not straddle a boundary),
/// and copies the persistent journal to `work/journal`.
pub fn two_boots_across_an_interval(
    renkei: &Path,
    work: &Path,
    before_flush: BeforeFlush,
) -> anyhow::Result<TwoBoots> {
    std::fs::create_dir_all(work)?;
    std::fs::write(work.join("machine-id"), format!("{MACHINE_ID}\n"))?;
    let script = r#"
        set -eu
        t="$1" renkei="$2" journald="$3" seal="$4"
        journal="/var/log/journal/$(cat "$t/machine-id")"
        journald_pid=""
        trap '[ -z "$journald_pid" ] || kill "$journald_pid" 2>/dev/null || true' EXIT
        mount -t tmpfs tmpfs /run
        mount -t tmpfs tmpfs /var/log
        mount -t tmpfs tmpfs /etc/systemd
        mount --bind "$t/machine-id" /etc/machine-id
        printf '[Journal]\nStorage=persistent\nSeal=yes\nReadKMsg=no\nForwardToSyslog=no\nForwardToKMsg=no\nForwardToConsole=no\nForwardToWall=no\n' > /etc/systemd/journald.conf
        mkdir -p "$journal" "$t/scratch"
        journalctl --setup-keys --interval=10s > "$t/key" 2>/dev/null
        # renkei journal-seal finds the keys there, their verification key kept: it only moves on.
        cp "$t/key" "$t/verification-key"
        key="$(cat "$t/key")"
        start_hex="${key#*/}"; interval="$(( 0x${start_hex#*-} ))"; start="$(( 0x${start_hex%-*} * interval ))"
        now() { date +%s%6N; }
        epoch() { echo $(( ($1 - start) / interval )); }
        # Waits (bounded) until at least 4 s of the present interval are left.
        roomy() {
          for _ in $(seq 200); do
            left=$(( interval - ($(now) - start) % interval ))
            [ "$left" -lt 4000000 ] || return 0
            sleep 0.1
          done
          echo "no roomy interval" >&2; exit 1
        }
        until_logged() {
          for _ in $(seq 100); do
            journalctl -D "$1" -t renkei-lab -q --no-pager 2>/dev/null | grep -q "$2" && return 0
            sleep 0.05
          done
          echo "not logged in $1: $2" >&2; exit 1
        }
        boot() {
          rm -rf /run/systemd /run/log
          mkdir -p /run/systemd/journal
          "$journald" > "$t/journald-$1.log" 2>&1 &
          journald_pid=$!
          for _ in $(seq 100); do [ -S /run/systemd/journal/stdout ] && break; sleep 0.05; done
          echo "boot $1 before the flush" | systemd-cat -t renkei-lab
          until_logged /run/log/journal "boot $1 before the flush"
          if [ "$seal" = renkei ]; then
            "$renkei" journal-seal --config "$t/none.toml" --key-file "$t/verification-key" \
              --journal-dir /var/log/journal --machine-id-file /etc/machine-id \
              --scratch-dir "$t/scratch" >> "$t/seal.out"
          fi
          journalctl --flush
          echo "boot $1 after the flush" | systemd-cat -t renkei-lab
          until_logged /var/log/journal "boot $1 after the flush"
          kill "$journald_pid"; wait "$journald_pid" || true; journald_pid=""
        }
        roomy
        boot 1
        # Off until a new sealing interval began, then a boot well inside it.
        off="$(epoch "$(now)")"
        for _ in $(seq 300); do [ "$(epoch "$(now)")" -gt "$off" ] && break; sleep 0.1; done
        [ "$(epoch "$(now)")" -gt "$off" ] || { echo "the interval did not end" >&2; exit 1; }
        roomy
        boot 2
        rm -rf "$t/journal"
        cp -a "$journal" "$t/journal"
    "#;
    let seal = match before_flush {
        BeforeFlush::RenkeiJournalSeal => "renkei",
        BeforeFlush::Nothing => "none",
    };
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(script)
        .arg("sh")
        .arg(work)
        .arg(renkei)
        .arg(JOURNALD)
        .arg(seal)
        .output()
        .context("unshare")?;
    anyhow::ensure!(
        out.status.success(),
        "journald booted twice in a private mount namespace: {}: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(TwoBoots {
        journal: work.join("journal"),
        key: std::fs::read_to_string(work.join("key"))?
            .trim()
            .to_string(),
        seal_output: std::fs::read_to_string(work.join("seal.out")).unwrap_or_default(),
    })
}
