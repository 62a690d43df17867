//! `docs/benchmarks.md`: machine facts and the generated sections, each between a pair of
//! `<!-- BEGIN xtask bench NAME -->` / `<!-- END xtask bench NAME -->` markers, so that the prose
//! around them is written by hand and survives every run.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use super::measure::Summary;

/// First line of a command's stdout, or "?" when it cannot run.
fn first_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_string))
        .unwrap_or_else(|| "?".to_string())
}

/// Date, CPUs, CPU model, load and tool versions, as markdown list items.
pub fn machine_facts() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|r| r.trim_start_matches([' ', '\t', ':']))
        })
        .unwrap_or("?")
        .to_string();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    let mut s = String::new();
    let _ = writeln!(
        s,
        "- date: {}",
        first_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
    );
    let _ = writeln!(
        s,
        "- machine: `nproc` = {}, CPU: {model}",
        first_line("nproc", &[])
    );
    let _ = writeln!(
        s,
        "- load average at the end of the run (1/5/15 min): {}",
        load.join(" ")
    );
    let _ = writeln!(
        s,
        "- {}; {}",
        first_line(&rustc, &["--version"]),
        first_line(super::elf::QEMU, &["--version"])
    );
    s
}

/// Replaces (or appends) the section `name` of docs/benchmarks.md with `body`.
pub fn replace_section(root: &Path, name: &str, body: &str) -> Result<()> {
    let path = root.join("docs").join("benchmarks.md");
    let old = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Benchmarks\n".to_string());
    let begin = format!("<!-- BEGIN xtask bench {name} -->");
    let end = format!("<!-- END xtask bench {name} -->");
    let block = format!("{begin}\n{body}{end}");
    let new = match (old.find(&begin), old.find(&end)) {
        (Some(b), Some(e)) if e > b => format!("{}{block}{}", &old[..b], &old[e + end.len()..]),
        _ => format!("{}\n{block}\n", old.trim_end()),
    };
    std::fs::create_dir_all(root.join("docs"))?;
    std::fs::write(&path, new).with_context(|| format!("cannot write {}", path.display()))
}

/// The generated part of the CPU benchmark's section.
pub fn write_cpu_section(
    root: &Path,
    table: &str,
    rows: &[Summary],
    reps: usize,
    qemu: bool,
    command: &str,
) -> Result<()> {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Produced by `{command}` ({reps} interleaved repetitions, best run and median{}).\n",
        if qemu {
            "; checksums identical on ftvm and QEMU"
        } else {
            "; QEMU not run"
        }
    );
    s.push_str(&machine_facts());
    s.push('\n');
    s.push_str(table);
    if let Some(all) = rows
        .iter()
        .find(|r| r.kernel == "all" && !r.instret.is_empty())
    {
        s.push_str(
            "\nInstructions per kernel inside the all-in-one run (the guest's `rdinstret`): ",
        );
        let parts: Vec<String> = all
            .instret
            .iter()
            .map(|(k, n)| format!("{k} {:.1} M", *n as f64 / 1e6))
            .collect();
        s.push_str(&parts.join(", "));
        s.push_str(".\n");
    }
    replace_section(root, "cpu", &s)
}
