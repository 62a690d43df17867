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
//! `CONTROL pause|resume|poweroff|handover|protect ADDR`.
//!
//! **Who may ask**: operators are not hosts. Every connection is a Noise session
//! ([`crate::noise`]) under a *console* secret, never the channel key: the client sends
//! [`MAGIC`] and one access byte in clear (`O` operator, `S` status only), then the Noise
//! handshake under the PSK of that secret ([`Keys`]); the request and everything after it are
//! sealed. A client without the secret gets no console output, no status, and nothing it sends
//! is taken as input or applied; a plain-text request (the protocol before this one) is
//! answered with one line saying that the endpoint needs an encrypted client, and closed. The
//! status-only secret is for monitoring: `STATUS` and nothing else.
//!
//! **Strangers cost a bounded amount and never the VM**: at most [`MAX_PENDING`] connections
//! wait to authenticate at once (a newcomer closes the one that has waited longest, so a flood
//! of idle connections cannot lock out a genuine client, which authenticates in a round trip),
//! each has [`HANDSHAKE_DEADLINE`] from connecting to its first sealed request
//! ([`crate::admission`]); garbage is refused at its first wrong byte, a handshake message or
//! request line is bounded (64 KiB, 256 bytes); the VM only ever appends its output to the
//! bounded tail ([`KEEP_OUTPUT`]) and never waits for a client, and a client that stops
//! reading is let go after [`WRITE_DEADLINE`] (it resumes from its offset when it comes back).
//! Every refusal is logged with the peer's address, at most a line per address per 10 s
//! ([`crate::refusals`]).

pub mod client;

use crate::admission::{Admission, Pending};
use crate::auth::Key;
use crate::noise::{self, HandshakeRead, Role, SealedReader, SealedWriter};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Released output kept for clients that reconnect (older bytes are dropped).
pub const KEEP_OUTPUT: usize = 8 << 20;
/// Client input accepted ahead of the VM.
const MAX_INPUT: usize = 1 << 20;
/// Connections waiting to authenticate at once ([`crate::admission`]).
pub const MAX_PENDING: usize = 64;
/// Time a client has from connecting to its first sealed request.
pub const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(5);
/// Time a write to a client may block before the client is let go.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(10);

/// What a console connection opens with, in clear (the protocol and its version; with the
/// access byte, also the Noise prologue).
pub const MAGIC: &[u8; 8] = b"FTVMCO01";

/// What a console secret lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Everything: the console's streams, control operations, status.
    Operator,
    /// `STATUS` only.
    Status,
}

impl Access {
    fn byte(self) -> u8 {
        match self {
            Access::Operator => b'O',
            Access::Status => b'S',
        }
    }

    fn purpose(self) -> &'static [u8] {
        match self {
            Access::Operator => b"ftvm-console-operator",
            Access::Status => b"ftvm-console-status",
        }
    }
}

/// The secrets an endpoint accepts.
#[derive(Clone, Debug)]
pub struct Keys {
    /// The operator's (`--console-key-file`): full access.
    pub operator: Key,
    /// The read-only one (`--status-key-file`), if any.
    pub status: Option<Key>,
}

impl Keys {
    /// Only an operator key (the same PSK label never opens the logging channel, even when the
    /// file is the channel key's: hosts that hold that may use it as their console key).
    pub fn operator(k: Key) -> Keys {
        Keys {
            operator: k,
            status: None,
        }
    }
}

/// What a client presents: a console secret and what it is for.
#[derive(Clone, Debug)]
pub struct Secret {
    /// The key file's bytes.
    pub key: Key,
    /// What it allows.
    pub access: Access,
}

impl Secret {
    /// An operator's secret.
    pub fn operator(key: Key) -> Secret {
        Secret {
            key,
            access: Access::Operator,
        }
    }
}

/// What the endpoint writes a plain-text client, before hanging up.
pub const PLAIN_REFUSAL: &[u8] = b"ERR this endpoint speaks only the encrypted console protocol: \
use ftvm status/console/control with --console-key-file (or --status-key-file)\n";

/// The sealed halves of a console connection.
pub type Halves = (SealedWriter<TcpStream>, SealedReader<TcpStream>);

/// Accepts a console client on `s`: its access and the sealed halves, or why it was refused
/// (the client was told no more than that it is refused).
fn accept(mut s: TcpStream, keys: &Keys) -> Result<(Access, Halves), String> {
    let mut head = [0u8; 9];
    for i in 0..head.len() {
        s.read_exact(&mut head[i..=i])
            .map_err(|e| format!("hung up before its handshake ({e})"))?;
        if i < MAGIC.len() && head[i] != MAGIC[i] {
            let _ = s.write_all(PLAIN_REFUSAL);
            return Err("a plain-text or unknown request: refused".into());
        }
    }
    let (access, key) = match head[8] {
        b'O' => (Access::Operator, &keys.operator),
        b'S' => match &keys.status {
            Some(k) => (Access::Status, k),
            None => {
                let _ = noise::write_refusal(&mut s);
                return Err("asked for status access, and this endpoint has no status key".into());
            }
        },
        _ => return Err("an unknown access byte".into()),
    };
    let mut hs = noise::handshake(Role::Responder, &noise::psk(key, access.purpose()), &head);
    match noise::read_handshake(&mut s, &mut hs).map_err(|e| e.to_string())? {
        HandshakeRead::Payload(_) => {}
        _ => {
            let _ = noise::write_refusal(&mut s);
            return Err(format!(
                "it does not hold this VM's console {} key",
                if access == Access::Operator {
                    "operator"
                } else {
                    "status"
                }
            ));
        }
    }
    noise::write_handshake(&mut s, &mut hs, &[]).map_err(|e| e.to_string())?;
    let (sealer, opener) = noise::split(hs).map_err(|e| e.to_string())?;
    let r = s.try_clone().map_err(|e| e.to_string())?;
    Ok((
        access,
        (SealedWriter::new(s, sealer), SealedReader::new(r, opener)),
    ))
}

/// Connects to the endpoint at `a` with `secret`: the sealed halves. Errors say whether the
/// endpoint refused the secret.
pub fn connect(a: SocketAddr, secret: &Secret, timeout: Duration) -> std::io::Result<Halves> {
    let mut s = TcpStream::connect_timeout(&a, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    let _ = s.set_nodelay(true);
    let mut head = MAGIC.to_vec();
    head.push(secret.access.byte());
    s.write_all(&head)?;
    let mut hs = noise::handshake(
        Role::Initiator,
        &noise::psk(&secret.key, secret.access.purpose()),
        &head,
    );
    let denied = |why: String| std::io::Error::new(std::io::ErrorKind::PermissionDenied, why);
    noise::write_handshake(&mut s, &mut hs, &[]).map_err(std::io::Error::other)?;
    match noise::read_handshake(&mut s, &mut hs) {
        Ok(HandshakeRead::Payload(_)) => {}
        Ok(HandshakeRead::PeerRefused) => {
            return Err(denied(format!(
                "{a} refused our console key: it is not this VM's {} key",
                match secret.access {
                    Access::Operator => "operator (--console-key-file)",
                    Access::Status => "status (--status-key-file)",
                }
            )))
        }
        Ok(HandshakeRead::Unauthentic) => {
            return Err(denied(format!("{a} did not answer under our console key")))
        }
        Err(noise::FrameError::Closed) => {
            return Err(denied(format!(
                "{a} hung up on the encrypted console protocol (an ftvm of an older version?)"
            )))
        }
        Err(noise::FrameError::Io(e)) => return Err(e),
        Err(e) => return Err(std::io::Error::other(e)),
    }
    let (sealer, opener) = noise::split(hs).map_err(std::io::Error::other)?;
    let r = s.try_clone()?;
    Ok((SealedWriter::new(s, sealer), SealedReader::new(r, opener)))
}

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

    /// Listens for clients on `listener` (a thread per connection), admitting those that hold
    /// one of `keys`. At most [`MAX_PENDING`] connections wait to authenticate at once (the
    /// longest-waiting one is closed for a newcomer), each for at most [`HANDSHAKE_DEADLINE`]
    /// ([`crate::admission`]).
    pub fn serve(&self, listener: TcpListener, keys: Keys) -> std::io::Result<()> {
        let e = self.clone();
        let adm = Admission::new("console", MAX_PENDING, HANDSHAKE_DEADLINE);
        std::thread::Builder::new()
            .name("console-accept".into())
            .spawn(move || loop {
                let accepted = listener.accept();
                if e.lock().closed {
                    break;
                }
                let (s, peer) = match accepted {
                    Ok(c) => c,
                    Err(_) => {
                        // Out of descriptors, most likely: let some close.
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                };
                let Some(ticket) = adm.admit(&s, peer) else {
                    continue;
                };
                let e = e.clone();
                let keys = keys.clone();
                let adm = Arc::clone(&adm);
                let _ = std::thread::Builder::new()
                    .name("console-client".into())
                    .spawn(move || e.client(s, peer, &keys, ticket, &adm));
            })?;
        Ok(())
    }

    fn client(
        &self,
        s: TcpStream,
        peer: SocketAddr,
        keys: &Keys,
        ticket: Pending,
        adm: &Admission,
    ) {
        let _ = s.set_read_timeout(Some(HANDSHAKE_DEADLINE));
        // A client that stops reading is disconnected, never waited for (it reconnects from
        // its offset).
        let _ = s.set_write_timeout(Some(WRITE_DEADLINE));
        let (access, (mut w, r)) = match accept(s, keys) {
            Ok(x) => x,
            Err(why) => {
                adm.log.refused(peer, peer.ip(), &why);
                return;
            }
        };
        let mut r = BufReader::new(r);
        let mut line = String::new();
        if r.by_ref().take(256).read_line(&mut line).is_err() {
            return;
        }
        // The first record opened under the session's key: the client holds the secret.
        ticket.authenticated();
        let _ = w.get_ref().set_read_timeout(None);
        let words: Vec<&str> = line.split_whitespace().collect();
        if access == Access::Status && words.first() != Some(&"STATUS") {
            let _ = w.write_all(b"ERR the status key allows STATUS only\n");
            return;
        }
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
                self.ask(c);
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

    fn console(
        &self,
        off: u64,
        mut r: BufReader<SealedReader<TcpStream>>,
        mut w: SealedWriter<TcpStream>,
    ) {
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
        if let Err(e) = self.pump_output(off, &mut w, me) {
            let peer = w.get_ref().peer_addr().ok();
            tracing::info!(
                "console: client {} disconnected: {e} (a client reading slower than the \
                 console writes is let go after {WRITE_DEADLINE:?}; it resumes from its offset)",
                peer.map_or_else(|| "(unknown)".into(), |p| p.to_string())
            );
        }
        let _ = w.get_ref().shutdown(std::net::Shutdown::Both);
    }

    /// Writes the output from `off` while `me` is the current client; `Err` if the client
    /// failed to take it (gone, or too slow).
    fn pump_output(
        &self,
        mut off: u64,
        w: &mut SealedWriter<TcpStream>,
        me: u64,
    ) -> std::io::Result<()> {
        loop {
            let chunk = {
                let mut s = self.lock();
                loop {
                    if s.client != me || s.closed {
                        return Ok(());
                    }
                    if off < s.released_base {
                        return Ok(());
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
            w.write_all(&chunk)?;
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

    /// Asks the run loop for a control operation (an operator's `CONTROL` line).
    pub(crate) fn ask(&self, c: Control) {
        self.lock().controls.push_back(c);
        self.work_arrived();
    }

    /// Input typed by the current client, as its input thread queues it (tests: no socket).
    #[cfg(test)]
    pub(crate) fn type_input(&self, b: &[u8]) {
        self.lock().input.extend(b);
        self.work_arrived();
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

/// Sends one request line to an endpoint (with `secret`) and returns the whole answer.
pub fn request(
    addr: &str,
    secret: &Secret,
    line: &str,
    timeout: Duration,
) -> std::io::Result<String> {
    use std::net::ToSocketAddrs;
    let a = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("{addr}: no address")))?;
    let (mut w, mut r) = connect(a, secret, timeout)?;
    w.write_all(format!("{line}\n").as_bytes())?;
    let mut out = Vec::new();
    r.read_to_end(&mut out)?;
    String::from_utf8(out).map_err(|_| std::io::Error::other(format!("{addr}: not text")))
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

    /// An endpoint with an operator and a status key, serving on a free port, with console
    /// output published.
    fn serving() -> (Endpoint, SocketAddr, Key, Key) {
        let (op, st) = (Key::random(), Key::random());
        let e = Endpoint::new(true);
        e.set_status(&crate::status::Status::new(
            "vm0",
            crate::status::Role::Primary,
            "-".into(),
        ));
        e.publish(b"guest secret output\n");
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        e.serve(
            l,
            Keys {
                operator: op.clone(),
                status: Some(st.clone()),
            },
        )
        .unwrap();
        (e, a, op, st)
    }

    fn raw(a: SocketAddr, bytes: &[u8]) -> Vec<u8> {
        let mut s = TcpStream::connect(a).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(bytes).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        out
    }

    #[test]
    fn a_client_without_the_secret_gets_nothing_and_changes_nothing() {
        let (e, a, _, _) = serving();
        // The old plain-text requests: one line of refusal, nothing else.
        for req in [
            &b"STATUS\n"[..],
            b"CONSOLE 0\nls\n",
            b"CONTROL poweroff\n",
            b"CONTROL pause\n",
        ] {
            let out = raw(a, req);
            assert_eq!(out, PLAIN_REFUSAL, "{}", String::from_utf8_lossy(req));
        }
        // The right protocol with a wrong key, for each access: refused at the handshake.
        for access in [Access::Operator, Access::Status] {
            let wrong = Secret {
                key: Key::random(),
                access,
            };
            let err = request(
                &a.to_string(),
                &wrong,
                "CONTROL poweroff",
                Duration::from_secs(5),
            )
            .unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied, "{err}");
            assert!(err.to_string().contains("refused our console key"), "{err}");
            let mut c = client::ConsoleClient::new(vec![a], wrong);
            c.reconnect_for = Duration::from_millis(100);
            assert!(c.read_some(Duration::from_millis(100)).is_err());
            assert!(c.send(b"poweroff\n").is_err());
        }
        // The channel's PSK is not the console's: a channel handshake's opening is refused.
        let mut opening = MAGIC.to_vec();
        opening.push(b'O');
        let k = Key::random();
        let mut hs = noise::handshake(Role::Initiator, &noise::psk(&k, b"ftvm-channel"), &opening);
        noise::write_handshake(&mut opening, &mut hs, &[]).unwrap();
        assert_eq!(raw(a, &opening), [0, 0]);
        std::thread::sleep(Duration::from_millis(100));
        assert!(e.take_controls().is_empty(), "no control applied");
        let s = e.lock();
        assert!(s.input.is_empty() && s.in_taken == 0, "no input taken");
    }

    #[test]
    fn the_status_key_reads_status_only_and_the_operator_key_does_everything() {
        let (e, a, op, st) = serving();
        let status = Secret {
            key: st,
            access: Access::Status,
        };
        let t = Duration::from_secs(5);
        let text = request(&a.to_string(), &status, "STATUS", t).unwrap();
        assert!(text.contains("vm0"), "{text}");
        for req in ["CONTROL poweroff", "CONSOLE 0"] {
            let out = request(&a.to_string(), &status, req, t).unwrap();
            assert_eq!(out, "ERR the status key allows STATUS only\n", "{req}");
        }
        // The operator key is not the status key's PSK, nor the other way round.
        let swapped = Secret {
            key: op.clone(),
            access: Access::Status,
        };
        assert!(request(&a.to_string(), &swapped, "STATUS", t).is_err());
        assert!(e.take_controls().is_empty());
        let op = Secret::operator(op);
        assert_eq!(
            request(&a.to_string(), &op, "CONTROL pause", t).unwrap(),
            "OK\n"
        );
        assert_eq!(e.take_controls(), [Control::Pause]);
        let mut c = client::ConsoleClient::new(vec![a], op);
        let line = c
            .read_line_until(|l| l.contains("secret"), Duration::from_secs(5))
            .unwrap();
        assert_eq!(line.as_deref(), Some("guest secret output"));
        c.send(b"ls\n").unwrap();
        let t0 = std::time::Instant::now();
        while e.lock().input.len() < 3 && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(e.take_input(16), b"ls\n");
    }

    #[test]
    fn the_output_tail_is_bounded() {
        let mut t = OutputTail::default();
        t.push(&vec![1; KEEP_OUTPUT + 10]);
        assert_eq!(t.base, 10);
        assert_eq!(t.bytes.len(), KEEP_OUTPUT);
    }

    fn is_closed(c: &mut TcpStream, within: Duration) -> bool {
        c.set_read_timeout(Some(within)).unwrap();
        let mut b = [0u8; 256];
        loop {
            match c.read(&mut b) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
                Err(_) => return true,
            }
        }
    }

    /// Hundreds of clients that connect and say nothing, garbage, an over-long request and a
    /// client dripping its handshake: the endpoint keeps at most MAX_PENDING of them, closes
    /// the rest at once and those past the deadline after it, and serves the key's holder all
    /// along.
    #[test]
    fn idle_garbage_and_over_long_clients_are_bounded_and_the_key_holder_is_served() {
        let (e, a, op, _) = serving();
        let op = Secret::operator(op);
        let t = Duration::from_secs(5);
        let idle: Vec<TcpStream> = (0..MAX_PENDING * 8)
            .map(|_| TcpStream::connect(a).unwrap())
            .collect();
        // Garbage: the plain-text refusal and nothing else.
        assert_eq!(raw(a, b"\x00\x01\x02garbage\n"), PLAIN_REFUSAL);
        // The magic, then a handshake message that is noise: refused, nothing answered
        // but the refusal.
        let mut junk = MAGIC.to_vec();
        junk.push(b'O');
        junk.extend_from_slice(&[0xff, 0xff]);
        junk.extend(std::iter::repeat_n(0x41, 65535));
        assert_eq!(raw(a, &junk), [0, 0]);
        // The key holder is served while the idle ones are still connected.
        let text = request(&a.to_string(), &op, "STATUS", t).unwrap();
        assert!(text.contains("vm0"), "{text}");
        // An over-long request line under the key is cut at 256 bytes and refused.
        let long = format!("STATUS{}", " x".repeat(10_000));
        let out = request(&a.to_string(), &op, &long, t).unwrap_or_default();
        assert!(!out.contains("vm0"), "{out}");
        // All but MAX_PENDING idle connections were closed at once, the rest by the deadline.
        let mut idle = idle;
        let mut closed_at_once = 0;
        for c in idle.iter_mut() {
            closed_at_once += usize::from(is_closed(c, Duration::from_millis(20)));
        }
        assert!(
            closed_at_once >= MAX_PENDING * 7 - 4,
            "{closed_at_once} of {} idle connections closed at once",
            idle.len()
        );
        for c in idle.iter_mut() {
            assert!(
                is_closed(c, HANDSHAKE_DEADLINE * 2),
                "an idle client outlived the deadline"
            );
        }
        // A client that drips its first bytes slowly is cut at the deadline too.
        let mut drip = TcpStream::connect(a).unwrap();
        let t0 = std::time::Instant::now();
        let mut cut = false;
        for b in MAGIC.iter().chain(b"O").cycle().take(40) {
            if drip.write_all(&[*b]).is_err() {
                cut = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
            if is_closed(&mut drip, Duration::from_millis(1)) {
                cut = true;
                break;
            }
        }
        assert!(cut, "a dripping client was kept {:?}", t0.elapsed());
        assert!(e.take_controls().is_empty() && e.take_input(16).is_empty());
    }

    /// A console client that stops reading: the VM's output goes on being published without
    /// waiting for it, the tail stays bounded, another client takes over at once, and the
    /// stalled one is let go after the write deadline.
    #[test]
    fn a_client_that_stops_reading_never_blocks_the_vm() {
        let (e, a, op, _) = serving();
        let op = Secret::operator(op);
        let (mut w, r) = connect(a, &op, Duration::from_secs(5)).unwrap();
        w.write_all(b"CONSOLE 0\n").unwrap();
        // It never reads. 32 MiB of output, 64 KiB at a time.
        let chunk = vec![b'x'; 64 << 10];
        let t0 = std::time::Instant::now();
        for _ in 0..512 {
            e.publish(&chunk);
        }
        e.publish(b"\nlast line\n");
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "publishing waited for a client ({:?})",
            t0.elapsed()
        );
        assert!(e.lock().released.len() <= KEEP_OUTPUT);
        let end = e.lock().out_end();
        let (mut w2, r2) = connect(a, &op, Duration::from_secs(5)).unwrap();
        writeln!(w2, "CONSOLE {}", end - 11).unwrap();
        let mut got = String::new();
        let mut r2 = BufReader::new(r2);
        r2.read_line(&mut got).unwrap();
        assert!(got.starts_with("OK "), "{got}");
        got.clear();
        r2.read_line(&mut got).unwrap();
        r2.read_line(&mut got).unwrap();
        assert_eq!(got, "\nlast line\n");
        let mut stalled = r.get_ref().try_clone().unwrap();
        assert!(
            is_closed(&mut stalled, WRITE_DEADLINE + Duration::from_secs(10)),
            "the stalled client is let go"
        );
    }
}
