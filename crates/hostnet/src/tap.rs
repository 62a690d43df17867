//! [`TapBackend`]: a Linux tap device, attached through `/dev/net/tun` with `TUNSETIFF` and
//! `IFF_TAP | IFF_NO_PI`, so that every read is one Ethernet frame and every write sends one.
//!
//! The interface must exist or be creatable by this process (`ip tuntap add NAME mode tap user
//! USER`, or CAP_NET_ADMIN); bringing it up and bridging it are the host administrator's
//! business. A reader thread polls the descriptor (so that it can notice it should stop) and
//! queues each frame ([`crate::rx`]).

use crate::rx::{bump, Monitor, Shared};
use crate::{HostNetError, MAX_FRAME};
use machine::virtio::NetBackend;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// The clone device.
pub const TUN_DEVICE: &str = "/dev/net/tun";

/// Checks a tap interface name: 1 to 15 bytes (IFNAMSIZ with its terminator), no '/', ':' or
/// whitespace.
pub fn check_ifname(name: &str) -> Result<String, HostNetError> {
    let ok = !name.is_empty()
        && name.len() < libc::IFNAMSIZ
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0);
    if ok {
        Ok(name.to_owned())
    } else {
        Err(HostNetError::BadIfname(name.to_owned()))
    }
}

/// A network backend on a tap device.
pub struct TapBackend {
    file: Arc<File>,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
    ifname: String,
}

impl TapBackend {
    /// Attaches to tap interface `ifname` (created if it does not exist and this process may).
    pub fn open(ifname: &str) -> Result<TapBackend, HostNetError> {
        let ifname = check_ifname(ifname)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(TUN_DEVICE)
            .map_err(|source| HostNetError::TapOpen {
                device: TUN_DEVICE.into(),
                source,
            })?;
        // SAFETY: ifreq is plain data (a name and a union of plain fields); all zero is valid.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (d, s) in req.ifr_name.iter_mut().zip(ifname.bytes()) {
            *d = s as libc::c_char;
        }
        req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which `req` is, alive for the
        // call; the descriptor is the open clone device.
        let r = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) };
        if r < 0 {
            return Err(HostNetError::TapAttach {
                ifname,
                source: std::io::Error::last_os_error(),
            });
        }
        let file = Arc::new(file);
        let shared = Shared::new();
        let stop = Arc::new(AtomicBool::new(false));
        let (f, sh, st, name) = (
            Arc::clone(&file),
            Arc::clone(&shared),
            Arc::clone(&stop),
            ifname.clone(),
        );
        let reader = std::thread::Builder::new()
            .name("ftvm-netdev-tap".into())
            .spawn(move || {
                let why = read_frames(&f, &sh, &st);
                sh.close(format!("tap {name}: {why}"));
            })
            .map_err(HostNetError::Setup)?;
        Ok(TapBackend {
            file,
            shared,
            stop,
            reader: Some(reader),
            ifname,
        })
    }

    /// A handle on the counters that stays valid after the backend is given away.
    pub fn monitor(&self) -> Monitor {
        Monitor(Arc::clone(&self.shared))
    }

    /// The interface's name.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }
}

/// Queues every frame read until `stop` or an error; returns why it ended.
fn read_frames(f: &File, sh: &Shared, stop: &AtomicBool) -> String {
    let mut buf = vec![0u8; MAX_FRAME + 1];
    while !stop.load(Ordering::Relaxed) {
        let mut p = libc::pollfd {
            fd: f.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one live pollfd; the 200 ms timeout bounds how long a stop request waits.
        let r = unsafe { libc::poll(&mut p, 1, 200) };
        if r <= 0 {
            continue;
        }
        match (&*f).read(&mut buf) {
            Ok(0) => return "the device was closed".into(),
            Ok(n) if n > MAX_FRAME => bump(&sh.counters.rx_oversized),
            Ok(n) => sh.push(buf[..n].to_vec()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return format!("read failed: {e}"),
        }
    }
    "stopped".into()
}

impl NetBackend for TapBackend {
    fn transmit(&mut self, frame: &[u8]) {
        match (&*self.file).write(frame) {
            Ok(n) if n == frame.len() => bump(&self.shared.counters.tx_frames),
            // A tap drops what it cannot take (interface down, queue full): so do we.
            _ => bump(&self.shared.counters.tx_dropped),
        }
    }

    fn receive(&mut self) -> Option<Vec<u8>> {
        self.shared.pop()
    }

    fn set_wake(&mut self, wake: &machine::wake::Waker) {
        self.shared.set_wake(wake);
    }
}

impl Drop for TapBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.reader.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_are_checked() {
        assert!(check_ifname("tap0").is_ok());
        assert!(check_ifname("fifteen-bytes-x").is_ok());
        for bad in ["", "sixteen-bytes-xx", "a/b", "a b", "a:1"] {
            assert!(check_ifname(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_tap_that_cannot_be_opened_says_why() {
        // Either /dev/net/tun is missing, or attaching needs privileges we may lack, or (as
        // root) it works: every outcome but a panic is fine, and an error names the device.
        match TapBackend::open("ftvmtest0") {
            Ok(t) => assert_eq!(t.ifname(), "ftvmtest0"),
            Err(e) => {
                let m = e.to_string();
                assert!(m.contains("/dev/net/tun"), "{m}");
            }
        }
    }
}
