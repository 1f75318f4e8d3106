//! The precheck: from the first observation and the mode, decide which key is active,
//! which route the rotation takes, or refuse with every reason that applies.
//!
//! The rules, by route:
//!
//! - **Swap** (`Scheduled`, `LeakedBoth`, and `Leaked` when the leaked key is the
//!   active one): refuse when shared-key access is off (nothing could be verified),
//!   a permission is missing, both keys have one fingerprint, a consumer is listed
//!   twice, a consumer holds neither key or is `Unusable` as listed, known consumers
//!   are split across keys, or no consumer's key is known. `Unknown` consumers are
//!   reported, not counted.
//! - **Leaked standby** (`Leaked { key }` where no known consumer holds `key` and at
//!   least one holds the other): only the leaked key is regenerated and no consumer
//!   is touched, so only missing permissions, identical keys and duplicate consumers
//!   refuse. A consumer on neither key (or unusable as listed) or disabled shared-key
//!   access does not make killing a leaked value less urgent; they become warnings. Unknown consumers
//!   might hold the leaked key; that risk is reported as a warning.
//!
//! - **Adopt** (`--adopt`): consumers may hold either key or neither; every one moves to
//!   one key that works now. Only what no choice of key fixes refuses (see [`adopt`]).
//!
//! With `Leaked` and no known consumer on either key, keyflip cannot tell whether the
//! leaked key is in use, so it refuses rather than guess.
//!
//! A leaked active key without `revoke_first` stages the standby first when any
//! consumer takes the newest key on resync (an ML workspace: a resync takes a key of
//! Azure's choosing, the newest by `keyCreationTime` as far as keyflip knows), since
//! the existing standby is often older than the leaked key. Without one every
//! consumer takes the key keyflip gives it, so the existing standby is used as it is
//! (no regeneration).

use serde::{Deserialize, Serialize};

use super::failure::{Warning, WarningKind};
use super::outcome::RefusalReason;
use super::steered_by_azure;
use super::types::{ConsumerId, Holding, Mode, Observation};
use crate::key::KeyName;
use crate::secret::Fingerprint;

/// The path a rotation takes, decided at precheck.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "route", rename_all = "snake_case")]
pub enum Route {
    /// Stage the standby, swap, commit, grace, retire.
    Scheduled,
    /// Stage the (leaked) standby, swap, commit, retire at once, disable versions.
    LeakedBoth,
    /// The leaked key is active. Without `revoke_first`: swap to the standby (staged
    /// first when `stage_standby`), commit, retire the leaked key at once. With
    /// `revoke_first`: verify the standby, regenerate the leaked key, then bind
    /// consumers to that key's fresh value; the standby is left as it was.
    LeakedActive {
        revoke_first: bool,
        /// The standby is regenerated before consumers move to it, because an ML
        /// workspace consumes the account: a workspace resync takes the newest key
        /// (see `twin/README.md`), which the existing standby may not be. Rows
        /// written before this field existed read as `false`, what they did.
        #[serde(default)]
        stage_standby: bool,
    },
    /// The leaked key is the standby: regenerate it, disable versions; no consumer moves.
    LeakedStandby,
    /// Retire the key a swap parked at the usage gate moved consumers off
    /// (`Mode::Retire`): every consumer must hold the other key; commit, then (unless
    /// forced) the gate, then the retire. `active` is the key retired, `standby` the
    /// one consumers hold.
    Retire,
    /// `--adopt`: every consumer moves to the standby of the decision (the key that
    /// works now, as it is: nothing is regenerated), verified, committed. Only goes
    /// forward: what consumers held before was broken or the other key, which still
    /// works.
    Adopt,
}

impl Route {
    /// Whether the standby key is regenerated before consumers move to it.
    #[cfg(test)]
    pub(crate) fn stages(self) -> bool {
        matches!(
            self,
            Route::Scheduled
                | Route::LeakedBoth
                | Route::LeakedActive {
                    revoke_first: false,
                    stage_standby: true,
                }
        )
    }

    pub fn revoke_first(self) -> bool {
        matches!(
            self,
            Route::LeakedActive {
                revoke_first: true,
                ..
            }
        )
    }
}

/// What the precheck decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub route: Route,
    /// The key every known consumer holds now.
    pub active: KeyName,
    /// The other key: consumers move to it (swap routes), it is revoked
    /// (`LeakedStandby`), or it is the working key checked before a `revoke_first`
    /// revoke and then left alone.
    pub standby: KeyName,
    /// Fingerprints of leaked values as observed, disabled in Key Vault at the end.
    pub leaked: Vec<Fingerprint>,
    /// Things the report should say that did not block.
    pub warnings: Vec<Warning>,
}

pub fn precheck(
    mode: Mode,
    obs: &Observation,
    refuse_unlisted: bool,
) -> Result<Decision, Vec<RefusalReason>> {
    if let Mode::Retire { key, expect, .. } = mode {
        return retire(obs, key, expect);
    }
    if let Mode::Adopt { key } = mode {
        return adopt(key, obs);
    }
    let mut reasons = Vec::new();
    let mut warnings = Vec::new();
    // Consumers the plan does not list break when a key they hold dies. A scheduled
    // rotation refuses over them when the plan says so (those tied to the account by
    // name only never refuse); an incident only warns: the leak matters more.
    let mut unlisted_refusal = Vec::new();
    for u in &obs.unlisted {
        if refuse_unlisted && !u.probable && mode == Mode::Scheduled {
            unlisted_refusal.push(u.clone());
        } else {
            warnings.push(Warning::new(
                WarningKind::UnlistedConsumer,
                format!(
                    "{u} is not in the plan; it breaks when the key it holds is regenerated: add it to the plan ({})",
                    u.consumer
                ),
            ));
        }
    }
    if !unlisted_refusal.is_empty() {
        reasons.push(RefusalReason::UnlistedConsumers {
            consumers: unlisted_refusal,
        });
    }
    // A check that could not read everything found nothing there: `refuse` must not
    // start on it (that would do less than the plan asks, silently), and `warn` says
    // so in the report, not only in the log.
    let unchecked = &obs.unlisted_unchecked;
    if !unchecked.is_empty() {
        if refuse_unlisted && mode == Mode::Scheduled {
            reasons.push(RefusalReason::UnlistedCheckIncomplete {
                unchecked: unchecked.clone(),
            });
        } else {
            warnings.push(Warning::new(
                WarningKind::UnlistedCheckIncomplete,
                format!(
                    "the unlisted-consumer check is incomplete: {} read(s) not made, so consumers there were not looked for: {}; {}",
                    unchecked.len(),
                    unchecked
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                    super::outcome::unchecked_advice(unchecked)
                ),
            ));
        }
    }
    common(obs, &mut reasons);

    let holders = |key: KeyName| -> Vec<ConsumerId> {
        obs.consumers
            .iter()
            .filter(|c| c.holding == Holding::Key(key))
            .map(|c| c.consumer.id.clone())
            .collect()
    };
    let (on_key1, on_key2) = (holders(KeyName::Key1), holders(KeyName::Key2));
    let on = |key: KeyName| match key {
        KeyName::Key1 => &on_key1,
        KeyName::Key2 => &on_key2,
    };
    let unknown: Vec<ConsumerId> = obs
        .consumers
        .iter()
        .filter(|c| matches!(c.holding, Holding::Unknown { .. }))
        .map(|c| c.consumer.id.clone())
        .collect();
    for c in &obs.consumers {
        if let Holding::Unknown { why } = &c.holding {
            warnings.push(Warning::new(
                WarningKind::ConsumerNotChecked,
                format!(
                    "{} was not checked ({why}); keyflip cannot tell which key it holds",
                    c.consumer
                ),
            ));
        }
    }

    if let Mode::Leaked { key: leaked, .. } = mode
        && on(leaked).is_empty()
        && !on(leaked.other()).is_empty()
    {
        for c in &obs.consumers {
            match &c.holding {
                Holding::Neither => warnings.push(Warning::new(
                    WarningKind::ConsumerNotTouched,
                    format!(
                        "{} holds neither key; it is not touched by this incident rotation",
                        c.consumer
                    ),
                )),
                Holding::Unusable { fix } => warnings.push(Warning::new(
                    WarningKind::ConsumerNotTouched,
                    format!(
                        "{} cannot be rotated by keyflip ({fix}); it is not touched by this incident rotation",
                        c.consumer
                    ),
                )),
                _ => {}
            }
        }
        if !obs.shared_key_access {
            warnings.push(Warning::new(
                WarningKind::SharedKeyAccessDisabled,
                "shared-key access is disabled on the account; the leaked key is regenerated anyway",
            ));
        }
        if !unknown.is_empty() {
            warnings.push(Warning::new(
                WarningKind::LeakedKeyMayBeInUse,
                format!(
                    "{} consumer(s) whose key is unknown may have held the leaked {leaked}",
                    unknown.len()
                ),
            ));
        }
        return refuse_or(reasons, || Decision {
            route: Route::LeakedStandby,
            active: leaked.other(),
            standby: leaked,
            leaked: vec![obs.key(leaked).fingerprint],
            warnings,
        });
    }

    if !obs.shared_key_access {
        reasons.push(RefusalReason::SharedKeyAccessDisabled);
    }
    for c in &obs.consumers {
        match &c.holding {
            Holding::Neither => reasons.push(RefusalReason::ConsumerHoldsNeither {
                consumer: c.consumer.clone(),
            }),
            Holding::Unusable { fix } => reasons.push(RefusalReason::ConsumerUnusable {
                consumer: c.consumer.clone(),
                fix: fix.clone(),
            }),
            _ => {}
        }
    }
    let active = match (on_key1.is_empty(), on_key2.is_empty()) {
        (false, true) => KeyName::Key1,
        (true, false) => KeyName::Key2,
        (false, false) => {
            reasons.push(RefusalReason::ConsumersSplit {
                on_key1: on_key1.clone(),
                on_key2: on_key2.clone(),
            });
            KeyName::Key1
        }
        (true, true) => {
            reasons.push(RefusalReason::NoConsumerKeyKnown { unknown });
            KeyName::Key1
        }
    };
    let standby = active.other();
    let (route, leaked) = match mode {
        Mode::Scheduled => (Route::Scheduled, vec![]),
        Mode::LeakedBoth => (
            Route::LeakedBoth,
            vec![obs.key(active).fingerprint, obs.key(standby).fingerprint],
        ),
        // Reaching here with no refusal means every known consumer holds the leaked
        // key: the standby case returned above, and anything else was refused.
        Mode::Retire { .. } => (Route::Retire, vec![]),
        Mode::Leaked { key, revoke_first } => (
            Route::LeakedActive {
                revoke_first,
                stage_standby: !revoke_first
                    && obs.consumers.iter().any(|c| steered_by_azure(&c.consumer)),
            },
            vec![obs.key(key).fingerprint],
        ),
        // Handled above.
        Mode::Adopt { .. } => (Route::Adopt, vec![]),
    };
    refuse_or(reasons, || Decision {
        route,
        active,
        standby,
        leaked,
        warnings,
    })
}

/// `revoke_first` (with `Options::revoke_before_reads`), before the revoke, from the
/// keys alone: refuse only what makes the revoke itself impossible or wrong. A
/// permission the account's actions need (read, `listKeys`, `regenerateKey`) is
/// missing, or both keys have one fingerprint (the leaked value could not be told
/// apart, nor consumers on it afterwards). What the consumers hold is read after the
/// revoke ([`after_revoke`]); shared-key access turned off only warns, since the
/// leaked value dies whatever it is.
pub fn before_revoke(
    leaked: KeyName,
    obs: &Observation,
) -> Result<Vec<Warning>, Vec<RefusalReason>> {
    let mut reasons = Vec::new();
    // A full observation (an incident that took over a rotation still observing)
    // names the consumers' permissions too; those are the business of after the revoke.
    let missing: Vec<_> = obs
        .missing_permissions
        .iter()
        .filter(|m| {
            m.action
                .to_ascii_lowercase()
                .starts_with("microsoft.storage/storageaccounts/")
        })
        .cloned()
        .collect();
    if !missing.is_empty() {
        reasons.push(RefusalReason::MissingPermissions { missing });
    }
    if obs.key1.fingerprint == obs.key2.fingerprint {
        reasons.push(RefusalReason::KeysIdentical);
    }
    let mut warnings = Vec::new();
    if !obs.shared_key_access {
        warnings.push(Warning::new(
            WarningKind::SharedKeyAccessDisabled,
            format!(
                "shared-key access is disabled on the account; the leaked {leaked} is revoked anyway"
            ),
        ));
    }
    refuse_or(reasons, || warnings)
}

/// `revoke_first`, after the revoke: the route from what the consumers held, read
/// against the keys as they were before it (`obs`: the leaked key with its leaked
/// value). The rules are the precheck's for `--leaked KEY --revoke-first`: consumers
/// on the leaked value move to its fresh one (`LeakedActive { revoke_first }`), none
/// moves when they were on the other key (`LeakedStandby`). What would have refused
/// before any effect is returned as reasons, which the machine parks on: the revoke
/// is done.
pub fn after_revoke(leaked: KeyName, obs: &Observation) -> Result<Decision, Vec<RefusalReason>> {
    precheck(
        Mode::Leaked {
            key: leaked,
            revoke_first: true,
        },
        obs,
        false,
    )
}

/// `Mode::Retire`: every consumer on the key the parked swap moved them to, and the
/// key to retire still the value that swap left.
fn retire(
    obs: &Observation,
    key: KeyName,
    expect: Fingerprint,
) -> Result<Decision, Vec<RefusalReason>> {
    let mut reasons = Vec::new();
    common(obs, &mut reasons);
    let found = obs.key(key).fingerprint;
    if found != expect {
        reasons.push(RefusalReason::RetireKeyChanged {
            key,
            expected: expect,
            found,
        });
    }
    let others: Vec<ConsumerId> = obs
        .consumers
        .iter()
        .filter(|c| c.holding != Holding::Key(key.other()))
        .map(|c| c.consumer.id.clone())
        .collect();
    if !others.is_empty() {
        reasons.push(RefusalReason::NotAllOn {
            key: key.other(),
            others,
        });
    }
    refuse_or(reasons, || Decision {
        route: Route::Retire,
        active: key,
        standby: key.other(),
        leaked: Vec::new(),
        warnings: Vec::new(),
    })
}

/// Refusals every route shares: what no key choice can fix.
fn common(obs: &Observation, reasons: &mut Vec<RefusalReason>) {
    if !obs.missing_permissions.is_empty() {
        reasons.push(RefusalReason::MissingPermissions {
            missing: obs.missing_permissions.clone(),
        });
    }
    if obs.key1.fingerprint == obs.key2.fingerprint {
        reasons.push(RefusalReason::KeysIdentical);
    }
    for (i, c) in obs.consumers.iter().enumerate() {
        let first = obs
            .consumers
            .iter()
            .position(|o| o.consumer.id == c.consumer.id);
        if first != Some(i) && first.is_some() {
            reasons.push(RefusalReason::DuplicateConsumer {
                consumer: c.consumer.id.clone(),
            });
        }
    }
}

/// The key a workspace resync takes, as far as keyflip knows: the account's newest by
/// `keyCreationTime` (a key never regenerated has none and is the oldest), when the
/// creation times tell the keys apart.
pub fn newest(obs: &Observation) -> Option<KeyName> {
    match (obs.key1.created, obs.key2.created) {
        (Some(a), Some(b)) if a != b => Some(if b > a { KeyName::Key2 } else { KeyName::Key1 }),
        (None, Some(_)) => Some(KeyName::Key2),
        (Some(_), None) => Some(KeyName::Key1),
        _ => None,
    }
}

/// `--adopt`: every consumer moves to one key that works now, whatever they hold.
/// Refused only for what no choice of key fixes (permissions, identical keys, a
/// duplicate, shared keys off, a consumer keyflip cannot rotate as listed), or when a
/// workspace would resync to another key than the one asked for. The key: the one
/// asked for; else, with a consumer whose key Azure picks (an ML workspace), the
/// newest (key1 on a tie); else the key most consumers hold; else the newest; else
/// key1.
fn adopt(asked: Option<KeyName>, obs: &Observation) -> Result<Decision, Vec<RefusalReason>> {
    let mut reasons = Vec::new();
    let mut warnings = Vec::new();
    common(obs, &mut reasons);
    if !obs.shared_key_access {
        reasons.push(RefusalReason::SharedKeyAccessDisabled);
    }
    for c in &obs.consumers {
        match &c.holding {
            Holding::Unusable { fix } => reasons.push(RefusalReason::ConsumerUnusable {
                consumer: c.consumer.clone(),
                fix: fix.clone(),
            }),
            Holding::Unknown { why } => warnings.push(Warning::new(
                WarningKind::ConsumerNotChecked,
                format!(
                    "{} could not be read ({why}); it is written the key adopted like every other consumer",
                    c.consumer
                ),
            )),
            _ => {}
        }
    }
    let steered = obs.consumers.iter().any(|c| steered_by_azure(&c.consumer));
    let newest = newest(obs);
    let held = |key: KeyName| {
        obs.consumers
            .iter()
            .filter(|c| c.holding == Holding::Key(key))
            .count()
    };
    let most = match held(KeyName::Key1).cmp(&held(KeyName::Key2)) {
        std::cmp::Ordering::Greater => Some(KeyName::Key1),
        std::cmp::Ordering::Less => Some(KeyName::Key2),
        std::cmp::Ordering::Equal => None,
    };
    // On a tie by creation time key1, as keyflip-twin models Azure's choice.
    let resync_takes = newest.unwrap_or(KeyName::Key1);
    let to = match asked {
        Some(key) => {
            if steered && resync_takes != key {
                reasons.push(RefusalReason::AdoptNotNewest {
                    key,
                    newest: resync_takes,
                });
            }
            key
        }
        None if steered => resync_takes,
        None => most.or(newest).unwrap_or(KeyName::Key1),
    };
    refuse_or(reasons, || Decision {
        route: Route::Adopt,
        active: to.other(),
        standby: to,
        leaked: Vec::new(),
        warnings,
    })
}

fn refuse_or<T>(
    reasons: Vec<RefusalReason>,
    decision: impl FnOnce() -> T,
) -> Result<T, Vec<RefusalReason>> {
    if reasons.is_empty() {
        Ok(decision())
    } else {
        Err(reasons)
    }
}
