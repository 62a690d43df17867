//! What `ftvm status` shows of one VM process: role, peer, protection, log positions, lag,
//! bandwidth, last failover. Rendered as `key: value` lines, easy to read and to parse.

use std::time::Duration;

/// The role a process plays now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Runs the guest and releases its output.
    Primary,
    /// Replays the primary's log.
    Backup,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Primary => "primary",
            Role::Backup => "backup",
        })
    }
}

/// A process's status.
#[derive(Debug, Clone)]
pub struct Status {
    /// The VM's name.
    pub vm: String,
    /// Current role.
    pub role: Role,
    /// The host process running this side (to stop or signal it; a test kills it by this).
    pub pid: u32,
    /// The peer's address.
    pub peer: String,
    /// Whether a backup is keeping up (primary) or this is a backup (always "protected").
    pub protected: bool,
    /// Machine icount (primary) or replayed icount (backup).
    pub icount: u64,
    /// Guest time at that icount: the machine's clock (`mtime` before guest writes to it).
    pub guest_time: Duration,
    /// Log entries sent (primary) or received (backup).
    pub sent_entries: u64,
    /// Log bytes sent / received.
    pub sent_bytes: u64,
    /// Entries the backup acknowledged.
    pub acked_entries: u64,
    /// Bytes the backup acknowledged.
    pub acked_bytes: u64,
    /// The backup's replayed icount.
    pub replayed: u64,
    /// How far the backup's execution is behind: on the primary, the host time since it was
    /// where the backup is now; on the backup, the log it holds and has not replayed, in guest
    /// time.
    pub lag: Duration,
    /// The primary's slowdown (0..1) for a lagging backup.
    pub slowdown: f64,
    /// Times the primary stalled on a full log buffer (1 ms each).
    pub stalls: u64,
    /// Log bandwidth over the last second, in bit/s.
    pub bandwidth_bps: f64,
    /// Output held back by the output rule.
    pub held_bytes: usize,
    /// Time since the peer was last heard.
    pub peer_silence: Duration,
    /// The longest silence between two signs of life of the peer.
    pub max_gap: Duration,
    /// Heartbeat datagrams refused: forged, another session's, replayed, reordered, late.
    pub heartbeats_refused: u64,
    /// The peer's heartbeat datagrams taken (authentic and new).
    pub heartbeats_received: u64,
    /// The last failover seen by this process.
    pub last_failover: Option<String>,
    /// The last time this process, running alone, was protected again.
    pub last_protected: Option<String>,
    /// A live clone to a new backup in progress: round, bytes sent, dirty rate, expected pause.
    pub clone: Option<String>,
}

/// The value of `key` in a rendered status (`key: value` lines, see [`Status::render`]).
pub fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| {
        l.strip_prefix(key)
            .and_then(|r| r.strip_prefix(": "))
            .map(str::trim)
    })
}

impl Status {
    /// A fresh status.
    pub fn new(vm: &str, role: Role, peer: String) -> Status {
        Status {
            vm: vm.into(),
            role,
            pid: std::process::id(),
            peer,
            protected: true,
            icount: 0,
            guest_time: Duration::ZERO,
            sent_entries: 0,
            sent_bytes: 0,
            acked_entries: 0,
            acked_bytes: 0,
            replayed: 0,
            lag: Duration::ZERO,
            slowdown: 0.0,
            stalls: 0,
            bandwidth_bps: 0.0,
            held_bytes: 0,
            peer_silence: Duration::ZERO,
            max_gap: Duration::ZERO,
            heartbeats_refused: 0,
            heartbeats_received: 0,
            last_failover: None,
            last_protected: None,
            clone: None,
        }
    }

    /// `key: value` lines.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let mut kv = |k: &str, v: String| {
            s.push_str(k);
            s.push_str(": ");
            s.push_str(&v);
            s.push('\n');
        };
        kv("vm", self.vm.clone());
        kv("role", self.role.to_string());
        kv("pid", self.pid.to_string());
        kv("peer", self.peer.clone());
        kv(
            "protected",
            if self.protected { "yes" } else { "no" }.into(),
        );
        kv("icount", self.icount.to_string());
        kv(
            "guest_time",
            format!("{:.3}s", self.guest_time.as_secs_f64()),
        );
        kv(
            "log_sent",
            format!("{} entries, {} bytes", self.sent_entries, self.sent_bytes),
        );
        kv(
            "log_acked",
            format!("{} entries, {} bytes", self.acked_entries, self.acked_bytes),
        );
        kv("log_replayed_icount", self.replayed.to_string());
        kv("lag", format!("{:.3}s", self.lag.as_secs_f64()));
        kv("slowdown", format!("{:.0}%", self.slowdown * 100.0));
        kv("stalls", self.stalls.to_string());
        kv(
            "log_bandwidth",
            format!("{:.3} Mbit/s", self.bandwidth_bps / 1e6),
        );
        kv("output_held", format!("{} bytes", self.held_bytes));
        kv(
            "peer_silence",
            format!("{}ms", self.peer_silence.as_millis()),
        );
        kv("peer_max_gap", format!("{}ms", self.max_gap.as_millis()));
        kv("heartbeats_refused", self.heartbeats_refused.to_string());
        kv("heartbeats_received", self.heartbeats_received.to_string());
        kv(
            "last_failover",
            self.last_failover.clone().unwrap_or_else(|| "none".into()),
        );
        kv(
            "last_protected",
            self.last_protected.clone().unwrap_or_else(|| "none".into()),
        );
        kv("clone", self.clone.clone().unwrap_or_else(|| "none".into()));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rendered_status_reads_back() {
        let mut st = Status::new("vm1", Role::Primary, "10.0.0.2:7100".into());
        st.protected = false;
        let text = st.render();
        assert_eq!(field(&text, "role"), Some("primary"));
        assert_eq!(field(&text, "protected"), Some("no"));
        assert_eq!(field(&text, "peer"), Some("10.0.0.2:7100"));
        assert_eq!(field(&text, "last_protected"), Some("none"));
        assert_eq!(field(&text, "prot"), None, "a key is matched whole");
    }
}
