//! The Linux kernel: Debian's `linux-source-6.1`, `tinyconfig` plus `guests/linux/ftvm.config`.
//!
//! The unpacked tree (`src/linux-source-<version>`) is read-only once made; objects go to a
//! separate kbuild `O=` tree (`src/linux-obj-<version>`) that is kept between runs, so editing
//! the fragment rebuilds only what the change touches. Only `Image` and `.config` are published.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::cache::{Cache, Key};
use super::{deps, run, BuildOptions};

/// Bump when this stage changes what it produces (see `guest::RECIPE_VERSION`).
const RECIPE_VERSION: &str = "ftvm-kernel-1";

const TARBALL: &str = "/usr/src/linux-source-6.1.tar.xz";
const FRAGMENT: &str = "guests/linux/ftvm.config";

/// Everything the kernel build depends on.
pub struct Inputs {
    version: String,
    fragment: PathBuf,
    key: Key,
}

impl Inputs {
    /// Reads the fragment and the package versions.
    pub fn collect(repo: &Path, toolchain: &str) -> Result<Self> {
        let version = deps::package_version("linux-source-6.1")?;
        let fragment = repo.join(FRAGMENT);
        let text =
            fs::read(&fragment).with_context(|| format!("reading {}", fragment.display()))?;
        let mut key = Key::new("kernel", RECIPE_VERSION);
        key.add_text("linux-source-6.1", &version);
        key.add_bytes(FRAGMENT, &text);
        key.add_text("toolchain", toolchain);
        Ok(Self {
            version,
            fragment,
            key,
        })
    }

    /// The cache key of the kernel entry.
    pub fn key(&self) -> Key {
        self.key.clone()
    }
}

/// Returns the cache entry holding `Image` and `config`, building it if needed.
pub fn build(cache: &Cache, inp: &Inputs, opts: &BuildOptions) -> Result<PathBuf> {
    let dst = cache.entry_path(&inp.key);
    if dst.is_dir() {
        println!("guest: kernel cached ({})", dst.display());
        return Ok(dst);
    }
    let src = unpack(cache, &inp.version, opts)?;
    let obj = cache.src_path(&format!("linux-obj-{}", inp.version));
    fs::create_dir_all(&obj)?;
    let log = cache.log_path("kernel");
    let make = |args: &[&str]| {
        let mut c = Command::new("make");
        c.arg("-C").arg(&src).arg(format!("O={}", obj.display()));
        c.args(["ARCH=riscv", "CROSS_COMPILE=riscv64-linux-gnu-"])
            .args(args);
        // Fixed build identity: the same inputs give the same Image bytes.
        c.env("KBUILD_BUILD_USER", "ftvm")
            .env("KBUILD_BUILD_HOST", "ftvm")
            .env("KBUILD_BUILD_TIMESTAMP", "1970-01-01")
            .env("KBUILD_BUILD_VERSION", "1");
        c
    };
    run::logged(
        &mut make(&["tinyconfig"]),
        "kernel: tinyconfig",
        &log,
        opts.verbose,
    )?;
    let merge_log = cache.log_path("kernel-config");
    let mut merge = Command::new(src.join("scripts/kconfig/merge_config.sh"));
    merge
        .current_dir(&src)
        .arg("-m")
        .arg("-O")
        .arg(&obj)
        .arg(obj.join(".config"))
        .arg(&inp.fragment);
    run::logged(
        &mut merge,
        "kernel: merge ftvm.config",
        &merge_log,
        opts.verbose,
    )?;
    run::logged(
        &mut make(&["olddefconfig"]),
        "kernel: olddefconfig",
        &merge_log,
        opts.verbose,
    )?;
    let wanted = fs::read_to_string(&inp.fragment)?;
    let got = fs::read_to_string(obj.join(".config"))?;
    check_config(&wanted, &got)
        .context("the kernel config lost options of guests/linux/ftvm.config")?;

    let jobs = format!("-j{}", opts.jobs);
    run::logged(
        &mut make(&[&jobs, "Image"]),
        "kernel: make Image",
        &log,
        opts.verbose,
    )?;
    cache.publish(&inp.key, |d| {
        fs::copy(obj.join("arch/riscv/boot/Image"), d.join("Image"))?;
        fs::copy(obj.join(".config"), d.join("config"))?;
        Ok(())
    })
}

/// Unpacks the Debian tarball once per package version.
fn unpack(cache: &Cache, version: &str, opts: &BuildOptions) -> Result<PathBuf> {
    let dst = cache.src_path(&format!("linux-source-{version}"));
    if dst.is_dir() {
        return Ok(dst);
    }
    let tmp = cache.tmp_dir("linux-source")?;
    let mut tar = Command::new("tar");
    tar.arg("-xf").arg(TARBALL).arg("-C").arg(&tmp);
    run::logged(
        &mut tar,
        "kernel: unpack linux-source-6.1",
        &cache.log_path("unpack"),
        opts.verbose,
    )?;
    cache.rename_into_place(&tmp.join("linux-source-6.1"), &dst)?;
    Ok(dst)
}

/// Every assignment of the fragment must appear in `.config` as written; `# CONFIG_X is not
/// set` must not be contradicted. Kconfig drops options silently when a dependency is missing,
/// which would otherwise surface only as a guest that does not boot.
fn check_config(fragment: &str, config: &str) -> Result<()> {
    let actual: BTreeMap<&str, &str> = config
        .lines()
        .filter_map(|l| {
            match l
                .strip_prefix("# ")
                .and_then(|l| l.strip_suffix(" is not set"))
            {
                Some(name) => Some((name, "n")),
                None => l.split_once('='),
            }
        })
        .collect();
    let mut lost = Vec::new();
    for line in fragment.lines().map(str::trim) {
        let (name, want) = if let Some(n) = line
            .strip_prefix("# ")
            .and_then(|l| l.strip_suffix(" is not set"))
        {
            (n, "n")
        } else if let Some((n, v)) = line.split_once('=').filter(|_| line.starts_with("CONFIG_")) {
            (n, v)
        } else {
            continue;
        };
        let got = actual.get(name).copied().unwrap_or("n");
        if got != want {
            lost.push(format!("{name}: wanted {want}, got {got}"));
        }
    }
    if !lost.is_empty() {
        bail!("{}", lost.join("; "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_config;

    #[test]
    fn config_check_names_lost_options() {
        let frag = "# c\nCONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=4\nCONFIG_D=y\n";
        let ok = "CONFIG_A=y\nCONFIG_C=4\nCONFIG_D=y\n# CONFIG_B is not set\n";
        assert!(check_config(frag, ok).is_ok());
        let bad = "CONFIG_A=y\nCONFIG_B=y\nCONFIG_C=8\n";
        let e = check_config(frag, bad).unwrap_err().to_string();
        assert!(e.contains("CONFIG_B: wanted n, got y"), "{e}");
        assert!(e.contains("CONFIG_C: wanted 4, got 8"), "{e}");
        assert!(e.contains("CONFIG_D: wanted y, got n"), "{e}");
    }
}
