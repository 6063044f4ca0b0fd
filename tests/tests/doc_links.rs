//! The repository stands alone: every relative link in every Markdown file names a file inside
//! the repository, and a `#fragment` into a Markdown file names one of its headings (GitHub's
//! anchors). Links to the web (`https:`, `mailto:`) are not followed; code spans and fenced
//! blocks are not links.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

/// Folders that are not the project's documents (build output, downloaded packages).
const SKIPPED: [&str; 3] = [".git", "target", "node_modules"];

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace above tests/")
        .to_path_buf()
}

fn markdown_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a folder entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() {
            if !SKIPPED.contains(&name) {
                markdown_files(&path, found);
            }
        } else if name.ends_with(".md") {
            found.push(path);
        }
    }
}

/// The lines of `text` outside fenced blocks, numbered from 1.
fn prose_lines(text: &str) -> Vec<(usize, String)> {
    let mut fenced = false;
    let mut lines = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        lines.push((index + 1, line.to_string()));
    }
    lines
}

/// The link targets of one line outside its code spans: inline links and images
/// `[text](target "title")`, and reference definitions `[label]: target`.
fn targets(line: &str) -> Vec<String> {
    let line: String = line.split('`').step_by(2).collect();
    let line = line.as_str();
    let mut found = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        let end = after.find(')').unwrap_or(after.len());
        let target = after[..end].split_whitespace().next().unwrap_or("");
        if !target.is_empty() {
            found.push(target.to_string());
        }
        rest = &after[end..];
    }
    let trimmed = line.trim_start();
    if let Some(label_end) = trimmed.strip_prefix('[').and_then(|l| l.find("]:")) {
        if let Some(target) = trimmed[1 + label_end + 2..].split_whitespace().next() {
            found.push(target.to_string());
        }
    }
    found
}

/// A scheme (`https:`, `mailto:`): a link out of the repository, not checked here.
fn is_external(target: &str) -> bool {
    target.split_once(':').is_some_and(|(scheme, _)| {
        !scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphabetic())
    })
}

/// GitHub's anchor of a heading: lower case, punctuation dropped (letters of any script, digits,
/// `_` and `-` stay), spaces as `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '_' || *c == '-' || *c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a Markdown file's headings (a repeated one gets `-1`, `-2`, ...).
fn anchors(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for (_, line) in prose_lines(text) {
        let line = line.replace('`', "");
        let hashes = line.chars().take_while(|c| *c == '#').count();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let base = anchor(line[hashes..].trim().trim_end_matches('#'));
        let n = seen.entry(base.clone()).or_insert(0);
        out.insert(if *n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        });
        *n += 1;
    }
    out
}

/// `path` with `.` and `..` taken out, without touching the file system.
fn normalised(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[test]
fn every_relative_link_of_every_markdown_file_resolves_inside_the_repository() {
    let root = repository();
    let mut files = Vec::new();
    markdown_files(&root, &mut files);
    files.sort();
    assert!(
        files.iter().any(|f| f.ends_with("docs/requirements.md")),
        "no Markdown files found under {}",
        root.display()
    );
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in &files {
        let text =
            std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let shown = file
            .strip_prefix(&root)
            .unwrap_or(file)
            .display()
            .to_string();
        for (line, prose) in prose_lines(&text) {
            for target in targets(&prose).into_iter().filter(|t| !is_external(t)) {
                checked += 1;
                let (path, fragment) = target.split_once('#').unwrap_or((&target, ""));
                let resolved = if path.is_empty() {
                    file.clone()
                } else {
                    normalised(&file.parent().expect("a folder").join(path))
                };
                if !resolved.starts_with(&root) {
                    broken.push(format!("{shown}:{line}: {target}: outside the repository"));
                } else if !resolved.exists() {
                    broken.push(format!("{shown}:{line}: {target}: no such file"));
                } else if !fragment.is_empty() && resolved.extension().is_some_and(|e| e == "md") {
                    let target_text = std::fs::read_to_string(&resolved).unwrap_or_default();
                    if !anchors(&target_text).contains(fragment) {
                        broken.push(format!("{shown}:{line}: {target}: no heading #{fragment}"));
                    }
                }
            }
        }
    }
    assert!(checked > 0, "no relative links found: the parser is broken");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn links_are_found_in_prose_and_not_in_code() {
    let text = "See [the guide](docs/a.md#b-c) and ![x](p.png \"t\").\n\
                `[not](a link)` here\n\
                ```\n[nor](this)\n```\n\
                [ref]: ../up.md\n";
    let found: Vec<String> = prose_lines(text)
        .into_iter()
        .flat_map(|(_, l)| targets(&l))
        .collect();
    assert_eq!(found, ["docs/a.md#b-c", "p.png", "../up.md"]);
    assert!(is_external("https://example.org/"));
    assert!(!is_external("docs/a.md"));
    assert_eq!(
        anchor("5b. A cookie reply moved a peer's `endpoint`"),
        "5b-a-cookie-reply-moved-a-peers-endpoint"
    );
    assert_eq!(anchor("地域医療 (NET-8)"), "地域医療-net-8");
    let heads = anchors("# A\n## A\n```\n# B\n```\n");
    assert_eq!(heads.into_iter().collect::<Vec<_>>(), ["a", "a-1"]);
    assert_eq!(
        normalised(Path::new("/r/docs/../x/./y.md")),
        Path::new("/r/x/y.md")
    );
}
