//! The logging channel's messages on a TCP stream, after the handshake of [`crate::auth`].
//!
//! A message is `len: u32 BE` (of what follows, tag excluded), `type: u8`, the body, then a
//! [`TAG_LEN`]-byte tag. Primary to backup: [`Msg::Log`] (bytes of the log stream of
//! `docs/log-format.md`, plus the *horizon*: the icount the primary has reached, every entry
//! before it being in this or an earlier message; and how far the shared disks are written). Backup to primary: [`Msg::Ack`] (what it has
//! received, and how far it has replayed).

use crate::auth::{self, Key, Tagger, NONCE_LEN, TAG_LEN};
use std::io::{Read, Write};
use std::net::TcpStream;

/// Largest message body: a log frame (16 MiB) and some.
pub const MAX_MSG: usize = (16 << 20) + 64;
/// What the handshake's first message starts with (and the channel's version).
pub const MAGIC: &[u8; 8] = b"FTVMCH01";

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
    /// a message's tag is wrong: corrupted, forged or replayed
    #[error("a message failed authentication (corrupted or forged): connection dropped")]
    BadTag,
    /// a message is malformed
    #[error("malformed message: {0}")]
    Malformed(String),
    /// the handshake failed
    #[error("authentication failed: {0}")]
    Auth(String),
    /// the backup authenticated us and refused to pair (the two sides' settings disagree)
    #[error("the backup refused to pair: {0}")]
    Refused(String),
}

impl Msg {
    fn encode(&self) -> Vec<u8> {
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

    fn decode(b: &[u8]) -> Result<Msg, WireError> {
        let u64_at = |i: usize| -> Result<u64, WireError> {
            b.get(i..i + 8)
                .and_then(|s| s.try_into().ok())
                .map(u64::from_le_bytes)
                .ok_or_else(|| WireError::Malformed("short message".into()))
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
                        .map_err(|_| WireError::Malformed("short message".into()))?,
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
                        .map_err(|_| WireError::Malformed("short message".into()))?,
                ),
                data: b[21..].to_vec(),
            }),
            Some(&T_ACK) if b.len() == 25 => Ok(Msg::Ack {
                entries: u64_at(1)?,
                horizon: u64_at(9)?,
                replayed: u64_at(17)?,
            }),
            Some(t) => Err(WireError::Malformed(format!("message type {t}"))),
            None => Err(WireError::Malformed("empty message".into())),
        }
    }
}

/// Sends tagged messages.
pub struct MsgWriter {
    stream: TcpStream,
    tagger: Tagger,
}

/// Receives tagged messages.
pub struct MsgReader {
    stream: TcpStream,
    tagger: Tagger,
}

/// One message as it goes on a channel: `len: u32 BE`, the body, its tag (the next in
/// `tagger`'s sequence). Every transport ([`crate::transport`]) carries these bytes.
pub(crate) fn frame(tagger: &mut Tagger, m: &Msg) -> Result<Vec<u8>, WireError> {
    let body = m.encode();
    let tag = tagger.tag(&body);
    let len = u32::try_from(body.len()).map_err(|_| WireError::Malformed("too long".into()))?;
    let mut buf = Vec::with_capacity(4 + body.len() + TAG_LEN);
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(&body);
    buf.extend_from_slice(&tag);
    Ok(buf)
}

/// The length a frame's first four bytes announce, checked before anything is allocated.
pub(crate) fn frame_len(head: [u8; 4]) -> Result<usize, WireError> {
    let len = u32::from_be_bytes(head) as usize;
    if len == 0 || len > MAX_MSG {
        return Err(WireError::Malformed(format!("length {len}")));
    }
    Ok(len)
}

/// Checks the tag of a frame's body and tag (`len` bytes of body, then the tag) against the
/// next in `tagger`'s sequence, and decodes it: a corrupted, forged, replayed, lost-before or
/// reordered message fails here.
pub(crate) fn unframe(
    tagger: &mut Tagger,
    mut body: Vec<u8>,
    len: usize,
) -> Result<Msg, WireError> {
    if body.len() != len + TAG_LEN {
        return Err(WireError::Malformed(format!(
            "a frame of {} bytes announced {len}",
            body.len().saturating_sub(TAG_LEN)
        )));
    }
    let tag = body.split_off(len);
    if !auth::equal(&tag, &tagger.tag(&body)) {
        return Err(WireError::BadTag);
    }
    Msg::decode(&body)
}

impl MsgWriter {
    /// Sends one message.
    pub fn send(&mut self, m: &Msg) -> Result<(), WireError> {
        let buf = frame(&mut self.tagger, m)?;
        self.stream.write_all(&buf)?;
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

fn read_exact_or_closed(s: &mut TcpStream, buf: &mut [u8]) -> Result<(), WireError> {
    s.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => WireError::Closed,
        _ => WireError::Io(e),
    })
}

impl MsgReader {
    /// Waits for the next message.
    pub fn recv(&mut self) -> Result<Msg, WireError> {
        let mut head = [0u8; 4];
        read_exact_or_closed(&mut self.stream, &mut head)?;
        let len = frame_len(head)?;
        let mut body = vec![0u8; len + TAG_LEN];
        read_exact_or_closed(&mut self.stream, &mut body)?;
        unframe(&mut self.tagger, body, len)
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

/// The backup's answer after the proofs: paired.
const ACCEPTED: u8 = 1;
/// The backup's answer after the proofs: refused, a block with the reason follows.
const REFUSED: u8 = 2;

fn read_block(s: &mut TcpStream, max: usize) -> Result<Vec<u8>, WireError> {
    let mut len = [0u8; 2];
    read_exact_or_closed(s, &mut len)?;
    let len = usize::from(u16::from_be_bytes(len));
    if len > max {
        return Err(WireError::Auth(format!("handshake block of {len} bytes")));
    }
    let mut b = vec![0u8; len];
    read_exact_or_closed(s, &mut b)?;
    Ok(b)
}

fn write_block(s: &mut TcpStream, b: &[u8]) -> Result<(), WireError> {
    let len = u16::try_from(b.len()).map_err(|_| WireError::Auth("block too long".into()))?;
    let mut v = len.to_be_bytes().to_vec();
    v.extend_from_slice(b);
    s.write_all(&v)?;
    Ok(())
}

fn split(
    stream: TcpStream,
    key: &Key,
    np: &[u8],
    nb: &[u8],
    out_dir: u8,
) -> Result<(MsgWriter, MsgReader), WireError> {
    stream.set_nodelay(true)?;
    let r = stream.try_clone()?;
    Ok((
        MsgWriter {
            stream,
            tagger: Tagger::new(key, np, nb, out_dir),
        },
        MsgReader {
            stream: r,
            tagger: Tagger::new(key, np, nb, 1 - out_dir),
        },
    ))
}

/// The primary's side of the handshake on a connected stream.
pub fn connect_handshake(
    mut s: TcpStream,
    key: &Key,
    hello: &Hello,
) -> Result<(MsgWriter, MsgReader), WireError> {
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    let np = auth::nonce();
    let mut first = MAGIC.to_vec();
    first.extend_from_slice(&np);
    first.extend_from_slice(&hello.generation.to_le_bytes());
    first.push(hello.disk_mode());
    first.extend_from_slice(hello.vm.as_bytes());
    write_block(&mut s, &first)?;
    let reply = read_block(&mut s, 8 + NONCE_LEN + 32)?;
    if reply.len() != 8 + NONCE_LEN + 32 || &reply[..8] != MAGIC {
        return Err(WireError::Auth("the peer is not an ftvm backup".into()));
    }
    let nb = &reply[8..8 + NONCE_LEN];
    if !auth::equal(&reply[8 + NONCE_LEN..], &auth::backup_proof(key, &np, nb)) {
        return Err(WireError::Auth(
            "the backup does not hold our key (wrong --key-file?)".into(),
        ));
    }
    write_block(&mut s, &auth::primary_proof(key, &np, nb))?;
    let mut ok = [0u8; 1];
    read_exact_or_closed(&mut s, &mut ok)
        .map_err(|_| WireError::Auth("the backup refused us".into()))?;
    if ok[0] == REFUSED {
        let why =
            read_block(&mut s, 1024).map_err(|_| WireError::Refused("(no reason given)".into()))?;
        return Err(WireError::Refused(
            String::from_utf8_lossy(&why).into_owned(),
        ));
    }
    if ok[0] != ACCEPTED {
        return Err(WireError::Auth("the backup answered nonsense".into()));
    }
    s.set_read_timeout(None)?;
    let nb = nb.to_vec();
    split(s, key, &np, &nb, 0)
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
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    let first = read_block(&mut s, 8 + NONCE_LEN + 8 + 1 + 64)?;
    if first.len() < 8 + NONCE_LEN + 8 + 1 || &first[..8] != MAGIC {
        return Err(WireError::Auth("the peer is not an ftvm primary".into()));
    }
    let np = first[8..8 + NONCE_LEN].to_vec();
    let generation = u64::from_le_bytes(
        first[8 + NONCE_LEN..8 + NONCE_LEN + 8]
            .try_into()
            .map_err(|_| WireError::Auth("short hello".into()))?,
    );
    let (non_shared, disk_reads_own) = match first[8 + NONCE_LEN + 8] {
        0 => (false, false),
        1 => (true, false),
        2 => (false, true),
        _ => return Err(WireError::Auth("bad disk mode".into())),
    };
    let vm = String::from_utf8(first[8 + NONCE_LEN + 9..].to_vec())
        .map_err(|_| WireError::Auth("bad VM name".into()))?;
    let nb = auth::nonce();
    let mut reply = MAGIC.to_vec();
    reply.extend_from_slice(&nb);
    reply.extend_from_slice(&auth::backup_proof(key, &np, &nb));
    write_block(&mut s, &reply)?;
    let proof = read_block(&mut s, 32)?;
    if !auth::equal(&proof, &auth::primary_proof(key, &np, &nb)) {
        return Err(WireError::Auth("the peer does not hold our key".into()));
    }
    let hello = Hello {
        vm,
        generation,
        non_shared,
        disk_reads_own,
    };
    if let Some(why) = check(&hello) {
        // Only an authenticated primary is told.
        s.write_all(&[REFUSED])?;
        let why: String = why.chars().take(300).collect();
        let _ = write_block(&mut s, why.as_bytes());
        return Err(WireError::Refused(why));
    }
    s.write_all(&[ACCEPTED])?;
    s.set_read_timeout(None)?;
    let (w, r) = split(s, key, &np, &nb, 1)?;
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
    }

    #[test]
    fn wrong_key_is_refused_on_both_sides() {
        let (p, b) = pair(Key::random(), Key::random());
        assert!(matches!(p, Err(WireError::Auth(_))));
        assert!(b.is_err());
    }

    #[test]
    fn a_forged_message_drops_the_connection() {
        let k = Key::random();
        let (p, b) = pair(k.clone(), k);
        let (pw, _pr) = p.unwrap();
        let (_, _bw, mut br) = b.unwrap();
        // Forge a message with a tag made under another key, written straight on the stream.
        let mut forger = MsgWriter {
            stream: pw.stream.try_clone().unwrap(),
            tagger: Tagger::new(&Key::random(), &[0; 32], &[0; 32], 0),
        };
        forger
            .send(&Msg::Log {
                horizon: 1,
                released: 0,
                bytes: vec![9],
            })
            .unwrap();
        assert!(matches!(br.recv(), Err(WireError::BadTag)));
    }

    #[test]
    fn a_bit_flipped_in_transit_fails_the_tag() {
        let k = Key::random();
        let (p, b) = pair(k.clone(), k);
        let (mut pw, _pr) = p.unwrap();
        let (_, _bw, mut br) = b.unwrap();
        let body = Msg::Log {
            horizon: 5,
            released: 0,
            bytes: vec![1],
        }
        .encode();
        let tag = pw.tagger.tag(&body);
        let mut raw = (body.len() as u32).to_be_bytes().to_vec();
        raw.extend_from_slice(&body);
        raw.extend_from_slice(&tag);
        raw[6] ^= 1;
        pw.stream.write_all(&raw).unwrap();
        assert!(matches!(br.recv(), Err(WireError::BadTag)));
    }

    #[test]
    fn garbage_lengths_are_malformed_not_allocations() {
        let k = Key::random();
        let (p, b) = pair(k.clone(), k);
        let (mut pw, _pr) = p.unwrap();
        let (_, _bw, mut br) = b.unwrap();
        pw.stream.write_all(&u32::MAX.to_be_bytes()).unwrap();
        assert!(matches!(br.recv(), Err(WireError::Malformed(_))));
    }
}
