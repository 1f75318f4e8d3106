//! What a consumer kind builds its plan table with. Each kind's module in
//! `crate::consumer` owns its table (the raw TOML struct and its validation); the
//! diagnostics machinery stays here, so every table reports its errors the same way:
//! at the value's span, with a hint, all of them at once.

pub(crate) use super::parse::{Diagnostics, tables_of};
pub(crate) use super::raw::Text;
pub(crate) use super::values::{arm_id, https_url, integer_in, name, optional, required};
