//! Runs the `keyflip` binary on a pseudo-terminal, as a person at a shell would: stdin,
//! stdout and stderr are the terminal, so the confirmation prompt and the spinner
//! appear. What a person types is written when a given text shows up on the screen.

use std::io::{Read as _, Write as _};
use std::os::fd::{FromRawFd as _, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub struct Screen {
    pub code: Option<i32>,
    /// Everything the terminal showed (stdout and stderr, with `\r\n` line ends and
    /// the spinner's escape sequences).
    pub text: String,
}

/// Runs `cmd` on a new pseudo-terminal; when `prompt` appears, types `answer`.
pub fn run(mut cmd: Command, prompt: &str, answer: &str) -> Screen {
    let (mut master, slave) = open();
    cmd.stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave));
    let mut child = cmd.spawn().expect("keyflip runs");
    // The parent's copies of the terminal's end are gone with `cmd`: reads of the
    // master end fail (EIO) once the child exits.
    drop(cmd);
    let mut reader = master.try_clone().unwrap();
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut screen = Vec::new();
    let mut answered = false;
    loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(bytes) => screen.extend(bytes),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if !answered && String::from_utf8_lossy(&screen).contains(prompt) {
            master.write_all(answer.as_bytes()).unwrap();
            answered = true;
        }
        if child.try_wait().unwrap().is_some() {
            // Drain what is left, then stop.
            while let Ok(bytes) = rx.recv_timeout(Duration::from_millis(200)) {
                screen.extend(bytes);
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "keyflip did not finish on the terminal:\n{}",
            String::from_utf8_lossy(&screen)
        );
    }
    let status = child.wait().unwrap();
    Screen {
        code: status.code(),
        text: String::from_utf8_lossy(&screen).into_owned(),
    }
}

/// A pseudo-terminal pair (master, slave), 80 columns wide.
fn open() -> (std::fs::File, OwnedFd) {
    let (mut master, mut slave) = (-1, -1);
    let size = libc::winsize {
        ws_row: 50,
        ws_col: 80,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty writes two new file descriptors into the out-pointers; the name
    // and termios pointers may be null, the winsize pointer is a valid local.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &size,
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened by openpty and are owned by no one else.
    unsafe {
        (
            std::fs::File::from_raw_fd(master),
            OwnedFd::from_raw_fd(slave),
        )
    }
}
