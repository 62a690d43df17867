//! Logging refused peers without letting them flood the log: one line per peer per interval,
//! plus a count of what was not written.
//!
//! Every endpoint that refuses something (a forged or replayed heartbeat, a client without
//! the key, garbage, a connection over the cap, a client that says nothing) logs it with the
//! peer's address — an operator must be able to see who is knocking. But a hostile peer can
//! knock thousands of times a second, and a log line per knock would turn the log into the
//! attack's amplifier (disk, CPU, and the interesting lines buried). So [`Refusals::refused`]
//! writes at most one line per peer address per [`Refusals::new`]'s interval; the refusals it
//! did not write are counted and said on that peer's next line (`... (and 41 more from this
//! peer since the last line)`). The table of peers is bounded ([`MAX_PEERS`]): when full, a
//! peer not in it is counted under "other peers", itself logged at most once per interval, so
//! thousands of source addresses cost a fixed amount of memory. [`Refusals::total`] counts
//! every refusal, logged or not (status, tests).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Peers remembered at once; beyond this, refusals are summed under "other peers".
pub const MAX_PEERS: usize = 1024;

/// The default interval between two lines about one peer.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
struct PeerLog {
    last_line: Instant,
    unlogged: u64,
}

#[derive(Debug, Default)]
struct Table {
    peers: HashMap<IpAddr, PeerLog>,
    others: Option<PeerLog>,
}

/// A rate-limited log of refusals for one endpoint (`what`: "heartbeat", "console", ...).
#[derive(Debug)]
pub struct Refusals {
    what: &'static str,
    interval: Duration,
    table: Mutex<Table>,
    total: AtomicU64,
    lines: AtomicU64,
}

impl Refusals {
    /// A log for endpoint `what`, writing at most one line per peer per `interval`.
    pub fn new(what: &'static str, interval: Duration) -> Refusals {
        Refusals {
            what,
            interval,
            table: Mutex::new(Table::default()),
            total: AtomicU64::new(0),
            lines: AtomicU64::new(0),
        }
    }

    /// Every refusal so far, logged or not.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Lines written so far.
    pub fn lines(&self) -> u64 {
        self.lines.load(Ordering::Relaxed)
    }

    /// Notes a refusal of `peer` (its address, as the log shows it) for `why`; returns
    /// whether a line was written.
    pub fn refused(&self, peer: impl std::fmt::Display, ip: IpAddr, why: &str) -> bool {
        self.total.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let Ok(mut t) = self.table.lock() else {
            return false;
        };
        let interval = self.interval;
        let due = |p: &mut PeerLog| -> Option<u64> {
            if now.duration_since(p.last_line) >= interval {
                let n = p.unlogged;
                *p = PeerLog {
                    last_line: now,
                    unlogged: 0,
                };
                Some(n)
            } else {
                p.unlogged += 1;
                None
            }
        };
        let fresh = PeerLog {
            last_line: now,
            unlogged: 0,
        };
        let line = if let Some(p) = t.peers.get_mut(&ip) {
            due(p).map(|n| (n, false))
        } else {
            if t.peers.len() >= MAX_PEERS {
                // Forget the peers that have been quiet longest (they said all they had to).
                t.peers
                    .retain(|_, p| now.duration_since(p.last_line) < interval);
            }
            if t.peers.len() < MAX_PEERS {
                t.peers.insert(ip, fresh);
                Some((0, false))
            } else {
                match t.others.as_mut() {
                    Some(o) => due(o).map(|n| (n, true)),
                    None => {
                        t.others = Some(fresh);
                        Some((0, true))
                    }
                }
            }
        };
        drop(t);
        let Some((unlogged, others)) = line else {
            return false;
        };
        self.lines.fetch_add(1, Ordering::Relaxed);
        let more = match (unlogged, others) {
            (0, _) => String::new(),
            (n, false) => format!(" (and {n} more from this peer since its last line)"),
            (n, true) => format!(" (and {n} more from other peers, too many to name)"),
        };
        tracing::warn!("{}: refused {peer}: {why}{more}", self.what);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(n.to_be_bytes())
    }

    #[test]
    fn one_line_per_peer_per_interval_and_every_refusal_counted() {
        let r = Refusals::new("test", Duration::from_millis(200));
        assert!(r.refused("1.0.0.1:5", ip(0x0100_0001), "no"));
        for _ in 0..100 {
            assert!(!r.refused("1.0.0.1:5", ip(0x0100_0001), "no"));
        }
        // Another peer has its own line.
        assert!(r.refused("1.0.0.2:5", ip(0x0100_0002), "no"));
        assert_eq!((r.total(), r.lines()), (102, 2));
        std::thread::sleep(Duration::from_millis(250));
        assert!(r.refused("1.0.0.1:5", ip(0x0100_0001), "no"));
        assert_eq!(r.lines(), 3);
    }

    #[test]
    fn thousands_of_peers_cost_a_bounded_table() {
        let r = Refusals::new("test", Duration::from_secs(60));
        for n in 0..(MAX_PEERS as u32 * 4) {
            r.refused("x", ip(n), "no");
        }
        let t = r.table.lock().unwrap();
        assert_eq!(t.peers.len(), MAX_PEERS);
        assert!(t.others.is_some());
        drop(t);
        // MAX_PEERS first lines, one "other peers" line.
        assert_eq!(r.lines(), MAX_PEERS as u64 + 1);
        assert_eq!(r.total(), MAX_PEERS as u64 * 4);
    }
}
