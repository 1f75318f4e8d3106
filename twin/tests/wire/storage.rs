//! Storage accounts over ARM: GET, PATCH, listKeys, regenerateKey, and RBAC refusals.

use super::common::*;

#[tokio::test]
async fn operator_lists_keys_with_full_permissions() {
    let env = Env::demo().await;
    let t = env.token(OPERATOR, ARM_SCOPE).await;
    let (status, v) = body(env.list_keys(&t, "stdatasci001").await).await;
    assert_eq!(status, 200, "{v}");
    let state = env.state().await;
    assert_eq!(v["keys"][0]["keyName"], "key1");
    assert_eq!(
        v["keys"][0]["value"],
        key_of(&state, "stdatasci001", "key1")
    );
    assert_eq!(
        v["keys"][1]["value"],
        key_of(&state, "stdatasci001", "key2")
    );
    assert_eq!(v["keys"][0]["permissions"], "FULL");
}
