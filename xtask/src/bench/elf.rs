//! The tools the benchmark needs, and the build of the guest ELFs from `guests/bench/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::{Kernel, Paths};

/// The bare-metal cross compiler (Debian package `gcc-riscv64-unknown-elf`).
const CC: &str = "riscv64-unknown-elf-gcc";
/// The reference machine (Debian package `qemu-system-misc`).
pub const QEMU: &str = "qemu-system-riscv64";

/// Flags shared by every object: RV64GC, no libc, code anywhere in the address space.
const CFLAGS: &[&str] = &[
    "-march=rv64gc",
    "-mabi=lp64d",
    "-O2",
    "-mcmodel=medany",
    "-ffreestanding",
    "-fno-builtin",
    "-fno-math-errno",
    "-Wall",
    "-Wextra",
    "-Werror",
];

/// Sources every ELF links; the kernels add theirs (see [`kernel_sources`]).
const COMMON: &[&str] = &["start.S", "lib.c"];

fn kernel_sources(k: Kernel) -> &'static [&'static str] {
    match k {
        Kernel::Startup => &[],
        Kernel::Int => &["int.c"],
        Kernel::Mem => &["mem.c"],
        Kernel::Branch => &["branch.c"],
        Kernel::Fp => &["fp.c"],
        Kernel::All => &["int.c", "mem.c", "branch.c", "fp.c"],
    }
}

/// Fails with the Debian package to install when `tool --version` cannot run.
fn check_tool(tool: &str, package: &str) -> Result<String> {
    match Command::new(tool).arg("--version").output() {
        Ok(o) if o.status.success() => {
            Ok(String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").to_string())
        }
        _ => bail!("`{tool}` is missing or broken: install the Debian package `{package}` (apt-get install {package})"),
    }
}

/// The cross compiler's version line, or an error naming the package.
pub fn check_cross_compiler() -> Result<String> {
    check_tool(CC, "gcc-riscv64-unknown-elf")
}

/// QEMU's version line, or an error naming the package.
pub fn check_qemu() -> Result<String> {
    check_tool(QEMU, "qemu-system-misc")
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Builds one ELF per kernel, with iteration counts divided by `scale_div`, into
/// `<target>/bench-guest/div<scale_div>/<kernel>.elf`, and returns their paths in order. Always
/// rebuilds: it takes about a second and can never be stale.
pub fn build(paths: &Paths, kernels: &[Kernel], scale_div: u32) -> Result<Vec<PathBuf>> {
    let src = paths.root.join("guests").join("bench");
    let out = paths
        .target
        .join("bench-guest")
        .join(format!("div{scale_div}"));
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let scale = format!("-DSCALE_DIV={scale_div}");

    let obj = |name: &str, extra: &[String], out_name: &str| -> Result<PathBuf> {
        let o = out.join(out_name);
        run(Command::new(CC)
            .args(CFLAGS)
            .arg(&scale)
            .args(extra)
            .arg("-I")
            .arg(&src)
            .arg("-c")
            .arg(src.join(name))
            .arg("-o")
            .arg(&o))?;
        Ok(o)
    };

    let mut elfs = Vec::new();
    for &k in kernels {
        let mut objs = Vec::new();
        for s in COMMON.iter().chain(kernel_sources(k)) {
            objs.push(obj(s, &[], &format!("{}.o", stem(s)))?);
        }
        let defines: Vec<String> = k.defines().iter().map(|d| format!("-D{d}")).collect();
        objs.push(obj("main.c", &defines, &format!("main-{}.o", k.name()))?);
        let elf = out.join(format!("{}.elf", k.name()));
        run(Command::new(CC)
            .args([
                "-march=rv64gc",
                "-mabi=lp64d",
                "-nostdlib",
                "-nostartfiles",
                "-static",
            ])
            .arg("-Wl,--no-warn-rwx-segments")
            .arg("-T")
            .arg(src.join("link.ld"))
            .args(&objs)
            .arg("-lgcc")
            .arg("-o")
            .arg(&elf))?;
        elfs.push(elf);
    }
    Ok(elfs)
}

fn stem(file: &str) -> &str {
    Path::new(file)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tool_names_the_package() {
        let e = check_tool("ftvm-no-such-tool", "some-package").unwrap_err();
        assert!(
            e.to_string().contains("apt-get install some-package"),
            "{e}"
        );
    }
}
