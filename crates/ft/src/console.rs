//! The console endpoint: a TCP port per VM process where a client reads the guest's console
//! output and types its input, and where `ftvm status` and control operations come in.
//!
//! Output and input are byte streams with offsets from power-on, identical on the primary and
//! on the backup (the backup replays the same output). A client opens with
//! `CONSOLE <out_offset>` and is answered `OK <in_offset>`: the output then flows from
//! `out_offset` on, and the client sends its input again from `in_offset` (what the VM has
//! taken or will take). So a client of the old primary continues on the new one without losing
//! or repeating a byte. The backup answers `ERR` until it is live.
//!
//! Only output the output rule has released ([`crate::gate`]) reaches the endpoint
//! ([`Endpoint::publish`]).
//!
//! Other requests: `STATUS` (the status text, then the connection closes) and
//! `CONTROL pause|resume|poweroff`.

pub mod client;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Released output kept for clients that reconnect (older bytes are dropped).
pub const KEEP_OUTPUT: usize = 8 << 20;
/// Client input accepted ahead of the VM.
const MAX_INPUT: usize = 1 << 20;

/// A control operation asked for by an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Stop executing the guest (the clock stops too).
    Pause,
    /// Carry on after a pause.
    Resume,
    /// Power the VM off (both sides).
    PowerOff,
    /// A primary running alone: be protected again by the backup waiting at this address
    /// (a snapshot of the running machine starts the new backup, then the log).
    Protect(std::net::SocketAddr),
    /// A protected primary: stop, once the backup has everything, and let it go live (a
    /// planned move of the VM to the backup's host: `ftvm migrate`).
    Handover,
}

/// What else gets every status the endpoint is given.
pub type StatusHook = Box<dyn Fn(&crate::status::Status) + Send>;

#[derive(Default)]
struct State {
    /// Whether console clients are served (the backup: only once live).
    serving: bool,
    input: VecDeque<u8>,
    /// Input bytes the VM has taken.
    in_taken: u64,
    released: VecDeque<u8>,
    /// Offset of `released[0]` in the output stream.
    released_base: u64,
    controls: VecDeque<Control>,
    status: String,
    /// Who else gets every status (the Prometheus gauges, when `--metrics` serves them).
    on_status: Option<StatusHook>,
    /// Which client connection is the current one.
    client: u64,
    closed: bool,
    /// A device has something for the guest (a frame arrived): the idle loop must run.
    kicked: bool,
}

impl State {
    fn release_bytes(&mut self, b: &[u8]) {
        self.released.extend(b);
        let over = self.released.len().saturating_sub(KEEP_OUTPUT);
        if over > 0 {
            self.released.drain(..over);
            self.released_base += over as u64;
        }
    }

    fn out_end(&self) -> u64 {
        self.released_base + self.released.len() as u64
    }
}

/// The endpoint's shared state; clones share it.
#[derive(Clone, Default)]
pub struct Endpoint {
    inner: Arc<(Mutex<State>, Condvar)>,
    /// The run loop's wake-up ([`Endpoint::set_waker`]).
    waker: Arc<Mutex<machine::wake::Waker>>,
}

impl Endpoint {
    /// An endpoint; `serving` says whether console clients are served yet.
    pub fn new(serving: bool) -> Endpoint {
        let e = Endpoint::default();
        e.lock().serving = serving;
        e
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        match self.inner.0.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn notify(&self) {
        self.inner.1.notify_all();
    }

    /// Work for the run loop arrived (input, a control operation, a kick): wakes whoever waits
    /// on the endpoint and the run loop's wake-up. (Output released or a client connecting is
    /// no work for the loop: only [`Endpoint::notify`].)
    fn work_arrived(&self) {
        self.notify();
        if let Ok(w) = self.waker.lock() {
            w.wake();
        }
    }

    /// The run loop's wake-up: client input, control operations and kicks signal it too, so
    /// that a loop waiting on it (while its guest idles) looks at the endpoint.
    pub fn set_waker(&self, waker: machine::wake::Waker) {
        if let Ok(mut w) = self.waker.lock() {
            *w = waker;
        }
    }

    /// Listens for clients on `listener` (a thread per connection).
    pub fn serve(&self, listener: TcpListener) -> std::io::Result<()> {
        let e = self.clone();
        std::thread::Builder::new()
            .name("console-accept".into())
            .spawn(move || {
                for s in listener.incoming() {
                    if e.lock().closed {
                        break;
                    }
                    let Ok(s) = s else { continue };
                    let e = e.clone();
                    let _ = std::thread::Builder::new()
                        .name("console-client".into())
                        .spawn(move || e.client(s));
                }
            })?;
        Ok(())
    }

    fn client(&self, s: TcpStream) {
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let Ok(rs) = s.try_clone() else { return };
        let mut r = BufReader::new(rs);
        let mut line = String::new();
        if r.by_ref().take(256).read_line(&mut line).is_err() {
            return;
        }
        let _ = s.set_read_timeout(None);
        let mut w = s;
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["STATUS"] => {
                let text = self.lock().status.clone();
                let _ = w.write_all(text.as_bytes());
            }
            ["CONTROL", op] | ["CONTROL", op, _] => {
                let c = match (*op, words.get(2)) {
                    ("pause", None) => Control::Pause,
                    ("resume", None) => Control::Resume,
                    ("poweroff", None) => Control::PowerOff,
                    ("handover", None) => Control::Handover,
                    ("protect", Some(a)) => match a.parse() {
                        Ok(a) => Control::Protect(a),
                        Err(_) => {
                            let _ = w.write_all(b"ERR protect needs the backup's HOST:PORT\n");
                            return;
                        }
                    },
                    _ => {
                        let _ = w.write_all(b"ERR unknown control operation\n");
                        return;
                    }
                };
                self.lock().controls.push_back(c);
                self.work_arrived();
                let _ = w.write_all(b"OK\n");
            }
            ["CONSOLE", off] => {
                let Ok(off) = off.parse::<u64>() else {
                    let _ = w.write_all(b"ERR bad offset\n");
                    return;
                };
                self.console(off, r, w);
            }
            _ => {
                let _ = w.write_all(b"ERR expected CONSOLE <offset>, STATUS or CONTROL <op>\n");
            }
        }
    }

    fn console(&self, off: u64, mut r: BufReader<TcpStream>, mut w: TcpStream) {
        let me = {
            let mut s = self.lock();
            if !s.serving {
                let _ = w.write_all(b"ERR not live: this is the backup\n");
                return;
            }
            if off < s.released_base {
                let _ = writeln!(w, "ERR output before offset {} is gone", s.released_base);
                return;
            }
            s.client += 1;
            let in_off = s.in_taken + s.input.len() as u64;
            if writeln!(w, "OK {in_off}").is_err() {
                return;
            }
            s.client
        };
        self.notify();
        // Input: a thread of its own.
        let e = self.clone();
        let _ = std::thread::Builder::new()
            .name("console-input".into())
            .spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    let n = match r.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    loop {
                        let mut s = e.lock();
                        if s.client != me || s.closed {
                            return;
                        }
                        if s.input.len() < MAX_INPUT {
                            s.input.extend(&buf[..n]);
                            break;
                        }
                        drop(s);
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    e.work_arrived();
                }
            });
        // Output, on this thread; when it ends (another client took over, the endpoint
        // closed, the client went away) the connection is shut down both ways.
        self.pump_output(off, &mut w, me);
        let _ = w.shutdown(std::net::Shutdown::Both);
    }

    fn pump_output(&self, mut off: u64, w: &mut TcpStream, me: u64) {
        loop {
            let chunk = {
                let mut s = self.lock();
                loop {
                    if s.client != me || s.closed {
                        return;
                    }
                    if off < s.released_base {
                        return;
                    }
                    if off < s.out_end() {
                        break;
                    }
                    s = match self.inner.1.wait_timeout(s, Duration::from_millis(200)) {
                        Ok((g, _)) => g,
                        Err(p) => p.into_inner().0,
                    };
                }
                let start = usize::try_from(off - s.released_base).unwrap_or(usize::MAX);
                let v: Vec<u8> = s
                    .released
                    .iter()
                    .skip(start)
                    .take(64 << 10)
                    .copied()
                    .collect();
                v
            };
            if w.write_all(&chunk).is_err() {
                return;
            }
            off += chunk.len() as u64;
        }
    }

    /// Up to `max` bytes of client input for the VM (they count as taken).
    pub fn take_input(&self, max: usize) -> Vec<u8> {
        let mut s = self.lock();
        let n = s.input.len().min(max);
        let v: Vec<u8> = s.input.drain(..n).collect();
        s.in_taken += v.len() as u64;
        v
    }

    /// Waits up to `timeout` for client input, a control operation or a device's wake-up.
    pub fn wait(&self, timeout: Duration) {
        let s = self.lock();
        if s.input.is_empty() && s.controls.is_empty() && !s.kicked {
            let _ = self.inner.1.wait_timeout(s, timeout);
        }
    }

    /// Whether input, a control operation or a device's wake-up waits.
    pub fn has_work(&self) -> bool {
        let s = self.lock();
        !s.input.is_empty() || !s.controls.is_empty() || s.kicked
    }

    /// A device has something for the guest: wakes the run loop.
    pub fn kick(&self) {
        self.lock().kicked = true;
        self.work_arrived();
    }

    /// Clears a wake-up (the run loop is about to run the devices).
    pub fn take_kick(&self) -> bool {
        std::mem::take(&mut self.lock().kicked)
    }

    /// The control operations asked for since the last call.
    pub fn take_controls(&self) -> Vec<Control> {
        self.lock().controls.drain(..).collect()
    }

    /// Output the output rule let out: clients get it.
    pub fn publish(&self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.lock().release_bytes(bytes);
        self.notify();
    }

    /// (input bytes the VM has taken, offset of the tail, the last `max` bytes of output
    /// released): where a new backup's console streams start, and the output it can still
    /// serve to a client that is behind.
    pub fn offsets(&self, max: usize) -> (u64, u64, Vec<u8>) {
        let s = self.lock();
        let skip = s.released.len().saturating_sub(max);
        let tail: Vec<u8> = s.released.iter().skip(skip).copied().collect();
        (s.in_taken, s.released_base + skip as u64, tail)
    }

    /// Starts serving console clients (the backup goes live).
    pub fn start_serving(&self, in_taken: u64, out: &[u8], out_base: u64) {
        let mut s = self.lock();
        s.in_taken = in_taken;
        s.released.clear();
        s.released_base = out_base;
        s.release_bytes(out);
        s.serving = true;
        drop(s);
        self.notify();
    }

    /// Replaces the status `STATUS` answers with (and hands it to the status hook).
    pub fn set_status(&self, s: &crate::status::Status) {
        let mut st = self.lock();
        st.status = s.render();
        if let Some(f) = &st.on_status {
            f(s);
        }
    }

    /// Hands every status from now on to `f` too (e.g. the metrics' gauges).
    pub fn on_status(&self, f: StatusHook) {
        self.lock().on_status = Some(f);
    }

    /// Stops serving (this side stops, or lost the arbiter): clients are disconnected.
    pub fn close(&self) {
        let mut s = self.lock();
        s.closed = true;
        s.serving = false;
        drop(s);
        self.notify();
    }
}

/// Output replayed by the backup, kept (the last [`KEEP_OUTPUT`] bytes) until it goes live.
#[derive(Debug, Default)]
pub struct OutputTail {
    /// Offset of `bytes[0]`.
    pub base: u64,
    /// The bytes.
    pub bytes: VecDeque<u8>,
}

impl OutputTail {
    /// Appends replayed output.
    pub fn push(&mut self, b: &[u8]) {
        self.bytes.extend(b);
        let over = self.bytes.len().saturating_sub(KEEP_OUTPUT);
        if over > 0 {
            self.bytes.drain(..over);
            self.base += over as u64;
        }
    }
}

/// Sends one request line to an endpoint and returns the whole answer.
pub fn request(addr: &str, line: &str, timeout: Duration) -> std::io::Result<String> {
    use std::net::ToSocketAddrs;
    let a = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("{addr}: no address")))?;
    let mut s = TcpStream::connect_timeout(&a, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.write_all(format!("{line}\n").as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_output_reaches_the_stream_and_a_closed_endpoint_serves_no_more() {
        let e = Endpoint::new(true);
        e.publish(b"abc");
        e.publish(b"");
        assert_eq!(e.lock().out_end(), 3);
        e.close();
        let s = e.lock();
        assert!(s.closed && !s.serving);
    }

    #[test]
    fn input_offsets_count_taken_and_queued() {
        let e = Endpoint::new(true);
        e.lock().input.extend(b"hello");
        assert_eq!(e.take_input(2), b"he");
        let s = e.lock();
        assert_eq!(s.in_taken + s.input.len() as u64, 5);
    }

    #[test]
    fn the_output_tail_is_bounded() {
        let mut t = OutputTail::default();
        t.push(&vec![1; KEEP_OUTPUT + 10]);
        assert_eq!(t.base, 10);
        assert_eq!(t.bytes.len(), KEEP_OUTPUT);
    }
}
