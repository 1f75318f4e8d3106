//! Throttling: ARM per-subscription write and read budgets and Key Vault per-vault
//! budgets answer 429 with `Retry-After` and refill on the twin clock.

use reqwest::Method;
use serde_json::json;

use super::common::*;

#[tokio::test]
async fn arm_writes_beyond_the_budget_get_429_with_retry_after() {
    let env = Env::demo().await;
    env.settings(json!({"arm_write_burst": 2, "arm_write_refill_per_sec": 0.5}))
        .await;
    let t = env.token(OPERATOR, ARM_SCOPE).await;
    for left in ["1", "0"] {
        let r = env.list_keys(&t, "stdatasci001").await;
        assert_eq!(r.status(), 200);
        let h = r
            .headers()
            .get("x-ms-ratelimit-remaining-subscription-writes")
            .and_then(|v| v.to_str().ok());
        assert_eq!(h, Some(left));
    }
    let r = env.list_keys(&t, "stdatasci001").await;
    assert_eq!(r.status(), 429);
    assert_eq!(
        r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
        Some("2")
    );
    let (_, v) = body(r).await;
    assert_eq!(v["error"]["code"], "SubscriptionRequestsThrottled");
    // Reads draw on another budget.
    let get = env.arm(&env.account_id("stdatasci001"), STORAGE_API);
    assert_eq!(
        env.req(Method::GET, &get, &t)
            .send()
            .await
            .expect("answer")
            .status(),
        200
    );
    env.advance(2.0).await;
    assert_eq!(
        env.list_keys(&t, "stdatasci001").await.status(),
        200,
        "refilled"
    );
    assert_eq!(env.list_keys(&t, "stdatasci001").await.status(), 429);
}

#[tokio::test]
async fn arm_reads_have_their_own_budget() {
    let env = Env::demo().await;
    env.settings(json!({"arm_read_burst": 1, "arm_read_refill_per_sec": 0.25}))
        .await;
    let t = env.token(OPERATOR, ARM_SCOPE).await;
    let get = env.arm(&env.account_id("stdatasci001"), STORAGE_API);
    assert_eq!(
        env.req(Method::GET, &get, &t)
            .send()
            .await
            .expect("answer")
            .status(),
        200
    );
    let r = env.req(Method::GET, &get, &t).send().await.expect("answer");
    assert_eq!(r.status(), 429);
    assert_eq!(
        r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
        Some("4")
    );
    assert_eq!(env.list_keys(&t, "stdatasci001").await.status(), 200);
}

#[tokio::test]
async fn key_vault_budgets_are_per_vault_and_per_kind() {
    let env = Env::demo().await;
    env.settings(json!({"keyvault_read_burst": 1, "keyvault_read_refill_per_sec": 0.1, "keyvault_write_burst": 1, "keyvault_write_refill_per_sec": 0.1})).await;
    let t = env.token(OPERATOR, VAULT_SCOPE).await;
    let url = format!(
        "{}/secrets/stdatasci001-key/?api-version=7.5",
        env.ep.key_vaults["kv-datasci"].url
    );
    assert_eq!(
        env.req(Method::GET, &url, &t)
            .send()
            .await
            .expect("answer")
            .status(),
        200
    );
    let r = env.req(Method::GET, &url, &t).send().await.expect("answer");
    assert_eq!(r.status(), 429);
    assert_eq!(
        r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
        Some("10")
    );
    let (_, v) = body(r).await;
    assert_eq!(v["error"]["code"], "Throttled");
    let set = format!(
        "{}/secrets/other?api-version=7.5",
        env.ep.key_vaults["kv-datasci"].url
    );
    let r = env
        .req(Method::PUT, &set, &t)
        .json(&json!({"value": "v"}))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 200, "creates have their own budget");
    env.advance(10.0).await;
    assert_eq!(
        env.req(Method::GET, &url, &t)
            .send()
            .await
            .expect("answer")
            .status(),
        200
    );
}
