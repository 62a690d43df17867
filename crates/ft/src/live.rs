//! The run loop of a live VM: the primary (protected: every input goes into the log that the
//! link carries to the backup, and output waits for the backup's acknowledgement), or a VM
//! running on alone (a backup that went live, a primary whose backup is gone).
//!
//! Per slice: control operations, client input, one [`rr::SLICE`] of guest execution, the
//! log frame and the slice's horizon to the link, the slice's console output to the output
//! gate ([`crate::gate`], which holds it with the slice's frames and disk writes while
//! protected). When every hart waits, host time passes until the next timer or client input
//! (idle time never runs faster than the wall clock). While protected, a full send queue or
//! too much unacknowledged log stalls the primary, and a backup lagging by more than
//! `max_lag` of guest time slows it down a few percent at a time.

use crate::clone::{LiveClone, Step};
use crate::console::{Control, Endpoint};
use crate::gate::{Gate, Output};
use crate::protect::Protection;
use crate::status::{Role, Status};
use crate::{FtError, PairConfig};
use arbiter::Claim;
use machine::{Machine, PowerEvent, Stop};
use replay::Event;
use rr::Outbox;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Console input accepted ahead of the guest.
const MAX_BACKLOG: usize = 64 * 1024;

/// What ends the loop's idle waits besides the machine's own wake-ups (frames, disk I/O):
/// client input or a control operation at the endpoint, which signals the runner's wake-up
/// ([`Endpoint::set_waker`]).
struct Clients<'a>(&'a Endpoint);

impl hostrun::Role for Clients<'_> {
    fn has_work(&mut self, _: &Machine) -> bool {
        self.0.has_work()
    }
}

/// A live VM.
pub(crate) struct LiveVm {
    pub m: Machine,
    pub out: Outbox,
    pub ep: Endpoint,
    /// The output rule: holds what the guest sends out while protected.
    pub gate: Gate,
    pub prot: Option<Protection>,
    pub cfg: PairConfig,
    pub status: Status,
    /// What protecting it again takes (`ftvm control protect`).
    pub with: crate::protect::ProtectWith,
    /// A live clone to a new backup, in progress.
    pub cloning: Option<LiveClone>,
}

/// What the loop does after looking at the backup.
pub(crate) enum Next {
    /// Runs on (protected, or alone after winning the arbiter).
    Go,
    /// Stops with this exit code (lost the arbiter, or could not ask it).
    Exit(i32),
}

impl LiveVm {
    /// Runs until the guest powers off (0), an operator powers it off (0), or this side loses
    /// the arbiter (3).
    pub fn run(mut self) -> Result<i32, FtError> {
        self.m.set_deferred_io(true);
        self.update_status(&mut (Instant::now(), 0));
        let mut paused = false;
        let mut throttle = crate::throttle::Throttle::default();
        let mut last_adjust = Instant::now();
        let mut last_status = Instant::now() - Duration::from_secs(1);
        let mut bytes_window = (Instant::now(), 0u64);
        let mut idle: Option<Option<u64>> = None;
        // The host's steps of the loop (time sync, completions, a slice, idling): the recorder's
        // calls go with the machine's there while protected.
        // One wake-up for the idle waits: the machine's backends and the endpoint signal it.
        let mut runner = hostrun::Runner::new()
            .map_err(crate::io("cannot create the run loop's wake-up (eventfd)"))?;
        self.ep.set_waker(runner.wake().waker().clone());
        loop {
            for c in self.ep.take_controls() {
                match c {
                    Control::Pause if !paused => {
                        paused = true;
                        self.log(Event::Pause);
                        self.update_status(&mut bytes_window);
                        tracing::info!(
                            "ftvm {}: paused at icount {}",
                            self.status.role,
                            self.m.icount()
                        );
                    }
                    Control::Resume if paused => {
                        paused = false;
                        self.log(Event::Resume);
                        // The paused time is not made up by a time-sync jump.
                        let rec = self.prot.as_mut().map(|p| &mut p.rec);
                        runner.rebase(&self.m, rec, Instant::now());
                        tracing::info!("ftvm {}: resumed", self.status.role);
                    }
                    Control::PowerOff => {
                        tracing::info!("ftvm {}: powered off by the operator", self.status.role);
                        return Ok(self.finish());
                    }
                    Control::Handover => {
                        if let Some(code) = self.hand_over() {
                            return Ok(code);
                        }
                    }
                    Control::Protect(to) => self.begin_clone(to),
                    _ => {}
                }
            }
            if self.advance_clone() {
                // The recorder keeps guest time in step from here on.
                runner.recorder_keeps_time();
            }
            if last_status.elapsed() >= Duration::from_millis(50) {
                last_status = Instant::now();
                self.update_status(&mut bytes_window);
            }
            if let Next::Exit(c) = self.check_peer()? {
                return Ok(c);
            }
            if paused {
                self.ship();
                self.ep.wait(self.idle_limit(Duration::from_millis(50)));
                continue;
            }
            let t0 = Instant::now();
            if let Some(wake) = idle.take() {
                // Every hart waits: the slice's log and output go first, then host time passes
                // (at most 100 ms, to look at the peer; 1 ms while a clone copies pages).
                self.ship();
                let limit = self.idle_limit(Duration::from_millis(100));
                let rec = self.prot.as_mut().map(|p| &mut p.rec);
                // The devices run next: a frame that woke us is taken then.
                runner.idle(&mut self.m, rec, wake, limit, &mut Clients(&self.ep));
            } else {
                if self.m.console_backlog() < MAX_BACKLOG {
                    let bytes = self.ep.take_input(16 << 10);
                    let rec = self.prot.as_mut().map(|p| &mut p.rec);
                    runner.console_input(&mut self.m, rec, &bytes);
                }
                // Time sync (logged while protected), the completion point (logged), a slice,
                // what the devices took (logged).
                let limit = self.m.icount().saturating_add(rr::SLICE);
                let rec = self.prot.as_mut().map(|p| &mut p.rec);
                let stop = runner.slice(&mut self.m, rec, limit);
                match stop {
                    Stop::Limit => {}
                    Stop::Idle { wake } => idle = Some(wake),
                    Stop::Power(PowerEvent::PowerOff) => {
                        tracing::info!("ftvm {}: the guest powered off", self.status.role);
                        return Ok(self.finish());
                    }
                    Stop::Power(PowerEvent::Fail(code)) => {
                        tracing::info!(
                            "ftvm {}: the guest reported failure {code:#x}",
                            self.status.role
                        );
                        self.finish();
                        return Ok(match code & 0xff {
                            0 => 1,
                            c => i32::from(c),
                        });
                    }
                    Stop::Power(PowerEvent::Reset) => {
                        tracing::info!("ftvm {}: the guest asked for a reset, which ftvm does not replicate: powering off", self.status.role);
                        return Ok(self.finish());
                    }
                }
            }
            self.ship();
            self.flow_control()?;
            // Slowing down a primary whose backup lags behind.
            if let Some(p) = &mut self.prot {
                if last_adjust.elapsed() >= Duration::from_millis(100) {
                    last_adjust = Instant::now();
                    let replayed = p.link.state.replayed.load(Ordering::Relaxed);
                    let lag = p.lag.lag(replayed, last_adjust);
                    self.status.lag = lag;
                    throttle.adjust(lag, self.cfg.max_lag);
                    self.status.slowdown = throttle.slowdown;
                }
                let pause = throttle.pause_after(t0.elapsed());
                if !pause.is_zero() {
                    std::thread::sleep(pause);
                }
            }
        }
    }

    fn log(&mut self, e: Event) {
        if let Some(p) = &mut self.prot {
            p.rec.event(&self.m, e);
        }
    }

    /// Sends the slice's log and horizon, and hands the slice's console output to the gate.
    pub(crate) fn ship(&mut self) {
        let horizon = self.m.icount();
        let _ = self.gate.push(Output::Console(self.out.take()));
        if let Some(p) = &mut self.prot {
            self.gate.seal(horizon);
            let released = self.gate.released();
            if let Err(e) = p.rec.flush() {
                p.link.state.failed.store(true, Ordering::Relaxed);
                tracing::warn!("ftvm primary: writing the log failed: {e}");
            }
            let all = p.buf.take();
            // Messages of at most 4 MiB (a large snapshot spans several); only the last one
            // brings the new horizon.
            let mut chunks: Vec<Vec<u8>> = all.chunks(4 << 20).map(<[u8]>::to_vec).collect();
            if chunks.is_empty() {
                chunks.push(Vec::new());
            }
            let n = chunks.len();
            for (i, bytes) in chunks.into_iter().enumerate() {
                let h = if i + 1 == n { horizon } else { p.sent_horizon };
                // A full queue: wait for the sender (bounded by the failure check).
                let timeout = self.cfg.heartbeat.timeout;
                p.link
                    .send_until(h, released, bytes, || p.live.silence() > timeout);
            }
            p.sent_horizon = horizon;
            p.lag.mark(horizon, Instant::now());
        }
    }

    /// Stalls while too much log is unacknowledged.
    fn flow_control(&mut self) -> Result<(), FtError> {
        loop {
            let Some(p) = &self.prot else { return Ok(()) };
            if p.link.state.in_flight() <= self.cfg.buffer as u64 {
                return Ok(());
            }
            if p.link.state.failed.load(Ordering::Relaxed)
                || p.live.silence() > self.cfg.heartbeat.timeout
            {
                return Ok(());
            }
            self.status.stalls += 1;
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// How long the loop may wait for work: not long while a clone copies pages.
    fn idle_limit(&self, limit: Duration) -> Duration {
        if self.cloning.is_some() {
            limit.min(Duration::from_millis(1))
        } else {
            limit
        }
    }

    /// A VM running alone is protected again by the backup waiting at `to`: a live clone
    /// ([`crate::clone`]) starts, which the run loop carries on between slices. On a failure
    /// the VM runs on alone.
    fn begin_clone(&mut self, to: std::net::SocketAddr) {
        if self.prot.is_some() || self.cloning.is_some() {
            tracing::warn!(
                "ftvm primary: asked to be protected by {to}, but a backup protects it already or a clone is under way"
            );
            return;
        }
        let generation = match self.cfg.arbiter.current(&self.cfg.vm) {
            Ok(g) => g.map_or(0, |(g, _)| g),
            Err(e) => {
                self.clone_failed(&to.to_string(), &format!("the arbiter failed ({e})"));
                return;
            }
        };
        // The console's offsets go at the pause (`complete_clone`).
        let started = crate::protect::connect(
            &mut self.m,
            &self.cfg,
            &self.with,
            to,
            Duration::from_secs(5),
            generation,
            None,
            false,
        )
        .and_then(|(w, peer)| {
            // Non-shared disks are copied live too.
            let disks = if self.cfg.non_shared {
                self.with.readonly.len()
            } else {
                0
            };
            LiveClone::start(&mut self.m, w, peer, self.cfg.clone_bandwidth, disks)
        });
        match started {
            Ok(c) => {
                tracing::info!(
                    event = "clone_started",
                    backup = %to,
                    generation,
                    "ftvm primary: cloning to the backup at {to} (generation {generation}) while the guest runs"
                );
                self.status.clone = Some(format!("to {to}: starting"));
                self.cloning = Some(c);
                self.publish_status();
            }
            Err(e) => self.clone_failed(&to.to_string(), &e.to_string()),
        }
    }

    /// One step of the live clone; `true` once it completed and the VM is protected.
    fn advance_clone(&mut self) -> bool {
        let Some(c) = &mut self.cloning else {
            return false;
        };
        let to = c.to().map_or_else(|| "?".into(), |a| a.to_string());
        match c.step(&mut self.m, self.cfg.heartbeat.timeout) {
            Ok(Step::Copying) => {
                self.status.clone = Some(format!("to {to}: {}", c.progress().render()));
                false
            }
            Ok(Step::Ready) => self.complete_clone(),
            Err(e) => {
                c.untrack(&mut self.m);
                self.cloning = None;
                self.clone_failed(&to, &e.to_string());
                false
            }
        }
    }

    /// The clone's rounds are over: the guest stops here (between two slices) while the log
    /// starts with the closing delta.
    fn complete_clone(&mut self) -> bool {
        let Some(c) = self.cloning.take() else {
            return false;
        };
        let t0 = Instant::now();
        let progress = c.progress();
        let total = c.started().elapsed();
        let to = c.to().map_or_else(|| "?".into(), |a| a.to_string());
        let mut c = c;
        let chunks = c.flush_disks(&mut self.m);
        // Up to 1 MiB of recent output goes along, for clients that are behind.
        let console = chunks.and_then(|_| c.send_console(self.ep.offsets(1 << 20)));
        let started = console.and_then(|_| c.finish()).and_then(|(w, peer)| {
            let generation = peer.generation;
            crate::protect::start(
                &mut self.m,
                &self.gate,
                &self.cfg,
                &self.with,
                w,
                peer,
                true,
            )
            .map(|p| (p, generation))
        });
        let (p, generation) = match started {
            Ok(x) => x,
            Err(e) => {
                self.clone_failed(&to, &e.to_string());
                return false;
            }
        };
        let pause = t0.elapsed();
        let delta = p.buf.len();
        // The new backup starts here: it lags by nothing yet (and the throttle must not see
        // the whole run as lag before its first acknowledgement).
        p.link
            .state
            .replayed
            .store(self.m.icount(), Ordering::Relaxed);
        self.prot = Some(p);
        self.status.protected = true;
        self.status.role = Role::Primary;
        self.status.peer = to.clone();
        self.status.clone = None;
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        self.status.last_protected = Some(format!(
            "protected again by {to} at icount {} by a live clone: {:.1} ms in all, {} rounds, {:.1} MB of pages ({:.1} MB on the wire), guest paused {:.1} ms for a closing delta of {delta} bytes",
            self.m.icount(),
            ms(total + pause),
            progress.round + 1,
            progress.sent_raw as f64 / 1e6,
            progress.sent_wire as f64 / 1e6,
            ms(pause),
        ));
        self.publish_status();
        tracing::info!(
            event = "protected_again",
            backup = %to,
            generation,
            rounds = progress.round + 1,
            sent_bytes = progress.sent_raw,
            wire_bytes = progress.sent_wire,
            delta_bytes = delta,
            total_ms = ms(total + pause),
            pause_ms = ms(pause),
            "ftvm primary: protected again by the backup at {to} (generation {generation}) at icount {}: live clone in {:.1} ms, {} rounds, guest paused {:.1} ms",
            self.m.icount(),
            ms(total + pause),
            progress.round + 1,
            ms(pause)
        );
        true
    }

    /// Protecting the VM by `to` failed: it runs on alone, and says so.
    fn clone_failed(&mut self, to: &str, why: &str) {
        tracing::warn!(
            event = "protect_failed",
            backup = %to,
            reason = %why,
            "ftvm primary: protecting with the backup at {to} failed: {why}; running on alone"
        );
        self.status.clone = None;
        self.status.last_protected = Some(format!("failed: by {to}: {why}"));
        self.publish_status();
    }

    /// Looks at the backup's health; on a failure, asks the arbiter whether to go on alone.
    pub(crate) fn check_peer(&mut self) -> Result<Next, FtError> {
        let Some(p) = &self.prot else {
            return Ok(Next::Go);
        };
        let why = match p.link.state.failure() {
            Some(w) => w,
            None if p.live.silence() > self.cfg.heartbeat.timeout => {
                format!("nothing heard from the backup for {:?}", p.live.silence())
            }
            None => return Ok(Next::Go),
        };
        let generation = p.generation + 1;
        p.link.close();
        p.hb_stop.store(true, Ordering::Relaxed);
        tracing::warn!(
            event = "backup_lost",
            reason = %why,
            "ftvm primary: backup lost ({why}); asking the arbiter {}",
            self.cfg.arbiter.describe()
        );
        let t0 = Instant::now();
        let claim = crate::claim::claim(&self.cfg, generation, "primary").map_err(FtError::Arbiter);
        match claim {
            Ok(Claim::Won) => {
                self.gate.open();
                // Recording and holding are over: their layers come off the machine.
                if let Some(mut p) = self.prot.take() {
                    if let Err(e) = crate::protect::take_off(&mut self.m, &self.gate, &mut p.rec) {
                        tracing::warn!("ftvm primary: {e}");
                    }
                }
                tracing::info!(
                    event = "running_alone",
                    generation,
                    "ftvm primary: won generation {generation} in {:?}: running on alone (unprotected)",
                    t0.elapsed()
                );
                self.prot = None;
                self.status.protected = false;
                self.status.role = Role::Primary;
                self.status.last_failover =
                    Some(format!("backup lost at icount {}: {why}", self.m.icount()));
                // At once: a client that asks right after this must not read "protected".
                self.publish_status();
                Ok(Next::Go)
            }
            Ok(Claim::Lost { winner }) => {
                self.gate.discard();
                tracing::warn!("ftvm primary: the arbiter gave generation {generation} to {winner}: stopping, emitting nothing more");
                self.ep.close();
                Ok(Next::Exit(3))
            }
            Err(e) => {
                self.gate.discard();
                // Without the arbiter nobody may go on: stop rather than risk two primaries.
                tracing::warn!("ftvm primary: {e}: stopping, emitting nothing more");
                self.ep.close();
                Ok(Next::Exit(3))
            }
        }
    }

    /// A planned move to the backup's host: the guest stops here; once the backup has
    /// acknowledged and replayed everything (so every held write and output is out) the channel
    /// closes without an end marker, and the backup — seeing its primary gone — wins the next
    /// generation and goes live where this one stopped. This side then exits 0, emitting
    /// nothing more. `None`: not protected, or the backup did not catch up within 30 s (the VM
    /// runs on here, still protected).
    fn hand_over(&mut self) -> Option<i32> {
        let Some(p) = &mut self.prot else {
            tracing::warn!(
                "ftvm primary: asked to hand over, but no backup protects it: running on"
            );
            return None;
        };
        let t0 = Instant::now();
        let horizon = self.m.icount();
        let _ = self.gate.push(Output::Console(self.out.take()));
        self.gate.seal(horizon);
        let released = self.gate.released();
        if let Err(e) = p.rec.flush() {
            tracing::warn!("ftvm primary: writing the log failed: {e}");
        }
        let bytes = p.buf.take();
        let timeout = self.cfg.heartbeat.timeout;
        p.link
            .send_until(horizon, released, bytes, || p.live.silence() > timeout);
        let caught_up = |p: &Protection| {
            p.link.state.acked_horizon.load(Ordering::Relaxed) >= horizon
                && p.link.state.replayed.load(Ordering::Relaxed) >= horizon
        };
        let mut last_poke = Instant::now();
        while !caught_up(p) {
            if p.link.state.failed.load(Ordering::Relaxed) || t0.elapsed() > Duration::from_secs(30)
            {
                tracing::warn!(
                    "ftvm primary: the backup did not catch up to icount {horizon} for the handover: running on"
                );
                return None;
            }
            // The backup acknowledges each message with how far it has replayed: an empty one
            // at the same horizon now and then keeps that coming.
            if last_poke.elapsed() >= Duration::from_millis(20) {
                last_poke = Instant::now();
                let _ = p.link.send(horizon, released, Vec::new());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        // Everything held is released by now (the backup acknowledged the horizon).
        let p = self.prot.take()?;
        p.hb_stop.store(true, Ordering::Relaxed);
        p.link.close();
        // Everything acknowledged has left already; nothing later was made.
        self.gate.open();
        self.ep.close();
        tracing::info!(
            event = "handed_over",
            icount = horizon,
            ms = t0.elapsed().as_secs_f64() * 1e3,
            "ftvm primary: handed over to the backup at icount {horizon} after {:.1} ms: stopping here",
            t0.elapsed().as_secs_f64() * 1e3
        );
        Some(0)
    }

    /// Ends the log (the backup then stops too) and lets the last output out.
    fn finish(&mut self) -> i32 {
        if let Some(p) = self.prot.take() {
            let horizon = self.m.icount();
            let _ = self.gate.push(Output::Console(self.out.take()));
            self.gate.seal(horizon);
            let released = self.gate.released();
            let Protection { rec, buf, link, .. } = p;
            // The final digest, the power-off entry if the guest asked, the end marker.
            if let Err(e) = rec.finish(&self.m) {
                tracing::warn!("ftvm primary: ending the log failed: {e}");
            }
            // The backup reads to the end marker, acknowledges (the last output is released)
            // and stops.
            link.end(horizon, released, buf.take(), Duration::from_secs(5));
        }
        // The guest ended: what it wrote must be on the disk, acknowledged or not (the backup
        // stops too and will not re-issue it).
        self.gate.open();
        let _ = self.gate.push(Output::Console(self.out.take()));
        // Clients get a moment to read the last bytes.
        std::thread::sleep(Duration::from_millis(200));
        0
    }

    fn update_status(&mut self, window: &mut (Instant, u64)) {
        let s = &mut self.status;
        s.icount = self.m.icount();
        s.guest_time = machine::clock::duration_of_ticks(self.m.raw_time());
        if let Some(p) = &self.prot {
            let st = &p.link.state;
            s.sent_entries = p.rec.entries();
            s.sent_bytes = st.sent_bytes.load(Ordering::Relaxed);
            s.acked_entries = st.acked_entries.load(Ordering::Relaxed);
            s.acked_bytes = st.acked_bytes.load(Ordering::Relaxed);
            s.replayed = st.replayed.load(Ordering::Relaxed);
            s.peer_silence = p.live.silence();
            s.max_gap = p.live.max_gap();
            s.heartbeats_refused = p.live.rejected.load(std::sync::atomic::Ordering::Relaxed);
            s.heartbeats_received = p.live.received.load(std::sync::atomic::Ordering::Relaxed);
            // A new link counts from zero again.
            if s.sent_bytes < window.1 {
                *window = (Instant::now(), s.sent_bytes);
            }
            let dt = window.0.elapsed().as_secs_f64();
            if dt >= 1.0 {
                s.bandwidth_bps = (s.sent_bytes.saturating_sub(window.1)) as f64 * 8.0 / dt;
                *window = (Instant::now(), s.sent_bytes);
            }
        }
        self.publish_status();
    }

    /// Hands the status text to the endpoint (`STATUS` answers with it).
    fn publish_status(&mut self) {
        self.status.held_bytes = self.gate.held_bytes();
        self.ep.set_status(&self.status);
    }
}
