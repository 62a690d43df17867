//! Bad bytes give clear errors, never a panic and never a silently different log: every single
//! bit flip, every truncation, and each malformation a hostile peer could craft.

mod common;

use common::{decode_all, encode, every_kind, header, random_entries, Rng};
use replay::{DecodeError, Decoder, Entry, Event, LogWriter};

/// A frame around `body` with a correct length and checksum (so only the body is wrong).
fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    let mut n = body.len() as u64;
    while n >= 0x80 {
        f.push(n as u8 | 0x80);
        n >>= 7;
    }
    f.push(n as u8);
    f.extend_from_slice(body);
    let crc = crc32c_of(&f);
    f.extend_from_slice(&crc.to_le_bytes());
    f
}

/// CRC-32C (Castagnoli), bit by bit: an independent check of the crate's checksums.
fn crc32c_of(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A valid header (base icount 1000) and its length.
fn head() -> Vec<u8> {
    let mut v = Vec::new();
    replay::encode_header(&mut v, &header()).unwrap();
    v
}

fn with_frames(bodies: &[&[u8]]) -> Vec<u8> {
    let mut v = head();
    for b in bodies {
        v.extend(frame(b));
    }
    v
}

fn err(bytes: &[u8]) -> DecodeError {
    decode_all(bytes).expect_err("must not decode")
}

#[test]
fn independent_crc_agrees() {
    assert_eq!(crc32c_of(b"123456789"), 0xe306_9283);
    let h = head();
    let n = h.len();
    assert_eq!(
        crc32c_of(&h[..n - 4]).to_le_bytes(),
        [h[n - 4], h[n - 3], h[n - 2], h[n - 1]]
    );
}

#[test]
fn every_single_bit_flip_is_detected() {
    for limit in [1, 64, 1 << 16] {
        let bytes = encode(&header(), &every_kind(), limit);
        for bit in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode_all(&b).is_err(),
                "flip of bit {} in byte {} (batch limit {limit}) went unnoticed",
                bit % 8,
                bit / 8
            );
        }
    }
}

#[test]
fn random_multi_bit_damage_never_panics_or_misleads() {
    let mut rng = Rng(5);
    let entries = random_entries(&mut rng, header().base_icount, 30, true);
    let bytes = encode(&header(), &entries, 200);
    for _ in 0..3000 {
        let mut b = bytes.clone();
        for _ in 0..1 + rng.below(4) {
            let i = rng.below(b.len() as u64) as usize;
            b[i] = rng.next() as u8;
        }
        if b == bytes {
            continue;
        }
        // A CRC-32C misses some multi-byte damage only with odds of 2^-32 per frame.
        assert!(decode_all(&b).is_err());
    }
}

#[test]
fn truncation_at_every_offset() {
    let entries = every_kind();
    let mut w = LogWriter::new(Vec::new(), &header()).unwrap();
    let mut boundaries = vec![w.position()];
    for e in &entries {
        w.append(e).unwrap();
        if w.appended() % 3 == 0 {
            w.flush().unwrap();
            boundaries.push(w.position());
        }
    }
    w.flush().unwrap();
    boundaries.push(w.position());
    let bytes = w.get_ref().clone();
    let header_len = boundaries[0].bytes as usize;
    for cut in 0..bytes.len() {
        let prefix = &bytes[..cut];
        match boundaries.iter().find(|p| p.bytes == cut as u64) {
            // At a frame boundary: a clean end with the entries so far.
            Some(p) => {
                let (_, got) = decode_all(prefix).unwrap();
                assert_eq!(got, entries[..p.entries as usize], "cut at {cut}");
            }
            None => {
                let e = err(prefix);
                if cut < header_len {
                    assert!(matches!(e, DecodeError::TruncatedHeader { have, .. } if have == cut));
                } else {
                    assert!(
                        matches!(e, DecodeError::TruncatedFrame { .. }),
                        "cut at {cut}: {e}"
                    );
                }
                // Without end of input it is only "not yet", never an error.
                let mut d = Decoder::new();
                d.push(prefix);
                while d.next_entry().unwrap().is_some() {}
            }
        }
    }
}

#[test]
fn truncation_message_names_the_frame() {
    let mut bytes = with_frames(&[&[4, 1, 0], &[5, 1, 0]]);
    let second = bytes.len() - 8;
    bytes.truncate(bytes.len() - 2);
    assert_eq!(
        err(&bytes).to_string(),
        format!("the log is truncated in the middle of a frame: the frame at byte offset {second} (entries from 1 on) needs at least 8 bytes, only 6 arrived")
    );
}

#[test]
fn bad_magic_is_reported_from_the_first_byte() {
    let mut d = Decoder::new();
    d.push(b"F");
    assert!(d.next_entry().unwrap().is_none());
    d.push(b"X");
    let e = d.next_entry().unwrap_err();
    assert_eq!(
        e,
        DecodeError::BadMagic {
            found: b"FX".to_vec()
        }
    );
    assert!(e.to_string().starts_with("not an ftvm log"));
    // And it stays failed.
    d.push(&head());
    assert_eq!(d.next_entry().unwrap_err(), e);
    let mut elf = b"\x7fELF\x02\x01\x01\0".to_vec();
    elf.extend([0; 64]);
    assert!(matches!(err(&elf), DecodeError::BadMagic { .. }));
}

#[test]
fn unsupported_version_and_flags() {
    let mut b = head();
    b[8] = 9;
    let e = err(&b[..10]);
    assert_eq!(e, DecodeError::UnsupportedVersion { version: 9 });
    assert_eq!(
        e.to_string(),
        "log format version 9 is not supported: this build reads version 8 (log written by another ftvm version: replay it with the one that recorded it)"
    );
    // Version 7, whose network card offered fewer features, says so.
    b[8] = 7;
    assert_eq!(
        err(&b[..10]).to_string(),
        "log format version 7 is not supported: this build reads version 8 (a version 7 log's \
         network card offers no checksum offload or mergeable buffers, so its guest negotiated \
         other features than this build's card offers: replay it with the ftvm that recorded it)"
    );
    // Version 6, whose snapshots have no clock rate, says so.
    b[8] = 6;
    assert_eq!(
        err(&b[..10]).to_string(),
        "log format version 6 is not supported: this build reads version 8 (a version 6 log's \
         prologue holds a snapshot of version 3, whose clock has no rate: replay it with the \
         ftvm that recorded it)"
    );
    // Version 5, whose disk requests complete inside device passes, says so.
    b[8] = 5;
    assert_eq!(
        err(&b[..10]).to_string(),
        "log format version 5 is not supported: this build reads version 8 (a version 5 log's \
         disk requests complete inside the device pass that takes them, this build's at logged \
         completion points: replay it with the ftvm that recorded it)"
    );
    // Version 4, whose digests hash RAM in one piece, says so.
    b[8] = 4;
    assert_eq!(
        err(&b[..10]).to_string(),
        "log format version 4 is not supported: this build reads version 8 (a version 4 log's \
         state digests hash RAM in one piece, this build's hash it page by page: replay it with \
         the ftvm that recorded it)"
    );
    // Versions 1 to 4, from before disks, the network card, disk-read digests and page-wise
    // RAM digests: refused as well.
    for old in [1, 2, 3, 4, 5, 6, 7] {
        let mut b = head();
        b[8] = old;
        assert_eq!(
            err(&b[..10]),
            DecodeError::UnsupportedVersion {
                version: u16::from(old)
            }
        );
    }
    let mut b = head();
    b[11] = 0x80;
    assert_eq!(err(&b), DecodeError::UnsupportedFlags { flags: 0x8000 });
}

#[test]
fn header_checksum_and_creator() {
    let mut b = head();
    b[20] ^= 1; // base icount
    assert!(matches!(err(&b), DecodeError::HeaderChecksum { .. }));
    // Invalid UTF-8 with a valid checksum.
    let mut b = head();
    let n = b.len();
    b[37] = 0xff;
    let crc = crc32c_of(&b[..n - 4]);
    b[n - 4..].copy_from_slice(&crc.to_le_bytes());
    assert_eq!(err(&b), DecodeError::CreatorNotUtf8);
}

#[test]
fn frame_checksum_names_offset_and_entry() {
    let mut b = with_frames(&[&[4, 1, 0], &[4, 1, 0, 5, 1, 0]]);
    let second = head().len() + 8;
    b[second + 2] = 6; // kind of entry 1: pause → power-off
    let e = err(&b);
    assert!(
        matches!(e, DecodeError::FrameChecksum { offset, entry: 1, .. } if offset == second as u64),
        "{e}"
    );
    assert!(e.to_string().starts_with(&format!(
        "checksum mismatch in the frame at byte offset {second} (entries from 1 on)"
    )));
}

#[test]
fn hostile_lengths_fail_before_any_allocation() {
    // 2^28 - 1: four bytes are enough to know, no need to wait for the body.
    let mut d = Decoder::new();
    d.push(&head());
    d.push(&[0xff, 0xff, 0xff, 0x7f]);
    let e = d.next_entry().unwrap_err();
    assert!(matches!(e, DecodeError::FrameTooLarge { len, .. } if len == (1 << 28) - 1));
    // Still unfinished after four bytes.
    let mut d = Decoder::new();
    d.push(&head());
    d.push(&[0x80, 0x80, 0x80, 0x80]);
    assert!(matches!(
        d.next_entry().unwrap_err(),
        DecodeError::FrameTooLarge { .. }
    ));
    // Just over the limit.
    let mut d = Decoder::new();
    d.push(&head());
    d.push(&[0x81, 0x80, 0x80, 0x08]);
    assert!(matches!(
        d.next_entry().unwrap_err(),
        DecodeError::FrameTooLarge { len, .. } if len == (16 << 20) + 1
    ));
    // Exactly the limit is merely "not yet".
    let mut d = Decoder::new();
    d.push(&head());
    d.push(&[0x80, 0x80, 0x80, 0x08]);
    assert!(d.next_entry().unwrap().is_none());
    // Entry length beyond its frame.
    let e = err(&with_frames(&[&[4, 0x7f, 0]]));
    assert!(
        matches!(e, DecodeError::BadEntry { entry: 0, why, .. } if why.contains("past the end of its frame")),
        "{e}"
    );
    // Overlong frame length varint.
    let mut b = head();
    b.extend([0x83, 0x00, 4, 1, 0]);
    assert!(matches!(err(&b), DecodeError::BadFrameLength { .. }));
}

#[test]
fn empty_frame() {
    let b = with_frames(&[&[]]);
    assert!(matches!(err(&b), DecodeError::EmptyFrame { .. }));
}

#[test]
fn unknown_kinds_are_rejected_not_misparsed() {
    for kind in [0u8, 15, 200, 255] {
        let b = with_frames(&[&[4, 1, 0], &[kind, 1, 0]]);
        let e = err(&b);
        let offset = head().len() as u64 + 8 + 1;
        assert_eq!(
            e,
            DecodeError::UnknownKind {
                kind,
                entry: 1,
                offset
            }
        );
        assert_eq!(
            e.to_string(),
            format!("unsupported entry kind {kind} at entry 1 (byte offset {offset}) (log written by a newer ftvm?)")
        );
    }
}

#[test]
fn icount_cannot_wrap() {
    // Base 1000; a delta of 2^64 - 1000 would wrap to 0.
    let delta = u64::MAX - 999;
    let mut body = vec![4, 0];
    let mut n = delta;
    while n >= 0x80 {
        body.push(n as u8 | 0x80);
        n >>= 7;
    }
    body.push(n as u8);
    body[1] = (body.len() - 2) as u8;
    let e = err(&with_frames(&[&[4, 1, 0], &body]));
    assert!(
        matches!(e, DecodeError::IcountOverflow { entry: 1, .. }),
        "{e}"
    );
    // An idle skip's end past 2^64-1.
    let mut body = vec![2, 0, 0, 0];
    body.extend([0xff; 9]);
    body.push(1);
    body[1] = (body.len() - 2) as u8;
    let e = err(&with_frames(&[&body]));
    assert!(
        matches!(e, DecodeError::BadEntry { why, .. } if why.contains("2^64")),
        "{e}"
    );
}

#[test]
fn malformed_entries() {
    let why = |body: &[u8]| match err(&with_frames(&[body])) {
        DecodeError::BadEntry { why, .. } => why,
        e => panic!("{e}"),
    };
    // Pause with a stray byte.
    assert!(why(&[4, 2, 0, 9]).contains("left over"));
    // Output marker missing its last field.
    assert!(why(&[10, 3, 0, 1, 2]).contains("past the end of the entry"));
    // Device number of 2^32.
    assert!(why(&[1, 7, 0, 0x80, 0x80, 0x80, 0x80, 0x10, 0]).contains("32 bits"));
    // Overlong varint in a field.
    assert!(why(&[3, 3, 0, 0x80, 0x00]).contains("not a valid varint"));
    // Overlong entry length.
    assert!(why(&[4, 0x81, 0x00, 0]).contains("not a valid varint"));
    // Digest cut short, and digest ids not ascending.
    assert!(why(&[8, 5, 0, 0, 1, 2, 3]).contains("digest runs past"));
    let mut digest = vec![8, 35, 0, 1];
    digest.extend([0; 16]);
    digest.push(1);
    digest.extend([0; 16]);
    assert!(why(&digest).contains("ascend"));
    // Entries shorter than their kind byte and length.
    assert!(why(&[4]).contains("length runs past"));
}

#[test]
fn nothing_may_follow_end_of_log() {
    // In the same frame.
    let e = err(&with_frames(&[&[11, 1, 0, 4, 1, 0]]));
    assert!(matches!(e, DecodeError::AfterEnd { .. }), "{e}");
    // In a later frame.
    let e = err(&with_frames(&[&[11, 1, 0], &[4, 1, 0]]));
    assert!(matches!(e, DecodeError::AfterEnd { .. }), "{e}");
    // Even garbage.
    let mut b = with_frames(&[&[11, 1, 0]]);
    b.push(0);
    assert!(matches!(err(&b), DecodeError::AfterEnd { .. }));
}

#[test]
fn hand_made_frames_decode_as_expected() {
    let (_, got) = decode_all(&with_frames(&[&[4, 1, 5, 2, 3, 7, 0, 3], &[11, 1, 0]])).unwrap();
    assert_eq!(
        got,
        vec![
            Entry {
                icount: 1005,
                event: Event::Pause
            },
            Entry {
                icount: 1012,
                event: Event::IdleSkip {
                    hart: 0,
                    until: 1015
                }
            },
            Entry {
                icount: 1012,
                event: Event::EndOfLog
            },
        ]
    );
}
