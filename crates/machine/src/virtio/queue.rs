//! Split virtqueues (virtio 1.2 §2.7): the descriptor table, the available ring the driver fills
//! and the used ring the device fills.
//!
//! Everything here reads guest memory that the guest controls, so every value is checked before
//! use: ring areas and descriptors must lie in RAM, indices must be below the queue size, a chain
//! may not be longer than its table (which bounds loops), and the driver may not claim more
//! available buffers than the queue holds. Every write goes through [`Ram::write`], so dirty-page
//! and decoded-code tracking see it.

use rv64::Ram;

/// Descriptor flag: the chain continues at `next`.
pub const VIRTQ_DESC_F_NEXT: u16 = 1;
/// Descriptor flag: the buffer is device-writable (otherwise device-readable).
pub const VIRTQ_DESC_F_WRITE: u16 = 2;
/// Descriptor flag: the buffer holds a table of indirect descriptors.
pub const VIRTQ_DESC_F_INDIRECT: u16 = 4;
/// Available-ring flag: the driver does not want an interrupt for used buffers.
pub const VIRTQ_AVAIL_F_NO_INTERRUPT: u16 = 1;

/// Size of one descriptor in the table.
const DESC_SIZE: u64 = 16;

/// Ways a driver can break a virtqueue. Any of them puts the device into `DEVICE_NEEDS_RESET`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// queue size {size} is not a power of two in 1..={max}
    #[error("queue size {size} is not a power of two in 1..={max}")]
    BadSize {
        /// QueueNum as written by the driver.
        size: u16,
        /// QueueNumMax.
        max: u16,
    },
    /// virtqueue area at {addr:#x} is not aligned to {align} bytes
    #[error("virtqueue area at {addr:#x} is not aligned to {align} bytes")]
    Misaligned {
        /// The area's guest physical address.
        addr: u64,
        /// The alignment the specification requires.
        align: u64,
    },
    /// guest memory {addr:#x}+{len:#x} named by the driver is outside RAM
    #[error("guest memory {addr:#x}+{len:#x} named by the driver is outside RAM")]
    OutsideRam {
        /// Start of the access.
        addr: u64,
        /// Its length.
        len: u64,
    },
    /// the driver made {count} buffers available in a queue of {size}
    #[error("the driver made {count} buffers available in a queue of {size}")]
    TooManyAvailable {
        /// avail.idx minus the device's position.
        count: u16,
        /// Queue size.
        size: u16,
    },
    /// descriptor index {index} is out of range for a table of {size}
    #[error("descriptor index {index} is out of range for a table of {size}")]
    BadIndex {
        /// The index found in the ring or in a `next` field.
        index: u16,
        /// Number of entries in the table.
        size: u16,
    },
    /// descriptor chain is longer than its table of {0} entries (a loop?)
    #[error("descriptor chain is longer than its table of {0} entries (a loop?)")]
    ChainTooLong(u16),
    /// indirect descriptor table of {0} bytes is empty, too large or not a multiple of 16
    #[error("indirect descriptor table of {0} bytes is empty, too large or not a multiple of 16")]
    BadIndirectTable(u32),
    /// an indirect descriptor table refers to another indirect table
    #[error("an indirect descriptor table refers to another indirect table")]
    NestedIndirect,
    /// descriptor chain holds more than 4 GiB
    #[error("descriptor chain holds more than 4 GiB")]
    ChainTooBig,
    /// request needs {len} bytes at offset {offset} of a shorter buffer
    #[error("request needs {len} bytes at offset {offset} of a shorter buffer")]
    TooShort {
        /// Offset in the readable or writable stream.
        offset: u64,
        /// Bytes wanted there.
        len: u64,
    },
}

/// One buffer of a descriptor chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Guest physical address.
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
    /// Device-writable (VIRTQ_DESC_F_WRITE) rather than device-readable.
    pub writable: bool,
}

/// A descriptor chain taken from the available ring: a request from the driver.
///
/// Its bytes are seen as two streams, the device-readable one and the device-writable one, each
/// the concatenation of its segments in chain order; a device must not assume how the driver
/// split a request into descriptors (virtio 1.2 §2.7.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescChain {
    /// Index of the head descriptor, returned in the used ring.
    pub head: u16,
    /// The buffers, in chain order, indirect tables expanded.
    pub segments: Vec<Segment>,
}

impl DescChain {
    /// Total length of the device-readable buffers.
    pub fn readable_len(&self) -> u64 {
        self.segments
            .iter()
            .filter(|s| !s.writable)
            .map(|s| u64::from(s.len))
            .sum()
    }

    /// Total length of the device-writable buffers.
    pub fn writable_len(&self) -> u64 {
        self.segments
            .iter()
            .filter(|s| s.writable)
            .map(|s| u64::from(s.len))
            .sum()
    }

    /// Fills `buf` from the readable stream at `offset`. Fails if the stream is too short or a
    /// buffer lies outside RAM.
    pub fn read_at(&self, ram: &Ram, offset: u64, buf: &mut [u8]) -> Result<(), QueueError> {
        let mut done = 0;
        self.walk(false, offset, buf.len(), |addr, range| {
            ram.read(addr, &mut buf[range.clone()])
                .ok_or(QueueError::OutsideRam {
                    addr,
                    len: range.len() as u64,
                })?;
            done += range.len();
            Ok(())
        })?;
        if done < buf.len() {
            return Err(QueueError::TooShort {
                offset,
                len: buf.len() as u64,
            });
        }
        Ok(())
    }

    /// Writes `data` into the writable stream at `offset`. Fails if the stream is too short or a
    /// buffer lies outside RAM.
    pub fn write_at(&self, ram: &mut Ram, offset: u64, data: &[u8]) -> Result<(), QueueError> {
        let mut done = 0;
        self.walk(true, offset, data.len(), |addr, range| {
            ram.write(addr, &data[range.clone()])
                .ok_or(QueueError::OutsideRam {
                    addr,
                    len: range.len() as u64,
                })?;
            done += range.len();
            Ok(())
        })?;
        if done < data.len() {
            return Err(QueueError::TooShort {
                offset,
                len: data.len() as u64,
            });
        }
        Ok(())
    }

    /// Whether every buffer of the chain lies wholly inside RAM.
    pub fn in_ram(&self, ram: &Ram) -> bool {
        self.segments
            .iter()
            .all(|s| ram.offset(s.addr, u64::from(s.len)).is_some())
    }

    /// Calls `f(guest address, range of the caller's buffer)` for each piece of the `writable`
    /// stream in `offset..offset + len`.
    fn walk(
        &self,
        writable: bool,
        offset: u64,
        len: usize,
        mut f: impl FnMut(u64, std::ops::Range<usize>) -> Result<(), QueueError>,
    ) -> Result<(), QueueError> {
        let mut pos = 0u64; // stream offset of the current segment
        let mut done = 0usize;
        for s in self.segments.iter().filter(|s| s.writable == writable) {
            if done == len {
                break;
            }
            let seg_len = u64::from(s.len);
            let want = offset.saturating_add(done as u64);
            if want < pos + seg_len {
                let skip = want - pos;
                let n = usize::try_from((seg_len - skip).min((len - done) as u64))
                    .unwrap_or(len - done);
                f(s.addr.wrapping_add(skip), done..done + n)?;
                done += n;
            }
            pos += seg_len;
        }
        Ok(())
    }
}

/// The saved form of a [`Virtq`]: plain data, untrusted, validated by [`Virtq::restore`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VirtqState {
    /// QueueNum.
    pub size: u16,
    /// QueueReady.
    pub ready: bool,
    /// QueueDesc.
    pub desc_addr: u64,
    /// QueueDriver (the available ring).
    pub avail_addr: u64,
    /// QueueDevice (the used ring).
    pub used_addr: u64,
    /// The device's position in the available ring.
    pub next_avail: u16,
    /// The device's position in the used ring.
    pub next_used: u16,
}

/// One split virtqueue: the driver's configuration (the transport registers) and the device's
/// positions in the rings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Virtq {
    max_size: u16,
    state: VirtqState,
    /// A used buffer was published and the driver did not suppress the interrupt.
    notify: bool,
}

impl Virtq {
    /// An unconfigured queue whose QueueNumMax is `max_size`.
    pub fn new(max_size: u16) -> Self {
        Virtq {
            max_size,
            state: VirtqState {
                size: max_size,
                ..Default::default()
            },
            notify: false,
        }
    }

    /// QueueNumMax.
    pub fn max_size(&self) -> u16 {
        self.max_size
    }

    /// QueueNum: the number of entries in the rings.
    pub fn size(&self) -> u16 {
        self.state.size
    }

    /// QueueReady: the driver has enabled the queue.
    pub fn ready(&self) -> bool {
        self.state.ready
    }

    /// Back to the power-on state.
    pub fn reset(&mut self) {
        *self = Virtq::new(self.max_size);
    }

    /// The saved form.
    pub fn save(&self) -> VirtqState {
        self.state
    }

    /// Restores a saved queue, which must fit this queue's QueueNumMax and, if ready, be valid.
    pub fn restore(&mut self, state: &VirtqState) -> Result<(), QueueError> {
        let q = Virtq {
            max_size: self.max_size,
            state: *state,
            notify: false,
        };
        if q.state.ready {
            q.validate()?;
        } else if q.state.size > q.max_size {
            return Err(QueueError::BadSize {
                size: q.state.size,
                max: q.max_size,
            });
        }
        *self = q;
        Ok(())
    }

    /// Sets QueueNum (ignored while the queue is enabled, as the driver must not change it then).
    pub fn set_size(&mut self, size: u16) {
        if !self.state.ready {
            self.state.size = size;
        }
    }

    /// Sets the low (`high == false`) or high 32 bits of QueueDesc (0), QueueDriver (1) or
    /// QueueDevice (2). Ignored while the queue is enabled.
    pub fn set_addr_half(&mut self, which: usize, high: bool, val: u32) {
        if self.state.ready {
            return;
        }
        let a = match which {
            0 => &mut self.state.desc_addr,
            1 => &mut self.state.avail_addr,
            _ => &mut self.state.used_addr,
        };
        *a = if high {
            (*a & 0xffff_ffff) | (u64::from(val) << 32)
        } else {
            (*a & !0xffff_ffff) | u64::from(val)
        };
    }

    /// One half of an area address, for reading the registers back.
    pub fn addr_half(&self, which: usize, high: bool) -> u32 {
        let a = match which {
            0 => self.state.desc_addr,
            1 => self.state.avail_addr,
            _ => self.state.used_addr,
        };
        if high {
            (a >> 32) as u32
        } else {
            a as u32
        }
    }

    /// Writes QueueReady. Enabling checks the size and the alignment of the three areas.
    pub fn set_ready(&mut self, ready: bool) -> Result<(), QueueError> {
        if ready && !self.state.ready {
            self.validate()?;
            self.state.next_avail = 0;
            self.state.next_used = 0;
        }
        self.state.ready = ready;
        Ok(())
    }

    /// Checks the driver's configuration (virtio 1.2 §2.7: sizes, §2.7.2 alignment).
    fn validate(&self) -> Result<(), QueueError> {
        let s = self.state;
        if s.size == 0 || !s.size.is_power_of_two() || s.size > self.max_size {
            return Err(QueueError::BadSize {
                size: s.size,
                max: self.max_size,
            });
        }
        for (addr, align) in [(s.desc_addr, 16), (s.avail_addr, 2), (s.used_addr, 4)] {
            if !addr.is_multiple_of(align) {
                return Err(QueueError::Misaligned { addr, align });
            }
        }
        Ok(())
    }

    /// Takes the next available descriptor chain, if the driver has made one available.
    pub fn pop(&mut self, ram: &Ram) -> Result<Option<DescChain>, QueueError> {
        if !self.state.ready {
            return Ok(None);
        }
        let size = self.state.size;
        let avail_idx = read_u16(ram, self.state.avail_addr.wrapping_add(2))?;
        let count = avail_idx.wrapping_sub(self.state.next_avail);
        if count == 0 {
            return Ok(None);
        }
        if count > size {
            return Err(QueueError::TooManyAvailable { count, size });
        }
        let slot = u64::from(self.state.next_avail % size);
        let head = read_u16(ram, self.state.avail_addr.wrapping_add(4 + 2 * slot))?;
        let chain = self.read_chain(ram, head)?;
        self.state.next_avail = self.state.next_avail.wrapping_add(1);
        Ok(Some(chain))
    }

    /// Gives back the chain just taken by [`Virtq::pop`], untouched (e.g. a receive buffer when
    /// there turned out to be nothing to receive).
    pub fn undo_pop(&mut self) {
        self.state.next_avail = self.state.next_avail.wrapping_sub(1);
    }

    /// Follows the chain starting at descriptor `head`.
    fn read_chain(&self, ram: &Ram, head: u16) -> Result<DescChain, QueueError> {
        let mut table = self.state.desc_addr;
        let mut table_len = self.state.size;
        let mut index = head;
        let mut indirect = false;
        let mut in_table = 0u16; // descriptors taken from the current table
        let mut total = 0u64;
        let mut segments = Vec::new();
        loop {
            if index >= table_len {
                return Err(QueueError::BadIndex {
                    index,
                    size: table_len,
                });
            }
            let at = table.wrapping_add(DESC_SIZE * u64::from(index));
            let mut d = [0u8; DESC_SIZE as usize];
            ram.read(at, &mut d).ok_or(QueueError::OutsideRam {
                addr: at,
                len: DESC_SIZE,
            })?;
            let addr = u64::from_le_bytes(d[0..8].try_into().unwrap_or_default());
            let len = u32::from_le_bytes(d[8..12].try_into().unwrap_or_default());
            let flags = u16::from_le_bytes([d[12], d[13]]);
            let next = u16::from_le_bytes([d[14], d[15]]);
            if flags & VIRTQ_DESC_F_INDIRECT != 0 {
                // §2.7.5.3: ends the direct chain (NEXT is meaningless with INDIRECT) and its
                // WRITE flag is ignored.
                if indirect {
                    return Err(QueueError::NestedIndirect);
                }
                let entries = len / DESC_SIZE as u32;
                if len == 0
                    || !len.is_multiple_of(DESC_SIZE as u32)
                    || entries > u32::from(u16::MAX)
                {
                    return Err(QueueError::BadIndirectTable(len));
                }
                table = addr;
                table_len = entries as u16;
                index = 0;
                indirect = true;
                in_table = 0;
                continue;
            }
            // A chain visits each entry of its table at most once, so this bounds any loop.
            if in_table == table_len {
                return Err(QueueError::ChainTooLong(table_len));
            }
            in_table += 1;
            total += u64::from(len);
            if total > u64::from(u32::MAX) {
                return Err(QueueError::ChainTooBig);
            }
            segments.push(Segment {
                addr,
                len,
                writable: flags & VIRTQ_DESC_F_WRITE != 0,
            });
            if flags & VIRTQ_DESC_F_NEXT == 0 {
                return Ok(DescChain { head, segments });
            }
            index = next;
        }
    }

    /// Returns chain `head` to the driver with `len` bytes written into it: the used element,
    /// then used.idx (virtio 1.2 §2.7.8).
    pub fn add_used(&mut self, ram: &mut Ram, head: u16, len: u32) -> Result<(), QueueError> {
        let size = self.state.size;
        let used = self.state.used_addr;
        let slot = u64::from(self.state.next_used % size.max(1));
        let mut elem = [0u8; 8];
        elem[..4].copy_from_slice(&u32::from(head).to_le_bytes());
        elem[4..].copy_from_slice(&len.to_le_bytes());
        let at = used.wrapping_add(4 + 8 * slot);
        ram.write(at, &elem)
            .ok_or(QueueError::OutsideRam { addr: at, len: 8 })?;
        self.state.next_used = self.state.next_used.wrapping_add(1);
        let at = used.wrapping_add(2);
        ram.write(at, &self.state.next_used.to_le_bytes())
            .ok_or(QueueError::OutsideRam { addr: at, len: 2 })?;
        let flags = read_u16(ram, self.state.avail_addr)?;
        if flags & VIRTQ_AVAIL_F_NO_INTERRUPT == 0 {
            self.notify = true;
        }
        Ok(())
    }

    /// Whether a used-buffer notification is due, clearing the request.
    pub fn take_notify(&mut self) -> bool {
        std::mem::take(&mut self.notify)
    }
}

fn read_u16(ram: &Ram, addr: u64) -> Result<u16, QueueError> {
    let mut b = [0; 2];
    ram.read(addr, &mut b)
        .ok_or(QueueError::OutsideRam { addr, len: 2 })?;
    Ok(u16::from_le_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 0x8000_0000;
    const DESC: u64 = BASE;
    const AVAIL: u64 = BASE + 0x1000;
    const USED: u64 = BASE + 0x2000;

    fn ram() -> Ram {
        Ram::new(BASE, 1 << 20)
    }

    fn queue(size: u16) -> Virtq {
        let mut q = Virtq::new(256);
        q.set_size(size);
        for (i, a) in [DESC, AVAIL, USED].into_iter().enumerate() {
            q.set_addr_half(i, false, a as u32);
            q.set_addr_half(i, true, (a >> 32) as u32);
        }
        q.set_ready(true).unwrap();
        q
    }

    fn desc(ram: &mut Ram, table: u64, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let mut d = Vec::new();
        d.extend_from_slice(&addr.to_le_bytes());
        d.extend_from_slice(&len.to_le_bytes());
        d.extend_from_slice(&flags.to_le_bytes());
        d.extend_from_slice(&next.to_le_bytes());
        ram.write(table + 16 * u64::from(i), &d).unwrap();
    }

    fn make_avail(ram: &mut Ram, heads: &[u16]) {
        for (i, h) in heads.iter().enumerate() {
            ram.write(AVAIL + 4 + 2 * i as u64, &h.to_le_bytes())
                .unwrap();
        }
        ram.write(AVAIL + 2, &(heads.len() as u16).to_le_bytes())
            .unwrap();
    }

    #[test]
    fn pops_a_chain_and_publishes_used() {
        let mut ram = ram();
        let mut q = queue(8);
        desc(&mut ram, DESC, 3, BASE + 0x10000, 16, VIRTQ_DESC_F_NEXT, 5);
        desc(&mut ram, DESC, 5, BASE + 0x11000, 4, VIRTQ_DESC_F_WRITE, 0);
        make_avail(&mut ram, &[3]);
        let c = q.pop(&ram).unwrap().unwrap();
        assert_eq!(c.head, 3);
        assert_eq!(c.segments.len(), 2);
        assert_eq!((c.readable_len(), c.writable_len()), (16, 4));
        assert!(q.pop(&ram).unwrap().is_none());
        ram.take_dirty();
        q.add_used(&mut ram, 3, 4).unwrap();
        assert_eq!(ram.take_dirty(), vec![2]);
        assert_eq!(ram.read_u64(USED + 4).unwrap(), 3 | (4 << 32));
        assert_eq!(read_u16(&ram, USED + 2).unwrap(), 1);
        assert!(q.take_notify());
        assert!(!q.take_notify());
    }

    #[test]
    fn no_interrupt_flag_suppresses_notification() {
        let mut ram = ram();
        let mut q = queue(8);
        ram.write(AVAIL, &VIRTQ_AVAIL_F_NO_INTERRUPT.to_le_bytes())
            .unwrap();
        q.add_used(&mut ram, 0, 0).unwrap();
        assert!(!q.take_notify());
    }

    #[test]
    fn streams_span_segments() {
        let mut ram = ram();
        let c = DescChain {
            head: 0,
            segments: vec![
                Segment {
                    addr: BASE + 0x100,
                    len: 3,
                    writable: false,
                },
                Segment {
                    addr: BASE + 0x200,
                    len: 2,
                    writable: true,
                },
                Segment {
                    addr: BASE + 0x300,
                    len: 5,
                    writable: false,
                },
                Segment {
                    addr: BASE + 0x400,
                    len: 4,
                    writable: true,
                },
            ],
        };
        ram.write(BASE + 0x100, b"abc").unwrap();
        ram.write(BASE + 0x300, b"defgh").unwrap();
        let mut buf = [0; 4];
        c.read_at(&ram, 2, &mut buf).unwrap();
        assert_eq!(&buf, b"cdef");
        assert!(c.read_at(&ram, 5, &mut buf).is_err());
        c.write_at(&mut ram, 1, b"wxyz").unwrap();
        let mut out = [0; 2];
        ram.read(BASE + 0x200, &mut out).unwrap();
        assert_eq!(&out, b"\0w");
        let mut out = [0; 4];
        ram.read(BASE + 0x400, &mut out).unwrap();
        assert_eq!(&out, b"xyz\0");
        assert!(c.write_at(&mut ram, 5, b"ab").is_err());
    }

    #[test]
    fn descriptor_loop_is_an_error() {
        let mut ram = ram();
        let mut q = queue(4);
        desc(&mut ram, DESC, 0, BASE + 0x10000, 1, VIRTQ_DESC_F_NEXT, 1);
        desc(&mut ram, DESC, 1, BASE + 0x10000, 1, VIRTQ_DESC_F_NEXT, 0);
        make_avail(&mut ram, &[0]);
        assert_eq!(q.pop(&ram), Err(QueueError::ChainTooLong(4)));
    }

    #[test]
    fn bad_indices_are_errors() {
        let mut ram = ram();
        let mut q = queue(4);
        make_avail(&mut ram, &[4]);
        assert_eq!(q.pop(&ram), Err(QueueError::BadIndex { index: 4, size: 4 }));
        let mut q = queue(4);
        desc(&mut ram, DESC, 0, BASE, 1, VIRTQ_DESC_F_NEXT, 9);
        make_avail(&mut ram, &[0]);
        assert_eq!(q.pop(&ram), Err(QueueError::BadIndex { index: 9, size: 4 }));
        let mut q = queue(4);
        ram.write(AVAIL + 2, &7u16.to_le_bytes()).unwrap();
        assert_eq!(
            q.pop(&ram),
            Err(QueueError::TooManyAvailable { count: 7, size: 4 })
        );
    }

    #[test]
    fn rings_outside_ram_are_errors() {
        let ram = ram();
        let mut q = Virtq::new(16);
        q.set_size(16);
        q.set_addr_half(1, false, 0x1000);
        q.set_ready(true).unwrap();
        assert!(matches!(q.pop(&ram), Err(QueueError::OutsideRam { .. })));
    }

    #[test]
    fn bad_configuration_is_refused_at_enable() {
        let mut q = Virtq::new(16);
        q.set_size(12);
        assert_eq!(
            q.set_ready(true),
            Err(QueueError::BadSize { size: 12, max: 16 })
        );
        q.set_size(32);
        assert!(q.set_ready(true).is_err());
        q.set_size(0);
        assert!(q.set_ready(true).is_err());
        q.set_size(16);
        q.set_addr_half(2, false, 0x1002);
        assert_eq!(
            q.set_ready(true),
            Err(QueueError::Misaligned {
                addr: 0x1002,
                align: 4
            })
        );
        q.set_addr_half(2, false, 0x1004);
        q.set_ready(true).unwrap();
        q.set_size(8); // ignored while ready
        assert_eq!(q.size(), 16);
    }

    #[test]
    fn indirect_tables() {
        let mut ram = ram();
        let mut q = queue(4);
        let table = BASE + 0x8000;
        desc(&mut ram, DESC, 2, table, 48, VIRTQ_DESC_F_INDIRECT, 0);
        desc(&mut ram, table, 0, BASE + 0x10000, 16, VIRTQ_DESC_F_NEXT, 2);
        desc(
            &mut ram,
            table,
            2,
            BASE + 0x11000,
            512,
            VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE,
            1,
        );
        desc(&mut ram, table, 1, BASE + 0x12000, 1, VIRTQ_DESC_F_WRITE, 0);
        make_avail(&mut ram, &[2]);
        let c = q.pop(&ram).unwrap().unwrap();
        assert_eq!(c.head, 2);
        assert_eq!(c.segments.len(), 3);
        assert_eq!(c.writable_len(), 513);

        // A loop inside the indirect table, a nested table, and a bad table length.
        desc(&mut ram, table, 1, BASE + 0x12000, 1, VIRTQ_DESC_F_NEXT, 0);
        make_avail(&mut ram, &[2, 2]);
        assert_eq!(q.pop(&ram), Err(QueueError::ChainTooLong(3)));
        desc(&mut ram, table, 1, table, 16, VIRTQ_DESC_F_INDIRECT, 0);
        assert_eq!(q.pop(&ram), Err(QueueError::NestedIndirect));
        desc(&mut ram, DESC, 2, table, 20, VIRTQ_DESC_F_INDIRECT, 0);
        assert_eq!(q.pop(&ram), Err(QueueError::BadIndirectTable(20)));
    }

    #[test]
    fn ring_indices_wrap_at_u16() {
        let mut ram = ram();
        let mut q = queue(4);
        let mut s = q.save();
        (s.next_avail, s.next_used) = (0xfffe, 0xfffe);
        q.restore(&s).unwrap();
        for (i, slot) in [(0u16, 2u64), (1, 3), (2, 0)] {
            desc(&mut ram, DESC, i, BASE + 0x10000, 1, VIRTQ_DESC_F_WRITE, 0);
            ram.write(AVAIL + 4 + 2 * slot, &i.to_le_bytes()).unwrap();
        }
        ram.write(AVAIL + 2, &1u16.to_le_bytes()).unwrap(); // 0xfffe + 3
        for i in 0..3 {
            let c = q.pop(&ram).unwrap().unwrap();
            assert_eq!(c.head, i);
            q.add_used(&mut ram, c.head, 1).unwrap();
        }
        assert!(q.pop(&ram).unwrap().is_none());
        assert_eq!(read_u16(&ram, USED + 2).unwrap(), 1);
        assert_eq!(
            ram.read_u64(USED + 4).unwrap() as u32,
            2,
            "slot 0 holds the third"
        );
        assert_eq!(ram.read_u64(USED + 4 + 8 * 3).unwrap() as u32, 1);
    }

    #[test]
    fn restore_validates() {
        let mut q = Virtq::new(16);
        let good = VirtqState {
            size: 16,
            ready: true,
            used_addr: 4,
            ..Default::default()
        };
        q.restore(&good).unwrap();
        assert_eq!(q.save(), good);
        assert!(q.restore(&VirtqState { size: 32, ..good }).is_err());
        assert!(q
            .restore(&VirtqState {
                used_addr: 2,
                ..good
            })
            .is_err());
        assert_eq!(q.save(), good);
    }

    /// The parser never panics, whatever the guest put in memory (a cheap stand-in for the
    /// fuzz target in `crates/machine/fuzz`, run on every `cargo test`).
    #[test]
    fn random_rings_never_panic() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..300 {
            let mut ram = Ram::new(BASE, 0x4000);
            let mut bytes = vec![0u8; 0x4000];
            for chunk in bytes.chunks_mut(8) {
                // Keep addresses often inside RAM, to reach deep into chains.
                let v = next();
                let v = if v & 3 == 0 {
                    BASE + (v >> 20) % 0x4000
                } else {
                    v
                };
                chunk.copy_from_slice(&v.to_le_bytes()[..chunk.len()]);
            }
            ram.write(BASE, &bytes).unwrap();
            let mut q = Virtq::new(16);
            q.set_size(1 << (next() % 5));
            q.set_addr_half(0, false, (BASE + (next() % 0x400) * 16) as u32);
            q.set_addr_half(1, false, (BASE + (next() % 0x2000) * 2) as u32);
            q.set_addr_half(2, false, (BASE + (next() % 0x1000) * 4) as u32);
            if q.set_ready(true).is_err() {
                continue;
            }
            for _ in 0..20 {
                match q.pop(&ram) {
                    Ok(Some(c)) => {
                        let mut buf = [0; 64];
                        let _ = c.read_at(&ram, next() % 64, &mut buf);
                        let _ = c.write_at(&mut ram, next() % 64, &buf[..(next() % 64) as usize]);
                        if q.add_used(&mut ram, c.head, 1).is_err() {
                            break;
                        }
                    }
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }
}
