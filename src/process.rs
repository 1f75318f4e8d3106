//! What the keyflip process does to itself first, before it reads a secret.
//!
//! - **No core dumps, no same-uid peeking.** `prctl(PR_SET_DUMPABLE, 0)`: the kernel
//!   writes no core file for this process and refuses other processes of the same
//!   user `ptrace` and `/proc/PID/mem` (its `/proc/PID` files become root's). A core
//!   would hold every key, token and client secret the process had in memory. The
//!   core size limit is set to 0 as well, in case a later exec or a kernel setting
//!   makes the process dumpable again; the unit file sets `LimitCORE=0` too.
//! - **File descriptors for rotations.** The soft `RLIMIT_NOFILE` is raised to the
//!   hard limit (at most [`NOFILE_TARGET`]): the daemon's connection caps bound what
//!   clients can hold, and the rest is for Azure connections, the journal and locks.
//! - **Trust comes from the configuration only.** `SSL_CERT_FILE` and `SSL_CERT_DIR`,
//!   which the TLS stack would otherwise read to *replace or extend* the system roots,
//!   are removed from the environment: extra trust is `[cloud] ca_bundle` in
//!   `keyflip.toml`, a root-owned file, not whatever environment a shell or a
//!   drop-in left behind. Their removal is logged (at `info`), and a certificate
//!   that fails says to use `ca_bundle`.
//!
//! [`harden`] must run while the process has one thread (first thing in `main`):
//! changing the environment is not thread-safe.

/// The open-file limit keyflip asks for when the hard limit allows.
pub const NOFILE_TARGET: u64 = 65_536;

/// What [`harden`] did, for one log line once logging is up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hardening {
    /// `PR_SET_DUMPABLE` is 0.
    pub undumpable: bool,
    /// The soft open-file limit afterwards.
    pub nofile: Option<u64>,
    /// Environment variables that would have changed TLS trust, removed.
    pub ignored_trust_env: Vec<String>,
    /// What could not be done (each is logged as a warning).
    pub problems: Vec<String>,
}

const TRUST_ENV: [&str; 2] = ["SSL_CERT_FILE", "SSL_CERT_DIR"];

/// Hardens this process. Call once, first thing in `main`, while single-threaded.
pub fn harden() -> Hardening {
    let mut done = Hardening::default();
    // SAFETY: prctl with PR_SET_DUMPABLE takes one integer argument and touches no
    // memory of ours.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } == 0 {
        done.undumpable = true;
    } else {
        done.problems.push(format!(
            "cannot make the process undumpable (prctl PR_SET_DUMPABLE): {}",
            std::io::Error::last_os_error()
        ));
    }
    let no_core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `no_core` is a valid rlimit for the duration of the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) } != 0 {
        done.problems.push(format!(
            "cannot set the core file size limit to 0: {}",
            std::io::Error::last_os_error()
        ));
    }
    match raise_nofile() {
        Ok(n) => done.nofile = Some(n),
        Err(e) => done
            .problems
            .push(format!("cannot raise the open-file limit: {e}")),
    }
    for name in TRUST_ENV {
        if std::env::var_os(name).is_some() {
            // SAFETY: `harden` runs first in `main`, before any other thread exists,
            // so nothing reads the environment concurrently.
            unsafe { std::env::remove_var(name) };
            done.ignored_trust_env.push(name.to_owned());
        }
    }
    done
}

/// Raises the soft open-file limit to the hard one (at most [`NOFILE_TARGET`]).
fn raise_nofile() -> std::io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let want = limit.rlim_max.min(NOFILE_TARGET);
    if limit.rlim_cur < want {
        limit.rlim_cur = want;
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(limit.rlim_cur)
}

impl Hardening {
    /// Logs what was done; called once logging is set up.
    pub fn log(&self) {
        for problem in &self.problems {
            tracing::warn!("{problem}");
        }
        // Info, not a warning: many hosts set SSL_CERT_FILE to the system bundle anyway.
        // A certificate that then fails names ca_bundle as the way to trust it.
        if !self.ignored_trust_env.is_empty() {
            tracing::info!(
                variables = %self.ignored_trust_env.join(", "),
                "ignored: keyflip trusts the system's roots plus [cloud] ca_bundle only; put extra CA certificates there"
            );
        }
        tracing::debug!(
            undumpable = self.undumpable,
            nofile = self.nofile,
            "process hardened"
        );
    }
}

/// The current process's dumpable flag (for tests and `doctor`).
pub fn is_dumpable() -> bool {
    // SAFETY: PR_GET_DUMPABLE takes no pointer arguments.
    unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) != 0 }
}

/// Logs a panic as one `ERROR` event (the daemon's log is JSON lines: a raw panic
/// message would be a line no log pipeline parses) and says it is a bug. The
/// message is the panic's own text: keyflip's types never print a key, so neither
/// does a panic that formats them.
pub fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".to_owned());
        tracing::error!(
            location,
            panic = %message,
            "internal error: keyflip hit a bug; please report it with this line. Journaled work is safe: the next start resumes it"
        );
    }));
}
