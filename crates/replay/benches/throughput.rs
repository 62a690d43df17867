//! Encode and decode 1 M small entries (a mix like a steady-state log: idle skips, console
//! bytes, time syncs, output markers, a digest now and then) and print sizes and speeds.
//! A measurement, not a test: `cargo bench -p replay`.

use std::time::Instant;

use replay::{part, Decoder, DigestPart, Entry, Event, LogHeader, LogWriter};

const N: u64 = 1_000_000;

fn entry(i: u64) -> Entry {
    let icount = i * 997;
    let event = match i % 8 {
        0..=2 => Event::IdleSkip {
            hart: (i % 4) as u32,
            until: icount + 500 + i % 300,
        },
        3..=4 => Event::DeviceCompletion {
            device: 0,
            request: i,
            data: vec![b'a' + (i % 26) as u8],
        },
        5 => Event::OutputMarker {
            device: 2,
            seq: i,
            len: 60 + i % 1000,
        },
        6 => Event::TimeSync {
            delta: (i % 7) as i64 - 3,
        },
        _ if i % 1024 == 7 => Event::StateDigest(
            [part::CPU, part::RAM, part::DEVICES]
                .map(|id| DigestPart {
                    id,
                    digest: [i as u8; 16],
                })
                .to_vec(),
        ),
        _ => Event::Pause,
    };
    Entry { icount, event }
}

fn main() {
    let header = LogHeader {
        config_fingerprint: 0x1234,
        base_icount: 0,
        created_unix_ms: 0,
        creator: "bench".into(),
    };
    let entries: Vec<Entry> = (0..N).map(entry).collect();

    let t = Instant::now();
    let mut w = LogWriter::new(Vec::with_capacity(16 << 20), &header).unwrap();
    for e in &entries {
        w.append(e).unwrap();
    }
    let bytes = w.finish(N * 997).unwrap();
    let enc = t.elapsed();

    let t = Instant::now();
    let mut d = Decoder::new();
    let mut count = 0u64;
    for chunk in bytes.chunks(64 << 10) {
        d.push(chunk);
        while let Some(e) = d.next_entry().unwrap() {
            std::hint::black_box(&e);
            count += 1;
        }
    }
    d.end_input();
    assert!(d.next_entry().unwrap().is_none());
    let dec = t.elapsed();
    assert_eq!(count, N + 1);

    let mb = bytes.len() as f64 / 1e6;
    println!(
        "{N} entries, {} bytes, {:.2} bytes/entry",
        bytes.len(),
        bytes.len() as f64 / N as f64
    );
    println!(
        "encode: {:.1} ms, {:.0} MB/s, {:.1} M entries/s",
        enc.as_secs_f64() * 1e3,
        mb / enc.as_secs_f64(),
        N as f64 / enc.as_secs_f64() / 1e6
    );
    println!(
        "decode: {:.1} ms, {:.0} MB/s, {:.1} M entries/s",
        dec.as_secs_f64() * 1e3,
        mb / dec.as_secs_f64(),
        N as f64 / dec.as_secs_f64() / 1e6
    );
}
