//! What an event says, as a typed code with named parameters. The ring, the JSON API and the
//! journal carry the code (a stable snake_case word) and the parameters; the English text is
//! rendered from them here and nowhere else, so the status page can render the same event in
//! the administrator's language (web-ui/i18n.js has a template per code) and a new producer
//! only adds a variant.

use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

use super::Level;
use crate::state::link::LinkState;

/// Every event code, as the JSON API and the journal (`EVENT_CODE`) name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Code {
    /// The daemon started.
    DaemonStarted,
    /// The status page could not start.
    StatusPageFailed,
    /// SIGHUP re-read the TLS files.
    TlsReloaded,
    /// SIGHUP could not re-read the TLS files; the old ones stay in use.
    TlsReloadFailed,
    /// A tunnel peer is up.
    TunnelUp,
    /// A tunnel peer is down (always-on, the last attempt failed).
    TunnelDown,
    /// A tunnel peer is handshaking.
    TunnelConnecting,
    /// A tunnel peer is idle.
    TunnelIdle,
    /// The administrator asked for a connect, and it worked.
    TunnelConnectRequested,
    /// The administrator disconnected the tunnel.
    TunnelDisconnectRequested,
    /// The administrator asked for a connect, and it failed.
    TunnelConnectFailed,
    /// The kernel forwards IPv4 between interfaces on a box that must not route (NET-8).
    IpForwardingOn,
    /// An IPsec SA came up with algorithms outside the CRYPTREC profile and was terminated.
    IpsecSaOutsideProfile,
    /// The IPsec concentrator or the box refused the negotiation (proposals, authentication).
    IpsecNegotiationRefused,
    /// An administrator logged in with password and TOTP code.
    LoginSucceeded,
    /// An administrator logged in with password and a recovery code.
    LoginWithRecoveryCode,
    /// An administrator logged in with the password, to enrol a second factor.
    LoginToEnrol,
    /// An administrator logged in with the password alone (no second factor enrolled).
    LoginWithoutSecondFactor,
    /// A login was refused.
    LoginFailed,
    /// A second factor was enrolled.
    SecondFactorEnrolled,
    /// The second factor was replaced, proven with a code of the old one.
    SecondFactorReplacedWithCode,
    /// The second factor was replaced, proven with a recovery code of the old one.
    SecondFactorReplacedWithRecoveryCode,
    /// Replacing the second factor was refused (wrong proof of the old one).
    SecondFactorReplaceRefused,
    /// The management API refused a TLS handshake.
    ManagementTlsRefused,
    /// The management API had no connection slot left for a client.
    ManagementNoSlot,
    /// Rate-limited events were counted instead of recorded.
    EventsSuppressed,
    /// A pushed config passed every check.
    ConfigReceived,
    /// A pushed config (or a management request) was refused.
    ConfigRefused,
    /// A pushed config runs, awaiting confirmation.
    ConfigApplied,
    /// A pushed config could not be applied.
    ConfigApplyFailed,
    /// A pushed config was confirmed.
    ConfigConfirmed,
    /// A confirm was refused.
    ConfigConfirmRefused,
    /// A pushed config was rolled back.
    ConfigRolledBack,
    /// Found at start: a pushed config never ran.
    ConfigNotApplied,
    /// A firmware bundle passed every check and waits for its install.
    UpdateAccepted,
    /// A firmware bundle was refused; nothing was armed.
    UpdateRefused,
    /// A facility box moved to another hub of its hub group (AVL-4).
    HubSwitched,
}

impl Code {
    /// Every code, in the order docs/api.md lists them.
    pub const ALL: [Code; 37] = [
        Code::DaemonStarted,
        Code::StatusPageFailed,
        Code::TlsReloaded,
        Code::TlsReloadFailed,
        Code::TunnelUp,
        Code::TunnelDown,
        Code::TunnelConnecting,
        Code::TunnelIdle,
        Code::TunnelConnectRequested,
        Code::TunnelDisconnectRequested,
        Code::TunnelConnectFailed,
        Code::IpForwardingOn,
        Code::IpsecSaOutsideProfile,
        Code::IpsecNegotiationRefused,
        Code::LoginSucceeded,
        Code::LoginWithRecoveryCode,
        Code::LoginToEnrol,
        Code::LoginWithoutSecondFactor,
        Code::LoginFailed,
        Code::SecondFactorEnrolled,
        Code::SecondFactorReplacedWithCode,
        Code::SecondFactorReplacedWithRecoveryCode,
        Code::SecondFactorReplaceRefused,
        Code::ManagementTlsRefused,
        Code::ManagementNoSlot,
        Code::EventsSuppressed,
        Code::ConfigReceived,
        Code::ConfigRefused,
        Code::ConfigApplied,
        Code::ConfigApplyFailed,
        Code::ConfigConfirmed,
        Code::ConfigConfirmRefused,
        Code::ConfigRolledBack,
        Code::ConfigNotApplied,
        Code::UpdateAccepted,
        Code::UpdateRefused,
        Code::HubSwitched,
    ];

    /// The stable word: never change one, the page and log searches depend on it.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::DaemonStarted => "daemon_started",
            Code::StatusPageFailed => "status_page_failed",
            Code::TlsReloaded => "tls_reloaded",
            Code::TlsReloadFailed => "tls_reload_failed",
            Code::TunnelUp => "tunnel_up",
            Code::TunnelDown => "tunnel_down",
            Code::TunnelConnecting => "tunnel_connecting",
            Code::TunnelIdle => "tunnel_idle",
            Code::TunnelConnectRequested => "tunnel_connect_requested",
            Code::TunnelDisconnectRequested => "tunnel_disconnect_requested",
            Code::TunnelConnectFailed => "tunnel_connect_failed",
            Code::IpForwardingOn => "ip_forwarding_on",
            Code::IpsecSaOutsideProfile => "ipsec_sa_outside_profile",
            Code::IpsecNegotiationRefused => "ipsec_negotiation_refused",
            Code::LoginSucceeded => "login_succeeded",
            Code::LoginWithRecoveryCode => "login_with_recovery_code",
            Code::LoginToEnrol => "login_to_enrol",
            Code::LoginWithoutSecondFactor => "login_without_second_factor",
            Code::LoginFailed => "login_failed",
            Code::SecondFactorEnrolled => "second_factor_enrolled",
            Code::SecondFactorReplacedWithCode => "second_factor_replaced_with_code",
            Code::SecondFactorReplacedWithRecoveryCode => {
                "second_factor_replaced_with_recovery_code"
            }
            Code::SecondFactorReplaceRefused => "second_factor_replace_refused",
            Code::ManagementTlsRefused => "management_tls_refused",
            Code::ManagementNoSlot => "management_no_slot",
            Code::EventsSuppressed => "events_suppressed",
            Code::ConfigReceived => "config_received",
            Code::ConfigRefused => "config_refused",
            Code::ConfigApplied => "config_applied",
            Code::ConfigApplyFailed => "config_apply_failed",
            Code::ConfigConfirmed => "config_confirmed",
            Code::ConfigConfirmRefused => "config_confirm_refused",
            Code::ConfigRolledBack => "config_rolled_back",
            Code::ConfigNotApplied => "config_not_applied",
            Code::UpdateAccepted => "update_accepted",
            Code::UpdateRefused => "update_refused",
            Code::HubSwitched => "hub_switched",
        }
    }
}

/// When the daemon found the kernel forwarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ForwardingFound {
    /// On when the daemon started watching (at start, and again after a config change).
    AtStart,
    /// Turned on while the daemon ran.
    TurnedOn,
}

impl ForwardingFound {
    fn text(self) -> &'static str {
        match self {
            ForwardingFound::AtStart => "found on at start",
            ForwardingFound::TurnedOn => "turned on while running",
        }
    }
}

/// Why a firmware bundle was refused, as a stable word (docs/update.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateRefusal {
    /// Larger than `update.max_bundle_bytes`.
    TooLarge,
    /// The upload broke off or was too slow.
    UploadFailed,
    /// rauc did not verify it against the update CA (unsigned, another CA, damaged).
    NotVerified,
    /// For another `compatible` (hardware, image line).
    Incompatible,
    /// Without a version the box can order.
    BadVersion,
    /// Not newer than the running firmware, and no forced downgrade to it.
    NotNewer,
    /// Another bundle is already waiting for its install.
    Pending,
    /// The box could not keep or check it (spool, rauc missing): not the bundle's fault.
    BoxFailed,
    /// The running slot is not blessed (a trial boot, an install, or this boot's health check
    /// has not run): the slot written would be the only way back.
    NotBlessed,
    /// Its image is larger than a root slot.
    TooLargeForSlot,
}

impl UpdateRefusal {
    /// The stable word.
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateRefusal::TooLarge => "too_large",
            UpdateRefusal::UploadFailed => "upload_failed",
            UpdateRefusal::NotVerified => "not_verified",
            UpdateRefusal::Incompatible => "incompatible",
            UpdateRefusal::BadVersion => "bad_version",
            UpdateRefusal::NotNewer => "not_newer",
            UpdateRefusal::Pending => "pending",
            UpdateRefusal::BoxFailed => "box_failed",
            UpdateRefusal::NotBlessed => "not_blessed",
            UpdateRefusal::TooLargeForSlot => "too_large_for_slot",
        }
    }
}

/// Why a facility box moved to another hub of its group, as a stable word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HubMove {
    /// always_on: the active hub did not answer for `failover_after_secs`.
    NoAnswer,
    /// on_demand: a connect attempt got no handshake within `connect_timeout_secs`.
    ConnectFailed,
    /// A more preferred hub was healthy for the whole `fail_back_after_secs`.
    FailBack,
    /// The operator prefers this hub.
    OperatorPreferred,
}

impl HubMove {
    fn text(self) -> &'static str {
        match self {
            HubMove::NoAnswer => "the active hub stopped answering",
            HubMove::ConnectFailed => "a connect attempt got no handshake in time",
            HubMove::FailBack => "a preferred hub has been healthy for the hold time",
            HubMove::OperatorPreferred => "the operator prefers it",
        }
    }

    /// Whether the hub moved from failed (a failover), not by plan.
    pub fn is_failure(self) -> bool {
        matches!(self, HubMove::NoAnswer | HubMove::ConnectFailed)
    }
}

/// Why an IPsec negotiation failed, as charon reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IpsecRefusal {
    /// No proposal acceptable to both sides (`NO_PROPOSAL_CHOSEN`), either way.
    NoProposalChosen,
    /// The peer refused the box's authentication, or the box the peer's
    /// (`AUTHENTICATION_FAILED`, a certificate not trusted or too weak).
    AuthenticationFailed,
}

impl IpsecRefusal {
    fn text(self) -> &'static str {
        match self {
            IpsecRefusal::NoProposalChosen => "no proposal acceptable to both sides",
            IpsecRefusal::AuthenticationFailed => "authentication failed",
        }
    }
}

/// Why a login was refused (the page never tells which factor; the event does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LoginRefusal {
    /// The password was wrong.
    WrongPassword,
    /// The second-factor code was wrong.
    WrongCode,
    /// The code was right but already used.
    CodeReplayed,
    /// The check was aborted (its task ended early).
    CheckAborted,
}

impl LoginRefusal {
    fn text(self) -> &'static str {
        match self {
            LoginRefusal::WrongPassword => "wrong password",
            LoginRefusal::WrongCode => "wrong second-factor code",
            LoginRefusal::CodeReplayed => "code already used",
            LoginRefusal::CheckAborted => "the check was aborted",
        }
    }
}

/// Why a proof of the current second factor was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CodeRefusal {
    /// No current code and no unused recovery code matches.
    WrongCode,
    /// The code was right but already used.
    CodeReplayed,
}

impl CodeRefusal {
    fn text(self) -> &'static str {
        match self {
            CodeRefusal::WrongCode => "wrong code",
            CodeRefusal::CodeReplayed => "code already used",
        }
    }
}

/// What happened to a pushed config (the control path's LOG-2 records).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigChange {
    /// It passed every check and is about to be written and applied.
    Received,
    /// It (or a management request) was refused; nothing changed.
    Refused,
    /// It runs, awaiting confirmation.
    Applied,
    /// It could not be applied; the previous config is back.
    ApplyFailed,
    /// The operator (or auto_confirm) confirmed it.
    Confirmed,
    /// A confirm was refused (nothing pending, another version).
    ConfirmRefused,
    /// It was replaced by the confirmed config it had replaced.
    RolledBack,
    /// Found at start: it was pushed but never ran from the config file (the daemon stopped
    /// before the push replaced the file, or after a rollback put the previous one back).
    NotApplied,
}

impl ConfigChange {
    /// The `EVENT` word of the log record.
    pub fn word(self) -> &'static str {
        match self {
            ConfigChange::Received => "received",
            ConfigChange::Refused => "refused",
            ConfigChange::Applied => "applied",
            ConfigChange::ApplyFailed => "apply_failed",
            ConfigChange::Confirmed => "confirmed",
            ConfigChange::ConfirmRefused => "confirm_refused",
            ConfigChange::RolledBack => "rolled_back",
            ConfigChange::NotApplied => "not_applied",
        }
    }

    /// How serious it is.
    pub fn level(self) -> Level {
        match self {
            ConfigChange::Received | ConfigChange::Applied | ConfigChange::Confirmed => Level::Info,
            ConfigChange::Refused
            | ConfigChange::ConfirmRefused
            | ConfigChange::RolledBack
            | ConfigChange::NotApplied => Level::Warning,
            ConfigChange::ApplyFailed => Level::Error,
        }
    }

    /// The log record's message, and the start of the ring's text.
    pub fn title(self) -> &'static str {
        match self {
            ConfigChange::Received => "config received",
            ConfigChange::Refused => "config refused",
            ConfigChange::Applied => "config applied",
            ConfigChange::ApplyFailed => "config apply failed",
            ConfigChange::Confirmed => "config confirmed",
            ConfigChange::ConfirmRefused => "confirm refused",
            ConfigChange::RolledBack => "config rolled back",
            ConfigChange::NotApplied => "config not applied",
        }
    }

    /// The event code.
    pub fn code(self) -> Code {
        match self {
            ConfigChange::Received => Code::ConfigReceived,
            ConfigChange::Refused => Code::ConfigRefused,
            ConfigChange::Applied => Code::ConfigApplied,
            ConfigChange::ApplyFailed => Code::ConfigApplyFailed,
            ConfigChange::Confirmed => Code::ConfigConfirmed,
            ConfigChange::ConfirmRefused => Code::ConfigConfirmRefused,
            ConfigChange::RolledBack => Code::ConfigRolledBack,
            ConfigChange::NotApplied => Code::ConfigNotApplied,
        }
    }
}

/// What is known about a pushed config and who sent it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ConfigFacts {
    /// `meta.version` of the config concerned, when known.
    pub version: Option<u64>,
    /// Fingerprint of the key that signed it, when known.
    pub signer: Option<String>,
    /// The operator identity of the request (a refused client's certificate name), when known.
    pub pushed_by: Option<String>,
    /// The refusal code, when there is one.
    pub reason: Option<String>,
    /// The version the box runs (and keeps), when it matters.
    pub running_version: Option<u64>,
    /// Everything else, in English (empty when nothing).
    pub detail: String,
}

/// One event: its code follows from the variant, its parameters are the variant's fields (the
/// JSON API's `params`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Occurrence {
    /// `renkei {version} started: {summary}`.
    DaemonStarted {
        /// renkei's version.
        version: String,
        /// The config's one-line summary.
        summary: String,
    },
    /// The status page could not start.
    StatusPageFailed {
        /// Why.
        error: String,
    },
    /// SIGHUP re-read the TLS files.
    TlsReloaded {
        /// The serial of the box certificate now in use.
        serial: String,
    },
    /// SIGHUP could not re-read the TLS files.
    TlsReloadFailed {
        /// Why.
        error: String,
    },
    /// A tunnel peer changed state.
    Tunnel {
        /// The new state (it is the code).
        #[serde(skip)]
        state: LinkState,
        /// The peer's name.
        peer: String,
        /// The tunnel's reason for the state.
        reason: String,
    },
    /// The administrator's connect worked.
    TunnelConnectRequested {},
    /// The administrator disconnected the tunnel.
    TunnelDisconnectRequested {},
    /// The administrator's connect failed.
    TunnelConnectFailed {
        /// Why.
        error: String,
    },
    /// The kernel forwards IPv4 between interfaces (`ip_forward` is on).
    IpForwardingOn {
        /// At start, or turned on while running.
        found: ForwardingFound,
    },
    /// An IPsec SA outside the CRYPTREC profile, terminated.
    IpsecSaOutsideProfile {
        /// The identity the concentrator proved.
        remote_id: String,
        /// The negotiated algorithms outside the profile.
        algorithms: String,
    },
    /// An IPsec negotiation refused.
    IpsecNegotiationRefused {
        /// Why, as a stable word.
        reason: IpsecRefusal,
        /// charon's words.
        error: String,
    },
    /// Logged in with password and TOTP code.
    LoginSucceeded {
        /// The client's address.
        address: IpAddr,
    },
    /// Logged in with password and a recovery code.
    LoginWithRecoveryCode {
        /// The client's address.
        address: IpAddr,
        /// Unused recovery codes left.
        recovery_codes_left: usize,
    },
    /// Logged in with the password, for enrolment only.
    LoginToEnrol {
        /// The client's address.
        address: IpAddr,
    },
    /// Logged in with the password alone.
    LoginWithoutSecondFactor {
        /// The client's address.
        address: IpAddr,
    },
    /// A refused login.
    LoginFailed {
        /// The client's address.
        address: IpAddr,
        /// Why.
        reason: LoginRefusal,
        /// Seconds until this address may try again.
        retry_after_secs: u64,
    },
    /// A second factor was enrolled.
    SecondFactorEnrolled {
        /// The client's address.
        address: IpAddr,
    },
    /// The second factor was replaced with a code of the old one.
    SecondFactorReplacedWithCode {
        /// The client's address.
        address: IpAddr,
    },
    /// The second factor was replaced with a recovery code of the old one.
    SecondFactorReplacedWithRecoveryCode {
        /// The client's address.
        address: IpAddr,
    },
    /// Replacing the second factor was refused.
    SecondFactorReplaceRefused {
        /// The client's address.
        address: IpAddr,
        /// What was wrong with the proof of the current factor.
        reason: CodeRefusal,
        /// Seconds until this address may try again.
        retry_after_secs: u64,
    },
    /// The management API refused a TLS handshake.
    ManagementTlsRefused {
        /// The client's address and port.
        address: SocketAddr,
        /// Why.
        error: String,
    },
    /// The management API had no connection slot for a client.
    ManagementNoSlot {
        /// The client's certificate name (or what stands for it).
        client: String,
        /// The client's address and port.
        address: SocketAddr,
    },
    /// Rate-limited events counted instead of recorded.
    EventsSuppressed {
        /// The kind of the suppressed events.
        kind: &'static str,
        /// Their rate-limit key.
        key: String,
        /// How many.
        count: u64,
        /// Over how many seconds.
        seconds: u64,
    },
    /// A firmware bundle was verified and kept for its install.
    UpdateAccepted {
        /// The bundle's version.
        version: String,
        /// Who sent it: an operator identity, or `local` for `renkei update install`.
        by: String,
    },
    /// A firmware bundle was refused.
    UpdateRefused {
        /// Why, as a stable word.
        reason: UpdateRefusal,
        /// Who sent it: an operator identity, or `local`.
        by: String,
        /// The details.
        error: String,
    },
    /// The box moved to another hub of its hub group.
    HubSwitched {
        /// The hub that was active.
        from: String,
        /// The hub that is active now.
        to: String,
        /// Why.
        reason: HubMove,
        /// Failovers since the tunnel started.
        failovers: u64,
    },
    /// A control-path record.
    Config {
        /// What happened (it is the code).
        #[serde(skip)]
        change: ConfigChange,
        /// The facts.
        #[serde(flatten)]
        facts: ConfigFacts,
    },
}

impl Occurrence {
    /// The event's code.
    pub fn code(&self) -> Code {
        match self {
            Occurrence::DaemonStarted { .. } => Code::DaemonStarted,
            Occurrence::StatusPageFailed { .. } => Code::StatusPageFailed,
            Occurrence::TlsReloaded { .. } => Code::TlsReloaded,
            Occurrence::TlsReloadFailed { .. } => Code::TlsReloadFailed,
            Occurrence::Tunnel { state, .. } => match state {
                LinkState::Up => Code::TunnelUp,
                LinkState::Down => Code::TunnelDown,
                LinkState::Connecting => Code::TunnelConnecting,
                LinkState::Idle => Code::TunnelIdle,
            },
            Occurrence::TunnelConnectRequested {} => Code::TunnelConnectRequested,
            Occurrence::TunnelDisconnectRequested {} => Code::TunnelDisconnectRequested,
            Occurrence::TunnelConnectFailed { .. } => Code::TunnelConnectFailed,
            Occurrence::IpForwardingOn { .. } => Code::IpForwardingOn,
            Occurrence::IpsecSaOutsideProfile { .. } => Code::IpsecSaOutsideProfile,
            Occurrence::IpsecNegotiationRefused { .. } => Code::IpsecNegotiationRefused,
            Occurrence::LoginSucceeded { .. } => Code::LoginSucceeded,
            Occurrence::LoginWithRecoveryCode { .. } => Code::LoginWithRecoveryCode,
            Occurrence::LoginToEnrol { .. } => Code::LoginToEnrol,
            Occurrence::LoginWithoutSecondFactor { .. } => Code::LoginWithoutSecondFactor,
            Occurrence::LoginFailed { .. } => Code::LoginFailed,
            Occurrence::SecondFactorEnrolled { .. } => Code::SecondFactorEnrolled,
            Occurrence::SecondFactorReplacedWithCode { .. } => Code::SecondFactorReplacedWithCode,
            Occurrence::SecondFactorReplacedWithRecoveryCode { .. } => {
                Code::SecondFactorReplacedWithRecoveryCode
            }
            Occurrence::SecondFactorReplaceRefused { .. } => Code::SecondFactorReplaceRefused,
            Occurrence::ManagementTlsRefused { .. } => Code::ManagementTlsRefused,
            Occurrence::ManagementNoSlot { .. } => Code::ManagementNoSlot,
            Occurrence::EventsSuppressed { .. } => Code::EventsSuppressed,
            Occurrence::UpdateAccepted { .. } => Code::UpdateAccepted,
            Occurrence::UpdateRefused { .. } => Code::UpdateRefused,
            Occurrence::HubSwitched { .. } => Code::HubSwitched,
            Occurrence::Config { change, .. } => change.code(),
        }
    }

    /// The short machine word of its area: `daemon`, `status`, `tls`, `tunnel`, `login`,
    /// `config`, `update` (a summary has the kind of what it counted).
    pub fn kind(&self) -> &'static str {
        match self {
            Occurrence::DaemonStarted { .. } => "daemon",
            Occurrence::StatusPageFailed { .. } => "status",
            Occurrence::TlsReloaded { .. } | Occurrence::TlsReloadFailed { .. } => "tls",
            Occurrence::Tunnel { .. }
            | Occurrence::TunnelConnectRequested {}
            | Occurrence::TunnelDisconnectRequested {}
            | Occurrence::TunnelConnectFailed { .. }
            | Occurrence::IpForwardingOn { .. }
            | Occurrence::IpsecSaOutsideProfile { .. }
            | Occurrence::IpsecNegotiationRefused { .. }
            | Occurrence::HubSwitched { .. } => "tunnel",
            Occurrence::LoginSucceeded { .. }
            | Occurrence::LoginWithRecoveryCode { .. }
            | Occurrence::LoginToEnrol { .. }
            | Occurrence::LoginWithoutSecondFactor { .. }
            | Occurrence::LoginFailed { .. }
            | Occurrence::SecondFactorEnrolled { .. }
            | Occurrence::SecondFactorReplacedWithCode { .. }
            | Occurrence::SecondFactorReplacedWithRecoveryCode { .. }
            | Occurrence::SecondFactorReplaceRefused { .. } => "login",
            Occurrence::ManagementTlsRefused { .. }
            | Occurrence::ManagementNoSlot { .. }
            | Occurrence::Config { .. } => "config",
            Occurrence::UpdateAccepted { .. } | Occurrence::UpdateRefused { .. } => "update",
            Occurrence::EventsSuppressed { kind, .. } => kind,
        }
    }

    /// How serious it is.
    pub fn level(&self) -> Level {
        match self {
            Occurrence::DaemonStarted { .. }
            | Occurrence::TlsReloaded { .. }
            | Occurrence::TunnelConnectRequested {}
            | Occurrence::TunnelDisconnectRequested {}
            | Occurrence::LoginSucceeded { .. }
            | Occurrence::LoginToEnrol { .. }
            | Occurrence::SecondFactorEnrolled { .. }
            | Occurrence::UpdateAccepted { .. } => Level::Info,
            Occurrence::Tunnel { state, .. } => match state {
                LinkState::Down => Level::Warning,
                LinkState::Idle | LinkState::Connecting | LinkState::Up => Level::Info,
            },
            Occurrence::TunnelConnectFailed { .. }
            | Occurrence::IpForwardingOn { .. }
            | Occurrence::IpsecNegotiationRefused { .. }
            | Occurrence::LoginWithRecoveryCode { .. }
            | Occurrence::LoginWithoutSecondFactor { .. }
            | Occurrence::LoginFailed { .. }
            | Occurrence::SecondFactorReplacedWithCode { .. }
            | Occurrence::SecondFactorReplacedWithRecoveryCode { .. }
            | Occurrence::SecondFactorReplaceRefused { .. }
            | Occurrence::ManagementTlsRefused { .. }
            | Occurrence::ManagementNoSlot { .. }
            | Occurrence::UpdateRefused { .. }
            | Occurrence::EventsSuppressed { .. } => Level::Warning,
            Occurrence::StatusPageFailed { .. }
            | Occurrence::TlsReloadFailed { .. }
            | Occurrence::IpsecSaOutsideProfile { .. } => Level::Error,
            Occurrence::HubSwitched { reason, .. } => {
                if reason.is_failure() {
                    Level::Warning
                } else {
                    Level::Info
                }
            }
            Occurrence::Config { change, .. } => change.level(),
        }
    }

    /// The parameters, as the JSON API's `params` object.
    pub fn params(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_else(|_| serde_json::Value::Object(Default::default()))
    }

    /// The English text: the journal's message and the JSON API's `message`.
    pub fn message(&self) -> String {
        match self {
            Occurrence::DaemonStarted { version, summary } => {
                format!("renkei {version} started: {summary}")
            }
            Occurrence::StatusPageFailed { error } => {
                format!("the status page cannot start: {error}")
            }
            Occurrence::TlsReloaded { serial } => {
                format!("SIGHUP: TLS files reloaded (certificate serial {serial})")
            }
            Occurrence::TlsReloadFailed { error } => {
                format!("SIGHUP: TLS reload failed; the certificates in use stay in use: {error}")
            }
            Occurrence::Tunnel {
                state,
                peer,
                reason,
            } => format!("peer {peer}: {} ({reason})", state.as_str()),
            Occurrence::TunnelConnectRequested {} => "administrator: connect (ok)".to_string(),
            Occurrence::TunnelDisconnectRequested {} => {
                "administrator: disconnect (ok)".to_string()
            }
            Occurrence::TunnelConnectFailed { error } => {
                format!("administrator: connect failed: {error}")
            }
            Occurrence::IpForwardingOn { found } => format!(
                "IP forwarding is on ({}): the box could route between its LAN and the data centre's network (NET-8); turn it off (sysctl net.ipv4.ip_forward=0)",
                found.text()
            ),
            Occurrence::IpsecSaOutsideProfile {
                remote_id,
                algorithms,
            } => format!(
                "IPsec SA with {remote_id} negotiated algorithms outside the CRYPTREC profile ({algorithms}); terminated"
            ),
            Occurrence::IpsecNegotiationRefused { reason, error } => {
                format!("IPsec negotiation refused ({}): {error}", reason.text())
            }
            Occurrence::LoginSucceeded { address } => {
                format!("administrator logged in from {address} (password and TOTP code)")
            }
            Occurrence::LoginWithRecoveryCode {
                address,
                recovery_codes_left,
            } => format!(
                "administrator logged in from {address} (password and a recovery code; {recovery_codes_left} recovery codes left)"
            ),
            Occurrence::LoginToEnrol { address } => format!(
                "administrator logged in from {address} (password; a second factor must be enrolled before anything else)"
            ),
            Occurrence::LoginWithoutSecondFactor { address } => format!(
                "administrator logged in from {address} (password only: no second factor is enrolled)"
            ),
            Occurrence::LoginFailed {
                address,
                reason,
                retry_after_secs,
            } => format!(
                "failed administrator login from {address} ({}); next attempt allowed in {retry_after_secs} s",
                reason.text()
            ),
            Occurrence::SecondFactorEnrolled { address } => {
                format!("administrator enrolled a second factor (TOTP) from {address}")
            }
            Occurrence::SecondFactorReplacedWithCode { address } => format!(
                "administrator replaced the second factor (TOTP), confirmed with a code of the old one from {address}"
            ),
            Occurrence::SecondFactorReplacedWithRecoveryCode { address } => format!(
                "administrator replaced the second factor (TOTP), confirmed with a recovery code of the old one from {address}"
            ),
            Occurrence::SecondFactorReplaceRefused {
                address,
                reason,
                retry_after_secs,
            } => format!(
                "refused to replace the second factor from {address} ({} for the current factor); next attempt allowed in {retry_after_secs} s",
                reason.text()
            ),
            Occurrence::ManagementTlsRefused { address, error } => {
                format!("management API: TLS handshake from {address} refused: {error}")
            }
            Occurrence::ManagementNoSlot { client, address } => format!(
                "management API: no connection slot left for {client} (from {address}); closed"
            ),
            Occurrence::EventsSuppressed {
                kind,
                key,
                count,
                seconds,
            } => format!("{count} more {kind} events \"{key}\" suppressed in the last {seconds} s"),
            Occurrence::UpdateAccepted { version, by } => format!(
                "firmware update {version} from {by} verified and kept; it waits for its install"
            ),
            Occurrence::UpdateRefused { reason, by, error } => format!(
                "firmware update from {by} refused ({}); nothing was armed: {error}",
                reason.as_str()
            ),
            Occurrence::HubSwitched {
                from,
                to,
                reason,
                failovers,
            } => format!(
                "hub {from} -> {to}: {} ({failovers} failovers since start)",
                reason.text()
            ),
            Occurrence::Config { change, facts } => config_message(*change, facts),
        }
    }
}

/// `title (reason): version V, signed by S, pushed by P: detail`, with `unknown` for what is
/// not known: the same facts as the log record, in one line.
fn config_message(change: ConfigChange, facts: &ConfigFacts) -> String {
    let unknown = "unknown";
    let mut text = change.title().to_string();
    if let Some(reason) = &facts.reason {
        text.push_str(&format!(" ({reason})"));
    }
    text.push_str(&format!(
        ": version {}, signed by {}, pushed by {}",
        facts
            .version
            .map_or_else(|| unknown.to_string(), |v| v.to_string()),
        facts.signer.as_deref().unwrap_or(unknown),
        facts.pushed_by.as_deref().unwrap_or(unknown),
    ));
    if !facts.detail.is_empty() {
        text.push_str(": ");
        text.push_str(&facts.detail);
    }
    text
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::state::events::EventLog;

    fn ip() -> IpAddr {
        IpAddr::from([198, 18, 10, 2])
    }

    fn socket() -> SocketAddr {
        SocketAddr::from(([198, 18, 0, 1], 40443))
    }

    fn config(change: ConfigChange) -> Occurrence {
        Occurrence::Config {
            change,
            facts: ConfigFacts {
                version: Some(4),
                signer: Some("0011223344556677".into()),
                pushed_by: Some("operator.renkei.test".into()),
                reason: Some("not_newer".into()),
                running_version: Some(5),
                detail: "version 4 is not greater than 5".into(),
            },
        }
    }

    /// One event of every code, its English text, and its parameters.
    fn table() -> Vec<(Occurrence, &'static str, serde_json::Value)> {
        use serde_json::json;
        let facts = json!({
            "version": 4, "signer": "0011223344556677", "pushed_by": "operator.renkei.test",
            "reason": "not_newer", "running_version": 5, "detail": "version 4 is not greater than 5",
        });
        let config_tail = " (not_newer): version 4, signed by 0011223344556677, pushed by operator.renkei.test: version 4 is not greater than 5";
        let tunnel = |state| Occurrence::Tunnel {
            state,
            peer: "dc".into(),
            reason: "handshake completed".into(),
        };
        let peer_params = json!({"peer": "dc", "reason": "handshake completed"});
        let at = json!({"address": "198.18.10.2"});
        let mut rows = vec![
            (
                Occurrence::DaemonStarted {
                    version: "1.2.3".into(),
                    summary: "clinic (viewing)".into(),
                },
                "renkei 1.2.3 started: clinic (viewing)",
                json!({"version": "1.2.3", "summary": "clinic (viewing)"}),
            ),
            (
                Occurrence::StatusPageFailed {
                    error: "address in use".into(),
                },
                "the status page cannot start: address in use",
                json!({"error": "address in use"}),
            ),
            (
                Occurrence::TlsReloaded {
                    serial: "0a1b".into(),
                },
                "SIGHUP: TLS files reloaded (certificate serial 0a1b)",
                json!({"serial": "0a1b"}),
            ),
            (
                Occurrence::TlsReloadFailed {
                    error: "no such file".into(),
                },
                "SIGHUP: TLS reload failed; the certificates in use stay in use: no such file",
                json!({"error": "no such file"}),
            ),
            (
                tunnel(LinkState::Up),
                "peer dc: up (handshake completed)",
                peer_params.clone(),
            ),
            (
                tunnel(LinkState::Down),
                "peer dc: down (handshake completed)",
                peer_params.clone(),
            ),
            (
                tunnel(LinkState::Connecting),
                "peer dc: connecting (handshake completed)",
                peer_params.clone(),
            ),
            (
                tunnel(LinkState::Idle),
                "peer dc: idle (handshake completed)",
                peer_params,
            ),
            (
                Occurrence::TunnelConnectRequested {},
                "administrator: connect (ok)",
                json!({}),
            ),
            (
                Occurrence::TunnelDisconnectRequested {},
                "administrator: disconnect (ok)",
                json!({}),
            ),
            (
                Occurrence::TunnelConnectFailed {
                    error: "timed out".into(),
                },
                "administrator: connect failed: timed out",
                json!({"error": "timed out"}),
            ),
            (
                Occurrence::IpForwardingOn {
                    found: ForwardingFound::TurnedOn,
                },
                "IP forwarding is on (turned on while running): the box could route between its LAN and the data centre's network (NET-8); turn it off (sysctl net.ipv4.ip_forward=0)",
                json!({"found": "turned_on"}),
            ),
            (
                Occurrence::IpsecSaOutsideProfile {
                    remote_id: "hub.renkei.example".into(),
                    algorithms: "3DES_CBC".into(),
                },
                "IPsec SA with hub.renkei.example negotiated algorithms outside the CRYPTREC profile (3DES_CBC); terminated",
                json!({"remote_id": "hub.renkei.example", "algorithms": "3DES_CBC"}),
            ),
            (
                Occurrence::IpsecNegotiationRefused {
                    reason: IpsecRefusal::NoProposalChosen,
                    error: "received NO_PROPOSAL_CHOSEN notify error".into(),
                },
                "IPsec negotiation refused (no proposal acceptable to both sides): received NO_PROPOSAL_CHOSEN notify error",
                json!({"reason": "no_proposal_chosen", "error": "received NO_PROPOSAL_CHOSEN notify error"}),
            ),
            (
                Occurrence::IpsecNegotiationRefused {
                    reason: IpsecRefusal::AuthenticationFailed,
                    error: "received AUTHENTICATION_FAILED notify error".into(),
                },
                "IPsec negotiation refused (authentication failed): received AUTHENTICATION_FAILED notify error",
                json!({"reason": "authentication_failed", "error": "received AUTHENTICATION_FAILED notify error"}),
            ),
            (
                Occurrence::LoginSucceeded { address: ip() },
                "administrator logged in from 198.18.10.2 (password and TOTP code)",
                at.clone(),
            ),
            (
                Occurrence::LoginWithRecoveryCode {
                    address: ip(),
                    recovery_codes_left: 7,
                },
                "administrator logged in from 198.18.10.2 (password and a recovery code; 7 recovery codes left)",
                json!({"address": "198.18.10.2", "recovery_codes_left": 7}),
            ),
            (
                Occurrence::LoginToEnrol { address: ip() },
                "administrator logged in from 198.18.10.2 (password; a second factor must be enrolled before anything else)",
                at.clone(),
            ),
            (
                Occurrence::LoginWithoutSecondFactor { address: ip() },
                "administrator logged in from 198.18.10.2 (password only: no second factor is enrolled)",
                at.clone(),
            ),
            (
                Occurrence::SecondFactorEnrolled { address: ip() },
                "administrator enrolled a second factor (TOTP) from 198.18.10.2",
                at.clone(),
            ),
            (
                Occurrence::SecondFactorReplacedWithCode { address: ip() },
                "administrator replaced the second factor (TOTP), confirmed with a code of the old one from 198.18.10.2",
                at.clone(),
            ),
            (
                Occurrence::SecondFactorReplacedWithRecoveryCode { address: ip() },
                "administrator replaced the second factor (TOTP), confirmed with a recovery code of the old one from 198.18.10.2",
                at,
            ),
            (
                Occurrence::SecondFactorReplaceRefused {
                    address: ip(),
                    reason: CodeRefusal::CodeReplayed,
                    retry_after_secs: 2,
                },
                "refused to replace the second factor from 198.18.10.2 (code already used for the current factor); next attempt allowed in 2 s",
                json!({"address": "198.18.10.2", "reason": "code_replayed", "retry_after_secs": 2}),
            ),
            (
                Occurrence::ManagementTlsRefused {
                    address: socket(),
                    error: "certificate revoked".into(),
                },
                "management API: TLS handshake from 198.18.0.1:40443 refused: certificate revoked",
                json!({"address": "198.18.0.1:40443", "error": "certificate revoked"}),
            ),
            (
                Occurrence::ManagementNoSlot {
                    client: "hub.renkei.test".into(),
                    address: socket(),
                },
                "management API: no connection slot left for hub.renkei.test (from 198.18.0.1:40443); closed",
                json!({"client": "hub.renkei.test", "address": "198.18.0.1:40443"}),
            ),
            (
                Occurrence::UpdateAccepted {
                    version: "1.4.2".into(),
                    by: "operator.renkei.test".into(),
                },
                "firmware update 1.4.2 from operator.renkei.test verified and kept; it waits for its install",
                json!({"version": "1.4.2", "by": "operator.renkei.test"}),
            ),
            (
                Occurrence::UpdateRefused {
                    reason: UpdateRefusal::NotNewer,
                    by: "local".into(),
                    error: "version 1.4.1 is not newer than the running 1.4.2".into(),
                },
                "firmware update from local refused (not_newer); nothing was armed: version 1.4.1 is not newer than the running 1.4.2",
                json!({"reason": "not_newer", "by": "local", "error": "version 1.4.1 is not newer than the running 1.4.2"}),
            ),
            (
                Occurrence::EventsSuppressed {
                    kind: "config",
                    key: "not_operator".into(),
                    count: 7,
                    seconds: 30,
                },
                "7 more config events \"not_operator\" suppressed in the last 30 s",
                json!({"kind": "config", "key": "not_operator", "count": 7, "seconds": 30}),
            ),
        ];
        rows.push((
            Occurrence::HubSwitched {
                from: "dc-tokyo".into(),
                to: "dc-osaka".into(),
                reason: HubMove::NoAnswer,
                failovers: 1,
            },
            "hub dc-tokyo -> dc-osaka: the active hub stopped answering (1 failovers since start)",
            json!({"from": "dc-tokyo", "to": "dc-osaka", "reason": "no_answer", "failovers": 1}),
        ));
        for (reason, text) in [
            (LoginRefusal::WrongPassword, "wrong password"),
            (LoginRefusal::WrongCode, "wrong second-factor code"),
            (LoginRefusal::CodeReplayed, "code already used"),
            (LoginRefusal::CheckAborted, "the check was aborted"),
        ] {
            let message = format!(
                "failed administrator login from 198.18.10.2 ({text}); next attempt allowed in 4 s"
            );
            rows.push((
                Occurrence::LoginFailed {
                    address: ip(),
                    reason,
                    retry_after_secs: 4,
                },
                Box::leak(message.into_boxed_str()),
                json!({"address": "198.18.10.2", "reason": reason, "retry_after_secs": 4}),
            ));
        }
        for (change, title) in [
            (ConfigChange::Received, "config received"),
            (ConfigChange::Refused, "config refused"),
            (ConfigChange::Applied, "config applied"),
            (ConfigChange::ApplyFailed, "config apply failed"),
            (ConfigChange::Confirmed, "config confirmed"),
            (ConfigChange::ConfirmRefused, "confirm refused"),
            (ConfigChange::RolledBack, "config rolled back"),
            (ConfigChange::NotApplied, "config not applied"),
        ] {
            let message = format!("{title}{config_tail}");
            rows.push((
                config(change),
                Box::leak(message.into_boxed_str()),
                facts.clone(),
            ));
        }
        rows
    }

    #[test]
    fn log3_every_code_renders_its_english_text_from_its_parameters() {
        let rows = table();
        let codes: BTreeSet<Code> = rows.iter().map(|(o, ..)| o.code()).collect();
        assert_eq!(
            codes,
            Code::ALL.into_iter().collect(),
            "the table covers every code"
        );
        for (occurrence, text, params) in rows {
            assert_eq!(occurrence.message(), text, "{occurrence:?}");
            assert_eq!(occurrence.params(), params, "{occurrence:?}");
        }
        let words: BTreeSet<&str> = Code::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(words.len(), Code::ALL.len(), "codes are distinct words");
        assert!(words
            .iter()
            .all(|w| w.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')));
    }

    #[test]
    fn log3_the_json_event_carries_code_params_and_message() {
        let events = EventLog::new();
        for (occurrence, ..) in table() {
            events.push(occurrence);
        }
        for (event, (occurrence, text, params)) in events.snapshot().iter().zip(table()) {
            let json = serde_json::to_value(event).expect("json");
            assert_eq!(json["code"], occurrence.code().as_str());
            assert_eq!(json["params"], params);
            assert_eq!(json["message"], text);
            assert_eq!(json["kind"], occurrence.kind());
            assert_eq!(
                json["level"],
                serde_json::to_value(occurrence.level()).expect("level")
            );
        }
        let summary = Occurrence::EventsSuppressed {
            kind: "login",
            key: "failed".into(),
            count: 1,
            seconds: 1,
        };
        assert_eq!(summary.kind(), "login", "a summary has the kind it counted");
    }

    #[test]
    fn log3_docs_and_page_have_every_code() {
        let api = include_str!("../../../../docs/api.md");
        let i18n = include_str!("../../../../web-ui/i18n.js");
        for code in Code::ALL {
            let word = code.as_str();
            assert!(
                api.contains(&format!("| `{word}` |")),
                "docs/api.md lacks {word}"
            );
            assert_eq!(
                i18n.matches(&format!("event_{word}:")).count(),
                2,
                "web-ui/i18n.js needs a Japanese and an English template for {word}"
            );
        }
    }
}
