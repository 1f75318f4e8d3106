//! The control socket's wire format, version [`VERSION`]: one JSON object per line.
//!
//! The client sends one request line: the version and a [`Request`], the very value
//! the command line became (`{"v":7,"request":"status","plan":null}`). It reads lines
//! until a final one: zero or more `{"v":7,"progress":{...}}` (the rotation's
//! [`ProgressEvent`]s, while it runs), then `{"v":7,"ok":{"daemon":{...},"answer":
//! {...}}}` (an [`Answer`] with the daemon's [`DaemonInfo`]) or `{"v":7,"error":
//! {"code":...,"message":...,"exit":N}}` (a [`CommandError`]). Requests, answers,
//! progress events and errors are the typed values the standalone command uses, so
//! one renderer prints both. A refused peer gets the error line without the server
//! reading anything. The request enum is closed: anything else is a `bad_request`
//! error, and a request of another version an `unsupported_version` error naming
//! both versions; a client reading a line of another version says the same.
//!
//! Version history: 1 carried reports as untyped JSON and `grace_secs`; 2 carries the
//! typed request (`grace_ms`), answers and errors; 3 adds `history`'s `since`, the
//! `issued` progress event and a dry run's typed calls and grace; 4 adds who asks
//! (`by`: uid, user, `--reason`, `--ticket`; the daemon stamps the peer's uid),
//! `--adopt`, `rotate resume --grace`, and reports' trigger, requester and takeover;
//! 5 adds the usage gate and unlisted consumers (`resume`'s `force_retire`, the
//! `retire` mode, `check_usage` steps, their outcomes, notes and refusals, the
//! `unlisted_consumers` refusal); 6 adds the `unlisted_check_incomplete` warning and
//! refusal (reports of an unlisted-consumer check that could not read everything);
//! 7 adds a revoke first that revokes on the keys alone (the `observe_keys` and
//! `observe_after_revoke` steps, the `not_moved_after_revoke` park).
//! Within 6, the `resuming` event gained an optional `mode` (`#[serde(default)]`: a
//! peer without it ignores it, one with it reads its absence as unknown), so an
//! added optional field does not bump the version.
//! The error line's shape is the same
//! in both, so either side can read the other's version refusal.
//!
//! Promises: no line carries a key value (answers are built from reports and statuses
//! that hold names and fingerprints only); [`Done`]'s and [`Answer`]'s `Debug` print
//! the kind only, so a reply logged by mistake cannot leak what it holds.

use std::fmt;

use serde::{Deserialize, Serialize};

pub use crate::commands::answer::{Answer, CommandError, ErrorCode};
pub use crate::commands::request::Request;
use crate::rotation::ProgressEvent;

/// The protocol version this build speaks. A server answers only its own version.
pub const VERSION: u32 = 7;

/// Longest request line the server reads.
pub(crate) const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// A request line: the version and the request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Envelope {
    pub v: u32,
    #[serde(flatten)]
    pub request: Request,
}

/// The daemon that answered: the line a command prints to say who did the work.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonInfo {
    pub pid: u32,
    pub version: String,
    /// One line, as sent to systemd's `STATUS=`.
    pub summary: String,
}

/// A successful final line: who answered and the answer.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Done {
    pub daemon: DaemonInfo,
    pub answer: Answer,
}

impl fmt::Debug for Done {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Done")
            .field("daemon", &self.daemon)
            .field("answer", &self.answer)
            .finish()
    }
}

/// One line from the server: exactly one of `progress`, `ok`, `error`.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct ServerLine {
    pub v: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<ProgressEvent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<Done>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<CommandError>,
}

impl fmt::Debug for ServerLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerLine")
            .field("v", &self.v)
            .field("progress", &self.progress.is_some())
            .field("ok", &self.ok)
            .field("error", &self.error)
            .finish()
    }
}

impl ServerLine {
    pub fn progress(event: ProgressEvent) -> ServerLine {
        ServerLine {
            v: VERSION,
            progress: Some(event),
            ok: None,
            error: None,
        }
    }

    pub fn ok(done: Done) -> ServerLine {
        ServerLine {
            v: VERSION,
            progress: None,
            ok: Some(done),
            error: None,
        }
    }

    pub fn error(error: CommandError) -> ServerLine {
        ServerLine {
            v: VERSION,
            progress: None,
            ok: None,
            error: Some(error),
        }
    }

    /// The line as text, newline included.
    pub fn text(&self) -> String {
        let mut text = serde_json::to_string(self)
            // These types serialize infallibly (string keys, no custom impls that fail).
            .unwrap_or_else(|e| format!("{{\"v\":{VERSION},\"error\":{{\"code\":\"failed\",\"message\":\"cannot encode the reply: {e}\",\"exit\":1}}}}"));
        text.push('\n');
        text
    }
}

/// Only the version of a line, read first so a line of another version is named as
/// such rather than failing to parse.
#[derive(Deserialize)]
pub(crate) struct VersionOnly {
    pub v: Option<u32>,
}

/// What a peer of another protocol version is told (by either side).
pub(crate) fn version_mismatch(daemon: u32, client: u32) -> String {
    format!(
        "the running daemon speaks control protocol version {daemon} and this keyflip speaks version {client}; use the keyflip binary that matches the running daemon, or restart the daemon after upgrading"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::Exit;

    #[test]
    fn requests_round_trip_and_unknown_ones_are_refused() {
        let requests = [
            Request::Status { plan: None },
            Request::History {
                plan: Some("demo".into()),
                limit: 5,
                since: Some(chrono::DateTime::UNIX_EPOCH),
            },
            Request::RotateNow {
                plan: "demo".into(),
                mode: crate::rotation::machine::Mode::Leaked {
                    key: crate::key::KeyName::Key2,
                    revoke_first: false,
                },
                grace: Some(std::time::Duration::from_secs(60)),
                dry_run: false,
                by: crate::rotation::Requester {
                    uid: Some(0),
                    user: Some("root".into()),
                    reason: Some("leak".into()),
                    ticket: None,
                },
            },
            Request::Resume {
                plan: Some("demo".into()),
                grace: Some(std::time::Duration::ZERO),
                by: Default::default(),
                force_retire: false,
            },
            Request::Resume {
                plan: None,
                grace: None,
                by: Default::default(),
                force_retire: true,
            },
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
        let text = r#"{"v":7,"request":"status","plan":null}"#;
        assert!(serde_json::from_str::<Envelope>(text).is_ok());
        for bad in [
            r#"{"v":7,"request":"delete_everything"}"#,
            r#"{"v":7,"request":"status","plan":null,"extra":1}"#,
            r#"{"request":"status","plan":null}"#,
        ] {
            assert!(serde_json::from_str::<Envelope>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn lines_round_trip_and_debug_shows_the_kind_only() {
        let done = Done {
            daemon: DaemonInfo {
                pid: 7,
                version: "0.1.0".into(),
                summary: "1 plan".into(),
            },
            answer: Answer::History {
                rotations: Vec::new(),
            },
        };
        let text = ServerLine::ok(done.clone()).text();
        assert!(
            text.ends_with('\n') && text.starts_with("{\"v\":7,\"ok\":"),
            "{text}"
        );
        let parsed: ServerLine = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed.ok, Some(done));
        assert!(format!("{parsed:?}").contains("Answer::history(..)"));

        let error = CommandError::new(ErrorCode::Busy, "busy", Exit::Busy);
        let text = ServerLine::error(error.clone()).text();
        assert_eq!(
            text,
            "{\"v\":7,\"error\":{\"code\":\"busy\",\"message\":\"busy\",\"exit\":6}}\n"
        );
        let parsed: ServerLine = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed.error, Some(error));
    }

    /// A version-1 daemon's refusal of this client is still read as a refusal.
    #[test]
    fn a_version_one_refusal_parses() {
        let v1 = r#"{"v":1,"error":{"code":"unsupported_version","message":"this daemon speaks protocol version 1, the client sent version 2","exit":2}}"#;
        let version: VersionOnly = serde_json::from_str(v1).unwrap();
        assert_eq!(version.v, Some(1));
        let line: ServerLine = serde_json::from_str(v1).unwrap();
        assert_eq!(line.error.unwrap().code, ErrorCode::UnsupportedVersion);
    }
}
