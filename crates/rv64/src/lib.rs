//! The RV64GC processor of ftvm (RV64IMAFDC, Zicsr, Zifencei, Zicntr; M/S/U; Sv39/Sv48).
//!
//! This crate is a pure function of its inputs: it never does I/O, never spawns threads and never
//! reads a clock. A [`Hart`] executes against a [`Ram`] it shares with the board and a [`Bus`] that
//! the board implements for everything that is not RAM. The retired-instruction count
//! ([`Hart::icount`]) is the only clock, and [`Hart::run`] stops after exactly the number of
//! instructions it is asked for, which is what deterministic replay builds on.

pub mod bus;
pub mod csr;
pub mod debug;
pub mod decode;
pub mod engine;
mod exec;
pub mod fp;
pub mod hart;
#[cfg(target_arch = "x86_64")]
mod jit;
pub mod jitstats;
pub mod lockstep;
pub mod mmu;
pub mod persist;
pub mod ram;
pub mod trap;

pub use bus::Bus;
pub use engine::Engine;
pub use hart::{Exit, Hart, Priv};
pub use jitstats::JitStats;
pub use ram::Ram;
pub use trap::Trap;
