//! The shipped `docs/examples/keyflip-twin.toml` works against a twin serving the demo
//! world from a state directory, as the example's comment tells operators to run it.

use keyflip::key::KeyName;

use crate::support::twin::{ACCOUNT, TestTwin};
use crate::support::{config, fast_options, fingerprinter};

#[tokio::test]
async fn the_twin_example_configuration_reaches_the_twin() {
    let state = tempfile::tempdir().unwrap();
    let twin = TestTwin::start_in(state.path());
    let port = url::Url::parse(&twin.endpoints.base_url)
        .unwrap()
        .port()
        .unwrap();
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/examples/keyflip-twin.toml"
    ))
    .unwrap()
    .replace("47443", &port.to_string())
    .replace(
        "/tmp/keyflip-twin/",
        &format!("{}/", state.path().display()),
    );
    let config = config(&example, state.path(), &[]);
    let azure = keyflip::azure::Azure::with_options(
        &config,
        fingerprinter(),
        fast_options(),
        &|_: &str| None,
    )
    .unwrap_or_else(|e| panic!("the example does not work with the twin's state directory: {e}"));
    let keys = azure.storage_keys(&twin.account_id(ACCOUNT)).await.unwrap();
    assert_eq!(
        keys.value(KeyName::Key1).expose(),
        twin.keys(ACCOUNT).await.0
    );
}
