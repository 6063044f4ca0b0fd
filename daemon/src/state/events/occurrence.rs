//! What an event says, as a typed code with named parameters. The ring, the JSON API and the
//! journal carry the code (a stable snake_case word) and the parameters; the English text is
//! rendered from them here and nowhere else, so the status page can render the same event in
//! the administrator's language (web-ui/i18n.js has a template per code) and a new producer
//! only adds a variant.

use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

pub use super::reasons::{
    ConfigReason, ConnectProblem, StatusStartProblem, TlsFileProblem, TlsRefusal,
};
use super::words::stable_words;
use super::Level;
use crate::state::link::{LinkReason, LinkState};

stable_words! {
    /// Every event code, as the JSON API and the journal (`EVENT_CODE`) name it.
    pub enum Code {
        /// The daemon started.
        DaemonStarted => "daemon_started",
        /// The status page could not start.
        StatusPageFailed => "status_page_failed",
        /// SIGHUP re-read the TLS files.
        TlsReloaded => "tls_reloaded",
        /// SIGHUP could not re-read the TLS files; the old ones stay in use.
        TlsReloadFailed => "tls_reload_failed",
        /// A tunnel peer is up.
        TunnelUp => "tunnel_up",
        /// A tunnel peer is down (always-on, the last attempt failed).
        TunnelDown => "tunnel_down",
        /// A tunnel peer is handshaking.
        TunnelConnecting => "tunnel_connecting",
        /// A tunnel peer is idle.
        TunnelIdle => "tunnel_idle",
        /// The administrator asked for a connect, and it worked.
        TunnelConnectRequested => "tunnel_connect_requested",
        /// The administrator disconnected the tunnel.
        TunnelDisconnectRequested => "tunnel_disconnect_requested",
        /// The administrator asked for a connect, and it failed.
        TunnelConnectFailed => "tunnel_connect_failed",
        /// The kernel forwards IPv4 between interfaces on a box that must not route (NET-8).
        IpForwardingOn => "ip_forwarding_on",
        /// An IPsec SA came up with algorithms outside the CRYPTREC profile and was terminated.
        IpsecSaOutsideProfile => "ipsec_sa_outside_profile",
        /// The IPsec concentrator or the box refused the negotiation (proposals, authentication).
        IpsecNegotiationRefused => "ipsec_negotiation_refused",
        /// An administrator logged in with password and TOTP code.
        LoginSucceeded => "login_succeeded",
        /// An administrator logged in with password and a recovery code.
        LoginWithRecoveryCode => "login_with_recovery_code",
        /// An administrator logged in with the password, to enrol a second factor.
        LoginToEnrol => "login_to_enrol",
        /// An administrator logged in with the password alone (no second factor enrolled).
        LoginWithoutSecondFactor => "login_without_second_factor",
        /// A login was refused.
        LoginFailed => "login_failed",
        /// A second factor was enrolled.
        SecondFactorEnrolled => "second_factor_enrolled",
        /// The second factor was replaced, proven with a code of the old one.
        SecondFactorReplacedWithCode => "second_factor_replaced_with_code",
        /// The second factor was replaced, proven with a recovery code of the old one.
        SecondFactorReplacedWithRecoveryCode => "second_factor_replaced_with_recovery_code",
        /// Replacing the second factor was refused (wrong proof of the old one).
        SecondFactorReplaceRefused => "second_factor_replace_refused",
        /// The management API refused a TLS handshake.
        ManagementTlsRefused => "management_tls_refused",
        /// The management API had no connection slot left for a client.
        ManagementNoSlot => "management_no_slot",
        /// Rate-limited events were counted instead of recorded.
        EventsSuppressed => "events_suppressed",
        /// A pushed config passed every check.
        ConfigReceived => "config_received",
        /// A pushed config (or a management request) was refused.
        ConfigRefused => "config_refused",
        /// A pushed config runs, awaiting confirmation.
        ConfigApplied => "config_applied",
        /// A pushed config could not be applied.
        ConfigApplyFailed => "config_apply_failed",
        /// A pushed config was confirmed.
        ConfigConfirmed => "config_confirmed",
        /// A confirm was refused.
        ConfigConfirmRefused => "config_confirm_refused",
        /// A pushed config was rolled back.
        ConfigRolledBack => "config_rolled_back",
        /// Found at start: a pushed config never ran.
        ConfigNotApplied => "config_not_applied",
        /// A firmware bundle passed every check and waits for its install.
        UpdateAccepted => "update_accepted",
        /// A firmware bundle was refused; nothing was armed.
        UpdateRefused => "update_refused",
        /// A facility box moved to another hub of its hub group (AVL-4).
        HubSwitched => "hub_switched",
    }
}

impl Code {
    /// The parameters of this code whose values are stable words the page translates
    /// (`event_<code>_<param>_<word>` in web-ui/i18n.js), with every word they can take.
    pub fn word_params(self) -> &'static [(&'static str, &'static [&'static str])] {
        match self {
            Code::IpForwardingOn => &[("found", ForwardingFound::WORDS)],
            Code::IpsecNegotiationRefused => &[("reason", IpsecRefusal::WORDS)],
            Code::LoginFailed => &[("reason", LoginRefusal::WORDS)],
            Code::SecondFactorReplaceRefused => &[("reason", CodeRefusal::WORDS)],
            Code::ManagementTlsRefused => &[("reason", TlsRefusal::WORDS)],
            Code::UpdateRefused => &[("reason", UpdateRefusal::WORDS)],
            Code::TunnelUp | Code::TunnelDown | Code::TunnelConnecting | Code::TunnelIdle => {
                &[("reason", LinkReason::WORDS)]
            }
            Code::HubSwitched => &[("reason", HubMove::WORDS)],
            Code::StatusPageFailed => &[("reason", StatusStartProblem::WORDS)],
            Code::TlsReloadFailed => &[("reason", TlsFileProblem::WORDS)],
            Code::TunnelConnectFailed => &[("reason", ConnectProblem::WORDS)],
            Code::EventsSuppressed => &[("kind", EVENT_KINDS)],
            Code::ConfigReceived
            | Code::ConfigRefused
            | Code::ConfigApplied
            | Code::ConfigApplyFailed
            | Code::ConfigConfirmed
            | Code::ConfigConfirmRefused
            | Code::ConfigRolledBack
            | Code::ConfigNotApplied => &[("reason", ConfigReason::WORDS)],
            Code::DaemonStarted
            | Code::TlsReloaded
            | Code::TunnelConnectRequested
            | Code::TunnelDisconnectRequested
            | Code::IpsecSaOutsideProfile
            | Code::LoginSucceeded
            | Code::LoginWithRecoveryCode
            | Code::LoginToEnrol
            | Code::LoginWithoutSecondFactor
            | Code::SecondFactorEnrolled
            | Code::SecondFactorReplacedWithCode
            | Code::SecondFactorReplacedWithRecoveryCode
            | Code::ManagementNoSlot
            | Code::UpdateAccepted => &[],
        }
    }
}

impl Code {
    /// The key of `word` (a value of `param`) in web-ui/i18n.js, as app.js looks it up: one
    /// shared key for the words several codes share (every config event's reason, a summary's
    /// kind), else `event_<code>_<param>_<word>`.
    pub fn catalogue_key(self, param: &str, word: &str) -> String {
        match (self, param) {
            (Code::EventsSuppressed, "kind") => format!("kind_{word}"),
            (code, "reason") if code.as_str().starts_with("config_") => {
                format!("config_reason_{word}")
            }
            // The link's state changes share the link's reasons; a failed connect has its own.
            (code, "reason")
                if code.as_str().starts_with("tunnel_") && code != Code::TunnelConnectFailed =>
            {
                format!("link_reason_{word}")
            }
            (Code::ManagementTlsRefused, "reason") => format!("tls_reason_{word}"),
            (code, _) => format!("event_{}_{param}_{word}", code.as_str()),
        }
    }
}

/// Every event's `kind` word (the page translates them as `kind_<word>`).
pub const EVENT_KINDS: &[&str] = &[
    "daemon", "status", "tls", "tunnel", "login", "config", "update",
];

stable_words! {
    /// When the daemon found the kernel forwarding.
    pub enum ForwardingFound {
        /// On when the daemon started watching (at start, and again after a config change).
        AtStart => "at_start",
        /// Turned on while the daemon ran.
        TurnedOn => "turned_on",
    }
}

impl ForwardingFound {
    fn text(self) -> &'static str {
        match self {
            ForwardingFound::AtStart => "found on at start",
            ForwardingFound::TurnedOn => "turned on while running",
        }
    }
}

stable_words! {
    /// Why a firmware bundle was refused, as a stable word (docs/update.md).
    pub enum UpdateRefusal {
        /// Larger than `update.max_bundle_bytes`.
        TooLarge => "too_large",
        /// The upload broke off or was too slow.
        UploadFailed => "upload_failed",
        /// rauc did not verify it against the update CA (unsigned, another CA, damaged).
        NotVerified => "not_verified",
        /// For another `compatible` (hardware, image line).
        Incompatible => "incompatible",
        /// Without a version the box can order.
        BadVersion => "bad_version",
        /// Not newer than the running firmware, and no forced downgrade to it.
        NotNewer => "not_newer",
        /// Another bundle is already waiting for its install.
        Pending => "pending",
        /// The box could not keep or check it (spool, rauc missing): not the bundle's fault.
        BoxFailed => "box_failed",
        /// The running slot is not blessed (a trial boot, an install, or this boot's health
        /// check has not run): the slot written would be the only way back.
        NotBlessed => "not_blessed",
        /// Its image is larger than a root slot.
        TooLargeForSlot => "too_large_for_slot",
    }
}

stable_words! {
    /// Why a facility box moved to another hub of its group, as a stable word.
    pub enum HubMove {
        /// always_on: the active hub did not answer for `failover_after_secs`.
        NoAnswer => "no_answer",
        /// on_demand: a connect attempt got no handshake within `connect_timeout_secs`.
        ConnectFailed => "connect_failed",
        /// A more preferred hub was healthy for the whole `fail_back_after_secs`.
        FailBack => "fail_back",
        /// The operator prefers this hub.
        OperatorPreferred => "operator_preferred",
    }
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

stable_words! {
    /// Why an IPsec negotiation failed, as charon reported it.
    pub enum IpsecRefusal {
        /// No proposal acceptable to both sides (`NO_PROPOSAL_CHOSEN`), either way.
        NoProposalChosen => "no_proposal_chosen",
        /// The peer refused the box's authentication, or the box the peer's
        /// (`AUTHENTICATION_FAILED`, a certificate not trusted or too weak).
        AuthenticationFailed => "authentication_failed",
    }
}

impl From<IpsecRefusal> for super::reasons::IpsecProblem {
    fn from(refusal: IpsecRefusal) -> Self {
        match refusal {
            IpsecRefusal::NoProposalChosen => Self::NoProposalChosen,
            IpsecRefusal::AuthenticationFailed => Self::AuthenticationFailed,
        }
    }
}

impl IpsecRefusal {
    fn text(self) -> &'static str {
        match self {
            IpsecRefusal::NoProposalChosen => "no proposal acceptable to both sides",
            IpsecRefusal::AuthenticationFailed => "authentication failed",
        }
    }
}

stable_words! {
    /// Why a login was refused (the page never tells which factor; the event does).
    pub enum LoginRefusal {
        /// The password was wrong.
        WrongPassword => "wrong_password",
        /// The second-factor code was wrong.
        WrongCode => "wrong_code",
        /// The code was right but already used.
        CodeReplayed => "code_replayed",
        /// The check was aborted (its task ended early).
        CheckAborted => "check_aborted",
    }
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

stable_words! {
    /// Why a proof of the current second factor was refused.
    pub enum CodeRefusal {
        /// No current code and no unused recovery code matches.
        WrongCode => "wrong_code",
        /// The code was right but already used.
        CodeReplayed => "code_replayed",
    }
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
    /// Why (a refusal, a rollback's cause), when there is one.
    pub reason: Option<ConfigReason>,
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
        /// Why, as a stable word.
        reason: StatusStartProblem,
        /// Why, in English.
        error: String,
    },
    /// SIGHUP re-read the TLS files.
    TlsReloaded {
        /// The serial of the box certificate now in use.
        serial: String,
    },
    /// SIGHUP could not re-read the TLS files.
    TlsReloadFailed {
        /// What is wrong with them, as a stable word.
        reason: TlsFileProblem,
        /// Why, in English (the file and what is wrong).
        error: String,
    },
    /// A tunnel peer changed state.
    Tunnel {
        /// The new state (it is the code).
        #[serde(skip)]
        state: LinkState,
        /// The peer's name.
        peer: String,
        /// Why, as a stable word.
        reason: LinkReason,
        /// Why, in the carrier's English words (with its details).
        detail: String,
    },
    /// The administrator's connect worked.
    TunnelConnectRequested {},
    /// The administrator disconnected the tunnel.
    TunnelDisconnectRequested {},
    /// The administrator's connect failed.
    TunnelConnectFailed {
        /// Why, as a stable word.
        reason: ConnectProblem,
        /// Why, in English.
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
        /// The negotiated algorithms outside the profile, in English ("DH group MODP_1024").
        algorithms: String,
        /// The same by charon's names ("MODP_1024"): what the page shows, in any language.
        names: String,
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
        /// Why, in words an administrator understands.
        reason: TlsRefusal,
        /// The TLS library's own words, for the journal.
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
            Occurrence::StatusPageFailed { error, .. } => {
                format!("the status page cannot start: {error}")
            }
            Occurrence::TlsReloaded { serial } => {
                format!("SIGHUP: TLS files reloaded (certificate serial {serial})")
            }
            Occurrence::TlsReloadFailed { error, .. } => {
                format!("SIGHUP: TLS reload failed; the certificates in use stay in use: {error}")
            }
            Occurrence::Tunnel {
                state, peer, detail, ..
            } => format!("peer {peer}: {} ({detail})", state.as_str()),
            Occurrence::TunnelConnectRequested {} => "administrator: connect (ok)".to_string(),
            Occurrence::TunnelDisconnectRequested {} => {
                "administrator: disconnect (ok)".to_string()
            }
            Occurrence::TunnelConnectFailed { error, .. } => {
                format!("administrator: connect failed: {error}")
            }
            Occurrence::IpForwardingOn { found } => format!(
                "IP forwarding is on ({}): the box could route between its LAN and the data centre's network (NET-8); turn it off (sysctl net.ipv4.ip_forward=0)",
                found.text()
            ),
            Occurrence::IpsecSaOutsideProfile {
                remote_id,
                algorithms,
                ..
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
            Occurrence::ManagementTlsRefused {
                address,
                reason,
                error,
            } => format!(
                "management API: TLS handshake from {address} refused ({}): {error}",
                reason.text()
            ),
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
    use crate::state::events::words::{catalogue, missing_texts};
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
                reason: Some(ConfigReason::NotNewer),
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
            reason: LinkReason::SessionEstablished,
            detail: "handshake completed".into(),
        };
        let peer_params =
            json!({"peer": "dc", "reason": "session_established", "detail": "handshake completed"});
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
                    reason: StatusStartProblem::AddressInUse,
                    error: "address in use".into(),
                },
                "the status page cannot start: address in use",
                json!({"reason": "address_in_use", "error": "address in use"}),
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
                    reason: TlsFileProblem::Unreadable,
                    error: "no such file".into(),
                },
                "SIGHUP: TLS reload failed; the certificates in use stay in use: no such file",
                json!({"reason": "unreadable", "error": "no such file"}),
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
                    reason: ConnectProblem::Timeout,
                    error: "timed out".into(),
                },
                "administrator: connect failed: timed out",
                json!({"reason": "timeout", "error": "timed out"}),
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
                    algorithms: "encryption 3DES_CBC".into(),
                    names: "3DES_CBC".into(),
                },
                "IPsec SA with hub.renkei.example negotiated algorithms outside the CRYPTREC profile (encryption 3DES_CBC); terminated",
                json!({"remote_id": "hub.renkei.example", "algorithms": "encryption 3DES_CBC", "names": "3DES_CBC"}),
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
                    reason: TlsRefusal::Revoked,
                    error: "invalid peer certificate: Revoked".into(),
                },
                "management API: TLS handshake from 198.18.0.1:40443 refused (certificate revoked): invalid peer certificate: Revoked",
                json!({"address": "198.18.0.1:40443", "reason": "revoked", "error": "invalid peer certificate: Revoked"}),
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
            Code::ALL.iter().copied().collect(),
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

    /// The `{name}` placeholders of a template.
    fn placeholders(template: &str) -> BTreeSet<String> {
        template
            .split('{')
            .skip(1)
            .filter_map(|part| part.split_once('}').map(|(name, _)| name.to_string()))
            .collect()
    }

    #[test]
    fn log3_docs_and_page_have_every_code() {
        let api = include_str!("../../../../docs/api.md");
        for code in Code::ALL {
            let word = code.as_str();
            assert!(
                api.contains(&format!("| `{word}` |")),
                "docs/api.md lacks {word}"
            );
        }
    }

    /// Every code the daemon can emit, and every word its parameters can take, has a Japanese
    /// and an English text on the page; the codes and words come from the enums, so a new
    /// variant without its texts fails here. A template names only parameters its code has.
    #[test]
    fn log3_ops6_every_code_and_reason_has_a_japanese_and_an_english_text() {
        let (ja, en) = (catalogue("ja"), catalogue("en"));
        assert!(ja.len() > 100 && en.len() > 100, "both blocks parsed");
        let params: std::collections::BTreeMap<Code, serde_json::Value> =
            table().into_iter().map(|(o, _, p)| (o.code(), p)).collect();
        let mut keys: Vec<String> = EVENT_KINDS.iter().map(|k| format!("kind_{k}")).collect();
        for &code in Code::ALL {
            let key = format!("event_{}", code.as_str());
            keys.push(key.clone());
            for (param, words) in code.word_params() {
                keys.extend(words.iter().map(|w| code.catalogue_key(param, w)));
            }
            let (Some(ja_template), Some(en_template)) = (ja.get(&key), en.get(&key)) else {
                continue;
            };
            assert_eq!(
                placeholders(ja_template),
                placeholders(en_template),
                "{key}: both languages use the same parameters"
            );
            let known = params[&code].as_object().cloned().unwrap_or_default();
            for name in placeholders(ja_template) {
                assert!(known.contains_key(&name), "{key}: no parameter {name}");
            }
        }
        let missing = missing_texts(keys);
        assert!(missing.is_empty(), "web-ui/i18n.js lacks {missing:#?}");
    }

    #[test]
    fn log3_every_kind_is_a_known_word() {
        for (occurrence, ..) in table() {
            assert!(EVENT_KINDS.contains(&occurrence.kind()), "{occurrence:?}");
        }
    }
}
