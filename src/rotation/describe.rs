//! Steps and consumers in short words for people: `ML datastore mlw-datasci/training_data`
//! rather than the full consumer id. Reports and the journal keep the full ids.

use crate::rotation::machine::{Action, ConsumerRef};

/// A consumer's short label (its kind says how: `crate::consumer`).
pub fn consumer(c: &ConsumerRef) -> String {
    c.id.describe()
}

/// A consumer's short label from its id as text (reports that keep ids as text, such
/// as `doctor`'s); text that is no consumer id is shown whole.
pub fn consumer_id(id: &str) -> String {
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

/// Advice for a plan: the commands outcomes and refusals name (`keyflip rotate now
/// PLAN --adopt`, ...) with the plan's name in place of `PLAN`, so a person can paste
/// them. The machine, which never knows the plan, words them with `PLAN`.
pub fn for_plan(text: &str, plan: &str) -> String {
    text.replace(
        "keyflip rotate now PLAN",
        &format!("keyflip rotate now {plan}"),
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
                "run `keyflip rotate now PLAN --adopt`; `keyflip history PLAN` shows it; PLANS stay",
                "demo"
            ),
            "run `keyflip rotate now demo --adopt`; `keyflip history demo` shows it; PLANS stay"
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
