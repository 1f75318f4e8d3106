//! The `keyflip` binary: parses the command line and hands off to the library.
//! Errors are printed with their full cause chain and mapped to documented exit codes
//! (`keyflip::exit::Exit`).

use std::process::ExitCode;

use clap::Parser as _;
use keyflip::cli::{Cli, Command};
use keyflip::exit::Exit;

fn main() -> ExitCode {
    keyflip::install_crypto_provider();
    let cli = Cli::parse();
    let exit = match cli.command {
        Command::Demo(_) => not_yet("demo"),
        Command::Rotate(_) => not_yet("rotate"),
        Command::Status(_) => not_yet("status"),
        Command::History(_) => not_yet("history"),
        Command::Plan(_) => not_yet("plan"),
        Command::Doctor(_) => not_yet("doctor"),
        Command::Daemon => not_yet("daemon"),
    };
    exit.into()
}

fn not_yet(command: &str) -> Exit {
    eprintln!("keyflip: `{command}` is not built yet");
    Exit::Failure
}
