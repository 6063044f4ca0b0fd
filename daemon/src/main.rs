//! The `renkei` command: one binary for the daemon and the tools around it.
//!
//! Exit codes follow `nginx -t`: 0 for success, 2 for an invalid configuration, 1 for other
//! failures. `anyhow` stops here; the library speaks typed errors.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use renkei::config;

#[derive(Parser)]
#[command(
    name = "renkei",
    version,
    about = "Edge box of a regional medical information network"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
enum RemoteAction {
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
enum FleetAction {
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
struct FleetArgs {
    /// The inventory (TOML: `[operator]` credentials and one `[[box]]` per box).
    #[arg(long)]
    inventory: PathBuf,
    /// Bound on one exchange with one box, in seconds.
    #[arg(long, default_value_t = renkei::fleet::DEFAULT_TIMEOUT_SECS)]
    timeout_secs: u64,
    /// Keep trying a box that does not answer for this many seconds (an on-demand box
    /// answers at its check-in, while its tunnel is up).
    #[arg(long = "wait", value_name = "SECS", default_value_t = 0)]
    wait_secs: u64,
    /// Boxes asked at once.
    #[arg(long, default_value_t = renkei::fleet::DEFAULT_CONCURRENCY)]
    concurrency: usize,
}

/// `renkei update ...`.
#[derive(Subcommand)]
enum UpdateAction {
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
struct UnenrolledArgs {
    /// Without a configuration: where the login-free enrolment page listens (HTTPS with a
    /// self-signed certificate; plain HTTP on loopback).
    #[arg(long, default_value_t = renkei::enrolment::DEFAULT_PAGE_LISTEN)]
    enrolment_listen: std::net::SocketAddr,
    /// Without a configuration: the state directory (the enrolment page's certificate).
    #[arg(long, default_value_os_t = config::Paths::default().state_dir)]
    state_dir: PathBuf,
    /// Without a configuration: the runtime directory (the control socket).
    #[arg(long, default_value_os_t = config::Paths::default().runtime_dir)]
    runtime_dir: PathBuf,
}

/// How the operator's tools reach a box's management API.
#[derive(clap::Args)]
struct TargetArgs {
    /// The box's management address (tunnel address and port).
    #[arg(long)]
    to: std::net::SocketAddr,
    /// The name in the box's TLS certificate.
    #[arg(long)]
    server_name: String,
    /// The operator's client certificate (PEM chain).
    #[arg(long)]
    cert: PathBuf,
    /// Its private key.
    #[arg(long)]
    key: PathBuf,
    /// The CA that signed the boxes' certificates.
    #[arg(long)]
    ca: PathBuf,
    /// Bound on one exchange, in seconds.
    #[arg(long, default_value_t = 30)]
    timeout_secs: u64,
}

impl TargetArgs {
    fn target(&self) -> renkei::control::client::Target {
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

/// charon's strongswan.conf holds no secret (keys go over VICI).
const CHARON_CONF_MODE: u32 = 0o644;
/// Where `renkei timesync-conf` writes by default: a runtime drop-in of systemd-timesyncd.
const TIMESYNCD_DROP_IN: &str = "/run/systemd/timesyncd.conf.d/50-renkei.conf";
/// Where `renkei journal-upload-conf` writes by default: a runtime drop-in of
/// systemd-journal-upload.
const JOURNAL_UPLOAD_DROP_IN: &str = "/run/systemd/journal-upload.conf.d/50-renkei.conf";
/// The drop-ins are read by the services' own users.
const DROP_IN_MODE: u32 = 0o644;

/// Exit code for an invalid configuration, as `nginx -t` uses.
const EXIT_INVALID_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config, offline } => check(&config, offline),
        Command::Run { config, unenrolled } => run(&config, unenrolled),
        Command::CharonConf { config, output } => charon_conf(&config, output.as_deref()),
        Command::TimesyncConf { config, output } => {
            drop_in_from_config(&config, &output, renkei::timesync::timesyncd_conf)
        }
        Command::JournalUploadConf { config, output } => drop_in_from_config(
            &config,
            &output,
            renkei::journal::upload::journal_upload_conf,
        ),
        Command::JournalSeal {
            config,
            journal_dir,
            key_file,
            machine_id_file,
            scratch_dir,
        } => report(journal_seal(
            &renkei::journal::seal::SealPaths {
                machine_id_file,
                journal_dir,
                key_file,
                config_file: config,
            },
            &scratch_dir,
        )),
        Command::JournalVerify {
            verify_key,
            journalctl,
            paths,
        } => journal_verify(&journalctl, &verify_key, &paths),
        Command::Status {
            config,
            runtime_dir,
            json,
            all,
        } => {
            let detail = if all {
                renkei::status::PeerDetail::Every
            } else {
                renkei::status::PeerDetail::Summarised
            };
            report(status(&config, runtime_dir, json, detail))
        }
        Command::Tunnel { config, action } => report(tunnel_action(&config, &action)),
        Command::Keygen {
            private_key,
            operator: true,
            ..
        } => report(keygen_operator(private_key.as_deref())),
        Command::Keygen {
            private_key,
            operator: false,
            tls_key,
            csr,
        } => report(keygen(
            &private_key
                .unwrap_or_else(|| PathBuf::from(renkei::enrolment::DEFAULT_WIREGUARD_KEY_FILE)),
            tls_key.as_deref().zip(csr.as_deref()),
        )),
        Command::Sign { key, config } => sign(&key, &config),
        Command::Push {
            target,
            signature,
            wait_secs,
            config,
        } => report(push(&target, signature, wait_secs, &config)),
        Command::Confirm { target, version } => report(remote(&target, Some(version))),
        Command::Remote {
            target,
            action: None,
        } => report(remote(&target, None)),
        Command::Remote {
            target,
            action: Some(action),
        } => report(remote_hubs(&target, action)),
        Command::Fleet { action } => fleet(action),
        Command::Update {
            action: UpdateAction::Apply { config, no_reboot },
        } => update_apply(&config, no_reboot),
        Command::Update {
            action: UpdateAction::HealthCheck { config, no_reboot },
        } => update_health_check(&config, no_reboot),
        Command::Update { action } => report(update_elsewhere(action)),
        Command::Passwd { totp: false, .. } => report(passwd()),
        Command::Passwd {
            totp: true,
            state_dir,
        } => report(passwd_totp(&state_dir)),
    }
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("renkei: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: &std::path::Path, offline: bool) -> ExitCode {
    let loaded = if offline {
        config::load_with(path, config::Files::Skip)
    } else {
        renkei::preflight::load(path)
    };
    match loaded {
        Ok(config) if offline => {
            println!(
                "{}: ok (offline: no file it names was read): {}",
                path.display(),
                config.summary()
            );
            ExitCode::SUCCESS
        }
        Ok(config) => {
            println!("{}: ok: {}", path.display(), config.summary());
            ExitCode::SUCCESS
        }
        Err(diagnostics) => invalid(path, &diagnostics),
    }
}

/// Prints (or writes to `output`) charon's strongswan.conf for the config's `[ipsec]`; exit 2
/// on an invalid config, 1 on a config without `[ipsec]` or a file that cannot be written.
/// The image's charon unit runs it as its `ExecCondition`, so exit 1 means "no charon here".
fn charon_conf(path: &std::path::Path, output: Option<&std::path::Path>) -> ExitCode {
    match config::load_with(path, config::Files::Skip) {
        Ok(config) => match renkei::carrier::charon_conf(&config) {
            Some(text) => match output {
                None => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                // Whole or not at all: charon never reads half a file, and a failed write
                // leaves the previous one.
                Some(output) => report(
                    renkei::durable::write_durably(output, text.as_bytes(), CHARON_CONF_MODE)
                        .map_err(anyhow::Error::from),
                ),
            },
            None => {
                eprintln!("renkei: {} has no [ipsec] section", path.display());
                ExitCode::FAILURE
            }
        },
        Err(diagnostics) => invalid(path, &diagnostics),
    }
}

/// Writes (or, without `[time]`, removes) the timesyncd drop-in `output` for the config at
/// `path`; exit 2 on an invalid config (the drop-in in place stays), 1 when the file cannot be
/// written.
/// Prints what sealing did on the console (the unit's output goes to the console only: the
/// verification key must not be written into the journal it verifies).
fn journal_seal(
    paths: &renkei::journal::seal::SealPaths,
    scratch_dir: &std::path::Path,
) -> anyhow::Result<()> {
    use renkei::journal::seal::Sealing;
    use renkei::journal::seal_epoch::{advance_to_now, Advance};
    let journalctl = std::path::Path::new(renkei::journal::JOURNALCTL);
    match renkei::journal::seal::ensure_sealing(paths, journalctl)? {
        Sealing::Made { verification_key } => println!(
            "renkei: the journal is sealed from now on; journal verification key for the operator: {verification_key}"
        ),
        Sealing::Kept => {}
        Sealing::KeyRemoved => println!(
            "renkei: the box is enrolled; the journal verification key was removed from it ({})",
            paths.key_file.display()
        ),
    }
    let key = renkei::journal::seal::sealing_key(paths)?;
    match advance_to_now(
        &key,
        std::path::Path::new(renkei::journal::JOURNAL_REMOTE),
        scratch_dir,
        std::time::SystemTime::now(),
    )? {
        Advance::Current { .. } => {}
        Advance::Moved { from, to } => println!(
            "renkei: the journal's sealing key moved on from interval {from} to {to} (the box was off, or its last move was lost in a power cut)"
        ),
        Advance::ClockBehind { epoch, now } => println!(
            "renkei: the clock is behind the journal's sealing key (interval {epoch}, now {}): entries are dated before the last seal until the clock passes it",
            now.map_or_else(|| "before its start".to_string(), |now| now.to_string())
        ),
    }
    Ok(())
}

/// One line per file, PASS or FAIL with why; exit 1 if any fails or none was found.
fn journal_verify(journalctl: &std::path::Path, key: &str, paths: &[PathBuf]) -> ExitCode {
    match renkei::journal::verify::verify_files(journalctl, key, paths) {
        Err(e) => report(Err(e.into())),
        Ok(verdicts) => {
            let mut failed = 0;
            for verdict in &verdicts {
                match &verdict.problem {
                    None => println!("PASS {} {}", verdict.file.display(), verdict.summary),
                    Some(problem) => {
                        failed += 1;
                        println!("FAIL {}: {problem}", verdict.file.display());
                    }
                }
            }
            println!("{} files, {failed} failed", verdicts.len());
            if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Writes the drop-in `text_of` gives for the config at `path` (a system service's settings
/// from renkei's config), or removes it when there is none. An invalid config changes nothing.
fn drop_in_from_config(
    path: &std::path::Path,
    output: &std::path::Path,
    text_of: fn(&config::Config) -> Option<String>,
) -> ExitCode {
    let config = match config::load_with(path, config::Files::Skip) {
        Ok(config) => config,
        Err(diagnostics) => return invalid(path, &diagnostics),
    };
    match text_of(&config) {
        Some(text) => {
            let written = match output.parent().map_or(Ok(()), std::fs::create_dir_all) {
                Err(e) => Err(anyhow::anyhow!(
                    "making the folder of {}: {e}",
                    output.display()
                )),
                Ok(()) => renkei::durable::write_durably(output, text.as_bytes(), DROP_IN_MODE)
                    .map_err(anyhow::Error::from),
            };
            report(written)
        }
        None => match std::fs::remove_file(output) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => ExitCode::SUCCESS,
            Err(e) => report(Err(anyhow::anyhow!("removing {}: {e}", output.display()))),
        },
    }
}

/// Prints every diagnostic and the count; exit 2.
fn invalid(path: &std::path::Path, diagnostics: &config::Diagnostics) -> ExitCode {
    for d in &diagnostics.0 {
        eprintln!("{d}");
    }
    eprintln!(
        "{}: {} error(s); configuration is invalid",
        path.display(),
        diagnostics.0.len()
    );
    ExitCode::from(EXIT_INVALID_CONFIG)
}

fn run(path: &std::path::Path, unenrolled: UnenrolledArgs) -> ExitCode {
    if matches!(std::fs::symlink_metadata(path), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
    {
        return run_unenrolled(path, unenrolled);
    }
    run_enrolled(path, &unenrolled.state_dir)
}

/// `state_dir` is `--state-dir`: where recovery looks for push files when the config file does
/// not parse far enough to name its own state directory.
fn run_enrolled(path: &std::path::Path, state_dir: &std::path::Path) -> ExitCode {
    let (config, bytes, recovery) = match renkei::supervisor::load_recovering(path, state_dir) {
        Ok(loaded) => loaded,
        Err(diagnostics) => {
            for d in &diagnostics.0 {
                eprintln!("{d}");
            }
            eprintln!("renkei: refusing to start with an invalid configuration");
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
    };
    renkei::logging::init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("renkei: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(renkei::supervisor::run_loaded(
        path, config, bytes, recovery,
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "renkei stopped");
            eprintln!("renkei: {e}");
            ExitCode::FAILURE
        }
    }
}

/// No configuration yet (a box fresh from the image): run unenrolled, showing the enrolment
/// data made by first boot (`renkei keygen`) beside where the configuration will go; once a
/// valid configuration is there, run enrolled in the same process.
fn run_unenrolled(path: &std::path::Path, args: UnenrolledArgs) -> ExitCode {
    renkei::logging::init();
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    let key_file = dir.join("wg.key");
    let csr_file = dir.join("box.csr");
    let enrolment = match renkei::enrolment::Enrolment::read(&key_file, &csr_file) {
        Ok(enrolment) => enrolment,
        Err(e) => {
            tracing::error!(error = %e, "no configuration and no enrolment data");
            eprintln!(
                "renkei: no configuration at {} and no enrolment data: {e} (first boot runs `renkei keygen`)",
                path.display()
            );
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("renkei: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let state_dir = args.state_dir.clone();
    let outcome = runtime.block_on(renkei::supervisor::run_unenrolled(
        renkei::supervisor::Unenrolled {
            config_file: path.to_path_buf(),
            enrolment,
            runtime_dir: args.runtime_dir,
            state_dir: args.state_dir,
            page_listen: args.enrolment_listen,
        },
    ));
    // Whatever the unenrolled daemon still held goes with its runtime.
    drop(runtime);
    match outcome {
        Ok(renkei::supervisor::UnenrolledExit::Stopped) => ExitCode::SUCCESS,
        Ok(renkei::supervisor::UnenrolledExit::Configured) => run_enrolled(path, &state_dir),
        Err(e) => {
            tracing::error!(error = %e, "renkei stopped");
            eprintln!("renkei: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The runtime directory named by a config, without requiring its key files to be readable
/// (an administrator in the `renkei` group may run `renkei status`). Without a config the box
/// is unenrolled and its daemon uses the default runtime directory.
fn runtime_dir_of(path: &std::path::Path) -> anyhow::Result<PathBuf> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(config::Paths::default().runtime_dir)
        }
        Err(e) => anyhow::bail!("cannot read {}: {e}", path.display()),
    };
    let config: config::Config = toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.message()))?;
    Ok(config.paths.runtime_dir)
}

fn status(
    path: &std::path::Path,
    runtime_dir: Option<PathBuf>,
    json: bool,
    detail: renkei::status::PeerDetail,
) -> anyhow::Result<()> {
    let runtime_dir = match runtime_dir {
        Some(dir) => dir,
        None => runtime_dir_of(path)?,
    };
    let answer = renkei::status::control::request(&runtime_dir, "status")?;
    if let Some(error) = answer.strip_prefix("error: ") {
        anyhow::bail!("{error}");
    }
    if json {
        println!("{answer}");
        return Ok(());
    }
    let document: serde_json::Value = serde_json::from_str(&answer)?;
    match renkei::enrolment::summary(&document) {
        Some(unenrolled) => print!("{unenrolled}"),
        // The daemon's document carries the enrolment data (from the key it runs with), so
        // the summary shows it once, also to a group member who cannot read the key files.
        None => print!("{}", renkei::status::summary_with(&document, detail)),
    }
    Ok(())
}

fn tunnel_action(path: &std::path::Path, action: &str) -> anyhow::Result<()> {
    let answer = renkei::status::control::request(&runtime_dir_of(path)?, action)?;
    match answer.strip_prefix("error: ") {
        Some(error) => anyhow::bail!("{error}"),
        None => {
            println!("{answer}");
            Ok(())
        }
    }
}

fn keygen(
    private_key: &std::path::Path,
    tls: Option<(&std::path::Path, &std::path::Path)>,
) -> anyhow::Result<()> {
    use renkei::keys;
    let (public, _) = keys::ensure_keypair(private_key)?;
    let Some((tls_key, csr)) = tls else {
        println!("{}", keys::encode_key(&public));
        return Ok(());
    };
    let common_name = renkei::enrolment::csr_common_name(&public);
    let made = renkei::enrolment::ensure_tls_key_and_csr(tls_key, csr, &common_name)?;
    println!("renkei enrolment data (OPS-1): give these to the network operator");
    println!("  WireGuard public key: {}", keys::encode_key(&public));
    println!("  CSR SHA-256:          {}", made.csr_sha256);
    println!("  CSR file:             {} ({common_name})", csr.display());
    println!(
        "  Enrolment page:       https://<this box's LAN address>:{}/ once renkei.service runs (renkei status shows the address)",
        renkei::enrolment::DEFAULT_PAGE_PORT
    );
    Ok(())
}

/// The operator's signing key: only where `--private-key` says, and never over an existing
/// file (neither the key nor its `.pub`).
fn keygen_operator(private_key: Option<&std::path::Path>) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let Some(private_key) = private_key else {
        anyhow::bail!(
            "--operator needs --private-key FILE: the signing key stays at the operator, never on a box's key path"
        );
    };
    let public_path = renkei::keys::public_key_path(private_key);
    for path in [private_key, public_path.as_path()] {
        anyhow::ensure!(
            std::fs::symlink_metadata(path).is_err(),
            "{} exists; refusing to overwrite a key",
            path.display()
        );
    }
    let pair = renkei::signing::SigningKeyPair::generate();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(private_key)
        .map_err(|e| anyhow::anyhow!("{}: {e}", private_key.display()))?;
    file.write_all(pair.private_pem()?.as_bytes())?;
    file.sync_all()?;
    let public = pair.public();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&public_path)
        .map_err(|e| anyhow::anyhow!("{}: {e}", public_path.display()))?;
    file.write_all(public.to_pem().as_bytes())?;
    print!("{}", public.to_pem());
    println!("fingerprint {}", public.fingerprint());
    Ok(())
}

fn read_signing_key(key: &std::path::Path) -> anyhow::Result<renkei::signing::SigningKeyPair> {
    let text =
        std::fs::read_to_string(key).map_err(|e| anyhow::anyhow!("{}: {e}", key.display()))?;
    renkei::signing::SigningKeyPair::from_pem(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", key.display()))
}

fn signature_path(config: &std::path::Path) -> PathBuf {
    let mut name = config.as_os_str().to_owned();
    name.push(".sig");
    PathBuf::from(name)
}

/// Signs only what a box could accept: the offline check passes and `[meta] box` names the box
/// (a signature on a config without one would be refused by every box, AUTH-4).
fn sign(key: &std::path::Path, config: &std::path::Path) -> ExitCode {
    let names_a_box = |c: &config::Config| {
        match c.meta.box_identity {
        Some(_) => Vec::new(),
        None => vec![config::Problem {
            path: config::FieldPath::root("meta"),
            message: "names no box: add `box = \"<the box's certificate identity>\"`; a box refuses a pushed config that is not for it".to_string(),
        }],
    }
    };
    // The bytes checked are the bytes signed: read once.
    let bytes = match std::fs::read(config) {
        Ok(bytes) => bytes,
        Err(e) => return report(Err(anyhow::anyhow!("{}: {e}", config.display()))),
    };
    let base_dir = config.parent().unwrap_or(std::path::Path::new("."));
    let checked = match std::str::from_utf8(&bytes) {
        Ok(text) => config::load_str_with(
            text,
            config,
            base_dir,
            config::Files::SkipThen(&names_a_box),
        )
        .map(drop),
        // Read again for the line and column of the first bad byte; never signed either way.
        Err(_) => match config::load_with(config, config::Files::Skip) {
            Err(diagnostics) => Err(diagnostics),
            Ok(_) => Err(config::Diagnostics(vec![config::Diagnostic {
                file: config.to_path_buf(),
                line: 1,
                column: 1,
                field: String::new(),
                message: "config is not valid UTF-8".to_string(),
            }])),
        },
    };
    if let Err(diagnostics) = checked {
        eprintln!("renkei: refusing to sign {}", config.display());
        return invalid(config, &diagnostics);
    }
    report(write_signature(key, config, &bytes))
}

fn write_signature(
    key: &std::path::Path,
    config: &std::path::Path,
    bytes: &[u8],
) -> anyhow::Result<()> {
    let pair = read_signing_key(key)?;
    let out = signature_path(config);
    std::fs::write(&out, format!("{}\n", pair.sign(bytes)))
        .map_err(|e| anyhow::anyhow!("{}: {e}", out.display()))?;
    println!(
        "{}: signed by {}",
        out.display(),
        pair.public().fingerprint()
    );
    Ok(())
}

fn client_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn print_reply(reply: &renkei::control::client::Reply) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(&reply.body)?);
    anyhow::ensure!(reply.is_success(), "the box answered {}", reply.status);
    Ok(())
}

fn push(
    target: &TargetArgs,
    signature: Option<PathBuf>,
    wait_secs: u64,
    config: &std::path::Path,
) -> anyhow::Result<()> {
    use renkei::control::client;
    let bytes = std::fs::read(config).map_err(|e| anyhow::anyhow!("{}: {e}", config.display()))?;
    let signature_file = signature.unwrap_or_else(|| signature_path(config));
    let signature = std::fs::read_to_string(&signature_file).map_err(|e| {
        // The usual cause: the config was never signed; say how to.
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow::anyhow!(
                "{}: no signature; sign the config first: renkei sign --key <operator signing key> {}",
                signature_file.display(),
                config.display()
            )
        } else {
            anyhow::anyhow!("{}: {e}", signature_file.display())
        }
    })?;
    let target = target.target();
    let runtime = client_runtime()?;
    runtime.block_on(async {
        let reply = renkei::fleet::reach::retry_unreachable(
            std::time::Duration::from_secs(wait_secs),
            || client::push(&target, bytes.clone(), &signature),
            |err| eprintln!("renkei: {err}; retrying"),
        )
        .await?;
        print_reply(&reply)?;
        // Reading the state back over the new config proves the box is reachable again, which
        // an auto_confirm config waits for.
        let state = client::status(&target).await?;
        eprintln!("renkei: the box now reports:");
        print_reply(&state)
    })
}

fn remote(target: &TargetArgs, confirm: Option<Option<u64>>) -> anyhow::Result<()> {
    use renkei::control::client;
    let target = target.target();
    client_runtime()?.block_on(async {
        let reply = match confirm {
            Some(version) => client::confirm(&target, version).await?,
            None => client::status(&target).await?,
        };
        print_reply(&reply)
    })
}

/// `renkei remote ... hubs | prefer-hub NAME | prefer-hub --clear`.
fn remote_hubs(target: &TargetArgs, action: RemoteAction) -> anyhow::Result<()> {
    use renkei::control::client;
    let target = target.target();
    client_runtime()?.block_on(async {
        let reply = match action {
            RemoteAction::Hubs => client::hubs(&target).await?,
            RemoteAction::PreferHub { hub, .. } => {
                client::prefer_hub(&target, hub.as_deref()).await?
            }
            RemoteAction::Journal { out } => return fetch_journal(&target, &out).await,
        };
        print_reply(&reply)
    })
}

/// `renkei remote ... journal --out DIR`: every file the box lists, written under `out`.
async fn fetch_journal(
    target: &renkei::control::client::Target,
    out: &std::path::Path,
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use renkei::control::client;
    use renkei::journal::files::{is_file_name, JournalFile};
    let listing = client::journal_files(target).await?;
    if !listing.is_success() {
        return print_reply(&listing);
    }
    let files: Vec<JournalFile> = serde_json::from_value(listing.body["files"].clone())
        .context("the box's list of journal files")?;
    anyhow::ensure!(!files.is_empty(), "the box lists no journal files");
    for file in &files {
        // The box names the files: only journald's own names are written here.
        anyhow::ensure!(
            is_file_name(&file.name),
            "the box listed {:?}, not a journal file's name; nothing more fetched",
            file.name
        );
        let bytes = match client::journal_file(target, &file.name).await? {
            Ok(bytes) => bytes,
            Err(reply) => {
                print_reply(&reply)?;
                anyhow::bail!("{}: not fetched", file.name);
            }
        };
        let path = out.join(&file.name);
        if let Some(folder) = path.parent() {
            std::fs::create_dir_all(folder)
                .with_context(|| format!("cannot create {}", folder.display()))?;
        }
        std::fs::write(&path, &bytes)
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!(
            "{} ({} bytes{})",
            path.display(),
            bytes.len(),
            if file.active {
                ", still being written on the box"
            } else {
                ""
            }
        );
    }
    eprintln!(
        "renkei: check them with the box's verification key: renkei journal-verify --verify-key KEY {}",
        out.display()
    );
    Ok(())
}

/// `renkei fleet status|push|confirm`: exit 2 for an invalid inventory, 1 when a box did not
/// answer or a rollout stopped.
fn fleet(action: FleetAction) -> ExitCode {
    use renkei::fleet::{inventory, reach::Reach, rollout, status};
    let args = match &action {
        FleetAction::Status { fleet, .. }
        | FleetAction::Push { fleet, .. }
        | FleetAction::Confirm { fleet, .. } => fleet,
    };
    let inventory = match inventory::load(&args.inventory) {
        Ok(inventory) => inventory,
        Err(diagnostics) => {
            for d in &diagnostics.0 {
                eprintln!("{d}");
            }
            eprintln!(
                "{}: {} error(s); the inventory is invalid",
                args.inventory.display(),
                diagnostics.0.len()
            );
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
    };
    let reach = Reach {
        credentials: inventory.credentials.clone(),
        timeout: std::time::Duration::from_secs(args.timeout_secs),
        wait: std::time::Duration::from_secs(args.wait_secs),
    };
    let concurrency = args.concurrency;
    let print = |json: bool, value: anyhow::Result<serde_json::Value>, table: String| {
        if json {
            match value {
                Ok(value) => println!("{value:#}"),
                Err(e) => eprintln!("renkei: {e:#}"),
            }
        } else {
            print!("{table}");
        }
    };
    let run = async {
        match action {
            FleetAction::Status { json, .. } => {
                let statuses = status::query(&inventory, &reach, concurrency).await;
                print(
                    json,
                    serde_json::to_value(&statuses).map_err(Into::into),
                    status::table(&statuses),
                );
                // A box that answered with a refusal (TLS, HTTP) has no facts either.
                let silent = statuses.iter().filter(|s| !s.reachable).count();
                let refused = statuses
                    .iter()
                    .filter(|s| s.reachable && s.facts.is_none())
                    .count();
                anyhow::ensure!(
                    silent + refused == 0,
                    "{silent} box(es) did not answer, {refused} refused"
                );
                Ok(())
            }
            FleetAction::Push {
                configs,
                canary,
                confirm,
                settle_secs,
                json,
                ..
            } => {
                let settings = rollout::Rollout {
                    folder: configs,
                    canary_groups: canary,
                    confirmation: if confirm {
                        rollout::Confirmation::ByOperator
                    } else {
                        rollout::Confirmation::ByBox
                    },
                    settle: std::time::Duration::from_secs(settle_secs),
                    concurrency,
                };
                let report = rollout::push(&inventory, &reach, &settings).await?;
                print(
                    json,
                    serde_json::to_value(&report).map_err(Into::into),
                    rollout::push_table(&report),
                );
                match report.stopped_after {
                    Some(wave) => anyhow::bail!(
                        "the rollout stopped after the {wave} wave: see the boxes above"
                    ),
                    None => Ok(()),
                }
            }
            FleetAction::Confirm { json, .. } => {
                let reports = rollout::confirm_all(&inventory, &reach, concurrency).await;
                print(
                    json,
                    serde_json::to_value(&reports).map_err(Into::into),
                    rollout::confirm_table(&reports),
                );
                let failed = reports
                    .iter()
                    .filter(|r| {
                        !matches!(
                            r.outcome,
                            rollout::ConfirmOutcome::Confirmed { .. }
                                | rollout::ConfirmOutcome::NothingPending { .. }
                        )
                    })
                    .count();
                anyhow::ensure!(failed == 0, "{failed} box(es) not confirmed");
                Ok(())
            }
        }
    };
    report(client_runtime().and_then(|runtime| runtime.block_on(run)))
}

/// `renkei update install|push|status` (apply and health-check have exit codes of their own
/// and are dispatched before; they are handled here too so the match stays whole).
fn update_elsewhere(action: UpdateAction) -> anyhow::Result<()> {
    use renkei::control::client;
    match action {
        UpdateAction::Install {
            config: path,
            bundle,
        } => {
            anyhow::ensure!(
                nix::unistd::geteuid().is_root(),
                "renkei update install must run as root (it writes the box's update spool)"
            );
            let config = config::load(&path).map_err(|d| anyhow::anyhow!("{d}"))?;
            let intake = renkei::update::Intake::new(&config).ok_or_else(|| {
                anyhow::anyhow!(
                    "{}: {}",
                    path.display(),
                    renkei::update::Refusal::NotConfigured
                )
            })?;
            client_runtime()?.block_on(async {
                let outcome = renkei::update::install_local(&intake, &bundle).await;
                intake.record(&outcome, renkei::update::LOCAL_INSTALLER, None);
                match outcome {
                    Ok(pending) => {
                        println!("{}", serde_json::to_string_pretty(&pending)?);
                        Ok(())
                    }
                    Err(refusal) => anyhow::bail!(
                        "{}: refused ({}): {refusal}",
                        bundle.display(),
                        refusal.reason().as_str()
                    ),
                }
            })
        }
        UpdateAction::Apply { config, no_reboot } => {
            anyhow::ensure!(
                update_apply(&config, no_reboot) == ExitCode::SUCCESS,
                "renkei update apply did not succeed"
            );
            Ok(())
        }
        UpdateAction::HealthCheck { config, no_reboot } => {
            anyhow::ensure!(
                update_health_check(&config, no_reboot) == ExitCode::SUCCESS,
                "renkei update health-check did not pass"
            );
            Ok(())
        }
        UpdateAction::Push { target, bundle } => {
            let target = target.target();
            client_runtime()?
                .block_on(async { print_reply(&client::push_bundle(&target, &bundle).await?) })
        }
        UpdateAction::Status { target } => {
            let target = target.target();
            client_runtime()?
                .block_on(async { print_reply(&client::update_status(&target).await?) })
        }
    }
}

/// Exit code of `renkei update apply` when the install was refused (`not_blessed`).
const EXIT_UPDATE_REFUSED: u8 = 3;

/// `renkei update apply`: see [`UpdateAction::Apply`].
fn update_apply(path: &std::path::Path, no_reboot: bool) -> ExitCode {
    use renkei::update::{apply::Applied, system::System as _};
    if !nix::unistd::geteuid().is_root() {
        eprintln!("renkei: renkei update apply must run as root (it installs through rauc)");
        return ExitCode::FAILURE;
    }
    // Only `[update]` is needed: the files the config names (keys) are the daemon's business.
    let config = match config::load_with(path, config::Files::Skip) {
        Ok(config) => config,
        Err(diagnostics) => return invalid(path, &diagnostics),
    };
    renkei::logging::init();
    let Some(spool_dir) = config.update_spool_dir() else {
        eprintln!(
            "renkei: {}: {}",
            path.display(),
            renkei::update::Refusal::NotConfigured
        );
        return ExitCode::FAILURE;
    };
    let spool = renkei::update::spool::Spool::new(spool_dir);
    let running = renkei::update::status::running_version();
    let system = renkei::update::system::Host;
    let run = async {
        let applied = renkei::update::apply::apply(&spool, &system, &running).await?;
        if let Applied::Installed(_) = &applied {
            if !no_reboot {
                system.reboot().await?;
            }
        }
        anyhow::Ok(applied)
    };
    let outcome = match client_runtime() {
        Ok(runtime) => runtime.block_on(run),
        Err(e) => Err(e),
    };
    match outcome {
        Ok(Applied::NothingPending) => {
            println!("no firmware update is armed");
            ExitCode::SUCCESS
        }
        Ok(Applied::Installed(trial)) => {
            println!(
                "installed {} into slot {}; it boots once next{}",
                trial.version,
                trial.slot,
                if no_reboot { "" } else { " (rebooting)" }
            );
            ExitCode::SUCCESS
        }
        Ok(Applied::Refused(why)) => {
            eprintln!("renkei: refused (not_blessed): {why}");
            ExitCode::from(EXIT_UPDATE_REFUSED)
        }
        Ok(Applied::Failed(why)) => {
            eprintln!("renkei: install_failed: {why}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("renkei: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `renkei update health-check`: see [`UpdateAction::HealthCheck`]. It must run even when the
/// config does not load (a new slot that cannot read the box's config is unhealthy): then it
/// uses the default paths and deadline.
fn update_health_check(path: &std::path::Path, no_reboot: bool) -> ExitCode {
    use renkei::update::{boot::Verdict, health::HealthCheck, system::System as _};
    if !nix::unistd::geteuid().is_root() {
        eprintln!("renkei: renkei update health-check must run as root (it calls rauc)");
        return ExitCode::FAILURE;
    }
    renkei::logging::init();
    let loaded = config::load_with(path, config::Files::Skip);
    match &loaded {
        // A box not enrolled yet has no config: nothing is wrong with it.
        Err(_) if !path.exists() => {
            tracing::info!(config = %path.display(), "no config yet (the box is not enrolled); the health check uses the default paths");
        }
        Err(diagnostics) => {
            tracing::error!(config = %path.display(), error = %diagnostics, "the config does not load; the health check uses the default paths");
        }
        Ok(_) => {}
    }
    let paths = loaded.as_ref().map(|c| c.paths.clone()).unwrap_or_default();
    let update = loaded.as_ref().ok().and_then(|c| c.update.clone());
    let spool_dir = update
        .as_ref()
        .and_then(|u| u.spool_dir.clone())
        .unwrap_or_else(|| paths.state_dir.join(config::UPDATE_SPOOL_DIR_NAME));
    let deadline_secs = update
        .as_ref()
        .map_or(config::DEFAULT_HEALTH_DEADLINE_SECS, |u| {
            u.health_deadline_secs
        });
    let spool = renkei::update::spool::Spool::new(spool_dir);
    let keyring =
        renkei::update::keyring::ImageKeyring::of_box(update.as_ref().map(|u| u.ca_file.clone()));
    let running = renkei::update::status::running_version();
    let system = renkei::update::system::Host;
    let check = HealthCheck {
        fresh_since: renkei::update::health::FreshSince::BootStart,
        deadline: std::time::Duration::from_secs(deadline_secs),
    };
    let run = async {
        let runtime_dir = paths.runtime_dir.clone();
        let ask = move || renkei::status::control::request(&runtime_dir, "status");
        let verdict = renkei::update::boot::check_boot(&spool, &system, &running, &keyring, || {
            check.wait(ask)
        })
        .await?;
        if verdict.reboots() && !no_reboot {
            system.reboot().await?;
        }
        anyhow::Ok(verdict)
    };
    let outcome = match client_runtime() {
        Ok(runtime) => runtime.block_on(run),
        Err(e) => Err(e),
    };
    match outcome {
        Ok(Verdict::NormalBoot) => {
            println!("a normal boot: no update to judge");
            ExitCode::SUCCESS
        }
        Ok(Verdict::Blessed(trial)) => {
            println!("blessed: slot {} runs {}", trial.slot, trial.version);
            ExitCode::SUCCESS
        }
        Ok(Verdict::FellBack(trial, why)) => {
            println!(
                "fell_back from {} in slot {}: {why}",
                trial.version, trial.slot
            );
            ExitCode::SUCCESS
        }
        Ok(Verdict::Interrupted(why)) => {
            println!("interrupted: {why}");
            ExitCode::SUCCESS
        }
        Ok(Verdict::FailedHealthCheck(trial, why)) => {
            eprintln!(
                "renkei: failed_health_check of {} in slot {}: {why}",
                trial.version, trial.slot
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("renkei: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn passwd() -> anyhow::Result<()> {
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let password = line.trim_end_matches(['\r', '\n']);
    anyhow::ensure!(
        password.chars().count() >= 12,
        "the password must be at least 12 characters"
    );
    let salt = SaltString::generate(&mut OsRng);
    let hash = argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("hashing failed: {e}"))?;
    println!("{hash}");
    Ok(())
}

/// Tries at typing the code before `passwd --totp` gives up.
const TOTP_ENROL_TRIES: usize = 3;

fn passwd_totp(state_dir: &std::path::Path) -> anyhow::Result<()> {
    use renkei::status::second_factor::{self, Enrolled, FactorStore};
    let store = FactorStore::new(state_dir);
    let secret = second_factor::new_secret()?;
    let uri = second_factor::otpauth_uri(&secret);
    println!("{}", second_factor::qr_text(&uri)?);
    println!("key: {secret}");
    if store.path().exists() {
        println!("(this replaces the second factor enrolled before)");
    }
    for _ in 0..TOTP_ENROL_TRIES {
        println!("code from the app:");
        let mut line = String::new();
        if std::io::stdin().read_line(&mut line)? == 0 {
            anyhow::bail!("no code given: nothing stored");
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        match Enrolled::enrol(&secret, line.trim(), now)? {
            Ok((factor, recovery_codes)) => {
                store.save(&factor)?;
                store.hand_to_owner_of(state_dir)?;
                println!("stored in {}", store.path().display());
                println!("recovery codes (each works once; shown only now):");
                for code in recovery_codes {
                    println!("  {code}");
                }
                return Ok(());
            }
            Err(_) => println!("wrong code: type the newest code the app shows"),
        }
    }
    anyhow::bail!("no right code after {TOTP_ENROL_TRIES} tries: nothing stored")
}
