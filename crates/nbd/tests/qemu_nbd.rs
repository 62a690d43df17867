//! The client against a real `qemu-nbd` (Debian's qemu-utils): round trips on raw and qcow2
//! images, FUA, trim, local range checks, a server that stops or dies mid-request, a server
//! that answers an error, and a refused export name.

use nbd::{NbdAddr, NbdClient, NbdError};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const QEMU_NBD: &str = "/usr/bin/qemu-nbd";
const QEMU_IMG: &str = "/usr/bin/qemu-img";
const SIZE: u64 = 8 << 20;
const TIMEOUT: Duration = Duration::from_secs(2);

/// A scratch directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("ftvm-nbd-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running qemu-nbd, killed on drop.
struct Server {
    child: Child,
    addr: NbdAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Serves `image` (format `fmt`) as export `ftvm`, on a unix socket in `dir` or on a free
    /// 127.0.0.1 port; `extra` goes to qemu-nbd as is (e.g. `-r`).
    fn start(dir: &Path, image: &Path, fmt: &str, tcp: bool, extra: &[&str]) -> Server {
        let mut cmd = Command::new(QEMU_NBD);
        cmd.args(["--persistent", "--shared=4", "-x", "ftvm", "-f", fmt])
            .args(extra);
        let addr = if tcp {
            let port = guestctl::free_port();
            cmd.args(["-b", "127.0.0.1", "-p", &port.to_string()]);
            NbdAddr::Tcp(format!("127.0.0.1:{port}"))
        } else {
            let sock = dir.join("nbd.sock");
            cmd.arg("-k").arg(&sock);
            NbdAddr::Unix(sock)
        };
        cmd.arg(image).stdin(Stdio::null());
        let child = cmd.spawn().expect("spawn qemu-nbd");
        let s = Server { child, addr };
        // Ready once a connection negotiates; bounded.
        let t0 = Instant::now();
        loop {
            match NbdClient::connect(&s.addr, "ftvm", TIMEOUT) {
                Ok(_) => break,
                Err(e) if t0.elapsed() > Duration::from_secs(10) => {
                    panic!("qemu-nbd did not come up: {e}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        s
    }

    fn connect(&self) -> NbdClient {
        NbdClient::connect(&self.addr, "ftvm", TIMEOUT).expect("connect")
    }

    fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    }
}

fn have_qemu_nbd() -> bool {
    if Path::new(QEMU_NBD).exists() && Path::new(QEMU_IMG).exists() {
        return true;
    }
    guestctl::skip("qemu-nbd/qemu-img missing: apt-get install qemu-utils");
    false
}

fn make_image(dir: &Path, fmt: &str) -> PathBuf {
    let p = dir.join(format!("disk.{fmt}"));
    let st = Command::new(QEMU_IMG)
        .args(["create", "-q", "-f", fmt])
        .arg(&p)
        .arg(SIZE.to_string())
        .status()
        .unwrap();
    assert!(st.success());
    p
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Writes, reads back, flushes, trims, FUA-writes, over a fresh connection too.
fn round_trips(fmt: &str, tcp: bool) {
    if !have_qemu_nbd() {
        return;
    }
    let dir = TempDir::new(&format!("rt-{fmt}-{tcp}"));
    let img = make_image(&dir.0, fmt);
    let srv = Server::start(&dir.0, &img, fmt, tcp, &[]);
    let mut c = srv.connect();
    assert_eq!(c.size(), SIZE);
    assert!(!c.read_only());
    assert!(c.can_flush());

    let mut buf = vec![0xffu8; 64 * 1024];
    c.read_at(0, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0), "a new image reads as zeroes");

    // Unaligned and large (split into chunks) writes.
    let a = pattern(4096, 1);
    c.write_at(512, &a).unwrap();
    let b = pattern(3 << 20, 7);
    c.write_at(SIZE - b.len() as u64 - 3, &b).unwrap();
    c.write_at(SIZE - 1, &[0xab]).unwrap();
    c.flush().unwrap();

    let mut got = vec![0u8; a.len()];
    c.read_at(512, &mut got).unwrap();
    assert_eq!(got, a);
    let mut got = vec![0u8; b.len()];
    c.read_at(SIZE - b.len() as u64 - 3, &mut got).unwrap();
    assert_eq!(got, b);

    // FUA.
    assert!(c.can_fua(), "qemu-nbd offers FUA");
    let f = pattern(8192, 42);
    c.write_fua(1 << 20, &f).unwrap();
    c.set_fua(true);
    c.write_at(2 << 20, &f).unwrap();

    // Trim: the range reads back as zeroes (qemu-nbd's raw and qcow2 both punch holes; the
    // protocol only promises unspecified contents, so just check that it is accepted and
    // that the rest is untouched).
    assert!(c.can_trim(), "qemu-nbd offers trim");
    c.trim(1 << 20, 4096).unwrap();
    c.disconnect().unwrap();

    // A second connection sees everything.
    let mut c = srv.connect();
    let mut got = vec![0u8; f.len()];
    c.read_at(2 << 20, &mut got).unwrap();
    assert_eq!(got, f);
    let mut got = vec![0u8; 4096];
    c.read_at((1 << 20) + 4096, &mut got).unwrap();
    assert_eq!(got, f[4096..]);
    let mut one = [0u8; 1];
    c.read_at(SIZE - 1, &mut one).unwrap();
    assert_eq!(one, [0xab]);
}

#[test]
fn raw_round_trips_unix() {
    round_trips("raw", false);
}

#[test]
fn raw_round_trips_tcp() {
    round_trips("raw", true);
}

#[test]
fn qcow2_round_trips() {
    round_trips("qcow2", false);
}

#[test]
fn out_of_range_is_refused_locally() {
    if !have_qemu_nbd() {
        return;
    }
    let dir = TempDir::new("range");
    let img = make_image(&dir.0, "raw");
    let srv = Server::start(&dir.0, &img, "raw", false, &[]);
    let mut c = srv.connect();
    let mut buf = [0u8; 512];
    let e = c.read_at(SIZE - 256, &mut buf).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{e}");
    assert!(e.to_string().contains("past the end"), "{e}");
    let e = c.write_at(u64::MAX - 10, &buf).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{e}");
    // The connection is still fine.
    c.read_at(0, &mut buf).unwrap();
}

#[test]
fn error_reply_is_an_io_error() {
    if !have_qemu_nbd() {
        return;
    }
    let dir = TempDir::new("ro");
    let img = make_image(&dir.0, "raw");
    let srv = Server::start(&dir.0, &img, "raw", false, &["-r"]);
    let mut c = srv.connect();
    assert!(c.read_only());
    let e = c.write_at(0, &[1u8; 512]).unwrap_err();
    eprintln!("write to a read-only export: {e}");
    assert!(e.to_string().contains("the server answered"), "{e}");
    // An error reply leaves the connection usable.
    let mut buf = [0xffu8; 512];
    c.read_at(0, &mut buf).unwrap();
    assert_eq!(buf, [0u8; 512]);
}

#[test]
fn unknown_export_is_refused() {
    if !have_qemu_nbd() {
        return;
    }
    let dir = TempDir::new("export");
    let img = make_image(&dir.0, "raw");
    let srv = Server::start(&dir.0, &img, "raw", false, &[]);
    let e = NbdClient::connect(&srv.addr, "nonesuch", TIMEOUT).unwrap_err();
    eprintln!("{e}");
    assert!(matches!(e, NbdError::Refused { .. }), "{e:?}");
    assert!(e.to_string().contains("nonesuch"), "{e}");
}

#[test]
fn no_server_is_a_connect_error() {
    let dir = TempDir::new("none");
    let addr = NbdAddr::Unix(dir.0.join("absent.sock"));
    let e = NbdClient::connect(&addr, "", TIMEOUT).unwrap_err();
    assert!(matches!(e, NbdError::Connect { .. }), "{e:?}");
}

#[test]
fn stopped_server_times_out() {
    if !have_qemu_nbd() {
        return;
    }
    let dir = TempDir::new("stop");
    let img = make_image(&dir.0, "raw");
    let srv = Server::start(&dir.0, &img, "raw", true, &[]);
    let mut c = srv.connect();
    srv.signal("-STOP");
    let t0 = Instant::now();
    let mut buf = vec![0u8; 64 * 1024];
    let e = c.read_at(0, &mut buf).unwrap_err();
    let took = t0.elapsed();
    srv.signal("-CONT");
    eprintln!("after {took:?}: {e}");
    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
    assert!(took < TIMEOUT + Duration::from_secs(2), "{took:?}");
    // The stream is out of step now: later requests fail at once.
    let e = c.read_at(0, &mut buf).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NotConnected, "{e}");
}

#[test]
fn server_killed_mid_request() {
    if !have_qemu_nbd() {
        return;
    }
    let dir = TempDir::new("kill");
    let img = make_image(&dir.0, "raw");
    let mut srv = Server::start(&dir.0, &img, "raw", false, &[]);
    let mut c = NbdClient::connect(&srv.addr, "ftvm", Duration::from_secs(10)).unwrap();
    // Stop it so that the request is surely in flight, then kill it.
    srv.signal("-STOP");
    let pid = srv.child.id();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    });
    let t0 = Instant::now();
    let e = c.write_at(0, &pattern(64 * 1024, 3)).unwrap_err();
    let took = t0.elapsed();
    killer.join().unwrap();
    let _ = srv.child.wait();
    eprintln!("after {took:?}: {e}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_ne!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
    let e = c.flush().unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NotConnected, "{e}");
    // Reconnecting fails plainly.
    assert!(matches!(
        NbdClient::connect(&srv.addr, "ftvm", TIMEOUT),
        Err(NbdError::Connect { .. })
    ));
}

/// The `ftvm` binary `cargo test --workspace` built beside this test (`$FTVM_BIN` overrides).
/// What the Linux-on-NBD tests need: qemu-nbd, the guest images and the ftvm binary (each
/// missing one is a skip, or a failure under `cargo xtask test`).
fn linux_prerequisites() -> Option<(PathBuf, PathBuf)> {
    if !have_qemu_nbd() {
        return None;
    }
    let guest = guestctl::guest_dir_from_env()?;
    Some((guest, ftvm_bin()?))
}

fn ftvm_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FTVM_BIN") {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.parent()?.join("ftvm");
    if p.exists() {
        Some(p)
    } else {
        guestctl::skip(&format!(
            "no ftvm binary at {} (build it, or set FTVM_BIN)",
            p.display()
        ));
        None
    }
}

/// Boots the Linux guest in `guest` on `ftvm run` with `--drive drive`, up to its shell.
fn boot(ftvm: &Path, guest: &Path, drive: &str) -> guestctl::Console {
    boot_with(ftvm, guest, drive, &[])
}

/// [`boot`] with more options for `ftvm run`.
fn boot_with(
    ftvm: &Path,
    guest: &Path,
    drive: &str,
    extra: &[&std::ffi::OsStr],
) -> guestctl::Console {
    let mut cmd = Command::new(ftvm);
    cmd.arg("run")
        .args(["--bios", guestctl::FW_JUMP, "--mem", "256M", "--smp", "1"])
        .arg("--kernel")
        .arg(guest.join("Image"))
        .arg("--initrd")
        .arg(guest.join("initramfs.cpio.gz"))
        .args(["--append", "console=ttyS0"])
        .args(["--drive", drive])
        .args(extra);
    let mut c = guestctl::Console::spawn(cmd).expect("start ftvm run");
    let boot = Duration::from_secs(300);
    c.wait_for("ftvm-guest: ready", boot)
        .unwrap_or_else(|e| panic!("{e}\n{}", c.output()));
    c.run("true", boot).unwrap();
    c
}

/// Reads the whole of /dev/vda in the guest from a cold cache; dd's summary line (guest
/// time) and the host's wall-clock time for the whole command.
fn sequential_read(c: &mut guestctl::Console) -> String {
    let t0 = Instant::now();
    let dd = c
        .run(
            "echo 3 > /proc/sys/vm/drop_caches; dd if=/dev/vda of=/dev/null bs=64k 2>&1 | tail -1",
            Duration::from_secs(120),
        )
        .unwrap();
    let wall = t0.elapsed();
    format!(
        "{} (host wall clock {:.0} ms)",
        dd.lines().last().unwrap_or("").trim(),
        wall.as_secs_f64() * 1e3
    )
}

/// `ftvm run` booting Linux with its disk on qemu-nbd: the guest mounts it, reads a file,
/// writes one, reads the whole disk (the rate is printed, next to the same on a file), then
/// sees an I/O error, not a hang, once the server is gone.
#[test]
fn linux_boots_from_qemu_nbd() {
    let Some((guest, ftvm)) = linux_prerequisites() else {
        return;
    };
    let dir = TempDir::new("boot");
    let img = dir.0.join("disk.img");
    std::fs::copy(guest.join("disk.img"), &img).expect("copy the guest disk");
    let step = Duration::from_secs(120);

    // The same guest on a file, for comparison.
    let file_img = dir.0.join("file.img");
    std::fs::copy(guest.join("disk.img"), &file_img).expect("copy the guest disk");
    let mut c = boot(&ftvm, &guest, &format!("file={}", file_img.display()));
    let on_file = sequential_read(&mut c);
    c.send(b"poweroff\n").unwrap();
    assert!(c.wait_exit(step).is_some(), "{}", c.output());

    let srv = Server::start(&dir.0, &img, "raw", false, &[]);
    let mut c = boot(
        &ftvm,
        &guest,
        &format!("nbd={},export=ftvm,timeout=5", srv.addr),
    );
    let hello = c.run("cat /mnt/hello.txt", step).unwrap();
    assert!(hello.contains("hello"), "{hello}");
    let w = c
        .run(
            "echo over-nbd > /mnt/nbd.txt && sync && cat /mnt/nbd.txt",
            step,
        )
        .unwrap();
    assert!(w.contains("over-nbd"), "{w}");
    let on_nbd = sequential_read(&mut c);
    eprintln!("guest sequential read of /dev/vda (16 MiB, bs=64k, guest time):");
    eprintln!("  file:     {on_file}");
    eprintln!("  qemu-nbd: {on_nbd}");
    // The server goes away: the guest's next disk read fails, and the shell answers.
    drop(srv);
    let e = c
        .run(
            "echo 3 > /proc/sys/vm/drop_caches; dd if=/dev/vda of=/dev/null bs=4k count=1 skip=1000 2>&1; echo rc=$?",
            step,
        )
        .unwrap();
    eprintln!("after the server died: {}", e.trim());
    assert!(
        e.contains("Input/output error") && e.contains("rc=1"),
        "{e}"
    );
    c.send(b"poweroff\n").unwrap();
    assert!(c.wait_exit(step).is_some(), "{}", c.output());
}

/// The same guest disk converted to qcow2 and served by `qemu-nbd -f qcow2`.
#[test]
fn linux_boots_from_qcow2_over_nbd() {
    let Some((guest, ftvm)) = linux_prerequisites() else {
        return;
    };
    let dir = TempDir::new("boot-qcow2");
    let img = dir.0.join("disk.qcow2");
    let st = Command::new(QEMU_IMG)
        .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
        .arg(guest.join("disk.img"))
        .arg(&img)
        .status()
        .unwrap();
    assert!(st.success());
    let srv = Server::start(&dir.0, &img, "qcow2", true, &[]);
    let step = Duration::from_secs(120);
    let mut c = boot(
        &ftvm,
        &guest,
        &format!("nbd={},export=ftvm,fua=on", srv.addr),
    );
    let hello = c.run("cat /mnt/hello.txt", step).unwrap();
    assert!(hello.contains("hello"), "{hello}");
    let w = c
        .run("echo qcow2 > /mnt/q.txt && sync && cat /mnt/q.txt", step)
        .unwrap();
    assert!(w.contains("qcow2"), "{w}");
    eprintln!(
        "guest sequential read over qemu-nbd, qcow2, TCP: {}",
        sequential_read(&mut c)
    );
    c.send(b"poweroff\n").unwrap();
    assert!(c.wait_exit(step).is_some(), "{}", c.output());
    drop(srv);
    // What the guest wrote is in the qcow2 image.
    let srv = Server::start(&dir.0, &img, "qcow2", false, &["-r"]);
    let mut cl = srv.connect();
    let mut disk = vec![0u8; usize::try_from(cl.size()).unwrap()];
    cl.read_at(0, &mut disk).unwrap();
    assert!(disk.windows(6).any(|w| w == b"qcow2\n"));
}

/// `ftvm run --record` on an NBD disk, then `ftvm replay` with the server gone: disk reads
/// come from the log, so the replay needs no server.
#[test]
fn record_on_nbd_replays_without_the_server() {
    let Some((guest, ftvm)) = linux_prerequisites() else {
        return;
    };
    let dir = TempDir::new("record");
    let img = dir.0.join("disk.img");
    std::fs::copy(guest.join("disk.img"), &img).expect("copy the guest disk");
    let log = dir.0.join("run.log");
    let srv = Server::start(&dir.0, &img, "raw", false, &[]);
    let step = Duration::from_secs(120);
    let mut c = boot_with(
        &ftvm,
        &guest,
        &format!("nbd={},export=ftvm", srv.addr),
        &["--record".as_ref(), log.as_os_str()],
    );
    let hello = c.run("cat /mnt/hello.txt", step).unwrap();
    assert!(hello.contains("hello"), "{hello}");
    let w = c
        .run("echo rec > /mnt/r.txt && sync && cat /mnt/r.txt", step)
        .unwrap();
    assert!(w.contains("rec"), "{w}");
    c.send(b"poweroff\n").unwrap();
    assert_eq!(c.wait_exit(step), Some(0), "{}", c.output());
    let recorded = c.output();
    drop(srv);
    let out = Command::new(&ftvm)
        .arg("replay")
        .arg(&log)
        .output()
        .expect("start ftvm replay");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let stdout: Vec<u8> = out.stdout.into_iter().filter(|&b| b != b'\r').collect();
    assert_eq!(String::from_utf8_lossy(&stdout), recorded);
}
