//! Synchronous exceptions and interrupts, as values: a guest's fault is never a Rust error.

/// An exception raised by an instruction, with its `xtval` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trap {
    /// Cause 0.
    InstructionAddressMisaligned(u64),
    /// Cause 1.
    InstructionAccessFault(u64),
    /// Cause 2; the value is the instruction bits (or 0).
    IllegalInstruction(u64),
    /// Cause 3.
    Breakpoint(u64),
    /// Cause 4.
    LoadAddressMisaligned(u64),
    /// Cause 5.
    LoadAccessFault(u64),
    /// Cause 6.
    StoreAddressMisaligned(u64),
    /// Cause 7.
    StoreAccessFault(u64),
    /// Cause 8.
    EcallFromU,
    /// Cause 9.
    EcallFromS,
    /// Cause 11.
    EcallFromM,
    /// Cause 12.
    InstructionPageFault(u64),
    /// Cause 13.
    LoadPageFault(u64),
    /// Cause 15.
    StorePageFault(u64),
}

impl Trap {
    /// The `xcause` exception code.
    pub fn cause(self) -> u64 {
        match self {
            Trap::InstructionAddressMisaligned(_) => 0,
            Trap::InstructionAccessFault(_) => 1,
            Trap::IllegalInstruction(_) => 2,
            Trap::Breakpoint(_) => 3,
            Trap::LoadAddressMisaligned(_) => 4,
            Trap::LoadAccessFault(_) => 5,
            Trap::StoreAddressMisaligned(_) => 6,
            Trap::StoreAccessFault(_) => 7,
            Trap::EcallFromU => 8,
            Trap::EcallFromS => 9,
            Trap::EcallFromM => 11,
            Trap::InstructionPageFault(_) => 12,
            Trap::LoadPageFault(_) => 13,
            Trap::StorePageFault(_) => 15,
        }
    }

    /// The `xtval` value.
    pub fn tval(self) -> u64 {
        match self {
            Trap::InstructionAddressMisaligned(v)
            | Trap::InstructionAccessFault(v)
            | Trap::IllegalInstruction(v)
            | Trap::Breakpoint(v)
            | Trap::LoadAddressMisaligned(v)
            | Trap::LoadAccessFault(v)
            | Trap::StoreAddressMisaligned(v)
            | Trap::StoreAccessFault(v)
            | Trap::InstructionPageFault(v)
            | Trap::LoadPageFault(v)
            | Trap::StorePageFault(v) => v,
            Trap::EcallFromU | Trap::EcallFromS | Trap::EcallFromM => 0,
        }
    }
}

/// Interrupt cause numbers (bit positions in `mip`/`mie`).
pub mod irq {
    /// Supervisor software interrupt.
    pub const SSI: u64 = 1;
    /// Machine software interrupt.
    pub const MSI: u64 = 3;
    /// Supervisor timer interrupt.
    pub const STI: u64 = 5;
    /// Machine timer interrupt.
    pub const MTI: u64 = 7;
    /// Supervisor external interrupt.
    pub const SEI: u64 = 9;
    /// Machine external interrupt.
    pub const MEI: u64 = 11;
}
