//! `cargo xtask demo`: the README's first command. Builds the guest (cached) and ftvm, then runs
//! a fault-tolerant pair on this machine (`ftvm pair --demo --passt PORT`): a primary and a
//! backup process boot Linux; passt (unprivileged networking, a process that outlives either
//! VM) forwards a host port to the guest's TCP counter service; a client holds one TCP
//! connection and increments the counter; the primary is killed with SIGKILL mid-stream, the
//! backup goes live, and the client checks that it received 1, 2, 3, ... with none repeated or
//! skipped, over the same connection. `--interactive` attaches this terminal to the pair's
//! console instead; `--single` boots one plain VM (`ftvm run`) with a disk.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context};

use crate::guest;

/// OpenSBI's fw_jump, from Debian's opensbi package.
const FW_JUMP: &str = "/usr/lib/riscv64-linux-gnu/opensbi/generic/fw_jump.bin";

/// passt, from Debian's passt package: the guest's network in the demo.
const PASST: &str = "/usr/bin/passt";

/// Options of `cargo xtask demo`.
#[derive(clap::Args)]
pub struct Args {
    /// Never install anything; only say what is missing (by default, running as root installs
    /// missing Debian packages and the `deb-src` entry the busybox recipe needs).
    #[arg(long)]
    pub no_install: bool,
    /// Guest RAM.
    #[arg(long, default_value = "256M")]
    pub mem: String,
    /// Number of harts.
    #[arg(long, default_value_t = 1)]
    pub smp: u32,
    /// Kill the primary after every this many increments.
    #[arg(long, default_value_t = 50)]
    pub kill_after: u64,
    /// How many times to kill the primary (the pair protects the new primary again by
    /// itself after each failover).
    #[arg(long, default_value_t = 3)]
    pub kills: u32,
    /// Increments in all.
    #[arg(long, default_value_t = 200)]
    pub total: u64,
    /// Attach this terminal to the pair's console instead of running the counter client.
    #[arg(long)]
    pub interactive: bool,
    /// Boot one plain VM with a disk, console on this terminal (Ctrl-A X quits).
    #[arg(long)]
    pub single: bool,
    /// The host port passt forwards to the guest's counter service (the demo's client holds
    /// one TCP connection to it through the failover). With `--console-only`, the counter runs
    /// in the guest's shell and is driven over the console; without passt the demo stops and
    /// says how to install it.
    #[arg(long, default_value_t = 7070)]
    pub port: u16,
    /// Drive the counter over the console even when passt is installed.
    #[arg(long)]
    pub console_only: bool,
}

/// Runs the task.
pub fn main(a: Args) -> anyhow::Result<()> {
    let opts = guest::BuildOptions {
        install_deps: !a.no_install && guest::deps::is_root(),
        ..Default::default()
    };
    use guest::deps::Group;
    guest::deps::require_groups(&[Group::Build, Group::Guest, Group::Run], opts.install_deps)
        .context("the demo needs these Debian packages (debian-packages.txt)")?;
    if !std::path::Path::new(FW_JUMP).exists() {
        bail!("{FW_JUMP} is missing although opensbi is installed: reinstall it (apt-get install --reinstall opensbi)");
    }
    let passt = !a.console_only && !a.single;
    if passt && !std::path::Path::new(PASST).exists() {
        bail!(
            "{PASST} is missing: the demo's client reaches the guest over TCP through passt. \
             Install it (apt-get install passt), or pass --console-only to drive the counter \
             over the console instead"
        );
    }
    let g = guest::build(&opts)?;
    let ftvm = build_ftvm()?;
    if !a.single {
        eprintln!("xtask demo: a fault-tolerant pair on this machine (ftvm pair)");
        let mut cmd = Command::new(&ftvm);
        cmd.arg("pair")
            .args(["--bios", FW_JUMP])
            .arg("--kernel")
            .arg(&g.kernel)
            .arg("--initrd")
            .arg(&g.initramfs)
            .args(["--append", "console=ttyS0", "--mem", &a.mem])
            .args(["--smp", &a.smp.to_string()]);
        if !a.interactive {
            cmd.args(["--demo", &a.kill_after.to_string()])
                .args(["--demo-total", &a.total.to_string()])
                .args(["--demo-kills", &a.kills.to_string()]);
        }
        if passt {
            cmd.args(["--passt", &a.port.to_string()]);
        } else {
            eprintln!("xtask demo: --console-only: the counter is driven over the console");
        }
        let st = cmd
            .status()
            .with_context(|| format!("cannot run {}", ftvm.display()))?;
        if !st.success() {
            bail!("ftvm pair exited with {st}");
        }
        return Ok(());
    }
    // The demo's disk is a copy: the cached image stays pristine.
    let disk = std::env::temp_dir().join(format!("ftvm-demo-{}.img", std::process::id()));
    std::fs::copy(&g.disk, &disk).with_context(|| format!("copying {}", g.disk.display()))?;
    eprintln!("xtask demo: booting Linux on ftvm (Ctrl-A X quits, `poweroff` ends the guest)");
    let st = Command::new(&ftvm)
        .arg("run")
        .args(["--bios", FW_JUMP])
        .arg("--kernel")
        .arg(&g.kernel)
        .arg("--initrd")
        .arg(&g.initramfs)
        .arg("--drive")
        .arg(format!("file={}", disk.display()))
        .args([
            "--append",
            "console=ttyS0",
            "--mem",
            &a.mem,
            "--smp",
            &a.smp.to_string(),
        ])
        .status()
        .with_context(|| format!("cannot run {}", ftvm.display()));
    let _ = std::fs::remove_file(&disk);
    let st = st?;
    if !st.success() {
        bail!("ftvm exited with {st}");
    }
    Ok(())
}

/// Builds ftvm (release) and returns where the binary is.
pub fn build_ftvm() -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(&cargo)
        .args(["build", "--release", "-p", "ftvm"])
        .status()
        .with_context(|| format!("cannot run {cargo}"))?;
    if !st.success() {
        bail!("building ftvm failed");
    }
    Ok(target_dir().join("release/ftvm"))
}

pub(crate) fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .map(|p| p.join("target"))
                .unwrap_or_default()
        })
}
