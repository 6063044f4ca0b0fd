//! The running IPsec carrier: renkei's side of charon. A task connects to charon's VICI socket
//! (again and again with a bounded backoff while charon is not up, and after every restart of
//! charon, which keeps nothing), loads the box's key, certificates and the connection, then
//! follows the SAs: on every SA event and every [`POLL_INTERVAL_SECS`] it lists them, updates
//! the link's state, checks a newly established SA against the CRYPTREC profile (terminating
//! one outside it), and on-demand terminates the SA once no connection of renkei's has held it
//! for `idle_timeout_secs` (renkei's own use, not charon's ESP counters, which would count the
//! box's time sync and journal upload as use: those ride on the SA without holding it, NET-7).
//!
//! always_on: charon itself starts the SA at load and restarts it (start/restart actions).
//! on_demand: [`IpsecHandle::demand`] initiates it and waits up to `connect_timeout_secs`.
//! The operator's reach is proven as on a closed network: an authenticated management request
//! after the moment ([`OperatorContact`]).

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use tokio::sync::{broadcast, watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::{Config, PolicyMode};
use crate::state::events::{IpsecProblem, Occurrence};
use crate::state::moment::Moment;
use crate::state::operator_contact::OperatorContact;

use super::device::{self, DeviceError};
use super::hubs::{hub_move, ConcentratorGroup, PROBE_CONNECTION_NAME};
use super::record::{installed_child, SaRecord};
use super::refusal;
use super::sa::{IkeSa, IkeState};
use super::settings::{IpsecSettings, SettingsError};
use super::vici::{CertificateRole, PrivateKey, Vici, ViciError};
use crate::carrier::snapshot::{
    CarrierBackend, CarrierKind, CarrierSnapshot, DropCounts, IpsecCarrier, IpsecChildSa,
    IpsecIkeSa, IpsecLink, LinkBackend, LinkReason, LinkSnapshot, LinkState,
};
use crate::carrier::{DemandError, Reconfigured};
use crate::state::hub_preference::HubPreference;
use crate::tunnel::failover::{Step, Switch};
use crate::tunnel::{HubsSnapshot, PreferError};

/// The name of the one link an IPsec box has.
pub const LINK_NAME: &str = "data centre";
/// How often the SAs are listed besides on events, in seconds (counters, idle timer).
pub const POLL_INTERVAL_SECS: u64 = 2;
/// First wait before connecting to charon again, in milliseconds; doubled up to the maximum.
pub const RETRY_FIRST_MILLIS: u64 = 200;
/// Longest wait between attempts to reach charon, in seconds.
pub const RETRY_MAX_SECS: u64 = 5;
/// always_on: how often renkei asks charon to try again while the connection has no IKE SA at
/// all. charon's start/restart actions bring an SA back after it was up, but do not retry a
/// negotiation the concentrator refused (NO_PROPOSAL_CHOSEN, authentication): without this an
/// always-on box would stay down after the concentrator was fixed, and a refusal that came
/// before renkei followed charon's log would never be recorded.
pub const ALWAYS_ON_RETRY_SECS: u64 = 5;
/// How long a terminate at shutdown, reconfigure or idle may take, in seconds.
pub const TERMINATE_TIMEOUT_SECS: u64 = 5;
/// Events (refusals, profile violations) kept for a slow reader before the oldest are lost.
pub const OCCURRENCE_QUEUE_LEN: usize = 16;

/// Why the IPsec carrier could not start.
#[derive(Debug, thiserror::Error)]
pub enum IpsecError {
    /// The config or the files it names.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The box's address could not be set up.
    #[error(transparent)]
    Device(#[from] DeviceError),
}

/// The running IPsec carrier.
pub struct Ipsec {
    handle: IpsecHandle,
    task: JoinHandle<()>,
    /// Holds the box's address; dropped (removed) last.
    device: Option<device::AddressDevice>,
}

/// A clonable handle on it.
#[derive(Clone)]
pub struct IpsecHandle {
    shared: Arc<Shared>,
}

struct Shared {
    settings: Mutex<IpsecSettings>,
    record: Mutex<SaRecord>,
    state: watch::Sender<LinkState>,
    contact: OperatorContact,
    /// Connections holding an on-demand SA up.
    holds: AtomicUsize,
    /// Wakes the task to list the SAs now.
    poke: Notify,
    /// One initiation at a time.
    initiating: tokio::sync::Mutex<()>,
    /// False once the task ended by a panic.
    alive: AtomicBool,
    /// Refusals and profile violations, for the event ring (the status side subscribes).
    occurrences: broadcast::Sender<Occurrence>,
    /// The primary and backup concentrators (`[ipsec.failover]`), when the box has both.
    group: Mutex<Option<ConcentratorGroup>>,
    /// The operator's preferred concentrator: it outlives a new config and a restart (kept in
    /// the state directory, as the WireGuard hub group keeps its own) until cleared.
    preference: HubPreference,
}

impl Shared {
    fn settings(&self) -> MutexGuard<'_, IpsecSettings> {
        self.settings.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn record(&self) -> MutexGuard<'_, SaRecord> {
        self.record.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn group(&self) -> MutexGuard<'_, Option<ConcentratorGroup>> {
        self.group.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new group for the settings (start, new config), with the operator's preference and
    /// on the concentrator the previous group had active; the data connection is aimed at it.
    fn regroup(&self) {
        let preferred = self.preference.get();
        let active = self
            .group()
            .as_ref()
            .map(|group| group.active().name.to_string());
        let mut settings = self.settings();
        let group = ConcentratorGroup::of(
            &settings.ipsec,
            preferred.as_deref(),
            active.as_deref(),
            std::time::Instant::now(),
        );
        if let Some(group) = &group {
            group.active().aim(&mut settings.connection);
        }
        *self.group() = group;
    }

    fn publish(&self) {
        let mode = self.settings().mode;
        let state = self.record().state(mode);
        self.state.send_if_modified(|current| {
            let changed = *current != state;
            *current = state;
            changed
        });
    }
}

impl Ipsec {
    /// Sets up the box's address and starts following charon. charon need not be up yet: a
    /// push that moves a running box to IPsec gets its charon only once the config file is
    /// replaced (the image's `renkei-charon.path`), so the task keeps trying the VICI socket
    /// (bounded backoff) instead of failing the start, and the confirm window decides.
    pub async fn start(config: &Config, contact: OperatorContact) -> Result<Self, IpsecError> {
        let settings = IpsecSettings::of(config)?;
        let device = device::create(
            &settings.ipsec.interface,
            settings.ipsec.address,
            &settings.ipsec.data_centre_prefixes,
        )
        .await?;
        let mode = settings.mode;
        let (state, _) = watch::channel(SaRecord::new(Instant::now()).state(mode));
        let (preference, damaged) = HubPreference::open(&config.paths.state_dir);
        if let Some(e) = damaged {
            tracing::warn!(error = %e, "IPsec: ignoring the stored preferred concentrator");
        }
        let shared = Arc::new(Shared {
            settings: Mutex::new(settings),
            record: Mutex::new(SaRecord::new(Instant::now())),
            state,
            contact,
            holds: AtomicUsize::new(0),
            poke: Notify::new(),
            initiating: tokio::sync::Mutex::new(()),
            alive: AtomicBool::new(true),
            occurrences: broadcast::channel(OCCURRENCE_QUEUE_LEN).0,
            group: Mutex::new(None),
            preference,
        });
        shared.regroup();
        let task = tokio::spawn(follow(Arc::clone(&shared)));
        Ok(Ipsec {
            handle: IpsecHandle { shared },
            task,
            device: Some(device),
        })
    }

    /// The handle the rest of the daemon uses.
    pub fn handle(&self) -> IpsecHandle {
        self.handle.clone()
    }

    /// Applies a changed config: the SA is terminated and the connection loaded again; a new
    /// address, device or data-centre prefixes is a new device (listeners bind again).
    pub async fn reconfigure(&mut self, config: &Config) -> Result<Reconfigured, IpsecError> {
        let settings = IpsecSettings::of(config)?;
        let old = self.handle.shared.settings().clone();
        if old == settings {
            return Ok(Reconfigured::Unchanged);
        }
        self.task.abort();
        terminate(&old).await;
        let new_device = old.ipsec.interface != settings.ipsec.interface
            || old.ipsec.address != settings.ipsec.address
            || old.ipsec.esp_device() != settings.ipsec.esp_device()
            || old.ipsec.data_centre_prefixes != settings.ipsec.data_centre_prefixes;
        if new_device {
            // Closing the old TUN removes it with its address and guard routes.
            drop(self.device.take());
            self.device = Some(
                device::create(
                    &settings.ipsec.interface,
                    settings.ipsec.address,
                    &settings.ipsec.data_centre_prefixes,
                )
                .await?,
            );
        }
        let shared = &self.handle.shared;
        *shared.settings() = settings;
        shared.regroup();
        let continuing = SaRecord::continuing(&shared.record(), Instant::now());
        *shared.record() = continuing;
        shared.publish();
        self.task = tokio::spawn(follow(Arc::clone(shared)));
        Ok(if new_device {
            Reconfigured::NewDevice
        } else {
            Reconfigured::Restarted
        })
    }

    /// Terminates the SA (the concentrator sees it go) and removes the box's address.
    pub async fn shutdown(mut self) {
        self.task.abort();
        let settings = self.handle.shared.settings().clone();
        terminate(&settings).await;
        // Closing the TUN removes it with its address.
        drop(self.device.take());
    }
}

impl Drop for Ipsec {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Terminates the connection's SAs, if charon can be reached; bounded.
async fn terminate(settings: &IpsecSettings) {
    let timeout = Duration::from_secs(TERMINATE_TIMEOUT_SECS);
    let attempt = async {
        let mut vici = Vici::connect(&settings.vici_socket).await?;
        if settings.ipsec.failover.is_some() {
            let _ = vici.terminate_now(PROBE_CONNECTION_NAME, timeout).await;
        }
        vici.terminate(&settings.connection.name, timeout).await
    };
    match tokio::time::timeout(timeout * 2, attempt).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "nothing to terminate"),
        Err(_) => tracing::warn!("charon did not terminate the SA in time"),
    }
}

/// Sets the carrier dead when the task unwinds.
struct AliveGuard(Arc<Shared>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.alive.store(false, Ordering::Relaxed);
        }
    }
}

/// What runs for as long as the carrier runs with one config: following charon, and the
/// on-demand check-ins. One task, so a new config or a stop ends both.
async fn follow(shared: Arc<Shared>) {
    let checkins = shared.settings().checkins();
    match checkins {
        Some((interval, window)) => {
            tokio::join!(
                supervise(Arc::clone(&shared)),
                check_in(&shared, interval, window)
            );
        }
        None => supervise(shared).await,
    }
}

/// An on-demand box's check-ins: every `interval` the SA comes up and is held for `window` as
/// if a LAN connection needed it, then the idle timeout closes it, so the operator's pushes
/// and monitoring reach a box the concentrator cannot call (as the WireGuard tunnel's).
async fn check_in(shared: &Arc<Shared>, interval: Duration, window: Duration) {
    let mut ticker = tokio::time::interval_at(Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let handle = IpsecHandle {
        shared: Arc::clone(shared),
    };
    loop {
        ticker.tick().await;
        tracing::info!(
            window_secs = window.as_secs(),
            "check-in: bringing the IPsec SA up for the operator"
        );
        let hold = handle.hold();
        if let Err(e) = handle.bring_up().await {
            tracing::warn!(error = %e, "check-in: the IPsec SA did not come up");
        }
        tokio::time::sleep(window).await;
        drop(hold);
    }
}

/// Follows charon for as long as the carrier runs.
async fn supervise(shared: Arc<Shared>) {
    let _alive = AliveGuard(Arc::clone(&shared));
    let first = Duration::from_millis(RETRY_FIRST_MILLIS);
    let mut wait = first;
    loop {
        let (loaded, error) = match session(&shared).await {
            Ok(never) => match never {},
            Err(failure) => failure,
        };
        tracing::warn!(error = %error, "charon is not reachable or refused the connection; trying again");
        shared.record().lost(error.to_string());
        shared.publish();
        wait = if loaded {
            first
        } else {
            (wait * 2).min(Duration::from_secs(RETRY_MAX_SECS))
        };
        tokio::time::sleep(wait).await;
    }
}

/// Loads everything into charon and follows the SAs until charon goes away. Says whether the
/// load had succeeded (charon restarted rather than never came up) and why it ended.
async fn session(shared: &Shared) -> Result<std::convert::Infallible, (bool, ViciError)> {
    let settings = shared.settings().clone();
    let mut vici = Vici::connect(&settings.vici_socket)
        .await
        .map_err(|e| (false, e))?;
    let mut listener = Vici::connect(&settings.vici_socket)
        .await
        .map_err(|e| (false, e))?;
    let mut events = Box::pin(listener.events());
    let mut log = Box::pin(listener.log_lines());
    load(&mut vici, &settings).await.map_err(|e| {
        if e.peer_refused_proposals() {
            tracing::error!(error = %e, "the concentrator accepts none of the profile's proposals");
        }
        (false, e)
    })?;
    let standby = shared.group().as_ref().map(|group| {
        let mut probe = settings.connection.clone();
        group.standby().aim(&mut probe);
        probe
    });
    if let Some(probe) = &standby {
        vici.load_probe(probe, PROBE_CONNECTION_NAME)
            .await
            .map_err(|e| (false, e))?;
    }
    shared.record().loaded();
    tracing::info!(
        remote = %settings.ipsec.remote_address,
        remote_id = %settings.ipsec.remote_id,
        mode = settings.mode.as_str(),
        "IPsec connection loaded into charon"
    );
    let mut ticks = tokio::time::interval(Duration::from_secs(POLL_INTERVAL_SECS));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Since when the connection has had no IKE SA at all (charon's own restarts show one at
    // once, CONNECTING): only an absence that lasts a whole retry interval is retried.
    let mut without_sa_since: Option<Instant> = None;
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(event)) => shared
                    .record()
                    .note_event(&event.sas, &settings.connection.name),
                Some(Err(e)) => return Err((true, e)),
                None => return Err((true, ViciError::Timeout {
                    command: "event stream",
                    timeout: Duration::ZERO,
                })),
            },
            line = log.next() => {
                match line {
                    Some(Ok(line)) => note_refusal(shared, &settings, line),
                    Some(Err(e)) => return Err((true, e)),
                    None => {}
                }
                continue;
            }
            _ = ticks.tick() => {}
            _ = shared.poke.notified() => {}
        }
        let sas = vici.list_sas().await.map_err(|e| (true, e))?;
        let probe = probe_state(&sas);
        let now = Instant::now();
        let violation =
            shared
                .record()
                .observe(sas, &settings.connection.name, now, SystemTime::now());
        shared.publish();
        if let Some(why) = violation {
            let remote_id = shared
                .record()
                .ike
                .as_ref()
                .and_then(|sa| sa.remote_id.clone())
                .unwrap_or_else(|| settings.ipsec.remote_id.clone());
            // The event's own log record says it (error level).
            let _ = shared.occurrences.send(Occurrence::IpsecSaOutsideProfile {
                remote_id,
                algorithms: why.english,
                names: why.names,
            });
            let _ = vici
                .terminate(
                    &settings.connection.name,
                    Duration::from_secs(TERMINATE_TIMEOUT_SECS),
                )
                .await;
            continue;
        }
        let steps = shared.group().as_mut().map(|group| {
            let up = shared.record().state(settings.mode) == LinkState::Up;
            group.observe(up, probe == Some(true), now.into_std(), SystemTime::now())
        });
        for step in steps.unwrap_or_default() {
            match step {
                Step::Switch(switch) => move_sa(shared, &mut vici, switch)
                    .await
                    .map_err(|e| (true, e))?,
                Step::Probe(member) => probe_standby(shared, &settings, member, probe.is_some()),
            }
        }
        let retry = Duration::from_secs(ALWAYS_ON_RETRY_SECS);
        without_sa_since = match (shared.record().ike.is_some(), without_sa_since) {
            (true, _) => None,
            (false, since) => Some(since.unwrap_or(now)),
        };
        if settings.mode == PolicyMode::AlwaysOn
            && without_sa_since.is_some_and(|since| now.saturating_duration_since(since) >= retry)
        {
            without_sa_since = Some(now);
            // On its own connection, so the SA list, the events and charon's log keep flowing
            // while charon negotiates.
            let (socket, name) = (
                settings.vici_socket.clone(),
                settings.connection.name.clone(),
            );
            tokio::spawn(async move {
                let initiate = async {
                    let mut vici = Vici::connect(&socket).await?;
                    vici.initiate(&name, retry).await
                };
                if let Err(e) = initiate.await {
                    tracing::debug!(error = %e, "always-on IPsec SA not up yet; trying again");
                }
            });
        }
        let idle = settings.mode == PolicyMode::OnDemand
            && shared.holds.load(Ordering::Relaxed) == 0
            && shared.record().is_idle(now, settings.idle_timeout());
        if idle {
            tracing::info!(
                idle_secs = settings.ipsec.idle_timeout_secs,
                "on-demand IPsec SA idle; terminating it"
            );
            vici.terminate(
                &settings.connection.name,
                Duration::from_secs(TERMINATE_TIMEOUT_SECS),
            )
            .await
            .map_err(|e| (true, e))?;
            shared.poke.notify_one();
        }
    }
}

/// The standby probe's IKE SA: `None` when charon lists none, else whether it is established.
fn probe_state(sas: &[IkeSa]) -> Option<bool> {
    sas.iter()
        .filter(|sa| sa.name == PROBE_CONNECTION_NAME)
        .map(|sa| sa.state == IkeState::Established)
        .reduce(|a, b| a || b)
}

/// The group asks for a probe of `member`: the standby concentrator's IKE SA is initiated
/// (on its own VICI connection, so the listing goes on) unless one is under way already. The
/// active member needs none: charon and the always-on retry keep its SA.
fn probe_standby(shared: &Shared, settings: &IpsecSettings, member: usize, under_way: bool) {
    let is_standby = shared
        .group()
        .as_ref()
        .is_some_and(|group| group.active_index() != member);
    if !is_standby || under_way {
        return;
    }
    let socket = settings.vici_socket.clone();
    let timeout = Duration::from_secs(TERMINATE_TIMEOUT_SECS);
    tokio::spawn(async move {
        let initiate = async {
            let mut vici = Vici::connect(&socket).await?;
            vici.initiate_ike(PROBE_CONNECTION_NAME, timeout).await
        };
        if let Err(e) = initiate.await {
            tracing::debug!(error = %e, "the standby concentrator does not answer yet");
        }
    });
}

/// Carries out a switch of the group: both connections' SAs go at once (a dead concentrator
/// is not waited for), the data connection is loaded aimed at the new active concentrator
/// (charon's start action brings its SA up; the always-on retry backs it up) and the probe at
/// the other one. Logged, and a `hub_switched` event.
async fn move_sa(shared: &Shared, vici: &mut Vici, switch: Switch) -> Result<(), ViciError> {
    let Some((active, standby, from, to, failovers)) = shared.group().as_mut().map(|group| {
        group.switched();
        (
            group.active().clone(),
            group.standby().clone(),
            group.member(switch.from).name,
            group.member(switch.to).name,
            group.failovers(),
        )
    }) else {
        return Ok(());
    };
    let (connection, probe) = {
        let mut settings = shared.settings();
        active.aim(&mut settings.connection);
        let mut probe = settings.connection.clone();
        standby.aim(&mut probe);
        (settings.connection.clone(), probe)
    };
    let timeout = Duration::from_secs(TERMINATE_TIMEOUT_SECS);
    // Nothing to terminate is no error.
    let _ = vici.terminate_now(&connection.name, timeout).await;
    let _ = vici.terminate_now(PROBE_CONNECTION_NAME, timeout).await;
    vici.load_conn(&connection).await?;
    vici.load_probe(&probe, PROBE_CONNECTION_NAME).await?;
    shared.poke.notify_one();
    if switch.why.is_failure() {
        tracing::warn!(
            hub_from = from,
            hub_to = to,
            remote = %active.address,
            reason = switch.why.as_str(),
            failovers,
            "IPsec: failed over to the other concentrator"
        );
    } else {
        tracing::info!(
            hub_from = from,
            hub_to = to,
            remote = %active.address,
            reason = switch.why.as_str(),
            failovers,
            "IPsec: moved to the other concentrator"
        );
    }
    // No subscriber (no status side) is not an error.
    let _ = shared.occurrences.send(Occurrence::HubSwitched {
        from: from.to_string(),
        to: to.to_string(),
        reason: hub_move(switch.why),
        failovers,
    });
    Ok(())
}

/// Turns a charon log line about our connection that says a negotiation was refused into an
/// event (always-on SAs are negotiated by charon on its own: its log is where a refusal shows).
fn note_refusal(shared: &Shared, settings: &IpsecSettings, line: super::vici::LogLine) {
    if line.ike_sa_name.as_deref() != Some(settings.connection.name.as_str()) {
        return;
    }
    let Some(msg) = line.msg else {
        return;
    };
    if let Some(reason) = refusal::of_line(&msg) {
        shared.record().failed(reason.into(), msg.clone());
        let _ = shared
            .occurrences
            .send(Occurrence::IpsecNegotiationRefused { reason, error: msg });
    }
}

/// Key, certificates (the box's intermediates and every CA of the CA file), then the connection:
/// what charon needs after every start (it keeps nothing). Public for the tunnel benchmark's
/// IPsec pair, which loads a box's charon as renkei does.
pub async fn load(vici: &mut Vici, settings: &IpsecSettings) -> Result<(), ViciError> {
    vici.load_key(&PrivateKey {
        pem: settings.key_pem.clone(),
    })
    .await?;
    vici.load_cert(
        &settings.connection.certificate_pem,
        CertificateRole::EndEntity,
    )
    .await?;
    for intermediate in &settings.intermediates {
        vici.load_cert(intermediate, CertificateRole::EndEntity)
            .await?;
    }
    for ca in &settings.connection.remote_ca_pems {
        vici.load_cert(ca, CertificateRole::Authority).await?;
    }
    vici.load_conn(&settings.connection).await
}

/// Holds an on-demand SA up while a connection uses it.
pub struct IpsecGuard {
    shared: Arc<Shared>,
}

impl Drop for IpsecGuard {
    fn drop(&mut self) {
        if self.shared.holds.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.shared.record().used(Instant::now());
        }
    }
}

impl IpsecHandle {
    fn routes(&self, destination: IpAddr) -> bool {
        let destination = destination.to_canonical();
        self.shared
            .settings()
            .ipsec
            .data_centre_prefixes
            .iter()
            .any(|n| n.contains(&destination))
    }

    /// A path to `destination` in the data centre: the SA up (initiated when on-demand),
    /// within the connect timeout; held up until the guard is dropped.
    pub async fn demand(&self, destination: IpAddr) -> Result<IpsecGuard, DemandError> {
        if !self.routes(destination) {
            return Err(DemandError::NoRoute(destination));
        }
        let guard = self.hold();
        self.bring_up().await?;
        Ok(guard)
    }

    /// Holds the SA, without bringing it up, for as long as a connection from `peer` that
    /// arrived through it lives (an inbound service's, the operator's management API's): use
    /// of an on-demand SA as much as an outbound connection. `None` for a peer outside the
    /// data centre's prefixes (a LAN client): nothing to hold.
    pub fn hold_for_peer(&self, peer: IpAddr) -> Option<IpsecGuard> {
        self.routes(peer).then(|| self.hold())
    }

    /// Keeps an on-demand SA from idling out until the guard is dropped.
    fn hold(&self) -> IpsecGuard {
        self.shared.holds.fetch_add(1, Ordering::Relaxed);
        IpsecGuard {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Brings the SA up within the connect timeout without holding it.
    pub async fn connect_now(&self) -> Result<(), DemandError> {
        self.bring_up().await
    }

    async fn bring_up(&self) -> Result<(), DemandError> {
        let (mode, timeout, name, socket) = {
            let settings = self.shared.settings();
            (
                settings.mode,
                settings.connect_timeout(),
                settings.connection.name.clone(),
                settings.vici_socket.clone(),
            )
        };
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.state.subscribe();
        if *state.borrow() == LinkState::Up {
            return Ok(());
        }
        if mode == PolicyMode::OnDemand {
            let _one = self.shared.initiating.lock().await;
            if *state.borrow() != LinkState::Up {
                let initiate = async {
                    let mut vici = Vici::connect(&socket).await?;
                    vici.initiate(&name, timeout).await
                };
                match tokio::time::timeout_at(deadline, initiate).await {
                    Ok(Ok(_)) => self.shared.poke.notify_one(),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "the IPsec SA could not be initiated");
                        let problem = refusal::of_error(&e)
                            .map_or(IpsecProblem::InitiateFailed, |(why, _)| why.into());
                        self.shared.record().failed(problem, e.to_string());
                        return Err(DemandError::Timeout(timeout));
                    }
                    Err(_) => return Err(DemandError::Timeout(timeout)),
                }
            }
        }
        let up = tokio::time::timeout_at(deadline, state.wait_for(|s| *s == LinkState::Up)).await;
        match up {
            Ok(Ok(_)) => Ok(()),
            _ => Err(DemandError::Timeout(timeout)),
        }
    }

    /// on_demand: terminates the SA now (always-on: charon keeps it; nothing to do).
    pub async fn disconnect(&self) {
        let settings = self.shared.settings().clone();
        if settings.mode == PolicyMode::OnDemand {
            terminate(&settings).await;
            self.shared.poke.notify_one();
        }
    }

    /// The primary and backup concentrators for the status document; `None` without
    /// `[ipsec.failover]`.
    pub fn hubs(&self) -> Option<HubsSnapshot> {
        let state = *self.shared.state.borrow();
        self.shared
            .group()
            .as_ref()
            .map(|group| group.snapshot(state, std::time::Instant::now()))
    }

    /// The operator prefers concentrator `name` (`primary`, `backup`) until cleared with
    /// `None`; returns the active one afterwards. A move goes through charon now.
    pub async fn prefer(&self, name: Option<&str>) -> Result<String, PreferError> {
        let switch = {
            let mut group = self.shared.group();
            let group = group.as_mut().ok_or(PreferError::NoGroup)?;
            group.prefer(name, std::time::Instant::now())?
        };
        let shared = Arc::clone(&self.shared);
        let kept = name.map(str::to_string);
        match tokio::task::spawn_blocking(move || shared.preference.set(kept.as_deref())).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(
                error = %e,
                "IPsec: cannot keep the preferred concentrator in the state directory; it holds until the daemon restarts"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "IPsec: the preferred concentrator was not written down")
            }
        }
        tracing::info!(
            preferred = name.unwrap_or("none"),
            "IPsec: the operator's preferred concentrator is set"
        );
        if let Some(switch) = switch {
            let socket = self.shared.settings().vici_socket.clone();
            let moved = async {
                let mut vici = Vici::connect(&socket).await?;
                move_sa(&self.shared, &mut vici, switch).await
            };
            if let Err(e) = moved.await {
                // The group already counts the new one active; the session loads it again
                // when charon is back.
                tracing::warn!(error = %e, "IPsec: the move to the preferred concentrator failed in charon");
            }
        }
        Ok(self
            .shared
            .group()
            .as_ref()
            .map(|group| group.active().name.to_string())
            .unwrap_or_default())
    }

    /// True when an authenticated operator request arrived at or after `since`.
    pub fn operator_reached_since(&self, since: &Moment) -> bool {
        self.shared.contact.reached_since(since)
    }

    /// Watches the data-centre link's state when `destination` is in the data centre.
    pub fn watch_state(&self, destination: IpAddr) -> Option<watch::Receiver<LinkState>> {
        self.routes(destination)
            .then(|| self.shared.state.subscribe())
    }

    /// Refusals and profile violations from now on, for the event ring.
    pub fn occurrences(&self) -> broadcast::Receiver<Occurrence> {
        self.shared.occurrences.subscribe()
    }

    /// True while the task follows charon.
    pub fn is_alive(&self) -> bool {
        self.shared.alive.load(Ordering::Relaxed)
    }

    /// The carrier's view for the page, the metrics and tests.
    pub fn snapshot(&self) -> CarrierSnapshot {
        let settings = self.shared.settings().clone();
        let record = self.shared.record().clone();
        let now = Instant::now();
        let wall = SystemTime::now();
        let state = record.state(settings.mode);
        let alarm = record.alarm(now, settings.alarm_after(), settings.mode);
        let ago = |d: Option<Duration>| d.and_then(|d| wall.checked_sub(d));
        let ike = record.ike.as_ref();
        let child = ike.and_then(installed_child);
        let total = record.total();
        let (reason_code, reason) = match (&record.last_error, ike, state) {
            (_, Some(_), LinkState::Up) => (
                LinkReason::SaEstablished,
                LinkReason::SaEstablished.text().to_string(),
            ),
            (_, Some(sa), _) => (LinkReason::SaInProgress, format!("IKE SA {:?}", sa.state)),
            (Some(why), None, _) => (LinkReason::CharonError, format!("charon: {why}")),
            (None, None, LinkState::Idle) => (
                LinkReason::NoSaUntilNeeded,
                LinkReason::NoSaUntilNeeded.text().to_string(),
            ),
            (None, None, _) => (
                LinkReason::WaitingForCharon,
                LinkReason::WaitingForCharon.text().to_string(),
            ),
        };
        let link = LinkSnapshot {
            name: LINK_NAME.to_string(),
            state,
            reason,
            reason_code,
            alarm,
            last_reached: record.last_up.map(|(_, w)| w),
            last_reached_age_secs: record
                .last_up
                .map(|(_, w)| wall.duration_since(w).unwrap_or_default().as_secs()),
            holds: self.shared.holds.load(Ordering::Relaxed),
            // The run's totals: a counter, unlike the CHILD SA's own that a rekey resets.
            tx_bytes: total.bytes_out,
            rx_bytes: total.bytes_in,
            backend: LinkBackend::Ipsec(Box::new(IpsecLink {
                // The concentrator the connection is aimed at (the active one of a group).
                remote_address: settings.connection.remote_address,
                remote_id: settings.connection.remote_id.clone(),
                data_centre_prefixes: settings.ipsec.data_centre_prefixes.clone(),
                ike: ike.map(|sa| IpsecIkeSa {
                    state: sa.state.charon_name().to_string(),
                    remote_id: sa.remote_id.clone(),
                    encryption: sa.algorithms.encryption.clone(),
                    key_size_bits: sa.algorithms.key_size_bits,
                    integrity: sa.algorithms.integrity.clone(),
                    prf: sa.algorithms.prf.clone(),
                    dh_group: sa.algorithms.dh_group.clone(),
                    established: ago(sa.established_ago),
                    rekey_in_secs: sa.rekey_in.map(|d| d.as_secs()),
                }),
                child: child.map(|c| IpsecChildSa {
                    state: c.state.clone(),
                    encryption: c.algorithms.encryption.clone(),
                    key_size_bits: c.algorithms.key_size_bits,
                    dh_group: c.algorithms.dh_group.clone(),
                    installed: ago(c.installed_ago),
                    bytes_in: c.bytes_in,
                    bytes_out: c.bytes_out,
                    packets_in: c.packets_in,
                    packets_out: c.packets_out,
                    last_in: ago(c.last_in),
                    last_out: ago(c.last_out),
                    rekey_in_secs: c.rekey_in.map(|d| d.as_secs()),
                    expires_in_secs: c.expires_in.map(|d| d.as_secs()),
                    local_ts: c.local_ts.clone(),
                    remote_ts: c.remote_ts.clone(),
                }),
                total,
                profile_violation: record.violation.clone(),
                profile_violation_names: record.violation_names.clone(),
            })),
        };
        CarrierSnapshot {
            kind: CarrierKind::Ipsec,
            interface: settings.ipsec.esp_device().to_string(),
            address: settings.ipsec.address,
            policy: settings.mode.as_str(),
            state,
            alarm,
            peers: vec![link],
            drops: DropCounts::default(),
            backend: CarrierBackend::Ipsec(IpsecCarrier {
                vici_socket: settings.vici_socket.clone(),
                charon_loaded: record.loaded,
                loads: record.loads,
                last_error: record.last_error.clone(),
                last_error_code: record.last_error_code,
            }),
        }
    }
}
