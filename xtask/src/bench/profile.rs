//! `cargo xtask bench --profile`: where ftvm's time goes. Samples with `perf record` (the
//! software `cpu-clock` event, which works even in VMs without hardware counters) or, where perf
//! cannot run, counts instructions with `valgrind --tool=callgrind` on the short `--quick` ELF.
//! The hottest functions and (perf only) source lines land in docs/benchmarks.md; the reading of
//! them is written by hand next to it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::{doc, Paths};

/// At most this many rows per table.
const TOP: usize = 25;

/// What a profiler found.
struct Profile {
    tool: String,
    command: String,
    /// Hottest functions.
    hot: Vec<Hot>,
    /// Hottest source lines (perf only).
    lines: Vec<Hot>,
}

/// One row: share of samples (or instructions) and the function or source line.
struct Hot {
    percent: f64,
    what: String,
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
    let p = if perf_works() {
        perf(&paths.root, &dir, ftvm, elf)?
    } else {
        eprintln!(
            "bench: perf does not work here (apt-get install linux-perf; check \
             /proc/sys/kernel/perf_event_paranoid); using callgrind"
        );
        callgrind(&dir, ftvm, quick_elf)?
    };
    let mut tables = markdown(&p.hot, "function");
    if !p.lines.is_empty() {
        tables.push('\n');
        tables.push_str(&markdown(&p.lines, "source line"));
    }
    println!("{}: `{}`\n\n{tables}", p.tool, p.command);
    if !no_doc {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Produced by `cargo xtask bench --profile` with {}: `{}`.\n",
            p.tool, p.command
        );
        s.push_str(&doc::machine_facts());
        s.push('\n');
        s.push_str(&tables);
        doc::replace_section(&paths.root, "profile", &s)?;
        eprintln!("bench: updated the profile section of docs/benchmarks.md");
    }
    Ok(())
}

fn markdown(rows: &[Hot], what: &str) -> String {
    let mut t = format!("| share | {what} |\n|---:|---|\n");
    for h in rows.iter().take(TOP) {
        let _ = writeln!(t, "| {:.1}% | {} |", h.percent, h.what.replace('|', "\\|"));
    }
    t
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

/// `perf report --stdio -q --sort KEY` as (percent, key) rows.
fn perf_report(data: &Path, key: &str) -> Result<Vec<(f64, String)>> {
    let report = output(
        Command::new("perf")
            .args([
                "report",
                "--stdio",
                "--no-children",
                "--sort",
                key,
                "-q",
                "-i",
            ])
            .arg(data),
    )?;
    // Lines look like "    35.12%  [.] rv64::hart::Hart::step      -      -".
    Ok(report
        .lines()
        .filter_map(|l| {
            let (pct, rest) = l.trim().split_once('%')?;
            let k = rest
                .trim()
                .trim_start_matches("[.]")
                .trim_start_matches("[k]")
                .trim();
            // perf pads the column and may append empty fields ("  -  -").
            let k = k.split("  ").next().unwrap_or(k);
            Some((pct.trim().parse().ok()?, k.to_string()))
        })
        .collect())
}

fn perf(root: &Path, dir: &Path, ftvm: &Path, elf: &Path) -> Result<Profile> {
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
    let hot = perf_report(&data, "symbol")?
        .into_iter()
        .map(|(percent, s)| Hot {
            percent,
            what: format!("`{s}`"),
        })
        .collect();
    // Inlining folds most of the interpreter into one symbol, so source lines say more.
    eprintln!("bench: perf report --sort srcline (slow: a minute or so)");
    let sources = rust_sources(root);
    let lines = perf_report(&data, "srcline")?
        .into_iter()
        .map(|(percent, loc)| {
            let what = match source_text(&sources, &loc) {
                Some(t) if !t.is_empty() => format!("`{loc}` `{t}`"),
                _ => format!("`{loc}`"),
            };
            Hot { percent, what }
        })
        .collect();
    Ok(Profile {
        tool: "perf (cpu-clock sampling)".into(),
        command,
        hot,
        lines,
    })
}

/// The text of `file.rs:N` when `file.rs` is one of ours (perf prints base names only). Read
/// after the run: if the file was edited since the build, the text may be off.
fn source_text(sources: &[PathBuf], loc: &str) -> Option<String> {
    let (file, line) = loc.split_once(':')?;
    let line: usize = line.parse().ok()?;
    // Prefer library sources over tests/ and benches/ files of the same name.
    let named = |p: &&PathBuf| p.file_name().is_some_and(|f| f == file);
    let path = sources
        .iter()
        .filter(named)
        .find(|p| p.parent().is_some_and(|d| d.ends_with("src")))
        .or_else(|| sources.iter().find(named))?;
    let src = std::fs::read_to_string(path).ok()?;
    Some(src.lines().nth(line.checked_sub(1)?)?.trim().to_string())
}

/// Every `.rs` file under `crates/`.
fn rust_sources(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.join("crates")];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out
}

fn callgrind(dir: &Path, ftvm: &Path, elf: &Path) -> Result<Profile> {
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
            let sym = sym.split(" [").next().unwrap_or(sym);
            Some(Hot {
                percent: pct.trim().parse().ok()?,
                what: format!("`{sym}`"),
            })
        })
        .filter(|h| h.percent < 100.0)
        .collect();
    Ok(Profile {
        tool: "callgrind (instructions executed by the host)".into(),
        command,
        hot,
        lines: Vec::new(),
    })
}

fn file_name(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |f| f.to_string_lossy().into_owned(),
    )
}
