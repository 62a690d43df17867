//! SIGUSR1 as a request for a snapshot (`ftvm run --snapshot-out FILE` without
//! `--snapshot-at`): the handler sets a flag; the run loop takes it at the next slice boundary.

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_usr1(_: libc::c_int) {
    REQUESTED.store(true, Ordering::SeqCst);
}

/// Catches SIGUSR1 from now on (without SA_RESTART, so that an idle wait returns).
pub fn catch() {
    // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value; the handler only
    // stores to an atomic, which is async-signal-safe.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_usr1 as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut());
    }
}

/// Whether a snapshot was asked for and not yet taken.
pub fn pending() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// Takes the request, if there is one.
pub fn take() -> bool {
    REQUESTED.swap(false, Ordering::SeqCst)
}
