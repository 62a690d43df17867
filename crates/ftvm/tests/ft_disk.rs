//! Disks under fault tolerance: a shared disk (both sides reach one image; only the live
//! primary writes, its writes wait for the backup's acknowledgement, the backup re-issues the
//! unconfirmed ones at go-live). The guest appends numbered, checksummed records with fsync
//! (`appendlog`) while the primary is SIGKILLed at a random moment; afterwards the disk image
//! must hold every record the guest reported durable, in order, none torn.

mod ft_support;

use ft_support::*;
use std::path::Path;
use std::time::{Duration, Instant};

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
            guestctl::appendlog::crc32(body.as_bytes()),
            "bad checksum: {line:?}"
        );
        n = seq;
    }
    n
}

/// A file of an ext2 image, read with debugfs (e2fsprogs).
fn read_file(img: &Path, name: &str) -> String {
    guestctl::appendlog::read_image_file(img, name).expect("debugfs (apt-get install e2fsprogs)")
}

/// The tests of this file one at a time: each runs a pair of VMs (two interpreters busy), and
/// several pairs at once on a small host starve the heartbeats into false failovers.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE.lock().unwrap_or_else(|p| p.into_inner())
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
    reports_until(c, p, &mut durable, want, kill_at);
    stop_and_power_off(c);
    durable
}

/// Reads the writer's reports (`appendlog: record N durable`, each the next) until `want`;
/// SIGKILL to the primary once `kill_at` is reported.
fn reports_until(
    c: &mut ft::console::client::ConsoleClient,
    p: &mut Pair,
    durable: &mut u64,
    want: u64,
    kill_at: Option<u64>,
) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while *durable < want {
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
        assert_eq!(n, *durable + 1, "reports out of order\n{}", p.logs());
        *durable = n;
        if kill_at == Some(n) {
            p.kill("primary");
        }
    }
}

/// Stops the writer (^C) and powers the guest off.
fn stop_and_power_off(c: &mut ft::console::client::ConsoleClient) {
    c.send(b"\x03").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    c.send(b"\npoweroff\n").unwrap();
}

/// Non-shared disks: each side has its own image (the backup's starts empty and is filled from
/// the primary's); once quiet, both images are identical; after a failover the backup's holds
/// every record reported durable.
#[test]
fn non_shared_disks_stay_identical_and_survive_failover() {
    let Some(g) = guest() else { return };
    let _one_at_a_time = serial();
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

/// Appendlog records on a shared disk, the primary SIGKILLed at a random record, `runs` times
/// (with `options` added to both sides): every record the guest reported durable is on the image afterwards, in order, none torn.
fn records_survive_kills(g: &Path, name: &str, runs: u64, options: &[String]) {
    let mut rng = Rng::new(name);
    for run in 0..runs {
        let t0 = Instant::now();
        let img = scratch_image(g, &format!("{name}-{run}"));
        let mut extra = drive(&img);
        extra.extend_from_slice(options);
        let o = PairOptions {
            extra,
            ..Default::default()
        };
        let mut p = Pair::start(&format!("{name}-{run}"), g, &o, None);
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
            "{name}, run {run}: killed after record {kill_after}; {durable} reported, {on_disk} on disk; {:.1} s",
            t0.elapsed().as_secs_f64()
        );
        drop(p);
        let _ = std::fs::remove_file(&img);
    }
}

#[test]
fn shared_disk_records_survive_failover() {
    let Some(g) = guest() else { return };
    let _one_at_a_time = serial();
    records_survive_kills(&g, "shared_disk_records_survive_failover", runs(), &[]);
}

/// A slow shared disk (every read 20 ms on the host) under a loop of direct reads, the
/// primary SIGKILLed at a random moment: the backup goes live with the read in flight,
/// completes it on its own disk, and the loop runs on.
#[test]
fn slow_disk_reads_in_flight_complete_after_failover() {
    let Some(g) = guest() else { return };
    let _one_at_a_time = serial();
    let mut rng = Rng::new("slow_disk_reads_in_flight");
    let mut in_flight = Vec::new();
    for run in 0..2 {
        let img = scratch_image(&g, &format!("slow-reads-{run}"));
        let mut extra = drive(&img);
        if let Some(d) = extra.last_mut() {
            d.push_str(",delay=20");
        }
        let o = PairOptions {
            extra,
            ..Default::default()
        };
        let mut p = Pair::start(&format!("slow-reads-{run}"), &g, &o, None);
        let mut c = p.client();
        wait_for_shell(&mut c);
        c.send(
            b"while :; do dd if=/dev/vda of=/dev/null bs=64k count=4 iflag=direct 2>/dev/null; \
              echo rd-$((1+1)); done\n",
        )
        .unwrap();
        let reads = |c: &mut ft::console::client::ConsoleClient, p: &Pair, n: usize| {
            for _ in 0..n {
                c.read_line_until(|l| l.ends_with("rd-2"), Duration::from_secs(30))
                    .unwrap()
                    .unwrap_or_else(|| panic!("the read loop stopped\n{}", p.logs()));
            }
        };
        reads(&mut c, &p, 3);
        std::thread::sleep(Duration::from_millis(rng.below(300)));
        p.kill("primary");
        reads(&mut c, &p, 3); // on the new primary
        stop_and_power_off(&mut c);
        assert_eq!(
            p.wait("backup", Duration::from_secs(60)),
            Some(0),
            "run {run}\n{}",
            p.logs()
        );
        let logs = p.stderr("backup");
        let n = guestctl::count_before(&logs, " disk requests in flight")
            .unwrap_or_else(|| panic!("run {run}: no went-live line\n{logs}"));
        eprintln!("slow disk reads, run {run}: {n} disk requests in flight at go-live");
        in_flight.push(n);
        drop(p);
        let _ = std::fs::remove_file(&img);
    }
    assert!(
        in_flight.iter().any(|&n| n > 0),
        "the backup never went live with a request in flight: {in_flight:?}"
    );
}

/// The shared disk on another "machine": an NBD export served by qemu-nbd (Debian qemu-utils);
/// both sides connect to it, only the live primary writes. Killed at a random record, as above.
#[test]
fn shared_disk_on_qemu_nbd_survives_failover() {
    let Some(g) = guest() else { return };
    let _one_at_a_time = serial();
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

/// `--disk-reads own` for both sides (the backup reads the shared disk itself).
fn own_reads() -> Vec<String> {
    vec!["--disk-reads".into(), "own".into()]
}

/// The log bytes the primary has sent (`log_sent` in its status).
fn log_sent(p: &Pair) -> u64 {
    let s = ft::console::request(
        &p.primary_console.to_string(),
        &p.secret(),
        "STATUS",
        Duration::from_secs(2),
    )
    .expect("the primary's status");
    s.lines()
        .find_map(|l| l.strip_prefix("log_sent: "))
        .and_then(|v| v.split(", ").nth(1))
        .and_then(|b| b.trim_end_matches(" bytes").parse().ok())
        .unwrap_or_else(|| panic!("no log_sent in {s:?}"))
}

/// Has the guest read its whole disk (16 MiB, page cache dropped first), and waits for it.
fn read_whole_disk(c: &mut ft::console::client::ConsoleClient, p: &Pair) {
    c.send(b"echo 3 > /proc/sys/vm/drop_caches; dd if=/dev/vda of=/dev/null bs=64k 2>/dev/null; echo READ-DONE-$((40+2))\n")
        .unwrap();
    c.read_line_until(|l| l.ends_with("READ-DONE-42"), Duration::from_secs(120))
        .unwrap()
        .unwrap_or_else(|| panic!("the disk read did not finish\n{}", p.logs()));
}

/// The log a read of the whole disk costs in each mode: (bytes, pair log on failure).
fn read_phase_log(g: &Path, own: bool) -> u64 {
    let img = scratch_image(g, &format!("readlog-{own}"));
    let mut extra = drive(&img);
    if own {
        extra.extend(own_reads());
    }
    let o = PairOptions {
        extra,
        ..Default::default()
    };
    let mut p = Pair::start(&format!("readlog-{own}"), g, &o, None);
    let mut c = p.client();
    wait_for_shell(&mut c);
    // The status is refreshed every few hundred ms.
    std::thread::sleep(Duration::from_millis(1500));
    let before = log_sent(&p);
    read_whole_disk(&mut c, &p);
    std::thread::sleep(Duration::from_millis(1500));
    let sent = log_sent(&p) - before;
    c.send(b"poweroff\n").unwrap();
    assert_eq!(
        p.wait("backup", Duration::from_secs(60)),
        Some(0),
        "{}",
        p.logs()
    );
    assert_eq!(
        p.wait("primary", Duration::from_secs(20)),
        Some(0),
        "{}",
        p.logs()
    );
    drop(p);
    let _ = std::fs::remove_file(&img);
    sent
}

/// `--disk-reads own`: the same records-under-SIGKILL check as above, the backup reading the
/// shared disk itself (the primary's writes wait until the backup has replayed past them).
#[test]
fn shared_disk_with_own_reads_survives_failover() {
    let Some(g) = guest() else { return };
    let _one_at_a_time = serial();
    records_survive_kills(
        &g,
        "shared_disk_with_own_reads_survives_failover",
        runs().div_ceil(2),
        &own_reads(),
    );
}

/// A read-heavy phase (the guest reads its whole 16 MiB disk) sends its data in the log with
/// `--disk-reads log`, only digests with `own`.
#[test]
fn own_disk_reads_send_much_less_log() {
    let Some(g) = guest() else { return };
    let _one_at_a_time = serial();
    let logged = read_phase_log(&g, false);
    let own = read_phase_log(&g, true);
    eprintln!(
        "reading the whole 16 MiB disk: {logged} log bytes with --disk-reads log, {own} with own"
    );
    assert!(logged > 15 << 20, "log mode sent only {logged} bytes");
    assert!(
        own * 20 < logged,
        "own mode sent {own} bytes, log mode {logged}"
    );
}

/// The backup's image differs from what the primary reads (here: its own copy, altered under
/// it): its first read of the altered data is a divergence, named as such, and the primary
/// carries on alone.
#[test]
fn own_disk_reads_of_an_altered_image_diverge_and_the_primary_carries_on() {
    let Some(g) = guest() else { return };
    let _one_at_a_time = serial();
    let a = scratch_image(&g, "alter-a");
    let b = scratch_image(&g, "alter-b");
    let o = PairOptions {
        extra: own_reads(),
        primary_extra: drive(&a),
        backup_extra: drive(&b),
        ..Default::default()
    };
    let mut p = Pair::start("disk-alter", &g, &o, None);
    let mut c = p.client();
    wait_for_shell(&mut c);
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&b).unwrap();
        f.write_all_at(&[0xa5; 4096], 12 << 20).unwrap();
    }
    read_whole_disk(&mut c, &p);
    assert_eq!(
        p.wait("backup", Duration::from_secs(30)),
        Some(2),
        "{}",
        p.logs()
    );
    let err = p.stderr("backup");
    let line = err
        .lines()
        .find(|l| l.contains("diverged at icount"))
        .unwrap_or_else(|| panic!("no divergence reported\n{}", p.logs()));
    assert!(line.contains("disk read"), "{line}");
    eprintln!("{line}");
    // The primary notices, wins the arbiter and runs on.
    let t0 = Instant::now();
    while !p.stderr("primary").contains("running on alone") {
        assert!(t0.elapsed() < Duration::from_secs(20), "{}", p.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_for_shell(&mut c);
    c.send(b"poweroff\n").unwrap();
    assert_eq!(
        p.wait("primary", Duration::from_secs(30)),
        Some(0),
        "{}",
        p.logs()
    );
    drop(p);
    let _ = std::fs::remove_file(&a);
    let _ = std::fs::remove_file(&b);
}

/// The two sides must agree on --disk-reads: the backup refuses the primary, and both say why.
#[test]
fn disk_reads_modes_must_agree() {
    let Some(g) = guest() else { return };
    let _one_at_a_time = serial();
    let img = scratch_image(&g, "agree");
    let o = PairOptions {
        extra: drive(&img),
        primary_extra: own_reads(),
        ..Default::default()
    };
    let mut p = Pair::start("disk-agree", &g, &o, None);
    assert_eq!(
        p.wait("primary", Duration::from_secs(30)),
        Some(2),
        "{}",
        p.logs()
    );
    let want = "--disk-reads own, the backup's with --disk-mode shared --disk-reads log";
    assert!(p.stderr("primary").contains(want), "{}", p.logs());
    let t0 = Instant::now();
    while !p.stderr("backup").contains(want) {
        assert!(t0.elapsed() < Duration::from_secs(5), "{}", p.logs());
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(p);
    let _ = std::fs::remove_file(&img);
}

/// Non-shared disks under re-protection: the guest keeps appending records while a new backup
/// is cloned live, its empty image filled while the guest runs (and the chunks written
/// meanwhile sent again); then the clone takes over and its image holds every record reported
/// durable.
#[test]
fn non_shared_disk_copied_live_to_a_new_backup() {
    let Some(g) = guest() else { return };
    let _one_at_a_time = serial();
    let (a, b, c_img) = (
        scratch_image(&g, "live-a"),
        scratch_image(&g, "live-b"),
        scratch_image(&g, "live-c"),
    );
    std::fs::write(&b, b"").unwrap();
    std::fs::write(&c_img, b"").unwrap();
    let o = PairOptions {
        extra: vec!["--disk-mode".into(), "non-shared".into()],
        primary_extra: drive(&a),
        backup_extra: drive(&b),
        ..Default::default()
    };
    let mut p = Pair::start("live-disk", &g, &o, None);
    let mut c = p.client();
    wait_for_shell(&mut c);
    c.send(b"appendlog /mnt/records 100000 5\n").unwrap();
    let mut durable = 0u64;
    reports_until(&mut c, &mut p, &mut durable, 5, Some(5));
    reports_until(&mut c, &mut p, &mut durable, 10, None);
    // The new backup's image (empty) is filled while the guest appends.
    let o2 = PairOptions {
        backup_extra: drive(&c_img),
        ..o
    };
    let said = p.reprotect(&g, &o2);
    eprintln!("{said}");
    assert!(said.contains("live clone"), "{said}");
    reports_until(&mut c, &mut p, &mut durable, 20, Some(20));
    reports_until(&mut c, &mut p, &mut durable, 25, None);
    stop_and_power_off(&mut c);
    assert_eq!(
        p.wait("backup", Duration::from_secs(60)),
        Some(0),
        "{}",
        p.logs()
    );
    let on_disk = check_records(&read_file(&c_img, "records"));
    assert!(
        on_disk >= durable,
        "{durable} reported durable, {on_disk} on the clone's disk\n{}",
        p.logs()
    );
    drop(p);
    for f in [&a, &b, &c_img] {
        let _ = std::fs::remove_file(f);
    }
}
