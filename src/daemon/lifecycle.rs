//! The scheduler's lifecycle beyond its loop: reloading configuration and plans
//! (SIGHUP) and draining on shutdown (SIGTERM/SIGINT).
//!
//! Promises: a reload applies a valid new set whole or changes nothing (every error
//! logged); settings that need new sockets, budgets or credentials are named as
//! needing a restart rather than half-applied; a plan removed while its job runs is
//! dropped only when the job ends. The drain starts nothing, lets each job finish its
//! step in flight within `shutdown_timeout`, and still records what jobs report.

use std::collections::BTreeSet;

use super::control::protocol::{CommandError, ErrorCode};
use super::scheduler::{Msg, Scheduler};
use crate::exit::Exit;

impl Scheduler {
    /// Re-reads configuration and plans. An invalid set changes nothing.
    pub(super) fn reload(&mut self) -> Result<usize, Vec<String>> {
        let (config, plans) = match (self.loader)() {
            Ok(loaded) => loaded,
            Err(errors) => {
                for error in &errors {
                    tracing::error!(error = %error, "reload rejected; the running configuration and plans stay in force");
                }
                self.ctx.metrics.reload("rejected");
                return Err(errors);
            }
        };
        let old = &self.config;
        let mut restart_only = Vec::new();
        if old.daemon.socket != config.daemon.socket
            || old.daemon.allowed_uids != config.daemon.allowed_uids
        {
            restart_only.push("[daemon] socket and allowed_uids");
        }
        if old.daemon.metrics_listen != config.daemon.metrics_listen {
            restart_only.push("[daemon] metrics_listen");
        }
        if old.daemon.budget != config.daemon.budget {
            restart_only.push("[daemon.budget]");
        }
        if old.cloud != config.cloud
            || old.credential != config.credential
            || old.state_dir != config.state_dir
        {
            restart_only.push("[cloud], [credential] and state_dir");
        }
        for what in restart_only {
            tracing::warn!(
                setting = what,
                "changed, but only takes effect when the daemon restarts"
            );
        }
        let now = self.ctx.clock.now();
        let mut keep: BTreeSet<String> = BTreeSet::new();
        let mut fresh = Vec::new();
        for loaded in plans {
            let name = loaded.name().to_owned();
            keep.insert(name.clone());
            match self.entry_mut(&name) {
                Some(entry) => {
                    entry.plan = loaded.0;
                    entry.retired = false;
                }
                None => {
                    tracing::info!(plan = %name, "new plan");
                    fresh.push(loaded);
                }
            }
        }
        let gone: Vec<String> = self
            .plans
            .keys()
            .filter(|n| !keep.contains(*n))
            .cloned()
            .collect();
        for name in gone {
            let Some(entry) = self.entry_mut(&name) else {
                continue;
            };
            if entry.running.is_some() {
                tracing::info!(plan = %name, "plan removed; its running job finishes first");
                entry.retired = true;
                continue;
            }
            self.remove_plan(&name);
            tracing::info!(plan = %name, "plan removed");
        }
        // Kept plans may have a new schedule: decide again (new plans decide on insert).
        for name in keep.iter() {
            self.decide(name, now);
        }
        for entry in self.entries_for(fresh, now) {
            self.insert(entry, now);
        }
        self.config = config;
        let count = self.plans.values().filter(|e| !e.retired).count();
        self.ctx.metrics.reload("applied");
        tracing::info!(plans = count, "configuration and plans reloaded");
        self.start_resumes(now);
        self.ctx.engine.journal().shrink_memory();
        super::release_heap();
        Ok(count)
    }

    /// Shutdown: start nothing, let jobs finish their step, record what they report.
    pub(super) async fn drain(mut self) -> Exit {
        self.stopping = true;
        let now = self.ctx.clock.now();
        self.publish(now);
        self.systemd.stopping(&self.last_summary);
        tracing::info!(
            running = self.running(),
            timeout_secs = self.settings().shutdown_timeout.as_secs(),
            "shutting down: letting steps in flight finish"
        );
        self.ctx.tracker.close();
        let deadline = tokio::time::sleep(self.settings().shutdown_timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = self.ctx.tracker.wait() => break,
                _ = &mut deadline => {
                    tracing::error!(running = self.running(), "shutdown timeout: exiting with steps still in flight; they are in doubt in the journal and the next start reconciles them");
                    return Exit::Failure;
                }
                Some(msg) = self.rx.recv() => self.handle_while_stopping(msg),
            }
        }
        while let Ok(msg) = self.rx.try_recv() {
            self.handle_while_stopping(msg);
        }
        let now = self.ctx.clock.now();
        self.publish(now);
        tracing::info!("keyflip daemon stopped");
        Exit::Ok
    }

    fn handle_while_stopping(&mut self, msg: Msg) {
        match msg {
            Msg::Finished(finished) => self.conclude(finished),
            Msg::Request { reply, .. } => {
                let _ = reply.send(Err(CommandError::new(
                    ErrorCode::ShuttingDown,
                    "the daemon is shutting down",
                    Exit::Failure,
                )));
            }
            Msg::Reload(Some(reply)) => {
                let _ = reply.send(Err(vec!["the daemon is shutting down".into()]));
            }
            Msg::Ping(reply) => {
                let _ = reply.send(());
            }
            Msg::Snapshot(reply) => {
                let _ = reply.send(self.snapshot_now());
            }
            Msg::Waiting { plan, until } => {
                if let Some(a) = self.entry_mut(&plan).and_then(|e| e.running.as_mut()) {
                    a.waiting_until = Some(until);
                }
            }
            Msg::Reload(None)
            | Msg::RotationId { .. }
            | Msg::Observed { .. }
            | Msg::Shared { .. }
            | Msg::Working { .. } => {}
        }
    }
}
