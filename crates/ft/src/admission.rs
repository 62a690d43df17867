//! Admission of TCP clients that have not authenticated yet: a cap on how many there are at
//! once, and a deadline for their handshake.
//!
//! Every endpoint a stranger can reach (the console endpoint, the backup's channel listener)
//! serves each connection on a thread of its own until the client proves it holds the key. A
//! stranger could open thousands of connections and say nothing, or drip a byte every few
//! seconds, and hold a thread and a descriptor each for ever. So each endpoint keeps an
//! [`Admission`]: every accepted connection is registered ([`Admission::admit`]) until it
//! authenticates ([`Pending::authenticated`]) or ends; one still pending after the deadline is
//! shut down (its thread's read fails and the thread ends); and when [`Admission::new`]'s cap
//! is reached, the connection that has been pending longest is shut down to make room. We evict
//! the oldest rather than refuse the newest: a genuine client completes its handshake within a
//! round trip or two, so under a flood of idle connections it is never the oldest, and it gets
//! in, where refusing newcomers would lock it out for as long as the flood lasts. Every
//! eviction is logged with the peer's address, rate-limited ([`crate::refusals`]).

use crate::refusals::Refusals;
use std::collections::HashMap;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

struct Entry {
    since: Instant,
    peer: SocketAddr,
    stream: TcpStream,
}

/// The unauthenticated connections of one endpoint.
pub struct Admission {
    cap: usize,
    deadline: Duration,
    pending: Mutex<HashMap<u64, Entry>>,
    next: AtomicU64,
    /// Where refusals of this endpoint are logged.
    pub log: Refusals,
    evicted: AtomicU64,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("cap", &self.cap)
            .field("deadline", &self.deadline)
            .field("pending", &self.pending())
            .finish()
    }
}

/// A connection registered with an [`Admission`] (unregistered when dropped).
pub struct Pending {
    id: u64,
    adm: Arc<Admission>,
}

impl Pending {
    /// The client proved it holds the key: it no longer counts against the cap or the deadline.
    pub fn authenticated(self) {}
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Ok(mut p) = self.adm.pending.lock() {
            p.remove(&self.id);
        }
    }
}

impl Admission {
    /// At most `cap` connections pending at once, each for at most `deadline`; refusals are
    /// logged under `what`. A thread enforces the deadline while the admission lives.
    pub fn new(what: &'static str, cap: usize, deadline: Duration) -> Arc<Admission> {
        let a = Arc::new(Admission {
            cap: cap.max(1),
            deadline,
            pending: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
            log: Refusals::new(what, crate::refusals::DEFAULT_INTERVAL),
            evicted: AtomicU64::new(0),
        });
        let weak: Weak<Admission> = Arc::downgrade(&a);
        let tick = (deadline / 4).clamp(Duration::from_millis(20), Duration::from_millis(250));
        let _ = std::thread::Builder::new()
            .name(format!("{what}-reaper"))
            .spawn(move || loop {
                std::thread::sleep(tick);
                let Some(a) = weak.upgrade() else { return };
                a.reap();
            });
        a
    }

    /// Connections pending now.
    pub fn pending(&self) -> usize {
        self.pending.lock().map_or(0, |p| p.len())
    }

    /// Connections shut down so far (deadline passed, or evicted for a newer one).
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    fn shut(&self, e: &Entry, why: &str) {
        let _ = e.stream.shutdown(Shutdown::Both);
        self.evicted.fetch_add(1, Ordering::Relaxed);
        self.log.refused(e.peer, e.peer.ip(), why);
    }

    fn reap(&self) {
        let now = Instant::now();
        let Ok(mut p) = self.pending.lock() else {
            return;
        };
        let late: Vec<u64> = p
            .iter()
            .filter(|(_, e)| now.duration_since(e.since) > self.deadline)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            if let Some(e) = p.remove(&id) {
                self.shut(
                    &e,
                    &format!(
                        "no authenticated request within {:?} (said nothing, or too slowly)",
                        self.deadline
                    ),
                );
            }
        }
    }

    /// Registers a new connection from `peer`, evicting the longest-pending one if the cap is
    /// reached. `None` if the stream cannot be registered (no descriptor for its handle):
    /// the caller drops the connection.
    pub fn admit(self: &Arc<Self>, s: &TcpStream, peer: SocketAddr) -> Option<Pending> {
        let handle = s.try_clone().ok()?;
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut p = self.pending.lock().ok()?;
        while p.len() >= self.cap {
            let Some(oldest) = p.iter().min_by_key(|(_, e)| e.since).map(|(id, _)| *id) else {
                break;
            };
            if let Some(e) = p.remove(&oldest) {
                self.shut(
                    &e,
                    &format!(
                        "{} connections were waiting to authenticate: the longest-waiting one \
                         (this) was closed for a newer one",
                        self.cap
                    ),
                );
            }
        }
        p.insert(
            id,
            Entry {
                since: Instant::now(),
                peer,
                stream: handle,
            },
        );
        Some(Pending {
            id,
            adm: Arc::clone(self),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;

    fn pair(l: &TcpListener) -> (TcpStream, TcpStream, SocketAddr) {
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, peer) = l.accept().unwrap();
        (c, s, peer)
    }

    fn closed(c: &mut TcpStream) -> bool {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 1];
        matches!(c.read(&mut b), Ok(0) | Err(_))
    }

    #[test]
    fn the_oldest_pending_connection_makes_room_and_authenticated_ones_do_not_count() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = Admission::new("test", 3, Duration::from_secs(60));
        let mut conns = Vec::new();
        let mut tickets = Vec::new();
        for _ in 0..3 {
            let (c, s, peer) = pair(&l);
            tickets.push(a.admit(&s, peer).unwrap());
            conns.push((c, s));
            std::thread::sleep(Duration::from_millis(5));
        }
        // The first authenticates: room for one more without evicting anyone.
        tickets.remove(0).authenticated();
        let (c4, s4, p4) = pair(&l);
        let _t4 = a.admit(&s4, p4).unwrap();
        assert_eq!((a.pending(), a.evicted()), (3, 0));
        // One more: the oldest pending (the second) is shut down, not the newcomer.
        let (mut c5, s5, p5) = pair(&l);
        let _t5 = a.admit(&s5, p5).unwrap();
        assert_eq!((a.pending(), a.evicted()), (3, 1));
        assert!(closed(&mut conns[1].0), "the oldest pending was closed");
        c5.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut b = [0u8; 1];
        assert!(
            matches!(c5.read(&mut b), Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "the newcomer is still open"
        );
        drop((c4, s5));
    }

    #[test]
    fn a_connection_past_its_deadline_is_shut_down() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = Admission::new("test", 10, Duration::from_millis(100));
        let (mut c, s, peer) = pair(&l);
        let t = a.admit(&s, peer).unwrap();
        let t0 = Instant::now();
        assert!(closed(&mut c));
        assert!(t0.elapsed() < Duration::from_secs(3));
        assert_eq!((a.pending(), a.evicted()), (0, 1));
        drop(t);
    }
}
