//! Entries and the header into bytes, refusing what the format cannot say (an icount going
//! backwards, an entry larger than a frame). Framing itself is the writer's job; the layouts are
//! in `docs/log-format.md`.

use crate::entry::{
    Entry, Event, LogHeader, FORMAT_VERSION, MAGIC, MAX_CREATOR_LEN, MAX_FRAME_LEN,
};
use crate::varint;

/// Entries or headers that cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// entry {entry} ({name}) is at icount {icount}, before the previous entry's icount {previous}: entries must be appended in icount order
    #[error("entry {entry} ({name}) is at icount {icount}, before the previous entry's icount {previous}: entries must be appended in icount order")]
    IcountBackwards {
        /// Log position of the refused entry.
        entry: u64,
        /// Its kind's name.
        name: &'static str,
        /// Its icount.
        icount: u64,
        /// The icount of the entry before it (or the header's base icount).
        previous: u64,
    },
    /// entry {entry} (idle-skip) ends at icount {until}, before it starts at icount {icount}
    #[error(
        "entry {entry} (idle-skip) ends at icount {until}, before it starts at icount {icount}"
    )]
    IdleEndsBeforeStart {
        /// Log position of the refused entry.
        entry: u64,
        /// Where the skip starts.
        icount: u64,
        /// Where it claims to end.
        until: u64,
    },
    /// entry {entry} (state-digest) lists part ids out of order or twice: they must ascend strictly
    #[error("entry {entry} (state-digest) lists part ids out of order or twice: they must ascend strictly")]
    DigestPartsOrder {
        /// Log position of the refused entry.
        entry: u64,
    },
    /// entry {entry} ({name}) takes {len} bytes, more than the {max}-byte frame limit
    #[error("entry {entry} ({name}) takes {len} bytes, more than the {max}-byte frame limit")]
    EntryTooLarge {
        /// Log position of the refused entry.
        entry: u64,
        /// Its kind's name.
        name: &'static str,
        /// Its encoded size.
        len: usize,
        /// The limit ([`MAX_FRAME_LEN`]).
        max: usize,
    },
    /// entry {entry} ({name}) comes after the end-of-log marker: nothing may follow it
    #[error("entry {entry} ({name}) comes after the end-of-log marker: nothing may follow it")]
    AfterEnd {
        /// Log position of the refused entry.
        entry: u64,
        /// Its kind's name.
        name: &'static str,
    },
    /// the header's creator text is {len} bytes long; at most 255 fit
    #[error("the header's creator text is {len} bytes long; at most 255 fit")]
    CreatorTooLong {
        /// Its length in bytes.
        len: usize,
    },
}

/// Size of the fixed part of the header, before the creator text.
pub(crate) const HEADER_FIXED_LEN: usize = 37;

/// Appends the header's bytes, checksum included.
pub fn encode_header(out: &mut Vec<u8>, header: &LogHeader) -> Result<(), EncodeError> {
    let creator = header.creator.as_bytes();
    if creator.len() > MAX_CREATOR_LEN {
        return Err(EncodeError::CreatorTooLong { len: creator.len() });
    }
    let start = out.len();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes()); // flags: none defined
    out.extend_from_slice(&header.config_fingerprint.to_le_bytes());
    out.extend_from_slice(&header.base_icount.to_le_bytes());
    out.extend_from_slice(&header.created_unix_ms.to_le_bytes());
    out.push(creator.len() as u8);
    out.extend_from_slice(creator);
    let crc = crc32c::crc32c(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Reusable encoder state: the previous entry's icount (deltas are relative to it) and a
/// scratch buffer.
#[derive(Debug)]
pub(crate) struct EntryEncoder {
    /// The previous entry's icount, or the header's base icount before the first entry.
    pub previous: u64,
    /// Entries encoded so far: the next entry's log position.
    pub entries: u64,
    /// An end-of-log entry was encoded.
    pub ended: bool,
    scratch: Vec<u8>,
}

impl EntryEncoder {
    pub fn new(base_icount: u64) -> Self {
        EntryEncoder {
            previous: base_icount,
            entries: 0,
            ended: false,
            scratch: Vec::with_capacity(64),
        }
    }

    /// Checks `entry` and appends its bytes (kind, length, body) to `out`. On error nothing
    /// is appended and the state is unchanged.
    pub fn encode(&mut self, out: &mut Vec<u8>, entry: &Entry) -> Result<(), EncodeError> {
        let index = self.entries;
        let name = entry.event.name();
        if self.ended {
            return Err(EncodeError::AfterEnd { entry: index, name });
        }
        let delta =
            entry
                .icount
                .checked_sub(self.previous)
                .ok_or(EncodeError::IcountBackwards {
                    entry: index,
                    name,
                    icount: entry.icount,
                    previous: self.previous,
                })?;
        let s = &mut self.scratch;
        s.clear();
        varint::put(s, delta);
        let tail: &[u8] = match &entry.event {
            Event::DeviceCompletion {
                device,
                request,
                data,
            } => {
                varint::put(s, u64::from(*device));
                varint::put(s, *request);
                data
            }
            Event::IdleSkip { hart, until } => {
                let length =
                    until
                        .checked_sub(entry.icount)
                        .ok_or(EncodeError::IdleEndsBeforeStart {
                            entry: index,
                            icount: entry.icount,
                            until: *until,
                        })?;
                varint::put(s, u64::from(*hart));
                varint::put(s, length);
                &[]
            }
            Event::TimeSync { delta } => {
                varint::put(s, varint::zigzag(*delta));
                &[]
            }
            Event::Pause | Event::Resume | Event::PowerOff | Event::EndOfLog => &[],
            Event::ConfigChange(bytes) => bytes,
            Event::StateDigest(parts) => {
                if parts.windows(2).any(|w| w[0].id >= w[1].id) {
                    return Err(EncodeError::DigestPartsOrder { entry: index });
                }
                for p in parts {
                    varint::put(s, u64::from(p.id));
                    s.extend_from_slice(&p.digest);
                }
                &[]
            }
            Event::DiskWrite {
                device,
                sector,
                data,
            } => {
                varint::put(s, u64::from(*device));
                varint::put(s, *sector);
                data
            }
            Event::OutputMarker { device, seq, len } => {
                varint::put(s, u64::from(*device));
                varint::put(s, *seq);
                varint::put(s, *len);
                &[]
            }
            Event::DiskRead {
                device,
                offset,
                len,
                digest,
            } => {
                varint::put(s, u64::from(*device));
                varint::put(s, *offset);
                varint::put(s, *len);
                s.extend_from_slice(&digest.to_le_bytes());
                &[]
            }
            Event::RequestDone { device, request } => {
                varint::put(s, u64::from(*device));
                varint::put(s, *request);
                &[]
            }
            Event::TimeRate { rate } => {
                varint::put(s, u64::from(*rate));
                &[]
            }
        };
        let body_len = s.len() + tail.len();
        let total = 1 + varint::len(body_len as u64) + body_len;
        if total > MAX_FRAME_LEN {
            return Err(EncodeError::EntryTooLarge {
                entry: index,
                name,
                len: total,
                max: MAX_FRAME_LEN,
            });
        }
        out.reserve(total);
        out.push(entry.event.kind());
        varint::put(out, body_len as u64);
        out.extend_from_slice(s);
        out.extend_from_slice(tail);
        self.previous = entry.icount;
        self.entries += 1;
        self.ended = matches!(entry.event, Event::EndOfLog);
        Ok(())
    }
}
