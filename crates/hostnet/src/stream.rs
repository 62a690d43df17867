//! [`StreamBackend`]: QEMU's `-netdev stream` framing over a unix socket or TCP: every frame is
//! preceded by its length as a 4-byte big-endian integer, in both directions.
//!
//! A reader thread parses the incoming stream into the bounded queue of [`crate::rx`]. A length
//! above [`crate::MAX_FRAME`] is skipped (its bytes read and thrown away, so the stream stays
//! in step) and counted; a stream that ends inside a length prefix or a frame counts one
//! truncated frame; the end of the stream, or an error, closes the backend, which is then
//! reported by [`StreamBackend::closed`] and counted per frame the guest still sends.
//!
//! Frames the guest sends go into a bounded queue that a writer thread writes out (several
//! frames per write when they have piled up): the machine never waits for the peer. It must
//! not: the reader stops reading while the guest's receive queue is full (so that the peer's
//! own flow control holds data back instead of frames being lost), and passt, blocked writing
//! the rest of a frame to us, reads nothing meanwhile. A machine that waited in a write to
//! passt would then never drain its receive queue, and both would stand still until the write
//! timed out (whole seconds without traffic, seen after failovers). When the queue is full,
//! frames are dropped and counted, as a NIC's full transmit ring drops them. A write still has
//! a timeout; a failed or timed-out write closes the connection (its framing can no longer be
//! trusted).
//!
//! A backend that connected to an address itself ([`StreamBackend::connect`]) connects again
//! when the connection ends, every 10 ms at first and then at most every second, until it is
//! dropped (frames the guest sends meanwhile are dropped and counted, as a cable pulled out
//! would lose them). That is what a VM going live needs: passt serves one VM at a time and
//! turns away a second connection while it still holds the dead primary's, so the first
//! attempt, made milliseconds after the primary died, can be refused before passt has
//! noticed; it also rides out a restart of the host end.

use crate::rx::{bump, Monitor, Shared};
use crate::{HostNetError, StreamAddr, MAX_FRAME};
use machine::virtio::NetBackend;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long one write may take before the connection is given up.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// At most this many bytes of queued frames go out in one write.
const WRITE_BATCH: usize = 256 << 10;

/// The first wait before connecting again, doubled after each failure up to [`RECONNECT_MAX`].
const RECONNECT_FIRST: Duration = Duration::from_millis(10);
const RECONNECT_MAX: Duration = Duration::from_secs(1);

/// A connected socket of either family.
enum Sock {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Sock {
    fn try_clone(&self) -> io::Result<Sock> {
        Ok(match self {
            Sock::Unix(s) => Sock::Unix(s.try_clone()?),
            Sock::Tcp(s) => Sock::Tcp(s.try_clone()?),
        })
    }
    fn shutdown(&self) {
        let _ = match self {
            Sock::Unix(s) => s.shutdown(Shutdown::Both),
            Sock::Tcp(s) => s.shutdown(Shutdown::Both),
        };
    }
    fn set_write_timeout(&self, t: Duration) -> io::Result<()> {
        match self {
            Sock::Unix(s) => s.set_write_timeout(Some(t)),
            Sock::Tcp(s) => s.set_write_timeout(Some(t)),
        }
    }
}

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Sock::Unix(s) => s.read(buf),
            Sock::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Sock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sock::Unix(s) => s.write(buf),
            Sock::Tcp(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The connection frames are written to, and how many times the reader has replaced it.
struct Conn {
    sock: Sock,
    generation: u64,
}

/// Framed frames (length prefix and bytes) waiting for the writer thread.
#[derive(Default)]
struct TxQueue {
    frames: Mutex<VecDeque<Vec<u8>>>,
    more: Condvar,
}

/// A network backend on a stream socket (passt, `qemu -netdev stream,server=on`, ...).
pub struct StreamBackend {
    /// The connection; the reader swaps in a new one when it reconnects.
    conn: Arc<Mutex<Conn>>,
    /// Set when the backend is dropped: the reader stops instead of connecting again, and the
    /// writer ends.
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
    tx: Arc<TxQueue>,
    reader: Option<JoinHandle<()>>,
    writer: Option<JoinHandle<()>>,
}

impl StreamBackend {
    /// Connects to `addr` (and again whenever the connection ends; see the module doc).
    pub fn connect(addr: &StreamAddr) -> Result<StreamBackend, HostNetError> {
        let what = addr.to_string();
        let sock = connect_sock(addr).map_err(|source| HostNetError::Connect {
            what: what.clone(),
            source,
        })?;
        StreamBackend::start(sock, what, Some(addr.clone()))
    }

    /// A backend on an already connected unix socket (tests, socket pairs); it ends with the
    /// connection.
    pub fn from_unix(sock: UnixStream) -> Result<StreamBackend, HostNetError> {
        StreamBackend::start(Sock::Unix(sock), "a unix socket".into(), None)
    }

    fn start(
        sock: Sock,
        what: String,
        addr: Option<StreamAddr>,
    ) -> Result<StreamBackend, HostNetError> {
        sock.set_write_timeout(WRITE_TIMEOUT)
            .map_err(HostNetError::Setup)?;
        let shared = Shared::new();
        let rd = sock.try_clone().map_err(HostNetError::Setup)?;
        let conn = Arc::new(Mutex::new(Conn {
            sock,
            generation: 0,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let tx = Arc::new(TxQueue::default());
        let reconnects = addr.is_some();
        let writer = {
            let (sh, conn, stop, tx) = (
                Arc::clone(&shared),
                Arc::clone(&conn),
                Arc::clone(&stop),
                Arc::clone(&tx),
            );
            let name = what.clone();
            std::thread::Builder::new()
                .name("ftvm-netdev-tx".into())
                .spawn(move || write_frames(&tx, &sh, &conn, &stop, reconnects, &name))
                .map_err(HostNetError::Setup)?
        };
        let mut backend = StreamBackend {
            conn,
            stop,
            shared,
            tx,
            reader: None,
            writer: Some(writer),
        };
        // (Dropping `backend` on an error below stops the writer.)
        let (sh, wr, stop) = (
            Arc::clone(&backend.shared),
            Arc::clone(&backend.conn),
            Arc::clone(&backend.stop),
        );
        backend.reader = Some(
            std::thread::Builder::new()
                .name("ftvm-netdev-stream".into())
                .spawn(move || read_and_reconnect(rd, &sh, &wr, &stop, addr.as_ref(), &what))
                .map_err(HostNetError::Setup)?,
        );
        Ok(backend)
    }

    /// A handle on the counters that stays valid after the backend is given away.
    pub fn monitor(&self) -> Monitor {
        Monitor(Arc::clone(&self.shared))
    }

    /// Why the connection ended, once it has (the peer closed it, an error, a truncated frame).
    pub fn closed(&self) -> Option<String> {
        self.shared.stats().closed
    }
}

/// Connects a socket to `addr`, with the write timeout set.
fn connect_sock(addr: &StreamAddr) -> io::Result<Sock> {
    let sock = match addr {
        StreamAddr::Unix(p) => Sock::Unix(UnixStream::connect(p)?),
        StreamAddr::Tcp(a) => {
            let s = TcpStream::connect(a.as_str())?;
            let _ = s.set_nodelay(true);
            Sock::Tcp(s)
        }
    };
    sock.set_write_timeout(WRITE_TIMEOUT)?;
    Ok(sock)
}

/// The reader thread: fills the queue until the stream ends; then, with an address, connects
/// again (swapping the writer's socket) and goes on, until the backend is dropped; without
/// one, or once stopped, notes why the connection ended.
fn read_and_reconnect(
    mut rd: Sock,
    sh: &Shared,
    wr: &Mutex<Conn>,
    stop: &AtomicBool,
    addr: Option<&StreamAddr>,
    name: &str,
) {
    loop {
        let why = read_frames(&mut rd, sh, stop);
        let Some(addr) = addr.filter(|_| !stop.load(Ordering::SeqCst)) else {
            sh.close(format!("{name}: {why}"));
            return;
        };
        let mut wait = RECONNECT_FIRST;
        rd = loop {
            std::thread::sleep(wait);
            if stop.load(Ordering::SeqCst) {
                sh.close(format!("{name}: {why}"));
                return;
            }
            let fresh = connect_sock(addr).and_then(|s| Ok((s.try_clone()?, s)));
            match fresh {
                Ok((r, w)) => {
                    if let Ok(mut g) = wr.lock() {
                        g.sock = w;
                        g.generation += 1;
                    }
                    bump(&sh.counters.reconnects);
                    break r;
                }
                Err(_) => wait = (wait * 2).min(RECONNECT_MAX),
            }
        };
    }
}

/// Fills the queue from the stream until it ends (or the backend is dropped); returns why it
/// ended. A full queue is waited on, not dropped from ([`Shared::push_waiting`]).
fn read_frames(r: &mut impl Read, sh: &Shared, stop: &AtomicBool) -> String {
    let mut len = [0u8; 4];
    loop {
        match read_full(r, &mut len) {
            Ok(0) => return "the peer closed the connection".into(),
            Ok(4) => {}
            Ok(_) => {
                bump(&sh.counters.rx_truncated);
                return "the stream ended inside a length prefix".into();
            }
            Err(e) => return format!("read failed: {e}"),
        }
        let n = u32::from_be_bytes(len) as usize;
        if n > MAX_FRAME {
            bump(&sh.counters.rx_oversized);
            let skipped = io::copy(&mut r.take(n as u64), &mut io::sink());
            if !matches!(skipped, Ok(k) if k == n as u64) {
                bump(&sh.counters.rx_truncated);
                return "the stream ended inside an oversized frame".into();
            }
            continue;
        }
        let mut frame = vec![0u8; n];
        match read_full(r, &mut frame) {
            Ok(k) if k == n => {
                if !sh.push_waiting(frame, stop) {
                    return "the backend was closed".into();
                }
            }
            Ok(_) => {
                bump(&sh.counters.rx_truncated);
                return "the stream ended inside a frame".into();
            }
            Err(e) => return format!("read failed: {e}"),
        }
    }
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match r.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(k) => done += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// The writer thread: writes queued frames out in order, several per write, until the backend
/// is dropped. It writes on its own copy of the connection's socket, taken again whenever the
/// reader has connected anew, so that nobody waits for the connection's lock during a write.
fn write_frames(
    tx: &TxQueue,
    sh: &Shared,
    conn: &Mutex<Conn>,
    stop: &AtomicBool,
    reconnects: bool,
    name: &str,
) {
    let mut mine: Option<(u64, Sock)> = None;
    let mut batch = Vec::new();
    loop {
        let mut n = 0u64;
        batch.clear();
        {
            let Ok(mut q) = tx.frames.lock() else { return };
            while q.is_empty() && !stop.load(Ordering::SeqCst) {
                q = match tx.more.wait(q) {
                    Ok(q) => q,
                    Err(_) => return,
                };
            }
            if stop.load(Ordering::SeqCst) {
                return;
            }
            while let Some(f) = q.front() {
                if n > 0 && batch.len() + f.len() > WRITE_BATCH {
                    break;
                }
                batch.extend_from_slice(f);
                q.pop_front();
                n += 1;
            }
        }
        match conn.lock() {
            Ok(c) => {
                if mine.as_ref().is_none_or(|(g, _)| *g != c.generation) {
                    mine = c.sock.try_clone().ok().map(|s| (c.generation, s));
                }
            }
            Err(_) => return,
        }
        let written = match &mut mine {
            Some((_, s)) => s.write_all(&batch),
            None => Err(io::Error::other("the socket could not be duplicated")),
        };
        match written {
            Ok(()) => {
                sh.counters.tx_frames.fetch_add(n, Ordering::Relaxed);
            }
            Err(e) => {
                sh.counters.tx_dropped.fetch_add(n, Ordering::Relaxed);
                // Its framing can no longer be trusted: end this connection. A backend with
                // an address connects again (the reader sees the end); one without is closed.
                if !reconnects {
                    sh.close(format!("{name}: write failed: {e}"));
                }
                if let Some((_, s)) = &mine {
                    s.shutdown();
                }
            }
        }
    }
}

impl NetBackend for StreamBackend {
    /// Queues the frame for the writer thread; never waits for the peer.
    fn transmit(&mut self, frame: &[u8]) {
        let Ok(len) = u32::try_from(frame.len()) else {
            bump(&self.shared.counters.tx_dropped);
            return;
        };
        if self.shared.is_closed() {
            bump(&self.shared.counters.tx_dropped);
            return;
        }
        let Ok(mut q) = self.tx.frames.lock() else {
            bump(&self.shared.counters.tx_dropped);
            return;
        };
        if q.len() >= crate::TX_QUEUE_FRAMES {
            bump(&self.shared.counters.tx_queue_full);
            return;
        }
        let mut out = Vec::with_capacity(4 + frame.len());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(frame);
        q.push_back(out);
        drop(q);
        self.tx.more.notify_one();
    }

    fn receive(&mut self) -> Option<Vec<u8>> {
        self.shared.pop()
    }

    fn set_wake(&mut self, wake: &machine::wake::Waker) {
        self.shared.set_wake(wake);
    }
}

impl Drop for StreamBackend {
    fn drop(&mut self) {
        // The reader sees the end of the stream and, told to stop, does not connect again; the
        // writer, woken, ends (a write under way fails on the shut-down socket).
        self.stop.store(true, Ordering::SeqCst);
        if let Ok(c) = self.conn.lock() {
            c.sock.shutdown();
        }
        if let Ok(_q) = self.tx.frames.lock() {
            self.tx.more.notify_all();
        }
        for t in [self.reader.take(), self.writer.take()]
            .into_iter()
            .flatten()
        {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
        let t = Instant::now();
        while !f() {
            assert!(t.elapsed() < Duration::from_secs(5), "timed out: {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn frame(len: usize, fill: u8) -> Vec<u8> {
        let mut v = (len as u32).to_be_bytes().to_vec();
        v.extend(std::iter::repeat_n(fill, len));
        v
    }

    #[test]
    fn frames_both_ways() {
        let (a, mut peer) = UnixStream::pair().unwrap();
        let mut b = StreamBackend::from_unix(a).unwrap();
        peer.write_all(&frame(60, 1)).unwrap();
        peer.write_all(&frame(1514, 2)).unwrap();
        wait_for("two frames", || b.monitor().stats().rx_frames == 2);
        assert_eq!(b.receive(), Some(vec![1; 60]));
        assert_eq!(b.receive(), Some(vec![2; 1514]));
        assert_eq!(b.receive(), None);
        b.transmit(&[9; 42]);
        let mut got = vec![0; 46];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(got, frame(42, 9));
        wait_for("one frame sent", || b.monitor().stats().tx_frames == 1);
    }

    /// The machine never waits for a peer that does not read: frames beyond the transmit
    /// queue are dropped and counted, the connection stays up, and what was queued arrives in
    /// order once the peer reads.
    #[test]
    fn a_peer_that_does_not_read_never_holds_the_machine() {
        let (a, mut peer) = UnixStream::pair().unwrap();
        let mut b = StreamBackend::from_unix(a).unwrap();
        // Far more than the socket's buffer and the queue hold; a blocking transmit would sit
        // out the write timeout and then close the connection.
        let n = 4 * crate::TX_QUEUE_FRAMES + 4096;
        for i in 0..n {
            b.transmit(&[(i % 251) as u8; 1500]);
        }
        assert!(b.closed().is_none(), "{:?}", b.closed());
        let dropped = b.monitor().stats().tx_queue_full;
        assert!(dropped > 0, "the queue should have overflowed");
        let mut got = Vec::new();
        let mut buf = vec![0; 4 + 1500];
        peer.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        while peer.read_exact(&mut buf).is_ok() {
            assert_eq!(&buf[..4], &1500u32.to_be_bytes(), "framing kept");
            got.push(buf[4]);
        }
        assert_eq!(got.len() as u64 + dropped, n as u64);
        // In order: the first frames went out whole, then the queue's, never reordered.
        assert!(got.iter().take(16).enumerate().all(|(i, &v)| v == i as u8));
        assert!(b.closed().is_none(), "{:?}", b.closed());
        wait_for("counted", || {
            b.monitor().stats().tx_frames == got.len() as u64
        });
    }

    /// The stall seen after failovers: the peer (as passt does) finishes writing a frame to
    /// us before it reads anything, while nothing takes our received frames (the guest is not
    /// running); the machine's transmissions meanwhile must not wait for the peer, or neither
    /// side moves until the write times out.
    #[test]
    fn sending_while_the_peer_is_blocked_writing_to_us() {
        let (a, peer) = UnixStream::pair().unwrap();
        let mut b = StreamBackend::from_unix(a).unwrap();
        let mut w = peer.try_clone().unwrap();
        let writer = std::thread::spawn(move || {
            // Enough to fill our receive queue and both socket buffers.
            for i in 0..(crate::RX_QUEUE_FRAMES * 8) {
                if w.write_all(&frame(1500, i as u8)).is_err() {
                    return false;
                }
            }
            true
        });
        wait_for("the receive queue full", || {
            b.monitor().stats().rx_frames == crate::RX_QUEUE_FRAMES as u64
        });
        // (A transmit that waited for the peer would sit out the write timeout and then close
        // the connection, which is what is checked.)
        for _ in 0..crate::TX_QUEUE_FRAMES {
            b.transmit(&[1; 1500]);
        }
        assert!(b.closed().is_none(), "{:?}", b.closed());
        // The guest runs again: everything arrives.
        let mut taken = 0;
        wait_for("every frame received", || {
            while b.receive().is_some() {
                taken += 1;
            }
            taken == crate::RX_QUEUE_FRAMES * 8
        });
        assert!(writer.join().unwrap());
        let mut r = peer;
        r.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = vec![0; 4 + 1500];
        for _ in 0..crate::TX_QUEUE_FRAMES {
            r.read_exact(&mut buf).unwrap();
        }
        assert_eq!(b.monitor().stats().tx_queue_full, 0);
        assert!(b.closed().is_none(), "{:?}", b.closed());
    }

    #[test]
    fn oversized_runt_and_truncated_frames_are_dropped_and_counted() {
        let (a, mut peer) = UnixStream::pair().unwrap();
        let mut b = StreamBackend::from_unix(a).unwrap();
        peer.write_all(&frame(MAX_FRAME + 1, 3)).unwrap();
        peer.write_all(&frame(4, 4)).unwrap();
        peer.write_all(&frame(100, 5)).unwrap();
        peer.write_all(&frame(200, 6)[..50]).unwrap();
        drop(peer);
        wait_for("closed", || b.closed().is_some());
        let s = b.monitor().stats();
        assert_eq!(
            (s.rx_oversized, s.rx_runts, s.rx_frames, s.rx_truncated),
            (1, 1, 1, 1)
        );
        assert!(s.closed.unwrap().contains("inside a frame"));
        assert_eq!(b.receive(), Some(vec![5; 100]), "the good frame in between");
        b.transmit(&[0; 60]);
        assert_eq!(b.monitor().stats().tx_dropped, 1);
    }

    #[test]
    fn a_truncated_length_prefix_and_a_closed_peer() {
        let (a, mut peer) = UnixStream::pair().unwrap();
        let b = StreamBackend::from_unix(a).unwrap();
        peer.write_all(&[0, 0]).unwrap();
        drop(peer);
        wait_for("closed", || b.closed().is_some());
        assert_eq!(b.monitor().stats().rx_truncated, 1);
        assert!(b.closed().unwrap().contains("length prefix"));

        let (a, peer) = UnixStream::pair().unwrap();
        let mut b = StreamBackend::from_unix(a).unwrap();
        drop(peer);
        wait_for("closed", || b.closed().is_some());
        assert!(b.closed().unwrap().contains("the peer closed"));
        for _ in 0..3 {
            b.transmit(&[0; 60]);
        }
        assert_eq!(b.monitor().stats().tx_dropped, 3);
    }

    #[test]
    fn connect_errors_name_the_socket() {
        let e = StreamBackend::connect(&StreamAddr::Unix("/nonexistent/passt.sock".into()))
            .err()
            .unwrap();
        assert!(e.to_string().contains("/nonexistent/passt.sock"), "{e}");
    }

    #[test]
    fn tcp_works_too() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let mut b = StreamBackend::connect(&StreamAddr::Tcp(addr)).unwrap();
        let (mut peer, _) = l.accept().unwrap();
        peer.write_all(&frame(64, 7)).unwrap();
        wait_for("a frame", || b.monitor().stats().rx_frames == 1);
        assert_eq!(b.receive(), Some(vec![7; 64]));
    }

    /// passt turns away a second VM while it still holds the first one's connection: the
    /// backend that connected by address connects again, and frames flow on the new connection.
    #[test]
    fn a_connection_turned_away_is_made_again() {
        let dir = std::env::temp_dir().join(format!("ftvm-hostnet-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("reconnect.sock");
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            // The first connection is accepted and closed at once, as passt does when busy.
            drop(listener.accept().unwrap());
            let (mut peer, _) = listener.accept().unwrap();
            peer.write_all(&frame(64, 7)).unwrap();
            let mut got = vec![0; 4 + 60];
            peer.read_exact(&mut got).unwrap();
            got
        });
        let mut b = StreamBackend::connect(&StreamAddr::Unix(path.clone())).unwrap();
        wait_for("a frame on the second connection", || {
            b.monitor().stats().rx_frames == 1
        });
        assert_eq!(b.receive(), Some(vec![7; 64]));
        assert_eq!(b.monitor().stats().reconnects, 1);
        assert!(b.closed().is_none(), "{:?}", b.closed());
        b.transmit(&[5; 60]);
        assert_eq!(server.join().unwrap(), frame(60, 5));
        drop(b);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Without an address (a socket handed in), the end of the connection is the end.
    #[test]
    fn a_handed_in_socket_is_not_made_again() {
        let (a, peer) = UnixStream::pair().unwrap();
        let b = StreamBackend::from_unix(a).unwrap();
        drop(peer);
        wait_for("closed", || b.closed().is_some());
        assert_eq!(b.monitor().stats().reconnects, 0);
    }
}
