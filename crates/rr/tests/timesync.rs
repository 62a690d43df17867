//! Time-sync under record and replay, with a host clock of the test's own: a guest that reads
//! `mtime`, arms its timer a little later and waits for it, recorded with a host clock that runs
//! ahead of the guest's (so the recorder logs time-sync jumps), and a busy guest recorded with a
//! host that runs it faster, then slower, than the nominal 100 MIPS (so the recorder changes the
//! clock's rate and paces). Each is replayed from the log: the replay reproduces every digest,
//! and the guest never saw time go backwards.

use machine::virtio::NullConsole;
use machine::{Backends, Firmware, Machine, MachineConfig, Stop};
use replay::{Event, LogReader};
use rr::{Outbox, Prologue, Recorder, SLICE};
use std::time::{Duration, Instant};

fn jal_x0(off: i32) -> u32 {
    let i = off as u32;
    (((i >> 20) & 1) << 31)
        | (((i >> 1) & 0x3ff) << 21)
        | (((i >> 11) & 1) << 20)
        | (((i >> 12) & 0xff) << 12)
        | 0x6f
}

/// Reads mtime, stores it (from 0x8010_0004 up), sets mtimecmp = mtime + 200, WFI, repeat.
fn program() -> Vec<u32> {
    vec![
        0x0200_c2b7, // lui t0, 0x200c
        0x0010_0517, // auipc a0, 0x100
        0x0200_43b7, // lui t2, 0x2004
        0x0800_0e13, // addi t3, x0, 0x80
        0x304e_1073, // csrw mie, t3
        0xff82_b303, // loop: ld t1, -8(t0)
        0x0065_3023, // sd t1, 0(a0)
        0x0085_0513, // addi a0, a0, 8
        0x0c83_0313, // addi t1, t1, 200
        0x0063_b023, // sd t1, 0(t2)
        0x1050_0073, // wfi
        jal_x0(-24),
    ]
}

/// Reads mtime and stores it at 0x8010_0000, forever.
fn busy_program() -> Vec<u32> {
    vec![
        0x0200_c2b7, // lui t0, 0x200c
        0x0010_0517, // auipc a0, 0x100
        0xff82_b303, // loop: ld t1, -8(t0)
        0x0065_3023, // sd t1, 0(a0)
        jal_x0(-8),
    ]
}

fn config() -> MachineConfig {
    config_for(&program())
}

fn config_for(program: &[u32]) -> MachineConfig {
    // A file of its own per call: the tests run in parallel threads of one process, and one
    // writing the file while another loads it would hand the loader an empty kernel.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("ftvm-rr-timesync-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kernel = dir.join(format!("kernel-{n}.bin"));
    let bytes: Vec<u8> = program.iter().flat_map(|i| i.to_le_bytes()).collect();
    std::fs::write(&kernel, bytes).unwrap();
    MachineConfig {
        mem_size: 16 << 20,
        harts: 1,
        bios: Firmware::None,
        kernel: Some(kernel),
        ..MachineConfig::default()
    }
}

/// A recorder and its machine for `cfg`, recording started.
fn recording(cfg: &MachineConfig) -> (Recorder<Vec<u8>>, Machine) {
    let (mut rec, entropy) = Recorder::new(Vec::new(), cfg).unwrap();
    let mut m = Machine::new(
        cfg,
        Backends {
            serial: Box::new(Outbox::default()),
            console: Box::new(NullConsole),
            entropy,
        },
    )
    .unwrap();
    rec.start(&mut m).unwrap();
    (rec, m)
}

/// Replays `log` to its end, counting the entries of kind `name`; returns the replayer.
fn replay(log: &[u8], name: &str) -> (rr::Replayer, usize) {
    let mut r = LogReader::new(log).unwrap();
    let mut prologue = Prologue::new(r.header());
    while !prologue.feed(&r.next_entry().unwrap().unwrap()).unwrap() {}
    let mut rp = prologue.into_replayer(Outbox::default()).unwrap();
    let mut logged = 0;
    loop {
        let e = r.next_entry().unwrap().expect("the log has an end marker");
        if e.event.name() == name {
            logged += 1;
        }
        if rp.apply(e).unwrap() {
            break;
        }
    }
    (rp, logged)
}

/// The mtime values the guest stored, up to the first zero after the first (which may be 0).
fn stored_times(m: &Machine) -> Vec<u64> {
    let ram = &m.ram().as_slice()[0x10_0004..];
    let mut v: Vec<u64> = ram
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .enumerate()
        .take_while(|&(i, t)| i == 0 || t != 0)
        .map(|(_, t)| t)
        .collect();
    v.shrink_to_fit();
    v
}

#[test]
fn recorded_time_syncs_replay_exactly_and_time_only_grows() {
    let (mut rec, mut m) = recording(&config());
    // A host clock of our own: 1 ms per loop turn, far more than the guest's idle waits of
    // 20 µs and its busy slices are worth, so guest time falls behind and is synced.
    let mut host = Instant::now();
    let mut syncs = 0;
    for _ in 0..3000 {
        host += Duration::from_millis(1);
        if rec.sync_time(&mut m, host).jump.is_some() {
            syncs += 1;
        }
        let stop = m.run(m.icount().saturating_add(SLICE));
        rec.after_slice(&m, !matches!(stop, Stop::Idle { .. }));
        match stop {
            Stop::Limit => {}
            Stop::Idle { wake } => {
                let from = m.icount();
                let to = wake.expect("the guest armed its timer");
                rec.idle_skip(from, to);
                m.skip_to(to);
            }
            Stop::Power(p) => panic!("the guest stopped: {p:?}"),
        }
    }
    assert!(syncs > 10, "{syncs} time syncs");
    let ts = rec.time_sync().unwrap();
    assert_eq!(ts.adjustments, syncs);
    assert!(m.time_offset() > 0 && m.time_offset() == ts.added_ticks);
    let times = stored_times(&m);
    assert!(times.len() > 2000, "{} timer rounds", times.len());
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "time went backwards"
    );
    let want = m.digest();
    let log = rec.finish(&m).unwrap();

    let (rp, logged) = replay(&log, "time-sync");
    assert_eq!(logged as u64, syncs);
    assert_eq!(rp.machine().digest(), want);
    assert_eq!(rp.machine().time_offset(), m.time_offset());
    assert_eq!(stored_times(rp.machine()), times);
}

/// Records the busy guest for `slices` run slices on a host that takes `per_slice` for each,
/// then checks that the rate ended in `want` and that, after the first `settle` slices, guest
/// time stayed within the bound (50 ms) plus a slice of the host's at every boundary.
fn keeps_pace(
    rec: &mut Recorder<Vec<u8>>,
    m: &mut Machine,
    host: &mut Instant,
    per_slice: Duration,
    (slices, settle): (usize, usize),
    want: std::ops::RangeInclusive<u32>,
) {
    let t0 = *host;
    let g0 = m.raw_time();
    let (mut lead, mut lag) = (0f64, 0f64);
    for i in 0..slices {
        let step = rec.sync_time(m, *host);
        // The pacing wait passes host time only.
        *host += step.pace;
        if i >= settle {
            let host_ms = (*host - t0).as_secs_f64() * 1e3;
            let guest_ms = (m.raw_time() - g0) as f64 / 1e4;
            lead = lead.max(guest_ms - host_ms);
            lag = lag.max(host_ms - guest_ms);
        }
        let stop = m.run(m.icount().saturating_add(SLICE));
        assert!(matches!(stop, Stop::Limit), "{stop:?}");
        rec.after_slice(m, true);
        *host += per_slice;
    }
    let rate = m.clock().rate;
    eprintln!("{per_slice:?} a slice: rate {rate}, lead {lead:.1} ms, lag {lag:.1} ms");
    assert!(want.contains(&rate), "rate {rate}, not in {want:?}");
    let bound = 50.0 + per_slice.as_secs_f64() * 1e3;
    assert!(
        lead <= bound && lag <= bound,
        "lead {lead:.1} ms, lag {lag:.1} ms"
    );
}

#[test]
fn a_busy_guest_keeps_pace_with_the_host_by_the_rate_and_replays_exactly() {
    let (mut rec, mut m) = recording(&config_for(&busy_program()));
    let mut host = Instant::now();
    // 500 M steps a second: five times the nominal pace. Within a few windows the rate is
    // about 50 steps per tick (800 sixteenths).
    let fast = Duration::from_millis(4);
    keeps_pace(&mut rec, &mut m, &mut host, fast, (150, 60), 760..=840);
    let fast = rec.time_sync().unwrap().clone();
    assert!(
        fast.rate_changes >= 1 && fast.paced_total > Duration::ZERO,
        "{fast:?}"
    );
    // 40 M steps a second: slower than nominal, so the rate goes down (not only jumps): 4
    // steps per tick.
    let slow = Duration::from_millis(50);
    keeps_pace(&mut rec, &mut m, &mut host, slow, (100, 40), 60..=68);
    let ts = rec.time_sync().unwrap();
    assert!(ts.rate_changes > fast.rate_changes);
    assert!(
        ts.rate_changes < 40,
        "{} rate changes for two speeds",
        ts.rate_changes
    );
    let changes = ts.rate_changes as usize;
    eprintln!(
        "{changes} rate changes, {} jumps, {:?} paced",
        ts.adjustments, ts.paced_total
    );
    let want = m.digest();
    let clock = m.clock();
    let log = rec.finish(&m).unwrap();
    let (rp, logged) = replay(&log, "time-rate");
    assert_eq!(logged, changes);
    assert_eq!(rp.machine().clock(), clock);
    assert_eq!(rp.machine().digest(), want);
}

/// What a replayer says of a log holding only `e` after its prologue.
fn refusal_of(e: Event) -> String {
    let (mut rec, m) = recording(&config());
    rec.event(&m, e);
    let log = rec.finish(&m).unwrap();
    let mut r = LogReader::new(log.as_slice()).unwrap();
    let mut prologue = Prologue::new(r.header());
    while !prologue.feed(&r.next_entry().unwrap().unwrap()).unwrap() {}
    let mut rp = prologue.into_replayer(Outbox::default()).unwrap();
    let e = r.next_entry().unwrap().unwrap();
    rp.apply(e).unwrap_err().to_string()
}

#[test]
fn a_time_rate_out_of_range_is_refused() {
    for rate in [0, machine::clock::MAX_RATE + 1] {
        let err = refusal_of(Event::TimeRate { rate });
        assert!(
            err.contains("time rate") && err.contains("out of range"),
            "{err}"
        );
    }
}

#[test]
fn a_time_sync_back_is_refused() {
    let err = refusal_of(Event::TimeSync { delta: -5 });
    assert!(err.contains("moves guest time back"), "{err}");
}
