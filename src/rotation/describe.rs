//! Steps and consumers in short words for people: `ML datastore mlw-datasci/training_data`
//! rather than the full consumer id. Reports and the journal keep the full ids.

use crate::key::KeyName;
use crate::rotation::machine::{Action, ConsumerRef, Mode, Outcome, Purpose};

/// A consumer's short label (its kind says how: `crate::consumer`).
pub fn consumer(c: &ConsumerRef) -> String {
    c.id.describe()
}

/// A consumer's short label from its id as text (reports that keep ids as text, such
/// as `doctor`'s); text that is no consumer id is shown whole.
pub(crate) fn consumer_id(id: &str) -> String {
    id.parse::<crate::rotation::machine::ConsumerId>()
        .map_or_else(|_| id.to_owned(), |id| id.describe())
}

/// A command in short words (fingerprints kept: they are how keys are told apart).
pub fn step(action: &Action) -> String {
    match action {
        Action::Bind {
            consumer: c,
            key,
            fingerprint,
        } => format!("bind {} to {key} ({fingerprint})", consumer(c)),
        Action::VerifyConsumer {
            consumer: c, key, ..
        } => {
            format!("verify {} holds {key}", consumer(c))
        }
        Action::DisableVersions {
            consumer: c,
            fingerprints,
        } => format!(
            "disable versions of {} holding {}",
            consumer(c),
            fingerprints
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Action::WaitUntil { at } => format!("wait until {}", at.format("%Y-%m-%d %H:%M:%S UTC")),
        other => other.to_string(),
    }
}

/// [`step`] in the words of the rotation's mode, as the dry run words it: in an
/// incident a leaked key's regeneration is a revoke (`regenerate key1 (revoke, it
/// leaked)`), whatever the machine's purpose calls it.
pub fn step_in(action: &Action, mode: Mode) -> String {
    match action {
        Action::Regenerate { key, purpose, .. } => regenerate(mode, *key, *purpose),
        other => step(other),
    }
}

/// `regenerate KEY (WHY)` for a step line.
pub fn regenerate(mode: Mode, key: KeyName, purpose: Purpose) -> String {
    let why = match regeneration(mode, key, purpose) {
        "revoked" => "revoke, it leaked",
        "staged (its leaked value revoked)" => "stage; its leaked value dies",
        "staged" => "stage",
        "retired" => "retire",
        other => other,
    };
    format!("regenerate {key} ({why})")
}

/// What a regeneration did, in the words of the rotation's mode: in an incident a
/// leaked key's regeneration is a revoke, whatever the machine's purpose calls it.
pub fn regeneration(mode: Mode, key: KeyName, purpose: Purpose) -> &'static str {
    let leaked = match mode {
        Mode::Scheduled | Mode::Adopt { .. } => false,
        Mode::Leaked { key: leaked, .. } => leaked == key,
        Mode::LeakedBoth => true,
        Mode::Retire { .. } => false,
    };
    match purpose {
        Purpose::Revoke => "revoked",
        Purpose::Retire if leaked => "revoked",
        Purpose::Retire => "retired",
        Purpose::Stage if leaked => "staged (its leaked value revoked)",
        Purpose::Stage => "staged",
        Purpose::Discard => "discarded",
    }
}

/// A rotation's outcome in words for people: the commands it names carry the plan's
/// name ([`for_plan`]) and, in an incident, a leaked key's regeneration is a revoke
/// (`key1 regenerated (revoke)`), as its step line and the report's keys say.
pub fn outcome(outcome: &Outcome, mode: Mode, plan: &str) -> String {
    let text = outcome.summary_with(&|key, purpose| match regeneration(mode, key, purpose) {
        "revoked" => "revoke".to_owned(),
        _ => purpose.to_string(),
    });
    for_plan(&text, plan)
}

/// Advice for a plan: the commands outcomes and refusals name (`keyflip rotate now
/// PLAN --adopt`, ...) with the plan's name in place of `PLAN`, so a person can paste
/// them. The machine, which never knows the plan, words them with `PLAN`.
pub(crate) fn for_plan(text: &str, plan: &str) -> String {
    text.replace(
        "keyflip rotate now PLAN",
        &format!("keyflip rotate now {plan}"),
    )
    .replace(
        "keyflip rotate resume PLAN",
        &format!("keyflip rotate resume {plan}"),
    )
    .replace("keyflip history PLAN", &format!("keyflip history {plan}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advice_names_the_plan() {
        assert_eq!(
            for_plan(
                "run `keyflip rotate now PLAN --adopt`; `keyflip history PLAN` shows it; `keyflip rotate resume PLAN --force-retire`; PLANS stay",
                "demo"
            ),
            "run `keyflip rotate now demo --adopt`; `keyflip history demo` shows it; `keyflip rotate resume demo --force-retire`; PLANS stay"
        );
    }

    #[test]
    fn an_incident_step_calls_a_leaked_keys_regeneration_a_revoke() {
        let leaked = Mode::Leaked {
            key: KeyName::Key1,
            revoke_first: false,
        };
        // The machine retires the leaked active key after the swap: a revoke to a person.
        assert_eq!(
            regenerate(leaked, KeyName::Key1, Purpose::Retire),
            "regenerate key1 (revoke, it leaked)"
        );
        assert_eq!(
            regenerate(leaked, KeyName::Key2, Purpose::Stage),
            "regenerate key2 (stage)"
        );
        assert_eq!(
            regenerate(Mode::LeakedBoth, KeyName::Key2, Purpose::Stage),
            "regenerate key2 (stage; its leaked value dies)"
        );
        assert_eq!(
            regenerate(Mode::Scheduled, KeyName::Key1, Purpose::Retire),
            "regenerate key1 (retire)"
        );
    }

    #[test]
    fn ids_as_text_get_the_same_label() {
        assert_eq!(
            consumer_id("keyvault:https://h:1/keyvault/kv-datasci/secrets/k"),
            "Key Vault secret kv-datasci/k"
        );
        assert_eq!(consumer_id("something:else"), "something:else");
    }
}
