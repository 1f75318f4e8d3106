//! Several keyflip replicas, each rotation driven by exactly one: a lease per rotated
//! storage account and a shared journal, both in one Azure Blob container
//! (`[coordination]` in keyflip.toml). Absent, keyflip runs alone: its SQLite journal
//! and OS lock per account are the whole story.
//!
//! How it fits (see `docs/ARCHITECTURE.md`, "Replicas"):
//! - Before a rotation's first read, the engine takes the account's OS lock and then
//!   [`Coordinator::hold`]s the account's blob lease (15–60 s, renewed every third of
//!   that); a replica that cannot get it gets `Busy`. Holding it imports the account's
//!   shared journal into the local one, so an unfinished rotation another replica
//!   left is resumed like one after a local restart.
//! - Every local journal write of a leased account goes first to the account's blob
//!   ([`Coordinator`] is the journal's [`crate::journal::Mirror`]): applied to the
//!   document, written with the lease id and `If-Match`, and only then committed
//!   locally. An intent is written only with at least half a lease left. A replica
//!   whose lease was lost or taken therefore cannot record an intent, and the
//!   executor never performs a command whose intent was not recorded.
//!
//! Invariants: a coordination account's own keys are never rotated while it
//! coordinates (a plan naming it is refused); no account key is ever used to reach
//! it (Entra ID bearer tokens only); key values never reach a blob (the documents
//! hold the journal's types, which hold fingerprints).

pub mod blob;
pub mod document;
mod error;
pub mod lease;
mod shared;

pub use blob::{
    BlobClient, BlobRead, Conditions, ETag, LeaseDuration, LeaseId, Listed, STORAGE_AUDIENCE,
};
pub use error::CoordError;
pub use shared::{
    ACCOUNTS_PREFIX, AccountImport, AccountLease, Coordinator, FEW_ACCOUNTS, LeaseInfo,
    READ_CONCURRENCY, RENEWAL_BUCKETS, SharedAccount, SharedRead, Stats, Taken, blob_name, refuses,
};

/// Who holds an account another replica's lease keeps busy (`EngineError::Busy`'s
/// holder; the daemon tells this apart from a local rotation by it).
pub const HELD_ELSEWHERE: &str = "another keyflip replica holds its lease; it finishes the rotation, or another replica takes over at most one lease length after that one stops";

/// Retries for coordination requests: short, because a journal write waits for them
/// (and must finish well inside half a lease).
pub(crate) fn azure_options() -> crate::azure::AzureOptions {
    crate::azure::AzureOptions {
        retry: crate::azure::RetryPolicy {
            max_attempts: 3,
            initial_backoff: std::time::Duration::from_millis(200),
            max_backoff: std::time::Duration::from_secs(2),
            max_retry_after: std::time::Duration::from_secs(5),
        },
        ..crate::azure::AzureOptions::default()
    }
}
