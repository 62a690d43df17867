//! Just enough of the ftvm input-log format (`docs/log-format.md`) to measure a log: every
//! entry's icount, kind and size on disk, and the console bytes typed (to find where each shell
//! command entered the guest). No checksum is verified: `ftvm replay` does that; this only
//! accounts for bytes. Kept here rather than depending on `crates/replay` so that the benchmark
//! measures the bytes exactly as they are in the file.

use anyhow::{bail, Context, Result};

/// Entry kinds (the format's table).
pub mod kind {
    /// Device completion: console input, entropy, disk reads.
    pub const DEVICE_COMPLETION: u8 = 1;
    /// Idle skip.
    pub const IDLE_SKIP: u8 = 2;
    /// Time sync: a change of the guest-time offset, in timebase ticks.
    pub const TIME_SYNC: u8 = 3;
    /// Time rate: guest time's steps per tick, in sixteenths, from here on.
    pub const TIME_RATE: u8 = 14;
    /// Config change: the machine's shape and the initial snapshot.
    pub const CONFIG_CHANGE: u8 = 7;
    /// State digest.
    pub const STATE_DIGEST: u8 = 8;
    /// Disk write.
    pub const DISK_WRITE: u8 = 9;
}

/// The device number of console input (`rr::DEV_UART`).
pub const DEV_UART: u32 = 0x100;

/// One entry as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Machine-wide icount at which it takes effect.
    pub icount: u64,
    /// Kind byte.
    pub kind: u8,
    /// Device of a device completion or disk write.
    pub device: Option<u32>,
    /// Bytes this entry takes in the file: kind, length, body, plus its frame's length and
    /// checksum when it is the first entry of a frame.
    pub bytes: u64,
    /// The data of a console-input completion (empty otherwise).
    pub console: Vec<u8>,
    /// The change of the guest-time offset of a time sync, in 10 MHz timebase ticks.
    pub time_sync: i64,
    /// The new rate of a time rate, in sixteenths of a step per tick (0 otherwise).
    pub time_rate: u64,
}

/// The rate a machine starts at (`machine::clock::NOMINAL_RATE`): 10 steps per tick.
const NOMINAL_RATE: u64 = 160;

/// A parsed log.
#[derive(Debug)]
pub struct Log {
    /// Bytes of the header.
    pub header_bytes: u64,
    /// The header's base icount.
    pub base_icount: u64,
    /// The entries in order.
    pub entries: Vec<Entry>,
    /// Size of the file.
    pub total_bytes: u64,
}

fn varint(b: &[u8], pos: &mut usize) -> Result<u64> {
    let mut v = 0u64;
    for shift in (0..70).step_by(7) {
        let Some(&byte) = b.get(*pos) else {
            bail!("log truncated inside a varint at byte {}", *pos);
        };
        *pos += 1;
        v |= u64::from(byte & 0x7f).checked_shl(shift).unwrap_or(0);
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    bail!("varint too long at byte {}", *pos)
}

impl Log {
    /// Reads and parses the log file at `path`.
    pub fn read(path: &std::path::Path) -> Result<Log> {
        let b = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Log::parse(&b).with_context(|| format!("parsing {}", path.display()))
    }

    /// Parses a whole log.
    pub fn parse(b: &[u8]) -> Result<Log> {
        if b.len() < 41 || &b[..8] != b"FTVMLOG\0" {
            bail!("not an ftvm log (no FTVMLOG header)");
        }
        let base = u64::from_le_bytes(b[20..28].try_into()?);
        let header_bytes = 41 + b[36] as usize;
        if b.len() < header_bytes {
            bail!("truncated header");
        }
        let mut pos = header_bytes;
        let mut icount = base;
        let mut entries = Vec::new();
        while pos < b.len() {
            let frame_start = pos;
            let len = varint(b, &mut pos)? as usize;
            let body_end = pos + len;
            if body_end + 4 > b.len() {
                bail!("truncated frame at byte {frame_start}");
            }
            let mut overhead = (pos - frame_start + 4) as u64;
            while pos < body_end {
                let entry_start = pos;
                let k = b[pos];
                pos += 1;
                let elen = varint(b, &mut pos)? as usize;
                let end = pos + elen;
                if end > body_end {
                    bail!("entry at byte {entry_start} runs past its frame");
                }
                icount = icount.saturating_add(varint(b, &mut pos)?);
                let mut device = None;
                let mut console = Vec::new();
                let mut time_sync = 0;
                let mut time_rate = 0;
                if k == kind::TIME_SYNC {
                    let z = varint(b, &mut pos)?;
                    time_sync = (z >> 1) as i64 ^ -((z & 1) as i64);
                }
                if k == kind::TIME_RATE {
                    time_rate = varint(b, &mut pos)?;
                }
                if k == kind::DEVICE_COMPLETION || k == kind::DISK_WRITE {
                    let d = varint(b, &mut pos)? as u32;
                    device = Some(d);
                    let _request_or_sector = varint(b, &mut pos)?;
                    if k == kind::DEVICE_COMPLETION && d == DEV_UART && pos <= end {
                        console = b[pos..end].to_vec();
                    }
                }
                entries.push(Entry {
                    icount,
                    kind: k,
                    device,
                    bytes: (end - entry_start) as u64 + overhead,
                    console,
                    time_sync,
                    time_rate,
                });
                overhead = 0;
                pos = end;
            }
            pos = body_end + 4;
        }
        Ok(Log {
            header_bytes: header_bytes as u64,
            base_icount: base,
            entries,
            total_bytes: b.len() as u64,
        })
    }

    /// Bytes of the prologue: the header and the leading config-change entries (machine shape
    /// and initial snapshot), which a log carries once whatever the run's length.
    pub fn prologue_bytes(&self) -> u64 {
        self.header_bytes
            + self
                .entries
                .iter()
                .take_while(|e| e.kind == kind::CONFIG_CHANGE)
                .map(|e| e.bytes)
                .sum::<u64>()
    }

    /// The console input as one stream, with the icount of the entry that delivered each byte.
    fn console_stream(&self) -> (Vec<u8>, Vec<u64>) {
        let mut stream = Vec::new();
        let mut owner = Vec::new();
        for e in &self.entries {
            stream.extend_from_slice(&e.console);
            owner.extend(std::iter::repeat_n(e.icount, e.console.len()));
        }
        (stream, owner)
    }

    /// The icounts at which the first and the last byte of the typed line holding the first
    /// occurrence of `text` arrived (a line starts after a newline or a Ctrl-U and ends with
    /// its newline, or with the input).
    pub fn console_line(&self, text: &[u8]) -> Option<(u64, u64)> {
        let (stream, owner) = self.console_stream();
        let at = stream.windows(text.len()).position(|w| w == text)?;
        let start = stream[..at]
            .iter()
            .rposition(|&b| b == b'\n' || b == 0x15)
            .map_or(0, |i| i + 1);
        let end = stream[at..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(stream.len() - 1, |i| at + i);
        Some((owner[start], owner[end]))
    }

    /// Guest time from icount `from` to `to`, in seconds: the machine's clock (DESIGN §2,
    /// `machine::clock`) rebuilt from the log's time-sync jumps and time-rate changes, from
    /// the nominal rate at the start (a log recorded from boot).
    pub fn guest_seconds(&self, from: u64, to: u64) -> f64 {
        let clock_at = |at: u64| {
            // Ticks (fractional) at icount `at`.
            let (mut ticks, mut base, mut rate) = (0f64, self.base_icount, NOMINAL_RATE);
            for e in self.entries.iter().take_while(|e| e.icount <= at) {
                if e.kind == kind::TIME_SYNC {
                    ticks += e.time_sync as f64;
                } else if e.kind == kind::TIME_RATE && e.time_rate > 0 {
                    ticks += (e.icount - base) as f64 * 16.0 / rate as f64;
                    (base, rate) = (e.icount, e.time_rate);
                }
            }
            ticks + (at - base) as f64 * 16.0 / rate as f64
        };
        (clock_at(to) - clock_at(from)) / 10_000_000.0
    }

    /// Bytes of the entries with `from < icount < to`, and a breakdown by kind name.
    pub fn window(&self, from: u64, to: u64) -> (u64, Vec<(&'static str, u64)>) {
        let mut by: Vec<(&'static str, u64)> = Vec::new();
        let mut total = 0;
        for e in self
            .entries
            .iter()
            .filter(|e| e.icount > from && e.icount < to)
        {
            total += e.bytes;
            let name = kind_name(e);
            match by.iter_mut().find(|(n, _)| *n == name) {
                Some((_, b)) => *b += e.bytes,
                None => by.push((name, e.bytes)),
            }
        }
        by.sort_by_key(|e| std::cmp::Reverse(e.1));
        (total, by)
    }
}

/// A short name for what an entry carries.
fn kind_name(e: &Entry) -> &'static str {
    match (e.kind, e.device) {
        (kind::DEVICE_COMPLETION, Some(DEV_UART)) => "console input",
        (kind::DEVICE_COMPLETION, _) => "device data (entropy, disk reads)",
        (kind::IDLE_SKIP, _) => "idle skips",
        (kind::TIME_SYNC, _) => "time syncs",
        (kind::TIME_RATE, _) => "time rates",
        (kind::STATE_DIGEST, _) => "digests",
        (kind::DISK_WRITE, _) => "disk writes",
        (kind::CONFIG_CHANGE, _) => "config",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example of docs/log-format.md.
    const EXAMPLE: &str = "
        46 54 56 4d 4c 4f 47 00 01 00 00 00 ef cd ab 89
        67 45 23 01 00 00 00 00 00 00 00 00 00 68 e5 cf
        8b 01 00 00 04 66 74 76 6d 7d 92 eb 42 16 01 06
        e8 07 00 01 68 69 02 05 f4 03 00 f4 03 0a 05 f4
        03 00 00 02 75 61 e7 9c 17 08 12 00 00 30 31 32
        33 34 35 36 37 38 39 61 62 63 64 65 66 0b 01 64
        89 a8 ff af";

    fn example() -> Vec<u8> {
        EXAMPLE
            .split_whitespace()
            .map(|h| u8::from_str_radix(h, 16).unwrap())
            .collect()
    }

    #[test]
    fn parses_the_worked_example() {
        let b = example();
        let log = Log::parse(&b).unwrap();
        assert_eq!(log.header_bytes, 45);
        assert_eq!(log.total_bytes, 100);
        let ic: Vec<u64> = log.entries.iter().map(|e| e.icount).collect();
        assert_eq!(ic, [1000, 1500, 2000, 2000, 2100]);
        // Every byte is accounted for exactly once.
        let sum: u64 = log.entries.iter().map(|e| e.bytes).sum();
        assert_eq!(sum + log.header_bytes, 100);
        assert_eq!(log.entries[0].device, Some(0));
        // Device 0 is not the console device of ftvm's recorder.
        assert!(log.entries[0].console.is_empty());
        let (w, by) = log.window(1000, 2001);
        assert_eq!(w, 7 + 7 + 25);
        assert_eq!(by[0], ("digests", 25));
    }

    #[test]
    fn guest_time_follows_jumps_and_rate_changes() {
        let mut log = Log::parse(&example()).unwrap();
        // Nominal: 10 steps a tick, so 1000 steps are 100 ticks.
        assert!((log.guest_seconds(1000, 2000) - 100.0 / 1e7).abs() < 1e-12);
        // A jump of 50 ticks at 1500, and 2.5 steps a tick (40 sixteenths) from 2000 on.
        log.entries[1].kind = kind::TIME_SYNC;
        log.entries[1].time_sync = 50;
        log.entries[2].kind = kind::TIME_RATE;
        log.entries[2].time_rate = 40;
        let ticks = 100.0 + 50.0 + 100.0 / 2.5;
        assert!((log.guest_seconds(1000, 2100) - ticks / 1e7).abs() < 1e-12);
    }

    #[test]
    fn finds_console_text_across_entries() {
        let mut log = Log::parse(&example()).unwrap();
        log.entries[0].console = b"ab".to_vec();
        log.entries[1].console = b"c\n".to_vec();
        assert_eq!(log.console_line(b"x"), None);
        assert_eq!(log.console_line(b"c"), Some((1000, 1500)));
        log.entries[2].console = b"de".to_vec();
        assert_eq!(log.console_line(b"d"), Some((2000, 2000)));
    }

    #[test]
    fn refuses_garbage() {
        assert!(Log::parse(b"not a log at all, not at all, not at all, no").is_err());
        let b = example();
        assert!(Log::parse(&b[..b.len() - 2]).is_err());
    }
}
