//! The fuzz target's seed corpus (`fuzz/corpus/decode`) holds valid logs: this keeps it so as
//! the format evolves. `REPLAY_WRITE_CORPUS=1 cargo test -p replay --test corpus` rewrites it.

mod common;

use std::path::PathBuf;

use common::{decode_all, encode, every_kind, header, random_entries, Rng};

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/decode")
}

/// The seeds: name, mode byte (see the fuzz target), log.
fn seeds() -> Vec<(&'static str, u8, Vec<u8>)> {
    let mut rng = Rng(3);
    let mut small = random_entries(&mut rng, header().base_icount, 40, true);
    for e in &mut small {
        if let replay::Event::DeviceCompletion { data, .. }
        | replay::Event::DiskWrite { data, .. } = &mut e.event
        {
            data.truncate(16);
        }
    }
    vec![
        ("header-only", 0x80, encode(&header(), &[], 100)),
        (
            "every-kind-framed-singly",
            1,
            encode(&header(), &every_kind(), 1),
        ),
        (
            "every-kind-batched",
            7,
            encode(&header(), &every_kind(), 1 << 16),
        ),
        ("random-40", 0x8d, encode(&header(), &small, 120)),
    ]
}

#[test]
fn fuzz_corpus_is_valid_and_small() {
    let dir = corpus_dir();
    if std::env::var_os("REPLAY_WRITE_CORPUS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, chunk, log) in seeds() {
            let mut bytes = vec![chunk];
            bytes.extend(log);
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
    let mut total = 0;
    let mut count = 0;
    for f in std::fs::read_dir(&dir).unwrap() {
        let path = f.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        total += bytes.len();
        count += 1;
        if let Err(e) = decode_all(&bytes[1..]) {
            panic!("seed {} no longer decodes: {e}", path.display());
        }
    }
    assert!(count >= 4, "seeds missing from {}", dir.display());
    assert!(total < 10_000, "seed corpus is {total} bytes");
}
