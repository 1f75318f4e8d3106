//! The request log: one entry per request the twin answered (or dropped), in arrival
//! order, for tests to check what a client did. Admin API calls are not logged. The
//! log keeps the newest 100,000 entries; sequence numbers never repeat.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;

const LIMIT: usize = 100_000;

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Entry {
    pub seq: u64,
    pub operation: Option<&'static str>,
    pub method: String,
    pub path: String,
    pub principal: Option<String>,
    /// `null` when the connection was dropped or the request hangs.
    pub status: Option<u16>,
    pub at: String,
}

#[derive(Debug, Default)]
struct Inner {
    next: u64,
    entries: VecDeque<Entry>,
}

#[derive(Debug, Default)]
pub(crate) struct RequestLog {
    inner: Mutex<Inner>,
}

impl RequestLog {
    pub fn push(&self, mut e: Entry) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.next += 1;
            e.seq = inner.next;
            if inner.entries.len() >= LIMIT {
                inner.entries.pop_front();
            }
            inner.entries.push_back(e);
        }
    }

    /// Entries with a sequence number greater than `since`.
    pub fn since(&self, since: u64) -> Vec<Entry> {
        self.inner
            .lock()
            .map(|i| {
                i.entries
                    .iter()
                    .filter(|e| e.seq > since)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            seq: 0,
            operation: Some("storage.get"),
            method: "GET".into(),
            path: "/".into(),
            principal: None,
            status: Some(200),
            at: String::new(),
        }
    }

    #[test]
    fn since_is_exclusive_and_sequence_numbers_grow() {
        let log = RequestLog::default();
        for _ in 0..3 {
            log.push(entry());
        }
        let all = log.since(0);
        assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(log.since(2).len(), 1);
        assert!(log.since(3).is_empty());
    }
}
