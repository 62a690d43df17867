//! A shared disk under the output rule, on the primary: the guest's writes are *held* — the
//! guest sees them complete, and reads see them — until the backup has acknowledged the log up
//! to the slice that made them; only then do they reach the disk both hosts share. A backup
//! that goes live re-issues the writes it replayed and the primary had not confirmed (see
//! `rr::Replayer::reissue_disk_writes`), so a write is either on the disk or re-issued, and no
//! write of an execution the backup never saw ever reaches the disk.
//!
//! With `--disk-reads own` the backup reads the shared disk itself, so a write must not reach
//! the disk before the backup has executed the reads that came before it (the paper's
//! read/write race: a block the guest reads and then writes): the primary then releases the
//! writes of a slice once the backup has *replayed* past the slice's end, not merely received
//! it (`crate::link`, [`HeldDisk::release`] with the replayed icount).
//!
//! Flushes are held in order with the writes: a flush reaches the disk after the writes before
//! it. (The guest's fsync therefore returns before the data is durable; the promise it made
//! to a client is an output, and that output waits for the same acknowledgement, after which
//! either the primary writes it or the backup re-issues it.)

use machine::virtio::BlockBackend;
use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

/// A held write (`None`: a flush): (start of its slice, the slice's horizon, offset, data).
type Held = (u64, u64, u64, Option<Vec<u8>>);

struct Inner {
    disk: Box<dyn BlockBackend>,
    len: u64,
    /// Writes of the slice being run (horizon not known yet).
    open: Vec<(u64, Option<Vec<u8>>)>,
    /// Writes waiting for the acknowledgement of their slice's horizon.
    held: VecDeque<Held>,
    holding: bool,
    /// Icount before which every write is on the disk.
    released: u64,
    /// The last sealed horizon: where the open slice started.
    sealed: u64,
    /// Writes the disk refused after the guest saw them succeed.
    failures: u64,
}

/// The shared handle: the device's backend and the link's release side.
#[derive(Clone)]
pub struct HeldDisk(Arc<Mutex<Inner>>);

impl HeldDisk {
    /// Holds the writes to `disk`.
    pub fn new(disk: Box<dyn BlockBackend>) -> HeldDisk {
        let len = disk.len();
        HeldDisk(Arc::new(Mutex::new(Inner {
            disk,
            len,
            open: Vec::new(),
            held: VecDeque::new(),
            holding: true,
            released: 0,
            sealed: 0,
            failures: 0,
        })))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        match self.0.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// The slice that ended at icount `horizon` made the writes since the last call.
    pub fn seal(&self, horizon: u64) {
        let mut s = self.lock();
        let open = std::mem::take(&mut s.open);
        let start = s.sealed;
        s.held
            .extend(open.into_iter().map(|(off, d)| (start, horizon, off, d)));
        s.sealed = s.sealed.max(horizon);
    }

    /// The backup acknowledged `horizon` (or, with `--disk-reads own`, replayed to it): the
    /// writes of the slices that ended by then go to the disk.
    pub fn release(&self, horizon: u64) {
        let mut s = self.lock();
        while s.held.front().is_some_and(|(_, h, _, _)| *h <= horizon) {
            let Some((_, _, off, data)) = s.held.pop_front() else {
                break;
            };
            let r = match &data {
                Some(d) => s.disk.write_at(off, d),
                None => s.disk.flush(),
            };
            if r.is_err() {
                s.failures += 1;
            }
        }
        // Every write still held was made in a slice that started at or after `start` (a
        // replayed icount need not be a slice's end, so `horizon` alone would claim too much).
        let start = s.held.front().map_or(s.sealed, |w| w.0);
        s.released = s.released.max(horizon.min(start));
    }

    /// Icount before which every write is on the disk.
    pub fn released(&self) -> u64 {
        self.lock().released
    }

    /// Writes held, and writes the disk failed after the guest saw them succeed.
    pub fn counts(&self) -> (usize, u64) {
        let s = self.lock();
        (s.held.len() + s.open.len(), s.failures)
    }

    /// Running on alone: everything held goes to the disk now, later writes at once.
    pub fn unhold(&self) {
        self.seal(u64::MAX);
        self.release(u64::MAX);
        self.lock().holding = false;
    }

    /// This side lost: nothing it held may reach the disk.
    pub fn discard(&self) {
        let mut s = self.lock();
        s.open.clear();
        s.held.clear();
        s.holding = true;
    }

    /// The backend to give the virtio-blk device.
    pub fn backend(&self) -> Box<dyn BlockBackend> {
        Box::new(self.clone())
    }
}

impl BlockBackend for HeldDisk {
    fn len(&self) -> u64 {
        self.lock().len
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut s = self.lock();
        s.disk.read_at(offset, buf)?;
        // What the guest wrote and the disk has not got yet, oldest first.
        let end = offset + buf.len() as u64;
        let Inner { held, open, .. } = &*s;
        let pending = held
            .iter()
            .map(|(_, _, o, d)| (*o, d))
            .chain(open.iter().map(|(o, d)| (*o, d)));
        for (o, d) in pending {
            let Some(d) = d else { continue };
            let (ws, we) = (o, o + d.len() as u64);
            let (a, b) = (ws.max(offset), we.min(end));
            if a < b {
                let dst = usize::try_from(a - offset).unwrap_or(0);
                let src = usize::try_from(a - ws).unwrap_or(0);
                let n = usize::try_from(b - a).unwrap_or(0);
                buf[dst..dst + n].copy_from_slice(&d[src..src + n]);
            }
        }
        Ok(())
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut s = self.lock();
        if !s.holding {
            return s.disk.write_at(offset, data);
        }
        s.open.push((offset, Some(data.to_vec())));
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut s = self.lock();
        if !s.holding {
            return s.disk.flush();
        }
        s.open.push((0, None));
        Ok(())
    }

    fn prepare(&mut self, op: machine::virtio::Prepare) -> bool {
        let mut s = self.lock();
        match op {
            // A flush while holding is held too: nothing to wait for now.
            machine::virtio::Prepare::Flush if s.holding => true,
            op => s.disk.prepare(op),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use machine::virtio::block::MemBackend;

    fn disk() -> (HeldDisk, Box<dyn BlockBackend>) {
        let h = HeldDisk::new(Box::new(MemBackend {
            data: vec![0; 4096],
            flushes: 0,
        }));
        let b = h.backend();
        (h, b)
    }

    fn on_disk(h: &HeldDisk, off: u64, n: usize) -> Vec<u8> {
        let mut v = vec![0; n];
        h.lock().disk.read_at(off, &mut v).unwrap();
        v
    }

    #[test]
    fn writes_wait_for_the_acknowledgement_but_reads_see_them() {
        let (h, mut b) = disk();
        b.write_at(10, b"abcd").unwrap();
        b.write_at(12, b"XY").unwrap();
        let mut r = [0u8; 6];
        b.read_at(9, &mut r).unwrap();
        assert_eq!(&r, b"\0abXY\0", "reads see held writes, later ones on top");
        h.seal(100);
        b.write_at(0, b"zz").unwrap();
        h.seal(200);
        assert_eq!(on_disk(&h, 10, 4), b"\0\0\0\0", "nothing on the disk yet");
        h.release(150);
        assert_eq!(on_disk(&h, 10, 4), b"abXY");
        assert_eq!(on_disk(&h, 0, 2), b"\0\0", "the later slice still waits");
        assert_eq!(
            h.released(),
            100,
            "the held slice [100, 200) may hold writes made before 150"
        );
        h.release(200);
        assert_eq!(on_disk(&h, 0, 2), b"zz");
        assert_eq!(h.released(), 200);
        b.write_at(0, b"yy").unwrap();
        h.release(250);
        assert_eq!(h.released(), 200, "an open slice started at 200");
        h.seal(300);
        h.release(300);
        assert_eq!((h.released(), on_disk(&h, 0, 2)), (300, b"yy".to_vec()));
    }

    #[test]
    fn a_loser_writes_nothing_and_a_lone_primary_writes_at_once() {
        let (h, mut b) = disk();
        b.write_at(0, b"no").unwrap();
        h.seal(10);
        h.discard();
        h.release(1000);
        assert_eq!(on_disk(&h, 0, 2), b"\0\0");
        let (h, mut b) = disk();
        b.write_at(0, b"ok").unwrap();
        h.unhold();
        assert_eq!(on_disk(&h, 0, 2), b"ok");
        b.write_at(2, b"!").unwrap();
        assert_eq!(on_disk(&h, 2, 1), b"!");
    }
}
