//! Encryption and authentication of everything the pair (and an operator) sends over a network:
//! the Noise protocol framework ([`snow`]) keyed by a pre-shared secret.
//!
//! **What**: [`PATTERN`], `Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s`. Each side contributes a fresh
//! X25519 ephemeral key, the pre-shared key (PSK, derived from a key file by [`psk`]) is mixed in
//! before the first message, and every message after the two-message handshake is a
//! ChaCha20-Poly1305 *record* under a per-direction key with an implicit 64-bit nonce.
//!
//! **Why this pattern**: the pair (and an operator and a VM) share a secret and nothing else —
//! no host identities, no certificates to issue, pin or rotate. `NNpsk0` needs exactly that:
//! only a holder of the PSK can write a first message the responder accepts (its payload's AEAD
//! tag is under a PSK-derived key), or read the answer; the ephemeral Diffie-Hellman gives every
//! session fresh keys (forward secrecy: a key file stolen later does not decrypt a recorded
//! session). `XXpsk3` would add static keys that identify hosts, which we would then have to
//! distribute and check — more to go wrong for no gain while the PSK is the only identity. TLS
//! 1.3 with pinned certificates would do too but needs a PKI-shaped setup for a two-party
//! secret. `psk0` rather than `psk2` so that a stranger is refused at the *first* message,
//! before the responder spends a Diffie-Hellman on it. `NNpsk0`'s first message can be replayed
//! by an eavesdropper, so callers never treat the handshake alone as proof of a live peer: the
//! initiator's first record (which needs the session key) is what admits it (see
//! [`crate::wire`] and [`crate::console`]).
//!
//! **Records**: Noise messages are at most 65535 bytes, so a message of the application (a
//! 16 MiB log frame, a batch of clone pages) is sealed as a run of records, each
//! `len: u16 BE` then `len` bytes of ciphertext (plaintext + 16-byte tag); the plaintext of
//! the first record starts with the message's length (`u32 BE`). Each record takes the next
//! nonce of its direction ([`Sealer`], [`Opener`]): a record altered, forged, replayed,
//! reordered or with one lost before it fails its tag, the message is refused as a whole
//! ([`FrameError::Unauthentic`]) before any of it is returned, and the opener stays broken (the
//! caller drops the connection).

use crate::auth::Key;
use snow::{HandshakeState, StatelessTransportState};
use std::io::{Read, Write};
use std::sync::Arc;

/// The Noise protocol name of every session.
pub const PATTERN: &str = "Noise_NNpsk0_25519_ChaChaPoly_BLAKE2s";
/// Largest Noise message (a record's ciphertext).
pub const MAX_RECORD: usize = 65535;
/// The AEAD tag each record carries.
pub const TAG_LEN: usize = 16;
/// Plaintext bytes per record.
const CHUNK: usize = MAX_RECORD - TAG_LEN;

/// Why a sealed message could not be read (or written).
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// the connection failed
    #[error("the connection failed: {0}")]
    Io(#[from] std::io::Error),
    /// the peer closed the connection
    #[error("the peer closed the connection")]
    Closed,
    /// a record failed its tag
    #[error(
        "a frame failed authentication (tampered with, forged, replayed, reordered or one \
         lost before it): nothing of it was applied, the connection is dropped"
    )]
    Unauthentic,
    /// an authenticated message is malformed, or a record's length is impossible
    #[error("malformed frame: {0}")]
    Malformed(BadRecord),
    /// the Noise state refused a step (a handshake message, finishing the handshake, sealing)
    #[error("{during}: {source}")]
    Noise {
        /// The step.
        during: NoiseStep,
        /// What `snow` said.
        source: snow::Error,
    },
}

/// How a run of records can be malformed (their tags were good: the peer sent them so).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadRecord {
    /// a message longer than the reader takes (or than a length field holds)
    #[error("a message of {len} bytes (at most {max})")]
    TooLong {
        /// Its length.
        len: usize,
        /// The most taken.
        max: usize,
    },
    /// the first record is too short to hold the message's length
    #[error("a first record without a length")]
    NoLength,
    /// the records carried more than the message's length
    #[error("a message announced {announced} bytes and carried {carried}")]
    LengthMismatch {
        /// What the first record said.
        announced: usize,
        /// What came.
        carried: usize,
    },
    /// a stream message that should fit one record spans several
    #[error("a message over one record")]
    OverOneRecord,
    /// bytes left after a message's records in one frame
    #[error("{0} bytes after a message's records")]
    Trailing(usize),
}

/// The step of the Noise protocol that failed ([`FrameError::Noise`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoiseStep {
    /// Writing or reading a handshake message.
    HandshakeMessage,
    /// Turning a handshake into transport mode.
    FinishHandshake,
    /// Sealing a record.
    Seal,
}

impl std::fmt::Display for NoiseStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NoiseStep::HandshakeMessage => "handshake message",
            NoiseStep::FinishHandshake => "handshake not finished",
            NoiseStep::Seal => "cannot seal a record",
        })
    }
}

/// The 32-byte PSK for `purpose` (a label per kind of endpoint, so that one key file never
/// opens two kinds of session) from a key file's bytes: `HMAC-SHA256(key, "ftvm-psk" | purpose)`.
pub fn psk(key: &Key, purpose: &[u8]) -> [u8; 32] {
    key.mac(&[b"ftvm-psk", purpose])
}

fn params() -> snow::params::NoiseParams {
    // A constant that parses: checked by a unit test.
    PATTERN
        .parse()
        .unwrap_or_else(|_| unreachable!("{PATTERN} is a valid Noise protocol name"))
}

/// Which end of a handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Writes the first message (the primary, an operator's client).
    Initiator,
    /// Answers (the backup, the console endpoint).
    Responder,
}

/// A fresh handshake under `psk`, bound to `prologue` (the protocol's magic: a peer of another
/// protocol or version fails the first message).
pub fn handshake(role: Role, psk: &[u8; 32], prologue: &[u8]) -> HandshakeState {
    // ring's ChaCha20-Poly1305 (assembly) for the records, the default resolver for the rest
    // (X25519, BLAKE2s): the same protocol, several times the throughput of the portable
    // cipher (`cargo xtask bench --channel`).
    let resolver = snow::resolvers::FallbackResolver::new(
        Box::new(snow::resolvers::RingResolver),
        Box::new(snow::resolvers::DefaultResolver),
    );
    let b = snow::Builder::with_resolver(params(), Box::new(resolver));
    let b = b
        .psk(0, psk)
        .and_then(|b| b.prologue(prologue))
        .unwrap_or_else(|e| unreachable!("a fresh builder takes one psk and prologue: {e}"));
    match role {
        Role::Initiator => b.build_initiator(),
        Role::Responder => b.build_responder(),
    }
    .unwrap_or_else(|e| unreachable!("{PATTERN} builds with the default resolver: {e}"))
}

/// Writes the next handshake message (`len: u16 BE`, then it) carrying `payload`.
pub fn write_handshake(
    w: &mut impl Write,
    hs: &mut HandshakeState,
    payload: &[u8],
) -> Result<(), FrameError> {
    let mut buf = vec![0u8; MAX_RECORD];
    let n = hs
        .write_message(payload, &mut buf)
        .map_err(|source| FrameError::Noise {
            during: NoiseStep::HandshakeMessage,
            source,
        })?;
    let mut out = (n as u16).to_be_bytes().to_vec();
    out.extend_from_slice(&buf[..n]);
    w.write_all(&out)?;
    w.flush()?;
    Ok(())
}

/// What reading a handshake message found.
#[derive(Debug)]
pub enum HandshakeRead {
    /// The message authenticated: its payload.
    Payload(Vec<u8>),
    /// An empty message: the peer could not authenticate ours (it holds another key).
    PeerRefused,
    /// The message does not authenticate under our PSK.
    Unauthentic,
}

/// Reads the peer's next handshake message.
pub fn read_handshake(
    r: &mut impl Read,
    hs: &mut HandshakeState,
) -> Result<HandshakeRead, FrameError> {
    let mut len = [0u8; 2];
    read_exact_or_closed(r, &mut len)?;
    let len = usize::from(u16::from_be_bytes(len));
    if len == 0 {
        return Ok(HandshakeRead::PeerRefused);
    }
    let mut msg = vec![0u8; len];
    read_exact_or_closed(r, &mut msg)?;
    let mut payload = vec![0u8; len];
    match hs.read_message(&msg, &mut payload) {
        Ok(n) => {
            payload.truncate(n);
            Ok(HandshakeRead::Payload(payload))
        }
        Err(_) => Ok(HandshakeRead::Unauthentic),
    }
}

/// Tells the initiator that its first message did not authenticate (an empty handshake
/// message). Unauthenticated, like any refusal to a stranger: it can only say "no".
pub fn write_refusal(w: &mut impl Write) -> Result<(), FrameError> {
    w.write_all(&[0, 0])?;
    Ok(())
}

/// The handshake hash of a finished handshake: the same on both its ends, different for every
/// other handshake (it covers both fresh ephemeral keys, and the PSK), so it names the session;
/// the heartbeats are keyed by it ([`crate::heartbeat::SessionKey`]).
pub fn binding(hs: &HandshakeState) -> [u8; 32] {
    let mut b = [0u8; 32];
    let h = hs.get_handshake_hash();
    let n = h.len().min(32);
    b[..n].copy_from_slice(&h[..n]);
    b
}

/// The two directions of a finished handshake.
pub fn split(hs: HandshakeState) -> Result<(Sealer, Opener), FrameError> {
    let st = Arc::new(
        hs.into_stateless_transport_mode()
            .map_err(|source| FrameError::Noise {
                during: NoiseStep::FinishHandshake,
                source,
            })?,
    );
    Ok((
        Sealer {
            st: Arc::clone(&st),
            nonce: 0,
        },
        Opener {
            st,
            nonce: 0,
            broken: false,
            ct: Vec::new(),
        },
    ))
}

/// Seals our messages, in order.
pub struct Sealer {
    st: Arc<StatelessTransportState>,
    nonce: u64,
}

/// Opens the peer's messages, in order.
pub struct Opener {
    st: Arc<StatelessTransportState>,
    nonce: u64,
    broken: bool,
    /// A record's ciphertext (its allocation reused).
    ct: Vec<u8>,
}

impl Sealer {
    /// `msg` as the records that carry it (see the module doc).
    pub fn seal(&mut self, msg: &[u8]) -> Result<Vec<u8>, FrameError> {
        let mut out = Vec::new();
        self.seal_into(msg, &mut out)?;
        Ok(out)
    }

    /// [`Sealer::seal`] into `out` (cleared first; its allocation is reused).
    pub fn seal_into(&mut self, msg: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
        let total = u32::try_from(msg.len()).map_err(|_| {
            FrameError::Malformed(BadRecord::TooLong {
                len: msg.len(),
                max: u32::MAX as usize,
            })
        })?;
        let records = (msg.len() + 4).div_ceil(CHUNK).max(1);
        out.clear();
        out.resize(msg.len() + 4 + records * (2 + TAG_LEN), 0);
        let mut at = 0;
        let mut first = Vec::with_capacity(CHUNK);
        first.extend_from_slice(&total.to_be_bytes());
        let head = msg.len().min(CHUNK - 4);
        first.extend_from_slice(&msg[..head]);
        at += self.record(&first, &mut out[at..])?;
        for chunk in msg[head..].chunks(CHUNK) {
            at += self.record(chunk, &mut out[at..])?;
        }
        out.truncate(at);
        Ok(())
    }

    fn record(&mut self, pt: &[u8], out: &mut [u8]) -> Result<usize, FrameError> {
        let n = self
            .st
            .write_message(self.nonce, pt, &mut out[2..])
            .map_err(|source| FrameError::Noise {
                during: NoiseStep::Seal,
                source,
            })?;
        self.nonce += 1;
        out[..2].copy_from_slice(&(n as u16).to_be_bytes());
        Ok(2 + n)
    }

    /// Seals `msg` and writes it.
    pub fn send(&mut self, w: &mut impl Write, msg: &[u8]) -> Result<(), FrameError> {
        let b = self.seal(msg)?;
        w.write_all(&b)?;
        Ok(())
    }

    /// Seals `msg` into `buf` (reused) and writes it.
    pub fn send_with(
        &mut self,
        w: &mut impl Write,
        msg: &[u8],
        buf: &mut Vec<u8>,
    ) -> Result<(), FrameError> {
        self.seal_into(msg, buf)?;
        w.write_all(buf)?;
        Ok(())
    }
}

fn read_exact_or_closed(r: &mut impl Read, buf: &mut [u8]) -> Result<(), FrameError> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => FrameError::Closed,
        _ => FrameError::Io(e),
    })
}

impl Opener {
    /// Reads and opens the next message (at most `max` bytes) from `r`. Any failure leaves the
    /// opener broken: every later call fails too.
    pub fn recv(&mut self, r: &mut impl Read, max: usize) -> Result<Vec<u8>, FrameError> {
        if self.broken {
            return Err(FrameError::Unauthentic);
        }
        let got = self.recv_inner(r, max);
        if got.is_err() {
            self.broken = true;
        }
        got
    }

    /// Reads the next record and appends its plaintext to `out`.
    fn record(
        &mut self,
        r: &mut impl Read,
        ct: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<(), FrameError> {
        let mut len = [0u8; 2];
        read_exact_or_closed(r, &mut len)?;
        let len = usize::from(u16::from_be_bytes(len));
        if len <= TAG_LEN {
            // The length is not authenticated: an impossible one was tampered with.
            return Err(FrameError::Unauthentic);
        }
        ct.resize(len, 0);
        read_exact_or_closed(r, ct)?;
        let at = out.len();
        out.resize(at + len, 0);
        let n = self
            .st
            .read_message(self.nonce, ct, &mut out[at..])
            .map_err(|_| FrameError::Unauthentic)?;
        self.nonce += 1;
        out.truncate(at + n);
        Ok(())
    }

    fn recv_inner(&mut self, r: &mut impl Read, max: usize) -> Result<Vec<u8>, FrameError> {
        let mut ct = std::mem::take(&mut self.ct);
        let got = self.recv_records(r, max, &mut ct);
        self.ct = ct;
        got
    }

    fn recv_records(
        &mut self,
        r: &mut impl Read,
        max: usize,
        ct: &mut Vec<u8>,
    ) -> Result<Vec<u8>, FrameError> {
        let mut first = Vec::new();
        self.record(r, ct, &mut first)?;
        let total = first
            .get(..4)
            .and_then(|h| h.try_into().ok())
            .map(u32::from_be_bytes)
            .ok_or(FrameError::Malformed(BadRecord::NoLength))? as usize;
        if total > max {
            return Err(FrameError::Malformed(BadRecord::TooLong {
                len: total,
                max,
            }));
        }
        let mut msg = Vec::with_capacity(total + TAG_LEN);
        msg.extend_from_slice(&first[4..]);
        while msg.len() < total {
            self.record(r, ct, &mut msg)?;
        }
        if msg.len() != total {
            return Err(FrameError::Malformed(BadRecord::LengthMismatch {
                announced: total,
                carried: msg.len(),
            }));
        }
        Ok(msg)
    }
}

/// Most plaintext a [`SealedWriter`] puts in one message (so that each is one record).
pub const STREAM_CHUNK: usize = CHUNK - 4;

/// A byte stream over a sealed session, written as one-record messages: what the console
/// endpoints carry (a request line, then the console's streams).
pub struct SealedWriter<W: Write> {
    inner: W,
    sealer: Sealer,
}

impl<W: Write> SealedWriter<W> {
    /// Seals what is written to `inner`.
    pub fn new(inner: W, sealer: Sealer) -> Self {
        SealedWriter { inner, sealer }
    }

    /// The stream under it.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }
}

impl<W: Write> Write for SealedWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = buf.len().min(STREAM_CHUNK);
        if n == 0 {
            return Ok(0);
        }
        self.sealer
            .send(&mut self.inner, &buf[..n])
            .map_err(std::io::Error::other)?;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Reads a byte stream of one-record messages ([`SealedWriter`]). A read that times out
/// keeps the part of a record it has (the next read completes it); a record that fails its
/// tag ends the stream with an error (`InvalidData`), and so does every later read.
pub struct SealedReader<R: Read> {
    inner: R,
    opener: Opener,
    /// Ciphertext received, not yet a whole record.
    ct: Vec<u8>,
    /// Plaintext opened, not yet read.
    pt: Vec<u8>,
    at: usize,
}

impl<R: Read> SealedReader<R> {
    /// Opens what `inner` carries.
    pub fn new(inner: R, opener: Opener) -> Self {
        SealedReader {
            inner,
            opener,
            ct: Vec::new(),
            pt: Vec::new(),
            at: 0,
        }
    }

    /// The stream under it.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// The length of the whole record at the head of `ct`, if it is all there.
    fn whole_record(&self) -> Option<usize> {
        let len = usize::from(u16::from_be_bytes(self.ct.get(..2)?.try_into().ok()?));
        (self.ct.len() >= 2 + len).then_some(2 + len)
    }
}

impl<R: Read> Read for SealedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.pt.len() {
            if let Some(n) = self.whole_record() {
                let rec: Vec<u8> = self.ct.drain(..n).collect();
                let mut r = rec.as_slice();
                let opened = self.opener.recv(&mut r, STREAM_CHUNK).and_then(|m| {
                    if r.is_empty() {
                        Ok(m)
                    } else {
                        Err(FrameError::Malformed(BadRecord::OverOneRecord))
                    }
                });
                match opened {
                    Ok(m) => {
                        self.pt = m;
                        self.at = 0;
                    }
                    Err(FrameError::Closed) => {
                        self.opener.broken = true;
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            "a message over one record",
                        ));
                    }
                    Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
                }
                continue;
            }
            if self.opener.broken {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    FrameError::Unauthentic,
                ));
            }
            let mut tmp = [0u8; 16 << 10];
            let n = self.inner.read(&mut tmp)?;
            if n == 0 {
                // The end of the stream; mid-record it is a cut, reported as the end too.
                return Ok(0);
            }
            self.ct.extend_from_slice(&tmp[..n]);
        }
        let n = buf.len().min(self.pt.len() - self.at);
        buf[..n].copy_from_slice(&self.pt[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Two ends of a session made in memory (a handshake under a random key): `(initiator's,
/// responder's)` sealers and openers. For tests and in-memory transports.
pub fn memory_session() -> ((Sealer, Opener), (Sealer, Opener)) {
    let psk = psk(&Key::random(), b"memory");
    let mut i = handshake(Role::Initiator, &psk, b"mem");
    let mut r = handshake(Role::Responder, &psk, b"mem");
    let mut wire = Vec::new();
    let mut go = || -> Result<_, FrameError> {
        write_handshake(&mut wire, &mut i, &[])?;
        read_handshake(&mut wire.as_slice(), &mut r)?;
        wire.clear();
        write_handshake(&mut wire, &mut r, &[])?;
        read_handshake(&mut wire.as_slice(), &mut i)?;
        Ok(())
    };
    go().unwrap_or_else(|e| unreachable!("a handshake in memory under one key: {e}"));
    let ends = split(i).and_then(|i| Ok((i, split(r)?)));
    let (i, r) = ends.unwrap_or_else(|e| unreachable!("a finished handshake splits: {e}"));
    (i, r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_parses_and_messages_of_every_size_round_trip() {
        let _ = params();
        let ((mut s, _), (_, mut o)) = memory_session();
        for len in [0, 1, CHUNK - 4, CHUNK - 3, CHUNK, 3 * CHUNK + 7, 16 << 20] {
            let msg: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let sealed = s.seal(&msg).unwrap();
            assert!(!sealed
                .windows(64)
                .any(|w| msg.len() >= 64 && w == &msg[..64]));
            let got = o.recv(&mut sealed.as_slice(), 16 << 20).unwrap();
            assert_eq!(got, msg, "{len} bytes");
        }
    }

    #[test]
    fn tampered_replayed_reordered_and_lost_records_are_refused() {
        let ((mut s, _), (_, o)) = memory_session();
        let a = s.seal(b"first").unwrap();
        let b = s.seal(b"second").unwrap();
        let c = s.seal(b"third").unwrap();
        let big = s.seal(&vec![3u8; 2 * CHUNK]).unwrap();
        type Case = (&'static str, Vec<u8>);
        let mut flipped = a.clone();
        flipped[7] ^= 1;
        let mut big_flipped = [a.clone(), b.clone(), c.clone(), big.clone()].concat();
        let end = big_flipped.len() - 3;
        big_flipped[end] ^= 0x80;
        let cases: [Case; 5] = [
            ("tampered", flipped),
            ("replayed", [a.clone(), a.clone()].concat()),
            ("reordered", [b.clone(), a.clone()].concat()),
            ("lost", [a.clone(), c.clone()].concat()),
            ("tampered last record", big_flipped),
        ];
        for (name, stream) in cases {
            let mut o = Opener {
                st: Arc::clone(&o.st),
                nonce: 0,
                broken: false,
                ct: Vec::new(),
            };
            let mut r = stream.as_slice();
            let mut ok = 0;
            let err = loop {
                match o.recv(&mut r, 1 << 20) {
                    Ok(_) => ok += 1,
                    Err(e) => break e,
                }
            };
            assert!(matches!(err, FrameError::Unauthentic), "{name}: {err}");
            assert!(ok <= 3, "{name}");
            assert!(matches!(
                o.recv(&mut a.as_slice(), 99),
                Err(FrameError::Unauthentic)
            ));
        }
    }

    #[test]
    fn a_wrong_psk_fails_the_first_message_and_the_prologue_binds_the_protocol() {
        let k = Key::random();
        for (pi, pr, prol_i, prol_r) in [
            (
                psk(&k, b"a"),
                psk(&Key::random(), b"a"),
                &b"x"[..],
                &b"x"[..],
            ),
            (psk(&k, b"a"), psk(&k, b"b"), b"x", b"x"),
            (psk(&k, b"a"), psk(&k, b"a"), b"x", b"y"),
        ] {
            let mut i = handshake(Role::Initiator, &pi, prol_i);
            let mut r = handshake(Role::Responder, &pr, prol_r);
            let mut wire = Vec::new();
            write_handshake(&mut wire, &mut i, b"hello").unwrap();
            assert!(matches!(
                read_handshake(&mut wire.as_slice(), &mut r).unwrap(),
                HandshakeRead::Unauthentic
            ));
        }
        let mut refusal = Vec::new();
        write_refusal(&mut refusal).unwrap();
        let mut i = handshake(Role::Initiator, &psk(&k, b"a"), b"x");
        write_handshake(&mut Vec::new(), &mut i, b"").unwrap();
        assert!(matches!(
            read_handshake(&mut refusal.as_slice(), &mut i).unwrap(),
            HandshakeRead::PeerRefused
        ));
    }

    /// A reader that returns its bytes in small pieces and times out between them.
    struct Trickle(Vec<u8>, usize, bool);

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.2 = !self.2;
            if self.2 {
                return Err(std::io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(3).min(self.0.len() - self.1);
            buf[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
            self.1 += n;
            Ok(n)
        }
    }

    #[test]
    fn a_sealed_stream_survives_timeouts_mid_record_and_refuses_a_tampered_record() {
        let ((s, _), (_, o)) = memory_session();
        let mut w = SealedWriter::new(Vec::new(), s);
        let text = vec![b'x'; STREAM_CHUNK + 10];
        w.write_all(&text).unwrap();
        w.write_all(b"tail").unwrap();
        let bytes = w.get_ref().clone();
        let mut r = SealedReader::new(Trickle(bytes.clone(), 0, false), o);
        let mut got = Vec::new();
        let mut b = [0u8; 1000];
        loop {
            match r.read(&mut b) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&b[..n]),
                Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock),
            }
        }
        assert_eq!(got, [text, b"tail".to_vec()].concat());
        // One bit flipped in the second record: its bytes never come out.
        let ((s, _), (_, o)) = memory_session();
        let mut w = SealedWriter::new(Vec::new(), s);
        w.write_all(b"first").unwrap();
        w.write_all(b"second").unwrap();
        let mut bytes = w.get_ref().clone();
        let last = bytes.len() - 20;
        bytes[last] ^= 1;
        let mut r = SealedReader::new(bytes.as_slice(), o);
        let mut got = Vec::new();
        let e = r.read_to_end(&mut got).unwrap_err();
        assert_eq!(got, b"first");
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("failed authentication"), "{e}");
    }

    #[test]
    fn an_oversized_message_is_malformed_before_it_is_read() {
        let ((mut s, _), (_, mut o)) = memory_session();
        let sealed = s.seal(&[0u8; 100]).unwrap();
        assert!(matches!(
            o.recv(&mut sealed.as_slice(), 99),
            Err(FrameError::Malformed(BadRecord::TooLong {
                len: 100,
                max: 99
            }))
        ));
    }
}
