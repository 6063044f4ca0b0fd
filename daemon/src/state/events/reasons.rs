//! Reasons that events carry as stable words beside the raw detail: why a TLS handshake was
//! refused (in words an administrator understands; `tls::refusal` maps rustls errors to them)
//! and why a pushed config was refused or rolled back. The page translates each word
//! (`event_<code>_reason_<word>` in web-ui/i18n.js); the English text is the journal's.

use super::words::stable_words;

stable_words! {
    /// Why a TLS handshake failed.
    pub enum TlsRefusal {
        /// The peer's certificate has expired.
        CertificateExpired => "certificate_expired",
        /// The peer's certificate is not valid yet (or a clock is wrong).
        CertificateNotYetValid => "certificate_not_yet_valid",
        /// The peer's certificate was not issued by the operator's CA.
        UnknownIssuer => "unknown_issuer",
        /// The peer's certificate does not name a peer this box may talk to.
        PeerNotAllowed => "peer_not_allowed",
        /// The peer's certificate is revoked (the operator's CRL).
        Revoked => "revoked",
        /// The peer offered only protocol versions, cipher suites, groups or signature schemes
        /// outside the CRYPTREC profile.
        ProtocolNotAllowed => "protocol_not_allowed",
        /// The peer sent no client certificate.
        NoClientCertificate => "no_client_certificate",
        /// The peer's certificate is malformed, or signed with a bad or disallowed signature.
        BadCertificate => "bad_certificate",
        /// The handshake did not finish in time.
        HandshakeTimeout => "handshake_timeout",
        /// The peer closed the connection before the handshake finished.
        ConnectionClosed => "connection_closed",
        /// The peer spoke something that is not TLS, or broke the protocol.
        NotTls => "not_tls",
        /// Anything else (the raw error says what).
        Other => "other",
    }
}

impl TlsRefusal {
    /// The English text of the journal.
    pub fn text(self) -> &'static str {
        match self {
            TlsRefusal::CertificateExpired => "certificate expired",
            TlsRefusal::CertificateNotYetValid => "certificate not valid yet",
            TlsRefusal::UnknownIssuer => "certificate not issued by the operator's CA",
            TlsRefusal::PeerNotAllowed => "peer not allowed",
            TlsRefusal::Revoked => "certificate revoked",
            TlsRefusal::ProtocolNotAllowed => {
                "protocol version or cipher not allowed by the CRYPTREC profile"
            }
            TlsRefusal::NoClientCertificate => "no client certificate",
            TlsRefusal::BadCertificate => "unreadable or badly signed certificate",
            TlsRefusal::HandshakeTimeout => "handshake timed out",
            TlsRefusal::ConnectionClosed => "the peer closed the connection during the handshake",
            TlsRefusal::NotTls => "not TLS, or a broken handshake",
            TlsRefusal::Other => "other TLS error",
        }
    }
}

stable_words! {
    /// Why a pushed config (or a management request) was refused, confirmed or rolled back:
    /// the `reason` of the config events, and the `error` of the management API's answers.
    pub enum ConfigReason {
        /// The push is larger than the limit.
        TooLarge => "too_large",
        /// The push's body arrived too slowly.
        TooSlow => "too_slow",
        /// The request was malformed.
        BadRequest => "bad_request",
        /// The box could not keep the upload.
        Spool => "spool",
        /// No signature came with the push.
        MissingSignature => "missing_signature",
        /// The signature could not be read.
        MalformedSignature => "malformed_signature",
        /// No trusted key made the signature.
        BadSignature => "bad_signature",
        /// The box could not read its trusted keys.
        TrustedKeysUnreadable => "trusted_keys_unreadable",
        /// The box could not read its own certificate.
        OwnCertificateUnreadable => "own_certificate_unreadable",
        /// The config is for another box.
        WrongBox => "wrong_box",
        /// The config is not valid.
        InvalidConfig => "invalid_config",
        /// The config's version is not newer than the running one.
        NotNewer => "not_newer",
        /// Another push awaits its confirmation.
        Pending => "pending",
        /// The config has no management section (the box would be unreachable).
        NoManagement => "no_management",
        /// The config changes a setting only the installer may change.
        ImmutableSetting => "immutable_setting",
        /// The box could not write the config.
        WriteFailed => "write_failed",
        /// The confirm named nothing pending, or another version.
        ConfirmRefused => "confirm_refused",
        /// The client is not an operator identity.
        NotOperator => "not_operator",
        /// The confirm window ended without a confirm.
        ConfirmWindowExpired => "confirm_window_expired",
        /// The box could not apply the config.
        ApplyFailed => "apply_failed",
        /// The daemon stopped while a push was under way (start-up recovery).
        StoppedDuringPush => "stopped_during_push",
    }
}
