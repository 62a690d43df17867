//! The host side of the console: standard input polled without threads, the terminal in raw
//! mode while the guest owns it (restored on every way out, including panics and SIGTERM), the
//! QEMU-style Ctrl-A escape, and termination signals turned into a flag the run loop checks.

use std::io::Write;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

/// The last termination signal received (0 = none).
static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    SIGNAL.store(sig, Ordering::SeqCst);
}

/// Catches SIGINT, SIGTERM and SIGHUP so the loop can restore the terminal and exit.
pub fn catch_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value; the handler only
        // stores to an atomic, which is async-signal-safe.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// The termination signal received, if any.
pub fn signal() -> Option<i32> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// Puts the terminal on stdin in raw mode for as long as it lives.
pub struct RawMode {
    saved: libc::termios,
}

impl RawMode {
    /// Raw mode if stdin is a terminal; `None` otherwise (or if the terminal refuses).
    pub fn enable() -> Option<RawMode> {
        // SAFETY: isatty only inspects the descriptor.
        if unsafe { libc::isatty(0) } != 1 {
            return None;
        }
        // SAFETY: termios is plain data; tcgetattr fills it and we check its result.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `saved` is a valid, writable termios.
        if unsafe { libc::tcgetattr(0, &mut saved) } != 0 {
            return None;
        }
        let mut raw = saved;
        // SAFETY: `raw` is a valid termios; cfmakeraw only edits its flags.
        unsafe { libc::cfmakeraw(&mut raw) };
        // SAFETY: `raw` is a valid termios for descriptor 0.
        if unsafe { libc::tcsetattr(0, libc::TCSANOW, &raw) } != 0 {
            return None;
        }
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restores the settings read in `enable` on the same descriptor.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, &self.saved) };
    }
}

/// What the user typed, after escape processing.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Typed {
    /// Bytes for the guest.
    pub bytes: Vec<u8>,
    /// Ctrl-A X: quit.
    pub quit: bool,
    /// Ctrl-A S: show the machine's state.
    pub status: bool,
}

/// Standard input, read only when it has something.
pub struct Input {
    eof: bool,
    escapes: bool,
    after_ctrl_a: bool,
}

const CTRL_A: u8 = 0x01;

impl Input {
    /// Standard input; Ctrl-A escapes are interpreted only when `escapes` (a terminal).
    pub fn new(escapes: bool) -> Input {
        Input {
            eof: false,
            escapes,
            after_ctrl_a: false,
        }
    }

    /// Whether standard input has ended (it is then not worth waiting on).
    pub fn at_eof(&self) -> bool {
        self.eof
    }

    /// Waits up to `timeout` (`None`: until something happens) for input and returns what
    /// arrived. Returns early, possibly with nothing, when a signal arrives. Once stdin is at
    /// end of file it only sleeps.
    pub fn wait(&mut self, timeout: Option<Duration>) -> Typed {
        let ts = timeout.map(|d| libc::timespec {
            tv_sec: d.as_secs().min(i32::MAX as u64) as libc::time_t,
            tv_nsec: d.subsec_nanos() as libc::c_long,
        });
        let tsp = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        let pollfd = |fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // Stdin, unless at end of file.
        let mut pfds = [pollfd(0)];
        let fds = &mut pfds[usize::from(self.eof)..];
        // SAFETY: `fds` and `tsp` point to live values (or null for an infinite timeout);
        // with an empty slice the descriptor array is not read.
        let r = unsafe {
            libc::ppoll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                tsp,
                std::ptr::null(),
            )
        };
        let ready = |p: &libc::pollfd| {
            p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0
        };
        if r <= 0 || self.eof || !ready(&pfds[0]) {
            return Typed::default();
        }
        let mut buf = [0u8; 4096];
        // SAFETY: `buf` is writable for its length.
        let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            let err = std::io::Error::last_os_error().kind();
            if n == 0
                || !matches!(
                    err,
                    std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock
                )
            {
                self.eof = true;
            }
            return Typed::default();
        }
        self.filter(&buf[..n as usize])
    }

    /// Applies the Ctrl-A escapes.
    fn filter(&mut self, data: &[u8]) -> Typed {
        let mut t = Typed::default();
        if !self.escapes {
            t.bytes.extend_from_slice(data);
            return t;
        }
        for &b in data {
            if self.after_ctrl_a {
                self.after_ctrl_a = false;
                match b {
                    b'x' | b'X' => t.quit = true,
                    b's' | b'S' => t.status = true,
                    CTRL_A => t.bytes.push(CTRL_A),
                    b'h' | b'H' | b'?' => {
                        let _ = write!(
                            std::io::stderr(),
                            "\r\nC-a x    exit\r\nC-a s    show machine state\r\nC-a C-a  send C-a\r\n"
                        );
                    }
                    _ => {}
                }
            } else if b == CTRL_A {
                self.after_ctrl_a = true;
            } else {
                t.bytes.push(b);
            }
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        let mut i = Input::new(true);
        let t = i.filter(b"ab\x01\x01c\x01");
        assert_eq!(t.bytes, b"ab\x01c");
        assert!(!t.quit);
        let t = i.filter(b"x");
        assert!(t.quit);
        assert!(t.bytes.is_empty());
        let mut raw = Input::new(false);
        assert_eq!(raw.filter(b"\x01x").bytes, b"\x01x");
    }
}
