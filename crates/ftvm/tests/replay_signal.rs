//! A snapshot on SIGUSR1 while recording Linux (`ftvm run --record LOG --snapshot-out SNAP`):
//! the replay resumed from it (`ftvm replay LOG --restore SNAP.1`) passes the rest of the log's
//! digests and prints exactly the end of the whole replay's console output.
//!
//! Needs a guest built by `cargo xtask guest`: skipped with a message unless `FTVM_GUEST_DIR` is
//! set (`FTVM_REQUIRE_GUEST` makes a missing guest fail).

use guestctl::Console;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const FTVM: &str = env!("CARGO_BIN_EXE_ftvm");

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("replay-signal");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{name}-{}", std::process::id()))
}

/// `ftvm replay LOG --verbose [extra]`: (exit code, stdout without CR, stderr).
fn replay(log: &Path, extra: &[&std::ffi::OsStr]) -> (Option<i32>, String, String) {
    let args: Vec<&std::ffi::OsStr> = std::iter::once("--verbose".as_ref())
        .chain(extra.iter().copied())
        .collect();
    let (code, out, err, _) = guestctl::ftvm_replay(FTVM, log, &args);
    (code, out, err)
}

fn summary(err: &str) -> &str {
    err.lines()
        .rev()
        .find_map(|l| l.split(" to icount ").nth(1))
        .unwrap_or_else(|| panic!("no summary in {err}"))
}

#[test]
fn replay_resumes_from_a_snapshot_taken_on_sigusr1_while_recording() {
    let Some(guest) = guestctl::linux_guest_from_env() else {
        return;
    };
    let log = scratch("linux.log");
    let snap = scratch("linux.snap");
    let mut cmd = Command::new(FTVM);
    cmd.arg("run")
        .args(guestctl::linux_boot_args(&guest))
        .arg("--record")
        .arg(&log)
        .arg("--snapshot-out")
        .arg(&snap);
    let mut c = Console::spawn(cmd).expect("start ftvm run");
    let step = Duration::from_secs(120);
    c.wait_for("ftvm-guest: ready", Duration::from_secs(240))
        .unwrap();
    c.run("true", step).unwrap();
    let mut first = snap.clone().into_os_string();
    first.push(".1");
    let first = PathBuf::from(first);
    // SAFETY: kill(2) with a valid signal number on our own child.
    assert_eq!(unsafe { libc::kill(c.id() as i32, libc::SIGUSR1) }, 0);
    let t0 = std::time::Instant::now();
    while !first.exists() {
        assert!(t0.elapsed() < step, "no snapshot after SIGUSR1");
        std::thread::sleep(Duration::from_millis(20));
    }
    // After the snapshot: typed input, entropy, a computation.
    let recorded = c.end_session(step);

    let (code, whole, werr) = replay(&log, &[]);
    assert_eq!(code, Some(0), "whole replay: {werr}");
    assert_eq!(whole, recorded, "the whole replay printed something else");
    let (code, rest, rerr) = replay(&log, &["--restore".as_ref(), first.as_os_str()]);
    assert_eq!(code, Some(0), "replay from the snapshot: {rerr}");
    assert!(rest.contains("42"), "{rest:?}");
    assert!(
        rest.len() < whole.len() && whole.ends_with(&rest),
        "{rest:?}"
    );
    assert_eq!(summary(&rerr), summary(&werr));
}
