//! The harts' saved form in a snapshot's harts section. The state itself is `rv64`'s
//! ([`HartState`], with its CSRs, validated by `Hart::restore`); this is its encoding: `x0`–`x31`
//! and `f0`–`f31`, `pc`, privilege, 41 CSRs, `fflags`, `frm`, the hart's icount and
//! `mhartid`, WFI, the reservation, the interrupt lines.

use crate::codec::{CodecError, Dec, Enc};
use rv64::csr::Csrs;
use rv64::persist::HartState;

fn encode_csrs(e: &mut Enc, c: &Csrs) {
    for v in [
        c.mstatus,
        c.medeleg,
        c.mideleg,
        c.mie,
        c.mip,
        c.mtvec,
        c.mscratch,
        c.mepc,
        c.mcause,
        c.mtval,
        c.mcounteren,
        c.menvcfg,
        c.mcountinhibit,
        c.stvec,
        c.sscratch,
        c.sepc,
        c.scause,
        c.stval,
        c.scounteren,
        c.senvcfg,
        c.satp,
        c.mcycle_offset,
        c.minstret_offset,
    ] {
        e.u64(v);
    }
    c.pmpcfg.iter().for_each(|&v| e.u64(v));
    c.pmpaddr.iter().for_each(|&v| e.u64(v));
}

fn decode_csrs(d: &mut Dec) -> Result<Csrs, CodecError> {
    let mut c = Csrs::default();
    for r in [
        &mut c.mstatus,
        &mut c.medeleg,
        &mut c.mideleg,
        &mut c.mie,
        &mut c.mip,
        &mut c.mtvec,
        &mut c.mscratch,
        &mut c.mepc,
        &mut c.mcause,
        &mut c.mtval,
        &mut c.mcounteren,
        &mut c.menvcfg,
        &mut c.mcountinhibit,
        &mut c.stvec,
        &mut c.sscratch,
        &mut c.sepc,
        &mut c.scause,
        &mut c.stval,
        &mut c.scounteren,
        &mut c.senvcfg,
        &mut c.satp,
        &mut c.mcycle_offset,
        &mut c.minstret_offset,
    ] {
        *r = d.u64()?;
    }
    for r in c.pmpcfg.iter_mut().chain(c.pmpaddr.iter_mut()) {
        *r = d.u64()?;
    }
    Ok(c)
}

/// Writes a hart's state.
pub(crate) fn encode_hart(e: &mut Enc, s: &HartState) {
    s.x.iter().chain(&s.f).for_each(|&v| e.u64(v));
    e.u64(s.pc);
    e.u8(s.prv);
    encode_csrs(e, &s.csr);
    e.u8(s.fflags);
    e.u8(s.frm);
    e.u64(s.icount);
    e.u64(s.hartid);
    e.bool(s.wfi);
    e.bool(s.reservation.is_some());
    e.u64(s.reservation.unwrap_or(0));
    e.u64(s.irq_lines);
}

/// Reads what [`encode_hart`] wrote.
pub(crate) fn decode_hart(d: &mut Dec) -> Result<HartState, CodecError> {
    let mut s = HartState::default();
    for r in s.x.iter_mut().chain(s.f.iter_mut()) {
        *r = d.u64()?;
    }
    s.pc = d.u64()?;
    s.prv = d.u8()?;
    s.csr = decode_csrs(d)?;
    s.fflags = d.u8()?;
    s.frm = d.u8()?;
    s.icount = d.u64()?;
    s.hartid = d.u64()?;
    s.wfi = d.bool()?;
    let has_reservation = d.bool()?;
    let reservation = d.u64()?;
    s.reservation = has_reservation.then_some(reservation);
    s.irq_lines = d.u64()?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_encoding_round_trips_and_truncations_are_errors() {
        let mut s = HartState::default();
        s.x[5] = 0x1234;
        s.f[31] = 7;
        s.pc = 0x8000_0000;
        s.csr.satp = 0x8000_0000_0000_1234;
        s.csr.pmpaddr[15] = 3;
        s.reservation = Some(0x8000_1000);
        let mut e = Enc::default();
        encode_hart(&mut e, &s);
        let mut d = Dec {
            buf: &e.0,
            section: "harts",
        };
        let back = decode_hart(&mut d).unwrap();
        assert!(d.buf.is_empty());
        let mut e2 = Enc::default();
        encode_hart(&mut e2, &back);
        assert_eq!(e2.0, e.0);
        for n in [0, 1, e.0.len() / 2, e.0.len() - 1] {
            let mut d = Dec {
                buf: &e.0[..n],
                section: "harts",
            };
            assert!(decode_hart(&mut d).is_err(), "{n} bytes");
        }
    }
}
