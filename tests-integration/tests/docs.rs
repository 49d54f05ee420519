//! The repository stands alone: no file points at documents outside it, every relative link of a
//! Markdown file and every Markdown file under docs/ that a file names exists.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The repository's text files (tracked by git, or every file outside target/ and .git/).
fn text_files() -> Vec<PathBuf> {
    let root = root();
    let listed = Command::new("git")
        .arg("-C")
        .arg(&root)
        .args(["ls-files", "-z"])
        .output()
        .ok()
        .filter(|o| o.status.success() && !o.stdout.is_empty());
    let mut files: Vec<PathBuf> = match listed {
        Some(o) => o
            .stdout
            .split(|b| *b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| root.join(String::from_utf8_lossy(p).as_ref()))
            .collect(),
        None => {
            let mut all = Vec::new();
            let mut dirs = vec![root.clone()];
            while let Some(d) = dirs.pop() {
                for e in std::fs::read_dir(&d).expect("read dir").flatten() {
                    let p = e.path();
                    let name = e.file_name();
                    if name == "target" || name == ".git" {
                        continue;
                    }
                    if p.is_dir() {
                        dirs.push(p);
                    } else {
                        all.push(p);
                    }
                }
            }
            all
        }
    };
    files.retain(|p| {
        p.is_file()
            && !matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("png" | "jsonl" | "lock" | "whl")
            )
    });
    assert!(files.len() > 50, "found only {} files", files.len());
    files
}

#[test]
fn nothing_points_outside_the_repository() {
    // Built from pieces so that this file does not match itself.
    let outside = [
        format!("../{}/", "shared"),
        format!("{}/DESIGN", "shared"),
        format!("{}/ebpf-toolchain", "shared"),
        format!("{}/seeds", "shared"),
        format!("{}.md", "DESIGN"),
        format!("/work/{}", "main"),
    ];
    let mut bad = Vec::new();
    for f in text_files() {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        for (n, line) in text.lines().enumerate() {
            if let Some(p) = outside.iter().find(|p| line.contains(p.as_str())) {
                bad.push(format!("{}:{}: {p}", f.display(), n + 1));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "references outside the repository:\n{}",
        bad.join("\n")
    );
}

#[test]
fn links_and_named_docs_exist() {
    let root = root();
    let mut bad = Vec::new();
    for f in text_files() {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        let dir = f.parent().unwrap_or(&root);
        // Markdown links: ](target) with a relative target.
        if f.extension().is_some_and(|e| e == "md") {
            for (i, _) in text.match_indices("](") {
                let rest = &text[i + 2..];
                let Some(end) = rest.find(')') else { continue };
                let target = rest[..end].split('#').next().unwrap_or("");
                if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                if !dir.join(target).exists() {
                    bad.push(format!("{}: link to {target}", f.display()));
                }
            }
        }
        // A Markdown file under docs/ named anywhere, relative to the repository root.
        for (i, _) in text.match_indices("docs/") {
            let name: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-'))
                .collect();
            let name = name.trim_end_matches('.');
            if name.ends_with(".md") && !root.join(name).exists() {
                bad.push(format!("{}: names {name}", f.display()));
            }
        }
    }
    assert!(bad.is_empty(), "missing:\n{}", bad.join("\n"));
}
