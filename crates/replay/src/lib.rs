//! The input log of deterministic replay: what a recorder writes and a replayer (or the backup
//! of an FT pair, over the logging channel) reads. A run is a pure function of the initial
//! machine state and this log, so the log holds every non-deterministic input, each at the
//! exact icount where it takes effect, plus state digests that catch divergence at once.
//!
//! The byte format — header, checksummed frames of batched entries — is specified in
//! `docs/log-format.md`. It is streamable: the [`Decoder`] takes bytes in chunks of any size
//! and tells "not yet" from "truncated".
//!
//! This crate is plain data and bytes: it never touches the machine, a clock or the network,
//! and no input bytes make it panic or allocate more than a frame (16 MiB).

pub mod decode;
pub mod encode;
pub mod entry;
pub mod reader;
mod varint;
pub mod writer;

pub use decode::{DecodeError, Decoder};
pub use encode::{encode_header, EncodeError};
pub use entry::{
    part, DigestPart, Entry, Event, LogHeader, LogPosition, DIGEST_LEN, FORMAT_VERSION, MAGIC,
    MAX_FRAME_LEN,
};
pub use reader::{LogReader, ReadError};
pub use writer::{LogWriter, WriteError, DEFAULT_BATCH_LIMIT};
