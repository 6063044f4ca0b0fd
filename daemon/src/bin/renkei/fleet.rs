//! `renkei fleet`: the operator's commands across every box of an inventory.

use std::process::ExitCode;

use crate::cli::FleetAction;
use crate::client::client_runtime;
use crate::exit::{report, EXIT_INVALID_CONFIG};

/// `renkei fleet status|push|confirm`: exit 2 for an invalid inventory, 1 when a box did not
/// answer or a rollout stopped.
pub(crate) fn fleet(action: FleetAction) -> ExitCode {
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
