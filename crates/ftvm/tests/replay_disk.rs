//! Disks in the input log: record Linux with a virtio disk (`ftvm run --drive ... --record`),
//! drive a workload that reads and writes the disk, reads entropy and takes console input, then
//! replay the log three times without the disk (the copy is deleted first): identical console
//! output each time. A log whose disk data was changed is refused (exit 2, one line). A
//! snapshot taken by the replay at a random icount in the middle of the workload, restored and
//! replayed to the end, finishes with the same console output and the same final digests.
//!
//! Needs a guest built by `cargo xtask guest`: skipped with a message unless `FTVM_GUEST_DIR` is
//! set (`cargo xtask test` sets it, and `FTVM_REQUIRE_GUEST`, which makes a missing guest fail).

use guestctl::Console;
use replay::{Event, LogReader, LogWriter};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const FTVM: &str = env!("CARGO_BIN_EXE_ftvm");
/// virtio-blk of the first drive: the highest virtio slot.
const DISK0: u32 = 7;

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("replay-disk");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{name}-{}", std::process::id()))
}

/// Runs `ftvm replay LOG ARGS`: (exit code, stdout without CR, stderr, seconds taken).
fn replay(log: &Path, args: &[&str]) -> (Option<i32>, String, String, f64) {
    guestctl::ftvm_replay(FTVM, log, args)
}

/// A bad log must give exit code 2 and exactly one line on stderr containing `want`.
fn refused(log: &Path, want: &str) -> String {
    guestctl::replay_refused(FTVM, log, want)
}

/// Rewrites `log` through `f`, which may change each entry; the result is well-formed.
fn rewrite(log: &[u8], mut f: impl FnMut(&mut replay::Entry)) -> Vec<u8> {
    let mut r = LogReader::new(log).unwrap();
    let header = r.header().clone();
    let mut w = LogWriter::new(Vec::new(), &header).unwrap();
    while let Some(mut e) = r.next_entry().unwrap() {
        f(&mut e);
        w.append(&e).unwrap();
    }
    w.flush().unwrap();
    w.get_ref().clone()
}

#[test]
fn record_then_replay_linux_with_a_disk() {
    record_then_replay(1);
}

#[test]
fn record_then_replay_linux_with_a_disk_smp2() {
    record_then_replay(2);
}

fn record_then_replay(harts: usize) {
    let Some(guest) = guestctl::linux_guest_from_env() else {
        return;
    };
    // Never write the cached image: the guest writes to a copy.
    let disk = scratch(&format!("disk{harts}.img"));
    std::fs::copy(guest.join("disk.img"), &disk).expect("copy disk image");
    let log = scratch(&format!("disk{harts}.log"));
    let mut cmd = Command::new(FTVM);
    cmd.arg("run")
        .args(guestctl::linux_boot_args(&guest))
        .args(["--smp", &harts.to_string()])
        .arg("--drive")
        // A slow disk (30 ms a read or flush on the host): requests stay in flight while the
        // guest runs on, and snapshots catch some in flight.
        .arg(format!("file={},delay=30", disk.display()))
        .arg("--record")
        .arg(&log);
    let mut c = Console::spawn(cmd).expect("start ftvm run");
    let step = Duration::from_secs(120);
    c.wait_for("ftvm-guest: ready", Duration::from_secs(240))
        .unwrap();
    c.run("true", step).unwrap();
    // /dev/vda is mounted on /mnt by the guest's init: read a file, the raw device, write and
    // sync a small and a larger file, read them back, then entropy.
    let hello = c.run("cat /mnt/hello.txt", step).unwrap();
    assert_eq!(hello.trim(), "hello from the ftvm disk", "{hello:?}");
    let raw = c
        .run("dd if=/dev/vda bs=64k count=64 2>/dev/null | wc -c", step)
        .unwrap();
    assert_eq!(raw.trim(), "4194304", "{raw:?}");
    let small = c
        .run(
            "echo disk-$((2+3)) > /mnt/t.txt && sync && cat /mnt/t.txt",
            step,
        )
        .unwrap();
    assert_eq!(small.trim(), "disk-5", "{small:?}");
    let big = c
        .run(
            "dd if=/dev/urandom of=/mnt/big bs=64k count=16 2>/dev/null; sync; wc -c < /mnt/big",
            step,
        )
        .unwrap();
    assert_eq!(big.trim(), "1048576", "{big:?}");
    // Drop the page cache (the kernel says so on the console), so that the file is read back
    // from the disk.
    c.run("echo 3 > /proc/sys/vm/drop_caches", step).unwrap();
    let sum = c.run("md5sum /mnt/big | wc -w", step).unwrap();
    assert_eq!(sum.trim(), "2", "{sum:?}");
    let recorded = c.end_session(step);

    // The replay needs no disk: prove it by deleting the copy first.
    std::fs::remove_file(&disk).unwrap();
    let bytes = std::fs::read(&log).unwrap();
    let mut r = LogReader::new(bytes.as_slice()).unwrap();
    let (mut reads, mut read_bytes, mut last, mut inputs) = (0u64, 0u64, 0u64, Vec::new());
    let mut prologue_bytes = 0;
    // Disk requests completed.
    let mut done = 0u64;
    // Where a replay stands after an idle skip that did not end in a completion: the guest
    // may wait there for its disk (snapshot points with requests in flight, likely).
    let (mut skipped_to, mut waits) = (None::<u64>, Vec::new());
    while let Some(e) = r.next_entry().unwrap() {
        if let Some(u) = skipped_to.take() {
            if e.icount > u {
                waits.push(u);
            }
        }
        if let Event::IdleSkip { until, .. } = e.event {
            skipped_to = Some(until);
        }
        if let Event::RequestDone { device, .. } = e.event {
            assert_eq!(device, DISK0);
            done += 1;
        }
        last = e.icount;
        if matches!(e.event, Event::ConfigChange(_)) {
            prologue_bytes = r.position().bytes;
        }
        match &e.event {
            Event::DeviceCompletion { device, data, .. } if *device == DISK0 => {
                reads += 1;
                read_bytes += data.len() as u64;
            }
            Event::DeviceCompletion { device: 0x100, .. } => inputs.push(e.icount),
            _ => {}
        }
    }
    assert!(reads > 10 && read_bytes > 4 << 20, "{reads} reads");
    // Every disk request completes at a logged point (format 6).
    assert!(
        done >= reads / 16,
        "{done} requests completed for {reads} reads"
    );
    eprintln!("disk/{harts}: {done} disk requests completed");
    let guest_secs = last as f64 / 100e6; // 100 M instructions per guest second (clock.rs)
    let mut times = Vec::new();
    for i in 0..3 {
        let (code, out, err, secs) = replay(&log, &[]);
        assert_eq!(code, Some(0), "replay {i}: {err}");
        assert_eq!(out, recorded, "replay {i} printed something else");
        times.push(secs);
    }
    let run_bytes = bytes.len() as u64 - prologue_bytes;
    eprintln!(
        "disk/{harts}: log {} bytes ({prologue_bytes} of prologue; {reads} disk reads of \
         {read_bytes} bytes), {guest_secs:.2} s of guest time: {:.0} bytes/s after the \
         prologue; replays took {times:.2?} s",
        bytes.len(),
        run_bytes as f64 / guest_secs
    );

    // Disk data changed in a well-formed log: the replayed guest reads other bytes, and the
    // next digest says so. The read of hello.txt's block is the one changed.
    let needle = b"hello from the ftvm disk";
    let mut changed = false;
    let tampered_bytes = rewrite(&bytes, |e| {
        if let Event::DeviceCompletion {
            device: DISK0,
            data,
            ..
        } = &mut e.event
        {
            if let Some(at) = data.windows(needle.len()).position(|w| w == needle) {
                if !changed {
                    data[at] ^= 0x20; // "Hello"
                    changed = true;
                }
            }
        }
    });
    assert!(changed, "hello.txt's data is in the log");
    let tampered = scratch(&format!("tampered-disk{harts}.log"));
    std::fs::write(&tampered, &tampered_bytes).unwrap();
    refused(&tampered, "diverged at icount");
    // A logged read moved to another offset: the replay names the disk read at once.
    let mut moved = None;
    let moved_bytes = rewrite(&bytes, |e| {
        if let Event::DeviceCompletion {
            device: DISK0,
            request,
            ..
        } = &mut e.event
        {
            if moved.is_none() {
                *request += 512;
                moved = Some(e.icount);
            }
        }
    });
    let moved_log = scratch(&format!("moved-disk{harts}.log"));
    std::fs::write(&moved_log, &moved_bytes).unwrap();
    let err = refused(&moved_log, "disk read");
    assert!(
        err.contains(&format!("diverged at icount {}", moved.unwrap())),
        "{err}"
    );
    // A completion of a request the guest never made (a hostile or corrupt log): named at once.
    let mut bogus = None;
    let bogus_bytes = rewrite(&bytes, |e| {
        if let Event::RequestDone { request, .. } = &mut e.event {
            if bogus.is_none() {
                *request += 1_000_000;
                bogus = Some(e.icount);
            }
        }
    });
    std::fs::write(&moved_log, &bogus_bytes).unwrap();
    let err = refused(
        &moved_log,
        "request done: virtio slot 7 cannot complete request",
    );
    assert!(
        err.contains(&format!("diverged at icount {}", bogus.unwrap())),
        "{err}"
    );

    // Snapshot in the middle of the workload (between the first command typed and the
    // poweroff) at a random icount, restore, finish: the same rest of the output, and every
    // digest after the snapshot (the final one included) matches the log. Then the same from
    // a snapshot with disk requests in flight: after idle skips inside the workload, tried in
    // a random order until one has (a few replays at most).
    let (first, end) = (inputs[0], *inputs.last().unwrap());
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    let at = first + seed % (end - first).max(1);
    eprintln!("disk/{harts}: snapshot at icount {at} or the next safe point (seed {seed})");
    let mut points: Vec<u64> = waits
        .into_iter()
        .filter(|&u| u > first && u < end)
        .collect();
    let n = points.len().max(1);
    points.rotate_left((seed as usize) % n);
    let snap = scratch(&format!("mid{harts}.snap"));
    let mut with_in_flight = 0;
    for (i, at) in std::iter::once(at)
        .chain(points.into_iter().take(5))
        .enumerate()
    {
        let (code, out, err, _) = replay(
            &log,
            &[
                "--snapshot-at",
                &at.to_string(),
                "--snapshot-out",
                snap.to_str().unwrap(),
            ],
        );
        assert_eq!(code, Some(0), "{err}");
        assert_eq!(out, recorded);
        assert!(err.contains("snapshot at icount"), "{err}");
        eprint!("disk/{harts}: {err}");
        let in_flight = guestctl::count_before(&err, " disk requests in flight")
            .unwrap_or_else(|| panic!("no in-flight count in {err:?}"));
        if i > 0 && in_flight == 0 {
            continue;
        }
        let (code, rest, err, _) = replay(&log, &["--restore", snap.to_str().unwrap()]);
        assert_eq!(
            code,
            Some(0),
            "restored replay ({in_flight} in flight): {err}"
        );
        assert!(
            !rest.is_empty() && rest.len() < recorded.len() && recorded.ends_with(&rest),
            "restored replay printed {rest:?}"
        );
        assert!(rest.contains("reboot: Power down"), "{rest:?}");
        if in_flight > 0 {
            with_in_flight = in_flight;
            break;
        }
    }
    assert!(
        with_in_flight > 0,
        "no snapshot point with a disk request in flight was found"
    );

    for f in [&log, &tampered, &moved_log, &snap] {
        let _ = std::fs::remove_file(f);
    }
}
