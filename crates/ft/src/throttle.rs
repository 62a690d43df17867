//! Slowing down a primary whose backup lags behind (DESIGN.md §3, the paper's 1 s rule): every
//! adjustment period the primary measures how far the backup's replay is behind it; above the
//! allowed lag it sleeps 3 % more of each slice, below half of it 3 % less, never more than
//! 90 %. A few percent at a time, so a briefly slow backup costs little.
//!
//! The lag is host time ([`LagClock`]): how long ago the primary was where the backup's replay
//! is now. Not guest time: the guest clock keeps pace with the primary's own execution (the
//! rate-keeping clock), so a throttled primary's instructions each stand for more guest time,
//! the same instruction lag would read as ever more guest time, and the primary would slow
//! itself down further — a feedback loop that held the guest at a tenth of its speed for
//! seconds (its TCP flows stalled, seen after failovers).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

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

/// When the primary was where: an icount and the host time it was reached, at every slice
/// it sends; the backup's lag is the host time since the primary passed the icount the backup
/// has replayed to.
#[derive(Debug, Default)]
pub struct LagClock {
    marks: VecDeque<(u64, Instant)>,
}

/// The most marks kept (at a slice each, minutes of a stuck backup); beyond it the oldest go,
/// and the lag then reads a little short.
const MAX_MARKS: usize = 1 << 16;

impl LagClock {
    /// The primary reached `icount` at `at`.
    pub fn mark(&mut self, icount: u64, at: Instant) {
        if self.marks.back().is_some_and(|&(i, _)| i >= icount) {
            return;
        }
        if self.marks.len() >= MAX_MARKS {
            self.marks.pop_front();
        }
        self.marks.push_back((icount, at));
    }

    /// How long ago the primary was past `replayed`, the backup's replay position: zero once
    /// the backup has replayed everything marked.
    pub fn lag(&mut self, replayed: u64, now: Instant) -> Duration {
        while self.marks.front().is_some_and(|&(i, _)| i <= replayed) {
            self.marks.pop_front();
        }
        self.marks
            .front()
            .map_or(Duration::ZERO, |&(_, at)| now.saturating_duration_since(at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lag_is_the_host_time_since_the_primary_was_where_the_backup_is() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut c = LagClock::default();
        assert_eq!(c.lag(0, ms(5)), Duration::ZERO, "nothing sent yet");
        c.mark(1_000, ms(0));
        c.mark(2_000, ms(100));
        c.mark(2_000, ms(150)); // no progress: the first time counts
        c.mark(3_000, ms(200));
        // Not yet at the first slice's end: behind since the primary got there.
        assert_eq!(c.lag(500, ms(1000)), Duration::from_millis(1000));
        // Past it: behind since the next one.
        assert_eq!(c.lag(1_000, ms(1000)), Duration::from_millis(900));
        assert_eq!(c.lag(2_500, ms(1000)), Duration::from_millis(800));
        // Caught up.
        assert_eq!(c.lag(3_000, ms(1000)), Duration::ZERO);
        // However slowly the primary runs meanwhile, a backup keeping up reads no lag.
        for k in 0..100u64 {
            c.mark(3_000 + k * 10, ms(1000 + k * 50));
            assert!(c.lag(3_000 + k * 10, ms(1000 + k * 50)) < Duration::from_millis(1));
        }
    }

    #[test]
    fn marks_are_bounded() {
        let t0 = Instant::now();
        let mut c = LagClock::default();
        for i in 0..(MAX_MARKS as u64 + 10) {
            c.mark(i + 1, t0);
        }
        assert_eq!(c.marks.len(), MAX_MARKS);
        assert_eq!(c.lag(u64::MAX, t0), Duration::ZERO);
        assert!(c.marks.is_empty());
    }

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
