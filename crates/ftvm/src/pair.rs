//! `ftvm pair`: a primary and its backup as two processes on this machine (they talk only
//! through the network and the arbiter, as on two hosts), and a console client that follows a
//! failover. With `--demo N` it shows the point of it all: a counter service in the guest, a
//! client that increments it, SIGKILL to the primary after N increments, and the check that
//! the values the client receives are 1, 2, 3, ... with none repeated or skipped.

use crate::ft_cmd::{NetArgs, PairArgs};
use crate::run::VmArgs;
use anyhow::{bail, Context};
use cluster::policy::{self, PairAction, PairView, Probe};
use ft::console::client::ConsoleClient;
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Options of `ftvm pair`.
#[derive(clap::Args, Debug)]
pub struct PairCmdArgs {
    /// The machine.
    #[command(flatten)]
    pub vm: VmArgs,
    /// The network card.
    #[command(flatten)]
    pub net: NetArgs,
    /// The pair.
    #[command(flatten)]
    pub pair: PairArgs,
    /// The backup's channel address.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:7100")]
    pub channel: String,
    /// The primary's console endpoint.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:7101")]
    pub primary_console: String,
    /// The backup's console endpoint.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:7102")]
    pub backup_console: String,
    /// Run the demo: start a counter service in the guest, drive it with a client, kill the
    /// primary (SIGKILL) after this many increments, and check that the client sees 1, 2, 3,
    /// ... with none repeated or skipped through the failover.
    #[arg(long, value_name = "N")]
    pub demo: Option<u64>,
    /// Start passt (unprivileged user-mode networking) for the guest's card, forwarding this
    /// host's 127.0.0.1:PORT to the guest's port 7000 and PORT+1 to its port 80; with --demo,
    /// the counter is then driven over one TCP connection through passt instead of the
    /// console, and the guest's web server (busybox httpd) is asked before and after the
    /// failover.
    #[arg(long, value_name = "PORT")]
    pub passt: Option<u16>,
    /// Start passt (as --passt does) and forward this host's 127.0.0.1:HOST_PORT to the guest's
    /// GUEST_PORT, e.g. `--forward 5432:5432` for PostgreSQL in the Debian guest. Repeatable;
    /// with --passt, added to its two forwards.
    #[arg(long, value_name = "HOST_PORT:GUEST_PORT", value_parser = parse_forward)]
    pub forward: Vec<(u16, u16)>,
    /// Increments in the demo (after the kill as many again).
    #[arg(long, value_name = "N", default_value_t = 200)]
    pub demo_total: u64,
    /// Kills in the demo: the primary is SIGKILLed after every --demo N increments, this many
    /// times; after each failover the pair protects the new primary again by itself (a new
    /// backup from a snapshot of the running guest).
    #[arg(long, value_name = "K", default_value_t = 1)]
    pub demo_kills: u32,
    /// A shell command the demo starts in the guest's background first (a load for the
    /// guest to carry through the failovers and re-protections, e.g. `cpubench 1000`).
    #[arg(long, value_name = "CMD")]
    pub demo_load: Option<String>,
}

/// `ftvm pair`.
pub fn main(a: PairCmdArgs) -> i32 {
    crate::ft_cmd::exit("pair", run(a))
}

fn vm_flags(v: &VmArgs) -> Vec<String> {
    let mut f = vec![
        "--bios".into(),
        v.bios.clone(),
        "--append".into(),
        v.append.clone(),
        "--mem".into(),
        v.mem.to_string(),
        "--smp".into(),
        v.smp.to_string(),
    ];
    if let Some(k) = &v.kernel {
        f.extend(["--kernel".into(), k.display().to_string()]);
    }
    if let Some(i) = &v.initrd {
        f.extend(["--initrd".into(), i.display().to_string()]);
    }
    for d in &v.drive {
        f.extend(["--drive".into(), d.to_string()]);
    }
    f
}

fn net_flags(n: &NetArgs) -> Vec<String> {
    let mut f = Vec::new();
    use hostnet::{NetdevConfig, StreamAddr};
    if let Some(nd) = &n.netdev {
        let spec = match nd {
            NetdevConfig::Stream(StreamAddr::Unix(p)) => format!("stream,path={}", p.display()),
            NetdevConfig::Stream(StreamAddr::Tcp(a)) => format!("stream,addr={a}"),
            NetdevConfig::Tap(name) => format!("tap,ifname={name}"),
        };
        f.extend(["--netdev".into(), spec]);
    }
    if let Some(m) = n.mac {
        let hex: Vec<String> = m.iter().map(|b| format!("{b:02x}")).collect();
        f.extend(["--mac".into(), hex.join(":")]);
    }
    if let Some(m) = n.mtu {
        f.extend(["--mtu".into(), m.to_string()]);
    }
    f
}

/// The key files of a pair: the channel's and the operators' (and the read-only status
/// secret's).
struct KeyFiles {
    channel: std::path::PathBuf,
    console: std::path::PathBuf,
    status: std::path::PathBuf,
}

fn pair_flags(p: &PairArgs, keys: &KeyFiles) -> Vec<String> {
    let key = &keys.channel;
    vec![
        "--console-key-file".into(),
        keys.console.display().to_string(),
        "--status-key-file".into(),
        keys.status.display().to_string(),
        "--vm".into(),
        p.vm.clone(),
        "--key-file".into(),
        key.display().to_string(),
        "--arbiter".into(),
        p.arbiter.clone(),
        "--heartbeat-ms".into(),
        p.heartbeat_ms.to_string(),
        "--failure-timeout-ms".into(),
        p.failure_timeout_ms.to_string(),
        "--max-lag-ms".into(),
        p.max_lag_ms.to_string(),
        "--arbiter-patience-ms".into(),
        p.arbiter_patience_ms.to_string(),
        "--log-buffer".into(),
        p.log_buffer.to_string(),
        "--disk-mode".into(),
        p.disk_mode.clone(),
        "--disk-reads".into(),
        p.disk_reads.clone(),
        "--log-level".into(),
        p.log_level.clone(),
        "--log-format".into(),
        p.log_format.clone(),
        "--clone-bandwidth".into(),
        p.clone_bandwidth.to_string(),
    ]
}

/// A command for one side of the pair: this process's engine, and killed by the kernel if the
/// pair dies without cleaning up (SIGKILL), so that no VM outlives its pair. (The pair starts
/// its VMs from its main thread only, whose end is the process's: the parent-death signal
/// fires when the spawning thread ends.)
fn vm_process(exe: &std::path::Path) -> Command {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(exe);
    c.env(crate::ENGINE_ENV, crate::engine().name());
    let parent = std::process::id();
    // SAFETY: between fork and exec only async-signal-safe calls (prctl, getppid); nothing is
    // allocated or locked.
    unsafe {
        c.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The pair may have died before the call: nothing would signal us then.
            // (A raw OS error: nothing may be allocated here.)
            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    c
}

/// Kills the children when the pair ends, however it ends.
struct Children(Vec<(String, Child)>);

impl Drop for Children {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Restores redundancy by itself: when the primary's process has died and the backup has
/// gone live, starts a new backup (on a new channel port, the dead process's console address
/// and disk images) and has the live VM protected by it (`CONTROL protect`, see
/// `ftvm control protect`). On one machine this is what a cluster agent does across hosts.
struct Healer {
    exe: std::path::PathBuf,
    /// Flags every backup gets (network, pair settings).
    common: Vec<String>,
    /// The machine flags of the process in each role now (`[primary, backup]`): with
    /// non-shared disks each has images of its own, which a new backup takes over.
    vm: [Vec<String>; 2],
    /// The console endpoints of the process in each role now.
    consoles: [SocketAddr; 2],
    /// Where new backups listen.
    host: std::net::IpAddr,
    /// Re-protections so far.
    done: u32,
    /// The operators' secret (the supervisor is one).
    secret: ft::console::Secret,
}

impl Healer {
    /// If the primary is gone and the backup runs (live by now), protects it again.
    /// Returns how long that took, from noticing.
    fn heal(&mut self, kids: &mut Children) -> anyhow::Result<Option<Duration>> {
        // A child that cannot be waited for counts as gone (and not as ended well).
        let exit = |kids: &mut Children, role: &str| -> Option<bool> {
            match kids.0.iter_mut().find(|(n, _)| n == role) {
                None => Some(false),
                Some((_, c)) => match c.try_wait() {
                    Ok(None) => None,
                    Ok(Some(s)) => Some(s.success()),
                    Err(_) => Some(false),
                },
            }
        };
        let mut view = PairView {
            primary_exit: exit(kids, "primary"),
            backup_runs: exit(kids, "backup").is_none(),
            backup_live: Probe::NotAsked,
        };
        loop {
            match policy::decide_pair(view) {
                PairAction::Nothing => return Ok(None),
                PairAction::NeedBackupStatus => {
                    view.backup_live = Probe::Known(
                        ft::console::request(
                            &self.consoles[1].to_string(),
                            &self.secret,
                            "STATUS",
                            Duration::from_secs(2),
                        )
                        .is_ok_and(|st| ft::status::field(&st, "role") == Some("primary")),
                    );
                }
                PairAction::Reprotect => break,
            }
        }
        let t0 = Instant::now();
        // The live VM is the primary now; the dead one's place goes to the new backup.
        kids.0.retain(|(n, _)| n != "primary");
        for (n, _) in &mut kids.0 {
            if n == "backup" {
                *n = "primary".into();
            }
        }
        self.vm.swap(0, 1);
        self.consoles.swap(0, 1);
        let listen = SocketAddr::new(
            self.host,
            std::net::TcpListener::bind((self.host, 0))?
                .local_addr()?
                .port(),
        );
        self.done += 1;
        eprintln!(
            "ftvm pair: the primary is gone; starting backup #{} on {listen} to protect the new primary again",
            self.done
        );
        let child = vm_process(&self.exe)
            .arg("backup")
            .args(&self.vm[1])
            .args(&self.common)
            .args(["--listen", &listen.to_string()])
            .args(["--console", &self.consoles[1].to_string()])
            .spawn()
            .context("cannot start a new backup")?;
        kids.0.push(("backup".into(), child));
        let said = crate::ft_cmd::protect_by(self.consoles[0], &self.secret, listen)?;
        eprintln!(
            "ftvm pair: protected again in {:.0} ms ({said})",
            t0.elapsed().as_secs_f64() * 1e3
        );
        Ok(Some(t0.elapsed()))
    }
}

/// Runs the pair; returns the exit code.
pub fn run(a: PairCmdArgs) -> anyhow::Result<i32> {
    let dir = std::env::temp_dir().join(format!("ftvm-pair-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // Each secret from its flag, or made here: the operators' is never the channel's.
    let made = |given: &Option<std::path::PathBuf>, name: &str| match given {
        Some(k) => Ok(k.clone()),
        None => {
            let k = dir.join(name);
            write_key(&k).map(|()| k)
        }
    };
    let key = KeyFiles {
        channel: made(&a.pair.key_file, "key")?,
        console: made(&a.pair.console_key_file, "console-key")?,
        status: made(&a.pair.status_key_file, "status-key")?,
    };
    eprintln!(
        "ftvm pair: operators' console secret {} (ftvm console/control/status/migrate \
         --console-key-file {0}), read-only status secret {} (ftvm status --status-key-file \
         {1}); the channel's key {} stays with the pair",
        key.console.display(),
        key.status.display(),
        key.channel.display()
    );
    let secret = ft::console::Secret::operator(ft::Key::from_file(&key.console)?);
    let exe = std::env::current_exe().context("cannot find the ftvm executable")?;
    let mut kids = Children(Vec::new());
    let mut a = a;
    if a.passt.is_some() || !a.forward.is_empty() {
        let mut forwards = a.forward.clone();
        if let Some(port) = a.passt {
            let Some(http) = port.checked_add(1) else {
                bail!("--passt {port}: PORT+1 is forwarded to the guest's web server, so PORT must be below 65535");
            };
            forwards.extend([(port, 7000), (http, 80)]);
        }
        // The network process outlives either VM: the clients' TCP flows live in it.
        // Directly in the temporary directory: passt does not create its socket in a
        // subdirectory made by root (it drops to an unprivileged user first).
        let sock =
            std::env::temp_dir().join(format!("ftvm-pair-{}-passt.sock", std::process::id()));
        let _ = std::fs::remove_file(&sock);
        // passt's own messages, for the error if it does not start.
        let log = sock.with_extension("log");
        let child = Command::new("passt")
            .args(["-f", "-q", "-s"])
            .arg(&sock)
            .args(
                forwards
                    .iter()
                    .flat_map(|(h, g)| ["-t".to_string(), format!("{h}:{g}")]),
            )
            .stdout(std::process::Stdio::null())
            .stderr(
                std::fs::File::create(&log)
                    .with_context(|| format!("creating {}", log.display()))?,
            )
            .spawn()
            .context("cannot start passt (apt-get install passt)")?;
        kids.0.push(("passt".into(), child));
        let t0 = Instant::now();
        while !sock.exists() {
            let exited = kids
                .0
                .last_mut()
                .and_then(|(_, c)| c.try_wait().ok().flatten());
            if exited.is_some() || t0.elapsed() > Duration::from_secs(10) {
                let said = std::fs::read_to_string(&log).unwrap_or_default();
                bail!(
                    "passt did not create {} ({}); passt said: {}",
                    sock.display(),
                    match exited {
                        Some(st) => format!("it exited: {st}"),
                        None => "in 10 s".into(),
                    },
                    said.trim()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_file(&log);
        a.net.netdev = Some(hostnet::NetdevConfig::Stream(hostnet::StreamAddr::Unix(
            sock,
        )));
        let said: Vec<String> = forwards
            .iter()
            .map(|(h, g)| format!("127.0.0.1:{h} to the guest's port {g}"))
            .collect();
        eprintln!("ftvm pair: passt forwards {}", said.join(", "));
    }
    // Non-shared disks: the backup gets images of its own (filled from the primary's at start).
    let mut backup_vm = a.vm.clone();
    if a.pair.disk_mode == "non-shared" {
        for (i, d) in backup_vm.drive.iter_mut().enumerate() {
            let own = dir.join(format!("backup-disk-{i}.img"));
            std::fs::File::create(&own)
                .with_context(|| format!("cannot create {}", own.display()))?;
            d.path = own;
        }
    }
    let net = net_flags(&a.net);
    let mut backup = vm_process(&exe);
    backup
        .arg("backup")
        .args(vm_flags(&backup_vm))
        .args(&net)
        .args(pair_flags(&a.pair, &key))
        .args(["--listen", &a.channel, "--console", &a.backup_console]);
    kids.0.push((
        "backup".into(),
        backup.spawn().context("cannot start the backup")?,
    ));
    let mut primary = vm_process(&exe);
    primary
        .arg("primary")
        .args(vm_flags(&a.vm))
        .args(&net)
        .args(pair_flags(&a.pair, &key))
        .args(["--peer", &a.channel, "--console", &a.primary_console]);
    kids.0.push((
        "primary".into(),
        primary.spawn().context("cannot start the primary")?,
    ));
    let eps = [&a.primary_console, &a.backup_console]
        .iter()
        .map(|e| {
            e.to_socket_addrs()
                .ok()
                .and_then(|mut x| x.next())
                .with_context(|| format!("{e} is not HOST:PORT"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut healer = Healer {
        exe: exe.clone(),
        common: [net.clone(), pair_flags(&a.pair, &key)].concat(),
        vm: [vm_flags(&a.vm), vm_flags(&backup_vm)],
        consoles: [eps[0], eps[1]],
        host: a
            .channel
            .to_socket_addrs()
            .ok()
            .and_then(|mut x| x.next())
            .map_or(std::net::Ipv4Addr::LOCALHOST.into(), |x| x.ip()),
        done: 0,
        secret: secret.clone(),
    };
    let mut client = ConsoleClient::new(eps, secret);
    client.reconnect_for = Duration::from_secs(60);
    client.connect()?;
    let code = match a.demo {
        Some(kill_after) => {
            let plan = Plan {
                kill_after,
                kills: a.demo_kills.max(1),
                total: a
                    .demo_total
                    .max(kill_after * u64::from(a.demo_kills.max(1)) + 1),
                load: a.demo_load.clone(),
            };
            match a.passt {
                Some(port) => demo_tcp(&mut client, &mut kids, &mut healer, port, &plan)?,
                None => demo(&mut client, &mut kids, &mut healer, &plan)?,
            }
        }
        None => interactive(&mut client, &mut kids, &mut healer)?,
    };
    let _ = std::fs::remove_dir_all(&dir);
    if let Some(hostnet::NetdevConfig::Stream(hostnet::StreamAddr::Unix(sock))) = &a.net.netdev {
        if a.passt.is_some() || !a.forward.is_empty() {
            let _ = std::fs::remove_file(sock);
        }
    }
    Ok(code)
}

/// `HOST_PORT:GUEST_PORT` of `--forward`.
fn parse_forward(s: &str) -> Result<(u16, u16), String> {
    let (h, g) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not HOST_PORT:GUEST_PORT"))?;
    let port = |p: &str| match p.parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{p:?} in {s:?} is not a port (1-65535)")),
    };
    Ok((port(h)?, port(g)?))
}

fn write_key(path: &std::path::Path) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(ft::Key::random().bytes())?;
    Ok(())
}

/// Whether a VM process of the pair still runs.
fn alive(kids: &mut Children) -> bool {
    kids.0
        .iter_mut()
        .filter(|(n, _)| n != "passt")
        .any(|(_, c)| matches!(c.try_wait(), Ok(None)))
}

fn interactive(
    c: &mut ConsoleClient,
    kids: &mut Children,
    healer: &mut Healer,
) -> anyhow::Result<i32> {
    eprintln!("ftvm pair: console attached (the primary's, then the backup's after a failover); `poweroff` in the guest ends the pair");
    let rx = crate::ft_cmd::stdin_pump();
    while alive(kids) {
        if let Err(e) = healer.heal(kids) {
            eprintln!("ftvm pair: re-protection failed: {e:#}; the VM runs on alone");
        }
        while let Ok(b) = rx.try_recv() {
            c.send(&b)?;
        }
        let out = match c.read_some(Duration::from_millis(20)) {
            Ok(o) => o,
            Err(_) if !alive(kids) => break,
            Err(e) => return Err(e.into()),
        };
        if !out.is_empty() {
            use std::io::Write;
            let mut so = std::io::stdout().lock();
            so.write_all(&out)?;
            so.flush()?;
        }
    }
    Ok(0)
}

/// Waits for a shell on the console: types a command until its answer comes back.
pub fn wait_for_shell(c: &mut ConsoleClient, within: Duration) -> anyhow::Result<()> {
    let t0 = Instant::now();
    while t0.elapsed() < within {
        // The answer differs from the typed line, so an echo is not taken for it.
        c.send(b"echo READY-$((6*7))\n")?;
        if c.read_line_until(|l| l.ends_with("READY-42"), Duration::from_secs(3))?
            .is_some()
        {
            return Ok(());
        }
    }
    bail!("no shell on the console within {within:?}")
}

/// The counter service of the demo, in the guest's shell: answers each line with `n=K`.
pub const COUNTER: &[u8] = b"stty -echo; i=0; while read l; do i=$((i+1)); echo \"n=$i\"; done\n";

/// What the demo does: `total` increments, a SIGKILL of the primary after every
/// `kill_after` of them, `kills` times (re-protected by itself in between).
struct Plan {
    kill_after: u64,
    kills: u32,
    total: u64,
    /// Started in the guest's background before the counter.
    load: Option<String>,
}

impl Plan {
    /// Starts the load, if any, in the guest's background.
    fn start_load(&self, c: &mut ConsoleClient) -> anyhow::Result<()> {
        if let Some(l) = &self.load {
            eprintln!("ftvm pair: demo: load in the guest: {l}");
            c.send(format!("{l} >/dev/null 2>&1 &\n").as_bytes())?;
        }
        Ok(())
    }
}

/// Increments the counter `plan.total` times through `ask` (which sends one increment and
/// returns the answer), SIGKILLs the primary after every `plan.kill_after` (`plan.kills`
/// times; after each failover the healer protects the new primary again), and checks that
/// the answers are 1, 2, 3, ... with none repeated or skipped.
fn count(
    kids: &mut Children,
    healer: &mut Healer,
    plan: &Plan,
    over: &str,
    mut ask: impl FnMut(u64) -> anyhow::Result<u64>,
) -> anyhow::Result<()> {
    let mut killed_at: Option<Instant> = None;
    let mut kills = 0u32;
    let mut failovers: Vec<Duration> = Vec::new();
    let mut reprotections: Vec<Duration> = Vec::new();
    let t0 = Instant::now();
    for k in 1..=plan.total {
        let v = ask(k)?;
        if v != k {
            bail!("invariant broken: increment {k} was answered {v} (expected {k})");
        }
        if let Some(at) = killed_at.take() {
            failovers.push(at.elapsed());
            eprintln!(
                "ftvm pair: demo: the new primary answered {v}, {:.0} ms after the kill",
                at.elapsed().as_secs_f64() * 1e3
            );
            // Redundancy comes back by itself, while the client carries on.
            if let Some(d) = healer.heal(kids)? {
                reprotections.push(at.elapsed().max(d));
            }
        }
        if kills < plan.kills && k == plan.kill_after * u64::from(kills + 1) {
            let (_, p) = kids
                .0
                .iter_mut()
                .find(|(n, _)| n == "primary")
                .context("no primary")?;
            p.kill().context("cannot kill the primary")?;
            let _ = p.wait();
            kills += 1;
            killed_at = Some(Instant::now());
            eprintln!(
                "ftvm pair: demo: SIGKILL to the primary after value {v} (kill {kills} of {})",
                plan.kills
            );
        }
    }
    let ms = |v: &[Duration]| {
        v.iter()
            .map(|d| format!("{:.0}", d.as_secs_f64() * 1e3))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "demo: {} increments over {over} answered 1..={} in order, none repeated or skipped, through {kills} SIGKILL(s) of the primary (after every {}); first answer of the new primary [{}] ms after each kill; protected again [{}] ms after each kill; {:.1} s in all",
        plan.total,
        plan.total,
        plan.kill_after,
        ms(&failovers),
        ms(&reprotections),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The demo over the console: the counter is a loop in the guest's shell.
fn demo(
    c: &mut ConsoleClient,
    kids: &mut Children,
    healer: &mut Healer,
    plan: &Plan,
) -> anyhow::Result<i32> {
    eprintln!("ftvm pair: demo: waiting for the guest's shell");
    wait_for_shell(c, Duration::from_secs(180))?;
    plan.start_load(c)?;
    c.send(COUNTER)?;
    count(kids, healer, plan, "the console", |k| {
        c.send(b"inc\n")?;
        let line = c
            .read_line_until(|l| l.starts_with("n="), Duration::from_secs(60))?
            .with_context(|| format!("no answer to increment {k}"))?;
        line[2..]
            .trim()
            .parse()
            .with_context(|| format!("bad answer {line:?}"))
    })?;
    c.send(b"\x04")?;
    power_off(c, kids)
}

/// The demo over TCP: the guest's counter service (`counter 7000`) behind passt, one TCP
/// connection from this host through the failover.
fn demo_tcp(
    c: &mut ConsoleClient,
    kids: &mut Children,
    healer: &mut Healer,
    port: u16,
    plan: &Plan,
) -> anyhow::Result<i32> {
    use std::io::{BufRead, BufReader, Write};
    eprintln!("ftvm pair: demo: waiting for the guest's shell");
    wait_for_shell(c, Duration::from_secs(180))?;
    plan.start_load(c)?;
    c.send(b"udhcpc -i eth0 -n -q -t 10 >/dev/null 2>&1; counter 7000 >/dev/null 2>&1 &\n")?;
    c.send(WEB_SERVER)?;
    let t0 = Instant::now();
    let (mut r, mut w) = loop {
        if t0.elapsed() > Duration::from_secs(60) {
            bail!("the guest's counter service did not answer on 127.0.0.1:{port}");
        }
        std::thread::sleep(Duration::from_millis(300));
        let Ok(s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            continue;
        };
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let r = BufReader::new(s.try_clone()?);
        // The first increment doubles as the probe: passt accepts before the guest does.
        let mut probe = (r, s);
        let mut line = String::new();
        if probe.1.write_all(b"inc\n").is_ok() && probe.0.read_line(&mut line).is_ok_and(|n| n > 0)
        {
            if line.trim() != "1" {
                bail!("the counter's first answer was {line:?}");
            }
            break probe;
        }
    };
    eprintln!("ftvm pair: demo: one TCP connection to the guest's counter through passt (127.0.0.1:{port})");
    let web = port + 1;
    let before = http_get(web, "/cgi-bin/hello")?;
    eprintln!("ftvm pair: demo: GET http://127.0.0.1:{web}/cgi-bin/hello (busybox httpd in the guest): {before}");
    count(kids, healer, plan, "one TCP connection", |k| {
        if k == 1 {
            return Ok(1);
        }
        w.write_all(b"inc\n")?;
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            bail!("the TCP connection was closed at increment {k}");
        }
        line.trim()
            .parse()
            .with_context(|| format!("bad answer {line:?}"))
    })?;
    let after = http_get(web, "/cgi-bin/hello")?;
    println!("demo: the guest's web server answered GET /cgi-bin/hello before the failover ({before}) and after it, from the new primary ({after})");
    power_off(c, kids)
}

/// busybox httpd on the guest's port 80: a page with the guest's uptime (a CGI script), which
/// goes on growing through a failover since the guest does not restart.
const WEB_SERVER: &[u8] = b"mkdir -p /www/cgi-bin && printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho hello from the ftvm guest, up $(cut -d. -f1 /proc/uptime) s\\n' > /www/cgi-bin/hello && chmod +x /www/cgi-bin/hello && httpd -p 80 -h /www\n";

/// One HTTP/1.0 GET through passt; the body's first line (the status must be 200).
fn http_get(port: u16, path: &str) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let t0 = Instant::now();
    loop {
        let attempt = || -> anyhow::Result<String> {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
            s.set_read_timeout(Some(Duration::from_secs(30)))?;
            s.write_all(format!("GET {path} HTTP/1.0\r\nHost: guest\r\n\r\n").as_bytes())?;
            let mut reply = String::new();
            s.read_to_string(&mut reply)?;
            let status = reply.lines().next().unwrap_or_default().to_string();
            if !status.contains(" 200") {
                bail!("the guest's web server answered {status:?}");
            }
            // The body's first line follows the first empty line.
            let mut lines = reply.lines().skip_while(|l| !l.trim().is_empty()).skip(1);
            Ok(lines.next().unwrap_or_default().trim().to_string())
        };
        match attempt() {
            Ok(b) => return Ok(b),
            // The server may still be starting (passt accepts before the guest does).
            Err(_) if t0.elapsed() < Duration::from_secs(30) => {
                std::thread::sleep(Duration::from_millis(300))
            }
            Err(e) => return Err(e.context(format!("GET http://127.0.0.1:{port}{path}"))),
        }
    }
}

/// Powers the guest off from its shell and waits for the pair to end.
fn power_off(c: &mut ConsoleClient, kids: &mut Children) -> anyhow::Result<i32> {
    // A fresh connection to the live VM: the one kept since the start may lead to a process
    // killed since, where a write still seems to succeed.
    c.connect()?;
    c.send(b"poweroff\n")?;
    let t1 = Instant::now();
    while alive(kids) && t1.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(0)
}
