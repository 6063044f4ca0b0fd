//! `renkei fleet status`: every box's facts, asked in parallel, in one table or as JSON.

use std::net::SocketAddr;

use futures::StreamExt as _;
use serde::Serialize;

use super::inventory::{BoxEntry, Inventory};
use super::reach::{unreachable, Reach};
use crate::control::client::{self, ClientError, Reply};
use crate::status::facts::FleetFacts;
use crate::tls::refusal::TlsRefusal;

/// What one box said, or why it said nothing.
#[derive(Debug, Clone, Serialize)]
pub struct BoxStatus {
    /// The inventory's name for it.
    pub name: String,
    /// Its rollout group.
    pub group: String,
    /// Its management API.
    pub management: SocketAddr,
    /// Whether it answered.
    pub reachable: bool,
    /// Its facts, when it answered; the firmware version is the one `GET /v1/update` reports
    /// where the box takes updates.
    pub facts: Option<FleetFacts>,
    /// Why there are no facts.
    pub error: Option<String>,
    /// Why the TLS handshake was refused, as a stable word, when that is why (the operator's
    /// certificate expired by the box's clock: `certificate_expired`).
    pub refused: Option<TlsRefusal>,
}

/// Asks every box of `inventory` for its facts, `concurrency` at once, in inventory order.
pub async fn query(inventory: &Inventory, reach: &Reach, concurrency: usize) -> Vec<BoxStatus> {
    futures::stream::iter(&inventory.boxes)
        .map(|entry| query_one(entry, reach))
        .buffered(concurrency.max(1))
        .collect()
        .await
}

async fn query_one(entry: &BoxEntry, reach: &Reach) -> BoxStatus {
    let mut status = BoxStatus {
        name: entry.name.clone(),
        group: entry.group.clone(),
        management: entry.management,
        reachable: false,
        facts: None,
        error: None,
        refused: None,
    };
    let answer = reach
        .ask(
            entry,
            |target| async move { client::fleet_facts(&target).await },
        )
        .await;
    if let Err(ClientError::Refused { refusal, .. }) = &answer {
        status.refused = Some(*refusal);
    }
    match facts_of(answer) {
        Ok(mut facts) => {
            status.reachable = true;
            // The update API is the firmware's own account; a box that takes no updates
            // answers 404 and the status document's version stands.
            if let Ok(reply) = client::update_status(&reach.target(entry)).await {
                if let Some(version) = reply
                    .is_success()
                    .then(|| reply.body["firmware_version"].as_str())
                    .flatten()
                {
                    facts.firmware_version = version.to_string();
                }
            }
            status.facts = Some(facts);
        }
        Err((reachable, why)) => {
            status.reachable = reachable;
            status.error = Some(why);
        }
    }
    status
}

/// The facts in an answer; else whether the box answered at all, and why there are none.
fn facts_of(answer: Result<Reply, ClientError>) -> Result<FleetFacts, (bool, String)> {
    match answer {
        Ok(reply) if reply.is_success() => serde_json::from_value(reply.body)
            .map_err(|e| (true, format!("unexpected answer to GET /v1/status: {e}"))),
        Ok(reply) => Err((
            true,
            format!(
                "answered {}: {}",
                reply.status,
                reply.body["message"].as_str().unwrap_or("(no message)")
            ),
        )),
        Err(err) if unreachable(&err) => Err((false, format!("unreachable: {err}"))),
        // It answered, with a TLS alert.
        Err(err @ ClientError::Refused { .. }) => Err((true, err.to_string())),
        Err(err) => Err((false, err.to_string())),
    }
}

/// Column titles of the table.
const COLUMNS: [&str; 9] = [
    "BOX", "GROUP", "FACILITY", "ROLE", "CARRIER", "CONFIG", "CERT", "FIRMWARE", "NOTE",
];

/// The table `renkei fleet status` prints: one line per box, columns aligned.
pub fn table(statuses: &[BoxStatus]) -> String {
    let rows: Vec<[String; 9]> = statuses
        .iter()
        .map(|status| row(status).map(|cell| printable(&cell)))
        .collect();
    let mut widths = COLUMNS.map(|c| c.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header = COLUMNS.map(str::to_string);
    for row in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn row(status: &BoxStatus) -> [String; 9] {
    let dash = || "-".to_string();
    match &status.facts {
        Some(f) => [
            status.name.clone(),
            status.group.clone(),
            f.facility.clone(),
            f.role.clone(),
            format!(
                "{} {}{}",
                f.carrier.kind,
                f.carrier.state,
                if f.carrier.alarm { " ALARM" } else { "" }
            ),
            format!("v{} {}", f.config_version, f.config_state),
            f.certificate_days_left
                .map_or_else(dash, |days| format!("{days} days")),
            f.firmware_version.clone(),
            String::new(),
        ],
        None => [
            status.name.clone(),
            status.group.clone(),
            dash(),
            dash(),
            if status.refused.is_some() {
                "TLS refused".to_string()
            } else if status.reachable {
                dash()
            } else {
                "unreachable".to_string()
            },
            dash(),
            dash(),
            dash(),
            status.error.clone().unwrap_or_default(),
        ],
    }
}

/// `text` with control characters (a box's answer could carry terminal escapes) shown as
/// `\u{..}` escapes, so what a box sends cannot steer the operator's terminal.
pub fn printable(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_unicode().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::facts::CarrierFacts;

    fn reached(name: &str, facility: &str) -> BoxStatus {
        BoxStatus {
            name: name.to_string(),
            group: "canary".to_string(),
            management: "198.18.0.2:7443".parse().unwrap(),
            reachable: true,
            facts: Some(FleetFacts {
                facility: facility.to_string(),
                role: "disclosing".to_string(),
                carrier: CarrierFacts {
                    kind: "wireguard".to_string(),
                    policy: "always_on".to_string(),
                    state: "up".to_string(),
                    alarm: true,
                },
                config_version: 7,
                config_state: "pending".to_string(),
                certificate_not_after_unix: Some(0),
                certificate_days_left: Some(12),
                firmware_version: "2026.11".to_string(),
                clock_synchronized: Some(true),
                time_unix: 0,
            }),
            error: None,
            refused: None,
        }
    }

    #[test]
    fn ops5_the_fleet_table_has_one_aligned_line_per_box_and_names_the_silent_one() {
        let silent = BoxStatus {
            name: "silent".to_string(),
            group: "clinics".to_string(),
            management: "198.18.0.99:7443".parse().unwrap(),
            reachable: false,
            facts: None,
            error: Some("unreachable: no answer within 3s".to_string()),
            refused: None,
        };
        let text = table(&[reached("hospital", "病院"), silent]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("BOX"), "{text}");
        assert!(
            lines[1].contains("wireguard up ALARM")
                && lines[1].contains("v7 pending")
                && lines[1].contains("12 days")
                && lines[1].contains("2026.11"),
            "{text}"
        );
        assert!(
            lines[2].contains("unreachable") && lines[2].ends_with("no answer within 3s"),
            "{text}"
        );
        // Columns line up, counted in characters, also after a Japanese facility name.
        let at = |line: &str, word: &str| {
            let byte = line
                .find(word)
                .unwrap_or_else(|| panic!("{word} in {line}"));
            line[..byte].chars().count()
        };
        assert_eq!(at(lines[0], "CARRIER"), at(lines[1], "wireguard"), "{text}");
        assert_eq!(
            at(lines[0], "CARRIER"),
            at(lines[2], "unreachable"),
            "{text}"
        );
    }

    #[test]
    fn ops5_a_box_cannot_put_terminal_escapes_into_the_table() {
        let text = table(&[reached("hospital", "evil\u{1b}[2J\u{7}name")]);
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{text:?}"
        );
        assert!(text.contains("evil\\u{1b}[2J"), "{text}");
    }
}
