//! `keyflip version`: this build's version, commit, target and Azure SDK crate
//! versions ([`crate::build_info`]), for people or as JSON (a versioned document like
//! every command's: the package version is `package_version`). Touches no network,
//! journal or socket.

use crate::build_info::BuildInfo;
use crate::cli::{Output, OutputArgs};
use crate::exit::Exit;

pub fn run(args: &OutputArgs) -> Exit {
    let info = BuildInfo::current();
    let text = match args.output {
        Output::Human => format!("keyflip {}\n", crate::build_info::LONG_VERSION),
        Output::Json => json(&info),
    };
    print_or_fail(&text)
}

/// `{version, package_version, commit, ...}`: a document like every command's, so
/// `version` is the document's version and the package's is `package_version`.
pub(crate) fn json(info: &BuildInfo) -> String {
    super::render::json::document(info)
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
