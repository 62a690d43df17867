//! `LogReader`: entries from any blocking `Read` (a file, a `TcpStream`) as they arrive. A
//! read that returns 0 bytes is the end of the stream: fine at a frame boundary, an error inside
//! a frame. For non-blocking sockets use the [`Decoder`] directly.

use std::io::{Read, Seek, SeekFrom};

use crate::decode::{DecodeError, Decoder};
use crate::entry::{Entry, LogHeader, LogPosition};

/// Why a log could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// reading the log failed: {0}
    #[error("reading the log failed: {0}")]
    Io(#[from] std::io::Error),
    /// {0}
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// How much one `read` call asks for.
const CHUNK: usize = 64 << 10;

/// Reads a log.
#[derive(Debug)]
pub struct LogReader<R: Read> {
    inner: R,
    dec: Decoder,
    chunk: Vec<u8>,
    header: LogHeader,
}

impl<R: Read> LogReader<R> {
    /// Reads and checks the header (blocking until it has arrived).
    pub fn new(inner: R) -> Result<Self, ReadError> {
        let mut r = LogReader {
            inner,
            dec: Decoder::new(),
            chunk: vec![0; CHUNK],
            header: LogHeader {
                config_fingerprint: 0,
                base_icount: 0,
                created_unix_ms: 0,
                creator: String::new(),
            },
        };
        loop {
            if let Some(h) = r.dec.header()? {
                r.header = h.clone();
                return Ok(r);
            }
            r.fill()?;
        }
    }

    /// The log's header.
    pub fn header(&self) -> &LogHeader {
        &self.header
    }

    /// The next entry, blocking until it has arrived; `Ok(None)` at the end of the stream.
    pub fn next_entry(&mut self) -> Result<Option<Entry>, ReadError> {
        loop {
            if let Some(e) = self.dec.next_entry()? {
                return Ok(Some(e));
            }
            if !self.fill()? {
                // The decoder has seen the end of input: `None` now means a clean end.
                return Ok(self.dec.next_entry()?);
            }
        }
    }

    /// Entries read so far and the byte offset just past the last of them.
    pub fn position(&self) -> LogPosition {
        self.dec.position()
    }

    /// True once the end-of-log entry has been read (so the recorder closed the log on
    /// purpose, rather than the stream just stopping).
    pub fn is_ended(&self) -> bool {
        self.dec.is_ended()
    }

    /// Reads one chunk into the decoder; false at the end of the stream.
    fn fill(&mut self) -> Result<bool, ReadError> {
        loop {
            match self.inner.read(&mut self.chunk) {
                Ok(0) => {
                    self.dec.end_input();
                    return Ok(false);
                }
                Ok(n) => {
                    self.dec.push(&self.chunk[..n]);
                    return Ok(true);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl<R: Read> Iterator for LogReader<R> {
    type Item = Result<Entry, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_entry().transpose()
    }
}

impl<R: Read + Seek> LogReader<R> {
    /// Goes on from `at`, a position at a frame boundary of this log (one its writer reported,
    /// e.g. in a snapshot taken while recording), without decoding what lies between: the next
    /// entry is entry `at.entries`. A position that does not fall on a frame boundary makes the
    /// next read fail (a bad frame length or checksum).
    pub fn seek_to(&mut self, at: LogPosition) -> Result<(), ReadError> {
        self.inner.seek(SeekFrom::Start(at.bytes))?;
        self.dec = Decoder::resume(self.header.clone(), at);
        Ok(())
    }
}
