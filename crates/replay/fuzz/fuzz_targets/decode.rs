//! Fuzzes the log decoder with untrusted bytes, as a backup gets them from the logging channel.
//! It must never panic, must give the same answer however the bytes are chunked, and a log it
//! accepts must re-encode to exactly the same bytes (the format has one encoding per log, so a
//! corruption can never decode to a different log that looks valid).
//!
//! Input layout: `[mode, log bytes...]`. The log is also fed in pieces of `mode & 0x7f` bytes (0
//! counts as 1). If `mode & 0x80`, the target first rewrites the header's and the frames'
//! checksums to match their bytes: random mutations almost never keep a CRC-32C valid, so
//! without this the fuzzer would seldom get past the checksums to the entry parser. Run with `cargo +nightly fuzz run decode` from `crates/replay/fuzz`; the seeds in
//! `corpus/decode` are small valid logs, written by `REPLAY_WRITE_CORPUS=1 cargo test -p replay`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use replay::{Decoder, Entry, LogHeader, LogWriter, MAX_FRAME_LEN};

/// The entries, and after which of them each frame ended; `Err` if the log is rejected.
type Decoded = Result<(LogHeader, Vec<Entry>, Vec<usize>), replay::DecodeError>;

fn decode(log: &[u8], chunk: usize) -> Decoded {
    let mut d = Decoder::new();
    let mut entries = Vec::new();
    let mut frame_ends = Vec::new();
    let mut take = |d: &mut Decoder| -> Result<(), replay::DecodeError> {
        while let Some(e) = d.next_entry()? {
            entries.push(e);
            if d.at_frame_boundary() {
                frame_ends.push(entries.len());
            }
        }
        Ok(())
    };
    for c in log.chunks(chunk.max(1)) {
        d.push(c);
        take(&mut d)?;
    }
    d.end_input();
    take(&mut d)?;
    let header = d.header()?.cloned().expect("a decoded log has a header");
    Ok((header, entries, frame_ends))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, log)) = data.split_first() else {
        return;
    };
    let mut fixed;
    let log = if mode & 0x80 != 0 {
        fixed = log.to_vec();
        fix_checksums(&mut fixed);
        &fixed[..]
    } else {
        log
    };
    let chunk = mode & 0x7f;
    let whole = decode(log, log.len());
    let chunked = decode(log, usize::from(chunk));
    match (&whole, &chunked) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "chunking changed the entries"),
        (Err(_), Err(_)) => {}
        _ => panic!("chunking changed the verdict: {whole:?} vs {chunked:?}"),
    }
    let Ok((header, entries, frame_ends)) = whole else {
        return;
    };
    let mut w = LogWriter::new(Vec::new(), &header).expect("a decoded header re-encodes");
    w.set_batch_limit(MAX_FRAME_LEN);
    let mut ends = frame_ends.iter().peekable();
    for (i, e) in entries.iter().enumerate() {
        w.append(e).expect("a decoded entry re-encodes");
        if ends.peek() == Some(&&(i + 1)) {
            ends.next();
            w.flush().expect("writing to a Vec");
        }
    }
    w.flush().expect("writing to a Vec");
    assert_eq!(w.get_ref(), log, "a decoded log re-encodes differently");
});

/// Rewrites the header checksum and each frame's checksum (as far as the framing can be
/// followed) to match the bytes they cover.
fn fix_checksums(log: &mut [u8]) {
    let Some(&creator_len) = log.get(36) else {
        return;
    };
    let mut pos = 37 + usize::from(creator_len);
    if !set_crc(log, 0, pos) {
        return;
    }
    pos += 4;
    while pos < log.len() {
        // A loose LEB128 read: the decoder judges whether it is valid.
        let mut len = 0u64;
        let mut i = pos;
        loop {
            let Some(&b) = log.get(i) else { return };
            len |= u64::from(b & 0x7f) << (7 * (i - pos)).min(63);
            i += 1;
            if b < 0x80 || i - pos >= 10 {
                break;
            }
        }
        let Some(end) = usize::try_from(len).ok().and_then(|l| i.checked_add(l)) else {
            return;
        };
        if !set_crc(log, pos, end) {
            return;
        }
        pos = end + 4;
    }
}

/// Stores the CRC-32C of `log[from..to]` at `log[to..to + 4]`, if it fits.
fn set_crc(log: &mut [u8], from: usize, to: usize) -> bool {
    if to.checked_add(4).is_none_or(|e| e > log.len()) {
        return false;
    }
    let crc = crc32c::crc32c(&log[from..to]);
    log[to..to + 4].copy_from_slice(&crc.to_le_bytes());
    true
}
