//! `rotate now --dry-run`: the decision from live state, and every step and Azure call
//! a rotation would make, in order. The pure machine is driven with simulated
//! successes (a regenerated key gets a placeholder fingerprint), so the listing is
//! exactly the machine's path when nothing fails. Reads only; nothing is journaled.

use std::collections::VecDeque;

use chrono::TimeDelta;

use super::engine::{EngineError, Inner, RotateRequest, machine_options};
use super::observe::observe;
use super::report::{DecisionReport, DryRun, PlannedStep};
use super::step::Ctx;
use super::target::{Target, resolve};
use crate::plan::Plan;
use crate::rotation::machine::{Action, Command, Event, Machine, Outcome, StepResult};
use crate::secret::{Fingerprint, StorageKey};

/// A placeholder for the n-th value a regeneration would produce: the fingerprint of
/// a text that is not a key.
fn simulated(inner: &Inner, n: u32) -> Fingerprint {
    inner
        .fingerprinter
        .fingerprint(&StorageKey::new(format!("keyflip dry run: new value {n}")))
}

/// The step in words, without fingerprints (simulated ones mean nothing).
fn describe(action: &Action) -> String {
    match action {
        Action::VerifyKey { key, budget, .. } => format!(
            "verify {key} on the blob data plane (probing for up to {})",
            crate::plan::duration::format(*budget)
        ),
        Action::Bind { consumer, key, .. } => {
            format!("bind {} to {key}", super::describe::consumer(consumer))
        }
        Action::VerifyConsumer { consumer, key, .. } => {
            format!("verify {} holds {key}", super::describe::consumer(consumer))
        }
        Action::DisableVersions { consumer, .. } => {
            format!("disable the versions of {consumer} that hold a leaked value")
        }
        Action::WaitUntil { .. } => "wait out the grace period".to_owned(),
        Action::Finish { outcome } => format!("finish: {outcome}"),
        other => other.to_string(),
    }
}

fn calls(plan: &Plan, cmd: &Command) -> Vec<String> {
    let account = plan.storage_account.as_str();
    let keys = format!("POST {account}/listKeys");
    let consumer = |c| resolve(plan, c).ok();
    let read = |t: &Target<'_>| match t {
        Target::KeyVault { secret, vault } => format!(
            "GET {}/secrets/{}",
            vault.as_str().trim_end_matches('/'),
            secret.secret
        ),
        Target::Datastore { workspace, name } => {
            format!("POST {workspace}/datastores/{name}/listSecrets")
        }
        Target::Workspace { workspace } => format!("POST {workspace}/listKeys"),
        Target::Databricks { secret, workspace } => format!(
            "GET {}/api/2.0/secrets/list?scope={}",
            workspace.as_str().trim_end_matches('/'),
            secret.scope
        ),
    };
    match &cmd.action {
        Action::Observe => {
            let mut out = vec![
                format!(
                    "GET {account}/providers/Microsoft.Authorization/permissions (and at each workspace and vault)"
                ),
                format!("GET {account}"),
                keys,
            ];
            for ws in &plan.ml_workspaces {
                if ws.datastores == crate::plan::Datastores::Discover {
                    out.push(format!(
                        "GET {}/datastores (discover account-key datastores)",
                        ws.workspace
                    ));
                }
            }
            out.push("read what each consumer holds".to_owned());
            out
        }
        Action::Regenerate { key, .. } => vec![
            format!("POST {account}/regenerateKey {{\"keyName\":\"{key}\"}}"),
            format!("GET {account} (keyCreationTime)"),
        ],
        Action::VerifyKey { key, .. } => vec![
            keys,
            format!(
                "GET <blob endpoint>/?restype=account&comp=properties signed with {key} (SharedKey), until accepted"
            ),
        ],
        Action::Bind {
            consumer: c, key, ..
        } => {
            let Some(t) = consumer(c) else { return vec![] };
            let mut out = vec![read(&t), keys];
            match &t {
                Target::KeyVault { secret, vault } => out.push(format!(
                    "PUT {}/secrets/{} (a new version: {}, content type {}, tags keyflip-key={key}, keyflip-rotation, CredentialId={key})",
                    vault.as_str().trim_end_matches('/'),
                    secret.secret,
                    secret.format.as_str(),
                    secret.content_type
                )),
                Target::Datastore { workspace, name } => {
                    out.push(format!("GET {workspace}/datastores/{name}"));
                    out.push(format!("PUT {workspace}/datastores/{name} (credentials.secrets.key = {key}, validated by the service)"));
                }
                Target::Workspace { workspace } => out.push(format!(
                    "POST {workspace}/resyncKeys (then poll its Location until done)"
                )),
                Target::Databricks { secret, workspace } => out.push(format!(
                    "POST {}/api/2.0/secrets/put (scope {}, key {}, {})",
                    workspace.as_str().trim_end_matches('/'),
                    secret.scope,
                    secret.key,
                    secret.format.as_str()
                )),
            }
            out
        }
        Action::VerifyConsumer { consumer: c, .. } => match consumer(c) {
            Some(t) => vec![keys, read(&t)],
            None => vec![],
        },
        Action::DisableVersions { consumer: c, .. } => match consumer(c) {
            Some(Target::KeyVault { secret, vault }) => {
                let base = format!(
                    "{}/secrets/{}",
                    vault.as_str().trim_end_matches('/'),
                    secret.secret
                );
                vec![
                    format!("GET {base}/versions"),
                    format!("GET {base}/<version> (each enabled version)"),
                    format!(
                        "PATCH {base}/<version> {{\"attributes\":{{\"enabled\":false}}}} (each holding a leaked value)"
                    ),
                ]
            }
            _ => vec![],
        },
        Action::Commit | Action::WaitUntil { .. } | Action::Finish { .. } => vec![],
    }
}

pub(super) async fn dry_run(
    inner: &Inner,
    plan: &Plan,
    request: &RotateRequest,
) -> Result<DryRun, EngineError> {
    let ctx = Ctx::new(inner, plan, "dry-run");
    let observation = observe(&ctx).await?;
    let mut machine = Machine::new(request.mode, machine_options(plan, request));
    let mut now = inner.clock.now();
    let mut queue: VecDeque<Command> = machine.outstanding().into();
    let mut steps = Vec::new();
    let mut fresh = 0u32;
    while let Some(cmd) = queue.pop_front() {
        steps.push(PlannedStep {
            seq: cmd.seq,
            step: describe(&cmd.action),
            calls: calls(plan, &cmd),
        });
        let result = match &cmd.action {
            Action::Observe => StepResult::Observed(observation.clone()),
            Action::Regenerate { .. } => {
                fresh += 1;
                StepResult::Regenerated {
                    fingerprint: simulated(inner, fresh),
                    created: Some(now),
                }
            }
            Action::VerifyKey { .. } => StepResult::KeyVerified,
            Action::Bind { .. } => StepResult::Bound,
            Action::VerifyConsumer { .. } => StepResult::ConsumerVerified,
            Action::DisableVersions { .. } => StepResult::VersionsDisabled { versions: vec![] },
            Action::Commit => StepResult::Committed,
            Action::WaitUntil { at } => {
                now = now.max(*at);
                StepResult::Waited
            }
            Action::Finish { .. } => break,
        };
        now += TimeDelta::seconds(1);
        let issued = machine
            .handle(&Event::Answer {
                seq: cmd.seq,
                at: now,
                result,
            })
            .map_err(|error| EngineError::Machine {
                rotation_id: "dry-run".into(),
                error,
            })?;
        queue.extend(issued);
    }
    let view = machine.view();
    Ok(DryRun {
        plan: plan.name.clone(),
        account: plan.storage_account.to_string(),
        mode: request.mode,
        decision: match (view.route, view.active, view.standby) {
            (Some(route), Some(active), Some(standby)) => Some(DecisionReport {
                route,
                active,
                standby,
            }),
            _ => None,
        },
        refused: match machine.outcome() {
            Some(Outcome::Refused { reasons }) => Some(reasons.clone()),
            _ => None,
        },
        unfinished: inner
            .journal()
            .unfinished()?
            .into_iter()
            .find(|r| r.plan == plan.name)
            .map(|r| r.id),
        consumers: observation.consumers,
        warnings: view.warnings,
        steps,
    })
}
