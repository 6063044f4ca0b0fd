//! The operator's commands to one box or its hubs over the management API: push, confirm,
//! status and journal fetches.

use std::path::PathBuf;

use crate::cli::{RemoteAction, TargetArgs};
use crate::client::{client_runtime, print_reply};
use crate::keys::signature_path;

pub(crate) fn push(
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

pub(crate) fn remote(target: &TargetArgs, confirm: Option<Option<u64>>) -> anyhow::Result<()> {
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
pub(crate) fn remote_hubs(target: &TargetArgs, action: RemoteAction) -> anyhow::Result<()> {
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
