//! `keyflip coordination import-journal`: moves a single-node keyflip onto replicas by
//! copying every rotation of this machine's journal into the shared journal in
//! coordination storage (docs/operations.md, "Moving a single-node journal to
//! replicas"). An unfinished rotation copied there is resumed by the first replica
//! that takes its account's lease, from that journal plus Azure's own state, exactly
//! like a restart.
//!
//! Promises: nothing is copied while a keyflip daemon answers on this machine's socket
//! or while a local process holds an account's OS lock (it may be rotating it); each
//! account's blob is written under its lease with `If-Match`, so no replica rotates the
//! account meanwhile; copying again adds nothing (a rotation the shared journal has is
//! left as it is there); the local journal is only read.

use std::path::Path;
use std::sync::Arc;

use crate::cli::{Output, OutputArgs};
use crate::config::Config;
use crate::coordination::{AccountImport, Coordinator};
use crate::daemon::control::client;
use crate::exit::Exit;
use crate::journal::Journal;
use crate::journal::lock::AccountLock;
use crate::secret::Fingerprinter;

use super::CommandError;

/// Runs the command to its exit code.
pub fn import_journal(config_flag: Option<&Path>, args: &OutputArgs) -> Exit {
    let output = args.output;
    let runtime = match super::runtime() {
        Ok(r) => r,
        Err(e) => {
            return super::fail(
                output,
                &CommandError::failed(format!("cannot start the async runtime: {e}")),
            );
        }
    };
    match runtime.block_on(run(config_flag)) {
        Ok(imports) => {
            print!("{}", render(&imports, output));
            Exit::Ok
        }
        Err(e) => super::fail(output, &e),
    }
}

async fn run(config_flag: Option<&Path>) -> Result<Vec<AccountImport>, CommandError> {
    let config = Config::load(config_flag).map_err(CommandError::usage)?;
    let Some(coordination) = config.coordination.clone() else {
        return Err(CommandError::usage(
            "the configuration has no [coordination]: add it (the container every replica will share, docs/configuration.md) to this machine's keyflip.toml before importing the journal into it",
        ));
    };
    let socket = &config.daemon.socket;
    if socket.exists()
        && client::connect(socket)
            .await
            .map_err(CommandError::from)?
            .is_some()
    {
        return Err(CommandError::usage(format!(
            "a keyflip daemon answers on {}: stop it first (`systemctl stop keyflip`), so that no rotation moves on while its journal is copied",
            socket.display()
        )));
    }
    let dir = &config.state_dir;
    let path = dir.join("journal.db");
    if !path.exists() {
        return Err(CommandError::usage(format!(
            "there is no journal at {}: nothing to import (is state_dir the single-node keyflip's?)",
            path.display()
        )));
    }
    let key = dir.join("fingerprint.key");
    let fingerprinter = Fingerprinter::load(&key)
        .map_err(|e| CommandError::failed(e.to_string()))?
        .ok_or_else(|| {
            CommandError::usage(format!(
                "{} is missing: the journal's fingerprints were made with it, and every replica needs that same key",
                key.display()
            ))
        })?;
    let fingerprinter = Arc::new(fingerprinter);
    let journal =
        Journal::open(&path, &fingerprinter).map_err(|e| CommandError::failed(e.to_string()))?;
    let rotations = journal
        .export()
        .map_err(|e| CommandError::failed(e.to_string()))?;
    let marks = journal
        .export_marks()
        .map_err(|e| CommandError::failed(e.to_string()))?;
    drop(journal);
    // No local process may be rotating an account while it is copied.
    let mut locks = Vec::new();
    for r in &rotations {
        if locks.iter().any(|(a, _): &(String, AccountLock)| {
            a.eq_ignore_ascii_case(r.rotation.account.as_str())
        }) {
            continue;
        }
        let lock = AccountLock::acquire(dir, &r.rotation.account).map_err(|e| {
            busy(format!(
                "{e}; wait until that rotation ends (or `keyflip rotate resume` it), then import again"
            ))
        })?;
        locks.push((r.rotation.account.as_str().to_owned(), lock));
    }
    let azure = crate::azure::Azure::with_options(
        &config,
        fingerprinter.clone(),
        crate::coordination::azure_options(),
        &crate::config::process_env,
    )
    .map_err(|e| CommandError::usage(e.to_string()))?;
    let coordinator = Arc::new(Coordinator::new(&azure, &coordination));
    let imports = coordinator
        .import_journal(rotations, marks)
        .await
        .map_err(|e| match e {
            crate::coordination::CoordError::Held { .. } => busy(format!(
                "{e}; a replica is rotating that account now: import again once it is done (accounts already imported stay imported)"
            )),
            other => CommandError::failed(other.to_string()),
        })?;
    drop(locks);
    Ok(imports)
}

fn busy(message: String) -> CommandError {
    CommandError::new(super::answer::ErrorCode::Busy, message, Exit::Busy)
}

fn render(imports: &[AccountImport], output: Output) -> String {
    match output {
        Output::Json => {
            let doc = serde_json::json!({
                "version": super::render::json::VERSION,
                "accounts": imports,
            });
            format!("{doc:#}\n")
        }
        Output::Human => {
            let mut out = String::new();
            if imports.is_empty() {
                out.push_str("The journal holds no rotations: nothing to import.\n");
            }
            for i in imports {
                let name = i.account.rsplit('/').next().unwrap_or(&i.account);
                out.push_str(&format!(
                    "{name}: {} rotation{} copied into the shared journal{}\n",
                    i.added.len(),
                    if i.added.len() == 1 { "" } else { "s" },
                    match &i.unfinished {
                        Some(id) => format!(
                            "; rotation {id} is unfinished: the first replica to take the account's lease resumes it (or `keyflip rotate resume` on any replica)"
                        ),
                        None => String::new(),
                    }
                ));
            }
            out
        }
    }
}
