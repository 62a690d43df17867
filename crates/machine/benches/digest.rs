//! The RAM part of a state digest, at 256 MiB and 1 GiB: the old one-piece XXH3 of all of RAM,
//! the page-wise digest from scratch (a machine's first digest, or one just restored), and the
//! incremental digest after the guest wrote a few pages (what a recorder or replayer pays
//! every 100 M instructions). A measurement, not a test: `cargo bench -p machine --bench digest`.

use machine::snapshot::{ram_digest_full, RamDigest};
use rv64::ram::PAGE_SIZE;
use rv64::Ram;
use std::time::{Duration, Instant};

/// Best of `n` runs of `f`, and its result.
fn best<T>(n: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut out = None;
    let mut min = Duration::MAX;
    for _ in 0..n {
        let t = Instant::now();
        let r = f();
        min = min.min(t.elapsed());
        out = Some(r);
    }
    (min, out.expect("n > 0"))
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    const BASE: u64 = 0x8000_0000;
    for mib in [256usize, 1024] {
        let size = mib << 20;
        let mut ram = Ram::new(BASE, size);
        // Touch every page with something non-zero, as a booted guest's RAM would be.
        for p in 0..size as u64 / PAGE_SIZE {
            ram.write(BASE + p * PAGE_SIZE, &p.to_le_bytes()).unwrap();
        }
        let (one_piece, _) = best(5, || twox_hash::XxHash3_64::oneshot(ram.as_slice()));
        let (full, want) = best(5, || ram_digest_full(ram.as_slice()));
        let d = RamDigest::default();
        let (first, got) = best(1, || d.of(&ram));
        assert_eq!(got, want);
        let pages = ram.pages() as u64;
        let mut line = format!(
            "{mib:>5} MiB: one-piece XXH3 {}, page-wise from scratch {}, first incremental {}",
            ms(one_piece),
            ms(full),
            ms(first)
        );
        for dirty in [0u64, 16, 1024] {
            let mut seed = 0x9e37_79b9_7f4a_7c15u64;
            let (t, _) = best(5, || {
                for _ in 0..dirty {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                    let p = (seed >> 20) % pages;
                    ram.write(BASE + p * PAGE_SIZE + 8, &seed.to_le_bytes())
                        .unwrap();
                }
                d.of(&ram)
            });
            line += &format!(", {dirty} dirty pages {}", ms(t));
        }
        assert_eq!(d.of(&ram), ram_digest_full(ram.as_slice()));
        println!("{line}");
    }
}
