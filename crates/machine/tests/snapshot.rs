//! Whole-machine snapshots: restore-and-continue equals never having stopped (digests and UART
//! output), snapshots from other configurations are refused, and damaged snapshot files give
//! errors, never panics. Also measures snapshot size and time for a 256 MiB machine.
//!
//! The guest is a small M-mode program assembled with `riscv64-unknown-elf-gcc`; without the
//! toolchain the tests fail naming the package (with `FTVM_ALLOW_SKIP=1` they skip instead,
//! saying so on stderr).

use machine::snapshot::{SnapshotError, StateDigest, MAGIC, VERSION};
use machine::uart::SerialBackend;
use machine::virtio::{EntropyBackend, NullConsole};
use machine::{Backends, Firmware, Machine, MachineConfig};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

/// Each hart fills its own 8 KiB of RAM with an LCG sequence and sums into an FP register;
/// hart 0 prints a letter every 1024 iterations; a timer interrupt every 500 ticks reprograms
/// `mtimecmp` and counts in s6.
const PROGRAM: &str = r#"
    .globl _start
_start:
    csrr a0, mhartid
    la t0, trap
    csrw mtvec, t0
    li t0, 1 << 13
    csrs mstatus, t0
    li t1, 0x200bff8
    ld t2, 0(t1)
    addi t2, t2, 500
    li t1, 0x2004000
    slli t3, a0, 3
    add t1, t1, t3
    sd t2, 0(t1)
    li t0, 0x80
    csrs mie, t0
    csrsi mstatus, 8
    li s0, 0x80100000
    slli t3, a0, 16
    add s0, s0, t3
    li s1, 12345
    add s1, s1, a0
    li s2, 0
    fcvt.d.l fs0, s1
    li s7, 6364136223846793005
    li s8, 1442695040888963407
loop:
    mul s1, s1, s7
    add s1, s1, s8
    andi t1, s2, 1023
    slli t1, t1, 3
    add t1, t1, s0
    sd s1, 0(t1)
    fcvt.d.l ft0, s2
    fadd.d fs0, fs0, ft0
    addi s2, s2, 1
    andi t1, s2, 1023
    bnez t1, loop
    bnez a0, loop
    srli t1, s1, 60
    addi t1, t1, 'a'
    li t2, 0x10000000
    sb t1, 0(t2)
    j loop
    .align 2
trap:
    li s3, 0x200bff8
    ld s4, 0(s3)
    addi s4, s4, 500
    li s3, 0x2004000
    csrr s5, mhartid
    slli s5, s5, 3
    add s3, s3, s5
    sd s4, 0(s3)
    addi s6, s6, 1
    mret
"#;

/// The assembled program (once per test binary), or `None` without the toolchain.
fn kernel() -> Option<&'static Path> {
    static K: OnceLock<Option<PathBuf>> = OnceLock::new();
    K.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("ftvm-snapshot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let (s, elf, bin) = (dir.join("p.S"), dir.join("p.elf"), dir.join("p.bin"));
        std::fs::write(&s, PROGRAM).expect("write source");
        let gcc = Command::new("riscv64-unknown-elf-gcc")
            .args([
                "-nostdlib",
                "-nostartfiles",
                "-march=rv64imafdc_zicsr",
                "-mabi=lp64d",
                "-Wl,--no-relax",
                "-Wl,-Ttext=0x80000000",
                "-o",
            ])
            .arg(&elf)
            .arg(&s)
            .status();
        match gcc {
            Ok(st) => assert!(st.success(), "riscv64-unknown-elf-gcc failed"),
            Err(_) => {
                if std::env::var_os("FTVM_ALLOW_SKIP").is_none() {
                    panic!("riscv64-unknown-elf-gcc is not installed (apt-get install gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf; FTVM_ALLOW_SKIP=1 skips)");
                }
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
    .as_deref()
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);
impl SerialBackend for Capture {
    fn transmit(&mut self, bytes: &[u8]) {
        self.0.lock().unwrap().extend_from_slice(bytes);
    }
}
impl Capture {
    fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap().clone()
    }
}

/// A deterministic entropy source (xorshift64 from a fixed seed).
struct FixedEntropy(u64);
impl EntropyBackend for FixedEntropy {
    fn fill(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        for b in buf {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            *b = self.0 as u8;
        }
        Ok(())
    }
}

fn config(kernel: &Path, mem_size: u64, harts: usize) -> MachineConfig {
    MachineConfig {
        mem_size,
        harts,
        bios: Firmware::None,
        kernel: Some(kernel.to_path_buf()),
        ..MachineConfig::default()
    }
}

fn backends() -> (Backends, Capture) {
    let out = Capture::default();
    let b = Backends {
        serial: Box::new(out.clone()),
        console: Box::new(NullConsole),
        entropy: Box::new(FixedEntropy(0x1234_5678_9abc_def1)),
    };
    (b, out)
}

const MIB: u64 = 1 << 20;

#[test]
fn restore_and_continue_equals_never_stopping() {
    let Some(k) = kernel() else { return };
    for harts in [1, 2] {
        for n in [1u64, 7, 123_457, 300_001] {
            let cfg = config(k, 16 * MIB, harts);
            let (b, out) = backends();
            let mut m = Machine::new(&cfg, b).unwrap();
            m.run(n);
            let at_n = m.icount();
            let digest_n = m.digest();
            let printed_n = out.bytes().len();
            let snap = m.snapshot().unwrap();
            let end = 1_000_000;
            m.run(end);
            let digest_m = m.digest();
            let out_m = out.bytes();
            assert!(out_m.len() > printed_n, "the program prints");

            let (b2, out2) = backends();
            let mut r = Machine::restore(&cfg, b2, &snap).unwrap();
            assert_eq!(r.icount(), at_n);
            assert_eq!(r.digest(), digest_n, "harts {harts}, n {n}: restored state");
            r.run(end);
            assert_eq!(r.icount(), m.icount());
            let d = r.digest();
            assert!(
                d == digest_m,
                "harts {harts}, n {n}: {:?} differ",
                d.differences(&digest_m)
            );
            assert_eq!(
                out2.bytes(),
                out_m[printed_n..],
                "harts {harts}, n {n}: UART"
            );
        }
    }
}

#[test]
fn digests_see_every_part() {
    let Some(k) = kernel() else { return };
    let cfg = config(k, 16 * MIB, 1);
    let (b, _) = backends();
    let mut m = Machine::new(&cfg, b).unwrap();
    m.run(50_000);
    let a = m.digest();
    assert_eq!(a, m.digest());
    m.run(50_001);
    let b = m.digest();
    assert!(b.differences(&a).contains(&"cpu"));
    let (b2, _) = backends();
    let fresh = Machine::new(&cfg, b2).unwrap().digest();
    assert_eq!(
        fresh.differences(&a),
        vec!["cpu", "ram", "devices"],
        "the program wrote RAM and armed the timer"
    );
}

#[test]
fn other_configurations_are_refused() {
    let Some(k) = kernel() else { return };
    let (b, _) = backends();
    let mut m = Machine::new(&config(k, 16 * MIB, 1), b).unwrap();
    m.run(10_000);
    let snap = m.snapshot().unwrap();
    for (cfg, names) in [
        (config(k, 32 * MIB, 1), "RAM"),
        (config(k, 16 * MIB, 2), "harts"),
    ] {
        let (b, _) = backends();
        match Machine::restore(&cfg, b, &snap) {
            Err(e @ SnapshotError::Config(_)) => {
                let msg = e.to_string();
                assert!(msg.contains(names), "{msg}");
                assert!(msg.contains("configuration it was taken with"), "{msg}");
            }
            other => panic!("expected a configuration error, got {other:?}"),
        }
    }
}

fn restore_err(k: &Path, bytes: &[u8]) -> Option<SnapshotError> {
    let (b, _) = backends();
    Machine::restore(&config(k, 16 * MIB, 1), b, bytes).err()
}

#[test]
fn damaged_files_give_errors_not_panics() {
    let Some(k) = kernel() else { return };
    let (b, _) = backends();
    let mut m = Machine::new(&config(k, 16 * MIB, 1), b).unwrap();
    m.run(200_000);
    let snap = m.snapshot().unwrap();
    assert_eq!(&snap[..8], MAGIC);

    let len = snap.len();
    let mut cuts: Vec<usize> = vec![
        0,
        1,
        8,
        9,
        10,
        11,
        40,
        85,
        86,
        87,
        90,
        len / 2,
        len - 4,
        len - 1,
    ];
    cuts.extend((0..len).step_by(len / 17 + 1));
    for cut in cuts {
        let e = restore_err(k, &snap[..cut]).expect("a truncated snapshot is refused");
        assert!(
            matches!(
                e,
                SnapshotError::TooShort(_) | SnapshotError::Length { .. } | SnapshotError::BadMagic
            ),
            "cut at {cut}: {e}"
        );
    }
    let mut longer = snap.clone();
    longer.push(0);
    assert!(matches!(
        restore_err(k, &longer),
        Some(SnapshotError::Length { .. })
    ));

    let bits = len * 8;
    for bit in (0..bits)
        .step_by(bits / 97 + 1)
        .chain([0, 70, 79, bits - 1])
    {
        let mut bad = snap.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        let e = restore_err(k, &bad).expect("a flipped bit is detected");
        let msg = e.to_string();
        assert!(!msg.is_empty());
    }

    let mut v = snap.clone();
    v[8..10].copy_from_slice(&(VERSION + 1).to_le_bytes());
    match restore_err(k, &v) {
        Some(e @ SnapshotError::Version { .. }) => {
            assert!(e.to_string().contains("not supported"), "{e}")
        }
        other => panic!("expected a version error, got {other:?}"),
    }
    let mut v = snap.clone();
    v[0] = b'X';
    assert!(matches!(restore_err(k, &v), Some(SnapshotError::BadMagic)));
}

/// Header layout (see the module docs): the payload's raw length, compressed length, payload.
const HEADER_LEN: usize = 8 + 2 + 8 + 4 + 32 + 8 + 8 + 8;

/// Rebuilds a snapshot around a changed raw payload, with a valid checksum.
fn repack(snap: &[u8], raw: &[u8], claimed_raw_len: u64) -> Vec<u8> {
    let comp = lz4_flex::block::compress(raw);
    let mut f = snap[..HEADER_LEN - 16].to_vec();
    f.extend_from_slice(&claimed_raw_len.to_le_bytes());
    f.extend_from_slice(&(comp.len() as u64).to_le_bytes());
    f.extend_from_slice(&comp);
    let crc = crc32c::crc32c(&f);
    f.extend_from_slice(&crc.to_le_bytes());
    f
}

#[test]
fn corrupt_payloads_with_valid_checksums_give_errors_not_panics() {
    let Some(k) = kernel() else { return };
    let (b, _) = backends();
    let mut m = Machine::new(&config(k, 16 * MIB, 1), b).unwrap();
    m.run(200_000);
    let snap = m.snapshot().unwrap();
    let raw_len = u64::from_le_bytes(snap[HEADER_LEN - 16..HEADER_LEN - 8].try_into().unwrap());
    let comp_len = u64::from_le_bytes(snap[HEADER_LEN - 8..HEADER_LEN].try_into().unwrap());
    let raw = lz4_flex::block::decompress(
        &snap[HEADER_LEN..HEADER_LEN + comp_len as usize],
        raw_len as usize,
    )
    .unwrap();
    // Repacking unchanged works.
    let (b, _) = backends();
    Machine::restore(&config(k, 16 * MIB, 1), b, &repack(&snap, &raw, raw_len)).unwrap();

    // The sections before RAM (machine, harts, devices) are where structure lives: flip bytes
    // there densely, and some in RAM.
    let mut errors = 0;
    let positions = (0..3000.min(raw.len())).chain((3000..raw.len()).step_by(raw.len() / 50));
    for (i, pos) in positions.enumerate() {
        let mut bad = raw.clone();
        bad[pos] ^= [0x01, 0x80, 0xff, 0x10][i % 4];
        if restore_err(k, &repack(&snap, &bad, raw_len)).is_some() {
            errors += 1;
        }
    }
    assert!(errors > 100, "structure damage is detected ({errors})");

    // Truncated payloads, and a raw length that lies.
    for cut in [0, 1, 9, 100, raw.len() / 2, raw.len() - 1] {
        assert!(restore_err(k, &repack(&snap, &raw[..cut], cut as u64)).is_some());
    }
    assert!(restore_err(k, &repack(&snap, &raw, raw_len + 1)).is_some());
    match restore_err(k, &repack(&snap, &raw, u64::MAX)) {
        Some(SnapshotError::TooLarge { .. }) => {}
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

#[test]
fn a_256_mib_machine() {
    let Some(k) = kernel() else { return };
    let cfg = config(k, 256 * MIB, 1);
    let (b, _) = backends();
    let mut m = Machine::new(&cfg, b).unwrap();
    m.run(1_000_000);

    let t = Instant::now();
    let snap = m.snapshot().unwrap();
    let t_snap = t.elapsed();
    // The first pass over never-touched RAM pays the host's page faults; later ones do not.
    let t = Instant::now();
    let again = m.snapshot().unwrap();
    let t_again = t.elapsed();
    assert_eq!(again, snap);
    let t = Instant::now();
    let d = m.digest();
    let t_digest = t.elapsed();
    let t = Instant::now();
    let (b, _) = backends();
    let r = Machine::restore(&cfg, b, &snap).unwrap();
    let t_restore = t.elapsed();
    assert_eq!(r.digest(), d);
    eprintln!(
        "256 MiB machine: snapshot {} bytes in {t_snap:?} (again {t_again:?}), restore \
         {t_restore:?}, digest {t_digest:?}",
        snap.len()
    );
    assert!(snap.len() < 256 * 1024, "zero pages cost ~nothing");
    let _: StateDigest = d;
}

/// With several harts, the schedule's position is machine state: a machine restored in the
/// middle of a hart's window must hand the next steps to the same hart, across a window end.
#[test]
fn restored_machine_tracks_the_original_step_by_step() {
    let Some(k) = kernel() else { return };
    let cfg = config(k, 16 * MIB, 2);
    let (b, _) = backends();
    let mut m = Machine::new(&cfg, b).unwrap();
    m.run(129_900);
    let snap = m.snapshot().unwrap();
    let (b2, _) = backends();
    let mut r = Machine::restore(&cfg, b2, &snap).unwrap();
    let mut at = m.icount();
    for _ in 0..300 {
        at += 1;
        m.run(at);
        r.run(at);
        let (a, b) = (m.digest(), r.digest());
        assert!(a == b, "at {at}: {:?} differ", a.differences(&b));
    }
}

/// The incremental RAM digest equals a from-scratch hash of RAM after every stretch of guest
/// stores (fast-path stores through the harts' store TLBs included), with delta snapshots
/// taking the other dirty bitmap in between.
#[test]
fn incremental_ram_digest_equals_a_full_hash() {
    let Some(k) = kernel() else { return };
    let cfg = config(k, 16 * MIB, 2);
    let (b, _) = backends();
    let mut m = Machine::new(&cfg, b).unwrap();
    let mut at = 0;
    for i in 0..200u64 {
        at += 1 + (i * 7919) % 20_000;
        m.run(at);
        if i.is_multiple_of(5) {
            m.take_dirty_pages(machine::DirtyConsumer::Delta);
        }
        let d = m.digest();
        assert_eq!(
            d.ram,
            machine::snapshot::ram_digest_full(m.ram().as_slice()),
            "at icount {at}"
        );
    }
}
