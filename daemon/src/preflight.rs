//! What `renkei run` refuses at start, checked by one function that `renkei check` runs too
//! ("nginx -t": nothing `check` accepts may make `run` exit on the same files).
//!
//! Beyond the rules of `crate::config`, `run` loads the TLS files of `[tls]` and of the
//! management API and builds the profile's configurations from them (key matches certificate,
//! key types, curves, RSA sizes, signature algorithms, validity, chain to the CA, revocation),
//! and refuses a config whose `[meta] box` is not the box its certificate names (AUTH-4). Both
//! are the very functions the running parts use ([`TlsMaterial::load`], [`management_tls`]),
//! reported at the config field that names the file.

use std::path::{Path, PathBuf};

use crate::config::{self, Config, Diagnostics, FieldPath, Files, Problem};
use crate::control::server::management_tls;
use crate::tls::credentials::certificate_identities;
use crate::tls::{StoreError, TlsMaterial};

/// Reads a config file and checks everything `run` checks before it starts anything.
pub fn load(path: &Path) -> Result<Config, Diagnostics> {
    config::load_with(path, Files::ReadThen(&problems))
}

/// [`load`] for config text held in memory, checked as if it were the file at `path` (its
/// relative paths from that file's folder): the confirmed config a full disk kept from being
/// written back.
pub fn load_text(text: &str, path: &Path) -> Result<Config, Diagnostics> {
    let base_dir = path.parent().unwrap_or(Path::new("."));
    config::load_str_with(text, path, base_dir, Files::ReadThen(&problems))
}

/// The problems `run` would refuse `config` for, beyond the config's own rules.
pub fn problems(config: &Config) -> Vec<Problem> {
    let mut problems: Vec<Problem> = Vec::new();
    let Some(tls) = &config.tls else {
        return problems;
    };
    let tls_fields = {
        let mut fields = vec![
            ("certificate_file", tls.certificate_file.clone()),
            ("private_key_file", tls.private_key_file.clone()),
            ("ca_file", tls.ca_file.clone()),
        ];
        if let Some(crl) = &tls.crl_file {
            fields.push(("crl_file", crl.clone()));
        }
        fields
            .into_iter()
            .map(|(key, file)| (FieldPath::root("tls").key(key), file))
            .collect::<Vec<_>>()
    };
    if let Err(e) = TlsMaterial::load(tls) {
        problems.push(at_file(&e, &tls_fields, FieldPath::root("tls")));
    }
    if let Some(management) = &config.management {
        let field = FieldPath::root("management").key("operator_ca_file");
        let mut fields = vec![(field, management.operator_ca_file.clone())];
        if let Some(crl) = &management.operator_crl_file {
            fields.push((
                FieldPath::root("management").key("operator_crl_file"),
                crl.clone(),
            ));
        }
        fields.extend(tls_fields.iter().cloned());
        if let Err(e) = TlsMaterial::load(&management_tls(management, tls)) {
            let problem = at_file(&e, &fields, FieldPath::root("management"));
            // A broken box certificate fails both loads with the same words: say it once.
            if !problems.iter().any(|p| p.message == problem.message) {
                problems.push(problem);
            }
        }
    }
    if let (Some(name), true) = (&config.meta.box_identity, problems.is_empty()) {
        let file = &tls.certificate_file;
        let problem = match certificate_identities(file) {
            Ok(identities) if identities.carries(name) => None,
            Ok(identities) => Some(format!(
                "{name:?} is not this box: its certificate {} carries {}; this config is for another box",
                file.display(),
                identities.list()
            )),
            Err(e) => Some(e.to_string()),
        };
        if let Some(message) = problem {
            problems.push(Problem {
                path: FieldPath::root("meta").key("box"),
                message,
            });
        }
    }
    problems
}

/// A load error at the field naming the file it is about (`fallback` when none does).
fn at_file(error: &StoreError, fields: &[(FieldPath, PathBuf)], fallback: FieldPath) -> Problem {
    let path = match error {
        StoreError::Credentials(e) => fields
            .iter()
            .find(|(_, file)| file == e.path())
            .map_or(fallback, |(field, _)| field.clone()),
        StoreError::Profile(_) | StoreError::Task(_) => fallback,
    };
    Problem {
        path,
        message: error.to_string(),
    }
}
