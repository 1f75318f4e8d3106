//! The rotation engine end to end against keyflip-twin: swaps, dry runs, incidents,
//! failures and rollbacks, refusals, locking, and crashes at every durable step.

mod adopt;
mod apps;
#[cfg(feature = "failpoints")]
mod crash;
mod failure;
mod gate;
mod incident;
mod origin;
mod swap;
mod takeover;
mod waves;
mod ways_out;
