//! `LogWriter`: appends entries to any `Write` (a file, a `TcpStream`), batching them into
//! checksummed frames. A frame goes out when the batch passes its size limit or on
//! [`flush`](LogWriter::flush); the logging channel flushes whenever it wants the backup to see
//! what it has (before an output is released, or on a short timer).

use std::io::Write;

use crate::encode::{encode_header, EncodeError, EntryEncoder};
use crate::entry::{Entry, Event, LogHeader, LogPosition, MAX_FRAME_LEN};
use crate::varint;

/// Why an entry could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// writing the log failed: {0}
    #[error("writing the log failed: {0}")]
    Io(#[from] std::io::Error),
    /// {0}
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// an earlier write failed, so the log may end inside a frame: it cannot be continued
    #[error("an earlier write failed, so the log may end inside a frame: it cannot be continued")]
    Poisoned,
}

/// Bytes reserved in front of a batch for the frame length: a varint of at most
/// [`MAX_FRAME_LEN`] (2^24) takes 4 bytes, so the length is written in place, with no copy.
const HEAD: usize = 4;

/// Default batch size: a frame is sent once its entries pass it.
pub const DEFAULT_BATCH_LIMIT: usize = 64 << 10;

/// Writes a log: the header at once, then entries in frames. Entries still in the batch when
/// the writer is dropped are lost: call [`flush`](Self::flush) or [`finish`](Self::finish).
#[derive(Debug)]
pub struct LogWriter<W: Write> {
    out: W,
    enc: EntryEncoder,
    /// `HEAD` reserved bytes, then the encoded entries of the frame being filled.
    batch: Vec<u8>,
    batch_limit: usize,
    /// What has been handed to `out`.
    written: LogPosition,
    failed: bool,
}

impl<W: Write> LogWriter<W> {
    /// Writes `header` to `out` and returns a writer for the entries.
    pub fn new(mut out: W, header: &LogHeader) -> Result<Self, WriteError> {
        let mut head = Vec::with_capacity(64);
        encode_header(&mut head, header)?;
        out.write_all(&head)?;
        let mut batch = Vec::with_capacity(DEFAULT_BATCH_LIMIT + 256);
        batch.resize(HEAD, 0);
        Ok(LogWriter {
            out,
            enc: EntryEncoder::new(header.base_icount),
            batch,
            batch_limit: DEFAULT_BATCH_LIMIT,
            written: LogPosition {
                entries: 0,
                bytes: head.len() as u64,
                icount: header.base_icount,
            },
            failed: false,
        })
    }

    /// Sets the batch size limit in bytes (clamped to 1..=16 MiB): 1 puts every entry in a
    /// frame of its own.
    pub fn set_batch_limit(&mut self, bytes: usize) {
        self.batch_limit = bytes.clamp(1, MAX_FRAME_LEN);
    }

    /// Appends an entry and returns its log position (index). It reaches `out` when its batch
    /// is full or on [`flush`](Self::flush). An entry the format cannot hold is refused and
    /// changes nothing.
    pub fn append(&mut self, entry: &Entry) -> Result<u64, WriteError> {
        if self.failed {
            return Err(WriteError::Poisoned);
        }
        let index = self.enc.entries;
        let before = self.batch.len();
        let before_icount = self.enc.previous;
        self.enc.encode(&mut self.batch, entry)?;
        if self.batch.len() - HEAD > self.batch_limit {
            if before > HEAD {
                // The batch is full without this entry: send the others, keep this one.
                let tail = self.batch.split_off(before);
                self.emit_frame(index, before_icount)?;
                self.batch.extend_from_slice(&tail);
            }
            if self.batch.len() - HEAD > self.batch_limit {
                self.emit_frame(index + 1, entry.icount)?;
            }
        }
        Ok(index)
    }

    /// Sends the pending batch as a frame (if any) and flushes `out`.
    pub fn flush(&mut self) -> Result<(), WriteError> {
        if self.failed {
            return Err(WriteError::Poisoned);
        }
        self.emit_frame(self.enc.entries, self.enc.previous)?;
        self.out.flush().map_err(|e| self.fail(e))
    }

    /// Appends the end-of-log marker at `icount`, flushes, and returns the output.
    pub fn finish(mut self, icount: u64) -> Result<W, WriteError> {
        self.append(&Entry {
            icount,
            event: Event::EndOfLog,
        })?;
        self.flush()?;
        Ok(self.out)
    }

    /// What has been handed to the output: entries in complete frames, and bytes.
    pub fn position(&self) -> LogPosition {
        self.written
    }

    /// Entries appended so far, including those still in the batch: the next entry's index.
    pub fn appended(&self) -> u64 {
        self.enc.entries
    }

    /// The icount of the last entry appended (the header's base icount before the first).
    pub fn last_icount(&self) -> u64 {
        self.enc.previous
    }

    /// The output.
    pub fn get_ref(&self) -> &W {
        &self.out
    }

    /// The output, mutably (writing to it directly corrupts the log).
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }

    /// Writes the batch as one frame. `entries` is the entry count once it is out.
    /// Sends the batch: `entries` in all once it is out, the last of them at `icount`.
    fn emit_frame(&mut self, entries: u64, icount: u64) -> Result<(), WriteError> {
        let body = self.batch.len() - HEAD;
        if body == 0 {
            return Ok(());
        }
        let lb = varint::len(body as u64);
        let start = HEAD - lb;
        let mut len = Vec::with_capacity(HEAD);
        varint::put(&mut len, body as u64);
        self.batch[start..HEAD].copy_from_slice(&len);
        let crc = crc32c::crc32c(&self.batch[start..]);
        self.batch.extend_from_slice(&crc.to_le_bytes());
        let r = self.out.write_all(&self.batch[start..]);
        let frame_len = self.batch.len() - start;
        self.batch.truncate(HEAD);
        r.map_err(|e| self.fail(e))?;
        self.written.entries = entries;
        self.written.bytes += frame_len as u64;
        self.written.icount = icount;
        Ok(())
    }

    fn fail(&mut self, e: std::io::Error) -> WriteError {
        self.failed = true;
        WriteError::Io(e)
    }
}
