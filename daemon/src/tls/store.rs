//! Hot-reloadable TLS material, published through a `tokio::sync::watch` channel.
//!
//! Acceptors and connectors take the current value once per connection, so a reload changes
//! only the connections opened after it and never touches open ones. A reload that fails keeps
//! the material in use and reports why: a broken file must never take the box's services down.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, SystemTime};

use rustls::{ClientConfig, ServerConfig};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::credentials::{self, CertExpiry, CredentialError, Credentials};
use super::profile::{self, ProfileError};
use crate::config::{MinTls, TlsConfig};
use crate::state::events::TlsFileProblem;

/// How often the file watcher looks at the certificate, key, CA and CRL files by default.
pub const DEFAULT_WATCH_INTERVAL_SECS: u64 = 5;

/// Why a load or reload failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file was missing, malformed or outside the profile.
    #[error(transparent)]
    Credentials(#[from] CredentialError),
    /// rustls refused to build a configuration from the checked files.
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// The blocking task that reads the files did not finish (the runtime is shutting down).
    #[error("TLS reload task failed: {0}")]
    Task(String),
}

impl StoreError {
    /// What is wrong, as the stable word events carry.
    pub fn problem(&self) -> TlsFileProblem {
        match self {
            StoreError::Credentials(err) => err.problem(),
            // rustls refused what the checks let through: a key or algorithm it does not take.
            StoreError::Profile(_) => TlsFileProblem::OutsideProfile,
            StoreError::Task(_) => TlsFileProblem::Other,
        }
    }
}

/// One consistent generation of TLS configurations, built from one read of the files.
#[derive(Debug)]
pub struct TlsMaterial {
    server_tls13: Arc<ServerConfig>,
    server_tls12: Arc<ServerConfig>,
    client_tls13: Arc<ClientConfig>,
    client_tls12: Arc<ClientConfig>,
    /// Expiry of every loaded certificate (box chain first, then the CA bundle).
    pub expiries: Vec<CertExpiry>,
    /// Serial of the box's own certificate (colon-separated hex).
    pub serial: String,
    /// When these files were read.
    pub loaded_at: SystemTime,
}

impl TlsMaterial {
    /// Builds server and client configurations for both `min_tls` settings from checked files.
    pub fn build(credentials: &Credentials) -> Result<Self, ProfileError> {
        Ok(TlsMaterial {
            server_tls13: profile::server_config(credentials, MinTls::Tls13)?,
            server_tls12: profile::server_config(credentials, MinTls::Tls12)?,
            client_tls13: profile::client_config(credentials, MinTls::Tls13)?,
            client_tls12: profile::client_config(credentials, MinTls::Tls12)?,
            expiries: credentials.expiries.clone(),
            serial: credentials.serial().to_string(),
            loaded_at: SystemTime::now(),
        })
    }

    /// Reads and checks every file of `config` and builds the configurations from them: what
    /// the daemon does at start and on every reload, and what `renkei check` does too
    /// (`crate::preflight`), so the two cannot disagree on the same files.
    pub fn load(config: &TlsConfig) -> Result<Self, StoreError> {
        let credentials = credentials::load(config)?;
        Ok(TlsMaterial::build(&credentials)?)
    }

    /// Server configuration for an inbound service or the management API.
    pub fn server_config(&self, min_tls: MinTls) -> Arc<ServerConfig> {
        match min_tls {
            MinTls::Tls13 => self.server_tls13.clone(),
            MinTls::Tls12 => self.server_tls12.clone(),
        }
    }

    /// Client configuration for an outbound service.
    pub fn client_config(&self, min_tls: MinTls) -> Arc<ClientConfig> {
        match min_tls {
            MinTls::Tls13 => self.client_tls13.clone(),
            MinTls::Tls12 => self.client_tls12.clone(),
        }
    }

    /// A tokio acceptor for one inbound connection.
    pub fn acceptor(&self, min_tls: MinTls) -> TlsAcceptor {
        TlsAcceptor::from(self.server_config(min_tls))
    }

    /// A tokio connector for one outbound connection.
    pub fn connector(&self, min_tls: MinTls) -> TlsConnector {
        TlsConnector::from(self.client_config(min_tls))
    }
}

/// What identifies a file's current content cheaply: replaced, rewritten or removed files
/// all change it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
    device: u64,
}

/// Owns the `[tls]` paths and publishes the current [`TlsMaterial`].
#[derive(Debug)]
pub struct CredentialStore {
    /// The `[tls]` paths; replaced by a config push that changes them.
    config: Mutex<TlsConfig>,
    tx: watch::Sender<Arc<TlsMaterial>>,
    /// Serializes reloads, so an older read can never overwrite a newer one.
    reload_lock: tokio::sync::Mutex<()>,
    /// File stamps taken just before the last load, for the watcher.
    stamps: Mutex<Vec<Option<FileStamp>>>,
}

impl CredentialStore {
    /// Loads the files for the first time. Unlike a reload, this has nothing to fall back on,
    /// so the caller (the supervisor) refuses to start on error.
    pub fn open(config: TlsConfig) -> Result<Self, StoreError> {
        let stamps = file_stamps(&config);
        let material = build_material(&config)?;
        let (tx, _rx) = watch::channel(Arc::new(material));
        Ok(CredentialStore {
            config: Mutex::new(config),
            tx,
            reload_lock: tokio::sync::Mutex::new(()),
            stamps: Mutex::new(stamps),
        })
    }

    /// A receiver for the proxy and status page: `borrow()` per connection, `changed()` to
    /// learn about reloads.
    pub fn subscribe(&self) -> watch::Receiver<Arc<TlsMaterial>> {
        self.tx.subscribe()
    }

    /// The material in use now.
    pub fn current(&self) -> Arc<TlsMaterial> {
        self.tx.borrow().clone()
    }

    /// Re-reads every file and publishes the result. On error the current material stays in
    /// use, the error is logged and returned (for SIGHUP and the status page).
    pub async fn reload(&self) -> Result<Arc<TlsMaterial>, StoreError> {
        let _guard = self.reload_lock.lock().await;
        let config = self.config();
        let read = tokio::task::spawn_blocking(move || {
            let stamps = file_stamps(&config);
            (stamps, build_material(&config))
        })
        .await
        .map_err(|err| StoreError::Task(err.to_string()));
        let result = match read {
            Ok((stamps, built)) => {
                *self.stamps.lock().unwrap_or_else(PoisonError::into_inner) = stamps;
                built
            }
            Err(err) => Err(err),
        };
        match result {
            Ok(material) => {
                let material = Arc::new(material);
                self.tx.send_replace(material.clone());
                tracing::info!(serial = %material.serial, "TLS certificates reloaded");
                Ok(material)
            }
            Err(err) => {
                tracing::warn!(error = %err, "TLS reload failed; keeping the certificates in use");
                Err(err)
            }
        }
    }

    /// The `[tls]` paths in use.
    pub fn config(&self) -> TlsConfig {
        self.config
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Switches to other files (a pushed config changed `[tls]`): loads them, and only if they
    /// are good publishes them and keeps watching them. On error nothing changes.
    pub async fn replace(&self, config: TlsConfig) -> Result<Arc<TlsMaterial>, StoreError> {
        let _guard = self.reload_lock.lock().await;
        let read = config.clone();
        let (stamps, built) = tokio::task::spawn_blocking(move || {
            let stamps = file_stamps(&read);
            (stamps, build_material(&read))
        })
        .await
        .map_err(|err| StoreError::Task(err.to_string()))?;
        let material = Arc::new(built?);
        *self.config.lock().unwrap_or_else(PoisonError::into_inner) = config;
        *self.stamps.lock().unwrap_or_else(PoisonError::into_inner) = stamps;
        self.tx.send_replace(material.clone());
        tracing::info!(serial = %material.serial, "TLS files of the new config loaded");
        Ok(material)
    }

    /// Starts a task that reloads whenever a file's mtime, size or inode changes, checking
    /// every `interval`. It stops by itself when the store is dropped.
    pub fn spawn_watcher(self: &Arc<Self>, interval: Duration) -> JoinHandle<()> {
        let store: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let Some(store) = store.upgrade() else {
                    return;
                };
                let config = store.config();
                let Ok(now) = tokio::task::spawn_blocking(move || file_stamps(&config)).await
                else {
                    return;
                };
                let changed = *store.stamps.lock().unwrap_or_else(PoisonError::into_inner) != now;
                if changed {
                    tracing::info!("TLS files changed on disk; reloading");
                    // A failure is logged by reload and the old material stays in use.
                    let _ = store.reload().await;
                }
            }
        })
    }
}

fn paths(config: &TlsConfig) -> Vec<PathBuf> {
    let mut paths = vec![
        config.certificate_file.clone(),
        config.private_key_file.clone(),
        config.ca_file.clone(),
    ];
    paths.extend(config.crl_file.clone());
    paths
}

fn file_stamps(config: &TlsConfig) -> Vec<Option<FileStamp>> {
    paths(config)
        .iter()
        .map(|path| {
            fs::metadata(path).ok().map(|meta| FileStamp {
                modified: meta.modified().ok(),
                len: meta.len(),
                inode: meta.ino(),
                device: meta.dev(),
            })
        })
        .collect()
}

fn build_material(config: &TlsConfig) -> Result<TlsMaterial, StoreError> {
    let material = TlsMaterial::load(config)?;
    for expiry in material.expiries.iter().filter(|e| e.warning) {
        tracing::warn!(
            subject = %expiry.subject,
            path = %expiry.path.display(),
            not_after = %expiry.not_after,
            days_left = expiry.days_left,
            "certificate expires soon"
        );
    }
    Ok(material)
}
