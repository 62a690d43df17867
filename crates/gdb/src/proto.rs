//! The messages between the gdb thread (which speaks the remote protocol) and the machine's
//! thread (stopped inside [`rv64::Hart::run`], it does what the debugger asks).

use crate::arch::Regs;

/// What the gdb thread asks of the stopped machine.
#[derive(Debug)]
pub enum Req {
    /// The registers of a hart.
    ReadRegs(usize),
    /// Writes a hart's registers (only the stopped hart's can be written).
    WriteRegs(usize, Box<Regs>),
    /// Reads virtual memory as a hart sees it: as many bytes as are mapped from the start.
    ReadMem(usize, u64, usize),
    /// Writes virtual memory as a hart sees it.
    WriteMem(usize, u64, Vec<u8>),
    /// A breakpoint at a virtual address (checked against the pc before each instruction).
    AddBreak(u64),
    /// Removes one.
    RemoveBreak(u64),
    /// A `monitor` command, with the hart gdb has selected.
    Monitor(usize, String),
    /// Go on: every hart runs; `step` is the hart to stop after one step, if any.
    Resume {
        /// The hart to step.
        step: Option<usize>,
    },
    /// The debugger left: forget breakpoints and run freely.
    Detach,
    /// Back one step of this hart (a replay only).
    ReverseStep(usize),
    /// Back to the last breakpoint hit before this point (a replay only).
    ReverseCont,
}

/// The machine's answer.
#[derive(Debug)]
pub enum Reply {
    /// Registers.
    Regs(Box<Regs>),
    /// Bytes read (empty: nothing mapped at the start).
    Mem(Vec<u8>),
    /// Done or refused.
    Done(Result<(), String>),
    /// Text for the debugger's console.
    Text(String),
}

/// Why the machine stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// Stopped for the debugger's arrival or a Ctrl-C (gdb's SIGINT; SIGTRAP at the start).
    Signal(u8),
    /// A breakpoint.
    Break,
    /// A single step done.
    Step,
    /// Going back, the start of the replay was reached.
    Begin,
}

/// What the machine's thread tells the gdb thread.
#[derive(Debug)]
pub enum ToGdb {
    /// An answer to a [`Req`].
    Reply(Reply),
    /// The machine stopped: hart, reason.
    Stopped(usize, Why),
    /// The run ended (the replay reached the end of its log, or the guest powered off).
    Exited(u8),
}
