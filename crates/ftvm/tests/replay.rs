//! Record and replay: boot the Linux guest with `ftvm run --record`, type a few commands, power
//! off; then `ftvm replay` the log and check that it reproduces the console output exactly, and
//! that a damaged or tampered log is refused with exit code 2 and one line of explanation.
//!
//! Needs a guest built by `cargo xtask guest`: skipped with a message unless `FTVM_GUEST_DIR` is
//! set (`cargo xtask test` sets it, and `FTVM_REQUIRE_GUEST`, which makes a missing guest fail).

use guestctl::Console;
use replay::{Event, LogReader, LogWriter};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const FTVM: &str = env!("CARGO_BIN_EXE_ftvm");

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("replay");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{name}-{}", std::process::id()))
}

/// Runs `ftvm replay LOG`: (exit code, stdout without CR, stderr).
fn replay(log: &Path) -> (Option<i32>, String, String) {
    let (code, out, err, _) = guestctl::ftvm_replay::<&str>(FTVM, log, &[]);
    (code, out, err)
}

/// A bad log must give exit code 2 and exactly one line on stderr containing `want`.
fn refused(log: &Path, want: &str) {
    guestctl::replay_refused(FTVM, log, want);
}

#[test]
fn record_then_replay_linux() {
    record_then_replay(1);
}

/// Two harts: the replay must make the same multi-hart schedule as the recorded run.
#[test]
fn record_then_replay_linux_smp2() {
    record_then_replay(2);
}

fn record_then_replay(harts: usize) {
    let Some(guest) = guestctl::linux_guest_from_env() else {
        return;
    };
    let log = scratch(&format!("linux{harts}.log"));
    let mut cmd = Command::new(FTVM);
    cmd.arg("run")
        .args(guestctl::linux_boot_args(&guest))
        .args(["--smp", &harts.to_string()])
        .arg("--record")
        .arg(&log);
    let mut c = Console::spawn(cmd).expect("start ftvm run");
    let step = Duration::from_secs(120);
    c.wait_for("ftvm-guest: ready", Duration::from_secs(240))
        .unwrap();
    c.run("true", step).unwrap();
    let recorded = c.end_session(step);

    for i in 0..3 {
        let (code, out, err) = replay(&log);
        assert_eq!(code, Some(0), "replay {i}: {err}");
        assert_eq!(out, recorded, "replay {i} printed something else");
    }

    let bytes = std::fs::read(&log).unwrap();
    let truncated = scratch(&format!("truncated{harts}.log"));
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    refused(&truncated, "truncated");
    let cut_end = scratch(&format!("cut-end{harts}.log"));
    std::fs::write(&cut_end, &bytes[..bytes.len() - 3]).unwrap();
    refused(&cut_end, "truncated");
    let flipped = scratch(&format!("flipped{harts}.log"));
    let mut b = bytes.clone();
    let at = b.len() - 100;
    b[at] ^= 0x08;
    std::fs::write(&flipped, &b).unwrap();
    refused(&flipped, "bad log");

    // A well-formed log whose RAM digest differs: the replay finds the divergence there.
    let tampered = scratch(&format!("tampered{harts}.log"));
    let mut r = LogReader::new(bytes.as_slice()).unwrap();
    let header = r.header().clone();
    let mut w = LogWriter::new(Vec::new(), &header).unwrap();
    let mut changed = None;
    while let Some(mut e) = r.next_entry().unwrap() {
        if let (Event::StateDigest(parts), None) = (&mut e.event, changed) {
            if let Some(p) = parts.iter_mut().find(|p| p.id == replay::part::RAM) {
                p.digest[0] ^= 1;
                changed = Some(e.icount);
            }
        }
        w.append(&e).unwrap();
    }
    w.flush().unwrap();
    std::fs::write(&tampered, w.get_ref()).unwrap();
    let at = changed.expect("the log has a state digest");
    refused(
        &tampered,
        &format!("diverged at icount {at}: part ram differs"),
    );

    for f in [&log, &truncated, &cut_end, &flipped, &tampered] {
        let _ = std::fs::remove_file(f);
    }
}

/// A log recorded on one engine replays on the other (`--engine jit` and `--engine interp`), in
/// both directions: the replay checks every state digest the recording wrote (RAM, harts,
/// devices), so any difference between the engines fails it, and the console must be the same.
#[test]
fn a_log_recorded_on_one_engine_replays_on_the_other() {
    let Some(guest) = guestctl::linux_guest_from_env() else {
        return;
    };
    for (rec, rep) in [("jit", "interp"), ("interp", "jit")] {
        let log = scratch(&format!("cross-{rec}.log"));
        let mut cmd = Command::new(FTVM);
        cmd.args(["--engine", rec])
            .arg("run")
            .args(guestctl::linux_boot_args(&guest))
            .arg("--record")
            .arg(&log);
        let mut c = Console::spawn(cmd).expect("start ftvm run");
        let step = Duration::from_secs(120);
        c.wait_for("ftvm-guest: ready", Duration::from_secs(240))
            .unwrap();
        c.run("echo $((6*7)); ls / | wc -l", step).unwrap();
        let recorded = c.end_session(step);
        let (code, out, err, _) = guestctl::ftvm_replay(FTVM, &log, &["--engine", rep]);
        assert_eq!(code, Some(0), "recorded on {rec}, replayed on {rep}: {err}");
        assert_eq!(
            out, recorded,
            "recorded on {rec}, replayed on {rep}: the console differs"
        );
        let _ = std::fs::remove_file(&log);
    }
}
