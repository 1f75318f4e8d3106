//! Steps and consumers in short words for people: `ML datastore mlw-datasci/training_data`
//! rather than the full consumer id. Reports and the journal keep the full ids.

use crate::rotation::machine::{Action, ConsumerKind, ConsumerRef};

/// The last path segment of a URL or resource id.
fn last(text: &str) -> &str {
    text.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(text)
}

/// A consumer's short label.
pub fn consumer(c: &ConsumerRef) -> String {
    let id = c.id.0.as_str();
    let name = match c.kind {
        ConsumerKind::KeyVaultSecret => id
            .strip_prefix("keyvault:")
            .and_then(|rest| rest.rsplit_once("/secrets/"))
            .map(|(vault, secret)| format!("{}/{secret}", last(vault))),
        ConsumerKind::Workspace => id.strip_prefix("workspace:").map(|ws| last(ws).to_owned()),
        ConsumerKind::Datastore => id
            .strip_prefix("datastore:")
            .and_then(|rest| rest.rsplit_once("/datastores/"))
            .map(|(ws, name)| format!("{}/{name}", last(ws))),
        ConsumerKind::Databricks => id
            .strip_prefix("databricks:")
            .and_then(|rest| rest.rsplit_once('#'))
            .map(|(url, key)| format!("{} {key}", last(url))),
    };
    format!("{} {}", c.kind, name.unwrap_or_else(|| id.to_owned()))
}

/// A consumer's short label from its id alone (its kind is the id's prefix), for
/// reports that keep ids as text (`doctor`). An id of no known kind is shown whole.
pub fn consumer_id(id: &str) -> String {
    let kind = [
        ("keyvault:", ConsumerKind::KeyVaultSecret),
        ("workspace:", ConsumerKind::Workspace),
        ("datastore:", ConsumerKind::Datastore),
        ("databricks:", ConsumerKind::Databricks),
    ]
    .into_iter()
    .find_map(|(prefix, kind)| id.starts_with(prefix).then_some(kind));
    match kind {
        Some(kind) => consumer(&ConsumerRef {
            id: crate::rotation::machine::ConsumerId(id.to_owned()),
            kind,
        }),
        None => id.to_owned(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rotation::machine::ConsumerId;

    fn c(kind: ConsumerKind, id: &str) -> String {
        consumer(&ConsumerRef {
            id: ConsumerId(id.into()),
            kind,
        })
    }

    #[test]
    fn labels_are_short() {
        assert_eq!(
            c(
                ConsumerKind::KeyVaultSecret,
                "keyvault:https://h:1/keyvault/kv-datasci/secrets/k"
            ),
            "Key Vault secret kv-datasci/k"
        );
        assert_eq!(
            c(
                ConsumerKind::Datastore,
                "datastore:/subscriptions/s/resourceGroups/g/providers/Microsoft.MachineLearningServices/workspaces/mlw/datastores/td"
            ),
            "ML datastore mlw/td"
        );
        assert_eq!(
            c(
                ConsumerKind::Workspace,
                "workspace:/subscriptions/s/resourceGroups/g/providers/Microsoft.MachineLearningServices/workspaces/mlw"
            ),
            "ML workspace mlw"
        );
        assert_eq!(
            c(
                ConsumerKind::Databricks,
                "databricks:https://h/databricks/dbw#scope/key"
            ),
            "Databricks secret dbw scope/key"
        );
        assert_eq!(c(ConsumerKind::Workspace, "odd"), "ML workspace odd");
        assert_eq!(
            consumer_id("keyvault:https://h:1/keyvault/kv-datasci/secrets/k"),
            "Key Vault secret kv-datasci/k"
        );
        assert_eq!(consumer_id("something:else"), "something:else");
    }
}
