//! `ftvm agent` (one per host), `ftvm vm create` and `ftvm status --store`: the cluster layer
//! above the fault-tolerant pair (docs/agent.md).
//!
//! The agent does not take part in the pair's protocol (the pair fails over by itself, with
//! the arbiter deciding who goes live); it places processes, starts them, and after a failover
//! restores redundancy by putting a new backup on another host. Its decisions live in the
//! cluster store (crate `cluster`); every write is a compare-and-swap, so an agent acting on
//! an old view (a stale agent, a race) is refused, and a process the record no longer names is
//! killed by its own agent (fencing).

use anyhow::{bail, Context};
use cluster::policy::{self, Action, Fact, Probe, Role};
use cluster::{HostRecord, Slot, Store, Versioned, VmRecord};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Console ports per host range: VM slot `s` has its console at the range's first port + s.
const CONSOLE_SLOTS: u16 = 16;

fn parse_range(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = s.split_once('-').ok_or("expected A-B")?;
    let a: u16 = a.parse().map_err(|_| format!("bad port {a:?}"))?;
    let b: u16 = b.parse().map_err(|_| format!("bad port {b:?}"))?;
    if b < a.saturating_add(CONSOLE_SLOTS + 2) {
        return Err(format!(
            "the range needs at least {} ports ({CONSOLE_SLOTS} consoles, then channels)",
            CONSOLE_SLOTS + 3
        ));
    }
    Ok((a, b))
}

/// Options of `ftvm agent`.
#[derive(clap::Args, Debug)]
pub struct AgentArgs {
    /// This host's name in the cluster ([A-Za-z0-9._-]).
    #[arg(long)]
    pub name: String,
    /// The cluster state: `local:DIR` (one machine, no etcd) or `etcd:URL[,URL...]`.
    #[arg(long, value_name = "SPEC", default_value = "local:/tmp/ftvm-cluster")]
    pub store: String,
    /// The address this host's VM processes listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub ip: IpAddr,
    /// This host's ports: the first 16 are VM consoles (by the VM's slot), the rest channels.
    #[arg(long, value_name = "A-B", default_value = "7200-7299", value_parser = parse_range)]
    pub ports: (u16, u16),
    /// Where the agent keeps what it started (pids, keys, logs), to find it again after a
    /// restart. Default /tmp/ftvm-agent-NAME.
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// The directory of this host holding the VMs' channel keys (`REF.key`, as `ftvm vm
    /// create` made them; the store holds only their names). Default: `DIR/keys` beside a
    /// `local:DIR` store; required with etcd.
    #[arg(long, value_name = "DIR")]
    pub key_dir: Option<PathBuf>,
    /// Time between two heartbeats of this host, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 500)]
    pub heartbeat_ms: u64,
    /// A host whose heartbeat is older than this counts as dead, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    pub dead_after_ms: u64,
    /// The least important events logged to stderr.
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    pub log_level: String,
}

/// Options of `ftvm vm`.
#[derive(clap::Args, Debug)]
pub struct VmCmdArgs {
    /// What to do with the VM.
    #[command(subcommand)]
    pub op: VmOp,
}

/// `ftvm vm` operations.
#[derive(clap::Subcommand, Debug)]
pub enum VmOp {
    /// Define a protected VM; the agents start it.
    Create(VmCreateArgs),
}

/// Options of `ftvm vm create`.
#[derive(clap::Args, Debug)]
pub struct VmCreateArgs {
    /// The cluster state.
    #[arg(long, value_name = "SPEC", default_value = "local:/tmp/ftvm-cluster")]
    pub store: String,
    /// The VM's name (the arbiter's key too).
    #[arg(long)]
    pub name: String,
    /// The primary's host (default: the first live host by name).
    #[arg(long)]
    pub primary: Option<String>,
    /// The backup's host (default: the next live host).
    #[arg(long)]
    pub backup: Option<String>,
    /// The arbiter (default: the store's etcd, or `file:DIR/arbiter` beside a local store).
    #[arg(long, value_name = "SPEC")]
    pub arbiter: Option<String>,
    /// Where to write the VM's channel key (`REF.key`; copy it to every host's `ftvm agent
    /// --key-dir`). Default: `DIR/keys` beside a `local:DIR` store; required with etcd.
    #[arg(long, value_name = "DIR")]
    pub key_dir: Option<PathBuf>,
    /// The machine and pair flags of `ftvm primary`/`ftvm backup` (after `--`), e.g.
    /// `--bios F --kernel K --initrd I --mem 256M`.
    #[arg(last = true, required = true)]
    pub flags: Vec<String>,
}

/// Options of `ftvm status`.
#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// Console endpoints (primary first), comma-separated.
    #[arg(
        value_name = "HOST:PORT[,HOST:PORT]",
        default_value = "127.0.0.1:7101,127.0.0.1:7102"
    )]
    pub endpoints: String,
    /// Show the whole cluster from this store instead (`local:DIR` or `etcd:URL`).
    #[arg(long, value_name = "SPEC")]
    pub store: Option<String>,
    /// With --store: the directory holding the VMs' channel keys, to ask each primary for its
    /// status (default `DIR/keys` beside a `local:DIR` store).
    #[arg(long, value_name = "DIR")]
    pub key_dir: Option<PathBuf>,
    /// The secret (without --store).
    #[command(flatten)]
    pub keys: crate::ft_cmd::ClientKeyArgs,
}

fn report(what: &str, r: anyhow::Result<i32>) -> i32 {
    match r {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ftvm {what}: {e:#}");
            2
        }
    }
}

fn host_key(h: &str) -> String {
    format!("hosts/{h}")
}

fn vm_key(v: &str) -> String {
    format!("vms/{v}")
}

fn alive(h: &HostRecord, dead_after_ms: u64) -> bool {
    cluster::now_ms().saturating_sub(h.heartbeat_ms) < dead_after_ms
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `ftvm vm create`.
pub fn vm(a: VmCmdArgs) -> i32 {
    let VmOp::Create(a) = a.op;
    report("vm create", create(a))
}

fn create(a: VmCreateArgs) -> anyhow::Result<i32> {
    arbiter::validate_vm_name(&a.name)?;
    let store = cluster::from_spec(&a.store)?;
    let hosts: Vec<HostRecord> = cluster::list::<HostRecord>(&*store, "hosts/")?
        .into_iter()
        .map(|h| h.value)
        .filter(|h| alive(h, 5000))
        .collect();
    let pick = |given: &Option<String>, not: Option<&str>| -> anyhow::Result<String> {
        if let Some(g) = given {
            return Ok(g.clone());
        }
        hosts
            .iter()
            .map(|h| h.name.clone())
            .find(|n| Some(n.as_str()) != not)
            .context(
                "not enough live hosts (start `ftvm agent`s first, or name --primary and --backup)",
            )
    };
    let primary = pick(&a.primary, None)?;
    let backup = pick(&a.backup, Some(&primary))?;
    if primary == backup {
        bail!("the primary and the backup must be on different hosts");
    }
    let arbiter = match (&a.arbiter, a.store.strip_prefix("etcd:")) {
        (Some(s), _) => s.clone(),
        (None, Some(urls)) => format!("etcd:{urls}"),
        (None, None) => format!(
            "file:{}/arbiter",
            a.store.strip_prefix("local:").unwrap_or(&a.store)
        ),
    };
    let slot = u16::try_from(cluster::list::<VmRecord>(&*store, "vms/")?.len()).unwrap_or(u16::MAX);
    if slot >= CONSOLE_SLOTS {
        bail!("at most {CONSOLE_SLOTS} VMs per cluster (console slots)");
    }
    // The key stays in a file on the hosts; the record names it.
    let keys = key_dir(&a.key_dir, &a.store)?;
    let key_ref = format!("{}-{}", a.name, &hex(ft::Key::random().bytes())[..12]);
    let key_path = keys.join(format!("{key_ref}.key"));
    {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&keys)
            .with_context(|| format!("cannot create {}", keys.display()))?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&key_path)
            .with_context(|| format!("cannot write {}", key_path.display()))?;
        f.write_all(ft::Key::random().bytes())?;
    }
    let rec = VmRecord {
        name: a.name.clone(),
        flags: a.flags,
        key_ref,
        arbiter,
        slot,
        generation: 0,
        epoch: 1,
        primary: Some(Slot {
            host: primary.clone(),
            ..Slot::default()
        }),
        backup: Some(Slot {
            host: backup.clone(),
            ..Slot::default()
        }),
        launches: 0,
        unprotected_since_ms: None,
        history: Vec::new(),
    };
    match cluster::put(&*store, &vm_key(&a.name), 0, &rec) {
        Err(cluster::Error::Conflict(_)) => {
            let _ = std::fs::remove_file(&key_path);
            bail!("a VM named {} exists already", a.name)
        }
        r => r.inspect_err(|_| {
            let _ = std::fs::remove_file(&key_path);
        })?,
    };
    println!(
        "vm {}: primary on {primary}, backup on {backup}, slot {slot}; its channel key is {} \
         (the store holds only its name): every host's `ftvm agent --key-dir` needs it",
        a.name,
        key_path.display()
    );
    Ok(0)
}

/// `ftvm status`: the endpoints' status, or the whole cluster's with `--store`.
pub fn status(a: StatusArgs) -> i32 {
    match &a.store {
        None => crate::ft_cmd::status(crate::ft_cmd::EndpointArgs {
            endpoints: a.endpoints,
            keys: a.keys,
        }),
        Some(s) => report("status", cluster_status(s, key_dir(&a.key_dir, s).ok())),
    }
}

fn cluster_status(spec: &str, keys: Option<PathBuf>) -> anyhow::Result<i32> {
    let store = cluster::from_spec(spec)?;
    let now = cluster::now_ms();
    println!("store: {}", store.describe());
    for h in cluster::list::<HostRecord>(&*store, "hosts/")? {
        let h = h.value;
        let age = now.saturating_sub(h.heartbeat_ms);
        println!(
            "host {}: {} (heartbeat {age} ms ago, agent pid {}, {})",
            h.name,
            if age < 2000 { "alive" } else { "dead" },
            h.pid,
            h.ip
        );
    }
    for v in cluster::list::<VmRecord>(&*store, "vms/")? {
        let v = v.value;
        println!();
        println!("vm: {}", v.name);
        let side = |s: &Option<Slot>| match s {
            None => "none".to_string(),
            Some(s) => format!(
                "{} (console {}, {})",
                s.host,
                s.console.as_deref().unwrap_or("-"),
                if s.started { "started" } else { "to start" }
            ),
        };
        println!("primary: {}", side(&v.primary));
        println!("backup: {}", side(&v.backup));
        println!("generation: {}", v.generation);
        let st = v
            .primary
            .as_ref()
            .and_then(|p| p.console.as_ref())
            .and_then(|c| {
                let secret = vm_secret(keys.as_deref()?, &v).ok()?;
                ft::console::request(c, &secret, "STATUS", Duration::from_secs(2)).ok()
            });
        match &st {
            Some(st) => {
                let f = |k: &str| ft::status::field(st, k).unwrap_or("-").to_string();
                println!("protected: {}", f("protected"));
                println!("lag: {}", f("lag"));
                println!("bandwidth: {}", f("log_bandwidth"));
            }
            None => println!("protected: unknown (the primary's console does not answer)"),
        }
        for kind in ["failover", "reprotect"] {
            match v.last(kind) {
                Some(e) => println!(
                    "last_{kind}: {} ms ago on {}, took {} ms",
                    now.saturating_sub(e.at_ms),
                    e.host,
                    e.ms
                ),
                None => println!("last_{kind}: never"),
            }
        }
        println!("launches: {}", v.launches);
    }
    Ok(0)
}

/// What the agent started, kept in the work dir (`VM.json`) to be found again after a restart.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone)]
struct Local {
    pid: u32,
    /// The role it was started in.
    role: String,
    console: String,
    /// Which launch of the record it is (the record's `Slot::launch` names it).
    launch: u64,
    /// The generation it runs under.
    generation: u64,
}

fn pid_alive(pid: u32) -> bool {
    let Ok(p) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: kill(2) with signal 0 only checks that the process exists.
    if unsafe { libc::kill(p, 0) } != 0 {
        return false;
    }
    // A zombie (dead, not yet reaped) does not count.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, r)| !r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

fn kill_pid(pid: u32) {
    if let Ok(p) = i32::try_from(pid) {
        // SAFETY: kill(2) on a pid the agent started; a gone process makes it fail harmlessly.
        unsafe { libc::kill(p, libc::SIGKILL) };
    }
}

/// The directory of the VMs' channel keys: `given`, or `DIR/keys` beside a `local:DIR` store.
pub(crate) fn key_dir(given: &Option<PathBuf>, store: &str) -> anyhow::Result<PathBuf> {
    match (given, store.strip_prefix("local:")) {
        (Some(d), _) => Ok(d.clone()),
        (None, Some(dir)) => Ok(PathBuf::from(dir).join("keys")),
        (None, None) => bail!(
            "--key-dir is required with this store: the directory on each host that holds the \
             VMs' channel keys (the store holds only their names)"
        ),
    }
}

/// The key file of `rec` in `dir`. The reference comes from the store, so it is checked to
/// name a file in `dir` and nothing else.
fn key_file(dir: &std::path::Path, rec: &VmRecord) -> anyhow::Result<PathBuf> {
    let r = &rec.key_ref;
    if r.is_empty() {
        bail!(
            "the record of VM {} names no key file (written by an older ftvm, which kept the \
             key in the store): define the VM again",
            rec.name
        );
    }
    if r.len() > 100
        || r.starts_with('.')
        || !r
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        bail!("the record of VM {} names a bad key file {r:?}", rec.name);
    }
    Ok(dir.join(format!("{r}.key")))
}

/// The secret the agent presents to the consoles of VM `rec`, from its key file in `dir`: the
/// VM's processes are started without a console key of their own, so they admit the channel
/// key's holders, the hosts (the agent), as their operators.
fn vm_secret(dir: &std::path::Path, rec: &VmRecord) -> anyhow::Result<ft::console::Secret> {
    let f = key_file(dir, rec)?;
    let k = ft::Key::from_file(&f).with_context(|| {
        format!(
            "the channel key of VM {} is not on this host (copy {} from where `ftvm vm create` \
             wrote it)",
            rec.name,
            f.display()
        )
    })?;
    Ok(ft::console::Secret::operator(k))
}

fn status_of(console: &str, secret: &ft::console::Secret) -> Option<String> {
    ft::console::request(console, secret, "STATUS", Duration::from_secs(1)).ok()
}

struct Agent {
    a: AgentArgs,
    /// Where the VMs' channel keys are on this host (`--key-dir`).
    keys: PathBuf,
    store: Box<dyn Store>,
    work: PathBuf,
    exe: PathBuf,
    /// Children of this incarnation (reaped as they end).
    kids: HashMap<u32, Child>,
    next_port: u16,
    /// Since when each VM's primary here has been seen running unprotected.
    alone_since: HashMap<String, Instant>,
}

/// `ftvm agent`.
pub fn agent(a: AgentArgs) -> i32 {
    report("agent", run(a))
}

fn run(a: AgentArgs) -> anyhow::Result<i32> {
    arbiter::validate_vm_name(&a.name).context("--name")?;
    let level: tracing_subscriber::filter::LevelFilter =
        a.log_level.parse().context("--log-level")?;
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false)
        .with_ansi(false)
        .try_init();
    let work = a
        .work_dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("ftvm-agent-{}", a.name)));
    std::fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    // The store may be down at start: wait for it (nothing runs without it yet).
    let store = retry_store(&a.store);
    heartbeat_thread(&a, retry_store(&a.store));
    let next_port = a.ports.0 + CONSOLE_SLOTS;
    let keys = key_dir(&a.key_dir, &a.store)?;
    let mut ag = Agent {
        keys,
        exe: std::env::current_exe().context("cannot find the ftvm executable")?,
        a,
        store,
        work,
        kids: HashMap::new(),
        next_port,
        alone_since: HashMap::new(),
    };
    tracing::info!(
        "ftvm agent {}: store {}, work dir {}",
        ag.a.name,
        ag.store.describe(),
        ag.work.display()
    );
    let mut backoff = Duration::from_millis(200);
    let mut down_since: Option<Instant> = None;
    loop {
        ag.kids.retain(|_, c| matches!(c.try_wait(), Ok(None)));
        match ag.tick() {
            Ok(()) => {
                if let Some(t) = down_since.take() {
                    tracing::info!(
                        "ftvm agent {}: the store answers again after {:.1} s; resuming",
                        ag.a.name,
                        t.elapsed().as_secs_f64()
                    );
                }
                backoff = policy::next_backoff(backoff, true);
            }
            Err(e) => {
                if down_since.is_none() {
                    down_since = Some(Instant::now());
                }
                tracing::warn!(
                    "ftvm agent {}: {e:#}; the VMs keep running, nothing new is started until the store answers (retry in {backoff:?})",
                    ag.a.name
                );
                backoff = policy::next_backoff(backoff, false);
            }
        }
        std::thread::sleep(backoff);
    }
}

fn retry_store(spec: &str) -> Box<dyn Store> {
    let mut warned = false;
    loop {
        match cluster::from_spec(spec) {
            Ok(s) => return s,
            Err(e) => {
                if matches!(e, cluster::Error::BadSpec { .. }) || !warned {
                    tracing::warn!("ftvm agent: {e}; retrying");
                    warned = true;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

/// Rewrites this host's record every `heartbeat_ms`, from a thread of its own so a long
/// action of the agent (a re-protection) does not make the host look dead.
fn heartbeat_thread(a: &AgentArgs, store: Box<dyn Store>) {
    let rec = HostRecord {
        name: a.name.clone(),
        ip: a.ip.to_string(),
        console_base: a.ports.0,
        pid: std::process::id(),
        heartbeat_ms: 0,
    };
    let every = Duration::from_millis(a.heartbeat_ms.max(10));
    std::thread::spawn(move || {
        let key = host_key(&rec.name);
        let mut failing = false;
        loop {
            let r = (|| {
                let version = store.get(&key)?.map_or(0, |r| r.version);
                let mut h = rec.clone();
                h.heartbeat_ms = cluster::now_ms();
                cluster::put(&*store, &key, version, &h)
            })();
            match r {
                Ok(_) if failing => {
                    tracing::info!("ftvm agent {}: heartbeat written again", rec.name);
                    failing = false;
                }
                Err(e) if !failing => {
                    tracing::warn!("ftvm agent {}: heartbeat failed: {e}", rec.name);
                    failing = true;
                }
                _ => {}
            }
            std::thread::sleep(every);
        }
    });
}

impl Agent {
    fn me(&self) -> &str {
        &self.a.name
    }

    fn local_path(&self, vm: &str) -> PathBuf {
        self.work.join(format!("{vm}.json"))
    }

    /// What this host runs for `vm`, if its process still lives (a dead one is forgotten).
    fn local(&self, vm: &str) -> Option<Local> {
        let p = self.local_path(vm);
        let text = std::fs::read(&p).ok()?;
        let l: Local = match serde_json::from_slice(&text) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!("{}: {e}: ignoring it", p.display());
                let _ = std::fs::remove_file(&p);
                return None;
            }
        };
        if pid_alive(l.pid) {
            Some(l)
        } else {
            tracing::info!(
                "ftvm agent {}: the {} of {vm} (pid {}) is gone",
                self.me(),
                l.role,
                l.pid
            );
            let _ = std::fs::remove_file(&p);
            None
        }
    }

    fn save_local(&self, vm: &str, l: &Local) -> anyhow::Result<()> {
        let p = self.local_path(vm);
        let tmp = p.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(l)?)?;
        std::fs::rename(&tmp, &p)?;
        Ok(())
    }

    fn forget(&self, vm: &str, l: &Local, why: &str) {
        tracing::warn!(
            "ftvm agent {}: fencing: killing the {} of {vm} (pid {}, generation {}): {why}",
            self.me(),
            l.role,
            l.pid,
            l.generation
        );
        kill_pid(l.pid);
        let _ = std::fs::remove_file(self.local_path(vm));
    }

    fn tick(&mut self) -> anyhow::Result<()> {
        let hosts: HashMap<String, HostRecord> =
            cluster::list::<HostRecord>(&*self.store, "hosts/")?
                .into_iter()
                .map(|h| (h.value.name.clone(), h.value))
                .collect();
        for v in cluster::list::<VmRecord>(&*self.store, "vms/")? {
            let name = v.value.name.clone();
            if let Err(e) = self.tend(v, &hosts) {
                if e.downcast_ref::<cluster::Error>()
                    .is_some_and(|e| e.is_unreachable())
                {
                    return Err(e);
                }
                tracing::warn!("ftvm agent {}: vm {name}: {e:#}", self.me());
            }
        }
        Ok(())
    }

    /// Writes the record if nobody changed it since it was read.
    fn cas(&self, v: &Versioned<VmRecord>) -> anyhow::Result<bool> {
        match cluster::put(&*self.store, &vm_key(&v.value.name), v.version, &v.value) {
            Ok(_) => Ok(true),
            Err(cluster::Error::Conflict(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Tends one VM: gathers what [`policy::decide`] asks for, then carries its action out.
    fn tend(
        &mut self,
        v: Versioned<VmRecord>,
        hosts: &HashMap<String, HostRecord>,
    ) -> anyhow::Result<()> {
        let vm = v.value.name.clone();
        let me = self.me().to_string();
        let local = self.local(&vm);
        let secret = vm_secret(&self.keys, &v.value).ok();
        let mut view = policy::View {
            me: &me,
            now_ms: cluster::now_ms(),
            dead_after_ms: self.a.dead_after_ms,
            hosts,
            vm: &v.value,
            local: local
                .as_ref()
                .map(|l| policy::LocalProcess { launch: l.launch }),
            alone_for: Probe::NotAsked,
            status: Probe::NotAsked,
            backup_answers: Probe::NotAsked,
            arbiter_generation: Probe::NotAsked,
        };
        let action = loop {
            match policy::decide(&view) {
                Action::Need(Fact::LocalStatus) => {
                    let st = local
                        .as_ref()
                        .zip(secret.as_ref())
                        .and_then(|(l, k)| status_of(&l.console, k));
                    view.status = Probe::Known(st.map(|st| policy::ProcessStatus {
                        primary: ft::status::field(&st, "role") == Some("primary"),
                        protected: ft::status::field(&st, "protected") == Some("yes"),
                    }));
                }
                Action::Need(Fact::AloneFor) => {
                    view.alone_for = Probe::Known(
                        self.alone_since
                            .entry(vm.clone())
                            .or_insert_with(Instant::now)
                            .elapsed(),
                    );
                }
                Action::Need(Fact::BackupAnswers) => {
                    let console = v.value.backup.as_ref().and_then(|b| b.console.clone());
                    view.backup_answers = Probe::Known(
                        console
                            .as_deref()
                            .zip(secret.as_ref())
                            .and_then(|(c, k)| status_of(c, k))
                            .is_some(),
                    );
                }
                Action::Need(Fact::ArbiterGeneration) => {
                    view.arbiter_generation = Probe::Known(
                        arbiter::from_spec(&v.value.arbiter)?
                            .current(&vm)?
                            .map(|(g, _)| g),
                    );
                }
                a => break a,
            }
        };
        let version = v.version;
        let write = |record: Box<VmRecord>| Versioned {
            value: *record,
            version,
        };
        match action {
            Action::Need(_) | Action::Nothing => {}
            Action::Settled => {
                self.alone_since.remove(&vm);
            }
            Action::Fence { why } => {
                if let Some(l) = &local {
                    self.forget(&vm, l, &why);
                }
            }
            Action::Launch { role, peer } => return self.launch(v, role, peer),
            Action::Failover { record, was_on } => {
                let nv = write(record);
                if self.cas(&nv)? {
                    tracing::info!(
                        "ftvm agent {me}: vm {vm}: failover: the backup here is the primary now (generation {}, was on {})",
                        nv.value.generation,
                        was_on.unwrap_or_default()
                    );
                    if let Some(l) = local {
                        self.save_local(
                            &vm,
                            &Local {
                                role: "primary".into(),
                                generation: nv.value.generation,
                                ..l
                            },
                        )?;
                    }
                }
            }
            Action::DropBackup { record, host } => {
                tracing::info!(
                    "ftvm agent {me}: vm {vm}: the backup on {host} is gone; placing another"
                );
                self.cas(&write(record))?;
            }
            Action::NoHostForBackup => {
                tracing::warn!(
                    "ftvm agent {me}: vm {vm}: runs alone, and no other host is alive to protect it"
                );
            }
            Action::PlaceBackup { record, target } => {
                if self.cas(&write(record))? {
                    tracing::info!("ftvm agent {me}: vm {vm}: a new backup goes to {target}");
                }
            }
            Action::Protect { record, backup: b } => {
                let l = local.context("no local process")?;
                let channel: SocketAddr = b
                    .channel
                    .as_deref()
                    .context("a started backup without a channel")?
                    .parse()
                    .context("the backup's channel")?;
                let console: SocketAddr = l.console.parse().context("the console")?;
                let t0 = Instant::now();
                let secret = secret
                    .clone()
                    .context("the VM's channel key file is not on this host (--key-dir)")?;
                match crate::ft_cmd::protect_by(console, &secret, channel) {
                    Ok(said) => {
                        let now = cluster::now_ms();
                        let since = record.unprotected_since_ms.unwrap_or(now);
                        // Re-read: only the protection flag changes.
                        let fresh = cluster::get::<VmRecord>(&*self.store, &vm_key(&vm))?
                            .context("the VM's record is gone")?;
                        self.cas(&Versioned {
                            value: policy::protected(fresh.value, &b, now, since),
                            version: fresh.version,
                        })?;
                        tracing::info!(
                            "ftvm agent {me}: vm {vm}: protected again by {} in {:.0} ms ({:.0} ms since it ran alone): {said}",
                            b.host,
                            t0.elapsed().as_secs_f64() * 1e3,
                            now.saturating_sub(since)
                        );
                    }
                    Err(e) => {
                        tracing::warn!(
                            "ftvm agent {me}: vm {vm}: protecting by {} failed: {e:#}; placing another backup",
                            b.host
                        );
                        self.cas(&write(Box::new(policy::protect_failed(*record))))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// A free channel port of this host's range.
    fn channel_port(&mut self) -> anyhow::Result<u16> {
        let (lo, hi) = (self.a.ports.0 + CONSOLE_SLOTS, self.a.ports.1);
        for _ in lo..=hi {
            let p = self.next_port;
            self.next_port = if p >= hi { lo } else { p + 1 };
            let ip = self.a.ip;
            if std::net::TcpListener::bind((ip, p)).is_ok()
                && std::net::UdpSocket::bind((ip, p)).is_ok()
            {
                return Ok(p);
            }
        }
        bail!("no free channel port in {lo}-{hi}")
    }

    /// Counts a launch in the record (compare-and-swap: an agent that lost the race starts
    /// nothing), then starts the process.
    fn launch(
        &mut self,
        v: Versioned<VmRecord>,
        role: Role,
        peer: Option<String>,
    ) -> anyhow::Result<()> {
        let vm = v.value.name.clone();
        let console = SocketAddr::new(self.a.ip, self.a.ports.0 + v.value.slot).to_string();
        let channel = if role == Role::Backup {
            Some(SocketAddr::new(self.a.ip, self.channel_port()?).to_string())
        } else {
            None
        };
        let record =
            policy::launched(v.value, role, console.clone(), channel.clone()).context("no slot")?;
        let launch = record.launches;
        let v = Versioned {
            value: record,
            version: v.version,
        };
        if !self.cas(&v)? {
            return Ok(());
        }
        let role = role.as_str();
        // The key file on this host that the record names (checked before anything starts).
        vm_secret(&self.keys, &v.value)?;
        let key = key_file(&self.keys, &v.value)?;
        let log = self.work.join(format!("{vm}-{launch}-{role}.log"));
        let mut c = Command::new(&self.exe);
        c.env(crate::ENGINE_ENV, crate::engine().name())
            .arg(role)
            .args(&v.value.flags)
            .args(["--vm", &vm, "--arbiter", &v.value.arbiter])
            .arg("--key-file")
            .arg(&key)
            .args(["--console", &console]);
        match (&channel, &peer) {
            (Some(ch), _) => c.args(["--listen", ch]),
            (None, Some(p)) => c.args(["--peer", p]),
            (None, None) => bail!("a primary needs its backup's channel"),
        };
        let child = c
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("cannot start ftvm {role}"))?;
        let pid = child.id();
        self.kids.insert(pid, child);
        self.save_local(
            &vm,
            &Local {
                pid,
                role: role.into(),
                console: console.clone(),
                launch,
                generation: v.value.generation,
            },
        )?;
        tracing::info!(
            "ftvm agent {}: vm {vm}: started the {role} (pid {pid}, launch {launch}, console {console}{}; log {})",
            self.me(),
            channel.map_or_else(String::new, |c| format!(", channel {c}")),
            log.display()
        );
        Ok(())
    }
}
