//! Engine selection: which loop [`Hart::run`] runs — the interpreter alone, or the translating
//! engine ([`crate::jit`], x86-64 hosts) with the interpreter stepping whatever it leaves.
//!
//! Kept apart from [`crate::hart`] so that the interpreter does not depend on the translator
//! (the translator depends on the interpreter: it calls its per-instruction `execute`).

use crate::bus::Bus;
use crate::hart::{Exit, Hart, NoBlocks};
use crate::jitstats::JitStats;
use crate::ram::Ram;

/// Which engine runs a hart's instructions. The default is the translating engine where the
/// host has it (x86-64) and the interpreter elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// The interpreter: the reference, on every host.
    Interp,
    /// The translating engine (x86-64 hosts; elsewhere the hart stays on the interpreter).
    Jit,
}

impl Engine {
    /// Whether this host can run `Engine::Jit` (an x86-64 host).
    pub const JIT_AVAILABLE: bool = cfg!(target_arch = "x86_64");

    /// The engine's name as given on command lines (`jit`, `interp`).
    pub fn name(self) -> &'static str {
        match self {
            Engine::Interp => "interp",
            Engine::Jit => "jit",
        }
    }
}

impl Default for Engine {
    fn default() -> Engine {
        if Engine::JIT_AVAILABLE {
            Engine::Jit
        } else {
            Engine::Interp
        }
    }
}

impl std::str::FromStr for Engine {
    type Err = String;
    fn from_str(s: &str) -> Result<Engine, String> {
        match s {
            "interp" => Ok(Engine::Interp),
            "jit" => Ok(Engine::Jit),
            _ => Err(format!("unknown engine {s:?} (expected jit or interp)")),
        }
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Hart {
    /// Executes at most `max` steps (instructions or trap entries) and returns why it stopped:
    /// the budget is used up, the hart waits for an interrupt, or it wrote to a device. Exactly
    /// `max` steps unless it waits or touches a device, on either engine.
    pub fn run<B: Bus>(&mut self, ram: &mut Ram, bus: &mut B, max: u64) -> Exit {
        if crate::debug::active() {
            return self.run_debug(ram, bus, max);
        }
        self.run_engine(ram, bus, max)
    }

    /// [`Hart::run`] on the hart's engine, without a debugger.
    pub(crate) fn run_engine<B: Bus>(&mut self, ram: &mut Ram, bus: &mut B, max: u64) -> Exit {
        #[cfg(target_arch = "x86_64")]
        if let Some(mut t) = self.translator.take() {
            let exit = match t.downcast_mut::<crate::jit::Jit>() {
                Some(jit) => self.run_loop(ram, bus, max, jit),
                None => self.run_loop(ram, bus, max, &mut NoBlocks),
            };
            self.translator = Some(t);
            return exit;
        }
        self.run_loop(ram, bus, max, &mut NoBlocks)
    }

    /// Chooses the engine that runs this hart. Both leave identical state after every step;
    /// switching at any point between two [`Hart::run`] calls is allowed. Returns the engine
    /// now in use: `Engine::Interp` if the translating engine is not available on this host
    /// (not x86-64, or no executable memory).
    pub fn set_engine(&mut self, e: Engine) -> Engine {
        match e {
            Engine::Interp => self.translator = None,
            Engine::Jit =>
            {
                #[cfg(target_arch = "x86_64")]
                if self.translator.is_none() {
                    self.translator = crate::jit::Jit::new().map(|j| j as Box<dyn std::any::Any>);
                }
            }
        }
        self.engine()
    }

    /// The engine running this hart.
    pub fn engine(&self) -> Engine {
        if self.translator.is_some() {
            Engine::Jit
        } else {
            Engine::Interp
        }
    }

    /// Statistics of the translating engine (`None` on the interpreter).
    pub fn jit_stats(&self) -> Option<JitStats> {
        #[cfg(target_arch = "x86_64")]
        if let Some(j) = self
            .translator
            .as_ref()
            .and_then(|t| t.downcast_ref::<crate::jit::Jit>())
        {
            return Some(j.stats);
        }
        None
    }
}
