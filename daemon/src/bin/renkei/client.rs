//! What every command that talks to a daemon shares: a small runtime, replies printed as JSON,
//! and where the local daemon's control socket is.

use std::path::PathBuf;

use renkei::config;

pub(crate) fn client_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

pub(crate) fn print_reply(reply: &renkei::control::client::Reply) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(&reply.body)?);
    anyhow::ensure!(reply.is_success(), "the box answered {}", reply.status);
    Ok(())
}

/// The runtime directory named by a config, without requiring its key files to be readable
/// (an administrator in the `renkei` group may run `renkei status`). Without a config the box
/// is unenrolled and its daemon uses the default runtime directory.
pub(crate) fn runtime_dir_of(path: &std::path::Path) -> anyhow::Result<PathBuf> {
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
