//! Control and status registers: storage, the views (sstatus/sie/sip of their M-mode registers),
//! WARL masks and the access rules (privilege, read-only, FS, counter enables, TVM).

use crate::bus::Bus;
use crate::hart::{Hart, Priv};
use crate::mmu::{SATP_BARE, SATP_SV39, SATP_SV48};
use crate::trap::Trap;

/// `mstatus` bit positions and masks.
pub mod mstatus {
    /// S-mode interrupt enable.
    pub const SIE: u64 = 1 << 1;
    /// M-mode interrupt enable.
    pub const MIE: u64 = 1 << 3;
    /// Previous SIE.
    pub const SPIE: u64 = 1 << 5;
    /// Previous MIE.
    pub const MPIE: u64 = 1 << 7;
    /// Previous privilege for SRET (S or U).
    pub const SPP: u64 = 1 << 8;
    /// Shift of MPP.
    pub const MPP_SHIFT: u64 = 11;
    /// Previous privilege for MRET.
    pub const MPP: u64 = 3 << 11;
    /// Shift of FS.
    pub const FS_SHIFT: u64 = 13;
    /// Floating-point unit state.
    pub const FS: u64 = 3 << 13;
    /// Modify PRiVilege: loads/stores in M-mode use MPP's translation.
    pub const MPRV: u64 = 1 << 17;
    /// S-mode may access U pages.
    pub const SUM: u64 = 1 << 18;
    /// Loads from execute-only pages succeed.
    pub const MXR: u64 = 1 << 19;
    /// Trap virtual memory (satp, SFENCE.VMA in S-mode).
    pub const TVM: u64 = 1 << 20;
    /// Timeout wait (WFI below M-mode is illegal).
    pub const TW: u64 = 1 << 21;
    /// Trap SRET.
    pub const TSR: u64 = 1 << 22;
    /// UXL and SXL, both fixed at 64 bits.
    pub const XLEN_FIELDS: u64 = (2 << 32) | (2 << 34);
    /// State dirty summary.
    pub const SD: u64 = 1 << 63;
    /// Bits an M-mode write may change.
    pub const WRITABLE: u64 =
        SIE | MIE | SPIE | MPIE | SPP | MPP | FS | MPRV | SUM | MXR | TVM | TW | TSR;
    /// Bits visible through sstatus.
    pub const SSTATUS_VIEW: u64 = SIE | SPIE | SPP | FS | SUM | MXR | (3 << 32) | SD;
    /// Bits an sstatus write may change.
    pub const SSTATUS_WRITABLE: u64 = SIE | SPIE | SPP | FS | SUM | MXR;
}

/// CSR numbers used by name.
#[allow(missing_docs)]
pub mod num {
    pub const FFLAGS: u16 = 0x001;
    pub const FRM: u16 = 0x002;
    pub const FCSR: u16 = 0x003;
    pub const CYCLE: u16 = 0xc00;
    pub const TIME: u16 = 0xc01;
    pub const INSTRET: u16 = 0xc02;
    pub const SSTATUS: u16 = 0x100;
    pub const SIE: u16 = 0x104;
    pub const STVEC: u16 = 0x105;
    pub const SCOUNTEREN: u16 = 0x106;
    pub const SENVCFG: u16 = 0x10a;
    pub const SSCRATCH: u16 = 0x140;
    pub const SEPC: u16 = 0x141;
    pub const SCAUSE: u16 = 0x142;
    pub const STVAL: u16 = 0x143;
    pub const SIP: u16 = 0x144;
    pub const SATP: u16 = 0x180;
    pub const MSTATUS: u16 = 0x300;
    pub const MISA: u16 = 0x301;
    pub const MEDELEG: u16 = 0x302;
    pub const MIDELEG: u16 = 0x303;
    pub const MIE: u16 = 0x304;
    pub const MTVEC: u16 = 0x305;
    pub const MCOUNTEREN: u16 = 0x306;
    pub const MENVCFG: u16 = 0x30a;
    pub const MCOUNTINHIBIT: u16 = 0x320;
    pub const MSCRATCH: u16 = 0x340;
    pub const MEPC: u16 = 0x341;
    pub const MCAUSE: u16 = 0x342;
    pub const MTVAL: u16 = 0x343;
    pub const MIP: u16 = 0x344;
    pub const MCYCLE: u16 = 0xb00;
    pub const MINSTRET: u16 = 0xb02;
    pub const MVENDORID: u16 = 0xf11;
    pub const MARCHID: u16 = 0xf12;
    pub const MIMPID: u16 = 0xf13;
    pub const MHARTID: u16 = 0xf14;
    pub const MCONFIGPTR: u16 = 0xf15;
}

/// `misa`: RV64 with A, C, D, F, I, M, S, U.
pub const MISA_VALUE: u64 = (2 << 62)
    | (1 << 0)
    | (1 << 2)
    | (1 << 3)
    | (1 << 5)
    | (1 << 8)
    | (1 << 12)
    | (1 << 18)
    | (1 << 20);

/// Exceptions that may be delegated (all but ECALL from M and reserved codes).
const MEDELEG_WRITABLE: u64 = 0xb3ff;
/// Software-writable bits of `mip`: SSIP, STIP, SEIP.
pub const MIP_WRITABLE: u64 = 0x222;
/// Interrupts that exist: SSI, MSI, STI, MTI, SEI, MEI.
const MIE_WRITABLE: u64 = 0xaaa;
/// Delegable interrupts (the S-level ones).
const MIDELEG_WRITABLE: u64 = 0x222;
/// Number of PMP entries implemented.
const PMP_ENTRIES: usize = 16;

/// The CSR file of one hart (everything but the floating-point state, which lives in [`Hart`]).
#[allow(missing_docs)]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Csrs {
    pub mstatus: u64,
    pub medeleg: u64,
    pub mideleg: u64,
    pub mie: u64,
    /// Software-written bits of `mip` (SSIP, STIP, SEIP); device lines are OR-ed in on read.
    pub mip: u64,
    pub mtvec: u64,
    pub mscratch: u64,
    pub mepc: u64,
    pub mcause: u64,
    pub mtval: u64,
    pub mcounteren: u64,
    pub menvcfg: u64,
    pub mcountinhibit: u64,
    pub stvec: u64,
    pub sscratch: u64,
    pub sepc: u64,
    pub scause: u64,
    pub stval: u64,
    pub scounteren: u64,
    pub senvcfg: u64,
    pub satp: u64,
    pub pmpcfg: [u64; 2],
    pub pmpaddr: [u64; PMP_ENTRIES],
    /// `mcycle` = icount + this.
    pub mcycle_offset: u64,
    /// `minstret` = icount + this.
    pub minstret_offset: u64,
}

fn tvec(val: u64) -> u64 {
    // Direct (0) and vectored (1) modes exist; a reserved mode leaves the register direct.
    if val & 3 >= 2 {
        val & !3
    } else {
        val
    }
}

impl Hart {
    /// Value of `mip` as software sees it: written bits plus device lines.
    #[inline]
    pub fn mip(&self) -> u64 {
        self.csr.mip | self.irq_lines
    }

    fn counter_allowed(&self, bit: u64) -> bool {
        match self.prv {
            Priv::M => true,
            Priv::S => self.csr.mcounteren >> bit & 1 == 1,
            Priv::U => self.csr.mcounteren >> bit & 1 == 1 && self.csr.scounteren >> bit & 1 == 1,
        }
    }

    /// Reads CSR `n` for a CSR instruction, with the access checks of the privileged spec.
    pub(crate) fn csr_read<B: Bus>(&mut self, bus: &mut B, n: u16, raw: u32) -> Result<u64, Trap> {
        use num::*;
        let ill = Trap::IllegalInstruction(raw as u64);
        if (n >> 8) & 3 > self.prv as u16 {
            return Err(ill);
        }
        let v = match n {
            FFLAGS | FRM | FCSR => {
                if !self.fp_enabled() {
                    return Err(ill);
                }
                match n {
                    FFLAGS => self.fflags as u64,
                    FRM => self.frm as u64,
                    _ => ((self.frm as u64) << 5) | self.fflags as u64,
                }
            }
            0xc00..=0xc1f => {
                let idx = (n - 0xc00) as u64;
                if !self.counter_allowed(idx) {
                    return Err(ill);
                }
                match n {
                    CYCLE => self.icount.wrapping_add(self.csr.mcycle_offset),
                    TIME => bus.mtime(self.hartid, self.icount),
                    INSTRET => self.icount.wrapping_add(self.csr.minstret_offset),
                    _ => 0,
                }
            }
            SSTATUS => self.read_mstatus() & mstatus::SSTATUS_VIEW,
            SIE => self.csr.mie & self.csr.mideleg,
            STVEC => self.csr.stvec,
            SCOUNTEREN => self.csr.scounteren,
            SENVCFG => self.csr.senvcfg,
            SSCRATCH => self.csr.sscratch,
            SEPC => self.csr.sepc,
            SCAUSE => self.csr.scause,
            STVAL => self.csr.stval,
            SIP => self.mip() & self.csr.mideleg,
            SATP => {
                if self.prv == Priv::S && self.csr.mstatus & mstatus::TVM != 0 {
                    return Err(ill);
                }
                self.csr.satp
            }
            MSTATUS => self.read_mstatus(),
            MISA => MISA_VALUE,
            MEDELEG => self.csr.medeleg,
            MIDELEG => self.csr.mideleg,
            MIE => self.csr.mie,
            MTVEC => self.csr.mtvec,
            MCOUNTEREN => self.csr.mcounteren,
            MENVCFG => self.csr.menvcfg,
            MCOUNTINHIBIT => self.csr.mcountinhibit,
            MSCRATCH => self.csr.mscratch,
            MEPC => self.csr.mepc,
            MCAUSE => self.csr.mcause,
            MTVAL => self.csr.mtval,
            MIP => self.mip(),
            0x3a0 | 0x3a2 => self.csr.pmpcfg[((n - 0x3a0) / 2) as usize],
            0x3a4..=0x3ae if n.is_multiple_of(2) => 0,
            0x3b0..=0x3bf => self.csr.pmpaddr[(n - 0x3b0) as usize],
            0x3c0..=0x3ef => 0,
            MCYCLE => self.icount.wrapping_add(self.csr.mcycle_offset),
            MINSTRET => self.icount.wrapping_add(self.csr.minstret_offset),
            0xb03..=0xb1f | 0x323..=0x33f => 0,
            MVENDORID | MARCHID | MIMPID | MCONFIGPTR => 0,
            MHARTID => self.hartid as u64,
            _ => return Err(ill),
        };
        Ok(v)
    }

    fn read_mstatus(&self) -> u64 {
        let ms = self.csr.mstatus | mstatus::XLEN_FIELDS;
        if ms & mstatus::FS == mstatus::FS {
            ms | mstatus::SD
        } else {
            ms
        }
    }

    /// Writes CSR `n` for a CSR instruction. Read access was already checked by
    /// [`Hart::csr_read`] (or the same rules, for CSRRW with rd = x0).
    pub(crate) fn csr_write(&mut self, n: u16, val: u64, raw: u32) -> Result<(), Trap> {
        use num::*;
        let ill = Trap::IllegalInstruction(raw as u64);
        if (n >> 8) & 3 > self.prv as u16 || n >> 10 == 3 {
            return Err(ill);
        }
        match n {
            FFLAGS | FRM | FCSR => {
                if !self.fp_enabled() {
                    return Err(ill);
                }
                match n {
                    FFLAGS => self.fflags = (val & 0x1f) as u8,
                    FRM => self.frm = (val & 7) as u8,
                    _ => {
                        self.fflags = (val & 0x1f) as u8;
                        self.frm = ((val >> 5) & 7) as u8;
                    }
                }
                self.set_fs_dirty();
            }
            SSTATUS => {
                let w = mstatus::SSTATUS_WRITABLE;
                self.write_mstatus((self.csr.mstatus & !w) | (val & w));
            }
            SIE => {
                let m = self.csr.mideleg;
                self.csr.mie = (self.csr.mie & !m) | (val & m);
                self.request_irq_check();
            }
            STVEC => self.csr.stvec = tvec(val),
            SCOUNTEREN => self.csr.scounteren = val & 0xffff_ffff,
            SENVCFG => self.csr.senvcfg = val & 1,
            SSCRATCH => self.csr.sscratch = val,
            SEPC => self.csr.sepc = val & !1,
            SCAUSE => self.csr.scause = val,
            STVAL => self.csr.stval = val,
            SIP => {
                // Only SSIP is writable through sip, and only when delegated.
                let m = self.csr.mideleg & (1 << 1);
                self.csr.mip = (self.csr.mip & !m) | (val & m);
                self.request_irq_check();
            }
            SATP => {
                if self.prv == Priv::S && self.csr.mstatus & mstatus::TVM != 0 {
                    return Err(ill);
                }
                let mode = val >> 60;
                if matches!(mode, SATP_BARE | SATP_SV39 | SATP_SV48) {
                    // No ASIDs: the ASID field reads as zero.
                    self.csr.satp = val & ((0xf << 60) | ((1 << 44) - 1));
                    self.mmu_context_changed();
                }
            }
            MSTATUS => self
                .write_mstatus((self.csr.mstatus & !mstatus::WRITABLE) | (val & mstatus::WRITABLE)),
            MISA => {}
            MEDELEG => self.csr.medeleg = val & MEDELEG_WRITABLE,
            MIDELEG => {
                self.csr.mideleg = val & MIDELEG_WRITABLE;
                self.request_irq_check();
            }
            MIE => {
                self.csr.mie = val & MIE_WRITABLE;
                self.request_irq_check();
            }
            MTVEC => self.csr.mtvec = tvec(val),
            MCOUNTEREN => self.csr.mcounteren = val & 0xffff_ffff,
            MENVCFG => self.csr.menvcfg = val & 1,
            MCOUNTINHIBIT => self.csr.mcountinhibit = val & 0xffff_fffd,
            MSCRATCH => self.csr.mscratch = val,
            MEPC => self.csr.mepc = val & !1,
            MCAUSE => self.csr.mcause = val,
            MTVAL => self.csr.mtval = val,
            MIP => {
                self.csr.mip = (self.csr.mip & !MIP_WRITABLE) | (val & MIP_WRITABLE);
                self.request_irq_check();
            }
            0x3a0 | 0x3a2 => self.csr.pmpcfg[((n - 0x3a0) / 2) as usize] = val,
            0x3a4..=0x3ae if n.is_multiple_of(2) => {}
            0x3b0..=0x3bf => self.csr.pmpaddr[(n - 0x3b0) as usize] = val & ((1 << 54) - 1),
            0x3c0..=0x3ef => {}
            MCYCLE => self.csr.mcycle_offset = val.wrapping_sub(self.icount).wrapping_sub(1),
            MINSTRET => self.csr.minstret_offset = val.wrapping_sub(self.icount).wrapping_sub(1),
            0xb03..=0xb1f | 0x323..=0x33f => {}
            _ => return Err(ill),
        }
        Ok(())
    }

    fn write_mstatus(&mut self, mut v: u64) {
        // MPP is WARL over {U, S, M}: the reserved value 2 becomes U.
        if (v & mstatus::MPP) >> mstatus::MPP_SHIFT == 2 {
            v &= !mstatus::MPP;
        }
        self.csr.mstatus = v & !(mstatus::SD | mstatus::XLEN_FIELDS);
        self.request_irq_check();
        self.mmu_context_changed();
    }
}
