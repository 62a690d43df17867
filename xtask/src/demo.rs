//! `cargo xtask demo`: the README's first command. Builds the guest (cached) and ftvm, then boots
//! the guest on ftvm with its console on this terminal: Linux, busybox, a virtio disk mounted on
//! `/mnt`, the entropy device. Ctrl-A X quits; `poweroff` in the guest ends it cleanly.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context};

use crate::guest;

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
}

/// Runs the task.
pub fn main(a: Args) -> anyhow::Result<()> {
    let opts = guest::BuildOptions {
        install_deps: !a.no_install && guest::deps::is_root(),
        ..Default::default()
    };
    let g = guest::build(&opts)?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(&cargo)
        .args(["build", "--release", "-p", "ftvm"])
        .status()
        .with_context(|| format!("cannot run {cargo}"))?;
    if !st.success() {
        bail!("building ftvm failed");
    }
    // The demo's disk is a copy: the cached image stays pristine.
    let disk = std::env::temp_dir().join(format!("ftvm-demo-{}.img", std::process::id()));
    std::fs::copy(&g.disk, &disk).with_context(|| format!("copying {}", g.disk.display()))?;
    let ftvm = target_dir().join("release/ftvm");
    eprintln!("xtask demo: booting Linux on ftvm (Ctrl-A X quits, `poweroff` ends the guest)");
    let st = Command::new(&ftvm)
        .arg("run")
        .args([
            "--bios",
            "/usr/lib/riscv64-linux-gnu/opensbi/generic/fw_jump.bin",
        ])
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

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .map(|p| p.join("target"))
                .unwrap_or_default()
        })
}
