//! Debian prerequisites: which packages the recipe needs, their versions (part of the cache
//! keys), and the `deb-src` entry that `apt-get source busybox` needs.
//!
//! The recipe only changes the system when asked (`--install-deps`) and when running as root;
//! otherwise it names the command to run.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The project's one list of Debian packages (`debian-packages.txt` at the top of the
/// repository), by group.
const PACKAGE_LIST: &str = include_str!("../../../debian-packages.txt");

/// A group of `debian-packages.txt`: what one purpose needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    /// Building ftvm itself (C and C++ compilers, CMake, protoc).
    Build,
    /// The guest recipe (kernel source, cross compiler, busybox's source tools).
    Guest,
    /// Running a guest: OpenSBI and passt.
    Run,
    /// QEMU, the reference machine, and qemu-nbd.
    Reference,
    /// What only the test suite needs (bare-metal cross compiler, etcd, iproute2).
    Test,
    /// `cargo xtask fresh-check`: mmdebstrap, to build a clean Debian 12 root filesystem.
    FreshCheck,
    /// The Debian guest (`cargo xtask guest --debian`): mmdebstrap for a foreign architecture.
    Debian,
}

impl Group {
    /// What the whole test suite needs (every group but the fresh-machine check's).
    pub const ALL: &'static [Group] = &[
        Group::Build,
        Group::Guest,
        Group::Run,
        Group::Reference,
        Group::Test,
        Group::Debian,
    ];

    fn name(self) -> &'static str {
        match self {
            Group::Build => "build",
            Group::Guest => "guest",
            Group::Run => "run",
            Group::Reference => "reference",
            Group::Test => "test",
            Group::FreshCheck => "fresh-check",
            Group::Debian => "debian-guest",
        }
    }
}

/// The packages of `groups` in `list` (the text of `debian-packages.txt`), in list order.
fn packages_in(list: &str, groups: &[Group]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut current: Option<&str> = None;
    for (n, raw) in list.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = Some(name);
            continue;
        }
        let Some(group) = current else {
            bail!(
                "debian-packages.txt line {}: a package before any [group]",
                n + 1
            );
        };
        if groups.iter().any(|g| g.name() == group) {
            out.extend(line.split_whitespace().map(str::to_string));
        }
    }
    Ok(out)
}

/// Fails (or installs, if allowed) unless every package of `groups` is installed.
pub fn require_groups(groups: &[Group], install: bool) -> Result<()> {
    let pkgs = packages_in(PACKAGE_LIST, groups)?;
    let names: Vec<&str> = pkgs.iter().map(String::as_str).collect();
    require(&names, install)
}

/// Fails (or installs, if allowed) unless every package the guest recipe needs is installed.
pub fn require_packages(install: bool) -> Result<()> {
    require_groups(&[Group::Guest], install)
}

/// Same for the packages of the QEMU boot check.
pub fn require_qemu(install: bool) -> Result<()> {
    require_groups(&[Group::Run, Group::Reference], install)
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
        bail!(
            "missing Debian packages: {}; run `{cmd}` as root (the list, with why each is \
             needed, is debian-packages.txt), or run this command as root",
            missing.join(" ")
        );
    }
    if !is_root() {
        bail!("installing packages needs root; run `sudo {cmd}`");
    }
    println!("xtask: installing {}", missing.join(" "));
    sh(Command::new("apt-get").arg("update"))?;
    // An image may ship qemu-utils from bookworm-backports, whose version breaks Debian 12's
    // qemu-system-misc (they must match): take qemu-utils from the release as well.
    let mut extra: Vec<String> = Vec::new();
    if missing.contains(&"qemu-system-misc")
        && package_version("qemu-utils").is_ok_and(|v| v.contains("bpo"))
    {
        extra = vec!["--allow-downgrades".into(), "qemu-utils/bookworm".into()];
    }
    sh(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&extra)
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
    fn the_package_list_has_every_group_and_names_only_packages() {
        for g in Group::ALL.iter().chain(&[Group::FreshCheck]) {
            let pkgs = packages_in(PACKAGE_LIST, &[*g]).unwrap();
            assert!(!pkgs.is_empty(), "group {g:?} is empty or missing");
            for p in &pkgs {
                assert!(
                    p.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c)),
                    "{p:?} is not a Debian package name"
                );
            }
        }
        // What a fresh machine lacked in the past (issue 14): the build's C++ compiler and
        // protobuf pieces, and the demo's firmware and network.
        let demo = packages_in(PACKAGE_LIST, &[Group::Build, Group::Guest, Group::Run]).unwrap();
        for p in [
            "g++",
            "cmake",
            "protobuf-compiler",
            "libprotobuf-dev",
            "opensbi",
            "passt",
        ] {
            assert!(demo.iter().any(|d| d == p), "the demo's groups lack {p}");
        }
    }

    #[test]
    fn the_package_list_parser_reads_groups_and_comments() {
        let l = "# head\n[a]  # x\none two # why\n\n[b]\nthree\n";
        assert_eq!(
            packages_in(l, &[Group::Build]).unwrap(),
            Vec::<String>::new()
        );
        assert!(packages_in("stray\n", &[Group::Build]).is_err());
        let l = "[build]\none two # why\n[guest]\nthree\n";
        assert_eq!(packages_in(l, &[Group::Build]).unwrap(), ["one", "two"]);
        assert_eq!(
            packages_in(l, &[Group::Guest, Group::Build]).unwrap(),
            ["one", "two", "three"]
        );
    }

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
