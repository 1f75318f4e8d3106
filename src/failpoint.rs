//! Crash points for tests, compiled only with the crate feature `failpoints`.
//!
//! The executor calls [`FailPoint::hit`] right after every durable journal write (a
//! rotation begun, each intent, each result or re-observation, the end), naming the
//! write. A test arms a point in two ways:
//!
//! - in-process, [`FailPoint::arm`] with a [`CrashAt`]: the hit returns the write's
//!   name and the executor returns `EngineError::Crashed` at once, writing nothing more
//!   and dropping every future in flight, as a crash would. The exhaustive crash tests
//!   count the writes of a full run ([`FailPoint::writes`]) and crash at each.
//! - for the binary, the `KEYFLIP_FAILPOINT` environment variable: `N` (the N-th
//!   durable write of the process) or `NAME[#N]` (the N-th write whose name starts
//!   with `NAME`, default the first), e.g. `intent:regenerate` or
//!   `result:bound#3`. The process then calls `std::process::abort()`: no destructor,
//!   no flush, the journal and the lock are left as a `kill -9` leaves them.
//!
//! Write names: `begin`, `intent:{action}:{seq}`, `result:{result}:{seq}`,
//! `event:reobserved`, `finish`.

use std::sync::Mutex;

/// Where to crash, counted from when the point is armed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CrashAt {
    /// The n-th durable write (1-based).
    Write(usize),
    /// The n-th (1-based) write whose name starts with the prefix.
    Named(String, usize),
}

impl CrashAt {
    /// `N` or `NAME[#N]`.
    pub fn parse(spec: &str) -> Option<CrashAt> {
        let spec = spec.trim();
        if spec.is_empty() {
            return None;
        }
        if let Ok(n) = spec.parse::<usize>() {
            return Some(CrashAt::Write(n));
        }
        match spec.split_once('#') {
            Some((name, n)) => Some(CrashAt::Named(name.to_owned(), n.parse().ok()?)),
            None => Some(CrashAt::Named(spec.to_owned(), 1)),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    armed: Option<CrashAt>,
    /// From the environment: abort the process instead of returning.
    abort: bool,
    seen: usize,
    seen_named: usize,
    writes: Vec<String>,
}

/// One engine's crash point.
#[derive(Debug, Default)]
pub(crate) struct FailPoint {
    state: Mutex<State>,
}

impl FailPoint {
    /// Armed from `KEYFLIP_FAILPOINT` when it is set (the process aborts there).
    pub fn from_env() -> FailPoint {
        let armed = std::env::var("KEYFLIP_FAILPOINT")
            .ok()
            .and_then(|s| CrashAt::parse(&s));
        FailPoint {
            state: Mutex::new(State {
                abort: armed.is_some(),
                armed,
                ..State::default()
            }),
        }
    }

    /// Crash (return) at `at`, counted from now.
    pub fn arm(&self, at: CrashAt) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.armed = Some(at);
        s.abort = false;
        s.seen = 0;
        s.seen_named = 0;
    }

    /// The names of every durable write so far.
    pub fn writes(&self) -> Vec<String> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .writes
            .clone()
    }

    /// Called after the durable write `name`. `Err(name)` means: stop dead now.
    pub(crate) fn hit(&self, name: &str) -> Result<(), String> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.writes.push(name.to_owned());
        s.seen += 1;
        let fire = match s.armed.clone() {
            None => false,
            Some(CrashAt::Write(n)) => s.seen == n,
            Some(CrashAt::Named(prefix, n)) if name.starts_with(prefix.as_str()) => {
                s.seen_named += 1;
                s.seen_named == n
            }
            Some(CrashAt::Named(..)) => false,
        };
        if !fire {
            return Ok(());
        }
        s.armed = None;
        if s.abort {
            eprintln!("keyflip: KEYFLIP_FAILPOINT: aborting after durable write {name}");
            std::process::abort();
        }
        Err(name.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        assert_eq!(CrashAt::parse("7"), Some(CrashAt::Write(7)));
        assert_eq!(
            CrashAt::parse("intent:regenerate"),
            Some(CrashAt::Named("intent:regenerate".into(), 1))
        );
        assert_eq!(
            CrashAt::parse("result:bound#3"),
            Some(CrashAt::Named("result:bound".into(), 3))
        );
        assert_eq!(CrashAt::parse("x#y"), None);
        assert_eq!(CrashAt::parse(" "), None);
    }

    #[test]
    fn fires_once_at_the_armed_write() {
        let fp = FailPoint::default();
        fp.arm(CrashAt::Named("result:bound".into(), 2));
        assert_eq!(fp.hit("intent:bind:4"), Ok(()));
        assert_eq!(fp.hit("result:bound:4"), Ok(()));
        assert_eq!(fp.hit("result:bound:5"), Err("result:bound:5".into()));
        assert_eq!(fp.hit("result:bound:6"), Ok(()));
        fp.arm(CrashAt::Write(1));
        assert_eq!(fp.hit("finish"), Err("finish".into()));
        assert_eq!(fp.writes().len(), 5);
    }
}
