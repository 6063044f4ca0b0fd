//! The management API's request path for a config push and a confirm, past TLS and the
//! operator check: the `Renkei-Signature` header text, the pushed body (size, signature, config
//! rules, `[meta] box` against the box's certificate, version, settings a push may not change:
//! `control::check_push`), the confirm body (`confirm_version`) and the hub preference body
//! (`preferred_hub`).
//!
//! Input: one flag byte, the signature header up to the first `\n`, then the body. Flag bit 0
//! set: the harness, which holds the operator's signing key, signs the body itself, so mutated
//! configs get past the signature and reach every rule after it (an authenticated push).
#![no_main]

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use renkei::config::{self, Config, Files};
use renkei::control::{self, server};
use renkei::signing::SigningKeyPair;

/// The config the box runs: the repository's example hospital box, trusting the harness's
/// operator key inline, with a certificate for `hospital.renkei.example` (its `[meta] box`).
struct Running {
    config: Config,
    operator: SigningKeyPair,
    config_path: PathBuf,
}

fn running() -> &'static Running {
    static RUNNING: OnceLock<Running> = OnceLock::new();
    RUNNING.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("renkei-fuzz-mgmt-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("fuzz scratch directory");
        let key = rcgen::KeyPair::generate().expect("box key");
        let params = rcgen::CertificateParams::new(vec!["hospital.renkei.example".to_string()])
            .expect("box certificate parameters");
        let cert = params.self_signed(&key).expect("box certificate");
        let cert_path = dir.join("box.crt");
        fs::write(&cert_path, cert.pem()).expect("box certificate file");

        let text = include_str!("../../config/disclosing.toml");
        let config_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/disclosing.toml");
        let base = config_path.parent().expect("config directory");
        let mut config = config::load_str_with(text, &config_path, base, Files::Skip)
            .expect("the example config is valid");
        let operator = SigningKeyPair::generate();
        let management = config
            .management
            .as_mut()
            .expect("example has [management]");
        management.operator_signing_key_file = None;
        management.operator_signing_key = Some(operator.public().to_pem());
        config
            .tls
            .as_mut()
            .expect("example has [tls]")
            .certificate_file = cert_path;
        Running {
            config,
            operator,
            config_path,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let (header, body) = match rest.iter().position(|b| *b == b'\n') {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &[][..]),
    };
    let running = running();
    let signed;
    let signature = if flags & 1 == 1 {
        signed = running.operator.sign(body);
        Some(signed.as_str())
    } else {
        std::str::from_utf8(header).ok()
    };
    let outcome = match control::check_push(
        &running.config,
        &running.config_path,
        body,
        signature,
        Files::Skip,
    ) {
        Ok(accepted) => format!("accepted: {}", accepted.config.summary()),
        Err(refused) => format!("{} {refused}", refused.reason.http_status()),
    };
    // How far a seed gets, for whoever maintains the seeds: `RENKEI_FUZZ_DEBUG=1 <binary> <file>`.
    if std::env::var_os("RENKEI_FUZZ_DEBUG").is_some() {
        eprintln!("management_request: {outcome}");
    }
    let _ = server::confirm_version(body);
    let _ = server::preferred_hub(body);
});
