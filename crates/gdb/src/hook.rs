//! The machine's side of the stub: the [`rv64::debug::DebugHook`] that decides, between two
//! instructions, whether the machine stops, and while it is stopped does what the gdb thread
//! asks (registers, memory, breakpoints, monitor commands) until gdb resumes it.
//!
//! Breakpoints are pcs checked before each instruction, never `ebreak`s written into guest
//! memory: a patched page would change the dirty-page record, the RAM digests a replay checks
//! and the guest's own reads of its code.

use crate::arch::Regs;
use crate::proto::{Reply, Req, ToGdb, Why};
use rv64::debug::{At, DebugHook, Plan};
use rv64::{Hart, Priv, Ram};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;

/// Flags the gdb thread sets while the machine runs.
#[derive(Debug, Default)]
pub struct Flags {
    /// Stop at the next instruction boundary (Ctrl-C, the debugger's arrival).
    pub interrupt: AtomicBool,
    /// The debugger is gone: run freely.
    pub detached: AtomicBool,
    /// A client connected.
    pub connected: AtomicBool,
}

/// What gdb needs of a hart that is not the one stopped: copied when it left its last run call.
#[derive(Debug, Clone)]
pub struct HartView {
    regs: Regs,
    satp: u64,
    mstatus: u64,
    prv: Priv,
    icount: u64,
}

impl HartView {
    /// A copy of `h`'s state.
    pub fn of(h: &Hart) -> HartView {
        HartView {
            regs: regs_of(h),
            satp: h.csr.satp,
            mstatus: h.csr.mstatus,
            prv: h.prv,
            icount: h.icount,
        }
    }
}

fn regs_of(h: &Hart) -> Regs {
    let mut x = [0u64; 32];
    x.copy_from_slice(&h.x[..32]);
    x[0] = 0;
    Regs {
        x,
        pc: h.pc,
        f: h.f,
        fflags: h.fflags.into(),
        frm: h.frm.into(),
        fcsr: (u32::from(h.frm) << 5) | u32::from(h.fflags),
        prv: h.prv as u64,
    }
}

/// The payload of the unwind that abandons a replay pass to travel back in time (see
/// `Stub::is_travel`): the replay starts again from its beginning and the hook stops
/// it at the goal.
#[derive(Debug)]
pub struct Travel;

/// Where a replay pass must stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Goal {
    /// When `hart` stands at `icount` (or at its first instruction of the pass, if later).
    Reach { hart: usize, icount: u64, why: Why },
    /// Note every breakpoint hit until `hart` stands at `icount` (the point gdb went back
    /// from), then travel to the last one.
    Search { hart: usize, icount: u64 },
}

/// The hook.
pub struct Hook {
    to_gdb: Sender<ToGdb>,
    from_gdb: Receiver<Req>,
    flags: Arc<Flags>,
    breaks: BTreeSet<u64>,
    /// The hart being single-stepped and its icount when it was resumed.
    step: Option<(usize, u64)>,
    /// Where the machine was resumed (hart, icount): a breakpoint there is not hit again.
    resumed: Option<(usize, u64)>,
    views: Vec<HartView>,
    /// Whether gdb wrote memory or registers (a replay is no longer exact).
    wrote: bool,
    /// Whether the first stop was reported (it is SIGTRAP; Ctrl-C later is SIGINT).
    started: bool,
    /// Whether the machine is a replay (which can go back).
    replay: bool,
    /// Where the current replay pass stops, if it was started to go back.
    goal: Option<Goal>,
    /// Breakpoint hits (hart, icount) of a search pass, in execution order.
    hits: Vec<(usize, u64)>,
}

impl Hook {
    /// A hook for a machine whose harts are `harts` now.
    pub fn new(
        to_gdb: Sender<ToGdb>,
        from_gdb: Receiver<Req>,
        flags: Arc<Flags>,
        harts: &[Hart],
        replay: bool,
    ) -> Hook {
        Hook {
            to_gdb,
            from_gdb,
            flags,
            breaks: BTreeSet::new(),
            step: None,
            resumed: None,
            views: harts.iter().map(HartView::of).collect(),
            wrote: false,
            started: false,
            replay,
            goal: None,
            hits: Vec::new(),
        }
    }

    fn detach(&mut self) {
        self.breaks.clear();
        self.step = None;
        self.flags.detached.store(true, Ordering::SeqCst);
    }

    /// Serves the gdb thread while `hart` is stopped; returns when gdb resumes or leaves.
    fn serve(&mut self, hart: &mut Hart, ram: &mut Ram, at: At, why: Why) {
        let h = hart.hartid;
        if let Some(v) = self.views.get_mut(h) {
            *v = HartView::of(hart);
        }
        self.started = true;
        let _ = at;
        if self.to_gdb.send(ToGdb::Stopped(h, why)).is_err() {
            self.detach();
            return;
        }
        loop {
            let Ok(req) = self.from_gdb.recv() else {
                self.detach();
                return;
            };
            let reply = match req {
                Req::ReadRegs(t) => match self.view(hart, t) {
                    Some(v) => Reply::Regs(Box::new(v.regs)),
                    None => Reply::Done(Err(format!("no hart {t}"))),
                },
                Req::WriteRegs(t, r) => Reply::Done(if t == h {
                    self.wrote_state("registers");
                    hart.x[1..32].copy_from_slice(&r.x[1..]);
                    hart.pc = r.pc;
                    hart.f = r.f;
                    let (fflags, frm) = if r.fcsr != (r.frm << 5 | r.fflags) {
                        (r.fcsr & 0x1f, (r.fcsr >> 5) & 7)
                    } else {
                        (r.fflags & 0x1f, r.frm & 7)
                    };
                    hart.fflags = fflags as u8;
                    hart.frm = frm as u8;
                    Ok(())
                } else {
                    Err("only the registers of the hart that stopped can be written".into())
                }),
                Req::ReadMem(t, addr, len) => match self.view(hart, t) {
                    Some(v) => Reply::Mem(read_virt(ram, &v, addr, len)),
                    None => Reply::Mem(Vec::new()),
                },
                Req::WriteMem(t, addr, data) => {
                    let r = match self.view(hart, t) {
                        Some(v) => write_virt(ram, &v, addr, &data),
                        None => Err(format!("no hart {t}")),
                    };
                    if r.is_ok() {
                        self.wrote_state("memory");
                        hart.flush_tlb();
                    }
                    Reply::Done(r)
                }
                Req::AddBreak(addr) => Reply::Done(self.add_break(hart, ram, addr)),
                Req::RemoveBreak(addr) => {
                    self.breaks.remove(&addr);
                    Reply::Done(Ok(()))
                }
                Req::Monitor(t, cmd) => Reply::Text(self.monitor(hart, ram, at, t, &cmd)),
                Req::Resume { step } => {
                    self.step = step.and_then(|s| Some((s, self.view(hart, s)?.icount)));
                    self.resumed = Some((h, hart.icount));
                    return;
                }
                Req::Detach => {
                    self.detach();
                    return;
                }
                Req::ReverseStep(t) if self.replay => {
                    let Some(v) = self.view(hart, t) else {
                        let _ = self
                            .to_gdb
                            .send(ToGdb::Reply(Reply::Done(Err("no hart".into()))));
                        continue;
                    };
                    self.goal = Some(Goal::Reach {
                        hart: t,
                        icount: v.icount.saturating_sub(1),
                        why: if v.icount == 0 { Why::Begin } else { Why::Step },
                    });
                    std::panic::resume_unwind(Box::new(Travel));
                }
                Req::ReverseCont if self.replay => {
                    self.goal = Some(Goal::Search {
                        hart: h,
                        icount: hart.icount,
                    });
                    self.hits.clear();
                    std::panic::resume_unwind(Box::new(Travel));
                }
                Req::ReverseStep(_) | Req::ReverseCont => {
                    Reply::Done(Err("only a replay can go back".into()))
                }
            };
            if self.to_gdb.send(ToGdb::Reply(reply)).is_err() {
                self.detach();
                return;
            }
        }
    }

    /// Hart `t`'s state: the stopped hart's own, another's as it left its last run call.
    fn view(&self, hart: &Hart, t: usize) -> Option<HartView> {
        if t == hart.hartid {
            Some(HartView::of(hart))
        } else {
            self.views.get(t).cloned()
        }
    }

    fn wrote_state(&mut self, what: &str) {
        if !self.wrote {
            self.wrote = true;
            eprintln!(
                "ftvm gdb: the debugger wrote {what}: from here on the run is no longer the \
                 recorded one (a replay's next state digest will differ)"
            );
        }
    }

    fn add_break(&mut self, hart: &Hart, ram: &Ram, addr: u64) -> Result<(), String> {
        // A breakpoint is a pc, matched virtually: an address not mapped now (a kernel address
        // while the firmware runs) is fine. One that is mapped to a device register is not code.
        if let Some(pa) = hart.debug_translate(ram, addr) {
            let in_ram = pa.wrapping_sub(ram.base()) < ram.size();
            let rom = (0x1000..0x2000).contains(&pa);
            if !in_ram && !rom && pa < ram.base() {
                return Err(format!(
                    "{addr:#x} is the device address {pa:#x}: no code runs there"
                ));
            }
        }
        self.breaks.insert(addr);
        Ok(())
    }

    fn monitor(&self, hart: &Hart, ram: &Ram, at: At, t: usize, cmd: &str) -> String {
        let words: Vec<&str> = cmd.split_whitespace().collect();
        let num = |s: &str| -> Option<u64> {
            match s.strip_prefix("0x") {
                Some(h) => u64::from_str_radix(h, 16).ok(),
                None => s.parse().ok(),
            }
        };
        let Some(v) = self.view(hart, t) else {
            return format!("no hart {t}\n");
        };
        match words.as_slice() {
            ["icount"] => {
                let clock = match at.clock {
                    Some(c) if t == hart.hartid => format!("machine icount {c}, "),
                    _ => String::new(),
                };
                format!("{clock}hart {t} icount {}\n", v.icount)
            }
            ["priv"] => format!(
                "hart {t}: {}\n",
                match v.prv {
                    Priv::M => "M (machine)",
                    Priv::S => "S (supervisor)",
                    Priv::U => "U (user)",
                }
            ),
            ["translate", a] => match num(a) {
                Some(a) => match rv64::debug::translate(ram, v.satp, v.mstatus, v.prv, a) {
                    Some(pa) => format!("{a:#x} -> physical {pa:#x}\n"),
                    None => format!("{a:#x} is not mapped\n"),
                },
                None => "usage: monitor translate VADDR\n".into(),
            },
            ["phys", a, rest @ ..] => {
                let len = rest.first().and_then(|l| num(l)).unwrap_or(16).min(4096);
                match num(a) {
                    Some(a) => {
                        let mut buf = vec![0u8; len as usize];
                        match ram.read(a, &mut buf) {
                            Some(()) => hexdump(a, &buf),
                            None => format!("{a:#x}+{len} is not in RAM\n"),
                        }
                    }
                    None => "usage: monitor phys PADDR [LEN]\n".into(),
                }
            }
            _ => "ftvm monitor commands:\n  icount              the machine's and this hart's \
                  instruction counts\n  priv                this hart's privilege level\n  \
                  translate VADDR     this hart's translation of VADDR\n  phys PADDR [LEN]    \
                  a dump of physical memory\n"
                .into(),
        }
    }
}

fn hexdump(addr: u64, bytes: &[u8]) -> String {
    let mut s = String::new();
    for (i, line) in bytes.chunks(16).enumerate() {
        s.push_str(&format!("{:#018x}:", addr + 16 * i as u64));
        for b in line {
            s.push_str(&format!(" {b:02x}"));
        }
        s.push('\n');
    }
    s
}

/// Reads `len` bytes at `addr` as hart view `v` translates them, page by page; stops at the
/// first byte not in RAM.
fn read_virt(ram: &Ram, v: &HartView, addr: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let va = addr.wrapping_add(out.len() as u64);
        let n = (0x1000 - (va & 0xfff) as usize).min(len - out.len());
        let Some(pa) = rv64::debug::translate(ram, v.satp, v.mstatus, v.prv, va) else {
            break;
        };
        let mut buf = vec![0u8; n];
        if ram.read(pa, &mut buf).is_none() {
            break;
        }
        out.extend_from_slice(&buf);
    }
    out
}

fn write_virt(ram: &mut Ram, v: &HartView, addr: u64, data: &[u8]) -> Result<(), String> {
    // Translate every page first, so that a refused write writes nothing.
    let mut pieces = Vec::new();
    let mut done = 0;
    while done < data.len() {
        let va = addr.wrapping_add(done as u64);
        let n = (0x1000 - (va & 0xfff) as usize).min(data.len() - done);
        let pa = rv64::debug::translate(ram, v.satp, v.mstatus, v.prv, va)
            .filter(|pa| ram.offset(*pa, n as u64).is_some())
            .ok_or_else(|| format!("{va:#x} is not mapped to RAM"))?;
        pieces.push((pa, done, n));
        done += n;
    }
    for (pa, at, n) in pieces {
        ram.write(pa, &data[at..at + n])
            .ok_or_else(|| format!("{pa:#x} is not in RAM"))?;
    }
    Ok(())
}

impl Hook {
    /// How hart `h` runs until the next check.
    fn plan(&self, h: usize) -> Plan {
        if self.flags.detached.load(Ordering::Relaxed) {
            return Plan::Free;
        }
        let stepping = self.step.is_some_and(|(s, _)| s == h);
        if stepping || !self.breaks.is_empty() {
            Plan::Steps(1)
        } else {
            Plan::Free
        }
    }
}

impl DebugHook for Hook {
    fn before(&mut self, hart: &mut Hart, ram: &mut Ram, at: At) -> Plan {
        if self.flags.detached.load(Ordering::Relaxed) {
            return Plan::Free;
        }
        let h = hart.hartid;
        match self.goal {
            Some(Goal::Reach {
                hart: gh,
                icount,
                why,
            }) => {
                if h != gh {
                    return Plan::Free;
                }
                if hart.icount < icount {
                    // On the hart's engine, exactly up to the goal.
                    return Plan::Steps(icount - hart.icount);
                }
                self.goal = None;
                self.step = None;
                let why = if hart.icount > icount {
                    Why::Begin
                } else {
                    why
                };
                self.serve(hart, ram, at, why);
                return self.plan(h);
            }
            Some(Goal::Search { hart: gh, icount }) => {
                if h == gh && hart.icount >= icount {
                    self.goal = Some(match self.hits.last() {
                        Some(&(th, ti)) => Goal::Reach {
                            hart: th,
                            icount: ti,
                            why: Why::Break,
                        },
                        None => Goal::Reach {
                            hart: gh,
                            icount: 0,
                            why: Why::Begin,
                        },
                    });
                    self.hits.clear();
                    std::panic::resume_unwind(Box::new(Travel));
                }
                if self.breaks.contains(&hart.pc) {
                    self.hits.push((h, hart.icount));
                }
                return Plan::Steps(1);
            }
            None => {}
        }
        let why = if self.flags.interrupt.swap(false, Ordering::SeqCst) {
            Some(Why::Signal(if self.started { 2 } else { 5 }))
        } else if self
            .step
            .is_some_and(|(s, from)| s == h && hart.icount != from)
        {
            Some(Why::Step)
        } else if self.breaks.contains(&hart.pc) && self.resumed != Some((h, hart.icount)) {
            Some(Why::Break)
        } else {
            None
        };
        if let Some(why) = why {
            self.step = None;
            self.serve(hart, ram, at, why);
            if self.flags.detached.load(Ordering::Relaxed) {
                return Plan::Free;
            }
        }
        self.plan(h)
    }

    fn leave(&mut self, hart: &Hart) {
        if let Some(v) = self.views.get_mut(hart.hartid) {
            *v = HartView::of(hart);
        }
    }
}
