//! End-to-end tests of `ftvm run`: Debian's OpenSBI with a tiny S-mode kernel assembled here,
//! bare M-mode programs that use the UART, the timer and the test device directly, setup
//! errors, and (when `cargo xtask guest` has built one) Linux with a busybox shell.
//!
//! Tests that need a tool or file that is not installed say so on stderr and pass.

use guestctl::skip;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const OPENSBI: &str = "/usr/lib/riscv64-linux-gnu/opensbi/generic";
const GCC: &str = "riscv64-unknown-elf-gcc";
const OBJCOPY: &str = "riscv64-unknown-elf-objcopy";

fn ftvm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ftvm"))
}

/// A scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ftvm-boot-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Assembles `src` linked at `addr` into a raw binary; `None` (with a note) if the toolchain
/// is missing.
fn assemble(dir: &Path, name: &str, src: &str, addr: u64) -> Option<PathBuf> {
    let s = dir.join(format!("{name}.S"));
    let elf = dir.join(format!("{name}.elf"));
    let bin = dir.join(format!("{name}.bin"));
    std::fs::write(&s, src).expect("write source");
    let gcc = Command::new(GCC)
        .args([
            "-nostdlib",
            "-nostartfiles",
            "-march=rv64imac_zicsr",
            "-mabi=lp64",
            // No linker relaxation: these programs never set up gp.
            "-Wl,--no-relax",
        ])
        .arg(format!("-Wl,-Ttext={addr:#x}"))
        .arg("-o")
        .arg(&elf)
        .arg(&s)
        .status();
    match gcc {
        Ok(st) => assert!(st.success(), "{GCC} failed on {name}"),
        Err(_) => {
            skip(&format!("{GCC} is not installed"));
            return None;
        }
    }
    let st = Command::new(OBJCOPY)
        .args(["-O", "binary"])
        .arg(&elf)
        .arg(&bin)
        .status();
    assert!(st.is_ok_and(|s| s.success()), "{OBJCOPY} failed on {name}");
    Some(bin)
}

fn have_opensbi() -> bool {
    let ok = Path::new(OPENSBI).join("fw_jump.bin").exists();
    if !ok {
        skip("Debian's opensbi package is not installed");
    }
    ok
}

/// A running `ftvm run` whose console we read and write.
struct Vm {
    child: Child,
    out: Arc<Mutex<Vec<u8>>>,
    seen: usize,
}

impl Vm {
    fn start(args: &[&str]) -> Vm {
        let mut child = ftvm()
            .arg("run")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start ftvm");
        let out = Arc::new(Mutex::new(Vec::new()));
        let mut stdout = child.stdout.take().expect("stdout");
        let sink = out.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = stdout.read(&mut buf) {
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Vm {
            child,
            out,
            seen: 0,
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().unwrap()).into_owned()
    }

    fn tail(&self) -> String {
        let t = self.text();
        let start = t.len().saturating_sub(2000);
        t[t.floor_char_boundary(start)..].to_owned()
    }

    /// Waits until `needle` appears after what earlier calls consumed.
    fn expect(&mut self, needle: &str, timeout: Duration) {
        let t0 = Instant::now();
        loop {
            {
                let out = self.out.lock().unwrap();
                let hay = String::from_utf8_lossy(&out[self.seen..]);
                if let Some(i) = hay.find(needle) {
                    self.seen += hay[..i + needle.len()].len();
                    return;
                }
            }
            if t0.elapsed() > timeout {
                let _ = self.child.kill();
                panic!(
                    "`{needle}` not seen within {timeout:?}; last output:\n{}",
                    self.tail()
                );
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                if !String::from_utf8_lossy(&self.out.lock().unwrap()[self.seen..]).contains(needle)
                {
                    panic!(
                        "ftvm exited ({st}) before `{needle}`; last output:\n{}",
                        self.tail()
                    );
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn send(&mut self, text: &str) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin.write_all(text.as_bytes()).expect("write to ftvm");
        stdin.flush().expect("flush");
    }

    fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let t0 = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                std::thread::sleep(Duration::from_millis(50)); // let the reader drain
                return st;
            }
            if t0.elapsed() > timeout {
                let _ = self.child.kill();
                panic!(
                    "ftvm still running after {timeout:?}; last output:\n{}",
                    self.tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An S-mode kernel: prints through the legacy SBI console, checks the device tree magic in
/// a1, and shuts down through SBI SRST.
const SBI_HELLO: &str = r#"
    .section .text
    .globl _start
_start:
    mv s0, a0
    mv s1, a1
    la a0, msg
    call puts
    addi a0, s0, '0'
    call putc
    lwu t0, 0(s1)
    li t1, 0xedfe0dd0
    la a0, bad
    bne t0, t1, 1f
    la a0, good
1:  call puts
    li a7, 0x53525354
    li a6, 0
    li a0, 0
    li a1, 0
    ecall
2:  wfi
    j 2b
puts:
    mv t2, a0
    mv t3, ra
3:  lbu a0, 0(t2)
    beqz a0, 4f
    call putc
    addi t2, t2, 1
    j 3b
4:  mv ra, t3
    ret
putc:
    li a7, 1
    ecall
    ret
    .section .rodata
msg:  .asciz "hello from S-mode on hart "
good: .asciz ", device tree ok\n"
bad:  .asciz ", device tree BAD\n"
"#;

fn boot_opensbi(firmware: &str, extra: &[&str]) {
    if !have_opensbi() {
        return;
    }
    let dir = scratch(firmware);
    let Some(kernel) = assemble(&dir, "hello", SBI_HELLO, 0x8020_0000) else {
        return;
    };
    let fw = format!("{OPENSBI}/{firmware}");
    let mut args = vec!["--bios", &fw, "--kernel", kernel.to_str().unwrap()];
    args.extend_from_slice(extra);
    let mut vm = Vm::start(&args);
    vm.expect("OpenSBI v", Duration::from_secs(60));
    vm.expect(
        "Domain0 Next Mode         : S-mode",
        Duration::from_secs(60),
    );
    vm.expect(
        "hello from S-mode on hart 0, device tree ok",
        Duration::from_secs(60),
    );
    let st = vm.wait(Duration::from_secs(30));
    assert_eq!(st.code(), Some(0), "SBI shutdown should power off cleanly");
}

#[test]
fn opensbi_fw_jump_runs_an_s_mode_kernel() {
    boot_opensbi("fw_jump.bin", &[]);
}

#[test]
fn opensbi_fw_dynamic_runs_an_s_mode_kernel_on_two_harts() {
    boot_opensbi("fw_dynamic.bin", &["--smp", "2", "--mem", "64M"]);
}

#[test]
fn opensbi_elf_firmware_loads_by_program_headers() {
    boot_opensbi("fw_jump.elf", &["--append", "ignored by this kernel"]);
}

/// An M-mode program (no firmware): greets, reads a line from the UART by polling, echoes it,
/// and reports failure code 42 through the test device.
const UART_ECHO: &str = r#"
    .section .text
    .globl _start
_start:
    csrr t0, mhartid
    bnez t0, park
    li s0, 0x10000000
    la a0, ready
    call puts
    la s1, buf
1:  lbu t0, 5(s0)
    andi t0, t0, 1
    beqz t0, 1b
    lbu t1, 0(s0)
    li t2, '\n'
    beq t1, t2, 2f
    sb t1, 0(s1)
    addi s1, s1, 1
    j 1b
2:  sb zero, 0(s1)
    la a0, got
    call puts
    la a0, buf
    call puts
    li a0, '\n'
    call putc
    li t0, 0x100000
    li t1, (42 << 16) | 0x3333
    sw t1, 0(t0)
park:
    wfi
    j park
putc:
    lbu t3, 5(s0)
    andi t3, t3, 0x20
    beqz t3, putc
    sb a0, 0(s0)
    ret
puts:
    mv t4, a0
    mv t5, ra
3:  lbu a0, 0(t4)
    beqz a0, 4f
    call putc
    addi t4, t4, 1
    j 3b
4:  mv ra, t5
    ret
    .section .data
ready: .asciz "ready\n"
got:   .asciz "got "
buf:   .space 256
"#;

#[test]
fn bare_kernel_reads_the_console_and_reports_a_failure_code() {
    let dir = scratch("echo");
    let Some(kernel) = assemble(&dir, "echo", UART_ECHO, 0x8000_0000) else {
        return;
    };
    let mut vm = Vm::start(&[
        "--bios",
        "none",
        "--kernel",
        kernel.to_str().unwrap(),
        "--smp",
        "2",
    ]);
    // Sent before the guest looks: the bytes wait on the line, none is lost.
    vm.send("ping from the host\n");
    vm.expect("ready\n", Duration::from_secs(30));
    vm.expect("got ping from the host\n", Duration::from_secs(30));
    assert_eq!(vm.wait(Duration::from_secs(30)).code(), Some(42));
}

/// An M-mode program that arms the timer one second ahead, waits in WFI, and powers off from
/// the interrupt handler.
const TIMER_SLEEP: &str = r#"
    .section .text
    .globl _start
_start:
    la t0, trap
    csrw mtvec, t0
    li t0, 0x200bff8
    ld t1, 0(t0)
    li t2, 10000000
    add t1, t1, t2
    li t0, 0x2004000
    sd t1, 0(t0)
    li t0, 0x80
    csrw mie, t0
    csrsi mstatus, 8
1:  wfi
    j 1b
    .align 2
trap:
    li t0, 0x10000000
    li t1, 'T'
    sb t1, 0(t0)
    li t1, '\n'
    sb t1, 0(t0)
    li t0, 0x100000
    li t1, 0x5555
    sw t1, 0(t0)
2:  j 2b
"#;

#[test]
fn an_idle_guest_sleeps_in_wall_clock_time() {
    let dir = scratch("timer");
    let Some(kernel) = assemble(&dir, "timer", TIMER_SLEEP, 0x8000_0000) else {
        return;
    };
    let t0 = Instant::now();
    let out = ftvm()
        .args([
            "run",
            "--bios",
            "none",
            "--kernel",
            kernel.to_str().unwrap(),
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run ftvm");
    let took = t0.elapsed();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"T\n");
    assert!(
        took >= Duration::from_millis(950),
        "1 s of guest sleep took only {took:?}"
    );
    assert!(
        took < Duration::from_secs(20),
        "1 s of guest sleep took {took:?}"
    );
}

#[test]
fn dtb_out_writes_the_device_tree_and_exits() {
    let dir = scratch("dtb");
    let k = dir.join("k.bin");
    std::fs::write(&k, [0x73, 0, 0x50, 0x10]).unwrap(); // wfi
    let dtb = dir.join("virt.dtb");
    let st = ftvm()
        .args(["run", "--bios", "none", "--kernel"])
        .arg(&k)
        .args(["--smp", "3", "--append", "console=ttyS0", "--dtb-out"])
        .arg(&dtb)
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(0));
    let blob = std::fs::read(&dtb).unwrap();
    assert_eq!(&blob[..4], &[0xd0, 0x0d, 0xfe, 0xed]);
    let text = String::from_utf8_lossy(&blob);
    assert!(text.contains("console=ttyS0"));
    assert!(text.contains("cpu@2") && !text.contains("cpu@3"));
}

#[test]
fn setup_errors_exit_2_with_one_line() {
    let dir = scratch("errors");
    let empty = dir.join("empty");
    std::fs::write(&empty, b"").unwrap();
    let k = dir.join("k.bin");
    std::fs::write(&k, [0x73, 0, 0x50, 0x10]).unwrap();
    let k = k.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &["--kernel", "/nonexistent/Image"],
            "cannot read kernel /nonexistent/Image",
        ),
        (
            &["--bios", "none", "--kernel", empty.to_str().unwrap()],
            "is empty",
        ),
        (
            &["--bios", "/nonexistent/fw.bin", "--kernel", k],
            "cannot read firmware",
        ),
        (
            &["--bios", "none", "--kernel", k, "--mem", "lots"],
            "malformed",
        ),
        (
            &["--bios", "none", "--kernel", k, "--mem", "1M"],
            "too small",
        ),
        (
            &["--bios", "none", "--kernel", k, "--smp", "0"],
            "hart count 0",
        ),
        (
            &[
                "--bios",
                "none",
                "--kernel",
                k,
                "--drive",
                "file=/nonexistent/disk.img",
            ],
            "cannot open disk image",
        ),
        (
            &["--bios", "none", "--kernel", k, "--drive", "readonly=on"],
            "drive option",
        ),
        (&["--bios", "none", "--initrd", k], "needs a kernel"),
        (
            &["--bios", "none", "--kernel", k, "--frobnicate"],
            "unexpected argument",
        ),
    ];
    for (args, want) in cases {
        let out = ftvm()
            .arg("run")
            .args(*args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.lines().next().unwrap_or("").contains(want),
            "{args:?}: {err}"
        );
    }
}

/// The directory of a guest built by `cargo xtask guest`: `$FTVM_GUEST_DIR`, else the newest
/// `guest-*` in the recipe's cache.
fn guest_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("FTVM_GUEST_DIR") {
        return Some(d.into());
    }
    let root = std::env::var_os("FTVM_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|x| PathBuf::from(x).join("ftvm")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/ftvm")))?;
    std::fs::read_dir(root)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("guest-"))
        .map(|e| e.path())
        .filter(|p| {
            ["Image", "initramfs.cpio.gz", "disk.img"]
                .iter()
                .all(|f| p.join(f).exists())
        })
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
}

fn boot_linux(harts: usize) {
    let Some(guest) = guest_dir() else {
        skip("no guest built (run `cargo xtask guest`)");
        return;
    };
    if !have_opensbi() {
        return;
    }
    let dir = scratch(&format!("linux{harts}"));
    let disk = dir.join("disk.img");
    std::fs::copy(guest.join("disk.img"), &disk).expect("copy disk image");
    let kernel = guest.join("Image");
    let initrd = guest.join("initramfs.cpio.gz");
    let drive = format!("file={}", disk.display());
    let smp = harts.to_string();
    let args = [
        "--kernel",
        kernel.to_str().unwrap(),
        "--initrd",
        initrd.to_str().unwrap(),
        "--append",
        "console=ttyS0",
        "--drive",
        &drive,
        "--smp",
        &smp,
        "--stats",
    ];
    let t0 = Instant::now();
    let mut vm = Vm::start(&args);
    vm.expect("Linux version 6.1", Duration::from_secs(120));
    vm.expect("ftvm-guest: ready", Duration::from_secs(180));
    eprintln!("linux/{harts}: shell ready after {:?}", t0.elapsed());
    let step = Duration::from_secs(60);
    // Each answer is computed by the shell, so the echo of the command line cannot match it.
    vm.send("echo marker-$((6*7))\n");
    vm.expect("marker-42", step);
    vm.send("grep -c ^processor /proc/cpuinfo; grep -m1 ^isa /proc/cpuinfo\n");
    vm.expect(&format!("\n{harts}\r\n"), step);
    vm.expect("rv64imafdc", step);
    vm.send("echo disk-$((2+3)) > /mnt/t.txt && sync && cat /mnt/t.txt\n");
    vm.expect("\ndisk-5", step);
    vm.send("head -c 16 /dev/hwrng | od -x | wc -l; echo rng-$((1+1))\n");
    vm.expect("\n2\r\nrng-2", step);
    // An idle guest sleeps in host time: `sleep 1` takes at least a second.
    let t1 = Instant::now();
    vm.send("sleep 1; echo slept-$((3+4))\n");
    vm.expect("slept-7", step);
    let slept = t1.elapsed();
    assert!(
        slept >= Duration::from_millis(950),
        "guest `sleep 1` took {slept:?}"
    );
    vm.send("poweroff\n");
    let st = vm.wait(Duration::from_secs(120));
    assert_eq!(st.code(), Some(0), "last output:\n{}", vm.tail());
    eprintln!("linux/{harts}: powered off after {:?}", t0.elapsed());
}

#[test]
fn linux_boots_to_a_shell_and_powers_off() {
    boot_linux(1);
}

#[test]
fn linux_boots_on_two_harts() {
    boot_linux(2);
}
