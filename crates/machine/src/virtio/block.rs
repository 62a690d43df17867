//! virtio-blk (device id 2, virtio 1.2 §5.2): one request queue in front of a [`BlockBackend`].
//!
//! A request is a device-readable header {type: u32, reserved: u32, sector: u64}, data, and one
//! device-writable status byte at the very end of the writable buffers. Malformed requests
//! (missing header or status, buffers outside RAM, a length that is not whole sectors, a range
//! past the end of the disk, a write to a read-only disk) complete with `VIRTIO_BLK_S_IOERR`;
//! unknown request types with `VIRTIO_BLK_S_UNSUPP`.
//!
//! # When a request takes effect
//!
//! A request is *submitted* when the device pass after the guest's notification takes it off
//! the available ring: it gets the next request id (a per-device counter, so both sides of a
//! replay agree on it) and its header is read. It *completes* later, in one step that moves
//! its data between the backend and guest memory (through a 64 KiB bounce buffer and
//! [`Ram::write`]), writes the status byte and puts it on the used ring. Between the two it is
//! *in flight*: part of the device's saved state ([`VirtioDevice::save_state`]), so snapshots
//! carry it.
//!
//! - Inline mode (the default; tests and embedders that just call `Machine::run`): a request
//!   completes in the device pass that submits it.
//! - Deferred mode (`Machine::set_deferred_io`, what every run loop uses): the pass only
//!   submits, and asks the backend to prepare the request ([`BlockBackend::prepare`]: the
//!   host end `hostblk::AsyncDisk` starts the read on its worker thread). Completions happen only
//!   between two run slices: `Machine::complete_io` completes, in submission order, every
//!   request whose backend says it is ready (the recorder logs each one's id at that icount),
//!   and `Machine::complete_request` completes a given one (the replayer, at the logged icount).
//!
//! Conflicting requests are serialised: a request waits (is neither prepared nor completed)
//! while an earlier in-flight one overlaps it on the disk with at least one of the two writing
//! there, or in guest memory with at least one of the two writing there; a flush waits for the
//! writes submitted before it.

use super::queue::{DescChain, Segment};
use super::{
    read_config_bytes, CompleteError, QueueError, VirtioDevice, VirtioMmio, Virtq,
    VIRTIO_F_RING_INDIRECT_DESC, VIRTIO_F_VERSION_1, VIRTIO_ID_BLOCK,
};
use crate::codec::{CodecError, Dec, Enc};
use rv64::Ram;
use std::io;

/// Feature: `seg_max` in the configuration is valid.
pub const VIRTIO_BLK_F_SEG_MAX: u64 = 1 << 2;
/// Feature: the disk is read-only.
pub const VIRTIO_BLK_F_RO: u64 = 1 << 5;
/// Feature: `blk_size` in the configuration is valid.
pub const VIRTIO_BLK_F_BLK_SIZE: u64 = 1 << 6;
/// Feature: the device accepts flush requests.
pub const VIRTIO_BLK_F_FLUSH: u64 = 1 << 9;

/// Request type: read.
pub const VIRTIO_BLK_T_IN: u32 = 0;
/// Request type: write.
pub const VIRTIO_BLK_T_OUT: u32 = 1;
/// Request type: flush.
pub const VIRTIO_BLK_T_FLUSH: u32 = 4;
/// Request type: device id string.
pub const VIRTIO_BLK_T_GET_ID: u32 = 8;

/// Request status: success.
pub const VIRTIO_BLK_S_OK: u8 = 0;
/// Request status: the request failed.
pub const VIRTIO_BLK_S_IOERR: u8 = 1;
/// Request status: the request type is not supported.
pub const VIRTIO_BLK_S_UNSUPP: u8 = 2;

/// Bytes per sector, the unit of `sector` and `capacity`.
pub const SECTOR_SIZE: u64 = 512;
/// Length of a request header.
const HEADER_LEN: u64 = 16;
/// Length of the GET_ID answer.
const ID_LEN: usize = 20;
/// The serial number every disk reports: fixed, so that a primary and its backup agree.
const DISK_ID: &[u8; ID_LEN] = b"ftvm-virtio-blk\0\0\0\0\0";
/// QueueNumMax of the request queue (QEMU's default too).
const QUEUE_SIZE: u16 = 256;
/// Size of the bounce buffer: the most data moved between disk and RAM in one step.
const CHUNK: usize = 64 * 1024;

/// What an in-flight request needs of its backend before it can complete without waiting on
/// the host's disk ([`BlockBackend::prepare`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prepare {
    /// A read of `len` bytes at byte `offset` is coming (it is then done by `read_at` calls of
    /// at most 64 KiB within that range, in order).
    Read {
        /// Byte offset.
        offset: u64,
        /// Bytes.
        len: u64,
    },
    /// A flush is coming.
    Flush,
    /// The read prepared at `offset`, `len` has completed (or was abandoned): drop what is held
    /// for it.
    Done {
        /// Byte offset.
        offset: u64,
        /// Bytes.
        len: u64,
    },
    /// The device was reset: drop everything prepared.
    Forget,
}

/// Where a disk's sectors live. The replay layer wraps this to record and replay reads.
pub trait BlockBackend: Send {
    /// Size of the disk in bytes. The guest sees whole sectors only.
    fn len(&self) -> u64;
    /// Whether the disk has no bytes at all.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Fills `buf` from byte `offset`; the range is always inside [`BlockBackend::len`].
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Writes `data` at byte `offset`; the range is always inside [`BlockBackend::len`].
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Makes every completed write durable.
    fn flush(&mut self) -> io::Result<()>;
    /// Gets ready for a request that will complete later, e.g. by starting the read on another
    /// thread; returns whether it is ready: whether the `read_at` or `flush` that carries it
    /// out would return without waiting on the host's disk. May be called again and again for
    /// the same request until it is. Wrappers pass it on to the backend they wrap. The default:
    /// always ready (the operation is simply synchronous).
    fn prepare(&mut self, op: Prepare) -> bool {
        let _ = op;
        true
    }
    /// What this backend is, with the layers under it for a wrapper (`"recording(file)"`): a
    /// test compares the stacks, so a layer that should have gone shows. The default: the
    /// type's name without its path.
    fn describe(&self) -> String {
        crate::virtio::short_type_name(std::any::type_name::<Self>())
    }
    /// A wrapper taken off: gives back the backend it wraps (the wrapper is dropped next and
    /// must not be used again). `None`: this backend wraps nothing it can give back.
    fn take_inner(&mut self) -> Option<Box<dyn BlockBackend>> {
        None
    }
    /// The machine that has this backend hands over its host loop's [`crate::wake::Waker`]
    /// (`Machine::set_waker`, `Machine::replace_disk`): a backend that finishes host I/O on a
    /// thread of its own (`hostblk::AsyncDisk`) calls it then. Wrappers pass it on to the
    /// backend they wrap. The default: nothing to wake for.
    fn set_wake(&mut self, wake: &crate::wake::Waker) {
        let _ = wake;
    }
}

/// A disk held in host memory (tests, scratch disks).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemBackend {
    /// The disk's bytes.
    pub data: Vec<u8>,
    /// Number of flushes seen.
    pub flushes: u64,
}

impl BlockBackend for MemBackend {
    fn len(&self) -> u64 {
        self.data.len() as u64
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let src = usize::try_from(offset)
            .ok()
            .and_then(|o| self.data.get(o..o.checked_add(buf.len())?))
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        let dst = usize::try_from(offset)
            .ok()
            .and_then(|o| self.data.get_mut(o..o.checked_add(data.len())?))
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        dst.copy_from_slice(data);
        Ok(())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.flushes += 1;
        Ok(())
    }
}

impl VirtioMmio {
    /// A virtio-blk device on a backend (a host end from `hostblk`, or one the replay layer
    /// wraps or makes).
    pub fn block_with_backend(backend: Box<dyn BlockBackend>, readonly: bool) -> VirtioMmio {
        VirtioMmio::new(Box::new(Block::new(backend, readonly)))
    }
}

/// The virtio-blk device model.
struct Block {
    backend: Box<dyn BlockBackend>,
    readonly: bool,
    /// Disk size in sectors.
    capacity: u64,
    features: u64,
    config: [u8; 64],
    bounce: Vec<u8>,
    /// Deferred mode: requests complete only at completion points (see the module docs).
    deferred: bool,
    /// The id the next submitted request gets.
    next_id: u64,
    /// Requests submitted and not completed, in submission order.
    in_flight: Vec<InFlight>,
}

/// A request between submission and completion.
#[derive(Debug, Clone, PartialEq, Eq)]
struct InFlight {
    id: u64,
    chain: DescChain,
    /// (type, sector), read at submission; `None` if the header could not be read.
    header: Option<(u32, u64)>,
}

/// Saved-state format of the in-flight table (the first byte of [`VirtioDevice::save_state`]).
const STATE_VERSION: u8 = 1;
/// Most segments a saved request may have (a chain is at most a queue's size long, indirect
/// tables included).
const MAX_SAVED_SEGMENTS: usize = 4 * QUEUE_SIZE as usize;

impl InFlight {
    /// The disk bytes it touches and whether it writes them.
    fn disk_range(&self) -> Option<(u64, u64, bool)> {
        let (kind, sector) = self.header?;
        let start = sector.checked_mul(SECTOR_SIZE)?;
        let (len, writes) = match kind {
            VIRTIO_BLK_T_IN => (self.chain.writable_len().saturating_sub(1), false),
            VIRTIO_BLK_T_OUT => (self.chain.readable_len().saturating_sub(HEADER_LEN), true),
            _ => return None,
        };
        Some((start, start.saturating_add(len), writes))
    }

    fn is_flush(&self) -> bool {
        matches!(self.header, Some((VIRTIO_BLK_T_FLUSH, _)))
    }

    fn is_write(&self) -> bool {
        matches!(self.header, Some((VIRTIO_BLK_T_OUT, _)))
    }

    /// Whether `later` must wait for this (earlier) request: see the module docs.
    fn blocks(&self, later: &InFlight) -> bool {
        if later.is_flush() && self.is_write() {
            return true;
        }
        if let (Some((a0, a1, aw)), Some((b0, b1, bw))) = (self.disk_range(), later.disk_range()) {
            if (aw || bw) && a0 < b1 && b0 < a1 {
                return true;
            }
        }
        let overlap = |a: &Segment, b: &Segment| {
            let (a1, b1) = (
                a.addr.saturating_add(u64::from(a.len)),
                b.addr.saturating_add(u64::from(b.len)),
            );
            (a.writable || b.writable) && a.addr < b1 && b.addr < a1
        };
        self.chain
            .segments
            .iter()
            .any(|a| later.chain.segments.iter().any(|b| overlap(a, b)))
    }
}

impl Block {
    fn new(backend: Box<dyn BlockBackend>, readonly: bool) -> Block {
        let capacity = backend.len() / SECTOR_SIZE;
        let mut features = VIRTIO_F_VERSION_1
            | VIRTIO_F_RING_INDIRECT_DESC
            | VIRTIO_BLK_F_SEG_MAX
            | VIRTIO_BLK_F_BLK_SIZE
            | VIRTIO_BLK_F_FLUSH;
        if readonly {
            features |= VIRTIO_BLK_F_RO;
        }
        // struct virtio_blk_config (§5.2.4); fields whose feature is not offered stay zero.
        let mut config = [0u8; 64];
        config[0..8].copy_from_slice(&capacity.to_le_bytes());
        config[12..16].copy_from_slice(&u32::from(QUEUE_SIZE - 2).to_le_bytes()); // seg_max
        config[20..24].copy_from_slice(&(SECTOR_SIZE as u32).to_le_bytes()); // blk_size
        config[34..36].copy_from_slice(&1u16.to_le_bytes()); // num_queues
        Block {
            backend,
            readonly,
            capacity,
            features,
            config,
            bounce: vec![0; CHUNK],
            deferred: false,
            next_id: 0,
            in_flight: Vec::new(),
        }
    }

    /// Takes a request off the ring: it gets its id and its header is read.
    fn submit(&mut self, ram: &Ram, chain: DescChain) {
        let mut h = [0u8; HEADER_LEN as usize];
        let header = chain.read_at(ram, 0, &mut h).ok().map(|()| {
            let kind = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
            let sector = u64::from_le_bytes([h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]]);
            (kind, sector)
        });
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.in_flight.push(InFlight { id, chain, header });
    }

    /// The index of an earlier in-flight request that the one at `i` waits for.
    fn waits_for(&self, i: usize) -> Option<usize> {
        let r = &self.in_flight[i];
        self.in_flight[..i].iter().position(|e| e.blocks(r))
    }

    /// What the backend must prepare for request `r`, if anything.
    fn preparation(&self, r: &InFlight) -> Option<Prepare> {
        match r.header? {
            (VIRTIO_BLK_T_IN, sector) => {
                let len = r.chain.writable_len().saturating_sub(1);
                let offset = self.range(sector, len).ok()?;
                (len > 0).then_some(Prepare::Read { offset, len })
            }
            (VIRTIO_BLK_T_FLUSH, _) if !self.readonly => Some(Prepare::Flush),
            _ => None,
        }
    }

    /// Whether the request at `i` may complete now: it waits for nothing and its backend has
    /// it ready (asking for it to be prepared if it is not).
    fn ready(&mut self, i: usize) -> bool {
        if self.waits_for(i).is_some() {
            return false;
        }
        match self.preparation(&self.in_flight[i]) {
            Some(op) => self.backend.prepare(op),
            None => true,
        }
    }

    /// Asks the backend to prepare every request that waits for nothing.
    fn prepare_all(&mut self) {
        for i in 0..self.in_flight.len() {
            self.ready(i);
        }
    }

    /// Completes the request at `i`: data, status byte, used ring.
    fn finish(&mut self, q: &mut Virtq, ram: &mut Ram, i: usize) -> Result<u64, QueueError> {
        let r = self.in_flight.remove(i);
        let len = self.handle(ram, &r.chain, r.header);
        if let Some(Prepare::Read { offset, len }) = self.preparation(&r) {
            self.backend.prepare(Prepare::Done { offset, len });
        }
        q.add_used(ram, r.chain.head, len)?;
        Ok(r.id)
    }

    /// Executes one request and writes its status byte. Returns the used length: the bytes
    /// written into the chain.
    fn handle(&mut self, ram: &mut Ram, chain: &DescChain, header: Option<(u32, u64)>) -> u32 {
        let writable = chain.writable_len();
        if writable == 0 {
            return 0; // nowhere to put a status: the driver gets nothing back
        }
        let data_len = writable - 1;
        let (status, written) = match self.execute(ram, chain, header, data_len) {
            Ok(written) => (VIRTIO_BLK_S_OK, written),
            Err(status) => (status, 0),
        };
        if chain.write_at(ram, data_len, &[status]).is_err() {
            return 0;
        }
        u32::try_from(written + 1).unwrap_or(u32::MAX)
    }

    /// Runs the request; `Ok(bytes of data written into the chain)` or `Err(status)`.
    fn execute(
        &mut self,
        ram: &mut Ram,
        chain: &DescChain,
        header: Option<(u32, u64)>,
        in_len: u64,
    ) -> Result<u64, u8> {
        let (kind, sector) = header.ok_or(VIRTIO_BLK_S_IOERR)?;
        if !chain.in_ram(ram) {
            return Err(VIRTIO_BLK_S_IOERR);
        }
        let ioerr = |_| VIRTIO_BLK_S_IOERR;
        match kind {
            VIRTIO_BLK_T_IN => {
                let start = self.range(sector, in_len)?;
                self.copy(in_len, |b, off, buf| {
                    b.backend.read_at(start + off, buf).map_err(ioerr)?;
                    chain
                        .write_at(ram, off, buf)
                        .map_err(|_| VIRTIO_BLK_S_IOERR)
                })?;
                Ok(in_len)
            }
            VIRTIO_BLK_T_OUT => {
                if self.readonly {
                    return Err(VIRTIO_BLK_S_IOERR);
                }
                let out_len = chain.readable_len() - HEADER_LEN;
                let start = self.range(sector, out_len)?;
                self.copy(out_len, |b, off, buf| {
                    chain
                        .read_at(ram, HEADER_LEN + off, buf)
                        .map_err(|_| VIRTIO_BLK_S_IOERR)?;
                    b.backend.write_at(start + off, buf).map_err(ioerr)
                })?;
                Ok(0)
            }
            VIRTIO_BLK_T_FLUSH => {
                if !self.readonly {
                    self.backend.flush().map_err(ioerr)?;
                }
                Ok(0)
            }
            VIRTIO_BLK_T_GET_ID => {
                let n = usize::try_from(in_len).unwrap_or(ID_LEN).min(ID_LEN);
                chain
                    .write_at(ram, 0, &DISK_ID[..n])
                    .map_err(|_| VIRTIO_BLK_S_IOERR)?;
                Ok(n as u64)
            }
            _ => Err(VIRTIO_BLK_S_UNSUPP),
        }
    }

    /// Byte offset of `len` bytes at `sector`, if they are whole sectors inside the disk.
    fn range(&self, sector: u64, len: u64) -> Result<u64, u8> {
        let end = sector.checked_add(len / SECTOR_SIZE);
        if !len.is_multiple_of(SECTOR_SIZE) || end.is_none_or(|e| e > self.capacity) {
            return Err(VIRTIO_BLK_S_IOERR);
        }
        Ok(sector * SECTOR_SIZE)
    }

    /// Calls `step(self, offset, bounce buffer)` for each bounce-buffer-sized piece of `len`.
    fn copy(
        &mut self,
        len: u64,
        mut step: impl FnMut(&mut Block, u64, &mut [u8]) -> Result<(), u8>,
    ) -> Result<(), u8> {
        let mut bounce = std::mem::take(&mut self.bounce);
        let mut off = 0;
        let mut result = Ok(());
        while off < len && result.is_ok() {
            let n = (len - off).min(CHUNK as u64) as usize;
            result = step(self, off, &mut bounce[..n]);
            off += n as u64;
        }
        self.bounce = bounce;
        result
    }
}

/// The saved in-flight table: [`STATE_VERSION`], next id, count, then per request its id,
/// head, header (flag, type, sector) and segments (count, then address, length, writable).
/// Little-endian, in the snapshot's own encoding.
fn encode_state(next_id: u64, reqs: &[InFlight]) -> Vec<u8> {
    let mut e = Enc::default();
    e.u8(STATE_VERSION);
    e.u64(next_id);
    e.len(reqs.len());
    for r in reqs {
        e.u64(r.id);
        e.u16(r.chain.head);
        let (kind, sector) = r.header.unwrap_or((0, 0));
        e.bool(r.header.is_some());
        e.u32(kind);
        e.u64(sector);
        e.len(r.chain.segments.len());
        for s in &r.chain.segments {
            e.u64(s.addr);
            e.u32(s.len);
            e.bool(s.writable);
        }
    }
    e.0
}

/// Reads what [`encode_state`] wrote, checking everything a hostile snapshot could get wrong.
fn decode_state(b: &[u8]) -> Result<(u64, Vec<InFlight>), String> {
    let mut d = Dec {
        buf: b,
        section: "virtio-blk requests in flight",
    };
    decode_requests(&mut d).map_err(|e| e.to_string())
}

fn decode_requests(d: &mut Dec) -> Result<(u64, Vec<InFlight>), CodecError> {
    let v = d.u8()?;
    if v != STATE_VERSION {
        return Err(d.bad(format!("table version {v}, expected {STATE_VERSION}")));
    }
    let next_id = d.u64()?;
    let n = d.u32()? as usize;
    if n > usize::from(QUEUE_SIZE) {
        return Err(d.bad(format!("{n} requests in flight on a queue of {QUEUE_SIZE}")));
    }
    let mut reqs: Vec<InFlight> = Vec::with_capacity(n);
    for _ in 0..n {
        let id = d.u64()?;
        let head = d.u16()?;
        let has = d.bool()?;
        let (kind, sector) = (d.u32()?, d.u64()?);
        let segs = d.count(13)?;
        if segs > MAX_SAVED_SEGMENTS {
            return Err(d.bad(format!("a request of {segs} segments")));
        }
        let mut segments = Vec::with_capacity(segs);
        for _ in 0..segs {
            segments.push(Segment {
                addr: d.u64()?,
                len: d.u32()?,
                writable: d.bool()?,
            });
        }
        if head >= QUEUE_SIZE || reqs.iter().any(|r| r.chain.head == head) {
            return Err(d.bad(format!(
                "descriptor head {head} in flight twice or out of range"
            )));
        }
        if reqs.last().is_some_and(|r| r.id >= id) || id >= next_id {
            return Err(d.bad(format!("request id {id} out of order (next id {next_id})")));
        }
        reqs.push(InFlight {
            id,
            chain: DescChain { head, segments },
            header: has.then_some((kind, sector)),
        });
    }
    if !d.buf.is_empty() {
        return Err(d.bad("bytes left over after the table"));
    }
    Ok((next_id, reqs))
}

impl VirtioDevice for Block {
    fn device_id(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }
    fn features(&self) -> u64 {
        self.features
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }
    fn config_read(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }
    fn reset(&mut self) {
        self.in_flight.clear();
        self.backend.prepare(Prepare::Forget);
    }
    fn block_backend_mut(&mut self) -> Option<&mut Box<dyn BlockBackend>> {
        Some(&mut self.backend)
    }
    fn set_deferred(&mut self, on: bool) {
        self.deferred = on;
    }
    fn in_flight(&self) -> usize {
        self.in_flight.len()
    }
    fn process(
        &mut self,
        queues: &mut [Virtq],
        notified: u32,
        _features: u64,
        ram: &mut Ram,
    ) -> Result<(), QueueError> {
        let q = &mut queues[0];
        if notified & 1 != 0 {
            while let Some(chain) = q.pop(ram)? {
                self.submit(ram, chain);
            }
        }
        if self.deferred {
            if notified & 1 != 0 {
                self.prepare_all();
            }
        } else {
            while !self.in_flight.is_empty() {
                self.finish(q, ram, 0)?;
            }
        }
        Ok(())
    }
    fn complete_ready(
        &mut self,
        queues: &mut [Virtq],
        ram: &mut Ram,
        done: &mut Vec<u64>,
    ) -> Result<(), QueueError> {
        let mut i = 0;
        while i < self.in_flight.len() {
            if self.ready(i) {
                let id = self.in_flight[i].id;
                done.push(id);
                self.finish(&mut queues[0], ram, i)?;
            } else {
                i += 1;
            }
        }
        if !done.is_empty() {
            // Earlier requests refused for want of read-ahead room may start now.
            self.prepare_all();
        }
        Ok(())
    }
    fn complete(
        &mut self,
        queues: &mut [Virtq],
        ram: &mut Ram,
        id: u64,
    ) -> Result<(), CompleteError> {
        let i = self
            .in_flight
            .iter()
            .position(|r| r.id == id)
            .ok_or(CompleteError::NotInFlight(id))?;
        if let Some(j) = self.waits_for(i) {
            return Err(CompleteError::Waiting {
                id,
                on: self.in_flight[j].id,
            });
        }
        self.finish(&mut queues[0], ram, i)?;
        Ok(())
    }
    fn save_state(&self) -> Vec<u8> {
        encode_state(self.next_id, &self.in_flight)
    }
    fn restore_state(&mut self, bytes: &[u8]) -> Result<(), String> {
        let (next_id, reqs) = decode_state(bytes)?;
        self.backend.prepare(Prepare::Forget);
        self.next_id = next_id;
        self.in_flight = reqs;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::testutil::{Driver, BASE, DATA};
    use crate::virtio::VirtioError;
    use std::sync::{Arc, Mutex};

    /// A shared in-memory disk, so a test can look at it after handing it to the device.
    #[derive(Clone)]
    struct Shared(Arc<Mutex<MemBackend>>);

    impl BlockBackend for Shared {
        fn len(&self) -> u64 {
            self.0.lock().unwrap().len()
        }
        fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
            self.0.lock().unwrap().read_at(offset, buf)
        }
        fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
            self.0.lock().unwrap().write_at(offset, data)
        }
        fn flush(&mut self) -> io::Result<()> {
            self.0.lock().unwrap().flush()
        }
    }

    const HDR: u64 = DATA;
    const BUF: u64 = DATA + 0x1000;
    const STATUS: u64 = DATA + 0x800;

    /// A 64-sector disk whose sector n is filled with byte n.
    fn setup(readonly: bool) -> (Driver, Shared) {
        let data = (0..64u8).flat_map(|s| [s; 512]).collect();
        let disk = Shared(Arc::new(Mutex::new(MemBackend { data, flushes: 0 })));
        let dev = VirtioMmio::block_with_backend(Box::new(disk.clone()), readonly);
        (Driver::new(dev, u64::MAX, 16), disk)
    }

    fn header(d: &mut Driver, kind: u32, sector: u64) {
        let mut h = Vec::new();
        h.extend_from_slice(&kind.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        h.extend_from_slice(&sector.to_le_bytes());
        d.ram.write(HDR, &h).unwrap();
        d.ram.write(STATUS, &[0xff]).unwrap();
    }

    fn status(d: &Driver) -> u8 {
        d.mem(STATUS, 1)[0]
    }

    #[test]
    fn config_and_features() {
        let (mut d, _) = setup(true);
        assert_eq!(d.dev.device_id(), 2);
        assert_eq!(d.dev.read(0x100, 8), Some(64), "capacity in sectors");
        assert_eq!(d.dev.read(0x100 + 12, 4), Some(254), "seg_max");
        assert_eq!(d.dev.read(0x100 + 20, 4), Some(512), "blk_size");
        d.set_reg(0x014, 0);
        let f = d.reg(0x010);
        assert_ne!(f & (1 << 5), 0, "VIRTIO_BLK_F_RO");
        assert_ne!(f & (1 << 9), 0, "VIRTIO_BLK_F_FLUSH");
        let (mut d, _) = setup(false);
        d.set_reg(0x014, 0);
        assert_eq!(d.reg(0x010) & (1 << 5), 0);
    }

    #[test]
    fn read_write_flush() {
        let (mut d, disk) = setup(false);
        // Read sectors 2..4 into a buffer split over two descriptors.
        header(&mut d, VIRTIO_BLK_T_IN, 2);
        let head = d.submit(
            0,
            &[
                (HDR, 16, false),
                (BUF, 700, true),
                (BUF + 700, 324, true),
                (STATUS, 1, true),
            ],
        );
        d.kick(0);
        assert_eq!(d.take_used(0), vec![(u32::from(head), 1025)]);
        assert_eq!(status(&d), VIRTIO_BLK_S_OK);
        assert_eq!(d.mem(BUF, 1024), [[2u8; 512], [3u8; 512]].concat());
        assert_eq!(d.ack(), 1, "used-buffer interrupt");
        assert!(!d.dev.irq_level());

        // Write sector 5, header and data in one descriptor.
        d.ram.write(HDR + 16, &[0xab; 512]).unwrap();
        header(&mut d, VIRTIO_BLK_T_OUT, 5);
        d.submit(0, &[(HDR, 16 + 512, false), (STATUS, 1, true)]);
        d.kick(0);
        assert_eq!(d.take_used(0).len(), 1);
        assert_eq!(status(&d), VIRTIO_BLK_S_OK);
        assert_eq!(disk.0.lock().unwrap().data[5 * 512..6 * 512], [0xab; 512]);

        header(&mut d, VIRTIO_BLK_T_FLUSH, 0);
        d.submit(0, &[(HDR, 16, false), (STATUS, 1, true)]);
        d.kick(0);
        assert_eq!(status(&d), VIRTIO_BLK_S_OK);
        assert_eq!(disk.0.lock().unwrap().flushes, 1);

        header(&mut d, VIRTIO_BLK_T_GET_ID, 0);
        d.submit(0, &[(HDR, 16, false), (BUF, 20, true), (STATUS, 1, true)]);
        d.kick(0);
        assert_eq!(status(&d), VIRTIO_BLK_S_OK);
        assert_eq!(&d.mem(BUF, 15)[..], b"ftvm-virtio-blk");
        assert!(!d.needs_reset());
    }

    #[test]
    fn large_read_goes_through_the_bounce_buffer_in_pieces() {
        let (mut d, _) = setup(false);
        header(&mut d, VIRTIO_BLK_T_IN, 0);
        d.submit(
            0,
            &[(HDR, 16, false), (BUF, 64 * 512, true), (STATUS, 1, true)],
        );
        d.kick(0);
        assert_eq!(status(&d), VIRTIO_BLK_S_OK);
        assert_eq!(d.mem(BUF + 63 * 512, 512), vec![63; 512]);
    }

    #[test]
    fn requests_past_the_end_fail() {
        let (mut d, _) = setup(false);
        for (sector, len) in [(63, 1024), (64, 512), (u64::MAX, 512), (0, 100)] {
            header(&mut d, VIRTIO_BLK_T_IN, sector);
            d.submit(0, &[(HDR, 16, false), (BUF, len, true), (STATUS, 1, true)]);
            d.kick(0);
            assert_eq!(status(&d), VIRTIO_BLK_S_IOERR, "sector {sector} len {len}");
            assert_eq!(d.mem(BUF, 4), [0; 4], "no data for a failed request");
        }
        header(&mut d, VIRTIO_BLK_T_OUT, 63);
        d.submit(
            0,
            &[(HDR, 16, false), (BUF, 1024, false), (STATUS, 1, true)],
        );
        d.kick(0);
        assert_eq!(status(&d), VIRTIO_BLK_S_IOERR);
        assert!(!d.needs_reset());
    }

    #[test]
    fn readonly_disk_refuses_writes() {
        let (mut d, disk) = setup(true);
        header(&mut d, VIRTIO_BLK_T_OUT, 0);
        d.ram.write(BUF, &[0xee; 512]).unwrap();
        d.submit(0, &[(HDR, 16, false), (BUF, 512, false), (STATUS, 1, true)]);
        d.kick(0);
        assert_eq!(status(&d), VIRTIO_BLK_S_IOERR);
        assert_eq!(disk.0.lock().unwrap().data[..512], [0; 512]);
    }

    #[test]
    fn unknown_types_and_malformed_requests() {
        let (mut d, _) = setup(false);
        header(&mut d, 11, 0); // DISCARD, not offered
        d.submit(0, &[(HDR, 16, false), (STATUS, 1, true)]);
        d.kick(0);
        assert_eq!(status(&d), VIRTIO_BLK_S_UNSUPP);

        header(&mut d, VIRTIO_BLK_T_IN, 0);
        d.submit(0, &[(HDR, 8, false), (STATUS, 1, true)]); // short header
        d.kick(0);
        assert_eq!(status(&d), VIRTIO_BLK_S_IOERR);

        d.submit(0, &[(HDR, 16, false)]); // no status byte at all
        d.kick(0);
        assert_eq!(d.take_used(0).last(), Some(&(4, 0)));
        assert!(!d.needs_reset());
    }

    #[test]
    fn data_buffer_outside_ram_is_an_io_error() {
        let (mut d, _) = setup(false);
        header(&mut d, VIRTIO_BLK_T_IN, 0);
        d.submit(
            0,
            &[
                (HDR, 16, false),
                (BASE + (1 << 20) - 256, 512, true),
                (STATUS, 1, true),
            ],
        );
        d.kick(0);
        assert_eq!(status(&d), VIRTIO_BLK_S_IOERR);
        header(&mut d, VIRTIO_BLK_T_IN, 0);
        d.submit(
            0,
            &[(HDR, 16, false), (0x1000, 512, true), (STATUS, 1, true)],
        );
        d.kick(0);
        assert_eq!(status(&d), VIRTIO_BLK_S_IOERR);
        assert!(!d.needs_reset());
    }

    #[test]
    fn descriptor_loop_needs_reset() {
        let (mut d, _) = setup(false);
        header(&mut d, VIRTIO_BLK_T_IN, 0);
        d.put_desc(0, 0, HDR, 16, 1, 1);
        d.put_desc(0, 1, BUF, 512, 3, 0);
        d.make_available(0, 0);
        d.kick(0);
        assert!(d.needs_reset());
        assert_eq!(d.ack(), 2, "config-change interrupt");
        assert!(matches!(
            d.dev.last_error(),
            Some(QueueError::ChainTooLong(16))
        ));
        // Nothing more happens until the driver resets the device.
        d.kick(0);
        assert!(d.take_used(0).is_empty());
    }

    #[test]
    fn descriptor_table_outside_ram_needs_reset() {
        let (mut d, _) = setup(false);
        // Re-point queue 0 at a table outside RAM.
        d.set_reg(0x030, 0);
        d.set_reg(0x044, 0);
        d.set_reg(0x080, 0x1000);
        d.set_reg(0x084, 0);
        d.set_reg(0x044, 1);
        d.make_available(0, 0);
        d.kick(0);
        assert!(d.needs_reset());
    }

    /// A shared disk whose reads are ready only when the test says so.
    struct Gate {
        disk: Shared,
        ready: Arc<std::sync::atomic::AtomicBool>,
        forgets: Arc<Mutex<u32>>,
    }

    impl BlockBackend for Gate {
        fn len(&self) -> u64 {
            self.disk.len()
        }
        fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
            self.disk.read_at(offset, buf)
        }
        fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
            self.disk.write_at(offset, data)
        }
        fn flush(&mut self) -> io::Result<()> {
            self.disk.flush()
        }
        fn prepare(&mut self, op: Prepare) -> bool {
            match op {
                Prepare::Read { .. } => self.ready.load(std::sync::atomic::Ordering::SeqCst),
                Prepare::Forget => {
                    *self.forgets.lock().unwrap() += 1;
                    true
                }
                _ => true,
            }
        }
    }

    struct Deferred {
        d: Driver,
        disk: Shared,
        ready: Arc<std::sync::atomic::AtomicBool>,
        forgets: Arc<Mutex<u32>>,
    }

    /// [`setup`]'s disk, in deferred mode behind a [`Gate`] that is closed.
    fn deferred() -> Deferred {
        let data = (0..64u8).flat_map(|s| [s; 512]).collect();
        let disk = Shared(Arc::new(Mutex::new(MemBackend { data, flushes: 0 })));
        let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let forgets = Arc::new(Mutex::new(0));
        let gate = Gate {
            disk: disk.clone(),
            ready: Arc::clone(&ready),
            forgets: Arc::clone(&forgets),
        };
        let mut dev = VirtioMmio::block_with_backend(Box::new(gate), false);
        dev.set_deferred(true);
        Deferred {
            d: Driver::new(dev, u64::MAX, 16),
            disk,
            ready,
            forgets,
        }
    }

    /// Submits a request with its header at `hdr` and its status byte at `hdr + 16`; `data` is
    /// (address, length) of its one data buffer. Returns the head.
    fn request(d: &mut Driver, kind: u32, sector: u64, hdr: u64, data: (u64, u32)) -> u16 {
        let mut h = Vec::new();
        h.extend_from_slice(&kind.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        h.extend_from_slice(&sector.to_le_bytes());
        d.ram.write(hdr, &h).unwrap();
        d.ram.write(hdr + 16, &[0xff]).unwrap();
        let head = d.submit(
            0,
            &[
                (hdr, 16, false),
                (data.0, data.1, kind == VIRTIO_BLK_T_IN),
                (hdr + 16, 1, true),
            ],
        );
        d.kick(0);
        head
    }

    fn complete_ready(d: &mut Driver) -> Vec<u64> {
        let mut done = Vec::new();
        d.dev.complete_ready(&mut d.ram, &mut done);
        done
    }

    #[test]
    fn deferred_read_lands_in_guest_memory_only_at_a_completion_point() {
        let Deferred { mut d, ready, .. } = deferred();
        request(&mut d, VIRTIO_BLK_T_IN, 3, HDR, (BUF, 512));
        assert_eq!(d.dev.in_flight(), 1);
        assert!(
            d.take_used(0).is_empty(),
            "not completed by the device pass"
        );
        assert_eq!(d.mem(BUF, 4), [0; 4]);
        assert_eq!(d.mem(HDR + 16, 1), [0xff], "no status yet");
        assert!(
            complete_ready(&mut d).is_empty(),
            "the disk has not got it ready"
        );
        assert_eq!(d.ack(), 0, "no interrupt");
        ready.store(true, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(complete_ready(&mut d), [0]);
        assert_eq!(d.take_used(0).len(), 1);
        assert_eq!(d.mem(BUF, 512), [3; 512]);
        assert_eq!(d.mem(HDR + 16, 1), [VIRTIO_BLK_S_OK]);
        assert_eq!(d.ack(), 1, "used-buffer interrupt");
        assert_eq!(d.dev.in_flight(), 0);
    }

    #[test]
    fn a_write_waits_for_an_earlier_read_of_the_same_sectors() {
        let Deferred {
            mut d, disk, ready, ..
        } = deferred();
        request(&mut d, VIRTIO_BLK_T_IN, 5, HDR, (BUF, 512));
        d.ram.write(BUF + 0x1000, &[0xab; 512]).unwrap();
        request(
            &mut d,
            VIRTIO_BLK_T_OUT,
            5,
            HDR + 0x100,
            (BUF + 0x1000, 512),
        );
        // A write needs nothing prepared, but it would change what the read gets.
        assert!(complete_ready(&mut d).is_empty());
        assert_eq!(disk.0.lock().unwrap().data[5 * 512], 5, "not written yet");
        let err = d.dev.complete(&mut d.ram, 1).unwrap_err();
        assert!(
            matches!(err, CompleteError::Waiting { id: 1, on: 0 }),
            "{err}"
        );
        ready.store(true, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(complete_ready(&mut d), [0, 1], "in order");
        assert_eq!(d.mem(BUF, 512), [5; 512], "the read got the old data");
        assert_eq!(disk.0.lock().unwrap().data[5 * 512], 0xab);
    }

    #[test]
    fn reads_into_the_same_guest_memory_are_serialised_others_complete_out_of_order() {
        let Deferred { mut d, ready, .. } = deferred();
        request(&mut d, VIRTIO_BLK_T_IN, 1, HDR, (BUF, 1024));
        // Another sector into half of the same buffer: must not land first.
        request(&mut d, VIRTIO_BLK_T_IN, 9, HDR + 0x100, (BUF + 512, 512));
        // Elsewhere in memory: may complete before both.
        request(
            &mut d,
            VIRTIO_BLK_T_GET_ID,
            0,
            HDR + 0x200,
            (BUF + 0x2000, 20),
        );
        assert_eq!(complete_ready(&mut d), [2]);
        assert_eq!(d.dev.in_flight(), 2);
        ready.store(true, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(complete_ready(&mut d), [0, 1]);
        assert_eq!(d.mem(BUF, 512), [1; 512]);
        assert_eq!(d.mem(BUF + 512, 512), [9; 512], "the later read last");
    }

    #[test]
    fn a_replay_completes_what_the_log_says_when_it_says_it() {
        let Deferred { mut d, .. } = deferred();
        request(&mut d, VIRTIO_BLK_T_IN, 2, HDR, (BUF, 512));
        request(&mut d, VIRTIO_BLK_T_IN, 4, HDR + 0x100, (BUF + 0x1000, 512));
        // The gate is closed: a replayer does not ask the disk.
        d.dev.complete(&mut d.ram, 1).unwrap();
        assert_eq!(d.mem(BUF + 0x1000, 512), [4; 512]);
        assert!(matches!(
            d.dev.complete(&mut d.ram, 1),
            Err(CompleteError::NotInFlight(1))
        ));
        assert!(matches!(
            d.dev.complete(&mut d.ram, 7),
            Err(CompleteError::NotInFlight(7))
        ));
        d.dev.complete(&mut d.ram, 0).unwrap();
        assert_eq!(d.take_used(0).len(), 2);
    }

    #[test]
    fn in_flight_requests_are_saved_restored_and_complete_the_same() {
        let Deferred { mut d, .. } = deferred();
        request(&mut d, VIRTIO_BLK_T_IN, 6, HDR, (BUF, 512));
        request(&mut d, VIRTIO_BLK_T_IN, 7, HDR + 0x100, (BUF + 0x1000, 512));
        d.dev.complete(&mut d.ram, 0).unwrap();
        let saved = d.dev.save();
        assert!(!saved.device.is_empty());
        // A second machine in the same state (its RAM copied), restored from the saved form.
        let Deferred {
            d: mut e, forgets, ..
        } = deferred();
        let all = d.mem(BASE, 1 << 20);
        e.ram.write(BASE, &all).unwrap();
        let before = *forgets.lock().unwrap();
        e.dev.restore(&saved).unwrap();
        assert_eq!(
            *forgets.lock().unwrap(),
            before + 1,
            "what the old state prepared is dropped"
        );
        assert_eq!(e.dev.in_flight(), 1);
        e.dev.complete(&mut e.ram, 1).unwrap();
        d.dev.complete(&mut d.ram, 1).unwrap();
        assert_eq!(e.mem(BUF + 0x1000, 512), [7; 512]);
        // Same queues, same next request id.
        assert_eq!(e.dev.save(), d.dev.save());
    }

    #[test]
    fn a_damaged_in_flight_table_is_refused_and_changes_nothing() {
        let Deferred { mut d, .. } = deferred();
        request(&mut d, VIRTIO_BLK_T_IN, 6, HDR, (BUF, 512));
        let good = d.dev.save();
        let mut bad = Vec::new();
        let mut cut = good.clone();
        cut.device.truncate(cut.device.len() - 3);
        bad.push(cut);
        let mut version = good.clone();
        version.device[0] = 9;
        bad.push(version);
        let mut ids = good.clone();
        ids.device[1..9].copy_from_slice(&0u64.to_le_bytes()); // next id below a request's
        bad.push(ids);
        let mut extra = good.clone();
        extra.device.push(0);
        bad.push(extra);
        let mut count = good.clone();
        count.device[9..13].copy_from_slice(&u32::MAX.to_le_bytes());
        bad.push(count);
        let mut none = good.clone();
        none.device.clear(); // a disk's state cannot be empty
        bad.push(none);
        let Deferred { d: mut e, .. } = deferred();
        for b in &bad {
            let err = e.dev.restore(b).unwrap_err();
            assert!(matches!(err, VirtioError::BadState(_)), "{err}");
            assert_eq!(e.dev.in_flight(), 0);
        }
        e.dev.restore(&good).unwrap();
        assert_eq!(e.dev.in_flight(), 1);
    }

    #[test]
    fn a_reset_drops_what_is_in_flight() {
        let Deferred { mut d, forgets, .. } = deferred();
        request(&mut d, VIRTIO_BLK_T_IN, 6, HDR, (BUF, 512));
        let before = *forgets.lock().unwrap();
        d.set_reg(0x070, 0);
        assert_eq!(d.dev.in_flight(), 0);
        assert_eq!(*forgets.lock().unwrap(), before + 1);
    }
}
