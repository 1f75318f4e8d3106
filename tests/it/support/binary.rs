//! The `keyflip` binary against a demo twin: a keyflip.toml, the demo plan, a state
//! directory, and runs with captured output.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::engine::demo_plan_text;
use super::twin::{OPERATOR, TestTwin};

pub struct Cli {
    pub twin: TestTwin,
    pub dir: tempfile::TempDir,
}

pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

impl Cli {
    pub async fn start() -> Cli {
        let twin = TestTwin::start();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("plans")).unwrap();
        std::fs::write(dir.path().join("plans/demo.toml"), demo_plan_text(&twin)).unwrap();
        let cli = Cli { twin, dir };
        cli.write_config("keyflip.toml", OPERATOR);
        cli
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Writes a keyflip.toml for `principal` (plans and state in this directory).
    pub fn write_config(&self, name: &str, principal: &str) -> PathBuf {
        let text = self.twin.config_text(principal).replace(
            "plans_dir = \"plans\"",
            &format!(
                "plans_dir = \"{}\"\nstate_dir = \"{}\"",
                self.dir.path().join("plans").display(),
                self.state_dir().display()
            ),
        );
        let text = text
            .replace(
                "ca_bundle = \"ca.pem\"",
                &format!(
                    "ca_bundle = \"{}\"",
                    self.twin.dir.path().join("ca.pem").display()
                ),
            )
            .replace(
                "client_secret_file = \"principals/",
                &format!(
                    "client_secret_file = \"{}/principals/",
                    self.twin.dir.path().display()
                ),
            );
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn command(&self, config: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyflip"));
        cmd.arg("--config").arg(config).args(args);
        cmd.env_remove("KEYFLIP_FAILPOINT").env_remove("RUST_LOG");
        // The same terminal for every run, whatever the machine's: UTF-8, and so wide
        // that nothing wraps (tests that look at wrapping set COLUMNS themselves).
        for name in ["LC_ALL", "LC_CTYPE", "NO_COLOR", "KEYFLIP_PLANS_DIR"] {
            cmd.env_remove(name);
        }
        cmd.env("LANG", "C.UTF-8").env("COLUMNS", "1000");
        cmd.stdin(std::process::Stdio::null());
        cmd
    }

    /// Runs keyflip with this directory's keyflip.toml.
    pub async fn run(&self, args: &[&str]) -> Run {
        let config = self.dir.path().join("keyflip.toml");
        self.run_cmd(self.command(&config, args)).await
    }

    /// [`Cli::run`] with environment variables set (`COLUMNS`, `LANG`, ...).
    pub async fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let config = self.dir.path().join("keyflip.toml");
        let mut cmd = self.command(&config, args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        self.run_cmd(cmd).await
    }

    pub async fn run_cmd(&self, mut cmd: Command) -> Run {
        let out: Output = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .unwrap()
            .expect("keyflip runs");
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Cli {
    /// The demo world with the demo plan changed by `edit` (e.g. fewer retries).
    pub async fn start_with_plan(edit: impl Fn(String) -> String) -> Cli {
        let cli = Cli::start().await;
        let text = edit(demo_plan_text(&cli.twin));
        std::fs::write(cli.dir.path().join("plans/demo.toml"), text).unwrap();
        cli
    }

    /// Runs a command of `docs/operations.md`'s "When things go wrong" section as a
    /// person would paste it, with `PLAN` → `demo` and each of `vars` replaced
    /// (`("KEY", "key1")`). The command must be in the section word for word: this is
    /// how a test says it executes a documented command, and `runbook::every_command_
    /// of_when_things_go_wrong_is_run_by_a_test` checks that each one is. Tests have no
    /// terminal, so `rotate now` gets `--yes` (the prompt has tests of its own).
    pub async fn runbook(&self, command: &str, vars: &[(&str, &str)]) -> Run {
        assert!(
            crate::runbook::commands().iter().any(|c| c == command),
            "`{command}` is not a command of docs/operations.md, \"When things go wrong\": {:#?}",
            crate::runbook::commands()
        );
        let mut line = command.replace("PLAN", "demo");
        for (from, to) in vars {
            line = line.replace(from, to);
        }
        let mut args: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(args.first(), Some(&"keyflip"), "{command}");
        args.remove(0);
        let confirm = args.starts_with(&["rotate", "now"]) && !args.contains(&"--dry-run");
        if confirm {
            args.push("--yes");
        }
        self.run(&args).await
    }

    /// Starts keyflip with `args`, reads its output until a line containing `marker`,
    /// then interrupts it as Ctrl-C does (SIGINT) and waits for it to exit.
    pub async fn interrupt_at(&self, args: &[&str], marker: &str) -> Run {
        self.signal_at(args, marker, "-INT").await
    }

    /// As [`Cli::interrupt_at`], but kills it as a crash would (SIGKILL): no chance to
    /// record anything.
    pub async fn kill_at(&self, args: &[&str], marker: &str) -> Run {
        self.signal_at(args, marker, "-KILL").await
    }

    async fn signal_at(&self, args: &[&str], marker: &str, signal: &'static str) -> Run {
        use std::io::{BufRead as _, BufReader, Read as _};
        let config = self.dir.path().join("keyflip.toml");
        let mut cmd = self.command(&config, args);
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let marker = marker.to_owned();
        tokio::task::spawn_blocking(move || {
            let mut child = cmd.spawn().expect("keyflip starts");
            let mut stdout = BufReader::new(child.stdout.take().unwrap());
            let mut seen = String::new();
            loop {
                let mut line = String::new();
                let n = stdout.read_line(&mut line).unwrap();
                seen.push_str(&line);
                if n == 0 {
                    let mut err = String::new();
                    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
                    panic!("keyflip ended before printing {marker:?}:\n{seen}\n{err}");
                }
                if line.contains(&marker) {
                    break;
                }
            }
            let pid = child.id().to_string();
            let killed = Command::new("kill")
                .args([signal, &pid])
                .status()
                .expect("kill runs");
            assert!(killed.success());
            let mut rest = String::new();
            stdout.read_to_string(&mut rest).unwrap();
            let mut stderr = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr)
                .unwrap();
            let status = child.wait().unwrap();
            Run {
                code: status.code(),
                stdout: seen + &rest,
                stderr,
            }
        })
        .await
        .unwrap()
    }
}
