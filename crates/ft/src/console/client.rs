//! A console client that survives failover: it keeps its output offset and the input the VM
//! may not have yet, and on a broken connection tries each endpoint in turn until one is live,
//! resuming from the offsets (see the module above). The demo, the tests and `ftvm console`
//! use it. It speaks the endpoint's encrypted protocol with an operator's [`Secret`].

use super::Secret;
use crate::noise::{SealedReader, SealedWriter};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Why the client gave up.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// no endpoint answered as live before the deadline
    #[error("no console endpoint was live within {0:?} (tried {1})")]
    NoEndpoint(Duration, String),
    /// an endpoint answered something unexpected
    #[error("console endpoint {0}: {1}")]
    Protocol(SocketAddr, String),
}

/// A resuming console client.
pub struct ConsoleClient {
    addrs: Vec<SocketAddr>,
    /// The endpoint currently used (index into `addrs`).
    cur: usize,
    stream: Option<(SealedWriter<TcpStream>, BufReader<SealedReader<TcpStream>>)>,
    secret: Secret,
    /// Output bytes received so far.
    out_offset: u64,
    /// Input offset of `unacked[0]`.
    in_base: u64,
    /// Input sent that the VM may not have taken.
    unacked: Vec<u8>,
    /// How long to keep trying the endpoints after a connection breaks.
    pub reconnect_for: Duration,
    /// Connections made (the first included).
    pub connections: u32,
    /// After this long without output while waiting, ask the other endpoints whether one of
    /// them is live (a frozen or cut-off primary keeps its connection open but says nothing).
    pub probe_after: Duration,
}

impl ConsoleClient {
    /// A client of the endpoints `addrs` (the primary's first) holding `secret`; nothing is
    /// connected yet.
    pub fn new(addrs: Vec<SocketAddr>, secret: Secret) -> ConsoleClient {
        ConsoleClient {
            addrs,
            secret,
            cur: 0,
            stream: None,
            out_offset: 0,
            in_base: 0,
            unacked: Vec::new(),
            reconnect_for: Duration::from_secs(30),
            connections: 0,
            probe_after: Duration::from_secs(1),
        }
    }

    /// The endpoint in use.
    pub fn endpoint(&self) -> Option<SocketAddr> {
        self.addrs.get(self.cur).copied()
    }

    /// Output bytes received so far.
    pub fn out_offset(&self) -> u64 {
        self.out_offset
    }

    fn try_connect(&mut self, i: usize) -> Result<(), ClientError> {
        let a = self.addrs[i];
        let proto = |e: std::io::Error| ClientError::Protocol(a, e.to_string());
        let (mut w, s) =
            super::connect(a, &self.secret, Duration::from_millis(500)).map_err(proto)?;
        w.write_all(format!("CONSOLE {}\n", self.out_offset).as_bytes())
            .map_err(proto)?;
        s.get_ref()
            .set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(proto)?;
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line).map_err(proto)?;
        let Some(off) = line.strip_prefix("OK ") else {
            return Err(ClientError::Protocol(a, line.trim().to_string()));
        };
        let in_off: u64 = off
            .trim()
            .parse()
            .map_err(|_| ClientError::Protocol(a, format!("bad answer {line:?}")))?;
        // Drop what the VM has; send the rest again.
        let have = in_off.saturating_sub(self.in_base);
        let have = usize::try_from(have)
            .unwrap_or(usize::MAX)
            .min(self.unacked.len());
        self.unacked.drain(..have);
        self.in_base += have as u64;
        if in_off > self.in_base {
            return Err(ClientError::Protocol(
                a,
                format!("the VM has input up to {in_off}, more than was sent"),
            ));
        }
        if !self.unacked.is_empty() {
            w.write_all(&self.unacked).map_err(proto)?;
        }
        self.cur = i;
        self.connections += 1;
        self.stream = Some((w, r));
        Ok(())
    }

    /// Connects (or reconnects) to the first endpoint that is live, starting with the current.
    pub fn connect(&mut self) -> Result<(), ClientError> {
        self.stream = None;
        let t0 = Instant::now();
        let n = self.addrs.len();
        loop {
            for k in 0..n {
                let i = (self.cur + k) % n;
                if self.try_connect(i).is_ok() {
                    return Ok(());
                }
            }
            if t0.elapsed() > self.reconnect_for {
                let tried: Vec<String> = self.addrs.iter().map(|a| a.to_string()).collect();
                return Err(ClientError::NoEndpoint(
                    self.reconnect_for,
                    tried.join(", "),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Switches to another endpoint if one of them is live now; `true` if it did.
    fn probe_others(&mut self) -> bool {
        let n = self.addrs.len();
        for k in 1..n {
            let i = (self.cur + k) % n;
            let saved = self.stream.take();
            if self.try_connect(i).is_ok() {
                return true;
            }
            self.stream = saved;
        }
        false
    }

    /// Sends input (kept until a later connection shows the VM took it).
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.unacked.extend_from_slice(bytes);
        // Keep the resend buffer bounded: what a live endpoint reported taken was dropped at
        // connect time; beyond 1 MiB of unconfirmed input, reconnecting confirms it.
        if self.stream.is_none() {
            return self.connect();
        }
        let ok = self
            .stream
            .as_mut()
            .is_some_and(|(w, _)| w.write_all(bytes).is_ok());
        if !ok {
            self.connect()?;
        }
        Ok(())
    }

    /// Reads output until a line for which `done` says true, or `timeout`; reconnects on a
    /// broken connection. Returns the lines read (without line ends), the last one matching.
    pub fn read_line_until(
        &mut self,
        done: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Result<Option<String>, ClientError> {
        let t0 = Instant::now();
        let mut line = Vec::new();
        let mut heard = Instant::now();
        while t0.elapsed() < timeout {
            if heard.elapsed() > self.probe_after {
                heard = Instant::now();
                // The output resumes at the same offset: a partial line carries on.
                self.probe_others();
            }
            if self.stream.is_none() {
                self.connect()?;
            }
            let Some((_, r)) = self.stream.as_mut() else {
                continue;
            };
            let _ = r
                .get_ref()
                .get_ref()
                .set_read_timeout(Some(Duration::from_millis(100)));
            let mut b = [0u8; 1];
            match r.read(&mut b) {
                Ok(0) => self.stream = None,
                Ok(_) => {
                    heard = Instant::now();
                    self.out_offset += 1;
                    if b[0] == b'\n' {
                        let s = String::from_utf8_lossy(&line)
                            .trim_end_matches('\r')
                            .to_string();
                        line.clear();
                        if done(&s) {
                            return Ok(Some(s));
                        }
                    } else {
                        line.push(b[0]);
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => self.stream = None,
            }
        }
        Ok(None)
    }

    /// Reads whatever output arrives within `wait` (reconnecting on a broken connection).
    pub fn read_some(&mut self, wait: Duration) -> Result<Vec<u8>, ClientError> {
        if self.stream.is_none() {
            self.connect()?;
        }
        let mut out = Vec::new();
        if let Some((_, r)) = self.stream.as_mut() {
            let _ = r.get_ref().get_ref().set_read_timeout(Some(wait));
            let mut b = [0u8; 4096];
            match r.read(&mut b) {
                Ok(0) => self.stream = None,
                Ok(n) => out.extend_from_slice(&b[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => self.stream = None,
            }
        }
        self.out_offset += out.len() as u64;
        Ok(out)
    }
}
