//! The `azure` module against keyflip-twin (over HTTPS, the twin's admin API for
//! faults, request log and state) and against Azurite (the SharedKey signer).

mod authorization;
mod clouds;
mod credentials;
mod databricks;
mod datafactory;
mod examples;
mod keyvault;
mod logs;
mod ml;
mod origin;
mod shared_key;
mod storage;
mod web;
