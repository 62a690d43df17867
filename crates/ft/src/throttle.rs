//! Slowing down a primary whose backup lags behind (DESIGN.md §3, the paper's 1 s rule): every
//! adjustment period the primary compares its icount with the backup's replayed icount; above
//! the allowed lag (guest time) it sleeps 3 % more of each slice, below half of it 3 % less,
//! never more than 90 %. A few percent at a time, so a briefly slow backup costs little.

use std::time::Duration;

/// Step of one adjustment.
pub const STEP: f64 = 0.03;
/// The most the primary is ever slowed.
pub const MAX: f64 = 0.9;

/// The primary's slowdown.
#[derive(Debug, Clone, Copy, Default)]
pub struct Throttle {
    /// Fraction of wall time the primary sleeps (0 ≤ s ≤ [`MAX`]).
    pub slowdown: f64,
}

impl Throttle {
    /// One adjustment for a backup `lag` behind, `max_lag` allowed.
    pub fn adjust(&mut self, lag: Duration, max_lag: Duration) {
        if lag > max_lag {
            self.slowdown = (self.slowdown + STEP).min(MAX);
        } else if lag < max_lag / 2 {
            self.slowdown = (self.slowdown - STEP).max(0.0);
        }
    }

    /// How long to sleep after a slice that took `busy`, so that sleeping is `slowdown` of the
    /// time.
    pub fn pause_after(&self, busy: Duration) -> Duration {
        if self.slowdown <= 0.0 {
            return Duration::ZERO;
        }
        busy.mul_f64(self.slowdown / (1.0 - self.slowdown))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_lagging_backup_slows_the_primary_a_little_at_a_time() {
        let mut t = Throttle::default();
        assert_eq!(t.pause_after(Duration::from_millis(20)), Duration::ZERO);
        t.adjust(S * 2, S);
        assert!((t.slowdown - STEP).abs() < 1e-9);
        for _ in 0..100 {
            t.adjust(S * 2, S);
        }
        assert!((t.slowdown - MAX).abs() < 1e-9, "capped");
        // 90 % asleep: 9 ms of sleep per 1 ms of work.
        let p = t.pause_after(Duration::from_millis(1));
        assert!((p.as_secs_f64() - 0.009).abs() < 1e-6, "{p:?}");
        // Between half and the whole allowance: no change.
        t.adjust(S * 3 / 4, S);
        assert!((t.slowdown - MAX).abs() < 1e-9);
        // Caught up: back to full speed step by step.
        for _ in 0..100 {
            t.adjust(Duration::ZERO, S);
        }
        assert_eq!(t.slowdown, 0.0);
    }
}
