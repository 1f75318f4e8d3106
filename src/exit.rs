//! Process exit codes. Documented for operators in `docs/operations.md`; scripts and
//! systemd rely on them, so a code's meaning never changes once released.

use std::process::ExitCode;

/// Why keyflip exited. The numeric values are part of the interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Everything asked for was done (or, for `doctor`, nothing would block a rotation).
    Ok = 0,
    /// A runtime error that is not one of the cases below (Azure unreachable, I/O).
    Failure = 1,
    /// Bad usage, or an invalid configuration or plan. Nothing was changed.
    Usage = 2,
    /// A precheck refused the rotation (split consumers, missing permission, shared
    /// keys disabled). Nothing was changed. `doctor` uses it for "would block".
    Refused = 3,
    /// The rotation failed before commit and was rolled back; every consumer is on the
    /// old key, which is still valid.
    RolledBack = 4,
    /// The rotation is parked and needs a human: see `keyflip status` and the report.
    NeedsAttention = 5,
    /// Another rotation of the same storage account is in progress.
    Busy = 6,
    /// Interrupted by a signal; an unfinished rotation resumes at the next start.
    Interrupted = 130,
}

impl Exit {
    /// The exit code a number stands for (the control socket sends codes as
    /// numbers); a number keyflip does not use is a failure.
    pub(crate) fn from_code(code: u8) -> Exit {
        match code {
            0 => Exit::Ok,
            2 => Exit::Usage,
            3 => Exit::Refused,
            4 => Exit::RolledBack,
            5 => Exit::NeedsAttention,
            6 => Exit::Busy,
            130 => Exit::Interrupted,
            _ => Exit::Failure,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        ExitCode::from(e as u8)
    }
}

impl Exit {
    /// The numeric code.
    pub fn code(self) -> u8 {
        self as u8
    }
}
