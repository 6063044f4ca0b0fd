//! `renkei run`: the daemon itself, enrolled or waiting for enrolment.

use std::process::ExitCode;

use crate::cli::UnenrolledArgs;
use crate::exit::EXIT_INVALID_CONFIG;

/// The daemon's async runtime from `builder` (multi-thread when enrolled, one thread while it
/// waits for enrolment); the exit status to return when it cannot be built.
fn build_runtime(
    mut builder: tokio::runtime::Builder,
) -> Result<tokio::runtime::Runtime, ExitCode> {
    builder.enable_all().build().map_err(|e| {
        eprintln!("renkei: cannot start the async runtime: {e}");
        ExitCode::FAILURE
    })
}

pub(crate) fn run(path: &std::path::Path, unenrolled: UnenrolledArgs) -> ExitCode {
    if matches!(std::fs::symlink_metadata(path), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
    {
        return run_unenrolled(path, unenrolled);
    }
    run_enrolled(path, &unenrolled.state_dir)
}

/// `state_dir` is `--state-dir`: where recovery looks for push files when the config file does
/// not parse far enough to name its own state directory.
fn run_enrolled(path: &std::path::Path, state_dir: &std::path::Path) -> ExitCode {
    let (config, bytes, recovery) = match renkei::supervisor::load_recovering(path, state_dir) {
        Ok(loaded) => loaded,
        Err(diagnostics) => {
            for d in &diagnostics.0 {
                eprintln!("{d}");
            }
            eprintln!("renkei: refusing to start with an invalid configuration");
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
    };
    renkei::logging::init();
    let runtime = match build_runtime(tokio::runtime::Builder::new_multi_thread()) {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    match runtime.block_on(renkei::supervisor::run_loaded(
        path, config, bytes, recovery,
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "renkei stopped");
            eprintln!("renkei: {e}");
            ExitCode::FAILURE
        }
    }
}

/// No configuration yet (a box fresh from the image): run unenrolled, showing the enrolment
/// data made by first boot (`renkei keygen`) beside where the configuration will go; once a
/// valid configuration is there, run enrolled in the same process.
fn run_unenrolled(path: &std::path::Path, args: UnenrolledArgs) -> ExitCode {
    renkei::logging::init();
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    let key_file = dir.join("wg.key");
    let csr_file = dir.join("box.csr");
    let enrolment = match renkei::enrolment::Enrolment::read(&key_file, &csr_file) {
        Ok(enrolment) => enrolment,
        Err(e) => {
            tracing::error!(error = %e, "no configuration and no enrolment data");
            eprintln!(
                "renkei: no configuration at {} and no enrolment data: {e} (first boot runs `renkei keygen`)",
                path.display()
            );
            return ExitCode::FAILURE;
        }
    };
    let runtime = match build_runtime(tokio::runtime::Builder::new_current_thread()) {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let state_dir = args.state_dir.clone();
    let outcome = runtime.block_on(renkei::supervisor::run_unenrolled(
        renkei::supervisor::Unenrolled {
            config_file: path.to_path_buf(),
            enrolment,
            runtime_dir: args.runtime_dir,
            state_dir: args.state_dir,
            page_listen: args.enrolment_listen,
        },
    ));
    // Whatever the unenrolled daemon still held goes with its runtime.
    drop(runtime);
    match outcome {
        Ok(renkei::supervisor::UnenrolledExit::Stopped) => ExitCode::SUCCESS,
        Ok(renkei::supervisor::UnenrolledExit::Configured) => run_enrolled(path, &state_dir),
        Err(e) => {
            tracing::error!(error = %e, "renkei stopped");
            eprintln!("renkei: {e}");
            ExitCode::FAILURE
        }
    }
}
