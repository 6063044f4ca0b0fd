//! Why a proxied connection was refused or failed, as a stable word ([`ProxyProblem`]) and,
//! for a TLS handshake that failed, the handshake's reason: what the status page shows in the
//! administrator's language (`problem_<word>` in web-ui/i18n.js), beside the English result
//! the access log and the journal keep.

use serde::Serialize;

use crate::state::events::words::stable_words;
use crate::tls::TlsRefusal;

stable_words! {
    /// What went wrong with one connection.
    pub enum ProxyProblem {
        /// The TLS handshake failed (`tls_reason` says why).
        TlsHandshake => "tls_handshake",
        /// The peer's certificate names no identity the box can read.
        UnreadableCertificate => "unreadable_certificate",
        /// The peer's identity is not in the service's `allowed_identities`.
        IdentityNotAllowed => "identity_not_allowed",
        /// The service's `max_connections` were all in use.
        ConnectionLimit => "connection_limit",
        /// The on-demand tunnel did not come up in time.
        TunnelNotUp => "tunnel_not_up",
        /// The link was idle and the service rides on it without bringing it up (the journal
        /// upload of an on-demand box).
        LinkIdle => "link_idle",
        /// The link idled out (or restarted) under a connection that rode on it.
        LinkClosed => "link_closed",
        /// No link reaches the target.
        NoRoute => "no_route",
        /// The tunnel was restarting.
        TunnelRestarting => "tunnel_restarting",
        /// The target refused or could not be reached.
        TargetUnreachable => "target_unreachable",
        /// The target did not answer in time.
        TargetTimeout => "target_timeout",
        /// No data flowed for the idle timeout.
        IdleTimeout => "idle_timeout",
        /// The daemon stopped (or the service was removed) while the connection was open.
        Shutdown => "shutdown",
        /// Copying between the two sides failed.
        TransferFailed => "transfer_failed",
        /// The connection's handler ended early.
        HandlerEnded => "handler_ended",
    }
}

/// A problem word, with the handshake's reason when it is a TLS one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// What went wrong.
    pub code: ProxyProblem,
    /// Why the TLS handshake failed, for [`ProxyProblem::TlsHandshake`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_reason: Option<TlsRefusal>,
}

impl Problem {
    /// A failed TLS handshake.
    pub fn tls(reason: TlsRefusal) -> Self {
        Problem {
            code: ProxyProblem::TlsHandshake,
            tls_reason: Some(reason),
        }
    }
}

impl From<ProxyProblem> for Problem {
    fn from(code: ProxyProblem) -> Self {
        Problem {
            code,
            tls_reason: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::events::words::missing_texts;

    #[test]
    fn log1_every_problem_has_a_japanese_and_an_english_text() {
        let keys = ProxyProblem::WORDS
            .iter()
            .map(|w| format!("problem_{w}"))
            .chain(TlsRefusal::WORDS.iter().map(|w| format!("tls_reason_{w}")))
            .chain(["access_ok".to_string()]);
        let missing = missing_texts(keys);
        assert!(missing.is_empty(), "web-ui/i18n.js lacks {missing:#?}");
    }
}
