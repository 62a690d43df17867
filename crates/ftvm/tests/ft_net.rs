//! The network under fault tolerance, unprivileged: Debian's passt forwards a host port to the
//! guest's counter service (TCP, in the guest's own kernel); a client on the host holds one TCP
//! connection and increments the counter through it while the primary is SIGKILLed. The
//! backup goes live, joins passt, announces the guest's MAC, and the same connection carries
//! on: 1, 2, 3, ... with none repeated or skipped, and no reset. (passt keeps its flows when
//! the VM side reconnects and resends unacknowledged data every 2 s, up to 7 times; see
//! DESIGN.md §3.)

mod ft_support;

use ft_support::*;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Connects to the counter through passt once the guest has its address and the service runs.
fn connect_counter(port: u16, p: &Pair) -> (BufReader<TcpStream>, TcpStream) {
    let t0 = Instant::now();
    loop {
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "the counter never answered through passt\n{}",
            p.logs()
        );
        if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut w = s;
            let mut line = String::new();
            if w.write_all(b"next\n").is_ok() && r.read_line(&mut line).is_ok_and(|n| n > 0) {
                assert_eq!(line.trim(), "1", "the counter's first answer");
                r.get_ref()
                    .set_read_timeout(Some(Duration::from_secs(30)))
                    .unwrap();
                return (r, w);
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A pair on passt (host port `passt.port` to the guest's 7000) whose guest, once its shell
/// answers, takes a DHCP lease and starts `service` in the background; `None` (skipped) without
/// a guest or passt.
fn pair_on_passt(name: &str, service: &str) -> Option<(Passt, Pair)> {
    let g = guest()?;
    let passt = Passt::start(name)?;
    let o = PairOptions {
        extra: vec![
            "--netdev".into(),
            format!("stream,path={}", passt.sock.display()),
        ],
        ..Default::default()
    };
    let p = Pair::start(name, &g, &o, None);
    let mut c = p.client();
    wait_for_shell(&mut c);
    c.send(
        format!("udhcpc -i eth0 -n -q -t 10 >/dev/null 2>&1; {service} >/dev/null 2>&1 &\n")
            .as_bytes(),
    )
    .unwrap();
    Some((passt, p))
}

#[test]
fn tcp_connection_survives_failover_through_passt() {
    let Some((passt, mut p)) = pair_on_passt("ft-net", "counter 7000") else {
        return;
    };
    let mut rng = Rng::new("tcp_connection_survives_failover_through_passt");
    let (mut r, mut w) = connect_counter(passt.port, &p);
    let total = 60;
    let kill_at = 5 + rng.below(40);
    let mut killed_at = None;
    for k in 2..=total {
        w.write_all(b"next\n")
            .unwrap_or_else(|e| panic!("send {k}: {e}\n{}", p.logs()));
        let mut line = String::new();
        let n = r
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("answer {k}: {e}\n{}", p.logs()));
        assert!(n > 0, "the connection closed at {k}\n{}", p.logs());
        assert_eq!(
            line.trim(),
            k.to_string(),
            "the counter skipped or repeated\n{}",
            p.logs()
        );
        if let Some(t) = killed_at.take() {
            eprintln!(
                "first answer over the same connection {:?} after the kill",
                Instant::elapsed(&t)
            );
        }
        if k == kill_at {
            p.kill("primary");
            killed_at = Some(Instant::now());
        }
    }
    assert!(p.stderr("backup").contains("went live"), "{}", p.logs());
}

/// The README's demo, `ftvm pair --demo N --demo-kills K --passt PORT`, as a user runs it:
/// passt started by the pair, the guest's counter service over one TCP connection through two
/// SIGKILLs of the primary (1..=total, none repeated or skipped) — the pair protecting the new
/// primary again by itself after the first, so that the second fails over too — and the
/// guest's web server (busybox httpd, a CGI page) answering before and after.
#[test]
fn pair_demo_counter_and_web_server_survive_failover() {
    let Some(g) = guest() else { return };
    if !std::path::Path::new("/usr/bin/passt").exists() {
        guestctl::skip("passt is not installed (Debian package `passt`)");
        return;
    }
    // Two adjacent free ports: PORT (counter) and PORT+1 (web server).
    let port = loop {
        let (p, q) = (free_port(), free_port());
        if q == p + 1 {
            break p;
        }
    };
    let dir = std::env::temp_dir().join(format!("ftvm-pair-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let arbiter = format!("file:{}", dir.join("arbiter").display());
    let (channel, pc, bc) = (free_port(), free_port(), free_port());
    let mut child = std::process::Command::new(FTVM)
        .args(["pair", "--bios", FW_JUMP, "--mem", "256M"])
        .args(guestctl::linux_boot_args(&g))
        .args(["--demo", "15", "--demo-total", "45", "--demo-kills", "2"])
        .args(["--passt", &port.to_string(), "--arbiter", &arbiter])
        .args(["--channel", &format!("127.0.0.1:{channel}")])
        .args(["--primary-console", &format!("127.0.0.1:{pc}")])
        .args(["--backup-console", &format!("127.0.0.1:{bc}")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if t0.elapsed() > Duration::from_secs(300) {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = child.wait_with_output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    let logs = format!("--- stdout:\n{stdout}\n--- stderr:\n{stderr}");
    assert!(
        status.is_some_and(|s| s.success()),
        "ftvm pair --demo: {status:?}\n{logs}"
    );
    assert!(
        stdout.contains("45 increments over one TCP connection answered 1..=45 in order"),
        "{logs}"
    );
    // Both failovers were followed by re-protection, by the pair itself.
    assert!(stdout.contains("through 2 SIGKILL(s)"), "{logs}");
    assert_eq!(
        stderr.matches("ftvm pair: protected again in").count(),
        2,
        "{logs}"
    );
    // The guest's poweroff, typed at the end, reaches the live VM: both sides end cleanly.
    assert!(
        stderr.contains("the guest powered off: stopping too"),
        "{logs}"
    );
    let web = stdout
        .lines()
        .find(|l| l.contains("web server answered"))
        .unwrap_or_else(|| panic!("no web server line\n{logs}"));
    assert_eq!(
        web.matches("hello from the ftvm guest, up ").count(),
        2,
        "{logs}"
    );
    eprintln!("{web}");
}
