//! `cargo xtask test`: the project's whole test suite, as the README and CI run it.
//!
//! Builds (or reuses from the cache) the guest images that the end-to-end tests boot, hands
//! their directories to the tests in `FTVM_GUEST_DIR` and `FTVM_DEBIAN_DIR` (with `FTVM_REQUIRE_GUEST=1`, so a missing
//! guest fails those tests instead of skipping them), then runs every test of the workspace with
//! optimisation: the emulator is far too slow unoptimised. Then the short soak (`soak::ci`: a few
//! dozen mixed faults of a fixed seed, docs/soak.md).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

use crate::{guest, soak};

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
    guest::deps::require_groups(guest::deps::Group::ALL, opts.install_deps)
        .context("the test suite needs these Debian packages (debian-packages.txt)")?;
    let paths =
        guest::build(&opts).context("building the guest images for the end-to-end tests")?;
    eprintln!("xtask test: guest images in {}", paths.dir.display());
    let debian = guest::debian::build(&opts, guest::debian::DEFAULT_MIRROR)
        .context("building the Debian guest for the PostgreSQL and iperf3 tests")?;
    eprintln!("xtask test: Debian guest in {}", debian.dir.display());
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut child = Command::new(&cargo)
        .args(["test", "--workspace", "--release"])
        .args(&a.rest)
        .env("FTVM_GUEST_DIR", &paths.dir)
        .env("FTVM_DEBIAN_DIR", &debian.dir)
        .env("FTVM_REQUIRE_GUEST", "1")
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {cargo}"))?;
    // Pass the output through and add up the test binaries' result lines, so that the run ends
    // with one total (the last binary cargo runs is a doc-test binary with nothing in it).
    let (mut passed, mut failed) = (0u64, 0u64);
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines() {
            let line = line.context("reading cargo test's output")?;
            println!("{line}");
            if let Some(rest) = line.strip_prefix("test result: ") {
                passed += count(rest, " passed");
                failed += count(rest, " failed");
            }
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    println!("tests: {passed} passed, {failed} failed");
    if !status.success() {
        bail!("tests failed ({status})");
    }
    // The short soak (docs/soak.md), with the ftvm the tests just built; not when a filter
    // asked for some tests only.
    if a.rest.is_empty() {
        let ftvm = crate::demo::target_dir().join("release/ftvm");
        eprintln!(
            "xtask test: the short soak ({} faults, seed {})",
            soak::CI_FAULTS,
            soak::CI_SEED
        );
        soak::ci(&paths.dir, &ftvm).context("the short soak")?;
    }
    Ok(())
}

/// The number before `what` in a `test result:` line ("ok. 5 passed; 0 failed; ...").
fn count(line: &str, what: &str) -> u64 {
    line.split(';')
        .find_map(|part| {
            part.trim()
                .trim_start_matches("ok. ")
                .trim_start_matches("FAILED. ")
                .strip_suffix(what)
        })
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_come_from_cargo_result_lines() {
        let l = "ok. 38 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.8s";
        assert_eq!(super::count(l, " passed"), 38);
        assert_eq!(super::count(l, " failed"), 2);
        assert_eq!(
            super::count("FAILED. 1 passed; 3 failed; 0 ignored", " failed"),
            3
        );
    }
}
