//! The fleet inventory (`fleet.toml`): every box the operator manages, how to reach its
//! management API and which rollout group it is in, and the operator's credentials. It is
//! read like a box's config: untrusted text, every problem reported as `file:line:col: field:
//! message`, never a panic.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::config::diagnostic::{whole_file, LineIndex};
use crate::config::{Diagnostic, Diagnostics};

/// Largest inventory read: far above thousands of boxes, far below what could hurt.
pub const MAX_INVENTORY_BYTES: u64 = 4 * 1024 * 1024;
/// Longest box name (it names the box's config file in a push folder).
pub const MAX_BOX_NAME_CHARS: usize = 64;

/// The operator's client certificate and the CA of the boxes, as every box is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The operator's client certificate chain (PEM).
    pub certificate_file: PathBuf,
    /// Its private key.
    pub private_key_file: PathBuf,
    /// The CA that signed the boxes' certificates.
    pub ca_file: PathBuf,
}

/// One box of the fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoxEntry {
    /// The operator's name for the box; its config in a push folder is `<name>.toml`.
    pub name: String,
    /// Its management API (tunnel address and port).
    pub management: SocketAddr,
    /// The name in its TLS certificate.
    pub server_name: String,
    /// Its rollout group (`canary`, say).
    pub group: String,
}

/// A parsed, checked inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inventory {
    /// How every box is reached.
    pub credentials: Credentials,
    /// The boxes, in file order.
    pub boxes: Vec<BoxEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInventory {
    operator: RawOperator,
    #[serde(rename = "box", default)]
    boxes: Vec<RawBox>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOperator {
    certificate_file: PathBuf,
    private_key_file: PathBuf,
    ca_file: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBox {
    name: Spanned<String>,
    management: Spanned<String>,
    server_name: Spanned<String>,
    group: Spanned<String>,
}

/// Reads and checks the inventory at `path`; relative credential paths are taken from the
/// inventory's folder.
pub fn load(path: &Path) -> Result<Inventory, Diagnostics> {
    let whole = |message: String| Diagnostics(vec![whole_file(path, message)]);
    let size = std::fs::metadata(path)
        .map_err(|e| whole(format!("cannot read: {e}")))?
        .len();
    if size > MAX_INVENTORY_BYTES {
        return Err(whole(format!(
            "{size} bytes; an inventory may have at most {MAX_INVENTORY_BYTES}"
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| whole(format!("cannot read: {e}")))?;
    let text = String::from_utf8(bytes).map_err(|_| whole("not UTF-8".to_string()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse(&text, path, base)
}

/// Parses inventory `text` (named `file` in diagnostics).
pub fn parse(text: &str, file: &Path, base_dir: &Path) -> Result<Inventory, Diagnostics> {
    let index = LineIndex::new(text);
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
    let raw: RawInventory = toml::from_str(text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        Diagnostics(vec![at(
            offset,
            String::new(),
            e.message().trim_end().replace('\n', " "),
        )])
    })?;
    let mut problems = Vec::new();
    if raw.boxes.is_empty() {
        problems.push(at(
            0,
            "box".to_string(),
            "the inventory names no box: add [[box]] entries".to_string(),
        ));
    }
    let mut names = HashSet::new();
    let mut boxes = Vec::with_capacity(raw.boxes.len());
    for (i, raw_box) in raw.boxes.into_iter().enumerate() {
        let field = |name: &str| format!("box[{i}].{name}");
        let name = raw_box.name.get_ref();
        if let Err(why) = check_box_name(name) {
            problems.push(at(raw_box.name.span().start, field("name"), why));
        } else if !names.insert(name.clone()) {
            problems.push(at(
                raw_box.name.span().start,
                field("name"),
                format!("{name:?} is named twice: every box needs its own name"),
            ));
        }
        let management = match raw_box.management.get_ref().parse::<SocketAddr>() {
            Ok(address) => Some(address),
            Err(_) => {
                problems.push(at(
                    raw_box.management.span().start,
                    field("management"),
                    format!(
                        "{:?} is not an address and port (198.18.0.2:7443, [fd00::2]:7443)",
                        raw_box.management.get_ref()
                    ),
                ));
                None
            }
        };
        if rustls_pki_types::ServerName::try_from(raw_box.server_name.get_ref().as_str()).is_err() {
            problems.push(at(
                raw_box.server_name.span().start,
                field("server_name"),
                format!(
                    "{:?} is not a DNS name or IP address",
                    raw_box.server_name.get_ref()
                ),
            ));
        }
        if raw_box.group.get_ref().trim().is_empty() {
            problems.push(at(
                raw_box.group.span().start,
                field("group"),
                "empty: name the rollout group (canary, say)".to_string(),
            ));
        }
        if let Some(management) = management {
            boxes.push(BoxEntry {
                name: raw_box.name.into_inner(),
                management,
                server_name: raw_box.server_name.into_inner(),
                group: raw_box.group.into_inner(),
            });
        }
    }
    if !problems.is_empty() {
        return Err(Diagnostics(problems));
    }
    let operator = raw.operator;
    Ok(Inventory {
        credentials: Credentials {
            certificate_file: base_dir.join(operator.certificate_file),
            private_key_file: base_dir.join(operator.private_key_file),
            ca_file: base_dir.join(operator.ca_file),
        },
        boxes,
    })
}

/// A box name names a file in a push folder: no path separators, no dot files, bounded.
fn check_box_name(name: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || name.chars().count() > MAX_BOX_NAME_CHARS {
        return Err(format!(
            "a box name has 1 to {MAX_BOX_NAME_CHARS} characters"
        ));
    }
    if !name.chars().all(allowed) || name.starts_with('.') {
        return Err(format!(
            "{name:?}: a box name has only letters, digits, '-', '_' and '.', and does not start with '.' (it names <name>.toml)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPERATOR: &str = "[operator]\ncertificate_file = \"op.crt\"\nprivate_key_file = \"op.key\"\nca_file = \"/etc/ca.crt\"\n";

    fn parse_text(text: &str) -> Result<Inventory, Diagnostics> {
        parse(text, Path::new("fleet.toml"), Path::new("/ops"))
    }

    fn one_problem(text: &str) -> String {
        match parse_text(text) {
            Ok(inventory) => panic!("accepted: {inventory:?}"),
            Err(diagnostics) => {
                assert_eq!(diagnostics.0.len(), 1, "{diagnostics}");
                diagnostics.to_string()
            }
        }
    }

    #[test]
    fn ops5_an_inventory_names_boxes_groups_and_resolves_credentials_beside_it() {
        let text = format!(
            "{OPERATOR}\n[[box]]\nname = \"hospital\"\nmanagement = \"198.18.0.2:7443\"\nserver_name = \"hospital.renkei.test\"\ngroup = \"canary\"\n\n[[box]]\nname = \"clinic-1\"\nmanagement = \"[fd00::3]:7443\"\nserver_name = \"clinic.renkei.test\"\ngroup = \"rest\"\n"
        );
        let inventory = parse_text(&text).expect("valid");
        assert_eq!(inventory.boxes.len(), 2);
        assert_eq!(inventory.boxes[0].name, "hospital");
        assert_eq!(inventory.boxes[0].group, "canary");
        assert_eq!(
            inventory.boxes[1].management,
            "[fd00::3]:7443".parse().unwrap()
        );
        assert_eq!(
            inventory.credentials.certificate_file,
            PathBuf::from("/ops/op.crt")
        );
        assert_eq!(inventory.credentials.ca_file, PathBuf::from("/etc/ca.crt"));
    }

    #[test]
    fn ops5_inventory_problems_name_file_line_column_and_field() {
        let text = format!(
            "{OPERATOR}\n[[box]]\nname = \"hospital\"\nmanagement = \"198.18.0.2\"\nserver_name = \"h.test\"\ngroup = \"canary\"\n"
        );
        assert_eq!(
            one_problem(&text),
            "fleet.toml:8:14: box[0].management: \"198.18.0.2\" is not an address and port (198.18.0.2:7443, [fd00::2]:7443)"
        );
    }

    #[test]
    fn ops5_inventory_refuses_duplicate_and_path_like_names() {
        let entry = |name: &str| {
            format!("\n[[box]]\nname = \"{name}\"\nmanagement = \"198.18.0.2:7443\"\nserver_name = \"h.test\"\ngroup = \"g\"\n")
        };
        let twice = format!("{OPERATOR}{}{}", entry("a"), entry("a"));
        assert!(one_problem(&twice).contains("box[1].name: \"a\" is named twice"));
        for bad in ["../etc/passwd", ".hidden", "", "a/b"] {
            let text = format!("{OPERATOR}{}", entry(bad));
            assert!(one_problem(&text).contains("box[0].name"), "{bad}");
        }
    }

    /// The inventory shown in the operator's guide ("Running a fleet") is one this parser
    /// takes, so the guide cannot drift from the format.
    #[test]
    fn ops5_the_operator_guides_inventory_parses() {
        let guide = include_str!("../../../docs/operator-guide.md");
        let section = guide
            .split("## 10. Running a fleet")
            .nth(1)
            .expect("the guide has the fleet section");
        let block = section
            .split("```toml\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("the section has a toml block");
        let inventory = parse(block, Path::new("fleet.toml"), Path::new("/ops"))
            .unwrap_or_else(|d| panic!("{d}"));
        assert_eq!(inventory.boxes.len(), 2);
        assert_eq!(
            inventory.credentials.private_key_file,
            PathBuf::from("/ops/operator.key")
        );
    }

    #[test]
    fn ops5_inventory_garbage_is_a_diagnostic_never_a_panic() {
        for text in [
            "",
            "[operator",
            "\u{0}\u{1}",
            "[[box]]\nname = 1\n",
            &format!("{OPERATOR}[[box]]\nname = \"a\"\nunknown = 1\n"),
            &format!("{OPERATOR}[[box]]\nname = \"a\"\nmanagement = \"198.18.0.2:1\"\nserver_name = \"bad name\"\ngroup = \" \"\n"),
            OPERATOR,
        ] {
            let diagnostics = parse_text(text).expect_err(text);
            assert!(
                diagnostics.to_string().starts_with("fleet.toml:"),
                "{diagnostics}"
            );
        }
    }
}
