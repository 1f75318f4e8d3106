//! A client secret handed over exactly as systemd's `LoadCredential=` hands it: the
//! credentials directory root-owned 0500 and the file root-owned 0400, each with an
//! ACL entry for the service's user (so `stat` shows the file as 0440), read by a real
//! keyflip process running as that user. keyflip judges such a file by who can
//! actually reach it (mode and ACL), so it is accepted inside `$CREDENTIALS_DIRECTORY`
//! and outside it; an ACL that lets another user in is refused, naming that user.

use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use crate::support::service::{SERVICE_UID, Service, euid};

const NONE: u32 = u32::MAX;

/// Writes `path`'s access ACL the way `setfacl` stores it (the
/// `system.posix_acl_access` attribute): `owner` for the file's owner, read (and for
/// a directory, search) for each uid in `readers`, nothing for group and others.
fn set_acl(path: &Path, owner: u16, readers: &[(u32, u16)]) {
    let mut raw = 2u32.to_le_bytes().to_vec();
    let mut entry = |tag: u16, perm: u16, id: u32| {
        raw.extend(tag.to_le_bytes());
        raw.extend(perm.to_le_bytes());
        raw.extend(id.to_le_bytes());
    };
    entry(0x01, owner, NONE);
    let mut mask = 0;
    for (uid, perm) in readers {
        entry(0x02, *perm, *uid);
        mask |= perm;
    }
    entry(0x04, 0, NONE);
    entry(0x10, mask, NONE);
    entry(0x20, 0, NONE);
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: NUL-terminated strings and a buffer of raw.len() bytes, all alive
    // across the call.
    let rc = unsafe {
        libc::setxattr(
            c_path.as_ptr(),
            c"system.posix_acl_access".as_ptr(),
            raw.as_ptr().cast(),
            raw.len(),
            0,
        )
    };
    assert_eq!(rc, 0, "setxattr: {}", std::io::Error::last_os_error());
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_credential_file_as_systemd_creates_it_is_read_by_the_service_user() {
    if euid() != 0 {
        eprintln!("skipped: needs root to create the files as systemd does");
        return;
    }
    let service = Service::install("");
    // As systemd makes /run/credentials/keyflip.service and the file in it.
    let creds = service.path("credentials/keyflip.service");
    std::fs::create_dir_all(&creds).unwrap();
    std::fs::set_permissions(
        service.path("credentials"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o500)).unwrap();
    set_acl(&creds, 0o5, &[(SERVICE_UID, 0o5)]);
    let secret = creds.join("client-secret");
    std::fs::copy(service.path("operator.secret"), &secret).unwrap();
    std::os::unix::fs::chown(&secret, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o400)).unwrap();
    set_acl(&secret, 0o4, &[(SERVICE_UID, 0o4)]);
    assert_eq!(
        mode(&secret),
        0o440,
        "stat shows the ACL's mask as the group's bits"
    );
    let config = std::fs::read_to_string(service.config()).unwrap();
    std::fs::write(
        service.config(),
        config.replace(
            "client_secret_file = \"operator.secret\"",
            &format!("client_secret_file = \"{}\"", secret.display()),
        ),
    )
    .unwrap();
    let doctor = |credentials_directory: bool| {
        let mut cmd = service.command(&["doctor", "--plan", "demo"], true);
        if credentials_directory {
            cmd.env("CREDENTIALS_DIRECTORY", &creds);
        } else {
            cmd.env_remove("CREDENTIALS_DIRECTORY");
        }
        let out = cmd.output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    // The service user reads it, whether or not it is told where systemd put it.
    for told in [true, false] {
        let (code, text) = doctor(told);
        assert_eq!(code, Some(0), "CREDENTIALS_DIRECTORY set: {told}\n{text}");
    }

    // The ACL is what lets the service user in: without it, the same file cannot be
    // read, and keyflip says so rather than calling it too open.
    set_acl(&secret, 0o4, &[]);
    let (code, text) = doctor(true);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("Permission denied") && text.contains(&secret.display().to_string()),
        "{text}"
    );

    // An ACL that also lets another user read it: refused outside the credentials
    // directory, naming who else can read it.
    set_acl(&secret, 0o4, &[(SERVICE_UID, 0o4), (1000, 0o4)]);
    let (code, text) = doctor(false);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("is not private: its ACL lets user 1000 reach it")
            && text.contains("chmod 600"),
        "{text}"
    );
    let value = std::fs::read_to_string(service.path("operator.secret")).unwrap();
    assert!(!text.contains(value.trim()), "the secret's value was shown");
}
