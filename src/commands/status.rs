//! `keyflip status`: per plan, the active key, both key ages, the last rotation and its
//! outcome, when the plan is due next, and drift. Reads only.

use std::path::Path;

use super::{all_plans, engine_error, fail, open, render, runtime};
use crate::cli::{Output, OutputArgs};
use crate::exit::Exit;
use crate::plan::Plan;
use crate::rotation::Engine;

/// Prints the status of `plans`.
pub async fn print(engine: &Engine, plans: &[Plan], output: Output) -> Exit {
    match engine.status(plans).await {
        Ok(status) => {
            match output {
                Output::Json => match serde_json::to_string_pretty(&status) {
                    Ok(t) => println!("{t}"),
                    Err(e) => return fail(output, &e, Exit::Failure),
                },
                Output::Human => print!("{}", render::status(&status, engine.clock().now())),
            }
            if status.iter().any(|s| s.error.is_some()) {
                Exit::Failure
            } else {
                Exit::Ok
            }
        }
        Err(e) => engine_error(output, &e),
    }
}

pub fn run(config_flag: Option<&Path>, args: &OutputArgs) -> Exit {
    let output = args.output;
    let (config, engine) = match open(config_flag, output) {
        Ok(v) => v,
        Err(exit) => return exit,
    };
    let plans = all_plans(&config);
    match runtime() {
        Ok(rt) => rt.block_on(print(&engine, &plans, output)),
        Err(e) => fail(output, &e, Exit::Failure),
    }
}
