//! The management API (AUTH-2): HTTPS on the box's tunnel address, only for clients whose
//! certificate chains to the operator CA *and* names one of `management.operator_identities`
//! (the CA signs the boxes' certificates too), with the CRYPTREC profile of `crate::tls`. The
//! listener is bound to the TUN device, so a LAN host that routes the tunnel address to the box
//! cannot reach it (Linux otherwise accepts packets for a local address on any interface).
//!
//! `POST /v1/config` (body: the config's exact bytes; header `Renkei-Signature`: base64 DER
//! ECDSA signature), `POST /v1/confirm` (optional JSON `{"version": N}`), `GET /v1/config`,
//! `GET /v1/status` (the box's facts for `renkei fleet status`);
//! `POST /v1/update` (body: a RAUC bundle, streamed to the spool, never held in memory) and
//! `GET /v1/update`, answered here with `crate::update` rather than by the supervisor: a
//! bundle's check takes long and changes nothing that runs. `GET /v1/hubs` and
//! `POST /v1/hubs/prefer` (`{"hub": "NAME"}`, or `{"hub": null}` to clear) read and steer a
//! facility's hub group (AVL-4) through the carrier, also without the supervisor. `GET
//! /v1/journal` lists the box's sealed journal files and `GET /v1/journal/<machine>/<file>`
//! sends one (LOG-4, `super::journal_files`).
//! Requests become [`Command`]s for the supervisor, which owns the running parts; answers are
//! JSON. Stopping the listener leaves requests in flight to finish: a push that changes the
//! management listener still gets its answer.
//!
//! It cannot be starved (INT-1, AVL-1): a revoked certificate fails the handshake (the
//! operator CRL); after the handshake connections take a slot by certificate identity
//! (`super::admission`), so boxes of the same CA never take the operator's; a non-operator is
//! answered 403 before any body is read; a body must keep a minimum rate (`super::body`); and
//! refusals reach the log and the event ring through the ring's rate limit.
//!
//! This module starts and stops the listener; `connection` serves one connection (handshake,
//! admission, HTTP), `routes` one request, `bodies` reads the operator's bodies, `api` is what
//! goes to and comes from the supervisor, `journal_files` sends the journal.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::admission::Slots;
use super::connection::accept_loop;
use super::device_listener::DeviceListener;
use super::routes::Context;
use crate::carrier::CarrierHandle;
use crate::config::{ManagementConfig, TlsConfig};
use crate::state::events::EventLog;
use crate::state::operator_contact::OperatorContact;
use crate::tls::store::DEFAULT_WATCH_INTERVAL_SECS;
use crate::tls::{CredentialStore, StoreError};
use crate::update::IntakeHandle;

pub use super::api::{Answer, Caller, Command, SIGNATURE_HEADER};
pub use super::bodies::{confirm_version, preferred_hub};
pub use super::connection::{
    HANDSHAKE_TIMEOUT_SECS, HEADER_READ_TIMEOUT_SECS, MAX_PENDING_HANDSHAKES,
};
pub use super::routes::PREFER_AFTER_ANSWER_MS;

/// Why the management API could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The box certificate or the operator CA could not be loaded.
    #[error("management API TLS: {0}")]
    Tls(#[from] StoreError),
    /// The listen address could not be bound.
    #[error("management API: cannot listen on {address}: {source}")]
    Bind {
        /// The configured address.
        address: SocketAddr,
        /// What the OS said.
        source: std::io::Error,
    },
}

/// The TLS files the management API loads: the box's certificate and key, with the operator
/// CA as the only trust anchor for clients. `renkei check` loads the same (`crate::preflight`).
pub fn management_tls(management: &ManagementConfig, tls: &TlsConfig) -> TlsConfig {
    TlsConfig {
        certificate_file: tls.certificate_file.clone(),
        private_key_file: tls.private_key_file.clone(),
        ca_file: management.operator_ca_file.clone(),
        crl_file: management.operator_crl_file.clone(),
    }
}

/// The daemon's running parts the management API talks to.
pub struct DaemonParts {
    /// The link to the data centre (the hub group is steered through it).
    pub carrier: CarrierHandle,
    /// Requests for the supervisor.
    pub commands: mpsc::Sender<Command>,
    /// Where refusals are noted besides the log (LOG-2).
    pub events: EventLog,
    /// Where each authenticated operator request is noted.
    pub contact: OperatorContact,
    /// The running config's update intake.
    pub updates: IntakeHandle,
}

/// The running management API.
pub struct ManagementServer {
    listen: SocketAddr,
    settings: (ManagementConfig, TlsConfig, std::path::PathBuf),
    accept: JoinHandle<()>,
    watcher: JoinHandle<()>,
}

impl ManagementServer {
    /// Loads the TLS material (box certificate, operator CA as the only client trust anchor),
    /// binds the listener to `device` (the TUN device; retrying while the tunnel address
    /// appears) and starts serving. Refusals go to `events` as well as the log (LOG-2).
    pub async fn start(
        management: &ManagementConfig,
        tls: &TlsConfig,
        journal_dir: &std::path::Path,
        parts: DaemonParts,
    ) -> Result<Self, ServerError> {
        let DaemonParts {
            carrier,
            commands,
            events,
            contact,
            updates,
        } = parts;
        let store = Arc::new(CredentialStore::open(management_tls(management, tls))?);
        let device = carrier.device();
        let device = device.as_str();
        let watcher = store.spawn_watcher(Duration::from_secs(DEFAULT_WATCH_INTERVAL_SECS));
        let listener = match DeviceListener::bind(management.listen, device).await {
            Ok(listener) => listener,
            Err(source) => {
                watcher.abort();
                return Err(ServerError::Bind {
                    address: management.listen,
                    source,
                });
            }
        };
        let listen = management.listen;
        tracing::info!(listen = %listen, device, "management API listening");
        let context = Arc::new(Context {
            commands,
            events,
            contact,
            operators: management.operator_identities.clone(),
            slots: Slots::new(),
            updates,
            max_push_bytes: management.max_push_bytes,
            carrier,
            journal_dir: journal_dir.to_path_buf(),
        });
        let accept = tokio::spawn(accept_loop(listener, store, context));
        Ok(ManagementServer {
            listen,
            settings: (management.clone(), tls.clone(), journal_dir.to_path_buf()),
            accept,
            watcher,
        })
    }

    /// Where it listens.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    /// True when `management` and `tls` are what this server was started with: an apply
    /// that changes neither keeps it running.
    pub fn serves(
        &self,
        management: &ManagementConfig,
        tls: &TlsConfig,
        journal_dir: &std::path::Path,
    ) -> bool {
        self.settings.0 == *management && self.settings.1 == *tls && self.settings.2 == journal_dir
    }

    /// Stops accepting; connections in flight finish on their own.
    pub async fn stop(self) {
        self.accept.abort();
        self.watcher.abort();
        let _ = self.accept.await;
    }
}
