//! The commands to try on a lab that is up, each a real argv.

use std::path::Path;

use anyhow::Context;

use crate::daemon::renkei_bin;
use crate::lab::{LabCarrier, Node, DC_PROBE_PORT, LAN_SERVICE_ADDRESS, SERVICE_PORT};
use crate::operator::Operator;

use super::record::{CommandRecord, LabRecord};
use super::{default_state_dir, CONFIRM_TIMEOUT_SECS, METRICS_PORT, PUSH_WAIT_SECS};
fn shell_line(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn command(key: &str, what: &str, argv: Vec<String>) -> CommandRecord {
    CommandRecord {
        key: key.into(),
        what: what.into(),
        shell: shell_line(&argv),
        argv,
    }
}

fn strings(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

/// The commands to try, built from the record so printed text and `lab.json` never disagree.
pub(super) fn commands(
    record: &LabRecord,
    state_dir: &Path,
    operator: &Operator,
) -> anyhow::Result<Vec<CommandRecord>> {
    let clinic = record.node("clinic").context("no clinic")?;
    let hospital = record.node("hospital").context("no hospital")?;
    let hub = record.node("dc").context("no hub")?;
    let server = record
        .document_server
        .as_ref()
        .context("no document server")?;
    let viewer = record.clients.first().context("no viewer")?;
    let carrier = record.lab_carrier()?;
    let renkei = renkei_bin()?.to_string_lossy().into_owned();
    let lab = std::env::current_exe()?.to_string_lossy().into_owned();
    let service = format!("http://{LAN_SERVICE_ADDRESS}:{SERVICE_PORT}");
    let summary = server
        .documents
        .first()
        .context("no documents")?
        .name
        .clone();
    let imaging = server.documents.last().context("no documents")?;
    let fetch = |name: &str| {
        strings(&[
            "ip",
            "netns",
            "exec",
            &viewer.namespace,
            "curl",
            "-sS",
            "--fail",
            "--max-time",
            "60",
            &format!("{service}/{name}"),
        ])
    };
    let mut all = vec![
        command(
            "fetch-document",
            &format!(
                "fetch a document from the clinic LAN: viewer PC -> clinic box -> hub -> \
                 hospital box -> document server, mutual TLS on every leg, {}",
                match carrier {
                    LabCarrier::WireGuard => "the clinic's tunnel opened on demand",
                    LabCarrier::Closed => "across the closed network (nothing to bring up)",
                    LabCarrier::Ipsec => "the clinic's IPsec SA initiated on demand",
                }
            ),
            fetch(&summary),
        ),
        command(
            "fetch-imaging-checksum",
            "fetch the imaging file the same way and checksum it",
            strings(&[
                "sh",
                "-c",
                &format!("{} | sha256sum", shell_line(&fetch(&imaging.name))),
            ]),
        ),
        command(
            "hospital-checksum",
            &format!(
                "the hospital's copy: the same checksum ({})",
                &imaging.sha256
            ),
            vec![
                "sha256sum".into(),
                server
                    .dir
                    .join(&imaging.name)
                    .to_string_lossy()
                    .into_owned(),
            ],
        ),
        command(
            "clinic-tunnel",
            &match carrier {
                LabCarrier::WireGuard => format!(
                    "the clinic's tunnel: up after a fetch, idle again {} s after the last byte",
                    clinic.idle_timeout_secs.unwrap_or(0)
                ),
                LabCarrier::Closed => "the clinic's link to the data centre: on demand on a \
                                       closed network, so idle, with nothing to bring up"
                    .to_string(),
                LabCarrier::Ipsec => format!(
                    "the clinic's IPsec SA: up after a fetch, deleted again {} s after the \
                     last byte",
                    clinic.idle_timeout_secs.unwrap_or(0)
                ),
            },
            vec![
                renkei.clone(),
                "status".into(),
                "--config".into(),
                clinic.config.to_string_lossy().into_owned(),
            ],
        ),
        command(
            "clinic-tunnel-json",
            "the same as JSON (what the status page and tests read)",
            vec![
                renkei.clone(),
                "status".into(),
                "--json".into(),
                "--config".into(),
                clinic.config.to_string_lossy().into_owned(),
            ],
        ),
        command(
            "hospital-status",
            &format!(
                "the hospital: always on{}, every connection in its access log",
                match carrier {
                    LabCarrier::WireGuard => "",
                    LabCarrier::Closed => ", the data centre's health endpoint probed",
                    LabCarrier::Ipsec => ", its IPsec SA kept up by its charon",
                }
            ),
            vec![
                renkei.clone(),
                "status".into(),
                "--config".into(),
                hospital.config.to_string_lossy().into_owned(),
            ],
        ),
    ];
    all.extend(carrier_view_commands(record, carrier, &renkei)?);
    // The operator's monitoring: Prometheus text from each always-on box's metrics listener on
    // its link address, read from the data centre with the operator's client certificate,
    // the box's certificate checked against the CA for its name (an on-demand clinic answers
    // only while its tunnel is up, so it is not among them on either carrier).
    for node in [hub, hospital] {
        let name = &node.tls_identity;
        all.push(command(
            &format!("metrics-{}", node.name),
            &format!(
                "the {} box's Prometheus metrics, as the operator's monitoring reads them \
                 {} ({})",
                node.name,
                match carrier {
                    LabCarrier::WireGuard => "through the tunnel",
                    LabCarrier::Closed => "across the closed network",
                    LabCarrier::Ipsec => "through the IPsec SA",
                },
                node.status_page.metrics_url
            ),
            strings(&[
                "ip",
                "netns",
                "exec",
                &hub.namespace,
                "curl",
                "-sS",
                "--fail",
                "--max-time",
                "10",
                "--cacert",
                &operator.ca.to_string_lossy(),
                "--cert",
                &operator.client.cert.to_string_lossy(),
                "--key",
                &operator.client.key.to_string_lossy(),
                "--resolve",
                &format!("{name}:{METRICS_PORT}:{}", node.link_address),
                &format!("https://{name}:{METRICS_PORT}/metrics"),
            ]),
        ));
    }
    for node in &record.nodes {
        let page = &node.status_page;
        // Log in with the admin password (the session cookie goes to a jar in the box's
        // folder), then read the page's status API: what the page shows, as JSON.
        let jar = record.lab_dir.join(&node.name).join("status-cookies.txt");
        let curl = |inside: bool, extra: &[&str]| {
            let mut argv = Vec::new();
            if inside {
                argv.extend(strings(&["ip", "netns", "exec", &page.open_from_namespace]));
            }
            argv.extend(strings(&["curl", "-sS", "--fail", "--max-time", "10"]));
            if let Some(ca) = &page.ca_file {
                argv.push("--cacert".into());
                argv.push(ca.to_string_lossy().into_owned());
            }
            argv.extend(extra.iter().map(|s| s.to_string()));
            shell_line(&argv)
        };
        let jar = jar.to_string_lossy();
        let login_and_read = |inside: bool, url: &str| {
            let login = curl(
                inside,
                &[
                    "-o",
                    "/dev/null",
                    "-c",
                    &jar,
                    "--data-urlencode",
                    &format!("password={}", page.admin_password),
                    &format!("{url}login"),
                ],
            );
            let api = curl(inside, &["-b", &jar, &format!("{url}api/v1/status")]);
            vec!["sh".into(), "-c".into(), format!("{login} && {api}")]
        };
        all.push(command(
            &format!("status-page-{}", node.name),
            &format!(
                "log in to the {} status page ({}, admin password {}) and read its status API",
                node.name, page.url, page.admin_password
            ),
            login_and_read(true, &page.url),
        ));
        all.push(command(
            &format!("browser-{}", node.name),
            &format!(
                "the same through the door a browser on this machine uses ({}; the lab CA is {})",
                page.browser_url,
                page.ca_file
                    .as_ref()
                    .map_or("not needed: plain HTTP".into(), |ca| ca
                        .display()
                        .to_string())
            ),
            login_and_read(false, &page.browser_url),
        ));
    }
    all.extend(push_commands(record, carrier, operator, &renkei)?);
    let mut stop = vec![lab, "down".into()];
    if state_dir != default_state_dir().canonicalize().unwrap_or_default() {
        stop.push("--dir".into());
        stop.push(state_dir.to_string_lossy().into_owned());
    }
    all.push(command("down", "remove the lab", stop));
    Ok(all)
}

/// How the operator sees the link to the data centre, for the carrier: WireGuard's peers as
/// `wg` reads them from the hub's userspace API; on a closed network, which has no peers or
/// keys, the hub's own link in `renkei status`, the carrier's routes in the data centre, and
/// the probe the always-on hospital sends to the data centre's health endpoint.
fn carrier_view_commands(
    record: &LabRecord,
    carrier: LabCarrier,
    renkei: &str,
) -> anyhow::Result<Vec<CommandRecord>> {
    let hub = record.node("dc").context("no hub")?;
    let hospital = record.node("hospital").context("no hospital")?;
    Ok(match carrier {
        LabCarrier::WireGuard => vec![command(
            "hub-peers",
            "the hub's WireGuard peers, as the operator sees them",
            strings(&["wg", "show", &hub.interface]),
        )],
        LabCarrier::Ipsec => vec![command(
            "hub-routes",
            "the data centre's routes to the facilities' own addresses, which the \
             concentrator installs while their SAs are up (table 220)",
            strings(&["ip", "-n", &hub.namespace, "route", "show", "table", "220"]),
        )],
        LabCarrier::Closed => {
            let probe = format!("{}:{DC_PROBE_PORT}", hub.link_address);
            vec![
                command(
                    "hub-link",
                    "the hub on the closed network: its link up, no tunnel, no keys; \
                     facilities dial it, so it probes nothing",
                    vec![
                        renkei.into(),
                        "status".into(),
                        "--config".into(),
                        hub.config.to_string_lossy().into_owned(),
                    ],
                ),
                command(
                    "hub-routes",
                    "the data centre's routes: each facility's /24 through the carrier's \
                     router (a facility has a route to the data centre's /24 only)",
                    strings(&["ip", "-n", &hub.namespace, "route", "show"]),
                ),
                command(
                    "hospital-probe",
                    &format!(
                        "what the hospital's reachability probe does: a TCP connection from \
                         the box to the data centre's health endpoint {probe}"
                    ),
                    strings(&[
                        "ip",
                        "netns",
                        "exec",
                        &hospital.namespace,
                        "curl",
                        "-sS",
                        "--max-time",
                        "5",
                        "-w",
                        "the data centre answered on %{remote_ip}:%{remote_port}\n",
                        &format!("telnet://{probe}"),
                    ]),
                ),
            ]
        }
    })
}

/// The example config push as an operator does it: on WireGuard, bring the on-demand clinic's
/// tunnel up on the box first (the hub has no address for it until it connects, so the
/// operator cannot reach a clinic that has never asked for its tunnel; a closed network routes
/// to the clinic at any time, so there that step is left out), then `renkei push`, `confirm`
/// and `remote` from the data centre's namespace to the clinic's management API.
/// Every command is a real argv: `lab_demo` runs them exactly as recorded.
fn push_commands(
    record: &LabRecord,
    carrier: LabCarrier,
    operator: &Operator,
    renkei: &str,
) -> anyhow::Result<Vec<CommandRecord>> {
    let push = record.config_push.as_ref().context("no example push")?;
    let target = record.node(&push.node).context("no box for the push")?;
    let node = Node::ALL
        .into_iter()
        .find(|n| n.short() == push.node)
        .context("no lab node for the push")?;
    let hub = record.node("dc").context("no hub")?;
    let operator_command = |command: &str, extra: &[String]| {
        let mut argv = strings(&["ip", "netns", "exec", &hub.namespace, renkei, command]);
        argv.extend(operator.management_args(node));
        argv.extend(extra.iter().cloned());
        argv
    };
    // (what it shows, its key, its argv), in the order to follow; numbered below.
    let mut steps: Vec<(String, String, Vec<String>)> = Vec::new();
    if carrier != LabCarrier::Closed {
        steps.push((
            format!("{}-connect", push.node),
            format!(
                "bring the {0}'s on-demand tunnel (or IPsec SA) up on the box (until the {0} \
                 connects, the data centre has no path to it, and an idle box never sends on its \
                 own); it idles out again {1} s after the last packet",
                push.node,
                target.idle_timeout_secs.unwrap_or(0)
            ),
            vec![
                "ip".into(),
                "netns".into(),
                "exec".into(),
                target.namespace.clone(),
                renkei.into(),
                "tunnel".into(),
                "connect".into(),
                "--config".into(),
                target.config.to_string_lossy().into_owned(),
            ],
        ));
    }
    steps.push((
        "push-config".into(),
        format!(
            "push the signed example config (version {} -> {}, description {:?}) from the data \
             centre to the {}'s management API {}: answers \"state\": \"pending\"",
            push.running_version, push.version, push.description, push.node, target.management.url
        ),
        operator_command(
            "push",
            &[
                "--wait-secs".into(),
                PUSH_WAIT_SECS.to_string(),
                push.config.to_string_lossy().into_owned(),
            ],
        ),
    ));
    steps.push((
        "confirm-config".into(),
        format!(
            "confirm version {} within {CONFIRM_TIMEOUT_SECS} s of the push, or the {} rolls \
             back to version {}: answers \"state\": \"confirmed\"",
            push.version, push.node, push.running_version
        ),
        operator_command("confirm", &["--version".into(), push.version.to_string()]),
    ));
    steps.push((
        "show-config".into(),
        format!(
            "the {}'s running config as the operator sees it: version, sha256, signer, \
             pushed_by, state (its own `renkei status` shows the same); pushing the same file \
             again is refused as not_newer",
            push.node
        ),
        operator_command("remote", &[]),
    ));
    Ok(steps
        .into_iter()
        .enumerate()
        .map(|(i, (key, what, argv))| {
            let first = if i == 0 { "config push, " } else { "" };
            command(&key, &format!("{first}step {}: {what}", i + 1), argv)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_lines_quote_what_needs_it() {
        assert_eq!(
            shell_line(&strings(&["sh", "-c", "a | b", "it's"])),
            r"sh -c 'a | b' 'it'\''s'"
        );
    }
}
