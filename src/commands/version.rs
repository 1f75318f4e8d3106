//! `keyflip version`: this build's version, commit, target and Azure SDK crate
//! versions ([`crate::build_info`]), for people or as JSON. Touches no network,
//! journal or socket.

use crate::build_info::BuildInfo;
use crate::cli::{Output, OutputArgs};
use crate::exit::Exit;

pub fn run(args: &OutputArgs) -> Exit {
    let info = BuildInfo::current();
    let text = match args.output {
        Output::Human => format!("keyflip {}\n", crate::build_info::LONG_VERSION),
        Output::Json => match serde_json::to_string_pretty(&info) {
            Ok(json) => format!("{json}\n"),
            Err(e) => {
                eprintln!("keyflip: cannot render the build information: {e}");
                return Exit::Failure;
            }
        },
    };
    print_or_fail(&text)
}

fn print_or_fail(text: &str) -> Exit {
    use std::io::Write as _;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Ok(()) => Exit::Ok,
        Err(e) => {
            eprintln!("keyflip: cannot write to stdout: {e}");
            Exit::Failure
        }
    }
}
