//! What the recorder and the replayer agree on: the log's prologue (the machine's shape and its
//! initial snapshot, carried in `ConfigChange` entries), device numbers, and digests as log
//! entries.

use crate::disk::DriveShape;
use machine::Machine;
use replay::DigestPart;

/// Device number of UART0's input in `DeviceCompletion` entries.
pub const DEV_UART: u32 = 0x100;
/// Device number of the virtio-rng device on a machine without disks: its slot (with disks it
/// sits below them: [`LoggedConfig::rng_device`]).
pub const DEV_RNG: u32 = (machine::board::VIRTIO_SLOTS - 1) as u32;
/// Control-entry tag: the machine configuration.
pub const TAG_CONFIG: u8 = 1;
/// Control-entry tag: a chunk of the initial snapshot.
pub const TAG_SNAPSHOT: u8 = 2;
/// Largest snapshot chunk in one control entry.
pub const SNAPSHOT_CHUNK: usize = 4 << 20;
/// A state digest is logged at the first slice boundary after every this many icount.
pub const DIGEST_EVERY: u64 = 100_000_000;

/// The machine's shape, as carried in the log's first control entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedConfig {
    /// RAM size in bytes.
    pub mem_size: u64,
    /// Number of harts.
    pub harts: u32,
    /// Where the boot ROM sends hart 0 and what it tells the firmware.
    pub boot: machine::BootInfo,
    /// The disks, in `--drive` order (the first is in the highest slot).
    pub drives: Vec<DriveShape>,
    /// The network card (MAC address and MTU), if the machine has one (in the slot below the
    /// console's).
    pub net: Option<machine::NetConfig>,
}

impl LoggedConfig {
    /// The control entry's bytes (tag included).
    pub fn encode(&self) -> Vec<u8> {
        let mut v = vec![TAG_CONFIG];
        v.extend_from_slice(&self.mem_size.to_le_bytes());
        v.extend_from_slice(&self.harts.to_le_bytes());
        v.extend_from_slice(&self.boot.fdt_addr.to_le_bytes());
        v.extend_from_slice(&self.boot.start.to_le_bytes());
        v.extend_from_slice(&self.boot.kernel_entry.to_le_bytes());
        let (a, b) = self.boot.initrd.unwrap_or((0, 0));
        v.push(u8::from(self.boot.initrd.is_some()));
        v.extend_from_slice(&a.to_le_bytes());
        v.extend_from_slice(&b.to_le_bytes());
        // At most VIRTIO_SLOTS - 2 drives: the count fits a byte.
        v.push(self.drives.len() as u8);
        for d in &self.drives {
            v.extend_from_slice(&d.capacity.to_le_bytes());
            v.push(u8::from(d.readonly));
        }
        match self.net {
            None => v.push(0),
            Some(n) => {
                v.push(1);
                v.extend_from_slice(&n.mac);
                v.extend_from_slice(&n.mtu.to_le_bytes());
            }
        }
        v
    }

    /// Parses a control entry written by [`LoggedConfig::encode`]; `None` if malformed.
    pub fn decode(b: &[u8]) -> Option<LoggedConfig> {
        const FIXED: usize = 1 + 8 + 4 + 8 * 3 + 1 + 16;
        let n = usize::from(*b.get(FIXED)?);
        let end = FIXED + 1 + 9 * n;
        if n > machine::board::VIRTIO_SLOTS - 2 || b.len() <= end || b[0] != TAG_CONFIG {
            return None;
        }
        let net = match (b[end], &b[end + 1..]) {
            (0, []) => None,
            (1, card) if n <= machine::board::VIRTIO_SLOTS - 3 && card.len() == 8 => {
                Some(machine::NetConfig {
                    mac: card[..6].try_into().ok()?,
                    mtu: u16::from_le_bytes([card[6], card[7]]),
                })
            }
            _ => return None,
        };
        let drives = b[FIXED + 1..end]
            .chunks_exact(9)
            .map(|d| {
                Some(DriveShape {
                    capacity: u64::from_le_bytes(d[..8].try_into().ok()?),
                    readonly: match d[8] {
                        0 => false,
                        1 => true,
                        _ => return None,
                    },
                })
            })
            .collect::<Option<Vec<_>>>()?;
        let u64_at = |i: usize| b.get(i..i + 8)?.try_into().ok().map(u64::from_le_bytes);
        let harts = u32::from_le_bytes(b.get(9..13)?.try_into().ok()?);
        let initrd = match b[37] {
            0 => None,
            1 => Some((u64_at(38)?, u64_at(46)?)),
            _ => return None,
        };
        Some(LoggedConfig {
            mem_size: u64_at(1)?,
            harts,
            boot: machine::BootInfo {
                fdt_addr: u64_at(13)?,
                start: u64_at(21)?,
                kernel_entry: u64_at(29)?,
                initrd,
            },
            drives,
            net,
        })
    }

    /// The log's device number of the network card: its slot, below the console's.
    pub fn net_device(&self) -> Option<u32> {
        self.net.map(|_| crate::net::net_device(self.drives.len()))
    }

    /// The log's device number of the virtio-rng device: its slot, below the disks'.
    pub fn rng_device(&self) -> u32 {
        crate::disk::rng_device(self.drives.len())
    }

    /// The drive whose log device number is `device`, if it is a disk's.
    pub fn drive_of(&self, device: u32) -> Option<usize> {
        (0..self.drives.len()).find(|&d| crate::disk::disk_device(d) == device)
    }

    /// The header's fingerprint: FNV-1a 64 of the encoded entry.
    pub fn fingerprint(&self) -> u64 {
        self.encode()
            .iter()
            .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
                (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
            })
    }
}

/// A machine's state digest as log digest parts.
pub fn digest_parts(m: &Machine) -> Vec<DigestPart> {
    let d = m.digest();
    [
        (replay::part::CPU, d.cpu),
        (replay::part::RAM, d.ram),
        (replay::part::DEVICES, d.devices),
    ]
    .into_iter()
    .map(|(id, h)| {
        let mut digest = [0u8; replay::DIGEST_LEN];
        digest[..8].copy_from_slice(&h.to_le_bytes());
        DigestPart { id, digest }
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_config_round_trips_and_rejects_garbage() {
        let lc = LoggedConfig {
            mem_size: 256 << 20,
            harts: 2,
            boot: machine::BootInfo {
                fdt_addr: 0x8fe0_0000,
                start: 0x8000_0000,
                kernel_entry: 0x8020_0000,
                initrd: Some((0x8800_0000, 0x8900_0000)),
            },
            drives: vec![
                DriveShape {
                    capacity: 16 << 20,
                    readonly: false,
                },
                DriveShape {
                    capacity: 4096,
                    readonly: true,
                },
            ],
            net: Some(machine::NetConfig {
                mac: [0x52, 0x54, 0, 0x12, 0x34, 0x56],
                mtu: 65520,
            }),
        };
        let b = lc.encode();
        assert_eq!(LoggedConfig::decode(&b), Some(lc.clone()));
        for n in 0..b.len() {
            assert_eq!(LoggedConfig::decode(&b[..n]), None);
        }
        let mut bad = b.clone();
        bad[37] = 7;
        assert_eq!(LoggedConfig::decode(&bad), None);
        let mut bad = b.clone();
        bad[b.len() - 9] = 2; // network card flag
        assert_eq!(LoggedConfig::decode(&bad), None);
        let mut bad = b.clone();
        bad[b.len() - 10] = 2; // read-only flag
        assert_eq!(LoggedConfig::decode(&bad), None);
        let mut bad = b.clone();
        bad.push(0);
        assert_eq!(LoggedConfig::decode(&bad), None);
        let mut other = lc.clone();
        other.harts = 1;
        assert_ne!(other.fingerprint(), lc.fingerprint());
        let mut other = lc.clone();
        other.drives[1].readonly = false;
        assert_ne!(other.fingerprint(), lc.fingerprint());
        assert_eq!(lc.rng_device(), 5);
        assert_eq!(lc.drive_of(7), Some(0));
        assert_eq!(lc.drive_of(6), Some(1));
        assert_eq!(lc.drive_of(5), None);
        assert_eq!(lc.net_device(), Some(3));
        let mut other = lc.clone();
        other.net = Some(machine::NetConfig {
            mac: [2, 0, 0, 0, 0, 1],
            mtu: 65520,
        });
        assert_ne!(other.fingerprint(), lc.fingerprint());
        let mut other = lc.clone();
        other.net = Some(machine::NetConfig {
            mtu: 1500,
            ..lc.net.unwrap()
        });
        assert_ne!(
            other.fingerprint(),
            lc.fingerprint(),
            "the MTU is the guest's too"
        );
        let none = LoggedConfig {
            drives: Vec::new(),
            net: None,
            ..lc
        };
        assert_eq!(LoggedConfig::decode(&none.encode()), Some(none.clone()));
        assert_eq!(none.rng_device(), DEV_RNG);
        assert_eq!(none.net_device(), None);
        for n in 0..none.encode().len() {
            assert_eq!(LoggedConfig::decode(&none.encode()[..n]), None);
        }
    }
}
