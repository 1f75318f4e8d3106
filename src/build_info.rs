//! What this binary is: version, git commit and whether the tree was dirty, target,
//! compiler, features and the Azure SDK crate versions, recorded by `build.rs` at
//! compile time. `keyflip --version`, `keyflip version` and the daemon's
//! `keyflip_build_info` metric all read [`BuildInfo::current`], so they cannot
//! disagree. Nothing here does IO.

use serde::Serialize;

mod generated {
    include!(concat!(env!("OUT_DIR"), "/build_info.rs"));
}

/// The multi-line text of `keyflip --version`.
pub(crate) const LONG_VERSION: &str = generated::LONG_VERSION;

/// This build's facts. Values the build could not learn are `"unknown"`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct BuildInfo {
    /// The package version (`0.1.0`). Named `package_version` in JSON, where every
    /// keyflip document's `version` is the document's own (see `render::json`).
    #[serde(rename = "package_version")]
    pub version: &'static str,
    /// The full commit id, or `"unknown"` when built outside a git checkout.
    pub commit: &'static str,
    /// `"true"`, `"false"`, or `"unknown"` (no git checkout).
    pub dirty: &'static str,
    pub target: &'static str,
    pub(crate) profile: &'static str,
    pub(crate) rustc: &'static str,
    /// Enabled cargo features, comma-separated (`demo` when the twin is built in).
    pub(crate) features: &'static str,
    /// Resolved versions of the Azure SDK crates, from `Cargo.lock` at build time.
    pub azure_sdk: Vec<AzureCrate>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct AzureCrate {
    pub name: &'static str,
    pub version: &'static str,
}

impl BuildInfo {
    pub fn current() -> BuildInfo {
        BuildInfo {
            version: env!("CARGO_PKG_VERSION"),
            commit: generated::GIT_COMMIT,
            dirty: generated::GIT_DIRTY,
            target: generated::TARGET,
            profile: generated::PROFILE,
            rustc: generated::RUSTC,
            features: generated::FEATURES,
            azure_sdk: generated::AZURE_SDK
                .iter()
                .map(|(name, version)| AzureCrate { name, version })
                .collect(),
        }
    }

    /// Labels of the `keyflip_build_info` gauge, in a fixed order.
    pub(crate) fn metric_labels(&self) -> Vec<(&'static str, &'static str)> {
        let mut labels = vec![
            ("version", self.version),
            ("commit", self.commit),
            ("dirty", self.dirty),
            ("target", self.target),
        ];
        labels.extend(self.azure_sdk.iter().map(|c| (c.name, c.version)));
        labels
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_knows_its_version_target_and_azure_crates() {
        let info = BuildInfo::current();
        assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
        assert!(info.target.contains("linux"), "{}", info.target);
        assert!(["true", "false", "unknown"].contains(&info.dirty));
        let names: Vec<&str> = info.azure_sdk.iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            [
                "azure_core",
                "azure_identity",
                "azure_security_keyvault_secrets"
            ]
        );
        // Built from this repository, with its Cargo.lock: the versions are known.
        for c in &info.azure_sdk {
            assert!(
                c.version.split('.').count() == 3 && c.version.starts_with('1'),
                "{}: {}",
                c.name,
                c.version
            );
        }
        assert!(LONG_VERSION.starts_with(info.version));
        assert!(LONG_VERSION.contains(info.commit));
        assert!(LONG_VERSION.contains("azure_identity: 1."));
    }
}
