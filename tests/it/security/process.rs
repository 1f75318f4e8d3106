//! A running keyflip cannot be dumped or read by other processes of its user: no core
//! file (it would hold every key, token and client secret the daemon had), no
//! `ptrace`, no `/proc/PID/mem`.

use std::os::unix::fs::MetadataExt as _;
use std::time::Duration;

use crate::support::service::{SERVICE_UID, Service, euid};

#[test]
fn the_daemon_is_not_dumpable_and_may_write_no_core() {
    let service = Service::install("");
    let daemon = service.daemon();
    let pid = daemon.pid();
    // The daemon runs as a user other than root. The kernel gives the /proc files of a
    // process that is not dumpable (all but the /proc/PID directory itself) to root,
    // whatever user runs it; a dumpable one keeps its own user's. (`ptrace` and
    // /proc/PID/mem follow the same rule.)
    let runs_as = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next().map(str::to_owned))
        .unwrap();
    let expected_user = if euid() == 0 { SERVICE_UID } else { euid() };
    assert_eq!(runs_as, expected_user.to_string());
    assert_ne!(
        expected_user, 0,
        "the test needs the daemon to run as a non-root user"
    );
    for file in ["mem", "environ", "status"] {
        let owner = std::fs::metadata(format!("/proc/{pid}/{file}"))
            .unwrap()
            .uid();
        assert_eq!(
            owner, 0,
            "/proc/{pid}/{file} belongs to uid {owner}: the daemon is dumpable (PR_SET_DUMPABLE is not 0)"
        );
    }
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap_or_default()
        .to_owned();
    let values: Vec<&str> = core.split_whitespace().skip(4).take(2).collect();
    assert_eq!(values, ["0", "0"], "{core}");
    let nofile = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_default()
        .to_owned();
    let soft: u64 = nofile
        .split_whitespace()
        .nth(3)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(soft >= 1024, "{nofile}");
    assert_eq!(daemon.terminate(Duration::from_secs(20)), Some(0));
}
