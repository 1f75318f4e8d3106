//! What `systemd/keyflip.service` promises, read from the file itself: no core dumps,
//! enough descriptors, and no restart loop on a configuration keyflip refuses.

use keyflip::exit::Exit;

fn unit() -> Vec<(String, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/keyflip.service");
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

fn values(key: &str) -> Vec<String> {
    unit()
        .into_iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v)
        .collect()
}

#[test]
fn the_unit_forbids_core_dumps() {
    assert_eq!(values("LimitCORE"), ["0"]);
}

/// An invalid configuration exits 2; restarting every 10 s cannot fix it.
#[test]
fn the_unit_does_not_restart_a_daemon_whose_configuration_is_invalid() {
    let code = (Exit::Usage as u8).to_string();
    let prevented: Vec<String> = values("RestartPreventExitStatus")
        .iter()
        .flat_map(|v| v.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .collect();
    assert!(prevented.contains(&code), "{prevented:?}");
    assert_eq!(values("Restart"), ["on-failure"]);
}

#[test]
fn the_unit_leaves_descriptors_for_rotations() {
    let limit: u64 = values("LimitNOFILE")
        .first()
        .and_then(|v| v.split(':').next_back().map(str::to_owned))
        .and_then(|v| v.parse().ok())
        .expect("LimitNOFILE is set");
    assert!(limit >= 8192, "LimitNOFILE={limit}");
}
