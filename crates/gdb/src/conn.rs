//! The TCP connection as gdbstub reads it, with packets checked first: a packet whose checksum
//! is wrong is answered with `-` (the protocol's "send it again") and dropped, instead of ending
//! the session as gdbstub does on a checksum error. Everything else passes through unchanged.

use gdbstub::conn::{Connection, ConnectionExt};
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::TcpStream;

/// Packets longer than this are refused (dropped with a `-`): gdbstub's own buffer is 4 KiB.
const MAX_PACKET: usize = 64 << 10;

/// A checked connection.
pub struct Checked {
    stream: TcpStream,
    /// Bytes of whole, checked packets not yet given to gdbstub.
    ready: VecDeque<u8>,
}

impl Checked {
    /// Wraps a connected stream.
    pub fn new(stream: TcpStream) -> Checked {
        Checked {
            stream,
            ready: VecDeque::new(),
        }
    }

    fn byte(&mut self) -> std::io::Result<u8> {
        self.stream.set_nonblocking(false)?;
        let mut b = [0u8];
        Read::read_exact(&mut self.stream, &mut b)?;
        Ok(b[0])
    }

    /// Reads from the socket until something is ready.
    fn fill(&mut self) -> std::io::Result<()> {
        while self.ready.is_empty() {
            let b = self.byte()?;
            if b != b'$' {
                self.ready.push_back(b);
                break;
            }
            let mut body = Vec::new();
            let mut too_long = false;
            loop {
                let c = self.byte()?;
                if c == b'#' {
                    break;
                }
                if body.len() < MAX_PACKET {
                    body.push(c);
                } else {
                    too_long = true;
                }
            }
            let sum = [self.byte()?, self.byte()?];
            let want = std::str::from_utf8(&sum)
                .ok()
                .and_then(|s| u8::from_str_radix(s, 16).ok());
            let got = body.iter().fold(0u8, |a, b| a.wrapping_add(*b));
            if too_long || want != Some(got) {
                Write::write_all(&mut self.stream, b"-")?;
                continue;
            }
            self.ready.push_back(b'$');
            self.ready.extend(body);
            self.ready.push_back(b'#');
            self.ready.extend(sum);
        }
        Ok(())
    }
}

impl Connection for Checked {
    type Error = std::io::Error;

    fn write(&mut self, byte: u8) -> std::io::Result<()> {
        Write::write_all(&mut self.stream, &[byte])
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        Write::write_all(&mut self.stream, buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Write::flush(&mut self.stream)
    }

    fn on_session_start(&mut self) -> std::io::Result<()> {
        self.stream.set_nodelay(true)
    }
}

impl ConnectionExt for Checked {
    fn read(&mut self) -> std::io::Result<u8> {
        self.fill()?;
        self.ready
            .pop_front()
            .ok_or_else(|| std::io::Error::other("nothing read"))
    }

    fn peek(&mut self) -> std::io::Result<Option<u8>> {
        if let Some(b) = self.ready.front() {
            return Ok(Some(*b));
        }
        self.stream.set_nonblocking(true)?;
        let mut b = [0u8];
        let r = match TcpStream::peek(&self.stream, &mut b) {
            Ok(0) => Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => Ok(Some(b[0])),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        };
        self.stream.set_nonblocking(false)?;
        r
    }
}
