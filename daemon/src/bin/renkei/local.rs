//! Commands to the daemon on this box over its control socket: status and tunnel actions.

use std::path::PathBuf;

use crate::client::runtime_dir_of;

pub(crate) fn status(
    path: &std::path::Path,
    runtime_dir: Option<PathBuf>,
    json: bool,
    detail: renkei::status::PeerDetail,
) -> anyhow::Result<()> {
    let runtime_dir = match runtime_dir {
        Some(dir) => dir,
        None => runtime_dir_of(path)?,
    };
    let answer = renkei::control_socket::request(&runtime_dir, "status")?;
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

pub(crate) fn tunnel_action(path: &std::path::Path, action: &str) -> anyhow::Result<()> {
    let answer = renkei::control_socket::request(&runtime_dir_of(path)?, action)?;
    match answer.strip_prefix("error: ") {
        Some(error) => anyhow::bail!("{error}"),
        None => {
            println!("{answer}");
            Ok(())
        }
    }
}
