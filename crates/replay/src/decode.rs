//! The incremental decoder: bytes go in as they arrive, in chunks of any size, and entries come
//! out once their whole frame is there and its checksum holds. It never blocks and never reads by
//! itself, so the network side can feed it from a socket and a file reader from `Read`.
//!
//! The input is untrusted: every length is bounded before anything is allocated, every field is
//! checked against the entry that holds it, and every error names the byte offset (and the
//! entry index where there is one). After an error the decoder stays failed.

use crate::encode::HEADER_FIXED_LEN;
use crate::entry::{
    kind, kind_name, DigestPart, Entry, Event, LogHeader, LogPosition, DIGEST_LEN, FORMAT_VERSION,
    MAGIC, MAX_FRAME_LEN,
};
use crate::varint::{self, VarintError};

/// Why a log's bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// not an ftvm log: it starts with {found:02x?} instead of the magic `FTVMLOG\0`
    #[error("not an ftvm log: it starts with {found:02x?} instead of the magic `FTVMLOG\\0`")]
    BadMagic {
        /// The first bytes found (up to 8).
        found: Vec<u8>,
    },
    /// log format version {version} is not supported: this build reads version
    /// [`FORMAT_VERSION`] (why, for the versions it knows)
    #[error("log format version {version} is not supported: this build reads version {FORMAT_VERSION} ({})", unsupported_why(*version))]
    UnsupportedVersion {
        /// The version in the header.
        version: u16,
    },
    /// the log header sets flags {flags:#06x} that this build does not know (log written by a newer ftvm?)
    #[error("the log header sets flags {flags:#06x} that this build does not know (log written by a newer ftvm?)")]
    UnsupportedFlags {
        /// The flags in the header.
        flags: u16,
    },
    /// the log header is corrupt: its checksum is {stored:#010x}, its bytes give {computed:#010x}
    #[error("the log header is corrupt: its checksum is {stored:#010x}, its bytes give {computed:#010x}")]
    HeaderChecksum {
        /// Checksum stored in the header.
        stored: u32,
        /// Checksum of the header's bytes.
        computed: u32,
    },
    /// the log header's creator text is not UTF-8
    #[error("the log header's creator text is not UTF-8")]
    CreatorNotUtf8,
    /// the log ends after {have} bytes, inside its header (which needs at least {need})
    #[error("the log ends after {have} bytes, inside its header (which needs at least {need})")]
    TruncatedHeader {
        /// Bytes present.
        have: usize,
        /// Bytes the header needs, as far as known.
        need: usize,
    },
    /// the log is truncated in the middle of a frame: the frame at byte offset {offset} (entries from {entry} on) needs at least {need} bytes, only {have} arrived
    #[error("the log is truncated in the middle of a frame: the frame at byte offset {offset} (entries from {entry} on) needs at least {need} bytes, only {have} arrived")]
    TruncatedFrame {
        /// Byte offset of the frame's first byte.
        offset: u64,
        /// Index of the first entry it would hold.
        entry: u64,
        /// Bytes of it present.
        have: usize,
        /// Bytes it needs, as far as known.
        need: usize,
    },
    /// the frame length at byte offset {offset} is not a valid varint: the log is corrupt
    #[error("the frame length at byte offset {offset} is not a valid varint: the log is corrupt")]
    BadFrameLength {
        /// Byte offset of the frame.
        offset: u64,
    },
    /// the frame at byte offset {offset} claims at least {len} bytes, over the limit of 16 MiB: the log is corrupt or hostile
    #[error("the frame at byte offset {offset} claims at least {len} bytes, over the limit of {MAX_FRAME_LEN}: the log is corrupt or hostile")]
    FrameTooLarge {
        /// Byte offset of the frame.
        offset: u64,
        /// Length it claims (a lower bound if it is absurdly long).
        len: u64,
    },
    /// the frame at byte offset {offset} is empty: the log is corrupt
    #[error("the frame at byte offset {offset} is empty: the log is corrupt")]
    EmptyFrame {
        /// Byte offset of the frame.
        offset: u64,
    },
    /// checksum mismatch in the frame at byte offset {offset} (entries from {entry} on): stored {stored:#010x}, computed {computed:#010x}
    #[error("checksum mismatch in the frame at byte offset {offset} (entries from {entry} on): stored {stored:#010x}, computed {computed:#010x}")]
    FrameChecksum {
        /// Byte offset of the frame.
        offset: u64,
        /// Index of the first entry it holds.
        entry: u64,
        /// Checksum stored after the frame.
        stored: u32,
        /// Checksum of the frame's bytes.
        computed: u32,
    },
    /// unsupported entry kind {kind} at entry {entry} (byte offset {offset}) (log written by a newer ftvm?)
    #[error("unsupported entry kind {kind} at entry {entry} (byte offset {offset}) (log written by a newer ftvm?)")]
    UnknownKind {
        /// The kind byte.
        kind: u8,
        /// Index of the entry.
        entry: u64,
        /// Byte offset of its kind byte.
        offset: u64,
    },
    /// entry {entry} ({name}) at byte offset {offset} is malformed: {why}
    #[error("entry {entry} ({name}) at byte offset {offset} is malformed: {why}")]
    BadEntry {
        /// Index of the entry.
        entry: u64,
        /// Byte offset of its kind byte.
        offset: u64,
        /// Its kind's name.
        name: &'static str,
        /// What is wrong.
        why: &'static str,
    },
    /// entry {entry} at byte offset {offset} moves the icount past 2^64-1, so it would go backwards: the log is corrupt
    #[error("entry {entry} at byte offset {offset} moves the icount past 2^64-1, so it would go backwards: the log is corrupt")]
    IcountOverflow {
        /// Index of the entry.
        entry: u64,
        /// Byte offset of its kind byte.
        offset: u64,
    },
    /// bytes follow the end-of-log marker, at byte offset {offset}
    #[error("bytes follow the end-of-log marker, at byte offset {offset}")]
    AfterEnd {
        /// Byte offset of the first byte after the marker.
        offset: u64,
    },
}

/// The frame whose entries are being handed out: indices into the decoder's buffer.
#[derive(Debug, Clone, Copy)]
struct Frame {
    /// Next entry's kind byte.
    cur: usize,
    /// End of the frame body (where its checksum starts).
    end: usize,
}

/// The incremental decoder. Feed it with [`push`](Self::push), take entries with
/// [`next_entry`](Self::next_entry), and call [`end_input`](Self::end_input) when the stream
/// has ended so that a cut-off frame becomes an error rather than "wait for more".
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    /// First byte in `buf` not yet taken into a frame (or the header).
    pos: usize,
    /// Stream offset of `buf[0]`.
    base: u64,
    header: Option<LogHeader>,
    frame: Option<Frame>,
    /// Icount of the previous entry (the header's base icount before the first).
    previous: u64,
    /// Entries handed out.
    entries: u64,
    /// An end-of-log entry was handed out.
    ended: bool,
    input_ended: bool,
    failed: Option<DecodeError>,
}

impl Decoder {
    /// A decoder that expects a log from its first byte (the header).
    pub fn new() -> Self {
        Self::default()
    }

    /// A decoder for the rest of a log whose header is `header`, fed from the frame boundary
    /// `at` on (a position a writer or reader reported: a frame starts there). Bytes that are
    /// not a frame there fail as any corrupt frame does.
    pub fn resume(header: LogHeader, at: LogPosition) -> Self {
        Decoder {
            base: at.bytes,
            header: Some(header),
            previous: at.icount,
            entries: at.entries,
            ..Self::default()
        }
    }

    /// Appends bytes that arrived. They are held until decoded, so a caller that pushes
    /// without draining entries grows the buffer; the logging channel bounds it by flow control.
    pub fn push(&mut self, bytes: &[u8]) {
        // Drop what has been decoded once it is at least half the buffer: amortised O(1) per
        // byte, and a long-lived decoder does not grow.
        let keep = self.frame.map_or(self.pos, |f| f.cur.min(self.pos));
        if keep > 0 && keep >= self.buf.len() / 2 {
            self.buf.drain(..keep);
            self.base += keep as u64;
            self.pos -= keep;
            if let Some(f) = &mut self.frame {
                f.cur -= keep;
                f.end -= keep;
            }
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Says that no more bytes will come: from now on a log that stops inside its header or a
    /// frame is an error instead of "not yet".
    pub fn end_input(&mut self) {
        self.input_ended = true;
    }

    /// The header, once its bytes have arrived; `Ok(None)` while they have not.
    pub fn header(&mut self) -> Result<Option<&LogHeader>, DecodeError> {
        self.check_failed()?;
        if self.header.is_none() {
            let r = self.parse_header();
            self.note(r)?;
        }
        Ok(self.header.as_ref())
    }

    /// The next entry: `Ok(Some)` when one is complete, `Ok(None)` when more bytes are needed
    /// or the stream has ended cleanly at a frame boundary (after [`end_input`](Self::end_input)),
    /// `Err` when the bytes are not a valid log.
    pub fn next_entry(&mut self) -> Result<Option<Entry>, DecodeError> {
        self.check_failed()?;
        let r = self.next_inner();
        self.note(r)
    }

    /// Entries handed out so far and the stream offset just past the last of them.
    pub fn position(&self) -> LogPosition {
        let at = self
            .frame
            .map_or(self.pos, |f| if f.cur == f.end { self.pos } else { f.cur });
        LogPosition {
            entries: self.entries,
            bytes: self.base + at as u64,
            icount: self.previous,
        }
    }

    /// True when every entry of every frame decoded so far has been handed out: the next entry
    /// (if any) starts a new frame.
    pub fn at_frame_boundary(&self) -> bool {
        self.frame.is_none_or(|f| f.cur == f.end)
    }

    /// True once the end-of-log entry has been handed out.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Bytes held that are not yet handed out as entries (a partial frame, or frames waiting).
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.frame.map_or(self.pos, |f| f.cur)
    }

    fn check_failed(&self) -> Result<(), DecodeError> {
        match &self.failed {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    fn note<T>(&mut self, r: Result<T, DecodeError>) -> Result<T, DecodeError> {
        if let Err(e) = &r {
            self.failed = Some(e.clone());
        }
        r
    }

    fn next_inner(&mut self) -> Result<Option<Entry>, DecodeError> {
        if self.header.is_none() && !self.parse_header()? {
            return Ok(None);
        }
        loop {
            if let Some(f) = self.frame {
                if f.cur < f.end {
                    return self.parse_entry(f).map(Some);
                }
                self.frame = None;
            }
            if self.pos == self.buf.len() {
                return Ok(None);
            }
            if self.ended {
                return Err(DecodeError::AfterEnd {
                    offset: self.base + self.pos as u64,
                });
            }
            if !self.open_frame()? {
                return Ok(None);
            }
        }
    }

    /// Parses the header if it is all there (`Ok(false)` if not), failing early on a wrong
    /// magic or version even before the rest has arrived.
    fn parse_header(&mut self) -> Result<bool, DecodeError> {
        let b = &self.buf[self.pos..];
        let n = b.len().min(MAGIC.len());
        if b[..n] != MAGIC[..n] {
            return Err(DecodeError::BadMagic {
                found: b[..n].to_vec(),
            });
        }
        if b.len() >= 10 {
            let version = u16::from_le_bytes([b[8], b[9]]);
            if version != FORMAT_VERSION {
                return Err(DecodeError::UnsupportedVersion { version });
            }
        }
        if b.len() >= 12 {
            let flags = u16::from_le_bytes([b[10], b[11]]);
            if flags != 0 {
                return Err(DecodeError::UnsupportedFlags { flags });
            }
        }
        let need = match b.get(HEADER_FIXED_LEN - 1) {
            Some(&creator_len) => HEADER_FIXED_LEN + usize::from(creator_len) + 4,
            None => HEADER_FIXED_LEN + 4,
        };
        if b.len() < need {
            return if self.input_ended {
                Err(DecodeError::TruncatedHeader {
                    have: b.len(),
                    need,
                })
            } else {
                Ok(false)
            };
        }
        let stored = u32::from_le_bytes(le4(&b[need - 4..need]));
        let computed = crc32c::crc32c(&b[..need - 4]);
        if stored != computed {
            return Err(DecodeError::HeaderChecksum { stored, computed });
        }
        let u64_at = |at: usize| u64::from_le_bytes(le8(&b[at..at + 8]));
        let creator = std::str::from_utf8(&b[HEADER_FIXED_LEN..need - 4])
            .map_err(|_| DecodeError::CreatorNotUtf8)?
            .to_owned();
        let header = LogHeader {
            config_fingerprint: u64_at(12),
            base_icount: u64_at(20),
            created_unix_ms: u64_at(28),
            creator,
        };
        self.previous = header.base_icount;
        self.header = Some(header);
        self.pos += need;
        Ok(true)
    }

    /// Takes the frame at `pos` if it is all there (`Ok(false)` if not) and checks its
    /// length and checksum.
    fn open_frame(&mut self) -> Result<bool, DecodeError> {
        let offset = self.base + self.pos as u64;
        let b = &self.buf[self.pos..];
        let (len, lb) = match varint::get(b) {
            Ok(v) => v,
            // Four bytes of varint already say more than 2^28 > MAX_FRAME_LEN.
            Err(VarintError::Incomplete) if b.len() >= 4 => {
                return Err(DecodeError::FrameTooLarge {
                    offset,
                    len: 1 << 28,
                })
            }
            Err(VarintError::Incomplete) => return self.truncated(offset, b.len() + 1),
            Err(VarintError::Malformed) => return Err(DecodeError::BadFrameLength { offset }),
        };
        if len == 0 {
            return Err(DecodeError::EmptyFrame { offset });
        }
        if len > MAX_FRAME_LEN as u64 {
            return Err(DecodeError::FrameTooLarge { offset, len });
        }
        let body_end = lb + len as usize;
        let need = body_end + 4;
        if b.len() < need {
            return self.truncated(offset, need);
        }
        let stored = u32::from_le_bytes(le4(&b[body_end..need]));
        let computed = crc32c::crc32c(&b[..body_end]);
        if stored != computed {
            return Err(DecodeError::FrameChecksum {
                offset,
                entry: self.entries,
                stored,
                computed,
            });
        }
        self.frame = Some(Frame {
            cur: self.pos + lb,
            end: self.pos + body_end,
        });
        self.pos += need;
        Ok(true)
    }

    /// "Not yet" while input may still come, a truncation error once it has ended.
    fn truncated(&self, offset: u64, need: usize) -> Result<bool, DecodeError> {
        if self.input_ended {
            Err(DecodeError::TruncatedFrame {
                offset,
                entry: self.entries,
                have: self.buf.len() - self.pos,
                need,
            })
        } else {
            Ok(false)
        }
    }

    fn parse_entry(&mut self, f: Frame) -> Result<Entry, DecodeError> {
        let entry = self.entries;
        let offset = self.base + f.cur as u64;
        if self.ended {
            return Err(DecodeError::AfterEnd { offset });
        }
        let body = &self.buf[f.cur..f.end];
        let k = body[0];
        let name = kind_name(k).ok_or(DecodeError::UnknownKind {
            kind: k,
            entry,
            offset,
        })?;
        let bad = |why| DecodeError::BadEntry {
            entry,
            offset,
            name,
            why,
        };
        let (len, lb) = varint::get(&body[1..]).map_err(|e| match e {
            VarintError::Incomplete => bad("its length runs past the end of its frame"),
            VarintError::Malformed => bad("its length is not a valid varint"),
        })?;
        let start = 1 + lb;
        if len > (body.len() - start) as u64 {
            return Err(bad("it runs past the end of its frame"));
        }
        let size = start + len as usize;
        let mut r = Fields {
            b: &body[start..size],
        };
        let delta = r.varint().map_err(bad)?;
        let icount = self
            .previous
            .checked_add(delta)
            .ok_or(DecodeError::IcountOverflow { entry, offset })?;
        let event = match k {
            kind::DEVICE_COMPLETION => Event::DeviceCompletion {
                device: r.u32().map_err(bad)?,
                request: r.varint().map_err(bad)?,
                data: r.rest(),
            },
            kind::IDLE_SKIP => {
                let hart = r.u32().map_err(bad)?;
                let length = r.varint().map_err(bad)?;
                let until = icount
                    .checked_add(length)
                    .ok_or(bad("the skip ends past icount 2^64-1"))?;
                Event::IdleSkip { hart, until }
            }
            kind::TIME_SYNC => Event::TimeSync {
                delta: varint::unzigzag(r.varint().map_err(bad)?),
            },
            kind::PAUSE => Event::Pause,
            kind::RESUME => Event::Resume,
            kind::POWER_OFF => Event::PowerOff,
            kind::CONFIG_CHANGE => Event::ConfigChange(r.rest()),
            kind::STATE_DIGEST => {
                let mut parts: Vec<DigestPart> = Vec::new();
                while !r.b.is_empty() {
                    let id = r.u32().map_err(bad)?;
                    let digest = r.digest().map_err(bad)?;
                    if parts.last().is_some_and(|p| p.id >= id) {
                        return Err(bad("its part ids do not ascend strictly"));
                    }
                    parts.push(DigestPart { id, digest });
                }
                Event::StateDigest(parts)
            }
            kind::DISK_WRITE => Event::DiskWrite {
                device: r.u32().map_err(bad)?,
                sector: r.varint().map_err(bad)?,
                data: r.rest(),
            },
            kind::OUTPUT_MARKER => Event::OutputMarker {
                device: r.u32().map_err(bad)?,
                seq: r.varint().map_err(bad)?,
                len: r.varint().map_err(bad)?,
            },
            kind::DISK_READ => Event::DiskRead {
                device: r.u32().map_err(bad)?,
                offset: r.varint().map_err(bad)?,
                len: r.varint().map_err(bad)?,
                digest: r.u64_le().map_err(bad)?,
            },
            kind::REQUEST_DONE => Event::RequestDone {
                device: r.u32().map_err(bad)?,
                request: r.varint().map_err(bad)?,
            },
            kind::TIME_RATE => Event::TimeRate {
                rate: r.u32().map_err(bad)?,
            },
            _ => Event::EndOfLog,
        };
        if !r.b.is_empty() {
            return Err(bad("bytes are left over after its last field"));
        }
        self.frame = Some(Frame {
            cur: f.cur + size,
            end: f.end,
        });
        self.previous = icount;
        self.entries += 1;
        self.ended = matches!(event, Event::EndOfLog);
        Ok(Entry { icount, event })
    }
}

/// A cursor over one entry's body.
struct Fields<'a> {
    b: &'a [u8],
}

impl Fields<'_> {
    fn varint(&mut self) -> Result<u64, &'static str> {
        let (v, n) = varint::get(self.b).map_err(|e| match e {
            VarintError::Incomplete => "a field runs past the end of the entry",
            VarintError::Malformed => "a field is not a valid varint",
        })?;
        self.b = &self.b[n..];
        Ok(v)
    }

    fn u32(&mut self) -> Result<u32, &'static str> {
        u32::try_from(self.varint()?).map_err(|_| "a device, hart or part number exceeds 32 bits")
    }

    fn digest(&mut self) -> Result<[u8; DIGEST_LEN], &'static str> {
        let (d, rest) = self
            .b
            .split_first_chunk::<DIGEST_LEN>()
            .ok_or("a digest runs past the end of the entry")?;
        self.b = rest;
        Ok(*d)
    }

    fn u64_le(&mut self) -> Result<u64, &'static str> {
        let (d, rest) = self
            .b
            .split_first_chunk::<8>()
            .ok_or("a digest runs past the end of the entry")?;
        self.b = rest;
        Ok(u64::from_le_bytes(*d))
    }

    fn rest(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.b).to_vec()
    }
}

fn le4(b: &[u8]) -> [u8; 4] {
    let mut a = [0; 4];
    a.copy_from_slice(b);
    a
}

fn le8(b: &[u8]) -> [u8; 8] {
    let mut a = [0; 8];
    a.copy_from_slice(b);
    a
}

/// Why a log of `version` cannot be read, for [`DecodeError::UnsupportedVersion`].
fn unsupported_why(version: u16) -> &'static str {
    if version == 4 {
        "a version 4 log's state digests hash RAM in one piece, this build's hash it page by \
         page: replay it with the ftvm that recorded it"
    } else if version == 5 {
        "a version 5 log's disk requests complete inside the device pass that takes them, this \
         build's at logged completion points: replay it with the ftvm that recorded it"
    } else if version == 7 {
        "a version 7 log's network card offers no checksum offload or mergeable buffers, so its \
         guest negotiated other features than this build's card offers: replay it with the ftvm \
         that recorded it"
    } else if version == 6 {
        "a version 6 log's prologue holds a snapshot of version 3, whose clock has no rate: \
         replay it with the ftvm that recorded it"
    } else {
        "log written by another ftvm version: replay it with the one that recorded it"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LogWriter, DEFAULT_BATCH_LIMIT};

    #[test]
    fn a_long_lived_decoder_does_not_grow() {
        let header = LogHeader {
            config_fingerprint: 1,
            base_icount: 0,
            created_unix_ms: 0,
            creator: String::new(),
        };
        let mut w = LogWriter::new(Vec::new(), &header).unwrap();
        let mut d = Decoder::new();
        let mut sent = 0;
        for i in 0..20_000u64 {
            w.append(&Entry {
                icount: i,
                event: Event::DeviceCompletion {
                    device: 1,
                    request: i,
                    data: vec![0; 100],
                },
            })
            .unwrap();
            if i % 7 == 0 {
                w.flush().unwrap();
            }
            let out = w.get_ref();
            // Feed in odd-sized pieces, draining as we go.
            for c in out[sent..].chunks(33) {
                d.push(c);
                while d.next_entry().unwrap().is_some() {}
            }
            sent = out.len();
            assert!(
                d.buf.len() <= 4 * DEFAULT_BATCH_LIMIT.min(2048),
                "{}",
                d.buf.len()
            );
        }
        assert_eq!(d.position().bytes, sent as u64);
    }
}
