//! Asynchronous disk I/O: a worker thread per disk that reads ahead of the guest.
//!
//! The virtio-blk device keeps a request in flight from the moment the guest makes it
//! available until a completion point between two run slices (see [`machine::virtio::block`]). While it
//! is in flight the device asks its backend to *prepare* it ([`BlockBackend::prepare`]):
//! [`AsyncDisk`] hands a read (or a flush) to its worker thread and answers "not yet"; once
//! the worker has the bytes the answer is "ready", and the completion, which calls
//! [`BlockBackend::read_at`] through the whole stack of wrappers (the recorder's, the FT
//! output rule's...), gets them from memory without waiting on the host's disk. So a disk read
//! may take any time on the host, yet its data enters guest memory only at the completion
//! point the recorder picks and logs, never while the vCPU runs.
//!
//! Writes go through to the disk when the request completes (a `pwrite` into the host's page
//! cache, or an NBD round trip), and make any read prepared over the same bytes stale: that
//! read is then done again, synchronously, at its completion, so what the guest gets is always
//! what a synchronous read at that point would give. A flush is prepared by an `fsync` on the
//! worker, which counts only if no write came after it started.
//!
//! Why our own: the operations are positioned reads, writes and `fsync` on one file or NBD
//! connection, behind a trait the replay layer wraps; an async runtime or io_uring crate would
//! add a dependency and an executor for what one thread and a channel do.

use machine::virtio::block::{BlockBackend, Prepare};
use machine::wake::Waker;
use std::io;
use std::sync::{mpsc, Arc, Mutex, MutexGuard};

/// Bytes of prepared reads one disk holds at most; a request beyond it waits its turn.
pub const READ_AHEAD_BUDGET: u64 = 32 << 20;
/// A single read larger than this is not prepared: it is done synchronously at completion
/// (a guest's absurd request must not need an absurd buffer).
pub const MAX_PREPARED_READ: u64 = 8 << 20;

enum Job {
    Read { offset: u64, len: u64 },
    Flush { seq: u64 },
}

/// A read handed to the worker.
struct Ahead {
    offset: u64,
    len: u64,
    /// The worker's result, once it has one.
    data: Option<io::Result<Vec<u8>>>,
    /// A write overlapped it after it was started: not to be used.
    stale: bool,
}

impl Ahead {
    fn covers(&self, offset: u64, len: u64) -> bool {
        offset >= self.offset && offset.saturating_add(len) <= self.offset.saturating_add(self.len)
    }
    fn overlaps(&self, offset: u64, len: u64) -> bool {
        offset < self.offset.saturating_add(self.len) && self.offset < offset.saturating_add(len)
    }
}

#[derive(Default)]
struct Jobs {
    reads: Vec<Ahead>,
    /// The prepared flush: the write count it covers and, once done, its result.
    flush: Option<(u64, Option<io::Result<()>>)>,
    bytes: u64,
}

/// A disk whose reads and flushes are prepared on a worker thread: see the module docs.
pub struct AsyncDisk {
    len: u64,
    inner: Arc<Mutex<Box<dyn BlockBackend>>>,
    jobs: Arc<Mutex<Jobs>>,
    /// The worker's queue. Dropping it ends the worker after its current job (not waited for:
    /// an NBD read may take up to its timeout).
    tx: Option<mpsc::Sender<Job>>,
    /// Writes done so far: a flush prepared before the latest one does not cover it.
    writes: u64,
    /// Whom the worker wakes when it finishes a job: the machine's ([`BlockBackend::set_wake`]).
    wake: Arc<Mutex<Waker>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A worker that panicked (a backend bug) leaves data that is still consistent: each
    // update is a single assignment.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl AsyncDisk {
    /// Puts `inner` behind a worker thread. Without a thread (the system refused one) every
    /// operation is simply synchronous.
    pub fn new(inner: Box<dyn BlockBackend>) -> AsyncDisk {
        let len = inner.len();
        let inner = Arc::new(Mutex::new(inner));
        let jobs = Arc::new(Mutex::new(Jobs::default()));
        let (tx, rx) = mpsc::channel::<Job>();
        let wake: Arc<Mutex<Waker>> = Arc::default();
        let (i, j, w) = (Arc::clone(&inner), Arc::clone(&jobs), Arc::clone(&wake));
        let worker = std::thread::Builder::new()
            .name("ftvm-disk-io".into())
            .spawn(move || work(&i, &j, &w, &rx));
        AsyncDisk {
            len,
            inner,
            jobs,
            tx: worker.ok().map(|_| tx),
            writes: 0,
            wake,
        }
    }

    fn send(&self, job: Job) -> bool {
        self.tx.as_ref().is_some_and(|tx| tx.send(job).is_ok())
    }
}

/// The worker: one job at a time, in the order they were prepared.
fn work(
    inner: &Mutex<Box<dyn BlockBackend>>,
    jobs: &Mutex<Jobs>,
    wake: &Mutex<Waker>,
    rx: &mpsc::Receiver<Job>,
) {
    while let Ok(job) = rx.recv() {
        match job {
            Job::Read { offset, len } => {
                // Still wanted? (The device may have given up on it meanwhile.)
                let wanted = lock(jobs)
                    .reads
                    .iter()
                    .any(|a| a.offset == offset && a.len == len && a.data.is_none());
                if !wanted {
                    continue;
                }
                let mut buf = vec![0; len as usize];
                let r = lock(inner).read_at(offset, &mut buf).map(|()| buf);
                let mut j = lock(jobs);
                if let Some(a) = j
                    .reads
                    .iter_mut()
                    .find(|a| a.offset == offset && a.len == len && a.data.is_none())
                {
                    a.data = Some(r);
                }
            }
            Job::Flush { seq } => {
                let r = lock(inner).flush();
                let mut j = lock(jobs);
                if let Some((s, res @ None)) = &mut j.flush {
                    if *s == seq {
                        *res = Some(r);
                    }
                }
            }
        }
        lock(wake).wake();
    }
}

impl BlockBackend for AsyncDisk {
    fn len(&self) -> u64 {
        self.len
    }

    fn describe(&self) -> String {
        format!("async({})", lock(&self.inner).describe())
    }

    fn set_wake(&mut self, wake: &Waker) {
        *lock(&self.wake) = wake.clone();
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let len = buf.len() as u64;
        {
            let j = lock(&self.jobs);
            if let Some(a) = j.reads.iter().find(|a| !a.stale && a.covers(offset, len)) {
                match &a.data {
                    Some(Ok(data)) => {
                        let from = (offset - a.offset) as usize;
                        buf.copy_from_slice(&data[from..from + buf.len()]);
                        return Ok(());
                    }
                    Some(Err(e)) => return Err(io::Error::new(e.kind(), e.to_string())),
                    None => {} // not there yet: read it ourselves
                }
            }
        }
        lock(&self.inner).read_at(offset, buf)
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        {
            let mut j = lock(&self.jobs);
            for a in j
                .reads
                .iter_mut()
                .filter(|a| a.overlaps(offset, data.len() as u64))
            {
                a.stale = true;
            }
        }
        self.writes += 1;
        lock(&self.inner).write_at(offset, data)
    }

    fn flush(&mut self) -> io::Result<()> {
        let prepared = {
            let mut j = lock(&self.jobs);
            match j.flush.take() {
                Some((seq, Some(r))) if seq == self.writes => Some(r),
                _ => None,
            }
        };
        match prepared {
            Some(r) => r,
            None => lock(&self.inner).flush(),
        }
    }

    fn prepare(&mut self, op: Prepare) -> bool {
        match op {
            Prepare::Read { offset, len } => {
                if len > MAX_PREPARED_READ || self.tx.is_none() {
                    return true;
                }
                let mut j = lock(&self.jobs);
                if let Some(a) = j.reads.iter().find(|a| a.offset == offset && a.len == len) {
                    return a.stale || a.data.is_some();
                }
                if j.bytes + len > READ_AHEAD_BUDGET {
                    return false; // the others' completions make room
                }
                j.bytes += len;
                j.reads.push(Ahead {
                    offset,
                    len,
                    data: None,
                    stale: false,
                });
                drop(j);
                !self.send(Job::Read { offset, len })
            }
            Prepare::Flush => {
                if self.tx.is_none() {
                    return true;
                }
                let mut j = lock(&self.jobs);
                match &j.flush {
                    Some((seq, done)) if *seq == self.writes => done.is_some(),
                    _ => {
                        j.flush = Some((self.writes, None));
                        drop(j);
                        !self.send(Job::Flush { seq: self.writes })
                    }
                }
            }
            Prepare::Done { offset, len } => {
                let mut j = lock(&self.jobs);
                if let Some(i) = j
                    .reads
                    .iter()
                    .position(|a| a.offset == offset && a.len == len)
                {
                    let a = j.reads.swap_remove(i);
                    j.bytes -= a.len;
                }
                true
            }
            Prepare::Forget => {
                let mut j = lock(&self.jobs);
                *j = Jobs::default();
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use machine::virtio::block::MemBackend;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;
    use std::time::Instant;

    /// A memory disk whose reads and flushes block until the test opens the gate.
    struct Gated {
        disk: MemBackend,
        open: Arc<AtomicBool>,
        reads: Arc<Mutex<u32>>,
    }

    impl Gated {
        fn wait(&self) {
            while !self.open.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    impl BlockBackend for Gated {
        fn len(&self) -> u64 {
            self.disk.len()
        }
        fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
            self.wait();
            *lock(&self.reads) += 1;
            self.disk.read_at(offset, buf)
        }
        fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
            self.disk.write_at(offset, data)
        }
        fn flush(&mut self) -> io::Result<()> {
            self.wait();
            *lock(&self.reads) += 100;
            self.disk.flush()
        }
    }

    /// The host loop's side of a waker, for the tests: counts the worker's wake-ups.
    #[derive(Debug, Default)]
    struct Count(Mutex<u64>, std::sync::Condvar);

    impl machine::wake::Notify for Count {
        fn notify(&self) {
            *lock(&self.0) += 1;
            self.1.notify_all();
        }
    }

    impl Count {
        /// Waits up to `timeout` for a wake-up after `seen` of them.
        fn wait_past(&self, seen: u64, timeout: Duration) {
            let g = lock(&self.0);
            if *g == seen {
                let _ = self.1.wait_timeout(g, timeout);
            }
        }
        fn seen(&self) -> u64 {
            *lock(&self.0)
        }
    }

    fn gated() -> (AsyncDisk, Arc<AtomicBool>, Arc<Mutex<u32>>, Arc<Count>) {
        let open = Arc::new(AtomicBool::new(false));
        let reads = Arc::new(Mutex::new(0));
        let data = (0..8u8).flat_map(|s| [s; 512]).collect();
        let g = Gated {
            disk: MemBackend { data, flushes: 0 },
            open: Arc::clone(&open),
            reads: Arc::clone(&reads),
        };
        let mut d = AsyncDisk::new(Box::new(g));
        let count = Arc::new(Count::default());
        d.set_wake(&Waker::new(
            Arc::clone(&count) as Arc<dyn machine::wake::Notify>
        ));
        (d, open, reads, count)
    }

    /// Waits, woken by the worker, until `op` is ready.
    fn until_ready(d: &mut AsyncDisk, wake: &Count, op: Prepare) {
        let t0 = Instant::now();
        while !d.prepare(op) {
            assert!(t0.elapsed() < Duration::from_secs(10), "never ready");
            wake.wait_past(wake.seen(), Duration::from_millis(10));
        }
    }

    #[test]
    fn a_prepared_read_is_ready_only_once_the_worker_has_it_and_is_served_from_memory() {
        let (mut d, open, reads, wake) = gated();
        let op = Prepare::Read {
            offset: 512,
            len: 1024,
        };
        assert!(!d.prepare(op), "handed to the worker");
        std::thread::sleep(Duration::from_millis(20));
        assert!(!d.prepare(op), "the disk has not answered");
        open.store(true, Ordering::SeqCst);
        until_ready(&mut d, &wake, op);
        assert!(wake.seen() >= 1, "the worker woke the machine's loop");
        let mut buf = [0u8; 512];
        d.read_at(1024, &mut buf).unwrap();
        assert_eq!(buf, [2u8; 512], "a piece of the prepared range");
        assert_eq!(*lock(&reads), 1, "from memory, not the disk");
        assert!(d.prepare(Prepare::Done {
            offset: 512,
            len: 1024
        }));
        assert_eq!(lock(&d.jobs).bytes, 0);
    }

    #[test]
    fn a_write_over_a_prepared_read_makes_it_stale() {
        let (mut d, open, reads, wake) = gated();
        open.store(true, Ordering::SeqCst);
        let op = Prepare::Read {
            offset: 0,
            len: 512,
        };
        d.prepare(op);
        until_ready(&mut d, &wake, op);
        d.write_at(256, &[9; 16]).unwrap();
        let mut buf = [0u8; 512];
        d.read_at(0, &mut buf).unwrap();
        assert_eq!(buf[256..272], [9; 16], "read again after the write");
        assert_eq!(*lock(&reads), 2);
    }

    #[test]
    fn a_flush_counts_only_if_no_write_came_after_it_started() {
        // `reads` counts 1 per read and 100 per flush here.
        let (mut d, open, reads, wake) = gated();
        assert!(!d.prepare(Prepare::Flush));
        open.store(true, Ordering::SeqCst);
        until_ready(&mut d, &wake, Prepare::Flush);
        d.flush().unwrap();
        assert_eq!(*lock(&reads), 100, "the worker's fsync, taken by flush()");
        until_ready(&mut d, &wake, Prepare::Flush);
        d.write_at(0, &[1; 512]).unwrap();
        // The prepared flush does not cover that write: flush() does one of its own.
        d.flush().unwrap();
        assert_eq!(*lock(&reads), 300);
    }

    #[test]
    fn the_budget_bounds_what_is_read_ahead_and_huge_reads_are_not_prepared() {
        let (mut d, _open, _, _wake) = gated();
        assert!(d.prepare(Prepare::Read {
            offset: 0,
            len: MAX_PREPARED_READ + 1
        }));
        let mut started = 0;
        for i in 0..8 {
            let op = Prepare::Read {
                offset: i * MAX_PREPARED_READ,
                len: MAX_PREPARED_READ,
            };
            if !d.prepare(op) && lock(&d.jobs).reads.len() > started {
                started += 1;
            }
        }
        assert_eq!(started as u64, READ_AHEAD_BUDGET / MAX_PREPARED_READ);
        d.prepare(Prepare::Forget);
        assert_eq!(lock(&d.jobs).bytes, 0);
    }
}
