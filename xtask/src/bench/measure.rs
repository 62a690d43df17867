//! Running one ELF on ftvm or QEMU with a wall clock, parsing what it printed, and the summary
//! table over repetitions.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::elf::QEMU;

/// One run of one ELF.
#[derive(Clone, Debug)]
pub struct Run {
    /// Wall-clock seconds of the whole process (start-up, load, run, exit).
    pub wall: f64,
    /// `ftvm: icount=N seconds=S mips=M` (ftvm only).
    pub stats: Option<Stats>,
    /// `(kernel, checksum)` in the order printed.
    pub checksums: Vec<(String, String)>,
    /// `(kernel, instructions retired)` from the guest's own rdinstret lines (exact on ftvm only).
    pub instret: Vec<(String, u64)>,
}

/// ftvm's `--stats` line.
#[derive(Clone, Copy, Debug)]
pub struct Stats {
    /// Instructions retired.
    pub icount: u64,
    /// Seconds ftvm spent executing (its own measurement).
    pub seconds: f64,
}

/// Runs `cmd` to completion or until `timeout`, returning (status, stdout, stderr, wall seconds).
fn timed(
    mut cmd: Command,
    timeout: u64,
) -> Result<(std::process::ExitStatus, String, String, f64)> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    let mut out = child.stdout.take().context("no stdout")?;
    let mut err = child.stderr.take().context("no stderr")?;
    let t_out = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let limit = Duration::from_secs(timeout);
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{cmd:?} still running after {timeout} s: killed");
        }
        std::thread::sleep(Duration::from_micros(500));
    };
    let wall = start.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&t_out.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&t_err.join().unwrap_or_default()).into_owned();
    Ok((status, stdout, stderr, wall))
}

/// What the guest printed: `(kernel, checksum)` and `(kernel, instructions retired)` pairs.
type GuestOutput = (Vec<(String, String)>, Vec<(String, u64)>);

/// Parses the guest's UART output; it must have reached `done`.
fn parse_guest(stdout: &str) -> Result<GuestOutput> {
    let mut sums = Vec::new();
    let mut instret = Vec::new();
    let mut done = false;
    for line in stdout.lines().map(|l| l.trim()) {
        if line == "done" {
            done = true;
        } else if let Some((k, v)) = line.split_once(": checksum=") {
            sums.push((k.to_string(), v.to_string()));
        } else if let Some((k, v)) = line.split_once(": instret=0x") {
            instret.push((k.to_string(), u64::from_str_radix(v, 16).unwrap_or(0)));
        }
    }
    if !done {
        bail!("the guest did not finish (no `done` line); it printed:\n{stdout}");
    }
    Ok((sums, instret))
}

/// Parses `ftvm: icount=N seconds=S mips=M` from ftvm's stderr.
fn parse_stats(stderr: &str) -> Option<Stats> {
    let line = stderr.lines().find(|l| l.starts_with("ftvm: icount="))?;
    let mut icount = None;
    let mut seconds = None;
    for kv in line.trim_start_matches("ftvm:").split_whitespace() {
        match kv.split_once('=') {
            Some(("icount", v)) => icount = v.parse().ok(),
            Some(("seconds", v)) => seconds = v.parse().ok(),
            _ => {}
        }
    }
    Some(Stats {
        icount: icount?,
        seconds: seconds?,
    })
}

/// `ftvm --engine ENGINE run-elf ELF --stats`.
pub fn ftvm(ftvm: &Path, elf: &Path, timeout: u64, engine: &str) -> Result<Run> {
    let mut cmd = Command::new(ftvm);
    cmd.args(["--engine", engine])
        .arg("run-elf")
        .arg(elf)
        .arg("--stats");
    let (st, stdout, stderr, wall) = timed(cmd, timeout)?;
    if !st.success() {
        bail!(
            "ftvm run-elf {} failed ({st}):\n{stdout}\n{stderr}",
            elf.display()
        );
    }
    let stats = parse_stats(&stderr);
    if stats.is_none() {
        bail!("ftvm printed no `ftvm: icount=N seconds=S mips=M` line on stderr:\n{stderr}");
    }
    let (checksums, instret) = parse_guest(&stdout)?;
    Ok(Run {
        wall,
        stats,
        checksums,
        instret,
    })
}

/// `qemu-system-riscv64 -M virt -bios none -nographic -kernel ELF`, timed as a whole process.
pub fn qemu(elf: &Path, timeout: u64) -> Result<Run> {
    let mut cmd = Command::new(QEMU);
    cmd.args([
        "-M",
        "virt",
        "-bios",
        "none",
        "-nographic",
        "-monitor",
        "none",
        "-serial",
        "stdio",
    ]);
    cmd.arg("-kernel").arg(elf);
    let (st, stdout, stderr, wall) = timed(cmd, timeout)?;
    if !st.success() {
        bail!(
            "{QEMU} on {} failed ({st}):\n{stdout}\n{stderr}",
            elf.display()
        );
    }
    let (checksums, _) = parse_guest(&stdout)?;
    Ok(Run {
        wall,
        stats: None,
        checksums,
        instret: Vec::new(),
    })
}

/// The smallest value (NaN for none).
fn best(v: &[f64]) -> f64 {
    v.iter().copied().reduce(f64::min).unwrap_or(f64::NAN)
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Best (smallest) and median times over the repetitions of one ELF, and what disagreed. On a
/// shared machine other work only ever adds time, so the best run is the least noisy estimate;
/// the median shows how noisy the run was.
pub struct Summary {
    /// ELF name (`int`, `all`, ...).
    pub kernel: String,
    /// Instructions retired on ftvm (identical in every run, else a problem is recorded).
    pub icount: u64,
    /// Best wall-clock seconds of the ftvm process.
    pub ftvm_wall: f64,
    /// Median wall-clock seconds of the ftvm process.
    pub ftvm_median: f64,
    /// Best of ftvm's own execution seconds.
    pub ftvm_exec: f64,
    /// Best wall-clock seconds of the QEMU process (NaN without QEMU).
    pub qemu_wall: f64,
    /// Checksums of the first ftvm run.
    pub checksums: Vec<(String, String)>,
    /// Per-kernel instructions from the guest's rdinstret (first ftvm run).
    pub instret: Vec<(String, u64)>,
    /// Human-readable disagreements.
    pub problems: Vec<String>,
}

impl Summary {
    /// Folds the runs of one ELF; `qemu` may be empty.
    pub fn new(kernel: &str, ftvm: Vec<Run>, qemu: Vec<Run>) -> Summary {
        let first = &ftvm[0];
        let icount = first.stats.map_or(0, |s| s.icount);
        let mut problems = Vec::new();
        for (i, r) in ftvm.iter().enumerate().skip(1) {
            if r.checksums != first.checksums {
                problems.push(format!(
                    "{kernel}: ftvm run {} printed other checksums than run 1",
                    i + 1
                ));
            }
            if r.stats.map(|s| s.icount) != first.stats.map(|s| s.icount) {
                problems.push(format!(
                    "{kernel}: ftvm run {} retired another number of instructions",
                    i + 1
                ));
            }
        }
        for (i, r) in qemu.iter().enumerate() {
            if r.checksums != first.checksums {
                problems.push(format!(
                    "{kernel}: QEMU run {} checksums {:?} != ftvm {:?}",
                    i + 1,
                    r.checksums,
                    first.checksums
                ));
            }
        }
        let walls: Vec<f64> = ftvm.iter().map(|r| r.wall).collect();
        Summary {
            kernel: kernel.to_string(),
            icount,
            ftvm_wall: best(&walls),
            ftvm_median: median(walls),
            ftvm_exec: best(
                &ftvm
                    .iter()
                    .filter_map(|r| r.stats.map(|s| s.seconds))
                    .collect::<Vec<_>>(),
            ),
            qemu_wall: best(&qemu.iter().map(|r| r.wall).collect::<Vec<_>>()),
            checksums: first.checksums.clone(),
            instret: first.instret.clone(),
            problems,
        }
    }
}

/// The results as a markdown table: best times of the interpreter (`interp`) and the JIT
/// (`jit`), their MIPS from ftvm's own execution time (load and start-up excluded), QEMU's "MIPS"
/// from the same instruction count over its whole process time, and the ratios of the
/// whole-process times to QEMU's.
pub fn table(interp: &[Summary], jit: &[Summary], with_qemu: bool) -> String {
    let mut t = String::new();
    if with_qemu {
        t.push_str("| kernel | instructions | interp s | interp MIPS | jit s | jit s (median) | jit MIPS | qemu s | qemu MIPS | interp/qemu | jit/qemu |\n");
        t.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    } else {
        t.push_str("| kernel | instructions | interp s | interp MIPS | jit s | jit s (median) | jit MIPS | jit/interp |\n");
        t.push_str("|---|---:|---:|---:|---:|---:|---:|---:|\n");
    }
    for (r, j) in interp.iter().zip(jit) {
        t.push_str(&format!(
            "| {} | {} | {:.3} | {} | {:.3} | {:.3} | {} |",
            r.kernel,
            group(r.icount),
            r.ftvm_wall,
            rate(r.icount, r.ftvm_exec),
            j.ftvm_wall,
            j.ftvm_median,
            rate(j.icount, j.ftvm_exec),
        ));
        if with_qemu {
            t.push_str(&format!(
                " {:.3} | {} | {:.2} | {:.2} |",
                r.qemu_wall,
                rate(r.icount, r.qemu_wall),
                r.ftvm_wall / r.qemu_wall,
                j.ftvm_wall / r.qemu_wall
            ));
        } else {
            t.push_str(&format!(" {:.2} |", j.ftvm_wall / r.ftvm_wall));
        }
        t.push('\n');
    }
    t
}

/// Millions of instructions per second, or "–" for runs too short to mean anything (start-up).
fn rate(icount: u64, seconds: f64) -> String {
    if icount < 1_000_000 {
        "–".to_string()
    } else {
        format!("{:.0}", icount as f64 / seconds / 1e6)
    }
}

/// 123456789 → "123,456,789".
fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stats_and_guest_output() {
        let s = parse_stats("x\nftvm: icount=1234 seconds=0.5 mips=2.468\n").unwrap();
        assert_eq!(s.icount, 1234);
        assert_eq!(s.seconds, 0.5);
        let (sums, ir) = parse_guest("int: checksum=0x01\r\nint: instret=0x10\ndone\n").unwrap();
        assert_eq!(sums, vec![("int".to_string(), "0x01".to_string())]);
        assert_eq!(ir, vec![("int".to_string(), 16)]);
        assert!(parse_guest("int: checksum=0x01\n").is_err());
    }

    #[test]
    fn groups_digits() {
        assert_eq!(group(1), "1");
        assert_eq!(group(1234), "1,234");
        assert_eq!(group(123456789), "123,456,789");
    }
}
