//! Address translation: Sv39/Sv48 page walks with hardware A/D updates, and the software TLBs.
//!
//! The TLBs cache, per virtual page, a host pointer into RAM (as "host address minus virtual
//! address", so a hit costs one compare and one add). There are three: loads, stores and
//! instruction fetches. A store entry is only ever installed for a page that is already marked
//! dirty and holds no cached code, so the first store to a clean or code page takes the slow path
//! (dirty tracking and code invalidation). All three are flushed whenever the translation context
//! (privilege, `satp`, `MPRV`/`MPP`, `SUM`, `MXR`) changes, and by SFENCE.VMA.

use crate::csr::mstatus;
use crate::decode::DecodedPage;
use crate::hart::{Hart, Priv};
use crate::ram::Ram;
use crate::trap::Trap;

/// Entries per TLB (direct-mapped): 16 MiB of reach.
pub(crate) const TLB_SIZE: usize = 4096;

/// The kind of access being translated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Instruction fetch.
    Execute,
    /// Load (and LR).
    Read,
    /// Store, SC and AMO.
    Write,
}

impl Access {
    fn page_fault(self, vaddr: u64) -> Trap {
        match self {
            Access::Execute => Trap::InstructionPageFault(vaddr),
            Access::Read => Trap::LoadPageFault(vaddr),
            Access::Write => Trap::StorePageFault(vaddr),
        }
    }

    pub(crate) fn access_fault(self, vaddr: u64) -> Trap {
        match self {
            Access::Execute => Trap::InstructionAccessFault(vaddr),
            Access::Read => Trap::LoadAccessFault(vaddr),
            Access::Write => Trap::StoreAccessFault(vaddr),
        }
    }
}

/// A load/store TLB entry: host address of byte `v` of the page is `addend + v`.
#[derive(Clone, Copy)]
pub(crate) struct DataEntry {
    pub vpn: u64,
    pub addend: usize,
}

/// A fetch TLB entry: the decoded-instruction cache of the physical page behind `vpn`.
#[derive(Clone, Copy)]
pub(crate) struct CodeEntry {
    pub vpn: u64,
    pub page: *mut DecodedPage,
}

/// Tag of an empty entry. Tags are `vpn | generation << 52` with generations below 0xfff, so
/// no lookup can produce this value.
const NO_VPN: u64 = u64::MAX;
/// One generation step.
const GEN_STEP: u64 = 1 << 52;
/// Generations wrap (with a real clear) before reaching 0xfff.
const GEN_LAST: u64 = 0xffe << 52;

/// The three TLBs. Entries are tagged with a generation, so that a flush (on every privilege
/// change, i.e. every trap and system call) is one increment instead of clearing 48 KiB.
pub(crate) struct Tlb {
    pub r: Box<[DataEntry; TLB_SIZE]>,
    pub w: Box<[DataEntry; TLB_SIZE]>,
    pub x: Box<[CodeEntry; TLB_SIZE]>,
    /// Generation of `r` and `x` entries (pre-shifted).
    pub gen: u64,
    /// Generation of `w` entries (pre-shifted).
    pub wgen: u64,
}

const EMPTY: DataEntry = DataEntry {
    vpn: NO_VPN,
    addend: 0,
};
const EMPTY_CODE: CodeEntry = CodeEntry {
    vpn: NO_VPN,
    page: std::ptr::null_mut(),
};

impl Tlb {
    pub fn new() -> Tlb {
        Tlb {
            r: Box::new([EMPTY; TLB_SIZE]),
            w: Box::new([EMPTY; TLB_SIZE]),
            x: Box::new([EMPTY_CODE; TLB_SIZE]),
            gen: 0,
            wgen: 0,
        }
    }

    /// Slot of a virtual page number.
    #[inline(always)]
    pub fn slot(vpn: u64) -> usize {
        vpn as usize & (TLB_SIZE - 1)
    }

    /// Tag of `vpn` in the load and fetch TLBs.
    #[inline(always)]
    pub fn tag(&self, vpn: u64) -> u64 {
        vpn | self.gen
    }

    /// Tag of `vpn` in the store TLB.
    #[inline(always)]
    pub fn wtag(&self, vpn: u64) -> u64 {
        vpn | self.wgen
    }

    pub fn flush(&mut self) {
        if self.gen >= GEN_LAST {
            self.r.fill(EMPTY);
            self.x.fill(EMPTY_CODE);
            self.gen = 0;
        } else {
            self.gen += GEN_STEP;
        }
        self.flush_writes();
    }

    pub fn flush_writes(&mut self) {
        if self.wgen >= GEN_LAST {
            self.w.fill(EMPTY);
            self.wgen = 0;
        } else {
            self.wgen += GEN_STEP;
        }
    }
}

const PTE_V: u64 = 1 << 0;
const PTE_R: u64 = 1 << 1;
const PTE_W: u64 = 1 << 2;
const PTE_X: u64 = 1 << 3;
const PTE_U: u64 = 1 << 4;
const PTE_A: u64 = 1 << 6;
const PTE_D: u64 = 1 << 7;
const PPN_MASK: u64 = (1 << 44) - 1;

/// `satp.MODE` values.
pub(crate) const SATP_BARE: u64 = 0;
pub(crate) const SATP_SV39: u64 = 8;
pub(crate) const SATP_SV48: u64 = 9;

impl Hart {
    /// The privilege level that loads and stores are checked against (MPRV aware).
    #[inline]
    pub(crate) fn data_priv(&self) -> Priv {
        let ms = self.csr.mstatus;
        if self.prv == Priv::M && ms & mstatus::MPRV != 0 {
            Priv::from_bits((ms >> mstatus::MPP_SHIFT) & 3)
        } else {
            self.prv
        }
    }

    /// Translates `vaddr` for `acc`, walking the page table and updating A/D bits.
    pub fn translate(&mut self, ram: &mut Ram, vaddr: u64, acc: Access) -> Result<u64, Trap> {
        let prv = if acc == Access::Execute {
            self.prv
        } else {
            self.data_priv()
        };
        let mode = self.csr.satp >> 60;
        if prv == Priv::M || mode == SATP_BARE {
            return Ok(vaddr);
        }
        let levels: u32 = if mode == SATP_SV48 { 4 } else { 3 };
        let va_bits = 12 + 9 * levels;
        let shift = 64 - va_bits;
        if (((vaddr << shift) as i64) >> shift) as u64 != vaddr {
            return Err(acc.page_fault(vaddr));
        }
        let mut table = (self.csr.satp & PPN_MASK) << 12;
        for level in (0..levels).rev() {
            let vpn_i = (vaddr >> (12 + 9 * level)) & 0x1ff;
            let pte_addr = table + vpn_i * 8;
            let mut pte = ram.read_u64(pte_addr).ok_or(acc.access_fault(vaddr))?;
            if pte & PTE_V == 0 || (pte & PTE_R == 0 && pte & PTE_W != 0) || pte >> 54 != 0 {
                return Err(acc.page_fault(vaddr));
            }
            let ppn = (pte >> 10) & PPN_MASK;
            if pte & (PTE_R | PTE_X) == 0 {
                if level == 0 {
                    return Err(acc.page_fault(vaddr));
                }
                table = ppn << 12;
                continue;
            }
            // Leaf: permissions.
            let ms = self.csr.mstatus;
            let user_page = pte & PTE_U != 0;
            let ok = match acc {
                Access::Execute => {
                    pte & PTE_X != 0
                        && if prv == Priv::U {
                            user_page
                        } else {
                            !user_page
                        }
                }
                Access::Read | Access::Write => {
                    let perm = if acc == Access::Write {
                        pte & PTE_W != 0
                    } else {
                        pte & PTE_R != 0 || (ms & mstatus::MXR != 0 && pte & PTE_X != 0)
                    };
                    let who = if prv == Priv::U {
                        user_page
                    } else {
                        !user_page || ms & mstatus::SUM != 0
                    };
                    perm && who
                }
            };
            if !ok {
                return Err(acc.page_fault(vaddr));
            }
            // Superpages must be aligned.
            let low = (1u64 << (9 * level)) - 1;
            if ppn & low != 0 {
                return Err(acc.page_fault(vaddr));
            }
            let need = PTE_A | if acc == Access::Write { PTE_D } else { 0 };
            if pte & need != need {
                pte |= need;
                ram.write(pte_addr, &pte.to_le_bytes())
                    .ok_or(acc.access_fault(vaddr))?;
            }
            let page_mask = (1u64 << (12 + 9 * level)) - 1;
            return Ok((ppn << 12) | (vaddr & page_mask));
        }
        Err(acc.page_fault(vaddr))
    }
}
