//! [`Wake`]: how a machine's host loop, waiting while its guest idles with disk requests in
//! flight, learns that a disk's host I/O has finished something. One per machine, given to its
//! disks' host ends when the machine gets them ([`crate::virtio::BlockBackend::set_wake`]): a
//! counter bumped by each disk worker when it finishes a job, and a condition variable to wait
//! on. No state is shared between machines (two machines in one process, as in the tests,
//! never wake each other).

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The wake-up of one machine's host loop; clones share it.
#[derive(Clone, Default)]
pub struct Wake(Arc<(Mutex<u64>, Condvar)>);

impl std::fmt::Debug for Wake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Wake({})", self.generation())
    }
}

impl Wake {
    fn lock(&self) -> MutexGuard<'_, u64> {
        // A counter is consistent whatever panicked while holding it.
        self.0 .0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many times host I/O has finished something so far, to wait past with
    /// [`Wake::wait_past`].
    pub fn generation(&self) -> u64 {
        *self.lock()
    }

    /// Host I/O finished something: wakes whoever waits.
    pub fn notify(&self) {
        *self.lock() += 1;
        self.0 .1.notify_all();
    }

    /// Waits until host I/O finishes something after `seen` (a [`Wake::generation`]) or
    /// `timeout` passes; returns whether it did.
    pub fn wait_past(&self, seen: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut g = self.lock();
        while *g == seen {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            g = self
                .0
                 .1
                .wait_timeout(g, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_ends_at_a_notification_of_its_own_wake_only() {
        let (a, b) = (Wake::default(), Wake::default());
        let seen = a.generation();
        assert!(!a.wait_past(seen, Duration::from_millis(10)), "nothing yet");
        b.notify();
        assert!(
            !a.wait_past(seen, Duration::from_millis(10)),
            "another machine's wake-up"
        );
        let a2 = a.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            a2.notify();
        });
        assert!(a.wait_past(seen, Duration::from_secs(10)));
        t.join().unwrap();
        assert!(a.wait_past(seen, Duration::ZERO), "already past");
    }
}
