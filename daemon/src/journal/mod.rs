//! The box's own journal as evidence (LOG-4): journald seals it with Forward Secure Sealing
//! ([`seal`]: keys made on the box at first boot, the verification key handed to the operator
//! and then removed), the operator checks a box's journal files with that key ([`verify`]), and
//! the image's uploader posts it through one of renkei's services to the operator ([`upload`]).
//! The management API serves the box's files to the operator ([`files`]). They drive systemd's
//! tools; no sealing or hashing is done here.

pub mod files;
pub mod seal;
pub mod upload;
pub mod verify;

/// systemd's journal tool.
pub const JOURNALCTL: &str = "journalctl";
