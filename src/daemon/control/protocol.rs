//! The control socket's wire format, version [`VERSION`]: one JSON object per line.
//!
//! The client sends one [`Request`] line (`{"v":1,"request":"status",...}`) and
//! reads lines until a final one: zero or more `{"v":1,"progress":{...}}` (a rotation's
//! [`ProgressEvent`]s, while it runs), then `{"v":1,"ok":{...}}` or
//! `{"v":1,"error":{...}}`. A refused peer gets the error line without the server
//! reading anything. The request enum is closed: anything else is a `bad_request`
//! error, and a request of another version an `unsupported_version` error naming
//! both versions.
//!
//! Promises: no reply carries a key value (replies are built from reports and
//! statuses that hold names and fingerprints only); [`Reply`]'s `Debug` prints its
//! kind only, so a reply logged by mistake cannot leak what it holds.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::exit::Exit;
use crate::rotation::machine::Mode;

/// The protocol version this build speaks. A server answers only its own version.
pub const VERSION: u32 = 1;

/// Longest request line the server reads.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// A request line: the version and the request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub v: u32,
    #[serde(flatten)]
    pub request: Request,
}

/// Everything the daemon can be asked. Closed: new requests need a new variant here
/// and in the server's dispatch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Per plan: the engine's status plus the daemon's schedule state.
    Status { plan: Option<String> },
    /// Past rotations, newest first.
    History { plan: Option<String>, limit: usize },
    /// Rotate a plan now (or only show what a rotation would do).
    RotateNow {
        plan: String,
        mode: Mode,
        /// Overrides the plan's grace period.
        grace_secs: Option<u64>,
        dry_run: bool,
    },
    /// Finish or roll back unfinished rotations (of one plan, or all).
    Resume { plan: Option<String> },
}

impl Request {
    /// A short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Status { .. } => "status",
            Request::History { .. } => "history",
            Request::RotateNow { dry_run: true, .. } => "rotate-now (dry run)",
            Request::RotateNow { .. } => "rotate-now",
            Request::Resume { .. } => "resume",
        }
    }
}

/// Why a request failed. `exit` is what the CLI exits with, so a command run through
/// the daemon exits like the same command run standalone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    pub code: ErrorCode,
    pub message: String,
    pub exit: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The peer's uid may not use the socket.
    PermissionDenied,
    UnsupportedVersion,
    BadRequest,
    UnknownPlan,
    /// The plan is rotating, resuming or being repaired already.
    Busy,
    ShuttingDown,
    /// The engine failed (Azure, journal, ...); the message says how.
    Failed,
}

impl ErrorReply {
    pub fn new(code: ErrorCode, message: impl Into<String>, exit: Exit) -> ErrorReply {
        ErrorReply {
            code,
            message: message.into(),
            exit: exit as u8,
        }
    }
}

/// A successful answer. The payloads are the engine's serializable reports, kept as
/// JSON so the protocol does not change when a report gains a field.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reply {
    Status {
        daemon: DaemonInfo,
        plans: Vec<serde_json::Value>,
    },
    History {
        rotations: Vec<serde_json::Value>,
    },
    /// A finished rotation run (`rotate now`), with the exit code it means.
    Rotation {
        report: serde_json::Value,
        exit: u8,
    },
    DryRun {
        dry_run: serde_json::Value,
        exit: u8,
    },
    Resumed {
        reports: Vec<serde_json::Value>,
        exit: u8,
    },
}

impl Reply {
    pub fn kind(&self) -> &'static str {
        match self {
            Reply::Status { .. } => "status",
            Reply::History { .. } => "history",
            Reply::Rotation { .. } => "rotation",
            Reply::DryRun { .. } => "dry_run",
            Reply::Resumed { .. } => "resumed",
        }
    }

    /// The exit code the CLI ends with.
    pub fn exit(&self) -> u8 {
        match self {
            Reply::Status { .. } | Reply::History { .. } => Exit::Ok as u8,
            Reply::Rotation { exit, .. }
            | Reply::DryRun { exit, .. }
            | Reply::Resumed { exit, .. } => *exit,
        }
    }
}

/// Only the kind: the payloads are reports that must never end up in a log by way of
/// a stray `{:?}`, however harmless they are meant to be.
impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reply::{}(..)", self.kind())
    }
}

/// The daemon's own state, in a status reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonInfo {
    pub pid: u32,
    pub version: String,
    /// One line, as sent to systemd's `STATUS=`.
    pub summary: String,
}

/// A line from the server.
#[derive(Serialize)]
pub struct ServerLine<'a> {
    pub v: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<&'a crate::rotation::ProgressEvent>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ok: Option<&'a Reply>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a ErrorReply>,
}

/// A line as the client reads it: progress events stay JSON (the client only shows
/// them).
#[derive(Deserialize)]
pub struct ClientLine {
    pub v: u32,
    pub progress: Option<serde_json::Value>,
    pub ok: Option<Reply>,
    pub error: Option<ErrorReply>,
}

impl fmt::Debug for ClientLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientLine")
            .field("v", &self.v)
            .field("progress", &self.progress.is_some())
            .field("ok", &self.ok)
            .field("error", &self.error)
            .finish()
    }
}

/// One server line as text, newline included.
pub fn line(
    progress: Option<&crate::rotation::ProgressEvent>,
    ok: Option<&Reply>,
    error: Option<&ErrorReply>,
) -> String {
    let mut text = serde_json::to_string(&ServerLine {
        v: VERSION,
        progress,
        ok,
        error,
    })
    // These types serialize infallibly (string keys, no custom impls that fail).
    .unwrap_or_else(|e| format!("{{\"v\":{VERSION},\"error\":{{\"code\":\"failed\",\"message\":\"cannot encode the reply: {e}\",\"exit\":1}}}}"));
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::KeyName;

    #[test]
    fn requests_round_trip_and_unknown_ones_are_refused() {
        let requests = [
            Request::Status { plan: None },
            Request::History {
                plan: Some("demo".into()),
                limit: 5,
            },
            Request::RotateNow {
                plan: "demo".into(),
                mode: Mode::Leaked {
                    key: KeyName::Key2,
                    revoke_first: false,
                },
                grace_secs: Some(60),
                dry_run: false,
            },
            Request::Resume { plan: None },
        ];
        for request in requests {
            let text = serde_json::to_string(&Envelope {
                v: VERSION,
                request: request.clone(),
            })
            .unwrap();
            let back: Envelope = serde_json::from_str(&text).unwrap();
            assert_eq!(back.request, request, "{text}");
        }
        let text = r#"{"v":1,"request":"status","plan":null}"#;
        assert!(serde_json::from_str::<Envelope>(text).is_ok());
        for bad in [
            r#"{"v":1,"request":"delete_everything"}"#,
            r#"{"v":1,"request":"status","plan":null,"extra":1}"#,
            r#"{"request":"status","plan":null}"#,
        ] {
            assert!(serde_json::from_str::<Envelope>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reply_debug_shows_the_kind_only() {
        let reply = Reply::Rotation {
            report: serde_json::json!({"anything": "that must not be printed"}),
            exit: 0,
        };
        assert_eq!(format!("{reply:?}"), "Reply::rotation(..)");
        let text = line(None, Some(&reply), None);
        let parsed: ClientLine = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed.ok, Some(reply));
        assert!(!format!("{parsed:?}").contains("must not"));
    }
}
