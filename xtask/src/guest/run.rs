//! Running long build commands: output goes to a log file, the terminal gets one progress line
//! every few seconds (or everything, with `--verbose`), and a failure shows the log's tail.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How often a quiet build reports that it is still alive.
const PROGRESS_EVERY: Duration = Duration::from_secs(15);

/// Lines of the log shown when a command fails.
const TAIL_LINES: usize = 40;

/// Runs `cmd` as the step `what`, logging its stdout and stderr to `log`.
pub fn logged(cmd: &mut Command, what: &str, log: &Path, verbose: bool) -> Result<()> {
    let started = Instant::now();
    println!("guest: {what} (log: {})", log.display());
    let mut logf = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    writeln!(logf, "$ {cmd:?}")?;
    let (reader, writer) = std::io::pipe()?;
    cmd.stdin(Stdio::null())
        .stdout(writer.try_clone()?)
        .stderr(writer);
    let mut child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
    // Drop our copies of the pipe's write end, or the reader would never see end-of-file.
    cmd.stdout(Stdio::null()).stderr(Stdio::null());

    let (tx, rx) = mpsc::channel::<String>();
    let pump = std::thread::spawn(move || {
        for line in BufReader::new(reader).split(b'\n') {
            let Ok(line) = line else { break };
            if tx
                .send(String::from_utf8_lossy(&line).into_owned())
                .is_err()
            {
                break;
            }
        }
    });
    let mut last = String::new();
    let mut tail: Vec<String> = Vec::new();
    let mut next_report = Instant::now() + PROGRESS_EVERY;
    loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(line) => {
                writeln!(logf, "{line}")?;
                if verbose {
                    println!("{line}");
                }
                if tail.len() == TAIL_LINES {
                    tail.remove(0);
                }
                tail.push(line.clone());
                if !line.trim().is_empty() {
                    last = line;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if !verbose && Instant::now() >= next_report {
            println!("guest:   [{what} {}] {}", elapsed(started), last.trim());
            next_report = Instant::now() + PROGRESS_EVERY;
        }
    }
    pump.join().ok();
    let status = child.wait()?;
    if !status.success() {
        if !verbose {
            for l in &tail {
                eprintln!("  | {l}");
            }
        }
        bail!("{what} failed ({status}); full log in {}", log.display());
    }
    println!("guest: {what} done ({})", elapsed(started));
    Ok(())
}

/// Runs a short command, capturing its output; fails with that output if it fails.
pub fn capture(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `1m05s` or `12.3s`.
pub fn elapsed(since: Instant) -> String {
    let s = since.elapsed().as_secs_f64();
    if s >= 60.0 {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!("{s:.1}s")
    }
}
