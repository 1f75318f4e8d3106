//! Entry points of the `cargo fuzz` targets in `fuzz/` (feature `fuzzing`), and of
//! the test that replays their seed corpora and every crash ever found
//! (`tests/it/fuzz.rs`), so a crash becomes a regression test by adding its file.
//!
//! Each takes arbitrary bytes. The promise checked is the brief's: bad input is an
//! error, never a panic, an abort, a hang or unbounded memory; and what the daemon
//! accepts on its control socket survives a round trip unchanged.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use azure_core::http::headers::Headers;
use azure_core::http::{AsyncRawResponse, HttpClient, Request, StatusCode};
use url::Url;

use crate::azure::monitor::{StorageService, UsageQuery};
use crate::azure::web::{Collection, SiteRef};
use crate::azure::{Azure, AzureOptions, RetryPolicy};
use crate::daemon::control::protocol::{Envelope, ServerLine, VERSION};
use crate::daemon::control::server::parse_request;
use crate::key::KeyName;
use crate::resource_id::ResourceId;
use crate::secret::StorageKey;

/// A plan file: parsed, and every error rendered.
pub fn plan_parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match crate::plan::parse(text, "fuzz.toml") {
        Ok(plan) => {
            let _ = format!("{plan:?}");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// A `keyflip.toml`: parsed with an empty environment, and its error rendered.
pub fn config_parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = |_: &str| None;
    if let Err(e) = crate::config::Config::parse("fuzz.toml", text, Path::new("/etc/kf"), &env) {
        let _ = e.to_string();
    }
}

/// A control-socket line, read as the daemon reads a request and as the CLI reads
/// an answer. A request the daemon accepts, written back by the client side, is
/// accepted again as the same request.
pub fn control_protocol(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(request) = parse_request(text) {
        let envelope = Envelope {
            v: VERSION,
            request: request.clone(),
        };
        let line = serde_json::to_string(&envelope).unwrap_or_default();
        let again = parse_request(&line);
        assert!(
            again.as_ref() == Ok(&request),
            "an accepted request does not round-trip: {line}"
        );
    }
    if let Ok(line) = serde_json::from_str::<ServerLine>(text) {
        let _ = line.text();
        let _ = format!("{line:?}");
    }
}

/// SharedKey canonicalization and signing: `METHOD\nURL\nname:value\n...`.
pub fn shared_key(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let method = lines.next().unwrap_or_default();
    let Some(Ok(url)) = lines.next().map(Url::parse) else {
        return;
    };
    let headers: Vec<(&str, &str)> = lines.filter_map(|l| l.split_once(':')).collect();
    let string = crate::azure::shared_key::string_to_sign(
        method,
        &url,
        headers.iter().copied(),
        "fuzzaccount",
    );
    // The well-known Azurite development key.
    let key = StorageKey::new(
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
            .to_owned(),
    );
    let _ = crate::azure::shared_key::signature(&key, &string);
}

/// Statuses the fuzzer picks from.
const STATUSES: [u16; 12] = [200, 201, 202, 204, 400, 401, 403, 404, 409, 429, 500, 503];

/// One answer for every request, except the Key Vault challenge a request without a
/// token gets first (as from a real vault).
#[derive(Debug)]
struct Answering {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

#[async_trait::async_trait]
impl HttpClient for Answering {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        let mut headers = Headers::new();
        let vault = request.url().host_str() == Some("kv.vault.azure.net");
        if vault
            && request
                .headers()
                .get_optional_str(&"authorization".into())
                .is_none()
        {
            headers.insert(
                "www-authenticate",
                "Bearer authorization=\"https://login.microsoftonline.com/00000000-0000-0000-0000-000000000000\", resource=\"https://vault.azure.net\"",
            );
            return Ok(AsyncRawResponse::from_bytes(
                StatusCode::from(401),
                headers,
                Vec::new(),
            ));
        }
        for (name, value) in &self.headers {
            headers.insert(*name, value.clone());
        }
        Ok(AsyncRawResponse::from_bytes(
            StatusCode::from(self.status),
            headers,
            self.body.clone(),
        ))
    }
}

// The fixed set-up of the harness (a runtime, constant ids) cannot fail on fuzzed
// input; if it fails at all the harness is broken, and a panic says so at once.
#[allow(clippy::panic)]
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("a runtime for fuzzing: {e}"))
    })
}

#[allow(clippy::panic)]
fn id(s: &str) -> ResourceId {
    s.parse()
        .unwrap_or_else(|e| panic!("a fixed resource id: {e}"))
}

/// An answer from Azure, read by the call that expects it: the first byte picks the
/// call, the second the status, the third which headers come along (`Retry-After`,
/// `Location`, `Azure-AsyncOperation`, `x-ms-error-code`), the rest is the body. Every
/// call's answer is parsed by the same code as in production.
pub fn azure_responses(data: &[u8]) {
    let [op, status, flags, body @ ..] = data else {
        return;
    };
    let mut headers = Vec::new();
    if flags & 1 != 0 {
        headers.push(("retry-after", "0".to_owned()));
    }
    if flags & 2 != 0 {
        headers.push(("location", "https://management.azure.com/ops/1".to_owned()));
    }
    if flags & 4 != 0 {
        headers.push((
            "azure-asyncoperation",
            "https://management.azure.com/ops/2".to_owned(),
        ));
    }
    if flags & 8 != 0 {
        headers.push(("x-ms-error-code", "AuthenticationFailed".to_owned()));
    }
    let http: Arc<dyn HttpClient> = Arc::new(Answering {
        status: STATUSES[usize::from(*status) % STATUSES.len()],
        headers,
        body: body.to_vec(),
    });
    let options = AzureOptions {
        retry: RetryPolicy {
            max_attempts: 1,
            initial_backoff: Duration::ZERO,
            max_backoff: Duration::ZERO,
            max_retry_after: Duration::ZERO,
        },
        lro_poll: Duration::ZERO,
        reconcile_delay: Duration::ZERO,
        ..Default::default()
    };
    let azure = Azure::for_tests(http, options);
    let account =
        id("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/st01");
    let workspace = id(
        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/w",
    );
    let vault = Url::parse("https://kv.vault.azure.net/").ok();
    let databricks = Url::parse("https://adb-1.1.azuredatabricks.net/").ok();
    let endpoint = Url::parse("https://st01.blob.core.windows.net/").ok();
    let key = StorageKey::new("a2V5".to_owned());
    let site = id("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Web/sites/app");
    let factory =
        id("/subscriptions/s/resourceGroups/rg/providers/Microsoft.DataFactory/factories/adf");
    let since = chrono::DateTime::UNIX_EPOCH;
    let usage = UsageQuery {
        workspace_id: "00000000-0000-0000-0000-000000000001",
        services: &[StorageService::Blob, StorageService::File],
        account: "st01",
        since,
        until: since + chrono::TimeDelta::hours(1),
    };
    runtime().block_on(async {
        // Calls 0 to 13 keep the numbers the seed corpus was written with.
        match op % 20 {
            0 => drop(azure.storage_account(&account).await),
            1 => drop(azure.storage_keys(&account).await),
            2 => {
                let before = crate::azure::storage::KeyBefore {
                    fingerprint: azure.fingerprint(&key),
                    created: None,
                };
                let _ = azure
                    .regenerate_storage_key(&account, KeyName::Key1, before)
                    .await;
            }
            3 => drop(azure.ml_workspace(&workspace).await),
            4 => drop(azure.ml_workspace_keys(&workspace).await),
            5 => drop(azure.ml_datastores(&workspace).await),
            6 => drop(azure.ml_datastore_secret(&workspace, "ds").await),
            7 => drop(
                azure
                    .resync_ml_workspace_keys(&workspace, Duration::from_millis(20))
                    .await,
            ),
            8 => {
                if let Some(ws) = &databricks {
                    drop(azure.databricks_scopes(ws).await);
                }
            }
            9 => {
                if let Some(ws) = &databricks {
                    drop(azure.databricks_secrets(ws, "scope").await);
                }
            }
            10 => {
                if let Some(v) = &vault {
                    drop(azure.secret_versions(v, "secret").await);
                }
            }
            11 => {
                if let Some(v) = &vault {
                    drop(azure.get_secret(v, "secret", None).await);
                }
            }
            12 => drop(azure.permissions(account.as_str()).await),
            13 => {
                if let Some(e) = &endpoint {
                    drop(azure.probe_shared_key(e, "st01", &key).await);
                }
            }
            // Log Analytics: the usage gate's query, and finding the workspace.
            14 => drop(azure.key_usage(&usage, &key).await),
            15 => drop(azure.diagnostic_settings(&account, StorageService::Blob).await),
            16 => drop(
                azure
                    .log_analytics_workspace_id(
                        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.OperationalInsights/workspaces/la",
                    )
                    .await,
            ),
            17 => drop(
                azure
                    .web_settings(&SiteRef::new(&site, None), Collection::ConnectionStrings)
                    .await,
            ),
            18 => drop(azure.linked_services(&factory).await),
            _ => drop(azure.subscriptions().await),
        }
    });
}
