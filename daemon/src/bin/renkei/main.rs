//! The `renkei` command: one binary for the daemon and the tools around it.
//!
//! Exit codes follow `nginx -t`: 0 for success, 2 for an invalid configuration, 1 for other
//! failures. `anyhow` stops here; the library speaks typed errors.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

mod cli;
mod client;
mod configure;
mod daemon;
mod exit;
mod fleet;
mod journal;
mod keys;
mod local;
mod passwd;
mod remote;
mod update;

use cli::{Cli, Command, UpdateAction};
use configure::{charon_conf, check, drop_in_from_config};
use daemon::run;
use exit::report;
use journal::{journal_seal, journal_verify};
use keys::{keygen, keygen_operator, sign};
use local::{status, tunnel_action};
use passwd::passwd_totp;
use remote::{push, remote_hubs};
use update::{update_apply, update_elsewhere, update_health_check};

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
        Command::Confirm { target, version } => report(remote::remote(&target, Some(version))),
        Command::Remote {
            target,
            action: None,
        } => report(remote::remote(&target, None)),
        Command::Remote {
            target,
            action: Some(action),
        } => report(remote_hubs(&target, action)),
        Command::Fleet { action } => fleet::fleet(action),
        Command::Update {
            action: UpdateAction::Apply { config, no_reboot },
        } => update_apply(&config, no_reboot),
        Command::Update {
            action: UpdateAction::HealthCheck { config, no_reboot },
        } => update_health_check(&config, no_reboot),
        Command::Update { action } => report(update_elsewhere(action)),
        Command::Passwd { totp: false, .. } => report(passwd::passwd()),
        Command::Passwd {
            totp: true,
            state_dir,
        } => report(passwd_totp(&state_dir)),
    }
}
