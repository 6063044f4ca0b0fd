//! Hot reload: a broken file never replaces working material; a new valid one is published.

mod tls_common;

use std::fs;
use std::sync::Arc;
use std::time::Duration;

use renkei::config::MinTls;
use renkei::state::events::TlsFileProblem;
use renkei::tls::{CredentialError, CredentialStore, StoreError};
use tls_common::{handshake, tempdir, write_box, write_key, Ca, CLIENT_NAME, SERVER_NAME};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn broken_file_keeps_the_old_material_and_reports_the_error() {
    let ca = Ca::new("renkei test CA");
    let dir = tempdir();
    let config = write_box(dir.path(), "box", &ca.issue(SERVER_NAME, 1), &ca.pem, None);
    let store = CredentialStore::open(config.clone()).expect("open");
    let rx = store.subscribe();
    let before = store.current();
    assert_eq!(before.serial, "01");

    fs::write(&config.certificate_file, "-----BEGIN CERTIFICATE-----\n").expect("write");
    let err = store.reload().await.expect_err("broken certificate");
    assert!(
        matches!(err, StoreError::Credentials(CredentialError::BadPem { .. })),
        "{err:?}"
    );
    // The event's stable word, which the page says in its language.
    assert_eq!(err.problem(), TlsFileProblem::Malformed);
    assert!(Arc::ptr_eq(&before, &store.current()));
    assert!(!rx.has_changed().expect("sender alive"));

    // A valid certificate with the wrong key is refused the same way.
    let next = ca.issue(SERVER_NAME, 2);
    fs::write(&config.certificate_file, &next.cert_pem).expect("write");
    let err = store.reload().await.expect_err("key mismatch");
    assert!(
        matches!(
            err,
            StoreError::Credentials(CredentialError::KeyMismatch { .. })
        ),
        "{err:?}"
    );
    assert_eq!(err.problem(), TlsFileProblem::KeyMismatch);
    assert!(Arc::ptr_eq(&before, &store.current()));

    // The old material still serves handshakes.
    let client_cfg = write_box(
        dir.path(),
        "client",
        &ca.issue(CLIENT_NAME, 3),
        &ca.pem,
        None,
    );
    let client = CredentialStore::open(client_cfg).expect("client");
    handshake(
        store.current().server_config(MinTls::Tls13),
        client.current().client_config(MinTls::Tls13),
    )
    .await
    .expect("old material still works");
}

#[tokio::test]
async fn new_valid_certificate_is_published() {
    let ca = Ca::new("renkei test CA");
    let dir = tempdir();
    let config = write_box(dir.path(), "box", &ca.issue(SERVER_NAME, 1), &ca.pem, None);
    let store = CredentialStore::open(config.clone()).expect("open");
    let mut rx = store.subscribe();

    let next = ca.issue(SERVER_NAME, 0x1234);
    fs::write(&config.certificate_file, &next.cert_pem).expect("write cert");
    write_key(&config.private_key_file, &next.key_pem);
    let published = store.reload().await.expect("reload");
    assert_eq!(published.serial, "12:34");

    tokio::time::timeout(WAIT, rx.changed())
        .await
        .expect("in time")
        .expect("sender alive");
    assert_eq!(rx.borrow_and_update().serial, "12:34");
    assert_eq!(store.current().serial, "12:34");
}

#[tokio::test]
async fn watcher_reloads_when_files_change() {
    let ca = Ca::new("renkei test CA");
    let dir = tempdir();
    let config = write_box(dir.path(), "box", &ca.issue(SERVER_NAME, 1), &ca.pem, None);
    let store = Arc::new(CredentialStore::open(config.clone()).expect("open"));
    let mut rx = store.subscribe();
    let watcher = store.spawn_watcher(Duration::from_millis(50));

    // Replace both files by rename, as an operator's tooling would.
    let next = ca.issue(SERVER_NAME, 0x42);
    let tmp_cert = dir.path().join("new-cert.pem");
    let tmp_key = dir.path().join("new-key.pem");
    fs::write(&tmp_cert, &next.cert_pem).expect("write");
    write_key(&tmp_key, &next.key_pem);
    fs::rename(&tmp_key, &config.private_key_file).expect("rename key");
    fs::rename(&tmp_cert, &config.certificate_file).expect("rename cert");

    tokio::time::timeout(WAIT, async {
        loop {
            rx.changed().await.expect("sender alive");
            if rx.borrow_and_update().serial == "42" {
                break;
            }
        }
    })
    .await
    .expect("watcher published the new certificate");

    // Dropping the store ends the watcher.
    drop(rx);
    drop(store);
    tokio::time::timeout(WAIT, watcher)
        .await
        .expect("watcher stops")
        .expect("watcher did not panic");
}
