//! A standalone run as root on the service's state directory leaves nothing the
//! service's own user cannot use: every file it creates belongs to the state
//! directory's owner, and a file an older keyflip left root-owned is explained.

use std::os::unix::fs::MetadataExt as _;

use crate::support::service::{SERVICE_UID, Service, euid, not_owned_by};

#[test]
fn a_root_run_leaves_the_state_directory_usable_by_the_service_user() {
    if euid() != 0 {
        // Two users are needed; hand_over is a no-op for anyone but root, which the
        // unit test of journal::owner covers.
        eprintln!("skipped: needs root to run keyflip as two users");
        return;
    }
    let service = Service::install("");
    let state = service.path("state");
    let (code, _, err) = service.run(&["rotate", "now", "demo", "--yes"], false);
    assert_eq!(code, Some(0), "root's standalone run: {err}");
    let foreign = not_owned_by(&state, SERVICE_UID);
    assert!(
        foreign.is_empty(),
        "root's run left files the service user does not own: {foreign:#?}"
    );
    // The service user can now rotate with that state.
    let (code, _, err) = service.run(&["rotate", "now", "demo", "--yes"], true);
    assert_eq!(code, Some(0), "the service user's run: {err}");

    // A lock file an older keyflip left root-owned is explained, with the fix.
    let locks = state.join("locks");
    let lock = std::fs::read_dir(&locks)
        .unwrap()
        .flatten()
        .next()
        .expect("a lock file")
        .path();
    std::os::unix::fs::chown(&lock, Some(0), Some(0)).unwrap();
    let (code, _, err) = service.run(&["rotate", "now", "demo", "--yes"], true);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("belongs to uid 0")
            && err.contains(&format!("keyflip runs as uid {SERVICE_UID}"))
            && err.contains(&format!("chown -R --reference={0} {0}", state.display())),
        "{err}"
    );
    assert_eq!(std::fs::metadata(&lock).unwrap().uid(), 0);
}
