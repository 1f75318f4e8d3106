//! Every bad input gets a clear message and a documented exit code, and loses
//! nothing: a corpus of broken configurations, plans and command lines
//! (`tests/it/bad_input/`, plus files made here that cannot live in git: FIFOs,
//! oversized and non-UTF-8 files), each run through the real binary and compared with
//! a snapshot of exactly what the user sees (`tests/it/snapshots/bad-input/`;
//! `UPDATE_SNAPSHOTS=1` rewrites them). Across the corpus: no panic, no value marked
//! `Sup3rS3cret~` echoed, every exit code one `docs/operations.md` documents, and
//! every run ends within seconds (a FIFO once blocked forever).
//!
//! Configurations run `keyflip --config FILE doctor --plan corpus-no-such-plan`
//! (refused before any network); plans run `keyflip plan check FILE`; command lines
//! run as written in `args.txt`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const DOCUMENTED_EXITS: [i32; 8] = [0, 1, 2, 3, 4, 5, 6, 130];
const SECRET_MARK: &str = "Sup3rS3cret~";

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/bad_input")
}

struct Case {
    name: String,
    args: Vec<String>,
    /// Literal replacements for the snapshot (paths that change between runs).
    redact: Vec<(String, String)>,
}

/// Runs one case: the text of its snapshot.
fn run(case: &Case) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyflip"));
    cmd.args(&case.args)
        .env_remove("KEYFLIP_CONFIG")
        .env_remove("KEYFLIP_FAILPOINT")
        .env_remove("RUST_LOG")
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR")
        .env_remove("AZURE_CLIENT_SECRET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().expect("keyflip runs");
    // Ten seconds is generous: every case is refused before any network.
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("{}: still running after 10 s ({:?})", case.name, case.args);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    let code = out.status.code().unwrap_or(-1);
    let mut text = format!(
        "$ keyflip {}\nexit {code}\n--- stdout\n{}--- stderr\n{}",
        case.args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for (from, to) in &case.redact {
        text = text.replace(from, to);
    }
    assert!(
        DOCUMENTED_EXITS.contains(&code),
        "{}: exit {code} is not a documented exit code\n{text}",
        case.name
    );
    assert!(
        !text.contains(SECRET_MARK),
        "{}: a secret was echoed\n{text}",
        case.name
    );
    assert!(!text.contains("panicked"), "{}: a panic\n{text}", case.name);
    assert!(
        !text.contains("internal error"),
        "{}: an internal error\n{text}",
        case.name
    );
    text
}

fn redact_corpus() -> Vec<(String, String)> {
    vec![(corpus().display().to_string(), "CORPUS".to_owned())]
}

fn files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

/// `build-*` configurations parse, and fail while doctor builds its clients (a
/// secret, a CA bundle); the others fail to parse.
fn config_case(name: &str, file: &Path, redact: Vec<(String, String)>) -> Case {
    let mut args = vec![
        "--config".into(),
        file.display().to_string(),
        "doctor".into(),
    ];
    if !name.starts_with("build-") {
        args.extend(["--plan".into(), "corpus-no-such-plan".into()]);
    }
    Case {
        name: format!("config-{name}"),
        args,
        redact,
    }
}

fn plan_case(name: &str, file: &Path, redact: Vec<(String, String)>) -> Case {
    Case {
        name: format!("plan-{name}"),
        args: vec!["plan".into(), "check".into(), file.display().to_string()],
        redact,
    }
}

fn stem(p: &Path) -> String {
    p.file_stem().unwrap().to_string_lossy().into_owned()
}

/// Files that cannot be committed: a FIFO, an oversized file, a megabyte of garbage.
fn made_here(dir: &Path) -> Vec<Case> {
    let mkfifo = |p: &Path| {
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    };
    let redact = vec![
        (dir.display().to_string(), "TMP".to_owned()),
        (corpus().display().to_string(), "CORPUS".to_owned()),
    ];
    let fifo = dir.join("fifo.toml");
    mkfifo(&fifo);
    // A plans directory whose only *.toml is a FIFO.
    let fifo_dir = dir.join("plans-with-a-fifo");
    std::fs::create_dir(&fifo_dir).unwrap();
    mkfifo(&fifo_dir.join("looks-like-a-plan.toml"));
    let huge = dir.join("huge.toml");
    std::fs::write(&huge, "x = 1\n".repeat(2_000_000)).unwrap();
    // A megabyte of lines that are each a syntax error: collected errors stop at 20.
    let garbage = dir.join("garbage-megabyte.toml");
    let line = "= [ \"unterminated\n";
    std::fs::write(&garbage, line.repeat(1_000_000 / line.len())).unwrap();
    let secret_fifo = dir.join("secret.fifo");
    mkfifo(&secret_fifo);
    let with_fifo_secret = dir.join("secret-is-a-fifo.toml");
    let corpus_config = corpus().join("config/build-client-secret-file-missing.toml");
    let text = std::fs::read_to_string(corpus_config)
        .unwrap()
        .replace(
            "../valid-plans",
            &corpus().join("valid-plans").display().to_string(),
        )
        .replace(
            "/nonexistent/keyflip-corpus/secret",
            &secret_fifo.display().to_string(),
        );
    std::fs::write(&with_fifo_secret, text).unwrap();
    vec![
        config_case("is-a-fifo", &fifo, redact.clone()),
        config_case("larger-than-a-megabyte", &huge, redact.clone()),
        config_case(
            "build-client-secret-file-is-a-fifo",
            &with_fifo_secret,
            redact.clone(),
        ),
        plan_case("is-a-fifo", &fifo, redact.clone()),
        plan_case("larger-than-a-megabyte", &huge, redact.clone()),
        plan_case("a-megabyte-of-garbage-lines", &garbage, redact.clone()),
        plan_case("directory-entry-that-is-a-fifo", &fifo_dir, redact),
    ]
}

/// `args.txt`: `name: arg arg ...` per line.
fn arg_cases() -> Vec<Case> {
    let text = std::fs::read_to_string(corpus().join("args.txt")).unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (name, args) = l.split_once(':').expect("name: args");
            Case {
                name: format!("args-{}", name.trim()),
                args: args
                    .split_whitespace()
                    .map(|a| a.replace("CORPUS", &corpus().display().to_string()))
                    .collect(),
                redact: redact_corpus(),
            }
        })
        .collect()
}

#[test]
fn every_bad_input_gets_a_clear_message_and_a_documented_exit_code() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cases = Vec::new();
    for file in files("config") {
        cases.push(config_case(&stem(&file), &file, redact_corpus()));
    }
    for file in files("plan") {
        cases.push(plan_case(&stem(&file), &file, redact_corpus()));
    }
    cases.extend(made_here(tmp.path()));
    cases.extend(arg_cases());
    let mut failures = Vec::new();
    for case in &cases {
        let actual = run(case);
        if let Err(e) = super::snapshot::check(&format!("bad-input/{}", case.name), &actual) {
            failures.push(e);
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} snapshots differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
    eprintln!("{} bad inputs checked", cases.len());
}
