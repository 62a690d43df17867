//! `cargo xtask test`: the project's whole test suite, as the README and CI run it.
//!
//! Builds (or reuses from the cache) the guest images that the end-to-end tests boot, hands
//! their directory to the tests in `FTVM_GUEST_DIR` (with `FTVM_REQUIRE_GUEST=1`, so a missing
//! guest fails those tests instead of skipping them), then runs every test of the workspace with
//! optimisation: the emulator is far too slow unoptimised.

use std::process::Command;

use anyhow::{bail, Context};

use crate::guest;

/// Options of `cargo xtask test`.
#[derive(clap::Args)]
pub struct Args {
    /// Never install anything; only say what is missing (by default, running as root installs
    /// missing Debian packages and the `deb-src` entry the busybox recipe needs).
    #[arg(long)]
    pub no_install: bool,
    /// Extra arguments passed to `cargo test` (e.g. a test name filter).
    #[arg(trailing_var_arg = true)]
    pub rest: Vec<String>,
}

/// Runs the task.
pub fn main(a: Args) -> anyhow::Result<()> {
    let opts = guest::BuildOptions {
        install_deps: !a.no_install && guest::deps::is_root(),
        ..Default::default()
    };
    let paths =
        guest::build(&opts).context("building the guest images for the end-to-end tests")?;
    eprintln!("xtask test: guest images in {}", paths.dir.display());
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args(["test", "--workspace", "--release"])
        .args(&a.rest)
        .env("FTVM_GUEST_DIR", &paths.dir)
        .env("FTVM_REQUIRE_GUEST", "1")
        .status()
        .with_context(|| format!("cannot run {cargo}"))?;
    if !status.success() {
        bail!("tests failed ({status})");
    }
    Ok(())
}
