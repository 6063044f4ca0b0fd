//! WireGuard API sockets (`<interface>.sock` in `/var/run/wireguard`, what `wg` talks to) that a
//! lab's tunnels left: a renkei daemon or a boringtun-cli killed outright (SIGKILL) cannot remove
//! its own, and a lab removed after a crash or a signal runs none of the drops that would.

use std::os::unix::net::UnixStream;
use std::path::Path;

/// Removes the sockets in `dir` of lab `id`'s interfaces (`rk<id>` and then a letter, as
/// [`crate::lab::Lab::interface`] and the foreign tunnels name them) that nobody serves any
/// more. A socket someone still answers on is left alone: another lab's id may begin with this
/// one's. Returns the paths removed.
pub fn remove_dead(dir: &Path, id: &str) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let prefix = format!("rk{id}");
    entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .and_then(|name| name.strip_prefix(&prefix)?.strip_suffix(".sock"))
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_lowercase()))
        })
        .filter(|path| is_dead(path))
        .filter(|path| std::fs::remove_file(path).is_ok())
        .collect()
}

/// True when connecting is refused: the socket file is there but no process listens on it.
fn is_dead(path: &Path) -> bool {
    matches!(
        UnixStream::connect(path),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn only_this_labs_sockets_that_nobody_serves_are_removed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = |name: &str| dir.path().join(name);
        // A listener dropped leaves its file: a daemon killed outright.
        for dead in ["rkab1y.sock", "rkab1t3.sock", "rkab2y.sock", "rkab1.sock"] {
            drop(UnixListener::bind(path(dead)).expect("bind"));
        }
        let _live = UnixListener::bind(path("rkab1h.sock")).expect("bind");
        std::fs::write(path("rkab1z.txt"), "").expect("a file");

        let mut removed = remove_dead(dir.path(), "ab1");
        removed.sort();
        assert_eq!(removed, vec![path("rkab1t3.sock"), path("rkab1y.sock")]);
        for kept in ["rkab1h.sock", "rkab2y.sock", "rkab1.sock", "rkab1z.txt"] {
            assert!(path(kept).exists(), "{kept} was removed");
        }
        assert!(remove_dead(&path("missing"), "ab1").is_empty());
    }
}
