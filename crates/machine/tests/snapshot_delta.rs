//! Delta snapshots: base at icount A, delta at B, restore base + delta and continue equals the
//! uninterrupted run; a delta of a mostly idle guest is a small fraction of the full snapshot;
//! deltas out of their chain are refused; mutated deltas give errors, never panics.
//!
//! The guest (assembled with `riscv64-unknown-elf-gcc`; without it the tests fail, or skip with
//! `FTVM_ALLOW_SKIP=1`) fills 4 MiB with pseudo-random data, then only counts in one
//! word of RAM and prints a letter now and then.

use machine::snapshot::SnapshotError;
use machine::uart::SerialBackend;
use machine::virtio::{EntropyBackend, NullConsole};
use machine::{Backends, DirtyConsumer, Firmware, Machine, MachineConfig};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

const PROGRAM: &str = r#"
    .globl _start
_start:
    li s0, 0x80200000
    li s1, 0x80600000
    li s2, 12345
    li s7, 6364136223846793005
    li s8, 1442695040888963407
fill:
    mul s2, s2, s7
    add s2, s2, s8
    sd s2, 0(s0)
    addi s0, s0, 8
    bltu s0, s1, fill
    li s0, 0x80100000
    li t2, 0x10000000
idle:
    ld t0, 0(s0)
    addi t0, t0, 1
    sd t0, 0(s0)
    andi t1, t0, 0x3ff
    bnez t1, idle
    li t1, 'x'
    sb t1, 0(t2)
    j idle
"#;

fn kernel() -> Option<&'static PathBuf> {
    static K: OnceLock<Option<PathBuf>> = OnceLock::new();
    K.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("ftvm-delta-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (s, elf, bin) = (dir.join("p.S"), dir.join("p.elf"), dir.join("p.bin"));
        std::fs::write(&s, PROGRAM).unwrap();
        let gcc = Command::new("riscv64-unknown-elf-gcc")
            .args([
                "-nostdlib",
                "-nostartfiles",
                "-march=rv64imac_zicsr",
                "-mabi=lp64",
                "-Wl,-Ttext=0x80000000",
                "-o",
            ])
            .arg(&elf)
            .arg(&s)
            .status();
        match gcc {
            Ok(st) => assert!(st.success(), "riscv64-unknown-elf-gcc failed"),
            Err(_) => {
                assert!(
                    std::env::var_os("FTVM_ALLOW_SKIP").is_some(),
                    "riscv64-unknown-elf-gcc is not installed (apt-get install gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf; FTVM_ALLOW_SKIP=1 skips)"
                );
                eprintln!("skipped: riscv64-unknown-elf-gcc is not installed");
                return None;
            }
        }
        let st = Command::new("riscv64-unknown-elf-objcopy")
            .args(["-O", "binary"])
            .arg(&elf)
            .arg(&bin)
            .status();
        assert!(st.is_ok_and(|s| s.success()), "objcopy failed");
        Some(bin)
    })
    .as_ref()
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);
impl SerialBackend for Capture {
    fn transmit(&mut self, bytes: &[u8]) {
        self.0.lock().unwrap().extend_from_slice(bytes);
    }
}

struct NoEntropy;
impl EntropyBackend for NoEntropy {
    fn fill(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        buf.fill(0);
        Ok(())
    }
}

fn config(mem_size: u64) -> MachineConfig {
    MachineConfig {
        mem_size,
        harts: 1,
        bios: Firmware::None,
        kernel: Some(kernel().unwrap().clone()),
        ..MachineConfig::default()
    }
}

fn backends() -> (Backends, Capture) {
    let out = Capture::default();
    (
        Backends {
            serial: Box::new(out.clone()),
            console: Box::new(NullConsole),
            entropy: Box::new(NoEntropy),
        },
        out,
    )
}

fn new(mem: u64) -> Machine {
    Machine::new(&config(mem), backends().0).unwrap()
}

fn restore(mem: u64, snap: &[u8]) -> (Machine, Capture) {
    let (b, out) = backends();
    (Machine::restore(&config(mem), b, snap).unwrap(), out)
}

const MEM: u64 = 64 << 20;
const A: u64 = 3_000_000;
const B: u64 = 4_000_000;
const C: u64 = 5_000_000;

#[test]
fn base_plus_delta_continues_as_never_stopped() {
    if kernel().is_none() {
        return;
    }
    let mut m = new(MEM);
    m.run(A);
    let t = Instant::now();
    let base = m.snapshot_base().unwrap();
    let full_time = t.elapsed();
    m.run(B);
    let digest_b = m.digest();
    let t = Instant::now();
    let delta = m.snapshot_delta().unwrap();
    let delta_time = t.elapsed();
    let full_b = m.snapshot().unwrap();
    m.run(C);
    let digest_c = m.digest();
    let delta2 = m.snapshot_delta().unwrap();
    eprintln!(
        "full snapshot {} bytes in {full_time:?}; delta {} bytes in {delta_time:?} (full at B: {} bytes)",
        base.len(),
        delta.len(),
        full_b.len()
    );
    assert!(
        delta.len() * 50 < full_b.len(),
        "delta {} vs full {}",
        delta.len(),
        full_b.len()
    );

    let (mut r, out) = restore(MEM, &base);
    r.apply_delta(&delta).unwrap();
    assert_eq!(r.icount(), B);
    assert_eq!(r.digest(), digest_b);
    r.run(C);
    assert_eq!(
        r.digest(),
        digest_c,
        "{:?}",
        r.digest().differences(&digest_c)
    );
    assert!(!out.0.lock().unwrap().is_empty(), "the guest printed");
    // The next delta of the chain applies on top.
    let (mut r2, _) = restore(MEM, &base);
    r2.apply_delta(&delta).unwrap();
    r2.apply_delta(&delta2).unwrap();
    assert_eq!(r2.digest(), digest_c);
}

#[test]
fn deltas_out_of_their_chain_are_refused() {
    if kernel().is_none() {
        return;
    }
    let mut m = new(MEM);
    m.run(A);
    let base = m.snapshot_base().unwrap();
    m.run(B);
    let d1 = m.snapshot_delta().unwrap();
    m.run(C);
    let d2 = m.snapshot_delta().unwrap();

    let wrong_base = |r: Result<(), SnapshotError>| match r {
        Err(e @ SnapshotError::WrongBase { .. }) => e.to_string(),
        other => panic!("expected a wrong-base error, got {other:?}"),
    };
    // Skipping a generation, or applying one twice.
    let (mut r, _) = restore(MEM, &base);
    let msg = wrong_base(r.apply_delta(&d2));
    assert!(
        msg.contains("generation 1") && msg.contains("generation 0"),
        "{msg}"
    );
    r.apply_delta(&d1).unwrap();
    wrong_base(r.apply_delta(&d1));
    // Another base: the same machine snapshotted at another point.
    let mut other = new(MEM);
    other.run(A + 1);
    let other_base = other.snapshot_base().unwrap();
    let (mut r, _) = restore(MEM, &other_base);
    wrong_base(r.apply_delta(&d1));
    // No base at all.
    let msg = wrong_base(new(MEM).apply_delta(&d1));
    assert!(msg.contains("no base"), "{msg}");
    assert!(matches!(
        new(MEM).snapshot_delta(),
        Err(SnapshotError::NoBase)
    ));
    // Another configuration.
    let small = Machine::restore(&config(32 << 20), backends().0, &base);
    assert!(small.is_err());
    let mut m32 = Machine::new(&config(32 << 20), backends().0).unwrap();
    assert!(matches!(
        m32.apply_delta(&d1),
        Err(SnapshotError::Config(_))
    ));
    // A full snapshot is not a delta, and a delta is not a full snapshot.
    let (mut r, _) = restore(MEM, &base);
    assert!(matches!(r.apply_delta(&base), Err(SnapshotError::NotDelta)));
    assert!(Machine::restore(&config(MEM), backends().0, &d1).is_err());
}

/// xorshift64
fn rng(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn mutated_deltas_never_panic() {
    if kernel().is_none() {
        return;
    }
    let mem = 16 << 20;
    let mut m = new(mem);
    m.run(A);
    let base = m.snapshot_base().unwrap();
    m.run(B);
    let delta = m.snapshot_delta().unwrap();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let (mut tried, mut applied) = (0, 0);
    for i in 0..600 {
        let mut v = delta.clone();
        match i % 4 {
            0 => v.truncate((rng(&mut seed) as usize) % v.len()),
            _ => {
                for _ in 0..1 + rng(&mut seed) % 4 {
                    let at = (rng(&mut seed) as usize) % v.len();
                    v[at] ^= 1 << (rng(&mut seed) % 8);
                }
            }
        }
        // Most mutations re-checksummed, so that they reach the decoder.
        if i % 4 != 3 && v.len() >= 4 {
            let n = v.len() - 4;
            let crc = crc32c::crc32c(&v[..n]);
            v[n..].copy_from_slice(&crc.to_le_bytes());
        }
        let mut r = Machine::restore(&config(mem), backends().0, &base).unwrap();
        tried += 1;
        if r.apply_delta(&v).is_ok() {
            applied += 1;
        }
    }
    eprintln!("{tried} mutated deltas, {applied} applied, the rest refused");
    assert!(applied < tried);
}

/// The live clone's copy: all pages while the guest runs, a round of the pages it wrote
/// meanwhile, then the delta with the rest; the target built from those equals the source.
#[test]
fn live_copy_in_rounds_then_delta_equals_the_source() {
    if kernel().is_none() {
        return;
    }
    let mut m = new(MEM);
    m.run(A);
    m.begin_live_copy(0x1234);
    let page = 4096usize;
    // Round 0 copies page by page while the guest runs between pages (as the clone does).
    let mut copy = vec![0u8; MEM as usize];
    let pages = MEM as usize / page;
    for i in 0..pages {
        copy[i * page..(i + 1) * page]
            .copy_from_slice(&m.ram().as_slice()[i * page..(i + 1) * page]);
        if i % 4096 == 0 {
            let at = m.icount() + 50_000;
            m.run(at);
        }
    }
    assert!(
        m.dirty_page_count(DirtyConsumer::LiveCopy) > 0,
        "the guest wrote while round 0 ran"
    );
    let round1 = m.take_dirty_pages(DirtyConsumer::LiveCopy);
    for &i in &round1 {
        copy[i * page..(i + 1) * page]
            .copy_from_slice(&m.ram().as_slice()[i * page..(i + 1) * page]);
    }
    m.run(B);
    let left = m.dirty_page_count(DirtyConsumer::LiveCopy);
    let delta = m.snapshot_live_copy_delta().unwrap();
    let want = m.digest();
    eprintln!(
        "round 1: {} pages; delta {} bytes for {left} pages",
        round1.len(),
        delta.len()
    );

    let mut t = new(MEM);
    assert!(matches!(
        t.adopt_live_copy(0x1234, &copy[..page]),
        Err(SnapshotError::Config(_))
    ));
    t.adopt_live_copy(0x1234, &copy).unwrap();
    t.apply_delta(&delta).unwrap();
    assert_eq!(t.digest(), want, "{:?}", t.digest().differences(&want));
    m.run(C);
    t.run(C);
    assert_eq!(t.digest(), m.digest());
    // A delta of another chain is refused.
    let mut u = new(MEM);
    u.adopt_live_copy(0x9999, &copy).unwrap();
    assert!(matches!(
        u.apply_delta(&delta),
        Err(SnapshotError::WrongBase { .. })
    ));
}

/// A delta snapshot taken while a live copy is under way, and the copy's round and closing
/// delta interleaved with the chain's deltas: each consumer has its own record of written
/// pages, so both targets — the one built from the copy, the one from base and deltas — equal
/// the source. (With one shared record, the delta would take pages away from the copy's
/// closing delta and the closing delta from the next delta.)
#[test]
fn a_delta_during_a_live_copy_loses_pages_for_neither() {
    if kernel().is_none() {
        return;
    }
    const PAGE: usize = 4096;
    let mut m = new(MEM);
    // The program fills 4 MiB page after page over its first ~2.6 M instructions.
    m.run(500_000);
    let base = m.snapshot_base().unwrap();
    m.begin_live_copy(0xc0de);
    let mut copy = m.ram().as_slice().to_vec();
    m.run(900_000);
    let round = m.take_dirty_pages(DirtyConsumer::LiveCopy);
    assert!(!round.is_empty());
    for &i in &round {
        copy[i * PAGE..(i + 1) * PAGE]
            .copy_from_slice(&m.ram().as_slice()[i * PAGE..(i + 1) * PAGE]);
    }
    m.run(1_300_000);
    let d1 = m.snapshot_delta().unwrap();
    m.run(1_700_000);
    let closing = m.snapshot_live_copy_delta().unwrap();
    let at_closing = m.digest();
    m.run(2_100_000);
    let d2 = m.snapshot_delta().unwrap();
    let at_d2 = m.digest();

    let mut copied = new(MEM);
    copied.adopt_live_copy(0xc0de, &copy).unwrap();
    copied.apply_delta(&closing).unwrap();
    assert_eq!(
        copied.digest(),
        at_closing,
        "the copy's target: {:?}",
        copied.digest().differences(&at_closing)
    );
    let (mut chained, _) = restore(MEM, &base);
    chained.apply_delta(&d1).unwrap();
    chained.apply_delta(&d2).unwrap();
    assert_eq!(
        chained.digest(),
        at_d2,
        "the chain's target: {:?}",
        chained.digest().differences(&at_d2)
    );
    assert!(matches!(
        m.snapshot_live_copy_delta(),
        Err(SnapshotError::NoLiveCopy)
    ));
}
