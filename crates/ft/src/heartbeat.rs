//! Failure detection: authenticated UDP heartbeats between the pair, plus the logging traffic.
//!
//! Each side sends a datagram every `interval` and notes every valid one it receives (and every
//! channel message, through [`Liveness::heard`]); the peer counts as gone once nothing has been
//! heard for `timeout`. A datagram is `MAGIC | session id | sequence | role`, then a truncated
//! HMAC under the shared key: strangers' and replayed datagrams are ignored (and counted). The
//! backup learns where to send from the first valid datagram of the primary.

use crate::auth::{self, Key, TAG_LEN};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MAGIC: &[u8; 8] = b"FTVMHB01";
const LEN: usize = 8 + 8 + 8 + 1;

/// When the peer was last heard from, and how regularly.
#[derive(Debug)]
pub struct Liveness {
    start: Instant,
    /// Milliseconds since `start` when the peer was last heard.
    last_ms: AtomicU64,
    /// The longest silence seen so far while the peer was alive, in milliseconds.
    max_gap_ms: AtomicU64,
    /// Valid heartbeats received.
    pub received: AtomicU64,
    /// Datagrams ignored: bad tag, stranger, replay.
    pub rejected: AtomicU64,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            max_gap_ms: AtomicU64::new(0),
            received: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        }
    }
}

impl Liveness {
    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// The peer has just shown it is alive.
    pub fn heard(&self) {
        let now = self.now_ms();
        let last = self.last_ms.swap(now, Ordering::Relaxed);
        self.max_gap_ms
            .fetch_max(now.saturating_sub(last), Ordering::Relaxed);
    }

    /// Time since the peer was last heard.
    pub fn silence(&self) -> Duration {
        Duration::from_millis(
            self.now_ms()
                .saturating_sub(self.last_ms.load(Ordering::Relaxed)),
        )
    }

    /// The longest silence seen between two signs of life.
    pub fn max_gap(&self) -> Duration {
        Duration::from_millis(self.max_gap_ms.load(Ordering::Relaxed))
    }
}

/// Heartbeat settings.
#[derive(Debug, Clone, Copy)]
pub struct HeartbeatConfig {
    /// Time between two datagrams.
    pub interval: Duration,
    /// Silence after which the peer counts as gone.
    pub timeout: Duration,
}

impl Default for HeartbeatConfig {
    /// 50 ms / 500 ms: a dead peer is noticed within half a second; a loaded 2-core host has
    /// not been seen to starve the heartbeat threads that long (docs/benchmarks.md).
    fn default() -> Self {
        HeartbeatConfig {
            interval: Duration::from_millis(50),
            timeout: Duration::from_millis(500),
        }
    }
}

fn datagram(key: &Key, session: u64, seq: u64, role: u8) -> Vec<u8> {
    let mut d = MAGIC.to_vec();
    d.extend_from_slice(&session.to_le_bytes());
    d.extend_from_slice(&seq.to_le_bytes());
    d.push(role);
    let tag = key.mac(&[b"ftvm-heartbeat", &d]);
    d.extend_from_slice(&tag[..TAG_LEN]);
    d
}

/// Checks a datagram; returns (session, seq, role).
fn parse(key: &Key, d: &[u8]) -> Option<(u64, u64, u8)> {
    if d.len() != LEN + TAG_LEN || &d[..8] != MAGIC {
        return None;
    }
    let tag = key.mac(&[b"ftvm-heartbeat", &d[..LEN]]);
    if !auth::equal(&d[LEN..], &tag[..TAG_LEN]) {
        return None;
    }
    let session = u64::from_le_bytes(d[8..16].try_into().ok()?);
    let seq = u64::from_le_bytes(d[16..24].try_into().ok()?);
    Some((session, seq, d[24]))
}

/// One side's heartbeat.
pub struct Heartbeat {
    /// The UDP socket to send and receive on.
    pub socket: UdpSocket,
    /// Where to send; `None`: to whoever sent the first valid datagram of `peer_role`.
    pub peer: Option<SocketAddr>,
    /// The pair's key.
    pub key: Key,
    /// This side's role byte (0 primary, 1 backup).
    pub role: u8,
    /// The peer's role byte.
    pub peer_role: u8,
    /// Interval and timeout.
    pub cfg: HeartbeatConfig,
    /// Where signs of life are noted.
    pub live: Arc<Liveness>,
    /// Ends both threads.
    pub stop: Arc<AtomicBool>,
}

/// A pair side's heartbeat with the peer, which counts as just heard: `role` 0 for the
/// primary (sending to `peer`), 1 for the backup (`peer`: `None`, whoever answers). Returns
/// where its signs of life are noted and the flag that stops it.
pub fn start(
    socket: UdpSocket,
    peer: Option<SocketAddr>,
    key: Key,
    role: u8,
    cfg: HeartbeatConfig,
) -> std::io::Result<(Arc<Liveness>, Arc<AtomicBool>)> {
    let live = Arc::new(Liveness::default());
    live.heard();
    let stop = Arc::new(AtomicBool::new(false));
    spawn(Heartbeat {
        socket,
        peer,
        key,
        role,
        peer_role: u8::from(role == 0),
        cfg,
        live: Arc::clone(&live),
        stop: Arc::clone(&stop),
    })?;
    Ok((live, stop))
}

/// Runs the heartbeat until `stop` (two threads: sender and receiver).
pub fn spawn(h: Heartbeat) -> std::io::Result<()> {
    let Heartbeat {
        socket,
        peer,
        key,
        role,
        peer_role,
        cfg,
        live,
        stop,
    } = h;
    let peer = Arc::new(Mutex::new(peer));
    let session = u64::from_le_bytes(auth::nonce()[..8].try_into().unwrap_or([0; 8]));
    socket.set_read_timeout(Some(cfg.interval))?;
    let rx = socket.try_clone()?;
    {
        let (key, peer, stop) = (key.clone(), Arc::clone(&peer), Arc::clone(&stop));
        std::thread::Builder::new()
            .name("heartbeat-tx".into())
            .spawn(move || {
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let to = peer.lock().ok().and_then(|p| *p);
                    if let Some(to) = to {
                        let _ = socket.send_to(&datagram(&key, session, seq, role), to);
                        seq += 1;
                    }
                    std::thread::sleep(cfg.interval);
                }
            })?;
    }
    std::thread::Builder::new()
        .name("heartbeat-rx".into())
        .spawn(move || {
            let mut buf = [0u8; 128];
            let mut seen: Option<(u64, u64)> = None;
            while !stop.load(Ordering::Relaxed) {
                let Ok((n, from)) = rx.recv_from(&mut buf) else {
                    continue;
                };
                match parse(&key, &buf[..n]) {
                    Some((s, q, r)) if r == peer_role => {
                        // A new session (the peer restarted) or a later datagram of this one.
                        if seen.is_some_and(|(ss, qq)| ss == s && q <= qq) {
                            live.rejected.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        seen = Some((s, q));
                        if let Ok(mut p) = peer.lock() {
                            p.get_or_insert(from);
                        }
                        live.received.fetch_add(1, Ordering::Relaxed);
                        live.heard();
                    }
                    _ => {
                        live.rejected.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_check_key_and_role() {
        let k = Key::random();
        let d = datagram(&k, 9, 4, 1);
        assert_eq!(parse(&k, &d), Some((9, 4, 1)));
        assert_eq!(parse(&Key::random(), &d), None);
        let mut bad = d.clone();
        bad[20] ^= 1;
        assert_eq!(parse(&k, &bad), None);
        assert_eq!(parse(&k, &d[..10]), None);
    }

    #[test]
    fn two_sides_hear_each_other_and_notice_silence() {
        let k = Key::random();
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b_addr = b.local_addr().unwrap();
        let cfg = HeartbeatConfig {
            interval: Duration::from_millis(10),
            timeout: Duration::from_millis(100),
        };
        let (la, lb) = (Arc::new(Liveness::default()), Arc::new(Liveness::default()));
        let stop_a = Arc::new(AtomicBool::new(false));
        let stop_b = Arc::new(AtomicBool::new(false));
        spawn(Heartbeat {
            socket: a,
            peer: Some(b_addr),
            key: k.clone(),
            role: 0,
            peer_role: 1,
            cfg,
            live: Arc::clone(&la),
            stop: Arc::clone(&stop_a),
        })
        .unwrap();
        spawn(Heartbeat {
            socket: b,
            peer: None,
            key: k,
            role: 1,
            peer_role: 0,
            cfg,
            live: Arc::clone(&lb),
            stop: Arc::clone(&stop_b),
        })
        .unwrap();
        let t0 = Instant::now();
        while (la.received.load(Ordering::Relaxed) < 5 || lb.received.load(Ordering::Relaxed) < 5)
            && t0.elapsed() < Duration::from_secs(5)
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(la.received.load(Ordering::Relaxed) >= 5, "a heard b");
        assert!(lb.received.load(Ordering::Relaxed) >= 5, "b heard a");
        stop_b.store(true, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            la.silence() >= Duration::from_millis(150),
            "a notices b is gone"
        );
        stop_a.store(true, Ordering::Relaxed);
    }
}
