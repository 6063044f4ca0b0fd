//! renkei: the daemon of a regional medical information network's edge box.
//!
//! The library holds every part of the daemon so that the lab and the integration tests drive
//! the same code the binary runs.
//!
//! # Layers
//!
//! Each module imports only modules below it, so a part can be understood and tested without
//! the parts that use it. Lowest first:
//!
//! 1. `hex`, `durable`, `ratelimit`, `logging`, `notify`, `firmware_version`, `control_socket`:
//!    small helpers with no crate imports (`durable` writes files crash-safely; `ratelimit`
//!    limits repeated log lines; `firmware_version` orders firmware versions; `control_socket`
//!    is the local control socket's name and its client).
//! 2. `signing`: operator keys and config signatures, needed by config's checks and control.
//! 3. `state`: runtime state several parts share (the event ring, the config snapshot).
//! 4. `keys`: WireGuard key material (written through `durable`).
//! 5. `config`: the configuration file, parsed and validated; `timesync`: the NTP client's
//!    settings its `[time]` gives; `journal`: the box's sealed journal (its keys, the
//!    operator's check of its files) and the uploader's settings its `[logs]` gives (LOG-4).
//! 6. `tls`: the CRYPTREC TLS profile and the credential store, built from config.
//! 7. `tunnel`: userspace WireGuard and the TUN device.
//! 8. `carrier`: the link to the data centre as the parts above see it, whatever carries it;
//!    WireGuard (`tunnel`) is one backend behind it. Nothing above names `tunnel`.
//! 9. `proxy`: the mutual-TLS service proxies, over the carrier.
//! 10. `update`: signed firmware bundles (RAUC): spooled, checked with the `rauc` tool.
//! 11. `control`: the operator's signed config pushes and the management API.
//! 12. `preflight`: the checks `renkei run` and `renkei check` share.
//! 13. `enrolment`: first boot and the unenrolled box.
//! 14. `status`: what the daemon reports (page, JSON API, metrics, control socket).
//! 15. `fleet`: the operator's tools for many boxes (inventory, status, rollout in waves),
//!     over control's one-box client.
//! 16. `supervisor`: owns and starts the running parts; the binary (`src/bin/renkei/`, one
//!     module per group of subcommands) is above all.
//!
//! `tests/layering.rs` holds the same order as one list (modules on one line above in the order
//! named) and fails on any `crate::` path that names a module above the file's own, with no
//! exception left.

pub mod carrier;
pub mod config;
pub mod control;
pub mod control_socket;
pub mod durable;
pub mod enrolment;
pub mod firmware_version;
pub mod fleet;
pub mod hex;
pub mod journal;
pub mod keys;
pub mod logging;
pub mod notify;
pub mod preflight;
pub mod proxy;
pub mod ratelimit;
pub mod signing;
pub mod state;
pub mod status;
pub mod supervisor;
pub mod timesync;
pub mod tls;
pub mod tunnel;
pub mod update;
