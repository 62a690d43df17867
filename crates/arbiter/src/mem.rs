//! The in-memory arbiter: the same test-and-set in one process, for tests of the pair's
//! go-live logic (`crates/ft`'s unit tests) that must not depend on a file system or etcd.
//!
//! It keeps every rule of [`crate::Arbiter`] — one winner per (vm, generation), idempotent for
//! the winner, names validated as the others do — and can be made unreachable
//! ([`MemArbiter::set_reachable`]) to test that nobody goes live without an answer. It can also
//! hold claims back ([`MemArbiter::hold`]) so that a test decides who asks first without sleeps.

use crate::name::{validate_claimant, validate_vm_name};
use crate::{Arbiter, ArbiterError, Claim};
use std::collections::BTreeMap;
use std::sync::{Condvar, Mutex, MutexGuard};

#[derive(Debug, Default)]
struct State {
    /// (vm, generation) → winner.
    claims: BTreeMap<(String, u64), String>,
    unreachable: bool,
    /// Claimants whose test-and-set waits until released.
    held: Vec<String>,
    /// Every test-and-set asked, in order: (who, generation), answered or not.
    asked: Vec<(String, u64)>,
}

/// A test-and-set kept in memory (one process).
#[derive(Debug, Default)]
pub struct MemArbiter {
    state: Mutex<State>,
    cv: Condvar,
}

impl MemArbiter {
    /// An empty arbiter that answers.
    pub fn new() -> MemArbiter {
        MemArbiter::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether it answers; an unreachable arbiter fails every call with
    /// [`ArbiterError::Unavailable`] (the outcome unknown, as a lost network would leave it).
    pub fn set_reachable(&self, reachable: bool) {
        self.lock().unreachable = !reachable;
        self.cv.notify_all();
    }

    /// `who`'s test-and-set waits (having been asked) until [`MemArbiter::release`].
    pub fn hold(&self, who: &str) {
        self.lock().held.push(who.to_owned());
    }

    /// Lets `who`'s test-and-set go on.
    pub fn release(&self, who: &str) {
        self.lock().held.retain(|h| h != who);
        self.cv.notify_all();
    }

    /// Every test-and-set asked so far, in order: (who, generation).
    pub fn asked(&self) -> Vec<(String, u64)> {
        self.lock().asked.clone()
    }

    /// Waits until `who` has asked for a generation (`false` after `timeout`).
    pub fn wait_asked(&self, who: &str, timeout: std::time::Duration) -> bool {
        let s = self.lock();
        let (s, _) = self
            .cv
            .wait_timeout_while(s, timeout, |s| !s.asked.iter().any(|(w, _)| w == who))
            .unwrap_or_else(|e| e.into_inner());
        s.asked.iter().any(|(w, _)| w == who)
    }
}

impl Arbiter for MemArbiter {
    fn test_and_set(&self, vm: &str, generation: u64, who: &str) -> Result<Claim, ArbiterError> {
        validate_vm_name(vm)?;
        validate_claimant(who)?;
        let mut s = self.lock();
        s.asked.push((who.to_owned(), generation));
        self.cv.notify_all();
        while s.held.iter().any(|h| h == who) {
            s = self.cv.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        if s.unreachable {
            return Err(ArbiterError::Unavailable {
                arbiter: self.describe(),
            });
        }
        let winner = s
            .claims
            .entry((vm.to_owned(), generation))
            .or_insert_with(|| who.to_owned());
        if winner == who {
            Ok(Claim::Won)
        } else {
            Ok(Claim::Lost {
                winner: winner.clone(),
            })
        }
    }

    fn current(&self, vm: &str) -> Result<Option<(u64, String)>, ArbiterError> {
        validate_vm_name(vm)?;
        let s = self.lock();
        if s.unreachable {
            return Err(ArbiterError::Unavailable {
                arbiter: self.describe(),
            });
        }
        Ok(s.claims
            .iter()
            .filter(|((v, _), _)| v == vm)
            .max_by_key(|((_, g), _)| *g)
            .map(|((_, g), w)| (*g, w.clone())))
    }

    fn describe(&self) -> String {
        "mem:".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn one_winner_per_generation_and_the_winner_may_ask_again() {
        let a = MemArbiter::new();
        assert_eq!(a.current("vm0").unwrap(), None);
        assert_eq!(a.test_and_set("vm0", 1, "backup").unwrap(), Claim::Won);
        assert_eq!(a.test_and_set("vm0", 1, "backup").unwrap(), Claim::Won);
        assert_eq!(
            a.test_and_set("vm0", 1, "primary").unwrap(),
            Claim::Lost {
                winner: "backup".into()
            }
        );
        assert_eq!(a.test_and_set("vm0", 2, "primary").unwrap(), Claim::Won);
        assert_eq!(a.test_and_set("vm1", 1, "primary").unwrap(), Claim::Won);
        assert_eq!(a.current("vm0").unwrap(), Some((2, "primary".into())));
        assert!(a.test_and_set("../x", 1, "p").is_err());
        assert!(a.test_and_set("vm0", 3, "p\n").is_err());
    }

    #[test]
    fn unreachable_answers_nothing_and_decides_nothing() {
        let a = MemArbiter::new();
        a.set_reachable(false);
        let e = a.test_and_set("vm0", 1, "backup").unwrap_err();
        assert!(matches!(e, ArbiterError::Unavailable { .. }), "{e}");
        assert!(e.to_string().contains("do not go live"), "{e}");
        a.set_reachable(true);
        assert_eq!(a.current("vm0").unwrap(), None, "nothing was claimed");
        assert_eq!(a.test_and_set("vm0", 1, "primary").unwrap(), Claim::Won);
    }

    #[test]
    fn racing_claimants_get_exactly_one_win() {
        for _ in 0..50 {
            let a = Arc::new(MemArbiter::new());
            let barrier = Arc::new(std::sync::Barrier::new(4));
            let threads: Vec<_> = (0..4)
                .map(|i| {
                    let (a, b) = (Arc::clone(&a), Arc::clone(&barrier));
                    std::thread::spawn(move || {
                        b.wait();
                        a.test_and_set("vm0", 7, &format!("host{i}")).unwrap()
                    })
                })
                .collect();
            let wins = threads
                .into_iter()
                .map(|t| t.join().unwrap())
                .filter(|c| *c == Claim::Won)
                .count();
            assert_eq!(wins, 1);
        }
    }

    #[test]
    fn a_held_claim_waits_for_its_release() {
        let a = Arc::new(MemArbiter::new());
        a.hold("primary");
        let t = {
            let a = Arc::clone(&a);
            std::thread::spawn(move || a.test_and_set("vm0", 1, "primary").unwrap())
        };
        assert!(a.wait_asked("primary", Duration::from_secs(5)));
        assert_eq!(a.test_and_set("vm0", 1, "backup").unwrap(), Claim::Won);
        a.release("primary");
        assert_eq!(
            t.join().unwrap(),
            Claim::Lost {
                winner: "backup".into()
            }
        );
    }
}
