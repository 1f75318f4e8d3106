//! The control socket: how the CLI reaches a running daemon. [`protocol`] is the wire
//! format (an API boundary: versioned, closed request enum, replies without key
//! values), [`server`] the daemon's side (peer uid checked before reading), [`client`]
//! the CLI's side (`try_daemon`, the "talk to the daemon first" call of `rotate now`,
//! `rotate resume`, `status` and `history`).

pub mod client;
pub mod protocol;
mod render;
pub mod server;
