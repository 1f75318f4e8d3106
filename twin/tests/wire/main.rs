//! Wire-level tests of keyflip-twin: every test starts a twin in-process and talks
//! HTTPS to it with reqwest, trusting only the twin's CA, exactly as a client would.
//! Time-dependent behaviour (token expiry, key propagation, LROs, throttling refill)
//! is driven through the admin clock, never by sleeping.

mod common;

mod admin;
mod authz;
mod bad_input;
mod blob;
mod certificate;
mod conformance;
mod databricks;
mod datafactory;
mod entra;
mod examples;
mod faults;
mod inventory;
mod keyvault;
mod ml;
mod monitor;
mod rust_sdk;
mod serve;
mod storage;
mod throttling;
mod web;
