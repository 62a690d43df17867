//! `cargo xtask guest`: the guest image recipe.
//!
//! Builds, from Debian packages only, the three files a test boots on the `virt` board: a Linux
//! `Image` (from `linux-source-6.1` plus `guests/linux/ftvm.config`), an `initramfs.cpio.gz`
//! (static busybox from Debian's source package, our `/init` and demo programs from `guests/`)
//! and a small ext2 `disk.img`. Everything lands in a cache outside the clone, keyed by a hash of
//! every input, so a second run with unchanged inputs costs a second; see `guests/README.md`.
//!
//! The work is split by stage: [`deps`] (Debian packages, `deb-src`), [`cache`] (keys, lock,
//! atomic publication), [`kernel`], [`busybox`], [`programs`] (our C code), [`image`] (cpio and
//! ext2), [`qemu`] (boot check) and [`run`] (running long commands with progress and a log).

mod busybox;
mod cache;
pub mod debian;
pub mod deps;
mod image;
mod kernel;
mod programs;
mod qemu;
mod run;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};

/// Version of the last stage (programs, initramfs, disk): bump it when the recipe changes what
/// that stage produces, so the cache rebuilds it although no input file changed. The kernel and
/// busybox stages have their own (`kernel::RECIPE_VERSION`, `busybox::RECIPE_VERSION`); a bump
/// there reaches this key too, because it includes theirs.
const RECIPE_VERSION: &str = "ftvm-guest-2";

/// Options of `cargo xtask guest`.
#[derive(clap::Args)]
pub struct Args {
    /// As root: install missing Debian packages and add a `deb-src` entry for the configured
    /// Debian mirror (needed by `apt-get source busybox`). Without it, the recipe only says what
    /// is missing.
    #[arg(long)]
    install_deps: bool,
    /// Cache directory (default: `$FTVM_CACHE`, else `$XDG_CACHE_HOME/ftvm`, else `~/.cache/ftvm`).
    #[arg(long)]
    cache: Option<PathBuf>,
    /// Parallel jobs for `make`.
    #[arg(long, short, default_value_t = 2)]
    jobs: u32,
    /// Show the full output of `make` instead of a progress line every few seconds.
    #[arg(long, short)]
    verbose: bool,
    /// After building, boot the images in `qemu-system-riscv64` with both OpenSBI firmwares and
    /// check the shell, the disk, the entropy device and power-off.
    #[arg(long)]
    check_qemu: bool,
    /// Build the Debian guest instead: Debian 13 (trixie) riscv64 with PostgreSQL and iperf3
    /// on an ext4 root disk (as root: mmdebstrap under qemu-user; a few minutes, then cached).
    #[arg(long)]
    debian: bool,
    /// The Debian archive the Debian guest's packages come from.
    #[arg(long, default_value = debian::DEFAULT_MIRROR)]
    mirror: String,
}

/// How to build; the library form of [`Args`] for callers inside xtask (benchmarks, tests).
#[derive(Clone, Debug)]
pub struct BuildOptions {
    /// Cache root; `None` picks the default (see [`cache::default_root`]).
    pub cache: Option<PathBuf>,
    /// Install missing packages and the `deb-src` entry (root only).
    pub install_deps: bool,
    /// Parallel jobs for `make`.
    pub jobs: u32,
    /// Stream build output instead of progress lines.
    pub verbose: bool,
}

impl Default for BuildOptions {
    fn default() -> Self {
        Self {
            cache: None,
            install_deps: false,
            jobs: 2,
            verbose: false,
        }
    }
}

/// Where a built guest lives. All files sit in one cache directory that is never modified once
/// published: copy `disk` before letting a VM write to it.
#[derive(Clone, Debug)]
pub struct GuestPaths {
    /// `guest-<hash>` directory holding everything below.
    pub dir: PathBuf,
    /// Linux `arch/riscv/boot/Image`, loaded at RAM base + 2 MiB.
    pub kernel: PathBuf,
    /// gzip-compressed `newc` cpio archive with busybox, `/init` and the demo programs.
    pub initramfs: PathBuf,
    /// Raw ext2 image containing `hello.txt`.
    pub disk: PathBuf,
}

impl GuestPaths {
    fn in_dir(dir: PathBuf) -> Self {
        Self {
            kernel: dir.join("Image"),
            initramfs: dir.join("initramfs.cpio.gz"),
            disk: dir.join("disk.img"),
            dir,
        }
    }
}

/// Runs `cargo xtask guest`.
pub fn main(a: Args) -> Result<()> {
    let opts = BuildOptions {
        cache: a.cache,
        install_deps: a.install_deps,
        jobs: a.jobs.max(1),
        verbose: a.verbose,
    };
    if a.debian {
        let d = debian::build(&opts, &a.mirror)?;
        println!("kernel     {}", d.kernel.display());
        println!("rootfs     {}", d.rootfs.display());
        println!("append     {}", debian::APPEND);
        if a.check_qemu {
            deps::require_qemu(opts.install_deps)?;
            qemu::check_debian(&d, opts.verbose)?;
        }
        return Ok(());
    }
    let paths = build(&opts)?;
    println!("kernel     {}", paths.kernel.display());
    println!("initramfs  {}", paths.initramfs.display());
    println!("disk       {}", paths.disk.display());
    if a.check_qemu {
        deps::require_qemu(opts.install_deps)?;
        qemu::check(&paths, opts.verbose)?;
    }
    Ok(())
}

/// Builds the guest, or finds it in the cache, and returns where its files are.
pub fn build(opts: &BuildOptions) -> Result<GuestPaths> {
    let started = Instant::now();
    let root = match &opts.cache {
        Some(p) => p.clone(),
        None => cache::default_root()?,
    };
    deps::require_packages(opts.install_deps)?;
    let mut cache = cache::Cache::new(&root)?;
    let repo = repo_root();
    let toolchain = deps::toolchain_versions()?;

    let kernel_in = kernel::Inputs::collect(&repo, &toolchain)?;
    let busybox_in = busybox::Inputs::collect(&toolchain, opts.install_deps)?;
    let sources = programs::Sources::collect(&repo)?;

    let mut key = cache::Key::new("guest", RECIPE_VERSION);
    key.add_key(&kernel_in.key());
    key.add_key(&busybox_in.key());
    sources.add_to(&mut key);
    key.add_text("toolchain", &toolchain);
    key.add_text("e2fsprogs", &deps::package_version("e2fsprogs")?);
    key.add_text("gzip", &deps::package_version("gzip")?);
    image::add_to_key(&mut key);

    let paths = GuestPaths::in_dir(cache.entry_path(&key));
    // Published entries are complete (see `cache`), so looking one up needs no lock.
    if paths.dir.is_dir() {
        println!("guest: cached ({})", paths.dir.display());
        return Ok(paths);
    }
    cache.lock()?;
    if paths.dir.is_dir() {
        println!(
            "guest: cached, built meanwhile by another run ({})",
            paths.dir.display()
        );
        return Ok(paths);
    }

    let kernel = kernel::build(&cache, &kernel_in, opts)?;
    let busybox = busybox::build(&cache, &busybox_in, opts)?;
    let dir = cache.publish(&key, |out| {
        let bin_dir = cache.tmp_dir("programs")?;
        let bins = programs::compile(&sources, &bin_dir, opts)?;
        step("initramfs", || {
            image::initramfs(&busybox, &bins, &sources, &out.join("initramfs.cpio.gz"))
        })?;
        std::fs::remove_dir_all(&bin_dir)?;
        step("disk", || image::disk(&out.join("disk.img")))?;
        std::fs::copy(kernel.join("Image"), out.join("Image")).context("copying Image")?;
        std::fs::copy(kernel.join("config"), out.join("kernel.config"))?;
        std::fs::copy(busybox.join("config"), out.join("busybox.config"))?;
        std::fs::write(out.join("inputs.txt"), key.manifest())?;
        Ok(())
    })?;
    println!("guest: built in {}", run::elapsed(started));
    Ok(GuestPaths::in_dir(dir))
}

/// Runs a short stage, printing its name and duration.
fn step<T>(name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let t = Instant::now();
    let r = f().with_context(|| format!("{name} failed"))?;
    println!("guest: {name} done ({})", run::elapsed(t));
    Ok(r)
}

/// The workspace root, where `guests/` lives; xtask always runs from this source tree.
/// The repository's top directory (where this xtask was built from).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_path_buf()
}
