//! `cargo xtask test`: the project's whole test suite, as the README and CI run it.
//!
//! Builds (or reuses from the cache) the guest images the end-to-end tests boot, then runs every
//! test of the workspace with optimisation (the emulator is far too slow unoptimised).

use std::process::Command;

use anyhow::{bail, Context};

/// Options of `cargo xtask test`.
#[derive(clap::Args)]
pub struct Args {
    /// Extra arguments passed to `cargo test` (e.g. a test name filter).
    #[arg(trailing_var_arg = true)]
    pub rest: Vec<String>,
}

/// Runs the task.
pub fn main(a: Args) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args(["test", "--workspace", "--release"])
        .args(&a.rest)
        .status()
        .with_context(|| format!("cannot run {cargo}"))?;
    if !status.success() {
        bail!("tests failed ({status})");
    }
    Ok(())
}
