//! `cargo xtask`: guest images (`guest`), benchmarks (`bench`) and the test suite (`test`).

mod bench;
mod demo;
mod guest;
mod test;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build (or reuse from the cache) the guest kernel and initramfs.
    Guest(guest::Args),
    /// Benchmarks of ftvm against qemu-system-riscv64.
    Bench(bench::Args),
    /// Build the guest and boot it on ftvm, console on this terminal (the README's demo).
    Demo(demo::Args),
    /// Run the whole test suite (what CI runs).
    Test(test::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Guest(a) => guest::main(a),
        Cmd::Bench(a) => bench::main(a),
        Cmd::Test(a) => test::main(a),
        Cmd::Demo(a) => demo::main(a),
    }
}
