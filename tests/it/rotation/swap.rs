//! The scheduled safe swap on the demo world.

use keyflip::key::KeyName;
use keyflip::rotation::machine::Outcome;
use keyflip::rotation::{NoProgress, RotateRequest};
use tokio_util::sync::CancellationToken;

use crate::support::engine::{Harness, consumer_keys, keys_of};
use crate::support::twin::VAULT;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_swap_moves_every_consumer_and_retires_the_old_key() {
    let h = Harness::start().await;
    let before = keys_of(&h.twin.state().await);
    let report = h
        .engine()
        .rotate(
            &h.plan,
            RotateRequest::manual(),
            &NoProgress,
            CancellationToken::new(),
        )
        .await
        .unwrap();
    assert!(
        matches!(
            &report.outcome,
            Some(Outcome::Completed {
                active: KeyName::Key2,
                ..
            })
        ),
        "{:#?}",
        report.outcome
    );
    let state = h.twin.state().await;
    let (key1, key2) = keys_of(&state);
    assert_ne!(key2, before.1, "the standby was staged");
    assert_ne!(key1, before.0, "the old key was retired");
    for (consumer, held) in consumer_keys(&state) {
        assert_eq!(held, key2, "{consumer} is on the new key");
    }
    let latest = state["key_vaults"][VAULT]["secrets"]["stdatasci001-key"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(latest["tags"]["keyflip-key"], "key2");
    assert_eq!(latest["tags"]["CredentialId"], "key2");
    assert_eq!(
        latest["tags"]["keyflip-rotation"],
        report.rotation_id.as_str()
    );
    assert_eq!(latest["contentType"], "text/plain");
    assert_eq!(h.twin.requests_for("storage.regenerateKey").await.len(), 2);
    assert_eq!(report.consumers.len(), 8, "{:#?}", report.consumers);
}
