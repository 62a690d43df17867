//! Split-brain avoidance for fault-tolerant VMs (DESIGN.md §3 "Split brain").
//!
//! When a primary and its backup lose sight of each other, each may believe the other is dead.
//! Before the backup goes live, or before the primary runs on alone, the host must win an atomic
//! **test-and-set** on storage both hosts reach; the loser stops itself. This crate is that
//! test-and-set: [`Arbiter::test_and_set`] claims one *generation* of one VM, and exactly one
//! claimant ever wins a given (vm, generation). A new generation is claimed for every change of
//! the VM's primary, so the loser of generation N cannot come back and win it later.
//!
//! Two implementations:
//! - [`FileArbiter`] (`file:DIR`, the default): a claim file created atomically in a directory
//!   both hosts share — one machine, or NFS.
//! - [`EtcdArbiter`] (`etcd:URL[,URL...]`): a compare-and-swap transaction in etcd, for several
//!   machines.
//! - [`MemArbiter`]: the same rules in memory, for tests of the pair (it can be made unreachable
//!   and can hold a claimant back, so a test decides who asks first).
//!
//! What this crate never does: it never decides *whether* to fail over (the caller has already
//! decided and only asks who may), never stops a VM itself (the loser's caller does), never
//! deletes or overwrites a claim (a generation, once won, stays won), and never blocks without a
//! bound (the file arbiter is as bounded as the file system; every etcd call has a timeout). The
//! API is blocking so plain threads can use it.

mod error;
mod etcd;
mod file;
mod mem;
mod name;

pub use error::ArbiterError;
pub use etcd::{EtcdArbiter, DEFAULT_ETCD_TIMEOUT, DEFAULT_LEASE_TTL};
pub use file::FileArbiter;
pub use mem::MemArbiter;
pub use name::{validate_claimant, validate_vm_name, MAX_CLAIMANT_LEN, MAX_VM_NAME_LEN};

/// The default file arbiter directory on one machine.
pub const DEFAULT_DIR: &str = "/tmp/ftvm-arbiter";

/// What a test-and-set decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The caller holds the generation: it may go live (or run on alone).
    Won,
    /// Someone else holds the generation: the caller must stop itself.
    Lost {
        /// Who holds the generation.
        winner: String,
    },
}

/// An atomic test-and-set on storage shared by the hosts of a VM.
///
/// An error never means "lost": it means the outcome is unknown (the storage could not be
/// reached, or answered something unexpected). Repeating the call is always safe because a
/// claim is idempotent; a host that cannot get an answer must not go live.
pub trait Arbiter: Send + Sync {
    /// Atomically claims generation `generation` of VM `vm` for `who`. Exactly one `who` ever
    /// wins a given (vm, generation); a repeated call by the winner returns Won again
    /// (idempotent), anyone else gets Lost{winner}.
    fn test_and_set(&self, vm: &str, generation: u64, who: &str) -> Result<Claim, ArbiterError>;

    /// The highest generation claimed so far for `vm` and its winner, if any (for status and for
    /// agents that rediscover state).
    fn current(&self, vm: &str) -> Result<Option<(u64, String)>, ArbiterError>;

    /// One line for logs/status, e.g. "file:/var/lib/ftvm/arbiter" or
    /// "etcd:http://127.0.0.1:2379".
    fn describe(&self) -> String;
}

/// Parses "file:DIR" or "etcd:URL[,URL...][?OPTIONS]" (TLS and login options:
/// [`::etcd::split_options`]; a bare path means file:) and opens that arbiter.
///
/// A bare path is anything that starts with `/` or `.`, or has no `:` at all. The etcd arbiter
/// uses [`DEFAULT_LEASE_TTL`] and [`DEFAULT_ETCD_TIMEOUT`] and connects at once, so an
/// unreachable etcd is reported here.
pub fn from_spec(spec: &str) -> Result<Box<dyn Arbiter>, ArbiterError> {
    let bad = |reason: &str| ArbiterError::BadSpec {
        spec: spec.to_owned(),
        reason: reason.to_owned(),
    };
    if let Some(dir) = spec.strip_prefix("file:") {
        if dir.is_empty() {
            return Err(bad("no directory after \"file:\""));
        }
        return Ok(Box::new(FileArbiter::new(dir)?));
    }
    if let Some(list) = spec.strip_prefix("etcd:") {
        let (list, security) = ::etcd::split_options(list).map_err(|reason| bad(&reason))?;
        let endpoints = parse_endpoints(list).map_err(|reason| bad(&reason))?;
        return Ok(Box::new(EtcdArbiter::connect_with(
            &endpoints,
            &security,
            DEFAULT_LEASE_TTL,
            DEFAULT_ETCD_TIMEOUT,
        )?));
    }
    if spec.trim().is_empty() {
        return Err(bad("it is empty"));
    }
    if spec.starts_with('/') || spec.starts_with('.') || !spec.contains(':') {
        return Ok(Box::new(FileArbiter::new(spec)?));
    }
    let kind = spec.split(':').next().unwrap_or_default();
    Err(bad(&format!("unknown arbiter kind {kind:?}")))
}

/// Splits "URL[,URL...]" into endpoints, rejecting empty entries and whitespace.
fn parse_endpoints(list: &str) -> Result<Vec<String>, String> {
    if list.is_empty() {
        return Err("no endpoint after \"etcd:\"".to_owned());
    }
    let mut endpoints = Vec::new();
    for endpoint in list.split(',') {
        if endpoint.is_empty() {
            return Err("an empty endpoint between commas".to_owned());
        }
        if endpoint
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(format!("endpoint {endpoint:?} contains whitespace"));
        }
        endpoints.push(endpoint.to_owned());
    }
    Ok(endpoints)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_error(spec: &str) -> String {
        match from_spec(spec) {
            Ok(arbiter) => panic!("{spec:?} was accepted as {}", arbiter.describe()),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn rejects_bad_specs_with_the_reason() {
        assert!(spec_error("").contains("empty"));
        assert!(spec_error("file:").contains("no directory"));
        assert!(spec_error("etcd:").contains("no endpoint"));
        assert!(spec_error("etcd:http://a:1,,http://b:2").contains("empty endpoint"));
        assert!(spec_error("etcd:http://a:1, http://b:2").contains("whitespace"));
        let unknown = spec_error("zookeeper:host:2181");
        assert!(
            unknown.contains("unknown arbiter kind \"zookeeper\""),
            "{unknown}"
        );
        assert!(unknown.contains("file:DIR"), "{unknown}");
    }

    #[test]
    fn parses_endpoint_lists() {
        assert_eq!(
            parse_endpoints("http://127.0.0.1:2379,http://10.0.0.2:2379"),
            Ok(vec![
                "http://127.0.0.1:2379".to_owned(),
                "http://10.0.0.2:2379".to_owned()
            ])
        );
    }

    #[test]
    fn file_specs_and_bare_paths_open_a_file_arbiter() {
        let dir = std::env::temp_dir().join(format!("arbiter-spec-{}", std::process::id()));
        let shown = format!("file:{}", dir.display());
        assert_eq!(from_spec(&shown).unwrap().describe(), shown);
        assert_eq!(from_spec(dir.to_str().unwrap()).unwrap().describe(), shown);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
