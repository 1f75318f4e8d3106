//! `rotate now --dry-run`: the decision from live state, and every step and Azure call
//! a rotation would make, in order. The pure machine is driven with simulated
//! successes (a regenerated key gets a placeholder fingerprint), so the listing is
//! exactly the machine's path when nothing fails. Reads only; nothing is journaled.

use std::collections::VecDeque;

use chrono::TimeDelta;

use super::engine::{EngineError, Inner, RotateRequest, machine_options};
use super::observe::observe;
use super::report::{CallService, DecisionReport, DryRun, PlannedCall, PlannedStep};
use super::step::Ctx;
use super::target::{Target, resolve};
use crate::plan::Plan;
use crate::rotation::machine::{Action, Command, ConsumerRef, Event, Machine, Outcome, StepResult};
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
        Action::DisableVersions { consumer, .. } => format!(
            "disable the versions of {} that hold a leaked value",
            super::describe::consumer(consumer)
        ),
        Action::WaitUntil { .. } => "wait out the grace period".to_owned(),
        Action::Finish { outcome } => format!("finish: {outcome}"),
        other => other.to_string(),
    }
}

fn call(method: &str, service: CallService, target: impl Into<String>) -> PlannedCall {
    PlannedCall {
        method: method.to_owned(),
        service,
        target: target.into(),
        note: None,
    }
}

fn noted(mut c: PlannedCall, note: impl Into<String>) -> PlannedCall {
    c.note = Some(note.into());
    c
}

/// The read that tells what a consumer holds.
fn read(t: &Target<'_>) -> PlannedCall {
    match t {
        Target::KeyVault { secret, vault } => call(
            "GET",
            CallService::KeyVault,
            format!(
                "{}/secrets/{}",
                vault.as_str().trim_end_matches('/'),
                secret.secret
            ),
        ),
        Target::Datastore { workspace, name } => call(
            "POST",
            CallService::Arm,
            format!("{workspace}/datastores/{name}/listSecrets"),
        ),
        Target::Workspace { workspace } => {
            call("POST", CallService::Arm, format!("{workspace}/listKeys"))
        }
        Target::Databricks { secret, workspace } => call(
            "GET",
            CallService::Databricks,
            format!(
                "{}/api/2.0/secrets/list?scope={}",
                workspace.as_str().trim_end_matches('/'),
                secret.scope
            ),
        ),
    }
}

fn calls(plan: &Plan, observed: &[ConsumerRef], cmd: &Command) -> Vec<PlannedCall> {
    let account = plan.storage_account.as_str();
    let keys = || call("POST", CallService::Arm, format!("{account}/listKeys"));
    let consumer = |c| resolve(plan, c).ok();
    match &cmd.action {
        Action::Observe => {
            let mut out = vec![
                noted(
                    call(
                        "GET",
                        CallService::Arm,
                        format!("{account}/providers/Microsoft.Authorization/permissions"),
                    ),
                    "and at each workspace and vault",
                ),
                call("GET", CallService::Arm, account),
                keys(),
            ];
            for ws in &plan.ml_workspaces {
                if ws.datastores == crate::plan::Datastores::Discover {
                    out.push(noted(
                        call(
                            "GET",
                            CallService::Arm,
                            format!("{}/datastores", ws.workspace),
                        ),
                        "discover account-key datastores",
                    ));
                }
            }
            out.extend(observed.iter().filter_map(consumer).map(|t| read(&t)));
            out
        }
        Action::Regenerate { key, .. } => vec![
            noted(
                call("POST", CallService::Arm, format!("{account}/regenerateKey")),
                format!("{{\"keyName\":\"{key}\"}}"),
            ),
            noted(call("GET", CallService::Arm, account), "keyCreationTime"),
        ],
        Action::VerifyKey { key, .. } => vec![
            keys(),
            noted(
                call(
                    "GET",
                    CallService::Blob,
                    "<blob endpoint>/?restype=account&comp=properties",
                ),
                format!("signed with {key} (SharedKey), repeated until accepted"),
            ),
        ],
        Action::Bind {
            consumer: c, key, ..
        } => {
            let Some(t) = consumer(c) else { return vec![] };
            let mut out = vec![read(&t), keys()];
            match &t {
                Target::KeyVault { secret, vault } => out.push(noted(
                    call(
                        "PUT",
                        CallService::KeyVault,
                        format!(
                            "{}/secrets/{}",
                            vault.as_str().trim_end_matches('/'),
                            secret.secret
                        ),
                    ),
                    format!(
                        "a new version: {}, content type {}, tags keyflip-key={key}, keyflip-rotation, CredentialId={key}",
                        secret.format.as_str(),
                        secret.content_type
                    ),
                )),
                Target::Datastore { workspace, name } => {
                    out.push(call(
                        "GET",
                        CallService::Arm,
                        format!("{workspace}/datastores/{name}"),
                    ));
                    out.push(noted(
                        call(
                            "PUT",
                            CallService::Arm,
                            format!("{workspace}/datastores/{name}"),
                        ),
                        format!("credentials.secrets.key = {key}, validated by the service"),
                    ));
                }
                Target::Workspace { workspace } => out.push(noted(
                    call("POST", CallService::Arm, format!("{workspace}/resyncKeys")),
                    "then poll its Location until done",
                )),
                Target::Databricks { secret, workspace } => out.push(noted(
                    call(
                        "POST",
                        CallService::Databricks,
                        format!(
                            "{}/api/2.0/secrets/put",
                            workspace.as_str().trim_end_matches('/')
                        ),
                    ),
                    format!(
                        "scope {}, key {}, {}",
                        secret.scope,
                        secret.key,
                        secret.format.as_str()
                    ),
                )),
            }
            out
        }
        Action::VerifyConsumer { consumer: c, .. } => match consumer(c) {
            Some(t) => vec![keys(), read(&t)],
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
                    call("GET", CallService::KeyVault, format!("{base}/versions")),
                    noted(
                        call("GET", CallService::KeyVault, format!("{base}/<version>")),
                        "each enabled version",
                    ),
                    noted(
                        call("PATCH", CallService::KeyVault, format!("{base}/<version>")),
                        "{\"attributes\":{\"enabled\":false}}, each holding a leaked value",
                    ),
                ]
            }
            _ => vec![],
        },
        Action::Commit | Action::WaitUntil { .. } | Action::Finish { .. } => vec![],
    }
}

/// A planned step: the command's words, what it acts on, its calls.
fn planned(plan: &Plan, observed: &[ConsumerRef], cmd: &Command) -> PlannedStep {
    let (key, purpose) = match &cmd.action {
        Action::Regenerate { key, purpose, .. } => (Some(*key), Some(*purpose)),
        Action::VerifyKey { key, .. }
        | Action::Bind { key, .. }
        | Action::VerifyConsumer { key, .. } => (Some(*key), None),
        _ => (None, None),
    };
    PlannedStep {
        seq: cmd.seq,
        step: describe(&cmd.action),
        kind: cmd.action.name().to_owned(),
        key,
        purpose,
        consumer: cmd.action.consumer().cloned(),
        calls: calls(plan, observed, cmd),
    }
}

pub(super) async fn dry_run(
    inner: &Inner,
    plan: &Plan,
    request: &RotateRequest,
) -> Result<DryRun, EngineError> {
    let ctx = Ctx::new(inner, plan, "dry-run");
    let observation = observe(&ctx).await?;
    let observed: Vec<ConsumerRef> = observation
        .consumers
        .iter()
        .map(|c| c.consumer.clone())
        .collect();
    let options = machine_options(plan, request);
    let mut machine = Machine::new(request.mode, options);
    let mut now = inner.clock.now();
    let mut queue: VecDeque<Command> = machine.outstanding().into();
    let mut steps = Vec::new();
    let mut fresh = 0u32;
    while let Some(cmd) = queue.pop_front() {
        steps.push(planned(plan, &observed, &cmd));
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
        // Incident modes retire at once, whatever the plan says.
        grace_ms: if request.mode.is_incident() {
            0
        } else {
            u64::try_from(options.grace.num_milliseconds()).unwrap_or(0)
        },
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
