//! keyflip installed the way the systemd unit runs it: a configuration, plans, a CA
//! and a client secret that the service's user can read, a state directory that user
//! owns (as `StateDirectory=` makes it), and the `keyflip` binary run either as root
//! (an operator's standalone run) or as that user (the daemon), as a real process.
//!
//! The service user is uid/gid 65534 (`nobody`) when the tests run as root; a test
//! that needs two users says so when they do not.

use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::engine::demo_plan_text;
use super::twin::{OPERATOR, TestTwin};

/// The uid the unit's `DynamicUser` stands for in these tests.
pub const SERVICE_UID: u32 = 65534;

pub fn euid() -> u32 {
    // SAFETY: geteuid takes no arguments and cannot fail.
    unsafe { libc::geteuid() }
}

pub struct Service {
    /// The twin this installation talks to; it stops when the service is dropped.
    pub twin: TestTwin,
    pub dir: tempfile::TempDir,
}

impl Service {
    /// The demo world, its demo plan (grace 0s), and a state directory owned by the
    /// service user. `daemon` is appended to the `[daemon]` table.
    pub fn install(daemon: &str) -> Service {
        let twin = TestTwin::start();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir(root.join("plans")).unwrap();
        let plan = demo_plan_text(&twin).replace("grace = \"30s\"", "grace = \"0s\"");
        std::fs::write(root.join("plans/demo.toml"), plan).unwrap();
        std::fs::copy(twin.dir.path().join("ca.pem"), root.join("ca.pem")).unwrap();
        let secret = root.join("operator.secret");
        std::fs::copy(
            twin.dir
                .path()
                .join(format!("principals/{OPERATOR}.secret")),
            &secret,
        )
        .unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::create_dir(root.join("state")).unwrap();
        std::fs::set_permissions(root.join("state"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        std::fs::create_dir(root.join("run")).unwrap();
        if euid() == 0 {
            for owned in [secret.clone(), root.join("state"), root.join("run")] {
                std::os::unix::fs::chown(&owned, Some(SERVICE_UID), Some(SERVICE_UID)).unwrap();
            }
        }
        for file in ["ca.pem", "plans/demo.toml"] {
            std::fs::set_permissions(root.join(file), std::fs::Permissions::from_mode(0o644))
                .unwrap();
        }
        let text = twin
            .config_text(OPERATOR)
            .replace(
                "plans_dir = \"plans\"",
                "plans_dir = \"plans\"\nstate_dir = \"state\"",
            )
            .replace(
                &format!("client_secret_file = \"principals/{OPERATOR}.secret\""),
                "client_secret_file = \"operator.secret\"",
            );
        let metrics = if daemon.contains("metrics_listen") {
            ""
        } else {
            "metrics_listen = \"off\"\n"
        };
        let text = format!("{text}\n[daemon]\nsocket = \"run/keyflip.sock\"\n{metrics}{daemon}\n");
        std::fs::write(root.join("keyflip.toml"), text).unwrap();
        std::fs::set_permissions(
            root.join("keyflip.toml"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        Service { twin, dir }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn config(&self) -> PathBuf {
        self.path("keyflip.toml")
    }

    /// `keyflip --config keyflip.toml ARGS`, as root (`as_service` false) or as the
    /// service user.
    pub fn command(&self, args: &[&str], as_service: bool) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyflip"));
        cmd.arg("--config")
            .arg(self.config())
            .args(args)
            .env_remove("KEYFLIP_FAILPOINT")
            .env_remove("RUST_LOG")
            .env_remove("SSL_CERT_FILE")
            .env_remove("SSL_CERT_DIR")
            .stdin(Stdio::null());
        if as_service && euid() == 0 {
            cmd.uid(SERVICE_UID).gid(SERVICE_UID);
        }
        cmd
    }

    /// Runs to the end: (exit code, stdout, stderr).
    pub fn run(&self, args: &[&str], as_service: bool) -> (Option<i32>, String, String) {
        let out = self
            .command(args, as_service)
            .output()
            .expect("keyflip runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Starts `keyflip daemon` as the service user and waits until its control socket
    /// answers.
    pub fn daemon(&self) -> DaemonProcess {
        self.daemon_with(|_| {})
    }

    /// The same, after `tweak` adjusted the command (limits, environment).
    pub fn daemon_with(&self, tweak: impl FnOnce(&mut Command)) -> DaemonProcess {
        let log = self.path("daemon.log");
        let file = std::fs::File::create(&log).unwrap();
        let mut command = self.command(&["daemon"], true);
        tweak(&mut command);
        let child = command
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("the daemon starts");
        let mut d = DaemonProcess {
            child,
            socket: self.path("run/keyflip.sock"),
            log,
        };
        d.wait_ready(Duration::from_secs(30));
        d
    }
}

/// A `keyflip daemon` process; killed when dropped.
pub struct DaemonProcess {
    pub child: Child,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl DaemonProcess {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_ready(&mut self, within: Duration) {
        let started = Instant::now();
        loop {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the daemon exited ({status}):\n{}", self.log());
            }
            assert!(
                started.elapsed() < within,
                "the daemon did not open {} within {within:?}:\n{}",
                self.socket.display(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A line of `/proc/PID/status` (e.g. `VmRSS`), without its name.
    pub fn status(&self, field: &str) -> Option<String> {
        proc_status(self.pid(), field)
    }

    /// SIGTERM, then the exit status (SIGKILL after `within`).
    pub fn terminate(mut self, within: Duration) -> Option<i32> {
        // SAFETY: kill with a pid we spawned and a valid signal number.
        unsafe { libc::kill(self.pid() as i32, libc::SIGTERM) };
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            if started.elapsed() > within {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A field of `/proc/PID/status`.
pub fn proc_status(pid: u32, field: &str) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_owned())
}

/// Every entry under `dir` (itself included) whose owner is not `uid`.
pub fn not_owned_by(dir: &Path, uid: u32) -> Vec<String> {
    use std::os::unix::fs::MetadataExt as _;
    let mut wrong = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.uid() != uid {
            wrong.push(format!("{} (uid {})", p.display(), meta.uid()));
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(&p).unwrap().flatten() {
                stack.push(entry.path());
            }
        }
    }
    wrong.sort();
    wrong
}
