//! The host's side of running a live machine, written once for `ftvm run` and for the
//! fault-tolerant VM (a protected primary, a VM running alone, a backup that went live).
//!
//! The machine is deterministic; the host decides when input enters and how time passes. One
//! step of every such loop is the same, and lives here ([`Runner::slice`]):
//!
//! 1. **time sync** — guest time kept near wall-clock time ([`rr::TimeSync`]; a recorder logs
//!    the jumps and rate changes it makes), with a short pacing sleep when the guest is ahead;
//! 2. **I/O completions** — disk requests whose host I/O is done take effect here, between two
//!    run calls (a recorder logs which and where);
//! 3. **a slice** — at most [`rr::SLICE`] steps of guest execution;
//! 4. **after the slice** — a recorder logs what the devices took (disk data, frames, entropy)
//!    and, now and then, a state digest.
//!
//! When every hart waits for an interrupt, [`Runner::idle`] lets host time pass until the next
//! timer is due, the role has work (client input, a control operation), a frame arrives, or a
//! disk's host I/O finishes; the clock then moves as far as host time did (a recorder logs the
//! skip). Idle time never passes faster than the wall clock.
//!
//! It waits on one thing: the runner's [`Wake`] (an eventfd), which the machine's disk and
//! network backends signal through the [`machine::wake::Waker`] the runner gives the machine,
//! and which a role signals for its own sources (polled together with a descriptor of the
//! role's, such as standard input, in the same `poll`). No thread watches on the loop's behalf
//! and nothing is process-global.
//!
//! What differs between roles — where input comes from, what happens to output, what else the
//! loop does between slices (sending the log, control operations, status) — stays with the
//! role: it calls these steps in its loop and gives [`Runner::idle`] its way of waiting
//! ([`Role`]: what to look at, and a descriptor to wait on if it has one). Whether the run is recorded is a value passed in (`Option<&mut Recorder>`), so
//! a recorder's calls are always paired with the machine's calls in the same place.
//!
//! A machine replayed from a log that is still arriving (an FT backup) has a loop of its own
//! shape — no time sync, no completions, no idling: the log decides all of that — written
//! once in [`replaying`] ([`replay`], over a [`Replaying`] role).

pub mod replaying;
pub mod wake;

pub use replaying::{replay, Replaying, Turn, REPLAY_TURN};
pub use wake::Wake;

use machine::{Machine, Stop};
use rr::{Recorder, TimeSync};
use std::io::Write;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

/// The longest single wait of an idle period: the role is looked at again at least this often
/// (a signal handler's flag, say), whatever woke it or not.
pub const IDLE_TURN: Duration = Duration::from_millis(100);

/// What a role has to say while its guest idles.
pub trait Role {
    /// Looks, without waiting, for something that must end an idle period — input for the
    /// guest, an operator's request — and says whether there is. The role keeps what it got;
    /// `m` is the machine (e.g. to see how much console input the guest has not taken yet).
    fn has_work(&mut self, m: &Machine) -> bool;

    /// A descriptor of the role's own that becomes readable when it may have work (standard
    /// input), waited on with the runner's [`Wake`]; `None`: the role signals the wake-up
    /// itself ([`Runner::wake`]) or has nothing to wait for.
    fn fd(&self, m: &Machine) -> Option<RawFd> {
        let _ = m;
        None
    }
}

/// The host's state across slices: the wake-up it waits on, and the time-sync policy while
/// nothing records (a recorder keeps its own, and logs it).
#[derive(Debug)]
pub struct Runner {
    alone: Option<TimeSync>,
    wake: Wake,
}

/// How an idle period ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Idled {
    /// The role had work or a disk's host I/O finished (rather than the timer coming due or
    /// the limit passing).
    pub woken: bool,
    /// Where the clock skipped from, and to.
    pub from: u64,
    /// The icount the clock skipped to.
    pub to: u64,
}

impl Runner {
    /// A runner whose time sync starts at the first slice. Fails only if the system refuses
    /// an eventfd.
    pub fn new() -> std::io::Result<Runner> {
        Ok(Runner {
            alone: None,
            wake: Wake::new()?,
        })
    }

    /// A runner whose time sync takes `m` at `now` as its reference.
    pub fn starting_at(m: &Machine, now: Instant) -> std::io::Result<Runner> {
        Ok(Runner {
            alone: Some(TimeSync::new(m, now)),
            wake: Wake::new()?,
        })
    }

    /// The wake-up this runner waits on while the guest idles: a role signals it when its own
    /// sources have work (`runner.wake().waker()`); the machine's backends get it from the
    /// runner ([`Runner::slice`] hands it to the machine).
    pub fn wake(&self) -> &Wake {
        &self.wake
    }

    /// Makes sure the machine's backends wake this runner (a machine just built, or one that
    /// went live from a replay).
    fn attach(&self, m: &mut Machine) {
        if !m.waker().same(self.wake.waker()) {
            m.set_waker(self.wake.waker().clone());
        }
    }

    /// The time-sync policy used while nothing records, once it has started.
    pub fn time_sync(&self) -> Option<&TimeSync> {
        self.alone.as_ref()
    }

    /// A recorder takes over keeping time (its own policy, logged): the unrecorded one starts
    /// afresh if the recording ends.
    pub fn recorder_keeps_time(&mut self) {
        self.alone = None;
    }

    /// After a pause: the time the guest was stopped is not made up by a jump.
    pub fn rebase<W: Write>(&mut self, m: &Machine, rec: Option<&mut Recorder<W>>, now: Instant) {
        if let Some(r) = rec {
            r.rebase_time(m, now);
        }
        if let Some(ts) = &mut self.alone {
            ts.rebase(m, now);
        }
    }

    /// Console bytes for UART0, logged first when recording.
    pub fn console_input<W: Write>(
        &mut self,
        m: &mut Machine,
        rec: Option<&mut Recorder<W>>,
        bytes: &[u8],
    ) {
        if bytes.is_empty() {
            return;
        }
        if let Some(r) = rec {
            r.console(m, bytes);
        }
        m.console_input(bytes);
    }

    /// One step of the loop: time sync, the completion point, a run slice up to `limit`, and
    /// the recorder's after-slice (module docs). Returns why the slice stopped; a power event
    /// is noted in the recorder too.
    pub fn slice<W: Write>(
        &mut self,
        m: &mut Machine,
        mut rec: Option<&mut Recorder<W>>,
        limit: u64,
    ) -> Stop {
        self.attach(m);
        // What signalled so far is looked at now: the completions below, the device pass of
        // the slice (frames), the role's own look before it idles again.
        self.wake.clear();
        let now = Instant::now();
        let step = match rec.as_deref_mut() {
            Some(r) => r.sync_time(m, now),
            None => self
                .alone
                .get_or_insert_with(|| TimeSync::new(m, now))
                .apply(m, now),
        };
        if !step.pace.is_zero() {
            // Ahead of the wall clock (briefly, until the rate catches up).
            std::thread::sleep(step.pace);
        }
        match rec.as_deref_mut() {
            Some(r) => r.complete_io(m),
            None => {
                m.complete_io();
            }
        }
        let stop = m.run(limit);
        if let Some(r) = rec {
            r.after_slice(m, !matches!(stop, Stop::Idle { .. }));
            if let Stop::Power(p) = stop {
                r.power = Some(p);
            }
        }
        stop
    }

    /// Every hart waits (the slice stopped with [`Stop::Idle`] and `wake`, the icount of the
    /// next timer, if any): host time passes until the timer is due in guest time, the role
    /// has work, the wake-up is signalled (a frame, a disk's host I/O, the role's sources), or
    /// `limit` of host time has passed (a role that must look at something else now and then).
    /// The clock then skips to the timer, or only as far as host time went if the wait ended
    /// early.
    pub fn idle<W: Write>(
        &mut self,
        m: &mut Machine,
        rec: Option<&mut Recorder<W>>,
        wake: Option<u64>,
        limit: Duration,
        role: &mut dyn Role,
    ) -> Idled {
        let now = m.icount();
        let sleep = wake.map(|w| m.guest_duration(w.saturating_sub(now)));
        self.attach(m);
        let t0 = Instant::now();
        let mut woken = false;
        loop {
            if role.has_work(m) {
                woken = true;
                break;
            }
            let elapsed = t0.elapsed();
            let left = sleep.map(|s| s.saturating_sub(elapsed));
            if left.is_some_and(|l| l.is_zero()) || elapsed >= limit {
                break;
            }
            let turn = left
                .unwrap_or(limit)
                .min(limit.saturating_sub(elapsed))
                .min(IDLE_TURN);
            // One wait for everything: the machine's backends, the role's sources, the role's
            // descriptor (which `has_work` then reads).
            if self.wake.wait(turn, role.fd(m)) {
                woken = true;
                break;
            }
        }
        let elapsed = t0.elapsed();
        let waited = m.steps_for(elapsed);
        let to = match wake {
            Some(w) if !woken && sleep.is_some_and(|s| elapsed >= s) => w,
            Some(w) => w.min(now.saturating_add(waited)),
            None => now.saturating_add(waited),
        };
        match rec {
            Some(r) => r.idle_skip(now, to),
            None => {
                if let Some(ts) = &mut self.alone {
                    ts.idled();
                }
            }
        }
        m.skip_to(to);
        Idled {
            woken,
            from: now,
            to,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use machine::config::Firmware;
    use machine::{Backends, MachineConfig};

    /// A machine whose firmware waits for an interrupt that never comes (`wfi; j .-4`).
    fn idler(name: &str) -> Machine {
        let dir = std::env::temp_dir().join(format!("hostrun-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fw = dir.join("fw.bin");
        let code: Vec<u8> = [0x1050_0073u32, 0xffdf_f06f]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect();
        std::fs::write(&fw, code).unwrap();
        let cfg = MachineConfig {
            mem_size: 16 << 20,
            harts: 1,
            bios: Firmware::File(fw),
            kernel: None,
            initrd: None,
            append: String::new(),
            drives: Vec::new(),
            net: None,
        };
        let out = rr::Outbox::default();
        let m = Machine::new(
            &cfg,
            Backends {
                serial: Box::new(out.clone()),
                console: Box::new(out),
                entropy: Box::new(machine::virtio::OsEntropy::default()),
            },
        )
        .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        m
    }

    /// A role that has work after `after` looks.
    struct Wakes {
        after: u32,
        looks: u32,
    }

    impl Role for Wakes {
        fn has_work(&mut self, _: &Machine) -> bool {
            self.looks += 1;
            self.looks > self.after
        }
    }

    type NoRec<'a> = Option<&'a mut Recorder<Vec<u8>>>;

    fn idle_stop(r: &mut Runner, m: &mut Machine) -> Option<u64> {
        let limit = m.icount() + rr::SLICE;
        match r.slice(m, NoRec::None, limit) {
            Stop::Idle { wake } => wake,
            other => panic!("the guest should idle, not {other:?}"),
        }
    }

    #[test]
    fn an_idle_wait_that_runs_out_moves_the_clock_as_far_as_host_time_went() {
        let mut m = idler("limit");
        let mut r = Runner::new().unwrap();
        let wake = idle_stop(&mut r, &mut m);
        let t0 = Instant::now();
        let limit = Duration::from_millis(30);
        let mut role = Wakes {
            after: u32::MAX,
            looks: 0,
        };
        let i = r.idle(&mut m, NoRec::None, wake, limit, &mut role);
        let waited = t0.elapsed();
        assert!(!i.woken);
        assert!(waited >= limit, "{waited:?}");
        assert!(i.to > i.from && m.icount() == i.to);
        let skipped = m.guest_duration(i.to - i.from);
        assert!(
            skipped <= waited + Duration::from_millis(1),
            "idle time never passes faster than host time: {skipped:?} > {waited:?}"
        );
        assert!(r.time_sync().is_some(), "the unrecorded time sync started");
    }

    #[test]
    fn work_for_the_role_ends_an_idle_wait_at_once() {
        let mut m = idler("woken");
        let mut r = Runner::new().unwrap();
        let wake = idle_stop(&mut r, &mut m);
        let mut role = Wakes { after: 2, looks: 0 };
        let t0 = Instant::now();
        let i = r.idle(
            &mut m,
            NoRec::None,
            wake,
            Duration::from_secs(10),
            &mut role,
        );
        assert!(i.woken);
        assert!(t0.elapsed() < Duration::from_secs(5));
        assert_eq!(role.looks, 3);
    }

    #[test]
    fn the_runner_hands_its_wake_up_to_the_machine_and_a_backend_signal_ends_an_idle_wait() {
        let mut m = idler("backend");
        let mut r = Runner::new().unwrap();
        let wake = idle_stop(&mut r, &mut m);
        assert!(m.waker().same(r.wake().waker()), "given at the first slice");
        // A backend's worker thread calls the machine's waker when it has something.
        let waker = m.waker().clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            waker.wake();
        });
        let mut role = Wakes {
            after: u32::MAX,
            looks: 0,
        };
        let t0 = Instant::now();
        let i = r.idle(
            &mut m,
            NoRec::None,
            wake,
            Duration::from_secs(10),
            &mut role,
        );
        assert!(i.woken, "the backend's signal ended it");
        assert!(t0.elapsed() < Duration::from_secs(5));
    }
}
