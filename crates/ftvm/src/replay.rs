//! `ftvm replay LOG`: re-runs a run recorded with `ftvm run --record LOG`, from the initial
//! snapshot embedded in the log, feeding the logged inputs at their icounts (see
//! [`rr::Replayer`]), and prints the guest's console output to stdout. No disk, no terminal, no
//! wall clock: the replay is a pure function of the log.
//!
//! Exit codes: 0 when the log has been replayed to its end (and the guest powered off where
//! the log says it did), 2 on a divergence or a bad log.

use replay::{Entry, LogReader};
use rr::{Outbox, Prologue, ReplayError};
use std::io::{BufReader, Write};
use std::path::PathBuf;

/// Options of `ftvm replay`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The log written by `ftvm run --record`.
    #[arg(value_name = "LOG")]
    pub log: PathBuf,
    /// Print each entry to stderr as it is applied.
    #[arg(long)]
    pub verbose: bool,
}

/// Runs the command; returns the process exit code.
pub fn main(a: Args) -> i32 {
    let r = replay(&a);
    let _ = std::io::stdout().flush();
    match r {
        Ok(summary) => {
            if a.verbose {
                eprintln!("ftvm replay: {summary}");
            }
            0
        }
        Err(e) => {
            eprintln!("ftvm replay: {e}");
            2
        }
    }
}

fn next<R: std::io::Read>(r: &mut LogReader<R>) -> Result<Entry, ReplayError> {
    match r.next_entry()? {
        Some(e) => Ok(e),
        None => Err(ReplayError::Content(format!(
            "the log is truncated: it stops after {} entries, without an end marker",
            LogReader::position(r).entries
        ))),
    }
}

/// Prints what the guest wrote so far.
fn print(out: &Outbox) {
    let bytes = out.take();
    if !bytes.is_empty() {
        let _ = std::io::stdout().lock().write_all(&bytes);
    }
}

fn replay(a: &Args) -> Result<String, ReplayError> {
    let file = std::fs::File::open(&a.log).map_err(|source| ReplayError::Open {
        path: a.log.display().to_string(),
        source,
    })?;
    let mut r = LogReader::new(BufReader::new(file))?;
    let mut prologue = Prologue::new(r.header());
    while !prologue.feed(&next(&mut r)?)? {}
    let out = Outbox::default();
    let mut rp = prologue.into_replayer(out.clone())?;
    let mut entries = 0u64;
    loop {
        let e = next(&mut r)?;
        entries += 1;
        if a.verbose {
            eprintln!("ftvm replay: icount {} {}", e.icount, e.event.name());
        }
        let end = rp.apply(e);
        print(&out);
        if end? {
            break;
        }
    }
    if r.next_entry()?.is_some() {
        return Err(ReplayError::Content("entries after the end marker".into()));
    }
    Ok(format!(
        "replayed {entries} entries to icount {} ({})",
        rp.icount(),
        match rp.power() {
            Some(p) => format!("{p:?}"),
            None => "guest still running".into(),
        }
    ))
}
