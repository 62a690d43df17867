//! The pair's shared secrets (key files), and the HMAC the UDP heartbeats are tagged with.
//!
//! A key file's bytes are a secret of at least [`MIN_KEY_LEN`] bytes. The logging channel and
//! the console endpoints do not use it directly: [`crate::noise`] derives a Noise PSK from it
//! per kind of endpoint and encrypts and authenticates everything with that. The heartbeats
//! (which carry nothing secret, only "alive") are tagged with an HMAC-SHA256 truncated to
//! [`TAG_LEN`] bytes, under a key derived from this key and the channel session
//! (`crate::heartbeat::SessionKey`).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Length of a nonce.
pub const NONCE_LEN: usize = 32;
/// Length of a message tag.
pub const TAG_LEN: usize = 16;
/// Shortest key accepted.
pub const MIN_KEY_LEN: usize = 16;

type HmacSha256 = Hmac<Sha256>;

/// Problems with the shared key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// the key file cannot be read
    #[error("cannot read the key file {path}: {source}")]
    Read {
        /// The path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// the key is too short
    #[error("the key in {path} has {len} bytes; at least {MIN_KEY_LEN} are needed (e.g. `head -c 32 /dev/urandom > {path}`)")]
    Short {
        /// The path.
        path: String,
        /// Its length.
        len: usize,
    },
}

/// The pair's shared secret.
#[derive(Clone)]
pub struct Key(Vec<u8>);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    /// A key from bytes (at least [`MIN_KEY_LEN`]).
    pub fn new(bytes: Vec<u8>) -> Option<Key> {
        (bytes.len() >= MIN_KEY_LEN).then_some(Key(bytes))
    }

    /// Reads a key file (its bytes are the key; a trailing newline is dropped).
    pub fn from_file(path: &std::path::Path) -> Result<Key, KeyError> {
        let mut b = std::fs::read(path).map_err(|source| KeyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        while b.last().is_some_and(|c| *c == b'\n' || *c == b'\r') {
            b.pop();
        }
        let len = b.len();
        Key::new(b).ok_or(KeyError::Short {
            path: path.display().to_string(),
            len,
        })
    }

    /// A fresh random key.
    pub fn random() -> Key {
        Key(nonce().to_vec())
    }

    /// The raw bytes (to write a key file).
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// `HMAC(key, parts...)`.
    pub fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        mac(&self.0, parts)
    }
}

fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length.
    let Ok(mut m) = HmacSha256::new_from_slice(key) else {
        return [0; 32];
    };
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// Compares in time independent of where the first difference is.
pub fn equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A random nonce from the host.
pub fn nonce() -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    if getrandom::getrandom(&mut n).is_err() {
        // No OS randomness: fall back to time and pid, still unique per handshake.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        n[..16].copy_from_slice(&t.to_le_bytes());
        n[16..20].copy_from_slice(&std::process::id().to_le_bytes());
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_depend_on_key_and_input() {
        let k = Key::new(vec![7; 32]).unwrap();
        let other = Key::new(vec![8; 32]).unwrap();
        let (a, b) = (nonce(), nonce());
        assert_ne!(a, b);
        assert_eq!(k.mac(&[&a, &b]), k.mac(&[&a, &b]));
        assert_ne!(k.mac(&[&a, &b]), other.mac(&[&a, &b]));
        assert_ne!(k.mac(&[&a, &b]), k.mac(&[&b, &a]));
        assert!(Key::new(vec![1; 15]).is_none());
        let t = k.mac(&[&a]);
        assert!(equal(&t, &t) && !equal(&t, &[0; 32]));
    }
}
