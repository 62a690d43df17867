//! `cargo xtask bench --profile`: where ftvm's time goes. Samples with `perf record` (the
//! software `cpu-clock` event, which works even in VMs without hardware counters) or, where perf
//! cannot run, counts instructions with `valgrind --tool=callgrind` on the short `--quick` ELF.
//! The flat list of the hottest functions lands in docs/benchmarks.md; the reading of it is
//! written by hand next to it.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::{doc, Paths};

/// At most this many functions in the table.
const TOP: usize = 25;

/// One row: share of samples (or instructions) and the function.
struct Hot {
    percent: f64,
    symbol: String,
}

fn perf_works() -> bool {
    Command::new("perf")
        .args(["stat", "-e", "cpu-clock", "true"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs the profiler and writes (unless `no_doc`) the profile section.
pub fn main(paths: &Paths, ftvm: &Path, elf: &Path, quick_elf: &Path, no_doc: bool) -> Result<()> {
    let dir = paths.target.join("bench-profile");
    std::fs::create_dir_all(&dir)?;
    let (tool, command, hot) = if perf_works() {
        perf(&dir, ftvm, elf)?
    } else {
        eprintln!("bench: perf does not work here (apt-get install linux-perf; check perf_event_paranoid); using callgrind");
        callgrind(&dir, ftvm, quick_elf)?
    };
    let mut table = String::from("| share | function |\n|---:|---|\n");
    for h in hot.iter().take(TOP) {
        let _ = writeln!(
            table,
            "| {:.1}% | `{}` |",
            h.percent,
            h.symbol.replace('|', "\\|")
        );
    }
    println!("{tool}: `{command}`\n\n{table}");
    if !no_doc {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Produced by `cargo xtask bench --profile` with {tool}: `{command}`.\n"
        );
        s.push_str(&doc::machine_facts());
        s.push('\n');
        s.push_str(&table);
        doc::replace_section(&paths.root, "profile", &s)?;
        eprintln!("bench: updated the profile section of docs/benchmarks.md");
    }
    Ok(())
}

fn output(cmd: &mut Command) -> Result<String> {
    let o = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !o.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

fn perf(dir: &Path, ftvm: &Path, elf: &Path) -> Result<(String, String, Vec<Hot>)> {
    let data = dir.join("perf.data");
    let mut rec = Command::new("perf");
    rec.args(["record", "-e", "cpu-clock", "-F", "2000", "-o"])
        .arg(&data)
        .arg("--")
        .arg(ftvm)
        .arg("run-elf")
        .arg(elf)
        .arg("--stats");
    let command = format!(
        "perf record -e cpu-clock -F 2000 -- ftvm run-elf {} --stats",
        file_name(elf)
    );
    output(&mut rec)?;
    let report = output(
        Command::new("perf")
            .args([
                "report",
                "--stdio",
                "--no-children",
                "--sort",
                "symbol",
                "-q",
                "-i",
            ])
            .arg(&data),
    )?;
    // Lines look like "    35.12%  [.] rv64::hart::Hart::step".
    let hot = report
        .lines()
        .filter_map(|l| {
            let (pct, rest) = l.trim().split_once('%')?;
            let sym = rest
                .trim()
                .trim_start_matches("[.]")
                .trim_start_matches("[k]")
                .trim();
            Some(Hot {
                percent: pct.trim().parse().ok()?,
                symbol: sym.to_string(),
            })
        })
        .collect();
    Ok(("perf (cpu-clock sampling)".into(), command, hot))
}

fn callgrind(dir: &Path, ftvm: &Path, elf: &Path) -> Result<(String, String, Vec<Hot>)> {
    let out = dir.join("callgrind.out");
    let mut cg = Command::new("valgrind");
    cg.args(["--tool=callgrind"])
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(ftvm)
        .arg("run-elf")
        .arg(elf);
    let command = format!(
        "valgrind --tool=callgrind ftvm run-elf {} (the --quick build)",
        file_name(elf)
    );
    output(&mut cg).context("valgrind missing? apt-get install valgrind")?;
    let ann = output(Command::new("callgrind_annotate").arg(&out))?;
    // Lines look like "1,234,567 (35.12%)  src/hart.rs:rv64::hart::Hart::step [/path/ftvm]".
    let hot = ann
        .lines()
        .filter_map(|l| {
            let (_, rest) = l.split_once('(')?;
            let (pct, rest) = rest.split_once("%)")?;
            let sym = rest.trim();
            let sym = sym.split_once(':').map_or(sym, |(_, f)| f);
            let sym = sym.split(" [").next().unwrap_or(sym);
            Some(Hot {
                percent: pct.trim().parse().ok()?,
                symbol: sym.to_string(),
            })
        })
        .filter(|h| h.percent < 100.0)
        .collect();
    Ok((
        "callgrind (instructions executed by the host)".into(),
        command,
        hot,
    ))
}

fn file_name(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |f| f.to_string_lossy().into_owned(),
    )
}
