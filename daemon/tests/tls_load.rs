//! Certificates outside the profile are refused at load, naming the file and the reason (NET-5).

mod tls_common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, UNIX_EPOCH};

use renkei::config::TlsConfig;
use renkei::tls::credentials::{self, EXPIRY_WARNING_DAYS};
use renkei::tls::{CertRole, CredentialError};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateRevocationListDer;
use tls_common::{openssl, tempdir, write_box, write_key, Ca, SERVER_NAME};

#[test]
fn valid_box_loads_with_expiry_data() {
    let ca = Ca::new("renkei test CA");
    let dir = tempdir();
    let config = write_box(dir.path(), "box", &ca.issue(SERVER_NAME, 7), &ca.pem, None);
    let creds = credentials::load(&config).expect("load");
    assert_eq!(creds.chain.len(), 1);
    assert_eq!(creds.ca_certs.len(), 1);
    assert_eq!(creds.serial(), "07");
    assert_eq!(creds.expiries.len(), 2);
    assert_eq!(creds.expiries[0].role, CertRole::BoxChain);
    assert_eq!(creds.expiries[0].path, config.certificate_file);
    assert!(creds.expiries[0].subject.contains(SERVER_NAME));
    assert_eq!(creds.expiries[1].role, CertRole::OperatorCa);
    assert!(creds
        .expiries
        .iter()
        .all(|e| !e.warning && e.days_left > 365));
    // The private key never shows in Debug output.
    let debug = format!("{creds:?}");
    assert!(
        !debug.contains("PRIVATE") && !debug.contains("key:"),
        "{debug}"
    );
}

#[test]
fn net5_expiry_within_30_days_warns() {
    let ca = Ca::new("renkei test CA");
    let dir = tempdir();
    let leaf = ca.issue_with(SERVER_NAME, 1, &rcgen::PKCS_ECDSA_P256_SHA256, |p| {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2040, 1, 1);
    });
    let config = write_box(dir.path(), "box", &leaf, &ca.pem, None);
    let not_after = UNIX_EPOCH + Duration::from_secs(2_208_988_800); // 2040-01-01T00:00:00Z
    let day = Duration::from_secs(86_400);

    let days = u32::try_from(EXPIRY_WARNING_DAYS).expect("days");
    let creds = credentials::load_at(&config, not_after - day * days).expect("load");
    assert_eq!(creds.expiries[0].days_left, EXPIRY_WARNING_DAYS);
    assert!(creds.expiries[0].warning);
    assert_eq!(creds.expiries[0].not_after_unix, 2_208_988_800);

    let creds = credentials::load_at(&config, not_after - day * (days + 1)).expect("load");
    assert!(!creds.expiries[0].warning);
}

#[test]
fn net5_expired_certificate_is_refused() {
    let ca = Ca::new("renkei test CA");
    let dir = tempdir();
    let leaf = ca.issue_with(SERVER_NAME, 1, &rcgen::PKCS_ECDSA_P256_SHA256, |p| {
        p.not_before = rcgen::date_time_ymd(2000, 1, 1);
        p.not_after = rcgen::date_time_ymd(2001, 1, 1);
    });
    let config = write_box(dir.path(), "box", &leaf, &ca.pem, None);
    match credentials::load(&config) {
        Err(CredentialError::CertExpired { path, .. }) => {
            assert_eq!(path, config.certificate_file)
        }
        other => panic!("expected CertExpired, got {other:?}"),
    }
}

#[test]
fn net5_not_yet_valid_certificate_blames_the_clock() {
    let ca = Ca::new("renkei test CA");
    let dir = tempdir();
    let leaf = ca.issue_with(SERVER_NAME, 1, &rcgen::PKCS_ECDSA_P256_SHA256, |p| {
        p.not_before = rcgen::date_time_ymd(2090, 1, 1);
        p.not_after = rcgen::date_time_ymd(2091, 1, 1);
    });
    let config = write_box(dir.path(), "box", &leaf, &ca.pem, None);
    let err = credentials::load(&config).expect_err("not yet valid");
    assert!(
        matches!(err, CredentialError::CertNotYetValid { .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("is not valid before Sun, 01 Jan 2090 00:00:00 +0000: check the box's clock"),
        "{text}"
    );
}

#[test]
fn key_of_another_certificate_is_refused() {
    let ca = Ca::new("renkei test CA");
    let dir = tempdir();
    let config = write_box(dir.path(), "box", &ca.issue(SERVER_NAME, 1), &ca.pem, None);
    write_key(&config.private_key_file, &ca.issue(SERVER_NAME, 2).key_pem);
    match credentials::load(&config) {
        Err(CredentialError::KeyMismatch { cert, key }) => {
            assert_eq!(cert, config.certificate_file);
            assert_eq!(key, config.private_key_file);
        }
        other => panic!("expected KeyMismatch, got {other:?}"),
    }
}

#[test]
fn net4_box_certificate_from_another_ca_is_refused_at_load() {
    let ca = Ca::new("renkei test CA");
    let other = Ca::new("some other CA");
    let dir = tempdir();
    let config = write_box(
        dir.path(),
        "box",
        &other.issue(SERVER_NAME, 1),
        &ca.pem,
        None,
    );
    match credentials::load(&config) {
        Err(err @ CredentialError::NotIssuedByCa { .. }) => {
            let text = err.to_string();
            assert!(
                text.contains(&config.certificate_file.display().to_string()),
                "{text}"
            );
            assert!(
                text.contains(&config.ca_file.display().to_string()),
                "{text}"
            );
            assert!(text.contains("UnknownIssuer"), "{text}");
        }
        other => panic!("expected NotIssuedByCa, got {other:?}"),
    }
}

#[test]
fn net4_box_certificate_revoked_by_its_own_crl_is_refused_at_load() {
    let ca = Ca::new("renkei test CA");
    let dir = tempdir();
    let config = write_box(
        dir.path(),
        "box",
        &ca.issue(SERVER_NAME, 7),
        &ca.pem,
        Some(&ca.crl(&[7])),
    );
    match credentials::load(&config) {
        Err(CredentialError::Revoked { path, crl_path, .. }) => {
            assert_eq!(path, config.certificate_file);
            assert_eq!(Some(crl_path), config.crl_file);
        }
        other => panic!("expected Revoked, got {other:?}"),
    }
    // The same CRL revoking another box lets this one load.
    let config = write_box(
        dir.path(),
        "box",
        &ca.issue(SERVER_NAME, 8),
        &ca.pem,
        Some(&ca.crl(&[7])),
    );
    credentials::load(&config).expect("unrevoked box");
}

#[test]
fn net4_crl_from_another_issuer_is_refused_at_load_naming_the_file() {
    let ca = Ca::new("renkei test CA");
    let other = Ca::new("some other CA");
    let dir = tempdir();
    // With the other CA's CRL, every client of this CA would have an unknown revocation
    // status and be refused: the load fails instead, naming the CRL and the CA file.
    let config = write_box(
        dir.path(),
        "box",
        &ca.issue(SERVER_NAME, 9),
        &ca.pem,
        Some(&other.crl(&[])),
    );
    let crl_path = config.crl_file.clone().expect("crl path");
    match credentials::load(&config) {
        Err(err @ CredentialError::CrlNotFromCa { .. }) => {
            let text = err.to_string();
            assert!(text.contains(&crl_path.display().to_string()), "{text}");
            assert!(
                text.contains(&config.ca_file.display().to_string()),
                "{text}"
            );
            assert!(text.contains("some other CA"), "{text}");
        }
        other => panic!("expected CrlNotFromCa, got {other:?}"),
    }
    // The same CRL beside the CA that issued it loads.
    credentials::load(&write_box(
        dir.path(),
        "o",
        &other.issue(SERVER_NAME, 1),
        &other.pem,
        Some(&other.crl(&[])),
    ))
    .expect("the CRL of its own CA");
}

#[test]
fn net4_box_certificate_that_may_not_sign_is_refused_at_load() {
    let ca = Ca::new("renkei test CA");
    let dir = tempdir();
    let leaf = ca.issue_with(SERVER_NAME, 1, &rcgen::PKCS_ECDSA_P256_SHA256, |params| {
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    });
    let config = write_box(dir.path(), "box", &leaf, &ca.pem, None);
    match credentials::load(&config) {
        Err(err @ CredentialError::NoSigningUsage { .. }) => {
            let text = err.to_string();
            assert!(text.contains("digitalSignature"), "{text}");
            assert!(
                text.contains(&config.certificate_file.display().to_string()),
                "{text}"
            );
        }
        other => panic!("expected NoSigningUsage, got {other:?}"),
    }
}

#[test]
fn box_certificate_for_server_use_only_loads() {
    // An inbound-only box needs no clientAuth; the missing use is a warning, not a refusal.
    let ca = Ca::new("renkei test CA");
    let dir = tempdir();
    let leaf = ca.issue_with(SERVER_NAME, 1, &rcgen::PKCS_ECDSA_P256_SHA256, |params| {
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    });
    let config = write_box(dir.path(), "box", &leaf, &ca.pem, None);
    credentials::load(&config).expect("server-only certificate");
}

#[test]
fn key_file_readable_by_others_is_refused() {
    let ca = Ca::new("renkei test CA");
    let dir = tempdir();
    let config = write_box(dir.path(), "box", &ca.issue(SERVER_NAME, 1), &ca.pem, None);
    fs::set_permissions(&config.private_key_file, fs::Permissions::from_mode(0o644))
        .expect("chmod");
    assert!(matches!(
        credentials::load(&config),
        Err(CredentialError::KeyFileTooOpen { mode: 0o644, .. })
    ));
}

#[test]
fn int1_garbage_and_missing_files_are_errors_not_panics() {
    let ca = Ca::new("renkei test CA");
    let dir = tempdir();
    let config = write_box(dir.path(), "box", &ca.issue(SERVER_NAME, 1), &ca.pem, None);

    fs::write(&config.ca_file, "not a certificate\n").expect("write");
    assert!(matches!(
        credentials::load(&config),
        Err(CredentialError::NoCertificates { .. })
    ));

    fs::write(
        &config.ca_file,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    assert!(matches!(
        credentials::load(&config),
        Err(CredentialError::BadCertificate { .. })
    ));

    let missing = TlsConfig {
        crl_file: Some(dir.path().join("missing-crl.pem")),
        ..config.clone()
    };
    fs::write(&config.ca_file, &ca.pem).expect("write");
    assert!(matches!(
        credentials::load(&missing),
        Err(CredentialError::Unreadable { .. })
    ));
}

#[test]
fn net4_der_crl_is_accepted() {
    let ca = Ca::new("renkei test CA");
    let dir = tempdir();
    let crl_pem = ca.crl(&[5]);
    let config = write_box(
        dir.path(),
        "box",
        &ca.issue(SERVER_NAME, 1),
        &ca.pem,
        Some(&crl_pem),
    );
    let path = config.crl_file.clone().expect("crl path");
    let der = CertificateRevocationListDer::from_pem_slice(crl_pem.as_bytes()).expect("CRL PEM");
    fs::write(&path, der.as_ref()).expect("write DER CRL");
    let creds = credentials::load(&config).expect("load");
    assert_eq!(creds.crls.len(), 1);
}

#[test]
fn net5_rsa_1024_is_refused_and_rsa_2048_accepted() {
    let dir = tempdir();
    let d = dir.path();
    for bits in ["1024", "2048"] {
        // An RSA operator CA and a box certificate it issued, both of `bits`.
        let (ca_key, ca_cert) = (format!("ca{bits}-key.pem"), format!("ca{bits}-cert.pem"));
        let (key, csr, cert) = (
            format!("rsa{bits}-key.pem"),
            format!("rsa{bits}.csr"),
            format!("rsa{bits}-cert.pem"),
        );
        let newkey = format!("rsa:{bits}");
        let ext = "leaf.ext";
        fs::write(
            d.join(ext),
            "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n",
        )
        .expect("extensions");
        let made = openssl(
            d,
            &[
                "req",
                "-x509",
                "-newkey",
                &newkey,
                "-nodes",
                "-sha256",
                "-days",
                "30",
                "-subj",
                "/CN=rsa CA",
                "-keyout",
                &ca_key,
                "-out",
                &ca_cert,
            ],
        )
        .and_then(|()| {
            openssl(
                d,
                &[
                    "req",
                    "-new",
                    "-newkey",
                    &newkey,
                    "-nodes",
                    "-sha256",
                    "-subj",
                    "/CN=rsa.renkei.example",
                    "-keyout",
                    &key,
                    "-out",
                    &csr,
                ],
            )
        })
        .and_then(|()| {
            openssl(
                d,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    &ca_cert,
                    "-CAkey",
                    &ca_key,
                    "-set_serial",
                    "9",
                    "-sha256",
                    "-days",
                    "30",
                    "-extfile",
                    ext,
                    "-out",
                    &cert,
                ],
            )
        });
        if made.is_none() {
            return;
        }
        fs::set_permissions(d.join(&key), fs::Permissions::from_mode(0o600)).expect("chmod");
        let config = TlsConfig {
            certificate_file: d.join(&cert),
            private_key_file: d.join(&key),
            ca_file: d.join(&ca_cert),
            crl_file: None,
        };
        let result = credentials::load(&config);
        if bits == "1024" {
            match result {
                Err(CredentialError::WeakRsaKey {
                    bits: 1024, path, ..
                }) => {
                    assert_eq!(path, config.certificate_file)
                }
                other => panic!("expected WeakRsaKey, got {other:?}"),
            }
        } else {
            result.expect("RSA 2048 is allowed");
        }
    }
}

#[test]
fn net5_sha1_signed_certificate_is_refused() {
    let dir = tempdir();
    let d = dir.path();
    let made = openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-sha1",
            "-days",
            "30",
            "-subj",
            "/CN=sha1.renkei.example",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
        ],
    );
    if made.is_none() {
        return;
    }
    fs::set_permissions(d.join("key.pem"), fs::Permissions::from_mode(0o600)).expect("chmod");
    let config = TlsConfig {
        certificate_file: d.join("cert.pem"),
        private_key_file: d.join("key.pem"),
        ca_file: d.join("cert.pem"),
        crl_file: None,
    };
    match credentials::load(&config) {
        Err(CredentialError::Sha1Signature {
            path,
            subject,
            algorithm,
        }) => {
            assert_eq!(path, config.certificate_file);
            assert!(subject.contains("sha1.renkei.example"), "{subject}");
            assert_eq!(algorithm, "ecdsa-with-SHA1");
        }
        other => panic!("expected Sha1Signature, got {other:?}"),
    }

    // A good box certificate with a SHA-1 CA in the bundle is refused too.
    let ca = Ca::new("renkei test CA");
    let good = write_box(d, "box", &ca.issue(SERVER_NAME, 1), &ca.pem, None);
    let bundle = format!(
        "{}{}",
        ca.pem,
        fs::read_to_string(d.join("cert.pem")).expect("read")
    );
    fs::write(&good.ca_file, bundle).expect("write");
    match credentials::load(&good) {
        Err(CredentialError::Sha1Signature { path, .. }) => assert_eq!(path, good.ca_file),
        other => panic!("expected Sha1Signature, got {other:?}"),
    }
}

#[test]
fn p384_and_ed25519_keys_are_accepted() {
    let ca = Ca::new("renkei test CA");
    let dir = tempdir();
    for (name, alg) in [
        ("p384", &rcgen::PKCS_ECDSA_P384_SHA384),
        ("ed25519", &rcgen::PKCS_ED25519),
    ] {
        let leaf = ca.issue_with(SERVER_NAME, 1, alg, |_| {});
        let config = write_box(dir.path(), name, &leaf, &ca.pem, None);
        credentials::load(&config).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn ecdsa_p384_issuer_signing_with_sha256_is_refused() {
    let dir = tempdir();
    let d = dir.path();
    // OpenSSL's default digest for a P-384 key is SHA-256: exactly the pairing the profile
    // does not allow.
    let made = openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-384",
            "-nodes",
            "-sha256",
            "-days",
            "30",
            "-subj",
            "/CN=p384-sha256.renkei.example",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
        ],
    );
    if made.is_none() {
        return;
    }
    fs::set_permissions(d.join("key.pem"), fs::Permissions::from_mode(0o600)).expect("chmod");
    let config = TlsConfig {
        certificate_file: d.join("cert.pem"),
        private_key_file: d.join("key.pem"),
        ca_file: d.join("cert.pem"),
        crl_file: None,
    };
    match credentials::load(&config) {
        Err(CredentialError::UnsupportedSignature { algorithm, .. }) => {
            assert!(algorithm.contains("P-384 with SHA-256"), "{algorithm}")
        }
        other => panic!("expected UnsupportedSignature, got {other:?}"),
    }
}
