//! Why a TLS handshake failed, in the words an administrator understands
//! ([`TlsRefusal`]: certificate expired, not our CA, peer not allowed ...), from the error
//! rustls (through tokio-rustls's `io::Error`) or the handshake's timeout gave. The raw error
//! stays beside it for the journal.

use std::io;

use rustls::{AlertDescription, CertificateError, Error, PeerIncompatible};

pub use crate::state::events::TlsRefusal;

/// The reason of a failed handshake, from the `io::Error` a tokio-rustls accept or connect
/// returned (a rustls error inside, or the connection's own failure).
pub fn from_io(err: &io::Error) -> TlsRefusal {
    if let Some(tls) = err.get_ref().and_then(|e| e.downcast_ref::<Error>()) {
        return from_rustls(tls);
    }
    match err.kind() {
        io::ErrorKind::TimedOut => TlsRefusal::HandshakeTimeout,
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => TlsRefusal::ConnectionClosed,
        io::ErrorKind::InvalidData => TlsRefusal::NotTls,
        _ => TlsRefusal::Other,
    }
}

/// The reason of a rustls error.
pub fn from_rustls(err: &Error) -> TlsRefusal {
    match err {
        Error::InvalidCertificate(cert) => from_certificate(cert),
        Error::NoCertificatesPresented => TlsRefusal::NoClientCertificate,
        Error::PeerIncompatible(incompatible) => from_incompatible(incompatible),
        Error::AlertReceived(alert) => from_alert(*alert),
        Error::InvalidMessage(_) | Error::PeerMisbehaved(_) | Error::PeerSentOversizedRecord => {
            TlsRefusal::NotTls
        }
        _ => TlsRefusal::Other,
    }
}

fn from_certificate(err: &CertificateError) -> TlsRefusal {
    match err {
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            TlsRefusal::CertificateExpired
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            TlsRefusal::CertificateNotYetValid
        }
        CertificateError::UnknownIssuer => TlsRefusal::UnknownIssuer,
        CertificateError::Revoked => TlsRefusal::Revoked,
        CertificateError::NotValidForName
        | CertificateError::NotValidForNameContext { .. }
        | CertificateError::InvalidPurpose
        | CertificateError::InvalidPurposeContext { .. }
        | CertificateError::ApplicationVerificationFailure => TlsRefusal::PeerNotAllowed,
        CertificateError::UnsupportedSignatureAlgorithmContext { .. }
        | CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
            TlsRefusal::ProtocolNotAllowed
        }
        CertificateError::BadEncoding
        | CertificateError::BadSignature
        | CertificateError::UnhandledCriticalExtension => TlsRefusal::BadCertificate,
        _ => TlsRefusal::Other,
    }
}

fn from_incompatible(err: &PeerIncompatible) -> TlsRefusal {
    match err {
        PeerIncompatible::ServerRejectedEncryptedClientHello(_) => TlsRefusal::Other,
        // Versions, suites, groups, signature schemes and the extensions TLS 1.3 needs: all
        // what the CRYPTREC profile allows and the peer did not offer.
        _ => TlsRefusal::ProtocolNotAllowed,
    }
}

/// What the peer said when it refused the box's side of the handshake.
fn from_alert(alert: AlertDescription) -> TlsRefusal {
    match alert {
        AlertDescription::CertificateExpired => TlsRefusal::CertificateExpired,
        AlertDescription::CertificateRevoked => TlsRefusal::Revoked,
        AlertDescription::UnknownCA => TlsRefusal::UnknownIssuer,
        AlertDescription::CertificateRequired => TlsRefusal::NoClientCertificate,
        AlertDescription::ProtocolVersion | AlertDescription::InsufficientSecurity => {
            TlsRefusal::ProtocolNotAllowed
        }
        AlertDescription::BadCertificate
        | AlertDescription::UnsupportedCertificate
        | AlertDescription::CertificateUnknown => TlsRefusal::BadCertificate,
        AlertDescription::AccessDenied => TlsRefusal::PeerNotAllowed,
        _ => TlsRefusal::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int1_rustls_errors_map_to_reasons_an_administrator_understands() {
        use CertificateError as C;
        let certificates = [
            (C::Expired, TlsRefusal::CertificateExpired),
            (C::NotValidYet, TlsRefusal::CertificateNotYetValid),
            (C::UnknownIssuer, TlsRefusal::UnknownIssuer),
            (C::Revoked, TlsRefusal::Revoked),
            (C::NotValidForName, TlsRefusal::PeerNotAllowed),
            (C::BadSignature, TlsRefusal::BadCertificate),
        ]
        .map(|(cert, want)| (Error::InvalidCertificate(cert), want));
        let others = [
            (
                Error::NoCertificatesPresented,
                TlsRefusal::NoClientCertificate,
            ),
            (
                Error::PeerIncompatible(PeerIncompatible::SupportedVersionsExtensionRequired),
                TlsRefusal::ProtocolNotAllowed,
            ),
            (
                Error::PeerIncompatible(PeerIncompatible::NoCipherSuitesInCommon),
                TlsRefusal::ProtocolNotAllowed,
            ),
            (
                Error::AlertReceived(AlertDescription::UnknownCA),
                TlsRefusal::UnknownIssuer,
            ),
            (
                Error::AlertReceived(AlertDescription::CertificateExpired),
                TlsRefusal::CertificateExpired,
            ),
            (Error::General("x".into()), TlsRefusal::Other),
        ];
        let cases = certificates.into_iter().chain(others);
        for (err, want) in cases {
            assert_eq!(from_rustls(&err), want, "{err:?}");
            // As tokio-rustls hands it over: inside an io::Error.
            let wrapped = io::Error::new(io::ErrorKind::InvalidData, err);
            assert_eq!(from_io(&wrapped), want, "{wrapped:?}");
        }
        for (kind, want) in [
            (io::ErrorKind::TimedOut, TlsRefusal::HandshakeTimeout),
            (io::ErrorKind::UnexpectedEof, TlsRefusal::ConnectionClosed),
            (io::ErrorKind::ConnectionReset, TlsRefusal::ConnectionClosed),
            (io::ErrorKind::InvalidData, TlsRefusal::NotTls),
            (io::ErrorKind::Other, TlsRefusal::Other),
        ] {
            assert_eq!(from_io(&io::Error::from(kind)), want, "{kind:?}");
        }
    }
}
