//! Differential test against the reference machine: the same Linux guest booted on
//! `qemu-system-riscv64 -M virt` and on `ftvm run` must give the same answers to the same shell
//! commands (the kernel, the disk, the entropy device, a CPU-bound program, a disk write), and
//! both must power off cleanly.
//!
//! Needs the guest images of `cargo xtask guest`: `cargo xtask test` passes their directory in
//! `FTVM_GUEST_DIR` and sets `FTVM_REQUIRE_GUEST=1`, so that a missing guest is a failure there.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use guestctl::{Console, Guest, FW_JUMP};

/// Shell commands whose answers must not depend on the machine they run on.
const COMMANDS: &[&str] = &[
    "uname -s -r -m",
    "cat /mnt/hello.txt",
    "echo $((6 * 7))",
    "grep -c ^processor /proc/cpuinfo",
    "cat /sys/block/vda/size",
    "mount | grep -c ' /mnt '",
    "sha256sum /bin/busybox | cut -d' ' -f1",
    "ls /bin | wc -l",
    "dd if=/dev/hwrng bs=16 count=4 2>/dev/null | wc -c",
    "echo written-by-the-guest > /mnt/new.txt && sync && cat /mnt/new.txt",
    "cpubench 2",
    "ftmark 20",
];

fn scratch_disk(guest: &Path, tag: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("differential");
    std::fs::create_dir_all(&dir).unwrap();
    let disk = dir.join(format!("{tag}-{}.img", std::process::id()));
    std::fs::copy(guest.join("disk.img"), &disk).expect("copy the guest disk");
    disk
}

/// Boots, runs every command, powers off; returns the answers.
fn session(cmd: Command, boot_timeout: Duration) -> Vec<String> {
    let mut c = Console::spawn(cmd).expect("start the VM");
    c.wait_for("ftvm-guest: ready", boot_timeout).unwrap();
    // Let the shell print its first prompt before typing.
    c.run("true", boot_timeout).unwrap();
    let answers = COMMANDS
        .iter()
        .map(|q| {
            c.run(q, Duration::from_secs(240))
                .unwrap_or_else(|e| panic!("{q}: {e}"))
        })
        .collect();
    c.send(b"poweroff\n").unwrap();
    let code = c.wait_exit(Duration::from_secs(120));
    assert_eq!(
        code,
        Some(0),
        "the VM did not power off cleanly:\n{}",
        c.output()
    );
    answers
}

#[test]
fn same_answers_on_ftvm_and_qemu() {
    let Some(guest) = guestctl::guest_dir_from_env() else {
        return;
    };
    if !Path::new(FW_JUMP).exists() {
        panic!("{FW_JUMP} is missing: apt-get install opensbi");
    }
    let disk_q = scratch_disk(&guest, "qemu");
    let from_qemu = session(
        Guest::in_dir(&guest, disk_q.clone()).qemu_command(),
        Duration::from_secs(180),
    );
    let disk_f = scratch_disk(&guest, "ftvm");
    let ftvm = Path::new(env!("CARGO_BIN_EXE_ftvm"));
    let from_ftvm = session(
        Guest::in_dir(&guest, disk_f.clone()).ftvm_command(ftvm),
        Duration::from_secs(600),
    );

    for ((q, a), b) in COMMANDS.iter().zip(&from_qemu).zip(&from_ftvm) {
        eprintln!("$ {q}\n  qemu: {a:?}\n  ftvm: {b:?}");
        assert_eq!(a, b, "`{q}` answered differently: qemu {a:?}, ftvm {b:?}");
        assert!(!b.trim().is_empty(), "`{q}` printed nothing");
    }
    // The guest's write reached each machine's disk image.
    for disk in [&disk_q, &disk_f] {
        let img = std::fs::read(disk).unwrap();
        assert!(
            img.windows(21).any(|w| w == b"written-by-the-guest\n"),
            "{}",
            disk.display()
        );
        let _ = std::fs::remove_file(disk);
    }
}
