//! Failure detection: authenticated UDP heartbeats between the pair, plus the logging traffic.
//!
//! Each side sends a datagram every `interval` and notes every valid one it receives (and every
//! channel message, through [`Liveness::heard`]); the peer counts as gone once nothing has been
//! heard for `timeout`. The backup learns where to send from the first valid datagram of the
//! primary.
//!
//! **Authenticated and replay-protected.** A datagram is `FTVMHB02 | sequence u64 | sender's
//! clock u64 (ms) | role u8`, then a 16-byte truncated HMAC-SHA256 under the *channel
//! session's* heartbeat key ([`SessionKey`]: derived from the pair's key and the Noise
//! handshake hash of the logging channel both sides just opened), so:
//! - a stranger without the key cannot forge one, and a heartbeat recorded from any earlier
//!   session (an old pair of the same hosts, another VM under the same key file) fails its tag:
//!   the handshake hash is new for every session (both sides' fresh ephemeral keys);
//! - within the session, each sender counts up from 0 and the receiver takes only a sequence
//!   above the last it took: a replayed datagram, or one reordered behind a later one, is
//!   refused (it would say nothing new anyway);
//! - our own datagram reflected back carries our role and is refused;
//! - a datagram held back on the way (a man in the middle that withholds heartbeats to release
//!   them after the peer died, to hide its death) is refused once later than the fastest
//!   delivery seen by more than the failure timeout ([`Checker`]).
//!
//! Every refusal is counted ([`Liveness::rejected`]) and logged with the sender's address, at
//! most one line per address per 10 s ([`crate::refusals`]). We kept HMAC over UDP rather than
//! sending heartbeats on the Noise channel: the point of a heartbeat is to be independent of
//! the TCP stream (a stream stuck behind a full window still lets heartbeats through), and
//! Noise's transport mode needs in-order delivery, which UDP does not give.

use crate::auth::{self, Key, TAG_LEN};
use crate::refusals::{self, Refusals};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MAGIC: &[u8; 8] = b"FTVMHB02";
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
    /// Datagrams refused: garbage, bad tag (forged, another session's), reflected, replayed or
    /// reordered behind a later one.
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

/// The key one channel session's heartbeats are tagged with: `HMAC-SHA256(pair key,
/// "ftvm-heartbeat-key" | handshake hash)`. The handshake hash ([`crate::wire::MsgReader::binding`])
/// is the same on both ends of one Noise handshake and differs for every other (fresh ephemeral
/// keys on both sides), so a heartbeat of any other session — an earlier pair of these hosts,
/// another VM under the same key file, a recording — fails its tag here.
#[derive(Clone)]
pub struct SessionKey(Key);

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

impl SessionKey {
    /// The heartbeat key of the channel session whose handshake hash is `binding`.
    pub fn new(pair: &Key, binding: &[u8; 32]) -> SessionKey {
        let k = pair.mac(&[b"ftvm-heartbeat-key", binding]);
        SessionKey(Key::new(k.to_vec()).unwrap_or_else(|| unreachable!("32 bytes >= MIN_KEY_LEN")))
    }
}

fn datagram(key: &SessionKey, seq: u64, sent_ms: u64, role: u8) -> Vec<u8> {
    let mut d = MAGIC.to_vec();
    d.extend_from_slice(&seq.to_le_bytes());
    d.extend_from_slice(&sent_ms.to_le_bytes());
    d.push(role);
    let tag = key.0.mac(&[b"ftvm-heartbeat", &d]);
    d.extend_from_slice(&tag[..TAG_LEN]);
    d
}

/// Why a datagram was not taken as a sign of life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Not a heartbeat of this version at all.
    #[error("not an ftvm heartbeat (wrong size or magic)")]
    Garbage,
    /// The tag does not verify: forged, altered, another session's or another key's.
    #[error("its tag does not verify under this channel session's heartbeat key (forged, altered, or from another session)")]
    Unauthentic,
    /// Authentic but sent by our own role: a reflection of our own datagram.
    #[error("it carries our own role (our own heartbeat reflected back)")]
    Reflected,
    /// Authentic but not newer than the last one taken: replayed, or reordered behind a later one.
    #[error("sequence {seq} is not above the last one taken ({last}): replayed or reordered")]
    Stale {
        /// The datagram's sequence number.
        seq: u64,
        /// The highest taken so far.
        last: u64,
    },
    /// Authentic and newer, but held back on the way longer than the failure timeout (a
    /// man in the middle that withheld heartbeats to release them after the peer died).
    #[error("it arrived {late_ms} ms later than the fastest of this session's heartbeats (more than the failure timeout)")]
    Late {
        /// How much later than the fastest delivery seen.
        late_ms: u64,
    },
}

/// The receiving end's check of the peer's datagrams: authentic under the session key, of the
/// peer's role, with a sequence number above every one taken so far (the sender counts up from
/// 0 for the session's life; the session key makes the counter unique to this session), and
/// not held back on the way: each datagram carries the sender's clock (milliseconds since its
/// heartbeat started); `receiver's clock - sender's clock` is the offset between the two plus
/// the delivery time, so its smallest value seen is the offset plus the fastest delivery, and
/// a datagram above that by more than `max_delay` was delayed (hosts' monotonic clocks drift
/// by parts per million, nothing at this scale).
#[derive(Debug)]
pub struct Checker {
    key: SessionKey,
    peer_role: u8,
    max_delay_ms: u64,
    last: Option<u64>,
    min_offset: Option<i128>,
}

impl Checker {
    /// Checks the datagrams of `peer_role` under `key`, refusing those delayed by more than
    /// `max_delay` (the failure timeout: a heartbeat that old says nothing about now).
    pub fn new(key: SessionKey, peer_role: u8, max_delay: Duration) -> Checker {
        Checker {
            key,
            peer_role,
            max_delay_ms: max_delay.as_millis() as u64,
            last: None,
            min_offset: None,
        }
    }

    /// Takes `d`, received when the receiver's clock read `now_ms` (returning its sequence
    /// number), or says why not; a refused datagram changes nothing.
    pub fn check(&mut self, d: &[u8], now_ms: u64) -> Result<u64, Refused> {
        if d.len() != LEN + TAG_LEN || &d[..8] != MAGIC {
            return Err(Refused::Garbage);
        }
        let tag = self.key.0.mac(&[b"ftvm-heartbeat", &d[..LEN]]);
        if !auth::equal(&d[LEN..], &tag[..TAG_LEN]) {
            return Err(Refused::Unauthentic);
        }
        if d[24] != self.peer_role {
            return Err(Refused::Reflected);
        }
        let word = |at: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&d[at..at + 8]);
            u64::from_le_bytes(w)
        };
        let (seq, sent_ms) = (word(8), word(16));
        if let Some(last) = self.last.filter(|l| seq <= *l) {
            return Err(Refused::Stale { seq, last });
        }
        let offset = i128::from(now_ms) - i128::from(sent_ms);
        let min = self.min_offset.map_or(offset, |m| m.min(offset));
        let late = offset - min;
        if late > i128::from(self.max_delay_ms) {
            return Err(Refused::Late {
                late_ms: u64::try_from(late).unwrap_or(u64::MAX),
            });
        }
        self.min_offset = Some(min);
        self.last = Some(seq);
        Ok(seq)
    }
}

/// One side's heartbeat.
pub struct Heartbeat {
    /// The UDP socket to send and receive on.
    pub socket: UdpSocket,
    /// Where to send; `None`: to whoever sent the first valid datagram of `peer_role`.
    pub peer: Option<SocketAddr>,
    /// This channel session's heartbeat key.
    pub key: SessionKey,
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
/// primary (sending to `peer`), 1 for the backup (`peer`: `None`, whoever answers), under the
/// heartbeat key of their channel session. Returns where its signs of life are noted and the
/// flag that stops it.
pub fn start(
    socket: UdpSocket,
    peer: Option<SocketAddr>,
    key: SessionKey,
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
    socket.set_read_timeout(Some(cfg.interval))?;
    let rx = socket.try_clone()?;
    {
        let (key, peer, stop) = (key.clone(), Arc::clone(&peer), Arc::clone(&stop));
        std::thread::Builder::new()
            .name("heartbeat-tx".into())
            .spawn(move || {
                let mut seq = 0u64;
                let t0 = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    let to = peer.lock().ok().and_then(|p| *p);
                    if let Some(to) = to {
                        let now = t0.elapsed().as_millis() as u64;
                        let _ = socket.send_to(&datagram(&key, seq, now, role), to);
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
            let mut checker = Checker::new(key, peer_role, cfg.timeout);
            let t0 = Instant::now();
            let log = Refusals::new("heartbeat", refusals::DEFAULT_INTERVAL);
            while !stop.load(Ordering::Relaxed) {
                let Ok((n, from)) = rx.recv_from(&mut buf) else {
                    continue;
                };
                match checker.check(&buf[..n], t0.elapsed().as_millis() as u64) {
                    Ok(_) => {
                        if let Ok(mut p) = peer.lock() {
                            p.get_or_insert(from);
                        }
                        live.received.fetch_add(1, Ordering::Relaxed);
                        live.heard();
                    }
                    Err(why) => {
                        live.rejected.fetch_add(1, Ordering::Relaxed);
                        log.refused(from, from.ip(), &why.to_string());
                    }
                }
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> (Key, SessionKey) {
        let pair = Key::random();
        let k = SessionKey::new(&pair, &[7; 32]);
        (pair, k)
    }

    const LONG: Duration = Duration::from_secs(60);

    #[test]
    fn forged_altered_garbage_and_other_sessions_datagrams_are_refused() {
        let (pair, k) = session();
        let mut c = Checker::new(k.clone(), 1, LONG);
        let d = datagram(&k, 4, 0, 1);
        // Another key, another session of the same pair key, a bit flipped, cut short.
        let stranger = SessionKey::new(&Key::random(), &[7; 32]);
        let other_session = SessionKey::new(&pair, &[8; 32]);
        assert_eq!(
            c.check(&datagram(&stranger, 4, 0, 1), 0),
            Err(Refused::Unauthentic)
        );
        assert_eq!(
            c.check(&datagram(&other_session, 4, 0, 1), 0),
            Err(Refused::Unauthentic)
        );
        for at in [8, 16, 20, 24, LEN + 3] {
            let mut bad = d.clone();
            bad[at] ^= 1;
            assert_eq!(c.check(&bad, 0), Err(Refused::Unauthentic), "bit at {at}");
        }
        assert_eq!(c.check(&d[..10], 0), Err(Refused::Garbage));
        assert_eq!(c.check(b"FTVMHB01 and something", 0), Err(Refused::Garbage));
        // None of that moved the checker: the genuine datagram is taken.
        assert_eq!(c.check(&d, 0), Ok(4));
    }

    #[test]
    fn replayed_reordered_and_reflected_datagrams_are_refused() {
        let (_, k) = session();
        let mut c = Checker::new(k.clone(), 1, LONG);
        assert_eq!(c.check(&datagram(&k, 0, 0, 1), 0), Ok(0));
        assert_eq!(c.check(&datagram(&k, 5, 250, 1), 250), Ok(5));
        // The same datagram again.
        assert_eq!(
            c.check(&datagram(&k, 5, 250, 1), 260),
            Err(Refused::Stale { seq: 5, last: 5 })
        );
        // An older one arriving after a later one (reordered, or replayed from a recording).
        assert_eq!(
            c.check(&datagram(&k, 3, 150, 1), 260),
            Err(Refused::Stale { seq: 3, last: 5 })
        );
        // Our own (role 0) sent back to us.
        assert_eq!(
            c.check(&datagram(&k, 9, 450, 0), 460),
            Err(Refused::Reflected)
        );
        assert_eq!(c.check(&datagram(&k, 6, 300, 1), 300), Ok(6));
    }

    #[test]
    fn a_datagram_held_back_longer_than_the_timeout_is_refused() {
        let (_, k) = session();
        let mut c = Checker::new(k.clone(), 1, Duration::from_millis(500));
        // The receiver's clock runs 1000 ms ahead of the sender's; deliveries take 1-3 ms.
        assert_eq!(c.check(&datagram(&k, 0, 0, 1), 1003), Ok(0));
        assert_eq!(c.check(&datagram(&k, 1, 50, 1), 1051), Ok(1));
        // A man in the middle withheld seq 2 (sent at 100) and releases it 2 s later.
        assert_eq!(
            c.check(&datagram(&k, 2, 100, 1), 3100),
            Err(Refused::Late { late_ms: 1999 })
        );
        // Withheld for less than the timeout: still news.
        assert_eq!(c.check(&datagram(&k, 3, 150, 1), 1400), Ok(3));
        assert_eq!(c.check(&datagram(&k, 4, 200, 1), 1201), Ok(4));
    }

    fn cfg() -> HeartbeatConfig {
        HeartbeatConfig {
            interval: Duration::from_millis(10),
            timeout: Duration::from_millis(100),
        }
    }

    fn side(
        socket: UdpSocket,
        peer: Option<SocketAddr>,
        key: &SessionKey,
        role: u8,
    ) -> (Arc<Liveness>, Arc<AtomicBool>) {
        let live = Arc::new(Liveness::default());
        let stop = Arc::new(AtomicBool::new(false));
        spawn(Heartbeat {
            socket,
            peer,
            key: key.clone(),
            role,
            peer_role: u8::from(role == 0),
            cfg: cfg(),
            live: Arc::clone(&live),
            stop: Arc::clone(&stop),
        })
        .unwrap();
        (live, stop)
    }

    fn wait_until(what: &str, f: impl Fn() -> bool) {
        let t0 = Instant::now();
        while !f() {
            assert!(t0.elapsed() < Duration::from_secs(10), "{what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn two_sides_hear_each_other_and_notice_silence() {
        let (_, k) = session();
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b_addr = b.local_addr().unwrap();
        let (la, stop_a) = side(a, Some(b_addr), &k, 0);
        let (lb, stop_b) = side(b, None, &k, 1);
        wait_until("both sides hear each other", || {
            la.received.load(Ordering::Relaxed) >= 5 && lb.received.load(Ordering::Relaxed) >= 5
        });
        stop_b.store(true, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            la.silence() >= Duration::from_millis(150),
            "a notices b is gone"
        );
        stop_a.store(true, Ordering::Relaxed);
        assert_eq!(la.rejected.load(Ordering::Relaxed), 0);
        assert_eq!(lb.rejected.load(Ordering::Relaxed), 0);
    }

    /// A man in the middle records the primary's heartbeats, and once the primary is dead
    /// replays them (and another session's) to the backup: the backup still notices the
    /// silence, and counts every replayed datagram as refused.
    #[test]
    fn replaying_recorded_heartbeats_does_not_hide_a_dead_peer() {
        let (pair, k) = session();
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let proxy = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (a_addr, b_addr, p_addr) = (
            a.local_addr().unwrap(),
            b.local_addr().unwrap(),
            proxy.local_addr().unwrap(),
        );
        proxy
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let recorded = Arc::new(Mutex::new(Vec::<Vec<u8>>::new()));
        let stop_proxy = Arc::new(AtomicBool::new(false));
        let relay = {
            let (proxy, recorded, stop) = (
                proxy.try_clone().unwrap(),
                Arc::clone(&recorded),
                Arc::clone(&stop_proxy),
            );
            std::thread::spawn(move || {
                let mut buf = [0u8; 128];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, from)) = proxy.recv_from(&mut buf) else {
                        continue;
                    };
                    if from == a_addr {
                        recorded.lock().unwrap().push(buf[..n].to_vec());
                        let _ = proxy.send_to(&buf[..n], b_addr);
                    } else {
                        let _ = proxy.send_to(&buf[..n], a_addr);
                    }
                }
            })
        };
        let (la, stop_a) = side(a, Some(p_addr), &k, 0);
        let (lb, stop_b) = side(b, None, &k, 1);
        wait_until("both sides hear each other through the proxy", || {
            la.received.load(Ordering::Relaxed) >= 5 && lb.received.load(Ordering::Relaxed) >= 5
        });
        // The primary dies; the proxy stops relaying and replays what it recorded instead.
        stop_a.store(true, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(30));
        stop_proxy.store(true, Ordering::Relaxed);
        relay.join().unwrap();
        let recorded = recorded.lock().unwrap().clone();
        let received = lb.received.load(Ordering::Relaxed);
        let rejected = lb.rejected.load(Ordering::Relaxed);
        let other = SessionKey::new(&pair, &[9; 32]);
        let t0 = Instant::now();
        let mut replayed = 0u64;
        while t0.elapsed() < Duration::from_millis(400) {
            for d in recorded.iter().rev() {
                proxy.send_to(d, b_addr).unwrap();
                replayed += 1;
            }
            // Fresh sequence numbers, but under another session's key.
            proxy
                .send_to(&datagram(&other, 1 << 40, 0, 0), b_addr)
                .unwrap();
            replayed += 1;
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            lb.silence() >= Duration::from_millis(300),
            "the backup notices the primary is gone despite the replays (silence {:?})",
            lb.silence()
        );
        assert_eq!(
            lb.received.load(Ordering::Relaxed),
            received,
            "no replayed datagram counts as a sign of life"
        );
        // (Loopback UDP may drop some under load: at least half arrive and are counted.)
        wait_until("the replayed datagrams are counted as refused", || {
            lb.rejected.load(Ordering::Relaxed) >= rejected + replayed / 2
        });
        stop_b.store(true, Ordering::Relaxed);
        let _ = la;
    }
}
