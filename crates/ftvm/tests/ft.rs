//! The fault-tolerant pair end to end: real `ftvm primary` and `ftvm backup` processes on
//! 127.0.0.1 booting the Linux guest, a client of the counter service in the guest's shell, and
//! faults: SIGKILL of either side at random moments, a cut logging link, forged and corrupted
//! frames. The invariant throughout: the client receives 1, 2, 3, ... with none repeated or
//! skipped, and exactly one side ever goes on.
//!
//! Needs the guest (`cargo xtask test` provides it; a bare `cargo test` skips).

mod ft_support;

use ft_support::*;
use std::time::{Duration, Instant};

/// Runs of the random-kill test (`FTVM_FT_RUNS` overrides).
fn runs() -> u64 {
    std::env::var("FTVM_FT_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20)
}

/// The primary is killed at a random moment (after a random number of increments, with a
/// request possibly in flight); the backup goes live and the client carries on. 20 runs.
#[test]
fn primary_killed_at_random_moments() {
    let Some(g) = guest() else { return };
    let mut rng = Rng::new("primary_killed_at_random_moments");
    let total = 60;
    for run in 0..runs() {
        let t0 = Instant::now();
        let mut p = Pair::start(&format!("kill-{run}"), &g, &PairOptions::default(), None);
        let mut c = p.client();
        start_counter(&mut c);
        let kill_after = 1 + rng.below(total - 10);
        let in_flight = rng.below(2) == 1;
        let delay = Duration::from_micros(rng.below(20_000));
        for k in 1..=total {
            if k == kill_after + 1 && in_flight {
                // The kill lands while this request is in flight.
                c.send(b"inc\n").unwrap();
                std::thread::sleep(delay);
                p.kill("primary");
                expect(&mut c, k, &|| p.logs());
                continue;
            }
            increment(&mut c, k, &|| p.logs());
            if k == kill_after && !in_flight {
                std::thread::sleep(delay);
                p.kill("primary");
            }
        }
        assert!(
            p.stderr("backup").contains("went live"),
            "run {run}: {}",
            p.logs()
        );
        assert_eq!(
            c.endpoint(),
            Some(p.backup_console),
            "the client ends on the backup"
        );
        // The final state: the count is exactly what an uninterrupted run would have.
        increment(&mut c, total + 1, &|| p.logs());
        p.power_off(&mut c, "backup");
        eprintln!(
            "run {run}: killed after {kill_after}{} (+{delay:?}), {:.1} s",
            if in_flight {
                " with a request in flight"
            } else {
                ""
            },
            t0.elapsed().as_secs_f64()
        );
    }
}

/// The backup dies: the primary wins the arbiter and keeps serving, now unprotected.
#[test]
fn backup_killed_primary_carries_on() {
    let Some(g) = guest() else { return };
    let mut p = Pair::start("backup-killed", &g, &PairOptions::default(), None);
    let mut c = p.client();
    start_counter(&mut c);
    for k in 1..=20 {
        increment(&mut c, k, &|| p.logs());
    }
    p.kill("backup");
    for k in 21..=40 {
        increment(&mut c, k, &|| p.logs());
    }
    assert!(
        p.stderr("primary").contains("running on alone"),
        "{}",
        p.logs()
    );
    assert_eq!(c.endpoint(), Some(p.primary_console));
    let st = ft::console::request(
        &p.primary_console.to_string(),
        &p.secret(),
        "STATUS",
        Duration::from_secs(2),
    )
    .unwrap();
    assert!(
        st.contains("role: primary") && st.contains("protected: no"),
        "{st}"
    );
    p.power_off(&mut c, "primary");
}

/// The primary on the translating engine, the backup on the interpreter: the backup replays
/// the JIT primary's log (the state digests in it included) on the other engine, and when the
/// primary is killed it goes live and the client's count carries on without a gap or repeat.
#[test]
fn jit_primary_interpreter_backup_fails_over() {
    let Some(g) = guest() else { return };
    let o = PairOptions {
        primary_extra: vec!["--engine".into(), "jit".into()],
        backup_extra: vec!["--engine".into(), "interp".into()],
        ..Default::default()
    };
    let mut p = Pair::start("jit-interp", &g, &o, None);
    let mut c = count_through_a_kill(&mut p, 20, 20);
    assert_eq!(
        c.endpoint(),
        Some(p.backup_console),
        "the client ends on the backup"
    );
    p.power_off(&mut c, "backup");
}

/// Which sides are still running after a fault; exactly one must be, the other exited 3.
fn exactly_one_survives(p: &mut Pair) -> &'static str {
    let t0 = Instant::now();
    let (mut pc, mut bc) = (None, None);
    while t0.elapsed() < Duration::from_secs(10) && pc.is_none() && bc.is_none() {
        pc = p.wait("primary", Duration::from_millis(50));
        bc = p.wait("backup", Duration::from_millis(50));
    }
    // Give the other side the same time to stop if it were going to.
    std::thread::sleep(Duration::from_secs(2));
    pc = pc.or_else(|| p.wait("primary", Duration::from_millis(10)));
    bc = bc.or_else(|| p.wait("backup", Duration::from_millis(10)));
    match (pc, bc) {
        (Some(3), None) => "backup",
        (None, Some(3)) => "primary",
        other => panic!(
            "expected exactly one side to stop with 3, got {other:?}\n{}",
            p.logs()
        ),
    }
}

/// The logging link is cut while both sides still reach the arbiter: exactly one goes on, the
/// other stops itself and emits nothing more; the client's invariant holds.
#[test]
fn link_cut_exactly_one_side_continues() {
    let Some(g) = guest() else { return };
    let proxy = Proxy::new();
    let mut p = Pair::start("link-cut", &g, &PairOptions::default(), Some(&proxy));
    let mut c = p.client();
    start_counter(&mut c);
    for k in 1..=20 {
        increment(&mut c, k, &|| p.logs());
    }
    proxy.cut.store(true, std::sync::atomic::Ordering::Relaxed);
    let survivor = exactly_one_survives(&mut p);
    for k in 21..=40 {
        increment(&mut c, k, &|| p.logs());
    }
    let want = if survivor == "primary" {
        p.primary_console
    } else {
        p.backup_console
    };
    assert_eq!(c.endpoint(), Some(want), "{}", p.logs());
    eprintln!("link cut: the {survivor} went on");
}

/// A stranger without the key is refused by the backup (and the real primary still pairs);
/// a bit flipped on the wire mid-stream drops the connection with a clear error before
/// anything of it is applied, and then exactly one side goes on.
#[test]
fn forged_and_corrupted_frames_are_refused() {
    let Some(g) = guest() else { return };
    let proxy = Proxy::new();
    let o = PairOptions {
        stranger_first: true,
        ..Default::default()
    };
    let mut p = Pair::start("forged", &g, &o, Some(&proxy));
    let mut c = p.client();
    start_counter(&mut c);
    for k in 1..=10 {
        increment(&mut c, k, &|| p.logs());
    }
    assert!(p.stderr("backup").contains("refused"), "{}", p.logs());
    let t0 = Instant::now();
    while !p.stderr("backup").contains("authenticated") && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(p.stderr("backup").contains("authenticated"), "{}", p.logs());
    // Now corrupt one bit of the live stream, a little ahead of where it is.
    let at = proxy.forwarded.load(std::sync::atomic::Ordering::Relaxed) + 100;
    proxy
        .flip_at
        .store(at, std::sync::atomic::Ordering::Relaxed);
    // Traffic makes the stream move past the flipped byte.
    let mut k = 11;
    let t0 = Instant::now();
    while !p.stderr("backup").contains("primary lost") && t0.elapsed() < Duration::from_secs(20) {
        increment(&mut c, k, &|| p.logs());
        k += 1;
    }
    let err = p.stderr("backup");
    assert!(
        err.contains("failed authentication") || err.contains("corrupt log"),
        "{}",
        p.logs()
    );
    let survivor = exactly_one_survives(&mut p);
    for k in k..k + 10 {
        increment(&mut c, k, &|| p.logs());
    }
    eprintln!("flipped bit: the {survivor} went on");
}

/// Control operations travel in the log: pause stops the guest on both sides (the primary's
/// icount stands still), resume carries on, power off ends both; `ftvm status` shows both.
#[test]
fn control_operations_and_status() {
    let Some(g) = guest() else { return };
    let mut p = Pair::start("control", &g, &PairOptions::default(), None);
    let mut c = p.client();
    start_counter(&mut c);
    increment(&mut c, 1, &|| p.logs());
    let status = |p: &Pair| {
        let out = std::process::Command::new(FTVM)
            .args([
                "status",
                &format!("{},{}", p.primary_console, p.backup_console),
            ])
            .arg("--console-key-file")
            .arg(&p.console_key)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let s = status(&p);
    assert!(
        s.contains("role: primary") && s.contains("role: backup"),
        "{s}"
    );
    assert!(s.contains("protected: yes"), "{s}");
    let control = |op: &str| {
        let st = std::process::Command::new(FTVM)
            .args(["control", op, &p.primary_console.to_string()])
            .arg("--console-key-file")
            .arg(&p.console_key)
            .status()
            .unwrap();
        assert!(st.success(), "control {op}");
    };
    let icount = |p: &Pair| -> u64 {
        let s = ft::console::request(
            &p.primary_console.to_string(),
            &p.secret(),
            "STATUS",
            Duration::from_secs(2),
        )
        .unwrap();
        s.lines()
            .find_map(|l| l.strip_prefix("icount: "))
            .unwrap()
            .parse()
            .unwrap()
    };
    control("pause");
    std::thread::sleep(Duration::from_millis(500));
    let a = icount(&p);
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(a, icount(&p), "paused: the guest does not run");
    control("resume");
    increment(&mut c, 2, &|| p.logs());
    std::thread::sleep(Duration::from_millis(300));
    assert!(icount(&p) > a, "resumed: the guest runs again");
    control("poweroff");
    assert_eq!(
        p.wait("primary", Duration::from_secs(20)),
        Some(0),
        "{}",
        p.logs()
    );
    assert_eq!(
        p.wait("backup", Duration::from_secs(20)),
        Some(0),
        "{}",
        p.logs()
    );
    assert!(p.stderr("backup").contains("stopping too"), "{}", p.logs());
    assert!(!p.stderr("backup").contains("went live"), "{}", p.logs());
}

/// Two harts: the backup replays the multi-hart schedule and goes live just the same.
#[test]
fn failover_with_two_harts() {
    let Some(g) = guest() else { return };
    let o = PairOptions {
        smp: 2,
        ..Default::default()
    };
    let mut p = Pair::start("smp2", &g, &o, None);
    count_through_a_kill(&mut p, 15, 15);
}

/// Starts the counter, increments it `before` times, SIGKILLs the primary, increments it
/// `after` times more (the answers must carry on without a gap or repeat) and checks that the
/// backup went live; returns the console client.
fn count_through_a_kill(
    p: &mut Pair,
    before: u64,
    after: u64,
) -> ft::console::client::ConsoleClient {
    let mut c = p.client();
    start_counter(&mut c);
    for k in 1..=before {
        increment(&mut c, k, &|| p.logs());
    }
    p.kill("primary");
    for k in before + 1..=before + after {
        increment(&mut c, k, &|| p.logs());
    }
    assert!(p.stderr("backup").contains("went live"), "{}", p.logs());
    c
}

/// A primary that freezes (SIGSTOP: its sockets stay open, only the heartbeat notices) is
/// replaced by the backup; when it wakes up it finds its link gone, loses the arbiter and
/// stops without emitting anything more.
#[test]
fn frozen_primary_is_replaced_and_fenced() {
    let Some(g) = guest() else { return };
    let mut p = Pair::start("frozen", &g, &PairOptions::default(), None);
    let mut c = p.client();
    start_counter(&mut c);
    for k in 1..=10 {
        increment(&mut c, k, &|| p.logs());
    }
    let pid = p.primary.as_ref().unwrap().id().to_string();
    let signal = |sig: &str| {
        let st = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap();
        assert!(st.success(), "kill {sig}");
    };
    signal("-STOP");
    let t0 = Instant::now();
    for k in 11..=20 {
        increment(&mut c, k, &|| p.logs());
    }
    let took = t0.elapsed();
    assert_eq!(c.endpoint(), Some(p.backup_console), "{}", p.logs());
    assert!(p.stderr("backup").contains("nothing heard"), "{}", p.logs());
    signal("-CONT");
    assert_eq!(
        p.wait("primary", Duration::from_secs(10)),
        Some(3),
        "the old primary must stop itself\n{}",
        p.logs()
    );
    assert!(
        p.stderr("primary")
            .contains("stopping, emitting nothing more"),
        "{}",
        p.logs()
    );
    for k in 21..=25 {
        increment(&mut c, k, &|| p.logs());
    }
    eprintln!("frozen primary: the client carried on {took:?} after SIGSTOP");
}

/// The etcd arbiter: a real etcd (Debian's etcd-server), started by the test; the backup
/// wins the next generation in it when the primary dies.
#[test]
fn failover_with_etcd_arbiter() {
    let Some(g) = guest() else { return };
    let Some(etcd) = start_etcd() else { return };
    let o = PairOptions {
        arbiter: Some(format!("etcd:{}", etcd.url)),
        ..Default::default()
    };
    let mut p = Pair::start("etcd", &g, &o, None);
    let mut c = p.client();
    start_counter(&mut c);
    for k in 1..=10 {
        increment(&mut c, k, &|| p.logs());
    }
    p.kill("primary");
    for k in 11..=20 {
        increment(&mut c, k, &|| p.logs());
    }
    assert!(p.stderr("backup").contains("went live"), "{}", p.logs());
    let a = arbiter::from_spec(&format!("etcd:{}", etcd.url)).unwrap();
    let (generation, winner) = a.current("testvm").unwrap().expect("a claim in etcd");
    assert_eq!(generation, 1);
    assert!(winner.starts_with("backup@"), "{winner}");
}

/// The arbiter's storage out when the primary dies (the soak's `arbiter-outage-kill`, which
/// lost the VM: the backup stopped at the arbiter's first error): the backup keeps asking
/// (`--arbiter-patience-ms`, 30 s by default) and goes live once the storage answers again;
/// the counter goes on.
#[test]
fn backup_waits_for_an_arbiter_that_is_out_when_the_primary_dies() {
    let Some(g) = guest() else { return };
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("arbiter-out-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("claims")).unwrap();
    std::fs::write(dir.join("gone"), b"the arbiter's storage is out").unwrap();
    // The arbiter's directory is a link, swapped atomically to a plain file and back.
    let link = dir.join("arbiter");
    let point = |to: &str| {
        let tmp = dir.join("swap");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(dir.join(to), &tmp).unwrap();
        std::fs::rename(&tmp, &link).unwrap();
    };
    point("claims");
    let o = PairOptions {
        arbiter: Some(format!("file:{}", link.display())),
        ..Default::default()
    };
    let mut p = Pair::start("arbiter-out", &g, &o, None);
    let mut c = p.client();
    start_counter(&mut c);
    for k in 1..=5 {
        increment(&mut c, k, &|| p.logs());
    }
    point("gone");
    p.kill("primary");
    let gave_up = p.wait("backup", Duration::from_millis(1500));
    assert_eq!(
        gave_up,
        None,
        "the backup stopped while the arbiter was out\n{}",
        p.logs()
    );
    point("claims");
    for k in 6..=10 {
        increment(&mut c, k, &|| p.logs());
    }
    let log = p.stderr("backup");
    assert!(
        log.contains("went live") && log.contains("the arbiter answered after"),
        "{}",
        p.logs()
    );
    drop(p);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A tiny log buffer: the primary stalls on it again and again, and the pair still works.
#[test]
fn flow_control_with_a_tiny_buffer() {
    let Some(g) = guest() else { return };
    let o = PairOptions {
        extra: vec!["--log-buffer".into(), "2K".into()],
        ..Default::default()
    };
    let mut p = Pair::start("flow", &g, &o, None);
    let mut c = p.client();
    start_counter(&mut c);
    for k in 1..=30 {
        increment(&mut c, k, &|| p.logs());
    }
    std::thread::sleep(Duration::from_millis(200));
    let st = ft::console::request(
        &p.primary_console.to_string(),
        &p.secret(),
        "STATUS",
        Duration::from_secs(2),
    )
    .unwrap();
    let stalls: u64 = st
        .lines()
        .find_map(|l| l.strip_prefix("stalls: "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        stalls > 0,
        "the primary never stalled on a 2 KiB buffer\n{st}"
    );
    p.kill("primary");
    for k in 31..=40 {
        increment(&mut c, k, &|| p.logs());
    }
}

/// `--metrics`: each side serves the figures of `ftvm status` to Prometheus; after the
/// backup is killed the primary's gauges say it runs unprotected. `--log-format json`: the
/// backup's events are JSON lines.
#[test]
fn metrics_endpoints_follow_the_status() {
    let Some(g) = guest() else { return };
    let (pm, bm) = (addr(free_port()), addr(free_port()));
    let o = PairOptions {
        primary_extra: vec!["--metrics".into(), pm.to_string()],
        backup_extra: vec![
            "--metrics".into(),
            bm.to_string(),
            "--log-format".into(),
            "json".into(),
        ],
        ..Default::default()
    };
    let mut p = Pair::start("metrics", &g, &o, None);
    let mut c = p.client();
    start_counter(&mut c);
    increment(&mut c, 1, &|| p.logs());
    // The bearer token, as an operator gets it (`ftvm metrics-token`).
    let token = {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ftvm"))
            .arg("metrics-token")
            .arg("--console-key-file")
            .arg(&p.console_key)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let fetch = |a: std::net::SocketAddr, token: Option<&str>| -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(a).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        write!(s, "GET /metrics HTTP/1.0\r\n{auth}\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let get = |a: std::net::SocketAddr| -> String {
        let out = fetch(a, Some(&token));
        assert!(out.starts_with("HTTP/1.0 200"), "{out}");
        out
    };
    // Without the token: 401 and not a figure.
    for a in [pm, bm] {
        let out = fetch(a, None);
        assert!(out.starts_with("HTTP/1.0 401"), "{out}");
        assert!(!out.contains("ftvm_"), "{out}");
    }
    let value = |text: &str, name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
            .trim()
            .parse()
            .unwrap()
    };
    // The status is published every 50 ms (the backup's every 200 ms).
    std::thread::sleep(Duration::from_millis(400));
    let prim = get(pm);
    assert!(prim.contains(r#"role="primary""#), "{prim}");
    assert_eq!(value(&prim, "ftvm_protected"), 1.0, "{prim}");
    assert!(value(&prim, "ftvm_icount") > 0.0, "{prim}");
    assert!(value(&prim, "ftvm_log_sent_bytes") > 0.0, "{prim}");
    let back = get(bm);
    assert!(back.contains(r#"role="backup""#), "{back}");
    assert!(value(&back, "ftvm_log_replayed_icount") > 0.0, "{back}");
    p.kill("backup");
    increment(&mut c, 2, &|| p.logs());
    let t0 = Instant::now();
    let alone = loop {
        let m = get(pm);
        if value(&m, "ftvm_protected") == 0.0 {
            break m;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "still protected after the backup was killed\n{m}\n{}",
            p.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(value(&alone, "ftvm_failovers"), 1.0, "{alone}");
    // --log-format json: the backup's events are one JSON object a line.
    let events = p.stderr("backup");
    assert!(events.contains("authenticated"), "{events}");
    // The request without a token was logged, with its address (a warning, the only one).
    assert!(events.contains("metrics: refused 127.0.0.1:"), "{events}");
    for l in events.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            l.starts_with('{')
                && l.ends_with('}')
                && (l.contains(r#""level":"INFO""#)
                    || (l.contains(r#""level":"WARN""#) && l.contains("metrics: refused"))),
            "not a JSON event: {l}"
        );
    }
    p.power_off(&mut c, "primary");
}

/// Re-protection (issue 7): after a failover the new primary, running alone, is protected
/// again by a fresh backup (`ftvm control protect`), which starts from a snapshot of the
/// running guest and then follows the log; that backup takes over at the next kill. Three
/// rounds of kill, go live, re-protect: the counter goes on 1, 2, 3, ... throughout, and the
/// VM ends protected.
#[test]
fn reprotected_after_each_failover() {
    let Some(g) = guest() else { return };
    let o = PairOptions::default();
    let mut p = Pair::start("reprotect", &g, &o, None);
    let mut c = p.client();
    start_counter(&mut c);
    let mut k = 0;
    for round in 1..=3 {
        for _ in 0..8 {
            k += 1;
            increment(&mut c, k, &|| p.logs());
        }
        p.kill("primary");
        for _ in 0..4 {
            k += 1;
            increment(&mut c, k, &|| p.logs());
        }
        let said = p.reprotect(&g, &o);
        eprintln!("round {round}: {said}");
        assert!(
            p.stderr("primary")
                .contains("protected again by the backup"),
            "{}",
            p.logs()
        );
        for _ in 0..4 {
            k += 1;
            increment(&mut c, k, &|| p.logs());
        }
        let st = ft::console::request(
            &p.primary_console.to_string(),
            &p.secret(),
            "STATUS",
            Duration::from_secs(2),
        )
        .unwrap();
        assert!(
            st.contains("protected: yes") && st.contains(&format!("peer: {}", p.channel)),
            "round {round}: {st}"
        );
    }
    // The last backup is live and current: power off ends both.
    p.power_off(&mut c, "primary");
    assert_eq!(
        p.wait("backup", Duration::from_secs(30)),
        Some(0),
        "{}",
        p.logs()
    );
    assert!(p.stderr("backup").contains("stopping too"), "{}", p.logs());
}

/// The live clone under a guest that dirties memory faster than the link copies it (`dd`
/// reading 16 MiB of random bytes into its buffer, over and over): the rounds stop shrinking, the clone
/// still ends within its bound and reports the guest's pause; the backup it made is right
/// (it takes over with the counter intact).
#[test]
fn clone_converges_under_a_write_heavy_guest() {
    let Some(g) = guest() else { return };
    // A slow link (10 MB/s): the guest dirties its 16 MiB faster than that.
    let o = PairOptions {
        extra: vec!["--clone-bandwidth".into(), "10M".into()],
        ..PairOptions::default()
    };
    let mut p = Pair::start("clone-dirty", &g, &o, None);
    let mut c = p.client();
    wait_for_shell(&mut c);
    c.send(
        b"dd if=/dev/urandom of=/tmp/r bs=1M count=16 2>/dev/null; \
          while :; do dd if=/tmp/r of=/dev/null bs=16M 2>/dev/null; done &\n",
    )
    .unwrap();
    start_counter(&mut c);
    let mut k = 0;
    for _ in 0..4 {
        k += 1;
        increment(&mut c, k, &|| p.logs());
    }
    p.kill("primary");
    k += 1;
    increment(&mut c, k, &|| p.logs());
    let said = p.reprotect(&g, &o);
    eprintln!("{said}");
    assert!(said.contains("cloning"), "no progress shown: {said}");
    let num = |after: &str| -> f64 {
        let rest = &said[said
            .find(after)
            .unwrap_or_else(|| panic!("{after:?} in {said}"))..];
        rest[after.len()..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let rounds = said
        .split(" rounds")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or_else(|| panic!("no round count in {said}"));
    let pause = num("guest paused ");
    let delta = num("closing delta of ");
    eprintln!("write-heavy clone: {rounds} rounds, pause {pause} ms, closing delta {delta} bytes");
    assert!(
        (2..=ft::clone::MAX_ROUNDS + 1).contains(&rounds),
        "{rounds} rounds: {said}"
    );
    // It did not converge by itself: the pause carried much of the guest's hot memory.
    assert!(delta > 1e6, "closing delta of {delta} bytes: {said}");
    for _ in 0..3 {
        k += 1;
        increment(&mut c, k, &|| p.logs());
    }
    // The clone's backup takes over: its state is the primary's.
    p.kill("primary");
    for _ in 0..3 {
        k += 1;
        increment(&mut c, k, &|| p.logs());
    }
    p.power_off(&mut c, "backup");
}

/// The new backup's host dies during the live clone: the VM runs on unharmed (the counter
/// goes on), and `ftvm control protect` with a second `--backup` protects it with that one,
/// whose state is right (it takes over).
#[test]
fn clone_target_dies_and_the_next_backup_protects() {
    let Some(g) = guest() else { return };
    // A slow link, so that the clone is still copying when its target is killed.
    let o = PairOptions {
        extra: vec!["--clone-bandwidth".into(), "2M".into()],
        ..PairOptions::default()
    };
    let mut p = Pair::start("clone-dies", &g, &o, None);
    let mut c = p.client();
    start_counter(&mut c);
    let mut k = 0;
    let mut more = |c: &mut ft::console::client::ConsoleClient, n: u64, p: &Pair| {
        for _ in 0..n {
            k += 1;
            increment(c, k, &|| p.logs());
        }
    };
    more(&mut c, 3, &p);
    p.kill("primary");
    more(&mut c, 2, &p);
    let live = p.new_backup(&g, &o);
    let (mut victim, first) = p.spare_backup(&g, &o);
    let ctl = std::process::Command::new(FTVM)
        .args(["control", "protect", "--backup", &first.to_string()])
        .args(["--backup", &p.channel.to_string()])
        .arg("--console-key-file")
        .arg(&p.console_key)
        .arg(live.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    loop {
        let st = ft::console::request(
            &live.to_string(),
            &p.secret(),
            "STATUS",
            Duration::from_secs(2),
        )
        .unwrap();
        if ft::status::field(&st, "clone")
            .is_some_and(|v| v.starts_with(&format!("to {first}: round")))
        {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no clone to {first}: {st}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = victim.kill();
    let _ = victim.wait();
    more(&mut c, 2, &p);
    let out = ctl.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{said}");
    assert!(out.status.success(), "{said}\n{}", p.logs());
    assert!(said.contains("trying the next backup"), "{said}");
    let st = ft::console::request(
        &live.to_string(),
        &p.secret(),
        "STATUS",
        Duration::from_secs(2),
    )
    .unwrap();
    assert!(
        st.contains("protected: yes") && st.contains(&format!("peer: {}", p.channel)),
        "{st}"
    );
    more(&mut c, 2, &p);
    // The second backup's copy is right: it takes over.
    p.kill("primary");
    more(&mut c, 3, &p);
}

/// `ftvm migrate` (issue 7): a protected VM moves to its backup's host (the primary stops once
/// the backup has replayed everything, the backup goes live exactly there, the old side exits
/// 0); then, running alone, it moves with `--to` to a new host whose backup is first brought in
/// sync. The counter goes on 1, 2, 3, ... through both moves.
#[test]
fn migrate_to_the_backup_and_to_a_new_host() {
    let Some(g) = guest() else { return };
    let o = PairOptions::default();
    let mut p = Pair::start("migrate", &g, &o, None);
    let mut c = p.client();
    start_counter(&mut c);
    let console_key = p.console_key.clone();
    let migrate = |args: &[String]| {
        let out = std::process::Command::new(FTVM)
            .arg("migrate")
            .arg("--console-key-file")
            .arg(&console_key)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    for k in 1..=5 {
        increment(&mut c, k, &|| p.logs());
    }
    let (ok, said) = migrate(&[p.primary_console.to_string()]);
    assert!(ok && said.contains("handed over"), "{said}\n{}", p.logs());
    eprintln!("{}", said.trim());
    assert_eq!(
        p.wait("primary", Duration::from_secs(10)),
        Some(0),
        "{}",
        p.logs()
    );
    assert!(
        p.stderr("primary").contains("handed over to the backup"),
        "{}",
        p.logs()
    );
    for k in 6..=10 {
        increment(&mut c, k, &|| p.logs());
    }
    assert!(p.stderr("backup").contains("went live"), "{}", p.logs());
    // Alone now: a plain live migration to a host that has no role yet.
    let (ok, said) = migrate(&[p.backup_console.to_string()]);
    assert!(!ok && said.contains("runs alone"), "{said}");
    let live = p.new_backup(&g, &o);
    let (ok, said) = migrate(&[live.to_string(), "--to".into(), p.channel.to_string()]);
    assert!(ok && said.contains("handed over"), "{said}\n{}", p.logs());
    eprintln!("{}", said.trim());
    assert_eq!(
        p.wait("primary", Duration::from_secs(10)),
        Some(0),
        "{}",
        p.logs()
    );
    for k in 11..=15 {
        increment(&mut c, k, &|| p.logs());
    }
    p.power_off(&mut c, "backup");
}

/// Operators are not hosts: the consoles admit only the operators' secret. Without it (the old
/// plain-text requests, the channel's key, a made-up key) a client gets no console output and
/// no status, and its input and control operations are not taken: the guest runs on.
#[test]
fn consoles_refuse_clients_without_the_secret() {
    let Some(g) = guest() else { return };
    let p = Pair::start("consolekeys", &g, &PairOptions::default(), None);
    let mut c = p.client();
    start_counter(&mut c);
    increment(&mut c, 1, &|| p.logs());
    let consoles = format!("{},{}", p.primary_console, p.backup_console);
    let ftvm = |args: &[&str], key: Option<&std::path::Path>| {
        let mut cmd = std::process::Command::new(FTVM);
        cmd.args(args);
        if let Some(k) = key {
            cmd.arg("--console-key-file").arg(k);
        }
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // No secret at all: the command says what it needs.
    let (ok, _, err) = ftvm(&["status", &consoles], None);
    assert!(
        !ok && err.contains("--console-key-file is required"),
        "{err}"
    );
    // The channel's key, and a stranger's: refused, and told so; no status printed.
    let stranger = p.dir.join("stranger-key");
    std::fs::write(&stranger, ft::Key::random().bytes()).unwrap();
    for k in [p.key.clone(), stranger] {
        let (ok, out, _) = ftvm(&["status", &consoles], Some(&k));
        assert!(!ok, "{out}");
        assert!(!out.contains("role:"), "{out}");
        assert!(out.contains("refused our console key"), "{out}");
        for op in ["poweroff", "pause"] {
            let (ok, _, err) = ftvm(&["control", op, &p.primary_console.to_string()], Some(&k));
            assert!(!ok && err.contains("refused our console key"), "{err}");
        }
        let mut bad = ft::console::client::ConsoleClient::new(
            vec![p.primary_console],
            ft::console::Secret::operator(ft::Key::from_file(&k).unwrap()),
        );
        bad.reconnect_for = Duration::from_millis(300);
        assert!(bad.send(b"\x04poweroff\n").is_err());
    }
    // The old plain-text protocol: one line of refusal, nothing of the guest's.
    for req in ["STATUS\n", "CONSOLE 0\n", "CONTROL poweroff\n"] {
        let mut s = std::net::TcpStream::connect(p.primary_console).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        std::io::Write::write_all(&mut s, req.as_bytes()).unwrap();
        let mut out = Vec::new();
        let _ = std::io::Read::read_to_end(&mut s, &mut out);
        assert_eq!(out, ft::console::PLAIN_REFUSAL, "{req:?}");
    }
    // Nothing was applied: the guest still counts, and the primary logged the refusals.
    increment(&mut c, 2, &|| p.logs());
    let st = p.status(p.primary_console, Duration::from_secs(2)).unwrap();
    assert!(
        st.contains("role: primary") && st.contains("protected: yes"),
        "{st}"
    );
    assert!(
        p.stderr("primary").contains("console: refused 127.0.0.1:"),
        "{}",
        p.logs()
    );
}
