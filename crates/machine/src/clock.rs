//! Guest time as a pure function of the machine-wide instruction count.
//!
//! This is the determinism contract for time (DESIGN §2): nothing inside the VM ever reads a
//! host clock. The raw clock that the CLINT's `mtime` is built on is `icount / ICOUNT_PER_TICK`
//! plus the machine's **time-sync offset** ([`raw_time`]): a count of ticks that only grows, moved
//! by `Machine::adjust_time` when the host decides guest time has fallen behind wall-clock time
//! (the recorder logs each adjustment as a time-sync entry, the replayer applies it at the same
//! icount). Timer deadlines go back from raw clock to icount through [`icount_at_raw`].

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

/// The raw clock at machine-wide `icount` with time-sync offset `offset` (saturating).
#[inline]
pub fn raw_time(icount: u64, offset: u64) -> u64 {
    mtime_at(icount).saturating_add(offset)
}

/// The first machine-wide icount at which [`raw_time`] with `offset` reaches `raw`: 0 when the
/// offset alone already gets there (saturating).
#[inline]
pub fn icount_at_raw(raw: u64, offset: u64) -> u64 {
    icount_at(raw.saturating_sub(offset))
}

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
        assert_eq!(raw_time(100, 7), 17);
        assert_eq!(icount_at_raw(17, 7), 100);
        assert_eq!(icount_at_raw(5, 7), 0);
        assert_eq!(ticks_for(Duration::from_millis(50)), 500_000);
        assert_eq!(duration_of_ticks(500_000), Duration::from_millis(50));
    }
}
