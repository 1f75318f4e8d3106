//! Unit tests of discovery's pure parts: plan text and the unlisted comparison.

use super::*;
use crate::consumer::SecretFormat;
use crate::consumer::key_vault::KeyVaultSecret;

const ACCOUNT: &str = "/subscriptions/3c9e5b1d-2a4f-4e6b-9c8d-0f1e2d3c4b5a/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/stdemo001";

fn kv(secret: &str, holds: Holds) -> Finding {
    let vault = "https://kv-demo.vault.azure.net";
    Finding {
        section: "key_vault",
        consumer: Some(ConsumerId::key_vault(vault, secret)),
        subject: format!("Key Vault secret kv-demo/{secret}"),
        holds,
        how: "its current version holds key1 (fp:0123456789ab) as a raw key".into(),
        verdict: Verdict::Rotate,
        entry: Some(Entry::KeyVault(KeyVaultSecret {
            vault: vault.into(),
            secret: secret.into(),
            format: SecretFormat::RawKey,
            content_type: "text/plain".into(),
            expires_after_days: None,
            tags: Default::default(),
            vault_id: None,
        })),
    }
}

fn found(consumers: Vec<Finding>, other: Vec<Finding>) -> AccountDiscovery {
    AccountDiscovery {
        account: ACCOUNT.into(),
        key1: None,
        key2: None,
        consumers,
        other,
        error: None,
    }
}

#[test]
fn the_written_plan_passes_plan_check_and_says_how_each_consumer_was_found() {
    let sas = Finding {
        section: "ml_workspace",
        consumer: None,
        subject: "ML datastore mlw/public".into(),
        holds: Holds::Unknown,
        how: "found".into(),
        verdict: Verdict::Cannot {
            why: "it authenticates with a SAS token".into(),
        },
        entry: None,
    };
    let a = found(
        vec![
            kv("stdemo001-key", Holds::Key1),
            kv(
                "stdemo001 \"x\""
                    .replace(' ', "-")
                    .replace('"', "")
                    .as_str(),
                Holds::Key1,
            ),
        ],
        vec![sas],
    );
    let text = plan_text(&a, chrono::Utc::now(), None).expect("a plan");
    let plan =
        crate::plan::parse(&text, "stdemo001.toml").unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(plan.consumer_ids().len(), 2);
    assert!(
        text.contains("# Key Vault secret kv-demo/stdemo001-key: its current version holds key1"),
        "{text}"
    );
    assert!(text.contains("# - ML datastore mlw/public: keyflip cannot rotate it: it authenticates with a SAS token."), "{text}");
    assert!(
        text.contains(
            "Every consumer whose key is known holds key1: a rotation moves them to key2"
        ),
        "{text}"
    );
    // Nothing found, nothing written: a plan needs a consumer.
    assert!(plan_text(&found(Vec::new(), Vec::new()), chrono::Utc::now(), None).is_none());
}

#[test]
fn unlisted_names_what_the_plan_leaves_out_whatever_the_case_of_the_vault() {
    let a = found(
        vec![
            kv("stdemo001-key", Holds::Key1),
            kv("stdemo001-conn", Holds::Key1),
        ],
        Vec::new(),
    );
    let plan = crate::plan::parse(
        &format!(
            "storage_account = \"{ACCOUNT}\"\n[[key_vault]]\nvault = \"https://KV-DEMO.vault.azure.net\"\nsecret = \"stdemo001-key\"\nformat = \"raw-key\"\n"
        ),
        "p.toml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let missing = unlisted(&plan, &a);
    assert_eq!(missing.len(), 1, "{missing:?}");
    assert_eq!(
        missing[0].consumer,
        "keyvault:https://kv-demo.vault.azure.net/secrets/stdemo001-conn"
    );
    assert!(!missing[0].probable);
    assert!(
        missing[0].to_string().contains("holds key1"),
        "{}",
        missing[0]
    );
}
