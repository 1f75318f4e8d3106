//! Steps and consumers in short words for people: `ML datastore mlw-datasci/training_data`
//! rather than the full consumer id. Reports and the journal keep the full ids.

use crate::rotation::machine::{Action, ConsumerRef};

/// A consumer's short label (its kind says how: `crate::consumer`).
pub fn consumer(c: &ConsumerRef) -> String {
    c.id.describe()
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
