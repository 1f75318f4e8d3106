//! Who owns what keyflip creates in the state directory.
//!
//! Under systemd the daemon runs as a `DynamicUser` that owns the state directory;
//! an operator may run `keyflip rotate now` standalone as root on the same state
//! directory. Files root creates there (a lock file, the journal, the fingerprint key,
//! a report) would be root's, mode 0600, and the daemon could no longer open them.
//!
//! Promise: when keyflip runs as root and creates a file or directory whose parent
//! belongs to another user, it hands the new entry to that user (`lchown` to the
//! parent's uid and gid) right after creating it, so the state directory keeps one
//! owner whoever ran keyflip. SQLite does the same for the journal's `-wal` and
//! `-shm` files (it gives them the database file's owner when running as root). A
//! file that is still unusable (created by an older keyflip) is explained by
//! [`explain`], with the command that gives the directory back to its owner.

use std::io;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

fn euid() -> u32 {
    // SAFETY: geteuid takes no arguments and cannot fail.
    unsafe { libc::geteuid() }
}

/// Gives `created` to the owner of its parent directory, when keyflip runs as root
/// and the parent is someone else's. A no-op otherwise.
pub fn hand_over(created: &Path) -> io::Result<()> {
    if euid() != 0 {
        return Ok(());
    }
    let Some(parent) = created.parent().filter(|p| !p.as_os_str().is_empty()) else {
        return Ok(());
    };
    let dir = std::fs::metadata(parent)?;
    if dir.uid() == 0 {
        return Ok(());
    }
    std::os::unix::fs::lchown(created, Some(dir.uid()), Some(dir.gid()))
}

/// Why `path` cannot be used, when `error` is a permission problem whose cause is
/// that another user owns the file; `None` for any other error.
pub fn explain(path: &Path, state_dir: &Path, error: &io::Error) -> Option<String> {
    if error.kind() != io::ErrorKind::PermissionDenied {
        return None;
    }
    let owner = std::fs::metadata(path).ok()?.uid();
    let me = euid();
    (owner != me).then(|| {
        format!(
            "{} belongs to uid {owner} but keyflip runs as uid {me} (a keyflip run as another user, such as root, created it); give the state directory back to one owner with `chown -R --reference={dir} {dir}` (as root, while no keyflip runs) and try again",
            path.display(),
            dir = state_dir.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_non_permission_error_is_not_explained() {
        let dir = tempfile::tempdir().unwrap();
        let e = io::Error::from(io::ErrorKind::NotFound);
        assert_eq!(explain(&dir.path().join("x"), dir.path(), &e), None);
    }

    /// Root creating a file in a directory of another user hands it over; anyone
    /// else (or a root-owned directory) leaves it alone.
    #[test]
    fn root_hands_new_files_to_the_directorys_owner() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        if euid() != 0 {
            hand_over(&file).unwrap();
            assert_eq!(std::fs::metadata(&file).unwrap().uid(), euid());
            return;
        }
        hand_over(&file).unwrap();
        assert_eq!(std::fs::metadata(&file).unwrap().uid(), 0, "root's dir");
        std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534)).unwrap();
        hand_over(&file).unwrap();
        let meta = std::fs::metadata(&file).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
    }
}
