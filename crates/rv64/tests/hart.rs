//! Hart-level behaviour that the rest of ftvm relies on: exact instruction budgets, coherent
//! self-modifying code, dirty-page tracking through the store fast path, and guest faults as traps.
//! Every test runs on both engines (`interp::*`, `jit::*`).

use rv64::bus::NoDevices;
use rv64::{Engine, Exit, Hart, Priv, Ram};
use std::cell::Cell;

thread_local! {
    /// The engine the current test runs on (each test runs on its own thread).
    static ENGINE: Cell<Engine> = const { Cell::new(Engine::Interp) };
}

const BASE: u64 = 0x8000_0000;

fn addi(rd: u32, rs1: u32, imm: i32) -> u32 {
    ((imm as u32 & 0xfff) << 20) | (rs1 << 15) | (rd << 7) | 0x13
}
fn jal(rd: u32, off: i32) -> u32 {
    let o = off as u32;
    (((o >> 20) & 1) << 31)
        | (((o >> 1) & 0x3ff) << 21)
        | (((o >> 11) & 1) << 20)
        | (((o >> 12) & 0xff) << 12)
        | (rd << 7)
        | 0x6f
}
fn sw(rs2: u32, rs1: u32, imm: i32) -> u32 {
    let i = imm as u32 & 0xfff;
    ((i >> 5) << 25) | (rs2 << 20) | (rs1 << 15) | (2 << 12) | ((i & 31) << 7) | 0x23
}
fn lui(rd: u32, imm20: u32) -> u32 {
    (imm20 << 12) | (rd << 7) | 0x37
}

fn load(ram: &mut Ram, at: u64, prog: &[u32]) {
    let bytes: Vec<u8> = prog.iter().flat_map(|w| w.to_le_bytes()).collect();
    ram.write(at, &bytes).unwrap();
}

fn setup(prog: &[u32]) -> (Hart, Ram) {
    let mut ram = Ram::new(BASE, 64 * 4096);
    load(&mut ram, BASE, prog);
    let mut h = Hart::new(0);
    h.set_engine(ENGINE.with(|e| e.get()));
    h.pc = BASE;
    (h, ram)
}

fn run_stops_after_exactly_the_budget_and_resumes() {
    let (mut h, mut ram) = setup(&[addi(1, 1, 1), jal(0, -4)]);
    assert_eq!(h.run(&mut ram, &mut NoDevices, 1001), Exit::Budget);
    assert_eq!(h.icount, 1001);
    assert_eq!(h.x[1], 501);
    for _ in 0..999 {
        h.run(&mut ram, &mut NoDevices, 1);
    }
    assert_eq!(h.icount, 2000);
    assert_eq!(h.x[1], 1000);
}

fn stores_over_cached_code_are_seen_by_the_next_fetch() {
    // x2 = address of the slot; the program runs the slot once, then overwrites it with
    // `addi x5, x0, 7` and runs it again.
    let slot = BASE + 0x100;
    let (mut h, mut ram) = setup(&[
        addi(0, 0, 0),        // 0: nop
        addi(0, 0, 0),        // 4: nop
        jal(1, 0x100 - 8),    // 8: call slot
        lui(6, 0),            // c: (x6 = 0)
        addi(6, 0, 0),        // 10
        sw(7, 2, 0),          // 14: overwrite slot with x7
        jal(1, 0x100 - 0x18), // 18: call slot again
        jal(0, 0),            // 1c: park
    ]);
    // slot: addi x5, x0, 1 ; jalr x0, 0(x1)
    load(&mut ram, slot, &[addi(5, 0, 1), 0x0000_8067]);
    h.x[7] = addi(5, 0, 7) as u64;
    h.x[2] = slot;
    h.run(&mut ram, &mut NoDevices, 4);
    assert_eq!(h.x[5], 1, "first call ran the original instruction");
    h.run(&mut ram, &mut NoDevices, 20);
    assert_eq!(h.x[5], 7, "second call ran the new instruction");
}

fn first_store_after_taking_dirty_pages_is_tracked() {
    // Store to the same data page over and over.
    let (mut h, mut ram) = setup(&[sw(0, 2, 0), jal(0, -4)]);
    h.x[2] = BASE + 10 * 4096;
    h.run(&mut ram, &mut NoDevices, 100);
    ram.take_dirty();
    assert!(!ram.is_dirty(10));
    h.run(&mut ram, &mut NoDevices, 100);
    assert_eq!(ram.take_dirty(), vec![10]);
}

fn illegal_instruction_traps_with_its_bits() {
    let (mut h, mut ram) = setup(&[0xffff_ffff, 0]);
    h.csr.mtvec = BASE + 0x40;
    h.run(&mut ram, &mut NoDevices, 1);
    assert_eq!(
        (h.csr.mcause, h.csr.mtval, h.csr.mepc, h.pc),
        (2, 0xffff_ffff, BASE, BASE + 0x40)
    );
    assert_eq!(h.prv, Priv::M);
}

fn fetch_outside_memory_is_an_access_fault_loop_not_a_panic() {
    let (mut h, mut ram) = setup(&[]);
    h.pc = 0x1234_5678;
    h.csr.mtvec = 0x10;
    assert_eq!(h.run(&mut ram, &mut NoDevices, 10_000), Exit::Budget);
    assert_eq!(h.csr.mcause, 1);
}

fn setting_a_mip_bit_does_not_latch_a_device_line() {
    // csrrs x0, mip, x5 with x5 = STIP, while the PLIC drives SEIP.
    let csrrs_mip = (0x344 << 20) | (5 << 15) | (2 << 12) | 0x73;
    let (mut h, mut ram) = setup(&[csrrs_mip, jal(0, 0)]);
    h.x[5] = 1 << 5;
    h.set_irq_lines(1 << 9);
    h.run(&mut ram, &mut NoDevices, 1);
    h.set_irq_lines(0);
    assert_eq!(
        h.mip(),
        1 << 5,
        "SEIP must drop with its line; STIP stays set"
    );
}

/// One `#[test]` per engine for each behaviour above.
macro_rules! on_both_engines {
    ($($name:ident),* $(,)?) => {
        mod interp {
            $(#[test]
            fn $name() {
                super::ENGINE.with(|e| e.set(rv64::Engine::Interp));
                super::$name();
            })*
        }
        mod jit {
            $(#[test]
            fn $name() {
                super::ENGINE.with(|e| e.set(rv64::Engine::Jit));
                super::$name();
            })*
        }
    };
}

on_both_engines!(
    run_stops_after_exactly_the_budget_and_resumes,
    stores_over_cached_code_are_seen_by_the_next_fetch,
    first_store_after_taking_dirty_pages_is_tracked,
    illegal_instruction_traps_with_its_bits,
    fetch_outside_memory_is_an_access_fault_loop_not_a_panic,
    setting_a_mip_bit_does_not_latch_a_device_line
);
