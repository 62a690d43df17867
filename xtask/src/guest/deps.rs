//! Debian prerequisites: which packages the recipe needs, their versions (part of the cache
//! keys), and the `deb-src` entry that `apt-get source busybox` needs.
//!
//! The recipe only changes the system when asked (`--install-deps`) and when running as root;
//! otherwise it names the command to run.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Packages the build needs. `cpio` is used to cross-check the archive we write ourselves;
/// `dpkg-dev` provides `dpkg-source`, which `apt-get source` runs to unpack and patch.
const BUILD_PACKAGES: &[&str] = &[
    "linux-source-6.1",
    "gcc-riscv64-linux-gnu",
    "libc6-dev-riscv64-cross",
    "make",
    "gcc",
    "flex",
    "bison",
    "bc",
    "libssl-dev",
    "libelf-dev",
    "cpio",
    "gzip",
    "xz-utils",
    "e2fsprogs",
    "dpkg-dev",
];

/// Packages `--check-qemu` needs.
const QEMU_PACKAGES: &[&str] = &["qemu-system-misc", "opensbi"];

/// Fails (or installs, if allowed) unless every build package is installed.
pub fn require_packages(install: bool) -> Result<()> {
    require(BUILD_PACKAGES, install)
}

/// Same for the packages of the QEMU boot check.
pub fn require_qemu(install: bool) -> Result<()> {
    require(QEMU_PACKAGES, install)
}

fn require(pkgs: &[&str], install: bool) -> Result<()> {
    let missing: Vec<&str> = pkgs
        .iter()
        .copied()
        .filter(|p| package_version(p).is_err())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let cmd = format!(
        "apt-get install --no-install-recommends {}",
        missing.join(" ")
    );
    if !install {
        bail!("missing Debian packages; run `{cmd}` as root, or pass --install-deps as root");
    }
    if !is_root() {
        bail!("--install-deps needs root; run `sudo {cmd}`");
    }
    println!("guest: installing {}", missing.join(" "));
    sh(Command::new("apt-get").arg("update"))?;
    sh(Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing))
}

/// The installed version of `pkg`, or an error if it is not installed.
pub fn package_version(pkg: &str) -> Result<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f", "${db:Status-Abbrev}${Version}", pkg])
        .output()
        .context("running dpkg-query (is this Debian?)")?;
    let s = String::from_utf8_lossy(&out.stdout);
    match s.strip_prefix("ii ") {
        Some(v) if out.status.success() => Ok(v.trim().to_string()),
        _ => bail!("package {pkg} is not installed"),
    }
}

/// Versions of every installed riscv64 cross package (compiler, binutils, libc, kernel
/// headers), one `name version` per line: a change to any of them changes the binaries.
/// The `gcc-riscv64-linux-gnu` metapackage alone would miss updates of `gcc-12-…`.
pub fn toolchain_versions() -> Result<String> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f", "${db:Status-Abbrev} ${Package} ${Version}\n"])
        .output()
        .context("running dpkg-query")?;
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("ii  "))
        .filter(|l| {
            let name = l.split(' ').next().unwrap_or("");
            name.contains("riscv64-linux-gnu") || name.ends_with("-riscv64-cross")
        })
        .map(str::to_string)
        .collect();
    lines.sort();
    if lines.is_empty() {
        bail!("no riscv64 cross toolchain installed");
    }
    Ok(lines.join("\n"))
}

/// True when running as root (uid 0), which apt needs.
pub fn is_root() -> bool {
    // The owner of /proc/self is the effective uid; it saves a dependency on libc.
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// Runs a command with inherited output and fails if it does.
pub fn sh(cmd: &mut Command) -> Result<()> {
    let st = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed: {st}");
    }
    Ok(())
}

const SOURCES_DIR: &str = "/etc/apt/sources.list.d";
const OUR_LIST: &str = "ftvm-deb-src";

/// Adds `deb-src` twins of the configured Debian `deb` entries (as root), then `apt-get update`.
pub fn add_deb_src(install: bool) -> Result<()> {
    let advice = "apt has no deb-src entry, which `apt-get source busybox` needs";
    if !install {
        bail!(
            "{advice}; pass --install-deps as root to add one to {SOURCES_DIR}/{OUR_LIST}.*, \
             or add one yourself and run `apt-get update`"
        );
    }
    if !is_root() {
        bail!("{advice}; --install-deps needs root to add one");
    }
    let mut one_line = String::new();
    let mut deb822 = String::new();
    let mut files: Vec<_> = vec![Path::new("/etc/apt/sources.list").to_path_buf()];
    if let Ok(rd) = fs::read_dir(SOURCES_DIR) {
        let mut more: Vec<_> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        more.sort();
        files.extend(more);
    }
    for f in files {
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with(OUR_LIST) {
            continue;
        }
        let Ok(text) = fs::read_to_string(&f) else {
            continue;
        };
        if name.ends_with(".list") {
            one_line.push_str(&deb_src_lines(&text));
        } else if name.ends_with(".sources") {
            deb822.push_str(&deb_src_stanzas(&text));
        }
    }
    if one_line.is_empty() && deb822.is_empty() {
        bail!("{advice}, and no Debian `deb` entry was found in /etc/apt to mirror");
    }
    let header = "# Added by `cargo xtask guest --install-deps` (ftvm): busybox is built from \
                  Debian's source package.\n";
    if !one_line.is_empty() {
        fs::write(
            format!("{SOURCES_DIR}/{OUR_LIST}.list"),
            format!("{header}{one_line}"),
        )?;
    }
    if !deb822.is_empty() {
        fs::write(
            format!("{SOURCES_DIR}/{OUR_LIST}.sources"),
            format!("{header}{deb822}"),
        )?;
    }
    println!("guest: added deb-src entries in {SOURCES_DIR}/{OUR_LIST}.*; running apt-get update");
    sh(Command::new("apt-get").arg("update"))
}

/// One-line format: `deb [opts] uri suite comp…` becomes `deb-src [opts] uri suite comp…`.
/// Only Debian archives are mirrored: third-party repositories rarely publish sources.
fn deb_src_lines(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| l.starts_with("deb ") && l.contains("debian"))
        .map(|l| format!("deb-src{}\n", &l[3..]))
        .collect()
}

/// deb822 format: each enabled stanza of type `deb` for a Debian archive, as type `deb-src`.
fn deb_src_stanzas(text: &str) -> String {
    let mut out = String::new();
    for stanza in text.split("\n\n") {
        let fields: Vec<&str> = stanza
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .collect();
        let get = |k: &str| {
            fields.iter().find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.trim().eq_ignore_ascii_case(k).then(|| v.trim())
            })
        };
        let is_deb = get("Types").is_some_and(|t| t.split_whitespace().any(|t| t == "deb"));
        let enabled = get("Enabled").is_none_or(|e| !e.eq_ignore_ascii_case("no"));
        if !is_deb || !enabled || !get("URIs").is_some_and(|u| u.contains("debian")) {
            continue;
        }
        out.push_str("Types: deb-src\n");
        for l in &fields {
            if !l
                .split_once(':')
                .is_some_and(|(n, _)| n.trim().eq_ignore_ascii_case("Types"))
            {
                out.push_str(l);
                out.push('\n');
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_entries_are_mirrored() {
        let t = "# c\ndeb http://deb.debian.org/debian bookworm main\n\
                 deb-src http://x/debian bookworm main\ndeb https://example.com/apt stable main\n";
        assert_eq!(
            deb_src_lines(t),
            "deb-src http://deb.debian.org/debian bookworm main\n"
        );
    }

    #[test]
    fn deb822_stanzas_are_mirrored() {
        let t = "Types: deb\n# comment\nURIs: http://deb.debian.org/debian\nSuites: bookworm\n\
                 Components: main\nSigned-By: /k.gpg\n\nTypes: deb\nURIs: https://example.com/x\n\
                 Suites: s\n";
        assert_eq!(
            deb_src_stanzas(t),
            "Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: bookworm\n\
             Components: main\nSigned-By: /k.gpg\n\n"
        );
    }
}
