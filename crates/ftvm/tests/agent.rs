//! Cluster agents end to end: three `ftvm agent`s on 127.0.0.1 (three port ranges standing for
//! three hosts), one protected VM running the Linux guest with the counter service under a
//! console client. A host is killed (its agent and its VMs: the agent's process group) again
//! and again, each time after re-protection finished, and restarted; the client's values stay
//! 1, 2, 3, ... and the VM ends protected with a consistent record. Also: a stale agent (its
//! host frozen through a failover) is fenced off, and an etcd outage starts nothing twice.

mod ft_support;

use cluster::{HostRecord, VmRecord};
use ft_support::*;
use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const HOSTS: [&str; 3] = ["h1", "h2", "h3"];
const RANGE: u16 = 24;

struct Cluster {
    dir: PathBuf,
    store: String,
    ports: HashMap<&'static str, u16>,
    agents: HashMap<&'static str, Child>,
}

/// `RANGE` consecutive free ports (free_port hands them out in order, skipping busy ones).
fn port_range() -> u16 {
    loop {
        let a = free_port();
        let mut last = a;
        for _ in 1..RANGE {
            last = free_port();
        }
        if last == a + RANGE - 1 {
            return a;
        }
    }
}

impl Cluster {
    fn start(name: &str, store: String) -> Cluster {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join("agent")
            .join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut c = Cluster {
            dir,
            store,
            ports: HOSTS.iter().map(|h| (*h, port_range())).collect(),
            agents: HashMap::new(),
        };
        for h in HOSTS {
            c.start_agent(h);
        }
        c
    }

    fn start_agent(&mut self, h: &'static str) {
        let base = self.ports[h];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("agent-{h}.log")))
            .unwrap();
        let child = Command::new(FTVM)
            .args(["agent", "--name", h, "--store", &self.store])
            .args(["--ports", &format!("{base}-{}", base + RANGE - 1)])
            .arg("--work-dir")
            .arg(self.dir.join(h))
            .args(self.key_args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            // The agent and the VMs it starts are one group: killing it is killing the host.
            .process_group(0)
            .spawn()
            .unwrap();
        self.agents.insert(h, child);
    }

    /// Where the VMs' channel keys are (the store holds only their names): the default
    /// beside a local store, a directory of the test's given to every command with etcd.
    fn key_dir(&self) -> PathBuf {
        match self.store.strip_prefix("local:") {
            Some(d) => PathBuf::from(d).join("keys"),
            None => self.dir.join("keys"),
        }
    }

    fn key_args(&self) -> Vec<std::ffi::OsString> {
        if self.store.starts_with("local:") {
            Vec::new()
        } else {
            vec!["--key-dir".into(), self.key_dir().into()]
        }
    }

    fn signal_host(&self, h: &str, sig: i32) {
        let pid = i32::try_from(self.agents[h].id()).unwrap();
        // SAFETY: kill(2) on the process group of an agent this test started.
        unsafe { libc::kill(-pid, sig) };
    }

    fn kill_host(&mut self, h: &str) {
        self.signal_host(h, libc::SIGKILL);
        let _ = self.agents.get_mut(h).unwrap().wait();
    }

    fn consoles(&self) -> Vec<std::net::SocketAddr> {
        HOSTS.iter().map(|h| addr(self.ports[h])).collect()
    }

    fn store(&self) -> Box<dyn cluster::Store> {
        cluster::from_spec(&self.store).unwrap()
    }

    /// The secret the VM's consoles admit: agents start its processes without a console key,
    /// so the hosts' (the channel key in the record) is their operators'.
    fn secret(&self) -> ft::console::Secret {
        ft::console::Secret::operator(ft::Key::from_file(&self.key_file()).unwrap())
    }

    /// The VM's channel key file, named by its record.
    fn key_file(&self) -> PathBuf {
        self.key_dir()
            .join(format!("{}.key", self.record().key_ref))
    }

    fn record(&self) -> VmRecord {
        cluster::get::<VmRecord>(&*self.store(), "vms/testvm")
            .unwrap()
            .expect("no VM record")
            .value
    }

    fn logs(&self) -> String {
        let mut s = String::new();
        for h in HOSTS {
            let l = std::fs::read_to_string(self.dir.join(format!("agent-{h}.log")))
                .unwrap_or_default();
            s += &format!("--- agent {h}:\n{l}");
        }
        s += &format!(
            "--- record:\n{:#?}\n",
            cluster::get::<VmRecord>(&*self.store(), "vms/testvm")
        );
        s
    }

    fn create_vm(&self, g: &std::path::Path, arbiter: Option<&str>) {
        let mut cmd = Command::new(FTVM);
        cmd.args(["vm", "create", "--store", &self.store, "--name", "testvm"])
            .args(self.key_args());
        if let Some(a) = arbiter {
            cmd.args(["--arbiter", a]);
        }
        let out = cmd
            .args(["--primary", "h1", "--backup", "h2", "--"])
            .args(["--bios", FW_JUMP, "--mem", "256M"])
            .args(guestctl::linux_boot_args(g))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The store holds the key's name, never the key (in any encoding).
        let key = std::fs::read(self.key_file()).unwrap();
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        let store = self.store();
        let records = ["hosts/", "vms/"]
            .iter()
            .flat_map(|p| store.list(p).unwrap())
            .collect::<Vec<_>>();
        assert!(
            records.iter().any(|(k, _)| k == "vms/testvm"),
            "{records:?}"
        );
        for (k, raw) in records {
            let text = String::from_utf8_lossy(&raw.value).to_lowercase();
            assert!(
                !text.contains(&hex) && !raw.value.windows(key.len()).any(|w| w == key),
                "the store's record {k} holds the channel key"
            );
        }
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(self.key_file()).unwrap().permissions(),
        );
        assert_eq!(mode & 0o077, 0, "the key file is readable by others");
    }

    fn wait_hosts(&self) {
        let t0 = Instant::now();
        while cluster::list::<HostRecord>(&*self.store(), "hosts/")
            .map(|h| h.len())
            .unwrap_or(0)
            < 3
        {
            assert!(t0.elapsed() < Duration::from_secs(20), "{}", self.logs());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the record says the VM is protected (both sides started, no pending
    /// protection) and the primary says so too; the record.
    fn wait_protected(&self, within: Duration) -> VmRecord {
        let t0 = Instant::now();
        loop {
            let r = self.record();
            let ok = match (&r.primary, &r.backup) {
                (Some(p), Some(b)) => {
                    p.started
                        && b.started
                        && !b.needs_protect
                        && p.host != b.host
                        && p.console.as_ref().is_some_and(|c| {
                            ft::console::request(
                                c,
                                &self.secret(),
                                "STATUS",
                                Duration::from_secs(1),
                            )
                            .is_ok_and(|st| ft::status::field(&st, "protected") == Some("yes"))
                        })
                }
                _ => false,
            };
            if ok {
                return r;
            }
            assert!(
                t0.elapsed() < within,
                "not protected within {within:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for h in HOSTS {
            if self.agents.contains_key(h) {
                self.signal_host(h, libc::SIGCONT);
                self.kill_host(h);
            }
        }
        if std::thread::panicking() {
            eprintln!("kept {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Kills the primary's host `kills` times (after each re-protection), restarting it; checks
/// the counter throughout and the record at the end.
fn kill_rounds(
    c: &mut Cluster,
    client: &mut ft::console::client::ConsoleClient,
    k: &mut u64,
    kills: u32,
) {
    let first = c.record();
    for round in 1..=kills {
        for _ in 0..5 {
            *k += 1;
            increment(client, *k, &|| c.logs());
        }
        let before = c.record();
        let victim = before.primary.as_ref().unwrap().host.clone();
        let victim: &'static str = HOSTS.iter().find(|h| **h == victim).unwrap();
        let t0 = Instant::now();
        c.kill_host(victim);
        for _ in 0..3 {
            *k += 1;
            increment(client, *k, &|| c.logs());
        }
        let failed_over = t0.elapsed();
        let r = c.wait_protected(Duration::from_secs(60));
        eprintln!(
            "round {round}: killed {victim}; the counter answered within {:.0} ms; protected again {:.0} ms after the kill (primary {}, backup {}, generation {})",
            failed_over.as_secs_f64() * 1e3,
            t0.elapsed().as_secs_f64() * 1e3,
            r.primary.as_ref().unwrap().host,
            r.backup.as_ref().unwrap().host,
            r.generation
        );
        assert_ne!(r.primary.as_ref().unwrap().host, victim);
        assert_ne!(r.backup.as_ref().unwrap().host, victim);
        assert!(r.generation > before.generation, "{}", c.logs());
        c.start_agent(victim);
        for _ in 0..3 {
            *k += 1;
            increment(client, *k, &|| c.logs());
        }
    }
    let last = c.wait_protected(Duration::from_secs(30));
    assert!(
        last.generation >= first.generation + u64::from(kills),
        "{}",
        c.logs()
    );
    // One backup started per round, never a process twice.
    assert_eq!(
        last.launches,
        first.launches + u64::from(kills),
        "{}",
        c.logs()
    );
    assert_eq!(
        last.history
            .iter()
            .filter(|e| e.kind == "reprotect")
            .count() as u32,
        kills,
        "{}",
        c.logs()
    );
}

fn boot(
    c: &Cluster,
    g: &std::path::Path,
    arbiter: Option<&str>,
) -> ft::console::client::ConsoleClient {
    c.wait_hosts();
    c.create_vm(g, arbiter);
    c.wait_protected(Duration::from_secs(60));
    let mut client = ft::console::client::ConsoleClient::new(c.consoles(), c.secret());
    client.reconnect_for = Duration::from_secs(60);
    start_counter(&mut client);
    client
}

#[test]
fn agents_reprotect_after_five_host_kills_etcd() {
    let Some(g) = guest() else { return };
    let Some(etcd) = start_etcd() else { return };
    let t_all = Instant::now();
    let mut c = Cluster::start("etcd", format!("etcd:{}", etcd.url));
    let mut client = boot(&c, &g, None);
    assert_eq!(c.record().launches, 2);
    let mut k = 0;
    kill_rounds(&mut c, &mut client, &mut k, 5);

    // etcd away for a while in steady state: the VM goes on, nothing is started, and the
    // agents carry on when it returns.
    let pid = i32::try_from(etcd.pid()).unwrap();
    let launches = c.record().launches;
    // SAFETY: kill(2) on the etcd process this test started.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    for _ in 0..15 {
        k += 1;
        increment(&mut client, k, &String::new);
        std::thread::sleep(Duration::from_millis(400));
    }
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let r = c.wait_protected(Duration::from_secs(30));
    assert_eq!(r.launches, launches, "{}", c.logs());
    assert!(
        c.logs()
            .contains("nothing new is started until the store answers"),
        "{}",
        c.logs()
    );

    // A stale agent: the primary's host frozen (agent and VM) through a failover, then thawed.
    let before = c.record();
    let stale = before.primary.as_ref().unwrap().host.clone();
    let stale: &'static str = HOSTS.iter().find(|h| **h == stale).unwrap();
    let stale_pid = std::fs::read_to_string(c.dir.join(stale).join("testvm.json")).unwrap();
    let stale_pid: u32 = serde_json::from_str::<serde_json::Value>(&stale_pid).unwrap()["pid"]
        .as_u64()
        .unwrap() as u32;
    c.signal_host(stale, libc::SIGSTOP);
    for _ in 0..3 {
        k += 1;
        increment(&mut client, k, &|| c.logs());
    }
    let r = c.wait_protected(Duration::from_secs(60));
    assert_ne!(r.primary.as_ref().unwrap().host, stale);
    c.signal_host(stale, libc::SIGCONT);
    // The thawed side must stop (the arbiter, then its agent's fencing): within a few seconds
    // its VM process is gone, and the client's counter goes on from the live primary.
    let t0 = Instant::now();
    while std::path::Path::new(&format!("/proc/{stale_pid}/cmdline")).exists()
        && std::fs::read_to_string(format!("/proc/{stale_pid}/stat"))
            .is_ok_and(|s| !s.contains(") Z"))
    {
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "the stale VM still runs\n{}",
            c.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for _ in 0..5 {
        k += 1;
        increment(&mut client, k, &|| c.logs());
    }
    let end = c.wait_protected(Duration::from_secs(30));
    assert!(end.generation > before.generation);
    // The thawed agent started nothing: the one launch is the new backup placed meanwhile.
    assert_eq!(end.launches, before.launches + 1, "{}", c.logs());
    let thawed = std::fs::read_to_string(c.dir.join(format!("agent-{stale}.log"))).unwrap();
    let said: Vec<&str> = thawed
        .lines()
        .filter(|l| l.contains("fencing") || l.contains("is gone"))
        .collect();
    eprintln!("the thawed agent {stale}: {said:#?}");
    assert!(!said.is_empty(), "{}", c.logs());
    eprintln!(
        "done in {:.1} s, {k} increments, record {end:#?}",
        t_all.elapsed().as_secs_f64()
    );
}

#[test]
fn agents_reprotect_with_the_local_store() {
    let Some(g) = guest() else { return };
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("agent-local-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut c = Cluster::start("local", format!("local:{}", dir.display()));
    let mut client = boot(&c, &g, None);
    let mut k = 0;
    kill_rounds(&mut c, &mut client, &mut k, 2);
    // Only the backup's process dies (its host and agent live on): the primary runs alone,
    // and its agent has it protected again.
    let before = c.record();
    let bh = before.backup.as_ref().unwrap().host.clone();
    let local = std::fs::read_to_string(c.dir.join(&bh).join("testvm.json")).unwrap();
    let pid = serde_json::from_str::<serde_json::Value>(&local).unwrap()["pid"]
        .as_i64()
        .unwrap();
    // SAFETY: kill(2) on a VM process of this test's agents.
    unsafe { libc::kill(i32::try_from(pid).unwrap(), libc::SIGKILL) };
    let t0 = Instant::now();
    for _ in 0..3 {
        k += 1;
        increment(&mut client, k, &|| c.logs());
    }
    let r = c.wait_protected(Duration::from_secs(60));
    eprintln!(
        "backup process killed: protected again after {:.1} s (backup on {})",
        t0.elapsed().as_secs_f64(),
        r.backup.as_ref().unwrap().host
    );
    assert_eq!(r.launches, before.launches + 1, "{}", c.logs());
    // The operator's view of the whole cluster.
    let out = Command::new(FTVM)
        .args(["status", "--store", &c.store])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "vm: testvm",
        "protected: yes",
        "generation: 3",
        "last_failover: ",
        "took",
        "Mbit/s",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
    assert!(!text.contains("last_reprotect: never"), "{text}");
    drop(c);
    let _ = std::fs::remove_dir_all(&dir);
}

/// etcd away during a failover (the arbiter is a shared directory here, so the pair can still
/// fail over): the agents can neither record it nor place a new backup, start nothing, and
/// finish the re-protection once etcd is back.
#[test]
fn agents_resume_after_an_etcd_outage_during_a_failover() {
    let Some(g) = guest() else { return };
    let Some(etcd) = start_etcd() else { return };
    let mut c = Cluster::start("outage", format!("etcd:{}", etcd.url));
    let arb = format!("file:{}", c.dir.join("arbiter").display());
    let mut client = boot(&c, &g, Some(&arb));
    let mut k = 0;
    for _ in 0..5 {
        k += 1;
        increment(&mut client, k, &|| c.logs());
    }
    let before = c.record();
    let pid = i32::try_from(etcd.pid()).unwrap();
    let victim = before.primary.as_ref().unwrap().host.clone();
    let victim: &'static str = HOSTS.iter().find(|h| **h == victim).unwrap();
    // SAFETY: kill(2) on the etcd process this test started.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    c.kill_host(victim);
    let t0 = Instant::now();
    // The pair fails over by itself; the client carries on.
    for _ in 0..5 {
        k += 1;
        increment(&mut client, k, &String::new);
    }
    std::thread::sleep(Duration::from_secs(5).saturating_sub(t0.elapsed()));
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let r = c.wait_protected(Duration::from_secs(60));
    eprintln!(
        "etcd back 5 s after the kill; protected again {:.1} s after the kill",
        t0.elapsed().as_secs_f64()
    );
    assert_ne!(r.primary.as_ref().unwrap().host, victim);
    assert_eq!(r.launches, before.launches + 1, "{}", c.logs());
    assert!(
        c.logs()
            .contains("nothing new is started until the store answers"),
        "{}",
        c.logs()
    );
    for _ in 0..5 {
        k += 1;
        increment(&mut client, k, &|| c.logs());
    }
}
