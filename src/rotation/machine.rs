//! The pure state machine of one rotation: events in, commands out.
//!
//! [`Machine`] decides; it never acts. It does no IO, reads no clock, draws no
//! randomness and never sees a key: time arrives inside events, keys appear only as
//! [`KeyName`] and [`Fingerprint`]. An executor performs each [`Command`], journals
//! an intent before it and the result after, and feeds the result back as an
//! [`Event`]. Commands returned by one [`Machine::handle`] call may run concurrently.
//!
//! # Phases
//!
//! | phase | what is in flight |
//! |---|---|
//! | `Prechecking` | `Observe` (with `revoke_first`: `ObserveKeys`, and after the revoke `ObserveAfterRevoke`, with a usage gate beside `CheckUsage(leaked, incident)`) |
//! | `Staging` | `Regenerate(standby, stage)` |
//! | `VerifyingKey` | `VerifyKey(standby)`; with `revoke_first` after the revoke `VerifyKey(active, fresh value)`, or a backoff wait |
//! | `Revoking` | `Regenerate(leaked, revoke)`, or the backoff `WaitUntil` before a retry (with `revoke_first` before the route is decided: see "Revoke first") |
//! | `Binding` | one `Bind(consumer, target)` per consumer of the round (where the round only goes forward: or a backoff wait) |
//! | `VerifyingConsumers` | one `VerifyConsumer(consumer, target)` per consumer bound in the round |
//! | `Committing` | `Commit` |
//! | `Grace` | `WaitUntil(committed + grace)` (with a usage gate, at least until its first check) |
//! | `CheckingStandby` | `CheckUsage(standby, stage)`: who signs with the key staging would kill |
//! | `Gating` | `CheckUsage(active, retire)`, or the `WaitUntil` before checking again |
//! | `Reporting` | `CheckUsage(leaked, incident)`: who breaks now (an incident does not wait) |
//! | `Retiring` | `Regenerate(active, retire)`, or a backoff wait |
//! | `Cleanup` | `DisableVersions(consumer, leaked fingerprints)` per Key Vault consumer |
//! | `RollingBack` | draining in-flight commands, then binds back, verifies back (+ `DisableVersions` of the new value), then `Regenerate(standby, discard)` |
//! | `Completed`, `RolledBack`, `Refused`, `NeedsAttention` | `Finish` (the end) |
//!
//! # Modes and routes
//!
//! | mode (what was asked) | route (decided at precheck) |
//! |---|---|
//! | `Scheduled` (the schedule, a plain `rotate now`) | `Scheduled` |
//! | `Leaked { key }`, `key` is the standby | `LeakedStandby` |
//! | `Leaked { key }`, `key` is active, no consumer takes the newest key on resync | `LeakedActive` |
//! | `Leaked { key }`, `key` is active, a consumer takes the newest key on resync (an ML workspace) | `LeakedActive { stage_standby }` |
//! | `Leaked { key, revoke_first }`, `key` is active (decided after the revoke, see "Revoke first") | `LeakedActive { revoke_first }` |
//! | `Leaked { key, revoke_first }`, `key` is the standby (decided after the revoke) | `LeakedStandby` |
//! | `LeakedBoth` (`--leaked both` or `unknown`) | `LeakedBoth` |
//! | `Retire { key, expect, since, force }` (`rotate resume` of a swap parked at the usage gate) | `Retire` |
//! | `Adopt { key }` (`rotate now --adopt [KEY]`, the daemon's drift repair) | `Adopt` |
//!
//! Routes (decided at precheck, see `precheck`). The *target* is the key and value
//! consumers move to: the standby's (staged, or as it is), or with `revoke_first` the
//! active key's value after its revoke. *Swap* below is Binding → VerifyingConsumers
//! for every consumer whose key keyflip chooses, then, when there is an ML workspace
//! (a consumer [`steered_by_azure`]), Binding → VerifyingConsumers again for it: its
//! resync, issued only once every other consumer was verified on the target (see
//! "The resync goes last").
//!
//! - `Scheduled`: Staging → VerifyingKey → swap → Committing → Grace (skipped when
//!   grace ≤ 0) → Retiring → Completed. With a usage gate: CheckingStandby first, and
//!   Gating between Grace and Retiring (see "The usage gate").
//! - `Retire` (`Mode::Retire`, resuming a swap parked at the gate): the observation
//!   must show every consumer on the key the swap moved them to → Committing → Gating
//!   (not when forced) → Retiring → Completed.
//! - `LeakedBoth`: as `Scheduled` with no grace, then Cleanup (both observed
//!   fingerprints) → Completed.
//! - `LeakedActive` (no ML workspace among the consumers): VerifyingKey (the existing
//!   standby) → swap (one round) → Committing → Retiring (no grace) → Cleanup (the
//!   leaked fingerprint) → Completed.
//! - `LeakedActive { stage_standby }` (an ML workspace is a consumer): Staging →
//!   VerifyingKey → swap (the workspace's resync last) → Committing → Retiring (no
//!   grace) → Cleanup (the leaked fingerprint) → Completed. A workspace resync takes
//!   the account's newest key, which the existing standby may not be; a staged one is.
//! - `LeakedActive { revoke_first }`: (see "Revoke first": the keys read, Revoking,
//!   the consumers read) → VerifyingKey (the revoked key's fresh value) → Binding (to
//!   that value: the same key name as before) → VerifyingConsumers → Committing →
//!   Cleanup (the leaked, pre-revoke fingerprint) → Completed. A rotation journaled
//!   before the revoke came first (`Options::revoke_before_reads` unset) read every
//!   consumer and checked the standby on the data plane (VerifyingKey) before the
//!   revoke, and replays so. The standby is left as it was: after the revoke the
//!   fresh value is the newest key, the one a workspace resync takes. After the revoke
//!   nothing can roll back: a rejected fresh value, failed binds and verifications are
//!   retried (backoff, up to `retire_attempts` rounds), then the rotation parks. So
//!   every consumer, a workspace included, is bound in one round: holding the
//!   workspace back would keep it down longer and protect nothing.
//! - `LeakedStandby`: Revoking → Cleanup → Completed; no consumer is touched.
//! - `Adopt` (`--adopt`: consumers split across keys, or down after a key was
//!   regenerated outside keyflip): VerifyingKey (the key adopted, as it is) → swap
//!   (the workspace's resync last) → Committing → Completed. Nothing is regenerated
//!   and nothing rolls back once a bind was issued: what consumers held was broken or
//!   the other key, which still works, so a failure is retried (backoff, up to
//!   `retire_attempts` rounds), then parks (`NotAdopted`).
//!
//! # Transitions
//!
//! "batch done" means every command of the batch has answered. A *failure* is
//! `RegenerateFailed`, `KeyRejected`, `BindFailed`, `ConsumerMismatch` or
//! `DisableFailed`. *Roll back* enters `RollingBack` (see below).
//!
//! | # | in | on | then |
//! |---|---|---|---|
//! | T1 | Prechecking | `Observed`, precheck refuses | `Finish(Refused)` |
//! | T2 | Prechecking | `Observed`, route stages (`Scheduled`, `LeakedBoth`, `LeakedActive { stage_standby }`) | `Regenerate(standby, stage)` → Staging |
//! | T3 | Prechecking | `Observed`, route `LeakedActive` without `stage_standby` (and `revoke_first` journaled before the revoke came first) | `VerifyKey(standby)` → VerifyingKey |
//! | R1 | Prechecking (`revoke_first`) | `Observed` (keys only), the revoke impossible or wrong (a missing permission on the account, identical keys) | `Finish(Refused)` |
//! | R2 | Prechecking (`revoke_first`) | `Observed` (keys only), otherwise | `Regenerate(leaked, revoke)` → Revoking (undecided; T12-T14 retry it) |
//! | R3 | Revoking (undecided) | `Regenerated` | `ObserveAfterRevoke(leaked, its leaked value)`, with a usage gate and `CheckUsage(leaked value, incident)` beside it → Prechecking (undecided) |
//! | R4 | Prechecking (undecided) | `UsageChecked`/`UsageUnknown` | a warning naming who breaks (as G9), wait for the read |
//! | R5 | Prechecking (undecided) | both answered, the consumers held the leaked value | the route `LeakedActive { revoke_first }`: `VerifyKey(leaked key, fresh value)` → VerifyingKey (T11 on) |
//! | R6 | Prechecking (undecided) | both answered, the consumers held the other key | the route `LeakedStandby`: Cleanup (T26) |
//! | R7 | Prechecking (undecided) | both answered, what the precheck would refuse (split, neither, unusable, a missing permission, no key known) | `Finish(NeedsAttention: NotMovedAfterRevoke)` with the reasons and `--adopt` |
//! | R8 | Revoking, Prechecking (undecided) | `Reobserved`, the leaked key changed other than by the revoke in flight (or again after it) | `Finish(NeedsAttention: Drift)`; the other key changed: note it, go on |
//! | R9 | Prechecking (undecided) | `Observed` after the revoke whose leaked key is not the revoke's value | `Finish(NeedsAttention: Drift)` |
//! | T4 | Prechecking | `Observed`, route `LeakedStandby` | `Regenerate(leaked, revoke)` → Revoking |
//! | T5 | Staging | `Regenerated` | `VerifyKey(standby, new fp)` → VerifyingKey |
//! | T6 | Staging | `RegenerateFailed` | roll back (nothing to undo) |
//! | T7 | VerifyingKey | `KeyVerified` (but T8) | `Bind(target)` every consumer not steered by Azure (every consumer with `revoke_first`) → Binding (first round); none → as T17 |
//! | T8 | VerifyingKey | `KeyVerified`, `revoke_first`, before the revoke | `Regenerate(active, revoke)` → Revoking |
//! | T9 | VerifyingKey | `KeyRejected`, before any revoke | roll back |
//! | T10 | Revoking | `Regenerated`, `LeakedStandby` | Cleanup (T26) |
//! | T11 | Revoking | `Regenerated`, `revoke_first` | the fresh value is the target: `VerifyKey(active, fresh fp)` → VerifyingKey |
//! | T11a | VerifyingKey (after the revoke) | `KeyRejected`, attempts left | `WaitUntil(rejected at + backoff)` |
//! | T11b | VerifyingKey (after the revoke) | `Waited` | the same `VerifyKey` again |
//! | T11c | VerifyingKey (after the revoke) | `KeyRejected`, `retire_attempts` reached | `Finish(NeedsAttention: KeyNotAccepted)` |
//! | T12 | Revoking, Retiring, RollingBack(discard) | `RegenerateFailed`, attempts left | `WaitUntil(failed at + backoff)` |
//! | T13 | Revoking, Retiring, RollingBack(discard) | `RegenerateFailed`, `retire_attempts` reached | `Finish(NeedsAttention: RetriesExhausted)` |
//! | T14 | Revoking, Retiring, RollingBack(discard) | `Waited` (backoff) | the same `Regenerate` again, same `before` |
//! | T15 | Binding | `Bound`, batch not done | wait |
//! | T16 | Binding (first round, not `revoke_first`) | `BindFailed` | roll back |
//! | T17 | Binding | batch done, all bound | `VerifyConsumer` every consumer bound in the round → VerifyingConsumers |
//! | T18 | VerifyingConsumers (first round, not `revoke_first`) | `ConsumerMismatch` | roll back |
//! | T19 | VerifyingConsumers (first round) | batch done, all verified, consumers steered by Azure (ML workspaces) waiting | `Bind(target)` each of them, its resync → Binding (resync round) |
//! | T19a | VerifyingConsumers (last round) | batch done, every consumer verified (checked from the step log) | `Commit` → Committing |
//! | T20 | Binding, VerifyingConsumers (`revoke_first`, or the resync round) | batch done with failures, rounds left | `WaitUntil(backoff)` → Binding |
//! | T21 | Binding (same) | `Waited` | `Bind` again each failed consumer |
//! | T22 | Binding, VerifyingConsumers (same) | batch done with failures, rounds used up | `Finish(NeedsAttention: ConsumersNotMoved)` with `revoke_first`, `Finish(NeedsAttention: ResyncFailed)` in the resync round |
//! | T23 | Committing | `Committed`, `Scheduled`, grace > 0 | `WaitUntil(committed + grace)` → Grace |
//! | T24 | Committing | `Committed`, no grace (or `LeakedBoth`, `LeakedActive` without `revoke_first`) | `Regenerate(active, retire)` → Retiring |
//! | T25 | Grace | `Waited` | `Regenerate(active, retire)` → Retiring |
//! | T26 | Committing (`revoke_first`), Retiring (incident) | `Committed` / `Regenerated` | `DisableVersions` per Key Vault consumer → Cleanup, or `Finish(Completed)` if none |
//! | T27 | Retiring | `Regenerated`, `Scheduled` | `Finish(Completed)` |
//! | T28 | Cleanup | batch done (a `DisableFailed` is a warning: the value is dead) | `Finish(Completed)` |
//! | T29 | RollingBack(draining) | last in-flight answer | `Bind(active)` every consumer a forward `Bind` was issued to → binding back; none → T34 |
//! | T30 | RollingBack(binding back) | batch done, a `BindFailed` | `Finish(NeedsAttention: RollbackIncomplete)` |
//! | T31 | RollingBack(binding back) | batch done, all bound | `VerifyConsumer(active)` each, plus `DisableVersions(new fp)` for Key Vault → verifying back |
//! | T32 | RollingBack(verifying back) | batch done, all verified | `Regenerate(standby, discard)` → discarding (a `DisableFailed` is a warning) |
//! | T33 | RollingBack(verifying back) | batch done, a mismatch | `Finish(NeedsAttention: RollbackIncomplete)` |
//! | T34 | RollingBack(discarding) | `Regenerated`; or nothing was bound and nothing staged | `Finish(RolledBack)`; incident modes `Finish(NeedsAttention: LeakedKeyInUse)` |
//! | T34a | RollingBack(draining) | last in-flight answer, nothing bound, the standby staged | `Regenerate(standby, discard)` → discarding |
//! | T35 | any but Prechecking | `Reobserved`, every key as recorded (or in doubt) | nothing |
//! | T36 | any | `Reobserved`, a key consumers rely on (with `revoke_first`, from the revoke on: the active key), or one still to be retired, changed | `Finish(NeedsAttention: Drift)`, in-doubt commands listed |
//! | T37 | VerifyingKey, Binding, VerifyingConsumers (first round) | `Reobserved`, the standby changed before commit (and before any revoke) | roll back (cause: drift) |
//! | T37a | Binding, VerifyingConsumers (resync round) | `Reobserved`, the standby changed | `Finish(NeedsAttention: Drift)`: a resync cannot be rolled back |
//! | T38 | any | `Reobserved`, a key no consumer relies on changed: one this rotation already retired or discarded, the standby during a rollback or once a `revoke_first` revoke was issued, the leaked standby | note it, take it as the new `before`, go on |
//! | T39 | finished | any event | error, nothing changes |
//! | T40 | any | answer to an unknown or answered seq, or of the wrong kind | error, nothing changes |
//! | T41 | any | an answer its stage does not expect, a stage that cannot act on what it holds (see "Failing closed"), or nothing left in flight | `Finish(NeedsAttention: InternalError)`, naming it |
//! | T41a | Committing (`Adopt`) | `Committed` | `Finish(Completed)`: nothing to retire |
//! | T41b | Binding, VerifyingConsumers (`Adopt`) | batch done with failures | as T20-T22, parking `NotAdopted` |
//! | T42 | any but RollingBack, route `Scheduled` | `Escalated` with the leaked key the active one (the key being retired) | the mode becomes the incident, the route `LeakedActive { stage_standby }`; no grace: the grace wait ends at once ([`Machine::deadline`]), the retire follows commit at once, then Cleanup of the leaked value |
//! | T43 | Staging, VerifyingKey, Binding, VerifyingConsumers (first round, not forward-only) | `Escalated`, anything T42 does not take | roll back (cause `Superseded`); after it a follow-up incident rotation ([`Machine::follow_up`]) |
//! | T44 | any other stage | `Escalated`, anything T42 does not take | no grace; go on to the end; then the follow-up |
//! | T45 | Prechecking | `Escalated` | the mode becomes the incident: the precheck decides its route. An incident the mode covers already changes nothing |
//! | T46 | Prechecking .. Grace, `Scheduled` | `GraceShortened` no longer than the grace | the grace a commit waits, and the end of a running grace wait, move earlier |
//! | T47 | any | an `Escalated` that is not an incident; a `GraceShortened` that lengthens, in an incident, while rolling back or past the grace | error (`HandleError::Amendment`), nothing changes |
//! | G1 | Prechecking | `Observed`, route `Scheduled`, a usage gate | `CheckUsage(standby, stage, since at − lookback)` → CheckingStandby |
//! | G2 | CheckingStandby | `UsageChecked` with callers, or `UsageUnknown` | `Finish(Refused: StandbyInUse / UsageUnknown)`; nothing was changed |
//! | G2a | CheckingStandby | `UsageChecked`, nobody | `Regenerate(standby, stage)` → Staging (T5 on) |
//! | G3 | Committing | `Committed`, `Scheduled`, a usage gate | `WaitUntil(committed + max(grace, latency + quiet))` → Grace; its `Waited`: `CheckUsage(active, retire, since the commit)` → Gating (deadline: commit + deadline) |
//! | G4 | Gating | `UsageChecked`, no caller seen since `at − latency − quiet` | `Regenerate(active, retire)` → Retiring (callers that stopped earlier: a warning) |
//! | G5 | Gating | `UsageChecked` with such callers, or `UsageUnknown`; `at + recheck` ≤ deadline | note `UsageHeld`, `WaitUntil(at + recheck)`; its `Waited`: `CheckUsage` again |
//! | G6 | Gating | the same, `at + recheck` past the deadline | `Finish(NeedsAttention: UsageGateHeld)` with the callers; both keys still work |
//! | G7 | Gating | `UsageUnknown` | as G5/G6: unreadable logs never count as quiet |
//! | G8 | Committing (`LeakedBoth`, `LeakedActive` without `revoke_first`), a usage gate | `Committed` | `CheckUsage(active, incident, since at − lookback)` → Reporting; any answer: a warning naming who breaks, then `Regenerate(active, retire)` (T24 on) |
//! | G9 | Prechecking (`LeakedStandby`), VerifyingKey before the revoke (`revoke_first` journaled before the revoke came first), a usage gate | `Observed` / `KeyVerified` | `CheckUsage(leaked, incident)` → Reporting; any answer: the warning, then `Regenerate(leaked, revoke)` (T4/T8 on). A `revoke_first` asks after its revoke instead (R3) |
//! | G10 | Prechecking (`Mode::Retire`) | `Observed`: every consumer holds the key the parked swap moved them to, the key to retire is the value it left | `Commit` (its proof from the observation) → Committing; `Committed`: forced → `Regenerate(active, retire)`, else `CheckUsage(active, retire, since the parked swap)` → Gating (deadline: now + deadline) |
//! | G11 | Prechecking (`Mode::Retire`) | `Observed`, a consumer elsewhere or the key changed | `Finish(Refused: NotAllOn / RetireKeyChanged)` |
//! | G12 | Prechecking | `Observed` with unlisted consumers | a warning each; with `refuse_unlisted` in a `Scheduled` rotation, `Finish(Refused: UnlistedConsumers)` over those whose value was read (probable ones only warn); incidents only warn |
//! | G13 | Prechecking | `Observed` whose unlisted-consumer check could not make some reads (`unlisted_unchecked`: put off by the daemon's budget, refused or failed) | a warning naming them and `doctor --strict`; with `refuse_unlisted` in a `Scheduled` rotation, `Finish(Refused: UnlistedCheckIncomplete)` before any effect; incidents only warn |
//!
//! # Revoke first
//!
//! `--leaked KEY --revoke-first` asks for the leaked value dead before anything else,
//! accepting that consumers on it break until they are moved. So the first read is
//! of the keys alone (`ObserveKeys`: the account's permissions, the account,
//! `listKeys`, one round trip), the revoke follows it (R1, R2), and only then are the
//! consumers read (`ObserveAfterRevoke`, against the keys as they were before the
//! revoke) and the route decided (R5-R7): consumers on the leaked value move to its
//! fresh value, which is itself verified on the data plane before any of them is
//! bound (a check of the standby before the revoke would add no safety: nobody moves
//! to it); with the leaked key the standby, nobody moves. What would have refused
//! before any effect parks after the revoke with `--adopt` as the way out: it cannot
//! refuse any more. An incident's usage report asks about the leaked value after it
//! died, beside the consumer read, so it never delays the revoke. See the
//! `revoke_first` module.
//!
//! # The usage gate
//!
//! With `Options::usage_gate`, the account's resource logs decide when a key callers
//! may still use is regenerated (see the `gate` module): the retire waits until nobody
//! signed with the old key for the quiet period in logs old enough to be complete (the
//! ingestion latency), checking again every `recheck`, and parks at the deadline
//! naming the callers; a scheduled rotation refuses to stage a standby someone signs
//! with; an incident never waits but reports who breaks. `CheckUsage` carries the
//! key's fingerprint, so the executor asks the logs only about the value meant, and
//! unreadable logs never count as quiet.
//!
//! # The resync goes last
//!
//! An ML workspace is not given a key: it is told to resync, and takes the key Azure
//! picks (the account's newest, as far as keyflip knows). A rollback's resync would
//! take the newest key again, the new one, so a workspace that resynced forward can
//! never be brought back. Its bind is therefore the last step before commit: issued
//! only once every other consumer was bound *and verified* on the target, which the
//! staging made the newest key. Before it, any failure rolls back with the workspace
//! untouched. From it on, nothing rolls back: a failed resync or verification is
//! retried with the retire backoff, and after `retire_attempts` rounds the rotation
//! parks (`ResyncFailed`) with every other consumer on the target, which works, and
//! both keys valid. [`steered_by_azure`] is the one place that says which consumers
//! these are. The order is an option journaled with the rotation: one journaled before
//! it existed ran with the workspace in the first round, and replays and resumes that
//! way ([`ResyncOrder::WithTheRest`]).
//!
//! # Escalation
//!
//! An incident declared while a rotation of the account is unfinished (in its grace,
//! after a crash or Ctrl-C, or running in the daemon, which stops it between journaled
//! steps) takes that rotation over: the executor journals `Escalated` (who asked, and
//! when, go with it) and the machine decides from where it stands (T42-T45). The grace
//! period is gone either way. A swap whose old key leaked finishes the incident
//! itself: consumers are already moving off that key, so it is retired as soon as
//! they are committed, and its Key Vault versions disabled. Anything else (the new key
//! leaked, both, a swap already rolling back, another incident) winds down the quickest
//! safe way (a first round rolls back, discarding a staged value that may have leaked;
//! from a resync or commit it goes forward) and leaves the incident to a follow-up
//! rotation the executor starts right after, under the same account lock. An incident
//! is never dropped: it is handled here, followed up, or the rotation parked and says
//! what to run. `GraceShortened` (`rotate resume --grace`) only moves a grace earlier.
//! Both are events like any other: journaled, replayed, and the random-run test
//! declares incidents and shortens graces at random points.
//!
//! # Rollback
//!
//! A failure before commit and before any resync first lets every in-flight command
//! answer (so a late forward `Bind` cannot land after the bind back), then binds back
//! every consumer a forward `Bind` was issued to, whatever its result, because it may
//! have happened. Then each is verified on the old key, and Key Vault consumers get
//! the versions holding the new value disabled. Only when every one is back is the
//! standby regenerated once more (`Discard`); a staged standby is discarded even when
//! no consumer had been bound (it failed verification). A rollback that cannot bring
//! everyone back parks. A workspace resync is never part of a rollback: none was
//! issued before one starts. The first resync (or, without one, the commit marker) is
//! the point after which nothing rolls back.
//!
//! # Failing closed
//!
//! Before the precheck passes the machine knows nothing to act on; after it, the
//! decision and each key as last known live in `Decided`, beside the stage, and each
//! stage carries what it acts on (the value being verified, the target consumers move
//! to, the proofs below). No step reads a value that might be missing, so none picks a
//! default for one.
//!
//! `Commit` is issued only with an `AllVerified`, and the retire (the point of no
//! return) only with the `Committed` made from it. Both are zero-sized values that
//! only the `proof` module can make: `AllVerified` only by a check of the step log
//! itself (every consumer's latest bind or verification is a `VerifyConsumer` of the
//! key and value consumers move to, answered `ConsumerVerified`), so a path that skips
//! verification does not compile.
//!
//! Whatever the machine cannot explain (T41: an answer its stage does not expect, a
//! failure where the swap can still roll back that did not, a rollback that does not
//! know the value consumers were bound to, a stage with nothing in flight) parks the
//! rotation as `NeedsAttention: InternalError` naming it. The random-run test holds
//! every reachable path to never ending there.
//!
//! # Replay
//!
//! Everything the machine knows came from [`Machine::new`] and the events it
//! accepted, so a fresh machine fed the journaled events in the journaled order is
//! equal to the one that crashed, and has issued exactly the same commands (same
//! `seq`, same content): [`Machine::replay`]. [`Machine::outstanding`] then lists the
//! commands without a result; the executor reconciles those (see
//! `docs/ARCHITECTURE.md`, "Crash recovery"), after first feeding a
//! [`Event::Reobserved`] so the machine can check that Azure still matches. An event
//! the machine rejects is never journaled, so replay never meets one.

mod advance;
mod amend;
mod drift;
mod failure;
mod forward;
mod gate;
mod outcome;
mod precheck;
mod proof;
mod revoke_first;
mod rollback;
mod types;
mod view;

#[cfg(test)]
mod random_tests;
#[cfg(test)]
mod tests;

use chrono::{DateTime, TimeDelta, Utc};

pub use amend::Escalation;
pub use failure::{Failure, FailureKind, Warning, WarningKind};
pub use outcome::*;
pub use precheck::Route;
pub use types::*;
pub use view::{
    ConsumerStatus, ConsumerView, GraceShortening, Happening, Note, Phase, TimelineEntry, View,
};

use crate::key::KeyName;
use crate::secret::Fingerprint;
use proof::{AllVerified, Committed};

/// Whether Azure, not keyflip, picks the key this consumer takes when it is bound: a
/// consumer that takes the newest key on resync
/// ([`Capabilities::takes_newest_key_on_resync`]: an ML workspace's `resyncKeys` makes
/// it take the account's newest key, as far as keyflip knows; Azure does not document
/// the choice). Such a bind cannot be steered back, so it waits until every other
/// consumer was bound and verified, and once it was issued nothing rolls back (a
/// rotation journaled before record schema 2 replays with [`ResyncOrder::WithTheRest`]
/// instead). The one place that decides it.
pub(crate) fn steered_by_azure(consumer: &ConsumerRef) -> bool {
    consumer.capabilities.takes_newest_key_on_resync
}

/// The first wait between retries of a step that cannot roll back.
pub(crate) const RETRY_FIRST_BACKOFF: TimeDelta = TimeDelta::seconds(10);
/// The longest wait between retries.
pub(crate) const RETRY_MAX_BACKOFF: TimeDelta = TimeDelta::minutes(5);

/// The wait after the `failures`-th failure: 10 s doubling to 5 min.
pub(crate) fn retry_backoff(failures: u32) -> TimeDelta {
    let doublings = failures.saturating_sub(1).min(16);
    let secs = RETRY_FIRST_BACKOFF.num_seconds() << doublings;
    TimeDelta::seconds(secs).min(RETRY_MAX_BACKOFF)
}

/// An event the machine cannot accept. Nothing changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HandleError {
    #[error(
        "the rotation has already finished, so the event is not accepted; it belongs to an older run or the journal is out of order"
    )]
    Finished,
    #[error(
        "no command with seq {seq} was issued (the last is {last}); the result belongs to another rotation or the journal is corrupt"
    )]
    UnknownSeq { seq: u32, last: u32 },
    #[error("command {seq} already has a result; a result is accepted once")]
    AlreadyAnswered { seq: u32 },
    #[error("command {seq} is `{command}`, which `{result}` does not answer")]
    WrongResult {
        seq: u32,
        command: &'static str,
        result: &'static str,
    },
    /// An incident or a grace period that cannot amend the rotation as it stands.
    #[error("the rotation cannot take this change: {reason}")]
    Amendment { reason: String },
}

/// Event `index` (0-based) of a replay was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("event {index} of the replay was rejected: {error}")]
pub(crate) struct ReplayError {
    pub(crate) index: usize,
    pub error: HandleError,
}

#[derive(Clone, Debug, PartialEq)]
struct Step {
    command: Command,
    issued_at: Option<DateTime<Utc>>,
    answer: Option<(DateTime<Utc>, StepResult)>,
    /// Index into `Machine::consumers` for consumer commands.
    consumer: Option<usize>,
}

#[derive(Clone, Debug, PartialEq)]
struct Track {
    consumer: ConsumerRef,
    initially: Holding,
    status: ConsumerStatus,
    /// A `Bind` to the standby was issued, so the rollback must bind it back.
    bound_forward: bool,
    disabled: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
enum Entry {
    Issued(u32),
    Answered(u32),
    Noted(DateTime<Utc>, Note),
}

/// What a passed precheck decided, and each key as last known: everything the steps
/// after it act on. Only the precheck makes one, and every later stage lives beside
/// it in [`State::Decided`], so no step can meet a rotation that was not decided.
#[derive(Clone, Debug, PartialEq)]
struct Decided {
    route: Route,
    /// The key every known consumer held at observation.
    active: KeyName,
    /// The other key: moved to, revoked (the leaked standby), or with `revoke_first`
    /// only checked before the revoke.
    standby: KeyName,
    /// Fingerprints of leaked values as first observed, disabled in Key Vault at the end.
    leaked: Vec<Fingerprint>,
    /// Each key as last known (index 0 = key1): observed, then from `Regenerated` and
    /// from drift a restart found and accepted.
    last: [KeyState; 2],
    /// When the consumers Azure steers are bound (from the options).
    resync: ResyncOrder,
}

impl Decided {
    /// The key consumers end on: the standby, or with `revoke_first` (and for the
    /// leaked standby, where nobody moves) the active key.
    fn moves_to(&self) -> KeyName {
        match self.route {
            Route::LeakedStandby
            | Route::LeakedActive {
                revoke_first: true, ..
            } => self.active,
            Route::Scheduled
            | Route::LeakedBoth
            | Route::Retire
            | Route::Adopt
            | Route::LeakedActive {
                revoke_first: false,
                ..
            } => self.standby,
        }
    }

    fn last(&self, key: KeyName) -> KeyState {
        self.last[index(key)]
    }
}

/// Where a rotation stands.
#[derive(Clone, Debug, PartialEq)]
enum State {
    /// `Observe` is in flight; nothing is decided yet.
    Prechecking,
    /// `revoke_first`: the keys-only precheck passed and the leaked key is being
    /// revoked, or the consumers are being read after it; the route is not decided
    /// until they are (see `revoke_first`).
    Revoking(Box<revoke_first::Early>),
    /// The precheck passed: what it decided, and the stage reached since.
    Decided { decided: Box<Decided>, stage: Stage },
    /// Finished before anything was decided (refused).
    Ended,
}

/// A decided rotation's stage, with what that stage needs to act: the value being
/// verified or moved to, and the proofs that let it commit and retire. `failures`
/// counts failed rounds of a step that retries instead of rolling back.
#[derive(Clone, Debug, PartialEq)]
enum Stage {
    Staging,
    /// `VerifyKey(check's key, value)` in flight, or the backoff before it again.
    VerifyingKey {
        check: KeyCheck,
        value: Fingerprint,
        failures: u32,
    },
    Revoking {
        failures: u32,
    },
    /// `round`'s consumers are being bound to `target` (or, when that round only goes
    /// forward, a backoff wait before binding the failed ones again).
    Binding {
        target: Fingerprint,
        round: Round,
        failures: u32,
    },
    VerifyingConsumers {
        target: Fingerprint,
        round: Round,
        failures: u32,
    },
    /// `Commit` in flight; only a check of every consumer reaches here.
    Committing {
        verified: AllVerified,
    },
    Grace {
        committed: Committed,
    },
    /// Before staging, with a usage gate: `CheckUsage(standby, Stage)`; anyone
    /// signing with the standby refuses the rotation.
    CheckingStandby,
    /// The usage gate before the retire: `CheckUsage(active, Retire)` in flight, or
    /// the wait before checking again. `since` is the swap, `deadline` when holding
    /// ends and the rotation parks.
    Gating {
        committed: Committed,
        since: DateTime<Utc>,
        deadline: DateTime<Utc>,
    },
    /// An incident asks who breaks now (`CheckUsage(key, Incident)`), then goes on
    /// whatever the answer.
    Reporting {
        then: Then,
    },
    Retiring {
        committed: Committed,
        failures: u32,
    },
    Cleanup,
    RollingBack {
        cause: Cause,
        step: Rollback,
    },
    Finished,
}

impl Stage {
    /// The value consumers were bound to, once a forward `Bind` may have been issued.
    fn moved_to(&self) -> Option<Fingerprint> {
        match self {
            Stage::Binding { target, .. } | Stage::VerifyingConsumers { target, .. } => {
                Some(*target)
            }
            _ => None,
        }
    }
}

/// What an incident does once it has asked who breaks.
#[derive(Clone, Debug, PartialEq)]
enum Then {
    Retire(Committed),
    Revoke(KeyName),
}

/// Which consumers a round of binds and verifications moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Round {
    /// Every consumer whose key keyflip chooses; with `revoke_first` every consumer.
    Steerable,
    /// After the first round was verified: consumers Azure steers (an ML workspace's
    /// resync). From its first bind on nothing rolls back.
    Resync,
}

impl Decided {
    /// Whether the consumer waits for the resync round: Azure picks its key, and the
    /// route can still roll back (with `revoke_first` nothing can, and a consumer held
    /// back would only stay down longer).
    fn held_back(&self, consumer: &ConsumerRef) -> bool {
        steered_by_azure(consumer) && !self.route.revoke_first() && self.resync == ResyncOrder::Last
    }

    /// Whether a failure in `round` goes forward (retry, then park) instead of back:
    /// after a `revoke_first` revoke, in the resync round, and when adopting (what
    /// consumers held before was broken, or the other key, which still works).
    fn forward_only(&self, round: Round) -> bool {
        self.route.revoke_first() || round == Round::Resync || self.route == Route::Adopt
    }
}

/// Which value a `VerifyKey` checks, and so what its answer leads to.
#[derive(Clone, Copy, Debug, PartialEq)]
enum KeyCheck {
    /// The value consumers move to (staged, or the existing standby): a rejection
    /// rolls back.
    Target,
    /// With `revoke_first`: the standby, so the only working key is never revoked while
    /// the other does not work. Consumers do not move to it.
    BeforeRevoke,
    /// With `revoke_first`: the revoked key's fresh value. Nothing rolls back any more,
    /// so a rejection is retried after a backoff.
    Fresh,
}

impl KeyCheck {
    fn key(self, d: &Decided) -> KeyName {
        match self {
            KeyCheck::Target | KeyCheck::BeforeRevoke => d.standby,
            KeyCheck::Fresh => d.active,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Rollback {
    /// Letting in-flight commands answer. `moved_to` is the value consumers were bound
    /// to, when a forward `Bind` was issued.
    Draining {
        moved_to: Option<Fingerprint>,
    },
    BindingBack {
        moved_to: Fingerprint,
    },
    VerifyingBack,
    Discarding {
        failures: u32,
    },
}

/// What the answered command was, copied out so the step list is not borrowed
/// while the machine moves on.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Regenerate { key: KeyName, purpose: Purpose },
    Wait,
    Other,
}

/// What to do about a key that changed behind the machine's back.
enum DriftResponse {
    Park(String),
    RollBack,
    Continue,
}

/// One rotation's state machine. See the module docs.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Machine {
    /// What the rotation began as (what replay starts from).
    started: (Mode, Options),
    /// The mode now: an incident that took the rotation over and handles it here
    /// changes it.
    mode: Mode,
    /// The options now: a shortened grace, or none once an incident took over.
    options: Options,
    escalation: Option<amend::Escalation>,
    steps: Vec<Step>,
    /// Issued, unanswered commands other than `Finish`.
    in_flight: usize,
    state: State,
    consumers: Vec<Track>,
    regenerations: Vec<Regeneration>,
    warnings: Vec<Warning>,
    timeline: Vec<Entry>,
}

fn index(key: KeyName) -> usize {
    match key {
        KeyName::Key1 => 0,
        KeyName::Key2 => 1,
    }
}

impl Machine {
    /// A machine that has issued its first command, `Observe` (see
    /// [`Machine::outstanding`]): a fresh start and a resumed one both begin by
    /// performing what is outstanding.
    pub fn new(mode: Mode, options: Options) -> Self {
        let mut machine = Self {
            started: (mode, options),
            mode,
            options,
            escalation: None,
            steps: Vec::with_capacity(16),
            in_flight: 0,
            state: State::Prechecking,
            consumers: Vec::new(),
            regenerations: Vec::new(),
            warnings: Vec::new(),
            timeline: Vec::with_capacity(32),
        };
        let first = if machine.revokes_before_reads() {
            Action::ObserveKeys
        } else {
            Action::Observe
        };
        machine.issue(None, first, None, &mut Vec::new());
        machine
    }

    /// A fresh machine fed `events` in order: the state a crashed run had reached.
    pub(crate) fn replay<'a>(
        mode: Mode,
        options: Options,
        events: impl IntoIterator<Item = &'a Event>,
    ) -> Result<Self, ReplayError> {
        let mut machine = Self::new(mode, options);
        for (index, event) in events.into_iter().enumerate() {
            machine
                .handle(event)
                .map_err(|error| ReplayError { index, error })?;
        }
        Ok(machine)
    }

    /// The mode the rotation runs in now.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The options now (a grace shortened since the start shows here).
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// The mode and options the rotation began with: what [`Machine::replay`] starts
    /// from.
    #[cfg(test)]
    pub fn started(&self) -> (Mode, Options) {
        self.started
    }

    /// Every command issued so far, in `seq` order.
    #[cfg(test)]
    pub fn issued(&self) -> impl ExactSizeIterator<Item = &Command> {
        self.steps.iter().map(|s| &s.command)
    }

    /// The command with this `seq`, if issued.
    pub fn command(&self, seq: u32) -> Option<&Command> {
        self.step_index(seq).map(|i| &self.steps[i].command)
    }

    /// Commands issued without a result yet: what a restarted executor has in doubt.
    /// After `Finish`, only `Finish` (commands abandoned by a park are listed in the
    /// outcome instead, and must not be performed).
    pub(crate) fn outstanding(&self) -> Vec<Command> {
        if self.is_finished() {
            return self
                .steps
                .last()
                .map(|s| s.command.clone())
                .into_iter()
                .collect();
        }
        self.steps
            .iter()
            .filter(|s| s.answer.is_none())
            .map(|s| s.command.clone())
            .collect()
    }

    pub fn is_finished(&self) -> bool {
        matches!(
            self.state,
            State::Ended
                | State::Decided {
                    stage: Stage::Finished,
                    ..
                }
        )
    }

    /// The outcome, once finished.
    pub fn outcome(&self) -> Option<&Outcome> {
        match self.steps.last().map(|s| &s.command.action) {
            Some(Action::Finish { outcome }) => Some(outcome),
            _ => None,
        }
    }

    /// Whether `event` would be accepted as it stands, without applying it: what the
    /// executor asks before it journals an amendment (an incident, a shorter grace).
    pub fn accepts(&self, event: &Event) -> Result<(), HandleError> {
        if self.is_finished() {
            return Err(HandleError::Finished);
        }
        self.check_amendment(event)
    }

    /// Applies one event and returns the commands to perform next. A rejected event
    /// changes nothing and must not be journaled.
    pub fn handle(&mut self, event: &Event) -> Result<Vec<Command>, HandleError> {
        if self.is_finished() {
            return Err(HandleError::Finished);
        }
        let mut out = Vec::new();
        match event {
            Event::Answer { seq, at, result } => {
                let i = self.check_answer(*seq, result)?;
                self.steps[i].answer = Some((*at, result.clone()));
                self.in_flight -= 1;
                self.timeline.push(Entry::Answered(*seq));
                let state = std::mem::replace(&mut self.state, State::Ended);
                self.state = match (state, result) {
                    (State::Prechecking, StepResult::Observed(obs)) => {
                        self.first_observed(i, *at, obs, &mut out)
                    }
                    (State::Revoking(early), _) => {
                        self.early_answer(*early, i, *at, result, &mut out)
                    }
                    (State::Decided { mut decided, stage }, _) => {
                        let kind = self.record(&mut decided, i, *at, result);
                        let stage = self.advance(&decided, stage, i, kind, *at, result, &mut out);
                        State::Decided { decided, stage }
                    }
                    // Only `Observe` is issued before the precheck, and only `Observed`
                    // answers it; an ended machine was refused above.
                    _ => {
                        let what = format!(
                            "`{}` answered step {seq} before the precheck decided anything",
                            result.name()
                        );
                        self.impossible(*at, what, &mut out);
                        State::Ended
                    }
                };
            }
            Event::Reobserved { at, observation } => {
                let state = std::mem::replace(&mut self.state, State::Ended);
                self.state = self.reobserved(state, *at, observation, &mut out);
            }
            Event::Escalated { at, mode, by } => {
                self.check_amendment(event)?;
                let state = std::mem::replace(&mut self.state, State::Ended);
                self.state = self.escalate(state, *at, *mode, by.clone(), &mut out);
            }
            Event::GraceShortened { at, grace, by } => {
                self.check_amendment(event)?;
                self.shorten_grace(*at, *grace, by.clone());
            }
        }
        self.never_stuck(event.at(), &mut out);
        Ok(out)
    }

    /// Every stage but the end waits for an answer. With nothing in flight none can
    /// come: the rotation would stall, so it parks.
    fn never_stuck(&mut self, at: DateTime<Utc>, out: &mut Vec<Command>) {
        if self.is_finished() || self.in_flight > 0 {
            return;
        }
        let what = format!(
            "the rotation is {:?} with no command in flight, so nothing can move it on",
            self.phase()
        );
        self.impossible(at, what, out);
        let state = std::mem::replace(&mut self.state, State::Ended);
        self.state = match state {
            State::Decided { decided, .. } => State::Decided {
                decided,
                stage: Stage::Finished,
            },
            State::Prechecking | State::Revoking(_) | State::Ended => State::Ended,
        };
    }

    fn step_index(&self, seq: u32) -> Option<usize> {
        let i = usize::try_from(seq).ok()?.checked_sub(1)?;
        (i < self.steps.len()).then_some(i)
    }

    fn check_answer(&self, seq: u32, result: &StepResult) -> Result<usize, HandleError> {
        let i = self.step_index(seq).ok_or(HandleError::UnknownSeq {
            seq,
            last: u32::try_from(self.steps.len()).unwrap_or(u32::MAX),
        })?;
        let step = &self.steps[i];
        if step.answer.is_some() {
            return Err(HandleError::AlreadyAnswered { seq });
        }
        if !result.answers(&step.command.action) {
            return Err(HandleError::WrongResult {
                seq,
                command: step.command.action.name(),
                result: result.name(),
            });
        }
        Ok(i)
    }

    fn issue(
        &mut self,
        at: Option<DateTime<Utc>>,
        action: Action,
        consumer: Option<usize>,
        out: &mut Vec<Command>,
    ) {
        let seq = u32::try_from(self.steps.len() + 1).unwrap_or(u32::MAX);
        if !matches!(action, Action::Finish { .. }) {
            self.in_flight += 1;
        }
        let command = Command { seq, action };
        out.push(command.clone());
        self.steps.push(Step {
            command,
            issued_at: at,
            answer: None,
            consumer,
        });
        self.timeline.push(Entry::Issued(seq));
    }

    fn note(&mut self, at: DateTime<Utc>, note: Note) {
        self.timeline.push(Entry::Noted(at, note));
    }

    fn warn(&mut self, at: DateTime<Utc>, warning: Warning) {
        self.warnings.push(warning.clone());
        self.note(at, Note::Warning { warning });
    }
}
