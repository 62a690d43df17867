//! The network card end to end: Debian's passt on a unix socket (`passt -f -s SOCK -t PORT`,
//! QEMU's `-netdev stream` framing), the Linux guest booted with `ftvm run --netdev
//! stream,path=SOCK`, a DHCP lease from passt (`udhcpc -i eth0`), the guest's TCP counter
//! service on port 7000, and a host client on 127.0.0.1:PORT that passt forwards to it and that
//! must read 1, 2, 3. Then the same with `--record`, and `ftvm replay` of the log: the replayed
//! console output must be the recorded one, byte for byte, without any network.
//!
//! Needs the guest (`cargo xtask guest`, `FTVM_GUEST_DIR`) and passt (Debian package `passt`);
//! either missing is a skip (a failure under `cargo xtask test`).

mod ft_support;

use ft_support::{Passt, FTVM};
use guestctl::Console;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const PASST: &str = "/usr/bin/passt";

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("net");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{name}-{}", std::process::id()))
}

fn prerequisites() -> Option<PathBuf> {
    let guest = guestctl::guest_dir_from_env()?;
    if !Path::new(PASST).exists() {
        guestctl::skip("passt is not installed (Debian package `passt`)");
        return None;
    }
    if !Path::new(guestctl::FW_JUMP).exists() {
        guestctl::skip("OpenSBI is not installed (Debian package `opensbi`)");
        return None;
    }
    Some(guest)
}

fn ftvm_run(guest: &Path, sock: &Path, record: Option<&Path>) -> Command {
    let mut cmd = Command::new(FTVM);
    cmd.arg("run")
        .args(["--bios", guestctl::FW_JUMP])
        .args(guestctl::linux_boot_args(guest))
        .arg("--stats")
        .arg("--netdev")
        .arg(format!("stream,path={}", sock.display()));
    if let Some(log) = record {
        cmd.arg("--record").arg(log);
    }
    cmd
}

/// Boots, takes a lease, starts the counter and checks that a host client counts 1, 2, 3
/// through passt. Returns the round-trip times of the requests.
fn boot_and_count(c: &mut Console, port: u16) -> Vec<Duration> {
    let step = Duration::from_secs(120);
    c.wait_for("ftvm-guest: ready", Duration::from_secs(300))
        .expect("the guest boots");
    let lease = c
        .run("udhcpc -i eth0 -n -q -t 10 2>&1", step)
        .expect("udhcpc");
    assert!(
        lease.contains("lease of"),
        "no DHCP lease from passt:\n{lease}"
    );
    let addr = c.run("ip -4 addr show dev eth0", step).unwrap();
    assert!(addr.contains("inet "), "{addr}");
    c.send(b"counter 7000 >/dev/null 2>&1 &\n").unwrap();
    c.run("true", step).unwrap();
    // Until the counter listens, passt answers a connection with a reset or a close.
    let t = Instant::now();
    loop {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the counter never answered through passt"
        );
        if let Some(rtts) = count(port) {
            return rtts;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// One client: three requests, answers 1, 2, 3. `None` if the service is not there yet.
fn count(port: u16) -> Option<Vec<Duration>> {
    let s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    let mut r = BufReader::new(s.try_clone().ok()?);
    let mut w = s;
    let mut rtts = Vec::new();
    for want in 1..=3u32 {
        let t = Instant::now();
        w.write_all(b"next\n").ok()?;
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        rtts.push(t.elapsed());
        assert_eq!(line.trim(), want.to_string(), "the counter's answer");
    }
    Some(rtts)
}

#[test]
fn counter_through_passt() {
    let Some(guest) = prerequisites() else {
        return;
    };
    let Some(passt) = Passt::start("net") else {
        return;
    };
    let mut c = Console::spawn(ftvm_run(&guest, &passt.sock, None)).expect("start ftvm run");
    let rtts = boot_and_count(&mut c, passt.port);
    eprintln!("TCP round trips through passt: {rtts:?}");
    // A second client: the count goes on.
    let s = TcpStream::connect(("127.0.0.1", passt.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    (&s).write_all(b"x\n").unwrap();
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "4");
    c.send(b"poweroff -f\n").unwrap();
    assert_eq!(c.wait_exit(Duration::from_secs(60)), Some(0));
    let out = c.output();
    assert!(out.contains("eth0"), "{out}");
}

#[test]
fn record_and_replay_with_the_network() {
    let Some(guest) = prerequisites() else {
        return;
    };
    let Some(passt) = Passt::start("net-rr") else {
        return;
    };
    let log = scratch("net.log");
    let mut c = Console::spawn(ftvm_run(&guest, &passt.sock, Some(&log))).expect("start ftvm run");
    boot_and_count(&mut c, passt.port);
    c.send(b"poweroff -f\n").unwrap();
    assert_eq!(c.wait_exit(Duration::from_secs(60)), Some(0));
    let recorded = c.output();
    drop(c);
    drop(passt);

    let out = Command::new(FTVM)
        .arg("replay")
        .arg(&log)
        .output()
        .expect("start ftvm replay");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "ftvm replay: {err}");
    // The recorder's console strips CR; compare the same way.
    let replayed: Vec<u8> = out.stdout.into_iter().filter(|&b| b != b'\r').collect();
    let replayed = String::from_utf8_lossy(&replayed);
    assert!(
        replayed == recorded,
        "the replay printed something else:\n--- recorded\n{recorded}\n--- replayed\n{replayed}\n{err}"
    );
    assert!(replayed.contains("lease of"), "{replayed}");
    let _ = std::fs::remove_file(&log);
}
