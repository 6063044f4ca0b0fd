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

stable_words! {
    /// What is wrong with the TLS files (certificate, key, CA, CRL) the box read: why a SIGHUP
    /// reload kept the old ones, or why the status page could not start.
    pub enum TlsFileProblem {
        /// A file could not be read (missing, no permission, too large to be one).
        Unreadable => "unreadable",
        /// The private key file is readable by group or others.
        KeyFileTooOpen => "key_file_too_open",
        /// A file is not the PEM certificate, key or CRL it should be.
        Malformed => "malformed",
        /// The box's certificate has expired.
        CertificateExpired => "certificate_expired",
        /// The box's certificate is not valid yet (or the clock is wrong).
        CertificateNotYetValid => "certificate_not_yet_valid",
        /// A key, signature or key usage outside the CRYPTREC profile.
        OutsideProfile => "outside_profile",
        /// The private key does not belong to the certificate.
        KeyMismatch => "key_mismatch",
        /// The certificate was not issued by the operator's CA.
        NotIssuedByCa => "not_issued_by_ca",
        /// The box's certificate is revoked by the CRL.
        Revoked => "revoked",
        /// The CRL was not issued by the operator's CA.
        CrlNotFromCa => "crl_not_from_ca",
        /// Anything else (the log says what).
        Other => "other",
    }
}

stable_words! {
    /// Why the status page could not start.
    pub enum StatusStartProblem {
        /// Its TLS files are unusable (`TlsFileProblem` says how, in the log).
        TlsFiles => "tls_files",
        /// Its own certificate could not be made or written.
        Certificate => "certificate",
        /// Another program listens on its address.
        AddressInUse => "address_in_use",
        /// Its address is not one of the box's.
        AddressNotAvailable => "address_not_available",
        /// Any other reason it could not listen.
        CannotListen => "cannot_listen",
    }
}

stable_words! {
    /// Why the administrator's "connect" did not bring the link up.
    pub enum ConnectProblem {
        /// No link to the data centre is responsible for the address.
        NoRoute => "no_route",
        /// The link did not come up within the connect timeout.
        Timeout => "timeout",
        /// The link is restarting for a config change.
        Restarting => "restarting",
    }
}

stable_words! {
    /// The last problem renkei had with charon (the IPsec carrier's `last_error_code`).
    pub enum IpsecProblem {
        /// No proposal acceptable to both sides.
        NoProposalChosen => "no_proposal_chosen",
        /// An authentication failed (a certificate not trusted or too weak).
        AuthenticationFailed => "authentication_failed",
        /// charon is not running, or refused renkei's connection or its configuration.
        CharonUnavailable => "charon_unavailable",
        /// charon could not start the SA for another reason (its log says why).
        InitiateFailed => "initiate_failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::events::words::missing_texts;

    /// The IPsec carrier's `last_error_code` is a field of the page's carrier table, not an
    /// event parameter: its words are checked here (the events' in occurrence.rs).
    #[test]
    fn log3_ops6_every_ipsec_problem_has_a_japanese_and_an_english_text() {
        let keys = IpsecProblem::WORDS
            .iter()
            .map(|w| format!("ipsec_problem_{w}"))
            .chain(["backend_last_error_code".to_string()]);
        let missing = missing_texts(keys);
        assert!(missing.is_empty(), "web-ui/i18n.js lacks {missing:#?}");
    }
}
