//! Whether a file holding a credential (a client secret, a client certificate's
//! private key) is private enough to use, judged by who can actually read or write it:
//! its mode bits and, when it has one, its POSIX ACL.
//!
//! Promises: a file that anyone but its owner, root and keyflip's own user can reach
//! (through "other" bits, its group, or an ACL entry for another user or any group) is
//! refused with what to run; a file systemd's `LoadCredential=` makes (mode 0400,
//! owned by root, plus an ACL entry granting the service's user read, which `stat`
//! shows as 0440) is accepted wherever it lies, because the ACL names keyflip's own
//! user only; and any file under `$CREDENTIALS_DIRECTORY` is accepted, because only
//! the service reaches that directory.

use std::path::Path;

use super::{ConfigError, Env};

/// Why [`check_private_file`] refused a file.
#[derive(Debug)]
pub enum PrivateFileError {
    Io(std::io::Error),
    TooOpen(ConfigError),
}

/// Whether a file holding a credential (`what`: "client secret", "client
/// certificate") is private enough to use: nobody but its owner, root and this
/// process's user can read or write it, or systemd placed it in
/// `$CREDENTIALS_DIRECTORY` with `LoadCredential=`.
pub fn check_private_file(
    path: &Path,
    what: &'static str,
    env: Env,
) -> Result<(), PrivateFileError> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path)
        .map_err(PrivateFileError::Io)?
        .permissions()
        .mode();
    let from_systemd = env("CREDENTIALS_DIRECTORY").is_some_and(|dir| {
        let dir = std::fs::canonicalize(dir);
        let file = std::fs::canonicalize(path);
        matches!((dir, file), (Ok(dir), Ok(file)) if file.starts_with(&dir))
    });
    if from_systemd {
        return Ok(());
    }
    let acl = access_acl(path).map_err(PrivateFileError::Io)?;
    // SAFETY: geteuid takes no arguments and cannot fail.
    let me = unsafe { libc::geteuid() };
    match who_else(mode, acl.as_deref(), me) {
        None => Ok(()),
        Some(who) => Err(PrivateFileError::TooOpen(ConfigError::SecretFileTooOpen {
            what,
            path: path.display().to_string(),
            who,
        })),
    }
}

/// The extended attribute that holds a file's access ACL (Linux's on-disk form of
/// what `setfacl` writes).
const ACL_XATTR: &str = "system.posix_acl_access";

/// The raw access ACL of `path`, or `None` when it has none (or the file system keeps
/// none): then the mode bits are the whole truth.
fn access_acl(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    use std::os::unix::ffi::OsStrExt as _;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("the path holds a NUL byte"))?;
    let c_name = std::ffi::CString::new(ACL_XATTR).map_err(std::io::Error::other)?;
    // An ACL has at most a few dozen entries of 8 bytes; Linux caps an xattr at 64 KiB.
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: both strings are NUL-terminated and live across the call; buf is
    // writable for buf.len() bytes.
    let n = unsafe {
        libc::getxattr(
            c_path.as_ptr(),
            c_name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENODATA) | Some(libc::EOPNOTSUPP) => Ok(None),
            _ => Err(e),
        };
    }
    buf.truncate(n.unsigned_abs());
    Ok(Some(buf))
}

// Tags of `struct posix_acl_xattr_entry` (linux/posix_acl_xattr.h).
const ACL_USER_OBJ: u16 = 0x01;
const ACL_USER: u16 = 0x02;
const ACL_GROUP_OBJ: u16 = 0x04;
const ACL_GROUP: u16 = 0x08;
const ACL_MASK: u16 = 0x10;
const ACL_OTHER: u16 = 0x20;
const ACL_XATTR_VERSION: u32 = 2;

/// Who, other than the owner, root and uid `me`, the mode and ACL let read or write
/// the file, in words; `None` if nobody. An ACL keyflip cannot parse counts as open.
fn who_else(mode: u32, acl: Option<&[u8]>, me: u32) -> Option<String> {
    if mode & 0o007 != 0 {
        return Some(format!("others can read it (mode {:o})", mode & 0o777));
    }
    let Some(acl) = acl else {
        return (mode & 0o070 != 0)
            .then(|| format!("its group can read it (mode {:o})", mode & 0o777));
    };
    let Some(entries) = parse_acl(acl) else {
        return Some("it has an ACL keyflip cannot read".to_owned());
    };
    // With an ACL, the mode's group bits are the mask, which caps every entry below.
    let mask = entries
        .iter()
        .find(|(tag, _, _)| *tag == ACL_MASK)
        .map_or(0o7, |(_, perm, _)| *perm);
    let mut others = Vec::new();
    for (tag, perm, id) in entries {
        if perm & mask == 0 {
            continue;
        }
        match tag {
            ACL_USER if id != me && id != 0 => others.push(format!("user {id}")),
            ACL_GROUP_OBJ => others.push("its group".to_owned()),
            ACL_GROUP => others.push(format!("group {id}")),
            _ => {}
        }
    }
    (!others.is_empty()).then(|| format!("its ACL lets {} reach it", others.join(", ")))
}

/// The `(tag, permissions, id)` entries of a raw access ACL.
fn parse_acl(raw: &[u8]) -> Option<Vec<(u16, u16, u32)>> {
    let (header, body) = raw.split_at_checked(4)?;
    if u32::from_le_bytes(header.try_into().ok()?) != ACL_XATTR_VERSION || body.len() % 8 != 0 {
        return None;
    }
    body.chunks_exact(8)
        .map(|e| {
            let tag = u16::from_le_bytes([e[0], e[1]]);
            let perm = u16::from_le_bytes([e[2], e[3]]);
            let id = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
            [
                ACL_USER_OBJ,
                ACL_USER,
                ACL_GROUP_OBJ,
                ACL_GROUP,
                ACL_MASK,
                ACL_OTHER,
            ]
            .contains(&tag)
            .then_some((tag, perm, id))
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The raw ACL `setfacl` writes for `entries` (tag, permissions, id).
    pub(crate) fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
        let mut raw = ACL_XATTR_VERSION.to_le_bytes().to_vec();
        for (tag, perm, id) in entries {
            raw.extend(tag.to_le_bytes());
            raw.extend(perm.to_le_bytes());
            raw.extend(id.to_le_bytes());
        }
        raw
    }

    const NONE: u32 = u32::MAX;

    /// What systemd's LoadCredential= writes: 0400 root, `user:<service>:r--`, mask r.
    pub(crate) fn systemd_acl(service_uid: u32) -> Vec<u8> {
        acl(&[
            (ACL_USER_OBJ, 4, NONE),
            (ACL_USER, 4, service_uid),
            (ACL_GROUP_OBJ, 0, NONE),
            (ACL_MASK, 4, NONE),
            (ACL_OTHER, 0, NONE),
        ])
    }

    #[test]
    fn who_can_read_is_judged_by_mode_and_acl() {
        let me = 65534;
        // Mode bits alone.
        assert_eq!(who_else(0o100600, None, me), None);
        assert_eq!(who_else(0o100400, None, me), None);
        assert!(who_else(0o100640, None, me).unwrap().contains("group"));
        assert!(who_else(0o100604, None, me).unwrap().contains("others"));
        // systemd's credential: stat shows 0440, but only `me` is in the ACL.
        assert_eq!(who_else(0o100440, Some(&systemd_acl(me)), me), None);
        // The same ACL for another user, or with the group let in, is open.
        let theirs = who_else(0o100440, Some(&systemd_acl(1000)), me).unwrap();
        assert!(theirs.contains("user 1000"), "{theirs}");
        let group = acl(&[
            (ACL_USER_OBJ, 4, NONE),
            (ACL_USER, 4, me),
            (ACL_GROUP_OBJ, 4, NONE),
            (ACL_MASK, 4, NONE),
            (ACL_OTHER, 0, NONE),
        ]);
        assert!(
            who_else(0o100440, Some(&group), me)
                .unwrap()
                .contains("its group")
        );
        let named_group = acl(&[
            (ACL_USER_OBJ, 6, NONE),
            (ACL_GROUP_OBJ, 0, NONE),
            (ACL_GROUP, 4, 27),
            (ACL_MASK, 4, NONE),
            (ACL_OTHER, 0, NONE),
        ]);
        assert!(
            who_else(0o100640, Some(&named_group), me)
                .unwrap()
                .contains("group 27")
        );
        // A mask of nothing shuts every entry out.
        let masked = acl(&[
            (ACL_USER_OBJ, 6, NONE),
            (ACL_USER, 4, 1000),
            (ACL_GROUP_OBJ, 4, NONE),
            (ACL_MASK, 0, NONE),
            (ACL_OTHER, 0, NONE),
        ]);
        assert_eq!(who_else(0o100600, Some(&masked), me), None);
        // Others' bits win whatever the ACL says; an ACL that does not parse is open.
        assert!(who_else(0o100444, Some(&systemd_acl(me)), me).is_some());
        assert!(who_else(0o100400, Some(&[2, 0, 0, 0, 1]), me).is_some());
        assert!(who_else(0o100400, Some(&acl(&[(0x40, 4, NONE)])), me).is_some());
    }
}
