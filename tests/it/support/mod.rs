//! Shared test harness: Azurite, keyflip-twin, log capture, and `Azure` facades
//! configured through a real `keyflip.toml`.

pub mod azurite;
pub mod binary;
pub mod engine;
pub mod logs;
pub mod proxy;
pub mod pty;
pub mod redact;
pub mod service;
pub mod twin;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use keyflip::azure::{Azure, AzureOptions, RetryPolicy};
use keyflip::config::Config;
use keyflip::secret::Fingerprinter;

/// Retries and polls fast enough for tests; `Retry-After` is still honoured as sent.
pub fn fast_options() -> AzureOptions {
    AzureOptions {
        retry: RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(200),
            max_retry_after: Duration::from_secs(10),
        },
        lro_poll: Duration::from_millis(50),
        reconcile_delay: Duration::ZERO,
        ..Default::default()
    }
}

pub fn fingerprinter() -> Arc<Fingerprinter> {
    Arc::new(Fingerprinter::from_bytes(b"keyflip integration tests"))
}

/// Parses `text` as keyflip.toml (relative paths against `dir`) with an environment
/// that holds only `env`.
pub fn config(text: &str, dir: &Path, env: &[(&str, &str)]) -> Config {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect();
    Config::parse("test.toml", text, dir, &move |k: &str| {
        env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    })
    .unwrap_or_else(|e| panic!("test configuration is invalid:\n{e}"))
}

/// A facade for data-plane tests that never reach ARM or Entra ID: a custom cloud on
/// an unused port, trusting `ca`, whose blob endpoints are `blob_endpoint` (a
/// `[cloud] blob_endpoint` pattern such as `https://127.0.0.1:PORT/{account}/`).
pub fn data_plane_only(ca: &Path, blob_endpoint: &str) -> Azure {
    keyflip::install_crypto_provider();
    let text = format!(
        "[cloud]\nname = \"custom\"\narm_url = \"https://127.0.0.1:9/\"\nauthority_host = \"https://127.0.0.1:9\"\nblob_endpoint = \"{blob_endpoint}\"\nca_bundle = \"{}\"\n[credential]\nkind = \"client-secret\"\ntenant_id = \"00000000-0000-0000-0000-000000000000\"\nclient_id = \"unused\"\n",
        ca.display()
    );
    let env = [("AZURE_CLIENT_SECRET", "unused")];
    let config = config(&text, Path::new("/"), &env);
    Azure::with_options(&config, fingerprinter(), fast_options(), &|k: &str| {
        env.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| (*v).to_owned())
    })
    .unwrap()
}
