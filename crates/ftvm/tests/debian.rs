//! A real server under FT: the Debian guest (`cargo xtask guest --debian`: Debian 13 riscv64,
//! PostgreSQL, iperf3) in a pair behind passt, driven by the host's own clients, `pgbench` and
//! `psql` from Debian's `postgresql-15`, while the primary is SIGKILLed twice mid-run.
//!
//! The check is the one the paper's output rule promises a database's clients: every
//! transaction that pgbench saw committed is in the table afterwards. The pgbench script
//! inserts a random 63-bit id per transaction and, only after the commit returned, appends the
//! id to a file on the host (`\shell`); afterwards every id in that file must be in the table.
//! pgbench must also end with no failed transaction and no aborted client: its connections
//! (TCP through passt) carry on through each failover, none is reset.
//!
//! The guest's directory comes from `FTVM_DEBIAN_DIR` (`cargo xtask test` builds the guest and
//! sets it); without it, or without passt or PostgreSQL's client tools, the tests fail naming
//! what is missing (`FTVM_ALLOW_SKIP=1` skips them instead).

mod ft_support;

use ft_support::*;
use guestctl::pgbench::{self, PG_BIN};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The kernel command line the Debian guest boots with (`xtask::guest::debian::APPEND`).
const APPEND: &str = "console=ttyS0 root=/dev/vda rw rootfstype=ext4 ip=dhcp init=/sbin/ftvm-init";

/// The Debian guest's directory, or None (the test fails, or skips with `FTVM_ALLOW_SKIP=1`).
fn debian() -> Option<PathBuf> {
    let Some(dir) = std::env::var_os("FTVM_DEBIAN_DIR").map(PathBuf::from) else {
        guestctl::skip(
            "no Debian guest: run through `cargo xtask test`, or build it as root with \
             `cargo xtask guest --debian` and set FTVM_DEBIAN_DIR to the directory it prints",
        );
        return None;
    };
    if !Path::new(PG_BIN).join("pgbench").exists() {
        guestctl::skip("no pgbench on the host (apt-get install postgresql-15)");
        return None;
    }
    Some(dir)
}

/// A sparse copy of the guest's root disk for one VM (the cached image stays pristine).
fn disk_copy(g: &Path, dir: &Path, name: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let to = dir.join(format!("{name}.img"));
    let st = Command::new("cp")
        .arg("--sparse=always")
        .arg(g.join("rootfs.img"))
        .arg(&to)
        .status()
        .expect("cp");
    assert!(st.success(), "copying the Debian guest's disk");
    to
}

/// Waits until the process now in the backup's role says it is the primary (it went live).
fn wait_live(p: &Pair, within: Duration) {
    let t = Instant::now();
    while t.elapsed() < within {
        if ft::console::request(
            &p.backup_console.to_string(),
            &p.secret(),
            "STATUS",
            Duration::from_secs(2),
        )
        .is_ok_and(|st| ft::status::field(&st, "role") == Some("primary"))
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the backup did not go live in {within:?}\n{}", p.logs());
}

/// The Debian guest in a pair behind passt (forwarding a host port to each of `guest_ports`),
/// with what it takes to fail over and protect again.
struct Server {
    name: String,
    g: PathBuf,
    // Fields drop in this order: the pair's processes end before passt and the work directory.
    p: Pair,
    o: PairOptions,
    passt: Passt,
    work: WorkDir,
    /// The image of the side not yet live, when each side has its own (`non-shared`).
    backup_disk: Option<PathBuf>,
    failovers: u32,
    _one_at_a_time: std::sync::MutexGuard<'static, ()>,
}

impl Server {
    /// Boots the pair (`extra` to both sides); None when a prerequisite is missing and skipping
    /// is allowed.
    fn start(name: &str, extra: &[&str], non_shared: bool, guest_ports: &[u16]) -> Option<Server> {
        let g = debian()?;
        // One pair of 512 MiB guests at a time: two cores cannot carry more.
        static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let one = ONE.lock().unwrap_or_else(|e| e.into_inner());
        let passt = Passt::forwarding(name, guest_ports)?;
        let work = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("debian")
            .join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&work);
        let disk = disk_copy(&g, &work, "primary");
        let backup_disk = non_shared.then(|| {
            let b = work.join("backup.img");
            std::fs::write(&b, b"").unwrap();
            b
        });
        let o = PairOptions {
            extra: [
                vec![
                    "--netdev".to_string(),
                    format!("stream,path={}", passt.sock.display()),
                ],
                extra.iter().map(|s| s.to_string()).collect(),
            ]
            .concat(),
            primary_extra: drive(&disk),
            backup_extra: drive(backup_disk.as_ref().unwrap_or(&disk)),
            boot: Some(vec![
                "--kernel".into(),
                g.join("Image").into(),
                "--append".into(),
                APPEND.into(),
            ]),
            mem: "512M",
            ..Default::default()
        };
        let p = Pair::start(name, &g, &o, None);
        Some(Server {
            name: name.into(),
            g,
            p,
            o,
            passt,
            work: WorkDir(work),
            backup_disk,
            failovers: 0,
            _one_at_a_time: one,
        })
    }

    /// The host port forwarded to the guest's `k`-th port.
    fn port(&self, k: usize) -> u16 {
        self.passt.ports[k]
    }

    /// SIGKILLs the primary and waits until the backup is live; with `protect`, then starts a
    /// new backup (on an empty image of its own with non-shared disks) and waits until the new
    /// primary is protected again.
    fn fail_over(&mut self, protect: bool) {
        self.failovers += 1;
        eprintln!(
            "{}: SIGKILL to the primary (failover {})",
            self.name, self.failovers
        );
        self.p.kill("primary");
        wait_live(&self.p, Duration::from_secs(60));
        if protect {
            if let Some(b) = &self.backup_disk {
                let next = self.work.join(format!("backup-{}.img", self.failovers + 1));
                std::fs::write(&next, b"").unwrap();
                // The live VM's image is the old backup's; the new backup gets an empty one.
                self.o.primary_extra = drive(b);
                self.o.backup_extra = drive(&next);
                self.backup_disk = Some(next);
            }
            let said = self.p.reprotect(&self.g, &self.o);
            eprintln!("{}: protected again: {said}", self.name);
        }
    }
}

/// The test's directory (the disk images), removed when the test ends well; a failed test
/// keeps it beside the pair's logs.
struct WorkDir(PathBuf);

impl std::ops::Deref for WorkDir {
    type Target = PathBuf;
    fn deref(&self) -> &PathBuf {
        &self.0
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// `--drive` for an image.
fn drive(d: &Path) -> Vec<String> {
    vec!["--drive".to_string(), format!("file={}", d.display())]
}

/// pgbench (4 clients, `seconds` long) through two SIGKILLs of the primary, with `extra` given
/// to both sides (`--disk-mode`, `--disk-reads`); checks that no transaction was lost or failed.
fn pgbench_through_failovers(name: &str, extra: &[&str], non_shared: bool) {
    let Some(mut s) = Server::start(name, extra, non_shared, &[5432]) else {
        return;
    };
    let port = s.port(0);
    if let Err(e) = pgbench::wait_ready(port, Duration::from_secs(600)) {
        panic!("{e}\n{}", s.p.logs());
    }
    let seconds = 75;
    let bench = pgbench::Bench::start(port, 4, seconds, &s.work)
        .unwrap_or_else(|e| panic!("{e}\n{}", s.p.logs()));
    for (k, at) in [20u64, 45].into_iter().enumerate() {
        while bench.started().elapsed() < Duration::from_secs(at) {
            std::thread::sleep(Duration::from_millis(100));
        }
        s.fail_over(k == 0);
    }
    let r = bench
        .finish()
        .unwrap_or_else(|e| panic!("{e}\n{}", s.p.logs()));
    eprintln!("{name}: pgbench said:\n{}\n{}", r.stdout, r.stderr);
    assert!(r.success, "pgbench failed: {}\n{}", r.stderr, s.p.logs());
    assert!(
        !r.connection_trouble(),
        "a pgbench client lost its connection: {}",
        r.stderr
    );
    assert_eq!(
        r.failed,
        Some(0),
        "pgbench's failed transactions: {}",
        r.stdout
    );
    assert!(
        r.committed >= 10,
        "pgbench committed only {} transactions in {seconds} s\n{}",
        r.committed,
        r.stdout
    );
    assert!(
        r.lost.is_empty(),
        "{} of {} transactions pgbench saw committed are not in the table (e.g. {:?})\n{}",
        r.lost.len(),
        r.committed,
        &r.lost[..r.lost.len().min(5)],
        s.p.logs()
    );
    eprintln!(
        "{name}: {} committed transactions, all in the table ({} rows) after 2 failovers; {:.1} tps",
        r.committed,
        r.rows,
        r.tps.unwrap_or(0.0)
    );
}

#[test]
fn pgbench_keeps_every_committed_transaction_through_two_failovers() {
    pgbench_through_failovers("pg-shared", &[], false);
}

#[test]
fn pgbench_through_failovers_with_non_shared_disks() {
    pgbench_through_failovers("pg-nonshared", &["--disk-mode", "non-shared"], true);
}

#[test]
fn pgbench_through_failovers_with_own_disk_reads() {
    pgbench_through_failovers("pg-own", &["--disk-reads", "own"], false);
}

/// The host's iperf3 against the guest's `iperf3 -s` (TCP), one long run each way, the primary
/// SIGKILLed in the middle of each (the pair protects the new primary again in between): each
/// stream carries on to its end, with no error, and moves data after the failover. Host to
/// guest with a 256 KiB window ([`guestctl::iperf::FAILOVER_WINDOW`]: passt's go-back
/// retransmission of a multi-megabyte window swamps the emulated guest after the frames lost
/// with the primary).
#[test]
fn iperf3_streams_carry_on_through_a_failover_each_way() {
    use guestctl::iperf::{self, Direction};
    let Some(mut s) = Server::start("iperf3", &[], false, &[5201]) else {
        return;
    };
    let port = s.port(0);
    if let Err(e) = iperf::wait_ready(port, Duration::from_secs(600)) {
        panic!("{e}\n{}", s.p.logs());
    }
    let seconds = 30;
    for (k, dir) in [Direction::ToGuest, Direction::FromGuest]
        .into_iter()
        .enumerate()
    {
        // Host to guest with the failover window; guest to host with the kernels' own (it
        // recovered at once that way, and stalled with -w 256K).
        let window = (dir == Direction::ToGuest).then_some(iperf::FAILOVER_WINDOW);
        let run = iperf::Run::start(port, seconds, dir, window).unwrap();
        while run.started().elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(100));
        }
        s.fail_over(k == 0);
        let r = run
            .finish()
            .unwrap_or_else(|e| panic!("{dir:?}: {e}\n{}", s.p.logs()));
        eprintln!(
            "iperf3 {dir:?}: {:.1} Mbit/s over {} s, {} bytes received, longest stall {} s, per second: {:?}",
            r.mbps(),
            seconds,
            r.received_bytes,
            r.longest_stall(),
            r.intervals.iter().map(|b| (b / 1e6).round()).collect::<Vec<_>>()
        );
        assert!(
            r.success,
            "{dir:?}: iperf3 failed: {:?}\n{}",
            r.error,
            s.p.logs()
        );
        assert!(r.received_bytes > 0, "{dir:?}: nothing received");
        assert!(
            r.carried_on_after(12),
            "{dir:?}: the stream did not carry on after the failover: {:?}",
            r.intervals
        );
    }
}
