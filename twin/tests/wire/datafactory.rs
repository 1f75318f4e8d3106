//! Data Factory: the factory, linked services (list, GET with If-None-Match, PUT with
//! If-Match), SecureStrings masked on every read, Key Vault references kept, RBAC
//! refusals, faults and throttling.

use reqwest::Method;
use serde_json::{Value, json};

use super::common::*;

pub const DF_API: &str = "2018-06-01";
pub const FACTORY: &str = "adf-datasci";
const MASK: &str = "**********";

pub fn factory_id() -> String {
    format!(
        "/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.DataFactory/factories/{FACTORY}"
    )
}

pub fn ls_path(name: &str) -> String {
    format!("{}/linkedservices/{name}", factory_id())
}

async fn send(
    env: &Env,
    m: Method,
    path: &str,
    token: &str,
    headers: &[(&str, &str)],
    b: Option<Value>,
) -> (u16, Value) {
    let mut r = env.req(m, &env.arm(path, DF_API), token);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    if let Some(b) = b {
        r = r.json(&b);
    }
    let (s, v) = body(r.send().await.expect("answer")).await;
    (s.as_u16(), v)
}

fn blob(conn: &str) -> Value {
    json!({"properties": {"type": "AzureBlobStorage", "typeProperties": {
        "connectionString": {"type": "SecureString", "value": conn}}}})
}

#[tokio::test]
async fn secure_strings_never_come_back_and_key_vault_references_do() {
    let env = Env::demo().await;
    let t = env.token(OPERATOR, ARM_SCOPE).await;
    let state = env.state().await;
    let key1 = key_of(&state, "stdatasci001", "key1");

    let (s, f) = send(&env, Method::GET, &factory_id(), &t, &[], None).await;
    assert_eq!(s, 200, "{f}");
    assert_eq!(f["type"], "Microsoft.DataFactory/factories");
    assert_eq!(f["properties"]["provisioningState"], "Succeeded");
    assert!(f["eTag"].as_str().is_some_and(|e| e.starts_with('"')));
    assert_eq!(env.ep.data_factories[FACTORY].id, factory_id());

    let (s, list) = send(
        &env,
        Method::GET,
        &format!("{}/linkedservices", factory_id()),
        &t,
        &[],
        None,
    )
    .await;
    assert_eq!(s, 200, "{list}");
    let names: Vec<&str> = list["value"]
        .as_array()
        .expect("value")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "ls_kv_datasci",
            "ls_stdatasci001_blob",
            "ls_stdatasci001_blob_kv"
        ]
    );
    assert!(!list.to_string().contains(&key1), "no key in a list");

    let (s, ls) = send(
        &env,
        Method::GET,
        &ls_path("ls_stdatasci001_blob"),
        &t,
        &[],
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(ls["type"], "Microsoft.DataFactory/factories/linkedservices");
    assert_eq!(ls["id"], ls_path("ls_stdatasci001_blob"));
    let tp = &ls["properties"]["typeProperties"];
    assert_eq!(
        tp["connectionString"],
        json!({"type": "SecureString", "value": MASK})
    );
    assert!(
        tp["encryptedCredential"]
            .as_str()
            .is_some_and(|c| !c.is_empty())
    );
    assert!(!ls.to_string().contains(&key1));
    // The twin holds the real value (visible to tests only, through the admin API).
    let held = state["data_factories"][FACTORY]["linkedServices"]["ls_stdatasci001_blob"]["properties"]
        ["typeProperties"]["connectionString"]["value"]
        .as_str()
        .expect("value");
    assert!(held.contains(&format!("AccountKey={key1};")), "{held}");
    assert_eq!(
        state["data_factories"][FACTORY]["linkedServices"]["ls_stdatasci001_blob"]["etag"],
        ls["etag"]
    );

    let (_, kv) = send(
        &env,
        Method::GET,
        &ls_path("ls_stdatasci001_blob_kv"),
        &t,
        &[],
        None,
    )
    .await;
    let cs = &kv["properties"]["typeProperties"]["connectionString"];
    assert_eq!(cs["type"], "AzureKeyVaultSecret");
    assert_eq!(cs["secretName"], "stdatasci001-connection-string");
    assert_eq!(
        cs["store"],
        json!({"referenceName": "ls_kv_datasci", "type": "LinkedServiceReference"})
    );
    assert!(
        kv["properties"]["typeProperties"]
            .get("encryptedCredential")
            .is_none()
    );
    let (_, vault) = send(&env, Method::GET, &ls_path("ls_kv_datasci"), &t, &[], None).await;
    assert_eq!(
        vault["properties"]["typeProperties"]["baseUrl"],
        env.ep.key_vaults["kv-datasci"].url
    );

    let (s, v) = send(&env, Method::GET, &ls_path("nope"), &t, &[], None).await;
    assert_eq!((s, v["error"]["code"].as_str()), (404, Some("NotFound")));
    let (s, v) = send(
        &env,
        Method::GET,
        &factory_id().replace(FACTORY, "adf-nope"),
        &t,
        &[],
        None,
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (404, Some("ResourceNotFound"))
    );
}

#[tokio::test]
async fn a_put_stores_the_secret_masks_the_answer_and_changes_the_etag() {
    let env = Env::demo().await;
    let t = env.token(OPERATOR, ARM_SCOPE).await;
    let path = ls_path("ls_stdatasci001_blob");
    let (_, before) = send(&env, Method::GET, &path, &t, &[], None).await;
    let etag = before["etag"].as_str().expect("etag").to_string();
    let cred = before["properties"]["typeProperties"]["encryptedCredential"].clone();
    env.advance(2.0).await;
    let (s, out) = send(
        &env,
        Method::PUT,
        &path,
        &t,
        &[],
        Some(blob("AccountKey=NEWVALUE")),
    )
    .await;
    assert_eq!(s, 200, "{out}");
    assert_eq!(
        out["properties"]["typeProperties"]["connectionString"]["value"],
        MASK
    );
    assert!(!out.to_string().contains("NEWVALUE"));
    let new_etag = out["etag"].as_str().expect("etag");
    assert_ne!(new_etag, etag);
    assert_ne!(
        out["properties"]["typeProperties"]["encryptedCredential"],
        cred
    );
    let state = env.state().await;
    let ls = &state["data_factories"][FACTORY]["linkedServices"]["ls_stdatasci001_blob"];
    assert_eq!(
        ls["properties"]["typeProperties"]["connectionString"]["value"],
        "AccountKey=NEWVALUE"
    );
    assert_eq!(ls["etag"], new_etag);
    // A client that sends back what it read stores the mask: there is no "keep".
    let mut echo = out.clone();
    echo["properties"]["typeProperties"]
        .as_object_mut()
        .expect("object")
        .remove("encryptedCredential");
    let (s, _) = send(
        &env,
        Method::PUT,
        &path,
        &t,
        &[],
        Some(json!({"properties": echo["properties"]})),
    )
    .await;
    assert_eq!(s, 200);
    let state = env.state().await;
    assert_eq!(
        state["data_factories"][FACTORY]["linkedServices"]["ls_stdatasci001_blob"]["properties"]["typeProperties"]
            ["connectionString"]["value"],
        MASK
    );
    // A new linked service: 200 (the spec declares no 201).
    let (s, v) = send(
        &env,
        Method::PUT,
        &ls_path("ls_new"),
        &t,
        &[],
        Some(blob("x")),
    )
    .await;
    assert_eq!((s, v["name"].as_str()), (200, Some("ls_new")));
}

#[tokio::test]
async fn if_none_match_and_if_match_use_the_etag() {
    let env = Env::demo().await;
    let t = env.token(OPERATOR, ARM_SCOPE).await;
    let path = ls_path("ls_stdatasci001_blob");
    let (_, v) = send(&env, Method::GET, &path, &t, &[], None).await;
    let etag = v["etag"].as_str().expect("etag").to_string();
    let quoted = format!("\"{etag}\"");

    let (s, v) = send(
        &env,
        Method::GET,
        &path,
        &t,
        &[("if-none-match", &etag)],
        None,
    )
    .await;
    assert_eq!((s, v), (304, Value::Null));
    let (s, _) = send(
        &env,
        Method::GET,
        &path,
        &t,
        &[("if-none-match", "\"other\"")],
        None,
    )
    .await;
    assert_eq!(s, 200);

    // A write conditioned on the current etag succeeds; the stale one is refused.
    let (s, v) = send(
        &env,
        Method::PUT,
        &path,
        &t,
        &[("if-match", &quoted)],
        Some(blob("first")),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = send(
        &env,
        Method::PUT,
        &path,
        &t,
        &[("if-match", &quoted)],
        Some(blob("second")),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (412, Some("PreconditionFailed")),
        "{v}"
    );
    let held = |s: Value| {
        s["data_factories"][FACTORY]["linkedServices"]["ls_stdatasci001_blob"]["properties"]["typeProperties"]
            ["connectionString"]["value"]
            .clone()
    };
    assert_eq!(
        held(env.state().await),
        "first",
        "the stale write changed nothing"
    );
    // `*`: must exist. If-None-Match `*`: must not.
    let (s, _) = send(
        &env,
        Method::PUT,
        &path,
        &t,
        &[("if-match", "*")],
        Some(blob("third")),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = send(
        &env,
        Method::PUT,
        &ls_path("ls_absent"),
        &t,
        &[("if-match", "*")],
        Some(blob("x")),
    )
    .await;
    assert_eq!(s, 412);
    let (s, _) = send(
        &env,
        Method::PUT,
        &path,
        &t,
        &[("if-none-match", "*")],
        Some(blob("x")),
    )
    .await;
    assert_eq!(s, 412);
    assert_eq!(held(env.state().await), "third");
}

#[tokio::test]
async fn bad_linked_services_are_refused() {
    let env = Env::demo().await;
    let t = env.token(OPERATOR, ARM_SCOPE).await;
    let kv_ref = |store: &str| {
        json!({"properties": {"type": "AzureBlobStorage", "typeProperties": {"connectionString": {
            "type": "AzureKeyVaultSecret", "store": {"referenceName": store, "type": "LinkedServiceReference"},
            "secretName": "s"}}}})
    };
    for (name, b, wanted) in [
        (
            "ok_name",
            kv_ref("ls_missing"),
            "invalid reference 'ls_missing'",
        ),
        (
            "ok_name",
            kv_ref("ls_stdatasci001_blob"),
            "invalid reference 'ls_stdatasci001_blob'",
        ),
        (
            "ok_name",
            json!({"properties": {"type": "AzureBlobStorage"}}),
            "typeProperties",
        ),
        (
            "ok_name",
            json!({"properties": {"typeProperties": {}}}),
            "properties.type",
        ),
        (
            "ok_name",
            json!({"properties": {"type": "AzureBlobStorage", "typeProperties": {"connectionString": {"type": "SecureString"}}}}),
            "SecureString",
        ),
        ("bad.name", blob("x"), "invalid"),
    ] {
        let (s, v) = send(&env, Method::PUT, &ls_path(name), &t, &[], Some(b)).await;
        assert_eq!(s, 400, "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(wanted)),
            "{v} (wanted {wanted})"
        );
    }
    let (s, _) = send(
        &env,
        Method::PUT,
        &ls_path("ok_name"),
        &t,
        &[],
        Some(kv_ref("ls_kv_datasci")),
    )
    .await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn a_reader_reads_masked_values_and_may_not_write() {
    let env = Env::demo().await;
    let t = env.token(READER, ARM_SCOPE).await;
    let (s, v) = send(
        &env,
        Method::GET,
        &ls_path("ls_stdatasci001_blob"),
        &t,
        &[],
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(
        v["properties"]["typeProperties"]["connectionString"]["value"],
        MASK
    );
    let (s, v) = send(
        &env,
        Method::PUT,
        &ls_path("ls_stdatasci001_blob"),
        &t,
        &[],
        Some(blob("x")),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (403, Some("AuthorizationFailed"))
    );
    let oid = &env.ep.principals[READER].object_id;
    assert_eq!(
        v["error"]["message"],
        format!(
            "The client '{oid}' with object id '{oid}' does not have authorization to perform action 'Microsoft.DataFactory/factories/linkedServices/write' over scope '{}' or the scope is invalid. If access was recently granted, please refresh your credentials.",
            ls_path("ls_stdatasci001_blob")
        )
    );
    // A principal with no role at all cannot even read.
    let env = Env::start(world_with_owner()).await;
    let t = env.token(STRANGER, ARM_SCOPE).await;
    let (s, v) = send(
        &env,
        Method::GET,
        &ls_path("ls_stdatasci001_blob"),
        &t,
        &[],
        None,
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (403, Some("AuthorizationFailed"))
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("'Microsoft.DataFactory/factories/linkedServices/read'"))
    );
}

#[tokio::test]
async fn faults_and_throttling_apply_to_linked_services() {
    let env = Env::demo().await;
    let t = env.token(OPERATOR, ARM_SCOPE).await;
    let path = ls_path("ls_stdatasci001_blob");
    env.fault(json!({"operation": "datafactory.linkedService.get", "target": "ls_stdatasci001_blob", "action": {"kind": "malformed"}})).await;
    let r = env
        .req(Method::GET, &env.arm(&path, DF_API), &t)
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 200);
    assert!(serde_json::from_str::<Value>(&r.text().await.expect("text")).is_err());
    env.fault(json!({"operation": "datafactory.linkedService.put", "action": {"kind": "status", "status": 429, "retry_after": 7}})).await;
    let r = env
        .req(Method::PUT, &env.arm(&path, DF_API), &t)
        .json(&blob("y"))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 429);
    assert_eq!(
        r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
        Some("7")
    );
    // Reads draw on the read budget.
    env.settings(json!({"arm_read_burst": 1, "arm_read_refill_per_sec": 0.25}))
        .await;
    let (s, _) = send(&env, Method::GET, &path, &t, &[], None).await;
    assert_eq!(s, 200);
    let r = env
        .req(Method::GET, &env.arm(&path, DF_API), &t)
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 429);
    assert_eq!(
        r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
        Some("4")
    );
}
