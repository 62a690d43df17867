//! What the user asks for: memory, harts, images, kernel command line, disks. Plain data, plus
//! the parsers for the textual forms the command line uses (`256M`, `file=X,readonly=on`).

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
    /// drive option `{0}` is malformed: expected file=PATH[,readonly=on|off]
    #[error("drive option `{0}` is malformed: expected file=PATH[,readonly=on|off]")]
    MalformedDrive(String),
    /// {0} disks requested, but the board has 8 virtio slots of which 2 are always in use
    #[error("{0} disks requested, but the board has 8 virtio slots of which 2 are always in use")]
    TooManyDrives(usize),
}

/// A disk the user attached with `--drive`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriveConfig {
    /// Image file.
    pub path: PathBuf,
    /// The guest may not write (the file is opened read-only).
    pub readonly: bool,
}

impl std::str::FromStr for DriveConfig {
    type Err = ConfigError;

    /// Parses QEMU's form `file=PATH[,readonly=on|off]` (`format=raw` and `if=virtio` are
    /// accepted and ignored, since they are the only choices).
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let bad = || ConfigError::MalformedDrive(s.to_owned());
        let mut path = None;
        let mut readonly = false;
        for part in s.split(',') {
            let (key, value) = part.split_once('=').ok_or_else(bad)?;
            match (key, value) {
                ("file", v) if !v.is_empty() && path.is_none() => path = Some(PathBuf::from(v)),
                ("readonly", "on" | "true" | "yes") => readonly = true,
                ("readonly", "off" | "false" | "no") => readonly = false,
                ("format", "raw") | ("if", "virtio") => {}
                _ => return Err(bad()),
            }
        }
        Ok(DriveConfig {
            path: path.ok_or_else(bad)?,
            readonly,
        })
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
                readonly: true
            }
        );
        let d: DriveConfig = "file=a,format=raw,if=virtio".parse().unwrap();
        assert!(!d.readonly);
        for bad in [
            "",
            "x.img",
            "file=",
            "readonly=on",
            "file=a,readonly=maybe",
            "file=a,cache=none",
        ] {
            assert!(bad.parse::<DriveConfig>().is_err(), "{bad}");
        }
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
