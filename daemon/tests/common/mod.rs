//! Test fixtures shared by the configuration tests.
//!
//! A [`Fixture`] is a temporary directory holding every file the example configs in `config/`
//! name, at the same relative paths, so a config copied into it checks out valid:
//!
//! | path                       | what                                                        |
//! |----------------------------|-------------------------------------------------------------|
//! | `wg.key` (+ `wg.key.pub`)  | fresh WireGuard key pair, mode 0600                         |
//! | `tls/operator-ca.crt`      | PEM CA certificate (operator CA)                            |
//! | `tls/box.crt`, `tls/box.key` | facility leaf certificate signed by that CA, key 0600     |
//! |                            | (names both example facilities: `hospital.` and `clinic.renkei.example`) |
//! | `tls/hub.crt`, `tls/hub.key` | hub leaf certificate signed by that CA, key 0600          |
//! | `operator/ca.crt`          | the same operator CA (it signs the operator's client certificates and the boxes') |
//! | `operator/signing.pub.pem` | PEM ECDSA P-256 public key (config signing key)             |
//!
//! and, for negative tests:
//!
//! | `open.key`                 | valid WireGuard private key, but mode 0644                  |
//! | `garbage.key`              | mode 0600, but not a WireGuard key                          |
//!
//! Config text written with [`Fixture::write_config`] has `$OWN_PUBLIC_KEY` replaced by the
//! base64 public key of the fixture's `wg.key`, so a test can name the box's own key.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tempfile::TempDir;

/// The placeholder a config may use for the fixture box's own WireGuard public key.
pub const OWN_PUBLIC_KEY: &str = "$OWN_PUBLIC_KEY";

/// The example configs, by file name, as shipped in `config/`.
pub const EXAMPLES: [(&str, &str); 3] = [
    ("hub.toml", include_str!("../../../config/hub.toml")),
    (
        "disclosing.toml",
        include_str!("../../../config/disclosing.toml"),
    ),
    ("viewing.toml", include_str!("../../../config/viewing.toml")),
];

/// A directory with every file the example configs refer to.
pub struct Fixture {
    dir: TempDir,
    own_public_key: String,
}

impl Fixture {
    /// Creates the directory and all its files.
    pub fn new() -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix("renkei-config-")
            .tempdir()
            .expect("create temporary directory");
        let root = dir.path();
        for sub in ["tls", "operator"] {
            fs::create_dir(root.join(sub)).expect("create fixture subdirectory");
        }

        let public = renkei::keys::write_keypair(&root.join("wg.key")).expect("write wg.key");
        let own_public_key = renkei::keys::encode_key(&public);

        renkei::keys::write_keypair(&root.join("open.key")).expect("write open.key");
        fs::set_permissions(root.join("open.key"), fs::Permissions::from_mode(0o644))
            .expect("chmod open.key");
        write_private(&root.join("garbage.key"), "this is not a key\n");

        let (ca_pem, issuer) = ca("Renkei Test Operator CA");
        fs::write(root.join("tls/operator-ca.crt"), &ca_pem).expect("write operator-ca.crt");
        for (name, dns) in [
            (
                "box",
                &["hospital.renkei.example", "clinic.renkei.example"][..],
            ),
            ("hub", &["hub.renkei.example"][..]),
        ] {
            let (cert, key) = leaf(dns, &issuer);
            fs::write(root.join(format!("tls/{name}.crt")), cert).expect("write leaf cert");
            write_private(&root.join(format!("tls/{name}.key")), &key);
        }

        // The management API trusts the CA that issued the box's certificate too: `run` loads
        // the box's certificate against it, and so does `renkei check`.
        fs::write(root.join("operator/ca.crt"), &ca_pem).expect("write operator/ca.crt");
        let signing = KeyPair::generate().expect("generate signing key");
        fs::write(
            root.join("operator/signing.pub.pem"),
            signing.public_key_pem(),
        )
        .expect("write signing.pub.pem");

        Fixture {
            dir,
            own_public_key,
        }
    }

    /// The fixture directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The base64 public key of `wg.key`.
    pub fn own_public_key(&self) -> &str {
        &self.own_public_key
    }

    /// `text` with `$OWN_PUBLIC_KEY` replaced by the fixture's own public key.
    pub fn substitute(&self, text: &str) -> String {
        text.replace(OWN_PUBLIC_KEY, &self.own_public_key)
    }

    /// Writes config text (after [`Fixture::substitute`]) as `name` in the fixture directory.
    pub fn write_config(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path().join(name);
        fs::write(&path, self.substitute(text)).expect("write config");
        path
    }

    /// Runs `renkei check --config <config>` with the real binary.
    pub fn check(&self, config: &Path) -> Output {
        self.renkei(&["check", "--config"], config)
    }

    /// Runs `renkei <args> <config>` with the real binary in the fixture directory.
    pub fn renkei(&self, args: &[&str], config: &Path) -> Output {
        Command::new(env!("CARGO_BIN_EXE_renkei"))
            .args(args)
            .arg(config)
            .current_dir(self.path())
            .output()
            .expect("run renkei")
    }
}

/// Writes a file with mode 0600 from the start.
fn write_private(path: &Path, contents: &str) {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .expect("create private file");
    file.write_all(contents.as_bytes())
        .expect("write private file");
}

/// A self-signed CA: its PEM certificate and an issuer for signing leaves.
fn ca(common_name: &str) -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().expect("generate CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).expect("self-sign CA");
    (cert.pem(), Issuer::new(params, key))
}

/// A leaf certificate for the DNS names `dns` (the first is also the CN) signed by `issuer`:
/// PEM certificate and PEM PKCS#8 key.
fn leaf(dns: &[&str], issuer: &Issuer<'static, KeyPair>) -> (String, String) {
    let key = KeyPair::generate().expect("generate leaf key");
    let names: Vec<String> = dns.iter().map(|d| d.to_string()).collect();
    let mut params = CertificateParams::new(names).expect("leaf params");
    params.distinguished_name.push(DnType::CommonName, dns[0]);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params.signed_by(&key, issuer).expect("sign leaf");
    (cert.pem(), key.serialize_pem())
}
