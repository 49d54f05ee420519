//! `boadrun --help` and the README agree: every flag of the README's table with the same default,
//! every `BOAD_*` variable the README names, and every setting with the same default; and every
//! option `--help` lists is in the README's table.

use std::collections::BTreeSet;
use std::process::Command;

fn help() -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_boadrun"))
        .arg("--help")
        .output()
        .expect("run boadrun --help");
    assert!(out.status.success(), "boadrun --help failed");
    String::from_utf8(out.stdout).expect("utf-8 help")
}

fn readme() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
    std::fs::read_to_string(path).expect("read README.md")
}

/// The rows (cells, without backticks) of the first table after the heading that starts with `heading`.
fn table(text: &str, heading: &str) -> Vec<Vec<String>> {
    let start = text
        .find(&format!("\n{heading}"))
        .unwrap_or_else(|| panic!("README has no heading {heading:?}"));
    let rows: Vec<Vec<String>> = text[start..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2) // header and separator
        .map(|l| {
            l.trim()
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().replace('`', ""))
                .collect()
        })
        .collect();
    assert!(!rows.is_empty(), "no table under {heading:?}");
    rows
}

/// The part of the help text about option `--long`: from its line to the next option line.
fn option_section<'a>(help: &'a str, long: &str) -> Option<&'a str> {
    let lines: Vec<&str> = help.lines().collect();
    let at = lines.iter().position(|l| {
        let t = l.trim_start();
        t.starts_with('-')
            && t.split([',', ' '])
                .any(|w| w == long || w.starts_with(&format!("{long}=")))
    })?;
    let from = help.find(lines[at])?;
    let rest = &help[from + lines[at].len()..];
    let end = rest
        .lines()
        .position(|l| {
            let t = l.trim_start();
            l.starts_with("  ") && t.starts_with('-') && !t.starts_with("- ")
        })
        .and_then(|n| {
            rest.match_indices('\n')
                .nth(n.saturating_sub(1))
                .map(|(i, _)| i)
        })
        .unwrap_or(rest.len());
    Some(&help[from..from + lines[at].len() + end])
}

#[test]
fn every_readme_flag_is_in_help_with_its_default() {
    let (help, readme) = (help(), readme());
    // The flags of a job on one machine, then those of a job across machines.
    let mut rows = table(&readme, "## Running a job");
    rows.extend(table(&readme, "## Several machines"));
    let mut named = BTreeSet::new();
    for row in &rows {
        let longs: Vec<&str> = row[0]
            .split([',', ' '])
            .filter(|w| w.starts_with("--"))
            .collect();
        assert!(
            !longs.is_empty(),
            "README flag row without a --long name: {row:?}"
        );
        for long in longs {
            named.insert(long.to_string());
            let section = option_section(&help, long)
                .unwrap_or_else(|| panic!("boadrun --help does not list {long} (README: {row:?})"));
            let default = row[1].as_str();
            if ["off", "unset", "none", ""].contains(&default) {
                assert!(
                    !section.contains("[default:"),
                    "README says {long} has no default, --help says:\n{section}"
                );
            } else {
                assert!(
                    section.contains(&format!("[default: {default}]")),
                    "README says {long} defaults to {default:?}; --help says:\n{section}"
                );
            }
        }
    }
    // The other way round: every option of --help is in the README's table.
    for line in help.lines() {
        let t = line.trim_start();
        if !line.starts_with("  ") || !t.starts_with('-') || t.starts_with("- ") {
            continue;
        }
        for long in t.split([',', ' ']).filter(|w| w.starts_with("--")) {
            if long == "--help" || long == "--version" {
                continue;
            }
            assert!(
                named.contains(long),
                "boadrun --help lists {long}, the README's flag table does not"
            );
        }
    }
}

#[test]
fn every_readme_setting_is_in_help_with_its_default() {
    let (help, readme) = (help(), readme());
    for row in table(&readme, "## Settings") {
        let (name, default) = (&row[0], &row[1]);
        assert!(
            help.contains(&format!("  {name} [{default}]")),
            "README says {name} defaults to {default:?}; boadrun --help does not list \"{name} [{default}]\""
        );
    }
}

#[test]
fn every_variable_the_readme_names_is_in_help() {
    let (help, readme) = (help(), readme());
    // Names of the C API (`BOAD_OK`, `BOAD_F64`, ...) are not variables.
    let header = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../ffi/include/boad.h"
    ))
    .expect("read boad.h");
    let mut names = BTreeSet::new();
    let bytes = readme.as_bytes();
    let mut i = 0;
    while let Some(off) = readme[i..].find("BOAD_") {
        let start = i + off;
        let end = start
            + bytes[start..]
                .iter()
                .position(|b| !(b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b'_'))
                .unwrap_or(bytes.len() - start);
        names.insert(readme[start..end].trim_end_matches('_').to_string());
        i = end;
    }
    assert!(names.len() >= 10, "found only {names:?}");
    // The test suite's own switch is no setting of boadrun or the ranks.
    names.remove(boad_test_support::ENV_ALLOW_SKIP);
    for name in names.iter().filter(|n| !header.contains(n.as_str())) {
        assert!(
            help.contains(name.as_str()),
            "the README names {name}; boadrun --help does not"
        );
    }
}
