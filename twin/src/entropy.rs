//! Random values the twin hands out: storage keys (64 bytes, base64, like Azure's),
//! Key Vault version ids (32 hex digits), secrets and opaque ids. All come from the
//! operating system's generator through ring.

use base64::Engine as _;
use ring::rand::{SecureRandom as _, SystemRandom};

fn bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // SystemRandom reads the OS generator; it fails only if the OS has none, and a
    // zero-filled value is still a valid (if weak) value for a test double.
    let _ = SystemRandom::new().fill(&mut b);
    b
}

/// A storage account key: 64 random bytes, base64 (88 characters).
pub(crate) fn storage_key() -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes::<64>())
}

/// A Key Vault secret version id: 32 lower-case hex digits.
pub(crate) fn hex32() -> String {
    bytes::<16>().iter().map(|b| format!("{b:02x}")).collect()
}

/// A URL-safe random token of 32 bytes (admin token, generated client secrets).
pub(crate) fn token() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes::<32>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_match_azure() {
        let k = storage_key();
        assert_eq!(k.len(), 88);
        assert_ne!(k, storage_key());
        let v = hex32();
        assert_eq!(v.len(), 32);
        assert!(
            v.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
    }
}
