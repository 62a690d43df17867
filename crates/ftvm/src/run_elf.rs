//! `ftvm run-elf`: run a bare-metal ELF on one hart and report the HTIF `tohost` verdict.
//!
//! This is the ISA-test machine, not the virt board: RAM at 0x8000_0000, plus at the virt board's
//! addresses just what bare-metal tests use — the sifive,test0 exit device (so the same binary can
//! end QEMU), a CLINT (software and timer interrupts) and a write-only 16550 transmitter.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use rv64::{Bus, Exit, Hart, Ram};
use thiserror::Error;

const RAM_BASE: u64 = 0x8000_0000;
const SYSCON: u64 = 0x10_0000;
const CLINT: u64 = 0x200_0000;
const CLINT_SIZE: u64 = 0x1_0000;
const UART: u64 = 0x1000_0000;
/// Guest steps per `mtime` tick (nominal 100 MIPS against a 10 MHz timebase).
const STEPS_PER_TICK: u64 = 10;

/// Options of `ftvm run-elf`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The bare-metal RISC-V ELF to run.
    pub file: PathBuf,
    /// Stop with an error after this many instructions.
    #[arg(long, default_value_t = 2_000_000_000)]
    pub max_instructions: u64,
    /// RAM size in MiB (1 to 4096).
    #[arg(long, default_value_t = 256)]
    pub mem_mib: u64,
    /// Print the instruction count, time and speed to stderr at the end.
    #[arg(long)]
    pub stats: bool,
}

/// What can go wrong before or while running the program (the program's own failure is not an
/// error: it is a verdict).
#[derive(Debug, Error)]
pub enum RunElfError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a usable ELF.
    #[error("{0}: not a valid ELF file: {1}")]
    BadElf(PathBuf, String),
    /// The ELF is for another machine.
    #[error("{0}: not a 64-bit little-endian RISC-V ELF")]
    NotRiscv(PathBuf),
    /// A loadable segment does not fit in RAM.
    #[error(
        "{path}: segment at {addr:#x} (+{size:#x} bytes) lies outside RAM {base:#x}..{end:#x}"
    )]
    OutsideRam {
        /// The file.
        path: PathBuf,
        /// Segment physical address.
        addr: u64,
        /// Segment size in memory.
        size: u64,
        /// RAM start.
        base: u64,
        /// RAM end.
        end: u64,
    },
    /// No `tohost` symbol.
    #[error("{0}: no `tohost` symbol (the program cannot report a result)")]
    NoTohost(PathBuf),
    /// Bad RAM size.
    #[error("--mem-mib must be between 1 and 4096")]
    BadMem,
    /// The budget ran out.
    #[error("no verdict after {0} instructions (--max-instructions); pc = {1:#x}")]
    TooLong(u64, u64),
    /// The hart waits for an interrupt that can never come.
    #[error("the hart waits for an interrupt (WFI) that can never come; pc = {0:#x}")]
    Deadlock(u64),
    /// `tohost` held a request this machine does not serve.
    #[error("unsupported HTIF request {0:#x} in tohost")]
    Htif(u64),
}

/// The run-elf board.
struct TestBus {
    msip: bool,
    mtimecmp: u64,
    exit: Option<u32>,
    out: std::io::Stdout,
}

impl TestBus {
    fn lines(&self, icount: u64) -> u64 {
        let mut l = 0;
        if self.msip {
            l |= 1 << 3;
        }
        if icount / STEPS_PER_TICK >= self.mtimecmp {
            l |= 1 << 7;
        }
        l
    }
}

impl Bus for TestBus {
    fn read(&mut self, _hart: usize, icount: u64, paddr: u64, size: u8) -> Option<u64> {
        match paddr {
            SYSCON => Some(0),
            a if (CLINT..CLINT + CLINT_SIZE).contains(&a) => {
                let off = a - CLINT;
                let (reg, shift) = match off {
                    0..=3 => (self.msip as u64, (off * 8)),
                    0x4000..=0x4007 => (self.mtimecmp, (off - 0x4000) * 8),
                    0xbff8..=0xbfff => (icount / STEPS_PER_TICK, (off - 0xbff8) * 8),
                    _ => (0, 0),
                };
                Some(mask(reg >> shift, size))
            }
            a if (UART..UART + 8).contains(&a) => Some(if a == UART + 5 { 0x60 } else { 0 }),
            _ => None,
        }
    }

    fn write(&mut self, _hart: usize, _icount: u64, paddr: u64, size: u8, val: u64) -> bool {
        match paddr {
            SYSCON => {
                self.exit = Some(val as u32);
                true
            }
            a if (CLINT..CLINT + CLINT_SIZE).contains(&a) => {
                let off = a - CLINT;
                match off {
                    0 => self.msip = val & 1 != 0,
                    0x4000..=0x4007 => {
                        let shift = (off - 0x4000) * 8;
                        let m = mask(u64::MAX, size) << shift;
                        self.mtimecmp = (self.mtimecmp & !m) | ((val << shift) & m);
                    }
                    _ => {}
                }
                true
            }
            UART => {
                let _ = self.out.write_all(&[val as u8]);
                true
            }
            a if (UART + 1..UART + 8).contains(&a) => true,
            _ => false,
        }
    }

    fn mtime(&mut self, _hart: usize, icount: u64) -> u64 {
        icount / STEPS_PER_TICK
    }
}

fn mask(v: u64, size: u8) -> u64 {
    if size >= 8 {
        v
    } else {
        v & ((1u64 << (size * 8)) - 1)
    }
}

/// The verdict of a run.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// tohost = 1.
    Pass,
    /// tohost = (n << 1) | 1.
    Fail(u64),
}

/// Loads and runs `a.file`; returns the verdict and the instruction count.
pub fn run(a: &Args) -> Result<(Verdict, u64), RunElfError> {
    let path = &a.file;
    if a.mem_mib == 0 || a.mem_mib > 4096 {
        return Err(RunElfError::BadMem);
    }
    let bytes = std::fs::read(path).map_err(|source| RunElfError::Read {
        path: path.clone(),
        source,
    })?;
    let elf = goblin::elf::Elf::parse(&bytes)
        .map_err(|e| RunElfError::BadElf(path.clone(), e.to_string()))?;
    if !elf.is_64 || !elf.little_endian || elf.header.e_machine != goblin::elf::header::EM_RISCV {
        return Err(RunElfError::NotRiscv(path.clone()));
    }
    let size = a.mem_mib << 20;
    let mut ram = Ram::new(RAM_BASE, size as usize);
    for ph in elf
        .program_headers
        .iter()
        .filter(|p| p.p_type == goblin::elf::program_header::PT_LOAD)
    {
        let outside = || RunElfError::OutsideRam {
            path: path.clone(),
            addr: ph.p_paddr,
            size: ph.p_memsz,
            base: RAM_BASE,
            end: RAM_BASE + size,
        };
        if ph.p_filesz > ph.p_memsz || ram.offset(ph.p_paddr, ph.p_memsz).is_none() {
            return Err(outside());
        }
        let start = ph.p_offset as usize;
        let data = start
            .checked_add(ph.p_filesz as usize)
            .and_then(|end| bytes.get(start..end))
            .ok_or_else(|| {
                RunElfError::BadElf(
                    path.clone(),
                    "segment extends past the end of the file".into(),
                )
            })?;
        ram.write(ph.p_paddr, data).ok_or_else(outside)?;
    }
    let tohost = elf
        .syms
        .iter()
        .find(|s| elf.strtab.get_at(s.st_name) == Some("tohost"))
        .map(|s| s.st_value)
        .filter(|&v| ram.offset(v, 8).is_some())
        .ok_or_else(|| RunElfError::NoTohost(path.clone()))?;

    let mut hart = Hart::new(0);
    hart.set_engine(crate::engine());
    hart.pc = elf.entry;
    let mut bus = TestBus {
        msip: false,
        mtimecmp: u64::MAX,
        exit: None,
        out: std::io::stdout(),
    };
    const SLICE: u64 = 100_000;
    loop {
        hart.set_irq_lines(bus.lines(hart.icount));
        let left = a.max_instructions.saturating_sub(hart.icount);
        if left == 0 {
            return Err(RunElfError::TooLong(a.max_instructions, hart.pc));
        }
        // Stop exactly when the timer fires, so its interrupt is taken at a deterministic point.
        let timer_at = bus.mtimecmp.saturating_mul(STEPS_PER_TICK);
        let mut budget = left.min(SLICE);
        if timer_at > hart.icount {
            budget = budget.min(timer_at - hart.icount);
        }
        let exit = hart.run(&mut ram, &mut bus, budget);
        let _ = bus.out.flush();
        let v = ram.read_u64(tohost).unwrap_or(0);
        if v != 0 {
            if v == 1 {
                JIT_STATS.with(|c| c.set(hart.jit_stats()));
                return Ok((Verdict::Pass, hart.icount));
            } else if v & 1 == 1 {
                JIT_STATS.with(|c| c.set(hart.jit_stats()));
                return Ok((Verdict::Fail(v >> 1), hart.icount));
            } else if v >> 48 == 0x0101 {
                // Device 1 (console), command 1 (putchar), as in the riscv-tests' HTIF.
                let _ = bus.out.write_all(&[v as u8]);
                ram.write(tohost, &0u64.to_le_bytes());
            } else {
                return Err(RunElfError::Htif(v));
            }
        }
        if let Some(code) = bus.exit {
            return Ok(match code & 0xffff {
                0x5555 => (Verdict::Pass, hart.icount),
                _ => (Verdict::Fail((code >> 16) as u64), hart.icount),
            });
        }
        if exit == Exit::Wfi {
            let lines = bus.lines(hart.icount);
            hart.set_irq_lines(lines);
            if hart.mip() & hart.csr.mie != 0 {
                continue;
            }
            // Idle: skip to the timer, if it is armed and enabled; else nothing can wake us.
            if bus.mtimecmp != u64::MAX && hart.csr.mie & (1 << 7) != 0 && timer_at > hart.icount {
                hart.icount = timer_at.min(a.max_instructions);
                continue;
            }
            return Err(RunElfError::Deadlock(hart.pc));
        }
    }
}

thread_local! {
    /// The translating engine's statistics of the last [`run`] on this thread (for `--stats`).
    static JIT_STATS: std::cell::Cell<Option<rv64::JitStats>> = const { std::cell::Cell::new(None) };
}

/// Runs the command; returns the process exit code.
pub fn main(a: Args) -> i32 {
    let start = Instant::now();
    match run(&a) {
        Ok((verdict, icount)) => {
            if a.stats {
                let secs = start.elapsed().as_secs_f64();
                eprintln!(
                    "ftvm: icount={icount} seconds={secs:.3} mips={:.1}",
                    icount as f64 / secs / 1e6
                );
                if let Some(j) = JIT_STATS.with(|c| c.get()) {
                    eprintln!(
                        "ftvm: jit blocks={} insns={} code_bytes={} translate_ms={:.1} flushes={} block_runs={}",
                        j.blocks,
                        j.insns,
                        j.code_bytes,
                        j.translate_ns as f64 / 1e6,
                        j.flushes,
                        j.runs
                    );
                }
            }
            match verdict {
                Verdict::Pass => 0,
                Verdict::Fail(n) => {
                    println!("FAIL: test {n}");
                    eprintln!("ftvm: {}: failed test {n}", a.file.display());
                    1
                }
            }
        }
        Err(e) => {
            eprintln!("ftvm: {e}");
            2
        }
    }
}
