//! Asking the arbiter for the next generation, patiently.
//!
//! An arbiter error means the outcome is unknown (the storage did not answer), never "lost",
//! and a test-and-set is idempotent: asking again is always safe. A side used to stop at the
//! first error, so an arbiter outage that coincided with a failure (the soak's
//! `arbiter-outage-kill`: the primary killed while the arbiter's storage was unreachable for a
//! second) lost the VM for good, though the survivor only had to wait for the storage to come
//! back. Now the side that found its peer gone keeps asking, with a growing pause (50 ms up to
//! 1 s), for up to the pair's `arbiter_patience`; nothing runs or is emitted meanwhile (the
//! primary's output stays held, the backup has not gone live), so waiting can never make two
//! primaries. Only after the patience is spent does the side stop, as before.

use crate::PairConfig;
use arbiter::{ArbiterError, Claim};
use std::time::{Duration, Instant};

/// The default of [`PairConfig::arbiter_patience`].
pub const DEFAULT_PATIENCE: Duration = Duration::from_secs(30);

/// Claims `generation` of the pair's VM for this side, retrying an arbiter that cannot answer
/// for up to `cfg.arbiter_patience`; `role` names the side in the log.
pub fn claim(cfg: &PairConfig, generation: u64, role: &str) -> Result<Claim, ArbiterError> {
    let t0 = Instant::now();
    let mut pause = Duration::from_millis(50);
    let mut tries = 0u32;
    loop {
        tries += 1;
        match cfg.arbiter.test_and_set(&cfg.vm, generation, &cfg.me) {
            Err(e) if t0.elapsed() + pause <= cfg.arbiter_patience => {
                if tries == 1 {
                    tracing::warn!(
                        "ftvm {role}: the arbiter did not answer ({e}); asking again for up to {:?}, nothing runs meanwhile",
                        cfg.arbiter_patience
                    );
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            Ok(c) if tries > 1 => {
                tracing::info!(
                    "ftvm {role}: the arbiter answered after {tries} tries in {:?}",
                    t0.elapsed()
                );
                return Ok(c);
            }
            r => return r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arbiter::Arbiter;
    use std::sync::Arc;

    fn config(a: Arc<arbiter::MemArbiter>, patience: Duration) -> PairConfig {
        PairConfig {
            vm: "vm0".into(),
            me: "backup@test".into(),
            key: crate::Key::random(),
            console: crate::console::Keys::operator(crate::Key::random()),
            arbiter: a,
            heartbeat: crate::HeartbeatConfig::default(),
            max_lag: Duration::from_secs(1),
            buffer: 1 << 20,
            non_shared: false,
            metrics: None,
            clone_bandwidth: 0,
            arbiter_patience: patience,
        }
    }

    #[test]
    fn an_arbiter_back_within_the_patience_is_answered() {
        let a = Arc::new(arbiter::MemArbiter::new());
        a.set_reachable(false);
        let cfg = config(Arc::clone(&a), Duration::from_secs(10));
        let back = {
            let a = Arc::clone(&a);
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(400));
                a.set_reachable(true);
            })
        };
        let t0 = Instant::now();
        assert_eq!(claim(&cfg, 1, "backup").unwrap(), Claim::Won);
        assert!(t0.elapsed() >= Duration::from_millis(400));
        back.join().unwrap();
        // Asked several times while it was out.
        assert!(a.asked().len() >= 3, "{:?}", a.asked());
    }

    #[test]
    fn an_arbiter_out_longer_than_the_patience_is_an_error_and_a_loss_is_final() {
        let a = Arc::new(arbiter::MemArbiter::new());
        a.set_reachable(false);
        let cfg = config(Arc::clone(&a), Duration::from_millis(300));
        let t0 = Instant::now();
        assert!(claim(&cfg, 1, "backup").is_err());
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        // A generation someone else holds is lost at once, not retried.
        a.set_reachable(true);
        assert_eq!(a.test_and_set("vm0", 2, "other").unwrap(), Claim::Won);
        let asked = a.asked().len();
        assert!(matches!(claim(&cfg, 2, "backup"), Ok(Claim::Lost { .. })));
        assert_eq!(a.asked().len(), asked + 1);
    }
}
