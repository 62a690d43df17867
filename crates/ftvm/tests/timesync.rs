//! Time-sync end to end: Linux under `ftvm run --record` runs a CPU-bound shell loop for a few
//! seconds; the guest's uptime must have advanced by the host's elapsed time to within the
//! time-sync bound (50 ms, either way) plus a slice and the console's round trip, whether the
//! interpreter is slower than the nominal 100 MIPS (a loaded host) or faster (a quiet one). The
//! log (with its time-sync and time-rate entries) replays.
//!
//! Needs a guest built by `cargo xtask guest` (`FTVM_GUEST_DIR`), else skipped.

use guestctl::Console;
use replay::{Event, LogReader};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const FTVM: &str = env!("CARGO_BIN_EXE_ftvm");

fn uptime(c: &mut Console) -> (f64, Instant) {
    let s = c.run("cat /proc/uptime", Duration::from_secs(60)).unwrap();
    let at = Instant::now();
    let up = s.split_whitespace().next().unwrap().parse().unwrap();
    (up, at)
}

#[test]
fn guest_time_tracks_wall_clock_under_record() {
    let Some(guest) = guestctl::linux_guest_from_env() else {
        return;
    };
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("timesync");
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join(format!("busy-{}.log", std::process::id()));
    let mut cmd = Command::new(FTVM);
    cmd.arg("run")
        .args(guestctl::linux_boot_args(&guest))
        .arg("--record")
        .arg(&log);
    let mut c = Console::spawn(cmd).expect("start ftvm run");
    c.wait_for("ftvm-guest: ready", Duration::from_secs(240))
        .unwrap();
    let (u0, t0) = uptime(&mut c);
    // About 3 s of CPU-bound shell arithmetic, whatever the host's speed.
    let busy = Instant::now();
    let mut n = 20_000;
    while busy.elapsed() < Duration::from_secs(3) {
        c.run(
            &format!("i=0; while [ $i -lt {n} ]; do i=$((i+1)); done; echo $i"),
            Duration::from_secs(120),
        )
        .unwrap();
        n *= 2;
    }
    let (u1, t1) = uptime(&mut c);
    let guest = u1 - u0;
    let host = (t1 - t0).as_secs_f64();
    eprintln!("guest uptime advanced {guest:.2} s, host time {host:.2} s");
    // /proc/uptime has 10 ms resolution; each reading reaches the host through the console
    // (a few ms to tens of ms on a loaded host); a slice is 2 M steps (under 20 ms at 100 MIPS).
    let slack = 0.05 + 0.02 + 0.25;
    assert!(
        guest >= host - slack,
        "guest time lags: {guest:.2} s for {host:.2} s"
    );
    assert!(
        guest <= host + slack,
        "guest time ran ahead: {guest:.2} s for {host:.2} s"
    );
    c.send(b"poweroff\n").unwrap();
    c.wait_for("reboot: Power down", Duration::from_secs(120))
        .unwrap();
    assert_eq!(c.wait_exit(Duration::from_secs(60)), Some(0));

    let bytes = std::fs::read(&log).unwrap();
    let mut r = LogReader::new(bytes.as_slice()).unwrap();
    let (mut syncs, mut rates) = (0, 0);
    while let Some(e) = r.next_entry().unwrap() {
        match e.event {
            Event::TimeSync { .. } => syncs += 1,
            Event::TimeRate { .. } => rates += 1,
            _ => {}
        }
    }
    eprintln!("{syncs} time-sync and {rates} time-rate entries in the log");
    let out = Command::new(FTVM).arg("replay").arg(&log).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_file(&log);
}
