//! Checking a configuration and writing the files the image's units derive from it (charon's
//! strongswan.conf, the timesyncd and journal-upload drop-ins), before those services start.

use std::process::ExitCode;

use renkei::config;

use crate::exit::{invalid, report};

/// charon's strongswan.conf holds no secret (keys go over VICI).
const CHARON_CONF_MODE: u32 = 0o644;

/// The drop-ins are read by the services' own users.
const DROP_IN_MODE: u32 = 0o644;

pub(crate) fn check(path: &std::path::Path, offline: bool) -> ExitCode {
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
pub(crate) fn charon_conf(path: &std::path::Path, output: Option<&std::path::Path>) -> ExitCode {
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

/// Writes the drop-in `text_of` gives for the config at `path` (a system service's settings
/// from renkei's config), or removes it when there is none. An invalid config changes nothing.
pub(crate) fn drop_in_from_config(
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
