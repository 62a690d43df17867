//! `cargo xtask pgbench`: PostgreSQL in the Debian guest, driven by the host's own `pgbench`
//! through the guest's network, as a user would run it.
//!
//! `--on ft` (the default) runs `ftvm pair` (passt forwarding a host port to the guest's 5432)
//! and SIGKILLs whichever process is the primary `--kills` times, evenly spread over the run;
//! the pair protects the new primary again by itself after each failover. `--on alone` runs
//! one plain `ftvm run`, `--on qemu` the same guest on `qemu-system-riscv64` (user-mode
//! network), for the ratios in `docs/ft-benchmarks.md`. Every run ends with the check of
//! [`guestctl::pgbench`]: every transaction pgbench saw committed is in the table, none failed,
//! no client lost its connection.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use guestctl::pgbench::{self, Bench};

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

/// Options of `cargo xtask pgbench`.
#[derive(clap::Args)]
pub struct Args {
    /// Never install anything; only say what is missing.
    #[arg(long)]
    pub no_install: bool,
    /// What runs the guest.
    #[arg(long, value_enum, default_value_t = On::Ft)]
    pub on: On,
    /// SIGKILLs of the primary during the run (with `--on ft`).
    #[arg(long, default_value_t = 2)]
    pub kills: u32,
    /// pgbench's run time.
    #[arg(long, default_value_t = 90)]
    pub seconds: u64,
    /// pgbench's client connections.
    #[arg(long, default_value_t = 4)]
    pub clients: u32,
    /// `--disk-mode` of the pair: shared or non-shared.
    #[arg(long, default_value = "shared")]
    pub disk_mode: String,
    /// `--disk-reads` of the pair: log or own.
    #[arg(long, default_value = "log")]
    pub disk_reads: String,
    /// Guest RAM.
    #[arg(long, default_value = "512M")]
    pub mem: String,
}

/// Kills the processes it holds when dropped, however the run ends.
struct Kids(Vec<Child>);

impl Drop for Kids {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs the task.
pub fn main(a: Args) -> Result<()> {
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
    guest::deps::require_groups(&groups, opts.install_deps)
        .context("pgbench under FT needs these Debian packages (debian-packages.txt)")?;
    let g = guest::debian::build(&opts, guest::debian::DEFAULT_MIRROR)?;
    let ftvm = crate::demo::build_ftvm()?;
    let work = std::env::temp_dir().join(format!("ftvm-pgbench-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let result = run(&a, &g, &ftvm, &work);
    let _ = std::fs::remove_dir_all(&work);
    result
}

fn run(a: &Args, g: &guest::debian::DebianPaths, ftvm: &Path, work: &Path) -> Result<()> {
    let disk = work.join("rootfs.img");
    copy_sparse(&g.rootfs, &disk)?;
    let port = guestctl::free_port();
    let mut kids = Kids(Vec::new());
    let mut consoles = Vec::new();
    match a.on {
        On::Qemu => {
            let c = Command::new("qemu-system-riscv64")
                .args(["-M", "virt", "-m", &a.mem, "-nographic", "-bios", FW_JUMP])
                .arg("-kernel")
                .arg(&g.kernel)
                .args(["-append", guest::debian::APPEND, "-drive"])
                .arg(format!("file={},format=raw,if=none,id=d0", disk.display()))
                .args(["-device", "virtio-blk-device,drive=d0", "-netdev"])
                .arg(format!("user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:5432"))
                .args(["-device", "virtio-net-device,netdev=n0"])
                .args(["-device", "virtio-rng-device"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .context("starting qemu-system-riscv64")?;
            kids.0.push(c);
        }
        On::Alone => {
            let sock = work.join("passt.sock");
            let passt = Command::new("passt")
                .args(["-f", "-q", "-s"])
                .arg(&sock)
                .args(["-t", &format!("{port}:5432")])
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
            let vm = Command::new(ftvm)
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
            let pair = Command::new(ftvm)
                .arg("pair")
                .arg("--console-key-file")
                .arg(&console_key)
                .args(vm_args(a, g, &disk))
                .args(["--forward", &format!("{port}:5432")])
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
    let t0 = Instant::now();
    eprintln!("xtask pgbench: booting the Debian guest ({:?}); waiting for PostgreSQL on 127.0.0.1:{port}", a.on);
    pgbench::wait_ready(port, Duration::from_secs(900))?;
    eprintln!(
        "xtask pgbench: PostgreSQL answers after {:.1} s; pgbench, {} clients, {} s",
        t0.elapsed().as_secs_f64(),
        a.clients,
        a.seconds
    );
    let bench = Bench::start(port, a.clients, a.seconds, work)?;
    let mut failovers = Vec::new();
    if a.on == On::Ft {
        for k in 1..=a.kills {
            let at = Duration::from_secs(a.seconds * u64::from(k) / u64::from(a.kills + 1));
            while bench.started().elapsed() < at {
                std::thread::sleep(Duration::from_millis(100));
            }
            failovers.push(kill_primary(
                ftvm,
                &consoles,
                &work.join("console-key"),
                k,
                a.kills,
            )?);
        }
    }
    let r = bench.finish()?;
    println!("{}", r.stdout.trim());
    let gaps: Vec<String> = failovers
        .iter()
        .map(|d| format!("{:.0} ms", d.as_secs_f64() * 1e3))
        .collect();
    println!(
        "xtask pgbench: on {:?}: {:.1} tps, {:.1} ms average latency; {} transactions committed, {} rows in the table, {} lost; failed: {}; {} failover(s) (kill → the other side primary: {})",
        a.on,
        r.tps.unwrap_or(0.0),
        r.latency_ms.unwrap_or(0.0),
        r.committed,
        r.rows,
        r.lost.len(),
        r.failed.map_or("?".into(), |n| n.to_string()),
        failovers.len(),
        if gaps.is_empty() { "none".into() } else { gaps.join(", ") }
    );
    if !r.all_good() {
        bail!(
            "the check failed: pgbench {}; {} committed transactions missing from the table{}",
            if r.success { "succeeded" } else { "failed" },
            r.lost.len(),
            if r.connection_trouble() {
                format!("; a client lost its connection: {}", r.stderr.trim())
            } else {
                String::new()
            }
        );
    }
    println!("xtask pgbench: every committed transaction is in the table; no error, no reset");
    Ok(())
}

/// SIGKILLs the side whose status says it is the primary, and waits until the other one says
/// so (it went live). Returns that time. Then waits (bounded) until the pair has protected
/// the new primary again, so that the next kill finds a backup.
fn kill_primary(
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
    eprintln!("xtask pgbench: SIGKILL to the primary (pid {pid}, {victim}), kill {k} of {of}");
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
        "xtask pgbench: the backup is primary {:.0} ms after the kill",
        live.as_secs_f64() * 1e3
    );
    // The pair starts a new backup on the dead side's console address and protects again.
    while t.elapsed() < Duration::from_secs(180) {
        if status(other).is_some_and(|s| field(&s, "protected").as_deref() == Some("yes")) {
            eprintln!(
                "xtask pgbench: protected again {:.1} s after the kill",
                t.elapsed().as_secs_f64()
            );
            return Ok(live);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("xtask pgbench: not protected again within 180 s of the kill; going on");
    Ok(live)
}

/// The machine's options for `ftvm run` and `ftvm pair`: firmware, RAM, the Debian kernel and
/// command line, the disk.
fn vm_args(a: &Args, g: &guest::debian::DebianPaths, disk: &Path) -> Vec<String> {
    vec![
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
    ]
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
