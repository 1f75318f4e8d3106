//! `keyflip daemon` in-process against keyflip-twin on a manual clock: scheduling,
//! restarts, signals (as handle calls), the control socket, metrics, drift, webhooks,
//! the shared call budgets, and behaviour at fleet scale.

mod budget;
mod drift;
mod fleet;
mod harness;
mod lifecycle;
mod notify;
mod observability;
mod schedule;
mod socket;
mod takeover;
mod telemetry;
