//! keyflip's integration tests: one binary (to keep link times down), one module per
//! area. Everything talks HTTPS to real processes: an in-process keyflip-twin on its
//! own runtime, and Azurite.

mod azure;
mod cli;
mod command_path;
mod daemon;
mod discover;
mod doctor;
mod faults;
#[cfg(feature = "fuzzing")]
mod fuzz;
mod install;
mod output;
mod replicas;
mod rotation;
mod runbook;
mod security;
mod support;
