//! `cargo xtask`: guest images (`guest`), benchmarks (`bench`), the test suite (`test`), the
//! README's demo (`demo`), PostgreSQL and iperf3 under FT (`pgbench`, `iperf3`) and the fresh-machine check of the
//! README (`fresh-check`).

mod bench;
mod demo;
mod fresh;
mod guest;
mod iperf3;
mod modcycles;
mod pgbench;
mod server;
mod soak;
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
    /// PostgreSQL in the Debian guest under FT: the host's pgbench through the guest's network
    /// while the primary is killed, then the committed-transaction check (also `--on alone|qemu`).
    Pgbench(pgbench::Args),
    /// iperf3 in the Debian guest under FT: the host's iperf3 client (TCP, either way) while
    /// the primary is killed; the stream must carry on (also `--on alone|qemu`).
    Iperf3(iperf3::Args),
    /// A fault-tolerant pair under a seeded random schedule of thousands of mixed faults,
    /// checked after each: nothing lost, nothing released twice, protected again.
    Soak(soak::Args),
    /// Run the whole test suite (what CI runs).
    Test(test::Args),
    /// Try the README's two commands as a new user would: in a clean Debian 12 root filesystem
    /// with only Rust (mounted from this machine), gcc and git (needs root and mmdebstrap).
    FreshCheck(fresh::Args),
    /// List module cycles inside each crate (a test keeps them out).
    Modcycles,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Guest(a) => guest::main(a),
        Cmd::Bench(a) => bench::main(a),
        Cmd::Test(a) => test::main(a),
        Cmd::Soak(a) => soak::main(a),
        Cmd::Demo(a) => demo::main(a),
        Cmd::Pgbench(a) => pgbench::main(a),
        Cmd::Iperf3(a) => iperf3::main(a),
        Cmd::FreshCheck(a) => fresh::main(a),
        Cmd::Modcycles => modcycles::main(),
    }
}
