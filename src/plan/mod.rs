//! Rotation plans: the TOML files that name a storage account and every consumer of its key.
pub mod duration;
