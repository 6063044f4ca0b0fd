//! Keys and signatures made on a box or an operator's machine: the box's WireGuard and TLS keys
//! with its CSR, the operator's signing key, and signed configurations.

use std::path::PathBuf;
use std::process::ExitCode;

use renkei::config;

use crate::exit::{invalid, report};

pub(crate) fn keygen(
    private_key: &std::path::Path,
    tls: Option<(&std::path::Path, &std::path::Path)>,
) -> anyhow::Result<()> {
    use renkei::keys;
    let (public, _) = keys::ensure_keypair(private_key)?;
    let Some((tls_key, csr)) = tls else {
        println!("{}", keys::encode_key(&public));
        return Ok(());
    };
    let common_name = renkei::enrolment::csr_common_name(&public);
    let made = renkei::enrolment::ensure_tls_key_and_csr(tls_key, csr, &common_name)?;
    println!("renkei enrolment data (OPS-1): give these to the network operator");
    println!("  WireGuard public key: {}", keys::encode_key(&public));
    println!("  CSR SHA-256:          {}", made.csr_sha256);
    println!("  CSR file:             {} ({common_name})", csr.display());
    println!(
        "  Enrolment page:       https://<this box's LAN address>:{}/ once renkei.service runs (renkei status shows the address)",
        renkei::enrolment::DEFAULT_PAGE_PORT
    );
    Ok(())
}

/// The operator's signing key: only where `--private-key` says, and never over an existing
/// file (neither the key nor its `.pub`).
pub(crate) fn keygen_operator(private_key: Option<&std::path::Path>) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let Some(private_key) = private_key else {
        anyhow::bail!(
            "--operator needs --private-key FILE: the signing key stays at the operator, never on a box's key path"
        );
    };
    let public_path = renkei::keys::public_key_path(private_key);
    for path in [private_key, public_path.as_path()] {
        anyhow::ensure!(
            std::fs::symlink_metadata(path).is_err(),
            "{} exists; refusing to overwrite a key",
            path.display()
        );
    }
    let pair = renkei::signing::SigningKeyPair::generate();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(private_key)
        .map_err(|e| anyhow::anyhow!("{}: {e}", private_key.display()))?;
    file.write_all(pair.private_pem()?.as_bytes())?;
    file.sync_all()?;
    let public = pair.public();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&public_path)
        .map_err(|e| anyhow::anyhow!("{}: {e}", public_path.display()))?;
    file.write_all(public.to_pem().as_bytes())?;
    print!("{}", public.to_pem());
    println!("fingerprint {}", public.fingerprint());
    Ok(())
}

fn read_signing_key(key: &std::path::Path) -> anyhow::Result<renkei::signing::SigningKeyPair> {
    let text =
        std::fs::read_to_string(key).map_err(|e| anyhow::anyhow!("{}: {e}", key.display()))?;
    renkei::signing::SigningKeyPair::from_pem(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", key.display()))
}

pub(crate) fn signature_path(config: &std::path::Path) -> PathBuf {
    let mut name = config.as_os_str().to_owned();
    name.push(".sig");
    PathBuf::from(name)
}

/// Signs only what a box could accept: the offline check passes and `[meta] box` names the box
/// (a signature on a config without one would be refused by every box, AUTH-4).
pub(crate) fn sign(key: &std::path::Path, config: &std::path::Path) -> ExitCode {
    let names_a_box = |c: &config::Config| {
        match c.meta.box_identity {
        Some(_) => Vec::new(),
        None => vec![config::Problem {
            path: config::FieldPath::root("meta"),
            message: "names no box: add `box = \"<the box's certificate identity>\"`; a box refuses a pushed config that is not for it".to_string(),
        }],
    }
    };
    // The bytes checked are the bytes signed: read once.
    let bytes = match std::fs::read(config) {
        Ok(bytes) => bytes,
        Err(e) => return report(Err(anyhow::anyhow!("{}: {e}", config.display()))),
    };
    let base_dir = config.parent().unwrap_or(std::path::Path::new("."));
    let checked = match std::str::from_utf8(&bytes) {
        Ok(text) => config::load_str_with(
            text,
            config,
            base_dir,
            config::Files::SkipThen(&names_a_box),
        )
        .map(drop),
        // Read again for the line and column of the first bad byte; never signed either way.
        Err(_) => match config::load_with(config, config::Files::Skip) {
            Err(diagnostics) => Err(diagnostics),
            Ok(_) => Err(config::Diagnostics(vec![config::Diagnostic {
                file: config.to_path_buf(),
                line: 1,
                column: 1,
                field: String::new(),
                message: "config is not valid UTF-8".to_string(),
            }])),
        },
    };
    if let Err(diagnostics) = checked {
        eprintln!("renkei: refusing to sign {}", config.display());
        return invalid(config, &diagnostics);
    }
    report(write_signature(key, config, &bytes))
}

fn write_signature(
    key: &std::path::Path,
    config: &std::path::Path,
    bytes: &[u8],
) -> anyhow::Result<()> {
    let pair = read_signing_key(key)?;
    let out = signature_path(config);
    std::fs::write(&out, format!("{}\n", pair.sign(bytes)))
        .map_err(|e| anyhow::anyhow!("{}: {e}", out.display()))?;
    println!(
        "{}: signed by {}",
        out.display(),
        pair.public().fingerprint()
    );
    Ok(())
}
