//! The machine loop with tiny hand-assembled programs: the boot ROM, UART output, the test
//! device, timer deadlines and idle skips, and the deterministic schedule of several harts.

use machine::uart::SerialBackend;
use machine::virtio::{NullConsole, OsEntropy};
use machine::{clock, Backends, Firmware, Machine, MachineConfig, PowerEvent, Stop};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

// A few RV64I encoders (register numbers: t0 = 5, t1 = 6, t2 = 7, t3 = 28, a0 = 10).
fn itype(op: u32, f3: u32, rd: u32, rs1: u32, imm: i32) -> u32 {
    ((imm as u32 & 0xfff) << 20) | (rs1 << 15) | (f3 << 12) | (rd << 7) | op
}
fn stype(f3: u32, rs2: u32, rs1: u32, imm: i32) -> u32 {
    let imm = imm as u32 & 0xfff;
    ((imm >> 5) << 25) | (rs2 << 20) | (rs1 << 15) | (f3 << 12) | ((imm & 31) << 7) | 0x23
}
fn lui(rd: u32, imm20: u32) -> u32 {
    (imm20 << 12) | (rd << 7) | 0x37
}
fn addi(rd: u32, rs1: u32, imm: i32) -> u32 {
    itype(0x13, 0, rd, rs1, imm)
}
fn ld(rd: u32, rs1: u32, imm: i32) -> u32 {
    itype(0x03, 3, rd, rs1, imm)
}
fn sd(rs2: u32, rs1: u32, imm: i32) -> u32 {
    stype(3, rs2, rs1, imm)
}
fn sw(rs2: u32, rs1: u32, imm: i32) -> u32 {
    stype(2, rs2, rs1, imm)
}
fn sb(rs2: u32, rs1: u32, imm: i32) -> u32 {
    stype(0, rs2, rs1, imm)
}
fn csrw(csr: u32, rs1: u32) -> u32 {
    (csr << 20) | (rs1 << 15) | (1 << 12) | 0x73
}
const WFI: u32 = 0x1050_0073;
const J_SELF: u32 = 0x0000_006f;
const J_BACK_4: u32 = 0xffdf_f06f; // jal x0, -4
const MIE: u32 = 0x304;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);
impl SerialBackend for Capture {
    fn transmit(&mut self, bytes: &[u8]) {
        self.0.lock().unwrap().extend_from_slice(bytes);
    }
}

fn machine(name: &str, program: &[u32], harts: usize) -> (Machine, Capture) {
    let dir = std::env::temp_dir().join(format!("ftvm-machine-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kernel: PathBuf = dir.join("kernel.bin");
    let bytes: Vec<u8> = program.iter().flat_map(|i| i.to_le_bytes()).collect();
    std::fs::write(&kernel, bytes).unwrap();
    let cfg = MachineConfig {
        mem_size: 16 << 20,
        harts,
        bios: Firmware::None,
        kernel: Some(kernel),
        ..MachineConfig::default()
    };
    let out = Capture::default();
    let backends = Backends {
        serial: Box::new(out.clone()),
        console: Box::new(NullConsole),
        entropy: Box::new(OsEntropy::default()),
    };
    (Machine::new(&cfg, backends).unwrap(), out)
}

const T0: u32 = 5;
const T1: u32 = 6;
const T2: u32 = 7;
const T3: u32 = 28;
const A0: u32 = 10;

#[test]
fn timer_wait_is_an_idle_stop_and_a_skip_wakes_it() {
    let prog = [
        lui(T0, 0x200c),
        ld(T1, T0, -8), // mtime
        addi(T1, T1, 1000),
        lui(T0, 0x2004),
        sd(T1, T0, 0), // mtimecmp of hart 0 = mtime + 1000
        addi(T2, 0, 0x80),
        csrw(MIE, T2), // MTIE (mstatus.MIE stays off: WFI wakes without a trap)
        WFI,
        lui(T0, 0x10000),
        addi(T3, 0, i32::from(b'W')),
        sb(T3, T0, 0),
        lui(T0, 0x100),
        lui(T3, 0x5),
        addi(T3, T3, 0x555),
        sw(T3, T0, 0), // poweroff
        J_SELF,
    ];
    let (mut m, out) = machine("timer", &prog, 1);
    let stop = m.run(1_000_000);
    let Stop::Idle { wake: Some(wake) } = stop else {
        panic!("expected an idle stop, got {stop:?}")
    };
    // The ROM's 6 instructions and the first 2 above ran before the mtime read.
    let read_at = 6 + 1;
    let c = clock::Clock::default();
    assert_eq!(wake, c.icount_at(c.raw(read_at) + 1000));
    assert!(m.icount() < wake);
    // Still idle without a skip.
    assert_eq!(m.run(1_000_000), Stop::Idle { wake: Some(wake) });
    m.skip_to(wake);
    assert_eq!(m.run(2_000_000), Stop::Power(PowerEvent::PowerOff));
    assert_eq!(out.0.lock().unwrap().as_slice(), b"W");
}

#[test]
fn harts_alternate_in_fixed_quanta() {
    let prog = [addi(A0, A0, 1), J_BACK_4];
    let run = || {
        let (mut m, _) = machine("smp", &prog, 2);
        assert_eq!(m.run(100_000), Stop::Limit);
        let h = m.harts();
        (m.icount(), h[0].icount, h[1].icount, h[0].x[10], h[1].x[10])
    };
    let a = run();
    assert_eq!(a.0, 100_000);
    assert_eq!((a.1, a.2), (50_000, 50_000));
    // ROM (6 steps) then an addi/jal pair.
    assert_eq!(a.3, (50_000 - 6) / 2);
    assert_eq!(run(), a, "same program, same schedule");
}

#[test]
fn reset_and_failure_requests_stop_the_machine() {
    let prog = [
        lui(T0, 0x100),
        lui(T3, 0x7),
        addi(T3, T3, 0x777),
        sw(T3, T0, 0),
        J_SELF,
    ];
    let (mut m, _) = machine("reset", &prog, 1);
    assert_eq!(m.run(10_000), Stop::Power(PowerEvent::Reset));
    // 0x3333 | 9 << 16 = 0x93333 = lui 0x93 + addi 0x333.
    let prog = [
        lui(T0, 0x100),
        lui(T3, 0x93),
        addi(T3, T3, 0x333),
        sw(T3, T0, 0),
        J_SELF,
    ];
    let (mut m, _) = machine("fail", &prog, 3);
    assert_eq!(m.run(100_000), Stop::Power(PowerEvent::Fail(9)));
}

#[test]
fn unmapped_access_is_a_guest_fault_not_a_crash() {
    // Store to an address with no device; with mtvec = 0 the trap jumps to 0 (unmapped too),
    // and the hart keeps trapping: the machine must just keep counting.
    let prog = [lui(T0, 0x40000), sw(T0, T0, 0), J_SELF];
    let (mut m, _) = machine("unmapped", &prog, 1);
    assert_eq!(m.run(10_000), Stop::Limit);
    assert_eq!(m.icount(), 10_000);
}

fn btype(f3: u32, rs1: u32, rs2: u32, off: i32) -> u32 {
    let o = off as u32;
    (((o >> 12) & 1) << 31)
        | (((o >> 5) & 0x3f) << 25)
        | (rs2 << 20)
        | (rs1 << 15)
        | (f3 << 12)
        | (((o >> 1) & 0xf) << 8)
        | (((o >> 11) & 1) << 7)
        | 0x63
}

#[test]
fn the_schedule_does_not_depend_on_how_the_run_is_split() {
    // Two harts increment one shared counter with LR/SC (retrying when a hart switch drops the
    // reservation) and count their own successes in a0.
    let auipc_t0 = (0x100 << 12) | (T0 << 7) | 0x17; // t0 = pc + 1 MiB (shared, in RAM)
    let lr_d = (0x02 << 27) | (T0 << 15) | (3 << 12) | (T1 << 7) | 0x2f;
    let sc_d = (0x03 << 27) | (T1 << 20) | (T0 << 15) | (3 << 12) | (T2 << 7) | 0x2f;
    let jal_back = |off: i32| {
        let o = off as u32;
        (((o >> 20) & 1) << 31)
            | (((o >> 1) & 0x3ff) << 21)
            | (((o >> 11) & 1) << 20)
            | (((o >> 12) & 0xff) << 12)
            | 0x6f
    };
    let prog = [
        auipc_t0,
        lr_d,
        addi(T1, T1, 1),
        sc_d,
        btype(1, T2, 0, -12), // bnez t2, back to lr.d
        addi(A0, A0, 1),
        jal_back(-20), // back to lr.d
    ];
    let state = |m: &Machine| {
        let h = m.harts();
        let counter = m.ram().read_u64(0x8000_0000 + 0x10_0000).unwrap();
        (
            m.icount(),
            h[0].icount,
            h[1].icount,
            h[0].x[10],
            h[1].x[10],
            h[0].pc,
            h[1].pc,
            counter,
        )
    };
    let (mut whole, _) = machine("split-a", &prog, 2);
    assert_eq!(whole.run(300_000), Stop::Limit);
    let (mut pieces, _) = machine("split-b", &prog, 2);
    let mut x: u64 = 12345;
    while pieces.icount() < 300_000 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let step = 1 + (x >> 33) % 7919;
        pieces.run((pieces.icount() + step).min(300_000));
    }
    let (a, b) = (state(&whole), state(&pieces));
    assert_eq!(a, b, "same machine, same inputs, different call splits");
    // The counter saw every success of both harts (a0 started at the hart id).
    let successes = a.3 + a.4 - 1;
    assert!(a.7 >= successes && a.7 <= successes + 2, "{a:?}");
}

fn auipc(rd: u32, imm20: u32) -> u32 {
    (imm20 << 12) | (rd << 7) | 0x17
}

/// A guest that reads `mtime` in a loop and stores every value it read, from 0x8010_0004 up.
const MTIME_LOGGER: [u32; 6] = [
    0x0200_c2b7, // lui t0, 0x200c
    0x0010_0517, // auipc a0, 0x100
    0xff82_b303, // ld t1, -8(t0): mtime
    0x0065_3023, // sd t1, 0(a0)
    0x0085_0513, // addi a0, a0, 8
    0xff5f_f06f, // jal x0, -12
];

/// The mtime values the logger stored after `icount` machine-wide steps (4 per value).
fn logged_times(m: &Machine) -> Vec<u64> {
    let ram = m.ram().as_slice();
    let start = 0x10_0004;
    let n = (m.icount() as usize - 8) / 4;
    ram[start..]
        .chunks_exact(8)
        .take(n)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn time_sync_moves_time_forward_only_and_is_saved() {
    assert_eq!(MTIME_LOGGER[0], lui(T0, 0x200c));
    assert_eq!(MTIME_LOGGER[1], auipc(A0, 0x100));
    assert_eq!(MTIME_LOGGER[2], ld(T1, T0, -8));
    assert_eq!(MTIME_LOGGER[3], sd(T1, A0, 0));
    assert_eq!(MTIME_LOGGER[4], addi(A0, A0, 8));
    let (mut m, _) = machine("timesync", &MTIME_LOGGER, 1);
    let (mut plain, _) = machine("timesync-plain", &MTIME_LOGGER, 1);
    let mut offset = 0;
    for (i, ticks) in [0u64, 1_000_000, 7, 0, 123_456, u64::MAX / 4]
        .into_iter()
        .enumerate()
    {
        let limit = (i as u64 + 1) * 100_000;
        m.run(limit);
        plain.run(limit);
        let before = m.raw_time();
        m.adjust_time(ticks);
        offset += ticks;
        assert_eq!(m.time_offset(), offset);
        assert_eq!(m.raw_time(), before + ticks);
        assert_eq!(m.icount(), plain.icount(), "an adjustment executes nothing");
    }
    m.run(700_000);
    let times = logged_times(&m);
    assert!(times.len() > 100_000, "{}", times.len());
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "guest time went backwards"
    );
    let jump = times.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    assert!(jump >= u64::MAX / 4, "the last adjustment shows: {jump}");
    // The offset is part of the CPU digest and of snapshots.
    plain.run(700_000);
    assert_eq!(m.digest().differences(&plain.digest()), vec!["cpu", "ram"]);
    let snap = m.snapshot().unwrap();
    let (mut r, _) = machine("timesync-restored", &MTIME_LOGGER, 1);
    r.load_snapshot(&snap).unwrap();
    assert_eq!(r.time_offset(), m.time_offset());
    assert_eq!(r.digest(), m.digest());
    r.run(800_000);
    m.run(800_000);
    assert_eq!(r.digest(), m.digest());
}

#[test]
fn a_time_rate_change_is_continuous_deterministic_and_saved() {
    let (mut m, _) = machine("timerate", &MTIME_LOGGER, 1);
    let (mut plain, _) = machine("timerate-plain", &MTIME_LOGGER, 1);
    m.run(100_000);
    plain.run(100_000);
    let before = m.raw_time();
    // 2.5 steps per tick: the clock runs 4 times as fast per step as the nominal 10.
    m.set_time_rate(40).unwrap();
    assert_eq!(m.raw_time(), before, "a rate change does not jump");
    assert!(m.set_time_rate(clock::MAX_RATE + 1).is_err());
    assert!(m.set_time_rate(0).is_err());
    assert_eq!(m.clock().rate, 40, "a refused rate changes nothing");
    m.run(200_000);
    plain.run(200_000);
    assert_eq!(m.raw_time(), before + 100_000 / 25 * 10);
    assert_eq!(plain.raw_time(), 20_000);
    let times = logged_times(&m);
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "guest time went backwards"
    );
    assert_eq!(
        m.guest_duration(25_000_000),
        std::time::Duration::from_secs(1)
    );
    // The rate is part of the CPU digest and of snapshots.
    assert_eq!(m.digest().differences(&plain.digest()), vec!["cpu", "ram"]);
    let snap = m.snapshot().unwrap();
    let (mut r, _) = machine("timerate-restored", &MTIME_LOGGER, 1);
    r.load_snapshot(&snap).unwrap();
    assert_eq!(r.clock(), m.clock());
    r.run(300_000);
    m.run(300_000);
    assert_eq!(r.digest(), m.digest());
}

#[test]
fn time_sync_brings_timer_deadlines_forward() {
    // The program of `timer_wait_is_an_idle_stop_and_a_skip_wakes_it`.
    let prog = [
        lui(T0, 0x200c),
        ld(T1, T0, -8),
        addi(T1, T1, 1000),
        lui(T0, 0x2004),
        sd(T1, T0, 0),
        addi(T2, 0, 0x80),
        csrw(MIE, T2),
        WFI,
        lui(T0, 0x100),
        lui(T3, 0x5),
        addi(T3, T3, 0x555),
        sw(T3, T0, 0),
        J_SELF,
    ];
    let (mut m, _) = machine("timer-sync", &prog, 1);
    let Stop::Idle { wake: Some(wake) } = m.run(1_000_000) else {
        panic!("expected an idle stop")
    };
    m.adjust_time(400);
    let now = m.icount();
    assert_eq!(
        m.run(1_000_000),
        Stop::Idle {
            wake: Some(wake - 4000)
        }
    );
    assert_eq!(m.icount(), now);
    // Past the deadline: the timer is due at once and wakes the hart without a skip.
    m.adjust_time(600);
    assert_eq!(m.run(2_000_000), Stop::Power(PowerEvent::PowerOff));
}
