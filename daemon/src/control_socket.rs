//! The daemon's local control socket as its clients see it: its file name under the runtime
//! directory, and one command line asked, one answer line read. The daemon's side (enrolled:
//! `status::control`; unenrolled: `enrolment`) and the `renkei` commands that ask it share these.

use std::path::Path;
use std::time::Duration;

/// The socket's file name under the runtime directory.
pub const SOCKET_NAME: &str = "control.sock";

/// Sends one command to the daemon whose runtime directory is `runtime_dir` and returns the
/// answer line.
pub fn request(runtime_dir: &Path, command: &str) -> std::io::Result<String> {
    use std::io::{BufRead, Write};
    let path = runtime_dir.join(SOCKET_NAME);
    let mut stream = std::os::unix::net::UnixStream::connect(&path).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::PermissionDenied {
            " (the control socket is for root and the daemon's group, renkei: run as root, or \
             add this user to that group)"
        } else {
            ""
        };
        std::io::Error::new(
            e.kind(),
            format!("cannot reach the daemon at {}: {e}{hint}", path.display()),
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.write_all(format!("{command}\n").as_bytes())?;
    let mut answer = String::new();
    std::io::BufReader::new(stream).read_line(&mut answer)?;
    Ok(answer.trim_end().to_string())
}
