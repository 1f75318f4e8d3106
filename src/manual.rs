//! The manual: what `--help` adds to the clap definitions in [`crate::cli`] (one or
//! two examples and the exit codes of each command), and the one `clap::Command` that
//! `main` parses with, the man pages are rendered from and the shell completions are
//! generated from. So `--help`, `man keyflip-rotate-now` and a completion script can
//! never disagree: they are the same value.
//!
//! Promise (tested): every command, group or leaf, has a page here; every exit code a
//! page names is one of [`Exit`]'s documented codes. Nothing here does IO except
//! [`write_man_pages`] and [`write_completions`], which write what they are asked to.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{CommandFactory as _, FromArgMatches as _};

use crate::cli::{Cli, Shell};
use crate::exit::Exit;

/// Examples and exit codes of one command, keyed by its path (`"rotate now"`; `""`
/// is `keyflip` itself).
struct Page {
    path: &'static str,
    examples: &'static [(&'static str, &'static str)],
    exits: &'static [(Exit, &'static str)],
}

const IMPORT_EXITS: &[(Exit, &str)] = &[
    (
        Exit::Ok,
        "every rotation is in the shared journal (copied now or before)",
    ),
    (
        Exit::Failure,
        "coordination storage or the journal could not be used; accounts already copied stay copied",
    ),
    (
        Exit::Usage,
        "no [coordination], no journal or fingerprint key, or a daemon still runs on this machine",
    ),
    (
        Exit::Busy,
        "a local rotation holds an account's lock, or a replica holds its lease; import again later",
    ),
];

const ROTATION_EXITS: &[(Exit, &str)] = &[
    (
        Exit::Ok,
        "done: the rotation completed (--dry-run: it would start)",
    ),
    (
        Exit::Failure,
        "runtime error (Azure unreachable, journal unusable, a regenerateKey in doubt)",
    ),
    (
        Exit::Usage,
        "bad usage, invalid configuration or plan, or not confirmed (no --yes where keyflip cannot ask, or answered no)",
    ),
    (
        Exit::Refused,
        "the precheck refused (split consumers, missing permission, ...); nothing changed",
    ),
    (
        Exit::RolledBack,
        "failed before commit and rolled back: every consumer is on the old key",
    ),
    (
        Exit::NeedsAttention,
        "parked: a human has to look (see the report and `keyflip status`)",
    ),
    (
        Exit::Busy,
        "another keyflip process or rotation holds the storage account",
    ),
    (
        Exit::Interrupted,
        "interrupted by a signal; `keyflip rotate resume` continues",
    ),
];

const READ_EXITS: &[(Exit, &str)] = &[
    (Exit::Ok, "done"),
    (
        Exit::Failure,
        "a runtime error (the journal, or a plan's live state, could not be read)",
    ),
    (Exit::Usage, "bad usage, or an invalid configuration"),
];

const PAGES: &[Page] = &[
    Page {
        path: "",
        examples: &[
            (
                "keyflip demo",
                "a full rotation against a built-in Azure twin",
            ),
            (
                "keyflip doctor",
                "check that every plan can be rotated, changing nothing",
            ),
        ],
        exits: ROTATION_EXITS,
    },
    Page {
        path: "demo",
        examples: &[
            ("keyflip demo", "rotate the demo plan against the twin"),
            (
                "keyflip demo --keep-running",
                "keep the twin up and print the export KEYFLIP_CONFIG=... line for other commands",
            ),
        ],
        exits: &[
            (Exit::Ok, "the demo rotation completed"),
            (
                Exit::Failure,
                "the twin or the demo's temporary directory could not be set up",
            ),
            (Exit::RolledBack, "the demo rotation rolled back"),
            (Exit::NeedsAttention, "the demo rotation parked"),
        ],
    },
    Page {
        path: "rotate",
        examples: &[
            (
                "keyflip rotate now lakehouse --dry-run",
                "what a rotation of plan lakehouse would do",
            ),
            (
                "keyflip rotate resume",
                "finish every rotation a crash interrupted",
            ),
        ],
        exits: ROTATION_EXITS,
    },
    Page {
        path: "rotate now",
        examples: &[
            (
                "keyflip rotate now lakehouse --dry-run --show-calls",
                "a summary, every step and its Azure calls; change nothing",
            ),
            (
                "keyflip rotate now lakehouse --leaked key1 --yes",
                "incident: move consumers off key1, then regenerate it",
            ),
        ],
        exits: ROTATION_EXITS,
    },
    Page {
        path: "rotate resume",
        examples: &[
            ("keyflip rotate resume", "every unfinished rotation"),
            (
                "keyflip rotate resume lakehouse --output json",
                "one plan's, with the reports as JSON",
            ),
        ],
        exits: ROTATION_EXITS,
    },
    Page {
        path: "status",
        examples: &[
            (
                "keyflip status",
                "one row per plan: active key, key ages, last rotation, next due, state",
            ),
            ("keyflip status --plan lakehouse", "one plan in detail"),
        ],
        exits: READ_EXITS,
    },
    Page {
        path: "history",
        examples: &[
            ("keyflip history", "the last 50 rotations with every step"),
            (
                "keyflip history lakehouse --since 7d --output json",
                "one plan's rotations of the last week, as JSON",
            ),
        ],
        exits: READ_EXITS,
    },
    Page {
        path: "plan discover",
        examples: &[
            (
                "keyflip plan discover /subscriptions/SUB/resourceGroups/RG/providers/Microsoft.Storage/storageAccounts/NAME --out NAME.toml",
                "write a commented plan listing every consumer found",
            ),
            (
                "keyflip plan discover ACCOUNT_ID ACCOUNT_ID --output json",
                "the inventory of several accounts, for scripts",
            ),
        ],
        exits: &[
            (Exit::Ok, "a plan was written for every account"),
            (
                Exit::Failure,
                "an account's keys or the subscriptions could not be read, or a file could not be written",
            ),
            (
                Exit::Usage,
                "bad usage, an invalid configuration or account id, or --out names an existing file",
            ),
            (
                Exit::Refused,
                "no consumer was found for an account, so no plan was written for it",
            ),
        ],
    },
    Page {
        path: "plan",
        examples: &[("keyflip plan check", "validate every plan; no network")],
        exits: &[
            (Exit::Ok, "every plan is valid"),
            (Exit::Failure, "the report could not be written"),
            (Exit::Usage, "a plan or the configuration is invalid"),
        ],
    },
    Page {
        path: "plan check",
        examples: &[
            (
                "keyflip plan check",
                "every plan in the plans directory; no network",
            ),
            (
                "keyflip plan check rotation-plans/demo.toml",
                "one file, errors with file:line:column",
            ),
        ],
        exits: &[
            (Exit::Ok, "every plan is valid"),
            (Exit::Failure, "the report could not be written"),
            (Exit::Usage, "a plan or the configuration is invalid"),
        ],
    },
    Page {
        path: "doctor",
        examples: &[
            (
                "keyflip doctor",
                "check every plan: tokens, permissions, keys, consumers",
            ),
            (
                "keyflip doctor --plan demo --output json",
                "one plan, as JSON (--strict: unlisted consumers block)",
            ),
        ],
        exits: &[
            (
                Exit::Ok,
                "nothing would block a rotation (warnings allowed)",
            ),
            (
                Exit::Failure,
                "the checks could not start (HTTPS client, credential, runtime)",
            ),
            (
                Exit::Usage,
                "invalid configuration, or --plan names no valid plan",
            ),
            (
                Exit::Refused,
                "something would block a rotation: at least one ✗ row",
            ),
        ],
    },
    Page {
        path: "daemon",
        examples: &[
            (
                "systemctl enable --now keyflip",
                "run it as the packaged systemd service",
            ),
            (
                "keyflip --config ./keyflip.toml daemon",
                "in the foreground, with another configuration",
            ),
        ],
        exits: &[
            (
                Exit::Ok,
                "stopped by SIGTERM/SIGINT after steps in flight were journaled",
            ),
            (
                Exit::Failure,
                "a runtime error, or the shutdown timeout passed with steps in doubt",
            ),
            (
                Exit::Usage,
                "invalid configuration or plans; the daemon did not start",
            ),
        ],
    },
    Page {
        path: "coordination",
        examples: &[(
            "keyflip coordination import-journal",
            "copy this machine's journal into the shared journal (moving to replicas)",
        )],
        exits: IMPORT_EXITS,
    },
    Page {
        path: "coordination import-journal",
        examples: &[
            (
                "sudo systemctl stop keyflip && keyflip coordination import-journal",
                "move a single-node keyflip onto replicas: stop it, then copy its journal",
            ),
            (
                "keyflip coordination import-journal --output json",
                "the same, one entry per account with the rotations copied",
            ),
        ],
        exits: IMPORT_EXITS,
    },
    Page {
        path: "version",
        examples: &[
            ("keyflip --version", "version, commit, target, Azure SDK"),
            ("keyflip version --output json", "the same as JSON"),
        ],
        exits: &[(Exit::Ok, "always")],
    },
    Page {
        path: "completions",
        examples: &[
            (
                "keyflip completions bash > /usr/share/bash-completion/completions/keyflip",
                "install bash completion",
            ),
            (
                "keyflip completions fish > ~/.config/fish/completions/keyflip.fish",
                "install fish completion for yourself",
            ),
        ],
        exits: &[
            (Exit::Ok, "the script was written to stdout"),
            (Exit::Failure, "stdout could not be written"),
        ],
    },
    Page {
        path: "manpages",
        examples: &[(
            "keyflip manpages /usr/local/share/man/man1",
            "write keyflip.1, keyflip-rotate-now.1, ...",
        )],
        exits: &[
            (Exit::Ok, "every page was written"),
            (
                Exit::Failure,
                "the directory could not be created or written",
            ),
        ],
    },
];

/// The text after a command's options in `--help` (and the man page's EXTRA section).
fn after_help(page: &Page) -> String {
    let mut text = String::from("Examples:\n");
    for (command, what) in page.examples {
        text.push_str(&format!("  {command}\n      {what}\n"));
    }
    text.push_str("\nExit codes (docs/operations.md, \"Exit codes\"):\n");
    for (exit, meaning) in page.exits {
        text.push_str(&format!("  {:>3}  {meaning}\n", exit.code()));
    }
    text.trim_end().to_owned()
}

fn annotate(cmd: clap::Command, path: &str) -> clap::Command {
    let mut cmd = match PAGES.iter().find(|p| p.path == path) {
        Some(page) => cmd.after_help(after_help(page)),
        None => cmd,
    };
    let children: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    for child in children {
        let child_path = if path.is_empty() {
            child.clone()
        } else {
            format!("{path} {child}")
        };
        cmd = cmd.mut_subcommand(&child, |sub| annotate(sub, &child_path));
    }
    cmd
}

/// keyflip's command line with its manual: what `main` parses with.
pub fn command() -> clap::Command {
    annotate(Cli::command(), "")
}

/// Parses the process's arguments (exits with clap's message and code 2 on bad usage,
/// 0 after `--help`/`--version`).
pub fn parse() -> Cli {
    let matches = command().get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// Writes one man page per command (`keyflip.1`, `keyflip-rotate-now.1`, ...) into
/// `dir`, creating it. Returns the files written.
pub fn write_man_pages(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut cmd = command().disable_help_subcommand(true);
    cmd.build();
    let mut written = Vec::new();
    fn walk(cmd: &clap::Command, dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        let page = clap_mangen::Man::new(cmd.clone()).manual("keyflip manual");
        out.push(page.generate_to(dir)?);
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            walk(sub, dir, out)?;
        }
        Ok(())
    }
    walk(&cmd, dir, &mut written)?;
    Ok(written)
}

/// Writes the completion script for `shell` to `out`.
pub fn write_completions(shell: Shell, out: &mut dyn Write) {
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(shell, &mut command(), "keyflip", out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(cmd: &clap::Command, prefix: &str, out: &mut Vec<String>) {
        for sub in cmd.get_subcommands() {
            let path = if prefix.is_empty() {
                sub.get_name().to_owned()
            } else {
                format!("{prefix} {}", sub.get_name())
            };
            out.push(path.clone());
            paths(sub, &path, out);
        }
    }

    #[test]
    fn every_command_has_examples_and_exit_codes() {
        let mut all = vec![String::new()];
        paths(&Cli::command(), "", &mut all);
        for path in &all {
            let page = PAGES.iter().find(|p| p.path == path);
            let page = page.unwrap_or_else(|| panic!("no manual page for `keyflip {path}`"));
            assert!(
                !page.examples.is_empty() && page.examples.len() <= 2,
                "{path}"
            );
            assert!(page.exits.iter().any(|(e, _)| *e == Exit::Ok), "{path}");
            for (command, _) in page.examples {
                assert!(command.contains("keyflip"), "{path}: {command}");
            }
        }
        for page in PAGES {
            assert!(
                all.iter().any(|p| p == page.path),
                "stale page {}",
                page.path
            );
        }
    }

    #[test]
    fn the_exit_codes_named_are_the_documented_ones() {
        let doc = include_str!("../docs/operations.md");
        let table = doc
            .split("## Exit codes")
            .nth(1)
            .and_then(|rest| rest.split("\n## ").next())
            .unwrap_or_default();
        for page in PAGES {
            for (exit, _) in page.exits {
                let row = format!("| {} |", exit.code());
                assert!(
                    table.contains(&row),
                    "exit {} is not in docs/operations.md",
                    exit.code()
                );
            }
        }
    }

    #[test]
    fn help_shows_the_examples_and_exit_codes() {
        let mut cmd = command();
        let help = cmd
            .find_subcommand_mut("rotate")
            .and_then(|r| r.find_subcommand_mut("now"))
            .map(|c| c.render_help().to_string())
            .unwrap_or_default();
        assert!(
            help.contains("keyflip rotate now lakehouse --dry-run"),
            "{help}"
        );
        assert!(help.contains("Exit codes"), "{help}");
        assert!(help.contains("130  interrupted"), "{help}");
    }

    #[test]
    fn man_pages_cover_every_command_and_carry_the_same_text() {
        let dir = tempfile::tempdir().unwrap();
        let written = write_man_pages(dir.path()).unwrap();
        let mut names: Vec<String> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let mut all = Vec::new();
        paths(&Cli::command(), "", &mut all);
        let mut expected: Vec<String> = all
            .iter()
            .map(|p| format!("keyflip-{}.1", p.replace(' ', "-")))
            .collect();
        expected.push("keyflip.1".into());
        expected.sort();
        assert_eq!(names, expected);
        let page = std::fs::read_to_string(dir.path().join("keyflip-doctor.1")).unwrap();
        assert!(
            page.contains("keyflip doctor \\-\\-plan demo \\-\\-output json"),
            "{page}"
        );
        assert!(page.contains("Exit codes"), "{page}");
    }

    #[test]
    fn completions_name_every_subcommand() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut out = Vec::new();
            write_completions(shell, &mut out);
            let script = String::from_utf8(out).unwrap();
            for word in [
                "rotate",
                "resume",
                "doctor",
                "leaked",
                "dry-run",
                "completions",
            ] {
                assert!(script.contains(word), "{shell:?} lacks {word}");
            }
        }
    }
}
