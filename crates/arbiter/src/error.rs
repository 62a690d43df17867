//! What can go wrong when claiming, and what the operator should do about it.
//!
//! No variant means "lost": every error leaves the outcome unknown, and since a claim is
//! idempotent the caller may simply try again — but must not go live until it gets an answer.

use std::path::PathBuf;
use std::time::Duration;

/// An arbiter could not be opened or could not answer.
#[derive(Debug, thiserror::Error)]
pub enum ArbiterError {
    /// The arbiter spec is not one this crate understands.
    #[error(
        "bad arbiter spec {spec:?}: {reason}; write file:DIR (or just a directory path) \
         for a shared directory, or etcd:URL[,URL...] such as etcd:http://127.0.0.1:2379"
    )]
    BadSpec {
        /// The spec as given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A VM name that is not safe in a file name or an etcd key.
    #[error(
        "invalid VM name {name:?}: use 1 to 64 characters from A-Z a-z 0-9 . _ - \
         (and not \".\" or \"..\")"
    )]
    InvalidVmName {
        /// The name as given.
        name: String,
    },

    /// A claimant name that could not be stored and shown faithfully.
    #[error(
        "invalid claimant name {name:?}: use 1 to 255 bytes with no control characters and \
         no leading or trailing spaces (a host name is a good choice)"
    )]
    InvalidClaimant {
        /// The name as given.
        name: String,
    },

    /// A setting that can never work.
    #[error("invalid arbiter setting: {0}")]
    InvalidConfig(String),

    /// The arbiter directory could not be created, read or written.
    #[error(
        "arbiter directory {}: {action} failed: {source}; check that it exists (or can be \
         created), is shared by both hosts, and that this user may create files in it",
        path.display()
    )]
    Dir {
        /// The directory.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// A claim file could not be read, or a temporary record written.
    #[error(
        "claim file {}: {action} failed: {source}; the claim's outcome is unknown, so do not \
         go live — retrying is safe once the storage answers again",
        path.display()
    )]
    File {
        /// The file.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// A claim file exists but is not a record this crate wrote for that name.
    #[error(
        "claim file {} is damaged or was edited or renamed by hand ({reason}); nothing can be \
         decided for this generation until an operator checks who really holds it — restore \
         the file from the winner's logs, or claim a new generation",
        path.display()
    )]
    BadRecord {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// etcd did not answer in time.
    #[error(
        "etcd at {endpoints} did not answer within {timeout:?} while {action}{}; check that \
         etcd is running and reachable from this host (try `etcdctl --endpoints={endpoints} \
         endpoint health`), or raise the timeout",
        detail_suffix(detail)
    )]
    EtcdUnreachable {
        /// The endpoints, comma-separated.
        endpoints: String,
        /// The bound each call had.
        timeout: Duration,
        /// What was being done.
        action: &'static str,
        /// What the client reported, if it failed before the deadline.
        detail: String,
    },

    /// etcd answered with an error.
    #[error(
        "etcd at {endpoints} refused {action}: {detail}; check etcd's health and this \
         host's permissions on keys under /ftvm/"
    )]
    Etcd {
        /// The endpoints, comma-separated.
        endpoints: String,
        /// What was being done.
        action: &'static str,
        /// What etcd or the client reported.
        detail: String,
    },

    /// An etcd key under /ftvm/ holds something this crate did not write.
    #[error(
        "etcd key {key} holds a value this crate did not write ({reason}); something other \
         than ftvm writes under /ftvm/ — find it and stop it"
    )]
    BadEtcdValue {
        /// The key.
        key: String,
        /// What is wrong with the value.
        reason: String,
    },

    /// A blocking etcd call was made from inside an async runtime, where it would deadlock.
    #[error(
        "the etcd arbiter was called from inside an async runtime; call it from a plain \
         thread (for example inside tokio::task::spawn_blocking)"
    )]
    InsideAsyncRuntime,

    /// The arbiter does not answer (the in-memory arbiter set unreachable by a test).
    #[error(
        "the arbiter {arbiter} does not answer: the claim's outcome is unknown, so do not go \
         live — retrying is safe once it answers again"
    )]
    Unavailable {
        /// Which arbiter.
        arbiter: String,
    },

    /// The etcd client's own runtime could not be started.
    #[error("could not start the etcd client's runtime thread: {0}")]
    Runtime(#[source] std::io::Error),
}

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(" ({detail})")
    }
}
