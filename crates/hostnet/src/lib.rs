//! The host ends of the virtio network card ([`machine::virtio::NetBackend`]): where the
//! guest's frames go and where the frames it receives come from.
//!
//! - [`StreamBackend`]: QEMU's `-netdev stream` framing (each frame preceded by its length, a
//!   4-byte big-endian integer) over a unix socket or a TCP connection. This is what passt
//!   speaks on its unix socket, so a guest gets unprivileged networking with host ports
//!   forwarded to it (`passt -t PORT`).
//! - [`TapBackend`]: a Linux tap device (`/dev/net/tun`, `IFF_TAP | IFF_NO_PI`), for a real
//!   LAN through a bridge.
//!
//! Both read on a thread of their own into a bounded queue ([`rx`]), which the device drains
//! only during its device pass, and call the machine's wake-up
//! ([`machine::virtio::NetBackend::set_wake`]) so that a host loop waiting while the guest
//! idles wakes up. Bad input from the outside is
//! dropped and counted ([`HostNetStats`]), a closed socket is reported
//! ([`StreamBackend::closed`]) and counted; nothing here panics on what a peer sends.
//!
//! # Why our own
//!
//! Each backend is a couple of hundred lines over `std` and `libc`. The crates that exist
//! either do much more than this (`tun-tap`, `tokio-tun`: async runtimes, TUN as well as TAP,
//! interface configuration) or do not speak QEMU's stream framing at all; none has the one
//! property the machine needs, a non-blocking `receive` drained at a deterministic point with a
//! wake-up for the idle loop, and adapting one would take as much code as this.
//!
//! This crate must never decide when a frame enters the guest: it only queues what arrives.

pub mod rx;
pub mod stream;
pub mod tap;

pub use rx::HostNetStats;
pub use stream::StreamBackend;
pub use tap::TapBackend;

use machine::virtio::NetBackend;
use std::path::PathBuf;

/// The largest frame either backend accepts from the outside (without the virtio header).
pub const MAX_FRAME: usize = machine::virtio::net::MAX_FRAME;
/// Frames received and not yet taken by the guest; more are dropped (and counted), as a NIC
/// whose ring is full drops them.
pub const RX_QUEUE_FRAMES: usize = 512;
/// Frames the guest sent that a stream backend's writer has not written yet; more are dropped
/// (and counted), as a NIC drops what its full transmit ring cannot take. The guest never
/// waits for the host end: see [`stream`](crate::stream).
pub const TX_QUEUE_FRAMES: usize = 1024;

/// Errors opening a host network backend.
#[derive(Debug, thiserror::Error)]
pub enum HostNetError {
    /// netdev `{0}` is malformed: expected stream,path=SOCKET | stream,addr=HOST:PORT | tap,ifname=NAME
    #[error(
        "netdev `{0}` is malformed: expected stream,path=SOCKET | stream,addr=HOST:PORT | \
         tap,ifname=NAME"
    )]
    MalformedNetdev(String),
    /// cannot connect to {what}: {source}
    #[error("cannot connect to {what}: {source}")]
    Connect {
        /// The socket's path or address.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// cannot open {device}: {source}
    #[error(
        "cannot open {device}: {source} (is the tun module loaded, and may this user open it?)"
    )]
    TapOpen {
        /// The clone device, `/dev/net/tun`.
        device: String,
        /// Why.
        source: std::io::Error,
    },
    /// cannot attach to tap device {ifname}: {source}
    #[error(
        "cannot attach to tap device {ifname} through /dev/net/tun: {source} (create it with \
         `ip tuntap add {ifname} mode tap` and run as its owner or with CAP_NET_ADMIN)"
    )]
    TapAttach {
        /// The interface asked for.
        ifname: String,
        /// Why.
        source: std::io::Error,
    },
    /// tap interface name `{0}` is not valid: 1 to 15 bytes, no '/', ':' or whitespace
    #[error("tap interface name `{0}` is not valid: 1 to 15 bytes, no '/', ':' or whitespace")]
    BadIfname(String),
    /// cannot set up the backend's socket or reader thread: {0}
    #[error("cannot set up the network backend's socket or reader thread: {0}")]
    Setup(std::io::Error),
}

/// Where a stream backend connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamAddr {
    /// A unix socket (passt's `-s PATH`).
    Unix(PathBuf),
    /// A TCP `host:port`.
    Tcp(String),
}

impl std::fmt::Display for StreamAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamAddr::Unix(p) => write!(f, "unix socket {}", p.display()),
            StreamAddr::Tcp(a) => write!(f, "TCP {a}"),
        }
    }
}

/// A `--netdev` option, in QEMU's spelling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetdevConfig {
    /// `stream,path=SOCKET` or `stream,addr=HOST:PORT`.
    Stream(StreamAddr),
    /// `tap,ifname=NAME`.
    Tap(String),
}

impl std::str::FromStr for NetdevConfig {
    type Err = HostNetError;

    /// Parses `stream,path=SOCKET`, `stream,addr=HOST:PORT` or `tap,ifname=NAME`; QEMU's
    /// `id=...` and `server=off` are accepted and ignored.
    fn from_str(s: &str) -> Result<Self, HostNetError> {
        let bad = || HostNetError::MalformedNetdev(s.to_owned());
        let mut parts = s.split(',');
        let kind = parts.next().ok_or_else(bad)?;
        let (mut path, mut addr, mut ifname) = (None, None, None);
        for p in parts {
            let (k, v) = p.split_once('=').ok_or_else(bad)?;
            if v.is_empty() {
                return Err(bad());
            }
            if k == "id" || (kind == "stream" && k == "server" && v == "off") {
                continue;
            }
            let slot = match (kind, k) {
                ("stream", "path" | "addr.path") => &mut path,
                ("stream", "addr") => &mut addr,
                ("tap", "ifname") => &mut ifname,
                _ => return Err(bad()),
            };
            if slot.replace(v.to_owned()).is_some() {
                return Err(bad());
            }
        }
        match (kind, path, addr, ifname) {
            ("stream", Some(p), None, None) => Ok(NetdevConfig::Stream(StreamAddr::Unix(p.into()))),
            ("stream", None, Some(a), None) if a.contains(':') => {
                Ok(NetdevConfig::Stream(StreamAddr::Tcp(a)))
            }
            ("tap", None, None, Some(n)) => Ok(NetdevConfig::Tap(tap::check_ifname(&n)?)),
            _ => Err(bad()),
        }
    }
}

/// A connected or opened backend, its concrete type kept for its counters.
pub enum HostNet {
    /// A stream socket.
    Stream(StreamBackend),
    /// A tap device.
    Tap(TapBackend),
}

impl HostNet {
    /// Connects to or opens what `cfg` names.
    pub fn open(cfg: &NetdevConfig) -> Result<HostNet, HostNetError> {
        Ok(match cfg {
            NetdevConfig::Stream(a) => HostNet::Stream(StreamBackend::connect(a)?),
            NetdevConfig::Tap(n) => HostNet::Tap(TapBackend::open(n)?),
        })
    }

    /// A handle on the backend's counters and state that stays valid after the backend is
    /// given to the machine.
    pub fn monitor(&self) -> rx::Monitor {
        match self {
            HostNet::Stream(s) => s.monitor(),
            HostNet::Tap(t) => t.monitor(),
        }
    }

    /// The backend, for `Machine::replace_net` (or a wrapper of the record/replay layer).
    pub fn into_backend(self) -> Box<dyn NetBackend> {
        match self {
            HostNet::Stream(s) => Box::new(s),
            HostNet::Tap(t) => Box::new(t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netdev_options_parse() {
        let p = |s: &str| s.parse::<NetdevConfig>();
        assert_eq!(
            p("stream,path=/tmp/passt.sock").unwrap(),
            NetdevConfig::Stream(StreamAddr::Unix("/tmp/passt.sock".into()))
        );
        assert_eq!(
            p("stream,id=n0,server=off,addr=127.0.0.1:5555").unwrap(),
            NetdevConfig::Stream(StreamAddr::Tcp("127.0.0.1:5555".into()))
        );
        assert_eq!(
            p("tap,ifname=tap0").unwrap(),
            NetdevConfig::Tap("tap0".into())
        );
        for bad in [
            "",
            "stream",
            "stream,path=",
            "stream,path=a,path=b",
            "stream,path=a,addr=h:1",
            "stream,addr=nohostport",
            "stream,server=on,path=a",
            "tap",
            "tap,path=x",
            "tap,ifname=averyveryverylongname",
            "tap,ifname=a/b",
            "user",
            "stream,path",
        ] {
            assert!(p(bad).is_err(), "{bad}");
        }
        assert!(p("tap,ifname=a b")
            .unwrap_err()
            .to_string()
            .contains("not valid"));
    }
}
