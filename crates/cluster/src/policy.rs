//! What the cluster agents and the local pair decide, as pure functions: a view of the
//! cluster in, one action out. The binaries (`ftvm agent`, `ftvm pair`) only gather the view
//! (store records, heartbeats, the processes' status, the arbiter's generation) and carry the
//! action out (start a process, write a record by compare-and-swap, kill a stale process,
//! attach a backup). Keeping the decisions here lets each case (a host dead, a backup gone, a
//! stale process, a failed clone, a primary still connecting to its first backup) be tested
//! without processes, sockets or a store.
//!
//! Some facts cost a network round trip (a process's status, the arbiter's generation), and
//! the agent only asks for them when the decision depends on them. So [`decide`] may answer
//! [`Action::Need`]: the caller fills the named fact into the view and asks again. A decision
//! never needs the same fact twice, so this ends after at most four rounds.

use crate::{Event, HostRecord, Slot, VmRecord};
use std::collections::HashMap;
use std::time::Duration;

/// A primary running alone whose started backup has not attached it within this long is
/// given another backup, even if that backup's process still answers (a connection that
/// will not come).
pub const ATTACH_GRACE: Duration = Duration::from_secs(35);

/// A primary running alone whose started backup's process does not answer for this long is
/// given another backup (a primary still connecting to its first backup gets this time).
pub const ANSWER_GRACE: Duration = Duration::from_secs(2);

/// A fact the decision may need, fetched only when asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fact {
    /// The status of the process this host runs for the VM.
    LocalStatus,
    /// How long the primary here has been seen running unprotected (the caller starts
    /// counting when first asked).
    AloneFor,
    /// Whether the VM's backup process answers on its console.
    BackupAnswers,
    /// The arbiter's current generation for the VM.
    ArbiterGeneration,
}

/// A fact's value: not asked for yet, or known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Probe<T> {
    /// Not fetched (the decision has not needed it yet).
    #[default]
    NotAsked,
    /// Fetched.
    Known(T),
}

/// What a VM process says about itself (its console's `STATUS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessStatus {
    /// It runs the VM as primary (a backup that went live says so too).
    pub primary: bool,
    /// It has a backup attached.
    pub protected: bool,
}

/// The process this host runs for a VM, as its agent remembers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalProcess {
    /// Which launch of the record it is.
    pub launch: u64,
}

/// What one agent sees of one VM when it tends it.
#[derive(Debug, Clone)]
pub struct View<'a> {
    /// This host's name.
    pub me: &'a str,
    /// Now, Unix milliseconds.
    pub now_ms: u64,
    /// A host whose heartbeat is older than this counts as dead.
    pub dead_after_ms: u64,
    /// The hosts' records, by name.
    pub hosts: &'a HashMap<String, HostRecord>,
    /// The VM's record as read from the store.
    pub vm: &'a VmRecord,
    /// The live process this host runs for the VM, if any.
    pub local: Option<LocalProcess>,
    /// How long the primary here has been seen running unprotected.
    pub alone_for: Probe<Duration>,
    /// The local process's status (`Known(None)`: it does not answer).
    pub status: Probe<Option<ProcessStatus>>,
    /// Whether the backup's console answers.
    pub backup_answers: Probe<bool>,
    /// The arbiter's current generation for the VM (`Known(None)`: no holder yet).
    pub arbiter_generation: Probe<Option<u64>>,
}

/// What the agent does for one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Fetch this fact, put it in the view and decide again.
    Need(Fact),
    /// Nothing to do now.
    Nothing,
    /// The primary here runs protected, or is not the primary: forget when it started
    /// running alone.
    Settled,
    /// Kill the local process: the record no longer names it (the VM moved on without it).
    Fence {
        /// Why, for the log.
        why: String,
    },
    /// Start the VM's process in `role` here (the launch is counted in the record first).
    Launch {
        /// The role to start.
        role: Role,
        /// A primary's backup channel (a backup listens instead).
        peer: Option<String>,
    },
    /// The backup here went live: write `record` (it names this host primary); if the write
    /// wins, the local process is the primary now, under the record's generation.
    Failover {
        /// The record to write.
        record: Box<VmRecord>,
        /// The host of the primary that failed.
        was_on: Option<String>,
    },
    /// The primary here runs alone and its backup is gone: write `record` (no backup), so
    /// that the next round places another.
    DropBackup {
        /// The record to write.
        record: Box<VmRecord>,
        /// The gone backup's host.
        host: String,
    },
    /// The primary here runs alone and no other host is alive to protect it.
    NoHostForBackup,
    /// Write `record`, which places a new backup on `target` (its agent starts it).
    PlaceBackup {
        /// The record to write.
        record: Box<VmRecord>,
        /// The new backup's host.
        target: String,
    },
    /// Have the local primary protected by its started backup (`CONTROL protect`), then
    /// write [`protected`]'s record on success or [`protect_failed`]'s on failure.
    Protect {
        /// The record as decided (it carries since when the VM runs alone).
        record: Box<VmRecord>,
        /// The backup to attach.
        backup: Slot,
    },
}

/// The role of a VM process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Runs the VM and logs to its backup.
    Primary,
    /// Replays the log, ready to go live.
    Backup,
}

impl Role {
    /// The `ftvm` subcommand of the role.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Backup => "backup",
        }
    }
}

/// Whether a host's heartbeat is recent.
pub fn alive(h: &HostRecord, now_ms: u64, dead_after_ms: u64) -> bool {
    now_ms.saturating_sub(h.heartbeat_ms) < dead_after_ms
}

impl View<'_> {
    fn host_alive(&self, h: &str) -> bool {
        self.hosts
            .get(h)
            .is_some_and(|h| alive(h, self.now_ms, self.dead_after_ms))
    }
}

/// Decides what the agent of `view.me` does for `view.vm` now.
pub fn decide(view: &View<'_>) -> Action {
    let me = view.me;
    let vm = view.vm;
    let mine = |s: &Option<Slot>| s.as_ref().is_some_and(|s| s.host == me);
    let (is_primary, is_backup) = (mine(&vm.primary), mine(&vm.backup));
    // Fencing: a process of this host that the record does not name (by its launch) is
    // stale: the VM has moved on without it.
    if let Some(l) = view.local {
        let named = [&vm.primary, &vm.backup].iter().any(|s| {
            s.as_ref()
                .is_some_and(|s| s.host == me && s.launch == l.launch)
        });
        if !named {
            return Action::Fence {
                why: format!(
                    "the record (generation {}) names {} as primary",
                    vm.generation,
                    vm.primary.as_ref().map_or("nobody", |s| s.host.as_str())
                ),
            };
        }
    }
    // A backup to start here.
    if is_backup && vm.backup.as_ref().is_some_and(|s| !s.started) {
        return Action::Launch {
            role: Role::Backup,
            peer: None,
        };
    }
    // The primary to start here (first start: once the backup waits).
    if is_primary && vm.primary.as_ref().is_some_and(|s| !s.started) {
        let peer = vm
            .backup
            .as_ref()
            .filter(|b| b.started && !b.needs_protect)
            .and_then(|b| b.channel.clone());
        return match peer {
            Some(peer) => Action::Launch {
                role: Role::Primary,
                peer: Some(peer),
            },
            None => Action::Nothing,
        };
    }
    if view.local.is_none() {
        return Action::Nothing;
    }
    let st = match view.status {
        Probe::NotAsked => return Action::Need(Fact::LocalStatus),
        Probe::Known(None) => return Action::Nothing,
        Probe::Known(Some(st)) => st,
    };
    // Our backup went live: it is the primary now.
    if is_backup && st.primary {
        let Probe::Known(generation) = view.arbiter_generation else {
            return Action::Need(Fact::ArbiterGeneration);
        };
        return failover(view, generation.unwrap_or(0));
    }
    if !(is_primary && st.primary) || st.protected {
        return Action::Settled;
    }
    // The primary here runs alone: protect it again.
    let Probe::Known(alone_for) = view.alone_for else {
        return Action::Need(Fact::AloneFor);
    };
    let mut rec = vm.clone();
    if rec.unprotected_since_ms.is_none() {
        rec.unprotected_since_ms = Some(view.now_ms);
    }
    match &vm.backup {
        // Its host died, or the backup it had is gone (a primary still connecting to its
        // first backup is unprotected too: it gets the time its connection may take).
        Some(b) if !view.host_alive(&b.host) => drop_backup(rec, b),
        Some(b) if b.started && !b.needs_protect && alone_for > ATTACH_GRACE => drop_backup(rec, b),
        Some(b)
            if b.started && !b.needs_protect && alone_for > ANSWER_GRACE && b.console.is_none() =>
        {
            drop_backup(rec, b)
        }
        Some(b) if b.started && !b.needs_protect && alone_for > ANSWER_GRACE => {
            match view.backup_answers {
                Probe::NotAsked => Action::Need(Fact::BackupAnswers),
                Probe::Known(false) => drop_backup(rec, b),
                // It answers: attach it (it may still be connecting, within its grace).
                Probe::Known(true) => Action::Protect {
                    record: Box::new(rec),
                    backup: b.clone(),
                },
            }
        }
        None => place_backup(view, rec),
        Some(b) if b.started => Action::Protect {
            record: Box::new(rec),
            backup: b.clone(),
        },
        // Its host's agent starts it.
        Some(_) => Action::Nothing,
    }
}

fn failover(view: &View<'_>, generation: u64) -> Action {
    let mut rec = view.vm.clone();
    let now = view.now_ms;
    let old = rec.primary.take();
    // Measured from the dead primary host's last heartbeat.
    let since = old
        .as_ref()
        .and_then(|o| view.hosts.get(&o.host))
        .map_or(now, |h| h.heartbeat_ms.min(now));
    let Some(mut slot) = rec.backup.take() else {
        // `decide` only gets here when the record names this host backup.
        return Action::Nothing;
    };
    slot.needs_protect = false;
    rec.primary = Some(slot);
    rec.generation = rec.generation.max(generation);
    rec.epoch += 1;
    rec.unprotected_since_ms = Some(now);
    rec.push(Event {
        kind: "failover".into(),
        at_ms: now,
        ms: now - since,
        host: view.me.to_owned(),
        from: old.as_ref().map(|o| o.host.clone()),
    });
    Action::Failover {
        record: Box::new(rec),
        was_on: old.map(|o| o.host),
    }
}

fn drop_backup(mut rec: VmRecord, b: &Slot) -> Action {
    rec.backup = None;
    rec.epoch += 1;
    Action::DropBackup {
        record: Box::new(rec),
        host: b.host.clone(),
    }
}

fn place_backup(view: &View<'_>, mut rec: VmRecord) -> Action {
    // Not the host that just failed, unless its agent has been heard from since (its
    // heartbeat may not be stale yet).
    let failed = rec.last("failover").and_then(|e| {
        let f = e.from.clone()?;
        let back = view.hosts.get(&f).is_some_and(|h| h.heartbeat_ms > e.at_ms);
        (!back).then_some(f)
    });
    let mut live: Vec<&String> = view
        .hosts
        .keys()
        .filter(|h| *h != view.me && view.host_alive(h))
        .filter(|h| Some(*h) != failed.as_ref())
        .collect();
    live.sort();
    // The epoch spreads successive placements over the live hosts.
    let Some(target) = live
        .get(usize::try_from(rec.epoch).unwrap_or(0) % live.len().max(1))
        .map(|h| (*h).clone())
    else {
        return Action::NoHostForBackup;
    };
    let Probe::Known(generation) = view.arbiter_generation else {
        return Action::Need(Fact::ArbiterGeneration);
    };
    rec.backup = Some(Slot {
        host: target.clone(),
        needs_protect: true,
        ..Slot::default()
    });
    rec.epoch += 1;
    if let Some(g) = generation {
        rec.generation = rec.generation.max(g);
    }
    Action::PlaceBackup {
        record: Box::new(rec),
        target,
    }
}

/// After [`Action::Protect`] succeeded: `fresh` (the record re-read) with the backup
/// protecting (if it is still the same launch), the VM no longer alone, and the
/// re-protection in the history; `since` is when the VM started running alone.
pub fn protected(mut fresh: VmRecord, backup: &Slot, now_ms: u64, since_ms: u64) -> VmRecord {
    if let Some(fb) = fresh.backup.as_mut() {
        if fb.launch == backup.launch {
            fb.needs_protect = false;
        }
    }
    fresh.unprotected_since_ms = None;
    fresh.push(Event {
        kind: "reprotect".into(),
        at_ms: now_ms,
        ms: now_ms.saturating_sub(since_ms),
        host: backup.host.clone(),
        from: None,
    });
    fresh
}

/// After [`Action::Protect`] failed (the clone or the attachment): the record to write, with
/// no backup, so that the next round places another.
pub fn protect_failed(record: VmRecord) -> VmRecord {
    let mut rec = record;
    rec.backup = None;
    rec.epoch += 1;
    rec
}

/// Counts a launch of `role` in `record` (before the process starts, so it is never started
/// twice): the record to write, or `None` if the record has no slot for the role.
pub fn launched(
    mut record: VmRecord,
    role: Role,
    console: String,
    channel: Option<String>,
) -> Option<VmRecord> {
    record.launches += 1;
    record.epoch += 1;
    let launch = record.launches;
    let s = match role {
        Role::Backup => record.backup.as_mut(),
        Role::Primary => record.primary.as_mut(),
    }?;
    s.started = true;
    s.launch = launch;
    s.console = Some(console);
    s.channel = channel;
    Some(record)
}

/// How long the agent waits before its next round: short while the store answers, doubling
/// up to 2 s while it does not (the VMs keep running meanwhile; nothing new is started).
pub fn next_backoff(previous: Duration, store_answered: bool) -> Duration {
    if store_answered {
        Duration::from_millis(200)
    } else {
        (previous * 2).min(Duration::from_secs(2))
    }
}

/// What `ftvm pair` (a primary and its backup as two local processes) sees of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PairView {
    /// The primary process: `None` while it runs, else whether it exited successfully.
    pub primary_exit: Option<bool>,
    /// Whether the backup process runs.
    pub backup_runs: bool,
    /// Whether the backup says it is the primary now (it went live).
    pub backup_live: Probe<bool>,
}

/// What `ftvm pair`'s supervisor does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairAction {
    /// Fetch this fact and decide again.
    NeedBackupStatus,
    /// Nothing to do.
    Nothing,
    /// The primary died and the backup went live: start a new backup and protect the live
    /// VM with it.
    Reprotect,
}

/// Decides whether the pair restores redundancy now.
pub fn decide_pair(v: PairView) -> PairAction {
    // Only a primary that is gone while the backup runs.
    let Some(success) = v.primary_exit else {
        return PairAction::Nothing;
    };
    if !v.backup_runs {
        return PairAction::Nothing;
    }
    // A primary that ended well (the guest powered off) takes its backup with it.
    if success {
        return PairAction::Nothing;
    }
    // Only a backup that has gone live (it says it is the primary now) is protected.
    match v.backup_live {
        Probe::NotAsked => PairAction::NeedBackupStatus,
        Probe::Known(true) => PairAction::Reprotect,
        Probe::Known(false) => PairAction::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_000_000;
    const DEAD: u64 = 2000;

    fn host(name: &str, age_ms: u64) -> (String, HostRecord) {
        (
            name.to_owned(),
            HostRecord {
                name: name.to_owned(),
                ip: "127.0.0.1".into(),
                console_base: 7200,
                pid: 1,
                heartbeat_ms: NOW - age_ms,
            },
        )
    }

    fn hosts(list: &[(&str, u64)]) -> HashMap<String, HostRecord> {
        list.iter().map(|(n, a)| host(n, *a)).collect()
    }

    fn slot(h: &str, launch: u64, started: bool) -> Slot {
        Slot {
            host: h.into(),
            channel: started.then(|| format!("{h}:7300")),
            console: started.then(|| format!("{h}:7200")),
            launch,
            started,
            needs_protect: false,
        }
    }

    fn vm(primary: Option<Slot>, backup: Option<Slot>) -> VmRecord {
        VmRecord {
            name: "vm0".into(),
            flags: vec![],
            key_ref: "vm-00".into(),
            arbiter: "file:/x".into(),
            slot: 0,
            generation: 3,
            epoch: 7,
            primary,
            backup,
            launches: 2,
            unprotected_since_ms: None,
            history: vec![],
        }
    }

    fn view<'a>(
        me: &'a str,
        hosts: &'a HashMap<String, HostRecord>,
        vm: &'a VmRecord,
        local: Option<u64>,
    ) -> View<'a> {
        View {
            me,
            now_ms: NOW,
            dead_after_ms: DEAD,
            hosts,
            vm,
            local: local.map(|launch| LocalProcess { launch }),
            alone_for: Probe::NotAsked,
            status: Probe::NotAsked,
            backup_answers: Probe::NotAsked,
            arbiter_generation: Probe::NotAsked,
        }
    }

    /// The local process is a primary without a backup, seen so since now.
    fn set_alone(v: &mut View<'_>) {
        v.status = Probe::Known(Some(ProcessStatus {
            primary: true,
            protected: false,
        }));
        v.alone_for = Probe::Known(Duration::ZERO);
    }

    /// A running pair: primary on a (launch 2), backup on b (launch 1).
    fn running() -> VmRecord {
        vm(Some(slot("a", 2, true)), Some(slot("b", 1, true)))
    }

    #[test]
    fn a_new_vm_starts_its_backup_first_then_its_primary() {
        let hs = hosts(&[("a", 0), ("b", 0)]);
        let r = vm(Some(slot("a", 0, false)), Some(slot("b", 0, false)));
        // The primary's host waits for the backup's channel.
        assert_eq!(decide(&view("a", &hs, &r, None)), Action::Nothing);
        assert_eq!(
            decide(&view("b", &hs, &r, None)),
            Action::Launch {
                role: Role::Backup,
                peer: None
            }
        );
        let r = launched(r, Role::Backup, "b:7200".into(), Some("b:7300".into())).unwrap();
        assert_eq!((r.launches, r.epoch), (3, 8));
        assert_eq!(r.backup.as_ref().unwrap().launch, 3);
        assert_eq!(
            decide(&view("a", &hs, &r, None)),
            Action::Launch {
                role: Role::Primary,
                peer: Some("b:7300".into())
            }
        );
        // A backup that is to be attached by re-protection is not connected to at start.
        let mut r2 = r.clone();
        r2.backup.as_mut().unwrap().needs_protect = true;
        assert_eq!(decide(&view("a", &hs, &r2, None)), Action::Nothing);
    }

    #[test]
    fn a_process_the_record_no_longer_names_is_fenced() {
        let hs = hosts(&[("a", 0), ("b", 0)]);
        let r = running();
        // a's process is an older launch (a stale generation of the VM on a).
        let Action::Fence { why } = decide(&view("a", &hs, &r, Some(1))) else {
            panic!("not fenced");
        };
        assert!(
            why.contains("generation 3") && why.contains("names a"),
            "{why}"
        );
        // A host the record does not name at all fences what it still runs.
        let hs = hosts(&[("a", 0), ("b", 0), ("c", 0)]);
        assert!(matches!(
            decide(&view("c", &hs, &r, Some(2))),
            Action::Fence { .. }
        ));
        // The named launch is not.
        assert_eq!(
            decide(&view("a", &hs, &r, Some(2))),
            Action::Need(Fact::LocalStatus)
        );
    }

    #[test]
    fn no_local_process_or_no_answer_means_nothing_to_do() {
        let hs = hosts(&[("a", 0), ("b", 0)]);
        let r = running();
        assert_eq!(decide(&view("a", &hs, &r, None)), Action::Nothing);
        let mut v = view("a", &hs, &r, Some(2));
        v.status = Probe::Known(None);
        assert_eq!(decide(&v), Action::Nothing);
    }

    #[test]
    fn a_protected_primary_or_a_replaying_backup_is_settled() {
        let hs = hosts(&[("a", 0), ("b", 0)]);
        let r = running();
        let mut v = view("a", &hs, &r, Some(2));
        v.status = Probe::Known(Some(ProcessStatus {
            primary: true,
            protected: true,
        }));
        assert_eq!(decide(&v), Action::Settled);
        let mut v = view("b", &hs, &r, Some(1));
        v.status = Probe::Known(Some(ProcessStatus {
            primary: false,
            protected: false,
        }));
        assert_eq!(decide(&v), Action::Settled);
    }

    #[test]
    fn host_dead_the_backup_that_went_live_takes_over() {
        // a (the primary's host) stopped beating 5 s ago; b's backup went live.
        let hs = hosts(&[("a", 5000), ("b", 0)]);
        let r = running();
        let mut v = view("b", &hs, &r, Some(1));
        set_alone(&mut v);
        assert_eq!(decide(&v), Action::Need(Fact::ArbiterGeneration));
        // The arbiter's generation moved on (the backup took it when going live).
        v.arbiter_generation = Probe::Known(Some(5));
        let Action::Failover { record, was_on } = decide(&v) else {
            panic!("no failover");
        };
        assert_eq!(was_on.as_deref(), Some("a"));
        assert_eq!(record.primary.as_ref().unwrap().host, "b");
        assert_eq!(record.primary.as_ref().unwrap().launch, 1);
        assert!(record.backup.is_none());
        assert_eq!((record.generation, record.epoch), (5, 8));
        assert_eq!(record.unprotected_since_ms, Some(NOW));
        let e = record.last("failover").unwrap();
        assert_eq!(
            (e.ms, e.host.as_str(), e.from.as_deref()),
            (5000, "b", Some("a"))
        );
        // A generation the record has passed already is not taken back.
        v.arbiter_generation = Probe::Known(Some(1));
        let Action::Failover { record, .. } = decide(&v) else {
            panic!("no failover");
        };
        assert_eq!(record.generation, 3);
    }

    #[test]
    fn host_dead_the_backup_of_a_lone_primary_is_dropped() {
        let hs = hosts(&[("a", 0), ("b", 5000)]);
        let r = running();
        let mut v = view("a", &hs, &r, Some(2));
        set_alone(&mut v);
        // The time alone starts being counted when the primary is first seen alone.
        v.alone_for = Probe::NotAsked;
        assert_eq!(decide(&v), Action::Need(Fact::AloneFor));
        v.alone_for = Probe::Known(Duration::ZERO);
        let Action::DropBackup { record, host } = decide(&v) else {
            panic!("not dropped");
        };
        assert_eq!(host, "b");
        assert!(record.backup.is_none());
        assert_eq!(record.epoch, 8);
        assert_eq!(record.unprotected_since_ms, Some(NOW));
        // An unknown host counts as dead too.
        let hs = hosts(&[("a", 0)]);
        let mut v = view("a", &hs, &r, Some(2));
        set_alone(&mut v);
        assert!(matches!(decide(&v), Action::DropBackup { .. }));
    }

    #[test]
    fn a_primary_still_connecting_to_its_first_backup_is_not_replaced() {
        let hs = hosts(&[("a", 0), ("b", 0)]);
        let r = running();
        for alone_for in [Duration::ZERO, Duration::from_millis(1500), ANSWER_GRACE] {
            let mut v = view("a", &hs, &r, Some(2));
            set_alone(&mut v);
            v.alone_for = Probe::Known(alone_for);
            // Within the grace: attached by `CONTROL protect` (it is started).
            assert!(
                matches!(decide(&v), Action::Protect { .. }),
                "{alone_for:?}"
            );
        }
        // Past the answer grace, a backup whose process answers keeps its place.
        let mut v = view("a", &hs, &r, Some(2));
        set_alone(&mut v);
        v.alone_for = Probe::Known(Duration::from_secs(10));
        assert_eq!(decide(&v), Action::Need(Fact::BackupAnswers));
        v.backup_answers = Probe::Known(true);
        assert!(matches!(decide(&v), Action::Protect { .. }));
    }

    #[test]
    fn a_dead_backup_process_is_replaced_after_its_grace_time() {
        let hs = hosts(&[("a", 0), ("b", 0)]);
        let r = running();
        let mut v = view("a", &hs, &r, Some(2));
        set_alone(&mut v);
        v.alone_for = Probe::Known(ANSWER_GRACE + Duration::from_millis(1));
        v.backup_answers = Probe::Known(false);
        assert!(matches!(decide(&v), Action::DropBackup { .. }));
        // Past the attach grace, even one that answers.
        v.alone_for = Probe::Known(ATTACH_GRACE + Duration::from_millis(1));
        v.backup_answers = Probe::NotAsked;
        assert!(matches!(decide(&v), Action::DropBackup { .. }));
        // A started backup without a console cannot answer.
        let mut r2 = running();
        r2.backup.as_mut().unwrap().console = None;
        let mut v = view("a", &hs, &r2, Some(2));
        set_alone(&mut v);
        v.alone_for = Probe::Known(Duration::from_secs(3));
        assert!(matches!(decide(&v), Action::DropBackup { .. }));
    }

    #[test]
    fn a_backup_to_be_attached_is_waited_for_while_its_host_starts_it() {
        let hs = hosts(&[("a", 0), ("b", 0)]);
        let mut r = running();
        r.backup = Some(Slot {
            needs_protect: true,
            ..slot("b", 0, false)
        });
        let mut v = view("a", &hs, &r, Some(2));
        set_alone(&mut v);
        v.alone_for = Probe::Known(Duration::from_secs(60));
        assert_eq!(decide(&v), Action::Nothing);
        // Once started, it is attached, however long the primary ran alone.
        let b = r.backup.as_mut().unwrap();
        b.started = true;
        b.launch = 3;
        b.channel = Some("b:7301".into());
        let mut v = view("a", &hs, &r, Some(2));
        set_alone(&mut v);
        v.alone_for = Probe::Known(Duration::from_secs(60));
        let Action::Protect { backup, record } = decide(&v) else {
            panic!("not protected");
        };
        assert_eq!(backup.launch, 3);
        assert_eq!(record.unprotected_since_ms, Some(NOW));
    }

    #[test]
    fn a_new_backup_goes_to_a_live_host_other_than_the_failed_one() {
        // a failed over to b; c and d are alive; e is dead.
        let hs = hosts(&[("a", 0), ("b", 0), ("c", 0), ("d", 0), ("e", 9000)]);
        let mut r = vm(Some(slot("b", 1, true)), None);
        r.push(Event {
            kind: "failover".into(),
            at_ms: NOW + 1,
            ms: 10,
            host: "b".into(),
            from: Some("a".into()),
        });
        let mut v = view("b", &hs, &r, Some(1));
        set_alone(&mut v);
        assert_eq!(decide(&v), Action::Need(Fact::ArbiterGeneration));
        v.arbiter_generation = Probe::Known(Some(9));
        let Action::PlaceBackup { record, target } = decide(&v) else {
            panic!("not placed");
        };
        // Live candidates [c, d]; epoch 7 picks d.
        assert_eq!(target, "d");
        let b = record.backup.as_ref().unwrap();
        assert!(b.needs_protect && !b.started && b.host == "d");
        assert_eq!((record.epoch, record.generation), (8, 9));
        // The failed host counts again once its agent is heard from after the failover.
        let mut hs2 = hs.clone();
        hs2.get_mut("a").unwrap().heartbeat_ms = NOW + 2;
        let mut v = view("b", &hs2, &r, Some(1));
        set_alone(&mut v);
        v.arbiter_generation = Probe::Known(None);
        let Action::PlaceBackup { record, target } = decide(&v) else {
            panic!("not placed");
        };
        // Candidates [a, c, d]; epoch 7 picks c; no arbiter holder leaves the generation.
        assert_eq!(target, "c");
        assert_eq!(record.generation, 3);
    }

    #[test]
    fn a_lone_primary_with_no_live_host_runs_on_alone() {
        let hs = hosts(&[("a", 0), ("b", 9000)]);
        let r = vm(Some(slot("a", 2, true)), None);
        let mut v = view("a", &hs, &r, Some(2));
        set_alone(&mut v);
        assert_eq!(decide(&v), Action::NoHostForBackup);
    }

    #[test]
    fn clone_failed_drops_the_backup_and_success_records_the_reprotection() {
        let hs = hosts(&[("a", 0), ("b", 0)]);
        let r = running();
        let mut v = view("a", &hs, &r, Some(2));
        set_alone(&mut v);
        let Action::Protect { record, backup } = decide(&v) else {
            panic!("not protected");
        };
        let failed = protect_failed(*record.clone());
        assert!(failed.backup.is_none());
        assert_eq!(failed.epoch, 8);
        assert_eq!(failed.unprotected_since_ms, Some(NOW));
        // Success: the record re-read meanwhile has the same backup launch.
        let mut fresh = r.clone();
        fresh.backup.as_mut().unwrap().needs_protect = true;
        let done = protected(fresh, &backup, NOW + 700, NOW);
        assert!(!done.backup.as_ref().unwrap().needs_protect);
        assert_eq!(done.unprotected_since_ms, None);
        let e = done.last("reprotect").unwrap();
        assert_eq!((e.ms, e.host.as_str()), (700, "b"));
        // A record that names another backup launch meanwhile keeps it to be attached.
        let mut other = r.clone();
        let ob = other.backup.as_mut().unwrap();
        ob.launch = 9;
        ob.needs_protect = true;
        let done = protected(other, &backup, NOW + 700, NOW);
        assert!(done.backup.as_ref().unwrap().needs_protect);
    }

    #[test]
    fn store_away_backs_off_up_to_two_seconds() {
        let mut b = next_backoff(Duration::from_secs(1), true);
        assert_eq!(b, Duration::from_millis(200));
        let mut seen = vec![];
        for _ in 0..6 {
            b = next_backoff(b, false);
            seen.push(b.as_millis());
        }
        assert_eq!(seen, [400, 800, 1600, 2000, 2000, 2000]);
        assert_eq!(next_backoff(b, true), Duration::from_millis(200));
    }

    #[test]
    fn launching_a_role_without_a_slot_is_refused() {
        let r = vm(Some(slot("a", 0, false)), None);
        assert!(launched(r, Role::Backup, "x".into(), None).is_none());
    }

    #[test]
    fn the_pair_reprotects_only_after_a_crash_and_a_live_backup() {
        let v = |primary_exit, backup_runs, backup_live| PairView {
            primary_exit,
            backup_runs,
            backup_live,
        };
        use PairAction::*;
        use Probe::*;
        assert_eq!(decide_pair(v(None, true, NotAsked)), Nothing);
        // The guest powered off: the backup follows.
        assert_eq!(decide_pair(v(Some(true), true, NotAsked)), Nothing);
        // Both gone.
        assert_eq!(decide_pair(v(Some(false), false, NotAsked)), Nothing);
        assert_eq!(
            decide_pair(v(Some(false), true, NotAsked)),
            NeedBackupStatus
        );
        // The backup has not gone live (yet).
        assert_eq!(decide_pair(v(Some(false), true, Known(false))), Nothing);
        assert_eq!(decide_pair(v(Some(false), true, Known(true))), Reprotect);
    }
}
