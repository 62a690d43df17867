//! Snapshots taken while recording (`ftvm run --record LOG --snapshot-out FILE` and SIGUSR1):
//! a machine snapshot with the **log position** it stands at, so that `ftvm replay LOG
//! --restore FILE` resumes the replay from it.
//!
//! Why a position and not just the icount: entries at the snapshot's icount may have been
//! logged before it (taken into the machine already) or after it (console input, a time sync at
//! the same slice boundary); only the entry index tells them apart.
//!
//! File format (all integers little-endian):
//!
//! | field | size |
//! |---|---|
//! | magic `FTVMRPOS` | 8 |
//! | version, u16 (2) | 2 |
//! | machine icount at the snapshot, u64 | 8 |
//! | entries of the log before it (the index of the first entry to apply), u64 | 8 |
//! | bytes of the log before it (header included: where that entry's frame starts), u64 | 8 |
//! | the log header's configuration fingerprint, u64 | 8 |
//! | the log header's creation time (ms since the Unix epoch), u64 | 8 |
//! | icount of the last entry before it (the next entry's is relative to it), u64 | 8 |
//! | XXH3-64 of the 58 bytes above, u64 | 8 |
//! | the machine snapshot (`Machine::snapshot`, self-checking) | … |
//!
//! The fingerprint and creation time tie the snapshot to one log: a replay of another log
//! refuses it.

use replay::LogHeader;

/// The first eight bytes of a positioned snapshot.
pub const MAGIC: &[u8; 8] = b"FTVMRPOS";
/// The version this build writes and reads (2: the icount of the last entry before the
/// position, so that a replay seeks there instead of reading the log up to it).
pub const VERSION: u16 = 2;
const HEAD: usize = 8 + 2 + 6 * 8;
const LEN: usize = HEAD + 8;

/// Where in its log a snapshot taken while recording stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotPosition {
    /// The machine's icount.
    pub icount: u64,
    /// Entries logged before the snapshot: the replay applies entries from this index on.
    pub entries: u64,
    /// Bytes of the log before the snapshot: where entry `entries`'s frame starts.
    pub bytes: u64,
    /// The icount of the last entry before the snapshot (entry `entries`'s icount is encoded
    /// relative to it).
    pub log_icount: u64,
    /// The log header's configuration fingerprint.
    pub config_fingerprint: u64,
    /// The log header's creation time.
    pub created_unix_ms: u64,
}

/// Why a positioned snapshot cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PositionError {
    /// the file is shorter than a positioned snapshot's header
    #[error("the snapshot's log position is truncated ({0} bytes)")]
    Truncated(usize),
    /// a version this build does not read
    #[error(
        "positioned snapshot version {0} is not supported: this build reads version {VERSION}"
    )]
    Version(u16),
    /// the header checksum does not match
    #[error("the snapshot's log position is damaged (checksum mismatch)")]
    Checksum,
    /// the snapshot belongs to another log
    #[error(
        "the snapshot was taken while recording another log (fingerprint {found:016x}, created \
         {found_ms} ms; this log: {want:016x}, {want_ms} ms)"
    )]
    OtherLog {
        /// The snapshot's log fingerprint.
        found: u64,
        /// Its creation time.
        found_ms: u64,
        /// This log's fingerprint.
        want: u64,
        /// This log's creation time.
        want_ms: u64,
    },
}

impl SnapshotPosition {
    /// The position of a recording whose log has `header`, at `icount` after `at`.
    pub fn new(header: &LogHeader, icount: u64, at: replay::LogPosition) -> Self {
        SnapshotPosition {
            icount,
            entries: at.entries,
            bytes: at.bytes,
            log_icount: at.icount,
            config_fingerprint: header.config_fingerprint,
            created_unix_ms: header.created_unix_ms,
        }
    }

    /// `snapshot` (a `Machine::snapshot`) with this position in front.
    pub fn wrap(&self, snapshot: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(LEN + snapshot.len());
        v.extend_from_slice(MAGIC);
        v.extend_from_slice(&VERSION.to_le_bytes());
        for x in [
            self.icount,
            self.entries,
            self.bytes,
            self.config_fingerprint,
            self.created_unix_ms,
            self.log_icount,
        ] {
            v.extend_from_slice(&x.to_le_bytes());
        }
        let sum = twox_hash::XxHash3_64::oneshot(&v);
        v.extend_from_slice(&sum.to_le_bytes());
        v.extend_from_slice(snapshot);
        v
    }

    /// Splits a file into its position and the machine snapshot; `Ok(None)` for a plain
    /// machine snapshot (no position).
    pub fn unwrap(bytes: &[u8]) -> Result<Option<(SnapshotPosition, &[u8])>, PositionError> {
        if !bytes.starts_with(MAGIC) {
            return Ok(None);
        }
        if bytes.len() < LEN {
            return Err(PositionError::Truncated(bytes.len()));
        }
        let version = u16::from_le_bytes([bytes[8], bytes[9]]);
        if version != VERSION {
            return Err(PositionError::Version(version));
        }
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(b)
        };
        if twox_hash::XxHash3_64::oneshot(&bytes[..HEAD]) != u64_at(HEAD) {
            return Err(PositionError::Checksum);
        }
        let pos = SnapshotPosition {
            icount: u64_at(10),
            entries: u64_at(18),
            bytes: u64_at(26),
            config_fingerprint: u64_at(34),
            created_unix_ms: u64_at(42),
            log_icount: u64_at(50),
        };
        Ok(Some((pos, &bytes[LEN..])))
    }

    /// Where the replay goes on in the log: the position to seek to.
    pub fn log_position(&self) -> replay::LogPosition {
        replay::LogPosition {
            entries: self.entries,
            bytes: self.bytes,
            icount: self.log_icount,
        }
    }

    /// Checks that the snapshot was taken while recording the log with `header`.
    pub fn check_log(&self, header: &LogHeader) -> Result<(), PositionError> {
        if self.config_fingerprint != header.config_fingerprint
            || self.created_unix_ms != header.created_unix_ms
        {
            return Err(PositionError::OtherLog {
                found: self.config_fingerprint,
                found_ms: self.created_unix_ms,
                want: header.config_fingerprint,
                want_ms: header.created_unix_ms,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos() -> SnapshotPosition {
        SnapshotPosition {
            icount: 123_456_789,
            entries: 42,
            bytes: 9_999,
            log_icount: 123_000_000,
            config_fingerprint: 0x0123_4567_89ab_cdef,
            created_unix_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn round_trip_and_plain_snapshots() {
        let w = pos().wrap(b"FTVMSNAP...");
        assert_eq!(
            SnapshotPosition::unwrap(&w).unwrap(),
            Some((pos(), &b"FTVMSNAP..."[..]))
        );
        assert_eq!(SnapshotPosition::unwrap(b"FTVMSNAP...").unwrap(), None);
    }

    #[test]
    fn damage_gives_errors_not_panics() {
        let w = pos().wrap(b"x");
        for n in 8..LEN {
            assert_eq!(
                SnapshotPosition::unwrap(&w[..n]),
                Err(PositionError::Truncated(n))
            );
        }
        for i in 10..LEN {
            let mut d = w.clone();
            d[i] ^= 1;
            assert_eq!(SnapshotPosition::unwrap(&d), Err(PositionError::Checksum));
        }
        let mut d = w.clone();
        d[8] = 9;
        assert_eq!(SnapshotPosition::unwrap(&d), Err(PositionError::Version(9)));
    }

    #[test]
    fn another_logs_snapshot_is_refused() {
        let h = LogHeader {
            config_fingerprint: 0x0123_4567_89ab_cdef,
            base_icount: 0,
            created_unix_ms: 1_700_000_000_001,
            creator: String::new(),
        };
        assert!(matches!(
            pos().check_log(&h),
            Err(PositionError::OtherLog { .. })
        ));
    }
}
