//! Security promises checked against real processes (see `docs/security.md`, which
//! names the test behind each promise): what the kernel lets others see of a running
//! keyflip, who owns the state directory, what the unit file promises, and what a
//! user sees for every bad input.

mod process;
mod state_owner;
mod unit_file;
