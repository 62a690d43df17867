//! The Debian guest (`cargo xtask guest --debian`): a Debian 13 "trixie" riscv64 userland with
//! PostgreSQL and iperf3, on an ext4 disk image the guest boots from (`root=/dev/vda`).
//!
//! The root filesystem comes from Debian's packages only, by `mmdebstrap` for a foreign
//! architecture: the package scripts run under `qemu-riscv64-static`, registered with the
//! kernel's binfmt_misc (which this recipe mounts and registers itself, as root). The kernel is
//! the one of the busybox guest (`kernel.rs`): its fragment carries what this userland needs
//! (ext4, System V IPC, file locks).
//!
//! PID 1 is our own small init (`guests/init/init.c`), not systemd: systemd wants cgroups,
//! a dozen more kernel options and tens of seconds of emulated boot, and our init already does
//! what the tests rely on (network up, "ftvm-guest: ready", a shell on the console, a clean
//! power-off). It runs `/etc/ftvm/rc` (`guests/debian/rc`), which starts PostgreSQL and
//! iperf3. Our C programs (`guests/programs`) are in `/usr/local/bin` as in the busybox guest.
//!
//! The cache key covers this recipe's inputs (package list, suite, our files, the kernel), not
//! the versions the mirror serves on the day: a published image is kept until an input
//! changes; `packages.txt` beside it lists the versions it got.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::cache::{Cache, Key};
use super::{deps, programs, run, BuildOptions};

/// Bump when the recipe changes what it produces although no input file changed.
const RECIPE_VERSION: &str = "ftvm-debian-1";

/// Bump when the bootstrap stage changes what it produces.
const ROOTFS_VERSION: &str = "ftvm-debian-root-1";

/// How mmdebstrap is run: as root, for riscv64, the smallest base, without documentation and
/// translations (a third of the size), retrying downloads.
const MMDEBSTRAP_OPTIONS: &[&str] = &[
    "--mode=root",
    "--arch=riscv64",
    "--variant=minbase",
    "--aptopt=Acquire::Retries \"3\"",
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
];

/// The Debian release the guest runs (the first one with an official riscv64 port).
const SUITE: &str = "trixie";

/// The packages on top of `minbase`: the services and what our rc script calls.
const PACKAGES: &[&str] = &["postgresql", "iperf3", "iproute2", "procps"];

/// Free space left in the image beyond what the files take, for the database and logs.
const FREE_MIB: u64 = 768;

/// Fixed ext4 identity, so the same tree gives the same image.
const DISK_UUID: &str = "6674766d-6465-6269-616e-000000000001";
const FAKE_TIME: &str = "1700000000";

/// Where a built Debian guest lives (never modified once published: copy `rootfs` before a VM
/// writes to it).
#[derive(Clone, Debug)]
pub struct DebianPaths {
    /// `debian-<hash>` directory holding everything below.
    pub dir: PathBuf,
    /// The kernel (the same `Image` as the busybox guest's).
    pub kernel: PathBuf,
    /// The ext4 root filesystem image: boot with `root=/dev/vda rw ip=dhcp`.
    pub rootfs: PathBuf,
}

impl DebianPaths {
    fn in_dir(dir: PathBuf) -> Self {
        Self {
            kernel: dir.join("Image"),
            rootfs: dir.join("rootfs.img"),
            dir,
        }
    }
}

/// Where the Debian guest's packages come from unless `--mirror` says otherwise.
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

/// The kernel command line the Debian guest boots with.
pub const APPEND: &str =
    "console=ttyS0 root=/dev/vda rw rootfstype=ext4 ip=dhcp init=/sbin/ftvm-init";

/// Builds the Debian guest, or finds it in the cache. `mirror` is a Debian archive URL.
pub fn build(opts: &BuildOptions, mirror: &str) -> Result<DebianPaths> {
    let started = Instant::now();
    // The kernel and our programs come from the busybox guest's recipe (cached).
    let guest = super::build(opts)?;
    let root = match &opts.cache {
        Some(p) => p.clone(),
        None => super::cache::default_root()?,
    };
    let repo = super::repo_root();
    let sources = programs::Sources::collect(&repo)?;
    let rc = read(&repo, "guests/debian/rc")?;
    let pg_conf = read(&repo, "guests/debian/postgresql.conf")?;
    let kernel = fs::read(&guest.kernel).context("reading the guest kernel")?;

    let mut cache = Cache::new(&root)?;
    let rootfs_key = rootfs_key();
    let mut key = Key::new("debian", RECIPE_VERSION);
    key.add_key(&rootfs_key);
    key.add_bytes("guests/debian/rc", &rc);
    key.add_bytes("guests/debian/postgresql.conf", &pg_conf);
    key.add_bytes("Image", &kernel);
    sources.add_to(&mut key);
    key.add_text("free MiB", &FREE_MIB.to_string());

    let paths = DebianPaths::in_dir(cache.entry_path(&key));
    if paths.dir.is_dir() {
        println!("debian guest: cached ({})", paths.dir.display());
        return Ok(paths);
    }
    if !deps::is_root() {
        bail!(
            "the Debian guest is built with mmdebstrap for riscv64 and its files belong to \
             several users, which needs root: run `cargo xtask guest --debian` as root once; \
             the image is then cached in {}",
            root.display()
        );
    }
    deps::require_groups(
        &[deps::Group::Guest, deps::Group::Debian],
        opts.install_deps,
    )
    .context("the Debian guest recipe needs these Debian packages (debian-packages.txt)")?;
    cache.lock()?;
    if paths.dir.is_dir() {
        println!(
            "debian guest: cached, built meanwhile ({})",
            paths.dir.display()
        );
        return Ok(paths);
    }
    let tarball = rootfs(&cache, &rootfs_key, mirror, opts)?.join("root.tar");

    let tree = cache.tmp_dir("debian-root")?;
    let untar = Command::new("tar")
        .arg("-xf")
        .arg(&tarball)
        .arg("-C")
        .arg(&tree)
        .args(["--numeric-owner", "--same-permissions", "--xattrs"])
        .status()
        .context("running tar")?;
    if !untar.success() {
        bail!("unpacking {} failed", tarball.display());
    }
    let bin_dir = cache.tmp_dir("debian-programs")?;
    let bins = programs::compile(&sources, &bin_dir, opts)?;
    customize(&tree, &bins, &rc, &pg_conf)?;

    let dir = cache.publish(&key, |out| {
        fs::write(out.join("packages.txt"), installed_versions(&tree)?)?;
        image(&tree, &out.join("rootfs.img"))?;
        fs::copy(&guest.kernel, out.join("Image")).context("copying Image")?;
        fs::write(out.join("append.txt"), format!("{APPEND}\n"))?;
        fs::write(out.join("inputs.txt"), key.manifest())?;
        Ok(())
    })?;
    fs::remove_dir_all(&tree).with_context(|| format!("removing {}", tree.display()))?;
    fs::remove_dir_all(&bin_dir)?;
    println!("debian guest: built in {}", run::elapsed(started));
    Ok(DebianPaths::in_dir(dir))
}

/// The key of the distribution's part: what mmdebstrap is asked for.
fn rootfs_key() -> Key {
    let mut key = Key::new("debian-root", ROOTFS_VERSION);
    key.add_text("suite", SUITE);
    key.add_text("packages", &PACKAGES.join(" "));
    key.add_text("mmdebstrap options", &MMDEBSTRAP_OPTIONS.join(" "));
    key
}

/// The distribution's part, `root.tar` from mmdebstrap, in a cache entry of its own: editing
/// our files or the kernel rebuilds the image in seconds instead of bootstrapping again.
fn rootfs(cache: &Cache, key: &Key, mirror: &str, opts: &BuildOptions) -> Result<PathBuf> {
    let dst = cache.entry_path(key);
    if dst.is_dir() {
        println!("debian: root filesystem cached ({})", dst.display());
        return Ok(dst);
    }
    register_binfmt()?;
    let log = cache.log_path("debian-mmdebstrap");
    cache.publish(key, |out| {
        let mut mm = Command::new("mmdebstrap");
        mm.args(MMDEBSTRAP_OPTIONS)
            .arg(format!("--include={}", PACKAGES.join(",")))
            .arg(SUITE)
            .arg(out.join("root.tar"))
            .arg(mirror);
        run::logged(
            &mut mm,
            &format!(
                "debian: mmdebstrap {SUITE} riscv64 (a few minutes; longer on a busy machine)"
            ),
            &log,
            opts.verbose,
        )
    })
}

fn read(repo: &Path, rel: &str) -> Result<Vec<u8>> {
    fs::read(repo.join(rel)).with_context(|| format!("reading {rel}"))
}

/// Mounts binfmt_misc if it is not, and registers `qemu-riscv64-static` with the `F` flag (the
/// interpreter is opened at registration, so it works inside the chroot too).
fn register_binfmt() -> Result<()> {
    let dir = Path::new("/proc/sys/fs/binfmt_misc");
    if !dir.join("register").exists() {
        let st = Command::new("mount")
            .args(["-t", "binfmt_misc", "binfmt_misc"])
            .arg(dir)
            .status()
            .context("running mount")?;
        if !st.success() {
            bail!("cannot mount binfmt_misc on {}: mmdebstrap needs it to run riscv64 package scripts", dir.display());
        }
    }
    if dir.join("qemu-riscv64").exists() {
        return Ok(());
    }
    let conf = "/usr/lib/binfmt.d/qemu-riscv64.conf";
    let line = fs::read_to_string(conf)
        .with_context(|| format!("reading {conf} (apt-get install qemu-user-static)"))?;
    fs::write(dir.join("register"), line.trim())
        .context("registering qemu-riscv64 with binfmt_misc")?;
    println!("debian: registered qemu-riscv64-static with binfmt_misc");
    Ok(())
}

/// Our init, rc script, programs and PostgreSQL settings; a hostname; no root password.
fn customize(tree: &Path, bins: &[programs::Binary], rc: &[u8], pg_conf: &[u8]) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let exec = |p: &Path| fs::set_permissions(p, fs::Permissions::from_mode(0o755));
    for b in bins {
        let dest = if b.dest == "init" {
            tree.join("sbin/ftvm-init")
        } else {
            let name = Path::new(&b.dest).file_name().context("program name")?;
            tree.join("usr/local/bin").join(name)
        };
        fs::copy(&b.path, &dest).with_context(|| format!("installing {}", dest.display()))?;
        exec(&dest)?;
    }
    let rc_path = tree.join("etc/ftvm/rc");
    fs::create_dir_all(rc_path.parent().unwrap_or(tree))?;
    fs::write(&rc_path, rc)?;
    exec(&rc_path)?;
    fs::write(tree.join("etc/hostname"), "ftvm-debian\n")?;
    fs::write(tree.join("etc/fstab"), "/dev/vda / ext4 rw,relatime 0 1\n")?;
    // resolv.conf is written at boot from the DHCP answer (guests/debian/rc).
    let resolv = tree.join("etc/resolv.conf");
    let _ = fs::remove_file(&resolv);
    std::os::unix::fs::symlink("/run/resolv.conf", &resolv)?;

    let mut clusters = 0;
    for e in fs::read_dir(tree.join("etc/postgresql"))
        .context("PostgreSQL is not installed in the tree")?
    {
        let main = e?.path().join("main");
        if !main.is_dir() {
            continue;
        }
        fs::create_dir_all(main.join("conf.d"))?;
        fs::write(main.join("conf.d/ftvm.conf"), pg_conf)?;
        let hba = main.join("pg_hba.conf");
        let mut text =
            fs::read_to_string(&hba).with_context(|| format!("reading {}", hba.display()))?;
        text.push_str("\n# ftvm: clients reach the guest through passt or a host-only tap.\nhost all all 0.0.0.0/0 trust\n");
        fs::write(&hba, text)?;
        clusters += 1;
    }
    if clusters == 0 {
        bail!("the postgresql package made no cluster under /etc/postgresql/*/main");
    }
    Ok(())
}

/// `package version` lines from the tree's dpkg status.
fn installed_versions(tree: &Path) -> Result<String> {
    let status = fs::read_to_string(tree.join("var/lib/dpkg/status"))?;
    let mut out = String::new();
    for stanza in status.split("\n\n") {
        let field = |k: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_string()))
        };
        if let (Some(p), Some(v)) = (field("Package:"), field("Version:")) {
            out.push_str(&format!("{p} {v}\n"));
        }
    }
    Ok(out)
}

/// Writes the ext4 image: the tree's size, plus room for the database.
fn image(tree: &Path, out: &Path) -> Result<()> {
    let used_kib: u64 = run::capture(
        Command::new("du")
            .args(["-sk", "--apparent-size"])
            .arg(tree),
    )?
    .split_whitespace()
    .next()
    .and_then(|n| n.parse().ok())
    .context("reading du's output")?;
    // ext4's metadata and the slack of small files take about a third more than the bytes.
    let mib = used_kib * 4 / 3 / 1024 + FREE_MIB;
    let mut mk = Command::new("mke2fs");
    mk.env("E2FSPROGS_FAKE_TIME", FAKE_TIME)
        .args([
            "-q",
            "-F",
            "-t",
            "ext4",
            "-L",
            "ftvm-debian",
            "-U",
            DISK_UUID,
        ])
        .arg("-E")
        .arg(format!("hash_seed={DISK_UUID}"))
        .arg("-d")
        .arg(tree)
        .arg(out)
        .arg(format!("{mib}M"));
    run::capture(&mut mk).context("mke2fs")?;
    run::capture(Command::new("e2fsck").arg("-fn").arg(out)).context("e2fsck of rootfs.img")?;
    println!("debian: rootfs.img is {mib} MiB");
    Ok(())
}
