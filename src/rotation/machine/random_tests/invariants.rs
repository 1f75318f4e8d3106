//! The invariants a random run is held to after every event: what each new command
//! may be given what came before, how each outcome leaves the consumers, and that a
//! bind never races another command for its consumer.

use std::collections::{HashMap, HashSet};

use super::super::*;

/// The key consumers end on when the route completes: none moves off the active key
/// when the leaked standby is revoked, and with `revoke_first` they take the active
/// key's fresh value.
fn ends_on(route: Route, active: KeyName, standby: KeyName) -> KeyName {
    if route == Route::LeakedStandby || route.revoke_first() {
        active
    } else {
        standby
    }
}

/// What the invariant checks remember across events.
#[derive(Default)]
pub(super) struct Seen {
    pub(super) committed: bool,
    /// A failure (or a drift rollback) before commit and before any workspace resync
    /// was issued: from then on nothing moves forward.
    pub(super) failure_before_resync: bool,
    /// A forward bind of an ML workspace (its resync) was issued.
    pub(super) resync_issued: bool,
    finishes: usize,
    pub(super) succeeded: HashMap<(KeyName, Purpose), u32>,
    /// Key values the data plane accepted (`KeyVerified`).
    pub(super) verified: HashSet<(KeyName, Fingerprint)>,
    /// The answer to the latest usage check of the gate before the retire, and when.
    pub(super) last_gate: Option<(DateTime<Utc>, StepResult)>,
}

pub(super) fn check_new_commands(
    seed: u64,
    m: &Machine,
    cmds: &[Command],
    first_seq: u32,
    seen: &mut Seen,
) {
    let view = m.view();
    for (i, c) in cmds.iter().enumerate() {
        assert_eq!(
            c.seq,
            first_seq + i as u32,
            "seed {seed}: seqs are consecutive"
        );
        let revoke_first = view.route.is_some_and(Route::revoke_first);
        // A revoke first after a keys-only read: the leaked key is the only key ever
        // regenerated, and nothing is read about a consumer, verified or bound before
        // its revoke succeeded.
        if let (
            Mode::Leaked {
                key: leaked,
                revoke_first: true,
            },
            true,
        ) = (m.mode(), m.options().revoke_before_reads)
        {
            match &c.action {
                Action::Regenerate { key, purpose, .. } => assert!(
                    *key == leaked && *purpose == Purpose::Revoke,
                    "seed {seed}: revoke first regenerated {key} ({purpose})"
                ),
                Action::Observe
                | Action::ObserveAfterRevoke { .. }
                | Action::VerifyKey { .. }
                | Action::Bind { .. }
                | Action::VerifyConsumer { .. }
                | Action::CheckUsage { .. }
                | Action::DisableVersions { .. } => assert!(
                    seen.succeeded.contains_key(&(leaked, Purpose::Revoke)),
                    "seed {seed}: {c:?} before the revoke succeeded"
                ),
                _ => {}
            }
        }
        match &c.action {
            Action::Regenerate { key, purpose, .. } => {
                if Some(*key) == view.active && view.route != Some(Route::LeakedStandby) {
                    assert!(
                        seen.committed || (revoke_first && *purpose == Purpose::Revoke),
                        "seed {seed}: the key being retired regenerated before commit: {c:?}"
                    );
                }
                assert!(
                    !seen.succeeded.contains_key(&(*key, *purpose)),
                    "seed {seed}: a second {purpose} of {key} after one succeeded"
                );
                // With a usage gate (not forced), the retire follows a check that
                // found nobody signing with the old key in the quiet window.
                let forced = matches!(m.mode(), Mode::Retire { force: true, .. });
                if let (Purpose::Retire, Some(gate), false, false) = (
                    purpose,
                    m.options().usage_gate,
                    forced,
                    m.mode().is_incident(),
                ) {
                    match &seen.last_gate {
                        Some((at, StepResult::UsageChecked { callers, .. })) => {
                            let quiet_from = *at - gate.latency - gate.quiet;
                            assert!(
                                callers.iter().all(|c| c.last_seen < quiet_from),
                                "seed {seed}: retired while callers still signed with {key}: {callers:?}"
                            );
                        }
                        other => {
                            panic!("seed {seed}: retired without a quiet usage check: {other:?}")
                        }
                    }
                }
                if *purpose == Purpose::Discard {
                    for cv in &view.consumers {
                        assert!(
                            matches!(cv.status, ConsumerStatus::Untouched)
                                || cv.status == ConsumerStatus::Verified { key: key.other() },
                            "seed {seed}: discard before {} was verified back: {:?}",
                            cv.consumer,
                            cv.status
                        );
                    }
                }
            }
            // A forward bind: to the key the route moves consumers to, with the value
            // the view names as the target, verified on the data plane first; with
            // `revoke_first` only once the leaked value is dead. Otherwise never after
            // a failure, except that a workspace resync (which cannot be steered back)
            // is retried; and a resync only once every other consumer is verified.
            Action::Bind {
                consumer,
                key,
                fingerprint,
            } if m.phase() != Phase::RollingBack => {
                let (Some(route), Some(active), Some(standby)) =
                    (view.route, view.active, view.standby)
                else {
                    panic!("seed {seed}: a bind before the precheck decided: {c:?}");
                };
                assert_eq!(*key, ends_on(route, active, standby), "seed {seed}: {c:?}");
                assert_eq!(Some(*fingerprint), view.target, "seed {seed}: {c:?}");
                assert!(
                    seen.verified.contains(&(*key, *fingerprint)),
                    "seed {seed}: bind to a value never verified on the data plane: {c:?}"
                );
                if revoke_first {
                    assert!(
                        seen.succeeded.contains_key(&(active, Purpose::Revoke)),
                        "seed {seed}: revoke_first bind before the revoke: {c:?}"
                    );
                } else {
                    // Adopting only goes forward: a failed bind is bound again.
                    assert!(
                        !seen.failure_before_resync || route == Route::Adopt,
                        "seed {seed}: bind to the new key after a failure: {c:?}"
                    );
                    let resync = consumer.kind() == ConsumerKind::Workspace;
                    assert!(
                        resync || !seen.resync_issued,
                        "seed {seed}: a bind other than a resync after a resync: {c:?}"
                    );
                    if resync {
                        for cv in &view.consumers {
                            assert!(
                                cv.consumer.kind() == ConsumerKind::Workspace
                                    || cv.status == ConsumerStatus::Verified { key: *key },
                                "seed {seed}: a resync while {} is {:?}",
                                cv.consumer,
                                cv.status
                            );
                        }
                        seen.resync_issued = true;
                    }
                }
            }
            Action::Finish { outcome } => {
                seen.finishes += 1;
                assert_eq!(seen.finishes, 1, "seed {seed}: a second Finish");
                assert_eq!(i, cmds.len() - 1, "seed {seed}: Finish is last");
                check_outcome(seed, &view, outcome);
            }
            _ => {}
        }
    }
}

fn check_outcome(seed: u64, view: &View, outcome: &Outcome) {
    let (Some(route), Some(active), Some(standby)) = (view.route, view.active, view.standby) else {
        // Undecided: refused, or a revoke first that stopped before its route was
        // decided (the revoke failed, a key changed, or the consumers read after it
        // cannot be moved).
        let revoke_first = matches!(
            view.mode,
            Mode::Leaked {
                revoke_first: true,
                ..
            }
        );
        assert!(
            matches!(outcome, Outcome::Refused { .. })
                || (revoke_first
                    && matches!(
                        outcome,
                        Outcome::NeedsAttention {
                            reason: Attention::RetriesExhausted { .. }
                                | Attention::Drift { .. }
                                | Attention::NotMovedAfterRevoke { .. },
                            ..
                        }
                    )),
            "seed {seed}: {outcome:?}"
        );
        return;
    };
    match outcome {
        Outcome::Completed { active: now, .. } => {
            let on = ends_on(route, active, standby);
            assert_eq!(*now, on, "seed {seed}: {route:?} completed on {now}");
            for c in &view.consumers {
                let expected = if matches!(route, Route::LeakedStandby | Route::Retire) {
                    ConsumerStatus::Untouched
                } else {
                    ConsumerStatus::Verified { key: on }
                };
                assert_eq!(
                    c.status, expected,
                    "seed {seed}: completed with {} not as expected",
                    c.consumer
                );
            }
        }
        Outcome::RolledBack { .. }
        | Outcome::NeedsAttention {
            reason: Attention::LeakedKeyInUse { .. },
            ..
        } => {
            for c in &view.consumers {
                assert!(
                    c.status == ConsumerStatus::Untouched
                        || c.status == ConsumerStatus::Verified { key: active },
                    "seed {seed}: rolled back with {} in {:?}",
                    c.consumer,
                    c.status
                );
            }
        }
        // Only the usage gate refuses once the precheck decided: before anything was
        // regenerated, over callers of the standby.
        Outcome::Refused { reasons } => assert!(
            reasons.iter().all(|r| matches!(
                r,
                RefusalReason::StandbyInUse { .. } | RefusalReason::UsageUnknown { .. }
            )),
            "seed {seed}: refused after deciding: {reasons:?}"
        ),
        // Every path a run can take is one the machine knows: none may end as a state
        // it must never reach.
        Outcome::NeedsAttention {
            reason: Attention::InternalError { what },
            ..
        } => panic!("seed {seed}: internal error: {what}"),
        Outcome::NeedsAttention { .. } => {}
    }
}

/// While a `Bind` is in flight for a consumer, nothing else about that consumer is:
/// a bind back must never race a forward bind.
pub(super) fn check_one_bind_at_a_time(seed: u64, m: &Machine) {
    let outstanding = m.outstanding();
    for c in &outstanding {
        if let Action::Bind { consumer, .. } = &c.action {
            let others = outstanding
                .iter()
                .filter(|o| o.seq != c.seq && o.action.consumer() == Some(consumer))
                .count();
            assert_eq!(
                others, 0,
                "seed {seed}: {consumer} has a bind racing: {outstanding:?}"
            );
        }
    }
}
