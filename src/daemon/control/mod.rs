//! The control socket: how the CLI reaches a running daemon. [`protocol`] is the wire
//! format (an API boundary: versioned, the commands' own typed requests, answers,
//! progress events and errors, never a key value), [`server`] the daemon's side (peer
//! uid checked before reading), [`client`] the CLI's side (`connect` and `call`, used
//! by the command path in `commands`, which prints what comes back with the same
//! renderer as a standalone run).

pub mod client;
pub mod protocol;
pub mod server;
