//! Guest time as a pure function of the machine-wide instruction count.
//!
//! This is the determinism contract for time (DESIGN §2): nothing inside the VM ever reads a
//! host clock. The CLINT's `mtime` and the idle skip both go through the two functions here, so
//! the replay work can replace the mapping (e.g. with logged time-sync adjustments) in one place.

/// Frequency of `mtime` (the device tree's `timebase-frequency`), in Hz.
pub const TIMEBASE_HZ: u64 = 10_000_000;

/// Machine-wide steps per `mtime` tick: a nominal 100 MIPS against the 10 MHz timebase.
pub const ICOUNT_PER_TICK: u64 = 10;

/// The raw `mtime` value (before any guest write to `mtime`) at machine-wide `icount`.
#[inline]
pub fn mtime_at(icount: u64) -> u64 {
    icount / ICOUNT_PER_TICK
}

/// The first machine-wide icount at which [`mtime_at`] reaches `mtime` (saturating).
#[inline]
pub fn icount_at(mtime: u64) -> u64 {
    mtime.saturating_mul(ICOUNT_PER_TICK)
}

/// Machine-wide steps that correspond to `d` of guest time (saturating).
pub fn icount_for(d: std::time::Duration) -> u64 {
    let ticks = d.as_nanos().saturating_mul(u128::from(TIMEBASE_HZ)) / 1_000_000_000;
    u64::try_from(ticks.saturating_mul(u128::from(ICOUNT_PER_TICK))).unwrap_or(u64::MAX)
}

/// Guest time that `icount` machine-wide steps take.
pub fn duration_of(icount: u64) -> std::time::Duration {
    let nanos = u128::from(icount) * 1_000_000_000 / u128::from(TIMEBASE_HZ * ICOUNT_PER_TICK);
    std::time::Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn mapping_round_trips() {
        assert_eq!(mtime_at(icount_at(12345)), 12345);
        assert_eq!(mtime_at(icount_at(12345) - 1), 12344);
        assert_eq!(icount_for(Duration::from_secs(1)), 100_000_000);
        assert_eq!(duration_of(100_000_000), Duration::from_secs(1));
        assert_eq!(icount_at(u64::MAX), u64::MAX);
        assert_eq!(icount_for(Duration::MAX), u64::MAX);
    }
}
