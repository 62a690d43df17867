//! Mutual authentication of the pair with a shared key, and the message tags that keep a
//! stranger from injecting anything afterwards.
//!
//! Handshake (primary P connects to backup B): P sends its nonce; B answers with its nonce and
//! `HMAC(key, "ftvm-backup" | nP | nB)`; P checks it and answers `HMAC(key, "ftvm-primary" |
//! nB | nP)`; B checks that. Each side has then proved it holds the key without sending it,
//! and both derive the session key `HMAC(key, "ftvm-session" | nP | nB)`. Every later message
//! carries `HMAC(session, direction | sequence | body)` truncated to [`TAG_LEN`] bytes: a
//! replayed, reordered, altered or forged message fails its tag and drops the connection.
//! We use HMAC-SHA256 (the `hmac` and `sha2` crates) rather than TLS because the peers share a
//! key anyway and the channel needs no certificates; the stream is not encrypted (the log holds
//! the guest's inputs: run the channel on a trusted network or a tunnel if that matters).

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

/// The backup's proof.
pub fn backup_proof(key: &Key, np: &[u8], nb: &[u8]) -> [u8; 32] {
    key.mac(&[b"ftvm-backup", np, nb])
}

/// The primary's proof.
pub fn primary_proof(key: &Key, np: &[u8], nb: &[u8]) -> [u8; 32] {
    key.mac(&[b"ftvm-primary", nb, np])
}

/// The session's tagging state for one direction.
#[derive(Clone)]
pub struct Tagger {
    session: [u8; 32],
    direction: u8,
    seq: u64,
}

impl Tagger {
    /// Tags for `direction` (0: primary to backup, 1: backup to primary).
    pub fn new(key: &Key, np: &[u8], nb: &[u8], direction: u8) -> Tagger {
        Tagger {
            session: key.mac(&[b"ftvm-session", np, nb]),
            direction,
            seq: 0,
        }
    }

    /// The next message's tag.
    pub fn tag(&mut self, body: &[u8]) -> [u8; TAG_LEN] {
        let seq = self.seq.to_le_bytes();
        self.seq += 1;
        let full = mac(&self.session, &[&[self.direction], &seq, body]);
        let mut t = [0u8; TAG_LEN];
        t.copy_from_slice(&full[..TAG_LEN]);
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_depend_on_key_and_nonces() {
        let k = Key::new(vec![7; 32]).unwrap();
        let other = Key::new(vec![8; 32]).unwrap();
        let (np, nb) = (nonce(), nonce());
        assert_ne!(np, nb);
        assert_eq!(backup_proof(&k, &np, &nb), backup_proof(&k, &np, &nb));
        assert_ne!(backup_proof(&k, &np, &nb), backup_proof(&other, &np, &nb));
        assert_ne!(backup_proof(&k, &np, &nb), primary_proof(&k, &np, &nb));
        assert!(Key::new(vec![1; 15]).is_none());
    }

    #[test]
    fn tags_bind_sequence_and_direction() {
        let k = Key::new(vec![7; 32]).unwrap();
        let (np, nb) = (nonce(), nonce());
        let mut a = Tagger::new(&k, &np, &nb, 0);
        let mut b = Tagger::new(&k, &np, &nb, 0);
        let mut c = Tagger::new(&k, &np, &nb, 1);
        let t0 = a.tag(b"x");
        assert_eq!(t0, b.tag(b"x"));
        assert_ne!(a.tag(b"x"), t0, "same body, next sequence number");
        assert_ne!(c.tag(b"x"), t0, "other direction");
        assert!(equal(&t0, &t0) && !equal(&t0, &[0; TAG_LEN]));
    }
}
