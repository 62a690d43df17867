//! What a debugger (the `gdb` crate's remote stub) needs of a hart: a place to stop between two
//! instructions inside [`Hart::run`], and address translation that changes nothing.
//!
//! Why stop *inside* `Hart::run` rather than make the caller split its run calls: the board
//! samples interrupt lines and runs its devices between two run calls, so a run call cut in two
//! is a different execution from the one the log recorded. Stopping inside the call — the hook
//! is called between two instructions and keeps the thread until the debugger resumes — leaves
//! every call the board makes exactly as it was, so a replay under a debugger still matches its
//! digests. Inside the call the hart may be run in pieces (one instruction at a time while
//! breakpoints are set): the engines' contract (exact icount, any split of a run) makes that
//! invisible ([`crate::lockstep`] checks it).
//!
//! One hook per process ([`install`]): `ftvm` runs one machine per process, and a global keeps
//! the hook out of the machine and replay crates, which do not need to know about debuggers.
//! Without a hook, [`Hart::run`] pays one relaxed atomic load.

use crate::bus::Bus;
use crate::csr::mstatus;
use crate::hart::{Exit, Hart, NoBlocks, Priv};
use crate::ram::Ram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// How the hart runs until the hook is asked again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// The rest of the run call on the hart's engine, without asking again.
    Free,
    /// This many steps on the hart's engine, then ask again (`Steps(1)`: ask before every
    /// instruction, as breakpoints and single steps need; those run on the interpreter).
    Steps(u64),
}

/// Where a hart stands when the hook is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct At {
    /// The machine-wide icount (the log's clock), when the bus knows it.
    pub clock: Option<u64>,
}

/// The debugger's side: called by [`Hart::run`] while installed.
pub trait DebugHook: Send {
    /// Before the next instruction of `hart` (at the start of each run call, then as the last
    /// [`Plan`] asked). The hook may keep the thread here — the hart is stopped, its state and
    /// RAM may be read and written — and returns how to go on.
    fn before(&mut self, hart: &mut Hart, ram: &mut Ram, at: At) -> Plan;
    /// `hart` leaves [`Hart::run`] (its registers are as another hart's stop will see them).
    fn leave(&mut self, hart: &Hart);
}

static ACTIVE: AtomicBool = AtomicBool::new(false);
static HOOK: Mutex<Option<Box<dyn DebugHook>>> = Mutex::new(None);

/// Installs the process's debug hook (replacing any); every hart's next run call uses it.
pub fn install(hook: Box<dyn DebugHook>) {
    let mut g = HOOK.lock().unwrap_or_else(|p| p.into_inner());
    *g = Some(hook);
    ACTIVE.store(true, Ordering::SeqCst);
}

/// Removes the debug hook: harts run as if there had never been one.
pub fn uninstall() -> Option<Box<dyn DebugHook>> {
    ACTIVE.store(false, Ordering::SeqCst);
    HOOK.lock().unwrap_or_else(|p| p.into_inner()).take()
}

/// Whether a hook is installed.
#[inline(always)]
pub(crate) fn active() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

impl Hart {
    /// [`Hart::run`] with the hook: the same steps, asking the hook where it wants to be asked.
    pub(crate) fn run_debug<B: Bus>(&mut self, ram: &mut Ram, bus: &mut B, max: u64) -> Exit {
        // Taken out for the call: a run of another machine from inside the hook (re-execution
        // for reverse debugging) then runs without it instead of deadlocking.
        let taken = HOOK.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(mut hook) = taken else {
            return self.run_engine(ram, bus, max);
        };
        let start = self.icount;
        let base = bus.clock_icount(self.hartid, start);
        let stop_at = start.saturating_add(max);
        let exit = loop {
            if self.icount >= stop_at {
                break Exit::Budget;
            }
            let at = At {
                clock: base.map(|b| b.wrapping_add(self.icount.wrapping_sub(start))),
            };
            match hook.before(self, ram, at) {
                Plan::Free => break self.run_engine(ram, bus, stop_at - self.icount),
                Plan::Steps(n) => {
                    let n = n.clamp(1, stop_at - self.icount);
                    let e = if n == 1 {
                        self.run_loop(ram, bus, 1, &mut NoBlocks)
                    } else {
                        self.run_engine(ram, bus, n)
                    };
                    if e != Exit::Budget {
                        break e;
                    }
                }
            }
        };
        hook.leave(self);
        let mut g = HOOK.lock().unwrap_or_else(|p| p.into_inner());
        if g.is_none() && ACTIVE.load(Ordering::Relaxed) {
            *g = Some(hook);
        }
        exit
    }

    /// Translates `vaddr` as a data access of this hart would (see [`translate`]).
    pub fn debug_translate(&self, ram: &Ram, vaddr: u64) -> Option<u64> {
        translate(ram, self.csr.satp, self.csr.mstatus, self.prv, vaddr)
    }
}

const PTE_V: u64 = 1;
const PTE_R: u64 = 1 << 1;
const PTE_W: u64 = 1 << 2;
const PTE_X: u64 = 1 << 3;
const PPN_MASK: u64 = (1 << 44) - 1;

/// Translates `vaddr` for a debugger, through the page tables `satp` names, as a data access at
/// privilege `prv` with `mstatus` (its MPRV/MPP) would: the same walk as the hart's, but it
/// writes nothing (no accessed/dirty bits, no TLB fill) and ignores permissions (a debugger may
/// read a user page from the kernel, or code that is execute-only). `None`: not mapped.
pub fn translate(ram: &Ram, satp: u64, mstatus: u64, prv: Priv, vaddr: u64) -> Option<u64> {
    let prv = if prv == Priv::M && mstatus & mstatus::MPRV != 0 {
        Priv::from_bits((mstatus >> mstatus::MPP_SHIFT) & 3)
    } else {
        prv
    };
    let mode = satp >> 60;
    if prv == Priv::M || mode == crate::mmu::SATP_BARE {
        return Some(vaddr);
    }
    let levels: u32 = match mode {
        crate::mmu::SATP_SV39 => 3,
        crate::mmu::SATP_SV48 => 4,
        _ => return None,
    };
    let shift = 64 - (12 + 9 * levels);
    if (((vaddr << shift) as i64) >> shift) as u64 != vaddr {
        return None;
    }
    let mut table = (satp & PPN_MASK) << 12;
    for level in (0..levels).rev() {
        let pte = ram.read_u64(table + ((vaddr >> (12 + 9 * level)) & 0x1ff) * 8)?;
        if pte & PTE_V == 0 || (pte & PTE_R == 0 && pte & PTE_W != 0) || pte >> 54 != 0 {
            return None;
        }
        let ppn = (pte >> 10) & PPN_MASK;
        if pte & (PTE_R | PTE_X) == 0 {
            table = ppn << 12;
            continue;
        }
        if ppn & ((1u64 << (9 * level)) - 1) != 0 {
            return None;
        }
        let page_mask = (1u64 << (12 + 9 * level)) - 1;
        return Some((ppn << 12) | (vaddr & page_mask));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 0x8000_0000;

    /// An Sv39 table: vaddr 0x4000_1000 -> BASE + 0x5000 (a 4 KiB leaf, A and D clear).
    fn paged() -> (Ram, u64) {
        let mut ram = Ram::new(BASE, 1 << 20);
        let root = BASE + 0x1000;
        let mid = BASE + 0x2000;
        let leaf = BASE + 0x3000;
        let vaddr: u64 = 0x4000_1000;
        let pte_table = |pa: u64| ((pa >> 12) << 10) | PTE_V;
        ram.write(
            root + ((vaddr >> 30) & 0x1ff) * 8,
            &pte_table(mid).to_le_bytes(),
        );
        ram.write(
            mid + ((vaddr >> 21) & 0x1ff) * 8,
            &pte_table(leaf).to_le_bytes(),
        );
        let pte = (((BASE + 0x5000) >> 12) << 10) | PTE_V | PTE_R;
        ram.write(leaf + ((vaddr >> 12) & 0x1ff) * 8, &pte.to_le_bytes());
        let satp = (crate::mmu::SATP_SV39 << 60) | (root >> 12);
        (ram, satp)
    }

    #[test]
    fn walks_without_writing_accessed_bits() {
        let (ram, satp) = paged();
        let before = ram.as_slice().to_vec();
        assert_eq!(
            translate(&ram, satp, 0, Priv::S, 0x4000_1234),
            Some(BASE + 0x5234)
        );
        assert_eq!(translate(&ram, satp, 0, Priv::U, 0x4000_2000), None);
        assert_eq!(translate(&ram, satp, 0, Priv::S, 1 << 40), None);
        assert!(ram.as_slice() == before.as_slice(), "the walk wrote to RAM");
        // M-mode is physical, unless MPRV says to translate as MPP.
        assert_eq!(
            translate(&ram, satp, 0, Priv::M, 0x4000_1234),
            Some(0x4000_1234)
        );
        let mprv_s = mstatus::MPRV | (1 << mstatus::MPP_SHIFT);
        assert_eq!(
            translate(&ram, satp, mprv_s, Priv::M, 0x4000_1234),
            Some(BASE + 0x5234)
        );
    }
}
