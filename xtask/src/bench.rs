//! `cargo xtask bench`: the CPU benchmark of ftvm against QEMU.
//!
//! Builds the bare-metal benchmark in `guests/bench/` (one ELF per kernel, an all-in-one ELF and an
//! empty one that measures start-up), builds `ftvm` in release, then runs every ELF N times on
//! `ftvm run-elf --stats` and on `qemu-system-riscv64 -M virt -bios none`, interleaved, so both
//! see the same machine noise. The checksums the guest prints must agree between the two and
//! across repetitions; the table reports best-of-N times and ftvm/QEMU ratios, which stay meaningful on a
//! busy shared machine where absolute times do not. A full run rewrites its section of
//! `docs/benchmarks.md`; `--profile` adds a profile of ftvm running the all-in-one ELF.
//!
//! Split by job: [`elf`] (tools and guest build), [`measure`] (running and parsing one run),
//! [`doc`] (machine facts and the markdown), [`profile`] (perf or callgrind).

mod channel;
mod doc;
mod elf;
mod ft;
mod ftio;
mod ftvmlog;
mod linux;
mod measure;
mod profile;
mod reprotect;
mod rr;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use measure::{Run, Summary};

/// Options of `cargo xtask bench`.
#[derive(clap::Args)]
pub struct Args {
    /// Short smoke run: iteration counts divided by 16, one repetition, docs left alone.
    #[arg(long)]
    quick: bool,
    /// Repetitions of every measurement; the table shows the best and the median (default 3, 1 with --quick).
    #[arg(long, short = 'n')]
    reps: Option<usize>,
    /// Only these kernels (comma-separated; default: all of them).
    #[arg(long, value_enum, value_delimiter = ',')]
    kernels: Vec<Kernel>,
    /// Do not run QEMU (no ratios, no cross-check of the checksums).
    #[arg(long)]
    no_qemu: bool,
    /// Do not update docs/benchmarks.md (a --quick run never does).
    #[arg(long)]
    no_doc: bool,
    /// Use this ftvm binary instead of building one with `cargo build --release`.
    #[arg(long)]
    ftvm: Option<PathBuf>,
    /// Instead of the table: profile ftvm running the all-in-one ELF (perf if it works here,
    /// else callgrind on the --quick ELF) and write the top functions to docs/benchmarks.md.
    #[arg(long)]
    profile: bool,
    /// Instead of the bare-metal kernels: the fault-tolerant pair on the Linux guest (FT overhead
    /// on `cpubench`, log bandwidth, output-rule latency, failover time, heartbeat gaps under
    /// load), written to docs/ft-benchmarks.md.
    #[arg(long)]
    ft: bool,
    /// Instead of the bare-metal kernels: the logging channel's throughput and CPU per MB with
    /// and without its encryption (a clone-sized transfer over 127.0.0.1, in-process), the
    /// `channel` section of docs/benchmarks.md.
    #[arg(long)]
    channel: bool,
    /// Instead of the bare-metal kernels: disk and network throughput in the Linux guest, `ftvm
    /// run` alone against a pair (shared and non-shared disks; passt), with the log bandwidth,
    /// the `bench --ft-io` section of docs/ft-benchmarks.md.
    #[arg(long)]
    ft_io: bool,
    /// Instead of the bare-metal kernels: re-protection after failovers (`ftvm pair --demo
    /// --demo-kills`): the live clone (rounds, bytes, the guest's pause, total time) and the time from a kill to
    /// protected again, for 256 MiB and 1 GiB guests idle and loaded; the `reprotect` section.
    #[arg(long)]
    reprotect: bool,
    /// Instead of the bare-metal kernels: boot the Linux guest on ftvm and on QEMU, time the
    /// boot to the shell and `cpubench` inside Linux, and write the `linux` section of the docs.
    #[arg(long)]
    linux: bool,
    /// Instead of the bare-metal kernels: the cost of record/replay on the Linux guest, ftvm
    /// against QEMU's `-icount shift=auto,rr=record` (recording overhead on `cpubench`, replay
    /// time, log bytes per guest second idle, CPU-bound and disk-bound), the `replay` section.
    #[arg(long)]
    replay: bool,
    /// With --replay: guest seconds of idling at the shell prompt (default 20, 5 with --quick).
    #[arg(long)]
    idle_secs: Option<u64>,
    /// With --replay: the guest directory printed by `cargo xtask guest` (default: find or build
    /// it as `cargo xtask guest` does).
    #[arg(long)]
    guest_dir: Option<PathBuf>,
    /// Seconds after which a single run (or, with --linux/--replay, one console wait) is killed
    /// and the benchmark fails.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

/// One benchmark ELF: the kernels it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kernel {
    /// No kernel: start-up and exit only (the fixed cost of one run).
    Startup,
    /// Integer arithmetic: mul/div/rem, fixed-point Mandelbrot, 32-bit hashing.
    Int,
    /// 16 MiB working set: sequential and page-stride walks, copies, pointer chasing.
    Mem,
    /// Unpredictable branches: quicksort, bytecode interpreter, tokenizer.
    Branch,
    /// Double precision: matrix multiply, n-body; single-precision polynomial.
    Fp,
    /// The four kernels in one run.
    All,
}

impl Kernel {
    const ALL: [Kernel; 6] = [
        Kernel::Startup,
        Kernel::Int,
        Kernel::Mem,
        Kernel::Branch,
        Kernel::Fp,
        Kernel::All,
    ];

    fn name(self) -> &'static str {
        match self {
            Kernel::Startup => "startup",
            Kernel::Int => "int",
            Kernel::Mem => "mem",
            Kernel::Branch => "branch",
            Kernel::Fp => "fp",
            Kernel::All => "all",
        }
    }

    /// The preprocessor symbols that select the kernels compiled into main().
    fn defines(self) -> &'static [&'static str] {
        match self {
            Kernel::Startup => &[],
            Kernel::Int => &["K_INT"],
            Kernel::Mem => &["K_MEM"],
            Kernel::Branch => &["K_BRANCH"],
            Kernel::Fp => &["K_FP"],
            Kernel::All => &["K_INT", "K_MEM", "K_BRANCH", "K_FP"],
        }
    }
}

/// Where things are: the workspace and cargo's target directory.
struct Paths {
    root: PathBuf,
    target: PathBuf,
}

impl Paths {
    fn new() -> Result<Paths> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .context("xtask has no parent directory")?
            .to_path_buf();
        let target = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(t) => root.join(t),
            None => root.join("target"),
        };
        Ok(Paths { root, target })
    }
}

/// Runs the task.
pub fn main(a: Args) -> Result<()> {
    let paths = Paths::new()?;
    let reps = a.reps.unwrap_or(if a.quick { 1 } else { 3 }).max(1);
    let kernels: Vec<Kernel> = if a.kernels.is_empty() {
        Kernel::ALL.to_vec()
    } else {
        a.kernels.clone()
    };
    let qemu = !a.no_qemu && !a.profile;

    if a.channel {
        return channel::main(&paths.root, reps, a.quick, a.quick || a.no_doc);
    }
    if a.ft_io {
        let ftvm = match &a.ftvm {
            Some(p) => p.clone(),
            None => build_ftvm(&paths)?,
        };
        let o = ftio::Options::new(
            reps,
            a.quick,
            a.quick || a.no_doc,
            a.timeout,
            command_line(),
        );
        return ftio::main(&paths.root, &ftvm, &o);
    }
    if a.reprotect {
        let ftvm = match &a.ftvm {
            Some(p) => p.clone(),
            None => build_ftvm(&paths)?,
        };
        let kills = if a.quick { 1 } else { 3 };
        return reprotect::main(
            &paths.root,
            &ftvm,
            kills,
            a.quick || a.no_doc,
            command_line(),
        );
    }
    if a.ft {
        let ftvm = match &a.ftvm {
            Some(p) => p.clone(),
            None => build_ftvm(&paths)?,
        };
        let o = ft::Options::new(
            reps,
            a.quick,
            a.quick || a.no_doc,
            a.timeout,
            command_line(),
        );
        return ft::main(&paths.root, &ftvm, &o);
    }

    if a.replay {
        if qemu {
            elf::check_qemu()?;
        }
        let ftvm = match &a.ftvm {
            Some(p) => p.clone(),
            None => build_ftvm(&paths)?,
        };
        let o = rr::Options {
            reps,
            timeout: std::time::Duration::from_secs(a.timeout),
            idle: std::time::Duration::from_secs(a.idle_secs.unwrap_or(if a.quick {
                5
            } else {
                20
            })),
            rounds: if a.quick { 10 } else { 60 },
            qemu,
            no_doc: a.quick || a.no_doc,
            guest_dir: a.guest_dir.clone(),
            command: command_line(),
        };
        return rr::main(&paths.root, &ftvm, &o);
    }
    elf::check_cross_compiler()?;
    if qemu {
        elf::check_qemu()?;
    }
    let scale_div = if a.quick { 16 } else { 1 };
    let elf_kernels = if a.profile {
        vec![Kernel::All]
    } else {
        kernels.clone()
    };
    let elfs = elf::build(&paths, &elf_kernels, scale_div)?;
    let ftvm = match &a.ftvm {
        Some(p) => p.clone(),
        None => build_ftvm(&paths)?,
    };

    if a.linux {
        return linux::main(&paths.root, &ftvm, reps, a.timeout, a.quick || a.no_doc);
    }
    if a.profile {
        let quick_elf = elf::build(&paths, &[Kernel::All], 16)?.remove(0);
        return profile::main(&paths, &ftvm, &elfs[0], &quick_elf, a.quick || a.no_doc);
    }

    // Both engines and QEMU, interleaved, on every ELF.
    let mut summaries: Vec<Summary> = Vec::new();
    let mut jit_summaries: Vec<Summary> = Vec::new();
    type Runs = (Vec<Run>, Vec<Run>, Vec<Run>);
    let mut runs: Vec<Runs> = vec![(Vec::new(), Vec::new(), Vec::new()); elfs.len()];
    for rep in 0..reps {
        for (i, elf) in elfs.iter().enumerate() {
            let k = elf_kernels[i].name();
            eprintln!("bench: round {}/{reps}: {k} on ftvm (interp)", rep + 1);
            runs[i].0.push(
                measure::ftvm(&ftvm, elf, a.timeout, "interp")
                    .with_context(|| format!("{k} on ftvm --engine interp"))?,
            );
            eprintln!("bench: round {}/{reps}: {k} on ftvm (jit)", rep + 1);
            runs[i].1.push(
                measure::ftvm(&ftvm, elf, a.timeout, "jit")
                    .with_context(|| format!("{k} on ftvm --engine jit"))?,
            );
            if qemu {
                eprintln!("bench: round {}/{reps}: {k} on qemu", rep + 1);
                runs[i]
                    .2
                    .push(measure::qemu(elf, a.timeout).with_context(|| format!("{k} on qemu"))?);
            }
        }
    }
    let mut bad = Vec::new();
    for (i, (f, j, q)) in runs.into_iter().enumerate() {
        let k = elf_kernels[i].name();
        let s = Summary::new(k, f, q.clone());
        let sj = Summary::new(k, j, q);
        if sj.icount != s.icount || sj.checksums != s.checksums {
            bad.push(format!(
                "{k}: the JIT retired {} instructions with checksums {:?}, the interpreter {} with {:?}",
                sj.icount, sj.checksums, s.icount, s.checksums
            ));
        }
        bad.extend(s.problems.iter().cloned());
        bad.extend(sj.problems.iter().map(|p| format!("(jit) {p}")));
        summaries.push(s);
        jit_summaries.push(sj);
    }

    let table = measure::table(&summaries, &jit_summaries, qemu);
    println!("{table}");
    for s in &summaries {
        for (name, sum) in &s.checksums {
            println!("{}.elf: {name} checksum={sum}", s.kernel);
        }
    }
    if !bad.is_empty() {
        for b in &bad {
            eprintln!("bench: MISMATCH: {b}");
        }
        bail!(
            "{} check(s) failed: ftvm and QEMU disagree or runs are not deterministic",
            bad.len()
        );
    }
    if a.quick || a.no_doc {
        eprintln!("bench: docs/benchmarks.md left alone (--quick / --no-doc)");
    } else {
        let command = command_line();
        doc::write_cpu_section(&paths.root, &table, &summaries, reps, qemu, &command)?;
        eprintln!("bench: updated docs/benchmarks.md");
    }
    Ok(())
}

/// The command as the user typed it, for the docs.
fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut s = String::from("cargo xtask");
    for a in args {
        s.push(' ');
        s.push_str(&a);
    }
    s
}

/// `cargo build --release -p ftvm`, with the cargo that runs us, into the same target directory.
fn build_ftvm(paths: &Paths) -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("bench: cargo build --release -p ftvm");
    let st = Command::new(cargo)
        .current_dir(&paths.root)
        .args(["build", "--release", "-p", "ftvm", "--bin", "ftvm"])
        .status()
        .context("cannot run cargo")?;
    if !st.success() {
        bail!("cargo build --release -p ftvm failed ({st})");
    }
    Ok(paths.target.join("release").join("ftvm"))
}
