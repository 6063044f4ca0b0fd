//! Command-line grammar of `renkei`: the subcommands and their arguments, as clap parses them.
//! Nothing here acts; `main` hands each parsed command to the module that does it.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use renkei::config;

#[derive(Parser)]
#[command(
    name = "renkei",
    version,
    about = "Edge box of a regional medical information network"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Validate a configuration file and print a one-line summary: every check `run` makes
    /// before it starts, on the files the configuration names (TLS keys and certificates
    /// included), or with `--offline` the text alone.
    Check {
        /// The configuration file.
        #[arg(long, short, default_value = config::DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// Check syntax, types and rules only, reading no file the configuration names: for the
        /// operator's machine, which has none of the box's keys (what `renkei sign` runs).
        #[arg(long)]
        offline: bool,
    },
    /// Print the strongswan.conf charon must run with for an `[ipsec]` configuration (pinned
    /// plugins, the VICI socket renkei connects to, retransmission timing): the image's charon
    /// unit writes it before charon starts, so charon runs with exactly renkei's settings.
    CharonConf {
        /// The configuration file.
        #[arg(long, short, default_value = config::DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// Write it to this file (replaced whole: written beside it, then renamed) instead of
        /// standard output.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Write the settings of the image's NTP client (systemd-timesyncd) that the config's
    /// `[time]` gives: its servers, reached through the carrier, and no public fallback. The
    /// image's timesyncd runs it before it starts; without `[time]` the file is removed and
    /// the image's defaults apply.
    TimesyncConf {
        /// The configuration file.
        #[arg(long, short, default_value = config::DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// The drop-in to write (replaced whole: written beside it, then renamed); its folder
        /// is made if missing.
        #[arg(long, default_value = TIMESYNCD_DROP_IN)]
        output: PathBuf,
    },
    /// Write the settings of the image's journal uploader (systemd-journal-upload) that the
    /// config's `[logs]` gives: the URL of its upload service's loopback listener. Without
    /// `[logs]` the file is removed and the uploader does not start.
    JournalUploadConf {
        /// The configuration file.
        #[arg(long, short, default_value = config::DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// The drop-in to write (replaced whole: written beside it, then renamed); its folder
        /// is made if missing.
        #[arg(long, default_value = JOURNAL_UPLOAD_DROP_IN)]
        output: PathBuf,
    },
    /// Seal the box's journal (LOG-4; the image's renkei-journal-seal.service, before journald
    /// opens its persistent files): makes the sealing keys on first boot and prints the
    /// operator's verification key, which waits in --key-file for the enrolment data and is
    /// removed from the box at the first start once it is enrolled (--config exists). Every
    /// boot it moves the sealing key on to the present, so the entries journald flushes from
    /// /run are sealed in their own interval.
    JournalSeal {
        /// The configuration file whose presence means enrolled.
        #[arg(long, short, default_value = config::DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// journald's persistent folder.
        #[arg(long, default_value = renkei::journal::seal::DEFAULT_JOURNAL_DIR)]
        journal_dir: PathBuf,
        /// Where the verification key waits for enrolment.
        #[arg(long, default_value = renkei::journal::seal::DEFAULT_KEY_FILE)]
        key_file: PathBuf,
        /// The file naming this machine (its journal folder's name).
        #[arg(long, default_value = "/etc/machine-id")]
        machine_id_file: PathBuf,
        /// A private folder for the scratch journal that moves the sealing key on (the unit's
        /// RuntimeDirectory).
        #[arg(long, default_value = "/run/renkei-journal-seal")]
        scratch_dir: PathBuf,
    },
    /// Check a box's journal files with its verification key (the operator's tool): every
    /// file must pass `journalctl --verify --verify-key` and be sealed. Exit 1 if any fails.
    JournalVerify {
        /// The box's verification key (from its first boot's console or enrolment data).
        #[arg(long)]
        verify_key: String,
        /// The journalctl to check with: the newest available (systemd 255 and later also
        /// catch old entries re-sealed with a newer key, CVE-2023-31439).
        #[arg(long, default_value = renkei::journal::JOURNALCTL)]
        journalctl: PathBuf,
        /// Journal files, or folders searched for them (the box's /var/log/journal).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Run the daemon with a configuration file. Without one (a box fresh from the image) the
    /// daemon runs unenrolled: it shows the enrolment data on `renkei status` and on the
    /// login-free enrolment page, and starts enrolled once a valid file is there.
    Run {
        /// The configuration file.
        #[arg(long, short, default_value = config::DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        #[command(flatten)]
        unenrolled: UnenrolledArgs,
    },
    /// Show the running daemon's state (tunnel, peers, counters), like `wg show`.
    Status {
        /// The configuration file, to find the daemon's runtime directory.
        #[arg(long, short, default_value = config::DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// The daemon's runtime directory, when it is not the one the configuration names (an
        /// unenrolled daemon started with `--runtime-dir`).
        #[arg(long)]
        runtime_dir: Option<PathBuf>,
        /// Print the status document as JSON (the same as the status API).
        #[arg(long)]
        json: bool,
        /// Print every peer, also on a hub with many (by default more than 20 are counted per
        /// state and only those in alarm are printed).
        #[arg(long)]
        all: bool,
    },
    /// Ask an on-demand box to bring its tunnel up now, or to drop it now.
    Tunnel {
        /// The configuration file, to find the daemon's runtime directory.
        #[arg(long, short, default_value = config::DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// `connect` or `disconnect`.
        #[arg(value_parser = ["connect", "disconnect"])]
        action: String,
    },
    /// Generate a WireGuard key pair: the private key (mode 0600) and `<file>.pub`; with
    /// `--tls-key` and `--csr` also the box's TLS key (ECDSA P-256) and a CSR for it, and print
    /// the enrolment data (first boot, OPS-1). Makes only what is missing: an existing key is
    /// kept, never overwritten. With `--operator`, the operator's ECDSA P-256 config signing key
    /// instead (PEM; `<file>.pub` is the public key boxes trust): it needs an explicit
    /// `--private-key` and never overwrites a file.
    Keygen {
        /// Where to write the private key (WireGuard default: /etc/renkei/wg.key; with
        /// `--operator` required, so the signing key never lands on the box's key path).
        #[arg(long)]
        private_key: Option<PathBuf>,
        /// Where to write the TLS private key (mode 0600).
        #[arg(long, requires = "csr")]
        tls_key: Option<PathBuf>,
        /// Where to write the PKCS#10 certificate signing request for the TLS key.
        #[arg(long, requires = "tls_key")]
        csr: Option<PathBuf>,
        /// Make the operator's config signing key (kept at the operator, never on a box).
        #[arg(long)]
        operator: bool,
    },
    /// Sign a config with the operator's key: writes `<config>.sig` (base64 DER ECDSA P-256
    /// over the file's exact bytes). Refuses (exit 2) a config that fails `renkei check
    /// --offline` or names no `[meta] box`.
    Sign {
        /// The operator's signing key (from `renkei keygen --operator`).
        #[arg(long)]
        key: PathBuf,
        /// The config to sign.
        config: PathBuf,
    },
    /// Send a signed config to a box's management API and print its answer.
    Push {
        #[command(flatten)]
        target: TargetArgs,
        /// The signature file (default: `<config>.sig`).
        #[arg(long)]
        signature: Option<PathBuf>,
        /// Keep retrying to reach the box for this many seconds (an on-demand box answers only
        /// while its tunnel is up).
        #[arg(long, default_value_t = 0)]
        wait_secs: u64,
        /// The signed config.
        config: PathBuf,
    },
    /// Confirm the config a box is running on probation.
    Confirm {
        #[command(flatten)]
        target: TargetArgs,
        /// Confirm only if this is the pending version.
        #[arg(long)]
        version: Option<u64>,
    },
    /// Show a box's running config version, hash, signer and confirm state; or, with an
    /// action, read or steer its hub group.
    Remote {
        #[command(flatten)]
        target: TargetArgs,
        #[command(subcommand)]
        action: Option<RemoteAction>,
    },
    /// The operator's tools for many boxes, listed in an inventory (`fleet.toml`): every box's
    /// state in one table, a signed config per box rolled out in waves, a fleet-wide confirm.
    Fleet {
        #[command(subcommand)]
        action: FleetAction,
    },
    /// Firmware updates (signed RAUC bundles): install one on this box, or push one to a box
    /// and read a box's firmware state.
    Update {
        #[command(subcommand)]
        action: UpdateAction,
    },
    /// Print an argon2id hash of a password read from standard input, for `status.admin_password_hash`.
    /// With `--totp`, enrol the administrator's second factor at the console instead: shows a
    /// QR code and key for an authenticator app, reads one code from it, stores the factor in
    /// the state directory (mode 0600, replacing any earlier one) and prints the recovery codes.
    Passwd {
        /// Enrol the second factor (TOTP) instead of hashing a password.
        #[arg(long)]
        totp: bool,
        /// With `--totp`: the box's state directory (`paths.state_dir`).
        #[arg(long, requires = "totp", default_value_os_t = config::Paths::default().state_dir)]
        state_dir: PathBuf,
    },
}

/// `renkei remote ... ACTION`: the facility's hub group (AVL-4).
#[derive(Subcommand)]
pub(crate) enum RemoteAction {
    /// Show the hub group: the active hub, each hub's health, the preference, failovers.
    Hubs,
    /// Prefer one hub of the group (maintenance of the others): the box moves to it at once
    /// when it is healthy, and stays until the preference is cleared.
    PreferHub {
        /// The hub's peer name.
        #[arg(required_unless_present = "clear", conflicts_with = "clear")]
        hub: Option<String>,
        /// Clear the preference: the box follows the group's own order again.
        #[arg(long)]
        clear: bool,
    },
    /// Fetch the box's sealed journal files (LOG-4) into a folder, as they are on its disk, to
    /// check them with its verification key: `renkei journal-verify --verify-key KEY DIR`.
    Journal {
        /// The folder to write them to (`<machine id>/<file>` inside it).
        #[arg(long)]
        out: PathBuf,
    },
}

/// `renkei fleet ...` (docs/operator-guide.md, "Running a fleet").
#[derive(Subcommand)]
pub(crate) enum FleetAction {
    /// Ask every box in parallel for its facility, role, carrier state, config version and
    /// state, certificate expiry and firmware, and print one table. Exit 1 when a box did not
    /// answer (it is in the table as unreachable).
    Status {
        #[command(flatten)]
        fleet: FleetArgs,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Push each box its signed config from a folder (`<box>.toml` and `<box>.toml.sig`), the
    /// canary groups first, then the rest; each wave must end confirmed before the next
    /// starts. Stops at the first refusal, rollback or unreachable box and reports which
    /// version every box runs (exit 1).
    Push {
        #[command(flatten)]
        fleet: FleetArgs,
        /// The folder with the signed configs.
        #[arg(long)]
        configs: PathBuf,
        /// Group(s) of the first wave.
        #[arg(long, default_value = "canary")]
        canary: Vec<String>,
        /// Confirm each box as soon as it answers over its new config; without it, the
        /// configs must ask for auto_confirm, and the boxes' own confirms are awaited.
        #[arg(long)]
        confirm: bool,
        /// How long a wave may take to end confirmed or rolled back, in seconds.
        #[arg(long, default_value_t = renkei::fleet::rollout::DEFAULT_SETTLE_SECS)]
        settle_secs: u64,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Confirm every box's pending config (the version each box reports pending).
    Confirm {
        #[command(flatten)]
        fleet: FleetArgs,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
}

/// What every fleet command needs.
#[derive(clap::Args)]
pub(crate) struct FleetArgs {
    /// The inventory (TOML: `[operator]` credentials and one `[[box]]` per box).
    #[arg(long)]
    pub(crate) inventory: PathBuf,
    /// Bound on one exchange with one box, in seconds.
    #[arg(long, default_value_t = renkei::fleet::DEFAULT_TIMEOUT_SECS)]
    pub(crate) timeout_secs: u64,
    /// Keep trying a box that does not answer for this many seconds (an on-demand box
    /// answers at its check-in, while its tunnel is up).
    #[arg(long = "wait", value_name = "SECS", default_value_t = 0)]
    pub(crate) wait_secs: u64,
    /// Boxes asked at once.
    #[arg(long, default_value_t = renkei::fleet::DEFAULT_CONCURRENCY)]
    pub(crate) concurrency: usize,
}

/// `renkei update ...`.
#[derive(Subcommand)]
pub(crate) enum UpdateAction {
    /// On the box, as root: check a bundle (signature against `update.ca_file`, compatible,
    /// newer version, size, nothing pending) and keep it for its install; the same checks as a
    /// push through the management API.
    Install {
        /// The box's configuration file.
        #[arg(long, short, default_value = config::DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// The bundle (`.raucb`).
        bundle: PathBuf,
    },
    /// On the box, as root (renkei-update.service): write the armed bundle to the inactive root
    /// slot with `rauc install`, so that the box boots it once, then reboot. Refused
    /// (`not_blessed`) unless the running slot is marked good and no trial boot waits. Exit 0:
    /// installed (or nothing armed); 1: the install failed; 3: refused; 2: invalid config.
    Apply {
        /// The box's configuration file.
        #[arg(long, short, default_value = config::DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// Do not reboot after a successful install.
        #[arg(long)]
        no_reboot: bool,
    },
    /// On the box, as root, once per boot (renkei-health.service): record this boot in
    /// `boot.json`; on a new slot's trial boot wait for renkei's health and mark the slot good,
    /// or mark it bad and reboot into the previous one; report a fallback or an interrupted
    /// install. A normal boot never reboots. Exit 0, or 1 when the trial failed.
    HealthCheck {
        /// The box's configuration file.
        #[arg(long, short, default_value = config::DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// Do not reboot after a failed trial.
        #[arg(long)]
        no_reboot: bool,
    },
    /// Send a bundle to a box's management API and print its answer.
    Push {
        #[command(flatten)]
        target: TargetArgs,
        /// The bundle (`.raucb`).
        bundle: PathBuf,
    },
    /// Show a box's firmware: running version, booted slot, pending bundle, last result.
    Status {
        #[command(flatten)]
        target: TargetArgs,
    },
}

/// Settings of a daemon without a configuration: nothing names them yet, so they come from the
/// command line. An enrolled daemon ignores them (its `[paths]` and `[status]` apply).
#[derive(clap::Args)]
pub(crate) struct UnenrolledArgs {
    /// Without a configuration: where the login-free enrolment page listens (HTTPS with a
    /// self-signed certificate; plain HTTP on loopback).
    #[arg(long, default_value_t = renkei::enrolment::DEFAULT_PAGE_LISTEN)]
    pub(crate) enrolment_listen: std::net::SocketAddr,
    /// Without a configuration: the state directory (the enrolment page's certificate).
    #[arg(long, default_value_os_t = config::Paths::default().state_dir)]
    pub(crate) state_dir: PathBuf,
    /// Without a configuration: the runtime directory (the control socket).
    #[arg(long, default_value_os_t = config::Paths::default().runtime_dir)]
    pub(crate) runtime_dir: PathBuf,
}

/// How the operator's tools reach a box's management API.
#[derive(clap::Args)]
pub(crate) struct TargetArgs {
    /// The box's management address (tunnel address and port).
    #[arg(long)]
    pub(crate) to: std::net::SocketAddr,
    /// The name in the box's TLS certificate.
    #[arg(long)]
    pub(crate) server_name: String,
    /// The operator's client certificate (PEM chain).
    #[arg(long)]
    pub(crate) cert: PathBuf,
    /// Its private key.
    #[arg(long)]
    pub(crate) key: PathBuf,
    /// The CA that signed the boxes' certificates.
    #[arg(long)]
    pub(crate) ca: PathBuf,
    /// Bound on one exchange, in seconds.
    #[arg(long, default_value_t = 30)]
    pub(crate) timeout_secs: u64,
}

impl TargetArgs {
    pub(crate) fn target(&self) -> renkei::control::client::Target {
        renkei::control::client::Target {
            address: self.to,
            server_name: self.server_name.clone(),
            certificate_file: self.cert.clone(),
            private_key_file: self.key.clone(),
            ca_file: self.ca.clone(),
            timeout: std::time::Duration::from_secs(self.timeout_secs),
        }
    }
}

/// Where `renkei timesync-conf` writes by default: a runtime drop-in of systemd-timesyncd.
pub(crate) const TIMESYNCD_DROP_IN: &str = "/run/systemd/timesyncd.conf.d/50-renkei.conf";

/// Where `renkei journal-upload-conf` writes by default: a runtime drop-in of
/// systemd-journal-upload.
pub(crate) const JOURNAL_UPLOAD_DROP_IN: &str = "/run/systemd/journal-upload.conf.d/50-renkei.conf";
