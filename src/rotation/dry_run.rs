//! `rotate now --dry-run`: the decision from live state, and every step and Azure call
//! a rotation would make, in order. The pure machine is driven with simulated
//! successes (a regenerated key gets a placeholder fingerprint), so the listing is
//! exactly the machine's path when nothing fails. Reads only; nothing is journaled.

use std::collections::VecDeque;

use chrono::TimeDelta;

use super::engine::{EngineError, Inner, RotateRequest, machine_options};
use super::observe::observe;
use super::report::{DecisionReport, DryRun, PlannedCall, PlannedEffect, PlannedStep};
use super::step::Ctx;
use crate::consumer::{self, resolve};
use crate::key::KeyName;
use crate::plan::Plan;
use crate::rotation::machine::{
    Action, Command, ConsumerRef, Event, KeyState, Machine, Observation, Outcome, StepResult,
};
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
            format!("bind {} to {key}", consumer.id.describe())
        }
        Action::VerifyConsumer { consumer, key, .. } => {
            format!("verify {} holds {key}", consumer.id.describe())
        }
        Action::DisableVersions { consumer, .. } => {
            format!("disable the versions of {consumer} that hold a leaked value")
        }
        Action::WaitUntil { .. } => "wait out the grace period".to_owned(),
        Action::Finish { outcome } => format!("finish: {outcome}"),
        other => other.to_string(),
    }
}

/// The calls of a step as the consumer kinds word them (`METHOD target (note)`).
fn call_texts(plan: &Plan, observed: &[ConsumerRef], cmd: &Command) -> Vec<String> {
    let account = plan.storage_account.as_str();
    let keys = format!("POST {account}/listKeys");
    let consumer = |c: &crate::rotation::machine::ConsumerRef| resolve(plan, &c.id).ok();
    match &cmd.action {
        Action::Observe => {
            let mut out = vec![
                format!(
                    "GET {account}/providers/Microsoft.Authorization/permissions (and at each consumer's scope)"
                ),
                format!("GET {account}"),
                keys,
            ];
            out.extend(consumer::observe_calls(plan));
            out.extend(observed.iter().filter_map(consumer).map(|t| t.read_call()));
            out
        }
        Action::ObserveKeys => vec![
            format!("GET {account}/providers/Microsoft.Authorization/permissions"),
            format!("GET {account}"),
            keys,
        ],
        Action::ObserveAfterRevoke { .. } => {
            let mut out = vec![
                format!(
                    "GET {account}/providers/Microsoft.Authorization/permissions (and at each consumer's scope)"
                ),
                format!("GET {account}"),
                keys,
            ];
            out.extend(consumer::observe_calls(plan));
            out.extend(observed.iter().filter_map(consumer).map(|t| t.read_call()));
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
            let mut out = vec![t.read_call(), keys];
            out.extend(t.write_calls(*key));
            out
        }
        Action::VerifyConsumer { consumer: c, .. } => match consumer(c) {
            Some(t) => vec![keys, t.read_call()],
            None => vec![],
        },
        Action::DisableVersions { consumer: c, .. } => {
            consumer(c).map(|t| t.disable_calls()).unwrap_or_default()
        }
        Action::CheckUsage { key, .. } => match &plan.usage_gate {
            Some(gate) => vec![
                keys,
                format!(
                    "POST <log analytics>/v1/workspaces/{}/query ({} rows signed with {key}'s SHA-256)",
                    gate.workspace_id,
                    gate.services
                        .iter()
                        .map(|s| s.table())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ],
            None => vec![],
        },
        Action::Commit | Action::WaitUntil { .. } | Action::Finish { .. } => vec![],
    }
}

fn calls(plan: &Plan, observed: &[ConsumerRef], cmd: &Command) -> Vec<PlannedCall> {
    call_texts(plan, observed, cmd)
        .iter()
        .map(|text| PlannedCall::from_text(text))
        .collect()
}

/// What the binds do besides moving the key, each effect once with the number of
/// binds that cause it, in step order.
fn effects(plan: &Plan, steps: &[PlannedStep]) -> Vec<PlannedEffect> {
    let mut out: Vec<PlannedEffect> = Vec::new();
    let binds = steps.iter().filter(|s| s.kind == "bind");
    for effect in binds
        .filter_map(|s| s.consumer.as_ref())
        .filter_map(|c| resolve(plan, &c.id).ok()?.write_effect())
    {
        match out.iter_mut().find(|e| e.effect == effect) {
            Some(e) => e.writes += 1,
            None => out.push(PlannedEffect { effect, writes: 1 }),
        }
    }
    out
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
    let mut observation = observe(&ctx).await?;
    if super::lifecycle::checks_unlisted(request.mode) {
        super::lifecycle::unlisted(inner, plan, &request.trigger, &mut observation).await;
    }
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
    let mut regenerated = Vec::new();
    while let Some(cmd) = queue.pop_front() {
        steps.push(planned(plan, &observed, &cmd));
        let result = match &cmd.action {
            Action::Observe => StepResult::Observed(observation.clone()),
            // The same live observation answers the keys-only one (without the
            // consumers) and the one after a revoke first: what consumers hold now is
            // what they held before the revoke, and the key revoked has its
            // simulated new value.
            Action::ObserveKeys => StepResult::Observed(Observation {
                consumers: Vec::new(),
                ..observation.clone()
            }),
            Action::ObserveAfterRevoke { key, .. } => {
                let mut after = observation.clone();
                if let Some((_, fingerprint)) = regenerated.iter().rev().find(|(k, _)| k == key) {
                    let state = KeyState {
                        fingerprint: *fingerprint,
                        created: Some(now),
                    };
                    match key {
                        KeyName::Key1 => after.key1 = state,
                        KeyName::Key2 => after.key2 = state,
                    }
                }
                StepResult::Observed(after)
            }
            Action::Regenerate { key, .. } => {
                fresh += 1;
                regenerated.push((*key, simulated(inner, fresh)));
                StepResult::Regenerated {
                    fingerprint: simulated(inner, fresh),
                    created: Some(now),
                }
            }
            Action::VerifyKey { .. } => StepResult::KeyVerified,
            Action::Bind { .. } => StepResult::Bound,
            Action::VerifyConsumer { .. } => StepResult::ConsumerVerified,
            Action::DisableVersions { .. } => StepResult::VersionsDisabled { versions: vec![] },
            // A dry run cannot know the logs ahead of time: it shows the path where
            // nobody signs with the key any more.
            Action::CheckUsage { .. } => StepResult::UsageChecked {
                until: now,
                callers: Vec::new(),
            },
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
        effects: effects(plan, &steps),
        steps,
    })
}
