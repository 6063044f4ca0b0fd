//! `renkei update`: firmware bundles made, pushed, installed and blessed or rolled back.

use std::process::ExitCode;

use renkei::config;

use crate::cli::UpdateAction;
use crate::client::{client_runtime, print_reply};
use crate::exit::invalid;

/// `renkei update install|push|status` (apply and health-check have exit codes of their own
/// and are dispatched before; they are handled here too so the match stays whole).
pub(crate) fn update_elsewhere(action: UpdateAction) -> anyhow::Result<()> {
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
pub(crate) fn update_apply(path: &std::path::Path, no_reboot: bool) -> ExitCode {
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
pub(crate) fn update_health_check(path: &std::path::Path, no_reboot: bool) -> ExitCode {
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
        let ask = move || renkei::control_socket::request(&runtime_dir, "status");
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
