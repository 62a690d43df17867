//! `ftvm`: the command-line program. Parses arguments, runs the requested command, and maps
//! errors to exit codes (2 for any error of input or setup).

// Named apart from the `replay` crate (the log format) that it uses.
#[path = "replay.rs"]
mod replay_cmd;
mod run;
mod run_elf;

use clap::{Parser, Subcommand};

/// Fault-tolerant RISC-V virtual machines.
#[derive(Parser, Debug)]
#[command(name = "ftvm", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size difference between the variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// Run a bare-metal ELF until it reports through the HTIF `tohost` word.
    RunElf(run_elf::Args),
    /// Boot a virt machine (firmware, kernel, initrd, disks) with the console on stdio.
    Run(run::Args),
    /// Replay a log written by `ftvm run --record`, printing the guest's console to stdout.
    Replay(replay_cmd::Args),
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // Help and version are not errors; anything else is a usage error: exit code 2.
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    let code = match cli.command {
        Command::RunElf(a) => run_elf::main(a),
        Command::Run(a) => run::main(a),
        Command::Replay(a) => replay_cmd::main(a),
    };
    std::process::exit(code);
}
