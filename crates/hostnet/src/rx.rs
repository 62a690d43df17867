//! What both backends share: the bounded queue of received frames a reader thread fills and
//! the device drains, the machine's wake-up that tells a waiting host loop a frame has
//! arrived, and the counters.

use machine::wake::Waker;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// What a backend has seen since it was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostNetStats {
    /// Frames queued for the guest.
    pub rx_frames: u64,
    /// Frames dropped for a length above [`crate::MAX_FRAME`].
    pub rx_oversized: u64,
    /// Frames dropped for a length below an Ethernet header (14 bytes).
    pub rx_runts: u64,
    /// Frames or length prefixes cut short by the end of the stream.
    pub rx_truncated: u64,
    /// Frames dropped because the guest had [`crate::RX_QUEUE_FRAMES`] waiting already (a tap;
    /// a stream is read no further until there is room).
    pub rx_queue_full: u64,
    /// Frames sent.
    pub tx_frames: u64,
    /// Frames that could not be sent (the connection failed or was closed).
    pub tx_dropped: u64,
    /// Frames dropped because [`crate::TX_QUEUE_FRAMES`] were still waiting to be written (a
    /// stream whose peer does not read).
    pub tx_queue_full: u64,
    /// Times a stream backend connected again after its connection ended.
    pub reconnects: u64,
    /// Why the connection ended, once it has.
    pub closed: Option<String>,
}

/// The counters, updated by the reader thread and the transmit path.
#[derive(Default)]
pub(crate) struct Counters {
    pub rx_frames: AtomicU64,
    pub rx_oversized: AtomicU64,
    pub rx_runts: AtomicU64,
    pub rx_truncated: AtomicU64,
    pub rx_queue_full: AtomicU64,
    pub tx_frames: AtomicU64,
    pub tx_dropped: AtomicU64,
    pub tx_queue_full: AtomicU64,
    pub reconnects: AtomicU64,
}

/// Shared between a backend, its reader thread and its monitors.
pub(crate) struct Shared {
    frames: Mutex<VecDeque<Vec<u8>>>,
    /// Signalled when the device takes a frame (room in a full queue).
    room: Condvar,
    /// The machine's wake-up ([`machine::virtio::NetBackend::set_wake`]).
    wake: Mutex<Waker>,
    pub counters: Counters,
    closed: Mutex<Option<String>>,
}

pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Shared {
    /// An empty queue that wakes nobody yet.
    pub fn new() -> Arc<Shared> {
        Arc::new(Shared {
            frames: Mutex::new(VecDeque::new()),
            room: Condvar::new(),
            wake: Mutex::new(Waker::default()),
            counters: Counters::default(),
            closed: Mutex::new(None),
        })
    }

    /// Queues a frame from the outside (dropping it if it is too short or the queue is full)
    /// and wakes the host loop.
    pub fn push(&self, frame: Vec<u8>) {
        if frame.len() < 14 {
            bump(&self.counters.rx_runts);
            return;
        }
        let Ok(mut q) = self.frames.lock() else {
            return;
        };
        if q.len() >= crate::RX_QUEUE_FRAMES {
            bump(&self.counters.rx_queue_full);
            return;
        }
        q.push_back(frame);
        drop(q);
        bump(&self.counters.rx_frames);
        self.signal();
    }

    /// Queues a frame from a stream, waiting while the queue is full instead of dropping it:
    /// the stream then stops being read, and the sender's own flow control holds the data
    /// back (a dropped frame costs a TCP sender a retransmission timeout, seconds of nothing
    /// at the guest's pace). Returns false, the frame dropped, once `stop` is set.
    pub fn push_waiting(&self, frame: Vec<u8>, stop: &std::sync::atomic::AtomicBool) -> bool {
        if frame.len() < 14 {
            bump(&self.counters.rx_runts);
            return true;
        }
        let Ok(mut q) = self.frames.lock() else {
            return false;
        };
        while q.len() >= crate::RX_QUEUE_FRAMES {
            if stop.load(Ordering::SeqCst) {
                return false;
            }
            q = match self.room.wait_timeout(q, Duration::from_millis(50)) {
                Ok((q, _)) => q,
                Err(_) => return false,
            };
        }
        q.push_back(frame);
        drop(q);
        bump(&self.counters.rx_frames);
        self.signal();
        true
    }

    /// The next frame, if any.
    pub fn pop(&self) -> Option<Vec<u8>> {
        let f = self.frames.lock().ok()?.pop_front();
        if f.is_some() {
            self.room.notify_one();
        }
        f
    }

    fn signal(&self) {
        if let Ok(w) = self.wake.lock() {
            w.wake();
        }
    }

    /// The machine's wake-up, from now on. Frames that came before it (or the end of the
    /// connection) wake it at once: the loop may be about to wait for them.
    pub fn set_wake(&self, waker: &Waker) {
        if let Ok(mut w) = self.wake.lock() {
            *w = waker.clone();
        }
        let waiting = self.frames.lock().map(|q| !q.is_empty()).unwrap_or(false);
        if waiting || self.is_closed() {
            self.signal();
        }
    }

    /// Notes why the connection ended (the first reason is kept) and wakes the host loop.
    pub fn close(&self, why: String) {
        if let Ok(mut c) = self.closed.lock() {
            c.get_or_insert(why);
        }
        self.signal();
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.closed.lock().map(|c| c.is_some()).unwrap_or(true)
    }

    /// The counters now.
    pub fn stats(&self) -> HostNetStats {
        let c = &self.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        HostNetStats {
            rx_frames: l(&c.rx_frames),
            rx_oversized: l(&c.rx_oversized),
            rx_runts: l(&c.rx_runts),
            rx_truncated: l(&c.rx_truncated),
            rx_queue_full: l(&c.rx_queue_full),
            tx_frames: l(&c.tx_frames),
            tx_dropped: l(&c.tx_dropped),
            tx_queue_full: l(&c.tx_queue_full),
            reconnects: l(&c.reconnects),
            closed: self.closed.lock().ok().and_then(|c| c.clone()),
        }
    }
}

/// A handle on a backend's counters that outlives handing the backend to the machine.
#[derive(Clone)]
pub struct Monitor(pub(crate) Arc<Shared>);

impl Monitor {
    /// The counters now, and why the connection ended if it has.
    pub fn stats(&self) -> HostNetStats {
        self.0.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts wake-ups.
    #[derive(Debug, Default)]
    struct Count(AtomicU64);

    impl machine::wake::Notify for Count {
        fn notify(&self) {
            bump(&self.0);
        }
    }

    #[test]
    fn queue_bounds_runts_and_wakeups() {
        let s = Shared::new();
        let count = Arc::new(Count::default());
        let woken = || count.0.load(Ordering::Relaxed);
        s.set_wake(&Waker::new(
            Arc::clone(&count) as Arc<dyn machine::wake::Notify>
        ));
        assert_eq!(woken(), 0, "nothing waiting yet");
        s.push(vec![0; 10]);
        assert_eq!(woken(), 0, "a runt wakes nobody");
        s.push(vec![1; 60]);
        assert_eq!(woken(), 1);
        // A new wake-up (the backend moved to another machine) hears of what waits at once.
        let later = Arc::new(Count::default());
        s.set_wake(&Waker::new(
            Arc::clone(&later) as Arc<dyn machine::wake::Notify>
        ));
        assert_eq!(later.0.load(Ordering::Relaxed), 1);
        for _ in 0..crate::RX_QUEUE_FRAMES + 5 {
            s.push(vec![2; 60]);
        }
        let st = s.stats();
        assert_eq!(
            (st.rx_frames, st.rx_runts, st.rx_queue_full),
            (crate::RX_QUEUE_FRAMES as u64, 1, 6)
        );
        assert_eq!(s.pop(), Some(vec![1; 60]));
        assert!(!s.is_closed());
        let before = later.0.load(Ordering::Relaxed);
        s.close("gone".into());
        assert_eq!(
            later.0.load(Ordering::Relaxed),
            before + 1,
            "the end wakes too"
        );
        s.close("again".into());
        assert_eq!(s.stats().closed.as_deref(), Some("gone"));
    }

    #[test]
    fn a_stream_waits_for_room_instead_of_dropping_and_stops_when_told() {
        use std::sync::atomic::AtomicBool;
        let s = Shared::new();
        let stop = Arc::new(AtomicBool::new(false));
        for k in 0..crate::RX_QUEUE_FRAMES {
            assert!(s.push_waiting(vec![k as u8; 60], &stop));
        }
        // The next push waits until the device takes a frame.
        let (s2, stop2) = (Arc::clone(&s), Arc::clone(&stop));
        let t = std::thread::spawn(move || s2.push_waiting(vec![0xee; 60], &stop2));
        std::thread::sleep(Duration::from_millis(100));
        assert!(!t.is_finished(), "a full queue holds the reader back");
        assert_eq!(s.pop(), Some(vec![0; 60]));
        assert!(t.join().unwrap(), "room lets the frame in");
        let st = s.stats();
        assert_eq!(
            (st.rx_frames, st.rx_queue_full),
            (crate::RX_QUEUE_FRAMES as u64 + 1, 0),
            "nothing dropped"
        );
        // Full again: a stop ends the wait, the frame dropped.
        let (s3, stop3) = (Arc::clone(&s), Arc::clone(&stop));
        let t = std::thread::spawn(move || s3.push_waiting(vec![0xdd; 60], &stop3));
        std::thread::sleep(Duration::from_millis(100));
        stop.store(true, Ordering::SeqCst);
        assert!(!t.join().unwrap());
    }
}
