//! The primary's end of the logging channel while the pair is protected: a sender thread with
//! a bounded queue, the acknowledgement reader, and what they tell the run loop (acknowledged
//! horizon, bytes in flight, the backup's replay position, a failure).

use crate::heartbeat::Liveness;
use crate::transport::{Channel, Hangup};
use crate::wire::Msg;
use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The log writer's output on the primary: bytes wait here until the run loop sends them.
#[derive(Clone, Default)]
pub struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl SharedBuf {
    /// Bytes written and not yet taken.
    pub fn len(&self) -> usize {
        self.0.lock().map_or(0, |v| v.len())
    }

    /// Whether nothing waits to be taken.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes the bytes written so far.
    pub fn take(&self) -> Vec<u8> {
        self.0
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }
}

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("log buffer poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What the backup's acknowledgements release (the output gate, `crate::gate`), called on the
/// acknowledgement reader's thread with the horizon acknowledged, the icount the backup has
/// replayed to (never past that horizon) and when the newest log it acknowledges began to be
/// written to the channel (`None` if it acknowledges none not acknowledged before): the
/// backup cannot have heard from the primary earlier than that (the output gate's lease).
pub type Release = Box<dyn Fn(u64, u64, Option<Instant>) + Send>;

/// What the threads of the link share with the run loop.
#[derive(Default)]
pub struct LinkState {
    /// Highest horizon the backup acknowledged.
    pub acked_horizon: AtomicU64,
    /// Log entries the backup has received.
    pub acked_entries: AtomicU64,
    /// The icount the backup has replayed to.
    pub replayed: AtomicU64,
    /// Log bytes handed to the sender.
    pub sent_bytes: AtomicU64,
    /// Log bytes acknowledged.
    pub acked_bytes: AtomicU64,
    /// Messages queued for the sender.
    pub queued_msgs: AtomicU64,
    /// Messages the sender has written to the channel.
    pub written_msgs: AtomicU64,
    /// Set once the link has failed.
    pub failed: AtomicBool,
    /// Why it failed.
    pub why: Mutex<Option<String>>,
    /// (horizon, cumulative bytes) of messages sent and not yet acknowledged.
    inflight: Mutex<VecDeque<(u64, u64)>>,
    /// (horizon, when its writing began) of log messages written and not yet acknowledged.
    written: Mutex<VecDeque<(u64, Instant)>>,
}

impl LinkState {
    fn fail(&self, why: String) {
        if let Ok(mut w) = self.why.lock() {
            w.get_or_insert(why);
        }
        self.failed.store(true, Ordering::Relaxed);
    }

    /// Why the link failed, if it did.
    pub fn failure(&self) -> Option<String> {
        if !self.failed.load(Ordering::Relaxed) {
            return None;
        }
        self.why
            .lock()
            .ok()
            .and_then(|w| w.clone())
            .or(Some("link failed".into()))
    }

    /// Log bytes sent and not yet acknowledged.
    pub fn in_flight(&self) -> u64 {
        self.sent_bytes
            .load(Ordering::Relaxed)
            .saturating_sub(self.acked_bytes.load(Ordering::Relaxed))
    }
}

/// The primary's link to its backup.
pub struct Link {
    tx: SyncSender<Msg>,
    /// Lets the run loop close the connection the sender thread owns.
    hangup: Arc<dyn Hangup>,
    sender: std::thread::JoinHandle<()>,
    /// Shared with the threads.
    pub state: Arc<LinkState>,
}

impl Link {
    /// Starts the sender and the acknowledgement reader. `release` gets each acknowledged
    /// horizon with the icount the backup reports it has replayed to (what held shared-disk
    /// writes wait for with `--disk-reads own`, which must not reach the disk before the backup
    /// has made the reads before them).
    pub fn start(ch: Channel, release: Release, live: Arc<Liveness>) -> std::io::Result<Link> {
        let Channel {
            tx: w,
            rx: mut r,
            hangup,
        } = ch;
        let state = Arc::new(LinkState::default());
        let (tx, rx) = sync_channel::<Msg>(1024);
        let sender = {
            let state = Arc::clone(&state);
            let hangup = Arc::clone(&hangup);
            let mut w = w;
            std::thread::Builder::new()
                .name("log-sender".into())
                .spawn(move || {
                    for m in rx {
                        if let Msg::Log { horizon, .. } = &m {
                            if let Ok(mut q) = state.written.lock() {
                                q.push_back((*horizon, Instant::now()));
                            }
                        }
                        if let Err(e) = w.send(&m) {
                            state.fail(format!("sending the log: {e}"));
                            hangup.close();
                            return;
                        }
                        state.written_msgs.fetch_add(1, Ordering::Relaxed);
                    }
                })?
        };
        {
            let state = Arc::clone(&state);
            std::thread::Builder::new()
                .name("ack-reader".into())
                .spawn(move || loop {
                    match r.recv() {
                        Ok(Msg::Ack {
                            entries,
                            horizon,
                            replayed,
                        }) => {
                            live.heard();
                            state.acked_entries.store(entries, Ordering::Relaxed);
                            state.replayed.store(replayed, Ordering::Relaxed);
                            state.acked_horizon.fetch_max(horizon, Ordering::Relaxed);
                            if let Ok(mut q) = state.inflight.lock() {
                                while q.front().is_some_and(|(h, _)| *h <= horizon) {
                                    if let Some((_, b)) = q.pop_front() {
                                        state.acked_bytes.fetch_max(b, Ordering::Relaxed);
                                    }
                                }
                            }
                            let mut sent = None;
                            if let Ok(mut q) = state.written.lock() {
                                while q.front().is_some_and(|(h, _)| *h <= horizon) {
                                    sent = q.pop_front().map(|(_, t)| t);
                                }
                            }
                            // Never past what the backup has: it cannot have replayed
                            // further (a lying backup releases nothing early).
                            release(horizon, replayed.min(horizon), sent);
                        }
                        Ok(other) => {
                            state.fail(format!("the backup sent an unexpected {other:?}"));
                            return;
                        }
                        Err(e) => {
                            state.fail(format!("the backup's acknowledgements: {e}"));
                            return;
                        }
                    }
                })?;
        }
        Ok(Link {
            tx,
            hangup,
            sender,
            state,
        })
    }

    /// Queues log bytes with the horizon they bring the backup to. `false` if the queue is
    /// full (the caller stalls and tries again) or the link failed.
    pub fn send(&self, horizon: u64, released: u64, bytes: Vec<u8>) -> Result<(), Vec<u8>> {
        let n = bytes.len() as u64;
        let total = self.state.sent_bytes.load(Ordering::Relaxed) + n;
        if let Ok(mut q) = self.state.inflight.lock() {
            q.push_back((horizon, total));
        }
        match self.tx.try_send(Msg::Log {
            horizon,
            released,
            bytes,
        }) {
            Ok(()) => {
                self.state.sent_bytes.store(total, Ordering::Relaxed);
                self.state.queued_msgs.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(TrySendError::Full(Msg::Log { bytes, .. }))
            | Err(TrySendError::Disconnected(Msg::Log { bytes, .. })) => {
                if let Ok(mut q) = self.state.inflight.lock() {
                    q.pop_back();
                }
                Err(bytes)
            }
            Err(_) => Err(Vec::new()),
        }
    }

    /// [`Link::send`], waiting while the queue is full until the bytes are queued (`true`) or
    /// `give_up` says to stop trying (`false`: the bytes are dropped, the link is failing).
    pub fn send_until(
        &self,
        horizon: u64,
        released: u64,
        mut bytes: Vec<u8>,
        give_up: impl Fn() -> bool,
    ) -> bool {
        loop {
            match self.send(horizon, released, bytes) {
                Ok(()) => return true,
                Err(back) => {
                    if self.state.failed.load(Ordering::Relaxed) || give_up() {
                        return false;
                    }
                    bytes = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }

    /// Closes the connection (the backup sees the end at once; what is still queued is lost).
    pub fn close(&self) {
        self.hangup.close();
    }

    /// Ends the log in order: queues its last bytes, lets the sender write everything queued,
    /// half-closes (the backup reads all of it, then the end of the stream) and waits, within
    /// `timeout`, for the backup to acknowledge `horizon` after that and hang up. Closing at
    /// once instead could cut the end marker off while it is still queued, and the backup
    /// would then take the end of the primary for its failure and go live.
    pub fn end(self, horizon: u64, released: u64, bytes: Vec<u8>, timeout: Duration) {
        let t0 = Instant::now();
        let queued = self.send_until(horizon, released, bytes, || t0.elapsed() >= timeout);
        let Link {
            tx,
            hangup,
            sender,
            state,
        } = self;
        // The sender writes what is queued, then sees the queue closed.
        drop(tx);
        while !sender.is_finished() && t0.elapsed() < timeout {
            std::thread::sleep(Duration::from_millis(1));
        }
        if queued && sender.is_finished() && !state.failed.load(Ordering::Relaxed) {
            hangup.close_write();
            // The backup acknowledges the last message, then stops and closes its end.
            while !state.failed.load(Ordering::Relaxed) && t0.elapsed() < timeout {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        hangup.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Key;
    use crate::wire::{accept_handshake, connect_handshake, Hello};
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn acknowledgements_release_by_horizon_and_by_replayed_icount() {
        let k = Key::random();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let kb = k.clone();
        let t = std::thread::spawn(move || accept_handshake(l.accept().unwrap().0, &kb));
        let hello = Hello {
            vm: "vm0".into(),
            generation: 0,
            non_shared: false,
            disk_reads_own: true,
        };
        let (w, r) = connect_handshake(TcpStream::connect(addr).unwrap(), &k, &hello).unwrap();
        let (_, mut bw, _br) = t.join().unwrap().unwrap();
        let seen: Arc<Mutex<Vec<(char, u64)>>> = Arc::default();
        let s = Arc::clone(&seen);
        let release: Release = Box::new(move |h, r, _| {
            let mut s = s.lock().unwrap();
            s.push(('h', h));
            s.push(('r', r));
        });
        let ch = Channel::tcp(w, r).unwrap();
        let link = Link::start(ch, release, Arc::new(Liveness::default())).unwrap();
        for (horizon, replayed) in [(100, 40), (200, 150), (200, 500)] {
            bw.send(&Msg::Ack {
                entries: 1,
                horizon,
                replayed,
            })
            .unwrap();
        }
        let t0 = Instant::now();
        while seen.lock().unwrap().len() < 6 {
            assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", seen.lock());
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(
            *seen.lock().unwrap(),
            [
                ('h', 100),
                ('r', 40),
                ('h', 200),
                ('r', 150),
                ('h', 200),
                ('r', 200)
            ],
            "a replayed icount past the horizon acknowledged is not believed"
        );
        assert_eq!(link.state.replayed.load(Ordering::Relaxed), 500);
        link.close();
    }
}
