//! Reading the files an operator hands keyflip: the configuration, plans, a client
//! secret, a CA bundle.
//!
//! Promises: only a regular file is read (a FIFO, a device or a directory is refused
//! without blocking: the file is opened non-blocking and checked with `fstat` on the
//! open descriptor, so there is no window between the check and the read); at most
//! the given number of bytes is read, and a longer file is refused with its size and
//! the limit, so a stray multi-gigabyte file cannot exhaust memory. Errors name the
//! file and say what to do.

use std::fmt;
use std::io::Read as _;
use std::path::Path;

/// Largest configuration file keyflip reads.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;
/// Largest plan file.
pub const MAX_PLAN_BYTES: u64 = 1024 * 1024;
/// Largest client secret or federated token file.
pub const MAX_SECRET_BYTES: u64 = 64 * 1024;
/// Largest CA bundle.
pub const MAX_CA_BUNDLE_BYTES: u64 = 4 * 1024 * 1024;

/// Why a file could not be read.
#[derive(Debug)]
pub enum InputError {
    /// Opening or reading failed.
    Io(std::io::Error),
    /// Not a regular file: a FIFO, socket, device or directory.
    NotRegular { kind: &'static str },
    /// Larger than the limit.
    TooLarge { size: u64, limit: u64 },
    /// Not UTF-8 text.
    NotText,
}

impl InputError {
    /// The I/O error kind, for callers that treat "not found" specially.
    pub fn io_kind(&self) -> Option<std::io::ErrorKind> {
        match self {
            InputError::Io(e) => Some(e.kind()),
            _ => None,
        }
    }
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InputError::Io(e) => write!(f, "{e}"),
            InputError::NotRegular { kind } => {
                write!(
                    f,
                    "it is a {kind}, not a regular file; keyflip reads only regular files"
                )?;
                if kind.starts_with("FIFO") {
                    f.write_str(" (a FIFO would block it forever)")?;
                }
                Ok(())
            }
            InputError::TooLarge { size, limit } => write!(
                f,
                "it is {size} bytes, more than the {limit} bytes keyflip reads from such a file; is it the right file?"
            ),
            InputError::NotText => f.write_str("it is not UTF-8 text"),
        }
    }
}

impl std::error::Error for InputError {}

fn kind_of(file_type: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt as _;
    if file_type.is_dir() {
        "directory"
    } else if file_type.is_fifo() {
        "FIFO (named pipe)"
    } else if file_type.is_socket() {
        "socket"
    } else if file_type.is_char_device() || file_type.is_block_device() {
        "device"
    } else {
        "special file"
    }
}

/// The bytes of the regular file at `path`, at most `limit` of them.
pub fn read_bytes(path: &Path, limit: u64) -> Result<Vec<u8>, InputError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    // Non-blocking, so opening a FIFO with no writer returns at once; the flag does
    // nothing to reads from a regular file.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(InputError::Io)?;
    let meta = file.metadata().map_err(InputError::Io)?;
    if !meta.file_type().is_file() {
        return Err(InputError::NotRegular {
            kind: kind_of(meta.file_type()),
        });
    }
    if meta.len() > limit {
        return Err(InputError::TooLarge {
            size: meta.len(),
            limit,
        });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    // One more than the limit tells a file that grew while being read.
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(InputError::Io)?;
    if bytes.len() as u64 > limit {
        return Err(InputError::TooLarge {
            size: bytes.len() as u64,
            limit,
        });
    }
    Ok(bytes)
}

/// The text of the regular file at `path`, at most `limit` bytes.
pub fn read_text(path: &Path, limit: u64) -> Result<String, InputError> {
    String::from_utf8(read_bytes(path, limit)?).map_err(|_| InputError::NotText)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_small_regular_files_and_refuses_the_rest_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.toml");
        std::fs::write(&file, "a = 1\n").unwrap();
        assert_eq!(read_text(&file, 100).unwrap(), "a = 1\n");

        let e = read_text(&file, 3).unwrap_err();
        assert!(
            matches!(e, InputError::TooLarge { size: 6, limit: 3 }),
            "{e}"
        );

        assert!(matches!(
            read_text(dir.path(), 100),
            Err(InputError::NotRegular { kind: "directory" })
        ));
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // Would block forever if it were opened for a plain read.
        let e = read_text(&fifo, 100).unwrap_err();
        assert!(e.to_string().contains("FIFO"), "{e}");

        std::fs::write(&file, [0xff, 0xfe]).unwrap();
        assert!(matches!(read_text(&file, 100), Err(InputError::NotText)));
        assert_eq!(
            read_text(&dir.path().join("missing"), 1)
                .unwrap_err()
                .io_kind(),
            Some(std::io::ErrorKind::NotFound)
        );
    }
}
