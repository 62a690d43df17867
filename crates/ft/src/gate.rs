//! The output rule (VMware FT, Scales et al. 2010, §2.2), in one place: while a VM is
//! protected, nothing the guest sends to the outside world — console bytes, transmitted frames,
//! disk writes and flushes — leaves the primary before the backup has the log that produced it.
//!
//! Every output goes into one ordered queue. Outputs made during a run slice are *open*; when
//! the slice ends at icount `h` and its log goes to the backup, [`Gate::seal`] tags them with
//! `h`. When the backup acknowledges the log up to `h` ([`Gate::release`]), the outputs tagged
//! `h` or less leave, in the order the guest made them, whatever their kind. (Within one slice
//! the console's bytes are queued at the slice's end, after its frames and writes: they are
//! tagged and released together, so no one outside can tell.)
//!
//! With `--disk-reads own` the backup reads the shared disk itself, so a write must not reach
//! the disk before the backup has *replayed* the reads before it (the paper's read/write race):
//! a write then also waits for [`Gate::replayed_to`] to pass its tag, and, the order being kept,
//! so does everything queued after it.
//!
//! The guest sees its writes complete at once and its reads see them ([`GatedDisk`] overlays
//! the held writes on what the disk returns). A backup that goes live re-issues the writes it
//! replayed that the primary had not confirmed ([`Gate::released`] tells it which are on the
//! disk), so a write is either on the disk or re-issued.
//!
//! **The lease.** An acknowledgement read late says nothing about now: a primary frozen (SIGSTOP,
//! a paused host) with acknowledged outputs still to let out wakes after its backup went live,
//! re-issued those writes and let the guest write on, and its stale writes would land on the
//! shared disk over newer ones (the soak found records lost so: docs/soak.md). So outputs leave
//! only before a lease runs out: each acknowledgement of log written at `t` (the primary's
//! clock, before the write: the backup cannot have heard it earlier) renews it to `t` plus
//! less than the failure timeout ([`Gate::renew_lease`]); the backup goes live no sooner than a
//! failure timeout after it last heard the primary, so while the lease holds it has not. An
//! output the lease no longer covers stays held until a fresher acknowledgement, or until this
//! side wins the arbiter ([`Gate::open`]) or loses it ([`Gate::discard`]).
//!
//! Three ways out: [`Gate::release`] (the backup has the log), [`Gate::open`] (the VM runs on
//! alone: everything held leaves now and later outputs pass straight through) and
//! [`Gate::discard`] (this side lost the arbiter: nothing held ever leaves, nor anything later).
//!
//! The gate owns the host ends of the shared disks and of the network card while they are
//! installed ([`Gate::install`]); the machine's slots then hold thin [`GatedDisk`] and
//! [`GatedNet`] backends that route through it. [`Gate::uninstall`] gives the host ends back,
//! so the backend structure after any number of protections is the same as after one.

use machine::virtio::{BlockBackend, NetBackend, Prepare};
use machine::Machine;
use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// One output of the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Bytes on the console (UART0 and the virtio console).
    Console(Vec<u8>),
    /// A frame the network card transmitted.
    Frame(Vec<u8>),
    /// A write to the `drive`-th gated disk.
    Write {
        /// The gated disk (0: the first drive).
        drive: usize,
        /// Byte offset.
        offset: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// A flush of the `drive`-th gated disk (after the writes before it).
    Flush {
        /// The gated disk.
        drive: usize,
    },
}

impl Output {
    fn len(&self) -> usize {
        match self {
            Output::Console(b) | Output::Frame(b) => b.len(),
            Output::Write { data, .. } => data.len(),
            Output::Flush { .. } => 0,
        }
    }

    fn is_disk(&self) -> bool {
        matches!(self, Output::Write { .. } | Output::Flush { .. })
    }
}

/// A sealed output: made in the slice `[start, horizon)`.
struct Held {
    start: u64,
    horizon: u64,
    out: Output,
}

/// Where released console bytes go (the console endpoint's clients).
pub type ConsoleSink = Box<dyn FnMut(&[u8]) + Send>;

struct Inner {
    console: ConsoleSink,
    /// The host ends of the gated disks, by gated drive number.
    disks: Vec<Box<dyn BlockBackend>>,
    /// The host end of the network card, once installed.
    net: Option<Box<dyn NetBackend>>,
    /// Outputs of the slice under way (its horizon not known yet), in order.
    open: Vec<Output>,
    /// Sealed outputs waiting for the backup, in order.
    held: VecDeque<Held>,
    /// Whether outputs wait (the VM is protected).
    holding: bool,
    /// Whether a disk output also waits for the backup's replay (`--disk-reads own`).
    writes_after_replay: bool,
    /// This side lost: nothing leaves any more.
    discarded: bool,
    /// The highest log horizon the backup acknowledged, and the icount it replayed to.
    acked: u64,
    replayed: u64,
    /// The last sealed horizon: where the open slice started.
    sealed: u64,
    /// Icount before which every write is on its disk.
    released: u64,
    /// Writes held (open or sealed) per gated disk: a read overlays only if some are.
    writes_held: Vec<usize>,
    /// Bytes of output held.
    held_bytes: usize,
    /// Writes or flushes the disk refused after the guest saw them succeed.
    failures: u64,
    /// Outputs leave only before this (see the module doc); `None`: no lease is kept (not
    /// renewed since [`Gate::hold`]: the tests' gates, or no acknowledgement yet).
    lease_until: Option<Instant>,
}

impl Inner {
    /// Sends one output to its host end, counting a disk's refusal (the guest saw success).
    fn emit(&mut self, out: &Output) {
        if self.send(out).is_err() {
            self.failures += 1;
        }
    }

    /// Sends one output to its host end; a disk's error is the caller's to count or pass on.
    fn send(&mut self, out: &Output) -> io::Result<()> {
        match out {
            Output::Console(b) => {
                (self.console)(b);
                Ok(())
            }
            Output::Frame(f) => {
                if let Some(n) = &mut self.net {
                    n.transmit(f);
                }
                Ok(())
            }
            Output::Write {
                drive,
                offset,
                data,
            } => match self.disks.get_mut(*drive) {
                Some(d) => d.write_at(*offset, data),
                None => Err(io::Error::other("no such gated disk")),
            },
            Output::Flush { drive } => match self.disks.get_mut(*drive) {
                Some(d) => d.flush(),
                None => Err(io::Error::other("no such gated disk")),
            },
        }
    }

    fn forget(&mut self, out: &Output) {
        self.held_bytes -= out.len();
        if let Output::Write { drive, .. } = out {
            if let Some(n) = self.writes_held.get_mut(*drive) {
                *n -= 1;
            }
        }
    }

    /// Whether a sealed output may leave now.
    fn may_leave(&self, h: &Held) -> bool {
        h.horizon <= self.acked
            && self.lease_until.is_none_or(|u| Instant::now() < u)
            && !(self.writes_after_replay && h.out.is_disk() && h.horizon > self.replayed)
    }

    /// Lets out, in order, every sealed output the backup's acknowledgements allow.
    fn drain(&mut self) {
        while self.held.front().is_some_and(|h| self.may_leave(h)) {
            let Some(h) = self.held.pop_front() else {
                break;
            };
            self.forget(&h.out);
            self.emit(&h.out);
        }
        // Every write still held was made in a slice that started at or after the oldest held
        // output's start (a replayed icount need not be a slice's end, so the acknowledged
        // point alone would claim too much).
        let point = if self.writes_after_replay {
            self.acked.min(self.replayed)
        } else {
            self.acked
        };
        let start = self.held.front().map_or(self.sealed, |h| h.start);
        self.released = self.released.max(point.min(start));
    }

    fn push(&mut self, out: Output) -> io::Result<()> {
        if self.discarded {
            return Ok(());
        }
        if !self.holding {
            // Running alone: straight out, and the guest sees a disk's error.
            return self.send(&out);
        }
        self.held_bytes += out.len();
        if let Output::Write { drive, .. } = &out {
            if let Some(n) = self.writes_held.get_mut(*drive) {
                *n += 1;
            }
        }
        self.open.push(out);
        Ok(())
    }
}

/// The output gate of one VM; clones share it.
#[derive(Clone)]
pub struct Gate(Arc<Mutex<Inner>>);

impl Gate {
    /// A gate whose released console bytes go to `console`; open (nothing held) until
    /// [`Gate::hold`].
    pub fn new(console: ConsoleSink) -> Gate {
        Gate(Arc::new(Mutex::new(Inner {
            console,
            disks: Vec::new(),
            net: None,
            open: Vec::new(),
            held: VecDeque::new(),
            holding: false,
            writes_after_replay: false,
            discarded: false,
            acked: 0,
            replayed: 0,
            sealed: 0,
            released: 0,
            writes_held: Vec::new(),
            held_bytes: 0,
            failures: 0,
            lease_until: None,
        })))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        match self.0.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Puts the gate between `m` and the host ends of its first `drives` disks and, if `net`,
    /// its network card (the machine's slots get [`GatedDisk`]s and a [`GatedNet`]). Call it
    /// before any recording wrapper goes on, so that the recorder sees what the guest sees.
    /// Nothing happens to what is already installed.
    pub fn install(&self, m: &mut Machine, drives: usize, net: bool) -> io::Result<()> {
        let mut g = self.lock();
        while g.disks.len() < drives {
            let drive = g.disks.len();
            let Some(slot) = m.disk_backend_mut(drive) else {
                return Err(io::Error::other(format!("the machine has no disk {drive}")));
            };
            let gated: Box<dyn BlockBackend> = Box::new(GatedDisk {
                gate: self.clone(),
                drive,
                len: slot.len(),
            });
            let host = std::mem::replace(slot, gated);
            g.disks.push(host);
            g.writes_held.push(0);
        }
        if net && g.net.is_none() {
            let Some(slot) = m.net_backend_mut() else {
                return Err(io::Error::other("the machine has no network card"));
            };
            let gated: Box<dyn NetBackend> = Box::new(GatedNet { gate: self.clone() });
            g.net = Some(std::mem::replace(slot, gated));
        }
        Ok(())
    }

    /// Gives the machine its host ends back (after [`Gate::open`]: nothing is held). The
    /// machine's slots must hold the gate's own backends again (no wrapper put on after
    /// [`Gate::install`] left in place), else this fails and changes nothing.
    pub fn uninstall(&self, m: &mut Machine) -> io::Result<()> {
        let mut g = self.lock();
        if g.holding || !g.open.is_empty() || !g.held.is_empty() {
            return Err(io::Error::other("the gate still holds output"));
        }
        for drive in 0..g.disks.len() {
            let ours = m
                .disk_backend_mut(drive)
                .is_some_and(|s| s.describe() == describe_gated_disk(drive));
            if !ours {
                return Err(io::Error::other(format!(
                    "disk {drive} is not the gate's any more"
                )));
            }
        }
        let net_ours = m
            .net_backend_mut()
            .is_some_and(|s| s.describe() == GATED_NET);
        if g.net.is_some() && !net_ours {
            return Err(io::Error::other(
                "the network card is not the gate's any more",
            ));
        }
        for (drive, host) in std::mem::take(&mut g.disks).into_iter().enumerate() {
            if let Some(slot) = m.disk_backend_mut(drive) {
                *slot = host;
            }
        }
        g.writes_held.clear();
        if let (Some(host), Some(slot)) = (g.net.take(), m.net_backend_mut()) {
            *slot = host;
        }
        Ok(())
    }

    /// Starts holding (the VM is protected, anew or again). `writes_after_replay`: disk
    /// outputs also wait for the backup's replay (`--disk-reads own`).
    pub fn hold(&self, writes_after_replay: bool) {
        let mut g = self.lock();
        g.holding = true;
        g.writes_after_replay = writes_after_replay;
        // A new backup: its acknowledgements count from nothing.
        g.acked = 0;
        g.replayed = 0;
        g.lease_until = None;
    }

    /// Whether outputs are held.
    pub fn holding(&self) -> bool {
        self.lock().holding
    }

    /// An output the guest made (held while protected, else out at once; a disk's error then
    /// comes back).
    pub fn push(&self, out: Output) -> io::Result<()> {
        if out.len() == 0 && matches!(out, Output::Console(_)) {
            return Ok(());
        }
        self.lock().push(out)
    }

    /// The slice under way ended at icount `horizon`: its outputs are tagged with it.
    pub fn seal(&self, horizon: u64) {
        let mut g = self.lock();
        let open = std::mem::take(&mut g.open);
        let start = g.sealed;
        g.held.extend(open.into_iter().map(|out| Held {
            start,
            horizon,
            out,
        }));
        g.sealed = g.sealed.max(horizon);
    }

    /// The backup acknowledged the log up to `horizon`: the outputs sealed by then leave.
    pub fn release(&self, horizon: u64) {
        let mut g = self.lock();
        g.acked = g.acked.max(horizon);
        g.drain();
    }

    /// An acknowledgement extends the lease to `until` (never shortens it); `None` (it
    /// acknowledged no log written since the last): a lease not kept yet starts expired.
    /// Call it before [`Gate::release`] with the same acknowledgement.
    pub fn renew_lease(&self, until: Option<Instant>) {
        let mut g = self.lock();
        let now = Instant::now();
        let cur = g.lease_until.unwrap_or(now);
        g.lease_until = Some(until.map_or(cur, |u| cur.max(u)));
    }

    /// The backup has replayed to `icount` (the disk outputs' rule under `--disk-reads own`).
    pub fn replayed_to(&self, icount: u64) {
        let mut g = self.lock();
        g.replayed = g.replayed.max(icount);
        g.drain();
    }

    /// Running on alone: everything held leaves now, in order, and later outputs pass
    /// straight through.
    pub fn open(&self) {
        let mut g = self.lock();
        let open = std::mem::take(&mut g.open);
        let held: Vec<Output> = g.held.drain(..).map(|h| h.out).chain(open).collect();
        for out in &held {
            g.forget(out);
            g.emit(out);
        }
        g.holding = false;
        let sealed = g.sealed;
        g.released = g.released.max(sealed);
    }

    /// This side lost the arbiter (or cannot ask it): nothing held ever leaves, nor anything
    /// made later.
    pub fn discard(&self) {
        let mut g = self.lock();
        g.open.clear();
        g.held.clear();
        g.held_bytes = 0;
        g.writes_held.iter_mut().for_each(|n| *n = 0);
        g.discarded = true;
    }

    /// Icount before which every write is on its disk (what the backup may stop keeping for
    /// a re-issue); 0 without gated disks.
    pub fn released(&self) -> u64 {
        let g = self.lock();
        if g.disks.is_empty() {
            0
        } else {
            g.released
        }
    }

    /// Bytes of output held.
    pub fn held_bytes(&self) -> usize {
        self.lock().held_bytes
    }

    /// Outputs held, and disk outputs that failed after the guest saw them succeed.
    pub fn counts(&self) -> (usize, u64) {
        let g = self.lock();
        (g.held.len() + g.open.len(), g.failures)
    }

    /// The gated drives and whether the network card is gated.
    pub fn installed(&self) -> (usize, bool) {
        let g = self.lock();
        (g.disks.len(), g.net.is_some())
    }
}

/// How long after the log it acknowledges was written an acknowledgement lets outputs out:
/// the failure timeout less a margin (a fifth of it, at most 100 ms) for the time between the
/// check and the output's system call.
pub fn lease_for(timeout: std::time::Duration) -> std::time::Duration {
    timeout.saturating_sub((timeout / 5).min(std::time::Duration::from_millis(100)))
}

const GATED_NET: &str = "gated";

fn describe_gated_disk(drive: usize) -> String {
    format!("gated({drive})")
}

/// A disk behind the gate: writes and flushes are outputs; reads see the writes still held.
pub struct GatedDisk {
    gate: Gate,
    drive: usize,
    len: u64,
}

impl BlockBackend for GatedDisk {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut g = self.gate.lock();
        let d = self.drive;
        g.disks
            .get_mut(d)
            .ok_or_else(|| io::Error::other("the gate lost its disk"))?
            .read_at(offset, buf)?;
        if g.writes_held.get(d).copied().unwrap_or(0) == 0 {
            return Ok(());
        }
        // What the guest wrote and the disk has not got yet, oldest first.
        let Inner { held, open, .. } = &*g;
        for out in held.iter().map(|h| &h.out).chain(open.iter()) {
            if let Output::Write {
                drive,
                offset: at,
                data,
            } = out
            {
                if *drive == d {
                    rr::disk::overlay(buf, offset, *at, data);
                }
            }
        }
        Ok(())
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.gate.lock().push(Output::Write {
            drive: self.drive,
            offset,
            data: data.to_vec(),
        })
    }

    fn flush(&mut self) -> io::Result<()> {
        self.gate.lock().push(Output::Flush { drive: self.drive })
    }

    fn prepare(&mut self, op: Prepare) -> bool {
        let mut g = self.gate.lock();
        match op {
            // A flush while holding is held too: nothing to wait for now.
            Prepare::Flush if g.holding || g.discarded => true,
            op => g.disks.get_mut(self.drive).is_none_or(|d| d.prepare(op)),
        }
    }

    fn set_wake(&mut self, wake: &machine::wake::Waker) {
        if let Some(d) = self.gate.lock().disks.get_mut(self.drive) {
            d.set_wake(wake);
        }
    }

    fn describe(&self) -> String {
        describe_gated_disk(self.drive)
    }
}

/// The network card behind the gate: transmitted frames are outputs; received frames (and
/// the wake-up when one arrives) are the host end's.
pub struct GatedNet {
    gate: Gate,
}

impl NetBackend for GatedNet {
    fn transmit(&mut self, frame: &[u8]) {
        let _ = self.gate.push(Output::Frame(frame.to_vec()));
    }

    fn receive(&mut self) -> Option<Vec<u8>> {
        self.gate.lock().net.as_mut()?.receive()
    }

    fn set_wake(&mut self, wake: &machine::wake::Waker) {
        if let Some(n) = self.gate.lock().net.as_mut() {
            n.set_wake(wake);
        }
    }

    fn describe(&self) -> String {
        GATED_NET.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use machine::virtio::block::MemBackend;

    /// What left the gate, by kind.
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<String>>>);

    impl Seen {
        fn log(&self, s: String) {
            self.0.lock().unwrap().push(s);
        }
        fn all(&self) -> Vec<String> {
            self.0.lock().unwrap().clone()
        }
    }

    struct Wire(Seen, VecDeque<Vec<u8>>);

    impl NetBackend for Wire {
        fn transmit(&mut self, frame: &[u8]) {
            self.0.log(format!("frame {}", frame[0]));
        }
        fn receive(&mut self) -> Option<Vec<u8>> {
            self.1.pop_front()
        }
    }

    struct Disk(Seen, MemBackend);

    impl BlockBackend for Disk {
        fn len(&self) -> u64 {
            self.1.len()
        }
        fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
            self.1.read_at(offset, buf)
        }
        fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
            self.0.log(format!("write {offset}"));
            self.1.write_at(offset, data)
        }
        fn flush(&mut self) -> io::Result<()> {
            self.0.log("flush".into());
            self.1.flush()
        }
    }

    /// A gate with a console, one disk and a network card, as [`Gate::install`] leaves it.
    fn gate() -> (Gate, Seen, Box<dyn BlockBackend>, Box<dyn NetBackend>) {
        let seen = Seen::default();
        let s = seen.clone();
        let g = Gate::new(Box::new(move |b: &[u8]| {
            s.log(format!("console {}", String::from_utf8_lossy(b)))
        }));
        {
            let mut i = g.lock();
            i.disks.push(Box::new(Disk(
                seen.clone(),
                MemBackend {
                    data: vec![0; 4096],
                    flushes: 0,
                },
            )));
            i.writes_held.push(0);
            i.net = Some(Box::new(Wire(seen.clone(), VecDeque::from([vec![7; 60]]))));
        }
        let disk: Box<dyn BlockBackend> = Box::new(GatedDisk {
            gate: g.clone(),
            drive: 0,
            len: 4096,
        });
        let net: Box<dyn NetBackend> = Box::new(GatedNet { gate: g.clone() });
        g.hold(false);
        (g, seen, disk, net)
    }

    fn on_disk(g: &Gate, off: u64, n: usize) -> Vec<u8> {
        let mut v = vec![0; n];
        g.lock().disks[0].read_at(off, &mut v).unwrap();
        v
    }

    #[test]
    fn nothing_leaves_beyond_the_horizon_and_order_is_kept_across_kinds() {
        let (g, seen, mut disk, mut net) = gate();
        net.transmit(&[1; 60]);
        disk.write_at(0, b"ab").unwrap();
        g.push(Output::Console(b"x".to_vec())).unwrap();
        g.seal(100);
        disk.flush().unwrap();
        net.transmit(&[2; 60]);
        g.push(Output::Console(b"y".to_vec())).unwrap();
        g.seal(200);
        net.transmit(&[3; 60]);
        assert!(
            seen.all().is_empty(),
            "nothing leaves before an acknowledgement"
        );
        assert_eq!(g.held_bytes(), 60 * 3 + 2 + 2);
        g.release(99);
        assert!(seen.all().is_empty(), "nothing beyond the horizon");
        g.release(150);
        assert_eq!(seen.all(), ["frame 1", "write 0", "console x"]);
        g.release(1000);
        assert_eq!(
            seen.all(),
            [
                "frame 1",
                "write 0",
                "console x",
                "flush",
                "frame 2",
                "console y"
            ],
            "the open slice waits for its seal"
        );
        g.seal(300);
        g.release(300);
        assert_eq!(seen.all().last().unwrap(), "frame 3");
        assert_eq!(g.held_bytes(), 0);
        assert_eq!(net.receive(), Some(vec![7; 60]), "input is not held");
    }

    /// A primary frozen with acknowledged writes to make wakes after its backup went live: the
    /// acknowledgements it then reads are of log written long ago, and what they would release
    /// stays held (the soak's stale shared-disk write); a fresh one lets it out, and so does
    /// winning the arbiter.
    #[test]
    fn outputs_leave_only_while_the_lease_holds() {
        let (g, seen, mut disk, _) = gate();
        let lease = lease_for(std::time::Duration::from_millis(500));
        assert_eq!(lease, std::time::Duration::from_millis(400));
        disk.write_at(0, b"ab").unwrap();
        g.seal(100);
        // Acknowledging log written 900 ms ago: the backup may be live by now.
        let long_ago = Instant::now() - std::time::Duration::from_millis(900);
        g.renew_lease(Some(long_ago + lease));
        g.release(100);
        assert!(seen.all().is_empty(), "released under an expired lease");
        assert_eq!(on_disk(&g, 0, 2), b"\0\0");
        // An acknowledgement of nothing new renews nothing.
        g.renew_lease(None);
        g.release(100);
        assert!(seen.all().is_empty());
        // A fresh acknowledgement (log written just now) lets it out.
        g.renew_lease(Some(Instant::now() + lease));
        g.release(100);
        assert_eq!(seen.all(), ["write 0"]);
        // Held again under an expired lease, then out when this side runs on alone.
        disk.write_at(2, b"cd").unwrap();
        g.seal(200);
        std::thread::sleep(std::time::Duration::from_millis(450));
        g.release(200);
        assert_eq!(seen.all(), ["write 0"], "the lease ran out");
        g.open();
        assert_eq!(seen.all(), ["write 0", "write 2"]);
        // A new backup: no lease until its first acknowledgement.
        g.hold(false);
        g.renew_lease(None);
        disk.write_at(4, b"ef").unwrap();
        g.seal(300);
        g.release(300);
        assert_eq!(
            seen.all().len(),
            2,
            "a first acknowledgement of nothing is no lease"
        );
    }

    #[test]
    fn writes_wait_for_the_acknowledgement_but_reads_see_them() {
        let (g, _, mut b, _) = gate();
        b.write_at(10, b"abcd").unwrap();
        b.write_at(12, b"XY").unwrap();
        let mut r = [0u8; 6];
        b.read_at(9, &mut r).unwrap();
        assert_eq!(&r, b"\0abXY\0", "reads see held writes, later ones on top");
        g.seal(100);
        b.write_at(0, b"zz").unwrap();
        g.seal(200);
        assert_eq!(on_disk(&g, 10, 4), b"\0\0\0\0", "nothing on the disk yet");
        g.release(150);
        assert_eq!(on_disk(&g, 10, 4), b"abXY");
        assert_eq!(on_disk(&g, 0, 2), b"\0\0", "the later slice still waits");
        assert_eq!(
            g.released(),
            100,
            "the held slice [100, 200) may hold writes made before 150"
        );
        g.release(200);
        assert_eq!(on_disk(&g, 0, 2), b"zz");
        assert_eq!(g.released(), 200);
        b.write_at(0, b"yy").unwrap();
        g.release(250);
        assert_eq!(g.released(), 200, "an open slice started at 200");
        g.seal(300);
        g.release(300);
        assert_eq!((g.released(), on_disk(&g, 0, 2)), (300, b"yy".to_vec()));
    }

    #[test]
    fn with_own_reads_writes_wait_for_the_replay_and_so_does_what_follows() {
        let (g, seen, mut disk, mut net) = gate();
        g.hold(true);
        net.transmit(&[1; 60]);
        disk.write_at(0, b"w").unwrap();
        g.push(Output::Console(b"c".to_vec())).unwrap();
        g.seal(100);
        g.release(100);
        assert_eq!(seen.all(), ["frame 1"], "the write waits for the replay");
        assert_eq!(g.released(), 0);
        g.replayed_to(99);
        assert_eq!(seen.all(), ["frame 1"]);
        g.replayed_to(100);
        assert_eq!(seen.all(), ["frame 1", "write 0", "console c"]);
        assert_eq!(g.released(), 100);
    }

    #[test]
    fn open_releases_everything_and_passes_later_outputs_straight_through() {
        let (g, seen, mut disk, mut net) = gate();
        net.transmit(&[1; 60]);
        g.seal(10);
        disk.write_at(0, b"ok").unwrap();
        g.push(Output::Console(b"c".to_vec())).unwrap();
        g.open();
        assert_eq!(seen.all(), ["frame 1", "write 0", "console c"]);
        assert_eq!(on_disk(&g, 0, 2), b"ok");
        disk.write_at(2, b"!").unwrap();
        assert_eq!(on_disk(&g, 2, 1), b"!", "not holding: straight to the disk");
        net.transmit(&[2; 60]);
        assert_eq!(seen.all().last().unwrap(), "frame 2");
        g.hold(false);
        net.transmit(&[3; 60]);
        assert_eq!(seen.all().len(), 5, "held again");
    }

    #[test]
    fn discarded_output_never_leaves() {
        let (g, seen, mut disk, mut net) = gate();
        disk.write_at(0, b"no").unwrap();
        net.transmit(&[1; 60]);
        g.push(Output::Console(b"secret".to_vec())).unwrap();
        g.seal(10);
        disk.write_at(2, b"no").unwrap();
        g.discard();
        g.release(1000);
        g.seal(2000);
        g.release(2000);
        net.transmit(&[2; 60]);
        g.push(Output::Console(b"later".to_vec())).unwrap();
        assert!(seen.all().is_empty());
        assert_eq!(on_disk(&g, 0, 4), b"\0\0\0\0");
        assert_eq!(g.held_bytes(), 0);
    }
}
