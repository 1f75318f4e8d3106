//! `keyflip completions SHELL` and `keyflip manpages DIR`: shell completion scripts
//! and man pages generated from the same `clap::Command` `--help` is rendered from
//! ([`crate::manual`]), so they cannot disagree. Touch no network, journal or socket.

use std::io::Write as _;

use crate::cli::{CompletionsArgs, ManpagesArgs};
use crate::exit::Exit;

pub fn completions(args: &CompletionsArgs) -> Exit {
    let mut script = Vec::new();
    crate::manual::write_completions(args.shell, &mut script);
    match std::io::stdout().lock().write_all(&script) {
        Ok(()) => Exit::Ok,
        Err(e) => {
            eprintln!("keyflip: cannot write the completion script to stdout: {e}");
            Exit::Failure
        }
    }
}

pub fn manpages(args: &ManpagesArgs) -> Exit {
    match crate::manual::write_man_pages(&args.dir) {
        Ok(pages) => {
            println!("wrote {} man pages to {}", pages.len(), args.dir.display());
            Exit::Ok
        }
        Err(e) => {
            eprintln!(
                "keyflip: cannot write man pages to {}: {e}; check that the directory is writable",
                args.dir.display()
            );
            Exit::Failure
        }
    }
}
