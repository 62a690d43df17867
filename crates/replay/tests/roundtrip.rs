//! Entries survive encode → decode, whatever the batching and however the bytes arrive; the
//! writer refuses what the format cannot say.

mod common;

use std::io::Cursor;

use common::{decode_all, decode_chunked, encode, every_kind, header, random_entries, Rng};
use replay::{
    DecodeError, Decoder, DigestPart, EncodeError, Entry, Event, LogHeader, LogReader, LogWriter,
    WriteError, DEFAULT_BATCH_LIMIT, MAX_FRAME_LEN,
};

#[test]
fn every_kind_round_trips_with_any_batching() {
    let entries = every_kind();
    for limit in [1, 16, 64, 600, DEFAULT_BATCH_LIMIT] {
        let bytes = encode(&header(), &entries, limit);
        let (h, got) = decode_all(&bytes).unwrap();
        assert_eq!(h, header());
        assert_eq!(got, entries, "batch limit {limit}");
    }
}

#[test]
fn every_kind_round_trips_through_log_reader() {
    let entries = every_kind();
    let bytes = encode(&header(), &entries, 100);
    let mut r = LogReader::new(Cursor::new(&bytes)).unwrap();
    assert_eq!(r.header(), &header());
    let mut got = Vec::new();
    while let Some(e) = r.next_entry().unwrap() {
        got.push(e);
    }
    assert_eq!(got, entries);
    assert!(r.is_ended());
    assert_eq!(r.position().entries, entries.len() as u64);
    assert_eq!(r.position().bytes, bytes.len() as u64);
    // And as an iterator.
    let r = LogReader::new(Cursor::new(&bytes)).unwrap();
    assert_eq!(r.collect::<Result<Vec<_>, _>>().unwrap(), entries);
}

#[test]
fn random_logs_round_trip_in_random_chunks() {
    for seed in 1..=300u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut h = header();
        h.base_icount = if rng.below(4) == 0 { rng.wide() } else { 0 };
        h.config_fingerprint = rng.next();
        h.creator = "x".repeat(rng.below(256) as usize);
        let n = rng.below(60) as usize;
        let end = rng.below(2) == 0;
        let entries = random_entries(&mut rng, h.base_icount, n, end);
        let limit = [1, 50, 4096, DEFAULT_BATCH_LIMIT][rng.below(4) as usize];
        let bytes = encode(&h, &entries, limit);
        let chunk = 1 + rng.below(300) as usize;
        let (got_h, got) = decode_chunked(&bytes, chunk).unwrap();
        assert_eq!(got_h, h, "seed {seed}");
        assert_eq!(got, entries, "seed {seed}");
        // Canonical: encoding what was decoded gives the same bytes.
        assert_eq!(encode(&got_h, &got, limit), bytes, "seed {seed}");
    }
}

#[test]
fn one_byte_chunks_give_the_same_entries() {
    let mut rng = Rng(77);
    let entries = random_entries(&mut rng, header().base_icount, 200, true);
    let bytes = encode(&header(), &entries, 300);
    assert_eq!(decode_chunked(&bytes, 1).unwrap().1, entries);
    assert_eq!(decode_chunked(&bytes, 7).unwrap().1, entries);
}

#[test]
fn decoder_hands_out_entries_as_soon_as_their_frame_is_complete() {
    let entries = every_kind();
    let mut w = LogWriter::new(Vec::new(), &header()).unwrap();
    let mut frame_ends = vec![w.position()];
    for e in &entries {
        w.append(e).unwrap();
        w.flush().unwrap();
        frame_ends.push(w.position());
    }
    let bytes = w.get_ref().clone();
    let mut d = Decoder::new();
    let mut got = 0u64;
    for (i, &b) in bytes.iter().enumerate() {
        d.push(&[b]);
        while d.next_entry().unwrap().is_some() {
            got += 1;
        }
        // Exactly the entries of complete frames are out.
        let done = frame_ends
            .iter()
            .rfind(|p| p.bytes <= i as u64 + 1)
            .map_or(0, |p| p.entries);
        assert_eq!(got, done, "after {} bytes", i + 1);
        assert!(d.at_frame_boundary());
    }
    assert!(d.is_ended());
    assert_eq!(d.position().bytes, bytes.len() as u64);
    assert_eq!(d.buffered(), 0);
}

#[test]
fn writer_tracks_positions_and_batches() {
    let mut w = LogWriter::new(Vec::new(), &header()).unwrap();
    let header_len = w.get_ref().len() as u64;
    assert_eq!(w.position().bytes, header_len);
    for (i, e) in every_kind().iter().take(3).enumerate() {
        assert_eq!(w.append(e).unwrap(), i as u64);
    }
    // Batched, not yet out.
    assert_eq!(w.position().entries, 0);
    assert_eq!(w.appended(), 3);
    assert_eq!(w.get_ref().len() as u64, header_len);
    w.flush().unwrap();
    assert_eq!(w.position().entries, 3);
    assert_eq!(w.position().bytes, w.get_ref().len() as u64);
    // A flush with nothing pending writes nothing.
    w.flush().unwrap();
    assert_eq!(w.position().bytes, w.get_ref().len() as u64);
    assert_eq!(w.last_icount(), 1300);
}

/// A reader that seeks to a position the writer reported (at a frame boundary, after some
/// flushes and some full batches) reads exactly the entries after it; a position inside a
/// frame fails instead.
#[test]
fn a_reader_resumes_at_any_position_the_writer_reported() {
    let mut rng = Rng(0x5eed_1234);
    let entries = random_entries(&mut rng, header().base_icount, 400, true);
    let mut w = LogWriter::new(Vec::new(), &header()).unwrap();
    w.set_batch_limit(300);
    let mut positions = vec![w.position()];
    for e in &entries {
        w.append(e).unwrap();
        if rng.below(10) == 0 {
            w.flush().unwrap();
        }
        if positions.last() != Some(&w.position()) {
            positions.push(w.position());
        }
    }
    w.flush().unwrap();
    let bytes = w.get_ref().clone();
    assert!(positions.len() > 20, "{} positions", positions.len());
    for at in &positions {
        let mut r = LogReader::new(Cursor::new(&bytes)).unwrap();
        r.seek_to(*at).unwrap();
        let mut got = Vec::new();
        while let Some(e) = r.next_entry().unwrap() {
            got.push(e);
        }
        assert_eq!(got, entries[at.entries as usize..], "from {at:?}");
        assert_eq!(r.position().entries, entries.len() as u64);
    }
    let mut inside = positions[5];
    inside.bytes += 3;
    let mut r = LogReader::new(Cursor::new(&bytes)).unwrap();
    r.seek_to(inside).unwrap();
    assert!(
        r.next_entry().is_err(),
        "a position inside a frame reads nothing"
    );
}

#[test]
fn big_batches_split_at_the_limit() {
    let mut w = LogWriter::new(Vec::new(), &header()).unwrap();
    w.set_batch_limit(1000);
    let e = Entry {
        icount: 2000,
        event: Event::ConfigChange(vec![7; 300]),
    };
    for _ in 0..3 {
        w.append(&e).unwrap();
    }
    // Three 300-byte entries fit; the fourth goes to a new frame and pushes out the first three.
    assert_eq!(w.position().entries, 0);
    w.append(&e).unwrap();
    assert_eq!(w.position().entries, 3);
    // An entry bigger than the limit goes out at once, alone.
    w.append(&Entry {
        icount: 2000,
        event: Event::ConfigChange(vec![7; 5000]),
    })
    .unwrap();
    assert_eq!(w.position().entries, 5);
    let bytes = w.finish(3000).unwrap();
    let (_, got) = decode_all(&bytes).unwrap();
    assert_eq!(got.len(), 6);
}

#[test]
fn largest_entry_fits_and_one_more_byte_does_not() {
    // kind (1) + length varint (4) + icount delta (1) + config bytes
    let fits = MAX_FRAME_LEN - 6;
    let mut w = LogWriter::new(Vec::new(), &header()).unwrap();
    w.append(&Entry {
        icount: 1000,
        event: Event::ConfigChange(vec![1; fits]),
    })
    .unwrap();
    let err = w
        .append(&Entry {
            icount: 1000,
            event: Event::ConfigChange(vec![1; fits + 1]),
        })
        .unwrap_err();
    assert!(matches!(
        err,
        WriteError::Encode(EncodeError::EntryTooLarge { entry: 1, .. })
    ));
    let bytes = w.finish(1000).unwrap();
    let (_, got) = decode_all(&bytes).unwrap();
    assert_eq!(got.len(), 2);
}

fn refused(entry: Entry) -> EncodeError {
    let mut w = LogWriter::new(Vec::new(), &header()).unwrap();
    w.append(&Entry {
        icount: 2000,
        event: Event::Pause,
    })
    .unwrap();
    match w.append(&entry) {
        Err(WriteError::Encode(e)) => {
            // Nothing changed: the log is still valid and holds the first entry only.
            assert_eq!(w.appended(), 1);
            let bytes = w.finish(2000).unwrap();
            assert_eq!(decode_all(&bytes).unwrap().1.len(), 2);
            e
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn writer_refuses_what_the_format_cannot_say() {
    let e = refused(Entry {
        icount: 1999,
        event: Event::Resume,
    });
    assert_eq!(
        e.to_string(),
        "entry 1 (resume) is at icount 1999, before the previous entry's icount 2000: entries must be appended in icount order"
    );
    assert!(matches!(
        refused(Entry {
            icount: 3000,
            event: Event::IdleSkip {
                hart: 0,
                until: 2999
            }
        }),
        EncodeError::IdleEndsBeforeStart { entry: 1, .. }
    ));
    let d = |id| DigestPart {
        id,
        digest: [0; 16],
    };
    for parts in [vec![d(1), d(1)], vec![d(2), d(1)]] {
        assert_eq!(
            refused(Entry {
                icount: 3000,
                event: Event::StateDigest(parts)
            }),
            EncodeError::DigestPartsOrder { entry: 1 }
        );
    }
    // Before the header's base icount.
    let mut w = LogWriter::new(Vec::new(), &header()).unwrap();
    assert!(w
        .append(&Entry {
            icount: 999,
            event: Event::Pause
        })
        .is_err());
}

#[test]
fn nothing_after_end_of_log() {
    let mut w = LogWriter::new(Vec::new(), &header()).unwrap();
    w.append(&Entry {
        icount: 1000,
        event: Event::EndOfLog,
    })
    .unwrap();
    let err = w
        .append(&Entry {
            icount: 1000,
            event: Event::Pause,
        })
        .unwrap_err();
    assert!(matches!(
        err,
        WriteError::Encode(EncodeError::AfterEnd { entry: 1, .. })
    ));
}

#[test]
fn creator_longer_than_255_bytes_is_refused() {
    let mut h = header();
    h.creator = "é".repeat(128);
    assert!(matches!(
        LogWriter::new(Vec::new(), &h),
        Err(WriteError::Encode(EncodeError::CreatorTooLong { len: 256 }))
    ));
}

#[test]
fn a_failed_write_poisons_the_writer() {
    struct Full(usize);
    impl std::io::Write for Full {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            if self.0 == 0 {
                return Err(std::io::Error::other("disk full"));
            }
            let n = b.len().min(self.0);
            self.0 -= n;
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut w = LogWriter::new(Full(60), &header()).unwrap();
    w.append(&every_kind()[0]).unwrap();
    assert!(matches!(w.flush(), Err(WriteError::Io(_))));
    assert!(matches!(w.flush(), Err(WriteError::Poisoned)));
    assert!(matches!(
        w.append(&every_kind()[1]),
        Err(WriteError::Poisoned)
    ));
}

#[test]
fn empty_log_and_header_only_log() {
    // A header and no frames is a valid (empty) log: the primary died before logging anything.
    let bytes = encode(&header(), &[], 100);
    let (h, got) = decode_all(&bytes).unwrap();
    assert_eq!((h, got), (header(), vec![]));
    // Zero bytes is not a log.
    assert_eq!(
        decode_all(&[]).unwrap_err(),
        DecodeError::TruncatedHeader { have: 0, need: 41 }
    );
}

#[test]
fn header_fields_survive() {
    let h = LogHeader {
        config_fingerprint: u64::MAX,
        base_icount: u64::MAX,
        created_unix_ms: 42,
        creator: "ünïcode ✓".into(),
    };
    let bytes = encode(
        &h,
        &[Entry {
            icount: u64::MAX,
            event: Event::EndOfLog,
        }],
        10,
    );
    let (got_h, got) = decode_all(&bytes).unwrap();
    assert_eq!(got_h, h);
    assert_eq!(got[0].icount, u64::MAX);
}

#[test]
fn log_reader_copes_with_short_and_interrupted_reads() {
    /// Returns one byte per read, with an `Interrupted` error before every other byte.
    struct Trickle<'a>(&'a [u8], bool);
    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.1 = !self.1;
            if self.1 {
                return Err(std::io::ErrorKind::Interrupted.into());
            }
            match self.0.split_first() {
                Some((&b, rest)) if !buf.is_empty() => {
                    buf[0] = b;
                    self.0 = rest;
                    Ok(1)
                }
                _ => Ok(0),
            }
        }
    }
    let entries = every_kind();
    let bytes = encode(&header(), &entries, 40);
    let r = LogReader::new(Trickle(&bytes, false)).unwrap();
    assert_eq!(r.collect::<Result<Vec<_>, _>>().unwrap(), entries);
    // Cut short: the entries of complete frames, then an error naming the truncation.
    let mut r = LogReader::new(Trickle(&bytes[..bytes.len() - 1], false)).unwrap();
    let mut n = 0;
    let err = loop {
        match r.next_entry() {
            Ok(Some(_)) => n += 1,
            Ok(None) => panic!("a cut-off frame must not end cleanly"),
            Err(e) => break e,
        }
    };
    assert!(n > 0 && n < entries.len());
    assert!(
        err.to_string()
            .contains("truncated in the middle of a frame"),
        "{err}"
    );
}
