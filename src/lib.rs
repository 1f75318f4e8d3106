//! keyflip rotates Azure Storage account keys without downtime.
//!
//! See `docs/ARCHITECTURE.md` for the bird's-eye view, the code map and the
//! invariants every module keeps.

pub mod azure;
pub mod build_info;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod consumer;
pub mod coordination;
pub mod daemon;
pub mod diagnostic;
pub mod discover;
pub mod doctor;
pub mod exit;
#[cfg(feature = "failpoints")]
pub mod failpoint;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod input;
pub mod journal;
pub mod key;
pub mod logging;
pub mod manual;
pub mod plan;
pub mod process;
pub mod resource_id;
pub mod rotation;
pub mod schedule;
pub mod secret;

/// Installs the ring crypto provider for rustls. keyflip builds reqwest with
/// `rustls-no-provider`, and reqwest panics when the first client is built without
/// a process-wide provider, so `main` and every test set-up call this first.
/// Calling it again is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
