//! The whole machine: RAM, harts and board, and the deterministic loop that runs them.
//!
//! Harts take turns on one host thread in a fixed order, in windows of [`QUANTUM`] steps
//! aligned to multiples of the machine-wide icount: a window belongs to one hart until it waits
//! in WFI, then to the next. The schedule is a function of the machine's state, not of where a
//! caller splits a busy run into [`Machine::run`] calls. One exception: finding every hart idle
//! (a [`Stop::Idle`]) touches hart state (reservations dropped on the switches, interrupt lines
//! refreshed), so a split that stops just short of an idle point differs in that state; the
//! replayer therefore repeats the recorder's call boundaries (`ftvm replay`). A slice also
//! ends exactly when the running hart's timer is due, so a timer interrupt is taken at the same
//! instruction on every run. The machine-wide
//! instruction count is the sum of the steps every hart has taken plus idle skips; it is the
//! clock (`mtime`, see [`crate::clock`], plus the time-sync offset that
//! [`Machine::adjust_time`] moves) and the position of every input event.
//!
//! The only ways in from the outside are [`Machine::console_input`] and [`Machine::skip_to`],
//! and the virtio backends; the only ways out are the backends. Deciding *when* to skip and
//! *when* input arrives is the caller's (host-side, non-deterministic) business.
//!
//! A network card (`MachineConfig::net`) is built with a [`NullNet`] backend; the caller puts
//! the real one in with [`Machine::replace_net`], so [`Backends`] stays as it was for machines
//! without one. Frames arrive on the host's time, so a caller whose guest idles must wake when
//! one arrives: it gives the machine a [`Waker`] ([`Machine::set_waker`]), which the machine
//! hands to its network and disk backends; they call it when a frame arrives or a disk's host
//! I/O finishes something. The caller then skips the clock as for console input and runs; the
//! device takes the frame at its next device pass.
//!
//! Disks in deferred mode ([`Machine::set_deferred_io`], what every run loop uses) complete
//! their requests only where the caller says, between two run calls: [`Machine::complete_io`]
//! completes what the host's disks have ready (a recorder logs each id at that icount),
//! [`Machine::complete_request`] a given one (the replayer, at the logged icount). A caller
//! whose guest idles while requests are in flight learns through its [`Waker`] when to look
//! again.

use crate::board::{Board, Slot, RAM_BASE, VIRTIO_SLOTS};
use crate::clock;
use crate::config::{ConfigError, Firmware, MachineConfig};
use crate::fdt::{self, FdtConfig, FdtError};
use crate::loader::{self, LoadError};
use crate::rom;
use crate::syscon::PowerEvent;
use crate::uart::{SerialBackend, Uart};
use crate::virtio::block::SECTOR_SIZE;
use crate::virtio::{
    BlockBackend, ConsoleBackend, EntropyBackend, NetBackend, NetStats, NullNet, VirtioError,
    VirtioMmio,
};
use crate::wake::Waker;
use rv64::Engine;
use rv64::{Exit, Hart, Ram};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Steps a hart runs before the next one gets its turn (with more than one hart).
pub const QUANTUM: u64 = 10_000;

/// Errors building a machine.
#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    /// {0}
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// {0}
    #[error(transparent)]
    Load(#[from] LoadError),
    /// {0}
    #[error(transparent)]
    Fdt(#[from] FdtError),
    /// {0}
    #[error(transparent)]
    Virtio(#[from] VirtioError),
    /// the host cannot provide {0} bytes of guest RAM: use a smaller --mem
    #[error("the host cannot provide {0} bytes of guest RAM: use a smaller --mem")]
    NoHostMemory(u64),
    /// {given} disk backends given for {drives} configured drives
    #[error("{given} disk backends given for {drives} configured drives")]
    DiskCount {
        /// Backends given.
        given: usize,
        /// Drives in the configuration.
        drives: usize,
    },
    /// disk {drive} has {have} sectors; the one offered in its place has {offered}
    #[error("disk {drive} has {have} sectors; the one offered in its place has {offered}")]
    DiskSize {
        /// Which drive.
        drive: usize,
        /// Sectors of the disk the guest sees.
        have: u64,
        /// Sectors of the replacement.
        offered: u64,
    },
    /// there is no disk {0}
    #[error("there is no disk {0}")]
    NoDisk(usize),
    /// time rate {0} is out of range
    #[error(
        "time rate {0} is out of range ({min}..={max} sixteenths of a step per tick)",
        min = clock::MIN_RATE,
        max = clock::MAX_RATE
    )]
    TimeRate(u32),
    /// virtio slot {slot} cannot complete request {id}: {source}
    #[error("virtio slot {slot} cannot complete request {id}: {source}")]
    Complete {
        /// The device's slot.
        slot: u32,
        /// The request.
        id: u64,
        /// Why.
        source: crate::virtio::CompleteError,
    },
    /// the machine has no network card (MachineConfig::net is None)
    #[error("the machine has no network card (MachineConfig::net is None)")]
    NoNet,
    /// the machine has no entropy device
    #[error("the machine has no entropy device")]
    NoEntropy,
}

/// The virtio slot of the `drive`-th disk (counting from 0, as `--drive` options are given):
/// drives fill the slots from the highest down, as QEMU assigns them, so the first is probed
/// first and becomes /dev/vda. `None` past the last slot.
pub fn disk_slot(drive: usize) -> Option<usize> {
    VIRTIO_SLOTS.checked_sub(drive + 1)
}

/// The virtio slot of the network card on a machine with `drives` disks: the next one below the
/// disks', the entropy device's and the console's.
pub fn net_slot(drives: usize) -> Option<usize> {
    VIRTIO_SLOTS.checked_sub(drives + 3)
}

/// The outside world's ends of the devices.
pub struct Backends {
    /// UART0's line.
    pub serial: Box<dyn SerialBackend>,
    /// The virtio console's.
    pub console: Box<dyn ConsoleBackend>,
    /// The virtio entropy device's.
    pub entropy: Box<dyn EntropyBackend>,
}

/// Why [`Machine::run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The machine-wide icount reached the limit.
    Limit,
    /// Every hart waits for an interrupt. `wake` is the machine-wide icount at which the
    /// earliest timer fires, if any is armed; only input or [`Machine::skip_to`] can move on.
    Idle {
        /// When the next timer interrupt is due.
        wake: Option<u64>,
    },
    /// The guest asked for power off, failure or reset (the machine must not be run further
    /// after a reset request; build a new one).
    Power(PowerEvent),
}

/// Where things were put at boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootInfo {
    /// The device tree's address.
    pub fdt_addr: u64,
    /// The first stage's entry (firmware, or kernel with `--bios none`).
    pub start: u64,
    /// The kernel's entry, or 0.
    pub kernel_entry: u64,
    /// The initrd, if any.
    pub initrd: Option<(u64, u64)>,
}

/// The engine new machines run their harts on (see [`set_default_engine`]): 0 not set, 1 interp,
/// 2 jit.
static DEFAULT_ENGINE: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Sets the engine every machine built from now on runs its harts on (the `ftvm` binary sets it
/// once from `--engine`/`FTVM_ENGINE`, so that every command that builds a machine — directly,
/// through the FT or replay crates — gets it without each passing it down). Returns the engine
/// that will actually be used: the translating engine falls back to the interpreter on hosts
/// without it.
pub fn set_default_engine(e: Engine) -> Engine {
    let e = if Engine::JIT_AVAILABLE {
        e
    } else {
        Engine::Interp
    };
    let v = match e {
        Engine::Interp => 1,
        Engine::Jit => 2,
    };
    DEFAULT_ENGINE.store(v, std::sync::atomic::Ordering::Relaxed);
    e
}

/// The engine set by [`set_default_engine`]; if none was set, the one named by the
/// `FTVM_ENGINE` environment variable (`jit` or `interp`; so that test programs and libraries
/// that build machines follow it too), else [`Engine::default`]: the translating engine on
/// x86-64 hosts, the interpreter elsewhere.
pub fn default_engine() -> Engine {
    match DEFAULT_ENGINE.load(std::sync::atomic::Ordering::Relaxed) {
        1 => Engine::Interp,
        2 => Engine::Jit,
        _ => std::env::var("FTVM_ENGINE")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_default(),
    }
}

/// A virt machine.
pub struct Machine {
    ram: Ram,
    harts: Vec<Hart>,
    board: Board,
    icount: u64,
    fdt: Vec<u8>,
    boot: BootInfo,
    /// The hart whose window it is (several harts).
    cur: usize,
    /// The end of the current window (several harts).
    window_end: u64,
    /// The hart that ran last, to drop reservations on a switch.
    last_ran: usize,
    /// Where the icount is published before each device pass (see [`Machine::set_clock_tap`]).
    clock_tap: Option<Arc<AtomicU64>>,
    /// The delta-snapshot chain this machine stands on: (base id, generation).
    chain: Option<(u64, u32)>,
    /// The live copy under way (the live clone): its id, the chain its closing delta starts.
    live_copy: Option<u64>,
    /// Written pages, one record per consumer (delta snapshots, the live copy).
    dirty: crate::dirty::DirtyPages,
    /// Page hashes kept between state digests (a cache: not part of the machine's state).
    ram_digest: crate::ramdigest::RamDigest,
    /// What the disks' and the network card's host ends call when their host I/O has
    /// something for the machine (the host loop's; see [`Machine::set_waker`]).
    waker: Waker,
}

impl std::fmt::Debug for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Machine")
            .field("icount", &self.icount)
            .field("harts", &self.harts)
            .field("boot", &self.boot)
            .finish_non_exhaustive()
    }
}

fn virtio_slots(
    cfg: &MachineConfig,
    backends: Backends,
    disks: Vec<Box<dyn BlockBackend>>,
) -> Result<(Vec<Slot>, Box<dyn SerialBackend>), MachineError> {
    if disks.len() != cfg.drives.len() {
        return Err(MachineError::DiskCount {
            given: disks.len(),
            drives: cfg.drives.len(),
        });
    }
    // Drives from the highest slot down (see `disk_slot`).
    let mut devices = Vec::new();
    for (d, backend) in cfg.drives.iter().zip(disks) {
        devices.push(VirtioMmio::block_with_backend(backend, d.readonly));
    }
    devices.push(VirtioMmio::rng(backends.entropy));
    devices.push(VirtioMmio::console(backends.console));
    if let Some(net) = &cfg.net {
        devices.push(VirtioMmio::net(Box::new(NullNet), net.mac, net.mtu));
    }
    let mut slots: Vec<Slot> = (0..VIRTIO_SLOTS).map(|_| Slot::Empty).collect();
    for (i, dev) in devices.into_iter().enumerate() {
        if let Some(s) = VIRTIO_SLOTS
            .checked_sub(i + 1)
            .and_then(|n| slots.get_mut(n))
        {
            *s = Slot::Device(Box::new(dev));
        }
    }
    Ok((slots, backends.serial))
}

impl Machine {
    /// Builds a machine without disks: checks the configuration, loads the images, writes the
    /// device tree and the boot ROM. Nothing has run yet. A configuration with drives needs
    /// their backends: [`Machine::with_disks`] (the host's image files and NBD exports are
    /// opened by the `hostblk` crate, whose `boot` does both).
    pub fn new(cfg: &MachineConfig, backends: Backends) -> Result<Machine, MachineError> {
        Machine::with_disks(cfg, backends, Vec::new())
    }

    /// Builds a machine as [`Machine::new`] does, on the given disk backends: one per drive of
    /// `cfg`, in order (the drives' paths are not used; their read-only flags are). The host's
    /// disks come from `hostblk`; a replayer builds its disks from the log.
    pub fn with_disks(
        cfg: &MachineConfig,
        backends: Backends,
        disks: Vec<Box<dyn BlockBackend>>,
    ) -> Result<Machine, MachineError> {
        cfg.validate()?;
        let bios = match &cfg.bios {
            Firmware::None => None,
            Firmware::File(p) => Some(loader::read_file("firmware", p, cfg.mem_size)?),
        };
        let kernel = cfg
            .kernel
            .as_deref()
            .map(|p| loader::read_file("kernel", p, cfg.mem_size))
            .transpose()?;
        let initrd = cfg
            .initrd
            .as_deref()
            .map(|p| loader::read_file("initrd", p, cfg.mem_size))
            .transpose()?;
        let initrd_len = initrd.as_ref().map(|d| d.len() as u64);

        // The device tree's size does not depend on where the initrd goes, only on whether
        // there is one: measure it first, then place everything around it.
        let mut fdt_cfg = FdtConfig {
            harts: cfg.harts,
            ram_base: RAM_BASE,
            ram_size: cfg.mem_size,
            bootargs: cfg.append.clone(),
            initrd: initrd_len.map(|l| (0, l)),
        };
        let size = fdt::build(&fdt_cfg)?.len() as u64;
        let fdt_addr = loader::fdt_addr(RAM_BASE, cfg.mem_size, size);
        let plan = loader::plan(
            RAM_BASE,
            cfg.mem_size,
            bios,
            kernel,
            initrd,
            (fdt_addr, fdt_addr + size),
        )?;
        fdt_cfg.initrd = plan.initrd;
        let fdt = fdt::build(&fdt_cfg)?;

        let (slots, serial) = virtio_slots(cfg, backends, disks)?;
        let mem =
            usize::try_from(cfg.mem_size).map_err(|_| ConfigError::MemTooLarge(cfg.mem_size))?;
        // Ram::new aborts the process if the host refuses the allocation: ask first.
        let mut probe: Vec<u8> = Vec::new();
        probe
            .try_reserve_exact(mem)
            .map_err(|_| MachineError::NoHostMemory(cfg.mem_size))?;
        drop(probe);
        let mut ram = Ram::new(RAM_BASE, mem);
        let dirty = crate::dirty::DirtyPages::new(ram.pages());
        for seg in plan.images.iter().flat_map(|i| &i.segments) {
            // `plan` checked that every segment lies inside RAM.
            let _ = ram.write(seg.addr, &seg.data);
        }
        let _ = ram.write(fdt_addr, &fdt);

        let rom = rom::build(plan.start, fdt_addr, plan.kernel_entry);
        let board = Board::new(cfg.harts, rom, Uart::new(serial), slots);
        let harts = (0..cfg.harts)
            .map(|h| {
                let mut hart = Hart::new(h);
                hart.set_engine(default_engine());
                hart.pc = rom::BASE;
                hart
            })
            .collect();
        let boot = BootInfo {
            fdt_addr,
            start: plan.start,
            kernel_entry: plan.kernel_entry,
            initrd: plan.initrd,
        };
        Ok(Machine {
            ram,
            harts,
            board,
            icount: 0,
            fdt,
            boot,
            cur: 0,
            window_end: QUANTUM,
            last_ran: 0,
            clock_tap: None,
            chain: None,
            live_copy: None,
            dirty,
            ram_digest: Default::default(),
            waker: Waker::default(),
        })
    }

    /// The device tree blob given to the guest.
    pub fn fdt(&self) -> &[u8] {
        &self.fdt
    }

    /// Where the images went.
    pub fn boot_info(&self) -> &BootInfo {
        &self.boot
    }

    /// The machine-wide instruction count: the clock.
    pub fn icount(&self) -> u64 {
        self.icount
    }

    /// The harts (for diagnostics).
    pub fn harts(&self) -> &[Hart] {
        &self.harts
    }

    /// The board's devices (for diagnostics and saving state).
    pub fn board(&self) -> &Board {
        &self.board
    }

    /// Guest RAM.
    pub fn ram(&self) -> &Ram {
        &self.ram
    }

    /// Bytes arrived on UART0's serial line. They enter the guest's receive FIFO as it makes
    /// room; [`Machine::console_backlog`] tells how many still wait.
    pub fn console_input(&mut self, bytes: &[u8]) {
        self.board.uart.push_input(bytes);
        self.board.update_plic();
    }

    /// Input bytes not yet taken by the guest's UART.
    pub fn console_backlog(&self) -> usize {
        self.board.uart.input_backlog()
    }

    /// Moves the clock forward to `icount` while every hart is idle (it never moves back).
    pub fn skip_to(&mut self, icount: u64) {
        self.icount = self.icount.max(icount);
    }

    /// Publishes the machine-wide icount to `tap` right before every device pass, so that a
    /// backend (e.g. an entropy recorder) knows at which icount its data is taken. Purely an
    /// observer: it changes nothing in the run.
    pub fn set_clock_tap(&mut self, tap: Arc<AtomicU64>) {
        tap.store(self.icount, Ordering::Relaxed);
        self.clock_tap = Some(tap);
    }

    /// Rebuilds the boot ROM for `boot` (as [`Machine::new`] built it for the images `boot`
    /// describes). The ROM is derived from the configuration, not saved in snapshots: a replayer
    /// that restores a snapshot without the original images uses this to get the same ROM.
    pub fn set_boot_info(&mut self, boot: &BootInfo) {
        self.board.rom = rom::build(boot.start, boot.fdt_addr, boot.kernel_entry);
        self.boot = boot.clone();
    }

    /// The backend of the `drive`-th disk, so that the record/replay layer can wrap it.
    pub fn disk_backend_mut(&mut self, drive: usize) -> Option<&mut Box<dyn BlockBackend>> {
        let slot = disk_slot(drive)?;
        match self.board.slots.get_mut(slot)? {
            Slot::Device(d) => d.block_backend_mut(),
            Slot::Empty => None,
        }
    }

    /// Puts `backend` in place of the `drive`-th disk's backend and returns the old one. The
    /// guest already knows the disk's size: the new backend must have as many sectors.
    pub fn replace_disk(
        &mut self,
        drive: usize,
        backend: Box<dyn BlockBackend>,
    ) -> Result<Box<dyn BlockBackend>, MachineError> {
        let old = self
            .disk_backend_mut(drive)
            .ok_or(MachineError::NoDisk(drive))?;
        let (have, offered) = (old.len() / SECTOR_SIZE, backend.len() / SECTOR_SIZE);
        if have != offered {
            return Err(MachineError::DiskSize {
                drive,
                have,
                offered,
            });
        }
        let mut backend = backend;
        backend.set_wake(&self.waker);
        let old = self
            .disk_backend_mut(drive)
            .ok_or(MachineError::NoDisk(drive))?;
        Ok(std::mem::replace(old, backend))
    }

    /// Puts `src` in place of the entropy device's source and returns the old one (a recorder
    /// started on a machine that has already run brings its own).
    pub fn replace_entropy(
        &mut self,
        src: Box<dyn EntropyBackend>,
    ) -> Result<Box<dyn EntropyBackend>, MachineError> {
        let slot = self
            .board
            .slots
            .iter_mut()
            .find_map(|s| match s {
                Slot::Device(d) => d.entropy_backend_mut(),
                Slot::Empty => None,
            })
            .ok_or(MachineError::NoEntropy)?;
        Ok(std::mem::replace(slot, src))
    }

    /// The network card's backend, so that the record/replay layer can wrap it.
    pub fn net_backend_mut(&mut self) -> Option<&mut Box<dyn NetBackend>> {
        match self.board.slots.iter_mut().find_map(|s| match s {
            Slot::Device(d) if d.device_id() == crate::virtio::VIRTIO_ID_NET => Some(d),
            _ => None,
        }) {
            Some(d) => d.net_backend_mut(),
            None => None,
        }
    }

    fn net_device(&self) -> Option<&VirtioMmio> {
        self.board.slots.iter().find_map(|s| match s {
            Slot::Device(d) if d.device_id() == crate::virtio::VIRTIO_ID_NET => Some(d.as_ref()),
            _ => None,
        })
    }

    /// Puts `backend` in place of the network card's backend and returns the old one.
    pub fn replace_net(
        &mut self,
        backend: Box<dyn NetBackend>,
    ) -> Result<Box<dyn NetBackend>, MachineError> {
        let waker = self.waker.clone();
        let old = self.net_backend_mut().ok_or(MachineError::NoNet)?;
        let mut backend = backend;
        backend.set_wake(&waker);
        Ok(std::mem::replace(old, backend))
    }

    /// Gives the machine the host loop's wake-up: every disk and network backend it has gets
    /// it now ([`BlockBackend::set_wake`], [`NetBackend::set_wake`]), and every one it gets
    /// later ([`Machine::replace_disk`], [`Machine::replace_net`]) too.
    pub fn set_waker(&mut self, waker: Waker) {
        self.waker = waker;
        let w = self.waker.clone();
        for s in &mut self.board.slots {
            if let Slot::Device(d) = s {
                if let Some(b) = d.block_backend_mut() {
                    b.set_wake(&w);
                }
                if let Some(n) = d.net_backend_mut() {
                    n.set_wake(&w);
                }
            }
        }
    }

    /// The wake-up the machine hands its backends ([`Machine::set_waker`]).
    pub fn waker(&self) -> &Waker {
        &self.waker
    }

    /// The network card's counters, if there is one.
    pub fn net_stats(&self) -> Option<NetStats> {
        self.net_device()?.net_stats()
    }

    /// Stores the icount into the clock tap, if any.
    fn tap(&self) {
        if let Some(t) = &self.clock_tap {
            t.store(self.icount, Ordering::Relaxed);
        }
    }

    /// The machine-wide icount at which the earliest armed timer fires, if later than now.
    fn next_timer(&self) -> Option<u64> {
        let c = self.board.clock;
        let raw = c.raw(self.icount);
        (0..self.harts.len())
            .filter_map(|h| self.board.clint.deadline(h, raw))
            .map(|due| c.icount_at(due))
            .filter(|&at| at != u64::MAX)
            .min()
    }

    /// The raw clock (`mtime` before any guest write to it; see [`crate::clock`]).
    pub fn raw_time(&self) -> u64 {
        self.board.clock.raw(self.icount)
    }

    /// Ticks added to guest time by [`Machine::adjust_time`] so far.
    pub fn time_offset(&self) -> u64 {
        self.board.clock.added
    }

    /// The machine's clock (rate and time-sync jumps included).
    pub fn clock(&self) -> clock::Clock {
        self.board.clock
    }

    /// Guest time that `steps` steps take at the clock's present rate.
    pub fn guest_duration(&self, steps: u64) -> Duration {
        self.board.clock.duration_of(steps)
    }

    /// Steps that `d` of guest time takes at the clock's present rate.
    pub fn steps_for(&self, d: Duration) -> u64 {
        self.board.clock.steps_for(d)
    }

    /// From the present icount on, guest time passes at `rate` (in 1/[`clock::RATE_UNIT`]
    /// steps per tick) without jumping. Deterministic like [`Machine::adjust_time`]: a recorder
    /// logs the change and a replayer makes it at the same icount. A rate outside
    /// [`clock::MIN_RATE`]..=[`clock::MAX_RATE`] is refused and changes nothing.
    pub fn set_time_rate(&mut self, rate: u32) -> Result<(), MachineError> {
        self.board
            .clock
            .set_rate(self.icount, rate)
            .ok_or(MachineError::TimeRate(rate))
    }

    /// Moves guest time forward by `ticks` timebase ticks without executing anything (a
    /// time-sync adjustment: the host found guest time behind wall-clock time). Time never
    /// goes back: the offset only grows (saturating). Timers whose deadline this passes fire
    /// at the next run; [`Stop::Idle`]'s `wake` and idle skips follow the new clock. Deterministic
    /// like every input: a recorder logs the adjustment and a replayer makes it at the same
    /// icount.
    pub fn adjust_time(&mut self, ticks: u64) {
        self.board.clock.jump(ticks);
    }

    fn devices_mut(&mut self) -> impl Iterator<Item = (u32, &mut VirtioMmio)> {
        self.board
            .slots
            .iter_mut()
            .enumerate()
            .filter_map(|(i, s)| match s {
                Slot::Device(d) => Some((i as u32, &mut **d)),
                Slot::Empty => None,
            })
    }

    /// Deferred disk I/O on or off (see [`crate::virtio::block`]). Off (the default), a disk
    /// request completes in the device pass that takes it; on, only at [`Machine::complete_io`]
    /// or [`Machine::complete_request`], between two run calls. Every run loop, recorder and
    /// replayer turns it on; a log is always recorded with it on.
    pub fn set_deferred_io(&mut self, on: bool) {
        self.devices_mut().for_each(|(_, d)| d.set_deferred(on));
    }

    /// Disk requests submitted and not completed, over every device.
    pub fn io_in_flight(&self) -> usize {
        self.board
            .slots
            .iter()
            .map(|s| match s {
                Slot::Device(d) => d.in_flight(),
                Slot::Empty => 0,
            })
            .sum()
    }

    /// A completion point (call it between two run calls): completes every in-flight disk
    /// request whose host I/O is ready, and returns (slot, request id) of each, in the order
    /// they completed. The icount does not move.
    pub fn complete_io(&mut self) -> Vec<(u32, u64)> {
        if self.io_in_flight() == 0 {
            return Vec::new();
        }
        self.tap();
        let mut done = Vec::new();
        let (ram, board) = (&mut self.ram, &mut self.board);
        for (i, s) in board.slots.iter_mut().enumerate() {
            if let Slot::Device(d) = s {
                let mut ids = Vec::new();
                d.complete_ready(ram, &mut ids);
                done.extend(ids.into_iter().map(|id| (i as u32, id)));
            }
        }
        board.update_plic();
        done
    }

    /// Completes in-flight request `id` of the device in virtio slot `slot` now, ready or not
    /// (the replayer, at the icount the log gives). An error says the machine cannot have done
    /// that here (no such request, or it waits for an earlier one): the log is not this run's.
    pub fn complete_request(&mut self, slot: u32, id: u64) -> Result<(), MachineError> {
        self.tap();
        let err = |source| MachineError::Complete { slot, id, source };
        let d = match self.board.slots.get_mut(slot as usize) {
            Some(Slot::Device(d)) => d,
            _ => return Err(err(crate::virtio::CompleteError::NotDeferred)),
        };
        d.complete(&mut self.ram, id).map_err(err)?;
        self.board.update_plic();
        Ok(())
    }

    /// Runs the harts until the machine-wide icount reaches `limit`, every hart is idle, or the
    /// guest asks for a power change.
    pub fn run(&mut self, limit: u64) -> Stop {
        let n = self.harts.len();
        // Harts found waiting in a row without progress; after a device pass, one more round.
        let mut idle_in_a_row = 0;
        let mut devices_checked = false;
        loop {
            if let Some(ev) = self.board.test.take_event() {
                return Stop::Power(ev);
            }
            if self.icount >= limit {
                return Stop::Limit;
            }
            if n > 1 && self.icount >= self.window_end {
                self.window_end = (self.icount / QUANTUM + 1).saturating_mul(QUANTUM);
                self.cur = (self.cur + 1) % n;
            }
            let h = self.cur;
            if h != self.last_ran {
                self.harts[h].clear_reservation();
                self.last_ran = h;
            }
            let turn_end = if n == 1 {
                limit
            } else {
                self.window_end.min(limit)
            };
            let start = self.icount;
            let mut waiting = false;
            while self.icount < turn_end {
                let c = self.board.clock;
                let raw = c.raw(self.icount);
                self.board.update_plic();
                let lines = self.board.irq_lines(h, raw);
                let mut budget = turn_end - self.icount;
                if let Some(due) = self.board.clint.deadline(h, raw) {
                    let at = c.icount_at(due);
                    budget = budget.min(at.saturating_sub(self.icount).max(1));
                }
                let hart = &mut self.harts[h];
                hart.set_irq_lines(lines);
                self.board.begin_slice(self.icount, hart.icount);
                let before = hart.icount;
                let exit = hart.run(&mut self.ram, &mut self.board, budget);
                let used = hart.icount.wrapping_sub(before);
                self.icount = self.icount.saturating_add(used);
                match exit {
                    Exit::Budget => {}
                    Exit::Io => {
                        self.tap();
                        self.board.process_devices(&mut self.ram);
                        if self.board.test.has_event() {
                            break;
                        }
                    }
                    Exit::Wfi => {
                        waiting = true;
                        break;
                    }
                }
            }
            if self.board.test.has_event() {
                continue;
            }
            if !waiting {
                // The window or the call ended: a deterministic point for device work.
                self.tap();
                self.board.process_devices(&mut self.ram);
                idle_in_a_row = 0;
                devices_checked = false;
                continue;
            }
            // Hart h waits: the rest of the window goes to the next hart.
            self.cur = (h + 1) % n;
            idle_in_a_row = if self.icount > start {
                1
            } else {
                idle_in_a_row + 1
            };
            if idle_in_a_row >= n {
                if devices_checked {
                    return Stop::Idle {
                        wake: self.next_timer(),
                    };
                }
                // Device work may raise an interrupt that wakes someone: one more round.
                self.tap();
                self.board.process_devices(&mut self.ram);
                devices_checked = true;
                idle_in_a_row = 0;
            }
        }
    }
}

/// Access to the parts for [`crate::snapshot`] (snapshots, restore, digests), and dirty-page
/// tracking for incremental snapshots.
impl Machine {
    /// The page hashes kept for [`Machine::digest`].
    pub(crate) fn ram_digest(&self) -> &crate::ramdigest::RamDigest {
        &self.ram_digest
    }

    /// RAM, harts, board and the machine-wide icount, for saving.
    pub(crate) fn parts(&self) -> (&Ram, &[Hart], &Board, u64) {
        (&self.ram, &self.harts, &self.board, self.icount)
    }

    /// Chooses the engine of every hart (see [`rv64::Engine`]); allowed between any two runs.
    /// Returns the engine in use (the interpreter if this host has no translating engine).
    pub fn set_engine(&mut self, e: Engine) -> Engine {
        let mut used = e;
        for h in &mut self.harts {
            used = h.set_engine(e);
        }
        used
    }

    /// The engine the harts run on.
    pub fn engine(&self) -> Engine {
        self.harts.first().map_or(Engine::Interp, |h| h.engine())
    }

    /// Translation statistics summed over the harts (`None` on the interpreter).
    pub fn jit_stats(&self) -> Option<rv64::JitStats> {
        let mut total: Option<rv64::JitStats> = None;
        for s in self.harts.iter().filter_map(|h| h.jit_stats()) {
            let t = total.get_or_insert_with(Default::default);
            t.blocks += s.blocks;
            t.insns += s.insns;
            t.code_bytes += s.code_bytes;
            t.translate_ns += s.translate_ns;
            t.flushes += s.flushes;
            t.runs += s.runs;
            t.chains += s.chains;
            t.inline_entries += s.inline_entries;
        }
        total
    }

    /// RAM, harts, board and the machine-wide icount, for restoring.
    pub(crate) fn parts_mut(&mut self) -> (&mut Ram, &mut Vec<Hart>, &mut Board, &mut u64) {
        (
            &mut self.ram,
            &mut self.harts,
            &mut self.board,
            &mut self.icount,
        )
    }

    /// The multi-hart schedule's position: (hart whose window it is, the window's end, the
    /// hart that ran last). Part of the machine's state: a snapshot must carry it.
    pub(crate) fn schedule(&self) -> (usize, u64, usize) {
        (self.cur, self.window_end, self.last_ran)
    }

    /// Sets the schedule's position (see [`Machine::schedule`]); the caller checked the harts.
    pub(crate) fn set_schedule(&mut self, cur: usize, window_end: u64, last_ran: usize) {
        self.cur = cur;
        self.window_end = window_end;
        self.last_ran = last_ran;
    }

    /// The delta-snapshot chain position (see `snapshot::delta`).
    pub(crate) fn chain(&self) -> Option<(u64, u32)> {
        self.chain
    }

    /// Sets the delta-snapshot chain position.
    pub(crate) fn set_chain(&mut self, chain: Option<(u64, u32)>) {
        self.chain = chain;
    }

    /// The live copy under way: its chain id (see `snapshot::delta`).
    pub(crate) fn live_copy(&self) -> Option<u64> {
        self.live_copy
    }

    /// Sets the live copy under way.
    pub(crate) fn set_live_copy(&mut self, id: Option<u64>) {
        self.live_copy = id;
    }

    /// RAM and the consumers' records of written pages (see `dirty`).
    pub(crate) fn ram_and_dirty(&mut self) -> (&mut Ram, &mut crate::dirty::DirtyPages) {
        (&mut self.ram, &mut self.dirty)
    }

    /// The consumers' records of written pages.
    pub(crate) fn dirty_pages(&self) -> &crate::dirty::DirtyPages {
        &self.dirty
    }
}

/// Written pages, per consumer (the records live in `dirty.rs`).
impl Machine {
    /// The RAM pages (index from the start of RAM) written since consumer `c` last took them —
    /// every page the first time — and starts `c`'s record afresh. Each consumer has its own
    /// record: taking pages for one never hides them from another.
    pub fn take_dirty_pages(&mut self, c: crate::dirty::DirtyConsumer) -> Vec<usize> {
        let (ram, dirty) = self.ram_and_dirty();
        dirty.take(ram, c)
    }

    /// How many pages [`Machine::take_dirty_pages`] would return for `c` now: what the next
    /// round of a live copy, or the next delta, would carry.
    pub fn dirty_page_count(&self, c: crate::dirty::DirtyConsumer) -> usize {
        self.dirty_pages().count(self.ram(), c)
    }

    /// Every consumer's record starts afresh (the state was replaced: restored, or a copy
    /// adopted).
    pub(crate) fn clear_dirty_pages(&mut self) {
        let (ram, dirty) = self.ram_and_dirty();
        dirty.clear(ram);
    }
}
