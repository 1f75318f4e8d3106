//! One process per storage account: an exclusive, non-blocking lock on a per-account
//! file under `state_dir/locks/`.
//!
//! The lock is the OS's (`flock` through [`std::fs::File::try_lock`]), so it is
//! released when the [`AccountLock`] is dropped and also when the process dies, however
//! it dies: there is no stale lock to clean up. The file name is a hash of the
//! lowercased resource id (ARM ids are case-insensitive, and ids are too long and too
//! full of slashes for file names). The holder writes its pid into the file so a
//! refused process can say who holds it. Lock files are never deleted: deleting one
//! while another process waits on it would let two processes "hold" it.

use std::fs::{File, TryLockError};
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};

use ring::digest;

use crate::resource_id::ResourceId;

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "storage account {account} is locked by another keyflip process{}; wait for it to finish (lock file {path})",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Busy {
        account: String,
        pid: Option<u32>,
        path: String,
    },
    /// The lock file belongs to another user (see `journal::owner`).
    #[error("cannot use the lock file: {why}")]
    Foreign { why: String },
    #[error("cannot use the lock file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// Held while this process drives a rotation of one account. Dropping it releases
/// the lock.
#[derive(Debug)]
pub struct AccountLock {
    file: File,
    path: PathBuf,
}

impl AccountLock {
    /// Takes the account's lock without waiting, or says who holds it.
    pub fn acquire(state_dir: &Path, account: &ResourceId) -> Result<Self, LockError> {
        use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
        let dir = state_dir.join("locks");
        let path = dir.join(lock_file_name(account));
        let io = |source: std::io::Error| match super::owner::explain(&path, state_dir, &source) {
            Some(why) => LockError::Foreign { why },
            None => LockError::Io {
                path: path.display().to_string(),
                source,
            },
        };
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(io)?;
            super::owner::hand_over(&dir).map_err(io)?;
        }
        let existed = path.exists();
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        if !existed {
            super::owner::hand_over(&path).map_err(io)?;
        }
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                // Best effort: the holder may be rewriting it right now.
                let _ = file.read_to_string(&mut holder);
                return Err(LockError::Busy {
                    account: account.to_string(),
                    pid: holder.lines().next().and_then(|l| l.trim().parse().ok()),
                    path: path.display().to_string(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}\n{account}", std::process::id()))
            .map_err(io)?;
        Ok(Self { file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for AccountLock {
    fn drop(&mut self) {
        // Closing the file releases the lock anyway; unlocking first makes the release
        // independent of when the descriptor is closed.
        let _ = self.file.unlock();
    }
}

fn lock_file_name(account: &ResourceId) -> String {
    let hash = digest::digest(&digest::SHA256, account.as_str().to_lowercase().as_bytes());
    let hex: String = hash.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{hex}.lock")
}

#[cfg(test)]
mod tests {
    use std::io::BufRead as _;
    use std::process::{Command, Stdio};

    use super::*;

    fn account(name: &str) -> ResourceId {
        format!(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/{name}"
        )
        .parse()
        .unwrap()
    }

    #[test]
    fn second_holder_is_refused_until_the_first_drops() {
        let dir = tempfile::tempdir().unwrap();
        let first = AccountLock::acquire(dir.path(), &account("acct")).unwrap();
        // ARM ids are case-insensitive, so this is the same account.
        let upper = account("acct").as_str().to_uppercase().parse().unwrap();
        let err = AccountLock::acquire(dir.path(), &upper).unwrap_err();
        let LockError::Busy {
            pid, account: a, ..
        } = &err
        else {
            panic!("{err}")
        };
        assert_eq!(*pid, Some(std::process::id()));
        assert!(a.contains("ACCT"));
        assert!(
            err.to_string()
                .contains(&format!("pid {}", std::process::id()))
        );
        // Another account is independent.
        let _other = AccountLock::acquire(dir.path(), &account("other")).unwrap();
        drop(first);
        AccountLock::acquire(dir.path(), &account("acct")).unwrap();
    }

    #[test]
    fn threads_contend_and_exactly_one_wins() {
        let dir = tempfile::tempdir().unwrap();
        let barrier = std::sync::Barrier::new(8);
        let wins = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        let got = AccountLock::acquire(dir.path(), &account("acct"));
                        // Hold it until every thread has tried.
                        barrier.wait();
                        got.is_ok()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .filter(|won| *won)
                .count()
        });
        assert_eq!(wins, 1);
    }

    const CHILD_DIR: &str = "KEYFLIP_LOCK_TEST_CHILD_DIR";

    /// Not a test on its own: the child process of
    /// `lock_is_released_when_its_holder_process_dies`.
    #[test]
    #[ignore = "helper process, started by lock_is_released_when_its_holder_process_dies"]
    fn child_holds_the_lock_until_killed() {
        let Some(dir) = std::env::var_os(CHILD_DIR) else {
            return;
        };
        let _lock = AccountLock::acquire(Path::new(&dir), &account("acct")).unwrap();
        println!("locked");
        // Wait for stdin to close (it never does: the parent kills us).
        let _ = std::io::stdin().read_line(&mut String::new());
    }

    #[test]
    fn lock_is_released_when_its_holder_process_dies() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "journal::lock::tests::child_holds_the_lock_until_killed",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        while !line.contains("locked") {
            line.clear();
            assert_ne!(
                stdout.read_line(&mut line).unwrap(),
                0,
                "child exited early"
            );
        }
        let err = AccountLock::acquire(dir.path(), &account("acct")).unwrap_err();
        assert!(
            matches!(err, LockError::Busy { pid: Some(p), .. } if p == child.id()),
            "{err}"
        );
        child.kill().unwrap();
        child.wait().unwrap();
        AccountLock::acquire(dir.path(), &account("acct")).unwrap();
    }
}
