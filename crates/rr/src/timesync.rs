//! Keeping guest time near wall-clock time (DESIGN §2, "time-sync").
//!
//! Guest time is a pure function of the icount, so while the interpreter is slower than its
//! nominal 100 MIPS (a busy guest on a loaded host) the guest's clock falls behind the host's.
//! [`TimeSync`] measures that lag at run-slice boundaries and, once it passes [`BOUND`], asks
//! for an adjustment of the whole lag: the caller moves the machine's clock forward with
//! `Machine::adjust_time` and, when recording, logs it as a time-sync entry at that icount, so
//! that a replay makes the same adjustment at the same instruction. The lag right after a
//! check is thus at most [`BOUND`] plus one slice of host time.
//!
//! Guest time never goes back: when the interpreter runs faster than 100 MIPS, guest time runs
//! ahead of the host's and stays so (nothing is slowed down to wait for the wall clock; idle
//! periods never pass faster than wall-clock time, so an idle guest does not run ahead).
//!
//! This module reads no clock itself: the caller passes the host's `Instant`.

use machine::{clock, Machine};
use std::time::{Duration, Instant};

/// Guest time may lag wall-clock time by this much before it is moved forward.
pub const BOUND: Duration = Duration::from_millis(50);

/// The host's and the guest's clock at a reference point, and the adjustments made since.
#[derive(Debug, Clone)]
pub struct TimeSync {
    host0: Instant,
    /// The machine's raw clock at `host0`, in ticks.
    guest0: u64,
    /// Adjustments asked for so far.
    pub adjustments: u64,
    /// Ticks they added in total.
    pub added_ticks: u64,
}

impl TimeSync {
    /// Takes `m`'s clock at host instant `now` as the reference: guest time from here on should
    /// pass as host time does.
    pub fn new(m: &Machine, now: Instant) -> TimeSync {
        TimeSync {
            host0: now,
            guest0: m.raw_time(),
            adjustments: 0,
            added_ticks: 0,
        }
    }

    /// Takes a new reference (e.g. after a pause, during which neither clock should count).
    pub fn rebase(&mut self, m: &Machine, now: Instant) {
        self.host0 = now;
        self.guest0 = m.raw_time();
    }

    /// How far guest time is behind host time at `now`, in ticks (0 when it is ahead).
    pub fn lag(&self, m: &Machine, now: Instant) -> u64 {
        let host = clock::ticks_for(now.saturating_duration_since(self.host0));
        let guest = m.raw_time().saturating_sub(self.guest0);
        host.saturating_sub(guest)
    }

    /// The adjustment, in ticks, that brings `m`'s clock back to host time when it lags by more
    /// than [`BOUND`]; `None` otherwise. The caller applies it (`Machine::adjust_time`) and logs
    /// it; the count is noted here.
    pub fn check(&mut self, m: &Machine, now: Instant) -> Option<u64> {
        let lag = self.lag(m, now);
        if lag <= clock::ticks_for(BOUND) {
            return None;
        }
        self.adjustments += 1;
        self.added_ticks = self.added_ticks.saturating_add(lag);
        Some(lag)
    }

    /// [`TimeSync::check`], applied to `m`; returns the adjustment made, if any.
    pub fn apply(&mut self, m: &mut Machine, now: Instant) -> Option<u64> {
        let d = self.check(m, now)?;
        m.adjust_time(d);
        Some(d)
    }
}
