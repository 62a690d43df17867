//! The logging channel's messages on a TCP stream, encrypted and authenticated by a Noise
//! session ([`crate::noise`]) keyed by the pair's channel key.
//!
//! Handshake (primary P connects to backup B): P sends [`MAGIC`] in clear and the first Noise
//! message; B checks that it authenticates under the channel key's PSK (else it answers an empty
//! message, logs `backup: handshake with ADDR failed: the peer does not hold this pair's channel
//! key` and waits for another primary) and answers the second; P then sends its [`Hello`] as the
//! first sealed message, and B answers, sealed, accepted or refused (with the reason). B admits
//! P only once the hello opens: Noise's first message alone could be a replay.
//!
//! Then each [`Msg`] is `type: u8` and its body, sealed as one or more records: the log (bytes
//! of the log stream of `docs/log-format.md`, plus the *horizon*: the icount the primary has
//! reached, every entry before it being in this or an earlier message; and how far the shared
//! disks are written), disk chunks, clone pages; backup to primary the [`Msg::Ack`]s (what it
//! has received, and how far it has replayed). A record tampered with, forged, replayed,
//! reordered or with one lost before it fails its tag ([`WireError::BadTag`]): the message is
//! refused whole, nothing of it is applied, and the connection is dropped.
//! The layout is in `docs/ft.md` ("The logging channel").

use crate::auth::Key;
use crate::noise::{self, FrameError, HandshakeRead, Opener, Role, Sealer};
use std::io::{BufReader, Write};
use std::net::TcpStream;

/// Largest message body: a log frame (16 MiB) and some.
pub const MAX_MSG: usize = (16 << 20) + 64;
/// What the primary sends first, in clear: the channel's protocol and version (also the Noise
/// prologue). Version 1 (`FTVMCH01`) was HMAC-tagged plain text and is refused.
pub const MAGIC: &[u8; 8] = b"FTVMCH02";
/// The PSK label of the logging channel ([`noise::psk`]).
pub const PSK_PURPOSE: &[u8] = b"ftvm-channel";

const T_LOG: u8 = 1;
const T_ACK: u8 = 2;
const T_DISK: u8 = 3;
const T_CONSOLE: u8 = 4;
const T_PAGES: u8 = 5;

/// A message of the channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    /// Log bytes and the primary's horizon.
    Log {
        /// Every entry before this icount has been sent.
        horizon: u64,
        /// Every write the guest made before this icount is on the shared disks.
        released: u64,
        /// The next bytes of the log stream.
        bytes: Vec<u8>,
    },
    /// Part of a disk image, sent before the log with non-shared disks so that the backup's
    /// image starts equal to the primary's.
    DiskChunk {
        /// Which drive (`--drive` order).
        drive: u32,
        /// The image's size.
        total: u64,
        /// Where this part goes.
        offset: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// Sent before the log by a primary protected anew, whose guest has run: where the
    /// console's streams stand, so that the backup's endpoint continues them (client offsets
    /// stay valid across the next failover).
    Console {
        /// Input bytes the guest has taken.
        in_taken: u64,
        /// The output stream's offset of `tail[0]`.
        out_base: u64,
        /// The last output released to clients (so that a client behind by that much can
        /// still resume on the new backup once it is live).
        tail: Vec<u8>,
    },
    /// A batch of RAM pages of a live clone (see [`crate::clone`]), sent before the log while
    /// the guest runs on.
    Pages {
        /// The clone's id: the delta that completes the copy names it.
        clone: u64,
        /// The guest's RAM size.
        mem_size: u64,
        /// The copy round (0: every non-zero page; then the pages written meanwhile).
        round: u32,
        /// The pages, LZ4-compressed (see [`crate::clone::decode_batch`]).
        data: Vec<u8>,
    },
    /// The backup's acknowledgement.
    Ack {
        /// Log entries received (decoded) so far.
        entries: u64,
        /// The highest horizon received.
        horizon: u64,
        /// The icount the backup has replayed to.
        replayed: u64,
    },
}

/// Why the channel failed.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// the connection failed or closed
    #[error("the connection failed: {0}")]
    Io(#[from] std::io::Error),
    /// the peer closed the connection
    #[error("the peer closed the connection")]
    Closed,
    /// a record failed its tag: tampered with, forged, replayed, reordered or one lost before
    #[error(
        "a frame failed authentication (tampered with, forged, replayed, reordered or one lost \
         before it): nothing of it was applied, connection dropped"
    )]
    BadTag,
    /// a message is malformed
    #[error("malformed message: {0}")]
    Malformed(BadMessage),
    /// the Noise state refused a step (see [`noise::FrameError::Noise`])
    #[error("{during}: {source}")]
    Noise {
        /// The step.
        during: noise::NoiseStep,
        /// What `snow` said.
        source: snow::Error,
    },
    /// the handshake failed: who we are, with whom, and why
    #[error("{side}: handshake with {peer} failed: {why}")]
    Handshake {
        /// `primary` or `backup`.
        side: &'static str,
        /// The peer's address.
        peer: String,
        /// Why.
        why: HandshakeFailure,
    },
    /// the backup authenticated us and refused to pair (the two sides' settings disagree).
    /// The text is the backup's, sent over the channel (at most 300 characters): it names
    /// what the backup's settings say, which this side cannot list in advance.
    #[error("the backup refused to pair: {0}")]
    Refused(String),
}

/// How an authenticated message can be malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadMessage {
    /// shorter than its type needs
    #[error("short message")]
    Short,
    /// no message type has this number
    #[error("message type {0}")]
    UnknownType(u8),
    /// no bytes at all
    #[error("empty message")]
    Empty,
    /// its records were malformed
    #[error("{0}")]
    Record(noise::BadRecord),
}

/// How a hello can be malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadHello {
    /// shorter than its fixed part
    #[error("a short hello")]
    Short,
    /// a disk mode no version has
    #[error("disk mode {0}")]
    DiskMode(u8),
    /// the VM's name is not UTF-8
    #[error("a VM name not in UTF-8")]
    NameNotUtf8,
}

/// Why a handshake failed ([`WireError::Handshake`]), on the primary's side or the backup's.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeFailure {
    /// (primary) the backup refused our first message: it does not hold our key
    #[error(
        "the backup does not hold this pair's channel key: it could not authenticate us \
         (check that both sides use the same --key-file)"
    )]
    BackupLacksKey,
    /// (primary) the answer does not authenticate under our key
    #[error(
        "the peer's answer does not authenticate under this pair's channel key (not our \
         backup?)"
    )]
    AnswerUnauthentic,
    /// (primary) the peer closed on our encrypted hello
    #[error(
        "the peer hung up on our encrypted hello (an ftvm backup of an older version, which \
         speaks only the plain-text channel, or not an ftvm backup)"
    )]
    HungUpOnHello,
    /// (primary) no answer to our hello
    #[error("no answer to our hello under this pair's channel key: {0}")]
    NoAnswer(noise::FrameError),
    /// (primary) the answer is neither an acceptance nor a refusal
    #[error("the backup answered nonsense")]
    NonsenseAnswer,
    /// (backup) the peer closed before its magic
    #[error("the peer hung up before saying who it is")]
    HungUpBeforeMagic,
    /// (backup) the peer speaks the plain-text channel of older versions
    #[error(
        "the peer speaks the old plain-text channel (FTVMCH01): refused, this backup accepts \
         only the encrypted channel {} (upgrade the primary)",
        String::from_utf8_lossy(MAGIC)
    )]
    PlainTextPeer,
    /// (backup) the peer opened with another magic
    #[error(
        "the peer is not an ftvm primary of this version (it opened with {0:02x?}, not {magic})",
        magic = String::from_utf8_lossy(MAGIC)
    )]
    NotFtvm([u8; 8]),
    /// (backup) the peer's first message does not authenticate under our key
    #[error(
        "the peer does not hold this pair's channel key (check that both sides use the same \
         --key-file)"
    )]
    PeerLacksKey,
    /// (backup) no hello after the handshake
    #[error(
        "no hello under this pair's channel key after the handshake (a replayed first \
         message?): {0}"
    )]
    NoHello(noise::FrameError),
    /// (backup) the hello is malformed
    #[error("{0}")]
    BadHello(BadHello),
    /// (either) reading the peer's handshake message failed
    #[error("{0}")]
    Frame(noise::FrameError),
}

impl From<FrameError> for WireError {
    fn from(e: FrameError) -> WireError {
        match e {
            FrameError::Io(e) => WireError::Io(e),
            FrameError::Closed => WireError::Closed,
            FrameError::Unauthentic => WireError::BadTag,
            FrameError::Malformed(m) => WireError::Malformed(BadMessage::Record(m)),
            FrameError::Noise { during, source } => WireError::Noise { during, source },
        }
    }
}

impl Msg {
    pub(crate) fn encode(&self) -> Vec<u8> {
        match self {
            Msg::Log {
                horizon,
                released,
                bytes,
            } => {
                let mut v = Vec::with_capacity(17 + bytes.len());
                v.push(T_LOG);
                v.extend_from_slice(&horizon.to_le_bytes());
                v.extend_from_slice(&released.to_le_bytes());
                v.extend_from_slice(bytes);
                v
            }
            Msg::DiskChunk {
                drive,
                total,
                offset,
                data,
            } => {
                let mut v = Vec::with_capacity(21 + data.len());
                v.push(T_DISK);
                v.extend_from_slice(&drive.to_le_bytes());
                v.extend_from_slice(&total.to_le_bytes());
                v.extend_from_slice(&offset.to_le_bytes());
                v.extend_from_slice(data);
                v
            }
            Msg::Console {
                in_taken,
                out_base,
                tail,
            } => {
                let mut v = Vec::with_capacity(17 + tail.len());
                v.push(T_CONSOLE);
                v.extend_from_slice(&in_taken.to_le_bytes());
                v.extend_from_slice(&out_base.to_le_bytes());
                v.extend_from_slice(tail);
                v
            }
            Msg::Pages {
                clone,
                mem_size,
                round,
                data,
            } => {
                let mut v = Vec::with_capacity(21 + data.len());
                v.push(T_PAGES);
                v.extend_from_slice(&clone.to_le_bytes());
                v.extend_from_slice(&mem_size.to_le_bytes());
                v.extend_from_slice(&round.to_le_bytes());
                v.extend_from_slice(data);
                v
            }
            Msg::Ack {
                entries,
                horizon,
                replayed,
            } => {
                let mut v = vec![T_ACK];
                for x in [entries, horizon, replayed] {
                    v.extend_from_slice(&x.to_le_bytes());
                }
                v
            }
        }
    }

    pub(crate) fn decode(b: &[u8]) -> Result<Msg, WireError> {
        let u64_at = |i: usize| -> Result<u64, WireError> {
            b.get(i..i + 8)
                .and_then(|s| s.try_into().ok())
                .map(u64::from_le_bytes)
                .ok_or(WireError::Malformed(BadMessage::Short))
        };
        match b.first() {
            Some(&T_LOG) => Ok(Msg::Log {
                horizon: u64_at(1)?,
                released: u64_at(9)?,
                bytes: b[17..].to_vec(),
            }),
            Some(&T_DISK) if b.len() >= 21 => Ok(Msg::DiskChunk {
                drive: u32::from_le_bytes(
                    b[1..5]
                        .try_into()
                        .map_err(|_| WireError::Malformed(BadMessage::Short))?,
                ),
                total: u64_at(5)?,
                offset: u64_at(13)?,
                data: b[21..].to_vec(),
            }),
            Some(&T_CONSOLE) if b.len() >= 17 => Ok(Msg::Console {
                in_taken: u64_at(1)?,
                out_base: u64_at(9)?,
                tail: b[17..].to_vec(),
            }),
            Some(&T_PAGES) if b.len() >= 21 => Ok(Msg::Pages {
                clone: u64_at(1)?,
                mem_size: u64_at(9)?,
                round: u32::from_le_bytes(
                    b[17..21]
                        .try_into()
                        .map_err(|_| WireError::Malformed(BadMessage::Short))?,
                ),
                data: b[21..].to_vec(),
            }),
            Some(&T_ACK) if b.len() == 25 => Ok(Msg::Ack {
                entries: u64_at(1)?,
                horizon: u64_at(9)?,
                replayed: u64_at(17)?,
            }),
            Some(t) if [T_LOG, T_ACK, T_DISK, T_CONSOLE, T_PAGES].contains(t) => {
                Err(WireError::Malformed(BadMessage::Short))
            }
            Some(t) => Err(WireError::Malformed(BadMessage::UnknownType(*t))),
            None => Err(WireError::Malformed(BadMessage::Empty)),
        }
    }
}

/// Sends sealed messages.
pub struct MsgWriter {
    stream: TcpStream,
    sealer: Sealer,
    /// The records of the last message (the allocation is reused).
    buf: Vec<u8>,
}

/// Receives sealed messages.
pub struct MsgReader {
    stream: BufReader<TcpStream>,
    opener: Opener,
    binding: [u8; 32],
}

impl MsgWriter {
    /// Sends one message.
    pub fn send(&mut self, m: &Msg) -> Result<(), WireError> {
        self.sealer
            .send_with(&mut self.stream, &m.encode(), &mut self.buf)?;
        Ok(())
    }

    /// A second handle on the stream (to shut it down from another thread).
    pub fn stream_clone(&self) -> std::io::Result<TcpStream> {
        self.stream.try_clone()
    }

    /// Closes both directions (the reader on the other thread sees the end).
    pub fn shutdown(&self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

impl MsgReader {
    /// The session's handshake hash ([`noise::binding`]): what the heartbeats of this session
    /// are keyed by.
    pub fn binding(&self) -> [u8; 32] {
        self.binding
    }

    /// Waits for the next message: it is returned only once every record of it has opened.
    pub fn recv(&mut self) -> Result<Msg, WireError> {
        let body = self.opener.recv(&mut self.stream, MAX_MSG)?;
        Msg::decode(&body)
    }
}

/// What the primary tells the backup in the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The VM's name (the arbiter's key).
    pub vm: String,
    /// The arbiter generation the pair runs under.
    pub generation: u64,
    /// Whether each side has its own disk images (else they share them).
    pub non_shared: bool,
    /// Shared disks only: the backup reads the disk itself (`--disk-reads own`), the log
    /// carries each read's digest instead of its data.
    pub disk_reads_own: bool,
}

impl Hello {
    /// The disk-mode byte of the first handshake message: 0 shared disks with reads in the
    /// log, 1 non-shared disks, 2 shared disks that the backup reads itself.
    fn disk_mode(&self) -> u8 {
        match (self.non_shared, self.disk_reads_own) {
            (true, _) => 1,
            (false, false) => 0,
            (false, true) => 2,
        }
    }

    /// How this side's disks are set up, for messages: `--disk-mode ... --disk-reads ...`.
    pub fn describe_disks(&self) -> &'static str {
        match self.disk_mode() {
            1 => "--disk-mode non-shared",
            2 => "--disk-mode shared --disk-reads own",
            _ => "--disk-mode shared --disk-reads log",
        }
    }
}

/// The backup's answer to the hello: paired.
const ACCEPTED: u8 = 1;
/// The backup's answer to the hello: refused, the reason follows.
const REFUSED: u8 = 2;
/// Largest hello (and refusal) message.
const MAX_HELLO: usize = 1024;

impl Hello {
    fn encode(&self) -> Vec<u8> {
        let mut v = self.generation.to_le_bytes().to_vec();
        v.push(self.disk_mode());
        v.extend_from_slice(self.vm.as_bytes());
        v
    }

    fn decode(b: &[u8]) -> Result<Hello, BadHello> {
        let generation = b
            .get(..8)
            .and_then(|g| g.try_into().ok())
            .map(u64::from_le_bytes)
            .ok_or(BadHello::Short)?;
        let mode = *b.get(8).ok_or(BadHello::Short)?;
        let (non_shared, disk_reads_own) = match mode {
            0 => (false, false),
            1 => (true, false),
            2 => (false, true),
            m => return Err(BadHello::DiskMode(m)),
        };
        let vm = String::from_utf8(b[9..].to_vec()).map_err(|_| BadHello::NameNotUtf8)?;
        Ok(Hello {
            vm,
            generation,
            non_shared,
            disk_reads_own,
        })
    }
}

fn peer_of(s: &TcpStream) -> String {
    s.peer_addr()
        .map_or_else(|_| "(unknown peer)".into(), |a| a.to_string())
}

/// The two halves of a channel after its handshake: a writer on `s`, a buffered reader on a
/// clone of it.
fn halves(
    s: TcpStream,
    sealer: Sealer,
    opener: Opener,
    binding: [u8; 32],
) -> Result<(MsgWriter, MsgReader), WireError> {
    s.set_nodelay(true)?;
    let r = s.try_clone()?;
    Ok((
        MsgWriter {
            stream: s,
            sealer,
            buf: Vec::new(),
        },
        MsgReader {
            stream: BufReader::with_capacity(1 << 17, r),
            opener,
            binding,
        },
    ))
}

/// The primary's side of the handshake on a connected stream.
pub fn connect_handshake(
    mut s: TcpStream,
    key: &Key,
    hello: &Hello,
) -> Result<(MsgWriter, MsgReader), WireError> {
    let peer = peer_of(&s);
    let fail = |why: HandshakeFailure| WireError::Handshake {
        side: "primary",
        peer: peer.clone(),
        why,
    };
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    s.write_all(MAGIC)?;
    let mut hs = noise::handshake(Role::Initiator, &noise::psk(key, PSK_PURPOSE), MAGIC);
    noise::write_handshake(&mut s, &mut hs, &[])?;
    match noise::read_handshake(&mut s, &mut hs) {
        Ok(HandshakeRead::Payload(_)) => {}
        Ok(HandshakeRead::PeerRefused) => return Err(fail(HandshakeFailure::BackupLacksKey)),
        Ok(HandshakeRead::Unauthentic) => return Err(fail(HandshakeFailure::AnswerUnauthentic)),
        Err(FrameError::Closed) => return Err(fail(HandshakeFailure::HungUpOnHello)),
        Err(e) => return Err(fail(HandshakeFailure::Frame(e))),
    }
    let binding = noise::binding(&hs);
    let (mut sealer, opener) = noise::split(hs)?;
    sealer.send(&mut s, &hello.encode())?;
    let (w, mut r) = halves(s, sealer, opener, binding)?;
    let answer = r
        .opener
        .recv(&mut r.stream, MAX_HELLO)
        .map_err(|e| fail(HandshakeFailure::NoAnswer(e)))?;
    match answer.first() {
        Some(&ACCEPTED) => {}
        Some(&REFUSED) => {
            return Err(WireError::Refused(
                String::from_utf8_lossy(&answer[1..]).into_owned(),
            ))
        }
        _ => return Err(fail(HandshakeFailure::NonsenseAnswer)),
    }
    w.stream.set_read_timeout(None)?;
    Ok((w, r))
}

/// The backup's side of the handshake on an accepted stream.
pub fn accept_handshake(
    s: TcpStream,
    key: &Key,
) -> Result<(Hello, MsgWriter, MsgReader), WireError> {
    accept_handshake_checked(s, key, |_| None)
}

/// [`accept_handshake`], refusing an authenticated primary whose [`Hello`] `check` finds
/// wrong: the primary is told why (its handshake fails with [`WireError::Refused`] and that
/// text), and so is the caller (the same error).
pub fn accept_handshake_checked(
    mut s: TcpStream,
    key: &Key,
    check: impl Fn(&Hello) -> Option<String>,
) -> Result<(Hello, MsgWriter, MsgReader), WireError> {
    let peer = peer_of(&s);
    let fail = |why: HandshakeFailure| WireError::Handshake {
        side: "backup",
        peer: peer.clone(),
        why,
    };
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    let mut magic = [0u8; 8];
    std::io::Read::read_exact(&mut s, &mut magic)
        .map_err(|_| fail(HandshakeFailure::HungUpBeforeMagic))?;
    if &magic[2..8] == b"FTVMCH" {
        return Err(fail(HandshakeFailure::PlainTextPeer));
    }
    if &magic != MAGIC {
        return Err(fail(HandshakeFailure::NotFtvm(magic)));
    }
    let mut hs = noise::handshake(Role::Responder, &noise::psk(key, PSK_PURPOSE), MAGIC);
    match noise::read_handshake(&mut s, &mut hs).map_err(|e| fail(HandshakeFailure::Frame(e)))? {
        HandshakeRead::Payload(_) => {}
        HandshakeRead::PeerRefused | HandshakeRead::Unauthentic => {
            let _ = noise::write_refusal(&mut s);
            return Err(fail(HandshakeFailure::PeerLacksKey));
        }
    }
    noise::write_handshake(&mut s, &mut hs, &[])?;
    let binding = noise::binding(&hs);
    let (sealer, opener) = noise::split(hs)?;
    let (mut w, mut r) = halves(s, sealer, opener, binding)?;
    let hello = r
        .opener
        .recv(&mut r.stream, MAX_HELLO)
        .map_err(|e| fail(HandshakeFailure::NoHello(e)))?;
    let hello = Hello::decode(&hello).map_err(|e| fail(HandshakeFailure::BadHello(e)))?;
    if let Some(why) = check(&hello) {
        // Only an authenticated primary is told.
        let why: String = why.chars().take(300).collect();
        let mut m = vec![REFUSED];
        m.extend_from_slice(why.as_bytes());
        let _ = w.sealer.send(&mut w.stream, &m);
        return Err(WireError::Refused(why));
    }
    w.sealer.send(&mut w.stream, &[ACCEPTED])?;
    w.stream.set_read_timeout(None)?;
    Ok((hello, w, r))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    type Sides = (
        Result<(MsgWriter, MsgReader), WireError>,
        Result<(Hello, MsgWriter, MsgReader), WireError>,
    );

    fn pair(kp: Key, kb: Key) -> Sides {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            accept_handshake(s, &kb)
        });
        let hello = Hello {
            vm: "vm0".into(),
            generation: 3,
            non_shared: true,
            disk_reads_own: false,
        };
        let p = connect_handshake(TcpStream::connect(addr).unwrap(), &kp, &hello);
        (p, t.join().unwrap())
    }

    #[test]
    fn same_key_talks_both_ways() {
        let k = Key::random();
        let (p, b) = pair(k.clone(), k);
        let (mut pw, mut pr) = p.unwrap();
        let (hello, mut bw, mut br) = b.unwrap();
        assert_eq!(hello.vm, "vm0");
        assert_eq!(hello.generation, 3);
        assert!(hello.non_shared);
        let m = Msg::Log {
            horizon: 42,
            released: 0,
            bytes: vec![1, 2, 3],
        };
        pw.send(&m).unwrap();
        assert_eq!(br.recv().unwrap(), m);
        let a = Msg::Ack {
            entries: 1,
            horizon: 42,
            replayed: 40,
        };
        bw.send(&a).unwrap();
        assert_eq!(pr.recv().unwrap(), a);
    }

    #[test]
    fn disk_modes_travel_and_a_mismatch_is_refused_with_the_reason_on_both_sides() {
        for (non_shared, own) in [(false, false), (true, false), (false, true)] {
            let k = Key::random();
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = l.local_addr().unwrap();
            let kb = k.clone();
            let t = std::thread::spawn(move || {
                let (s, _) = l.accept().unwrap();
                accept_handshake_checked(s, &kb, |h| {
                    (h.disk_reads_own != own || h.non_shared != non_shared)
                        .then(|| format!("it runs {}", h.describe_disks()))
                })
            });
            let hello = Hello {
                vm: "vm0".into(),
                generation: 1,
                non_shared,
                disk_reads_own: own,
            };
            let p = connect_handshake(TcpStream::connect(addr).unwrap(), &k, &hello);
            let (h, ..) = t.join().unwrap().unwrap();
            assert!(p.is_ok());
            assert_eq!((h.non_shared, h.disk_reads_own), (non_shared, own));
        }
        let k = Key::random();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let kb = k.clone();
        let t = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            accept_handshake_checked(s, &kb, |h| {
                h.disk_reads_own
                    .then(|| "the backup logs disk reads, the primary reads its own".into())
            })
        });
        let hello = Hello {
            vm: "vm0".into(),
            generation: 1,
            non_shared: false,
            disk_reads_own: true,
        };
        let p = connect_handshake(TcpStream::connect(addr).unwrap(), &k, &hello);
        let b = t.join().unwrap();
        for e in [p.err().unwrap(), b.err().unwrap()] {
            assert!(
                matches!(&e, WireError::Refused(w) if w.contains("reads its own")),
                "{e}"
            );
        }
    }

    #[test]
    fn every_message_decodes_to_itself_and_short_ones_are_malformed() {
        let all = [
            Msg::Log {
                horizon: 7,
                released: 3,
                bytes: vec![1, 2, 3],
            },
            Msg::DiskChunk {
                drive: 1,
                total: 4096,
                offset: 512,
                data: vec![9; 10],
            },
            Msg::Console {
                in_taken: 12,
                out_base: 345,
                tail: b"login: ".to_vec(),
            },
            Msg::Pages {
                clone: 0xfeed,
                mem_size: 1 << 28,
                round: 2,
                data: vec![5; 40],
            },
            Msg::Ack {
                entries: 1,
                horizon: 2,
                replayed: 3,
            },
        ];
        for m in all {
            let b = m.encode();
            assert_eq!(Msg::decode(&b).unwrap(), m);
            assert!(Msg::decode(&b[..16]).is_err(), "{m:?} cut short");
        }
        assert!(Msg::decode(&[T_CONSOLE, 1, 2]).is_err());
        let cause = |b: &[u8]| match Msg::decode(b) {
            Err(WireError::Malformed(m)) => m,
            other => panic!("{b:?} decoded to {other:?}"),
        };
        assert_eq!(cause(&[]), BadMessage::Empty);
        assert_eq!(cause(&[99, 0, 0]), BadMessage::UnknownType(99));
        for t in [T_LOG, T_ACK, T_DISK, T_CONSOLE, T_PAGES] {
            assert_eq!(cause(&[t, 1, 2]), BadMessage::Short, "type {t}");
        }
        assert_eq!(
            WireError::Malformed(BadMessage::UnknownType(99)).to_string(),
            "malformed message: message type 99"
        );
    }

    #[test]
    fn a_hello_decodes_to_itself_and_bad_ones_say_why() {
        let h = Hello {
            vm: "vm0".into(),
            generation: 9,
            non_shared: true,
            disk_reads_own: false,
        };
        assert_eq!(Hello::decode(&h.encode()), Ok(h.clone()));
        let b = h.encode();
        assert_eq!(Hello::decode(&b[..8]), Err(BadHello::Short));
        let mut m = b.clone();
        m[8] = 7;
        assert_eq!(Hello::decode(&m), Err(BadHello::DiskMode(7)));
        let mut n = b;
        n.push(0xff);
        assert_eq!(Hello::decode(&n), Err(BadHello::NameNotUtf8));
    }

    #[test]
    fn wrong_key_is_refused_on_both_sides_with_who_and_why() {
        let (p, b) = pair(Key::random(), Key::random());
        let (p, b) = (p.err().unwrap(), b.err().unwrap());
        assert!(
            matches!(
                (&p, &b),
                (
                    WireError::Handshake {
                        why: HandshakeFailure::BackupLacksKey,
                        ..
                    },
                    WireError::Handshake {
                        why: HandshakeFailure::PeerLacksKey,
                        ..
                    }
                )
            ),
            "{p:?} / {b:?}"
        );
        let (p, b) = (p.to_string(), b.to_string());
        assert!(
            p.starts_with("primary: handshake with 127.0.0.1:")
                && p.contains("the backup does not hold this pair's channel key"),
            "{p}"
        );
        assert!(
            b.starts_with("backup: handshake with 127.0.0.1:")
                && b.contains("the peer does not hold this pair's channel key"),
            "{b}"
        );
    }

    /// A backup whose accepted stream gets `bytes` from a raw client; its error.
    fn backup_refuses(bytes: &[u8]) -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || accept_handshake(l.accept().unwrap().0, &Key::random()));
        let mut s = TcpStream::connect(addr).unwrap();
        // The backup may hang up before it has read everything (it refuses at the magic).
        let _ = s.write_all(bytes);
        let _ = s.shutdown(std::net::Shutdown::Write);
        // Nothing but a refusal comes back (an empty handshake message at most).
        let mut back = Vec::new();
        let _ = std::io::Read::read_to_end(&mut s, &mut back);
        assert!(back.is_empty() || back == [0, 0], "{back:?}");
        t.join().unwrap().err().unwrap().to_string()
    }

    #[test]
    fn a_plain_text_primary_and_garbage_are_refused() {
        // The version 1 hello: len, FTVMCH01, a nonce, generation, disk mode, name.
        let mut old = vec![0u8, 55];
        old.extend_from_slice(b"FTVMCH01");
        old.extend_from_slice(&[7; 32 + 9]);
        old.extend_from_slice(b"testvm");
        let e = backup_refuses(&old);
        assert!(e.contains("old plain-text channel"), "{e}");
        let e = backup_refuses(b"GET / HTTP/1.1\r\n\r\n");
        assert!(e.contains("not an ftvm primary"), "{e}");
        let mut noise_garbage = MAGIC.to_vec();
        noise_garbage.extend_from_slice(&[0, 48]);
        noise_garbage.extend_from_slice(&[1; 48]);
        let e = backup_refuses(&noise_garbage);
        assert!(e.contains("does not hold this pair's channel key"), "{e}");
    }

    #[test]
    fn a_replayed_first_message_does_not_pair() {
        // An eavesdropper replays a real primary's opening to the backup: the backup answers,
        // but the replayer cannot seal the hello, so it is never admitted.
        let k = Key::random();
        let mut i = noise::handshake(Role::Initiator, &noise::psk(&k, PSK_PURPOSE), MAGIC);
        let mut opening = MAGIC.to_vec();
        noise::write_handshake(&mut opening, &mut i, &[]).unwrap();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let kb = k.clone();
        let t = std::thread::spawn(move || accept_handshake(l.accept().unwrap().0, &kb));
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(&opening).unwrap();
        // A hello sealed under a session the replayer made up.
        let ((mut forged, _), _) = noise::memory_session();
        let mut hs_reply = [0u8; 2];
        std::io::Read::read_exact(&mut s, &mut hs_reply).unwrap();
        forged.send(&mut s, &[0; 9]).unwrap();
        let e = t.join().unwrap().err().unwrap().to_string();
        assert!(
            e.contains("backup: handshake with") && e.contains("no hello"),
            "{e}"
        );
    }

    /// A channel's two ends over TCP, for the frame tests.
    fn connected() -> (MsgWriter, MsgReader, MsgWriter, MsgReader) {
        let k = Key::random();
        let (p, b) = pair(k.clone(), k);
        let (pw, pr) = p.unwrap();
        let (_, bw, br) = b.unwrap();
        (pw, pr, bw, br)
    }

    fn log(h: u64, n: usize) -> Msg {
        Msg::Log {
            horizon: h,
            released: 0,
            bytes: vec![h as u8; n],
        }
    }

    #[test]
    fn a_forged_message_drops_the_connection() {
        let (pw, _pr, _bw, mut br) = connected();
        // A message sealed under another session, written straight on the stream.
        let ((mut forger, _), _) = noise::memory_session();
        let mut s = pw.stream_clone().unwrap();
        forger.send(&mut s, &log(1, 1).encode()).unwrap();
        assert!(matches!(br.recv(), Err(WireError::BadTag)));
        // And the channel stays broken.
        assert!(matches!(br.recv(), Err(WireError::BadTag)));
    }

    #[test]
    fn tampered_replayed_and_reordered_frames_are_refused_and_nothing_is_applied() {
        // (name, how the sealed frames 1..=3 are put on the stream); frame 1 arrives intact.
        type Mangle = fn(&[Vec<u8>]) -> Vec<u8>;
        let cases: [(&str, Mangle); 4] = [
            ("tampered", |f| {
                let mut two = f[1].clone();
                let at = two.len() / 2;
                two[at] ^= 1;
                [f[0].clone(), two, f[2].clone()].concat()
            }),
            ("replayed", |f| [f[0].clone(), f[0].clone()].concat()),
            ("reordered", |f| {
                [f[0].clone(), f[2].clone(), f[1].clone()].concat()
            }),
            ("lost", |f| [f[0].clone(), f[2].clone()].concat()),
        ];
        for (name, mangle) in cases {
            let (mut pw, _pr, _bw, mut br) = connected();
            // A large frame (several records: clone-page sized) among small ones.
            let msgs = [log(1, 10), log(2, 200_000), log(3, 10)];
            let sealed: Vec<Vec<u8>> = msgs
                .iter()
                .map(|m| pw.sealer.seal(&m.encode()).unwrap())
                .collect();
            let bytes = mangle(&sealed);
            let t = std::thread::spawn(move || pw.stream.write_all(&bytes));
            assert_eq!(br.recv().unwrap(), msgs[0], "{name}");
            let e = br.recv();
            assert!(matches!(e, Err(WireError::BadTag)), "{name}: {e:?}");
            assert!(e
                .unwrap_err()
                .to_string()
                .contains("nothing of it was applied"));
            drop(br);
            let _ = t.join().unwrap();
        }
    }

    #[test]
    fn clone_sized_messages_cross_in_many_records_and_nothing_is_in_clear() {
        let (mut pw, _pr, _bw, mut br) = connected();
        let secret = b"guest memory that must not cross in clear".repeat(100_000);
        let m = Msg::Pages {
            clone: 1,
            mem_size: 1 << 28,
            round: 0,
            data: secret.clone(),
        };
        let sealed = pw.sealer.seal(&m.encode()).unwrap();
        assert!(sealed.len() > secret.len() + 60 * (2 + noise::TAG_LEN));
        assert!(!sealed.windows(41).any(|w| w == &secret[..41]));
        // Larger than the socket's buffers: written while the reader reads.
        let t = std::thread::spawn(move || pw.stream.write_all(&sealed));
        assert_eq!(br.recv().unwrap(), m);
        t.join().unwrap().unwrap();
    }

    #[test]
    fn garbage_lengths_are_refused_not_allocations() {
        let (mut pw, _pr, _bw, mut br) = connected();
        pw.stream.write_all(&[0, 3, 1, 2, 3]).unwrap();
        assert!(matches!(br.recv(), Err(WireError::BadTag)));
    }
}
