//! busybox, from Debian's source package (`apt-get source busybox`), built static for riscv64.
//!
//! The source tree (`src/busybox-<version>`, Debian patches applied by `dpkg-source`) is kept;
//! each build configures `defconfig` plus [`CONFIG_TWEAKS`] in a fresh `O=` tree and publishes
//! `busybox`, `busybox.links` (the applet paths, since we cannot run a riscv64 binary here to
//! ask it) and the `.config` used.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::cache::{Cache, Key};
use super::{deps, run, BuildOptions};

/// Bump when this stage changes what it produces (see `guest::RECIPE_VERSION`).
const RECIPE_VERSION: &str = "ftvm-busybox-2";

/// Changes to busybox's `defconfig`, as `(option, value)`; `None` switches an option off.
const CONFIG_TWEAKS: &[(&str, Option<&str>)] = &[
    // One self-contained binary: the initramfs has no shared libraries.
    ("CONFIG_STATIC", Some("y")),
    // These need Sun RPC, which glibc no longer provides (it moved to libtirpc).
    ("CONFIG_FEATURE_MOUNT_NFS", None),
    ("CONFIG_FEATURE_INETD_RPC", None),
    // `tc` uses traffic-control definitions that newer kernel headers dropped; not needed.
    ("CONFIG_TC", None),
];

/// Applets the guest and its tests rely on; the build fails if any is missing.
const REQUIRED_APPLETS: &[&str] = &[
    "bin/sh",
    "bin/ash",
    "bin/mount",
    "bin/cat",
    "bin/echo",
    "bin/ls",
    "usr/bin/sha256sum",
    "bin/dd",
    "usr/sbin/httpd",
    "usr/bin/nc",
    "sbin/ip",
    "sbin/ifconfig",
    "sbin/udhcpc",
    "sbin/poweroff",
    "bin/sync",
    "usr/bin/head",
    "usr/bin/od",
    "sbin/mke2fs",
];

/// What the busybox build depends on.
pub struct Inputs {
    version: String,
    key: Key,
}

impl Inputs {
    /// Asks apt which busybox source version it would fetch (setting up `deb-src` if allowed).
    pub fn collect(toolchain: &str, install: bool) -> Result<Self> {
        let version = source_version(install)?;
        let mut key = Key::new("busybox", RECIPE_VERSION);
        key.add_text("busybox source", &version);
        key.add_text("config tweaks", &format!("{CONFIG_TWEAKS:?}"));
        key.add_text("toolchain", toolchain);
        Ok(Self { version, key })
    }

    /// The cache key of the busybox entry.
    pub fn key(&self) -> Key {
        self.key.clone()
    }
}

/// The source version `apt-get source busybox` would download, read from the `.dsc` name
/// (`busybox_1.35.0-4+deb12u1.dsc`). This only reads apt's lists; nothing is downloaded.
fn source_version(install: bool) -> Result<String> {
    let ask = || {
        Command::new("apt-get")
            .args(["source", "--print-uris", "busybox"])
            .output()
    };
    let mut out = ask().context("running apt-get")?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("deb-src") {
            deps::add_deb_src(install)?;
        } else if install && deps::is_root() {
            // deb-src is configured but the source lists were never fetched.
            deps::sh(Command::new("apt-get").arg("update"))?;
        } else {
            bail!("`apt-get source --print-uris busybox` failed: {err} (try `apt-get update`)");
        }
        out = ask().context("running apt-get")?;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "`apt-get source --print-uris busybox` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse_dsc_version(&text).context("no busybox .dsc in `apt-get source --print-uris busybox`")
}

fn parse_dsc_version(print_uris: &str) -> Option<String> {
    print_uris.split_whitespace().find_map(|w| {
        let v = w.strip_prefix("busybox_")?.strip_suffix(".dsc")?;
        Some(v.to_string())
    })
}

/// Returns the cache entry holding `busybox`, `busybox.links` and `config`, building if needed.
pub fn build(cache: &Cache, inp: &Inputs, opts: &BuildOptions) -> Result<PathBuf> {
    let dst = cache.entry_path(&inp.key);
    if dst.is_dir() {
        println!("guest: busybox cached ({})", dst.display());
        return Ok(dst);
    }
    let src = fetch(cache, &inp.version, opts)?;
    let obj = cache.tmp_dir("busybox-obj")?;
    let log = cache.log_path("busybox");
    let make = |args: &str| {
        // `yes ''` answers any question `oldconfig` asks with the default.
        let mut c = Command::new("sh");
        // A fixed date in the config header and the version banner: reproducible binaries.
        c.env("SOURCE_DATE_EPOCH", "1700000000");
        c.arg("-c").arg(format!(
            "yes '' | make -C '{}' O='{}' CROSS_COMPILE=riscv64-linux-gnu- {args}",
            src.display(),
            obj.display()
        ));
        c
    };
    run::logged(
        &mut make("defconfig"),
        "busybox: defconfig",
        &log,
        opts.verbose,
    )?;
    let cfg = obj.join(".config");
    fs::write(&cfg, tweak(&fs::read_to_string(&cfg)?))?;
    run::logged(
        &mut make("oldconfig"),
        "busybox: oldconfig",
        &cache.log_path("busybox-config"),
        opts.verbose,
    )?;
    let cfg_text = fs::read_to_string(&cfg)?;
    for (name, value) in CONFIG_TWEAKS {
        let ok = match value {
            Some(v) => cfg_text.lines().any(|l| l == format!("{name}={v}")),
            None => !cfg_text.lines().any(|l| l.starts_with(&format!("{name}="))),
        };
        if !ok {
            bail!("busybox config did not keep {name}={value:?}");
        }
    }
    let jobs = format!("-j{}", opts.jobs);
    run::logged(
        &mut make(&format!("{jobs} busybox")),
        "busybox: make",
        &log,
        opts.verbose,
    )?;
    run::logged(
        &mut make("busybox.links"),
        "busybox: applet list",
        &cache.log_path("busybox-links"),
        opts.verbose,
    )?;
    check_static(&obj.join("busybox"))?;
    let links = fs::read_to_string(obj.join("busybox.links"))?;
    let missing: Vec<_> = REQUIRED_APPLETS
        .iter()
        .filter(|a| !links.lines().any(|l| l.trim_start_matches('/') == **a))
        .collect();
    if !missing.is_empty() {
        bail!("busybox lacks applets the guest needs: {missing:?}");
    }
    let dst = cache.publish(&inp.key, |d| {
        for f in ["busybox", "busybox.links"] {
            fs::copy(obj.join(f), d.join(f))?;
        }
        fs::copy(&cfg, d.join("config"))?;
        Ok(())
    })?;
    fs::remove_dir_all(&obj)?;
    Ok(dst)
}

/// `apt-get source busybox` once per version, into `src/busybox-<version>`.
fn fetch(cache: &Cache, version: &str, opts: &BuildOptions) -> Result<PathBuf> {
    let dst = cache.src_path(&format!("busybox-{version}"));
    if dst.is_dir() {
        return Ok(dst);
    }
    let tmp = cache.tmp_dir("busybox-source")?;
    let mut get = Command::new("apt-get");
    get.current_dir(&tmp).args(["source", "busybox"]);
    run::logged(
        &mut get,
        "busybox: apt-get source busybox",
        &cache.log_path("busybox-source"),
        opts.verbose,
    )?;
    if !tmp.join(format!("busybox_{version}.dsc")).is_file() {
        bail!("apt-get source did not fetch busybox {version} (did apt's lists change meanwhile?)");
    }
    let dirs: Vec<PathBuf> = fs::read_dir(&tmp)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    let [tree] = dirs.as_slice() else {
        bail!("apt-get source left {} directories", dirs.len())
    };
    cache.rename_into_place(tree, &dst)?;
    Ok(dst)
}

/// Applies [`CONFIG_TWEAKS`] to a busybox `.config`.
fn tweak(config: &str) -> String {
    let touched = |l: &str| {
        CONFIG_TWEAKS
            .iter()
            .any(|(n, _)| l.starts_with(&format!("{n}=")) || l == format!("# {n} is not set"))
    };
    let mut out: String = config
        .lines()
        .filter(|l| !touched(l))
        .map(|l| format!("{l}\n"))
        .collect();
    for (name, value) in CONFIG_TWEAKS {
        match value {
            Some(v) => out.push_str(&format!("{name}={v}\n")),
            None => out.push_str(&format!("# {name} is not set\n")),
        }
    }
    out
}

/// A dynamically linked busybox would fail only at boot ("/init: not found"); catch it here.
fn check_static(bin: &Path) -> Result<()> {
    let headers = run::capture(
        Command::new("riscv64-linux-gnu-readelf")
            .arg("-lW")
            .arg(bin),
    )?;
    if headers.contains("INTERP") {
        bail!("{} is dynamically linked", bin.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsc_version_is_read_from_print_uris() {
        let out =
            "'http://deb.debian.org/debian/pool/main/b/busybox/busybox_1.35.0-4%2bdeb12u1.dsc' \
                   busybox_1.35.0-4+deb12u1.dsc 2259 SHA256:00\n";
        assert_eq!(parse_dsc_version(out).as_deref(), Some("1.35.0-4+deb12u1"));
    }

    #[test]
    fn tweaks_replace_existing_lines() {
        let t = tweak("CONFIG_A=y\n# CONFIG_STATIC is not set\nCONFIG_TC=y\n");
        assert!(t.contains("CONFIG_STATIC=y\n") && !t.contains("# CONFIG_STATIC is not set"));
        assert!(t.contains("# CONFIG_TC is not set\n") && !t.contains("CONFIG_TC=y"));
        assert!(t.starts_with("CONFIG_A=y\n"));
    }
}
