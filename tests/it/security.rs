//! Security promises checked against real processes (see `docs/security.md`, which
//! names the test behind each promise): what the kernel lets others see of a running
//! keyflip, who owns the state directory, what the unit file promises, and what a
//! user sees for every bad input.

mod abuse;
mod bad_input;
mod credential_file;
mod kill_loop;
mod process;
mod signals;
mod snapshot;
mod state_owner;
mod tls;
mod unit_file;
