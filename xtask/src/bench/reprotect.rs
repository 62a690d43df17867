//! `cargo xtask bench --reprotect`: how fast redundancy comes back. For each guest size (256 MiB,
//! 1 GiB) and load (idle at the counter; `cpubench` looping in the guest's background), one
//! `ftvm pair --demo` run on 127.0.0.1 whose primary is SIGKILLed `kills` times; after each
//! failover the pair protects the new primary again by itself (a new backup made by a live
//! clone of the running machine). From the processes' own reports: the clone's total time, its
//! rounds and bytes, the guest's pause for the closing delta, and the time from the kill to the
//! first answer of the new primary and to protected again. Written to the `reprotect` section of
//! docs/benchmarks.md.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use guestctl::FW_JUMP;

use super::doc;
use crate::guest;

/// What one configuration measured.
struct Run {
    mem: &'static str,
    load: &'static str,
    /// Each live clone's figures.
    clones: Vec<Clone>,
    /// Kill → first answer of the new primary (ms), per kill.
    failover: Vec<f64>,
    /// Kill → protected again (ms), per kill.
    protected: Vec<f64>,
}

/// The numbers inside `[a, b, c]` after `key` on some line of `text`.
fn list_after(text: &str, key: &str) -> Vec<f64> {
    text.lines()
        .find_map(|l| l.split_once(key).map(|(_, r)| r))
        .and_then(|r| r.split_once('[').map(|(_, r)| r))
        .and_then(|r| r.split_once(']').map(|(l, _)| l))
        .map(|l| l.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// One live clone, from the `protected_again` event's fields.
struct Clone {
    total_ms: f64,
    pause_ms: f64,
    rounds: f64,
    wire_mb: f64,
    delta_mb: f64,
}

/// The value of `key=` on a text-format event line.
fn event_field(line: &str, key: &str) -> Option<f64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

/// Every `protected_again` event of the new primaries.
fn clones(stderr: &str) -> Vec<Clone> {
    stderr
        .lines()
        .filter(|l| l.contains("event=\"protected_again\""))
        .filter_map(|l| {
            Some(Clone {
                total_ms: event_field(l, "total_ms")?,
                pause_ms: event_field(l, "pause_ms")?,
                rounds: event_field(l, "rounds")?,
                wire_mb: event_field(l, "wire_bytes")? / 1e6,
                delta_mb: event_field(l, "delta_bytes")? / 1e6,
            })
        })
        .collect()
}

fn one(
    ftvm: &Path,
    g: &guest::GuestPaths,
    mem: &'static str,
    load: &'static str,
    kills: u32,
) -> Result<Run> {
    let dir = std::env::temp_dir().join(format!("ftvm-bench-reprotect-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let free = || -> Result<u16> {
        Ok(std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port())
    };
    let mut cmd = Command::new(ftvm);
    cmd.args([
        "pair",
        "--bios",
        FW_JUMP,
        "--mem",
        mem,
        "--append",
        "console=ttyS0",
    ])
    .arg("--kernel")
    .arg(&g.kernel)
    .arg("--initrd")
    .arg(&g.initramfs)
    .args(["--demo", "10", "--demo-kills", &kills.to_string()])
    .args(["--demo-total", &(10 * u64::from(kills) + 5).to_string()])
    .arg("--arbiter")
    .arg(format!("file:{}", dir.join("arbiter").display()))
    .args(["--channel", &format!("127.0.0.1:{}", free()?)])
    .args(["--primary-console", &format!("127.0.0.1:{}", free()?)])
    .args(["--backup-console", &format!("127.0.0.1:{}", free()?)]);
    if load != "idle" {
        cmd.args(["--demo-load", load]);
    }
    let out = cmd.output().context("running ftvm pair")?;
    let _ = std::fs::remove_dir_all(&dir);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    if !out.status.success() {
        bail!(
            "ftvm pair --mem {mem} ({load}) failed: {}\n{stderr}",
            out.status
        );
    }
    let run = Run {
        mem,
        load,
        clones: clones(&stderr),
        failover: list_after(&stdout, "first answer of the new primary"),
        protected: list_after(&stdout, "protected again"),
    };
    if run.clones.len() != kills as usize || run.protected.len() != kills as usize {
        bail!(
            "ftvm pair --mem {mem} ({load}): expected {kills} re-protections\n{stdout}\n{stderr}"
        );
    }
    Ok(run)
}

fn stats(v: &[f64]) -> String {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => "–".into(),
        // Small figures (a pause under 10 ms) keep a decimal.
        n if s[n - 1] < 10.0 => format!("{:.1} / {:.1}", s[n / 2], s[n - 1]),
        n => format!("{:.0} / {:.0}", s[n / 2], s[n - 1]),
    }
}

/// Runs the benchmark and writes its section.
pub fn main(root: &Path, ftvm: &Path, kills: u32, no_doc: bool, command: String) -> Result<()> {
    let g = guest::build(&guest::BuildOptions::default()).context("building the guest")?;
    let mut runs = Vec::new();
    for mem in ["256M", "1G"] {
        for load in ["idle", "cpubench 100000"] {
            eprintln!("bench reprotect: --mem {mem}, {load}: {kills} kills");
            runs.push(one(ftvm, &g, mem, load, kills)?);
        }
    }
    let mut body = String::new();
    let _ = writeln!(
        body,
        "Produced by `{command}`: one `ftvm pair --demo 10 --demo-kills {kills}` per row (console \
         counter, 127.0.0.1), the primary SIGKILLed {kills} times, the pair protecting the new \
         primary again by itself after each failover, by a live clone (RAM copied while the \
         guest runs, then the guest paused for the closing delta). Median / max over the {kills} \
         re-protections; MB means per clone.\n"
    );
    let _ = writeln!(body, "{}\n", doc::machine_facts());
    let _ = writeln!(
        body,
        "| guest | load | clone rounds | pages on the wire MB | closing delta MB | guest pause ms | clone total ms | kill → new primary answers, ms | kill → protected again, ms |"
    );
    let _ = writeln!(body, "|---|---|---:|---:|---:|---:|---:|---:|---:|");
    let mean = |v: Vec<f64>| v.iter().sum::<f64>() / v.len().max(1) as f64;
    for r in &runs {
        let c = &r.clones;
        let _ = writeln!(
            body,
            "| {} | {} | {} | {:.1} | {:.2} | {} | {} | {} | {} |",
            r.mem,
            r.load,
            stats(&c.iter().map(|c| c.rounds).collect::<Vec<_>>()),
            mean(c.iter().map(|c| c.wire_mb).collect()),
            mean(c.iter().map(|c| c.delta_mb).collect()),
            stats(&c.iter().map(|c| c.pause_ms).collect::<Vec<_>>()),
            stats(&c.iter().map(|c| c.total_ms).collect::<Vec<_>>()),
            stats(&r.failover),
            stats(&r.protected)
        );
    }
    print!("{body}");
    if !no_doc {
        doc::replace_section(root, "reprotect", &body)?;
        eprintln!("bench reprotect: docs/benchmarks.md updated");
    }
    Ok(())
}
