//! Shared by the crate tests: a small seeded generator, sample logs, whole-log helpers.

#![allow(dead_code)]

use replay::{part, DecodeError, Decoder, DigestPart, Entry, Event, LogHeader, LogWriter};

/// xorshift64*: enough randomness for tests, no dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A value of random bit width, so that every varint length turns up.
    pub fn wide(&mut self) -> u64 {
        let bits = self.below(65);
        if bits == 0 {
            0
        } else {
            self.next() >> (64 - bits)
        }
    }

    pub fn bytes(&mut self, max: u64) -> Vec<u8> {
        let n = self.below(max + 1);
        (0..n).map(|_| self.next() as u8).collect()
    }
}

pub fn header() -> LogHeader {
    LogHeader {
        config_fingerprint: 0x0123_4567_89ab_cdef,
        base_icount: 1000,
        created_unix_ms: 1_700_000_000_000,
        creator: "ftvm test".into(),
    }
}

/// One entry of every kind, icounts ascending from the header's base.
pub fn every_kind() -> Vec<Entry> {
    let events = vec![
        Event::DeviceCompletion {
            device: 3,
            request: 7,
            data: b"hello".to_vec(),
        },
        Event::IdleSkip {
            hart: 1,
            until: 1200 + 3000,
        },
        Event::TimeSync { delta: -42 },
        Event::Pause,
        Event::Resume,
        Event::ConfigChange(b"mem=256M".to_vec()),
        Event::StateDigest(vec![
            DigestPart {
                id: part::CPU,
                digest: [0x11; 16],
            },
            DigestPart {
                id: part::RAM,
                digest: [0x22; 16],
            },
            DigestPart {
                id: part::DEVICES,
                digest: [0x33; 16],
            },
        ]),
        Event::DiskWrite {
            device: 4,
            sector: 123_456,
            data: vec![0xab; 512],
        },
        Event::OutputMarker {
            device: 0,
            seq: 9,
            len: 12,
        },
        Event::DiskRead {
            device: 7,
            offset: 65_536,
            len: 4096,
            digest: 0x0123_4567_89ab_cdef,
        },
        Event::RequestDone {
            device: 7,
            request: 300,
        },
        Event::TimeRate { rate: 403 },
        Event::PowerOff,
        Event::EndOfLog,
    ];
    let base = header().base_icount;
    events
        .into_iter()
        .zip(1..)
        .map(|(event, i)| Entry {
            icount: base + 100 * i,
            event,
        })
        .collect()
}

/// A random event at `icount` (never an end-of-log).
pub fn random_event(rng: &mut Rng, icount: u64) -> Event {
    match rng.below(13) {
        0 => Event::DeviceCompletion {
            data: {
                let max = if rng.below(20) == 0 { 5000 } else { 40 };
                rng.bytes(max)
            },
            device: rng.wide() as u32,
            request: rng.wide(),
        },
        1 => Event::IdleSkip {
            hart: rng.below(64) as u32,
            until: icount.saturating_add(rng.wide()),
        },
        2 => Event::TimeSync {
            delta: rng.wide() as i64,
        },
        3 => [Event::Pause, Event::Resume, Event::PowerOff][rng.below(3) as usize].clone(),
        4 => Event::ConfigChange(rng.bytes(30)),
        5 => {
            let mut id = 0u64;
            let parts = (0..rng.below(5))
                .map_while(|_| {
                    id += 1 + rng.wide() % 1000;
                    let id = u32::try_from(id).ok()?;
                    let mut digest = [0; 16];
                    digest.iter_mut().for_each(|b| *b = rng.next() as u8);
                    Some(DigestPart { id, digest })
                })
                .collect();
            Event::StateDigest(parts)
        }
        6 => Event::DiskWrite {
            device: rng.below(8) as u32,
            sector: rng.wide(),
            data: rng.bytes(1100),
        },
        7 => Event::DiskRead {
            device: rng.below(8) as u32,
            offset: rng.wide(),
            len: rng.wide(),
            digest: rng.wide(),
        },
        8 => Event::RequestDone {
            device: rng.below(8) as u32,
            request: rng.wide(),
        },
        9 => Event::TimeRate {
            rate: rng.wide() as u32,
        },
        _ => Event::OutputMarker {
            device: rng.wide() as u32,
            seq: rng.wide(),
            len: rng.wide(),
        },
    }
}

/// `n` random entries with non-decreasing icounts (often equal, sometimes huge jumps), then an
/// end-of-log marker if `end`.
pub fn random_entries(rng: &mut Rng, base: u64, n: usize, end: bool) -> Vec<Entry> {
    let mut icount = base;
    let mut v: Vec<Entry> = (0..n)
        .map(|_| {
            let step = match rng.below(4) {
                0 => 0,
                1 => rng.below(200),
                2 => rng.below(1 << 20),
                _ => rng.wide() >> 8,
            };
            icount = icount.saturating_add(step);
            Entry {
                icount,
                event: random_event(rng, icount),
            }
        })
        .collect();
    if end {
        v.push(Entry {
            icount,
            event: Event::EndOfLog,
        });
    }
    v
}

/// The log's bytes, with frames of at most `batch_limit` bytes of entries.
pub fn encode(header: &LogHeader, entries: &[Entry], batch_limit: usize) -> Vec<u8> {
    let mut w = LogWriter::new(Vec::new(), header).unwrap();
    w.set_batch_limit(batch_limit);
    for e in entries {
        w.append(e).unwrap();
    }
    w.flush().unwrap();
    w.get_ref().clone()
}

/// Decodes a whole log given at once.
pub fn decode_all(bytes: &[u8]) -> Result<(LogHeader, Vec<Entry>), DecodeError> {
    decode_chunked(bytes, bytes.len().max(1))
}

/// Decodes a whole log fed in chunks of `chunk` bytes, draining entries after each chunk.
pub fn decode_chunked(bytes: &[u8], chunk: usize) -> Result<(LogHeader, Vec<Entry>), DecodeError> {
    let mut d = Decoder::new();
    let mut out = Vec::new();
    for c in bytes.chunks(chunk) {
        d.push(c);
        while let Some(e) = d.next_entry()? {
            out.push(e);
        }
    }
    d.end_input();
    while let Some(e) = d.next_entry()? {
        out.push(e);
    }
    let header = d.header()?.cloned().expect("a decoded log has a header");
    Ok((header, out))
}
