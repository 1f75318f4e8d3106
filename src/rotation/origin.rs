//! Why a rotation ran and who asked: its [`Origin`], journaled with the rotation when it
//! begins (`rotations.origin`, journal schema 4), so `history`, reports and incident
//! reports can say it whichever process reads them, and so can a rotation a daemon
//! started and a CLI resumed.
//!
//! Promises: the requester's uid is the one the operating system vouches for (this
//! process's own, or the control socket peer's `SO_PEERCRED` uid, which replaces
//! whatever a client claims); the user name is looked up from it, never taken from
//! the client. `reason` and `ticket` are free text the caller gave, checked for length
//! and control characters where the command line is read (`commands::request`).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a rotation was started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "trigger", rename_all = "snake_case")]
pub enum Trigger {
    /// `keyflip rotate now`.
    Manual,
    /// The plan's cron schedule (or the daemon's retry of it); `reason` is
    /// `schedule::Decision::reason_code`, or `retry`.
    Schedule { reason: String },
    /// The active key reached `max_key_age`.
    KeyAge,
    /// `--leaked`.
    Incident,
    /// `rotate now --adopt`: consumers moved to a key that works now.
    Adopt,
    /// The daemon's drift watch moved drifted consumers back (`[drift] repair = true`).
    Repair,
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trigger::Manual => f.write_str("manual"),
            Trigger::Schedule { reason } if reason == "retry" => {
                f.write_str("schedule (retry after a failed cycle)")
            }
            Trigger::Schedule { .. } => f.write_str("schedule"),
            Trigger::KeyAge => f.write_str("key age"),
            Trigger::Incident => f.write_str("incident"),
            Trigger::Adopt => f.write_str("adopt"),
            Trigger::Repair => f.write_str("drift repair"),
        }
    }
}

/// Who asked for something: a rotation, an incident taking over a rotation, a shorter
/// grace period.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requester {
    /// The caller's uid, as the operating system reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// The uid's user name, when the system knows one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `--reason TEXT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `--ticket ID`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
}

impl Requester {
    /// Sets the uid (and the user name the system has for it), replacing what was
    /// there: the uid of this process, or of a control socket's peer.
    pub fn stamp(&mut self, uid: u32) {
        self.uid = Some(uid);
        self.user = user_name(uid);
    }

    /// The requester as this process: its own uid.
    pub fn this_process() -> Requester {
        let mut r = Requester::default();
        if let Some(uid) = own_uid() {
            r.stamp(uid);
        }
        r
    }
}

impl fmt::Display for Requester {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.uid, &self.user) {
            (Some(uid), Some(user)) => write!(f, "uid {uid} ({user})")?,
            (Some(uid), None) => write!(f, "uid {uid}")?,
            (None, _) => f.write_str("an unknown caller")?,
        }
        if let Some(ticket) = &self.ticket {
            write!(f, ", ticket {ticket}")?;
        }
        if let Some(reason) = &self.reason {
            write!(f, ": {reason}")?;
        }
        Ok(())
    }
}

/// Why a rotation ran, who asked, and which unfinished rotation it took over.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub trigger: Trigger,
    /// Who asked; `None` for the daemon's own rotations (schedule, key age, repair).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<Requester>,
    /// The unfinished rotation an incident (or `--adopt`) finished first, when this
    /// rotation was started right after it by the same command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follows: Option<String>,
}

impl Origin {
    pub fn new(trigger: Trigger, by: Option<Requester>) -> Origin {
        Origin {
            trigger,
            by,
            follows: None,
        }
    }
}

/// This process's uid: the owner of `/proc/self` (its effective uid). Read from the
/// file system rather than a system call, so no FFI is needed for it.
fn own_uid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

/// The user name of `uid` in `/etc/passwd`; `None` when it has none there (a user from
/// a directory service, or a container without the file). Only shown, never trusted.
fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd_name(&passwd, uid)
}

fn passwd_name(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let _password = fields.next()?;
        let id: u32 = fields.next()?.parse().ok()?;
        (id == uid && !name.is_empty()).then(|| name.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_passwd_lines() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n# comment\nbad line\nalice:x:1000:1000::/home/alice:/bin/sh\n";
        assert_eq!(passwd_name(passwd, 0).as_deref(), Some("root"));
        assert_eq!(passwd_name(passwd, 1000).as_deref(), Some("alice"));
        assert_eq!(passwd_name(passwd, 42), None);
    }

    #[test]
    fn a_requester_reads_as_uid_user_ticket_and_reason() {
        let r = Requester {
            uid: Some(1000),
            user: Some("alice".into()),
            reason: Some("key in a public gist".into()),
            ticket: Some("INC-42".into()),
        };
        assert_eq!(
            r.to_string(),
            "uid 1000 (alice), ticket INC-42: key in a public gist"
        );
        let json = serde_json::to_string(&Requester::default()).unwrap();
        assert_eq!(json, "{}");
        assert_eq!(
            Trigger::Schedule {
                reason: "retry".into()
            }
            .to_string(),
            "schedule (retry after a failed cycle)"
        );
    }

    #[test]
    fn this_process_has_a_uid() {
        assert!(Requester::this_process().uid.is_some());
    }
}
