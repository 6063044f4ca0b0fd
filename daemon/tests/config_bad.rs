//! Every broken config in `tests/bad-configs/` must be refused by `renkei check` with exactly the
//! diagnostics written at its top. See `tests/bad-configs/README.md` for the conventions
//! (`# expect:` lines, `$DIR`, `$OWN_PUBLIC_KEY`).

mod common;

use std::path::{Path, PathBuf};

use common::Fixture;

/// Where the corpus lives.
fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad-configs")
}

/// The corpus files, sorted by name.
fn corpus() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("read tests/bad-configs")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

/// The leading `# expect: ` lines of a corpus file, without the marker.
fn expectations(text: &str) -> Vec<String> {
    text.lines()
        .map_while(|line| line.strip_prefix("# expect: "))
        .map(str::to_string)
        .collect()
}

/// Checks one corpus file in `fixture`; returns a description of every mismatch.
fn check_one(fixture: &Fixture, source: &Path) -> Result<(), String> {
    let name = source
        .file_name()
        .and_then(|n| n.to_str())
        .expect("UTF-8 file name");
    let text = std::fs::read_to_string(source).expect("read corpus file");
    let expected = expectations(&text);
    if expected.is_empty() {
        return Err(format!("{name}: no `# expect:` lines at the top"));
    }
    let config = fixture.write_config(name, &text);
    let output = fixture.check(&config);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let mut problems = Vec::new();
    if output.status.code() != Some(2) {
        problems.push(format!("exit code {:?}, expected 2", output.status.code()));
    }
    if !stdout.is_empty() {
        problems.push(format!("unexpected stdout: {stdout}"));
    }

    let dir = fixture.path().display().to_string();
    let prefix = format!("{}:", config.display());
    let mut lines: Vec<&str> = stderr.lines().collect();
    let last = lines.pop().unwrap_or_default();
    let want_last = format!(
        "{}: {} error(s); configuration is invalid",
        config.display(),
        expected.len()
    );
    if last != want_last {
        problems.push(format!("last line {last:?}, expected {want_last:?}"));
    }
    let actual: Vec<String> = lines
        .iter()
        .map(|line| match line.strip_prefix(&prefix) {
            Some(rest) => rest.replace(&dir, "$DIR"),
            None => format!("(no {prefix} prefix) {line}"),
        })
        .collect();
    if actual != expected {
        problems.push(format!(
            "diagnostics differ\n  expected:\n    {}\n  actual:\n    {}",
            expected.join("\n    "),
            actual.join("\n    ")
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{name}:\n  {}", problems.join("\n  ")))
    }
}

#[test]
fn int1_every_bad_config_is_refused_with_its_expected_diagnostics() {
    let files = corpus();
    assert!(
        files.len() >= 30,
        "the corpus should hold at least 30 configs, found {}",
        files.len()
    );
    let fixture = Fixture::new();
    let failures: Vec<String> = files
        .iter()
        .filter_map(|file| check_one(&fixture, file).err())
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} bad configs did not fail as expected:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

/// Names follow `NN-short-name.toml` with unique numbers, so the corpus reads in order.
#[test]
fn corpus_files_are_numbered_uniquely() {
    let mut numbers = std::collections::HashSet::new();
    for file in corpus() {
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .expect("UTF-8 file name");
        let (number, rest) = name.split_at(2);
        assert!(
            number.chars().all(|c| c.is_ascii_digit()) && rest.starts_with('-'),
            "{name} does not follow NN-short-name.toml"
        );
        assert!(numbers.insert(number.to_string()), "{name}: number reused");
        assert!(
            rest[1..]
                .trim_end_matches(".toml")
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{name}: short name should be lower-case words joined by '-'"
        );
    }
}

/// Several mistakes in one file are all reported by one run.
#[test]
fn several_errors_are_reported_at_once() {
    let multi = corpus()
        .iter()
        .map(|file| std::fs::read_to_string(file).expect("read corpus file"))
        .filter(|text| expectations(text).len() >= 5)
        .count();
    assert!(multi >= 1, "the corpus needs a file with several errors");
}

/// The checker's idea of a file path in messages is the one `$DIR` stands for: the fixture
/// directory, with relative names resolved against the config's folder.
#[test]
fn dir_placeholder_matches_resolved_paths() {
    let fixture = Fixture::new();
    let source = corpus_dir().join("17-missing-private-key-file.toml");
    let text = std::fs::read_to_string(&source).expect("read corpus file");
    let config = fixture.write_config("renkei.toml", &text);
    let output = fixture.check(&config);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let missing = fixture.path().join("missing.key");
    assert!(
        stderr.contains(&format!("cannot read key file {}: ", missing.display())),
        "stderr should name {}: {stderr}",
        missing.display()
    );
}
