//! Drives a guest's serial console the way a person at the keyboard would: start the VM as a
//! child process with the console on its stdin/stdout, wait for text, type shell commands and
//! collect exactly what each command printed.
//!
//! Used by the end-to-end tests (ftvm against QEMU, same commands, same answers) and by the
//! Linux benchmarks. Every wait is bounded; dropping a [`Console`] kills the VM.

pub mod appendlog;
pub mod etcd;
pub mod iperf;
pub mod pgbench;

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use thiserror::Error;

/// What went wrong while talking to a guest.
#[derive(Debug, Error)]
pub enum ConsoleError {
    /// The VM process could not be started.
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// The expected text did not appear in time.
    #[error("timed out after {secs:.0} s waiting for {wanted:?}; last console output:\n{tail}")]
    Timeout {
        /// What we waited for.
        wanted: String,
        /// How long.
        secs: f64,
        /// The end of the console output.
        tail: String,
    },
    /// The VM exited while we waited.
    #[error("the VM exited while waiting for {wanted:?}; last console output:\n{tail}")]
    Exited {
        /// What we waited for.
        wanted: String,
        /// The end of the console output.
        tail: String,
    },
    /// Writing to the console failed.
    #[error("cannot write to the console: {0}")]
    Write(std::io::Error),
}

#[derive(Default)]
struct Shared {
    out: Vec<u8>,
    closed: bool,
}

/// A running VM and its console.
pub struct Console {
    child: Child,
    stdin: Option<ChildStdin>,
    shared: Arc<(Mutex<Shared>, Condvar)>,
    /// Output before this offset has been consumed by earlier waits.
    pos: usize,
    seq: u32,
}

impl Console {
    /// Starts `cmd` with piped stdin/stdout (stderr is inherited) and starts collecting output.
    pub fn spawn(mut cmd: Command) -> Result<Console, ConsoleError> {
        let program = format!("{:?}", cmd.get_program());
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|source| ConsoleError::Spawn { program, source })?;
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let shared = Arc::new((Mutex::new(Shared::default()), Condvar::new()));
        let s2 = Arc::clone(&shared);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                let n = stdout.read(&mut buf).unwrap_or(0);
                let (m, cv) = &*s2;
                let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
                if n == 0 {
                    g.closed = true;
                    cv.notify_all();
                    return;
                }
                // Terminals end lines with CR LF; keep plain LF so answers compare as text.
                g.out
                    .extend(buf[..n].iter().copied().filter(|&b| b != b'\r'));
                cv.notify_all();
            }
        });
        Ok(Console {
            stdin: child.stdin.take(),
            child,
            shared,
            pos: 0,
            seq: 0,
        })
    }

    /// The VM process's id (to send it signals, e.g. SIGUSR1 for a snapshot).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Everything the console printed so far (lossily decoded; CR removed).
    pub fn output(&self) -> String {
        let g = self.shared.0.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&g.out).into_owned()
    }

    fn tail(&self) -> String {
        let s = self.output();
        let start = s.len().saturating_sub(1500);
        let start = (start..s.len())
            .find(|&i| s.is_char_boundary(i))
            .unwrap_or(s.len());
        s[start..].to_string()
    }

    /// Waits until `text` appears after everything consumed so far; returns what came before it
    /// (CR removed) and consumes through it.
    pub fn wait_for(&mut self, text: &str, timeout: Duration) -> Result<String, ConsoleError> {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.shared;
        let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(i) = find(&g.out[self.pos..], text.as_bytes()) {
                let before =
                    String::from_utf8_lossy(&g.out[self.pos..self.pos + i]).replace('\r', "");
                self.pos += i + text.len();
                return Ok(before);
            }
            if g.closed {
                drop(g);
                return Err(ConsoleError::Exited {
                    wanted: text.into(),
                    tail: self.tail(),
                });
            }
            let now = Instant::now();
            if now >= deadline {
                drop(g);
                return Err(ConsoleError::Timeout {
                    wanted: text.into(),
                    secs: timeout.as_secs_f64(),
                    tail: self.tail(),
                });
            }
            g = cv
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Types `bytes` on the console.
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), ConsoleError> {
        let w = self
            .stdin
            .as_mut()
            .ok_or_else(|| ConsoleError::Write(std::io::ErrorKind::BrokenPipe.into()))?;
        w.write_all(bytes)
            .and_then(|_| w.flush())
            .map_err(ConsoleError::Write)
    }

    /// Runs one shell command and returns what it printed (trimmed of the echo and the prompt).
    ///
    /// The command is framed by two markers that the shell prints but that never appear
    /// literally in the echoed command line, so the answer is exact.
    pub fn run(&mut self, command: &str, timeout: Duration) -> Result<String, ConsoleError> {
        self.seq += 1;
        let n = self.seq;
        let begin = format!("<<ftvm-begin-{n}>>");
        let end = format!("<<ftvm-end-{n}>>");
        // `"-"` splits the marker in the typed line; the shell joins it in the output.
        self.send(
            format!("echo '<<ftvm-begin'-{n}'>>'; {command}; echo '<<ftvm-end'-{n}'>>'\n")
                .as_bytes(),
        )?;
        self.wait_for(&format!("{begin}\n"), timeout)?;
        let out = self.wait_for(&end, timeout)?;
        Ok(out)
    }

    /// Ends a Linux session the way the record/replay tests do, with inputs their replays must
    /// reproduce: reads 16 bytes of entropy (`/dev/hwrng`) and computes 6*7 in the guest
    /// (checking both answers, each within `step`), powers off, expects exit code 0 and returns
    /// the whole console output.
    pub fn end_session(&mut self, step: Duration) -> String {
        let rng = self
            .run("head -c 16 /dev/hwrng | od -x | wc -l", step)
            .unwrap();
        assert_eq!(rng.trim(), "2", "{rng:?}");
        let answer = self.run("echo $((6*7))", step).unwrap();
        assert_eq!(answer.trim(), "42", "{answer:?}");
        self.send(b"poweroff\n").unwrap();
        self.wait_for("reboot: Power down", step).unwrap();
        assert_eq!(self.wait_exit(Duration::from_secs(60)), Some(0));
        self.output()
    }

    /// Waits for the VM to exit by itself; kills it after `timeout`. Returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        self.stdin.take();
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(st)) => return st.code(),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return None;
                }
            }
        }
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Waits until `child` exits or `deadline` passes; then kills it and returns false (the caller
/// reads what it printed). For clients run for a set time (pgbench, iperf3) whose connection
/// could hang.
pub fn wait_or_kill(child: &mut std::process::Child, deadline: std::time::Instant) -> bool {
    while child.try_wait().ok().flatten().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_before_reads_the_number_in_front_of_a_phrase() {
        let t = "went live at icount 5, 3 disk requests in flight\nnext";
        assert_eq!(count_before(t, " disk requests in flight"), Some(3));
        assert_eq!(count_before(t, " frames"), None);
        assert_eq!(count_before("x disk", " disk"), None);
    }

    #[test]
    fn runs_shell_commands_and_returns_exact_answers() {
        let mut cmd = Command::new("sh");
        cmd.arg("-i");
        let mut c = Console::spawn(cmd).unwrap();
        let t = Duration::from_secs(10);
        assert_eq!(c.run("echo hello", t).unwrap(), "hello\n");
        assert_eq!(c.run("printf 'a\\nb\\n'", t).unwrap(), "a\nb\n");
        c.send(b"exit 3\n").unwrap();
        assert_eq!(c.wait_exit(t), Some(3));
    }

    #[test]
    fn a_missing_answer_times_out_with_the_tail() {
        let mut c = Console::spawn(Command::new("cat")).unwrap();
        c.send(b"something\n").unwrap();
        match c.wait_for("never", Duration::from_millis(300)) {
            Err(ConsoleError::Timeout { tail, .. }) => assert!(tail.contains("something")),
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// OpenSBI's `fw_jump` from Debian's `opensbi` package: the firmware both machines boot.
pub const FW_JUMP: &str = "/usr/lib/riscv64-linux-gnu/opensbi/generic/fw_jump.bin";

/// The files of a Linux guest (as `cargo xtask guest` builds them) and how to boot them.
#[derive(Debug, Clone)]
pub struct Guest {
    /// Linux `Image`.
    pub kernel: std::path::PathBuf,
    /// Initramfs (gzip-compressed cpio).
    pub initrd: std::path::PathBuf,
    /// A raw disk image the VM may write to (pass a copy).
    pub disk: std::path::PathBuf,
}

impl Guest {
    /// The guest in a `guest-*` directory of the recipe's cache, with `disk` as its disk.
    pub fn in_dir(dir: &std::path::Path, disk: std::path::PathBuf) -> Guest {
        Guest {
            kernel: dir.join("Image"),
            initrd: dir.join("initramfs.cpio.gz"),
            disk,
        }
    }

    /// The reference machine: `qemu-system-riscv64 -M virt` with 256 MiB and one hart, the disk
    /// and an entropy device on virtio-mmio, the console on stdio.
    pub fn qemu_command(&self) -> Command {
        let mut q = Command::new("qemu-system-riscv64");
        q.args([
            "-M",
            "virt",
            "-m",
            "256M",
            "-smp",
            "1",
            "-nographic",
            "-bios",
            FW_JUMP,
        ])
        .arg("-kernel")
        .arg(&self.kernel)
        .arg("-initrd")
        .arg(&self.initrd)
        .args(["-append", "console=ttyS0"])
        .arg("-drive")
        .arg(format!(
            "file={},format=raw,if=none,id=d0",
            self.disk.display()
        ))
        .args([
            "-device",
            "virtio-blk-device,drive=d0",
            "-device",
            "virtio-rng-device",
        ]);
        q
    }

    /// The same machine on `ftvm run` (which always attaches an entropy device).
    pub fn ftvm_command(&self, ftvm: &std::path::Path) -> Command {
        let mut f = Command::new(ftvm);
        f.arg("run")
            .args(["--bios", FW_JUMP, "--mem", "256M", "--smp", "1"])
            .arg("--kernel")
            .arg(&self.kernel)
            .arg("--initrd")
            .arg(&self.initrd)
            .args(["--append", "console=ttyS0"])
            .arg("--drive")
            .arg(format!("file={}", self.disk.display()));
        f
    }
}

/// Whether missing prerequisites must fail the end-to-end tests. They do, always, unless the
/// developer opts out with `FTVM_ALLOW_SKIP=1`: a skipped end-to-end test must never count as
/// passed, so a bare `cargo test` without the guest fails and names the command that builds it
/// (`cargo xtask test` builds and installs everything, and sets `FTVM_REQUIRE_GUEST`, which
/// also overrides `FTVM_ALLOW_SKIP`).
pub fn prerequisites_required() -> bool {
    std::env::var_os("FTVM_REQUIRE_GUEST").is_some()
        || std::env::var_os("FTVM_ALLOW_SKIP").is_none()
}

/// A free port on 127.0.0.1 for both TCP and UDP, for tests that start servers: never handed
/// out twice in this process, and below the kernel's ephemeral range (32768-60999). A port the
/// kernel picks for `bind(0)` is released when asked that way, and a parallel test, or any
/// outgoing connection, could then be given the same one before its server binds it.
pub fn free_port() -> u16 {
    use std::net::{TcpListener, UdpSocket};
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20000;
    const SPAN: u32 = 12000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    // Each test binary starts somewhere of its own (a neighbour may run at the same time).
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    loop {
        let p = (FIRST + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", p)).is_ok() && UdpSocket::bind(("127.0.0.1", p)).is_ok()
        {
            return p;
        }
    }
}

/// A prerequisite of a test is missing: a failure naming it (see [`prerequisites_required`]),
/// or with `FTVM_ALLOW_SKIP=1` a skip with the reason on stderr.
pub fn skip(why: &str) {
    if prerequisites_required() {
        panic!("missing prerequisite: {why} (or set FTVM_ALLOW_SKIP=1 to skip such tests)");
    }
    eprintln!("skipped: {why}");
}

/// The number written just before the first `what` in `text` (`"... 3 disk requests in
/// flight"` → 3), for tests that read a count off a message; `None` without one.
pub fn count_before(text: &str, what: &str) -> Option<u64> {
    let (before, _) = text.split_once(what)?;
    before.rsplit(' ').next()?.parse().ok()
}

/// Runs `FTVM replay LOG ARGS` (`ftvm`: the binary): (exit code, stdout without CR, as
/// [`Console`] records a console, stderr, seconds taken).
pub fn ftvm_replay<S: AsRef<std::ffi::OsStr>>(
    ftvm: &str,
    log: &std::path::Path,
    args: &[S],
) -> (Option<i32>, String, String, f64) {
    let t0 = Instant::now();
    let out = Command::new(ftvm)
        .arg("replay")
        .arg(log)
        .args(args)
        .output()
        .expect("start ftvm replay");
    let stdout: Vec<u8> = out.stdout.into_iter().filter(|&b| b != b'\r').collect();
    (
        out.status.code(),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        t0.elapsed().as_secs_f64(),
    )
}

/// `FTVM replay LOG` of a bad log: exit code 2 and exactly one line on stderr, containing
/// `want`, no panic. Returns that line.
pub fn replay_refused(ftvm: &str, log: &std::path::Path, want: &str) -> String {
    let (code, _, err, _) = ftvm_replay::<&str>(ftvm, log, &[]);
    assert_eq!(code, Some(2), "{}: {err}", log.display());
    assert_eq!(err.lines().count(), 1, "{}: {err}", log.display());
    assert!(err.contains(want), "{}: {err}", log.display());
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// How the ftvm commands boot the guest of `cargo xtask guest` in `dir`: `--kernel DIR/Image
/// --initrd DIR/initramfs.cpio.gz --append console=ttyS0`.
pub fn linux_boot_args(dir: &std::path::Path) -> Vec<std::ffi::OsString> {
    vec![
        "--kernel".into(),
        dir.join("Image").into(),
        "--initrd".into(),
        dir.join("initramfs.cpio.gz").into(),
        "--append".into(),
        "console=ttyS0".into(),
    ]
}

/// OpenSBI's generic `fw_dynamic` firmware as Debian's `opensbi` package installs it.
pub const OPENSBI_DYNAMIC: &str = "/usr/lib/riscv64-linux-gnu/opensbi/generic/fw_dynamic.bin";

/// [`guest_dir_from_env`] for a test that boots Linux on OpenSBI ([`OPENSBI_DYNAMIC`]): `None`
/// (the test skips) without either, a failure instead when [`prerequisites_required`].
pub fn linux_guest_from_env() -> Option<std::path::PathBuf> {
    let guest = guest_dir_from_env()?;
    if !std::path::Path::new(OPENSBI_DYNAMIC).exists() {
        skip(&format!("no OpenSBI at {OPENSBI_DYNAMIC}"));
        return None;
    }
    Some(guest)
}

/// The guest images the end-to-end tests boot: `$FTVM_GUEST_DIR` (set by `cargo xtask test`), or
/// `None` after [`skip`].
pub fn guest_dir_from_env() -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("FTVM_GUEST_DIR").map(std::path::PathBuf::from);
    if dir.is_none() {
        skip(
            "no guest: run through `cargo xtask test`, or set FTVM_GUEST_DIR (`cargo xtask guest`)",
        );
    }
    dir
}
