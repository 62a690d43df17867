//! `--check-qemu`: boots the built guest in `qemu-system-riscv64 -M virt`, the reference our own
//! board must match, and drives its console like a user would: wait for the banner, read the
//! disk, read the entropy device, run `cpubench`, power off. Each boot is bounded by timeouts,
//! and both OpenSBI firmwares (`fw_jump`, `fw_dynamic`) are tried.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::debian::DebianPaths;
use super::{image, run, GuestPaths};

const FIRMWARE_DIR: &str = "/usr/lib/riscv64-linux-gnu/opensbi/generic";
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// Boots the guest once per firmware and checks it; prints what took how long.
pub fn check(paths: &GuestPaths, verbose: bool) -> Result<()> {
    for fw in ["fw_jump.bin", "fw_dynamic.bin"] {
        let t = Instant::now();
        boot(paths, fw, verbose).with_context(|| format!("qemu check with {fw}"))?;
        println!("guest: qemu check with {fw} passed ({})", run::elapsed(t));
    }
    Ok(())
}

/// Boots the Debian guest (a copy of its disk) once in QEMU with a user-mode network, and
/// checks that its services answer inside: PostgreSQL and iperf3.
pub fn check_debian(paths: &DebianPaths, verbose: bool) -> Result<()> {
    let t = Instant::now();
    let work = std::env::temp_dir().join(format!("ftvm-qemu-debian-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let disk = work.join("rootfs.img");
    std::fs::copy(&paths.rootfs, &disk)?;
    let mut cmd = Command::new("qemu-system-riscv64");
    cmd.args(["-M", "virt", "-m", "512M", "-nographic", "-bios"])
        .arg(Path::new(FIRMWARE_DIR).join("fw_jump.bin"))
        .arg("-kernel")
        .arg(&paths.kernel)
        .args(["-append", super::debian::APPEND, "-drive"])
        .arg(format!("file={},format=raw,if=none,id=d0", disk.display()))
        .args([
            "-device",
            "virtio-blk-device,drive=d0",
            "-netdev",
            "user,id=n0",
            "-device",
            "virtio-net-device,netdev=n0",
            "-device",
            "virtio-rng-device",
        ]);
    let mut con = Console::start(cmd, verbose)?;
    let result = con.debian_script();
    finish(&mut con, &result);
    std::fs::remove_dir_all(&work).ok();
    result?;
    println!("debian guest: qemu check passed ({})", run::elapsed(t));
    Ok(())
}

/// On failure: stop qemu and show the end of its console.
fn finish(con: &mut Console, result: &Result<()>) {
    if result.is_err() {
        let _ = con.child.kill();
        let _ = con.child.wait();
        let tail: String = con
            .buf
            .chars()
            .rev()
            .take(3000)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        eprintln!("--- last console output ---\n{tail}\n---");
    }
}

fn boot(paths: &GuestPaths, fw: &str, verbose: bool) -> Result<()> {
    // The cached disk must stay pristine: mounting it read-write changes its superblock.
    let work = std::env::temp_dir().join(format!("ftvm-qemu-check-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let disk = work.join("disk.img");
    std::fs::copy(&paths.disk, &disk)?;
    let mut cmd = Command::new("qemu-system-riscv64");
    cmd.args(["-M", "virt", "-m", "256M", "-nographic", "-bios"])
        .arg(Path::new(FIRMWARE_DIR).join(fw))
        .arg("-kernel")
        .arg(&paths.kernel)
        .arg("-initrd")
        .arg(&paths.initramfs)
        .args(["-append", "console=ttyS0", "-drive"])
        .arg(format!("file={},format=raw,if=none,id=d0", disk.display()))
        .args([
            "-device",
            "virtio-blk-device,drive=d0",
            "-device",
            "virtio-rng-device",
        ]);
    let mut con = Console::start(cmd, verbose)?;
    let result = con.script();
    finish(&mut con, &result);
    std::fs::remove_dir_all(&work).ok();
    result
}

/// qemu's console (serial multiplexed on stdio) as text we can wait on.
struct Console {
    child: Child,
    stdin: ChildStdin,
    rx: Receiver<Vec<u8>>,
    /// Everything printed so far, and how far `expect` has consumed it.
    buf: String,
    pos: usize,
    verbose: bool,
    started: Instant,
    /// Commands typed so far; numbers their end markers.
    exchanges: u32,
}

impl Console {
    fn start(mut cmd: Command, verbose: bool) -> Result<Self> {
        let (reader, writer) = std::io::pipe()?;
        cmd.stdin(Stdio::piped())
            .stdout(writer.try_clone()?)
            .stderr(writer);
        let mut child = cmd.spawn().context("starting qemu-system-riscv64")?;
        drop(cmd); // closes our copies of the write end
        let stdin = child.stdin.take().context("qemu stdin")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = reader;
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = reader.read(&mut chunk) {
                if tx.send(chunk[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            child,
            stdin,
            rx,
            buf: String::new(),
            pos: 0,
            verbose,
            started: Instant::now(),
            exchanges: 0,
        })
    }

    /// The check itself.
    fn script(&mut self) -> Result<()> {
        self.expect("ftvm-guest: ready", BOOT_TIMEOUT)?;
        println!("guest:   banner after {}", run::elapsed(self.started));
        self.sync_shell()?;
        let hello = self.run("cat /mnt/hello.txt")?;
        if !hello.contains(image::HELLO_TXT.trim()) {
            bail!("/mnt/hello.txt read back as {hello:?}");
        }
        let rng = self.run("head -c 16 /dev/hwrng | od -x")?;
        if !rng.contains("0000000 ") || !rng.contains("0000020") {
            bail!("no 16 bytes from /dev/hwrng: {rng:?}");
        }
        println!("guest:   /dev/hwrng: {}", rng.lines().next().unwrap_or(""));
        let t = Instant::now();
        let bench = self.run("cpubench")?;
        println!("guest:   cpubench in {}: {}", run::elapsed(t), bench.trim());
        self.send("poweroff\n")?;
        self.wait_exit()
    }

    /// The Debian guest's check: its services answer on the console.
    fn debian_script(&mut self) -> Result<()> {
        self.expect("ftvm-guest: ready", BOOT_TIMEOUT)?;
        println!("debian guest:   ready after {}", run::elapsed(self.started));
        self.sync_shell()?;
        let sum = self.run("su postgres -c \"psql -tAc 'select 40+2'\"")?;
        if !sum.contains("42") {
            bail!("PostgreSQL answered {sum:?} to select 40+2");
        }
        let ps = self.run("ps -e -o comm=")?;
        if !ps.lines().any(|l| l.trim() == "iperf3") {
            bail!("iperf3 -s is not running: {ps}");
        }
        // Our init powers off when the console's shell ends.
        self.send("exit\n")?;
        self.wait_exit()
    }

    /// Waits for qemu to exit after the guest was told to power off.
    fn wait_exit(&mut self) -> Result<()> {
        let t = Instant::now();
        let deadline = Instant::now() + BOOT_TIMEOUT;
        loop {
            self.drain(Duration::from_millis(200));
            if let Some(st) = self.child.try_wait()? {
                if !st.success() {
                    bail!("qemu exited with {st} after poweroff");
                }
                println!("guest:   poweroff: qemu exited after {}", run::elapsed(t));
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("qemu still running {BOOT_TIMEOUT:?} after poweroff");
            }
        }
    }

    /// Waits until the shell answers: input typed before it opened the console may be lost.
    fn sync_shell(&mut self) -> Result<()> {
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        while Instant::now() < deadline {
            if self.exchange("true", Duration::from_secs(3)).is_ok() {
                return Ok(());
            }
        }
        bail!("the shell never answered")
    }

    /// Runs a shell command; returns its output, failing if its exit status is not 0.
    fn run(&mut self, command: &str) -> Result<String> {
        let (status, out) = self
            .exchange(command, COMMAND_TIMEOUT)
            .with_context(|| format!("running `{command}`"))?;
        if status != "0" {
            bail!("`{command}` exited with status {status:?}: {out}");
        }
        Ok(out)
    }

    /// Types `command` followed by an end marker and returns (exit status, output). The marker
    /// is `@@<n>@@` computed by the shell as `$((n-1+1))`: the console echoes what we type (the
    /// tty and then ash's line editor), and only the expanded number can be the real end. A
    /// fresh `n` per exchange keeps a late answer to an earlier one from being taken for it.
    fn exchange(&mut self, command: &str, timeout: Duration) -> Result<(String, String)> {
        self.exchanges += 1;
        let n = 1000 + self.exchanges;
        let typed = format!("{command}; echo \"@@$(({}+1))@@ $?\"", n - 1);
        let seen = format!("@@{n}@@ ");
        self.send(&format!("{typed}\n"))?;
        let from = self.pos;
        self.expect(&seen, timeout)?;
        let out_end = self.pos - seen.len();
        let status_from = self.pos;
        self.expect("\n", timeout)?;
        let status = self.buf[status_from..self.pos].trim().to_string();
        let seg = &self.buf[from..out_end];
        let out = match seg.rfind(&typed) {
            Some(i) => seg[i..].split_once('\n').map_or("", |(_, o)| o),
            None => seg,
        };
        Ok((status, out.to_string()))
    }

    fn send(&mut self, text: &str) -> Result<()> {
        self.stdin.write_all(text.as_bytes())?;
        self.stdin.flush()?;
        Ok(())
    }

    /// Waits until `needle` appears after the last match.
    fn expect(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.buf[self.pos..].find(needle) {
                self.pos += i + needle.len();
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("timed out after {timeout:?} waiting for {needle:?}");
            }
            if !self.drain(left) {
                bail!("qemu exited while we waited for {needle:?}");
            }
        }
    }

    /// Takes console output for up to `wait`; false once qemu has closed its output.
    fn drain(&mut self, wait: Duration) -> bool {
        match self.rx.recv_timeout(wait) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes).replace('\r', "");
                if self.verbose {
                    print!("{text}");
                }
                self.buf.push_str(&text);
                true
            }
            Err(RecvTimeoutError::Timeout) => true,
            Err(RecvTimeoutError::Disconnected) => false,
        }
    }
}
