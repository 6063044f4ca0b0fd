//! The running parts of an enrolled box (carrier, TLS store and services, management API), which
//! a pushed config changes as one: the transaction's `RunningBox`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::carrier::{Carrier, Reconfigured};
use crate::config::Config;
use crate::control::manager::Applied;
use crate::control::server::{Command, DaemonParts, ManagementServer};
use crate::control::transaction::RunningBox;
use crate::proxy::{JournalUpload, Services};
use crate::state::events::{EventLog, Occurrence};
use crate::state::moment::Moment;
use crate::state::operator_contact::OperatorContact;
use crate::tls::store::DEFAULT_WATCH_INTERVAL_SECS;
use crate::tls::CredentialStore;
use crate::update::IntakeHandle;

use super::SupervisorError;

/// The TLS store and the services running on it.
pub(super) struct Proxy {
    pub(super) store: Arc<CredentialStore>,
    pub(super) watcher: tokio::task::JoinHandle<()>,
    pub(super) services: Services,
}

/// Everything that runs from a config, and can be changed to run from another one.
pub(super) struct Parts {
    pub(super) carrier: Carrier,
    pub(super) proxy: Option<Proxy>,
    pub(super) management: Option<ManagementServer>,
    pub(super) commands: mpsc::Sender<Command>,
    pub(super) events: EventLog,
    /// When the operator last made an authenticated management request: the management API
    /// notes it, a carrier without handshakes (a closed network) takes it as its proof.
    pub(super) contact: OperatorContact,
    /// The running config's update intake, which the management API takes bundles with.
    pub(super) updates: IntakeHandle,
}

impl Parts {
    pub(super) async fn start(
        config: &Config,
        commands: mpsc::Sender<Command>,
        events: EventLog,
    ) -> Result<Parts, SupervisorError> {
        let contact = OperatorContact::new();
        let carrier = Carrier::start(config, contact.clone()).await?;
        let mut parts = Parts {
            carrier,
            proxy: None,
            management: None,
            commands,
            events,
            contact,
            updates: IntakeHandle::of(config),
        };
        if let Err(err) = parts.apply_services(config).await {
            parts.shutdown().await;
            return Err(err);
        }
        Ok(parts)
    }

    /// Makes the running parts match `config`, touching only what changed.
    pub(super) async fn reconfigure(&mut self, config: &Config) -> Result<(), SupervisorError> {
        let reconfigured = self.carrier.reconfigure(config).await;
        if matches!(reconfigured, Ok(Reconfigured::NewDevice) | Err(_)) {
            // The management listener is bound to the carrier's device; a new device needs a
            // new listener (started by apply_services).
            if let Some(server) = self.management.take() {
                server.stop().await;
            }
        }
        match reconfigured? {
            Reconfigured::Unchanged => {}
            // The words predate other kinds of link; tests and operators' log searches know
            // them. `kind` says which link it was.
            Reconfigured::Restarted => {
                tracing::info!(
                    kind = self.carrier.kind().as_str(),
                    "tunnel restarted for the new config (same device)"
                )
            }
            Reconfigured::NewDevice => tracing::info!(
                kind = self.carrier.kind().as_str(),
                device = %self.carrier.handle().device(),
                "tunnel rebuilt for the new config (new device)"
            ),
        }
        self.apply_services(config).await
    }

    /// TLS material, services and the management API.
    pub(super) async fn apply_services(&mut self, config: &Config) -> Result<(), SupervisorError> {
        self.updates.set(config);
        match (&mut self.proxy, &config.tls) {
            (Some(proxy), Some(tls)) => {
                if proxy.store.config() != *tls {
                    proxy.store.replace(tls.clone()).await?;
                }
                proxy
                    .services
                    .reconfigure(
                        &config.services,
                        JournalUpload::of(config).as_ref(),
                        Arc::clone(&proxy.store),
                        Some(self.carrier.handle()),
                    )
                    .await?;
            }
            (None, Some(tls)) => {
                let store = Arc::new(CredentialStore::open(tls.clone())?);
                tracing::info!(serial = %store.current().serial, "TLS certificates loaded");
                let watcher = store.spawn_watcher(Duration::from_secs(DEFAULT_WATCH_INTERVAL_SECS));
                match Services::start(
                    &config.services,
                    JournalUpload::of(config).as_ref(),
                    Arc::clone(&store),
                    Some(self.carrier.handle()),
                )
                .await
                {
                    Ok(services) => {
                        self.proxy = Some(Proxy {
                            store,
                            watcher,
                            services,
                        })
                    }
                    Err(err) => {
                        watcher.abort();
                        return Err(err.into());
                    }
                }
            }
            (Some(_), None) => {
                if let Some(proxy) = self.proxy.take() {
                    proxy.services.shutdown().await;
                    proxy.watcher.abort();
                }
            }
            (None, None) if !config.services.is_empty() => {
                return Err(SupervisorError::MissingTls {
                    services: config.services.len(),
                })
            }
            (None, None) => {}
        }

        let wanted = config.management.as_ref().zip(config.tls.as_ref());
        let unchanged = match (&self.management, wanted) {
            (Some(server), Some((m, tls))) => server.serves(m, tls, &config.paths.journal_dir),
            (None, None) => true,
            _ => false,
        };
        if !unchanged {
            if let Some(server) = self.management.take() {
                server.stop().await;
            }
            if let Some((management, tls)) = wanted {
                self.management = Some(
                    ManagementServer::start(
                        management,
                        tls,
                        &config.paths.journal_dir,
                        DaemonParts {
                            carrier: self.carrier.handle(),
                            commands: self.commands.clone(),
                            events: self.events.clone(),
                            contact: self.contact.clone(),
                            updates: self.updates.clone(),
                        },
                    )
                    .await?,
                );
            }
        }
        Ok(())
    }

    pub(super) async fn shutdown(self) {
        if let Some(server) = self.management {
            server.stop().await;
        }
        if let Some(proxy) = self.proxy {
            proxy.services.shutdown().await;
            proxy.watcher.abort();
        }
        self.carrier.shutdown().await;
    }
}

/// The running parts as the push transaction sees them: the operator is reached over the
/// carrier, which says itself what proves the link (for WireGuard, a handshake).
impl RunningBox for Parts {
    type Error = SupervisorError;

    async fn apply(&mut self, config: &Config) -> Result<Applied, SupervisorError> {
        self.reconfigure(config).await?;
        Ok(Applied::now())
    }

    fn operator_reached_since(&self, operator: std::net::IpAddr, since: &Moment) -> bool {
        self.carrier
            .handle()
            .operator_reached_since(operator, since)
    }

    async fn refresh_link(&mut self, operator: std::net::IpAddr) {
        self.carrier.handle().refresh(operator).await;
    }
}

/// SIGHUP: re-read the TLS files. New connections use the result; open ones are untouched.
pub(super) async fn reload(proxy: Option<&Proxy>, events: &EventLog) {
    let Some(proxy) = proxy else {
        tracing::info!("SIGHUP: no [tls] section, nothing to reload");
        return;
    };
    match proxy.store.reload().await {
        Ok(material) => events.push(Occurrence::TlsReloaded {
            serial: material.serial.clone(),
        }),
        Err(err) => events.push(Occurrence::TlsReloadFailed {
            reason: err.problem(),
            error: err.to_string(),
        }),
    }
}
