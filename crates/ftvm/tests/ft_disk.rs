//! Disks under fault tolerance: a shared disk (both sides reach one image; only the live
//! primary writes, its writes wait for the backup's acknowledgement, the backup re-issues the
//! unconfirmed ones at go-live). The guest appends numbered, checksummed records with fsync
//! (`appendlog`) while the primary is SIGKILLed at a random moment; afterwards the disk image
//! must hold every record the guest reported durable, in order, none torn.

mod ft_support;

use ft_support::*;
use std::path::Path;
use std::time::{Duration, Instant};

/// CRC-32 (IEEE), as appendlog computes it.
fn crc32(b: &[u8]) -> u32 {
    let mut c = 0xffff_ffffu32;
    for &x in b {
        c ^= u32::from(x);
        for _ in 0..8 {
            c = (c >> 1) ^ (0xedb8_8320 & (c & 1).wrapping_neg());
        }
    }
    !c
}

/// The records in `text`: checks numbering from 1, checksums and no torn line; their count.
fn check_records(text: &str) -> u64 {
    let mut n = 0;
    for line in text.split_inclusive('\n') {
        assert!(line.ends_with('\n'), "a torn record: {line:?}");
        let line = line.trim_end();
        let (body, crc) = line.rsplit_once(' ').expect("record has a checksum");
        let seq: u64 = body
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .expect("record number");
        assert_eq!(seq, n + 1, "records out of order at {line:?}");
        assert_eq!(
            u32::from_str_radix(crc, 16).unwrap(),
            crc32(body.as_bytes()),
            "bad checksum: {line:?}"
        );
        n = seq;
    }
    n
}

/// A file of an ext2 image, read with debugfs (e2fsprogs).
fn read_file(img: &Path, name: &str) -> String {
    let out = std::process::Command::new("debugfs")
        .args(["-R", &format!("cat /{name}")])
        .arg(img)
        .output()
        .expect("debugfs (apt-get install e2fsprogs)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn runs() -> u64 {
    std::env::var("FTVM_FT_DISK_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10)
}

fn scratch_image(g: &Path, name: &str) -> std::path::PathBuf {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ft-disk");
    std::fs::create_dir_all(&dir).unwrap();
    let img = dir.join(format!("{name}-{}.img", std::process::id()));
    std::fs::copy(g.join("disk.img"), &img).unwrap();
    img
}

fn drive(img: &Path) -> Vec<String> {
    vec!["--drive".into(), format!("file={}", img.display())]
}

/// Has the guest append records until `want` are reported durable
/// (SIGKILL to the primary once `kill_at` are), then stops the writer and powers off; returns
/// how many records were reported durable.
fn append_until(
    c: &mut ft::console::client::ConsoleClient,
    p: &mut Pair,
    want: u64,
    kill_at: Option<u64>,
) -> u64 {
    c.send(b"appendlog /mnt/records 100000 5\n").unwrap();
    let mut durable = 0u64;
    let deadline = Instant::now() + Duration::from_secs(90);
    while durable < want {
        assert!(Instant::now() < deadline, "too slow\n{}", p.logs());
        let line = c
            .read_line_until(|l| l.contains(" durable"), Duration::from_secs(30))
            .unwrap()
            .unwrap_or_else(|| panic!("no record reported\n{}", p.logs()));
        let n: u64 = line
            .split_whitespace()
            .nth(2)
            .and_then(|x| x.parse().ok())
            .unwrap_or_else(|| panic!("{line:?}"));
        assert_eq!(n, durable + 1, "reports out of order\n{}", p.logs());
        durable = n;
        if kill_at == Some(durable) {
            p.kill("primary");
        }
    }
    c.send(b"\x03").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    c.send(b"\npoweroff\n").unwrap();
    durable
}

/// Non-shared disks: each side has its own image (the backup's starts empty and is filled from
/// the primary's); once quiet, both images are identical; after a failover the backup's holds
/// every record reported durable.
#[test]
fn non_shared_disks_stay_identical_and_survive_failover() {
    let Some(g) = guest() else { return };
    for kill in [false, true] {
        let a = scratch_image(&g, &format!("ns-a-{kill}"));
        let b = scratch_image(&g, &format!("ns-b-{kill}"));
        std::fs::write(&b, b"").unwrap();
        let o = PairOptions {
            extra: vec!["--disk-mode".into(), "non-shared".into()],
            primary_extra: drive(&a),
            backup_extra: drive(&b),
            ..Default::default()
        };
        let mut p = Pair::start(&format!("nonshared-{kill}"), &g, &o, None);
        let mut c = p.client();
        wait_for_shell(&mut c);
        let durable = append_until(&mut c, &mut p, 30, kill.then_some(10));
        assert_eq!(
            p.wait("backup", Duration::from_secs(60)),
            Some(0),
            "{}",
            p.logs()
        );
        if !kill {
            assert_eq!(
                p.wait("primary", Duration::from_secs(20)),
                Some(0),
                "{}",
                p.logs()
            );
            assert_eq!(
                std::fs::read(&a).unwrap(),
                std::fs::read(&b).unwrap(),
                "the two images differ once quiet"
            );
        }
        let on_disk = check_records(&read_file(&b, "records"));
        assert!(
            on_disk >= durable,
            "{durable} reported durable, {on_disk} on the backup's disk\n{}",
            p.logs()
        );
        drop(p);
        let _ = std::fs::remove_file(&a);
        let _ = std::fs::remove_file(&b);
    }
}

#[test]
fn shared_disk_records_survive_failover() {
    let Some(g) = guest() else { return };
    let mut rng = Rng::new("shared_disk_records_survive_failover");
    for run in 0..runs() {
        let t0 = Instant::now();
        let img = scratch_image(&g, &format!("shared-{run}"));
        let o = PairOptions {
            extra: drive(&img),
            ..Default::default()
        };
        let mut p = Pair::start(&format!("disk-{run}"), &g, &o, None);
        let mut c = p.client();
        wait_for_shell(&mut c);
        let kill_after = 3 + rng.below(30);
        let durable = append_until(&mut c, &mut p, kill_after + 20, Some(kill_after));
        assert_eq!(
            p.wait("backup", Duration::from_secs(60)),
            Some(0),
            "run {run}\n{}",
            p.logs()
        );
        let on_disk = check_records(&read_file(&img, "records"));
        assert!(
            on_disk >= durable,
            "run {run}: {durable} records reported durable, {on_disk} on the disk\n{}",
            p.logs()
        );
        eprintln!(
            "run {run}: killed after record {kill_after}; {durable} reported, {on_disk} on disk; {:.1} s",
            t0.elapsed().as_secs_f64()
        );
        drop(p);
        let _ = std::fs::remove_file(&img);
    }
}

/// The shared disk on another "machine": an NBD export served by qemu-nbd (Debian qemu-utils);
/// both sides connect to it, only the live primary writes. Killed at a random record, as above.
#[test]
fn shared_disk_on_qemu_nbd_survives_failover() {
    let Some(g) = guest() else { return };
    if !Path::new("/usr/bin/qemu-nbd").exists() {
        guestctl::skip("no /usr/bin/qemu-nbd (apt-get install qemu-utils)");
        return;
    }
    let mut rng = Rng::new("shared_disk_on_qemu_nbd_survives_failover");
    let img = scratch_image(&g, "nbd");
    let sock = std::env::temp_dir().join(format!("ftvm-ft-nbd-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&sock);
    struct Server(std::process::Child);
    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let server = Server(
        std::process::Command::new("/usr/bin/qemu-nbd")
            .args(["--persistent", "--shared=4", "-f", "raw", "-k"])
            .arg(&sock)
            .arg(&img)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start qemu-nbd"),
    );
    let t0 = Instant::now();
    while !sock.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "qemu-nbd did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = PairOptions {
        extra: vec!["--drive".into(), format!("nbd=unix:{}", sock.display())],
        ..Default::default()
    };
    let mut p = Pair::start("disk-nbd", &g, &o, None);
    let mut c = p.client();
    wait_for_shell(&mut c);
    let kill_after = 3 + rng.below(20);
    let durable = append_until(&mut c, &mut p, kill_after + 15, Some(kill_after));
    assert_eq!(
        p.wait("backup", Duration::from_secs(60)),
        Some(0),
        "{}",
        p.logs()
    );
    drop(p);
    drop(server);
    let on_disk = check_records(&read_file(&img, "records"));
    assert!(
        on_disk >= durable,
        "{durable} records reported durable, {on_disk} on the NBD export's image"
    );
    let _ = std::fs::remove_file(&img);
    let _ = std::fs::remove_file(&sock);
}
