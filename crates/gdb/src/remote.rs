//! The gdb thread's side: a [`gdbstub`] target whose every operation is a request to the
//! machine's thread (stopped in [`crate::hook::Hook`]), and the event loop that waits for the
//! machine to stop while watching the connection for a Ctrl-C.

use crate::arch::{Regs, Rv64};
use crate::conn::Checked;
use crate::hook::Flags;
use crate::proto::{Reply, Req, ToGdb, Why};
use gdbstub::common::{Signal, Tid};
use gdbstub::conn::ConnectionExt;
use gdbstub::stub::run_blocking::{BlockingEventLoop, Event, WaitForStopReasonError};
use gdbstub::stub::MultiThreadStopReason;
use gdbstub::target::ext::base::multithread::{
    MultiThreadBase, MultiThreadResume, MultiThreadResumeOps, MultiThreadSchedulerLocking,
    MultiThreadSchedulerLockingOps, MultiThreadSingleStep, MultiThreadSingleStepOps,
};
use gdbstub::target::ext::base::reverse_exec::{
    ReplayLogPosition, ReverseCont, ReverseContOps, ReverseStep, ReverseStepOps,
};
use gdbstub::target::ext::base::BaseOps;
use gdbstub::target::ext::breakpoints::{
    Breakpoints, BreakpointsOps, SwBreakpoint, SwBreakpointOps,
};
use gdbstub::target::ext::monitor_cmd::{ConsoleOutput, MonitorCmd, MonitorCmdOps};
use gdbstub::target::{Target, TargetError, TargetResult};
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::Duration;

/// The target gdbstub drives.
pub struct Remote {
    to_machine: Sender<Req>,
    from_machine: Receiver<ToGdb>,
    flags: Arc<Flags>,
    harts: usize,
    /// The hart to step at the next resume.
    step: Option<usize>,
    /// The hart gdb last looked at (for monitor commands).
    current: usize,
    /// Whether the machine is a replay (gdb may go back).
    replay: bool,
}

fn tid(hart: usize) -> Tid {
    Tid::new(hart + 1).unwrap_or(Tid::new(1).expect("1 is not 0"))
}

impl Remote {
    /// The target for a machine with `harts` harts.
    pub fn new(
        to_machine: Sender<Req>,
        from_machine: Receiver<ToGdb>,
        flags: Arc<Flags>,
        harts: usize,
        replay: bool,
    ) -> Remote {
        Remote {
            to_machine,
            from_machine,
            flags,
            harts,
            step: None,
            current: 0,
            replay,
        }
    }

    fn hart(&mut self, t: Tid) -> Result<usize, TargetError<&'static str>> {
        let h = t.get() - 1;
        if h < self.harts {
            self.current = h;
            Ok(h)
        } else {
            Err(TargetError::NonFatal)
        }
    }

    /// Sends a request to the stopped machine and waits for its answer.
    fn ask(&mut self, req: Req) -> Result<Reply, &'static str> {
        self.to_machine
            .send(req)
            .map_err(|_| "the machine is gone")?;
        loop {
            match self.from_machine.recv() {
                Ok(ToGdb::Reply(r)) => return Ok(r),
                Ok(_) => continue,
                Err(_) => return Err("the machine is gone"),
            }
        }
    }

    /// The flags shared with the machine's thread.
    pub fn flags(&self) -> &Flags {
        &self.flags
    }

    /// Waits for the machine's first stop (it stops for the debugger's arrival).
    pub fn wait_first_stop(&mut self) -> Result<(), &'static str> {
        loop {
            match self.from_machine.recv() {
                Ok(ToGdb::Stopped(h, _)) => {
                    self.current = h;
                    return Ok(());
                }
                Ok(ToGdb::Exited(_)) | Err(_) => return Err("the run ended before gdb came"),
                Ok(ToGdb::Reply(_)) => continue,
            }
        }
    }

    /// Tells the machine to forget the debugger (it may be stopped, waiting for requests).
    pub fn detach(&mut self) {
        self.flags.detached.store(true, Ordering::SeqCst);
        let _ = self.to_machine.send(Req::Detach);
    }
}

impl Target for Remote {
    type Arch = Rv64;
    type Error = &'static str;

    fn base_ops(&mut self) -> BaseOps<'_, Rv64, &'static str> {
        BaseOps::MultiThread(self)
    }

    fn support_breakpoints(&mut self) -> Option<BreakpointsOps<'_, Self>> {
        Some(self)
    }

    fn support_monitor_cmd(&mut self) -> Option<MonitorCmdOps<'_, Self>> {
        Some(self)
    }

    // gdb must never fall back to writing `ebreak`s into guest memory.
    fn guard_rail_implicit_sw_breakpoints(&self) -> bool {
        true
    }
}

impl MultiThreadBase for Remote {
    fn read_registers(&mut self, regs: &mut Regs, t: Tid) -> TargetResult<(), Self> {
        let h = self.hart(t)?;
        match self.ask(Req::ReadRegs(h)).map_err(TargetError::Fatal)? {
            Reply::Regs(r) => {
                *regs = *r;
                Ok(())
            }
            _ => Err(TargetError::NonFatal),
        }
    }

    fn write_registers(&mut self, regs: &Regs, t: Tid) -> TargetResult<(), Self> {
        let h = self.hart(t)?;
        match self
            .ask(Req::WriteRegs(h, Box::new(regs.clone())))
            .map_err(TargetError::Fatal)?
        {
            Reply::Done(Ok(())) => Ok(()),
            _ => Err(TargetError::NonFatal),
        }
    }

    fn read_addrs(&mut self, start: u64, data: &mut [u8], t: Tid) -> TargetResult<usize, Self> {
        let h = self.hart(t)?;
        match self
            .ask(Req::ReadMem(h, start, data.len()))
            .map_err(TargetError::Fatal)?
        {
            Reply::Mem(bytes) if !bytes.is_empty() => {
                let n = bytes.len().min(data.len());
                data[..n].copy_from_slice(&bytes[..n]);
                Ok(n)
            }
            _ => Err(TargetError::NonFatal),
        }
    }

    fn write_addrs(&mut self, start: u64, data: &[u8], t: Tid) -> TargetResult<(), Self> {
        let h = self.hart(t)?;
        match self
            .ask(Req::WriteMem(h, start, data.to_vec()))
            .map_err(TargetError::Fatal)?
        {
            Reply::Done(Ok(())) => Ok(()),
            _ => Err(TargetError::NonFatal),
        }
    }

    fn list_active_threads(&mut self, f: &mut dyn FnMut(Tid)) -> Result<(), &'static str> {
        for h in 0..self.harts {
            f(tid(h));
        }
        Ok(())
    }

    fn support_resume(&mut self) -> Option<MultiThreadResumeOps<'_, Self>> {
        Some(self)
    }
}

impl MultiThreadResume for Remote {
    fn resume(&mut self) -> Result<(), &'static str> {
        let step = self.step.take();
        self.to_machine
            .send(Req::Resume { step })
            .map_err(|_| "the machine is gone")
    }

    fn clear_resume_actions(&mut self) -> Result<(), &'static str> {
        self.step = None;
        Ok(())
    }

    fn set_resume_action_continue(
        &mut self,
        _t: Tid,
        signal: Option<Signal>,
    ) -> Result<(), &'static str> {
        if signal.is_some() {
            return Err("a machine takes no signals");
        }
        Ok(())
    }

    fn support_single_step(&mut self) -> Option<MultiThreadSingleStepOps<'_, Self>> {
        Some(self)
    }

    fn support_scheduler_locking(&mut self) -> Option<MultiThreadSchedulerLockingOps<'_, Self>> {
        Some(self)
    }

    fn support_reverse_step(&mut self) -> Option<ReverseStepOps<'_, Tid, Self>> {
        if self.replay {
            Some(self)
        } else {
            None
        }
    }

    fn support_reverse_cont(&mut self) -> Option<ReverseContOps<'_, Tid, Self>> {
        if self.replay {
            Some(self)
        } else {
            None
        }
    }
}

impl ReverseStep<Tid> for Remote {
    fn reverse_step(&mut self, t: Tid) -> Result<(), &'static str> {
        let h = t.get() - 1;
        if h >= self.harts {
            return Err("no such hart");
        }
        self.to_machine
            .send(Req::ReverseStep(h))
            .map_err(|_| "the machine is gone")
    }
}

impl ReverseCont<Tid> for Remote {
    fn reverse_cont(&mut self) -> Result<(), &'static str> {
        self.to_machine
            .send(Req::ReverseCont)
            .map_err(|_| "the machine is gone")
    }
}

impl MultiThreadSchedulerLocking for Remote {
    /// gdb steps one thread "with the others stopped"; the harts' schedule is the recorded
    /// one and cannot change, so the others run their turns as they would have (a step still
    /// stops after one step of the stepped hart).
    fn set_resume_action_scheduler_lock(&mut self) -> Result<(), &'static str> {
        Ok(())
    }
}

impl MultiThreadSingleStep for Remote {
    fn set_resume_action_step(
        &mut self,
        t: Tid,
        signal: Option<Signal>,
    ) -> Result<(), &'static str> {
        if signal.is_some() {
            return Err("a machine takes no signals");
        }
        let h = t.get() - 1;
        if h >= self.harts {
            return Err("no such hart");
        }
        self.step = Some(h);
        Ok(())
    }
}

impl Breakpoints for Remote {
    fn support_sw_breakpoint(&mut self) -> Option<SwBreakpointOps<'_, Self>> {
        Some(self)
    }
}

impl SwBreakpoint for Remote {
    fn add_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        match self.ask(Req::AddBreak(addr)).map_err(TargetError::Fatal)? {
            Reply::Done(Ok(())) => Ok(true),
            _ => Err(TargetError::NonFatal),
        }
    }

    fn remove_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        match self
            .ask(Req::RemoveBreak(addr))
            .map_err(TargetError::Fatal)?
        {
            Reply::Done(Ok(())) => Ok(true),
            _ => Err(TargetError::NonFatal),
        }
    }
}

impl MonitorCmd for Remote {
    fn handle_monitor_cmd(
        &mut self,
        cmd: &[u8],
        mut out: ConsoleOutput<'_>,
    ) -> Result<(), &'static str> {
        let cmd = String::from_utf8_lossy(cmd).into_owned();
        let h = self.current;
        if let Reply::Text(t) = self.ask(Req::Monitor(h, cmd))? {
            out.write_raw(t.as_bytes());
        }
        Ok(())
    }
}

/// The event loop: the machine runs on its own thread; this one waits for its stop and for
/// bytes from gdb (a Ctrl-C) at once, polling the socket between waits on the channel.
pub enum Loop {}

impl BlockingEventLoop for Loop {
    type Target = Remote;
    type Connection = Checked;
    type StopReason = MultiThreadStopReason<u64>;

    #[allow(clippy::type_complexity)]
    fn wait_for_stop_reason(
        target: &mut Remote,
        conn: &mut Checked,
    ) -> Result<
        Event<MultiThreadStopReason<u64>>,
        WaitForStopReasonError<&'static str, std::io::Error>,
    > {
        loop {
            match target.from_machine.recv_timeout(Duration::from_millis(10)) {
                Ok(ToGdb::Stopped(h, why)) => {
                    target.current = h;
                    let t = tid(h);
                    return Ok(Event::TargetStopped(match why {
                        Why::Break => MultiThreadStopReason::SwBreak(t),
                        Why::Step => MultiThreadStopReason::SignalWithThread {
                            tid: t,
                            signal: Signal::SIGTRAP,
                        },
                        Why::Signal(s) => MultiThreadStopReason::SignalWithThread {
                            tid: t,
                            signal: Signal(s),
                        },
                        Why::Begin => MultiThreadStopReason::ReplayLog {
                            tid: Some(t),
                            pos: ReplayLogPosition::Begin,
                        },
                    }));
                }
                Ok(ToGdb::Exited(code)) => {
                    return Ok(Event::TargetStopped(MultiThreadStopReason::Exited(code)))
                }
                Ok(ToGdb::Reply(_)) => continue,
                Err(RecvTimeoutError::Disconnected) => {
                    return Ok(Event::TargetStopped(MultiThreadStopReason::Exited(0)))
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
            if conn
                .peek()
                .map_err(WaitForStopReasonError::Connection)?
                .is_some()
            {
                let byte = conn.read().map_err(WaitForStopReasonError::Connection)?;
                return Ok(Event::IncomingData(byte));
            }
        }
    }

    fn on_interrupt(
        target: &mut Remote,
    ) -> Result<Option<MultiThreadStopReason<u64>>, &'static str> {
        // The machine stops at its next instruction boundary and says so.
        target.flags.interrupt.store(true, Ordering::SeqCst);
        Ok(None)
    }
}

/// Runs one gdb session on `conn` until gdb detaches, kills, disconnects or the run ends.
pub fn session(
    conn: TcpStream,
    target: &mut Remote,
) -> Result<gdbstub::stub::DisconnectReason, String> {
    let stub = gdbstub::stub::GdbStub::new(Checked::new(conn));
    let r = stub.run_blocking::<Loop>(target);
    match r {
        Ok(reason) => Ok(reason),
        Err(e) => Err(e.to_string()),
    }
}
