//! `ftvm`: the command-line program. Parses arguments, runs the requested command, and maps
//! errors to exit codes (2 for any error of input or setup).

// Named apart from the `replay` crate (the log format) that it uses.
mod agent;
mod ft_cmd;
mod pair;
#[path = "replay.rs"]
mod replay_cmd;
mod roles;
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
    /// Run the primary of a fault-tolerant pair: the guest, protected by a backup.
    Primary(roles::PrimaryArgs),
    /// Run the backup of a fault-tolerant pair: replays the primary's log, goes live when the
    /// primary is gone.
    Backup(roles::BackupArgs),
    /// Start a primary and its backup on this machine and attach to the guest's console
    /// (`--demo N`: the counter demo with a SIGKILL of the primary).
    Pair(pair::PairCmdArgs),
    /// Show the status of the pair's processes (role, protection, log positions, lag).
    /// (`--store SPEC`: of the whole cluster, VM by VM).
    Status(agent::StatusArgs),
    /// Attach to a VM's console (follows a failover to the backup).
    Console(ft_cmd::EndpointArgs),
    /// Pause, resume or power off a protected VM (the backup follows at the same icount), or
    /// protect a VM that runs alone again.
    Control(ft_cmd::ControlArgs),
    /// Move a running VM to another host: to its backup, or (`--to`) to a new backup that is
    /// first brought in sync; the old side stops and the other goes live where it stopped.
    Migrate(ft_cmd::MigrateArgs),
    /// The cluster agent of this host: registers it, starts and supervises the primaries and
    /// backups placed on it, and re-protects VMs after a failover (docs/agent.md).
    Agent(agent::AgentArgs),
    /// Define a VM in the cluster (`ftvm vm create`); the agents start it.
    Vm(agent::VmCmdArgs),
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
        Command::Primary(a) => roles::primary(a),
        Command::Backup(a) => roles::backup(a),
        Command::Pair(a) => pair::main(a),
        Command::Status(a) => agent::status(a),
        Command::Agent(a) => agent::agent(a),
        Command::Vm(a) => agent::vm(a),
        Command::Console(a) => ft_cmd::console(a),
        Command::Control(a) => ft_cmd::control(a),
        Command::Migrate(a) => ft_cmd::migrate(a),
    };
    std::process::exit(code);
}
