//! How a subcommand ends: its exit code, and its error printed with every cause.
//! `anyhow` stops here; the library speaks typed errors.

use std::process::ExitCode;

use renkei::config;

/// Exit code for an invalid configuration, as `nginx -t` uses.
pub(crate) const EXIT_INVALID_CONFIG: u8 = 2;

/// Exit 0, or print the error with its causes and exit 1.
pub(crate) fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("renkei: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Prints every diagnostic and the count; exit 2.
pub(crate) fn invalid(path: &std::path::Path, diagnostics: &config::Diagnostics) -> ExitCode {
    for d in &diagnostics.0 {
        eprintln!("{d}");
    }
    eprintln!(
        "{}: {} error(s); configuration is invalid",
        path.display(),
        diagnostics.0.len()
    );
    ExitCode::from(EXIT_INVALID_CONFIG)
}
