//! The box's own journal as evidence (LOG-4): journald seals it with Forward Secure Sealing
//! ([`seal`]: keys made on the box at first boot, the verification key handed to the operator
//! and then removed), the operator checks a box's journal files with that key ([`verify`]), and
//! the image's uploader posts it through one of renkei's services to the operator ([`upload`]).
//! The management API serves the box's files to the operator ([`files`]). Every boot the sealing
//! key is moved on to the present before journald flushes into the sealed journal
//! ([`seal_epoch`]). They drive systemd's tools; no sealing or hashing is done here.

pub mod files;
pub mod seal;
pub mod seal_epoch;
pub mod upload;
pub mod verify;

/// systemd's journal tool.
pub const JOURNALCTL: &str = "journalctl";
/// systemd's journal receiver (Debian's systemd-journal-remote package, which also brings the
/// image's uploader).
pub const JOURNAL_REMOTE: &str = "/lib/systemd/systemd-journal-remote";
