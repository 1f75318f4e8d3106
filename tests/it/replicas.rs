//! Replicas (`[coordination]`): the Blob lease and conditional-write client against
//! Azurite over HTTPS with Entra ID tokens the twin issues, and rotations driven by
//! two keyflip replicas (separate state directories, one twin world, one Azurite
//! container): in-process, and as real processes killed or paused mid-rotation.

mod blob;
mod busy;
mod failover;
mod fleet;
mod migrate;
mod processes;
mod state;
mod summary;
mod truth;

use std::path::{Path, PathBuf};

use crate::support::azurite::Azurite;
use crate::support::engine::demo_plan_text;
use crate::support::twin::{OPERATOR, TestTwin};

/// A twin, an Azurite accepting bearer tokens, and what two replicas share.
pub struct Shared {
    pub twin: TestTwin,
    pub azurite: Azurite,
    pub dir: tempfile::TempDir,
}

impl Shared {
    pub async fn start() -> Shared {
        Self::start_with(Azurite::start_oauth()).await
    }

    /// With Azurite's data on disk, so it can be stopped and restarted.
    pub async fn start_restartable() -> Shared {
        Self::start_with(Azurite::start_oauth_on_disk()).await
    }

    /// The demo world with `extra` appended (more accounts, secrets, roles).
    pub async fn start_world(extra: &str) -> Shared {
        Self::start_on(TestTwin::start_with(extra), Azurite::start_oauth()).await
    }

    async fn start_with(azurite: Azurite) -> Shared {
        Self::start_on(TestTwin::start(), azurite).await
    }

    async fn start_on(twin: TestTwin, azurite: Azurite) -> Shared {
        twin.settings(serde_json::json!({"lro_retry_after_secs": 0, "resync_duration_secs": 0.0}))
            .await;
        let dir = tempfile::tempdir().unwrap();
        // One CA bundle trusting both the twin and Azurite.
        let mut bundle = std::fs::read_to_string(twin.dir.path().join("ca.pem")).unwrap();
        bundle.push('\n');
        bundle.push_str(&std::fs::read_to_string(&azurite.ca_pem_path).unwrap());
        std::fs::write(dir.path().join("bundle.pem"), bundle).unwrap();
        std::fs::create_dir(dir.path().join("plans")).unwrap();
        std::fs::write(dir.path().join("plans/demo.toml"), demo_plan_text(&twin)).unwrap();
        Shared { twin, azurite, dir }
    }

    /// A replica's state directory (its own local journal, as on its own machine),
    /// sharing the fingerprint key, as docs/operations.md asks of replicas.
    pub fn state_dir(&self, replica: &str) -> PathBuf {
        let dir = self.dir.path().join(format!("state-{replica}"));
        std::fs::create_dir_all(&dir).unwrap();
        let key = self.dir.path().join("fingerprint.key");
        if !key.exists() {
            let mut bytes = [0u8; 32];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).unwrap();
            std::fs::write(&key, bytes).unwrap();
        }
        let own = dir.join("fingerprint.key");
        if !own.exists() {
            std::fs::copy(&key, &own).unwrap();
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        dir
    }

    /// keyflip.toml of one replica, with absolute paths.
    pub fn config_text(&self, replica: &str, lease_seconds: u32) -> String {
        let twin_dir = self.twin.dir.path().display().to_string();
        let text = self
            .twin
            .config_text(OPERATOR)
            .replace(
                "plans_dir = \"plans\"",
                &format!(
                    "plans_dir = \"{}\"\nstate_dir = \"{}\"",
                    self.dir.path().join("plans").display(),
                    self.state_dir(replica).display()
                ),
            )
            .replace(
                "ca_bundle = \"ca.pem\"",
                &format!(
                    "ca_bundle = \"{}\"",
                    self.dir.path().join("bundle.pem").display()
                ),
            )
            .replace(
                "client_secret_file = \"principals/",
                &format!("client_secret_file = \"{twin_dir}/principals/"),
            );
        format!(
            "{text}\n[coordination]\nblob_endpoint = \"{}\"\ncontainer = \"keyflip\"\nlease_seconds = {lease_seconds}\nreplica = \"{replica}\"\n",
            self.azurite.blob_endpoint
        )
    }

    pub fn write_config(&self, replica: &str, lease_seconds: u32) -> PathBuf {
        let path = self.dir.path().join(format!("{replica}.toml"));
        std::fs::write(&path, self.config_text(replica, lease_seconds)).unwrap();
        path
    }

    pub fn config(&self, replica: &str, lease_seconds: u32) -> keyflip::config::Config {
        crate::support::config(
            &self.config_text(replica, lease_seconds),
            Path::new("/"),
            &[],
        )
    }

    /// An Azure facade configured as `replica` (fast test retries).
    pub fn facade(&self, replica: &str) -> keyflip::azure::Azure {
        keyflip::azure::Azure::with_options(
            &self.config(replica, 15),
            crate::support::fingerprinter(),
            crate::support::fast_options(),
            &|_: &str| None,
        )
        .unwrap()
    }

    /// The coordination container as an operator reaches it (Entra token for storage).
    pub fn operator_blob(&self) -> keyflip::coordination::BlobClient {
        let config = self.config("operator", 15);
        keyflip::coordination::BlobClient::for_audience(
            &self.facade("operator"),
            keyflip::coordination::STORAGE_AUDIENCE,
            config.coordination.as_ref().unwrap(),
        )
    }
}
