//! Keeping guest time near wall-clock time (DESIGN §2, "time-sync").
//!
//! Guest time is a pure function of the icount and the machine's clock (`machine::clock`), so
//! left alone it passes as fast as the interpreter runs: slower than the host's clock on a
//! loaded host, faster when the interpreter beats the clock's rate. [`TimeSync`] keeps the two
//! within [`BOUND`] of each other, at run-slice boundaries, in three ways:
//!
//! - **Rate.** It measures how many steps a second the machine executes while it runs (idle
//!   waits and its own pacing left out) and sets the clock's rate (steps per tick) so that
//!   guest time passes as host time does, bending it a little to work off the present
//!   difference. A change is asked for only when the rate is off by more than 1/32, at most once
//!   per [`WINDOW`] of running (sooner while the difference is above half the bound).
//! - **Jump.** When guest time still lags by more than [`BOUND`] (a host stall, a guest slower
//!   than the slowest rate), the clock jumps forward by the whole lag.
//! - **Pace.** When it is ahead by more than [`BOUND`] (the interpreter sped up since the rate
//!   was set), the caller waits before the next run call, at most [`MAX_PACE`] at a time.
//!
//! Jumps and rate changes are the caller's to apply (`Machine::adjust_time`,
//! `Machine::set_time_rate`) and, when recording, to log (time-sync and time-rate entries) at
//! that icount, so that a replay makes the same change at the same instruction. Pacing only
//! decides when host time passes: it changes nothing in the guest and is not logged. Guest
//! time never goes back. Idle periods never pass faster than wall-clock time (the run loops
//! skip to a timer only as far as host time went), so an idle guest is never ahead.
//!
//! This module reads no clock itself: the caller passes the host's `Instant`.

use machine::{clock, Machine};
use std::time::{Duration, Instant};

/// Guest time may lag or lead wall-clock time by this much at a run-slice boundary.
pub const BOUND: Duration = Duration::from_millis(50);

/// Host time of running after which the rate is looked at again.
pub const WINDOW: Duration = Duration::from_millis(100);

/// The longest pacing wait asked for at one boundary.
pub const MAX_PACE: Duration = Duration::from_millis(100);

/// A difference between the clocks is worked off over about this much host time by the rate.
const CORRECT_OVER: f64 = 0.5;

/// What the caller does at one run-slice boundary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncStep {
    /// Move guest time forward by this many ticks (`Machine::adjust_time`), if any.
    pub jump: Option<u64>,
    /// Then set this rate (`Machine::set_time_rate`), if any.
    pub rate: Option<u32>,
    /// Then wait this long before the next run call (zero: no wait).
    pub pace: Duration,
}

/// The host's and the guest's clock at a reference point, what was measured since, and the
/// changes asked for.
#[derive(Debug, Clone)]
pub struct TimeSync {
    host0: Instant,
    /// The machine's raw clock at `host0`, in ticks.
    guest0: u64,
    /// Host instant and icount at the last boundary, while the interval since is all running.
    mark: Option<(Instant, u64)>,
    /// Pacing asked for at the last boundary (not running time).
    paced: Duration,
    /// Steps and host time of running measured since the last rate decision.
    window: (u64, Duration),
    /// Jumps asked for so far.
    pub adjustments: u64,
    /// Ticks they added in total.
    pub added_ticks: u64,
    /// Rate changes asked for so far.
    pub rate_changes: u64,
    /// Pacing asked for in total.
    pub paced_total: Duration,
}

impl TimeSync {
    /// Takes `m`'s clock at host instant `now` as the reference: guest time from here on should
    /// pass as host time does.
    pub fn new(m: &Machine, now: Instant) -> TimeSync {
        TimeSync {
            host0: now,
            guest0: m.raw_time(),
            mark: None,
            paced: Duration::ZERO,
            window: (0, Duration::ZERO),
            adjustments: 0,
            added_ticks: 0,
            rate_changes: 0,
            paced_total: Duration::ZERO,
        }
    }

    /// Takes a new reference (e.g. after a pause, during which neither clock should count).
    pub fn rebase(&mut self, m: &Machine, now: Instant) {
        self.host0 = now;
        self.guest0 = m.raw_time();
        self.mark = None;
    }

    /// Every hart idled since the last boundary: the interval up to the next one is not
    /// running time and is left out of the speed measurement.
    pub fn idled(&mut self) {
        self.mark = None;
    }

    /// Guest time minus host time at `now`, in ticks (negative: guest time lags).
    pub fn lead(&self, m: &Machine, now: Instant) -> i128 {
        let host = clock::ticks_for(now.saturating_duration_since(self.host0));
        let guest = m.raw_time().saturating_sub(self.guest0);
        i128::from(guest) - i128::from(host)
    }

    /// What to do at the run-slice boundary where `m` stands at host instant `now` (see the
    /// module doc). The counts are noted here; the caller applies the changes, in the order
    /// of [`SyncStep`]'s fields.
    pub fn check(&mut self, m: &Machine, now: Instant) -> SyncStep {
        if let Some((t, icount)) = self.mark {
            let host = now.saturating_duration_since(t).saturating_sub(self.paced);
            self.window.0 = self
                .window
                .0
                .saturating_add(m.icount().saturating_sub(icount));
            self.window.1 = self.window.1.saturating_add(host);
        }
        self.mark = Some((now, m.icount()));
        let mut out = SyncStep::default();
        let bound = i128::from(clock::ticks_for(BOUND));
        let mut lead = self.lead(m, now);
        if lead < -bound {
            let lag = u64::try_from(-lead).unwrap_or(u64::MAX);
            self.adjustments += 1;
            self.added_ticks = self.added_ticks.saturating_add(lag);
            out.jump = Some(lag);
            lead = 0;
        }
        let (steps, host) = self.window;
        let urgent = lead.abs() > bound / 2 && host >= WINDOW / 8;
        if steps > 0 && (host >= WINDOW || urgent) {
            self.window = (0, Duration::ZERO);
            let rate = rate_for(steps, host, lead);
            let now_rate = m.clock().rate;
            if rate.abs_diff(now_rate) * 32 > now_rate {
                self.rate_changes += 1;
                out.rate = Some(rate);
            }
        }
        if lead > bound {
            let ahead = u64::try_from(lead - bound / 2).unwrap_or(u64::MAX);
            out.pace = clock::duration_of_ticks(ahead).min(MAX_PACE);
            self.paced_total = self.paced_total.saturating_add(out.pace);
        }
        self.paced = out.pace;
        out
    }

    /// [`TimeSync::check`], with the jump and the rate applied to `m` (unlogged: for a run
    /// that is not recorded). Returns what was done; the caller still does the pacing.
    pub fn apply(&mut self, m: &mut Machine, now: Instant) -> SyncStep {
        let s = self.check(m, now);
        if let Some(d) = s.jump {
            m.adjust_time(d);
        }
        if let Some(r) = s.rate {
            // In range by construction.
            let _ = m.set_time_rate(r);
        }
        s
    }
}

/// The rate (sixteenths of a step per tick) at which `steps` steps in `host` of host time give
/// host time's pace, bent to work off `lead` ticks over [`CORRECT_OVER`] seconds; in range.
fn rate_for(steps: u64, host: Duration, lead: i128) -> u32 {
    let speed = steps as f64 / host.as_secs_f64().max(1e-6);
    let lead_secs = lead as f64 / clock::TIMEBASE_HZ as f64;
    let pace = (1.0 - lead_secs / CORRECT_OVER).clamp(0.5, 1.5);
    let rate = speed * f64::from(clock::RATE_UNIT) / (clock::TIMEBASE_HZ as f64 * pace);
    // Float to int saturates; NaN cannot arise (host > 0, pace > 0).
    (rate.round() as u32).clamp(clock::MIN_RATE, clock::MAX_RATE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_matches_the_measured_speed() {
        // 250 M steps a second: 25 steps per tick, 400 sixteenths.
        assert_eq!(rate_for(25_000_000, Duration::from_millis(100), 0), 400);
        // 100 M steps a second: the nominal rate.
        assert_eq!(
            rate_for(10_000_000, Duration::from_millis(100), 0),
            clock::NOMINAL_RATE
        );
        // Ahead by 100 ms: guest time is slowed to 80% of host time's pace.
        assert_eq!(
            rate_for(25_000_000, Duration::from_millis(100), 1_000_000),
            500
        );
        // Behind by 100 ms: sped up to 120%.
        assert_eq!(
            rate_for(25_000_000, Duration::from_millis(100), -1_000_000),
            333
        );
        // Out of range either way: clamped.
        assert_eq!(
            rate_for(u64::MAX, Duration::from_millis(1), 0),
            clock::MAX_RATE
        );
        assert_eq!(rate_for(1, Duration::from_secs(100), 0), clock::MIN_RATE);
    }
}
