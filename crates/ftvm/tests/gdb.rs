//! `ftvm replay LOG --gdb` and `ftvm run --gdb`: Debian's `gdb-multiarch` as the real client,
//! scripted with `-batch -ex ...`, against a bare-metal guest built here (with symbols): break at
//! a symbol, read registers and a variable, `stepi`, `continue` to the end; the replay under gdb
//! still matches its digests and prints what a plain replay prints. A raw client checks what gdb
//! itself never sends: malformed packets, a disconnect in the middle of a packet, a Ctrl-C.
//!
//! Needs `gdb-multiarch` and `riscv64-unknown-elf-gcc`; without them these tests fail with the
//! command that installs them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const FTVM: &str = env!("CARGO_BIN_EXE_ftvm");

/// Prints letters, counts in `counter`, passes `tick` 20 times, powers off (or, with `FOREVER`,
/// loops at `spin`).
const PROGRAM: &str = r#"
    .globl _start
_start:
    li s0, 0x10000000
    li s1, 0
    la s2, counter
1:  li t0, 26
    remu t1, s1, t0
    addi t1, t1, 65
    sb t1, 0(s0)
    sd s1, 0(s2)
    li t2, 2000
2:  addi t2, t2, -1
    bnez t2, 2b
    .globl tick
tick:
    addi s1, s1, 1
    li t0, 20
    blt s1, t0, 1b
#ifdef FOREVER
    .globl spin
spin:
    addi s3, s3, 1
    j spin
#endif
    li t0, 0x100000
    li t1, 0x5555
    sw t1, 0(t0)
3:  j 3b
    .data
    .balign 8
    .globl counter
counter: .dword 0
"#;

fn dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("gdb");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Builds the program: (ELF with symbols, raw image loaded at 0x8000_0000).
fn build(name: &str, defines: &[&str]) -> (PathBuf, PathBuf) {
    let d = dir();
    let src = d.join(format!("{name}.S"));
    let elf = d.join(format!("{name}.elf"));
    let bin = d.join(format!("{name}.bin"));
    std::fs::write(&src, PROGRAM).unwrap();
    let ok = Command::new("riscv64-unknown-elf-gcc")
        .args([
            "-march=rv64gc",
            "-mabi=lp64d",
            "-nostdlib",
            "-nostartfiles",
            "-g",
            "-Wl,-Ttext=0x80000000",
        ])
        .args(defines)
        .arg("-o")
        .arg(&elf)
        .arg(&src)
        .status()
        .is_ok_and(|s| s.success())
        && Command::new("riscv64-unknown-elf-objcopy")
            .args(["-O", "binary"])
            .arg(&elf)
            .arg(&bin)
            .status()
            .is_ok_and(|s| s.success());
    assert!(
        ok,
        "building the test guest failed: riscv64-unknown-elf-gcc is needed \
         (apt-get install gcc-riscv64-unknown-elf)"
    );
    (elf, bin)
}

fn need_gdb() {
    let ok = Command::new("gdb-multiarch")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "gdb-multiarch is missing: apt-get install gdb-multiarch"
    );
}

/// Records a run of the (terminating) program: the log.
fn record(bin: &Path, name: &str) -> PathBuf {
    record_smp(bin, name, 1)
}

/// Records a run of the program on `harts` harts.
fn record_smp(bin: &Path, name: &str, harts: usize) -> PathBuf {
    let log = dir().join(format!("{name}-{}.log", std::process::id()));
    let out = Command::new(FTVM)
        .args([
            "run",
            "--bios",
            "none",
            "--mem",
            "16M",
            "--smp",
            &harts.to_string(),
        ])
        .arg("--kernel")
        .arg(bin)
        .arg("--record")
        .arg(&log)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    log
}

/// An ftvm process serving gdb, and the address it listens on (read off its stderr).
struct Served {
    child: Child,
    addr: String,
    stderr: std::thread::JoinHandle<String>,
}

fn serve(args: &[&std::ffi::OsStr]) -> Served {
    let mut child = Command::new(FTVM)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    err.read_line(&mut first).unwrap();
    let addr = first
        .split("waiting for gdb on ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {first:?}"))
        .to_string();
    let stderr = std::thread::spawn(move || {
        let mut rest = first;
        let _ = err.read_to_string(&mut rest);
        rest
    });
    Served {
        child,
        addr,
        stderr,
    }
}

impl Served {
    /// Waits for the process: (exit code, stdout, stderr).
    fn wait(mut self) -> (i32, String, String) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let code = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("ftvm did not end");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut out = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        (code, out, self.stderr.join().unwrap())
    }
}

/// Runs gdb-multiarch in batch mode on `elf` against `addr` with `cmds`: its output.
fn gdb(elf: &Path, addr: &str, cmds: &[&str]) -> String {
    let mut c = Command::new("gdb-multiarch");
    c.args(["-batch", "-nx"]).arg(elf);
    c.arg("-ex").arg(format!("target remote {addr}"));
    for x in cmds {
        c.arg("-ex").arg(x);
    }
    let out = c.output().expect("gdb-multiarch");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("--- gdb ---\n{text}");
    text
}

#[test]
fn a_replay_under_gdb_breaks_steps_reads_and_still_matches_its_digests() {
    need_gdb();
    let (elf, bin) = build("replay", &[]);
    let log = record(&bin, "replay");
    let plain = Command::new(FTVM).arg("replay").arg(&log).output().unwrap();
    assert!(plain.status.success());

    let s = serve(&[
        "replay".as_ref(),
        log.as_os_str(),
        "--gdb".as_ref(),
        "127.0.0.1:0".as_ref(),
    ]);
    let text = gdb(
        &elf,
        &s.addr,
        &[
            "info registers pc",
            "break tick",
            "continue",
            "continue",
            "info registers s1",
            "print/d (long)counter",
            "stepi",
            "info registers pc",
            "monitor icount",
            "monitor priv",
            "monitor translate 0x80000000",
            "monitor phys 0x80000000 4",
            "info threads",
            "x/4x 0x10000000",
            "x/4x 0x0",
            "delete",
            "continue",
        ],
    );
    let (code, out, err) = s.wait();
    // Stopped before the first instruction: at the reset vector.
    assert!(text.contains("pc             0x1000"), "{text}");
    assert!(text.contains("Breakpoint 1, tick () at"), "{text}");
    // The second hit: s1 is 1 and the guest stored it.
    assert!(text.contains("s1             0x1\t1"), "{text}");
    assert!(text.contains("$1 = 1"), "{text}");
    assert!(text.contains("0x8000002c <tick+2>"), "{text}");
    assert!(text.contains("hart 0 icount"), "{text}");
    assert!(text.contains("hart 0: M (machine)"), "{text}");
    assert!(text.contains("0x80000000 -> physical 0x80000000"), "{text}");
    assert!(text.contains("0x0000000080000000:"), "{text}");
    assert!(text.contains("Thread 1.1"), "{text}");
    // Device registers and unmapped memory are errors for the client, not reads.
    assert!(
        text.contains("Cannot access memory at address 0x10000000"),
        "{text}"
    );
    assert!(
        text.contains("Cannot access memory at address 0x0"),
        "{text}"
    );
    assert!(text.contains("exited normally"), "{text}");
    // The replay reached its end through its digests, printing what a plain replay prints.
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.as_bytes(), plain.stdout.as_slice());
}

#[test]
fn run_gdb_wait_stops_before_the_first_instruction_and_runs_to_the_end() {
    need_gdb();
    let (elf, bin) = build("run", &[]);
    let s = serve(&[
        "run".as_ref(),
        "--bios".as_ref(),
        "none".as_ref(),
        "--mem".as_ref(),
        "16M".as_ref(),
        "--kernel".as_ref(),
        bin.as_os_str(),
        "--gdb".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--gdb-wait".as_ref(),
    ]);
    let text = gdb(
        &elf,
        &s.addr,
        &[
            "info registers pc",
            "break tick",
            "continue",
            "continue",
            "continue",
            "print/d (long)counter",
            "delete",
            "continue",
        ],
    );
    let (code, out, err) = s.wait();
    assert!(text.contains("pc             0x1000"), "{text}");
    assert!(text.contains("$1 = 2"), "{text}");
    assert!(text.contains("exited normally"), "{text}");
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "ABCDEFGHIJKLMNOPQRST");
}

/// A raw remote-protocol client.
struct Raw(TcpStream);

impl Raw {
    fn connect(addr: &str) -> Raw {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Raw(s)
    }

    fn send_raw(&mut self, b: &[u8]) {
        self.0.write_all(b).unwrap();
    }

    fn packet(body: &str) -> Vec<u8> {
        let sum = body.bytes().fold(0u8, |a, b| a.wrapping_add(b));
        format!("${body}#{sum:02x}").into_bytes()
    }

    /// Reads the next packet's body (skipping acks), acknowledging it.
    fn reply(&mut self) -> String {
        let mut b = [0u8];
        loop {
            self.0.read_exact(&mut b).expect("a reply");
            if b[0] == b'$' {
                break;
            }
        }
        let mut body = Vec::new();
        loop {
            self.0.read_exact(&mut b).unwrap();
            if b[0] == b'#' {
                break;
            }
            body.push(b[0]);
        }
        let mut sum = [0u8; 2];
        self.0.read_exact(&mut sum).unwrap();
        self.send_raw(b"+");
        // Run-length encoding: `X*n` is X and n - 29 more of it.
        let mut out = Vec::new();
        let mut i = 0;
        while i < body.len() {
            if body[i] == b'*' && i + 1 < body.len() {
                let last = *out.last().unwrap_or(&b'0');
                out.extend(std::iter::repeat_n(last, usize::from(body[i + 1]) - 29));
                i += 2;
            } else {
                out.push(body[i]);
                i += 1;
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    fn ask(&mut self, body: &str) -> String {
        self.send_raw(&Raw::packet(body));
        self.reply()
    }
}

#[test]
fn bad_packets_get_errors_and_a_malformed_one_ends_the_session_not_the_replay() {
    let (_, bin) = build("bad", &[]);
    let log = record(&bin, "bad");
    let s = serve(&[
        "replay".as_ref(),
        log.as_os_str(),
        "--gdb".as_ref(),
        "127.0.0.1:0".as_ref(),
    ]);
    let mut c = Raw::connect(&s.addr);
    assert!(c.ask("?").starts_with('T'));
    // Unmapped memory and a device register: errors.
    assert!(c.ask("m0,8").starts_with('E'));
    assert!(c.ask("m10000000,4").starts_with('E'));
    // A breakpoint on a device register: refused.
    assert!(c.ask("Z0,10000000,4").starts_with('E'));
    // A wrong checksum is nacked ("send it again"), an unknown query gets the empty reply, and
    // the stub goes on answering.
    c.send_raw(b"$m80000000,4#00");
    let mut nack = [0u8];
    c.0.read_exact(&mut nack).unwrap();
    assert_eq!(&nack, b"-");
    assert_eq!(c.ask("qFtvmNoSuchQuery"), "");
    assert_eq!(c.ask("m80000000,4").len(), 8);
    // A malformed command ends the session (gdbstub's rule): the connection closes, the
    // machine is let go, and the replay runs to its end exactly.
    c.send_raw(&Raw::packet("mnothex,4"));
    let mut rest = Vec::new();
    let _ = c.0.read_to_end(&mut rest);
    assert!(!rest.contains(&b'$'), "{rest:?}");
    let (code, out, err) = s.wait();
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("session ended"), "{err}");
    assert_eq!(out, "ABCDEFGHIJKLMNOPQRST");
}

#[test]
fn a_client_gone_in_the_middle_of_a_packet_leaves_the_replay_exact() {
    let (_, bin) = build("gone", &[]);
    let log = record(&bin, "gone");
    let s = serve(&[
        "replay".as_ref(),
        log.as_os_str(),
        "--gdb".as_ref(),
        "127.0.0.1:0".as_ref(),
    ]);
    let mut c = Raw::connect(&s.addr);
    assert!(c.ask("?").starts_with('T'));
    assert_eq!(c.ask("Z0,8000002a,2"), "OK");
    c.send_raw(b"$m8000");
    drop(c);
    let (code, out, err) = s.wait();
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "ABCDEFGHIJKLMNOPQRST");
}

#[test]
fn ctrl_c_stops_a_running_guest_and_detach_lets_it_go() {
    let (_, bin) = build("forever", &["-DFOREVER"]);
    let s = serve(&[
        "run".as_ref(),
        "--bios".as_ref(),
        "none".as_ref(),
        "--mem".as_ref(),
        "16M".as_ref(),
        "--kernel".as_ref(),
        bin.as_os_str(),
        "--gdb".as_ref(),
        "127.0.0.1:0".as_ref(),
    ]);
    let mut c = Raw::connect(&s.addr);
    // Attaching stops the running guest.
    assert!(c.ask("?").starts_with('T'));
    c.send_raw(&Raw::packet("vCont;c"));
    std::thread::sleep(Duration::from_millis(300));
    c.send_raw(&[3]);
    let stop = c.reply();
    assert!(stop.starts_with("T02"), "{stop}");
    // It is in the endless loop: s3 (x19) counts.
    let regs = c.ask("g");
    let s3 = u64::from_str_radix(&regs[19 * 16..20 * 16], 16).unwrap();
    assert_ne!(s3, 0, "{regs}");
    let mut s = s;
    assert_eq!(c.ask("D"), "OK");
    drop(c);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        s.child.try_wait().unwrap().is_none(),
        "ftvm ended on detach"
    );
    let _ = s.child.kill();
    let (_, out, _) = s.wait();
    assert_eq!(out, "ABCDEFGHIJKLMNOPQRST");
}

/// The guest kernel's `vmlinux` (symbols): `$FTVM_VMLINUX`, else `vmlinux` in the guest
/// directory, else the kernel build tree `cargo xtask guest` leaves under `~/.cache/ftvm/src`.
fn vmlinux(guest: &Path) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FTVM_VMLINUX") {
        return Some(PathBuf::from(p));
    }
    let here = guest.join("vmlinux");
    if here.exists() {
        return Some(here);
    }
    let src = guest.parent()?.join("src");
    std::fs::read_dir(&src)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("vmlinux"))
        .find(|p| p.exists())
}

/// Linux under gdb: stop before the first instruction, break at `start_kernel` (a virtual
/// address, reached through the kernel's page tables), read the kernel's banner, step, kill.
#[test]
fn linux_breaks_at_start_kernel_and_reads_a_kernel_variable() {
    need_gdb();
    let Some(guest) = guestctl::linux_guest_from_env() else {
        return;
    };
    let Some(vmlinux) = vmlinux(&guest) else {
        guestctl::skip(
            "no vmlinux for the guest kernel: set FTVM_VMLINUX (cargo xtask guest builds it \
             under ~/.cache/ftvm/src/linux-obj-*/vmlinux)",
        );
        return;
    };
    let mut args: Vec<std::ffi::OsString> = vec!["run".into()];
    args.extend(guestctl::linux_boot_args(&guest));
    args.extend(["--gdb".into(), "127.0.0.1:0".into(), "--gdb-wait".into()]);
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let s = serve(&args);
    let text = gdb(
        &vmlinux,
        &s.addr,
        &[
            "break start_kernel",
            "continue",
            "info registers priv",
            "x/s &linux_banner",
            "monitor priv",
            "stepi",
            "info registers pc",
            "kill",
        ],
    );
    let (code, _, err) = s.wait();
    assert!(text.contains("in start_kernel ()"), "{text}");
    assert!(text.contains("[Supervisor]"), "{text}");
    assert!(text.contains("Linux version 6.1"), "{text}");
    assert!(text.contains("<start_kernel+"), "{text}");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("killed by the debugger"), "{err}");
}

/// Going back in a replay: `reverse-continue` stops at the previous hit of a breakpoint (the
/// replay is run again from its start to that exact point), `reverse-stepi` one instruction
/// back, and before the first hit gdb hears that the history begins. The replay then runs to its
/// end through its digests and prints the console once.
#[test]
fn reverse_continue_and_reverse_stepi_on_a_replay() {
    need_gdb();
    let (elf, bin) = build("reverse", &[]);
    let log = record(&bin, "reverse");
    let s = serve(&[
        "replay".as_ref(),
        log.as_os_str(),
        "--gdb".as_ref(),
        "127.0.0.1:0".as_ref(),
    ]);
    let text = gdb(
        &elf,
        &s.addr,
        &[
            "break tick",
            "continue",
            "continue",
            "monitor icount",
            "continue",
            "info registers s1",
            "reverse-continue",
            "info registers s1",
            "monitor icount",
            "stepi",
            "reverse-stepi",
            "info registers pc",
            "reverse-stepi",
            "info registers pc",
            "reverse-continue",
            "reverse-continue",
            "info registers pc",
            "delete",
            "continue",
        ],
    );
    let (code, out, err) = s.wait();
    assert!(text.contains("s1             0x2\t2"), "{text}");
    assert!(text.contains("s1             0x1\t1"), "{text}");
    // The second hit is at the same icount as on the way forward.
    let icounts: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("machine icount"))
        .collect();
    assert_eq!(icounts.len(), 2, "{text}");
    assert_eq!(icounts[0], icounts[1], "{text}");
    assert!(
        text.contains("pc             0x8000002a\t0x8000002a <tick>"),
        "{text}"
    );
    assert!(
        text.contains("pc             0x80000026\t0x80000026 <_start+38>"),
        "{text}"
    );
    assert!(
        text.contains("No more reverse-execution history."),
        "{text}"
    );
    assert!(text.contains("exited normally"), "{text}");
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "ABCDEFGHIJKLMNOPQRST");
}

/// Two harts are two gdb threads, each with its own registers; going back works across the
/// multi-hart schedule, and the replay still ends through its digests.
#[test]
fn two_harts_are_two_threads_and_a_replay_of_them_goes_back() {
    need_gdb();
    let (elf, bin) = build("smp2", &[]);
    let log = record_smp(&bin, "smp2", 2);
    let plain = Command::new(FTVM).arg("replay").arg(&log).output().unwrap();
    assert!(plain.status.success());
    let s = serve(&[
        "replay".as_ref(),
        log.as_os_str(),
        "--gdb".as_ref(),
        "127.0.0.1:0".as_ref(),
    ]);
    let text = gdb(
        &elf,
        &s.addr,
        &[
            "break tick",
            "continue",
            "monitor icount",
            "info threads",
            "thread 2",
            "info registers pc",
            "thread 1",
            "continue",
            "continue",
            "monitor icount",
            "reverse-continue",
            "reverse-continue",
            "monitor icount",
            "delete",
            "continue",
        ],
    );
    let (code, out, err) = s.wait();
    assert!(text.contains("Thread 1.2"), "{text}");
    assert!(
        text.contains("[Switching to thread 2 (Thread 1.2)]"),
        "{text}"
    );
    // Going back twice from the third hit is the first hit again: same hart, same icount.
    let icounts: Vec<&str> = text.lines().filter(|l| l.contains(" icount ")).collect();
    assert_eq!(icounts.len(), 3, "{text}");
    assert_eq!(icounts[0], icounts[2], "{text}");
    assert_ne!(icounts[0], icounts[1], "{text}");
    assert!(text.contains("exited normally"), "{text}");
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.as_bytes(), plain.stdout.as_slice());
}
