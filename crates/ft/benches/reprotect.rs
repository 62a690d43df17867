//! Fifty re-protections of one running machine leave the same backend structure and the same
//! per-read and per-frame cost as one: protection's layers ([`ft::protect::Layers`]: the
//! output gate, then the recorder) are put on and taken off as a unit, so nothing piles up.
//! A measurement, not a test (the structure itself is asserted by the unit test
//! `protect::tests::fifty_protections_leave_the_backends_as_one_did`):
//! `cargo bench -p ft --bench reprotect`.
//!
//! One machine (16 MiB, one 1 MiB file disk, a network card, firmware that spins). For the
//! bare machine, then protected once, then protected again after 49 protect/unprotect cycles
//! (each running some guest time and logging it), it measures, best of 7 batches taken in
//! turn on the three machines (so that all see the same host noise):
//! a 4 KiB disk read through the machine's disk backend stack (the recorder notes its data,
//! the gate overlays held writes, the host file is read; the recorder's slice is closed every
//! 64 reads) and a 1514-byte frame transmitted through the card's stack (the gate holds it;
//! sealed and released every 64 frames). And the time `put_on` takes (the full snapshot
//! that starts the log).

use ft::gate::Gate;
use ft::link::SharedBuf;
use ft::protect::{take_off, Layers};
use machine::Machine;
use rr::Recorder;
use std::time::Instant;

const READS: usize = 20_000;
const FRAMES: usize = 20_000;
const BATCHES: usize = 7;
const CYCLES: usize = 50;

fn machine(dir: &std::path::Path) -> Machine {
    ft::testing::spinning_machine(dir, 1 << 20).expect("the machine boots")
}

fn stack(m: &mut Machine) -> String {
    format!(
        "disk {}, net {}",
        m.disk_backend_mut(0).expect("a disk").describe(),
        m.net_backend_mut().expect("a card").describe()
    )
}

/// Nanoseconds per call of `one` (given the call's index) over one batch of `n`, with `every`
/// called after each 64.
fn per_call(n: usize, mut one: impl FnMut(usize), mut every: impl FnMut()) -> f64 {
    let t0 = Instant::now();
    for i in 0..n {
        one(i);
        if i % 64 == 63 {
            every();
        }
    }
    t0.elapsed().as_secs_f64() * 1e9 / n as f64
}

/// A machine as measured: its gate and, while protected, its recorder and log buffer.
struct Subject {
    label: String,
    m: Machine,
    gate: Gate,
    rec: Option<(Recorder<SharedBuf>, SharedBuf)>,
    put_on_ms: Option<f64>,
    /// Best (ns per 4 KiB read, ns per frame) so far.
    best: (f64, f64),
}

impl Subject {
    /// One batch of reads and one of frames through the backends as they stand.
    fn batch(&mut self) {
        let mut buf = vec![0u8; 4096];
        let m = std::cell::RefCell::new(&mut self.m);
        let rec = &mut self.rec;
        let read = per_call(
            READS,
            |i| {
                let off = (i as u64 * 4096 * 7) % (1 << 20);
                m.borrow_mut()
                    .disk_backend_mut(0)
                    .expect("a disk")
                    .read_at(off, &mut buf)
                    .expect("a read");
            },
            || {
                if let Some((rec, out)) = rec.as_mut() {
                    rec.after_slice(&m.borrow(), false);
                    out.take();
                }
            },
        );
        let frame = vec![0x5au8; 1514];
        let gate = &self.gate;
        let sent = per_call(
            FRAMES,
            |_| {
                m.borrow_mut()
                    .net_backend_mut()
                    .expect("a card")
                    .transmit(&frame)
            },
            || {
                let h = m.borrow().icount();
                gate.seal(h);
                gate.release(h);
            },
        );
        self.best = (self.best.0.min(read), self.best.1.min(sent));
    }

    fn row(&mut self) -> String {
        let put_on = self
            .put_on_ms
            .map_or_else(|| "–".to_string(), |t| format!("{t:.2}"));
        format!(
            "| {} | {} | {put_on} | {:.0} | {:.0} |",
            self.label,
            stack(&mut self.m),
            self.best.0,
            self.best.1
        )
    }
}

fn subject(dir: &std::path::Path, label: &str) -> Subject {
    Subject {
        label: label.into(),
        m: machine(dir),
        gate: Gate::new(Box::new(|_: &[u8]| {})),
        rec: None,
        put_on_ms: None,
        best: (f64::MAX, f64::MAX),
    }
}

fn protect(s: &mut Subject, layers: &Layers) -> f64 {
    let out = SharedBuf::default();
    let (mut rec, entropy) = Recorder::with_shape(
        out.clone(),
        vec![false],
        Some(machine::NetConfig::default()),
    );
    s.m.replace_entropy(entropy).expect("entropy");
    let t0 = Instant::now();
    layers
        .put_on(&mut s.m, &s.gate, &mut rec, false)
        .expect("protected");
    let took = t0.elapsed().as_secs_f64() * 1e3;
    out.take();
    s.rec = Some((rec, out));
    took
}

fn unprotect(s: &mut Subject) {
    let (mut rec, _) = s.rec.take().expect("protected");
    let m = &mut s.m;
    // Some guest time, so that each round's log has something.
    m.run(m.icount() + 1000);
    rec.after_slice(m, false);
    s.gate.seal(m.icount());
    s.gate.open();
    take_off(m, &s.gate, &mut rec).expect("unprotected");
}

/// Runs one batch of each subject in turn, [`BATCHES`] times (so that all see the same host
/// noise), keeping each one's best.
fn measure(subjects: &mut [&mut Subject]) {
    for _ in 0..BATCHES {
        for s in subjects.iter_mut() {
            s.batch();
        }
    }
}

fn main() {
    let tmp = std::env::temp_dir().join(format!("ft-bench-reprotect-{}", std::process::id()));
    let layers = Layers {
        shared: 1,
        net: true,
        writes_after_replay: false,
    };
    let mut bare = subject(&tmp.join("bare"), "bare (never protected)");
    let mut once = subject(&tmp.join("once"), "protected once");
    let mut again = subject(
        &tmp.join("again"),
        &format!(
            "protected again after {} protect/unprotect cycles",
            CYCLES - 1
        ),
    );
    once.put_on_ms = Some(protect(&mut once, &layers));
    let mut put_on = Vec::new();
    for _ in 1..CYCLES {
        put_on.push(protect(&mut again, &layers));
        unprotect(&mut again);
    }
    let last = protect(&mut again, &layers);
    put_on.push(last);
    again.put_on_ms = Some(last);
    let bare_stack = stack(&mut bare.m);
    assert_eq!(
        stack(&mut once.m),
        stack(&mut again.m),
        "the same layers as the first time"
    );
    measure(&mut [&mut bare, &mut once, &mut again]);
    println!("| machine | backends | put_on ms | ns per 4 KiB read | ns per frame |");
    println!("|---|---|---:|---:|---:|");
    for s in [&mut bare, &mut once, &mut again] {
        println!("{}", s.row());
    }
    unprotect(&mut again);
    assert_eq!(stack(&mut again.m), bare_stack, "bare again");
    again.label = format!("unprotected after {CYCLES} cycles");
    again.put_on_ms = None;
    again.best = (f64::MAX, f64::MAX);
    bare.best = (f64::MAX, f64::MAX);
    bare.label = "bare (never protected), measured beside it".into();
    measure(&mut [&mut bare, &mut again]);
    println!("{}", again.row());
    println!("{}", bare.row());
    let mut sorted = put_on.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "\nput_on (layers on, the log started with a full snapshot of the 16 MiB machine) over \
         the {CYCLES} protections of one machine: first {:.2} ms, min {:.2}, median {:.2}, \
         max {:.2}, last {:.2} ms",
        put_on[0],
        sorted[0],
        sorted[sorted.len() / 2],
        sorted[sorted.len() - 1],
        put_on[CYCLES - 1]
    );
    let _ = std::fs::remove_dir_all(&tmp);
}
