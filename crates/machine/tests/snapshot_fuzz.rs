//! The snapshot decoder on hostile input, without `cargo fuzz` (which needs nightly): a few
//! thousand random and mutated snapshot files and payloads, built the way the fuzz target
//! builds them (`fuzz/fuzz_targets/common/snapshot_input.rs`), must each give an error or a
//! clean restore, never a panic. Also checks that the fuzz corpus still holds valid seeds.

#[path = "../fuzz/fuzz_targets/common/snapshot_input.rs"]
mod snapshot_input;

use snapshot_input::{file_for, machine, payload_of};

/// xorshift64*: reproducible randomness without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One random change: flip bits, overwrite with a random or extreme value, cut, insert.
fn mutate(rng: &mut Rng, v: &mut Vec<u8>) {
    if v.is_empty() {
        v.push(rng.next() as u8);
        return;
    }
    let at = rng.below(v.len());
    match rng.below(6) {
        0 => v[at] ^= 1 << rng.below(8),
        1 => v[at] = rng.next() as u8,
        2 => {
            let n = (v.len() - at).min(8);
            let val = [0u8, 0xff][rng.below(2)];
            v[at..at + n].fill(val);
        }
        3 => v.truncate(at),
        4 => v.insert(at, rng.next() as u8),
        _ => {
            let n = (v.len() - at).min(4);
            let val = (rng.next() as u32).to_le_bytes();
            v[at..at + n].copy_from_slice(&val[..n]);
        }
    }
}

fn restore(like: &[u8], input: &[u8]) -> bool {
    let file = file_for(like, input);
    let mut m = machine();
    let ok = m.load_snapshot(&file).is_ok();
    if ok {
        let _ = m.run(m.icount().saturating_add(1000));
        m.snapshot().expect("a restored machine snapshots again");
    }
    ok
}

#[test]
fn random_and_mutated_snapshots_never_panic() {
    let m = machine();
    let like = m.snapshot().unwrap();
    let payload = payload_of(&like);
    // The unmodified forms restore.
    assert!(restore(&like, &[&[0u8][..], &like].concat()));
    assert!(restore(&like, &[&[1u8][..], &like].concat()));
    assert!(restore(&like, &[&[2u8][..], &payload].concat()));

    let mut rng = Rng(0x5eed_cafe);
    let (mut tried, mut restored) = (0, 0);
    for i in 0..3000 {
        let mut input = match i % 4 {
            0 => [&[0u8][..], &like].concat(),
            1 => [&[1u8][..], &like].concat(),
            2 | 3 => [&[2u8][..], &payload].concat(),
            _ => unreachable!(),
        };
        if i % 50 == 49 {
            // Pure noise, of every mode.
            let n = rng.below(300);
            input = (0..n).map(|_| rng.next() as u8).collect();
        } else {
            for _ in 0..1 + rng.below(4) {
                mutate(&mut rng, &mut input);
            }
            // Keep the mode byte: a mutation of byte 0 would only switch modes.
            match input.first_mut() {
                Some(b) => *b = (i % 4).min(2) as u8,
                None => input.push(0),
            }
        }
        tried += 1;
        restored += usize::from(restore(&like, &input));
    }
    eprintln!("{tried} inputs, {restored} restored cleanly, the rest refused");
    assert!(
        restored < tried,
        "mutations must be refused most of the time"
    );
}

#[test]
fn fuzz_corpus_seeds_restore() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/snapshot");
    let like = machine().snapshot().unwrap();
    if std::env::var_os("MACHINE_WRITE_CORPUS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        let payload = payload_of(&like);
        std::fs::write(dir.join("payload"), [&[2u8][..], &payload].concat()).unwrap();
        std::fs::write(dir.join("file"), [&[0u8][..], &like].concat()).unwrap();
        let mut trunc = [&[1u8][..], &like[..like.len() / 2]].concat();
        trunc.truncate(like.len() / 2);
        std::fs::write(dir.join("file-cut"), trunc).unwrap();
    }
    let mut total = 0;
    let mut valid = 0;
    for f in std::fs::read_dir(&dir).unwrap() {
        let bytes = std::fs::read(f.unwrap().path()).unwrap();
        total += bytes.len();
        valid += usize::from(restore(&like, &bytes));
    }
    assert!(
        valid >= 2,
        "the corpus in {} lost its valid seeds",
        dir.display()
    );
    assert!(total < 64 * 1024, "the seed corpus is {total} bytes");
}
