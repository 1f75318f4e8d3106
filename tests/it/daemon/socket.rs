//! The control socket: mode 0600, the peer's uid checked before a byte is read, and
//! the CLI's requests answered for root and the daemon's own user.

use std::io::{Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::process::Command;
use std::time::Duration;

use chrono::{TimeZone as _, Utc};
use keyflip::daemon::control::protocol::{Answer, Request};

use super::harness::{Consumers, Setup};

const PEER_SOCKET: &str = "KEYFLIP_TEST_PEER_SOCKET";
const PEER_SENDS: &str = "KEYFLIP_TEST_PEER_SENDS";
const NOBODY: u32 = 65534;

/// Not a test of its own: the body of the child process that connects as `nobody`.
/// It does nothing unless the parent test set `KEYFLIP_TEST_PEER_SOCKET`.
#[test]
fn peer_child() {
    let Ok(path) = std::env::var(PEER_SOCKET) else {
        return;
    };
    let mut stream = std::os::unix::net::UnixStream::connect(&path).expect("the socket accepts");
    if let Ok(request) = std::env::var(PEER_SENDS) {
        // The server may have closed already; the refusal is still there to read.
        let _ = stream.write_all(format!("{request}\n").as_bytes());
    }
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    println!("PEER-ANSWER:{}", answer.trim());
}

/// Runs `peer_child` as uid `nobody` and returns what it read.
fn as_nobody(socket: &std::path::Path, sends: Option<&str>) -> String {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "daemon::socket::peer_child",
            "--exact",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(PEER_SOCKET, socket)
        .uid(NOBODY)
        .gid(NOBODY);
    if let Some(request) = sends {
        command.env(PEER_SENDS, request);
    }
    let output = command.output().expect("the child runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "the child failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .find_map(|l| l.split_once("PEER-ANSWER:").map(|(_, answer)| answer))
        .unwrap_or_else(|| panic!("no answer line in the child's output: {stdout}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_uid_is_refused_before_the_server_reads() {
    let setup = Setup::new(Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap());
    setup.write_plan(
        "manual",
        &setup.plan_text(Consumers::KeyVault, "[drift]\ninterval = \"7d\"\n"),
    );
    let daemon = setup.start().await;
    let socket = setup.socket();
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the socket is created owner-only");

    // Root (the daemon's own uid here) is served.
    match daemon.request(Request::Status { plan: None }).await {
        Ok(Answer::Status { plans, .. }) => assert_eq!(plans.len(), 1),
        other => panic!("status: {other:?}"),
    }

    // Open the file system path to everyone, so only the server's own check stands
    // between `nobody` and the daemon.
    for dir in [setup.dir(), setup.dir().join("run")] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();

    // A client that sends nothing still gets the refusal: the server decided before
    // reading a byte.
    let answer = as_nobody(&socket, None);
    assert!(answer.contains("\"permission_denied\""), "{answer}");
    assert!(
        answer.contains(&format!("uid {NOBODY} may not use")),
        "{answer}"
    );

    // A client that asks for a rotation is refused the same way, and nothing runs.
    let rotate = r#"{"v":7,"request":"rotate_now","plan":"manual","mode":{"mode":"scheduled"},"grace_ms":null,"dry_run":false}"#;
    let answer = as_nobody(&socket, Some(rotate));
    assert!(answer.contains("\"permission_denied\""), "{answer}");
    let s = daemon.settle().await;
    assert!(
        s.plans
            .iter()
            .all(|p| p.running.is_none() && p.last_started.is_none()),
        "{s:#?}"
    );
    assert!(daemon.history("manual").await.is_empty());

    // A request of another protocol version is refused with both versions named.
    let stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
    let (read, mut write) = stream.into_split();
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
    write
        .write_all(b"{\"v\":99,\"request\":\"status\"}\n")
        .await
        .unwrap();
    let mut line = String::new();
    tokio::io::BufReader::new(read)
        .read_line(&mut line)
        .await
        .unwrap();
    assert!(
        line.contains("unsupported_version") && line.contains("version 99"),
        "{line}"
    );

    assert_eq!(daemon.stop().await, keyflip::exit::Exit::Ok);
    assert!(!socket.exists(), "the socket file is removed on exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_the_same_socket_is_refused() {
    let setup = Setup::new(Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap());
    setup.write_plan(
        "manual",
        &setup.plan_text(Consumers::KeyVault, "[drift]\ninterval = \"7d\"\n"),
    );
    let daemon = setup.start().await;
    let env: keyflip::daemon::EnvFn = std::sync::Arc::new(|_: &str| None);
    let loader = keyflip::daemon::file_loader(setup.config_path(), env.clone());
    let (config, plans) = loader().unwrap();
    let second = keyflip::daemon::start(keyflip::daemon::DaemonOptions {
        config,
        plans,
        loader,
        clock: std::sync::Arc::new(setup.clock.clone()),
        env,
        systemd: Default::default(),
        watchdog: None,
        azure: crate::support::fast_options(),
        engine: Default::default(),
        delivery: Default::default(),
    })
    .await;
    let err = second.err().expect("the second daemon must not start");
    assert!(err.to_string().contains("already listening"), "{err}");
    assert!(
        setup.socket().exists(),
        "the first daemon's socket is left alone"
    );
    assert_eq!(daemon.stop().await, keyflip::exit::Exit::Ok);
}

/// A socket path that names a file (once: the journal) is refused, and the file is
/// left as it was: keyflip only ever removes a stale socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_path_that_is_not_a_socket_is_never_removed() {
    let setup = Setup::new(Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap());
    setup.write_plan(
        "manual",
        &setup.plan_text(Consumers::KeyVault, "[drift]\ninterval = \"7d\"\n"),
    );
    std::fs::create_dir_all(setup.dir().join("run")).unwrap();
    std::fs::write(setup.socket(), "precious data").unwrap();
    let env: keyflip::daemon::EnvFn = std::sync::Arc::new(|_: &str| None);
    let loader = keyflip::daemon::file_loader(setup.config_path(), env.clone());
    let (config, plans) = loader().unwrap();
    let started = keyflip::daemon::start(keyflip::daemon::DaemonOptions {
        config,
        plans,
        loader,
        clock: std::sync::Arc::new(setup.clock.clone()),
        env,
        systemd: Default::default(),
        watchdog: None,
        azure: crate::support::fast_options(),
        engine: Default::default(),
        delivery: Default::default(),
    })
    .await;
    let err = started.err().expect("the daemon must not start");
    assert!(
        err.to_string().contains("is a regular file, not a socket"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(setup.socket()).unwrap(),
        "precious data"
    );

    // The configuration names the journal: refused before anything is opened.
    let text = std::fs::read_to_string(setup.dir().join("keyflip.toml"))
        .unwrap()
        .replace(
            "socket = \"run/keyflip.sock\"",
            "socket = \"state/journal.db\"",
        );
    std::fs::write(setup.dir().join("keyflip.toml"), text).unwrap();
    let errors =
        keyflip::daemon::file_loader(setup.config_path(), std::sync::Arc::new(|_: &str| None))()
            .expect_err("a socket on the journal is refused");
    assert!(errors[0].contains("socket is the journal"), "{errors:?}");
}

/// A request line written by hand with an absurd grace (`u64::MAX` ms once
/// overflowed the scheduler's clock arithmetic and took the daemon down) is refused
/// as a bad request; the daemon goes on answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absurd_grace_over_the_socket_is_refused_and_the_daemon_lives_on() {
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
    let setup = Setup::new(Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap());
    setup.write_plan(
        "manual",
        &setup.plan_text(Consumers::KeyVault, "[drift]\ninterval = \"7d\"\n"),
    );
    let daemon = setup.start().await;
    let stream = tokio::net::UnixStream::connect(setup.socket())
        .await
        .unwrap();
    let (read, mut write) = stream.into_split();
    let line = format!(
        "{{\"v\":{},\"request\":\"rotate_now\",\"plan\":\"manual\",\"mode\":{{\"mode\":\"scheduled\"}},\"grace_ms\":{},\"dry_run\":false}}\n",
        keyflip::daemon::control::protocol::VERSION,
        u64::MAX
    );
    write.write_all(line.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::io::BufReader::new(read)
        .read_line(&mut answer)
        .await
        .unwrap();
    assert!(
        answer.contains("\"bad_request\"") && answer.contains("longest grace period"),
        "{answer}"
    );
    match daemon.request(Request::Status { plan: None }).await {
        Ok(Answer::Status { plans, .. }) => assert_eq!(plans.len(), 1),
        other => panic!("status after the bad request: {other:?}"),
    }
    assert!(daemon.history("manual").await.is_empty());
    assert_eq!(daemon.stop().await, keyflip::exit::Exit::Ok);
}
