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

use crate::rx::{bump, Monitor, Shared};
use crate::{HostNetError, StreamAddr, MAX_FRAME};
use machine::virtio::NetBackend;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::RawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How long one frame's write may take before the connection is given up.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

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
    sock: Sock,
    shared: Arc<Shared>,
    reader: Option<JoinHandle<()>>,
    out: Vec<u8>,
    what: String,
}

impl StreamBackend {
    /// Connects to `addr`.
    pub fn connect(addr: &StreamAddr) -> Result<StreamBackend, HostNetError> {
        let what = addr.to_string();
        let err = |source| HostNetError::Connect {
            what: what.clone(),
            source,
        };
        let sock = match addr {
            StreamAddr::Unix(p) => Sock::Unix(UnixStream::connect(p).map_err(err)?),
            StreamAddr::Tcp(a) => {
                let s = TcpStream::connect(a.as_str()).map_err(err)?;
                let _ = s.set_nodelay(true);
                Sock::Tcp(s)
            }
        };
        StreamBackend::start(sock, what)
    }

    /// A backend on an already connected unix socket (tests, socket pairs).
    pub fn from_unix(sock: UnixStream) -> Result<StreamBackend, HostNetError> {
        StreamBackend::start(Sock::Unix(sock), "a unix socket".into())
    }

    fn start(sock: Sock, what: String) -> Result<StreamBackend, HostNetError> {
        sock.set_write_timeout(WRITE_TIMEOUT)
            .map_err(HostNetError::Setup)?;
        let shared = Shared::new().map_err(HostNetError::Setup)?;
        let mut rd = sock.try_clone().map_err(HostNetError::Setup)?;
        let sh = Arc::clone(&shared);
        let name = what.clone();
        let reader = std::thread::Builder::new()
            .name("ftvm-netdev-stream".into())
            .spawn(move || {
                let why = read_frames(&mut rd, &sh);
                sh.close(format!("{name}: {why}"));
            })
            .map_err(HostNetError::Setup)?;
        Ok(StreamBackend {
            sock,
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
        match self.sock.write_all(&self.out) {
            Ok(()) => bump(&self.shared.counters.tx_frames),
            Err(e) => {
                bump(&self.shared.counters.tx_dropped);
                self.shared
                    .close(format!("{}: write failed: {e}", self.what));
                self.sock.shutdown();
            }
        }
    }

    fn receive(&mut self) -> Option<Vec<u8>> {
        self.shared.pop()
    }

    fn wake_fd(&self) -> Option<RawFd> {
        Some(self.shared.wake_fd())
    }
}

impl Drop for StreamBackend {
    fn drop(&mut self) {
        // The reader sees the end of the stream and stops.
        self.sock.shutdown();
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
        assert!(b.wake_fd().is_some());
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
}
