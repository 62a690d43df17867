//! The translating engine: guest code is translated, a block at a time, into x86-64 host code
//! that runs under the same [`Hart::run`] contract as the interpreter — exactly the requested
//! number of steps, the same architectural state after each, the same dirty tracking.
//!
//! How it stays exact:
//! - **Steps.** A block of `n` instructions runs only if at least `n` steps remain in the slice;
//!   otherwise the interpreter steps the remainder one instruction at a time. Every exit of a
//!   block (fall-through, taken branch, a helper that trapped or needs attention) returns the
//!   number of steps it took, so nothing is counted per instruction and nothing is refunded
//!   twice.
//! - **State.** Inline code handles integer ALU operations, branches, jumps and the software-TLB
//!   hit path of loads and stores; everything else goes through [`Hart::execute`], the
//!   interpreter's own per-instruction function, called with the hart's pc and icount set exactly
//!   as the interpreter would have them (devices see the same icount; traps see the same pc).
//! - **Memory.** The inline store path hits only the store TLB, which holds entries for dirty
//!   non-code pages only (see [`crate::mmu`]); the first store to a clean or code page takes the
//!   interpreter's slow path, which marks it dirty and drops the page's decoded instructions.
//!   That bumps the page's generation ([`crate::decode::DecodedPage`]), which invalidates every
//!   block translated from it; a store into the running block's own page ends the block after
//!   the store.
//! - **Lookup.** Blocks are found through the hart's own fetch TLB (so a block runs only where
//!   the interpreter could fetch: same permissions, same translation context) and keyed by the
//!   decoded page (the physical page) and the virtual pc (code embeds pc-relative values).
//!
//! - **Chaining.** An exit to a known pc on the block's own page (fall-through, taken branch,
//!   `jal`) first returns to the dispatcher and records where it is; the dispatcher then patches
//!   it with the target block's length and body, so that later the exit jumps straight into the
//!   target when the target's whole length fits in the budget (the dispatcher's own rule), and
//!   leaves otherwise. Only blocks of the same page under the same generation are chained, so a
//!   store that invalidates one invalidates both, and no chain ever needs undoing; a flush drops
//!   all code (chain sites recorded before a flush are discarded by an epoch count).
//! - **Inline dispatch.** Every other exit — `jalr` (returns, indirect calls), direct exits to
//!   another page, and the fall-through after a system/CSR instruction the helper ran — probes
//!   the fetch TLB and the virtual-pc jump cache from the translated code itself and jumps
//!   straight into the target's body when the dispatcher would have run that very block: the
//!   fetch TLB maps the pc's page (same tag, hence same privilege and translation context) to
//!   the page the block was translated from, that page's generation is unchanged, and the whole
//!   block fits in the remaining budget. Any miss leaves to the dispatcher, which looks up (or
//!   translates) and fills the jump cache. Nothing else the dispatcher checks can change between
//!   two blocks: interrupts, WFI and device accesses happen inside helper calls, and the helper
//!   leaves the block when the hart needs attention. Measured on the Linux guest's `cpubench`
//!   and `ftmark`: this took dispatcher entries from 25.8 M to 0.4 M (the jump cache hits for
//!   25.3 M block-to-block transfers), which had cost ~15% of the time in `run_engine` and
//!   `lookup` alone.
//!
//! The cache is bounded (code buffer, instruction copies, block count) and flushed wholesale when
//! any of them is full. Host code is produced by a hand-written emitter ([`x86`]) that picks the
//! shortest displacement and immediate forms (`rbx` points into the hart's registers so that all
//! 32 are 8-bit displacements): code size matters once the dispatcher is out of the way — a
//! Linux boot plus two benchmarks translate ~400 K guest instructions, and at ~90 bytes each the
//! 32 MiB buffer overflowed. Guest registers live in the [`Hart`] (no host register allocation
//! yet: every instruction loads its sources and stores its result, as QEMU's TCG does at the
//! end of each of its blocks).

mod buffer;
mod translate;
mod x86;

use crate::bus::Bus;
use crate::decode::{DecodedPage, Insn};
use crate::hart::{BlockRunner, Hart};
use crate::jitstats::JitStats;
use crate::mmu::{CodeEntry, DataEntry, Tlb};
use crate::ram::Ram;
use buffer::CodeBuffer;
use std::collections::HashMap;
use translate::{InsnArena, MAX_INSNS};

/// Size of the code buffer (per hart).
const CODE_BYTES: usize = 32 << 20;
/// Capacity of the decoded-instruction copies used by helper calls.
const ARENA_INSNS: usize = 1 << 20;
/// Most blocks held at once.
const MAX_BLOCKS: usize = 1 << 18;
/// Entries in the virtual-pc jump cache.
const JC_SIZE: usize = 1 << 14;
/// Room a single block may need in the code buffer (64 instructions of at most ~120 bytes plus
/// their out-of-line paths).
const BLOCK_ROOM: usize = 64 << 10;

/// The block entry: `(hart, ctx) -> steps taken`.
type BlockFn = unsafe extern "sysv64" fn(*mut Hart, *mut Ctx) -> u64;
/// The step helper: `(ctx, insn, index in block, pc) -> 0 to go on, or steps taken to leave`.
type StepFn = unsafe extern "sysv64" fn(*mut Ctx, *const Insn, u64, u64) -> u64;

/// What translated code reaches through `r12`.
#[repr(C)]
pub(crate) struct Ctx {
    step: StepFn,
    tlb_r: *const DataEntry,
    tlb_w: *const DataEntry,
    /// The fetch TLB and the jump cache, for the inline dispatch of [`translate`]'s exits.
    tlb_x: *const CodeEntry,
    jc: *const JcEntry,
    /// Blocks entered by translated code's inline dispatch (not through the dispatcher).
    inline_entries: u64,
    hart: *mut Hart,
    ram: *mut Ram,
    bus: *mut (),
    /// icount at block entry (advanced by each pass of a block that loops on itself).
    start: u64,
    /// The slice's end: a looping block goes round again only if a whole pass fits.
    stop: u64,
    /// The running block's page and the generation it was translated under.
    dpage: *const DecodedPage,
    gen: u64,
    /// Set by a chain exit not yet chained: where its patchable fields are (see
    /// [`translate::CHAIN_LEN_AT`]); null otherwise.
    link: *mut u8,
}

/// A jump-cache entry: everything the dispatcher — or translated code's inline dispatch — needs
/// to enter the block for `vpc` without looking it up: the block is valid if `dpage` is the page
/// the fetch TLB gives for `vpc` and that page's generation is still `gen`.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct JcEntry {
    /// The block's virtual pc; odd (never a pc) when empty.
    vpc: u64,
    dpage: *const DecodedPage,
    gen: u64,
    /// The block's length in instructions.
    n: u64,
    /// Where it is entered from other blocks (after the prologue).
    body: *const u8,
    /// Its index in [`Jit::blocks`].
    index: u64,
}

const JC_EMPTY: JcEntry = JcEntry {
    vpc: 1,
    dpage: std::ptr::null(),
    gen: 0,
    n: 0,
    body: std::ptr::null(),
    index: 0,
};

struct Block {
    vpc: u64,
    dpage: *const DecodedPage,
    gen: u64,
    n: u32,
    entry: BlockFn,
    /// Where chained blocks enter (after the prologue).
    body: *const u8,
}

/// One hart's translation cache.
pub(crate) struct Jit {
    code: CodeBuffer,
    arena: InsnArena,
    blocks: Vec<Block>,
    map: HashMap<(u64, usize), u32>,
    jc: Box<[JcEntry]>,
    asm: x86::Asm,
    ram_id: u64,
    /// Counts flushes: a chain exit recorded before a flush points into dropped code.
    epoch: u64,
    pub stats: JitStats,
}

impl Jit {
    /// A new, empty cache; `None` if the host gives no executable memory.
    pub fn new() -> Option<Box<Jit>> {
        Some(Box::new(Jit {
            code: CodeBuffer::new(CODE_BYTES)?,
            arena: InsnArena::new(ARENA_INSNS),
            blocks: Vec::new(),
            map: HashMap::new(),
            jc: vec![JC_EMPTY; JC_SIZE].into_boxed_slice(),
            asm: x86::Asm::new(),
            ram_id: 0,
            epoch: 0,
            stats: JitStats::default(),
        }))
    }

    fn flush(&mut self) {
        self.epoch += 1;
        self.blocks.clear();
        self.map.clear();
        self.jc.fill(JC_EMPTY);
        self.arena.reset();
        self.code.reset();
    }

    fn jc_slot(pc: u64) -> usize {
        (pc >> 1) as usize & (JC_SIZE - 1)
    }

    fn jc_fill(&mut self, i: u32) {
        let b = &self.blocks[i as usize];
        self.jc[Self::jc_slot(b.vpc)] = JcEntry {
            vpc: b.vpc,
            dpage: b.dpage,
            gen: b.gen,
            n: b.n as u64,
            body: b.body,
            index: i as u64,
        };
    }

    /// The valid block for `pc` on decoded page `dp`, translating it if needed. `None`: the
    /// first instruction is not translatable (the interpreter steps it).
    fn lookup(
        &mut self,
        hart: &mut Hart,
        ram: &mut Ram,
        pc: u64,
        dp: *mut DecodedPage,
    ) -> Option<u32> {
        let e = &self.jc[Self::jc_slot(pc)];
        // SAFETY: `dp` comes from the fetch TLB: a decoded page owned by `ram`, never freed.
        let gen = unsafe { (*dp).gen };
        if e.vpc == pc && std::ptr::eq(e.dpage, dp) && e.gen == gen {
            return Some(e.index as u32);
        }
        if let Some(&i) = self.map.get(&(pc, dp as usize)) {
            if self.blocks[i as usize].gen == gen {
                self.jc_fill(i);
                return Some(i);
            }
        }
        let i = self.translate(hart, ram, pc, dp)?;
        self.jc_fill(i);
        Some(i)
    }

    #[cold]
    fn translate(
        &mut self,
        hart: &mut Hart,
        ram: &mut Ram,
        pc: u64,
        dp: *mut DecodedPage,
    ) -> Option<u32> {
        let t0 = std::time::Instant::now();
        if self.code.free() < BLOCK_ROOM
            || self.arena.free() < MAX_INSNS
            || self.blocks.len() >= MAX_BLOCKS
        {
            self.flush();
            self.stats.flushes += 1;
        }
        // SAFETY: as in `lookup`.
        let page = unsafe { (*dp).page };
        // The page may have lost its code mark (a store cleared it while the fetch TLB still
        // pointed here): mark it again, so stores to it are seen, as the interpreter's fetch does.
        let again = ram.decoded_page(page);
        debug_assert_eq!(again, dp);
        hart.sync_write_epoch(ram);
        // SAFETY: as in `lookup`.
        let gen = unsafe { (*dp).gen };
        let bytes = &ram.as_slice()[page << 12..(page + 1) << 12];
        let t = translate::translate(&mut self.asm, &mut self.arena, bytes, pc)?;
        let n = t.n;
        let entry = self.code.push(&self.asm.code);
        // SAFETY: `t.body` is an offset inside the code just copied to `entry`.
        let body = unsafe { entry.add(t.body) };
        // SAFETY: `entry` points to a complete function the translator just emitted, following
        // the `BlockFn` ABI (sysv64, callee-saved registers restored, stack kept aligned).
        let entry: BlockFn = unsafe { std::mem::transmute::<*const u8, BlockFn>(entry) };
        let i = self.blocks.len() as u32;
        self.blocks.push(Block {
            vpc: pc,
            dpage: dp,
            gen,
            n,
            entry,
            body,
        });
        self.map.insert((pc, dp as usize), i);
        self.stats.blocks += 1;
        self.stats.insns += n as u64;
        self.stats.code_bytes += self.asm.code.len() as u64;
        self.stats.translate_ns += t0.elapsed().as_nanos() as u64;
        Some(i)
    }
}

/// The step helper for bus type `B`: runs one instruction through the interpreter.
///
/// # Safety
/// `ctx` is the live context of a block being run by [`run`], `insn` a decoded instruction.
unsafe extern "sysv64" fn step<B: Bus>(ctx: *mut Ctx, insn: *const Insn, idx: u64, pc: u64) -> u64 {
    // SAFETY: `run` built `ctx` from exclusive references it holds for the whole block run; the
    // block's code does not touch the hart while the helper runs.
    let c = unsafe { &mut *ctx };
    // SAFETY: as above.
    let (hart, ram, bus) = unsafe { (&mut *c.hart, &mut *c.ram, &mut *(c.bus as *mut B)) };
    hart.icount = c.start + idx;
    hart.pc = pc;
    let r = hart.execute(insn, ram, bus);
    hart.icount += 1;
    if let Err(t) = r {
        hart.take_trap(t.cause(), t.tval(), false);
        return idx + 1;
    }
    // SAFETY: `insn` is valid (caller); `dpage` is a decoded page owned by `ram`.
    let (len, gen) = unsafe { ((*insn).len, (*c.dpage).gen) };
    if hart.needs_attention() || hart.pc != pc.wrapping_add(len as u64) || gen != c.gen {
        return idx + 1;
    }
    0
}

impl BlockRunner for Jit {
    const ACTIVE: bool = true;

    fn run_blocks<B: Bus>(
        &mut self,
        hart: &mut Hart,
        ram: &mut Ram,
        bus: &mut B,
        stop_at: u64,
    ) -> u64 {
        run(self, hart, ram, bus, stop_at)
    }
}

/// See [`BlockRunner::run_blocks`].
fn run<B: Bus>(jit: &mut Jit, hart: &mut Hart, ram: &mut Ram, bus: &mut B, stop_at: u64) -> u64 {
    if jit.ram_id != ram.id() {
        jit.flush();
        jit.ram_id = ram.id();
    }
    let mut ctx = Ctx {
        step: step::<B>,
        tlb_r: hart.tlb.r.as_ptr(),
        tlb_w: hart.tlb.w.as_ptr(),
        tlb_x: hart.tlb.x.as_ptr(),
        jc: jit.jc.as_ptr(),
        inline_entries: 0,
        hart: std::ptr::null_mut(),
        ram: std::ptr::null_mut(),
        bus: bus as *mut B as *mut (),
        start: 0,
        stop: stop_at,
        dpage: std::ptr::null(),
        gen: 0,
        link: std::ptr::null_mut(),
    };
    // The last block's unchained exit: (where, its page and generation, the cache epoch).
    let mut pending: Option<(*mut u8, *const DecodedPage, u64, u64)> = None;
    loop {
        if hart.needs_attention() || hart.icount >= stop_at {
            jit.stats.inline_entries += ctx.inline_entries;
            return 0;
        }
        let remaining = stop_at - hart.icount;
        let pc = hart.pc;
        let vpn = pc >> 12;
        let e = hart.tlb.x[Tlb::slot(vpn)];
        if e.vpn != hart.tlb.tag(vpn) {
            jit.stats.inline_entries += ctx.inline_entries;
            return 1; // the interpreter's fetch fills the TLB (or traps)
        }
        let Some(i) = jit.lookup(hart, ram, pc, e.page) else {
            jit.stats.inline_entries += ctx.inline_entries;
            return 1;
        };
        let b = &jit.blocks[i as usize];
        if let Some((site, dp, gen, epoch)) = pending.take() {
            // The exit led here (it set the pc this block was found for). Chain it if both
            // blocks are alive from the same page under the same generation.
            if epoch == jit.epoch && std::ptr::eq(b.dpage, dp) && b.gen == gen {
                // SAFETY: `site` was recorded by a chain exit of a block translated in this
                // epoch (no flush since), so it points into live code in the buffer, with the
                // layout `translate::emit_chain_exit` documents; blocks run on this thread only.
                unsafe { chain(site, b.n, b.body) };
                jit.stats.chains += 1;
            }
        }
        if b.n as u64 > remaining {
            jit.stats.inline_entries += ctx.inline_entries;
            return remaining;
        }
        ctx.hart = hart as *mut Hart;
        ctx.ram = ram as *mut Ram;
        ctx.start = hart.icount;
        ctx.dpage = b.dpage;
        ctx.gen = b.gen;
        ctx.link = std::ptr::null_mut();
        // SAFETY: the block was translated for this pc and page under the current generation
        // (checked by `lookup`), against this `Ram` (checked above); `ctx` outlives the call and
        // its pointers are exclusive borrows not used by this function until the call returns.
        let k = unsafe { (b.entry)(ctx.hart, &mut ctx) };
        hart.icount = ctx.start + k;
        jit.stats.runs += 1;
        if !ctx.link.is_null() {
            pending = Some((ctx.link, ctx.dpage, ctx.gen, jit.epoch));
        }
    }
}

/// Patches the chain exit at `site` to enter the block of `n` instructions whose body is at
/// `body` when `n` steps remain.
///
/// # Safety
/// `site` is a position recorded by a chain exit (see `translate::emit_chain_exit`) in live,
/// writable code that no other thread runs.
unsafe fn chain(site: *mut u8, n: u32, body: *const u8) {
    use translate::{CHAIN_JMP_END_AT, CHAIN_JMP_REL_AT, CHAIN_LEN_AT};
    // SAFETY: the caller's contract; both fields lie inside the exit's code.
    unsafe {
        let rel = body as isize - site.offset(CHAIN_JMP_END_AT) as isize;
        std::ptr::write_unaligned(site.offset(CHAIN_LEN_AT) as *mut i32, n as i32);
        std::ptr::write_unaligned(site.offset(CHAIN_JMP_REL_AT) as *mut i32, rel as i32);
    }
}
