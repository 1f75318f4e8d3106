//! `keyflip daemon` in-process against keyflip-twin on a manual clock: scheduling,
//! restarts, signals (as handle calls), the control socket, metrics, drift, webhooks
//! and the shared write budget.

mod budget;
mod drift;
mod harness;
mod lifecycle;
mod notify;
mod observability;
mod schedule;
mod socket;
mod telemetry;
