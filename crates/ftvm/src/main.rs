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
    /// The engine that runs the guest's harts, for every command that runs a machine: `jit`
    /// (translating; x86-64 hosts) or `interp` (the interpreter). Both give identical results
    /// (logs and snapshots are interchangeable). Default: the `FTVM_ENGINE` environment variable,
    /// else `jit` on x86-64 hosts and `interp` elsewhere.
    #[arg(long, global = true, value_name = "jit|interp")]
    engine: Option<rv64::Engine>,
    #[command(subcommand)]
    command: Command,
}

/// The engine chosen for this process (see [`Cli::engine`]).
static ENGINE: std::sync::OnceLock<rv64::Engine> = std::sync::OnceLock::new();

/// The engine machines of this process run on; child `ftvm` processes get it through
/// `FTVM_ENGINE` (see [`ENGINE_ENV`]).
pub(crate) fn engine() -> rv64::Engine {
    ENGINE.get().copied().unwrap_or_default()
}

/// The environment variable that chooses the engine when `--engine` is not given.
pub(crate) const ENGINE_ENV: &str = "FTVM_ENGINE";

/// Resolves `--engine`, then `FTVM_ENGINE`, then the default, and installs it.
fn choose_engine(flag: Option<rv64::Engine>) -> Result<(), String> {
    let wanted = match flag {
        Some(e) => e,
        None => match std::env::var(ENGINE_ENV) {
            Ok(v) if !v.is_empty() => v.parse().map_err(|e| format!("{ENGINE_ENV}: {e}"))?,
            _ => rv64::Engine::default(),
        },
    };
    let used = machine::set_default_engine(wanted);
    if used != wanted {
        eprintln!(
            "ftvm: the {wanted} engine is not available on this host ({}); using {used}",
            std::env::consts::ARCH
        );
    }
    let _ = ENGINE.set(used);
    Ok(())
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
    /// Print the bearer token of a VM's `--metrics` endpoint (for Prometheus'
    /// `authorization: credentials_file`), derived from its status or console key.
    MetricsToken(ft_cmd::MetricsTokenArgs),
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
    if let Err(e) = choose_engine(cli.engine) {
        eprintln!("ftvm: {e}");
        std::process::exit(2);
    }
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
        Command::MetricsToken(a) => ft_cmd::metrics_token(a),
    };
    std::process::exit(code);
}
