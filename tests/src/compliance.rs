//! The compliance report: which requirement IDs a real test run proves.
//!
//! Inputs are the requirements (`docs/requirements.md`, the items the project is built and
//! tested against, which read `- **NET-1** text`) and the output of
//! a real run: `cargo test` lines `test <path>::<name> ... ok|FAILED|ignored`, attributed to the
//! test binary named by the `Running <source> (<binary>)` line before them, and lines
//! `PASS <ID>[,<ID>...] <what>` / `FAIL ...` printed by tests that are not Rust (an image boot
//! test, say). A Rust test proves the IDs its function name starts with: `net1_net7_log1_...`
//! proves NET-1, NET-7 and LOG-1. Nothing is typed by hand: renaming a test is how it joins or
//! leaves the report. A test that could not run here and said so with a line
//! `SKIP <IDs> <test name>: <why>` (`renkei_lab::skip`; under CI it fails instead) proves
//! nothing, even though libtest reports it `ok`: it is counted as skipped.
//!
//! Per ID: proven (a mapped test passed and none failed), failing (a mapped test failed) or open
//! (no mapped test passed). A requirement whose item says `*Partly built: <what is missing>*`
//! is at best partly proven: its passing tests prove what is built, not the rest. Open IDs are listed, never hidden; a test naming an ID that is not
//! a requirement is listed too, so a typo cannot silently prove nothing.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// `NET-1`.
    pub id: String,
    /// The requirement in one line.
    pub text: String,
    /// The section it is in (`Transport`, ...).
    pub section: String,
    /// What is not built yet, from a `*Partly built: ...*` note in the item.
    pub missing: Option<String>,
}

/// The note in a requirement item that says part of it is not built yet.
const PARTLY_BUILT: &str = "*Partly built:";

/// Splits `text` into the requirement and what its `*Partly built: ...*` note says is missing.
fn split_missing(text: &str) -> (String, Option<String>) {
    match text.split_once(PARTLY_BUILT) {
        Some((requirement, note)) => (
            requirement.trim().to_string(),
            Some(note.trim().trim_end_matches('*').trim().to_string()),
        ),
        None => (text.to_string(), None),
    }
}

/// Reads the requirement items (`- **ID** text`, continued on indented lines) in file order.
pub fn parse_requirements(markdown: &str) -> Vec<Requirement> {
    let mut out: Vec<Requirement> = Vec::new();
    let mut section = String::new();
    let mut open = false;
    for line in markdown.lines() {
        if let Some(heading) = line.strip_prefix("## ") {
            section = heading.trim().to_string();
            open = false;
            continue;
        }
        if let Some(rest) = line.strip_prefix("- **") {
            if let Some((id, text)) = rest.split_once("**") {
                if is_requirement_id(id) {
                    out.push(Requirement {
                        id: id.to_string(),
                        text: text.trim().to_string(),
                        section: section.clone(),
                        missing: None,
                    });
                    open = true;
                    continue;
                }
            }
            open = false;
            continue;
        }
        match out.last_mut() {
            Some(last) if open && line.starts_with(' ') && !line.trim().is_empty() => {
                last.text.push(' ');
                last.text.push_str(line.trim());
            }
            _ => open = false,
        }
    }
    for requirement in &mut out {
        let (text, missing) = split_missing(&requirement.text);
        requirement.text = text;
        requirement.missing = missing;
    }
    out
}

/// `NET-1`: capital letters, a dash, digits.
fn is_requirement_id(id: &str) -> bool {
    let Some((prefix, number)) = id.split_once('-') else {
        return false;
    };
    !prefix.is_empty()
        && prefix.chars().all(|c| c.is_ascii_uppercase())
        && !number.is_empty()
        && number.chars().all(|c| c.is_ascii_digit())
}

/// How a test ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// It failed.
    Failed,
    /// It was not run.
    Ignored,
    /// It ran but skipped its checks (a `SKIP` line), whatever libtest says: no proof.
    Skipped,
    /// It passed.
    Passed,
}

impl Outcome {
    fn word(self) -> &'static str {
        match self {
            Outcome::Passed => "ok",
            Outcome::Failed => "FAILED",
            Outcome::Ignored => "ignored",
            Outcome::Skipped => "skipped",
        }
    }

    fn parse(word: &str) -> Option<Outcome> {
        match word.trim() {
            "ok" => Some(Outcome::Passed),
            "FAILED" => Some(Outcome::Failed),
            o if o == "ignored" || o.starts_with("ignored,") => Some(Outcome::Ignored),
            _ => None,
        }
    }
}

/// One test result of the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestResult {
    /// Where it ran: the test source cargo named (`tests/tunnel.rs`, `renkei src/lib.rs`), or
    /// `non-Rust` for `PASS`/`FAIL` lines.
    pub source: String,
    /// The test's path (`tunnel::policy::tests::net7_...`) or, for non-Rust tests, what it did.
    pub name: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Requirement IDs it names (for non-Rust tests: those on its line).
    pub ids: Vec<String>,
}

/// Reads every test result of a `cargo test` output (and `PASS`/`FAIL`/`SKIP` lines). `prefixes`
/// are the ID prefixes of the requirements (`NET`, `LOG`, ...), so only those count in names.
/// A Rust test with a `SKIP ... <its name>: ...` line from the same test binary is
/// [`Outcome::Skipped`], not passed; a `SKIP` line naming no Rust test of the run stays a
/// skipped result of its own.
pub fn parse_test_output(log: &str, prefixes: &[String]) -> Vec<TestResult> {
    let mut out: Vec<TestResult> = Vec::new();
    let mut skips: Vec<TestResult> = Vec::new();
    let mut source = String::from("?");
    // `test name ... ` whose outcome comes on a later line (a single-threaded run prints the
    // name before running the test, and a SKIP line can come in between).
    let mut pending: Option<String> = None;
    for raw in log.lines() {
        let line = raw.trim_end();
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix("Running ") {
            source = running_source(rest);
            pending = None;
            continue;
        }
        if let Some(rest) = trimmed.strip_prefix("Doc-tests ") {
            source = format!("{} doc-tests", rest.trim());
            pending = None;
            continue;
        }
        if let Some(mut result) = non_rust_line(line) {
            if result.outcome == Outcome::Skipped {
                result.source = source.clone();
                skips.push(result);
            } else {
                out.push(result);
            }
            continue;
        }
        let (name, outcome) = match line.strip_prefix("test ") {
            Some(rest) => match rest.rsplit_once(" ... ") {
                Some((name, outcome)) => (name.trim().to_string(), Outcome::parse(outcome)),
                None => {
                    if let Some(name) = rest.strip_suffix(" ...") {
                        pending = Some(name.trim().to_string());
                    }
                    continue;
                }
            },
            None => match (pending.take(), Outcome::parse(line)) {
                (Some(name), Some(outcome)) => (name, Some(outcome)),
                (name, _) => {
                    pending = name;
                    continue;
                }
            },
        };
        let Some(outcome) = outcome else {
            continue;
        };
        out.push(TestResult {
            source: source.clone(),
            ids: ids_in_test_name(&name, prefixes),
            name,
            outcome,
        });
    }
    for skip in skips {
        let skipped = skip
            .name
            .split(": ")
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        let matching = out.iter_mut().find(|r| {
            r.source == skip.source
                && r.source != "non-Rust"
                && r.name.rsplit("::").next() == Some(skipped.as_str())
        });
        match matching {
            Some(result) => {
                if result.outcome == Outcome::Passed {
                    result.outcome = Outcome::Skipped;
                }
            }
            None => out.push(TestResult {
                source: "non-Rust".into(),
                ..skip
            }),
        }
    }
    out
}

/// `tests/tunnel.rs (target/debug/deps/tunnel-0123)` → `tests/tunnel.rs`;
/// `unittests src/lib.rs (target/debug/deps/renkei_lab-0123)` → `renkei_lab src/lib.rs`.
fn running_source(rest: &str) -> String {
    let (what, binary) = match rest.split_once(" (") {
        Some((what, binary)) => (what.trim(), binary.trim_end_matches(')')),
        None => (rest.trim(), ""),
    };
    match what.strip_prefix("unittests ") {
        Some(src) => {
            let file = binary.rsplit('/').next().unwrap_or("");
            let target = file.rsplit_once('-').map_or(file, |(t, _)| t);
            if target.is_empty() {
                src.to_string()
            } else {
                format!("{target} {src}")
            }
        }
        None => what.to_string(),
    }
}

/// `PASS NET-1,OPS-1 what it did` (or `FAIL ...`, `SKIP ...`; a `SKIP` may name no ID: `-`).
/// IDs may also be separated by spaces (`PASS INT-2 AVL-1 what`): every leading word made of
/// IDs counts, up to the first that is not.
fn non_rust_line(line: &str) -> Option<TestResult> {
    let (word, rest) = line.split_once(' ')?;
    let outcome = match word {
        "PASS" => Outcome::Passed,
        "FAIL" => Outcome::Failed,
        "SKIP" => Outcome::Skipped,
        _ => return None,
    };
    let (first, mut what) = rest.split_once(' ').unwrap_or((rest, ""));
    let mut ids: Vec<String> = if first == "-" && outcome == Outcome::Skipped {
        Vec::new()
    } else {
        first.split(',').map(str::to_string).collect()
    };
    if (ids.is_empty() && outcome != Outcome::Skipped)
        || !ids.iter().all(|id| is_requirement_id(id))
    {
        return None;
    }
    while !ids.is_empty() {
        let (next, after) = what.split_once(' ').unwrap_or((what, ""));
        if next.is_empty() || !next.split(',').all(is_requirement_id) {
            break;
        }
        ids.extend(next.split(',').map(str::to_string));
        what = after;
    }
    Some(TestResult {
        source: "non-Rust".into(),
        name: what.trim().to_string(),
        outcome,
        ids,
    })
}

/// The IDs a test's function name starts with: `net1_net7_x` → `NET-1`, `NET-7`. Only tokens
/// with one of `prefixes` count, so `tls12_...` names nothing.
pub fn ids_in_test_name(path: &str, prefixes: &[String]) -> Vec<String> {
    let name = path.rsplit("::").next().unwrap_or(path);
    let mut ids = Vec::new();
    for token in name.split('_') {
        let digits = token.trim_start_matches(|c: char| c.is_ascii_lowercase());
        let letters = &token[..token.len() - digits.len()];
        let is_id = !letters.is_empty()
            && !digits.is_empty()
            && digits.chars().all(|c| c.is_ascii_digit())
            && prefixes.iter().any(|p| p.eq_ignore_ascii_case(letters));
        if !is_id {
            break;
        }
        ids.push(format!("{}-{digits}", letters.to_ascii_uppercase()));
    }
    ids
}

/// The ID prefixes of `requirements` (`NET`, `LOG`, ...).
pub fn prefixes(requirements: &[Requirement]) -> Vec<String> {
    let mut all: Vec<String> = requirements
        .iter()
        .filter_map(|r| r.id.split_once('-').map(|(p, _)| p.to_string()))
        .collect();
    all.sort();
    all.dedup();
    all
}

/// Where an ID stands after the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// A mapped test passed and none failed.
    Proven,
    /// As proven, but the requirement says part of it is not built yet.
    Partly,
    /// A mapped test failed.
    Failing,
    /// No mapped test passed.
    Open,
}

impl Status {
    fn word(self) -> &'static str {
        match self {
            Status::Proven => "proven",
            Status::Partly => "**partly built**",
            Status::Failing => "**failing**",
            Status::Open => "**open**",
        }
    }
}

/// The report's content.
#[derive(Debug)]
pub struct Report<'a> {
    /// Each requirement with its tests and status, in file order.
    pub rows: Vec<(&'a Requirement, Vec<&'a TestResult>, Status)>,
    /// Tests that name IDs no requirement has.
    pub unknown: Vec<(&'a TestResult, Vec<String>)>,
    /// Every result of the run.
    pub results: &'a [TestResult],
}

/// Maps results to requirements.
pub fn map<'a>(requirements: &'a [Requirement], results: &'a [TestResult]) -> Report<'a> {
    let mut by_id: BTreeMap<&str, Vec<&TestResult>> = BTreeMap::new();
    let mut unknown = Vec::new();
    for result in results {
        let mut strangers = Vec::new();
        for id in &result.ids {
            if requirements.iter().any(|r| &r.id == id) {
                by_id.entry(id.as_str()).or_default().push(result);
            } else {
                strangers.push(id.clone());
            }
        }
        if !strangers.is_empty() {
            unknown.push((result, strangers));
        }
    }
    let rows = requirements
        .iter()
        .map(|r| {
            let mut tests = by_id.remove(r.id.as_str()).unwrap_or_default();
            tests.sort_by(|a, b| {
                (a.outcome, &a.source, &a.name).cmp(&(b.outcome, &b.source, &b.name))
            });
            let status = if tests.iter().any(|t| t.outcome == Outcome::Failed) {
                Status::Failing
            } else if tests.iter().any(|t| t.outcome == Outcome::Passed) {
                if r.missing.is_some() {
                    Status::Partly
                } else {
                    Status::Proven
                }
            } else {
                Status::Open
            };
            (r, tests, status)
        })
        .collect();
    Report {
        rows,
        unknown,
        results,
    }
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

fn test_label(t: &TestResult) -> String {
    let name = t.name.rsplit("::").next().unwrap_or(&t.name);
    format!(
        "`{}` {} — {}",
        cell(name),
        cell(&t.source),
        t.outcome.word()
    )
}

/// Renders the report as Markdown. `about` says which run it is (date, commit, log files).
pub fn render(report: &Report, about: &str) -> String {
    let count = |s: Status| report.rows.iter().filter(|r| r.2 == s).count();
    let outcomes = |o: Outcome| report.results.iter().filter(|r| r.outcome == o).count();
    let mut out = String::new();
    let _ = writeln!(out, "# Compliance report\n");
    let _ = writeln!(
        out,
        "Generated by `lab compliance` from a real test run (`sudo ./scripts/test`); do not edit \
         by hand. Each requirement of [requirements.md](requirements.md) is proven by the \
         tests whose names start with its \
         ID (`net1_net7_...` proves NET-1 and NET-7) or by `PASS <ID>` lines of tests that are \
         not Rust. **proven**: a test passed and none failed; **failing**: a test failed; \
         **open**: no test passed; **partly built**: tests passed, but the requirement says \
         what of it is not built yet. A test that could not run on the machine says so with a \
         `SKIP` line and is listed as skipped: it proves nothing (under CI it fails instead). \
         A test's name is its author's claim that it proves \
         the requirement; review the claim with the test.\n"
    );
    let _ = writeln!(out, "{about}\n");
    let _ = writeln!(
        out,
        "**{} of {} requirements proven, {} partly built, {} open, {} failing.** The run: {} \
         tests passed, {} failed, {} ignored, {} skipped.\n",
        count(Status::Proven),
        report.rows.len(),
        count(Status::Partly),
        count(Status::Open),
        count(Status::Failing),
        outcomes(Outcome::Passed),
        outcomes(Outcome::Failed),
        outcomes(Outcome::Ignored),
        outcomes(Outcome::Skipped),
    );
    let _ = writeln!(
        out,
        "| ID | Requirement | Status | Tests (result in this run) |"
    );
    let _ = writeln!(
        out,
        "|----|-------------|--------|----------------------------|"
    );
    for (requirement, tests, status) in &report.rows {
        let tests = if tests.is_empty() {
            "none".to_string()
        } else {
            tests
                .iter()
                .map(|t| test_label(t))
                .collect::<Vec<_>>()
                .join("<br>")
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            requirement.id,
            cell(&requirement.text),
            status.word(),
            tests
        );
    }
    for (title, status) in [
        ("Partly built", Status::Partly),
        ("Open", Status::Open),
        ("Failing", Status::Failing),
    ] {
        let rows: Vec<_> = report.rows.iter().filter(|r| r.2 == status).collect();
        let _ = writeln!(out, "\n## {title} ({})\n", rows.len());
        if rows.is_empty() {
            let _ = writeln!(out, "None.");
        }
        for (requirement, tests, _) in rows {
            let why = if let (Status::Partly, Some(missing)) = (status, &requirement.missing) {
                format!("not built yet: {missing}")
            } else if tests.is_empty() {
                "no test names this ID".to_string()
            } else {
                let failed: Vec<_> = tests
                    .iter()
                    .filter(|t| t.outcome != Outcome::Passed)
                    .map(|t| test_label(t))
                    .collect();
                failed.join("; ")
            };
            let _ = writeln!(
                out,
                "- **{}** ({}) {} — {why}",
                requirement.id, requirement.section, requirement.text
            );
        }
    }
    if !report.unknown.is_empty() {
        let _ = writeln!(out, "\n## Tests naming IDs that are not requirements\n");
        for (test, ids) in &report.unknown {
            let _ = writeln!(out, "- {}: {}", test_label(test), ids.join(", "));
        }
    }
    out
}

/// Which commit of `checkout` a report comes from: `` `<full hash>` ``, plus a note when the
/// working tree had uncommitted changes (the report then describes more than that commit).
fn commit_of(checkout: &std::path::Path) -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(checkout)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let Some(hash) = git(&["rev-parse", "HEAD"]) else {
        return "unknown (not a git checkout)".into();
    };
    // docs/compliance.md itself is rewritten by every run; its change is not the code's.
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| {
        s.lines()
            .any(|l| !l.trim_end().ends_with("docs/compliance.md"))
    });
    if dirty {
        format!("`{hash}` with uncommitted changes")
    } else {
        format!("`{hash}`")
    }
}

/// The checkout this crate was built from (for the default paths).
pub fn checkout() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `lab compliance`: reads the requirements and the logs of a run, writes the report to `out`
/// and returns its one-line summary. Fails when the logs hold no test result at all (a broken
/// pipeline must not produce a report that looks like "everything open").
pub fn generate(
    requirements: &std::path::Path,
    logs: &[std::path::PathBuf],
    out: &std::path::Path,
) -> anyhow::Result<String> {
    use anyhow::Context;
    let text = std::fs::read_to_string(requirements)
        .with_context(|| format!("reading {}", requirements.display()))?;
    let requirements = parse_requirements(&text);
    anyhow::ensure!(
        !requirements.is_empty(),
        "no requirement items (`- **ID** text`) in the requirements file"
    );
    let prefixes = prefixes(&requirements);
    let mut results = Vec::new();
    for log in logs {
        let bytes = std::fs::read(log).with_context(|| format!("reading {}", log.display()))?;
        results.extend(parse_test_output(
            &String::from_utf8_lossy(&bytes),
            &prefixes,
        ));
    }
    anyhow::ensure!(
        !results.is_empty(),
        "no test results in {logs:?}: run the tests first (scripts/test writes the log)"
    );
    let report = map(&requirements, &results);
    let about = format!(
        "Run of {}, generated from commit {}.",
        renkei::proxy::accesslog::rfc3339(std::time::SystemTime::now()),
        commit_of(&checkout())
    );
    let markdown = render(&report, &about);
    std::fs::write(out, &markdown).with_context(|| format!("writing {}", out.display()))?;
    let count = |s: Status| report.rows.iter().filter(|r| r.2 == s).count();
    Ok(format!(
        "{}: {} of {} requirements proven, {} partly built, {} open, {} failing",
        out.display(),
        count(Status::Proven),
        report.rows.len(),
        count(Status::Partly),
        count(Status::Open),
        count(Status::Failing)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQUIREMENTS: &str = "# Requirements\n\nIntro naming **NET-9** in passing.\n\n\
        ## Transport\n\
        - **NET-1** Every byte crosses TLS,\n  inside the tunnel.\n\
        - **NET-7** On demand.\n\n\
        ## Availability and integrity (障害対策)\n\
        - **AVL-2** Watchdog | restart.\n\
        - **INT-1** Fuzzed.\n\
        - not a requirement\n  and its continuation\n";

    fn prefixes_of(text: &str) -> Vec<String> {
        prefixes(&parse_requirements(text))
    }

    #[test]
    fn requirement_items_are_read_in_one_line_with_their_section() {
        let all = parse_requirements(REQUIREMENTS);
        let ids: Vec<_> = all.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["NET-1", "NET-7", "AVL-2", "INT-1"]);
        assert_eq!(all[0].text, "Every byte crosses TLS, inside the tunnel.");
        assert_eq!(all[0].section, "Transport");
        assert_eq!(all[3].text, "Fuzzed.");
        assert_eq!(all[2].section, "Availability and integrity (障害対策)");
        assert_eq!(prefixes(&all), ["AVL", "INT", "NET"]);
    }

    #[test]
    fn leading_id_tokens_of_the_function_name_are_its_ids() {
        let p = prefixes_of(REQUIREMENTS);
        assert_eq!(
            ids_in_test_name("net1_net7_log1_lab_demo", &p),
            ["NET-1", "NET-7"],
            "log1 is not a prefix here, and IDs stop at the first other word"
        );
        assert_eq!(
            ids_in_test_name("tunnel::policy::tests::net7_on_demand", &p),
            ["NET-7"]
        );
        assert_eq!(ids_in_test_name("avl2_units", &p), ["AVL-2"]);
        assert!(ids_in_test_name("interop_net1_late", &p).is_empty());
        assert!(ids_in_test_name("tls12_only_client", &p).is_empty());
        assert!(ids_in_test_name("net_is_not_an_id", &p).is_empty());
        assert_eq!(ids_in_test_name("net9_typo", &p), ["NET-9"]);
    }

    const LOG: &str = "\
   Compiling renkei v0.1.0
     Running unittests src/lib.rs (/t/debug/deps/renkei-0123abcd)

running 3 tests
test tunnel::policy::tests::net7_on_demand_is_silent ... ok
test tls::tests::int1_garbage ... FAILED
test slow_thing ... ignored, needs hardware
test result: FAILED. 1 passed; 1 failed; 1 ignored
     Running tests/tunnel.rs (/t/debug/deps/tunnel-89ab)
test net1_net7_fetch ... ok
test net9_typo ... ok
test avl2_watchdog has been running for over 60 seconds
test avl2_watchdog ... ignored
   Doc-tests renkei
test daemon/src/lib.rs - x (line 3) ... ok
PASS NET-1,INT-1 image boots and serves
FAIL AVL-2 watchdog restarts the hung daemon
PASSWORD nothing
";

    #[test]
    fn cargo_test_lines_and_pass_fail_lines_are_results() {
        let p = prefixes_of(REQUIREMENTS);
        let results = parse_test_output(LOG, &p);
        let summary: Vec<_> = results
            .iter()
            .map(|r| (r.source.as_str(), r.name.as_str(), r.outcome))
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "renkei src/lib.rs",
                    "tunnel::policy::tests::net7_on_demand_is_silent",
                    Outcome::Passed
                ),
                (
                    "renkei src/lib.rs",
                    "tls::tests::int1_garbage",
                    Outcome::Failed
                ),
                ("renkei src/lib.rs", "slow_thing", Outcome::Ignored),
                ("tests/tunnel.rs", "net1_net7_fetch", Outcome::Passed),
                ("tests/tunnel.rs", "net9_typo", Outcome::Passed),
                ("tests/tunnel.rs", "avl2_watchdog", Outcome::Ignored),
                (
                    "renkei doc-tests",
                    "daemon/src/lib.rs - x (line 3)",
                    Outcome::Passed
                ),
                ("non-Rust", "image boots and serves", Outcome::Passed),
                (
                    "non-Rust",
                    "watchdog restarts the hung daemon",
                    Outcome::Failed
                ),
            ]
        );
        assert_eq!(results[7].ids, ["NET-1", "INT-1"]);
        assert_eq!(results[1].ids, ["INT-1"]);
    }

    #[test]
    fn space_separated_ids_of_a_pass_line_all_count() {
        let line = non_rust_line("PASS INT-2 AVL-1,NET-9 the box rolled back 2 of 3 pushes")
            .expect("a result");
        assert_eq!(line.ids, ["INT-2", "AVL-1", "NET-9"]);
        assert_eq!(line.name, "the box rolled back 2 of 3 pushes");
        let one = non_rust_line("FAIL OPS-1 image boots").expect("a result");
        assert_eq!(
            (one.ids, one.outcome),
            (vec!["OPS-1".to_string()], Outcome::Failed)
        );
    }

    #[test]
    fn ids_are_proven_failing_or_open_and_none_is_hidden() {
        let requirements = parse_requirements(REQUIREMENTS);
        let results = parse_test_output(LOG, &prefixes(&requirements));
        let report = map(&requirements, &results);
        let status: Vec<_> = report.rows.iter().map(|r| (r.0.id.as_str(), r.2)).collect();
        assert_eq!(
            status,
            [
                ("NET-1", Status::Proven),
                ("NET-7", Status::Proven),
                ("AVL-2", Status::Failing),
                ("INT-1", Status::Failing),
            ]
        );
        assert_eq!(report.unknown.len(), 1);
        assert_eq!(report.unknown[0].1, ["NET-9"]);

        // Without the non-Rust lines and the failing unit test, AVL-2 has only an ignored test
        // and INT-1 none: both open.
        let clean: Vec<TestResult> = results
            .iter()
            .filter(|r| r.source != "non-Rust" && r.outcome != Outcome::Failed)
            .cloned()
            .collect();
        let report = map(&requirements, &clean);
        assert_eq!(report.rows[2].2, Status::Open);
        assert_eq!(report.rows[3].2, Status::Open);
        let text = render(&report, "Run: test");
        assert!(
            text.contains("**2 of 4 requirements proven, 0 partly built, 2 open, 0 failing.**"),
            "{text}"
        );
        assert!(
            text.contains("| AVL-2 | Watchdog \\| restart. | **open** |"),
            "{text}"
        );
        assert!(text.contains("## Open (2)"), "{text}");
        assert!(text.contains("- **INT-1** (Availability and integrity (障害対策)) Fuzzed. — no test names this ID"), "{text}");
        assert!(
            text.contains("`avl2_watchdog` tests/tunnel.rs — ignored"),
            "{text}"
        );
        assert!(
            text.contains("## Tests naming IDs that are not requirements"),
            "{text}"
        );
    }

    #[test]
    fn a_test_that_printed_skip_proves_nothing_even_when_libtest_says_ok() {
        // A single-threaded run prints `test name ... ` before the test runs, so the SKIP line
        // (which starts on a fresh line) splits it from its `ok`; a parallel run prints the
        // SKIP line first and `test name ... ok` when the test ends.
        let log = "\
     Running tests/lab_demo.rs (/t/debug/deps/lab_demo-1)
test net1_lab_demo ... 
SKIP NET-1 net1_lab_demo: needs root (run the README's test command)
ok
test net7_other ... ok

SKIP NET-7 net7_parallel: needs root
test net7_parallel ... ok
test avl2_failed_after_skip ... 
SKIP AVL-2 avl2_failed_after_skip: openssl not available
FAILED
     Running tests/other.rs (/t/debug/deps/other-2)
test net7_parallel ... ok
SKIP AVL-2 status page over HTTPS: STATUS_PAGE_LIVE=0
SKIP - lab_up_twice: needs root
";
        let requirements = parse_requirements(REQUIREMENTS);
        let results = parse_test_output(log, &prefixes(&requirements));
        let summary: Vec<_> = results
            .iter()
            .map(|r| (r.source.as_str(), r.name.as_str(), r.outcome))
            .collect();
        assert_eq!(
            summary,
            [
                ("tests/lab_demo.rs", "net1_lab_demo", Outcome::Skipped),
                ("tests/lab_demo.rs", "net7_other", Outcome::Passed),
                ("tests/lab_demo.rs", "net7_parallel", Outcome::Skipped),
                (
                    "tests/lab_demo.rs",
                    "avl2_failed_after_skip",
                    Outcome::Failed
                ),
                ("tests/other.rs", "net7_parallel", Outcome::Passed),
                (
                    "non-Rust",
                    "status page over HTTPS: STATUS_PAGE_LIVE=0",
                    Outcome::Skipped
                ),
                ("non-Rust", "lab_up_twice: needs root", Outcome::Skipped),
            ]
        );
        assert_eq!(results[0].ids, ["NET-1"]);
        assert_eq!(results[5].ids, ["AVL-2"]);
        assert!(results[6].ids.is_empty());

        let report = map(&requirements, &results);
        let status: Vec<_> = report.rows.iter().map(|r| (r.0.id.as_str(), r.2)).collect();
        assert_eq!(
            status,
            [
                ("NET-1", Status::Open),
                ("NET-7", Status::Proven),
                ("AVL-2", Status::Failing),
                ("INT-1", Status::Open),
            ]
        );
        let text = render(&report, "Run: test");
        assert!(
            text.contains("`net1_lab_demo` tests/lab_demo.rs — skipped"),
            "{text}"
        );
        assert!(
            text.contains("The run: 2 tests passed, 1 failed, 0 ignored, 4 skipped."),
            "{text}"
        );
        // Skipping alone proves nothing: without the passing test, NET-7 is open.
        let only_skips: Vec<TestResult> = results
            .iter()
            .filter(|r| r.name != "net7_other" && r.source != "tests/other.rs")
            .cloned()
            .collect();
        let report = map(&requirements, &only_skips);
        assert_eq!(report.rows[1].2, Status::Open);
    }

    /// The project's requirement list parses into IDs, each listed once.
    #[test]
    fn the_requirement_list_has_unique_ids() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let text = std::fs::read_to_string(root.join("docs/requirements.md"))
            .expect("docs/requirements.md");
        let requirements = parse_requirements(&text);
        assert!(requirements.len() >= 10);
        let mut ids: Vec<_> = requirements.iter().map(|r| r.id.clone()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), requirements.len(), "an ID is listed twice");
    }

    /// A requirement that says part of it is not built is never reported proven, however many
    /// of its tests pass, and the report says what is missing.
    #[test]
    fn a_partly_built_requirement_is_partly_built_not_proven() {
        let requirements = parse_requirements(
            "## Availability\n\
             - **AVL-5** Updates A/B with fallback.\n  *Partly built: the slots and the fallback.*\n\
             - **AVL-2** Watchdog.\n",
        );
        assert_eq!(requirements[0].text, "Updates A/B with fallback.");
        assert_eq!(
            requirements[0].missing.as_deref(),
            Some("the slots and the fallback.")
        );
        assert_eq!(requirements[1].missing, None);
        let results = parse_test_output(
            "     Running tests/update.rs (target/debug/deps/update-1)\n\
             test avl5_a_bundle_is_verified ... ok\n\
             test avl2_watchdog ... ok\n",
            &prefixes(&requirements),
        );
        let report = map(&requirements, &results);
        let status: Vec<_> = report.rows.iter().map(|r| (r.0.id.as_str(), r.2)).collect();
        assert_eq!(
            status,
            [("AVL-5", Status::Partly), ("AVL-2", Status::Proven)]
        );
        let text = render(&report, "Run: test");
        assert!(
            text.contains("**1 of 2 requirements proven, 1 partly built, 0 open, 0 failing.**"),
            "{text}"
        );
        assert!(
            text.contains("not built yet: the slots and the fallback."),
            "{text}"
        );
    }
}
