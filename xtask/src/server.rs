//! What `cargo xtask pgbench` and `cargo xtask iperf3` share: the Debian guest booted on
//! `ftvm pair` (passt forwarding a host port to the guest's server), on one plain `ftvm run`,
//! or on `qemu-system-riscv64` (with the same passt) for the reference, and the SIGKILL of
//! whichever process is the primary, timed until the other side says it is live.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::guest;

/// OpenSBI's fw_jump, from Debian's opensbi package.
const FW_JUMP: &str = "/usr/lib/riscv64-linux-gnu/opensbi/generic/fw_jump.bin";

/// What runs the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum On {
    /// A fault-tolerant pair (`ftvm pair`), the primary killed `--kills` times.
    Ft,
    /// One plain VM (`ftvm run`).
    Alone,
    /// QEMU TCG, the reference.
    Qemu,
}

/// The options every server workload takes.
#[derive(clap::Args)]
pub struct Common {
    /// Never install anything; only say what is missing.
    #[arg(long)]
    pub no_install: bool,
    /// What runs the guest.
    #[arg(long, value_enum, default_value_t = On::Ft)]
    pub on: On,
    /// SIGKILLs of the primary during the run (with `--on ft`).
    #[arg(long, default_value_t = 2)]
    pub kills: u32,
    /// `--disk-mode` of the pair: shared or non-shared.
    #[arg(long, default_value = "shared")]
    pub disk_mode: String,
    /// `--disk-reads` of the pair: log or own.
    #[arg(long, default_value = "log")]
    pub disk_reads: String,
    /// Guest RAM.
    #[arg(long, default_value = "512M")]
    pub mem: String,
    /// The MTU of the guest's network card (ftvm's `--mtu`; QEMU's virtio-net `host_mtu`);
    /// default: each machine's own (ftvm: passt's 65520; QEMU: whatever passt announces).
    #[arg(long, value_name = "BYTES")]
    pub mtu: Option<u16>,
}

/// Kills the processes it holds when dropped, however the run ends: each was started as the
/// leader of its own process group ([`own_group`]), and the whole group goes, so the VMs and
/// passt that `ftvm pair` started do not outlive a run that failed.
struct Kids(Vec<Child>);

impl Drop for Kids {
    fn drop(&mut self) {
        for c in &mut self.0 {
            if let Ok(pid) = i32::try_from(c.id()) {
                // SAFETY: kill(2) on the process group of a child this run started (own_group).
                unsafe { libc::kill(-pid, libc::SIGKILL) };
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts `c` as the leader of a new process group, for [`Kids`] to kill as a whole, and
/// killed by the kernel if this process dies first (a SIGTERM or SIGKILL runs no `Drop`).
/// (Children are started from the main thread only, whose end is the process's: the
/// parent-death signal fires when the spawning thread ends.)
pub(crate) fn own_group(c: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec only prctl, which is async-signal-safe; nothing is
    // allocated or locked.
    unsafe {
        c.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    c.process_group(0)
}

/// The guest, booting: its processes, the host port forwarded to its server, and the
/// consoles of the pair's two sides (with `--on ft`).
pub struct Booted {
    _kids: Kids,
    /// The host port.
    pub port: u16,
    /// The two sides' console addresses (`--on ft`), or none.
    pub consoles: Vec<String>,
    ftvm: PathBuf,
    work: PathBuf,
}

impl Drop for Booted {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.work);
        let _ = std::fs::remove_file(passt_sock());
    }
}

impl Booted {
    /// A directory for the run's files, removed with the guest.
    pub fn work(&self) -> &Path {
        &self.work
    }

    /// SIGKILLs the primary (see [`kill_primary`]); returns the time until the other side was
    /// live.
    pub fn kill_primary(&self, k: u32, of: u32) -> Result<Duration> {
        kill_primary(
            &self.ftvm,
            &self.consoles,
            &self.work.join("console-key"),
            k,
            of,
        )
    }
}

/// passt's socket for `--on alone`: directly in the temporary directory, because passt runs
/// as nobody once started as root and cannot create its socket in a directory only root may
/// write (it says it bound the socket, but none appears).
fn passt_sock() -> PathBuf {
    std::env::temp_dir().join(format!("ftvm-passt-{}.sock", std::process::id()))
}

/// Starts passt with host port `port` forwarded to `guest_port` and waits for its socket.
fn start_passt(kids: &mut Kids, port: u16, guest_port: u16) -> Result<PathBuf> {
    let sock = passt_sock();
    let _ = std::fs::remove_file(&sock);
    let passt = own_group(&mut Command::new("passt"))
        .args(["-f", "-q", "-s"])
        .arg(&sock)
        .args(["-t", &format!("{port}:{guest_port}")])
        .stdout(Stdio::null())
        .spawn()
        .context("starting passt (apt-get install passt)")?;
    kids.0.push(passt);
    let t = Instant::now();
    while !sock.exists() {
        if t.elapsed() > Duration::from_secs(10) {
            bail!("passt did not create {}", sock.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(sock)
}

/// Checks the options, installs what is missing, builds the guest and ftvm, and boots the
/// guest with a host port forwarded to `guest_port`. `task` names the command in messages.
pub fn boot(a: &Common, task: &str, guest_port: u16) -> Result<Booted> {
    if a.disk_mode != "shared" && a.disk_mode != "non-shared" {
        bail!("--disk-mode {:?}: shared or non-shared", a.disk_mode);
    }
    if a.disk_reads != "log" && a.disk_reads != "own" {
        bail!("--disk-reads {:?}: log or own", a.disk_reads);
    }
    let opts = guest::BuildOptions {
        install_deps: !a.no_install && guest::deps::is_root(),
        ..Default::default()
    };
    use guest::deps::Group;
    let mut groups = vec![Group::Build, Group::Guest, Group::Run, Group::Debian];
    if a.on == On::Qemu {
        groups.push(Group::Reference);
    }
    guest::deps::require_groups(&groups, opts.install_deps).with_context(|| {
        format!("`cargo xtask {task}` needs these Debian packages (debian-packages.txt)")
    })?;
    let g = guest::debian::build(&opts, guest::debian::DEFAULT_MIRROR)?;
    let ftvm = crate::demo::build_ftvm()?;
    let work = std::env::temp_dir().join(format!("ftvm-{task}-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let r = start(a, &g, &ftvm, &work, guest_port);
    if r.is_err() {
        let _ = std::fs::remove_dir_all(&work);
    }
    r
}

fn start(
    a: &Common,
    g: &guest::debian::DebianPaths,
    ftvm: &Path,
    work: &Path,
    guest_port: u16,
) -> Result<Booted> {
    let disk = work.join("rootfs.img");
    copy_sparse(&g.rootfs, &disk)?;
    let port = guestctl::free_port();
    let mut kids = Kids(Vec::new());
    let mut consoles = Vec::new();
    match a.on {
        On::Qemu => {
            // The same host end as ftvm's (passt), so that the machines are compared, not
            // passt and QEMU's slirp.
            let sock = start_passt(&mut kids, port, guest_port)?;
            let c = own_group(&mut Command::new("qemu-system-riscv64"))
                .args(["-M", "virt", "-m", &a.mem, "-nographic", "-bios", FW_JUMP])
                .arg("-kernel")
                .arg(&g.kernel)
                .args(["-append", guest::debian::APPEND, "-drive"])
                .arg(format!("file={},format=raw,if=none,id=d0", disk.display()))
                .args(["-device", "virtio-blk-device,drive=d0", "-netdev"])
                .arg(format!(
                    "stream,id=n0,server=off,addr.type=unix,addr.path={}",
                    sock.display()
                ))
                .arg("-device")
                .arg(match a.mtu {
                    Some(m) => format!("virtio-net-device,netdev=n0,host_mtu={m}"),
                    None => "virtio-net-device,netdev=n0".into(),
                })
                .args(["-device", "virtio-rng-device"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .context("starting qemu-system-riscv64")?;
            kids.0.push(c);
        }
        On::Alone => {
            let sock = start_passt(&mut kids, port, guest_port)?;
            let vm = own_group(&mut Command::new(ftvm))
                .arg("run")
                .args(vm_args(a, g, &disk))
                .arg("--netdev")
                .arg(format!("stream,path={}", sock.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .context("starting ftvm run")?;
            kids.0.push(vm);
        }
        On::Ft => {
            consoles = vec![
                format!("127.0.0.1:{}", guestctl::free_port()),
                format!("127.0.0.1:{}", guestctl::free_port()),
            ];
            // The operators' secret, to ask the pair's consoles for their status.
            let console_key = work.join("console-key");
            let mut k = [0u8; 32];
            std::fs::File::open("/dev/urandom")
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut k))
                .context("reading /dev/urandom")?;
            std::fs::write(&console_key, k).context("writing the console key")?;
            let pair = own_group(&mut Command::new(ftvm))
                .arg("pair")
                .arg("--console-key-file")
                .arg(&console_key)
                // This run's own arbiter: claims left by other pairs of a VM named alike
                // (the default /tmp/ftvm-arbiter) are not this run's business.
                .arg("--arbiter")
                .arg(format!("file:{}", work.join("arbiter").display()))
                .args(vm_args(a, g, &disk))
                .args(["--forward", &format!("{port}:{guest_port}")])
                .args(["--disk-mode", &a.disk_mode, "--disk-reads", &a.disk_reads])
                .args(["--channel", &format!("127.0.0.1:{}", guestctl::free_port())])
                .args(["--primary-console", &consoles[0]])
                .args(["--backup-console", &consoles[1]])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .context("starting ftvm pair")?;
            kids.0.push(pair);
        }
    }
    Ok(Booted {
        _kids: kids,
        port,
        consoles,
        ftvm: ftvm.to_path_buf(),
        work: work.to_path_buf(),
    })
}

/// SIGKILLs the side whose status says it is the primary, and waits until the other one says
/// so (it went live). Returns that time. Then waits (bounded) until the pair has protected
/// the new primary again, so that the next kill finds a backup.
pub fn kill_primary(
    ftvm: &Path,
    consoles: &[String],
    console_key: &Path,
    k: u32,
    of: u32,
) -> Result<Duration> {
    let status = |addr: &str| -> Option<String> {
        let out = Command::new(ftvm)
            .args(["status", addr])
            .arg("--console-key-file")
            .arg(console_key)
            .stderr(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let field = |text: &str, key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}: ")).map(str::to_string))
    };
    let (victim, pid) = consoles
        .iter()
        .find_map(|c| {
            let st = status(c)?;
            (field(&st, "role").as_deref() == Some("primary"))
                .then(|| (c.clone(), field(&st, "pid")))
        })
        .context("no side says it is the primary")?;
    let pid = pid.context("the primary's status has no pid")?;
    eprintln!("xtask: SIGKILL to the primary (pid {pid}, {victim}), kill {k} of {of}");
    let t = Instant::now();
    let st = Command::new("kill").args(["-9", &pid]).status()?;
    if !st.success() {
        bail!("kill -9 {pid} failed");
    }
    let other = consoles
        .iter()
        .find(|c| **c != victim)
        .context("one console")?;
    let live = loop {
        if status(other).is_some_and(|s| field(&s, "role").as_deref() == Some("primary")) {
            break t.elapsed();
        }
        if t.elapsed() > Duration::from_secs(60) {
            bail!("the backup did not go live within 60 s of the kill");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!(
        "xtask: the backup is primary {:.0} ms after the kill",
        live.as_secs_f64() * 1e3
    );
    // The pair starts a new backup on the dead side's console address and protects again.
    while t.elapsed() < Duration::from_secs(180) {
        if status(other).is_some_and(|s| field(&s, "protected").as_deref() == Some("yes")) {
            eprintln!(
                "xtask: protected again {:.1} s after the kill",
                t.elapsed().as_secs_f64()
            );
            return Ok(live);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("xtask: not protected again within 180 s of the kill; going on");
    Ok(live)
}

/// The machine's options for `ftvm run` and `ftvm pair`: firmware, RAM, the Debian kernel and
/// command line, the disk.
fn vm_args(a: &Common, g: &guest::debian::DebianPaths, disk: &Path) -> Vec<String> {
    let mtu = a.mtu.map(|m| vec!["--mtu".to_string(), m.to_string()]);
    let mut v = vec![
        "--bios".into(),
        FW_JUMP.into(),
        "--mem".into(),
        a.mem.clone(),
        "--kernel".into(),
        g.kernel.display().to_string(),
        "--append".into(),
        guest::debian::APPEND.into(),
        "--drive".into(),
        format!("file={}", disk.display()),
    ];
    v.extend(mtu.unwrap_or_default());
    v
}

/// Copies a disk image keeping its holes (most of the image is free space).
fn copy_sparse(from: &Path, to: &PathBuf) -> Result<()> {
    let st = Command::new("cp")
        .arg("--sparse=always")
        .arg(from)
        .arg(to)
        .status()
        .context("running cp")?;
    if !st.success() {
        bail!("copying {} failed", from.display());
    }
    Ok(())
}
