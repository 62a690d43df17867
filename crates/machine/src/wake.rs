//! [`Waker`]: how a device's host end tells the host loop that it has something for the
//! machine — a disk's worker has a read or flush ready, a frame arrived for the network card.
//!
//! The board only passes it on: the host loop gives the machine one
//! ([`crate::Machine::set_waker`]), and the machine hands it to every disk and network backend
//! it has or gets ([`crate::virtio::BlockBackend::set_wake`],
//! [`crate::virtio::NetBackend::set_wake`]; wrappers pass it to what they wrap). What waking
//! means (an eventfd the loop polls) is the host loop's business (`hostrun`), so this crate
//! knows no threads, descriptors or clocks. Each machine has its own; nothing is shared
//! between machines.

use std::sync::Arc;

/// What a [`Waker`] calls: the host loop's side of it.
pub trait Notify: Send + Sync + std::fmt::Debug {
    /// Something is ready for the machine: wake the loop if it waits.
    fn notify(&self);
}

/// A machine's wake-up as its backends see it; clones share it. The default wakes nobody (a
/// machine no host loop runs, e.g. a replay).
#[derive(Clone, Default)]
pub struct Waker(Option<Arc<dyn Notify>>);

impl std::fmt::Debug for Waker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(n) => write!(f, "Waker({n:?})"),
            None => f.write_str("Waker(nobody)"),
        }
    }
}

impl Waker {
    /// A waker that calls `n`.
    pub fn new(n: Arc<dyn Notify>) -> Waker {
        Waker(Some(n))
    }

    /// Wakes the host loop.
    pub fn wake(&self) {
        if let Some(n) = &self.0 {
            n.notify();
        }
    }

    /// Whether both wake the same loop.
    pub fn same(&self, other: &Waker) -> bool {
        match (&self.0, &other.0) {
            (Some(a), Some(b)) => std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b)),
            (None, None) => true,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[derive(Debug, Default)]
    struct Count(AtomicU32);
    impl Notify for Count {
        fn notify(&self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_waker_calls_its_own_loop_only() {
        let (a, b) = (Arc::new(Count::default()), Arc::new(Count::default()));
        let wa = Waker::new(Arc::clone(&a) as Arc<dyn Notify>);
        let wb = Waker::new(Arc::clone(&b) as Arc<dyn Notify>);
        wa.clone().wake();
        assert_eq!(
            (a.0.load(Ordering::SeqCst), b.0.load(Ordering::SeqCst)),
            (1, 0)
        );
        assert!(wa.same(&wa.clone()) && !wa.same(&wb) && !wa.same(&Waker::default()));
        Waker::default().wake(); // nobody: nothing happens
    }
}
