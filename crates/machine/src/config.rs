//! What the user asks for: memory, harts, images, kernel command line, disks, a network card.
//! Plain data, plus the parsers for the textual forms the command line uses (`256M`,
//! `file=X,readonly=on`, `52:54:00:12:34:56`).

use std::path::PathBuf;

/// Smallest RAM the board accepts. Firmware, kernel and device tree need more than this anyway;
/// the loader reports what does not fit.
pub const MIN_MEM: u64 = 8 << 20;
/// Largest RAM the board accepts (guest RAM is one host allocation).
pub const MAX_MEM: u64 = 64 << 30;
/// Most harts `--smp` accepts; they all run interleaved on one host thread.
pub const MAX_HARTS: usize = 64;

/// Errors in the user's configuration.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// memory size `{0}` is malformed: expected a number with an optional K, M or G suffix (e.g. 256M)
    #[error("memory size `{0}` is malformed: expected a number with an optional K, M or G suffix (e.g. 256M)")]
    MalformedSize(String),
    /// memory size {0} bytes is too small: at least 8M is needed
    #[error("memory size {0} bytes is too small: at least 8M is needed")]
    MemTooSmall(u64),
    /// memory size {0} bytes is too large: at most 64G is supported
    #[error("memory size {0} bytes is too large: at most 64G is supported")]
    MemTooLarge(u64),
    /// memory size {0} bytes is not a multiple of 4 KiB
    #[error("memory size {0} bytes is not a multiple of 4 KiB")]
    MemNotPageMultiple(u64),
    /// hart count {0} is out of range: expected 1 to 64
    #[error("hart count {0} is out of range: expected 1 to 64")]
    BadSmp(usize),
    /// drive option `{0}` is malformed: expected file=PATH[,readonly=on|off][,delay=MS] or nbd=HOST:PORT|unix:PATH[,export=NAME][,readonly=on|off][,fua=on|off][,timeout=SECONDS][,delay=MS]
    #[error("drive option `{0}` is malformed: expected file=PATH[,readonly=on|off][,delay=MS] or nbd=HOST:PORT|unix:PATH[,export=NAME][,readonly=on|off][,fua=on|off][,timeout=SECONDS][,delay=MS]")]
    MalformedDrive(String),
    /// {0} disks requested, but the board has 8 virtio slots of which 2 are always in use
    #[error("{0} disks requested, but the board has 8 virtio slots of which 2 are always in use")]
    TooManyDrives(usize),
    /// {0} disks and a network card need {0}+3 virtio slots; the board has 8: use at most 5 disks with a network card
    #[error("{0} disks and a network card need {slots} virtio slots; the board has 8: use at most 5 disks with a network card", slots = .0 + 3)]
    NoSlotForNet(usize),
    /// MAC address `{0}` is malformed: expected six hex bytes separated by colons (e.g. 52:54:00:12:34:56)
    #[error("MAC address `{0}` is malformed: expected six hex bytes separated by colons (e.g. 52:54:00:12:34:56)")]
    MalformedMac(String),
    /// MAC address `{0}` is a multicast address: a network card needs a unicast one (an even first byte)
    #[error("MAC address `{0}` is a multicast address: a network card needs a unicast one (an even first byte)")]
    MulticastMac(String),
    /// MTU {0} is out of range: expected 68 to 65520
    #[error("MTU {0} is out of range: expected 68 to 65520")]
    BadMtu(u16),
}

/// The virtio network card (`ftvm run --netdev`): what the guest sees of it. The backend (where
/// frames go) is the caller's (`Machine::replace_net`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetConfig {
    /// The card's MAC address.
    pub mac: [u8; 6],
    /// The MTU the card offers the guest (`VIRTIO_NET_F_MTU`; Linux takes it as its MTU):
    /// [`crate::virtio::net::MIN_MTU`]..=[`crate::virtio::net::MAX_MTU`], checked by
    /// [`MachineConfig::validate`].
    pub mtu: u16,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            mac: crate::virtio::net::DEFAULT_MAC,
            mtu: crate::virtio::net::MTU,
        }
    }
}

/// Parses a MAC address `52:54:00:12:34:56` (or with `-`); it must be unicast.
pub fn parse_mac(s: &str) -> Result<[u8; 6], ConfigError> {
    let bad = || ConfigError::MalformedMac(s.to_owned());
    let mut mac = [0u8; 6];
    let mut parts = s.split([':', '-']);
    for b in &mut mac {
        let p = parts.next().ok_or_else(bad)?;
        if p.len() != 2 || !p.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad());
        }
        *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    if mac[0] & 1 != 0 {
        return Err(ConfigError::MulticastMac(s.to_owned()));
    }
    Ok(mac)
}

/// Formats a MAC address as `52:54:00:12:34:56`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A disk the user attached with `--drive`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriveConfig {
    /// Image file. For an NBD drive, `nbd=ADDR` (for messages only: it is never opened).
    pub path: PathBuf,
    /// The guest may not write (the file is opened read-only).
    pub readonly: bool,
    /// The disk is an export on an NBD server instead of a file.
    pub nbd: Option<NbdDriveConfig>,
    /// Added to every read and flush on the host (`delay=MS`): a slow disk, to see and test
    /// requests in flight. The guest runs on meanwhile (the disk's worker thread waits).
    pub delay: std::time::Duration,
}

/// Where an NBD drive's server listens, as the user wrote it: `HOST:PORT` over TCP or
/// `unix:PATH`. Plain data: the board never connects anywhere; the disk's host end
/// (`hostblk`) turns it into the NBD client's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerAddr {
    /// `HOST:PORT` (an IPv6 host in brackets: `[::1]:10809`).
    Tcp(String),
    /// A unix stream socket.
    Unix(PathBuf),
}

impl std::str::FromStr for ServerAddr {
    type Err = ();

    /// Parses `unix:PATH` or `HOST:PORT` (a non-empty host and a port that fits 16 bits).
    fn from_str(s: &str) -> Result<ServerAddr, ()> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(());
            }
            return Ok(ServerAddr::Unix(PathBuf::from(path)));
        }
        let (host, port) = s.rsplit_once(':').ok_or(())?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(());
        }
        Ok(ServerAddr::Tcp(s.to_owned()))
    }
}

impl std::fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerAddr::Tcp(a) => f.write_str(a),
            ServerAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// How long an NBD drive waits for its server when `timeout=` is not given. The NBD client has
/// the same default (`hostblk`'s tests check that they agree).
pub const NBD_DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A disk on an NBD server: `--drive nbd=...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NbdDriveConfig {
    /// Where the server listens.
    pub addr: ServerAddr,
    /// The export's name (empty: the server's default export).
    pub export: String,
    /// Every write carries NBD's FUA flag (durable when acknowledged), if the server offers it.
    pub fua: bool,
    /// Bound on connecting and on every socket read or write; a server that does not answer
    /// within it fails the request (the guest sees an I/O error).
    pub timeout: std::time::Duration,
}

impl std::str::FromStr for DriveConfig {
    type Err = ConfigError;

    /// Parses QEMU's form `file=PATH[,readonly=on|off]` (`format=raw` and `if=virtio` are
    /// accepted and ignored, since they are the only choices), or an NBD export:
    /// `nbd=HOST:PORT[,export=NAME][,readonly=on|off][,fua=on|off][,timeout=SECONDS]`, with
    /// `nbd=unix:PATH` for a unix socket.
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let bad = || ConfigError::MalformedDrive(s.to_owned());
        let on_off = |v: &str| match v {
            "on" | "true" | "yes" => Ok(true),
            "off" | "false" | "no" => Ok(false),
            _ => Err(bad()),
        };
        let mut path = None;
        let mut readonly = false;
        let mut addr: Option<ServerAddr> = None;
        let mut export = None;
        let mut fua = None;
        let mut timeout = None;
        let mut delay = std::time::Duration::ZERO;
        for part in s.split(',') {
            let (key, value) = part.split_once('=').ok_or_else(bad)?;
            match (key, value) {
                ("file", v) if !v.is_empty() && path.is_none() && addr.is_none() => {
                    path = Some(PathBuf::from(v))
                }
                ("nbd", v) if path.is_none() && addr.is_none() => {
                    addr = Some(v.parse().map_err(|_| bad())?)
                }
                ("export", v) if export.is_none() => export = Some(v.to_owned()),
                ("fua", v) if fua.is_none() => fua = Some(on_off(v)?),
                ("timeout", v) if timeout.is_none() => {
                    let secs: u64 = v.parse().map_err(|_| bad())?;
                    if secs == 0 {
                        return Err(bad());
                    }
                    timeout = Some(std::time::Duration::from_secs(secs));
                }
                ("readonly", v) => readonly = on_off(v)?,
                ("delay", v) => {
                    let ms: u64 = v.parse().map_err(|_| bad())?;
                    if ms > 60_000 {
                        return Err(bad());
                    }
                    delay = std::time::Duration::from_millis(ms);
                }
                ("format", "raw") | ("if", "virtio") => {}
                _ => return Err(bad()),
            }
        }
        match addr {
            Some(addr) => Ok(DriveConfig {
                path: PathBuf::from(format!("nbd={addr}")),
                readonly,
                nbd: Some(NbdDriveConfig {
                    addr,
                    export: export.unwrap_or_default(),
                    fua: fua.unwrap_or(false),
                    timeout: timeout.unwrap_or(NBD_DEFAULT_TIMEOUT),
                }),
                delay,
            }),
            None if export.is_some() || fua.is_some() || timeout.is_some() => Err(bad()),
            None => Ok(DriveConfig {
                path: path.ok_or_else(bad)?,
                readonly,
                nbd: None,
                delay,
            }),
        }
    }
}

impl std::fmt::Display for DriveConfig {
    /// The `--drive` spelling that parses back to this drive.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.nbd {
            None => write!(f, "file={}", self.path.display())?,
            Some(n) => {
                write!(f, "nbd={}", n.addr)?;
                if !n.export.is_empty() {
                    write!(f, ",export={}", n.export)?;
                }
                if n.fua {
                    f.write_str(",fua=on")?;
                }
                if n.timeout != NBD_DEFAULT_TIMEOUT {
                    write!(f, ",timeout={}", n.timeout.as_secs())?;
                }
            }
        }
        if self.readonly {
            f.write_str(",readonly=on")?;
        }
        if !self.delay.is_zero() {
            write!(f, ",delay={}", self.delay.as_millis())?;
        }
        Ok(())
    }
}

/// Where the firmware comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Firmware {
    /// No firmware: the kernel is loaded at the start of RAM and entered in M-mode.
    None,
    /// A raw binary (e.g. OpenSBI's `fw_jump.bin` or `fw_dynamic.bin`) loaded at the start of
    /// RAM; the kernel goes 2 MiB above it.
    File(PathBuf),
}

/// Everything needed to build a [`crate::Machine`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineConfig {
    /// RAM size in bytes.
    pub mem_size: u64,
    /// Number of harts.
    pub harts: usize,
    /// Firmware.
    pub bios: Firmware,
    /// Kernel image (raw binary, e.g. Linux's `Image`).
    pub kernel: Option<PathBuf>,
    /// Initial RAM disk.
    pub initrd: Option<PathBuf>,
    /// Kernel command line (`/chosen/bootargs`).
    pub append: String,
    /// Disks, in slot order.
    pub drives: Vec<DriveConfig>,
    /// A virtio network card, in the slot below the console's.
    pub net: Option<NetConfig>,
}

impl Default for MachineConfig {
    fn default() -> Self {
        MachineConfig {
            mem_size: 256 << 20,
            harts: 1,
            bios: Firmware::None,
            kernel: None,
            initrd: None,
            append: String::new(),
            drives: Vec::new(),
            net: None,
        }
    }
}

impl MachineConfig {
    /// Checks the numbers that do not depend on the images.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.mem_size < MIN_MEM {
            return Err(ConfigError::MemTooSmall(self.mem_size));
        }
        if self.mem_size > MAX_MEM {
            return Err(ConfigError::MemTooLarge(self.mem_size));
        }
        if !self.mem_size.is_multiple_of(4096) {
            return Err(ConfigError::MemNotPageMultiple(self.mem_size));
        }
        if self.harts == 0 || self.harts > MAX_HARTS {
            return Err(ConfigError::BadSmp(self.harts));
        }
        if self.drives.len() > crate::board::VIRTIO_SLOTS - 2 {
            return Err(ConfigError::TooManyDrives(self.drives.len()));
        }
        if self.net.is_some() && self.drives.len() > crate::board::VIRTIO_SLOTS - 3 {
            return Err(ConfigError::NoSlotForNet(self.drives.len()));
        }
        if let Some(n) = &self.net {
            if !(crate::virtio::net::MIN_MTU..=crate::virtio::net::MAX_MTU).contains(&n.mtu) {
                return Err(ConfigError::BadMtu(n.mtu));
            }
        }
        Ok(())
    }
}

/// Parses a size such as `256M`, `1G`, `65536` or `512k` (suffixes are powers of 1024; a
/// trailing `B`/`iB` is accepted).
pub fn parse_size(s: &str) -> Result<u64, ConfigError> {
    let bad = || ConfigError::MalformedSize(s.to_owned());
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (digits, shift) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 10),
        Some((i, 'm' | 'M')) => (&t[..i], 20),
        Some((i, 'g' | 'G')) => (&t[..i], 30),
        Some((i, 't' | 'T')) => (&t[..i], 40),
        _ => (t, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    n.checked_mul(1 << shift).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_suffixes() {
        assert_eq!(parse_size("256M"), Ok(256 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        for bad in [
            "",
            "M",
            "-1M",
            "1.5G",
            "12Q",
            "99999999999999999999",
            "16777216T",
            " ",
        ] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn drives_parse() {
        let d: DriveConfig = "file=/tmp/x.img,readonly=on".parse().unwrap();
        assert_eq!(
            d,
            DriveConfig {
                path: "/tmp/x.img".into(),
                readonly: true,
                nbd: None,
                delay: std::time::Duration::ZERO,
            }
        );
        assert_eq!(d.to_string(), "file=/tmp/x.img,readonly=on");
        let d: DriveConfig = "file=/tmp/x.img,delay=30".parse().unwrap();
        assert_eq!(d.delay, std::time::Duration::from_millis(30));
        assert_eq!(d.to_string(), "file=/tmp/x.img,delay=30");
        let d: DriveConfig = "file=a,format=raw,if=virtio".parse().unwrap();
        assert!(!d.readonly);
        for bad in [
            "",
            "x.img",
            "file=",
            "readonly=on",
            "file=a,readonly=maybe",
            "file=a,delay=-1",
            "file=a,delay=60001",
            "file=a,cache=none",
            "file=a,export=x",
            "file=a,nbd=h:1",
            "nbd=h:1,file=a",
            "nbd=host",
            "nbd=h:70000",
            "nbd=unix:",
            "nbd=h:1,timeout=0",
            "nbd=h:1,timeout=x",
            "nbd=h:1,fua=maybe",
            "nbd=h:1,export=a,export=b",
        ] {
            assert!(bad.parse::<DriveConfig>().is_err(), "{bad}");
        }
    }

    #[test]
    fn nbd_drives_parse() {
        let d: DriveConfig = "nbd=127.0.0.1:10809,export=disk,readonly=on,fua=on,timeout=5"
            .parse()
            .unwrap();
        assert!(d.readonly);
        let n = d.nbd.clone().unwrap();
        assert_eq!(n.addr, ServerAddr::Tcp("127.0.0.1:10809".into()));
        assert_eq!(n.export, "disk");
        assert!(n.fua);
        assert_eq!(n.timeout, std::time::Duration::from_secs(5));
        assert_eq!(d.to_string().parse::<DriveConfig>().unwrap(), d);
        let d: DriveConfig = "nbd=unix:/run/nbd.sock".parse().unwrap();
        let n = d.nbd.clone().unwrap();
        assert_eq!(n.addr, ServerAddr::Unix("/run/nbd.sock".into()));
        assert_eq!(n.export, "");
        assert_eq!(n.timeout, NBD_DEFAULT_TIMEOUT);
        assert_eq!(d.to_string(), "nbd=unix:/run/nbd.sock");
    }

    #[test]
    fn server_addrs_parse() {
        assert_eq!(
            "127.0.0.1:10809".parse::<ServerAddr>(),
            Ok(ServerAddr::Tcp("127.0.0.1:10809".into()))
        );
        assert_eq!(
            "[::1]:10809".parse::<ServerAddr>(),
            Ok(ServerAddr::Tcp("[::1]:10809".into()))
        );
        assert_eq!(
            "unix:/tmp/s".parse::<ServerAddr>(),
            Ok(ServerAddr::Unix("/tmp/s".into()))
        );
        for bad in ["", "host", "host:", ":10809", "host:99999", "unix:"] {
            assert!(bad.parse::<ServerAddr>().is_err(), "{bad}");
        }
        assert_eq!(ServerAddr::Unix("/a".into()).to_string(), "unix:/a");
        assert_eq!(ServerAddr::Tcp("h:1".into()).to_string(), "h:1");
    }

    #[test]
    fn macs_parse() {
        assert_eq!(
            parse_mac("52:54:00:12:34:56"),
            Ok([0x52, 0x54, 0, 0x12, 0x34, 0x56])
        );
        assert_eq!(parse_mac("02-00-00-AA-bb-01"), Ok([2, 0, 0, 0xaa, 0xbb, 1]));
        assert_eq!(
            format_mac(&[0x52, 0x54, 0, 0x12, 0x34, 0x56]),
            "52:54:00:12:34:56"
        );
        for bad in [
            "",
            "52:54:00:12:34",
            "52:54:00:12:34:56:78",
            "5:54:00:12:34:56",
            "zz:54:00:12:34:56",
            "+1:54:00:12:34:56",
        ] {
            assert!(
                matches!(parse_mac(bad), Err(ConfigError::MalformedMac(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            parse_mac("01:00:5e:00:00:01"),
            Err(ConfigError::MulticastMac(_))
        ));
    }

    #[test]
    fn a_network_card_takes_a_slot() {
        let drive = DriveConfig {
            path: "x".into(),
            readonly: false,
            nbd: None,
            delay: std::time::Duration::ZERO,
        };
        let c = MachineConfig {
            drives: vec![drive; 6],
            net: Some(NetConfig::default()),
            ..MachineConfig::default()
        };
        assert_eq!(c.validate(), Err(ConfigError::NoSlotForNet(6)));
        for (mtu, ok) in [(67, false), (68, true), (65520, true), (65521, false)] {
            let c = MachineConfig {
                net: Some(NetConfig {
                    mtu,
                    ..NetConfig::default()
                }),
                ..MachineConfig::default()
            };
            assert_eq!(c.validate().is_ok(), ok, "mtu {mtu}");
        }
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("9 virtio slots"));
        let c = MachineConfig {
            drives: c.drives[..5].to_vec(),
            ..c
        };
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn validation_bounds() {
        let ok = MachineConfig::default();
        assert_eq!(ok.validate(), Ok(()));
        let c = MachineConfig {
            mem_size: 1 << 20,
            ..ok.clone()
        };
        assert_eq!(c.validate(), Err(ConfigError::MemTooSmall(1 << 20)));
        let c = MachineConfig {
            mem_size: (64 << 20) + 1,
            ..ok.clone()
        };
        assert!(c.validate().is_err());
        let c = MachineConfig { harts: 0, ..ok };
        assert_eq!(c.validate(), Err(ConfigError::BadSmp(0)));
    }
}
