//! What the `rauc` tool says about a bundle. renkei never parses or verifies a bundle itself:
//! `rauc info --keyring` checks the CMS signature against the update CA and prints the signed
//! manifest, whose `compatible` and `version` the box then judges.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

/// The RAUC command line tool, looked up on `PATH` (Debian's `rauc`, 1.8 or later).
pub const RAUC_PROGRAM: &str = "rauc";
/// `rauc info` on a bundle reads its signature and manifest only; slower than this is a hang.
pub const RAUC_INFO_TIMEOUT_SECS: u64 = 120;
/// At most this much of rauc's error text goes into an answer or an event.
const MAX_ERROR_CHARS: usize = 400;

/// The signed manifest's fields the box judges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleInfo {
    /// The manifest's `[update] compatible`.
    pub compatible: String,
    /// The manifest's `[update] version`, if any.
    pub version: Option<String>,
    /// The largest image's size in bytes (`images[].<class>.size`), when the manifest has
    /// images.
    pub largest_image_bytes: Option<u64>,
}

/// Why `rauc info` gave no verified manifest.
#[derive(Debug, thiserror::Error)]
pub enum InfoError {
    /// rauc refused the bundle: unsigned, signed by a certificate that does not chain to the
    /// update CA, damaged, not a bundle.
    #[error("rauc could not verify the bundle against the update CA: {0}")]
    NotVerified(String),
    /// rauc could not be run.
    #[error("cannot run {RAUC_PROGRAM}: {0}")]
    Tool(std::io::Error),
    /// rauc took longer than [`RAUC_INFO_TIMEOUT_SECS`].
    #[error("{RAUC_PROGRAM} info took longer than {RAUC_INFO_TIMEOUT_SECS} s")]
    TimedOut,
    /// rauc said yes but printed something else than its JSON manifest.
    #[error("{RAUC_PROGRAM} info printed no manifest renkei understands: {0}")]
    Output(String),
}

#[derive(Deserialize)]
struct InfoJson {
    compatible: String,
    #[serde(default)]
    version: Option<String>,
    /// `[{"rootfs": {"filename": ..., "size": ...}}]`.
    #[serde(default)]
    images: Vec<std::collections::BTreeMap<String, ImageJson>>,
}

#[derive(Deserialize)]
struct ImageJson {
    #[serde(default)]
    size: Option<u64>,
}

/// Verifies `bundle` against the PEM keyring `ca_file` and returns its manifest's fields.
/// rauc reads the box's system.conf even for `info`; `system_conf` (the config's
/// `update.system_conf`) is handed over when it exists, so rauc and the box judge by the same
/// file, and a machine without slots is never judged by whatever another tool left in
/// /etc/rauc.
pub async fn verified_info(
    bundle: &Path,
    ca_file: &Path,
    system_conf: &Path,
) -> Result<BundleInfo, InfoError> {
    let mut command = tokio::process::Command::new(RAUC_PROGRAM);
    if system_conf.is_file() {
        command.arg(format!("--conf={}", system_conf.display()));
    }
    command
        .arg("info")
        .arg(format!("--keyring={}", ca_file.display()))
        .arg("--output-format=json")
        .arg(bundle)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let run = command.output();
    let output = tokio::time::timeout(Duration::from_secs(RAUC_INFO_TIMEOUT_SECS), run)
        .await
        .map_err(|_| InfoError::TimedOut)?
        .map_err(InfoError::Tool)?;
    if !output.status.success() {
        return Err(InfoError::NotVerified(last_words(&output.stderr)));
    }
    let parsed: InfoJson = serde_json::from_slice(&output.stdout)
        .map_err(|e| InfoError::Output(format!("{e}: {}", last_words(&output.stdout))))?;
    let largest_image_bytes = parsed
        .images
        .iter()
        .flat_map(|image| image.values())
        .filter_map(|image| image.size)
        .max();
    Ok(BundleInfo {
        compatible: parsed.compatible,
        version: parsed.version,
        largest_image_bytes,
    })
}

/// The last non-empty line of what rauc printed (its error; the lines before are progress),
/// shortened to [`MAX_ERROR_CHARS`].
pub(crate) fn last_words(text: &[u8]) -> String {
    let text = String::from_utf8_lossy(text);
    let line = text
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("(rauc printed nothing)");
    line.chars()
        .filter(|c| !c.is_control())
        .take(MAX_ERROR_CHARS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avl5_rauc_error_is_its_last_line_without_control_characters() {
        let stderr =
            b"rauc-Message: Reading bundle\nsignature verification failed: Verify error\x1b[0m\n\n";
        assert_eq!(
            last_words(stderr),
            "signature verification failed: Verify error[0m"
        );
        assert_eq!(last_words(b""), "(rauc printed nothing)");
        assert_eq!(last_words(&[b'x'; 2000]).len(), MAX_ERROR_CHARS);
    }
}
