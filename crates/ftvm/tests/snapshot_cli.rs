//! `ftvm run --snapshot-out/--snapshot-at` and `--restore`: a bare-metal program that prints a
//! letter every few thousand instructions is snapshotted in the middle; the restored run prints
//! exactly the rest of the uninterrupted run's output and powers off the same way.

use std::path::PathBuf;
use std::process::Command;

const PROGRAM: &str = r#"
    .globl _start
_start:
    li s0, 0x10000000
    li s1, 0
1:  li t0, 26
    remu t1, s1, t0
    addi t1, t1, 65
    sb t1, 0(s0)
    li t2, 20000
2:  addi t2, t2, -1
    bnez t2, 2b
    addi s1, s1, 1
    li t0, 200
    blt s1, t0, 1b
    li t0, 0x100000
    li t1, 0x5555
    sw t1, 0(t0)
3:  j 3b
"#;

fn program() -> Option<PathBuf> {
    build("letters", PROGRAM)
}

fn build(name: &str, text: &str) -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("snapshot-cli");
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join(format!("{name}.S"));
    let elf = dir.join(format!("{name}.elf"));
    // Loaded raw at 0x8000_0000 (`--bios none`), as QEMU loads a bare kernel.
    std::fs::write(&src, text).unwrap();
    let st = Command::new("riscv64-unknown-elf-gcc")
        .args([
            "-march=rv64gc",
            "-mabi=lp64d",
            "-nostdlib",
            "-nostartfiles",
            "-Wl,-Ttext=0x80000000",
        ])
        .arg("-o")
        .arg(&elf)
        .arg(&src)
        .status();
    let bin = dir.join(format!("{name}.bin"));
    let st = st.and_then(|s| {
        if !s.success() {
            return Ok(s);
        }
        Command::new("riscv64-unknown-elf-objcopy")
            .args(["-O", "binary"])
            .arg(&elf)
            .arg(&bin)
            .status()
    });
    match st {
        Ok(s) if s.success() => Some(bin),
        _ => {
            guestctl::skip(
                "riscv64-unknown-elf-gcc failed or is missing: apt-get install gcc-riscv64-unknown-elf",
            );
            None
        }
    }
}

fn ftvm(elf: &PathBuf, extra: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ftvm"))
        .args(["run", "--bios", "none", "--mem", "16M", "--kernel"])
        .arg(elf)
        .args(extra)
        .output()
        .expect("run ftvm");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_restored_snapshot_finishes_the_run_exactly() {
    let Some(elf) = program() else { return };
    let snap = elf.with_file_name("mid.snap");
    let _ = std::fs::remove_file(&snap);
    let (code, whole, err) = ftvm(
        &elf,
        &[
            "--snapshot-out",
            snap.to_str().unwrap(),
            "--snapshot-at",
            "3333333",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(whole.len(), 200, "{whole:?}");
    assert!(err.contains("snapshot at icount 3333333"), "{err}");
    let (code, rest, err) = ftvm(&elf, &["--restore", snap.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(!rest.is_empty() && rest.len() < whole.len(), "{rest:?}");
    assert!(
        whole.ends_with(&rest),
        "restored: {rest:?}\nwhole: {whole:?}"
    );

    // Another configuration, or a damaged file: a one-line error, exit 2.
    let (code, _, err) = ftvm(&elf, &["--restore", snap.to_str().unwrap(), "--smp", "2"]);
    assert_eq!(code, 2, "{err}");
    let mut bytes = std::fs::read(&snap).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    let bad = elf.with_file_name("bad.snap");
    std::fs::write(&bad, &bytes).unwrap();
    let (code, _, err) = ftvm(&elf, &["--restore", bad.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// `--snapshot-out` without `--snapshot-at`: a snapshot each time the process gets SIGUSR1, at
/// the next slice boundary, and the run carries on; the last one restored finishes the run as
/// the uninterrupted one did.
#[test]
fn sigusr1_writes_a_snapshot_and_the_run_goes_on() {
    // The same letters, 500 times slower: a few seconds on the translating engine (the
    // default; 50 times slower, as this test had it for the interpreter, ended the run before
    // the second signal), longer on the interpreter.
    let Some(elf) = build(
        "slow-letters",
        &PROGRAM.replace("li t2, 20000", "li t2, 10000000"),
    ) else {
        return;
    };
    let snap = elf.with_file_name("signal.snap");
    let _ = std::fs::remove_file(&snap);
    let child = Command::new(env!("CARGO_BIN_EXE_ftvm"))
        .args(["run", "--bios", "none", "--mem", "16M", "--kernel"])
        .arg(&elf)
        .arg("--snapshot-out")
        .arg(&snap)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    for _ in 0..2 {
        std::thread::sleep(std::time::Duration::from_millis(700));
        // Written atomically (renamed into place): once it exists it is complete.
        let _ = std::fs::remove_file(&snap);
        // SAFETY: kill(2) with a valid signal number on our own child.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGUSR1) }, 0);
        let t0 = std::time::Instant::now();
        while !snap.exists() {
            assert!(t0.elapsed().as_secs() < 10, "no snapshot after SIGUSR1");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    let out = child.wait_with_output().unwrap();
    let whole = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(whole.len(), 200, "the run went on to its end: {whole:?}");
    let icounts: Vec<u64> = err
        .lines()
        .filter_map(|l| l.split("snapshot at icount ").nth(1))
        .map(|r| r.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(icounts.len(), 2, "{err}");
    assert!(icounts[0] < icounts[1], "{icounts:?}");
    let (code, rest, err) = ftvm(&elf, &["--restore", snap.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(!rest.is_empty() && rest.len() < whole.len(), "{rest:?}");
    assert!(
        whole.ends_with(&rest),
        "restored: {rest:?}\nwhole: {whole:?}"
    );
    // --snapshot-at with --record is refused, with a one-line reason (it would cut a run slice
    // short where the replayer does not).
    let (code, _, err) = ftvm(
        &elf,
        &[
            "--snapshot-out",
            "x.snap",
            "--snapshot-at",
            "5",
            "--record",
            "x.log",
        ],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--record"), "{err}");
}

fn replay(log: &std::path::Path, extra: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ftvm"))
        .arg("replay")
        .arg(log)
        .arg("--verbose")
        .args(extra)
        .output()
        .expect("run ftvm replay");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The summary line of `ftvm replay --verbose`: "replayed N entries to icount X (...)".
fn final_icount(err: &str) -> String {
    err.lines()
        .rev()
        .find_map(|l| l.split(" to icount ").nth(1))
        .unwrap_or_else(|| panic!("no summary in {err}"))
        .to_string()
}

/// `--record LOG --snapshot-out FILE`: each SIGUSR1 writes FILE.1, FILE.2, ... with the log
/// position, while console input (logged at slice boundaries, where the snapshots are taken
/// too) keeps coming; `ftvm replay LOG --restore FILE.n` replays the rest of the log from
/// there, through the digests, to the same end and with the same console output as the whole
/// replay. Another log refuses the snapshot.
#[test]
fn sigusr1_while_recording_gives_snapshots_a_replay_resumes_from() {
    use std::io::Write;
    let Some(elf) = build(
        "slow-letters-rec",
        &PROGRAM.replace("li t2, 20000", "li t2, 10000000"),
    ) else {
        return;
    };
    let snap = elf.with_file_name("rec.snap");
    let log = elf.with_file_name("rec-signal.log");
    let numbered = |n: u32| elf.with_file_name(format!("rec.snap.{n}"));
    for n in 1..=3 {
        let _ = std::fs::remove_file(numbered(n));
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_ftvm"))
        .args(["run", "--bios", "none", "--mem", "16M", "--kernel"])
        .arg(&elf)
        .arg("--record")
        .arg(&log)
        .arg("--snapshot-out")
        .arg(&snap)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let mut stdin = child.stdin.take().unwrap();
    for n in 1..=2 {
        for _ in 0..7 {
            std::thread::sleep(std::time::Duration::from_millis(50));
            let _ = stdin.write_all(b"typed");
        }
        // SAFETY: kill(2) with a valid signal number on our own child.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGUSR1) }, 0);
        let t0 = std::time::Instant::now();
        // Written atomically (renamed into place): once it exists it is complete.
        while !numbered(n).exists() {
            assert!(t0.elapsed().as_secs() < 10, "no snapshot {n} after SIGUSR1");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = stdin.write_all(b"more");
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let whole = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(whole.len(), 200, "the run went on to its end: {whole:?}");
    assert!(err.contains("(log entry "), "{err}");
    assert!(!numbered(3).exists());

    let (code, full, ferr) = replay(&log, &[]);
    assert_eq!(code, 0, "{ferr}");
    assert_eq!(full, whole);
    for n in 1..=2 {
        let s = numbered(n);
        let (code, rest, rerr) = replay(&log, &["--restore", s.to_str().unwrap()]);
        assert_eq!(code, 0, "snapshot {n}: {rerr}");
        assert!(!rest.is_empty() && rest.len() < whole.len(), "{rest:?}");
        assert!(
            whole.ends_with(&rest),
            "snapshot {n}: {rest:?}\nwhole: {whole:?}"
        );
        assert_eq!(final_icount(&rerr), final_icount(&ferr));
        // The plain run restores from it too (the position is not needed there).
        let (code, rest_run, rerr) = ftvm(&elf, &["--restore", s.to_str().unwrap()]);
        assert_eq!(code, 0, "{rerr}");
        assert!(whole.ends_with(&rest_run), "{rest_run:?}");
    }

    // Another recording of the same program: the snapshot is not its.
    let other = elf.with_file_name("rec-other.log");
    let (code, _, err) = ftvm(&elf, &["--record", other.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let s1 = numbered(1);
    let (code, _, err) = replay(&other, &["--restore", s1.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("another log"), "{err}");
    // A damaged position: an error, not a panic.
    let mut bytes = std::fs::read(&s1).unwrap();
    bytes[20] ^= 4;
    let bad = elf.with_file_name("rec-bad.snap");
    std::fs::write(&bad, &bytes).unwrap();
    let (code, _, err) = replay(&log, &["--restore", bad.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("damaged") && !err.contains("panicked"),
        "{err}"
    );
}
