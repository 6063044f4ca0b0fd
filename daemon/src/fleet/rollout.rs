//! `renkei fleet push` and `renkei fleet confirm`.
//!
//! A push folder holds, per box of the inventory, `<box>.toml` and its signature
//! `<box>.toml.sig` (what `renkei sign` writes). Every file is read before anything is sent,
//! so a missing signature stops the rollout before any box changes. The canary wave goes
//! first; each box of a wave must end confirmed (by this tool with `--confirm`, or by the
//! box's own auto_confirm) before the next wave starts. The first refusal, rollback or box
//! that cannot be reached stops the rollout: later waves are not touched, and the report
//! says which version every box runs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt as _;
use serde::Serialize;

use super::inventory::{BoxEntry, Inventory};
use super::reach::{unreachable, Reach};
use super::status::printable;
use super::waves::{plan, PlanError};
use crate::control::client::{self, ClientError, Reply};

/// Pause between looks at a pushed box while its wave settles.
pub const SETTLE_POLL_INTERVAL_SECS: u64 = 2;
/// How long a wave may take to settle when the operator does not say: above the boxes'
/// default confirm window (120 s), so a rollback is seen rather than guessed.
pub const DEFAULT_SETTLE_SECS: u64 = 300;

/// Why a rollout did not start.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    /// The waves cannot be planned.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// A config or signature of the push folder cannot be read: nothing was sent.
    #[error("{path}: {message}; nothing was pushed")]
    File {
        /// The file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
}

/// How a pushed config leaves its probation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirmation {
    /// This tool confirms it once the box answers over the new config.
    ByOperator,
    /// The config asks for auto_confirm: wait until the box confirms it itself.
    ByBox,
}

/// Settings of one rollout.
#[derive(Debug, Clone)]
pub struct Rollout {
    /// The folder with `<box>.toml` and `<box>.toml.sig`.
    pub folder: PathBuf,
    /// Groups of the first wave.
    pub canary_groups: Vec<String>,
    /// Who confirms.
    pub confirmation: Confirmation,
    /// How long a box of a wave may take to end confirmed or rolled back.
    pub settle: Duration,
    /// Boxes pushed to at once within a wave.
    pub concurrency: usize,
}

/// Where one box ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// It runs the pushed version, confirmed.
    Confirmed {
        /// The version.
        version: u64,
    },
    /// It took the config, then rolled back (apply failed, or the window expired).
    RolledBack {
        /// The version pushed.
        pushed: u64,
        /// The version it runs again.
        running: u64,
        /// What the box said, when it said it.
        message: Option<String>,
    },
    /// It refused the config and changed nothing.
    Refused {
        /// The box's error code (`bad_signature`, `not_newer`, ...).
        code: String,
        /// Its message.
        message: String,
    },
    /// It was not reached within the timeout (and `--wait`).
    Unreachable {
        /// The last error.
        message: String,
    },
    /// It took the config but was neither confirmed nor rolled back within the settle time.
    StillPending {
        /// The pending version.
        version: u64,
    },
    /// Nothing was sent to it.
    NotPushed {
        /// Why.
        reason: String,
    },
}

impl Outcome {
    /// Whether the rollout may go on after this box.
    pub fn is_confirmed(&self) -> bool {
        matches!(self, Outcome::Confirmed { .. })
    }
}

/// One box in a rollout report.
#[derive(Debug, Clone, Serialize)]
pub struct BoxReport {
    /// The inventory's name.
    pub name: String,
    /// Its group.
    pub group: String,
    /// Its wave (`canary`, `rest`), when it is in one.
    pub wave: Option<&'static str>,
    /// Where it ended.
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// A finished rollout.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Every box of the inventory, in inventory order.
    pub boxes: Vec<BoxReport>,
    /// The wave the rollout stopped after, when it stopped early.
    pub stopped_after: Option<&'static str>,
}

impl Report {
    /// True when every box with a config ended confirmed.
    pub fn complete(&self) -> bool {
        self.stopped_after.is_none()
    }
}

/// A box's config file in the push folder.
pub fn config_file(folder: &Path, entry: &BoxEntry) -> PathBuf {
    folder.join(format!("{}.toml", entry.name))
}

/// Its signature, as `renkei sign` names it.
pub fn signature_file(folder: &Path, entry: &BoxEntry) -> PathBuf {
    folder.join(format!("{}.toml.sig", entry.name))
}

struct Signed {
    bytes: Vec<u8>,
    signature: String,
}

/// Pushes the folder's configs to the inventory's boxes, wave after wave.
pub async fn push(
    inventory: &Inventory,
    reach: &Reach,
    rollout: &Rollout,
) -> Result<Report, RolloutError> {
    let plan = plan(&inventory.boxes, &rollout.canary_groups, |entry| {
        config_file(&rollout.folder, entry).exists()
    })?;
    let mut signed = std::collections::HashMap::new();
    for entry in plan.waves.iter().flat_map(|w| &w.boxes) {
        let read = |path: PathBuf| {
            std::fs::read(&path).map_err(|e| RolloutError::File {
                message: if e.kind() == std::io::ErrorKind::NotFound {
                    format!("missing; sign the config first: renkei sign --key <operator signing key> {}", config_file(&rollout.folder, entry).display())
                } else {
                    e.to_string()
                },
                path,
            })
        };
        let bytes = read(config_file(&rollout.folder, entry))?;
        let signature = read(signature_file(&rollout.folder, entry))?;
        let signature = String::from_utf8_lossy(&signature).trim().to_string();
        signed.insert(entry.name.clone(), Signed { bytes, signature });
    }

    let mut outcomes = std::collections::HashMap::new();
    let mut stopped_after = None;
    for wave in &plan.waves {
        if stopped_after.is_some() {
            for entry in &wave.boxes {
                outcomes.insert(
                    entry.name.clone(),
                    (
                        Some(wave.label),
                        Outcome::NotPushed {
                            reason: format!(
                                "the rollout stopped after the {} wave",
                                stopped_after.unwrap_or_default()
                            ),
                        },
                    ),
                );
            }
            continue;
        }
        let results: Vec<(String, Outcome)> = futures::stream::iter(&wave.boxes)
            .map(|entry| async {
                let outcome = match signed.get(&entry.name) {
                    Some(config) => push_one(entry, config, reach, rollout).await,
                    None => Outcome::NotPushed {
                        reason: "no config".to_string(),
                    },
                };
                (entry.name.clone(), outcome)
            })
            .buffered(rollout.concurrency.max(1))
            .collect()
            .await;
        if !results.iter().all(|(_, o)| o.is_confirmed()) {
            stopped_after = Some(wave.label);
        }
        for (name, outcome) in results {
            outcomes.insert(name, (Some(wave.label), outcome));
        }
    }
    let boxes = inventory
        .boxes
        .iter()
        .map(|entry| {
            let (wave, outcome) = outcomes.remove(&entry.name).unwrap_or((
                None,
                Outcome::NotPushed {
                    reason: "no config in the push folder".to_string(),
                },
            ));
            BoxReport {
                name: entry.name.clone(),
                group: entry.group.clone(),
                wave,
                outcome,
            }
        })
        .collect();
    Ok(Report {
        boxes,
        stopped_after,
    })
}

/// Pushes one box's config and follows it until confirmed, rolled back or out of time.
async fn push_one(entry: &BoxEntry, config: &Signed, reach: &Reach, rollout: &Rollout) -> Outcome {
    // Read the state first (waiting up to --wait for an on-demand box's check-in): a box that
    // does not answer gets nothing, and one that does was reached right before the push, so
    // a push left without an answer reached it (a config that cuts the box off takes its
    // answer's path with it).
    let before = reach
        .ask(entry, |target| async move { client::status(&target).await })
        .await;
    if let Err(err) = before {
        return failed_request(err);
    }
    let pushed = version_in_config(&config.bytes);
    let answer = client::push(
        &reach.target(entry),
        config.bytes.clone(),
        &config.signature,
    )
    .await;
    let reply = match (answer, pushed) {
        (Ok(reply), _) => reply,
        (Err(err), Some(pushed)) if unreachable(&err) => {
            return settle(entry, pushed, reach, rollout, Some(err.to_string())).await;
        }
        (Err(err), _) => return failed_request(err),
    };
    if !reply.is_success() {
        let (code, message) = error_of(&reply);
        // An apply that failed was rolled back at once: the box runs what it ran.
        if code == "apply_failed" {
            let running = client::status(&reach.target(entry))
                .await
                .ok()
                .and_then(|r| r.body["version"].as_u64())
                .unwrap_or_default();
            return Outcome::RolledBack {
                pushed: pushed.unwrap_or_default(),
                running,
                message: Some(message),
            };
        }
        return Outcome::Refused { code, message };
    }
    let Some(version) = reply.body["version"].as_u64() else {
        return Outcome::Refused {
            code: "unexpected_answer".to_string(),
            message: format!("no version in the push answer: {}", reply.body),
        };
    };
    settle(entry, version, reach, rollout, None).await
}

/// Follows a pushed box until its config is confirmed or rolled back, or `settle` passed.
/// `lost` is why the push's own answer did not come, when it did not.
async fn settle(
    entry: &BoxEntry,
    version: u64,
    reach: &Reach,
    rollout: &Rollout,
    lost: Option<String>,
) -> Outcome {
    let give_up = tokio::time::Instant::now() + rollout.settle;
    let mut answered = lost.is_none();
    loop {
        let target = reach.target(entry);
        if rollout.confirmation == Confirmation::ByOperator {
            if let Ok(reply) = client::confirm(&target, Some(version)).await {
                if reply.is_success() {
                    return Outcome::Confirmed { version };
                }
            }
        }
        if let Ok(reply) = client::status(&target).await {
            answered = true;
            if let Some(outcome) = settled(version, &reply, lost.as_deref()) {
                return outcome;
            }
        }
        if tokio::time::Instant::now() >= give_up {
            return if answered {
                Outcome::StillPending { version }
            } else {
                Outcome::Unreachable {
                    message: format!(
                        "no answer to the push ({}) nor since; it may run version {version} on probation",
                        lost.as_deref().unwrap_or_default()
                    ),
                }
            };
        }
        tokio::time::sleep(Duration::from_secs(SETTLE_POLL_INTERVAL_SECS)).await;
    }
}

/// Where a `GET /v1/config` answer says a push of `pushed` stands; `None` while pending.
fn settled(pushed: u64, reply: &Reply, lost: Option<&str>) -> Option<Outcome> {
    if !reply.is_success() {
        return None;
    }
    let running = reply.body["version"].as_u64()?;
    let state = reply.body["state"].as_str()?;
    match (running == pushed, state) {
        (true, "confirmed") => Some(Outcome::Confirmed { version: pushed }),
        (true, _) => None,
        (false, _) => Some(Outcome::RolledBack {
            pushed,
            running,
            message: lost.map(|why| {
                format!("no answer to the push ({why}); the box came back on its previous config: the new one cut it off until it rolled back, or never arrived")
            }),
        }),
    }
}

fn failed_request(err: ClientError) -> Outcome {
    if unreachable(&err) {
        Outcome::Unreachable {
            message: err.to_string(),
        }
    } else {
        Outcome::NotPushed {
            reason: err.to_string(),
        }
    }
}

fn error_of(reply: &Reply) -> (String, String) {
    (
        reply.body["error"]
            .as_str()
            .unwrap_or("unexpected_answer")
            .to_string(),
        reply.body["message"]
            .as_str()
            .map_or_else(|| reply.body.to_string(), str::to_string),
    )
}

/// `meta.version` of a config's text, for the report of a box that answered without one.
fn version_in_config(bytes: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(bytes).ok()?;
    let value: toml::Value = toml::from_str(text).ok()?;
    value
        .get("meta")?
        .get("version")?
        .as_integer()?
        .try_into()
        .ok()
}

/// What `renkei fleet confirm` did at one box.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ConfirmOutcome {
    /// Its pending config is now confirmed.
    Confirmed {
        /// The version.
        version: u64,
    },
    /// Nothing was pending.
    NothingPending {
        /// The version it runs, confirmed.
        version: u64,
    },
    /// The box refused the confirm, or answered something else.
    Refused {
        /// Its error code.
        code: String,
        /// Its message.
        message: String,
    },
    /// Not reached.
    Unreachable {
        /// The last error.
        message: String,
    },
}

/// One box in a confirm report.
#[derive(Debug, Clone, Serialize)]
pub struct ConfirmReport {
    /// The inventory's name.
    pub name: String,
    /// Its group.
    pub group: String,
    /// What happened.
    #[serde(flatten)]
    pub outcome: ConfirmOutcome,
}

/// Confirms every box's pending config (the version it reports pending, so a box that rolled
/// back meanwhile is not confirmed by mistake).
pub async fn confirm_all(
    inventory: &Inventory,
    reach: &Reach,
    concurrency: usize,
) -> Vec<ConfirmReport> {
    futures::stream::iter(&inventory.boxes)
        .map(|entry| async move {
            ConfirmReport {
                name: entry.name.clone(),
                group: entry.group.clone(),
                outcome: confirm_one(entry, reach).await,
            }
        })
        .buffered(concurrency.max(1))
        .collect()
        .await
}

async fn confirm_one(entry: &BoxEntry, reach: &Reach) -> ConfirmOutcome {
    let unreachable_or_refused = |err: ClientError| {
        if unreachable(&err) {
            ConfirmOutcome::Unreachable {
                message: err.to_string(),
            }
        } else {
            ConfirmOutcome::Refused {
                code: "client".to_string(),
                message: err.to_string(),
            }
        }
    };
    let state = match reach
        .ask(entry, |target| async move { client::status(&target).await })
        .await
    {
        Ok(reply) if reply.is_success() => reply,
        Ok(reply) => {
            let (code, message) = error_of(&reply);
            return ConfirmOutcome::Refused { code, message };
        }
        Err(err) => return unreachable_or_refused(err),
    };
    let (Some(version), Some(state)) =
        (state.body["version"].as_u64(), state.body["state"].as_str())
    else {
        return ConfirmOutcome::Refused {
            code: "unexpected_answer".to_string(),
            message: state.body.to_string(),
        };
    };
    if state != "pending" {
        return ConfirmOutcome::NothingPending { version };
    }
    match client::confirm(&reach.target(entry), Some(version)).await {
        Ok(reply) if reply.is_success() => ConfirmOutcome::Confirmed { version },
        Ok(reply) => {
            let (code, message) = error_of(&reply);
            ConfirmOutcome::Refused { code, message }
        }
        Err(err) => unreachable_or_refused(err),
    }
}

/// The table `renkei fleet push` prints.
pub fn push_table(report: &Report) -> String {
    let mut out = String::new();
    for b in &report.boxes {
        let what = match &b.outcome {
            Outcome::Confirmed { version } => format!("confirmed: runs v{version}"),
            Outcome::RolledBack {
                pushed,
                running,
                message,
            } => format!(
                "ROLLED BACK: v{pushed} was rolled back, runs v{running}{}",
                message
                    .as_deref()
                    .map_or(String::new(), |m| format!(" ({m})"))
            ),
            Outcome::Refused { code, message } => {
                format!("REFUSED ({code}): {message}; unchanged")
            }
            Outcome::Unreachable { message } => format!("UNREACHABLE: {message}"),
            Outcome::StillPending { version } => {
                format!("STILL PENDING: v{version} neither confirmed nor rolled back yet")
            }
            Outcome::NotPushed { reason } => format!("not pushed: {reason}; unchanged"),
        };
        out.push_str(&format!(
            "{:<20} {:<12} {:<7} {}\n",
            b.name,
            b.group,
            b.wave.unwrap_or("-"),
            printable(&what.replace('\n', " "))
        ));
    }
    out
}

/// The table `renkei fleet confirm` prints.
pub fn confirm_table(reports: &[ConfirmReport]) -> String {
    let mut out = String::new();
    for r in reports {
        let what = match &r.outcome {
            ConfirmOutcome::Confirmed { version } => format!("confirmed v{version}"),
            ConfirmOutcome::NothingPending { version } => {
                format!("nothing pending (runs v{version}, confirmed)")
            }
            ConfirmOutcome::Refused { code, message } => format!("REFUSED ({code}): {message}"),
            ConfirmOutcome::Unreachable { message } => format!("UNREACHABLE: {message}"),
        };
        out.push_str(&format!(
            "{:<20} {:<12} {}\n",
            r.name,
            r.group,
            printable(&what.replace('\n', " "))
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(body: serde_json::Value) -> Reply {
        Reply { status: 200, body }
    }

    #[test]
    fn ops5_a_pushed_box_settles_confirmed_or_rolled_back_and_waits_while_pending() {
        let state = |version: u64, state: &str| {
            reply(serde_json::json!({ "version": version, "state": state }))
        };
        assert_eq!(
            settled(8, &state(8, "confirmed"), None),
            Some(Outcome::Confirmed { version: 8 })
        );
        assert_eq!(settled(8, &state(8, "pending"), None), None);
        assert_eq!(
            settled(8, &state(7, "confirmed"), None),
            Some(Outcome::RolledBack {
                pushed: 8,
                running: 7,
                message: None
            })
        );
        match settled(8, &state(7, "confirmed"), Some("no answer within 3s")) {
            Some(Outcome::RolledBack {
                message: Some(m), ..
            }) => assert!(m.contains("no answer within 3s"), "{m}"),
            other => panic!("{other:?}"),
        }
        // An answer that is not a config state (or an error) settles nothing.
        assert_eq!(settled(8, &reply(serde_json::json!("garbage")), None), None);
        let refused = Reply {
            status: 503,
            body: serde_json::json!({ "version": 7, "state": "confirmed" }),
        };
        assert_eq!(settled(8, &refused, None), None);
    }

    #[test]
    fn ops5_the_push_report_says_what_every_box_runs() {
        let report = Report {
            boxes: vec![
                BoxReport {
                    name: "hospital".to_string(),
                    group: "canary".to_string(),
                    wave: Some("canary"),
                    outcome: Outcome::RolledBack {
                        pushed: 8,
                        running: 7,
                        message: None,
                    },
                },
                BoxReport {
                    name: "clinic".to_string(),
                    group: "clinics".to_string(),
                    wave: Some("rest"),
                    outcome: Outcome::NotPushed {
                        reason: "the rollout stopped after the canary wave".to_string(),
                    },
                },
            ],
            stopped_after: Some("canary"),
        };
        let text = push_table(&report);
        assert!(
            text.contains("hospital") && text.contains("ROLLED BACK: v8 was rolled back, runs v7"),
            "{text}"
        );
        assert!(
            text.contains("not pushed: the rollout stopped after the canary wave; unchanged"),
            "{text}"
        );
        assert!(!report.complete());
    }
}
