//! The coordination blob client against Azurite, over HTTPS, authorized by an Entra
//! ID bearer token the twin issues: leases and conditional writes behave as the Blob
//! service documents, and each refusal becomes its typed error.

use std::sync::Arc;

use keyflip::coordination::{Conditions, CoordError, Coordinator, LeaseDuration, LeaseId};

use super::Shared;

fn coordinator(shared: &Shared) -> Arc<Coordinator> {
    let config = shared.config("blob-test", 15);
    let azure = shared.facade("blob-test");
    Arc::new(Coordinator::new(
        &azure,
        config.coordination.as_ref().unwrap(),
    ))
}

fn id(n: u8) -> LeaseId {
    LeaseId(format!("00000000-0000-0000-0000-0000000000{n:02}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_and_conditional_writes_follow_the_blob_service() {
    let shared = Shared::start().await;
    let c = coordinator(&shared);
    let blob = c.client();
    blob.ensure_container().await.unwrap();
    // Creating it again is fine.
    blob.ensure_container().await.unwrap();

    let create = Conditions {
        if_none: true,
        ..Conditions::default()
    };
    let v1 = blob.put("accounts/a.json", b"one", &create).await.unwrap();
    let again = blob
        .put("accounts/a.json", b"two", &create)
        .await
        .unwrap_err();
    assert!(matches!(again, CoordError::Changed { .. }), "{again}");
    let (body, etag) = blob.get("accounts/a.json").await.unwrap().unwrap();
    assert_eq!((body.as_slice(), &etag), (&b"one"[..], &v1));
    assert!(blob.get("accounts/missing.json").await.unwrap().is_none());

    // One holder at a time.
    let a = blob
        .acquire("accounts/a.json", LeaseDuration::Seconds(15), &id(1))
        .await
        .unwrap();
    assert_eq!(a, id(1));
    let held = blob
        .acquire("accounts/a.json", LeaseDuration::Seconds(15), &id(2))
        .await
        .unwrap_err();
    assert!(matches!(held, CoordError::Held { .. }), "{held}");
    // Acquiring again with the id already held succeeds (a retried acquire).
    blob.acquire("accounts/a.json", LeaseDuration::Seconds(15), &id(1))
        .await
        .unwrap();

    // A leased blob takes writes only with its lease id, and only over the version named.
    let no_lease = blob
        .put(
            "accounts/a.json",
            b"x",
            &Conditions {
                if_match: Some(&v1),
                ..Conditions::default()
            },
        )
        .await
        .unwrap_err();
    assert!(no_lease.is_lease_loss(), "{no_lease}");
    let wrong = blob
        .put(
            "accounts/a.json",
            b"x",
            &Conditions {
                lease: Some(&id(2)),
                if_match: Some(&v1),
                if_none: false,
            },
        )
        .await
        .unwrap_err();
    assert!(wrong.is_lease_loss(), "{wrong}");
    let v2 = blob
        .put(
            "accounts/a.json",
            b"three",
            &Conditions {
                lease: Some(&a),
                if_match: Some(&v1),
                if_none: false,
            },
        )
        .await
        .unwrap();
    assert_ne!(v2, v1);
    let stale = blob
        .put(
            "accounts/a.json",
            b"four",
            &Conditions {
                lease: Some(&a),
                if_match: Some(&v1),
                if_none: false,
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(stale, CoordError::Changed { .. }), "{stale}");
    assert_eq!(
        blob.get("accounts/a.json").await.unwrap().unwrap().0,
        b"three"
    );

    // Renew is the holder's only; break ends it for everyone; then another may take it.
    blob.renew("accounts/a.json", &a).await.unwrap();
    let not_yours = blob.renew("accounts/a.json", &id(2)).await.unwrap_err();
    assert!(not_yours.is_lease_loss(), "{not_yours}");
    assert_eq!(blob.break_lease("accounts/a.json", 0).await.unwrap(), 0);
    let after_break = blob
        .put(
            "accounts/a.json",
            b"five",
            &Conditions {
                lease: Some(&a),
                if_match: Some(&v2),
                if_none: false,
            },
        )
        .await
        .unwrap_err();
    assert!(after_break.is_lease_loss(), "{after_break}");
    let b = blob
        .acquire("accounts/a.json", LeaseDuration::Seconds(15), &id(2))
        .await
        .unwrap();
    blob.release("accounts/a.json", &b).await.unwrap();
    // Released: free at once.
    let a2 = blob
        .acquire("accounts/a.json", LeaseDuration::Seconds(15), &id(3))
        .await
        .unwrap();
    blob.release("accounts/a.json", &a2).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_for_another_audience_is_refused_by_azurite() {
    // The client asks Entra ID (the twin) for a storage token; Azurite refuses one
    // issued for ARM, so the test above proves the right audience is requested.
    let shared = Shared::start().await;
    let config = shared.config("blob-test", 15);
    let azure = shared.facade("blob-test");
    let wrong = keyflip::coordination::BlobClient::for_audience(
        &azure,
        &shared.twin.endpoints.arm_audience,
        config.coordination.as_ref().unwrap(),
    );
    let err = wrong.ensure_container().await.unwrap_err();
    assert!(
        err.to_string().contains("401") || err.to_string().contains("403"),
        "{err}"
    );
}
