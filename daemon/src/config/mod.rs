//! Configuration: the TOML schema, loading with precise error locations, and semantic checks.
//!
//! `load` is the only way the daemon gets a `Config`: a config that fails any rule never reaches
//! the running parts. Paths in a config are relative to the file that names them.
//!
//! How far a check looks is a [`Files`]: offline (text only, for the operator's machine), the
//! files the config names, or those and the deeper checks of a layer above this one (the TLS
//! files as `run` loads them: `crate::preflight`).

pub(crate) mod diagnostic;
mod locate;
pub mod proposal;
mod schema;
mod validate;

use std::path::{Path, PathBuf};

pub use diagnostic::{Diagnostic, Diagnostics};
pub use locate::{FieldPath, Segment};
pub use schema::*;
pub use validate::{is_dns_name, parse_host_port, Problem};

use diagnostic::{whole_file, LineIndex};
use locate::SpanMap;

/// Where `renkei` looks for its config when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/renkei/renkei.toml";

/// Config files larger than this are refused unread: a real one is a few KiB.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// What a check may look at besides the config text.
#[derive(Clone, Copy)]
pub enum Files<'a> {
    /// Nothing: syntax, types and rules only. The operator's machine before `renkei sign`
    /// has none of the box's key files.
    Skip,
    /// Text only, then `deeper` on a config that passed every rule (`renkei sign` requires
    /// `[meta] box` this way).
    SkipThen(&'a dyn Fn(&Config) -> Vec<Problem>),
    /// The files the config names: present, regular, private keys 0600, keys parse.
    Read,
    /// Those, then `deeper` on a config that passed every rule: checks of a layer above this
    /// module, reported at the field they concern like any rule.
    ReadThen(&'a dyn Fn(&Config) -> Vec<Problem>),
}

/// Reads, parses and checks a config file with the files it names.
pub fn load(path: &Path) -> Result<Config, Diagnostics> {
    load_with(path, Files::Read)
}

/// Reads, parses and checks a config file as far as `files` says.
pub fn load_with(path: &Path, files: Files<'_>) -> Result<Config, Diagnostics> {
    let text = read_bounded(path).map_err(|d| Diagnostics(vec![d]))?;
    let base_dir = path.parent().unwrap_or(Path::new("."));
    load_str_with(&text, path, base_dir, files)
}

/// Parses and checks config text as if it came from `file`, resolving relative paths against
/// `base_dir`. Used for pushed configs, which arrive as bytes.
pub fn load_str(text: &str, file: &Path, base_dir: &Path) -> Result<Config, Diagnostics> {
    load_str_with(text, file, base_dir, Files::Read)
}

/// [`load_str`] as far as `files` says.
pub fn load_str_with(
    text: &str,
    file: &Path,
    base_dir: &Path,
    files: Files<'_>,
) -> Result<Config, Diagnostics> {
    let index = LineIndex::new(text);
    let spans = SpanMap::parse(text);
    let at = |offset: usize, field: String, message: String| {
        let (line, column) = index.position(offset);
        Diagnostic {
            file: file.to_path_buf(),
            line,
            column,
            field,
            message,
        }
    };

    let mut config: Config = match toml::from_str(text) {
        Ok(config) => config,
        Err(e) => {
            let offset = e.span().map_or(0, |s| s.start);
            let field = spans
                .as_ref()
                .map(|s| s.path_at(offset).to_string())
                .unwrap_or_default();
            let message = e.message().trim_end().replace('\n', " ");
            return Err(Diagnostics(vec![at(offset, field, message)]));
        }
    };
    resolve_paths(&mut config, base_dir);

    let read_files = matches!(files, Files::Read | Files::ReadThen(_));
    let mut problems = validate::validate(&config, read_files);
    if let (true, Files::ReadThen(deeper) | Files::SkipThen(deeper)) = (problems.is_empty(), files)
    {
        problems = deeper(&config);
    }
    if problems.is_empty() {
        return Ok(config);
    }
    let mut diagnostics: Vec<Diagnostic> = problems
        .into_iter()
        .map(|p| {
            let offset = spans.as_ref().map_or(0, |s| s.span_of(&p.path).start);
            at(offset, p.path.to_string(), p.message)
        })
        .collect();
    diagnostics.sort_by_key(|d| (d.line, d.column));
    Err(Diagnostics(diagnostics))
}

fn read_bounded(path: &Path) -> Result<String, Diagnostic> {
    use std::io::Read;
    let file = std::fs::File::open(path)
        .map_err(|e| whole_file(path, format!("cannot read config: {e}")))?;
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| whole_file(path, format!("cannot read config: {e}")))?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(whole_file(
            path,
            format!("config is larger than {MAX_CONFIG_BYTES} bytes"),
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        let (line, column) = {
            let valid = e.utf8_error().valid_up_to();
            let text = String::from_utf8_lossy(&e.as_bytes()[..valid]).into_owned();
            LineIndex::new(&text).position(valid)
        };
        Diagnostic {
            file: path.to_path_buf(),
            line,
            column,
            field: String::new(),
            message: "config is not valid UTF-8".into(),
        }
    })
}

fn resolve(base_dir: &Path, path: &mut PathBuf) {
    if path.is_relative() {
        *path = base_dir.join(&*path);
    }
}

/// Makes every file named in the config absolute, relative to the config's directory.
fn resolve_paths(config: &mut Config, base_dir: &Path) {
    if let Some(tunnel) = &mut config.tunnel {
        resolve(base_dir, &mut tunnel.private_key_file);
    }
    if let Some(tls) = &mut config.tls {
        resolve(base_dir, &mut tls.certificate_file);
        resolve(base_dir, &mut tls.private_key_file);
        resolve(base_dir, &mut tls.ca_file);
        if let Some(crl) = &mut tls.crl_file {
            resolve(base_dir, crl);
        }
    }
    if let Some(status) = &mut config.status {
        if let Some(cert) = &mut status.certificate_file {
            resolve(base_dir, cert);
        }
        if let Some(key) = &mut status.private_key_file {
            resolve(base_dir, key);
        }
    }
    if let Some(management) = &mut config.management {
        resolve(base_dir, &mut management.operator_ca_file);
        if let Some(crl) = &mut management.operator_crl_file {
            resolve(base_dir, crl);
        }
        if let Some(key) = &mut management.operator_signing_key_file {
            resolve(base_dir, key);
        }
        if let Some(next) = &mut management.next_operator_signing_key_file {
            resolve(base_dir, next);
        }
    }
    if let Some(update) = &mut config.update {
        resolve(base_dir, &mut update.ca_file);
    }
}

impl Config {
    /// A one-line summary for `renkei check` and the start-up log.
    pub fn summary(&self) -> String {
        let inbound = self
            .services
            .iter()
            .filter(|s| s.direction == Direction::Inbound)
            .count();
        let link = match (&self.tunnel, &self.closed, &self.ipsec) {
            (None, None, Some(ipsec)) => format!(
                "ipsec {} to {} ({}) {} to {} data-centre prefix(es)",
                ipsec.address,
                ipsec.remote_address,
                ipsec.remote_id,
                self.policy_mode().as_str(),
                ipsec.data_centre_prefixes.len()
            ),
            (Some(tunnel), _, _) => format!(
                "tunnel {} {} with {} peer(s)",
                tunnel.address,
                self.policy_mode().as_str(),
                tunnel.peers.len()
            ),
            (None, Some(closed), _) => format!(
                "closed network {} on {} {} to {} data-centre prefix(es)",
                closed.address,
                closed.interface,
                self.policy_mode().as_str(),
                closed.data_centre_prefixes.len()
            ),
            (None, None, None) => "no link to the data centre".to_string(),
        };
        format!(
            "facility {:?} role {} version {}: {link}, {} outbound and {} inbound service(s)",
            self.facility.name,
            self.facility.role.as_str(),
            self.meta.version,
            self.services.len() - inbound,
            inbound,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file a config names is found beside the config, wherever the daemon was started:
    /// the management API's CRL was once left relative to the working directory.
    #[test]
    fn int1_net4_every_file_path_is_relative_to_the_config() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/disclosing.toml");
        let text = std::fs::read_to_string(&example).expect("example config");
        let text = text.replace(
            "operator_ca_file = \"operator/ca.crt\"",
            "operator_ca_file = \"operator/ca.crt\"\noperator_crl_file = \"operator/ca.crl\"",
        );
        assert!(text.contains("operator_crl_file"), "the example changed");
        let base = Path::new("/etc/renkei");
        let config = load_str_with(&text, &base.join("renkei.toml"), base, Files::Skip)
            .expect("the example with a CRL is valid");
        let management = config.management.expect("[management]");
        assert_eq!(management.operator_ca_file, base.join("operator/ca.crt"));
        assert_eq!(
            management.operator_crl_file,
            Some(base.join("operator/ca.crl"))
        );
        let tls = config.tls.expect("[tls]");
        assert!(tls.certificate_file.is_absolute() && tls.ca_file.is_absolute());
    }
}
