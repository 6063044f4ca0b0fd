//! Certificate chains a verifier has already accepted, so that a peer's every new connection
//! does not pay again for the same signature checks.
//!
//! Each full handshake verifies the peer's chain: parsing, path building, an ECDSA verification
//! per certificate signed by the CA and one per CRL that covers it, spent on bytes that a
//! facility's box sends unchanged on every connection (remembering them took about a sixth of the
//! two daemons' CPU per new connection out, docs/benchmarks.md). The handshake's own proofs stay
//! in every connection: the ECDHE exchange and the peer's signature over this handshake
//! (CertificateVerify) are never skipped, so a peer must still hold the certificate's key; only
//! the question "does this chain lead to the operator CA, unrevoked" is answered from memory.
//!
//! Why the remembered answer is the answer webpki would give: for one verifier (one generation of
//! CA bundle and CRLs, see `store`: a reload builds new verifiers, and their memory starts
//! empty), webpki's verdict depends on the chain's bytes, the name asked for (servers only) and
//! the time. The bytes and the name are the key (SHA-256 of them); for the time, a reuse also
//! requires `now` to lie inside every presented certificate's validity, which covers the path
//! webpki chose (it checks the validity of the end entity and of the intermediates it uses, never
//! of the trust anchor; renkei's verifiers do not enforce a CRL's nextUpdate). A clock stepped back
//! or forward past a certificate's dates therefore gets a full verification and its error. Only
//! accepted chains are remembered, at most [`CAPACITY`] of them and each for [`REUSE_FOR_SECS`]
//! at most, after which the chain is verified in full again.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use x509_parser::prelude::{FromDer, X509Certificate};

/// How many accepted chains one verifier remembers: a hub serves a few hundred facilities, each
/// with one box certificate.
pub const CAPACITY: usize = 1024;

/// How long an accepted chain is reused before it is verified in full again.
pub const REUSE_FOR_SECS: u64 = 300;

/// What identifies one verification question: SHA-256 over the side, the chain and the name.
type ChainKey = [u8; 32];

/// One accepted chain: when it may be reused.
#[derive(Debug, Clone, Copy)]
struct Accepted {
    /// The latest notBefore of the presented certificates (Unix seconds).
    valid_from: u64,
    /// The earliest notAfter of the presented certificates (Unix seconds).
    valid_until: u64,
    /// When the full verification accepted it (Unix seconds).
    verified_at: u64,
}

impl Accepted {
    fn reusable_at(&self, now: u64) -> bool {
        self.valid_from <= now
            && now <= self.valid_until
            && self.verified_at <= now
            && now - self.verified_at <= REUSE_FOR_SECS
    }
}

/// The memory of one verifier: accepted chains and how often each path was taken.
#[derive(Default)]
pub struct VerifiedChains {
    accepted: Mutex<HashMap<ChainKey, Accepted>>,
    reuses: AtomicU64,
    full_verifications: AtomicU64,
}

impl fmt::Debug for VerifiedChains {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifiedChains")
            .field("remembered", &self.remembered())
            .field("reuses", &self.reuses())
            .field("full_verifications", &self.full_verifications())
            .finish()
    }
}

/// Which verifier asks: a client chain and a server chain are different questions.
#[derive(Clone, Copy)]
enum Side {
    ClientChain = 1,
    ServerChain = 2,
}

impl VerifiedChains {
    /// How many handshakes took a remembered verdict.
    pub fn reuses(&self) -> u64 {
        self.reuses.load(Ordering::Relaxed)
    }

    /// How many handshakes verified the chain in full (accepted or not).
    pub fn full_verifications(&self) -> u64 {
        self.full_verifications.load(Ordering::Relaxed)
    }

    /// How many accepted chains are remembered now.
    pub fn remembered(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ChainKey, Accepted>> {
        self.accepted.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn key(
        side: Side,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: Option<&str>,
    ) -> ChainKey {
        let mut context = ring::digest::Context::new(&ring::digest::SHA256);
        context.update(&[side as u8]);
        // Every part is length-prefixed, so no two different questions hash the same bytes.
        let mut part = |bytes: &[u8]| {
            context.update(&(bytes.len() as u64).to_be_bytes());
            context.update(bytes);
        };
        part(server_name.unwrap_or("").as_bytes());
        part(end_entity.as_ref());
        for intermediate in intermediates {
            part(intermediate.as_ref());
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(context.finish().as_ref());
        key
    }

    /// Whether the chain under `key` was accepted and may be taken as accepted at `now`.
    fn reusable(&self, key: &ChainKey, now: UnixTime) -> bool {
        let now = now.as_secs();
        let reusable = self
            .lock()
            .get(key)
            .is_some_and(|accepted| accepted.reusable_at(now));
        if reusable {
            self.reuses.fetch_add(1, Ordering::Relaxed);
        } else {
            self.full_verifications.fetch_add(1, Ordering::Relaxed);
        }
        reusable
    }

    /// Remembers a chain the full verification accepted at `now`. A chain whose dates cannot be
    /// read is not remembered (it is verified in full every time).
    fn remember(
        &self,
        key: ChainKey,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) {
        let Some((valid_from, valid_until)) = validity(end_entity, intermediates) else {
            return;
        };
        let now = now.as_secs();
        let accepted = Accepted {
            valid_from,
            valid_until,
            verified_at: now,
        };
        let mut remembered = self.lock();
        if remembered.len() >= CAPACITY && !remembered.contains_key(&key) {
            remembered.retain(|_, old| old.reusable_at(now));
            if remembered.len() >= CAPACITY {
                remembered.clear();
            }
        }
        remembered.insert(key, accepted);
    }
}

/// The window in which every presented certificate is valid, as webpki judges validity (both
/// ends inclusive, whole seconds); `None` when a certificate cannot be read or the window is
/// empty.
fn validity(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
) -> Option<(u64, u64)> {
    let mut from = 0u64;
    let mut until = u64::MAX;
    for der in std::iter::once(end_entity).chain(intermediates) {
        let (_, cert) = X509Certificate::from_der(der.as_ref()).ok()?;
        let validity = cert.validity();
        // A notBefore before 1970 is no later bound than 0; a notAfter before 1970 is never.
        from = from.max(u64::try_from(validity.not_before.timestamp()).unwrap_or(0));
        until = until.min(u64::try_from(validity.not_after.timestamp()).ok()?);
    }
    (from <= until).then_some((from, until))
}

/// The handshake's own signature (CertificateVerify) and the schemes offered for it: always the
/// inner webpki verifier's, on every connection; the same four methods in both verifier traits.
macro_rules! handshake_signatures_checked_by_inner {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.inner.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.inner.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.inner.supported_verify_schemes()
        }

        fn requires_raw_public_keys(&self) -> bool {
            self.inner.requires_raw_public_keys()
        }
    };
}

/// A client-certificate verifier (for the box's TLS servers) that remembers accepted chains.
#[derive(Debug)]
pub struct RememberingClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    chains: VerifiedChains,
}

impl RememberingClientVerifier {
    /// Wraps a webpki verifier built for one generation of CA bundle and CRLs.
    pub fn new(inner: Arc<dyn ClientCertVerifier>) -> Self {
        RememberingClientVerifier {
            inner,
            chains: VerifiedChains::default(),
        }
    }

    /// This verifier's memory.
    pub fn chains(&self) -> &VerifiedChains {
        &self.chains
    }
}

impl ClientCertVerifier for RememberingClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let key = VerifiedChains::key(Side::ClientChain, end_entity, intermediates, None);
        if self.chains.reusable(&key, now) {
            return Ok(ClientCertVerified::assertion());
        }
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        self.chains.remember(key, end_entity, intermediates, now);
        Ok(verified)
    }

    handshake_signatures_checked_by_inner!();
}

/// A server-certificate verifier (for the box's TLS clients) that remembers accepted chains,
/// per server name.
#[derive(Debug)]
pub struct RememberingServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
    chains: VerifiedChains,
}

impl RememberingServerVerifier {
    /// Wraps a webpki verifier built for one generation of CA bundle and CRLs.
    pub fn new(inner: Arc<WebPkiServerVerifier>) -> Self {
        RememberingServerVerifier {
            inner,
            chains: VerifiedChains::default(),
        }
    }

    /// This verifier's memory.
    pub fn chains(&self) -> &VerifiedChains {
        &self.chains
    }
}

impl ServerCertVerifier for RememberingServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The OCSP response is not part of the key: webpki's verifier does not judge it.
        let name = server_name.to_str();
        let key = VerifiedChains::key(
            Side::ServerChain,
            end_entity,
            intermediates,
            Some(name.as_ref()),
        );
        if self.chains.reusable(&key, now) {
            return Ok(ServerCertVerified::assertion());
        }
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        self.chains.remember(key, end_entity, intermediates, now);
        Ok(verified)
    }

    handshake_signatures_checked_by_inner!();

    fn root_hint_subjects(&self) -> Option<&[DistinguishedName]> {
        self.inner.root_hint_subjects()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose, SerialNumber,
    };
    use rustls::server::WebPkiClientVerifier;
    use rustls::RootCertStore;

    use super::*;
    use crate::tls::profile::provider;

    const NAME: &str = "hub.renkei.example";

    struct Ca {
        issuer: Issuer<'static, KeyPair>,
        der: CertificateDer<'static>,
    }

    impl Ca {
        fn new(cn: &str) -> Ca {
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("CA key");
            let mut params = CertificateParams::default();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, cn);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let der = params.self_signed(&key).expect("CA cert").der().clone();
            Ca {
                issuer: Issuer::new(params, key),
                der,
            }
        }

        /// A box certificate valid from 2030-01-01 to 2031-01-01.
        fn issue(&self, serial: u64) -> CertificateDer<'static> {
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("leaf key");
            let mut params = CertificateParams::new(vec![NAME.to_string()]).expect("params");
            params.serial_number = Some(SerialNumber::from(serial));
            params.not_before = rcgen::date_time_ymd(2030, 1, 1);
            params.not_after = rcgen::date_time_ymd(2031, 1, 1);
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            params
                .signed_by(&key, &self.issuer)
                .expect("leaf")
                .der()
                .clone()
        }

        fn roots(&self) -> Arc<RootCertStore> {
            let mut roots = RootCertStore::empty();
            roots.add(self.der.clone()).expect("anchor");
            Arc::new(roots)
        }

        fn client_verifier(&self) -> RememberingClientVerifier {
            let inner = WebPkiClientVerifier::builder_with_provider(self.roots(), provider())
                .build()
                .expect("client verifier");
            RememberingClientVerifier::new(inner)
        }

        fn server_verifier(&self) -> RememberingServerVerifier {
            let inner = WebPkiServerVerifier::builder_with_provider(self.roots(), provider())
                .build()
                .expect("server verifier");
            RememberingServerVerifier::new(inner)
        }
    }

    /// 2030-01-01T00:00:00Z, the test certificates' notBefore.
    const VALID_FROM: u64 = 1_893_456_000;
    /// 2031-01-01T00:00:00Z, their notAfter.
    const VALID_UNTIL: u64 = 1_924_992_000;

    fn at(secs: u64) -> UnixTime {
        UnixTime::since_unix_epoch(Duration::from_secs(secs))
    }

    fn client_ok(
        verifier: &RememberingClientVerifier,
        cert: &CertificateDer<'_>,
        now: u64,
    ) -> bool {
        verifier.verify_client_cert(cert, &[], at(now)).is_ok()
    }

    fn counts(chains: &VerifiedChains) -> (u64, u64) {
        (chains.full_verifications(), chains.reuses())
    }

    #[test]
    fn net4_an_accepted_chain_is_reused_and_an_expired_one_is_refused() {
        let ca = Ca::new("operator CA");
        let cert = ca.issue(1);
        let verifier = ca.client_verifier();
        let mid = VALID_FROM + 1000;
        assert!(client_ok(&verifier, &cert, mid));
        assert!(client_ok(&verifier, &cert, mid + 10));
        assert_eq!(counts(verifier.chains()), (1, 1));
        // Its last second is still valid (webpki: expired only after notAfter)...
        let mut verifier = ca.client_verifier();
        assert!(client_ok(&verifier, &cert, VALID_UNTIL - 10));
        assert!(client_ok(&verifier, &cert, VALID_UNTIL));
        assert_eq!(counts(verifier.chains()), (1, 1));
        // ...the next one is not, though the chain is remembered: webpki says why.
        let refused = verifier.verify_client_cert(&cert, &[], at(VALID_UNTIL + 1));
        assert!(
            matches!(
                refused,
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::ExpiredContext { .. }
                ))
            ),
            "{refused:?}"
        );
        assert_eq!(counts(verifier.chains()), (2, 1));
        // A clock stepped back before notBefore gets the full verification and its refusal.
        verifier = ca.client_verifier();
        assert!(client_ok(&verifier, &cert, VALID_FROM + 5));
        assert!(!client_ok(&verifier, &cert, VALID_FROM - 1));
        assert_eq!(counts(verifier.chains()), (2, 0));
    }

    #[test]
    fn net4_a_refused_chain_is_never_remembered() {
        let ca = Ca::new("operator CA");
        let foreign = Ca::new("operator CA").issue(1);
        let verifier = ca.client_verifier();
        for _ in 0..3 {
            assert!(!client_ok(&verifier, &foreign, VALID_FROM + 1000));
        }
        assert_eq!(counts(verifier.chains()), (3, 0));
        assert_eq!(verifier.chains().remembered(), 0);
        // A different certificate of the right CA is a different question.
        assert!(client_ok(&verifier, &ca.issue(1), VALID_FROM + 1000));
        assert!(client_ok(&verifier, &ca.issue(2), VALID_FROM + 1000));
        assert_eq!(counts(verifier.chains()), (5, 0));
    }

    #[test]
    fn net4_a_remembered_chain_is_verified_in_full_again_after_its_reuse_time() {
        let ca = Ca::new("operator CA");
        let cert = ca.issue(1);
        let verifier = ca.client_verifier();
        let t = VALID_FROM + 1000;
        assert!(client_ok(&verifier, &cert, t));
        assert!(client_ok(&verifier, &cert, t + REUSE_FOR_SECS));
        assert_eq!(counts(verifier.chains()), (1, 1));
        assert!(client_ok(&verifier, &cert, t + REUSE_FOR_SECS + 1));
        assert_eq!(counts(verifier.chains()), (2, 1));
        // The clock stepped back before the verification: verified in full.
        assert!(client_ok(&verifier, &cert, t));
        assert_eq!(counts(verifier.chains()), (3, 1));
    }

    #[test]
    fn net4_a_server_chain_is_remembered_for_its_name_only() {
        let ca = Ca::new("operator CA");
        let cert = ca.issue(1);
        let verifier = ca.server_verifier();
        let name = ServerName::try_from(NAME).expect("name");
        let other = ServerName::try_from("other.renkei.example").expect("name");
        let now = at(VALID_FROM + 1000);
        for _ in 0..2 {
            verifier
                .verify_server_cert(&cert, &[], &name, &[], now)
                .expect("the right name");
        }
        assert_eq!(counts(verifier.chains()), (1, 1));
        let refused = verifier.verify_server_cert(&cert, &[], &other, &[], now);
        assert!(
            matches!(
                refused,
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForNameContext { .. }
                ))
            ),
            "{refused:?}"
        );
        assert_eq!(counts(verifier.chains()), (2, 1));
    }

    #[test]
    fn the_memory_stays_within_its_capacity() {
        let ca = Ca::new("operator CA");
        let cert = ca.issue(1);
        let chains = VerifiedChains::default();
        let now = at(VALID_FROM + 1000);
        for n in 0..=CAPACITY as u64 * 2 {
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&n.to_be_bytes());
            chains.remember(key, &cert, &[], now);
            assert!(chains.remembered() <= CAPACITY);
        }
        let mut newest = [0u8; 32];
        newest[..8].copy_from_slice(&(CAPACITY as u64 * 2).to_be_bytes());
        assert!(chains.reusable(&newest, now));
    }

    #[test]
    fn keys_tell_apart_sides_names_and_where_one_certificate_ends() {
        let a = CertificateDer::from(vec![1u8, 2, 3]);
        let b = CertificateDer::from(vec![1u8, 2]);
        let c = CertificateDer::from(vec![3u8]);
        let key = VerifiedChains::key;
        assert_ne!(
            key(Side::ClientChain, &a, &[], None),
            key(Side::ServerChain, &a, &[], None)
        );
        assert_ne!(
            key(Side::ServerChain, &a, &[], Some("a")),
            key(Side::ServerChain, &a, &[], Some("b"))
        );
        assert_ne!(
            key(Side::ClientChain, &a, &[], None),
            key(Side::ClientChain, &b, std::slice::from_ref(&c), None)
        );
        assert_eq!(
            key(Side::ClientChain, &b, std::slice::from_ref(&c), None),
            key(Side::ClientChain, &b, std::slice::from_ref(&c), None)
        );
    }
}
