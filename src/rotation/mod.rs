//! The two-phase safe swap: a pure state machine that decides and an executor that acts.

pub mod machine;
