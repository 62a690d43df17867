//! What a log holds: its header and its entries, as plain data. Every entry is one input event
//! (or a marker) taken at an exact machine-wide icount; `docs/log-format.md` gives the bytes.

/// The eight bytes every log starts with.
pub const MAGIC: [u8; 8] = *b"FTVMLOG\0";

/// The format version this build writes and reads. Bumped on any change to the bytes, including
/// those of the entries the recorder writes (version 2: the configuration entry carries the
/// disks, and disk reads are logged; version 3: it carries the network card too, and received
/// frames are logged; version 4: the disk-read digest entry, kind 12; version 5: the RAM part
/// of the recorder's state digests hashes page hashes, not RAM in one piece, so a version 4
/// log's digests would all differ; version 6: disk requests complete at logged points, the
/// request-done entry, kind 13; version 7: guest time's rate can change, the time-rate entry,
/// kind 14, and snapshots of version 4 in the prologue; version 8: the configuration entry
/// carries the network card's MTU, and the card offers checksum offload and mergeable receive
/// buffers, so a guest on a version 7 log negotiated other features).
pub const FORMAT_VERSION: u16 = 8;

/// Largest frame body (the batched entries between a frame's length and its checksum). A length
/// above it is rejected before anything is allocated, so a hostile length costs nothing.
pub const MAX_FRAME_LEN: usize = 16 << 20;

/// Longest [`LogHeader::creator`] in bytes (its length is one byte on the wire).
pub const MAX_CREATOR_LEN: usize = 255;

/// Length of one [`StateDigest`](Event::StateDigest) part's digest.
pub const DIGEST_LEN: usize = 16;

/// What the log was recorded for and by. Written once, at the start of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogHeader {
    /// Fingerprint of the machine configuration the log was recorded on (RAM size, harts,
    /// devices, images...). A replayer refuses a log whose fingerprint is not its own.
    pub config_fingerprint: u64,
    /// The icount the log starts from: 0 for a log from power-on, the clone point for a log that
    /// continues a snapshot. The first entry's icount is encoded relative to it.
    pub base_icount: u64,
    /// When the log was created, in milliseconds since the Unix epoch (informational only:
    /// nothing in replay depends on it).
    pub created_unix_ms: u64,
    /// Free text naming the recorder, e.g. `ftvm 0.1.0 on host-a` (at most 255 bytes of UTF-8).
    pub creator: String,
}

/// A digest part id: which piece of machine state a [`StateDigest`](Event::StateDigest) part
/// covers. An open list: these three are the ones the board defines today, and new ids need no
/// format change.
pub mod part {
    /// The harts' registers and CSRs.
    pub const CPU: u32 = 0;
    /// Guest RAM.
    pub const RAM: u32 = 1;
    /// The devices' saved states.
    pub const DEVICES: u32 = 2;
}

/// One part of a state digest: a part id (see [`part`]) and a 16-byte digest of that part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DigestPart {
    /// Which piece of state (see [`part`]).
    pub id: u32,
    /// Its digest; how it is computed is up to the digest's producer, which both sides share.
    pub digest: [u8; DIGEST_LEN],
}

/// One log entry: an event and the machine-wide icount at which it takes effect. Entries come in
/// non-decreasing icount order; an entry's index in the log is its *log position*.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Machine-wide retired-instruction count at which the event takes effect.
    pub icount: u64,
    /// What happens.
    pub event: Event,
}

/// The entry kinds. The numbers are the kind byte on the wire; 0 is never used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A device completed a request: its interrupt is raised and `data` lands in guest memory
    /// (disk read data, a received frame, console input bytes, entropy bytes). Kind 1.
    DeviceCompletion {
        /// The board's number for the device (slot); opaque to the log.
        device: u32,
        /// The device's id for the request (e.g. a descriptor head); opaque to the log.
        request: u64,
        /// The completed data.
        data: Vec<u8>,
    },
    /// Hart `hart` slept (WFI) from the entry's icount until icount `until` (a WFI skip: how
    /// long depends on the outside world). Kind 2.
    IdleSkip {
        /// The hart that slept.
        hart: u32,
        /// The icount the clock jumps to; never below the entry's icount.
        until: u64,
    },
    /// The offset added to guest time changes by `delta` timebase ticks, to keep guest time near
    /// wall-clock time. Kind 3.
    TimeSync {
        /// Change of the guest-time offset, in timebase ticks (10 MHz on `virt`).
        delta: i64,
    },
    /// From here on guest time passes at `rate` sixteenths of a step per timebase tick (the
    /// nominal rate is 160: 100 MIPS against the 10 MHz timebase), so that it keeps pace with
    /// wall-clock time at the interpreter's speed. Kind 14.
    TimeRate {
        /// Steps per tick, in sixteenths (16..=1600).
        rate: u32,
    },
    /// The operator paused the VM. Kind 4.
    Pause,
    /// The operator resumed the VM. Kind 5.
    Resume,
    /// The VM was powered off from outside. Kind 6.
    PowerOff,
    /// A configuration change, in a form the layers above define. Kind 7.
    ConfigChange(Vec<u8>),
    /// Digests of the machine state at the entry's icount, one per part, in strictly ascending
    /// part id order, so a replayer detects divergence where it happens. Kind 8.
    StateDigest(Vec<DigestPart>),
    /// The primary wrote `data` to its disk at `sector` (non-shared disk mode: the backup
    /// applies it to its own image). Kind 9.
    DiskWrite {
        /// The board's number for the disk device.
        device: u32,
        /// First 512-byte sector written.
        sector: u64,
        /// The bytes written.
        data: Vec<u8>,
    },
    /// The guest produced an output (console bytes, a transmitted frame, a shared-disk write)
    /// at this entry's log position; the output rule holds it until the backup has this entry.
    /// Kind 10.
    OutputMarker {
        /// The board's number for the device that produced it.
        device: u32,
        /// The device's sequence number for its outputs.
        seq: u64,
        /// How many bytes the output holds.
        len: u64,
    },
    /// The log ends here on purpose (the VM stopped, or the recorder closed the log). Nothing
    /// may follow it. Kind 11.
    EndOfLog,
    /// The guest read `len` bytes of a disk at byte `offset` and got bytes whose digest is
    /// `digest` (XXH3-64): the data itself is not in the log, the replayer reads the same disk
    /// itself (an FT backup on a shared disk with `--disk-reads own`) and checks the digest.
    /// Kind 12.
    DiskRead {
        /// The board's number for the disk device (its slot).
        device: u32,
        /// Byte offset of the read.
        offset: u64,
        /// Bytes read.
        len: u64,
        /// XXH3-64 of the bytes the guest got.
        digest: u64,
    },
    /// The device completed its in-flight request `request` here, between two run slices: its
    /// data moved (a disk read's bytes are in the device-completion or disk-read entries
    /// just before, at the same icount), its status was written and its interrupt raised.
    /// How long the host's I/O took decides where this lands. Kind 13.
    RequestDone {
        /// The board's number for the device (its slot).
        device: u32,
        /// The device's id for the request (a disk's count of requests submitted before it).
        request: u64,
    },
}

/// The kind bytes (see [`Event`]).
pub(crate) mod kind {
    pub const DEVICE_COMPLETION: u8 = 1;
    pub const IDLE_SKIP: u8 = 2;
    pub const TIME_SYNC: u8 = 3;
    pub const PAUSE: u8 = 4;
    pub const RESUME: u8 = 5;
    pub const POWER_OFF: u8 = 6;
    pub const CONFIG_CHANGE: u8 = 7;
    pub const STATE_DIGEST: u8 = 8;
    pub const DISK_WRITE: u8 = 9;
    pub const OUTPUT_MARKER: u8 = 10;
    pub const END_OF_LOG: u8 = 11;
    pub const DISK_READ: u8 = 12;
    pub const REQUEST_DONE: u8 = 13;
    pub const TIME_RATE: u8 = 14;
}

impl Event {
    /// The kind byte this event is written with.
    pub fn kind(&self) -> u8 {
        match self {
            Event::DeviceCompletion { .. } => kind::DEVICE_COMPLETION,
            Event::IdleSkip { .. } => kind::IDLE_SKIP,
            Event::TimeSync { .. } => kind::TIME_SYNC,
            Event::Pause => kind::PAUSE,
            Event::Resume => kind::RESUME,
            Event::PowerOff => kind::POWER_OFF,
            Event::ConfigChange(_) => kind::CONFIG_CHANGE,
            Event::StateDigest(_) => kind::STATE_DIGEST,
            Event::DiskWrite { .. } => kind::DISK_WRITE,
            Event::OutputMarker { .. } => kind::OUTPUT_MARKER,
            Event::EndOfLog => kind::END_OF_LOG,
            Event::DiskRead { .. } => kind::DISK_READ,
            Event::RequestDone { .. } => kind::REQUEST_DONE,
            Event::TimeRate { .. } => kind::TIME_RATE,
        }
    }

    /// A short name for messages and log dumps.
    pub fn name(&self) -> &'static str {
        kind_name(self.kind()).unwrap_or_default()
    }
}

/// The name of a known kind byte, `None` for kinds this build does not know.
pub(crate) fn kind_name(k: u8) -> Option<&'static str> {
    Some(match k {
        kind::DEVICE_COMPLETION => "device-completion",
        kind::IDLE_SKIP => "idle-skip",
        kind::TIME_SYNC => "time-sync",
        kind::PAUSE => "pause",
        kind::RESUME => "resume",
        kind::POWER_OFF => "power-off",
        kind::CONFIG_CHANGE => "config-change",
        kind::STATE_DIGEST => "state-digest",
        kind::DISK_WRITE => "disk-write",
        kind::OUTPUT_MARKER => "output-marker",
        kind::END_OF_LOG => "end-of-log",
        kind::DISK_READ => "disk-read",
        kind::REQUEST_DONE => "request-done",
        kind::TIME_RATE => "time-rate",
        _ => return None,
    })
}

/// Where a log stands: how many entries and how many bytes (header included) it holds, and
/// the icount of the last of those entries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogPosition {
    /// Number of entries: the log position of the next entry.
    pub entries: u64,
    /// Number of bytes from the start of the log.
    pub bytes: u64,
    /// The icount of the last entry before the position (the header's base icount if none):
    /// what the next entry's icount is encoded relative to, so a reader can start there
    /// ([`crate::LogReader::seek_to`]).
    pub icount: u64,
}
