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

#[test]
fn tcp_connection_survives_failover_through_passt() {
    let Some(g) = guest() else { return };
    let Some(passt) = Passt::start("ft-net") else {
        return;
    };
    let mut rng = Rng::new("tcp_connection_survives_failover_through_passt");
    let o = PairOptions {
        extra: vec![
            "--netdev".into(),
            format!("stream,path={}", passt.sock.display()),
        ],
        ..Default::default()
    };
    let mut p = Pair::start("ft-net", &g, &o, None);
    let mut c = p.client();
    wait_for_shell(&mut c);
    c.send(b"udhcpc -i eth0 -n -q -t 10 >/dev/null 2>&1; counter 7000 >/dev/null 2>&1 &\n")
        .unwrap();
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
