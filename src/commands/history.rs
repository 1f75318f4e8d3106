//! `keyflip history [PLAN]`: past rotations, newest first, with every step and its
//! timing. Reads the journal only.

use std::path::Path;

use super::{engine_error, fail, open, render};
use crate::cli::{HistoryArgs, Output};
use crate::exit::Exit;

/// How many rotations `history` shows.
pub const LIMIT: usize = 50;

pub fn run(config_flag: Option<&Path>, args: &HistoryArgs) -> Exit {
    let output = args.output.output;
    let (_, engine) = match open(config_flag, output) {
        Ok(v) => v,
        Err(exit) => return exit,
    };
    match engine.history(args.plan.as_deref(), LIMIT) {
        Ok(reports) => {
            match output {
                Output::Json => match serde_json::to_string_pretty(&reports) {
                    Ok(t) => println!("{t}"),
                    Err(e) => return fail(output, &e, Exit::Failure),
                },
                Output::Human => print!("{}", render::history(&reports)),
            }
            Exit::Ok
        }
        Err(e) => engine_error(output, &e),
    }
}
