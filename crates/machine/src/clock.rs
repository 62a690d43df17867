//! Guest time as a pure function of the machine-wide instruction count.
//!
//! This is the determinism contract for time (DESIGN §2): nothing inside the VM ever reads a
//! host clock. The raw clock that the CLINT's `mtime` is built on is a [`Clock`]: a piecewise
//! linear function of the icount, `base_ticks + (icount − base_icount) / steps-per-tick`. The
//! host changes it only between two run calls, in two ways, both logged by a recorder and made
//! at the same icount by a replayer: a **time-sync** jump forward (`Machine::adjust_time`, when
//! guest time has fallen behind wall-clock time) and a **rate** change (`Machine::set_time_rate`,
//! so that guest time passes about as fast as host time at the interpreter's present speed,
//! instead of running ahead of it when the interpreter is faster than nominal). Neither ever moves
//! the clock back. Timer deadlines go back from raw clock to icount through
//! [`Clock::icount_at`].

/// Frequency of `mtime` (the device tree's `timebase-frequency`), in Hz.
pub const TIMEBASE_HZ: u64 = 10_000_000;

/// Machine-wide steps per `mtime` tick: a nominal 100 MIPS against the 10 MHz timebase.
pub const ICOUNT_PER_TICK: u64 = 10;

/// Timebase ticks in `d` (saturating).
pub fn ticks_for(d: std::time::Duration) -> u64 {
    let ticks = d.as_nanos().saturating_mul(u128::from(TIMEBASE_HZ)) / 1_000_000_000;
    u64::try_from(ticks).unwrap_or(u64::MAX)
}

/// The duration of `ticks` timebase ticks.
pub fn duration_of_ticks(ticks: u64) -> std::time::Duration {
    let nanos = u128::from(ticks) * 1_000_000_000 / u128::from(TIMEBASE_HZ);
    std::time::Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// Steps per tick are counted in units of 1/`RATE_UNIT`: a rate of `r` means `r / 16` steps
/// per tick.
pub const RATE_UNIT: u32 = 16;

/// The rate a machine starts at: [`ICOUNT_PER_TICK`] steps per tick (100 MIPS).
pub const NOMINAL_RATE: u32 = ICOUNT_PER_TICK as u32 * RATE_UNIT;

/// The fastest guest clock per step: 1 step per tick (a nominal 1000 MIPS).
pub const MIN_RATE: u32 = RATE_UNIT;

/// The slowest guest clock per step: 100 steps per tick (a nominal 10 MIPS).
pub const MAX_RATE: u32 = 100 * RATE_UNIT;

/// `rate` as a clock rate, if it is one (within [`MIN_RATE`]..=[`MAX_RATE`]).
pub fn valid_rate(rate: u64) -> Option<u32> {
    u32::try_from(rate)
        .ok()
        .filter(|r| (MIN_RATE..=MAX_RATE).contains(r))
}

/// The machine's clock: guest time in ticks as a function of the machine-wide icount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    /// The icount where the present rate took effect.
    pub base_icount: u64,
    /// The raw clock at `base_icount`.
    pub base_ticks: u64,
    /// Steps per tick, in 1/[`RATE_UNIT`] (within [`MIN_RATE`]..=[`MAX_RATE`]).
    pub rate: u32,
    /// Ticks added by time-sync jumps so far (reported; counted in `base_ticks` already).
    pub added: u64,
}

impl Default for Clock {
    fn default() -> Clock {
        Clock {
            base_icount: 0,
            base_ticks: 0,
            rate: NOMINAL_RATE,
            added: 0,
        }
    }
}

impl Clock {
    /// The raw clock at machine-wide `icount` (not before `base_icount`; saturating).
    #[inline]
    pub fn raw(&self, icount: u64) -> u64 {
        let steps = u128::from(icount.saturating_sub(self.base_icount));
        let ticks = steps * u128::from(RATE_UNIT) / u128::from(self.rate.max(1));
        self.base_ticks
            .saturating_add(u64::try_from(ticks).unwrap_or(u64::MAX))
    }

    /// The first icount at which [`Clock::raw`] reaches `raw`: `base_icount` when it already
    /// has (saturating).
    #[inline]
    pub fn icount_at(&self, raw: u64) -> u64 {
        let ticks = u128::from(raw.saturating_sub(self.base_ticks));
        let steps = (ticks * u128::from(self.rate)).div_ceil(u128::from(RATE_UNIT));
        self.base_icount
            .saturating_add(u64::try_from(steps).unwrap_or(u64::MAX))
    }

    /// Moves the clock forward by `ticks` (a time-sync jump).
    pub fn jump(&mut self, ticks: u64) {
        self.base_ticks = self.base_ticks.saturating_add(ticks);
        self.added = self.added.saturating_add(ticks);
    }

    /// From `icount` on, `rate` (in 1/[`RATE_UNIT`] steps per tick); the clock is continuous
    /// there. `None` (and no change) for a rate out of range.
    pub fn set_rate(&mut self, icount: u64, rate: u32) -> Option<()> {
        let rate = valid_rate(u64::from(rate))?;
        self.base_ticks = self.raw(icount);
        self.base_icount = self.base_icount.max(icount);
        self.rate = rate;
        Some(())
    }

    /// Guest time that `steps` steps take at the present rate.
    pub fn duration_of(&self, steps: u64) -> std::time::Duration {
        let nanos = u128::from(steps) * u128::from(RATE_UNIT) * 1_000_000_000
            / (u128::from(TIMEBASE_HZ) * u128::from(self.rate.max(1)));
        std::time::Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// Steps that `d` of guest time takes at the present rate (saturating).
    pub fn steps_for(&self, d: std::time::Duration) -> u64 {
        let steps = d
            .as_nanos()
            .saturating_mul(u128::from(TIMEBASE_HZ))
            .saturating_mul(u128::from(self.rate))
            / (1_000_000_000 * u128::from(RATE_UNIT));
        u64::try_from(steps).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_default_clock_is_the_nominal_mapping() {
        let c = Clock::default();
        assert_eq!(c.raw(c.icount_at(12345)), 12345);
        assert_eq!(c.raw(c.icount_at(12345) - 1), 12344);
        assert_eq!(c.steps_for(Duration::from_secs(1)), 100_000_000);
        assert_eq!(c.duration_of(100_000_000), Duration::from_secs(1));
        assert_eq!(c.icount_at(u64::MAX), u64::MAX);
        assert_eq!(c.steps_for(Duration::MAX), u64::MAX);
        assert_eq!(ticks_for(Duration::from_millis(50)), 500_000);
        assert_eq!(duration_of_ticks(500_000), Duration::from_millis(50));
        for i in [0u64, 9, 10, 12345, 1 << 40] {
            assert_eq!(c.raw(i), i / ICOUNT_PER_TICK);
        }
        assert_eq!(c.icount_at(12345), 12345 * ICOUNT_PER_TICK);
    }

    #[test]
    fn a_rate_change_keeps_the_clock_continuous_and_monotonic() {
        let mut c = Clock::default();
        c.jump(7);
        assert_eq!(c.raw(100), 17);
        assert_eq!(c.added, 7);
        // 2.5 steps per tick from icount 1005 on.
        assert_eq!(c.set_rate(1005, 40), Some(()));
        assert_eq!(c.raw(1005), 100 + 7);
        assert_eq!(c.raw(1005 + 25), 107 + 10);
        let mut last = 0;
        for i in 0..3000 {
            let t = c.raw(i);
            assert!(t >= last, "time went back at {i}");
            last = t;
        }
        // icount_at is the first icount reaching a tick, at any rate.
        for raw in 100..1200 {
            let at = c.icount_at(raw);
            assert!(c.raw(at) >= raw);
            assert!(at <= 1005 || c.raw(at - 1) < raw, "{raw}: {at}");
        }
        assert_eq!(c.duration_of(25_000_000), Duration::from_secs(1));
        assert_eq!(c.steps_for(Duration::from_secs(1)), 25_000_000);
        // Out of range: refused, nothing changes.
        assert_eq!(valid_rate(u64::from(MAX_RATE)), Some(MAX_RATE));
        assert_eq!(valid_rate(u64::from(u32::MAX) + u64::from(MIN_RATE)), None);
        let before = c;
        assert_eq!(c.set_rate(2000, MIN_RATE - 1), None);
        assert_eq!(c.set_rate(2000, MAX_RATE + 1), None);
        assert_eq!(c, before);
        assert_eq!(
            Clock {
                rate: MAX_RATE,
                ..c
            }
            .raw(u64::MAX),
            107 + (u64::MAX - 1005) / 100
        );
    }
}
