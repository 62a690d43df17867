//! The cluster state of `ftvm agent`s: which hosts are alive, which VMs exist, where each VM's
//! primary and backup run, and the VM's generation (the arbiter's, used as a fencing token).
//!
//! Every record is a JSON value under a key (`hosts/NAME`, `vms/NAME`) with a version; every
//! write is a compare-and-swap on that version, so an agent acting on an old view of a record
//! (a stale agent, a race between two agents) has its write refused instead of applied.
//! Two stores: [`LocalStore`] (a directory: one machine, no etcd) and [`EtcdStore`]. What
//! the agents decide from these records is in [`policy`], as pure functions.

mod etcd;
mod local;
pub mod policy;
mod records;

pub use etcd::EtcdStore;
pub use local::LocalStore;
pub use records::{Event, HostRecord, Slot, VmRecord};

use serde::{de::DeserializeOwned, Serialize};

/// The default local store directory.
pub const DEFAULT_DIR: &str = "/tmp/ftvm-cluster";

/// What can go wrong with the cluster state.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store spec is not `local:DIR` or `etcd:URL[,URL...]`.
    #[error("bad store {spec:?}: {reason} (expected local:DIR or etcd:URL[,URL...])")]
    BadSpec {
        /// The spec as given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A key outside `[A-Za-z0-9._-]` segments separated by `/`.
    #[error("bad key {0:?}: segments of [A-Za-z0-9._-] separated by '/'")]
    BadKey(String),
    /// A file of the local store could not be used.
    #[error("{path}: {action}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// What was being done.
        action: &'static str,
        /// The cause.
        source: std::io::Error,
    },
    /// A record that this crate did not write (or that was damaged).
    #[error("corrupt record {key}: {reason}")]
    Corrupt {
        /// The record's key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// etcd did not answer in time or could not be reached.
    #[error("etcd at {endpoints} unreachable while {action}: {detail}")]
    Unreachable {
        /// The endpoints.
        endpoints: String,
        /// What was being done.
        action: &'static str,
        /// The cause.
        detail: String,
    },
    /// etcd answered with an error.
    #[error("etcd at {endpoints} refused {action}: {detail}")]
    Etcd {
        /// The endpoints.
        endpoints: String,
        /// What was being done.
        action: &'static str,
        /// The cause.
        detail: String,
    },
    /// A compare-and-swap lost: the record changed since it was read.
    #[error("record {0} changed meanwhile (compare-and-swap lost)")]
    Conflict(String),
}

impl Error {
    /// Whether the store could not be reached (as opposed to answering something wrong).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Error::Unreachable { .. })
    }
}

/// A result of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// A raw record: its bytes and its version (never 0; 0 means "absent" to [`Store::cas`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Raw {
    /// The value.
    pub value: Vec<u8>,
    /// The version to compare against.
    pub version: u64,
}

/// Versioned key-value storage with compare-and-swap.
pub trait Store: Send + Sync {
    /// The record at `key`, if any.
    fn get(&self, key: &str) -> Result<Option<Raw>>;
    /// Writes `value` at `key` if its version is still `expect` (0: the key must not exist);
    /// the new version, or [`Error::Conflict`].
    fn cas(&self, key: &str, expect: u64, value: &[u8]) -> Result<u64>;
    /// The records whose keys start with `prefix` (e.g. "vms/"), sorted by key.
    fn list(&self, prefix: &str) -> Result<Vec<(String, Raw)>>;
    /// Removes `key` if its version is still `expect`.
    fn delete(&self, key: &str, expect: u64) -> Result<()>;
    /// One line for logs, e.g. "local:/tmp/ftvm-cluster".
    fn describe(&self) -> String;
}

/// Opens `local:DIR`, `etcd:URL[,URL...][?ca=F&cert=F&key=F&user=U&password-file=F]` (TLS with a
/// client certificate and etcd's own login: [`::etcd::split_options`]), or a bare path, meaning
/// local.
pub fn from_spec(spec: &str) -> Result<Box<dyn Store>> {
    let bad = |reason: &str| Error::BadSpec {
        spec: spec.to_owned(),
        reason: reason.to_owned(),
    };
    if let Some(list) = spec.strip_prefix("etcd:") {
        let (list, security) = ::etcd::split_options(list).map_err(|reason| bad(&reason))?;
        let eps: Vec<String> = list.split(',').map(str::to_owned).collect();
        if eps
            .iter()
            .any(|e| e.is_empty() || e.contains(char::is_whitespace))
        {
            return Err(bad("an empty endpoint or one with whitespace"));
        }
        return Ok(Box::new(EtcdStore::connect_with(
            &eps,
            &security,
            etcd::DEFAULT_TIMEOUT,
        )?));
    }
    let dir = spec.strip_prefix("local:").unwrap_or(spec);
    if dir.is_empty() {
        return Err(bad("no directory"));
    }
    if spec.contains(':') && !spec.starts_with("local:") && !spec.starts_with('/') {
        return Err(bad("unknown kind"));
    }
    Ok(Box::new(LocalStore::new(dir)?))
}

/// Checks a key: segments of `[A-Za-z0-9._-]` (not `.` or `..`) separated by `/`.
pub fn validate_key(key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && key.len() <= 200
        && key.split('/').all(|s| {
            !s.is_empty()
                && s != "."
                && s != ".."
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        });
    if ok {
        Ok(())
    } else {
        Err(Error::BadKey(key.to_owned()))
    }
}

/// A typed record and its version.
#[derive(Debug, Clone)]
pub struct Versioned<T> {
    /// The record.
    pub value: T,
    /// Its version, for the next [`put`].
    pub version: u64,
}

/// Reads and parses the record at `key`.
pub fn get<T: DeserializeOwned>(s: &dyn Store, key: &str) -> Result<Option<Versioned<T>>> {
    s.get(key)?.map(|r| parse(key, r)).transpose()
}

fn parse<T: DeserializeOwned>(key: &str, r: Raw) -> Result<Versioned<T>> {
    let value = serde_json::from_slice(&r.value).map_err(|e| Error::Corrupt {
        key: key.to_owned(),
        reason: e.to_string(),
    })?;
    Ok(Versioned {
        value,
        version: r.version,
    })
}

/// Reads and parses every record under `prefix`; a corrupt one is an error naming it.
pub fn list<T: DeserializeOwned>(s: &dyn Store, prefix: &str) -> Result<Vec<Versioned<T>>> {
    s.list(prefix)?
        .into_iter()
        .map(|(k, r)| parse(&k, r))
        .collect()
}

/// Writes `value` at `key` if its version is still `expect` (0: new); the new version.
pub fn put<T: Serialize>(s: &dyn Store, key: &str, expect: u64, value: &T) -> Result<u64> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| Error::Corrupt {
        key: key.to_owned(),
        reason: format!("cannot serialize: {e}"),
    })?;
    s.cas(key, expect, &bytes)
}

/// Milliseconds since the Unix epoch (heartbeats, history).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_specs_are_checked() {
        assert!(validate_key("vms/vm0").is_ok());
        for k in ["", "/a", "a//b", "a/../b", "a b", "a/"] {
            assert!(validate_key(k).is_err(), "{k:?}");
        }
        assert!(matches!(from_spec("zk:x"), Err(Error::BadSpec { .. })));
        assert!(matches!(from_spec("local:"), Err(Error::BadSpec { .. })));
        assert!(matches!(from_spec("etcd:a,,b"), Err(Error::BadSpec { .. })));
    }
}

#[cfg(test)]
mod tests_common {
    use super::*;
    pub use guestctl::etcd::Etcd;
    use std::time::Duration;

    /// What every store must do: CAS conflicts, stale versions refused, listing, deleting,
    /// typed records.
    pub fn exercise(s: &dyn Store) {
        assert!(s.get("vms/a").unwrap().is_none());
        let v1 = s.cas("vms/a", 0, b"1").unwrap();
        // Creating twice: the second loses.
        assert!(matches!(s.cas("vms/a", 0, b"x"), Err(Error::Conflict(_))));
        let v2 = s.cas("vms/a", v1, b"2").unwrap();
        assert!(v2 > v1);
        // A writer holding the old version (a stale agent) is refused, and changes nothing.
        assert!(matches!(
            s.cas("vms/a", v1, b"stale"),
            Err(Error::Conflict(_))
        ));
        assert_eq!(s.get("vms/a").unwrap().unwrap().value, b"2");
        s.cas("vms/b", 0, b"3").unwrap();
        s.cas("hosts/h", 0, b"4").unwrap();
        let keys: Vec<String> = s.list("vms/").unwrap().into_iter().map(|x| x.0).collect();
        assert_eq!(keys, ["vms/a", "vms/b"]);
        let vb = s.get("vms/b").unwrap().unwrap().version;
        assert!(matches!(
            s.delete("vms/b", vb + 1000),
            Err(Error::Conflict(_))
        ));
        s.delete("vms/b", vb).unwrap();
        assert!(s.get("vms/b").unwrap().is_none());
        s.delete("vms/a", v2).unwrap();
        assert!(matches!(s.get("../x"), Err(Error::BadKey(_))));
        // Typed: a generation bump is a CAS on the version read.
        let rec = VmRecord {
            name: "vm0".into(),
            flags: vec!["--mem".into(), "64M".into()],
            key_ref: "vm-00".into(),
            arbiter: "file:/tmp/x".into(),
            slot: 0,
            generation: 1,
            epoch: 1,
            primary: Some(Slot {
                host: "h1".into(),
                ..Slot::default()
            }),
            backup: None,
            launches: 0,
            unprotected_since_ms: None,
            history: Vec::new(),
        };
        put(s, "vms/vm0", 0, &rec).unwrap();
        let mut a = get::<VmRecord>(s, "vms/vm0").unwrap().unwrap();
        let b = a.clone();
        a.value.generation = 2;
        put(s, "vms/vm0", a.version, &a.value).unwrap();
        // b read generation 1 before: its write is refused.
        assert!(matches!(
            put(s, "vms/vm0", b.version, &b.value),
            Err(Error::Conflict(_))
        ));
        assert_eq!(
            get::<VmRecord>(s, "vms/vm0")
                .unwrap()
                .unwrap()
                .value
                .generation,
            2
        );
    }

    /// A real etcd on free loopback ports (`guestctl::etcd`), once the store can read it.
    pub fn start_etcd() -> Option<Etcd> {
        Etcd::start("cluster", |url| {
            EtcdStore::connect(&[url.to_owned()], Duration::from_secs(1))
                .and_then(|s| s.get("probe"))
                .is_ok()
        })
    }

    /// Sends `sig` to etcd (SIGSTOP and SIGCONT: an outage and its end).
    pub fn signal(e: &Etcd, sig: i32) {
        let pid = i32::try_from(e.pid()).unwrap_or(0);
        // SAFETY: kill(2) with the pid of our own child and a valid signal number.
        unsafe { libc::kill(pid, sig) };
    }
}
