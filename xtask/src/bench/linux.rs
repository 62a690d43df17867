//! The Linux benchmark: wall time from start to the guest's shell, and two CPU-bound programs
//! inside Linux (`cpubench`: compression, sorting, hashing with fixed rounds; `ftmark`: the four
//! kinds of CoreMark work — list, matrix, state machine, CRC — with fixed iterations), each on ftvm
//! (interpreter and JIT) and on `qemu-system-riscv64` booting the same files in the same run;
//! reports ratios ftvm / QEMU per engine, and ftmark's iterations per second.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use guestctl::{Console, Guest};

use super::doc;
use crate::guest;

/// Rounds of `cpubench` (about 1 s on QEMU here).
const ROUNDS: u32 = 60;

/// Iterations of `ftmark` (about 2 s on QEMU here).
const FTMARK_ITERATIONS: u32 = 2000;

/// One boot-and-run of one machine.
struct Sample {
    boot: f64,
    cpubench: f64,
    ftmark: f64,
    checksum: String,
}

/// The word after `key=` in a program's output.
fn field(out: &str, key: &str) -> Result<String> {
    out.split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|w| w.strip_prefix('=')))
        .map(str::to_string)
        .ok_or_else(|| anyhow!("no {key}= in {out:?}"))
}

fn one(cmd: std::process::Command, timeout: Duration) -> Result<Sample> {
    let t0 = Instant::now();
    let mut c = Console::spawn(cmd)?;
    c.wait_for("ftvm-guest: ready", timeout)?;
    let boot = t0.elapsed().as_secs_f64();
    c.run("true", timeout)?;
    let t1 = Instant::now();
    let out = c.run(&format!("cpubench {ROUNDS}"), timeout)?;
    let cpubench = t1.elapsed().as_secs_f64();
    let t2 = Instant::now();
    let mark = c.run(&format!("ftmark {FTMARK_ITERATIONS}"), timeout)?;
    let ftmark = t2.elapsed().as_secs_f64();
    // Both programs' checksums must agree across machines and rounds.
    let checksum = format!(
        "{}/{}",
        field(&out, "checksum").context("cpubench")?,
        field(&mark, "checksum").context("ftmark")?
    );
    c.send(b"poweroff\n")?;
    if c.wait_exit(Duration::from_secs(60)) != Some(0) {
        bail!("the guest did not power off cleanly");
    }
    Ok(Sample {
        boot,
        cpubench,
        ftmark,
        checksum,
    })
}

fn best_median(v: &mut [f64]) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[0], v[v.len() / 2])
}

/// Runs the Linux benchmark `reps` times (interleaved), prints the table, and writes the
/// `linux` section of docs/benchmarks.md unless `no_doc`.
pub fn main(root: &Path, ftvm: &Path, reps: usize, timeout: u64, no_doc: bool) -> Result<()> {
    let g = guest::build(&guest::BuildOptions::default()).context("building the guest")?;
    let tmp = std::env::temp_dir().join(format!("ftvm-bench-linux-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let disk = |tag: &str| -> Result<PathBuf> {
        let d = tmp.join(format!("{tag}.img"));
        std::fs::copy(&g.disk, &d).with_context(|| format!("copying {}", g.disk.display()))?;
        Ok(d)
    };
    let timeout = Duration::from_secs(timeout);
    let (mut f, mut j, mut q) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 1..=reps {
        for (engine, out) in [("interp", &mut f), ("jit", &mut j)] {
            eprintln!("bench linux: round {rep}/{reps}: ftvm --engine {engine}");
            let mut cmd = Guest::in_dir(&g.dir, disk("ftvm")?).ftvm_command(ftvm);
            cmd.env("FTVM_ENGINE", engine);
            out.push(one(cmd, timeout).with_context(|| format!("ftvm --engine {engine}"))?);
        }
        eprintln!("bench linux: round {rep}/{reps}: qemu");
        q.push(one(Guest::in_dir(&g.dir, disk("qemu")?).qemu_command(), timeout).context("qemu")?);
    }
    let _ = std::fs::remove_dir_all(&tmp);
    let sums: Vec<&str> = f
        .iter()
        .chain(&j)
        .chain(&q)
        .map(|s| s.checksum.as_str())
        .collect();
    if sums.iter().any(|s| *s != sums[0]) {
        bail!("cpubench/ftmark checksums differ between runs or machines: {sums:?}");
    }
    let mut table = String::from(
        "| measurement | interp best s | interp median s | jit best s | jit median s | qemu best s | qemu median s | interp/qemu (median) | jit/qemu (median) |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let cpu_row = format!("`cpubench {ROUNDS}` inside Linux");
    let mark_row = format!("`ftmark {FTMARK_ITERATIONS}` inside Linux");
    for (name, pick) in [
        (
            "start to shell prompt",
            (|s: &Sample| s.boot) as fn(&Sample) -> f64,
        ),
        (cpu_row.as_str(), |s: &Sample| s.cpubench),
        (mark_row.as_str(), |s: &Sample| s.ftmark),
    ] {
        let (fb, fm) = best_median(&mut f.iter().map(pick).collect::<Vec<_>>());
        let (jb, jm) = best_median(&mut j.iter().map(pick).collect::<Vec<_>>());
        let (qb, qm) = best_median(&mut q.iter().map(pick).collect::<Vec<_>>());
        let _ = writeln!(
            table,
            "| {name} | {fb:.2} | {fm:.2} | {jb:.2} | {jm:.2} | {qb:.2} | {qm:.2} | {:.2} | {:.2} |",
            fm / qm,
            jm / qm
        );
    }
    let rate = |v: &[Sample]| {
        let (_, m) = best_median(&mut v.iter().map(|s| s.ftmark).collect::<Vec<_>>());
        f64::from(FTMARK_ITERATIONS) / m
    };
    let _ = writeln!(
        table,
        "\nftmark (a CoreMark-style workload of our own, not CoreMark: see \
         `guests/programs/ftmark.c`), median iterations/s: ftvm interp {:.0}, ftvm jit {:.0}, \
         QEMU {:.0} (interp/QEMU {:.2}, jit/QEMU {:.2}).",
        rate(&f),
        rate(&j),
        rate(&q),
        rate(&f) / rate(&q),
        rate(&j) / rate(&q)
    );
    println!("{table}");
    println!(
        "cpubench/ftmark checksums {} on ftvm (both engines) and QEMU",
        sums[0]
    );
    if no_doc {
        return Ok(());
    }
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Produced by `cargo xtask bench --linux -n {reps}` ({reps} interleaved boots per machine: \
         ftvm on the interpreter, ftvm on the JIT, QEMU; OpenSBI fw_jump, the guest of `cargo \
         xtask guest`, 256 MiB, 1 hart; cpubench/ftmark checksums `{}` identical on all three).\n",
        sums[0]
    );
    s.push_str(&doc::machine_facts());
    s.push('\n');
    s.push_str(&table);
    doc::replace_section(root, "linux", &s)
}
