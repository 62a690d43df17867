//! ftvm's gdb remote stub: `ftvm run --gdb HOST:PORT` and `ftvm replay LOG --gdb HOST:PORT`
//! let one gdb client (`target remote HOST:PORT`) stop the machine, read and write its
//! registers and memory (by virtual address, through the stopped hart's page tables), set
//! breakpoints, single-step, continue and interrupt it; harts are gdb threads.
//!
//! Two threads: the machine keeps its own (the run or replay loop, unchanged); a stop happens
//! *inside* [`rv64::Hart::run`], where [`hook::Hook`] keeps that thread and answers the gdb
//! thread's requests until gdb resumes (see [`rv64::debug`] for why a stop must not cut a run
//! call). The gdb thread ([`remote`]) speaks the protocol with [`gdbstub`]. So a replay under
//! gdb makes exactly the run calls a plain replay makes, and its digests still match unless gdb
//! wrote memory or registers.
//!
//! Breakpoints are checked against the pc between instructions, which needs the interpreter's
//! one-at-a-time steps: while any breakpoint is set (or a hart is being stepped) the harts step
//! on the interpreter; with none, they run on their engine (the JIT) at full speed, and a
//! Ctrl-C takes effect at the next run call (within a slice of the run loop).

pub mod arch;
pub mod conn;
pub mod hook;
pub mod proto;
pub mod remote;

use std::net::{TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

/// What can go wrong starting the stub.
#[derive(Debug, thiserror::Error)]
pub enum GdbError {
    /// The address could not be listened on.
    #[error("gdb stub: cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// Accepting the client failed.
    #[error("gdb stub: accepting a client on {addr}: {source}")]
    Accept {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
}

/// The hook as installed: shared with the [`Stub`], so that it outlives a replay pass
/// abandoned to travel back (the unwind drops the installed box, not the hook).
struct Shared(Arc<Mutex<hook::Hook>>);

impl rv64::debug::DebugHook for Shared {
    fn before(
        &mut self,
        hart: &mut rv64::Hart,
        ram: &mut rv64::Ram,
        at: rv64::debug::At,
    ) -> rv64::debug::Plan {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .before(hart, ram, at)
    }

    fn leave(&mut self, hart: &rv64::Hart) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).leave(hart)
    }
}

/// A stub serving a machine (see [`Stub::start`]); [`Stub::finish`] when the run ends.
pub struct Stub {
    hook: Arc<Mutex<hook::Hook>>,
    to_gdb: mpsc::Sender<proto::ToGdb>,
    thread: Option<std::thread::JoinHandle<()>>,
    flags: Arc<hook::Flags>,
}

impl Stub {
    /// Listens on `addr` for one gdb client of a machine whose harts are `harts` now, and
    /// installs the hook. With `wait`, blocks until the client connects, and the machine stops
    /// before its next instruction for it; without, the machine runs, and stops when the client
    /// arrives (as a process does when gdb attaches).
    ///
    /// `replay`: the machine is a replay, which can go back (`reverse-stepi`,
    /// `reverse-continue`): the hook then ends a pass by unwinding with [`hook::Travel`], and
    /// the caller replays again from the start ([`Stub::is_travel`], [`Stub::new_pass`]).
    pub fn start(
        addr: &str,
        harts: &[rv64::Hart],
        wait: bool,
        replay: bool,
    ) -> Result<Stub, GdbError> {
        let listener = TcpListener::bind(addr).map_err(|source| GdbError::Listen {
            addr: addr.into(),
            source,
        })?;
        let local = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| addr.into());
        eprintln!("ftvm gdb: waiting for gdb on {local} (target remote {local})");
        let (to_gdb, from_machine) = mpsc::channel();
        let (to_machine, from_gdb) = mpsc::channel();
        let flags = Arc::new(hook::Flags::default());
        let hook = Arc::new(Mutex::new(hook::Hook::new(
            to_gdb.clone(),
            from_gdb,
            flags.clone(),
            harts,
            replay,
        )));
        let mut target =
            remote::Remote::new(to_machine, from_machine, flags.clone(), harts.len(), replay);
        let accept = move |conn: TcpStream, target: &mut remote::Remote| {
            if !target.flags().connected.swap(true, Ordering::SeqCst) {
                // The machine runs: it stops at its next instruction boundary for gdb.
                target.flags().interrupt.store(true, Ordering::SeqCst);
            }
            if let Err(e) = target.wait_first_stop() {
                eprintln!("ftvm gdb: {e}");
                return;
            }
            let peer = conn.peer_addr().map(|a| a.to_string()).unwrap_or_default();
            eprintln!("ftvm gdb: gdb connected from {peer}");
            match remote::session(conn, target) {
                Ok(gdbstub::stub::DisconnectReason::Kill) => {
                    // gdb's `kill`: the machine ends with the session.
                    eprintln!("ftvm gdb: killed by the debugger");
                    std::process::exit(1);
                }
                Ok(why) => eprintln!("ftvm gdb: session ended ({why:?})"),
                Err(e) => eprintln!("ftvm gdb: session ended: {e}"),
            }
            target.detach();
        };
        let thread = if wait {
            let (conn, _) = listener.accept().map_err(|source| GdbError::Accept {
                addr: local.clone(),
                source,
            })?;
            // Stop before the first instruction: set before the machine's thread goes on.
            flags.connected.store(true, Ordering::SeqCst);
            flags.interrupt.store(true, Ordering::SeqCst);
            rv64::debug::install(Box::new(Shared(hook.clone())));
            std::thread::Builder::new()
                .name("gdb".into())
                .spawn(move || accept(conn, &mut target))
        } else {
            rv64::debug::install(Box::new(Shared(hook.clone())));
            std::thread::Builder::new()
                .name("gdb".into())
                .spawn(move || match listener.accept() {
                    Ok((conn, _)) => accept(conn, &mut target),
                    Err(e) => eprintln!("ftvm gdb: accepting a client on {local}: {e}"),
                })
        };
        Ok(Stub {
            hook,
            to_gdb,
            thread: thread.ok(),
            flags,
        })
    }

    /// Whether a panic payload is the hook's travel back in time (see [`Stub::start`]).
    pub fn is_travel(p: &(dyn std::any::Any + Send)) -> bool {
        p.is::<hook::Travel>()
    }

    /// Before the replay starts again (after [`Stub::is_travel`]): installs the hook again
    /// (the unwind dropped the installed box).
    pub fn new_pass(&self) {
        rv64::debug::install(Box::new(Shared(self.hook.clone())));
    }

    /// The run ended with `code`: tells gdb (if one is connected, the inferior exits) and
    /// removes the hook.
    pub fn finish(mut self, code: u8) {
        rv64::debug::uninstall();
        let _ = self.to_gdb.send(proto::ToGdb::Exited(code));
        if let Some(t) = self.thread.take() {
            // Wait for gdb to hear it, unless no client ever came (the thread still waits in
            // accept).
            if self.flags.connected.load(Ordering::SeqCst) {
                let _ = t.join();
            }
        }
    }
}
