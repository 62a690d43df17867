//! `cargo xtask fresh-check`: the README's two commands, tried as a new user would.
//!
//! Our machines and CI's already have every package installed, so a green CI can hide a missing
//! install step (it did: the demo needed packages that only CI's script installed). This check
//! builds a clean Debian 12 root filesystem with `mmdebstrap` holding only what the README
//! assumes (git, and gcc as the linker Rust needs), mounts this machine's Rust toolchain into it
//! read-only, clones the repository's committed HEAD into it, and runs `cargo xtask demo` and
//! `cargo xtask test` there as root, with a fresh cargo home and guest cache. Each command's
//! output goes to a log file beside the root filesystem; the summary says which passed.
//!
//! It runs outside CI (it needs root, a Debian mirror and the best part of an hour on 2 cores).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::guest::deps;

/// Options of `cargo xtask fresh-check`.
#[derive(clap::Args)]
pub struct Args {
    /// Where to build the root filesystem (it is removed afterwards unless --keep).
    #[arg(long, default_value = "/var/tmp/ftvm-fresh")]
    pub root: PathBuf,
    /// Keep the root filesystem (and its build caches) afterwards.
    #[arg(long)]
    pub keep: bool,
    /// Which of the README's commands to run: demo, test, or both.
    #[arg(long, value_enum, default_value_t = Which::Both)]
    pub run: Which,
    /// Reuse a root filesystem left by an earlier `--keep` run instead of building a new one.
    #[arg(long)]
    pub reuse: bool,
}

/// The README commands to try.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Which {
    /// `cargo xtask demo`.
    Demo,
    /// `cargo xtask test`.
    Test,
    /// Both, demo first.
    Both,
}

/// What a fresh machine has besides Rust: git to clone, gcc (and libc's headers and crt files)
/// as the linker rustc calls, and the certificates that HTTPS to the crate registry needs.
const BASE_PACKAGES: &str = "git,ca-certificates,gcc,libc6-dev";

/// Runs the task.
pub fn main(a: Args) -> Result<()> {
    if !deps::is_root() {
        bail!("fresh-check needs root (mmdebstrap, chroot and mounts); run it with sudo");
    }
    deps::require_groups(&[deps::Group::FreshCheck], true)?;
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/root".into());
    let rustup = std::env::var_os("RUSTUP_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".rustup"));
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".cargo"))
        .join("bin");
    if !rustup.join("toolchains").is_dir() || !cargo_bin.join("cargo").exists() {
        bail!(
            "no rustup toolchain at {} with cargo in {}: fresh-check mounts this machine's \
             rustup installation into the clean root filesystem",
            rustup.display(),
            cargo_bin.display()
        );
    }
    let repo = crate::guest::repo_root();
    let root = &a.root;
    if !(a.reuse && root.join("etc/debian_version").exists()) {
        build_root(root)?;
    }
    let mounts = Mounts::new(root);
    let result = (|| -> Result<Vec<(String, bool, f64)>> {
        mounts.bind(Path::new("/proc"), "proc", true)?;
        mounts.bind(Path::new("/sys"), "sys", true)?;
        mounts.bind(Path::new("/dev"), "dev", true)?;
        mounts.tmpfs("run")?;
        mounts.bind(&rustup, "opt/rustup", false)?;
        mounts.bind(&cargo_bin, "opt/cargo-bin", false)?;
        fs::copy("/etc/resolv.conf", root.join("etc/resolv.conf")).ok();
        trust_local_cas(root)?;
        let clone = root.join("root/ftvm");
        if clone.exists() {
            fs::remove_dir_all(&clone).with_context(|| format!("removing {}", clone.display()))?;
        }
        deps::sh(
            Command::new("git")
                .arg("clone")
                .arg("-q")
                .arg(&repo)
                .arg(&clone),
        )?;
        let mut out = Vec::new();
        for (name, cmd) in [("demo", "cargo xtask demo"), ("test", "cargo xtask test")] {
            let wanted = match a.run {
                Which::Both => true,
                Which::Demo => name == "demo",
                Which::Test => name == "test",
            };
            if !wanted {
                continue;
            }
            let log = root.with_extension(format!("{name}.log"));
            eprintln!(
                "fresh-check: `{cmd}` in {} (output in {})",
                root.display(),
                log.display()
            );
            let started = Instant::now();
            let ok = in_root(root, cmd, &log)?;
            let secs = started.elapsed().as_secs_f64();
            eprintln!(
                "fresh-check: `{cmd}` {} after {secs:.0} s",
                if ok { "passed" } else { "FAILED" }
            );
            out.push((cmd.to_string(), ok, secs));
        }
        Ok(out)
    })();
    mounts.undo();
    if !a.keep {
        if let Err(e) = remove_root(root) {
            eprintln!("fresh-check: could not remove {}: {e:#}", root.display());
        }
    }
    let results = result?;
    for (cmd, ok, secs) in &results {
        println!(
            "fresh-check: {cmd}: {} ({secs:.0} s)",
            if *ok { "ok" } else { "FAILED" }
        );
    }
    if results.iter().any(|(_, ok, _)| !ok) {
        bail!(
            "a README command failed on a fresh Debian 12 (see the logs beside {})",
            root.display()
        );
    }
    Ok(())
}

/// A clean Debian 12 (bookworm) root filesystem at `root`, from this machine's Debian mirror.
fn build_root(root: &Path) -> Result<()> {
    if root.exists() {
        remove_root(root)?;
    }
    eprintln!(
        "fresh-check: building a clean Debian 12 root filesystem in {}",
        root.display()
    );
    let mut cmd = Command::new("mmdebstrap");
    cmd.args(["--variant=minbase", "--include", BASE_PACKAGES, "bookworm"])
        .arg(root);
    // The same archives this machine uses (a mirror it can reach), as deb822 or one-line files.
    for f in debian_sources() {
        cmd.arg(f);
    }
    deps::sh(&mut cmd).context("mmdebstrap failed")
}

/// Removes the root filesystem, but never while anything is still mounted below it (a bind
/// mount of the host's /dev or of the toolchain would be emptied with it).
fn remove_root(root: &Path) -> Result<()> {
    let root = root
        .canonicalize()
        .with_context(|| format!("resolving {}", root.display()))?;
    let mounts = fs::read_to_string("/proc/self/mounts").context("reading /proc/self/mounts")?;
    if let Some(m) = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .find(|m| Path::new(m).starts_with(&root))
    {
        bail!(
            "{m} is still mounted; unmount it (umount -R -l {m}) and remove {} by hand",
            root.display()
        );
    }
    fs::remove_dir_all(&root).with_context(|| format!("removing {}", root.display()))
}

/// This machine's apt source files that name a Debian archive.
fn debian_sources() -> Vec<PathBuf> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(rd) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<_> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        more.sort();
        files.extend(more);
    }
    files
        .into_iter()
        .filter(|f| {
            let name = f.to_string_lossy();
            (name.ends_with(".list") || name.ends_with(".sources"))
                && !name.contains("ftvm-deb-src")
                && fs::read_to_string(f).is_ok_and(|t| {
                    t.lines().any(|l| {
                        let l = l.trim();
                        !l.starts_with('#') && l.contains("debian")
                    })
                })
        })
        .collect()
}

/// Carries this machine's local certificate authorities (`/usr/local/share/ca-certificates`)
/// into the root filesystem. Where the network passes through a TLS-inspecting proxy, as on our
/// build machines, the crate registry is only trusted with its CA; a user's own machine trusts
/// what it trusts, and this only makes the clean root filesystem see the same network.
fn trust_local_cas(root: &Path) -> Result<()> {
    let src = Path::new("/usr/local/share/ca-certificates");
    let Ok(rd) = fs::read_dir(src) else {
        return Ok(());
    };
    let dst = root.join("usr/local/share/ca-certificates");
    fs::create_dir_all(&dst)?;
    let mut any = false;
    for e in rd {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "crt") {
            if let Some(name) = p.file_name() {
                fs::copy(&p, dst.join(name))?;
                any = true;
            }
        }
    }
    if any {
        deps::sh(
            Command::new("/usr/sbin/chroot")
                .arg(root)
                .args(["update-ca-certificates", "--fresh"])
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .stdout(std::process::Stdio::null()),
        )?;
    }
    Ok(())
}

/// Runs `cmd` in the repository's clone inside `root` as a new user's root shell would, output
/// to `log`. True if it exited 0.
fn in_root(root: &Path, cmd: &str, log: &Path) -> Result<bool> {
    let script = format!(
        "set -e; export HOME=/root RUSTUP_HOME=/opt/rustup CARGO_HOME=/root/.cargo \
         PATH=/opt/cargo-bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
         LANG=C.UTF-8; cd /root/ftvm; {cmd}"
    );
    let out = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = out.try_clone()?;
    // Not chroot(2): the kernel refuses a chrooted process a user namespace, which passt
    // makes to sandbox itself (a real machine is not chrooted). A mount namespace whose root
    // is the root filesystem (pivot_root) is what a booted machine looks like to a program.
    fs::create_dir_all(root.join(".old-root"))?;
    let st = Command::new("/usr/bin/unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "--fork",
            "--",
            "/bin/sh",
            "-c",
        ])
        .arg(
            "mount --rbind \"$0\" \"$0\" && cd \"$0\" && pivot_root . .old-root && cd / && \
             { umount -l /.old-root 2>/dev/null || true; } && exec /bin/bash -c \"$1\"",
        )
        .arg(root)
        .arg(&script)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("TERM", "dumb")
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .status()
        .context("running unshare (util-linux)")?;
    Ok(st.success())
}

/// The mounts made inside the root filesystem, undone in reverse order.
struct Mounts {
    root: PathBuf,
    made: std::cell::RefCell<Vec<PathBuf>>,
}

impl Mounts {
    fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            made: Default::default(),
        }
    }

    /// Bind-mounts `src` at `root/dst` (recursively for /dev, /proc and /sys, read-only for
    /// the toolchain, which the check must not change).
    fn bind(&self, src: &Path, dst: &str, writable: bool) -> Result<()> {
        let at = self.root.join(dst);
        fs::create_dir_all(&at)?;
        deps::sh(Command::new("mount").arg("--rbind").arg(src).arg(&at))?;
        self.made.borrow_mut().push(at.clone());
        if writable {
            deps::sh(Command::new("mount").args(["--make-rslave"]).arg(&at))?;
        } else {
            deps::sh(
                Command::new("mount")
                    .args(["-o", "remount,bind,ro"])
                    .arg(&at),
            )?;
        }
        Ok(())
    }

    fn tmpfs(&self, dst: &str) -> Result<()> {
        let at = self.root.join(dst);
        fs::create_dir_all(&at)?;
        deps::sh(
            Command::new("mount")
                .args(["-t", "tmpfs", "tmpfs"])
                .arg(&at),
        )?;
        self.made.borrow_mut().push(at);
        Ok(())
    }

    /// Unmounts everything it mounted (lazily, so a process left behind cannot keep the
    /// host's /dev or /proc mounted under the root filesystem).
    fn undo(&self) {
        for at in self.made.borrow_mut().drain(..).rev() {
            let _ = Command::new("umount").arg("-R").arg("-l").arg(&at).status();
        }
    }
}
