//! Microsoft's storage emulator, Azurite, started over HTTPS with a fresh account and
//! two random keys: the independent judge of keyflip's SharedKey signer.
//!
//! The binary comes from `.ci/setup` (`.tools/node_modules/.bin/azurite-blob`); a
//! missing binary fails the test with instructions rather than skipping it. The
//! process is killed when the handle drops.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use keyflip::secret::StorageKey;
use url::Url;

pub struct Azurite {
    child: Child,
    pub account: String,
    pub key1: StorageKey,
    pub key2: StorageKey,
    pub blob_endpoint: Url,
    /// The CA that signed Azurite's certificate.
    pub ca_pem_path: PathBuf,
    /// The command line, for [`Azurite::restart`].
    args: Vec<String>,
    /// Azurite's own access log (one line a request, `"METHOD /path?query HTTP/1.1"
    /// status`, printed on its console), in the order it answered them.
    access: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn binary() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/node_modules/.bin/azurite-blob");
    assert!(
        path.exists(),
        "Azurite is not installed at {}; run .ci/setup once (it installs Azurite from npm into .tools/)",
        path.display()
    );
    path
}

pub fn random_key() -> StorageKey {
    use base64::Engine as _;
    let mut bytes = [0u8; 64];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).unwrap();
    StorageKey::new(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// A CA and a server certificate for 127.0.0.1, as PEM files in `dir`.
pub fn certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let (ca_path, cert_path, key_path) = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&ca_path, ca.pem()).unwrap();
    std::fs::write(&cert_path, leaf.pem()).unwrap();
    std::fs::write(&key_path, leaf_key.serialize_pem()).unwrap();
    (ca_path, cert_path, key_path)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Azurite {
    pub fn start() -> Azurite {
        Self::start_with(&[], true)
    }

    /// Azurite accepting Entra ID bearer tokens too (`--oauth basic`: it checks the
    /// token's issuer prefix `https://sts.windows.net/`, audience
    /// `https://storage.azure.com` and lifetime, not its signature; the twin's tokens
    /// pass as Entra's do).
    pub fn start_oauth() -> Azurite {
        Self::start_with(&["--oauth", "basic"], true)
    }

    /// [`Azurite::start_oauth`] keeping its data on disk, so [`Azurite::restart`]
    /// brings back the same containers, blobs and leases (an outage, not a loss).
    pub fn start_oauth_on_disk() -> Azurite {
        Self::start_with(&["--oauth", "basic"], false)
    }

    fn start_with(extra: &[&str], in_memory: bool) -> Azurite {
        let dir = tempfile::tempdir().unwrap();
        let (ca_pem_path, cert, key) = certificates(dir.path());
        let account = "kfprobe".to_owned();
        let (key1, key2) = (random_key(), random_key());
        let port = free_port();
        let mut args: Vec<String> = vec![
            "--blobHost".into(),
            "127.0.0.1".into(),
            "--blobPort".into(),
            port.to_string(),
            "--cert".into(),
            cert.display().to_string(),
            "--key".into(),
            key.display().to_string(),
            "--disableTelemetry".into(),
            "--skipApiVersionCheck".into(),
            "--loose".into(),
            "--disableProductStyleUrl".into(),
        ];
        if in_memory {
            args.push("--inMemoryPersistence".into());
        } else {
            args.push("--location".into());
            args.push(dir.path().join("data").display().to_string());
        }
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let env = format!("{account}:{}:{}", key1.expose(), key2.expose());
        let access = Arc::new(Mutex::new(Vec::new()));
        let child = spawn(&args, &env, dir.path(), &access);
        Azurite {
            child,
            blob_endpoint: Url::parse(&format!("https://127.0.0.1:{port}/{account}/")).unwrap(),
            account,
            key1,
            key2,
            ca_pem_path,
            args,
            access,
            _dir: dir,
        }
    }

    /// Stops the process (an outage) with SIGTERM, so it saves its data as a
    /// service stop would; [`Azurite::restart`] brings it back.
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port with the same data (on disk).
    pub fn restart(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.stop();
        }
        let env = format!(
            "{}:{}:{}",
            self.account,
            self.key1.expose(),
            self.key2.expose()
        );
        self.child = spawn(&self.args, &env, self._dir.path(), &self.access);
    }

    /// The requests Azurite answered so far, as its access log names them
    /// (`METHOD /account/container/blob?query`): the service's own count, not keyflip's.
    /// Waits until no new line arrived for 300 ms (it logs each request once answered).
    pub fn requests(&self) -> Vec<String> {
        let mut seen = usize::MAX;
        loop {
            std::thread::sleep(Duration::from_millis(300));
            let access = self.access.lock().unwrap();
            if access.len() == seen {
                return access
                    .iter()
                    .filter_map(|line| {
                        let request = line.split('"').nth(1)?;
                        let mut words = request.split(' ');
                        Some(format!("{} {}", words.next()?, words.next()?))
                    })
                    .collect();
            }
            seen = access.len();
        }
    }
}

fn spawn(args: &[String], accounts: &str, dir: &Path, access: &Arc<Mutex<Vec<String>>>) -> Child {
    let mut child = Command::new(binary())
        .args(args)
        .env("AZURITE_ACCOUNTS", accounts)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start azurite-blob (run .ci/setup; it needs node)");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let log = access.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("successfully listens") {
                let _ = tx.send(());
            } else if line.contains(" HTTP/1.1\" ") || line.contains(" HTTP/2.0\" ") {
                log.lock().unwrap().push(line);
            }
        }
    });
    let stderr = child.stderr.take().unwrap();
    let errors = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = errors.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push_str(&line);
            sink.lock().unwrap().push('\n');
        }
    });
    if rx.recv_timeout(Duration::from_secs(60)).is_err() {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "Azurite exited or did not report 'successfully listens' within 60 s; stderr:\n{}",
            errors.lock().unwrap()
        );
    }
    child
}
