//! Build script: records what `keyflip --version`, `keyflip version --output json` and
//! the daemon's `keyflip_build_info` metric report about this build, as constants in
//! `$OUT_DIR/build_info.rs` (included by `src/build_info.rs`).
//!
//! It never fails the build and never touches the network: without `git` or a `.git`
//! directory (a source tarball, `cargo install` of a packaged crate) the commit is
//! "unknown", and without `Cargo.lock` so are the Azure SDK versions.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The Azure SDK crates whose resolved versions are reported.
const AZURE_CRATES: [&str; 3] = [
    "azure_core",
    "azure_identity",
    "azure_security_keyvault_secrets",
];

// A build script fails the build by panicking: an OUT_DIR that cannot be written
// is the one failure that leaves nothing to include.
#[allow(clippy::panic)]
fn main() {
    let manifest = PathBuf::from(env("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env("OUT_DIR"));

    for path in ["build.rs", "Cargo.toml", "Cargo.lock", "src", "twin/src"] {
        println!("cargo:rerun-if-changed={path}");
    }
    let git = git_state(&manifest);
    if let Some(dir) = &git.dir {
        // A commit or a staged change moves HEAD, the branch ref or the index.
        for file in ["HEAD", "index", "packed-refs"] {
            println!("cargo:rerun-if-changed={}", dir.join(file).display());
        }
        if let Some(common) = &git.common_dir {
            println!("cargo:rerun-if-changed={}", common.join("refs").display());
            println!(
                "cargo:rerun-if-changed={}",
                common.join("packed-refs").display()
            );
        }
    }

    let lock = std::fs::read_to_string(manifest.join("Cargo.lock")).unwrap_or_default();
    let azure: Vec<(String, String)> = AZURE_CRATES
        .iter()
        .map(|name| {
            let version = locked_version(&lock, name).unwrap_or_else(|| "unknown".into());
            ((*name).to_owned(), version)
        })
        .collect();
    let rustc = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    let mut features: Vec<String> = std::env::vars()
        .filter_map(|(k, _)| k.strip_prefix("CARGO_FEATURE_").map(|f| f.to_lowercase()))
        .filter(|f| f != "default")
        .collect();
    features.sort();

    let mut code = String::new();
    let constant = |code: &mut String, name: &str, value: &str| {
        code.push_str(&format!("pub const {name}: &str = {value:?};\n"));
    };
    constant(&mut code, "GIT_COMMIT", &git.commit);
    constant(
        &mut code,
        "GIT_DIRTY",
        match git.dirty {
            Some(true) => "true",
            Some(false) => "false",
            None => "unknown",
        },
    );
    constant(&mut code, "TARGET", &env("TARGET"));
    constant(&mut code, "PROFILE", &env("PROFILE"));
    constant(&mut code, "RUSTC", &rustc);
    constant(&mut code, "FEATURES", &features.join(","));
    code.push_str("pub const AZURE_SDK: &[(&str, &str)] = &[\n");
    for (name, version) in &azure {
        code.push_str(&format!("    ({name:?}, {version:?}),\n"));
    }
    code.push_str("];\n");
    // clap wants the long version as one constant string.
    let dirty = match git.dirty {
        Some(true) => " (dirty)",
        _ => "",
    };
    let mut long = format!(
        "{}\ncommit:   {}{dirty}\ntarget:   {}\nrustc:    {rustc}\nfeatures: {}\n",
        env("CARGO_PKG_VERSION"),
        git.commit,
        env("TARGET"),
        if features.is_empty() {
            "(none)".to_owned()
        } else {
            features.join(", ")
        }
    );
    for (name, version) in &azure {
        long.push_str(&format!("{name}: {version}\n"));
    }
    constant(&mut code, "LONG_VERSION", long.trim_end());

    if let Err(e) = std::fs::write(out.join("build_info.rs"), code) {
        panic!("cannot write {}/build_info.rs: {e}", out.display());
    }
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| "unknown".into())
}

struct Git {
    commit: String,
    /// `None` when git could not tell (no repository, no git).
    dirty: Option<bool>,
    dir: Option<PathBuf>,
    common_dir: Option<PathBuf>,
}

fn git_state(manifest: &Path) -> Git {
    let run = |args: &[&str]| -> Option<String> {
        let out = Command::new("git")
            .arg("-C")
            .arg(manifest)
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    // Only a repository whose top level is this crate counts: a tarball unpacked
    // inside some other repository must not report that repository's commit.
    let top = run(&["rev-parse", "--show-toplevel"]).map(PathBuf::from);
    let ours = match (
        top.and_then(|t| t.canonicalize().ok()),
        manifest.canonicalize().ok(),
    ) {
        (Some(top), Some(manifest)) => top == manifest,
        _ => false,
    };
    if !ours {
        return Git {
            commit: "unknown".into(),
            dirty: None,
            dir: None,
            common_dir: None,
        };
    }
    let absolute = |p: String| {
        let p = PathBuf::from(p);
        if p.is_absolute() { p } else { manifest.join(p) }
    };
    Git {
        commit: run(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into()),
        dirty: run(&["status", "--porcelain", "--untracked-files=no"]).map(|s| !s.is_empty()),
        dir: run(&["rev-parse", "--git-dir"]).map(absolute),
        common_dir: run(&["rev-parse", "--git-common-dir"]).map(absolute),
    }
}

/// The version of `name` in a Cargo.lock (the first entry, if several).
fn locked_version(lock: &str, name: &str) -> Option<String> {
    let wanted = format!("name = \"{name}\"");
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == wanted {
            let version = lines.next()?.trim();
            return version
                .strip_prefix("version = \"")
                .and_then(|v| v.strip_suffix('"'))
                .map(str::to_owned);
        }
    }
    None
}
