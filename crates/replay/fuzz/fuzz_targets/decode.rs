//! Fuzzes the log decoder with untrusted bytes, as a backup gets them from the logging channel.
//! It must never panic, must give the same answer however the bytes are chunked, and a log it
//! accepts must re-encode to exactly the same bytes (the format has one encoding per log, so a
//! corruption can never decode to a different log that looks valid).
//!
//! Input layout: `[chunk, log bytes...]`: the log is also fed in pieces of `chunk` bytes (0 counts
//! as 1). Run with `cargo +nightly fuzz run decode` from `crates/replay/fuzz`; the seeds in
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
    let Some((&chunk, log)) = data.split_first() else {
        return;
    };
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
