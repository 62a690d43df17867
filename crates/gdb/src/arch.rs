//! The RISC-V 64 target as gdb sees it: integer and FP registers, `fflags`/`frm`/`fcsr` and the
//! privilege level (gdb's `org.gnu.gdb.riscv.virtual` feature, as QEMU gives it).
//!
//! Not `gdbstub_arch::riscv::Riscv64`: that one describes the integer registers only, and an
//! operator stepping through a trap wants the FP state and the privilege level.

use gdbstub::arch::{Arch, RegId, Registers};
use std::num::NonZeroUsize;

/// The architecture marker for gdbstub.
pub enum Rv64 {}

/// Every register in the order of the `g` packet (and of the remote numbers below).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Regs {
    /// x0..x31.
    pub x: [u64; 32],
    /// The pc (remote number 32).
    pub pc: u64,
    /// f0..f31, raw bits (33..64).
    pub f: [u64; 32],
    /// `fflags` (66).
    pub fflags: u32,
    /// `frm` (67).
    pub frm: u32,
    /// `fcsr` (68).
    pub fcsr: u32,
    /// The privilege level: 0 U, 1 S, 3 M (69; read-only here).
    pub prv: u64,
}

impl Registers for Regs {
    type ProgramCounter = u64;

    fn pc(&self) -> u64 {
        self.pc
    }

    fn gdb_serialize(&self, mut write_byte: impl FnMut(Option<u8>)) {
        let mut put = |b: &[u8]| b.iter().for_each(|b| write_byte(Some(*b)));
        for x in &self.x {
            put(&x.to_le_bytes());
        }
        put(&self.pc.to_le_bytes());
        for f in &self.f {
            put(&f.to_le_bytes());
        }
        put(&self.fflags.to_le_bytes());
        put(&self.frm.to_le_bytes());
        put(&self.fcsr.to_le_bytes());
        put(&self.prv.to_le_bytes());
    }

    fn gdb_deserialize(&mut self, bytes: &[u8]) -> Result<(), ()> {
        const LEN: usize = 33 * 8 + 32 * 8 + 3 * 4 + 8;
        if bytes.len() < 33 * 8 {
            return Err(());
        }
        let u64_at = |i: usize| -> Result<u64, ()> {
            let b = bytes.get(i..i + 8).ok_or(())?;
            Ok(u64::from_le_bytes(b.try_into().map_err(|_| ())?))
        };
        let u32_at = |i: usize| -> Result<u32, ()> {
            let b = bytes.get(i..i + 4).ok_or(())?;
            Ok(u32::from_le_bytes(b.try_into().map_err(|_| ())?))
        };
        for (i, x) in self.x.iter_mut().enumerate() {
            *x = u64_at(i * 8)?;
        }
        self.pc = u64_at(32 * 8)?;
        if bytes.len() >= LEN {
            for (i, f) in self.f.iter_mut().enumerate() {
                *f = u64_at(33 * 8 + i * 8)?;
            }
            let o = 65 * 8;
            self.fflags = u32_at(o)?;
            self.frm = u32_at(o + 4)?;
            self.fcsr = u32_at(o + 8)?;
            self.prv = u64_at(o + 12)?;
        }
        Ok(())
    }
}

/// One register, by its remote number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reg {
    /// x0..x31.
    X(u8),
    /// The pc.
    Pc,
    /// f0..f31.
    F(u8),
    /// `fflags`.
    Fflags,
    /// `frm`.
    Frm,
    /// `fcsr`.
    Fcsr,
    /// The privilege level.
    Priv,
}

impl RegId for Reg {
    fn from_raw_id(id: usize) -> Option<(Self, Option<NonZeroUsize>)> {
        let (r, size) = match id {
            0..=31 => (Reg::X(id as u8), 8),
            32 => (Reg::Pc, 8),
            33..=64 => (Reg::F((id - 33) as u8), 8),
            66 => (Reg::Fflags, 4),
            67 => (Reg::Frm, 4),
            68 => (Reg::Fcsr, 4),
            69 => (Reg::Priv, 8),
            _ => return None,
        };
        Some((r, NonZeroUsize::new(size)))
    }
}

impl Arch for Rv64 {
    type Usize = u64;
    type Registers = Regs;
    type BreakpointKind = usize;
    type RegId = Reg;

    fn target_description_xml() -> Option<&'static str> {
        Some(TARGET_XML)
    }
}

const TARGET_XML: &str = r#"<?xml version="1.0"?>
<!DOCTYPE target SYSTEM "gdb-target.dtd">
<target version="1.0">
<architecture>riscv:rv64</architecture>
<feature name="org.gnu.gdb.riscv.cpu">
<reg name="zero" bitsize="64" type="int" regnum="0"/>
<reg name="ra" bitsize="64" type="code_ptr"/>
<reg name="sp" bitsize="64" type="data_ptr"/>
<reg name="gp" bitsize="64" type="data_ptr"/>
<reg name="tp" bitsize="64" type="data_ptr"/>
<reg name="t0" bitsize="64" type="int"/>
<reg name="t1" bitsize="64" type="int"/>
<reg name="t2" bitsize="64" type="int"/>
<reg name="fp" bitsize="64" type="data_ptr"/>
<reg name="s1" bitsize="64" type="int"/>
<reg name="a0" bitsize="64" type="int"/>
<reg name="a1" bitsize="64" type="int"/>
<reg name="a2" bitsize="64" type="int"/>
<reg name="a3" bitsize="64" type="int"/>
<reg name="a4" bitsize="64" type="int"/>
<reg name="a5" bitsize="64" type="int"/>
<reg name="a6" bitsize="64" type="int"/>
<reg name="a7" bitsize="64" type="int"/>
<reg name="s2" bitsize="64" type="int"/>
<reg name="s3" bitsize="64" type="int"/>
<reg name="s4" bitsize="64" type="int"/>
<reg name="s5" bitsize="64" type="int"/>
<reg name="s6" bitsize="64" type="int"/>
<reg name="s7" bitsize="64" type="int"/>
<reg name="s8" bitsize="64" type="int"/>
<reg name="s9" bitsize="64" type="int"/>
<reg name="s10" bitsize="64" type="int"/>
<reg name="s11" bitsize="64" type="int"/>
<reg name="t3" bitsize="64" type="int"/>
<reg name="t4" bitsize="64" type="int"/>
<reg name="t5" bitsize="64" type="int"/>
<reg name="t6" bitsize="64" type="int"/>
<reg name="pc" bitsize="64" type="code_ptr"/>
</feature>
<feature name="org.gnu.gdb.riscv.fpu">
<union id="riscv_double">
<field name="float" type="ieee_single"/>
<field name="double" type="ieee_double"/>
</union>
<reg name="ft0" bitsize="64" type="riscv_double" regnum="33"/>
<reg name="ft1" bitsize="64" type="riscv_double"/>
<reg name="ft2" bitsize="64" type="riscv_double"/>
<reg name="ft3" bitsize="64" type="riscv_double"/>
<reg name="ft4" bitsize="64" type="riscv_double"/>
<reg name="ft5" bitsize="64" type="riscv_double"/>
<reg name="ft6" bitsize="64" type="riscv_double"/>
<reg name="ft7" bitsize="64" type="riscv_double"/>
<reg name="fs0" bitsize="64" type="riscv_double"/>
<reg name="fs1" bitsize="64" type="riscv_double"/>
<reg name="fa0" bitsize="64" type="riscv_double"/>
<reg name="fa1" bitsize="64" type="riscv_double"/>
<reg name="fa2" bitsize="64" type="riscv_double"/>
<reg name="fa3" bitsize="64" type="riscv_double"/>
<reg name="fa4" bitsize="64" type="riscv_double"/>
<reg name="fa5" bitsize="64" type="riscv_double"/>
<reg name="fa6" bitsize="64" type="riscv_double"/>
<reg name="fa7" bitsize="64" type="riscv_double"/>
<reg name="fs2" bitsize="64" type="riscv_double"/>
<reg name="fs3" bitsize="64" type="riscv_double"/>
<reg name="fs4" bitsize="64" type="riscv_double"/>
<reg name="fs5" bitsize="64" type="riscv_double"/>
<reg name="fs6" bitsize="64" type="riscv_double"/>
<reg name="fs7" bitsize="64" type="riscv_double"/>
<reg name="fs8" bitsize="64" type="riscv_double"/>
<reg name="fs9" bitsize="64" type="riscv_double"/>
<reg name="fs10" bitsize="64" type="riscv_double"/>
<reg name="fs11" bitsize="64" type="riscv_double"/>
<reg name="ft8" bitsize="64" type="riscv_double"/>
<reg name="ft9" bitsize="64" type="riscv_double"/>
<reg name="ft10" bitsize="64" type="riscv_double"/>
<reg name="ft11" bitsize="64" type="riscv_double"/>
<reg name="fflags" bitsize="32" type="int" regnum="66"/>
<reg name="frm" bitsize="32" type="int" regnum="67"/>
<reg name="fcsr" bitsize="32" type="int" regnum="68"/>
</feature>
<feature name="org.gnu.gdb.riscv.virtual">
<reg name="priv" bitsize="64" type="int" regnum="69"/>
</feature>
</target>
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_round_trip_through_the_g_packet_layout() {
        let mut r = Regs {
            pc: 0x8000_0010,
            fflags: 3,
            frm: 2,
            fcsr: 0x43,
            prv: 1,
            ..Regs::default()
        };
        r.x[10] = 42;
        r.f[31] = 0x4000_0000_0000_0000;
        let mut bytes = Vec::new();
        r.gdb_serialize(|b| bytes.push(b.unwrap()));
        assert_eq!(bytes.len(), 33 * 8 + 32 * 8 + 12 + 8);
        let mut back = Regs::default();
        back.gdb_deserialize(&bytes).unwrap();
        assert_eq!(back, r);
        assert!(back.gdb_deserialize(&bytes[..10]).is_err());
    }

    #[test]
    fn remote_numbers_match_the_description() {
        assert_eq!(Reg::from_raw_id(32).unwrap().0, Reg::Pc);
        assert_eq!(Reg::from_raw_id(33).unwrap().0, Reg::F(0));
        assert_eq!(Reg::from_raw_id(69).unwrap().0, Reg::Priv);
        assert!(Reg::from_raw_id(65).is_none());
        assert!(TARGET_XML.contains(r#"regnum="69""#));
    }
}
