//! [`Wake`]: the one thing a host loop waits on while its guest idles.
//!
//! One per runner (so one per machine; two machines in one process never wake each other),
//! an eventfd. Everything that can end an idle period signals it: a disk's worker thread
//! when it has a read or flush ready, a network backend's reader when a frame arrives (both
//! through the [`machine::wake::Waker`] the machine hands its backends), and a role's own
//! sources (the FT console endpoint's client threads). A role whose input is a descriptor
//! (standard input) has it polled together with the eventfd, in the same `poll`. No thread
//! watches anything on the loop's behalf, and no state is process-global.
//!
//! The eventfd is a counter: a signal that comes between the loop's last look and its wait
//! leaves it readable, so no wake-up is lost.

use machine::wake::{Notify, Waker};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

/// The eventfd behind a [`Wake`].
#[derive(Debug)]
struct EventFd(OwnedFd);

impl Notify for EventFd {
    fn notify(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live buffer to our own eventfd; a full counter only
        // makes the write fail, which is harmless (the descriptor is readable already).
        unsafe { libc::write(self.0.as_raw_fd(), one.as_ptr().cast(), one.len()) };
    }
}

/// A host loop's wake-up; clones share it.
#[derive(Debug, Clone)]
pub struct Wake {
    fd: Arc<EventFd>,
    /// The same eventfd as the backends see it.
    waker: Waker,
}

impl Wake {
    /// A new wake-up (an eventfd).
    pub fn new() -> io::Result<Wake> {
        // SAFETY: eventfd takes no pointers; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a descriptor just created and owned by nothing else.
        let fd = Arc::new(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }));
        let waker = Waker::new(Arc::clone(&fd) as Arc<dyn Notify>);
        Ok(Wake { fd, waker })
    }

    /// What the machine hands its backends ([`machine::Machine::set_waker`]) and a role its
    /// own sources: calling it wakes this loop.
    pub fn waker(&self) -> &Waker {
        &self.waker
    }

    /// Wakes the loop.
    pub fn notify(&self) {
        self.fd.notify();
    }

    /// Forgets the signals so far (what they announced is about to be looked at).
    pub fn clear(&self) {
        let mut buf = [0u8; 8];
        // SAFETY: `buf` is writable for its 8 bytes; on a non-blocking eventfd the read either
        // takes the counter or fails with EAGAIN, which is ignored.
        unsafe { libc::read(self.fd.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    }

    /// Waits up to `timeout` for a signal, or for `also` (a role's descriptor) to become
    /// readable, or for a signal handler to run. Returns whether this wake-up was signalled
    /// (and clears it).
    pub fn wait(&self, timeout: Duration, also: Option<RawFd>) -> bool {
        let pollfd = |fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let mut fds = [pollfd(self.fd.0.as_raw_fd()), pollfd(also.unwrap_or(-1))];
        let n = if also.is_some() { 2 } else { 1 };
        // Rounded up: a wait of 0.2 ms is not a busy look.
        let ms = timeout
            .as_micros()
            .div_ceil(1000)
            .min(libc::c_int::MAX as u128) as libc::c_int;
        // SAFETY: `fds` holds `n` live pollfds for the duration of the call.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), n as libc::nfds_t, ms) };
        let woken = r > 0 && fds[0].revents & libc::POLLIN != 0;
        if woken {
            self.clear();
        }
        woken
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_wait_ends_at_a_signal_of_its_own_wake_only_and_none_is_lost() {
        let (a, b) = (Wake::new().unwrap(), Wake::new().unwrap());
        assert!(!a.wait(Duration::from_millis(10), None), "nothing yet");
        b.waker().wake();
        assert!(
            !a.wait(Duration::from_millis(10), None),
            "another machine's wake-up"
        );
        // Signalled before the wait: not lost.
        a.waker().wake();
        assert!(a.wait(Duration::ZERO, None));
        assert!(!a.wait(Duration::ZERO, None), "cleared by the wait");
        let w = a.waker().clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            w.wake();
        });
        let t0 = Instant::now();
        assert!(a.wait(Duration::from_secs(10), None));
        assert!(t0.elapsed() < Duration::from_secs(5));
        t.join().unwrap();
    }

    #[test]
    fn a_role_descriptor_ends_the_wait_without_counting_as_a_signal() {
        let a = Wake::new().unwrap();
        let other = Wake::new().unwrap();
        other.notify();
        let t0 = Instant::now();
        assert!(!a.wait(Duration::from_secs(10), Some(other.fd.0.as_raw_fd())));
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the descriptor ended it"
        );
    }
}
