//! The pre-shared key (`--key-file`): a 32-byte key derived from the file's contents, and the
//! keyed BLAKE3 MAC the protocol's proofs use (PROTOCOL.md §2.5).

use crate::Error;
use rdmaft_protocol::Mac;
use std::fmt;
use std::path::Path;

/// The context string of the key derivation (fixed: both sides must derive the same key).
const KDF_CONTEXT: &str = "rdmaft 2024 pre-shared key";
/// Longest key file read (a key is a few dozen bytes; this bounds a mistaken path).
const MAX_KEY_FILE: u64 = 1 << 20;

/// A pre-shared key.
#[derive(Clone)]
pub struct Key([u8; 32]);

impl Key {
    /// The key derived from `material` (any bytes; use at least 32 random ones).
    pub fn derive(material: &[u8]) -> Key {
        Key(blake3::derive_key(KDF_CONTEXT, material))
    }

    /// Reads a key file: its whole contents are the key material (trailing newlines
    /// included as written). An empty file is an error.
    pub fn from_file(path: &Path) -> Result<Key, Error> {
        let meta = std::fs::metadata(path).map_err(|e| Error::file("key file", path, e))?;
        if meta.len() > MAX_KEY_FILE {
            return Err(Error::invalid(
                "key file",
                format!("{} is larger than 1 MiB", path.display()),
            ));
        }
        let bytes = std::fs::read(path).map_err(|e| Error::file("key file", path, e))?;
        if bytes.is_empty() {
            return Err(Error::invalid(
                "key file",
                format!("{} is empty", path.display()),
            ));
        }
        Ok(Key::derive(&bytes))
    }
}

/// Fresh random bytes for a handshake nonce (from the kernel's CSPRNG).
pub(crate) fn nonce() -> Result<[u8; 16], Error> {
    use std::io::Read;
    let mut n = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut n))
        .map_err(|e| Error::file("random source", Path::new("/dev/urandom"), e))?;
    Ok(n)
}

impl Mac for Key {
    fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(&self.0);
        for p in parts {
            h.update(p);
        }
        *h.finalize().as_bytes()
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_material_same_key_and_mac() {
        let a = Key::derive(b"secret");
        let b = Key::derive(b"secret");
        let c = Key::derive(b"secreT");
        assert_eq!(a.mac(&[b"x", b"y"]), b.mac(&[b"xy"]));
        assert_ne!(a.mac(&[b"x"]), c.mac(&[b"x"]));
        assert_eq!(format!("{a:?}"), "Key(..)", "never printed");
    }

    #[test]
    fn key_files() {
        let dir = std::env::temp_dir().join(format!("rdmaft-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good");
        std::fs::write(&good, b"material\n").unwrap();
        let k = Key::from_file(&good).unwrap();
        assert_eq!(k.mac(&[b"m"]), Key::derive(b"material\n").mac(&[b"m"]));
        let empty = dir.join("empty");
        std::fs::write(&empty, b"").unwrap();
        assert!(Key::from_file(&empty)
            .unwrap_err()
            .to_string()
            .contains("empty"));
        let missing = Key::from_file(&dir.join("missing"))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("missing"), "{missing}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
