//! `ftvm replay LOG`: re-runs a run recorded with `ftvm run --record LOG`, from the initial
//! snapshot embedded in the log, feeding the logged inputs at their icounts (see
//! [`rr::Replayer`]), and prints the guest's console output to stdout. No disk, no terminal, no
//! wall clock: the replay is a pure function of the log.
//!
//! With `--snapshot-at N --snapshot-out FILE` the replay writes a snapshot of the machine at
//! the first point at or after icount N where the replay holds nothing but the machine (no
//! logged input waiting for its device, not idle) and the log's next entry lies beyond it; with
//! `--restore FILE` it starts from such a snapshot instead of the log's initial one, skips the
//! entries up to the snapshot's icount and replays the rest (the same log: the digests after
//! it check that the run continues exactly). `--restore` also takes a snapshot written on
//! SIGUSR1 by `ftvm run --record LOG --snapshot-out FILE`, which carries its log position
//! ([`rr::SnapshotPosition`]): the entries before that position are skipped by index, since
//! entries at the snapshot's own icount may have been logged on either side of it. Disks need nothing: their reads are in the log,
//! except in a log recorded with `--disk-reads own` (an FT pair's), which holds only each
//! read's digest: `--drive file=IMAGE` then gives the image as it was when the recording began
//! (read through a private copy-on-write view: the replayed writes never reach the file).
//!
//! Exit codes: 0 when the log has been replayed to its end (and the guest powered off where
//! the log says it did), 2 on a divergence or a bad log.

use replay::{Entry, LogReader};
use rr::{BadLog, Outbox, Prologue, ReplayError};
use std::io::{BufReader, Write};
use std::path::PathBuf;

/// Why `ftvm replay` failed: the replay's own errors, and the command's (`--restore`, `--gdb`,
/// `--snapshot-at`).
#[derive(Debug, thiserror::Error)]
enum CmdError {
    /// The replay failed.
    #[error(transparent)]
    Replay(#[from] ReplayError),
    /// The `--restore` snapshot does not belong to this log, or not there.
    #[error("bad log: {path}: {why}")]
    Restore {
        /// The snapshot file.
        path: String,
        /// Why it does not fit.
        why: RestoreMismatch,
    },
    /// The gdb stub could not start.
    #[error("{0}")]
    Gdb(gdb::GdbError),
    /// `--snapshot-at` lies beyond every point where a snapshot can be taken.
    #[error(
        "bad log: no snapshot written: the log ends before a point where one can be taken at or \
         after icount {0}"
    )]
    NoSnapshotPoint(u64),
}

impl From<replay::ReadError> for CmdError {
    fn from(e: replay::ReadError) -> CmdError {
        CmdError::Replay(e.into())
    }
}

/// How a `--restore` snapshot does not fit the log.
#[derive(Debug, thiserror::Error)]
enum RestoreMismatch {
    /// Its log position is unreadable or names another log.
    #[error("{0}")]
    Position(rr::PositionError),
    /// Its log position lies inside the log's prologue.
    #[error(
        "its log position (entry {entry}) lies inside the log's prologue ({prologue} entries)"
    )]
    InPrologue {
        /// The position's entry.
        entry: u64,
        /// Entries of the prologue.
        prologue: u64,
    },
    /// Its machine and its log position disagree.
    #[error("its machine stands at icount {machine}, its log position at {position}")]
    Icount {
        /// The machine's icount.
        machine: u64,
        /// The position's icount.
        position: u64,
    },
}

/// Options of `ftvm replay`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The log written by `ftvm run --record`.
    #[arg(value_name = "LOG")]
    pub log: PathBuf,
    /// Print each entry to stderr as it is applied.
    #[arg(long)]
    pub verbose: bool,
    /// Write a snapshot of the replayed machine to FILE at the first safe point at or after
    /// --snapshot-at, then carry on.
    #[arg(
        long,
        value_name = "FILE",
        requires = "snapshot_at",
        conflicts_with = "restore"
    )]
    pub snapshot_out: Option<PathBuf>,
    /// The machine-wide instruction count from which --snapshot-out is taken.
    #[arg(long, value_name = "ICOUNT", requires = "snapshot_out")]
    pub snapshot_at: Option<u64>,
    /// Start from a snapshot written by `ftvm replay LOG --snapshot-out` for this same log, and
    /// replay the rest of the log.
    #[arg(long, value_name = "FILE")]
    pub restore: Option<PathBuf>,
    /// The disk images, in the recording's --drive order, for a log whose disk reads are
    /// logged by digest (recorded with --disk-reads own): the images as they were when the
    /// recording began. They are only read; the replayed writes stay in memory.
    #[arg(long, value_name = "file=PATH|nbd=ADDR[,...]")]
    pub drive: Vec<machine::DriveConfig>,
    /// Serve one gdb client on HOST:PORT (`target remote HOST:PORT`): the replay waits for it
    /// and stops before its first instruction. See docs/debugging.md.
    #[arg(long, value_name = "HOST:PORT")]
    pub gdb: Option<String>,
    /// With --gdb: stop before the first instruction (what a replay under gdb always does;
    /// accepted for symmetry with `ftvm run`).
    #[arg(long, requires = "gdb")]
    pub gdb_wait: bool,
}

/// Runs the command; returns the process exit code.
pub fn main(a: Args) -> i32 {
    let mut stub = None;
    // Console bytes printed so far: a pass replayed again after going back under gdb prints
    // only what lies beyond them.
    let mut printed = 0usize;
    let r = loop {
        let pass = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            replay(&a, &mut stub, &mut printed)
        }));
        match pass {
            Ok(r) => break r,
            // gdb went back: replay again from the start; the hook stops at the goal.
            Err(p) if gdb::Stub::is_travel(&*p) => {
                if let Some(s) = &stub {
                    s.new_pass();
                }
            }
            Err(p) => std::panic::resume_unwind(p),
        }
    };
    let _ = std::io::stdout().flush();
    if let Some(s) = stub {
        s.finish(if r.is_ok() { 0 } else { 2 });
    }
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
        None => Err(ReplayError::Content(BadLog::Truncated {
            entries: LogReader::position(r).entries,
        })),
    }
}

/// Prints what the guest wrote so far; `produced` counts this pass's bytes, `printed` those
/// printed by every pass (a pass replayed again under gdb prints only what is new).
fn print(out: &Outbox, produced: &mut usize, printed: &mut usize) {
    let bytes = out.take();
    let start = *produced;
    *produced += bytes.len();
    if *produced > *printed {
        let skip = printed.saturating_sub(start);
        let _ = std::io::stdout().lock().write_all(&bytes[skip..]);
        *printed = *produced;
    }
}

/// Writes a snapshot of the replayed machine (atomically: a temporary file renamed into place).
fn write_snapshot(rp: &rr::Replayer, path: &std::path::Path) -> Result<(), ReplayError> {
    let bytes = rp.machine().snapshot()?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, &bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|source| ReplayError::Open {
            path: path.display().to_string(),
            source,
        })?;
    eprintln!(
        "ftvm replay: snapshot at icount {} written to {} ({} bytes, {} disk requests in flight)",
        rp.icount(),
        path.display(),
        bytes.len(),
        rp.machine().io_in_flight()
    );
    Ok(())
}

fn replay(a: &Args, stub: &mut Option<gdb::Stub>, printed: &mut usize) -> Result<String, CmdError> {
    let mut produced = 0usize;
    let file = std::fs::File::open(&a.log).map_err(|source| ReplayError::Open {
        path: a.log.display().to_string(),
        source,
    })?;
    let mut r = LogReader::new(BufReader::new(file))?;
    let mut prologue = Prologue::new(r.header());
    // Entries of the prologue.
    let mut read = 0u64;
    loop {
        let e = next(&mut r)?;
        read += 1;
        if prologue.feed(&e)? {
            break;
        }
    }
    let out = Outbox::default();
    let mut rp = prologue.into_replayer(out.clone())?;
    if !a.drive.is_empty() {
        let cfg = machine::MachineConfig {
            drives: a
                .drive
                .iter()
                .cloned()
                .map(|mut d| {
                    d.readonly = true;
                    d
                })
                .collect(),
            ..machine::MachineConfig::default()
        };
        let disks = hostblk::open_disks(&cfg).map_err(|e| ReplayError::Open {
            path: "the --drive images".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let views = disks
            .into_iter()
            .map(|d| Box::new(rr::disk::CowDisk::new(d)) as Box<dyn machine::virtio::BlockBackend>)
            .collect();
        rp.set_local_disks(views)?;
    }
    // Entries at or before this icount are already in the restored machine (a snapshot of a
    // replay, taken where the next entry lies beyond it).
    let mut skip_to = None;
    if let Some(path) = &a.restore {
        let bytes = std::fs::read(path).map_err(|source| ReplayError::Open {
            path: path.display().to_string(),
            source,
        })?;
        let bad = |why| CmdError::Restore {
            path: path.display().to_string(),
            why,
        };
        match rr::SnapshotPosition::unwrap(&bytes).map_err(|e| bad(RestoreMismatch::Position(e)))? {
            Some((pos, snap)) => {
                pos.check_log(r.header())
                    .map_err(|e| bad(RestoreMismatch::Position(e)))?;
                if pos.entries < read || pos.bytes < r.position().bytes {
                    return Err(bad(RestoreMismatch::InPrologue {
                        entry: pos.entries,
                        prologue: read,
                    }));
                }
                rp.restore_snapshot(snap)?;
                if rp.icount() != pos.icount {
                    return Err(bad(RestoreMismatch::Icount {
                        machine: rp.icount(),
                        position: pos.icount,
                    }));
                }
                // The entries before the position are in the machine: go on from there
                // without reading them.
                r.seek_to(pos.log_position())?;
            }
            None => {
                rp.restore_snapshot(&bytes)?;
                skip_to = Some(rp.icount());
            }
        }
    }
    if let Some(addr) = a.gdb.as_ref().filter(|_| stub.is_none()) {
        let s = gdb::Stub::start(addr, rp.machine().harts(), true, true).map_err(CmdError::Gdb)?;
        *stub = Some(s);
    }
    let mut snapshot = a.snapshot_out.clone().zip(a.snapshot_at);
    let mut entries = 0u64;
    loop {
        let e = next(&mut r)?;
        if skip_to.is_some_and(|s| e.icount <= s) {
            continue;
        }
        if let Some((path, at)) = &snapshot {
            if rp.icount() >= *at && e.icount > rp.icount() && rp.at_rest() {
                write_snapshot(&rp, path)?;
                snapshot = None;
            }
        }
        entries += 1;
        if a.verbose {
            eprintln!("ftvm replay: icount {} {}", e.icount, e.event.name());
        }
        let end = rp.apply(e);
        print(&out, &mut produced, printed);
        if end? {
            break;
        }
    }
    if r.next_entry()?.is_some() {
        return Err(ReplayError::Content(BadLog::AfterEnd).into());
    }
    if let Some((_, at)) = snapshot {
        return Err(CmdError::NoSnapshotPoint(at));
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
