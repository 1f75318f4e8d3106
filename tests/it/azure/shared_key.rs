//! keyflip's SharedKey signer judged by Microsoft's own emulator: both account keys are
//! accepted, a wrong key is refused, and each answer is classified.

use keyflip::azure::probe::ProbeOutcome;

use crate::support::{
    azurite::{self, Azurite},
    data_plane_only,
};

#[tokio::test]
async fn azurite_accepts_both_keys_and_refuses_a_wrong_one() {
    let emulator = Azurite::start();
    let endpoint = &emulator.blob_endpoint;
    let pattern = format!(
        "https://127.0.0.1:{}/{{account}}/",
        endpoint.port().unwrap_or(443)
    );
    let azure = data_plane_only(&emulator.ca_pem_path, &pattern);
    for key in [&emulator.key1, &emulator.key2] {
        let probe = azure
            .probe_shared_key(endpoint, &emulator.account, key)
            .await;
        assert_eq!(probe.outcome, ProbeOutcome::Works, "{probe:?}");
        assert_eq!(probe.status, Some(200));
    }
    let wrong = azure
        .probe_shared_key(endpoint, &emulator.account, &azurite::random_key())
        .await;
    assert_eq!(wrong.outcome, ProbeOutcome::Rejected, "{wrong:?}");
    assert_eq!(wrong.status, Some(403));
}

#[tokio::test]
async fn a_closed_port_is_classified_as_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, _, _) = azurite::certificates(dir.path());
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let azure = data_plane_only(&ca, &format!("https://127.0.0.1:{port}/{{account}}/"));
    let endpoint = url::Url::parse(&format!("https://127.0.0.1:{port}/kfprobe/")).unwrap();
    let probe = azure
        .probe_shared_key(&endpoint, "kfprobe", &azurite::random_key())
        .await;
    assert_eq!(probe.outcome, ProbeOutcome::Refused, "{probe:?}");
    assert_eq!(probe.status, None);
}

#[tokio::test]
async fn the_twin_judges_keys_the_same_way() {
    use crate::support::twin::{ACCOUNT, OPERATOR, TestTwin};
    use keyflip::key::KeyName;
    let twin = TestTwin::start();
    let azure = twin.azure(OPERATOR);
    let id = twin.account_id(ACCOUNT);
    let account = azure.storage_account(&id).await.unwrap();
    let keys = azure.storage_keys(&id).await.unwrap();
    for key in KeyName::BOTH {
        let probe = azure
            .probe_account_key(&account, keys.value(key))
            .await
            .unwrap();
        assert_eq!(probe.outcome, ProbeOutcome::Works, "{key}: {probe:?}");
    }
    twin.regenerate_behind_our_back(ACCOUNT, "key2").await;
    let stale = azure
        .probe_account_key(&account, keys.value(KeyName::Key2))
        .await
        .unwrap();
    assert_eq!(stale.outcome, ProbeOutcome::Rejected, "{stale:?}");
    assert_eq!(stale.code.as_deref(), Some("AuthenticationFailed"));
    assert_eq!(twin.requests_for("blob.accountInfo").await.len(), 3);
}
