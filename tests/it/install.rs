//! What an installer and a packager use, through the binary: `--version` and
//! `version --output json` agree with each other, completion scripts that the shells
//! accept, and man pages that carry the same examples and exit codes as `--help`.
//! None of them may touch the network, a journal or a socket: they run with a
//! configuration path that does not exist.

use std::process::Command;

fn keyflip(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_keyflip"))
        .args(args)
        // A configuration that does not exist: these commands must not read one.
        .env("KEYFLIP_CONFIG", "/nonexistent/keyflip.toml")
        .output()
        .unwrap()
}

fn stdout(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn version_names_commit_target_and_azure_sdk_and_json_says_the_same() {
    let long = stdout(&keyflip(&["--version"]));
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&keyflip(&["version", "--output", "json"]))).unwrap();
    let human = stdout(&keyflip(&["version"]));
    assert_eq!(human, long, "`keyflip version` prints what --version does");

    // `version` is the document's, as in every keyflip JSON document.
    assert_eq!(json["version"], 1, "{json:#}");
    let version = json["package_version"].as_str().unwrap();
    assert!(long.starts_with(&format!("keyflip {version}\n")), "{long}");
    let commit = json["commit"].as_str().unwrap();
    // Built inside this repository's checkout: the commit is known.
    assert_eq!(commit.len(), 40, "{commit}");
    assert!(long.contains(&format!("commit:   {commit}")), "{long}");
    assert!(["true", "false"].contains(&json["dirty"].as_str().unwrap()));
    let target = json["target"].as_str().unwrap();
    assert!(long.contains(&format!("target:   {target}")), "{long}");
    let sdk = json["azure_sdk"].as_array().unwrap();
    assert_eq!(sdk.len(), 3);
    for c in sdk {
        let line = format!(
            "{}: {}",
            c["name"].as_str().unwrap(),
            c["version"].as_str().unwrap()
        );
        assert!(long.contains(&line), "{line} missing from {long}");
    }
    // The resolved versions are the lock file's.
    let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock")).unwrap();
    let identity = sdk.iter().find(|c| c["name"] == "azure_identity").unwrap();
    assert!(lock.contains(&format!(
        "name = \"azure_identity\"\nversion = \"{}\"",
        identity["version"].as_str().unwrap()
    )));
}

#[test]
fn completion_scripts_are_accepted_by_the_shells() {
    for shell in ["bash", "zsh", "fish"] {
        let script = stdout(&keyflip(&["completions", shell]));
        assert!(script.contains("keyflip"), "{shell}");
        assert!(
            script.contains("doctor") && script.contains("leaked"),
            "{shell}"
        );
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keyflip.completion");
        std::fs::write(&file, &script).unwrap();
        // bash is on every machine that runs the suite; zsh and fish are checked
        // where installed.
        let parse = match shell {
            "bash" => Some(Command::new("bash").arg("-n").arg(&file).output()),
            "zsh" | "fish" => {
                which(shell).map(|bin| Command::new(bin).arg("-n").arg(&file).output())
            }
            _ => None,
        };
        if let Some(parse) = parse {
            let parse = parse.unwrap();
            assert!(
                parse.status.success(),
                "{shell} rejects the script: {}",
                String::from_utf8_lossy(&parse.stderr)
            );
        }
    }
    let bad = keyflip(&["completions", "tcsh"]);
    assert_eq!(bad.status.code(), Some(2));
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

#[test]
fn man_pages_carry_the_help_texts() {
    let dir = tempfile::tempdir().unwrap();
    let out = keyflip(&["manpages", dir.path().join("man1").to_str().unwrap()]);
    let said = stdout(&out);
    let mut pages: Vec<String> = std::fs::read_dir(dir.path().join("man1"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    assert!(
        said.contains(&format!("wrote {} man pages", pages.len())),
        "{said}"
    );
    for expected in [
        "keyflip.1",
        "keyflip-rotate-now.1",
        "keyflip-rotate-resume.1",
        "keyflip-doctor.1",
        "keyflip-daemon.1",
        "keyflip-completions.1",
    ] {
        assert!(
            pages.iter().any(|p| p == expected),
            "{expected} not in {pages:?}"
        );
    }
    // The man page and --help show the same examples and exit codes.
    let help = stdout(&keyflip(&["status", "--help"]));
    let page = std::fs::read_to_string(dir.path().join("man1/keyflip-status.1")).unwrap();
    // roff escapes '-' and quotes; undo that and compare line by line.
    let page = page.replace("\\-", "-").replace("\\*(Aq", "'");
    let extra: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Examples:"))
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    assert!(extra.len() > 5, "{help}");
    for line in extra {
        assert!(
            page.contains(line),
            "`{line}` is in --help, not in the man page:\n{page}"
        );
    }
    // A directory that cannot be created is exit 1 with the path named.
    let blocked = dir.path().join("file");
    std::fs::write(&blocked, "").unwrap();
    let out = keyflip(&["manpages", blocked.join("man1").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&blocked.display().to_string()));
}

/// docs/operations.md's table of what the Debian package installs names every file
/// of `packaging/deb-contents.txt` (the list `.ci/package-test` checks `dpkg -L`
/// against), so the documented contents cannot fall behind the package.
#[test]
fn the_documented_package_contents_name_every_packaged_file() {
    let root = env!("CARGO_MANIFEST_DIR");
    let contents = std::fs::read_to_string(format!("{root}/packaging/deb-contents.txt")).unwrap();
    let doc = std::fs::read_to_string(format!("{root}/docs/operations.md")).unwrap();
    let table = doc
        .split("### The Debian package")
        .nth(1)
        .and_then(|rest| {
            rest.split("\n## ")
                .next()
                .and_then(|s| s.split("\n### ").next())
        })
        .expect("docs/operations.md has a section \"The Debian package\"");
    let mut missing = Vec::new();
    for path in contents.lines().filter(|l| !l.trim().is_empty()) {
        // Named in full, or as `name` in its directory's row (examples by their path
        // below examples/).
        let relative = path
            .split_once("/examples/")
            .map(|(_, rest)| rest)
            .unwrap_or_else(|| path.rsplit('/').next().unwrap_or(path));
        if !table.contains(&format!("`{path}`")) && !table.contains(&format!("`{relative}`")) {
            missing.push(path);
        }
    }
    assert!(
        missing.is_empty(),
        "packaged but not in docs/operations.md's package table: {missing:?}"
    );
}
