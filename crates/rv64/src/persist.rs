//! The saved form of a [`Hart`]: plain data, kept apart from behaviour, for snapshots, the live
//! clone and replay checkpoints.
//!
//! A [`HartState`] holds everything architectural and nothing cached: restoring builds a fresh
//! [`Hart`] (empty TLBs, no decoded instructions, an interrupt check pending) and sets the saved
//! fields, so restore-and-continue behaves exactly as never having stopped. A saved state is
//! untrusted input: [`Hart::restore`] checks every field against what the hart itself could hold
//! (the WARL masks of the CSRs) and refuses anything else.

use crate::csr::{mstatus, Csrs, MIP_WRITABLE};
use crate::hart::{Hart, Priv};
use crate::mmu::{SATP_BARE, SATP_SV39, SATP_SV48};
use crate::trap::irq;

/// Device-driven `mip` bits (MSIP, MTIP, SEIP, MEIP), as [`Hart::set_irq_lines`] keeps them.
const IRQ_LINES: u64 = (1 << irq::MSI) | (1 << irq::MTI) | (1 << irq::SEI) | (1 << irq::MEI);
/// Interrupts that exist (`mie`'s writable bits).
const MIE_BITS: u64 = 0xaaa;
/// Delegable interrupts.
const MIDELEG_BITS: u64 = 0x222;
/// Delegable exceptions.
const MEDELEG_BITS: u64 = 0xb3ff;
/// The `satp` bits a write keeps (mode and PPN; no ASID).
const SATP_BITS: u64 = (0xf << 60) | ((1 << 44) - 1);

/// Everything architectural in a [`Hart`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HartState {
    /// Integer registers x0..x31 (x0 must be zero).
    pub x: [u64; 32],
    /// Floating-point registers (raw bits).
    pub f: [u64; 32],
    /// Program counter.
    pub pc: u64,
    /// Privilege level in its 2-bit encoding (0 U, 1 S, 3 M).
    pub prv: u8,
    /// The CSR file.
    pub csr: Csrs,
    /// `fflags` (5 bits).
    pub fflags: u8,
    /// `frm` (3 bits).
    pub frm: u8,
    /// The hart's step count.
    pub icount: u64,
    /// `mhartid`.
    pub hartid: u64,
    /// Waiting in WFI.
    pub wfi: bool,
    /// LR reservation.
    pub reservation: Option<u64>,
    /// Device-driven `mip` bits.
    pub irq_lines: u64,
}

/// Why a saved hart state was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HartStateError {
    /// saved hart state has {what} = {value:#x}, which no hart can hold: the snapshot is corrupt or from an incompatible build
    #[error(
        "saved hart state has {what} = {value:#x}, which no hart can hold: \
         the snapshot is corrupt or from an incompatible build"
    )]
    Invalid {
        /// Which field.
        what: &'static str,
        /// Its saved value.
        value: u64,
    },
}

impl Hart {
    /// The saved form of this hart's architectural state.
    pub fn save(&self) -> HartState {
        let mut x = [0; 32];
        x.copy_from_slice(&self.x[..32]);
        HartState {
            x,
            f: self.f,
            pc: self.pc,
            prv: self.prv as u8,
            csr: self.csr.clone(),
            fflags: self.fflags,
            frm: self.frm,
            icount: self.icount,
            hartid: self.hartid as u64,
            wfi: self.wfi,
            reservation: self.reservation,
            irq_lines: self.irq_lines,
        }
    }

    /// A fresh hart (empty TLBs and caches) with the saved architectural state, after checking
    /// every field against what a hart can hold.
    pub fn restore(s: &HartState) -> Result<Hart, HartStateError> {
        let check = |ok: bool, what: &'static str, value: u64| {
            if ok {
                Ok(())
            } else {
                Err(HartStateError::Invalid { what, value })
            }
        };
        let prv = match s.prv {
            0 => Priv::U,
            1 => Priv::S,
            3 => Priv::M,
            p => {
                return Err(HartStateError::Invalid {
                    what: "privilege level",
                    value: u64::from(p),
                })
            }
        };
        check(s.x[0] == 0, "x0", s.x[0])?;
        check(s.fflags <= 0x1f, "fflags", u64::from(s.fflags))?;
        check(s.frm <= 7, "frm", u64::from(s.frm))?;
        let hartid = usize::try_from(s.hartid).ok();
        check(hartid.is_some() && s.hartid < 1 << 20, "mhartid", s.hartid)?;
        check(
            s.irq_lines & !IRQ_LINES == 0,
            "interrupt lines",
            s.irq_lines,
        )?;
        let c = &s.csr;
        check(
            c.mstatus & !mstatus::WRITABLE == 0
                && (c.mstatus & mstatus::MPP) >> mstatus::MPP_SHIFT != 2,
            "mstatus",
            c.mstatus,
        )?;
        check(c.mip & !MIP_WRITABLE == 0, "mip", c.mip)?;
        check(c.mie & !MIE_BITS == 0, "mie", c.mie)?;
        check(c.mideleg & !MIDELEG_BITS == 0, "mideleg", c.mideleg)?;
        check(c.medeleg & !MEDELEG_BITS == 0, "medeleg", c.medeleg)?;
        check(
            c.satp & !SATP_BITS == 0 && matches!(c.satp >> 60, SATP_BARE | SATP_SV39 | SATP_SV48),
            "satp",
            c.satp,
        )?;
        check(c.mtvec & 3 < 2, "mtvec", c.mtvec)?;
        check(c.stvec & 3 < 2, "stvec", c.stvec)?;
        check(c.mepc & 1 == 0, "mepc", c.mepc)?;
        check(c.sepc & 1 == 0, "sepc", c.sepc)?;
        check(s.pc & 1 == 0, "pc", s.pc)?;

        let mut h = Hart::new(hartid.unwrap_or(0));
        h.x[..32].copy_from_slice(&s.x);
        h.f = s.f;
        h.pc = s.pc;
        h.prv = prv;
        h.csr = s.csr.clone();
        h.fflags = s.fflags;
        h.frm = s.frm;
        h.icount = s.icount;
        h.wfi = s.wfi;
        h.reservation = s.reservation;
        h.irq_lines = s.irq_lines;
        // Hart::new left the TLBs empty and an interrupt check pending; the translation context
        // it recorded may differ from the restored one, so flush again on first use.
        h.flush_tlb();
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_validation() {
        let mut h = Hart::new(2);
        h.x[5] = 77;
        h.f[3] = 0x4000;
        h.pc = 0x8000_0000;
        h.prv = Priv::S;
        h.csr.mstatus = mstatus::SIE | (1 << mstatus::MPP_SHIFT);
        h.csr.satp = (SATP_SV39 << 60) | 0x1234;
        h.fflags = 3;
        h.frm = 1;
        h.icount = 99;
        h.reservation = Some(0x8000_0040);
        h.set_irq_lines(1 << irq::MTI);
        let s = h.save();
        let r = Hart::restore(&s).unwrap();
        assert_eq!(r.save(), s);
        assert_eq!(r.hartid, 2);

        let bad = |f: fn(&mut HartState)| {
            let mut b = s.clone();
            f(&mut b);
            Hart::restore(&b).unwrap_err()
        };
        bad(|b| b.prv = 2);
        bad(|b| b.x[0] = 1);
        bad(|b| b.fflags = 0x20);
        bad(|b| b.frm = 8);
        bad(|b| b.irq_lines = 1);
        bad(|b| b.csr.mstatus = 2 << mstatus::MPP_SHIFT);
        bad(|b| b.csr.mstatus = 1 << 40);
        bad(|b| b.csr.satp = 3 << 60);
        bad(|b| b.csr.mip = 1 << 7);
        bad(|b| b.pc = 1);
    }
}
