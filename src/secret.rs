//! Key material and fingerprints.
//!
//! A [`StorageKey`] is the only type that holds a storage account key (or a value
//! derived from one, such as a connection string). It cannot be printed: `Debug` and
//! `Display` show `[redacted]`, it has no `Serialize`, and its memory is zeroized on
//! drop. Code that needs the value calls [`StorageKey::expose`] at the point of use
//! (signing a request, writing a request body) and nowhere else.
//!
//! A [`Fingerprint`] is what keyflip records instead of a key: the first 16 bytes of
//! HMAC-SHA256 under a per-installation fingerprint key ([`Fingerprinter`]). Keyed,
//! so a leaked journal does not let anyone confirm a guessed key, and short enough to
//! compare by eye in a report. Fingerprints are only comparable when they were made
//! with the same fingerprint key.

use std::fmt;
use std::io::Write as _;
use std::path::Path;

use ring::hmac;
use zeroize::Zeroizing;

/// A storage account key or a secret value that contains one. Redacted and zeroized.
#[derive(Clone)]
pub struct StorageKey(Zeroizing<String>);

impl StorageKey {
    /// Wraps a value. The `String` is moved in, so no unzeroized copy is left behind
    /// by this call (callers should avoid making copies before it).
    pub fn new(value: String) -> Self {
        Self(Zeroizing::new(value))
    }

    /// The secret value. Call it only where the value goes on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Decodes the base64 account key into HMAC key bytes (zeroized on drop).
    pub fn decode(&self) -> Result<Zeroizing<Vec<u8>>, KeyFormatError> {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(self.0.as_bytes())
            .map(Zeroizing::new)
            .map_err(|_| KeyFormatError)
    }
}

impl fmt::Debug for StorageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StorageKey([redacted])")
    }
}

impl fmt::Display for StorageKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl PartialEq for StorageKey {
    /// Constant-time comparison, so equality checks do not leak key prefixes by timing.
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (self.0.as_bytes(), other.0.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}
impl Eq for StorageKey {}

/// The value is not valid base64, so it cannot be a storage account key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the key is not valid base64 (a storage account key is 88 base64 characters)")]
pub struct KeyFormatError;

/// A keyed hash of a key value: safe to log, journal, tag and show.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint([u8; 16]);

impl Fingerprint {
    /// Parses the 32-hex-digit form produced by [`Fingerprint::to_hex`].
    pub fn from_hex(s: &str) -> Option<Self> {
        if s.len() != 32 {
            return None;
        }
        let mut out = [0u8; 16];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Self(out))
    }

    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The short form used in human output: `fp:` and the first 12 hex digits.
    pub fn short(&self) -> String {
        format!("fp:{}", &self.to_hex()[..12])
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.short())
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.short())
    }
}

impl serde::Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> serde::Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::from_hex(&s).ok_or_else(|| serde::de::Error::custom("expected 32 hex digits"))
    }
}

/// Computes fingerprints under one installation's fingerprint key.
pub struct Fingerprinter {
    key: hmac::Key,
}

/// Domain separation, so a fingerprint can never equal an HMAC keyflip makes elsewhere.
const FINGERPRINT_CONTEXT: &[u8] = b"keyflip fingerprint v1\0";

impl Fingerprinter {
    /// A fingerprinter from raw key bytes (tests, and [`Fingerprinter::load_or_create`]).
    pub fn from_bytes(key: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
        }
    }

    /// Loads the fingerprint key from `path`; `None` when there is none (nothing is
    /// created). Refuses a key file that others can read.
    pub fn load(path: &Path) -> Result<Option<Self>, FingerprintKeyError> {
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            _ => Self::load_or_create(path).map(Some),
        }
    }

    /// A fingerprinter under a random key, for one run that reads only and has no
    /// installation key: its fingerprints compare with each other and nothing else.
    pub fn for_this_run() -> Result<Self, FingerprintKeyError> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), bytes.as_mut()).map_err(
            |_| FingerprintKeyError::Io {
                path: "(a key for this run)".to_owned(),
                source: std::io::Error::other("the system random source failed"),
            },
        )?;
        Ok(Self::from_bytes(bytes.as_ref()))
    }

    /// Loads the fingerprint key from `path`, creating it (32 random bytes, mode 0600)
    /// on first use. Refuses a key file that others can read.
    pub fn load_or_create(path: &Path) -> Result<Self, FingerprintKeyError> {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        let err = |source| FingerprintKeyError::Io {
            path: path.display().to_string(),
            source,
        };
        // 32 bytes; a bounded read of a regular file only.
        match crate::input::read_bytes(path, 64) {
            Ok(bytes) => {
                let mode = std::fs::metadata(path).map_err(err)?.permissions().mode();
                if mode & 0o077 != 0 {
                    return Err(FingerprintKeyError::TooOpen {
                        path: path.display().to_string(),
                        mode: mode & 0o777,
                    });
                }
                if bytes.len() != 32 {
                    return Err(FingerprintKeyError::Corrupt {
                        path: path.display().to_string(),
                    });
                }
                Ok(Self::from_bytes(&Zeroizing::new(bytes)))
            }
            Err(e) if e.io_kind() == Some(std::io::ErrorKind::NotFound) => {
                let mut bytes = Zeroizing::new([0u8; 32]);
                ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), bytes.as_mut())
                    .map_err(|_| err(std::io::Error::other("the system random source failed")))?;
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(err)?;
                file.write_all(bytes.as_ref())
                    .and_then(|()| file.sync_all())
                    .map_err(err)?;
                crate::journal::owner::hand_over(path).map_err(err)?;
                Ok(Self::from_bytes(bytes.as_ref()))
            }
            Err(e) => Err(err(std::io::Error::other(e))),
        }
    }

    pub fn fingerprint(&self, key: &StorageKey) -> Fingerprint {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(FINGERPRINT_CONTEXT);
        ctx.update(key.expose().as_bytes());
        let tag = ctx.sign();
        let mut out = [0u8; 16];
        out.copy_from_slice(&tag.as_ref()[..16]);
        Fingerprint(out)
    }
}

impl fmt::Debug for Fingerprinter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Fingerprinter([redacted])")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FingerprintKeyError {
    #[error("cannot read or create the fingerprint key {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "the fingerprint key {path} has mode {mode:o}, readable by others; run `chmod 600 {path}`"
    )]
    TooOpen { path: String, mode: u32 },
    #[error(
        "the fingerprint key {path} is not 32 bytes; restore it from backup, or move it away to start a new one (journal fingerprints made with the old key will no longer match)"
    )]
    Corrupt { path: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

    #[test]
    fn debug_and_display_never_show_the_value() {
        let key = StorageKey::new(KEY.to_owned());
        let shown = format!("{key:?} {key} {:?}", Some(&key));
        assert!(!shown.contains("Eby8"), "{shown}");
        assert!(shown.contains("[redacted]"));
    }

    #[test]
    fn fingerprints_are_keyed_and_stable() {
        let key = StorageKey::new(KEY.to_owned());
        let a = Fingerprinter::from_bytes(b"one");
        let b = Fingerprinter::from_bytes(b"two");
        assert_eq!(a.fingerprint(&key), a.fingerprint(&key.clone()));
        assert_ne!(a.fingerprint(&key), b.fingerprint(&key));
        let fp = a.fingerprint(&key);
        assert_eq!(Fingerprint::from_hex(&fp.to_hex()), Some(fp));
        assert!(fp.short().starts_with("fp:") && fp.short().len() == 15);
    }

    #[test]
    fn key_file_is_created_private_and_reused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fingerprint.key");
        let key = StorageKey::new(KEY.to_owned());
        let first = Fingerprinter::load_or_create(&path)
            .unwrap()
            .fingerprint(&key);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let second = Fingerprinter::load_or_create(&path)
            .unwrap()
            .fingerprint(&key);
        assert_eq!(first, second);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Fingerprinter::load_or_create(&path).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn decode_rejects_non_base64() {
        assert_eq!(
            StorageKey::new("not base64!".into()).decode().unwrap_err(),
            KeyFormatError
        );
        assert_eq!(StorageKey::new(KEY.into()).decode().unwrap().len(), 64);
    }
}
