//! Where log lines go: journald with structured fields when systemd started us (it sets
//! `JOURNAL_STREAM`), plain text on stderr otherwise. `RUST_LOG` overrides the level.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; call once at start.
pub fn init() {
    // boringtun logs its own timer events; the tunnel policy reports state changes itself.
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,boringtun=off"));
    let registry = tracing_subscriber::registry().with(filter);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        if let Ok(journald) = tracing_journald::layer() {
            let _ = registry
                .with(
                    journald
                        .with_syslog_identifier("renkei".to_string())
                        // Access-log fields become journald fields as named (SERVICE, RESULT ...),
                        // not F_SERVICE, so `journalctl SERVICE=documents` works.
                        .with_field_prefix(None),
                )
                .try_init();
            return;
        }
    }
    let _ = registry
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .with_target(false),
        )
        .try_init();
}
