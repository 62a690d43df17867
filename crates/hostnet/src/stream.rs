//! [`StreamBackend`]: QEMU's `-netdev stream` framing over a unix socket or TCP: every frame is
//! preceded by its length as a 4-byte big-endian integer, in both directions.
//!
//! A reader thread parses the incoming stream into the bounded queue of [`crate::rx`]. A length
//! above [`crate::MAX_FRAME`] is skipped (its bytes read and thrown away, so the stream stays
//! in step) and counted; a stream that ends inside a length prefix or a frame counts one
//! truncated frame; the end of the stream, or an error, closes the backend, which is then
//! reported by [`StreamBackend::closed`] and counted per frame the guest still sends. A
//! frame's length prefix and bytes go out in one write, with a write timeout so that a stuck
//! peer cannot hold the machine for long; a failed or timed-out write closes the connection
//! (its framing can no longer be trusted).
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
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long one frame's write may take before the connection is given up.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

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

/// A network backend on a stream socket (passt, `qemu -netdev stream,server=on`, ...).
pub struct StreamBackend {
    /// The connection frames are written to; the reader swaps in a new one when it reconnects.
    sock: Arc<Mutex<Sock>>,
    /// Set when the backend is dropped: the reader stops instead of connecting again.
    stop: Arc<AtomicBool>,
    /// Whether a failed write may be retried on a new connection (the backend has an address).
    reconnects: bool,
    shared: Arc<Shared>,
    reader: Option<JoinHandle<()>>,
    out: Vec<u8>,
    what: String,
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
        let sock = Arc::new(Mutex::new(sock));
        let stop = Arc::new(AtomicBool::new(false));
        let reconnects = addr.is_some();
        let reader = {
            let (sh, wr, stop) = (Arc::clone(&shared), Arc::clone(&sock), Arc::clone(&stop));
            let name = what.clone();
            std::thread::Builder::new()
                .name("ftvm-netdev-stream".into())
                .spawn(move || read_and_reconnect(rd, &sh, &wr, &stop, addr.as_ref(), &name))
                .map_err(HostNetError::Setup)?
        };
        Ok(StreamBackend {
            sock,
            stop,
            reconnects,
            shared,
            reader: Some(reader),
            out: Vec::new(),
            what,
        })
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
    wr: &Mutex<Sock>,
    stop: &AtomicBool,
    addr: Option<&StreamAddr>,
    name: &str,
) {
    loop {
        let why = read_frames(&mut rd, sh);
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
                        *g = w;
                    }
                    bump(&sh.counters.reconnects);
                    break r;
                }
                Err(_) => wait = (wait * 2).min(RECONNECT_MAX),
            }
        };
    }
}

/// Fills the queue from the stream until it ends; returns why it ended.
fn read_frames(r: &mut impl Read, sh: &Shared) -> String {
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
            Ok(k) if k == n => sh.push(frame),
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

impl NetBackend for StreamBackend {
    fn transmit(&mut self, frame: &[u8]) {
        let Ok(len) = u32::try_from(frame.len()) else {
            bump(&self.shared.counters.tx_dropped);
            return;
        };
        if self.shared.is_closed() {
            bump(&self.shared.counters.tx_dropped);
            return;
        }
        self.out.clear();
        self.out.extend_from_slice(&len.to_be_bytes());
        self.out.extend_from_slice(frame);
        let Ok(mut sock) = self.sock.lock() else {
            bump(&self.shared.counters.tx_dropped);
            return;
        };
        match sock.write_all(&self.out) {
            Ok(()) => bump(&self.shared.counters.tx_frames),
            Err(e) => {
                bump(&self.shared.counters.tx_dropped);
                // Its framing can no longer be trusted: end this connection. A backend with
                // an address connects again (the reader sees the end); one without is closed.
                if !self.reconnects {
                    self.shared
                        .close(format!("{}: write failed: {e}", self.what));
                }
                sock.shutdown();
            }
        }
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
        // The reader sees the end of the stream and, told to stop, does not connect again.
        self.stop.store(true, Ordering::SeqCst);
        if let Ok(s) = self.sock.lock() {
            s.shutdown();
        }
        if let Some(t) = self.reader.take() {
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
        assert_eq!(b.monitor().stats().tx_frames, 1);
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
