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

/// pgbench (4 clients, `seconds` long) through two SIGKILLs of the primary, with `extra` given
/// to both sides (`--disk-mode`, `--disk-reads`); checks that no transaction was lost or failed.
fn pgbench_through_failovers(name: &str, extra: &[&str], non_shared: bool) {
    let Some(g) = debian() else { return };
    // One pair of 512 MiB guests at a time: two cores cannot carry more.
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let Some(passt) = Passt::forwarding(name, &[5432]) else {
        return;
    };
    let port = passt.port;
    let work = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("debian")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let disk = disk_copy(&g, &work, "primary");
    let backup_disk = if non_shared {
        let b = work.join("backup.img");
        std::fs::write(&b, b"").unwrap();
        b
    } else {
        disk.clone()
    };
    let drive = |d: &Path| vec!["--drive".to_string(), format!("file={}", d.display())];
    let mut o = PairOptions {
        extra: [
            vec![
                "--netdev".to_string(),
                format!("stream,path={}", passt.sock.display()),
            ],
            extra.iter().map(|s| s.to_string()).collect(),
        ]
        .concat(),
        primary_extra: drive(&disk),
        backup_extra: drive(&backup_disk),
        boot: Some(vec![
            "--kernel".into(),
            g.join("Image").into(),
            "--append".into(),
            APPEND.into(),
        ]),
        mem: "512M",
        ..Default::default()
    };
    let mut p = Pair::start(name, &g, &o, None);
    if let Err(e) = pgbench::wait_ready(port, Duration::from_secs(600)) {
        panic!("{e}\n{}", p.logs());
    }
    let seconds = 75;
    let bench = pgbench::Bench::start(port, 4, seconds, &work)
        .unwrap_or_else(|e| panic!("{e}\n{}", p.logs()));
    for (k, at) in [20u64, 45].into_iter().enumerate() {
        while bench.started().elapsed() < Duration::from_secs(at) {
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("{name}: SIGKILL to the primary ({} of 2)", k + 1);
        p.kill("primary");
        wait_live(&p, Duration::from_secs(60));
        if k == 0 {
            if non_shared {
                let next = work.join("backup-2.img");
                std::fs::write(&next, b"").unwrap();
                // The live VM's image is the old backup's; the new backup gets an empty one.
                o.primary_extra = drive(&backup_disk);
                o.backup_extra = drive(&next);
            }
            let said = p.reprotect(&g, &o);
            eprintln!("{name}: protected again: {said}");
        }
    }
    let r = bench
        .finish()
        .unwrap_or_else(|e| panic!("{e}\n{}", p.logs()));
    eprintln!("{name}: pgbench said:\n{}\n{}", r.stdout, r.stderr);
    assert!(r.success, "pgbench failed: {}\n{}", r.stderr, p.logs());
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
        p.logs()
    );
    eprintln!(
        "{name}: {} committed transactions, all in the table ({} rows) after 2 failovers; {:.1} tps",
        r.committed,
        r.rows,
        r.tps.unwrap_or(0.0)
    );
    drop(p);
    let _ = std::fs::remove_dir_all(&work);
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
