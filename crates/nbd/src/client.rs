//! The connection: negotiation ([`NbdClient::connect`]) and synchronous transmission.
//!
//! Every socket operation carries the client's timeout, so a server that stops answering turns
//! into an `io::ErrorKind::TimedOut` error instead of a hang. After any transport failure
//! (timeout, closed connection, a reply that does not match the request) the stream's position
//! in the protocol is unknown, so the client marks itself broken and fails every later request
//! at once; an error *reply* from the server (e.g. EPERM) leaves the connection usable.

use crate::proto::*;
use crate::{NbdAddr, NbdError};
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// The timeout `ftvm` uses when the drive gives none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest export name the protocol allows (4096 bytes).
const MAX_EXPORT_NAME: usize = 4096;
/// Largest option reply we accept (a server's message or info block).
const MAX_OPT_REPLY: u32 = 64 * 1024;
/// The most bytes moved by one read or write command; larger requests are split. Servers
/// must accept 32 MiB; qemu-nbd's limit is exactly that.
const MAX_CHUNK: usize = 1 << 20;

/// The byte stream to the server.
#[derive(Debug)]
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Stream {
    fn open(addr: &NbdAddr, timeout: Duration) -> io::Result<Stream> {
        let s = match addr {
            NbdAddr::Tcp(a) => {
                let mut last =
                    io::Error::new(io::ErrorKind::NotFound, "the host name resolves to nothing");
                let mut ok = None;
                for sa in a.to_socket_addrs()? {
                    match TcpStream::connect_timeout(&sa, timeout) {
                        Ok(s) => {
                            ok = Some(s);
                            break;
                        }
                        Err(e) => last = e,
                    }
                }
                let s = ok.ok_or(last)?;
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(timeout))?;
                s.set_write_timeout(Some(timeout))?;
                Stream::Tcp(s)
            }
            NbdAddr::Unix(p) => {
                let s = UnixStream::connect(p)?;
                s.set_read_timeout(Some(timeout))?;
                s.set_write_timeout(Some(timeout))?;
                Stream::Unix(s)
            }
        };
        Ok(s)
    }
}

/// A connection to one export of an NBD server, in the transmission phase.
#[derive(Debug)]
pub struct NbdClient {
    stream: Stream,
    addr: NbdAddr,
    export: String,
    size: u64,
    flags: u16,
    next_handle: u64,
    /// Set after a transport failure: the reason, repeated to every later request.
    broken: Option<String>,
    /// Whether plain writes carry NBD_CMD_FLAG_FUA (see [`NbdClient::set_fua`]).
    fua: bool,
}

impl NbdClient {
    /// Connects to `addr`, negotiates export `export` (the empty name is the server's default
    /// export) with fixed newstyle and `NBD_OPT_GO`, and enters transmission. `timeout` bounds
    /// the connect and every later read or write on the socket.
    pub fn connect(addr: &NbdAddr, export: &str, timeout: Duration) -> Result<NbdClient, NbdError> {
        let name = addr.to_string();
        let mut stream = Stream::open(addr, timeout).map_err(|source| NbdError::Connect {
            addr: name.clone(),
            source,
        })?;
        let (size, flags) = negotiate(&mut stream, &name, export)?;
        Ok(NbdClient {
            stream,
            addr: addr.clone(),
            export: export.to_owned(),
            size,
            flags,
            next_handle: 1,
            broken: None,
            fua: false,
        })
    }

    /// The export's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }
    /// The transmission flags the server sent (`NBD_FLAG_*`).
    pub fn transmission_flags(&self) -> u16 {
        self.flags
    }
    /// Whether the server offers the export read-only.
    pub fn read_only(&self) -> bool {
        self.flags & NBD_FLAG_READ_ONLY != 0
    }
    /// Whether the server accepts the FUA flag on writes.
    pub fn can_fua(&self) -> bool {
        self.flags & NBD_FLAG_SEND_FUA != 0
    }
    /// Whether the server accepts trim.
    pub fn can_trim(&self) -> bool {
        self.flags & NBD_FLAG_SEND_TRIM != 0
    }
    /// Whether the server accepts flush (without it, flush is a no-op: the server has no cache
    /// to write back, per the protocol).
    pub fn can_flush(&self) -> bool {
        self.flags & NBD_FLAG_SEND_FLUSH != 0
    }
    /// Where the server is.
    pub fn addr(&self) -> &NbdAddr {
        &self.addr
    }
    /// The export's name.
    pub fn export(&self) -> &str {
        &self.export
    }
    /// Makes every [`NbdClient::write_at`] a FUA write (durable when acknowledged) if the server
    /// offers FUA; without it, durability comes from [`NbdClient::flush`] as usual.
    pub fn set_fua(&mut self, on: bool) {
        self.fua = on;
    }

    /// Fills `buf` from byte `offset` of the export.
    pub fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.check_range(offset, buf.len())?;
        let mut off = offset;
        for chunk in buf.chunks_mut(MAX_CHUNK) {
            self.request(NBD_CMD_READ, 0, off, len32(chunk.len()), &[], chunk)?;
            off += chunk.len() as u64;
        }
        Ok(())
    }

    /// Writes `data` at byte `offset`, with FUA if [`NbdClient::set_fua`] asked for it.
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let fua = self.fua && self.can_fua();
        self.write_with(offset, data, fua)
    }

    /// Writes `data` at byte `offset` with `NBD_CMD_FLAG_FUA`: the data is durable when this
    /// returns. Refused (`Unsupported`) if the server does not offer FUA.
    pub fn write_fua(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        if !self.can_fua() {
            return Err(self.local_error(
                io::ErrorKind::Unsupported,
                "the server does not offer FUA writes (NBD_FLAG_SEND_FUA)",
            ));
        }
        self.write_with(offset, data, true)
    }

    fn write_with(&mut self, offset: u64, data: &[u8], fua: bool) -> io::Result<()> {
        self.check_range(offset, data.len())?;
        let flags = if fua { NBD_CMD_FLAG_FUA } else { 0 };
        let mut off = offset;
        for chunk in data.chunks(MAX_CHUNK) {
            self.request(
                NBD_CMD_WRITE,
                flags,
                off,
                len32(chunk.len()),
                chunk,
                &mut [],
            )?;
            off += chunk.len() as u64;
        }
        Ok(())
    }

    /// Makes every acknowledged write durable on the server.
    pub fn flush(&mut self) -> io::Result<()> {
        if !self.can_flush() {
            return Ok(());
        }
        self.request(NBD_CMD_FLUSH, 0, 0, 0, &[], &mut [])
    }

    /// Tells the server that `len` bytes from `offset` are no longer needed (their contents
    /// become unspecified). Refused (`Unsupported`) if the server does not offer trim.
    pub fn trim(&mut self, offset: u64, len: u64) -> io::Result<()> {
        if !self.can_trim() {
            return Err(self.local_error(
                io::ErrorKind::Unsupported,
                "the server does not offer trim (NBD_FLAG_SEND_TRIM)",
            ));
        }
        let n = usize::try_from(len)
            .map_err(|_| self.local_error(io::ErrorKind::InvalidInput, "trim length too large"))?;
        self.check_range(offset, n)?;
        let mut off = offset;
        let end = offset + len;
        while off < end {
            let n = (end - off).min(u64::from(u32::MAX) & !0xfff);
            self.request(
                NBD_CMD_TRIM,
                0,
                off,
                u32::try_from(n).unwrap_or(u32::MAX),
                &[],
                &mut [],
            )?;
            off += n;
        }
        Ok(())
    }

    /// Sends `NBD_CMD_DISC` and closes the connection (also done on drop).
    pub fn disconnect(mut self) -> io::Result<()> {
        self.send_disc()
    }

    fn send_disc(&mut self) -> io::Result<()> {
        if self.broken.is_some() {
            return Ok(());
        }
        self.broken = Some("the client disconnected".into());
        let h = self.next_handle;
        let hdr = request_header(NBD_CMD_DISC, 0, h, 0, 0);
        self.stream.write_all(&hdr)
    }

    fn check_range(&self, offset: u64, len: usize) -> io::Result<()> {
        if offset.checked_add(len as u64).is_none_or(|e| e > self.size) {
            return Err(self.local_error(
                io::ErrorKind::InvalidInput,
                &format!(
                    "{len} bytes at offset {offset} are past the end of the export ({} bytes)",
                    self.size
                ),
            ));
        }
        Ok(())
    }

    fn local_error(&self, kind: io::ErrorKind, what: &str) -> io::Error {
        io::Error::new(
            kind,
            format!("NBD export `{}` at {}: {what}", self.export, self.addr),
        )
    }

    /// One request and its simple reply. `out` is sent after the header (writes); `into` is
    /// filled from the reply (reads).
    fn request(
        &mut self,
        cmd: u16,
        flags: u16,
        offset: u64,
        len: u32,
        out: &[u8],
        into: &mut [u8],
    ) -> io::Result<()> {
        if let Some(why) = &self.broken {
            return Err(self.local_error(
                io::ErrorKind::NotConnected,
                &format!("the connection is unusable: {why}"),
            ));
        }
        let handle = self.next_handle;
        self.next_handle = self.next_handle.wrapping_add(1);
        match self.exchange(cmd, flags, handle, offset, len, out, into) {
            Ok(0) => Ok(()),
            Ok(errno) => Err(self.local_error(
                errno_kind(errno),
                &format!(
                    "the server answered {} to {} of {len} bytes at offset {offset}",
                    errno_name(errno),
                    cmd_name(cmd)
                ),
            )),
            Err(e) => {
                let why = match e.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                        "the server did not answer within the timeout".to_owned()
                    }
                    io::ErrorKind::UnexpectedEof => "the server closed the connection".to_owned(),
                    _ => e.to_string(),
                };
                let kind = match e.kind() {
                    io::ErrorKind::WouldBlock => io::ErrorKind::TimedOut,
                    k => k,
                };
                let err = self.local_error(
                    kind,
                    &format!(
                        "{} of {len} bytes at offset {offset} failed: {why}",
                        cmd_name(cmd)
                    ),
                );
                self.broken = Some(why);
                Err(err)
            }
        }
    }

    /// Sends the request and reads its reply; returns the reply's error field.
    #[allow(clippy::too_many_arguments)]
    fn exchange(
        &mut self,
        cmd: u16,
        flags: u16,
        handle: u64,
        offset: u64,
        len: u32,
        out: &[u8],
        into: &mut [u8],
    ) -> io::Result<u32> {
        let hdr = request_header(cmd, flags, handle, offset, len);
        if out.is_empty() {
            self.stream.write_all(&hdr)?;
        } else if out.len() <= 4096 {
            let mut b = Vec::with_capacity(hdr.len() + out.len());
            b.extend_from_slice(&hdr);
            b.extend_from_slice(out);
            self.stream.write_all(&b)?;
        } else {
            self.stream.write_all(&hdr)?;
            self.stream.write_all(out)?;
        }
        let mut reply = [0u8; 16];
        self.stream.read_exact(&mut reply)?;
        let magic = be32(&reply[0..4]);
        let errno = be32(&reply[4..8]);
        let got = be64(&reply[8..16]);
        if magic != SIMPLE_REPLY_MAGIC {
            let what = if magic == STRUCTURED_REPLY_MAGIC {
                "a structured reply, which was never negotiated"
            } else {
                "a reply with a bad magic number"
            };
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the server broke the protocol: {what}"),
            ));
        }
        if got != handle {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the server broke the protocol: a reply for handle {got} to request {handle}"
                ),
            ));
        }
        if errno == 0 && cmd == NBD_CMD_READ {
            self.stream.read_exact(into)?;
        }
        Ok(errno)
    }
}

impl Drop for NbdClient {
    fn drop(&mut self) {
        let _ = self.send_disc();
    }
}

/// The fixed newstyle handshake and NBD_OPT_GO. Returns the export's size and transmission flags.
fn negotiate(s: &mut Stream, addr: &str, export: &str) -> Result<(u64, u16), NbdError> {
    let io = |during: &'static str| {
        let addr = addr.to_owned();
        move |source| NbdError::Io {
            addr,
            during,
            source,
        }
    };
    let proto = |what: String| NbdError::Protocol {
        addr: addr.to_owned(),
        what,
    };
    let mut greet = [0u8; 16];
    s.read_exact(&mut greet)
        .map_err(io("reading the server's greeting"))?;
    if be64(&greet[0..8]) != NBDMAGIC {
        return Err(NbdError::NotNbd {
            addr: addr.to_owned(),
        });
    }
    match be64(&greet[8..16]) {
        IHAVEOPT => {}
        CLISERV_MAGIC => {
            return Err(NbdError::Unsupported {
                addr: addr.to_owned(),
                style: "oldstyle",
            })
        }
        _ => {
            return Err(NbdError::NotNbd {
                addr: addr.to_owned(),
            })
        }
    }
    let mut hflags = [0u8; 2];
    s.read_exact(&mut hflags)
        .map_err(io("reading the handshake flags"))?;
    let hflags = u16::from_be_bytes(hflags);
    if hflags & NBD_FLAG_FIXED_NEWSTYLE == 0 {
        return Err(NbdError::Unsupported {
            addr: addr.to_owned(),
            style: "non-fixed newstyle",
        });
    }
    let mut cflags = NBD_FLAG_C_FIXED_NEWSTYLE;
    if hflags & NBD_FLAG_NO_ZEROES != 0 {
        cflags |= NBD_FLAG_C_NO_ZEROES;
    }
    if export.len() > MAX_EXPORT_NAME {
        return Err(proto(format!(
            "export name longer than {MAX_EXPORT_NAME} bytes (not sent)"
        )));
    }
    // NBD_OPT_GO: name length, name, number of info requests (0: NBD_INFO_EXPORT comes anyway).
    let mut msg = Vec::with_capacity(4 + 16 + 4 + export.len() + 2);
    msg.extend_from_slice(&cflags.to_be_bytes());
    msg.extend_from_slice(&IHAVEOPT.to_be_bytes());
    msg.extend_from_slice(&NBD_OPT_GO.to_be_bytes());
    msg.extend_from_slice(&(len32(export.len()) + 6).to_be_bytes());
    msg.extend_from_slice(&len32(export.len()).to_be_bytes());
    msg.extend_from_slice(export.as_bytes());
    msg.extend_from_slice(&0u16.to_be_bytes());
    s.write_all(&msg).map_err(io("sending NBD_OPT_GO"))?;

    let mut info = None;
    loop {
        let mut h = [0u8; 20];
        s.read_exact(&mut h)
            .map_err(io("reading the reply to NBD_OPT_GO"))?;
        if be64(&h[0..8]) != OPT_REPLY_MAGIC {
            return Err(proto("an option reply with a bad magic number".into()));
        }
        let opt = be32(&h[8..12]);
        let rtype = be32(&h[12..16]);
        let len = be32(&h[16..20]);
        if opt != NBD_OPT_GO {
            return Err(proto(format!(
                "a reply to option {opt} when NBD_OPT_GO was asked"
            )));
        }
        if len > MAX_OPT_REPLY {
            return Err(proto(format!("an option reply of {len} bytes")));
        }
        let mut data = vec![0u8; len as usize];
        s.read_exact(&mut data)
            .map_err(io("reading the reply to NBD_OPT_GO"))?;
        if rtype & NBD_REP_FLAG_ERROR != 0 {
            let text = String::from_utf8_lossy(&data);
            let text = text.trim();
            let _ = send_abort(s);
            return Err(NbdError::Refused {
                addr: addr.to_owned(),
                export: export.to_owned(),
                reason: rep_err_name(rtype),
                message: if text.is_empty() {
                    String::new()
                } else {
                    format!(": {text}")
                },
            });
        }
        match rtype {
            NBD_REP_INFO => {
                if data.len() >= 2 && u16::from_be_bytes([data[0], data[1]]) == NBD_INFO_EXPORT {
                    if data.len() != 12 {
                        return Err(proto(format!("an NBD_INFO_EXPORT of {} bytes", data.len())));
                    }
                    info = Some((be64(&data[2..10]), u16::from_be_bytes([data[10], data[11]])));
                }
                // Other info types (names, block sizes) were not asked for: ignore them.
            }
            NBD_REP_ACK => {
                return info.ok_or_else(|| {
                    proto("NBD_REP_ACK to NBD_OPT_GO without NBD_INFO_EXPORT".into())
                });
            }
            t => return Err(proto(format!("reply type {t} to NBD_OPT_GO"))),
        }
    }
}

fn send_abort(s: &mut Stream) -> io::Result<()> {
    let mut msg = Vec::with_capacity(16);
    msg.extend_from_slice(&IHAVEOPT.to_be_bytes());
    msg.extend_from_slice(&NBD_OPT_ABORT.to_be_bytes());
    msg.extend_from_slice(&0u32.to_be_bytes());
    s.write_all(&msg)
}

fn request_header(cmd: u16, flags: u16, handle: u64, offset: u64, len: u32) -> [u8; 28] {
    let mut h = [0u8; 28];
    h[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
    h[4..6].copy_from_slice(&flags.to_be_bytes());
    h[6..8].copy_from_slice(&cmd.to_be_bytes());
    h[8..16].copy_from_slice(&handle.to_be_bytes());
    h[16..24].copy_from_slice(&offset.to_be_bytes());
    h[24..28].copy_from_slice(&len.to_be_bytes());
    h
}

fn cmd_name(cmd: u16) -> &'static str {
    match cmd {
        NBD_CMD_READ => "a read",
        NBD_CMD_WRITE => "a write",
        NBD_CMD_FLUSH => "a flush",
        NBD_CMD_TRIM => "a trim",
        _ => "a request",
    }
}

fn errno_kind(errno: u32) -> io::ErrorKind {
    match errno {
        1 => io::ErrorKind::PermissionDenied,
        22 | 75 => io::ErrorKind::InvalidInput,
        28 => io::ErrorKind::StorageFull,
        95 => io::ErrorKind::Unsupported,
        _ => io::ErrorKind::Other,
    }
}

/// A length that fits the protocol's u32 (callers keep chunks at most [`MAX_CHUNK`] and names
/// at most [`MAX_EXPORT_NAME`]).
fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

#[cfg(test)]
mod tests {
    //! Against a scripted server on a unix socket: greetings and replies qemu-nbd never sends.
    use super::*;
    use std::os::unix::net::UnixListener;

    /// Removes the socket's directory on drop.
    struct Dir(std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Serves one connection with `script`, returns the address.
    fn server(tag: &str, script: impl FnOnce(UnixStream) + Send + 'static) -> (NbdAddr, Dir) {
        let dir = std::env::temp_dir().join(format!("ftvm-nbd-unit-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("s");
        let l = UnixListener::bind(&sock).unwrap();
        std::thread::spawn(move || {
            if let Ok((s, _)) = l.accept() {
                script(s);
            }
        });
        (NbdAddr::Unix(sock), Dir(dir))
    }

    /// The greeting; the client may hang up half-way (it refuses a bad one), so errors are
    /// ignored.
    fn greet(s: &mut UnixStream, second: u64, hflags: u16) {
        let mut b = NBDMAGIC.to_be_bytes().to_vec();
        b.extend_from_slice(&second.to_be_bytes());
        b.extend_from_slice(&hflags.to_be_bytes());
        let _ = s.write_all(&b);
    }

    /// Reads the client flags and the OPT_GO option.
    fn read_go(s: &mut UnixStream) {
        let mut h = [0u8; 20];
        s.read_exact(&mut h).unwrap();
        assert_eq!(be64(&h[4..12]), IHAVEOPT);
        assert_eq!(be32(&h[12..16]), NBD_OPT_GO);
        let mut d = vec![0u8; be32(&h[16..20]) as usize];
        s.read_exact(&mut d).unwrap();
    }

    fn opt_reply(s: &mut UnixStream, rtype: u32, data: &[u8]) {
        s.write_all(&OPT_REPLY_MAGIC.to_be_bytes()).unwrap();
        s.write_all(&NBD_OPT_GO.to_be_bytes()).unwrap();
        s.write_all(&rtype.to_be_bytes()).unwrap();
        s.write_all(&len32(data.len()).to_be_bytes()).unwrap();
        s.write_all(data).unwrap();
    }

    fn go_ok(s: &mut UnixStream, size: u64, flags: u16) {
        greet(s, IHAVEOPT, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
        read_go(s);
        let mut info = NBD_INFO_EXPORT.to_be_bytes().to_vec();
        info.extend_from_slice(&size.to_be_bytes());
        info.extend_from_slice(&flags.to_be_bytes());
        opt_reply(s, NBD_REP_INFO, &info);
        opt_reply(s, NBD_REP_ACK, &[]);
    }

    const T: Duration = Duration::from_secs(2);

    #[test]
    fn not_nbd_and_oldstyle_are_named() {
        let (a, _d) = server("http", |mut s| {
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        });
        assert!(matches!(
            NbdClient::connect(&a, "", T),
            Err(NbdError::NotNbd { .. })
        ));
        let (a, _d) = server("old", |mut s| greet(&mut s, CLISERV_MAGIC, 0));
        let e = NbdClient::connect(&a, "", T).unwrap_err();
        assert!(
            matches!(
                e,
                NbdError::Unsupported {
                    style: "oldstyle",
                    ..
                }
            ),
            "{e}"
        );
        let (a, _d) = server("nonfixed", |mut s| greet(&mut s, IHAVEOPT, 0));
        assert!(matches!(
            NbdClient::connect(&a, "", T),
            Err(NbdError::Unsupported { .. })
        ));
    }

    #[test]
    fn option_errors_carry_the_servers_words() {
        let (a, _d) = server("tls", |mut s| {
            greet(&mut s, IHAVEOPT, NBD_FLAG_FIXED_NEWSTYLE);
            read_go(&mut s);
            opt_reply(&mut s, NBD_REP_FLAG_ERROR | 5, b"TLS first, please");
        });
        let e = NbdClient::connect(&a, "x", T).unwrap_err().to_string();
        assert!(
            e.contains("TLS_REQD") && e.contains("TLS first, please"),
            "{e}"
        );
        let (a, _d) = server("noinfo", |mut s| {
            greet(&mut s, IHAVEOPT, NBD_FLAG_FIXED_NEWSTYLE);
            read_go(&mut s);
            opt_reply(&mut s, NBD_REP_ACK, &[]);
        });
        assert!(matches!(
            NbdClient::connect(&a, "", T),
            Err(NbdError::Protocol { .. })
        ));
    }

    #[test]
    fn a_reply_for_another_handle_breaks_the_connection() {
        let (a, _d) = server("handle", |mut s| {
            go_ok(&mut s, 4096, NBD_FLAG_HAS_FLAGS);
            let mut req = [0u8; 28];
            s.read_exact(&mut req).unwrap();
            let handle = be64(&req[8..16]);
            s.write_all(&SIMPLE_REPLY_MAGIC.to_be_bytes()).unwrap();
            s.write_all(&0u32.to_be_bytes()).unwrap();
            s.write_all(&(handle + 1).to_be_bytes()).unwrap();
            s.write_all(&[0u8; 512]).unwrap();
            std::thread::sleep(Duration::from_secs(1));
        });
        let mut c = NbdClient::connect(&a, "", T).unwrap();
        assert_eq!(c.size(), 4096);
        assert!(!c.can_trim() && !c.can_fua() && !c.can_flush());
        c.flush().unwrap(); // no NBD_FLAG_SEND_FLUSH: nothing to send
        assert_eq!(
            c.trim(0, 512).unwrap_err().kind(),
            io::ErrorKind::Unsupported
        );
        assert_eq!(
            c.write_fua(0, &[0; 512]).unwrap_err().kind(),
            io::ErrorKind::Unsupported
        );
        let mut buf = [0u8; 512];
        let e = c.read_at(0, &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        assert!(e.to_string().contains("handle"), "{e}");
        assert_eq!(
            c.read_at(0, &mut buf).unwrap_err().kind(),
            io::ErrorKind::NotConnected
        );
    }

    #[test]
    fn a_structured_reply_is_a_protocol_error() {
        let (a, _d) = server("structured", |mut s| {
            go_ok(&mut s, 4096, NBD_FLAG_HAS_FLAGS);
            let mut req = [0u8; 28];
            s.read_exact(&mut req).unwrap();
            s.write_all(&STRUCTURED_REPLY_MAGIC.to_be_bytes()).unwrap();
            s.write_all(&[0u8; 16]).unwrap();
            std::thread::sleep(Duration::from_secs(1));
        });
        let mut c = NbdClient::connect(&a, "", T).unwrap();
        let e = c.read_at(0, &mut [0u8; 16]).unwrap_err();
        assert!(e.to_string().contains("structured"), "{e}");
    }

    /// What a well-behaved server sends for a connect and one 512-byte read.
    fn good_stream() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&NBDMAGIC.to_be_bytes());
        b.extend_from_slice(&IHAVEOPT.to_be_bytes());
        b.extend_from_slice(&(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES).to_be_bytes());
        let mut reply = |rtype: u32, data: &[u8]| {
            b.extend_from_slice(&OPT_REPLY_MAGIC.to_be_bytes());
            b.extend_from_slice(&NBD_OPT_GO.to_be_bytes());
            b.extend_from_slice(&rtype.to_be_bytes());
            b.extend_from_slice(&len32(data.len()).to_be_bytes());
            b.extend_from_slice(data);
        };
        let mut info = NBD_INFO_EXPORT.to_be_bytes().to_vec();
        info.extend_from_slice(&4096u64.to_be_bytes());
        info.extend_from_slice(&(NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH).to_be_bytes());
        reply(NBD_REP_INFO, &info);
        reply(NBD_REP_ACK, &[]);
        b.extend_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
        b.extend_from_slice(&0u32.to_be_bytes());
        b.extend_from_slice(&1u64.to_be_bytes());
        b.extend_from_slice(&[0x5a; 512]);
        b
    }

    /// Every truncation and every single-byte corruption of a good server's bytes: the client
    /// never panics or hangs, and a truncated stream always fails.
    #[test]
    fn truncated_or_corrupted_servers() {
        let good = good_stream();
        let mut streams = Vec::new();
        for i in 0..good.len() {
            streams.push((good[..i].to_vec(), true));
            let mut bad = good.clone();
            bad[i] ^= 0xff;
            streams.push((bad, false));
        }
        streams.push((good.clone(), false));
        let n = streams.len();
        let script: Vec<Vec<u8>> = streams.iter().map(|(b, _)| b.clone()).collect();
        let dir =
            std::env::temp_dir().join(format!("ftvm-nbd-unit-garbage-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let _guard = Dir(dir.clone());
        let sock = dir.join("s");
        let l = UnixListener::bind(&sock).unwrap();
        std::thread::spawn(move || {
            for bytes in script {
                let Ok((mut s, _)) = l.accept() else { return };
                let _ = s.write_all(&bytes);
                let _ = s.shutdown(std::net::Shutdown::Write);
                let mut sink = Vec::new();
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let _ = s.read_to_end(&mut sink);
            }
        });
        let addr = NbdAddr::Unix(sock);
        let t0 = std::time::Instant::now();
        let mut ok = 0;
        for (i, (_, must_fail)) in streams.iter().enumerate() {
            let r = NbdClient::connect(&addr, "e", T)
                .map_err(|e| e.to_string())
                .and_then(|mut c| {
                    let mut buf = [0u8; 512];
                    c.read_at(0, &mut buf).map_err(|e| e.to_string())?;
                    Ok(buf)
                });
            if *must_fail {
                assert!(r.is_err(), "stream {i} of {n}: truncated, yet {r:?}");
            }
            if i == n - 1 {
                assert_eq!(r.as_ref().ok(), Some(&[0x5a; 512]), "{r:?}");
            }
            ok += usize::from(r.is_ok());
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
        assert!(ok < n / 2, "{ok} of {n} damaged streams accepted");
    }
}
