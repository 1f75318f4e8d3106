//! Rows about access: tokens, permissions, the account and its keys.

use super::*;

#[test]
fn missing_actions_block_once_with_the_role_and_reads_they_refuse_are_skipped() {
    let plan = plan("discover = true");
    let mut seen = healthy(&plan);
    let lacks = role_granting(&actions::STORAGE_LIST_KEYS).map(|r| {
        crate::azure::authorization::MissingAction {
            action: actions::STORAGE_LIST_KEYS,
            role: Some(r),
        }
    });
    seen.permissions[0].missing = Got::Done(lacks.into_iter().collect());
    seen.keys = Got::Failed(forbidden(actions::STORAGE_LIST_KEYS));
    let r = report(&plan, &seen);
    assert!(r.blocking);
    let errors: Vec<&Check> = r
        .checks
        .iter()
        .filter(|c| c.status == Status::Error)
        .collect();
    assert_eq!(errors.len(), 1, "{:#?}", statuses(&r));
    let perm = errors[0];
    assert_eq!(perm.kind(), "permissions");
    let fix = perm.fix.as_deref().unwrap_or_default();
    assert!(
        fix.contains("'Storage Account Key Operator Service Role'") && fix.contains(ACCOUNT),
        "{fix}"
    );
    for key in rows(&r, "key") {
        assert_eq!(key.status, Status::Skipped);
        assert!(key.finding.contains("listkeys/action"), "{}", key.finding);
    }
    // Without the keys no holding can be judged.
    assert_eq!(row(&r, "consumers").status, Status::Skipped);
    assert_eq!(row(&r, "key_vault_secret").status, Status::Skipped);
}

#[test]
fn a_refusal_the_permissions_check_did_not_predict_is_an_error() {
    let plan = plan("discover = true");
    let mut seen = healthy(&plan);
    seen.keys = Got::Failed(forbidden(actions::STORAGE_LIST_KEYS));
    let r = report(&plan, &seen);
    let key1 = rows(&r, "key")[0];
    assert_eq!(key1.status, Status::Error);
    assert!(
        key1.fix
            .as_deref()
            .unwrap_or_default()
            .contains("Storage Account Key Operator")
    );
}

#[test]
fn shared_keys_disabled_blocks_and_says_how_to_allow_them() {
    let plan = plan("discover = true");
    let mut seen = healthy(&plan);
    if let Got::Done(a) = &mut seen.account {
        a.allow_shared_key_access = Some(false);
    }
    if let Got::Done(keys) = &mut seen.keys {
        for k in keys {
            k.probe = Got::Done(Probe {
                outcome: ProbeOutcome::SharedKeysDisabled,
                status: Some(403),
                code: Some("KeyBasedAuthenticationNotPermitted".into()),
                request_id: None,
                detail: String::new(),
            });
        }
    }
    let r = report(&plan, &seen);
    let account = row(&r, "storage_account");
    assert_eq!(account.status, Status::Error);
    assert!(
        account
            .fix
            .as_deref()
            .unwrap_or_default()
            .contains("--allow-shared-key-access true")
    );
    assert!(rows(&r, "key").iter().all(|k| k.status == Status::Error));
}

#[test]
fn identical_keys_block() {
    let plan = plan("discover = true");
    let mut seen = healthy(&plan);
    if let Got::Done(keys) = &mut seen.keys {
        keys[1].fingerprint = fp("k1");
    }
    let r = report(&plan, &seen);
    let key2 = rows(&r, "key")[1];
    assert_eq!(key2.status, Status::Error);
    assert!(
        key2.finding.contains("same value as key1"),
        "{}",
        key2.finding
    );
}

#[test]
fn without_an_arm_token_the_arm_reads_are_skipped_not_piled_on() {
    let plan = plan("discover = true");
    let mut seen = healthy(&plan);
    seen.tokens[0].result = Got::Failed(Error::Credential {
        audience: "https://management.azure.com".into(),
        detail: "AADSTS7000215: Invalid client secret provided.".into(),
        transient: false,
    });
    let why = || "no Azure Resource Manager token (see above)".to_owned();
    for p in &mut seen.permissions {
        p.missing = Got::NotTried(why());
    }
    seen.account = Got::NotTried(why());
    seen.keys = Got::NotTried(why());
    let r = report(&plan, &seen);
    let errors: Vec<&str> = r
        .checks
        .iter()
        .filter(|c| c.status == Status::Error)
        .map(|c| c.kind())
        .collect();
    assert_eq!(errors, vec!["token"]);
    assert!(
        row(&r, "storage_account")
            .finding
            .starts_with("not checked: no Azure Resource Manager token")
    );
}
