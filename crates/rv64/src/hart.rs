//! One hart: architectural state, the interpreter loop, memory access paths and trap entry.
//!
//! Fast paths (`fetch`, `load`, `store`) are small and inlined: a TLB hit is one compare and one
//! host memory access. Everything else — page walks, MMIO, decoding, page-crossing accesses —
//! lives in `#[cold]` functions.

use crate::bus::Bus;
use crate::csr::{mstatus, Csrs};
use crate::decode::{decode, Insn, FLOW_JUMP, FLOW_NEXT, FLOW_STOP};
use crate::mmu::{Access, CodeEntry, DataEntry, Tlb};
use crate::ram::Ram;
use crate::trap::{irq, Trap};

/// Privilege level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Priv {
    /// User.
    U = 0,
    /// Supervisor.
    S = 1,
    /// Machine.
    M = 3,
}

impl Priv {
    /// From the 2-bit encoding used in `mstatus.MPP` (the reserved value 2 reads as U).
    pub fn from_bits(b: u64) -> Priv {
        match b & 3 {
            3 => Priv::M,
            1 => Priv::S,
            _ => Priv::U,
        }
    }
}

/// Why [`Hart::run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The step budget is used up.
    Budget,
    /// The hart executed WFI (or was already waiting) and no enabled interrupt is pending.
    Wfi,
    /// An MMIO write happened; device state and interrupt lines may have changed.
    Io,
}

/// Something that runs translated code inside [`Hart::run_loop`].
pub(crate) trait BlockRunner {
    /// Whether this runner ever runs anything ([`NoBlocks`] does not).
    const ACTIVE: bool;
    /// Runs translated blocks until the slice ends at `stop_at`, the hart needs the run loop's
    /// attention, or the code at the pc cannot run translated. Returns how many steps the
    /// interpreter should take next (0: none, go back to the top of the loop).
    fn run_blocks<B: Bus>(
        &mut self,
        hart: &mut Hart,
        ram: &mut Ram,
        bus: &mut B,
        stop_at: u64,
    ) -> u64;
}

/// The interpreter alone.
pub(crate) struct NoBlocks;

impl BlockRunner for NoBlocks {
    const ACTIVE: bool = false;
    fn run_blocks<B: Bus>(&mut self, _: &mut Hart, _: &mut Ram, _: &mut B, _: u64) -> u64 {
        0
    }
}

/// The state of one RISC-V hart.
pub struct Hart {
    /// Integer registers x0..x31 (x0 is always zero). Slots 32.. are not architectural: results
    /// destined for x0 land in slot 32, so the interpreter never tests for x0.
    pub x: [u64; 64],
    /// Floating-point registers (raw bits, singles NaN-boxed).
    pub f: [u64; 32],
    /// Program counter.
    pub pc: u64,
    /// Current privilege level.
    pub prv: Priv,
    /// Control and status registers.
    pub csr: Csrs,
    /// Accrued floating-point exception flags (`fflags`).
    pub fflags: u8,
    /// Dynamic rounding mode (`frm`).
    pub frm: u8,
    /// Steps taken since reset: retired instructions plus trap entries (so that a guest stuck in
    /// a trap loop still advances the clock). The clock of the log.
    pub icount: u64,
    /// `mhartid`.
    pub hartid: usize,
    /// Waiting for an interrupt (after WFI).
    pub wfi: bool,
    /// LR reservation (virtual address).
    pub(crate) reservation: Option<u64>,
    /// Device-driven `mip` bits (MSIP, MTIP, SEIP, MEIP).
    pub(crate) irq_lines: u64,
    /// Pending interrupts may have changed: check before the next instruction.
    irq_check: bool,
    /// Leave the interpreter loop after this instruction.
    stop_loop: bool,
    /// The icount at which straight-line execution must stop: the slice's end, or 0 as soon
    /// as `irq_check` or `stop_loop` needs looking at (so the inner loop tests one thing).
    limit: u64,
    pub(crate) tlb: Tlb,
    /// Holds an instruction decoded outside the cache (boot ROM, page-crossing instructions).
    scratch: Insn,
    /// `Ram::write_epoch` when the store TLB was last known valid.
    pub(crate) seen_write_epoch: u64,
    /// Translation context the TLBs were filled under.
    tlb_context: (Priv, Priv, u64, u64),
    /// The translating engine's state (its cache), when this hart runs on it: owned here,
    /// known only to [`crate::engine`] (which picks the loop [`Hart::run`] runs).
    pub(crate) translator: Option<Box<dyn std::any::Any>>,
}

impl std::fmt::Debug for Hart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hart")
            .field("hartid", &self.hartid)
            .field("pc", &format_args!("{:#x}", self.pc))
            .field("prv", &self.prv)
            .field("icount", &self.icount)
            .finish_non_exhaustive()
    }
}

const IRQ_LINES: u64 = (1 << irq::MSI) | (1 << irq::MTI) | (1 << irq::SEI) | (1 << irq::MEI);

impl Hart {
    /// A hart in its reset state: M-mode, pc 0, everything zero.
    pub fn new(hartid: usize) -> Hart {
        Hart {
            x: [0; 64],
            f: [0; 32],
            pc: 0,
            prv: Priv::M,
            csr: Csrs::default(),
            fflags: 0,
            frm: 0,
            icount: 0,
            hartid,
            wfi: false,
            reservation: None,
            irq_lines: 0,
            irq_check: true,
            stop_loop: false,
            limit: 0,
            tlb: Tlb::new(),
            scratch: Insn::UNDECODED,
            seen_write_epoch: u64::MAX,
            tlb_context: (Priv::M, Priv::M, 0, 0),
            translator: None,
        }
    }

    /// Whether the run loop must look at interrupts or stop before the next instruction.
    #[inline(always)]
    pub(crate) fn needs_attention(&self) -> bool {
        self.limit == 0
    }

    /// Drops cached store permissions if RAM's write epoch moved (as the fetch slow path does).
    pub(crate) fn sync_write_epoch(&mut self, ram: &Ram) {
        if ram.write_epoch() != self.seen_write_epoch {
            self.tlb.flush_writes();
            self.seen_write_epoch = ram.write_epoch();
        }
    }

    /// Sets the device-driven interrupt lines: the MSIP, MTIP, SEIP and MEIP bits of `bits`.
    pub fn set_irq_lines(&mut self, bits: u64) {
        let bits = bits & IRQ_LINES;
        if bits != self.irq_lines {
            self.irq_lines = bits;
            self.request_irq_check();
        }
    }

    /// Drops the LR reservation. The board calls this when the hart gets its turn after another
    /// hart ran: stores of other harts are not tracked, so a reservation never survives one (an
    /// LR/SC loop cut by a hart switch fails once and retries: deterministic, and atomic).
    pub fn clear_reservation(&mut self) {
        self.reservation = None;
    }

    /// Sets integer register `rd` (writes to x0 are dropped).
    #[inline(always)]
    pub fn set_x(&mut self, rd: usize, v: u64) {
        if rd & 31 != 0 {
            self.x[rd & 31] = v;
        }
    }

    /// Re-evaluate pending interrupts before the next instruction.
    #[inline(always)]
    pub(crate) fn request_irq_check(&mut self) {
        self.irq_check = true;
        self.limit = 0;
    }

    /// Leave [`Hart::run`] after the current instruction.
    #[inline(always)]
    pub(crate) fn request_stop(&mut self) {
        self.stop_loop = true;
        self.limit = 0;
    }

    /// Whether the FPU is on (`mstatus.FS` != Off).
    #[inline(always)]
    pub fn fp_enabled(&self) -> bool {
        self.csr.mstatus & mstatus::FS != 0
    }

    /// Marks the FP state dirty (`mstatus.FS` = Dirty).
    #[inline(always)]
    pub fn set_fs_dirty(&mut self) {
        self.csr.mstatus |= mstatus::FS;
    }

    /// Drops all cached translations (for SFENCE.VMA, snapshot restore, and the like).
    pub fn flush_tlb(&mut self) {
        self.tlb.flush();
    }

    /// Flushes the TLBs if the translation context changed.
    pub(crate) fn mmu_context_changed(&mut self) {
        let ms = self.csr.mstatus;
        let ctx = (
            self.prv,
            self.data_priv(),
            self.csr.satp,
            ms & (mstatus::SUM | mstatus::MXR),
        );
        if ctx != self.tlb_context {
            self.tlb_context = ctx;
            self.tlb.flush();
        }
    }

    /// The run loop behind [`Hart::run`]: executes at most `max` steps (instructions or trap
    /// entries) and returns why it stopped. `R` runs translated blocks where it can; with
    /// [`NoBlocks`] this is the interpreter alone.
    #[inline(always)]
    pub(crate) fn run_loop<B: Bus, R: BlockRunner>(
        &mut self,
        ram: &mut Ram,
        bus: &mut B,
        max: u64,
        blocks: &mut R,
    ) -> Exit {
        if ram.write_epoch() != self.seen_write_epoch {
            self.tlb.flush_writes();
            self.seen_write_epoch = ram.write_epoch();
        }
        self.mmu_context_changed();
        self.request_irq_check();
        if self.wfi {
            if self.mip() & self.csr.mie == 0 {
                return Exit::Wfi;
            }
            self.wfi = false;
        }
        let stop_at = self.icount.saturating_add(max);
        while self.icount < stop_at {
            if self.limit == 0 {
                self.limit = stop_at;
                if self.stop_loop {
                    break;
                }
                if self.irq_check {
                    self.irq_check = false;
                    if let Some(cause) = self.pending_interrupt() {
                        self.take_trap(cause, 0, true);
                        self.icount += 1;
                        continue;
                    }
                }
            }
            if R::ACTIVE {
                let steps = blocks.run_blocks(self, ram, bus, stop_at);
                if steps == 0 {
                    continue;
                }
                // Interpret exactly `steps` more (fewer if the straight-line run ends first).
                self.limit = self.icount + steps;
            }
            let mut p = match self.fetch(ram, bus) {
                Ok(p) => p,
                Err(t) => {
                    self.icount += 1;
                    self.take_trap(t.cause(), t.tval(), false);
                    continue;
                }
            };
            // Code runs from the decoded page without another fetch lookup — straight on, and
            // through jumps that stay in the page — until a `FLOW_STOP` instruction, a trap, the
            // budget, or anything needing attention.
            loop {
                // `p` points to the slot for `self.pc` in a live decoded page (see `fetch`), or
                // to `self.scratch` (always `FLOW_STOP`).
                let opc = self.pc;
                let r = self.execute(p, ram, bus);
                self.icount += 1;
                if let Err(t) = r {
                    self.take_trap(t.cause(), t.tval(), false);
                    break;
                }
                // Read after execution: a slot the instruction cleared (a store to its own
                // page) reads as `FLOW_STOP`.
                // SAFETY: `p` is valid as described above; only plain fields are read.
                let (flow, len) = unsafe { ((*p).flow, (*p).len) };
                if self.icount >= self.limit {
                    break;
                }
                if flow == FLOW_NEXT {
                    // SAFETY: a `FLOW_NEXT` instruction is not the last of its page, so the next
                    // slot is inside the same array, and it is the slot for the new `self.pc`.
                    p = unsafe { p.add((len >> 1) as usize) };
                } else {
                    let npc = self.pc;
                    if flow != FLOW_JUMP || (npc ^ opc) >> 12 != 0 {
                        break;
                    }
                    let delta = ((npc & 0xfff) as isize - (opc & 0xfff) as isize) >> 1;
                    // SAFETY: `npc` is in the same virtual page as `opc`, hence in the same
                    // decoded page; the slot index stays within 0..2048.
                    p = unsafe { p.offset(delta) };
                }
            }
        }
        if self.stop_loop {
            self.stop_loop = false;
            return if self.wfi { Exit::Wfi } else { Exit::Io };
        }
        Exit::Budget
    }

    /// The highest-priority interrupt that is pending and enabled, if any.
    pub fn pending_interrupt(&self) -> Option<u64> {
        let pending = self.mip() & self.csr.mie;
        if pending == 0 {
            return None;
        }
        let ms = self.csr.mstatus;
        let m_enabled = self.prv != Priv::M || ms & mstatus::MIE != 0;
        let s_enabled = self.prv == Priv::U || (self.prv == Priv::S && ms & mstatus::SIE != 0);
        let mut enabled = 0;
        if m_enabled {
            enabled |= pending & !self.csr.mideleg;
        }
        if s_enabled {
            enabled |= pending & self.csr.mideleg;
        }
        [irq::MEI, irq::MSI, irq::MTI, irq::SEI, irq::SSI, irq::STI]
            .into_iter()
            .find(|&c| enabled >> c & 1 == 1)
    }

    /// Enters the trap handler for `cause` (an exception code, or an interrupt number).
    pub(crate) fn take_trap(&mut self, cause: u64, tval: u64, interrupt: bool) {
        let deleg = if interrupt {
            self.csr.mideleg
        } else {
            self.csr.medeleg
        };
        let to_s = self.prv != Priv::M && deleg >> cause & 1 == 1;
        let xcause = cause | (interrupt as u64) << 63;
        let ms = self.csr.mstatus;
        if to_s {
            self.csr.scause = xcause;
            self.csr.sepc = self.pc;
            self.csr.stval = tval;
            let spie = if ms & mstatus::SIE != 0 {
                mstatus::SPIE
            } else {
                0
            };
            let spp = if self.prv == Priv::S { mstatus::SPP } else { 0 };
            self.csr.mstatus = (ms & !(mstatus::SIE | mstatus::SPIE | mstatus::SPP)) | spie | spp;
            self.prv = Priv::S;
            self.pc = vector(self.csr.stvec, cause, interrupt);
        } else {
            self.csr.mcause = xcause;
            self.csr.mepc = self.pc;
            self.csr.mtval = tval;
            let mpie = if ms & mstatus::MIE != 0 {
                mstatus::MPIE
            } else {
                0
            };
            let mpp = (self.prv as u64) << mstatus::MPP_SHIFT;
            self.csr.mstatus = (ms & !(mstatus::MIE | mstatus::MPIE | mstatus::MPP)) | mpie | mpp;
            self.prv = Priv::M;
            self.pc = vector(self.csr.mtvec, cause, interrupt);
        }
        self.reservation = None;
        self.request_irq_check();
        self.mmu_context_changed();
    }

    /// MRET.
    pub(crate) fn mret(&mut self) {
        let ms = self.csr.mstatus;
        let mpp = Priv::from_bits(ms >> mstatus::MPP_SHIFT);
        let mie = if ms & mstatus::MPIE != 0 {
            mstatus::MIE
        } else {
            0
        };
        let mut ms = (ms & !(mstatus::MIE | mstatus::MPP)) | mie | mstatus::MPIE;
        if mpp != Priv::M {
            ms &= !mstatus::MPRV;
        }
        self.csr.mstatus = ms;
        self.prv = mpp;
        self.pc = self.csr.mepc;
        self.reservation = None;
        self.request_irq_check();
        self.mmu_context_changed();
    }

    /// SRET.
    pub(crate) fn sret(&mut self) {
        let ms = self.csr.mstatus;
        let spp = if ms & mstatus::SPP != 0 {
            Priv::S
        } else {
            Priv::U
        };
        let sie = if ms & mstatus::SPIE != 0 {
            mstatus::SIE
        } else {
            0
        };
        self.csr.mstatus =
            (ms & !(mstatus::SIE | mstatus::SPP | mstatus::MPRV)) | sie | mstatus::SPIE;
        self.prv = spp;
        self.pc = self.csr.sepc;
        self.reservation = None;
        self.request_irq_check();
        self.mmu_context_changed();
    }

    // ---- instruction fetch ----

    #[inline(always)]
    fn fetch<B: Bus>(&mut self, ram: &mut Ram, bus: &mut B) -> Result<*const Insn, Trap> {
        let pc = self.pc;
        let vpn = pc >> 12;
        let e = self.tlb.x[Tlb::slot(vpn)];
        if e.vpn == self.tlb.tag(vpn) {
            // SAFETY: `e.page` was installed from `Ram::decoded_page`, whose boxes live as long
            // as the `Ram` and are never freed or moved; this hart only runs with that `Ram`
            // (`run` flushes the TLB when the context changes, and a new `Ram` means a new run
            // context set up through `flush_tlb`).
            // An empty slot (`Op::Undecoded`) is filled by `execute`.
            return Ok(unsafe { &(*e.page).insns[((pc & 0xfff) >> 1) as usize] as *const Insn });
        }
        self.fetch_slow(ram, bus)
    }

    #[cold]
    #[inline(never)]
    pub(crate) fn fetch_slow<B: Bus>(
        &mut self,
        ram: &mut Ram,
        bus: &mut B,
    ) -> Result<*const Insn, Trap> {
        let pc = self.pc;
        let paddr = self.translate(ram, pc, Access::Execute)?;
        let Some(off) = ram.offset(paddr, 2) else {
            // Outside RAM (the boot ROM): decode every time, cache nothing.
            let lo = self.fetch_parcel_io(bus, pc, paddr)?;
            let raw = if lo & 3 == 3 {
                let p2 = self.translate(ram, pc + 2, Access::Execute)?;
                lo | self.fetch_parcel(ram, bus, pc + 2, p2)? << 16
            } else {
                lo
            };
            self.scratch = decode(raw);
            self.scratch.flow = FLOW_STOP;
            return Ok(&self.scratch);
        };
        let page = off >> 12;
        let dp = ram.decoded_page(page);
        if ram.write_epoch() != self.seen_write_epoch {
            self.tlb.flush_writes();
            self.seen_write_epoch = ram.write_epoch();
        }
        let vpn = pc >> 12;
        self.tlb.x[Tlb::slot(vpn)] = CodeEntry {
            vpn: self.tlb.tag(vpn),
            page: dp,
        };
        let mem = ram.as_slice();
        let lo = u16::from_le_bytes([mem[off], mem[off + 1]]) as u32;
        let raw = if lo & 3 != 3 {
            lo
        } else if pc & 0xfff == 0xffe {
            // A 32-bit instruction across a page boundary: never cached.
            let p2 = self.translate(ram, pc + 2, Access::Execute)?;
            self.scratch = decode(lo | self.fetch_parcel(ram, bus, pc + 2, p2)? << 16);
            self.scratch.flow = FLOW_STOP;
            return Ok(&self.scratch);
        } else {
            u32::from_le_bytes([mem[off], mem[off + 1], mem[off + 2], mem[off + 3]])
        };
        let mut insn = decode(raw);
        if (pc & 0xfff) + insn.len as u64 >= 4096 && insn.flow == FLOW_NEXT {
            insn.flow = FLOW_STOP;
        }
        // SAFETY: `dp` points into a box owned by `ram` (see `fetch`); `pc & 0xfff >> 1 < 2048`.
        let slot = unsafe { &mut (*dp).insns[((pc & 0xfff) >> 1) as usize] };
        *slot = insn;
        Ok(slot)
    }

    fn fetch_parcel<B: Bus>(
        &mut self,
        ram: &Ram,
        bus: &mut B,
        vaddr: u64,
        paddr: u64,
    ) -> Result<u32, Trap> {
        match ram.offset(paddr, 2) {
            Some(off) => {
                Ok(u16::from_le_bytes([ram.as_slice()[off], ram.as_slice()[off + 1]]) as u32)
            }
            None => self.fetch_parcel_io(bus, vaddr, paddr),
        }
    }

    fn fetch_parcel_io<B: Bus>(
        &mut self,
        bus: &mut B,
        vaddr: u64,
        paddr: u64,
    ) -> Result<u32, Trap> {
        bus.read(self.hartid, self.icount, paddr, 2)
            .map(|v| v as u32 & 0xffff)
            .ok_or(Trap::InstructionAccessFault(vaddr))
    }

    // ---- loads and stores ----

    /// Loads `N` (1, 2, 4 or 8) bytes at virtual address `vaddr`, zero-extended.
    #[inline(always)]
    pub fn load<B: Bus, const N: usize>(
        &mut self,
        ram: &mut Ram,
        bus: &mut B,
        vaddr: u64,
    ) -> Result<u64, Trap> {
        let vpn = vaddr >> 12;
        let e = self.tlb.r[Tlb::slot(vpn)];
        if e.vpn == self.tlb.tag(vpn) && (vaddr & 0xfff) as usize <= 4096 - N {
            let p = e.addend.wrapping_add(vaddr as usize) as *const u8;
            // SAFETY: a hit means `p` is inside the RAM page this entry was installed for, and
            // the access does not cross the page end (checked above).
            return Ok(unsafe { read_le::<N>(p) });
        }
        self.load_slow(ram, bus, vaddr, N)
    }

    #[cold]
    #[inline(never)]
    fn load_slow<B: Bus>(
        &mut self,
        ram: &mut Ram,
        bus: &mut B,
        vaddr: u64,
        n: usize,
    ) -> Result<u64, Trap> {
        if (vaddr & 0xfff) as usize + n > 4096 {
            let mut v = 0;
            for i in 0..n as u64 {
                v |= self.load_slow(ram, bus, vaddr.wrapping_add(i), 1)? << (8 * i);
            }
            return Ok(v);
        }
        let paddr = self.translate(ram, vaddr, Access::Read)?;
        if let Some(off) = ram.offset(paddr, n as u64) {
            let page_host = ram.host_ptr(off & !0xfff) as usize;
            let vpn = vaddr >> 12;
            self.tlb.r[Tlb::slot(vpn)] = DataEntry {
                vpn: self.tlb.tag(vpn),
                addend: page_host.wrapping_sub((vaddr & !0xfff) as usize),
            };
            let p = ram.host_ptr(off);
            // SAFETY: `off..off + n` is inside RAM (checked by `offset`).
            return Ok(unsafe {
                match n {
                    1 => read_le::<1>(p),
                    2 => read_le::<2>(p),
                    4 => read_le::<4>(p),
                    _ => read_le::<8>(p),
                }
            });
        }
        if paddr % n as u64 != 0 {
            return Err(Trap::LoadAccessFault(vaddr));
        }
        bus.read(self.hartid, self.icount, paddr, n as u8)
            .ok_or(Trap::LoadAccessFault(vaddr))
    }

    /// Stores the low `N` (1, 2, 4 or 8) bytes of `val` at virtual address `vaddr`.
    #[inline(always)]
    pub fn store<B: Bus, const N: usize>(
        &mut self,
        ram: &mut Ram,
        bus: &mut B,
        vaddr: u64,
        val: u64,
    ) -> Result<(), Trap> {
        let vpn = vaddr >> 12;
        let e = self.tlb.w[Tlb::slot(vpn)];
        if e.vpn == self.tlb.wtag(vpn) && (vaddr & 0xfff) as usize <= 4096 - N {
            let p = e.addend.wrapping_add(vaddr as usize) as *mut u8;
            // SAFETY: as in `load`; store entries exist only for dirty, non-code RAM pages.
            unsafe { write_le::<N>(p, val) };
            return Ok(());
        }
        self.store_slow(ram, bus, vaddr, N, val)
    }

    #[cold]
    #[inline(never)]
    fn store_slow<B: Bus>(
        &mut self,
        ram: &mut Ram,
        bus: &mut B,
        vaddr: u64,
        n: usize,
        val: u64,
    ) -> Result<(), Trap> {
        if (vaddr & 0xfff) as usize + n > 4096 {
            // Check both pages before writing a byte, so a fault leaves memory untouched.
            self.translate(ram, vaddr, Access::Write)?;
            self.translate(ram, vaddr.wrapping_add(n as u64 - 1), Access::Write)?;
            for i in 0..n as u64 {
                self.store_slow(ram, bus, vaddr.wrapping_add(i), 1, val >> (8 * i))?;
            }
            return Ok(());
        }
        let paddr = self.translate(ram, vaddr, Access::Write)?;
        if let Some(off) = ram.offset(paddr, n as u64) {
            ram.note_write(off >> 12);
            let host = ram.host_ptr(off);
            // SAFETY: `off..off + n` is inside RAM (checked by `offset`).
            unsafe {
                match n {
                    1 => write_le::<1>(host, val),
                    2 => write_le::<2>(host, val),
                    4 => write_le::<4>(host, val),
                    _ => write_le::<8>(host, val),
                }
            }
            let page_host = ram.host_ptr(off & !0xfff) as usize;
            let vpn = vaddr >> 12;
            self.tlb.w[Tlb::slot(vpn)] = DataEntry {
                vpn: self.tlb.wtag(vpn),
                addend: page_host.wrapping_sub((vaddr & !0xfff) as usize),
            };
            return Ok(());
        }
        if paddr % n as u64 != 0 || !bus.write(self.hartid, self.icount, paddr, n as u8, val) {
            return Err(Trap::StoreAccessFault(vaddr));
        }
        self.request_stop();
        Ok(())
    }

    /// Translates an AMO/SC target and returns its host pointer (RAM only; AMOs to devices are
    /// access faults). Alignment is checked by the caller.
    #[inline]
    pub(crate) fn amo_ptr<B: Bus>(
        &mut self,
        ram: &mut Ram,
        bus: &mut B,
        vaddr: u64,
        n: usize,
    ) -> Result<*mut u8, Trap> {
        let vpn = vaddr >> 12;
        let e = self.tlb.w[Tlb::slot(vpn)];
        if e.vpn != self.tlb.wtag(vpn) {
            // Fill the store TLB through the slow path without changing memory: store the value
            // that is already there (read through a write translation).
            let paddr = self.translate(ram, vaddr, Access::Write)?;
            let Some(off) = ram.offset(paddr, n as u64) else {
                return Err(Trap::StoreAccessFault(vaddr));
            };
            let mut b = [0u8; 8];
            b[..n].copy_from_slice(&ram.as_slice()[off..off + n]);
            self.store_slow(ram, bus, vaddr, n, u64::from_le_bytes(b))?;
        }
        let e = self.tlb.w[Tlb::slot(vpn)];
        Ok(e.addend.wrapping_add(vaddr as usize) as *mut u8)
    }
}

fn vector(tvec: u64, cause: u64, interrupt: bool) -> u64 {
    let base = tvec & !3;
    if interrupt && tvec & 3 == 1 {
        base + 4 * cause
    } else {
        base
    }
}

/// Reads `N` little-endian bytes.
///
/// # Safety
/// `p..p + N` must be readable.
#[inline(always)]
pub(crate) unsafe fn read_le<const N: usize>(p: *const u8) -> u64 {
    // SAFETY: the caller guarantees `p..p + N` is readable; unaligned reads are allowed.
    unsafe {
        match N {
            1 => *p as u64,
            2 => u16::from_le((p as *const u16).read_unaligned()) as u64,
            4 => u32::from_le((p as *const u32).read_unaligned()) as u64,
            _ => u64::from_le((p as *const u64).read_unaligned()),
        }
    }
}

/// Writes the low `N` bytes of `v`, little-endian.
///
/// # Safety
/// `p..p + N` must be writable.
#[inline(always)]
pub(crate) unsafe fn write_le<const N: usize>(p: *mut u8, v: u64) {
    // SAFETY: the caller guarantees `p..p + N` is writable; unaligned writes are allowed.
    unsafe {
        match N {
            1 => *p = v as u8,
            2 => (p as *mut u16).write_unaligned((v as u16).to_le()),
            4 => (p as *mut u32).write_unaligned((v as u32).to_le()),
            _ => (p as *mut u64).write_unaligned(v.to_le()),
        }
    }
}
