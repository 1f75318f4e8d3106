//! The rows discovery and the usage gate add to a plan's report: the account's
//! consumers the plan does not list (a warning, or with `--strict` blocking), whether
//! the account's request logs reach the gate's workspace, and whether keyflip may
//! query it.

use super::super::collect::{Discovered, GateSeen, Got, Observed};
use super::super::report::{Check, Facts, MissingAction, NotRotatable, ServiceLogs, Status};
use super::grant_advice;
use super::verdict::{Verdict, fix_for};
use crate::azure::monitor::REQUEST_CATEGORIES;
use crate::discover::{Verdict as Found, unlisted};
use crate::plan::Plan;

/// The unlisted-consumer row.
pub(super) fn unlisted_row(plan: &Plan, seen: &Observed) -> Option<Check> {
    let discovered = seen.discovered.as_ref()?;
    let subject = format!("account {}", plan.storage_account.name());
    let found = match discovered {
        Discovered::Failed(why) => {
            return Some(
                Verdict::problem(
                    Status::Warning,
                    format!("discovery could not run: {why}"),
                    Some("fix the read named above, then run doctor again; until then keyflip cannot tell which consumers the plan leaves out.".into()),
                )
                .check(
                    subject,
                    Facts::Unlisted {
                        consumers: Vec::new(),
                        not_rotatable: Vec::new(),
                        error: Some(why.clone()),
                    },
                ),
            );
        }
        Discovered::Found(found) => found,
    };
    let consumers = unlisted(plan, found);
    let cannot: Vec<&crate::discover::Finding> = found
        .other
        .iter()
        .filter(|f| matches!(f.verdict, Found::Cannot { .. }))
        .collect();
    // A datastore of a workspace the plan already lists is its datastores row's
    // business, which judges a SAS one there as no obstacle: shown here, not warned
    // twice. Anything else keyflip cannot rotate or read is worth a warning.
    let uncovered = cannot
        .iter()
        .filter(|f| !in_a_listed_workspace(plan, f.consumer.as_ref()))
        .count();
    let not_rotatable: Vec<NotRotatable> = cannot
        .iter()
        .filter_map(|f| match &f.verdict {
            Found::Cannot { why } => Some(NotRotatable {
                subject: f.subject.clone(),
                why: why.clone(),
            }),
            _ => None,
        })
        .collect();
    let mut verdict = if consumers.is_empty() {
        Verdict::ok(format!(
            "the plan lists every consumer discovery found ({})",
            found.consumers.len()
        ))
    } else {
        Verdict::problem(
            Status::Warning,
            format!(
                "{} consumer(s) of the account are not in the plan: a rotation breaks them",
                consumers.len()
            ),
            Some(format!(
                "add each consumer listed here to {}; `keyflip plan discover {}` writes their tables.",
                plan.origin(),
                plan.storage_account
            )),
        )
    };
    if !not_rotatable.is_empty() {
        verdict.add(
            if uncovered > 0 {
                Status::Warning
            } else {
                Status::Ok
            },
            format!(
                "{} more {} the key but keyflip cannot rotate {}",
                not_rotatable.len(),
                if not_rotatable.len() == 1 { "uses" } else { "use" },
                if not_rotatable.len() == 1 { "it" } else { "them" }
            ),
            Some("each line marked - says why; move them off account keys (a SAS from the key that stays, Entra ID) before the key they use is regenerated.".into()),
        );
    }
    Some(verdict.check(
        subject,
        Facts::Unlisted {
            consumers,
            not_rotatable,
            error: None,
        },
    ))
}

/// Whether `consumer` is a datastore of an ML workspace the plan lists.
fn in_a_listed_workspace(plan: &Plan, consumer: Option<&crate::consumer::ConsumerId>) -> bool {
    let Some(crate::consumer::ConsumerId::Datastore(d)) = consumer else {
        return false;
    };
    plan.consumers.iter().any(|e| {
        matches!(e, crate::consumer::Entry::MlWorkspace(ws)
            if ws.workspace.as_str().eq_ignore_ascii_case(d.workspace().as_str()))
    })
}

/// The usage gate's rows: its logs, and access to them.
pub(super) fn gate_rows(plan: &Plan, seen: &Observed) -> Vec<Check> {
    let (Some(gate), Some(gs)) = (&plan.usage_gate, &seen.gate) else {
        return Vec::new();
    };
    vec![logs_row(plan, gate, gs), query_row(gate, gs)]
}

fn logs_row(plan: &Plan, gate: &crate::plan::UsageGate, gs: &GateSeen) -> Check {
    let workspace = gate.workspace.as_str();
    let mut services = Vec::new();
    let mut missing = Vec::new();
    let mut unreadable = Vec::new();
    for (service, got) in &gs.settings {
        let setting = match got {
            Got::Done(settings) => settings
                .iter()
                .find(|s| {
                    s.workspace
                        .as_deref()
                        .is_some_and(|w| w.eq_ignore_ascii_case(workspace))
                        && REQUEST_CATEGORIES
                            .iter()
                            .all(|c| s.categories.iter().any(|k| k.eq_ignore_ascii_case(c)))
                })
                .map(|s| s.name.clone()),
            Got::Failed(e) => {
                unreadable.push(format!("{}: {e}", service.as_str()));
                None
            }
            Got::NotTried(why) => {
                unreadable.push(format!("{}: {why}", service.as_str()));
                None
            }
        };
        let read = matches!(got, Got::Done(_));
        if read && setting.is_none() {
            missing.push(service.as_str());
        }
        services.push(ServiceLogs {
            service: service.as_str(),
            setting,
            read,
        });
    }
    let name = plan.storage_account.name();
    let verdict = if !missing.is_empty() {
        Verdict::problem(
            Status::Error,
            format!(
                "no diagnostic setting sends the {} request logs ({}) to {}: the gate would see no caller and retire blind",
                missing.join(", "),
                REQUEST_CATEGORIES.join(", "),
                gate.workspace.name()
            ),
            Some(format!(
                "add a diagnostic setting on each of those services of {name} sending StorageRead, StorageWrite and StorageDelete to {workspace} (az monitor diagnostic-settings create --resource {}/blobServices/default --workspace {workspace} --logs '[{{\"categoryGroup\":\"allLogs\",\"enabled\":true}}]'), or narrow [usage_gate] services",
                plan.storage_account
            )),
        )
    } else if !unreadable.is_empty() {
        Verdict::problem(
            Status::Error,
            format!("the diagnostic settings could not be read: {}", unreadable.join("; ")),
            Some("keyflip needs Microsoft.Insights/diagnosticSettings/read on the account's services (Reader grants it).".into()),
        )
    } else {
        Verdict::ok(format!(
            "{} request logs go to {}",
            services
                .iter()
                .map(|s| s.service)
                .collect::<Vec<_>>()
                .join(", "),
            gate.workspace.name()
        ))
    };
    verdict.check(
        format!("workspace {}", gate.workspace.name()),
        Facts::UsageGateLogs {
            workspace: workspace.to_owned(),
            services,
        },
    )
}

fn query_row(gate: &crate::plan::UsageGate, gs: &GateSeen) -> Check {
    let required: Vec<String> = gs.required.iter().map(|a| a.name().to_owned()).collect();
    let missing: Option<Vec<MissingAction>> = gs.missing.done().map(|missing| {
        missing
            .iter()
            .map(|m| MissingAction {
                action: m.action.name().to_owned(),
                data_action: m.action.is_data(),
                role: m.role.map(|r| r.name.to_owned()),
                role_id: m.role.map(|r| r.id.to_owned()),
            })
            .collect()
    });
    let mut verdict = match (&gs.missing, &missing) {
        (Got::Done(_), Some(m)) if m.is_empty() => Verdict::ok(format!(
            "keyflip may query {} ({})",
            gate.workspace.name(),
            gate.workspace_id
        )),
        (Got::Done(_), Some(m)) => Verdict::problem(
            Status::Error,
            format!("missing {} of {} query actions", m.len(), required.len()),
            Some(grant_advice(m, gate.workspace.as_str())),
        ),
        (Got::Failed(e), _) => Verdict::problem(
            Status::Error,
            format!("the permissions at the workspace could not be read: {e}"),
            Some(fix_for(e)),
        ),
        (_, _) => Verdict::problem(
            Status::Skipped,
            "not checked: no Azure Resource Manager token",
            None,
        ),
    };
    match &gs.token {
        Got::Done(()) => {}
        Got::Failed(e) => verdict.add(
            Status::Error,
            format!("no token for the Log Analytics API: {e}"),
            Some(fix_for(e)),
        ),
        Got::NotTried(why) => {
            verdict.add(Status::Warning, format!("token not checked: {why}"), None)
        }
    }
    verdict.check(
        format!("workspace {}", gate.workspace.name()),
        Facts::UsageGateQuery {
            workspace: gate.workspace.to_string(),
            workspace_id: gate.workspace_id.clone(),
            required,
            missing,
        },
    )
}
