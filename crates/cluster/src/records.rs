//! The records agents keep in the store.

use serde::{Deserialize, Serialize};

/// A host and its agent (`hosts/NAME`), rewritten by the agent's heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HostRecord {
    /// The host's name.
    pub name: String,
    /// The address its VM processes listen on.
    pub ip: String,
    /// The first port of its range: VM `slot` has its console at `console_base + slot`.
    pub console_base: u16,
    /// The agent's process id (for operators).
    pub pid: u32,
    /// The agent's last heartbeat, Unix milliseconds.
    pub heartbeat_ms: u64,
}

/// One side of a VM: where it runs (or is to run).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct Slot {
    /// The host.
    pub host: String,
    /// The backup's channel address (its `--listen`), once chosen by its host's agent.
    pub channel: Option<String>,
    /// The process's console endpoint.
    pub console: Option<String>,
    /// Which launch (the record's `launches` count at its start) the process is: its agent
    /// keeps the same number, so a process the record no longer names is recognised.
    #[serde(default)]
    pub launch: u64,
    /// Whether the process was started (set before it is, so it is never started twice).
    pub started: bool,
    /// A backup that must be attached by `CONTROL protect` (re-protection) rather than by
    /// the primary connecting at its start.
    pub needs_protect: bool,
}

/// A failover or a re-protection, for `ftvm status`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Event {
    /// "failover" or "reprotect".
    pub kind: String,
    /// When it ended, Unix milliseconds.
    pub at_ms: u64,
    /// How long it took, milliseconds (failover: from the last heartbeat of the dead
    /// primary's host; re-protection: from the failover).
    pub ms: u64,
    /// The host that is primary (failover) or the new backup's host (reprotect).
    pub host: String,
    /// Failover: the host of the primary that failed (not to be picked for the new backup
    /// until its agent is heard from again).
    #[serde(default)]
    pub from: Option<String>,
}

/// A VM (`vms/NAME`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VmRecord {
    /// The VM's name (the arbiter's key too).
    pub name: String,
    /// The machine flags of `ftvm primary` / `ftvm backup` (kernel, disks, memory, ...).
    pub flags: Vec<String>,
    /// Which key file on each host holds the VM's logging-channel key: `KEY_DIR/REF.key`
    /// (`ftvm agent --key-dir`). Only this name is in the store, never the key: whoever reads
    /// the store (its backups, its operators, etcd's peers) learns nothing that opens the
    /// channel or the console. Empty in a record written by an ftvm that kept the key here.
    #[serde(default)]
    pub key_ref: String,
    /// The arbiter spec both sides use.
    pub arbiter: String,
    /// Console port offset in each host's range.
    pub slot: u16,
    /// The arbiter generation the primary holds: the fencing token.
    pub generation: u64,
    /// Bumped on every change of placement.
    pub epoch: u64,
    /// The primary.
    pub primary: Option<Slot>,
    /// The backup.
    pub backup: Option<Slot>,
    /// VM processes started so far (each start is counted before it happens).
    pub launches: u64,
    /// Since when the VM has run without a backup, Unix milliseconds.
    pub unprotected_since_ms: Option<u64>,
    /// Failovers and re-protections, the latest last (the last 50).
    pub history: Vec<Event>,
}

impl VmRecord {
    /// Appends an event, keeping the last 50.
    pub fn push(&mut self, e: Event) {
        self.history.push(e);
        let n = self.history.len();
        if n > 50 {
            self.history.drain(..n - 50);
        }
    }

    /// The latest event of a kind.
    pub fn last(&self, kind: &str) -> Option<&Event> {
        self.history.iter().rev().find(|e| e.kind == kind)
    }
}
