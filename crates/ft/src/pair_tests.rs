//! The FT state machine's interplay, in one process and in milliseconds: the primary's link and
//! output gate, the backup's receiver, replay and go-live, and the arbiter between them, run
//! over the in-memory transport ([`crate::transport::mem`]) and the in-memory arbiter
//! ([`arbiter::MemArbiter`]) instead of TCP, UDP heartbeats and a shared directory.
//!
//! The code under test is the production code: [`Link`], [`Gate`], [`crate::protect::start`],
//! the primary's run loop's `ship` and `check_peer`, the backup's `follow` (its receiver, replay
//! loop, failover and the live VM it becomes). Only the carrier of the frames and the arbiter's
//! storage differ. Heartbeat timeouts are set to a minute, so that every failure here must be
//! noticed from the stream itself; a test that passes does so long before that.
//!
//! The guest is a few hand-assembled instructions: it echoes console input and powers off
//! after a fixed number of loops. Its output therefore shows exactly which input the side that
//! goes on has replayed.

use crate::backup::{follow, BackupConfig, Joined};
use crate::console::Endpoint;
use crate::gate::{Gate, Output};
use crate::heartbeat::{HeartbeatConfig, Liveness};
use crate::link::{Link, Release};
use crate::live::{LiveVm, Next};
use crate::protect::{Peer, ProtectWith};
use crate::status::{Role, Status};
use crate::transport::mem::{self, Dir, Faults};
use crate::transport::Channel;
use crate::wire::Msg;
use crate::{Key, PairConfig};
use arbiter::{Arbiter, MemArbiter};
use machine::{Backends, Machine, MachineConfig};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long any wait here may take before the test fails (never reached when it passes).
const PATIENCE: Duration = Duration::from_secs(20);

/// Waits until `cond` holds; fails the test after [`PATIENCE`]. Polls a condition the code
/// under test makes true (a thread's progress), never sleeps for a guessed time.
fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < PATIENCE, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Bytes a gate or an endpoint let out.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Sink {
    fn gate(&self) -> Gate {
        let s = self.clone();
        Gate::new(Box::new(move |b: &[u8]| {
            s.0.lock().unwrap().extend_from_slice(b)
        }))
    }
    fn get(&self) -> Vec<u8> {
        self.0.lock().unwrap().clone()
    }
}

fn release_into(gate: &Gate) -> Release {
    let gate = gate.clone();
    Box::new(move |horizon, replayed, _| {
        gate.replayed_to(replayed);
        gate.release(horizon);
    })
}

fn ack(entries: u64, horizon: u64) -> Msg {
    Msg::Ack {
        entries,
        horizon,
        replayed: horizon,
    }
}

fn log(horizon: u64) -> Msg {
    Msg::Log {
        horizon,
        released: 0,
        bytes: Vec::new(),
    }
}

/// A gate holding console output, the primary's link over the in-memory transport, and the
/// backup's end of it.
fn primary_link() -> (Gate, Sink, Link, Channel, Faults) {
    let (p, b, faults) = mem::pair();
    let sink = Sink::default();
    let gate = sink.gate();
    gate.hold(false);
    let link = Link::start(p, release_into(&gate), Arc::new(Liveness::default())).unwrap();
    (gate, sink, link, b, faults)
}

/// One slice's output: `bytes` made, the slice sealed at `horizon`, its log sent.
fn slice_out(gate: &Gate, link: &Link, bytes: &[u8], horizon: u64) {
    gate.push(Output::Console(bytes.to_vec())).unwrap();
    gate.seal(horizon);
    link.send(horizon, 0, Vec::new()).unwrap();
}

#[test]
fn output_is_held_until_its_ack_arrives_and_no_ack_releases_more_than_it_acknowledges() {
    let (gate, sink, link, mut b, _) = primary_link();
    slice_out(&gate, &link, b"a", 100);
    slice_out(&gate, &link, b"b", 200);
    // The backup has both messages but acknowledges nothing yet: nothing leaves.
    assert_eq!(b.rx.recv().unwrap(), log(100));
    assert_eq!(b.rx.recv().unwrap(), log(200));
    assert_eq!(sink.get(), b"");
    assert_eq!(gate.held_bytes(), 2);

    b.tx.send(&ack(1, 100)).unwrap();
    wait_until("the first ack is taken", || sink.get() == b"a");
    // The same ack again, then a stale one: each is taken (the entry count says so), and
    // neither lets out the output of the slice that ends at 200.
    b.tx.send(&ack(2, 100)).unwrap();
    b.tx.send(&ack(3, 50)).unwrap();
    wait_until("both are taken", || {
        link.state.acked_entries.load(Ordering::Relaxed) == 3
    });
    assert_eq!(sink.get(), b"a");
    assert_eq!(link.state.acked_horizon.load(Ordering::Relaxed), 100);

    // Output of the slice under way is not sealed yet: even an ack far past it (a backup
    // lying about what it has) cannot let it out before its slice's log was sent.
    gate.push(Output::Console(b"c".to_vec())).unwrap();
    b.tx.send(&ack(4, 10_000)).unwrap();
    wait_until("the far ack is taken", || sink.get() == b"ab");
    wait_until("its count is seen", || {
        link.state.acked_entries.load(Ordering::Relaxed) == 4
    });
    assert_eq!(sink.get(), b"ab", "the open slice's output stays");
    gate.seal(10_100);
    b.tx.send(&ack(5, 10_100)).unwrap();
    wait_until("the last ack releases the rest", || sink.get() == b"abc");
    assert!(link.state.failure().is_none());
    link.close();
}

#[test]
fn an_ack_lost_or_replayed_on_the_wire_breaks_the_link_and_releases_nothing_more() {
    for (what, fault) in [
        ("lost", Faults::lose_next as fn(&Faults, Dir)),
        ("duplicated", Faults::duplicate_next),
        ("corrupted", Faults::corrupt_next),
    ] {
        let (gate, sink, link, mut b, faults) = primary_link();
        slice_out(&gate, &link, b"a", 100);
        slice_out(&gate, &link, b"b", 200);
        b.tx.send(&ack(1, 50)).unwrap();
        wait_until("a first ack is taken", || {
            link.state.acked_entries.load(Ordering::Relaxed) == 1
        });
        fault(&faults, Dir::ToPrimary);
        b.tx.send(&ack(2, 100)).unwrap();
        b.tx.send(&ack(3, 200)).unwrap();
        wait_until("the link notices", || link.state.failure().is_some());
        let why = link.state.failure().unwrap();
        assert!(why.contains("authentication"), "{what}: {why}");
        let left = sink.get();
        // A duplicated frame's first copy is genuine and may release its slice; nothing
        // after the bad frame does.
        let allowed: &[&[u8]] = if what == "duplicated" {
            &[b"a"]
        } else {
            &[b""]
        };
        assert!(allowed.contains(&left.as_slice()), "{what}: {left:?}");
        assert!(
            gate.held_bytes() >= 1,
            "{what}: the second slice's output is held"
        );
    }
}

// ---- The whole pair: a guest, its primary and its backup. ----

const T0: u32 = 5;
const T1: u32 = 6;
const T2: u32 = 7;
const T3: u32 = 28;

fn itype(op: u32, f3: u32, rd: u32, rs1: u32, imm: i32) -> u32 {
    ((imm as u32 & 0xfff) << 20) | (rs1 << 15) | (f3 << 12) | (rd << 7) | op
}
fn stype(f3: u32, rs2: u32, rs1: u32, imm: i32) -> u32 {
    let imm = imm as u32 & 0xfff;
    ((imm >> 5) << 25) | (rs2 << 20) | (rs1 << 15) | (f3 << 12) | ((imm & 31) << 7) | 0x23
}
fn btype(f3: u32, rs1: u32, rs2: u32, off: i32) -> u32 {
    let i = off as u32;
    (((i >> 12) & 1) << 31)
        | (((i >> 5) & 0x3f) << 25)
        | (rs2 << 20)
        | (rs1 << 15)
        | (f3 << 12)
        | (((i >> 1) & 0xf) << 8)
        | (((i >> 11) & 1) << 7)
        | 0x63
}
fn lui(rd: u32, imm20: u32) -> u32 {
    (imm20 << 12) | (rd << 7) | 0x37
}

/// Echoes UART input for `loops << 12` loops (about 5 instructions each), then powers off.
fn echo_program(loops: u32) -> Vec<u32> {
    vec![
        lui(T0, 0x10000),              // t0 = UART
        lui(T2, loops),                // t2 = loops left
        itype(0x03, 4, T1, T0, 5),     // loop: lbu t1, LSR
        itype(0x13, 7, T1, T1, 1),     // andi t1, t1, DR
        btype(0, T1, 0, 12),           // beq t1, zero, next
        itype(0x03, 4, T1, T0, 0),     // lbu t1, RBR
        stype(0, T1, T0, 0),           // sb t1, THR
        itype(0x13, 0, T2, T2, -1),    // next: addi t2, t2, -1
        btype(1, T2, 0, -24),          // bne t2, zero, loop
        lui(T0, 0x100),                // syscon
        lui(T3, 0x5),                  //
        itype(0x13, 0, T3, T3, 0x555), // 0x5555: power off
        stype(2, T3, T0, 0),           // sw
        0x0000_006f,                   // j .
    ]
}

/// The guest's machine configuration, its program written to a file of its own.
fn guest(name: &str, loops: u32) -> MachineConfig {
    let dir = std::env::temp_dir().join(format!("ft-pair-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kernel: PathBuf = dir.join("kernel.bin");
    let bytes: Vec<u8> = echo_program(loops)
        .iter()
        .flat_map(|i| i.to_le_bytes())
        .collect();
    std::fs::write(&kernel, bytes).unwrap();
    MachineConfig {
        mem_size: 16 << 20,
        harts: 1,
        kernel: Some(kernel),
        ..MachineConfig::default()
    }
}

fn pair_config(me: &str, arbiter: Arc<MemArbiter>) -> PairConfig {
    PairConfig {
        vm: "vm0".into(),
        me: me.into(),
        key: Key::random(),
        console: crate::console::Keys::operator(Key::random()),
        arbiter,
        // Failures must be seen in the stream: silence would take a minute.
        heartbeat: HeartbeatConfig {
            interval: Duration::from_millis(50),
            timeout: Duration::from_secs(60),
        },
        max_lag: Duration::from_secs(3600),
        buffer: 64 << 20,
        non_shared: false,
        metrics: None,
        clone_bandwidth: 0,
        // An unreachable arbiter is asked again for this long (the default 30 s would only
        // slow the tests that keep it out).
        arbiter_patience: Duration::from_millis(500),
    }
}

/// A primary protected by the backup at the other end of `ch`, driven slice by slice by the
/// test (its run loop's own steps: `hostrun`'s slice, then `ship`).
struct Primary {
    vm: LiveVm,
    runner: hostrun::Runner,
    sink: Sink,
}

/// A live VM built as `ftvm primary` builds it, on `mcfg`'s guest: protected by the backup at
/// the other end of `ch`, or (`None`) running alone, its gate open. The sink its gate lets
/// console output out to.
fn live_vm(mcfg: &MachineConfig, ch: Option<Channel>, arbiter: Arc<MemArbiter>) -> (LiveVm, Sink) {
    let out = rr::Outbox::default();
    let mut m = Machine::new(
        mcfg,
        Backends {
            serial: Box::new(out.clone()),
            console: Box::new(out.clone()),
            entropy: Box::new(machine::virtio::OsEntropy::default()),
        },
    )
    .unwrap();
    let sink = Sink::default();
    let gate = sink.gate();
    let cfg = pair_config("primary", arbiter);
    let with = ProtectWith {
        readonly: Vec::new(),
        net: None,
        local_ip: [127, 0, 0, 1].into(),
        disk_reads_own: false,
    };
    let prot = ch.map(|Channel { tx, rx, hangup }| {
        let peer = Peer {
            to: "127.0.0.1:9".parse().unwrap(),
            rx,
            generation: 0,
            live: Arc::new(Liveness::default()),
            hb_stop: Arc::new(AtomicBool::new(false)),
            hangup,
        };
        crate::protect::start(&mut m, &gate, &cfg, &with, tx, peer, false).unwrap()
    });
    let vm = LiveVm {
        m,
        out,
        ep: Endpoint::new(true),
        gate,
        prot,
        cfg,
        status: Status::new("vm0", Role::Primary, "mem".into()),
        with,
        cloning: None,
    };
    (vm, sink)
}

impl Primary {
    fn start(mcfg: &MachineConfig, ch: Channel, arbiter: Arc<MemArbiter>) -> Primary {
        let (vm, sink) = live_vm(mcfg, Some(ch), arbiter);
        Primary {
            vm,
            runner: hostrun::Runner::new().expect("an eventfd for the run loop"),
            sink,
        }
    }

    /// One slice of the guest, console `input` first; its log and output go to the link and
    /// the gate. Returns the horizon sent.
    fn slice(&mut self, input: &[u8]) -> u64 {
        self.run_slice(input);
        self.vm.ship();
        self.vm.m.icount()
    }

    /// [`Primary::slice`] without sending: its log goes with the next one's.
    fn run_slice(&mut self, input: &[u8]) {
        let rec = self.vm.prot.as_mut().map(|p| &mut p.rec);
        self.runner.console_input(&mut self.vm.m, rec, input);
        let limit = self.vm.m.icount() + rr::SLICE;
        let rec = self.vm.prot.as_mut().map(|p| &mut p.rec);
        let stop = self.runner.slice(&mut self.vm.m, rec, limit);
        assert_eq!(stop, machine::Stop::Limit, "the guest runs on");
    }

    /// Waits until the link's sender has written every message queued; returns how many.
    fn wait_written(&self) -> u64 {
        let st = &self.vm.prot.as_ref().unwrap().link.state;
        wait_until("the link's sender wrote everything", || {
            st.written_msgs.load(Ordering::Relaxed) == st.queued_msgs.load(Ordering::Relaxed)
        });
        st.written_msgs.load(Ordering::Relaxed)
    }

    fn link_failed(&self) -> bool {
        self.vm
            .prot
            .as_ref()
            .is_none_or(|p| p.link.state.failed.load(Ordering::Relaxed))
    }
}

/// What the backup did, as its status and console endpoint show it.
struct BackupRun {
    thread: std::thread::JoinHandle<Result<i32, crate::FtError>>,
    ep: Endpoint,
    last_failover: Arc<Mutex<Option<String>>>,
}

impl BackupRun {
    fn start(mcfg: &MachineConfig, ch: Channel, arbiter: Arc<MemArbiter>) -> BackupRun {
        Self::start_with(mcfg, ch, pair_config("backup", arbiter))
    }

    fn start_with(mcfg: &MachineConfig, ch: Channel, cfg: PairConfig) -> BackupRun {
        let ep = Endpoint::new(false);
        let last_failover: Arc<Mutex<Option<String>>> = Arc::default();
        {
            let lf = Arc::clone(&last_failover);
            ep.on_status(Box::new(move |s: &Status| {
                if s.last_failover.is_some() {
                    *lf.lock().unwrap() = s.last_failover.clone();
                }
            }));
        }
        let joined = Joined {
            ch,
            generation: 0,
            live: Arc::new(Liveness::default()),
            hb_stop: Arc::new(AtomicBool::new(false)),
        };
        let bc = BackupConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            console: "127.0.0.1:0".parse().unwrap(),
            netdev: None,
            disk_reads_own: false,
        };
        let status = Status::new("vm0", Role::Backup, "mem".into());
        let (mcfg, ep2) = (mcfg.clone(), ep.clone());
        let thread = std::thread::spawn(move || follow(joined, &mcfg, &bc, cfg, ep2, status));
        BackupRun {
            thread,
            ep,
            last_failover,
        }
    }

    /// Its exit code, once it ended.
    fn join(self) -> (i32, Vec<u8>, Option<String>) {
        let t0 = Instant::now();
        while !self.thread.is_finished() {
            assert!(t0.elapsed() < PATIENCE, "the backup did not end");
            std::thread::sleep(Duration::from_millis(1));
        }
        let code = self.thread.join().unwrap().unwrap();
        let out = self.ep.offsets(1 << 20).2;
        let lf = self.last_failover.lock().unwrap().clone();
        (code, out, lf)
    }
}

/// A protected pair whose backup has received (and acknowledged) `slices` slices of log, the
/// input `hello` in the second; the acknowledgements are held back from the primary, so the
/// guest's echo is still held by its output gate. Returns the last horizon sent.
fn pair_with_unacknowledged_echo(
    name: &str,
    arbiter: &Arc<MemArbiter>,
) -> (Primary, BackupRun, Faults, u64) {
    let mcfg = guest(name, 0x800);
    let (p, b, faults) = mem::pair();
    faults.hold(Dir::ToPrimary);
    let backup = BackupRun::start(&mcfg, b, Arc::clone(arbiter));
    let mut primary = Primary::start(&mcfg, p, Arc::clone(arbiter));
    // protect::start queued the log's prologue; the slices follow.
    let mut horizon = 0;
    for i in 0..4 {
        horizon = primary.slice(if i == 1 { b"hello" } else { b"" });
    }
    // Every message queued is written, and was received: the backup acknowledged each (held
    // on the way back).
    let written = primary.wait_written();
    let sent = faults.sent(Dir::ToBackup);
    assert_eq!(sent, written);
    assert!(
        faults.wait_sent(Dir::ToPrimary, sent, PATIENCE),
        "the backup acknowledges all {sent} messages"
    );
    assert_eq!(primary.sink.get(), b"", "nothing acknowledged, nothing out");
    assert_eq!(primary.vm.gate.held_bytes(), 5, "the echo is held");
    (primary, backup, faults, horizon)
}

fn went_live_at(last_failover: &Option<String>) -> u64 {
    let s = last_failover.as_deref().expect("the backup went live");
    let n = s
        .strip_prefix("went live at icount ")
        .and_then(|r| r.split(',').next())
        .expect("the status says where");
    n.parse().unwrap()
}

#[test]
fn before_the_initial_snapshot_silence_ends_nothing_but_a_closed_channel_ends_the_wait() {
    // A primary on a loaded host may take seconds to send its snapshot or disks: the backup
    // waits far beyond its heartbeat timeout for it (there is nothing to take over yet).
    let arbiter = Arc::new(MemArbiter::new());
    let mcfg = guest("slow-start", 0x800);
    let (p, b, _faults) = mem::pair();
    let mut cfg = pair_config("backup", Arc::clone(&arbiter));
    cfg.heartbeat.timeout = Duration::from_millis(50);
    let backup = BackupRun::start_with(&mcfg, b, cfg);
    std::thread::sleep(Duration::from_millis(600));
    assert!(
        !backup.thread.is_finished(),
        "12 heartbeat timeouts of silence before the snapshot end nothing"
    );
    // The primary dies before its snapshot: the channel ends, and so does the wait, at once.
    p.hangup.close();
    let t0 = Instant::now();
    let (code, out, lf) = backup.join();
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert_eq!((code, out, lf), (3, Vec::new(), None), "nothing taken over");
    assert_eq!(arbiter.current("vm0").unwrap(), None, "no claim");
}

#[test]
fn the_primary_dies_mid_stream_and_the_backup_replays_all_it_received_then_goes_live() {
    let arbiter = Arc::new(MemArbiter::new());
    let (mut primary, backup, _, _) = pair_with_unacknowledged_echo("dies", &arbiter);
    // Ten slices of log in one message (as a primary that stalled ships them): the backup
    // has them all before the end of the stream, and far from replayed.
    for _ in 0..10 {
        primary.run_slice(b"");
    }
    primary.vm.ship();
    let horizon = primary.vm.m.icount();
    primary.wait_written();
    // The primary's process dies: its kernel closes the connection after what was sent; it
    // asks no arbiter.
    primary.vm.prot.as_ref().unwrap().link.close();
    drop(primary);
    let (code, out, lf) = backup.join();
    assert_eq!(code, 0, "the guest ran on to its power-off on the backup");
    assert_eq!(
        went_live_at(&lf),
        horizon,
        "replayed to the last horizon received"
    );
    assert_eq!(out, b"hello", "the input replayed exactly once");
    assert_eq!(arbiter.current("vm0").unwrap(), Some((1, "backup".into())));
}

#[test]
fn a_corrupt_log_frame_is_a_stream_break_that_the_backup_acts_on_at_once() {
    let arbiter = Arc::new(MemArbiter::new());
    let (mut primary, backup, faults, horizon) = pair_with_unacknowledged_echo("corrupt", &arbiter);
    faults.corrupt_next(Dir::ToBackup);
    // The next slice's log is corrupted on the way: never applied, and the backup, which
    // hears from nobody for a minute before silence would count, stops trusting the stream now.
    primary.slice(b"");
    wait_until("the backup claimed", || {
        arbiter.wait_asked("backup", Duration::ZERO)
    });
    // The backup hung up on the primary, whose link fails; it asks the arbiter and loses.
    wait_until("the primary sees the link break", || primary.link_failed());
    assert!(matches!(primary.vm.check_peer(), Ok(Next::Exit(3))));
    assert_eq!(
        primary.sink.get(),
        b"",
        "the loser's held output never leaves"
    );
    assert_eq!(primary.vm.gate.held_bytes(), 0, "it was discarded");
    let (code, out, lf) = backup.join();
    assert_eq!(code, 0);
    let lf = lf.unwrap();
    assert!(lf.contains("authentication"), "{lf}");
    assert_eq!(
        went_live_at(&Some(lf)),
        horizon,
        "the corrupt slice is not applied"
    );
    assert_eq!(out, b"hello");
}

/// The link is cut while both sides live; they race for the arbiter, `first` asking first
/// (`None`: truly concurrently). Exactly one goes on; the loser emits nothing it held.
fn race(name: &str, first: Option<&str>) -> &'static str {
    let arbiter = Arc::new(MemArbiter::new());
    match first {
        Some("primary") => arbiter.hold("backup"),
        Some(_) => arbiter.hold("primary"),
        None => {}
    }
    let (mut primary, backup, faults, _) = pair_with_unacknowledged_echo(name, &arbiter);
    faults.cut();
    wait_until("the primary sees the link break", || primary.link_failed());
    // The machine stays on this thread: a helper lets the second claimant ask once the first
    // has its answer.
    let releaser = first.map(|first| {
        let arbiter = Arc::clone(&arbiter);
        let (first, other) = match first {
            "primary" => ("primary", "backup"),
            _ => ("backup", "primary"),
        };
        std::thread::spawn(move || {
            assert!(arbiter.wait_asked(first, PATIENCE), "{first} asks");
            arbiter.release(other);
        })
    });
    let primary_goes_on = matches!(primary.vm.check_peer().unwrap(), Next::Go);
    if let Some(r) = releaser {
        r.join().unwrap();
    }
    let (gate, sink) = (primary.vm.gate.clone(), primary.sink.clone());
    let (code, out, _) = backup.join();
    let winner = arbiter.current("vm0").unwrap().unwrap();
    assert_eq!(winner.0, 1);
    if primary_goes_on {
        assert_eq!(winner.1, "primary");
        assert_eq!(code, 3, "the backup lost and stopped");
        assert_eq!(out, b"", "the backup never went live");
        assert_eq!(sink.get(), b"hello", "running alone, the held echo leaves");
        assert!(primary.vm.prot.is_none(), "unprotected");
        "primary"
    } else {
        assert_eq!(winner.1, "backup");
        assert_eq!(code, 0, "the backup went live");
        assert_eq!(out, b"hello");
        assert_eq!(sink.get(), b"", "the loser's held echo never leaves");
        assert_eq!(gate.held_bytes(), 0);
        "backup"
    }
}

#[test]
fn both_sides_race_for_the_arbiter_and_exactly_one_goes_on() {
    assert_eq!(race("race-p", Some("primary")), "primary");
    assert_eq!(race("race-b", Some("backup")), "backup");
    // And without an order: whoever wins, the other stopped (asserted inside).
    for i in 0..2 {
        race(&format!("race-{i}"), None);
    }
}

#[test]
fn without_the_arbiter_nobody_goes_live() {
    let arbiter = Arc::new(MemArbiter::new());
    let (mut primary, backup, faults, _) = pair_with_unacknowledged_echo("noarb", &arbiter);
    arbiter.set_reachable(false);
    faults.cut();
    wait_until("the primary sees the link break", || primary.link_failed());
    assert!(matches!(primary.vm.check_peer(), Ok(Next::Exit(3))));
    assert_eq!(primary.sink.get(), b"", "no output leaves without a win");
    assert_eq!(primary.vm.gate.held_bytes(), 0);
    let (code, out, lf) = backup.join();
    assert_eq!(code, 3, "the backup stops instead of going live");
    assert_eq!(out, b"");
    assert_eq!(lf, None);
    assert!(arbiter.wait_asked("backup", Duration::ZERO));
    arbiter.set_reachable(true);
    assert_eq!(
        arbiter.current("vm0").unwrap(),
        None,
        "nobody holds generation 1"
    );
}

// ---- The live VM's whole run loop (`LiveVm::run`), on its own thread as in production. ----

/// A live VM's run, on a thread of its own: its endpoint (input and controls go there), the
/// sink its output reaches, its gate.
struct LiveRun {
    thread: std::thread::JoinHandle<Result<i32, crate::FtError>>,
    ep: Endpoint,
    sink: Sink,
    gate: Gate,
}

impl LiveRun {
    fn start(mcfg: &MachineConfig, ch: Option<Channel>, arbiter: Arc<MemArbiter>) -> LiveRun {
        let (tx, rx) = std::sync::mpsc::channel();
        let mcfg = mcfg.clone();
        let thread = std::thread::spawn(move || {
            let (vm, sink) = live_vm(&mcfg, ch, arbiter);
            tx.send((vm.ep.clone(), sink, vm.gate.clone())).unwrap();
            vm.run()
        });
        let (ep, sink, gate) = rx.recv().expect("the live VM is built");
        LiveRun {
            thread,
            ep,
            sink,
            gate,
        }
    }

    /// Its exit code, once it ended.
    fn join(self) -> i32 {
        wait_until("the live VM's run ends", || self.thread.is_finished());
        self.thread.join().unwrap().unwrap()
    }
}

/// Loops enough for the echo guest never to power off during a test: it stops when told.
const FOREVER: u32 = 0x7ffff;

#[test]
fn a_live_vm_running_alone_lets_output_out_at_once_and_powers_off_when_told() {
    let arbiter = Arc::new(MemArbiter::new());
    let vm = LiveRun::start(&guest("alone", FOREVER), None, Arc::clone(&arbiter));
    vm.ep.type_input(b"hello");
    wait_until("the echo is out", || vm.sink.get() == b"hello");
    assert!(!vm.thread.is_finished(), "out while the guest runs on");
    assert!(!vm.gate.holding());
    assert_eq!(vm.gate.held_bytes(), 0);
    vm.ep.type_input(b", world");
    wait_until("the next echo is out", || vm.sink.get() == b"hello, world");
    vm.ep.ask(crate::console::Control::PowerOff);
    assert_eq!(vm.join(), 0, "an operator's power-off");
    assert!(arbiter.asked().is_empty(), "alone, nobody to race");
}

#[test]
fn a_protected_live_vm_holds_output_until_acknowledged_then_loses_its_backup_and_runs_on_alone() {
    let arbiter = Arc::new(MemArbiter::new());
    // The primary asks the arbiter first (the backup waits for its answer).
    arbiter.hold("backup");
    let mcfg = guest("live-run", FOREVER);
    let (p, b, faults) = mem::pair();
    let backup = BackupRun::start(&mcfg, b, Arc::clone(&arbiter));
    let vm = LiveRun::start(&mcfg, Some(p), Arc::clone(&arbiter));
    assert!(vm.gate.holding(), "protected: outputs are held");
    // The backup's acknowledgements are held back: the echo stays in the gate.
    faults.hold(Dir::ToPrimary);
    vm.ep.type_input(b"hello");
    wait_until("the echo is held", || vm.gate.held_bytes() == 5);
    assert_eq!(vm.sink.get(), b"", "nothing acknowledged, nothing out");
    faults.deliver(Dir::ToPrimary);
    wait_until("the acknowledged echo is out", || vm.sink.get() == b"hello");
    // The link breaks while both run: the primary's loop sees it, wins the arbiter, takes
    // its layers off and runs on alone.
    faults.cut();
    wait_until("the primary won generation 1", || {
        arbiter.current("vm0").unwrap() == Some((1, "primary".into()))
    });
    wait_until("the gate opened", || !vm.gate.holding());
    vm.ep.type_input(b"!");
    wait_until("the echo is out at once", || vm.sink.get() == b"hello!");
    assert!(!vm.thread.is_finished());
    assert_eq!(vm.gate.held_bytes(), 0);
    // The backup asks now and loses: it stops without going live.
    arbiter.release("backup");
    let (code, out, lf) = backup.join();
    assert_eq!(code, 3, "the backup lost and stopped");
    assert_eq!(out, b"", "the backup never went live");
    assert_eq!(lf, None);
    vm.ep.ask(crate::console::Control::PowerOff);
    assert_eq!(vm.join(), 0);
}
