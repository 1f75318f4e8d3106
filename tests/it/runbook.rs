//! `docs/operations.md`, "When things go wrong", is a runbook: every `keyflip` command
//! in its code blocks must be one a test runs, word for word
//! ([`crate::support::binary::Cli::runbook`] refuses any other). This test makes it
//! mechanical: it extracts the commands from the section and the commands the test
//! sources pass to `runbook(`, and each set must contain the other.

use std::collections::BTreeSet;
use std::path::Path;

const OPERATIONS: &str = include_str!("../../docs/operations.md");
const SECTION: &str = "## When things go wrong";

/// Every `keyflip ...` line of the section's code blocks, without a trailing comment,
/// and every `keyflip ...` in inline code of its prose and tables (the "run" column),
/// with the plan and key left as the `PLAN` and `KEY` the section uses.
pub fn commands() -> Vec<String> {
    let start = OPERATIONS
        .find(SECTION)
        .unwrap_or_else(|| panic!("docs/operations.md has no {SECTION:?} section"));
    let body = &OPERATIONS[start + SECTION.len()..];
    let end = body.find("\n## ").unwrap_or(body.len());
    let mut out = Vec::new();
    let mut in_code = false;
    for line in body[..end].lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        let line = line.trim();
        if in_code {
            if line.starts_with("keyflip ") {
                let command = line.split(" #").next().unwrap_or(line).trim();
                out.push(command.to_owned());
            }
            continue;
        }
        // Inline code: the odd-numbered pieces between backticks.
        for span in line.split('`').skip(1).step_by(2) {
            if span.starts_with("keyflip ") && !out.iter().any(|c| c == span) {
                out.push(span.to_owned());
            }
        }
    }
    out
}

/// The string literals passed to `runbook(` in the test sources under `dir`.
fn run_by_tests(dir: &Path, out: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            run_by_tests(&path, out);
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let mut rest = text.as_str();
        while let Some(at) = rest.find(".runbook(") {
            rest = &rest[at + ".runbook(".len()..];
            let literal = rest.trim_start().trim_start_matches('&');
            if let Some(literal) = literal.strip_prefix('"')
                && let Some(end) = literal.find('"')
                && literal.starts_with("keyflip ")
            {
                out.insert(literal[..end].to_owned());
            }
        }
    }
}

#[test]
fn every_command_of_when_things_go_wrong_is_run_by_a_test() {
    let documented: BTreeSet<String> = commands().into_iter().collect();
    assert!(
        documented.len() >= 8,
        "the section lists too few commands: {documented:#?}"
    );
    let mut run = BTreeSet::new();
    run_by_tests(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it"),
        &mut run,
    );
    let untested: Vec<_> = documented.difference(&run).collect();
    assert!(
        untested.is_empty(),
        "documented in \"When things go wrong\" but run by no test: {untested:#?}"
    );
    let stale: Vec<_> = run.difference(&documented).collect();
    assert!(
        stale.is_empty(),
        "run by a test as documented but not in the section: {stale:#?}"
    );
}
