//! `ftvm status`, `ftvm console`, `ftvm control`, `ftvm migrate`: talking to the running
//! processes of a fault-tolerant pair (see `crates/ft`), and the flags the pair's commands share
//! (`PairArgs`, `NetArgs`). The processes themselves are started by `ftvm primary` and `ftvm
//! backup` (module `roles`) and `ftvm pair` (module `pair`). This module uses neither, so the
//! commands that start VMs can use it without a cycle.
//!
//! Exit codes: 0 when the guest or an operator powered the VM off, 2 on errors of input or
//! setup, 3 when this side stopped itself (it lost the arbiter, or the arbiter was unreachable).

use anyhow::{bail, Context};
use ft::console::client::ConsoleClient;
use ft::{HeartbeatConfig, Key, PairConfig};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Settings of the pair, the same on both sides.
#[derive(clap::Args, Debug, Clone)]
pub struct PairArgs {
    /// The VM's name: the arbiter's key ([A-Za-z0-9._-], at most 64).
    #[arg(long, default_value = "vm0")]
    pub vm: String,
    /// The shared key of the logging channel (at least 16 bytes; e.g. `head -c 32
    /// /dev/urandom > key`). `ftvm pair` makes one if none is given.
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// The operators' secret (at least 16 bytes) that the console endpoint admits: console,
    /// control, status (`ftvm console/status/control/migrate --console-key-file`). Without
    /// it, only hosts holding the channel key (given as their --console-key-file) are
    /// admitted. `ftvm pair` makes one.
    #[arg(long, value_name = "FILE")]
    pub console_key_file: Option<PathBuf>,
    /// A read-only secret the console endpoint also admits, for `STATUS` only (`ftvm status
    /// --status-key-file`).
    #[arg(long, value_name = "FILE")]
    pub status_key_file: Option<PathBuf>,
    /// Where split-brain is settled: `file:DIR` (a directory both hosts share) or
    /// `etcd:URL[,URL...]`.
    #[arg(long, value_name = "SPEC", default_value = "file:/tmp/ftvm-arbiter")]
    pub arbiter: String,
    /// Time between two heartbeats, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 50)]
    pub heartbeat_ms: u64,
    /// Silence after which the peer counts as gone, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 500)]
    pub failure_timeout_ms: u64,
    /// Backup lag (guest time, milliseconds) beyond which the primary is slowed down.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub max_lag_ms: u64,
    /// How long a side that lost its peer keeps asking an arbiter that does not answer (its
    /// storage out) before it stops, in milliseconds; nothing runs meanwhile.
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    pub arbiter_patience_ms: u64,
    /// Unacknowledged log beyond which the primary stalls (K, M, G suffixes).
    #[arg(long, value_name = "SIZE", default_value = "64M", value_parser = machine::parse_size)]
    pub log_buffer: u64,
    /// `shared`: both sides reach the same disk images (a file both hosts see, NFS, ...), only
    /// the live primary writes, its writes wait for the backup's acknowledgement. `non-shared`:
    /// each side has its own images (the backup's are overwritten from the primary's at
    /// start), the backup applies the writes it replays.
    #[arg(long, value_name = "MODE", default_value = "shared", value_parser = ["shared", "non-shared"])]
    pub disk_mode: String,
    /// Shared disks: `log`: the data of every disk read travels in the log. `own`: the log
    /// carries only each read's digest and the backup reads the shared disk itself (the
    /// primary's writes then also wait until the backup has replayed past them). Both sides
    /// must agree.
    #[arg(long, value_name = "MODE", default_value = "log", value_parser = ["log", "own"])]
    pub disk_reads: String,
    /// The least important events logged to stderr.
    #[arg(long, value_name = "LEVEL", default_value = "info", value_parser = ["error", "warn", "info", "debug", "trace"])]
    pub log_level: String,
    /// How events are logged: `text` (a line each) or `json` (one object per line, with the
    /// events' fields, for log collectors).
    #[arg(long, value_name = "FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// The most a live clone (re-protection by a new backup) puts on the link, in bytes per
    /// second after compression (K, M, G suffixes; 0: as fast as the link goes), so that
    /// cloning leaves room for other traffic.
    #[arg(long, value_name = "SIZE", default_value = "0", value_parser = machine::parse_size)]
    pub clone_bandwidth: u64,
}

impl PairArgs {
    /// Sends this process's events (the `tracing` ones of the pair) to stderr.
    pub fn init_logging(&self) {
        let level: tracing_subscriber::filter::LevelFilter = self
            .log_level
            .parse()
            .unwrap_or(tracing_subscriber::filter::LevelFilter::INFO);
        let b = tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_max_level(level)
            .with_target(false)
            .with_ansi(false);
        // A second subscriber (a test calling this twice) is refused: the first stays.
        let _ = if self.log_format == "json" {
            b.json().try_init()
        } else {
            b.try_init()
        };
    }
}

impl PairArgs {
    /// `--disk-reads own`, checked against the disk mode.
    pub fn disk_reads_own(&self) -> anyhow::Result<bool> {
        let own = self.disk_reads == "own";
        if own && self.disk_mode == "non-shared" {
            bail!(
                "--disk-reads own needs shared disks (--disk-mode shared): with non-shared disks \
                 each side has its own images"
            );
        }
        Ok(own)
    }
}

/// The guest's network card (`ftvm run`; for a pair, each side's own host network: the backup
/// joins it at go-live).
#[derive(clap::Args, Debug, Clone)]
pub struct NetArgs {
    /// A virtio network card on a host network: stream,path=SOCKET (QEMU's -netdev stream
    /// framing on a unix socket, e.g. passt's), stream,addr=HOST:PORT, or tap,ifname=NAME.
    #[arg(
        long,
        value_name = "stream,path=SOCK|stream,addr=HOST:PORT|tap,ifname=NAME"
    )]
    pub netdev: Option<hostnet::NetdevConfig>,
    /// The network card's MAC address (both sides must agree; the primary's counts).
    #[arg(long, value_name = "MAC", requires = "netdev", value_parser = machine::parse_mac)]
    pub mac: Option<[u8; 6]>,
    /// The MTU the card offers the guest, 68 to 65520 (default 1500). passt takes 65520, which
    /// is several times faster, but a guest-to-host TCP stream has been seen to stall for good
    /// after a second failover with it (docs/ft-benchmarks.md). Both sides of a pair use the
    /// primary's. Without a network card it has no effect.
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u16).range(68..=65520))]
    pub mtu: Option<u16>,
}

impl NetArgs {
    /// Puts the card into `cfg` (with the default MAC and MTU unless given).
    pub fn apply(&self, cfg: &mut machine::MachineConfig) {
        if self.netdev.is_some() {
            let mut net = machine::NetConfig::default();
            if let Some(mtu) = self.mtu {
                net.mtu = mtu;
            }
            if let Some(mac) = self.mac {
                net.mac = mac;
            }
            cfg.net = Some(net);
        }
    }
}

/// The secret a client of the console endpoints presents.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ClientKeyArgs {
    /// The operator's secret the VM's processes were given (their --console-key-file; for a
    /// pair started without one, the channel's --key-file).
    #[arg(long, value_name = "FILE")]
    pub console_key_file: Option<PathBuf>,
    /// The read-only status secret (their --status-key-file): `ftvm status` only.
    #[arg(long, value_name = "FILE", conflicts_with = "console_key_file")]
    pub status_key_file: Option<PathBuf>,
}

impl ClientKeyArgs {
    /// The secret to present; `status_ok`: whether the status-only one will do.
    pub fn secret(&self, status_ok: bool) -> anyhow::Result<ft::console::Secret> {
        match (&self.console_key_file, &self.status_key_file) {
            (Some(f), _) => Ok(ft::console::Secret::operator(Key::from_file(f)?)),
            (None, Some(f)) if status_ok => Ok(ft::console::Secret {
                key: Key::from_file(f)?,
                access: ft::console::Access::Status,
            }),
            (None, Some(_)) => {
                bail!("--status-key-file allows `ftvm status` only: give --console-key-file")
            }
            (None, None) => bail!(
                "--console-key-file is required{}: the VM's console endpoints admit only \
                 holders of its console secret (`ftvm pair` prints where it is)",
                if status_ok {
                    " (or --status-key-file)"
                } else {
                    ""
                }
            ),
        }
    }
}

/// Options of `ftvm status`, `ftvm console`.
#[derive(clap::Args, Debug)]
pub struct EndpointArgs {
    /// Console endpoints (primary first), comma-separated.
    #[arg(
        value_name = "HOST:PORT[,HOST:PORT]",
        default_value = "127.0.0.1:7101,127.0.0.1:7102"
    )]
    pub endpoints: String,
    /// The secret.
    #[command(flatten)]
    pub keys: ClientKeyArgs,
}

/// Options of `ftvm control`.
#[derive(clap::Args, Debug)]
pub struct ControlArgs {
    /// pause, resume, poweroff, or protect (a VM running alone: be protected again by the
    /// backup waiting at --backup; waits until it is).
    #[arg(value_parser = ["pause", "resume", "poweroff", "protect"])]
    pub op: String,
    /// The primary's console endpoint.
    #[arg(value_name = "HOST:PORT", default_value = "127.0.0.1:7101")]
    pub endpoint: String,
    /// protect: the new backup's channel address (its --listen; started with the same
    /// --key-file, --vm and disk options as the primary). Give it more than once: should a
    /// backup fail (its host dies during the clone), the next is tried.
    #[arg(long, value_name = "HOST:PORT")]
    pub backup: Vec<String>,
    /// The secret.
    #[command(flatten)]
    pub keys: ClientKeyArgs,
}

/// Options of `ftvm migrate`.
#[derive(clap::Args, Debug)]
pub struct MigrateArgs {
    /// The VM's console endpoint (where it runs now).
    #[arg(value_name = "HOST:PORT", default_value = "127.0.0.1:7101")]
    pub endpoint: String,
    /// Move it to a new host: the channel address (`--listen`) of an `ftvm backup` waiting
    /// there, which first becomes its backup (a VM running alone only; a protected VM moves to
    /// the backup it has).
    #[arg(long, value_name = "HOST:PORT")]
    pub to: Option<String>,
    /// The secret.
    #[command(flatten)]
    pub keys: ClientKeyArgs,
}

pub(crate) fn addr(s: &str, what: &str) -> anyhow::Result<SocketAddr> {
    s.to_socket_addrs()
        .with_context(|| format!("{what} {s:?} is not HOST:PORT"))?
        .next()
        .with_context(|| format!("{what} {s:?} resolves to no address"))
}

pub(crate) fn pair_config(p: &PairArgs, me: String) -> anyhow::Result<PairConfig> {
    let key_file = p
        .key_file
        .as_ref()
        .context("--key-file is required: the pair authenticates with a shared key")?;
    let key = Key::from_file(key_file)?;
    let console = ft::console::Keys {
        operator: match &p.console_key_file {
            Some(f) => Key::from_file(f)?,
            None => key.clone(),
        },
        status: p
            .status_key_file
            .as_deref()
            .map(Key::from_file)
            .transpose()?,
    };
    let arbiter: Arc<dyn arbiter::Arbiter> = Arc::from(arbiter::from_spec(&p.arbiter)?);
    arbiter::validate_vm_name(&p.vm)?;
    if p.heartbeat_ms == 0 || p.failure_timeout_ms <= p.heartbeat_ms {
        bail!("--failure-timeout-ms must be larger than --heartbeat-ms (and both above 0)");
    }
    Ok(PairConfig {
        vm: p.vm.clone(),
        me,
        key,
        console,
        arbiter,
        heartbeat: HeartbeatConfig {
            interval: Duration::from_millis(p.heartbeat_ms),
            timeout: Duration::from_millis(p.failure_timeout_ms),
        },
        max_lag: Duration::from_millis(p.max_lag_ms),
        buffer: usize::try_from(p.log_buffer).unwrap_or(usize::MAX),
        non_shared: p.disk_mode == "non-shared",
        metrics: None,
        clone_bandwidth: p.clone_bandwidth,
        arbiter_patience: Duration::from_millis(p.arbiter_patience_ms),
    })
}

pub(crate) fn metrics_addr(m: &Option<String>) -> anyhow::Result<Option<SocketAddr>> {
    m.as_deref().map(|m| addr(m, "--metrics")).transpose()
}

pub(crate) fn exit(what: &str, r: anyhow::Result<i32>) -> i32 {
    match r {
        Ok(c) => c,
        Err(e) => {
            // The chain of causes, without repeating one that a message already quotes (the
            // pair's errors often say their cause themselves).
            let mut msg = e.to_string();
            for cause in e.chain().skip(1) {
                let c = cause.to_string();
                if !msg.contains(&c) {
                    msg.push_str(": ");
                    msg.push_str(&c);
                }
            }
            eprintln!("ftvm {what}: {msg}");
            2
        }
    }
}

fn endpoints(s: &str) -> anyhow::Result<Vec<SocketAddr>> {
    s.split(',')
        .filter(|x| !x.is_empty())
        .map(|x| addr(x, "endpoint"))
        .collect()
}

/// `ftvm status`.
pub fn status(a: EndpointArgs) -> i32 {
    exit(
        "status",
        (|| {
            let mut any = false;
            let secret = a.keys.secret(true)?;
            for e in endpoints(&a.endpoints)? {
                match ft::console::request(
                    &e.to_string(),
                    &secret,
                    "STATUS",
                    Duration::from_secs(2),
                ) {
                    Ok(text) => {
                        any = true;
                        println!("endpoint: {e}");
                        print!("{text}");
                        println!();
                    }
                    Err(err) => println!("endpoint: {e}\nunreachable: {err}\n"),
                }
            }
            if !any {
                bail!("no endpoint answered");
            }
            Ok(0)
        })(),
    )
}

/// Options of `ftvm metrics-token`.
#[derive(clap::Args, Debug)]
pub struct MetricsTokenArgs {
    /// The key the token is derived from: the VM's status key (read-only) or console key.
    #[command(flatten)]
    pub keys: ClientKeyArgs,
    /// Write the token to FILE (mode 0600, no newline) instead of printing it.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// `ftvm metrics-token`: the bearer token of the `--metrics` endpoints
/// ([`ft::metrics::token`]).
pub fn metrics_token(a: MetricsTokenArgs) -> i32 {
    exit(
        "metrics-token",
        (|| {
            let t = ft::metrics::token(&a.keys.secret(true)?.key);
            match &a.out {
                None => println!("{t}"),
                Some(f) => {
                    use std::io::Write;
                    use std::os::unix::fs::OpenOptionsExt;
                    std::fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .mode(0o600)
                        .open(f)
                        .and_then(|mut w| w.write_all(t.as_bytes()))
                        .with_context(|| format!("cannot write {}", f.display()))?;
                }
            }
            Ok(0)
        })(),
    )
}

/// `ftvm control`.
pub fn control(a: ControlArgs) -> i32 {
    exit(
        "control",
        (|| {
            let e = addr(&a.endpoint, "endpoint")?;
            let secret = a.keys.secret(false)?;
            let backups = a
                .backup
                .iter()
                .map(|b| addr(b, "--backup"))
                .collect::<anyhow::Result<Vec<_>>>()?;
            match (a.op.as_str(), backups.is_empty()) {
                ("protect", true) => {
                    bail!("protect needs --backup HOST:PORT (the new backup's --listen)")
                }
                ("protect", false) => println!("{}", protect_by_any(e, &secret, &backups)?),
                (op, false) => bail!("--backup goes with protect, not {op}"),
                (op, true) => send_control(e, &secret, op)?,
            }
            Ok(0)
        })(),
    )
}

/// `ftvm migrate`: live migration as an FT handover. The VM gets the target as its backup if
/// it has none, then stops once that backup has replayed everything; the backup goes live
/// exactly there (clients following a failover follow this too).
pub fn migrate(a: MigrateArgs) -> i32 {
    exit(
        "migrate",
        (|| {
            let e = addr(&a.endpoint, "endpoint")?;
            let secret = a.keys.secret(false)?;
            let status = |what: &str| -> anyhow::Result<String> {
                let st =
                    ft::console::request(&e.to_string(), &secret, "STATUS", Duration::from_secs(2))
                        .with_context(|| format!("{e}: {what}"))?;
                Ok(st)
            };
            let st = status("asking where the VM stands")?;
            let field = |k: &str| ft::status::field(&st, k).unwrap_or_default().to_string();
            if field("role") != "primary" {
                bail!("{e} is a backup: migrate the primary (its console endpoint)");
            }
            let protected = field("protected") == "yes";
            let t0 = std::time::Instant::now();
            let peer = match (&a.to, protected) {
                (Some(to), false) => {
                    let to = addr(to, "--to")?;
                    eprintln!("ftvm migrate: {}", protect_by(e, &secret, to)?);
                    to.to_string()
                }
                (Some(_), true) => bail!(
                    "{e} is protected by {} already: leave out --to to move it there (or stop that backup first)",
                    field("peer")
                ),
                (None, true) => field("peer"),
                (None, false) => bail!("{e} runs alone: say where it goes with --to HOST:PORT (an ftvm backup waiting there)"),
            };
            send_control(e, &secret, "handover")?;
            // The old side stops (its endpoint closes) once the backup has everything.
            while status("waiting for the handover").is_ok() {
                if t0.elapsed() > Duration::from_secs(90) {
                    bail!("{e} still runs after 90 s: the handover did not happen (see its log)");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            println!(
                "ftvm migrate: the VM at {e} handed over to {peer} ({:.0} ms in all); it runs there now",
                t0.elapsed().as_secs_f64() * 1e3
            );
            Ok(0)
        })(),
    )
}

/// Sends the control operation `op` (with its arguments) to the VM at `e`; an error unless
/// it is taken.
fn send_control(e: SocketAddr, secret: &ft::console::Secret, op: &str) -> anyhow::Result<()> {
    let r = ft::console::request(
        &e.to_string(),
        secret,
        &format!("CONTROL {op}"),
        Duration::from_secs(2),
    )?;
    if !r.starts_with("OK") {
        bail!("{e}: {}", r.trim());
    }
    Ok(())
}

/// Has the VM at `e` (running alone) protected by the backup waiting at `backup`, and waits
/// (at most 60 s) until it says so; its `last_protected` line.
pub(crate) fn protect_by(
    e: SocketAddr,
    secret: &ft::console::Secret,
    backup: SocketAddr,
) -> anyhow::Result<String> {
    send_control(e, secret, &format!("protect {backup}"))?;
    wait_protected(e, secret, backup, Duration::from_secs(60))
}

/// [`protect_by`] the first of `backups` that succeeds, trying the next when one fails (the
/// VM runs on alone meanwhile); the last one's error if none does.
pub(crate) fn protect_by_any(
    e: SocketAddr,
    secret: &ft::console::Secret,
    backups: &[SocketAddr],
) -> anyhow::Result<String> {
    let mut last = None;
    for (i, &b) in backups.iter().enumerate() {
        match protect_by(e, secret, b) {
            Ok(said) => return Ok(said),
            Err(err) => {
                if i + 1 < backups.len() {
                    eprintln!("{err:#}; trying the next backup");
                }
                last = Some(err);
            }
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no backup to protect {e} with")))
}

/// Waits until the VM at `e` says it is protected by `peer`; its `last_protected` line.
fn wait_protected(
    e: SocketAddr,
    secret: &ft::console::Secret,
    peer: SocketAddr,
    within: Duration,
) -> anyhow::Result<String> {
    let t0 = std::time::Instant::now();
    let mut shown = (String::new(), t0);
    loop {
        let st = ft::console::request(&e.to_string(), secret, "STATUS", Duration::from_secs(2))?;
        let field = |k: &str| ft::status::field(&st, k).unwrap_or_default();
        // The live clone's progress, as it changes (twice a second at most).
        let clone = field("clone");
        if clone != "none"
            && !clone.is_empty()
            && clone != shown.0
            && (shown.0.is_empty() || shown.1.elapsed() >= Duration::from_millis(500))
        {
            eprintln!("{e}: cloning {clone}");
            shown = (clone.to_string(), std::time::Instant::now());
        }
        if field("protected") == "yes" && field("peer") == peer.to_string() {
            return Ok(format!("{e}: {}", field("last_protected")));
        }
        let last = field("last_protected");
        if last.starts_with(&format!("failed: by {peer}:")) {
            bail!("{e}: protecting it {last}");
        }
        if t0.elapsed() > within {
            bail!("{e} is not protected by {peer} after {within:?} (see its log)\n{st}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `ftvm console`: stdin to the guest, the guest to stdout, following a failover.
pub fn console(a: EndpointArgs) -> i32 {
    exit(
        "console",
        (|| {
            let mut c = ConsoleClient::new(endpoints(&a.endpoints)?, a.keys.secret(false)?);
            c.connect()?;
            let rx = stdin_pump();
            loop {
                while let Ok(b) = rx.try_recv() {
                    c.send(&b)?;
                }
                let out = c.read_some(Duration::from_millis(20))?;
                if !out.is_empty() {
                    use std::io::Write;
                    let mut so = std::io::stdout().lock();
                    so.write_all(&out)?;
                    so.flush()?;
                }
            }
        })(),
    )
}

/// What is typed on stdin, chunk by chunk, from a thread of its own.
pub fn stdin_pump() -> std::sync::mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut b = [0u8; 1024];
        let mut stdin = std::io::stdin();
        while let Ok(n) = stdin.read(&mut b) {
            if n == 0 || tx.send(b[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    rx
}
